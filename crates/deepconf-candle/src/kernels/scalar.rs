//! Portable kernels: what CPUs without AVX2 run, and the reference the SIMD paths are tested
//! against (integer dots are exact, so the paths differ only in f32 summation order).

use std::ops::Range;

use super::{BLOCK, ByteBlocks, NibbleBlocks, QuantizedRows};

/// Output features `range` of a 4-bit (`FIVE_BIT = false`) or 5-bit matrix for `m` activation
/// rows, feature-major into `out_t`.
pub(super) fn nibble_rows<const FIVE_BIT: bool>(
    w: NibbleBlocks<'_>,
    nb: usize,
    range: Range<usize>,
    q: &QuantizedRows,
    m: usize,
    out_t: &mut [f32],
) {
    for (local, j) in range.enumerate() {
        for r in 0..m {
            let mut sum = 0f32;
            for b in 0..nb {
                let wi = j * nb + b;
                let xi = r * nb + b;
                let packed = &w.nibbles[wi * 16..wi * 16 + 16];
                let high = if FIVE_BIT { w.high_bits[wi] } else { 0 };
                let a = &q.values[xi * BLOCK..(xi + 1) * BLOCK];
                let mut dot = 0i32;
                for t in 0..16 {
                    let low = i32::from(packed[t] & 15) | (((high >> t) & 1) << 4) as i32;
                    let top = i32::from(packed[t] >> 4) | (((high >> (t + 16)) & 1) << 4) as i32;
                    dot += low * i32::from(a[t]) + top * i32::from(a[t + 16]);
                }
                sum += w.scales[wi] * q.scales[xi] * dot as f32 + w.mins[wi] * q.scaled_sums[xi];
            }
            out_t[local * m + r] = sum;
        }
    }
}

/// Output features `range` of an 8-bit matrix (one scale per block, or one per 16 values with
/// `SUB16`) for `m` activation rows, feature-major into `out_t`.
pub(super) fn byte_rows<const SUB16: bool>(
    w: ByteBlocks<'_>,
    nb: usize,
    range: Range<usize>,
    q: &QuantizedRows,
    m: usize,
    out_t: &mut [f32],
) {
    let dot = |w: &[i8], a: &[i8]| -> i32 {
        w.iter()
            .zip(a)
            .map(|(&x, &y)| i32::from(x) * i32::from(y))
            .sum()
    };
    for (local, j) in range.enumerate() {
        for r in 0..m {
            let mut sum = 0f32;
            for b in 0..nb {
                let wi = j * nb + b;
                let xi = r * nb + b;
                let wv = &w.values[wi * BLOCK..(wi + 1) * BLOCK];
                let a = &q.values[xi * BLOCK..(xi + 1) * BLOCK];
                sum += if SUB16 {
                    let first = w.scales[2 * wi] * dot(&wv[..16], &a[..16]) as f32;
                    let second = w.scales[2 * wi + 1] * dot(&wv[16..], &a[16..]) as f32;
                    q.scales[xi] * (first + second)
                } else {
                    w.scales[wi] * q.scales[xi] * dot(wv, a) as f32
                };
            }
            out_t[local * m + r] = sum;
        }
    }
}
