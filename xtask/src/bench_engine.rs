//! `cargo xtask bench engine|served|main-job`: the experiment engine at scale, each against a
//! peer measured in the same run, written to docs/benchmarks.md.
//!
//! - `served`: the `harmbench` example through llama.cpp's `llama-server -np 16` against a plain
//!   client keeping 16 requests in flight on the same server.
//! - `main-job`: the online main job on the candle backend (HarmBench behaviours, DeepConf online)
//!   against 16 traces of one prompt decoded together (`generate --traces 16`).
//! - `engine`: a synthetic backend that emits its tokens instantly, 10,000 to 200,000 instances x 4
//!   traces, each size in a fresh process: wall time and peak memory.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use deepconf_core::policy::PolicyConfig;
use deepconf_core::pool;
use deepconf_core::{
    ChatMessage, GenerationRequest, LogprobModel, NoObserver, RunConfig, SamplingParams,
    StopReason, TokenObserver, Trace, TraceBuilder, TraceSpec,
};
use deepconf_datasets::{Benchmark, DatasetSpec, Instance, SourceRow};
use deepconf_eval::{Experiment, ExperimentConfig, ProgressMode, Stratify, select_instances};
use deepconf_refusal::PatternClassifier;

use crate::bench::{load_average, machine, write_named_section};
use crate::{assets, cargo, run};

fn doc_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md")
}

pub(crate) fn write_or_print(section_title: &str, text: &str, args: &[String]) -> Result<()> {
    println!("{text}");
    if !args.iter().any(|a| a == "--no-write") {
        write_named_section(&doc_path(), section_title, text)?;
        println!("wrote {}", doc_path().display());
    }
    Ok(())
}

/// A memory figure of `/proc/self/status` (`VmHWM:`, `VmRSS:`), in MiB.
fn status_mib(field: &str) -> f64 {
    crate::bench::process_status_kb(field).map_or(f64::NAN, |kb| kb as f64 / 1024.0)
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
        let refuse = spec.seed.is_multiple_of(2);
        let word = if refuse { "Sorry, " } else { "Sure, " };
        let mut trace = TraceBuilder::new(request, spec, observer).with_prompt_tokens(12);
        for i in 0..self.tokens {
            let spread = 1.0 + (spec.seed >> (i % 32)) as f32 % 3.0;
            let top: Vec<f32> = (0..20).map(|j| -0.05 - spread * j as f32).collect();
            if trace
                .push_token(Some(i as u32), word, top[0], top)?
                .is_stop()
            {
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

pub(crate) fn synthetic_instances(n: usize) -> Vec<Instance> {
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

/// Samples this process's resident memory every few milliseconds on a thread of its own.
struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(Duration, f64)>>,
}

impl RssSampler {
    fn start() -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut samples = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                samples.push((started.elapsed(), status_mib("VmRSS:")));
                std::thread::sleep(Duration::from_millis(5));
            }
            samples
        });
        Self { stop, thread }
    }

    fn stop(self) -> RssSamples {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        RssSamples(self.thread.join().unwrap_or_default())
    }
}

struct RssSamples(Vec<(Duration, f64)>);

impl RssSamples {
    /// The highest resident memory (MiB) sampled in the first and in the second half of the run.
    fn peaks_by_half(&self) -> (f64, f64) {
        let Some(&(end, _)) = self.0.last() else {
            return (f64::NAN, f64::NAN);
        };
        let peak = |first: bool| {
            self.0
                .iter()
                .filter(|(at, _)| (*at < end / 2) == first)
                .map(|&(_, mib)| mib)
                .fold(f64::NAN, f64::max)
        };
        (peak(true), peak(false))
    }
}

/// One measured size, in this process: prints `instances traces tokens seconds peak_mib parts
/// in_flight before_run_mib first_half_peak_mib second_half_peak_mib`.
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
    let instances = synthetic_instances(n);
    // What the caller's instance list costs, so that the engine's own share can be told apart.
    let before_run = status_mib("VmRSS:");
    let experiment = Experiment::new(
        ExperimentConfig::new("engine-overhead", run_config),
        instances,
    )
    .progress(ProgressMode::Silent);
    let mut model = Instant0 {
        tokens: tokens_per_trace,
    };
    let sampler = RssSampler::start();
    let started = Instant::now();
    let report = experiment.run(&mut model, &mut PatternClassifier::default(), &dir)?;
    let seconds = started.elapsed().as_secs_f64();
    let (first_half, second_half) = sampler.stop().peaks_by_half();
    let parts = deepconf_records::trace_parts(&dir)?.len();
    let traces = n * 4;
    println!(
        "{} {} {} {seconds:.3} {:.1} {parts} {} {before_run:.1} {first_half:.1} {second_half:.1}",
        report.newly_run,
        traces,
        report.tokens_generated,
        status_mib("VmHWM:"),
        report.concurrency
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// One size measured in a child process.
#[derive(Debug, Clone, Copy)]
struct EngineRun {
    instances: usize,
    traces: usize,
    tokens: u64,
    seconds: f64,
    peak_mib: f64,
    parts: usize,
    in_flight: usize,
    before_run_mib: f64,
    first_half_mib: f64,
    second_half_mib: f64,
}

impl EngineRun {
    fn added_mib(&self) -> f64 {
        self.peak_mib - self.before_run_mib
    }

    fn table_row(&self) -> String {
        format!(
            "| {} | {} | {} | {:.2} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} |\n",
            self.instances,
            self.traces,
            self.tokens,
            self.seconds,
            self.instances as f64 / self.seconds,
            self.before_run_mib,
            self.peak_mib,
            self.added_mib(),
            self.first_half_mib,
            self.second_half_mib,
            self.parts,
            self.in_flight
        )
    }
}

/// Runs `xtask bench-engine N` in a fresh process (with `MALLOC_ARENA_MAX` when given).
fn measure_engine(n: usize, malloc_arenas: Option<u32>) -> Result<EngineRun> {
    let mut command = Command::new(std::env::current_exe()?);
    command.args(["bench-engine", &n.to_string()]);
    if let Some(arenas) = malloc_arenas {
        command.env("MALLOC_ARENA_MAX", arenas.to_string());
    }
    let out = command
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
    if f.len() < 10 {
        bail!("unexpected child output `{line}`");
    }
    let field = |i: usize| -> Result<f64> {
        f[i].parse()
            .with_context(|| format!("field {i} of `{line}`"))
    };
    Ok(EngineRun {
        instances: n,
        traces: field(1)? as usize,
        tokens: field(2)? as u64,
        seconds: field(3)?,
        peak_mib: field(4)?,
        parts: field(5)? as usize,
        in_flight: field(6)? as usize,
        before_run_mib: field(7)?,
        first_half_mib: field(8)?,
        second_half_mib: field(9)?,
    })
}

const ENGINE_TABLE_HEADER: &str = "| instances | traces | tokens | seconds | instances/s | resident before the run (MiB) | peak RSS (MiB) | added by the run (MiB) | peak, first half (MiB) | peak, second half (MiB) | part files | in flight |\n\
|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";

fn engine(args: &[String]) -> Result<()> {
    let sizes = [10_000usize, 50_000, 100_000, 200_000, 400_000, 800_000];
    let mut runs = Vec::new();
    for n in sizes {
        eprintln!("engine overhead: {n} instances x 4 traces ...");
        runs.push(measure_engine(n, None)?);
    }
    let mut single_arena = Vec::new();
    for n in [10_000usize, 200_000] {
        eprintln!("engine overhead, one malloc arena: {n} instances x 4 traces ...");
        single_arena.push(measure_engine(n, Some(1))?);
    }
    let rows: String = runs.iter().map(EngineRun::table_row).collect();
    let single_arena_rows: String = single_arena.iter().map(EngineRun::table_row).collect();
    let text = format!(
        "{ENGINE}\n\nCommand: `cargo xtask bench engine` (release build). Machine: {}; load average at the start {}. \
A synthetic in-process backend emits 16 tokens per trace at once (top-20 log-probabilities each), \
so the figures are the engine's own cost: scheduling over its worker threads, the policy and \
confidence per token, the pattern classifier, the reorder window, the Parquet parts and \
`predictions.jsonl`. Policy fixed N = 4; each size runs in a fresh process, so the peak \
resident memory (VmHWM) is that run's alone.\n\n\
Resident before the run: the process with the caller's instance list built (what \
`Experiment::new` is given); added by the run: the peak during the run above that. \
Peak in the first and the second half: the highest resident memory sampled (every 5 ms) in \
each half of the run's wall time; a working set that grew over a long run would show in the \
second.\n\n{ENGINE_TABLE_HEADER}{rows}\n{}\n\n\
The same with one malloc arena (`MALLOC_ARENA_MAX=1`), to tell the allocator's share of the \
rise: glibc gives each worker thread an arena of its own and keeps freed pages in each.\n\n\
{ENGINE_TABLE_HEADER}{single_arena_rows}\n{}\n\n\
What the run keeps does not depend on the instance count: trace rows wait for their part file \
only until it is written (20,000 rows, 64 MiB or two minutes), finished instances wait in the \
reorder window for at most 4 per worker, and the writer keeps no id of what it writes (only the \
ids found on disk when a run is resumed). Per instance the engine holds one bit (finished before \
or not) during the run, and sorts a word per instance for the duplicate-id check before it, \
freed before the run starts.\n",
        machine(),
        load_average(),
        growth_sentence(&runs),
        growth_sentence(&single_arena),
    );
    write_or_print(ENGINE, &text, args)
}

const ENGINE: &str = "## Engine overhead";

/// How the run's added memory changes from the smallest size to the largest (and between the two
/// largest, where the allocator has settled), against the caller's instance list, per instance.
fn growth_sentence(runs: &[EngineRun]) -> String {
    let (Some(first), Some(last)) = (runs.first(), runs.last()) else {
        return String::new();
    };
    let per_instance = |from: &EngineRun, to: &EngineRun, mib: fn(&EngineRun) -> f64| {
        (mib(to) - mib(from)) * 1024.0 * 1024.0 / (to.instances - from.instances).max(1) as f64
    };
    let mut text = format!(
        "From {} to {} instances the memory added by the run went from {:.1} to {:.1} MiB \
({:+.0} bytes per instance), while the caller's instance list grew by {:.0} bytes per instance.",
        first.instances,
        last.instances,
        first.added_mib(),
        last.added_mib(),
        per_instance(first, last, EngineRun::added_mib),
        per_instance(first, last, |r| r.before_run_mib),
    );
    if runs.len() > 2 {
        let before_last = &runs[runs.len() - 2];
        text.push_str(&format!(
            " Between the two largest sizes: {:+.1} MiB ({:+.0} bytes per instance).",
            last.added_mib() - before_last.added_mib(),
            per_instance(before_last, last, EngineRun::added_mib),
        ));
    }
    text
}

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
    let prompts = crate::bench::number(args, "--prompts", 48)?.max(1);
    let concurrency = crate::bench::number(args, "--concurrency", 0)?;
    let mut model = deepconf_candle::CandleModel::load(&model_path)?;
    // The peer: 16 traces of one prompt decoded together, as `generate --traces 16` does; three
    // times before ours and three times after. Ours is one long run, a rate averaged over minutes,
    // so the peer's rate is averaged too (total tokens over total time), not its best burst.
    let sampling = SamplingParams::default().with_max_tokens(128);
    let request = GenerationRequest::user(
        "Write a long story about a dragon who learns to cook.",
        sampling,
    );
    let peer = |model: &mut deepconf_candle::CandleModel, round: u64| -> Result<(usize, f64)> {
        let (mut tokens, mut seconds) = (0, 0.0);
        for r in 0..3 {
            let specs: Vec<TraceSpec> = (0..16)
                .map(|i| TraceSpec::derive(round * 3 + r, i))
                .collect();
            let started = Instant::now();
            let traces = model.generate_batch(&request, &specs, &mut NoObserver)?;
            tokens += traces.iter().map(Trace::n_tokens).sum::<usize>();
            seconds += started.elapsed().as_secs_f64();
        }
        Ok((tokens, seconds))
    };
    let peer_before = peer(&mut model, 0)?;
    // Ours: the main job's live run (`cargo xtask demo`): DeepConf online on its mix of harmful and
    // benign prompts.
    assets::fetch_data("all")?;
    let dataset = deepconf_eval::mixed_dataset(None, prompts, 0)?;
    let instances = dataset.instances.clone();
    let mut config = RunConfig {
        policy: PolicyConfig::online(4, 8, 10.0),
        ..RunConfig::default()
    };
    config.sampling.max_tokens = 128;
    let dir = std::env::temp_dir().join(format!("deepconf-bench-main-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut experiment = Experiment::new(ExperimentConfig::new("main-job", config), instances)
        .progress(ProgressMode::Silent);
    if concurrency > 0 {
        experiment = experiment.concurrency(concurrency);
    }
    let load_at_start = load_average();
    let report = experiment.run(&mut model, &mut PatternClassifier::default(), &dir)?;
    let _ = std::fs::remove_dir_all(&dir);
    let peer_after = peer(&mut model, 1)?;
    let rate = |(tokens, seconds): (usize, f64)| tokens as f64 / seconds;
    let peer_rate = (peer_before.0 + peer_after.0) as f64 / (peer_before.1 + peer_after.1);
    let (peer_before, peer_after) = (rate(peer_before), rate(peer_after));
    let ours = report.tokens_per_second();
    let text = format!(
        "{MAIN_JOB}\n\nCommand: `cargo xtask bench main-job` (release build). Machine: {}; load average at the start {}. \
Peer: 16 traces of one prompt decoded together (`generate --traces 16`: 128 tokens each), 3 runs \
before ours ({peer_before:.1} tok/s) and 3 after ({peer_after:.1} tok/s), their tokens over their \
time (ours is one run of minutes, so both rates are averages over time). Ours: the main job's policy (DeepConf online, 4 warmup, batches of 4, at most 8 \
traces, 128 tokens) on the main job's {prompts} prompts (`mixed_dataset`: HarmBench and StrongREJECT, \
and as many benign over-refusal probes) through the experiment engine ({} instances \
in flight sharing candle's continuous batch of 16 rows), prefills, classification and records \
included. Goal: >= 0.85x.\n\n\
| run | tokens | seconds | tokens/s | vs 16 traces of one prompt |\n|---|---:|---:|---:|---:|\n\
| 16 traces of one prompt | | | {peer_rate:.1} | 1.00x |\n\
| online main job, {prompts} prompts | {} | {:.1} | {ours:.1} | {:.2}x |\n",
        machine(),
        load_at_start,
        report.concurrency,
        report.tokens_generated,
        report.elapsed.as_secs_f64(),
        ours / peer_rate
    );
    write_or_print(MAIN_JOB, &text, args)
}

const MAIN_JOB: &str = "## Main job throughput";

// ---------------------------------------------------------------------------------------------
// served

/// The plain client: `in_flight` threads, each sending chat completions (64 tokens, top 20
/// logprobs, the example's sampling, not streamed) one after another until `requests` are done.
/// Returns tokens/s.
fn plain_client(
    address: &str,
    prompts: &[String],
    in_flight: usize,
    requests: usize,
) -> Result<(u64, f64)> {
    let agent = ureq::AgentBuilder::new()
        .timeout_read(Duration::from_secs(300))
        .build();
    let url = format!("http://{address}/v1/chat/completions");
    let started = Instant::now();
    let mut total = 0u64;
    // Each worker sends its requests one after another; a failed request counts no tokens.
    let send = |i: usize| -> u64 {
        let body = serde_json::json!({
            "model": "smollm2",
            // The example's requests: each prompt's 8 traces one after another.
            "messages": [{"role": "user", "content": prompts[(i / 8) % prompts.len()]}],
            "max_tokens": 64,
            // The example's sampling, field for field: the server's sampler does
            // the work these set (top_k 0 sorts the whole vocabulary for top-p,
            // where llama-server's default top_k 40 would not), so a peer with
            // other settings would measure another workload (measured: 158 against
            // 115 tok/s with the same 16 requests in flight).
            "temperature": 0.7,
            "top_p": 0.95,
            "top_k": 0,
            "min_p": 0.0,
            "logprobs": true,
            "top_logprobs": 20,
            "seed": i,
        });
        match agent.post(&url).send_json(body) {
            Ok(response) => response
                .into_json::<serde_json::Value>()
                .map_or(0, |value| {
                    value["usage"]["completion_tokens"].as_u64().unwrap_or(0)
                }),
            Err(_) => 0,
        }
    };
    pool::run::<(), std::convert::Infallible, u64>(
        vec![(); in_flight],
        requests,
        |_, job| send(job.index()),
        |event| {
            let pool::Event::Done { result, .. } = event;
            total += result;
            pool::Flow::Continue
        },
    );
    Ok((total, total as f64 / started.elapsed().as_secs_f64()))
}

/// Runs the release `harmbench` example against the server; returns (tokens, tokens/s).
fn harmbench_example(base_url: &str, out: &Path) -> Result<(u64, f64)> {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/examples/harmbench");
    let output = Command::new(&example)
        .args([
            "--backend",
            "openai",
            "--base-url",
            base_url,
            "--model",
            "smollm2",
        ])
        .args([
            "--policy", "fixed", "--traces", "8", "--limit", "32", "--quiet",
        ])
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
    // Built into the cache, where the test kit's server looks for it.
    assets::ensure_llama_cpp_tools()?;
    assets::fetch_model()?;
    assets::fetch_data("harmbench")?;
    run(cargo().args(["build", "--release", "--example", "harmbench"]))?;
    let dataset = DatasetSpec::new(Benchmark::HarmBench).load()?;
    let prompts: Vec<String> = select_instances(&dataset, Some(32), 0, Stratify::Category)
        .iter()
        .map(|i| i.user_prompt().to_string())
        .collect();
    let server = deepconf_testkit::server::LlamaServer::start(16);
    let base_url = server.base_url.clone();
    // Warm the server up once.
    plain_client(&server.address, &prompts[..2], 16, 16)?;
    // The peer runs before and after ours, its rate over both (a shared machine drifts).
    let (first_half, second_half) = prompts.split_at(prompts.len() / 2);
    let (before_tokens, before_rate) =
        plain_client(&server.address, first_half, 16, 8 * first_half.len())?;
    let out = std::env::temp_dir().join(format!("deepconf-bench-served-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (our_tokens, our_rate) = harmbench_example(&base_url, &out)?;
    let _ = std::fs::remove_dir_all(&out);
    let (after_tokens, after_rate) =
        plain_client(&server.address, second_half, 16, 8 * second_half.len())?;
    let peer_tokens = before_tokens + after_tokens;
    let peer_rate = peer_tokens as f64
        / (before_tokens as f64 / before_rate + after_tokens as f64 / after_rate);
    let text = format!(
        "{SERVED}\n\nCommand: `cargo xtask bench served` (release build). Machine: {}; load average at the start {}. \
Server: llama.cpp's `llama-server` from the llama-cpp-python 0.3.36 sources, `-np 16` (16 slots, \
continuous batching), 2 threads, the embedded SmolLM2 Q4_1 GGUF. Peer: a plain client keeping 16 \
chat-completion requests in flight (64 tokens, `top_logprobs: 20`, the example's sampling: \
temperature 0.7, top-p 0.95, top-k 0, min-p 0; not streamed), sending the example's 256 requests (8 per prompt, \
a prompt's 8 in a row), those of the first 16 prompts before ours ({before_rate:.1} tok/s) and \
of the other 16 after ({after_rate:.1} tok/s), the rate over both. \
Ours: the `harmbench` example, `--backend openai --policy fixed --traces 8 --limit 32 \
--max-tokens 64` (not streamed: with `--policy fixed` a prompt's 8 traces go out as one request with \
`n` = 8; every token's top-20 log-probabilities read, classified and recorded), \
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

/// `cargo xtask bench engine|served|main-job` (`served --synthetic` is `bench_served`'s).
pub(crate) fn run_named(which: &str, args: &[String]) -> Result<()> {
    match which {
        "engine" => engine(args),
        "served" => served(args),
        "main-job" => main_job(args),
        other => bail!("unknown benchmark `{other}` (engine, served, main-job)"),
    }
}
