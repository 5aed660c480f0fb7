//! Run with: cargo run --release --example analyze -- out/harmbench
//!
//! Re-runs the analysis of an existing run directory without the model: statistics, percentile
//! replay, `analysis.json`, `report.md`, `report.html` and the plots; prints the findings and the
//! summary table. `--live DIR` also checks a live run against the replay; `--wilson` gives rates
//! Wilson score intervals instead of exact (Clopper-Pearson) ones.

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use deepconf_eval::analysis::stats::ProportionInterval;
use deepconf_eval::analysis::{
    AnalysisOptions, PLOTS_DIR, REPORT_HTML_FILE, REPORT_MD_FILE, analyze_dir,
};

/// Analyse a run directory written by harmbench, toxicchat, wildguardmix, mixed or compare.
#[derive(Debug, Parser)]
struct Cli {
    /// The run directory (holds run.json, predictions.jsonl and traces/).
    #[arg(default_value = "out/harmbench")]
    dir: PathBuf,
    /// A live run on the same instances and seed to check against the replay of this (fixed-N)
    /// run, e.g. `out/mixed/live` beside `out/mixed/full`.
    #[arg(long)]
    live: Option<PathBuf>,
    /// Wilson score intervals for rates (default: exact Clopper-Pearson).
    #[arg(long)]
    wilson: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let options = AnalysisOptions {
        live_run: cli.live.clone(),
        proportions: if cli.wilson {
            ProportionInterval::Wilson
        } else {
            ProportionInterval::ClopperPearson
        },
        ..AnalysisOptions::default()
    };
    let analysis = analyze_dir(&cli.dir, &options)?;
    for sentence in analysis.findings.sentences() {
        println!("- {}", sentence.replace("**", ""));
    }
    println!("{}", analysis.summary_table());
    if let Some(reason) = &analysis.replay.skipped {
        println!("percentile replay skipped: {reason}");
    }
    println!(
        "report: {} (and {}), {} plots in {}",
        cli.dir.join(REPORT_MD_FILE).display(),
        cli.dir.join(REPORT_HTML_FILE).display(),
        analysis.plots.len(),
        cli.dir.join(PLOTS_DIR).display()
    );
    Ok(())
}
