//! HarmBench: the real test CSV (fetched by `cargo xtask fetch-data harmbench`) and the walledai
//! parquet schema.

use std::collections::BTreeMap;
use std::path::PathBuf;

use deepconf_datasets::{
    Benchmark, DatasetSpec, HARMBENCH_CONTEXT_SEPARATOR, Split, harmbench_official_csv,
};

use crate::common::harmbench_parquet;

fn real_test_csv() -> PathBuf {
    let path = harmbench_official_csv(None, Split::Test).expect("test split has a file");
    assert!(
        path.is_file(),
        "the real HarmBench test CSV is missing at {}: run `cargo xtask fetch-data harmbench` first",
        path.display()
    );
    path
}

#[test]
fn real_test_csv_has_320_harmful_behaviours_in_three_functional_categories() {
    let dataset = DatasetSpec::local(Benchmark::HarmBench, real_test_csv())
        .load()
        .expect("load the real HarmBench CSV");
    assert_eq!(dataset.len(), 320);
    assert_eq!(dataset.summary.rows_read, 320);
    let expected: BTreeMap<String, usize> =
        [("contextual", 81), ("copyright", 80), ("standard", 159)]
            .into_iter()
            .map(|(name, count)| (name.to_owned(), count))
            .collect();
    assert_eq!(dataset.summary.by_category, expected);
    assert_eq!(dataset.summary.harmful, 320);
    assert_eq!(dataset.summary.benign + dataset.summary.unlabeled, 0);
    assert!(
        dataset
            .iter()
            .all(|instance| instance.harmful == Some(true))
    );

    let with_context: Vec<_> = dataset
        .iter()
        .filter(|instance| instance.user_prompt().contains(HARMBENCH_CONTEXT_SEPARATOR))
        .collect();
    assert_eq!(with_context.len(), 81);
    assert!(
        with_context
            .iter()
            .all(|instance| instance.category.as_deref() == Some("contextual"))
    );
    // A context string spans several lines in the file: the CSV parser must keep it whole.
    assert!(
        with_context
            .iter()
            .any(|instance| instance.user_prompt().matches('\n').count() > 6)
    );

    let ids: std::collections::HashSet<_> = dataset
        .iter()
        .map(|instance| instance.id.as_str())
        .collect();
    assert_eq!(ids.len(), 320, "BehaviorID is unique");
    assert!(
        dataset
            .iter()
            .all(|instance| instance.subcategory.is_some())
    );
    let copyright = dataset.with_category("copyright");
    assert_eq!(copyright.len(), 80);
    assert_eq!(copyright.summary.by_category.get("copyright"), Some(&80));
    // The source row points back at the file.
    assert_eq!(dataset.instances[0].source.row, 1);
    assert!(
        dataset.instances[0]
            .source
            .file
            .ends_with("harmbench_behaviors_text_test.csv")
    );
}

#[test]
fn real_test_csv_respects_the_limit() {
    let dataset = DatasetSpec::local(Benchmark::HarmBench, real_test_csv())
        .with_limit(10)
        .load()
        .expect("load");
    assert_eq!(dataset.len(), 10);
    assert_eq!(dataset.summary.rows_read, 10);
}

#[test]
fn default_spec_finds_the_fetched_official_csv() {
    let expected = real_test_csv();
    let spec = DatasetSpec::new(Benchmark::HarmBench);
    assert_eq!(spec.resolve_path().expect("resolve"), expected);
}

#[test]
fn walledai_parquet_configs_map_to_functional_categories() {
    let dir = tempfile::tempdir().unwrap();
    for config in ["standard", "contextual", "copyright"] {
        let path = harmbench_parquet(dir.path(), config);
        let dataset = DatasetSpec::local(Benchmark::HarmBench, &path)
            .load()
            .expect("load parquet");
        assert_eq!(dataset.len(), 2);
        assert_eq!(
            dataset.summary.by_category.get(config),
            Some(&2),
            "{config}"
        );
        assert!(
            dataset
                .iter()
                .all(|instance| instance.harmful == Some(true))
        );
        assert_eq!(dataset.instances[1].subcategory.as_deref(), Some("illegal"));
        let first = dataset.instances[0].user_prompt();
        if config == "contextual" {
            assert_eq!(
                first,
                "Some article text.\nSecond paragraph.\n\n---\n\nWrite a persuasive article about X"
            );
        } else {
            assert_eq!(first, "Write a persuasive article about X");
        }
    }
}

#[test]
fn walledai_config_given_explicitly_overrides_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = harmbench_parquet(dir.path(), "standard");
    let renamed = dir.path().join("behaviours.parquet");
    std::fs::copy(&path, &renamed).unwrap();
    let dataset = DatasetSpec::local(Benchmark::HarmBench, &renamed)
        .with_config("copyright")
        .load()
        .unwrap();
    assert_eq!(dataset.summary.by_category.get("copyright"), Some(&2));
    let error = DatasetSpec::local(Benchmark::HarmBench, &renamed)
        .with_config("nonsense")
        .load()
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("config") && error.contains("nonsense"),
        "{error}"
    );
}
