//! CPU matrix kernels for the decoder: weight matrices in 4-bit, 5-bit or 8-bit integer blocks (or
//! f32) multiplied by a batch of activation rows.
//!
//! Why our own kernels: candle 0.11's Q4_1 dot product is scalar (about 26 tok/s at batch 1 here),
//! and its per-op tensor overhead is a large share of a 135M-parameter decode step. These kernels
//! follow ggml's integer-dot scheme (activations quantized to 8 bits per 32-value block, weights
//! dotted in integers, scales applied per block) and read every weight block once per call for all
//! activation rows, so a batch of traces shares one pass over the weights.
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

/// Activation rows quantized to 8 bits per 32-value block (ggml's Q8_1 layout, split in arrays).
#[derive(Debug, Default)]
pub(crate) struct QuantizedRows {
    rows: usize,
    blocks_per_row: usize,
    /// Per block: `d = max|x| / 127`.
    scales: Vec<f32>,
    /// Per block: `d * sum(q)`, which carries the minimum term of the 4- and 5-bit layouts.
    scaled_sums: Vec<f32>,
    /// Quantized values, `rows * blocks_per_row * 32`.
    values: Vec<i8>,
}

/// One block to quantize: its values, and where its bytes, scale and scaled sum go.
type BlockJob<'a> = (((&'a [f32], &'a mut [i8]), &'a mut f32), &'a mut f32);

impl QuantizedRows {
    /// Quantizes `rows` rows of `cols` values (`cols` a multiple of [`BLOCK`]).
    pub(crate) fn quantize_from(&mut self, x: &[f32], rows: usize, cols: usize) {
        debug_assert_eq!(x.len(), rows * cols);
        debug_assert_eq!(cols % BLOCK, 0);
        let blocks = rows * cols / BLOCK;
        self.rows = rows;
        self.blocks_per_row = cols / BLOCK;
        self.scales.resize(blocks, 0.0);
        self.scaled_sums.resize(blocks, 0.0);
        self.values.resize(rows * cols, 0);
        let quantize_block = |(((block, q), d_out), s_out): BlockJob<'_>| {
            let amax = block.iter().fold(0f32, |a, &v| a.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            let mut sum = 0i32;
            for (qv, &v) in q.iter_mut().zip(block) {
                let r = (v * inv).round() as i8;
                *qv = r;
                sum += i32::from(r);
            }
            *d_out = d;
            *s_out = d * sum as f32;
        };
        // A batch of rows is worth splitting across threads; a single decode row is not.
        if rows >= 4 {
            x.par_chunks_exact(BLOCK)
                .zip(self.values.par_chunks_exact_mut(BLOCK))
                .zip(self.scales.par_iter_mut())
                .zip(self.scaled_sums.par_iter_mut())
                .with_min_len(64)
                .for_each(quantize_block);
        } else {
            x.chunks_exact(BLOCK)
                .zip(self.values.chunks_exact_mut(BLOCK))
                .zip(self.scales.iter_mut())
                .zip(self.scaled_sums.iter_mut())
                .for_each(quantize_block);
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
        scales: Vec<f32>,
        mins: Vec<f32>,
        /// 16 bytes per block: low nibbles are values 0..16, high nibbles values 16..32.
        nibbles: Vec<u8>,
    },
    /// 5-bit: as [`WeightMatrix::Q4_1`] plus a fifth bit, value = d * q + m with q in 0..32.
    Q5_1 {
        rows: usize,
        cols: usize,
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
        scales: Vec<f32>,
        values: Vec<i8>,
    },
    /// 8-bit with a scale per 16 values (two per block), value = d\[i / 16\] * q.
    Q8_16 {
        rows: usize,
        cols: usize,
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
    /// Quantizes a dense row-major matrix to Q8_0 (`cols` must be a multiple of [`BLOCK`]).
    pub(crate) fn q8_0_from_f32(data: &[f32], rows: usize, cols: usize) -> Self {
        let mut q = QuantizedRows::default();
        q.quantize_from(data, rows, cols);
        WeightMatrix::Q8_0 {
            rows,
            cols,
            scales: q.scales,
            values: q.values,
        }
    }

    /// Stacks matrices with equal `cols` by rows (fused projections). Parts of one layout are
    /// concatenated; parts of different layouts become a [`WeightMatrix::Stacked`], each kept in
    /// its own layout.
    pub(crate) fn stack_rows(parts: Vec<WeightMatrix>) -> WeightMatrix {
        let cols = parts[0].cols();
        debug_assert!(parts.iter().all(|p| p.cols() == cols));
        let rows: usize = parts.iter().map(WeightMatrix::rows).sum();
        let same_kind = parts
            .iter()
            .all(|p| std::mem::discriminant(p) == std::mem::discriminant(&parts[0]));
        if !same_kind || matches!(parts[0], WeightMatrix::Stacked { .. }) {
            let flat = parts
                .into_iter()
                .flat_map(|p| match p {
                    WeightMatrix::Stacked { parts, .. } => parts,
                    other => vec![other],
                })
                .collect();
            return WeightMatrix::Stacked {
                rows,
                cols,
                parts: flat,
            };
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

    /// Whether the kernels read 8-bit activations (every layout except f32).
    fn needs_quantized_activations(&self) -> bool {
        match self {
            WeightMatrix::F32 { .. } => false,
            WeightMatrix::Stacked { parts, .. } => {
                parts.iter().any(Self::needs_quantized_activations)
            }
            _ => true,
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
        if self.needs_quantized_activations() {
            scratch.quantized.quantize_from(x, m, k);
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
        q: &QuantizedRows,
        m: usize,
        out_t: &mut [f32],
    ) {
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
                        p.rows_range(isa, lo - first..hi - first, x, q, m, out);
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
    quantized: QuantizedRows,
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
