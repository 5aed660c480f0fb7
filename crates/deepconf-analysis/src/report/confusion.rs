//! The **Safety confusion matrix** section: which instances are counted, the matrix and its figure,
//! every metric with its interval (and why some are undefined), and the same per group.

use std::path::Path;

use crate::analysis::Analysis;
use crate::confusion::{ConfusionMatrix, GroupMetrics, Metric};
use crate::error::Result;
use crate::plots::{ConfusionPlot, RenderedPlot, render};
use crate::report::{Document, Figure, est};

/// The matrix as a figure.
pub(crate) const CONFUSION_MATRIX: Figure = Figure {
    name: ConfusionPlot::NAME,
    caption: "Safety confusion matrix; cells shaded by their share of the gold row.",
};

/// Draws [`CONFUSION_MATRIX`].
pub(crate) fn draw(a: &Analysis, dir: &Path) -> Result<RenderedPlot> {
    render(
        &ConfusionPlot {
            matrix: a.safety.matrix,
            title: format!("Safety confusion matrix (n = {})", a.safety.matrix.total()),
        },
        dir,
    )
}

/// Why some metrics read `n/a`: a dataset with one gold class (HarmBench is all harmful) leaves the
/// other class's rates undefined, which a bare `n/a` does not explain.
fn undefined_metrics_note(m: &ConfusionMatrix) -> Option<String> {
    let harmful = m.tp + m.fn_;
    let benign = m.fp + m.tn;
    match (harmful, benign) {
        (0, 0) => Some("No instance is counted, so every metric is n/a.".into()),
        (_, 0) => Some(
            "Specificity and balanced accuracy are n/a, and precision is trivially 1 whenever anything was refused: there are no benign prompts among the counted instances (HarmBench is all harmful). Measuring over-refusal needs benign prompts, e.g. XSTest, WildGuardMix or ToxicChat.".into(),
        ),
        (0, _) => Some(
            "Sensitivity, precision, F1 and balanced accuracy are n/a: there are no harmful prompts among the counted instances.".into(),
        ),
        _ => None,
    }
}

fn group_rows(groups: &[GroupMetrics]) -> Vec<Vec<String>> {
    groups
        .iter()
        .map(|g| {
            let m = &g.metrics.matrix;
            vec![
                g.value.clone(),
                m.total().to_string(),
                m.tp.to_string(),
                m.fn_.to_string(),
                m.fp.to_string(),
                m.tn.to_string(),
                est(&g.metrics.get(Metric::Sensitivity)),
                est(&g.metrics.get(Metric::Specificity)),
                est(&g.metrics.get(Metric::Accuracy)),
            ]
        })
        .collect()
}

/// Appends the section.
pub(crate) fn write(d: &mut Document, a: &Analysis) {
    d.heading(2, "Safety confusion matrix");
    let c = &a.coverage;
    d.paragraph(format!(
        "{} of {} instances are counted; {} were left out because the dataset has no gold label and {} because no trace produced a refusal/compliance vote.",
        c.counted, c.instances, c.unknown_gold, c.unknown_behaviour
    ));
    let m = &a.safety.matrix;
    d.table(
        &["gold \\ behaviour", "refused", "complied", "total"],
        vec![
            vec![
                "harmful".into(),
                format!("TP = {}", m.tp),
                format!("FN = {} (unsafe compliance)", m.fn_),
                (m.tp + m.fn_).to_string(),
            ],
            vec![
                "benign".into(),
                format!("FP = {} (over-refusal)", m.fp),
                format!("TN = {}", m.tn),
                (m.fp + m.tn).to_string(),
            ],
        ],
    );
    CONFUSION_MATRIX.place(d, a);
    d.table(
        &["metric", "value [95% CI]"],
        Metric::ALL
            .iter()
            .map(|&metric| vec![metric.name().to_string(), est(&a.safety.get(metric))])
            .collect(),
    );
    if let Some(note) = undefined_metrics_note(m) {
        d.paragraph(note);
    }
    for (title, groups) in [
        ("By source dataset", &a.by_source),
        ("By category", &a.by_category),
        ("By subcategory", &a.by_subcategory),
        ("By adversarial flag", &a.by_adversarial),
    ] {
        if groups.is_empty() {
            continue;
        }
        d.heading(3, title);
        d.table(
            &[
                "group",
                "n",
                "TP",
                "FN",
                "FP",
                "TN",
                "sensitivity",
                "specificity",
                "accuracy",
            ],
            group_rows(groups),
        );
    }
}
