//! `run.json`: the [`RunManifest`] of a run, with the [`ModelInfo`] and [`DatasetInfo`] it records.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use deepconf_core::RunConfig;

use crate::error::{Error, Result, io_error};
use crate::{ClassifierInfo, MANIFEST_FILE};

/// The model that was run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelInfo {
    /// Human-readable name (e.g. `SmolLM2-135M-Instruct Q4_1`).
    pub name: String,
    /// Backend (`candle`, `openai`, ...).
    pub backend: String,
    /// Model file name or URL (no machine-specific directory is needed).
    pub source: String,
    /// SHA-256 of the model file, hex.
    pub sha256: Option<String>,
    /// The LoRA adapter applied to the weights, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adapter: Option<AdapterInfo>,
}

/// A LoRA adapter applied to a model: where it came from and how it was made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdapterInfo {
    /// The adapter's directory name (e.g. `SmolLM2-135M-Instruct-guarded-lora`).
    pub name: String,
    /// SHA-256 of its `adapter_model.safetensors`, hex.
    pub sha256: Option<String>,
    /// How it was applied (`merged q8_0`, `unmerged`).
    pub applied: String,
    /// The training recipe from its `training.json` (`null` when it has none).
    pub recipe: serde_json::Value,
}

/// The dataset that was run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatasetInfo {
    /// Name (`toxicchat`, `wildguardmix`, `harmbench`, ...).
    pub name: String,
    /// Split or subset.
    pub split: Option<String>,
    /// Instances selected for the run.
    pub instances: usize,
    /// SHA-256 of the dataset file(s), hex, when known.
    pub sha256: Option<String>,
}

/// `run.json`: everything needed to reproduce and interpret a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunManifest {
    /// Run name.
    pub name: String,
    /// Creation time (RFC 3339), as given by the driver.
    pub created_at: Option<String>,
    /// Instances the engine kept in flight at once (a resumed run may use another value; results
    /// do not depend on it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// The model.
    pub model: ModelInfo,
    /// The dataset.
    pub dataset: DatasetInfo,
    /// Policy, confidence and sampling configuration (the base seed is `config.sampling.seed`).
    pub config: RunConfig,
    /// The refusal classifier's name and settings (`null` in a configuration not yet given one).
    pub classifier: Option<ClassifierInfo>,
    /// Other seeds used (e.g. instance sampling).
    pub seeds: BTreeMap<String, u64>,
    /// Versions of the crates and tools involved.
    pub versions: BTreeMap<String, String>,
    /// Whether top-k log-probabilities are stored in the trace rows.
    pub store_logprobs: bool,
    /// Anything else the driver wants to keep (command line, ...).
    pub extra: serde_json::Value,
}

impl RunManifest {
    /// Writes `run.json` in `dir` (pretty JSON).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_FILE);
        let json = serde_json::to_string_pretty(self).map_err(|e| Error::Json {
            path: path.clone(),
            line: None,
            message: e.to_string(),
        })?;
        write_atomically(&path, json.as_bytes())
    }

    /// Reads `run.json` from `dir`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&path).map_err(io_error(&path))?;
        serde_json::from_str(&text).map_err(|e| Error::Json {
            path,
            line: Some(e.line()),
            message: e.to_string(),
        })
    }
}

pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
        file.write_all(bytes).map_err(io_error(&tmp))?;
        file.sync_all().map_err(io_error(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(io_error(path))
}
