//! Fetching model files from the Hugging Face hub (synchronous, cached).
//!
//! Files already in the local hub cache (`$HF_HOME/hub`, default `~/.cache/huggingface/hub`)
//! are used without touching the network. `HF_HUB_OFFLINE=1` forbids the network entirely.
//! The access token comes from `HF_TOKEN`, else from the cache's `token` file.

use std::path::PathBuf;

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::{Error, Result};

const DEFAULT_REVISION: &str = "main";

fn offline_mode() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

fn repo_of(repo_id: &str, revision: &str) -> Repo {
    Repo::with_revision(repo_id.to_string(), RepoType::Model, revision.to_string())
}

/// The hub cache to use and whether the network may be used.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// The hub cache directory (the `hub` folder); `None` uses `$HF_HOME/hub` or
    /// `~/.cache/huggingface/hub`.
    pub cache_dir: Option<PathBuf>,
    /// Never use the network, only the cache.
    pub offline: bool,
}

impl HubOptions {
    /// Settings from the environment: the default cache, offline when `HF_HUB_OFFLINE` is set.
    pub fn from_env() -> Self {
        Self {
            cache_dir: None,
            offline: offline_mode(),
        }
    }
}

/// Local paths of `files` of the model repo `repo_id` at `revision` (default `main`),
/// downloading the ones that are not cached yet. Uses [`HubOptions::from_env`].
///
/// Errors name the repo, the missing files and where to put them by hand when the hub cannot
/// be reached.
pub fn resolve_repo_files(
    repo_id: &str,
    revision: Option<&str>,
    files: &[&str],
) -> Result<Vec<PathBuf>> {
    resolve_repo_files_with(&HubOptions::from_env(), repo_id, revision, files)
}

/// [`resolve_repo_files`] with an explicit cache and offline switch.
pub fn resolve_repo_files_with(
    options: &HubOptions,
    repo_id: &str,
    revision: Option<&str>,
    files: &[&str],
) -> Result<Vec<PathBuf>> {
    if repo_id.split('/').count() != 2 || repo_id.split('/').any(str::is_empty) {
        return Err(Error::InvalidParameter {
            parameter: "repo_id",
            reason: format!("`{repo_id}` is not of the form `owner/name`"),
        });
    }
    let revision = revision.unwrap_or(DEFAULT_REVISION);
    let cache = match &options.cache_dir {
        Some(dir) => Cache::new(dir.clone()),
        None => Cache::from_env(),
    };
    let repo = repo_of(repo_id, revision);
    let cached_repo = cache.repo(repo.clone());
    let mut paths: Vec<Option<PathBuf>> = files.iter().map(|file| cached_repo.get(file)).collect();
    let missing: Vec<&str> = files
        .iter()
        .zip(&paths)
        .filter(|(_, path)| path.is_none())
        .map(|(file, _)| *file)
        .collect();
    if missing.is_empty() {
        return Ok(paths.into_iter().flatten().collect());
    }
    let unreachable = |reason: String| {
        let repo_dir = cache.path().join(repo.folder_name());
        Error::Hub(format!(
            "cannot get {} of `{repo_id}` (revision {revision}): {reason}. Without hub access, \
             download them elsewhere, put them in {} and write `{revision}` into {} (or pass \
             local file paths instead of a hub repo)",
            missing.join(", "),
            repo_dir.join("snapshots").join(revision).display(),
            repo_dir.join("refs").join(revision).display(),
        ))
    };
    if options.offline {
        return Err(unreachable(
            "offline mode (HF_HUB_OFFLINE) is on and they are not in the local hub cache".into(),
        ));
    }
    let mut builder = ApiBuilder::from_cache(cache.clone()).with_progress(false);
    if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
        builder = builder.with_endpoint(endpoint);
    }
    if let Ok(token) = std::env::var("HF_TOKEN")
        && !token.trim().is_empty()
    {
        builder = builder.with_token(Some(token.trim().to_string()));
    }
    let api = builder
        .build()
        .map_err(|e| unreachable(format!("the hub client failed to start: {e}")))?;
    let api_repo = api.repo(repo.clone());
    for (file, slot) in files.iter().zip(paths.iter_mut()) {
        if slot.is_none() {
            let path = api_repo
                .get(file)
                .map_err(|e| unreachable(format!("downloading {file} failed: {e}")))?;
            *slot = Some(path);
        }
    }
    Ok(paths.into_iter().flatten().collect())
}
