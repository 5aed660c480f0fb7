//! A synthetic OpenAI-compatible server: it streams precomputed tokens with their top-k
//! log-probabilities in the event shapes of vLLM or of llama.cpp's `llama-server`, at a set rate or
//! as fast as it can, so that a client's own cost per token can be measured without a model.
//!
//! Its answers are a function of the prompt, the request's `seed` and the choice index: choice `i`
//! of a request with seed `s` is the answer to a one-choice request with seed `s + i`, as vLLM
//! derives the seeds of a request's `n` choices. It serves `n`, or refuses it as llama.cpp's
//! server does, or ignores it ([`ChoicesMode`]); it can be made to fail on demand
//! ([`SyntheticServer::set_failing`]). It listens on a loopback port only, holds at most
//! [`SyntheticConfig::max_connections`] connections, closes idle ones, and stops when dropped or
//! after [`SyntheticConfig::lifetime`].

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::mix;

/// Whose event shapes the server imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// vLLM: `bytes` per token, completions logprobs as parallel lists, usage in a chunk of its own
    /// with `choices: []`, the finish reason on the last token's chunk.
    Vllm,
    /// llama.cpp's `llama-server`: an `id` per token and candidate, the chat shape of logprobs on
    /// the completions endpoint too, the finish reason in a chunk of its own.
    LlamaServer,
}

/// What the server does with a request for more than one choice (`n > 1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChoicesMode {
    /// Serves the `n` choices, each with its `index` (vLLM, SGLang).
    Serve,
    /// Answers this HTTP status with "Only one completion choice is allowed" (llama.cpp's server
    /// answers 500 or 400, depending on its version).
    Reject(u16),
    /// Answers one choice only, as a server that ignores the field does.
    Ignore,
}

/// Settings of a [`SyntheticServer`].
#[derive(Debug, Clone)]
pub struct SyntheticConfig {
    /// Event shapes.
    pub dialect: Dialect,
    /// Handling of `n > 1`.
    pub choices: ChoicesMode,
    /// Tokens per second of each stream; `None`: as fast as the socket takes them.
    pub tokens_per_second: Option<f64>,
    /// Every trace runs to `max_tokens` (finish reason `length`); otherwise its length is drawn
    /// between half of `max_tokens` and `max_tokens`, ending with `stop` when shorter.
    pub full_length: bool,
    /// Most connections held at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// A connection idle this long is closed.
    pub idle_timeout: Duration,
    /// The server stops accepting after this long.
    pub lifetime: Duration,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            dialect: Dialect::Vllm,
            choices: ChoicesMode::Serve,
            tokens_per_second: None,
            full_length: true,
            max_connections: 4096,
            idle_timeout: Duration::from_secs(30),
            lifetime: Duration::from_secs(3600),
        }
    }
}

/// One generation request as the server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticRequest {
    /// `/v1/chat/completions` or `/v1/completions`.
    pub path: String,
    /// The request's `n` (1 when absent).
    pub n: usize,
    /// The request's `seed`.
    pub seed: Option<u64>,
    /// Whether it asked for a stream.
    pub stream: bool,
    /// A hash of its prompt (messages or prompt text), equal for equal prompts.
    pub prompt_hash: u64,
    /// The HTTP status answered.
    pub status: u16,
}

/// Number of distinct precomputed token steps the traces draw from.
const POOL: usize = 2048;
/// Distinct token ids.
const VOCABULARY: u64 = 49_152;
/// Most candidates per token the server sends.
const MAX_TOP: usize = 20;

/// One precomputed token step: its text and its logprobs entry in each shape.
#[derive(Debug)]
struct StepFragment {
    /// JSON string literal of the token's text, quotes included.
    text_json: String,
    text: String,
    /// The chat shape's entry `{"token":..,"logprob":..,"top_logprobs":[..]}`.
    chat_entry: String,
    /// Completions (vLLM): the sampled token's logprob and the `{text: logprob}` map.
    logprob: String,
    top_map: String,
}

/// The fragments for one top-k size and dialect.
type Pool = Arc<Vec<StepFragment>>;

struct Shared {
    config: SyntheticConfig,
    stop: AtomicBool,
    failing: AtomicU16,
    connections: AtomicUsize,
    requests: Mutex<Vec<SyntheticRequest>>,
    pools: Mutex<HashMap<usize, Pool>>,
}

/// A running synthetic server; stops when dropped.
pub struct SyntheticServer {
    /// `http://127.0.0.1:PORT/v1`.
    pub base_url: String,
    /// `127.0.0.1:PORT`.
    pub address: String,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SyntheticServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyntheticServer")
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl SyntheticServer {
    /// Starts a server with `config` on a free loopback port.
    pub fn start(config: SyntheticConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let address = listener.local_addr().expect("local address").to_string();
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let shared = Arc::new(Shared {
            config,
            stop: AtomicBool::new(false),
            failing: AtomicU16::new(0),
            connections: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            pools: Mutex::new(HashMap::new()),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || accept_loop(&listener, &shared))
        };
        Self {
            base_url: format!("http://{address}/v1"),
            address,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// A vLLM-shaped server streaming as fast as it can, serving `n`.
    pub fn vllm() -> Self {
        Self::start(SyntheticConfig::default())
    }

    /// From now on answers every generation request with `status` (`Some(503)`), or serves again
    /// (`None`).
    pub fn set_failing(&self, status: Option<u16>) {
        self.shared
            .failing
            .store(status.unwrap_or(0), Ordering::Relaxed);
    }

    /// Every generation request received so far, in arrival order.
    pub fn requests(&self) -> Vec<SyntheticRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for SyntheticServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let started = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) && started.elapsed() < shared.config.lifetime {
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_nodelay(true);
                if shared.connections.fetch_add(1, Ordering::AcqRel)
                    >= shared.config.max_connections
                {
                    shared.connections.fetch_sub(1, Ordering::AcqRel);
                    let mut stream = stream;
                    let _ = write_error(&mut stream, 503, "too many connections", true);
                    continue;
                }
                let connection = Arc::clone(shared);
                let spawned = std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        let _ = serve_connection(stream, &connection);
                        connection.connections.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    shared.connections.fetch_sub(1, Ordering::AcqRel);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
}

/// Serves the requests of one keep-alive connection until it closes, idles or the server stops.
fn serve_connection(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(shared.config.idle_timeout))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = std::io::BufWriter::with_capacity(64 * 1024, stream);
    let mut line = String::new();
    while !shared.stop.load(Ordering::Relaxed) {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut length = 0usize;
        let mut close = false;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.trim().eq_ignore_ascii_case("close");
                }
            }
        }
        if length > 16 * 1024 * 1024 {
            return write_error(&mut writer, 413, "request body too large", true);
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        if method == "GET" {
            let answer = if path.ends_with("/models") {
                r#"{"object":"list","data":[{"id":"synthetic","object":"model"}]}"#
            } else {
                r#"{"status":"ok"}"#
            };
            write_json(&mut writer, 200, answer, close)?;
        } else {
            respond(&mut writer, shared, &path, &body, close)?;
        }
        writer.flush()?;
        if close {
            break;
        }
    }
    let _ = writer.get_ref().shutdown(Shutdown::Both);
    Ok(())
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn write_json(out: &mut impl Write, status: u16, body: &str, close: bool) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{body}",
        status_text(status),
        body.len(),
        if close { "close" } else { "keep-alive" }
    )
}

fn write_error(
    out: &mut impl Write,
    status: u16,
    message: &str,
    close: bool,
) -> std::io::Result<()> {
    let body = serde_json::json!({
        "error": { "code": status, "message": message, "type": "server_error" }
    })
    .to_string();
    write_json(out, status, &body, close)?;
    out.flush()
}

/// One chunk of a chunked body.
fn write_chunk(out: &mut impl Write, data: &str) -> std::io::Result<()> {
    write!(out, "{:x}\r\n{data}\r\n", data.len())
}

/// What a generation request asks for.
struct Ask {
    chat: bool,
    n: usize,
    seed: u64,
    seed_field: Option<u64>,
    stream: bool,
    usage: bool,
    max_tokens: usize,
    top: usize,
    prompt_hash: u64,
}

fn hash_text(hash: u64, text: &str) -> u64 {
    text.bytes().fold(hash, |h, b| mix(h ^ u64::from(b)))
}

fn read_ask(path: &str, body: &[u8]) -> Result<Ask, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let chat = path.ends_with("/chat/completions");
    if !chat && !path.ends_with("/completions") {
        return Err(format!("no route {path}"));
    }
    let number =
        |name: &str, default: u64| value.get(name).and_then(Value::as_u64).unwrap_or(default);
    let prompt_hash = if chat {
        let messages = value
            .get("messages")
            .and_then(Value::as_array)
            .ok_or("`messages` is missing")?;
        messages.iter().fold(17, |h, m| {
            let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
            let content = m.get("content").and_then(Value::as_str).unwrap_or_default();
            hash_text(hash_text(h, role), content)
        })
    } else {
        let prompt = value
            .get("prompt")
            .and_then(Value::as_str)
            .ok_or("`prompt` is missing or not a string")?;
        hash_text(17, prompt)
    };
    let top = if chat {
        if value.get("logprobs").and_then(Value::as_bool) == Some(true) {
            number("top_logprobs", 0)
        } else {
            0
        }
    } else {
        number("logprobs", 0)
    } as usize;
    if top > MAX_TOP {
        return Err(format!(
            "at most {MAX_TOP} top logprobs are served, {top} were asked"
        ));
    }
    Ok(Ask {
        chat,
        n: number("n", 1).max(1) as usize,
        seed: number("seed", 0),
        seed_field: value.get("seed").and_then(Value::as_u64),
        stream: value.get("stream").and_then(Value::as_bool) == Some(true),
        usage: value
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true),
        max_tokens: number("max_tokens", 16).clamp(1, 1 << 16) as usize,
        top,
        prompt_hash,
    })
}

fn respond(
    out: &mut impl Write,
    shared: &Shared,
    path: &str,
    body: &[u8],
    close: bool,
) -> std::io::Result<()> {
    let ask = match read_ask(path, body) {
        Ok(ask) => ask,
        Err(message) => {
            let status = if message.starts_with("no route") {
                404
            } else {
                400
            };
            return write_error(out, status, &message, close);
        }
    };
    let failing = shared.failing.load(Ordering::Relaxed);
    let mut status = if failing != 0 { failing } else { 200 };
    let mut choices = ask.n;
    if status == 200 && ask.n > 1 {
        match shared.config.choices {
            ChoicesMode::Serve => {}
            ChoicesMode::Reject(code) => status = code,
            ChoicesMode::Ignore => choices = 1,
        }
    }
    shared
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(SyntheticRequest {
            path: path.to_string(),
            n: ask.n,
            seed: ask.seed_field,
            stream: ask.stream,
            prompt_hash: ask.prompt_hash,
            status,
        });
    if status != 200 {
        let message = if failing != 0 {
            "the server is failing on purpose"
        } else {
            "Only one completion choice is allowed"
        };
        return write_error(out, status, message, close);
    }
    let pool = shared.pool(ask.top);
    let traces: Vec<Vec<usize>> = (0..choices)
        .map(|i| trace_steps(&shared.config, &ask, ask.seed.wrapping_add(i as u64)))
        .collect();
    let writer = Writer {
        dialect: shared.config.dialect,
        chat: ask.chat,
        top: ask.top,
        pool: &pool,
    };
    if ask.stream {
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nConnection: {}\r\n\r\n",
            if close { "close" } else { "keep-alive" }
        )?;
        writer.stream(out, &traces, &ask, shared.config.tokens_per_second)?;
        out.write_all(b"0\r\n\r\n")
    } else {
        let body = writer.whole(&traces, &ask);
        write_json(out, 200, &body, close)
    }
}

/// The pool indices of one choice's tokens: a function of the prompt and the choice's seed.
fn trace_steps(config: &SyntheticConfig, ask: &Ask, seed: u64) -> Vec<usize> {
    let stream = mix(ask.prompt_hash ^ mix(seed.wrapping_add(0x5EED)));
    let length = if config.full_length {
        ask.max_tokens
    } else {
        let half = ask.max_tokens.div_ceil(2);
        half + (stream % (ask.max_tokens - half + 1) as u64) as usize
    };
    (0..length)
        .map(|j| {
            (mix(stream ^ (j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) % POOL as u64) as usize
        })
        .collect()
}

impl Shared {
    fn pool(&self, top: usize) -> Pool {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            pools
                .entry(top)
                .or_insert_with(|| Arc::new(build_pool(self.config.dialect, top))),
        )
    }
}

/// A JSON float as Python prints a 32-bit value widened to 64 bits, as vLLM sends it.
fn float_json(value: f32) -> String {
    format!("{:?}", f64::from(value))
}

fn token_text(id: u64) -> String {
    const PIECES: [&str; 16] = [
        " the", " a", "ing", " to", " and", "ed", " of", ".", ",", " is", " I", " can", "'t",
        " help", "\n", " with",
    ];
    let piece = PIECES[(id % 16) as usize];
    if id.is_multiple_of(3) {
        piece.to_string()
    } else {
        format!("{piece}{}", id % 1000)
    }
}

fn bytes_json(text: &str) -> String {
    let list: Vec<String> = text.bytes().map(|b| b.to_string()).collect();
    format!("[{}]", list.join(","))
}

fn build_pool(dialect: Dialect, top: usize) -> Vec<StepFragment> {
    (0..POOL as u64)
        .map(|p| {
            let r = mix(p ^ 0x0D1A_1EC7);
            // Candidate ids distinct, the sampled token first; log-probabilities falling.
            let ids: Vec<u64> = (0..top.max(1) as u64)
                .map(|j| (r.wrapping_add(j.wrapping_mul(7919))) % VOCABULARY)
                .collect();
            let peak = -0.02 - (r % 1000) as f32 / 400.0;
            let gap = 0.3 + ((r >> 12) % 1000) as f32 / 500.0;
            let logprobs: Vec<f32> = (0..ids.len())
                .map(|j| peak - gap * j as f32 - 0.05 * (j * j) as f32)
                .collect();
            let text = token_text(ids[0]);
            let text_json = serde_json::to_string(&text).unwrap_or_default();
            let entry = |id: u64, lp: f32| {
                let t = token_text(id);
                let tj = serde_json::to_string(&t).unwrap_or_default();
                match dialect {
                    Dialect::Vllm => format!(
                        r#"{{"token":{tj},"logprob":{},"bytes":{}}}"#,
                        float_json(lp),
                        bytes_json(&t)
                    ),
                    Dialect::LlamaServer => format!(
                        r#"{{"id":{id},"token":{tj},"bytes":{},"logprob":{}}}"#,
                        bytes_json(&t),
                        float_json(lp)
                    ),
                }
            };
            let tops: Vec<String> = ids
                .iter()
                .zip(&logprobs)
                .take(top)
                .map(|(&id, &lp)| entry(id, lp))
                .collect();
            let head = entry(ids[0], logprobs[0]);
            let chat_entry = format!(
                r#"{},"top_logprobs":[{}]}}"#,
                &head[..head.len() - 1],
                tops.join(",")
            );
            // Candidates that decode alike collapse in the `{text: logprob}` map, as on vLLM.
            let mut seen = std::collections::HashSet::new();
            let top_map: Vec<String> = ids
                .iter()
                .zip(&logprobs)
                .take(top)
                .filter(|(id, _)| seen.insert(token_text(**id)))
                .map(|(&id, &lp)| {
                    format!(
                        "{}:{}",
                        serde_json::to_string(&token_text(id)).unwrap_or_default(),
                        float_json(lp)
                    )
                })
                .collect();
            StepFragment {
                text_json,
                text,
                chat_entry,
                logprob: float_json(logprobs[0]),
                top_map: format!("{{{}}}", top_map.join(",")),
            }
        })
        .collect()
}

/// Writes answers in one dialect.
struct Writer<'a> {
    dialect: Dialect,
    chat: bool,
    top: usize,
    pool: &'a [StepFragment],
}

const CREATED: u64 = 1_767_225_600;

impl Writer<'_> {
    fn object(&self, stream: bool) -> &'static str {
        match (self.chat, stream) {
            (true, true) => "chat.completion.chunk",
            (true, false) => "chat.completion",
            (false, _) => "text_completion",
        }
    }

    fn id(&self) -> &'static str {
        if self.chat {
            "chatcmpl-synthetic"
        } else {
            "cmpl-synthetic"
        }
    }

    fn finish(&self, ask: &Ask, length: usize) -> &'static str {
        if length >= ask.max_tokens {
            "length"
        } else {
            "stop"
        }
    }

    /// The logprobs object of the tokens `steps` (`text_offset` starting at `offset`).
    fn logprobs(&self, steps: &[usize], offset: usize) -> String {
        if self.top == 0 {
            return "null".into();
        }
        let fragments = steps.iter().map(|&s| &self.pool[s]);
        if self.chat || self.dialect == Dialect::LlamaServer {
            let entries: Vec<&str> = fragments.map(|f| f.chat_entry.as_str()).collect();
            return format!(r#"{{"content":[{}]}}"#, entries.join(","));
        }
        let mut offsets = Vec::with_capacity(steps.len());
        let mut at = offset;
        let (mut tokens, mut logprobs, mut maps) = (Vec::new(), Vec::new(), Vec::new());
        for f in fragments {
            offsets.push(at.to_string());
            at += f.text.len();
            tokens.push(f.text_json.as_str());
            logprobs.push(f.logprob.as_str());
            maps.push(f.top_map.as_str());
        }
        format!(
            r#"{{"text_offset":[{}],"token_logprobs":[{}],"tokens":[{}],"top_logprobs":[{}]}}"#,
            offsets.join(","),
            logprobs.join(","),
            tokens.join(","),
            maps.join(",")
        )
    }

    fn usage(&self, ask: &Ask, traces: &[Vec<usize>]) -> String {
        let completion: usize = traces.iter().map(Vec::len).sum();
        let prompt = 8 + (ask.prompt_hash % 24) as usize;
        format!(
            r#"{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}}"#,
            prompt + completion
        )
    }

    fn text(&self, steps: &[usize]) -> String {
        steps.iter().map(|&s| self.pool[s].text.as_str()).collect()
    }

    /// A whole (non-streamed) answer.
    fn whole(&self, traces: &[Vec<usize>], ask: &Ask) -> String {
        let choices: Vec<String> = traces
            .iter()
            .enumerate()
            .map(|(index, steps)| {
                let text = serde_json::to_string(&self.text(steps)).unwrap_or_default();
                let finish = self.finish(ask, steps.len());
                let logprobs = self.logprobs(steps, 0);
                if self.chat {
                    format!(
                        r#"{{"index":{index},"message":{{"role":"assistant","content":{text}}},"logprobs":{logprobs},"finish_reason":"{finish}"}}"#
                    )
                } else {
                    format!(
                        r#"{{"index":{index},"text":{text},"logprobs":{logprobs},"finish_reason":"{finish}"}}"#
                    )
                }
            })
            .collect();
        format!(
            r#"{{"id":"{}","object":"{}","created":{CREATED},"model":"synthetic","choices":[{}],"usage":{}}}"#,
            self.id(),
            self.object(false),
            choices.join(","),
            self.usage(ask, traces)
        )
    }

    fn event(&self, out: &mut impl Write, choice: &str) -> std::io::Result<()> {
        let data = match self.dialect {
            Dialect::Vllm => format!(
                r#"data: {{"id":"{}","object":"{}","created":{CREATED},"model":"synthetic","choices":[{choice}]}}

"#,
                self.id(),
                self.object(true)
            ),
            Dialect::LlamaServer => format!(
                r#"data: {{"choices":[{choice}],"created":{CREATED},"id":"{}","model":"synthetic","system_fingerprint":"b0-synthetic","object":"{}"}}

"#,
                self.id(),
                self.object(true)
            ),
        };
        write_chunk(out, &data)
    }

    /// The choice object of one streamed token (`step`), or of the end (`None`).
    fn stream_choice(
        &self,
        index: usize,
        step: Option<usize>,
        offset: usize,
        finish: Option<&str>,
    ) -> String {
        let finish = finish.map_or("null".to_string(), |f| format!("\"{f}\""));
        let (text, logprobs) = match step {
            Some(s) => (
                self.pool[s].text_json.clone(),
                self.logprobs(std::slice::from_ref(&s), offset),
            ),
            None => ("\"\"".to_string(), "null".to_string()),
        };
        match (self.chat, self.dialect) {
            (true, Dialect::Vllm) => format!(
                r#"{{"index":{index},"delta":{{"content":{text}}},"logprobs":{logprobs},"finish_reason":{finish}}}"#
            ),
            (true, Dialect::LlamaServer) if step.is_none() => {
                format!(r#"{{"finish_reason":{finish},"index":{index},"delta":{{}}}}"#)
            }
            (true, Dialect::LlamaServer) => format!(
                r#"{{"finish_reason":{finish},"index":{index},"delta":{{"content":{text}}},"logprobs":{logprobs}}}"#
            ),
            (false, Dialect::Vllm) => format!(
                r#"{{"index":{index},"text":{text},"logprobs":{logprobs},"finish_reason":{finish},"stop_reason":null}}"#
            ),
            (false, Dialect::LlamaServer) => format!(
                r#"{{"text":{text},"index":{index},"logprobs":{logprobs},"finish_reason":{finish}}}"#
            ),
        }
    }

    /// A streamed answer: the choices' tokens in turn, one event each.
    fn stream(
        &self,
        out: &mut impl Write,
        traces: &[Vec<usize>],
        ask: &Ask,
        rate: Option<f64>,
    ) -> std::io::Result<()> {
        let interval = rate
            .filter(|r| *r > 0.0)
            .map(|r| Duration::from_secs_f64(1.0 / r));
        let started = Instant::now();
        let longest = traces.iter().map(Vec::len).max().unwrap_or(0);
        let mut offsets = vec![0usize; traces.len()];
        if self.chat && self.dialect == Dialect::Vllm {
            for index in 0..traces.len() {
                self.event(
                    out,
                    &format!(
                        r#"{{"index":{index},"delta":{{"role":"assistant","content":""}},"logprobs":null,"finish_reason":null}}"#
                    ),
                )?;
            }
        }
        for j in 0..longest {
            if let Some(interval) = interval {
                let due = interval * j as u32;
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    out.flush()?;
                    std::thread::sleep(wait);
                }
            }
            for (index, steps) in traces.iter().enumerate() {
                let Some(&step) = steps.get(j) else { continue };
                let last = j + 1 == steps.len();
                // vLLM marks the last token's own chunk; llama-server sends the end apart.
                let finish =
                    (last && self.dialect == Dialect::Vllm).then(|| self.finish(ask, steps.len()));
                let choice = self.stream_choice(index, Some(step), offsets[index], finish);
                offsets[index] += self.pool[step].text.len();
                self.event(out, &choice)?;
                if last && self.dialect == Dialect::LlamaServer {
                    let end =
                        self.stream_choice(index, None, 0, Some(self.finish(ask, steps.len())));
                    self.event(out, &end)?;
                }
            }
            if interval.is_none() && j % 8 == 7 {
                out.flush()?;
            }
        }
        if ask.usage {
            let usage = self.usage(ask, traces);
            let data = match self.dialect {
                Dialect::Vllm => format!(
                    r#"data: {{"id":"{}","object":"{}","created":{CREATED},"model":"synthetic","choices":[],"usage":{usage}}}

"#,
                    self.id(),
                    self.object(true)
                ),
                Dialect::LlamaServer => format!(
                    r#"data: {{"choices":[],"created":{CREATED},"id":"{}","model":"synthetic","system_fingerprint":"b0-synthetic","object":"{}","usage":{usage}}}

"#,
                    self.id(),
                    self.object(true)
                ),
            };
            write_chunk(out, &data)?;
        }
        write_chunk(out, "data: [DONE]\n\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(address: &str, path: &str, body: &Value) -> (u16, String) {
        let mut stream = TcpStream::connect(address).unwrap();
        let body = body.to_string();
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let status = answer[9..12].parse().unwrap();
        (status, answer)
    }

    fn chat(n: usize, seed: u64, stream: bool) -> Value {
        serde_json::json!({
            "model": "synthetic", "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 5, "logprobs": true, "top_logprobs": 3, "n": n, "seed": seed,
            "stream": stream,
        })
    }

    fn whole(server: &SyntheticServer, n: usize, seed: u64) -> Value {
        let (status, answer) = post(
            &server.address,
            "/v1/chat/completions",
            &chat(n, seed, false),
        );
        assert_eq!(status, 200, "{answer}");
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap()
    }

    #[test]
    fn choice_i_is_the_answer_to_seed_plus_i() {
        let server = SyntheticServer::vllm();
        let both = whole(&server, 2, 40);
        let second = whole(&server, 1, 41);
        assert_eq!(both["choices"][1]["index"], 1);
        assert_eq!(
            both["choices"][1]["logprobs"],
            second["choices"][0]["logprobs"]
        );
        assert_ne!(
            both["choices"][0]["logprobs"],
            both["choices"][1]["logprobs"]
        );
        let tokens = both["choices"][0]["logprobs"]["content"]
            .as_array()
            .unwrap();
        assert_eq!(tokens.len(), 5);
        assert_eq!(tokens[0]["top_logprobs"].as_array().unwrap().len(), 3);
        assert_eq!(both["usage"]["completion_tokens"], 10);
    }

    #[test]
    fn rejects_or_ignores_n_as_configured() {
        let server = SyntheticServer::start(SyntheticConfig {
            choices: ChoicesMode::Reject(500),
            ..SyntheticConfig::default()
        });
        let (status, answer) = post(&server.address, "/v1/chat/completions", &chat(3, 1, false));
        assert_eq!(status, 500);
        assert!(answer.contains("Only one completion choice"), "{answer}");
        let ignoring = SyntheticServer::start(SyntheticConfig {
            choices: ChoicesMode::Ignore,
            ..SyntheticConfig::default()
        });
        assert_eq!(
            whole(&ignoring, 3, 1)["choices"].as_array().unwrap().len(),
            1
        );
    }

    #[test]
    fn streams_chunked_events_ending_in_done() {
        let server = SyntheticServer::start(SyntheticConfig {
            dialect: Dialect::LlamaServer,
            ..SyntheticConfig::default()
        });
        let (status, answer) = post(&server.address, "/v1/chat/completions", &chat(1, 7, true));
        assert_eq!(status, 200);
        assert!(answer.contains("Transfer-Encoding: chunked"));
        assert_eq!(answer.matches("\"top_logprobs\":[").count(), 5);
        assert!(answer.contains(r#""finish_reason":"length""#));
        assert!(answer.contains("data: [DONE]"));
        assert_eq!(server.requests().len(), 1);
        assert!(server.requests()[0].stream);
    }
}
