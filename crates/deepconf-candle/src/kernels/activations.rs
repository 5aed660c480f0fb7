//! Activation rows quantized to 8-bit blocks before a matmul, exactly as ggml quantizes them for
//! the weights' type: the integer kernels dot these against the weight blocks.

use rayon::prelude::*;

use super::BLOCK;

/// How a matmul quantizes its activations: the ggml block type that llama.cpp's CPU backend
/// pairs with the weights' GGUF type (`vec_dot_type` in ggml-cpu), reproduced exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Activations {
    /// For Q4_0, Q5_0, Q8_0 weights: per 32 values `d = max|x| / 127` rounded to f16,
    /// `q = round_half_even(x * 127 / max|x|)`.
    Q8_0,
    /// For Q4_1, Q5_1 weights: as Q8_0, plus the block's `d * sum(q)` rounded to f16.
    Q8_1,
    /// For K-quant weights: per 256 values one f32 scale `d = -max / 127` where `max` is the
    /// value of largest magnitude, `q = min(127, round_half_even(-127 x / max))`.
    Q8K,
}

impl Activations {
    pub(super) const ALL: [Activations; 3] =
        [Activations::Q8_0, Activations::Q8_1, Activations::Q8K];

    pub(super) fn index(self) -> usize {
        self as usize
    }

    /// Values that share one scale.
    pub(super) fn group(self) -> usize {
        match self {
            Activations::Q8_0 | Activations::Q8_1 => BLOCK,
            Activations::Q8K => 256,
        }
    }
}

/// Activation rows quantized to 8 bits, as 32-value blocks for the kernels (a Q8_K scale is
/// repeated over its eight blocks).
#[derive(Debug, Default)]
pub(crate) struct QuantizedRows {
    pub(super) rows: usize,
    pub(super) blocks_per_row: usize,
    /// Per block: the scale `d` of its values.
    pub(super) scales: Vec<f32>,
    /// Per block: `d * sum(q)`, which carries the minimum term of the 4- and 5-bit layouts.
    pub(super) scaled_sums: Vec<f32>,
    /// Quantized values, `rows * blocks_per_row * 32`.
    pub(super) values: Vec<i8>,
}

/// One group to quantize: its values, and where its bytes, block scales and scaled sums go.
type GroupJob<'a> = (((&'a [f32], &'a mut [i8]), &'a mut [f32]), &'a mut [f32]);

/// Quantizes one group of values as `scheme` says (see [`Activations`]).
fn quantize_group(scheme: Activations, (((x, q), scales), sums): GroupJob<'_>) {
    let (d, scale) = match scheme {
        Activations::Q8_0 | Activations::Q8_1 => {
            let amax = x.iter().fold(0f32, |a, &v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            for (qv, &v) in q.iter_mut().zip(x) {
                *qv = (v * id).round_ties_even() as i8;
            }
            (d, half::f16::from_f32(d).to_f32())
        }
        Activations::Q8K => {
            let (mut amax, mut max) = (0f32, 0f32);
            for &v in x {
                if v.abs() > amax {
                    amax = v.abs();
                    max = v;
                }
            }
            if amax == 0.0 {
                q.fill(0);
                (0.0, 0.0)
            } else {
                let iscale = -127.0 / max;
                for (qv, &v) in q.iter_mut().zip(x) {
                    *qv = ((iscale * v).round_ties_even() as i32).min(127) as i8;
                }
                let d = 1.0 / iscale;
                (d, d)
            }
        }
    };
    for ((block, s), sum_out) in q.chunks_exact(BLOCK).zip(scales).zip(sums) {
        let sum: i32 = block.iter().map(|&v| i32::from(v)).sum();
        *s = scale;
        *sum_out = match scheme {
            Activations::Q8_1 => half::f16::from_f32(d * sum as f32).to_f32(),
            Activations::Q8_0 | Activations::Q8K => scale * sum as f32,
        };
    }
}

impl QuantizedRows {
    /// Quantizes `rows` rows of `cols` values (`cols` a multiple of 32, of 256 for
    /// [`Activations::Q8K`]).
    pub(crate) fn quantize_from(
        &mut self,
        x: &[f32],
        rows: usize,
        cols: usize,
        scheme: Activations,
    ) {
        debug_assert_eq!(x.len(), rows * cols);
        let group = scheme.group();
        debug_assert_eq!(cols % group, 0);
        let blocks = rows * cols / BLOCK;
        self.rows = rows;
        self.blocks_per_row = cols / BLOCK;
        self.scales.resize(blocks, 0.0);
        self.scaled_sums.resize(blocks, 0.0);
        self.values.resize(rows * cols, 0);
        let per_group = group / BLOCK;
        // A batch of rows is worth splitting across threads; a single decode row is not.
        if rows >= 4 {
            x.par_chunks_exact(group)
                .zip(self.values.par_chunks_exact_mut(group))
                .zip(self.scales.par_chunks_exact_mut(per_group))
                .zip(self.scaled_sums.par_chunks_exact_mut(per_group))
                .with_min_len(64 / per_group)
                .for_each(|job| quantize_group(scheme, job));
        } else {
            x.chunks_exact(group)
                .zip(self.values.chunks_exact_mut(group))
                .zip(self.scales.chunks_exact_mut(per_group))
                .zip(self.scaled_sums.chunks_exact_mut(per_group))
                .for_each(|job| quantize_group(scheme, job));
        }
    }
}
