//! Failures: an unreachable server, HTTP errors, broken event streams, silence. The scripted
//! server here stands in for a broken server; the model itself is tested in `llama_server`.

use std::net::TcpListener;
use std::time::Duration;

use deepconf_core::{
    GenerationRequest, LogprobModel, SamplingParams, TokenControl, TokenStep, TraceSpec,
};
use deepconf_openai::{OpenAiError, OpenAiModel};

use crate::common::fake::{Answer, FakeServer};

fn request() -> GenerationRequest {
    GenerationRequest::user(
        "Hi",
        SamplingParams::greedy()
            .with_max_tokens(8)
            .with_top_logprobs(2),
    )
}

/// A chat chunk with one token `text` and two candidates.
fn chunk(text: &str, finish: Option<&str>) -> String {
    let finish = finish.map_or("null".to_string(), |f| format!("\"{f}\""));
    format!(
        r#"{{"choices":[{{"index":0,"delta":{{"content":"{text}"}},"finish_reason":{finish},"logprobs":{{"content":[{{"token":"{text}","logprob":-0.5,"top_logprobs":[{{"token":"{text}","logprob":-0.5}},{{"token":"x","logprob":-1.5}}]}}]}}}}]}}"#
    )
}

fn client(base_url: &str, retries: u32) -> OpenAiModel {
    OpenAiModel::builder(base_url, "m")
        .no_api_key()
        .max_retries(retries)
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .connect_timeout(Duration::from_secs(2))
        .read_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Runs one trace that must fail; returns the error and the tokens the observer saw.
fn fail(mut model: OpenAiModel) -> (deepconf_core::Error, Vec<TokenStep>) {
    let mut seen = Vec::new();
    let error = model
        .generate(
            &request(),
            TraceSpec::derive(0, 0),
            &mut |_: &TraceSpec, s: &TokenStep| {
                seen.push(s.clone());
                TokenControl::Continue
            },
        )
        .expect_err("the request must fail");
    assert!(error.to_string().starts_with("openai backend: "), "{error}");
    (error, seen)
}

/// The backend's own error inside the core error.
fn own(error: &deepconf_core::Error) -> &OpenAiError {
    std::error::Error::source(error)
        .and_then(|s| s.downcast_ref::<OpenAiError>())
        .unwrap_or_else(|| panic!("no OpenAiError inside {error:?}"))
}

#[test]
fn an_unreachable_server_names_its_url_after_the_retries() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }; // closed again: connections are refused
    let base_url = format!("http://127.0.0.1:{port}/v1");
    let (core_error, seen) = fail(client(&base_url, 2));
    let error = own(&core_error);
    let OpenAiError::GaveUp { attempts, source } = error else {
        panic!("expected GaveUp, got {error}");
    };
    assert_eq!(*attempts, 3);
    assert!(
        matches!(**source, OpenAiError::Connection { .. }),
        "{source}"
    );
    let text = error.to_string();
    assert!(
        text.contains(&format!("cannot reach {base_url}/chat/completions")),
        "{text}"
    );
    assert!(seen.is_empty());
}

#[test]
fn a_malformed_event_quotes_the_line_after_the_good_tokens() {
    let server = FakeServer::start(vec![Answer::stream(&[
        &chunk("Hel", None),
        r#"{"choices":[{"index":0,"delta":{"content":"lo"},"logprobs":{"content":[{"token":"lo","logprob":"#,
    ])]);
    let (core_error, seen) = fail(client(&server.base_url, 3));
    let error = own(&core_error);
    let OpenAiError::MalformedEvent { line, reason, .. } = error else {
        panic!("expected MalformedEvent, got {error}");
    };
    assert!(line.contains(r#""token":"lo","logprob":"#), "{line}");
    assert!(reason.contains("not JSON"), "{reason}");
    assert_eq!(seen.len(), 1, "the good token reached the observer");
    assert_eq!(seen[0].text, "Hel");
    assert_eq!(
        server.requests(),
        1,
        "a stream that delivered tokens is not retried"
    );
}

#[test]
fn a_line_that_is_no_event_field_is_malformed() {
    let server = FakeServer::start(vec![Answer::Http {
        status: "200 OK",
        headers: vec![("Content-Type", "text/event-stream".into())],
        body: format!("data: {}\n\n<html>proxy error</html>\n\n", chunk("A", None)),
    }]);
    let (core_error, _) = fail(client(&server.base_url, 0));
    let error = own(&core_error);
    let text = error.to_string();
    assert!(
        matches!(error, OpenAiError::MalformedEvent { .. }),
        "{text}"
    );
    assert!(text.contains("<html>proxy error</html>"), "{text}");
}

#[test]
fn a_stream_cut_without_finish_reason_is_an_error() {
    let server = FakeServer::start(vec![Answer::stream(&[
        &chunk("A", None),
        &chunk("B", None),
        "[DONE]",
    ])]);
    let (core_error, seen) = fail(client(&server.base_url, 0));
    let error = own(&core_error);
    assert!(
        matches!(error, OpenAiError::IncompleteStream { tokens: 2, .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("without a finish_reason"),
        "{error}"
    );
    assert_eq!(seen.len(), 2);
}

#[test]
fn too_many_requests_and_server_errors_are_retried() {
    let server = FakeServer::start(vec![
        Answer::Http {
            status: "429 Too Many Requests",
            headers: vec![("Retry-After", "0".into())],
            body: r#"{"error":{"message":"slow down"}}"#.into(),
        },
        Answer::json("503 Service Unavailable", r#"{"detail":"loading"}"#),
        Answer::stream(&[&chunk("O", None), &chunk("K", Some("stop")), "[DONE]"]),
    ]);
    let mut model = client(&server.base_url, 3);
    let trace = model
        .generate(
            &request(),
            TraceSpec::derive(0, 0),
            &mut deepconf_core::NoObserver,
        )
        .unwrap();
    assert_eq!(trace.text, "OK");
    assert_eq!(trace.stop_reason, deepconf_core::StopReason::EndOfSequence);
    assert_eq!(server.requests(), 3);
}

#[test]
fn a_4xx_is_not_retried_and_quotes_the_server_with_a_hint() {
    let server = FakeServer::start(vec![Answer::json(
        "400 Bad Request",
        r#"{"object":"error","message":"Requested top_logprobs (20) exceeds maximum allowed value (5). Set max_logprobs.","type":"BadRequestError","code":400}"#,
    )]);
    let (core_error, _) = fail(client(&server.base_url, 3));
    let error = own(&core_error);
    assert_eq!(error.status(), Some(400));
    let text = error.to_string();
    assert!(text.contains("exceeds maximum allowed value (5)"), "{text}");
    assert!(text.contains("--max-logprobs"), "{text}");
    assert_eq!(server.requests(), 1);
}

#[test]
fn fewer_top_logprobs_than_asked_is_an_error_only_when_strict() {
    let short = || {
        Answer::stream(&[
            r#"{"choices":[{"index":0,"delta":{"content":"A"},"finish_reason":"stop","logprobs":{"content":[{"token":"A","logprob":-0.1,"top_logprobs":[{"token":"A","logprob":-0.1}]}]}}]}"#,
            "[DONE]",
        ])
    };
    let server = FakeServer::start(vec![short(), short()]);
    let trace = client(&server.base_url, 0)
        .generate(
            &request(),
            TraceSpec::derive(0, 0),
            &mut deepconf_core::NoObserver,
        )
        .unwrap();
    assert_eq!(trace.steps[0].top_logprobs, vec![-0.1]);
    let strict = OpenAiModel::builder(&server.base_url, "m")
        .no_api_key()
        .max_retries(0)
        .strict_top_logprobs(true)
        .build()
        .unwrap();
    let (core_error, _) = fail(strict);
    let error = own(&core_error);
    assert!(
        matches!(
            error,
            OpenAiError::TooFewLogprobs {
                got: 1,
                wanted: 2,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn a_silent_server_times_out() {
    let server = FakeServer::start(vec![Answer::Silence(Duration::from_secs(5))]);
    let model = OpenAiModel::builder(&server.base_url, "m")
        .no_api_key()
        .max_retries(0)
        .read_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let (core_error, _) = fail(model);
    let error = own(&core_error);
    assert!(matches!(error, OpenAiError::Timeout { .. }), "{error}");
    assert!(error.to_string().contains(&server.base_url), "{error}");
}

#[test]
fn a_panicking_observer_does_not_hang_the_batch() {
    let stream = || Answer::stream(&[&chunk("A", None), &chunk("B", Some("stop")), "[DONE]"]);
    let server = FakeServer::start((0..4).map(|_| stream()).collect());
    let mut model = OpenAiModel::builder(&server.base_url, "m")
        .no_api_key()
        .max_retries(0)
        .max_concurrency(2)
        .build()
        .unwrap();
    let specs: Vec<TraceSpec> = (0..4).map(|i| TraceSpec::derive(0, i)).collect();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        model.generate_batch(&request(), &specs, &mut |_: &TraceSpec,
                                                       _: &TokenStep|
         -> TokenControl {
            panic!("observer bug")
        })
    }));
    assert!(outcome.is_err(), "the observer's panic reaches the caller");
    let requests = server.requests();
    assert!(requests <= 2, "{requests} traces were started");
}
