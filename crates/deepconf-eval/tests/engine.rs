//! The engine: many instances in flight give the same records as one at a time (real model), and an
//! instance whose backend keeps failing (or panics) is recorded as failed while the run goes on;
//! `--resume` completes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use deepconf_core::policy::PolicyConfig;
use deepconf_core::{GenerationRequest, LogprobModel, TokenObserver, Trace, TraceSpec};
use deepconf_eval::{Experiment, ExperimentConfig, ProgressMode};
use deepconf_records::{FAILURES_FILE, read_failures, read_run};
use deepconf_testkit::{FirstWord, SeededModel};

use crate::common;

#[test]
fn candle_records_are_identical_at_concurrency_1_and_8() {
    let mut backend = common::model();
    let mut classifier = common::patterns();
    let mut instances = common::harmbench(3);
    instances.extend(common::benign());
    // No consensus stop: every instance samples past its warmup, in batches cut by the threshold.
    let policy = PolicyConfig::Online {
        warmup_traces: 2,
        max_traces: 6,
        keep_percent: 50.0,
        consensus: 2.0,
        batch_size: 2,
        voting: Default::default(),
    };
    let mut run = common::run_config(policy, 17);
    run.confidence.window = 8;
    let experiment = common::experiment("concurrency", run, instances, &backend, &classifier);
    let (one, eight) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sequential = experiment
        .clone()
        .concurrency(1)
        .run(
            backend.model.as_mut(),
            classifier.classifier.as_mut(),
            one.path(),
        )
        .unwrap();
    let concurrent = experiment
        .concurrency(8)
        .run(
            backend.model.as_mut(),
            classifier.classifier.as_mut(),
            eight.path(),
        )
        .unwrap();
    assert_eq!(sequential.concurrency, 1);
    // Eight asked, six instances: all of them in flight, sharing candle's continuous batch.
    assert_eq!(concurrent.concurrency, 6);
    assert_eq!(sequential.tokens_generated, concurrent.tokens_generated);
    let (a, b) = (
        read_run(one.path()).unwrap(),
        read_run(eight.path()).unwrap(),
    );
    assert_eq!(a.instances, b.instances);
    assert_eq!(a.traces, b.traces);
    assert_eq!(a.n_traces(), 36, "six traces per instance");
    assert!(
        a.traces.iter().flatten().any(|t| t.termination.is_some()),
        "the threshold cut some trace"
    );
    assert_eq!(b.manifest.concurrency, Some(6));
}

/// The seeded model, failing every call for prompts that contain "flaky" until healed, and
/// counting the calls it fails.
#[derive(Clone)]
struct Flaky {
    healed: Arc<AtomicBool>,
    failures: Arc<AtomicUsize>,
}

impl LogprobModel for Flaky {
    fn generate(
        &mut self,
        request: &GenerationRequest,
        spec: TraceSpec,
        observer: &mut dyn TokenObserver,
    ) -> deepconf_core::Result<Trace> {
        if request.prompt.user_text().contains("flaky") && !self.healed.load(Ordering::Relaxed) {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return Err(deepconf_core::Error::backend(
                "flaky",
                "connection refused after 6 attempts",
            ));
        }
        SeededModel.generate(request, spec, observer)
    }

    fn concurrent_handle(&self) -> Option<Box<dyn LogprobModel + Send>> {
        Some(Box::new(self.clone()))
    }
}

#[test]
fn failing_instances_are_recorded_and_resume_completes_them() {
    let mut instances = common::synthetic(12);
    for i in [3, 7] {
        instances[i].messages[0].content.push_str(" (flaky)");
    }
    let mut run = deepconf_testkit::config(PolicyConfig::online(2, 6, 50.0));
    run.sampling.seed = 4;
    let experiment = Experiment::new(ExperimentConfig::new("flaky", run), instances)
        .progress(ProgressMode::Silent)
        .concurrency(4)
        .instances_per_part(5);
    let mut model = Flaky {
        healed: Arc::new(AtomicBool::new(false)),
        failures: Arc::new(AtomicUsize::new(0)),
    };
    let dir = tempfile::tempdir().unwrap();
    let first = experiment
        .run(&mut model, &mut FirstWord, dir.path())
        .unwrap();
    assert!(first.completed, "the run goes on past failing instances");
    assert_eq!(first.newly_run, 10);
    let mut failed = first.failed.clone();
    failed.sort();
    assert_eq!(failed, ["synthetic-03", "synthetic-07"]);
    let failures = read_failures(&dir.path().join(FAILURES_FILE), false).unwrap();
    assert_eq!(failures.len(), 2);
    assert!(
        failures[0].error.contains("connection refused"),
        "{failures:?}"
    );
    let records = read_run(dir.path()).unwrap();
    assert_eq!(records.instances.len(), 10);
    assert_eq!(records.failures.len(), 2);
    // The report lists them.
    let (analysis, files) = deepconf_eval::write_report(dir.path()).unwrap();
    assert_eq!(analysis.run.failed.len(), 2);
    let markdown = std::fs::read_to_string(files.markdown).unwrap();
    assert!(markdown.contains("synthetic-03"), "{markdown}");

    // Once the backend works again, resuming runs exactly the failed instances.
    model.healed.store(true, Ordering::Relaxed);
    let second = experiment
        .resume(true)
        .run(&mut model, &mut FirstWord, dir.path())
        .unwrap();
    assert_eq!((second.resumed, second.newly_run), (10, 2));
    assert!(second.failed.is_empty());
    let records = read_run(dir.path()).unwrap();
    assert_eq!(records.instances.len(), 12);
    assert!(records.failures.is_empty(), "a later success supersedes");
    let ids: Vec<&str> = records
        .instances
        .iter()
        .map(|r| r.instance_id.as_str())
        .collect();
    assert!(ids.contains(&"synthetic-03") && ids.contains(&"synthetic-07"));
}

#[test]
fn a_backend_that_fails_everything_stops_the_run_with_its_error() {
    let mut instances = common::synthetic(20);
    for instance in &mut instances {
        instance.messages[0].content.push_str(" (flaky)");
    }
    let run = deepconf_testkit::config(PolicyConfig::fixed(2));
    let experiment = Experiment::new(ExperimentConfig::new("down", run), instances)
        .progress(ProgressMode::Silent)
        .concurrency(2);
    let mut model = Flaky {
        healed: Arc::new(AtomicBool::new(false)),
        failures: Arc::new(AtomicUsize::new(0)),
    };
    let dir = tempfile::tempdir().unwrap();
    let err = experiment
        .run(&mut model, &mut FirstWord, dir.path())
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("all failed") && text.contains("connection refused"),
        "{text}"
    );
    // It stopped early instead of trying all 20.
    assert!(model.failures.load(Ordering::Relaxed) < 20);
}

/// The seeded model, panicking mid-trace for prompts that contain "(panics)".
#[derive(Clone, Copy)]
struct Panicky;

impl LogprobModel for Panicky {
    fn generate(
        &mut self,
        request: &GenerationRequest,
        spec: TraceSpec,
        observer: &mut dyn TokenObserver,
    ) -> deepconf_core::Result<Trace> {
        if request.prompt.user_text().contains("(panics)") && spec.index == 1 {
            panic!("kernel assertion failed in trace {}", spec.index);
        }
        SeededModel.generate(request, spec, observer)
    }

    fn concurrent_handle(&self) -> Option<Box<dyn LogprobModel + Send>> {
        Some(Box::new(*self))
    }
}

#[test]
fn a_panicking_backend_fails_its_instance_and_the_run_goes_on() {
    let mut instances = common::synthetic(8);
    instances[5].messages[0].content.push_str(" (panics)");
    let run = deepconf_testkit::config(PolicyConfig::fixed(3));
    let experiment = Experiment::new(ExperimentConfig::new("panics", run), instances)
        .progress(ProgressMode::Silent)
        .concurrency(3);
    let dir = tempfile::tempdir().unwrap();
    let report = experiment
        .run(&mut Panicky, &mut FirstWord, dir.path())
        .unwrap();
    assert!(report.completed, "{report:?}");
    assert_eq!(report.failed, ["synthetic-05"]);
    assert_eq!(report.newly_run, 7);
    let failures = read_failures(&dir.path().join(FAILURES_FILE), false).unwrap();
    assert!(
        failures[0]
            .error
            .contains("panicked: kernel assertion failed in trace 1"),
        "{failures:?}"
    );
}

/// The seeded model, taking a while per trace.
#[derive(Clone, Copy)]
struct Slow;

impl LogprobModel for Slow {
    fn generate(
        &mut self,
        request: &GenerationRequest,
        spec: TraceSpec,
        observer: &mut dyn TokenObserver,
    ) -> deepconf_core::Result<Trace> {
        std::thread::sleep(std::time::Duration::from_millis(15));
        SeededModel.generate(request, spec, observer)
    }

    fn concurrent_handle(&self) -> Option<Box<dyn LogprobModel + Send>> {
        Some(Box::new(*self))
    }
}

#[test]
fn an_interrupt_writes_what_finished_and_resume_completes_the_rest() {
    let instances = common::synthetic(60);
    let run = deepconf_testkit::config(PolicyConfig::fixed(2));
    let flag = Arc::new(AtomicBool::new(false));
    let experiment = Experiment::new(ExperimentConfig::new("interrupt", run), instances)
        .progress(ProgressMode::Silent)
        .concurrency(4);
    let dir = tempfile::tempdir().unwrap();
    let raiser = {
        let flag = Arc::clone(&flag);
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(250));
            flag.store(true, Ordering::SeqCst);
        })
    };
    let first = experiment
        .clone()
        .interrupt_flag(Arc::clone(&flag))
        .run(&mut Slow, &mut FirstWord, dir.path())
        .unwrap();
    raiser.join().unwrap();
    assert!(first.interrupted && !first.completed, "{first:?}");
    assert!(first.newly_run > 0 && first.newly_run < 60, "{first:?}");
    // Everything reported as run is on disk, whole; no temporary file is left.
    let records = read_run(dir.path()).unwrap();
    assert_eq!(records.instances.len(), first.newly_run);
    assert!(records.traces.iter().all(|t| t.len() == 2));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("traces"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let second = experiment
        .resume(true)
        .run(&mut Slow, &mut FirstWord, dir.path())
        .unwrap();
    assert!(second.completed);
    assert_eq!(second.resumed + second.newly_run, 60);
    let records = read_run(dir.path()).unwrap();
    assert_eq!(records.instances.len(), 60);
    let mut ids: Vec<&str> = records
        .instances
        .iter()
        .map(|r| r.instance_id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 60, "no instance twice");
}
