//! One function per benchmark schema: reads columns by name from a [`DataFile`] and builds
//! [`Instance`]s.

use std::path::Path;

use deepconf_core::ChatMessage;
use serde::{Deserialize, Serialize};

use crate::table::{DataFile, RowView, Table};
use crate::{Error, Instance, Result, SourceRow};

/// Separator between a HarmBench contextual behaviour's context and its request, as in HarmBench.
pub const HARMBENCH_CONTEXT_SEPARATOR: &str = "\n\n---\n\n";

/// The rows a loader read, before they become a [`Dataset`](crate::Dataset).
pub(crate) struct Loaded {
    pub(crate) instances: Vec<Instance>,
    pub(crate) table: Table,
}

fn base_instance(
    table: &Table,
    row: &RowView<'_>,
    id: String,
    messages: Vec<ChatMessage>,
) -> Instance {
    Instance {
        id,
        messages,
        harmful: None,
        reference_response: None,
        reference_refusal: None,
        reference_response_harmful: None,
        label_agreement: None,
        category: None,
        subcategory: None,
        adversarial: None,
        source: SourceRow {
            file: table.path().display().to_string(),
            row: row.row_number(),
        },
        dataset: None,
    }
}

/// `{file stem}-{row}`: a stable id for datasets without an id column.
fn row_id(path: &Path, row: &RowView<'_>) -> String {
    let stem = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or("row");
    format!("{stem}-{}", row.row_number())
}

fn build(
    table: Table,
    mut make: impl FnMut(&Table, RowView<'_>) -> Result<Instance>,
) -> Result<Loaded> {
    let instances = table
        .rows()
        .map(|row| make(&table, row))
        .collect::<Result<Vec<_>>>()?;
    Ok(Loaded { instances, table })
}

const HARM_LABELS: [(&str, bool); 2] = [("harmful", true), ("unharmful", false)];
const REFUSAL_LABELS: [(&str, bool); 2] = [("refusal", true), ("compliance", false)];

/// ToxicChat (CSV or its parquet conversion): gold is `toxicity == 1`.
pub(crate) fn toxicchat(file: DataFile, limit: Option<usize>) -> Result<Loaded> {
    let table = file.read(
        &["conv_id", "user_input", "toxicity"],
        &["model_output", "jailbreaking", "human_annotation"],
        limit,
    )?;
    build(table, |table, row| {
        let id = row
            .identifier("conv_id")?
            .unwrap_or_else(|| row_id(table.path(), &row));
        let mut instance = base_instance(
            table,
            &row,
            id,
            vec![ChatMessage::user(row.prompt("user_input")?)],
        );
        instance.harmful = row.flag("toxicity")?;
        instance.adversarial = row.flag("jailbreaking")?;
        instance.reference_response = row.text("model_output")?.map(str::to_owned);
        Ok(instance)
    })
}

/// WildGuardMix train or test parquet: gold is `prompt_harm_label == "harmful"`.
pub(crate) fn wildguardmix(file: DataFile, limit: Option<usize>) -> Result<Loaded> {
    let table = file.read(
        &["prompt", "prompt_harm_label"],
        &[
            "adversarial",
            "response",
            "response_refusal_label",
            "response_harm_label",
            "subcategory",
            "prompt_harm_agreement",
            "response_refusal_agreement",
            "response_harm_agreement",
        ],
        limit,
    )?;
    build(table, |table, row| {
        let id = row_id(table.path(), &row);
        let mut instance = base_instance(
            table,
            &row,
            id,
            vec![ChatMessage::user(row.prompt("prompt")?)],
        );
        instance.harmful = row.vocabulary("prompt_harm_label", &HARM_LABELS)?;
        instance.adversarial = row.flag("adversarial")?;
        instance.reference_response = row.text("response")?.map(str::to_owned);
        instance.reference_refusal = row.vocabulary("response_refusal_label", &REFUSAL_LABELS)?;
        instance.reference_response_harmful =
            row.vocabulary("response_harm_label", &HARM_LABELS)?;
        instance.category = row.trimmed_text("subcategory")?;
        instance.label_agreement = row
            .number("prompt_harm_agreement")?
            .map(|value| value as f32);
        // Validated so that a malformed file fails loudly, even though only the prompt agreement is kept.
        row.number("response_refusal_agreement")?;
        row.number("response_harm_agreement")?;
        Ok(instance)
    })
}

/// HarmBench functional categories (the walledai mirror's configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HarmBenchConfig {
    /// Plain behaviours.
    Standard,
    /// Behaviours with a context string.
    Contextual,
    /// Copyright behaviours (reproduce a book or lyrics).
    Copyright,
}

impl HarmBenchConfig {
    /// All configs.
    pub const ALL: [HarmBenchConfig; 3] = [
        HarmBenchConfig::Standard,
        HarmBenchConfig::Contextual,
        HarmBenchConfig::Copyright,
    ];

    /// Lowercase name (the value of `FunctionalCategory` in the official CSV).
    pub fn name(self) -> &'static str {
        match self {
            HarmBenchConfig::Standard => "standard",
            HarmBenchConfig::Contextual => "contextual",
            HarmBenchConfig::Copyright => "copyright",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|config| config.name() == text.trim())
    }

    /// The config named by a path component (`contextual/train-00000-of-00001.parquet`).
    fn from_path(path: &Path) -> Option<Self> {
        path.iter()
            .rev()
            .filter_map(|component| component.to_str())
            .find_map(|component| {
                Self::ALL
                    .into_iter()
                    .find(|config| component.contains(config.name()))
            })
    }
}

fn harmbench_prompt(context: Option<&str>, behavior: String) -> String {
    match context {
        Some(context) if !context.trim().is_empty() => {
            format!("{context}{HARMBENCH_CONTEXT_SEPARATOR}{behavior}")
        }
        _ => behavior,
    }
}

/// HarmBench: the official CSV (`Behavior`, `FunctionalCategory`, ...) or the walledai parquet
/// (`prompt`, `category`, `context`), told apart by their columns. Every behaviour is harmful.
pub(crate) fn harmbench(
    file: DataFile,
    config: Option<HarmBenchConfig>,
    limit: Option<usize>,
) -> Result<Loaded> {
    if file.has_column("Behavior") || !file.has_column("prompt") {
        return harmbench_official(file, limit);
    }
    let config = config.or_else(|| HarmBenchConfig::from_path(file.path()));
    let table = file.read(&["prompt"], &["category", "context"], limit)?;
    let config = config.or_else(|| {
        table
            .has_column("context")
            .then_some(HarmBenchConfig::Contextual)
    });
    let stem_config = config.map_or("harmbench", HarmBenchConfig::name);
    build(table, |table, row| {
        let prompt = harmbench_prompt(row.text("context")?, row.prompt("prompt")?);
        let id = format!("harmbench-{stem_config}-{}", row.row_number());
        let mut instance = base_instance(table, &row, id, vec![ChatMessage::user(prompt)]);
        instance.harmful = Some(true);
        instance.category = config.map(|config| config.name().to_owned());
        instance.subcategory = row.trimmed_text("category")?;
        Ok(instance)
    })
}

fn harmbench_official(file: DataFile, limit: Option<usize>) -> Result<Loaded> {
    let table = file.read(
        &["Behavior", "FunctionalCategory", "BehaviorID"],
        &["SemanticCategory", "ContextString", "Tags"],
        limit,
    )?;
    let vocabulary = HarmBenchConfig::ALL.map(|config| (config.name(), config));
    build(table, |table, row| {
        let functional = row.vocabulary("FunctionalCategory", &vocabulary)?;
        let prompt = harmbench_prompt(row.text("ContextString")?, row.prompt("Behavior")?);
        let id = row
            .identifier("BehaviorID")?
            .unwrap_or_else(|| row_id(table.path(), &row));
        let mut instance = base_instance(table, &row, id, vec![ChatMessage::user(prompt)]);
        instance.harmful = Some(true);
        instance.category = functional.map(|config| config.name().to_owned());
        instance.subcategory = row.trimmed_text("SemanticCategory")?;
        Ok(instance)
    })
}

/// XSTest (`id,prompt,type,label,focus,note`): gold is `label == "unsafe"`.
pub(crate) fn xstest(file: DataFile, limit: Option<usize>) -> Result<Loaded> {
    let table = file.read(
        &["prompt", "label"],
        &["id", "type", "focus", "note"],
        limit,
    )?;
    build(table, |table, row| {
        let id = row
            .identifier("id")?
            .unwrap_or_else(|| row_id(table.path(), &row));
        let mut instance = base_instance(
            table,
            &row,
            id,
            vec![ChatMessage::user(row.prompt("prompt")?)],
        );
        instance.harmful = row.vocabulary("label", &[("unsafe", true), ("safe", false)])?;
        instance.category = row.trimmed_text("type")?;
        instance.subcategory = row.trimmed_text("focus")?;
        Ok(instance)
    })
}

/// StrongREJECT (`category,source,forbidden_prompt`): every prompt is harmful. Ids are
/// `strongreject-{row}`: the file has no id column, and its row order is fixed by its checksum.
pub(crate) fn strongreject(file: DataFile, limit: Option<usize>) -> Result<Loaded> {
    let table = file.read(&["category", "source", "forbidden_prompt"], &[], limit)?;
    build(table, |table, row| {
        let id = format!("strongreject-{}", row.row_number());
        let prompt = row.prompt("forbidden_prompt")?;
        let mut instance = base_instance(table, &row, id, vec![ChatMessage::user(prompt)]);
        instance.harmful = Some(true);
        instance.category = Some(required_text(&row, "category")?);
        instance.subcategory = Some(required_text(&row, "source")?);
        Ok(instance)
    })
}

/// Benign over-refusal probes (`{"text", "category", "expected_topic", "id"}`): every prompt is
/// benign, so refusing one is an over-refusal.
pub(crate) fn overrefusal(file: DataFile, limit: Option<usize>) -> Result<Loaded> {
    let table = file.read(&["id", "text", "category"], &["expected_topic"], limit)?;
    build(table, |table, row| {
        let id = row.identifier("id")?.ok_or_else(|| Error::WrongType {
            at: row.at("id"),
            expected: "a non-empty identifier".to_owned(),
            found: "null".to_owned(),
        })?;
        let prompt = row.prompt("text")?;
        let mut instance = base_instance(table, &row, id, vec![ChatMessage::user(prompt)]);
        instance.harmful = Some(false);
        instance.category = Some(required_text(&row, "category")?);
        instance.subcategory = row.trimmed_text("expected_topic")?;
        Ok(instance)
    })
}

/// A text cell that must be present and non-blank (a category the dataset always fills).
fn required_text(row: &RowView<'_>, column: &str) -> Result<String> {
    row.trimmed_text(column)?.ok_or_else(|| Error::WrongType {
        at: row.at(column),
        expected: "non-empty text".to_owned(),
        found: "an empty cell".to_owned(),
    })
}

/// How a generic file's label column maps to harmful / benign. Values match case-insensitively;
/// booleans and integers are matched through their text (`true`, `1`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelMapping {
    /// Values meaning "harmful".
    pub harmful: Vec<String>,
    /// Values meaning "benign".
    pub benign: Vec<String>,
}

impl Default for LabelMapping {
    fn default() -> Self {
        let strings = |values: &[&str]| values.iter().map(|value| (*value).to_owned()).collect();
        Self {
            harmful: strings(&["1", "true", "harmful", "unsafe", "toxic", "yes"]),
            benign: strings(&[
                "0",
                "false",
                "unharmful",
                "benign",
                "safe",
                "non-toxic",
                "no",
            ]),
        }
    }
}

/// Which columns of a generic JSONL/CSV/parquet file hold what. Only `prompt` is required; a column
/// named here must exist in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ColumnMapping {
    /// Prompt column: text, or in JSONL an array of `{"role", "content"}` messages.
    pub prompt: String,
    /// Identifier column; without it ids are `{file stem}-{row}`.
    pub id: Option<String>,
    /// Gold harmfulness column, read through [`labels`](Self::labels).
    pub label: Option<String>,
    /// Values of the label column.
    pub labels: LabelMapping,
    /// Category column.
    pub category: Option<String>,
    /// Subcategory column.
    pub subcategory: Option<String>,
    /// Reference response column.
    pub response: Option<String>,
}

impl Default for ColumnMapping {
    fn default() -> Self {
        Self {
            prompt: "prompt".to_owned(),
            id: None,
            label: None,
            labels: LabelMapping::default(),
            category: None,
            subcategory: None,
            response: None,
        }
    }
}

impl ColumnMapping {
    /// A mapping with the given prompt column and nothing else.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            prompt: prompt.into(),
            ..Self::default()
        }
    }

    /// Sets the id column.
    #[must_use]
    pub fn with_id(mut self, column: impl Into<String>) -> Self {
        self.id = Some(column.into());
        self
    }

    /// Sets the label column.
    #[must_use]
    pub fn with_label(mut self, column: impl Into<String>) -> Self {
        self.label = Some(column.into());
        self
    }

    /// Sets the label values.
    #[must_use]
    pub fn with_labels(mut self, labels: LabelMapping) -> Self {
        self.labels = labels;
        self
    }

    /// Sets the category column.
    #[must_use]
    pub fn with_category(mut self, column: impl Into<String>) -> Self {
        self.category = Some(column.into());
        self
    }

    /// Sets the subcategory column.
    #[must_use]
    pub fn with_subcategory(mut self, column: impl Into<String>) -> Self {
        self.subcategory = Some(column.into());
        self
    }

    /// Sets the reference response column.
    #[must_use]
    pub fn with_response(mut self, column: impl Into<String>) -> Self {
        self.response = Some(column.into());
        self
    }

    fn validate(&self) -> Result<()> {
        let overlap = self.labels.harmful.iter().find(|value| {
            self.labels
                .benign
                .iter()
                .any(|other| other.eq_ignore_ascii_case(value))
        });
        match overlap {
            Some(value) => Err(Error::InvalidSpec {
                parameter: "columns.labels",
                reason: format!("value {value:?} is listed as both harmful and benign"),
            }),
            None => Ok(()),
        }
    }
}

/// Any file of prompts, read through a [`ColumnMapping`].
pub(crate) fn generic(
    file: DataFile,
    mapping: &ColumnMapping,
    limit: Option<usize>,
) -> Result<Loaded> {
    mapping.validate()?;
    let named = [
        Some(&mapping.prompt),
        mapping.id.as_ref(),
        mapping.label.as_ref(),
        mapping.category.as_ref(),
        mapping.subcategory.as_ref(),
        mapping.response.as_ref(),
    ];
    let required: Vec<&str> = named.iter().flatten().map(|name| name.as_str()).collect();
    let table = file.read(&required, &[], limit)?;
    let vocabulary: Vec<(&str, bool)> = mapping
        .labels
        .harmful
        .iter()
        .map(|value| (value.as_str(), true))
        .chain(
            mapping
                .labels
                .benign
                .iter()
                .map(|value| (value.as_str(), false)),
        )
        .collect();
    build(table, |table, row| {
        let messages = row.prompt_messages(&mapping.prompt)?;
        let id = match &mapping.id {
            Some(column) => row.identifier(column)?,
            None => None,
        }
        .unwrap_or_else(|| row_id(table.path(), &row));
        let mut instance = base_instance(table, &row, id, messages);
        let optional_text = |column: &Option<String>| -> Result<Option<String>> {
            match column {
                Some(column) => row.trimmed_text(column),
                None => Ok(None),
            }
        };
        if let Some(column) = &mapping.label {
            instance.harmful = row.vocabulary(column, &vocabulary)?;
        }
        instance.category = optional_text(&mapping.category)?;
        instance.subcategory = optional_text(&mapping.subcategory)?;
        if let Some(column) = &mapping.response {
            instance.reference_response = row.text(column)?.map(str::to_owned);
        }
        Ok(instance)
    })
}
