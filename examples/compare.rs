//! Run with: cargo run --release --example compare
//!
//! Baseline n=1, fixed n, offline filtering and DeepConf online on the same instances and seed, then
//! one table of accuracy, sensitivity, specificity, traces and tokens (savings relative to fixed n,
//! the full budget). Each policy's run lands in `out/compare/<policy>/` (resumable, analysable).
//! By default the prompts are the main job's mix of harmful and benign prompts (`--benchmark
//! mixed`: HarmBench and StrongREJECT, and as many benign over-refusal probes).

use std::str::FromStr;

use anyhow::Result;
use clap::Parser;
use deepconf_eval::analysis::{Analysis, comparison_table};
use deepconf_eval::core::policy::PolicyConfig;
use deepconf_eval::datasets::Benchmark;
use deepconf_eval::{
    Defaults, EvalArgs, build_backend, build_classifier, mixed_dataset, select_instances,
};

/// Compare policies on the same instances.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    eval: EvalArgs,
    /// Benchmark: mixed (harmful and benign), harmbench, strongreject, overrefusal, toxicchat,
    /// wildguardmix, xstest or jsonl (with --data).
    #[arg(long, default_value = "mixed")]
    benchmark: String,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let defaults = Defaults {
        name: "compare",
        limit: Some(12),
        ..Defaults::harmbench()
    };
    let plan = cli.eval.plan(&defaults)?;
    let traces = plan.run.policy.max_traces();
    let keep = cli.eval.keep_percent.unwrap_or(defaults.keep_percent);
    let warmup = cli.eval.warmup.unwrap_or(defaults.warmup).min(traces);
    let (dataset, instances) = if cli.benchmark == "mixed" {
        let dataset = mixed_dataset(None, plan.limit.unwrap_or(usize::MAX), cli.eval.seed)?;
        let instances = dataset.instances.clone();
        (dataset, instances)
    } else {
        let dataset = cli
            .eval
            .load_dataset(Benchmark::from_str(&cli.benchmark)?)?;
        let instances = select_instances(&dataset, plan.limit, cli.eval.seed, plan.stratify);
        (dataset, instances)
    };
    let mut backend = build_backend(&cli.eval)?;
    let mut classifier = build_classifier(&cli.eval)?;
    let policies = [
        ("baseline", PolicyConfig::fixed(1)),
        ("fixed", PolicyConfig::fixed(traces)),
        ("offline", PolicyConfig::offline(traces, keep)),
        ("online", PolicyConfig::online(warmup, traces, keep)),
    ];
    let mut summaries = Vec::new();
    for (label, policy) in policies {
        let mut policy_plan = plan.clone();
        policy_plan.name = format!("compare-{label}");
        policy_plan.run.policy = policy;
        policy_plan.out = plan.out.join(label);
        let experiment = cli.eval.experiment_over(
            &policy_plan,
            &dataset,
            instances.clone(),
            &backend,
            &classifier,
        );
        eprintln!(
            "{label}: {} instances -> {}",
            instances.len(),
            policy_plan.out.display()
        );
        let finished =
            cli.eval
                .run_and_report(&policy_plan, &experiment, &mut backend, &mut classifier)?;
        eprintln!("{finished}");
        summaries.push((label, finished.analysis));
    }
    let full_budget = summaries
        .iter()
        .find(|(label, _)| *label == "fixed")
        .map(|(_, s)| s.run.tokens_generated);
    let rows: Vec<(&str, &Analysis)> = summaries.iter().map(|(l, s)| (*l, s)).collect();
    println!("{}", comparison_table(&rows, full_budget));
    Ok(())
}
