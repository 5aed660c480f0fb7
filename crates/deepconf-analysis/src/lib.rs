//! Safety analysis of DeepConf runs: the safety confusion matrix with bootstrap intervals, the
//! offline percentile replay of sampling policies, confidence stratification with hypothesis tests,
//! plots and a Markdown/HTML report, all from a run directory of [`deepconf_records`].
//!
//! # Quick start
//! Write a (tiny) run with [`deepconf_records::RunWriter`], then analyse its directory:
//! ```
//! use deepconf_analysis::{AnalysisOptions, Metric, analyze_dir};
//! use deepconf_core::policy::{Phase, PolicyConfig};
//! use deepconf_core::StopReason;
//! use deepconf_records::{InstanceRow, PartLimits, RunManifest, RunWriter, TraceRow};
//! use deepconf_refusal::RefusalLabel;
//!
//! let dir = tempfile::tempdir()?;
//! let mut manifest = RunManifest { name: "doc".into(), ..RunManifest::default() };
//! manifest.config.policy = PolicyConfig::fixed(1);
//! let mut writer = RunWriter::create(dir.path(), &manifest, PartLimits::instances(2))?;
//! for (i, (harmful, refused)) in [(true, true), (true, false), (false, false), (false, true)]
//!     .into_iter()
//!     .enumerate()
//! {
//!     let id = format!("q{i}");
//!     let label = if refused { RefusalLabel::Refusal } else { RefusalLabel::Compliance };
//!     let trace = TraceRow {
//!         instance_id: id.clone(), trace_index: 0, phase: Phase::Full, text: label.to_string(),
//!         n_tokens: 2, token_confidences: vec![2.0, 3.0 + i as f64], top_logprobs: None,
//!         stop_reason: StopReason::EndOfSequence, termination: None,
//!         mean_confidence: Some(2.5), lowest_group_confidence: Some(2.5 + i as f64 / 2.0),
//!         bottom_group_confidence: Some(2.5), tail_confidence: Some(2.5),
//!         refusal_label: Some(label), refusal_score: None, refusal_evidence: None, voted: true,
//!     };
//!     let instance = InstanceRow {
//!         instance_id: id, prompt: "...".into(), gold_harmful: Some(harmful), dataset: None,
//!         category: None, subcategory: None, adversarial: None, vote_winner: Some(label),
//!         vote_consensus: Some(1.0), voters: 1, behaviour_refused: Some(refused), traces_used: 1,
//!         tokens_generated: 2, finish_reason: serde_json::Value::Null, reference_refusal: None,
//!         reference_refusal_predicted: None,
//!     };
//!     writer.push(instance, vec![trace])?;
//! }
//! writer.finish()?;
//!
//! let options = AnalysisOptions { plots: false, ..AnalysisOptions::default() };
//! let analysis = analyze_dir(dir.path(), &options)?;
//! let m = analysis.safety.matrix;
//! assert_eq!((m.tp, m.fn_, m.fp, m.tn), (1, 1, 1, 1));
//! assert_eq!(analysis.safety.get(Metric::Sensitivity).value, Some(0.5));
//! assert!(dir.path().join("report.md").exists() && dir.path().join("analysis.json").exists());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//! - Reads a run directory written by the experiment engine ([`deepconf_records`]) once and
//!   computes everything from it.
//! - Safety confusion matrix (positive = harmful, predicted positive = refused) with sensitivity,
//!   specificity, precision, F1, accuracy and balanced accuracy: proportions with exact
//!   (Clopper-Pearson, default) or Wilson intervals ([`stats::ProportionInterval`]), F1 and balanced
//!   accuracy with a seeded percentile bootstrap; per category, subcategory and adversarial flag.
//! - Percentile replay ([`ReplaySet`]): every policy and threshold replayed on stored full traces
//!   with the live decision code; token savings counted in tokens.
//! - Confidence stratification ([`stratify()`]): the four confidence x behaviour buckets with a
//!   percentile threshold, the hypothesis tests (AUROC, Mann-Whitney U, Welch t, Cohen's d,
//!   bootstrap difference) with a plain verdict, and the unsafe-compliance rates of uncertain and
//!   confident compliances with Newcombe's score interval of their difference
//!   ([`stats::newcombe_difference`]).
//! - Findings ([`Findings`]): what the design can and cannot show (no refusals, no benign
//!   prompts), the refusal rate on harmful prompts, over-refusal on benign ones, each distinct
//!   hypothesis's verdict at its Holm-adjusted p-value (hypotheses that compare the same groups
//!   reported once), confidence beside prompt-only baselines (prompt length, source) with paired
//!   bootstrap differences, the best confidence metric only when its paired lead excludes 0, the
//!   cheapest replayed policy not shown to lose accuracy against the full-budget baseline, with
//!   the loss its paired interval still allows (uninformative when every policy decides alike),
//!   and early stopping (traces cut, consensus stops) per policy, as numbers in `analysis.json`
//!   and as the sentences that open the report.
//! - The live-vs-replay cross-check ([`cross_check`]): replaying a live run's policy on a fixed-N
//!   run's stored traces must give the live run's tokens, traces and votes.
//! - Metrics per source dataset of a mixture, category, subcategory and adversarial flag.
//! - Refusal-classifier agreement with gold reference labels ([`ReferenceScore`]).
//! - Plots (PNG + SVG, embedded font) and a report in Markdown and self-contained HTML, rendered
//!   from the [`Analysis`] alone (trace-evolution curves included), so `analysis.json` suffices to
//!   render it again.
//!
//! # Which type do I want?
//! | need | item |
//! |---|---|
//! | everything at once (files) | [`analyze_dir`] with [`AnalysisOptions`] |
//! | everything in memory | [`analyze_run`] -> [`Analysis`] |
//! | the report again from `analysis.json` alone (no records) | [`render_report`], [`build_report`] |
//! | a printable summary of one or several runs | [`Analysis::summary_table`], [`comparison_table`] |
//! | confusion matrix of your own labels | [`ConfusionMatrix`], [`SafetyMetrics`], [`Labelled`] |
//! | replay a policy on stored traces | [`ReplaySet`], [`ReplayPolicy`], [`standard_policies`] |
//! | check a live run against the replay | [`cross_check`], [`cross_check_dirs`] -> [`LiveCheck`] |
//! | what the run found, in numbers and words | [`Findings`] ([`Analysis::findings`]) |
//! | a statistic | [`stats`] (`auroc`, `mann_whitney_u`, `welch_t`, `cohens_d`, `bootstrap`, `clopper_pearson`, `wilson`, `holm`) |
//! | a plot of your own | [`plots::Plot`], [`plots::render`] |
#![deny(missing_docs)]

mod analysis;
mod confusion;
mod crosscheck;
mod error;
mod evolution;
mod findings;
mod output;
pub mod plots;
mod replay;
mod report;
mod separation;
pub mod stats;
mod stratify;

pub use analysis::{
    Analysis, AnalysisOptions, ReferenceScore, ReplaySection, RunOverview, analyze_run,
};
pub use confusion::{
    ConfusionMatrix, Coverage, GroupMetrics, Labelled, Metric, SafetyMetrics, labelled_outcomes,
    metrics_by,
};
pub use crosscheck::{InstanceMismatch, LiveCheck, TraceDivergence, cross_check, cross_check_dirs};
pub use error::{Error, Result};
pub use evolution::{EvolutionInstance, trailing_group_curve};
pub use findings::{
    Design, DesignLimit, EarlyStopping, Findings, HypothesisFinding, MetricLead, MetricSeparation,
    PolicyComparison, RateFinding, SourceFinding,
};
pub use output::{
    ANALYSIS_FILE, PLOTS_DIR, REPORT_HTML_FILE, REPORT_MD_FILE, analyze_dir, read_analysis,
    render_report,
};
pub use replay::{
    CONSENSUS_OFF, InstanceReplay, PolicyReplay, ReplayGrid, ReplayInstance, ReplayPolicy,
    ReplaySet, ReplayTrace, standard_policies,
};
pub use report::{Block, Document, build_report, comparison_table, trace_label_text};
pub use separation::{BaselineComparison, PromptBaseline};
pub use stratify::{
    Bucket, BucketSummary, ComplianceRisk, InstanceConfidence, Stratification, StratifyOptions,
    TwoGroupTest, Verdict, instance_confidence, metric_name, stratify, two_group_test,
};
