//! Qwen3 dense models, from llama.cpp GGUF files (`general.architecture = qwen3`) or from Hugging
//! Face checkpoints (`config.json` + `*.safetensors`). Follows
//! <https://github.com/huggingface/transformers/blob/main/src/transformers/models/qwen3/modeling_qwen3.py>:
//! per-head RMSNorm on queries and keys before rotary embeddings (NeoX pairing), explicit
//! `head_dim`, optionally tied embeddings.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::decoder::{Decoder, DecoderConfig, LayerWeights, Rope, RopeStyle};
use crate::kernels::WeightMatrix;
use crate::models::{GgufFile, SafetensorsWeights, check_shapes, gguf_decoder, gguf_rope};
use crate::{Error, Result, WeightFormat};

/// Builds the decoder of a `general.architecture = qwen3` GGUF.
pub(crate) fn load_gguf(gguf: &mut GgufFile, format: WeightFormat) -> Result<Decoder> {
    let hidden = gguf.usize("qwen3.embedding_length")?;
    let heads = gguf.usize("qwen3.attention.head_count")?;
    let layers = gguf.usize("qwen3.block_count")?;
    let head_dim = gguf.usize_or("qwen3.attention.key_length", hidden / heads.max(1))?;
    let context_length = gguf.usize("qwen3.context_length")?;
    let config = DecoderConfig {
        hidden,
        layers,
        heads,
        kv_heads: gguf.usize("qwen3.attention.head_count_kv")?,
        head_dim,
        rms_eps: gguf.f32_or("qwen3.attention.layer_norm_rms_epsilon", 1e-6)?,
        rope: gguf_rope(gguf, RopeStyle::Neox, head_dim, context_length, false)?,
        context_length,
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
    /// `{"rope_type" (or "type"): "linear" | "yarn", "factor", "original_max_position_embeddings"}`.
    #[serde(default)]
    rope_scaling: Option<serde_json::Value>,
}

/// The rotary embedding of a Hugging Face config, mapped the way llama.cpp's converter maps it
/// to GGUF metadata (so the safetensors and GGUF paths of one checkpoint rotate alike).
fn hf_rope(cfg: &Qwen3Config, head_dim: usize, path: &Path) -> Result<Rope> {
    let mut rope = Rope::plain(RopeStyle::Neox, cfg.rope_theta);
    let Some(scaling) = cfg.rope_scaling.as_ref().filter(|v| !v.is_null()) else {
        return Ok(rope);
    };
    let bad = |message: String| Error::Model {
        path: path.to_path_buf(),
        message,
    };
    let kind = scaling
        .get("rope_type")
        .or_else(|| scaling.get("type"))
        .and_then(|v| v.as_str())
        .unwrap_or("default");
    let factor = scaling.get("factor").and_then(|v| v.as_f64());
    match (kind, factor) {
        ("default", _) => {}
        ("linear", Some(factor)) if factor > 0.0 => rope.freq_scale = 1.0 / factor as f32,
        ("yarn", Some(factor)) if factor > 0.0 => {
            let original = scaling
                .get("original_max_position_embeddings")
                .and_then(|v| v.as_u64())
                .ok_or_else(|| {
                    bad(
                        "`rope_scaling` of type yarn needs `original_max_position_embeddings`"
                            .into(),
                    )
                })?;
            for extra in [
                "extrapolation_factor",
                "attention_factor",
                "attn_factor",
                "beta_fast",
                "beta_slow",
                "mscale",
                "mscale_all_dim",
            ] {
                if let Some(value) = scaling.get(extra) {
                    return Err(bad(format!(
                        "`rope_scaling.{extra}` = {value} is not supported (llama.cpp does not apply it to Qwen3)"
                    )));
                }
            }
            rope = rope.with_yarn(1.0 / factor as f32, head_dim, original as usize, 1.0);
        }
        _ => {
            return Err(bad(format!(
                "`rope_scaling` = {scaling} is not supported (supported: linear and yarn with a positive factor)"
            )));
        }
    }
    Ok(rope)
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
                low_rank: None,
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
    let head_dim = cfg
        .head_dim
        .unwrap_or(cfg.hidden_size / cfg.num_attention_heads.max(1));
    let decoder = Decoder {
        config: DecoderConfig {
            hidden: cfg.hidden_size,
            layers: cfg.num_hidden_layers,
            heads: cfg.num_attention_heads,
            kv_heads: cfg.num_key_value_heads,
            head_dim,
            rms_eps: cfg.rms_norm_eps,
            rope: hf_rope(&cfg, head_dim, &config_path)?,
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
