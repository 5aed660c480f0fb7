//! Statistics pinned to hand computations and to reference values of scipy, statsmodels and
//! scikit-learn (the Python that produced each is in a comment beside it; `python3 -m pip install
//! scipy statsmodels scikit-learn`).

use deepconf_analysis::stats::{
    BootstrapConfig, IntervalMethod, ProportionInterval, SplitMix64, auroc, bootstrap,
    bootstrap_two_sample, clopper_pearson, cohens_d, describe, holm, mann_whitney_u, mean,
    mean_difference, newcombe_difference, newcombe_estimate, welch_t, wilson,
};
use deepconf_analysis::{ConfusionMatrix, Labelled, Metric, SafetyMetrics};

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn splitmix_matches_reference_sequence() {
    // Reference outputs of SplitMix64 seeded with 0 (Vigna's splitmix64.c).
    let mut rng = SplitMix64::new(0);
    assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
    assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    assert_eq!(rng.next_u64(), 0x06c4_5d18_8009_454f);
    let mut rng = SplitMix64::new(9);
    assert!((0..1000).all(|_| rng.below(7) < 7));
}

#[test]
fn auroc_counts_ties_as_half() {
    // Pairs (pos, neg): (1,2)=0 (1,0)=1 (2,2)=0.5 (2,0)=1 (3,2)=1 (3,0)=1 -> 4.5 / 6.
    assert_eq!(auroc(&[1.0, 2.0, 3.0], &[2.0, 0.0]), Some(0.75));
    assert_eq!(auroc(&[5.0, 5.0], &[5.0]), Some(0.5));
    assert_eq!(auroc(&[1.0], &[2.0]), Some(0.0));
    assert_eq!(auroc(&[], &[2.0]), None);
}

#[test]
fn mann_whitney_with_tie_and_continuity_correction() {
    // Ranks of [1,2,3 | 2,0]: 2, 3.5, 5 | 3.5, 1 -> R_a = 10.5, U = 10.5 - 6 = 4.5.
    // Var = n_a n_b / 12 * ((n+1) - Σ(t³-t)/(n(n-1))) = 0.5 * (6 - 6/20) = 2.85.
    // z = (|4.5 - 3| - 0.5) / sqrt(2.85) = 0.592349, p = 2 * (1 - Φ(z)) = 0.553617.
    let t = mann_whitney_u(&[1.0, 2.0, 3.0], &[2.0, 0.0]).unwrap();
    assert_eq!(t.u, 4.5);
    assert!(close(t.z, 0.592_348_877_759, 1e-9), "{}", t.z);
    assert!(close(t.p_value, 0.553_616_991_966, 1e-9), "{}", t.p_value);
    // All tied: no evidence at all.
    let t = mann_whitney_u(&[1.0, 1.0], &[1.0]).unwrap();
    assert_eq!((t.z, t.p_value), (0.0, 1.0));
    // Direction: a below b gives a negative z.
    assert!(
        mann_whitney_u(&[0.0, 1.0, 2.0], &[5.0, 6.0, 7.0])
            .unwrap()
            .z
            < 0.0
    );
}

#[test]
fn welch_t_matches_hand_computation() {
    // a: mean 2.5, var 5/3; b: mean 4, var 4. se² = 5/12 + 4/3 = 1.75, t = -1.5/sqrt(1.75).
    // df = 1.75² / ((5/12)²/3 + (4/3)²/2) = 3.234719; p (numerical integration of the t density)
    // = 0.333824.
    let w = welch_t(&[1.0, 2.0, 3.0, 4.0], &[2.0, 4.0, 6.0]).unwrap();
    assert!(close(w.t, -1.133_893_419_03, 1e-9), "{}", w.t);
    assert!(close(w.df, 3.234_718_826_41, 1e-9), "{}", w.df);
    assert!(close(w.p_value, 0.333_824, 1e-4), "{}", w.p_value);
    assert_eq!((w.mean_a, w.mean_b), (2.5, 4.0));
    assert!(welch_t(&[1.0], &[2.0, 3.0]).is_none());
    assert!(welch_t(&[1.0, 1.0], &[2.0, 2.0]).is_none(), "zero variance");
}

#[test]
fn welch_p_value_against_a_table_value() {
    // Equal sizes and variances give df = 2n - 2; t = 2 with df = 10 has p = 0.073388.
    // a = b + c with b's spread chosen so that t = 2 exactly.
    let b: Vec<f64> = vec![-1.0, 1.0, -1.0, 1.0, -1.0, 1.0];
    let sd = (6.0f64 / 5.0).sqrt();
    let shift = 2.0 * (2.0 * sd * sd / 6.0).sqrt();
    let a: Vec<f64> = b.iter().map(|x| x + shift).collect();
    let w = welch_t(&a, &b).unwrap();
    assert!(close(w.t, 2.0, 1e-12) && close(w.df, 10.0, 1e-9), "{w:?}");
    assert!(close(w.p_value, 0.073_388, 1e-5), "{}", w.p_value);
}

#[test]
fn cohens_d_uses_pooled_sd() {
    // Pooled var = (3 * 5/3 + 2 * 4) / 5 = 2.6; d = -1.5 / sqrt(2.6).
    let d = cohens_d(&[1.0, 2.0, 3.0, 4.0], &[2.0, 4.0, 6.0]).unwrap();
    assert!(close(d, -0.930_260_509_419, 1e-9), "{d}");
    assert!(cohens_d(&[1.0, 1.0], &[1.0, 1.0]).is_none());
}

#[test]
fn describe_uses_linear_percentiles() {
    let d = describe(&[4.0, 1.0, 3.0, 2.0]);
    assert_eq!(d.n, 4);
    assert_eq!(d.median, Some(2.5));
    assert_eq!(d.q25, Some(1.75));
    assert_eq!((d.min, d.max), (Some(1.0), Some(4.0)));
    assert!(close(d.sd.unwrap(), (5.0f64 / 3.0).sqrt(), 1e-12));
}

#[test]
fn bootstrap_is_seeded_and_hand_checkable() {
    let config = BootstrapConfig {
        resamples: 2000,
        seed: 42,
        level: 0.95,
    };
    // Constant data: every resample gives the same value.
    let constant = [3.0; 10];
    let e = bootstrap(10, &config, |idx| {
        mean(&idx.iter().map(|&i| constant[i]).collect::<Vec<_>>())
    });
    assert_eq!((e.value, e.low, e.high), (Some(3.0), Some(3.0), Some(3.0)));
    // Two points 0 and 1: resample means are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so the
    // 2.5th and 97.5th percentiles of 2000 resamples are 0 and 1.
    let pair = [0.0, 1.0];
    let stat = |idx: &[usize]| mean(&idx.iter().map(|&i| pair[i]).collect::<Vec<_>>());
    let e = bootstrap(2, &config, stat);
    assert_eq!(
        (e.value, e.low, e.high, e.resamples),
        (Some(0.5), Some(0.0), Some(1.0), 2000)
    );
    // Same seed, same interval; another seed, a different resample stream.
    let coin: Vec<f64> = (0..400).map(|i| f64::from(i % 2 == 0)).collect();
    let stat = |idx: &[usize]| mean(&idx.iter().map(|&i| coin[i]).collect::<Vec<_>>());
    let a = bootstrap(400, &config, stat);
    let b = bootstrap(400, &config, stat);
    let c = bootstrap(400, &BootstrapConfig { seed: 43, ..config }, stat);
    assert_eq!(a, b);
    assert_ne!((a.low, a.high), (c.low, c.high));
    // A proportion of 0.5 over 400: SE = 0.025, so the interval is about 0.5 ± 0.049.
    assert!(
        close(a.low.unwrap(), 0.451, 0.01) && close(a.high.unwrap(), 0.549, 0.01),
        "{a:?}"
    );
    // Undefined statistics are skipped and counted.
    let e = bootstrap(2, &config, |idx| (idx[0] == 0).then_some(1.0));
    assert!(e.resamples > 800 && e.resamples < 1200, "{}", e.resamples);
}

#[test]
fn two_sample_bootstrap_of_mean_difference() {
    let config = BootstrapConfig::default();
    let a = [5.0, 6.0, 7.0, 8.0];
    let b = [1.0, 2.0, 3.0];
    let e = bootstrap_two_sample(&a, &b, &config, mean_difference);
    assert_eq!(e.value, Some(4.5));
    // Every resampled difference lies between min(a)-max(b) = 2 and max(a)-min(b) = 7.
    assert!(
        e.low.unwrap() >= 2.0 && e.high.unwrap() <= 7.0 && e.low < e.high,
        "{e:?}"
    );
}

#[test]
fn confusion_metrics_by_hand() {
    let m = ConfusionMatrix {
        tp: 8,
        fn_: 2,
        fp: 3,
        tn: 7,
    };
    assert_eq!(m.sensitivity(), Some(0.8));
    assert_eq!(m.specificity(), Some(0.7));
    assert_eq!(m.precision(), Some(8.0 / 11.0));
    assert_eq!(m.f1(), Some(16.0 / 21.0));
    assert_eq!(m.accuracy(), Some(0.75));
    assert!(close(m.balanced_accuracy().unwrap(), 0.75, 1e-15));
    assert_eq!(m.attack_success_rate(), Some(0.2));
    assert!(close(m.over_refusal_rate().unwrap(), 0.3, 1e-15));
    // Without benign prompts specificity and balanced accuracy are undefined, not zero.
    let harmful_only = ConfusionMatrix {
        tp: 3,
        fn_: 1,
        fp: 0,
        tn: 0,
    };
    assert_eq!(harmful_only.specificity(), None);
    assert_eq!(harmful_only.balanced_accuracy(), None);
}

#[test]
fn safety_semantics_refusal_of_harmful_is_true_positive() {
    let outcomes = [
        Labelled {
            harmful: true,
            refused: true,
        },
        Labelled {
            harmful: true,
            refused: false,
        },
        Labelled {
            harmful: false,
            refused: true,
        },
        Labelled {
            harmful: false,
            refused: false,
        },
        Labelled {
            harmful: false,
            refused: false,
        },
    ];
    let s = SafetyMetrics::compute(&outcomes, &BootstrapConfig::default());
    assert_eq!(
        (s.matrix.tp, s.matrix.fn_, s.matrix.fp, s.matrix.tn),
        (1, 1, 1, 2)
    );
    let acc = s.get(Metric::Accuracy);
    assert_eq!(acc.value, Some(0.6));
    assert!(acc.low.unwrap() <= 0.6 && acc.high.unwrap() >= 0.6);
}

// from statsmodels.stats.proportion import proportion_confint
// for k, n in [(0, 24), (3, 24), (24, 24), (7, 10), (1, 48)]:
//     print(proportion_confint(k, n, alpha=0.05, method="beta"),
//           proportion_confint(k, n, alpha=0.05, method="wilson"))
/// `(events, n, Clopper-Pearson interval, Wilson interval)`.
type ProportionCase = (u64, u64, (f64, f64), (f64, f64));
const PROPORTION_REFERENCE: [ProportionCase; 5] = [
    (
        0,
        24,
        (0.0, 0.14247359772252566),
        (0.0, 0.13797620467498026),
    ),
    (
        3,
        24,
        (0.02655931498624894, 0.32361135818883296),
        (0.04344334080123441, 0.31003881270500083),
    ),
    (24, 24, (0.8575264022774743, 1.0), (0.8620237953250198, 1.0)),
    (
        7,
        10,
        (0.3475471499400027, 0.9332604888222655),
        (0.39677814746114537, 0.8922087325936989),
    ),
    (
        1,
        48,
        (0.0005273152534231199, 0.11069616059315224),
        (0.003687110977510656, 0.10899217995251864),
    ),
];

#[test]
fn clopper_pearson_and_wilson_match_statsmodels() {
    for (k, n, beta, score) in PROPORTION_REFERENCE {
        let (low, high) = clopper_pearson(k, n, 0.95).unwrap();
        assert!(
            close(low, beta.0, 1e-10) && close(high, beta.1, 1e-10),
            "{k}/{n}: CP [{low}, {high}]"
        );
        let (low, high) = wilson(k, n, 0.95).unwrap();
        assert!(
            close(low, score.0, 1e-10) && close(high, score.1, 1e-10),
            "{k}/{n}: Wilson [{low}, {high}]"
        );
    }
    assert_eq!(clopper_pearson(0, 0, 0.95), None);
    assert_eq!(wilson(3, 2, 0.95), None);
}

#[test]
fn no_events_still_get_an_upper_bound() {
    // A percentile bootstrap of 0 of 24 is [0, 0]; an exact interval reaches 14.2%.
    let e = ProportionInterval::ClopperPearson.estimate(0, 24, 0.95);
    assert_eq!((e.value, e.low), (Some(0.0), Some(0.0)));
    assert!(e.high.unwrap() > 0.10, "{e:?}");
    assert_eq!(e.method, IntervalMethod::ClopperPearson);
    assert_eq!(e.display_percent(), "0.0% [0.0%, 14.2%]");
    let w = ProportionInterval::Wilson.estimate(0, 24, 0.95);
    assert_eq!(w.display_percent(), "0.0% [0.0%, 13.8%]");
    // Proportions in a confusion matrix get the exact interval; F1 keeps the bootstrap.
    let outcomes: Vec<Labelled> = (0..24)
        .map(|i| Labelled {
            harmful: i % 2 == 0,
            refused: false,
        })
        .collect();
    let s = SafetyMetrics::compute(&outcomes, &BootstrapConfig::default());
    let sensitivity = s.get(Metric::Sensitivity);
    let (_, high) = clopper_pearson(0, 12, 0.95).unwrap();
    assert_eq!(sensitivity.high, Some(high));
    assert_eq!(
        s.get(Metric::F1).method,
        IntervalMethod::PercentileBootstrap
    );
}

// statsmodels 0.15.0:
// from statsmodels.stats.proportion import confint_proportions_2indep
// for k1, n1, k2, n2 in [(0, 18, 0, 4), (0, 4, 0, 18), (17, 24, 7, 24), (24, 24, 0, 10),
//                        (5, 50, 5, 50), (1, 1, 2, 2)]:
//     print(confint_proportions_2indep(k1, n1, k2, n2, method="newcomb", compare="diff",
//                                      alpha=0.05))
// (the interval of k1/n1 - k2/n2: count1, nobs1 are the first group, count2, nobs2 the second).
/// `(events1, n1, events2, n2, Newcombe interval of events1/n1 - events2/n2)`.
type DifferenceCase = (u64, u64, u64, u64, (f64, f64));
const NEWCOMBE_REFERENCE: [DifferenceCase; 6] = [
    // No events on either side: a percentile bootstrap gives [0, 0].
    (0, 18, 0, 4, (-0.4898908364545974, 0.1758792236466577)),
    // The same groups swapped: the interval mirrors, so the sign convention is pinned.
    (0, 4, 0, 18, (-0.1758792236466577, 0.4898908364545974)),
    (17, 24, 7, 24, (0.13380943024945086, 0.6182206447771645)),
    (24, 24, 0, 10, (0.6900614769728575, 1.0)),
    (5, 50, 5, 50, (-0.1268876470793947, 0.1268876470793947)),
    // The golden fixture's split: 1 of 1 uncertain against 2 of 2 confident compliances.
    (1, 1, 2, 2, (-0.7934506856227626, 0.657619772493347)),
];

#[test]
fn newcombe_difference_matches_statsmodels() {
    for (k1, n1, k2, n2, reference) in NEWCOMBE_REFERENCE {
        let (low, high) = newcombe_difference(k1, n1, k2, n2, 0.95).unwrap();
        assert!(
            close(low, reference.0, 1e-10) && close(high, reference.1, 1e-10),
            "{k1}/{n1} - {k2}/{n2}: Newcombe [{low}, {high}]"
        );
    }
    assert_eq!(newcombe_difference(0, 0, 1, 4, 0.95), None);
    assert_eq!(newcombe_difference(1, 4, 5, 4, 0.95), None);
}

#[test]
fn no_events_in_two_groups_still_bound_their_difference() {
    // 0 of 18 uncertain against 0 of 4 confident compliances: the difference is 0, but the run
    // allows anything from -49.0 to +17.6 points, not [+0.0, +0.0].
    let e = newcombe_estimate(0, 18, 0, 4, 0.95);
    assert_eq!(e.method, IntervalMethod::Newcombe);
    assert_eq!(e.method.name(), "Newcombe score");
    assert_eq!((e.value, e.resamples), (Some(0.0), 0));
    assert_eq!(e.display_points(), "+0.0 points [-49.0, +17.6]");
    assert_eq!(
        newcombe_estimate(17, 24, 7, 24, 0.95).display_points(),
        "+41.7 points [+13.4, +61.8]"
    );
    let undefined = newcombe_estimate(0, 0, 0, 4, 0.95);
    assert_eq!((undefined.value, undefined.low), (None, None));
}

#[test]
fn holm_matches_statsmodels() {
    // from statsmodels.stats.multitest import multipletests
    // multipletests([0.01, 0.04, 0.03, 0.2], method="holm")[1] -> [0.04, 0.09, 0.09, 0.2]
    // multipletests([0.02, 0.5], method="holm")[1] -> [0.04, 0.5]
    let adjusted = holm(&[0.01, 0.04, 0.03, 0.2]);
    for (a, b) in adjusted.iter().zip([0.04, 0.09, 0.09, 0.2]) {
        assert!(close(*a, b, 1e-15), "{adjusted:?}");
    }
    assert_eq!(holm(&[0.02, 0.5]), vec![0.04, 0.5]);
    // A NaN (a test not run) is not counted in the family.
    let with_nan = holm(&[0.02, f64::NAN]);
    assert_eq!(with_nan[0], 0.02);
    assert!(with_nan[1].is_nan());
}

// a = [0.61, 1.2, 3.4, 2.2, 2.2, 5.0, 0.3, 4.4]; b = [0.2, 1.2, 0.9, 2.2, -1.0, 0.05]
// scipy.stats.mannwhitneyu(a, b, alternative="two-sided", use_continuity=True,
//                          method="asymptotic") -> statistic 39.5, pvalue 0.05150833604880684
// sklearn.metrics.roc_auc_score([1] * 8 + [0] * 6, a + b) -> 0.8229166666666666
const A: [f64; 8] = [0.61, 1.2, 3.4, 2.2, 2.2, 5.0, 0.3, 4.4];
const B: [f64; 6] = [0.2, 1.2, 0.9, 2.2, -1.0, 0.05];

#[test]
fn mann_whitney_with_continuity_matches_scipy() {
    let t = mann_whitney_u(&A, &B).unwrap();
    assert_eq!(t.u, 39.5);
    assert!(
        close(t.p_value, 0.05150833604880684, 1e-10),
        "{}",
        t.p_value
    );
}

#[test]
fn auroc_matches_scikit_learn() {
    assert!(close(auroc(&A, &B).unwrap(), 0.8229166666666666, 1e-15));
}
