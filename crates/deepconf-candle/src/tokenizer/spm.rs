//! SentencePiece tokenization of GGUF vocabularies with `tokenizer.ggml.model = llama` (Llama 2,
//! Mistral, Phi-3), as llama.cpp does it (`llm_tokenizer_spm_session` in `llama-vocab.cpp`):
//! the text, spaces already replaced by U+2581, starts as one symbol per character; the adjacent
//! pair whose concatenation is the vocabulary entry with the highest score (leftmost among equal
//! scores) is merged, again and again; a final symbol that is not a vocabulary entry is written
//! as its bytes (`<0xNN>` tokens).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use crate::{Error, Result};

/// The space marker of SentencePiece vocabularies.
pub(super) const SPACE: char = '\u{2581}';

/// What a SentencePiece vocabulary adds to the shared tokenizer state.
#[derive(Debug)]
pub(super) struct Spm {
    /// Merge priority of every token (`tokenizer.ggml.scores`); higher merges first.
    pub scores: Vec<f32>,
    /// Whether a text fragment at the start or after a special token gets a leading space
    /// (`tokenizer.ggml.add_space_prefix`, default true).
    pub add_space_prefix: bool,
    /// The token of each byte: `<0xNN>`, else the byte itself when it is an ASCII token.
    pub byte_ids: [Option<u32>; 256],
    /// Used for a byte that has no token (llama.cpp fails there instead).
    pub unk_id: Option<u32>,
}

/// A run of the text: `len` bytes from `start`; 0 once merged into its left neighbour.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A candidate merge of symbols `left` and `right`, `size` bytes long when proposed.
#[derive(Debug, PartialEq)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    /// Highest score first, then leftmost.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Spm {
    /// Byte tokens of a vocabulary.
    pub(super) fn byte_ids(token_ids: &HashMap<String, u32>) -> [Option<u32>; 256] {
        let mut ids = [None; 256];
        for (byte, id) in ids.iter_mut().enumerate() {
            *id = token_ids
                .get(&format!("<0x{byte:02X}>"))
                .copied()
                .or_else(|| {
                    u8::try_from(byte)
                        .ok()
                        .filter(u8::is_ascii)
                        .and_then(|b| token_ids.get(char::from(b).encode_utf8(&mut [0; 4]) as &str))
                        .copied()
                });
        }
        ids
    }

    /// Appends the ids of `text` (spaces already replaced by [`SPACE`]) to `out`.
    pub(super) fn encode(
        &self,
        text: &str,
        token_ids: &HashMap<String, u32>,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        let count = text.chars().count();
        let mut symbols: Vec<Symbol> = text
            .char_indices()
            .enumerate()
            .map(|(i, (start, c))| Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: (i + 1 < count).then_some(i + 1),
            })
            .collect();
        let mut queue = BinaryHeap::new();
        let propose = |queue: &mut BinaryHeap<Bigram>,
                       symbols: &[Symbol],
                       left: Option<usize>,
                       right: Option<usize>| {
            let (Some(left), Some(right)) = (left, right) else {
                return;
            };
            let (l, r) = (symbols[left], symbols[right]);
            let piece = &text[l.start..l.start + l.len + r.len];
            if let Some(&id) = token_ids.get(piece)
                && let Some(&score) = self.scores.get(id as usize)
            {
                queue.push(Bigram {
                    score,
                    left,
                    right,
                    size: piece.len(),
                });
            }
        };
        for i in 1..symbols.len() {
            propose(&mut queue, &symbols, Some(i - 1), Some(i));
        }
        while let Some(bigram) = queue.pop() {
            let (left, right) = (symbols[bigram.left], symbols[bigram.right]);
            // A proposal whose symbols have changed since is stale: a merged symbol only grows
            // (or becomes empty), so the lengths tell.
            if left.len == 0 || right.len == 0 || left.len + right.len != bigram.size {
                continue;
            }
            symbols[bigram.left].len += right.len;
            symbols[bigram.right].len = 0;
            symbols[bigram.left].next = right.next;
            if let Some(next) = right.next {
                symbols[next].prev = Some(bigram.left);
            }
            propose(&mut queue, &symbols, left.prev, Some(bigram.left));
            propose(&mut queue, &symbols, Some(bigram.left), right.next);
        }
        let mut at = (!symbols.is_empty()).then_some(0);
        while let Some(i) = at {
            let symbol = symbols[i];
            let piece = &text[symbol.start..symbol.start + symbol.len];
            match token_ids.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for &byte in piece.as_bytes() {
                        let id = self.byte_ids[byte as usize].or(self.unk_id).ok_or_else(|| {
                            Error::Tokenizer(format!(
                                "the vocabulary has no token for byte 0x{byte:02X} and no unknown token"
                            ))
                        })?;
                        out.push(id);
                    }
                }
            }
            at = symbol.next;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(entries: &[(&str, f32)]) -> (HashMap<String, u32>, Spm) {
        let token_ids: HashMap<String, u32> = entries
            .iter()
            .enumerate()
            .map(|(id, (text, _))| (text.to_string(), id as u32))
            .collect();
        let spm = Spm {
            scores: entries.iter().map(|(_, s)| *s).collect(),
            add_space_prefix: true,
            byte_ids: Spm::byte_ids(&token_ids),
            unk_id: Some(0),
        };
        (token_ids, spm)
    }

    #[test]
    fn highest_scoring_pairs_merge_first_and_unknown_bytes_fall_back() {
        let (ids, spm) = vocab(&[
            ("<unk>", 0.0),
            ("<0xC3>", 0.0),
            ("<0xA9>", 0.0),
            ("a", -1.0),
            ("b", -1.0),
            ("c", -1.0),
            ("ab", -5.0),
            ("bc", -2.0),
            ("\u{2581}", -1.0),
        ]);
        let mut out = Vec::new();
        // "bc" outscores "ab", and "a" + "bc" is not a token: a, bc.
        spm.encode("abc", &ids, &mut out).unwrap();
        assert_eq!(out, [3, 7]);
        out.clear();
        // "é" has no token: its two UTF-8 bytes.
        spm.encode("\u{2581}é", &ids, &mut out).unwrap();
        assert_eq!(out, [8, 1, 2]);
    }

    #[test]
    fn equal_scores_merge_leftmost_first() {
        let (ids, spm) = vocab(&[("<unk>", 0.0), ("a", -1.0), ("aa", -1.0)]);
        let mut out = Vec::new();
        spm.encode("aaa", &ids, &mut out).unwrap();
        assert_eq!(out, [2, 1]);
    }
}
