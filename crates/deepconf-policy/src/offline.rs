//! Offline filtering: generate `traces` full traces (as [`fixed`](crate::fixed) does), keep the
//! top `keep_percent`% by a trace metric, and let only those vote.

use crate::{BallotBox, TraceMetric, TraceOutcome, Voting, filter_top_percent, percentile};

/// The kept traces vote, weighted by `metric`; the threshold is the `(100 - keep)`th percentile.
pub(crate) fn ballot_box<A>(
    history: &[TraceOutcome<A>],
    keep_percent: f64,
    metric: TraceMetric,
    voting: Voting,
) -> BallotBox {
    let scores: Vec<f64> = history.iter().map(|t| t.metric(metric)).collect();
    BallotBox {
        threshold: percentile(&scores, 100.0 - keep_percent),
        eligible: filter_top_percent(&scores, keep_percent),
        voting,
        metric,
    }
}
