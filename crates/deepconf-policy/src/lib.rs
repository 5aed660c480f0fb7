//! Sampling policies of DeepConf: how many traces to sample for one prompt, when to cut a trace
//! short, when to stop sampling, and which traces vote.
//!
//! Every decision is a pure function of the traces seen so far, so the same code drives live
//! generation (through `deepconf-core`'s runner) and the offline replay of stored traces.
//!
//! # Quick start
//! ```
//! use deepconf_policy::{PolicyConfig, Step, TraceOutcome};
//!
//! // DeepConf-low online: 4 warmup traces, keep the top 10%, at most 16 traces.
//! let config = PolicyConfig::online(4, 16, 10.0);
//! config.validate()?;
//! let mut history: Vec<TraceOutcome> = Vec::new();
//! let mut state = config.start();
//! // The first step asks for the warmup traces, with no termination threshold.
//! assert!(matches!(state.next_step(&history), Step::Generate { count: 4, stop_below: None, .. }));
//! for (i, lowest) in [5.0, 6.0, 7.0, 8.0].into_iter().enumerate() {
//!     history.push(TraceOutcome::finished(i, 100, "refusal", lowest));
//! }
//! // All four warmup traces agree: consensus is reached, no more sampling.
//! assert!(matches!(state.next_step(&history), Step::Finish(_)));
//! let decision = state.decide(&history);
//! assert_eq!(decision.vote.unwrap().winner, "refusal");
//! # Ok::<(), deepconf_policy::Error>(())
//! ```
//!
//! # Which type do I want?
//! | need | item |
//! |---|---|
//! | describe a policy (serialisable) | [`PolicyConfig`] |
//! | drive it trace by trace | [`PolicyState::next_step`], then [`PolicyState::decide`] |
//! | vote over answers | [`vote`], [`Voting`] |
//! | the DeepConf threshold from warmup traces | [`threshold_from_warmup`] |
//! | keep the most confident traces | [`filter_top_percent`] |
//!
//! # "Percent kept", not percentile
//! The official code uses opposite percentile conventions in its offline and online branches. This
//! crate speaks only of the percent of traces *kept*: DeepConf-low keeps 10% (threshold = 90th
//! percentile of the warmup lowest-group confidences), DeepConf-high keeps 90% (10th percentile).
#![deny(missing_docs)]

mod config;
mod fixed;
mod offline;
mod online;
mod prototype;
mod state;
mod step;
mod vote;

use serde::{Deserialize, Serialize};

pub use config::PolicyConfig;
pub use state::PolicyState;
pub(crate) use step::BallotBox;
pub use step::{Decision, FinishReason, Phase, Step};
pub use vote::{Ballot, VoteOutcome, Voting, vote};

/// Errors of this crate.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A policy parameter is out of range.
    #[error("invalid policy parameter `{parameter}` = {value}: {reason}")]
    InvalidParameter {
        /// Parameter name.
        parameter: &'static str,
        /// The value, as text.
        value: String,
        /// What a valid value looks like.
        reason: &'static str,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Linear-interpolation percentile (NumPy's default method) of `values`, `q` in `[0, 100]`.
/// `None` for an empty slice.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let rank = q.clamp(0.0, 100.0) / 100.0 * (sorted.len() - 1) as f64;
    let low = rank.floor() as usize;
    let high = rank.ceil() as usize;
    let fraction = rank - low as f64;
    Some(sorted[low] + (sorted[high] - sorted[low]) * fraction)
}

/// DeepConf's online threshold: the `(100 - keep_percent)`th percentile of the warmup traces'
/// lowest-group confidences. `None` without warmup traces.
pub fn threshold_from_warmup(warmup_lowest_groups: &[f64], keep_percent: f64) -> Option<f64> {
    percentile(warmup_lowest_groups, 100.0 - keep_percent)
}

/// Which traces survive offline filtering: those whose score is at least the
/// `(100 - keep_percent)`th percentile of all scores (keeping 100% keeps everything).
pub fn filter_top_percent(scores: &[f64], keep_percent: f64) -> Vec<bool> {
    match percentile(scores, 100.0 - keep_percent) {
        Some(threshold) => scores.iter().map(|&s| s >= threshold).collect(),
        None => Vec::new(),
    }
}

/// Which trace-level confidence a policy ranks or weights traces by. The default is
/// [`TraceMetric::LowestGroup`], DeepConf's online metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceMetric {
    /// Mean token confidence.
    Mean,
    /// Lowest sliding-window group confidence (DeepConf's online metric).
    #[default]
    LowestGroup,
    /// Mean of the bottom-p% groups.
    BottomGroup,
    /// Tail confidence.
    Tail,
}

/// What a policy needs to know about a finished (or terminated) trace. `A` is the answer type
/// traces vote with (for safety: a refusal label).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceOutcome<A = String> {
    /// Trace index within the prompt.
    pub index: usize,
    /// Generated tokens.
    pub tokens: usize,
    /// True when the trace was terminated early by the policy.
    pub terminated: bool,
    /// The trace's answer (e.g. refusal or compliance); `None` when none could be extracted,
    /// and such a trace does not vote.
    pub answer: Option<A>,
    /// Mean token confidence.
    pub mean: f64,
    /// Lowest group confidence.
    pub lowest_group: f64,
    /// Bottom-p group confidence.
    pub bottom_group: f64,
    /// Tail confidence.
    pub tail: f64,
}

impl<A> TraceOutcome<A> {
    /// A completed (not terminated) trace whose metrics all equal `confidence`; handy in tests.
    pub fn finished(index: usize, tokens: usize, answer: impl Into<A>, confidence: f64) -> Self {
        Self {
            index,
            tokens,
            terminated: false,
            answer: Some(answer.into()),
            mean: confidence,
            lowest_group: confidence,
            bottom_group: confidence,
            tail: confidence,
        }
    }

    /// The value of `metric` for this trace.
    pub fn metric(&self, metric: TraceMetric) -> f64 {
        match metric {
            TraceMetric::Mean => self.mean,
            TraceMetric::LowestGroup => self.lowest_group,
            TraceMetric::BottomGroup => self.bottom_group,
            TraceMetric::Tail => self.tail,
        }
    }
}

/// A completed trace of `answer` whose metrics all equal `lowest`, for the policies' tests.
#[cfg(test)]
pub(crate) fn t(index: usize, answer: &str, lowest: f64) -> TraceOutcome {
    TraceOutcome::finished(index, 10, answer, lowest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_matches_numpy_linear() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 100.0), Some(4.0));
        assert_eq!(percentile(&v, 50.0), Some(2.5));
        // np.percentile([1,2,3,4], 90) = 3.7
        assert!((percentile(&v, 90.0).unwrap() - 3.7).abs() < 1e-12);
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn keep_percent_thresholds() {
        let lowest: Vec<f64> = (1..=10).map(f64::from).collect();
        // keep 10% -> 90th percentile = 9.1; keep 90% -> 10th percentile = 1.9
        assert!((threshold_from_warmup(&lowest, 10.0).unwrap() - 9.1).abs() < 1e-12);
        assert!((threshold_from_warmup(&lowest, 90.0).unwrap() - 1.9).abs() < 1e-12);
        assert_eq!(
            filter_top_percent(&[3.0, 1.0, 2.0, 4.0], 50.0),
            vec![true, false, false, true]
        );
        assert!(filter_top_percent(&[3.0, 1.0], 100.0).iter().all(|&k| k));
    }
}
