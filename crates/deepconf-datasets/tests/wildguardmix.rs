//! WildGuardMix train and test parquet: null labels, float and string agreement columns.

use deepconf_datasets::{Benchmark, DatasetSpec, Split};

use crate::common::{wildguardmix_test, wildguardmix_train};

fn check_test_file(agreement_as_strings: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = wildguardmix_test(dir.path(), agreement_as_strings);
    let dataset = DatasetSpec::local(Benchmark::WildGuardMix, &path)
        .load()
        .expect("load");
    assert_eq!(dataset.len(), 4, "the null-label row is kept");
    let labels: Vec<_> = dataset.iter().map(|instance| instance.harmful).collect();
    assert_eq!(labels, [Some(true), Some(false), None, Some(false)]);
    let refusals: Vec<_> = dataset
        .iter()
        .map(|instance| instance.reference_refusal)
        .collect();
    assert_eq!(refusals, [Some(true), Some(false), Some(false), None]);
    let agreements: Vec<_> = dataset
        .iter()
        .map(|instance| instance.label_agreement)
        .collect();
    assert_eq!(agreements, [Some(3.0), Some(2.0), None, Some(3.0)]);
    assert_eq!(dataset.instances[2].adversarial, Some(true));
    assert_eq!(dataset.instances[2].reference_response_harmful, Some(true));
    assert_eq!(
        dataset.instances[0].category.as_deref(),
        Some("violence_and_physical_harm")
    );
    assert_eq!(dataset.instances[0].id, "wildguard_test-1");

    let summary = &dataset.summary;
    assert_eq!(
        (summary.harmful, summary.benign, summary.unlabeled),
        (1, 2, 1)
    );
    assert_eq!(
        (summary.reference_refusal, summary.reference_compliance),
        (1, 2)
    );
    assert_eq!(summary.nulls.get("prompt_harm_label"), Some(&1));
    assert_eq!(summary.nulls.get("response"), Some(&1));
    assert_eq!(summary.nulls.get("response_harm_agreement"), Some(&1));
    assert_eq!(summary.by_category.get("benign"), Some(&2));
}

#[test]
fn test_split_with_float_agreement() {
    check_test_file(false);
}

#[test]
fn test_split_with_string_agreement() {
    check_test_file(true);
}

#[test]
fn train_split_with_prompt_only_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = wildguardmix_train(dir.path());
    let dataset = DatasetSpec::local(Benchmark::WildGuardMix, &path)
        .load()
        .expect("load");
    assert_eq!(dataset.len(), 3);
    let prompt_only = &dataset.instances[2];
    assert_eq!(prompt_only.reference_response, None);
    assert_eq!(prompt_only.reference_refusal, None);
    assert_eq!(prompt_only.harmful, Some(true));
    assert_eq!(prompt_only.label_agreement, None);
    assert_eq!(
        dataset.summary.nulls.get("response_refusal_label"),
        Some(&1)
    );
    assert!(!dataset.summary.nulls.contains_key("prompt_harm_agreement"));
}

#[test]
fn default_hub_files_are_the_real_ones() {
    let test = DatasetSpec::new(Benchmark::WildGuardMix)
        .default_hub_file()
        .unwrap();
    assert_eq!(test.repo_id, "allenai/wildguardmix");
    assert_eq!(test.filename, "test/wildguard_test.parquet");
    let train = DatasetSpec::new(Benchmark::WildGuardMix)
        .with_split(Split::Train)
        .default_hub_file()
        .unwrap();
    assert_eq!(train.filename, "train/wildguard_train.parquet");
    let by_config = DatasetSpec::new(Benchmark::WildGuardMix)
        .with_config("wildguardtrain")
        .default_hub_file()
        .unwrap();
    assert_eq!(by_config, train);
}
