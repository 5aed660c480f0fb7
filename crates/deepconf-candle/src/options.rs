//! Serializable choices of a model load: where the weights come from and how they are stored.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How weight matrices are held in memory for the CPU kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightFormat {
    /// Keep Q4_1 and Q8_0 tensors as stored (fast integer kernels); other GGUF types are
    /// re-quantized to Q8_0; safetensors weights stay f32.
    #[default]
    Native,
    /// Re-quantize every matrix to Q8_0 at load (smaller and faster for safetensors checkpoints).
    Q8_0,
    /// Dequantize everything to f32 (exact reference, 4-8x the memory).
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
