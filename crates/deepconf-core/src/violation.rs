//! What a broken [`LogprobModel`](crate::LogprobModel) contract looks like: the [`Violation`]
//! values alone. The checks that find them live in `contract`; the data lives here so that
//! [`Error`](crate::Error) can carry a violation without depending on the checks (which use the
//! token types, whose own checks return that error).

use std::fmt;

use deepconf_confidence::LOGPROB_TOLERANCE;

use crate::{StopReason, TraceSpec};

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
