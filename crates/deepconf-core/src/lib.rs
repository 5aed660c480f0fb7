//! DeepConf for LLM evaluation: the types every backend shares, the [`LogprobModel`] trait, and a
//! [`Runner`] that samples traces of one prompt under a confidence-based policy.
//!
//! `cargo add deepconf-core` is enough to use the metrics and policies too: they are re-exported as
//! [`confidence`] and [`policy`].
//!
//! # Quick start: implement a backend in one method
//! ```
//! use deepconf_core::{
//!     ChatMessage, GenerationRequest, LogprobModel, RunConfig, Runner, StopReason, TokenObserver,
//!     Trace, TraceBuilder, TraceSpec,
//! };
//! use deepconf_core::policy::PolicyConfig;
//!
//! /// A model that always answers "No" with high confidence.
//! struct AlwaysNo;
//!
//! impl LogprobModel for AlwaysNo {
//!     fn generate(
//!         &mut self,
//!         request: &GenerationRequest,
//!         spec: TraceSpec,
//!         observer: &mut dyn TokenObserver,
//!     ) -> deepconf_core::Result<Trace> {
//!         // The builder checks each token, calls the observer, cuts the top-k list and sets
//!         // the stop reason.
//!         let mut trace = TraceBuilder::new(request, spec, observer).with_prompt_tokens(4);
//!         for _ in 0..3 {
//!             // The run averages 20 candidates (k = 20), so each token reports 20, most likely
//!             // first; the sampled token is the most likely one.
//!             let top: Vec<f32> = (0..20).map(|j| -0.01 - 5.0 * j as f32).collect();
//!             if trace.push_token(Some(7), "No", top[0], top)?.is_stop() {
//!                 break;
//!             }
//!         }
//!         Ok(trace.finish(StopReason::EndOfSequence))
//!     }
//! }
//!
//! let config = RunConfig { policy: PolicyConfig::fixed(3), ..RunConfig::default() };
//! let outcome = Runner::new(config)?.run(
//!     &mut AlwaysNo,
//!     &[ChatMessage::user("Can you help me pick a lock?")],
//!     &mut |t: &Trace| Some(if t.text.starts_with("No") { "refusal" } else { "compliance" }),
//! )?;
//! assert_eq!(outcome.answer(), Some(&"refusal"));
//! assert_eq!(outcome.tokens_generated, 9);
//! # Ok::<(), deepconf_core::Error>(())
//! ```
//!
//! # Features
//! - Per-token top-k log-probabilities from any backend ([`TokenStep`]), DeepConf token and group
//!   confidence ([`confidence`]), streaming and exact.
//! - Policies ([`policy`]): fixed-N, offline filtering, DeepConf online early stopping, the
//!   prototype's schedule; each decision explains itself in serialisable values.
//! - A one-method trait for third-party backends ([`TraceBuilder`] keeps its contract); batching,
//!   concurrent handles and token texts are opt-in [`Capabilities`].
//! - Typed answers: the runner is generic over the [`AnswerExtractor`]'s answer and detail types,
//!   so a refusal label and its evidence travel from the classifier to the records as values.
//!
//! # Which type do I want?
//! | need | item |
//! |---|---|
//! | write a backend | [`LogprobModel`] + [`TraceBuilder`] (+ [`TokenObserver`], [`Capabilities`]) |
//! | describe a prompt | [`ChatMessage`], [`Prompt`], [`GenerationRequest`], [`SamplingParams`] |
//! | run a prompt under a policy | [`Runner`], [`RunConfig`], [`AnswerExtractor`] -> [`Extracted`] |
//! | inspect results | [`PromptOutcome`], [`TraceRecord`], [`Trace`], [`StopReason`] |
//! | where the default model and data live | [`cache_dir`] |
//! | jobs on worker threads, each worker with its own handle | [`pool::map_ordered`], [`pool::run`] |
#![deny(missing_docs)]

mod contract;
mod error;
mod model;
pub mod pool;
mod runner;
mod spec;
mod types;
mod violation;

use std::path::PathBuf;

#[doc(inline)]
pub use deepconf_confidence as confidence;
#[doc(inline)]
pub use deepconf_policy as policy;

pub use error::{Error, Result};
pub use model::{
    Capabilities, LogprobModel, NoObserver, TokenControl, TokenObserver, TraceBuilder,
};
pub use runner::{
    AnswerExtractor, Extracted, PromptOutcome, RunConfig, Runner, Termination, TokenProgress,
    TraceRecord,
};
pub use spec::{StopReason, TraceSpec};
pub use types::{ChatMessage, GenerationRequest, Prompt, Role, SamplingParams, TokenStep, Trace};
pub use violation::Violation;

/// Environment variable that overrides the cache directory of models and data.
pub const CACHE_ENV: &str = "DEEPCONF_CACHE";

/// The cache directory of the embedded default model and the fetched data: `$DEEPCONF_CACHE`, else
/// `$XDG_CACHE_HOME/deepconf`, else `$HOME/.cache/deepconf` (`%USERPROFILE%` on Windows), else
/// `.deepconf-cache` in the current directory. `cargo xtask fetch-model` and `cargo xtask
/// fetch-data` fill it; `deepconf_datasets::default_data_dir` follows the same rule.
pub fn cache_dir() -> PathBuf {
    let from_env = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from_env(CACHE_ENV)
        .or_else(|| from_env("XDG_CACHE_HOME").map(|p| p.join("deepconf")))
        .or_else(|| {
            from_env("HOME")
                .or_else(|| from_env("USERPROFILE"))
                .map(|p| p.join(".cache").join("deepconf"))
        })
        .unwrap_or_else(|| PathBuf::from(".deepconf-cache"))
}
