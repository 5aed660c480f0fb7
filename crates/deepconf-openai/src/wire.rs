//! The JSON of the OpenAI-compatible API: request bodies and the parts of answers this crate reads.
//!
//! Answers are read as loose JSON (`serde_json::Value`) rather than strict structs because servers
//! differ in the optional fields they send (`id` per token on llama.cpp, `token_id:N` strings on
//! vLLM, `null` where others omit a field).

use deepconf_core::{GenerationRequest, Prompt, StopReason, TokenStep, TraceSpec};
use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;
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
    /// The candidate's text, when the server sent one (not a `token_id:N` string).
    pub text: Option<String>,
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
                        let token = c.get("token").and_then(Value::as_str);
                        let id = id_field(c).or_else(|| token.and_then(id_from_token_string));
                        let text = token
                            .filter(|t| id_from_token_string(t).is_none())
                            .map(str::to_string);
                        Ok(Candidate { id, text, logprob })
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
/// `top_logprobs` (a list of `{text: logprob}` maps), or the chat shape `content: [...]` that
/// llama.cpp's `llama-server` sends on its completions endpoint too.
fn completion_tokens(logprobs: &Value) -> Result<Vec<RawToken>, ParseError> {
    if logprobs.get("content").is_some_and(Value::is_array) {
        return chat_tokens(logprobs);
    }
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
                        let id = id_from_token_string(key);
                        Ok(Candidate {
                            id,
                            text: id.is_none().then(|| key.clone()),
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

/// The pieces of a chunk or answer by choice index, and its prompt tokens when it carries usage.
pub(crate) type Choices = (Vec<(usize, Piece)>, Option<usize>);

/// The fields of a chunk or answer that the fast reader takes, borrowed from the JSON text where
/// it has no escapes. Unknown fields (vLLM's `bytes` lists, llama.cpp's `timings`) are skipped
/// without being built.
#[derive(Deserialize)]
struct ChunkWire<'a> {
    #[serde(borrow)]
    choices: Option<Vec<ChoiceWire<'a>>>,
    usage: Option<UsageWire>,
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct UsageWire {
    prompt_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ChoiceWire<'a> {
    index: Option<u64>,
    #[serde(borrow)]
    delta: Option<MessageWire<'a>>,
    #[serde(borrow)]
    message: Option<MessageWire<'a>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    logprobs: Option<LogprobsWire<'a>>,
}

#[derive(Deserialize)]
struct MessageWire<'a> {
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct LogprobsWire<'a> {
    #[serde(borrow)]
    content: Option<Vec<EntryWire<'a>>>,
    /// Present in the completions shape, which the fast reader leaves to [`parse_piece`].
    tokens: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct EntryWire<'a> {
    #[serde(borrow)]
    token: Cow<'a, str>,
    logprob: Option<f64>,
    id: Option<u64>,
    #[serde(borrow)]
    top_logprobs: Option<Vec<CandidateWire<'a>>>,
}

#[derive(Deserialize)]
struct CandidateWire<'a> {
    #[serde(borrow)]
    token: Option<Cow<'a, str>>,
    logprob: Option<f64>,
    id: Option<u64>,
}

fn wire_logprob(value: Option<f64>) -> f32 {
    value.map_or(f32::NEG_INFINITY, |v| v as f32)
}

fn wire_id(id: Option<u64>, token: Option<&str>) -> Option<u32> {
    id.and_then(|v| u32::try_from(v).ok())
        .or_else(|| token.and_then(id_from_token_string))
}

impl EntryWire<'_> {
    fn into_raw(self, candidate_texts: bool) -> RawToken {
        let top = self
            .top_logprobs
            .unwrap_or_default()
            .into_iter()
            .map(|c| Candidate {
                id: wire_id(c.id, c.token.as_deref()),
                text: c
                    .token
                    .filter(|t| candidate_texts && id_from_token_string(t).is_none())
                    .map(Cow::into_owned),
                logprob: wire_logprob(c.logprob),
            })
            .collect();
        RawToken {
            id: wire_id(self.id, Some(&self.token)),
            logprob: wire_logprob(self.logprob),
            text: self.token.into_owned(),
            top,
        }
    }
}

impl ChoiceWire<'_> {
    fn into_piece(self, route: Route, candidate_texts: bool) -> Option<Piece> {
        let content = match route {
            Route::Chat => self.delta.or(self.message).and_then(|m| m.content),
            Route::Completions => self.text,
        };
        let tokens = match self.logprobs {
            None => Vec::new(),
            Some(LogprobsWire {
                tokens: Some(_), ..
            }) => return None,
            Some(LogprobsWire { content, .. }) => content
                .unwrap_or_default()
                .into_iter()
                .map(|entry| entry.into_raw(candidate_texts))
                .collect(),
        };
        Some(Piece {
            content: content.map(Cow::into_owned).unwrap_or_default(),
            tokens,
            finish_reason: self.finish_reason.map(Cow::into_owned),
            prompt_tokens: None,
        })
    }
}

/// Reads the pieces of every choice of one chunk or answer, by choice index, without building a
/// JSON tree. `None` when the text is not the common shape (an error object, the completions
/// lists, a field of an unexpected type): [`parse_piece`] then reads it and names what is wrong.
/// Candidate texts are kept only with `candidate_texts`.
pub(crate) fn parse_choices_fast(
    text: &str,
    route: Route,
    candidate_texts: bool,
) -> Option<Choices> {
    let chunk: ChunkWire<'_> = serde_json::from_str(text).ok()?;
    if chunk.error.is_some() {
        return None;
    }
    let prompt_tokens = chunk
        .usage
        .and_then(|u| u.prompt_tokens)
        .map(|n| n as usize);
    let choices = match chunk.choices {
        Some(choices) => choices,
        None if prompt_tokens.is_some() => Vec::new(),
        None => return None,
    };
    let mut pieces = Vec::with_capacity(choices.len());
    for choice in choices {
        let index = choice.index.unwrap_or(0) as usize;
        pieces.push((index, choice.into_piece(route, candidate_texts)?));
    }
    Some((pieces, prompt_tokens))
}

/// The pieces of every choice of a parsed chunk or answer, by choice index (the slow reader, which
/// names what is wrong).
pub(crate) fn parse_choices(
    value: &Value,
    route: Route,
) -> Result<Vec<(usize, Piece)>, ParseError> {
    let Some(Value::Array(choices)) = value.get("choices") else {
        return parse_piece(value, route).map(|piece| vec![(0, piece)]);
    };
    let mut pieces = Vec::with_capacity(choices.len());
    for choice in choices {
        let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
        // `parse_piece` reads choice 0: this one is given index 0 for it.
        let mut alone = choice.clone();
        if let Some(fields) = alone.as_object_mut() {
            fields.insert("index".into(), json!(0));
        }
        let single = json!({ "choices": [alone] });
        let mut piece = parse_piece(&single, route)?;
        piece.prompt_tokens = piece.prompt_tokens.or_else(|| {
            value
                .get("usage")
                .and_then(|u| u.get("prompt_tokens"))
                .and_then(Value::as_u64)
                .map(|n| n as usize)
        });
        pieces.push((index as usize, piece));
    }
    Ok(pieces)
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
/// (vLLM), so the list is sorted and cut to `k` here rather than trusted. With `candidate_texts`
/// the candidates' texts are kept too (when every candidate has one).
pub(crate) fn token_step(
    raw: RawToken,
    text: String,
    k: usize,
    candidate_texts: bool,
) -> TokenStep {
    let mut top = raw.top;
    top.sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
    top.truncate(k);
    let top_token_ids = if top.iter().all(|c| c.id.is_some()) {
        top.iter().filter_map(|c| c.id).collect()
    } else {
        Vec::new()
    };
    let top_tokens = if candidate_texts && top.iter().all(|c| c.text.is_some()) {
        top.iter().filter_map(|c| c.text.clone()).collect()
    } else {
        Vec::new()
    };
    TokenStep {
        token_id: raw.id,
        text,
        logprob: raw.logprob,
        top_logprobs: top.iter().map(|c| c.logprob).collect(),
        top_token_ids,
        top_tokens,
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
    use crate::config::{OpenAiBuilder, PromptTemplate};

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
        let step = token_step(piece.tokens[0].clone(), "Hi".into(), 2, true);
        assert_eq!(step.token_id, Some(5));
        assert_eq!(step.top_logprobs, vec![-0.5, -1.0]);
        assert_eq!(step.top_token_ids, vec![9, 7]);
        // `token_id:N` strings are ids, not texts.
        assert!(step.top_tokens.is_empty());
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
                    text: Some("a".into()),
                    logprob: -2.0,
                },
                Candidate {
                    id: None,
                    text: Some("b".into()),
                    logprob: -0.1,
                },
                Candidate {
                    id: None,
                    text: Some("c".into()),
                    logprob: -1.0,
                },
            ],
        };
        let step = token_step(raw.clone(), "a".into(), 2, false);
        assert_eq!(step.top_logprobs, vec![-0.1, -1.0]);
        assert!(step.top_token_ids.is_empty());
        assert!(step.top_tokens.is_empty(), "texts only when asked for");
        let step = token_step(raw, "a".into(), 2, true);
        assert_eq!(
            step.top_tokens,
            vec!["b", "c"],
            "texts stay with their logprobs"
        );
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
    fn llama_server_completions_answer_in_the_chat_shape() {
        // llama.cpp's llama-server answers /v1/completions with `logprobs.content`, ids and texts.
        let body: Value = serde_json::from_str(
            r#"{"choices":[{"text":"No","index":0,"logprobs":{"content":[{"id":1770,"token":"No",
            "bytes":[78,111],"logprob":-0.4,"top_logprobs":[{"id":1770,"token":"No","bytes":[78,111],
            "logprob":-0.4},{"id":6186,"token":"Yes","bytes":[89,101,115],"logprob":-1.2}]}]},
            "finish_reason":"length"}]}"#,
        )
        .unwrap();
        let piece = parse_piece(&body, Route::Completions).unwrap();
        assert_eq!(piece.tokens.len(), 1);
        let step = token_step(piece.tokens[0].clone(), "No".into(), 2, true);
        assert_eq!(step.token_id, Some(1770));
        assert_eq!(step.top_token_ids, vec![1770, 6186]);
        assert_eq!(step.top_tokens, vec!["No", "Yes"]);
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
    fn the_fast_reader_agrees_with_the_tree_reader() {
        let chunks = [
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null,
            "logprobs":{"content":[{"token":"Hi","logprob":-0.25,"bytes":[72,105],"top_logprobs":[
              {"token":"Hi","logprob":-0.25,"bytes":[72,105]},{"token":"Hey","logprob":-1.5,"bytes":[72]}]}]}}]}"#,
            r#"{"choices":[{"finish_reason":"length","index":0,"delta":{"content":"\n"},
            "logprobs":{"content":[{"id":3,"token":"\n","bytes":[10],"logprob":-0.5,"top_logprobs":[
              {"id":3,"token":"\n","bytes":[10],"logprob":-0.5},{"id":9,"token":"x","logprob":null}]}]}}]}"#,
            r#"{"id":"c","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":2}}"#,
        ];
        for chunk in chunks {
            let value: Value = serde_json::from_str(chunk).unwrap();
            let slow = parse_piece(&value, Route::Chat).unwrap();
            let (pieces, prompt_tokens) = parse_choices_fast(chunk, Route::Chat, true).unwrap();
            assert_eq!(prompt_tokens, slow.prompt_tokens);
            let fast = pieces
                .into_iter()
                .next()
                .map(|(_, p)| p)
                .unwrap_or_default();
            assert_eq!(fast.tokens, slow.tokens, "{chunk}");
            assert_eq!(fast.content, slow.content);
            assert_eq!(fast.finish_reason, slow.finish_reason);
        }
        // Shapes it does not take go to the tree reader, which names the fault.
        assert!(parse_choices_fast(r#"{"error":{"message":"x"}}"#, Route::Chat, false).is_none());
        assert!(
            parse_choices_fast(
                r#"{"choices":[{"logprobs":{"content":5}}]}"#,
                Route::Chat,
                false
            )
            .is_none()
        );
        let completions = r#"{"choices":[{"index":0,"text":" a","logprobs":{"tokens":[" a"],"token_logprobs":[-0.1],"top_logprobs":[{" a":-0.1}]}}]}"#;
        assert!(parse_choices_fast(completions, Route::Completions, false).is_none());
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
        let config = OpenAiBuilder::new("http://h:1", "m")
            .no_api_key()
            .extra_body_field("repetition_penalty", json!(1.0))
            .into_config()
            .unwrap();
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
