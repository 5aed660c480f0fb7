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
    if generated < schedule.warmup_traces {
        return Step::Generate {
            count: schedule.warmup_traces - generated,
            phase: Phase::Warmup,
            stop_below: None,
        };
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
