//! Data types shared by every backend: chat messages, sampling settings, tokens and traces.

use serde::{Deserialize, Serialize};

use deepconf_confidence::{ConfidenceConfig, ConfidenceSummary, summarize, token_confidence};

use crate::{Error, Result, StopReason, TraceSpec};

/// Author of a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// System prompt.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// The role name used by chat templates and OpenAI-compatible APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One chat message. A prompt is a list of messages; the model's chat template formats it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Author.
    pub role: Role,
    /// Text.
    pub content: String,
}

impl ChatMessage {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// Sampling settings of one generation request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Softmax temperature; `0.0` means greedy decoding.
    pub temperature: f32,
    /// Nucleus sampling mass in `(0, 1]`; `1.0` disables it.
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens when sampling; `0` disables it.
    pub top_k: usize,
    /// Maximum generated tokens per trace.
    pub max_tokens: usize,
    /// Base seed; trace `i` of a run uses a seed derived from it (see [`TraceSpec`]).
    pub seed: u64,
    /// Number of top candidates whose log-probabilities are reported per token (DeepConf: 20).
    pub top_logprobs: usize,
}

impl Default for SamplingParams {
    /// Temperature 0.7, top-p 0.95, top-k sampling off (0), at most 256 tokens, seed 0, and the
    /// 20 top log-probabilities DeepConf averages.
    fn default() -> Self {
        Self {
            temperature: 0.7,
            top_p: 0.95,
            top_k: 0,
            max_tokens: 256,
            seed: 0,
            top_logprobs: deepconf_confidence::DEEPCONF_TOP_K,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding (temperature 0) with the other defaults.
    #[must_use]
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }

    /// Sets the temperature.
    #[must_use]
    pub fn with_temperature(mut self, temperature: f32) -> Self {
        self.temperature = temperature;
        self
    }

    /// Sets top-p.
    #[must_use]
    pub fn with_top_p(mut self, top_p: f32) -> Self {
        self.top_p = top_p;
        self
    }

    /// Sets top-k sampling (`0` disables).
    #[must_use]
    pub fn with_top_k(mut self, top_k: usize) -> Self {
        self.top_k = top_k;
        self
    }

    /// Sets the maximum generated tokens.
    #[must_use]
    pub fn with_max_tokens(mut self, max_tokens: usize) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// Sets the base seed.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets how many top log-probabilities are reported per token.
    #[must_use]
    pub fn with_top_logprobs(mut self, k: usize) -> Self {
        self.top_logprobs = k;
        self
    }

    /// Checks every field, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        let bad = |parameter: &'static str, value: String, reason: &'static str| {
            Err(Error::InvalidParameter {
                parameter,
                value,
                reason,
            })
        };
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(
                "temperature",
                self.temperature.to_string(),
                "must be finite and >= 0",
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", self.top_p.to_string(), "must be in (0, 1]");
        }
        if self.max_tokens == 0 {
            return bad("max_tokens", "0".into(), "must be at least 1");
        }
        if self.top_logprobs == 0 {
            return bad("top_logprobs", "0".into(), "must be at least 1");
        }
        Ok(())
    }
}

/// The prompt of a request: chat messages that the model's chat template formats, or raw text that
/// reaches the model verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Prompt {
    /// A conversation; the model's chat template formats it and adds the generation prompt.
    Chat(Vec<ChatMessage>),
    /// Text given to the model as it is, with no chat template: judges whose published prompt
    /// carries its own markup (WildGuard, Llama Guard, the HarmBench classifier) and base models.
    /// A server receives it through its completions endpoint.
    Text(String),
}

impl Prompt {
    /// The chat messages, `None` for a raw text prompt.
    pub fn messages(&self) -> Option<&[ChatMessage]> {
        match self {
            Prompt::Chat(messages) => Some(messages),
            Prompt::Text(_) => None,
        }
    }

    /// Checks that the prompt asks the model something: a chat needs at least one user message
    /// and no user message without text, a raw text must not be blank. The error names the
    /// parameter `prompt` and shows what was found.
    pub fn validate(&self) -> Result<()> {
        let bad = |value: String, reason: &'static str| {
            Err(Error::InvalidParameter {
                parameter: "prompt",
                value,
                reason,
            })
        };
        match self {
            Prompt::Chat(messages) => {
                if !messages.iter().any(|m| m.role == Role::User) {
                    let roles: Vec<&str> = messages.iter().map(|m| m.role.as_str()).collect();
                    return bad(
                        format!("a chat of roles [{}]", roles.join(", ")),
                        "a chat prompt needs a user message",
                    );
                }
                if let Some((i, m)) = messages
                    .iter()
                    .enumerate()
                    .find(|(_, m)| m.role == Role::User && m.content.trim().is_empty())
                {
                    return bad(
                        format!("message {i} (user) {:?}", m.content),
                        "a user message needs text",
                    );
                }
                Ok(())
            }
            Prompt::Text(text) if text.trim().is_empty() => {
                bad(format!("{text:?}"), "a text prompt needs text")
            }
            Prompt::Text(_) => Ok(()),
        }
    }

    /// What a refusal classifier judges the answer against: the last user message of a chat, or
    /// the whole raw text.
    pub fn user_text(&self) -> &str {
        match self {
            Prompt::Chat(messages) => messages
                .iter()
                .rev()
                .find(|m| m.role == Role::User)
                .map_or("", |m| m.content.as_str()),
            Prompt::Text(text) => text,
        }
    }
}

/// What to generate: a prompt plus sampling settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRequest {
    /// The prompt.
    pub prompt: Prompt,
    /// Sampling settings.
    pub sampling: SamplingParams,
}

impl GenerationRequest {
    /// A request with a single user message.
    pub fn user(prompt: impl Into<String>, sampling: SamplingParams) -> Self {
        Self::chat(vec![ChatMessage::user(prompt)], sampling)
    }

    /// A request with a conversation.
    pub fn chat(messages: Vec<ChatMessage>, sampling: SamplingParams) -> Self {
        Self {
            prompt: Prompt::Chat(messages),
            sampling,
        }
    }

    /// A request with raw text that bypasses the chat template.
    pub fn text(prompt: impl Into<String>, sampling: SamplingParams) -> Self {
        Self {
            prompt: Prompt::Text(prompt.into()),
            sampling,
        }
    }
}

/// One generated token with the model's top-k log-probabilities at that step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenStep {
    /// Vocabulary id of the sampled token, when the backend knows it.
    pub token_id: Option<u32>,
    /// Text of the token (may be empty when it ends inside a multi-byte character).
    pub text: String,
    /// Log-probability of the sampled token under the model's distribution.
    pub logprob: f32,
    /// Log-probabilities of the top-k candidates, most likely first.
    pub top_logprobs: Vec<f32>,
    /// Vocabulary ids of the top-k candidates in the same order, when the backend knows them
    /// (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_token_ids: Vec<u32>,
    /// Texts of the top-k candidates in the same order, when the backend reports them rather than
    /// ids (an OpenAI-compatible server asked for them); empty otherwise. An LLM judge reads its
    /// answer's alternatives here, or through [`LogprobModel::token_text`](crate::LogprobModel::token_text)
    /// of the ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_tokens: Vec<String>,
}

impl TokenStep {
    /// DeepConf token confidence of this step over its first `k` candidates.
    pub fn confidence(&self, k: usize) -> f64 {
        token_confidence(&self.top_logprobs, k)
    }
}

/// One generated trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// Which trace of the request.
    pub spec: TraceSpec,
    /// The generated text (decoded from all tokens at once, so multi-byte characters are whole).
    pub text: String,
    /// Every generated token (the end-of-sequence token is not included).
    pub steps: Vec<TokenStep>,
    /// Why generation ended.
    pub stop_reason: StopReason,
    /// Tokens in the formatted prompt.
    pub prompt_tokens: usize,
}

impl Trace {
    /// Generated tokens.
    pub fn n_tokens(&self) -> usize {
        self.steps.len()
    }

    /// True when the token observer terminated the trace early.
    pub fn is_terminated(&self) -> bool {
        self.stop_reason == StopReason::Terminated
    }

    /// Per-token confidences over the first `k` candidates.
    pub fn token_confidences(&self, k: usize) -> Vec<f64> {
        self.steps.iter().map(|s| s.confidence(k)).collect()
    }

    /// Trace-level confidence metrics; `Ok(None)` for a trace with no tokens, `Err` for an
    /// invalid `config`. The tokens are not checked: a trace that did not come through the
    /// [`Runner`](crate::Runner) may hold NaN or positive log-probabilities.
    pub fn confidence_summary(
        &self,
        config: &ConfidenceConfig,
    ) -> Result<Option<ConfidenceSummary>> {
        Ok(summarize(&self.token_confidences(config.top_k), config)?)
    }

    /// Token ids (tokens whose id the backend did not report are skipped).
    pub fn token_ids(&self) -> Vec<u32> {
        self.steps.iter().filter_map(|s| s.token_id).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_validation_names_parameter() {
        let err = SamplingParams::default()
            .with_top_p(0.0)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("top_p"), "{err}");
        let err = SamplingParams::default()
            .with_temperature(-1.0)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("temperature"), "{err}");
        assert!(SamplingParams::greedy().validate().is_ok());
    }

    #[test]
    fn sampling_params_round_trip_json() {
        let p = SamplingParams::default().with_seed(42).with_top_k(40);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<SamplingParams>(&json).unwrap(), p);
        // Missing fields take defaults.
        let partial: SamplingParams = serde_json::from_str(r#"{"max_tokens": 8}"#).unwrap();
        assert_eq!(partial.max_tokens, 8);
        assert_eq!(partial.top_logprobs, 20);
    }
}
