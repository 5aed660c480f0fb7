//! Loading weights from GGUF and safetensors files into the shared [`Decoder`](crate::decoder::Decoder).

mod ggml_blocks;
pub(crate) mod llama;
pub(crate) mod qwen3;

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{DType, Device, Tensor};

use crate::decoder::{Decoder, DecoderConfig, LayerWeights, Rope, RopeStyle};
use crate::kernels::{BLOCK, WeightMatrix};
use crate::{Error, Result, WeightFormat};

/// An open GGUF file: metadata plus a reader for its tensors.
pub(crate) struct GgufFile {
    pub path: PathBuf,
    pub content: gguf_file::Content,
    reader: BufReader<File>,
}

impl GgufFile {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut reader = BufReader::new(file);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| Error::Model {
            path: path.to_path_buf(),
            message: format!("not a readable GGUF file: {e}"),
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader,
        })
    }

    fn model_error(&self, message: String) -> Error {
        Error::Model {
            path: self.path.clone(),
            message,
        }
    }

    pub(crate) fn architecture(&self) -> Result<String> {
        self.string("general.architecture")
    }

    pub(crate) fn string(&self, key: &str) -> Result<String> {
        self.content
            .metadata
            .get(key)
            .and_then(|v| v.to_string().ok().cloned())
            .ok_or_else(|| self.model_error(format!("missing string metadata `{key}`")))
    }

    pub(crate) fn usize(&self, key: &str) -> Result<usize> {
        let v = self
            .content
            .metadata
            .get(key)
            .ok_or_else(|| self.model_error(format!("missing metadata `{key}`")))?;
        v.to_u32()
            .map(|x| x as usize)
            .or_else(|_| v.to_u64().map(|x| x as usize))
            .map_err(|e| self.model_error(format!("metadata `{key}`: {e}")))
    }

    pub(crate) fn f32_or(&self, key: &str, default: f32) -> Result<f32> {
        match self.content.metadata.get(key) {
            None => Ok(default),
            Some(v) => v
                .to_f32()
                .map_err(|e| self.model_error(format!("metadata `{key}`: {e}"))),
        }
    }

    /// An optional string value; present with another type is an error naming the key.
    pub(crate) fn optional_string(&self, key: &str) -> Result<Option<String>> {
        match self.content.metadata.get(key) {
            None => Ok(None),
            Some(v) => v
                .to_string()
                .map(|s| Some(s.clone()))
                .map_err(|e| self.model_error(format!("metadata `{key}`: {e}"))),
        }
    }

    /// An optional unsigned integer value.
    pub(crate) fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        if self.content.metadata.contains_key(key) {
            self.usize(key)
        } else {
            Ok(default)
        }
    }

    pub(crate) fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn qtensor(&mut self, name: &str) -> Result<QTensor> {
        self.content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| Error::Model {
                path: self.path.clone(),
                message: format!("tensor `{name}`: {e}"),
            })
    }

    /// A 1-D tensor as f32.
    pub(crate) fn vector(&mut self, name: &str) -> Result<Vec<f32>> {
        let t = self.qtensor(name)?;
        Ok(t.dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    /// A 2-D weight (`rows` = output features) in `format`: with [`WeightFormat::Native`] the
    /// quantized types the kernels run are converted block by block without re-rounding (see
    /// [`ggml_blocks`]), F32/F16/BF16 become f32, and any other type is an error naming the
    /// tensor; [`WeightFormat::Q8_0`] and [`WeightFormat::F32`] dequantize what is not already in
    /// that format and re-quantize (Q8_0) or keep it dense (F32).
    pub(crate) fn matrix(&mut self, name: &str, format: WeightFormat) -> Result<WeightMatrix> {
        let t = self.qtensor(name)?;
        let (rows, cols) = t.shape().dims2().map_err(|e| Error::Model {
            path: self.path.clone(),
            message: format!("tensor `{name}`: {e}"),
        })?;
        let dtype = t.dtype();
        let keep_blocks = match format {
            WeightFormat::Native => true,
            WeightFormat::Q8_0 => dtype == GgmlDType::Q8_0,
            WeightFormat::F32 => false,
        };
        if keep_blocks {
            match ggml_blocks::from_ggml_blocks(dtype, &t.data()?, rows, cols) {
                Ok(ggml_blocks::Native::Blocks(matrix)) => return Ok(matrix),
                Ok(ggml_blocks::Native::Dense) => {}
                Err(message) => {
                    return Err(self.model_error(format!("tensor `{name}`: {message}")));
                }
            }
        }
        let dense = t
            .dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(dense_to_format(dense, rows, cols, format))
    }
}

/// Puts a dense matrix in the requested format (`Native` of a dense tensor is f32).
pub(crate) fn dense_to_format(
    dense: Vec<f32>,
    rows: usize,
    cols: usize,
    format: WeightFormat,
) -> WeightMatrix {
    match format {
        WeightFormat::Q8_0 if cols.is_multiple_of(BLOCK) => {
            WeightMatrix::q8_0_from_f32(&dense, rows, cols)
        }
        _ => WeightMatrix::F32 {
            rows,
            cols,
            data: dense,
        },
    }
}

/// The rotary embedding of a GGUF as llama.cpp 0.3.36 applies it to `llama` and `qwen3` models
/// (`llama-model.cpp` reads the keys, `llama-context.cpp` derives the YaRN factors):
///
/// - `{arch}.rope.freq_base` (default 10000);
/// - `{arch}.rope.scaling.type`: `none`, `linear` (the default when absent) or `yarn`, with
///   `{arch}.rope.scaling.factor` (or the older `{arch}.rope.scale_linear`; absent or 0 means no
///   interpolation) and, for YaRN, `{arch}.rope.scaling.original_context_length` (default
///   `{arch}.context_length`); `{arch}.rope.scaling.attn_factor` scales the rotation;
/// - `rope_freqs.weight` (Llama 3.1+ frequency factors) when `freq_factors` is set (llama.cpp's
///   Llama reads it, its Qwen3 does not; here a Qwen3 file that has it is an error).
///
/// `longrope` (and its `rope_factors_long/short` tensors), unknown types, and YaRN settings that
/// llama.cpp does not read for these architectures but a file sets to other values than the ones
/// llama.cpp uses (`yarn_ext_factor` 1, `yarn_attn_factor` 1, `yarn_beta_fast` 32,
/// `yarn_beta_slow` 1, `yarn_log_multiplier` 0) are errors naming the key and value, so a file
/// is never decoded with different positions than its authors (or llama.cpp) meant.
pub(crate) fn gguf_rope(
    gguf: &mut GgufFile,
    style: RopeStyle,
    dims: usize,
    context_length: usize,
    freq_factors: bool,
) -> Result<Rope> {
    let arch = gguf.architecture()?;
    let key = |k: &str| format!("{arch}.rope.{k}");
    let unsupported = |gguf: &GgufFile, key: &str, value: String, why: &str| {
        Err(gguf.model_error(format!(
            "GGUF key `{key}` = {value} is not supported: {why}"
        )))
    };
    let freq_base = gguf.f32_or(&key("freq_base"), 10_000.0)?;
    if freq_base.is_nan() || freq_base <= 1.0 || freq_base.is_infinite() {
        return unsupported(
            gguf,
            &key("freq_base"),
            freq_base.to_string(),
            "it must be above 1",
        );
    }
    let factor_key = if gguf.content.metadata.contains_key(&key("scaling.factor")) {
        key("scaling.factor")
    } else {
        key("scale_linear")
    };
    let factor = gguf.f32_or(&factor_key, 0.0)?;
    if factor.is_nan() || factor < 0.0 || factor.is_infinite() {
        return unsupported(
            gguf,
            &factor_key,
            factor.to_string(),
            "a scaling factor is >= 0",
        );
    }
    let train_scale = if factor == 0.0 { 1.0 } else { 1.0 / factor };
    let attn_factor = gguf.f32_or(&key("scaling.attn_factor"), 1.0)?;
    for (name, used) in [
        ("scaling.yarn_ext_factor", 1.0),
        ("scaling.yarn_attn_factor", 1.0),
        ("scaling.yarn_beta_fast", 32.0),
        ("scaling.yarn_beta_slow", 1.0),
        ("scaling.yarn_log_multiplier", 0.0),
    ] {
        let value = gguf.f32_or(&key(name), used)?;
        if value != used {
            return unsupported(
                gguf,
                &key(name),
                value.to_string(),
                &format!("llama.cpp does not read it for `{arch}` and uses {used}"),
            );
        }
    }
    let mut rope = Rope::plain(style, freq_base);
    rope.mscale = attn_factor;
    let scaling = gguf
        .optional_string(&key("scaling.type"))?
        .unwrap_or_else(|| "linear".into());
    match scaling.as_str() {
        "none" => {}
        "linear" => rope.freq_scale = train_scale,
        "yarn" => {
            let original =
                gguf.usize_or(&key("scaling.original_context_length"), context_length)?;
            rope = rope.with_yarn(train_scale, dims, original, attn_factor);
        }
        other => {
            return unsupported(
                gguf,
                &key("scaling.type"),
                format!("`{other}`"),
                "supported are none, linear and yarn",
            );
        }
    }
    for name in ["rope_factors_long.weight", "rope_factors_short.weight"] {
        if gguf.has_tensor(name) {
            return Err(gguf.model_error(format!("tensor `{name}` (LongRoPE) is not supported")));
        }
    }
    if gguf.has_tensor("rope_freqs.weight") {
        if !freq_factors {
            return Err(gguf.model_error(format!(
                "tensor `rope_freqs.weight` is not used by llama.cpp's `{arch}` models and not supported here"
            )));
        }
        let factors = gguf.vector("rope_freqs.weight")?;
        if factors.len() != dims / 2 || factors.iter().any(|f| f.is_nan() || *f <= 0.0) {
            return Err(gguf.model_error(format!(
                "tensor `rope_freqs.weight` has {} values, expected {} positive ones (half the rotated dimensions)",
                factors.len(),
                dims / 2
            )));
        }
        rope.freq_factors = Some(factors);
    }
    Ok(rope)
}

/// Loads every weight of a llama.cpp-style GGUF into a decoder with `config` (whose `vocab` is taken
/// from the output matrix) and checks the shapes. `qk_norm`: per-head query/key norms (Qwen3).
pub(crate) fn gguf_decoder(
    gguf: &mut GgufFile,
    config: DecoderConfig,
    qk_norm: bool,
    format: WeightFormat,
) -> Result<Decoder> {
    let layers = gguf_layers(gguf, config.layers, qk_norm, format)?;
    let (embedding, final_norm, output) = gguf_head(gguf, format)?;
    let vocab = output.as_ref().unwrap_or(&embedding).rows();
    let decoder = Decoder {
        config: DecoderConfig { vocab, ..config },
        embedding,
        layers,
        final_norm,
        output,
    };
    check_shapes(&decoder, &gguf.path)?;
    Ok(decoder)
}

/// Loads the transformer blocks of a llama.cpp-style GGUF (`blk.N.*` names).
fn gguf_layers(
    gguf: &mut GgufFile,
    layers: usize,
    qk_norm: bool,
    format: WeightFormat,
) -> Result<Vec<LayerWeights>> {
    (0..layers)
        .map(|i| {
            let p = format!("blk.{i}");
            let qkv = WeightMatrix::stack_rows(vec![
                gguf.matrix(&format!("{p}.attn_q.weight"), format)?,
                gguf.matrix(&format!("{p}.attn_k.weight"), format)?,
                gguf.matrix(&format!("{p}.attn_v.weight"), format)?,
            ]);
            let gate_up = WeightMatrix::stack_rows(vec![
                gguf.matrix(&format!("{p}.ffn_gate.weight"), format)?,
                gguf.matrix(&format!("{p}.ffn_up.weight"), format)?,
            ]);
            let (q_norm, k_norm) = if qk_norm {
                (
                    Some(gguf.vector(&format!("{p}.attn_q_norm.weight"))?),
                    Some(gguf.vector(&format!("{p}.attn_k_norm.weight"))?),
                )
            } else {
                (None, None)
            };
            Ok(LayerWeights {
                attn_norm: gguf.vector(&format!("{p}.attn_norm.weight"))?,
                qkv,
                q_norm,
                k_norm,
                attn_out: gguf.matrix(&format!("{p}.attn_output.weight"), format)?,
                ffn_norm: gguf.vector(&format!("{p}.ffn_norm.weight"))?,
                gate_up,
                down: gguf.matrix(&format!("{p}.ffn_down.weight"), format)?,
                low_rank: None,
            })
        })
        .collect()
}

/// Embedding, final norm and output projection of a llama.cpp-style GGUF.
fn gguf_head(
    gguf: &mut GgufFile,
    format: WeightFormat,
) -> Result<(WeightMatrix, Vec<f32>, Option<WeightMatrix>)> {
    let embedding = gguf.matrix("token_embd.weight", format)?;
    let final_norm = gguf.vector("output_norm.weight")?;
    let output = if gguf.has_tensor("output.weight") {
        Some(gguf.matrix("output.weight", format)?)
    } else {
        None
    };
    Ok((embedding, final_norm, output))
}

/// Tensors of a safetensors checkpoint (one or several shards), converted to f32 on demand.
pub(crate) struct SafetensorsWeights {
    dir: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl SafetensorsWeights {
    pub(crate) fn load(dir: &Path, files: &[PathBuf]) -> Result<Self> {
        let mut tensors = HashMap::new();
        for f in files {
            let part =
                candle_core::safetensors::load(f, &Device::Cpu).map_err(|e| Error::Model {
                    path: f.clone(),
                    message: format!("not a readable safetensors file: {e}"),
                })?;
            tensors.extend(part);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            tensors,
        })
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| Error::Model {
            path: self.dir.clone(),
            message: format!("missing tensor `{name}`"),
        })
    }

    pub(crate) fn vector(&self, name: &str) -> Result<Vec<f32>> {
        Ok(self
            .tensor(name)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?)
    }

    pub(crate) fn matrix(&self, name: &str, format: WeightFormat) -> Result<WeightMatrix> {
        let t = self.tensor(name)?;
        let (rows, cols) = t.dims2().map_err(|e| Error::Model {
            path: self.dir.clone(),
            message: format!("tensor `{name}`: {e}"),
        })?;
        let dense = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(dense_to_format(dense, rows, cols, format))
    }
}

/// Checks that the embedding covers the vocabulary the decoder reports.
pub(crate) fn check_shapes(decoder: &Decoder, path: &Path) -> Result<()> {
    let c = &decoder.config;
    let bad = |message: String| {
        Err(Error::Model {
            path: path.to_path_buf(),
            message,
        })
    };
    if decoder.embedding.cols() != c.hidden {
        return bad(format!(
            "embedding width {} differs from hidden size {}",
            decoder.embedding.cols(),
            c.hidden
        ));
    }
    if c.heads == 0
        || c.kv_heads == 0
        || !c.heads.is_multiple_of(c.kv_heads)
        || !c.head_dim.is_multiple_of(2)
    {
        return bad(format!(
            "unsupported attention shape: {} heads, {} kv heads, head dim {}",
            c.heads, c.kv_heads, c.head_dim
        ));
    }
    for (i, l) in decoder.layers.iter().enumerate() {
        let want = c.heads * c.head_dim + 2 * c.kv_heads * c.head_dim;
        if l.qkv.rows() != want || l.qkv.cols() != c.hidden {
            return bad(format!(
                "layer {i}: attention projections have an unexpected shape"
            ));
        }
    }
    Ok(())
}
