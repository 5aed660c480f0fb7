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
    /// The judge's output is not in its format (counted as a parse error, never guessed).
    #[error("judge output is not in the {format} format ({reason}); raw output: {raw:?}")]
    JudgeParse {
        /// The judge's format.
        format: crate::JudgeFormat,
        /// The judge's generated text, verbatim.
        raw: String,
        /// Which line or field failed.
        reason: String,
    },
    /// The judge's answer parsed but gives no refusal label (WildGuard `Response refusal: N/A`,
    /// or a "not harmful" answer read as no evidence, see
    /// [`NotHarmfulReading`](crate::NotHarmfulReading)).
    #[error("the {format} judge gives no refusal label: {reason}; raw output: {raw:?}")]
    JudgeNotApplicable {
        /// The judge's format.
        format: crate::JudgeFormat,
        /// The judge's generated text, verbatim.
        raw: String,
        /// Why there is no label.
        reason: String,
    },
    /// A labelled-responses file has a bad line.
    #[error("{}, line {line}: {message}", path.display())]
    LabelledData {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
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
