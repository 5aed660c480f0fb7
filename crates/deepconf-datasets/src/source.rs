//! Where a benchmark file comes from: a local path, or a file of a Hugging Face hub dataset repo
//! (with a manually placed copy, the HF cache and offline mode checked first).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Benchmark, Error, Result};

/// Environment variable that moves the deepconf cache (models and data).
pub const CACHE_ENV: &str = "DEEPCONF_CACHE";

/// The deepconf data directory: `<cache>/data`, where the cache is `$DEEPCONF_CACHE`, else
/// `$XDG_CACHE_HOME/deepconf`, else `$HOME/.cache/deepconf` (`%USERPROFILE%` on Windows), else
/// `.deepconf-cache` in the current directory: the same rule as `deepconf_core::cache_dir`, which
/// this crate does not depend on.
///
/// Benchmark files placed by hand (or by `cargo xtask fetch-data`) live under
/// `<data dir>/<benchmark>/<file path in the hub repo>`, e.g.
/// `<data dir>/harmbench/harmbench_behaviors_text_test.csv`.
pub fn default_data_dir() -> PathBuf {
    let from_env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let cache = from_env(CACHE_ENV)
        .or_else(|| from_env("XDG_CACHE_HOME").map(|p| p.join("deepconf")))
        .or_else(|| {
            from_env("HOME")
                .or_else(|| from_env("USERPROFILE"))
                .map(|p| p.join(".cache").join("deepconf"))
        })
        .unwrap_or_else(|| PathBuf::from(".deepconf-cache"));
    cache.join("data")
}

/// One file of a hub dataset repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubFile {
    /// Dataset repository id, e.g. `lmsys/toxic-chat`.
    pub repo_id: String,
    /// Path of the file inside the repository.
    pub filename: String,
    /// Branch, tag, commit, or `refs/convert/parquet` for the hub's parquet conversion.
    pub revision: String,
}

impl HubFile {
    /// A file on the `main` revision.
    pub fn new(repo_id: impl Into<String>, filename: impl Into<String>) -> Self {
        Self {
            repo_id: repo_id.into(),
            filename: filename.into(),
            revision: "main".to_owned(),
        }
    }

    /// The same file at another revision.
    #[must_use]
    pub fn at_revision(mut self, revision: impl Into<String>) -> Self {
        self.revision = revision.into();
        self
    }
}

/// Where to read a benchmark file from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSource {
    /// A file on disk.
    Local {
        /// Its path.
        path: PathBuf,
    },
    /// A file of a hub dataset repo.
    Hub(HubFile),
}

/// How hub files are obtained.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HubOptions {
    /// Access token; when `None`, `HF_TOKEN` and then the HF cache's stored token are used.
    /// Never serialized.
    #[serde(skip)]
    pub token: Option<String>,
    /// HF cache directory (the `hub` directory); when `None`, `$HF_HOME/hub` or `~/.cache/huggingface/hub`.
    pub cache_dir: Option<PathBuf>,
    /// Never touch the network; also enabled by `HF_HUB_OFFLINE=1`.
    pub offline: bool,
    /// Directory of manually placed copies; when `None`, [`default_data_dir`].
    pub data_dir: Option<PathBuf>,
}

impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOptions")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("cache_dir", &self.cache_dir)
            .field("offline", &self.offline)
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl HubOptions {
    /// Whether offline mode is on, through this option or `HF_HUB_OFFLINE`.
    pub fn is_offline(&self) -> bool {
        self.offline
            || std::env::var("HF_HUB_OFFLINE").is_ok_and(|value| {
                matches!(
                    value.trim().to_ascii_lowercase().as_str(),
                    "1" | "true" | "yes"
                )
            })
    }

    /// Where a manually placed copy of `file` for `benchmark` is looked for.
    pub fn placed_copy(&self, benchmark: Benchmark, file: &HubFile) -> PathBuf {
        let data_dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
        let mut path = data_dir.join(benchmark.name());
        for component in file.filename.split('/') {
            path.push(component);
        }
        path
    }

    fn token(&self) -> Option<String> {
        self.token.clone().or_else(|| {
            std::env::var("HF_TOKEN")
                .ok()
                .filter(|token| !token.trim().is_empty())
        })
    }

    /// Resolves `file` to a local path: a placed copy, then the HF cache, then (unless offline) a download.
    pub fn resolve(&self, benchmark: Benchmark, file: &HubFile) -> Result<PathBuf> {
        let place_at = self.placed_copy(benchmark, file);
        if place_at.is_file() {
            return Ok(place_at);
        }
        self.fetch(file, &place_at)
    }

    #[cfg(feature = "hub")]
    fn fetch(&self, file: &HubFile, place_at: &Path) -> Result<PathBuf> {
        use hf_hub::api::sync::ApiBuilder;
        use hf_hub::{Cache, Repo, RepoType};

        let unavailable = |reason: String| Error::Unavailable {
            repo_id: file.repo_id.clone(),
            filename: file.filename.clone(),
            revision: file.revision.clone(),
            place_at: place_at.to_path_buf(),
            reason,
        };
        let cache = self
            .cache_dir
            .clone()
            .map_or_else(Cache::from_env, Cache::new);
        let repo = Repo::with_revision(
            file.repo_id.clone(),
            RepoType::Dataset,
            file.revision.clone(),
        );
        if let Some(path) = cache.repo(repo.clone()).get(&file.filename) {
            return Ok(path);
        }
        if self.is_offline() {
            return Err(unavailable(format!(
                "offline mode is on and the HF cache at {} has no copy",
                cache.path().display()
            )));
        }
        let stored_token = cache.token();
        let mut builder = ApiBuilder::from_cache(cache).with_progress(false);
        let token = self.token();
        let has_token = token.is_some() || stored_token.is_some();
        if token.is_some() {
            builder = builder.with_token(token);
        }
        if let Ok(endpoint) = std::env::var("HF_ENDPOINT") {
            builder = builder.with_endpoint(endpoint);
        }
        let api = builder
            .build()
            .map_err(|error| unavailable(format!("cannot start the hub client: {error}")))?;
        api.repo(repo).get(&file.filename).map_err(|error| {
            let advice = if has_token {
                ""
            } else {
                " (gated repos such as allenai/wildguardmix need an access token in HF_TOKEN)"
            };
            unavailable(format!("download failed: {error}{advice}"))
        })
    }

    #[cfg(not(feature = "hub"))]
    fn fetch(&self, file: &HubFile, place_at: &Path) -> Result<PathBuf> {
        Err(Error::Unavailable {
            repo_id: file.repo_id.clone(),
            filename: file.filename.clone(),
            revision: file.revision.clone(),
            place_at: place_at.to_path_buf(),
            reason: "deepconf-datasets was built without its `hub` feature".to_owned(),
        })
    }
}
