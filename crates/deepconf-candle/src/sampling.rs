//! Turning one row of logits into a sampled token plus the model's top-k log-probabilities.
//!
//! The reported log-probabilities are those of the model's own distribution: a log-softmax of the
//! raw logits, taken **before** temperature, top-k and top-p (as vLLM and llama.cpp report them), so
//! DeepConf confidences do not depend on the sampling settings. The token is then drawn from the
//! temperature-scaled distribution restricted by top-k and top-p, with a per-trace seeded generator.

use deepconf_core::SamplingParams;

/// A small deterministic generator (SplitMix64): its stream is fixed forever, so equal seeds give
/// equal traces across versions and platforms.
#[derive(Debug, Clone)]
pub(crate) struct TraceRng(u64);

impl TraceRng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The outcome of one sampling step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SampledToken {
    pub token: u32,
    /// Log-probability of `token` under the raw (pre-temperature) distribution.
    pub logprob: f32,
    /// The `k` most likely tokens under the raw distribution, most likely first.
    pub top_ids: Vec<u32>,
    pub top_logprobs: Vec<f32>,
}

/// `exp(x)` for `x <= 0` (softmax terms), within 3e-7 relative of `f32::exp` for `x >= -87` and
/// flushed to 0 below. Branch-free so that loops over a vocabulary vectorize: the library `exp`
/// is a call per element, and two passes of it over the 49,152-token vocabulary per trace and
/// step were a tenth of 16-trace decode time.
#[inline]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.max(-87.0);
    // x = n ln2 + r with |r| <= ln2 / 2; exp(r) by its Taylor series to r^7 (error < r^8/8! ~ 5e-9).
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // 2^n from the exponent bits; n is in [-126, 0] after the clamp.
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

/// Sum of `exp_nonpositive((l - max) * scale)` over `logits`, accumulated in f64 lanes.
fn sum_exp(logits: &[f32], max: f32, scale: f32) -> f64 {
    let mut lanes = [0f64; 8];
    let chunks = logits.chunks_exact(8);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &l) in lanes.iter_mut().zip(chunk) {
            *lane += f64::from(exp_nonpositive((l - max) * scale));
        }
    }
    let tail: f64 = rest
        .iter()
        .map(|&l| f64::from(exp_nonpositive((l - max) * scale)))
        .sum();
    lanes.iter().sum::<f64>() + tail
}

/// Log of the softmax normalizer of `logits` (f32 terms, each at most 1, summed in f64).
fn log_sum_exp(logits: &[f32]) -> (f32, f64) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (max, sum_exp(logits, max, 1.0).ln())
}

/// Indices of the `k` largest values, largest first (ties: lower index first).
pub(crate) fn top_k_indices(values: &[f32], k: usize) -> Vec<u32> {
    let k = k.min(values.len());
    let mut top: Vec<u32> = Vec::with_capacity(k + 1);
    let better = |a: u32, b: u32| {
        let (va, vb) = (values[a as usize], values[b as usize]);
        va > vb || (va == vb && a < b)
    };
    for i in 0..values.len() as u32 {
        if top.len() == k {
            if k == 0 || !better(i, top[k - 1]) {
                continue;
            }
            top.pop();
        }
        let pos = top.partition_point(|&t| better(t, i));
        top.insert(pos, i);
    }
    top
}

/// Samples one token from `logits` under `params`.
pub(crate) fn sample(logits: &[f32], params: &SamplingParams, rng: &mut TraceRng) -> SampledToken {
    let (max, log_norm) = log_sum_exp(logits);
    let logprob_of = |id: u32| (f64::from(logits[id as usize] - max) - log_norm) as f32;
    let top_ids = top_k_indices(logits, params.top_logprobs);
    let top_logprobs: Vec<f32> = top_ids.iter().map(|&i| logprob_of(i)).collect();

    let token = if params.temperature == 0.0 {
        top_ids
            .first()
            .copied()
            .unwrap_or_else(|| top_k_indices(logits, 1)[0])
    } else {
        sample_tempered(logits, params, rng)
    };
    SampledToken {
        token,
        logprob: logprob_of(token),
        top_ids,
        top_logprobs,
    }
}

/// Draws from softmax(logits / T) restricted to the top-k tokens and the top-p nucleus.
fn sample_tempered(logits: &[f32], params: &SamplingParams, rng: &mut TraceRng) -> u32 {
    let inv_t = 1.0 / f64::from(params.temperature);
    // Candidate set: the top-k tokens, or (for top-p alone) a prefix of the sorted vocabulary large
    // enough to hold the nucleus, so the full vocabulary is rarely sorted.
    let mut limit = if params.top_k > 0 {
        params.top_k
    } else if params.top_p < 1.0 {
        256
    } else {
        logits.len()
    };
    loop {
        let candidates = if limit >= logits.len() {
            let mut all: Vec<u32> = (0..logits.len() as u32).collect();
            all.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
            all
        } else {
            top_k_indices(logits, limit)
        };
        let max = f64::from(logits[candidates[0] as usize]);
        // Normalize over the whole vocabulary so that the top-p mass is measured correctly (f32
        // terms, f64 sum, as in `log_sum_exp`).
        let total = sum_exp(logits, max as f32, inv_t as f32);
        let weights: Vec<f64> = candidates
            .iter()
            .map(|&i| ((f64::from(logits[i as usize]) - max) * inv_t).exp() / total)
            .collect();
        let mut kept = weights.len();
        if params.top_p < 1.0 {
            let mut mass = 0.0;
            let mut reached = false;
            for (n, w) in weights.iter().enumerate() {
                mass += w;
                if mass >= f64::from(params.top_p) {
                    kept = n + 1;
                    reached = true;
                    break;
                }
            }
            if !reached && limit < logits.len() && params.top_k == 0 {
                limit = (limit * 8).min(logits.len());
                continue;
            }
        }
        let kept_mass: f64 = weights[..kept].iter().sum();
        let mut u = rng.next_f64() * kept_mass;
        for (n, w) in weights[..kept].iter().enumerate() {
            if u < *w {
                return candidates[n];
            }
            u -= w;
        }
        return candidates[kept - 1];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_the_library_exp() {
        let mut worst = 0f32;
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let want = x.exp();
            let got = exp_nonpositive(x);
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), exp_nonpositive(-87.0));
        assert!(exp_nonpositive(-1000.0) < 1e-37);
    }

    #[test]
    fn top_k_is_sorted_and_breaks_ties_by_index() {
        let v = [0.5, 2.0, 2.0, -1.0, 3.0];
        assert_eq!(top_k_indices(&v, 3), vec![4, 1, 2]);
        assert_eq!(top_k_indices(&v, 10).len(), 5);
    }

    #[test]
    fn greedy_picks_argmax_and_reports_raw_logprobs() {
        let logits = [1.0f32, 3.0, 2.0];
        let params = SamplingParams::greedy().with_top_logprobs(2);
        let s = sample(&logits, &params, &mut TraceRng::new(1));
        assert_eq!(s.token, 1);
        assert_eq!(s.top_ids, vec![1, 2]);
        let norm = (1f64.exp() + 3f64.exp() + 2f64.exp()).ln();
        assert!((f64::from(s.logprob) - (3.0 - norm)).abs() < 1e-5);
    }

    #[test]
    fn top_k_one_is_greedy_and_temperature_does_not_change_logprobs() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 100) as f32 / 10.0).collect();
        let hot = SamplingParams::default()
            .with_temperature(5.0)
            .with_top_k(1);
        let cold = SamplingParams::greedy();
        let a = sample(&logits, &hot, &mut TraceRng::new(3));
        let b = sample(&logits, &cold, &mut TraceRng::new(3));
        assert_eq!(a, b);
    }

    #[test]
    fn equal_seeds_give_equal_draws_and_top_p_restricts_support() {
        let logits: Vec<f32> = (0..50).map(|i| -(i as f32) * 0.3).collect();
        let params = SamplingParams::default()
            .with_temperature(1.0)
            .with_top_p(0.5);
        let draw = |seed| {
            let mut rng = TraceRng::new(seed);
            (0..200)
                .map(|_| sample(&logits, &params, &mut rng).token)
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(9), draw(9));
        let tokens = draw(9);
        // softmax mass of tokens 0..=1 is ~0.48, 0..=2 is ~0.61: the nucleus is {0, 1, 2}.
        assert!(tokens.iter().all(|&t| t <= 2), "{tokens:?}");
        assert!(tokens.contains(&2) && tokens.contains(&0));
    }
}
