//! Candle backend for deepconf-core (work in progress).
#![deny(missing_docs)]

pub mod chat;
mod decoder;
mod error;
pub mod hub;
mod kernels;
mod model;
mod models;
mod options;
mod sampling;
pub mod tokenizer;

pub use chat::{ChatTemplate, RenderOptions};
pub use error::{Error, Result};
pub use model::{
    CandleModel, CandleModelBuilder, DEFAULT_MODEL_FILE, default_model_path, strip_thinking,
};
pub use options::{ModelSource, WeightFormat};
pub use tokenizer::Tokenizer;
