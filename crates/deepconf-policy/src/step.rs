//! What a policy answers: the next [`Step`] (with its [`Phase`] or [`FinishReason`]) and the
//! final [`Decision`], plus the [`BallotBox`] each policy fills before the count. Plain values
//! shared by the policy modules and [`PolicyState`](crate::PolicyState), kept apart from both so
//! that the policies need nothing from the state that dispatches to them.

use serde::{Deserialize, Serialize};

use crate::{Ballot, TraceMetric, TraceOutcome, VoteOutcome, Voting, vote};

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

impl Step {
    /// The warmup traces still to start, if fewer than `warmup_traces` exist: the first phase of
    /// both warmup-based schedules (online and the prototype's), which differ only afterwards.
    pub(crate) fn remaining_warmup(warmup_traces: usize, generated: usize) -> Option<Step> {
        (generated < warmup_traces).then(|| Step::Generate {
            count: warmup_traces - generated,
            phase: Phase::Warmup,
            stop_below: None,
        })
    }
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
    /// ([`PolicyConfig::Prototype`](crate::PolicyConfig::Prototype)) The newest batch's mean
    /// confidence reached the warmup percentile.
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
    pub(crate) fn count<A: Ord + Clone>(self, history: &[TraceOutcome<A>]) -> Decision<A> {
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
