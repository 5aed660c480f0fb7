//! Majority and confidence-weighted voting over any answer type.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How ballots are counted. The default is [`Voting::ConfidenceWeighted`], DeepConf's vote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Voting {
    /// One trace, one vote.
    Majority,
    /// Each trace votes with its confidence (DeepConf's weighted majority vote). Negative weights
    /// count as zero.
    #[default]
    ConfidenceWeighted,
}

/// One trace's ballot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ballot<A> {
    /// The trace's answer.
    pub answer: A,
    /// The trace's confidence (the weight under [`Voting::ConfidenceWeighted`]).
    pub confidence: f64,
    /// True when the trace was terminated early: such a trace never votes.
    pub terminated: bool,
}

/// The result of a vote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoteOutcome<A> {
    /// The answer with the most weight (ties go to the smallest answer in `Ord` order).
    pub winner: A,
    /// Weight of the winner.
    pub winner_weight: f64,
    /// Weight of all counted ballots.
    pub total_weight: f64,
    /// Ballots counted (terminated ones excluded).
    pub voters: usize,
    /// Weight per answer, in `Ord` order of the answers.
    pub tally: Vec<(A, f64)>,
}

impl<A> VoteOutcome<A> {
    /// Consensus `V(winner) / Σ V`, in `[0, 1]` (1 when all weight is zero and one answer exists).
    pub fn consensus(&self) -> f64 {
        if self.total_weight > 0.0 {
            self.winner_weight / self.total_weight
        } else if self.tally.len() == 1 {
            1.0
        } else {
            0.0
        }
    }
}

/// Counts the ballots of non-terminated traces. `None` when no ballot counts.
///
/// The result does not depend on the order of `ballots`: the weights of each answer are summed in
/// sorted order and ties are broken by the answer's `Ord`.
pub fn vote<A: Ord + Clone>(ballots: &[Ballot<A>], voting: Voting) -> Option<VoteOutcome<A>> {
    let mut weights: BTreeMap<&A, Vec<f64>> = BTreeMap::new();
    let mut voters = 0;
    for ballot in ballots.iter().filter(|b| !b.terminated) {
        let weight = match voting {
            Voting::Majority => 1.0,
            Voting::ConfidenceWeighted if ballot.confidence.is_finite() => {
                ballot.confidence.max(0.0)
            }
            Voting::ConfidenceWeighted => 0.0,
        };
        weights.entry(&ballot.answer).or_default().push(weight);
        voters += 1;
    }
    if voters == 0 {
        return None;
    }
    let tally: Vec<(A, f64)> = weights
        .into_iter()
        .map(|(answer, mut ws)| {
            ws.sort_unstable_by(f64::total_cmp);
            (answer.clone(), ws.iter().sum())
        })
        .collect();
    let mut sorted_totals: Vec<f64> = tally.iter().map(|(_, w)| *w).collect();
    sorted_totals.sort_unstable_by(f64::total_cmp);
    let total_weight = sorted_totals.iter().sum();
    // `max_by` keeps the last maximum; iterate in reverse so ties go to the smallest answer.
    let (winner, winner_weight) = tally
        .iter()
        .rev()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(a, w)| (a.clone(), *w))?;
    Some(VoteOutcome {
        winner,
        winner_weight,
        total_weight,
        voters,
        tally,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(answer: &str, confidence: f64, terminated: bool) -> Ballot<String> {
        Ballot {
            answer: answer.to_string(),
            confidence,
            terminated,
        }
    }

    #[test]
    fn majority_and_weighted_can_disagree() {
        let ballots = [
            b("refusal", 1.0, false),
            b("refusal", 1.0, false),
            b("compliance", 5.0, false),
        ];
        let m = vote(&ballots, Voting::Majority).unwrap();
        assert_eq!(m.winner, "refusal");
        assert_eq!(m.winner_weight, 2.0);
        assert!((m.consensus() - 2.0 / 3.0).abs() < 1e-12);
        let w = vote(&ballots, Voting::ConfidenceWeighted).unwrap();
        assert_eq!(w.winner, "compliance");
        assert!((w.consensus() - 5.0 / 7.0).abs() < 1e-12);
    }

    #[test]
    fn terminated_traces_do_not_vote() {
        let ballots = [b("a", 1.0, false), b("b", 9.0, true), b("b", 9.0, true)];
        let out = vote(&ballots, Voting::ConfidenceWeighted).unwrap();
        assert_eq!(out.winner, "a");
        assert_eq!(out.voters, 1);
        assert_eq!(out.consensus(), 1.0);
        assert!(vote(&[b("x", 1.0, true)], Voting::Majority).is_none());
        assert!(vote::<String>(&[], Voting::Majority).is_none());
    }

    #[test]
    fn ties_go_to_smallest_answer() {
        let ballots = [b("zeta", 1.0, false), b("alpha", 1.0, false)];
        assert_eq!(vote(&ballots, Voting::Majority).unwrap().winner, "alpha");
    }

    #[test]
    fn negative_and_nan_weights_count_as_zero() {
        let ballots = [
            b("a", -3.0, false),
            b("b", f64::NAN, false),
            b("c", 0.5, false),
        ];
        let out = vote(&ballots, Voting::ConfidenceWeighted).unwrap();
        assert_eq!(out.winner, "c");
        assert_eq!(out.total_weight, 0.5);
    }
}
