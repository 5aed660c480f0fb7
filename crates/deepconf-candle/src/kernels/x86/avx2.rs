//! The 256-bit AVX2 kernels (AVX-512 VNNI CPUs use [`avx512`](super::avx512) instead): one
//! 32-value block per vector. Batch 1 uses 4 x 1 tiles for the 4/5-bit layouts and 1 x 1 for the
//! 8-bit ones, batches 2 x 4.

use std::arch::x86_64::*;
use std::ops::Range;

use super::super::{BLOCK, ByteBlocks, NibbleBlocks, QuantizedRows};
use super::{MAX_TILE_TRACES, copy_tile, drive, load_16, load_32};

/// Integer dot products of 32 unsigned weight bytes with 32 signed activation bytes, summed in
/// groups of four into eight i32 lanes (lane `k` covers bytes `4k..4k + 4`). `vpmaddubsw`
/// saturates its i16 pair sums, which never happens here: weights are at most 31 (4/5-bit) or
/// 128 (|8-bit|) and activations at most 127 in magnitude, so a pair is at most
/// 2 * 128 * 127 = 32512.
#[inline]
#[target_feature(enable = "avx2")]
fn dot(w: __m256i, a: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1))
}

/// Batch 1 streams one 8-bit weight row at a time: interleaving rows measured slower.
const BYTE_ROWS: usize = 1;

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

/// The fifth bits of a 5-bit block as bytes: byte `i` is 16 when bit `i` of `bits` is set, else
/// 0, in the value order of the unpacked nibbles.
#[inline]
#[target_feature(enable = "avx2")]
fn fifth_bits(bits: u32) -> __m256i {
    // Byte i takes the byte of `bits` that holds bit i (the shuffle works within each 128-bit
    // half, and every half holds all four bytes), then tests its own bit, i % 8, of it.
    let spread = _mm256_shuffle_epi8(
        _mm256_set1_epi32(bits as i32),
        _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3,
            3, 3, 3,
        ),
    );
    let select = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select);
    _mm256_and_si256(set, _mm256_set1_epi8(16))
}

/// Weight rows `j..j + R` of a 4-bit (or, with `FIVE_BIT`, 5-bit) matrix against activation rows
/// `r0..r0 + T`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn nibble_tile<const R: usize, const T: usize, const FIVE_BIT: bool>(
    nb: usize,
    w: NibbleBlocks<'_>,
    q: &QuantizedRows,
    j: usize,
    r0: usize,
) -> [[f32; T]; R] {
    let low_mask = _mm256_set1_epi8(15);
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let mut min_terms = [[0f32; T]; R];
    for b in 0..nb {
        let mut wv = [_mm256_setzero_si256(); R];
        let mut d = [0f32; R];
        let mut mn = [0f32; R];
        for i in 0..R {
            let wi = (j + i) * nb + b;
            let packed = load_16(block::<16, u8>(w.nibbles, wi));
            let both = _mm256_set_m128i(_mm_srli_epi16(packed, 4), packed);
            wv[i] = _mm256_and_si256(both, low_mask);
            if FIVE_BIT {
                wv[i] = _mm256_or_si256(wv[i], fifth_bits(w.high_bits[wi]));
            }
            d[i] = w.scales[wi];
            mn[i] = w.mins[wi];
        }
        for t in 0..T {
            let xi = (r0 + t) * nb + b;
            let a = load_32(block::<BLOCK, i8>(&q.values, xi));
            let (xs, xsum) = (q.scales[xi], q.scaled_sums[xi]);
            for i in 0..R {
                let dot = _mm256_cvtepi32_ps(dot(wv[i], a));
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

/// Weight rows `j..j + R` of an 8-bit matrix (one scale per block, or two with `SUB16`) against
/// activation rows `r0..r0 + T`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn byte_tile<const R: usize, const T: usize, const SUB16: bool>(
    nb: usize,
    w: ByteBlocks<'_>,
    q: &QuantizedRows,
    j: usize,
    r0: usize,
) -> [[f32; T]; R] {
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    for b in 0..nb {
        let mut wv = [_mm256_setzero_si256(); R];
        let mut w_abs = [_mm256_setzero_si256(); R];
        let mut d = [_mm256_setzero_ps(); R];
        for i in 0..R {
            let wi = (j + i) * nb + b;
            wv[i] = load_32(block::<BLOCK, i8>(w.values, wi));
            // The dot needs unsigned weights: move their signs onto the activations.
            w_abs[i] = _mm256_sign_epi8(wv[i], wv[i]);
            d[i] = if SUB16 {
                // Lanes 0..4 hold values 0..16, lanes 4..8 values 16..32.
                _mm256_setr_m128(
                    _mm_set1_ps(w.scales[2 * wi]),
                    _mm_set1_ps(w.scales[2 * wi + 1]),
                )
            } else {
                _mm256_set1_ps(w.scales[wi])
            };
        }
        for t in 0..T {
            let xi = (r0 + t) * nb + b;
            let a = load_32(block::<BLOCK, i8>(&q.values, xi));
            let xs = _mm256_set1_ps(q.scales[xi]);
            for i in 0..R {
                let dot = dot(w_abs[i], _mm256_sign_epi8(a, wv[i]));
                acc[i][t] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(d[i], xs), acc[i][t]);
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

/// Output features `range` of a 4-bit (or 5-bit) matrix for `m` activation rows, feature-major
/// into `out_t`.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn nibble_rows<const FIVE_BIT: bool>(
    w: NibbleBlocks<'_>,
    nb: usize,
    range: Range<usize>,
    q: &QuantizedRows,
    m: usize,
    out_t: &mut [f32],
) {
    // 16 ymm registers hold at most 2 x 4 accumulators.
    drive(range, m, 4, 4, out_t, |rows, j, r0, t| {
        dispatch_tile!(nibble_tile::<FIVE_BIT>, rows, t, (nb, w, q, j, r0))
    });
}

/// Output features `range` of an 8-bit matrix for `m` activation rows, feature-major into
/// `out_t`.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn byte_rows<const SUB16: bool>(
    w: ByteBlocks<'_>,
    nb: usize,
    range: Range<usize>,
    q: &QuantizedRows,
    m: usize,
    out_t: &mut [f32],
) {
    drive(range, m, BYTE_ROWS, 4, out_t, |rows, j, r0, t| {
        dispatch_tile!(byte_tile::<SUB16>, rows, t, (nb, w, q, j, r0))
    });
}
