//! A run directory written before the typed record flow is still read and analysed.

use std::path::Path;

use deepconf_analysis::{AnalysisOptions, analyze_dir, build_report};
use deepconf_records::read_run;

fn fixture() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/run-before-records"
    ))
}

#[test]
fn a_run_written_before_the_record_flow_is_read_and_analysed() {
    let records = read_run(fixture()).unwrap();
    assert_eq!(records.manifest.name, "harmbench");
    assert_eq!(records.instances.len(), 3);
    assert_eq!(records.n_traces(), 6);
    assert!(records.failures.is_empty());
    for (instance, traces) in records.instances.iter().zip(&records.traces) {
        assert_eq!(instance.gold_harmful, Some(true));
        assert_eq!(traces.len(), 2, "{}", instance.instance_id);
        for trace in traces {
            assert_eq!(trace.instance_id, instance.instance_id);
            assert!(trace.n_tokens > 0 && trace.n_tokens <= 6);
            assert_eq!(trace.token_confidences.len(), trace.n_tokens as usize);
            assert!(trace.refusal_label.is_some());
        }
    }

    // `analyze_dir` writes its report next to the records: analyse a copy.
    let copy = tempfile::tempdir().unwrap();
    for file in ["run.json", "predictions.jsonl", "traces/part-00000.parquet"] {
        let to = copy.path().join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(fixture().join(file), to).unwrap();
    }
    let analysis = analyze_dir(copy.path(), &AnalysisOptions::default()).unwrap();
    assert_eq!(analysis.run.instances, 3);
    assert_eq!(analysis.run.harmful, 3);
    // A fixed-N run: the replay runs on its stored traces.
    assert_eq!(analysis.replay.skipped, None);
    assert_eq!(analysis.replay.traces_per_instance, 2);
    let report = build_report(&analysis).to_markdown();
    assert!(report.contains("harmbench"), "{report}");
    assert!(copy.path().join("report.md").is_file());
}
