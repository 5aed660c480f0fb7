//! The JSON of the OpenAI-compatible API: request bodies and the parts of answers this crate reads.
//!
//! Answers are read as loose JSON (`serde_json::Value`) rather than strict structs because servers
//! differ in the optional fields they send (`id` per token on llama.cpp, `token_id:N` strings on
//! vLLM, `null` where others omit a field).

use deepconf_core::{GenerationRequest, Prompt, StopReason, TokenStep, TraceSpec};
use serde_json::{Map, Value, json};

use crate::config::{Endpoint, OpenAiConfig};

/// The seed sent for a trace: its 64-bit seed folded into 31 bits, because llama.cpp seeds are
/// 32-bit and some servers reject values above `i32::MAX`. Equal trace seeds still give equal seeds.
pub(crate) fn wire_seed(spec: TraceSpec) -> u64 {
    (spec.seed ^ (spec.seed >> 32)) & 0x7fff_ffff
}

/// Which endpoint a request goes to, and so how its answer is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/chat/completions`.
    Chat,
    /// `/completions`.
    Completions,
}

impl Route {
    /// The path relative to the base URL.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Route::Chat => "/chat/completions",
            Route::Completions => "/completions",
        }
    }
}

/// The route and JSON body of one trace. A raw text prompt always goes to the completions
/// endpoint, verbatim; chat messages go where the configuration says.
pub(crate) fn request_body(
    config: &OpenAiConfig,
    request: &GenerationRequest,
    spec: TraceSpec,
) -> (Route, Value) {
    let sampling = &request.sampling;
    let mut body = Map::new();
    body.insert("model".into(), json!(config.model));
    body.insert("max_tokens".into(), json!(sampling.max_tokens));
    body.insert("temperature".into(), json!(sampling.temperature));
    body.insert("top_p".into(), json!(sampling.top_p));
    // 0 disables top-k on vLLM, SGLang and llama.cpp; llama-cpp-python would otherwise apply 40.
    body.insert("top_k".into(), json!(sampling.top_k));
    // llama-cpp-python applies min_p 0.05 unless told otherwise, which would change the sampler.
    body.insert("min_p".into(), json!(0.0));
    body.insert("seed".into(), json!(wire_seed(spec)));
    body.insert("stream".into(), json!(config.stream));
    if config.stream && config.include_usage {
        body.insert("stream_options".into(), json!({ "include_usage": true }));
    }
    if config.token_ids_as_strings {
        body.insert("return_tokens_as_token_ids".into(), json!(true));
    }
    let prompt = match (&request.prompt, &config.endpoint) {
        (Prompt::Text(text), _) => Some(text.clone()),
        (Prompt::Chat(messages), Endpoint::Completions { template }) => {
            Some(template.format(messages))
        }
        (Prompt::Chat(messages), Endpoint::Chat) => {
            let messages: Vec<Value> = messages
                .iter()
                .map(|m| json!({ "role": m.role.as_str(), "content": m.content }))
                .collect();
            body.insert("messages".into(), Value::Array(messages));
            None
        }
    };
    let route = match prompt {
        Some(prompt) => {
            body.insert("prompt".into(), json!(prompt));
            body.insert("logprobs".into(), json!(sampling.top_logprobs));
            Route::Completions
        }
        None => {
            body.insert("logprobs".into(), json!(true));
            body.insert("top_logprobs".into(), json!(sampling.top_logprobs));
            Route::Chat
        }
    };
    for (key, value) in &config.extra_body {
        body.insert(key.clone(), value.clone());
    }
    (route, Value::Object(body))
}

/// One candidate of a token's top-k list as the server sent it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Candidate {
    pub id: Option<u32>,
    pub logprob: f32,
}

/// One generated token as the server sent it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawToken {
    pub text: String,
    pub id: Option<u32>,
    pub logprob: f32,
    pub top: Vec<Candidate>,
}

/// What one streamed chunk (or a whole non-streamed answer) contributes to a trace.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Piece {
    /// Generated text of this piece.
    pub content: String,
    /// Its tokens with logprobs.
    pub tokens: Vec<RawToken>,
    /// Set on the last piece of a choice.
    pub finish_reason: Option<String>,
    /// Prompt tokens, when the piece carries usage.
    pub prompt_tokens: Option<usize>,
}

/// Why a piece could not be read; the caller adds URL and line.
pub(crate) type ParseError = String;

/// `token_id:123` (vLLM's `return_tokens_as_token_ids`) → 123.
fn id_from_token_string(token: &str) -> Option<u32> {
    token.strip_prefix("token_id:")?.parse().ok()
}

fn as_f32(value: &Value, what: &str) -> Result<f32, ParseError> {
    match value {
        Value::Number(n) => n
            .as_f64()
            .map(|v| v as f32)
            .ok_or_else(|| format!("{what} is not a number")),
        // JSON has no -Infinity; some servers send the most negative float, a few send null.
        Value::Null => Ok(f32::NEG_INFINITY),
        other => Err(format!("{what} is {other}, not a number")),
    }
}

fn id_field(value: &Value) -> Option<u32> {
    value
        .get("id")
        .and_then(Value::as_u64)
        .and_then(|v| u32::try_from(v).ok())
}

/// Reads the logprobs of a chat choice: `{"content": [{token, logprob, id?, top_logprobs: [...]}]}`.
fn chat_tokens(logprobs: &Value) -> Result<Vec<RawToken>, ParseError> {
    let Some(entries) = logprobs.get("content") else {
        return Ok(Vec::new());
    };
    let Some(entries) = entries.as_array() else {
        return if entries.is_null() {
            Ok(Vec::new())
        } else {
            Err("logprobs.content is not an array".into())
        };
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let text = entry
                .get("token")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("logprobs.content[{i}].token is missing"))?;
            let logprob = as_f32(
                entry.get("logprob").unwrap_or(&Value::Null),
                &format!("logprobs.content[{i}].logprob"),
            )?;
            let top = match entry.get("top_logprobs") {
                Some(Value::Array(list)) => list
                    .iter()
                    .enumerate()
                    .map(|(j, c)| {
                        let logprob = as_f32(
                            c.get("logprob").unwrap_or(&Value::Null),
                            &format!("logprobs.content[{i}].top_logprobs[{j}].logprob"),
                        )?;
                        let id = id_field(c).or_else(|| {
                            c.get("token")
                                .and_then(Value::as_str)
                                .and_then(id_from_token_string)
                        });
                        Ok(Candidate { id, logprob })
                    })
                    .collect::<Result<Vec<_>, ParseError>>()?,
                None | Some(Value::Null) => Vec::new(),
                Some(_) => return Err(format!("logprobs.content[{i}].top_logprobs is not a list")),
            };
            Ok(RawToken {
                id: id_field(entry).or_else(|| id_from_token_string(text)),
                text: text.to_string(),
                logprob,
                top,
            })
        })
        .collect()
}

/// Reads the logprobs of a completions choice: parallel `tokens`, `token_logprobs` and
/// `top_logprobs` (a list of `{text: logprob}` maps).
fn completion_tokens(logprobs: &Value) -> Result<Vec<RawToken>, ParseError> {
    let list = |name: &str| match logprobs.get(name) {
        Some(Value::Array(items)) => Ok(items.as_slice()),
        None | Some(Value::Null) => Ok(&[][..]),
        Some(_) => Err(format!("logprobs.{name} is not a list")),
    };
    let tokens = list("tokens")?;
    let token_logprobs = list("token_logprobs")?;
    let tops = list("top_logprobs")?;
    if token_logprobs.len() != tokens.len() || (!tops.is_empty() && tops.len() != tokens.len()) {
        return Err(format!(
            "logprobs lists differ in length: {} tokens, {} token_logprobs, {} top_logprobs",
            tokens.len(),
            token_logprobs.len(),
            tops.len()
        ));
    }
    tokens
        .iter()
        .enumerate()
        .map(|(i, token)| {
            let text = token
                .as_str()
                .ok_or_else(|| format!("logprobs.tokens[{i}] is not a string"))?;
            let logprob = as_f32(&token_logprobs[i], &format!("logprobs.token_logprobs[{i}]"))?;
            let top = match tops.get(i) {
                Some(Value::Object(map)) => map
                    .iter()
                    .map(|(key, value)| {
                        Ok(Candidate {
                            id: id_from_token_string(key),
                            logprob: as_f32(
                                value,
                                &format!("logprobs.top_logprobs[{i}][{key:?}]"),
                            )?,
                        })
                    })
                    .collect::<Result<Vec<_>, ParseError>>()?,
                None | Some(Value::Null) => Vec::new(),
                Some(_) => return Err(format!("logprobs.top_logprobs[{i}] is not an object")),
            };
            Ok(RawToken {
                id: id_from_token_string(text),
                text: text.to_string(),
                logprob,
                top,
            })
        })
        .collect()
}

/// Reads one chunk of a stream or a whole answer. Only choice 0 is read: every request asks for one.
pub(crate) fn parse_piece(value: &Value, route: Route) -> Result<Piece, ParseError> {
    if !value.is_object() {
        return Err("not a JSON object".into());
    }
    let mut piece = Piece {
        prompt_tokens: value
            .get("usage")
            .and_then(|u| u.get("prompt_tokens"))
            .and_then(Value::as_u64)
            .map(|n| n as usize),
        ..Piece::default()
    };
    let choices = match value.get("choices") {
        Some(Value::Array(choices)) => choices.as_slice(),
        // vLLM's usage chunk has `choices: []`; some servers omit the field there.
        None if piece.prompt_tokens.is_some() => &[],
        _ => return Err("`choices` is missing or not a list".into()),
    };
    let Some(choice) = choices
        .iter()
        .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
    else {
        return Ok(piece);
    };
    piece.finish_reason = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .map(str::to_string);
    let logprobs = choice.get("logprobs").unwrap_or(&Value::Null);
    match route {
        Route::Chat => {
            let message = choice.get("delta").or_else(|| choice.get("message"));
            piece.content = message
                .and_then(|m| m.get("content"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            piece.tokens = chat_tokens(logprobs)?;
        }
        Route::Completions => {
            piece.content = choice
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            piece.tokens = completion_tokens(logprobs)?;
        }
    }
    Ok(piece)
}

/// How a server's `finish_reason` maps to a [`StopReason`]; `Err` carries a reason that means the
/// generation failed.
pub(crate) fn stop_reason(finish_reason: &str) -> Result<StopReason, ()> {
    match finish_reason {
        "length" => Ok(StopReason::MaxTokens),
        "abort" | "error" => Err(()),
        // "stop" (end-of-sequence or stop string) and tool/content-filter ends alike.
        _ => Ok(StopReason::EndOfSequence),
    }
}

/// Turns a raw token into a [`TokenStep`] with at most `k` candidates, most likely first.
///
/// Servers may append the sampled token to the top-k list when it is not among the k most likely
/// (vLLM), so the list is sorted and cut to `k` here rather than trusted.
pub(crate) fn token_step(raw: RawToken, text: String, k: usize) -> TokenStep {
    let mut top = raw.top;
    top.sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
    top.truncate(k);
    let top_token_ids = if top.iter().all(|c| c.id.is_some()) {
        top.iter().filter_map(|c| c.id).collect()
    } else {
        Vec::new()
    };
    TokenStep {
        token_id: raw.id,
        text,
        logprob: raw.logprob,
        top_logprobs: top.iter().map(|c| c.logprob).collect(),
        top_token_ids,
    }
}

/// The server's message in an error body: `error.message`, `error` (a string), `detail` or
/// `message`; else the body itself.
pub(crate) fn error_message(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return body.trim().to_string();
    };
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    };
    value
        .get("error")
        .and_then(|e| e.get("message").and_then(text).or_else(|| text(e)))
        .or_else(|| value.get("detail").and_then(text))
        .or_else(|| value.get("message").and_then(text))
        .unwrap_or_else(|| body.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PromptTemplate;

    #[test]
    fn chat_chunk_with_ids_and_inserted_sampled_token() {
        let chunk: Value = serde_json::from_str(
            r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null,
            "logprobs":{"content":[{"token":"token_id:5","logprob":-3.0,"top_logprobs":[
              {"token":"token_id:9","logprob":-0.5},{"token":"token_id:7","logprob":-1.0},
              {"token":"token_id:5","logprob":-3.0}]}]}}]}"#,
        )
        .unwrap();
        let piece = parse_piece(&chunk, Route::Chat).unwrap();
        assert_eq!(piece.content, "Hi");
        assert_eq!(piece.tokens.len(), 1);
        let step = token_step(piece.tokens[0].clone(), "Hi".into(), 2);
        assert_eq!(step.token_id, Some(5));
        assert_eq!(step.top_logprobs, vec![-0.5, -1.0]);
        assert_eq!(step.top_token_ids, vec![9, 7]);
    }

    #[test]
    fn candidates_are_sorted_before_cutting_to_k() {
        let raw = RawToken {
            text: "a".into(),
            id: None,
            logprob: -2.0,
            top: vec![
                Candidate {
                    id: None,
                    logprob: -2.0,
                },
                Candidate {
                    id: None,
                    logprob: -0.1,
                },
                Candidate {
                    id: None,
                    logprob: -1.0,
                },
            ],
        };
        let step = token_step(raw, "a".into(), 2);
        assert_eq!(step.top_logprobs, vec![-0.1, -1.0]);
        assert!(step.top_token_ids.is_empty());
    }

    #[test]
    fn completions_answer_reads_parallel_lists() {
        let body: Value = serde_json::from_str(
            r#"{"choices":[{"text":" is Alex","index":0,"logprobs":{"text_offset":[14,17],
            "token_logprobs":[-0.01,-1.9],"tokens":[" is"," Alex"],
            "top_logprobs":[{" is":-0.01,"'s":-5.2},{" Alex":-1.9," El":-2.3}]},
            "finish_reason":"length"}],"usage":{"prompt_tokens":4}}"#,
        )
        .unwrap();
        let piece = parse_piece(&body, Route::Completions).unwrap();
        assert_eq!(piece.content, " is Alex");
        assert_eq!(piece.finish_reason.as_deref(), Some("length"));
        assert_eq!(piece.prompt_tokens, Some(4));
        assert_eq!(piece.tokens[1].text, " Alex");
        assert_eq!(piece.tokens[1].top.len(), 2);
    }

    #[test]
    fn mismatched_completion_lists_are_rejected() {
        let body: Value = serde_json::from_str(
            r#"{"choices":[{"text":"x","logprobs":{"tokens":["x","y"],"token_logprobs":[-1.0]}}]}"#,
        )
        .unwrap();
        let err = parse_piece(&body, Route::Completions).unwrap_err();
        assert!(err.contains("differ in length"), "{err}");
    }

    #[test]
    fn pieces_without_choices_are_rejected_unless_they_carry_usage() {
        let err = parse_piece(&json!({"id": "x"}), Route::Chat).unwrap_err();
        assert!(err.contains("choices"), "{err}");
        let usage = parse_piece(&json!({"usage": {"prompt_tokens": 12}}), Route::Chat).unwrap();
        assert_eq!(usage.prompt_tokens, Some(12));
        assert!(parse_piece(&json!([1, 2]), Route::Chat).is_err());
    }

    #[test]
    fn server_messages_are_found_in_common_shapes() {
        assert_eq!(
            error_message(r#"{"error":{"message":"too long","type":"x"}}"#),
            "too long"
        );
        assert_eq!(error_message(r#"{"detail":"Not Found"}"#), "Not Found");
        assert_eq!(error_message(r#"{"error":"bad key"}"#), "bad key");
        assert_eq!(error_message("plain text\n"), "plain text");
    }

    #[test]
    fn seeds_fold_into_31_bits_deterministically() {
        let spec = TraceSpec::derive(3, 4);
        assert_eq!(wire_seed(spec), wire_seed(spec));
        assert!(wire_seed(spec) <= i32::MAX as u64);
        assert_ne!(wire_seed(spec), wire_seed(TraceSpec::derive(3, 5)));
    }

    #[test]
    fn finish_reasons_map_to_stop_reasons() {
        assert_eq!(stop_reason("length"), Ok(StopReason::MaxTokens));
        assert_eq!(stop_reason("stop"), Ok(StopReason::EndOfSequence));
        assert!(stop_reason("abort").is_err());
    }

    #[test]
    fn request_bodies_carry_logprob_settings_per_endpoint() {
        let config = crate::OpenAiModel::builder("http://h:1", "m")
            .no_api_key()
            .extra_body_field("repetition_penalty", json!(1.0))
            .build()
            .unwrap()
            .config()
            .clone();
        let request = GenerationRequest::user(
            "Hi",
            deepconf_core::SamplingParams::greedy().with_top_logprobs(5),
        );
        let spec = TraceSpec::derive(1, 0);
        let (route, body) = request_body(&config, &request, spec);
        assert_eq!(route.path(), "/chat/completions");
        assert_eq!(body["logprobs"], json!(true));
        assert_eq!(body["top_logprobs"], json!(5));
        assert_eq!(body["messages"][0]["role"], json!("user"));
        assert_eq!(body["seed"], json!(wire_seed(spec)));
        assert_eq!(body["repetition_penalty"], json!(1.0));
        let mut completions = config.clone();
        completions.endpoint = Endpoint::Completions {
            template: PromptTemplate::chatml(),
        };
        let (route, body) = request_body(&completions, &request, spec);
        assert_eq!(route.path(), "/completions");
        assert_eq!(body["logprobs"], json!(5));
        assert!(
            body["prompt"]
                .as_str()
                .unwrap()
                .ends_with("<|im_start|>assistant\n")
        );
        // Raw text reaches the completions endpoint verbatim, whatever the configured endpoint.
        let raw = GenerationRequest::text("<|user|>\nHi<|assistant|>\n", request.sampling.clone());
        let (route, body) = request_body(&config, &raw, spec);
        assert_eq!(route, Route::Completions);
        assert_eq!(body["prompt"], json!("<|user|>\nHi<|assistant|>\n"));
        assert!(body.get("messages").is_none());
    }
}
