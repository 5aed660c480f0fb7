//! Run with: cargo run --release --example mixed
//!
//! The main job with harmful and benign prompts: 48 real prompts (12 HarmBench behaviours, 12
//! StrongREJECT forbidden prompts, 24 benign over-refusal probes) through the embedded SmolLM2-135M
//! model. Every instance gets 8 full traces once; the report replays every policy on them (fixed N,
//! n = 1, offline filtering, DeepConf online keeping 10-90%, the prototype's schedule), runs DeepConf
//! online live on the same instances and seed (without the consensus stop by default, so that the
//! confidence threshold cuts traces; `--consensus 0.95` restores it) to check that the replay's
//! tokens, votes and cut points equal the live run's, and opens with the findings. Writes `out/mixed/full/report.{md,html}` (and the live
//! run in `out/mixed/live/`). `cargo xtask fetch-model` and `cargo xtask fetch-data` place the model
//! and the data; `--policy` sets the live policy, `--traces` the full run's N, `--limit` the prompts.

use anyhow::Result;
use clap::Parser;
use deepconf_eval::analysis::CONSENSUS_OFF;
use deepconf_eval::core::policy::PolicyConfig;
use deepconf_eval::datasets::Dataset;
use deepconf_eval::{
    Backend, Defaults, EvalArgs, FullAndLive, FullAndLiveReport, GUARDED_MODEL, ModelSummary, Plan,
    PolicyKind, Stratify, build_backend, build_classifier, mixed_dataset, models_markdown,
    write_models_report,
};

/// DeepConf on harmful and benign prompts: full traces, every policy replayed, findings first.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    eval: EvalArgs,
    /// Skip the live run of `--policy` (and the live-vs-replay check).
    #[arg(long)]
    no_live: bool,
    /// Also run the guarded model (`--model guarded`) on the same prompts and seed into
    /// `OUT/guarded/` and put both side by side in `OUT/full/models.md`.
    #[arg(long)]
    guarded: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let defaults = Defaults {
        name: "mixed",
        limit: Some(48),
        traces: 8,
        warmup: 4,
        policy: PolicyKind::Online,
        keep_percent: 10.0,
        // Without the consensus stop the live DeepConf run samples all 8 traces, so the
        // confidence threshold set by the warmup cuts traces and the cross-check compares cut
        // points; with it, every instance stops after the warmup and nothing is cut.
        consensus: CONSENSUS_OFF,
        max_tokens: 96,
        stratify: Stratify::None,
    };
    let live = cli.eval.plan(&defaults)?;
    let mut full = live.clone();
    full.run.policy = PolicyConfig::fixed(live.run.policy.max_traces());
    let dataset = mixed_dataset(None, full.limit.unwrap_or(usize::MAX), cli.eval.seed)?;
    let mut backend = build_backend(&cli.eval)?;
    let mut classifier = build_classifier(&cli.eval)?;
    let experiment = cli.eval.experiment_over(
        &full,
        &dataset,
        dataset.instances.clone(),
        &backend,
        &classifier,
    );
    let mut pairing = FullAndLive::new(experiment)?.stop_on_ctrl_c();
    if !cli.no_live {
        pairing = pairing.live(live.run.policy.clone())?;
    }
    eprintln!(
        "mixed: {} prompts ({} harmful, {} benign), model {}, writing {}",
        dataset.len(),
        dataset.summary.harmful,
        dataset.summary.benign,
        backend.info.name,
        full.out.display()
    );
    let report = pairing.run(
        backend.model.as_mut(),
        classifier.classifier.as_mut(),
        &full.out,
    )?;
    for sentence in report.analysis.findings.sentences() {
        println!("- {}", sentence.replace("**", ""));
    }
    println!("{}", report.analysis.summary_table());
    println!(
        "report: {} (and {}), plots in {}",
        report.files.markdown.display(),
        report.files.html.display(),
        report.files.plots.display()
    );
    if cli.guarded {
        run_guarded(&cli.eval, &full, &live, &dataset, &backend, &report)?;
    }
    Ok(())
}

/// Runs the guarded model's full traces on the same prompts and seed, then writes `models.md`.
fn run_guarded(
    eval: &EvalArgs,
    full: &Plan,
    live: &Plan,
    dataset: &Dataset,
    base: &Backend,
    base_report: &FullAndLiveReport,
) -> Result<()> {
    let mut args = eval.clone();
    args.model = Some(GUARDED_MODEL.into());
    let mut guarded = build_backend(&args)?;
    let mut classifier = build_classifier(&args)?;
    let mut plan = full.clone();
    plan.out = full.out.join("guarded");
    let experiment = args.experiment_over(
        &plan,
        dataset,
        dataset.instances.clone(),
        &guarded,
        &classifier,
    );
    eprintln!("mixed: the same prompts through {}", guarded.info.name);
    let report = FullAndLive::new(experiment)?.stop_on_ctrl_c().run(
        guarded.model.as_mut(),
        classifier.classifier.as_mut(),
        &plan.out,
    )?;
    let models = [
        ModelSummary::from_analysis("base", &base.info, &base_report.analysis, &live.run.policy),
        ModelSummary::from_analysis("guarded", &guarded.info, &report.analysis, &live.run.policy),
    ];
    let path = write_models_report(&base_report.full_dir, &models, dataset.len(), eval.seed)?;
    println!("{}", models_markdown(&models, dataset.len(), eval.seed));
    println!("models side by side: {}", path.display());
    Ok(())
}
