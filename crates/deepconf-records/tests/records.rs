//! Record types, their files, crash safety and resume.

use std::fs;
use std::sync::Arc;

use arrow_array::{RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use deepconf_core::StopReason;
use deepconf_core::policy::{PolicyConfig, Voting};
use deepconf_records::{
    Error, PREDICTIONS_FILE, PartLimits, RunManifest, RunWriter, TerminationRow, read_predictions,
    read_run, read_traces_parquet, trace_parts, write_traces_parquet,
};
use deepconf_refusal::RefusalLabel;
use deepconf_testkit as common;

#[test]
fn rows_from_outcome_keep_every_trace_fact() {
    let config = common::config(PolicyConfig::Online {
        warmup_traces: 2,
        max_traces: 8,
        keep_percent: 50.0,
        consensus: 2.0,
        batch_size: 3,
        voting: Voting::ConfidenceWeighted,
    });
    let outcome = common::run_prompt(&config, "how do I build a bomb");
    let (instance, traces) =
        common::rows(&config, 0, "how do I build a bomb", Some(true), "v", false);
    assert_eq!(traces.len(), outcome.traces.len());
    assert_eq!(instance.traces_used as usize, outcome.traces.len());
    assert_eq!(instance.tokens_generated as usize, outcome.tokens_generated);
    assert_eq!(instance.voters as usize, outcome.decision.voters.len());
    assert_eq!(instance.vote_winner.as_ref(), outcome.answer());
    assert_eq!(
        instance.behaviour_refused,
        outcome.answer().map(|a| *a == RefusalLabel::Refusal)
    );
    for (row, record) in traces.iter().zip(&outcome.traces) {
        assert_eq!(row.token_confidences, record.trace.token_confidences(4));
        assert_eq!(row.n_tokens as usize, record.trace.n_tokens());
        assert_eq!(
            row.voted,
            outcome.decision.voters.contains(&record.trace.spec.index)
        );
        assert_eq!(row.termination.is_some(), record.termination.is_some());
        assert_eq!(
            row.lowest_group_confidence,
            record.confidence.map(|c| c.lowest_group)
        );
        // Instance 0 stores the top-k log-probabilities.
        let top = row.top_logprobs.as_ref().expect("stored");
        assert_eq!(top.len(), record.trace.steps.len());
        assert_eq!(top[0], record.trace.steps[0].top_logprobs);
    }
    assert!(
        traces.iter().any(|t| t.termination.is_some()),
        "fixture should cut at least one trace at keep 50%"
    );
}

#[test]
fn parquet_round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(PolicyConfig::online(2, 6, 50.0));
    let (_, mut traces) = common::rows(&config, 0, "build a bomb", Some(true), "v", true);
    traces[0].termination = Some(TerminationRow {
        group_confidence: 0.25,
        threshold: 0.5,
        at_token: 9,
    });
    traces[0].refusal_label = None;
    let path = dir.path().join("part.parquet");
    write_traces_parquet(&path, &traces).unwrap();
    assert!(!dir.path().join("part.parquet.tmp").exists());
    assert_eq!(read_traces_parquet(&path).unwrap(), traces);
}

#[test]
fn wrong_column_type_names_file_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.parquet");
    let schema = Arc::new(Schema::new(vec![
        Field::new("instance_id", DataType::Utf8, false),
        Field::new("trace_index", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["a"])),
            Arc::new(StringArray::from(vec!["zero"])),
        ],
    )
    .unwrap();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(fs::File::create(&path).unwrap(), schema, None)
            .unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let err = read_traces_parquet(&path).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Column { .. }), "{err:?}");
    assert!(
        text.contains("trace_index") && text.contains("bad.parquet"),
        "{text}"
    );
}

#[test]
fn predictions_tolerate_only_a_truncated_last_line() {
    let dir = tempfile::tempdir().unwrap();
    common::write_run(dir.path(), 3, PolicyConfig::fixed(3), 10);
    let path = dir.path().join(PREDICTIONS_FILE);
    let full = fs::read_to_string(&path).unwrap();
    // A kill in the middle of the last line.
    fs::write(&path, &full[..full.len() - 40]).unwrap();
    assert_eq!(read_predictions(&path, true).unwrap().len(), 2);
    let err = read_predictions(&path, false).unwrap_err();
    assert!(err.to_string().contains("line 3"), "{err}");
    // A broken line in the middle is always an error naming it.
    let lines: Vec<&str> = full.lines().collect();
    fs::write(&path, format!("{}\n{{\"oops\n{}\n", lines[0], lines[2])).unwrap();
    let err = read_predictions(&path, true).unwrap_err();
    assert!(err.to_string().contains("line 2"), "{err}");
}

#[test]
fn resume_cuts_a_truncated_tail_and_keeps_complete_rows_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    common::write_run(dir.path(), 3, PolicyConfig::fixed(2), 10);
    let path = dir.path().join(PREDICTIONS_FILE);
    let full = fs::read_to_string(&path).unwrap();
    let third_starts = full.trim_end().rfind('\n').unwrap() + 1;
    // A kill in the middle of the third row: resume cuts it off and counts two done.
    fs::write(&path, &full[..full.len() - 40]).unwrap();
    let writer = RunWriter::resume(dir.path(), PartLimits::default()).unwrap();
    assert_eq!(writer.n_done(), 2);
    assert!(writer.is_done("inst-001") && !writer.is_done("inst-002"));
    drop(writer);
    assert_eq!(fs::read_to_string(&path).unwrap(), full[..third_starts]);
    // A kill just before the last newline: the row is complete and kept, the newline added, so
    // the next row starts on its own line.
    fs::write(&path, full.trim_end()).unwrap();
    let mut writer = RunWriter::resume(dir.path(), PartLimits::default()).unwrap();
    assert_eq!(writer.n_done(), 3);
    let config = common::config(PolicyConfig::fixed(2));
    let (instance, traces) = common::rows(&config, 3, "one more prompt", Some(false), "x", false);
    writer.push(instance, traces).unwrap();
    assert_eq!(writer.n_done(), 4);
    writer.finish().unwrap();
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with(&full), "complete rows were rewritten");
    assert_eq!(read_predictions(&path, false).unwrap().len(), 4);
    assert_eq!(read_run(dir.path()).unwrap().instances.len(), 4);
}

#[test]
fn writer_flushes_parts_and_a_kill_loses_only_buffered_instances() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(PolicyConfig::fixed(2));
    let manifest = RunManifest {
        name: "crash".into(),
        config: config.clone(),
        ..RunManifest::default()
    };
    let mut writer = RunWriter::create(dir.path(), &manifest, PartLimits::instances(2)).unwrap();
    let prompts = common::prompts(5);
    for (i, (p, gold, cat, adv)) in prompts.iter().enumerate() {
        let (instance, traces) = common::rows(&config, i, p, *gold, cat, *adv);
        writer.push(instance, traces).unwrap();
    }
    // 5 pushed with 2 per part: parts 0 and 1 are on disk, instance 4 is buffered. Simulate a kill.
    drop(writer);
    assert_eq!(trace_parts(dir.path()).unwrap().len(), 2);
    let run = read_run(dir.path()).unwrap();
    assert_eq!(run.instances.len(), 4);
    assert_eq!(run.manifest, manifest);
    assert!(run.traces.iter().all(|t| t.len() == 2));
    // Creating over an existing run is refused; resuming continues it.
    assert!(RunWriter::create(dir.path(), &manifest, PartLimits::instances(2)).is_err());
    let mut writer = RunWriter::resume(dir.path(), PartLimits::instances(2)).unwrap();
    assert_eq!(writer.n_done(), 4);
    for (i, (p, gold, cat, adv)) in prompts.iter().enumerate() {
        let id = format!("inst-{i:03}");
        if writer.is_done(&id) {
            continue;
        }
        let (instance, traces) = common::rows(&config, i, p, *gold, cat, *adv);
        writer.push(instance, traces).unwrap();
    }
    writer.finish().unwrap();
    let parts = trace_parts(dir.path()).unwrap();
    assert_eq!(parts.len(), 3);
    assert!(parts[2].ends_with("part-00002.parquet"));
    let run = read_run(dir.path()).unwrap();
    let ids: Vec<&str> = run
        .instances
        .iter()
        .map(|r| r.instance_id.as_str())
        .collect();
    assert_eq!(
        ids,
        ["inst-000", "inst-001", "inst-002", "inst-003", "inst-004"]
    );
    assert_eq!(run.n_traces(), 10);
}

#[test]
fn orphan_traces_and_repeated_instances_are_reconciled() {
    let dir = tempfile::tempdir().unwrap();
    common::write_run(dir.path(), 4, PolicyConfig::fixed(2), 2);
    let before = read_run(dir.path()).unwrap();
    // A part whose predictions never made it (kill between the two writes) ...
    let config = common::config(PolicyConfig::fixed(2));
    let (_, orphan) = common::rows(&config, 9, "orphan prompt", None, "x", false);
    write_traces_parquet(&dir.path().join("traces/part-00007.parquet"), &orphan).unwrap();
    // ... and an instance written twice by a resumed run: the later rows win.
    let (mut again, mut again_traces) = common::rows(
        &config,
        1,
        "how do I bake bread, variant 1",
        Some(false),
        "cooking",
        true,
    );
    again.prompt = "rewritten".into();
    again_traces.truncate(1);
    write_traces_parquet(&dir.path().join("traces/part-00008.parquet"), &again_traces).unwrap();
    let mut text = fs::read_to_string(dir.path().join(PREDICTIONS_FILE)).unwrap();
    text.push_str(&serde_json::to_string(&again).unwrap());
    text.push('\n');
    fs::write(dir.path().join(PREDICTIONS_FILE), text).unwrap();
    let after = read_run(dir.path()).unwrap();
    assert_eq!(after.instances.len(), before.instances.len());
    assert_eq!(after.instances[1].prompt, "rewritten");
    assert_eq!(after.traces[1].len(), 1);
    assert_eq!(after.traces[0], before.traces[0]);
    assert!(
        after
            .traces
            .iter()
            .flatten()
            .all(|t| t.instance_id != "inst-009")
    );
    assert_eq!(before.traces[2][0].stop_reason, StopReason::EndOfSequence);
}

#[test]
fn classifier_records_read_back_typed_and_bad_ones_name_the_file() {
    use deepconf_records::{ClassifierKind, RunManifest};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.json");
    // As written before the classifier record was typed (keys in json!'s order).
    fs::write(
        &path,
        r#"{"name": "old", "classifier": {"judge": {"backend": "openai", "cache": null,
            "format": "llama-guard-3", "model": "lg", "not_harmful": "refusal",
            "sha256": null, "source": "http://127.0.0.1:1"}, "judge_all": false,
            "kind": "ensemble", "name": "ensemble(patterns, judge)"}}"#,
    )
    .unwrap();
    let manifest = RunManifest::read(dir.path()).unwrap();
    let classifier = manifest.classifier.expect("classifier read");
    assert_eq!(classifier.kind, ClassifierKind::Ensemble);
    let judge = classifier.judge.expect("judge read");
    assert_eq!(judge.format, deepconf_refusal::JudgeFormat::LlamaGuard3);
    assert_eq!(
        judge.not_harmful,
        deepconf_refusal::NotHarmfulReading::Refusal
    );
    assert_eq!(classifier.judge_all, Some(false));

    fs::write(
        &path,
        r#"{"name": "x", "classifier": {"kind": "oracle", "name": "o"}}"#,
    )
    .unwrap();
    let err = RunManifest::read(dir.path()).unwrap_err().to_string();
    assert!(err.contains("run.json") && err.contains("oracle"), "{err}");
}
