//! The local backend of deepconf-core: a CPU inference engine for GGUF and safetensors models that
//! reports the top-k log-probabilities of every generated token, with the traces of every prompt in
//! flight decoded together (continuous batching).
//!
//! The forward pass is this crate's own: a decoder-only transformer (`decoder.rs`) over integer
//! matrix kernels (`kernels/`), on the CPU. [candle](https://github.com/huggingface/candle)
//! (`candle-core`, on its CPU device) is used only at load time: to read GGUF and safetensors files
//! and to convert weights (dequantizing where a weight type or the chosen [`WeightFormat`] asks for
//! it), and to read and write LoRA adapters' safetensors.
//!
//! # Quick start
//!
//! Needs the default model in the cache (`cargo xtask fetch-model`).
//!
//! ```
//! use deepconf_candle::CandleModel;
//! use deepconf_core::{GenerationRequest, LogprobModel, NoObserver, SamplingParams, TraceSpec};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut model = CandleModel::load_default()?;
//! let request = GenerationRequest::user("Say hi.", SamplingParams::default().with_max_tokens(8));
//! let specs = [TraceSpec::derive(0, 0), TraceSpec::derive(0, 1)];
//! let traces = model.generate_batch(&request, &specs, &mut NoObserver)?;
//! for trace in &traces {
//!     assert_eq!(trace.steps[0].top_logprobs.len(), 20);
//!     println!("{:?}: {}", trace.stop_reason, trace.text);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - Llama-family GGUF models (the default SmolLM2-135M-Instruct Q4_1, any `llama` GGUF, with
//!   Llama 3.1+ frequency factors, linear or YaRN RoPE scaling) and Qwen3 from GGUF or from a
//!   Hugging Face checkpoint (`config.json` + `*.safetensors` + `tokenizer.json`), from a local
//!   directory or the hub ([`ModelSource::Hub`]). What was checked against llama.cpp, per
//!   architecture, weight type and tokenizer: `docs/models.md`.
//! - GGUF weights in Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K (so the common Q4_K_M and
//!   Q5_K_M mixes), F16, BF16 and F32 run in their own precision; other types are an error that
//!   names the tensor (see [`WeightFormat`]).
//! - Tokenizers built from GGUF metadata, byte-level BPE and SentencePiece (Llama 2, Mistral,
//!   Phi-3), that equal llama.cpp on its own tokenizer test files, and chat templates run by
//!   minijinja; Qwen3 thinking is off by default. [`Trace::text`] is the raw generated text
//!   (a `<think>` block included): what a classifier sees is decided on the classifier's side.
//! - LoRA adapters in PEFT's format ([`LoraAdapter`]: `adapter_config.json` +
//!   `adapter_model.safetensors`, factors of any of the seven attention and MLP projections),
//!   merged into Q8_0 weights at load (the default) or applied unmerged in f32
//!   ([`AdapterMode`]); query/key deltas are permuted into llama.cpp's GGUF row layout. Merged and
//!   unmerged logits agree within the Q8_0 rounding (tested).
//! - Sampling with temperature, top-p, top-k and a per-trace seed; the reported top-k
//!   log-probabilities are taken from the raw logits **before** temperature, top-k and top-p (as
//!   vLLM and llama.cpp report them), so confidences do not depend on the sampling settings.
//! - Continuous batching: one decoder thread decodes up to `max_batch_size` traces of any mix of
//!   prompts per forward pass; threads holding handles of the model
//!   ([`LogprobModel::concurrent_handle`](deepconf_core::LogprobModel::concurrent_handle)) share it.
//!   A prompt is prefilled once for its traces; each trace stops on its own (EOS, `max_tokens`,
//!   context full, or the [`TokenObserver`](deepconf_core::TokenObserver)) and the next waiting
//!   trace takes its row. A trace's tokens do not depend on what shares the batch.
//! - CPU kernels for 4-bit, 5-bit and 8-bit blocks and f32 in integer arithmetic, with activations
//!   quantized as llama.cpp quantizes them: AVX-512 VNNI or AVX2 when the CPU has them (detected
//!   at run time; `DEEPCONF_KERNELS=avx2` or `=scalar` caps the choice), portable Rust otherwise.
//!   There is no GPU path and no feature flags: the forward pass always runs on the CPU.
//!   Measured speed against llama.cpp: `docs/benchmarks.md`.
//!
//! # Which type do I want
//!
//! | I want to | use |
//! |---|---|
//! | run the embedded default model | [`CandleModel::load_default`] |
//! | load a GGUF file or a checkpoint directory | [`CandleModel::load`] |
//! | choose the source, weight format, thinking mode, batch size | [`CandleModelBuilder`] |
//! | name a model source in a run configuration (serde) | [`ModelSource`], [`WeightFormat`] |
//! | tokenize like llama.cpp | [`Tokenizer`] |
//! | apply a PEFT LoRA adapter (merged or not) | [`LoraAdapter`], [`CandleModelBuilder::adapter`] |
//! | render a chat prompt | [`ChatTemplate`] |
//!
//! [`Trace::text`]: deepconf_core::Trace::text
#![deny(missing_docs)]

mod batcher;
pub mod chat;
mod decoder;
pub mod dense;
mod error;
pub mod hub;
mod kernels;
pub mod lora;
mod model;
mod models;
mod options;
mod sampling;
pub mod tokenizer;

pub use chat::{ChatTemplate, RenderOptions};
pub use dense::DenseModel;
pub use error::{Error, Result};
pub use lora::{AdapterMode, LoraAdapter, LoraConfig, Projection};
pub use model::{CandleModel, CandleModelBuilder, DEFAULT_MODEL_FILE, default_model_path};
pub use options::{ModelSource, WeightFormat};
pub use tokenizer::Tokenizer;
