//! The shared command line and instance selection.

use deepconf_core::policy::PolicyConfig;
use deepconf_datasets::{Benchmark, DatasetSpec};
use deepconf_eval::{Defaults, Error, Stratify, select_instances};

use crate::common::args;

#[test]
fn harmbench_defaults_without_flags() {
    let plan = args(&[]).plan(&Defaults::harmbench()).unwrap();
    assert_eq!(plan.run.policy, PolicyConfig::online(4, 8, 10.0));
    assert_eq!(plan.run.sampling.max_tokens, 128);
    assert_eq!(plan.run.sampling.seed, 0);
    assert_eq!(plan.limit, Some(32));
    assert_eq!(plan.out, std::path::Path::new("out").join("harmbench"));
}

#[test]
fn flags_override_the_defaults() {
    let flags = [
        "--policy",
        "offline",
        "--traces",
        "6",
        "--keep-percent",
        "50",
        "--window",
        "8",
        "--max-tokens",
        "40",
        "--seed",
        "7",
        "--limit",
        "0",
        "--out",
        "somewhere",
        "--store-logprobs",
        "--resume",
        "--classifier",
        "ensemble",
    ];
    let a = args(&flags);
    assert!(a.store_logprobs && a.resume);
    let plan = a.plan(&Defaults::harmbench()).unwrap();
    assert_eq!(plan.run.policy, PolicyConfig::offline(6, 50.0));
    assert_eq!(plan.run.confidence.window, 8);
    assert_eq!(
        (plan.run.sampling.max_tokens, plan.run.sampling.seed),
        (40, 7)
    );
    assert_eq!(plan.limit, None, "--limit 0 means all");
    assert_eq!(plan.out, std::path::Path::new("somewhere"));
    let online = args(&["--policy", "online", "--traces", "3", "--warmup", "5"])
        .plan(&Defaults::harmbench())
        .unwrap();
    assert_eq!(
        online.run.policy,
        PolicyConfig::online(3, 3, 10.0),
        "warmup capped at traces"
    );
    let compat = args(&["--policy", "compat"])
        .plan(&Defaults::harmbench())
        .unwrap();
    assert_eq!(compat.run.policy.kind(), "compat");
    assert_eq!(compat.run.policy.max_traces(), 8);
    let prototype = args(&["--policy", "prototype"])
        .plan(&Defaults::harmbench())
        .unwrap();
    assert_eq!(prototype.run.policy, compat.run.policy);
}

#[test]
fn invalid_flags_name_the_parameter() {
    let err = args(&["--keep-percent", "0"])
        .plan(&Defaults::harmbench())
        .unwrap_err();
    assert!(err.to_string().contains("keep_percent"), "{err}");
    let err = args(&["--max-tokens", "0"])
        .plan(&Defaults::harmbench())
        .unwrap_err();
    assert!(err.to_string().contains("max_tokens"), "{err}");
    let err = deepconf_eval::build_backend(&args(&["--backend", "openai"])).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidParameter {
                parameter: "base-url",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn harmbench_sample_is_stratified_by_functional_category_and_seeded() {
    let dataset = DatasetSpec::new(Benchmark::HarmBench)
        .load()
        .unwrap_or_else(|e| {
            panic!("HarmBench data is needed (run `cargo xtask fetch-data harmbench`): {e}")
        });
    assert_eq!(dataset.len(), 320);
    let sample = select_instances(&dataset, Some(24), 0, Stratify::Category);
    let count = |c: &str| {
        sample
            .iter()
            .filter(|i| i.category.as_deref() == Some(c))
            .count()
    };
    assert_eq!(
        (count("standard"), count("contextual"), count("copyright")),
        (12, 6, 6)
    );
    assert_eq!(
        sample,
        select_instances(&dataset, Some(24), 0, Stratify::Category)
    );
    assert_ne!(
        sample,
        select_instances(&dataset, Some(24), 1, Stratify::Category)
    );
    let positions: Vec<usize> = sample.iter().map(|i| i.source.row).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "file order kept");
    assert_eq!(
        select_instances(&dataset, None, 0, Stratify::Category).len(),
        320
    );
}

#[test]
fn model_and_data_share_one_cache() {
    // deepconf-datasets cannot depend on deepconf-core, so it repeats the cache rule; a mismatch
    // would make `cargo xtask fetch-data` write where the loaders never look.
    assert_eq!(
        deepconf_datasets::default_data_dir(),
        deepconf_core::cache_dir().join("data")
    );
}

/// `--model guarded` is the embedded model plus the guarded adapter, and `run.json`'s model record
/// names the adapter, its checksum and its recipe; `--adapter` is refused for a served model.
#[test]
fn the_guarded_model_records_its_adapter() {
    let backend =
        deepconf_eval::build_backend(&args(&["--model", "guarded"])).unwrap_or_else(|e| {
            panic!("the guarded adapter is needed (run `cargo xtask fetch-model guarded`): {e}")
        });
    assert_eq!(backend.info.source, "SmolLM2-135M-Instruct.Q4_1.gguf");
    let adapter = backend.info.adapter.expect("an adapter record");
    assert_eq!(adapter.name, "SmolLM2-135M-Instruct-guarded-lora");
    assert_eq!(
        adapter.sha256.as_deref(),
        Some("c57de16f065783d89a0a64630f33d8a53b7023b1a0c637dcff1c77bf783676d2")
    );
    assert_eq!(adapter.applied, "merged q8_0");
    assert_eq!(adapter.recipe["recipe"]["train"]["rank"], 8);
    assert!(
        backend
            .info
            .name
            .ends_with("+ SmolLM2-135M-Instruct-guarded-lora")
    );

    let error = deepconf_eval::build_backend(&args(&[
        "--backend",
        "openai",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--model",
        "m",
        "--adapter",
        "some-adapter",
    ]))
    .unwrap_err()
    .to_string();
    assert!(error.contains("adapter"), "{error}");
    let error = deepconf_eval::build_backend(&args(&["--adapter", "/nonexistent/adapter"]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("adapter_config.json"), "{error}");
}
