//! Run with: cargo run --release --example wildguardmix -- --data wildguard_test.parquet
//!
//! DeepConf on WildGuardMix (gold: `prompt_harm_label == "harmful"`), and the refusal classifier
//! scored against the dataset's own gold refusal labels (`response_refusal_label` of its reference
//! responses) on every labelled row of the file. Without `--data` the file comes from the deepconf
//! cache or the gated hub repo `allenai/wildguardmix` (needs `HF_TOKEN`).

use anyhow::Result;
use clap::Parser;
use deepconf_eval::datasets::Benchmark;
use deepconf_eval::{Defaults, EvalArgs, build_backend, build_classifier, score_classifier};

/// DeepConf on WildGuardMix, plus refusal-classifier scoring.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    eval: EvalArgs,
    /// Score the classifier on the run's instances only (default: every labelled row; a judge
    /// classifier is slow on the full file).
    #[arg(long)]
    score_run_instances_only: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let plan = cli.eval.plan(&Defaults::labelled("wildguardmix"))?;
    let dataset = cli.eval.load_dataset(Benchmark::WildGuardMix)?;
    let mut backend = build_backend(&cli.eval)?;
    let mut classifier = build_classifier(&cli.eval)?;
    let experiment = cli
        .eval
        .experiment(&plan, &dataset, &backend, &classifier)?;
    eprintln!(
        "wildguardmix: {} of {} prompts, writing {}",
        experiment.instances().len(),
        dataset.len(),
        plan.out.display()
    );
    let summary = cli
        .eval
        .run_and_report(&plan, &experiment, &mut backend, &mut classifier)?;
    println!("{summary}");

    let scored = if cli.score_run_instances_only {
        experiment.instances()
    } else {
        &dataset.instances
    };
    let path = plan.out.join("classifier_vs_gold.json");
    let evaluation = score_classifier(classifier.classifier.as_mut(), scored, Some(&path))?;
    println!(
        "refusal classifier `{}` against gold response_refusal_label ({} responses): {evaluation}\n\
         details: {}",
        classifier.classifier.name(),
        evaluation.n_scored(),
        path.display()
    );
    Ok(())
}
