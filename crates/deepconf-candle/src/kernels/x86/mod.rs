//! The x86-64 kernels: [`avx2`] (256-bit) and [`avx512`] (512-bit with VNNI). Every function is
//! compiled for its instruction set with `#[target_feature]`; the dispatch in `kernels/mod.rs`
//! calls them only with an [`Isa`](super::Isa) token of that kind.
//!
//! Work is done in tiles of `R` weight rows by `T` activation rows whose accumulators stay in
//! registers: each weight block is unpacked once for `T` activation rows and each activation
//! block loaded once for `R` weight rows, and the `R * T` independent accumulator chains hide the
//! FMA latency.

// Tiles index register arrays by weight row `i` and activation row `t` together.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::{__m128i, __m256i, _mm_loadu_si128, _mm256_loadu_si256};

/// Most activation rows (traces) one tile handles; tile results travel in a [`TileOut`].
const MAX_TILE_TRACES: usize = 8;

/// Results of one tile, `out[weight row][activation row]`, in a fixed-size buffer.
type TileOut = [[f32; MAX_TILE_TRACES]; 4];

/// Copies a tile's results into a [`TileOut`].
fn copy_tile<const R: usize, const T: usize>(out: &mut TileOut, tile: [[f32; T]; R]) {
    for (dst, src) in out.iter_mut().zip(&tile) {
        dst[..T].copy_from_slice(src);
    }
}

/// Calls `$tile::<rows, t, $layout>(args)` for every tile shape [`drive`] asks for; `$layout` is
/// the kernel's const layout flag.
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
fn chunk<const N: usize, E>(data: &[E], start: usize) -> &[E; N] {
    data[start..start + N]
        .try_into()
        .expect("a slice of N elements")
}

// After `dispatch_tile`, which the kernels use.
pub(super) mod avx2;
pub(super) mod avx512;

/// Loads 16 bytes. Taking a 16-byte array makes the bounds check the caller's slice indexing.
#[inline]
#[target_feature(enable = "avx2")]
fn load_16(bytes: &[u8; 16]) -> __m128i {
    // SAFETY: reads exactly the 16 bytes of the array; unaligned loads are allowed.
    unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) }
}

/// Loads 32 bytes (see [`load_16`]).
#[inline]
#[target_feature(enable = "avx2")]
fn load_32(bytes: &[i8; 32]) -> __m256i {
    // SAFETY: reads exactly the 32 bytes of the array; unaligned loads are allowed.
    unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) }
}
