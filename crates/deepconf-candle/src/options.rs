//! Serializable choices of a model load: where the weights come from and how they are stored.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How weight matrices are held in memory for the CPU kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightFormat {
    /// Run GGUF weights in their own precision: Q4_0, Q4_1, Q4_K (4-bit kernels), Q5_0, Q5_1,
    /// Q5_K (5-bit kernels), Q8_0 and Q6_K (8-bit kernels) are converted block by block with
    /// every weight value kept exactly (K-quant sub-block scales become f32 per-block scales);
    /// F32, F16 and BF16 matrices, and safetensors weights, run as f32. A GGUF tensor of any
    /// other type (Q2_K, Q3_K, ...) is an error naming the tensor: choose [`WeightFormat::Q8_0`]
    /// or [`WeightFormat::F32`] to convert it at load.
    #[default]
    Native,
    /// Re-quantize every matrix that is not already Q8_0 to Q8_0 at load (smaller and faster
    /// than f32 for safetensors checkpoints; a second rounding for quantized GGUF weights).
    Q8_0,
    /// Dequantize everything to f32 (exact reference, 4-8x the memory of a 4-bit file).
    F32,
}

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSource {
    /// The embedded default: SmolLM2-135M-Instruct Q4_1 in the deepconf cache
    /// (see [`default_model_path`](crate::default_model_path)).
    Default,
    /// A GGUF file (architecture `llama` or `qwen3`).
    Gguf {
        /// The `.gguf` file.
        path: PathBuf,
    },
    /// A Hugging Face checkpoint directory: `config.json`, `*.safetensors`, `tokenizer.json` and
    /// optionally `tokenizer_config.json` (chat template).
    SafetensorsDir {
        /// The directory.
        path: PathBuf,
    },
    /// A Hugging Face hub repository (safetensors), downloaded into the HF cache. Honours `HF_TOKEN`
    /// and offline mode.
    Hub {
        /// Repository id, e.g. `Qwen/Qwen3-0.6B`.
        repo_id: String,
        /// Branch, tag or commit; `None` means `main`.
        revision: Option<String>,
    },
}

impl ModelSource {
    /// Picks [`ModelSource::Gguf`] for a file and [`ModelSource::SafetensorsDir`] for a directory.
    pub fn from_path(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        if path.is_dir() {
            ModelSource::SafetensorsDir { path }
        } else {
            ModelSource::Gguf { path }
        }
    }
}
