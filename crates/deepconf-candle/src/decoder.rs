//! The decoder-only transformer forward pass shared by the Llama and Qwen3 loaders, with a per-trace
//! KV cache so that traces can leave a batch independently.
//!
//! Llama (RMSNorm, rotary embeddings, grouped-query attention, SwiGLU MLP) follows
//! <https://github.com/ggml-org/llama.cpp/blob/master/src/models/llama.cpp>; Qwen3 adds a per-head
//! RMSNorm on queries and keys before the rotation
//! (<https://github.com/huggingface/transformers/blob/main/src/transformers/models/qwen3/modeling_qwen3.py>).
//!
//! One forward call takes any mix of sequences and token counts: a prompt prefill is one sequence with
//! many tokens, a lockstep decode step is many sequences with one token each. Tokens are the rows of
//! every matrix product, so the weights are read once per step whatever the batch.

use rayon::prelude::*;

use crate::kernels::{MatmulScratch, WeightMatrix, dot_f32};
use crate::sampling::exp_nonpositive;

/// How rotary embeddings pair the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RopeStyle {
    /// Pairs `(2i, 2i+1)`: llama.cpp's Llama GGUF layout (Q/K rows permuted by the converter).
    Interleaved,
    /// Pairs `(i, i + d/2)`: Hugging Face layout and llama.cpp's Qwen3 ("NeoX").
    Neox,
}

/// How rotary embeddings turn a position into the rotation angle of each dimension pair, as
/// llama.cpp's `ggml_rope_ext` does (ggml-cpu `ops.cpp`: `rope_yarn`, `ggml_rope_cache_init`;
/// `ggml.c`: `ggml_rope_yarn_corr_dims`): pair `i` of a head of `d` dimensions turns by
/// `theta_i = pos * base^(-2i/d) / factor_i`, interpolated by `freq_scale` and, for YaRN, mixed
/// back towards `theta_i` for the high-frequency pairs; cos and sin are scaled by `mscale`.
#[derive(Debug, Clone)]
pub(crate) struct Rope {
    pub style: RopeStyle,
    /// `base` (GGUF `{arch}.rope.freq_base`, Hugging Face `rope_theta`).
    pub freq_base: f32,
    /// Position interpolation, 1 / the scaling factor (1 without scaling).
    pub freq_scale: f32,
    /// Per-pair divisors of the frequencies (`rope_freqs.weight`, Llama 3.1+), `d / 2` values.
    pub freq_factors: Option<Vec<f32>>,
    /// YaRN's ramp between interpolated and original angles (extrapolation factor 1).
    pub yarn: Option<YarnRamp>,
    /// Magnitude of the rotation: llama.cpp's attention factor (times YaRN's `1 + 0.1 ln s`).
    pub mscale: f32,
}

/// YaRN's correction range: pairs below `low` keep their original angle, pairs above `high` are
/// fully interpolated, linearly in between.
#[derive(Debug, Clone, Copy)]
pub(crate) struct YarnRamp {
    pub low: f32,
    pub high: f32,
}

impl YarnRamp {
    /// The range for `dims` rotated dimensions trained on `original_context` positions, with
    /// YaRN's `beta_fast = 32` and `beta_slow = 1` (ggml's `ggml_rope_yarn_corr_dims`).
    pub(crate) fn new(dims: usize, original_context: usize, freq_base: f32) -> Self {
        // The pair whose wavelength fits `rotations` times into the original context.
        let pair = |rotations: f32| {
            dims as f32 * (original_context as f32 / (rotations * 2.0 * std::f32::consts::PI)).ln()
                / (2.0 * freq_base.ln())
        };
        Self {
            low: pair(32.0).floor().max(0.0),
            high: pair(1.0).ceil().min(dims as f32 - 1.0),
        }
    }

    /// Weight of the original (extrapolated) angle for pair `i`.
    fn extrapolation_weight(self, i: usize) -> f32 {
        let y = (i as f32 - self.low) / (self.high - self.low).max(0.001);
        1.0 - y.clamp(0.0, 1.0)
    }
}

impl Rope {
    /// Plain rotary embeddings with base `freq_base` and no scaling.
    pub(crate) fn plain(style: RopeStyle, freq_base: f32) -> Self {
        Self {
            style,
            freq_base,
            freq_scale: 1.0,
            freq_factors: None,
            yarn: None,
            mscale: 1.0,
        }
    }

    /// Turns on YaRN for `dims` rotated dimensions trained on `original_context` positions, with
    /// interpolation `freq_scale` and llama.cpp's attention factor `attn_factor`. llama.cpp sets
    /// its rotation magnitude to YaRN's `0.1 ln s + 1` (s = 1 / `freq_scale`) divided by itself,
    /// which cancels the same factor that ggml multiplies in; the f32 steps are kept as they are.
    pub(crate) fn with_yarn(
        mut self,
        freq_scale: f32,
        dims: usize,
        original_context: usize,
        attn_factor: f32,
    ) -> Self {
        self.freq_scale = freq_scale;
        self.yarn = Some(YarnRamp::new(dims, original_context, self.freq_base));
        let s = 1.0 / freq_scale;
        let yarn_mscale = if s <= 1.0 { 1.0 } else { 0.1 * s.ln() + 1.0 };
        let llama_attn = yarn_mscale * (1.0 / (1.0 + 0.1 * s.ln())) * attn_factor;
        self.mscale = llama_attn * (1.0 + 0.1 * (1.0 / freq_scale).ln());
        self
    }

    /// Appends `(cos, sin)` of the `dims / 2` pairs at position `pos` to `out`.
    fn push_angles(&self, pos: usize, dims: usize, out: &mut Vec<(f32, f32)>) {
        // ggml advances the frequency by repeated multiplication, not a power per pair: the
        // same f32 steps in the same order give llama.cpp's angles.
        let theta_scale = self.freq_base.powf(-2.0 / dims as f32);
        let mut theta = pos as f32;
        for i in 0..dims / 2 {
            let factor = self.freq_factors.as_ref().map_or(1.0, |f| f[i]);
            let original = theta / factor;
            let interpolated = self.freq_scale * original;
            let angle = match self.yarn {
                None => interpolated,
                Some(ramp) => {
                    let mix = ramp.extrapolation_weight(i);
                    interpolated * (1.0 - mix) + original * mix
                }
            };
            out.push((angle.cos() * self.mscale, angle.sin() * self.mscale));
            theta *= theta_scale;
        }
    }
}

/// Shape and hyper-parameters of a decoder.
#[derive(Debug, Clone)]
pub(crate) struct DecoderConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f32,
    pub rope: Rope,
    pub context_length: usize,
    pub vocab: usize,
}

impl DecoderConfig {
    fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }
    fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// Weights of one transformer block. `qkv` holds the query, key and value projections stacked by
/// rows, `gate_up` the gate and up projections, so each is one pass over the weights.
#[derive(Debug, Clone)]
pub(crate) struct LayerWeights {
    pub attn_norm: Vec<f32>,
    pub qkv: WeightMatrix,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub attn_out: WeightMatrix,
    pub ffn_norm: Vec<f32>,
    pub gate_up: WeightMatrix,
    pub down: WeightMatrix,
    /// Low-rank updates added to the fused products' outputs instead of merged into their
    /// weights (an adapter applied unmerged).
    pub low_rank: Option<LowRankUpdates>,
}

/// A low-rank update kept apart from its (fused) weight matrix: `out += up (down x)`. For an
/// adapter, `down` stacks the `A` factors of the fused parts and `up` holds their `scale * B` at
/// each part's rows (zero elsewhere).
#[derive(Debug, Clone)]
pub(crate) struct LowRank {
    pub down: WeightMatrix,
    pub up: WeightMatrix,
}

impl LowRank {
    /// Adds the update of `m` rows of `x` to `out` (`m x rows`).
    pub(crate) fn add_to(&self, x: &[f32], m: usize, out: &mut [f32], scratch: &mut MatmulScratch) {
        let mut hidden = vec![0f32; m * self.down.rows()];
        self.down.matmul(x, m, &mut hidden, scratch);
        let mut update = vec![0f32; m * self.up.rows()];
        self.up.matmul(&hidden, m, &mut update, scratch);
        for (o, u) in out.iter_mut().zip(&update) {
            *o += u;
        }
    }
}

/// The low-rank updates of one transformer block's fused matrices, by matrix.
#[derive(Debug, Clone, Default)]
pub(crate) struct LowRankUpdates {
    pub qkv: Option<LowRank>,
    pub attn_out: Option<LowRank>,
    pub gate_up: Option<LowRank>,
    pub down: Option<LowRank>,
}

impl LowRankUpdates {
    /// Whether no matrix has an update.
    pub(crate) fn is_empty(&self) -> bool {
        self.qkv.is_none()
            && self.attn_out.is_none()
            && self.gate_up.is_none()
            && self.down.is_none()
    }
}

/// All weights of a decoder.
#[derive(Debug, Clone)]
pub(crate) struct Decoder {
    pub config: DecoderConfig,
    pub embedding: WeightMatrix,
    pub layers: Vec<LayerWeights>,
    pub final_norm: Vec<f32>,
    /// The output projection; `None` when tied to the embedding.
    pub output: Option<WeightMatrix>,
}

/// Keys and values of one sequence, per layer, `len` positions of `kv_dim` values each.
#[derive(Debug, Clone)]
pub(crate) struct KvCache {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    len: usize,
}

impl KvCache {
    pub(crate) fn new(layers: usize) -> Self {
        Self {
            keys: vec![Vec::new(); layers],
            values: vec![Vec::new(); layers],
            len: 0,
        }
    }

    /// Positions stored.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// A copy of the first `positions` positions (all of them when there are fewer).
    pub(crate) fn prefix(&self, positions: usize) -> Self {
        let positions = positions.min(self.len);
        let cut = |layers: &[Vec<f32>]| -> Vec<Vec<f32>> {
            layers
                .iter()
                .map(|layer| {
                    let width = layer.len() / self.len.max(1);
                    layer[..positions * width].to_vec()
                })
                .collect()
        };
        Self {
            keys: cut(&self.keys),
            values: cut(&self.values),
            len: positions,
        }
    }
}

/// Reusable buffers of a forward pass.
#[derive(Debug, Default)]
pub(crate) struct Workspace {
    x: Vec<f32>,
    normed: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate_up: Vec<f32>,
    act: Vec<f32>,
    last: Vec<f32>,
    rope: Vec<(f32, f32)>,
    matmul: MatmulScratch,
}

/// `1 / sqrt(mean(x^2) + eps)`, with the squares summed in f64 as ggml's `rms_norm` does: the
/// normalized values feed 8-bit activation quantization, where a last-bit difference can move
/// a value across a rounding boundary.
fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let sum: f64 = x.iter().map(|&v| f64::from(v * v)).sum();
    let mean_sq = (sum / x.len() as f64) as f32;
    1.0 / (mean_sq + eps).sqrt()
}

fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let scale = rms_scale(x, eps);
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = v * scale * w;
    }
}

fn rms_norm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
    let scale = rms_scale(x, eps);
    for (v, &w) in x.iter_mut().zip(weight) {
        *v = *v * scale * w;
    }
}

fn apply_rope(head: &mut [f32], table: &[(f32, f32)], style: RopeStyle) {
    let half = head.len() / 2;
    for (i, &(cos, sin)) in table.iter().enumerate() {
        let (a, b) = match style {
            RopeStyle::Interleaved => (2 * i, 2 * i + 1),
            RopeStyle::Neox => (i, i + half),
        };
        let (x0, x1) = (head[a], head[b]);
        head[a] = x0 * cos - x1 * sin;
        head[b] = x0 * sin + x1 * cos;
    }
}

impl Decoder {
    /// Bytes held by the weight matrices.
    pub(crate) fn weight_bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                l.qkv.size_in_bytes()
                    + l.attn_out.size_in_bytes()
                    + l.gate_up.size_in_bytes()
                    + l.down.size_in_bytes()
            })
            .sum();
        layers
            + self.embedding.size_in_bytes()
            + self.output.as_ref().map_or(0, WeightMatrix::size_in_bytes)
    }

    /// The output projection (the embedding when tied).
    fn output(&self) -> &WeightMatrix {
        self.output.as_ref().unwrap_or(&self.embedding)
    }

    /// Runs `tokens[s]` through sequence `caches[s]` for every `s`, appending to the caches, and
    /// returns the logits of the last token of every sequence (`caches.len() x vocab`, row-major).
    pub(crate) fn forward(
        &self,
        caches: &mut [&mut KvCache],
        tokens: &[&[u32]],
        ws: &mut Workspace,
    ) -> Vec<f32> {
        let c = &self.config;
        let (hidden, q_dim, kv_dim, hd) = (c.hidden, c.q_dim(), c.kv_dim(), c.head_dim);
        // (sequence, position) of every row.
        let mut rows: Vec<(usize, usize)> = Vec::new();
        for (s, toks) in tokens.iter().enumerate() {
            let start = caches[s].len;
            rows.extend((0..toks.len()).map(|i| (s, start + i)));
        }
        let m = rows.len();

        // One rotation table per row, shared by every layer and head.
        let half = hd / 2;
        ws.rope.clear();
        for &(_, pos) in &rows {
            c.rope.push_angles(pos, hd, &mut ws.rope);
        }

        ws.x.resize(m * hidden, 0.0);
        for (row, tok) in tokens.iter().flat_map(|t| t.iter()).enumerate() {
            self.embedding
                .dequantize_row(*tok as usize, &mut ws.x[row * hidden..(row + 1) * hidden]);
        }
        ws.normed.resize(m * hidden, 0.0);
        ws.qkv.resize(m * (q_dim + 2 * kv_dim), 0.0);
        ws.attn.resize(m * q_dim, 0.0);
        ws.proj.resize(m * hidden, 0.0);

        for (li, layer) in self.layers.iter().enumerate() {
            for (x, n) in
                ws.x.chunks_exact(hidden)
                    .zip(ws.normed.chunks_exact_mut(hidden))
            {
                rms_norm(x, &layer.attn_norm, c.rms_eps, n);
            }
            layer.qkv.matmul(&ws.normed, m, &mut ws.qkv, &mut ws.matmul);
            if let Some(update) = layer.low_rank.as_ref().and_then(|l| l.qkv.as_ref()) {
                update.add_to(&ws.normed, m, &mut ws.qkv, &mut ws.matmul);
            }
            let qkv_width = q_dim + 2 * kv_dim;
            for (r, row) in ws.qkv.chunks_exact_mut(qkv_width).enumerate() {
                let table = &ws.rope[r * half..(r + 1) * half];
                let (q, kv) = row.split_at_mut(q_dim);
                for head in q.chunks_exact_mut(hd) {
                    if let Some(w) = &layer.q_norm {
                        rms_norm_in_place(head, w, c.rms_eps);
                    }
                    apply_rope(head, table, c.rope.style);
                }
                for head in kv[..kv_dim].chunks_exact_mut(hd) {
                    if let Some(w) = &layer.k_norm {
                        rms_norm_in_place(head, w, c.rms_eps);
                    }
                    apply_rope(head, table, c.rope.style);
                }
                let (s, _) = rows[r];
                caches[s].keys[li].extend_from_slice(&kv[..kv_dim]);
                caches[s].values[li].extend_from_slice(&kv[kv_dim..]);
            }
            // Attention of every row over its own sequence up to its position (causal).
            let caches_ro: Vec<&KvCache> = caches.iter().map(|c| &**c).collect();
            let group = c.heads / c.kv_heads;
            let scale = 1.0 / (hd as f32).sqrt();
            let qkv_ref = &ws.qkv;
            let rows_ref = &rows;
            let attend = |(r, out): (usize, &mut [f32])| {
                let (s, pos) = rows_ref[r];
                let keys = &caches_ro[s].keys[li];
                let values = &caches_ro[s].values[li];
                let q = &qkv_ref[r * qkv_width..r * qkv_width + q_dim];
                let mut scores = vec![0f32; pos + 1];
                for h in 0..c.heads {
                    let kvh = h / group;
                    let qh = &q[h * hd..(h + 1) * hd];
                    let mut max = f32::NEG_INFINITY;
                    for (t, sc) in scores.iter_mut().enumerate() {
                        let k = &keys[t * kv_dim + kvh * hd..t * kv_dim + (kvh + 1) * hd];
                        *sc = dot_f32(qh, k) * scale;
                        max = max.max(*sc);
                    }
                    let mut total = 0f32;
                    for sc in scores.iter_mut() {
                        *sc = exp_nonpositive(*sc - max);
                        total += *sc;
                    }
                    let o = &mut out[h * hd..(h + 1) * hd];
                    o.fill(0.0);
                    for (t, &p) in scores.iter().enumerate() {
                        let v = &values[t * kv_dim + kvh * hd..t * kv_dim + (kvh + 1) * hd];
                        let w = p / total;
                        for (oi, &vi) in o.iter_mut().zip(v) {
                            *oi += w * vi;
                        }
                    }
                }
            };
            // A few decode rows are not worth a thread-pool round trip.
            if m < 4 {
                ws.attn.chunks_mut(q_dim).enumerate().for_each(attend);
            } else {
                ws.attn.par_chunks_mut(q_dim).enumerate().for_each(attend);
            }
            layer
                .attn_out
                .matmul(&ws.attn, m, &mut ws.proj, &mut ws.matmul);
            if let Some(update) = layer.low_rank.as_ref().and_then(|l| l.attn_out.as_ref()) {
                update.add_to(&ws.attn, m, &mut ws.proj, &mut ws.matmul);
            }
            for (x, p) in ws.x.iter_mut().zip(&ws.proj) {
                *x += p;
            }

            for (x, n) in
                ws.x.chunks_exact(hidden)
                    .zip(ws.normed.chunks_exact_mut(hidden))
            {
                rms_norm(x, &layer.ffn_norm, c.rms_eps, n);
            }
            let inter = layer.gate_up.rows() / 2;
            ws.gate_up.resize(m * 2 * inter, 0.0);
            layer
                .gate_up
                .matmul(&ws.normed, m, &mut ws.gate_up, &mut ws.matmul);
            if let Some(update) = layer.low_rank.as_ref().and_then(|l| l.gate_up.as_ref()) {
                update.add_to(&ws.normed, m, &mut ws.gate_up, &mut ws.matmul);
            }
            ws.act.resize(m * inter, 0.0);
            for (row, act) in ws
                .gate_up
                .chunks_exact(2 * inter)
                .zip(ws.act.chunks_exact_mut(inter))
            {
                let (gate, up) = row.split_at(inter);
                for ((a, &g), &u) in act.iter_mut().zip(gate).zip(up) {
                    *a = g / (1.0 + (-g).exp()) * u;
                }
            }
            layer.down.matmul(&ws.act, m, &mut ws.proj, &mut ws.matmul);
            if let Some(update) = layer.low_rank.as_ref().and_then(|l| l.down.as_ref()) {
                update.add_to(&ws.act, m, &mut ws.proj, &mut ws.matmul);
            }
            for (x, p) in ws.x.iter_mut().zip(&ws.proj) {
                *x += p;
            }
        }
        for (s, toks) in tokens.iter().enumerate() {
            caches[s].len += toks.len();
        }

        // Logits only for the last token of each sequence.
        let n_seq = tokens.len();
        ws.last.resize(n_seq * hidden, 0.0);
        let mut row = 0;
        for (s, toks) in tokens.iter().enumerate() {
            row += toks.len();
            rms_norm(
                &ws.x[(row - 1) * hidden..row * hidden],
                &self.final_norm,
                c.rms_eps,
                &mut ws.last[s * hidden..(s + 1) * hidden],
            );
        }
        let mut logits = vec![0f32; n_seq * c.vocab];
        self.output()
            .matmul(&ws.last, n_seq, &mut logits, &mut ws.matmul);
        logits
    }
}
