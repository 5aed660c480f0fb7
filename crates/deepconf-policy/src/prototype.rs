//! The sampling schedule of the Python prototype this project replaces, for comparison with its
//! runs: `warmup_traces` traces, then batches of `batch_size` up to `max_traces`, stopping once the
//! mean confidence of the newest batch reaches the `percentile`th percentile of the warmup traces'
//! mean confidences. Plain majority vote.

use crate::{BallotBox, FinishReason, Phase, Step, TraceMetric, TraceOutcome, Voting, percentile};

/// The schedule's parameters (the fields of [`PolicyConfig::Prototype`](crate::PolicyConfig::Prototype)).
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
    if let Some(warmup) = Step::remaining_warmup(schedule.warmup_traces, generated) {
        return warmup;
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

#[cfg(test)]
mod tests {
    use crate::{FinishReason, Phase, PolicyConfig, Step, t};

    #[test]
    fn prototype_stops_when_batch_mean_reaches_warmup_percentile() {
        let mut s = PolicyConfig::prototype().start();
        assert!(matches!(
            s.next_step::<String>(&[]),
            Step::Generate {
                count: 3,
                phase: Phase::Warmup,
                ..
            }
        ));
        let mut h = vec![t(0, "a", 1.0), t(1, "a", 2.0), t(2, "b", 3.0)];
        assert!(matches!(
            s.next_step(&h),
            Step::Generate {
                count: 3,
                phase: Phase::Adaptive,
                ..
            }
        ));
        h.extend([t(3, "a", 1.0), t(4, "a", 1.0), t(5, "a", 1.0)]);
        assert!(matches!(s.next_step(&h), Step::Generate { count: 3, .. }));
        h.extend([t(6, "a", 2.0), t(7, "b", 2.5), t(8, "b", 2.0)]);
        match s.next_step(&h) {
            Step::Finish(FinishReason::ConfidenceReached {
                batch_mean, target, ..
            }) => {
                assert_eq!(target, 2.0);
                assert!((batch_mean - 6.5 / 3.0).abs() < 1e-12);
            }
            other => panic!("unexpected {other:?}"),
        }
        // Budget: the 10th trace is a partial batch of 1.
        h.push(t(9, "a", 0.0));
        let mut s = PolicyConfig::prototype().start();
        assert!(matches!(
            s.next_step(&h),
            Step::Finish(FinishReason::Budget { traces: 10, .. })
        ));
    }
}
