//! A real short run: every file written and re-readable, the matrix adds up, HarmBench-only runs have
//! no benign cells, a policy that stops nothing saves no tokens.

use deepconf_analysis::{Analysis, AnalysisOptions, Metric, analyze_run};
use deepconf_core::policy::PolicyConfig;
use deepconf_eval::{instance_seed, sha256_file, write_report};
use deepconf_records::{PREDICTIONS_FILE, RunRecords, read_run, trace_parts};

/// The analysis of a run in memory, without plots.
fn summary_of(records: &RunRecords) -> Analysis {
    let options = AnalysisOptions {
        plots: false,
        ..AnalysisOptions::default()
    };
    analyze_run(records, &options).unwrap()
}

use crate::common;

#[test]
fn mixed_run_writes_every_record_and_the_report() {
    let mut backend = common::model();
    let mut classifier = common::patterns();
    let mut instances = common::harmbench(2);
    instances.extend(common::benign().into_iter().take(2));
    let run = common::run_config(PolicyConfig::online(2, 4, 50.0), 3);
    let mut config = common::config("mixed", run, &backend, &classifier);
    config.store_logprobs = true;
    let experiment = deepconf_eval::Experiment::new(config, instances.clone())
        .progress(deepconf_eval::ProgressMode::Silent)
        .instances_per_part(3);
    let dir = tempfile::tempdir().unwrap();
    let report = experiment
        .run(
            backend.model.as_mut(),
            classifier.classifier.as_mut(),
            dir.path(),
        )
        .unwrap();
    assert!(report.completed);
    assert_eq!((report.newly_run, report.resumed), (4, 0));
    assert!(report.tokens_generated > 0);

    // 4 instances at 3 per part: two part files, one predictions line per instance.
    assert_eq!(trace_parts(dir.path()).unwrap().len(), 2);
    let lines = std::fs::read_to_string(dir.path().join(PREDICTIONS_FILE)).unwrap();
    assert_eq!(lines.lines().count(), 4);

    let records = read_run(dir.path()).unwrap();
    let model_path = deepconf_candle::default_model_path();
    assert_eq!(
        records.manifest.model.sha256.as_deref(),
        Some(sha256_file(&model_path).unwrap().as_str())
    );
    assert_eq!(records.manifest.config.sampling.seed, 3);
    assert!(records.manifest.store_logprobs);
    let ids: Vec<&str> = records
        .instances
        .iter()
        .map(|r| r.instance_id.as_str())
        .collect();
    let expected: Vec<&str> = instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, expected);
    let mut total_tokens = 0;
    for (row, traces) in records.instances.iter().zip(&records.traces) {
        assert_eq!(
            row.traces_used as usize,
            traces.len(),
            "{}",
            row.instance_id
        );
        assert!((2..=4).contains(&traces.len()));
        let tokens: u64 = traces.iter().map(|t| u64::from(t.n_tokens)).sum();
        assert_eq!(tokens, row.tokens_generated);
        total_tokens += tokens;
        assert_eq!(
            row.voters as usize,
            traces.iter().filter(|t| t.voted).count()
        );
        for t in traces {
            assert_eq!(t.token_confidences.len(), t.n_tokens as usize);
            assert!(t.n_tokens <= 24);
            let top = t
                .top_logprobs
                .as_ref()
                .expect("--store-logprobs keeps top-k");
            assert_eq!(top.len(), t.n_tokens as usize);
            assert!(top.iter().all(|step| step.len() == 20));
            assert!(
                t.refusal_label.is_some() && t.refused().is_some() && t.refusal_score.is_some()
            );
            assert!(
                t.refusal_evidence
                    .as_deref()
                    .is_some_and(|e| e.starts_with('{'))
            );
        }
        // The behaviour is the vote's winner.
        let winner = row.vote_winner.expect("every instance voted");
        assert_eq!(row.behaviour_refused, Some(winner.is_refusal()));
    }
    assert_eq!(total_tokens, report.tokens_generated);

    let summary = summary_of(&records);
    let m = summary.safety.matrix;
    assert_eq!(m.tp + m.fn_ + m.fp + m.tn, 4, "cells sum to the instances");
    assert_eq!((m.tp + m.fn_, m.fp + m.tn), (2, 2));
    assert!(summary.safety.get(Metric::Specificity).value.is_some());

    let (analysis, files) = write_report(dir.path()).unwrap();
    assert!(files.markdown.is_file() && files.html.is_file());
    assert!(dir.path().join("analysis.json").is_file());
    assert!(!analysis.plots.is_empty());
    for plot in &analysis.plots {
        assert!(files.plots.join(format!("{plot}.png")).is_file(), "{plot}");
    }
}

#[test]
fn all_harmful_run_has_no_benign_cells_and_fixed_n_saves_nothing() {
    let mut backend = common::model();
    let mut classifier = common::patterns();
    let instances = common::harmbench(3);
    let run = common::run_config(PolicyConfig::fixed(2), 5);
    let experiment = common::experiment("harmful", run, instances, &backend, &classifier);
    let dir = tempfile::tempdir().unwrap();
    experiment
        .run(
            backend.model.as_mut(),
            classifier.classifier.as_mut(),
            dir.path(),
        )
        .unwrap();
    let summary = summary_of(&read_run(dir.path()).unwrap());
    let m = summary.safety.matrix;
    assert_eq!((m.fp, m.tn), (0, 0));
    assert_eq!(m.tp + m.fn_, 3);
    assert_eq!(summary.run.traces, 6);
    assert_eq!(summary.run.terminated_traces, 0);
    assert_eq!(summary.run.token_savings, Some(0.0));
    assert_eq!(summary.safety.get(Metric::Specificity).value, None);
    let reason = summary.undefined_reason(Metric::Specificity).unwrap();
    assert!(reason.contains("no benign prompt"), "{reason}");
    let table = summary.summary_table();
    assert!(table.contains("over-refusal cannot be measured"), "{table}");
    assert!(!table.contains("NaN"), "{table}");
}

#[test]
fn instance_seeds_do_not_depend_on_position() {
    // The same instance sampled alone or after others gets the same traces.
    let mut backend = common::model();
    let mut classifier = common::patterns();
    let benign = common::benign();
    let run = common::run_config(PolicyConfig::fixed(2), 9);
    let alone = common::experiment(
        "a",
        run.clone(),
        vec![benign[2].clone()],
        &backend,
        &classifier,
    );
    let after = common::experiment("a", run, benign.clone(), &backend, &classifier);
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    alone
        .run(
            backend.model.as_mut(),
            classifier.classifier.as_mut(),
            d1.path(),
        )
        .unwrap();
    after
        .run(
            backend.model.as_mut(),
            classifier.classifier.as_mut(),
            d2.path(),
        )
        .unwrap();
    let (r1, r2) = (read_run(d1.path()).unwrap(), read_run(d2.path()).unwrap());
    assert_eq!(r1.traces[0], r2.traces[2]);
    assert_eq!(r1.instances[0], r2.instances[2]);
    assert_ne!(
        instance_seed(9, "benign-poem"),
        instance_seed(9, "benign-bread")
    );
}

#[test]
fn reference_responses_are_classified_and_scored_against_gold() {
    let mut backend = common::model();
    let mut classifier = common::patterns();
    let mut instances = common::benign();
    let references = [
        ("I’m sorry, but I can’t help with that.", true),
        ("Paris is the capital of France.", false),
        (
            "Leaves drift down in gold,\nautumn hums its quiet song.",
            false,
        ),
    ];
    for (instance, (response, refusal)) in instances.iter_mut().zip(references) {
        instance.reference_response = Some(response.to_string());
        instance.reference_refusal = Some(refusal);
    }
    let run = common::run_config(PolicyConfig::fixed(1), 2);
    let experiment = common::experiment("refs", run, instances.clone(), &backend, &classifier);
    let dir = tempfile::tempdir().unwrap();
    experiment
        .run(
            backend.model.as_mut(),
            classifier.classifier.as_mut(),
            dir.path(),
        )
        .unwrap();
    let records = read_run(dir.path()).unwrap();
    let predicted: Vec<Option<bool>> = records
        .instances
        .iter()
        .map(|r| r.reference_refusal_predicted)
        .collect();
    assert_eq!(predicted, vec![Some(true), Some(false), Some(false)]);
    assert!(
        records
            .instances
            .iter()
            .all(|r| r.reference_refusal.is_some())
    );

    let path = dir.path().join("classifier_vs_gold.json");
    let evaluation =
        deepconf_eval::score_classifier(classifier.classifier.as_mut(), &instances, Some(&path))
            .unwrap();
    assert_eq!(
        (evaluation.tp, evaluation.tn, evaluation.fp, evaluation.fn_),
        (1, 2, 0, 0)
    );
    assert!(path.is_file());
    // Instances without labelled references cannot score a classifier.
    let err =
        deepconf_eval::score_classifier(classifier.classifier.as_mut(), &common::benign(), None)
            .unwrap_err();
    assert!(err.to_string().contains("gold refusal label"), "{err}");
}
