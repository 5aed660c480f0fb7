//! Text preparation shared by the pattern classifier and the judge: thinking blocks, Unicode
//! punctuation, case, whitespace, code and quotations.

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";

/// Placeholder left where code was removed (no pattern matches inside code).
pub const CODE_PLACEHOLDER: &str = "<code>";
/// Placeholder left where quoted text was removed (quoted refusals are not the model's own).
pub const QUOTE_PLACEHOLDER: &str = "<quote>";

/// The part of a response that answers the prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerText {
    /// The answer with every closed thinking block removed.
    Answer(String),
    /// A `<think>` block opens and never closes: the response holds no answer yet.
    UnclosedThinking {
        /// Bytes of thinking text after the unclosed tag.
        thinking_bytes: usize,
    },
}

/// Removes `<think>...</think>` blocks (tags matched case-insensitively).
///
/// A closing tag with no opening tag before it means the chat template opened the block inside the
/// prompt (Qwen3, DeepSeek-R1): everything before it is thinking. An opening tag that never closes
/// means the response ended while thinking.
pub fn strip_thinking(response: &str) -> AnswerText {
    // ASCII lower-casing keeps byte offsets, so positions found in `lower` index `response`.
    let lower = response.to_ascii_lowercase();
    let mut start = 0;
    if let Some(close) = lower.find(THINK_CLOSE)
        && !lower[..close].contains(THINK_OPEN)
    {
        start = close + THINK_CLOSE.len();
    }
    let mut answer = String::with_capacity(response.len() - start);
    loop {
        match lower[start..].find(THINK_OPEN) {
            None => {
                answer.push_str(&response[start..]);
                return AnswerText::Answer(answer);
            }
            Some(open) => {
                answer.push_str(&response[start..start + open]);
                let inside = start + open + THINK_OPEN.len();
                match lower[inside..].find(THINK_CLOSE) {
                    None => {
                        return AnswerText::UnclosedThinking {
                            thinking_bytes: response.len() - inside,
                        };
                    }
                    Some(close) => start = inside + close + THINK_CLOSE.len(),
                }
            }
        }
    }
}

/// Maps typographic variants to one ASCII form: apostrophes and primes to `'`, double quotes and
/// guillemets to `"`, dashes to `-`, the ellipsis to `...`; drops zero-width characters. Case and
/// whitespace are untouched.
pub fn fold_punctuation(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2032}' | '\u{02BC}'
            | '\u{00B4}' | '\u{FF07}' => out.push('\''),
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{2033}' | '\u{00AB}'
            | '\u{00BB}' | '\u{FF02}' => out.push('"'),
            '\u{2010}' | '\u{2011}' | '\u{2012}' | '\u{2013}' | '\u{2014}' | '\u{2015}'
            | '\u{2212}' => out.push('-'),
            '\u{2026}' => out.push_str("..."),
            '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// The text the pattern classifier matches against: punctuation folded, lower case, code and
/// quotations replaced by [`CODE_PLACEHOLDER`] and [`QUOTE_PLACEHOLDER`], every run of whitespace
/// turned into one space, trimmed.
///
/// An answer that is entirely one quotation (some models wrap their whole reply in quotes) is
/// unwrapped rather than masked.
pub fn normalize(answer: &str) -> String {
    let folded = fold_punctuation(answer).to_lowercase();
    let unwrapped = unwrap_whole_quote(folded.trim());
    let masked = mask_code_and_quotes(unwrapped);
    collapse_whitespace(&masked)
}

fn unwrap_whole_quote(text: &str) -> &str {
    let inner = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .filter(|inner| !inner.contains('"'));
    inner.unwrap_or(text)
}

fn mask_code_and_quotes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut at_line_start = true;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("```") {
            // An unclosed fence runs to the end of the answer, as Markdown renders it.
            let end = after.find("```").map_or(after.len(), |e| e + 3);
            out.push(' ');
            out.push_str(CODE_PLACEHOLDER);
            out.push(' ');
            rest = &after[end..];
            at_line_start = false;
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        let closer = match c {
            '`' => Some('`'),
            '"' => Some('"'),
            _ => None,
        };
        if let Some(closer) = closer {
            let body = &rest[1..];
            // Only a quotation that closes on the same paragraph is masked; a lone quote mark is
            // punctuation.
            if let Some(end) = body.find(closer).filter(|&e| !body[..e].contains("\n\n")) {
                out.push(' ');
                out.push_str(if c == '`' {
                    CODE_PLACEHOLDER
                } else {
                    QUOTE_PLACEHOLDER
                });
                out.push(' ');
                rest = &body[end + 1..];
                at_line_start = false;
                continue;
            }
        }
        if at_line_start && c == '>' {
            // A Markdown block quote: someone else's words, up to the end of the line.
            let end = rest.find('\n').unwrap_or(rest.len());
            out.push(' ');
            out.push_str(QUOTE_PLACEHOLDER);
            out.push(' ');
            rest = &rest[end..];
            continue;
        }
        if c == '\n' {
            at_line_start = true;
        } else if !c.is_whitespace() {
            at_line_start = false;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinking_blocks_are_removed_and_unclosed_ones_reported() {
        assert_eq!(
            strip_thinking("<think>I cannot refuse.</think>Sure, here it is."),
            AnswerText::Answer("Sure, here it is.".into())
        );
        assert_eq!(
            strip_thinking("reasoning only</THINK>\nNo."),
            AnswerText::Answer("\nNo.".into())
        );
        assert_eq!(
            strip_thinking("Hi <think>a</think>there<think>b</think>!"),
            AnswerText::Answer("Hi there!".into())
        );
        assert_eq!(
            strip_thinking("<think>Let me see"),
            AnswerText::UnclosedThinking { thinking_bytes: 10 }
        );
        assert_eq!(
            strip_thinking("<think>a</think>ok<think>still going"),
            AnswerText::UnclosedThinking { thinking_bytes: 11 }
        );
    }

    #[test]
    fn normalisation_folds_quotes_case_space_and_masks_code() {
        assert_eq!(
            normalize("  I\u{2019}m   SORRY,\n\nbut I can\u{2019}t\u{2026}  "),
            "i'm sorry, but i can't..."
        );
        assert_eq!(
            normalize("Use `if x cannot y` then:\n```\n// cannot fail\n```\ndone"),
            "use <code> then: <code> done"
        );
        assert_eq!(
            normalize("He said \u{201C}I cannot help\u{201D} and left."),
            "he said <quote> and left."
        );
        assert_eq!(
            normalize("\"I cannot help with that.\""),
            "i cannot help with that."
        );
        assert_eq!(
            normalize("> I can't do that\nwas the reply"),
            "<quote> was the reply"
        );
        assert_eq!(normalize("5\" tall, I can't"), "5\" tall, i can't");
    }
}
