//! Reading a run directory back: [`read_run`] -> [`RunRecords`].

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::error::{Error, Result, io_error};
use crate::parquet::read_traces_parquet;
use crate::{
    FAILURES_FILE, FailedInstance, InstanceRow, PREDICTIONS_FILE, RunManifest, TRACES_DIR, TraceRow,
};

/// Reads `predictions.jsonl`. A truncated last line (a write cut by a kill) is ignored when
/// `tolerate_truncated_tail` is true; any other bad line is an error naming its line number.
pub fn read_predictions(path: &Path, tolerate_truncated_tail: bool) -> Result<Vec<InstanceRow>> {
    read_jsonl(path, tolerate_truncated_tail)
}

/// Reads `failures.jsonl` (a missing file means no failures), with the same tolerance as
/// [`read_predictions`].
pub fn read_failures(path: &Path, tolerate_truncated_tail: bool) -> Result<Vec<FailedInstance>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    read_jsonl(path, tolerate_truncated_tail)
}

pub(crate) fn read_jsonl<T: DeserializeOwned>(
    path: &Path,
    tolerate_truncated_tail: bool,
) -> Result<Vec<T>> {
    let mut rows = Vec::new();
    scan_jsonl(path, tolerate_truncated_tail, |row| rows.push(row))?;
    Ok(rows)
}

/// Where the complete lines of a JSONL file end, as found by [`scan_jsonl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JsonlEnd {
    /// Bytes up to the end of the last complete row (its newline included when it has one).
    pub complete_len: u64,
    /// The last complete row has no newline after it.
    pub missing_newline: bool,
    /// A truncated last line was skipped.
    pub truncated_tail: bool,
}

/// Reads a JSONL file one line at a time, handing each row to `each`, so that memory does not
/// grow with the file. Blank lines are skipped; a truncated last line (a write cut by a kill) is
/// skipped when `tolerate_truncated_tail` is true; any other bad line is an error naming its line
/// number.
pub(crate) fn scan_jsonl<T: DeserializeOwned>(
    path: &Path,
    tolerate_truncated_tail: bool,
    mut each: impl FnMut(T),
) -> Result<JsonlEnd> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut end = JsonlEnd {
        complete_len: 0,
        missing_newline: false,
        truncated_tail: false,
    };
    let mut offset = 0u64;
    let mut number = 0usize;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(io_error(path))?;
        if read == 0 {
            return Ok(end);
        }
        number += 1;
        offset += read as u64;
        let has_newline = line.last() == Some(&b'\n');
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if text.iter().all(u8::is_ascii_whitespace) {
            if has_newline {
                end.complete_len = offset;
            }
            continue;
        }
        match serde_json::from_slice::<T>(text) {
            Ok(row) => {
                each(row);
                end.complete_len = offset;
                end.missing_newline = !has_newline;
            }
            // Only the last line can be cut short, and a cut line has no newline after it.
            Err(e) if tolerate_truncated_tail && !has_newline && e.is_eof() => {
                end.truncated_tail = true;
                return Ok(end);
            }
            Err(e) => {
                return Err(Error::Json {
                    path: path.to_path_buf(),
                    line: Some(number),
                    message: e.to_string(),
                });
            }
        }
    }
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
    /// Instances that failed and have not succeeded since (the last failure of each).
    pub failures: Vec<FailedInstance>,
}

impl RunRecords {
    /// Total trace rows.
    pub fn n_traces(&self) -> usize {
        self.traces.iter().map(Vec::len).sum()
    }
}

/// Reads a run directory: `run.json`, `predictions.jsonl` (tolerating a truncated last line) and
/// every trace part, and `failures.jsonl` when there is one. Traces of instances missing from
/// `predictions.jsonl` (written just before a kill) are dropped; when a resumed run wrote an
/// instance's traces twice, the later part wins; a failure that a later run resolved is dropped.
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
    let mut failures: Vec<FailedInstance> = Vec::new();
    let mut failure_position: HashMap<String, usize> = HashMap::new();
    for failure in read_failures(&dir.join(FAILURES_FILE), true)? {
        if position.contains_key(&failure.instance_id) {
            continue;
        }
        match failure_position.get(&failure.instance_id) {
            Some(&i) => failures[i] = failure,
            None => {
                failure_position.insert(failure.instance_id.clone(), failures.len());
                failures.push(failure);
            }
        }
    }
    Ok(RunRecords {
        manifest,
        failures,
        instances,
        traces: traces
            .into_iter()
            .map(|m| m.into_values().collect())
            .collect(),
    })
}
