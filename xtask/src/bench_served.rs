//! `cargo xtask bench served --synthetic`: what the OpenAI client costs per generated token when
//! the server costs nothing, at 64, 256 and 1024 requests in flight, written to the "Served runs:
//! client cost per token" section of docs/benchmarks.md.
//!
//! The test kit's synthetic server (vLLM's event shapes, top-20 log-probabilities, as fast as the
//! socket takes them) runs in a process of its own, and every measured row in a fresh client
//! process, so that the client's CPU time (`utime + stime` of its process) and peak resident memory
//! (`VmHWM`) are its own. A client runs the experiment engine as the examples do (fixed policy,
//! 8 traces of 64 tokens per instance, the pattern classifier, records written): streamed, one
//! request per trace; not streamed, one request per instance (`n = 8`); not streamed, one request
//! per trace. Then llama.cpp's `llama-server` (16 slots) is asked whether it serves `n` and the
//! two non-streamed ways are timed against it (`--no-llama-server` skips this).
//!
//! Options: `--in-flight 64,256,1024`, `--instances N` (default: 4 waves of the in-flight
//! instances, at least 256), `--no-write`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use deepconf_core::RunConfig;
use deepconf_core::policy::PolicyConfig;
use deepconf_eval::{Experiment, ExperimentConfig, ProgressMode};
use deepconf_openai::OpenAiModel;
use deepconf_refusal::PatternClassifier;
use deepconf_testkit::synthetic::{SyntheticConfig, SyntheticServer};

use crate::bench::{load_average, machine};
use crate::bench_engine::{synthetic_instances, write_or_print};

const SECTION: &str = "## Served runs: client cost per token";
const TRACES: usize = 8;
const TOKENS: usize = 64;

/// Clock ticks per second of `/proc/*/stat` times (`getconf CLK_TCK`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user + system) of a process so far, all its threads included.
fn cpu_seconds(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields counted here follow its closing parenthesis.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("a /proc stat line")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| -> Result<f64> { Ok(fields.get(i).context("stat field")?.parse()?) };
    Ok((ticks(11)? + ticks(12)?) / TICKS_PER_SECOND)
}

/// How a client asks for a batch's traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Streamed, one request per trace (what online policies need).
    Stream,
    /// Not streamed, one request for the batch (`n`).
    Choices,
    /// Not streamed, one request per trace.
    PerTrace,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Stream => "stream",
            Mode::Choices => "choices",
            Mode::PerTrace => "per-trace",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "stream" => Mode::Stream,
            "choices" => Mode::Choices,
            "per-trace" => Mode::PerTrace,
            other => bail!("unknown mode `{other}` (stream, choices, per-trace)"),
        })
    }

    fn describe(self) -> &'static str {
        match self {
            Mode::Stream => "streamed, one request per trace",
            Mode::Choices => "not streamed, one request per instance (`n` = 8)",
            Mode::PerTrace => "not streamed, one request per trace",
        }
    }
}

/// One client run, as its process measured it.
#[derive(Debug, Clone, Copy)]
struct ClientRun {
    tokens: u64,
    seconds: f64,
    cpu_seconds: f64,
    peak_mib: f64,
    requests_in_flight: usize,
}

/// `xtask bench-served-client URL IN_FLIGHT INSTANCES MODE MODEL`: one measured client run in
/// this process; prints `tokens seconds cpu_seconds peak_mib`.
pub(crate) fn client_child(args: &[String]) -> Result<()> {
    let [url, in_flight, instances, mode, model_name] = args else {
        bail!("bench-served-client URL IN_FLIGHT INSTANCES MODE MODEL");
    };
    let in_flight: usize = in_flight.parse()?;
    let instances: usize = instances.parse()?;
    let mode = Mode::parse(mode)?;
    let mut run = RunConfig {
        policy: PolicyConfig::fixed(TRACES),
        ..RunConfig::default()
    };
    run.sampling.max_tokens = TOKENS;
    run.sampling.top_logprobs = 20;
    run.confidence.top_k = 20;
    let dir = std::env::temp_dir().join(format!("deepconf-bench-client-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut model = OpenAiModel::builder(url, model_name.as_str())
        .no_api_key()
        .max_concurrency(in_flight)
        .read_timeout(Duration::from_secs(600))
        .stream(mode == Mode::Stream)
        .choices_per_request(mode == Mode::Choices)
        .build()?;
    let experiment = Experiment::new(
        ExperimentConfig::new("served-client", run),
        synthetic_instances(instances),
    )
    .progress(ProgressMode::Silent)
    .concurrency((in_flight / TRACES).max(1));
    let pid = std::process::id().to_string();
    let cpu_before = cpu_seconds(&pid)?;
    let started = Instant::now();
    let report = experiment.run(&mut model, &mut PatternClassifier::default(), &dir)?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(&pid)? - cpu_before;
    let _ = std::fs::remove_dir_all(&dir);
    if !report.failed.is_empty() {
        bail!("{} instances failed", report.failed.len());
    }
    println!(
        "{} {seconds:.4} {cpu:.3} {:.1}",
        report.tokens_generated,
        crate::bench::process_status_kb("VmHWM:").map_or(f64::NAN, |kb| kb as f64 / 1024.0)
    );
    Ok(())
}

fn measure_client(
    url: &str,
    in_flight: usize,
    instances: usize,
    mode: Mode,
    model: &str,
) -> Result<ClientRun> {
    let out = Command::new(std::env::current_exe()?)
        .args(["bench-served-client", url])
        .arg(in_flight.to_string())
        .arg(instances.to_string())
        .args([mode.name(), model])
        .stderr(Stdio::inherit())
        .output()
        .context("running the client benchmark child")?;
    if !out.status.success() {
        bail!("the client benchmark child failed");
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let f: Vec<&str> = line.split_whitespace().collect();
    let field = |i: usize| -> Result<f64> {
        f.get(i)
            .with_context(|| format!("field {i} of `{line}`"))?
            .parse()
            .with_context(|| format!("field {i} of `{line}`"))
    };
    Ok(ClientRun {
        tokens: field(0)? as u64,
        seconds: field(1)?,
        cpu_seconds: field(2)?,
        peak_mib: field(3)?,
        requests_in_flight: in_flight,
    })
}

/// `xtask bench-synthetic-server`: serves until its standard input closes; prints its base URL.
pub(crate) fn server_child(_args: &[String]) -> Result<()> {
    let server = SyntheticServer::start(SyntheticConfig::default());
    println!("{}", server.base_url);
    std::io::stdout().flush()?;
    let mut sink = String::new();
    // Returns at end of input: the parent closed the pipe or exited.
    while std::io::stdin().read_line(&mut sink)? > 0 {
        sink.clear();
    }
    drop(server);
    Ok(())
}

/// The synthetic server's process; ends when dropped.
struct ServerProcess {
    child: Child,
    base_url: String,
}

impl ServerProcess {
    fn start() -> Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("bench-synthetic-server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the synthetic server")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("server stdout")?).read_line(&mut line)?;
        let base_url = line.trim().to_string();
        if !base_url.starts_with("http://") {
            let _ = child.kill();
            bail!("the synthetic server printed `{line}`");
        }
        Ok(Self { child, base_url })
    }

    fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds(&self.child.id().to_string())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// What llama-server answers to a request for two choices: status and message (or choices).
fn probe_llama_server_n(address: &str) -> String {
    let body = serde_json::json!({
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 4, "n": 2, "seed": 1,
        "logprobs": true, "top_logprobs": 2,
    });
    let url = format!("http://{address}/v1/chat/completions");
    match ureq::post(&url).send_json(body) {
        Ok(response) => {
            let value: serde_json::Value = response.into_json().unwrap_or_default();
            format!(
                "HTTP 200 with {} choice(s)",
                value["choices"].as_array().map_or(0, Vec::len)
            )
        }
        Err(ureq::Error::Status(status, response)) => {
            let text = response.into_string().unwrap_or_default();
            let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let message = value["error"]["message"]
                .as_str()
                .unwrap_or(&text)
                .to_string();
            format!("HTTP {status}, \"{message}\"")
        }
        Err(other) => format!("no answer: {other}"),
    }
}

fn row(label: &str, mode: Mode, run: &ClientRun, server_cpu: Option<f64>) -> String {
    let per_token = |seconds: f64| seconds / run.tokens as f64 * 1e6;
    format!(
        "| {label} | {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.1} | {} | {:.1} |\n",
        mode.describe(),
        run.requests_in_flight,
        run.tokens,
        run.seconds,
        run.tokens as f64 / run.seconds,
        run.cpu_seconds,
        per_token(run.cpu_seconds),
        server_cpu.map_or("-".to_string(), |s| format!("{:.1}", per_token(s))),
        run.peak_mib
    )
}

const HEADER: &str = "| server | client | requests in flight | tokens | seconds | tokens/s | client CPU s | client CPU us/token | server CPU us/token | client peak RSS (MiB) |\n\
|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";

/// `cargo xtask bench served --synthetic`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let in_flight: Vec<usize> = crate::bench::option(args, "--in-flight")
        .unwrap_or_else(|| "64,256,1024".into())
        .split(',')
        .map(|v| {
            v.trim()
                .parse()
                .context("--in-flight takes numbers, e.g. 64,256")
        })
        .collect::<Result<_>>()?;
    let load_at_start = load_average();
    let server = ServerProcess::start()?;
    let mut rows = String::new();
    let mut stream_rows = Vec::new();
    // Warm up the server's pools and the page cache of the client binary.
    measure_client(&server.base_url, 64, 16, Mode::Stream, "synthetic")?;
    for &requests in &in_flight {
        let instances =
            crate::bench::number(args, "--instances", (4 * requests / TRACES).max(256))?;
        for mode in [Mode::Stream, Mode::Choices, Mode::PerTrace] {
            eprintln!(
                "synthetic server: {} with {requests} in flight ...",
                mode.name()
            );
            let server_before = server.cpu_seconds()?;
            let run = measure_client(&server.base_url, requests, instances, mode, "synthetic")?;
            let server_cpu = server.cpu_seconds()? - server_before;
            if mode == Mode::Stream {
                stream_rows.push(run);
            }
            rows.push_str(&row(
                "synthetic (vLLM shapes)",
                mode,
                &run,
                Some(server_cpu),
            ));
        }
    }
    drop(server);
    let mut llama = String::new();
    if !args.iter().any(|a| a == "--no-llama-server") {
        crate::assets::ensure_llama_cpp_tools()?;
        crate::assets::fetch_model()?;
        let server = deepconf_testkit::server::LlamaServer::start(16);
        let answer = probe_llama_server_n(&server.address);
        // Warm-up, then each way once on 8 instances x 8 traces.
        measure_client(&server.base_url, 16, 2, Mode::PerTrace, "smollm2")?;
        for mode in [Mode::Choices, Mode::PerTrace] {
            eprintln!("llama-server: {} ...", mode.name());
            let run = measure_client(&server.base_url, 16, 8, mode, "smollm2")?;
            rows.push_str(&row("llama-server -np 16", mode, &run, None));
        }
        let serves_n = answer.contains("with 2 choice");
        llama = format!(
            "\n\nllama-server and `n`: asked for two choices, llama.cpp's server (the llama-cpp-python \
0.3.36 sources) answered {answer}. {}",
            if serves_n {
                "It serves `n`, so the one-request-per-instance row asked for 8 choices at once."
            } else {
                "The client then asked for each trace on its own (with the seeds the choices \
would have had) and remembered, for this server, that it does not serve `n`."
            }
        );
    }
    let best = stream_rows
        .iter()
        .map(|r| r.cpu_seconds / r.tokens as f64 * 1e6)
        .fold(f64::INFINITY, f64::min);
    let text = format!(
        "{SECTION}\n\nCommand: `cargo xtask bench served --synthetic` (release build). Machine: {}; load \
average at the start {load_at_start}. Server: the test kit's synthetic OpenAI-compatible server \
(vLLM's event shapes, top-20 log-probabilities with their `bytes`, precomputed tokens streamed as \
fast as the socket takes them) in a process of its own, so its CPU time is not the client's; \
both share the machine's cores. Client: each row a fresh process running the experiment engine \
as the examples do (fixed policy, 8 traces of 64 tokens per instance, top-20 log-probabilities \
read, token confidences, the pattern classifier, records written), `in flight / 8` instances at \
once; CPU time is the client process's `utime + stime` over the run, memory its `VmHWM`. \
Goal: <= 20 us of client CPU per token with top-20 log-probabilities (earlier measurement of the \
`harmbench` example: 35.7 us). Best streamed row here: {best:.1} us/token.\n\n{HEADER}{rows}{llama}\n",
        machine()
    );
    write_or_print(SECTION, &text, args)
}
