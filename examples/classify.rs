//! Run with: `cargo run --release --example classify -- --classifier patterns < responses.jsonl`
//!
//! Reads JSON lines `{"prompt": ..., "response": ...}` on stdin and prints one JSON line each with
//! `label` (`refusal`, `compliance`, or `incomplete` for an unclosed thinking block), `score` and
//! `evidence`. `--classifier judge|ensemble` asks a judge model of its own (`--judge-model FILE.gguf`,
//! or `--judge-base-url URL --judge-model NAME` for a served one; `--judge-format
//! wildguard|harmbench|llama-guard`); lines the judge cannot answer print an error.
use std::io::{BufRead, Write};

use anyhow::{Context, Result};
use clap::Parser;
use deepconf_eval::{ClassifierArgs, judge_summary};
use deepconf_refusal::RefusalClassifier;

#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    classifier: ClassifierArgs,
}

#[derive(serde::Deserialize)]
struct Exchange {
    prompt: String,
    response: String,
}

/// Classifies every stdin line; returns (lines classified, lines that failed).
fn run(classifier: &mut dyn RefusalClassifier) -> Result<(usize, usize)> {
    let (mut done, mut failed) = (0, 0);
    let mut out = std::io::stdout().lock();
    for (index, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let exchange: Exchange = serde_json::from_str(&line).with_context(|| {
            format!(
                "stdin line {}: expected {{\"prompt\", \"response\"}}",
                index + 1
            )
        })?;
        match classifier.classify(&exchange.prompt, &exchange.response) {
            Ok(c) => writeln!(out, "{}", serde_json::to_string(&c)?)?,
            Err(deepconf_refusal::Error::Model(e)) => return Err(e.into()),
            Err(e) => {
                failed += 1;
                let error = serde_json::json!({"line": index + 1, "error": e.to_string()});
                writeln!(out, "{error}")?;
            }
        }
        done += 1;
    }
    Ok((done, failed))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut classifier = args.classifier.build(5)?;
    let (done, failed) = run(classifier.classifier.as_mut())?;
    if let Some(counts) = &classifier.judge_counts {
        eprintln!("{}", judge_summary(counts));
    }
    eprintln!("{done} responses classified, {failed} could not be");
    Ok(())
}
