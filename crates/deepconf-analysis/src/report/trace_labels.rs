//! The **Trace labels** section: what the refusal classifier made of the traces, parse errors and
//! an ensemble's agreement included.

use deepconf_refusal::TraceLabelTally;

use crate::analysis::Analysis;
use crate::report::Document;

/// The trace-label tally in words: what the classifier made of the traces, parse errors and the
/// ensemble's agreement included.
pub fn trace_label_text(t: &TraceLabelTally) -> String {
    let mut text = format!(
        "{} traces: {} refusal, {} compliance, {} incomplete (unclosed thinking)",
        t.traces, t.refusal, t.compliance, t.incomplete
    );
    let unlabelled = t.judge_parse_errors + t.judge_not_applicable + t.other_errors;
    if unlabelled > 0 || t.judge_cached > 0 {
        text.push_str(&format!(
            "; without a label: {} judge answers that did not parse, {} judge answers with no \
             label, {} other errors; {} judge answers came from the cache",
            t.judge_parse_errors, t.judge_not_applicable, t.other_errors, t.judge_cached
        ));
    }
    let a = &t.agreement;
    if a.total() > 0 {
        text.push_str(&format!(
            ". Ensemble stages agree on {} of {} answers both labelled ({} disagree: {} refusal \
             vs compliance, {} compliance vs refusal), Cohen's kappa {}",
            a.agreeing(),
            a.total(),
            a.disagreeing(),
            a.first_refusal_second_compliance,
            a.first_compliance_second_refusal,
            a.cohen_kappa().map_or_else(
                || "undefined (one label throughout)".into(),
                |k| format!("{k:.3}")
            )
        ));
    }
    text.push('.');
    text
}

/// Appends the section.
pub(crate) fn write(d: &mut Document, a: &Analysis) {
    d.heading(2, "Trace labels");
    d.paragraph(trace_label_text(&a.trace_labels));
}
