//! Llama-family GGUF models (SmolLM2, Llama 2/3, Mistral-style dense models) as written by
//! llama.cpp's converter. Metadata keys and tensor names follow
//! <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md> and llama.cpp's `llama-arch.cpp`;
//! the converter permutes Q/K rows so rotary embeddings pair adjacent dimensions.

use crate::decoder::{Decoder, DecoderConfig, RopeStyle};
use crate::models::{GgufFile, gguf_decoder};
use crate::{Result, WeightFormat};

/// Builds the decoder of a `general.architecture = llama` GGUF.
pub(crate) fn load_gguf(gguf: &mut GgufFile, format: WeightFormat) -> Result<Decoder> {
    let arch = gguf.architecture()?;
    let key = |k: &str| format!("{arch}.{k}");
    let hidden = gguf.usize(&key("embedding_length"))?;
    let heads = gguf.usize(&key("attention.head_count"))?;
    let kv_heads = gguf.usize(&key("attention.head_count_kv")).unwrap_or(heads);
    let layers = gguf.usize(&key("block_count"))?;
    let head_dim = gguf
        .usize(&key("rope.dimension_count"))
        .unwrap_or(hidden / heads.max(1));
    let config = DecoderConfig {
        hidden,
        layers,
        heads,
        kv_heads,
        head_dim,
        rms_eps: gguf.f32_or(&key("attention.layer_norm_rms_epsilon"), 1e-5)?,
        rope_theta: gguf.f32_or(&key("rope.freq_base"), 10_000.0)?,
        rope_style: RopeStyle::Interleaved,
        context_length: gguf.usize(&key("context_length"))?,
        vocab: 0,
    };
    gguf_decoder(gguf, config, false, format)
}
