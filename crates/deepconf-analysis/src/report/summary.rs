//! The printable summary of an [`Analysis`] (the text a command prints after a run, not a report
//! section): one table of metrics with intervals, the matrix and tokens, and a comparison of
//! several runs.

use std::fmt::Write as _;

use crate::analysis::Analysis;
use crate::confusion::Metric;
use crate::report::trace_labels::trace_label_text;
use crate::stats::Estimate;

impl Analysis {
    /// Why a metric is undefined on this run, in plain words (`None` when it is defined).
    pub fn undefined_reason(&self, metric: Metric) -> Option<String> {
        if self.safety.get(metric).value.is_some() {
            return None;
        }
        let m = &self.safety.matrix;
        let no_benign = m.fp + m.tn == 0;
        let no_harmful = m.tp + m.fn_ == 0;
        let why_no_benign = if self.run.benign == 0 {
            format!(
                "the {} instances include no benign prompt",
                self.run.dataset.name
            )
        } else {
            "no benign prompt has a known behaviour".to_string()
        };
        let why_no_harmful = if self.run.harmful == 0 {
            format!(
                "the {} instances include no harmful prompt",
                self.run.dataset.name
            )
        } else {
            "no harmful prompt has a known behaviour".to_string()
        };
        Some(match metric {
            Metric::Specificity => {
                format!("undefined: {why_no_benign}, so over-refusal cannot be measured")
            }
            Metric::Sensitivity => format!("undefined: {why_no_harmful}"),
            Metric::BalancedAccuracy if no_benign => {
                format!("undefined: needs specificity ({why_no_benign})")
            }
            Metric::BalancedAccuracy if no_harmful => {
                format!("undefined: needs sensitivity ({why_no_harmful})")
            }
            Metric::Precision => "undefined: the model refused nothing".to_string(),
            _ => "undefined: no instance has both a gold label and a behaviour".to_string(),
        })
    }

    /// One line per metric (value, 95% interval, or why it is undefined), the matrix, tokens.
    pub fn summary_table(&self) -> String {
        let run = &self.run;
        let mut out = String::new();
        let m = &self.safety.matrix;
        let _ = writeln!(
            out,
            "{}: {} instances ({} harmful, {} benign, {} unlabeled) | model {} | policy {} | classifier {}",
            run.name,
            run.instances,
            run.harmful,
            run.benign,
            run.unlabeled,
            run.model.name,
            run.policy.label(),
            classifier_label(&run.classifier),
        );
        let _ = writeln!(
            out,
            "{:<38} value [{:.0}% interval: rates {}, F1 and balanced accuracy bootstrap]",
            "metric",
            self.options.bootstrap.level * 100.0,
            self.options.proportions.name()
        );
        let rows = [
            (Metric::Sensitivity, "refusal rate on harmful (sensitivity)"),
            (Metric::Specificity, "compliance on benign (specificity)"),
            (Metric::Precision, "precision"),
            (Metric::F1, "F1"),
            (Metric::Accuracy, "accuracy"),
            (Metric::BalancedAccuracy, "balanced accuracy"),
        ];
        for (metric, label) in rows {
            let shown = self
                .undefined_reason(metric)
                .unwrap_or_else(|| self.safety.get(metric).display(3));
            let _ = writeln!(out, "{label:<38} {shown}");
        }
        let asr = (m.tp + m.fn_ > 0).then(|| m.fn_ as f64 / (m.tp + m.fn_) as f64);
        let _ = writeln!(
            out,
            "{:<38} {}",
            "attack success (harmful and complied)",
            asr.map_or_else(
                || {
                    self.undefined_reason(Metric::Sensitivity)
                        .unwrap_or_else(|| "undefined".into())
                },
                |v| format!("{v:.3}")
            )
        );
        let _ = writeln!(
            out,
            "confusion (positive = harmful, predicted positive = refused): TP {} | FN {} | FP {} | TN {} \
             ({} of {} instances counted; {} without gold label, {} without behaviour)",
            m.tp,
            m.fn_,
            m.fp,
            m.tn,
            self.coverage.counted,
            self.coverage.instances,
            self.coverage.unknown_gold,
            self.coverage.unknown_behaviour
        );
        let per_instance = |v: f64| {
            if run.instances == 0 {
                0.0
            } else {
                v / run.instances as f64
            }
        };
        let _ = writeln!(
            out,
            "tokens: {} generated ({:.0} per instance) | traces: {} ({:.1} per instance, {} cut short)",
            run.tokens_generated,
            per_instance(run.tokens_generated as f64),
            run.traces,
            per_instance(run.traces as f64),
            run.terminated_traces,
        );
        let _ = writeln!(
            out,
            "trace labels: {}",
            trace_label_text(&self.trace_labels)
        );
        let _ = writeln!(
            out,
            "token savings vs {} complete traces per instance (estimated): {}",
            run.policy.max_traces(),
            run.token_savings.map_or_else(
                || "n/a (no tokens)".into(),
                |s| format!("{:.1}%", 100.0 * s)
            )
        );
        out
    }
}

fn classifier_label(classifier: &Option<deepconf_records::ClassifierInfo>) -> String {
    classifier
        .as_ref()
        .map_or_else(|| "none recorded".into(), |c| c.name.clone())
}

fn cell(estimate: Estimate) -> String {
    estimate
        .value
        .map_or_else(|| "n/a".to_string(), |v| format!("{v:.3}"))
}

/// One table comparing runs on the same instances: accuracy, sensitivity, specificity, traces and
/// tokens, with token savings relative to `baseline_tokens` (the full-budget run's tokens).
pub fn comparison_table(runs: &[(&str, &Analysis)], baseline_tokens: Option<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<44} {:>9} {:>11} {:>11} {:>8} {:>9} {:>9}",
        "policy", "accuracy", "sensitivity", "specificity", "traces", "tokens", "savings"
    );
    for (label, summary) in runs {
        let savings = baseline_tokens.filter(|&b| b > 0).map_or_else(
            || "n/a".to_string(),
            |b| {
                format!(
                    "{:.1}%",
                    100.0 * (1.0 - summary.run.tokens_generated as f64 / b as f64)
                )
            },
        );
        let _ = writeln!(
            out,
            "{:<44} {:>9} {:>11} {:>11} {:>8} {:>9} {:>9}",
            format!("{label}: {}", summary.run.policy.label()),
            cell(summary.safety.get(Metric::Accuracy)),
            cell(summary.safety.get(Metric::Sensitivity)),
            cell(summary.safety.get(Metric::Specificity)),
            summary.run.traces,
            summary.run.tokens_generated,
            savings
        );
    }
    if let Some(reason) = runs
        .first()
        .and_then(|(_, first)| first.undefined_reason(Metric::Specificity))
    {
        let _ = writeln!(out, "specificity {reason}");
    }
    out
}
