//! Run with: `cargo run --release --example score -- --jsonl gold.jsonl --classifier judge
//! --judge-base-url http://127.0.0.1:8001/v1 --judge-model wildguard`
//!
//! Scores a refusal classifier against gold labels: the reference responses of WildGuardMix
//! (`--wildguardmix FILE.parquet`, gold `response_refusal_label`) or any JSON lines file of
//! `{"prompt", "response", "label": "refusal"|"compliance"}` (`--jsonl`). Prints precision,
//! recall and F1 with bootstrap 95% intervals, and the parse-error rate of a judge; writes the
//! details (every miss) to `--out`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Parser;
use deepconf_eval::datasets::{Benchmark, DatasetSpec};
use deepconf_eval::{ClassifierArgs, judge_summary, reference_responses, score_labelled};
use deepconf_refusal::load_labelled_jsonl;

#[derive(Debug, Parser)]
struct Cli {
    /// A WildGuardMix file (parquet); its labelled reference responses are scored.
    #[arg(long)]
    wildguardmix: Option<PathBuf>,
    /// A JSON lines file of labelled responses.
    #[arg(long)]
    jsonl: Option<PathBuf>,
    /// Responses classified at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Where the details go (JSON).
    #[arg(long, default_value = "classifier_vs_gold.json")]
    out: PathBuf,
    #[command(flatten)]
    classifier: ClassifierArgs,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let items = match (&cli.wildguardmix, &cli.jsonl) {
        (Some(file), None) => reference_responses(
            &DatasetSpec::local(Benchmark::WildGuardMix, file)
                .load()?
                .instances,
        ),
        (None, Some(file)) => load_labelled_jsonl(file)?,
        _ => bail!("give exactly one of --wildguardmix FILE and --jsonl FILE"),
    };
    let mut classifier = cli.classifier.build(5)?;
    let evaluation = score_labelled(
        classifier.classifier.as_mut(),
        &items,
        cli.concurrency,
        Some(&cli.out),
    )?;
    println!(
        "`{}` on {} labelled responses: {evaluation}",
        classifier.classifier.name(),
        items.len()
    );
    if let Some(counts) = &classifier.judge_counts {
        println!("{}", judge_summary(counts));
    }
    println!("details: {}", cli.out.display());
    Ok(())
}
