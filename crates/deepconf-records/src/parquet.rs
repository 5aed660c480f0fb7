//! The Parquet files of the trace rows: [`trace_schema`], [`write_traces_parquet`],
//! [`read_traces_parquet`].

use std::fs::{self, File};
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

use crate::error::{Error, Result, io_error};
use crate::{TerminationRow, TraceRow};

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
        label.append_option(row.refusal_label.map(|l| l.as_str()));
        refused.append_option(row.refused());
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
                refusal_label: label
                    .is_valid(row)
                    .then(|| parse_enum(label.value(row), path, "refusal_label", file_row))
                    .transpose()?,
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
