//! What `run.json` records to tell files apart: checksums of models, adapters and datasets.

use std::io::Read;
use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};

use deepconf_datasets::Dataset;
use deepconf_records::{AdapterInfo, DatasetInfo};

use crate::{Error, Result};

/// What `run.json` records about a dataset: name, split, file name and checksum.
pub fn dataset_info(dataset: &Dataset, instances: usize) -> DatasetInfo {
    if !dataset.summary.sources.is_empty() {
        // A mixture: its sources by name, and each source file's checksum (in the same order).
        let sources: Vec<&str> = dataset.summary.sources.keys().map(String::as_str).collect();
        let checksums: Option<Vec<String>> = dataset
            .summary
            .sources
            .values()
            .map(|source| sha256_file(Path::new(&source.file)).ok())
            .collect();
        return DatasetInfo {
            name: "mixture".into(),
            split: Some(sources.join(" + ")),
            instances,
            sha256: checksums.map(|c| c.join(",")),
        };
    }
    let path = Path::new(&dataset.summary.file);
    DatasetInfo {
        name: dataset
            .summary
            .benchmark
            .map_or_else(|| "generic".into(), |b| b.name().to_string()),
        split: path.file_name().map(|n| n.to_string_lossy().into_owned()),
        instances,
        sha256: sha256_file(path).ok(),
    }
}

/// SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(Error::io(path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(Error::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The last component of `path` (the whole path when it has none): records name files, not where
/// they happened to be.
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// What `run.json` records about the adapter in `dir`: its name, checksum, how it is applied and
/// the recipe of its `training.json` (if it has one).
pub fn adapter_info(dir: &Path, applied: &str) -> Result<AdapterInfo> {
    let weights = dir.join("adapter_model.safetensors");
    let training = dir.join("training.json");
    let recipe = match std::fs::read_to_string(&training) {
        Ok(text) => {
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::InvalidParameter {
                    parameter: "adapter",
                    value: training.display().to_string(),
                    reason: format!("not JSON: {e}"),
                })?;
            json!({
                "recipe": value.get("recipe").cloned().unwrap_or_default(),
                "produced_by": value.get("produced_by").cloned().unwrap_or_default(),
                "held_out": value.get("held_out_guarded").cloned().unwrap_or_default(),
            })
        }
        Err(_) => serde_json::Value::Null,
    };
    Ok(AdapterInfo {
        name: file_name(dir),
        sha256: Some(sha256_file(&weights)?),
        applied: applied.to_string(),
        recipe,
    })
}
