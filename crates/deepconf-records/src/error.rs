//! The error type of this crate.

use std::path::PathBuf;

/// Errors of `deepconf-records`. Every variant names the file, row/column or parameter at fault.
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
    /// A Parquet/Arrow file could not be read or written.
    #[error("parquet error in {path}: {message}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A column is missing or has an unexpected type or value.
    #[error("bad column `{column}` in {path}{}: {reason}", row.map(|r| format!(" row {r}")).unwrap_or_default())]
    Column {
        /// The file.
        path: PathBuf,
        /// The column name.
        column: String,
        /// 0-based row within the file, when one row is at fault.
        row: Option<usize>,
        /// What is wrong.
        reason: String,
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
    /// The records are inconsistent (e.g. a trace of an unknown instance, a duplicate).
    #[error("inconsistent records in {path}: {reason}")]
    Inconsistent {
        /// The file or run directory.
        path: PathBuf,
        /// What is inconsistent.
        reason: String,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
