//! Replay: hand-computed cuts, equality with live runs, and proptest properties.

use deepconf_analysis::{ReplayInstance, ReplayPolicy, ReplaySet, ReplayTrace};
use deepconf_core::confidence::ConfidenceConfig;
use deepconf_core::policy::{PolicyConfig, Voting};
use deepconf_records::read_run;
use deepconf_refusal::RefusalLabel;
use deepconf_testkit as common;
use proptest::prelude::*;

fn config(window: usize) -> ConfidenceConfig {
    ConfidenceConfig::new()
        .with_window(window)
        .with_tail(window)
}

#[test]
fn cut_is_the_first_full_window_below_threshold() {
    // Windows of 2 over [3,3,1,1,3]: ends 2..=5 have means 3, 2, 1, 2.
    let t = ReplayTrace::new(0, &[3.0, 3.0, 1.0, 1.0, 3.0], None, &config(2)).unwrap();
    assert_eq!(t.cut_at(2, 2.5), Some(3));
    assert_eq!(t.cut_at(2, 1.5), Some(4));
    assert_eq!(t.cut_at(2, 1.0), None, "strictly below");
    assert_eq!(t.cut_at(2, 3.5), Some(2));
    // Shorter than the window: never cut.
    assert_eq!(t.cut_at(8, 100.0), None);
}

fn policy(label: &str, config: PolicyConfig) -> ReplayPolicy {
    ReplayPolicy {
        label: label.into(),
        keep_percent: None,
        config,
    }
}

/// The replay of a fixed-N run under an online policy takes exactly the live online run's decisions.
#[test]
fn replay_equals_live_online_run() {
    let dir = tempfile::tempdir().unwrap();
    let n_traces = 10;
    common::write_run(dir.path(), 24, PolicyConfig::fixed(n_traces), 8);
    let run = read_run(dir.path()).unwrap();
    let set = ReplaySet::from_records(&run).unwrap();
    let mut cut_somewhere = false;
    for keep in [10.0, 50.0, 90.0] {
        let online = PolicyConfig::Online {
            warmup_traces: 3,
            max_traces: n_traces,
            keep_percent: keep,
            consensus: 0.95,
            batch_size: 2,
            voting: Voting::ConfidenceWeighted,
        };
        let replay = set.replay(&policy("online", online.clone())).unwrap();
        let live_config = common::config(online);
        for ((prompt, ..), (row, replayed)) in common::prompts(24)
            .iter()
            .zip(run.instances.iter().zip(&replay.instances))
        {
            let live = common::run_prompt(&live_config, prompt);
            assert_eq!(
                replayed.tokens, live.tokens_generated,
                "{} keep {keep}",
                row.instance_id
            );
            assert_eq!(replayed.traces, live.traces.len());
            assert_eq!(
                replayed.terminated,
                live.traces
                    .iter()
                    .filter(|t| t.termination.is_some())
                    .count()
            );
            assert_eq!(replayed.voters, live.decision.voters.len());
            assert_eq!(replayed.refused, live.answer().map(|a| a.is_refusal()));
            cut_somewhere |= replayed.terminated > 0;
        }
    }
    assert!(cut_somewhere, "the fixture should exercise termination");
}

#[test]
fn fixed_policy_saves_nothing_and_asking_too_much_fails() {
    let dir = tempfile::tempdir().unwrap();
    common::write_run(dir.path(), 6, PolicyConfig::fixed(4), 3);
    let set = ReplaySet::from_records(&read_run(dir.path()).unwrap()).unwrap();
    let fixed = set
        .replay(&policy("fixed", PolicyConfig::fixed(4)))
        .unwrap();
    assert_eq!(fixed.tokens, fixed.baseline_tokens);
    assert_eq!(fixed.token_savings, 0.0);
    assert_eq!(fixed.terminated, 0);
    let err = set
        .replay(&policy("too many", PolicyConfig::fixed(5)))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("too many") && text.contains("inst-000") && text.contains("5"),
        "{text}"
    );
}

/// Random stored runs: `instances` x `traces` traces with random confidences and answers.
fn arb_set() -> impl Strategy<Value = (ReplaySet, usize)> {
    (1usize..6, 2usize..7, 1usize..5).prop_flat_map(|(instances, traces, window)| {
        let trace = (
            prop::collection::vec(0.0f64..4.0, 0..24),
            prop::option::of(prop::bool::ANY),
        );
        let instance = (
            prop::collection::vec(trace, traces),
            prop::option::of(prop::bool::ANY),
        );
        prop::collection::vec(instance, instances).prop_map(move |rows| {
            let cfg = config(window);
            let instances = rows
                .into_iter()
                .enumerate()
                .map(|(i, (traces, gold))| {
                    let prepared = traces
                        .iter()
                        .enumerate()
                        .map(|(j, (conf, refused))| {
                            let answer = refused.map(|r| {
                                if r {
                                    RefusalLabel::Refusal
                                } else {
                                    RefusalLabel::Compliance
                                }
                            });
                            ReplayTrace::new(j, conf, answer, &cfg).unwrap()
                        })
                        .collect();
                    ReplayInstance::new(format!("i{i}"), gold, prepared)
                })
                .collect();
            (ReplaySet::new(cfg, instances).unwrap(), traces)
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A higher threshold never generates more tokens for the same trace.
    #[test]
    fn higher_threshold_never_cuts_later(
        conf in prop::collection::vec(0.0f64..4.0, 0..40),
        window in 1usize..8,
        low in 0.0f64..4.0,
        delta in 0.0f64..2.0,
    ) {
        let t = ReplayTrace::new(0, &conf, None, &config(window)).unwrap();
        let tokens = |s: f64| t.cut_at(window, s).unwrap_or(conf.len());
        prop_assert!(tokens(low + delta) <= tokens(low));
    }

    /// Without the consensus stop the online schedule is fixed, so keeping fewer traces (a higher
    /// threshold) never generates more tokens; keeping 100% of the warmup with every trace in the
    /// warmup is the fixed policy.
    #[test]
    fn online_tokens_fall_with_the_threshold((set, n) in arb_set(), warmup in 1usize..4) {
        let warmup = warmup.min(n);
        let online = |keep: f64| policy("online", PolicyConfig::Online {
            warmup_traces: warmup,
            max_traces: n,
            keep_percent: keep,
            consensus: 2.0,
            batch_size: 2,
            voting: Voting::ConfidenceWeighted,
        });
        let mut previous = u64::MAX;
        for keep in [100.0, 90.0, 70.0, 50.0, 30.0, 10.0] {
            let tokens = set.replay(&online(keep)).unwrap().tokens;
            prop_assert!(tokens <= previous, "keep {keep}: {tokens} > {previous}");
            previous = tokens;
        }
        let fixed = set.replay(&policy("fixed", PolicyConfig::fixed(n))).unwrap();
        prop_assert_eq!(fixed.tokens, fixed.baseline_tokens);
        let all_warmup = set.replay(&policy("warmup only", PolicyConfig::Online {
            warmup_traces: n,
            max_traces: n,
            keep_percent: 100.0,
            consensus: 2.0,
            batch_size: 1,
            voting: Voting::Majority,
        })).unwrap();
        prop_assert_eq!(all_warmup.tokens, fixed.tokens);
    }

    /// Keeping 100% offline with majority voting is the fixed policy, instance by instance.
    #[test]
    fn keeping_everything_equals_fixed((set, n) in arb_set()) {
        let fixed = set.replay(&policy("fixed", PolicyConfig::fixed(n))).unwrap();
        let keep_all = set.replay(&policy("offline 100", PolicyConfig::Offline {
            traces: n,
            keep_percent: 100.0,
            metric: Default::default(),
            voting: Voting::Majority,
        })).unwrap();
        prop_assert_eq!(&fixed.instances, &keep_all.instances);
        prop_assert_eq!(fixed.matrix, keep_all.matrix);
        prop_assert_eq!(keep_all.token_savings, 0.0);
    }
}
