//! The live-vs-replay cross-check: does replaying a live run's policy on a fixed-N run's stored full
//! traces give the live run's tokens, traces and votes?
//!
//! Why it should: every instance samples with a seed derived from the run seed and the instance
//! id, and trace `i` of an instance with the seed derived from that and `i`
//! ([`deepconf_core::TraceSpec::derive`]), whatever the policy. So trace `i` of a live online run is
//! the stored full trace `i` of a fixed-N run with the same seed, cut where the policy cut it, and the
//! replay takes the policy's decisions with the same code on the same numbers. What can break it is a
//! backend whose tokens depend on which other traces share its batch (the fixed run decodes `N`
//! traces together, the online run its warmup and then batches), or any difference in the runs'
//! settings; [`cross_check`] refuses the latter and reports the former per instance, down to the
//! first token where a live trace leaves its stored full trace.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use deepconf_core::policy::PolicyConfig;

use crate::error::{Error, Result};
use crate::replay::{ReplayPolicy, ReplaySet};
use deepconf_records::{RunManifest, RunRecords, TraceRow, read_run};

/// Where a live trace stops being a prefix of the stored full trace with the same index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceDivergence {
    /// Trace index within the instance.
    pub trace_index: u32,
    /// 0-based token position of the first differing token confidence (or the stored trace's
    /// length, when the live trace is longer).
    pub token: usize,
}

/// One instance on which the live run and the replay disagree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceMismatch {
    /// Instance id.
    pub instance_id: String,
    /// Tokens the live run generated.
    pub live_tokens: u64,
    /// Tokens the replay counts.
    pub replay_tokens: u64,
    /// Traces the live run sampled.
    pub live_traces: u32,
    /// Traces the replay samples.
    pub replay_traces: u32,
    /// The live run's behaviour (refused?).
    pub live_refused: Option<bool>,
    /// The replay's behaviour.
    pub replay_refused: Option<bool>,
    /// The first live trace that is not a prefix of its stored full trace, if any.
    pub divergence: Option<TraceDivergence>,
}

/// The result of [`cross_check`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveCheck {
    /// The live run's policy, replayed.
    pub policy: PolicyConfig,
    /// Traces per instance in the full run.
    pub full_traces: usize,
    /// Instances of the live run found in the full run (the ones compared).
    pub compared: usize,
    /// Instances on which tokens, traces and vote all agree.
    pub matching: usize,
    /// Instances with equal generated tokens.
    pub tokens_equal: usize,
    /// Instances with equal sampled traces.
    pub traces_equal: usize,
    /// Instances with equal behaviour (the vote's refused/complied).
    pub votes_equal: usize,
    /// Live traces that are prefixes of their stored full traces (token confidences bit-equal).
    pub prefix_traces: usize,
    /// Live traces compared as prefixes.
    pub live_traces: usize,
    /// Tokens of the live run over the compared instances.
    pub live_tokens: u64,
    /// Tokens of the replay over the compared instances.
    pub replay_tokens: u64,
    /// Traces the live run cut by its confidence threshold (all instances).
    #[serde(default)]
    pub live_cut_traces: usize,
    /// Live instances whose sampling stopped by consensus.
    #[serde(default)]
    pub live_consensus_stops: usize,
    /// Traces the replay cut, over the compared instances.
    #[serde(default)]
    pub replay_cut_traces: usize,
    /// Live cut traces compared with the replay (compared instances; the replay cut the same
    /// trace index).
    #[serde(default)]
    pub cut_traces_compared: usize,
    /// Of those, cut at the same token as the replay.
    #[serde(default)]
    pub cut_points_equal: usize,
    /// Live instances the full run does not have (not compared).
    pub missing: Vec<String>,
    /// Every compared instance that disagrees.
    pub mismatches: Vec<InstanceMismatch>,
}

impl LiveCheck {
    /// True when every live instance was compared and agrees on tokens, traces and vote.
    pub fn all_equal(&self) -> bool {
        self.missing.is_empty() && self.compared > 0 && self.matching == self.compared
    }
}

fn not_comparable(field: &str, full: &impl Serialize, live: &impl Serialize) -> Error {
    Error::NotComparable {
        field: field.to_string(),
        full: serde_json::to_string(full).unwrap_or_default(),
        live: serde_json::to_string(live).unwrap_or_default(),
    }
}

/// Fails unless the full run `f` can stand for the live run `l` (same settings, every trace
/// generated, at least the live budget stored); returns the full run's traces per instance.
fn check_comparable(f: &RunManifest, l: &RunManifest) -> Result<usize> {
    if f.config.sampling != l.config.sampling {
        return Err(not_comparable(
            "config.sampling",
            &f.config.sampling,
            &l.config.sampling,
        ));
    }
    if f.config.confidence != l.config.confidence {
        return Err(not_comparable(
            "config.confidence",
            &f.config.confidence,
            &l.config.confidence,
        ));
    }
    if f.model.sha256 != l.model.sha256 || f.model.name != l.model.name {
        return Err(not_comparable("model", &f.model, &l.model));
    }
    if f.classifier != l.classifier {
        return Err(not_comparable("classifier", &f.classifier, &l.classifier));
    }
    if !matches!(
        f.config.policy,
        PolicyConfig::Fixed { .. } | PolicyConfig::Offline { .. }
    ) {
        return Err(not_comparable(
            "config.policy (the full run must generate every trace: fixed or offline)",
            &f.config.policy,
            &l.config.policy,
        ));
    }
    let full_traces = f.config.policy.max_traces();
    let needed = l.config.policy.max_traces();
    if full_traces < needed {
        return Err(not_comparable(
            "config.policy traces (the full run must store at least the live policy's budget)",
            &full_traces,
            &needed,
        ));
    }
    Ok(full_traces)
}

/// Replays `live`'s policy on `full`'s stored traces and compares, per instance, the generated
/// tokens, the sampled traces and the behaviour with what `live` recorded; each live trace is also
/// checked to be a prefix of the stored full trace with the same index.
///
/// `full` must be a fixed-N (or offline) run with at least as many traces per instance as the live
/// policy can sample, every trace complete, and the same sampling settings (seed, temperature,
/// top-p, top-k, max tokens), confidence settings, model and classifier as `live`; otherwise the
/// comparison means nothing and this fails with [`Error::NotComparable`] naming the field.
pub fn cross_check(full: &RunRecords, live: &RunRecords) -> Result<LiveCheck> {
    let (f, l) = (&full.manifest, &live.manifest);
    let full_traces = check_comparable(f, l)?;
    let set = ReplaySet::from_records(full)?;
    let policy = ReplayPolicy {
        label: l.config.policy.label(),
        keep_percent: None,
        config: l.config.policy.clone(),
    };
    policy.config.validate()?;
    let index: HashMap<&str, usize> = full
        .instances
        .iter()
        .enumerate()
        .map(|(i, row)| (row.instance_id.as_str(), i))
        .collect();
    let mut check = LiveCheck {
        policy: l.config.policy.clone(),
        full_traces,
        compared: 0,
        matching: 0,
        tokens_equal: 0,
        traces_equal: 0,
        votes_equal: 0,
        prefix_traces: 0,
        live_traces: 0,
        live_tokens: 0,
        replay_tokens: 0,
        live_cut_traces: live
            .traces
            .iter()
            .flatten()
            .filter(|t| t.is_terminated())
            .count(),
        live_consensus_stops: live
            .instances
            .iter()
            .filter(|r| stopped_by_consensus(&r.finish_reason))
            .count(),
        replay_cut_traces: 0,
        cut_traces_compared: 0,
        cut_points_equal: 0,
        missing: Vec::new(),
        mismatches: Vec::new(),
    };
    for (row, live_traces) in live.instances.iter().zip(&live.traces) {
        let Some(&i) = index.get(row.instance_id.as_str()) else {
            check.missing.push(row.instance_id.clone());
            continue;
        };
        let stored = &full.traces[i];
        if let Some(cut) = stored.iter().find(|t| t.is_terminated()) {
            return Err(Error::Inconsistent {
                path: "traces".into(),
                reason: format!(
                    "trace {} of instance `{}` in the full run was cut, so it is not a full trace",
                    cut.trace_index, row.instance_id
                ),
            });
        }
        let replayed = set.replay_instance(&set.instances()[i], &policy)?;
        check.replay_cut_traces += replayed.cuts.len();
        let divergence = compare_traces(&mut check, live_traces, stored, &replayed.cuts);
        let replay_tokens = replayed.tokens as u64;
        let replay_traces = replayed.traces as u32;
        let tokens_equal = replay_tokens == row.tokens_generated;
        let traces_equal = replay_traces == row.traces_used;
        let votes_equal = replayed.refused == row.behaviour_refused;
        check.compared += 1;
        check.live_tokens += row.tokens_generated;
        check.replay_tokens += replay_tokens;
        check.tokens_equal += usize::from(tokens_equal);
        check.traces_equal += usize::from(traces_equal);
        check.votes_equal += usize::from(votes_equal);
        if tokens_equal && traces_equal && votes_equal {
            check.matching += 1;
        } else {
            check.mismatches.push(InstanceMismatch {
                instance_id: row.instance_id.clone(),
                live_tokens: row.tokens_generated,
                replay_tokens,
                live_traces: row.traces_used,
                replay_traces,
                live_refused: row.behaviour_refused,
                replay_refused: replayed.refused,
                divergence,
            });
        }
    }
    Ok(check)
}

/// Counts `live_traces` that are prefixes of their `stored` full traces and live cuts at the
/// replay's cut points into `check`; returns the first live trace that leaves its stored one.
fn compare_traces(
    check: &mut LiveCheck,
    live_traces: &[TraceRow],
    stored: &[TraceRow],
    cuts: &[(usize, usize)],
) -> Option<TraceDivergence> {
    let mut divergence = None;
    for trace in live_traces {
        check.live_traces += 1;
        if trace.is_terminated() {
            let replay_cut = cuts
                .iter()
                .find(|(index, _)| *index == trace.trace_index as usize);
            if let Some(&(_, tokens)) = replay_cut {
                check.cut_traces_compared += 1;
                check.cut_points_equal += usize::from(tokens == trace.n_tokens as usize);
            }
        }
        let full_trace = stored.iter().find(|t| t.trace_index == trace.trace_index);
        let at = match full_trace {
            None => Some(0),
            Some(full_trace) => {
                first_difference(&trace.token_confidences, &full_trace.token_confidences)
            }
        };
        match at {
            None => check.prefix_traces += 1,
            Some(token) if divergence.is_none() => {
                divergence = Some(TraceDivergence {
                    trace_index: trace.trace_index,
                    token,
                });
            }
            Some(_) => {}
        }
    }
    divergence
}

/// True when an instance row's finish reason (`deepconf_core::policy::FinishReason` as JSON) is
/// the consensus stop.
fn stopped_by_consensus(finish_reason: &serde_json::Value) -> bool {
    finish_reason.get("reason").and_then(|r| r.as_str()) == Some("consensus")
}

/// The first position where `live` is not a bit-equal prefix of `full`, or `None` when it is.
fn first_difference(live: &[f64], full: &[f64]) -> Option<usize> {
    live.iter()
        .zip(full)
        .position(|(a, b)| a.to_bits() != b.to_bits())
        .or_else(|| (live.len() > full.len()).then_some(full.len()))
}

/// Reads the full and the live run directories and [`cross_check`]s them.
pub fn cross_check_dirs(
    full_dir: &std::path::Path,
    live_dir: &std::path::Path,
) -> Result<LiveCheck> {
    let full = read_run(full_dir)?;
    let live = read_run(live_dir)?;
    cross_check(&full, &live)
}
