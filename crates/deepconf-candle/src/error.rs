//! The error type of deepconf-candle.

use std::path::PathBuf;

/// Errors of the candle backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A candle tensor operation failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The model file is not what we can load (missing metadata key, unsupported architecture, ...).
    #[error("{path}: {message}")]
    Model {
        /// The model file or directory.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The default model is not in the cache.
    #[error(
        "the default model is not at {path}; run `cargo xtask fetch-model` (or set DEEPCONF_CACHE to the cache that holds it)"
    )]
    DefaultModelMissing {
        /// Where it was expected.
        path: PathBuf,
    },
    /// Building or using the tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Rendering the chat template failed.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// The prompt does not fit in the model's context.
    #[error(
        "prompt of {prompt_tokens} tokens plus max_tokens {max_tokens} exceeds the context length {context_length}"
    )]
    ContextLength {
        /// Tokens in the formatted prompt.
        prompt_tokens: usize,
        /// Requested generation budget.
        max_tokens: usize,
        /// The model's context length.
        context_length: usize,
    },
    /// Downloading from the Hugging Face hub failed.
    #[error("hub: {0}")]
    Hub(String),
    /// A feature needed for the request was not compiled in.
    #[error("feature `{feature}` is not enabled: rebuild with `--features {feature}`")]
    FeatureDisabled {
        /// The cargo feature.
        feature: &'static str,
    },
    /// An invalid argument.
    #[error("invalid parameter `{parameter}`: {reason}")]
    InvalidParameter {
        /// Parameter name.
        parameter: &'static str,
        /// Why.
        reason: String,
    },
}

/// Result alias of deepconf-candle.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for deepconf_core::Error {
    fn from(e: Error) -> Self {
        deepconf_core::Error::backend("candle", e)
    }
}
