//! The answers in each dialect's event shapes: token steps precomputed as JSON fragments once per
//! top-k size, and the writer that assembles whole answers and streamed events from them.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Dialect;
use super::request::Ask;
use crate::mix;

/// Number of distinct precomputed token steps the traces draw from.
pub(super) const POOL: usize = 2048;
/// Distinct token ids.
const VOCABULARY: u64 = 49_152;
/// Most candidates per token the server sends.
pub(super) const MAX_TOP: usize = 20;

/// One precomputed token step: its text and its logprobs entry in each shape.
#[derive(Debug)]
pub(super) struct StepFragment {
    /// JSON string literal of the token's text, quotes included.
    text_json: String,
    text: String,
    /// The chat shape's entry `{"token":..,"logprob":..,"top_logprobs":[..]}`.
    chat_entry: String,
    /// Completions (vLLM): the sampled token's logprob and the `{text: logprob}` map.
    logprob: String,
    top_map: String,
}

/// The fragments for one top-k size and dialect.
pub(super) type Pool = Arc<Vec<StepFragment>>;

/// A JSON float as Python prints a 32-bit value widened to 64 bits, as vLLM sends it.
fn float_json(value: f32) -> String {
    format!("{:?}", f64::from(value))
}

fn token_text(id: u64) -> String {
    const PIECES: [&str; 16] = [
        " the", " a", "ing", " to", " and", "ed", " of", ".", ",", " is", " I", " can", "'t",
        " help", "\n", " with",
    ];
    let piece = PIECES[(id % 16) as usize];
    if id.is_multiple_of(3) {
        piece.to_string()
    } else {
        format!("{piece}{}", id % 1000)
    }
}

fn bytes_json(text: &str) -> String {
    let list: Vec<String> = text.bytes().map(|b| b.to_string()).collect();
    format!("[{}]", list.join(","))
}

pub(super) fn build_pool(dialect: Dialect, top: usize) -> Vec<StepFragment> {
    (0..POOL as u64)
        .map(|p| {
            let r = mix(p ^ 0x0D1A_1EC7);
            // Candidate ids distinct, the sampled token first; log-probabilities falling.
            let ids: Vec<u64> = (0..top.max(1) as u64)
                .map(|j| (r.wrapping_add(j.wrapping_mul(7919))) % VOCABULARY)
                .collect();
            let peak = -0.02 - (r % 1000) as f32 / 400.0;
            let gap = 0.3 + ((r >> 12) % 1000) as f32 / 500.0;
            let logprobs: Vec<f32> = (0..ids.len())
                .map(|j| peak - gap * j as f32 - 0.05 * (j * j) as f32)
                .collect();
            let text = token_text(ids[0]);
            let text_json = serde_json::to_string(&text).unwrap_or_default();
            let entry = |id: u64, lp: f32| {
                let t = token_text(id);
                let tj = serde_json::to_string(&t).unwrap_or_default();
                match dialect {
                    Dialect::Vllm => format!(
                        r#"{{"token":{tj},"logprob":{},"bytes":{}}}"#,
                        float_json(lp),
                        bytes_json(&t)
                    ),
                    Dialect::LlamaServer => format!(
                        r#"{{"id":{id},"token":{tj},"bytes":{},"logprob":{}}}"#,
                        bytes_json(&t),
                        float_json(lp)
                    ),
                }
            };
            let tops: Vec<String> = ids
                .iter()
                .zip(&logprobs)
                .take(top)
                .map(|(&id, &lp)| entry(id, lp))
                .collect();
            let head = entry(ids[0], logprobs[0]);
            let chat_entry = format!(
                r#"{},"top_logprobs":[{}]}}"#,
                &head[..head.len() - 1],
                tops.join(",")
            );
            // Candidates that decode alike collapse in the `{text: logprob}` map, as on vLLM.
            let mut seen = std::collections::HashSet::new();
            let top_map: Vec<String> = ids
                .iter()
                .zip(&logprobs)
                .take(top)
                .filter(|(id, _)| seen.insert(token_text(**id)))
                .map(|(&id, &lp)| {
                    format!(
                        "{}:{}",
                        serde_json::to_string(&token_text(id)).unwrap_or_default(),
                        float_json(lp)
                    )
                })
                .collect();
            StepFragment {
                text_json,
                text,
                chat_entry,
                logprob: float_json(logprobs[0]),
                top_map: format!("{{{}}}", top_map.join(",")),
            }
        })
        .collect()
}

/// Writes answers in one dialect.
pub(super) struct Writer<'a> {
    pub(super) dialect: Dialect,
    pub(super) chat: bool,
    pub(super) top: usize,
    pub(super) pool: &'a [StepFragment],
}

const CREATED: u64 = 1_767_225_600;

impl Writer<'_> {
    fn object(&self, stream: bool) -> &'static str {
        match (self.chat, stream) {
            (true, true) => "chat.completion.chunk",
            (true, false) => "chat.completion",
            (false, _) => "text_completion",
        }
    }

    fn id(&self) -> &'static str {
        if self.chat {
            "chatcmpl-synthetic"
        } else {
            "cmpl-synthetic"
        }
    }

    fn finish(&self, ask: &Ask, length: usize) -> &'static str {
        if length >= ask.max_tokens {
            "length"
        } else {
            "stop"
        }
    }

    /// The logprobs object of the tokens `steps` (`text_offset` starting at `offset`).
    fn logprobs(&self, steps: &[usize], offset: usize) -> String {
        if self.top == 0 {
            return "null".into();
        }
        let fragments = steps.iter().map(|&s| &self.pool[s]);
        if self.chat || self.dialect == Dialect::LlamaServer {
            let entries: Vec<&str> = fragments.map(|f| f.chat_entry.as_str()).collect();
            return format!(r#"{{"content":[{}]}}"#, entries.join(","));
        }
        let mut offsets = Vec::with_capacity(steps.len());
        let mut at = offset;
        let (mut tokens, mut logprobs, mut maps) = (Vec::new(), Vec::new(), Vec::new());
        for f in fragments {
            offsets.push(at.to_string());
            at += f.text.len();
            tokens.push(f.text_json.as_str());
            logprobs.push(f.logprob.as_str());
            maps.push(f.top_map.as_str());
        }
        format!(
            r#"{{"text_offset":[{}],"token_logprobs":[{}],"tokens":[{}],"top_logprobs":[{}]}}"#,
            offsets.join(","),
            logprobs.join(","),
            tokens.join(","),
            maps.join(",")
        )
    }

    fn usage(&self, ask: &Ask, traces: &[Vec<usize>]) -> String {
        let completion: usize = traces.iter().map(Vec::len).sum();
        let prompt = 8 + (ask.prompt_hash % 24) as usize;
        format!(
            r#"{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}}"#,
            prompt + completion
        )
    }

    fn text(&self, steps: &[usize]) -> String {
        steps.iter().map(|&s| self.pool[s].text.as_str()).collect()
    }

    /// A whole (non-streamed) answer.
    pub(super) fn whole(&self, traces: &[Vec<usize>], ask: &Ask) -> String {
        let choices: Vec<String> = traces
            .iter()
            .enumerate()
            .map(|(index, steps)| {
                let text = serde_json::to_string(&self.text(steps)).unwrap_or_default();
                let finish = self.finish(ask, steps.len());
                let logprobs = self.logprobs(steps, 0);
                if self.chat {
                    format!(
                        r#"{{"index":{index},"message":{{"role":"assistant","content":{text}}},"logprobs":{logprobs},"finish_reason":"{finish}"}}"#
                    )
                } else {
                    format!(
                        r#"{{"index":{index},"text":{text},"logprobs":{logprobs},"finish_reason":"{finish}"}}"#
                    )
                }
            })
            .collect();
        format!(
            r#"{{"id":"{}","object":"{}","created":{CREATED},"model":"synthetic","choices":[{}],"usage":{}}}"#,
            self.id(),
            self.object(false),
            choices.join(","),
            self.usage(ask, traces)
        )
    }

    fn event(&self, out: &mut impl Write, choice: &str) -> std::io::Result<()> {
        let data = match self.dialect {
            Dialect::Vllm => format!(
                r#"data: {{"id":"{}","object":"{}","created":{CREATED},"model":"synthetic","choices":[{choice}]}}

"#,
                self.id(),
                self.object(true)
            ),
            Dialect::LlamaServer => format!(
                r#"data: {{"choices":[{choice}],"created":{CREATED},"id":"{}","model":"synthetic","system_fingerprint":"b0-synthetic","object":"{}"}}

"#,
                self.id(),
                self.object(true)
            ),
        };
        write_chunk(out, &data)
    }

    /// The choice object of one streamed token (`step`), or of the end (`None`).
    fn stream_choice(
        &self,
        index: usize,
        step: Option<usize>,
        offset: usize,
        finish: Option<&str>,
    ) -> String {
        let finish = finish.map_or("null".to_string(), |f| format!("\"{f}\""));
        let (text, logprobs) = match step {
            Some(s) => (
                self.pool[s].text_json.clone(),
                self.logprobs(std::slice::from_ref(&s), offset),
            ),
            None => ("\"\"".to_string(), "null".to_string()),
        };
        match (self.chat, self.dialect) {
            (true, Dialect::Vllm) => format!(
                r#"{{"index":{index},"delta":{{"content":{text}}},"logprobs":{logprobs},"finish_reason":{finish}}}"#
            ),
            (true, Dialect::LlamaServer) if step.is_none() => {
                format!(r#"{{"finish_reason":{finish},"index":{index},"delta":{{}}}}"#)
            }
            (true, Dialect::LlamaServer) => format!(
                r#"{{"finish_reason":{finish},"index":{index},"delta":{{"content":{text}}},"logprobs":{logprobs}}}"#
            ),
            (false, Dialect::Vllm) => format!(
                r#"{{"index":{index},"text":{text},"logprobs":{logprobs},"finish_reason":{finish},"stop_reason":null}}"#
            ),
            (false, Dialect::LlamaServer) => format!(
                r#"{{"text":{text},"index":{index},"logprobs":{logprobs},"finish_reason":{finish}}}"#
            ),
        }
    }

    /// A streamed answer: the choices' tokens in turn, one event each.
    pub(super) fn stream(
        &self,
        out: &mut impl Write,
        traces: &[Vec<usize>],
        ask: &Ask,
        rate: Option<f64>,
    ) -> std::io::Result<()> {
        let interval = rate
            .filter(|r| *r > 0.0)
            .map(|r| Duration::from_secs_f64(1.0 / r));
        let started = Instant::now();
        let longest = traces.iter().map(Vec::len).max().unwrap_or(0);
        let mut offsets = vec![0usize; traces.len()];
        if self.chat && self.dialect == Dialect::Vllm {
            for index in 0..traces.len() {
                self.event(
                    out,
                    &format!(
                        r#"{{"index":{index},"delta":{{"role":"assistant","content":""}},"logprobs":null,"finish_reason":null}}"#
                    ),
                )?;
            }
        }
        for j in 0..longest {
            if let Some(interval) = interval {
                let due = interval * j as u32;
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    out.flush()?;
                    std::thread::sleep(wait);
                }
            }
            for (index, steps) in traces.iter().enumerate() {
                let Some(&step) = steps.get(j) else { continue };
                let last = j + 1 == steps.len();
                // vLLM marks the last token's own chunk; llama-server sends the end apart.
                let finish =
                    (last && self.dialect == Dialect::Vllm).then(|| self.finish(ask, steps.len()));
                let choice = self.stream_choice(index, Some(step), offsets[index], finish);
                offsets[index] += self.pool[step].text.len();
                self.event(out, &choice)?;
                if last && self.dialect == Dialect::LlamaServer {
                    let end =
                        self.stream_choice(index, None, 0, Some(self.finish(ask, steps.len())));
                    self.event(out, &end)?;
                }
            }
            if interval.is_none() && j % 8 == 7 {
                out.flush()?;
            }
        }
        if ask.usage {
            let usage = self.usage(ask, traces);
            let data = match self.dialect {
                Dialect::Vllm => format!(
                    r#"data: {{"id":"{}","object":"{}","created":{CREATED},"model":"synthetic","choices":[],"usage":{usage}}}

"#,
                    self.id(),
                    self.object(true)
                ),
                Dialect::LlamaServer => format!(
                    r#"data: {{"choices":[],"created":{CREATED},"id":"{}","model":"synthetic","system_fingerprint":"b0-synthetic","object":"{}","usage":{usage}}}

"#,
                    self.id(),
                    self.object(true)
                ),
            };
            write_chunk(out, &data)?;
        }
        write_chunk(out, "data: [DONE]\n\n")
    }
}

/// One chunk of a chunked body.
fn write_chunk(out: &mut impl Write, data: &str) -> std::io::Result<()> {
    write!(out, "{:x}\r\n{data}\r\n", data.len())
}
