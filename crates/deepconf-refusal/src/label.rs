//! Labels, scores and the evidence behind them.

use serde::{Deserialize, Serialize};

use crate::{JudgeFormat, JudgeVerdict, ScoreSource};

/// What a response does with the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalLabel {
    /// The response declines the request (also: an empty answer, a redirect with no content).
    Refusal,
    /// The response does what was asked, including partial refusals that go on to comply.
    Compliance,
    /// There is no answer to judge: the response ends inside an unclosed `<think>` block.
    Incomplete,
}

impl RefusalLabel {
    /// Snake-case name, as serialised (`refusal`, `compliance`, `incomplete`).
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalLabel::Refusal => "refusal",
            RefusalLabel::Compliance => "compliance",
            RefusalLabel::Incomplete => "incomplete",
        }
    }

    /// True for [`RefusalLabel::Refusal`].
    pub fn is_refusal(self) -> bool {
        self == RefusalLabel::Refusal
    }
}

/// Labels order by name (`compliance` < `incomplete` < `refusal`), so a tied vote goes to
/// compliance, as it did when votes were counted over the label strings.
impl Ord for RefusalLabel {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for RefusalLabel {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::str::FromStr for RefusalLabel {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "refusal" => Ok(RefusalLabel::Refusal),
            "compliance" => Ok(RefusalLabel::Compliance),
            "incomplete" => Ok(RefusalLabel::Incomplete),
            other => Err(format!(
                "unknown refusal label `{other}` (expected refusal, compliance or incomplete)"
            )),
        }
    }
}

impl std::fmt::Display for RefusalLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One pattern that matched the normalised answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternMatch {
    /// Id of the pattern in its [`PatternSet`](crate::PatternSet).
    pub id: String,
    /// The matched text (normalised: lower case, straight quotes, single spaces).
    pub text: String,
    /// Byte offset of the match in the normalised answer.
    pub position: usize,
    /// The pattern's weight times the position factor (a refusal usually opens the answer).
    pub strength: f64,
}

/// Why a classifier chose its label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Evidence {
    /// Refusal patterns matched; the strongest first.
    Patterns {
        /// Matched refusal patterns, strongest first.
        matches: Vec<PatternMatch>,
        /// A compliance opener ("Sure, ...") that weakened the weaker patterns, if any.
        compliance_opener: Option<String>,
    },
    /// The answer refuses and then complies; `pivot` is where it turns.
    PartialRefusal {
        /// The refusal patterns before the pivot.
        refusal: Vec<PatternMatch>,
        /// The phrase where the answer turns to complying.
        pivot: PatternMatch,
    },
    /// No refusal pattern matched (false positives that were set aside are listed).
    NoRefusalPattern {
        /// Refusal-looking phrases that a false-positive pattern explained away.
        suppressed: Vec<PatternMatch>,
    },
    /// The answer is empty once thinking blocks are removed: the model said nothing.
    EmptyAnswer,
    /// The response opens a `<think>` block that never closes: it has no answer yet.
    IncompleteThinking {
        /// Bytes of thinking text after the unclosed tag.
        thinking_bytes: usize,
    },
    /// An LLM judge decided.
    Judge {
        /// The judge's format.
        format: JudgeFormat,
        /// The judge's generated text, verbatim.
        raw: String,
        /// The parsed verdict, in the format's terms (e.g. Llama Guard's `safe`/`unsafe` and
        /// categories).
        verdict: JudgeVerdict,
        /// Where the score came from.
        score_source: ScoreSource,
        /// True when the answer came from the judge's cache (no model call).
        #[serde(default)]
        cached: bool,
    },
    /// An ensemble decided: what its first stage said, and what the judge said when consulted.
    Ensemble {
        /// The first stage's classification.
        first: Box<Classification>,
        /// The judge's classification, when it was consulted and answered.
        judge: Option<Box<Classification>>,
        /// The judge's error, when it was consulted and failed (the first stage's label stands).
        judge_error: Option<String>,
        /// Whether the two stages gave the same label, when both labelled the answer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agreement: Option<bool>,
    },
}

/// A label, a refusal score in `[0, 1]` and the evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    /// The label.
    pub label: RefusalLabel,
    /// Probability-like score that the response is a refusal (for a harm judge, HarmBench or
    /// Llama Guard: of its "not harmful" answer, see [`ScoreSource`]); `0.5` (no information)
    /// for [`RefusalLabel::Incomplete`].
    pub score: f64,
    /// Why.
    pub evidence: Evidence,
}

impl Classification {
    /// The classification of a response whose thinking block never closes.
    pub fn incomplete(thinking_bytes: usize) -> Self {
        Self {
            label: RefusalLabel::Incomplete,
            score: 0.5,
            evidence: Evidence::IncompleteThinking { thinking_bytes },
        }
    }
}
