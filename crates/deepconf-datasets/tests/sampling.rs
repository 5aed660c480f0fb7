//! Stratified sampling keeps the label ratio within one instance and is reproducible by seed.

use deepconf_core::ChatMessage;
use deepconf_datasets::{Dataset, Instance, SourceRow};
use proptest::prelude::*;

fn instance(row: usize, harmful: Option<bool>) -> Instance {
    Instance {
        id: format!("i{row}"),
        messages: vec![ChatMessage::user(format!("prompt {row}"))],
        harmful,
        reference_response: None,
        reference_refusal: None,
        reference_response_harmful: None,
        label_agreement: None,
        category: None,
        subcategory: None,
        adversarial: None,
        source: SourceRow {
            file: "mem".to_owned(),
            row: row + 1,
        },
        dataset: None,
    }
}

fn label_strategy() -> impl Strategy<Value = Option<bool>> {
    prop_oneof![4 => Just(Some(false)), 2 => Just(Some(true)), 1 => Just(None)]
}

proptest! {
    #[test]
    fn stratified_sample_keeps_ratio_and_is_reproducible(
        labels in prop::collection::vec(label_strategy(), 1..300),
        fraction in 0.0f64..1.0,
        seed in any::<u64>(),
    ) {
        let dataset = Dataset::from_instances(
            labels.iter().enumerate().map(|(row, &label)| instance(row, label)).collect(),
        );
        let size = (fraction * labels.len() as f64) as usize;
        let sample = dataset.stratified_sample(size, seed);
        prop_assert_eq!(sample.len(), size);
        let total = labels.len() as f64;
        for (count, group) in [
            (sample.summary.harmful, dataset.summary.harmful),
            (sample.summary.benign, dataset.summary.benign),
            (sample.summary.unlabeled, dataset.summary.unlabeled),
        ] {
            let exact = size as f64 * group as f64 / total;
            prop_assert!((count as f64 - exact).abs() < 1.0, "count {} vs exact share {}", count, exact);
        }
        // Same seed, same sample; file order kept; no duplicates.
        prop_assert_eq!(&sample, &dataset.stratified_sample(size, seed));
        let rows: Vec<usize> = sample.iter().map(|instance| instance.source.row).collect();
        prop_assert!(rows.windows(2).all(|pair| pair[0] < pair[1]));
    }
}

#[test]
fn different_seeds_give_different_samples() {
    let dataset = Dataset::from_instances(
        (0..200)
            .map(|row| instance(row, Some(row % 3 == 0)))
            .collect(),
    );
    let first = dataset.stratified_sample(50, 1);
    let second = dataset.stratified_sample(50, 2);
    assert_ne!(first, second);
    assert_eq!(first.summary.harmful, second.summary.harmful);
}

#[test]
fn filtering_recounts_labels_and_categories() {
    let mut instances: Vec<Instance> = (0..6).map(|row| instance(row, Some(row < 2))).collect();
    instances[0].category = Some("a".to_owned());
    instances[3].category = Some("a".to_owned());
    instances[4].category = Some("b".to_owned());
    let dataset = Dataset::from_instances(instances);
    let only_a = dataset.with_category("a");
    assert_eq!(only_a.len(), 2);
    assert_eq!((only_a.summary.harmful, only_a.summary.benign), (1, 1));
    assert_eq!(only_a.summary.by_category.len(), 1);
    assert_eq!(dataset.take(3).summary.rows, 3);
    assert_eq!(dataset.with_label(Some(true)).len(), 2);
}
