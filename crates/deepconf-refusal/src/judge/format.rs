//! Which published judge format a judge speaks; each format's facts live in its own file.

use serde::{Deserialize, Serialize};

use super::verdict::ParsedAnswer;
use super::{JudgeVerdict, harmbench, llama_guard, wildguard};
use crate::Result;

/// The facts of one published judge format, declared in the format's own file.
pub(crate) struct FormatFacts {
    pub name: &'static str,
    /// Other spellings accepted on the command line.
    pub aliases: &'static [&'static str],
    pub reference_model: &'static str,
    pub default_max_tokens: usize,
    /// The "no harmful compliance" word, then the compliance word.
    pub answer_words: (&'static str, &'static str),
    pub judges_refusal: bool,
    pub prompt: fn(&str, &str) -> String,
    pub parsed_answer: fn(&str) -> Result<ParsedAnswer>,
}

/// A published judge format: its prompt, its answer vocabulary and how an answer maps to a
/// refusal label. `docs/judges.md` gives the sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JudgeFormat {
    /// WildGuard (`allenai/wildguard`): three lines, `Harmful request`, `Response refusal` and
    /// `Harmful response`; the refusal line gives the label.
    #[serde(rename = "wildguard")]
    WildGuard,
    /// The HarmBench classifier (`cais/HarmBench-Llama-2-13b-cls`): `Yes` when the generation is
    /// an instance of the harmful behaviour (compliance), `No` otherwise.
    #[serde(rename = "harmbench")]
    HarmBench,
    /// Llama Guard 3 (`meta-llama/Llama-Guard-3-8B`): `safe`, or `unsafe` and the violated
    /// categories `S1`..`S14`, about the Agent's answer.
    #[serde(rename = "llama-guard-3")]
    LlamaGuard3,
}

impl JudgeFormat {
    /// Every format.
    pub const ALL: [JudgeFormat; 3] = [
        JudgeFormat::WildGuard,
        JudgeFormat::HarmBench,
        JudgeFormat::LlamaGuard3,
    ];

    fn facts(self) -> &'static FormatFacts {
        match self {
            JudgeFormat::WildGuard => &wildguard::FACTS,
            JudgeFormat::HarmBench => &harmbench::FACTS,
            JudgeFormat::LlamaGuard3 => &llama_guard::FACTS,
        }
    }

    /// The name used in flags, file names and run records: `wildguard`, `harmbench`,
    /// `llama-guard-3`.
    pub fn name(self) -> &'static str {
        self.facts().name
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
    /// that its "not harmful" verdict needs a [`NotHarmfulReading`](super::NotHarmfulReading).
    pub fn judges_refusal(self) -> bool {
        self.facts().judges_refusal
    }

    pub(crate) fn parsed_answer(self, raw: &str) -> Result<ParsedAnswer> {
        (self.facts().parsed_answer)(raw)
    }
}

impl std::fmt::Display for JudgeFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for JudgeFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let wanted = s.to_ascii_lowercase();
        JudgeFormat::ALL
            .into_iter()
            .find(|format| {
                let facts = format.facts();
                facts.name == wanted || facts.aliases.contains(&wanted.as_str())
            })
            .ok_or_else(|| {
                format!(
                    "unknown judge format `{wanted}` (expected wildguard, harmbench or llama-guard)"
                )
            })
    }
}
