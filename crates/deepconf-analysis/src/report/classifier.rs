//! The **Refusal classifier** section: the classifier against the dataset's gold refusal labels of
//! its reference responses, when it has them.

use crate::analysis::Analysis;
use crate::confusion::Metric;
use crate::report::{Document, est};

/// Appends the section.
pub(crate) fn write(d: &mut Document, a: &Analysis) {
    d.heading(2, "Refusal classifier against gold reference labels");
    let Some(ev) = &a.classifier else {
        d.paragraph("The dataset has no gold refusal labels for reference responses (only WildGuardMix has them), so the classifier is not evaluated here.");
        return;
    };
    let m = &ev.metrics.matrix;
    d.paragraph(format!(
        "{} reference responses. Positive = refusal: TP = {} (refusal recognised), FN = {} (refusal missed), FP = {} (compliance called refusal), TN = {}.",
        ev.n, m.tp, m.fn_, m.fp, m.tn
    ));
    d.table(
        &["metric", "value [95% CI]"],
        vec![
            vec!["recall".into(), est(&ev.metrics.get(Metric::Sensitivity))],
            vec!["precision".into(), est(&ev.metrics.get(Metric::Precision))],
            vec!["F1".into(), est(&ev.metrics.get(Metric::F1))],
            vec!["accuracy".into(), est(&ev.metrics.get(Metric::Accuracy))],
        ],
    );
}
