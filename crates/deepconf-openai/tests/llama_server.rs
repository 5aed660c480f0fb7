//! Against a real llama-cpp-python server serving SmolLM2-135M-Instruct (Q4_1 GGUF).

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use deepconf_core::confidence::ConfidenceConfig;
use deepconf_core::policy::{PolicyConfig, Voting};
use deepconf_core::{
    ChatMessage, GenerationRequest, LogprobModel, NoObserver, RunConfig, Runner, SamplingParams,
    StopReason, TokenControl, TokenStep, Trace, TraceSpec,
};
use deepconf_openai::{Endpoint, OpenAiError, PromptTemplate};

use crate::common::{self, server};

const SYSTEM: &str = "You are a helpful assistant.";
const QUESTION: &str = "What is the capital of France?";

fn question(sampling: SamplingParams) -> GenerationRequest {
    GenerationRequest::chat(
        vec![ChatMessage::system(SYSTEM), ChatMessage::user(QUESTION)],
        sampling,
    )
}

/// Every token has `k` candidates (at least `min` where the server may collapse candidates that
/// decode to the same text), sorted, as log-probabilities.
fn assert_top_k(trace: &Trace, k: usize, min: usize) {
    assert!(!trace.steps.is_empty(), "no tokens: {trace:?}");
    for (i, step) in trace.steps.iter().enumerate() {
        let n = step.top_logprobs.len();
        assert!(
            min <= n && n <= k,
            "token {i} of {:?}: {n} candidates",
            trace.text
        );
        assert!(
            step.top_logprobs.windows(2).all(|w| w[0] >= w[1]),
            "token {i}: candidates not sorted: {:?}",
            step.top_logprobs
        );
        assert!(
            step.top_logprobs
                .iter()
                .all(|lp| *lp <= 0.0 && lp.is_finite())
        );
    }
}

#[test]
fn top_k_logprobs_arrive_for_every_token_streamed_or_not() {
    let sampling = SamplingParams::greedy()
        .with_max_tokens(24)
        .with_top_logprobs(20);
    let request = question(sampling);
    let spec = TraceSpec::derive(0, 0);
    let mut seen = Vec::new();
    let streamed = server()
        .model()
        .build()
        .unwrap()
        .generate(&request, spec, &mut |_: &TraceSpec, s: &TokenStep| {
            seen.push(s.clone());
            TokenControl::Continue
        })
        .unwrap();
    let whole = server()
        .model()
        .stream(false)
        .build()
        .unwrap()
        .generate(&request, spec, &mut NoObserver)
        .unwrap();
    for trace in [&streamed, &whole] {
        assert_top_k(trace, 20, 20);
        // Greedy decoding picks the most likely candidate.
        for step in &trace.steps {
            assert!(
                (step.logprob - step.top_logprobs[0]).abs() < 1e-3,
                "{step:?}"
            );
        }
        let joined: String = trace.steps.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(joined, trace.text);
        assert!(trace.text.contains("Paris"), "{:?}", trace.text);
        assert_ne!(trace.stop_reason, StopReason::Terminated);
    }
    assert_eq!(
        seen, streamed.steps,
        "the observer saw every streamed token once"
    );
    let texts = |t: &Trace| t.steps.iter().map(|s| s.text.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&streamed), texts(&whole));
    assert!(whole.prompt_tokens > 0, "usage gives the prompt length");
}

#[test]
fn completions_endpoint_with_chatml_matches_the_chat_endpoint() {
    let request = question(
        SamplingParams::greedy()
            .with_max_tokens(12)
            .with_top_logprobs(5),
    );
    let spec = TraceSpec::derive(0, 0);
    let chat = server()
        .model()
        .build()
        .unwrap()
        .generate(&request, spec, &mut NoObserver)
        .unwrap();
    let completions = server()
        .model()
        .endpoint(Endpoint::Completions {
            template: PromptTemplate::chatml(),
        })
        .build()
        .unwrap()
        .generate(&request, spec, &mut NoObserver)
        .unwrap();
    assert_eq!(completions.text, chat.text);
    for step in &completions.steps {
        // Candidates keyed by text can collapse, never exceed k.
        assert!((1..=5).contains(&step.top_logprobs.len()), "{step:?}");
    }
}

/// llama.cpp's own greedy decode through the Python API (not the server), token by token.
const REFERENCE: &str = r#"
import json, sys
from llama_cpp import Llama
model, prompt, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
llm = Llama(model_path=model, n_ctx=512, n_threads=2, logits_all=True, verbose=False)
llm.eval(llm.tokenize(prompt.encode(), add_bos=False, special=True))
out = []
for _ in range(n):
    best = int(llm.scores[llm.n_tokens - 1].argmax())
    if best == llm.token_eos():
        break
    out.append(llm.detokenize([best]).decode("utf-8", errors="replace"))
    llm.eval([best])
print(json.dumps(out))
"#;

#[test]
fn greedy_tokens_agree_with_llama_cpp_python_api() {
    let n = 8;
    let request = question(
        SamplingParams::greedy()
            .with_max_tokens(n)
            .with_top_logprobs(1),
    );
    let messages = request.prompt.messages().expect("a chat request");
    let prompt = PromptTemplate::chatml().format(messages);
    let output = Command::new(common::python())
        .args(["-c", REFERENCE])
        .arg(common::model_path())
        .arg(&prompt)
        .arg(n.to_string())
        .output()
        .expect("run the llama_cpp reference");
    assert!(
        output.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let reference: Vec<String> = serde_json::from_slice(&output.stdout).unwrap();
    assert!(reference.len() >= 4, "{reference:?}");
    let trace = server()
        .model()
        .endpoint(Endpoint::Completions {
            template: PromptTemplate::chatml(),
        })
        .build()
        .unwrap()
        .generate(&request, TraceSpec::derive(0, 0), &mut NoObserver)
        .unwrap();
    let served: Vec<String> = trace.steps.iter().map(|s| s.text.clone()).collect();
    assert_eq!(served, reference);
}

#[test]
fn greedy_tokens_agree_with_the_candle_backend() {
    let n = 8;
    let request = question(
        SamplingParams::greedy()
            .with_max_tokens(n)
            .with_top_logprobs(20),
    );
    let spec = TraceSpec::derive(0, 0);
    let mut candle = deepconf_candle::CandleModel::load(common::model_path()).unwrap();
    let local = candle.generate(&request, spec, &mut NoObserver).unwrap();
    let served = server()
        .model()
        .build()
        .unwrap()
        .generate(&request, spec, &mut NoObserver)
        .unwrap();
    let texts = |t: &Trace| t.steps.iter().map(|s| s.text.clone()).collect::<Vec<_>>();
    assert!(served.n_tokens() >= 4, "{served:?}");
    assert_eq!(texts(&local), texts(&served));
    for (a, b) in local.steps.iter().zip(&served.steps) {
        // Same weights, different kernels: the distributions agree closely, not bit for bit.
        assert!(
            (a.logprob - b.logprob).abs() < 0.25,
            "{:?}: candle {} vs llama.cpp {}",
            a.text,
            a.logprob,
            b.logprob
        );
    }
}

#[test]
fn stopping_mid_stream_terminates_the_trace_and_the_server_generation() {
    let _serial = common::disconnect_lock();
    let before = server().disconnects();
    let request = GenerationRequest::user(
        "Write a long story about a dragon who learns to bake bread.",
        SamplingParams::greedy()
            .with_max_tokens(400)
            .with_top_logprobs(20),
    );
    let spec = TraceSpec::derive(1, 0);
    let mut calls = 0;
    let trace = server()
        .model()
        .build()
        .unwrap()
        .generate(&request, spec, &mut |_: &TraceSpec, _: &TokenStep| {
            calls += 1;
            if calls == 3 {
                TokenControl::Stop
            } else {
                TokenControl::Continue
            }
        })
        .unwrap();
    assert_eq!(trace.stop_reason, StopReason::Terminated);
    assert_eq!(trace.n_tokens(), 3);
    assert_eq!(calls, 3);
    let joined: String = trace.steps.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(trace.text, joined);
    assert!(
        common::wait_until(Duration::from_secs(30), || server().disconnects() > before),
        "the server never logged the closed stream; log: {}",
        server().log_path.display()
    );
    // The server is free again: a new request completes.
    let next = server()
        .model()
        .build()
        .unwrap()
        .generate(
            &question(SamplingParams::greedy().with_max_tokens(4)),
            spec,
            &mut NoObserver,
        )
        .unwrap();
    assert_eq!(next.n_tokens(), 4);
}

#[test]
fn deepconf_online_run_cuts_traces_below_the_warmup_threshold() {
    let _serial = common::disconnect_lock();
    let before = server().disconnects();
    let config = RunConfig {
        policy: PolicyConfig::Online {
            warmup_traces: 2,
            max_traces: 6,
            keep_percent: 10.0,
            consensus: 2.0, // never stop on consensus: sample the whole budget
            batch_size: 4,
            voting: Voting::ConfidenceWeighted,
        },
        confidence: ConfidenceConfig::default().with_window(4).with_tail(4),
        sampling: SamplingParams::default()
            .with_temperature(1.0)
            .with_max_tokens(32)
            .with_seed(11),
    };
    let mut model = server().model().max_concurrency(2).build().unwrap();
    let outcome = Runner::new(config)
        .unwrap()
        .run(
            &mut model,
            &[ChatMessage::user(
                "Tell me something surprising about octopuses.",
            )],
            &mut |t: &Trace| t.text.split_whitespace().next().map(str::to_lowercase),
        )
        .unwrap();
    assert_eq!(outcome.traces.len(), 6);
    let cut: Vec<_> = outcome
        .traces
        .iter()
        .filter(|r| r.termination.is_some())
        .collect();
    assert!(!cut.is_empty(), "no trace was cut: {:#?}", outcome.steps);
    for record in &cut {
        let termination = record.termination.unwrap();
        assert_eq!(record.trace.stop_reason, StopReason::Terminated);
        assert_eq!(record.trace.n_tokens(), termination.at_token);
        assert!(record.trace.n_tokens() >= 4 && record.trace.n_tokens() < 32);
        assert!(termination.group_confidence < termination.threshold);
    }
    assert!(
        common::wait_until(Duration::from_secs(30), || server().disconnects() > before),
        "the server never logged a closed stream"
    );
}

#[test]
fn concurrent_traces_complete_once_each_and_seeds_reproduce() {
    let n = 6;
    let request = GenerationRequest::user(
        "Name a fruit.",
        SamplingParams::default()
            .with_temperature(1.0)
            .with_max_tokens(10)
            .with_top_logprobs(8)
            .with_seed(5),
    );
    let specs: Vec<TraceSpec> = (0..n).map(|i| TraceSpec::derive(5, i)).collect();
    let mut model = server().model().max_concurrency(3).build().unwrap();
    let mut per_trace: BTreeMap<usize, Vec<TokenStep>> = BTreeMap::new();
    let traces = model
        .generate_batch(
            &request,
            &specs,
            &mut |spec: &TraceSpec, step: &TokenStep| {
                per_trace.entry(spec.index).or_default().push(step.clone());
                // Trace 2 is cut after two tokens while the others run on.
                if spec.index == 2 && per_trace[&2].len() == 2 {
                    TokenControl::Stop
                } else {
                    TokenControl::Continue
                }
            },
        )
        .unwrap();
    assert_eq!(traces.len(), n);
    for (trace, spec) in traces.iter().zip(&specs) {
        assert_eq!(trace.spec, *spec);
        // llama-cpp-python keys candidates by text, so sampled odd tokens may lose a duplicate.
        assert_top_k(trace, 8, 6);
        assert_eq!(per_trace[&spec.index], trace.steps, "trace {}", spec.index);
    }
    assert_eq!(traces[2].stop_reason, StopReason::Terminated);
    assert_eq!(traces[2].n_tokens(), 2);
    let distinct: std::collections::BTreeSet<&str> =
        traces.iter().map(|t| t.text.as_str()).collect();
    assert!(distinct.len() > 1, "different seeds gave identical traces");
    // The same seed reproduces the same trace on its own.
    let again = model.generate(&request, specs[4], &mut NoObserver).unwrap();
    assert_eq!(again.text, traces[4].text);
}

#[test]
fn a_prompt_beyond_the_context_is_a_4xx_quoting_the_server() {
    let long = "hello ".repeat(2100);
    let request = GenerationRequest::user(long, SamplingParams::greedy().with_max_tokens(2));
    // Streaming, llama-cpp-python reports this error only in its log (vLLM answers 400 either way).
    let error = server()
        .model()
        .stream(false)
        .build()
        .unwrap()
        .generate(&request, TraceSpec::derive(0, 0), &mut NoObserver)
        .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("HTTP 400"), "{text}");
    assert!(text.contains("maximum context length"), "{text}");
    assert!(text.contains("/v1/chat/completions"), "{text}");
    let source = std::error::Error::source(&error)
        .and_then(|s| s.downcast_ref::<OpenAiError>())
        .expect("an OpenAiError inside");
    assert_eq!(source.status(), Some(400));
    assert!(
        !matches!(source, OpenAiError::GaveUp { .. }),
        "4xx must not be retried"
    );
}
