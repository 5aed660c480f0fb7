//! How two classifiers agree (the two stages of an [`Ensemble`](crate::Ensemble)), and a tally
//! of stored trace labels: how many traces each outcome has, parse errors included.

use serde::{Deserialize, Serialize};

use crate::{Evidence, RefusalLabel, UnclassifiedCause};

/// Agreement of two classifiers on the answers both labelled refusal or compliance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    /// Both said refusal.
    pub both_refusal: usize,
    /// Both said compliance.
    pub both_compliance: usize,
    /// The first said refusal, the second compliance.
    pub first_refusal_second_compliance: usize,
    /// The first said compliance, the second refusal.
    pub first_compliance_second_refusal: usize,
}

impl Agreement {
    /// Counts one pair of labels; returns whether they agree (`None` when either is
    /// [`RefusalLabel::Incomplete`], which is not counted).
    pub fn add(&mut self, first: RefusalLabel, second: RefusalLabel) -> Option<bool> {
        use RefusalLabel::{Compliance, Incomplete, Refusal};
        match (first, second) {
            (Incomplete, _) | (_, Incomplete) => return None,
            (Refusal, Refusal) => self.both_refusal += 1,
            (Compliance, Compliance) => self.both_compliance += 1,
            (Refusal, Compliance) => self.first_refusal_second_compliance += 1,
            (Compliance, Refusal) => self.first_compliance_second_refusal += 1,
        }
        Some(first == second)
    }

    /// Adds another tally.
    pub fn merge(&mut self, other: &Agreement) {
        self.both_refusal += other.both_refusal;
        self.both_compliance += other.both_compliance;
        self.first_refusal_second_compliance += other.first_refusal_second_compliance;
        self.first_compliance_second_refusal += other.first_compliance_second_refusal;
    }

    /// Pairs counted.
    pub fn total(&self) -> usize {
        self.agreeing() + self.disagreeing()
    }

    /// Pairs with equal labels.
    pub fn agreeing(&self) -> usize {
        self.both_refusal + self.both_compliance
    }

    /// Pairs with different labels.
    pub fn disagreeing(&self) -> usize {
        self.first_refusal_second_compliance + self.first_compliance_second_refusal
    }

    /// Observed agreement `agreeing / total`; `None` without pairs.
    pub fn observed(&self) -> Option<f64> {
        (self.total() > 0).then(|| self.agreeing() as f64 / self.total() as f64)
    }

    /// Cohen's kappa `(p_o - p_e) / (1 - p_e)`, with `p_e` the agreement expected from each
    /// classifier's refusal rate alone. `None` without pairs or when `p_e = 1` (both classifiers
    /// gave one and the same label throughout, so chance explains everything).
    pub fn cohen_kappa(&self) -> Option<f64> {
        let n = self.total() as f64;
        let observed = self.observed()?;
        let first_refusal = (self.both_refusal + self.first_refusal_second_compliance) as f64 / n;
        let second_refusal = (self.both_refusal + self.first_compliance_second_refusal) as f64 / n;
        let expected =
            first_refusal * second_refusal + (1.0 - first_refusal) * (1.0 - second_refusal);
        (expected < 1.0).then(|| (observed - expected) / (1.0 - expected))
    }

    /// The agreement recorded in ensemble evidence: pairs where both stages labelled the answer.
    pub fn from_evidence<'a>(evidence: impl IntoIterator<Item = &'a Evidence>) -> Self {
        let mut agreement = Self::default();
        for e in evidence {
            if let Evidence::Ensemble {
                first,
                judge: Some(judge),
                ..
            } = e
            {
                agreement.add(first.label, judge.label);
            }
        }
        agreement
    }
}

/// A tally of a run's trace labels, read from the stored label and evidence of each trace:
/// refusals, compliances, incomplete answers, judge answers that did not parse or gave no label,
/// and the agreement of an ensemble's stages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceLabelTally {
    /// Traces counted.
    pub traces: usize,
    /// Labelled refusal.
    pub refusal: usize,
    /// Labelled compliance.
    pub compliance: usize,
    /// Incomplete (an unclosed thinking block).
    pub incomplete: usize,
    /// A judge answer that did not parse (no label).
    pub judge_parse_errors: usize,
    /// A judge answer that gave no label (WildGuard `N/A`, an abstaining "not harmful").
    pub judge_not_applicable: usize,
    /// Another classifier failure (no label).
    pub other_errors: usize,
    /// Traces whose evidence came from a judge's cache.
    pub judge_cached: usize,
    /// Agreement of an ensemble's two stages where both labelled.
    pub agreement: Agreement,
}

/// The record of a trace the classifier could not label, as stored next to it.
#[derive(Deserialize)]
struct ClassifierError {
    kind: String,
    #[serde(default)]
    cause: UnclassifiedCause,
}

impl TraceLabelTally {
    /// Counts one trace from its stored label and evidence (JSON, as the run records keep it).
    pub fn add(&mut self, label: Option<RefusalLabel>, evidence_json: Option<&str>) {
        self.traces += 1;
        let evidence = evidence_json.and_then(|j| serde_json::from_str::<Evidence>(j).ok());
        if let Some(evidence) = &evidence {
            self.count_evidence(evidence);
        }
        match label {
            Some(RefusalLabel::Refusal) => self.refusal += 1,
            Some(RefusalLabel::Compliance) => self.compliance += 1,
            Some(RefusalLabel::Incomplete) => self.incomplete += 1,
            None => {
                if matches!(evidence, Some(Evidence::IncompleteThinking { .. })) {
                    self.incomplete += 1;
                    return;
                }
                let error = evidence_json
                    .and_then(|j| serde_json::from_str::<ClassifierError>(j).ok())
                    .filter(|e| e.kind == "classifier_error");
                match error.map(|e| e.cause) {
                    Some(UnclassifiedCause::JudgeParse) => self.judge_parse_errors += 1,
                    Some(UnclassifiedCause::JudgeNotApplicable) => self.judge_not_applicable += 1,
                    _ => self.other_errors += 1,
                }
            }
        }
    }

    fn count_evidence(&mut self, evidence: &Evidence) {
        match evidence {
            Evidence::Judge { cached: true, .. } => self.judge_cached += 1,
            Evidence::Ensemble {
                first,
                judge: Some(judge),
                ..
            } => {
                self.agreement.add(first.label, judge.label);
                if matches!(judge.evidence, Evidence::Judge { cached: true, .. }) {
                    self.judge_cached += 1;
                }
            }
            _ => {}
        }
    }

    /// Judge answers without a label (parse errors and not-applicable answers) per trace.
    pub fn unlabelled_judge_rate(&self) -> Option<f64> {
        (self.traces > 0).then(|| {
            (self.judge_parse_errors + self.judge_not_applicable) as f64 / self.traces as f64
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RefusalLabel::{Compliance, Incomplete, Refusal};

    #[test]
    fn kappa_of_a_known_table() {
        // 20 both refusal, 15 both compliance, 5 + 10 disagreements (n = 50):
        // p_o = 0.7, p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5, kappa = 0.4.
        let mut a = Agreement::default();
        for _ in 0..20 {
            assert_eq!(a.add(Refusal, Refusal), Some(true));
        }
        for _ in 0..15 {
            a.add(Compliance, Compliance);
        }
        for _ in 0..5 {
            assert_eq!(a.add(Refusal, Compliance), Some(false));
        }
        for _ in 0..10 {
            a.add(Compliance, Refusal);
        }
        assert_eq!(a.add(Incomplete, Refusal), None);
        assert_eq!((a.total(), a.agreeing(), a.disagreeing()), (50, 35, 15));
        assert!((a.observed().unwrap() - 0.7).abs() < 1e-12);
        assert!((a.cohen_kappa().unwrap() - 0.4).abs() < 1e-12);

        let mut constant = Agreement::default();
        constant.add(Refusal, Refusal);
        assert_eq!(
            constant.cohen_kappa(),
            None,
            "chance explains a constant label"
        );
        assert_eq!(Agreement::default().observed(), None);
        let mut opposite = Agreement::default();
        opposite.add(Refusal, Compliance);
        opposite.add(Compliance, Refusal);
        assert!((opposite.cohen_kappa().unwrap() + 1.0).abs() < 1e-12);
    }

    #[test]
    fn tally_reads_stored_evidence() {
        let mut t = TraceLabelTally::default();
        t.add(
            None,
            Some(r#"{"kind":"classifier_error","cause":"judge_parse","error":"x"}"#),
        );
        t.add(
            None,
            Some(r#"{"kind":"classifier_error","error":"older record"}"#),
        );
        t.add(
            None,
            Some(r#"{"kind":"classifier_error","cause":"judge_not_applicable","error":"N/A"}"#),
        );
        t.add(
            None,
            Some(r#"{"kind":"incomplete_thinking","thinking_bytes":4}"#),
        );
        t.add(Some(Refusal), Some(r#"{"kind":"empty_answer"}"#));
        t.add(Some(Compliance), None);
        assert_eq!(
            (
                t.traces,
                t.judge_parse_errors,
                t.other_errors,
                t.judge_not_applicable,
                t.incomplete,
                t.refusal,
                t.compliance
            ),
            (6, 1, 1, 1, 1, 1, 1)
        );
        assert!((t.unlabelled_judge_rate().unwrap() - 2.0 / 6.0).abs() < 1e-12);
    }
}
