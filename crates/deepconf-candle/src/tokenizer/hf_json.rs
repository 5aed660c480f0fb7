//! Tokenizers built from a Hugging Face `tokenizer.json` and the configs beside it.

use super::*;

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json` with a BPE model and a byte-level pre-tokenizer
    /// (optionally preceded by `Split` regexes and `Digits`, as Qwen and SmolLM use).
    ///
    /// Added tokens marked `special` become special tokens; others are always recognised.
    /// End-of-sequence and begin-of-sequence tokens are read from `tokenizer_config.json` and
    /// `generation_config.json` next to the file when they exist.
    pub fn from_tokenizer_json(path: &Path) -> Result<Self> {
        let json = read_json(path)?;
        let bad = |what: String| Error::Tokenizer(format!("{}: {what}", path.display()));
        let model = json.get("model").ok_or_else(|| bad("no `model`".into()))?;
        let model_type = model.get("type").and_then(|t| t.as_str()).unwrap_or("BPE");
        if model_type != "BPE" {
            return Err(bad(format!(
                "model.type = `{model_type}` is not supported; only BPE is"
            )));
        }
        let vocab = model
            .get("vocab")
            .and_then(|v| v.as_object())
            .ok_or_else(|| bad("model.vocab is missing or not an object".into()))?;
        let mut entries: Vec<(String, u32)> = Vec::with_capacity(vocab.len());
        for (text, id) in vocab {
            let id = id
                .as_u64()
                .and_then(|v| u32::try_from(v).ok())
                .ok_or_else(|| bad(format!("model.vocab[`{text}`] is not a token id")))?;
            entries.push((text.clone(), id));
        }
        let mut added: Vec<(String, u32, bool)> = Vec::new();
        if let Some(list) = json.get("added_tokens").and_then(|v| v.as_array()) {
            for (index, token) in list.iter().enumerate() {
                let content = token.get("content").and_then(|v| v.as_str());
                let id = token
                    .get("id")
                    .and_then(|v| v.as_u64())
                    .and_then(|v| u32::try_from(v).ok());
                let (Some(content), Some(id)) = (content, id) else {
                    return Err(bad(format!(
                        "added_tokens[{index}] lacks `content` or `id`"
                    )));
                };
                let special = token
                    .get("special")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false);
                added.push((content.to_string(), id, special));
            }
        }
        let size = entries
            .iter()
            .map(|(_, id)| *id)
            .chain(added.iter().map(|(_, id, _)| *id))
            .max()
            .map_or(0, |max| max as usize + 1);
        let mut tokens = vec![String::new(); size];
        let mut kinds = vec![TokenKind::Unused; size];
        for (text, id) in entries {
            tokens[id as usize] = text;
            kinds[id as usize] = TokenKind::Normal;
        }
        for (text, id, special) in &added {
            tokens[*id as usize] = text.clone();
            kinds[*id as usize] = if *special {
                TokenKind::Control
            } else {
                TokenKind::UserDefined
            };
        }
        let merges_json = model
            .get("merges")
            .and_then(|v| v.as_array())
            .ok_or_else(|| bad("model.merges is missing or not an array".into()))?;
        let mut merges = Vec::with_capacity(merges_json.len());
        for (rank, merge) in merges_json.iter().enumerate() {
            let pair = match merge {
                serde_json::Value::String(line) => line
                    .split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string())),
                serde_json::Value::Array(parts) => match parts.as_slice() {
                    [serde_json::Value::String(a), serde_json::Value::String(b)] => {
                        Some((a.clone(), b.clone()))
                    }
                    _ => None,
                },
                _ => None,
            };
            merges.push(pair.ok_or_else(|| bad(format!("model.merges[{rank}] is not a pair")))?);
        }
        let ignore_merges = model
            .get("ignore_merges")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let mut pre = PreTokenizer::default();
        match json.get("normalizer") {
            None | Some(serde_json::Value::Null) => {}
            Some(normalizer) => parse_normalizer(normalizer, &mut pre).map_err(bad)?,
        }
        let mut byte_level = false;
        if let Some(pre_json) = json.get("pre_tokenizer").filter(|v| !v.is_null()) {
            parse_pre_tokenizer(pre_json, &mut pre, &mut byte_level).map_err(bad)?;
        }
        if !byte_level {
            return Err(bad(
                "the pre-tokenizer has no ByteLevel step; only byte-level BPE is supported".into(),
            ));
        }

        let model = ModelSpec::Bpe {
            merges,
            pre,
            ignore_merges,
        };
        let mut tokenizer = Self::assemble(tokens, kinds, model, None, false)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        tokenizer.read_sibling_configs(dir)?;
        Ok(tokenizer)
    }

    pub(super) fn read_sibling_configs(&mut self, dir: &Path) -> Result<()> {
        let config_path = dir.join("tokenizer_config.json");
        if config_path.is_file() {
            let config = read_json(&config_path)?;
            let token_of = |key: &str| -> Option<u32> {
                let value = config.get(key)?;
                let text = value
                    .as_str()
                    .or_else(|| value.get("content").and_then(|c| c.as_str()))?;
                self.token_ids.get(text).copied()
            };
            if let Some(eos) = token_of("eos_token") {
                self.eos_ids.push(eos);
            }
            self.bos_id = token_of("bos_token");
            self.add_bos = config
                .get("add_bos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
        }
        let generation_path = dir.join("generation_config.json");
        if generation_path.is_file() {
            let generation = read_json(&generation_path)?;
            match generation.get("eos_token_id") {
                Some(serde_json::Value::Array(ids)) => self.eos_ids.extend(
                    ids.iter()
                        .filter_map(|v| v.as_u64())
                        .filter_map(|v| u32::try_from(v).ok()),
                ),
                Some(value) => {
                    if let Some(id) = value.as_u64().and_then(|v| u32::try_from(v).ok()) {
                        self.eos_ids.push(id);
                    }
                }
                None => {}
            }
        }
        let vocab_size = self.tokens.len();
        self.eos_ids.retain(|&id| (id as usize) < vocab_size);
        dedup_keep_order(&mut self.eos_ids);
        Ok(())
    }
}

pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Model {
        path: path.to_path_buf(),
        message: format!(
            "invalid JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        ),
    })
}

pub(super) fn parse_normalizer(
    json: &serde_json::Value,
    pre: &mut PreTokenizer,
) -> Result<(), String> {
    match json.get("type").and_then(|t| t.as_str()) {
        Some("NFC") => {
            pre.nfc = true;
            Ok(())
        }
        Some("Sequence") => {
            for item in json
                .get("normalizers")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                parse_normalizer(item, pre)?;
            }
            Ok(())
        }
        other => Err(format!(
            "normalizer `{}` is not supported (only NFC)",
            other.unwrap_or("?")
        )),
    }
}

pub(super) fn parse_pre_tokenizer(
    json: &serde_json::Value,
    pre: &mut PreTokenizer,
    byte_level: &mut bool,
) -> Result<(), String> {
    let kind = json.get("type").and_then(|t| t.as_str()).unwrap_or("?");
    match kind {
        "Sequence" => {
            for item in json
                .get("pretokenizers")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                parse_pre_tokenizer(item, pre, byte_level)?;
            }
        }
        "ByteLevel" => {
            *byte_level = true;
            pre.add_prefix_space = json
                .get("add_prefix_space")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            if json
                .get("use_regex")
                .and_then(|v| v.as_bool())
                .unwrap_or(true)
            {
                pre.steps
                    .push(SplitStep::new(GPT2_PATTERN, false).map_err(|e| e.to_string())?);
            }
        }
        "Digits" => {
            let individual = json
                .get("individual_digits")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            let pattern = if individual { r"\p{N}" } else { r"\p{N}+" };
            pre.steps
                .push(SplitStep::new(pattern, false).map_err(|e| e.to_string())?);
        }
        "Split" => {
            let pattern_json = json.get("pattern");
            let pattern = if let Some(regex) = pattern_json
                .and_then(|p| p.get("Regex"))
                .and_then(|v| v.as_str())
            {
                regex.to_string()
            } else if let Some(literal) = pattern_json
                .and_then(|p| p.get("String"))
                .and_then(|v| v.as_str())
            {
                regex::escape(literal)
            } else {
                return Err("Split pre-tokenizer without a Regex or String pattern".into());
            };
            if json
                .get("invert")
                .and_then(|v| v.as_bool())
                .unwrap_or(false)
            {
                return Err("Split pre-tokenizer with invert = true is not supported".into());
            }
            let behavior = json
                .get("behavior")
                .and_then(|v| v.as_str())
                .unwrap_or("Isolated");
            let remove = match behavior {
                "Isolated" => false,
                "Removed" => true,
                other => {
                    return Err(format!(
                        "Split behavior `{other}` is not supported (Isolated, Removed)"
                    ));
                }
            };
            pre.steps
                .push(SplitStep::new(&pattern, remove).map_err(|e| e.to_string())?);
        }
        other => return Err(format!("pre-tokenizer `{other}` is not supported")),
    }
    Ok(())
}
