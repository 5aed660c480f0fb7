//! Tests of the examples' library compositions (the examples themselves stay thin).

#[path = "../examples/custom_backend.rs"]
mod custom_backend;

use std::collections::BTreeSet;

use deepconf_core::StopReason;
use deepconf_core::policy::{FinishReason, PolicyConfig};

#[test]
fn online_generates_fewer_tokens_than_fixed_32_and_records_every_stop() {
    let fixed = custom_backend::run_policy(PolicyConfig::fixed(32)).unwrap();
    let online = custom_backend::run_policy(custom_backend::online_policy()).unwrap();
    assert_eq!(fixed.traces.len(), 32);
    assert!(online.traces.len() <= 32);
    assert!(
        online.tokens_generated < fixed.tokens_generated,
        "online {} tokens vs fixed {}",
        online.tokens_generated,
        fixed.tokens_generated
    );
    assert_eq!(
        online.tokens_generated,
        online
            .traces
            .iter()
            .map(|r| r.trace.n_tokens())
            .sum::<usize>()
    );
    // Every trace carries its stop reason; this run exercises all three kinds.
    let reasons: BTreeSet<&str> = online
        .traces
        .iter()
        .map(|r| r.trace.stop_reason.as_str())
        .collect();
    assert_eq!(
        reasons,
        BTreeSet::from(["end_of_sequence", "max_tokens", "terminated"])
    );
    for r in &online.traces {
        let terminated = r.trace.stop_reason == StopReason::Terminated;
        assert_eq!(
            terminated,
            r.termination.is_some(),
            "trace {}",
            r.trace.spec.index
        );
        if let Some(t) = r.termination {
            assert!(t.group_confidence < t.threshold);
            assert_eq!(t.at_token, r.trace.n_tokens());
            assert!(
                !online.decision.voters.contains(&r.trace.spec.index),
                "terminated trace voted"
            );
        }
    }
    // The policy explains why sampling ended, and the explanation serialises for run records.
    assert!(matches!(
        online.finish,
        FinishReason::Budget { traces: 32, .. } | FinishReason::Consensus { .. }
    ));
    let json = serde_json::to_value(&online.finish).unwrap();
    assert!(json.get("reason").is_some(), "{json}");
    assert_eq!(
        online.steps.last(),
        Some(&deepconf_core::policy::Step::Finish(online.finish.clone()))
    );
}

#[test]
fn same_seed_same_outcome() {
    let a = custom_backend::run_policy(custom_backend::online_policy()).unwrap();
    let b = custom_backend::run_policy(custom_backend::online_policy()).unwrap();
    assert_eq!(a, b);
}
