//! The error type of deepconf-core.

use crate::Violation;

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
    /// The backend broke the [`LogprobModel`](crate::LogprobModel) contract: the runner refuses
    /// its output rather than compute confidences, thresholds or votes from it.
    #[error(
        "{} broke the LogprobModel contract{}: {violation}",
        who(.backend),
        location(.trace, .token)
    )]
    Contract {
        /// The backend's [`model_id`](crate::LogprobModel::model_id) (empty when the error comes
        /// from a [`TraceBuilder`](crate::TraceBuilder), until the runner names the backend).
        backend: String,
        /// Index of the trace at fault, if one is.
        trace: Option<usize>,
        /// Index of the token at fault within its trace (0-based), if one is.
        token: Option<usize>,
        /// What was wrong, with the offending value.
        violation: Violation,
    },
}

fn who(backend: &str) -> String {
    if backend.is_empty() {
        "the backend".to_string()
    } else {
        format!("backend `{backend}`")
    }
}

fn location(trace: &Option<usize>, token: &Option<usize>) -> String {
    match (trace, token) {
        (Some(trace), Some(token)) => format!(" at token {token} of trace {trace}"),
        (Some(trace), None) => format!(" in trace {trace}"),
        (None, _) => String::new(),
    }
}

impl Error {
    /// A contract violation of backend `backend` that no single trace is at fault for.
    pub fn contract(backend: impl Into<String>, violation: Violation) -> Self {
        Self::Contract {
            backend: backend.into(),
            trace: None,
            token: None,
            violation,
        }
    }

    /// A contract violation at token `token` of trace `trace` (backend named later).
    pub(crate) fn contract_at(trace: usize, token: Option<usize>, violation: Violation) -> Self {
        Self::Contract {
            backend: String::new(),
            trace: Some(trace),
            token,
            violation,
        }
    }

    /// Names the backend of a contract violation that does not name one yet.
    pub(crate) fn with_backend_name(mut self, name: &str) -> Self {
        if let Self::Contract { backend, .. } = &mut self
            && backend.is_empty()
        {
            *backend = name.to_string();
        }
        self
    }

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
