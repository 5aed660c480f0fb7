//! What a generation request asks for, and which precomputed token steps answer it.

use serde_json::Value;

use super::SyntheticConfig;
use super::events::{MAX_TOP, POOL};
use crate::mix;

/// What a generation request asks for.
pub(super) struct Ask {
    pub(super) chat: bool,
    pub(super) n: usize,
    pub(super) seed: u64,
    pub(super) seed_field: Option<u64>,
    pub(super) stream: bool,
    pub(super) usage: bool,
    pub(super) max_tokens: usize,
    pub(super) top: usize,
    pub(super) prompt_hash: u64,
}

fn hash_text(hash: u64, text: &str) -> u64 {
    text.bytes().fold(hash, |h, b| mix(h ^ u64::from(b)))
}

pub(super) fn read_ask(path: &str, body: &[u8]) -> Result<Ask, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let chat = path.ends_with("/chat/completions");
    if !chat && !path.ends_with("/completions") {
        return Err(format!("no route {path}"));
    }
    let number =
        |name: &str, default: u64| value.get(name).and_then(Value::as_u64).unwrap_or(default);
    let prompt_hash = if chat {
        let messages = value
            .get("messages")
            .and_then(Value::as_array)
            .ok_or("`messages` is missing")?;
        messages.iter().fold(17, |h, m| {
            let role = m.get("role").and_then(Value::as_str).unwrap_or_default();
            let content = m.get("content").and_then(Value::as_str).unwrap_or_default();
            hash_text(hash_text(h, role), content)
        })
    } else {
        let prompt = value
            .get("prompt")
            .and_then(Value::as_str)
            .ok_or("`prompt` is missing or not a string")?;
        hash_text(17, prompt)
    };
    let top = if chat {
        if value.get("logprobs").and_then(Value::as_bool) == Some(true) {
            number("top_logprobs", 0)
        } else {
            0
        }
    } else {
        number("logprobs", 0)
    } as usize;
    if top > MAX_TOP {
        return Err(format!(
            "at most {MAX_TOP} top logprobs are served, {top} were asked"
        ));
    }
    Ok(Ask {
        chat,
        n: number("n", 1).max(1) as usize,
        seed: number("seed", 0),
        seed_field: value.get("seed").and_then(Value::as_u64),
        stream: value.get("stream").and_then(Value::as_bool) == Some(true),
        usage: value
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            == Some(true),
        max_tokens: number("max_tokens", 16).clamp(1, 1 << 16) as usize,
        top,
        prompt_hash,
    })
}

/// The pool indices of one choice's tokens: a function of the prompt and the choice's seed.
pub(super) fn trace_steps(config: &SyntheticConfig, ask: &Ask, seed: u64) -> Vec<usize> {
    let stream = mix(ask.prompt_hash ^ mix(seed.wrapping_add(0x5EED)));
    let length = if config.full_length {
        ask.max_tokens
    } else {
        let half = ask.max_tokens.div_ceil(2);
        half + (stream % (ask.max_tokens - half + 1) as u64) as usize
    };
    (0..length)
        .map(|j| {
            (mix(stream ^ (j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) % POOL as u64) as usize
        })
        .collect()
}
