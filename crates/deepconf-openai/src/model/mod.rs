//! [`OpenAiModel`]: the [`LogprobModel`] over HTTP, with streaming, retries and bounded concurrency.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use async_lock::Semaphore;
use deepconf_core::{
    Capabilities, GenerationRequest, LogprobModel, TokenControl, TokenObserver, TokenStep, Trace,
    TraceSpec,
};
use serde_json::Value;

use crate::config::{OpenAiBuilder, OpenAiConfig};
use crate::error::excerpt;
use crate::wire::{self};
use crate::{OpenAiError, Result};

mod batch;
mod choices;
mod http;
mod replicas;
mod stream;

use http::MAX_QUOTED;
use replicas::Replicas;

/// A [`LogprobModel`] served by an OpenAI-compatible HTTP server (vLLM, SGLang, llama.cpp).
///
/// Cloning is cheap and clones share the connection pool and the concurrency limit, so one model
/// can serve several prompts from several threads.
///
/// # Threads and the observer
/// [`generate_batch`](LogprobModel::generate_batch) runs up to
/// [`max_concurrency`](OpenAiBuilder::max_concurrency) traces at once, one worker thread each. The
/// [`TokenObserver`] is not `Send`, so it stays on the calling thread: a worker hands every token to
/// the calling thread through a channel and reads on without waiting for the observer's answer (a
/// round trip per token would cost two thread wake-ups). On [`TokenControl::Stop`] the calling
/// thread flags the trace; the worker sees the flag at its next token and drops the connection,
/// which closes the stream, and the trace ends with [`StopReason::Terminated`](deepconf_core::StopReason::Terminated) holding exactly the
/// tokens the observer saw (the few read meanwhile are dropped). Servers
/// notice the closed connection at their next token and stop generating (vLLM aborts the request;
/// llama-cpp-python logs "Disconnected from client").
///
/// Without streaming ([`OpenAiBuilder::stream`]`(false)`) the server generates each trace in full and
/// the trace is cut client-side, so no server work is saved.
#[derive(Debug, Clone)]
pub struct OpenAiModel {
    config: Arc<OpenAiConfig>,
    agent: ureq::Agent,
    /// Bounds requests in flight across clones; blocking acquire, as every request runs on a
    /// thread of its own.
    permits: Arc<Semaphore>,
    replicas: Arc<Replicas>,
}

/// Where a trace's tokens go while it is generated: to the observer, directly or through the
/// thread that called [`LogprobModel::generate_batch`].
trait TraceSink {
    /// One more token of the current attempt.
    fn token(&mut self, step: &TokenStep) -> TokenControl;
    /// The tokens delivered so far are void: the trace starts again.
    fn restart(&mut self);
}

/// A sink straight into the caller's observer.
struct ObserverSink<'a> {
    spec: TraceSpec,
    observer: &'a mut dyn TokenObserver,
}

impl TraceSink for ObserverSink<'_> {
    fn token(&mut self, step: &TokenStep) -> TokenControl {
        self.observer.on_token(&self.spec, step)
    }

    fn restart(&mut self) {
        self.observer.on_restart(&self.spec);
    }
}

impl OpenAiModel {
    /// A builder for a server at `base_url` (e.g. `http://127.0.0.1:8000/v1`; a URL without a path
    /// gets `/v1`) serving `model`.
    pub fn builder(base_url: impl Into<String>, model: impl Into<String>) -> OpenAiBuilder {
        OpenAiBuilder::new(base_url, model)
    }

    /// The model with default settings: chat endpoint, streaming, 128 requests in flight, API key from
    /// `OPENAI_API_KEY` when set. This is what `--backend openai --base-url URL --model NAME` builds.
    pub fn from_args(base_url: &str, model: &str) -> Result<Self> {
        Self::builder(base_url, model).build()
    }

    pub(crate) fn from_config(config: OpenAiConfig) -> Self {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(config.connect_timeout)
            .timeout_read(config.read_timeout)
            .timeout_write(config.read_timeout)
            .max_idle_connections_per_host(config.max_concurrency)
            // ureq keeps 100 idle connections in all by default: more requests in flight than
            // that would each open a new connection.
            .max_idle_connections(config.max_concurrency * (1 + config.replicas.len()))
            .build();
        Self {
            permits: Arc::new(Semaphore::new(config.max_concurrency)),
            replicas: Arc::new(Replicas::new(&config)),
            config: Arc::new(config),
            agent,
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &OpenAiConfig {
        &self.config
    }

    /// The model ids the server lists at `GET {base}/models`.
    pub fn list_models(&self) -> Result<Vec<String>> {
        let url = format!("{}/models", self.config.base_url);
        let mut request = self.agent.get(&url);
        if let Some(key) = &self.config.api_key {
            request = request.set("Authorization", &format!("Bearer {key}"));
        }
        let response = request
            .call()
            .map_err(|e| self.request_error(&url, e, self.config.connect_timeout))?;
        let body = response
            .into_string()
            .map_err(|e| self.io_error(&url, &e))?;
        let value: Value =
            serde_json::from_str(&body).map_err(|e| OpenAiError::MalformedResponse {
                url: url.clone(),
                body: excerpt(&body, MAX_QUOTED),
                reason: e.to_string(),
            })?;
        Ok(value
            .get("data")
            .and_then(Value::as_array)
            .map(|models| {
                models
                    .iter()
                    .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }
}

// The builder's last step lives here, next to the model it makes, so that the settings in
// `config` need nothing from the model.
impl OpenAiBuilder {
    /// Checks the settings and builds the model.
    pub fn build(self) -> Result<OpenAiModel> {
        Ok(OpenAiModel::from_config(self.into_config()?))
    }
}

impl LogprobModel for OpenAiModel {
    fn generate(
        &mut self,
        request: &GenerationRequest,
        trace: TraceSpec,
        observer: &mut dyn TokenObserver,
    ) -> deepconf_core::Result<Trace> {
        request.sampling.validate()?;
        if self.uses_choices() {
            let mut traces = self.generate_choices(request, &[trace], observer)?;
            return Ok(traces.remove(0));
        }
        let never = AtomicBool::new(false);
        let mut sink = ObserverSink {
            spec: trace,
            observer,
        };
        let (trace, _) =
            self.run_trace(request, trace, wire::wire_seed(trace), &mut sink, &never)?;
        Ok(trace)
    }

    fn generate_batch(
        &mut self,
        request: &GenerationRequest,
        traces: &[TraceSpec],
        observer: &mut dyn TokenObserver,
    ) -> deepconf_core::Result<Vec<Trace>> {
        request.sampling.validate()?;
        if traces.is_empty() {
            return Ok(Vec::new());
        }
        if self.uses_choices() {
            return Ok(self.generate_choices(request, traces, observer)?);
        }
        let seeds: Vec<u64> = traces.iter().map(|&spec| wire::wire_seed(spec)).collect();
        Ok(self.batch_per_trace(request, traces, &seeds, observer)?)
    }

    fn capabilities(&self) -> Capabilities {
        // Servers that key candidates by text merge those that decode alike; unless told to be
        // strict, a short list is accepted here, so the runner must accept it too.
        Capabilities::new()
            .with_max_batch_size(self.config.max_concurrency)
            .with_max_concurrent_traces(self.config.max_concurrency)
            .with_partial_top_logprobs(!self.config.strict_top_logprobs)
    }

    fn model_id(&self) -> String {
        format!("openai:{}@{}", self.config.model, self.config.base_url)
    }

    fn concurrent_handle(&self) -> Option<Box<dyn LogprobModel + Send>> {
        Some(Box::new(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_rejects_empty_model_and_zero_concurrency() {
        let err = OpenAiModel::builder("http://h:1", " ").build().unwrap_err();
        assert!(err.to_string().contains("model"), "{err}");
        let err = OpenAiModel::builder("http://h:1", "m")
            .max_concurrency(0)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("max_concurrency"), "{err}");
    }

    #[test]
    fn short_top_k_lists_are_declared_unless_strict() {
        use deepconf_core::LogprobModel;
        let lenient = OpenAiModel::builder("http://h:1", "m").build().unwrap();
        assert!(lenient.capabilities().partial_top_logprobs);
        assert_eq!(lenient.capabilities().min_candidates(20), 1);
        let strict = OpenAiModel::builder("http://h:1", "m")
            .strict_top_logprobs(true)
            .build()
            .unwrap();
        assert!(!strict.capabilities().partial_top_logprobs);
        assert_eq!(strict.capabilities().min_candidates(20), 20);
    }

    #[test]
    fn explicit_api_key_wins_over_environment() {
        let model = OpenAiModel::builder("http://h:1", "m")
            .api_key("secret")
            .build()
            .unwrap();
        assert_eq!(model.config().api_key.as_deref(), Some("secret"));
        let model = OpenAiModel::builder("http://h:1", "m")
            .api_key_env("DEEPCONF_OPENAI_TEST_SURELY_UNSET_VARIABLE")
            .build()
            .unwrap();
        assert_eq!(model.config().api_key, None);
    }
}
