//! What the runner checks of a backend's output: every [`TokenStep`] it reports, the traces it
//! returns, and the metrics computed from them. A broken rule is a [`Violation`], carried by
//! [`Error::Contract`](crate::Error::Contract) with the backend, trace and token it concerns.

use deepconf_confidence::{LOGPROB_TOLERANCE, is_valid_logprob, token_confidence};

use crate::{TokenStep, Violation};

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
