//! `cargo xtask bench`: decode throughput of deepconf-candle against llama.cpp (llama-cpp-python)
//! on the same GGUF, in the same run, written to the "Decode throughput" section of
//! docs/benchmarks.md.
//!
//! Options: `--model FILE` (default: the embedded model), `--max-tokens N` (128), `--traces N` (16),
//! `--repeats N` (3, best run kept for each row), `--no-write` (print only).

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

fn option(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn number(args: &[String], name: &str, default: usize) -> Result<usize> {
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

fn machine() -> String {
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

fn load_average() -> String {
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
    let old = std::fs::read_to_string(doc).unwrap_or_else(|_| "# Benchmarks\n".to_string());
    let new = match old.find(SECTION) {
        Some(start) => {
            let after = &old[start + SECTION.len()..];
            let end = after
                .find("\n## ")
                .map_or(old.len(), |i| start + SECTION.len() + i + 1);
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
