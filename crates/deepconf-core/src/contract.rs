//! What the runner checks of a backend's output: every [`TokenStep`] it reports, the traces it
//! returns, and the metrics computed from them. A broken rule is a [`Violation`], carried by
//! [`Error::Contract`](crate::Error::Contract) with the backend, trace and token it concerns.

use std::fmt;

use deepconf_confidence::{LOGPROB_TOLERANCE, is_valid_logprob, token_confidence};

use crate::{StopReason, TokenStep, TraceSpec};

/// How a backend broke the [`LogprobModel`](crate::LogprobModel) contract, with the offending
/// values. [`Error::Contract`](crate::Error::Contract) says which backend, trace and token.
///
/// The checks on one token (see [`LogprobModel`](crate::LogprobModel) for the contract they
/// enforce), with `tol(x) = LOGPROB_TOLERANCE * max(1, |x|)` and
/// [`LOGPROB_TOLERANCE`](deepconf_confidence::LOGPROB_TOLERANCE) `= 1e-4`:
/// - at least `min(k, vocabulary)` candidates, where `k` is the run's `confidence.top_k` and the
///   vocabulary is [`Capabilities::vocabulary_size`](crate::Capabilities::vocabulary_size) (at least
///   one when the backend declares
///   [`partial_top_logprobs`](crate::Capabilities::partial_top_logprobs));
/// - every candidate and the sampled token: finite and `<= LOGPROB_TOLERANCE`;
/// - `top_token_ids` and `top_tokens`, when given, as long as `top_logprobs`;
/// - the sampled token's log-probability at most `top + tol(top)`, where `top` is the largest
///   candidate's;
/// - when the sampled token's id and the candidates' ids are known: if the id is listed, its
///   log-probability equals the listed one within `tol(listed)`; if not, it is at most
///   `last + tol(last)`, where `last` is the smallest candidate's (the list holds the most likely
///   tokens, so a token left out cannot be more likely than one kept).
///
/// An unsorted candidate list is no violation: the runner sorts it (keeping ids and texts paired)
/// as [`TraceBuilder`](crate::TraceBuilder) does.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Violation {
    /// Fewer top-k candidates than the run needs.
    TooFewCandidates {
        /// Candidates reported.
        got: usize,
        /// Candidates needed.
        needed: usize,
    },
    /// A candidate's log-probability is NaN, infinite, or above 0 by more than the tolerance.
    InvalidCandidate {
        /// Position in the reported list (0-based, before any sorting).
        candidate: usize,
        /// The value reported.
        value: f32,
    },
    /// The sampled token's log-probability is NaN, infinite, or above 0 by more than the
    /// tolerance.
    InvalidSampled {
        /// The value reported.
        value: f32,
    },
    /// `top_token_ids` or `top_tokens` is neither empty nor as long as `top_logprobs`.
    MismatchedCandidateList {
        /// `top_token_ids` or `top_tokens`.
        list: &'static str,
        /// Its length.
        len: usize,
        /// The length of `top_logprobs`.
        expected: usize,
    },
    /// The sampled token is more likely than the most likely candidate.
    SampledAboveTop {
        /// The sampled token's log-probability.
        sampled: f32,
        /// The largest candidate log-probability.
        top: f32,
    },
    /// The sampled token is among the candidates with another log-probability.
    SampledDiffersFromList {
        /// The sampled token's id.
        token_id: u32,
        /// The sampled token's log-probability.
        sampled: f32,
        /// The candidate's log-probability.
        listed: f32,
    },
    /// The sampled token is not among the candidates yet more likely than the least likely of
    /// them.
    UnlistedSampledAboveLast {
        /// The sampled token's id.
        token_id: u32,
        /// The sampled token's log-probability.
        sampled: f32,
        /// The smallest candidate log-probability.
        last: f32,
    },
    /// A [`TraceBuilder`](crate::TraceBuilder) got a token after its trace ended.
    TokenAfterEnd {
        /// Why the trace had ended.
        reason: StopReason,
    },
    /// The observer saw a token other than the one the returned trace holds at that position
    /// (their token confidences differ).
    ObserverMismatch {
        /// Token confidence of the token the observer saw.
        shown: f64,
        /// Token confidence of the token in the returned trace.
        returned: f64,
    },
    /// The observer was called for a trace the batch did not ask for.
    UnknownTrace {
        /// The trace named.
        spec: TraceSpec,
    },
    /// [`generate_batch`](crate::LogprobModel::generate_batch) returned another number of traces
    /// than asked.
    WrongTraceCount {
        /// Traces returned.
        returned: usize,
        /// Traces asked for.
        requested: usize,
    },
    /// A returned trace is not the one asked for at its position.
    UnexpectedTrace {
        /// The trace returned.
        returned: TraceSpec,
        /// The trace asked for.
        expected: TraceSpec,
    },
    /// A confidence metric, threshold or vote weight computed from the backend's output is not
    /// finite (cannot happen once every token passes the checks above; kept as a last guard).
    NonFiniteMetric {
        /// Which value (`mean`, `lowest_group`, `threshold`, `vote weight`, ...).
        metric: &'static str,
        /// The value.
        value: f64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooFewCandidates { got, needed } => write!(
                f,
                "{got} top-k candidates, at least {needed} needed (declare a smaller vocabulary \
                 or partial top-k lists in Capabilities if that is the model's nature)"
            ),
            Self::InvalidCandidate { candidate, value } => write!(
                f,
                "candidate {candidate} has log-probability {value}: must be finite and <= 0 \
                 (within {LOGPROB_TOLERANCE})"
            ),
            Self::InvalidSampled { value } => write!(
                f,
                "the sampled token has log-probability {value}: must be finite and <= 0 \
                 (within {LOGPROB_TOLERANCE})"
            ),
            Self::MismatchedCandidateList {
                list,
                len,
                expected,
            } => write!(
                f,
                "{list} has {len} entries for {expected} top-k log-probabilities"
            ),
            Self::SampledAboveTop { sampled, top } => write!(
                f,
                "the sampled token's log-probability {sampled} is above the most likely \
                 candidate's {top}"
            ),
            Self::SampledDiffersFromList {
                token_id,
                sampled,
                listed,
            } => write!(
                f,
                "the sampled token {token_id} has log-probability {sampled} but {listed} among \
                 the candidates"
            ),
            Self::UnlistedSampledAboveLast {
                token_id,
                sampled,
                last,
            } => write!(
                f,
                "the sampled token {token_id} is not among the candidates, yet its \
                 log-probability {sampled} is above the least likely candidate's {last}"
            ),
            Self::TokenAfterEnd { reason } => {
                write!(
                    f,
                    "a token arrived after the trace ended ({})",
                    reason.as_str()
                )
            }
            Self::ObserverMismatch { shown, returned } => write!(
                f,
                "the observer saw a token of confidence {shown}, the returned trace holds one \
                 of confidence {returned}"
            ),
            Self::UnknownTrace { spec } => write!(
                f,
                "a token of trace {} (seed {}), which the batch did not ask for",
                spec.index, spec.seed
            ),
            Self::WrongTraceCount {
                returned,
                requested,
            } => write!(
                f,
                "generate_batch returned {returned} traces for {requested} requested"
            ),
            Self::UnexpectedTrace { returned, expected } => write!(
                f,
                "generate_batch returned trace {} (seed {}) where trace {} (seed {}) was expected",
                returned.index, returned.seed, expected.index, expected.seed
            ),
            Self::NonFiniteMetric { metric, value } => {
                write!(f, "{metric} is {value}, not a finite number")
            }
        }
    }
}

/// `LOGPROB_TOLERANCE`, scaled up for log-probabilities far below -1 (whose f32 rounding is
/// larger than the tolerance itself).
fn slack(reference: f32) -> f32 {
    LOGPROB_TOLERANCE * reference.abs().max(1.0)
}

/// Checks one token against the contract (see [`Violation`]); `min_candidates >= 1`.
pub(crate) fn check_step(step: &TokenStep, min_candidates: usize) -> Result<(), Violation> {
    let candidates = &step.top_logprobs;
    if candidates.len() < min_candidates.max(1) {
        return Err(Violation::TooFewCandidates {
            got: candidates.len(),
            needed: min_candidates.max(1),
        });
    }
    if let Some((candidate, &value)) = candidates
        .iter()
        .enumerate()
        .find(|&(_, &value)| !is_valid_logprob(value))
    {
        return Err(Violation::InvalidCandidate { candidate, value });
    }
    if !is_valid_logprob(step.logprob) {
        return Err(Violation::InvalidSampled {
            value: step.logprob,
        });
    }
    for (list, len) in [
        ("top_token_ids", step.top_token_ids.len()),
        ("top_tokens", step.top_tokens.len()),
    ] {
        if len != 0 && len != candidates.len() {
            return Err(Violation::MismatchedCandidateList {
                list,
                len,
                expected: candidates.len(),
            });
        }
    }
    // Every value is finite here, so `max` and `min` are plain.
    let top = candidates.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sampled = step.logprob;
    if sampled > top + slack(top) {
        return Err(Violation::SampledAboveTop { sampled, top });
    }
    if let (Some(token_id), false) = (step.token_id, step.top_token_ids.is_empty()) {
        match step.top_token_ids.iter().position(|&id| id == token_id) {
            Some(at) => {
                let listed = candidates[at];
                if (sampled - listed).abs() > slack(listed) {
                    return Err(Violation::SampledDiffersFromList {
                        token_id,
                        sampled,
                        listed,
                    });
                }
            }
            None => {
                let last = candidates.iter().copied().fold(f32::INFINITY, f32::min);
                if sampled > last + slack(last) {
                    return Err(Violation::UnlistedSampledAboveLast {
                        token_id,
                        sampled,
                        last,
                    });
                }
            }
        }
    }
    Ok(())
}

/// True when the candidates are most likely first.
fn is_sorted(top_logprobs: &[f32]) -> bool {
    top_logprobs.is_sorted_by(|a, b| a >= b)
}

/// Sorts the candidates most likely first, keeping their ids and texts paired with them.
pub(crate) fn sort_candidates(step: &mut TokenStep) {
    if is_sorted(&step.top_logprobs) {
        return;
    }
    let mut order: Vec<usize> = (0..step.top_logprobs.len()).collect();
    order.sort_by(|&a, &b| step.top_logprobs[b].total_cmp(&step.top_logprobs[a]));
    step.top_logprobs = order.iter().map(|&i| step.top_logprobs[i]).collect();
    if !step.top_token_ids.is_empty() {
        step.top_token_ids = order
            .iter()
            .filter_map(|&i| step.top_token_ids.get(i).copied())
            .collect();
    }
    if !step.top_tokens.is_empty() {
        step.top_tokens = order
            .iter()
            .filter_map(|&i| step.top_tokens.get(i).cloned())
            .collect();
    }
}

/// Token confidence over the `k` most likely candidates, whatever order they were reported in;
/// equal to the value of the same step after [`sort_candidates`], bit for bit.
pub(crate) fn sorted_token_confidence(top_logprobs: &[f32], k: usize) -> f64 {
    if is_sorted(top_logprobs) {
        return token_confidence(top_logprobs, k);
    }
    let mut sorted = top_logprobs.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    token_confidence(&sorted, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(logprob: f32, top: &[f32], token_id: Option<u32>, ids: &[u32]) -> TokenStep {
        TokenStep {
            token_id,
            text: "x".into(),
            logprob,
            top_logprobs: top.to_vec(),
            top_token_ids: ids.to_vec(),
            top_tokens: Vec::new(),
        }
    }

    #[test]
    fn rounding_passes_and_real_violations_do_not() {
        // Float rounding of a probability-1 token, and of a listed value far below -1.
        assert_eq!(
            check_step(&step(1e-7, &[1e-7, -20.0], None, &[]), 2),
            Ok(())
        );
        assert_eq!(
            check_step(&step(-30.000_5, &[-0.1, -30.0], Some(4), &[1, 4]), 2),
            Ok(())
        );
        assert_eq!(
            check_step(&step(-0.1, &[-0.1, 0.5], None, &[]), 2),
            Err(Violation::InvalidCandidate {
                candidate: 1,
                value: 0.5
            })
        );
        assert_eq!(
            check_step(&step(-0.1, &[-0.1, -2.0], Some(4), &[1, 4]), 2),
            Err(Violation::SampledDiffersFromList {
                token_id: 4,
                sampled: -0.1,
                listed: -2.0
            })
        );
        assert_eq!(
            check_step(&step(-1.0, &[-0.1, -2.0], Some(9), &[1, 4]), 2),
            Err(Violation::UnlistedSampledAboveLast {
                token_id: 9,
                sampled: -1.0,
                last: -2.0
            })
        );
        // An unsorted list is checked against its largest value, not its first.
        assert_eq!(check_step(&step(-0.1, &[-2.0, -0.1], None, &[]), 2), Ok(()));
    }

    #[test]
    fn sorting_keeps_ids_paired_and_confidence_matches() {
        let mut s = step(-0.5, &[-3.0, -0.5, -1.0], Some(7), &[1, 7, 2]);
        s.top_tokens = vec!["a".into(), "b".into(), "c".into()];
        let before = sorted_token_confidence(&s.top_logprobs, 2);
        sort_candidates(&mut s);
        assert_eq!(s.top_logprobs, vec![-0.5, -1.0, -3.0]);
        assert_eq!(s.top_token_ids, vec![7, 2, 1]);
        assert_eq!(s.top_tokens, vec!["b", "c", "a"]);
        assert_eq!(
            before.to_bits(),
            token_confidence(&s.top_logprobs, 2).to_bits()
        );
    }
}
