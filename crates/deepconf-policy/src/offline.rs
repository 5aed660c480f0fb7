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

#[cfg(test)]
mod tests {
    use crate::{PolicyConfig, t};

    #[test]
    fn offline_keeps_top_percent_and_weights() {
        let s = PolicyConfig::offline(4, 50.0).start();
        let h = [
            t(0, "compliance", 1.0),
            t(1, "compliance", 2.0),
            t(2, "refusal", 5.0),
            t(3, "refusal", 6.0),
        ];
        let d = s.decide(&h);
        assert_eq!(d.voters, vec![2, 3]);
        assert_eq!(d.threshold, Some(3.5));
        let v = d.vote.unwrap();
        assert_eq!(v.winner, "refusal");
        assert_eq!(v.total_weight, 11.0);
    }
}
