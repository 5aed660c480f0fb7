//! Run with: `cargo run --example confidence -- --window 2048 < traces.jsonl`
//!
//! Reads JSON lines, one trace per line: `{"top_logprobs": [[-0.1, -2.3, ...], ...]}` (one inner list
//! per generated token, most likely first), and prints one JSON line per trace with `mean`,
//! `lowest_group`, `bottom_10_group`, `tail` and `n_tokens`: the smallest way to compare our metrics
//! with another implementation.
use std::io::{BufRead, Write};

use anyhow::{Context, Result, bail};
use clap::Parser;
use deepconf_core::confidence::{ConfidenceConfig, StreamingConfidence, validate_top_logprobs};

#[derive(Parser, Debug)]
#[command(about = "DeepConf trace confidence from top-k logprobs (JSON lines on stdin)")]
struct Args {
    /// Candidates per token averaged by token confidence.
    #[arg(long, default_value_t = 20)]
    top_k: usize,
    /// Sliding window (group) size in tokens.
    #[arg(long, default_value_t = deepconf_core::confidence::SAFETY_WINDOW)]
    window: usize,
    /// Tokens averaged by tail confidence.
    #[arg(long, default_value_t = deepconf_core::confidence::SAFETY_TAIL)]
    tail: usize,
    /// Percent of lowest groups averaged by the bottom group confidence.
    #[arg(long, default_value_t = 10.0)]
    bottom_percent: f64,
}

#[derive(serde::Deserialize)]
struct TraceLine {
    top_logprobs: Vec<Vec<f32>>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let config = ConfidenceConfig::new()
        .with_top_k(args.top_k)
        .with_window(args.window)
        .with_tail(args.tail)
        .with_bottom_percent(args.bottom_percent);
    let mut stream = StreamingConfidence::new(config)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (number, line) in std::io::stdin().lock().lines().enumerate() {
        let number = number + 1;
        let line = line.with_context(|| format!("stdin line {number}: not readable text"))?;
        if line.trim().is_empty() {
            continue;
        }
        let trace: TraceLine = serde_json::from_str(&line).with_context(|| {
            format!("stdin line {number}: expected {{\"top_logprobs\": [[...], ...]}}")
        })?;
        stream.reset();
        for (token, candidates) in trace.top_logprobs.iter().enumerate() {
            if candidates.is_empty() {
                bail!("stdin line {number}, token {token}: empty top_logprobs list");
            }
            validate_top_logprobs(candidates)
                .with_context(|| format!("stdin line {number}, token {token}"))?;
            stream.push_top_logprobs(candidates);
        }
        let s = stream.summary();
        let record = serde_json::json!({
            "mean": s.map(|s| s.mean),
            "lowest_group": s.map(|s| s.lowest_group),
            "bottom_10_group": s.map(|s| s.bottom_group),
            "tail": s.map(|s| s.tail),
            "n_tokens": stream.len(),
        });
        writeln!(out, "{record}")?;
    }
    Ok(())
}
