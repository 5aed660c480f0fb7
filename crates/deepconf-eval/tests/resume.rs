//! Resumption: a run killed part-way and resumed equals an uninterrupted run; a resumed run with other
//! settings is refused, naming the field.

use std::io::Write;

use deepconf_core::policy::PolicyConfig;
use deepconf_eval::{Error, Experiment, ProgressMode};
use deepconf_records::{PREDICTIONS_FILE, TRACES_DIR, read_run, trace_parts};

use crate::common;

#[test]
fn resume_after_a_kill_equals_an_uninterrupted_run() {
    let mut backend = common::model();
    let mut classifier = common::patterns();
    let mut instances = common::harmbench(2);
    instances.extend(common::benign().into_iter().take(3));
    let run = common::run_config(PolicyConfig::online(2, 4, 50.0), 21);
    let config = common::config("resume", run, &backend, &classifier);
    let experiment = || {
        Experiment::new(config.clone(), instances.clone())
            .progress(ProgressMode::Silent)
            .instances_per_part(2)
    };

    let whole = tempfile::tempdir().unwrap();
    let full = experiment()
        .run(
            backend.model.as_mut(),
            classifier.classifier.as_mut(),
            whole.path(),
        )
        .unwrap();
    assert!(full.completed);

    // Killed after 3 instances: the first part (2 instances) is on disk, the third was still
    // buffered and is lost. A kill during the next flush also leaves a half-written temporary part
    // and a torn predictions line.
    let killed = tempfile::tempdir().unwrap();
    let first = experiment()
        .stop_after(3)
        .run(
            backend.model.as_mut(),
            classifier.classifier.as_mut(),
            killed.path(),
        )
        .unwrap();
    assert!(!first.completed);
    assert_eq!(first.newly_run, 3);
    assert_eq!(read_run(killed.path()).unwrap().instances.len(), 2);
    std::fs::write(
        killed
            .path()
            .join(TRACES_DIR)
            .join("part-00001.parquet.tmp"),
        b"PAR1 torn",
    )
    .unwrap();
    let mut predictions = std::fs::OpenOptions::new()
        .append(true)
        .open(killed.path().join(PREDICTIONS_FILE))
        .unwrap();
    predictions
        .write_all(br#"{"instance_id":"benign-capi"#)
        .unwrap();
    drop(predictions);

    // Without --resume the directory is refused.
    let refused = experiment()
        .run(
            backend.model.as_mut(),
            classifier.classifier.as_mut(),
            killed.path(),
        )
        .unwrap_err();
    assert!(matches!(refused, Error::RunExists { .. }), "{refused}");

    let second = experiment()
        .resume(true)
        .run(
            backend.model.as_mut(),
            classifier.classifier.as_mut(),
            killed.path(),
        )
        .unwrap();
    assert!(second.completed);
    assert_eq!((second.resumed, second.newly_run), (2, 3));

    let (a, b) = (
        read_run(whole.path()).unwrap(),
        read_run(killed.path()).unwrap(),
    );
    assert_eq!(a.instances, b.instances, "same predictions, same order");
    assert_eq!(
        a.traces, b.traces,
        "same trace texts, confidences and labels"
    );
    let lines = std::fs::read_to_string(killed.path().join(PREDICTIONS_FILE)).unwrap();
    assert_eq!(lines.lines().count(), 5, "no instance lost or duplicated");
    assert!(trace_parts(killed.path()).unwrap().len() >= 3);
}

#[test]
fn resume_with_other_settings_names_the_differing_field() {
    let mut backend = common::model();
    let mut classifier = common::patterns();
    let instances = common::benign();
    let run = common::run_config(PolicyConfig::fixed(2), 1);
    let dir = tempfile::tempdir().unwrap();
    common::experiment(
        "other",
        run.clone(),
        instances.clone(),
        &backend,
        &classifier,
    )
    .stop_after(1)
    .instances_per_part(1)
    .run(
        backend.model.as_mut(),
        classifier.classifier.as_mut(),
        dir.path(),
    )
    .unwrap();
    let mut changed = run.clone();
    changed.sampling.max_tokens = 30;
    let error = common::experiment("other", changed, instances.clone(), &backend, &classifier)
        .resume(true)
        .run(
            backend.model.as_mut(),
            classifier.classifier.as_mut(),
            dir.path(),
        )
        .unwrap_err();
    match &error {
        Error::ResumeMismatch {
            field,
            recorded,
            requested,
            ..
        } => {
            assert_eq!(field, "config.sampling.max_tokens");
            assert_eq!((recorded.as_str(), requested.as_str()), ("24", "30"));
        }
        other => panic!("expected a resume mismatch, got {other}"),
    }
    assert!(error.to_string().contains("run.json"), "{error}");
    // The refused resume wrote nothing.
    assert_eq!(read_run(dir.path()).unwrap().instances.len(), 1);
}
