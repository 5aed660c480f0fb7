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
