//! Fixtures: one real llama-cpp-python server per test binary, and a tiny scripted HTTP server for
//! the client's error paths.

pub mod fake;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use deepconf_openai::OpenAiModel;

/// File name of the embedded default model in `<cache>/models/`.
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The alias the server gives the model.
pub const MODEL_ALIAS: &str = "smollm2";
/// How long the server may take to load the model and answer.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(180);

const INSTALL_HINT: &str = "run `cargo xtask llama-cpp` (or `cargo xtask test`), which builds llama.cpp \
    for this CPU and installs llama-cpp-python[server] 0.3.36 on that build; set DEEPCONF_PYTHON to use \
    another interpreter";

/// A running llama-cpp-python OpenAI-compatible server on a loopback port.
pub struct LlamaServer {
    pub base_url: String,
    pub log_path: PathBuf,
    _child: Child,
    // The server exits when this pipe closes, i.e. when the test process ends for any reason
    // (statics are never dropped, so a Drop-based kill would not run).
    _lifeline: ChildStdin,
}

/// The interpreter that runs the server.
pub fn python() -> String {
    std::env::var("DEEPCONF_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The embedded model file; panics with the fetch command when it is missing.
pub fn model_path() -> PathBuf {
    let path = deepconf_core::cache_dir().join("models").join(MODEL_FILE);
    assert!(
        path.is_file(),
        "the test model {} is missing: run `cargo xtask fetch-model` (or set DEEPCONF_CACHE)",
        path.display()
    );
    path
}

fn free_loopback_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    listener.local_addr().expect("local address").port()
}

/// Runs the server module in-process with a thread that exits the interpreter when stdin closes.
const LAUNCHER: &str = "import os, runpy, sys, threading\n\
def _lifeline():\n    sys.stdin.read()\n    os._exit(0)\n\
threading.Thread(target=_lifeline, daemon=True).start()\n\
sys.argv = ['llama_cpp.server'] + sys.argv[1:]\n\
runpy.run_module('llama_cpp.server', run_name='__main__', alter_sys=True)\n";

impl LlamaServer {
    fn start() -> Self {
        let python = python();
        let probe = Command::new(&python)
            .args(["-c", "import llama_cpp.server, uvicorn"])
            .output();
        match probe {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!(
                "llama-cpp-python's server is not importable by `{python}` ({}): {INSTALL_HINT}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!("cannot run `{python}` ({e}): {INSTALL_HINT}"),
        }
        let model = model_path();
        let port = free_loopback_port();
        let log_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let log_path = log_dir.join(format!("llama-server-{port}.log"));
        let log = std::fs::File::create(&log_path).expect("create the server log");
        let mut child = Command::new(&python)
            .arg("-c")
            .arg(LAUNCHER)
            .arg("--model")
            .arg(&model)
            .args(["--model_alias", MODEL_ALIAS])
            .args(["--logits_all", "true"])
            .args(["--host", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .args(["--n_ctx", "2048"])
            .args(["--n_threads", "2"])
            // Otherwise every new request cuts the stream in progress.
            .args(["--interrupt_requests", "false"])
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{python} -m llama_cpp.server`: {e}"));
        let lifeline = child.stdin.take().expect("piped stdin");
        let base_url = format!("http://127.0.0.1:{port}/v1");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let probe = OpenAiModel::builder(&base_url, MODEL_ALIAS)
            .no_api_key()
            .connect_timeout(Duration::from_secs(2))
            .read_timeout(Duration::from_secs(30))
            .build()
            .expect("probe client");
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "llama-cpp-python's server exited with {status} before answering; log {}:\n{}",
                    log_path.display(),
                    tail(&log_path, 40)
                );
            }
            if probe.list_models().is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "llama-cpp-python's server did not answer on {base_url} within {STARTUP_TIMEOUT:?}; log {}:\n{}",
                    log_path.display(),
                    tail(&log_path, 40)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Self {
            base_url,
            log_path,
            _child: child,
            _lifeline: lifeline,
        }
    }

    /// A client of this server with test-sized timeouts.
    pub fn model(&self) -> deepconf_openai::OpenAiBuilder {
        OpenAiModel::builder(&self.base_url, MODEL_ALIAS)
            .no_api_key()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
    }

    /// How often the server has logged a client disconnecting mid-stream.
    pub fn disconnects(&self) -> usize {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_default()
            .matches("Disconnected from client")
            .count()
    }
}

/// The shared server, started on first use.
pub fn server() -> &'static LlamaServer {
    static SERVER: OnceLock<LlamaServer> = OnceLock::new();
    SERVER.get_or_init(LlamaServer::start)
}

/// Serialises the tests that count server-side disconnects, so each sees only its own.
pub fn disconnect_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits (bounded) until `condition` holds.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    condition()
}

fn tail(path: &Path, lines: usize) -> String {
    let Ok(file) = std::fs::File::open(path) else {
        return String::new();
    };
    let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
