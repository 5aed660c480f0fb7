//! The text pipeline before BPE: the pre-tokenizer regexes llama.cpp selects by
//! `tokenizer.ggml.pre`, their splitting, and GPT-2's byte-level alphabet.

use super::*;

/// GPT-2's pre-tokenizer regex as llama.cpp writes it. `\s+(?!\S)` needs look-ahead; the
/// splitter below rewrites it for the plain `regex` engine.
pub(super) const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// Qwen2 / Qwen3's pre-tokenizer regex (case-insensitive contractions, single digits).
pub(super) const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen3.5's pre-tokenizer regex: Qwen2's with combining marks (`\p{M}`) kept inside words.
pub(super) const QWEN35_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// DeepSeek LLM's letter runs: Latin, Greek, Cyrillic, Armenian, Georgian, Cherokee and other
/// cased scripts, each optionally after one whitespace (from its `tokenizer.json`).
pub(super) const DEEPSEEK_LLM_LETTERS: &str = r"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+";

/// Llama 3's pre-tokenizer regex (digits in groups of up to three).
pub(super) const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// One regex split step of the pre-tokenizer. Matches and the gaps between them both become
/// fragments ("isolated" behaviour) unless `remove_matches` is set.
#[derive(Debug)]
pub(super) enum SplitRegex {
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
pub(super) struct SplitStep {
    pub(super) regex: SplitRegex,
    pub(super) remove_matches: bool,
}

impl SplitStep {
    pub(super) fn new(pattern: &str, remove_matches: bool) -> Result<Self> {
        Ok(Self {
            regex: SplitRegex::new(pattern)?,
            remove_matches,
        })
    }

    /// Splits `text[start..end]` and pushes the pieces (absolute ranges) to `out`.
    pub(super) fn split(
        &self,
        text: &str,
        start: usize,
        end: usize,
        out: &mut Vec<(usize, usize)>,
    ) {
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
    pub(super) fn new(pattern: &str) -> Result<Self> {
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
pub(super) struct PreTokenizer {
    pub(super) nfc: bool,
    pub(super) add_prefix_space: bool,
    pub(super) steps: Vec<SplitStep>,
}

impl PreTokenizer {
    pub(super) fn for_gguf_pre(pre: &str) -> Result<(Self, bool)> {
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
    pub(super) fn split(&self, text: &str) -> Vec<(usize, usize)> {
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
pub(super) fn byte_level_alphabet() -> [char; 256] {
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

pub(super) fn byte_level_alphabet_cached() -> &'static [char; 256] {
    static ALPHABET: std::sync::OnceLock<[char; 256]> = std::sync::OnceLock::new();
    ALPHABET.get_or_init(byte_level_alphabet)
}
