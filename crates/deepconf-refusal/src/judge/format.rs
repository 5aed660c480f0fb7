//! What each published judge format does: its prompt, its parser and the words that decide its
//! answer. Each format's facts live in its own file; the [`JudgeFormat`] enum itself, with the
//! formats' names, is plain data in `judge_data`, below the error type that names it.

use super::verdict::ParsedAnswer;
use super::{harmbench, llama_guard, wildguard};
use crate::{JudgeFormat, JudgeVerdict, Result};

/// The facts of one published judge format, declared in the format's own file.
pub(crate) struct FormatFacts {
    pub reference_model: &'static str,
    pub default_max_tokens: usize,
    /// The "no harmful compliance" word, then the compliance word.
    pub answer_words: (&'static str, &'static str),
    pub judges_refusal: bool,
    pub prompt: fn(&str, &str) -> String,
    pub parsed_answer: fn(&str) -> Result<ParsedAnswer>,
}

impl JudgeFormat {
    fn facts(self) -> &'static FormatFacts {
        match self {
            JudgeFormat::WildGuard => &wildguard::FACTS,
            JudgeFormat::HarmBench => &harmbench::FACTS,
            JudgeFormat::LlamaGuard3 => &llama_guard::FACTS,
        }
    }

    /// The model the format was published with (a Hugging Face id).
    pub fn reference_model(self) -> &'static str {
        self.facts().reference_model
    }

    /// The judge's input for one exchange, verbatim (the backend adds the BOS token).
    pub fn prompt(self, prompt: &str, response: &str) -> String {
        (self.facts().prompt)(prompt, response)
    }

    /// New tokens a judge of this format generates: WildGuard's three lines fit in 32, HarmBench
    /// reads one token (as its evaluation does), Llama Guard's category line fits in 64.
    pub fn default_max_tokens(self) -> usize {
        self.facts().default_max_tokens
    }

    /// Parses an answer; an answer outside the format is an [`Error::JudgeParse`](crate::Error::JudgeParse).
    pub fn parse(self, raw: &str) -> Result<JudgeVerdict> {
        self.parsed_answer(raw).map(|p| p.verdict)
    }

    /// The two words that decide the label: the one read as "no harmful compliance" (WildGuard
    /// `yes` to refusal, HarmBench `no`, Llama Guard `safe`) and the one read as compliance.
    pub fn answer_words(self) -> (&'static str, &'static str) {
        self.facts().answer_words
    }

    /// True when the format judges refusal itself (WildGuard); false when it judges harm only, so
    /// that its "not harmful" verdict needs a [`NotHarmfulReading`](crate::NotHarmfulReading).
    pub fn judges_refusal(self) -> bool {
        self.facts().judges_refusal
    }

    pub(crate) fn parsed_answer(self, raw: &str) -> Result<ParsedAnswer> {
        (self.facts().parsed_answer)(raw)
    }
}
