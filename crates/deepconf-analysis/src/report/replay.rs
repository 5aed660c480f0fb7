//! The **Percentile replay** section: every policy replayed on the stored full traces, its tokens
//! and safety metrics, their figures, the paired comparison with the full-budget baseline and the
//! early stopping per policy (tables of [`super::policies`]).

use std::path::Path;

use crate::analysis::Analysis;
use crate::confusion::Metric;
use crate::error::Result;
use crate::plots::{BarListPlot, PercentileCurvePlot, RenderedPlot, render};
use crate::report::{Document, Figure, num};

/// Safety metrics of the threshold sweep against tokens.
pub(crate) const PERCENTILE_CURVES: Figure = Figure {
    name: PercentileCurvePlot::NAME,
    caption: "Safety metrics of the online threshold sweep against mean generated tokens per instance; crosses mark the accuracy of the reference policies.",
};
/// Token savings per policy.
pub(crate) const TOKEN_SAVINGS: Figure = Figure {
    name: "token_savings",
    caption: "Token savings of each policy relative to the full-budget baseline.",
};

/// Draws [`PERCENTILE_CURVES`] and [`TOKEN_SAVINGS`] when policies were replayed.
pub(crate) fn draw(a: &Analysis, dir: &Path) -> Result<Vec<RenderedPlot>> {
    if a.replay.skipped.is_some() || a.replay.policies.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec![
        render(
            &PercentileCurvePlot {
                replays: a.replay.policies.clone(),
            },
            dir,
        )?,
        render(
            &BarListPlot {
                name: TOKEN_SAVINGS.name.into(),
                title: "Token savings vs the full-budget baseline (replay)".into(),
                x_desc: "token savings (% of baseline generated tokens)".into(),
                unit: "%".into(),
                bars: a
                    .replay
                    .policies
                    .iter()
                    .map(|p| (p.policy.label.clone(), p.token_savings * 100.0))
                    .collect(),
            },
            dir,
        )?,
    ])
}

fn policy_rows(a: &Analysis) -> Vec<Vec<String>> {
    a.replay
        .policies
        .iter()
        .map(|p| {
            let metric = |m: Metric| num(p.metrics.get(&m).copied().flatten(), 3);
            vec![
                p.policy.label.clone(),
                p.tokens.to_string(),
                format!("{:.1}", p.tokens_per_instance),
                format!("{:.1}%", p.token_savings * 100.0),
                p.traces.to_string(),
                p.terminated.to_string(),
                metric(Metric::Sensitivity),
                metric(Metric::Specificity),
                metric(Metric::Accuracy),
                metric(Metric::BalancedAccuracy),
                p.no_behaviour.to_string(),
            ]
        })
        .collect()
}

/// Appends the section (or why the replay was skipped).
pub(crate) fn write(d: &mut Document, a: &Analysis) {
    d.heading(2, "Percentile replay: safety vs tokens");
    if let Some(reason) = &a.replay.skipped {
        d.paragraph(format!("Replay skipped: {reason}."));
        return;
    }
    d.paragraph(format!(
        "Every policy below was replayed on the stored full traces ({} per instance) with the live decision code: a trace is cut at the first full window whose group confidence falls below the policy's threshold (it then keeps only the tokens up to the cut and does not vote), and traces the policy would not have started are not counted. Baseline: fixed N = {} with every trace generated in full, {} tokens. \"online keep k%\" sets the threshold at the (100 - k)th percentile of the warmup traces' lowest group confidences (warmup {}, batches of {}, consensus tau {}).",
        a.replay.traces_per_instance,
        a.replay.traces_per_instance,
        a.replay.baseline_tokens,
        a.options.replay.warmup_traces.min(a.replay.traces_per_instance),
        a.options.replay.batch_size,
        a.options.replay.consensus
    ));
    d.table(
        &[
            "policy",
            "tokens",
            "tokens/instance",
            "token savings",
            "traces",
            "cut",
            "sensitivity",
            "specificity",
            "accuracy",
            "balanced acc.",
            "no vote",
        ],
        policy_rows(a),
    );
    PERCENTILE_CURVES.place(d, a);
    TOKEN_SAVINGS.place(d, a);
    a.findings.write_policy_table(d);
    a.findings.write_early_stopping(d);
}
