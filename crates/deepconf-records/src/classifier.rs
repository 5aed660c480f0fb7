//! What `run.json` records about the refusal classifier that labelled a run's traces.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use deepconf_refusal::{JudgeFormat, NotHarmfulReading};

/// Which kind of classifier labelled the traces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassifierKind {
    /// The normalising pattern classifier (no model).
    Patterns,
    /// An LLM judge of its own.
    Judge,
    /// Patterns first, the judge when the pattern score is uncertain (or always).
    Ensemble,
}

impl ClassifierKind {
    /// `patterns`, `judge` or `ensemble`.
    pub fn name(self) -> &'static str {
        match self {
            ClassifierKind::Patterns => "patterns",
            ClassifierKind::Judge => "judge",
            ClassifierKind::Ensemble => "ensemble",
        }
    }
}

/// The refusal classifier of a run (`run.json`'s `classifier`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassifierInfo {
    // Fields in alphabetical order: run.json keeps the key order of the untyped record it replaced.
    /// Extra pattern file added to the default patterns, if any (patterns and ensemble).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_patterns: Option<String>,
    /// The judge (judge and ensemble).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeInfo>,
    /// Whether the ensemble consults its judge on every trace, not only uncertain ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_all: Option<bool>,
    /// Its kind.
    pub kind: ClassifierKind,
    /// The classifier's own name (e.g. `patterns`, `wildguard-judge(...)`).
    pub name: String,
}

impl ClassifierInfo {
    /// A classifier without a judge.
    pub fn patterns(name: impl Into<String>, extra_patterns: Option<String>) -> Self {
        ClassifierInfo {
            name: name.into(),
            kind: ClassifierKind::Patterns,
            extra_patterns,
            judge: None,
            judge_all: None,
        }
    }

    /// The fields that identify the classifier's answers: those that may change between a run
    /// and its resumption (where the judge was found, where its answers are cached) are cleared.
    pub fn identifying(&self) -> ClassifierInfo {
        let mut info = self.clone();
        if let Some(judge) = info.judge.as_mut() {
            judge.source.clear();
            judge.cache = None;
        }
        info
    }
}

/// What `run.json` records about a judge (under `classifier.judge`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeInfo {
    // Fields in alphabetical order, as in the untyped record this replaced.
    /// `candle` or `openai`.
    pub backend: String,
    /// The answer cache file, if any (may change on resume).
    pub cache: Option<PathBuf>,
    /// The format, e.g. `wildguard`.
    pub format: JudgeFormat,
    /// The judge model's name in the judge's identity: the served name, or the file name with
    /// its checksum.
    pub model: String,
    /// What a "not harmful" answer becomes.
    pub not_harmful: NotHarmfulReading,
    /// SHA-256 of the model file (candle, a single file).
    pub sha256: Option<String>,
    /// Where it was found: the file, or the base URLs (may change on resume).
    pub source: String,
}
