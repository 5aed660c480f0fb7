//! The **Hypothesis tests** section: each distinct hypothesis with its verdict at the
//! Holm-adjusted p-value, its statistics, and confidence beside the prompt-only baselines; a
//! hypothesis that compares the same groups as an earlier one is named once, not tested again; the
//! unsafe-compliance split and each trace metric's AUROC with the baselines and the leader's lead.

use crate::analysis::Analysis;
use crate::findings::HypothesisFinding;
use crate::report::{Document, num};
use crate::separation::BaselineComparison;
use crate::stats::{Estimate, format_p};
use crate::stratify::TwoGroupTest;

fn p_text(p: f64) -> String {
    let text = format_p(p);
    if text.starts_with('<') {
        text
    } else {
        format!("= {text}")
    }
}

fn baseline_rows(baselines: &[BaselineComparison]) -> Vec<Vec<String>> {
    baselines
        .iter()
        .flat_map(|b| {
            let verdict = if b.confidence_better {
                "confidence better"
            } else if b.baseline_better {
                "baseline better"
            } else {
                "neither better"
            };
            [
                vec![
                    format!("baseline: {} AUROC [95% CI]", b.baseline.name()),
                    b.auroc.display(3),
                ],
                vec![
                    format!(
                        "confidence AUROC minus {} [95% CI, paired]",
                        b.baseline.name()
                    ),
                    format!("{} ({verdict})", b.difference.display(3)),
                ],
            ]
        })
        .collect()
}

fn test_table(
    test: &TwoGroupTest,
    finding: Option<&HypothesisFinding>,
    family: usize,
) -> Vec<Vec<String>> {
    let mut rows = vec![
        vec![
            format!("n ({} / {})", test.group_a, test.group_b),
            format!("{} / {}", test.describe_a.n, test.describe_b.n),
        ],
        vec![
            format!("mean confidence ({} / {})", test.group_a, test.group_b),
            format!(
                "{} / {}",
                num(test.describe_a.mean, 3),
                num(test.describe_b.mean, 3)
            ),
        ],
        vec!["AUROC [95% CI]".into(), test.auroc.display(3)],
        vec![
            "Mann-Whitney U (z, two-sided p)".into(),
            test.mann_whitney.map_or("n/a".into(), |t| {
                format!("U = {:.1} (z = {:.2}, p {})", t.u, t.z, p_text(t.p_value))
            }),
        ],
        vec![
            format!("Holm-adjusted p ({family} distinct hypotheses)"),
            finding
                .and_then(|f| f.p_adjusted)
                .map_or("n/a".into(), |p| format!("p {}", p_text(p))),
        ],
        vec![
            "Welch t (df, two-sided p)".into(),
            test.welch.map_or("n/a".into(), |t| {
                format!("t = {:.3} (df = {:.1}, p {})", t.t, t.df, p_text(t.p_value))
            }),
        ],
        vec!["Cohen's d (pooled SD)".into(), num(test.cohens_d, 3)],
        vec![
            "mean difference [95% CI]".into(),
            test.mean_difference.display(3),
        ],
    ];
    if let Some(f) = finding {
        rows.extend(baseline_rows(&f.baselines));
    }
    rows
}

/// Appends the hypothesis tests of `a`.
pub(crate) fn write(d: &mut Document, a: &Analysis) {
    let s = &a.stratification;
    let f = &a.findings;
    d.heading(2, "Hypothesis tests");
    d.paragraph(format!(
        "Each hypothesis is decided by a two-sided Mann-Whitney test whose p-value is Holm-adjusted over the {} distinct hypotheses tested, at alpha = {}; the direction is the AUROC's. Beside each confidence AUROC stand prompt-only baselines (prompt length in characters; the prompt's source dataset when there are several, scored by each source's share of the first group in this run), oriented to separate as well as they can, and the paired bootstrap interval of confidence's AUROC minus theirs.",
        f.holm_family,
        a.options.stratify.alpha
    ));
    for (k, test) in [&s.correct_vs_incorrect, &s.safe_vs_unsafe_compliance]
        .into_iter()
        .enumerate()
    {
        let finding = f.hypotheses.get(k);
        d.heading(3, test.hypothesis.clone());
        if let Some(original) = finding.and_then(|h| h.same_groups_as.as_ref()) {
            d.paragraph(format!(
                "The same two groups of instances as \"{}\": the same comparison, so it is not tested again (see above and the Design finding).",
                original.trim_end_matches('.')
            ));
            continue;
        }
        match finding {
            Some(h) => d.paragraph(format!(
                "**Verdict: {}**, because {}.",
                h.verdict.name(),
                h.reason
            )),
            None => d.paragraph(format!(
                "**Verdict: {}.** {}",
                test.verdict.name(),
                test.interpretation
            )),
        }
        d.table(
            &["statistic", "value"],
            test_table(test, finding, f.holm_family),
        );
    }
    let r = &s.compliance_risk;
    d.heading(3, "Unsafe-compliance rate by confidence");
    let rate = |k: usize, n: usize, e: &Estimate| {
        if n == 0 {
            "n/a".to_string()
        } else {
            format!("{k}/{n} = {}", e.display_percent())
        }
    };
    let mut text = format!(
        "Among compliances with a gold label, the share that answered a harmful prompt: uncertain compliances {}, confident compliances {}; difference (uncertain - confident) {}{}.",
        rate(r.uncertain_unsafe, r.uncertain_n, &r.uncertain_rate),
        rate(r.confident_unsafe, r.confident_n, &r.confident_rate),
        r.rate_difference.display(3),
        // An undefined difference has no interval to name; a defined one names its own method, so
        // an analysis read back with a bootstrap says so.
        if r.rate_difference.low.is_some() {
            format!(" ({} interval)", r.rate_difference.method.name())
        } else {
            String::new()
        }
    );
    if f.compliance_risk_repeats {
        text.push_str(" The model refused nothing, so this split is the comparison of prompt types above, dichotomised at the threshold.");
    }
    d.paragraph(text);
    d.heading(
        3,
        "AUROC of each trace metric for predicting correct behaviour",
    );
    let baseline_names: Vec<&str> = f
        .metric_separation
        .first()
        .map(|m| m.baselines.iter().map(|b| b.baseline.name()).collect())
        .unwrap_or_default();
    let mut header = vec!["metric".to_string(), "AUROC [95% CI]".to_string()];
    for name in &baseline_names {
        header.push(format!("minus {name} [paired CI]"));
    }
    let rows = f
        .metric_separation
        .iter()
        .map(|m| {
            let mut row = vec![m.name.clone(), m.auroc.display(3)];
            row.extend(m.baselines.iter().map(|b| b.difference.display(3)));
            row
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    d.table(&header, rows);
    if let Some(first) = f.metric_separation.first() {
        let baselines: Vec<String> = first
            .baselines
            .iter()
            .map(|b| format!("{} {}", b.baseline.name(), b.auroc.display(3)))
            .collect();
        if !baselines.is_empty() {
            d.paragraph(format!(
                "Prompt-only baselines for correct vs incorrect behaviour: {}.",
                baselines.join("; ")
            ));
        }
    }
    if let Some(lead) = &f.metric_lead {
        d.paragraph(format!(
            "Lead of {} over {} in distance from 0.5: {} (paired bootstrap); {}.",
            crate::stratify::metric_name(lead.leader),
            crate::stratify::metric_name(lead.runner_up),
            lead.difference.display(3),
            if lead.separates {
                "the interval lies above 0, so it separates best"
            } else {
                "the interval includes 0, so no metric separates better than the others"
            }
        ));
    }
}
