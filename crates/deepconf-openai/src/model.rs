//! [`OpenAiModel`]: the [`LogprobModel`] over HTTP, with streaming, retries and bounded concurrency.

use std::io::{BufRead, BufReader, Read};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, channel, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use deepconf_core::{
    Capabilities, GenerationRequest, LogprobModel, StopReason, TokenControl, TokenObserver,
    TokenStep, Trace, TraceSpec,
};
use serde_json::Value;

use crate::config::{OpenAiBuilder, OpenAiConfig};
use crate::error::excerpt;
use crate::wire::{self, Piece, Route};
use crate::{OpenAiError, Result};

/// Longest error body read from a failed request.
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// Longest line quoted in an error.
const MAX_QUOTED: usize = 600;

/// A [`LogprobModel`] served by an OpenAI-compatible HTTP server (vLLM, SGLang, llama.cpp).
///
/// Cloning is cheap and clones share the connection pool and the concurrency limit, so one model
/// can serve several prompts from several threads.
///
/// # Threads and the observer
/// [`generate_batch`](LogprobModel::generate_batch) runs up to
/// [`max_concurrency`](OpenAiBuilder::max_concurrency) traces at once, one worker thread each. The
/// [`TokenObserver`] is not `Send`, so it stays on the calling thread: a worker hands every token to
/// the calling thread through a channel and waits for the observer's answer before reading the next
/// event. On [`TokenControl::Stop`] the worker drops the connection, which closes the stream, and the
/// trace ends with [`StopReason::Terminated`] holding exactly the tokens the observer saw. Servers
/// notice the closed connection at their next token and stop generating (vLLM aborts the request;
/// llama-cpp-python logs "Disconnected from client").
///
/// Without streaming ([`OpenAiBuilder::stream`]`(false)`) the server generates each trace in full and
/// the trace is cut client-side, so no server work is saved.
#[derive(Debug, Clone)]
pub struct OpenAiModel {
    config: Arc<OpenAiConfig>,
    agent: ureq::Agent,
    permits: Arc<Permits>,
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

/// The API roots of the replicas, each with its requests in flight.
#[derive(Debug)]
struct Replicas {
    roots: Vec<(String, AtomicUsize)>,
    /// Breaks ties between equally loaded roots in turn.
    turn: AtomicUsize,
}

impl Replicas {
    fn new(config: &OpenAiConfig) -> Self {
        let roots = std::iter::once(&config.base_url)
            .chain(&config.replicas)
            .map(|url| (url.clone(), AtomicUsize::new(0)))
            .collect();
        Self {
            roots,
            turn: AtomicUsize::new(0),
        }
    }

    /// The least loaded root, counted as loaded until the guard drops.
    fn pick(&self) -> ReplicaLoad<'_> {
        let n = self.roots.len();
        let start = self.turn.fetch_add(1, Ordering::Relaxed) % n;
        let index = (0..n)
            .map(|i| (start + i) % n)
            .min_by_key(|&i| self.roots[i].1.load(Ordering::Relaxed))
            .unwrap_or(0);
        self.roots[index].1.fetch_add(1, Ordering::Relaxed);
        ReplicaLoad {
            replicas: self,
            index,
        }
    }
}

struct ReplicaLoad<'a> {
    replicas: &'a Replicas,
    index: usize,
}

impl ReplicaLoad<'_> {
    fn base_url(&self) -> &str {
        &self.replicas.roots[self.index].0
    }
}

impl Drop for ReplicaLoad<'_> {
    fn drop(&mut self) {
        self.replicas.roots[self.index]
            .1
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// A uniformly random fraction in `[0, 1)` for backoff jitter (SplitMix64 over a counter and the
/// clock: retries need spreading, not cryptographic randomness).
fn jitter_fraction() -> f64 {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let mut z = (COUNTER.fetch_add(1, Ordering::Relaxed) as u64) ^ (nanos << 20);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The wait before a retry: the server's `Retry-After` when it sent one (plus up to 10%, so that
/// clients told the same time do not return together), else `backoff` with equal jitter (half
/// fixed, half random).
fn retry_wait(backoff: Duration, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(after) => after.mul_f64(1.0 + 0.1 * jitter_fraction()),
        None => backoff.mul_f64(0.5 + 0.5 * jitter_fraction()),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by inference servers and is ignored).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(3600.0)))
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
            .build();
        Self {
            permits: Arc::new(Permits::new(config.max_concurrency)),
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

    /// Generates one trace, retrying transient failures with backoff. A failure after some tokens
    /// reached `sink` voids them (`sink.restart()`) and the trace starts again from its first
    /// token, so a trace never mixes tokens of two attempts; `cancel` aborts between attempts.
    fn run_trace(
        &self,
        request: &GenerationRequest,
        spec: TraceSpec,
        sink: &mut dyn TraceSink,
        cancel: &AtomicBool,
    ) -> Result<Trace> {
        let (route, body) = wire::request_body(&self.config, request, spec);
        let body = body.to_string();
        let mut attempt: u32 = 0;
        let mut backoff = self.config.initial_backoff;
        loop {
            attempt += 1;
            let mut delivered = 0usize;
            let outcome = {
                let _permit = self.permits.acquire();
                let replica = self.replicas.pick();
                let url = format!("{}{}", replica.base_url(), route.path());
                let mut counting = |step: &TokenStep| {
                    delivered += 1;
                    sink.token(step)
                };
                self.attempt_trace(&url, route, &body, request, spec, &mut counting)
            };
            let (error, retry_after) = match outcome {
                Ok(trace) => return Ok(trace),
                Err(failure) => failure,
            };
            if !error.is_transient()
                || attempt > self.config.max_retries
                || cancel.load(Ordering::Relaxed)
            {
                return Err(if attempt > 1 {
                    OpenAiError::GaveUp {
                        attempts: attempt,
                        source: Box::new(error),
                    }
                } else {
                    error
                });
            }
            if delivered > 0 {
                sink.restart();
            }
            std::thread::sleep(retry_wait(backoff, retry_after));
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    /// One HTTP request for one trace. On failure also returns the server's `Retry-After`.
    fn attempt_trace(
        &self,
        url: &str,
        route: Route,
        body: &str,
        request: &GenerationRequest,
        spec: TraceSpec,
        sink: &mut dyn FnMut(&TokenStep) -> TokenControl,
    ) -> std::result::Result<Trace, (OpenAiError, Option<Duration>)> {
        let mut http = self.agent.post(url).set("Content-Type", "application/json");
        if self.config.stream {
            http = http.set("Accept", "text/event-stream");
        }
        if let Some(key) = &self.config.api_key {
            http = http.set("Authorization", &format!("Bearer {key}"));
        }
        let response = match http.send_string(body) {
            Ok(response) => response,
            Err(ureq::Error::Status(status, response)) => {
                let retry_after = response.header("Retry-After").and_then(parse_retry_after);
                return Err((self.status_error(url, status, response), retry_after));
            }
            Err(other) => {
                return Err((
                    self.request_error(url, other, self.config.connect_timeout),
                    None,
                ));
            }
        };
        let mut assembler = TraceAssembler::new(
            spec,
            request.sampling.top_logprobs,
            self.config.strict_top_logprobs,
        );
        assembler.candidate_texts = self.config.candidate_texts;
        let reader = response.into_reader();
        let result = if self.config.stream {
            self.read_stream(url, route, reader, &mut assembler, sink)
        } else {
            self.read_whole(url, route, reader, &mut assembler, sink)
        };
        result.map_err(|e| (e, None))?;
        assembler.finish(url).map_err(|e| (e, None))
    }

    /// Reads server-sent events until `[DONE]`, the end of the body, or a stop from `sink` (which
    /// returns early and so drops the reader and the connection).
    fn read_stream(
        &self,
        url: &str,
        route: Route,
        reader: Box<dyn Read + Send + Sync + 'static>,
        assembler: &mut TraceAssembler,
        sink: &mut dyn FnMut(&TokenStep) -> TokenControl,
    ) -> Result<()> {
        let mut lines = BufReader::new(reader);
        let mut line = String::new();
        let mut data = String::new();
        loop {
            line.clear();
            let read = lines
                .read_line(&mut line)
                .map_err(|e| self.io_error(url, &e))?;
            let trimmed = line.trim_end_matches(['\n', '\r']);
            if read == 0 || trimmed.is_empty() {
                // A blank line ends an event; the end of the body ends the last one.
                if !data.is_empty() {
                    let payload = std::mem::take(&mut data);
                    if payload.trim() == "[DONE]" {
                        return Ok(());
                    }
                    let value: Value = match serde_json::from_str(&payload) {
                        Ok(value) => value,
                        // The body ended inside an event: the connection was cut mid-stream.
                        // The trace then lacks its finish reason, which is retried.
                        Err(e) if read == 0 && e.is_eof() => return Ok(()),
                        Err(e) => {
                            return Err(OpenAiError::MalformedEvent {
                                url: url.to_string(),
                                line: excerpt(&payload, MAX_QUOTED),
                                reason: format!("not JSON: {e}"),
                            });
                        }
                    };
                    if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
                        return Err(OpenAiError::StreamError {
                            url: url.to_string(),
                            message: wire::error_message(
                                &serde_json::json!({ "error": error }).to_string(),
                            ),
                        });
                    }
                    let piece = wire::parse_piece(&value, route).map_err(|reason| {
                        OpenAiError::MalformedEvent {
                            url: url.to_string(),
                            line: excerpt(&payload, MAX_QUOTED),
                            reason,
                        }
                    })?;
                    if assembler.push(url, piece, sink)? == TokenControl::Stop {
                        return Ok(());
                    }
                }
                if read == 0 {
                    return Ok(());
                }
                continue;
            }
            if let Some(value) = trimmed.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
            } else if trimmed.starts_with(':')
                || trimmed.starts_with("event:")
                || trimmed.starts_with("id:")
                || trimmed.starts_with("retry:")
            {
                // Comments (keep-alive pings) and event metadata carry no tokens.
            } else {
                return Err(OpenAiError::MalformedEvent {
                    url: url.to_string(),
                    line: excerpt(trimmed, MAX_QUOTED),
                    reason: "not a server-sent event field (expected `data:`)".into(),
                });
            }
        }
    }

    /// Reads a whole (non-streamed) answer and replays its tokens through `sink`.
    fn read_whole(
        &self,
        url: &str,
        route: Route,
        mut reader: Box<dyn Read + Send + Sync + 'static>,
        assembler: &mut TraceAssembler,
        sink: &mut dyn FnMut(&TokenStep) -> TokenControl,
    ) -> Result<()> {
        let mut body = String::new();
        reader
            .read_to_string(&mut body)
            .map_err(|e| self.io_error(url, &e))?;
        let malformed = |reason: String| OpenAiError::MalformedResponse {
            url: url.to_string(),
            body: excerpt(&body, MAX_QUOTED),
            reason,
        };
        let value: Value =
            serde_json::from_str(&body).map_err(|e| malformed(format!("not JSON: {e}")))?;
        let piece = wire::parse_piece(&value, route).map_err(malformed)?;
        assembler.push(url, piece, sink)?;
        Ok(())
    }

    fn status_error(&self, url: &str, status: u16, response: ureq::Response) -> OpenAiError {
        let mut body = String::new();
        // The body is only read for its message; a broken body still leaves the status to report.
        let _ = response
            .into_reader()
            .take(MAX_ERROR_BODY)
            .read_to_string(&mut body);
        let message = excerpt(&wire::error_message(&body), MAX_QUOTED);
        let lower = message.to_lowercase();
        let hint = match status {
            401 | 403 => " (check the API key: OPENAI_API_KEY or the builder's api_key)",
            404 => " (check the base URL, which should end in /v1, and the model name)",
            400 | 422 if lower.contains("logprob") => {
                " (the server may cap top logprobs below the k asked for; start vLLM with --max-logprobs K)"
            }
            _ => "",
        };
        OpenAiError::Status {
            url: url.to_string(),
            status,
            message,
            hint: hint.to_string(),
        }
    }

    fn request_error(&self, url: &str, error: ureq::Error, timeout: Duration) -> OpenAiError {
        match error {
            ureq::Error::Status(status, response) => self.status_error(url, status, response),
            ureq::Error::Transport(transport) => {
                let message = transport.to_string();
                let timed_out = std::error::Error::source(&transport)
                    .and_then(|s| s.downcast_ref::<std::io::Error>())
                    .is_some_and(|io| {
                        matches!(
                            io.kind(),
                            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                        )
                    });
                if timed_out {
                    OpenAiError::Timeout {
                        url: url.to_string(),
                        after: timeout,
                        message,
                    }
                } else {
                    OpenAiError::Connection {
                        url: url.to_string(),
                        message,
                    }
                }
            }
        }
    }

    fn io_error(&self, url: &str, error: &std::io::Error) -> OpenAiError {
        match error.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => OpenAiError::Timeout {
                url: url.to_string(),
                after: self.config.read_timeout,
                message: error.to_string(),
            },
            _ => OpenAiError::Connection {
                url: url.to_string(),
                message: format!("reading the answer failed: {error}"),
            },
        }
    }
}

/// Builds a [`Trace`] from pieces, calling the sink for every token and stopping when it says so.
struct TraceAssembler {
    spec: TraceSpec,
    top_k: usize,
    strict: bool,
    /// Keep the candidates' texts in each step (for judges).
    candidate_texts: bool,
    text: String,
    steps: Vec<TokenStep>,
    finish_reason: Option<String>,
    prompt_tokens: Option<usize>,
    terminated: bool,
}

impl TraceAssembler {
    fn new(spec: TraceSpec, top_k: usize, strict: bool) -> Self {
        Self {
            spec,
            top_k,
            strict,
            candidate_texts: false,
            text: String::new(),
            steps: Vec::new(),
            finish_reason: None,
            prompt_tokens: None,
            terminated: false,
        }
    }

    fn push(
        &mut self,
        url: &str,
        piece: Piece,
        sink: &mut dyn FnMut(&TokenStep) -> TokenControl,
    ) -> Result<TokenControl> {
        if piece.prompt_tokens.is_some() {
            self.prompt_tokens = piece.prompt_tokens;
        }
        if piece.finish_reason.is_some() {
            self.finish_reason = piece.finish_reason;
        }
        if piece.tokens.is_empty() {
            if !piece.content.is_empty() {
                return Err(OpenAiError::MissingLogprobs {
                    url: url.to_string(),
                    token_index: self.steps.len(),
                });
            }
            return Ok(TokenControl::Continue);
        }
        // Token strings of the form `token_id:N` carry no text: the piece's text goes to its last token.
        let ids_only = piece
            .tokens
            .iter()
            .all(|t| t.text.starts_with("token_id:") && t.id.is_some());
        let count = piece.tokens.len();
        let mut kept_text = String::new();
        for (i, raw) in piece.tokens.into_iter().enumerate() {
            let token_index = self.steps.len();
            if raw.top.is_empty() {
                return Err(OpenAiError::MissingLogprobs {
                    url: url.to_string(),
                    token_index,
                });
            }
            if self.strict && raw.top.len() < self.top_k {
                return Err(OpenAiError::TooFewLogprobs {
                    url: url.to_string(),
                    token_index,
                    got: raw.top.len(),
                    wanted: self.top_k,
                });
            }
            let text = if ids_only {
                if i + 1 == count {
                    piece.content.clone()
                } else {
                    String::new()
                }
            } else {
                raw.text.clone()
            };
            kept_text.push_str(&text);
            let step = wire::token_step(raw, text, self.top_k, self.candidate_texts);
            let control = sink(&step);
            self.steps.push(step);
            if control == TokenControl::Stop {
                self.text.push_str(&kept_text);
                self.terminated = true;
                return Ok(TokenControl::Stop);
            }
        }
        self.text.push_str(&piece.content);
        Ok(TokenControl::Continue)
    }

    fn finish(self, url: &str) -> Result<Trace> {
        let stop_reason = if self.terminated {
            StopReason::Terminated
        } else {
            match self.finish_reason.as_deref() {
                None => {
                    return Err(OpenAiError::IncompleteStream {
                        url: url.to_string(),
                        tokens: self.steps.len(),
                    });
                }
                Some(reason) => wire::stop_reason(reason).map_err(|()| OpenAiError::Aborted {
                    url: url.to_string(),
                    finish_reason: reason.to_string(),
                })?,
            }
        };
        Ok(Trace {
            spec: self.spec,
            text: self.text,
            steps: self.steps,
            stop_reason,
            prompt_tokens: self.prompt_tokens.unwrap_or(0),
        })
    }
}

/// A counting semaphore bounding requests in flight across clones of a model.
#[derive(Debug)]
struct Permits {
    free: Mutex<usize>,
    released: Condvar,
}

impl Permits {
    fn new(count: usize) -> Self {
        Self {
            free: Mutex::new(count),
            released: Condvar::new(),
        }
    }

    fn acquire(&self) -> Permit<'_> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        while *free == 0 {
            free = self.released.wait(free).unwrap_or_else(|p| p.into_inner());
        }
        *free -= 1;
        Permit(self)
    }
}

struct Permit<'a>(&'a Permits);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.released.notify_one();
    }
}

/// Sets its flag when dropped, also while unwinding.
struct CancelOnDrop<'a>(&'a AtomicBool);

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What a worker tells the calling thread.
enum Report {
    Token {
        worker: usize,
        slot: usize,
        step: TokenStep,
    },
    Restart {
        slot: usize,
    },
    Done {
        slot: usize,
        result: Result<Trace>,
    },
}

impl LogprobModel for OpenAiModel {
    fn generate(
        &mut self,
        request: &GenerationRequest,
        trace: TraceSpec,
        observer: &mut dyn TokenObserver,
    ) -> deepconf_core::Result<Trace> {
        request.sampling.validate()?;
        let never = AtomicBool::new(false);
        let mut sink = ObserverSink {
            spec: trace,
            observer,
        };
        Ok(self.run_trace(request, trace, &mut sink, &never)?)
    }

    fn generate_batch(
        &mut self,
        request: &GenerationRequest,
        traces: &[TraceSpec],
        observer: &mut dyn TokenObserver,
    ) -> deepconf_core::Result<Vec<Trace>> {
        request.sampling.validate()?;
        let workers = self.config.max_concurrency.min(traces.len());
        if workers <= 1 {
            return traces
                .iter()
                .map(|&spec| self.generate(request, spec, observer))
                .collect();
        }
        let next_slot = AtomicUsize::new(0);
        let cancel = AtomicBool::new(false);
        let mut results: Vec<Option<Trace>> = vec![None; traces.len()];
        let mut first_error: Option<OpenAiError> = None;
        let (report_tx, report_rx) = channel::<Report>();
        let mut answers: Vec<SyncSender<TokenControl>> = Vec::with_capacity(workers);
        let mut inboxes: Vec<Receiver<TokenControl>> = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = sync_channel(1);
            answers.push(tx);
            inboxes.push(rx);
        }
        let this = &*self;
        std::thread::scope(|scope| {
            for (worker, inbox) in inboxes.into_iter().enumerate() {
                let report_tx = report_tx.clone();
                let (next_slot, cancel) = (&next_slot, &cancel);
                scope.spawn(move || {
                    loop {
                        let slot = next_slot.fetch_add(1, Ordering::Relaxed);
                        if slot >= traces.len() || cancel.load(Ordering::Relaxed) {
                            break;
                        }
                        let mut sink = ChannelSink {
                            worker,
                            slot,
                            reports: &report_tx,
                            inbox: &inbox,
                        };
                        let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
                            this.run_trace(request, traces[slot], &mut sink, cancel)
                        }))
                        .unwrap_or(Err(OpenAiError::WorkerPanicked {
                            trace: traces[slot].index,
                        }));
                        if report_tx.send(Report::Done { slot, result }).is_err() {
                            break;
                        }
                    }
                });
            }
            // Only workers hold senders now, so the loop ends when the last worker exits.
            drop(report_tx);
            // Owned here so that a panicking observer drops them before the scope joins the
            // workers: their sends and waits then fail and they stop instead of blocking forever.
            // The guard, dropped first, keeps them from starting another trace meanwhile.
            let (report_rx, answers) = (report_rx, answers);
            let _cancel_on_unwind = CancelOnDrop(&cancel);
            while let Ok(report) = report_rx.recv() {
                match report {
                    Report::Token { worker, slot, step } => {
                        let control = if cancel.load(Ordering::Relaxed) {
                            TokenControl::Stop
                        } else {
                            observer.on_token(&traces[slot], &step)
                        };
                        // A worker that has gone away needs no answer.
                        let _ = answers[worker].send(control);
                    }
                    Report::Restart { slot } => observer.on_restart(&traces[slot]),
                    Report::Done { slot, result } => match result {
                        Ok(trace) => results[slot] = Some(trace),
                        Err(error) => {
                            cancel.store(true, Ordering::Relaxed);
                            first_error.get_or_insert(error);
                        }
                    },
                }
            }
        });
        if let Some(error) = first_error {
            return Err(error.into());
        }
        let mut out = Vec::with_capacity(traces.len());
        for (slot, trace) in results.into_iter().enumerate() {
            out.push(trace.ok_or(OpenAiError::WorkerPanicked {
                trace: traces[slot].index,
            })?);
        }
        // A stream cut short never receives the usage chunk; the prompt is the same for all traces.
        if let Some(prompt_tokens) = out.iter().map(|t| t.prompt_tokens).find(|&n| n > 0) {
            for trace in out.iter_mut().filter(|t| t.prompt_tokens == 0) {
                trace.prompt_tokens = prompt_tokens;
            }
        }
        Ok(out)
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

/// A worker thread's sink: every token goes to the calling thread, whose observer answers.
struct ChannelSink<'a> {
    worker: usize,
    slot: usize,
    reports: &'a std::sync::mpsc::Sender<Report>,
    inbox: &'a Receiver<TokenControl>,
}

impl TraceSink for ChannelSink<'_> {
    fn token(&mut self, step: &TokenStep) -> TokenControl {
        let sent = self.reports.send(Report::Token {
            worker: self.worker,
            slot: self.slot,
            step: step.clone(),
        });
        match sent.ok().and_then(|()| self.inbox.recv().ok()) {
            Some(control) => control,
            None => TokenControl::Stop,
        }
    }

    fn restart(&mut self) {
        let _ = self.reports.send(Report::Restart { slot: self.slot });
    }
}
