//! The 512-bit kernels for CPUs with AVX-512 VNNI: two 32-value blocks per `vpdpbusd`, so each
//! instruction does twice the work of the 256-bit kernels. The minimum term of the 4/5-bit
//! layouts, `sum_b min_b * d_x * sum(q_x)`, is spread over the lanes of each block and added by
//! the final lane sum.

use std::arch::x86_64::*;
use std::ops::Range;

use super::super::{BLOCK, ByteBlocks, NibbleBlocks, QuantizedRows};
use super::{MAX_TILE_TRACES, chunk, copy_tile, drive};

/// Bytes of two blocks of packed nibbles, and of two blocks of 8-bit values.
const PAIR_NIBBLES: usize = 32;
const PAIR_VALUES: usize = 2 * BLOCK;

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma")]
fn pair(x: f32, y: f32) -> __m512 {
    _mm512_insertf32x8(_mm512_set1_ps(x), _mm256_set1_ps(y), 1)
}

/// Four scales, each over four lanes: the per-16-value scales of two 8-bit blocks, in the lane
/// order of `vpdpbusd` (lane `k` sums bytes `4k..4k + 4`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma")]
fn quad(s: &[f32; 4]) -> __m512 {
    let four = _mm512_castps128_ps512(_mm_setr_ps(s[0], s[1], s[2], s[3]));
    _mm512_permutexvar_ps(
        _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
        four,
    )
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

/// Weight rows `j..j + R` of a 4-bit (or, with `FIVE_BIT`, 5-bit) matrix against activation
/// rows `r0..r0 + T`. The fifth bits of a block pair form a 64-bit mask that selects the bytes
/// to which 16 is added (`vmovdqu8` with zero masking).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma")]
fn nibble_tile<const R: usize, const T: usize, const FIVE_BIT: bool>(
    nb: usize,
    w: NibbleBlocks<'_>,
    q: &QuantizedRows,
    j: usize,
    r0: usize,
) -> [[f32; T]; R] {
    let sixteen = _mm512_set1_epi8(16);
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    let mut b = 0;
    while b + 2 <= nb {
        let mut wv = [_mm512_setzero_si512(); R];
        let mut d = [_mm512_setzero_ps(); R];
        let mut mn = [_mm512_setzero_ps(); R];
        for i in 0..R {
            let wi = (j + i) * nb + b;
            wv[i] = load_pair_nibbles(chunk::<PAIR_NIBBLES, u8>(w.nibbles, wi * 16));
            if FIVE_BIT {
                let bits = u64::from(w.high_bits[wi]) | (u64::from(w.high_bits[wi + 1]) << 32);
                wv[i] = _mm512_or_si512(wv[i], _mm512_maskz_mov_epi8(bits, sixteen));
            }
            d[i] = pair(w.scales[wi], w.scales[wi + 1]);
            mn[i] = pair(w.mins[wi], w.mins[wi + 1]);
        }
        for t in 0..T {
            let xi = (r0 + t) * nb + b;
            let a = load_pair_values(chunk::<PAIR_VALUES, i8>(&q.values, xi * BLOCK));
            let xs = pair(q.scales[xi], q.scales[xi + 1]);
            // The minimum term `min * d_x * sum(q_x)` of each block spread over the 8 lanes of
            // its half (x 1/8, exact in binary), so the final lane sum adds it.
            let sums = _mm512_mul_ps(
                pair(q.scaled_sums[xi], q.scaled_sums[xi + 1]),
                _mm512_set1_ps(0.125),
            );
            for i in 0..R {
                let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv[i], a);
                acc[i][t] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(d[i], xs), acc[i][t]);
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
            let mut wv = load_block_nibbles(chunk::<16, u8>(w.nibbles, wi * 16));
            if FIVE_BIT {
                let fifth = _mm256_maskz_mov_epi8(w.high_bits[wi], _mm256_set1_epi8(16));
                wv = _mm256_or_si256(wv, fifth);
            }
            for t in 0..T {
                let xi = (r0 + t) * nb + b;
                let a = load_block_values(chunk::<BLOCK, i8>(&q.values, xi * BLOCK));
                let dot = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), wv, a));
                let mut lanes = [0f32; 8];
                // SAFETY: stores exactly the 8 floats of the array.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), dot) };
                out[i][t] += w.scales[wi] * q.scales[xi] * lanes.iter().sum::<f32>()
                    + w.mins[wi] * q.scaled_sums[xi];
            }
        }
    }
    out
}

/// Output features `range` of a 4-bit (or 5-bit) matrix for `m` activation rows, feature-major
/// into `out_t`.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma")]
pub(crate) fn nibble_rows<const FIVE_BIT: bool>(
    w: NibbleBlocks<'_>,
    nb: usize,
    range: Range<usize>,
    q: &QuantizedRows,
    m: usize,
    out_t: &mut [f32],
) {
    drive(range, m, 4, MAX_TILE_TRACES, out_t, |rows, j, r0, t| {
        dispatch_tile!(nibble_tile::<FIVE_BIT>, rows, t, (nb, w, q, j, r0))
    });
}

/// Weight rows `j..j + R` of an 8-bit matrix (one scale per block, or two with `SUB16`) against
/// activation rows `r0..r0 + T`. `vpdpbusd` multiplies unsigned by signed bytes: the activations
/// are offset by 128 to make them unsigned, and `128 * sum(w)` (one more `vpdpbusd` per weight
/// pair, shared by the `T` rows) is subtracted again, lane by lane, before the scales apply.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma")]
fn byte_tile<const R: usize, const T: usize, const SUB16: bool>(
    nb: usize,
    w: ByteBlocks<'_>,
    q: &QuantizedRows,
    j: usize,
    r0: usize,
) -> [[f32; T]; R] {
    let offset = _mm512_set1_epi8(-128);
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    let mut b = 0;
    while b + 2 <= nb {
        let mut wv = [_mm512_setzero_si512(); R];
        let mut w_sum = [_mm512_setzero_si512(); R];
        let mut d = [_mm512_setzero_ps(); R];
        for i in 0..R {
            let wi = (j + i) * nb + b;
            wv[i] = load_pair_values(chunk::<PAIR_VALUES, i8>(w.values, wi * BLOCK));
            w_sum[i] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), offset, wv[i]);
            d[i] = if SUB16 {
                quad(chunk::<4, f32>(w.scales, 2 * wi))
            } else {
                pair(w.scales[wi], w.scales[wi + 1])
            };
        }
        for t in 0..T {
            let xi = (r0 + t) * nb + b;
            let a = load_pair_values(chunk::<PAIR_VALUES, i8>(&q.values, xi * BLOCK));
            // Flipping the sign bit adds 128 to a signed byte read as unsigned.
            let a_unsigned = _mm512_xor_si512(a, offset);
            let xs = pair(q.scales[xi], q.scales[xi + 1]);
            for i in 0..R {
                let dot = _mm512_sub_epi32(
                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), a_unsigned, wv[i]),
                    w_sum[i],
                );
                acc[i][t] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(d[i], xs), acc[i][t]);
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
        let dot = |w: &[i8], a: &[i8]| -> f32 {
            w.iter()
                .zip(a)
                .map(|(&x, &y)| i32::from(x) * i32::from(y))
                .sum::<i32>() as f32
        };
        for i in 0..R {
            let wi = (j + i) * nb + b;
            let wv = chunk::<BLOCK, i8>(w.values, wi * BLOCK);
            for t in 0..T {
                let xi = (r0 + t) * nb + b;
                let a = chunk::<BLOCK, i8>(&q.values, xi * BLOCK);
                out[i][t] += q.scales[xi]
                    * if SUB16 {
                        w.scales[2 * wi] * dot(&wv[..16], &a[..16])
                            + w.scales[2 * wi + 1] * dot(&wv[16..], &a[16..])
                    } else {
                        w.scales[wi] * dot(wv, a)
                    };
            }
        }
    }
    out
}

/// Output features `range` of an 8-bit matrix for `m` activation rows, feature-major into
/// `out_t`.
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx2,fma")]
pub(crate) fn byte_rows<const SUB16: bool>(
    w: ByteBlocks<'_>,
    nb: usize,
    range: Range<usize>,
    q: &QuantizedRows,
    m: usize,
    out_t: &mut [f32],
) {
    // Batch 1 streams one weight row at a time: interleaving rows measured slower here.
    drive(range, m, 1, MAX_TILE_TRACES, out_t, |rows, j, r0, t| {
        dispatch_tile!(byte_tile::<SUB16>, rows, t, (nb, w, q, j, r0))
    });
}
