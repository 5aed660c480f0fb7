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

/// Asymmetric 4- or 5-bit quantization of 32-blocks (`levels` = 16 or 32).
fn min_max_blocks(data: &[f32], levels: u32) -> (Vec<f32>, Vec<f32>, Vec<u32>) {
    let (mut scales, mut mins, mut codes) = (vec![], vec![], vec![]);
    for block in data.chunks_exact(BLOCK) {
        let lo = block.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (hi - lo) / (levels - 1) as f32;
        scales.push(d);
        mins.push(lo);
        codes.extend(
            block
                .iter()
                .map(|&v| ((v - lo) / d).round().clamp(0.0, (levels - 1) as f32) as u32),
        );
    }
    (scales, mins, codes)
}

fn q4_1_from_f32(data: &[f32], rows: usize, cols: usize, activations: Activations) -> WeightMatrix {
    let (scales, mins, codes) = min_max_blocks(data, 16);
    let nibbles = codes
        .chunks_exact(BLOCK)
        .flat_map(|c| (0..16).map(move |t| (c[t] | (c[t + 16] << 4)) as u8))
        .collect();
    WeightMatrix::Q4_1 {
        rows,
        cols,
        activations,
        scales,
        mins,
        nibbles,
    }
}

fn q5_1_from_f32(data: &[f32], rows: usize, cols: usize, activations: Activations) -> WeightMatrix {
    let (scales, mins, codes) = min_max_blocks(data, 32);
    let nibbles = codes
        .chunks_exact(BLOCK)
        .flat_map(|c| (0..16).map(move |t| ((c[t] & 15) | ((c[t + 16] & 15) << 4)) as u8))
        .collect();
    let high_bits = codes
        .chunks_exact(BLOCK)
        .map(|c| (0..32).fold(0u32, |bits, i| bits | ((c[i] >> 4) << i)))
        .collect();
    WeightMatrix::Q5_1 {
        rows,
        cols,
        activations,
        scales,
        mins,
        nibbles,
        high_bits,
    }
}

/// Symmetric 6-bit values (as Q6_K holds them) with a scale per 16 values.
fn q8_16_from_f32(
    data: &[f32],
    rows: usize,
    cols: usize,
    activations: Activations,
) -> WeightMatrix {
    let (mut scales, mut values) = (vec![], vec![]);
    for group in data.chunks_exact(16) {
        let amax = group.iter().fold(0f32, |a, &v| a.max(v.abs()));
        let d = amax / 31.0;
        scales.push(d);
        values.extend(
            group
                .iter()
                .map(|&v| (v / d).round().clamp(-32.0, 31.0) as i8),
        );
    }
    WeightMatrix::Q8_16 {
        rows,
        cols,
        activations,
        scales,
        values,
    }
}

#[test]
fn quantized_matmuls_match_dequantized_reference() {
    // 37 rows and 1..9 activation rows exercise every tile shape and remainder; 3 and 19
    // blocks per row an odd last block after the 512-bit block pairs, short and long rows;
    // 512 columns the 256-value activation groups of the K-quants.
    for k in [96, 608, 512] {
        check_every_isa(37, k);
    }
}

/// The activation schemes that `k` columns allow.
fn schemes(k: usize) -> Vec<Activations> {
    Activations::ALL
        .into_iter()
        .filter(|s| k.is_multiple_of(s.group()))
        .collect()
}

fn layouts(dense: &[f32], n: usize, k: usize) -> Vec<WeightMatrix> {
    let mut all = Vec::new();
    for scheme in schemes(k) {
        all.extend(layouts_with(dense, n, k, scheme));
    }
    all
}

fn layouts_with(dense: &[f32], n: usize, k: usize, scheme: Activations) -> Vec<WeightMatrix> {
    let f32_matrix = |data: &[f32], rows| WeightMatrix::F32 {
        rows,
        cols: k,
        data: data.to_vec(),
    };
    // A fused projection whose parts use different layouts, with part boundaries that do not
    // line up with the kernels' tiles or tasks.
    let (a, rest) = dense.split_at(5 * k);
    let (b, rest) = rest.split_at(11 * k);
    let (c, rest) = rest.split_at(9 * k);
    let (d, e) = rest.split_at(7 * k);
    // Parts with their own activation schemes: the matmul quantizes for each.
    let stacked = WeightMatrix::stack_rows(vec![
        q5_1_from_f32(a, 5, k, scheme),
        q4_1_from_f32(b, 11, k, Activations::Q8_1),
        q8_16_from_f32(c, 9, k, scheme),
        WeightMatrix::q8_0_from_f32(d, 7, k),
        f32_matrix(e, n - 32),
    ]);
    assert!(matches!(stacked, WeightMatrix::Stacked { .. }));
    vec![
        q4_1_from_f32(dense, n, k, scheme),
        q5_1_from_f32(dense, n, k, scheme),
        WeightMatrix::q8_0_from_f32(dense, n, k),
        q8_16_from_f32(dense, n, k, scheme),
        f32_matrix(dense, n),
        stacked,
    ]
}

fn check_every_isa(n: usize, k: usize) {
    let dense = pseudo_random(n * k, 1);
    for m in [1, 2, 3, 5, 6, 9] {
        let x = pseudo_random(m * k, 2 + m as u32);
        for w in layouts(&dense, n, k) {
            let want = reference(&w, &x, m);
            let mut scalar = vec![0f32; m * n];
            w.matmul_with(
                Isa::SCALAR,
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
                        (got - want).abs() < 0.06 * (k as f32 / 96.0).sqrt() + 0.01 * want.abs(),
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

#[test]
fn layouts_store_what_they_were_given() {
    let (n, k) = (37, 64);
    let dense = pseudo_random(n * k, 9);
    for w in layouts(&dense, n, k) {
        let mut row = vec![0f32; k];
        for j in 0..n {
            w.dequantize_row(j, &mut row);
            for (got, want) in row.iter().zip(&dense[j * k..(j + 1) * k]) {
                // 4-bit blocks: half a step of (max - min) / 15 over values in [-1, 1].
                assert!(
                    (got - want).abs() <= 2.0 / 15.0 / 2.0 + 1e-5,
                    "{got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn stacking_one_layout_concatenates() {
    let k = 64;
    let a = pseudo_random(3 * k, 4);
    let b = pseudo_random(2 * k, 5);
    let q5 = |data: &[f32], rows| q5_1_from_f32(data, rows, k, Activations::Q8_1);
    let stacked = WeightMatrix::stack_rows(vec![q5(&a, 3), q5(&b, 2)]);
    assert!(matches!(stacked, WeightMatrix::Q5_1 { rows: 5, .. }));
    let mut both = a.clone();
    both.extend(&b);
    let direct = q5(&both, 5);
    assert_eq!(stacked.size_in_bytes(), direct.size_in_bytes());
    let (mut x, mut y) = (vec![0f32; k], vec![0f32; k]);
    for j in 0..5 {
        stacked.dequantize_row(j, &mut x);
        direct.dequantize_row(j, &mut y);
        assert_eq!(x, y);
    }
}

#[test]
fn stacking_mixed_layouts_keeps_each_and_joins_neighbours() {
    let k = 64;
    let data = pseudo_random(6 * k, 6);
    let stacked = WeightMatrix::stack_rows(vec![
        q5_1_from_f32(&data[..2 * k], 2, k, Activations::Q8_0),
        q5_1_from_f32(&data[2 * k..3 * k], 1, k, Activations::Q8_0),
        WeightMatrix::q8_0_from_f32(&data[3 * k..], 3, k),
    ]);
    let WeightMatrix::Stacked { rows, parts, .. } = &stacked else {
        panic!("mixed layouts stack as parts");
    };
    assert_eq!(*rows, 6);
    assert!(matches!(
        parts[..],
        [
            WeightMatrix::Q5_1 { rows: 3, .. },
            WeightMatrix::Q8_0 { rows: 3, .. }
        ]
    ));
}

#[test]
fn activations_are_quantized_as_ggml_does() {
    // Q8_0: f16 scale, ties to even (2.5 -> 2, -3.5 -> -4 at scale 1).
    let mut x = vec![0f32; 32];
    x[0] = 127.0;
    x[1] = 2.5;
    x[2] = -3.5;
    x[3] = 0.1;
    let mut q = QuantizedRows::default();
    q.quantize_from(&x, 1, 32, Activations::Q8_0);
    assert_eq!(&q.values[..4], &[127, 2, -4, 0]);
    assert_eq!(q.scales[0], 1.0);
    assert_eq!(q.scaled_sums[0], 125.0);
    // The scale is stored as f16: 0.1 / 127 is not an f32 round trip.
    let mut x = vec![0f32; 32];
    x[0] = 0.1;
    x[1] = -0.03;
    q.quantize_from(&x, 1, 32, Activations::Q8_0);
    assert_eq!(q.scales[0], half::f16::from_f32(0.1 / 127.0).to_f32());
    // Q8_1 also rounds d * sum(q) to f16.
    q.quantize_from(&x, 1, 32, Activations::Q8_1);
    let sum: i32 = q.values.iter().map(|&v| i32::from(v)).sum();
    assert_eq!(
        q.scaled_sums[0],
        half::f16::from_f32(0.1 / 127.0 * sum as f32).to_f32()
    );
    // Q8_K: one f32 scale per 256 values, negative when the largest magnitude is positive.
    let y: Vec<f32> = (0..256).map(|i| (i as f32 - 100.0) / 155.0).collect();
    q.quantize_from(&y, 1, 256, Activations::Q8K);
    assert!(q.scales.iter().all(|&s| s == q.scales[0]));
    assert_eq!(q.scales[0], 1.0 / (-127.0 / y[255]));
    assert_eq!(q.values[255], -127);
    assert_eq!(q.values[100], 0);
}
