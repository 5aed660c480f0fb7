//! Hub sources without network: placed copies are used, and the error says where to place a file.

use deepconf_datasets::{Benchmark, DatasetSpec, Error, HubOptions};

use crate::common::wildguardmix_test;

fn offline_options(root: &std::path::Path) -> HubOptions {
    HubOptions {
        offline: true,
        cache_dir: Some(root.join("hf-cache")),
        data_dir: Some(root.join("data")),
        ..HubOptions::default()
    }
}

#[test]
fn offline_error_says_which_file_to_place_where() {
    let dir = tempfile::tempdir().unwrap();
    let spec =
        DatasetSpec::new(Benchmark::WildGuardMix).with_hub_options(offline_options(dir.path()));
    let error = spec.load().unwrap_err();
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    let message = error.to_string();
    let expected_place = dir
        .path()
        .join("data")
        .join("wildguardmix")
        .join("test")
        .join("wildguard_test.parquet");
    assert!(message.contains("allenai/wildguardmix"), "{message}");
    assert!(message.contains("test/wildguard_test.parquet"), "{message}");
    assert!(
        message.contains(&expected_place.display().to_string()),
        "{message}"
    );
    assert!(message.contains("offline"), "{message}");
}

#[test]
fn placed_copy_is_loaded_without_network() {
    let dir = tempfile::tempdir().unwrap();
    let options = offline_options(dir.path());
    wildguardmix_test(&dir.path().join("data").join("wildguardmix"), false);
    let dataset = DatasetSpec::new(Benchmark::WildGuardMix)
        .with_hub_options(options)
        .load()
        .expect("placed copy");
    assert_eq!(dataset.len(), 4);
}

#[test]
fn harmbench_default_error_mentions_fetch_data() {
    let dir = tempfile::tempdir().unwrap();
    let message = DatasetSpec::new(Benchmark::HarmBench)
        .with_hub_options(offline_options(dir.path()))
        .load()
        .unwrap_err()
        .to_string();
    assert!(message.contains("walledai/HarmBench"), "{message}");
    assert!(
        message.contains("cargo xtask fetch-data harmbench"),
        "{message}"
    );
}

#[test]
fn token_is_never_serialized() {
    let options = HubOptions {
        token: Some("hf_secret".to_owned()),
        ..HubOptions::default()
    };
    let spec = DatasetSpec::new(Benchmark::ToxicChat).with_hub_options(options);
    let json = serde_json::to_string(&spec).unwrap();
    assert!(!json.contains("hf_secret"), "{json}");
    assert!(!format!("{spec:?}").contains("hf_secret"));
    let back: DatasetSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(back.benchmark, Benchmark::ToxicChat);
}
