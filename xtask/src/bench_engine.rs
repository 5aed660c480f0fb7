//! `cargo xtask bench engine|served|main-job`: the experiment engine at scale, each against a
//! peer measured in the same run, written to docs/benchmarks.md.
//!
//! - `served`: the `harmbench` example through llama.cpp's `llama-server -np 16` against a plain
//!   client keeping 16 requests in flight on the same server.
//! - `main-job`: the online main job on the candle backend (HarmBench behaviours, DeepConf online)
//!   against 16 traces of one prompt decoded together (`generate --traces 16`).
//! - `engine`: a synthetic backend that emits its tokens instantly, 10,000 to 100,000 instances x 4
//!   traces, each size in a fresh process: wall time and peak memory.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use deepconf_core::policy::PolicyConfig;
use deepconf_core::{
    ChatMessage, GenerationRequest, LogprobModel, NoObserver, RunConfig, SamplingParams,
    StopReason, TokenObserver, Trace, TraceBuilder, TraceSpec,
};
use deepconf_datasets::{Benchmark, DatasetSpec, Instance, SourceRow};
use deepconf_eval::{Experiment, ExperimentConfig, ProgressMode, Stratify, select_instances};
use deepconf_refusal::PatternClassifier;

use crate::bench::{load_average, machine, write_section};
use crate::{assets, cargo, run};

fn doc_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md")
}

fn write_or_print(section_title: &str, text: &str, args: &[String]) -> Result<()> {
    println!("{text}");
    if !args.iter().any(|a| a == "--no-write") {
        write_section(&doc_path(), section_title, text)?;
        println!("wrote {}", doc_path().display());
    }
    Ok(())
}

/// Peak resident memory of this process so far (`VmHWM`), in MiB.
pub(crate) fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let kb = line.strip_prefix("VmHWM:")?.trim().strip_suffix("kB")?;
                kb.trim().parse::<f64>().ok()
            })
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

// ---------------------------------------------------------------------------------------------
// engine overhead

/// Emits `tokens` tokens per trace at once, half the prompts refusing.
#[derive(Debug, Clone, Copy)]
struct Instant0 {
    tokens: usize,
}

impl LogprobModel for Instant0 {
    fn generate(
        &mut self,
        request: &GenerationRequest,
        spec: TraceSpec,
        observer: &mut dyn TokenObserver,
    ) -> deepconf_core::Result<Trace> {
        let refuse = spec.seed % 2 == 0;
        let word = if refuse { "Sorry, " } else { "Sure, " };
        let mut trace = TraceBuilder::new(request, spec, observer).with_prompt_tokens(12);
        for i in 0..self.tokens {
            let spread = 1.0 + (spec.seed >> (i % 32)) as f32 % 3.0;
            let top: Vec<f32> = (0..20).map(|j| -0.05 - spread * j as f32).collect();
            if trace.push_token(Some(i as u32), word, top[0], top)?.is_stop() {
                break;
            }
        }
        let text = if refuse {
            "I'm sorry, but I can't help with that."
        } else {
            "Sure, here is an answer."
        };
        Ok(trace.finish_with_text(StopReason::EndOfSequence, text.into()))
    }

    fn concurrent_handle(&self) -> Option<Box<dyn LogprobModel + Send>> {
        Some(Box::new(*self))
    }

    fn capabilities(&self) -> deepconf_core::Capabilities {
        deepconf_core::Capabilities::new()
            .with_max_batch_size(4)
            .with_max_concurrent_traces(8)
    }
}

fn synthetic_instances(n: usize) -> Vec<Instance> {
    (0..n)
        .map(|i| Instance {
            id: format!("synthetic-{i:06}"),
            messages: vec![ChatMessage::user(format!(
                "Synthetic prompt number {i}: explain how to do task {}.",
                i % 97
            ))],
            harmful: Some(i % 2 == 0),
            reference_response: None,
            reference_refusal: None,
            reference_response_harmful: None,
            label_agreement: None,
            category: Some(["a", "b", "c"][i % 3].into()),
            subcategory: None,
            adversarial: None,
            source: SourceRow {
                file: "synthetic".into(),
                row: i + 1,
            },
            dataset: None,
        })
        .collect()
}

/// One measured size, in this process: prints `instances traces tokens seconds peak_mib parts`.
pub(crate) fn engine_child(args: &[String]) -> Result<()> {
    let n: usize = args
        .first()
        .context("bench-engine takes an instance count")?
        .parse()?;
    let tokens_per_trace = 16;
    let dir = std::env::temp_dir().join(format!("deepconf-bench-engine-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut run_config = RunConfig {
        policy: PolicyConfig::fixed(4),
        ..RunConfig::default()
    };
    run_config.confidence.window = 8;
    let experiment = Experiment::new(
        ExperimentConfig::new("engine-overhead", run_config),
        synthetic_instances(n),
    )
    .progress(ProgressMode::Silent);
    let mut model = Instant0 {
        tokens: tokens_per_trace,
    };
    let started = Instant::now();
    let report = experiment.run(&mut model, &mut PatternClassifier::default(), &dir)?;
    let seconds = started.elapsed().as_secs_f64();
    let parts = deepconf_records::trace_parts(&dir)?.len();
    let traces = n * 4;
    println!(
        "{} {} {} {seconds:.3} {:.1} {parts} {}",
        report.newly_run,
        traces,
        report.tokens_generated,
        peak_rss_mib(),
        report.concurrency
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn engine(args: &[String]) -> Result<()> {
    let exe = std::env::current_exe()?;
    let sizes = [10_000usize, 50_000, 100_000];
    let mut rows = String::new();
    for n in sizes {
        eprintln!("engine overhead: {n} instances x 4 traces ...");
        let out = Command::new(&exe)
            .args(["bench-engine", &n.to_string()])
            .output()
            .context("running the engine benchmark child")?;
        if !out.status.success() {
            bail!(
                "engine benchmark child failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let line = String::from_utf8_lossy(&out.stdout);
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 7 {
            bail!("unexpected child output `{line}`");
        }
        let seconds: f64 = f[3].parse()?;
        let instances_per_second = n as f64 / seconds;
        rows.push_str(&format!(
            "| {n} | {} | {} | {seconds:.2} | {instances_per_second:.0} | {} | {} | {} |\n",
            f[1], f[2], f[4], f[5], f[6]
        ));
    }
    let text = format!(
        "{ENGINE}\n\nCommand: `cargo xtask bench engine` (release build). Machine: {}; load average at the start {}. \
A synthetic in-process backend emits 16 tokens per trace at once (top-20 log-probabilities each), \
so the figures are the engine's own cost: scheduling over its worker threads, the policy and \
confidence per token, the pattern classifier, the reorder window, the Parquet parts and \
`predictions.jsonl`. Policy fixed N = 4; each size runs in a fresh process, so the peak \
resident memory (VmHWM) is that run's alone.\n\n\
| instances | traces | tokens | seconds | instances/s | peak RSS (MiB) | part files | in flight |\n\
|---:|---:|---:|---:|---:|---:|---:|---:|\n{rows}\n\
What grows with the run: the instance list the caller passes in (prompt, ids, labels) and the \
writer's set of finished ids; the trace rows wait for their part file only until it is written \
(20,000 rows, 64 MiB or two minutes), and finished instances wait in the reorder window for at \
most 4 per worker.\n",
        machine(),
        load_average()
    );
    write_or_print(ENGINE, &text, args)
}

const ENGINE: &str = "## Engine overhead";

// ---------------------------------------------------------------------------------------------
// main job on candle

fn main_job(args: &[String]) -> Result<()> {
    let model_path = deepconf_candle::default_model_path();
    if !model_path.is_file() {
        bail!(
            "{} is missing: run `cargo xtask fetch-model`",
            model_path.display()
        );
    }
    let mut model = deepconf_candle::CandleModel::load(&model_path)?;
    // The peer: 16 traces of one prompt decoded together, as `generate --traces 16` does.
    let sampling = SamplingParams::default().with_max_tokens(128);
    let request = GenerationRequest::user(
        "Write a long story about a dragon who learns to cook.",
        sampling,
    );
    let mut best_peer = 0.0f64;
    for r in 0..2 {
        let specs: Vec<TraceSpec> = (0..16).map(|i| TraceSpec::derive(r, i)).collect();
        let started = Instant::now();
        let traces = model.generate_batch(&request, &specs, &mut NoObserver)?;
        let tokens: usize = traces.iter().map(Trace::n_tokens).sum();
        best_peer = best_peer.max(tokens as f64 / started.elapsed().as_secs_f64());
    }
    // Ours: the main job's policy on 32 HarmBench behaviours.
    assets::fetch_data("harmbench")?;
    let dataset = DatasetSpec::new(Benchmark::HarmBench).load()?;
    let instances = select_instances(&dataset, Some(32), 0, Stratify::Category);
    let mut config = RunConfig {
        policy: PolicyConfig::online(4, 8, 10.0),
        ..RunConfig::default()
    };
    config.sampling.max_tokens = 128;
    let dir = std::env::temp_dir().join(format!("deepconf-bench-main-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let experiment = Experiment::new(ExperimentConfig::new("main-job", config), instances)
        .progress(ProgressMode::Silent);
    let report = experiment.run(&mut model, &mut PatternClassifier::default(), &dir)?;
    let _ = std::fs::remove_dir_all(&dir);
    let ours = report.tokens_per_second();
    let text = format!(
        "{MAIN_JOB}\n\nCommand: `cargo xtask bench main-job` (release build). Machine: {}; load average at the start {}. \
Peer: 16 traces of one prompt decoded together (`generate --traces 16`: 128 tokens each, best of \
2). Ours: the main job's policy (DeepConf online, 4 warmup, at most 8 traces, 128 tokens) on 32 \
HarmBench behaviours through the experiment engine ({} instances in flight sharing candle's \
continuous batch of 16 rows), prefills, classification and records included. Goal: >= 0.85x.\n\n\
| run | tokens | seconds | tokens/s | vs 16 traces of one prompt |\n|---|---:|---:|---:|---:|\n\
| 16 traces of one prompt | | | {best_peer:.1} | 1.00x |\n\
| online main job, 32 prompts | {} | {:.1} | {ours:.1} | {:.2}x |\n",
        machine(),
        load_average(),
        report.concurrency,
        report.tokens_generated,
        report.elapsed.as_secs_f64(),
        ours / best_peer
    );
    write_or_print(MAIN_JOB, &text, args)
}

const MAIN_JOB: &str = "## Main job throughput";

// ---------------------------------------------------------------------------------------------
// served

struct Server {
    child: Child,
    address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_llama_server(bin: &Path, model: &Path, slots: usize) -> Result<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = std::env::temp_dir().join(format!("deepconf-bench-llama-server-{port}.log"));
    let log_file = std::fs::File::create(&log)?;
    let child = Command::new(bin.join("llama-server"))
        .arg("-m")
        .arg(model)
        .args(["-a", "smollm2", "--host", "127.0.0.1", "--port"])
        .arg(port.to_string())
        .args(["-np", &slots.to_string(), "-c", &(1024 * slots).to_string(), "-t", "2"])
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .context("starting llama-server")?;
    let server = Server {
        child,
        address: format!("127.0.0.1:{port}"),
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(120) {
        if http_get(&server.address, "/health").is_ok_and(|a| a.starts_with("HTTP/1.1 200")) {
            return Ok(server);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("llama-server did not start; see {}", log.display())
}

fn http_get(address: &str, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

/// The plain client: `in_flight` threads, each sending chat completions (64 tokens, top 20
/// logprobs, not streamed) one after another until `requests` are done. Returns tokens/s.
fn plain_client(address: &str, prompts: &[String], in_flight: usize, requests: usize) -> Result<(u64, f64)> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let tokens = std::sync::atomic::AtomicU64::new(0);
    let agent = ureq::AgentBuilder::new()
        .timeout_read(Duration::from_secs(300))
        .build();
    let url = format!("http://{address}/v1/chat/completions");
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..in_flight {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= requests {
                        break;
                    }
                    let body = serde_json::json!({
                        "model": "smollm2",
                        "messages": [{"role": "user", "content": prompts[i % prompts.len()]}],
                        "max_tokens": 64,
                        "temperature": 0.7,
                        "logprobs": true,
                        "top_logprobs": 20,
                        "seed": i,
                    });
                    if let Ok(response) = agent.post(&url).send_json(body)
                        && let Ok(value) = response.into_json::<serde_json::Value>()
                    {
                        let n = value["usage"]["completion_tokens"].as_u64().unwrap_or(0);
                        tokens.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let total = tokens.load(std::sync::atomic::Ordering::Relaxed);
    Ok((total, total as f64 / started.elapsed().as_secs_f64()))
}

/// Runs the release `harmbench` example against the server; returns (tokens, tokens/s).
fn harmbench_example(base_url: &str, out: &Path) -> Result<(u64, f64)> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/release/examples/harmbench");
    let output = Command::new(&example)
        .args(["--backend", "openai", "--base-url", base_url, "--model", "smollm2"])
        .args(["--policy", "fixed", "--traces", "8", "--limit", "32", "--quiet"])
        .args(["--max-tokens", "64", "--no-report", "--out"])
        .arg(out)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", example.display()))?;
    if !output.status.success() {
        bail!("the harmbench example failed");
    }
    let text = String::from_utf8_lossy(&output.stdout);
    // "... run now ...: N tokens in Xs (Y tok/s)"
    let line = BufReader::new(text.as_bytes())
        .lines()
        .map_while(std::result::Result::ok)
        .find(|l| l.contains(" tok/s)"))
        .context("the example printed no throughput line")?;
    let tokens: u64 = line
        .split(": ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .context("token count")?
        .parse()?;
    let rate: f64 = line
        .rsplit('(')
        .next()
        .and_then(|rest| rest.split(' ').next())
        .context("rate")?
        .parse()?;
    Ok((tokens, rate))
}

fn served(args: &[String]) -> Result<()> {
    let bin = assets::ensure_llama_cpp_tools()?;
    let model = assets::fetch_model()?;
    assets::fetch_data("harmbench")?;
    run(cargo().args(["build", "--release", "--example", "harmbench"]))?;
    let dataset = DatasetSpec::new(Benchmark::HarmBench).load()?;
    let prompts: Vec<String> = select_instances(&dataset, Some(32), 0, Stratify::Category)
        .iter()
        .map(|i| i.user_prompt().to_string())
        .collect();
    let server = start_llama_server(&bin, &model, 16)?;
    let base_url = format!("http://{}/v1", server.address);
    // Warm the server up once.
    plain_client(&server.address, &prompts, 16, 16)?;
    let (peer_tokens, peer_rate) = plain_client(&server.address, &prompts, 16, 128)?;
    let out = std::env::temp_dir().join(format!("deepconf-bench-served-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (our_tokens, our_rate) = harmbench_example(&base_url, &out)?;
    let _ = std::fs::remove_dir_all(&out);
    let text = format!(
        "{SERVED}\n\nCommand: `cargo xtask bench served` (release build). Machine: {}; load average at the start {}. \
Server: llama.cpp's `llama-server` from the llama-cpp-python 0.3.36 sources, `-np 16` (16 slots, \
continuous batching), 2 threads, the embedded SmolLM2 Q4_1 GGUF. Peer: a plain client keeping 16 \
chat-completion requests in flight (64 tokens, `top_logprobs: 20`, not streamed), 128 requests. \
Ours: the `harmbench` example, `--backend openai --policy fixed --traces 8 --limit 32 \
--max-tokens 64` (streamed, every token's top-20 log-probabilities read, classified and recorded), \
default concurrency. Goal: >= 0.9x.\n\n\
| client | tokens | tokens/s | vs plain client |\n|---|---:|---:|---:|\n\
| plain client, 16 requests in flight | {peer_tokens} | {peer_rate:.1} | 1.00x |\n\
| `harmbench` example | {our_tokens} | {our_rate:.1} | {:.2}x |\n",
        machine(),
        load_average(),
        our_rate / peer_rate
    );
    drop(server);
    write_or_print(SERVED, &text, args)
}

const SERVED: &str = "## Served runs";

/// `cargo xtask bench engine|served|main-job`.
pub(crate) fn run_named(which: &str, args: &[String]) -> Result<()> {
    match which {
        "engine" => engine(args),
        "served" => served(args),
        "main-job" => main_job(args),
        other => bail!("unknown benchmark `{other}` (engine, served, main-job)"),
    }
}
