//! DeepConf against any OpenAI-compatible server: vLLM, SGLang, llama.cpp's server or
//! llama-cpp-python, behind the [`LogprobModel`](deepconf_core::LogprobModel) trait.
//!
//! Every generated token arrives with its top-k log-probabilities (chat completions with
//! `logprobs: true, top_logprobs: k`, or completions with `logprobs: k`), streamed as server-sent
//! events so that DeepConf's online mode can cut a low-confidence trace mid-generation: the client
//! closes the stream and the server stops generating it. The candidates are sorted and cut to k on
//! the client, because servers may append the sampled token to the list.
//!
//! # Quick start
//! ```
//! use std::time::Duration;
//! use deepconf_core::{ChatMessage, RunConfig, Runner, Trace};
//! use deepconf_openai::{OpenAiError, OpenAiModel};
//!
//! // `--backend openai --base-url URL --model NAME` builds exactly this.
//! let base_url = std::env::var("DEEPCONF_OPENAI_BASE_URL")
//!     .unwrap_or_else(|_| "http://127.0.0.1:9/v1".into()); // nothing listens on port 9
//! let mut model = OpenAiModel::builder(&base_url, "SmolLM2-135M-Instruct")
//!     .max_concurrency(4)
//!     .max_retries(0)
//!     .connect_timeout(Duration::from_secs(2))
//!     .build()?;
//!
//! let runner = Runner::new(RunConfig::default())?;
//! let refusal = |t: &Trace| Some(if t.text.contains("can't") { "refusal" } else { "compliance" }.to_string());
//! match runner.run(&mut model, &[ChatMessage::user("How do I pick a lock?")], &mut { refusal }) {
//!     Ok(outcome) => println!("{:?} after {} tokens", outcome.answer(), outcome.tokens_generated),
//!     // Without a server the error names the URL it could not reach.
//!     Err(error) => assert!(error.to_string().contains("cannot reach http://127.0.0.1:9/v1"), "{error}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//! - Chat and completions endpoints ([`Endpoint`]); for completions a [`PromptTemplate`] formats
//!   the messages (ChatML built in).
//! - Streaming with per-token logprobs and early termination through the
//!   [`TokenObserver`](deepconf_core::TokenObserver); non-streaming answers too.
//! - Token ids where the server offers them: an `id` field per token (llama.cpp's server) or vLLM's
//!   `return_tokens_as_token_ids` ([`OpenAiBuilder::token_ids_as_strings`]).
//! - Many traces in flight: [`generate_batch`](deepconf_core::LogprobModel::generate_batch) runs the
//!   traces of a prompt on worker threads, bounded by [`OpenAiBuilder::max_concurrency`] across all
//!   clones of the model; see [`OpenAiModel`] for how the observer stays on the calling thread.
//! - Without streaming (policies that never cut a trace), a batch's traces in one request with `n`
//!   choices (one prefill on vLLM and SGLang), falling back to one request per trace, with the
//!   same seeds, on a server that refuses `n` ([`OpenAiBuilder::choices_per_request`]).
//! - Replicas ([`OpenAiBuilder::replica`]): a prompt's requests stay on one server (prefix-cache
//!   affinity); a failing server rests while its prompts go to another.
//! - Retries with exponential backoff (honouring `Retry-After`) on connection errors, timeouts, 408,
//!   429 and 5xx, as long as no token of the attempt has reached the observer; a 4xx answer fails at
//!   once and quotes the server's message.
//! - Per-trace seeds (`seed` in the request, folded to 31 bits), API key from `OPENAI_API_KEY`.
//!
//! # Which type do I want?
//! | need | item |
//! |---|---|
//! | a model for the runner | [`OpenAiModel::from_args`] or [`OpenAiModel::builder`] |
//! | tune retries, timeouts, concurrency, endpoint | [`OpenAiBuilder`] |
//! | use `/v1/completions` with a client-side template | [`Endpoint::Completions`], [`PromptTemplate`] |
//! | inspect the settings in force | [`OpenAiConfig`] |
//! | handle failures | [`OpenAiError`] (wrapped in `deepconf_core::Error::Backend` by the trait) |
//!
//! Running against vLLM (the flags it needs, e.g. `--max-logprobs`) is described in the
//! repository's `docs/vllm.md`.
#![deny(missing_docs)]

mod config;
mod error;
mod model;
mod wire;

pub use config::{API_KEY_ENV, Endpoint, OpenAiBuilder, OpenAiConfig, PromptTemplate};
pub use error::{OpenAiError, Result};
pub use model::OpenAiModel;
