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

mod events;
mod request;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use events::{Pool, Writer, build_pool};
use request::{read_ask, trace_steps};

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

#[cfg(test)]
mod tests {
    use serde_json::Value;

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
