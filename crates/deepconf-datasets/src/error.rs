//! The crate's error type. Every variant names the file and, where known, the row and column at fault.

use std::fmt;
use std::path::PathBuf;

/// Where in a data file an error happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file being read.
    pub file: PathBuf,
    /// 1-based data row (the header is not a row), when the error concerns one row.
    pub row: Option<usize>,
    /// 1-based line in the file where the row starts (CSV and JSONL only).
    pub line: Option<u64>,
    /// Column (or JSON key) name, when the error concerns one column.
    pub column: Option<String>,
}

impl Location {
    /// A location covering a whole file.
    pub fn file(file: impl Into<PathBuf>) -> Self {
        Self {
            file: file.into(),
            row: None,
            line: None,
            column: None,
        }
    }

    /// The same location narrowed to a column.
    #[must_use]
    pub fn with_column(mut self, column: impl Into<String>) -> Self {
        self.column = Some(column.into());
        self
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(row) = self.row {
            write!(f, ", row {row}")?;
            if let Some(line) = self.line {
                write!(f, " (line {line})")?;
            }
        } else if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if let Some(column) = &self.column {
            write!(f, ", column `{column}`")?;
        }
        Ok(())
    }
}

/// Errors raised while locating, reading or interpreting benchmark files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The data file does not exist.
    #[error("{}: file not found{hint}", .path.display())]
    FileNotFound {
        /// The missing file.
        path: PathBuf,
        /// Extra advice (how to obtain the file), possibly empty.
        hint: String,
    },
    /// The file exists but could not be read.
    #[error("{}: cannot read: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A column the benchmark's schema needs is absent.
    #[error("{at}: missing column (the file has: {present})")]
    MissingColumn {
        /// File and column.
        at: Box<Location>,
        /// The columns the file does have, comma separated.
        present: String,
    },
    /// A cell or column has a type the loader cannot interpret.
    #[error("{at}: expected {expected}, found {found}")]
    WrongType {
        /// File, row and column.
        at: Box<Location>,
        /// What the loader accepts there.
        expected: String,
        /// What it found.
        found: String,
    },
    /// A label cell holds a value outside the benchmark's vocabulary.
    #[error("{at}: unknown label value {value:?} (expected one of: {expected})")]
    UnknownLabel {
        /// File, row and column.
        at: Box<Location>,
        /// The offending value.
        value: String,
        /// The accepted values.
        expected: String,
    },
    /// The prompt cell is null, empty or only whitespace.
    #[error("{at}: empty prompt")]
    EmptyPrompt {
        /// File, row and column.
        at: Box<Location>,
    },
    /// The CSV file is malformed (unbalanced quotes, ragged rows, invalid UTF-8, ...).
    #[error("{at}: malformed CSV: {source}")]
    Csv {
        /// File and position.
        at: Box<Location>,
        /// The parser's error.
        source: csv::Error,
    },
    /// A JSONL line is not a JSON object.
    #[error("{at}: malformed JSON line: {reason}")]
    Json {
        /// File and line.
        at: Box<Location>,
        /// What is wrong with it.
        reason: String,
    },
    /// The parquet file could not be decoded.
    #[error("{}: malformed parquet: {reason}", .path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// The file's format could not be determined or is not supported for this benchmark.
    #[error("{}: unsupported file format: {reason}", .path.display())]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A hub file could not be obtained (offline, no network, gated repo without a token, ...).
    #[error(
        "dataset file `{filename}` of hub repo `{repo_id}` (revision `{revision}`) is not available: \
         {reason}. Without network, download that file elsewhere and place it at {}, \
         or pass the local path of a copy instead (e.g. `--data PATH`)",
        .place_at.display()
    )]
    Unavailable {
        /// Hub dataset repository id.
        repo_id: String,
        /// File inside the repository.
        filename: String,
        /// Revision (branch, tag, commit or `refs/convert/parquet`).
        revision: String,
        /// Where the loader looks for a manually placed copy.
        place_at: PathBuf,
        /// Why it could not be fetched.
        reason: String,
    },
    /// Two instances of a dataset or mixture share an id, so the records of a run could not tell
    /// them apart.
    #[error("dataset `{dataset}`: instance id {id:?} appears twice: at {first} and at {second}")]
    DuplicateId {
        /// The dataset (or mixture source) name.
        dataset: String,
        /// The repeated id.
        id: String,
        /// Where the first instance with the id was read.
        first: Box<Location>,
        /// Where the second was read.
        second: Box<Location>,
    },
    /// A loader option is invalid.
    #[error("invalid `{parameter}`: {reason}")]
    InvalidSpec {
        /// The option at fault.
        parameter: &'static str,
        /// Why it is invalid.
        reason: String,
    },
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;
