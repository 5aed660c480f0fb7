//! Run with: `cargo xtask train-guarded` (or `cargo run --release -p deepconf-lora --example
//! train_guarded -- --out DIR`).
//!
//! Trains the guarded adapter of the embedded model with the recipe of `deepconf_lora::guarded`
//! and writes the adapter, `training.json` and `training_set.jsonl` into `--out`.
use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use deepconf_lora::guarded::{GuardedRecipe, ProgressBar, make_guarded};

#[derive(Debug, Parser)]
#[command(about = "Train the guarded LoRA adapter of the embedded model")]
struct Args {
    /// Output directory of the adapter.
    #[arg(long)]
    out: PathBuf,
    /// Reuse the answered rows of an earlier run instead of distilling them again.
    #[arg(long)]
    training_set: Option<PathBuf>,
    /// Optimizer steps (default: the recipe's).
    #[arg(long)]
    steps: Option<usize>,
    /// Tokens per held-out greedy answer.
    #[arg(long, default_value_t = 64)]
    held_out_max_tokens: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut recipe = GuardedRecipe::default();
    if let Some(steps) = args.steps {
        recipe.train.steps = steps;
    }
    let mut progress = ProgressBar::default();
    let report = make_guarded(
        &recipe,
        &args.out,
        args.training_set.as_deref(),
        args.held_out_max_tokens,
        &mut progress,
    )?;
    drop(progress);
    let rate = |r: [f64; 3]| {
        format!(
            "{:.0}% ({:.0}-{:.0}%)",
            100.0 * r[0],
            100.0 * r[1],
            100.0 * r[2]
        )
    };
    println!(
        "trained on {} harmful + {} benign rows in {:.0}s; final loss {:.3}",
        report.harmful_rows,
        report.benign_rows,
        report.train_seconds,
        report.steps.last().map_or(f64::NAN, |s| s.loss)
    );
    println!(
        "held out: base refuses {} of harmful, complies with {} of benign; guarded {} and {}",
        rate(report.held_out_base.harmful_refusal_rate),
        rate(report.held_out_base.benign_compliance_rate),
        rate(report.held_out_guarded.harmful_refusal_rate),
        rate(report.held_out_guarded.benign_compliance_rate)
    );
    println!(
        "adapter sha256 {}: {}",
        report.adapter_sha256,
        args.out.display()
    );
    Ok(())
}
