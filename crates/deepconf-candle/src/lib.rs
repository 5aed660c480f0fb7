//! Candle backend for deepconf-core (work in progress).
#![deny(missing_docs)]

mod decoder;
pub mod chat;
mod error;
pub mod hub;
mod kernels;
mod models;
mod options;
mod sampling;
pub mod tokenizer;

pub use chat::{ChatTemplate, RenderOptions};
pub use error::{Error, Result};
pub use tokenizer::Tokenizer;
pub use options::{ModelSource, WeightFormat};
