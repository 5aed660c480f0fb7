//! One trace per request: the request, the server-sent events or the whole answer read into a
//! [`Trace`], token by token through the sink.

use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use deepconf_core::{GenerationRequest, StopReason, TokenControl, TokenStep, Trace, TraceSpec};
use serde_json::Value;

use super::http::MAX_QUOTED;
use super::replicas::prompt_affinity;
use super::{OpenAiModel, TraceSink};
use crate::error::excerpt;
use crate::wire::{self, Piece, Route};
use crate::{OpenAiError, Result};

impl OpenAiModel {
    /// Generates one trace with wire seed `seed`. A failure after some tokens reached `sink` voids
    /// them (`sink.restart()`) and the trace starts again from its first token, so a trace never
    /// mixes tokens of two attempts.
    pub(super) fn run_trace(
        &self,
        request: &GenerationRequest,
        spec: TraceSpec,
        seed: u64,
        sink: &mut dyn TraceSink,
        cancel: &AtomicBool,
    ) -> Result<(Trace, Vec<usize>)> {
        let (route, mut body) = wire::request_body(&self.config, request, spec);
        body["seed"] = seed.into();
        let body = body.to_string();
        let mut delivered = 0usize;
        self.with_retries(prompt_affinity(request), cancel, |_, base_url| {
            if delivered > 0 {
                sink.restart();
                delivered = 0;
            }
            let url = format!("{base_url}{}", route.path());
            let mut counting = |step: &TokenStep| {
                delivered += 1;
                sink.token(step)
            };
            self.attempt_trace(&url, route, &body, request, spec, &mut counting)
        })
    }

    pub(super) fn assembler(&self, request: &GenerationRequest, spec: TraceSpec) -> TraceAssembler {
        let mut assembler = TraceAssembler::new(
            spec,
            request.sampling.top_logprobs,
            self.config.strict_top_logprobs,
        );
        assembler.candidate_texts = self.config.candidate_texts;
        assembler
    }

    /// One HTTP request for one trace. On failure also returns the server's `Retry-After`.
    pub(super) fn attempt_trace(
        &self,
        url: &str,
        route: Route,
        body: &str,
        request: &GenerationRequest,
        spec: TraceSpec,
        sink: &mut dyn FnMut(&TokenStep) -> TokenControl,
    ) -> std::result::Result<(Trace, Vec<usize>), (OpenAiError, Option<Duration>)> {
        let response = self.send(url, body, self.config.stream)?;
        let mut assembler = self.assembler(request, spec);
        let reader = response.into_reader();
        let result = if self.config.stream {
            self.read_stream(url, route, reader, &mut assembler, sink)
        } else {
            self.read_whole(url, route, reader)
                .and_then(|(mut pieces, prompt_tokens)| {
                    assembler.prompt_tokens = prompt_tokens;
                    match pieces.iter().position(|(index, _)| *index == 0) {
                        Some(at) => assembler
                            .push(url, pieces.swap_remove(at).1, sink)
                            .map(|_| ()),
                        None => Ok(()),
                    }
                })
        };
        result.map_err(|e| (e, None))?;
        assembler.finish_with_cuts(url).map_err(|e| (e, None))
    }

    /// Reads server-sent events until `[DONE]`, the end of the body, or a stop from `sink` (which
    /// returns early and so drops the reader and the connection).
    pub(super) fn read_stream(
        &self,
        url: &str,
        route: Route,
        reader: Box<dyn Read + Send + Sync + 'static>,
        assembler: &mut TraceAssembler,
        sink: &mut dyn FnMut(&TokenStep) -> TokenControl,
    ) -> Result<()> {
        let mut lines = BufReader::with_capacity(32 * 1024, reader);
        let mut line = String::new();
        let mut data = String::new();
        loop {
            line.clear();
            let read = lines
                .read_line(&mut line)
                .map_err(|e| self.io_error(url, &e))?;
            let trimmed = line.trim_end_matches(['\n', '\r']);
            if read == 0 || trimmed.is_empty() {
                // A blank line ends an event; the end of the body ends the last one.
                if !data.is_empty() {
                    let control =
                        self.stream_event(url, route, &data, read == 0, assembler, sink)?;
                    data.clear();
                    if control == TokenControl::Stop {
                        return Ok(());
                    }
                }
                if read == 0 {
                    return Ok(());
                }
                continue;
            }
            if let Some(value) = trimmed.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
            } else if trimmed.starts_with(':')
                || trimmed.starts_with("event:")
                || trimmed.starts_with("id:")
                || trimmed.starts_with("retry:")
            {
                // Comments (keep-alive pings) and event metadata carry no tokens.
            } else {
                return Err(OpenAiError::MalformedEvent {
                    url: url.to_string(),
                    line: excerpt(trimmed, MAX_QUOTED),
                    reason: "not a server-sent event field (expected `data:`)".into(),
                });
            }
        }
    }

    /// One event's payload: its tokens go to `sink`. `Stop` ends the stream: `[DONE]`, or the
    /// sink's stop.
    pub(super) fn stream_event(
        &self,
        url: &str,
        route: Route,
        payload: &str,
        at_end: bool,
        assembler: &mut TraceAssembler,
        sink: &mut dyn FnMut(&TokenStep) -> TokenControl,
    ) -> Result<TokenControl> {
        if payload.trim() == "[DONE]" {
            return Ok(TokenControl::Stop);
        }
        // The common shape is read without a JSON tree; anything else goes the slow way below,
        // which names what is wrong.
        if let Some((pieces, prompt_tokens)) =
            wire::parse_choices_fast(payload, route, self.config.candidate_texts)
        {
            if prompt_tokens.is_some() {
                assembler.prompt_tokens = prompt_tokens;
            }
            for (index, piece) in pieces {
                if index == 0 && assembler.push(url, piece, sink)? == TokenControl::Stop {
                    return Ok(TokenControl::Stop);
                }
            }
            return Ok(TokenControl::Continue);
        }
        let value: Value = match serde_json::from_str(payload) {
            Ok(value) => value,
            // The body ended inside an event: the connection was cut mid-stream.
            // The trace then lacks its finish reason, which is retried.
            Err(e) if at_end && e.is_eof() => return Ok(TokenControl::Stop),
            Err(e) => {
                return Err(OpenAiError::MalformedEvent {
                    url: url.to_string(),
                    line: excerpt(payload, MAX_QUOTED),
                    reason: format!("not JSON: {e}"),
                });
            }
        };
        if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
            return Err(OpenAiError::StreamError {
                url: url.to_string(),
                message: wire::error_message(&serde_json::json!({ "error": error }).to_string()),
            });
        }
        let piece =
            wire::parse_piece(&value, route).map_err(|reason| OpenAiError::MalformedEvent {
                url: url.to_string(),
                line: excerpt(payload, MAX_QUOTED),
                reason,
            })?;
        assembler.push(url, piece, sink)
    }

    /// Reads a whole (non-streamed) answer: the pieces of its choices by index, and its prompt
    /// tokens.
    pub(super) fn read_whole(
        &self,
        url: &str,
        route: Route,
        mut reader: Box<dyn Read + Send + Sync + 'static>,
    ) -> Result<wire::Choices> {
        let mut body = String::new();
        reader
            .read_to_string(&mut body)
            .map_err(|e| self.io_error(url, &e))?;
        if let Some(read) = wire::parse_choices_fast(&body, route, self.config.candidate_texts) {
            return Ok(read);
        }
        let malformed = |reason: String| OpenAiError::MalformedResponse {
            url: url.to_string(),
            body: excerpt(&body, MAX_QUOTED),
            reason,
        };
        let value: Value =
            serde_json::from_str(&body).map_err(|e| malformed(format!("not JSON: {e}")))?;
        let pieces = wire::parse_choices(&value, route).map_err(malformed)?;
        let prompt_tokens = pieces.iter().find_map(|(_, p)| p.prompt_tokens);
        Ok((pieces, prompt_tokens))
    }
}

/// Builds a [`Trace`] from pieces, calling the sink for every token and stopping when it says so.
pub(super) struct TraceAssembler {
    pub(super) spec: TraceSpec,
    pub(super) top_k: usize,
    pub(super) strict: bool,
    /// Keep the candidates' texts in each step (for judges).
    pub(super) candidate_texts: bool,
    pub(super) text: String,
    pub(super) steps: Vec<TokenStep>,
    /// Per token, the length of the text if the trace were cut after it.
    pub(super) cuts: Vec<usize>,
    pub(super) finish_reason: Option<String>,
    pub(super) prompt_tokens: Option<usize>,
    pub(super) terminated: bool,
}

impl TraceAssembler {
    pub(super) fn new(spec: TraceSpec, top_k: usize, strict: bool) -> Self {
        Self {
            spec,
            top_k,
            strict,
            candidate_texts: false,
            text: String::new(),
            steps: Vec::new(),
            cuts: Vec::new(),
            finish_reason: None,
            prompt_tokens: None,
            terminated: false,
        }
    }

    pub(super) fn push(
        &mut self,
        url: &str,
        piece: Piece,
        sink: &mut dyn FnMut(&TokenStep) -> TokenControl,
    ) -> Result<TokenControl> {
        if piece.prompt_tokens.is_some() {
            self.prompt_tokens = piece.prompt_tokens;
        }
        if piece.finish_reason.is_some() {
            self.finish_reason = piece.finish_reason;
        }
        if piece.tokens.is_empty() {
            if !piece.content.is_empty() {
                return Err(OpenAiError::MissingLogprobs {
                    url: url.to_string(),
                    token_index: self.steps.len(),
                });
            }
            return Ok(TokenControl::Continue);
        }
        // Token strings of the form `token_id:N` carry no text: the piece's text goes to its last token.
        let ids_only = piece
            .tokens
            .iter()
            .all(|t| t.text.starts_with("token_id:") && t.id.is_some());
        let count = piece.tokens.len();
        let first = self.steps.len();
        let mut kept_len = 0usize;
        for (i, mut raw) in piece.tokens.into_iter().enumerate() {
            let token_index = self.steps.len();
            if raw.top.is_empty() {
                return Err(OpenAiError::MissingLogprobs {
                    url: url.to_string(),
                    token_index,
                });
            }
            if self.strict && raw.top.len() < self.top_k {
                return Err(OpenAiError::TooFewLogprobs {
                    url: url.to_string(),
                    token_index,
                    got: raw.top.len(),
                    wanted: self.top_k,
                });
            }
            let text = if ids_only {
                if i + 1 == count {
                    piece.content.clone()
                } else {
                    String::new()
                }
            } else {
                std::mem::take(&mut raw.text)
            };
            kept_len += text.len();
            let step = wire::token_step(raw, text, self.top_k, self.candidate_texts);
            let control = sink(&step);
            self.steps.push(step);
            self.cuts.push(self.text.len() + kept_len);
            if control == TokenControl::Stop {
                // Cut inside a piece: its tokens' own texts, up to this one.
                for step in &self.steps[first..] {
                    self.text.push_str(&step.text);
                }
                self.terminated = true;
                return Ok(TokenControl::Stop);
            }
        }
        self.text.push_str(&piece.content);
        Ok(TokenControl::Continue)
    }

    /// The trace, and per token the length of its text if cut after that token.
    pub(super) fn finish_with_cuts(mut self, url: &str) -> Result<(Trace, Vec<usize>)> {
        let cuts = std::mem::take(&mut self.cuts);
        Ok((self.finish(url)?, cuts))
    }

    pub(super) fn finish(self, url: &str) -> Result<Trace> {
        let stop_reason = if self.terminated {
            StopReason::Terminated
        } else {
            match self.finish_reason.as_deref() {
                None => {
                    return Err(OpenAiError::IncompleteStream {
                        url: url.to_string(),
                        tokens: self.steps.len(),
                    });
                }
                Some(reason) => wire::stop_reason(reason).map_err(|()| OpenAiError::Aborted {
                    url: url.to_string(),
                    finish_reason: reason.to_string(),
                })?,
            }
        };
        Ok(Trace {
            spec: self.spec,
            text: self.text,
            steps: self.steps,
            stop_reason,
            prompt_tokens: self.prompt_tokens.unwrap_or(0),
        })
    }
}
