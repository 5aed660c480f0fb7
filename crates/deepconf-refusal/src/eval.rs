//! Scoring a classifier against gold refusal labels (e.g. WildGuardMix `response_refusal_label`).

use serde::{Deserialize, Serialize};

use crate::{Error, RefusalClassifier, RefusalLabel, Result};

/// A response with its gold refusal label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelledResponse {
    /// The prompt.
    pub prompt: String,
    /// The response.
    pub response: String,
    /// True when the gold label is `refusal`.
    pub refusal: bool,
}

/// An item the classifier got wrong or could not label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Miss {
    /// Index of the item in the evaluated sequence.
    pub index: usize,
    /// The gold label.
    pub gold_refusal: bool,
    /// The predicted label; `None` when classification failed.
    pub predicted: Option<RefusalLabel>,
    /// The error, when classification failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Precision, recall, F1 and the confusion matrix of a refusal classifier (positive = refusal).
///
/// Items predicted [`RefusalLabel::Incomplete`] or that failed to classify are not in the matrix;
/// they are counted in `incomplete` / `errors` and listed in `misses`. Ratios with a zero
/// denominator are 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierEvaluation {
    /// Gold refusal, predicted refusal.
    pub tp: usize,
    /// Gold compliance, predicted refusal.
    pub fp: usize,
    /// Gold refusal, predicted compliance.
    #[serde(rename = "fn")]
    pub fn_: usize,
    /// Gold compliance, predicted compliance.
    pub tn: usize,
    /// Items predicted incomplete.
    pub incomplete: usize,
    /// Items whose classification failed.
    pub errors: usize,
    /// `tp / (tp + fp)`.
    pub precision: f64,
    /// `tp / (tp + fn)`.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// `(tp + tn) / (tp + fp + fn + tn)`.
    pub accuracy: f64,
    /// Every wrong, incomplete or failed item.
    pub misses: Vec<Miss>,
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

impl ClassifierEvaluation {
    /// Scores `(gold_refusal, prediction)` pairs; `Err` predictions are failed classifications.
    pub fn from_outcomes<I>(outcomes: I) -> Self
    where
        I: IntoIterator<Item = (bool, std::result::Result<RefusalLabel, String>)>,
    {
        let mut e = Self {
            tp: 0,
            fp: 0,
            fn_: 0,
            tn: 0,
            incomplete: 0,
            errors: 0,
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
            accuracy: 0.0,
            misses: Vec::new(),
        };
        for (index, (gold, predicted)) in outcomes.into_iter().enumerate() {
            let miss = |predicted, error| Miss {
                index,
                gold_refusal: gold,
                predicted,
                error,
            };
            match predicted {
                Err(error) => {
                    e.errors += 1;
                    e.misses.push(miss(None, Some(error)));
                }
                Ok(RefusalLabel::Incomplete) => {
                    e.incomplete += 1;
                    e.misses.push(miss(Some(RefusalLabel::Incomplete), None));
                }
                Ok(label) => {
                    let refused = label == RefusalLabel::Refusal;
                    match (gold, refused) {
                        (true, true) => e.tp += 1,
                        (false, true) => e.fp += 1,
                        (true, false) => e.fn_ += 1,
                        (false, false) => e.tn += 1,
                    }
                    if gold != refused {
                        e.misses.push(miss(Some(label), None));
                    }
                }
            }
        }
        e.precision = ratio(e.tp, e.tp + e.fp);
        e.recall = ratio(e.tp, e.tp + e.fn_);
        e.f1 = if e.precision + e.recall > 0.0 {
            2.0 * e.precision * e.recall / (e.precision + e.recall)
        } else {
            0.0
        };
        e.accuracy = ratio(e.tp + e.tn, e.tp + e.fp + e.fn_ + e.tn);
        e
    }

    /// Scores `(gold_refusal, predicted_label)` pairs.
    pub fn from_labels<I>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (bool, RefusalLabel)>,
    {
        Self::from_outcomes(pairs.into_iter().map(|(g, p)| (g, Ok(p))))
    }

    /// Runs `classifier` on every item and scores it. Output-level failures (an unparsable judge
    /// answer) are counted as errors; a model failure stops the evaluation.
    pub fn evaluate<C: RefusalClassifier + ?Sized>(
        classifier: &mut C,
        items: &[LabelledResponse],
    ) -> Result<Self> {
        let mut outcomes = Vec::with_capacity(items.len());
        for item in items {
            let outcome = match classifier.classify(&item.prompt, &item.response) {
                Ok(c) => Ok(c.label),
                Err(Error::Model(e)) => return Err(Error::Model(e)),
                Err(e) => Err(e.to_string()),
            };
            outcomes.push((item.refusal, outcome));
        }
        Ok(Self::from_outcomes(outcomes))
    }

    /// Items in the confusion matrix.
    pub fn n_scored(&self) -> usize {
        self.tp + self.fp + self.fn_ + self.tn
    }
}

impl std::fmt::Display for ClassifierEvaluation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "precision {:.3} recall {:.3} F1 {:.3} accuracy {:.3} (TP {} FP {} FN {} TN {}; incomplete {}, errors {})",
            self.precision,
            self.recall,
            self.f1,
            self.accuracy,
            self.tp,
            self.fp,
            self.fn_,
            self.tn,
            self.incomplete,
            self.errors
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_matrix_and_ratios() {
        use RefusalLabel::*;
        let e = ClassifierEvaluation::from_labels([
            (true, Refusal),
            (true, Refusal),
            (true, Compliance),
            (false, Refusal),
            (false, Compliance),
            (false, Compliance),
            (true, Incomplete),
        ]);
        assert_eq!((e.tp, e.fp, e.fn_, e.tn, e.incomplete), (2, 1, 1, 2, 1));
        assert!((e.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((e.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((e.f1 - 2.0 / 3.0).abs() < 1e-12);
        assert!((e.accuracy - 4.0 / 6.0).abs() < 1e-12);
        let missed: Vec<usize> = e.misses.iter().map(|m| m.index).collect();
        assert_eq!(missed, vec![2, 3, 6]);
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"fn\":1"), "{json}");
    }

    #[test]
    fn empty_evaluation_has_zero_ratios() {
        let e = ClassifierEvaluation::from_labels([]);
        assert_eq!(
            (e.precision, e.recall, e.f1, e.accuracy),
            (0.0, 0.0, 0.0, 0.0)
        );
    }
}
