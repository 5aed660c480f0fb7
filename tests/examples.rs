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
    // What the example's comments say the run does.
    assert_eq!(
        (fixed.tokens_generated, online.tokens_generated),
        (2748, 1218)
    );
    assert_eq!(fixed.answer(), Some(&"refusal".to_string()));
    assert_eq!(online.answer(), Some(&"refusal".to_string()));
    let threshold = online.decision.threshold.unwrap();
    assert!((threshold - 58.05).abs() < 1e-4, "{threshold}");
    let cut_at: Vec<usize> = online
        .traces
        .iter()
        .filter_map(|r| r.termination.map(|t| t.at_token))
        .collect();
    assert_eq!(cut_at.iter().filter(|&&at| at == 9).count(), 6, "ramblers");
    assert_eq!(cut_at.iter().filter(|&&at| at == 8).count(), 5, "jittered");
    assert_eq!(cut_at.len(), 11);
    assert_eq!(online.decision.voters.len(), 21);
    // The policy explains why sampling ended, and the explanation serialises for run records.
    match online.finish {
        FinishReason::Budget {
            traces: 32,
            consensus: Some(consensus),
        } => assert!((consensus - 13.0 / 21.0).abs() < 1e-12, "{consensus}"),
        ref other => panic!("expected the budget to end the run, got {other:?}"),
    }
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
