//! The error type of deepconf-eval.

use std::path::PathBuf;

/// Errors of an experiment: configuration, backends, data, classifiers and run records.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A command-line or experiment parameter is invalid.
    #[error("invalid parameter `{parameter}` = {value}: {reason}")]
    InvalidParameter {
        /// Parameter (flag) name.
        parameter: &'static str,
        /// The offending value, as text.
        value: String,
        /// What a valid value looks like.
        reason: String,
    },
    /// `--resume` found a run whose configuration differs from the one asked for.
    #[error(
        "cannot resume {path}: `{field}` differs (run.json has {recorded}, this run asks for {requested}); \
         use the same flags or another --out directory"
    )]
    ResumeMismatch {
        /// The `run.json` file.
        path: PathBuf,
        /// Dotted path of the first differing field (e.g. `config.policy.max_traces`).
        field: String,
        /// Its value in `run.json`.
        recorded: String,
        /// Its value in this run.
        requested: String,
    },
    /// The output directory already holds a run and `--resume` was not given.
    #[error("{path} already holds a run: pass --resume to continue it, or choose another --out")]
    RunExists {
        /// The output directory.
        path: PathBuf,
    },
    /// Two instances share an id, so resuming could not tell them apart.
    #[error(
        "instance id `{id}` appears twice in the selected instances (rows {first} and {second})"
    )]
    DuplicateInstance {
        /// The id.
        id: String,
        /// Position of the first occurrence in the selection.
        first: usize,
        /// Position of the second.
        second: usize,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The model or the runner failed.
    #[error(transparent)]
    Core(#[from] deepconf_core::Error),
    /// Loading a benchmark failed.
    #[error(transparent)]
    Dataset(#[from] deepconf_datasets::Error),
    /// A refusal classifier failed.
    #[error(transparent)]
    Refusal(#[from] deepconf_refusal::Error),
    /// Writing or reading run records failed.
    #[error(transparent)]
    Records(#[from] deepconf_records::Error),
    /// Analysing run records failed.
    #[error(transparent)]
    Analysis(#[from] deepconf_analysis::Error),
    /// The first instances all failed: the backend is unusable (a wrong URL, a server that is
    /// down). They are recorded in `failures.jsonl`; fix the cause and `--resume`.
    #[error(
        "the first {failed} instances all failed, so the run stopped; last error: {last_error}"
    )]
    Unusable {
        /// Instances that failed.
        failed: usize,
        /// The last one's error.
        last_error: String,
    },
    /// A backend was asked for that this build does not include.
    #[error(
        "backend `{backend}` is not compiled in: enable the `{backend}` feature of deepconf-eval"
    )]
    BackendUnavailable {
        /// The backend name.
        backend: &'static str,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// Result alias of deepconf-eval.
pub type Result<T, E = Error> = std::result::Result<T, E>;
