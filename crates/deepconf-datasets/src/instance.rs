//! The one instance type every benchmark loads into, and the names of benchmarks, splits and formats.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use deepconf_core::{ChatMessage, Role};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Where an instance came from: the file and its 1-based data row (the header is not a row).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceRow {
    /// The file the row was read from, as given to the loader.
    pub file: String,
    /// 1-based data row.
    pub row: usize,
}

/// One benchmark item, whatever the benchmark.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Identifier: the dataset's own id when it has one, otherwise `{file stem}-{row}`.
    pub id: String,
    /// The prompt as chat messages (one user message for every built-in benchmark).
    pub messages: Vec<ChatMessage>,
    /// Gold harmfulness of the prompt; `None` when the dataset leaves it unlabeled.
    pub harmful: Option<bool>,
    /// The dataset's own response to the prompt (ToxicChat `model_output`, WildGuardMix `response`).
    pub reference_response: Option<String>,
    /// Whether [`reference_response`](Self::reference_response) is a refusal (WildGuardMix only).
    pub reference_refusal: Option<bool>,
    /// Whether [`reference_response`](Self::reference_response) is harmful (WildGuardMix only).
    pub reference_response_harmful: Option<bool>,
    /// Annotator agreement on the gold label, as the dataset reports it (WildGuardMix test:
    /// number of annotators out of three who agreed, e.g. `2.0` or `3.0`).
    pub label_agreement: Option<f32>,
    /// Category: HarmBench functional category, WildGuardMix `subcategory`, XSTest `type`,
    /// StrongREJECT `category`, over-refusal probes `category`.
    pub category: Option<String>,
    /// Finer category: HarmBench semantic category, XSTest `focus`, StrongREJECT `source` (where the
    /// prompt was collected, e.g. `AdvBench`), over-refusal probes `expected_topic`.
    pub subcategory: Option<String>,
    /// Whether the prompt is adversarial (WildGuardMix `adversarial`, ToxicChat `jailbreaking`).
    pub adversarial: Option<bool>,
    /// The row this instance was read from.
    pub source: SourceRow,
    /// The dataset the instance belongs to: the benchmark's name for a single load
    /// (e.g. `strongreject`), the source name given to [`Dataset::mix`](crate::Dataset::mix) in a
    /// mixture. `None` in instances built by hand or serialised before the field existed.
    #[serde(default)]
    pub dataset: Option<String>,
}

impl Instance {
    /// An instance with one user message and a gold label, every other field empty; its source
    /// row is `inline`, row 1. For prompts built in code (tests, examples).
    pub fn user(id: impl Into<String>, prompt: impl Into<String>, harmful: Option<bool>) -> Self {
        Self {
            id: id.into(),
            messages: vec![ChatMessage::user(prompt)],
            harmful,
            reference_response: None,
            reference_refusal: None,
            reference_response_harmful: None,
            label_agreement: None,
            category: None,
            subcategory: None,
            adversarial: None,
            source: SourceRow {
                file: "inline".to_owned(),
                row: 1,
            },
            dataset: None,
        }
    }

    /// The text of the last user message (empty when there is none).
    pub fn user_prompt(&self) -> &str {
        self.messages
            .iter()
            .rev()
            .find(|message| message.role == Role::User)
            .map_or("", |message| message.content.as_str())
    }
}

/// The benchmarks this crate knows, plus `generic` for any file of prompts with a column mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Benchmark {
    /// ToxicChat (`lmsys/toxic-chat`): real user prompts, gold `toxicity`.
    #[serde(rename = "toxicchat")]
    ToxicChat,
    /// WildGuardMix (`allenai/wildguardmix`): prompts, responses, harm and refusal labels.
    #[serde(rename = "wildguardmix")]
    WildGuardMix,
    /// HarmBench behaviours (official CSV or the walledai parquet mirror); all harmful.
    #[serde(rename = "harmbench")]
    HarmBench,
    /// XSTest: safe prompts that look unsafe, plus unsafe contrasts.
    #[serde(rename = "xstest")]
    XsTest,
    /// StrongREJECT's 313 forbidden prompts (`category,source,forbidden_prompt`); all harmful.
    #[serde(rename = "strongreject")]
    StrongReject,
    /// Benign prompts that look sensitive (medical, security, chemistry, legal, controversial),
    /// a JSON list of `{"text", "category", "expected_topic", "id"}`; all benign, so a refusal is an
    /// over-refusal.
    #[serde(rename = "overrefusal")]
    OverRefusal,
    /// Any JSONL/CSV/parquet file of prompts read through a [`ColumnMapping`](crate::ColumnMapping).
    Generic,
}

impl Benchmark {
    /// All benchmarks.
    pub const ALL: [Benchmark; 7] = [
        Benchmark::ToxicChat,
        Benchmark::WildGuardMix,
        Benchmark::HarmBench,
        Benchmark::XsTest,
        Benchmark::StrongReject,
        Benchmark::OverRefusal,
        Benchmark::Generic,
    ];

    /// The lowercase name used on command lines, in JSON and as the data sub-directory.
    pub fn name(self) -> &'static str {
        match self {
            Benchmark::ToxicChat => "toxicchat",
            Benchmark::WildGuardMix => "wildguardmix",
            Benchmark::HarmBench => "harmbench",
            Benchmark::XsTest => "xstest",
            Benchmark::StrongReject => "strongreject",
            Benchmark::OverRefusal => "overrefusal",
            Benchmark::Generic => "generic",
        }
    }
}

impl fmt::Display for Benchmark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Benchmark {
    type Err = Error;

    /// Accepts the names of [`Benchmark::name`] and `jsonl`, `csv`, `parquet` for [`Benchmark::Generic`].
    fn from_str(text: &str) -> Result<Self> {
        let lowered = text.trim().to_ascii_lowercase();
        match lowered.as_str() {
            "jsonl" | "csv" | "parquet" => return Ok(Benchmark::Generic),
            _ => {}
        }
        Benchmark::ALL
            .into_iter()
            .find(|benchmark| benchmark.name() == lowered)
            .ok_or_else(|| Error::InvalidSpec {
                parameter: "benchmark",
                reason: format!(
                    "unknown benchmark {text:?} (expected toxicchat, wildguardmix, harmbench, xstest, strongreject, overrefusal, generic or jsonl)"
                ),
            })
    }
}

/// Dataset split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Training split.
    Train,
    /// Validation split (HarmBench `val`).
    Validation,
    /// Test split.
    #[default]
    Test,
}

impl Split {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

impl FromStr for Split {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "validation" | "val" | "dev" => Ok(Split::Validation),
            "test" => Ok(Split::Test),
            _ => Err(Error::InvalidSpec {
                parameter: "split",
                reason: format!("unknown split {text:?} (expected train, validation or test)"),
            }),
        }
    }
}

/// On-disk format of a data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// Comma-separated values with a header row (quoted multi-line fields allowed).
    Csv,
    /// Apache Parquet.
    Parquet,
    /// One JSON object per line, or (when the file starts with `[`) one JSON array of objects.
    Jsonl,
}

impl FileFormat {
    /// The format implied by a file's extension (`.csv`, `.parquet`/`.pq`, `.jsonl`/`.ndjson`/`.json`).
    /// [`FileFormat::Jsonl`] also reads a file that holds one JSON array of objects.
    pub fn from_path(path: &Path) -> Result<Self> {
        let extension = path
            .extension()
            .and_then(|extension| extension.to_str())
            .map(str::to_ascii_lowercase);
        match extension.as_deref() {
            Some("csv") => Ok(FileFormat::Csv),
            Some("parquet" | "pq") => Ok(FileFormat::Parquet),
            Some("jsonl" | "ndjson" | "json") => Ok(FileFormat::Jsonl),
            _ => Err(Error::UnsupportedFormat {
                path: path.to_path_buf(),
                reason: "cannot tell the format from the extension (expected .csv, .parquet or .jsonl); \
                         set the format explicitly"
                    .to_owned(),
            }),
        }
    }
}
