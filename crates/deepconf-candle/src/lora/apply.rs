//! Applying an adapter to a loaded decoder: merged into the weights, or kept apart as low-rank
//! updates the forward pass adds ([`AdapterMode`]). Deltas are computed in the Hugging Face row
//! layout and moved into the decoder's (llama.cpp's permuted query/key rows) here.

use std::path::Path;

use super::{AdapterMode, Factor, LoraAdapter, LoraFactors, Projection};
use crate::decoder::{Decoder, DecoderConfig, LowRank, LowRankUpdates, RopeStyle};
use crate::kernels::WeightMatrix;
use crate::models::dense_to_format;
use crate::{Error, Result, WeightFormat};

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

/// What every fused matrix of a decoder is updated with.
struct Application<'a> {
    adapter: &'a LoraAdapter,
    mode: AdapterMode,
    config: &'a DecoderConfig,
    path: &'a Path,
}

/// Updates `matrix`, whose rows stack `parts` in order: merged into it, or as a low-rank update
/// put in `unmerged`.
fn apply_fused(
    matrix: &mut WeightMatrix,
    unmerged: &mut Option<LowRank>,
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
            *unmerged = Some(LowRank {
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
        let mut updates = LowRankUpdates::default();
        use Projection::*;
        apply_fused(
            &mut layer.qkv,
            &mut updates.qkv,
            &[QProj, KProj, VProj],
            i,
            &how,
        )?;
        apply_fused(
            &mut layer.attn_out,
            &mut updates.attn_out,
            &[OProj],
            i,
            &how,
        )?;
        apply_fused(
            &mut layer.gate_up,
            &mut updates.gate_up,
            &[GateProj, UpProj],
            i,
            &how,
        )?;
        apply_fused(&mut layer.down, &mut updates.down, &[DownProj], i, &how)?;
        if !updates.is_empty() {
            layer.low_rank = Some(updates);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_rows_follow_the_converter_permutation() {
        // llama.cpp's converter: w.reshape(heads, 2, hd / 2, in).swapaxes(1, 2): row 2i + j of a
        // head holds Hugging Face row j * hd / 2 + i.
        let hd = 8;
        let rows: Vec<usize> = (0..2 * hd).map(|r| hf_row(r, hd)).collect();
        assert_eq!(rows, [0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15]);
    }
}
