//! Run with: `cargo run --release --example classify -- --classifier patterns < responses.jsonl`
//!
//! Reads JSON lines `{"prompt": ..., "response": ...}` on stdin and prints one JSON line each with
//! `label` (`refusal`, `compliance`, or `incomplete` for an unclosed thinking block), `score` and
//! `evidence`. `--classifier judge|ensemble` asks a WildGuard-format judge (`--model FILE.gguf`,
//! default: the embedded SmolLM2, far too small to judge well); unanswerable lines print an error.
use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use deepconf_candle::CandleModel;
use deepconf_refusal::{
    Ensemble, PatternClassifier, PatternConfig, PatternSet, RefusalClassifier, WildGuardJudge,
};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Kind {
    Patterns,
    Judge,
    Ensemble,
}

#[derive(Debug, Parser)]
struct Args {
    /// Which classifier labels the responses.
    #[arg(long, value_enum, default_value = "patterns")]
    classifier: Kind,
    /// GGUF file of the judge (e.g. a WildGuard GGUF); default: the embedded model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// A JSON pattern set appended to the built-in patterns.
    #[arg(long)]
    patterns: Option<PathBuf>,
}

#[derive(serde::Deserialize)]
struct Exchange {
    prompt: String,
    response: String,
}

fn patterns(extra: Option<&PathBuf>) -> Result<PatternClassifier> {
    let mut set = PatternSet::default();
    if let Some(path) = extra {
        set.extend(PatternSet::from_path(path)?);
    }
    Ok(PatternClassifier::new(set, PatternConfig::default())?)
}

fn judge(model: Option<&PathBuf>) -> Result<WildGuardJudge<CandleModel>> {
    let model = match model {
        Some(path) => CandleModel::load(path.clone())?,
        None => CandleModel::load_default()?,
    };
    let tokenizer = model.tokenizer();
    let vocabulary = (0..tokenizer.vocab_size() as u32)
        .map(|id| tokenizer.decode(&[id], false).unwrap_or_default())
        .collect();
    Ok(WildGuardJudge::new(model).with_vocabulary(vocabulary))
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
    let (done, failed) = match args.classifier {
        Kind::Patterns => run(&mut patterns(args.patterns.as_ref())?)?,
        Kind::Judge => run(&mut judge(args.model.as_ref())?)?,
        Kind::Ensemble => {
            let mut ensemble = Ensemble::new(
                patterns(args.patterns.as_ref())?,
                judge(args.model.as_ref())?,
            );
            let counts = run(&mut ensemble)?;
            eprintln!(
                "judge consulted {} times, failed {} times",
                ensemble.judge_calls(),
                ensemble.judge_failures()
            );
            counts
        }
    };
    eprintln!("{done} responses classified, {failed} could not be");
    Ok(())
}
