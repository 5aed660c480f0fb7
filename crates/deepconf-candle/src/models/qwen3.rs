//! Qwen3 dense models, from llama.cpp GGUF files (`general.architecture = qwen3`) or from Hugging
//! Face checkpoints (`config.json` + `*.safetensors`). Follows
//! <https://github.com/huggingface/transformers/blob/main/src/transformers/models/qwen3/modeling_qwen3.py>:
//! per-head RMSNorm on queries and keys before rotary embeddings (NeoX pairing), explicit
//! `head_dim`, optionally tied embeddings.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::decoder::{Decoder, DecoderConfig, LayerWeights, RopeStyle};
use crate::kernels::WeightMatrix;
use crate::models::{GgufFile, SafetensorsWeights, check_shapes, gguf_decoder};
use crate::{Error, Result, WeightFormat};

/// Builds the decoder of a `general.architecture = qwen3` GGUF.
pub(crate) fn load_gguf(gguf: &mut GgufFile, format: WeightFormat) -> Result<Decoder> {
    let hidden = gguf.usize("qwen3.embedding_length")?;
    let heads = gguf.usize("qwen3.attention.head_count")?;
    let layers = gguf.usize("qwen3.block_count")?;
    let config = DecoderConfig {
        hidden,
        layers,
        heads,
        kv_heads: gguf.usize("qwen3.attention.head_count_kv")?,
        head_dim: gguf
            .usize("qwen3.attention.key_length")
            .unwrap_or(hidden / heads.max(1)),
        rms_eps: gguf.f32_or("qwen3.attention.layer_norm_rms_epsilon", 1e-6)?,
        rope_theta: gguf.f32_or("qwen3.rope.freq_base", 1_000_000.0)?,
        rope_style: RopeStyle::Neox,
        context_length: gguf.usize("qwen3.context_length")?,
        vocab: 0,
    };
    gguf_decoder(gguf, config, true, format)
}

/// The fields of a Hugging Face Qwen3 `config.json` that the forward pass needs.
#[derive(Debug, Deserialize)]
struct Qwen3Config {
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: usize,
    head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    rms_norm_eps: f32,
    #[serde(default = "default_theta")]
    rope_theta: f32,
    max_position_embeddings: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
}

fn default_eps() -> f32 {
    1e-6
}
fn default_theta() -> f32 {
    1_000_000.0
}

/// Builds the decoder of a Hugging Face Qwen3 checkpoint directory.
pub(crate) fn load_safetensors(
    dir: &Path,
    weight_files: &[PathBuf],
    format: WeightFormat,
) -> Result<Decoder> {
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|source| Error::Io {
        path: config_path.clone(),
        source,
    })?;
    let cfg: Qwen3Config = serde_json::from_str(&text).map_err(|e| Error::Model {
        path: config_path.clone(),
        message: format!("invalid Qwen3 config: {e}"),
    })?;
    let st = SafetensorsWeights::load(dir, weight_files)?;
    let layers = (0..cfg.num_hidden_layers)
        .map(|i| {
            let p = format!("model.layers.{i}");
            Ok(LayerWeights {
                attn_norm: st.vector(&format!("{p}.input_layernorm.weight"))?,
                qkv: WeightMatrix::stack_rows(vec![
                    st.matrix(&format!("{p}.self_attn.q_proj.weight"), format)?,
                    st.matrix(&format!("{p}.self_attn.k_proj.weight"), format)?,
                    st.matrix(&format!("{p}.self_attn.v_proj.weight"), format)?,
                ]),
                q_norm: Some(st.vector(&format!("{p}.self_attn.q_norm.weight"))?),
                k_norm: Some(st.vector(&format!("{p}.self_attn.k_norm.weight"))?),
                attn_out: st.matrix(&format!("{p}.self_attn.o_proj.weight"), format)?,
                ffn_norm: st.vector(&format!("{p}.post_attention_layernorm.weight"))?,
                gate_up: WeightMatrix::stack_rows(vec![
                    st.matrix(&format!("{p}.mlp.gate_proj.weight"), format)?,
                    st.matrix(&format!("{p}.mlp.up_proj.weight"), format)?,
                ]),
                down: st.matrix(&format!("{p}.mlp.down_proj.weight"), format)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let embedding = st.matrix("model.embed_tokens.weight", format)?;
    let output = if cfg.tie_word_embeddings || !st.has("lm_head.weight") {
        None
    } else {
        Some(st.matrix("lm_head.weight", format)?)
    };
    let vocab = output.as_ref().unwrap_or(&embedding).rows();
    let decoder = Decoder {
        config: DecoderConfig {
            hidden: cfg.hidden_size,
            layers: cfg.num_hidden_layers,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim: cfg
                .head_dim
                .unwrap_or(cfg.hidden_size / cfg.num_attention_heads.max(1)),
            rms_eps: cfg.rms_norm_eps,
            rope_theta: cfg.rope_theta,
            rope_style: RopeStyle::Neox,
            context_length: cfg.max_position_embeddings,
            vocab,
        },
        embedding,
        layers,
        final_norm: st.vector("model.norm.weight")?,
        output,
    };
    check_shapes(&decoder, dir)?;
    Ok(decoder)
}
