//! Property test: whatever an adversarial backend reports (NaN, infinities, positive values,
//! short or unsorted lists, inconsistent sampled tokens), whether it shows its tokens to the
//! observer, obeys stops or panics, the runner never panics, and an outcome it returns holds no
//! NaN or infinite confidence, threshold or vote weight. A run either ends in such an outcome or
//! in a contract or backend error.

use deepconf_core::policy::{FinishReason, PolicyConfig, Step, Voting};
use deepconf_core::{
    Capabilities, ChatMessage, Error, GenerationRequest, LogprobModel, PromptOutcome, RunConfig,
    Runner, StopReason, TokenObserver, TokenStep, Trace, TraceSpec,
};
use proptest::prelude::*;

/// One token: the sampled token is candidate `sampled % top.len()` of the list as reported (ids
/// `0..len`, when reported), with its listed log-probability unless `sampled_logprob` overrides it.
#[derive(Debug, Clone)]
struct StepPlan {
    top: Vec<f32>,
    sampled: usize,
    sampled_logprob: Option<f32>,
    id_known: bool,
    with_ids: bool,
}

#[derive(Debug, Clone)]
struct TracePlan {
    steps: Vec<StepPlan>,
    shows_observer: bool,
    obeys_stop: bool,
    panics_at: Option<usize>,
}

/// Trace `i` of a run plays `plans[i % plans.len()]`.
struct Adversary {
    plans: Vec<TracePlan>,
    capabilities: Capabilities,
}

impl LogprobModel for Adversary {
    fn generate(
        &mut self,
        request: &GenerationRequest,
        spec: TraceSpec,
        observer: &mut dyn TokenObserver,
    ) -> deepconf_core::Result<Trace> {
        let plan = &self.plans[spec.index % self.plans.len()];
        let mut steps = Vec::new();
        let mut stop_reason = StopReason::EndOfSequence;
        for (i, s) in plan.steps.iter().enumerate() {
            if plan.panics_at == Some(i) {
                panic!("adversary panics at token {i}");
            }
            if steps.len() == request.sampling.max_tokens {
                stop_reason = StopReason::MaxTokens;
                break;
            }
            let sampled = s.sampled % s.top.len();
            steps.push(TokenStep {
                token_id: s.id_known.then_some(sampled as u32),
                text: "t".into(),
                logprob: s.sampled_logprob.unwrap_or(s.top[sampled]),
                top_logprobs: s.top.clone(),
                top_token_ids: if s.with_ids {
                    (0..s.top.len() as u32).collect()
                } else {
                    Vec::new()
                },
                top_tokens: Vec::new(),
            });
            if plan.shows_observer
                && observer.on_token(&spec, steps.last().unwrap()).is_stop()
                && plan.obeys_stop
            {
                stop_reason = StopReason::Terminated;
                break;
            }
        }
        Ok(Trace {
            spec,
            text: "t".repeat(steps.len()),
            steps,
            stop_reason,
            prompt_tokens: 2,
        })
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }
}

/// Log-probabilities a correct backend may report, extremes included.
fn valid_logprob() -> impl Strategy<Value = f32> + Clone {
    prop_oneof![
        20 => -12.0f32..=0.0,
        1 => Just(-0.0f32),
        1 => Just(1e-7f32),
        1 => Just(f32::MIN),
    ]
}

/// Anything at all.
fn any_logprob() -> impl Strategy<Value = f32> + Clone {
    prop_oneof![
        8 => valid_logprob(),
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        1 => 0.0f32..10.0,
    ]
}

/// A token whose values come from `value`: `clean` tokens have at least k = 4 candidates and a
/// sampled token consistent with them, the others anything.
fn step(value: impl Strategy<Value = f32> + Clone, clean: bool) -> impl Strategy<Value = StepPlan> {
    let candidates = if clean { 4..7 } else { 1..7 };
    (
        prop::collection::vec(value.clone(), candidates),
        0usize..7,
        (prop::bool::weighted(0.3), value),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            move |(top, sampled, (overridden, other), id_known, with_ids)| StepPlan {
                top,
                sampled,
                sampled_logprob: (overridden && !clean).then_some(other),
                id_known,
                with_ids,
            },
        )
}

fn trace_plan() -> impl Strategy<Value = TracePlan> {
    let steps = prop_oneof![
        3 => prop::collection::vec(step(valid_logprob(), true), 0..12),
        1 => prop::collection::vec(step(any_logprob(), false), 0..12),
    ];
    (
        steps,
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.8),
        prop::option::weighted(0.03, 0usize..12),
    )
        .prop_map(|(steps, shows_observer, obeys_stop, panics_at)| TracePlan {
            steps,
            shows_observer,
            obeys_stop,
            panics_at,
        })
}

fn capabilities() -> impl Strategy<Value = Capabilities> {
    (prop::option::of(1usize..6), prop::bool::weighted(0.3)).prop_map(|(vocabulary, partial)| {
        let mut c = Capabilities::new().with_partial_top_logprobs(partial);
        if let Some(v) = vocabulary {
            c = c.with_vocabulary_size(v);
        }
        c
    })
}

fn voting() -> impl Strategy<Value = Voting> {
    prop_oneof![Just(Voting::Majority), Just(Voting::ConfidenceWeighted)]
}

fn policy() -> impl Strategy<Value = PolicyConfig> {
    prop_oneof![
        1 => (1usize..5).prop_map(PolicyConfig::fixed),
        1 => (1usize..6, 1.0f64..=100.0).prop_map(|(n, keep)| PolicyConfig::offline(n, keep)),
        // Online most often: it is the policy that cuts traces.
        3 => (1usize..4, 1usize..5, 1.0f64..=100.0, 0.3f64..1.5, 1usize..3, voting()).prop_map(
            |(warmup_traces, more, keep_percent, consensus, batch_size, voting)| {
                PolicyConfig::Online {
                    warmup_traces,
                    max_traces: warmup_traces + more,
                    keep_percent,
                    consensus,
                    batch_size,
                    voting,
                }
            }
        ),
        1 => (1usize..4, 1usize..3, 0usize..4, 0.0f64..=100.0).prop_map(
            |(warmup_traces, batch_size, more, percentile)| PolicyConfig::Prototype {
                warmup_traces,
                batch_size,
                max_traces: warmup_traces + more,
                percentile,
            }
        ),
    ]
}

fn run_config() -> impl Strategy<Value = RunConfig> {
    (policy(), 1usize..5, 1usize..5, 1usize..12).prop_map(|(policy, window, tail, max_tokens)| {
        let mut c = RunConfig {
            policy,
            ..RunConfig::default()
        };
        c.confidence.top_k = 4;
        c.confidence.window = window;
        c.confidence.tail = tail;
        c.sampling.top_logprobs = 4;
        c.sampling.max_tokens = max_tokens;
        c
    })
}

/// Every number of the outcome that a confidence, threshold or weight flows into, by name.
fn numbers(outcome: &PromptOutcome<usize>) -> Vec<(String, f64)> {
    let mut all = Vec::new();
    for r in &outcome.traces {
        let i = r.trace.spec.index;
        for (t, &c) in r.token_confidences.iter().enumerate() {
            all.push((format!("trace {i} token {t} confidence"), c));
        }
        if let Some(c) = r.confidence {
            for (name, v) in [
                ("mean", c.mean),
                ("lowest", c.lowest_group),
                ("bottom", c.bottom_group),
                ("tail", c.tail),
            ] {
                all.push((format!("trace {i} {name}"), v));
            }
        }
        if let Some(t) = r.termination {
            all.push((format!("trace {i} cut group"), t.group_confidence));
            all.push((format!("trace {i} cut threshold"), t.threshold));
        }
        for (t, s) in r.trace.steps.iter().enumerate() {
            all.push((format!("trace {i} token {t} sampled"), f64::from(s.logprob)));
            for &lp in &s.top_logprobs {
                all.push((format!("trace {i} token {t} candidate"), f64::from(lp)));
            }
        }
    }
    for step in &outcome.steps {
        match step {
            Step::Generate {
                stop_below: Some(t),
                ..
            } => all.push(("step threshold".into(), *t)),
            Step::Finish(FinishReason::Consensus { consensus, .. }) => {
                all.push(("consensus".into(), *consensus))
            }
            Step::Finish(FinishReason::Budget {
                consensus: Some(c), ..
            }) => all.push(("budget consensus".into(), *c)),
            Step::Finish(FinishReason::ConfidenceReached {
                batch_mean, target, ..
            }) => {
                all.push(("batch mean".into(), *batch_mean));
                all.push(("target".into(), *target));
            }
            _ => {}
        }
    }
    if let Some(t) = outcome.decision.threshold {
        all.push(("decision threshold".into(), t));
    }
    if let Some(v) = &outcome.decision.vote {
        all.push(("winner weight".into(), v.winner_weight));
        all.push(("total weight".into(), v.total_weight));
        for (answer, w) in &v.tally {
            all.push((format!("weight of {answer}"), *w));
        }
    }
    all
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn adversarial_backends_never_yield_non_finite_numbers(
        plans in prop::collection::vec(trace_plan(), 1..6),
        capabilities in capabilities(),
        config in run_config(),
    ) {
        let panics = plans.iter().any(|p| p.panics_at.is_some());
        let mut model = Adversary { plans, capabilities };
        let runner = Runner::new(config).unwrap();
        let result = runner.run(
            &mut model,
            &[ChatMessage::user("q")],
            &mut |t: &Trace| Some(t.n_tokens() % 3),
        );
        match result {
            Ok(outcome) => {
                for (name, value) in numbers(&outcome) {
                    prop_assert!(value.is_finite(), "{} = {}", name, value);
                }
                for r in &outcome.traces {
                    for s in &r.trace.steps {
                        prop_assert!(s.top_logprobs.iter().all(|&lp| lp <= 1e-4));
                        prop_assert!(s.top_logprobs.is_sorted_by(|a, b| a >= b));
                    }
                }
            }
            Err(Error::Contract { .. }) => {}
            Err(Error::Backend { source, .. }) => {
                prop_assert!(panics, "{}", source);
                prop_assert!(source.to_string().contains("adversary panics"), "{}", source);
            }
            Err(other) => prop_assert!(false, "unexpected error {}", other),
        }
    }
}
