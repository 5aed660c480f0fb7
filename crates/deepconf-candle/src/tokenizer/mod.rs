//! Tokenizers built from GGUF metadata (byte-level BPE and SentencePiece) or from a Hugging Face
//! `tokenizer.json` (byte-level BPE).
//!
//! The tokenizer follows llama.cpp's semantics (`llama-vocab.cpp`), which is what the GGUF files
//! were made for: special tokens are split out of the text first (control tokens only when
//! `parse_special` is set, user-defined tokens always; Phi-3's special tokens swallow the
//! whitespace after them, as llama.cpp sets for models named Phi-3). Then, by
//! `tokenizer.ggml.model`:
//!
//! - `gpt2` (byte-level BPE): every remaining fragment goes through the pre-tokenizer regexes
//!   selected by `tokenizer.ggml.pre`, each pre-token is mapped to GPT-2's byte-level alphabet
//!   and merged by BPE rank. No prefix space is added.
//! - `llama` (SentencePiece): spaces become U+2581, a fragment at the start or after a special
//!   token gets one in front (`tokenizer.ggml.add_space_prefix`, default true), and pieces are
//!   merged by score (`tokenizer.ggml.scores`), with bytes that no piece covers written as
//!   `<0xNN>` tokens (see `spm.rs`). Decoding turns U+2581 back into spaces and drops the
//!   prefix space of the first token.
//!
//! End-of-generation tokens are the metadata's eos/eot/eom ids plus the tokens llama.cpp
//! recognises by name (`<|im_end|>`, `</s>`, `<|eot_id|>`, ...); those, and fill-in-the-middle
//! tokens named as llama.cpp knows them, are treated as control tokens as llama.cpp does.

mod spm;

use std::collections::HashMap;
use std::path::Path;
use std::sync::RwLock;

use candle_core::quantized::gguf_file;
use unicode_normalization::UnicodeNormalization;

use crate::{Error, Result};
use spm::Spm;

/// GPT-2's pre-tokenizer regex as llama.cpp writes it. `\s+(?!\S)` needs look-ahead; the
/// splitter below rewrites it for the plain `regex` engine.
const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Qwen2 / Qwen3's pre-tokenizer regex (case-insensitive contractions, single digits).
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen3.5's pre-tokenizer regex: Qwen2's with combining marks (`\p{M}`) kept inside words.
const QWEN35_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// DeepSeek LLM's letter runs: Latin, Greek, Cyrillic, Armenian, Georgian, Cherokee and other
/// cased scripts, each optionally after one whitespace (from its `tokenizer.json`).
const DEEPSEEK_LLM_LETTERS: &str = r"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+";

/// Llama 3's pre-tokenizer regex (digits in groups of up to three).
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Words longer than this are not cached (long whitespace runs, base64 blobs).
const MAX_CACHED_WORD_BYTES: usize = 64;
/// The word cache is cleared when it grows past this many entries.
const MAX_CACHE_ENTRIES: usize = 100_000;

/// Tokens llama.cpp 0.3.36 ends generation on when the vocabulary has them, whatever their
/// type (it makes them control tokens).
const END_OF_GENERATION_NAMES: &[&str] = &[
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
const FILL_IN_THE_MIDDLE: &[(&[&str], &[&str], bool)] = &[
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
const ALWAYS_RENDERED: &[&str] = &["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"];

/// What kind of vocabulary entry a token is (GGUF `tokenizer.ggml.token_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl TokenKind {
    fn from_gguf(code: i64) -> Self {
        match code {
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => TokenKind::Normal,
        }
    }

    /// Special tokens are written verbatim, never byte-level encoded, and are skipped by
    /// `decode(.., skip_special = true)`.
    fn is_special(self) -> bool {
        matches!(self, TokenKind::Control | TokenKind::Unknown)
    }
}

/// One regex split step of the pre-tokenizer. Matches and the gaps between them both become
/// fragments ("isolated" behaviour) unless `remove_matches` is set.
#[derive(Debug)]
enum SplitRegex {
    /// Plain `regex`; `whitespace_group` marks the rewritten `\s+(?!\S)` alternative, whose
    /// match gives back its last character when more text follows.
    Plain {
        regex: regex::Regex,
        whitespace_group: Option<usize>,
    },
    /// Patterns with other look-arounds.
    Backtracking(fancy_regex::Regex),
}

#[derive(Debug)]
struct SplitStep {
    regex: SplitRegex,
    remove_matches: bool,
}

impl SplitStep {
    fn new(pattern: &str, remove_matches: bool) -> Result<Self> {
        Ok(Self {
            regex: SplitRegex::new(pattern)?,
            remove_matches,
        })
    }

    /// Splits `text[start..end]` and pushes the pieces (absolute ranges) to `out`.
    fn split(&self, text: &str, start: usize, end: usize, out: &mut Vec<(usize, usize)>) {
        let piece = &text[start..end];
        let mut last = 0;
        let push_match = |from: usize, to: usize, last: &mut usize, out: &mut Vec<_>| {
            if from > *last {
                out.push((start + *last, start + from));
            }
            if !self.remove_matches && to > from {
                out.push((start + from, start + to));
            }
            *last = to;
        };
        match &self.regex {
            SplitRegex::Plain {
                regex,
                whitespace_group,
            } => {
                let mut pos = 0;
                while pos < piece.len() {
                    let Some(found) = regex.find_at(piece, pos) else {
                        break;
                    };
                    let mut match_end = found.end();
                    if let Some(group) = *whitespace_group {
                        let matched = found.as_str();
                        if match_end < piece.len()
                            && matched.chars().nth(1).is_some()
                            && matched.chars().all(char::is_whitespace)
                            && regex
                                .captures_at(piece, found.start())
                                .is_some_and(|caps| caps.get(group).is_some())
                        {
                            // `\s+(?!\S)`: leave the last whitespace for the next word.
                            let last_char = matched.chars().next_back().map_or(0, char::len_utf8);
                            match_end -= last_char;
                        }
                    }
                    push_match(found.start(), match_end, &mut last, out);
                    pos = if match_end > found.start() {
                        match_end
                    } else {
                        // Empty match: step over one character.
                        match_end + piece[match_end..].chars().next().map_or(1, char::len_utf8)
                    };
                }
            }
            SplitRegex::Backtracking(regex) => {
                let mut pos = 0;
                while pos < piece.len() {
                    let Ok(Some(found)) = regex.find_from_pos(piece, pos) else {
                        break;
                    };
                    push_match(found.start(), found.end(), &mut last, out);
                    pos = if found.end() > found.start() {
                        found.end()
                    } else {
                        found.end()
                            + piece[found.end()..]
                                .chars()
                                .next()
                                .map_or(1, char::len_utf8)
                    };
                }
            }
        }
        if last < piece.len() {
            out.push((start + last, end));
        }
    }
}

impl SplitRegex {
    fn new(pattern: &str) -> Result<Self> {
        const LOOKAHEAD_WS: &str = r"\s+(?!\S)|\s+";
        const LOOKAHEAD_WS_ONLY: &str = r"\s+(?!\S)";
        const WHITESPACE_GROUP: &str = "deepconf_ws";
        let rewritten = if pattern.contains(LOOKAHEAD_WS) {
            Some(pattern.replacen(LOOKAHEAD_WS, &format!(r"(?P<{WHITESPACE_GROUP}>\s+)"), 1))
        } else {
            pattern
                .strip_suffix(LOOKAHEAD_WS_ONLY)
                .map(|head| format!(r"{head}(?P<{WHITESPACE_GROUP}>\s+)"))
        };
        let candidate = rewritten.as_deref().unwrap_or(pattern);
        match regex::Regex::new(candidate) {
            Ok(regex) => {
                let whitespace_group = regex
                    .capture_names()
                    .position(|name| name == Some(WHITESPACE_GROUP));
                Ok(SplitRegex::Plain {
                    regex,
                    whitespace_group,
                })
            }
            Err(_) => fancy_regex::Regex::new(pattern)
                .map(SplitRegex::Backtracking)
                .map_err(|e| {
                    Error::Tokenizer(format!("pre-tokenizer regex `{pattern}` is invalid: {e}"))
                }),
        }
    }
}

/// The text pipeline before BPE.
#[derive(Debug, Default)]
struct PreTokenizer {
    nfc: bool,
    add_prefix_space: bool,
    steps: Vec<SplitStep>,
}

impl PreTokenizer {
    fn for_gguf_pre(pre: &str) -> Result<(Self, bool)> {
        let (patterns, ignore_merges): (&[&str], bool) = match pre {
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva-7b" => (&[r"\p{N}", GPT2_PATTERN], false),
            "gpt-2" | "gpt2" | "mpt" | "olmo" | "jais" | "phi-2" => (&[GPT2_PATTERN], false),
            "qwen2" | "stablelm2" | "deepseek-r1-qwen" => (&[QWEN2_PATTERN], false),
            "qwen35" => (&[QWEN35_PATTERN], false),
            "falcon" => (
                &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2_PATTERN, "[0-9][0-9][0-9]"],
                false,
            ),
            "deepseek-llm" => (
                &[
                    r"[\r\n]",
                    DEEPSEEK_LLM_LETTERS,
                    r"\s?[!-/:-~！-／：-～‘-‟　-。]+",
                    r"\s+$",
                    "[一-龥ࠀ-一가-퟿]+",
                    r"\p{N}+",
                ],
                false,
            ),
            "deepseek-coder" => (
                &[
                    r"[\r\n]",
                    r"\s?\p{L}+",
                    r"\s?\p{P}+",
                    "[一-龥ࠀ-一가-퟿]+",
                    r"\p{N}",
                ],
                false,
            ),
            "llama3" | "llama-v3" | "llama-bpe" => (&[LLAMA3_PATTERN], true),
            other => {
                return Err(Error::Tokenizer(format!(
                    "tokenizer.ggml.pre = `{other}` is not supported (supported: smollm, starcoder, \
                     refact, command-r, codeshell, exaone, minerva-7b, gpt-2, mpt, olmo, jais, \
                     phi-2, qwen2, qwen35, stablelm2, deepseek-r1-qwen, deepseek-llm, deepseek-coder, falcon, \
                     llama3, llama-bpe)"
                )));
            }
        };
        let steps = patterns
            .iter()
            .map(|pattern| SplitStep::new(pattern, false))
            .collect::<Result<Vec<_>>>()?;
        Ok((
            Self {
                nfc: false,
                add_prefix_space: false,
                steps,
            },
            ignore_merges,
        ))
    }

    /// Ranges of `text` that become separate BPE words.
    fn split(&self, text: &str) -> Vec<(usize, usize)> {
        let mut ranges = vec![(0, text.len())];
        let mut next = Vec::with_capacity(text.len() / 3 + 1);
        for step in &self.steps {
            next.clear();
            for &(start, end) in &ranges {
                step.split(text, start, end, &mut next);
            }
            std::mem::swap(&mut ranges, &mut next);
        }
        ranges
    }
}

/// GPT-2's reversible byte -> printable character map.
fn byte_level_alphabet() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for byte in 0..=255u8 {
        let printable = matches!(byte, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[byte as usize] = if printable {
            char::from(byte)
        } else {
            let c = char::from_u32(256 + extra).unwrap_or('\u{FFFD}');
            extra += 1;
            c
        };
    }
    table
}

/// A tokenizer: byte-level BPE (GPT-2 family: SmolLM2, Qwen2/3, Llama 3, StarCoder, ...) or
/// SentencePiece (Llama 2, Mistral, Phi-3), equal to llama.cpp's (see the module docs).
///
/// It is `Send + Sync`; BPE encoding caches the result of short words behind a lock.
#[derive(Debug)]
pub struct Tokenizer {
    tokens: Vec<String>,
    kinds: Vec<TokenKind>,
    token_ids: HashMap<String, u32>,
    /// Control, unknown and user-defined tokens, longest first.
    specials: Vec<SpecialToken>,
    model: Model,
    eos_ids: Vec<u32>,
    bos_id: Option<u32>,
    add_bos: bool,
}

/// A token that is split out of the text before the model's own tokenization.
#[derive(Debug)]
struct SpecialToken {
    text: String,
    id: u32,
    /// Control and unknown tokens are split out only when the caller parses special tokens.
    needs_parse_special: bool,
    /// Whitespace after the token is dropped (llama.cpp's `RSTRIP` attribute).
    rstrip: bool,
}

/// How text between special tokens becomes ids.
#[derive(Debug)]
enum Model {
    Bpe(Bpe),
    Spm(Spm),
}

/// Byte-level BPE state.
#[derive(Debug)]
struct Bpe {
    /// (left, right) -> (rank, merged id)
    merges: HashMap<(u32, u32), (u32, u32)>,
    byte_ids: [Option<u32>; 256],
    char_to_byte: HashMap<char, u8>,
    pre: PreTokenizer,
    ignore_merges: bool,
    cache: RwLock<HashMap<String, Vec<u32>>>,
}

fn meta<'a>(content: &'a gguf_file::Content, key: &str) -> Option<&'a gguf_file::Value> {
    content.metadata.get(key)
}

fn meta_int(value: &gguf_file::Value) -> Option<i64> {
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

fn meta_strings(content: &gguf_file::Content, key: &str) -> Result<Vec<String>> {
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

fn meta_id(content: &gguf_file::Content, key: &str, vocab_size: usize) -> Option<u32> {
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

    fn read_sibling_configs(&mut self, dir: &Path) -> Result<()> {
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

    fn assemble(
        tokens: Vec<String>,
        kinds: Vec<TokenKind>,
        model: ModelSpec,
        bos_id: Option<u32>,
        add_bos: bool,
    ) -> Result<Self> {
        let vocab_size = u32::try_from(tokens.len())
            .map_err(|_| Error::Tokenizer("vocabulary larger than u32".into()))?;
        let mut token_ids = HashMap::with_capacity(tokens.len());
        for (id, text) in (0..vocab_size).zip(&tokens) {
            // Keep the first id of a duplicated text.
            token_ids.entry(text.clone()).or_insert(id);
        }
        let model = match model {
            ModelSpec::Bpe {
                merges,
                pre,
                ignore_merges,
            } => Model::Bpe(Bpe::new(&token_ids, &merges, pre, ignore_merges)),
            ModelSpec::Spm(mut spm) => {
                spm.byte_ids = Spm::byte_ids(&token_ids);
                Model::Spm(*spm)
            }
        };
        let mut specials: Vec<SpecialToken> = (0..vocab_size)
            .zip(&kinds)
            .filter(|(id, kind)| {
                (kind.is_special() || **kind == TokenKind::UserDefined)
                    && !tokens[*id as usize].is_empty()
            })
            .map(|(id, kind)| SpecialToken {
                text: tokens[id as usize].clone(),
                id,
                needs_parse_special: kind.is_special(),
                rstrip: false,
            })
            .collect();
        specials.sort_by(|a, b| b.text.len().cmp(&a.text.len()).then(a.id.cmp(&b.id)));
        Ok(Self {
            tokens,
            kinds,
            token_ids,
            specials,
            model,
            eos_ids: Vec::new(),
            bos_id,
            add_bos,
        })
    }

    /// llama.cpp's attributes for models named Phi-3: whitespace after a special token is part
    /// of the token, except after `<unk>`, `<s>` and `<|endoftext|>`.
    fn strip_whitespace_after_specials(&mut self) {
        for special in &mut self.specials {
            special.rstrip = !matches!(special.text.as_str(), "<unk>" | "<s>" | "<|endoftext|>");
        }
    }

    /// Splits `text` at special tokens, longest first (see [`Tokenizer::encode`]).
    fn split_specials(&self, text: &str, parse_special: bool) -> Vec<Piece> {
        // llama.cpp makes no fragment of an empty text (so SentencePiece adds no prefix space).
        if text.is_empty() {
            return Vec::new();
        }
        let bytes = text.as_bytes();
        let mut pieces = vec![Piece::Text(0, text.len())];
        for special in &self.specials {
            if special.needs_parse_special && !parse_special {
                continue;
            }
            if !text.contains(special.text.as_str()) {
                continue;
            }
            let mut next = Vec::with_capacity(pieces.len() + 2);
            for piece in pieces {
                let Piece::Text(start, end) = piece else {
                    next.push(piece);
                    continue;
                };
                let mut cursor = start;
                while let Some(offset) = text[cursor..end].find(special.text.as_str()) {
                    let at = cursor + offset;
                    if at > cursor {
                        next.push(Piece::Text(cursor, at));
                    }
                    next.push(Piece::Special(special.id));
                    cursor = at + special.text.len();
                    if special.rstrip {
                        // C's isspace, as llama.cpp tests it.
                        while cursor < end && matches!(bytes[cursor], b' ' | b'\t'..=b'\r') {
                            cursor += 1;
                        }
                    }
                }
                if cursor < end {
                    next.push(Piece::Text(cursor, end));
                }
            }
            pieces = next;
        }
        pieces
    }

    /// Token ids of `text`. With `parse_special`, control tokens written in the text (such as
    /// `<|im_start|>`) become their ids; without it they are tokenized as plain text.
    /// User-defined added tokens are always recognised. No BOS is added: see
    /// [`Tokenizer::add_bos`]. A SentencePiece vocabulary adds its prefix space (see the module
    /// docs).
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let normalized;
        let text = match &self.model {
            Model::Bpe(bpe) if bpe.pre.nfc => {
                normalized = text.nfc().collect::<String>();
                normalized.as_str()
            }
            _ => text,
        };
        let pieces = self.split_specials(text, parse_special);
        let mut ids = Vec::with_capacity(text.len() / 3 + 1);
        match &self.model {
            Model::Bpe(bpe) => {
                let mut word = String::new();
                let alphabet = byte_level_alphabet_cached();
                for (index, piece) in pieces.into_iter().enumerate() {
                    match piece {
                        Piece::Special(id) => ids.push(id),
                        Piece::Text(start, end) => {
                            let owned;
                            let fragment = if index == 0
                                && bpe.pre.add_prefix_space
                                && !text[start..end].starts_with(' ')
                            {
                                owned = format!(" {}", &text[start..end]);
                                owned.as_str()
                            } else {
                                &text[start..end]
                            };
                            for (word_start, word_end) in bpe.pre.split(fragment) {
                                word.clear();
                                for &byte in &fragment.as_bytes()[word_start..word_end] {
                                    word.push(alphabet[byte as usize]);
                                }
                                bpe.encode_word(&word, &self.token_ids, &mut ids)?;
                            }
                        }
                    }
                }
            }
            Model::Spm(spm) => {
                let mut after_special = true;
                let mut escaped = String::new();
                for piece in pieces {
                    match piece {
                        Piece::Special(id) => {
                            ids.push(id);
                            after_special = true;
                        }
                        Piece::Text(start, end) => {
                            escaped.clear();
                            if spm.add_space_prefix && after_special {
                                escaped.push(spm::SPACE);
                            }
                            for c in text[start..end].chars() {
                                escaped.push(if c == ' ' { spm::SPACE } else { c });
                            }
                            spm.encode(&escaped, &self.token_ids, &mut ids)?;
                            after_special = false;
                        }
                    }
                }
            }
        }
        Ok(ids)
    }

    /// Text of `ids` decoded as one sequence, so multi-byte characters split over tokens come
    /// out whole; invalid UTF-8 becomes U+FFFD. Special tokens are written as their text unless
    /// `skip_special`. A SentencePiece vocabulary that adds a prefix space drops the leading
    /// space of the first token, as llama.cpp does.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let strip_first_space = matches!(&self.model, Model::Spm(spm) if spm.add_space_prefix);
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for (index, &id) in ids.iter().enumerate() {
            let start = bytes.len();
            self.push_piece(id, skip_special, &mut bytes)?;
            if index == 0 && strip_first_space && bytes.get(start) == Some(&b' ') {
                bytes.remove(start);
            }
        }
        Ok(match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    /// Appends the bytes token `id` stands for.
    fn push_piece(&self, id: u32, skip_special: bool, out: &mut Vec<u8>) -> Result<()> {
        let (Some(text), Some(kind)) = (self.tokens.get(id as usize), self.kinds.get(id as usize))
        else {
            return Err(Error::InvalidParameter {
                parameter: "ids",
                reason: format!(
                    "token id {id} is outside the vocabulary of {}",
                    self.tokens.len()
                ),
            });
        };
        match (kind, &self.model) {
            (k, _) if k.is_special() => {
                if !skip_special {
                    out.extend_from_slice(text.as_bytes());
                }
            }
            (TokenKind::UserDefined, _) => out.extend_from_slice(text.as_bytes()),
            (_, Model::Bpe(bpe)) => {
                for c in text.chars() {
                    match bpe.char_to_byte.get(&c) {
                        Some(&byte) => out.push(byte),
                        None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
            }
            (TokenKind::Byte, Model::Spm(_)) => {
                match text
                    .strip_prefix("<0x")
                    .and_then(|hex| hex.strip_suffix('>'))
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                {
                    Some(byte) => out.push(byte),
                    None => out.extend_from_slice(text.as_bytes()),
                }
            }
            (TokenKind::Unused, Model::Spm(_)) => {}
            (_, Model::Spm(_)) => {
                for c in text.chars() {
                    if c == spm::SPACE {
                        out.push(b' ');
                    } else {
                        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                }
            }
        }
        Ok(())
    }

    /// The raw vocabulary entry of `id` (byte-level form such as `Ġthe` for " the" in BPE
    /// vocabularies, `▁the` in SentencePiece ones).
    pub fn token_text(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of a vocabulary entry given in its raw form (see [`Tokenizer::token_text`]).
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_ids.get(text).copied()
    }

    /// Whether `id` is a special (control or unknown) token.
    pub fn is_special(&self, id: u32) -> bool {
        self.kinds
            .get(id as usize)
            .is_some_and(|kind| kind.is_special())
    }

    /// Number of vocabulary entries (ids are `0..vocab_size`).
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// Whether this is a SentencePiece vocabulary (`tokenizer.ggml.model = llama`).
    pub fn is_sentencepiece(&self) -> bool {
        matches!(self.model, Model::Spm(_))
    }

    /// The decoded text of every token, indexed by id (special tokens as their text, a
    /// SentencePiece token's space marker as a space). (An LLM judge reads single candidates
    /// through `LogprobModel::token_text` instead.)
    pub fn decoded_vocabulary(&self) -> Vec<String> {
        let mut piece = Vec::new();
        (0..self.tokens.len() as u32)
            .map(|id| {
                piece.clear();
                match self.push_piece(id, false, &mut piece) {
                    Ok(()) => String::from_utf8_lossy(&piece).into_owned(),
                    Err(_) => String::new(),
                }
            })
            .collect()
    }

    /// Tokens that end generation: the metadata's eos (first), eot and eom ids, plus tokens
    /// named like end-of-turn markers (`<|im_end|>`, `<|endoftext|>`, `<|eot_id|>`, `</s>`,
    /// ...) and fill-in-the-middle pad/repo/file-separator tokens, as llama.cpp does.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// The begin-of-sequence token, if the tokenizer names one.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// Whether a prompt should start with the BOS token (`tokenizer.ggml.add_bos_token`; when
    /// absent, llama.cpp's default: true for SentencePiece and Llama 3 vocabularies).
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.bos_id.is_some()
    }
}

/// A part of the text to encode: a range of plain text, or a special token found in it.
#[derive(Debug, Clone, Copy)]
enum Piece {
    Text(usize, usize),
    Special(u32),
}

/// A model's settings before the vocabulary's ids are known.
enum ModelSpec {
    Bpe {
        merges: Vec<(String, String)>,
        pre: PreTokenizer,
        ignore_merges: bool,
    },
    Spm(Box<Spm>),
}

impl Bpe {
    fn new(
        token_ids: &HashMap<String, u32>,
        merge_pairs: &[(String, String)],
        pre: PreTokenizer,
        ignore_merges: bool,
    ) -> Self {
        let alphabet = byte_level_alphabet();
        let mut byte_ids = [None; 256];
        let mut char_to_byte = HashMap::with_capacity(256);
        for (byte, &c) in alphabet.iter().enumerate() {
            byte_ids[byte] = token_ids.get(c.encode_utf8(&mut [0; 4]) as &str).copied();
            char_to_byte.insert(c, byte as u8);
        }
        let mut merges = HashMap::with_capacity(merge_pairs.len());
        for (rank, (left, right)) in merge_pairs.iter().enumerate() {
            let (Some(&l), Some(&r), Some(&merged)) = (
                token_ids.get(left),
                token_ids.get(right),
                token_ids.get(&format!("{left}{right}")),
            ) else {
                continue;
            };
            merges.entry((l, r)).or_insert((rank as u32, merged));
        }
        Self {
            merges,
            byte_ids,
            char_to_byte,
            pre,
            ignore_merges,
            cache: RwLock::new(HashMap::new()),
        }
    }

    fn encode_word(
        &self,
        word: &str,
        token_ids: &HashMap<String, u32>,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        if word.is_empty() {
            return Ok(());
        }
        if self.ignore_merges
            && let Some(&id) = token_ids.get(word)
        {
            out.push(id);
            return Ok(());
        }
        let cacheable = word.len() <= MAX_CACHED_WORD_BYTES;
        if cacheable
            && let Ok(cache) = self.cache.read()
            && let Some(cached) = cache.get(word)
        {
            out.extend_from_slice(cached);
            return Ok(());
        }
        let mut symbols = Vec::with_capacity(word.len());
        for c in word.chars() {
            let id = self
                .char_to_byte
                .get(&c)
                .and_then(|&byte| self.byte_ids[byte as usize])
                .ok_or_else(|| {
                    Error::Tokenizer(format!(
                        "the vocabulary has no token for byte-level character {c:?}"
                    ))
                })?;
            symbols.push(id);
        }
        self.merge(&mut symbols);
        out.extend_from_slice(&symbols);
        if cacheable && let Ok(mut cache) = self.cache.write() {
            if cache.len() >= MAX_CACHE_ENTRIES {
                cache.clear();
            }
            cache.insert(word.to_string(), symbols);
        }
        Ok(())
    }

    /// Applies merges lowest rank first, leftmost first among equal ranks.
    fn merge(&self, symbols: &mut Vec<u32>) {
        loop {
            let mut best: Option<(u32, usize, u32)> = None;
            for (index, pair) in symbols.windows(2).enumerate() {
                if let Some(&(rank, merged)) = self.merges.get(&(pair[0], pair[1]))
                    && best.is_none_or(|(best_rank, _, _)| rank < best_rank)
                {
                    best = Some((rank, index, merged));
                }
            }
            let Some((_, index, merged)) = best else {
                return;
            };
            symbols[index] = merged;
            symbols.remove(index + 1);
        }
    }
}

/// Whether llama.cpp applies its Phi-3 token attributes: `general.name` contains `phi-3` or
/// `phi3`, in any case.
fn is_phi_3(content: &gguf_file::Content) -> bool {
    meta(content, "general.name")
        .and_then(|v| v.to_string().ok())
        .is_some_and(|name| {
            let name = name.to_lowercase();
            name.contains("phi-3") || name.contains("phi3")
        })
}

/// The token types and end-of-generation set llama.cpp derives from token names (see the
/// module docs and [`END_OF_GENERATION_NAMES`], [`FILL_IN_THE_MIDDLE`]).
fn mark_special_names(
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

fn dedup_keep_order(ids: &mut Vec<u32>) {
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(*id));
}

fn byte_level_alphabet_cached() -> &'static [char; 256] {
    static ALPHABET: std::sync::OnceLock<[char; 256]> = std::sync::OnceLock::new();
    ALPHABET.get_or_init(byte_level_alphabet)
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

fn parse_normalizer(json: &serde_json::Value, pre: &mut PreTokenizer) -> Result<(), String> {
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

fn parse_pre_tokenizer(
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
