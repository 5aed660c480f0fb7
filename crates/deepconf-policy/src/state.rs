//! Driving a policy for one prompt: [`PolicyState`] answers what to do next
//! ([`Step`](crate::Step)) and, once sampling is over, which traces vote
//! ([`Decision`](crate::Decision)). [`PolicyConfig::start`] lives here, next to the state it
//! creates, so that the configuration needs nothing from the state.

use crate::{Decision, PolicyConfig, Step, TraceOutcome, fixed, offline, online, prototype};

/// Decision state of a policy for one prompt. Cheap to create; see [`PolicyConfig::start`].
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyState {
    config: PolicyConfig,
    threshold: Option<f64>,
}

impl PolicyState {
    /// The state of `config` before any trace.
    pub(crate) fn new(config: PolicyConfig) -> Self {
        Self {
            config,
            threshold: None,
        }
    }

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
            PolicyConfig::Prototype {
                warmup_traces,
                batch_size,
                max_traces,
                percentile,
            } => prototype::next_step(
                &prototype::Schedule {
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
            PolicyConfig::Prototype { .. } => prototype::ballot_box(history.len(), self.threshold),
        };
        ballot_box.count(history)
    }
}

impl PolicyConfig {
    /// A fresh decision state for one prompt.
    pub fn start(&self) -> PolicyState {
        PolicyState::new(self.clone())
    }
}
