//! The run records of deepconf-rs: one [`TraceRow`] per sampled trace, one [`InstanceRow`] per
//! benchmark instance, one [`RunManifest`] per run, their files, the crash-safe [`RunWriter`] and
//! the reader [`read_run`]. The experiment engine writes them; analysis and replay read them.
//!
//! A run directory holds
//! - `run.json`: the [`RunManifest`];
//! - `traces/part-NNNNN.parquet`: trace rows (see [`trace_schema`] and `docs/records.md`), one file
//!   per flushed group of instances, sized by [`PartLimits`];
//! - `predictions.jsonl`: one [`InstanceRow`] per line, appended only after the traces of those
//!   instances are durable in a part file;
//! - `failures.jsonl` (when some instance failed): one [`FailedInstance`] per line.
//!
//! # Quick start
//! ```
//! use deepconf_records::{
//!     InstanceRow, PartLimits, RunManifest, RunWriter, TraceRow, read_run,
//! };
//! use deepconf_core::StopReason;
//! use deepconf_core::policy::Phase;
//! use deepconf_refusal::RefusalLabel;
//!
//! let dir = tempfile::tempdir()?;
//! let manifest = RunManifest { name: "doc".into(), ..RunManifest::default() };
//! let mut writer = RunWriter::create(dir.path(), &manifest, PartLimits::default())?;
//! let trace = TraceRow {
//!     instance_id: "q1".into(), trace_index: 0, phase: Phase::Full, text: "I can't.".into(),
//!     n_tokens: 2, token_confidences: vec![2.0, 3.0], top_logprobs: None,
//!     stop_reason: StopReason::EndOfSequence, termination: None, mean_confidence: Some(2.5),
//!     lowest_group_confidence: Some(2.5), bottom_group_confidence: Some(2.5),
//!     tail_confidence: Some(2.5), refusal_label: Some(RefusalLabel::Refusal),
//!     refusal_score: Some(0.97), refusal_evidence: None, voted: true,
//! };
//! let instance = InstanceRow {
//!     instance_id: "q1".into(), prompt: "How do I pick a lock?".into(), gold_harmful: Some(true),
//!     dataset: None, category: None, subcategory: None, adversarial: None,
//!     vote_winner: Some(RefusalLabel::Refusal), vote_consensus: Some(1.0), voters: 1,
//!     behaviour_refused: Some(true), traces_used: 1, tokens_generated: 2,
//!     finish_reason: serde_json::Value::Null, reference_refusal: None,
//!     reference_refusal_predicted: None,
//! };
//! writer.push(instance, vec![trace])?;
//! writer.finish()?;
//!
//! let run = read_run(dir.path())?;
//! assert_eq!(run.instances[0].vote_winner, Some(RefusalLabel::Refusal));
//! assert_eq!(run.traces[0][0].refused(), Some(true));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Which type do I want?
//! | need | item |
//! |---|---|
//! | rows of a live prompt | [`rows_from_outcome`] ([`InstanceMeta`] + [`SafetyOutcome`]) |
//! | write a run, resume it | [`RunWriter`], [`PartLimits`], [`RunManifest`] |
//! | read a run back | [`read_run`] -> [`RunRecords`] |
//! | one file | [`read_traces_parquet`], [`write_traces_parquet`], [`read_predictions`], [`read_failures`] |
//! | failures | [`Error`] |
#![deny(missing_docs)]

mod classifier;
mod error;
mod manifest;
mod parquet;
mod reader;
mod rows;
mod writer;

pub use classifier::{ClassifierInfo, ClassifierKind, JudgeInfo};
pub use error::{Error, Result};
pub use manifest::{AdapterInfo, DatasetInfo, ModelInfo, RunManifest};
pub use parquet::{read_traces_parquet, trace_schema, traces_to_batch, write_traces_parquet};
pub use reader::{RunRecords, read_failures, read_predictions, read_run, trace_parts};
pub use rows::{
    FailedInstance, InstanceMeta, InstanceRow, SafetyOutcome, TerminationRow, TraceRow,
    rows_from_outcome,
};
pub use writer::{PartLimits, RunWriter};

/// File name of the run manifest.
pub const MANIFEST_FILE: &str = "run.json";
/// File name of the instance rows.
pub const PREDICTIONS_FILE: &str = "predictions.jsonl";
/// File name of the failed instances.
pub const FAILURES_FILE: &str = "failures.jsonl";
/// Directory of the trace part files.
pub const TRACES_DIR: &str = "traces";
