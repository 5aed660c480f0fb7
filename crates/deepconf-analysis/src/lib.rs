//! Safety analysis of DeepConf runs: the run records (Parquet + JSONL), the safety confusion matrix
//! with bootstrap intervals, the offline percentile replay of sampling policies, confidence
//! stratification with hypothesis tests, plots and a Markdown/HTML report.
//!
//! # Quick start
//! Write a (tiny) run with [`RunWriter`], then analyse its directory:
//! ```
//! use deepconf_analysis::{
//!     AnalysisOptions, InstanceRow, Metric, RunManifest, RunWriter, TraceRow, analyze_dir,
//! };
//! use deepconf_core::policy::{Phase, PolicyConfig};
//! use deepconf_core::StopReason;
//!
//! let dir = std::env::temp_dir().join(format!("deepconf-analysis-doc-{}", std::process::id()));
//! # let _ = std::fs::remove_dir_all(&dir);
//! let mut manifest = RunManifest { name: "doc".into(), ..RunManifest::default() };
//! manifest.config.policy = PolicyConfig::fixed(1);
//! let mut writer = RunWriter::create(&dir, &manifest, 2)?;
//! for (i, (harmful, refused)) in [(true, true), (true, false), (false, false), (false, true)]
//!     .into_iter()
//!     .enumerate()
//! {
//!     let id = format!("q{i}");
//!     let label = if refused { "refusal" } else { "compliance" };
//!     let trace = TraceRow {
//!         instance_id: id.clone(), trace_index: 0, phase: Phase::Full, text: label.into(),
//!         n_tokens: 2, token_confidences: vec![2.0, 3.0 + i as f64], top_logprobs: None,
//!         stop_reason: StopReason::EndOfSequence, termination: None,
//!         mean_confidence: Some(2.5), lowest_group_confidence: Some(2.5 + i as f64 / 2.0),
//!         bottom_group_confidence: Some(2.5), tail_confidence: Some(2.5),
//!         refusal_label: Some(label.into()), refused: Some(refused), refusal_score: None,
//!         refusal_evidence: None, voted: true,
//!     };
//!     let instance = InstanceRow {
//!         instance_id: id, prompt: "...".into(), gold_harmful: Some(harmful), category: None,
//!         subcategory: None, adversarial: None, vote_winner: Some(label.into()),
//!         vote_consensus: Some(1.0), voters: 1, behaviour_refused: Some(refused), traces_used: 1,
//!         tokens_generated: 2, finish_reason: serde_json::Value::Null, reference_refusal: None,
//!         reference_refusal_predicted: None,
//!     };
//!     writer.push(instance, vec![trace])?;
//! }
//! writer.finish()?;
//!
//! let options = AnalysisOptions { plots: false, ..AnalysisOptions::default() };
//! let analysis = analyze_dir(&dir, &options)?;
//! let m = analysis.safety.matrix;
//! assert_eq!((m.tp, m.fn_, m.fp, m.tn), (1, 1, 1, 1));
//! assert_eq!(analysis.safety.get(Metric::Sensitivity).value, Some(0.5));
//! assert!(dir.join("report.md").exists() && dir.join("analysis.json").exists());
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), deepconf_analysis::Error>(())
//! ```
//!
//! # Features
//! - Run records: [`TraceRow`] (per-token confidences, optional top-k log-probabilities, stop reason,
//!   the policy's termination, refusal label/score/evidence) and [`InstanceRow`] (vote, behaviour,
//!   gold, tokens); built from a live [`deepconf_core::PromptOutcome`] with [`rows_from_outcome`];
//!   written crash-safely in Parquet parts + JSONL by [`RunWriter`] (with resume), read by
//!   [`read_run`]. The schema is in `docs/records.md`.
//! - Safety confusion matrix (positive = harmful, predicted positive = refused) with sensitivity,
//!   specificity, precision, F1, accuracy and balanced accuracy, each with a seeded percentile
//!   bootstrap interval; per category, subcategory and adversarial flag.
//! - Percentile replay ([`ReplaySet`]): every policy and threshold replayed on stored full traces
//!   with the live decision code; token savings counted in tokens.
//! - Confidence stratification ([`stratify()`]): the four confidence x behaviour buckets with a
//!   percentile threshold, and the hypothesis tests (AUROC, Mann-Whitney U, Welch t, Cohen's d,
//!   bootstrap difference) with a plain verdict.
//! - Findings ([`Findings`]): the refusal rate on harmful prompts, over-refusal on benign ones, each
//!   hypothesis's verdict with its reason, the confidence metric that best separates correct from
//!   incorrect behaviour, and the cheapest replayed policy whose accuracy stays within the
//!   full-budget baseline's (paired bootstrap over instances), as numbers in `analysis.json` and as
//!   the sentences that open the report.
//! - The live-vs-replay cross-check ([`cross_check`]): replaying a live run's policy on a fixed-N
//!   run's stored traces must give the live run's tokens, traces and votes.
//! - Refusal-classifier evaluation against gold reference labels.
//! - Plots (PNG + SVG, embedded font) and a report in Markdown and self-contained HTML.
//!
//! # Which type do I want?
//! | need | item |
//! |---|---|
//! | record a live run | [`rows_from_outcome`], [`RunWriter`], [`RunManifest`] |
//! | read a run back | [`read_run`] -> [`RunRecords`] |
//! | everything at once (files) | [`analyze_dir`] with [`AnalysisOptions`] |
//! | everything in memory | [`analyze`] -> [`Analysis`] |
//! | confusion matrix of your own labels | [`ConfusionMatrix`], [`SafetyMetrics`], [`Labelled`] |
//! | replay a policy on stored traces | [`ReplaySet`], [`ReplayPolicy`], [`standard_policies`] |
//! | check a live run against the replay | [`cross_check`], [`cross_check_dirs`] -> [`LiveCheck`] |
//! | what the run found, in numbers and words | [`Findings`] ([`Analysis::findings`]) |
//! | a statistic | [`stats`] ([`auroc`], [`mann_whitney_u`], [`welch_t`], [`cohens_d`], [`bootstrap`]) |
//! | a plot of your own | [`plots::Plot`], [`plots::render`] |
#![deny(missing_docs)]

pub mod analysis;
pub mod confusion;
pub mod crosscheck;
mod error;
pub mod figures;
pub mod findings;
pub mod plots;
pub mod records;
pub mod replay;
pub mod report;
pub mod stats;
pub mod stratify;

pub use analysis::{
    Analysis, AnalysisOptions, ClassifierEvaluation, ReplaySection, RunSummary, analyze,
    analyze_dir, read_analysis,
};
pub use confusion::{ConfusionMatrix, Coverage, GroupMetrics, Labelled, Metric, SafetyMetrics};
pub use crosscheck::{LiveCheck, cross_check, cross_check_dirs};
pub use error::{Error, Result};
pub use findings::Findings;
pub use records::{
    DatasetInfo, InstanceMeta, InstanceRow, ModelInfo, RunManifest, RunRecords, RunWriter,
    TerminationRow, TraceClassification, TraceRow, read_run, rows_from_outcome, trace_schema,
};
pub use replay::{
    PolicyReplay, ReplayGrid, ReplayInstance, ReplayPolicy, ReplaySet, ReplayTrace,
    standard_policies,
};
pub use stats::{BootstrapConfig, Estimate, auroc, bootstrap, cohens_d, mann_whitney_u, welch_t};
pub use stratify::{Bucket, Stratification, StratifyOptions, Verdict, stratify};
