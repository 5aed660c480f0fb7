//! The error type of deepconf-lora.

use std::path::PathBuf;

/// Errors of LoRA training and of the guarded recipe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A candle tensor operation (forward, backward or optimizer step) failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// Loading or running the base model failed.
    #[error("model: {0}")]
    Model(#[from] deepconf_candle::Error),
    /// Loading benchmark data failed.
    #[error("data: {0}")]
    Data(#[from] deepconf_datasets::Error),
    /// Building the main job's prompts failed.
    #[error("evaluation prompts: {0}")]
    Eval(#[from] deepconf_eval::Error),
    /// Generating with the base model failed.
    #[error("generation: {0}")]
    Generation(#[from] deepconf_core::Error),
    /// Classifying a response failed.
    #[error("refusal classifier: {0}")]
    Refusal(#[from] deepconf_refusal::Error),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file's content is not what it should be.
    #[error("{path}: line {line}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
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

/// Result alias of deepconf-lora.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    pub(crate) fn invalid(parameter: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidParameter {
            parameter,
            reason: reason.into(),
        }
    }
}
