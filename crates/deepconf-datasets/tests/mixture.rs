//! Mixtures: per-source ids, counts and gold labels; seeded sampling over source and category.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use deepconf_datasets::{
    Benchmark, Dataset, DatasetSpec, Error, Instance, MixtureSpec, SourceShares,
};
use proptest::prelude::*;

use crate::strongreject::real_file;

fn real_mixture() -> Dataset {
    // Fail with the fetch command rather than a bare "file not found".
    for benchmark in [Benchmark::StrongReject, Benchmark::OverRefusal] {
        real_file(benchmark);
    }
    MixtureSpec::harmful_and_benign(None)
        .load()
        .expect("load HarmBench + StrongREJECT + over-refusal probes (`cargo xtask fetch-data`)")
}

#[test]
fn real_mixture_keeps_per_source_counts_ids_and_gold_labels() {
    let mixed = real_mixture();
    assert_eq!(mixed.len(), 320 + 313 + 80);
    assert_eq!(
        (mixed.summary.harmful, mixed.summary.benign),
        (633, 80),
        "harmful = HarmBench + StrongREJECT, benign = the probes"
    );
    let per_source: Vec<(&str, usize, usize, usize)> = mixed
        .summary
        .by_source
        .iter()
        .map(|(name, c)| (name.as_str(), c.rows, c.harmful, c.benign))
        .collect();
    assert_eq!(
        per_source,
        [
            ("harmbench", 320, 320, 0),
            ("overrefusal", 80, 0, 80),
            ("strongreject", 313, 313, 0),
        ]
    );
    // Each part's own summary (file, rows read) is kept.
    assert_eq!(mixed.summary.sources.len(), 3);
    assert_eq!(mixed.summary.sources["strongreject"].rows_read, 313);
    assert!(
        mixed.summary.sources["overrefusal"]
            .file
            .ends_with("benign_edgy_80.json")
    );
    assert_eq!(mixed.summary.benchmark, None);

    // Ids are `{source}/{id}`, unique across sources; gold labels and categories are those of the
    // standalone loads.
    let ids: BTreeSet<&str> = mixed.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids.len(), mixed.len());
    for benchmark in [
        Benchmark::HarmBench,
        Benchmark::StrongReject,
        Benchmark::OverRefusal,
    ] {
        let alone = DatasetSpec::new(benchmark).load().unwrap();
        let by_id: HashMap<String, &Instance> = mixed
            .iter()
            .filter(|i| i.dataset.as_deref() == Some(benchmark.name()))
            .map(|i| (i.id.clone(), i))
            .collect();
        assert_eq!(by_id.len(), alone.len(), "{benchmark}");
        for original in &alone {
            let mixed = by_id[&format!("{benchmark}/{}", original.id)];
            assert_eq!(mixed.harmful, original.harmful);
            assert_eq!(mixed.category, original.category);
            assert_eq!(mixed.messages, original.messages);
            assert_eq!(mixed.source, original.source);
        }
    }
    // Filtering a mixture recounts per source.
    let benign = mixed.with_label(Some(false));
    assert_eq!(benign.summary.by_source.len(), 1);
    assert_eq!(benign.summary.by_source["overrefusal"].rows, 80);
}

#[test]
fn stratified_sample_of_the_real_mixture_is_deterministic_and_covers_sources_and_categories() {
    let mixed = real_mixture();
    let shares = SourceShares::weights([
        ("harmbench", 1.0),
        ("strongreject", 1.0),
        ("overrefusal", 2.0),
    ]);
    let sample = mixed.stratified_by_source(48, 7, &shares).unwrap();
    assert_eq!(sample.len(), 48);
    let rows = |d: &Dataset, name: &str| d.summary.by_source.get(name).map_or(0, |c| c.rows);
    assert_eq!(
        [
            rows(&sample, "harmbench"),
            rows(&sample, "strongreject"),
            rows(&sample, "overrefusal")
        ],
        [12, 12, 24]
    );
    assert_eq!((sample.summary.harmful, sample.summary.benign), (24, 24));
    // Within a source, categories in proportion: StrongREJECT's six get two each, the probes' five
    // categories of 16 share 24 (4 or 5 each); HarmBench's 159/81/80 split 12 as 6/3/3.
    let categories = |source: &str| -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for i in sample
            .iter()
            .filter(|i| i.dataset.as_deref() == Some(source))
        {
            *counts.entry(i.category.clone().unwrap()).or_default() += 1;
        }
        counts
    };
    assert!(categories("strongreject").values().all(|&n| n == 2));
    assert_eq!(categories("strongreject").len(), 6);
    assert!(
        categories("overrefusal")
            .values()
            .all(|&n| n == 4 || n == 5)
    );
    assert_eq!(
        categories("harmbench").into_values().collect::<Vec<_>>(),
        [3, 3, 6]
    );
    // Deterministic, order-preserving, seed-dependent.
    assert_eq!(sample, mixed.stratified_by_source(48, 7, &shares).unwrap());
    assert_ne!(sample, mixed.stratified_by_source(48, 8, &shares).unwrap());
    let position: HashMap<&str, usize> = mixed
        .iter()
        .enumerate()
        .map(|(p, i)| (i.id.as_str(), p))
        .collect();
    let positions: Vec<usize> = sample.iter().map(|i| position[i.id.as_str()]).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));

    // Proportional shares still cover the small benign source.
    let proportional = mixed
        .stratified_by_source(3, 1, &SourceShares::Proportional)
        .unwrap();
    assert_eq!(proportional.summary.by_source.len(), 3);
    let equal = mixed
        .stratified_by_source(30, 1, &SourceShares::Equal)
        .unwrap();
    assert!(equal.summary.by_source.values().all(|c| c.rows == 10));
}

fn prompts(count: usize, harmful: Option<bool>, categories: usize) -> Dataset {
    Dataset::from_instances(
        (0..count)
            .map(|i| {
                let mut instance = Instance::user(format!("p{i}"), format!("prompt {i}"), harmful);
                instance.category = (categories > 0).then(|| format!("c{}", i % categories));
                instance.source.row = i + 1;
                instance
            })
            .collect(),
    )
}

#[test]
fn mixing_rejects_bad_names_and_duplicate_ids() {
    let error =
        Dataset::mix([("a", prompts(2, Some(true), 0)), ("a", prompts(1, None, 0))]).unwrap_err();
    assert!(
        error.to_string().contains("\"a\" is given twice"),
        "{error}"
    );
    let error = Dataset::mix([("a/b", prompts(1, None, 0))]).unwrap_err();
    assert!(error.to_string().contains("contains `/`"), "{error}");
    assert!(Dataset::mix([(" ", prompts(1, None, 0))]).is_err());

    let mut twice = prompts(3, Some(false), 0);
    twice.instances[2].id = "p0".into();
    let error = Dataset::mix([("benign", twice)]).unwrap_err();
    assert!(matches!(error, Error::DuplicateId { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("`benign`")
            && message.contains("\"p0\"")
            && message.contains("row 1")
            && message.contains("row 3"),
        "{message}"
    );
    // Same id in two sources is fine: the prefixes differ.
    let mixed = Dataset::mix([
        ("x", prompts(2, Some(true), 0)),
        ("y", prompts(2, Some(false), 0)),
    ])
    .unwrap();
    assert_eq!(mixed.instances[2].id, "y/p0");

    let bad = SourceShares::weights([("x", -1.0)]);
    let error = mixed.stratified_by_source(2, 0, &bad).unwrap_err();
    assert!(error.to_string().contains("shares"), "{error}");
}

#[test]
fn a_source_sample_does_not_depend_on_the_other_sources() {
    let two = Dataset::mix([
        ("a", prompts(40, Some(true), 3)),
        ("b", prompts(30, Some(false), 2)),
    ])
    .unwrap();
    let three = Dataset::mix([
        ("a", prompts(40, Some(true), 3)),
        ("c", prompts(10, None, 0)),
        ("b", prompts(30, Some(false), 2)),
    ])
    .unwrap();
    let shares = SourceShares::weights([("a", 1.0), ("b", 1.0)]);
    let from = |d: &Dataset| -> Vec<String> {
        d.stratified_by_source(20, 99, &shares)
            .unwrap()
            .instances
            .into_iter()
            .map(|i| i.id)
            .collect()
    };
    assert_eq!(from(&two), from(&three));
}

proptest! {
    #[test]
    fn stratified_by_source_draws_exactly_and_covers_every_source(
        sizes in prop::collection::vec((1usize..40, 0usize..4), 1..5),
        size in 0usize..120,
        seed in any::<u64>(),
    ) {
        let parts: Vec<(String, Dataset)> = sizes
            .iter()
            .enumerate()
            .map(|(s, &(n, categories))| (format!("s{s}"), prompts(n, Some(s % 2 == 0), categories)))
            .collect();
        let total: usize = sizes.iter().map(|s| s.0).sum();
        let mixed = Dataset::mix(parts).unwrap();
        let sample = mixed.stratified_by_source(size, seed, &SourceShares::Equal).unwrap();
        prop_assert_eq!(sample.len(), size.min(total));
        if size >= sizes.len() {
            prop_assert_eq!(sample.summary.by_source.len(), sizes.len());
        }
        let ids: BTreeSet<&str> = sample.iter().map(|i| i.id.as_str()).collect();
        prop_assert_eq!(ids.len(), sample.len());
        let counts: Vec<usize> = mixed.summary.by_source.keys()
            .map(|k| sample.summary.by_source.get(k).map_or(0, |c| c.rows))
            .collect();
        // Equal shares: sources with room differ by at most one.
        let capacities: Vec<usize> = mixed.summary.by_source.values().map(|c| c.rows).collect();
        for (i, &a) in counts.iter().enumerate() {
            for (j, &b) in counts.iter().enumerate() {
                if a + 1 < b {
                    prop_assert_eq!(a, capacities[i], "source {} ({}) short of {} ({})", i, a, j, b);
                }
            }
        }
        prop_assert_eq!(&sample, &mixed.stratified_by_source(size, seed, &SourceShares::Equal).unwrap());
    }
}
