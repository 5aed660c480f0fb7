//! Llama-family GGUF models (SmolLM2, Llama 2/3, Mistral-style dense models) as written by
//! llama.cpp's converter. Metadata keys and tensor names follow
//! <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md> and llama.cpp's `llama-arch.cpp`;
//! the converter permutes Q/K rows so rotary embeddings pair adjacent dimensions. RoPE scaling
//! (Llama 3.1+ `rope_freqs.weight`, linear and YaRN metadata) is read by
//! [`gguf_rope`](crate::models::gguf_rope).

use crate::decoder::{Decoder, DecoderConfig, RopeStyle};
use crate::models::{GgufFile, gguf_decoder, gguf_rope};
use crate::{Error, Result, WeightFormat};

/// Builds the decoder of a `general.architecture = llama` GGUF.
pub(crate) fn load_gguf(gguf: &mut GgufFile, format: WeightFormat) -> Result<Decoder> {
    let arch = gguf.architecture()?;
    let key = |k: &str| format!("{arch}.{k}");
    let hidden = gguf.usize(&key("embedding_length"))?;
    let heads = gguf.usize(&key("attention.head_count"))?;
    let kv_heads = gguf.usize(&key("attention.head_count_kv")).unwrap_or(heads);
    let layers = gguf.usize(&key("block_count"))?;
    let head_dim = gguf.usize_or(&key("attention.key_length"), hidden / heads.max(1))?;
    let rotated = gguf.usize_or(&key("rope.dimension_count"), head_dim)?;
    if rotated != head_dim {
        return Err(Error::Model {
            path: gguf.path.clone(),
            message: format!(
                "`{arch}.rope.dimension_count` = {rotated} differs from the head size {head_dim}: partial rotary embeddings are not supported"
            ),
        });
    }
    let context_length = gguf.usize(&key("context_length"))?;
    let rope = gguf_rope(gguf, RopeStyle::Interleaved, head_dim, context_length, true)?;
    let config = DecoderConfig {
        hidden,
        layers,
        heads,
        kv_heads,
        head_dim,
        rms_eps: gguf.f32_or(&key("attention.layer_norm_rms_epsilon"), 1e-5)?,
        rope,
        context_length,
        vocab: 0,
    };
    gguf_decoder(gguf, config, false, format)
}
