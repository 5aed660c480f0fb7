//! Re-scoring a stored run with another refusal classifier, without the model under test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use deepconf_core::policy::TraceOutcome;
use deepconf_records::{InstanceRow, PartLimits, RunWriter, TraceRow, read_run};
use deepconf_refusal::{RefusalAnswers, RefusalClassifier, RefusalLabel, TraceLabel};

use crate::judges::Classifier;
use crate::{Error, Result};

/// What [`rescore`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct RescoreReport {
    /// The new run directory.
    pub out_dir: PathBuf,
    /// Instances re-scored.
    pub instances: usize,
    /// Traces labelled again.
    pub traces: usize,
    /// Traces whose label differs from the stored one.
    pub changed_labels: usize,
    /// Instances whose behaviour (refused or not) differs from the stored one.
    pub changed_behaviours: usize,
    /// Instances re-scored at once.
    pub concurrency: usize,
    /// Wall time.
    pub elapsed: Duration,
}

/// One instance labelled again: its rows.
type Rescored = (InstanceRow, Vec<TraceRow>);

/// Labels every stored trace of the run in `run_dir` again with `classifier` and writes the
/// result to `out_dir` as a run directory of its own, which `analyze` and the report read like
/// any other: the same instances, traces, token confidences and terminations; new labels, scores
/// and evidence; votes decided again by the run's policy over the stored traces; `run.json`
/// naming the new classifier (and, under `extra.rescored_from`, the run it came from).
///
/// No model under test is needed. A judge classifier keeps its answers in its cache, so a second
/// re-scoring (or a resumed one after a failure) asks the judge nothing it has answered. Up to
/// `concurrency` instances are labelled at once, each on its own
/// [`RefusalClassifier::concurrent_handle`] (one at a time without handles).
///
/// What a re-scoring cannot change: which traces exist. Under the online policy the live run's
/// labels decided when sampling stopped; here the same traces vote under the new labels. The
/// reference-response prediction (`reference_refusal_predicted`) needs the reference text, which
/// the records do not keep: it is cleared (score the classifier on the dataset with
/// [`score_classifier`](crate::score_classifier) instead). Nothing is written when a classifier
/// call fails (e.g. the judge's server is down); the cache keeps what was answered.
pub fn rescore(
    run_dir: &Path,
    out_dir: &Path,
    classifier: &mut Classifier,
    concurrency: usize,
) -> Result<RescoreReport> {
    let started = Instant::now();
    let records = read_run(run_dir)?;
    if out_dir.join(deepconf_records::PREDICTIONS_FILE).exists() {
        return Err(Error::RunExists {
            path: out_dir.to_path_buf(),
        });
    }
    let policy = records.manifest.config.policy.clone();
    let pairs: Vec<(&InstanceRow, &Vec<TraceRow>)> =
        records.instances.iter().zip(&records.traces).collect();

    let relabel = |classifier: &mut dyn RefusalClassifier,
                   (instance, traces): (&InstanceRow, &Vec<TraceRow>)|
     -> Result<Rescored> {
        let mut answers = RefusalAnswers::new(classifier);
        let mut labelled: Vec<(Option<RefusalLabel>, TraceLabel)> =
            Vec::with_capacity(traces.len());
        for trace in traces {
            let extracted = answers.label(&instance.prompt, &trace.text)?;
            labelled.push((extracted.answer, extracted.detail));
        }
        let history: Vec<TraceOutcome<RefusalLabel>> = traces
            .iter()
            .zip(&labelled)
            .map(|(trace, (answer, _))| TraceOutcome {
                index: trace.trace_index as usize,
                tokens: trace.n_tokens as usize,
                terminated: trace.is_terminated(),
                answer: *answer,
                mean: trace.mean_confidence.unwrap_or(0.0),
                lowest_group: trace.lowest_group_confidence.unwrap_or(0.0),
                bottom_group: trace.bottom_group_confidence.unwrap_or(0.0),
                tail: trace.tail_confidence.unwrap_or(0.0),
            })
            .collect();
        let decision = policy.start().decide(&history);
        let rows: Vec<TraceRow> = traces
            .iter()
            .zip(labelled)
            .map(|(trace, (answer, detail))| {
                let voted = decision.voters.contains(&(trace.trace_index as usize));
                trace.clone().relabelled(answer, &detail, voted)
            })
            .collect();
        let winner = decision.vote.as_ref().map(|v| v.winner);
        let mut row = instance.clone();
        row.vote_winner = winner;
        row.vote_consensus = decision.vote.as_ref().map(|v| v.consensus());
        row.voters = decision.voters.len() as u32;
        row.behaviour_refused = winner.map(RefusalLabel::is_refusal);
        row.reference_refusal_predicted = None;
        Ok((row, rows))
    };

    let mut handles = Vec::new();
    for _ in 0..concurrency.min(pairs.len()) {
        match classifier.classifier.concurrent_handle() {
            Some(handle) => handles.push(handle),
            None => break,
        }
    }
    let used = handles.len().max(1);
    let rescored: Vec<Rescored> = if handles.len() <= 1 {
        pairs
            .iter()
            .map(|&pair| relabel(classifier.classifier.as_mut(), pair))
            .collect::<Result<_>>()?
    } else {
        deepconf_core::pool::map_ordered(handles, &pairs, |handle, &pair| {
            relabel(handle.as_mut(), pair)
        })?
    };

    let mut manifest = records.manifest.clone();
    manifest.classifier = Some(classifier.info.clone());
    manifest.created_at = Some(crate::time::now_rfc3339());
    let mut extra = match manifest.extra.take() {
        serde_json::Value::Object(map) => map,
        serde_json::Value::Null => serde_json::Map::new(),
        other => serde_json::Map::from_iter([("original".to_string(), other)]),
    };
    extra.insert(
        "rescored_from".into(),
        serde_json::json!({
            "run": run_dir.display().to_string(),
            "classifier": records.manifest.classifier,
        }),
    );
    manifest.extra = serde_json::Value::Object(extra);

    let mut changed_labels = 0;
    let mut changed_behaviours = 0;
    let mut traces = 0;
    let mut writer = RunWriter::create(out_dir, &manifest, PartLimits::default())?;
    for ((old_row, old_traces), (row, rows)) in pairs.iter().zip(rescored) {
        traces += rows.len();
        changed_labels += old_traces
            .iter()
            .zip(&rows)
            .filter(|(a, b)| a.refusal_label != b.refusal_label)
            .count();
        changed_behaviours += usize::from(old_row.behaviour_refused != row.behaviour_refused);
        writer.push(row, rows)?;
    }
    for failure in &records.failures {
        writer.record_failure(failure)?;
    }
    writer.finish()?;
    Ok(RescoreReport {
        out_dir: out_dir.to_path_buf(),
        instances: records.instances.len(),
        traces,
        changed_labels,
        changed_behaviours,
        concurrency: used,
        elapsed: started.elapsed(),
    })
}
