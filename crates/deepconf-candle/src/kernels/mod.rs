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

mod activations;
mod isa;
mod scalar;

use rayon::prelude::*;

pub(crate) use activations::{Activations, QuantizedRows};
pub(crate) use isa::{Isa, IsaKind};

/// Values per quantization block (ggml's QK4_0 = QK4_1 = QK5_0 = QK5_1 = QK8_0 = 32).
pub(crate) const BLOCK: usize = 32;

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

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;
