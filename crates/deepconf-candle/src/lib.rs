//! Candle backend for deepconf-core (work in progress).
#![deny(missing_docs)]

mod error;
mod kernels;

pub use error::{Error, Result};
