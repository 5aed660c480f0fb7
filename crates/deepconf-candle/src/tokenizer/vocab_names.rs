//! Token names llama.cpp recognises whatever the metadata says: end-of-generation and
//! fill-in-the-middle tokens, gpt-oss markers, Phi-3's attributes.

use super::*;

/// Tokens llama.cpp 0.3.36 ends generation on when the vocabulary has them, whatever their
/// type (it makes them control tokens).
pub(super) const END_OF_GENERATION_NAMES: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<\u{ff5c}end\u{2581}of\u{2581}sentence\u{ff5c}>",
    "[e~[",
];

/// Fill-in-the-middle tokens llama.cpp recognises by name when the metadata does not give their
/// id (`tokenizer.ggml.fim_*_token_id`, or the older `prefix`/`suffix`/`middle` keys): they
/// become control tokens; the pad, repo and file-separator ones also end generation.
pub(super) const FILL_IN_THE_MIDDLE: &[(&[&str], &[&str], bool)] = &[
    (
        &[
            "tokenizer.ggml.fim_pre_token_id",
            "tokenizer.ggml.prefix_token_id",
        ],
        &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<\u{ff5c}fim\u{2581}begin\u{ff5c}>",
            "<PRE>",
            "\u{2581}<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ],
        false,
    ),
    (
        &[
            "tokenizer.ggml.fim_suf_token_id",
            "tokenizer.ggml.suffix_token_id",
        ],
        &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<\u{ff5c}fim\u{2581}hole\u{ff5c}>",
            "<SUF>",
            "\u{2581}<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ],
        false,
    ),
    (
        &[
            "tokenizer.ggml.fim_mid_token_id",
            "tokenizer.ggml.middle_token_id",
        ],
        &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<\u{ff5c}fim\u{2581}end\u{ff5c}>",
            "<MID>",
            "\u{2581}<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ],
        false,
    ),
    (
        &["tokenizer.ggml.fim_pad_token_id"],
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
        true,
    ),
    (
        &["tokenizer.ggml.fim_rep_token_id"],
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
        true,
    ),
    (
        &["tokenizer.ggml.fim_sep_token_id"],
        &["<|file_sep|>"],
        true,
    ),
];

/// gpt-oss markers llama.cpp always renders as text (user-defined tokens).
pub(super) const ALWAYS_RENDERED: &[&str] =
    &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

/// Whether llama.cpp applies its Phi-3 token attributes: `general.name` contains `phi-3` or
/// `phi3`, in any case.
pub(super) fn is_phi_3(content: &gguf_file::Content) -> bool {
    meta(content, "general.name")
        .and_then(|v| v.to_string().ok())
        .is_some_and(|name| {
            let name = name.to_lowercase();
            name.contains("phi-3") || name.contains("phi3")
        })
}

/// The token types and end-of-generation set llama.cpp derives from token names (see the
/// module docs and [`END_OF_GENERATION_NAMES`], [`FILL_IN_THE_MIDDLE`]).
pub(super) fn mark_special_names(
    content: &gguf_file::Content,
    tokens: &[String],
    kinds: &mut [TokenKind],
    eos_ids: &mut Vec<u32>,
) {
    let wanted: std::collections::HashSet<&str> = END_OF_GENERATION_NAMES
        .iter()
        .chain(
            FILL_IN_THE_MIDDLE
                .iter()
                .flat_map(|(_, names, _)| names.iter()),
        )
        .chain(ALWAYS_RENDERED)
        .copied()
        .chain(["<|plamo:eos|>"])
        .collect();
    let mut named: HashMap<&str, u32> = HashMap::new();
    for (id, text) in tokens.iter().enumerate() {
        if wanted.contains(text.as_str()) {
            named.entry(text.as_str()).or_insert(id as u32);
        }
    }
    let mut make_control = |id: u32| {
        let kind = &mut kinds[id as usize];
        if !kind.is_special() {
            *kind = TokenKind::Control;
        }
    };
    for (keys, names, ends_generation) in FILL_IN_THE_MIDDLE {
        let from_metadata = keys
            .iter()
            .find_map(|key| meta_id(content, key, tokens.len()));
        let id = match from_metadata {
            Some(id) => Some(id),
            None => names
                .iter()
                .find_map(|name| named.get(name).copied())
                .inspect(|&id| make_control(id)),
        };
        if let Some(id) = id
            && *ends_generation
        {
            eos_ids.push(id);
        }
    }
    for name in END_OF_GENERATION_NAMES {
        if let Some(&id) = named.get(name) {
            make_control(id);
            eos_ids.push(id);
        }
    }
    for name in ALWAYS_RENDERED {
        if let Some(&id) = named.get(name) {
            kinds[id as usize] = TokenKind::UserDefined;
        }
    }
    let ends = |name: &str, eos_ids: &[u32]| named.get(name).is_some_and(|id| eos_ids.contains(id));
    // Harmony (gpt-oss) and Solar Open end turns with other tokens than `<|end|>`.
    if ((ends("<|return|>", eos_ids) && ends("<|call|>", eos_ids))
        || (ends("<|calls|>", eos_ids) && ends("<|flush|>", eos_ids)))
        && let Some(&end) = named.get("<|end|>")
    {
        eos_ids.retain(|&id| id != end);
        kinds[end as usize] = TokenKind::UserDefined;
    }
    // Gemma 4 and PLaMo have a plain `</s>`.
    if (ends("<|tool_response>", eos_ids) || ends("<|plamo:eos|>", eos_ids))
        && let Some(&s) = named.get("</s>")
    {
        eos_ids.retain(|&id| id != s);
        kinds[s as usize] = TokenKind::Normal;
    }
}
