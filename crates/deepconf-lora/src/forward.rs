//! A differentiable forward pass of a Llama-style decoder with LoRA updates, on candle's autograd.
//!
//! The base weights come from [`DenseModel`] (Hugging Face names and layout) and stay frozen; the
//! factors of every updated projection are candle [`Var`]s held in a candle-nn [`VarMap`], so an
//! optimizer such as candle-nn's `AdamW` trains them. Layers below
//! [`LoraOptions::first_layer`] carry no update, so their output does not depend on the factors:
//! [`LoraModel::frozen_prefix`] computes it once per sequence and training reuses it.

use std::collections::BTreeMap;

use candle_core::{D, DType, Device, IndexOp, Tensor, Var};
use candle_nn::VarMap;
use deepconf_candle::dense::{DenseConfig, DenseModel};
use deepconf_candle::lora::{LoraFactors, Projection};
use deepconf_candle::{LoraAdapter, LoraConfig};

use crate::{Error, Result};

/// The shape of the adapter to train.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraOptions {
    /// Rank of every update.
    pub rank: usize,
    /// Scale numerator (the update is `alpha / rank * B A`).
    pub alpha: f32,
    /// Projections updated in every trained layer.
    pub targets: Vec<Projection>,
    /// First layer that gets updates (the layers above it all do).
    pub first_layer: usize,
    /// Seed of the initial `A` factors (PEFT's initialisation: `A` uniform in +-1/sqrt(in),
    /// `B` zero, so training starts at the base model).
    pub seed: u64,
}

/// SplitMix64: a small deterministic generator, so an initialisation depends on the seed only.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_f64() * n as f64) as usize % n.max(1)
    }
}

/// Frozen weights of one block; matrices transposed (`in x out`) for `x W^T` as `x @ Wt`.
#[derive(Debug)]
struct Block {
    input_norm: Tensor,
    post_norm: Tensor,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    weights_t: BTreeMap<Projection, Tensor>,
}

/// The trainable factors of one projection, transposed: `x @ a_t @ b_t` is `x A^T B^T`.
#[derive(Debug, Clone)]
struct Update {
    a_t: Var,
    b_t: Var,
}

/// A decoder with frozen base weights and trainable LoRA factors.
pub struct LoraModel {
    config: DenseConfig,
    device: Device,
    dtype: DType,
    embedding: Tensor,
    lm_head_t: Tensor,
    final_norm: Tensor,
    blocks: Vec<Block>,
    updates: BTreeMap<(usize, Projection), Update>,
    lora: LoraConfig,
    first_layer: usize,
    varmap: VarMap,
}

impl std::fmt::Debug for LoraModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraModel")
            .field("config", &self.config)
            .field("dtype", &self.dtype)
            .field("lora", &self.lora)
            .field("first_layer", &self.first_layer)
            .field("updates", &self.updates.len())
            .finish_non_exhaustive()
    }
}

fn tensor(model: &DenseModel, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
    let t = model.tensor(name)?;
    Ok(Tensor::from_slice(&t.data, t.shape.as_slice(), device)?.to_dtype(dtype)?)
}

fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let mean_square = x.sqr()?.mean_keepdim(D::Minus1)?;
    let scale = mean_square.affine(1.0, eps)?.sqrt()?;
    Ok(x.broadcast_div(&scale)?.broadcast_mul(weight)?)
}

/// `[-x2, x1]` of the two halves of the last dimension (rotary embeddings, Hugging Face layout).
fn rotate_half(x: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    Ok(Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?)
}

impl LoraModel {
    /// A model over `base` (held in `dtype`: f32 to train, f64 for gradient checks) with fresh
    /// factors as `options` says.
    pub fn new(base: &DenseModel, options: &LoraOptions, dtype: DType) -> Result<Self> {
        let mut lora = LoraConfig::new(options.rank, options.alpha, &options.targets);
        lora.base_model_name_or_path = Some(base.model_id.clone());
        let mut rng = SplitMix64::new(options.seed);
        let mut adapter = LoraAdapter::new(lora);
        let c = &base.config;
        if options.rank == 0 {
            return Err(Error::invalid("rank", "must be at least 1"));
        }
        if options.first_layer >= c.layers {
            return Err(Error::invalid(
                "first_layer",
                format!(
                    "{} is not below the {} layers",
                    options.first_layer, c.layers
                ),
            ));
        }
        for layer in options.first_layer..c.layers {
            for &p in &options.targets {
                let (out_features, in_features) = projection_shape(c, p);
                let bound = 1.0 / (in_features as f64).sqrt();
                let a = (0..options.rank * in_features)
                    .map(|_| ((2.0 * rng.next_f64() - 1.0) * bound) as f32)
                    .collect();
                let factors = LoraFactors {
                    a,
                    b: vec![0.0; out_features * options.rank],
                    in_features,
                    out_features,
                };
                adapter.insert(layer, p, factors)?;
            }
        }
        Self::from_adapter(base, &adapter, dtype)
    }

    /// A model over `base` whose factors start at `adapter`'s (to continue training, or to check
    /// gradients away from zero `B`). The layers below the adapter's lowest layer are frozen.
    pub fn from_adapter(base: &DenseModel, adapter: &LoraAdapter, dtype: DType) -> Result<Self> {
        let device = Device::Cpu;
        let c = base.config.clone();
        if !c.head_dim.is_multiple_of(2) || c.kv_heads == 0 || !c.heads.is_multiple_of(c.kv_heads) {
            return Err(Error::invalid(
                "model",
                format!(
                    "unsupported attention shape: {} heads, {} kv heads, head dim {}",
                    c.heads, c.kv_heads, c.head_dim
                ),
            ));
        }
        let embedding = tensor(base, "model.embed_tokens.weight", dtype, &device)?;
        let lm_head_t = if base.tensors.contains_key("lm_head.weight") {
            tensor(base, "lm_head.weight", dtype, &device)?
        } else {
            embedding.clone()
        }
        .t()?
        .contiguous()?;
        let final_norm = tensor(base, "model.norm.weight", dtype, &device)?;
        let blocks = (0..c.layers)
            .map(|i| {
                let p = format!("model.layers.{i}");
                let weights_t = Projection::ALL
                    .iter()
                    .map(|&proj| {
                        let name = format!("{p}.{}.{}.weight", proj.block(), proj.name());
                        Ok((
                            proj,
                            tensor(base, &name, dtype, &device)?.t()?.contiguous()?,
                        ))
                    })
                    .collect::<Result<_>>()?;
                let optional = |name: &str| -> Result<Option<Tensor>> {
                    let name = format!("{p}.{name}");
                    if base.tensors.contains_key(&name) {
                        Ok(Some(tensor(base, &name, dtype, &device)?))
                    } else {
                        Ok(None)
                    }
                };
                Ok(Block {
                    input_norm: tensor(
                        base,
                        &format!("{p}.input_layernorm.weight"),
                        dtype,
                        &device,
                    )?,
                    post_norm: tensor(
                        base,
                        &format!("{p}.post_attention_layernorm.weight"),
                        dtype,
                        &device,
                    )?,
                    q_norm: optional("self_attn.q_norm.weight")?,
                    k_norm: optional("self_attn.k_norm.weight")?,
                    weights_t,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let varmap = VarMap::new();
        let mut updates = BTreeMap::new();
        let r = adapter.config.r;
        for ((layer, p), f) in adapter.iter() {
            if layer >= c.layers {
                return Err(Error::invalid(
                    "adapter",
                    format!("updates layer {layer}; the model has {}", c.layers),
                ));
            }
            let (out_features, in_features) = projection_shape(&c, p);
            if (f.out_features, f.in_features) != (out_features, in_features) {
                return Err(Error::invalid(
                    "adapter",
                    format!(
                        "layer {layer} {} is {} x {}, the model's is {out_features} x {in_features}",
                        p.name(),
                        f.out_features,
                        f.in_features
                    ),
                ));
            }
            let a_t = Tensor::from_slice(&f.a, (r, in_features), &device)?
                .to_dtype(dtype)?
                .t()?
                .contiguous()?;
            let b_t = Tensor::from_slice(&f.b, (out_features, r), &device)?
                .to_dtype(dtype)?
                .t()?
                .contiguous()?;
            let update = Update {
                a_t: Var::from_tensor(&a_t)?,
                b_t: Var::from_tensor(&b_t)?,
            };
            {
                let mut data = varmap
                    .data()
                    .lock()
                    .map_err(|_| Error::invalid("varmap", "poisoned lock"))?;
                data.insert(
                    format!("layers.{layer}.{}.lora_A", p.name()),
                    update.a_t.clone(),
                );
                data.insert(
                    format!("layers.{layer}.{}.lora_B", p.name()),
                    update.b_t.clone(),
                );
            }
            updates.insert((layer, p), update);
        }
        let first_layer = updates.keys().map(|(l, _)| *l).min().unwrap_or(c.layers);
        Ok(Self {
            config: c,
            device,
            dtype,
            embedding,
            lm_head_t,
            final_norm,
            blocks,
            updates,
            lora: adapter.config.clone(),
            first_layer,
            varmap,
        })
    }

    /// The trainable factors (for an optimizer).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Shape and hyper-parameters of the base model.
    pub fn config(&self) -> &DenseConfig {
        &self.config
    }

    /// The lowest layer with an update: everything below it is frozen.
    pub fn first_layer(&self) -> usize {
        self.first_layer
    }

    /// Every factor as a `Var`, `(A^T, B^T)` per updated projection, by layer then projection.
    pub fn factor_vars(&self) -> Vec<(usize, Projection, Var, Var)> {
        self.updates
            .iter()
            .map(|((l, p), u)| (*l, *p, u.a_t.clone(), u.b_t.clone()))
            .collect()
    }

    /// The current factors as a PEFT adapter (f32 values).
    pub fn to_adapter(&self) -> Result<LoraAdapter> {
        let mut adapter = LoraAdapter::new(self.lora.clone());
        for ((layer, p), u) in &self.updates {
            let a = u.a_t.as_tensor().t()?.to_dtype(DType::F32)?;
            let b = u.b_t.as_tensor().t()?.to_dtype(DType::F32)?;
            let (rank, in_features) = a.dims2()?;
            let (out_features, _) = b.dims2()?;
            debug_assert_eq!(rank, self.lora.r);
            adapter.insert(
                *layer,
                *p,
                LoraFactors {
                    a: a.flatten_all()?.to_vec1()?,
                    b: b.flatten_all()?.to_vec1()?,
                    in_features,
                    out_features,
                },
            )?;
        }
        Ok(adapter)
    }

    fn project(&self, x: &Tensor, layer: usize, p: Projection) -> Result<Tensor> {
        let weight = &self.blocks[layer].weights_t[&p];
        let mut y = x.matmul(weight)?;
        if let Some(u) = self.updates.get(&(layer, p)) {
            let low = x.matmul(u.a_t.as_tensor())?.matmul(u.b_t.as_tensor())?;
            y = (y + low.affine(f64::from(self.lora.scale()), 0.0)?)?;
        }
        Ok(y)
    }

    /// Cos and sin of every position and dimension (`t x head_dim`, halves repeated).
    fn rope_tables(&self, t: usize) -> Result<(Tensor, Tensor)> {
        let c = &self.config;
        let half = c.head_dim / 2;
        let (mut cos, mut sin) = (Vec::with_capacity(t * c.head_dim), Vec::new());
        for pos in 0..t {
            let angles: Vec<f64> = (0..half)
                .map(|i| {
                    pos as f64 * f64::from(c.rope_theta).powf(-2.0 * i as f64 / c.head_dim as f64)
                })
                .collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos()));
                sin.extend(angles.iter().map(|a| a.sin()));
            }
        }
        let make = |v: Vec<f64>| -> Result<Tensor> {
            Ok(Tensor::from_vec(v, (t, c.head_dim), &self.device)?.to_dtype(self.dtype)?)
        };
        Ok((make(cos)?, make(sin)?))
    }

    /// One block over `x` (`b*t x hidden` rows of `b` sequences of `t` positions).
    fn block(&self, layer: usize, x: &Tensor, b: usize, t: usize, mask: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let blk = &self.blocks[layer];
        let eps = f64::from(c.rms_eps);
        let (hd, heads, kv_heads) = (c.head_dim, c.heads, c.kv_heads);
        let h = rms_norm(x, &blk.input_norm, eps)?;
        let heads_of = |y: Tensor, n: usize| -> Result<Tensor> {
            Ok(y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let mut q = heads_of(self.project(&h, layer, Projection::QProj)?, heads)?;
        let mut k = heads_of(self.project(&h, layer, Projection::KProj)?, kv_heads)?;
        let v = heads_of(self.project(&h, layer, Projection::VProj)?, kv_heads)?;
        if let (Some(qn), Some(kn)) = (&blk.q_norm, &blk.k_norm) {
            q = rms_norm(&q, qn, eps)?;
            k = rms_norm(&k, kn, eps)?;
        }
        let (cos, sin) = self.rope_tables(t)?;
        let rope = |x: &Tensor| -> Result<Tensor> {
            Ok((x.broadcast_mul(&cos)? + rotate_half(x)?.broadcast_mul(&sin)?)?)
        };
        let q = rope(&q)?;
        let k = rope(&k)?;
        let group = heads / kv_heads;
        let repeat = |x: Tensor| -> Result<Tensor> {
            if group == 1 {
                return Ok(x);
            }
            Ok(x.unsqueeze(2)?
                .broadcast_as((b, kv_heads, group, t, hd))?
                .contiguous()?
                .reshape((b, heads, t, hd))?)
        };
        let k = repeat(k)?;
        let v = repeat(v)?;
        let scores = q
            .matmul(&k.t()?.contiguous()?)?
            .affine(1.0 / (hd as f64).sqrt(), 0.0)?
            .broadcast_add(mask)?;
        let max = scores.max_keepdim(D::Minus1)?.detach();
        let weights = scores.broadcast_sub(&max)?.exp()?;
        let weights = weights.broadcast_div(&weights.sum_keepdim(D::Minus1)?)?;
        let attended = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * t, heads * hd))?;
        let x = (x + self.project(&attended, layer, Projection::OProj)?)?;
        let h = rms_norm(&x, &blk.post_norm, eps)?;
        let gate = self.project(&h, layer, Projection::GateProj)?;
        let up = self.project(&h, layer, Projection::UpProj)?;
        let act = (gate.silu()? * up)?;
        Ok((&x + self.project(&act, layer, Projection::DownProj)?)?)
    }

    fn causal_mask(&self, t: usize) -> Result<Tensor> {
        let values: Vec<f64> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j <= i { 0.0 } else { -1e9 }))
            .collect();
        Ok(Tensor::from_vec(values, (t, t), &self.device)?.to_dtype(self.dtype)?)
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::invalid("tokens", "a sequence is empty"));
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.config.vocab) {
            return Err(Error::invalid(
                "tokens",
                format!(
                    "token id {bad} is outside the vocabulary ({})",
                    self.config.vocab
                ),
            ));
        }
        Ok(())
    }

    /// The residual stream entering [`first_layer`](Self::first_layer) for one sequence
    /// (`len x hidden`, no autograd graph): what training caches.
    pub fn frozen_prefix(&self, tokens: &[u32]) -> Result<Tensor> {
        self.check_tokens(tokens)?;
        let t = tokens.len();
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embedding.index_select(&ids, 0)?;
        let mask = self.causal_mask(t)?;
        for layer in 0..self.first_layer {
            x = self.block(layer, &x, 1, t, &mask)?;
        }
        Ok(x.detach())
    }

    /// Final hidden states (after the last norm) of sequences given by their
    /// [`frozen_prefix`](Self::frozen_prefix)es, padded with zero rows to the longest
    /// (`b*t x hidden`; padding after a sequence's end does not change its positions: attention is
    /// causal).
    fn hidden_from_prefixes(&self, prefixes: &[&Tensor]) -> Result<(Tensor, usize)> {
        let t = prefixes
            .iter()
            .map(|p| p.dim(0))
            .collect::<candle_core::Result<Vec<_>>>()?
            .into_iter()
            .max()
            .ok_or_else(|| Error::invalid("batch", "is empty"))?;
        let hidden = self.config.hidden;
        let padded = prefixes
            .iter()
            .map(|p| {
                let len = p.dim(0)?;
                if len == t {
                    Ok((*p).clone())
                } else {
                    let zeros = Tensor::zeros((t - len, hidden), self.dtype, &self.device)?;
                    Ok(Tensor::cat(&[*p, &zeros], 0)?)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let b = padded.len();
        let mut x = Tensor::cat(&padded, 0)?;
        let mask = self.causal_mask(t)?;
        for layer in self.first_layer..self.config.layers {
            x = self.block(layer, &x, b, t, &mask)?;
        }
        Ok((
            rms_norm(&x, &self.final_norm, f64::from(self.config.rms_eps))?,
            t,
        ))
    }

    /// Logits of every position of one sequence (`len x vocab`).
    pub fn logits(&self, tokens: &[u32]) -> Result<Tensor> {
        let prefix = self.frozen_prefix(tokens)?;
        let (hidden, _) = self.hidden_from_prefixes(&[&prefix])?;
        Ok(hidden.matmul(&self.lm_head_t)?)
    }

    /// Mean cross-entropy of the answer tokens of a batch: sequence `i` is given by its
    /// [`frozen_prefix`](Self::frozen_prefix) `prefixes[i]` and its tokens `tokens[i]`, and the
    /// loss covers the tokens from `answer_starts[i]` on (each predicted from the one before).
    pub fn answer_loss(
        &self,
        prefixes: &[&Tensor],
        tokens: &[&[u32]],
        answer_starts: &[usize],
    ) -> Result<Tensor> {
        let (hidden, t) = self.hidden_from_prefixes(prefixes)?;
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        for (i, (toks, &start)) in tokens.iter().zip(answer_starts).enumerate() {
            if start == 0 || start >= toks.len() {
                return Err(Error::invalid(
                    "answer_starts",
                    format!(
                        "sequence {i}: answer starts at {start} of {} tokens",
                        toks.len()
                    ),
                ));
            }
            for (j, &token) in toks.iter().enumerate().skip(start) {
                rows.push((i * t + j - 1) as u32);
                targets.push(token);
            }
        }
        let rows = Tensor::new(rows.as_slice(), &self.device)?;
        let targets = Tensor::new(targets.as_slice(), &self.device)?;
        let logits = hidden.index_select(&rows, 0)?.matmul(&self.lm_head_t)?;
        Ok(candle_nn::loss::cross_entropy(&logits, &targets)?)
    }

    /// [`answer_loss`](Self::answer_loss) computing the prefixes itself.
    pub fn answer_loss_of(&self, tokens: &[&[u32]], answer_starts: &[usize]) -> Result<Tensor> {
        let prefixes = tokens
            .iter()
            .map(|t| self.frozen_prefix(t))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Tensor> = prefixes.iter().collect();
        self.answer_loss(&refs, tokens, answer_starts)
    }

    /// The logits of the last position of `tokens`, as f32 (for comparisons).
    pub fn last_logits(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        let logits = self.logits(tokens)?;
        Ok(logits
            .i(tokens.len() - 1)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?)
    }
}

/// `(out, in)` features of projection `p`.
fn projection_shape(c: &DenseConfig, p: Projection) -> (usize, usize) {
    let (q, kv) = (c.heads * c.head_dim, c.kv_heads * c.head_dim);
    match p {
        Projection::QProj => (q, c.hidden),
        Projection::KProj | Projection::VProj => (kv, c.hidden),
        Projection::OProj => (c.hidden, q),
        Projection::GateProj | Projection::UpProj => (c.intermediate, c.hidden),
        Projection::DownProj => (c.hidden, c.intermediate),
    }
}
