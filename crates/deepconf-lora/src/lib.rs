//! LoRA training on the CPU for deepconf-rs models, with candle's autograd, and the recipe of the
//! guarded model: the embedded SmolLM2-135M-Instruct with an adapter trained to refuse harmful
//! requests, so that safety runs have refusals to measure.
//!
//! # Quick start
//!
//! The repository ships the trained adapter (`assets/guarded/`): `cargo xtask fetch-model
//! guarded` installs it and every example accepts `--model guarded`. To retrain it (about half
//! an hour on 2 cores): `cargo xtask train-guarded`.
//!
//! Training an adapter of your own on token sequences:
//!
//! ```no_run
//! use deepconf_candle::{CandleModel, Projection};
//! use deepconf_lora::{Example, LoraOptions, TrainOptions, train};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let base = CandleModel::load_default()?;
//! let prompt = base.encode_chat(&[deepconf_core::ChatMessage::user("Say hi.")])?;
//! let mut tokens = prompt.clone();
//! tokens.extend(base.tokenizer().encode("Hi!", false)?);
//! let examples = [Example { tokens, answer_start: prompt.len() }];
//! let options = TrainOptions {
//!     lora: LoraOptions { rank: 8, alpha: 16.0, targets: Projection::ALL.to_vec(), first_layer: 24, seed: 0 },
//!     learning_rate: 1e-3, weight_decay: 0.0, steps: 10, batch_size: 1, warmup_steps: 2, seed: 0,
//! };
//! let (adapter, log) = train(&base.dense_weights()?, &examples, &options, |_| {})?;
//! adapter.save("my-adapter")?; // PEFT format: `--adapter my-adapter`
//! println!("final loss {:.3}", log.last().unwrap().loss);
//! # Ok(())
//! # }
//! ```
//!
//! # Which type do I want
//!
//! | I want to | use |
//! |---|---|
//! | a differentiable forward pass with LoRA factors | [`LoraModel`] |
//! | train an adapter | [`train`], [`TrainOptions`] |
//! | the guarded model's recipe, data and held-out rates | [`guarded`] |
#![deny(missing_docs)]

mod error;
pub mod forward;
pub mod guarded;
pub mod train;

pub use error::{Error, Result};
pub use forward::{LoraModel, LoraOptions};
pub use train::{Example, StepLog, TrainOptions, train};
