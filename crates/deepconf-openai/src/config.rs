//! Client settings and the builder of [`OpenAiModel`](crate::OpenAiModel). The builder checks the
//! settings here; [`OpenAiBuilder::build`] itself lives next to the model it builds (in `model`),
//! so that the settings need nothing from the model.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use deepconf_core::ChatMessage;
use serde_json::{Map, Value};

use crate::{OpenAiError, Result};

/// Requests in flight by default: enough to keep a GPU server's continuous batch full (vLLM and
/// SGLang schedule a few hundred sequences at once); a small server queues the excess.
pub const DEFAULT_MAX_CONCURRENCY: usize = 128;

/// Retries after the first attempt by default (six attempts in all).
pub const DEFAULT_MAX_RETRIES: u32 = 5;

/// Environment variable read for the API key unless the builder names another.
pub const API_KEY_ENV: &str = "OPENAI_API_KEY";

/// A function that formats chat messages into one prompt string.
type FormatFn = dyn Fn(&[ChatMessage]) -> String + Send + Sync;

/// Formats chat messages into a plain prompt for the completions endpoint (which has no chat template).
#[derive(Clone)]
pub struct PromptTemplate {
    name: &'static str,
    format: Arc<FormatFn>,
}

impl fmt::Debug for PromptTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PromptTemplate")
            .field("name", &self.name)
            .finish()
    }
}

impl PromptTemplate {
    /// ChatML (`<|im_start|>role\ncontent<|im_end|>\n` per message, then the assistant header), as
    /// used by SmolLM2 and Qwen. No default system prompt is added: give one explicitly to match a
    /// template that adds it.
    pub fn chatml() -> Self {
        Self::custom("chatml", |messages| {
            let mut prompt = String::new();
            for message in messages {
                prompt.push_str("<|im_start|>");
                prompt.push_str(message.role.as_str());
                prompt.push('\n');
                prompt.push_str(&message.content);
                prompt.push_str("<|im_end|>\n");
            }
            prompt.push_str("<|im_start|>assistant\n");
            prompt
        })
    }

    /// The non-empty message contents joined by blank lines, roles dropped: for base models.
    pub fn plain() -> Self {
        Self::custom("plain", |messages| {
            messages
                .iter()
                .filter(|m| !m.content.is_empty())
                .map(|m| m.content.as_str())
                .collect::<Vec<_>>()
                .join("\n\n")
        })
    }

    /// Any formatting function; `name` appears in `Debug` output.
    pub fn custom(
        name: &'static str,
        format: impl Fn(&[ChatMessage]) -> String + Send + Sync + 'static,
    ) -> Self {
        Self {
            name,
            format: Arc::new(format),
        }
    }

    /// Formats `messages`.
    pub fn format(&self, messages: &[ChatMessage]) -> String {
        (self.format)(messages)
    }
}

/// Which OpenAI-compatible endpoint generates the traces.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// `POST {base}/chat/completions` with `logprobs: true, top_logprobs: k`; the server applies the
    /// model's chat template. The default.
    Chat,
    /// `POST {base}/completions` with `logprobs: k`; `template` formats the messages client-side.
    /// Top logprobs arrive keyed by decoded text, so two candidates decoding to the same text collapse
    /// unless token ids are requested (see [`OpenAiBuilder::token_ids_as_strings`]).
    Completions {
        /// Formats the chat messages into the prompt.
        template: PromptTemplate,
    },
}

/// Everything the client needs to talk to one server; built by [`OpenAiBuilder`].
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// API root including the version path, e.g. `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// More API roots serving the same model (replicas behind no load balancer). A prompt's
    /// requests go to the same root (ranked by a hash of the prompt, so that its prefix stays in
    /// that server's cache); a root that fails (connection, timeout, 429, 5xx) rests, twice as
    /// long after each failure in a row, and its prompts go to their next root meanwhile.
    pub replicas: Vec<String>,
    /// Model name sent with every request (vLLM: the served model name).
    pub model: String,
    /// Bearer token, if any.
    pub api_key: Option<String>,
    /// Chat or completions endpoint.
    pub endpoint: Endpoint,
    /// Stream tokens as server-sent events (needed to cut traces mid-generation).
    pub stream: bool,
    /// Without streaming, ask for all traces of a batch in one request (`n` choices, which vLLM
    /// and SGLang serve with one prefill of the prompt). Choice `j` is seeded `s + j` (vLLM's
    /// seeds for `n`) where `s` derives from the batch's first trace, and a server that refuses
    /// `n` or sends fewer choices gets one request per missing trace with those same seeds (and
    /// is remembered, per API root, as one that does not serve `n`). Has no effect when
    /// streaming.
    pub choices_per_request: bool,
    /// Most requests in flight at once over this model and all its clones (over all replicas).
    pub max_concurrency: usize,
    /// Retries after the first attempt on connection errors, timeouts, 408, 429, 5xx and streams
    /// cut before their end; a trace cut mid-stream starts again from its first token.
    pub max_retries: u32,
    /// Wait before the first retry; doubles each retry up to `max_backoff`, with random jitter
    /// (a `Retry-After` header sets the wait instead).
    pub initial_backoff: Duration,
    /// Longest wait between retries of this client's own backoff.
    pub max_backoff: Duration,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Longest silence allowed while waiting for the answer or the next streamed bytes.
    pub read_timeout: Duration,
    /// Ask for token ids as `token_id:N` strings (vLLM's `return_tokens_as_token_ids`).
    pub token_ids_as_strings: bool,
    /// Ask for a usage chunk at the end of a stream (`stream_options.include_usage`), which gives
    /// the prompt's token count.
    pub include_usage: bool,
    /// Fail when a token has fewer than k candidates. Off by default: servers that key candidates
    /// by decoded text (completions endpoints; llama-cpp-python on both endpoints) collapse
    /// candidates that decode alike, so a short list is usually no fault; token confidence then
    /// averages the candidates present. Off, the model declares
    /// [`Capabilities::partial_top_logprobs`](deepconf_core::Capabilities) so that the runner
    /// accepts such lists too; on, the runner holds every token to k candidates as well.
    pub strict_top_logprobs: bool,
    /// Keep the text of every top-k candidate in [`TokenStep::top_tokens`](deepconf_core::TokenStep)
    /// (off by default: the model under test needs only their log-probabilities; an LLM judge
    /// reads its answer's alternatives from them).
    pub candidate_texts: bool,
    /// Extra JSON fields merged into every request body (they override the generated ones).
    pub extra_body: Map<String, Value>,
}

/// Builder of [`OpenAiModel`](crate::OpenAiModel); start with
/// [`OpenAiModel::builder`](crate::OpenAiModel::builder).
#[derive(Debug, Clone)]
pub struct OpenAiBuilder {
    config: OpenAiConfig,
    api_key_env: Option<String>,
}

impl OpenAiBuilder {
    pub(crate) fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            config: OpenAiConfig {
                base_url: base_url.into(),
                replicas: Vec::new(),
                model: model.into(),
                api_key: None,
                endpoint: Endpoint::Chat,
                stream: true,
                choices_per_request: true,
                max_concurrency: DEFAULT_MAX_CONCURRENCY,
                max_retries: DEFAULT_MAX_RETRIES,
                initial_backoff: Duration::from_millis(250),
                max_backoff: Duration::from_secs(8),
                connect_timeout: Duration::from_secs(10),
                read_timeout: Duration::from_secs(120),
                token_ids_as_strings: false,
                include_usage: true,
                strict_top_logprobs: false,
                candidate_texts: false,
                extra_body: Map::new(),
            },
            api_key_env: Some(API_KEY_ENV.to_string()),
        }
    }

    /// Uses this API key (overrides the environment).
    #[must_use]
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.config.api_key = Some(key.into());
        self.api_key_env = None;
        self
    }

    /// Reads the API key from environment variable `name` at build time (default `OPENAI_API_KEY`);
    /// an unset or empty variable means no key.
    #[must_use]
    pub fn api_key_env(mut self, name: impl Into<String>) -> Self {
        self.api_key_env = Some(name.into());
        self.config.api_key = None;
        self
    }

    /// Sends no API key at all.
    #[must_use]
    pub fn no_api_key(mut self) -> Self {
        self.api_key_env = None;
        self.config.api_key = None;
        self
    }

    /// Adds a replica: another API root serving the same model. A prompt's requests go to one
    /// root while it is healthy; see [`OpenAiConfig::replicas`].
    #[must_use]
    pub fn replica(mut self, base_url: impl Into<String>) -> Self {
        self.config.replicas.push(base_url.into());
        self
    }

    /// Chooses the endpoint (default [`Endpoint::Chat`]).
    #[must_use]
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.config.endpoint = endpoint;
        self
    }

    /// Streams tokens (default `true`). Without streaming a terminated trace is cut client-side
    /// after the server has generated it in full, and a batch's traces are asked for in one
    /// request ([`OpenAiBuilder::choices_per_request`]): the way for policies that never cut a
    /// trace (fixed, offline).
    #[must_use]
    pub fn stream(mut self, stream: bool) -> Self {
        self.config.stream = stream;
        self
    }

    /// Without streaming, asks for a batch's traces as `n` choices of one request (default
    /// `true`; see [`OpenAiConfig::choices_per_request`]).
    #[must_use]
    pub fn choices_per_request(mut self, enabled: bool) -> Self {
        self.config.choices_per_request = enabled;
        self
    }

    /// Most requests in flight at once (default 128), shared by all clones
    /// and handles of the model.
    #[must_use]
    pub fn max_concurrency(mut self, limit: usize) -> Self {
        self.config.max_concurrency = limit;
        self
    }

    /// Retries after the first attempt (default 5).
    #[must_use]
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.config.max_retries = retries;
        self
    }

    /// First and longest wait between retries (default 250 ms and 8 s).
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.initial_backoff = initial;
        self.config.max_backoff = max;
        self
    }

    /// Time allowed to connect (default 10 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Longest silence while waiting for bytes of the answer (default 120 s).
    #[must_use]
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.config.read_timeout = timeout;
        self
    }

    /// Asks vLLM for `token_id:N` token strings, so every step carries its token id and completions
    /// top logprobs no longer collapse candidates with equal text (default `false`).
    #[must_use]
    pub fn token_ids_as_strings(mut self, enabled: bool) -> Self {
        self.config.token_ids_as_strings = enabled;
        self
    }

    /// Asks for the usage chunk at the end of a stream (default `true`).
    #[must_use]
    pub fn include_usage(mut self, enabled: bool) -> Self {
        self.config.include_usage = enabled;
        self
    }

    /// Fails on any token with fewer than k candidates (default `false`; see
    /// [`OpenAiConfig::strict_top_logprobs`]).
    #[must_use]
    pub fn strict_top_logprobs(mut self, strict: bool) -> Self {
        self.config.strict_top_logprobs = strict;
        self
    }

    /// Keeps the text of every top-k candidate in each step (default `false`; see
    /// [`OpenAiConfig::candidate_texts`]).
    #[must_use]
    pub fn candidate_texts(mut self, enabled: bool) -> Self {
        self.config.candidate_texts = enabled;
        self
    }

    /// Adds a JSON field to every request body, e.g. `("repetition_penalty", 1.0.into())`.
    #[must_use]
    pub fn extra_body_field(mut self, name: impl Into<String>, value: Value) -> Self {
        self.config.extra_body.insert(name.into(), value);
        self
    }

    /// Checks the settings and gives the configuration they make, with the API key read from the
    /// environment when asked; [`build`](Self::build) makes the model of it.
    pub(crate) fn into_config(mut self) -> Result<OpenAiConfig> {
        if let Some(name) = self.api_key_env.take() {
            self.config.api_key = std::env::var(&name).ok().filter(|k| !k.is_empty());
        }
        self.config.base_url = normalize_base_url(&self.config.base_url)?;
        self.config.replicas = self
            .config
            .replicas
            .iter()
            .map(|url| normalize_base_url(url))
            .collect::<Result<_>>()?;
        if self.config.model.trim().is_empty() {
            return Err(OpenAiError::InvalidConfig {
                parameter: "model",
                value: format!("{:?}", self.config.model),
                reason: "must name the served model (vLLM: --served-model-name or the model path)",
            });
        }
        if self.config.max_concurrency == 0 {
            return Err(OpenAiError::InvalidConfig {
                parameter: "max_concurrency",
                value: "0".into(),
                reason: "must be at least 1",
            });
        }
        if self.config.connect_timeout.is_zero() || self.config.read_timeout.is_zero() {
            return Err(OpenAiError::InvalidConfig {
                parameter: "connect_timeout/read_timeout",
                value: format!(
                    "{:?}/{:?}",
                    self.config.connect_timeout, self.config.read_timeout
                ),
                reason: "must be positive",
            });
        }
        Ok(self.config)
    }
}

/// `http://host:port` and `http://host:port/` become `http://host:port/v1`; any other path is kept
/// (without a trailing slash), so `https://proxy/openai/v1` works as given.
fn normalize_base_url(raw: &str) -> Result<String> {
    let trimmed = raw.trim();
    let invalid = |reason| OpenAiError::InvalidConfig {
        parameter: "base_url",
        value: raw.to_string(),
        reason,
    };
    let rest = trimmed
        .strip_prefix("http://")
        .or_else(|| trimmed.strip_prefix("https://"))
        .ok_or_else(|| invalid("must start with http:// or https://"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(invalid("has no host"));
    }
    let without_slash = trimmed.trim_end_matches('/');
    if without_slash.len() == trimmed.len() - rest.len() + host.len() {
        Ok(format!("{without_slash}/v1"))
    } else {
        Ok(without_slash.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_gets_v1_only_without_a_path() {
        assert_eq!(
            normalize_base_url("http://127.0.0.1:8000").unwrap(),
            "http://127.0.0.1:8000/v1"
        );
        assert_eq!(normalize_base_url("http://h:1/").unwrap(), "http://h:1/v1");
        assert_eq!(normalize_base_url("https://h/v1/").unwrap(), "https://h/v1");
        assert_eq!(
            normalize_base_url("https://h/proxy/openai/v1").unwrap(),
            "https://h/proxy/openai/v1"
        );
        let err = normalize_base_url("127.0.0.1:8000").unwrap_err();
        assert!(err.to_string().contains("base_url"), "{err}");
        assert!(normalize_base_url("http:///v1").is_err());
    }

    #[test]
    fn chatml_formats_every_turn_and_opens_the_answer() {
        let prompt = PromptTemplate::chatml()
            .format(&[ChatMessage::system("Be brief."), ChatMessage::user("Hi")]);
        assert_eq!(
            prompt,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}
