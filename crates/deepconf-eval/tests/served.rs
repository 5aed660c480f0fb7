//! Runs served by a real concurrent server (llama.cpp's `llama-server` with parallel slots) through
//! a proxy that injects the faults of a busy serving engine: 429 with `Retry-After`, 503, streams
//! cut mid-answer and slow first bytes.

use std::collections::BTreeSet;

use deepconf_core::policy::PolicyConfig;
use deepconf_datasets::Instance;
use deepconf_eval::{Experiment, RunReport};
use deepconf_records::{RunRecords, read_run};
use deepconf_testkit::proxy::{Fault, FaultProxy};
use deepconf_testkit::server::{LlamaServer, SERVED_MODEL};

use crate::common;

fn instances() -> Vec<Instance> {
    let mut instances = common::harmbench(4);
    instances.extend(common::benign());
    instances
}

fn served_experiment(
    base_url: &str,
    extra: &[&str],
    policy: PolicyConfig,
    instances: Vec<Instance>,
) -> (
    Experiment,
    deepconf_eval::Backend,
    deepconf_eval::Classifier,
) {
    let mut flags = vec![
        "--backend",
        "openai",
        "--base-url",
        base_url,
        "--model",
        SERVED_MODEL,
    ];
    flags.extend_from_slice(extra);
    let args = common::args(&flags);
    let backend = deepconf_eval::build_backend(&args).expect("openai backend");
    let classifier = common::patterns();
    let run = common::run_config(policy, 7);
    let experiment = common::experiment("served", run, instances, &backend, &classifier);
    let experiment = match args.concurrency {
        Some(n) => experiment.concurrency(n),
        None => experiment,
    };
    (experiment, backend, classifier)
}

fn run(
    experiment: &Experiment,
    backend: &mut deepconf_eval::Backend,
    classifier: &mut deepconf_eval::Classifier,
    dir: &std::path::Path,
) -> RunReport {
    experiment
        .run(backend.model.as_mut(), classifier.classifier.as_mut(), dir)
        .expect("the run finishes")
}

/// Trace indices per instance, each exactly once.
fn trace_sets(records: &RunRecords) -> Vec<(String, BTreeSet<u32>)> {
    records
        .instances
        .iter()
        .zip(&records.traces)
        .map(|(row, traces)| {
            let indices: BTreeSet<u32> = traces.iter().map(|t| t.trace_index).collect();
            assert_eq!(
                indices.len(),
                traces.len(),
                "a duplicated trace in {}",
                row.instance_id
            );
            assert_eq!(row.traces_used as usize, traces.len());
            for t in traces {
                assert_eq!(t.token_confidences.len(), t.n_tokens as usize);
            }
            (row.instance_id.clone(), indices)
        })
        .collect()
}

#[test]
fn faults_on_40_percent_of_requests_lose_and_duplicate_nothing() {
    let server = LlamaServer::start(4);
    let proxy = FaultProxy::start(&server.address, |n| match n % 10 {
        0 => Fault::TooManyRequests {
            retry_after_seconds: 1,
        },
        3 => Fault::Unavailable,
        5 => Fault::CutAfter { after_bytes: 2500 },
        8 => Fault::SlowFirstByte { millis: 1500 },
        _ => Fault::None,
    });
    let fixed = PolicyConfig::fixed(4);
    let (clean, mut backend, mut classifier) =
        served_experiment(&server.base_url, &[], fixed.clone(), instances());
    let clean_dir = tempfile::tempdir().unwrap();
    let clean_report = run(&clean, &mut backend, &mut classifier, clean_dir.path());
    assert!(clean_report.completed && clean_report.failed.is_empty());
    assert!(clean_report.concurrency > 1, "instances run concurrently");

    let (faulty, mut backend, mut classifier) =
        served_experiment(&proxy.base_url, &["--max-retries", "8"], fixed, instances());
    let faulty_dir = tempfile::tempdir().unwrap();
    let report = run(&faulty, &mut backend, &mut classifier, faulty_dir.path());
    assert!(report.completed, "{report:?}");
    assert!(
        report.failed.is_empty(),
        "retries cover every fault: {:?}",
        report.failed
    );
    let records = read_run(faulty_dir.path()).unwrap();
    assert_eq!(records.instances.len(), 7);
    // Per instance, the same traces as the clean run: none lost, none twice.
    assert_eq!(
        trace_sets(&records),
        trace_sets(&read_run(clean_dir.path()).unwrap())
    );
    for (id, indices) in trace_sets(&records) {
        assert_eq!(indices, BTreeSet::from([0, 1, 2, 3]), "{id}");
    }
    // Every kind of fault was met, and every failed attempt was made again from the start.
    let posts: Vec<_> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    let faults = posts.iter().filter(|r| r.fault != Fault::None).count();
    assert!(
        faults * 10 >= posts.len() * 3,
        "{faults} faults in {} requests",
        posts.len()
    );
    for kind in [
        "TooManyRequests",
        "Unavailable",
        "CutAfter",
        "SlowFirstByte",
    ] {
        assert!(
            posts
                .iter()
                .any(|r| format!("{:?}", r.fault).starts_with(kind)),
            "no {kind} fault"
        );
    }
    let retried = posts
        .iter()
        .filter(|r| !matches!(r.fault, Fault::None | Fault::SlowFirstByte { .. }))
        .count();
    assert_eq!(
        posts.len(),
        7 * 4 + retried,
        "one more request per failed attempt"
    );

    // The online policy (traces cut mid-stream by the policy, batches after the warmup) through
    // the same faults: every instance completes, no trace twice.
    let (online, mut backend, mut classifier) = served_experiment(
        &proxy.base_url,
        &["--max-retries", "8"],
        PolicyConfig::online(2, 4, 50.0),
        instances(),
    );
    let online_dir = tempfile::tempdir().unwrap();
    let report = run(&online, &mut backend, &mut classifier, online_dir.path());
    assert!(report.completed && report.failed.is_empty(), "{report:?}");
    let records = read_run(online_dir.path()).unwrap();
    assert_eq!(records.instances.len(), 7);
    for (id, indices) in trace_sets(&records) {
        assert!(
            indices.len() >= 2 && indices.iter().copied().eq(0..indices.len() as u32),
            "{id}"
        );
    }
}

#[test]
fn exhausted_retries_record_failed_instances_and_resume_completes_them() {
    let server = LlamaServer::start(2);
    // The first four requests fail: with one retry each, the first two instances give up.
    let proxy = FaultProxy::start(&server.address, |n| {
        if n < 4 {
            Fault::Unavailable
        } else {
            Fault::None
        }
    });
    let (experiment, mut backend, mut classifier) = served_experiment(
        &proxy.base_url,
        &["--max-retries", "1", "--concurrency", "1"],
        PolicyConfig::fixed(1),
        instances(),
    );
    let dir = tempfile::tempdir().unwrap();
    let report = run(&experiment, &mut backend, &mut classifier, dir.path());
    assert!(report.completed);
    assert_eq!(report.failed.len(), 2, "{:?}", report.failed);
    assert_eq!(report.newly_run, 5);
    let records = read_run(dir.path()).unwrap();
    assert_eq!(records.failures.len(), 2);
    assert!(
        records.failures[0].error.contains("503")
            && records.failures[0].error.contains("2 attempts"),
        "{}",
        records.failures[0].error
    );

    let (resumed, mut backend, mut classifier) = served_experiment(
        &server.base_url,
        &["--max-retries", "1", "--concurrency", "1"],
        PolicyConfig::fixed(1),
        instances(),
    );
    let second = run(
        &resumed.resume(true),
        &mut backend,
        &mut classifier,
        dir.path(),
    );
    assert_eq!((second.resumed, second.newly_run), (5, 2));
    let records = read_run(dir.path()).unwrap();
    assert_eq!(records.instances.len(), 7);
    assert!(records.failures.is_empty());
}
