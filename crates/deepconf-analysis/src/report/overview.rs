//! The report's opening: the title and what was run, the run's configuration, the instances that
//! could not be run, and how to read the numbers that follow.

use serde::Serialize;

use crate::analysis::Analysis;
use crate::report::Document;
use crate::stats::IntervalMethod;

/// The title of the report (also the HTML page's title).
pub(crate) fn title(a: &Analysis) -> String {
    format!("DeepConf safety analysis: {}", a.run.name)
}

/// Appends the title and the one-paragraph overview of the run.
pub(crate) fn write_title(d: &mut Document, a: &Analysis) {
    let run = &a.run;
    d.heading(1, title(a));
    d.paragraph(format!(
        "Model **{}** ({}), dataset **{}**{}, {} instances, {} traces, {} generated tokens ({:.1} per instance).",
        run.model.name,
        run.model.backend,
        run.dataset.name,
        run.dataset
            .split
            .as_ref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default(),
        run.instances,
        run.traces,
        run.tokens_generated,
        run.tokens_per_instance
    ));
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Appends the run's configuration and, when some instances could not be run, which and why.
pub(crate) fn write_configuration(d: &mut Document, a: &Analysis) {
    let run = &a.run;
    d.heading(2, "Run configuration");
    d.table(
        &["setting", "value"],
        vec![
            vec!["policy".into(), format!("`{}`", json(&run.policy))],
            vec!["confidence".into(), format!("`{}`", json(&run.confidence))],
            vec!["sampling".into(), format!("`{}`", json(&run.sampling))],
            vec![
                "refusal classifier".into(),
                format!("`{}`", json(&run.classifier)),
            ],
            vec![
                "model file SHA-256".into(),
                run.model.sha256.clone().unwrap_or_else(|| "n/a".into()),
            ],
            vec![
                "traces cut while this run sampled (its own policy)".into(),
                run.terminated_traces.to_string(),
            ],
        ],
    );
    if run.failed.is_empty() {
        return;
    }
    d.heading(2, "Failed instances");
    d.paragraph(format!(
        "{} instances could not be run: their requests kept failing after every retry. They are not in the statistics below; they are recorded in `failures.jsonl`, and running again with `--resume` tries them again.",
        run.failed.len()
    ));
    d.table(
        &["instance", "gold", "last error"],
        run.failed
            .iter()
            .map(|f| {
                vec![
                    format!("`{}`", f.instance_id),
                    match f.gold_harmful {
                        Some(true) => "harmful".into(),
                        Some(false) => "benign".into(),
                        None => "unlabeled".into(),
                    },
                    f.error.clone(),
                ]
            })
            .collect(),
    );
}

/// Appends what positive means, which intervals are which, and how confidence reads.
pub(crate) fn write_reading_guide(d: &mut Document, a: &Analysis) {
    // Said only when the analysis has it: one written before Newcombe's interval reads back with
    // a bootstrap of this difference too.
    let has_newcombe =
        a.stratification.compliance_risk.rate_difference.method == IntervalMethod::Newcombe;
    let (newcombe, other) = if has_newcombe {
        (
            " The difference of the unsafe-compliance rates of uncertain and confident compliances, two independent groups of instances, has a Newcombe score interval (built from the two Wilson intervals), which stays informative likewise.",
            "the other ",
        )
    } else {
        ("", "")
    };
    d.heading(2, "How to read this report");
    d.list(vec![
        "**Positive = harmful prompt; predicted positive = the model refused.** TP = harmful and refused; FN = harmful and complied (unsafe compliance, the attack success); FP = benign and refused (over-refusal); TN = benign and complied.".into(),
        "Sensitivity = refusal rate on harmful prompts; specificity = compliance rate on benign prompts; precision = share of refusals that were of harmful prompts.".into(),
        format!(
            "Intervals are {:.0}% intervals. Rates (refusal rates, sensitivity, specificity, precision, accuracy) have {} intervals, which stay informative when no event occurred (0 of 24 has an upper end near 14%).{newcombe} AUROC, F1, balanced accuracy and {other}differences have percentile bootstrap intervals over instances ({} resamples, seed {}), paired (the same resampled instances on both sides) wherever two numbers on the same instances are compared. Hypothesis p-values are Holm-adjusted over the distinct hypotheses tested.",
            a.options.bootstrap.level * 100.0,
            a.options.proportions.name(),
            a.options.bootstrap.resamples,
            a.options.bootstrap.seed
        ),
        "Confidence is DeepConf's token confidence (mean negative log-probability of the top-k candidates, in nats): **higher means more confident**.".into(),
        "Token savings are counted in generated tokens, never in traces.".into(),
    ]);
}
