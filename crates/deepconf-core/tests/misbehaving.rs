//! Backends that break the `LogprobModel` contract, written as a library user outside the
//! workspace would write them. Each case of the contract ends in a typed error or a documented
//! correction, never in a silent answer or a panic.

use deepconf_core::policy::{PolicyConfig, Voting};
use deepconf_core::{
    Capabilities, ChatMessage, Error, GenerationRequest, LogprobModel, Prompt, PromptOutcome,
    RunConfig, Runner, StopReason, TokenObserver, TokenStep, Trace, TraceSpec, Violation,
};

/// The model id every test backend reports, so that errors can be checked to name it.
const BACKEND: &str = "misbehaving-test-backend";

/// A backend that emits the tokens `script(trace, token)` gives until it returns `None` (or
/// `max_tokens`), showing them to the observer unless `hide_from_observer`, and stopping when the
/// observer says so unless `ignore_stop`.
struct Scripted<F> {
    script: F,
    hide_from_observer: bool,
    ignore_stop: bool,
    capabilities: Capabilities,
}

impl<F: FnMut(TraceSpec, usize) -> Option<TokenStep>> Scripted<F> {
    fn new(script: F) -> Self {
        Self {
            script,
            hide_from_observer: false,
            ignore_stop: false,
            capabilities: Capabilities::new(),
        }
    }
}

impl<F: FnMut(TraceSpec, usize) -> Option<TokenStep>> LogprobModel for Scripted<F> {
    fn generate(
        &mut self,
        request: &GenerationRequest,
        spec: TraceSpec,
        observer: &mut dyn TokenObserver,
    ) -> deepconf_core::Result<Trace> {
        let mut steps: Vec<TokenStep> = Vec::new();
        let mut stop_reason = StopReason::EndOfSequence;
        while steps.len() < request.sampling.max_tokens {
            let Some(step) = (self.script)(spec, steps.len()) else {
                break;
            };
            steps.push(step);
            if self.hide_from_observer {
                continue;
            }
            let stop = observer.on_token(&spec, steps.last().unwrap()).is_stop();
            if stop && !self.ignore_stop {
                stop_reason = StopReason::Terminated;
                break;
            }
        }
        Ok(Trace {
            spec,
            text: steps.iter().map(|s| s.text.as_str()).collect(),
            steps,
            stop_reason,
            prompt_tokens: 3,
        })
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    fn model_id(&self) -> String {
        BACKEND.into()
    }
}

/// A well-formed token: `k` candidates `-0.05 - spread * j`, the sampled one the most likely.
fn well_formed(k: usize, spread: f32) -> TokenStep {
    let top: Vec<f32> = (0..k).map(|j| -0.05 - spread * j as f32).collect();
    TokenStep {
        token_id: Some(100),
        text: "w ".into(),
        logprob: top[0],
        top_logprobs: top,
        top_token_ids: (100..100 + k as u32).collect(),
        top_tokens: Vec::new(),
    }
}

/// k = 20, window 4, the given policy.
fn config(policy: PolicyConfig) -> RunConfig {
    let mut config = RunConfig {
        policy,
        ..RunConfig::default()
    };
    config.confidence.window = 4;
    config.confidence.tail = 4;
    config.sampling.max_tokens = 12;
    config
}

/// Online with 4 warmup traces and room for 4 more, never stopping at consensus.
fn online() -> PolicyConfig {
    PolicyConfig::Online {
        warmup_traces: 4,
        max_traces: 8,
        keep_percent: 90.0,
        consensus: 2.0,
        batch_size: 2,
        voting: Voting::ConfidenceWeighted,
    }
}

fn label(trace: &Trace) -> Option<String> {
    Some(format!("answer-{}", trace.spec.index % 2))
}

fn run<M: LogprobModel>(
    model: &mut M,
    config: RunConfig,
) -> deepconf_core::Result<PromptOutcome<String>> {
    Runner::new(config)?.run(model, &[ChatMessage::user("q")], &mut label)
}

/// The contract error's parts, after checking that its message names them too.
fn contract(err: Error) -> (Option<usize>, Option<usize>, Violation) {
    let text = err.to_string();
    match err {
        Error::Contract {
            backend,
            trace,
            token,
            violation,
        } => {
            assert_eq!(backend, BACKEND);
            assert!(text.contains(BACKEND), "{text}");
            if let Some(trace) = trace {
                assert!(text.contains(&format!("trace {trace}")), "{text}");
            }
            if let Some(token) = token {
                assert!(text.contains(&format!("token {token}")), "{text}");
            }
            (trace, token, violation)
        }
        other => panic!("expected a contract error, got {other:?}"),
    }
}

#[test]
fn a_nan_sampled_logprob_is_refused() {
    let mut model = Scripted::new(|spec: TraceSpec, i| {
        let mut step = well_formed(20, 1.0);
        if spec.index == 1 && i == 2 {
            step.logprob = f32::NAN;
        }
        Some(step)
    });
    let err = run(&mut model, config(PolicyConfig::fixed(3))).unwrap_err();
    assert!(err.to_string().contains("NaN"), "{err}");
    let (trace, token, violation) = contract(err);
    assert_eq!((trace, token), (Some(1), Some(2)));
    assert!(matches!(violation, Violation::InvalidSampled { value } if value.is_nan()));
}

#[test]
fn positive_top_logprobs_are_refused_but_rounding_is_not() {
    for (bad, at) in [(0.5f32, 3usize), (5.0, 0)] {
        let mut model = Scripted::new(move |_, i| {
            let mut step = well_formed(20, 1.0);
            if i == 1 {
                step.top_logprobs[at] = bad;
                step.logprob = step.top_logprobs[0];
            }
            Some(step)
        });
        let err = run(&mut model, config(PolicyConfig::fixed(2))).unwrap_err();
        assert!(err.to_string().contains(&bad.to_string()), "{err}");
        let (trace, token, violation) = contract(err);
        assert_eq!((trace, token), (Some(0), Some(1)));
        assert_eq!(
            violation,
            Violation::InvalidCandidate {
                candidate: at,
                value: bad
            }
        );
    }
    // A probability-1 token rounded to +1e-7 by the engine's float arithmetic passes.
    let mut model = Scripted::new(|_, _| {
        let mut step = well_formed(20, 20.0);
        step.top_logprobs[0] = 1e-7;
        step.logprob = 1e-7;
        Some(step)
    });
    let outcome = run(&mut model, config(PolicyConfig::fixed(2))).unwrap();
    assert_eq!(outcome.traces.len(), 2);
}

#[test]
fn minus_infinity_candidates_are_refused() {
    let mut model = Scripted::new(|_, _| {
        let mut step = well_formed(20, 1.0);
        for lp in &mut step.top_logprobs[15..] {
            *lp = f32::NEG_INFINITY;
        }
        Some(step)
    });
    let (trace, token, violation) =
        contract(run(&mut model, config(PolicyConfig::offline(4, 50.0))).unwrap_err());
    assert_eq!((trace, token), (Some(0), Some(0)));
    assert_eq!(
        violation,
        Violation::InvalidCandidate {
            candidate: 15,
            value: f32::NEG_INFINITY
        }
    );
}

#[test]
fn minus_infinity_in_one_warmup_trace_is_refused_before_it_sets_a_threshold() {
    let mut model = Scripted::new(|spec: TraceSpec, i| {
        let mut step = well_formed(20, 1.0);
        if spec.index == 2 && i == 7 {
            step.top_logprobs[19] = f32::NEG_INFINITY;
        }
        Some(step)
    });
    let (trace, token, _) = contract(run(&mut model, config(online())).unwrap_err());
    assert_eq!((trace, token), (Some(2), Some(7)));
}

#[test]
fn three_candidates_when_k_is_20_are_refused_unless_the_vocabulary_is_that_small() {
    let three = |_, _| Some(well_formed(3, 3.0));
    let (trace, token, violation) =
        contract(run(&mut Scripted::new(three), config(PolicyConfig::fixed(2))).unwrap_err());
    assert_eq!((trace, token), (Some(0), Some(0)));
    assert_eq!(
        violation,
        Violation::TooFewCandidates { got: 3, needed: 20 }
    );

    // A model of three tokens reports all three; its confidence averages them:
    // -(-0.05 - 3.05 - 6.05) / 3 = 3.05.
    let mut small = Scripted::new(three);
    small.capabilities = Capabilities::new().with_vocabulary_size(3);
    let outcome = run(&mut small, config(PolicyConfig::fixed(2))).unwrap();
    let lowest = outcome.traces[0].confidence.unwrap().lowest_group;
    assert!((lowest - 3.05).abs() < 1e-5, "{lowest}");

    // A vocabulary of 3 does not excuse 2 candidates.
    let mut short = Scripted::new(|_, _| Some(well_formed(2, 3.0)));
    short.capabilities = Capabilities::new().with_vocabulary_size(3);
    let (_, _, violation) = contract(run(&mut short, config(PolicyConfig::fixed(2))).unwrap_err());
    assert_eq!(violation, Violation::TooFewCandidates { got: 2, needed: 3 });

    // A backend whose lists may be short by nature (candidates merged by text) says so.
    let mut partial = Scripted::new(three);
    partial.capabilities = Capabilities::new().with_partial_top_logprobs(true);
    assert!(run(&mut partial, config(PolicyConfig::fixed(2))).is_ok());
}

#[test]
fn a_sampled_logprob_above_the_top_candidate_is_refused() {
    let mut model = Scripted::new(|_, i| {
        let mut step = well_formed(20, 1.0);
        if i == 4 {
            step.logprob = -0.01; // the top candidate has -0.05
            step.token_id = None;
        }
        Some(step)
    });
    let (trace, token, violation) =
        contract(run(&mut model, config(PolicyConfig::fixed(1))).unwrap_err());
    assert_eq!((trace, token), (Some(0), Some(4)));
    assert_eq!(
        violation,
        Violation::SampledAboveTop {
            sampled: -0.01,
            top: -0.05
        }
    );
}

#[test]
fn a_sampled_token_must_agree_with_its_listed_candidate() {
    // Token 105 is listed at -5.05; the backend claims -0.5 for it.
    let mut model = Scripted::new(|_, _| {
        let mut step = well_formed(20, 1.0);
        step.token_id = Some(105);
        step.logprob = -0.5;
        Some(step)
    });
    let (_, _, violation) = contract(run(&mut model, config(PolicyConfig::fixed(1))).unwrap_err());
    assert_eq!(
        violation,
        Violation::SampledDiffersFromList {
            token_id: 105,
            sampled: -0.5,
            listed: well_formed(20, 1.0).top_logprobs[5]
        }
    );
    // Token 7 is not listed, so it is less likely than every listed one (the last is -19.05).
    let mut model = Scripted::new(|_, _| {
        let mut step = well_formed(20, 1.0);
        step.token_id = Some(7);
        step.logprob = -3.0;
        Some(step)
    });
    let (_, _, violation) = contract(run(&mut model, config(PolicyConfig::fixed(1))).unwrap_err());
    assert!(
        matches!(
            violation,
            Violation::UnlistedSampledAboveLast { token_id: 7, .. }
        ),
        "{violation:?}"
    );
    // Within the tolerance the values agree.
    let mut model = Scripted::new(|_, _| {
        let mut step = well_formed(20, 1.0);
        step.token_id = Some(105);
        step.logprob = step.top_logprobs[5] + 2e-4;
        Some(step)
    });
    assert!(run(&mut model, config(PolicyConfig::fixed(1))).is_ok());
}

/// Returns traces it built by hand, without showing a token to the observer.
struct HandBuilt {
    poison: f32,
}

impl LogprobModel for HandBuilt {
    fn generate(
        &mut self,
        _: &GenerationRequest,
        spec: TraceSpec,
        _: &mut dyn TokenObserver,
    ) -> deepconf_core::Result<Trace> {
        let mut steps: Vec<TokenStep> = (0..6).map(|_| well_formed(20, 1.0)).collect();
        steps[5].top_logprobs[9] = self.poison;
        Ok(Trace {
            spec,
            text: "hand-built".into(),
            steps,
            stop_reason: StopReason::EndOfSequence,
            prompt_tokens: 3,
        })
    }

    fn model_id(&self) -> String {
        BACKEND.into()
    }
}

#[test]
fn a_hand_built_trace_with_nan_is_refused() {
    let err = run(
        &mut HandBuilt { poison: f32::NAN },
        config(PolicyConfig::fixed(2)),
    )
    .unwrap_err();
    let (trace, token, violation) = contract(err);
    assert_eq!((trace, token), (Some(0), Some(5)));
    assert!(
        matches!(violation, Violation::InvalidCandidate { candidate: 9, value } if value.is_nan())
    );
}

#[test]
fn an_unsorted_list_is_sorted_with_its_ids() {
    let mut model = Scripted::new(|_, _| {
        let mut step = well_formed(20, 1.0);
        step.top_logprobs.reverse();
        step.top_token_ids.reverse();
        Some(step)
    });
    let outcome = run(&mut model, config(PolicyConfig::fixed(1))).unwrap();
    let step = &outcome.traces[0].trace.steps[0];
    assert_eq!(step.top_logprobs, well_formed(20, 1.0).top_logprobs);
    assert_eq!(step.top_token_ids, well_formed(20, 1.0).top_token_ids);
}

#[test]
fn a_panicking_backend_is_a_backend_error_with_the_panic_message() {
    let mut model = Scripted::new(|spec: TraceSpec, i| {
        if spec.index == 1 && i == 3 {
            panic!("decoder state lost at token {i}");
        }
        Some(well_formed(20, 1.0))
    });
    let err = run(&mut model, config(PolicyConfig::fixed(3))).unwrap_err();
    match &err {
        Error::Backend { backend, source } => {
            assert_eq!(backend, BACKEND);
            assert!(
                source.to_string().contains("decoder state lost at token 3"),
                "{source}"
            );
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
    // The runner is not poisoned: the next prompt runs.
    let mut healthy = Scripted::new(|_, _| Some(well_formed(20, 1.0)));
    assert!(run(&mut healthy, config(PolicyConfig::fixed(3))).is_ok());
}

/// Confident warmup traces (0-3), then unconfident ones that the online policy cuts after one
/// window of 4 tokens.
fn fading(spec: TraceSpec, _: usize) -> Option<TokenStep> {
    Some(well_formed(20, if spec.index < 4 { 5.0 } else { 0.1 }))
}

#[test]
fn a_backend_that_ignores_the_observer_has_its_traces_cut_when_they_return() {
    let obedient = run(&mut Scripted::new(fading), config(online())).unwrap();
    assert_eq!(obedient.late_cuts(), 0);

    let mut blind = Scripted::new(fading);
    blind.hide_from_observer = true;
    let blind = run(&mut blind, config(online())).unwrap();
    let mut deaf = Scripted::new(fading);
    deaf.ignore_stop = true;
    let deaf = run(&mut deaf, config(online())).unwrap();

    for outcome in [&blind, &deaf] {
        assert_eq!(outcome.late_cuts(), 4, "the four adaptive traces");
        for (late, live) in outcome.traces.iter().zip(&obedient.traces).skip(4) {
            let (cut, live_cut) = (late.termination.unwrap(), live.termination.unwrap());
            assert!(cut.late && !live_cut.late);
            // Cut where the policy cut the obedient backend's trace, on the same values.
            assert_eq!(cut.at_token, 4);
            assert_eq!(
                (cut.at_token, cut.group_confidence, cut.threshold),
                (
                    live_cut.at_token,
                    live_cut.group_confidence,
                    live_cut.threshold
                )
            );
            assert_eq!(late.trace.stop_reason, StopReason::Terminated);
            // The tokens generated past the cut were spent and stay counted.
            assert_eq!(late.trace.n_tokens(), 12);
        }
        // Only the warmup traces vote, as with the obedient backend.
        assert_eq!(outcome.decision.voters, obedient.decision.voters);
        assert_eq!(outcome.decision.voters, vec![0, 1, 2, 3]);
        assert_eq!(outcome.decision.vote, obedient.decision.vote);
        assert_eq!(outcome.tokens_generated, 8 * 12);
    }
    assert_eq!(obedient.tokens_generated, 4 * 12 + 4 * 4);
}

/// Shows the observer one token and returns another.
struct TwoFaced;

impl LogprobModel for TwoFaced {
    fn generate(
        &mut self,
        _: &GenerationRequest,
        spec: TraceSpec,
        observer: &mut dyn TokenObserver,
    ) -> deepconf_core::Result<Trace> {
        let mut steps = Vec::new();
        for i in 0..5 {
            observer.on_token(&spec, &well_formed(20, 1.0));
            steps.push(well_formed(20, if i == 3 { 2.0 } else { 1.0 }));
        }
        Ok(Trace {
            spec,
            text: "two-faced".into(),
            steps,
            stop_reason: StopReason::EndOfSequence,
            prompt_tokens: 3,
        })
    }

    fn model_id(&self) -> String {
        BACKEND.into()
    }
}

#[test]
fn a_trace_that_differs_from_what_the_observer_saw_is_refused() {
    let (trace, token, violation) =
        contract(run(&mut TwoFaced, config(PolicyConfig::fixed(1))).unwrap_err());
    assert_eq!((trace, token), (Some(0), Some(3)));
    assert!(matches!(violation, Violation::ObserverMismatch { .. }));
}

#[test]
fn prompts_without_a_user_turn_or_user_text_are_refused() {
    let runner = Runner::new(config(PolicyConfig::fixed(1))).unwrap();
    let mut model = Scripted::new(|_, _| Some(well_formed(20, 1.0)));
    let cases: [(Prompt, &str); 5] = [
        (Prompt::Chat(vec![]), "roles []"),
        (Prompt::Chat(vec![ChatMessage::user("")]), "message 0"),
        (
            Prompt::Chat(vec![
                ChatMessage::system("be brief"),
                ChatMessage::user("  \n"),
            ]),
            "message 1",
        ),
        (
            Prompt::Chat(vec![ChatMessage::assistant("Sure, here is how")]),
            "roles [assistant]",
        ),
        (Prompt::Text(" ".into()), "\" \""),
    ];
    for (prompt, shown) in cases {
        let err = runner
            .run_prompt(&mut model, prompt.clone(), &mut label, None)
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidParameter {
                    parameter: "prompt",
                    ..
                }
            ),
            "{prompt:?}: {err}"
        );
        assert!(err.to_string().contains(shown), "{prompt:?}: {err}");
    }
    // A conversation that ends with the assistant's turn is fine when a user asked something.
    let prefilled = Prompt::Chat(vec![
        ChatMessage::user("q"),
        ChatMessage::assistant("Well,"),
    ]);
    assert!(
        runner
            .run_prompt(&mut model, prefilled, &mut label, None)
            .is_ok()
    );
}

#[test]
fn an_out_of_range_prototype_percentile_is_refused() {
    for percentile in [-10.0, 150.0, f64::NAN] {
        let err = Runner::new(config(PolicyConfig::Prototype {
            warmup_traces: 3,
            batch_size: 3,
            max_traces: 9,
            percentile,
        }))
        .unwrap_err();
        assert!(err.to_string().contains("`percentile`"), "{err}");
    }
}
