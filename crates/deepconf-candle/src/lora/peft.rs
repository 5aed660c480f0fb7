//! PEFT's adapter directory: `adapter_config.json` ([`LoraConfig`]) and
//! `adapter_model.safetensors` (the factors, under keys [`Projection::peft_key`] names), read into
//! a [`LoraAdapter`] and written back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{Factor, Projection};
use crate::{Error, Result};

/// File name of the adapter's weights inside its directory.
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// File name of the adapter's configuration inside its directory.
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";

impl Projection {
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
