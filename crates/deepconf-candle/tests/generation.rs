//! Generation on the real embedded model (SmolLM2-135M-Instruct Q4_1).

use std::sync::OnceLock;

use deepconf_candle::CandleModel;
use deepconf_core::{
    GenerationRequest, LogprobModel, NoObserver, SamplingParams, StopReason, TokenControl,
    TokenStep, TraceSpec,
};

use crate::common;

/// The model is loaded once per test binary; each test clones nothing but locks it.
fn model() -> std::sync::MutexGuard<'static, CandleModel> {
    static MODEL: OnceLock<std::sync::Mutex<CandleModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let path = common::default_model_path();
            std::sync::Mutex::new(CandleModel::load(path).expect("default model loads"))
        })
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

fn request(sampling: SamplingParams) -> GenerationRequest {
    GenerationRequest::user("Name three colours.", sampling)
}

fn check_step(step: &TokenStep, k: usize) {
    assert_eq!(step.top_logprobs.len(), k);
    assert_eq!(step.top_token_ids.len(), k);
    assert!(
        step.top_logprobs.windows(2).all(|w| w[0] >= w[1]),
        "{:?}",
        step.top_logprobs
    );
    assert!(step.top_logprobs.iter().all(|&l| l <= 0.0));
    let mass: f64 = step.top_logprobs.iter().map(|&l| f64::from(l).exp()).sum();
    assert!(mass <= 1.0 + 1e-4, "top-k mass {mass}");
    let id = step.token_id.expect("candle reports ids");
    if let Some(pos) = step.top_token_ids.iter().position(|&t| t == id) {
        assert!((step.top_logprobs[pos] - step.logprob).abs() < 1e-6);
    } else {
        assert!(step.logprob <= *step.top_logprobs.last().unwrap());
    }
}

#[test]
fn sampled_traces_report_valid_top_k_logprobs() {
    let mut m = model();
    let sampling = SamplingParams::default()
        .with_max_tokens(24)
        .with_seed(5)
        .with_temperature(1.0);
    let traces = m
        .generate_batch(
            &request(sampling),
            &[TraceSpec::derive(5, 0), TraceSpec::derive(5, 1)],
            &mut NoObserver,
        )
        .unwrap();
    for t in &traces {
        assert!(!t.steps.is_empty());
        assert!(t.prompt_tokens > 5);
        t.steps.iter().for_each(|s| check_step(s, 20));
        if t.stop_reason == StopReason::MaxTokens {
            assert_eq!(t.steps.len(), 24);
        }
    }
}

#[test]
fn greedy_is_deterministic_and_follows_the_argmax() {
    let mut m = model();
    let sampling = SamplingParams::greedy()
        .with_max_tokens(16)
        .with_top_logprobs(5);
    let a = m
        .generate(
            &request(sampling.clone()),
            TraceSpec::derive(0, 0),
            &mut NoObserver,
        )
        .unwrap();
    let b = m
        .generate(
            &request(sampling),
            TraceSpec::derive(99, 3),
            &mut NoObserver,
        )
        .unwrap();
    assert_eq!(a.token_ids(), b.token_ids());
    assert_eq!(a.text, b.text);
    for s in &a.steps {
        check_step(s, 5);
        assert_eq!(s.token_id, Some(s.top_token_ids[0]));
        assert_eq!(s.logprob, s.top_logprobs[0]);
    }
    assert!(!a.text.trim().is_empty());
}

#[test]
fn batched_and_sequential_generation_agree() {
    let mut m = model();
    let sampling = SamplingParams::default()
        .with_max_tokens(8)
        .with_temperature(0.8);
    let specs: Vec<TraceSpec> = (0..4).map(|i| TraceSpec::derive(11, i)).collect();
    let batched = m
        .generate_batch(&request(sampling.clone()), &specs, &mut NoObserver)
        .unwrap();
    for (spec, b) in specs.iter().zip(&batched) {
        let single = m
            .generate(&request(sampling.clone()), *spec, &mut NoObserver)
            .unwrap();
        assert_eq!(b.spec, *spec);
        // Batch rows see the same per-row arithmetic, so at least the first tokens agree.
        let n = 4.min(single.steps.len()).min(b.steps.len());
        assert_eq!(
            single.token_ids()[..n],
            b.token_ids()[..n],
            "trace {}",
            spec.index
        );
    }
    // Different seeds should not all produce the same trace.
    assert!(
        batched
            .iter()
            .any(|t| t.token_ids() != batched[0].token_ids())
    );
}

#[test]
fn observer_terminates_one_trace_and_others_continue() {
    let mut m = model();
    let sampling = SamplingParams::default()
        .with_max_tokens(10)
        .with_temperature(0.0);
    let specs = [TraceSpec::derive(1, 0), TraceSpec::derive(1, 1)];
    let mut seen = 0usize;
    let mut observer = |spec: &TraceSpec, _: &TokenStep| {
        seen += 1;
        if spec.index == 0 {
            TokenControl::Stop
        } else {
            TokenControl::Continue
        }
    };
    let traces = m
        .generate_batch(&request(sampling), &specs, &mut observer)
        .unwrap();
    assert_eq!(traces[0].stop_reason, StopReason::Terminated);
    assert_eq!(traces[0].steps.len(), 1);
    assert!(traces[1].steps.len() > 1);
    assert_eq!(seen, traces[0].steps.len() + traces[1].steps.len());
}

#[test]
fn prompt_longer_than_the_context_is_a_clear_error() {
    let mut m = model();
    let ctx = m.context_length();
    let long = "word ".repeat(ctx + 10);
    let err = m
        .generate(
            &GenerationRequest::user(long, SamplingParams::greedy()),
            TraceSpec::derive(0, 0),
            &mut NoObserver,
        )
        .unwrap_err();
    assert!(err.to_string().contains("context length"), "{err}");
}

#[test]
fn a_prompt_that_shares_a_prefix_with_an_earlier_one_gives_the_same_traces() {
    // Both prompts open with the chat template's system turn (well over the 8 positions a shared
    // prefix needs), so the second one's prefill starts from the first one's keys and values on a
    // model that has seen the first, and from nothing on a freshly loaded one.
    let sampling = SamplingParams::default()
        .with_max_tokens(12)
        .with_temperature(0.8);
    let first = GenerationRequest::user("Name three colours.", sampling.clone());
    let second = GenerationRequest::user("Name three rivers in Europe.", sampling);
    let specs: Vec<TraceSpec> = (0..3).map(|i| TraceSpec::derive(5, i)).collect();
    let path = common::default_model_path();
    let mut warm = CandleModel::load(&path).expect("default model loads");
    warm.generate_batch(&first, &specs, &mut NoObserver)
        .unwrap();
    let reused = warm
        .generate_batch(&second, &specs, &mut NoObserver)
        .unwrap();
    let mut cold = CandleModel::load(&path).expect("default model loads");
    let fresh = cold
        .generate_batch(&second, &specs, &mut NoObserver)
        .unwrap();
    for (a, b) in reused.iter().zip(&fresh) {
        assert_eq!(a.prompt_tokens, b.prompt_tokens);
        assert_eq!(a.token_ids(), b.token_ids(), "trace {}", a.spec.index);
        for (x, y) in a.steps.iter().zip(&b.steps) {
            assert_eq!(x.top_logprobs, y.top_logprobs, "trace {}", a.spec.index);
        }
    }
}
