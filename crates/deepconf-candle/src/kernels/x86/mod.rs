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

pub(super) mod avx2;
pub(super) mod avx512;

use std::arch::x86_64::{__m128i, __m256i, _mm_loadu_si128, _mm256_loadu_si256};

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
