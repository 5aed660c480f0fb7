//! Confidence metrics of DeepConf ("Deep Think with Confidence", Fu, Wang, Tian, Zhao 2025,
//! arXiv 2508.15260), computed from the top-k log-probabilities a model reports at each token.
//!
//! Higher always means more confident. A peaked next-token distribution has one candidate near
//! `log p = 0` and the rest far below, so the mean negative log-probability of the top-k candidates is
//! large; a flat distribution gives values near `log k`.
//!
//! # Quick start
//! ```
//! use deepconf_confidence::{token_confidence, ConfidenceConfig, StreamingConfidence, summarize};
//!
//! // Top-3 log-probabilities at four generated tokens, most likely first.
//! let steps: [[f32; 3]; 4] = [
//!     [-0.01, -5.0, -6.0],
//!     [-0.20, -2.0, -3.0],
//!     [-1.10, -1.2, -1.3],
//!     [-0.05, -4.0, -7.0],
//! ];
//! let config = ConfidenceConfig::new().with_top_k(3).with_window(2).with_tail(2);
//! let per_token: Vec<f64> = steps.iter().map(|s| token_confidence(s, 3)).collect();
//!
//! let mut stream = StreamingConfidence::new(config.clone())?;
//! for s in &steps {
//!     stream.push_top_logprobs(s);
//! }
//! let batch = summarize(&per_token, &config)?.expect("non-empty trace");
//! assert_eq!(stream.summary(), Some(batch)); // streaming equals batch, bit for bit
//! assert!(batch.lowest_group <= batch.mean);
//! # Ok::<(), deepconf_confidence::Error>(())
//! ```
//!
//! # Which item do I want?
//! | need | item |
//! |---|---|
//! | confidence of one token | [`token_confidence`], [`token_entropy`] |
//! | metrics of a finished trace | [`summarize`] or the single functions ([`lowest_group_confidence`], ...) |
//! | metrics while generating (online early stopping) | [`StreamingConfidence`] |
//! | the parameters | [`ConfidenceConfig`] ([`ConfidenceConfig::deepconf`] for the paper's values) |
//!
//! # Conventions
//! - Token confidence averages over the first `min(k, len)` values given (the official code averages
//!   whatever list the engine returned). An empty list gives `0.0`, the least confident value.
//! - A trace shorter than the window has exactly one group: its whole-trace mean.
//! - Windows slide with stride 1; a trace of `n >= w` tokens has `n - w + 1` groups.
//! - Bottom-p averages the lowest `max(1, floor(groups * p / 100))` groups.
//! - All sums are prefix sums, as in the official NumPy code (`np.cumsum`), which is what lets the
//!   streaming accumulator return bit-identical values.
//! - The free functions return `Err` for a window or tail of 0 and a percent outside `(0, 100]`,
//!   and `Ok(None)` for an empty trace. Log-probabilities are not checked on the hot path: run
//!   [`validate_top_logprobs`] on values you did not produce (`deepconf-core`'s runner does it for
//!   every token a backend reports).
#![deny(missing_docs)]

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Top-k candidates per token used by DeepConf.
pub const DEEPCONF_TOP_K: usize = 20;
/// Group (sliding window) size used by DeepConf on long reasoning traces.
pub const DEEPCONF_WINDOW: usize = 2048;
/// Percent of lowest groups averaged by "bottom-10% group confidence".
pub const DEEPCONF_BOTTOM_PERCENT: f64 = 10.0;
/// Tail length used by DeepConf's tail confidence.
pub const DEEPCONF_TAIL: usize = 2048;
/// Default window for safety evaluation.
///
/// Refusals are decided in the first sentence ("I can't help with that"), and answers of small
/// instruction models to benchmark prompts are typically 50–300 tokens, far shorter than 2048: with the
/// paper's window every such trace would have one group (its mean) and online termination could never
/// fire. 32 tokens spans about one sentence, so a full window exists early enough for termination to
/// save tokens, while averaging enough tokens that a single surprising token does not cut a trace.
pub const SAFETY_WINDOW: usize = 32;
/// Default tail length for safety evaluation (see [`SAFETY_WINDOW`]).
pub const SAFETY_TAIL: usize = 32;

/// Errors of this crate.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A parameter is out of its valid range.
    #[error("invalid parameter `{name}` = {value}: {reason}")]
    InvalidParameter {
        /// Parameter name.
        name: &'static str,
        /// The offending value, as text.
        value: String,
        /// What a valid value looks like.
        reason: &'static str,
    },
    /// A log-probability is not a finite number `<= 0`.
    #[error("invalid log-probability {value} at candidate {candidate}: must be finite and <= 0")]
    InvalidLogprob {
        /// Position in the top-k list.
        candidate: usize,
        /// The value found.
        value: f32,
    },
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Confidence of one token: `-(1/k) * Σ_{j<k} log P(j)` over the first `min(k, len)` of
/// `top_logprobs` (most likely first). Empty input gives `0.0`.
#[inline]
pub fn token_confidence(top_logprobs: &[f32], k: usize) -> f64 {
    let used = &top_logprobs[..top_logprobs.len().min(k)];
    if used.is_empty() {
        return 0.0;
    }
    let sum: f64 = used.iter().map(|&lp| f64::from(lp)).sum();
    -sum / used.len() as f64
}

/// Entropy `-Σ p log p` (nats) over the first `min(k, len)` candidates, **not** renormalised: the
/// probability mass outside the top-k is ignored, as servers report only the top-k.
#[inline]
pub fn token_entropy(top_logprobs: &[f32], k: usize) -> f64 {
    top_logprobs
        .iter()
        .take(k)
        .map(|&lp| {
            let lp = f64::from(lp);
            let p = lp.exp();
            if p > 0.0 { -p * lp } else { 0.0 }
        })
        .sum()
}

/// How far above 0 a log-probability may be and still count as valid: engines that compute
/// `log(softmax)` in floating point report a probability-1 token as `+1e-7` or so. A value above
/// this is not rounding but a broken backend.
pub const LOGPROB_TOLERANCE: f32 = 1e-4;

/// True when `value` is a finite log-probability, `<= 0` within [`LOGPROB_TOLERANCE`].
#[inline]
pub fn is_valid_logprob(value: f32) -> bool {
    value.is_finite() && value <= LOGPROB_TOLERANCE
}

/// Checks that every value is finite and `<= 0` within [`LOGPROB_TOLERANCE`]. `-inf` is refused
/// too: one such candidate makes the token's confidence infinite, and with it every group, mean and
/// threshold it enters.
pub fn validate_top_logprobs(top_logprobs: &[f32]) -> Result<()> {
    for (candidate, &value) in top_logprobs.iter().enumerate() {
        if !is_valid_logprob(value) {
            return Err(Error::InvalidLogprob { candidate, value });
        }
    }
    Ok(())
}

/// `Err` naming `name` unless `value >= 1`.
fn at_least_one(name: &'static str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::InvalidParameter {
            name,
            value: value.to_string(),
            reason: "must be at least 1",
        });
    }
    Ok(())
}

/// `Err` naming `name` unless `value` is in `(0, 100]`.
fn percent_in_range(name: &'static str, value: f64) -> Result<()> {
    if !(value > 0.0 && value <= 100.0) {
        return Err(Error::InvalidParameter {
            name,
            value: value.to_string(),
            reason: "must be in (0, 100]",
        });
    }
    Ok(())
}

/// Parameters of the trace-level metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConfidenceConfig {
    /// Candidates per token averaged by [`token_confidence`].
    pub top_k: usize,
    /// Sliding-window (group) size in tokens.
    pub window: usize,
    /// Tokens averaged by tail confidence.
    pub tail: usize,
    /// Percent of lowest groups averaged by bottom-p confidence, in `(0, 100]`.
    pub bottom_percent: f64,
}

impl Default for ConfidenceConfig {
    /// The safety defaults: k = 20, window = 32 ([`SAFETY_WINDOW`]), tail = 32
    /// ([`SAFETY_TAIL`]), bottom p = 10%.
    fn default() -> Self {
        Self {
            top_k: DEEPCONF_TOP_K,
            window: SAFETY_WINDOW,
            tail: SAFETY_TAIL,
            bottom_percent: DEEPCONF_BOTTOM_PERCENT,
        }
    }
}

impl ConfidenceConfig {
    /// The safety defaults (same as [`Default`]).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The paper's values for long reasoning traces: k = 20, window = 2048, tail = 2048, p = 10%.
    #[must_use]
    pub fn deepconf() -> Self {
        Self {
            top_k: DEEPCONF_TOP_K,
            window: DEEPCONF_WINDOW,
            tail: DEEPCONF_TAIL,
            bottom_percent: DEEPCONF_BOTTOM_PERCENT,
        }
    }

    /// Sets the number of top-k candidates.
    #[must_use]
    pub fn with_top_k(mut self, top_k: usize) -> Self {
        self.top_k = top_k;
        self
    }

    /// Sets the window size.
    #[must_use]
    pub fn with_window(mut self, window: usize) -> Self {
        self.window = window;
        self
    }

    /// Sets the tail length.
    #[must_use]
    pub fn with_tail(mut self, tail: usize) -> Self {
        self.tail = tail;
        self
    }

    /// Sets the bottom percent.
    #[must_use]
    pub fn with_bottom_percent(mut self, percent: f64) -> Self {
        self.bottom_percent = percent;
        self
    }

    /// Checks every parameter, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        at_least_one("top_k", self.top_k)?;
        at_least_one("window", self.window)?;
        at_least_one("tail", self.tail)?;
        percent_in_range("bottom_percent", self.bottom_percent)
    }
}

/// The trace-level metrics of one trace.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ConfidenceSummary {
    /// Generated tokens.
    pub n_tokens: usize,
    /// Mean token confidence over the trace.
    pub mean: f64,
    /// Minimum group confidence (the whole-trace mean for a trace shorter than the window).
    pub lowest_group: f64,
    /// Mean of the lowest `bottom_percent`% group confidences.
    pub bottom_group: f64,
    /// Mean confidence of the last `tail` tokens.
    pub tail: f64,
}

fn prefix_sums(confidences: &[f64]) -> Vec<f64> {
    let mut prefix = Vec::with_capacity(confidences.len() + 1);
    let mut running = 0.0;
    prefix.push(running);
    for &c in confidences {
        running += c;
        prefix.push(running);
    }
    prefix
}

/// Mean token confidence; `None` for an empty trace.
pub fn mean_confidence(confidences: &[f64]) -> Option<f64> {
    let n = confidences.len();
    (n > 0).then(|| prefix_sums(confidences)[n] / n as f64)
}

/// Group confidences: the mean over every window of `window` consecutive tokens, stride 1. A trace
/// shorter than the window has one group, its mean; an empty trace has none. `Err` for window 0.
pub fn group_confidences(confidences: &[f64], window: usize) -> Result<Vec<f64>> {
    at_least_one("window", window)?;
    Ok(groups_of(confidences, window))
}

/// [`group_confidences`] for a window already checked to be at least 1.
fn groups_of(confidences: &[f64], window: usize) -> Vec<f64> {
    let n = confidences.len();
    if n == 0 {
        return Vec::new();
    }
    let prefix = prefix_sums(confidences);
    if n < window {
        return vec![prefix[n] / n as f64];
    }
    (window..=n)
        .map(|end| (prefix[end] - prefix[end - window]) / window as f64)
        .collect()
}

/// Lowest group confidence; `Ok(None)` for an empty trace, `Err` for window 0.
pub fn lowest_group_confidence(confidences: &[f64], window: usize) -> Result<Option<f64>> {
    Ok(group_confidences(confidences, window)?
        .into_iter()
        .reduce(f64::min))
}

/// Number of groups averaged by bottom-p: `max(1, floor(groups * percent / 100))`. `Err` for a
/// percent outside `(0, 100]`.
pub fn bottom_group_count(groups: usize, percent: f64) -> Result<usize> {
    percent_in_range("percent", percent)?;
    Ok(bottom_count(groups, percent))
}

/// [`bottom_group_count`] for a percent already checked.
fn bottom_count(groups: usize, percent: f64) -> usize {
    ((groups as f64 * percent / 100.0).floor() as usize).clamp(1, groups.max(1))
}

/// Mean of the `count` smallest values, summed in ascending order.
fn mean_of_lowest(values: &[f64], count: usize) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let lowest = &sorted[..count.min(sorted.len())];
    lowest.iter().sum::<f64>() / lowest.len() as f64
}

/// Bottom-p group confidence: the mean of the lowest `max(1, floor(groups * percent / 100))`
/// groups; `Ok(None)` for an empty trace, `Err` for window 0 or a percent outside `(0, 100]`.
pub fn bottom_percent_group_confidence(
    confidences: &[f64],
    window: usize,
    percent: f64,
) -> Result<Option<f64>> {
    percent_in_range("percent", percent)?;
    let groups = group_confidences(confidences, window)?;
    Ok((!groups.is_empty()).then(|| mean_of_lowest(&groups, bottom_count(groups.len(), percent))))
}

/// Tail confidence: the mean of the last `min(tail, n)` tokens; `Ok(None)` for an empty trace,
/// `Err` for tail 0.
pub fn tail_confidence(confidences: &[f64], tail: usize) -> Result<Option<f64>> {
    at_least_one("tail", tail)?;
    let n = confidences.len();
    if n == 0 {
        return Ok(None);
    }
    let prefix = prefix_sums(confidences);
    let used = tail.min(n);
    Ok(Some((prefix[n] - prefix[n - used]) / used as f64))
}

/// Every trace-level metric at once; `Ok(None)` for an empty trace, `Err` naming the first invalid
/// parameter of `config`.
pub fn summarize(
    confidences: &[f64],
    config: &ConfidenceConfig,
) -> Result<Option<ConfidenceSummary>> {
    config.validate()?;
    let (Some(mean), Some(lowest_group), Some(bottom_group), Some(tail)) = (
        mean_confidence(confidences),
        lowest_group_confidence(confidences, config.window)?,
        bottom_percent_group_confidence(confidences, config.window, config.bottom_percent)?,
        tail_confidence(confidences, config.tail)?,
    ) else {
        return Ok(None);
    };
    Ok(Some(ConfidenceSummary {
        n_tokens: confidences.len(),
        mean,
        lowest_group,
        bottom_group,
        tail,
    }))
}

/// Streaming accumulator of every trace-level metric.
///
/// [`push`](Self::push) is O(1) (amortised: the full-window group values are kept for bottom-p,
/// which is an order statistic and is computed when asked, in O(groups log groups)). Every value
/// equals the batch function's value on the same tokens bit for bit, because both use the same
/// prefix-sum arithmetic.
#[derive(Debug, Clone)]
pub struct StreamingConfidence {
    config: ConfidenceConfig,
    /// The last `max(window, tail) + 1` prefix sums, oldest first.
    recent_prefix: VecDeque<f64>,
    /// `max(window, tail) + 1`: enough history for both differences.
    prefix_capacity: usize,
    total: f64,
    n_tokens: usize,
    groups: Vec<f64>,
    lowest_full_group: f64,
}

impl StreamingConfidence {
    /// A new accumulator; fails on an invalid configuration.
    pub fn new(config: ConfidenceConfig) -> Result<Self> {
        config.validate()?;
        let capacity = config.window.max(config.tail) + 1;
        let mut recent_prefix = VecDeque::with_capacity(capacity);
        recent_prefix.push_back(0.0);
        Ok(Self {
            config,
            recent_prefix,
            prefix_capacity: capacity,
            total: 0.0,
            n_tokens: 0,
            groups: Vec::new(),
            lowest_full_group: f64::INFINITY,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ConfidenceConfig {
        &self.config
    }

    /// Adds one token's top-k log-probabilities; returns the newest full-window group confidence.
    pub fn push_top_logprobs(&mut self, top_logprobs: &[f32]) -> Option<f64> {
        self.push(token_confidence(top_logprobs, self.config.top_k))
    }

    /// Adds one token confidence; returns the newest full-window group confidence, or `None` while
    /// fewer than `window` tokens have been seen.
    pub fn push(&mut self, confidence: f64) -> Option<f64> {
        self.total += confidence;
        self.n_tokens += 1;
        if self.recent_prefix.len() == self.prefix_capacity {
            self.recent_prefix.pop_front();
        }
        self.recent_prefix.push_back(self.total);
        let group = self.current_group();
        if let Some(group) = group {
            self.groups.push(group);
            self.lowest_full_group = self.lowest_full_group.min(group);
        }
        group
    }

    /// Prefix sum `back` tokens before the newest one (`back <= min(n, capacity - 1)`).
    fn prefix_back(&self, back: usize) -> f64 {
        self.recent_prefix[self.recent_prefix.len() - 1 - back]
    }

    /// The newest full-window group confidence, `None` while fewer than `window` tokens exist.
    pub fn current_group(&self) -> Option<f64> {
        let w = self.config.window;
        (self.n_tokens >= w).then(|| (self.total - self.prefix_back(w)) / w as f64)
    }

    /// Tokens seen.
    pub fn len(&self) -> usize {
        self.n_tokens
    }

    /// True before the first token.
    pub fn is_empty(&self) -> bool {
        self.n_tokens == 0
    }

    /// Mean token confidence so far.
    pub fn mean(&self) -> Option<f64> {
        (self.n_tokens > 0).then(|| self.total / self.n_tokens as f64)
    }

    /// Lowest group confidence so far (the mean while the trace is shorter than the window).
    pub fn lowest_group(&self) -> Option<f64> {
        if self.groups.is_empty() {
            self.mean()
        } else {
            Some(self.lowest_full_group)
        }
    }

    /// Bottom-p group confidence so far.
    pub fn bottom_group(&self) -> Option<f64> {
        if self.groups.is_empty() {
            return self.mean();
        }
        let count = bottom_count(self.groups.len(), self.config.bottom_percent);
        Some(mean_of_lowest(&self.groups, count))
    }

    /// Tail confidence so far.
    pub fn tail(&self) -> Option<f64> {
        if self.n_tokens == 0 {
            return None;
        }
        let used = self.config.tail.min(self.n_tokens);
        Some((self.total - self.prefix_back(used)) / used as f64)
    }

    /// Every metric so far; `None` before the first token.
    pub fn summary(&self) -> Option<ConfidenceSummary> {
        Some(ConfidenceSummary {
            n_tokens: self.n_tokens,
            mean: self.mean()?,
            lowest_group: self.lowest_group()?,
            bottom_group: self.bottom_group()?,
            tail: self.tail()?,
        })
    }

    /// Forgets every token, keeping the configuration.
    pub fn reset(&mut self) {
        self.recent_prefix.clear();
        self.recent_prefix.push_back(0.0);
        self.total = 0.0;
        self.n_tokens = 0;
        self.groups.clear();
        self.lowest_full_group = f64::INFINITY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6 // inputs are f32
    }

    #[test]
    fn token_confidence_is_negative_mean_of_top_k() {
        // -( -0.1 - 2.3 - 3.0 ) / 3 = 1.8
        assert!(close(token_confidence(&[-0.1, -2.3, -3.0], 3), 1.8));
        // Only the first k are used.
        assert!(close(token_confidence(&[-1.0, -3.0, -100.0], 2), 2.0));
        // Fewer than k: average what is there.
        assert!(close(token_confidence(&[-1.0, -3.0], 20), 2.0));
        assert_eq!(token_confidence(&[], 20), 0.0);
    }

    #[test]
    fn peaked_distribution_is_more_confident_than_flat() {
        let peaked = token_confidence(&[-0.001, -8.0, -9.0, -10.0], 4);
        let flat = token_confidence(&[-1.386, -1.386, -1.386, -1.386], 4);
        assert!(peaked > flat, "{peaked} vs {flat}");
    }

    #[test]
    fn entropy_over_top_k_support() {
        let ln_half = 0.5f32.ln();
        // Two candidates of p = 0.5: H = ln 2.
        assert!((token_entropy(&[ln_half, ln_half], 20) - std::f64::consts::LN_2).abs() < 1e-6);
        // k truncates: one candidate of p = 0.5 gives 0.5 ln 2.
        assert!(
            (token_entropy(&[ln_half, ln_half], 1) - 0.5 * std::f64::consts::LN_2).abs() < 1e-6
        );
        assert_eq!(token_entropy(&[0.0], 20), 0.0);
        assert_eq!(token_entropy(&[f32::NEG_INFINITY], 20), 0.0);
    }

    #[test]
    fn validation_rejects_bad_logprobs_and_params() {
        assert!(validate_top_logprobs(&[-0.5, -80.0, f32::MIN]).is_ok());
        // Rounding of a probability-1 token passes, a real positive value does not.
        assert!(validate_top_logprobs(&[1e-7, -1.0]).is_ok());
        assert_eq!(
            validate_top_logprobs(&[-0.5, 0.3]),
            Err(Error::InvalidLogprob {
                candidate: 1,
                value: 0.3
            })
        );
        assert!(validate_top_logprobs(&[f32::NAN]).is_err());
        assert_eq!(
            validate_top_logprobs(&[-0.5, f32::NEG_INFINITY]),
            Err(Error::InvalidLogprob {
                candidate: 1,
                value: f32::NEG_INFINITY
            })
        );
        let err = ConfidenceConfig::new()
            .with_window(0)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("`window`"), "{err}");
        let err = ConfidenceConfig::new()
            .with_bottom_percent(0.0)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("bottom_percent"), "{err}");
    }

    #[test]
    fn free_functions_refuse_window_zero_and_bad_percents() {
        let c = [1.0, 2.0, 3.0];
        let named = |result: Result<()>, name: &str| {
            let err = result.unwrap_err();
            assert!(err.to_string().contains(&format!("`{name}`")), "{err}");
        };
        named(group_confidences(&c, 0).map(drop), "window");
        named(lowest_group_confidence(&c, 0).map(drop), "window");
        named(
            bottom_percent_group_confidence(&c, 0, 10.0).map(drop),
            "window",
        );
        named(tail_confidence(&c, 0).map(drop), "tail");
        for percent in [0.0, -5.0, 100.5, f64::NAN, f64::INFINITY] {
            named(bottom_group_count(10, percent).map(drop), "percent");
            named(
                bottom_percent_group_confidence(&c, 2, percent).map(drop),
                "percent",
            );
            let config = ConfidenceConfig::new().with_bottom_percent(percent);
            named(summarize(&c, &config).map(drop), "bottom_percent");
        }
        named(
            summarize(&c, &ConfidenceConfig::new().with_window(0)).map(drop),
            "window",
        );
        // The edges of the range are valid.
        assert_eq!(bottom_group_count(10, 100.0), Ok(10));
        assert_eq!(bottom_group_count(10, 1e-9), Ok(1));
        // An empty trace is no error, it has no metrics.
        assert_eq!(lowest_group_confidence(&[], 4), Ok(None));
        assert_eq!(tail_confidence(&[], 4), Ok(None));
    }

    #[test]
    fn hand_computed_window_metrics() {
        let c = [1.0, 2.0, 3.0, 4.0, 10.0];
        // windows of 2: 1.5, 2.5, 3.5, 7.0
        assert_eq!(group_confidences(&c, 2), Ok(vec![1.5, 2.5, 3.5, 7.0]));
        assert_eq!(lowest_group_confidence(&c, 2), Ok(Some(1.5)));
        // 4 groups, 50% -> lowest 2: (1.5 + 2.5) / 2
        assert_eq!(bottom_percent_group_confidence(&c, 2, 50.0), Ok(Some(2.0)));
        // 10% of 4 groups floors to 0 -> at least 1 group.
        assert_eq!(bottom_percent_group_confidence(&c, 2, 10.0), Ok(Some(1.5)));
        assert_eq!(tail_confidence(&c, 2), Ok(Some(7.0)));
        assert_eq!(mean_confidence(&c), Some(4.0));
    }

    #[test]
    fn trace_shorter_than_window_has_one_group_its_mean() {
        let c = [2.0, 4.0, 9.0];
        assert_eq!(group_confidences(&c, 2048), Ok(vec![5.0]));
        assert_eq!(lowest_group_confidence(&c, 2048), Ok(Some(5.0)));
        assert_eq!(
            bottom_percent_group_confidence(&c, 2048, 10.0),
            Ok(Some(5.0))
        );
        // Tail longer than the trace is the trace mean.
        assert_eq!(tail_confidence(&c, 2048), Ok(Some(5.0)));
        let mut s = StreamingConfidence::new(ConfidenceConfig::deepconf()).unwrap();
        for &x in &c {
            assert_eq!(s.push(x), None, "no full window yet");
        }
        assert_eq!(s.lowest_group(), Some(5.0));
        assert_eq!(
            Ok(s.summary()),
            summarize(&c, &ConfidenceConfig::deepconf())
        );
    }

    #[test]
    fn empty_trace_has_no_metrics() {
        assert_eq!(summarize(&[], &ConfidenceConfig::new()), Ok(None));
        let s = StreamingConfidence::new(ConfidenceConfig::new()).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.summary(), None);
    }

    #[test]
    fn streaming_reports_group_once_window_is_full_and_resets() {
        let cfg = ConfidenceConfig::new().with_window(3).with_tail(2);
        let mut s = StreamingConfidence::new(cfg).unwrap();
        assert_eq!(s.push(3.0), None);
        assert_eq!(s.push(3.0), None);
        assert_eq!(s.push(6.0), Some(4.0));
        assert_eq!(s.push(0.0), Some(3.0));
        assert_eq!(s.lowest_group(), Some(3.0));
        assert_eq!(s.tail(), Some(3.0));
        s.reset();
        assert!(s.is_empty());
        assert_eq!(s.push(1.0), None);
        assert_eq!(s.mean(), Some(1.0));
    }
}
