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

mod bpe;
mod gguf;
mod hf_json;
mod pretokenizer;
mod spm;
mod vocab_names;

use std::collections::HashMap;
use std::path::Path;
use std::sync::RwLock;

use candle_core::quantized::gguf_file;
use unicode_normalization::UnicodeNormalization;

use crate::{Error, Result};
use spm::Spm;

use bpe::Bpe;
use gguf::{meta, meta_id};
pub(crate) use hf_json::read_json;
use pretokenizer::{
    GPT2_PATTERN, PreTokenizer, SplitStep, byte_level_alphabet, byte_level_alphabet_cached,
};
use vocab_names::{is_phi_3, mark_special_names};

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

impl Tokenizer {
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

fn dedup_keep_order(ids: &mut Vec<u32>) {
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(*id));
}
