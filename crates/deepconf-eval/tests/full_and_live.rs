//! The main job's shape on a short real run: harmful and benign prompts of the real mixture through
//! the embedded model, full traces, every policy replayed, the live online policy cross-checked, and
//! a report whose findings state the numbers analysis.json holds.

use deepconf_analysis::stats::BootstrapConfig;
use deepconf_analysis::{ANALYSIS_FILE, AnalysisOptions, Findings};
use deepconf_core::policy::PolicyConfig;
use deepconf_datasets::{Dataset, MixtureSpec, SourceShares};
use deepconf_eval::{Experiment, FullAndLive, ProgressMode};
use serde_json::Value;

use crate::common;

/// Two short HarmBench behaviours, two StrongREJECT prompts and three benign probes.
fn mixed_instances() -> Dataset {
    let mixture = MixtureSpec::harmful_and_benign(None)
        .load()
        .unwrap_or_else(|e| {
            panic!("the mixture's files are needed (run `cargo xtask fetch-data`): {e}")
        });
    // Contextual and copyright behaviours carry long contexts; standard ones keep the run short.
    let short = mixture.filter(|i| {
        i.dataset.as_deref() != Some("harmbench") || i.category.as_deref() == Some("standard")
    });
    let shares = SourceShares::weights([
        ("harmbench", 2.0),
        ("strongreject", 2.0),
        ("overrefusal", 3.0),
    ]);
    short.stratified_by_source(7, 5, &shares).unwrap()
}

#[test]
fn a_short_mixed_full_and_live_run_writes_every_figure_and_states_its_numbers() {
    let dataset = mixed_instances();
    let per_source: Vec<usize> = dataset.summary.by_source.values().map(|c| c.rows).collect();
    assert_eq!(
        per_source,
        [2, 3, 2],
        "harmbench, overrefusal, strongreject"
    );
    let mut backend = common::model();
    let mut classifier = common::patterns();
    let mut run = common::run_config(PolicyConfig::fixed(4), 21);
    // A window shorter than the 24-token traces, so the online policy can cut them.
    run.confidence.window = 6;
    let config = common::config("full-and-live", run, &backend, &classifier);
    // DeepConf-low with the consensus stop off: every instance samples all 4 traces, and the
    // threshold (90th percentile of the warmup) cuts some of the later ones.
    let online = PolicyConfig::Online {
        warmup_traces: 2,
        max_traces: 4,
        keep_percent: 10.0,
        consensus: 1.5,
        batch_size: 2,
        voting: deepconf_core::policy::Voting::ConfidenceWeighted,
    };
    let options = AnalysisOptions {
        bootstrap: BootstrapConfig {
            resamples: 200,
            ..BootstrapConfig::default()
        },
        ..AnalysisOptions::default()
    };
    let full = Experiment::new(config, dataset.instances.clone()).progress(ProgressMode::Silent);
    let pairing = FullAndLive::new(full)
        .unwrap()
        .live(online)
        .unwrap()
        .analysis_options(options);
    let out = tempfile::tempdir().unwrap();
    let report = pairing
        .run(
            backend.model.as_mut(),
            classifier.classifier.as_mut(),
            out.path(),
        )
        .unwrap();
    assert!(report.full_run.completed && report.live_run.as_ref().unwrap().completed);
    let analysis = &report.analysis;

    // Every figure the issue asks for is drawn, written and non-empty, and the HTML embeds each.
    for name in [
        "confusion_matrix",
        "percentile_curves",
        "confidence_by_correctness",
        "confidence_by_category",
        "confidence_by_gold",
        "trace_evolution",
        "confidence_buckets",
        "token_savings",
        "compliance_risk",
    ] {
        assert!(analysis.plots.iter().any(|p| p == name), "{name} not drawn");
    }
    let html = std::fs::read_to_string(&report.files.html).unwrap();
    for plot in &analysis.plots {
        for extension in ["png", "svg"] {
            let file = report.files.plots.join(format!("{plot}.{extension}"));
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            assert!(size > 0, "{} is missing or empty", file.display());
        }
    }
    assert_eq!(html.matches("<figure>").count(), analysis.plots.len());
    assert_eq!(html.matches("<svg").count(), analysis.plots.len());

    // Both classes are present, so specificity is defined; the replay ran with n = 1 included.
    let findings: Findings = {
        let text = std::fs::read_to_string(report.full_dir.join(ANALYSIS_FILE)).unwrap();
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            json["findings"]["harmful_refusal"]["rate"]["value"],
            json["safety"]["metrics"]["sensitivity"]["value"]
        );
        serde_json::from_value(json["findings"].clone()).unwrap()
    };
    assert_eq!(findings, analysis.findings);
    assert_eq!(findings.harmful_refusal.n, 4);
    assert_eq!(findings.benign_over_refusal.n, 3);
    assert!(analysis.replay.skipped.is_none());
    // Metrics per source dataset: the mixture's sources reach the records and the report.
    let sources: Vec<(&str, u64)> = analysis
        .by_source
        .iter()
        .map(|g| (g.value.as_str(), g.metrics.matrix.total()))
        .collect();
    assert_eq!(
        sources,
        [("harmbench", 2), ("overrefusal", 3), ("strongreject", 2)]
    );
    assert!(findings.policy("single trace (n=1)").is_some());
    assert!(findings.baseline.is_some());

    // The findings open the report and state the numbers analysis.json holds.
    let md = std::fs::read_to_string(&report.files.markdown).unwrap();
    assert!(md.contains("### By source dataset"));
    let start = md.find("## Findings").unwrap();
    assert!(start < md.find("## Run configuration").unwrap());
    let section = &md[start..md[start..].find("\n## Run").map_or(md.len(), |e| start + e)];
    for text in [
        findings.harmful_refusal.rate.display_percent(),
        findings.benign_over_refusal.rate.display_percent(),
        format!(
            "refused {} of {} harmful prompts",
            findings.harmful_refusal.events, findings.harmful_refusal.n
        ),
        format!(
            "refused {} of {} benign prompts",
            findings.benign_over_refusal.events, findings.benign_over_refusal.n
        ),
    ] {
        assert!(section.contains(&text), "missing {text:?} in\n{section}");
    }
    for test in &findings.hypotheses {
        // A hypothesis that compares the same groups as an earlier one is named, not re-tested.
        match &test.same_groups_as {
            None => assert!(section.contains(&format!("**{}**, because", test.verdict.name()))),
            Some(_) => assert!(section.contains("the same comparison as"), "{section}"),
        }
    }
    match findings.cheapest_within_baseline.as_deref() {
        Some(label) => {
            let p = findings.policy(label).unwrap();
            assert!(section.contains(label));
            assert!(section.contains(&p.accuracy_difference.display_points()));
        }
        None if findings.decisions_identical => {
            assert!(section.contains("uninformative for this run"), "{section}")
        }
        None => assert!(section.contains("no replayed policy cheaper"), "{section}"),
    }

    // The live online run was checked against its replay, and the report says how it came out.
    let check = findings.live_check.as_ref().expect("a live check");
    assert_eq!(check.compared, 7);
    assert!(check.missing.is_empty());
    assert_eq!(check.matching + check.mismatches.len(), check.compared);
    assert!(section.contains("**Live-vs-replay check:**"));
    let live_records =
        deepconf_records::read_run(report.live_dir.as_ref().unwrap()).expect("live run");
    assert_eq!(
        check.live_tokens,
        live_records
            .instances
            .iter()
            .map(|r| r.tokens_generated)
            .sum::<u64>()
    );
    assert_eq!(check.live_traces, 7 * 4);
    assert!(
        check.live_tokens < check.live_traces as u64 * 24,
        "some trace was cut"
    );
    // With the candle backend a trace's tokens depend only on its prompt and seed, so the live
    // run is exactly what the replay says it is.
    assert!(check.all_equal(), "{check:#?}");
    let cut = live_records
        .traces
        .iter()
        .flatten()
        .filter(|t| t.is_terminated())
        .count();
    // Every trace the live threshold cut is compared with the replay's cut, at the same token.
    assert_eq!(check.live_cut_traces, cut);
    assert_eq!(check.cut_traces_compared, cut);
    assert_eq!(check.cut_points_equal, cut);
    eprintln!(
        "live vs replay: {} of {} instances equal, {} of {} live traces exact prefixes ({cut} cut), tokens {} live vs {} replayed",
        check.matching,
        check.compared,
        check.prefix_traces,
        check.live_traces,
        check.live_tokens,
        check.replay_tokens
    );
}
