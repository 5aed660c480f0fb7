//! Run with: `cargo run --release --example rescore -- out/harmbench --out out/harmbench-llama-guard
//! --classifier judge --judge-format llama-guard --judge-base-url http://127.0.0.1:8001/v1
//! --judge-model llama-guard-3`
//!
//! Labels every trace of a stored run again with another classifier, without the model under
//! test, writes the result as a new run directory with its report, and prints the summary. Judge
//! answers are cached (`--judge-cache`, default `<cache>/judges/`), so running it again asks the
//! judge nothing it has answered.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use deepconf_eval::{ClassifierArgs, judge_summary, rescore, write_report};

/// Re-score a run directory written by harmbench, toxicchat, wildguardmix or compare.
#[derive(Debug, Parser)]
struct Cli {
    /// The stored run (holds run.json, predictions.jsonl and traces/).
    dir: PathBuf,
    /// Where the re-scored run goes (a new directory).
    #[arg(long)]
    out: PathBuf,
    /// Instances labelled at once (a judge's calls run concurrently within its server's limit).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    #[command(flatten)]
    classifier: ClassifierArgs,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut classifier = cli.classifier.build(5)?;
    let report = rescore(&cli.dir, &cli.out, &mut classifier, cli.concurrency)?;
    println!(
        "{} instances, {} traces labelled again in {:.1}s: {} labels and {} behaviours changed",
        report.instances,
        report.traces,
        report.elapsed.as_secs_f64(),
        report.changed_labels,
        report.changed_behaviours
    );
    if let Some(counts) = &classifier.judge_counts {
        println!("{}", judge_summary(counts));
    }
    let (analysis, files) = write_report(&cli.out)?;
    println!("{}", analysis.summary_table());
    println!("report: {}", files.markdown.display());
    Ok(())
}
