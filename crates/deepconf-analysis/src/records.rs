//! Run records: one [`TraceRow`] per sampled trace, one [`InstanceRow`] per benchmark instance, one
//! [`RunManifest`] per run, and their files (see `docs/records.md` for the layout and schema).
//!
//! A run directory holds
//! - `run.json`: the [`RunManifest`];
//! - `traces/part-NNNNN.parquet`: trace rows, one file per flushed group of instances (see
//!   [`trace_schema`]);
//! - `predictions.jsonl`: one [`InstanceRow`] per line, appended only after the traces of those
//!   instances are durable in a part file.
//!
//! [`RunWriter`] writes a run so that killing the process loses at most the instances buffered since
//! the last flush, and [`RunWriter::resume`] continues one. [`read_run`] reads it back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float32Builder, Float64Builder, ListBuilder, StringBuilder, UInt32Builder,
};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Float32Array, Float64Array, ListArray, RecordBatch, StringArray,
    UInt32Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use deepconf_core::confidence::ConfidenceConfig;
use deepconf_core::policy::Phase;
use deepconf_core::{PromptOutcome, RunConfig, StopReason, TraceRecord};

use crate::error::{Error, Result, io_error};

/// File name of the run manifest.
pub const MANIFEST_FILE: &str = "run.json";
/// File name of the instance rows.
pub const PREDICTIONS_FILE: &str = "predictions.jsonl";
/// Directory of the trace part files.
pub const TRACES_DIR: &str = "traces";
/// Label a refusal classifier gives a refusal (as in `deepconf-refusal`).
pub const REFUSAL_LABEL: &str = "refusal";
/// Label a refusal classifier gives a compliance.
pub const COMPLIANCE_LABEL: &str = "compliance";

/// Whether a trace answer label means "refused": `Some(true)` for `refusal`, `Some(false)` for
/// `compliance`, `None` for anything else.
pub fn label_is_refusal(label: &str) -> Option<bool> {
    match label {
        REFUSAL_LABEL => Some(true),
        COMPLIANCE_LABEL => Some(false),
        _ => None,
    }
}

/// Where and why the policy cut a trace short (the live run's [`deepconf_core::Termination`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TerminationRow {
    /// Group confidence of the window that fell below the threshold.
    pub group_confidence: f64,
    /// The threshold in force.
    pub threshold: f64,
    /// Tokens generated when the trace was cut.
    pub at_token: u32,
}

/// One sampled trace. Stored in `traces/part-*.parquet`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceRow {
    /// Benchmark instance the trace answers.
    pub instance_id: String,
    /// Index of the trace within the instance (its seed derives from it).
    pub trace_index: u32,
    /// Schedule phase the trace was sampled in.
    pub phase: Phase,
    /// Generated text.
    pub text: String,
    /// Generated tokens.
    pub n_tokens: u32,
    /// DeepConf token confidence of every generated token (over the run's `top_k`), as computed live
    /// (f64, so that a replay takes bit-identical decisions).
    pub token_confidences: Vec<f64>,
    /// Top-k log-probabilities per token, only with `--store-logprobs`.
    pub top_logprobs: Option<Vec<Vec<f32>>>,
    /// Why generation ended.
    pub stop_reason: StopReason,
    /// Present when the policy terminated the trace.
    pub termination: Option<TerminationRow>,
    /// Mean token confidence (`None` for an empty trace).
    pub mean_confidence: Option<f64>,
    /// Lowest sliding-window group confidence.
    pub lowest_group_confidence: Option<f64>,
    /// Bottom-p group confidence.
    pub bottom_group_confidence: Option<f64>,
    /// Tail confidence.
    pub tail_confidence: Option<f64>,
    /// The trace's answer: the refusal classifier's label (`refusal`/`compliance`), `None` when the
    /// classifier gave none.
    pub refusal_label: Option<String>,
    /// Whether the label means a refusal (`None` when unknown).
    pub refused: Option<bool>,
    /// The classifier's score, when it has one.
    pub refusal_score: Option<f64>,
    /// The classifier's evidence, as a JSON string (matched patterns, judge output, ...).
    pub refusal_evidence: Option<String>,
    /// True when the trace's ballot counted in the instance's vote.
    pub voted: bool,
}

/// Refusal-classifier output for one trace, as plain fields (this crate does not depend on the
/// classifier crate).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TraceClassification {
    /// Whether the trace refused (`None` when the classifier could not tell).
    pub refused: Option<bool>,
    /// The classifier's score.
    pub score: Option<f64>,
    /// Evidence as a JSON string.
    pub evidence: Option<String>,
}

impl TraceRow {
    /// A row from a live run's trace record. `voted` says whether its ballot counted; `top_k` is
    /// the run's confidence `top_k`; `store_logprobs` keeps the top-k log-probabilities.
    pub fn from_record(
        instance_id: &str,
        record: &TraceRecord,
        top_k: usize,
        voted: bool,
        store_logprobs: bool,
        classification: &TraceClassification,
    ) -> Self {
        let trace = &record.trace;
        let summary = record.confidence;
        let refused = classification
            .refused
            .or_else(|| record.answer.as_deref().and_then(label_is_refusal));
        Self {
            instance_id: instance_id.to_string(),
            trace_index: trace.spec.index as u32,
            phase: record.phase,
            text: trace.text.clone(),
            n_tokens: trace.n_tokens() as u32,
            token_confidences: trace.token_confidences(top_k),
            top_logprobs: store_logprobs
                .then(|| trace.steps.iter().map(|s| s.top_logprobs.clone()).collect()),
            stop_reason: trace.stop_reason,
            termination: record.termination.map(|t| TerminationRow {
                group_confidence: t.group_confidence,
                threshold: t.threshold,
                at_token: t.at_token as u32,
            }),
            mean_confidence: summary.map(|s| s.mean),
            lowest_group_confidence: summary.map(|s| s.lowest_group),
            bottom_group_confidence: summary.map(|s| s.bottom_group),
            tail_confidence: summary.map(|s| s.tail),
            refusal_label: record.answer.clone(),
            refused,
            refusal_score: classification.score,
            refusal_evidence: classification.evidence.clone(),
            voted,
        }
    }

    /// True when the policy cut this trace short.
    pub fn is_terminated(&self) -> bool {
        self.termination.is_some() || self.stop_reason == StopReason::Terminated
    }
}

/// What the run knows about a benchmark instance besides the model's behaviour (plain fields so this
/// crate needs no dataset crate).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceMeta {
    /// Instance id, unique within the run.
    pub instance_id: String,
    /// The prompt text (user message).
    pub prompt: String,
    /// Gold label: is the prompt harmful? `None` when the dataset has no label.
    pub gold_harmful: Option<bool>,
    /// Category, when the dataset has one.
    pub category: Option<String>,
    /// Subcategory, when the dataset has one.
    pub subcategory: Option<String>,
    /// Adversarial (jailbreak) flag, when the dataset has one.
    pub adversarial: Option<bool>,
    /// Gold refusal label of the dataset's own reference response (WildGuardMix
    /// `response_refusal_label`), used to evaluate refusal classifiers.
    pub reference_refusal: Option<bool>,
    /// The run's classifier applied to the reference response.
    pub reference_refusal_predicted: Option<bool>,
}

/// One benchmark instance with the model's behaviour. One line of `predictions.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceRow {
    /// Instance id.
    pub instance_id: String,
    /// Prompt text.
    pub prompt: String,
    /// Gold: harmful prompt?
    pub gold_harmful: Option<bool>,
    /// Category.
    pub category: Option<String>,
    /// Subcategory.
    pub subcategory: Option<String>,
    /// Adversarial flag.
    pub adversarial: Option<bool>,
    /// The winning answer of the vote (`None` when no trace voted).
    pub vote_winner: Option<String>,
    /// Weighted consensus of the vote `V(best)/Σ V`.
    pub vote_consensus: Option<f64>,
    /// Traces whose ballot counted.
    pub voters: u32,
    /// Behaviour: did the model refuse? (`None` when no trace voted or the winner is not a
    /// refusal/compliance label).
    pub behaviour_refused: Option<bool>,
    /// Traces sampled.
    pub traces_used: u32,
    /// Tokens generated over all traces (terminated traces count the tokens they produced).
    pub tokens_generated: u64,
    /// Why sampling stopped, as JSON (`deepconf_core::policy::FinishReason`).
    pub finish_reason: serde_json::Value,
    /// Gold refusal label of the dataset's reference response.
    pub reference_refusal: Option<bool>,
    /// The run's classifier on the reference response.
    pub reference_refusal_predicted: Option<bool>,
}

impl InstanceRow {
    /// True when the behaviour is the correct one (refuse iff harmful); `None` when gold or
    /// behaviour is unknown.
    pub fn correct(&self) -> Option<bool> {
        Some(self.gold_harmful? == self.behaviour_refused?)
    }
}

/// Rows of one instance from a live run's outcome: the instance row and one trace row per trace.
/// `classifications[i]` belongs to trace `i` (missing entries mean "no details"); `top_k` is the
/// run's confidence `top_k`.
pub fn rows_from_outcome(
    meta: &InstanceMeta,
    outcome: &PromptOutcome,
    confidence: &ConfidenceConfig,
    store_logprobs: bool,
    classifications: &[TraceClassification],
) -> (InstanceRow, Vec<TraceRow>) {
    let voters: HashSet<usize> = outcome.decision.voters.iter().copied().collect();
    let empty = TraceClassification::default();
    let traces: Vec<TraceRow> = outcome
        .traces
        .iter()
        .enumerate()
        .map(|(i, record)| {
            TraceRow::from_record(
                &meta.instance_id,
                record,
                confidence.top_k,
                voters.contains(&record.trace.spec.index),
                store_logprobs,
                classifications.get(i).unwrap_or(&empty),
            )
        })
        .collect();
    let vote = outcome.decision.vote.as_ref();
    let winner = vote.map(|v| v.winner.clone());
    let behaviour_refused = winner.as_deref().and_then(|w| {
        traces
            .iter()
            .find(|t| t.voted && t.refusal_label.as_deref() == Some(w))
            .and_then(|t| t.refused)
            .or_else(|| label_is_refusal(w))
    });
    let instance = InstanceRow {
        instance_id: meta.instance_id.clone(),
        prompt: meta.prompt.clone(),
        gold_harmful: meta.gold_harmful,
        category: meta.category.clone(),
        subcategory: meta.subcategory.clone(),
        adversarial: meta.adversarial,
        vote_winner: winner,
        vote_consensus: vote.map(|v| v.consensus()),
        voters: outcome.decision.voters.len() as u32,
        behaviour_refused,
        traces_used: outcome.traces.len() as u32,
        tokens_generated: outcome.tokens_generated as u64,
        finish_reason: serde_json::to_value(&outcome.finish).unwrap_or(serde_json::Value::Null),
        reference_refusal: meta.reference_refusal,
        reference_refusal_predicted: meta.reference_refusal_predicted,
    };
    (instance, traces)
}

/// The model that was run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelInfo {
    /// Human-readable name (e.g. `SmolLM2-135M-Instruct Q4_1`).
    pub name: String,
    /// Backend (`candle`, `openai`, ...).
    pub backend: String,
    /// Model file name or URL (no machine-specific directory is needed).
    pub source: String,
    /// SHA-256 of the model file, hex.
    pub sha256: Option<String>,
}

/// The dataset that was run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatasetInfo {
    /// Name (`toxicchat`, `wildguardmix`, `harmbench`, ...).
    pub name: String,
    /// Split or subset.
    pub split: Option<String>,
    /// Instances selected for the run.
    pub instances: usize,
    /// SHA-256 of the dataset file(s), hex, when known.
    pub sha256: Option<String>,
}

/// `run.json`: everything needed to reproduce and interpret a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunManifest {
    /// Run name.
    pub name: String,
    /// Creation time (RFC 3339), as given by the driver.
    pub created_at: Option<String>,
    /// The model.
    pub model: ModelInfo,
    /// The dataset.
    pub dataset: DatasetInfo,
    /// Policy, confidence and sampling configuration (the base seed is `config.sampling.seed`).
    pub config: RunConfig,
    /// The refusal classifier's name and settings.
    pub classifier: serde_json::Value,
    /// Other seeds used (e.g. instance sampling).
    pub seeds: BTreeMap<String, u64>,
    /// Versions of the crates and tools involved.
    pub versions: BTreeMap<String, String>,
    /// Whether top-k log-probabilities are stored in the trace rows.
    pub store_logprobs: bool,
    /// Anything else the driver wants to keep (command line, ...).
    pub extra: serde_json::Value,
}

impl RunManifest {
    /// Writes `run.json` in `dir` (pretty JSON).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_FILE);
        let json = serde_json::to_string_pretty(self).map_err(|e| Error::Json {
            path: path.clone(),
            line: None,
            message: e.to_string(),
        })?;
        write_atomically(&path, json.as_bytes())
    }

    /// Reads `run.json` from `dir`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&path).map_err(io_error(&path))?;
        serde_json::from_str(&text).map_err(|e| Error::Json {
            path,
            line: Some(e.line()),
            message: e.to_string(),
        })
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
        file.write_all(bytes).map_err(io_error(&tmp))?;
        file.sync_all().map_err(io_error(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_error(path))
}

/// The Arrow schema of `traces/part-*.parquet` (documented column by column in `docs/records.md`).
pub fn trace_schema() -> SchemaRef {
    let f64_list = DataType::List(Arc::new(Field::new("item", DataType::Float64, true)));
    let f32_list = DataType::List(Arc::new(Field::new("item", DataType::Float32, true)));
    let f32_list_list = DataType::List(Arc::new(Field::new("item", f32_list, true)));
    Arc::new(Schema::new(vec![
        Field::new("instance_id", DataType::Utf8, false),
        Field::new("trace_index", DataType::UInt32, false),
        Field::new("phase", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
        Field::new("n_tokens", DataType::UInt32, false),
        Field::new("token_confidences", f64_list, false),
        Field::new("top_logprobs", f32_list_list, true),
        Field::new("stop_reason", DataType::Utf8, false),
        Field::new("termination_group_confidence", DataType::Float64, true),
        Field::new("termination_threshold", DataType::Float64, true),
        Field::new("termination_at_token", DataType::UInt32, true),
        Field::new("mean_confidence", DataType::Float64, true),
        Field::new("lowest_group_confidence", DataType::Float64, true),
        Field::new("bottom_group_confidence", DataType::Float64, true),
        Field::new("tail_confidence", DataType::Float64, true),
        Field::new("refusal_label", DataType::Utf8, true),
        Field::new("refused", DataType::Boolean, true),
        Field::new("refusal_score", DataType::Float64, true),
        Field::new("refusal_evidence", DataType::Utf8, true),
        Field::new("voted", DataType::Boolean, false),
    ]))
}

fn enum_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Trace rows as one Arrow record batch of [`trace_schema`].
pub fn traces_to_batch(rows: &[TraceRow]) -> Result<RecordBatch> {
    let mut instance_id = StringBuilder::new();
    let mut trace_index = UInt32Builder::new();
    let mut phase = StringBuilder::new();
    let mut text = StringBuilder::new();
    let mut n_tokens = UInt32Builder::new();
    let mut confidences = ListBuilder::new(Float64Builder::new());
    let mut top = ListBuilder::new(ListBuilder::new(Float32Builder::new()));
    let mut stop_reason = StringBuilder::new();
    let mut term_group = Float64Builder::new();
    let mut term_threshold = Float64Builder::new();
    let mut term_at = UInt32Builder::new();
    let mut mean = Float64Builder::new();
    let mut lowest = Float64Builder::new();
    let mut bottom = Float64Builder::new();
    let mut tail = Float64Builder::new();
    let mut label = StringBuilder::new();
    let mut refused = BooleanBuilder::new();
    let mut score = Float64Builder::new();
    let mut evidence = StringBuilder::new();
    let mut voted = BooleanBuilder::new();
    for row in rows {
        instance_id.append_value(&row.instance_id);
        trace_index.append_value(row.trace_index);
        phase.append_value(enum_name(&row.phase));
        text.append_value(&row.text);
        n_tokens.append_value(row.n_tokens);
        confidences.values().append_slice(&row.token_confidences);
        confidences.append(true);
        match &row.top_logprobs {
            Some(steps) => {
                for step in steps {
                    top.values().values().append_slice(step);
                    top.values().append(true);
                }
                top.append(true);
            }
            None => top.append(false),
        }
        stop_reason.append_value(row.stop_reason.as_str());
        term_group.append_option(row.termination.map(|t| t.group_confidence));
        term_threshold.append_option(row.termination.map(|t| t.threshold));
        term_at.append_option(row.termination.map(|t| t.at_token));
        mean.append_option(row.mean_confidence);
        lowest.append_option(row.lowest_group_confidence);
        bottom.append_option(row.bottom_group_confidence);
        tail.append_option(row.tail_confidence);
        label.append_option(row.refusal_label.as_deref());
        refused.append_option(row.refused);
        score.append_option(row.refusal_score);
        evidence.append_option(row.refusal_evidence.as_deref());
        voted.append_value(row.voted);
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(instance_id.finish()),
        Arc::new(trace_index.finish()),
        Arc::new(phase.finish()),
        Arc::new(text.finish()),
        Arc::new(n_tokens.finish()),
        Arc::new(confidences.finish()),
        Arc::new(top.finish()),
        Arc::new(stop_reason.finish()),
        Arc::new(term_group.finish()),
        Arc::new(term_threshold.finish()),
        Arc::new(term_at.finish()),
        Arc::new(mean.finish()),
        Arc::new(lowest.finish()),
        Arc::new(bottom.finish()),
        Arc::new(tail.finish()),
        Arc::new(label.finish()),
        Arc::new(refused.finish()),
        Arc::new(score.finish()),
        Arc::new(evidence.finish()),
        Arc::new(voted.finish()),
    ];
    RecordBatch::try_new(trace_schema(), columns).map_err(|e| Error::Parquet {
        path: PathBuf::from("<in memory>"),
        message: e.to_string(),
    })
}

/// Writes trace rows to one parquet file (snappy), atomically: the rows go
/// to `<path>.tmp` first, which is renamed once complete.
pub fn write_traces_parquet(path: &Path, rows: &[TraceRow]) -> Result<()> {
    let parquet_error = |message: String| Error::Parquet {
        path: path.to_path_buf(),
        message,
    };
    let batch = traces_to_batch(rows)?;
    let tmp = path.with_extension("parquet.tmp");
    let file = File::create(&tmp).map_err(io_error(&tmp))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(4096))
        .build();
    let mut writer = ArrowWriter::try_new(file, trace_schema(), Some(props))
        .map_err(|e| parquet_error(e.to_string()))?;
    writer
        .write(&batch)
        .map_err(|e| parquet_error(e.to_string()))?;
    let file = writer
        .into_inner()
        .map_err(|e| parquet_error(e.to_string()))?;
    file.sync_all().map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))
}

struct Columns<'a> {
    batch: &'a RecordBatch,
    path: &'a Path,
}

impl<'a> Columns<'a> {
    fn get<T: Array + 'static>(&self, name: &str) -> Result<&'a T> {
        let column = self
            .batch
            .column_by_name(name)
            .ok_or_else(|| Error::Column {
                path: self.path.to_path_buf(),
                column: name.to_string(),
                row: None,
                reason: "missing".into(),
            })?;
        column
            .as_any()
            .downcast_ref::<T>()
            .ok_or_else(|| Error::Column {
                path: self.path.to_path_buf(),
                column: name.to_string(),
                row: None,
                reason: format!("unexpected type {}", column.data_type()),
            })
    }

    fn optional<T: Array + 'static>(&self, name: &str) -> Result<Option<&'a T>> {
        if self.batch.column_by_name(name).is_none() {
            return Ok(None);
        }
        self.get(name).map(Some)
    }
}

fn opt_f64(array: &Float64Array, row: usize) -> Option<f64> {
    array.is_valid(row).then(|| array.value(row))
}

fn parse_enum<T: for<'de> Deserialize<'de>>(
    value: &str,
    path: &Path,
    column: &str,
    row: usize,
) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(value.to_string())).map_err(|_| {
        Error::Column {
            path: path.to_path_buf(),
            column: column.to_string(),
            row: Some(row),
            reason: format!("unknown value `{value}`"),
        }
    })
}

/// Reads every trace row of one parquet file.
pub fn read_traces_parquet(path: &Path) -> Result<Vec<TraceRow>> {
    let parquet_error = |message: String| Error::Parquet {
        path: path.to_path_buf(),
        message,
    };
    let file = File::open(path).map_err(io_error(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| parquet_error(e.to_string()))?
        .build()
        .map_err(|e| parquet_error(e.to_string()))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| parquet_error(e.to_string()))?;
        let first_row = rows.len();
        let c = Columns {
            batch: &batch,
            path,
        };
        let instance_id = c.get::<StringArray>("instance_id")?;
        let trace_index = c.get::<UInt32Array>("trace_index")?;
        let phase = c.get::<StringArray>("phase")?;
        let text = c.get::<StringArray>("text")?;
        let n_tokens = c.get::<UInt32Array>("n_tokens")?;
        let confidences = c.get::<ListArray>("token_confidences")?;
        let confidence_values = confidences
            .values()
            .as_any()
            .downcast_ref::<Float64Array>()
            .ok_or_else(|| Error::Column {
                path: path.to_path_buf(),
                column: "token_confidences".into(),
                row: None,
                reason: "items must be float64".into(),
            })?;
        let top = c.optional::<ListArray>("top_logprobs")?;
        let stop_reason = c.get::<StringArray>("stop_reason")?;
        let term_group = c.get::<Float64Array>("termination_group_confidence")?;
        let term_threshold = c.get::<Float64Array>("termination_threshold")?;
        let term_at = c.get::<UInt32Array>("termination_at_token")?;
        let mean = c.get::<Float64Array>("mean_confidence")?;
        let lowest = c.get::<Float64Array>("lowest_group_confidence")?;
        let bottom = c.get::<Float64Array>("bottom_group_confidence")?;
        let tail = c.get::<Float64Array>("tail_confidence")?;
        let label = c.get::<StringArray>("refusal_label")?;
        let refused = c.get::<BooleanArray>("refused")?;
        let score = c.get::<Float64Array>("refusal_score")?;
        let evidence = c.get::<StringArray>("refusal_evidence")?;
        let voted = c.get::<BooleanArray>("voted")?;
        let offsets = confidences.value_offsets();
        for row in 0..batch.num_rows() {
            let file_row = first_row + row;
            let conf = confidence_values.values()[offsets[row] as usize..offsets[row + 1] as usize]
                .to_vec();
            let top_logprobs = match top {
                Some(top) if top.is_valid(row) => {
                    let steps = top.value(row);
                    let steps = steps.as_any().downcast_ref::<ListArray>().ok_or_else(|| {
                        Error::Column {
                            path: path.to_path_buf(),
                            column: "top_logprobs".into(),
                            row: Some(file_row),
                            reason: "must be a list of lists of float32".into(),
                        }
                    })?;
                    let mut out = Vec::with_capacity(steps.len());
                    for step in 0..steps.len() {
                        let values = steps.value(step);
                        let values =
                            values
                                .as_any()
                                .downcast_ref::<Float32Array>()
                                .ok_or_else(|| Error::Column {
                                    path: path.to_path_buf(),
                                    column: "top_logprobs".into(),
                                    row: Some(file_row),
                                    reason: "items must be float32".into(),
                                })?;
                        out.push(values.values().to_vec());
                    }
                    Some(out)
                }
                _ => None,
            };
            let termination =
                (term_group.is_valid(row) && term_threshold.is_valid(row) && term_at.is_valid(row))
                    .then(|| TerminationRow {
                        group_confidence: term_group.value(row),
                        threshold: term_threshold.value(row),
                        at_token: term_at.value(row),
                    });
            let n = n_tokens.value(row);
            if n as usize != conf.len() {
                return Err(Error::Column {
                    path: path.to_path_buf(),
                    column: "token_confidences".into(),
                    row: Some(file_row),
                    reason: format!("{} values for n_tokens = {n}", conf.len()),
                });
            }
            rows.push(TraceRow {
                instance_id: instance_id.value(row).to_string(),
                trace_index: trace_index.value(row),
                phase: parse_enum(phase.value(row), path, "phase", file_row)?,
                text: text.value(row).to_string(),
                n_tokens: n,
                token_confidences: conf,
                top_logprobs,
                stop_reason: parse_enum(stop_reason.value(row), path, "stop_reason", file_row)?,
                termination,
                mean_confidence: opt_f64(mean, row),
                lowest_group_confidence: opt_f64(lowest, row),
                bottom_group_confidence: opt_f64(bottom, row),
                tail_confidence: opt_f64(tail, row),
                refusal_label: label.is_valid(row).then(|| label.value(row).to_string()),
                refused: refused.is_valid(row).then(|| refused.value(row)),
                refusal_score: opt_f64(score, row),
                refusal_evidence: evidence
                    .is_valid(row)
                    .then(|| evidence.value(row).to_string()),
                voted: voted.value(row),
            });
        }
    }
    Ok(rows)
}

/// Reads `predictions.jsonl`. A truncated last line (a write cut by a kill) is ignored when
/// `tolerate_truncated_tail` is true; any other bad line is an error naming its line number.
pub fn read_predictions(path: &Path, tolerate_truncated_tail: bool) -> Result<Vec<InstanceRow>> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut rows = Vec::new();
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<std::io::Result<_>>()
        .map_err(io_error(path))?;
    let last = lines.len();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<InstanceRow>(line) {
            Ok(row) => rows.push(row),
            Err(e) if tolerate_truncated_tail && i + 1 == last && e.is_eof() => break,
            Err(e) => {
                return Err(Error::Json {
                    path: path.to_path_buf(),
                    line: Some(i + 1),
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(rows)
}

/// The trace part files of a run directory, in order (`.tmp` files of an interrupted write are
/// ignored).
pub fn trace_parts(dir: &Path) -> Result<Vec<PathBuf>> {
    let traces = dir.join(TRACES_DIR);
    if !traces.exists() {
        return Ok(Vec::new());
    }
    let mut parts: Vec<PathBuf> = fs::read_dir(&traces)
        .map_err(io_error(&traces))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "parquet")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("part-"))
        })
        .collect();
    parts.sort();
    Ok(parts)
}

/// A run read back from its directory.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecords {
    /// `run.json`.
    pub manifest: RunManifest,
    /// Instance rows, in file order.
    pub instances: Vec<InstanceRow>,
    /// Trace rows of each instance, in trace-index order, parallel to `instances`.
    pub traces: Vec<Vec<TraceRow>>,
}

impl RunRecords {
    /// Total trace rows.
    pub fn n_traces(&self) -> usize {
        self.traces.iter().map(Vec::len).sum()
    }
}

/// Reads a run directory: `run.json`, `predictions.jsonl` (tolerating a truncated last line) and
/// every trace part. Traces of instances missing from `predictions.jsonl` (written just before a
/// kill) are dropped; when a resumed run wrote an instance's traces twice, the later part wins.
pub fn read_run(dir: &Path) -> Result<RunRecords> {
    let manifest = RunManifest::read(dir)?;
    let predictions = dir.join(PREDICTIONS_FILE);
    let mut instances = read_predictions(&predictions, true)?;
    // A resumed run may repeat an instance: keep the last row.
    let mut position: HashMap<String, usize> = HashMap::new();
    let mut deduplicated: Vec<InstanceRow> = Vec::with_capacity(instances.len());
    for row in instances.drain(..) {
        match position.get(&row.instance_id) {
            Some(&i) => deduplicated[i] = row,
            None => {
                position.insert(row.instance_id.clone(), deduplicated.len());
                deduplicated.push(row);
            }
        }
    }
    let instances = deduplicated;
    let mut traces: Vec<BTreeMap<u32, TraceRow>> = vec![BTreeMap::new(); instances.len()];
    for part in trace_parts(dir)? {
        let mut by_instance: HashMap<usize, Vec<TraceRow>> = HashMap::new();
        for row in read_traces_parquet(&part)? {
            if let Some(&i) = position.get(&row.instance_id) {
                by_instance.entry(i).or_default().push(row);
            }
        }
        for (i, rows) in by_instance {
            // A later part replaces an instance's traces as a whole.
            traces[i] = rows.into_iter().map(|r| (r.trace_index, r)).collect();
        }
    }
    Ok(RunRecords {
        manifest,
        instances,
        traces: traces
            .into_iter()
            .map(|m| m.into_values().collect())
            .collect(),
    })
}

/// Writes a run directory incrementally.
///
/// [`push`](Self::push) buffers one instance; every `instances_per_part` instances (and on
/// [`finish`](Self::finish)) the buffered traces go to a new `traces/part-NNNNN.parquet` (atomic
/// rename) and only then are their instance rows appended to `predictions.jsonl` and synced. A kill
/// therefore loses at most the buffered instances, and `predictions.jsonl` never names an instance
/// whose traces are not on disk.
#[derive(Debug)]
pub struct RunWriter {
    dir: PathBuf,
    instances_per_part: usize,
    next_part: usize,
    pending_instances: Vec<InstanceRow>,
    pending_traces: Vec<TraceRow>,
    done: HashSet<String>,
}

impl RunWriter {
    /// Starts a new run in `dir` (created if needed): writes `run.json`, and fails if the directory
    /// already holds `predictions.jsonl` (use [`resume`](Self::resume)).
    pub fn create(dir: &Path, manifest: &RunManifest, instances_per_part: usize) -> Result<Self> {
        check_instances_per_part(instances_per_part)?;
        fs::create_dir_all(dir.join(TRACES_DIR)).map_err(io_error(dir))?;
        let predictions = dir.join(PREDICTIONS_FILE);
        if predictions.exists() {
            return Err(Error::Inconsistent {
                path: predictions,
                reason: "a run already exists here; resume it or choose another directory".into(),
            });
        }
        manifest.write(dir)?;
        File::create(&predictions).map_err(io_error(&predictions))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            instances_per_part,
            next_part: 0,
            pending_instances: Vec::new(),
            pending_traces: Vec::new(),
            done: HashSet::new(),
        })
    }

    /// Continues the run in `dir`: keeps the instances already in `predictions.jsonl` (cutting a
    /// truncated last line off the file) and numbers new parts after the existing ones. Its
    /// [`is_done`](Self::is_done) tells which instances to skip.
    pub fn resume(dir: &Path, instances_per_part: usize) -> Result<Self> {
        check_instances_per_part(instances_per_part)?;
        let predictions = dir.join(PREDICTIONS_FILE);
        let rows = read_predictions(&predictions, true)?;
        // Rewrite the file without a truncated tail so that appends start on a fresh line.
        let mut text = String::new();
        for row in &rows {
            text.push_str(&serde_json::to_string(row).map_err(|e| Error::Json {
                path: predictions.clone(),
                line: None,
                message: e.to_string(),
            })?);
            text.push('\n');
        }
        write_atomically(&predictions, text.as_bytes())?;
        fs::create_dir_all(dir.join(TRACES_DIR)).map_err(io_error(dir))?;
        let next_part = trace_parts(dir)?
            .iter()
            .filter_map(|p| {
                p.file_stem()?
                    .to_str()?
                    .strip_prefix("part-")?
                    .parse::<usize>()
                    .ok()
            })
            .max()
            .map_or(0, |n| n + 1);
        Ok(Self {
            dir: dir.to_path_buf(),
            instances_per_part,
            next_part,
            pending_instances: Vec::new(),
            pending_traces: Vec::new(),
            done: rows.into_iter().map(|r| r.instance_id).collect(),
        })
    }

    /// True when the instance is already written (or buffered).
    pub fn is_done(&self, instance_id: &str) -> bool {
        self.done.contains(instance_id)
    }

    /// Instances written or buffered.
    pub fn n_done(&self) -> usize {
        self.done.len()
    }

    /// Buffers one instance and its traces; flushes when the part is full.
    pub fn push(&mut self, instance: InstanceRow, traces: Vec<TraceRow>) -> Result<()> {
        if let Some(bad) = traces
            .iter()
            .find(|t| t.instance_id != instance.instance_id)
        {
            return Err(Error::Inconsistent {
                path: self.dir.clone(),
                reason: format!(
                    "trace {} names instance `{}` but was pushed with `{}`",
                    bad.trace_index, bad.instance_id, instance.instance_id
                ),
            });
        }
        self.done.insert(instance.instance_id.clone());
        self.pending_instances.push(instance);
        self.pending_traces.extend(traces);
        if self.pending_instances.len() >= self.instances_per_part {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the buffered instances now (a no-op when nothing is buffered).
    pub fn flush(&mut self) -> Result<()> {
        if self.pending_instances.is_empty() {
            return Ok(());
        }
        let part = self
            .dir
            .join(TRACES_DIR)
            .join(format!("part-{:05}.parquet", self.next_part));
        write_traces_parquet(&part, &self.pending_traces)?;
        self.next_part += 1;
        let predictions = self.dir.join(PREDICTIONS_FILE);
        let file = OpenOptions::new()
            .append(true)
            .open(&predictions)
            .map_err(io_error(&predictions))?;
        let mut out = BufWriter::new(file);
        for row in &self.pending_instances {
            serde_json::to_writer(&mut out, row).map_err(|e| Error::Json {
                path: predictions.clone(),
                line: None,
                message: e.to_string(),
            })?;
            out.write_all(b"\n").map_err(io_error(&predictions))?;
        }
        let file = out
            .into_inner()
            .map_err(|e| io_error(&predictions)(e.into_error()))?;
        file.sync_all().map_err(io_error(&predictions))?;
        self.pending_instances.clear();
        self.pending_traces.clear();
        Ok(())
    }

    /// Flushes what is buffered and closes the writer.
    pub fn finish(mut self) -> Result<()> {
        self.flush()
    }
}

fn check_instances_per_part(n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::InvalidParameter {
            parameter: "instances_per_part",
            value: "0".into(),
            reason: "must be at least 1".into(),
        });
    }
    Ok(())
}
