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

mod compat;
mod fixed;
mod offline;
mod online;
mod vote;

use serde::{Deserialize, Serialize};

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

/// A policy, as configuration. Serialises as `{"kind": "online", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PolicyConfig {
    /// Generate `traces` full traces; all vote (self-consistency baseline; `traces = 1` is greedy-free
    /// single sampling).
    Fixed {
        /// Traces per prompt.
        traces: usize,
        /// How votes are counted.
        voting: Voting,
    },
    /// Generate `traces` full traces, keep the top `keep_percent`% by `metric`, vote among them.
    Offline {
        /// Traces per prompt.
        traces: usize,
        /// Percent of traces kept, in `(0, 100]`.
        keep_percent: f64,
        /// Ranking metric.
        metric: TraceMetric,
        /// How votes are counted (weights are the `metric` values).
        voting: Voting,
    },
    /// DeepConf online: `warmup_traces` full traces set the threshold; later traces are cut when a full
    /// window's group confidence falls below it; sampling stops at consensus `>= consensus` or when
    /// `max_traces` traces exist.
    Online {
        /// Warmup traces (16 in the paper).
        warmup_traces: usize,
        /// Budget: traces per prompt at most.
        max_traces: usize,
        /// Percent kept (10 = DeepConf-low, 90 = DeepConf-high).
        keep_percent: f64,
        /// Consensus `tau` that stops sampling (0.95 in the paper); `> 1` disables the stop.
        consensus: f64,
        /// Traces started together after the warmup.
        batch_size: usize,
        /// How votes are counted (weights are lowest-group confidences).
        voting: Voting,
    },
    /// The prototype's schedule, for comparison with old runs: `warmup_traces` traces, then batches of
    /// `batch_size` up to `max_traces`, stopping once the mean confidence of the newest batch reaches
    /// the `percentile`th percentile of the warmup traces' mean confidences. Plain majority vote.
    Compat {
        /// Warmup traces (3 in the prototype).
        warmup_traces: usize,
        /// Batch size (3).
        batch_size: usize,
        /// Budget (10).
        max_traces: usize,
        /// Percentile of the warmup mean confidences to reach, in `[0, 100]` (50).
        percentile: f64,
    },
}

impl Default for PolicyConfig {
    /// DeepConf-low online with a safety-sized budget: [`PolicyConfig::Online`] with 4 warmup
    /// traces, at most 16 traces, keep 10%, consensus tau 0.95, batches of 4, confidence-weighted
    /// voting.
    fn default() -> Self {
        Self::online(4, 16, 10.0)
    }
}

impl PolicyConfig {
    /// A short description, e.g. `online(warmup 4, max 8, keep 10%)`.
    pub fn label(&self) -> String {
        match self {
            PolicyConfig::Fixed { traces, .. } => format!("fixed(n={traces})"),
            PolicyConfig::Offline {
                traces,
                keep_percent,
                ..
            } => format!("offline(n={traces}, keep {keep_percent}%)"),
            // A consensus above 1 can never be reached: the run never stops on consensus.
            PolicyConfig::Online {
                warmup_traces,
                max_traces,
                keep_percent,
                consensus,
                ..
            } if *consensus > 1.0 => format!(
                "online(warmup {warmup_traces}, max {max_traces}, keep {keep_percent}%, no consensus stop)"
            ),
            PolicyConfig::Online {
                warmup_traces,
                max_traces,
                keep_percent,
                ..
            } => format!("online(warmup {warmup_traces}, max {max_traces}, keep {keep_percent}%)"),
            PolicyConfig::Compat {
                warmup_traces,
                batch_size,
                max_traces,
                ..
            } => format!("compat(warmup {warmup_traces}, batch {batch_size}, max {max_traces})"),
        }
    }

    /// The largest number of traces the policy starts at once: all of them for fixed and
    /// offline policies, the warmup or a batch (whichever is larger) for online ones.
    pub fn largest_batch(&self) -> usize {
        match *self {
            PolicyConfig::Fixed { traces, .. } | PolicyConfig::Offline { traces, .. } => traces,
            PolicyConfig::Online {
                warmup_traces,
                batch_size,
                ..
            }
            | PolicyConfig::Compat {
                warmup_traces,
                batch_size,
                ..
            } => warmup_traces.max(batch_size),
        }
    }

    /// Fixed-N with plain majority voting.
    pub fn fixed(traces: usize) -> Self {
        Self::Fixed {
            traces,
            voting: Voting::Majority,
        }
    }

    /// Offline filtering on lowest-group confidence with weighted voting.
    pub fn offline(traces: usize, keep_percent: f64) -> Self {
        Self::Offline {
            traces,
            keep_percent,
            metric: TraceMetric::LowestGroup,
            voting: Voting::ConfidenceWeighted,
        }
    }

    /// DeepConf online with tau = 0.95, batch size 4 and weighted voting.
    pub fn online(warmup_traces: usize, max_traces: usize, keep_percent: f64) -> Self {
        Self::Online {
            warmup_traces,
            max_traces,
            keep_percent,
            consensus: 0.95,
            batch_size: 4,
            voting: Voting::ConfidenceWeighted,
        }
    }

    /// The prototype's schedule: 3 warmup, batches of 3 up to 10, median of the warmup.
    pub fn compat() -> Self {
        Self::Compat {
            warmup_traces: 3,
            batch_size: 3,
            max_traces: 10,
            percentile: 50.0,
        }
    }

    /// Short name: `fixed`, `offline`, `online`, `compat`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Fixed { .. } => "fixed",
            Self::Offline { .. } => "offline",
            Self::Online { .. } => "online",
            Self::Compat { .. } => "compat",
        }
    }

    /// The most traces this policy can sample for one prompt.
    pub fn max_traces(&self) -> usize {
        match *self {
            Self::Fixed { traces, .. } | Self::Offline { traces, .. } => traces,
            Self::Online { max_traces, .. } | Self::Compat { max_traces, .. } => max_traces,
        }
    }

    /// Checks every parameter, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        fn at_least_one(parameter: &'static str, value: usize) -> Result<()> {
            if value == 0 {
                return Err(Error::InvalidParameter {
                    parameter,
                    value: "0".into(),
                    reason: "must be at least 1",
                });
            }
            Ok(())
        }
        fn percent(parameter: &'static str, value: f64) -> Result<()> {
            if !(value > 0.0 && value <= 100.0) {
                return Err(Error::InvalidParameter {
                    parameter,
                    value: value.to_string(),
                    reason: "must be in (0, 100]",
                });
            }
            Ok(())
        }
        match *self {
            Self::Fixed { traces, .. } => at_least_one("traces", traces),
            Self::Offline {
                traces,
                keep_percent,
                ..
            } => {
                at_least_one("traces", traces)?;
                percent("keep_percent", keep_percent)
            }
            Self::Online {
                warmup_traces,
                max_traces,
                keep_percent,
                consensus,
                batch_size,
                ..
            } => {
                at_least_one("warmup_traces", warmup_traces)?;
                at_least_one("batch_size", batch_size)?;
                percent("keep_percent", keep_percent)?;
                if max_traces < warmup_traces {
                    return Err(Error::InvalidParameter {
                        parameter: "max_traces",
                        value: max_traces.to_string(),
                        reason: "must be at least warmup_traces",
                    });
                }
                if consensus.is_nan() || consensus <= 0.0 {
                    return Err(Error::InvalidParameter {
                        parameter: "consensus",
                        value: consensus.to_string(),
                        reason: "must be > 0 (values above 1 disable the consensus stop)",
                    });
                }
                Ok(())
            }
            Self::Compat {
                warmup_traces,
                batch_size,
                max_traces,
                percentile,
            } => {
                at_least_one("warmup_traces", warmup_traces)?;
                at_least_one("batch_size", batch_size)?;
                if max_traces < warmup_traces {
                    return Err(Error::InvalidParameter {
                        parameter: "max_traces",
                        value: max_traces.to_string(),
                        reason: "must be at least warmup_traces",
                    });
                }
                // The 0th percentile (the lowest warmup mean) is a valid target, unlike a kept
                // percent of 0.
                if !(0.0..=100.0).contains(&percentile) {
                    return Err(Error::InvalidParameter {
                        parameter: "percentile",
                        value: percentile.to_string(),
                        reason: "must be in [0, 100]",
                    });
                }
                Ok(())
            }
        }
    }

    /// A fresh decision state for one prompt.
    pub fn start(&self) -> PolicyState {
        PolicyState {
            config: self.clone(),
            threshold: None,
        }
    }
}

/// Which part of a policy's schedule a batch of traces belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// All traces at once (fixed and offline policies).
    Full,
    /// Warmup traces that set a threshold.
    Warmup,
    /// Traces sampled after the warmup.
    Adaptive,
}

/// What to do next for one prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Step {
    /// Start `count` more traces; cut any of them as soon as a full window's group confidence is
    /// below `stop_below`.
    Generate {
        /// Traces to start.
        count: usize,
        /// Schedule phase.
        phase: Phase,
        /// Termination threshold on group confidence, if any.
        stop_below: Option<f64>,
    },
    /// Sampling is over.
    Finish(FinishReason),
}

/// Why sampling stopped for a prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum FinishReason {
    /// The fixed number of traces was generated.
    AllGenerated {
        /// Traces generated.
        traces: usize,
    },
    /// The budget of traces is spent.
    Budget {
        /// Traces generated.
        traces: usize,
        /// Consensus reached at that point (if any trace voted).
        consensus: Option<f64>,
    },
    /// The weighted consensus reached tau.
    Consensus {
        /// Consensus `V(best)/Σ V`.
        consensus: f64,
        /// The target tau.
        tau: f64,
        /// Traces generated.
        traces: usize,
    },
    /// (compat) The newest batch's mean confidence reached the warmup percentile.
    ConfidenceReached {
        /// Mean confidence of the newest batch.
        batch_mean: f64,
        /// The warmup percentile it had to reach.
        target: f64,
        /// Traces generated.
        traces: usize,
    },
}

/// The final decision for a prompt: which traces voted and the vote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision<A = String> {
    /// The vote among the traces that count; `None` when no trace could vote.
    pub vote: Option<VoteOutcome<A>>,
    /// Indices of the traces whose ballots counted.
    pub voters: Vec<usize>,
    /// The confidence threshold in force (online: termination threshold; offline: filter threshold).
    pub threshold: Option<f64>,
}

/// Decision state of a policy for one prompt. Cheap to create; see [`PolicyConfig::start`].
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyState {
    config: PolicyConfig,
    threshold: Option<f64>,
}

impl PolicyState {
    /// The policy.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// The termination threshold, once the warmup has set it.
    pub fn threshold(&self) -> Option<f64> {
        self.threshold
    }

    /// The next step given every trace of this prompt so far (in index order).
    pub fn next_step<A: Ord + Clone>(&mut self, history: &[TraceOutcome<A>]) -> Step {
        match self.config {
            PolicyConfig::Fixed { traces, .. } | PolicyConfig::Offline { traces, .. } => {
                fixed::next_step(traces, history.len())
            }
            PolicyConfig::Online {
                warmup_traces,
                max_traces,
                keep_percent,
                consensus,
                batch_size,
                voting,
            } => online::next_step(
                &online::Schedule {
                    warmup_traces,
                    max_traces,
                    keep_percent,
                    consensus,
                    batch_size,
                    voting,
                },
                &mut self.threshold,
                history,
            ),
            PolicyConfig::Compat {
                warmup_traces,
                batch_size,
                max_traces,
                percentile,
            } => compat::next_step(
                &compat::Schedule {
                    warmup_traces,
                    batch_size,
                    max_traces,
                    percentile,
                },
                &mut self.threshold,
                history,
            ),
        }
    }

    /// Which traces vote and how the vote comes out, given every trace of the prompt.
    ///
    /// Terminated traces and traces without an answer never vote. Online: every completed trace
    /// votes, warmup traces included, weighted by lowest-group confidence. Offline: the top
    /// `keep_percent`% by the metric vote.
    pub fn decide<A: Ord + Clone>(&self, history: &[TraceOutcome<A>]) -> Decision<A> {
        let ballot_box = match self.config {
            PolicyConfig::Fixed { voting, .. } => fixed::ballot_box(history.len(), voting),
            PolicyConfig::Offline {
                keep_percent,
                metric,
                voting,
                ..
            } => offline::ballot_box(history, keep_percent, metric, voting),
            PolicyConfig::Online { voting, .. } => {
                online::ballot_box(history.len(), voting, self.threshold)
            }
            PolicyConfig::Compat { .. } => compat::ballot_box(history.len(), self.threshold),
        };
        ballot_box.count(history)
    }
}

/// Which traces may vote, with what weight, and the threshold to report: what a policy decides
/// before the ballots are counted.
pub(crate) struct BallotBox {
    pub(crate) eligible: Vec<bool>,
    pub(crate) threshold: Option<f64>,
    pub(crate) voting: Voting,
    pub(crate) metric: TraceMetric,
}

impl BallotBox {
    /// Everyone may vote.
    pub(crate) fn open(
        traces: usize,
        threshold: Option<f64>,
        voting: Voting,
        metric: TraceMetric,
    ) -> Self {
        Self {
            eligible: vec![true; traces],
            threshold,
            voting,
            metric,
        }
    }

    /// Counts the ballots of eligible, completed traces that have an answer.
    fn count<A: Ord + Clone>(self, history: &[TraceOutcome<A>]) -> Decision<A> {
        let mut ballots = Vec::new();
        let mut voters = Vec::new();
        for (trace, keep) in history.iter().zip(self.eligible) {
            let Some(answer) = trace.answer.as_ref() else {
                continue;
            };
            if !keep || trace.terminated {
                continue;
            }
            voters.push(trace.index);
            ballots.push(Ballot {
                answer: answer.clone(),
                confidence: trace.metric(self.metric),
                terminated: false,
            });
        }
        voters.sort_unstable();
        Decision {
            vote: vote(&ballots, self.voting),
            voters,
            threshold: self.threshold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(index: usize, answer: &str, lowest: f64) -> TraceOutcome {
        TraceOutcome::finished(index, 10, answer, lowest)
    }

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

    #[test]
    fn fixed_generates_all_then_finishes() {
        let mut s = PolicyConfig::fixed(3).start();
        assert_eq!(
            s.next_step::<String>(&[]),
            Step::Generate {
                count: 3,
                phase: Phase::Full,
                stop_below: None
            }
        );
        let h = [t(0, "a", 1.0), t(1, "b", 1.0), t(2, "a", 1.0)];
        assert_eq!(
            s.next_step(&h),
            Step::Finish(FinishReason::AllGenerated { traces: 3 })
        );
        let d = s.decide(&h);
        assert_eq!(d.vote.unwrap().winner, "a");
        assert_eq!(d.voters, vec![0, 1, 2]);
    }

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

    #[test]
    fn compat_stops_when_batch_mean_reaches_warmup_percentile() {
        let mut s = PolicyConfig::compat().start();
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
        let mut s = PolicyConfig::compat().start();
        assert!(matches!(
            s.next_step(&h),
            Step::Finish(FinishReason::Budget { traces: 10, .. })
        ));
    }

    #[test]
    fn validation_names_parameters() {
        let e = PolicyConfig::online(8, 4, 10.0).validate().unwrap_err();
        assert!(e.to_string().contains("max_traces"), "{e}");
        let e = PolicyConfig::offline(4, 0.0).validate().unwrap_err();
        assert!(e.to_string().contains("keep_percent"), "{e}");
        assert!(PolicyConfig::fixed(0).validate().is_err());
        assert!(PolicyConfig::compat().validate().is_ok());
        let compat = |percentile: f64| PolicyConfig::Compat {
            warmup_traces: 3,
            batch_size: 3,
            max_traces: 10,
            percentile,
        };
        for bad in [-1.0, -f64::MIN_POSITIVE, 100.5, f64::NAN, f64::INFINITY] {
            let e = compat(bad).validate().unwrap_err();
            assert!(e.to_string().contains("`percentile`"), "{bad}: {e}");
        }
        assert!(compat(0.0).validate().is_ok() && compat(100.0).validate().is_ok());
    }

    #[test]
    fn config_round_trips_through_json() {
        for c in [
            PolicyConfig::fixed(5),
            PolicyConfig::offline(8, 10.0),
            PolicyConfig::default(),
            PolicyConfig::compat(),
        ] {
            let json = serde_json::to_string(&c).unwrap();
            assert!(json.contains(&format!("\"kind\":\"{}\"", c.kind())));
            assert_eq!(serde_json::from_str::<PolicyConfig>(&json).unwrap(), c);
        }
    }
}
