//! Tokenizers built from GGUF metadata (`tokenizer.ggml.*`).

use super::*;

pub(super) fn meta<'a>(content: &'a gguf_file::Content, key: &str) -> Option<&'a gguf_file::Value> {
    content.metadata.get(key)
}

pub(super) fn meta_int(value: &gguf_file::Value) -> Option<i64> {
    use gguf_file::Value as V;
    Some(match value {
        V::U8(v) => i64::from(*v),
        V::I8(v) => i64::from(*v),
        V::U16(v) => i64::from(*v),
        V::I16(v) => i64::from(*v),
        V::U32(v) => i64::from(*v),
        V::I32(v) => i64::from(*v),
        V::U64(v) => i64::try_from(*v).ok()?,
        V::I64(v) => *v,
        _ => return None,
    })
}

pub(super) fn meta_strings(content: &gguf_file::Content, key: &str) -> Result<Vec<String>> {
    let value = meta(content, key)
        .ok_or_else(|| Error::Tokenizer(format!("GGUF metadata key `{key}` is missing")))?;
    let gguf_file::Value::Array(items) = value else {
        return Err(Error::Tokenizer(format!(
            "GGUF metadata key `{key}` is not an array"
        )));
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| match item {
            gguf_file::Value::String(s) => Ok(s.clone()),
            _ => Err(Error::Tokenizer(format!(
                "GGUF metadata `{key}`[{index}] is not a string"
            ))),
        })
        .collect()
}

pub(super) fn meta_id(content: &gguf_file::Content, key: &str, vocab_size: usize) -> Option<u32> {
    meta(content, key)
        .and_then(meta_int)
        .and_then(|v| u32::try_from(v).ok())
        .filter(|&id| (id as usize) < vocab_size)
}

impl Tokenizer {
    /// Reads the GGUF file at `path` (metadata only, no weights) and builds its tokenizer, as
    /// [`Tokenizer::from_gguf`] does.
    pub fn from_gguf_path(path: &Path) -> Result<Self> {
        let gguf = crate::models::GgufFile::open(path)?;
        Self::from_gguf(&gguf.content)
    }

    /// Builds the tokenizer from a GGUF file's `tokenizer.ggml.*` metadata: `model` (`gpt2` or
    /// `llama`), `tokens`, `token_type`, special token ids, `add_bos_token`, and for `gpt2`
    /// `merges` and `pre`, for `llama` `scores` and `add_space_prefix`.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Self> {
        let model = meta(content, "tokenizer.ggml.model")
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
            .unwrap_or("");
        let spm = match model {
            "gpt2" => false,
            "llama" => true,
            other => {
                return Err(Error::Tokenizer(format!(
                    "tokenizer.ggml.model = `{other}` is not supported; byte-level BPE (`gpt2`) and SentencePiece (`llama`) are"
                )));
            }
        };
        let mut tokens = meta_strings(content, "tokenizer.ggml.tokens")?;
        for (id, text) in tokens.iter_mut().enumerate() {
            // llama.cpp names empty entries so that every token has a distinct text.
            if text.is_empty() {
                *text = format!("[EMPTY_{id}]");
            }
        }
        let mut kinds = match meta(content, "tokenizer.ggml.token_type") {
            Some(gguf_file::Value::Array(items)) => {
                if items.len() != tokens.len() {
                    return Err(Error::Tokenizer(format!(
                        "tokenizer.ggml.token_type has {} entries but tokenizer.ggml.tokens has {}",
                        items.len(),
                        tokens.len()
                    )));
                }
                items
                    .iter()
                    .map(|v| TokenKind::from_gguf(meta_int(v).unwrap_or(1)))
                    .collect()
            }
            _ => vec![TokenKind::Normal; tokens.len()],
        };
        let vocab_size = tokens.len();
        let pre_name = meta(content, "tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
            .unwrap_or(if spm { "default" } else { "gpt-2" });
        // llama.cpp's defaults when the metadata does not say.
        let spm_default = |id: u32| spm.then_some(id).filter(|&id| (id as usize) < vocab_size);
        let bos_id = meta_id(content, "tokenizer.ggml.bos_token_id", vocab_size).or(spm_default(1));
        let unk_id =
            meta_id(content, "tokenizer.ggml.unknown_token_id", vocab_size).or(spm_default(0));
        let default_add_bos = spm || matches!(pre_name, "llama3" | "llama-v3" | "llama-bpe");
        let add_bos = meta(content, "tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(default_add_bos);
        let mut eos_ids: Vec<u32> = [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ]
        .iter()
        .filter_map(|key| meta_id(content, key, vocab_size))
        .collect();
        if !content.metadata.contains_key("tokenizer.ggml.eos_token_id")
            && let Some(eos) = spm_default(2)
        {
            eos_ids.insert(0, eos);
        }
        mark_special_names(content, &tokens, &mut kinds, &mut eos_ids);

        let model = if spm {
            let scores = match meta(content, "tokenizer.ggml.scores") {
                Some(gguf_file::Value::Array(items)) if items.len() == vocab_size => items
                    .iter()
                    .map(|v| v.to_f32().ok().or_else(|| meta_int(v).map(|i| i as f32)))
                    // -0.0 and 0.0 compare equal in llama.cpp's merge order.
                    .map(|score| score.map(|s| s + 0.0))
                    .collect::<Option<Vec<f32>>>()
                    .ok_or_else(|| {
                        Error::Tokenizer("tokenizer.ggml.scores holds a non-number".into())
                    })?,
                Some(_) => {
                    return Err(Error::Tokenizer(format!(
                        "tokenizer.ggml.scores is not an array of {vocab_size} numbers"
                    )));
                }
                None => vec![0.0; vocab_size],
            };
            ModelSpec::Spm(Box::new(Spm {
                scores,
                add_space_prefix: meta(content, "tokenizer.ggml.add_space_prefix")
                    .and_then(|v| v.to_bool().ok())
                    .unwrap_or(true),
                byte_ids: [None; 256],
                unk_id,
            }))
        } else {
            let merges = meta_strings(content, "tokenizer.ggml.merges")?;
            let merge_pairs = merges
                .iter()
                .enumerate()
                .map(|(rank, line)| {
                    line.split_once(' ')
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .ok_or_else(|| {
                            Error::Tokenizer(format!(
                                "tokenizer.ggml.merges[{rank}] = `{line}` is not `left right`"
                            ))
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            let (pre, ignore_merges) = PreTokenizer::for_gguf_pre(pre_name)?;
            ModelSpec::Bpe {
                merges: merge_pairs,
                pre,
                ignore_merges,
            }
        };
        let mut tokenizer = Self::assemble(tokens, kinds, model, bos_id, add_bos)?;
        if is_phi_3(content) {
            tokenizer.strip_whitespace_after_specials();
        }
        dedup_keep_order(&mut eos_ids);
        tokenizer.eos_ids = eos_ids;
        Ok(tokenizer)
    }
}
