//! LoRA adapters in PEFT's file format: `adapter_config.json` (rank, alpha, target modules) and
//! `adapter_model.safetensors` with keys such as
//! `base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight` (`rank x in`) and `...lora_B.weight`
//! (`out x rank`). The update of a projection `W` (`out x in`) is `W + (alpha / rank) * B A`
//! (`alpha / sqrt(rank)` with `use_rslora`).
//!
//! The factors are kept in the Hugging Face layout the adapter was trained in; llama.cpp's Llama
//! GGUF files hold the query and key rows permuted (each head's two halves interleaved so that
//! rotary embeddings pair adjacent dimensions), so [`CandleModelBuilder::adapter`](crate::CandleModelBuilder::adapter)
//! permutes the rows of those deltas the same way before adding them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::decoder::{Decoder, DecoderConfig, RopeStyle};
use crate::kernels::{MatmulScratch, WeightMatrix};
use crate::models::dense_to_format;
use crate::{Error, Result, WeightFormat};

/// File name of the adapter's weights inside its directory.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// File name of the adapter's configuration inside its directory.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
/// Directory name of the guarded adapter inside `<cache>/models/`.
pub const GUARDED_ADAPTER_DIR: &str = "SmolLM2-135M-Instruct-guarded-lora";

/// Where the guarded adapter of the default model lives: `<cache>/models/SmolLM2-135M-Instruct-guarded-lora/`
/// (`cargo xtask fetch-model guarded` installs it there).
pub fn guarded_adapter_dir() -> PathBuf {
    deepconf_core::cache_dir()
        .join("models")
        .join(GUARDED_ADAPTER_DIR)
}

/// A projection of a transformer block that a LoRA adapter can update, by its Hugging Face name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Projection {
    /// `self_attn.q_proj`.
    QProj,
    /// `self_attn.k_proj`.
    KProj,
    /// `self_attn.v_proj`.
    VProj,
    /// `self_attn.o_proj`.
    OProj,
    /// `mlp.gate_proj`.
    GateProj,
    /// `mlp.up_proj`.
    UpProj,
    /// `mlp.down_proj`.
    DownProj,
}

impl Projection {
    /// Every projection, in the order of the forward pass.
    pub const ALL: [Projection; 7] = [
        Projection::QProj,
        Projection::KProj,
        Projection::VProj,
        Projection::OProj,
        Projection::GateProj,
        Projection::UpProj,
        Projection::DownProj,
    ];

    /// The module name PEFT uses in `target_modules` (`q_proj`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Projection::QProj => "q_proj",
            Projection::KProj => "k_proj",
            Projection::VProj => "v_proj",
            Projection::OProj => "o_proj",
            Projection::GateProj => "gate_proj",
            Projection::UpProj => "up_proj",
            Projection::DownProj => "down_proj",
        }
    }

    /// The block the module sits in: `self_attn` or `mlp`.
    pub fn block(self) -> &'static str {
        match self {
            Projection::QProj | Projection::KProj | Projection::VProj | Projection::OProj => {
                "self_attn"
            }
            Projection::GateProj | Projection::UpProj | Projection::DownProj => "mlp",
        }
    }

    /// The projection named `name` (`q_proj`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The PEFT key of factor `A` or `B` of this projection in `layer`.
    pub fn peft_key(self, layer: usize, factor: Factor) -> String {
        let f = match factor {
            Factor::A => "lora_A",
            Factor::B => "lora_B",
        };
        format!(
            "base_model.model.model.layers.{layer}.{}.{}.{f}.weight",
            self.block(),
            self.name()
        )
    }
}

/// One of the two factors of a low-rank update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    /// `lora_A`: `rank x in`, applied first.
    A,
    /// `lora_B`: `out x rank`.
    B,
}

/// The settings of an adapter that its `adapter_config.json` holds (PEFT's names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// The base model the adapter was trained on (informational).
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    /// Rank of the update.
    pub r: usize,
    /// Scale numerator: the update is multiplied by `lora_alpha / r`.
    pub lora_alpha: f32,
    /// Modules updated (`q_proj`, `k_proj`, ...).
    pub target_modules: Vec<String>,
    /// Scale by `alpha / sqrt(r)` instead of `alpha / r`.
    #[serde(default)]
    pub use_rslora: bool,
    /// Weight-decomposed LoRA (not supported: an error at load).
    #[serde(default)]
    pub use_dora: bool,
    /// Factors stored transposed (not supported: an error at load).
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// PEFT's type tag, `LORA`.
    #[serde(default = "lora_type")]
    pub peft_type: String,
    /// Per-module ranks (not supported when non-empty).
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, serde_json::Value>,
    /// Per-module alphas (not supported when non-empty).
    #[serde(default)]
    pub alpha_pattern: BTreeMap<String, serde_json::Value>,
    /// Bias training (`none` is the only supported value).
    #[serde(default = "bias_none")]
    pub bias: String,
    /// Dropout used in training (no effect at inference).
    #[serde(default)]
    pub lora_dropout: f32,
    /// PEFT's task type tag.
    #[serde(default)]
    pub task_type: Option<String>,
}

fn lora_type() -> String {
    "LORA".into()
}

fn bias_none() -> String {
    "none".into()
}

impl LoraConfig {
    /// A configuration of rank `r`, scale numerator `alpha`, updating `targets`.
    pub fn new(r: usize, alpha: f32, targets: &[Projection]) -> Self {
        Self {
            base_model_name_or_path: None,
            r,
            lora_alpha: alpha,
            target_modules: targets.iter().map(|p| p.name().to_string()).collect(),
            use_rslora: false,
            use_dora: false,
            fan_in_fan_out: false,
            peft_type: lora_type(),
            rank_pattern: BTreeMap::new(),
            alpha_pattern: BTreeMap::new(),
            bias: bias_none(),
            lora_dropout: 0.0,
            task_type: Some("CAUSAL_LM".into()),
        }
    }

    /// The factor that multiplies `B A`.
    pub fn scale(&self) -> f32 {
        if self.use_rslora {
            self.lora_alpha / (self.r as f32).sqrt()
        } else {
            self.lora_alpha / self.r as f32
        }
    }

    fn check(&self, path: &Path) -> Result<()> {
        let bad = |message: String| {
            Err(Error::Model {
                path: path.to_path_buf(),
                message,
            })
        };
        if self.peft_type != "LORA" {
            return bad(format!(
                "peft_type `{}` is not supported (only LORA)",
                self.peft_type
            ));
        }
        if self.r == 0 {
            return bad("r must be at least 1".into());
        }
        if !self.lora_alpha.is_finite() {
            return bad(format!("lora_alpha {} is not finite", self.lora_alpha));
        }
        if self.use_dora {
            return bad("use_dora (weight-decomposed LoRA) is not supported".into());
        }
        if self.fan_in_fan_out {
            return bad("fan_in_fan_out (transposed factors, GPT-2 style) is not supported".into());
        }
        if !self.rank_pattern.is_empty() || !self.alpha_pattern.is_empty() {
            return bad("rank_pattern / alpha_pattern (per-module ranks) are not supported".into());
        }
        if self.bias != "none" {
            return bad(format!("bias `{}` is not supported (only none)", self.bias));
        }
        for target in &self.target_modules {
            if Projection::from_name(target).is_none() {
                return bad(format!(
                    "target module `{target}` is not supported (supported: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)"
                ));
            }
        }
        Ok(())
    }
}

/// The two factors of one projection's update, row-major f32.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraFactors {
    /// `A`: `rank x in_features`.
    pub a: Vec<f32>,
    /// `B`: `out_features x rank`.
    pub b: Vec<f32>,
    /// Input features of the projection.
    pub in_features: usize,
    /// Output features of the projection.
    pub out_features: usize,
}

impl LoraFactors {
    /// `scale * B A` (`out x in`, row-major).
    pub fn delta(&self, rank: usize, scale: f32) -> Vec<f32> {
        let (n, k) = (self.out_features, self.in_features);
        let mut out = vec![0f32; n * k];
        for (row, b_row) in out.chunks_exact_mut(k).zip(self.b.chunks_exact(rank)) {
            for (r, &b) in b_row.iter().enumerate() {
                let coef = scale * b;
                if coef == 0.0 {
                    continue;
                }
                for (o, &a) in row.iter_mut().zip(&self.a[r * k..(r + 1) * k]) {
                    *o += coef * a;
                }
            }
        }
        out
    }
}

/// A LoRA adapter: its configuration and the factors of every updated projection by layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraAdapter {
    /// Rank, alpha and targets.
    pub config: LoraConfig,
    factors: BTreeMap<(usize, Projection), LoraFactors>,
    source: Option<PathBuf>,
}

impl LoraAdapter {
    /// An adapter with `config` and no factors yet (see [`insert`](Self::insert)).
    pub fn new(config: LoraConfig) -> Self {
        Self {
            config,
            factors: BTreeMap::new(),
            source: None,
        }
    }

    /// Sets the factors of `projection` in `layer`; their lengths must match the rank and the
    /// given feature counts.
    pub fn insert(
        &mut self,
        layer: usize,
        projection: Projection,
        factors: LoraFactors,
    ) -> Result<()> {
        let r = self.config.r;
        if factors.a.len() != r * factors.in_features || factors.b.len() != factors.out_features * r
        {
            return Err(Error::InvalidParameter {
                parameter: "factors",
                reason: format!(
                    "layer {layer} {}: A has {} values and B {}, expected {r} x {} and {} x {r}",
                    projection.name(),
                    factors.a.len(),
                    factors.b.len(),
                    factors.in_features,
                    factors.out_features
                ),
            });
        }
        self.factors.insert((layer, projection), factors);
        Ok(())
    }

    /// The factors of `projection` in `layer`, if the adapter updates it.
    pub fn factors(&self, layer: usize, projection: Projection) -> Option<&LoraFactors> {
        self.factors.get(&(layer, projection))
    }

    /// Every `(layer, projection)` with its factors, by layer then projection.
    pub fn iter(&self) -> impl Iterator<Item = ((usize, Projection), &LoraFactors)> {
        self.factors.iter().map(|(k, v)| (*k, v))
    }

    /// The directory it was [`load`](Self::load)ed from.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// A short name: the directory's name, or `lora` for an adapter built in memory.
    pub fn name(&self) -> String {
        self.source
            .as_deref()
            .and_then(Path::file_name)
            .map_or_else(|| "lora".into(), |n| n.to_string_lossy().into_owned())
    }

    /// Number of updated projections.
    pub fn len(&self) -> usize {
        self.factors.len()
    }

    /// Whether the adapter updates nothing.
    pub fn is_empty(&self) -> bool {
        self.factors.is_empty()
    }

    /// Trainable parameters (the values of every factor).
    pub fn parameter_count(&self) -> usize {
        self.factors.values().map(|f| f.a.len() + f.b.len()).sum()
    }

    /// Loads a PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`, factors
    /// in f32, f16 or bf16). Keys that are not LoRA factors of a supported projection, a factor
    /// without its partner, or shapes that disagree with the rank are errors naming the key.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let config_path = dir.join(ADAPTER_CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path).map_err(|source| Error::Io {
            path: config_path.clone(),
            source,
        })?;
        let config: LoraConfig = serde_json::from_str(&text).map_err(|e| Error::Model {
            path: config_path.clone(),
            message: format!("not a PEFT LoRA configuration: {e}"),
        })?;
        config.check(&config_path)?;
        let weights_path = dir.join(ADAPTER_WEIGHTS_FILE);
        if !weights_path.is_file() {
            return Err(Error::Model {
                path: weights_path,
                message: "missing: a PEFT adapter directory holds adapter_model.safetensors".into(),
            });
        }
        let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu).map_err(|e| {
            Error::Model {
                path: weights_path.clone(),
                message: format!("not a readable safetensors file: {e}"),
            }
        })?;
        let bad = |message: String| Error::Model {
            path: weights_path.clone(),
            message,
        };
        type Halves = (
            Option<(Vec<f32>, usize, usize)>,
            Option<(Vec<f32>, usize, usize)>,
        );
        let mut halves: BTreeMap<(usize, Projection), Halves> = BTreeMap::new();
        // Sorted so that the first error a bad file reports does not depend on hash order.
        let mut keys: Vec<&String> = tensors.keys().collect();
        keys.sort();
        for key in keys {
            let tensor = &tensors[key];
            let (layer, projection, factor) = parse_key(key).ok_or_else(|| {
                bad(format!(
                    "tensor `{key}` is not a LoRA factor of a supported projection (expected e.g. `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`)"
                ))
            })?;
            if !config.target_modules.iter().any(|t| t == projection.name()) {
                return Err(bad(format!(
                    "tensor `{key}` updates `{}`, which target_modules does not list",
                    projection.name()
                )));
            }
            let (rows, cols) = tensor
                .dims2()
                .map_err(|e| bad(format!("tensor `{key}`: {e}")))?;
            let expected_ok = match factor {
                Factor::A => rows == config.r,
                Factor::B => cols == config.r,
            };
            if !expected_ok {
                return Err(bad(format!(
                    "tensor `{key}` has shape [{rows}, {cols}], which disagrees with r = {}",
                    config.r
                )));
            }
            let data = tensor
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            if data.iter().any(|v| !v.is_finite()) {
                return Err(bad(format!("tensor `{key}` holds non-finite values")));
            }
            let entry = halves.entry((layer, projection)).or_default();
            match factor {
                Factor::A => entry.0 = Some((data, rows, cols)),
                Factor::B => entry.1 = Some((data, rows, cols)),
            }
        }
        let mut adapter = Self::new(config);
        for ((layer, projection), pair) in halves {
            match pair {
                (Some((a, _, in_features)), Some((b, out_features, _))) => adapter.insert(
                    layer,
                    projection,
                    LoraFactors {
                        a,
                        b,
                        in_features,
                        out_features,
                    },
                )?,
                (a, _) => {
                    let missing = if a.is_none() { Factor::A } else { Factor::B };
                    return Err(bad(format!(
                        "tensor `{}` is missing (its partner is there)",
                        projection.peft_key(layer, missing)
                    )));
                }
            }
        }
        if adapter.is_empty() {
            return Err(bad("no LoRA factors in the file".into()));
        }
        adapter.source = Some(dir.to_path_buf());
        Ok(adapter)
    }

    /// Writes the adapter as PEFT writes it: `adapter_config.json` and
    /// `adapter_model.safetensors` with f16 factors (what PEFT-trained adapters usually ship).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut tensors = std::collections::HashMap::new();
        let r = self.config.r;
        for ((layer, projection), f) in &self.factors {
            let a =
                Tensor::from_slice(&f.a, (r, f.in_features), &Device::Cpu)?.to_dtype(DType::F16)?;
            let b = Tensor::from_slice(&f.b, (f.out_features, r), &Device::Cpu)?
                .to_dtype(DType::F16)?;
            tensors.insert(projection.peft_key(*layer, Factor::A), a);
            tensors.insert(projection.peft_key(*layer, Factor::B), b);
        }
        let weights = dir.join(ADAPTER_WEIGHTS_FILE);
        candle_core::safetensors::save(&tensors, &weights)?;
        let config_path = dir.join(ADAPTER_CONFIG_FILE);
        let text = serde_json::to_string_pretty(&self.config).map_err(|e| Error::Model {
            path: config_path.clone(),
            message: e.to_string(),
        })?;
        std::fs::write(&config_path, text + "\n").map_err(|source| Error::Io {
            path: config_path,
            source,
        })
    }
}

/// `(layer, projection, factor)` of a PEFT key; `None` for anything else.
fn parse_key(key: &str) -> Option<(usize, Projection, Factor)> {
    let rest = key.strip_prefix("base_model.model.")?;
    let rest = rest.strip_prefix("model.").unwrap_or(rest);
    let rest = rest.strip_prefix("layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let parts: Vec<&str> = rest.split('.').collect();
    // block.module.lora_X[.adapter_name].weight
    let (block, module, factor) = match parts.as_slice() {
        [block, module, factor, "weight"] | [block, module, factor, _, "weight"] => {
            (*block, *module, *factor)
        }
        _ => return None,
    };
    let projection = Projection::from_name(module)?;
    if projection.block() != block {
        return None;
    }
    let factor = match factor {
        "lora_A" => Factor::A,
        "lora_B" => Factor::B,
        _ => return None,
    };
    Some((layer, projection, factor))
}

/// How an adapter is applied to a loaded model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdapterMode {
    /// Added into the weights at load: every updated matrix is dequantized, gets `scale * B A`
    /// and is stored in `format` (Q8_0 by default: the fast 8-bit kernels; a second rounding of
    /// 4-bit weights). [`WeightFormat::Native`] means Q8_0 here, since a merged matrix has no
    /// file format of its own. Untouched matrices keep the builder's weight format.
    Merged(WeightFormat),
    /// Kept apart: the base weights run as loaded and every updated projection adds
    /// `scale * B (A x)` in f32 (exact; slower).
    Unmerged,
}

impl AdapterMode {
    /// [`AdapterMode::Merged`] into Q8_0, the default.
    pub const MERGED_Q8_0: AdapterMode = AdapterMode::Merged(WeightFormat::Q8_0);
}

impl Default for AdapterMode {
    fn default() -> Self {
        Self::MERGED_Q8_0
    }
}

/// A low-rank update kept apart from its (fused) weight matrix: `out += up (down x)`, with
/// `down` the stacked `A` factors of the fused parts and `up` their `scale * B` placed at each
/// part's rows (zero elsewhere).
#[derive(Debug, Clone)]
pub(crate) struct LowRank {
    down: WeightMatrix,
    up: WeightMatrix,
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

/// The unmerged updates of one transformer block's fused matrices.
#[derive(Debug, Clone, Default)]
pub(crate) struct LayerLora {
    pub qkv: Option<LowRank>,
    pub attn_out: Option<LowRank>,
    pub gate_up: Option<LowRank>,
    pub down: Option<LowRank>,
}

/// The row of a head in the Hugging Face layout that row `row` of llama.cpp's permuted Q/K
/// layout holds: the converter interleaves each head's first and second halves.
fn hf_row(row: usize, head_dim: usize) -> usize {
    let (head, r) = (row / head_dim, row % head_dim);
    head * head_dim + (r % 2) * (head_dim / 2) + r / 2
}

/// `scale * B A` of one projection in the decoder's row layout.
fn delta_in_layout(
    factors: &LoraFactors,
    rank: usize,
    scale: f32,
    permute_heads: Option<usize>,
) -> Vec<f32> {
    let delta = factors.delta(rank, scale);
    match permute_heads {
        None => delta,
        Some(head_dim) => {
            let k = factors.in_features;
            let mut out = vec![0f32; delta.len()];
            for (row, dst) in out.chunks_exact_mut(k).enumerate() {
                let src = hf_row(row, head_dim);
                dst.copy_from_slice(&delta[src * k..(src + 1) * k]);
            }
            out
        }
    }
}

/// Every row of `matrix` as f32.
fn dense(matrix: &WeightMatrix) -> Vec<f32> {
    let (rows, cols) = (matrix.rows(), matrix.cols());
    let mut out = vec![0f32; rows * cols];
    for (r, row) in out.chunks_exact_mut(cols).enumerate() {
        matrix.dequantize_row(r, row);
    }
    out
}

/// One fused matrix and the projections stacked in it, in row order.
/// What every fused matrix of a decoder is updated with.
struct Application<'a> {
    adapter: &'a LoraAdapter,
    mode: AdapterMode,
    config: &'a DecoderConfig,
    path: &'a Path,
}

fn apply_fused(
    matrix: &mut WeightMatrix,
    lora: &mut Option<LowRank>,
    parts: &[Projection],
    layer: usize,
    how: &Application<'_>,
) -> Result<()> {
    let Application {
        adapter,
        mode,
        config,
        path,
    } = *how;
    let (rows, cols) = (matrix.rows(), matrix.cols());
    let heights: Vec<usize> = parts
        .iter()
        .map(|p| match p {
            Projection::QProj => config.heads * config.head_dim,
            Projection::KProj | Projection::VProj => config.kv_heads * config.head_dim,
            _ => rows / parts.len(),
        })
        .collect();
    if heights.iter().sum::<usize>() != rows {
        return Err(Error::Model {
            path: path.to_path_buf(),
            message: format!(
                "layer {layer}: fused projection of {rows} rows cannot hold {parts:?}"
            ),
        });
    }
    let rank = adapter.config.r;
    let scale = adapter.config.scale();
    let mut present = Vec::new();
    let mut offset = 0;
    for (&p, &height) in parts.iter().zip(&heights) {
        if let Some(f) = adapter.factors(layer, p) {
            if f.in_features != cols || f.out_features != height {
                return Err(Error::Model {
                    path: path.to_path_buf(),
                    message: format!(
                        "tensor `{}`: the update is {} x {} but the model's {} in layer {layer} is {height} x {cols}",
                        p.peft_key(layer, Factor::B),
                        f.out_features,
                        f.in_features,
                        p.name()
                    ),
                });
            }
            present.push((p, offset, f));
        }
        offset += height;
    }
    if present.is_empty() {
        return Ok(());
    }
    let permute = |p: Projection| {
        (config.rope.style == RopeStyle::Interleaved
            && matches!(p, Projection::QProj | Projection::KProj))
        .then_some(config.head_dim)
    };
    match mode {
        AdapterMode::Merged(format) => {
            let mut weights = dense(matrix);
            for &(p, offset, f) in &present {
                let delta = delta_in_layout(f, rank, scale, permute(p));
                for (w, d) in weights[offset * cols..].iter_mut().zip(&delta) {
                    *w += d;
                }
            }
            let format = match format {
                WeightFormat::Native => WeightFormat::Q8_0,
                other => other,
            };
            *matrix = dense_to_format(weights, rows, cols, format);
        }
        AdapterMode::Unmerged => {
            let total_rank = rank * present.len();
            let mut down = vec![0f32; total_rank * cols];
            let mut up = vec![0f32; rows * total_rank];
            for (i, &(p, offset, f)) in present.iter().enumerate() {
                down[i * rank * cols..(i + 1) * rank * cols].copy_from_slice(&f.a);
                for r in 0..f.out_features {
                    let src = permute(p).map_or(r, |hd| hf_row(r, hd));
                    for j in 0..rank {
                        up[(offset + r) * total_rank + i * rank + j] = scale * f.b[src * rank + j];
                    }
                }
            }
            *lora = Some(LowRank {
                down: WeightMatrix::F32 {
                    rows: total_rank,
                    cols,
                    data: down,
                },
                up: WeightMatrix::F32 {
                    rows,
                    cols: total_rank,
                    data: up,
                },
            });
        }
    }
    Ok(())
}

/// Applies `adapter` to every block of `decoder` as `mode` says. Projections and layers the
/// decoder does not have, or shapes that differ, are errors naming the tensor.
pub(crate) fn apply_adapter(
    decoder: &mut Decoder,
    adapter: &LoraAdapter,
    mode: AdapterMode,
    path: &Path,
) -> Result<()> {
    let layers = decoder.layers.len();
    if let Some(((layer, p), _)) = adapter.iter().find(|((l, _), _)| *l >= layers) {
        return Err(Error::Model {
            path: path.to_path_buf(),
            message: format!(
                "tensor `{}` updates layer {layer}, but the model has {layers} layers",
                p.peft_key(layer, Factor::A)
            ),
        });
    }
    let config = decoder.config.clone();
    let how = Application {
        adapter,
        mode,
        config: &config,
        path,
    };
    for (i, layer) in decoder.layers.iter_mut().enumerate() {
        let mut lora = LayerLora::default();
        use Projection::*;
        apply_fused(
            &mut layer.qkv,
            &mut lora.qkv,
            &[QProj, KProj, VProj],
            i,
            &how,
        )?;
        apply_fused(&mut layer.attn_out, &mut lora.attn_out, &[OProj], i, &how)?;
        apply_fused(
            &mut layer.gate_up,
            &mut lora.gate_up,
            &[GateProj, UpProj],
            i,
            &how,
        )?;
        apply_fused(&mut layer.down, &mut lora.down, &[DownProj], i, &how)?;
        if lora.qkv.is_some()
            || lora.attn_out.is_some()
            || lora.gate_up.is_some()
            || lora.down.is_some()
        {
            layer.lora = Some(lora);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_keys_round_trip() {
        for p in Projection::ALL {
            for f in [Factor::A, Factor::B] {
                let key = p.peft_key(17, f);
                assert_eq!(parse_key(&key), Some((17, p, f)), "{key}");
            }
        }
        assert_eq!(
            parse_key("base_model.model.model.layers.2.mlp.up_proj.lora_B.default.weight"),
            Some((2, Projection::UpProj, Factor::B))
        );
        assert_eq!(
            parse_key("base_model.model.model.layers.2.mlp.q_proj.lora_A.weight"),
            None
        );
        assert_eq!(
            parse_key("base_model.model.model.layers.x.self_attn.q_proj.lora_A.weight"),
            None
        );
        assert_eq!(parse_key("base_model.model.lm_head.weight"), None);
    }

    #[test]
    fn hf_rows_follow_the_converter_permutation() {
        // llama.cpp's converter: w.reshape(heads, 2, hd / 2, in).swapaxes(1, 2): row 2i + j of a
        // head holds Hugging Face row j * hd / 2 + i.
        let hd = 8;
        let rows: Vec<usize> = (0..2 * hd).map(|r| hf_row(r, hd)).collect();
        assert_eq!(rows, [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]);
    }

    #[test]
    fn delta_is_scaled_product() {
        let f = LoraFactors {
            a: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            b: vec![1.0, 0.0, 0.0, 1.0],
            in_features: 3,
            out_features: 2,
        };
        assert_eq!(f.delta(2, 0.5), vec![0.5, 1.0, 1.5, 2.0, 2.5, 3.0]);
    }
}
