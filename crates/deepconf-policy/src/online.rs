//! DeepConf online (Fu et al. 2025, Algorithm 2): `warmup_traces` full traces set the threshold,
//! the `(100 - keep_percent)`th percentile of their lowest-group confidences; later traces, in
//! batches, are cut as soon as a full window's group confidence falls below it; sampling stops at
//! weighted consensus `>= consensus` or when `max_traces` traces exist.

use crate::{
    BallotBox, FinishReason, Phase, Step, TraceMetric, TraceOutcome, Voting, threshold_from_warmup,
};

/// The online policy's parameters (the fields of [`PolicyConfig::Online`](crate::PolicyConfig)).
pub(crate) struct Schedule {
    pub(crate) warmup_traces: usize,
    pub(crate) max_traces: usize,
    pub(crate) keep_percent: f64,
    pub(crate) consensus: f64,
    pub(crate) batch_size: usize,
    pub(crate) voting: Voting,
}

/// Warmup first; then the threshold is set once, and batches follow until consensus or budget.
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
        let lowest: Vec<f64> = history[..schedule.warmup_traces]
            .iter()
            .map(|t| t.lowest_group)
            .collect();
        *threshold = threshold_from_warmup(&lowest, schedule.keep_percent);
    }
    let consensus = ballot_box(generated, schedule.voting, *threshold)
        .count(history)
        .vote
        .map(|v| v.consensus());
    if let Some(c) = consensus.filter(|&c| c >= schedule.consensus) {
        return Step::Finish(FinishReason::Consensus {
            consensus: c,
            tau: schedule.consensus,
            traces: generated,
        });
    }
    if generated >= schedule.max_traces {
        return Step::Finish(FinishReason::Budget {
            traces: generated,
            consensus,
        });
    }
    Step::Generate {
        count: schedule.batch_size.min(schedule.max_traces - generated),
        phase: Phase::Adaptive,
        stop_below: *threshold,
    }
}

/// Every completed trace votes, warmup traces included (the paper's Algorithm 2), weighted by
/// lowest-group confidence. The official script instead drops warmup traces below the threshold
/// from its final vote; with a small warmup and keep 10% that leaves one warmup voter, a trivial
/// consensus of 1.0, and adaptive sampling that never runs.
pub(crate) fn ballot_box(traces: usize, voting: Voting, threshold: Option<f64>) -> BallotBox {
    BallotBox::open(traces, threshold, voting, TraceMetric::LowestGroup)
}

#[cfg(test)]
mod tests {
    use crate::{FinishReason, Phase, PolicyConfig, Step, Voting, t};

    #[test]
    fn online_sets_threshold_then_cuts_and_stops_at_budget() {
        let config = PolicyConfig::Online {
            warmup_traces: 2,
            max_traces: 4,
            keep_percent: 50.0,
            consensus: 0.95,
            batch_size: 1,
            voting: Voting::ConfidenceWeighted,
        };
        let mut s = config.start();
        assert!(matches!(
            s.next_step::<String>(&[]),
            Step::Generate {
                count: 2,
                phase: Phase::Warmup,
                stop_below: None
            }
        ));
        let h = vec![t(0, "a", 2.0), t(1, "b", 4.0)];
        // Median of [2, 4] = 3. Both warmup traces vote, so consensus is 4/6 < 0.95: sample on.
        assert_eq!(
            s.next_step(&h),
            Step::Generate {
                count: 1,
                phase: Phase::Adaptive,
                stop_below: Some(3.0)
            }
        );
        assert_eq!(s.threshold(), Some(3.0));
        assert_eq!(
            s.decide(&h).voters,
            vec![0, 1],
            "a warmup trace below the threshold lost its vote"
        );
        // Unanimous warmup traces reach consensus at once.
        let unanimous = vec![t(0, "b", 3.0), t(1, "b", 4.0)];
        let mut s = config.start();
        assert!(matches!(
            s.next_step(&unanimous),
            Step::Finish(FinishReason::Consensus { traces: 2, .. })
        ));
        // Keeping 100% puts the threshold at the lowest warmup trace: both vote, no consensus.
        let config = PolicyConfig::Online {
            warmup_traces: 2,
            max_traces: 4,
            keep_percent: 100.0,
            consensus: 0.95,
            batch_size: 1,
            voting: Voting::ConfidenceWeighted,
        };
        let mut h = vec![t(0, "a", 3.0), t(1, "b", 4.0)];
        let mut s = config.start();
        assert_eq!(
            s.next_step(&h),
            Step::Generate {
                count: 1,
                phase: Phase::Adaptive,
                stop_below: Some(3.0)
            }
        );
        let mut cut = t(2, "a", 1.0);
        cut.terminated = true;
        h.push(cut);
        h.push(t(3, "b", 9.0));
        assert!(matches!(
            s.next_step(&h),
            Step::Finish(FinishReason::Budget { traces: 4, .. })
        ));
        let d = s.decide(&h);
        assert_eq!(d.voters, vec![0, 1, 3], "terminated trace voted");
        assert_eq!(d.vote.unwrap().winner, "b");
    }
}
