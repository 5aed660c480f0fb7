//! Fixed N: generate `traces` full traces, all of which vote (self-consistency; `traces = 1` is
//! single sampling). The offline policy samples the same way and filters at the vote.

use crate::{BallotBox, FinishReason, Phase, Step, TraceMetric, Voting};

/// All the missing traces at once, then finish.
pub(crate) fn next_step(traces: usize, generated: usize) -> Step {
    if generated < traces {
        Step::Generate {
            count: traces - generated,
            phase: Phase::Full,
            stop_below: None,
        }
    } else {
        Step::Finish(FinishReason::AllGenerated { traces: generated })
    }
}

/// Every trace votes, weighted (under confidence-weighted voting) by lowest-group confidence.
pub(crate) fn ballot_box(traces: usize, voting: Voting) -> BallotBox {
    BallotBox::open(traces, None, voting, TraceMetric::LowestGroup)
}

#[cfg(test)]
mod tests {
    use crate::{FinishReason, Phase, PolicyConfig, Step, t};

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
}
