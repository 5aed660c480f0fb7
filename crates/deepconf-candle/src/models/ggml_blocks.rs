//! ggml's quantized block layouts, converted to the kernels' layouts without a second rounding.
//!
//! The byte layouts follow ggml's `ggml-common.h` (block structs) and `ggml-quants.c`
//! (`dequantize_row_*`), <https://github.com/ggml-org/llama.cpp/tree/master/ggml/src>. Every
//! conversion keeps each weight's value exactly as ggml's own dequantization computes it, because
//! the kernels' scales are f32:
//!
//! | ggml type | block | becomes | how |
//! |---|---|---|---|
//! | Q4_0 | 32 values: f16 `d`, 16 nibble bytes | [`WeightMatrix::Q4_1`] | `d * (q - 8)` = `d * q + (-8 d)` |
//! | Q4_1 | 32 values: f16 `d`, f16 `m`, 16 nibble bytes | [`WeightMatrix::Q4_1`] | as stored |
//! | Q5_0 | 32 values: f16 `d`, 32 fifth bits, 16 nibble bytes | [`WeightMatrix::Q5_1`] | `d * (q - 16)` = `d * q + (-16 d)` |
//! | Q5_1 | 32 values: f16 `d`, f16 `m`, 32 fifth bits, 16 nibble bytes | [`WeightMatrix::Q5_1`] | as stored |
//! | Q8_0 | 32 values: f16 `d`, 32 signed bytes | [`WeightMatrix::Q8_0`] | as stored |
//! | Q4_K | 256 values: f16 `d`, f16 `dmin`, 8 six-bit (scale, min) pairs, 128 nibble bytes | [`WeightMatrix::Q4_1`] | sub-block `s` of 32: scale `d * sc_s`, min `-(dmin * m_s)` |
//! | Q5_K | 256 values: as Q4_K plus 256 fifth bits | [`WeightMatrix::Q5_1`] | as Q4_K |
//! | Q6_K | 256 values: 4 low + 2 high bits each, 16 signed 8-bit scales, f16 `d` | [`WeightMatrix::Q8_16`] | value `q - 32` with scale `d * sc` per 16 |
//!
//! Each matrix also records which of ggml's activation blocks its type's dot product uses
//! (Q8_0 for Q4_0/Q5_0/Q8_0, Q8_1 for Q4_1/Q5_1, Q8_K for the K-quants), so the kernels quantize
//! activations as llama.cpp does.
//!
//! K-quant sub-blocks of 32 values are re-packed into the 32-value blocks of the kernels, so a
//! Q4_K matrix runs the Q4_1 kernel (4.5 bits per weight in the file, 6 in memory, because of the
//! f32 scale and minimum of every 32 values), Q5_K the 5-bit kernel (7 bits in memory) and Q6_K
//! the 8-bit kernel with a scale per 16 values (10 bits in memory).

use candle_core::quantized::GgmlDType;
use half::f16;

use crate::kernels::{Activations, BLOCK, WeightMatrix};

/// Values per K-quant super-block (ggml's QK_K).
const SUPER_BLOCK: usize = 256;

/// The ggml types [`from_ggml_blocks`] converts, for error messages.
pub(crate) const SUPPORTED: &str =
    "Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K (and F32, F16, BF16)";

fn f16_at(bytes: &[u8], offset: usize) -> f32 {
    f16::from_le_bytes([bytes[offset], bytes[offset + 1]]).to_f32()
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes([
        bytes[offset],
        bytes[offset + 1],
        bytes[offset + 2],
        bytes[offset + 3],
    ])
}

/// Values and bytes per block of a quantized ggml type (`None` for dense and other types).
fn block_shape(dtype: GgmlDType) -> Option<(usize, usize)> {
    Some(match dtype {
        GgmlDType::Q4_0 => (BLOCK, 18),
        GgmlDType::Q4_1 => (BLOCK, 20),
        GgmlDType::Q5_0 => (BLOCK, 22),
        GgmlDType::Q5_1 => (BLOCK, 24),
        GgmlDType::Q8_0 => (BLOCK, 34),
        GgmlDType::Q4K => (SUPER_BLOCK, 144),
        GgmlDType::Q5K => (SUPER_BLOCK, 176),
        GgmlDType::Q6K => (SUPER_BLOCK, 210),
        _ => return None,
    })
}

/// How the kernels can hold a tensor of a ggml type.
#[derive(Debug)]
pub(crate) enum Native {
    /// Converted block by block.
    Blocks(WeightMatrix),
    /// F32, F16 or BF16: the kernels use f32.
    Dense,
}

/// Converts the raw blocks of a `rows x cols` tensor of type `dtype` (see the module docs).
/// Errors say what is wrong: a type the kernels do not run, or a size that does not match.
pub(crate) fn from_ggml_blocks(
    dtype: GgmlDType,
    bytes: &[u8],
    rows: usize,
    cols: usize,
) -> Result<Native, String> {
    if matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16) {
        return Ok(Native::Dense);
    }
    let Some((values_per_block, bytes_per_block)) = block_shape(dtype) else {
        return Err(format!(
            "type {dtype:?} is not run by the CPU kernels (they run {SUPPORTED}); load with \
             `WeightFormat::Q8_0` or `WeightFormat::F32` to convert it at load"
        ));
    };
    if !cols.is_multiple_of(values_per_block) {
        return Err(format!(
            "{dtype:?} rows of {cols} values are not a whole number of {values_per_block}-value blocks"
        ));
    }
    let blocks = rows * cols / values_per_block;
    if bytes.len() != blocks * bytes_per_block {
        return Err(format!(
            "{dtype:?} data of {} bytes, expected {} for {rows} x {cols}",
            bytes.len(),
            blocks * bytes_per_block
        ));
    }
    let blocks = bytes.chunks_exact(bytes_per_block);
    Ok(Native::Blocks(match dtype {
        // `chunks_exact` yields slices of exactly `bytes_per_block` bytes.
        GgmlDType::Q4_0 => nibbles(
            rows,
            cols,
            false,
            Activations::Q8_0,
            blocks.map(|b| q4_0(b.try_into().unwrap())),
        ),
        GgmlDType::Q4_1 => nibbles(
            rows,
            cols,
            false,
            Activations::Q8_1,
            blocks.map(|b| q4_1(b.try_into().unwrap())),
        ),
        GgmlDType::Q5_0 => nibbles(
            rows,
            cols,
            true,
            Activations::Q8_0,
            blocks.map(|b| q5_0(b.try_into().unwrap())),
        ),
        GgmlDType::Q5_1 => nibbles(
            rows,
            cols,
            true,
            Activations::Q8_1,
            blocks.map(|b| q5_1(b.try_into().unwrap())),
        ),
        GgmlDType::Q4K => nibbles(
            rows,
            cols,
            false,
            Activations::Q8K,
            blocks.flat_map(|b| q4_k(b.try_into().unwrap())),
        ),
        GgmlDType::Q5K => nibbles(
            rows,
            cols,
            true,
            Activations::Q8K,
            blocks.flat_map(|b| q5_k(b.try_into().unwrap())),
        ),
        GgmlDType::Q8_0 => {
            let mut scales = Vec::with_capacity(rows * cols / BLOCK);
            let mut values = Vec::with_capacity(rows * cols);
            for block in blocks {
                scales.push(f16_at(block, 0));
                values.extend(block[2..34].iter().map(|&b| b as i8));
            }
            WeightMatrix::Q8_0 {
                rows,
                cols,
                activations: Activations::Q8_0,
                scales,
                values,
            }
        }
        GgmlDType::Q6K => {
            let mut scales = Vec::with_capacity(rows * cols / 16);
            let mut values = Vec::with_capacity(rows * cols);
            for block in blocks {
                q6_k(block.try_into().unwrap(), &mut scales, &mut values);
            }
            WeightMatrix::Q8_16 {
                rows,
                cols,
                activations: Activations::Q8K,
                scales,
                values,
            }
        }
        _ => unreachable!("block_shape covers these types"),
    }))
}

/// One 32-value block of the 4/5-bit layouts: scale, minimum, nibbles (byte `t` holds values `t`
/// and `t + 16`), fifth bits (bit `i` of value `i`).
struct NibbleBlock {
    scale: f32,
    min: f32,
    nibbles: [u8; 16],
    high_bits: u32,
}

/// Collects 32-value blocks into a Q4_1 matrix, or a Q5_1 one (with the blocks' fifth bits),
/// whose activations are quantized as `activations`.
fn nibbles(
    rows: usize,
    cols: usize,
    five_bit: bool,
    activations: Activations,
    blocks: impl Iterator<Item = NibbleBlock>,
) -> WeightMatrix {
    let n = rows * cols / BLOCK;
    let (mut scales, mut mins) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut packed = Vec::with_capacity(16 * n);
    let mut high_bits = Vec::with_capacity(if five_bit { n } else { 0 });
    for block in blocks {
        scales.push(block.scale);
        mins.push(block.min);
        packed.extend_from_slice(&block.nibbles);
        if five_bit {
            high_bits.push(block.high_bits);
        }
    }
    if five_bit {
        WeightMatrix::Q5_1 {
            rows,
            cols,
            activations,
            scales,
            mins,
            nibbles: packed,
            high_bits,
        }
    } else {
        WeightMatrix::Q4_1 {
            rows,
            cols,
            activations,
            scales,
            mins,
            nibbles: packed,
        }
    }
}

fn q4_0(b: &[u8; 18]) -> NibbleBlock {
    let d = f16_at(b, 0);
    NibbleBlock {
        scale: d,
        min: -8.0 * d,
        nibbles: b[2..18].try_into().unwrap(),
        high_bits: 0,
    }
}

fn q4_1(b: &[u8; 20]) -> NibbleBlock {
    NibbleBlock {
        scale: f16_at(b, 0),
        min: f16_at(b, 2),
        nibbles: b[4..20].try_into().unwrap(),
        high_bits: 0,
    }
}

fn q5_0(b: &[u8; 22]) -> NibbleBlock {
    let d = f16_at(b, 0);
    NibbleBlock {
        scale: d,
        min: -16.0 * d,
        high_bits: u32_at(b, 2),
        nibbles: b[6..22].try_into().unwrap(),
    }
}

fn q5_1(b: &[u8; 24]) -> NibbleBlock {
    NibbleBlock {
        scale: f16_at(b, 0),
        min: f16_at(b, 2),
        high_bits: u32_at(b, 4),
        nibbles: b[8..24].try_into().unwrap(),
    }
}

/// The 6-bit scale and minimum of sub-block `j` (0..8) from a K-quant's 12 packed bytes: the
/// first four pairs are the low 6 bits of bytes 0..4 and 4..8; the last four take their low 4
/// bits from bytes 8..12 and their top 2 bits from the spare top bits of bytes 0..8.
fn scale_min_k4(j: usize, packed: &[u8]) -> (u8, u8) {
    if j < 4 {
        (packed[j] & 63, packed[j + 4] & 63)
    } else {
        (
            (packed[j + 4] & 0xF) | ((packed[j - 4] >> 6) << 4),
            (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4),
        )
    }
}

/// The eight 32-value sub-blocks of a Q4_K or Q5_K super-block. `qs` holds 4 chunks of 32
/// bytes; sub-block `s` is the low (even `s`) or high (odd `s`) nibbles of chunk `s / 2`, and
/// its fifth bits (Q5_K) are bit `s` of the 32 bytes of `qh`.
fn k_sub_blocks(
    d: f32,
    dmin: f32,
    packed_scales: &[u8],
    qs: &[u8],
    qh: Option<&[u8]>,
) -> impl Iterator<Item = NibbleBlock> {
    (0..8).map(move |s| {
        let (sc, m) = scale_min_k4(s, packed_scales);
        let chunk = &qs[32 * (s / 2)..32 * (s / 2) + 32];
        let shift = 4 * (s % 2);
        let value = |l: usize| (chunk[l] >> shift) & 15;
        let mut nibbles = [0u8; 16];
        for (t, byte) in nibbles.iter_mut().enumerate() {
            *byte = value(t) | (value(t + 16) << 4);
        }
        let high_bits = qh.map_or(0, |qh| {
            (0..32).fold(0u32, |bits, l| bits | ((u32::from(qh[l] >> s) & 1) << l))
        });
        NibbleBlock {
            scale: d * f32::from(sc),
            min: -(dmin * f32::from(m)),
            nibbles,
            high_bits,
        }
    })
}

fn q4_k(b: &[u8; 144]) -> impl Iterator<Item = NibbleBlock> + '_ {
    k_sub_blocks(f16_at(b, 0), f16_at(b, 2), &b[4..16], &b[16..144], None)
}

fn q5_k(b: &[u8; 176]) -> impl Iterator<Item = NibbleBlock> + '_ {
    k_sub_blocks(
        f16_at(b, 0),
        f16_at(b, 2),
        &b[4..16],
        &b[48..176],
        Some(&b[16..48]),
    )
}

/// Appends a Q6_K super-block as 256 values `q - 32` and 16 scales `d * sc`. Each half of 128
/// values takes 64 bytes of low nibbles `ql` and 32 bytes of 2-bit pairs `qh`: value `l + 32 k`
/// (`k` in 0..4, `l` in 0..32) is nibble `k / 2` of `ql[l + 32 (k % 2)]` plus bits `2k..2k + 2`
/// of `qh[l]` above it.
fn q6_k(b: &[u8; 210], scales: &mut Vec<f32>, values: &mut Vec<i8>) {
    let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    scales.extend(sc.iter().map(|&s| d * f32::from(s as i8)));
    for half in 0..2 {
        let (ql, qh) = (
            &ql[64 * half..64 * half + 64],
            &qh[32 * half..32 * half + 32],
        );
        for k in 0..4 {
            for l in 0..32 {
                let low = (ql[l + 32 * (k % 2)] >> (4 * (k / 2))) & 15;
                let high = (qh[l] >> (2 * k)) & 3;
                values.push((low | (high << 4)) as i8 - 32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};

    use super::*;

    /// Every type converts to a matrix whose rows equal candle's dequantization of the same
    /// blocks (candle follows ggml's reference dequantization).
    #[test]
    fn conversions_equal_ggml_dequantization() {
        let (rows, cols) = (3, 512);
        let data: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.45) * (1.0 + (i % 5) as f32))
            .collect();
        let dense = Tensor::from_vec(data, (rows, cols), &Device::Cpu).unwrap();
        for dtype in [
            GgmlDType::Q4_0,
            GgmlDType::Q4_1,
            GgmlDType::Q5_0,
            GgmlDType::Q5_1,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
        ] {
            let q = QTensor::quantize(&dense, dtype).unwrap();
            let want = q
                .dequantize(&Device::Cpu)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let Native::Blocks(matrix) = from_ggml_blocks(dtype, &q.data().unwrap(), rows, cols)
                .unwrap_or_else(|e| panic!("{dtype:?}: {e}"))
            else {
                panic!("{dtype:?} is a block type");
            };
            let mut row = vec![0f32; cols];
            for r in 0..rows {
                matrix.dequantize_row(r, &mut row);
                for (c, (got, want)) in row.iter().zip(&want[r * cols..]).enumerate() {
                    assert!(
                        (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                        "{dtype:?} [{r}, {c}]: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn unsupported_types_and_sizes_are_errors() {
        let err = from_ggml_blocks(GgmlDType::Q2K, &[0; 84], 1, 256).unwrap_err();
        assert!(
            err.contains("Q2K") && err.contains("WeightFormat::F32"),
            "{err}"
        );
        let err = from_ggml_blocks(GgmlDType::Q4K, &[0; 100], 1, 256).unwrap_err();
        assert!(err.contains("100 bytes"), "{err}");
        let err = from_ggml_blocks(GgmlDType::Q6K, &[0; 210], 1, 576).unwrap_err();
        assert!(err.contains("576"), "{err}");
        assert!(matches!(
            from_ggml_blocks(GgmlDType::F16, &[], 1, 3),
            Ok(Native::Dense)
        ));
    }
}
