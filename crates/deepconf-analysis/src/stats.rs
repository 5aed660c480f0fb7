//! Statistics: exact (Clopper-Pearson) and score (Wilson) intervals of proportions, Newcombe's score
//! interval of a difference of two independent proportions, seeded bootstrap intervals for
//! statistics without a closed form (AUROC, paired differences), AUROC,
//! Mann-Whitney U, Welch's t, Cohen's d, Holm's adjustment of p-values and descriptive summaries.
//! Every function is exact for the data given and documented with its conventions, so that tests
//! can pin it to reference values.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal, StudentsT};

use deepconf_core::policy::percentile;

/// A small deterministic random generator (SplitMix64), enough for bootstrap resampling and fully
/// reproducible from its seed on every platform.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform index in `0..n` (`n > 0`), by Lemire's multiply-shift (bias below 2^-32 for the
    /// sample sizes of a benchmark).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// How an interval was computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntervalMethod {
    /// Percentile bootstrap over instances (analyses written before proportions had their own
    /// intervals read back as this).
    #[default]
    PercentileBootstrap,
    /// Exact binomial interval (Clopper-Pearson).
    ClopperPearson,
    /// Wilson score interval.
    Wilson,
    /// Newcombe's hybrid score interval of a difference of two independent proportions (his
    /// method 10, built from the two Wilson intervals).
    Newcombe,
}

impl IntervalMethod {
    /// Display name, e.g. `Clopper-Pearson`.
    pub fn name(self) -> &'static str {
        match self {
            IntervalMethod::PercentileBootstrap => "percentile bootstrap",
            IntervalMethod::ClopperPearson => "Clopper-Pearson (exact)",
            IntervalMethod::Wilson => "Wilson score",
            IntervalMethod::Newcombe => "Newcombe score",
        }
    }
}

/// The interval of a proportion (a refusal rate, sensitivity, specificity, ...): a percentile
/// bootstrap cannot move when there are no events (0 of 24 gives `[0, 0]`), these can.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProportionInterval {
    /// Exact binomial (Clopper-Pearson): never below the nominal coverage, a little wide.
    #[default]
    ClopperPearson,
    /// Wilson score interval: close to nominal coverage on average, narrower.
    Wilson,
}

impl ProportionInterval {
    /// The interval of `events` of `n` at `level` (`None` when `n = 0`).
    pub fn interval(self, events: u64, n: u64, level: f64) -> Option<(f64, f64)> {
        match self {
            ProportionInterval::ClopperPearson => clopper_pearson(events, n, level),
            ProportionInterval::Wilson => wilson(events, n, level),
        }
    }

    /// The method recorded in an [`Estimate`].
    pub fn method(self) -> IntervalMethod {
        match self {
            ProportionInterval::ClopperPearson => IntervalMethod::ClopperPearson,
            ProportionInterval::Wilson => IntervalMethod::Wilson,
        }
    }

    /// Display name.
    pub fn name(self) -> &'static str {
        self.method().name()
    }

    /// `events / n` with this interval; undefined when `n = 0`.
    pub fn estimate(self, events: u64, n: u64, level: f64) -> Estimate {
        let Some((low, high)) = self.interval(events, n, level) else {
            return Estimate::point(None);
        };
        Estimate {
            value: Some(events as f64 / n as f64),
            low: Some(low),
            high: Some(high),
            resamples: 0,
            method: self.method(),
        }
    }
}

fn standard_normal_quantile(p: f64) -> Option<f64> {
    Some(Normal::new(0.0, 1.0).ok()?.inverse_cdf(p))
}

/// Wilson score interval of `events / n` at `level` (two-sided), as statsmodels'
/// `proportion_confint(method="wilson")`; `None` when `n = 0` or `events > n`.
pub fn wilson(events: u64, n: u64, level: f64) -> Option<(f64, f64)> {
    if n == 0 || events > n || !(level > 0.0 && level < 1.0) {
        return None;
    }
    let z = standard_normal_quantile(1.0 - (1.0 - level) / 2.0)?;
    let (k, n) = (events as f64, n as f64);
    let p = k / n;
    let z2 = z * z;
    let center = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(((center - half).max(0.0), (center + half).min(1.0)))
}

/// Newcombe's hybrid score interval (method 10 of Newcombe 1998) of the difference
/// `events1 / n1 - events2 / n2` of two independent proportions at `level`, as statsmodels'
/// `confint_proportions_2indep(events1, n1, events2, n2, method="newcomb", compare="diff")`.
/// Built from the two Wilson intervals `(l1, u1)` and `(l2, u2)`:
/// `d - sqrt((p1 - l1)² + (u2 - p2)²)` to `d + sqrt((p2 - l2)² + (u1 - p1)²)`. Unlike a
/// percentile bootstrap it still has width when neither group has an event (0 of 18 against 0 of
/// 4 is not `[0, 0]`). `None` when either `n` is 0 or has more events than units.
pub fn newcombe_difference(
    events1: u64,
    n1: u64,
    events2: u64,
    n2: u64,
    level: f64,
) -> Option<(f64, f64)> {
    let (l1, u1) = wilson(events1, n1, level)?;
    let (l2, u2) = wilson(events2, n2, level)?;
    let (p1, p2) = (events1 as f64 / n1 as f64, events2 as f64 / n2 as f64);
    let difference = p1 - p2;
    let low = difference - ((p1 - l1).powi(2) + (u2 - p2).powi(2)).sqrt();
    let high = difference + ((p2 - l2).powi(2) + (u1 - p1).powi(2)).sqrt();
    // The ends lie in [-1, 1] mathematically; the clamp only absorbs rounding.
    Some((low.max(-1.0), high.min(1.0)))
}

/// `events1 / n1 - events2 / n2` of two independent groups with Newcombe's score interval
/// ([`newcombe_difference`]); undefined when either group is empty.
pub fn newcombe_estimate(events1: u64, n1: u64, events2: u64, n2: u64, level: f64) -> Estimate {
    let Some((low, high)) = newcombe_difference(events1, n1, events2, n2, level) else {
        return Estimate::point(None);
    };
    Estimate {
        value: Some(events1 as f64 / n1 as f64 - events2 as f64 / n2 as f64),
        low: Some(low),
        high: Some(high),
        resamples: 0,
        method: IntervalMethod::Newcombe,
    }
}

/// The `q` quantile of Beta(`a`, `b`) by bisection of the regularized incomplete beta function
/// (monotone in `x`), to full double precision.
fn beta_quantile(a: f64, b: f64, q: f64) -> Option<f64> {
    let (mut low, mut high) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (low + high);
        let cdf = statrs::function::beta::checked_beta_reg(a, b, mid).ok()?;
        if cdf < q {
            low = mid;
        } else {
            high = mid;
        }
        if high - low <= f64::EPSILON * mid.max(f64::MIN_POSITIVE) {
            break;
        }
    }
    Some(0.5 * (low + high))
}

/// Exact (Clopper-Pearson) interval of `events / n` at `level` (two-sided, equal tails), as
/// statsmodels' `proportion_confint(method="beta")`: the lower end is 0 when there are no events
/// and the upper end 1 when every unit is an event. `None` when `n = 0` or `events > n`.
pub fn clopper_pearson(events: u64, n: u64, level: f64) -> Option<(f64, f64)> {
    if n == 0 || events > n || !(level > 0.0 && level < 1.0) {
        return None;
    }
    let tail = (1.0 - level) / 2.0;
    let (k, n) = (events as f64, n as f64);
    let low = if events == 0 {
        0.0
    } else {
        beta_quantile(k, n - k + 1.0, tail)?
    };
    let high = if k == n {
        1.0
    } else {
        beta_quantile(k + 1.0, n - k, 1.0 - tail)?
    };
    Some((low, high))
}

/// Holm's step-down adjustment of a family of p-values (as statsmodels'
/// `multipletests(method="holm")`): sorted ascending, the `i`th (0-based) of `m` becomes
/// `max_{j <= i} min(1, (m - j) p_(j))`. Returned in the input's order; NaN stays NaN and is not
/// counted in `m`.
pub fn holm(p_values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p_values.len())
        .filter(|&i| !p_values[i].is_nan())
        .collect();
    order.sort_by(|&i, &j| p_values[i].total_cmp(&p_values[j]));
    let m = order.len() as f64;
    let mut adjusted = vec![f64::NAN; p_values.len()];
    let mut running = 0.0f64;
    for (rank, &i) in order.iter().enumerate() {
        running = running.max(((m - rank as f64) * p_values[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

/// A point estimate with its interval and how the interval was computed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The statistic on the full sample (`None` when undefined, e.g. no positives).
    pub value: Option<f64>,
    /// Lower end of the interval.
    pub low: Option<f64>,
    /// Upper end of the interval.
    pub high: Option<f64>,
    /// Resamples on which the statistic was defined (the interval uses only those; 0 for an
    /// interval with a closed form).
    pub resamples: usize,
    /// How the interval was computed.
    #[serde(default)]
    pub method: IntervalMethod,
}

impl Default for Estimate {
    /// Undefined: no value, no interval.
    fn default() -> Self {
        Self::point(None)
    }
}

impl Estimate {
    /// A value without an interval.
    pub fn point(value: Option<f64>) -> Self {
        Self {
            value,
            low: None,
            high: None,
            resamples: 0,
            method: IntervalMethod::PercentileBootstrap,
        }
    }

    /// `75.0% [58.3%, 91.7%]`: a rate in percent with its interval, or `n/a`.
    pub fn display_percent(&self) -> String {
        match (self.value, self.low, self.high) {
            (Some(_), Some(low), Some(high)) => format!(
                "{} [{}, {}]",
                format_percent(self.value),
                format_percent(Some(low)),
                format_percent(Some(high))
            ),
            _ => format_percent(self.value),
        }
    }

    /// `+2.1 points [-4.2, +8.3]`: a difference of rates in percentage points, or `n/a`.
    pub fn display_points(&self) -> String {
        let points = |v: f64| format!("{:+.1}", v * 100.0);
        match (self.value, self.low, self.high) {
            (Some(v), Some(l), Some(h)) => {
                format!("{} points [{}, {}]", points(v), points(l), points(h))
            }
            (Some(v), ..) => format!("{} points", points(v)),
            _ => "n/a".into(),
        }
    }

    /// `0.812 [0.790, 0.835]`, or `n/a`.
    pub fn display(&self, digits: usize) -> String {
        match (self.value, self.low, self.high) {
            (Some(v), Some(l), Some(h)) => format!("{v:.digits$} [{l:.digits$}, {h:.digits$}]"),
            (Some(v), ..) => format!("{v:.digits$}"),
            _ => "n/a".into(),
        }
    }
}

/// Bootstrap settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BootstrapConfig {
    /// Resamples (2,000 by default).
    pub resamples: usize,
    /// Seed of the resampling generator.
    pub seed: u64,
    /// Interval level in `(0, 1)` (0.95).
    pub level: f64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            resamples: 2000,
            seed: 0x5EED,
            level: 0.95,
        }
    }
}

/// Percentile bootstrap over `n` units: `statistic` receives the indices of a resample (with
/// repetition) and may return `None` when undefined on it. The interval is the
/// `(1-level)/2` and `(1+level)/2` percentiles (linear interpolation) of the defined resample values.
pub fn bootstrap<F>(n: usize, config: &BootstrapConfig, mut statistic: F) -> Estimate
where
    F: FnMut(&[usize]) -> Option<f64>,
{
    let all: Vec<usize> = (0..n).collect();
    let value = statistic(&all);
    if n == 0 || config.resamples == 0 {
        return Estimate::point(value);
    }
    let mut rng = SplitMix64::new(config.seed);
    let mut indices = vec![0; n];
    let mut values = Vec::with_capacity(config.resamples);
    for _ in 0..config.resamples {
        for slot in indices.iter_mut() {
            *slot = rng.below(n);
        }
        if let Some(v) = statistic(&indices).filter(|v| v.is_finite()) {
            values.push(v);
        }
    }
    let tail = (1.0 - config.level) / 2.0 * 100.0;
    Estimate {
        value,
        low: percentile(&values, tail),
        high: percentile(&values, 100.0 - tail),
        resamples: values.len(),
        method: IntervalMethod::PercentileBootstrap,
    }
}

/// Bootstrap of a two-sample statistic: `a` and `b` are resampled independently (each with its own
/// size) and `statistic` sees the resampled values.
pub fn bootstrap_two_sample<F>(
    a: &[f64],
    b: &[f64],
    config: &BootstrapConfig,
    statistic: F,
) -> Estimate
where
    F: Fn(&[f64], &[f64]) -> Option<f64>,
{
    let value = statistic(a, b);
    if a.is_empty() || b.is_empty() || config.resamples == 0 {
        return Estimate::point(value);
    }
    let mut rng = SplitMix64::new(config.seed);
    let mut ra = vec![0.0; a.len()];
    let mut rb = vec![0.0; b.len()];
    let mut values = Vec::with_capacity(config.resamples);
    for _ in 0..config.resamples {
        for slot in ra.iter_mut() {
            *slot = a[rng.below(a.len())];
        }
        for slot in rb.iter_mut() {
            *slot = b[rng.below(b.len())];
        }
        if let Some(v) = statistic(&ra, &rb).filter(|v| v.is_finite()) {
            values.push(v);
        }
    }
    let tail = (1.0 - config.level) / 2.0 * 100.0;
    Estimate {
        value,
        low: percentile(&values, tail),
        high: percentile(&values, 100.0 - tail),
        resamples: values.len(),
        method: IntervalMethod::PercentileBootstrap,
    }
}

/// Arithmetic mean; `None` when empty.
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Sample variance (denominator `n - 1`); `None` with fewer than 2 values.
pub fn sample_variance(values: &[f64]) -> Option<f64> {
    if values.len() < 2 {
        return None;
    }
    let m = mean(values)?;
    Some(values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (values.len() - 1) as f64)
}

/// Difference of means `mean(a) - mean(b)`.
pub fn mean_difference(a: &[f64], b: &[f64]) -> Option<f64> {
    Some(mean(a)? - mean(b)?)
}

/// Descriptive summary of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Describe {
    /// Sample size.
    pub n: usize,
    /// Mean.
    pub mean: Option<f64>,
    /// Sample standard deviation.
    pub sd: Option<f64>,
    /// Minimum.
    pub min: Option<f64>,
    /// 25th percentile.
    pub q25: Option<f64>,
    /// Median.
    pub median: Option<f64>,
    /// 75th percentile.
    pub q75: Option<f64>,
    /// Maximum.
    pub max: Option<f64>,
}

/// Descriptive summary (percentiles by linear interpolation).
pub fn describe(values: &[f64]) -> Describe {
    Describe {
        n: values.len(),
        mean: mean(values),
        sd: sample_variance(values).map(f64::sqrt),
        min: percentile(values, 0.0),
        q25: percentile(values, 25.0),
        median: percentile(values, 50.0),
        q75: percentile(values, 75.0),
        max: percentile(values, 100.0),
    }
}

/// Average ranks (1-based) of `values`, ties sharing the mean of their ranks, plus the tie-correction
/// sum `Σ (t³ - t)` over tie groups.
fn average_ranks(values: &[f64]) -> (Vec<f64>, f64) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut ranks = vec![0.0; values.len()];
    let mut ties = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        let average = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = average;
        }
        let t = (end - start) as f64;
        ties += t * t * t - t;
        start = end;
    }
    (ranks, ties)
}

/// Result of a Mann-Whitney U test of `a` against `b`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MannWhitney {
    /// `U_a`: pairs with `a > b`, plus half the ties.
    pub u: f64,
    /// Size of `a`.
    pub n_a: usize,
    /// Size of `b`.
    pub n_b: usize,
    /// Standardised statistic (normal approximation with tie and continuity correction).
    pub z: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// Mann-Whitney U with the normal approximation, tie correction of the variance and a continuity
/// correction of 0.5 (as SciPy's `mannwhitneyu(method="asymptotic")`). `None` when a sample is
/// empty. When every value is tied the variance is zero: `z = 0`, `p = 1`.
pub fn mann_whitney_u(a: &[f64], b: &[f64]) -> Option<MannWhitney> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let (n_a, n_b) = (a.len() as f64, b.len() as f64);
    let pooled: Vec<f64> = a.iter().chain(b).copied().collect();
    let (ranks, ties) = average_ranks(&pooled);
    let rank_sum_a: f64 = ranks[..a.len()].iter().sum();
    let u = rank_sum_a - n_a * (n_a + 1.0) / 2.0;
    let n = n_a + n_b;
    let mean_u = n_a * n_b / 2.0;
    let variance = n_a * n_b / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    let (z, p_value) = if variance > 0.0 {
        let deviation = (u - mean_u).abs() - 0.5;
        let z = deviation.max(0.0) / variance.sqrt() * (u - mean_u).signum();
        let normal = Normal::new(0.0, 1.0).ok()?;
        (z, (2.0 * normal.sf(z.abs())).min(1.0))
    } else {
        (0.0, 1.0)
    };
    Some(MannWhitney {
        u,
        n_a: a.len(),
        n_b: b.len(),
        z,
        p_value,
    })
}

/// Area under the ROC curve of `score` for telling `positives` from `negatives`:
/// `P(score_pos > score_neg) + 0.5 P(tie)`, i.e. `U / (n_pos n_neg)`. `None` when a class is empty.
pub fn auroc(positives: &[f64], negatives: &[f64]) -> Option<f64> {
    let test = mann_whitney_u(positives, negatives)?;
    Some(test.u / (positives.len() as f64 * negatives.len() as f64))
}

/// Result of Welch's unequal-variance t test of `a` against `b`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WelchT {
    /// `t = (mean_a - mean_b) / sqrt(s_a²/n_a + s_b²/n_b)`.
    pub t: f64,
    /// Welch-Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value from Student's t with `df` degrees of freedom.
    pub p_value: f64,
    /// Mean of `a`.
    pub mean_a: f64,
    /// Mean of `b`.
    pub mean_b: f64,
}

/// Welch's t test; `None` when a sample has fewer than 2 values or both variances are zero.
pub fn welch_t(a: &[f64], b: &[f64]) -> Option<WelchT> {
    let (va, vb) = (sample_variance(a)?, sample_variance(b)?);
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (sa, sb) = (va / na, vb / nb);
    let se2 = sa + sb;
    if se2 <= 0.0 {
        return None;
    }
    let (mean_a, mean_b) = (mean(a)?, mean(b)?);
    let t = (mean_a - mean_b) / se2.sqrt();
    let df = se2 * se2 / (sa * sa / (na - 1.0) + sb * sb / (nb - 1.0));
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    Some(WelchT {
        t,
        df,
        p_value: (2.0 * dist.sf(t.abs())).min(1.0),
        mean_a,
        mean_b,
    })
}

/// Cohen's d with the pooled standard deviation
/// `sqrt(((n_a-1)s_a² + (n_b-1)s_b²) / (n_a+n_b-2))`; `None` with fewer than 2 values in a sample or
/// a zero pooled SD.
pub fn cohens_d(a: &[f64], b: &[f64]) -> Option<f64> {
    let (va, vb) = (sample_variance(a)?, sample_variance(b)?);
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let pooled = (((na - 1.0) * va + (nb - 1.0) * vb) / (na + nb - 2.0)).sqrt();
    let difference = mean(a)? - mean(b)?;
    (pooled > 0.0).then(|| difference / pooled)
}

/// Cohen's conventional label of `|d|`: negligible (< 0.2), small, medium (>= 0.5), large (>= 0.8).
pub fn effect_size_label(d: f64) -> &'static str {
    match d.abs() {
        x if x < 0.2 => "negligible",
        x if x < 0.5 => "small",
        x if x < 0.8 => "medium",
        _ => "large",
    }
}

/// A fraction as a percent with one decimal (`0.75` -> `75.0%`); `n/a` when undefined.
pub fn format_percent(value: Option<f64>) -> String {
    value.map_or("n/a".into(), |v| format!("{:.1}%", v * 100.0))
}

/// A p-value for reports: `p < 0.001` or three decimals (`NaN` shows as `n/a`).
pub fn format_p(p: f64) -> String {
    if p.is_nan() {
        "n/a".into()
    } else if p < 0.001 {
        "< 0.001".into()
    } else {
        format!("{p:.3}")
    }
}
