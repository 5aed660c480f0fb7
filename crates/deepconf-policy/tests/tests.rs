//! Property tests of the policies.
use deepconf_policy::*;
use proptest::prelude::*;

fn outcomes() -> impl Strategy<Value = Vec<TraceOutcome>> {
    prop::collection::vec((0u8..3, 0.0f64..20.0, any::<bool>()), 1..40).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (answer, conf, terminated))| {
                let mut t = TraceOutcome::finished(i, 10, ["a", "b", "c"][answer as usize], conf);
                t.terminated = terminated;
                t
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn keeping_fewer_never_lowers_the_threshold(values in prop::collection::vec(0.0f64..30.0, 1..50)) {
        let low = threshold_from_warmup(&values, 10.0).unwrap();
        let high = threshold_from_warmup(&values, 90.0).unwrap();
        prop_assert!(low >= high);
    }

    #[test]
    fn voting_is_invariant_to_trace_order(mut h in outcomes(), seed in any::<u64>(), weighted in any::<bool>()) {
        let voting = if weighted { Voting::ConfidenceWeighted } else { Voting::Majority };
        let ballots = |h: &[TraceOutcome]| -> Vec<Ballot<String>> {
            h.iter().map(|t| Ballot { answer: t.answer.clone().unwrap(), confidence: t.mean, terminated: t.terminated }).collect()
        };
        let before = vote(&ballots(&h), voting);
        // Deterministic shuffle from the seed.
        let mut state = seed | 1;
        for i in (1..h.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            h.swap(i, (state % (i as u64 + 1)) as usize);
        }
        prop_assert_eq!(before, vote(&ballots(&h), voting));
    }

    #[test]
    fn a_terminated_trace_never_votes(h in outcomes(), keep in 1.0f64..=100.0) {
        for config in [PolicyConfig::fixed(h.len()), PolicyConfig::offline(h.len(), keep), PolicyConfig::online(1, h.len().max(1), keep), PolicyConfig::prototype()] {
            let mut state = config.start();
            let _ = state.next_step(&h);
            let d = state.decide(&h);
            for i in &d.voters {
                prop_assert!(!h[*i].terminated, "{} let terminated trace {} vote", config.kind(), i);
            }
            if let Some(v) = d.vote {
                prop_assert_eq!(v.voters, d.voters.len());
            }
        }
    }

    #[test]
    fn offline_keeping_everything_equals_fixed_weighted(h in outcomes()) {
        let offline = PolicyConfig::Offline { traces: h.len(), keep_percent: 100.0, metric: TraceMetric::LowestGroup, voting: Voting::Majority };
        let fixed = PolicyConfig::fixed(h.len());
        prop_assert_eq!(offline.start().decide(&h).vote, fixed.start().decide(&h).vote);
    }
}

#[test]
fn policies_describe_themselves_and_their_largest_batch() {
    let online = PolicyConfig::online(4, 16, 10.0);
    assert_eq!(online.label(), "online(warmup 4, max 16, keep 10%)");
    assert_eq!(online.largest_batch(), 4);
    assert_eq!(PolicyConfig::fixed(8).label(), "fixed(n=8)");
    assert_eq!(PolicyConfig::fixed(8).largest_batch(), 8);
}
