//! Fixture builders shared by the integration tests.

pub mod llama_cpp;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

/// The embedded default model, or a panic that says how to fetch it (tests never skip silently).
pub fn default_model_path() -> PathBuf {
    let path = deepconf_candle::default_model_path();
    assert!(
        path.is_file(),
        "the default model is missing at {}: run `cargo xtask fetch-model`",
        path.display()
    );
    path
}

/// GPT-2's byte-to-character map of byte-level BPE.
fn byte_chars() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap()
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap()
            }
        })
        .collect()
}

/// Vocabulary of the tiny model: 256 byte tokens, a few merges, then the added tokens.
pub const TINY_VOCAB: usize = 300;
pub const TINY_IM_START: u32 = 266;
pub const TINY_IM_END: u32 = 267;

/// Shape and weight scales of a random Qwen3 checkpoint.
#[derive(Debug, Clone, Copy)]
pub struct Qwen3Shape {
    pub hidden: usize,
    pub inter: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Embedding values are uniform in +-this (tied output: it sets the logit scale).
    pub embedding_scale: f32,
    /// Norm weights are 1 + uniform in +-this.
    pub norm_noise: f32,
}

/// The shape of [`write_tiny_qwen3`]: hidden 64, 2 layers, unit norms.
pub const TINY_QWEN3: Qwen3Shape = Qwen3Shape {
    hidden: 64,
    inter: 128,
    layers: 2,
    heads: 4,
    kv_heads: 2,
    head_dim: 32,
    embedding_scale: 1.0,
    norm_noise: 0.0,
};

/// Writes a byte-level BPE `tokenizer.json` (every byte is a token, so any text encodes), a
/// `tokenizer_config.json` with a ChatML template that honours `enable_thinking`, a Qwen3
/// `config.json` and random `model.safetensors` weights (hidden 64, 2 layers, vocab 300).
pub fn write_tiny_qwen3(dir: &Path, seed: u64) {
    write_qwen3_checkpoint(dir, seed, TINY_QWEN3);
}

/// [`write_tiny_qwen3`] with another shape (vocabulary 300, context 256).
pub fn write_qwen3_checkpoint(dir: &Path, seed: u64, shape: Qwen3Shape) {
    std::fs::create_dir_all(dir).unwrap();
    let chars = byte_chars();
    let mut vocab = serde_json::Map::new();
    for (id, c) in chars.iter().enumerate() {
        vocab.insert(c.to_string(), id.into());
    }
    let merges = [("h", "e"), ("l", "l"), ("he", "ll"), ("Ġ", "t"), ("o", "r")];
    let mut merge_list = vec![];
    for (i, (a, b)) in merges.iter().enumerate() {
        vocab.insert(format!("{a}{b}"), (256 + i).into());
        merge_list.push(serde_json::json!([a, b]));
    }
    let added = [
        "<|endoftext|>",
        "<think>",
        "</think>",
        "<|im_start|>",
        "<|im_end|>",
    ];
    let added_tokens: Vec<_> = added
        .iter()
        .enumerate()
        .map(|(i, t)| {
            serde_json::json!({"id": 263 + i, "content": t, "special": true,
            "single_word": false, "lstrip": false, "rstrip": false, "normalized": false})
        })
        .collect();
    assert_eq!(
        263 + added.iter().position(|t| *t == "<|im_start|>").unwrap() as u32,
        TINY_IM_START
    );
    assert_eq!(
        263 + added.iter().position(|t| *t == "<|im_end|>").unwrap() as u32,
        TINY_IM_END
    );
    let tokenizer = serde_json::json!({
        "version": "1.0",
        "added_tokens": added_tokens,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "vocab": vocab, "merges": merge_list}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let template = "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endfor %}\
{%- if add_generation_prompt %}<|im_start|>assistant\n{%- if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{%- endif %}{%- endif %}";
    let config = serde_json::json!({"chat_template": template, "eos_token": "<|im_end|>", "bos_token": null});
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();

    let Qwen3Shape {
        hidden,
        inter,
        layers,
        heads,
        kv_heads,
        head_dim,
        embedding_scale,
        norm_noise,
    } = shape;
    let model_config = serde_json::json!({
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3",
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 256,
        "vocab_size": TINY_VOCAB, "tie_word_embeddings": true
    });
    std::fs::write(dir.join("config.json"), model_config.to_string()).unwrap();

    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut random = |rows: usize, cols: usize, scale: f32| {
        let data: Vec<f32> = (0..rows * cols)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect();
        Tensor::from_vec(data, (rows, cols), &Device::Cpu).unwrap()
    };
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    tensors.insert(
        "model.embed_tokens.weight".into(),
        random(TINY_VOCAB, hidden, embedding_scale),
    );
    let norm = |random: &mut dyn FnMut(usize, usize, f32) -> Tensor, n: usize| {
        let ones = Tensor::ones(n, candle_core::DType::F32, &Device::Cpu).unwrap();
        if norm_noise == 0.0 {
            ones
        } else {
            (random(1, n, norm_noise).flatten_all().unwrap() + ones).unwrap()
        }
    };
    tensors.insert("model.norm.weight".into(), norm(&mut random, hidden));
    for l in 0..layers {
        let p = format!("model.layers.{l}");
        let mut put = |name: &str, t: Tensor| {
            tensors.insert(format!("{p}.{name}"), t);
        };
        put("input_layernorm.weight", norm(&mut random, hidden));
        put("post_attention_layernorm.weight", norm(&mut random, hidden));
        put("self_attn.q_norm.weight", norm(&mut random, head_dim));
        put("self_attn.k_norm.weight", norm(&mut random, head_dim));
        put(
            "self_attn.q_proj.weight",
            random(heads * head_dim, hidden, 0.2),
        );
        put(
            "self_attn.k_proj.weight",
            random(kv_heads * head_dim, hidden, 0.2),
        );
        put(
            "self_attn.v_proj.weight",
            random(kv_heads * head_dim, hidden, 0.2),
        );
        put(
            "self_attn.o_proj.weight",
            random(hidden, heads * head_dim, 0.2),
        );
        put("mlp.gate_proj.weight", random(inter, hidden, 0.2));
        put("mlp.up_proj.weight", random(inter, hidden, 0.2));
        put("mlp.down_proj.weight", random(hidden, inter, 0.2));
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
}

/// A fresh scratch directory under the target dir.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("deepconf-candle-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
