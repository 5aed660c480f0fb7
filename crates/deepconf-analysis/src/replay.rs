//! Offline replay of sampling policies on stored full traces.
//!
//! One expensive run generates `N` full traces per instance (fixed-N policy). The replay then asks,
//! for any other policy, what a live run with the same seeds would have done: trace `i` of the live
//! run is stored trace `i` (same derived seed), a trace is cut at the first token where a full
//! window's group confidence falls below the policy's threshold (the same prefix-sum arithmetic as
//! [`deepconf_core::confidence::StreamingConfidence`], so decisions are bit-identical), traces the
//! policy would never have started are not counted, and the decision logic is
//! [`deepconf_core::policy::PolicyState`] itself. A cut trace keeps only the tokens up to the cut and
//! does not vote.

use std::collections::BTreeMap;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use deepconf_core::confidence::{ConfidenceConfig, summarize};
use deepconf_core::policy::{FinishReason, PolicyConfig, Step, TraceOutcome, Voting};

use deepconf_records::RunRecords;
use deepconf_refusal::RefusalLabel;

use crate::confusion::{ConfusionMatrix, Labelled, Metric};
use crate::error::{Error, Result};

/// One stored full trace, prepared for replay.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayTrace {
    /// Prefix sums of the token confidences (`n + 1` values, starting at 0).
    prefix: Vec<f64>,
    /// The full trace's outcome (metrics of all its tokens).
    full: TraceOutcome<RefusalLabel>,
}

impl ReplayTrace {
    /// Prepares a trace from its token confidences and the label it votes with; `Err` for an
    /// invalid `config`.
    pub fn new(
        index: usize,
        token_confidences: &[f64],
        answer: Option<RefusalLabel>,
        config: &ConfidenceConfig,
    ) -> Result<Self> {
        let mut prefix = Vec::with_capacity(token_confidences.len() + 1);
        let mut running = 0.0;
        prefix.push(running);
        for &c in token_confidences {
            running += c;
            prefix.push(running);
        }
        let summary = summarize(token_confidences, config)?;
        let full = TraceOutcome {
            index,
            tokens: token_confidences.len(),
            terminated: false,
            answer,
            mean: summary.map_or(0.0, |s| s.mean),
            lowest_group: summary.map_or(0.0, |s| s.lowest_group),
            bottom_group: summary.map_or(0.0, |s| s.bottom_group),
            tail: summary.map_or(0.0, |s| s.tail),
        };
        Ok(Self { prefix, full })
    }

    /// Generated tokens of the full trace.
    pub fn n_tokens(&self) -> usize {
        self.prefix.len() - 1
    }

    /// Tokens generated when a live run cuts this trace at group confidence `< threshold`, or
    /// `None` when it is never cut. The cut happens at the first full window (of `window` tokens)
    /// whose mean is below the threshold; a trace shorter than the window is never cut.
    pub fn cut_at(&self, window: usize, threshold: f64) -> Option<usize> {
        let n = self.n_tokens();
        if window == 0 || n < window {
            return None;
        }
        let w = window as f64;
        (window..=n).find(|&end| (self.prefix[end] - self.prefix[end - window]) / w < threshold)
    }

    /// What the policy sees of this trace when sampled under `stop_below`.
    fn outcome(
        &self,
        stop_below: Option<f64>,
        config: &ConfidenceConfig,
    ) -> TraceOutcome<RefusalLabel> {
        let cut = stop_below.and_then(|s| self.cut_at(config.window, s));
        let Some(at) = cut else {
            return self.full.clone();
        };
        let window = config.window;
        let crossing = (self.prefix[at] - self.prefix[at - window]) / window as f64;
        let tail = config.tail.clamp(1, at);
        TraceOutcome {
            index: self.full.index,
            tokens: at,
            terminated: true,
            answer: self.full.answer,
            mean: self.prefix[at] / at as f64,
            // Every earlier window was at or above the threshold, so the crossing window is the
            // lowest. Bottom-p is approximated by it: no policy reads metrics of a cut trace.
            lowest_group: crossing,
            bottom_group: crossing,
            tail: (self.prefix[at] - self.prefix[at - tail]) / tail as f64,
        }
    }
}

/// One instance's stored traces.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayInstance {
    /// Instance id.
    pub instance_id: String,
    /// Gold: harmful prompt?
    pub gold_harmful: Option<bool>,
    /// Stored traces in index order.
    pub traces: Vec<ReplayTrace>,
}

impl ReplayInstance {
    /// An instance from its traces.
    pub fn new(
        instance_id: impl Into<String>,
        gold_harmful: Option<bool>,
        traces: Vec<ReplayTrace>,
    ) -> Self {
        Self {
            instance_id: instance_id.into(),
            gold_harmful,
            traces,
        }
    }

    /// Tokens of all stored traces (the full-budget baseline).
    pub fn full_tokens(&self) -> usize {
        self.traces.iter().map(ReplayTrace::n_tokens).sum()
    }
}

/// A policy to replay, with its label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayPolicy {
    /// Display label (e.g. `online keep 10% (DeepConf-low)`).
    pub label: String,
    /// Percent kept, for threshold policies.
    pub keep_percent: Option<f64>,
    /// The policy.
    pub config: PolicyConfig,
}

/// Settings of the standard policy grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplayGrid {
    /// Warmup traces of the online policies (capped at the stored traces).
    pub warmup_traces: usize,
    /// Batch size after the warmup.
    pub batch_size: usize,
    /// Consensus tau; `> 1` disables the consensus stop.
    pub consensus: f64,
    /// Percents kept to sweep (threshold = the `100 - keep` percentile of the warmup).
    pub keep_percents: Vec<f64>,
    /// Percents kept of online policies replayed once more without the consensus stop, so that
    /// every trace after the warmup meets the threshold (when most instances stop on consensus
    /// after the warmup, the sweep alone never shows the threshold acting).
    pub without_consensus_stop: Vec<f64>,
}

/// A consensus tau that is never reached (consensus is at most 1): the online policy samples its
/// whole budget and only the confidence threshold cuts traces.
pub const CONSENSUS_OFF: f64 = 2.0;

impl Default for ReplayGrid {
    /// Warmup 4, batches of 4, tau 0.95, keep 90%, 80%, ..., 10% (threshold percentiles 10..90),
    /// and keep 10% and 90% once more without the consensus stop.
    fn default() -> Self {
        Self {
            warmup_traces: 4,
            batch_size: 4,
            consensus: 0.95,
            keep_percents: (1..=9).rev().map(|k| f64::from(k) * 10.0).collect(),
            without_consensus_stop: vec![10.0, 90.0],
        }
    }
}

/// The standard policies for `n_traces` stored traces per instance: fixed N (the full-budget
/// baseline, first), a single trace (n = 1), offline DeepConf-low and -high, the online sweep of
/// [`ReplayGrid::keep_percents`] (keep 10% is DeepConf-low, 90% DeepConf-high) and the prototype's
/// schedule (3 warmup, batches of 3, up to 10 traces).
pub fn standard_policies(n_traces: usize, grid: &ReplayGrid) -> Vec<ReplayPolicy> {
    let n = n_traces.max(1);
    let mut policies = vec![ReplayPolicy {
        label: format!("fixed N={n}"),
        keep_percent: None,
        config: PolicyConfig::fixed(n),
    }];
    if n > 1 {
        policies.push(ReplayPolicy {
            label: "single trace (n=1)".into(),
            keep_percent: None,
            config: PolicyConfig::fixed(1),
        });
    }
    for keep in [10.0, 90.0] {
        policies.push(ReplayPolicy {
            label: format!("offline keep {keep}% ({})", deepconf_name(keep)),
            keep_percent: Some(keep),
            config: PolicyConfig::offline(n, keep),
        });
    }
    let warmup = grid.warmup_traces.clamp(1, n);
    let online = |keep: f64, consensus: f64| {
        let name = match deepconf_name(keep) {
            "" => format!("online keep {keep}%"),
            deepconf => format!("online keep {keep}% ({deepconf})"),
        };
        ReplayPolicy {
            label: if consensus > 1.0 {
                format!("{name}, no consensus stop")
            } else {
                name
            },
            keep_percent: Some(keep),
            config: PolicyConfig::Online {
                warmup_traces: warmup,
                max_traces: n,
                keep_percent: keep,
                consensus,
                batch_size: grid.batch_size.max(1),
                voting: Voting::ConfidenceWeighted,
            },
        }
    };
    for &keep in &grid.keep_percents {
        policies.push(online(keep, grid.consensus));
    }
    // Without a warmup-free budget there is nothing for the threshold to cut.
    if grid.consensus <= 1.0 && n > warmup {
        for &keep in &grid.without_consensus_stop {
            policies.push(online(keep, CONSENSUS_OFF));
        }
    }
    if n >= 3 {
        policies.push(ReplayPolicy {
            label: "compat (prototype schedule)".into(),
            keep_percent: None,
            config: PolicyConfig::Prototype {
                warmup_traces: 3,
                batch_size: 3,
                max_traces: n.min(10),
                percentile: 50.0,
            },
        });
    }
    policies
}

fn deepconf_name(keep: f64) -> &'static str {
    if keep == 10.0 {
        "DeepConf-low"
    } else if keep == 90.0 {
        "DeepConf-high"
    } else {
        ""
    }
}

/// What a policy did on one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceReplay {
    /// Tokens generated.
    pub tokens: usize,
    /// Traces sampled.
    pub traces: usize,
    /// Traces cut short.
    pub terminated: usize,
    /// Traces whose ballot counted.
    pub voters: usize,
    /// Behaviour: refused? (`None` when no trace voted).
    pub refused: Option<bool>,
    /// Sampling stopped because the vote's consensus reached the policy's tau.
    #[serde(default)]
    pub consensus_stop: bool,
    /// The traces the threshold cut: `(trace index, tokens generated before the cut)`.
    #[serde(default)]
    pub cuts: Vec<(usize, usize)>,
}

/// The result of replaying one policy over a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyReplay {
    /// The policy.
    pub policy: ReplayPolicy,
    /// Tokens generated under the policy.
    pub tokens: u64,
    /// Tokens of the full-budget baseline (every stored trace to its end).
    pub baseline_tokens: u64,
    /// `1 - tokens / baseline_tokens`, counted in generated tokens.
    pub token_savings: f64,
    /// Mean tokens per instance.
    pub tokens_per_instance: f64,
    /// Traces sampled.
    pub traces: u64,
    /// Traces cut short by the confidence threshold.
    pub terminated: u64,
    /// Instances whose sampling stopped at the consensus tau (before the budget).
    #[serde(default)]
    pub consensus_stops: u64,
    /// Confusion matrix over instances with gold and behaviour.
    pub matrix: ConfusionMatrix,
    /// Point estimates of every metric.
    pub metrics: BTreeMap<Metric, Option<f64>>,
    /// Instances without behaviour (no trace voted) among those with gold.
    pub no_behaviour: u64,
    /// Per-instance results (not serialised).
    #[serde(skip)]
    pub instances: Vec<InstanceReplay>,
}

/// Stored full traces of a run, prepared for replay.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplaySet {
    config: ConfidenceConfig,
    instances: Vec<ReplayInstance>,
}

impl ReplaySet {
    /// A replay set from prepared instances, under the run's confidence configuration.
    pub fn new(config: ConfidenceConfig, instances: Vec<ReplayInstance>) -> Result<Self> {
        config.validate()?;
        Ok(Self { config, instances })
    }

    /// Prepares every instance of a run (in parallel). The run should have generated full traces
    /// (a fixed or offline policy); traces the live policy cut are replayed as their stored prefix.
    pub fn from_records(records: &RunRecords) -> Result<Self> {
        let config = records.manifest.config.confidence.clone();
        config.validate()?;
        let instances = records
            .instances
            .par_iter()
            .zip(records.traces.par_iter())
            .map(|(row, traces)| {
                let prepared = traces
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        ReplayTrace::new(i, &t.token_confidences, t.refusal_label, &config)
                    })
                    .collect::<Result<_>>()?;
                Ok(ReplayInstance::new(
                    row.instance_id.clone(),
                    row.gold_harmful,
                    prepared,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Self { config, instances })
    }

    /// The prepared instances.
    pub fn instances(&self) -> &[ReplayInstance] {
        &self.instances
    }

    /// The confidence configuration (window, tail, ...).
    pub fn config(&self) -> &ConfidenceConfig {
        &self.config
    }

    /// The most traces stored for any instance.
    pub fn max_traces(&self) -> usize {
        self.instances
            .iter()
            .map(|i| i.traces.len())
            .max()
            .unwrap_or(0)
    }

    /// Replays one policy on one instance.
    pub fn replay_instance(
        &self,
        instance: &ReplayInstance,
        policy: &ReplayPolicy,
    ) -> Result<InstanceReplay> {
        let mut state = policy.config.start();
        let mut history: Vec<TraceOutcome<RefusalLabel>> =
            Vec::with_capacity(policy.config.max_traces());
        let mut tokens = 0;
        let mut terminated = 0;
        let consensus_stop = loop {
            match state.next_step(&history) {
                Step::Finish(reason) => break matches!(reason, FinishReason::Consensus { .. }),
                Step::Generate {
                    count, stop_below, ..
                } => {
                    let needed = history.len() + count;
                    if needed > instance.traces.len() {
                        return Err(Error::InsufficientTraces {
                            policy: policy.label.clone(),
                            instance_id: instance.instance_id.clone(),
                            needed,
                            stored: instance.traces.len(),
                        });
                    }
                    for trace in &instance.traces[history.len()..needed] {
                        let outcome = trace.outcome(stop_below, &self.config);
                        tokens += outcome.tokens;
                        terminated += usize::from(outcome.terminated);
                        history.push(outcome);
                    }
                }
            }
        };
        let decision = state.decide(&history);
        Ok(InstanceReplay {
            tokens,
            traces: history.len(),
            terminated,
            voters: decision.voters.len(),
            refused: decision.vote.as_ref().map(|v| v.winner.is_refusal()),
            consensus_stop,
            cuts: history
                .iter()
                .filter(|t| t.terminated)
                .map(|t| (t.index, t.tokens))
                .collect(),
        })
    }

    /// Replays one policy over every instance (in parallel).
    pub fn replay(&self, policy: &ReplayPolicy) -> Result<PolicyReplay> {
        policy.config.validate()?;
        let per_instance: Vec<InstanceReplay> = self
            .instances
            .par_iter()
            .map(|instance| self.replay_instance(instance, policy))
            .collect::<Result<_>>()?;
        let baseline_tokens: u64 = self.instances.iter().map(|i| i.full_tokens() as u64).sum();
        let tokens: u64 = per_instance.iter().map(|r| r.tokens as u64).sum();
        let mut matrix = ConfusionMatrix::default();
        let mut no_behaviour = 0;
        for (instance, result) in self.instances.iter().zip(&per_instance) {
            match (instance.gold_harmful, result.refused) {
                (Some(harmful), Some(refused)) => matrix.add(Labelled { harmful, refused }),
                (Some(_), None) => no_behaviour += 1,
                (None, _) => {}
            }
        }
        Ok(PolicyReplay {
            policy: policy.clone(),
            tokens,
            baseline_tokens,
            token_savings: if baseline_tokens > 0 {
                1.0 - tokens as f64 / baseline_tokens as f64
            } else {
                0.0
            },
            tokens_per_instance: if per_instance.is_empty() {
                0.0
            } else {
                tokens as f64 / per_instance.len() as f64
            },
            traces: per_instance.iter().map(|r| r.traces as u64).sum(),
            terminated: per_instance.iter().map(|r| r.terminated as u64).sum(),
            consensus_stops: per_instance
                .iter()
                .map(|r| u64::from(r.consensus_stop))
                .sum(),
            metrics: Metric::ALL.iter().map(|&m| (m, matrix.metric(m))).collect(),
            matrix,
            no_behaviour,
            instances: per_instance,
        })
    }

    /// Replays several policies.
    pub fn replay_all(&self, policies: &[ReplayPolicy]) -> Result<Vec<PolicyReplay>> {
        policies.iter().map(|p| self.replay(p)).collect()
    }
}
