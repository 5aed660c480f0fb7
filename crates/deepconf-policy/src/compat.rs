//! The prototype's schedule, for comparison with old runs: `warmup_traces` traces, then batches of
//! `batch_size` up to `max_traces`, stopping once the mean confidence of the newest batch reaches
//! the `percentile`th percentile of the warmup traces' mean confidences. Plain majority vote.

use crate::{BallotBox, FinishReason, Phase, Step, TraceMetric, TraceOutcome, Voting, percentile};

/// The schedule's parameters (the fields of [`PolicyConfig::Compat`](crate::PolicyConfig)).
pub(crate) struct Schedule {
    pub(crate) warmup_traces: usize,
    pub(crate) batch_size: usize,
    pub(crate) max_traces: usize,
    pub(crate) percentile: f64,
}

/// Warmup, then batches until the newest batch is confident enough or the budget is spent.
pub(crate) fn next_step<A: Ord + Clone>(
    schedule: &Schedule,
    threshold: &mut Option<f64>,
    history: &[TraceOutcome<A>],
) -> Step {
    let generated = history.len();
    if generated < schedule.warmup_traces {
        return Step::Generate {
            count: schedule.warmup_traces - generated,
            phase: Phase::Warmup,
            stop_below: None,
        };
    }
    if threshold.is_none() {
        let means: Vec<f64> = history[..schedule.warmup_traces]
            .iter()
            .map(|t| t.mean)
            .collect();
        *threshold = percentile(&means, schedule.percentile);
    }
    if generated > schedule.warmup_traces {
        // The newest batch is whatever came after the last full batch boundary.
        let after_warmup = generated - schedule.warmup_traces;
        let newest = match after_warmup % schedule.batch_size {
            0 => schedule.batch_size,
            partial => partial,
        };
        let batch = &history[generated - newest..];
        let batch_mean = batch.iter().map(|t| t.mean).sum::<f64>() / batch.len() as f64;
        if let Some(target) = threshold.filter(|&t| batch_mean >= t) {
            return Step::Finish(FinishReason::ConfidenceReached {
                batch_mean,
                target,
                traces: generated,
            });
        }
    }
    if generated >= schedule.max_traces {
        return Step::Finish(FinishReason::Budget {
            traces: generated,
            consensus: ballot_box(generated, *threshold)
                .count(history)
                .vote
                .map(|v| v.consensus()),
        });
    }
    Step::Generate {
        count: schedule.batch_size.min(schedule.max_traces - generated),
        phase: Phase::Adaptive,
        stop_below: None,
    }
}

/// Every completed trace votes once (plain majority), ranked by mean confidence.
pub(crate) fn ballot_box(traces: usize, threshold: Option<f64>) -> BallotBox {
    BallotBox::open(traces, threshold, Voting::Majority, TraceMetric::Mean)
}
