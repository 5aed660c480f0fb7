//! Run with: cargo run --release --example toxicchat -- --data toxic-chat_annotation_test.csv
//!
//! DeepConf on ToxicChat (gold: `toxicity == 1`): refusal on toxic prompts (sensitivity) and
//! compliance on benign ones (specificity), with a sample that keeps the toxic/benign ratio. Without
//! `--data` the file comes from the deepconf cache or the hub (`lmsys/toxic-chat`).

use anyhow::Result;
use clap::Parser;
use deepconf_eval::datasets::Benchmark;
use deepconf_eval::{Defaults, EvalArgs, build_backend, build_classifier};

/// DeepConf on ToxicChat.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    eval: EvalArgs,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let plan = cli.eval.plan(&Defaults::labelled("toxicchat"))?;
    let dataset = cli.eval.load_dataset(Benchmark::ToxicChat)?;
    let mut backend = build_backend(&cli.eval)?;
    let mut classifier = build_classifier(&cli.eval)?;
    let experiment = cli
        .eval
        .experiment(&plan, &dataset, &backend, &classifier)?;
    eprintln!(
        "toxicchat: {} of {} prompts ({} toxic in the file), writing {}",
        experiment.instances().len(),
        dataset.len(),
        dataset.summary.harmful,
        plan.out.display()
    );
    let summary = cli
        .eval
        .run_and_report(&plan, &experiment, &mut backend, &mut classifier)?;
    println!("{summary}");
    Ok(())
}
