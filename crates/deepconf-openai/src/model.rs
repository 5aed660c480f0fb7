//! [`OpenAiModel`]: the [`LogprobModel`] over HTTP, with streaming, retries and bounded concurrency.

use std::io::{BufRead, BufReader, Read};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deepconf_core::pool::{self, JobContext};
use deepconf_core::{
    Capabilities, GenerationRequest, LogprobModel, Prompt, StopReason, TokenControl, TokenObserver,
    TokenStep, Trace, TraceSpec,
};
use async_lock::Semaphore;
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
/// the calling thread through a channel and reads on without waiting for the observer's answer (a
/// round trip per token would cost two thread wake-ups). On [`TokenControl::Stop`] the calling
/// thread flags the trace; the worker sees the flag at its next token and drops the connection,
/// which closes the stream, and the trace ends with [`StopReason::Terminated`] holding exactly the
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

/// One API root serving the model, with its health.
#[derive(Debug)]
struct Replica {
    base_url: String,
    /// Mixed into a prompt's affinity to rank the replicas for that prompt.
    hash: u64,
    health: Mutex<Health>,
    /// The server answered a request for several choices (`n`) with an error or fewer choices.
    refuses_choices: AtomicBool,
}

#[derive(Debug, Default)]
struct Health {
    /// Transient failures since the last success.
    failures: u32,
    /// Not chosen before this time unless every replica rests.
    resting_until: Option<Instant>,
}

/// The replicas: a prompt's requests go to the same one while it is healthy (so that its prompt
/// stays in that server's prefix cache), and a replica that fails rests for a while, its work
/// going to the prompt's next replica.
#[derive(Debug)]
struct Replicas {
    list: Vec<Replica>,
    first_rest: Duration,
    longest_rest: Duration,
}

/// SplitMix64 finaliser, for affinity ranks.
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash_text(hash: u64, text: &str) -> u64 {
    // FNV-1a over the bytes, mixed once at the end: cheap, stable across runs and platforms.
    let fnv = text.bytes().fold(hash ^ 0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    });
    mix64(fnv)
}

/// The affinity key of a request: a hash of its prompt, equal for equal prompts.
fn prompt_affinity(request: &GenerationRequest) -> u64 {
    match &request.prompt {
        Prompt::Text(text) => hash_text(1, text),
        Prompt::Chat(messages) => messages.iter().fold(2, |h, m| {
            hash_text(hash_text(h, m.role.as_str()), &m.content)
        }),
    }
}

impl Replicas {
    fn new(config: &OpenAiConfig) -> Self {
        let list = std::iter::once(&config.base_url)
            .chain(&config.replicas)
            .map(|url| Replica {
                base_url: url.clone(),
                hash: hash_text(3, url),
                health: Mutex::new(Health::default()),
                refuses_choices: AtomicBool::new(false),
            })
            .collect();
        Self {
            list,
            first_rest: config.initial_backoff.max(Duration::from_millis(100)),
            longest_rest: config.max_backoff.max(Duration::from_secs(1)) * 4,
        }
    }

    /// The replica for a request of this affinity: the highest ranked (rendezvous hashing, so
    /// that a resting replica moves only its own prompts) that is not resting; when all rest, the
    /// one back soonest.
    fn pick(&self, affinity: u64) -> usize {
        if self.list.len() == 1 {
            return 0;
        }
        let now = Instant::now();
        let mut ready: Option<(u64, usize)> = None;
        let mut soonest: Option<(Instant, usize)> = None;
        for (index, replica) in self.list.iter().enumerate() {
            let rank = mix64(affinity ^ replica.hash);
            let until = replica
                .health
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .resting_until;
            match until {
                Some(until) if until > now => {
                    if soonest.is_none_or(|(best, _)| until < best) {
                        soonest = Some((until, index));
                    }
                }
                _ => {
                    if ready.is_none_or(|(best, _)| rank > best) {
                        ready = Some((rank, index));
                    }
                }
            }
        }
        ready
            .map(|(_, i)| i)
            .or(soonest.map(|(_, i)| i))
            .unwrap_or(0)
    }

    /// A transient failure: the replica rests, twice as long as last time, up to a limit.
    fn failed(&self, index: usize) {
        let mut health = self.list[index]
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Requests sent before the rest began fail too; they do not lengthen it.
        if health.resting_until.is_some_and(|until| until > now) {
            return;
        }
        health.failures = health.failures.saturating_add(1);
        let rest = self
            .first_rest
            .saturating_mul(1 << (health.failures - 1).min(16))
            .min(self.longest_rest);
        health.resting_until = Some(now + rest);
    }

    fn succeeded(&self, index: usize) {
        let mut health = self.list[index]
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        health.failures = 0;
        health.resting_until = None;
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

    /// Runs `attempt` on the prompt's replica until it succeeds, retrying transient failures with
    /// backoff (a failing replica rests, so a retry goes to the prompt's next replica when there
    /// is one); `cancel` aborts between attempts. `attempt` gets the replica's API root.
    fn with_retries<T>(
        &self,
        affinity: u64,
        cancel: &AtomicBool,
        mut attempt: impl FnMut(usize, &str) -> std::result::Result<T, (OpenAiError, Option<Duration>)>,
    ) -> Result<T> {
        let mut attempts: u32 = 0;
        let mut backoff = self.config.initial_backoff;
        loop {
            attempts += 1;
            let outcome = {
                let _permit = self.permits.acquire_blocking();
                let replica = self.replicas.pick(affinity);
                let outcome = attempt(replica, &self.replicas.list[replica].base_url);
                match &outcome {
                    Ok(_) => self.replicas.succeeded(replica),
                    Err((error, _)) if error.is_transient() => self.replicas.failed(replica),
                    Err(_) => {}
                }
                outcome
            };
            let (error, retry_after) = match outcome {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            if !error.is_transient()
                || attempts > self.config.max_retries
                || cancel.load(Ordering::Relaxed)
            {
                return Err(if attempts > 1 {
                    OpenAiError::GaveUp {
                        attempts,
                        source: Box::new(error),
                    }
                } else {
                    error
                });
            }
            std::thread::sleep(retry_wait(backoff, retry_after));
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    /// Generates one trace with wire seed `seed`. A failure after some tokens reached `sink` voids
    /// them (`sink.restart()`) and the trace starts again from its first token, so a trace never
    /// mixes tokens of two attempts.
    fn run_trace(
        &self,
        request: &GenerationRequest,
        spec: TraceSpec,
        seed: u64,
        sink: &mut dyn TraceSink,
        cancel: &AtomicBool,
    ) -> Result<(Trace, Vec<usize>)> {
        let (route, mut body) = wire::request_body(&self.config, request, spec);
        body["seed"] = seed.into();
        let body = body.to_string();
        let mut delivered = 0usize;
        self.with_retries(prompt_affinity(request), cancel, |_, base_url| {
            if delivered > 0 {
                sink.restart();
                delivered = 0;
            }
            let url = format!("{base_url}{}", route.path());
            let mut counting = |step: &TokenStep| {
                delivered += 1;
                sink.token(step)
            };
            self.attempt_trace(&url, route, &body, request, spec, &mut counting)
        })
    }

    /// Sends one request; on failure also returns the server's `Retry-After`.
    fn send(
        &self,
        url: &str,
        body: &str,
        stream: bool,
    ) -> std::result::Result<ureq::Response, (OpenAiError, Option<Duration>)> {
        let mut http = self.agent.post(url).set("Content-Type", "application/json");
        if stream {
            http = http.set("Accept", "text/event-stream");
        }
        if let Some(key) = &self.config.api_key {
            http = http.set("Authorization", &format!("Bearer {key}"));
        }
        match http.send_string(body) {
            Ok(response) => Ok(response),
            Err(ureq::Error::Status(status, response)) => {
                let retry_after = response.header("Retry-After").and_then(parse_retry_after);
                Err((self.status_error(url, status, response), retry_after))
            }
            Err(other) => Err((
                self.request_error(url, other, self.config.connect_timeout),
                None,
            )),
        }
    }

    fn assembler(&self, request: &GenerationRequest, spec: TraceSpec) -> TraceAssembler {
        let mut assembler = TraceAssembler::new(
            spec,
            request.sampling.top_logprobs,
            self.config.strict_top_logprobs,
        );
        assembler.candidate_texts = self.config.candidate_texts;
        assembler
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
    ) -> std::result::Result<(Trace, Vec<usize>), (OpenAiError, Option<Duration>)> {
        let response = self.send(url, body, self.config.stream)?;
        let mut assembler = self.assembler(request, spec);
        let reader = response.into_reader();
        let result = if self.config.stream {
            self.read_stream(url, route, reader, &mut assembler, sink)
        } else {
            self.read_whole(url, route, reader)
                .and_then(|(mut pieces, prompt_tokens)| {
                    assembler.prompt_tokens = prompt_tokens;
                    match pieces.iter().position(|(index, _)| *index == 0) {
                        Some(at) => assembler
                            .push(url, pieces.swap_remove(at).1, sink)
                            .map(|_| ()),
                        None => Ok(()),
                    }
                })
        };
        result.map_err(|e| (e, None))?;
        assembler.finish_with_cuts(url).map_err(|e| (e, None))
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
        let mut lines = BufReader::with_capacity(32 * 1024, reader);
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
                    let control =
                        self.stream_event(url, route, &data, read == 0, assembler, sink)?;
                    data.clear();
                    if control == TokenControl::Stop {
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

    /// One event's payload: its tokens go to `sink`. `Stop` ends the stream: `[DONE]`, or the
    /// sink's stop.
    fn stream_event(
        &self,
        url: &str,
        route: Route,
        payload: &str,
        at_end: bool,
        assembler: &mut TraceAssembler,
        sink: &mut dyn FnMut(&TokenStep) -> TokenControl,
    ) -> Result<TokenControl> {
        if payload.trim() == "[DONE]" {
            return Ok(TokenControl::Stop);
        }
        // The common shape is read without a JSON tree; anything else goes the slow way below,
        // which names what is wrong.
        if let Some((pieces, prompt_tokens)) =
            wire::parse_choices_fast(payload, route, self.config.candidate_texts)
        {
            if prompt_tokens.is_some() {
                assembler.prompt_tokens = prompt_tokens;
            }
            for (index, piece) in pieces {
                if index == 0 && assembler.push(url, piece, sink)? == TokenControl::Stop {
                    return Ok(TokenControl::Stop);
                }
            }
            return Ok(TokenControl::Continue);
        }
        let value: Value = match serde_json::from_str(payload) {
            Ok(value) => value,
            // The body ended inside an event: the connection was cut mid-stream.
            // The trace then lacks its finish reason, which is retried.
            Err(e) if at_end && e.is_eof() => return Ok(TokenControl::Stop),
            Err(e) => {
                return Err(OpenAiError::MalformedEvent {
                    url: url.to_string(),
                    line: excerpt(payload, MAX_QUOTED),
                    reason: format!("not JSON: {e}"),
                });
            }
        };
        if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
            return Err(OpenAiError::StreamError {
                url: url.to_string(),
                message: wire::error_message(&serde_json::json!({ "error": error }).to_string()),
            });
        }
        let piece =
            wire::parse_piece(&value, route).map_err(|reason| OpenAiError::MalformedEvent {
                url: url.to_string(),
                line: excerpt(payload, MAX_QUOTED),
                reason,
            })?;
        assembler.push(url, piece, sink)
    }

    /// Reads a whole (non-streamed) answer: the pieces of its choices by index, and its prompt
    /// tokens.
    fn read_whole(
        &self,
        url: &str,
        route: Route,
        mut reader: Box<dyn Read + Send + Sync + 'static>,
    ) -> Result<wire::Choices> {
        let mut body = String::new();
        reader
            .read_to_string(&mut body)
            .map_err(|e| self.io_error(url, &e))?;
        if let Some(read) = wire::parse_choices_fast(&body, route, self.config.candidate_texts) {
            return Ok(read);
        }
        let malformed = |reason: String| OpenAiError::MalformedResponse {
            url: url.to_string(),
            body: excerpt(&body, MAX_QUOTED),
            reason,
        };
        let value: Value =
            serde_json::from_str(&body).map_err(|e| malformed(format!("not JSON: {e}")))?;
        let pieces = wire::parse_choices(&value, route).map_err(malformed)?;
        let prompt_tokens = pieces.iter().find_map(|(_, p)| p.prompt_tokens);
        Ok((pieces, prompt_tokens))
    }

    /// One request for the choices `traces` (`n`, not streamed), the first with wire seed `seed`
    /// and choice `j` with `seed + j`, as vLLM seeds them. Returns the traces of the choices the
    /// server sent (`None` where it sent none), or `None` when it refused `n`. A replica that
    /// refuses `n` or sends fewer choices is remembered as one that does not serve it.
    fn request_choices(
        &self,
        request: &GenerationRequest,
        traces: &[TraceSpec],
        seed: u64,
        affinity: u64,
    ) -> Result<Option<Vec<Option<Trace>>>> {
        let (route, mut body) = wire::request_body(&self.config, request, traces[0]);
        body["seed"] = seed.into();
        if traces.len() > 1 {
            body["n"] = traces.len().into();
        }
        let body = body.to_string();
        let never = AtomicBool::new(false);
        self.with_retries(affinity, &never, |replica, base_url| {
            let url = format!("{base_url}{}", route.path());
            let refuses = || {
                self.replicas.list[replica]
                    .refuses_choices
                    .store(true, Ordering::Relaxed);
            };
            let response = match self.send(&url, &body, false) {
                Ok(response) => response,
                Err((error, _)) if traces.len() > 1 && refuses_choices(&error) => {
                    refuses();
                    return Ok(None);
                }
                Err(failure) => return Err(failure),
            };
            let (pieces, prompt_tokens) = self
                .read_whole(&url, route, response.into_reader())
                .map_err(|e| (e, None))?;
            let mut out: Vec<Option<Trace>> = vec![None; traces.len()];
            for (index, piece) in pieces {
                let Some(slot) = out.get_mut(index).filter(|slot| slot.is_none()) else {
                    continue;
                };
                let mut assembler = self.assembler(request, traces[index]);
                assembler.prompt_tokens = prompt_tokens;
                assembler
                    .push(&url, piece, &mut |_| TokenControl::Continue)
                    .map_err(|e| (e, None))?;
                *slot = Some(assembler.finish(&url).map_err(|e| (e, None))?);
            }
            if out.iter().any(Option::is_none) {
                refuses();
            }
            Ok(Some(out))
        })
    }

    /// The traces of a batch when the server need not stream: one request for all of them (`n`)
    /// where the prompt's replica serves it, else one request per trace with the same seeds, so
    /// that the traces do not depend on which way they were asked for. The observer sees each
    /// trace's tokens once it has arrived whole, and a stop cuts the trace there.
    fn generate_choices(
        &self,
        request: &GenerationRequest,
        traces: &[TraceSpec],
        observer: &mut dyn TokenObserver,
    ) -> Result<Vec<Trace>> {
        let affinity = prompt_affinity(request);
        // 30 bits, so that `seed + j` stays within the 31 bits every server takes.
        let seed = wire::wire_seed(traces[0]) & 0x3fff_ffff;
        let seeds: Vec<u64> = (0..traces.len()).map(|j| seed + j as u64).collect();
        let replica = self.replicas.pick(affinity);
        let mut results: Vec<Option<Trace>> = vec![None; traces.len()];
        if !self.replicas.list[replica]
            .refuses_choices
            .load(Ordering::Relaxed)
            && let Some(served) = self.request_choices(request, traces, seed, affinity)?
        {
            for (slot, trace) in results.iter_mut().zip(served) {
                *slot = trace.map(|trace| replay(trace, observer));
            }
        }
        let missing: Vec<usize> = (0..traces.len())
            .filter(|&i| results[i].is_none())
            .collect();
        if !missing.is_empty() {
            let specs: Vec<TraceSpec> = missing.iter().map(|&i| traces[i]).collect();
            let missing_seeds: Vec<u64> = missing.iter().map(|&i| seeds[i]).collect();
            let more = self.batch_per_trace(request, &specs, &missing_seeds, observer)?;
            for (i, trace) in missing.into_iter().zip(more) {
                results[i] = Some(trace);
            }
        }
        let mut out: Vec<Trace> = results.into_iter().flatten().collect();
        fill_prompt_tokens(&mut out);
        Ok(out)
    }

    /// Whether a batch is asked for as choices of one request.
    fn uses_choices(&self) -> bool {
        self.config.choices_per_request && !self.config.stream
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
    /// Per token, the length of the text if the trace were cut after it.
    cuts: Vec<usize>,
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
            cuts: Vec::new(),
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
        let first = self.steps.len();
        let mut kept_len = 0usize;
        for (i, mut raw) in piece.tokens.into_iter().enumerate() {
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
                std::mem::take(&mut raw.text)
            };
            kept_len += text.len();
            let step = wire::token_step(raw, text, self.top_k, self.candidate_texts);
            let control = sink(&step);
            self.steps.push(step);
            self.cuts.push(self.text.len() + kept_len);
            if control == TokenControl::Stop {
                // Cut inside a piece: its tokens' own texts, up to this one.
                for step in &self.steps[first..] {
                    self.text.push_str(&step.text);
                }
                self.terminated = true;
                return Ok(TokenControl::Stop);
            }
        }
        self.text.push_str(&piece.content);
        Ok(TokenControl::Continue)
    }

    /// The trace, and per token the length of its text if cut after that token.
    fn finish_with_cuts(mut self, url: &str) -> Result<(Trace, Vec<usize>)> {
        let cuts = std::mem::take(&mut self.cuts);
        Ok((self.finish(url)?, cuts))
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

/// What a worker tells the calling thread about its trace while it runs.
enum Report {
    /// One more token of the current attempt.
    Token(TokenStep),
    /// The attempt failed and the trace starts again.
    Restart,
}

impl OpenAiModel {
    /// The traces of a batch, one request each, trace `i` with wire seed `seeds[i]`, on worker
    /// threads; every token goes through the calling thread's observer.
    fn batch_per_trace(
        &self,
        request: &GenerationRequest,
        traces: &[TraceSpec],
        seeds: &[u64],
        observer: &mut dyn TokenObserver,
    ) -> Result<Vec<Trace>> {
        let workers = self.config.max_concurrency.min(traces.len());
        if workers <= 1 {
            let never = AtomicBool::new(false);
            return traces
                .iter()
                .zip(seeds)
                .map(|(&spec, &seed)| {
                    let mut sink = ObserverSink {
                        spec,
                        observer: &mut *observer,
                    };
                    self.run_trace(request, spec, seed, &mut sink, &never)
                        .map(|(trace, _)| trace)
                })
                .collect();
        }
        let mut results: Vec<Option<Trace>> = vec![None; traces.len()];
        let mut first_error: Option<OpenAiError> = None;
        // Per trace: the observer's stop, as `(attempt + 1) << 32 | tokens kept`, 0 for none.
        let stops: Vec<AtomicU64> = (0..traces.len()).map(|_| AtomicU64::new(0)).collect();
        // Per trace, on this thread: tokens the observer saw in the current attempt, whether it
        // stopped the trace, and the attempt.
        let mut seen: Vec<(usize, bool, u32)> = vec![(0, false, 0); traces.len()];
        // The pool hands out the traces from this thread, a new one for each that ended, so that
        // no trace starts once it has stopped reading (an error, or a panicking observer); its
        // stop flag then also cuts the traces in flight.
        pool::run::<(), Report, Result<(Trace, Vec<usize>)>>(
            vec![(); workers],
            traces.len(),
            |_, job| {
                let slot = job.index();
                let mut sink = ChannelSink {
                    job,
                    stop: &stops[slot],
                    attempt: 0,
                };
                std::panic::catch_unwind(AssertUnwindSafe(|| {
                    self.run_trace(
                        request,
                        traces[slot],
                        seeds[slot],
                        &mut sink,
                        job.stop_flag(),
                    )
                }))
                .unwrap_or(Err(OpenAiError::WorkerPanicked {
                    trace: traces[slot].index,
                }))
            },
            |event| match event {
                pool::Event::Message {
                    index: slot,
                    message: Report::Token(step),
                } => {
                    let (count, stopped, attempt) = &mut seen[slot];
                    if *stopped || first_error.is_some() {
                        return pool::Flow::Continue;
                    }
                    *count += 1;
                    if observer.on_token(&traces[slot], &step) == TokenControl::Stop {
                        *stopped = true;
                        let flag = (u64::from(*attempt) + 1) << 32 | *count as u64;
                        stops[slot].store(flag, Ordering::Release);
                    }
                    pool::Flow::Continue
                }
                pool::Event::Message {
                    index: slot,
                    message: Report::Restart,
                } => {
                    let (count, stopped, attempt) = &mut seen[slot];
                    (*count, *stopped) = (0, false);
                    *attempt += 1;
                    observer.on_restart(&traces[slot]);
                    pool::Flow::Continue
                }
                pool::Event::Done {
                    index: slot,
                    result,
                } => match result {
                    Ok((trace, cuts)) => {
                        let (count, stopped, _) = seen[slot];
                        results[slot] = Some(if stopped {
                            cut(trace, count, &cuts)
                        } else {
                            trace
                        });
                        pool::Flow::Continue
                    }
                    Err(error) => {
                        first_error.get_or_insert(error);
                        pool::Flow::Stop
                    }
                },
            },
        );
        if let Some(error) = first_error {
            return Err(error);
        }
        let mut out = Vec::with_capacity(traces.len());
        for (slot, trace) in results.into_iter().enumerate() {
            out.push(trace.ok_or(OpenAiError::WorkerPanicked {
                trace: traces[slot].index,
            })?);
        }
        fill_prompt_tokens(&mut out);
        Ok(out)
    }
}

/// A stream cut short never receives the usage chunk; the prompt is the same for all traces.
fn fill_prompt_tokens(traces: &mut [Trace]) {
    if let Some(prompt_tokens) = traces.iter().map(|t| t.prompt_tokens).find(|&n| n > 0) {
        for trace in traces.iter_mut().filter(|t| t.prompt_tokens == 0) {
            trace.prompt_tokens = prompt_tokens;
        }
    }
}

/// Shows a whole trace's tokens to the observer; a stop cuts the trace after that token.
fn replay(mut trace: Trace, observer: &mut dyn TokenObserver) -> Trace {
    let spec = trace.spec;
    let stop_at = trace
        .steps
        .iter()
        .position(|step| observer.on_token(&spec, step) == TokenControl::Stop);
    if let Some(at) = stop_at
        && at + 1 < trace.steps.len()
    {
        trace.steps.truncate(at + 1);
        trace.text = trace.steps.iter().map(|s| s.text.as_str()).collect();
        trace.stop_reason = StopReason::Terminated;
    } else if stop_at.is_some() {
        trace.stop_reason = StopReason::Terminated;
    }
    trace
}

/// Whether a failed request for several choices says that the server does not serve `n`:
/// a client error (vLLM and SGLang check their fields with 400 or 422), or a message about
/// choices (llama.cpp's server answers "Only one completion choice is allowed", with 500 in some
/// versions).
fn refuses_choices(error: &OpenAiError) -> bool {
    match error {
        OpenAiError::Status {
            status, message, ..
        } => matches!(status, 400 | 422 | 501) || message.to_lowercase().contains("choice"),
        _ => false,
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

/// A worker thread's sink: every token goes to the calling thread, whose observer may flag a stop.
struct ChannelSink<'a, 'p> {
    job: &'a JobContext<'p, Report, Result<(Trace, Vec<usize>)>>,
    /// The observer's stop for this trace (see `batch_per_trace`).
    stop: &'a AtomicU64,
    /// Attempts restarted so far.
    attempt: u32,
}

impl TraceSink for ChannelSink<'_, '_> {
    fn token(&mut self, step: &TokenStep) -> TokenControl {
        let sent = self.job.send(Report::Token(step.clone()));
        let flag = self.stop.load(Ordering::Acquire);
        let stopped = flag != 0 && (flag >> 32) == u64::from(self.attempt) + 1;
        if !sent || stopped || self.job.stopped() {
            TokenControl::Stop
        } else {
            TokenControl::Continue
        }
    }

    fn restart(&mut self) {
        self.attempt += 1;
        let _ = self.job.send(Report::Restart);
    }
}

/// The trace as the observer stopped it: its first `keep` tokens, the text it had then, ended
/// [`StopReason::Terminated`]. The worker may have read a few tokens more before it saw the stop.
fn cut(mut trace: Trace, keep: usize, cuts: &[usize]) -> Trace {
    if keep < trace.steps.len() {
        trace.steps.truncate(keep);
        if let Some(&length) = keep.checked_sub(1).and_then(|last| cuts.get(last)) {
            trace.text.truncate(length);
        }
    }
    trace.stop_reason = StopReason::Terminated;
    trace
}
