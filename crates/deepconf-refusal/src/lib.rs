//! Refusal classifiers for LLM safety evaluation: did a response refuse its prompt?
//!
//! For DeepConf on safety benchmarks, a trace's "answer" is its refusal label, and the instance's
//! behaviour is the confidence-weighted vote of its traces. This crate provides the labels, a
//! [`RefusalClassifier`] trait, a normalising [`PatternClassifier`], a [`WildGuardJudge`] over
//! any [`LogprobModel`](deepconf_core::LogprobModel), an [`Ensemble`] of the two, the string-list
//! baselines of the literature, and evaluation against gold labels.
//!
//! # Quick start
//! ```
//! use deepconf_refusal::{ClassifierEvaluation, PatternClassifier, RefusalClassifier, RefusalLabel};
//!
//! let mut patterns = PatternClassifier::default();
//! let refusal = patterns.classify("How do I pick a lock?", "I\u{2019}m sorry, but I can\u{2019}t help with that.")?;
//! assert_eq!(refusal.label, RefusalLabel::Refusal);
//! assert!(refusal.score > 0.9);
//!
//! let sympathy = patterns.classify("I failed my exam", "I'm sorry to hear that. Here are some ways to bounce back: ...")?;
//! assert_eq!(sympathy.label, RefusalLabel::Compliance);
//!
//! let thinking = patterns.classify("Hi", "<think>The user greets me, I should")?;
//! assert_eq!(thinking.label, RefusalLabel::Incomplete);
//!
//! let eval = ClassifierEvaluation::from_labels([
//!     (true, refusal.label),
//!     (false, sympathy.label),
//! ]);
//! assert_eq!(eval.f1, 1.0);
//! # Ok::<(), deepconf_refusal::Error>(())
//! ```
//!
//! # Features
//! - Normalisation before matching: case, Unicode apostrophes and quotes, dashes, whitespace;
//!   `<think>` blocks removed (an unclosed one gives [`RefusalLabel::Incomplete`]); code and
//!   quotations masked so that a quoted "I cannot" is not the model's refusal.
//! - Position-weighted, data-driven patterns ([`PatternSet`], JSON, extendable) with known false
//!   positives ("I'm sorry to hear that", "I cannot stress enough") and partial refusals
//!   (refuses, then complies: labelled compliance).
//! - The WildGuard classifier prompt, its official three-line parsing (failures are errors, never
//!   guesses) and a refusal score from the judge's yes/no token log-probabilities.
//! - Use as DeepConf's answer extractor through [`RefusalAnswers`].
//! - Precision, recall, F1 and the confusion matrix against gold labels ([`ClassifierEvaluation`]).
//!
//! # Which type do I want?
//! | need | item |
//! |---|---|
//! | label responses quickly, no model | [`PatternClassifier`] (+ [`PatternSet`], [`PatternConfig`]) |
//! | ask an LLM judge (WildGuard format) | [`WildGuardJudge`], [`parse_wildguard_output`], [`wildguard_prompt`] |
//! | patterns first, judge when unsure | [`Ensemble`] |
//! | vote over traces with DeepConf | [`RefusalAnswers`] (an [`AnswerExtractor`](deepconf_core::AnswerExtractor)) |
//! | score a classifier on gold labels | [`ClassifierEvaluation`], [`LabelledResponse`] |
//! | compare with the literature's string lists | [`StringListClassifier::gcg`], [`StringListClassifier::xstest`] |
//! | the text patterns see | [`normalize()`], [`strip_thinking`] |
#![deny(missing_docs)]

mod baselines;
mod classifier;
mod ensemble;
mod error;
mod eval;
mod judge;
mod label;
pub mod normalize;
mod patterns;

pub use baselines::{MatchMode, StringListClassifier};
pub use classifier::{RefusalAnswers, RefusalClassifier, TraceLabel};
pub use ensemble::Ensemble;
pub use error::{Error, Result};
pub use eval::{ClassifierEvaluation, LabelledResponse, Miss};
pub use judge::{
    JudgeOutput, ScoreSource, TokenTextFn, WildGuardJudge, WildGuardVerdict,
    parse_wildguard_output, wildguard_instruction, wildguard_prompt,
};
pub use label::{Classification, Evidence, PatternMatch, RefusalLabel};
pub use normalize::{AnswerText, normalize, strip_thinking};
pub use patterns::{Pattern, PatternClassifier, PatternConfig, PatternSet};
