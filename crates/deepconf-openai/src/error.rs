//! The error type of deepconf-openai.

use std::time::Duration;

/// Everything that can go wrong talking to an OpenAI-compatible server.
///
/// Every variant names the URL it concerns; server answers are quoted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenAiError {
    /// A configuration value is invalid.
    #[error("invalid parameter `{parameter}` = {value}: {reason}")]
    InvalidConfig {
        /// Parameter name.
        parameter: &'static str,
        /// The offending value, as text.
        value: String,
        /// What a valid value looks like.
        reason: &'static str,
    },
    /// The server could not be reached (refused, reset, DNS, TLS).
    #[error("cannot reach {url}: {message}")]
    Connection {
        /// The request URL.
        url: String,
        /// What the transport reported.
        message: String,
    },
    /// The server did not answer (or went silent mid-stream) within the configured time.
    #[error("{url} did not answer within {after:?}: {message}")]
    Timeout {
        /// The request URL.
        url: String,
        /// The timeout that expired.
        after: Duration,
        /// What the transport reported.
        message: String,
    },
    /// The server answered with an HTTP error status.
    #[error("{url} answered HTTP {status}: {message}{hint}")]
    Status {
        /// The request URL.
        url: String,
        /// HTTP status code.
        status: u16,
        /// The server's own message (from its JSON `error.message` / `detail`, else the raw body).
        message: String,
        /// A hint about the likely cause (empty when there is none).
        hint: String,
    },
    /// A server-sent event was not valid JSON or lacked a required field.
    #[error("malformed event from {url} ({reason}): {line}")]
    MalformedEvent {
        /// The request URL.
        url: String,
        /// The offending line (shortened when very long).
        line: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A non-streaming answer was not the JSON the API defines.
    #[error("malformed response from {url} ({reason}): {body}")]
    MalformedResponse {
        /// The request URL.
        url: String,
        /// The offending body (shortened when very long).
        body: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The stream ended without a `finish_reason`: the server dropped or interrupted the request.
    #[error(
        "stream from {url} ended after {tokens} tokens without a finish_reason: the server failed \
         or was stopped mid-stream (see its log; llama-cpp-python reports errors such as an \
         over-long prompt only there when streaming, and with --interrupt_requests true it cuts a \
         stream whenever another request arrives)"
    )]
    IncompleteStream {
        /// The request URL.
        url: String,
        /// Tokens received before the end.
        tokens: usize,
    },
    /// The server generated a token without the log-probabilities that were asked for.
    #[error(
        "{url} returned token {token_index} without logprobs (llama-cpp-python needs \
         --logits_all true; check that the server supports `logprobs`)"
    )]
    MissingLogprobs {
        /// The request URL.
        url: String,
        /// 0-based index of the generated token.
        token_index: usize,
    },
    /// The server returned fewer top log-probabilities than asked for.
    #[error(
        "{url} returned {got} top logprobs for token {token_index}, {wanted} were asked \
         (vLLM caps them with --max-logprobs)"
    )]
    TooFewLogprobs {
        /// The request URL.
        url: String,
        /// 0-based index of the generated token.
        token_index: usize,
        /// How many arrived.
        got: usize,
        /// How many were asked for.
        wanted: usize,
    },
    /// The server reported an error inside the event stream.
    #[error("{url} reported an error mid-stream: {message}")]
    StreamError {
        /// The request URL.
        url: String,
        /// The server's message.
        message: String,
    },
    /// The server aborted the generation (`finish_reason` `abort` or `error`).
    #[error("{url} aborted the generation with finish_reason `{finish_reason}`")]
    Aborted {
        /// The request URL.
        url: String,
        /// The finish reason the server gave.
        finish_reason: String,
    },
    /// Retries were exhausted; `source` is the last failure.
    #[error("gave up after {attempts} attempts: {source}")]
    GaveUp {
        /// Attempts made, the first included.
        attempts: u32,
        /// The last failure.
        #[source]
        source: Box<OpenAiError>,
    },
    /// A worker thread panicked (a bug in this crate).
    #[error("worker thread for trace {trace} panicked")]
    WorkerPanicked {
        /// Index of the trace the worker was generating.
        trace: usize,
    },
}

impl OpenAiError {
    /// True for failures worth retrying: connection errors, timeouts, HTTP 408, 429 and 5xx, a
    /// stream that ended before its finish reason, and a generation the server aborted.
    pub fn is_transient(&self) -> bool {
        match self {
            OpenAiError::Connection { .. }
            | OpenAiError::Timeout { .. }
            | OpenAiError::IncompleteStream { .. }
            | OpenAiError::Aborted { .. } => true,
            OpenAiError::Status { status, .. } => {
                *status == 408 || *status == 429 || *status >= 500
            }
            _ => false,
        }
    }

    /// The HTTP status of a server answer (looking through [`OpenAiError::GaveUp`]).
    pub fn status(&self) -> Option<u16> {
        match self {
            OpenAiError::Status { status, .. } => Some(*status),
            OpenAiError::GaveUp { source, .. } => source.status(),
            _ => None,
        }
    }
}

impl From<OpenAiError> for deepconf_core::Error {
    fn from(error: OpenAiError) -> Self {
        deepconf_core::Error::backend("openai", error)
    }
}

/// Result alias of deepconf-openai.
pub type Result<T, E = OpenAiError> = std::result::Result<T, E>;

/// Shortens `text` to at most `max` bytes (on a character boundary) for error messages.
pub(crate) fn excerpt(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &text[..end], text.len())
}
