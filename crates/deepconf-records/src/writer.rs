//! [`RunWriter`]: writes a run directory incrementally and crash-safely.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::{Error, Result, io_error};
use crate::parquet::write_traces_parquet;
use crate::reader::{JsonlEnd, scan_jsonl, trace_parts};
use crate::{
    FAILURES_FILE, FailedInstance, InstanceRow, PREDICTIONS_FILE, RunManifest, TRACES_DIR, TraceRow,
};

/// When [`RunWriter`] turns its buffer into a part file. A part is written as soon as any limit is
/// reached (and by [`RunWriter::finish`]); smaller limits lose less to a kill, larger ones write
/// fewer files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartLimits {
    /// Buffered instances (`None`: no limit).
    pub max_instances: Option<usize>,
    /// Buffered trace rows.
    pub max_rows: usize,
    /// Buffered bytes (an estimate of the rows' in-memory size).
    pub max_bytes: usize,
    /// Age of the oldest buffered instance (`None`: no limit): bounds the work a kill loses.
    pub max_age: Option<Duration>,
}

impl Default for PartLimits {
    /// 20,000 trace rows, 64 MiB or two minutes, whichever comes first: a 100,000-prompt run of
    /// 4-10 traces each writes tens of parts, and a kill loses at most two minutes of work.
    fn default() -> Self {
        Self {
            max_instances: None,
            max_rows: 20_000,
            max_bytes: 64 << 20,
            max_age: Some(Duration::from_secs(120)),
        }
    }
}

impl PartLimits {
    /// A part every `n` instances (and the default row, byte and age limits).
    pub fn instances(n: usize) -> Self {
        Self {
            max_instances: Some(n),
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |parameter: &'static str| {
            Err(Error::InvalidParameter {
                parameter,
                value: "0".into(),
                reason: "must be at least 1".into(),
            })
        };
        if self.max_instances == Some(0) {
            return bad("max_instances");
        }
        if self.max_rows == 0 {
            return bad("max_rows");
        }
        if self.max_bytes == 0 {
            return bad("max_bytes");
        }
        Ok(())
    }
}

/// An estimate of a trace row's size in memory and on the way to a part file.
fn row_bytes(row: &TraceRow) -> usize {
    let logprobs = row
        .top_logprobs
        .as_ref()
        .map_or(0, |steps| steps.iter().map(|s| 4 * s.len() + 8).sum());
    256 + row.text.len()
        + 8 * row.token_confidences.len()
        + logprobs
        + row.refusal_evidence.as_ref().map_or(0, String::len)
}

/// Writes a run directory incrementally.
///
/// [`push`](Self::push) buffers one instance; when the buffer reaches a [`PartLimits`] limit (and on
/// [`flush`](Self::flush) or [`finish`](Self::finish)) the buffered traces go to a new
/// `traces/part-NNNNN.parquet` (atomic rename) and only then are their instance rows appended to
/// `predictions.jsonl` and synced. A kill therefore loses at most the buffered instances, and
/// `predictions.jsonl` never names an instance whose traces are not on disk. Failed instances go
/// to `failures.jsonl` at once ([`record_failure`](Self::record_failure)).
///
/// The writer keeps no per-instance state for what it writes (only the ids found on disk when it
/// resumed a run, and the ids of failed instances), so its memory stays flat over a long run.
#[derive(Debug)]
pub struct RunWriter {
    dir: PathBuf,
    limits: PartLimits,
    next_part: usize,
    pending_instances: Vec<InstanceRow>,
    pending_traces: Vec<TraceRow>,
    pending_bytes: usize,
    pending_since: Option<Instant>,
    /// Instances in `predictions.jsonl` when the writer opened the run.
    recorded: HashSet<String>,
    /// Instances pushed since that were not recorded before.
    pushed: usize,
    failed: HashSet<String>,
}

impl RunWriter {
    /// Starts a new run in `dir` (created if needed): writes `run.json`, and fails if the directory
    /// already holds `predictions.jsonl` (use [`resume`](Self::resume)).
    pub fn create(dir: &Path, manifest: &RunManifest, limits: PartLimits) -> Result<Self> {
        limits.validate()?;
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
        Ok(Self::new(dir, limits, 0, HashSet::new(), HashSet::new()))
    }

    fn new(
        dir: &Path,
        limits: PartLimits,
        next_part: usize,
        recorded: HashSet<String>,
        failed: HashSet<String>,
    ) -> Self {
        Self {
            dir: dir.to_path_buf(),
            limits,
            next_part,
            pending_instances: Vec::new(),
            pending_traces: Vec::new(),
            pending_bytes: 0,
            pending_since: None,
            recorded,
            pushed: 0,
            failed,
        }
    }

    /// Continues the run in `dir`: keeps the instances already in `predictions.jsonl` (cutting a
    /// truncated last line off the file) and numbers new parts after the existing ones. Its
    /// [`is_done`](Self::is_done) tells which instances to skip; failed instances are not done, so
    /// a resumed run tries them again.
    pub fn resume(dir: &Path, limits: PartLimits) -> Result<Self> {
        limits.validate()?;
        let predictions = dir.join(PREDICTIONS_FILE);
        let mut recorded = HashSet::new();
        let end = scan_jsonl(&predictions, true, |row: InstanceRow| {
            recorded.insert(row.instance_id);
        })?;
        repair_tail(&predictions, end)?;
        let failures_path = dir.join(FAILURES_FILE);
        let mut failed = HashSet::new();
        if failures_path.exists() {
            let end = scan_jsonl(&failures_path, true, |failure: FailedInstance| {
                if !recorded.contains(&failure.instance_id) {
                    failed.insert(failure.instance_id);
                }
            })?;
            repair_tail(&failures_path, end)?;
        }
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
        Ok(Self::new(dir, limits, next_part, recorded, failed))
    }

    /// True when the instance was in the run directory when this writer opened it (see
    /// [`resume`](Self::resume)). Instances pushed since are not tracked by id, so that memory
    /// stays flat over a long run: push each instance once.
    pub fn is_done(&self, instance_id: &str) -> bool {
        self.recorded.contains(instance_id)
    }

    /// Instances written or buffered: those found on disk when the run was opened and those
    /// pushed since.
    pub fn n_done(&self) -> usize {
        self.recorded.len() + self.pushed
    }

    /// Instances recorded as failed (by this writer or an earlier run) and not done since.
    pub fn n_failed(&self) -> usize {
        self.failed.len()
    }

    /// Buffers one instance and its traces; writes a part when a limit is reached.
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
        self.failed.remove(&instance.instance_id);
        if !self.recorded.contains(&instance.instance_id) {
            self.pushed += 1;
        }
        self.pending_bytes += traces.iter().map(row_bytes).sum::<usize>();
        self.pending_since.get_or_insert_with(Instant::now);
        self.pending_instances.push(instance);
        self.pending_traces.extend(traces);
        self.flush_if_due()
    }

    /// Writes a part if the buffer has reached a limit (the age limit included).
    pub fn flush_if_due(&mut self) -> Result<()> {
        let l = &self.limits;
        let due = l
            .max_instances
            .is_some_and(|n| self.pending_instances.len() >= n)
            || self.pending_traces.len() >= l.max_rows
            || self.pending_bytes >= l.max_bytes
            || l.max_age
                .zip(self.pending_since)
                .is_some_and(|(age, since)| since.elapsed() >= age);
        if due { self.flush() } else { Ok(()) }
    }

    /// Appends an instance that could not be run to `failures.jsonl` and syncs it.
    pub fn record_failure(&mut self, failure: &FailedInstance) -> Result<()> {
        let path = self.dir.join(FAILURES_FILE);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        append_jsonl(&path, file, std::slice::from_ref(failure))?;
        self.failed.insert(failure.instance_id.clone());
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
        append_jsonl(&predictions, file, &self.pending_instances)?;
        self.pending_instances.clear();
        self.pending_traces.clear();
        self.pending_bytes = 0;
        self.pending_since = None;
        Ok(())
    }

    /// Flushes what is buffered and closes the writer.
    pub fn finish(mut self) -> Result<()> {
        self.flush()
    }
}

/// Appends `rows` as JSON lines to `file` (opened for appending) and syncs it.
fn append_jsonl<T: Serialize>(path: &Path, file: File, rows: &[T]) -> Result<()> {
    let mut out = BufWriter::new(file);
    for row in rows {
        serde_json::to_writer(&mut out, row).map_err(|e| Error::Json {
            path: path.to_path_buf(),
            line: None,
            message: e.to_string(),
        })?;
        out.write_all(b"\n").map_err(io_error(path))?;
    }
    let file = out
        .into_inner()
        .map_err(|e| io_error(path)(e.into_error()))?;
    file.sync_all().map_err(io_error(path))
}

/// Cuts the truncated tail a kill may have left off a JSONL file and ends its last row with a
/// newline, so that appends start on a fresh line. Complete rows are never rewritten.
fn repair_tail(path: &Path, end: JsonlEnd) -> Result<()> {
    if !end.truncated_tail && !end.missing_newline {
        return Ok(());
    }
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(path))?;
    file.set_len(end.complete_len).map_err(io_error(path))?;
    if end.missing_newline {
        file.seek(SeekFrom::End(0)).map_err(io_error(path))?;
        file.write_all(b"\n").map_err(io_error(path))?;
    }
    file.sync_all().map_err(io_error(path))
}
