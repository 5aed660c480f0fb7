//! Serving at scale against the test kit's synthetic server: both event shapes at top-20, one
//! request for a batch's traces (`n`) and the fallback when a server refuses or ignores it, and
//! replicas (prompt affinity, a failing replica rested while its prompts go elsewhere).

use std::time::Duration;

use deepconf_core::{
    GenerationRequest, LogprobModel, NoObserver, SamplingParams, StopReason, TokenControl,
    TokenStep, Trace, TraceSpec,
};
use deepconf_openai::{Endpoint, OpenAiModel, PromptTemplate};
use deepconf_testkit::synthetic::{ChoicesMode, Dialect, SyntheticConfig, SyntheticServer};

fn request(prompt: &str, max_tokens: usize) -> GenerationRequest {
    GenerationRequest::user(
        prompt,
        SamplingParams::default()
            .with_max_tokens(max_tokens)
            .with_top_logprobs(20),
    )
}

fn specs(n: usize) -> Vec<TraceSpec> {
    (0..n).map(|i| TraceSpec::derive(99, i)).collect()
}

fn server(dialect: Dialect, choices: ChoicesMode) -> SyntheticServer {
    SyntheticServer::start(SyntheticConfig {
        dialect,
        choices,
        full_length: false,
        ..SyntheticConfig::default()
    })
}

fn client(base_url: &str) -> deepconf_openai::OpenAiBuilder {
    OpenAiModel::builder(base_url, "synthetic")
        .no_api_key()
        .backoff(Duration::from_millis(10), Duration::from_millis(40))
        .read_timeout(Duration::from_secs(20))
}

fn assert_full_top_20(traces: &[Trace], max_tokens: usize) {
    for trace in traces {
        assert!(!trace.steps.is_empty() && trace.steps.len() <= max_tokens);
        let expected = if trace.steps.len() == max_tokens {
            StopReason::MaxTokens
        } else {
            StopReason::EndOfSequence
        };
        assert_eq!(trace.stop_reason, expected);
        for step in &trace.steps {
            assert_eq!(step.top_logprobs.len(), 20);
            assert!(step.top_logprobs.windows(2).all(|w| w[0] >= w[1]));
            assert_eq!(step.logprob, step.top_logprobs[0]);
        }
        let text: String = trace.steps.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(trace.text, text);
        assert!(trace.prompt_tokens > 0);
    }
}

#[test]
fn both_dialects_stream_top_20_and_a_stop_cuts_the_stream() {
    for dialect in [Dialect::Vllm, Dialect::LlamaServer] {
        let server = server(dialect, ChoicesMode::Serve);
        let mut model = client(&server.base_url).build().unwrap();
        let traces = model
            .generate_batch(&request("Hi", 24), &specs(4), &mut NoObserver)
            .unwrap();
        assert_full_top_20(&traces, 24);
        if dialect == Dialect::LlamaServer {
            assert!(
                traces[0].steps[0].token_id.is_some(),
                "llama-server sends ids"
            );
        }
        // The same seeds give the same traces.
        let again = model
            .generate_batch(&request("Hi", 24), &specs(4), &mut NoObserver)
            .unwrap();
        assert_eq!(traces, again);
        let cut = model
            .generate(
                &request("Hi", 24),
                specs(1)[0],
                &mut |_: &TraceSpec, _: &TokenStep| TokenControl::Stop,
            )
            .unwrap();
        assert_eq!(cut.stop_reason, StopReason::Terminated);
        assert_eq!(cut.steps.len(), 1);
        assert_eq!(cut.steps[0], traces[0].steps[0]);
    }
}

#[test]
fn completions_endpoint_reads_both_dialects() {
    for dialect in [Dialect::Vllm, Dialect::LlamaServer] {
        let server = server(dialect, ChoicesMode::Serve);
        let mut model = client(&server.base_url)
            .endpoint(Endpoint::Completions {
                template: PromptTemplate::chatml(),
            })
            .build()
            .unwrap();
        let traces = model
            .generate_batch(&request("Hi", 12), &specs(2), &mut NoObserver)
            .unwrap();
        for trace in &traces {
            assert!(!trace.steps.is_empty());
            // vLLM keys candidates by text, so those decoding alike collapse.
            assert!(trace.steps.iter().all(|s| !s.top_logprobs.is_empty()));
        }
        assert!(
            server
                .requests()
                .iter()
                .all(|r| r.path == "/v1/completions")
        );
    }
}

/// The traces of `prompt` with `model` (not streamed: one request for the batch where served).
fn batch(model: &mut OpenAiModel, prompt: &str, n: usize) -> Vec<Trace> {
    model
        .generate_batch(&request(prompt, 16), &specs(n), &mut NoObserver)
        .unwrap()
}

#[test]
fn one_request_for_n_traces_gives_the_traces_of_one_request_each() {
    let serving = server(Dialect::Vllm, ChoicesMode::Serve);
    let refusing = server(Dialect::LlamaServer, ChoicesMode::Reject(500));
    let ignoring = server(Dialect::Vllm, ChoicesMode::Ignore);
    let build = |s: &SyntheticServer| client(&s.base_url).stream(false).build().unwrap();
    let (mut a, mut b, mut c) = (build(&serving), build(&refusing), build(&ignoring));
    let served = batch(&mut a, "Hi", 8);
    assert_full_top_20(&served, 16);
    let n_requests: Vec<_> = serving.requests().into_iter().filter(|r| r.n > 1).collect();
    assert_eq!(n_requests.len(), 1, "one request for the 8 traces");
    assert_eq!(n_requests[0].n, 8);
    assert!(!n_requests[0].stream);

    // A server answering `n` with an error, then one answering a single choice: same traces
    // apart from the token ids the llama-server shape adds.
    let strip = |traces: Vec<Trace>| -> Vec<Trace> {
        traces
            .into_iter()
            .map(|mut t| {
                for s in &mut t.steps {
                    s.token_id = None;
                    s.top_token_ids.clear();
                }
                t
            })
            .collect()
    };
    assert_eq!(strip(batch(&mut b, "Hi", 8)), strip(served.clone()));
    let seen = refusing.requests();
    assert_eq!(seen.len(), 9, "the refused request, then one per trace");
    assert_eq!((seen[0].n, seen[0].status), (8, 500));
    let seed = seen[0].seed.unwrap();
    let mut seeds: Vec<u64> = seen[1..].iter().map(|r| r.seed.unwrap()).collect();
    seeds.sort_unstable();
    assert_eq!(seeds, (seed..seed + 8).collect::<Vec<_>>());
    assert!(seen[1..].iter().all(|r| r.n == 1 && r.status == 200));
    // Remembered: the next batch asks for one trace per request straight away.
    batch(&mut b, "Hello", 4);
    assert_eq!(refusing.requests().len(), 13);
    assert!(refusing.requests()[9..].iter().all(|r| r.n == 1));

    assert_eq!(batch(&mut c, "Hi", 8), served);
    let seen = ignoring.requests();
    assert_eq!(
        seen.len(),
        8,
        "the ignored request gave choice 0; 7 more were asked for"
    );
    assert_eq!(seen[0].n, 8);
}

#[test]
fn an_online_stop_cuts_a_whole_trace_client_side() {
    let server = server(Dialect::Vllm, ChoicesMode::Serve);
    let mut model = client(&server.base_url).stream(false).build().unwrap();
    let full = batch(&mut model, "Hi", 3);
    let mut seen = 0;
    let cut = model
        .generate_batch(
            &request("Hi", 16),
            &specs(3),
            &mut |spec: &TraceSpec, _: &TokenStep| {
                seen += 1;
                if spec.index == 1 {
                    TokenControl::Stop
                } else {
                    TokenControl::Continue
                }
            },
        )
        .unwrap();
    assert_eq!(cut[0], full[0]);
    assert_eq!(cut[1].steps.len(), 1);
    assert_eq!(cut[1].stop_reason, StopReason::Terminated);
    assert_eq!(cut[1].text, full[1].steps[0].text);
    assert_eq!(cut[2], full[2]);
    assert_eq!(seen, full[0].steps.len() + 1 + full[2].steps.len());
}

/// Which of the two servers received each prompt's requests.
fn homes(a: &SyntheticServer, b: &SyntheticServer) -> Vec<(u64, bool, bool)> {
    let mut prompts: Vec<u64> = a
        .requests()
        .iter()
        .chain(b.requests().iter())
        .map(|r| r.prompt_hash)
        .collect();
    prompts.sort_unstable();
    prompts.dedup();
    prompts
        .into_iter()
        .map(|p| {
            (
                p,
                a.requests().iter().any(|r| r.prompt_hash == p),
                b.requests().iter().any(|r| r.prompt_hash == p),
            )
        })
        .collect()
}

#[test]
fn replicas_keep_a_prompt_on_one_server_and_rest_a_failing_one() {
    let (a, b) = (
        server(Dialect::Vllm, ChoicesMode::Serve),
        server(Dialect::Vllm, ChoicesMode::Serve),
    );
    let mut model = client(&a.base_url)
        .replica(&b.base_url)
        .max_concurrency(4)
        .build()
        .unwrap();
    let prompts: Vec<String> = (0..24).map(|i| format!("prompt {i}")).collect();
    for prompt in &prompts {
        batch(&mut model, prompt, 4);
    }
    let placed = homes(&a, &b);
    assert_eq!(placed.len(), 24);
    assert!(
        placed.iter().all(|(_, on_a, on_b)| on_a != on_b),
        "{placed:?}"
    );
    let on_a = placed.iter().filter(|(_, on_a, _)| *on_a).count();
    assert!(
        (4..=20).contains(&on_a),
        "both replicas get prompts: {on_a} on a"
    );

    // `a` fails: every trace still succeeds, on `b`, and `a` is rested rather than retried for
    // every request.
    a.set_failing(Some(503));
    let before = a.requests().len();
    for prompt in &prompts {
        let traces = batch(&mut model, prompt, 4);
        assert_eq!(traces.len(), 4);
    }
    let failed_on_a = a.requests().len() - before;
    assert!(
        (1..=8).contains(&failed_on_a),
        "a failing replica rests after its first failures: {failed_on_a} requests reached it"
    );
    assert!(a.requests()[before..].iter().all(|r| r.status == 503));

    // Back in service after its rest, `a` gets its prompts again.
    a.set_failing(None);
    std::thread::sleep(Duration::from_millis(1200));
    let before = a.requests().len();
    for prompt in &prompts {
        batch(&mut model, prompt, 4);
    }
    assert_eq!(a.requests().len() - before, 4 * on_a);
}

#[test]
fn a_stop_in_a_streamed_batch_keeps_exactly_the_tokens_the_observer_saw() {
    let server = server(Dialect::Vllm, ChoicesMode::Serve);
    let mut model = client(&server.base_url).max_concurrency(8).build().unwrap();
    let full = model
        .generate_batch(&request("Hi", 32), &specs(8), &mut NoObserver)
        .unwrap();
    let mut seen = [0usize; 8];
    let cut = model
        .generate_batch(
            &request("Hi", 32),
            &specs(8),
            &mut |spec: &TraceSpec, _: &TokenStep| {
                seen[spec.index] += 1;
                // Trace i stops at its token i + 2; trace 7 never.
                if spec.index < 7 && seen[spec.index] == spec.index + 2 {
                    TokenControl::Stop
                } else {
                    TokenControl::Continue
                }
            },
        )
        .unwrap();
    for (i, (cut, full)) in cut.iter().zip(&full).enumerate() {
        if i == 7 {
            assert_eq!(cut, full);
            continue;
        }
        assert_eq!(seen[i], i + 2, "the observer sees no token after its stop");
        assert_eq!(cut.stop_reason, StopReason::Terminated);
        assert_eq!(cut.steps[..], full.steps[..i + 2]);
        let text: String = full.steps[..i + 2]
            .iter()
            .map(|s| s.text.as_str())
            .collect();
        assert_eq!(cut.text, text);
    }
}
