//! The error type of deepconf-core.

/// Errors of deepconf-core and of the backends that implement [`LogprobModel`](crate::LogprobModel).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A parameter is out of its valid range.
    #[error("invalid parameter `{parameter}` = {value}: {reason}")]
    InvalidParameter {
        /// Parameter name.
        parameter: &'static str,
        /// The offending value, as text.
        value: String,
        /// What a valid value looks like.
        reason: &'static str,
    },
    /// A confidence metric parameter or value is invalid.
    #[error(transparent)]
    Confidence(#[from] deepconf_confidence::Error),
    /// A policy parameter is invalid.
    #[error(transparent)]
    Policy(#[from] deepconf_policy::Error),
    /// The backend failed; `backend` names it and the source says why.
    #[error("{backend} backend: {source}")]
    Backend {
        /// Name of the backend (e.g. `candle`, `openai`).
        backend: String,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The backend broke the [`LogprobModel`](crate::LogprobModel) contract.
    #[error("backend contract violated: {0}")]
    Contract(String),
}

impl Error {
    /// Wraps a backend's own error.
    pub fn backend(
        backend: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        Self::Backend {
            backend: backend.into(),
            source: source.into(),
        }
    }
}

/// Result alias of deepconf-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;
