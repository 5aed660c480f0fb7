//! CPU matrix kernels for the decoder: weight matrices in 4-bit, 5-bit or 8-bit integer blocks (or
//! f32) multiplied by a batch of activation rows.
//!
//! Why our own kernels: candle 0.11's Q4_1 dot product is scalar (about 26 tok/s at batch 1 here),
//! and its per-op tensor overhead is a large share of a 135M-parameter decode step. These kernels
//! follow ggml's integer-dot scheme (activations quantized to 8 bits, weights dotted in integers,
//! scales applied per block) and read every weight block once per call for all activation rows,
//! so a batch of traces shares one pass over the weights.
//!
//! Activations are quantized exactly as ggml quantizes them for the dot product of the weights'
//! GGUF type ([`Activations`]: Q8_0, Q8_1 or Q8_K blocks, with their f16 or f32 scales and
//! round-half-to-even), so a quantized file gives the logits llama.cpp gives, not merely
//! logits as accurate as llama.cpp's: on a small random Q8_0 model the first step's top-20
//! logprobs agree to 5e-7 this way, and differed by 4e-2 with f32 activation scales (later steps
//! can still differ where a last-bit difference elsewhere moves an activation across a rounding
//! boundary; see `docs/models.md`).
//!
//! Four integer layouts cover the ggml types the loader accepts, each exactly (no second
//! rounding; see `models/mod.rs` for the conversions):
//!
//! | layout | value of element `i` of a 32-block | holds ggml |
//! |---|---|---|
//! | [`WeightMatrix::Q4_1`] | `d * q + m`, `q` in 0..16 | Q4_0, Q4_1, Q4_K |
//! | [`WeightMatrix::Q5_1`] | `d * q + m`, `q` in 0..32 | Q5_0, Q5_1, Q5_K |
//! | [`WeightMatrix::Q8_0`] | `d * q`, `q` in -128..128 | Q8_0 |
//! | [`WeightMatrix::Q8_16`] | `d[i / 16] * q`, `q` in -128..128 | Q6_K |
//!
//! Scales are f32, so a K-quant super-block's 6- or 8-bit sub-block scales times its f16 scale
//! are represented without loss.
//!
//! The x86 paths (AVX2, and AVX-512 VNNI's `vpdpbusd` where the CPU has it) are the only `unsafe`
//! in the crate: calling a `#[target_feature]` function is `unsafe`, and each call is made only
//! with an [`Isa`] token, which only CPU feature detection can create (`isa.rs`); vector loads read
//! fixed-size arrays cut from bounds-checked slices. Other CPUs use the portable scalar code. A
//! test compares every path the CPU can run.
#![allow(unsafe_code)]

mod isa;
mod scalar;

use rayon::prelude::*;

pub(crate) use isa::{Isa, IsaKind};

/// Values per quantization block (ggml's QK4_0 = QK4_1 = QK5_0 = QK5_1 = QK8_0 = 32).
pub(crate) const BLOCK: usize = 32;

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
    const ALL: [Activations; 3] = [Activations::Q8_0, Activations::Q8_1, Activations::Q8K];

    fn index(self) -> usize {
        self as usize
    }

    /// Values that share one scale.
    fn group(self) -> usize {
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
    rows: usize,
    blocks_per_row: usize,
    /// Per block: the scale `d` of its values.
    scales: Vec<f32>,
    /// Per block: `d * sum(q)`, which carries the minimum term of the 4- and 5-bit layouts.
    scaled_sums: Vec<f32>,
    /// Quantized values, `rows * blocks_per_row * 32`.
    values: Vec<i8>,
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

/// A weight matrix of `rows` output features by `cols` input features, row-major; 32-value
/// blocks run along the rows (see the module docs for what each layout holds).
#[derive(Debug, Clone)]
pub(crate) enum WeightMatrix {
    /// 4-bit: per 32-block scale `d` and minimum `m`, value = d * q + m with q in 0..16.
    Q4_1 {
        rows: usize,
        cols: usize,
        activations: Activations,
        scales: Vec<f32>,
        mins: Vec<f32>,
        /// 16 bytes per block: low nibbles are values 0..16, high nibbles values 16..32.
        nibbles: Vec<u8>,
    },
    /// 5-bit: as [`WeightMatrix::Q4_1`] plus a fifth bit, value = d * q + m with q in 0..32.
    Q5_1 {
        rows: usize,
        cols: usize,
        activations: Activations,
        scales: Vec<f32>,
        mins: Vec<f32>,
        /// The low four bits, laid out as in [`WeightMatrix::Q4_1`].
        nibbles: Vec<u8>,
        /// One word per block: bit `i` is the fifth bit (worth 16) of value `i`.
        high_bits: Vec<u32>,
    },
    /// 8-bit: per 32-block scale `d`, value = d * q.
    Q8_0 {
        rows: usize,
        cols: usize,
        activations: Activations,
        scales: Vec<f32>,
        values: Vec<i8>,
    },
    /// 8-bit with a scale per 16 values (two per block), value = d\[i / 16\] * q.
    Q8_16 {
        rows: usize,
        cols: usize,
        activations: Activations,
        /// Two per block: values 0..16, then values 16..32.
        scales: Vec<f32>,
        values: Vec<i8>,
    },
    /// Dense f32.
    F32 {
        rows: usize,
        cols: usize,
        data: Vec<f32>,
    },
    /// Row ranges in different layouts stacked on each other (a fused projection whose parts a
    /// GGUF stores in different types); each part runs its own kernel, nothing is converted.
    Stacked {
        rows: usize,
        cols: usize,
        /// In row order; never `Stacked` themselves.
        parts: Vec<WeightMatrix>,
    },
}

/// The blocks of a 4- or 5-bit matrix, borrowed for a kernel call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NibbleBlocks<'a> {
    pub scales: &'a [f32],
    pub mins: &'a [f32],
    pub nibbles: &'a [u8],
    /// Empty for the 4-bit layout.
    pub high_bits: &'a [u32],
}

/// The blocks of an 8-bit matrix (one or two scales per block), borrowed for a kernel call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ByteBlocks<'a> {
    pub scales: &'a [f32],
    pub values: &'a [i8],
}

impl WeightMatrix {
    /// Quantizes a dense row-major matrix to Q8_0 (`cols` must be a multiple of [`BLOCK`]),
    /// rounding as ggml rounds Q8_0 activations.
    pub(crate) fn q8_0_from_f32(data: &[f32], rows: usize, cols: usize) -> Self {
        let mut q = QuantizedRows::default();
        q.quantize_from(data, rows, cols, Activations::Q8_0);
        WeightMatrix::Q8_0 {
            rows,
            cols,
            activations: Activations::Q8_0,
            scales: q.scales,
            values: q.values,
        }
    }

    /// How the activations of this matrix's layout are quantized (`None` for f32 and stacks).
    fn activations(&self) -> Option<Activations> {
        match self {
            WeightMatrix::Q4_1 { activations, .. }
            | WeightMatrix::Q5_1 { activations, .. }
            | WeightMatrix::Q8_0 { activations, .. }
            | WeightMatrix::Q8_16 { activations, .. } => Some(*activations),
            WeightMatrix::F32 { .. } | WeightMatrix::Stacked { .. } => None,
        }
    }

    /// Parts that can be concatenated: one layout, one activation scheme.
    fn same_layout(&self, other: &WeightMatrix) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.activations() == other.activations()
    }

    /// Stacks matrices with equal `cols` by rows (fused projections). Parts of one layout are
    /// concatenated; parts of different layouts become a [`WeightMatrix::Stacked`], each kept in
    /// its own layout.
    pub(crate) fn stack_rows(parts: Vec<WeightMatrix>) -> WeightMatrix {
        let cols = parts[0].cols();
        debug_assert!(parts.iter().all(|p| p.cols() == cols));
        let rows: usize = parts.iter().map(WeightMatrix::rows).sum();
        let same_kind = parts.iter().all(|p| p.same_layout(&parts[0]));
        if !same_kind || matches!(parts[0], WeightMatrix::Stacked { .. }) {
            // Flatten, then concatenate neighbours of one layout (fewer, longer kernel runs).
            let mut groups: Vec<Vec<WeightMatrix>> = Vec::new();
            for part in parts.into_iter().flat_map(|p| match p {
                WeightMatrix::Stacked { parts, .. } => parts,
                other => vec![other],
            }) {
                match groups.last_mut() {
                    Some(group) if group[0].same_layout(&part) => group.push(part),
                    _ => groups.push(vec![part]),
                }
            }
            let parts: Vec<WeightMatrix> = groups.into_iter().map(Self::stack_rows).collect();
            if parts.len() == 1 {
                return parts.into_iter().next().expect("one part");
            }
            return WeightMatrix::Stacked { rows, cols, parts };
        }
        let mut iter = parts.into_iter();
        let mut acc = iter.next().expect("at least one matrix");
        for p in iter {
            match (&mut acc, p) {
                (
                    WeightMatrix::Q4_1 {
                        scales,
                        mins,
                        nibbles,
                        ..
                    },
                    WeightMatrix::Q4_1 {
                        scales: s,
                        mins: m,
                        nibbles: n,
                        ..
                    },
                ) => {
                    scales.extend(s);
                    mins.extend(m);
                    nibbles.extend(n);
                }
                (
                    WeightMatrix::Q5_1 {
                        scales,
                        mins,
                        nibbles,
                        high_bits,
                        ..
                    },
                    WeightMatrix::Q5_1 {
                        scales: s,
                        mins: m,
                        nibbles: n,
                        high_bits: h,
                        ..
                    },
                ) => {
                    scales.extend(s);
                    mins.extend(m);
                    nibbles.extend(n);
                    high_bits.extend(h);
                }
                (
                    WeightMatrix::Q8_0 { scales, values, .. },
                    WeightMatrix::Q8_0 {
                        scales: s,
                        values: v,
                        ..
                    },
                )
                | (
                    WeightMatrix::Q8_16 { scales, values, .. },
                    WeightMatrix::Q8_16 {
                        scales: s,
                        values: v,
                        ..
                    },
                ) => {
                    scales.extend(s);
                    values.extend(v);
                }
                (WeightMatrix::F32 { data, .. }, WeightMatrix::F32 { data: d, .. }) => {
                    data.extend(d);
                }
                _ => unreachable!("kinds checked above"),
            }
        }
        match &mut acc {
            WeightMatrix::Q4_1 { rows: r, .. }
            | WeightMatrix::Q5_1 { rows: r, .. }
            | WeightMatrix::Q8_0 { rows: r, .. }
            | WeightMatrix::Q8_16 { rows: r, .. }
            | WeightMatrix::F32 { rows: r, .. }
            | WeightMatrix::Stacked { rows: r, .. } => *r = rows,
        }
        acc
    }

    /// Output features.
    pub(crate) fn rows(&self) -> usize {
        match self {
            WeightMatrix::Q4_1 { rows, .. }
            | WeightMatrix::Q5_1 { rows, .. }
            | WeightMatrix::Q8_0 { rows, .. }
            | WeightMatrix::Q8_16 { rows, .. }
            | WeightMatrix::F32 { rows, .. }
            | WeightMatrix::Stacked { rows, .. } => *rows,
        }
    }

    /// Input features.
    pub(crate) fn cols(&self) -> usize {
        match self {
            WeightMatrix::Q4_1 { cols, .. }
            | WeightMatrix::Q5_1 { cols, .. }
            | WeightMatrix::Q8_0 { cols, .. }
            | WeightMatrix::Q8_16 { cols, .. }
            | WeightMatrix::F32 { cols, .. }
            | WeightMatrix::Stacked { cols, .. } => *cols,
        }
    }

    /// Bytes held by the weights.
    pub(crate) fn size_in_bytes(&self) -> usize {
        match self {
            WeightMatrix::Q4_1 {
                scales,
                mins,
                nibbles,
                ..
            } => 4 * (scales.len() + mins.len()) + nibbles.len(),
            WeightMatrix::Q5_1 {
                scales,
                mins,
                nibbles,
                high_bits,
                ..
            } => 4 * (scales.len() + mins.len() + high_bits.len()) + nibbles.len(),
            WeightMatrix::Q8_0 { scales, values, .. }
            | WeightMatrix::Q8_16 { scales, values, .. } => 4 * scales.len() + values.len(),
            WeightMatrix::F32 { data, .. } => 4 * data.len(),
            WeightMatrix::Stacked { parts, .. } => parts.iter().map(Self::size_in_bytes).sum(),
        }
    }

    /// Writes row `row` as f32 into `out` (used for embedding lookups).
    pub(crate) fn dequantize_row(&self, row: usize, out: &mut [f32]) {
        match self {
            WeightMatrix::Q4_1 {
                cols,
                scales,
                mins,
                nibbles,
                ..
            } => {
                let nb = cols / BLOCK;
                for b in 0..nb {
                    let i = row * nb + b;
                    let (d, m) = (scales[i], mins[i]);
                    let q = &nibbles[i * 16..i * 16 + 16];
                    let o = &mut out[b * BLOCK..(b + 1) * BLOCK];
                    for j in 0..16 {
                        o[j] = d * f32::from(q[j] & 15) + m;
                        o[j + 16] = d * f32::from(q[j] >> 4) + m;
                    }
                }
            }
            WeightMatrix::Q5_1 {
                cols,
                scales,
                mins,
                nibbles,
                high_bits,
                ..
            } => {
                let nb = cols / BLOCK;
                for b in 0..nb {
                    let i = row * nb + b;
                    let (d, m, high) = (scales[i], mins[i], high_bits[i]);
                    let q = &nibbles[i * 16..i * 16 + 16];
                    let o = &mut out[b * BLOCK..(b + 1) * BLOCK];
                    for j in 0..16 {
                        let low = f32::from(q[j] & 15) + 16.0 * ((high >> j) & 1) as f32;
                        let top = f32::from(q[j] >> 4) + 16.0 * ((high >> (j + 16)) & 1) as f32;
                        o[j] = d * low + m;
                        o[j + 16] = d * top + m;
                    }
                }
            }
            WeightMatrix::Q8_0 {
                cols,
                scales,
                values,
                ..
            } => {
                let nb = cols / BLOCK;
                for b in 0..nb {
                    let i = row * nb + b;
                    let d = scales[i];
                    for (o, &q) in out[b * BLOCK..(b + 1) * BLOCK]
                        .iter_mut()
                        .zip(&values[i * BLOCK..(i + 1) * BLOCK])
                    {
                        *o = d * f32::from(q);
                    }
                }
            }
            WeightMatrix::Q8_16 {
                cols,
                scales,
                values,
                ..
            } => {
                let start = row * cols;
                for (k, o) in out[..*cols].iter_mut().enumerate() {
                    *o = scales[(start + k) / 16] * f32::from(values[start + k]);
                }
            }
            WeightMatrix::F32 { cols, data, .. } => {
                out[..*cols].copy_from_slice(&data[row * cols..(row + 1) * cols]);
            }
            WeightMatrix::Stacked { parts, .. } => {
                let mut first = 0;
                for p in parts {
                    if row < first + p.rows() {
                        return p.dequantize_row(row - first, out);
                    }
                    first += p.rows();
                }
            }
        }
    }

    /// Whether the kernels of this matrix read activations quantized by `scheme`.
    fn uses(&self, scheme: Activations) -> bool {
        match self {
            WeightMatrix::Stacked { parts, .. } => parts.iter().any(|p| p.uses(scheme)),
            other => other.activations() == Some(scheme),
        }
    }

    /// `out[r][j] = sum_c x[r][c] * W[j][c]` for `m` rows of `x` (`m x cols`), `out` is `m x rows`.
    /// `scratch` holds reusable buffers.
    pub(crate) fn matmul(&self, x: &[f32], m: usize, out: &mut [f32], scratch: &mut MatmulScratch) {
        self.matmul_with(Isa::detect(), x, m, out, scratch);
    }

    /// [`matmul`](Self::matmul) with the kernels of `isa`.
    pub(crate) fn matmul_with(
        &self,
        isa: Isa,
        x: &[f32],
        m: usize,
        out: &mut [f32],
        scratch: &mut MatmulScratch,
    ) {
        let (n, k) = (self.rows(), self.cols());
        debug_assert_eq!(x.len(), m * k);
        debug_assert_eq!(out.len(), m * n);
        for scheme in Activations::ALL {
            if self.uses(scheme) {
                scratch.quantized[scheme.index()].quantize_from(x, m, k, scheme);
            }
        }
        // Each task owns a contiguous range of output features for all m rows (feature-major),
        // so the weights are read once; the result is transposed back afterwards.
        let transposed = &mut scratch.transposed;
        transposed.resize(m * n, 0.0);
        let threads = rayon::current_num_threads().max(1);
        let rows_per_task = n.div_ceil(threads * 4).max(16);
        let quantized = &scratch.quantized;
        transposed
            .par_chunks_mut(rows_per_task * m)
            .enumerate()
            .for_each(|(task, chunk)| {
                let start = task * rows_per_task;
                let end = start + chunk.len() / m;
                self.rows_range(isa, start..end, x, quantized, m, chunk);
            });
        if m == 1 {
            out.copy_from_slice(&transposed[..n]);
        } else {
            let transposed = &*transposed;
            out.par_chunks_mut(n).enumerate().for_each(|(r, row)| {
                for (j, value) in row.iter_mut().enumerate() {
                    *value = transposed[j * m + r];
                }
            });
        }
    }

    /// Output features `range` for all `m` rows, feature-major into `out_t`.
    fn rows_range(
        &self,
        isa: Isa,
        range: std::ops::Range<usize>,
        x: &[f32],
        quantized: &[QuantizedRows; 3],
        m: usize,
        out_t: &mut [f32],
    ) {
        let q = &quantized[self.activations().map_or(0, Activations::index)];
        match self {
            WeightMatrix::Q4_1 {
                cols,
                scales,
                mins,
                nibbles,
                ..
            } => {
                let w = NibbleBlocks {
                    scales,
                    mins,
                    nibbles,
                    high_bits: &[],
                };
                nibble_rows::<false>(isa, w, cols / BLOCK, range, q, m, out_t);
            }
            WeightMatrix::Q5_1 {
                cols,
                scales,
                mins,
                nibbles,
                high_bits,
                ..
            } => {
                let w = NibbleBlocks {
                    scales,
                    mins,
                    nibbles,
                    high_bits,
                };
                nibble_rows::<true>(isa, w, cols / BLOCK, range, q, m, out_t);
            }
            WeightMatrix::Q8_0 {
                cols,
                scales,
                values,
                ..
            } => {
                let w = ByteBlocks { scales, values };
                byte_rows::<false>(isa, w, cols / BLOCK, range, q, m, out_t);
            }
            WeightMatrix::Q8_16 {
                cols,
                scales,
                values,
                ..
            } => {
                let w = ByteBlocks { scales, values };
                byte_rows::<true>(isa, w, cols / BLOCK, range, q, m, out_t);
            }
            WeightMatrix::F32 { cols, data, .. } => {
                let k = *cols;
                for (local, j) in range.enumerate() {
                    let w = &data[j * k..(j + 1) * k];
                    for r in 0..m {
                        out_t[local * m + r] = dot_f32(w, &x[r * k..(r + 1) * k]);
                    }
                }
            }
            WeightMatrix::Stacked { parts, .. } => {
                let mut first = 0;
                for p in parts {
                    let last = first + p.rows();
                    let (lo, hi) = (range.start.max(first), range.end.min(last));
                    if lo < hi {
                        let out = &mut out_t[(lo - range.start) * m..(hi - range.start) * m];
                        p.rows_range(isa, lo - first..hi - first, x, quantized, m, out);
                    }
                    first = last;
                }
            }
        }
    }
}

/// Runs the 4-bit (`FIVE_BIT = false`) or 5-bit kernel of `isa` over output features `range`.
fn nibble_rows<const FIVE_BIT: bool>(
    isa: Isa,
    w: NibbleBlocks<'_>,
    nb: usize,
    range: std::ops::Range<usize>,
    q: &QuantizedRows,
    m: usize,
    out_t: &mut [f32],
) {
    match isa.kind() {
        // SAFETY (both): an `Isa` of this kind exists only after run-time detection found the
        // CPU features these functions are compiled for (see `isa.rs`).
        #[cfg(target_arch = "x86_64")]
        IsaKind::Vnni => unsafe { x86::avx512::nibble_rows::<FIVE_BIT>(w, nb, range, q, m, out_t) },
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx2 => unsafe { x86::avx2::nibble_rows::<FIVE_BIT>(w, nb, range, q, m, out_t) },
        IsaKind::Scalar => scalar::nibble_rows::<FIVE_BIT>(w, nb, range, q, m, out_t),
    }
}

/// Runs the 8-bit kernel of `isa` (one scale per block, or two with `SUB16`) over `range`.
fn byte_rows<const SUB16: bool>(
    isa: Isa,
    w: ByteBlocks<'_>,
    nb: usize,
    range: std::ops::Range<usize>,
    q: &QuantizedRows,
    m: usize,
    out_t: &mut [f32],
) {
    match isa.kind() {
        // SAFETY (both): as in `nibble_rows`.
        #[cfg(target_arch = "x86_64")]
        IsaKind::Vnni => unsafe { x86::avx512::byte_rows::<SUB16>(w, nb, range, q, m, out_t) },
        #[cfg(target_arch = "x86_64")]
        IsaKind::Avx2 => unsafe { x86::avx2::byte_rows::<SUB16>(w, nb, range, q, m, out_t) },
        IsaKind::Scalar => scalar::byte_rows::<SUB16>(w, nb, range, q, m, out_t),
    }
}

/// Reusable buffers of [`WeightMatrix::matmul`].
#[derive(Debug, Default)]
pub(crate) struct MatmulScratch {
    /// One per [`Activations`] scheme, by [`Activations::index`].
    quantized: [QuantizedRows; 3],
    transposed: Vec<f32>,
}

/// f32 dot product in 8 independent lanes so that it vectorizes.
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for (x, y) in ar.iter().zip(br) {
        sum += x * y;
    }
    sum
}

/// Most activation rows (traces) one tile handles; tile results travel in a [`TileOut`].
#[cfg(target_arch = "x86_64")]
const MAX_TILE_TRACES: usize = 8;

/// Results of one tile, `out[weight row][activation row]`, in a fixed-size buffer.
#[cfg(target_arch = "x86_64")]
type TileOut = [[f32; MAX_TILE_TRACES]; 4];

/// Copies a tile's results into a [`TileOut`].
#[cfg(target_arch = "x86_64")]
fn copy_tile<const R: usize, const T: usize>(out: &mut TileOut, tile: [[f32; T]; R]) {
    for (dst, src) in out.iter_mut().zip(&tile) {
        dst[..T].copy_from_slice(src);
    }
}

/// Calls `$tile::<rows, t, $layout>(args)` for every tile shape [`drive`] asks for; `$layout` is
/// the kernel's const layout flag.
#[cfg(target_arch = "x86_64")]
macro_rules! dispatch_tile {
    ($tile:ident::<$layout:ident>, $rows:expr, $t:expr, ($($arg:expr),*)) => {{
        let mut out = [[0f32; MAX_TILE_TRACES]; 4];
        match ($rows, $t) {
            (4, 1) => copy_tile(&mut out, $tile::<4, 1, $layout>($($arg),*)),
            (2, MAX_TILE_TRACES) => {
                copy_tile(&mut out, $tile::<2, MAX_TILE_TRACES, $layout>($($arg),*))
            }
            (2, 4) => copy_tile(&mut out, $tile::<2, 4, $layout>($($arg),*)),
            (2, 1) => copy_tile(&mut out, $tile::<2, 1, $layout>($($arg),*)),
            (1, MAX_TILE_TRACES) => {
                copy_tile(&mut out, $tile::<1, MAX_TILE_TRACES, $layout>($($arg),*))
            }
            (1, 4) => copy_tile(&mut out, $tile::<1, 4, $layout>($($arg),*)),
            _ => copy_tile(&mut out, $tile::<1, 1, $layout>($($arg),*)),
        }
        out
    }};
}

/// Walks `range x 0..m` in tiles of `rows` weight rows (`batch_1_rows` for batch 1, else 2; 1 for
/// a remainder) by `t` activation rows (`max_traces` (4 or 8), 4 or 1). `tile(rows, j, r0, t)`
/// computes one tile.
#[cfg(target_arch = "x86_64")]
#[inline]
fn drive(
    range: std::ops::Range<usize>,
    m: usize,
    batch_1_rows: usize,
    max_traces: usize,
    out_t: &mut [f32],
    tile: impl Fn(usize, usize, usize, usize) -> TileOut,
) {
    let rows_per_tile = if m == 1 { batch_1_rows } else { 2 };
    let mut j = range.start;
    while j < range.end {
        let rows = if j + rows_per_tile <= range.end {
            rows_per_tile
        } else {
            1
        };
        let mut r0 = 0;
        while r0 < m {
            let t = if m > 1 && r0 + max_traces <= m {
                max_traces
            } else if m > 1 && r0 + 4 <= m {
                4
            } else {
                1
            };
            let out = tile(rows, j, r0, t);
            for (i, row) in out.iter().enumerate().take(rows) {
                let at = (j - range.start + i) * m + r0;
                out_t[at..at + t].copy_from_slice(&row[..t]);
            }
            r0 += t;
        }
        j += rows;
    }
}

/// A fixed-size array cut from `data` at `start`: loads from it need no further bounds check.
#[cfg(target_arch = "x86_64")]
fn chunk<const N: usize, E>(data: &[E], start: usize) -> &[E; N] {
    data[start..start + N]
        .try_into()
        .expect("a slice of N elements")
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;
