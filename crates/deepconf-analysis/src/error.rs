//! The error type of this crate.

use std::path::PathBuf;

/// Errors of `deepconf-analysis`. Every variant names the file, row/column or parameter at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON or JSONL file could not be parsed or written.
    #[error("JSON error in {path}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line number for JSONL files.
        line: Option<usize>,
        /// What went wrong.
        message: String,
    },
    /// A parameter is out of its valid range.
    #[error("invalid parameter `{parameter}` = {value}: {reason}")]
    InvalidParameter {
        /// Parameter name.
        parameter: &'static str,
        /// The value, as text.
        value: String,
        /// What a valid value looks like.
        reason: String,
    },
    /// A policy asks for more traces than the run stored for an instance.
    #[error(
        "policy `{policy}` needs {needed} traces for instance `{instance_id}` but the run stored {stored}"
    )]
    InsufficientTraces {
        /// The policy's label.
        policy: String,
        /// The instance.
        instance_id: String,
        /// Traces the policy asked for.
        needed: usize,
        /// Traces stored.
        stored: usize,
    },
    /// The records are inconsistent (e.g. a trace of an unknown instance, a duplicate).
    #[error("inconsistent records in {path}: {reason}")]
    Inconsistent {
        /// The file or run directory.
        path: PathBuf,
        /// What is inconsistent.
        reason: String,
    },
    /// Drawing a plot failed.
    #[error("plot {path}: {message}")]
    Plot {
        /// The output file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Two runs differ in a setting that makes comparing them meaningless (live-vs-replay check).
    #[error(
        "the runs are not comparable: `{field}` is {full} in the full run but {live} in the live run"
    )]
    NotComparable {
        /// The setting that differs.
        field: String,
        /// Its value in the full run, as JSON.
        full: String,
        /// Its value in the live run, as JSON.
        live: String,
    },
    /// The run's records could not be read.
    #[error(transparent)]
    Records(#[from] deepconf_records::Error),
    /// A policy configuration is invalid.
    #[error(transparent)]
    Policy(#[from] deepconf_core::policy::Error),
    /// A confidence configuration is invalid.
    #[error(transparent)]
    Confidence(#[from] deepconf_core::confidence::Error),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
