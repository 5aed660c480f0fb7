//! The error type of deepconf-refusal.

use std::path::PathBuf;

/// Errors of deepconf-refusal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A pattern set could not be read or parsed; `origin` names the file or source.
    #[error("pattern set {origin}: {message}")]
    PatternSet {
        /// Where the set came from (a path, or `built-in`).
        origin: String,
        /// What is wrong, with line and column when the JSON parser gave them.
        message: String,
    },
    /// One pattern of a set is invalid (bad regex, weight out of range, duplicate id).
    #[error("pattern `{id}` in list `{list}`: {reason}")]
    InvalidPattern {
        /// Which list of the set (`refusal`, `false_positive`, ...).
        list: &'static str,
        /// The pattern's id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// The judge's output does not have the three-line WildGuard format.
    #[error("judge output is not in the WildGuard format ({reason}); raw output: {raw:?}")]
    JudgeParse {
        /// The judge's generated text, verbatim.
        raw: String,
        /// Which line or field failed.
        reason: String,
    },
    /// The judge parsed but answered `N/A` for response refusal, so it gives no label.
    #[error("judge answered `Response refusal: N/A`; raw output: {raw:?}")]
    JudgeNotApplicable {
        /// The judge's generated text, verbatim.
        raw: String,
    },
    /// The judge model failed.
    #[error("judge model: {0}")]
    Model(#[from] deepconf_core::Error),
    /// A parameter is out of its valid range.
    #[error("invalid parameter `{parameter}` = {value}: {reason}")]
    InvalidParameter {
        /// Parameter name.
        parameter: &'static str,
        /// The offending value, as text.
        value: String,
        /// What a valid value looks like.
        reason: &'static str,
    },
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Result alias of deepconf-refusal.
pub type Result<T, E = Error> = std::result::Result<T, E>;
