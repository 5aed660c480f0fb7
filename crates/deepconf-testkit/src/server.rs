//! A real concurrent OpenAI-compatible server for tests: llama.cpp's C++ `llama-server` (parallel
//! slots, continuous batching) serving the embedded model on a loopback port.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable naming the directory of llama.cpp's binaries (`cargo xtask test` sets it).
pub const LLAMA_CPP_BIN_ENV: &str = "DEEPCONF_LLAMA_CPP_BIN";

/// The alias the server gives the model.
pub const SERVED_MODEL: &str = "smollm2";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(180);

/// The directory holding `llama-server`: `$DEEPCONF_LLAMA_CPP_BIN`, else where `cargo xtask
/// llama-cpp` builds it (`<cache>/llama.cpp/0.3.36/build/bin`).
pub fn llama_cpp_bin() -> PathBuf {
    std::env::var_os(LLAMA_CPP_BIN_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            deepconf_core::cache_dir()
                .join("llama.cpp")
                .join("0.3.36")
                .join("build")
                .join("bin")
        })
}

/// The embedded default model; panics with the fetch command when it is missing.
pub fn embedded_model() -> PathBuf {
    let path = deepconf_core::cache_dir()
        .join("models")
        .join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "the embedded model {} is missing: run `cargo xtask fetch-model`",
        path.display()
    );
    path
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
        .port()
}

/// A running `llama-server`; killed when dropped.
#[derive(Debug)]
pub struct LlamaServer {
    /// `http://127.0.0.1:PORT/v1`.
    pub base_url: String,
    /// `127.0.0.1:PORT`.
    pub address: String,
    /// Where its output goes.
    pub log: PathBuf,
    child: Child,
}

impl LlamaServer {
    /// Starts `llama-server` with `slots` parallel slots (continuous batching) on the embedded
    /// model and waits until `/health` answers. Panics, naming the command that builds it, when the
    /// binary is missing: tests that need a server never skip.
    pub fn start(slots: usize) -> Self {
        let bin = llama_cpp_bin().join("llama-server");
        assert!(
            bin.is_file(),
            "llama.cpp's server is missing at {}: run `cargo xtask llama-cpp` (or `cargo xtask \
             test`, which builds it), or set {LLAMA_CPP_BIN_ENV}",
            bin.display()
        );
        let port = free_port();
        let log = std::env::temp_dir().join(format!("deepconf-llama-server-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("create the server log");
        // Each slot gets `context / slots` tokens of context.
        let context = (2048 * slots).to_string();
        let child = Command::new(&bin)
            .arg("-m")
            .arg(embedded_model())
            .args(["-a", SERVED_MODEL, "--host", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .args(["-np", &slots.to_string(), "-c", &context, "-t", "2"])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone the log handle"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let server = Self {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            address: format!("127.0.0.1:{port}"),
            log,
            child,
        };
        server.wait_until_healthy();
        server
    }

    fn wait_until_healthy(&self) {
        let started = Instant::now();
        while started.elapsed() < STARTUP_TIMEOUT {
            if let Ok(mut stream) = TcpStream::connect(&self.address) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let request = format!(
                    "GET /health HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                    self.address
                );
                let mut answer = String::new();
                if stream.write_all(request.as_bytes()).is_ok()
                    && stream.read_to_string(&mut answer).is_ok()
                    && answer.starts_with("HTTP/1.1 200")
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "llama-server did not become healthy on {} within {STARTUP_TIMEOUT:?}; log {}:\n{}",
            self.address,
            self.log.display(),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
