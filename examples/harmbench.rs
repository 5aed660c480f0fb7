//! Run with: cargo run --release --example harmbench
//!
//! The main job: real HarmBench behaviours through the embedded SmolLM2-135M model under DeepConf
//! online, every trace labelled by the pattern refusal classifier; prints the refusal rate with
//! bootstrap intervals and writes the report and plots to `out/harmbench/`. Defaults (32 behaviours
//! stratified over functional categories, at most 8 traces of 128 tokens) finish in a few minutes
//! on 2 CPU cores. `cargo xtask fetch-model` and `cargo xtask fetch-data harmbench` place the model
//! and data; see `--help` for every flag.

use anyhow::Result;
use clap::Parser;
use deepconf_eval::datasets::Benchmark;
use deepconf_eval::{Defaults, EvalArgs, build_backend, build_classifier};

/// DeepConf on HarmBench: refusal rate, confidence and tokens.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    eval: EvalArgs,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let plan = cli.eval.plan(&Defaults::harmbench())?;
    let dataset = cli.eval.load_dataset(Benchmark::HarmBench)?;
    let mut backend = build_backend(&cli.eval)?;
    let mut classifier = build_classifier(&cli.eval)?;
    let experiment = cli
        .eval
        .experiment(&plan, &dataset, &backend, &classifier)?;
    eprintln!(
        "harmbench: {} of {} behaviours, model {}, writing {}",
        experiment.instances().len(),
        dataset.len(),
        backend.info.name,
        plan.out.display()
    );
    let summary = cli
        .eval
        .run_and_report(&plan, &experiment, &mut backend, &mut classifier)?;
    println!("{summary}");
    Ok(())
}
