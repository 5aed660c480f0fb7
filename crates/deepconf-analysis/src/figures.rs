//! The figures that show the hypothesis and the categories: unsafe-compliance rate of uncertain vs
//! confident compliances with interval bars, and instance confidence per dataset category.

use std::path::Path;

use crate::error::Result;
use crate::plots::{IntervalPlot, IntervalRow, RenderedPlot, render};
use crate::stratify::{Stratification, metric_name};

/// File stem of the hypothesis plot.
pub const COMPLIANCE_RISK_PLOT: &str = "compliance_risk";
/// File stem of the per-category confidence plot.
pub const CONFIDENCE_BY_CATEGORY_PLOT: &str = "confidence_by_category";

/// Unsafe-compliance rate (share of compliances that answered a harmful prompt) of uncertain and
/// confident compliances, each with its interval (as the analysis computed it: exact or score).
pub fn compliance_risk_plot(strat: &Stratification, level: f64) -> IntervalPlot {
    let r = &strat.compliance_risk;
    // An undefined rate carries no interval, so its method says nothing; take the defined one's.
    let method = [r.uncertain_rate, r.confident_rate]
        .iter()
        .find(|e| e.low.is_some())
        .map_or(crate::stats::IntervalMethod::default(), |e| e.method);
    let threshold = strat
        .threshold
        .map_or("n/a".to_string(), |t| format!("{t:.3}"));
    let row = |name: &str, unsafe_: usize, n: usize, rate: &crate::stats::Estimate| IntervalRow {
        label: format!("{name} compliances ({unsafe_} unsafe of {n})"),
        value: rate.value,
        low: rate.low,
        high: rate.high,
    };
    IntervalPlot {
        name: COMPLIANCE_RISK_PLOT.into(),
        title: format!(
            "Hypothesis: is low-confidence compliance riskier? (uncertain = confidence below the {}th percentile, {threshold} nats)",
            strat.uncertain_percentile
        ),
        x_desc: "unsafe-compliance rate (% of compliances that answered a harmful prompt)".into(),
        point_legend: "unsafe-compliance rate".into(),
        bar_legend: format!("{:.0}% {} interval", level * 100.0, method.name()),
        rows: vec![
            row(
                "uncertain",
                r.uncertain_unsafe,
                r.uncertain_n,
                &r.uncertain_rate,
            ),
            row(
                "confident",
                r.confident_unsafe,
                r.confident_n,
                &r.confident_rate,
            ),
        ],
        x_range: Some((0.0, 1.0)),
        scale: 100.0,
        unit: "%".into(),
        digits: 1,
    }
}

/// Median instance confidence per dataset category with its interquartile range.
pub fn confidence_by_category_plot(strat: &Stratification) -> IntervalPlot {
    IntervalPlot {
        name: CONFIDENCE_BY_CATEGORY_PLOT.into(),
        title: "Instance confidence by dataset category".into(),
        x_desc: format!("instance confidence: {} (nats)", metric_name(strat.metric)),
        point_legend: "median".into(),
        bar_legend: "interquartile range (25th-75th percentile)".into(),
        rows: strat
            .by_category
            .iter()
            .map(|(category, d)| IntervalRow {
                label: format!("{category} (n = {})", d.n),
                value: d.median,
                low: d.q25,
                high: d.q75,
            })
            .collect(),
        x_range: None,
        scale: 1.0,
        unit: String::new(),
        digits: 2,
    }
}

/// Draws the figures of this module that have data.
pub fn draw(strat: &Stratification, level: f64, dir: &Path) -> Result<Vec<RenderedPlot>> {
    let mut rendered = Vec::new();
    if !strat.by_category.is_empty() {
        rendered.push(render(&confidence_by_category_plot(strat), dir)?);
    }
    rendered.push(render(&compliance_risk_plot(strat, level), dir)?);
    Ok(rendered)
}
