//! Loaders for LLM safety benchmarks — ToxicChat, WildGuardMix, HarmBench, XSTest and any
//! JSONL/CSV/parquet file of prompts — into one [`Instance`] type, with errors that name the file,
//! row and column at fault and a [`LoadSummary`] of what was read.
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

#![deny(missing_docs)]

mod dataset;
mod error;
mod instance;
mod loaders;
mod source;
mod spec;
mod table;

pub use dataset::{Dataset, LoadSummary};
pub use error::{Error, Location, Result};
pub use instance::{Benchmark, FileFormat, Instance, SourceRow, Split};
pub use loaders::{ColumnMapping, HARMBENCH_CONTEXT_SEPARATOR, HarmBenchConfig, LabelMapping};
pub use source::{CACHE_ENV, DataSource, HubFile, HubOptions, default_data_dir};
pub use spec::{
    DatasetSpec, HARMBENCH_REPO, PARQUET_CONVERSION_REVISION, TOXICCHAT_REPO, WILDGUARDMIX_REPO,
    XSTEST_REPO, harmbench_official_csv,
};
