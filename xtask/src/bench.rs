//! `cargo xtask bench`: decode throughput of deepconf-candle against llama.cpp (llama-cpp-python)
//! on the same GGUF, in the same run, written to the "Decode throughput" section of
//! docs/benchmarks.md.
//!
//! Options: `--model FILE` (default: the embedded model), `--max-tokens N` (128), `--traces N` (16),
//! `--repeats N` (3, best run kept for each row), `--no-write` (print only).
//!
//! `cargo xtask bench --k-quants` instead writes the "Decode throughput: K-quant file" section:
//! the embedded model as Q4_1 (as shipped) and as Q4_K_M (made by llama.cpp's `llama-quantize`,
//! see `assets::ensure_q4_k_m_model`), each decoded at batch 1 and with 16 traces of one prompt
//! by deepconf-candle and by llama.cpp (16 sequences in one batch, as llama.cpp's
//! `examples/batched` does), every row in its own process so that its peak resident memory
//! (`VmHWM`) is its own. `--threads N` (default 2) sets both engines' thread count.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use deepconf_candle::CandleModel;
use deepconf_core::{ChatMessage, GenerationRequest, NoObserver, SamplingParams, TraceSpec};

const PROMPT: &str = "Write a long story about a dragon who learns to cook.";
const SECTION: &str = "## Decode throughput";

/// The llama.cpp side: one completion at batch 1, printed as JSON (tokens, seconds).
const LLAMA_CPP_SCRIPT: &str = r#"
import json, sys, time, llama_cpp
path, prompt, max_tokens, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
llm = llama_cpp.Llama(model_path=path, n_ctx=2048, n_threads=2, n_threads_batch=2, verbose=False)
ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
best = None
for r in range(repeats):
    llm.reset()
    start = time.perf_counter()
    out = llm.create_completion(ids, max_tokens=max_tokens, temperature=0.7, top_p=0.95, seed=r)
    seconds = time.perf_counter() - start
    tokens = out["usage"]["completion_tokens"]
    if best is None or tokens / seconds > best[0] / best[1]:
        best = (tokens, seconds)
print(json.dumps({"tokens": best[0], "seconds": best[1], "version": llama_cpp.__version__}))
"#;

struct Row {
    name: String,
    tokens: usize,
    seconds: f64,
}

impl Row {
    fn rate(&self) -> f64 {
        self.tokens as f64 / self.seconds
    }
}

pub(crate) fn option(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

pub(crate) fn number(args: &[String], name: &str, default: usize) -> Result<usize> {
    option(args, name)
        .map(|v| {
            v.parse()
                .with_context(|| format!("{name} takes a number, got {v}"))
        })
        .transpose()
        .map(|v| v.unwrap_or(default))
}

/// Runs the benchmark; see the module docs for the options.
pub fn run(args: &[String]) -> Result<()> {
    // The peer: llama-cpp-python on the llama.cpp built here with this CPU's SIMD options.
    crate::assets::ensure_llama_cpp_python(&crate::assets::ensure_llama_cpp_tools()?)?;
    if args.iter().any(|a| a == "--k-quants") {
        return run_k_quants(args);
    }
    let model_path = option(args, "--model")
        .map(PathBuf::from)
        .unwrap_or_else(deepconf_candle::default_model_path);
    if !model_path.is_file() {
        bail!(
            "{} is missing: run `cargo xtask fetch-model`",
            model_path.display()
        );
    }
    let max_tokens = number(args, "--max-tokens", 128)?;
    let traces = number(args, "--traces", 16)?;
    let repeats = number(args, "--repeats", 3)?.max(1);

    let mut model = CandleModel::load(&model_path)?;
    let prompt_ids = model.encode_chat(&[ChatMessage::user(PROMPT)])?;
    let prompt_text = model.tokenizer().decode(&prompt_ids, false)?;
    let sampling = SamplingParams::default().with_max_tokens(max_tokens);
    let request = GenerationRequest::user(PROMPT, sampling);

    let mut ours = |n: usize| -> Result<Row> {
        let mut best: Option<(usize, f64)> = None;
        for r in 0..repeats {
            let specs: Vec<TraceSpec> = (0..n).map(|i| TraceSpec::derive(r as u64, i)).collect();
            let start = Instant::now();
            let out = model.generate_from_tokens(&prompt_ids, &request, &specs, &mut NoObserver)?;
            let seconds = start.elapsed().as_secs_f64();
            let tokens: usize = out.iter().map(|t| t.n_tokens()).sum();
            if best.is_none_or(|(t, s)| tokens as f64 / seconds > t as f64 / s) {
                best = Some((tokens, seconds));
            }
        }
        let (tokens, seconds) = best.expect("repeats >= 1");
        Ok(Row {
            name: format!(
                "deepconf-candle, {n} trace{}",
                if n == 1 { "" } else { "s" }
            ),
            tokens,
            seconds,
        })
    };
    let ours_single = ours(1)?;
    let ours_batch = ours(traces)?;

    let output = Command::new("python3")
        .args(["-c", LLAMA_CPP_SCRIPT])
        .arg(&model_path)
        .arg(&prompt_text)
        .arg(max_tokens.to_string())
        .arg(repeats.to_string())
        .output()
        .context("running python3 (llama-cpp-python is the peer)")?;
    if !output.status.success() {
        bail!(
            "llama-cpp-python failed (install it with `python3 -m pip install llama-cpp-python==0.3.36`):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let peer: serde_json::Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "llama.cpp output: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })?;
    let peer_row = Row {
        name: format!(
            "llama.cpp (llama-cpp-python {}), 1 trace",
            peer["version"].as_str().unwrap_or("?")
        ),
        tokens: peer["tokens"].as_u64().unwrap_or(0) as usize,
        seconds: peer["seconds"].as_f64().unwrap_or(f64::NAN),
    };

    let table = render(
        &model_path,
        max_tokens,
        repeats,
        &[&peer_row, &ours_single, &ours_batch],
        peer_row.rate(),
    );
    println!("{table}");
    if !args.iter().any(|a| a == "--no-write") {
        let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
        write_section(&doc, &table)?;
        println!("wrote {}", doc.display());
    }
    Ok(())
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let threads = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {threads} threads")
}

pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn render(
    model: &Path,
    max_tokens: usize,
    repeats: usize,
    rows: &[&Row],
    peer_rate: f64,
) -> String {
    let mut s = format!(
        "{SECTION}\n\nCommand: `cargo xtask bench` (release build; `-C target-cpu=native`). Machine: {}; the load average of other processes at the start of the run was {}. Model: `{}`. \
Prompt: one chat message, sampling temperature 0.7 / top-p 0.95, at most {max_tokens} tokens per \
trace (traces may end earlier at EOS; rates count the tokens actually generated). Times include \
the prompt prefill. Best of {repeats} runs per row; both engines use 2 threads; deepconf-candle also \
computes the top-20 logprobs of every step, the llama.cpp row does not.\n\n\
| engine | tokens | seconds | tokens/s | vs llama.cpp batch 1 |\n|---|---:|---:|---:|---:|\n",
        machine(),
        load_average(),
        model.file_name().map_or_else(
            || model.display().to_string(),
            |f| f.to_string_lossy().into_owned()
        ),
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {:.2} | {:.1} | {:.2}x |\n",
            r.name,
            r.tokens,
            r.seconds,
            r.rate(),
            r.rate() / peer_rate
        ));
    }
    s.push_str(
        "\nThe engines run one after the other, so a busy machine skews the ratio (llama.cpp's \
spinning threads suffer more from contention than ours): trust runs with a load average well \
below the thread count.\n",
    );
    s
}

/// Replaces the "Decode throughput" section of `doc` (or appends it), keeping other sections.
fn write_section(doc: &Path, section: &str) -> Result<()> {
    write_named_section(doc, SECTION, section)
}

const K_QUANT_SECTION: &str = "## Decode throughput: K-quant file";

/// The llama.cpp side of `--k-quants`: `n_seq` sequences sharing the prompt, decoded together
/// through llama.cpp's C API (one `llama_decode` per step for all live sequences, a sampler
/// chain top-p 0.95 -> temperature 0.7 -> seeded draw per sequence), best of `repeats` runs;
/// prints tokens, seconds and the process's peak resident memory.
const LLAMA_CPP_BATCHED_SCRIPT: &str = r#"
import json, sys, time
import llama_cpp as L
path, prompt, max_tokens, n_seq, repeats, threads = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
L.llama_backend_init()
model = L.llama_model_load_from_file(path.encode(), L.llama_model_default_params())
vocab = L.llama_model_get_vocab(model)
buf = (L.llama_token * (len(prompt) + 8))()
ids = list(buf[:L.llama_tokenize(vocab, prompt, len(prompt), buf, len(buf), False, True)])
cp = L.llama_context_default_params()
cp.n_ctx = len(ids) + n_seq * max_tokens + 64
cp.n_batch = cp.n_ubatch = max(len(ids), n_seq)
cp.n_seq_max, cp.n_threads, cp.n_threads_batch, cp.kv_unified, cp.no_perf = n_seq, threads, threads, True, True
best = None
for r in range(repeats):
    ctx = L.llama_init_from_model(model, cp)
    batch = L.llama_batch_init(cp.n_batch, 0, n_seq)
    samplers = []
    for s in range(n_seq):
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(0.95, 1))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(0.7))
        L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(1000 * r + s))
        samplers.append(chain)
    start = time.perf_counter()
    batch.n_tokens = len(ids)
    for i, t in enumerate(ids):
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = t, i, n_seq, i == len(ids) - 1
        for s in range(n_seq):
            batch.seq_id[i][s] = s
    assert L.llama_decode(ctx, batch) == 0
    row = [len(ids) - 1] * n_seq
    active, pos, tokens = list(range(n_seq)), len(ids), 0
    for step in range(max_tokens):
        batch.n_tokens, still = 0, []
        for s in active:
            t = L.llama_sampler_sample(samplers[s], ctx, row[s])
            if L.llama_vocab_is_eog(vocab, t):
                continue
            tokens += 1
            if step + 1 < max_tokens:
                k = batch.n_tokens
                batch.token[k], batch.pos[k], batch.n_seq_id[k], batch.logits[k] = t, pos, 1, True
                batch.seq_id[k][0] = s
                row[s], batch.n_tokens = k, k + 1
                still.append(s)
        active = still
        if not active:
            break
        assert L.llama_decode(ctx, batch) == 0
        pos += 1
    seconds = time.perf_counter() - start
    for chain in samplers:
        L.llama_sampler_free(chain)
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    if best is None or tokens / seconds > best[0] / best[1]:
        best = (tokens, seconds)
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"tokens": best[0], "seconds": best[1], "vm_hwm_kb": hwm, "version": L.__version__}))
"#;

/// One row of `--k-quants`.
struct MemoryRow {
    file: String,
    engine: String,
    traces: usize,
    tokens: usize,
    seconds: f64,
    vm_hwm_kb: u64,
}

impl MemoryRow {
    fn rate(&self) -> f64 {
        self.tokens as f64 / self.seconds
    }
}

/// This process's peak resident set (`VmHWM`, kB).
fn peak_rss_kb() -> u64 {
    process_status_kb("VmHWM:").unwrap_or(0)
}

/// A memory figure of this process's `/proc/self/status` (`VmHWM:`, `VmRSS:`), in kB.
pub(crate) fn process_status_kb(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `xtask bench-decode MODEL MAX_TOKENS TRACES REPEATS`: one of our rows of `--k-quants`, run
/// in a fresh process so that its peak memory is its own; prints JSON.
pub fn decode_child(args: &[String]) -> Result<()> {
    let [model_path, max_tokens, traces, repeats] = args else {
        bail!("bench-decode MODEL MAX_TOKENS TRACES REPEATS");
    };
    let (max_tokens, traces, repeats): (usize, usize, usize) =
        (max_tokens.parse()?, traces.parse()?, repeats.parse()?);
    let mut model = CandleModel::load(model_path)?;
    let prompt_ids = model.encode_chat(&[ChatMessage::user(PROMPT)])?;
    let request = GenerationRequest::user(
        PROMPT,
        SamplingParams::default().with_max_tokens(max_tokens),
    );
    let mut best: Option<(usize, f64)> = None;
    for r in 0..repeats {
        let specs: Vec<TraceSpec> = (0..traces)
            .map(|i| TraceSpec::derive(r as u64, i))
            .collect();
        let start = Instant::now();
        let out = model.generate_from_tokens(&prompt_ids, &request, &specs, &mut NoObserver)?;
        let seconds = start.elapsed().as_secs_f64();
        let tokens: usize = out.iter().map(|t| t.n_tokens()).sum();
        if best.is_none_or(|(t, s)| tokens as f64 / seconds > t as f64 / s) {
            best = Some((tokens, seconds));
        }
    }
    let (tokens, seconds) = best.context("repeats >= 1")?;
    println!(
        "{}",
        serde_json::json!({
            "tokens": tokens,
            "seconds": seconds,
            "vm_hwm_kb": peak_rss_kb(),
            "weight_bytes": model.weight_bytes(),
            "prompt": model.tokenizer().decode(&prompt_ids, false)?,
        })
    );
    Ok(())
}

fn json_output(command: &mut Command, what: &str) -> Result<serde_json::Value> {
    let output = command
        .output()
        .with_context(|| format!("starting {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "{what} printed: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn run_k_quants(args: &[String]) -> Result<()> {
    let max_tokens = number(args, "--max-tokens", 128)?;
    let traces = number(args, "--traces", 16)?;
    let repeats = number(args, "--repeats", 3)?.max(1);
    let threads = number(args, "--threads", 2)?.max(1);
    let files = [
        crate::assets::fetch_model()?,
        crate::assets::ensure_q4_k_m_model()?,
    ];
    let load = load_average();
    let exe = std::env::current_exe()?;
    let mut rows = Vec::new();
    let mut weights = Vec::new();
    for file in &files {
        let name = file.file_name().map_or_else(
            || file.display().to_string(),
            |f| f.to_string_lossy().into_owned(),
        );
        for n in [1, traces] {
            let ours = json_output(
                Command::new(&exe)
                    .env("RAYON_NUM_THREADS", threads.to_string())
                    .arg("bench-decode")
                    .arg(file)
                    .args([max_tokens, n, repeats].map(|v| v.to_string())),
                "deepconf-candle decode",
            )?;
            let prompt = ours["prompt"].as_str().unwrap_or_default().to_string();
            if n == 1 {
                weights.push((name.clone(), ours["weight_bytes"].as_u64().unwrap_or(0)));
            }
            let peer = json_output(
                Command::new("python3")
                    .args(["-c", LLAMA_CPP_BATCHED_SCRIPT])
                    .arg(file)
                    .arg(&prompt)
                    .args([max_tokens, n, repeats, threads].map(|v| v.to_string())),
                "llama-cpp-python decode (install with `python3 -m pip install llama-cpp-python==0.3.36`)",
            )?;
            eprintln!(
                "{name}, {n} trace(s): deepconf-candle {:.1} tok/s, llama.cpp {:.1} tok/s",
                ours["tokens"].as_f64().unwrap_or(0.0)
                    / ours["seconds"].as_f64().unwrap_or(f64::NAN),
                peer["tokens"].as_f64().unwrap_or(0.0)
                    / peer["seconds"].as_f64().unwrap_or(f64::NAN)
            );
            for (engine, json) in [
                (
                    format!(
                        "llama.cpp (llama-cpp-python {})",
                        peer["version"].as_str().unwrap_or("?")
                    ),
                    &peer,
                ),
                ("deepconf-candle".to_string(), &ours),
            ] {
                rows.push(MemoryRow {
                    file: name.clone(),
                    engine,
                    traces: n,
                    tokens: json["tokens"].as_u64().unwrap_or(0) as usize,
                    seconds: json["seconds"].as_f64().unwrap_or(f64::NAN),
                    vm_hwm_kb: json["vm_hwm_kb"].as_u64().unwrap_or(0),
                });
            }
        }
    }
    let load = format!("{load} at the start, {} at the end", load_average());
    let table = render_k_quants(&rows, &weights, max_tokens, repeats, threads, &load);
    println!("{table}");
    if !args.iter().any(|a| a == "--no-write") {
        let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md");
        write_named_section(&doc, K_QUANT_SECTION, &table)?;
        println!("wrote {}", doc.display());
    }
    Ok(())
}

fn render_k_quants(
    rows: &[MemoryRow],
    weights: &[(String, u64)],
    max_tokens: usize,
    repeats: usize,
    threads: usize,
    load: &str,
) -> String {
    let mut s = format!(
        "{K_QUANT_SECTION}\n\nCommand: `cargo xtask bench --k-quants --threads {threads}` (release build; `-C target-cpu=native`). Machine: {}; \
load average (1 minute): {load}. The embedded model as shipped (Q4_1) and re-quantized by \
llama.cpp's `llama-quantize --allow-requantize ... Q4_K_M` (`cargo xtask fetch-model q4_k_m`). Same prompt and \
sampling (temperature 0.7, top-p 0.95) as above, at most {max_tokens} tokens per trace, times include the prompt \
prefill, best of {repeats} runs per row. Both engines use {threads} thread(s); llama.cpp decodes the traces as sequences of one \
batch sharing the prompt (`examples/batched`'s way, through its C API). Peak memory is the row's own process's \
`VmHWM` (the llama.cpp rows include the Python interpreter).\n\n\
| file | engine | traces | tokens | seconds | tokens/s | vs llama.cpp, same file and traces | peak RSS |\n\
|---|---|---:|---:|---:|---:|---:|---:|\n",
        machine()
    );
    for row in rows {
        let peer = rows
            .iter()
            .find(|r| {
                r.file == row.file && r.traces == row.traces && r.engine.starts_with("llama.cpp")
            })
            .map_or(f64::NAN, MemoryRow::rate);
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.2} | {:.1} | {:.2}x | {:.0} MB |\n",
            row.file,
            row.engine,
            row.traces,
            row.tokens,
            row.seconds,
            row.rate(),
            row.rate() / peer,
            row.vm_hwm_kb as f64 / 1024.0
        ));
    }
    let ours = |file: &str, traces: usize| {
        rows.iter()
            .find(|r| r.file.contains(file) && r.traces == traces && r.engine == "deepconf-candle")
            .map_or(f64::NAN, |r| r.vm_hwm_kb as f64)
    };
    let traces = rows.iter().map(|r| r.traces).max().unwrap_or(1);
    s.push_str(&format!(
        "\nPeak memory of deepconf-candle, Q4_K_M file / Q4_1 file: {:.2}x at batch 1, {:.2}x with {traces} traces \
(goal: at most 1.2x). Weights in memory: {}.\n",
        ours("Q4_K_M", 1) / ours("Q4_1", 1),
        ours("Q4_K_M", traces) / ours("Q4_1", traces),
        weights
            .iter()
            .map(|(file, bytes)| format!("{file} {:.1} MB", *bytes as f64 / 1e6))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    s
}

/// Replaces the section that starts with `heading` in `doc` (or appends it), keeping others.
pub(crate) fn write_named_section(doc: &Path, heading: &str, section: &str) -> Result<()> {
    let old = std::fs::read_to_string(doc).unwrap_or_else(|_| "# Benchmarks\n".to_string());
    let new = match old.find(&format!("{heading}\n")) {
        Some(start) => {
            let after = &old[start + heading.len()..];
            let end = after
                .find("\n## ")
                .map_or(old.len(), |i| start + heading.len() + i + 1);
            format!("{}{}\n{}", &old[..start], section, &old[end..])
        }
        None => format!(
            "{}\n{}",
            old.trim_end_matches('\n').to_string() + "\n",
            section
        ),
    };
    std::fs::write(doc, new).with_context(|| format!("writing {}", doc.display()))
}
