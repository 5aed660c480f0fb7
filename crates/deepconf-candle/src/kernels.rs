//! CPU matrix kernels for the decoder: weight matrices in Q4_1, Q8_0 or f32 multiplied by a batch
//! of activation rows.
//!
//! Why our own kernels: candle 0.11's Q4_1 dot product is scalar (about 26 tok/s at batch 1 here),
//! and its per-op tensor overhead is a large share of a 135M-parameter decode step. These kernels
//! follow ggml's integer-dot scheme (activations quantized to 8 bits per 32-value block, weights
//! dotted in integers, scales applied per block) and read every weight block once per call for all
//! activation rows, so a batch of traces shares one pass over the weights.
//!
//! The x86 paths (AVX2, and AVX-512 VNNI's `vpdpbusd` where the CPU has it) are the only `unsafe`
//! in the crate: calling a `#[target_feature]` function is `unsafe`, and each call is guarded by a
//! runtime CPU feature check; vector loads read fixed-size arrays cut from bounds-checked slices.
//! Other CPUs use the portable scalar code. A test compares every path the CPU can run.
#![allow(unsafe_code)]

use rayon::prelude::*;

/// Values per quantization block (ggml's QK4_1 = QK8_0 = 32).
pub(crate) const BLOCK: usize = 32;

/// Activation rows quantized to 8 bits per 32-value block (ggml's Q8_1 layout, split in arrays).
#[derive(Debug, Default)]
pub(crate) struct QuantizedRows {
    rows: usize,
    blocks_per_row: usize,
    /// Per block: `d = max|x| / 127`.
    scales: Vec<f32>,
    /// Per block: `d * sum(q)`, which carries the Q4_1 minimum term.
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

/// A weight matrix of `rows` output features by `cols` input features, row-major.
#[derive(Debug, Clone)]
pub(crate) enum WeightMatrix {
    /// ggml Q4_1: per 32-block scale `d` and minimum `m`, value = d * q + m with q in 0..16.
    Q4_1 {
        rows: usize,
        cols: usize,
        scales: Vec<f32>,
        mins: Vec<f32>,
        /// 16 bytes per block: low nibbles are values 0..16, high nibbles values 16..32.
        nibbles: Vec<u8>,
    },
    /// ggml Q8_0: per 32-block scale `d`, value = d * q.
    Q8_0 {
        rows: usize,
        cols: usize,
        scales: Vec<f32>,
        values: Vec<i8>,
    },
    /// Dense f32.
    F32 {
        rows: usize,
        cols: usize,
        data: Vec<f32>,
    },
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

    /// Stacks matrices with equal `cols` by rows (fused projections). Mixed formats are requantized
    /// to Q8_0 (or kept f32 when `cols` is not a multiple of [`BLOCK`]).
    pub(crate) fn stack_rows(parts: Vec<WeightMatrix>) -> WeightMatrix {
        let cols = parts[0].cols();
        let rows: usize = parts.iter().map(WeightMatrix::rows).sum();
        let same_kind = parts
            .iter()
            .all(|p| std::mem::discriminant(p) == std::mem::discriminant(&parts[0]));
        if !same_kind {
            let mut dense = vec![0f32; rows * cols];
            let mut r = 0;
            for p in &parts {
                for j in 0..p.rows() {
                    p.dequantize_row(j, &mut dense[r * cols..(r + 1) * cols]);
                    r += 1;
                }
            }
            return if cols.is_multiple_of(BLOCK) {
                WeightMatrix::q8_0_from_f32(&dense, rows, cols)
            } else {
                WeightMatrix::F32 {
                    rows,
                    cols,
                    data: dense,
                }
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
                    WeightMatrix::Q8_0 { scales, values, .. },
                    WeightMatrix::Q8_0 {
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
            | WeightMatrix::Q8_0 { rows: r, .. }
            | WeightMatrix::F32 { rows: r, .. } => *r = rows,
        }
        acc
    }

    /// Output features.
    pub(crate) fn rows(&self) -> usize {
        match self {
            WeightMatrix::Q4_1 { rows, .. }
            | WeightMatrix::Q8_0 { rows, .. }
            | WeightMatrix::F32 { rows, .. } => *rows,
        }
    }

    /// Input features.
    pub(crate) fn cols(&self) -> usize {
        match self {
            WeightMatrix::Q4_1 { cols, .. }
            | WeightMatrix::Q8_0 { cols, .. }
            | WeightMatrix::F32 { cols, .. } => *cols,
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
            WeightMatrix::Q8_0 { scales, values, .. } => 4 * scales.len() + values.len(),
            WeightMatrix::F32 { data, .. } => 4 * data.len(),
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
            WeightMatrix::F32 { cols, data, .. } => {
                out[..*cols].copy_from_slice(&data[row * cols..(row + 1) * cols]);
            }
        }
    }

    /// `out[r][j] = sum_c x[r][c] * W[j][c]` for `m` rows of `x` (`m x cols`), `out` is `m x rows`.
    /// `scratch` holds reusable buffers.
    pub(crate) fn matmul(&self, x: &[f32], m: usize, out: &mut [f32], scratch: &mut MatmulScratch) {
        self.matmul_with(Isa::detect(), x, m, out, scratch);
    }

    /// [`matmul`](Self::matmul) with the kernels of `isa`, which the CPU must support.
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
        if !matches!(self, WeightMatrix::F32 { .. }) {
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
                match isa {
                    // SAFETY (both): `Isa::detect` found these CPU features at run time.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Vnni => unsafe {
                        x86::avx512::q4_1_rows(*cols, scales, mins, nibbles, range, q, m, out_t)
                    },
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe {
                        x86::avx2::q4_1_rows(*cols, scales, mins, nibbles, range, q, m, out_t)
                    },
                    Isa::Scalar => {
                        scalar::q4_1_rows(*cols, scales, mins, nibbles, range, q, m, out_t)
                    }
                }
            }
            WeightMatrix::Q8_0 {
                cols,
                scales,
                values,
                ..
            } => {
                match isa {
                    // SAFETY (both): `Isa::detect` found these CPU features at run time.
                    #[cfg(target_arch = "x86_64")]
                    Isa::Vnni => unsafe {
                        x86::avx512::q8_0_rows(*cols, scales, values, range, q, m, out_t)
                    },
                    #[cfg(target_arch = "x86_64")]
                    Isa::Avx2 => unsafe {
                        x86::avx2::q8_0_rows(*cols, scales, values, range, q, m, out_t)
                    },
                    Isa::Scalar => scalar::q8_0_rows(*cols, scales, values, range, q, m, out_t),
                }
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
        }
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

/// The integer-dot instruction set the kernels use on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Portable Rust.
    Scalar,
    /// AVX2 + FMA: `vpmaddubsw` + `vpmaddwd` per 32-byte dot.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 with VNNI: one `vpdpbusd` per 32-byte dot, Q4_1 two blocks per 512-bit vector.
    #[cfg(target_arch = "x86_64")]
    Vnni,
}

/// Environment variable that caps the kernels' instruction set (`scalar`, `avx2`), to compare
/// paths or to work around a CPU-specific problem.
pub(crate) const KERNELS_ENV: &str = "DEEPCONF_KERNELS";

impl Isa {
    /// The instruction set the kernels use: the best this CPU has, capped by `DEEPCONF_KERNELS`
    /// (read once per process).
    pub(crate) fn detect() -> Isa {
        static CHOSEN: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let best = Isa::best();
            match std::env::var(KERNELS_ENV).as_deref() {
                Ok("scalar") => Isa::Scalar,
                #[cfg(target_arch = "x86_64")]
                Ok("avx2") if best == Isa::Vnni => Isa::Avx2,
                _ => best,
            }
        })
    }

    /// The best instruction set this CPU has.
    fn best() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx2") && has!("fma") {
                if has!("avx512f")
                    && has!("avx512bw")
                    && has!("avx512dq")
                    && has!("avx512vl")
                    && has!("avx512vnni")
                {
                    return Isa::Vnni;
                }
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    }

    /// Every instruction set this CPU can run, for tests that compare them.
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Isa> {
        let mut all = vec![Isa::Scalar];
        #[cfg(target_arch = "x86_64")]
        match Isa::best() {
            Isa::Vnni => all.extend([Isa::Avx2, Isa::Vnni]),
            Isa::Avx2 => all.push(Isa::Avx2),
            Isa::Scalar => {}
        }
        all
    }
}

mod scalar {
    use super::{BLOCK, QuantizedRows};

    #[allow(clippy::too_many_arguments)]
    pub(super) fn q4_1_rows(
        cols: usize,
        scales: &[f32],
        mins: &[f32],
        nibbles: &[u8],
        range: std::ops::Range<usize>,
        q: &QuantizedRows,
        m: usize,
        out_t: &mut [f32],
    ) {
        let nb = cols / BLOCK;
        for (local, j) in range.enumerate() {
            for r in 0..m {
                let mut sum = 0f32;
                for b in 0..nb {
                    let wi = j * nb + b;
                    let xi = r * nb + b;
                    let w = &nibbles[wi * 16..wi * 16 + 16];
                    let a = &q.values[xi * BLOCK..(xi + 1) * BLOCK];
                    let mut dot = 0i32;
                    for t in 0..16 {
                        dot += i32::from(w[t] & 15) * i32::from(a[t]);
                        dot += i32::from(w[t] >> 4) * i32::from(a[t + 16]);
                    }
                    sum += scales[wi] * q.scales[xi] * dot as f32 + mins[wi] * q.scaled_sums[xi];
                }
                out_t[local * m + r] = sum;
            }
        }
    }

    pub(super) fn q8_0_rows(
        cols: usize,
        scales: &[f32],
        values: &[i8],
        range: std::ops::Range<usize>,
        q: &QuantizedRows,
        m: usize,
        out_t: &mut [f32],
    ) {
        let nb = cols / BLOCK;
        for (local, j) in range.enumerate() {
            for r in 0..m {
                let mut sum = 0f32;
                for b in 0..nb {
                    let wi = j * nb + b;
                    let xi = r * nb + b;
                    let w = &values[wi * BLOCK..(wi + 1) * BLOCK];
                    let a = &q.values[xi * BLOCK..(xi + 1) * BLOCK];
                    let dot: i32 = w
                        .iter()
                        .zip(a)
                        .map(|(&x, &y)| i32::from(x) * i32::from(y))
                        .sum();
                    sum += scales[wi] * q.scales[xi] * dot as f32;
                }
                out_t[local * m + r] = sum;
            }
        }
    }
}

/// Loads 16 bytes. Taking a 16-byte array makes the bounds check the caller's slice indexing.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
fn load_16(bytes: &[u8; 16]) -> std::arch::x86_64::__m128i {
    // SAFETY: reads exactly the 16 bytes of the array; unaligned loads are allowed.
    unsafe { std::arch::x86_64::_mm_loadu_si128(bytes.as_ptr().cast()) }
}

/// Loads 32 bytes (see [`load_16`]).
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2")]
fn load_32(bytes: &[i8; 32]) -> std::arch::x86_64::__m256i {
    // SAFETY: reads exactly the 32 bytes of the array; unaligned loads are allowed.
    unsafe { std::arch::x86_64::_mm256_loadu_si256(bytes.as_ptr().cast()) }
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

/// Calls `$tile::<rows, t>(args)` for every tile shape [`drive`] asks for.
#[cfg(target_arch = "x86_64")]
macro_rules! dispatch_tile {
    ($tile:ident, $rows:expr, $t:expr, ($($arg:expr),*)) => {{
        let mut out = [[0f32; MAX_TILE_TRACES]; 4];
        match ($rows, $t) {
            (4, 1) => copy_tile(&mut out, $tile::<4, 1>($($arg),*)),
            (2, MAX_TILE_TRACES) => copy_tile(&mut out, $tile::<2, MAX_TILE_TRACES>($($arg),*)),
            (2, 4) => copy_tile(&mut out, $tile::<2, 4>($($arg),*)),
            (2, 1) => copy_tile(&mut out, $tile::<2, 1>($($arg),*)),
            (1, MAX_TILE_TRACES) => copy_tile(&mut out, $tile::<1, MAX_TILE_TRACES>($($arg),*)),
            (1, 4) => copy_tile(&mut out, $tile::<1, 4>($($arg),*)),
            _ => copy_tile(&mut out, $tile::<1, 1>($($arg),*)),
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

// Tiles index register arrays by weight row `i` and activation row `t` together.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::needless_range_loop)]
mod x86 {
    /// The 256-bit AVX2 kernels (AVX-512 VNNI CPUs use [`avx512`] instead).
    ///
    /// Work is done in tiles of `R` weight rows by `T` activation rows whose accumulators stay
    /// in registers: each weight block is unpacked once for `T` activation rows and each
    /// activation block loaded once for `R` weight rows, and the `R * T` independent
    /// accumulator chains hide the FMA latency. Batch 1 uses 4 x 1 tiles (Q4_1), batches 2 x 4.
    pub(super) mod avx2 {
        use super::super::{
            BLOCK, MAX_TILE_TRACES, QuantizedRows, copy_tile, drive, load_16, load_32,
        };
        use std::arch::x86_64::*;

        /// Integer dot products of 32 unsigned weight bytes with 32 signed activation bytes,
        /// summed in groups of four into eight i32 lanes. `vpmaddubsw` saturates its i16 pair
        /// sums, which never happens here: weights are at most 15 (Q4_1) or 128 (|Q8_0|) and
        /// activations at most 127 in magnitude, so a pair is at most 2 * 128 * 127 = 32512.
        #[inline]
        #[target_feature(enable = "avx2")]
        fn dot(w: __m256i, a: __m256i) -> __m256i {
            _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1))
        }

        /// Batch 1 streams one Q8_0 weight row at a time: interleaving rows measured slower.
        const Q8_ROWS: usize = 1;

        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn hsum(v: __m256) -> f32 {
            let s = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            _mm_cvtss_f32(s)
        }

        fn block<const N: usize, E>(data: &[E], index: usize) -> &[E; N] {
            data[index * N..(index + 1) * N]
                .try_into()
                .expect("a slice of N elements")
        }

        /// Weight rows `j..j + R` of a Q4_1 matrix against activation rows `r0..r0 + T`.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments)]
        fn q4_1_tile<const R: usize, const T: usize>(
            nb: usize,
            scales: &[f32],
            mins: &[f32],
            nibbles: &[u8],
            q: &QuantizedRows,
            j: usize,
            r0: usize,
        ) -> [[f32; T]; R] {
            let low_mask = _mm256_set1_epi8(15);
            let mut acc = [[_mm256_setzero_ps(); T]; R];
            let mut min_terms = [[0f32; T]; R];
            for b in 0..nb {
                let mut w = [_mm256_setzero_si256(); R];
                let mut d = [0f32; R];
                let mut mn = [0f32; R];
                for i in 0..R {
                    let wi = (j + i) * nb + b;
                    let packed = load_16(block::<16, u8>(nibbles, wi));
                    let both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
                    w[i] = _mm256_and_si256(both, low_mask);
                    d[i] = scales[wi];
                    mn[i] = mins[wi];
                }
                for t in 0..T {
                    let xi = (r0 + t) * nb + b;
                    let a = load_32(block::<BLOCK, i8>(&q.values, xi));
                    let (xs, xsum) = (q.scales[xi], q.scaled_sums[xi]);
                    for i in 0..R {
                        let dot = _mm256_cvtepi32_ps(dot(w[i], a));
                        acc[i][t] = _mm256_fmadd_ps(dot, _mm256_set1_ps(d[i] * xs), acc[i][t]);
                        min_terms[i][t] += mn[i] * xsum;
                    }
                }
            }
            let mut out = [[0f32; T]; R];
            for i in 0..R {
                for t in 0..T {
                    out[i][t] = hsum(acc[i][t]) + min_terms[i][t];
                }
            }
            out
        }

        /// Weight rows `j..j + R` of a Q8_0 matrix against activation rows `r0..r0 + T`.
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        fn q8_0_tile<const R: usize, const T: usize>(
            nb: usize,
            scales: &[f32],
            values: &[i8],
            q: &QuantizedRows,
            j: usize,
            r0: usize,
        ) -> [[f32; T]; R] {
            let mut acc = [[_mm256_setzero_ps(); T]; R];
            for b in 0..nb {
                let mut w = [_mm256_setzero_si256(); R];
                let mut w_abs = [_mm256_setzero_si256(); R];
                let mut d = [0f32; R];
                for i in 0..R {
                    let wi = (j + i) * nb + b;
                    w[i] = load_32(block::<BLOCK, i8>(values, wi));
                    // The dot needs unsigned weights: move their signs onto the activations.
                    w_abs[i] = _mm256_sign_epi8(w[i], w[i]);
                    d[i] = scales[wi];
                }
                for t in 0..T {
                    let xi = (r0 + t) * nb + b;
                    let a = load_32(block::<BLOCK, i8>(&q.values, xi));
                    let xs = q.scales[xi];
                    for i in 0..R {
                        let dot = dot(w_abs[i], _mm256_sign_epi8(a, w[i]));
                        acc[i][t] = _mm256_fmadd_ps(
                            _mm256_cvtepi32_ps(dot),
                            _mm256_set1_ps(d[i] * xs),
                            acc[i][t],
                        );
                    }
                }
            }
            let mut out = [[0f32; T]; R];
            for i in 0..R {
                for t in 0..T {
                    out[i][t] = hsum(acc[i][t]);
                }
            }
            out
        }

        /// Output features `range` of a Q4_1 matrix for `m` activation rows, feature-major
        /// into `out_t`.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn q4_1_rows(
            cols: usize,
            scales: &[f32],
            mins: &[f32],
            nibbles: &[u8],
            range: std::ops::Range<usize>,
            q: &QuantizedRows,
            m: usize,
            out_t: &mut [f32],
        ) {
            let nb = cols / BLOCK;
            // 16 ymm registers hold at most 2 x 4 accumulators.
            drive(range, m, 4, 4, out_t, |rows, j, r0, t| {
                dispatch_tile!(q4_1_tile, rows, t, (nb, scales, mins, nibbles, q, j, r0))
            });
        }

        /// Output features `range` of a Q8_0 matrix for `m` activation rows, feature-major
        /// into `out_t`.
        #[target_feature(enable = "avx2,fma")]
        pub(crate) fn q8_0_rows(
            cols: usize,
            scales: &[f32],
            values: &[i8],
            range: std::ops::Range<usize>,
            q: &QuantizedRows,
            m: usize,
            out_t: &mut [f32],
        ) {
            let nb = cols / BLOCK;
            drive(range, m, Q8_ROWS, 4, out_t, |rows, j, r0, t| {
                dispatch_tile!(q8_0_tile, rows, t, (nb, scales, values, q, j, r0))
            });
        }
    }

    /// Q4_1 on 512-bit vectors: two 32-value blocks per `vpdpbusd`, so each instruction does
    /// twice the work of the 256-bit kernels. The Q4_1 minimum term `sum_b min_b * d_x * sum(q_x)`
    /// is a plain f32 dot over blocks, done once per output after the integer loop.
    pub(super) mod avx512 {
        use super::super::{BLOCK, MAX_TILE_TRACES, QuantizedRows, copy_tile, drive};
        use std::arch::x86_64::*;

        /// Bytes of two blocks of packed nibbles, and of two blocks of activations.
        const PAIR_NIBBLES: usize = 32;
        const PAIR_VALUES: usize = 2 * BLOCK;

        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma")]
        fn pair(x: f32, y: f32) -> __m512 {
            _mm512_insertf32x8(_mm512_set1_ps(x), _mm256_set1_ps(y), 1)
        }

        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma")]
        fn load_pair_nibbles(bytes: &[u8; PAIR_NIBBLES]) -> __m512i {
            // SAFETY: reads exactly the 32 bytes of the array; unaligned loads are allowed.
            let packed = unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) };
            let mask = _mm256_set1_epi8(15);
            let low = _mm256_and_si256(packed, mask);
            let high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), mask);
            // [low b, low b+1, high b, high b+1] -> [low b, high b, low b+1, high b+1]: the value
            // order of the two blocks' activations.
            let joined = _mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1);
            _mm512_shuffle_i64x2(joined, joined, 0b11_01_10_00)
        }

        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma")]
        fn load_pair_values(values: &[i8; PAIR_VALUES]) -> __m512i {
            // SAFETY: reads exactly the 64 bytes of the array; unaligned loads are allowed.
            unsafe { _mm512_loadu_si512(values.as_ptr().cast()) }
        }

        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma")]
        fn load_block_nibbles(bytes: &[u8; 16]) -> __m256i {
            // SAFETY: reads exactly the 16 bytes of the array; unaligned loads are allowed.
            let packed = unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) };
            let both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
            _mm256_and_si256(both, _mm256_set1_epi8(15))
        }

        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma")]
        fn load_block_values(values: &[i8; BLOCK]) -> __m256i {
            // SAFETY: reads exactly the 32 bytes of the array; unaligned loads are allowed.
            unsafe { _mm256_loadu_si256(values.as_ptr().cast()) }
        }

        fn chunk<const N: usize, E>(data: &[E], start: usize) -> &[E; N] {
            data[start..start + N]
                .try_into()
                .expect("a slice of N elements")
        }

        /// Weight rows `j..j + R` against activation rows `r0..r0 + T`.
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma")]
        fn tile<const R: usize, const T: usize>(
            nb: usize,
            scales: &[f32],
            mins: &[f32],
            nibbles: &[u8],
            q: &QuantizedRows,
            j: usize,
            r0: usize,
        ) -> [[f32; T]; R] {
            let mut acc = [[_mm512_setzero_ps(); T]; R];
            let mut b = 0;
            while b + 2 <= nb {
                let mut w = [_mm512_setzero_si512(); R];
                let mut d = [_mm512_setzero_ps(); R];
                let mut mn = [_mm512_setzero_ps(); R];
                for i in 0..R {
                    let wi = (j + i) * nb + b;
                    w[i] = load_pair_nibbles(chunk::<PAIR_NIBBLES, u8>(nibbles, wi * 16));
                    d[i] = pair(scales[wi], scales[wi + 1]);
                    mn[i] = pair(mins[wi], mins[wi + 1]);
                }
                for t in 0..T {
                    let xi = (r0 + t) * nb + b;
                    let a = load_pair_values(chunk::<PAIR_VALUES, i8>(&q.values, xi * BLOCK));
                    let xs = pair(q.scales[xi], q.scales[xi + 1]);
                    // The minimum term `min * d_x * sum(q_x)` of each block spread over the 8
                    // lanes of its half (x 1/8, exact in binary), so the final lane sum adds it.
                    let sums = _mm512_mul_ps(
                        pair(q.scaled_sums[xi], q.scaled_sums[xi + 1]),
                        _mm512_set1_ps(0.125),
                    );
                    for i in 0..R {
                        let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[i], a);
                        acc[i][t] = _mm512_fmadd_ps(
                            _mm512_cvtepi32_ps(dot),
                            _mm512_mul_ps(d[i], xs),
                            acc[i][t],
                        );
                        acc[i][t] = _mm512_fmadd_ps(mn[i], sums, acc[i][t]);
                    }
                }
                b += 2;
            }
            let mut out = [[0f32; T]; R];
            for i in 0..R {
                for t in 0..T {
                    out[i][t] = _mm512_reduce_add_ps(acc[i][t]);
                }
            }
            if b < nb {
                // An odd block count leaves one block: 256-bit.
                for i in 0..R {
                    let wi = (j + i) * nb + b;
                    let w = load_block_nibbles(chunk::<16, u8>(nibbles, wi * 16));
                    for t in 0..T {
                        let xi = (r0 + t) * nb + b;
                        let a = load_block_values(chunk::<BLOCK, i8>(&q.values, xi * BLOCK));
                        let dot =
                            _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), w, a));
                        let mut lanes = [0f32; 8];
                        // SAFETY: stores exactly the 8 floats of the array.
                        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), dot) };
                        out[i][t] += scales[wi] * q.scales[xi] * lanes.iter().sum::<f32>()
                            + mins[wi] * q.scaled_sums[xi];
                    }
                }
            }
            out
        }

        /// Output features `range` of a Q4_1 matrix for `m` activation rows, feature-major into
        /// `out_t`.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma")]
        pub(crate) fn q4_1_rows(
            cols: usize,
            scales: &[f32],
            mins: &[f32],
            nibbles: &[u8],
            range: std::ops::Range<usize>,
            q: &QuantizedRows,
            m: usize,
            out_t: &mut [f32],
        ) {
            let nb = cols / BLOCK;
            drive(range, m, 4, MAX_TILE_TRACES, out_t, |rows, j, r0, t| {
                dispatch_tile!(tile, rows, t, (nb, scales, mins, nibbles, q, j, r0))
            });
        }

        /// Weight rows `j..j + R` of a Q8_0 matrix against activation rows `r0..r0 + T`.
        /// `vpdpbusd` multiplies unsigned by signed bytes: the activations are offset by 128 to
        /// make them unsigned, and `128 * sum(w)` (one more `vpdpbusd` per weight pair, shared by
        /// the `T` rows) is subtracted again.
        #[inline]
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma")]
        fn q8_0_tile<const R: usize, const T: usize>(
            nb: usize,
            scales: &[f32],
            values: &[i8],
            q: &QuantizedRows,
            j: usize,
            r0: usize,
        ) -> [[f32; T]; R] {
            let offset = _mm512_set1_epi8(-128);
            let mut acc = [[_mm512_setzero_ps(); T]; R];
            let mut b = 0;
            while b + 2 <= nb {
                let mut w = [_mm512_setzero_si512(); R];
                let mut w_sum = [_mm512_setzero_si512(); R];
                let mut d = [_mm512_setzero_ps(); R];
                for i in 0..R {
                    let wi = (j + i) * nb + b;
                    w[i] = load_pair_values(chunk::<PAIR_VALUES, i8>(values, wi * BLOCK));
                    w_sum[i] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), offset, w[i]);
                    d[i] = pair(scales[wi], scales[wi + 1]);
                }
                for t in 0..T {
                    let xi = (r0 + t) * nb + b;
                    let a = load_pair_values(chunk::<PAIR_VALUES, i8>(&q.values, xi * BLOCK));
                    // Flipping the sign bit adds 128 to a signed byte read as unsigned.
                    let a_unsigned = _mm512_xor_si512(a, offset);
                    let xs = pair(q.scales[xi], q.scales[xi + 1]);
                    for i in 0..R {
                        let dot = _mm512_sub_epi32(
                            _mm512_dpbusd_epi32(_mm512_setzero_si512(), a_unsigned, w[i]),
                            w_sum[i],
                        );
                        acc[i][t] = _mm512_fmadd_ps(
                            _mm512_cvtepi32_ps(dot),
                            _mm512_mul_ps(d[i], xs),
                            acc[i][t],
                        );
                    }
                }
                b += 2;
            }
            let mut out = [[0f32; T]; R];
            for i in 0..R {
                for t in 0..T {
                    out[i][t] = _mm512_reduce_add_ps(acc[i][t]);
                }
            }
            if b < nb {
                // An odd block count leaves one block.
                for i in 0..R {
                    let wi = (j + i) * nb + b;
                    let w = chunk::<BLOCK, i8>(values, wi * BLOCK);
                    for t in 0..T {
                        let xi = (r0 + t) * nb + b;
                        let a = chunk::<BLOCK, i8>(&q.values, xi * BLOCK);
                        let dot: i32 = w
                            .iter()
                            .zip(a)
                            .map(|(&x, &y)| i32::from(x) * i32::from(y))
                            .sum();
                        out[i][t] += scales[wi] * q.scales[xi] * dot as f32;
                    }
                }
            }
            out
        }

        /// Output features `range` of a Q8_0 matrix for `m` activation rows, feature-major into
        /// `out_t`.
        #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma")]
        pub(crate) fn q8_0_rows(
            cols: usize,
            scales: &[f32],
            values: &[i8],
            range: std::ops::Range<usize>,
            q: &QuantizedRows,
            m: usize,
            out_t: &mut [f32],
        ) {
            let nb = cols / BLOCK;
            // Batch 1 streams one weight row at a time: interleaving rows measured slower here.
            drive(range, m, 1, MAX_TILE_TRACES, out_t, |rows, j, r0, t| {
                dispatch_tile!(q8_0_tile, rows, t, (nb, scales, values, q, j, r0))
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn reference(w: &WeightMatrix, x: &[f32], m: usize) -> Vec<f32> {
        let (n, k) = (w.rows(), w.cols());
        let mut row = vec![0f32; k];
        let mut out = vec![0f32; m * n];
        for j in 0..n {
            w.dequantize_row(j, &mut row);
            for r in 0..m {
                out[r * n + j] = row.iter().zip(&x[r * k..]).map(|(a, b)| a * b).sum();
            }
        }
        out
    }

    fn q4_1_from_f32(data: &[f32], rows: usize, cols: usize) -> WeightMatrix {
        let (mut scales, mut mins, mut nibbles) = (vec![], vec![], vec![]);
        for block in data.chunks_exact(BLOCK) {
            let lo = block.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let d = (hi - lo) / 15.0;
            scales.push(d);
            mins.push(lo);
            let q = |v: f32| ((v - lo) / d).round().clamp(0.0, 15.0) as u8;
            for t in 0..16 {
                nibbles.push(q(block[t]) | (q(block[t + 16]) << 4));
            }
        }
        WeightMatrix::Q4_1 {
            rows,
            cols,
            scales,
            mins,
            nibbles,
        }
    }

    #[test]
    fn quantized_matmuls_match_dequantized_reference() {
        // 37 rows and 1..9 activation rows exercise every tile shape and remainder; 3 and 19
        // blocks per row an odd last block after the 512-bit block pairs, short and long rows.
        for k in [96, 608] {
            check_every_isa(37, k);
        }
    }

    fn check_every_isa(n: usize, k: usize) {
        let dense = pseudo_random(n * k, 1);
        for m in [1, 2, 3, 5, 6, 9] {
            let x = pseudo_random(m * k, 2 + m as u32);
            for w in [
                q4_1_from_f32(&dense, n, k),
                WeightMatrix::q8_0_from_f32(&dense, n, k),
                WeightMatrix::F32 {
                    rows: n,
                    cols: k,
                    data: dense.clone(),
                },
            ] {
                let want = reference(&w, &x, m);
                let mut scalar = vec![0f32; m * n];
                w.matmul_with(
                    Isa::Scalar,
                    &x,
                    m,
                    &mut scalar,
                    &mut MatmulScratch::default(),
                );
                for isa in Isa::available() {
                    let mut out = vec![0f32; m * n];
                    w.matmul_with(isa, &x, m, &mut out, &mut MatmulScratch::default());
                    for ((got, want), exact) in out.iter().zip(&want).zip(&scalar) {
                        // Activations are quantized to 8 bits: independent rounding errors grow
                        // like sqrt(k); allow a few of their standard deviations.
                        assert!(
                            (got - want).abs()
                                < 0.06 * (k as f32 / 96.0).sqrt() + 0.01 * want.abs(),
                            "{isa:?}: {got} vs {want}"
                        );
                        // Integer dots are exact; only the f32 summation order differs.
                        assert!(
                            (got - exact).abs() <= 1e-4 * (1.0 + exact.abs()),
                            "{isa:?}: {got} vs scalar {exact}"
                        );
                    }
                }
            }
        }
    }
}
