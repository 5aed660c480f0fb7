//! The replay's paired comparison of every policy with the full-budget baseline.

use crate::findings::Findings;
use crate::report::Document;
use crate::stats::format_percent;

impl Findings {
    /// Appends the table of every replayed policy against the full-budget baseline.
    pub fn write_policy_table(&self, d: &mut Document) {
        if self.policies.is_empty() {
            return;
        }
        d.heading(
            3,
            "Accuracy against the full-budget baseline (paired bootstrap)",
        );
        d.paragraph(format!(
            "Each policy's accuracy minus the baseline's ({}) over the same resampled instances, with its {:.0}% interval; \"within\" means the interval includes 0 or lies above it.",
            self.baseline.as_deref().unwrap_or("n/a"),
            self.level * 100.0
        ));
        if self.decisions_identical {
            d.paragraph("Every replayed policy made the same decision on every instance, so these differences are 0 by construction and say nothing about the policies.");
        }
        d.table(
            &[
                "policy",
                "tokens",
                "token savings",
                "accuracy",
                "difference [CI]",
                "within baseline",
            ],
            self.policies
                .iter()
                .map(|p| {
                    vec![
                        p.label.clone(),
                        p.tokens.to_string(),
                        format_percent(Some(p.token_savings)),
                        format_percent(p.accuracy),
                        p.accuracy_difference.display_points(),
                        if p.within_baseline { "yes" } else { "no" }.to_string(),
                    ]
                })
                .collect(),
        );
    }

    /// Appends the table of traces cut by the threshold and instances stopped by consensus, per
    /// replayed policy.
    pub fn write_early_stopping(&self, d: &mut Document) {
        if self.early_stopping.is_empty() {
            return;
        }
        d.heading(3, "Early stopping per policy");
        d.paragraph("A trace is cut when a full window's group confidence falls below the policy's threshold (set by the warmup traces); an instance stops by consensus when the confidence-weighted vote reaches tau. Policies \"without consensus stop\" sample their whole budget, so only the threshold acts.");
        d.table(
            &[
                "policy",
                "instances",
                "traces",
                "cut by the threshold",
                "stopped by consensus",
            ],
            self.early_stopping
                .iter()
                .map(|e| {
                    vec![
                        e.label.clone(),
                        e.instances.to_string(),
                        e.traces.to_string(),
                        e.cut_traces.to_string(),
                        e.consensus_stops.to_string(),
                    ]
                })
                .collect(),
        );
    }
}
