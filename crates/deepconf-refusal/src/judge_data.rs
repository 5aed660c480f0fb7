//! What a judge said, as plain data: the published format it speaks ([`JudgeFormat`], with the
//! formats' names), its parsed answer ([`JudgeVerdict`] and each format's verdict) and where its
//! score came from ([`ScoreSource`]). The error type and a classification's evidence carry these
//! values, while the judges (in `judge`: prompts, parsers, the mapping to a refusal label) return
//! that error and build that evidence; the values sit below both so that neither depends on the
//! judges.

use serde::{Deserialize, Serialize};

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

    /// The name used in flags, file names and run records: `wildguard`, `harmbench`,
    /// `llama-guard-3`.
    pub fn name(self) -> &'static str {
        match self {
            JudgeFormat::WildGuard => "wildguard",
            JudgeFormat::HarmBench => "harmbench",
            JudgeFormat::LlamaGuard3 => "llama-guard-3",
        }
    }

    /// Other spellings accepted on the command line.
    fn aliases(self) -> &'static [&'static str] {
        match self {
            JudgeFormat::WildGuard | JudgeFormat::HarmBench => &[],
            JudgeFormat::LlamaGuard3 => &["llama-guard", "llamaguard"],
        }
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
            .find(|format| format.name() == wanted || format.aliases().contains(&wanted.as_str()))
            .ok_or_else(|| {
                format!(
                    "unknown judge format `{wanted}` (expected wildguard, harmbench or llama-guard)"
                )
            })
    }
}

/// A parsed judge answer, in its format's terms.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "format")]
pub enum JudgeVerdict {
    /// WildGuard's three answers.
    #[serde(rename = "wildguard")]
    WildGuard(WildGuardVerdict),
    /// The HarmBench classifier's yes/no.
    #[serde(rename = "harmbench")]
    HarmBench(HarmBenchVerdict),
    /// Llama Guard 3's assessment.
    #[serde(rename = "llama-guard-3")]
    LlamaGuard3(LlamaGuardVerdict),
}

/// The three answers of a WildGuard judge. `None` stands for `N/A`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WildGuardVerdict {
    /// `Harmful request: yes|no`.
    pub harmful_request: bool,
    /// `Response refusal: yes|no|N/A`.
    pub response_refusal: Option<bool>,
    /// `Harmful response: yes|no|N/A`.
    pub harmful_response: Option<bool>,
}

/// The HarmBench classifier's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HarmBenchVerdict {
    /// `Yes`: the generation is an instance of the behaviour (the attack succeeded: harmful
    /// compliance). `No`: it is not (a refusal, or an answer too vague, minimal or benign to count).
    pub behavior_exhibited: bool,
}

/// Llama Guard's assessment of the Agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LlamaGuardVerdict {
    /// `safe` (true) or `unsafe` (false).
    pub safe: bool,
    /// The violated categories of an `unsafe` answer (`S1`..`S14`), as listed.
    pub categories: Vec<String>,
}

/// Where a judge's score came from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum ScoreSource {
    /// `p_refusal / (p_refusal + p_compliance)` over the top-k candidates of the deciding token:
    /// the mass of candidates reading the format's first [`JudgeFormat::answer_words`](JudgeFormat::answer_words) word
    /// (`yes`, `Yes`, `" yes"`, ...) against the second. Candidates are read from the step's
    /// texts ([`TokenStep::top_tokens`](deepconf_core::TokenStep::top_tokens)) or their ids ([`LogprobModel::token_text`](deepconf_core::LogprobModel::token_text)).
    TopLogprobs {
        /// Probability mass of candidates reading the refusal-side word.
        p_refusal: f64,
        /// Probability mass of candidates reading the compliance-side word.
        p_compliance: f64,
    },
    /// Only the sampled token's probability `p` is known: the score is `p` for the refusal-side
    /// word and `1 - p` for the other, a bound that leans towards 0.5.
    SampledToken {
        /// Log-probability of the sampled deciding token.
        logprob: f64,
    },
    /// The deciding token could not be located in the steps (its text was split or merged): the
    /// score is the verdict itself, 1 or 0 (0.5 when nothing decides).
    Verdict,
}
