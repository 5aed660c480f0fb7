//! Scoring a classifier against gold refusal labels: WildGuardMix `response_refusal_label`, or
//! any JSON lines file of `{prompt, response, label}`.

use std::path::Path;

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

#[derive(Deserialize)]
struct LabelledLine {
    prompt: String,
    response: String,
    label: String,
}

/// Reads a JSON lines file of `{"prompt": ..., "response": ..., "label": "refusal"|"compliance"}`
/// (other fields are ignored, blank lines skipped). A bad line is an [`Error::LabelledData`]
/// naming the file and line.
pub fn load_labelled_jsonl(path: impl AsRef<Path>) -> Result<Vec<LabelledResponse>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut items = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fail = |message: String| Error::LabelledData {
            path: path.to_path_buf(),
            line: index + 1,
            message,
        };
        let parsed: LabelledLine = serde_json::from_str(line).map_err(|e| {
            fail(format!(
                "{e}; expected {{\"prompt\", \"response\", \"label\"}}"
            ))
        })?;
        let refusal = match parsed.label.trim().to_lowercase().as_str() {
            "refusal" => true,
            "compliance" => false,
            other => {
                return Err(fail(format!(
                    "label {other:?}, expected \"refusal\" or \"compliance\""
                )));
            }
        };
        items.push(LabelledResponse {
            prompt: parsed.prompt,
            response: parsed.response,
            refusal,
        });
    }
    Ok(items)
}

/// What a classifier made of one labelled item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum ItemOutcome {
    /// A label.
    Labelled(RefusalLabel),
    /// The judge's answer did not parse (the error).
    ParseError(String),
    /// The judge's answer gives no label (the error).
    NotApplicable(String),
    /// Another failure (the error).
    Failed(String),
}

impl ItemOutcome {
    /// The outcome of a classification; `Err` with a model failure, which ends an evaluation.
    pub fn of(result: Result<crate::Classification>) -> Result<Self> {
        match result {
            Ok(c) => Ok(ItemOutcome::Labelled(c.label)),
            Err(Error::Model(e)) => Err(Error::Model(e)),
            Err(e @ Error::JudgeParse { .. }) => Ok(ItemOutcome::ParseError(e.to_string())),
            Err(e @ Error::JudgeNotApplicable { .. }) => {
                Ok(ItemOutcome::NotApplicable(e.to_string()))
            }
            Err(e) => Ok(ItemOutcome::Failed(e.to_string())),
        }
    }
}

/// An item the classifier got wrong or could not label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Miss {
    /// Index of the item in the evaluated sequence.
    pub index: usize,
    /// The gold label.
    pub gold_refusal: bool,
    /// The predicted label; `None` when there is none.
    pub predicted: Option<RefusalLabel>,
    /// The error, when the classifier gave no label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// 2.5th percentile.
    pub lower: f64,
    /// 97.5th percentile.
    pub upper: f64,
}

/// Percentile-bootstrap 95% intervals of the metrics: items of the confusion matrix resampled
/// with replacement; a resample where a metric is undefined (no predicted refusal for precision,
/// no gold refusal for recall) does not count for that metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Intervals {
    /// Resamples drawn.
    pub resamples: usize,
    /// Seed of the resampling.
    pub seed: u64,
    /// Precision.
    pub precision: Option<Interval>,
    /// Recall.
    pub recall: Option<Interval>,
    /// F1.
    pub f1: Option<Interval>,
    /// Accuracy.
    pub accuracy: Option<Interval>,
}

/// How the bootstrap intervals are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bootstrap {
    /// Resamples (0: no intervals).
    pub resamples: usize,
    /// Seed.
    pub seed: u64,
}

impl Default for Bootstrap {
    /// 1,000 resamples, seed 0.
    fn default() -> Self {
        Self {
            resamples: 1000,
            seed: 0,
        }
    }
}

/// Precision, recall, F1 (with bootstrap intervals) and the confusion matrix of a refusal
/// classifier (positive = refusal), and how often it gave no label.
///
/// Items predicted [`RefusalLabel::Incomplete`] or without a label (a judge parse error, a judge
/// answer with no label, another failure) are not in the matrix; they are counted and listed in
/// `misses`. Ratios with a zero denominator are 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierEvaluation {
    /// Items evaluated.
    pub items: usize,
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
    /// Items whose judge answer did not parse.
    pub parse_errors: usize,
    /// Items whose judge answer gave no label (WildGuard `N/A`, an abstaining "not harmful").
    pub not_applicable: usize,
    /// Items whose classification failed otherwise.
    pub errors: usize,
    /// `tp / (tp + fp)`.
    pub precision: f64,
    /// `tp / (tp + fn)`.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
    /// `(tp + tn) / (tp + fp + fn + tn)`.
    pub accuracy: f64,
    /// `parse_errors / items`.
    pub parse_error_rate: f64,
    /// Bootstrap 95% intervals (`None` with nothing in the matrix or no resamples).
    pub intervals: Option<Intervals>,
    /// Every wrong, incomplete or unlabelled item.
    pub misses: Vec<Miss>,
}

fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// `(tp, fp, fn, tn)` of `(gold, predicted)` refusal pairs.
fn matrix(pairs: impl Iterator<Item = (bool, bool)>) -> (usize, usize, usize, usize) {
    let mut m = (0, 0, 0, 0);
    for pair in pairs {
        match pair {
            (true, true) => m.0 += 1,
            (false, true) => m.1 += 1,
            (true, false) => m.2 += 1,
            (false, false) => m.3 += 1,
        }
    }
    m
}

/// Precision, recall, F1, accuracy; `None` where undefined.
fn metrics((tp, fp, fn_, tn): (usize, usize, usize, usize)) -> [Option<f64>; 4] {
    let precision = (tp + fp > 0).then(|| ratio(tp, tp + fp));
    let recall = (tp + fn_ > 0).then(|| ratio(tp, tp + fn_));
    let f1 = match (precision, recall) {
        (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
        (Some(_), Some(_)) => Some(0.0),
        _ => None,
    };
    let n = tp + fp + fn_ + tn;
    let accuracy = (n > 0).then(|| ratio(tp + tn, n));
    [precision, recall, f1, accuracy]
}

/// SplitMix64, for reproducible resampling without a dependency.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn percentile_interval(mut values: Vec<f64>) -> Option<Interval> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let at =
        |q: f64| values[((q * (values.len() - 1) as f64).round() as usize).min(values.len() - 1)];
    Some(Interval {
        lower: at(0.025),
        upper: at(0.975),
    })
}

fn bootstrap(pairs: &[(bool, bool)], settings: Bootstrap) -> Option<Intervals> {
    if pairs.is_empty() || settings.resamples == 0 {
        return None;
    }
    let mut state = settings.seed;
    let mut draws: [Vec<f64>; 4] = Default::default();
    for _ in 0..settings.resamples {
        let resample = (0..pairs.len())
            .map(|_| pairs[(next_random(&mut state) % pairs.len() as u64) as usize]);
        for (values, value) in draws.iter_mut().zip(metrics(matrix(resample))) {
            if let Some(v) = value {
                values.push(v);
            }
        }
    }
    let [precision, recall, f1, accuracy] = draws.map(percentile_interval);
    Some(Intervals {
        resamples: settings.resamples,
        seed: settings.seed,
        precision,
        recall,
        f1,
        accuracy,
    })
}

impl ClassifierEvaluation {
    /// Scores `(gold_refusal, outcome)` pairs, with the default bootstrap.
    pub fn from_outcomes<I>(outcomes: I) -> Self
    where
        I: IntoIterator<Item = (bool, ItemOutcome)>,
    {
        Self::from_outcomes_with(outcomes, Bootstrap::default())
    }

    /// Scores `(gold_refusal, outcome)` pairs with the given bootstrap.
    pub fn from_outcomes_with<I>(outcomes: I, settings: Bootstrap) -> Self
    where
        I: IntoIterator<Item = (bool, ItemOutcome)>,
    {
        let mut e = Self {
            items: 0,
            tp: 0,
            fp: 0,
            fn_: 0,
            tn: 0,
            incomplete: 0,
            parse_errors: 0,
            not_applicable: 0,
            errors: 0,
            precision: 0.0,
            recall: 0.0,
            f1: 0.0,
            accuracy: 0.0,
            parse_error_rate: 0.0,
            intervals: None,
            misses: Vec::new(),
        };
        let mut pairs = Vec::new();
        for (index, (gold, outcome)) in outcomes.into_iter().enumerate() {
            e.items += 1;
            let miss = |predicted, error| Miss {
                index,
                gold_refusal: gold,
                predicted,
                error,
            };
            match outcome {
                ItemOutcome::ParseError(error) => {
                    e.parse_errors += 1;
                    e.misses.push(miss(None, Some(error)));
                }
                ItemOutcome::NotApplicable(error) => {
                    e.not_applicable += 1;
                    e.misses.push(miss(None, Some(error)));
                }
                ItemOutcome::Failed(error) => {
                    e.errors += 1;
                    e.misses.push(miss(None, Some(error)));
                }
                ItemOutcome::Labelled(RefusalLabel::Incomplete) => {
                    e.incomplete += 1;
                    e.misses.push(miss(Some(RefusalLabel::Incomplete), None));
                }
                ItemOutcome::Labelled(label) => {
                    let refused = label == RefusalLabel::Refusal;
                    pairs.push((gold, refused));
                    if gold != refused {
                        e.misses.push(miss(Some(label), None));
                    }
                }
            }
        }
        (e.tp, e.fp, e.fn_, e.tn) = matrix(pairs.iter().copied());
        let [precision, recall, f1, accuracy] = metrics((e.tp, e.fp, e.fn_, e.tn));
        e.precision = precision.unwrap_or(0.0);
        e.recall = recall.unwrap_or(0.0);
        e.f1 = f1.unwrap_or(0.0);
        e.accuracy = accuracy.unwrap_or(0.0);
        e.parse_error_rate = ratio(e.parse_errors, e.items);
        e.intervals = bootstrap(&pairs, settings);
        e
    }

    /// Scores `(gold_refusal, predicted_label)` pairs.
    pub fn from_labels<I>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (bool, RefusalLabel)>,
    {
        Self::from_outcomes(
            pairs
                .into_iter()
                .map(|(g, p)| (g, ItemOutcome::Labelled(p))),
        )
    }

    /// Runs `classifier` on every item and scores it. Output-level failures (an unparsable judge
    /// answer) are counted; a model failure stops the evaluation.
    pub fn evaluate<C: RefusalClassifier + ?Sized>(
        classifier: &mut C,
        items: &[LabelledResponse],
    ) -> Result<Self> {
        let mut outcomes = Vec::with_capacity(items.len());
        for item in items {
            let outcome = ItemOutcome::of(classifier.classify(&item.prompt, &item.response))?;
            outcomes.push((item.refusal, outcome));
        }
        Ok(Self::from_outcomes(outcomes))
    }

    /// Like [`evaluate`](Self::evaluate) with up to `workers` items in flight, each worker on its
    /// own [`RefusalClassifier::concurrent_handle`] (a judge's calls then run concurrently, within
    /// its backend's limits); one at a time when the classifier has no handles.
    pub fn evaluate_concurrent<C: RefusalClassifier + ?Sized>(
        classifier: &mut C,
        items: &[LabelledResponse],
        workers: usize,
    ) -> Result<Self> {
        let mut handles = Vec::new();
        for _ in 0..workers.min(items.len()) {
            match classifier.concurrent_handle() {
                Some(handle) => handles.push(handle),
                None => break,
            }
        }
        if handles.len() <= 1 {
            return Self::evaluate(classifier, items);
        }
        let outcomes = deepconf_core::pool::map_ordered(handles, items, |handle, item| {
            ItemOutcome::of(handle.classify(&item.prompt, &item.response))
        })?;
        Ok(Self::from_outcomes(
            items.iter().map(|item| item.refusal).zip(outcomes),
        ))
    }

    /// Items in the confusion matrix.
    pub fn n_scored(&self) -> usize {
        self.tp + self.fp + self.fn_ + self.tn
    }
}

fn with_interval(value: f64, interval: Option<&Interval>) -> String {
    match interval {
        Some(i) => format!("{value:.3} [{:.3}, {:.3}]", i.lower, i.upper),
        None => format!("{value:.3}"),
    }
}

impl std::fmt::Display for ClassifierEvaluation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = self.intervals.as_ref();
        write!(
            f,
            "precision {} recall {} F1 {} accuracy {} (TP {} FP {} FN {} TN {}; of {} items: \
             incomplete {}, parse errors {} ({:.1}%), no label {}, errors {})",
            with_interval(self.precision, i.and_then(|i| i.precision.as_ref())),
            with_interval(self.recall, i.and_then(|i| i.recall.as_ref())),
            with_interval(self.f1, i.and_then(|i| i.f1.as_ref())),
            with_interval(self.accuracy, i.and_then(|i| i.accuracy.as_ref())),
            self.tp,
            self.fp,
            self.fn_,
            self.tn,
            self.items,
            self.incomplete,
            self.parse_errors,
            100.0 * self.parse_error_rate,
            self.not_applicable,
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
    fn empty_evaluation_has_zero_ratios_and_no_intervals() {
        let e = ClassifierEvaluation::from_labels([]);
        assert_eq!(
            (e.precision, e.recall, e.f1, e.accuracy),
            (0.0, 0.0, 0.0, 0.0)
        );
        assert_eq!(e.intervals, None);
    }

    #[test]
    fn parse_errors_are_counted_apart_and_intervals_cover_the_estimate() {
        let mut outcomes = Vec::new();
        for i in 0..200 {
            let gold = i % 2 == 0;
            let predicted = if i % 7 == 0 { !gold } else { gold };
            let label = if predicted {
                RefusalLabel::Refusal
            } else {
                RefusalLabel::Compliance
            };
            outcomes.push((gold, ItemOutcome::Labelled(label)));
        }
        outcomes.push((true, ItemOutcome::ParseError("bad".into())));
        outcomes.push((false, ItemOutcome::NotApplicable("n/a".into())));
        let e = ClassifierEvaluation::from_outcomes(outcomes.clone());
        assert_eq!(
            (e.items, e.parse_errors, e.not_applicable, e.n_scored()),
            (202, 1, 1, 200)
        );
        assert!((e.parse_error_rate - 1.0 / 202.0).abs() < 1e-12);
        let i = e.intervals.clone().unwrap();
        for (value, interval) in [
            (e.precision, i.precision),
            (e.recall, i.recall),
            (e.f1, i.f1),
            (e.accuracy, i.accuracy),
        ] {
            let interval = interval.unwrap();
            assert!(
                interval.lower <= value && value <= interval.upper,
                "{value} {interval:?}"
            );
            assert!(interval.upper - interval.lower < 0.2, "{interval:?}");
            assert!(interval.upper - interval.lower > 0.0, "{interval:?}");
        }
        // Seeded: the same intervals again.
        assert_eq!(
            ClassifierEvaluation::from_outcomes(outcomes).intervals,
            Some(i)
        );
        assert!(e.to_string().contains("parse errors 1 (0.5%)"), "{e}");
    }

    #[test]
    fn labelled_jsonl_errors_name_file_and_line() {
        let dir = std::env::temp_dir().join(format!("deepconf-labelled-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gold.jsonl");
        std::fs::write(
            &path,
            "{\"prompt\":\"p\",\"response\":\"No.\",\"label\":\"refusal\",\"id\":3}\n\n\
             {\"prompt\":\"q\",\"response\":\"Sure\",\"label\":\"Compliance\"}\n",
        )
        .unwrap();
        let items = load_labelled_jsonl(&path).unwrap();
        assert_eq!(items.len(), 2);
        assert!(items[0].refusal && !items[1].refusal);
        std::fs::write(&path, "{\"prompt\":\"p\",\"response\":\"r\",\"label\":\"refusal\"}\n{\"prompt\":\"p\",\"response\":\"r\",\"label\":\"maybe\"}\n").unwrap();
        let err = load_labelled_jsonl(&path).unwrap_err().to_string();
        assert!(
            err.contains("gold.jsonl, line 2") && err.contains("maybe"),
            "{err}"
        );
        std::fs::write(&path, "{\"prompt\":\"p\"}\n").unwrap();
        let err = load_labelled_jsonl(&path).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("response"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
