//! Runner behaviour with small deterministic backends written for the test.

use deepconf_core::policy::{PolicyConfig, Step};
use deepconf_core::{
    ChatMessage, Error, GenerationRequest, LogprobModel, RunConfig, Runner, SamplingParams,
    StopReason, TokenControl, TokenObserver, TokenStep, Trace, TraceSpec,
};

/// Emits `len` tokens whose top-k log-probabilities get flatter with the trace index, so later traces
/// are less confident. `obey_stop = false` models a backend that ignores the observer.
struct Fading {
    len: usize,
    obey_stop: bool,
}

fn step(flatness: f32) -> TokenStep {
    let top: Vec<f32> = (0..20).map(|j| -0.01 - j as f32 * flatness).collect();
    TokenStep {
        token_id: Some(5),
        text: "x".into(),
        logprob: top[0],
        top_logprobs: top,
        top_token_ids: vec![],
        top_tokens: vec![],
    }
}

impl LogprobModel for Fading {
    fn generate(
        &mut self,
        _: &GenerationRequest,
        spec: TraceSpec,
        observer: &mut dyn TokenObserver,
    ) -> deepconf_core::Result<Trace> {
        let mut steps = Vec::new();
        let mut stop_reason = StopReason::EndOfSequence;
        // Trace i is confident (steep) for i < 4, flat afterwards.
        let flatness = if spec.index < 4 { 5.0 } else { 0.1 };
        for _ in 0..self.len {
            steps.push(step(flatness));
            let control = observer.on_token(&spec, steps.last().unwrap());
            if control == TokenControl::Stop && self.obey_stop {
                stop_reason = StopReason::Terminated;
                break;
            }
        }
        Ok(Trace {
            spec,
            text: "x".repeat(steps.len()),
            steps,
            stop_reason,
            prompt_tokens: 1,
        })
    }
}

fn config(policy: PolicyConfig) -> RunConfig {
    let mut c = RunConfig {
        policy,
        ..RunConfig::default()
    };
    c.confidence.window = 4;
    c
}

fn label(t: &Trace) -> Option<String> {
    Some(if t.n_tokens() > 10 { "long" } else { "short" }.into())
}

#[test]
fn online_cuts_unconfident_traces_after_one_window() {
    let runner = Runner::new(config(PolicyConfig::Online {
        warmup_traces: 4,
        max_traces: 8,
        keep_percent: 90.0,
        consensus: 2.0, // never stop at consensus: exercise the budget
        batch_size: 2,
        voting: deepconf_core::policy::Voting::ConfidenceWeighted,
    }))
    .unwrap();
    let mut model = Fading {
        len: 30,
        obey_stop: true,
    };
    let out = runner
        .run(&mut model, &[ChatMessage::user("q")], &mut label)
        .unwrap();
    assert_eq!(out.traces.len(), 8);
    for r in &out.traces[..4] {
        assert_eq!(r.trace.n_tokens(), 30, "warmup traces run to completion");
        assert!(r.termination.is_none());
    }
    for r in &out.traces[4..] {
        let t = r.termination.expect("flat traces are cut");
        assert_eq!(t.at_token, 4, "cut at the first full window");
        assert_eq!(r.trace.n_tokens(), 4);
        assert_eq!(r.trace.stop_reason, StopReason::Terminated);
        assert!(t.group_confidence < t.threshold);
    }
    assert_eq!(out.tokens_generated, 4 * 30 + 4 * 4);
    // Steps: warmup, two adaptive batches of 2, then finish.
    assert_eq!(out.steps.len(), 4);
    assert!(matches!(
        out.steps[1],
        Step::Generate {
            count: 2,
            stop_below: Some(_),
            ..
        }
    ));
    assert_eq!(out.decision.voters, vec![0, 1, 2, 3]);
}

#[test]
fn a_backend_that_ignores_stop_is_still_recorded_as_terminated() {
    let runner = Runner::new(config(PolicyConfig::Online {
        warmup_traces: 4,
        max_traces: 5,
        keep_percent: 90.0,
        consensus: 2.0,
        batch_size: 1,
        voting: deepconf_core::policy::Voting::Majority,
    }))
    .unwrap();
    let mut model = Fading {
        len: 12,
        obey_stop: false,
    };
    let out = runner
        .run(&mut model, &[ChatMessage::user("q")], &mut label)
        .unwrap();
    let last = out.traces.last().unwrap();
    assert_eq!(last.trace.stop_reason, StopReason::Terminated);
    assert_eq!(last.termination.unwrap().at_token, 4);
    // Tokens the backend generated anyway are counted: they were spent.
    assert_eq!(last.trace.n_tokens(), 12);
}

#[test]
fn progress_sees_every_token() {
    let runner = Runner::new(config(PolicyConfig::fixed(3))).unwrap();
    let mut model = Fading {
        len: 7,
        obey_stop: true,
    };
    let mut seen = 0usize;
    let mut progress = |_: &TraceSpec, _: &TokenStep| seen += 1;
    let out = runner
        .run_with_progress(
            &mut model,
            &[ChatMessage::user("q")],
            &mut label,
            Some(&mut progress),
        )
        .unwrap();
    assert_eq!(seen, out.tokens_generated);
    assert_eq!(seen, 21);
}

/// Returns one trace fewer than asked.
struct Lossy;

impl LogprobModel for Lossy {
    fn generate(
        &mut self,
        _: &GenerationRequest,
        _: TraceSpec,
        _: &mut dyn TokenObserver,
    ) -> deepconf_core::Result<Trace> {
        unreachable!("generate_batch is overridden")
    }

    fn generate_batch(
        &mut self,
        _: &GenerationRequest,
        traces: &[TraceSpec],
        _: &mut dyn TokenObserver,
    ) -> deepconf_core::Result<Vec<Trace>> {
        Ok(traces[1..]
            .iter()
            .map(|&spec| Trace {
                spec,
                text: String::new(),
                steps: vec![],
                stop_reason: StopReason::EndOfSequence,
                prompt_tokens: 0,
            })
            .collect())
    }
}

#[test]
fn a_lost_trace_is_a_contract_error() {
    let runner = Runner::new(config(PolicyConfig::fixed(2))).unwrap();
    let err = runner
        .run(&mut Lossy, &[ChatMessage::user("q")], &mut label)
        .unwrap_err();
    assert!(matches!(err, Error::Contract { .. }), "{err}");
    assert!(
        err.to_string().contains("1 traces for 2 requested"),
        "{err}"
    );
}

#[test]
fn invalid_configuration_names_the_parameter() {
    let mut c = config(PolicyConfig::fixed(2));
    c.sampling = SamplingParams::default().with_top_logprobs(5);
    let err = Runner::new(c).unwrap_err();
    assert!(err.to_string().contains("sampling.top_logprobs"), "{err}");
    let mut c = config(PolicyConfig::online(8, 4, 10.0));
    c.sampling = SamplingParams::default();
    let err = Runner::new(c).unwrap_err();
    assert!(err.to_string().contains("max_traces"), "{err}");
}

#[test]
fn run_config_round_trips_through_json() {
    let c = config(PolicyConfig::offline(8, 10.0));
    let json = serde_json::to_string_pretty(&c).unwrap();
    assert_eq!(serde_json::from_str::<RunConfig>(&json).unwrap(), c);
}
