//! Refusal classifiers for LLM safety evaluation: did a response refuse its prompt?
//!
//! For DeepConf on safety benchmarks, a trace's "answer" is its refusal label, and the instance's
//! behaviour is the confidence-weighted vote of its traces. This crate provides the labels, a
//! [`RefusalClassifier`] trait, a normalising [`PatternClassifier`], LLM judges ([`LlmJudge`])
//! over any [`LogprobModel`](deepconf_core::LogprobModel) in the WildGuard, HarmBench and Llama
//! Guard 3 formats, an [`Ensemble`] of a classifier and a judge, the string-list baselines of the
//! literature, and evaluation against gold labels.
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
//!   `<think>` blocks removed; code and quotations masked so that a quoted "I cannot" is not the
//!   model's refusal.
//! - One rule for thinking, in every classifier: a response cut inside an unclosed `<think>` has
//!   no answer yet and is [`RefusalLabel::Incomplete`] (the trace abstains), never a refusal.
//! - Position-weighted, data-driven patterns ([`PatternSet`], JSON, extendable) with known false
//!   positives ("I'm sorry to hear that", "I cannot stress enough") and partial refusals
//!   (refuses, then complies: labelled compliance).
//! - LLM judges as separate models in their exact published formats ([`JudgeFormat`]):
//!   WildGuard, the HarmBench Llama-2 classifier and Llama Guard 3, sent as raw text, parsed as
//!   the formats' reference code does (failures are counted errors, never guesses), scored from
//!   the answer token's log-probabilities, cached on disk ([`JudgeCache`]) and run concurrently
//!   through the model's own handles.
//! - The ensemble's agreement between its stages (counts and Cohen's kappa, [`Agreement`]).
//! - Use as DeepConf's answer extractor through [`RefusalAnswers`].
//! - Precision, recall, F1 with bootstrap intervals and the parse-error rate against gold labels
//!   ([`ClassifierEvaluation`], [`load_labelled_jsonl`]).
//!
//! # Which type do I want?
//! | need | item |
//! |---|---|
//! | label responses quickly, no model | [`PatternClassifier`] (+ [`PatternSet`], [`PatternConfig`]) |
//! | ask an LLM judge | [`LlmJudge`] with a [`JudgeFormat`]; [`NotHarmfulReading`] for harm judges |
//! | a judge's exact prompt / parser | [`wildguard_prompt`], [`harmbench_prompt`], [`llama_guard_prompt`]; [`JudgeFormat::parse`] |
//! | never ask a judge twice | [`JudgeCache`] (keyed by [`JudgeIdentity`]) |
//! | patterns first, judge when unsure | [`Ensemble`] (+ [`Agreement`]) |
//! | vote over traces with DeepConf | [`RefusalAnswers`] (an [`AnswerExtractor`](deepconf_core::AnswerExtractor)) |
//! | score a classifier on gold labels | [`ClassifierEvaluation`], [`LabelledResponse`], [`load_labelled_jsonl`] |
//! | count stored trace labels and parse errors | [`TraceLabelTally`] |
//! | compare with the literature's string lists | [`StringListClassifier::gcg`], [`StringListClassifier::xstest`] |
//! | the text patterns see | [`normalize()`], [`strip_thinking`] |
#![deny(missing_docs)]

mod agreement;
mod baselines;
mod classifier;
mod ensemble;
mod error;
mod judge;
mod judge_data;
mod label;
pub mod normalize;
mod patterns;
mod scoring;

pub use agreement::{Agreement, TraceLabelTally};
pub use baselines::{MatchMode, StringListClassifier};
pub use classifier::{RefusalAnswers, RefusalClassifier, TraceLabel, UnclassifiedCause};
pub use ensemble::Ensemble;
pub use error::{Error, Result};
pub use judge::{
    CachedAnswer, HARMBENCH_CONTEXT_SEPARATOR, JudgeCache, JudgeCounts, JudgeCountsHandle,
    JudgeIdentity, JudgeOutput, LLAMA_GUARD_3_CATEGORIES, LlmJudge, NotHarmfulReading,
    harmbench_prompt, harmbench_prompt_for, llama_guard_prompt, parse_harmbench_output,
    parse_llama_guard_output, parse_wildguard_output, wildguard_instruction, wildguard_prompt,
};
pub use judge_data::{
    HarmBenchVerdict, JudgeFormat, JudgeVerdict, LlamaGuardVerdict, ScoreSource, WildGuardVerdict,
};
pub use label::{Classification, Evidence, PatternMatch, RefusalLabel};
pub use normalize::{AnswerText, normalize, strip_thinking};
pub use patterns::{Pattern, PatternClassifier, PatternConfig, PatternSet};
pub use scoring::{
    Bootstrap, ClassifierEvaluation, Interval, Intervals, ItemOutcome, LabelledResponse, Miss,
    load_labelled_jsonl,
};
