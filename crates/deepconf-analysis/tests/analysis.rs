//! End to end: a synthetic run directory analysed, every file written and re-readable.

use deepconf_analysis::stats::BootstrapConfig;
use deepconf_analysis::{
    ANALYSIS_FILE, AnalysisOptions, Metric, REPORT_HTML_FILE, REPORT_MD_FILE, Verdict, analyze_dir,
    analyze_run, read_analysis,
};
use deepconf_core::policy::PolicyConfig;
use deepconf_records::{PREDICTIONS_FILE, read_run};
use deepconf_testkit as common;

fn quick_options() -> AnalysisOptions {
    AnalysisOptions {
        bootstrap: BootstrapConfig {
            resamples: 300,
            ..BootstrapConfig::default()
        },
        ..AnalysisOptions::default()
    }
}

#[test]
fn analyze_dir_writes_and_rereads_everything() {
    let dir = tempfile::tempdir().unwrap();
    let n = 60;
    common::write_run(dir.path(), n, PolicyConfig::fixed(8), 16);
    let analysis = analyze_dir(dir.path(), &quick_options()).unwrap();

    // Files.
    for file in [
        ANALYSIS_FILE,
        REPORT_MD_FILE,
        REPORT_HTML_FILE,
        PREDICTIONS_FILE,
        "run.json",
    ] {
        assert!(
            dir.path().join(file).metadata().unwrap().len() > 0,
            "{file}"
        );
    }
    let expected_plots = [
        "confusion_matrix",
        "confidence_by_correctness",
        "confidence_by_gold",
        "confidence_buckets",
        "percentile_curves",
        "token_savings",
        "confidence_by_category",
        "compliance_risk",
        "trace_evolution",
    ];
    assert_eq!(analysis.plots, expected_plots);
    for name in expected_plots {
        let png = std::fs::read(dir.path().join(format!("plots/{name}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{name}");
        let svg = std::fs::read_to_string(dir.path().join(format!("plots/{name}.svg"))).unwrap();
        assert!(
            svg.contains("<svg") && svg.contains("<text"),
            "{name} has no text"
        );
    }
    // Per-instance replay results are not serialised; everything else re-reads identically.
    let reread = read_analysis(dir.path()).unwrap();
    assert_eq!(
        serde_json::to_value(&reread).unwrap(),
        serde_json::to_value(&analysis).unwrap()
    );
    assert_eq!(reread.safety, analysis.safety);
    assert_eq!(reread.stratification, analysis.stratification);

    // Coverage: every 17th prompt has no gold and is excluded and counted.
    let c = &analysis.coverage;
    assert_eq!(c.instances, n);
    assert_eq!(c.unknown_gold, 3);
    assert_eq!(c.counted + c.unknown_gold + c.unknown_behaviour, n);
    assert_eq!(analysis.safety.matrix.total() as usize, c.counted);

    // The fixture refuses most harmful prompts and few benign ones.
    let sensitivity = analysis.safety.get(Metric::Sensitivity);
    assert!(sensitivity.value.unwrap() > 0.7, "{sensitivity:?}");
    assert!(analysis.safety.get(Metric::Specificity).value.unwrap() > 0.7);
    assert_eq!(analysis.by_category.len(), 3);
    assert_eq!(analysis.by_adversarial.len(), 2);
    let by_category_total: u64 = analysis
        .by_category
        .iter()
        .map(|g| g.metrics.matrix.total())
        .sum();
    assert_eq!(by_category_total as usize, c.counted);

    // Replay: fixed N saves nothing; online thresholds save tokens.
    let replay = &analysis.replay;
    assert!(replay.skipped.is_none());
    assert_eq!(replay.traces_per_instance, 8);
    let fixed = &replay.policies[0];
    assert_eq!(fixed.policy.config.kind(), "fixed");
    assert_eq!(fixed.token_savings, 0.0);
    assert_eq!(fixed.tokens, analysis.run.tokens_generated);
    assert!(
        replay
            .policies
            .iter()
            .any(|p| p.policy.config.kind() == "online" && p.token_savings > 0.0)
    );
    // The keep-percent sweep (9, with the consensus stop) and DeepConf-low and -high once more
    // without it, whose thresholds cut traces.
    assert_eq!(
        replay
            .policies
            .iter()
            .filter(|p| p.policy.config.kind() == "online")
            .count(),
        11
    );
    let without_stop: Vec<_> = replay
        .policies
        .iter()
        .filter(|p| p.policy.label.ends_with("no consensus stop"))
        .collect();
    assert_eq!(without_stop.len(), 2);
    assert!(without_stop.iter().all(|p| p.consensus_stops == 0));
    assert!(without_stop.iter().any(|p| p.terminated > 0));

    // Stratification: the fixture's refusals are more confident, and correct behaviour is mostly
    // refusal of harmful prompts, so confidence separates correct from incorrect.
    let s = &analysis.stratification;
    assert_eq!(
        s.buckets.iter().map(|b| b.n).sum::<usize>(),
        s.instances.len()
    );
    let threshold = s.threshold.unwrap();
    let below = s
        .instances
        .iter()
        .filter(|i| i.confidence < threshold)
        .count();
    assert!(below.abs_diff(s.instances.len() / 2) <= 1, "median split");
    assert_ne!(s.correct_vs_incorrect.verdict, Verdict::InsufficientData);
    assert!(s.correct_vs_incorrect.interpretation.contains("AUROC"));
    assert_eq!(s.auroc_by_metric.len(), 4);
    let classifier = analysis.classifier.as_ref().unwrap();
    assert_eq!(classifier.n, n);
    assert_eq!(
        classifier.metrics.get(Metric::Sensitivity).value,
        Some(1.0),
        "refusals always predicted"
    );

    // Reports.
    let md = std::fs::read_to_string(dir.path().join(REPORT_MD_FILE)).unwrap();
    assert!(md.contains("![") && md.contains("plots/confusion_matrix.png"));
    assert!(md.contains("Verdict:"));
    assert!(md.contains(&format!("TP = {}", analysis.safety.matrix.tp)));
    let html = std::fs::read_to_string(dir.path().join(REPORT_HTML_FILE)).unwrap();
    assert_eq!(html.matches("<svg").count(), expected_plots.len());
    assert!(!html.contains("<?xml"));
    assert!(
        !html.contains("src=\""),
        "self-contained: no external references"
    );
}

#[test]
fn all_harmful_set_has_no_benign_cells() {
    let dir = tempfile::tempdir().unwrap();
    common::write_run(dir.path(), 30, PolicyConfig::fixed(3), 30);
    let mut run = read_run(dir.path()).unwrap();
    for row in &mut run.instances {
        row.gold_harmful = Some(true);
    }
    let options = AnalysisOptions {
        run_replay: false,
        ..quick_options()
    };
    let analysis = analyze_run(&run, &options).unwrap();
    let m = analysis.safety.matrix;
    assert_eq!((m.fp, m.tn), (0, 0));
    assert_eq!(m.tp + m.fn_, 30);
    assert_eq!(analysis.safety.get(Metric::Specificity).value, None);
    assert!(analysis.replay.skipped.is_some());
    let report = deepconf_analysis::build_report(&analysis).to_markdown();
    assert!(
        report.contains("there are no benign prompts"),
        "the report leaves a bare n/a for specificity"
    );
}

#[test]
fn online_runs_skip_the_replay_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    common::write_run(dir.path(), 8, PolicyConfig::online(2, 6, 10.0), 4);
    let options = AnalysisOptions {
        plots: false,
        ..quick_options()
    };
    let analysis = analyze_dir(dir.path(), &options).unwrap();
    let reason = analysis.replay.skipped.as_deref().unwrap();
    assert!(reason.contains("online"), "{reason}");
    assert!(analysis.plots.is_empty());
    let md = std::fs::read_to_string(dir.path().join(REPORT_MD_FILE)).unwrap();
    assert!(md.contains("Replay skipped"));
}

#[test]
fn invalid_options_name_the_parameter() {
    let dir = tempfile::tempdir().unwrap();
    common::write_run(dir.path(), 2, PolicyConfig::fixed(2), 2);
    let mut options = quick_options();
    options.stratify.uncertain_percentile = 150.0;
    let err = analyze_dir(dir.path(), &options).unwrap_err();
    assert!(err.to_string().contains("uncertain_percentile"), "{err}");
    let err = analyze_dir(&dir.path().join("missing"), &quick_options()).unwrap_err();
    assert!(err.to_string().contains("run.json"), "{err}");
}
