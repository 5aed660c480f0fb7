//! The weights of a loaded model as dense f32 matrices with Hugging Face names and layout
//! ([`DenseModel`]), so that another crate can run a differentiable forward pass over them (LoRA
//! training) while generation keeps the quantized kernels.

use std::collections::BTreeMap;

use crate::decoder::{Decoder, RopeStyle};
use crate::{Error, Result};

/// One dense tensor: its shape (rows first) and its values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseTensor {
    /// Shape: `[len]` for vectors, `[rows, cols]` (output features first) for matrices.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

/// Shape and hyper-parameters of a [`DenseModel`] (a Llama-style decoder).
#[derive(Debug, Clone, PartialEq)]
pub struct DenseConfig {
    /// Width of the residual stream.
    pub hidden: usize,
    /// Width of the MLP.
    pub intermediate: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Size of a head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Rotary embedding base; rotations pair dimension `i` with `i + head_dim / 2` (Hugging Face
    /// layout, whatever the file's layout was).
    pub rope_theta: f32,
    /// Vocabulary size.
    pub vocab: usize,
    /// Whether queries and keys get a per-head RMSNorm (Qwen3).
    pub qk_norm: bool,
}

/// A model's weights as dense f32 with Hugging Face names (`model.embed_tokens.weight`,
/// `model.layers.N.self_attn.q_proj.weight`, `model.layers.N.input_layernorm.weight`,
/// `model.norm.weight`, `lm_head.weight` when not tied), query and key rows in the Hugging Face
/// layout: the layout PEFT adapters are trained in.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseModel {
    /// Shape and hyper-parameters.
    pub config: DenseConfig,
    /// Tensors by name.
    pub tensors: BTreeMap<String, DenseTensor>,
    /// The model's id (file name).
    pub model_id: String,
}

impl DenseModel {
    /// The tensor called `name`, or an error naming it.
    pub fn tensor(&self, name: &str) -> Result<&DenseTensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| Error::InvalidParameter {
                parameter: "name",
                reason: format!("model `{}` has no tensor `{name}`", self.model_id),
            })
    }
}

fn matrix(m: &crate::kernels::WeightMatrix, first: usize, rows: usize) -> DenseTensor {
    let cols = m.cols();
    let mut data = vec![0f32; rows * cols];
    for (r, row) in data.chunks_exact_mut(cols).enumerate() {
        m.dequantize_row(first + r, row);
    }
    DenseTensor {
        shape: vec![rows, cols],
        data,
    }
}

/// Undoes llama.cpp's interleaving of each head's halves (see `lora/apply.rs`).
fn to_hf_layout(t: DenseTensor, head_dim: usize) -> DenseTensor {
    let cols = t.shape[1];
    let mut data = vec![0f32; t.data.len()];
    for (row, src) in t.data.chunks_exact(cols).enumerate() {
        let (head, r) = (row / head_dim, row % head_dim);
        let hf = head * head_dim + (r % 2) * (head_dim / 2) + r / 2;
        data[hf * cols..(hf + 1) * cols].copy_from_slice(src);
    }
    DenseTensor { data, ..t }
}

fn vector(v: &[f32]) -> DenseTensor {
    DenseTensor {
        shape: vec![v.len()],
        data: v.to_vec(),
    }
}

/// Exports `decoder` (plain rotary embeddings only: scaled ones are an error).
pub(crate) fn export(decoder: &Decoder, model_id: &str) -> Result<DenseModel> {
    let c = &decoder.config;
    let rope = &c.rope;
    if rope.freq_scale != 1.0
        || rope.freq_factors.is_some()
        || rope.yarn.is_some()
        || rope.mscale != 1.0
    {
        return Err(Error::InvalidParameter {
            parameter: "model",
            reason: format!(
                "`{model_id}` uses scaled rotary embeddings; the dense export supports plain ones"
            ),
        });
    }
    if decoder.layers.iter().any(|l| l.low_rank.is_some()) {
        return Err(Error::InvalidParameter {
            parameter: "model",
            reason: "the model carries an unmerged adapter; export the base model".into(),
        });
    }
    let (q_rows, kv_rows) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
    let intermediate = decoder.layers.first().map_or(0, |l| l.gate_up.rows() / 2);
    let permuted = rope.style == RopeStyle::Interleaved;
    let mut tensors = BTreeMap::new();
    tensors.insert(
        "model.embed_tokens.weight".to_string(),
        matrix(&decoder.embedding, 0, decoder.embedding.rows()),
    );
    for (i, l) in decoder.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        let mut q = matrix(&l.qkv, 0, q_rows);
        let mut k = matrix(&l.qkv, q_rows, kv_rows);
        if permuted {
            q = to_hf_layout(q, c.head_dim);
            k = to_hf_layout(k, c.head_dim);
        }
        let mut put = |name: &str, t: DenseTensor| {
            tensors.insert(format!("{p}.{name}"), t);
        };
        put("input_layernorm.weight", vector(&l.attn_norm));
        put("self_attn.q_proj.weight", q);
        put("self_attn.k_proj.weight", k);
        put(
            "self_attn.v_proj.weight",
            matrix(&l.qkv, q_rows + kv_rows, kv_rows),
        );
        put(
            "self_attn.o_proj.weight",
            matrix(&l.attn_out, 0, l.attn_out.rows()),
        );
        if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
            put("self_attn.q_norm.weight", vector(qn));
            put("self_attn.k_norm.weight", vector(kn));
        }
        put("post_attention_layernorm.weight", vector(&l.ffn_norm));
        put("mlp.gate_proj.weight", matrix(&l.gate_up, 0, intermediate));
        put(
            "mlp.up_proj.weight",
            matrix(&l.gate_up, intermediate, intermediate),
        );
        put("mlp.down_proj.weight", matrix(&l.down, 0, l.down.rows()));
    }
    tensors.insert("model.norm.weight".into(), vector(&decoder.final_norm));
    if let Some(output) = &decoder.output {
        tensors.insert("lm_head.weight".into(), matrix(output, 0, output.rows()));
    }
    Ok(DenseModel {
        config: DenseConfig {
            hidden: c.hidden,
            intermediate,
            layers: c.layers,
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.head_dim,
            rms_eps: c.rms_eps,
            rope_theta: rope.freq_base,
            vocab: c.vocab,
            qk_norm: decoder.layers.first().is_some_and(|l| l.q_norm.is_some()),
        },
        tensors,
        model_id: model_id.to_string(),
    })
}
