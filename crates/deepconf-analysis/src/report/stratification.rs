//! The **Confidence stratification** section: the confidence x behaviour buckets, instance
//! confidence by correctness, by gold label and by dataset category, with their figures.

use std::path::Path;

use crate::analysis::Analysis;
use crate::error::Result;
use crate::plots::{
    GroupedBarPlot, HistogramPlot, IntervalPlot, IntervalRow, RenderedPlot, render,
};
use crate::report::{Document, Figure, num, pct};
use crate::stratify::{Bucket, InstanceConfidence, Stratification, metric_name};

/// Instances per bucket, split by gold label.
pub(crate) const CONFIDENCE_BUCKETS: Figure = Figure {
    name: "confidence_buckets",
    caption: "Instances per confidence x behaviour bucket, split by gold label. Harmful prompts among compliances are unsafe compliances.",
};
/// Instance confidence of correct and incorrect behaviour.
pub(crate) const CONFIDENCE_BY_CORRECTNESS: Figure = Figure {
    name: "confidence_by_correctness",
    caption: "Distribution of instance confidence for correct and incorrect behaviour.",
};
/// Instance confidence on harmful and benign prompts.
pub(crate) const CONFIDENCE_BY_GOLD: Figure = Figure {
    name: "confidence_by_gold",
    caption: "Distribution of instance confidence on harmful and benign prompts.",
};
/// Instance confidence per dataset category.
pub(crate) const CONFIDENCE_BY_CATEGORY: Figure = Figure {
    name: "confidence_by_category",
    caption: "Median instance confidence per dataset category, bars from the 25th to the 75th percentile.",
};

const DESCRIBE_HEADER: [&str; 7] = ["group", "n", "mean", "sd", "q25", "median", "q75"];

fn describe_row(name: &str, d: &crate::stats::Describe) -> Vec<String> {
    vec![
        name.to_string(),
        d.n.to_string(),
        num(d.mean, 3),
        num(d.sd, 3),
        num(d.q25, 3),
        num(d.median, 3),
        num(d.q75, 3),
    ]
}

/// A histogram's group: its legend and which instances it holds.
type HistogramGroup<'a> = (&'a str, &'a dyn Fn(&InstanceConfidence) -> bool);

fn histogram(
    figure: Figure,
    title: &str,
    strat: &Stratification,
    groups: [HistogramGroup<'_>; 2],
) -> HistogramPlot {
    let pick = |keep: &dyn Fn(&InstanceConfidence) -> bool| -> Vec<f64> {
        strat
            .instances
            .iter()
            .filter(|i| keep(i))
            .map(|i| i.confidence)
            .collect()
    };
    HistogramPlot {
        name: figure.name.into(),
        title: title.into(),
        x_desc: format!("instance confidence: {} (nats)", metric_name(strat.metric)),
        groups: groups
            .iter()
            .map(|(label, keep)| (label.to_string(), pick(*keep)))
            .collect(),
        marker: strat.threshold.map(|t| {
            (
                t,
                format!(
                    "uncertainty threshold ({}th percentile) = {t:.3}",
                    strat.uncertain_percentile
                ),
            )
        }),
        bins: 20,
    }
}

fn buckets_plot(strat: &Stratification) -> GroupedBarPlot {
    GroupedBarPlot {
        name: CONFIDENCE_BUCKETS.name.into(),
        title: format!(
            "Behaviour x confidence buckets (threshold: {}th percentile of {})",
            strat.uncertain_percentile,
            metric_name(strat.metric)
        ),
        y_desc: "instances (count)".into(),
        x_desc: "confidence x behaviour bucket".into(),
        categories: Bucket::ALL.iter().map(|b| b.name().to_string()).collect(),
        series: vec![
            (
                "harmful prompts".into(),
                strat.buckets.iter().map(|b| b.harmful as f64).collect(),
            ),
            (
                "benign prompts".into(),
                strat.buckets.iter().map(|b| b.benign as f64).collect(),
            ),
        ],
    }
}

/// Draws [`CONFIDENCE_BY_CORRECTNESS`], [`CONFIDENCE_BY_GOLD`] and [`CONFIDENCE_BUCKETS`].
pub(crate) fn draw_distributions(a: &Analysis, dir: &Path) -> Result<Vec<RenderedPlot>> {
    let strat = &a.stratification;
    Ok(vec![
        render(
            &histogram(
                CONFIDENCE_BY_CORRECTNESS,
                "Confidence of correct vs incorrect behaviour",
                strat,
                [
                    ("correct", &|i| i.correct == Some(true)),
                    ("incorrect", &|i| i.correct == Some(false)),
                ],
            ),
            dir,
        )?,
        render(
            &histogram(
                CONFIDENCE_BY_GOLD,
                "Confidence on harmful vs benign prompts",
                strat,
                [
                    ("harmful prompts", &|i| i.gold_harmful == Some(true)),
                    ("benign prompts", &|i| i.gold_harmful == Some(false)),
                ],
            ),
            dir,
        )?,
        render(&buckets_plot(strat), dir)?,
    ])
}

/// Median instance confidence per dataset category with its interquartile range.
fn confidence_by_category_plot(strat: &Stratification) -> IntervalPlot {
    IntervalPlot {
        name: CONFIDENCE_BY_CATEGORY.name.into(),
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

/// Draws [`CONFIDENCE_BY_CATEGORY`] when the dataset has categories.
pub(crate) fn draw_categories(a: &Analysis, dir: &Path) -> Result<Option<RenderedPlot>> {
    let strat = &a.stratification;
    if strat.by_category.is_empty() {
        return Ok(None);
    }
    render(&confidence_by_category_plot(strat), dir).map(Some)
}

/// Appends the section.
pub(crate) fn write(d: &mut Document, a: &Analysis) {
    let s = &a.stratification;
    let metric = metric_name(s.metric);
    d.heading(2, "Confidence stratification");
    d.paragraph(format!(
        "An instance's confidence is the mean {metric} of the traces that voted. \"Uncertain\" means below the {}th percentile of this run's instance confidences, **{}**; \"confident\" means at or above it. The threshold is relative to this run, not a fixed cutoff.",
        s.uncertain_percentile,
        num(s.threshold, 3)
    ));
    d.table(
        &[
            "bucket",
            "n",
            "harmful",
            "benign",
            "correct",
            "accuracy",
            "mean confidence",
        ],
        s.buckets
            .iter()
            .map(|b| {
                vec![
                    b.bucket.name().to_string(),
                    b.n.to_string(),
                    b.harmful.to_string(),
                    b.benign.to_string(),
                    b.correct.to_string(),
                    pct(b.accuracy),
                    num(b.confidence.mean, 3),
                ]
            })
            .collect(),
    );
    CONFIDENCE_BUCKETS.place(d, a);
    d.heading(3, "Confidence by correctness");
    d.table(
        &DESCRIBE_HEADER,
        s.by_correctness
            .iter()
            .map(|(k, v)| describe_row(k, v))
            .collect(),
    );
    CONFIDENCE_BY_CORRECTNESS.place(d, a);
    d.heading(3, "Confidence by gold label");
    d.table(
        &DESCRIBE_HEADER,
        s.by_gold.iter().map(|(k, v)| describe_row(k, v)).collect(),
    );
    CONFIDENCE_BY_GOLD.place(d, a);
    if !s.by_category.is_empty() {
        d.heading(3, "Confidence by dataset category");
        d.table(
            &DESCRIBE_HEADER,
            s.by_category
                .iter()
                .map(|(k, v)| describe_row(k, v))
                .collect(),
        );
        CONFIDENCE_BY_CATEGORY.place(d, a);
    }
}
