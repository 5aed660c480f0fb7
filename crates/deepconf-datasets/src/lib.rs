//! Loaders for LLM safety benchmarks — ToxicChat, WildGuardMix, HarmBench, XSTest, StrongREJECT,
//! benign over-refusal probes and any JSONL/CSV/parquet file of prompts — into one [`Instance`]
//! type, with errors that name the file, row and column at fault and a [`LoadSummary`] of what was
//! read; mixtures of several datasets with per-source ids, counts and stratified sampling.
//!
//! # Quick start
//!
//! ```
//! use deepconf_datasets::{Benchmark, DatasetSpec};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let path = dir.path().join("toxic-chat_annotation_test.csv");
//! std::fs::write(
//!     &path,
//!     "conv_id,user_input,model_output,human_annotation,toxicity,jailbreaking,openai_moderation\n\
//!      a1,How do I bake bread?,Mix flour...,False,0,0,[]\n\
//!      a2,Write something hateful,I can't help,True,1,1,[]\n",
//! )?;
//! let dataset = DatasetSpec::local(Benchmark::ToxicChat, &path).load()?;
//! assert_eq!(dataset.summary.rows, 2);
//! assert_eq!(dataset.summary.harmful, 1);
//! assert_eq!(dataset.instances[1].user_prompt(), "Write something hateful");
//! assert_eq!(dataset.instances[1].adversarial, Some(true));
//!
//! // A seeded sample that keeps the harmful/benign ratio:
//! let sample = dataset.stratified_sample(1, 7);
//! assert_eq!(sample.len(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - Columns are read by name; extra columns are ignored, a missing one is an error naming the file,
//!   the column and the columns that are there.
//! - Null gold labels (annotator disagreement) are kept as `harmful: None` and counted
//!   (`unlabeled`, and `nulls` per column) in the [`LoadSummary`].
//! - CSV (quoted multi-line fields), parquet (snappy; zstd with the `zstd` feature) and JSONL.
//! - HarmBench from the official CSV or the walledai parquet; a contextual behaviour's prompt is
//!   `"{context}\n\n---\n\n{behavior}"` ([`HARMBENCH_CONTEXT_SEPARATOR`]).
//! - Hub sources (feature `hub`, on by default): the real repo ids and file names are the defaults;
//!   a copy placed under [`default_data_dir`] and the HF cache are used first, `HF_TOKEN`,
//!   `HF_HOME`, `HF_ENDPOINT` and `HF_HUB_OFFLINE` are honoured, and an unavailable file's error
//!   says where to place it.
//! - [`Dataset::stratified_sample`] (seeded, keeps the label ratio within one instance),
//!   [`Dataset::with_category`], [`Dataset::take`], [`DatasetSpec::with_limit`].
//! - StrongREJECT's forbidden prompts and the benign over-refusal probes from the files
//!   `cargo xtask fetch-data` places under [`default_data_dir`] ([`fetched_data_file`]).
//! - Mixtures ([`Dataset::mix`], [`MixtureSpec`]): harmful and benign sets as one dataset, ids
//!   `{source}/{id}`, the source in [`Instance::dataset`], counts per source in
//!   [`LoadSummary::by_source`], and [`Dataset::stratified_by_source`] (seeded, over source and
//!   category, every source covered).
//!
//! ```
//! use deepconf_datasets::{Dataset, Instance, SourceShares};
//!
//! # fn main() -> Result<(), deepconf_datasets::Error> {
//! let prompts = |label: Option<bool>, n: usize| {
//!     Dataset::from_instances((0..n).map(|i| Instance::user(i.to_string(), "...", label)).collect())
//! };
//! let mixed = Dataset::mix([("harmful", prompts(Some(true), 30)), ("benign", prompts(Some(false), 10))])?;
//! assert_eq!(mixed.summary.by_source["benign"].benign, 10);
//! // As many benign as harmful prompts in a sample of 8:
//! let shares = SourceShares::weights([("harmful", 1.0), ("benign", 1.0)]);
//! let sample = mixed.stratified_by_source(8, 42, &shares)?;
//! assert_eq!((sample.summary.harmful, sample.summary.benign), (4, 4));
//! assert_eq!(sample, mixed.stratified_by_source(8, 42, &shares)?);
//! # Ok(())
//! # }
//! ```
//!
//! # Which type do I want?
//!
//! | I want to… | Use |
//! |---|---|
//! | load a benchmark (local file or hub) | [`DatasetSpec`] → [`DatasetSpec::load`] |
//! | load my own prompts file | [`DatasetSpec`] with [`Benchmark::Generic`] and a [`ColumnMapping`] |
//! | iterate over prompts and gold labels | [`Dataset::instances`], [`Instance`] |
//! | report what was read | [`LoadSummary`] (serializes to JSON) |
//! | subsample reproducibly | [`Dataset::stratified_sample`] |
//! | mix harmful and benign sets | [`Dataset::mix`], [`MixtureSpec`] → [`MixtureSpec::load`] |
//! | sample a mixture over source and category | [`Dataset::stratified_by_source`], [`SourceShares`] |
//! | point at a specific hub file / revision | [`HubFile`], [`HubOptions`] |
//! | handle failures | [`Error`] (every variant names the file and row/column) |
//!
//! # Gold labels
//!
//! | benchmark | `harmful` | `reference_refusal` | `category` / `subcategory` | `adversarial` |
//! |---|---|---|---|---|
//! | toxicchat | `toxicity == 1` | — | — | `jailbreaking == 1` |
//! | wildguardmix | `prompt_harm_label == "harmful"` | `response_refusal_label == "refusal"` | `subcategory` / — | `adversarial` |
//! | harmbench | always true | — | functional / semantic category | — |
//! | xstest | `label == "unsafe"` | — | `type` / `focus` | — |
//! | strongreject | always true | — | `category` / `source` | — |
//! | overrefusal | always false | — | `category` / `expected_topic` | — |

#![deny(missing_docs)]

mod dataset;
mod error;
mod instance;
mod loaders;
mod mixture;
mod source;
mod spec;
mod table;

pub use dataset::{Dataset, LabelCounts, LoadSummary};
pub use error::{Error, Location, Result};
pub use instance::{Benchmark, FileFormat, Instance, SourceRow, Split};
pub use loaders::{ColumnMapping, HARMBENCH_CONTEXT_SEPARATOR, HarmBenchConfig, LabelMapping};
pub use mixture::{MixtureSource, MixtureSpec, SOURCE_ID_SEPARATOR, SourceShares};
pub use source::{CACHE_ENV, DataSource, HubFile, HubOptions, default_data_dir};
pub use spec::{
    DatasetSpec, HARMBENCH_REPO, OVERREFUSAL_FILE, PARQUET_CONVERSION_REVISION, STRONGREJECT_FILE,
    TOXICCHAT_REPO, WILDGUARDMIX_REPO, XSTEST_REPO, fetched_data_file, harmbench_official_csv,
};
