//! Run with: cargo run --release --example analyze -- out/harmbench
//!
//! Re-runs the analysis of an existing run directory without the model: statistics, percentile
//! replay, `analysis.json`, `report.md`, `report.html` and the plots; prints the summary table.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use deepconf_eval::write_report;

/// Analyse a run directory written by harmbench, toxicchat, wildguardmix or compare.
#[derive(Debug, Parser)]
struct Cli {
    /// The run directory (holds run.json, predictions.jsonl and traces/).
    #[arg(default_value = "out/harmbench")]
    dir: PathBuf,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let (analysis, files) = write_report(&cli.dir)?;
    println!("{}", analysis.summary_table());
    if let Some(reason) = &analysis.replay.skipped {
        println!("percentile replay skipped: {reason}");
    }
    println!(
        "report: {} (and {}), {} plots in {}",
        files.markdown.display(),
        files.html.display(),
        analysis.plots.len(),
        files.plots.display()
    );
    Ok(())
}
