//! Loading weights from GGUF and safetensors files into the shared [`Decoder`](crate::decoder::Decoder).

pub(crate) mod llama;
pub(crate) mod qwen3;

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{DType, Device, Tensor};
use half::f16;

use crate::decoder::{Decoder, DecoderConfig, LayerWeights};
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

    /// A 2-D weight (`rows` = output features) in `format`.
    pub(crate) fn matrix(&mut self, name: &str, format: WeightFormat) -> Result<WeightMatrix> {
        let t = self.qtensor(name)?;
        let (rows, cols) = t.shape().dims2().map_err(|e| Error::Model {
            path: self.path.clone(),
            message: format!("tensor `{name}`: {e}"),
        })?;
        let native = match (format, t.dtype()) {
            (WeightFormat::Native, GgmlDType::Q4_1) => {
                Some(q4_1_from_bytes(&t.data()?, rows, cols))
            }
            (WeightFormat::Native | WeightFormat::Q8_0, GgmlDType::Q8_0) => {
                Some(q8_0_from_bytes(&t.data()?, rows, cols))
            }
            _ => None,
        };
        if let Some(m) = native {
            return Ok(m);
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

fn f16_at(bytes: &[u8], offset: usize) -> f32 {
    f16::from_le_bytes([bytes[offset], bytes[offset + 1]]).to_f32()
}

/// ggml `block_q4_1`: f16 d, f16 m, 16 bytes of nibbles (20 bytes per 32 values).
fn q4_1_from_bytes(bytes: &[u8], rows: usize, cols: usize) -> WeightMatrix {
    let blocks = rows * cols / BLOCK;
    let (mut scales, mut mins, mut nibbles) = (
        Vec::with_capacity(blocks),
        Vec::with_capacity(blocks),
        Vec::with_capacity(blocks * 16),
    );
    for block in bytes.chunks_exact(20).take(blocks) {
        scales.push(f16_at(block, 0));
        mins.push(f16_at(block, 2));
        nibbles.extend_from_slice(&block[4..20]);
    }
    WeightMatrix::Q4_1 {
        rows,
        cols,
        scales,
        mins,
        nibbles,
    }
}

/// ggml `block_q8_0`: f16 d, 32 signed bytes (34 bytes per 32 values).
fn q8_0_from_bytes(bytes: &[u8], rows: usize, cols: usize) -> WeightMatrix {
    let blocks = rows * cols / BLOCK;
    let (mut scales, mut values) = (Vec::with_capacity(blocks), Vec::with_capacity(rows * cols));
    for block in bytes.chunks_exact(34).take(blocks) {
        scales.push(f16_at(block, 0));
        values.extend(block[2..34].iter().map(|&b| b as i8));
    }
    WeightMatrix::Q8_0 {
        rows,
        cols,
        scales,
        values,
    }
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
