//! A scripted HTTP server on a loopback port: each accepted connection gets the next canned answer.
//! It tests the client's handling of broken or failing servers, not a model.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// One canned answer.
pub enum Answer {
    /// Status line (e.g. `"200 OK"`), extra headers and a body, then close.
    Http {
        status: &'static str,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Read the request, then say nothing for this long.
    Silence(Duration),
}

impl Answer {
    /// A `200 OK` server-sent event stream made of `events` (each a `data:` payload).
    pub fn stream(events: &[&str]) -> Self {
        let body = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        Answer::Http {
            status: "200 OK",
            headers: vec![("Content-Type", "text/event-stream".into())],
            body,
        }
    }

    /// A JSON answer with `status`.
    pub fn json(status: &'static str, body: &str) -> Self {
        Answer::Http {
            status,
            headers: vec![("Content-Type", "application/json".into())],
            body: body.to_string(),
        }
    }
}

/// The server; `requests()` counts the requests it has read.
pub struct FakeServer {
    pub base_url: String,
    requests: Arc<AtomicUsize>,
}

impl FakeServer {
    /// Serves `answers` to successive connections, then stops accepting.
    pub fn start(answers: Vec<Answer>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let base_url = format!("http://{}/v1", listener.local_addr().expect("address"));
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        std::thread::spawn(move || {
            for answer in answers {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                serve(stream, answer, &counter);
            }
        });
        Self { base_url, requests }
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn serve(mut stream: TcpStream, answer: Answer, counter: &AtomicUsize) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            content_length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; content_length];
    let _ = reader.read_exact(&mut body);
    counter.fetch_add(1, Ordering::SeqCst);
    match answer {
        Answer::Http {
            status,
            headers,
            body,
        } => {
            let mut head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
                body.len()
            );
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
            let _ = stream.flush();
        }
        Answer::Silence(duration) => std::thread::sleep(duration),
    }
}
