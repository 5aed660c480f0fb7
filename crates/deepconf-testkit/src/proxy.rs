//! An HTTP proxy for tests in front of a real server: it records every request it receives and
//! injects the faults a busy serving engine shows (429 with `Retry-After`, 503, a connection cut
//! in the middle of a streamed answer, a slow first byte), chosen per request by a plan.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward it and pass the answer through.
    None,
    /// Answer `429 Too Many Requests` with `Retry-After: seconds`.
    TooManyRequests {
        /// The `Retry-After` value.
        retry_after_seconds: u64,
    },
    /// Answer `503 Service Unavailable`.
    Unavailable,
    /// Forward it, pass the first `after_bytes` bytes of the answer through, then cut the
    /// connection.
    CutAfter {
        /// Bytes of the answer (head included) passed through before the cut.
        after_bytes: usize,
    },
    /// Wait before forwarding.
    SlowFirstByte {
        /// The wait in milliseconds.
        millis: u64,
    },
}

/// One request as the proxy received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `POST`, `GET`, ...
    pub method: String,
    /// The path, e.g. `/v1/completions`.
    pub path: String,
    /// The body, as text.
    pub body: String,
    /// What the proxy did with it.
    pub fault: Fault,
}

type Plan = dyn Fn(usize) -> Fault + Send + Sync;

/// A running proxy; stops accepting when dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT/v1`.
    pub base_url: String,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    stop: Arc<AtomicBool>,
    address: String,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("base_url", &self.base_url)
            .finish()
    }
}

impl FaultProxy {
    /// A proxy to `upstream` (`host:port`) that treats request `n` (0-based, in arrival order)
    /// as `plan(n)` says.
    pub fn start(upstream: &str, plan: impl Fn(usize) -> Fault + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let address = listener.local_addr().expect("proxy address").to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let plan: Arc<Plan> = Arc::new(plan);
        let counter = Arc::new(AtomicUsize::new(0));
        {
            let (requests, stop, upstream) = (
                Arc::clone(&requests),
                Arc::clone(&stop),
                upstream.to_string(),
            );
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let (requests, plan, counter, upstream) = (
                        Arc::clone(&requests),
                        Arc::clone(&plan),
                        Arc::clone(&counter),
                        upstream.clone(),
                    );
                    std::thread::spawn(move || {
                        let _ = serve(client, &upstream, &*plan, &counter, &requests);
                    });
                }
            });
        }
        Self {
            base_url: format!("http://{address}/v1"),
            requests,
            stop,
            address,
        }
    }

    /// A proxy that injects no fault: it only records.
    pub fn recording(upstream: &str) -> Self {
        Self::start(upstream, |_| Fault::None)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(&self.address);
    }
}

/// Reads one request (head and `Content-Length` body) from the client.
fn read_request(client: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut data = Vec::new();
    let mut buffer = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = client.read(&mut buffer)?;
        if n == 0 {
            return Ok(None);
        }
        data.extend_from_slice(&buffer[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while data.len() < head_end + length {
        let n = client.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buffer[..n]);
    }
    Ok(Some((head, data[head_end..].to_vec())))
}

fn serve(
    mut client: TcpStream,
    upstream: &str,
    plan: &Plan,
    counter: &AtomicUsize,
    requests: &Mutex<Vec<RecordedRequest>>,
) -> std::io::Result<()> {
    let Some((head, body)) = read_request(&mut client)? else {
        return Ok(());
    };
    let mut request_line = head.lines().next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let path = request_line.next().unwrap_or_default().to_string();
    // Health probes and model lists pass untouched and do not count as requests of the plan.
    let is_generation = method == "POST";
    let fault = if is_generation {
        plan(counter.fetch_add(1, Ordering::Relaxed))
    } else {
        Fault::None
    };
    requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(RecordedRequest {
            method,
            path,
            body: String::from_utf8_lossy(&body).into_owned(),
            fault,
        });
    let reply = |client: &mut TcpStream, status: &str, extra: &str| {
        let body = format!(r#"{{"error":{{"message":"injected {status}"}}}}"#);
        let answer = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
            body.len()
        );
        client.write_all(answer.as_bytes())
    };
    match fault {
        Fault::TooManyRequests {
            retry_after_seconds,
        } => {
            return reply(
                &mut client,
                "429 Too Many Requests",
                &format!("Retry-After: {retry_after_seconds}\r\n"),
            );
        }
        Fault::Unavailable => return reply(&mut client, "503 Service Unavailable", ""),
        Fault::SlowFirstByte { millis } => std::thread::sleep(Duration::from_millis(millis)),
        Fault::None | Fault::CutAfter { .. } => {}
    }
    // One request per connection: the upstream closes after answering, and so does the proxy.
    let mut forwarded: String = head
        .split("\r\n")
        .filter(|line| {
            !line.is_empty()
                && !line
                    .split_once(':')
                    .is_some_and(|(name, _)| name.eq_ignore_ascii_case("connection"))
        })
        .map(|line| format!("{line}\r\n"))
        .collect();
    forwarded.push_str("Connection: close\r\n\r\n");
    let mut server = TcpStream::connect(upstream)?;
    server.write_all(forwarded.as_bytes())?;
    server.write_all(&body)?;
    let limit = match fault {
        Fault::CutAfter { after_bytes } => Some(after_bytes),
        _ => None,
    };
    let mut passed = 0usize;
    let mut buffer = [0u8; 4096];
    loop {
        let n = server.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        let n = limit.map_or(n, |limit| n.min(limit.saturating_sub(passed)));
        client.write_all(&buffer[..n])?;
        passed += n;
        if limit.is_some_and(|limit| passed >= limit) {
            // A cut connection: both sides see the stream end mid-answer.
            let _ = server.shutdown(Shutdown::Both);
            break;
        }
    }
    client.shutdown(Shutdown::Both)
}
