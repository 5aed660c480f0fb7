//! LoRA adapters in PEFT's file format: `adapter_config.json` (rank, alpha, target modules) and
//! `adapter_model.safetensors` with keys such as
//! `base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight` (`rank x in`) and `...lora_B.weight`
//! (`out x rank`). The update of a projection `W` (`out x in`) is `W + (alpha / rank) * B A`
//! (`alpha / sqrt(rank)` with `use_rslora`).
//!
//! The factors are kept in the Hugging Face layout the adapter was trained in; llama.cpp's Llama
//! GGUF files hold the query and key rows permuted (each head's two halves interleaved so that
//! rotary embeddings pair adjacent dimensions), so [`CandleModelBuilder::adapter`](crate::CandleModelBuilder::adapter)
//! permutes the rows of those deltas the same way before adding them.
//!
//! The module is in three parts: what an adapter is ([`Projection`], [`AdapterMode`], here), its
//! file format (`peft.rs`: [`LoraConfig`], [`LoraAdapter::load`], [`LoraAdapter::save`]), and
//! its application to a loaded decoder (`apply.rs`), which the model loader calls.

mod apply;
mod peft;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub(crate) use apply::apply_adapter;
pub use peft::{ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, LoraAdapter, LoraConfig, LoraFactors};

use crate::WeightFormat;

/// Directory name of the guarded adapter inside `<cache>/models/`.
pub const GUARDED_ADAPTER_DIR: &str = "SmolLM2-135M-Instruct-guarded-lora";

/// Where the guarded adapter of the default model lives: `<cache>/models/SmolLM2-135M-Instruct-guarded-lora/`
/// (`cargo xtask fetch-model guarded` installs it there).
pub fn guarded_adapter_dir() -> PathBuf {
    deepconf_core::cache_dir()
        .join("models")
        .join(GUARDED_ADAPTER_DIR)
}

/// A projection of a transformer block that a LoRA adapter can update, by its Hugging Face name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Projection {
    /// `self_attn.q_proj`.
    QProj,
    /// `self_attn.k_proj`.
    KProj,
    /// `self_attn.v_proj`.
    VProj,
    /// `self_attn.o_proj`.
    OProj,
    /// `mlp.gate_proj`.
    GateProj,
    /// `mlp.up_proj`.
    UpProj,
    /// `mlp.down_proj`.
    DownProj,
}

impl Projection {
    /// Every projection, in the order of the forward pass.
    pub const ALL: [Projection; 7] = [
        Projection::QProj,
        Projection::KProj,
        Projection::VProj,
        Projection::OProj,
        Projection::GateProj,
        Projection::UpProj,
        Projection::DownProj,
    ];

    /// The module name PEFT uses in `target_modules` (`q_proj`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Projection::QProj => "q_proj",
            Projection::KProj => "k_proj",
            Projection::VProj => "v_proj",
            Projection::OProj => "o_proj",
            Projection::GateProj => "gate_proj",
            Projection::UpProj => "up_proj",
            Projection::DownProj => "down_proj",
        }
    }

    /// The block the module sits in: `self_attn` or `mlp`.
    pub fn block(self) -> &'static str {
        match self {
            Projection::QProj | Projection::KProj | Projection::VProj | Projection::OProj => {
                "self_attn"
            }
            Projection::GateProj | Projection::UpProj | Projection::DownProj => "mlp",
        }
    }

    /// The projection named `name` (`q_proj`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// One of the two factors of a low-rank update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    /// `lora_A`: `rank x in`, applied first.
    A,
    /// `lora_B`: `out x rank`.
    B,
}

/// How an adapter is applied to a loaded model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterMode {
    /// Added into the weights at load: every updated matrix is dequantized, gets `scale * B A`
    /// and is stored in `format` (Q8_0 by default: the fast 8-bit kernels; a second rounding of
    /// 4-bit weights). [`WeightFormat::Native`] means Q8_0 here, since a merged matrix has no
    /// file format of its own. Untouched matrices keep the builder's weight format.
    Merged(WeightFormat),
    /// Kept apart: the base weights run as loaded and every updated projection adds
    /// `scale * B (A x)` in f32 (exact; slower).
    Unmerged,
}

impl AdapterMode {
    /// [`AdapterMode::Merged`] into Q8_0, the default.
    pub const MERGED_Q8_0: AdapterMode = AdapterMode::Merged(WeightFormat::Q8_0);
}

impl Default for AdapterMode {
    fn default() -> Self {
        Self::MERGED_Q8_0
    }
}
