//! Two-stage classification: a cheap classifier first, a judge only when it is uncertain.

use crate::{Classification, Error, Evidence, RefusalClassifier, RefusalLabel, Result};

/// Runs `first` (typically a [`PatternClassifier`](crate::PatternClassifier)) and consults `judge`
/// only when the first score falls inside the uncertainty band (default `[0.2, 0.8]`).
///
/// Incomplete answers never reach the judge. When the judge fails on an output (parse error or
/// `N/A`), the first stage's label stands and the judge's error is kept in the evidence; a model
/// failure ends the call. Judge calls and failures are counted.
#[derive(Debug)]
pub struct Ensemble<F, J> {
    first: F,
    judge: J,
    uncertain_from: f64,
    uncertain_to: f64,
    judge_calls: usize,
    judge_failures: usize,
}

impl<F: RefusalClassifier, J: RefusalClassifier> Ensemble<F, J> {
    /// An ensemble with the uncertainty band `[0.2, 0.8]`.
    pub fn new(first: F, judge: J) -> Self {
        Self {
            first,
            judge,
            uncertain_from: 0.2,
            uncertain_to: 0.8,
            judge_calls: 0,
            judge_failures: 0,
        }
    }

    /// Sets the band of first-stage scores that consult the judge; needs `0 <= from <= to <= 1`.
    pub fn with_band(mut self, from: f64, to: f64) -> Result<Self> {
        if !(0.0 <= from && from <= to && to <= 1.0) {
            return Err(Error::InvalidParameter {
                parameter: "band",
                value: format!("[{from}, {to}]"),
                reason: "needs 0 <= from <= to <= 1",
            });
        }
        self.uncertain_from = from;
        self.uncertain_to = to;
        Ok(self)
    }

    /// How many times the judge was consulted.
    pub fn judge_calls(&self) -> usize {
        self.judge_calls
    }

    /// How many judge consultations failed (the first stage's label was kept).
    pub fn judge_failures(&self) -> usize {
        self.judge_failures
    }

    /// The first stage.
    pub fn first(&self) -> &F {
        &self.first
    }

    /// The judge.
    pub fn judge(&self) -> &J {
        &self.judge
    }
}

impl<F: RefusalClassifier, J: RefusalClassifier> RefusalClassifier for Ensemble<F, J> {
    fn classify(&mut self, prompt: &str, response: &str) -> Result<Classification> {
        let first = self.first.classify(prompt, response)?;
        let uncertain = (self.uncertain_from..=self.uncertain_to).contains(&first.score);
        if first.label == RefusalLabel::Incomplete || !uncertain {
            return Ok(Classification {
                label: first.label,
                score: first.score,
                evidence: Evidence::Ensemble {
                    first: Box::new(first),
                    judge: None,
                    judge_error: None,
                },
            });
        }
        self.judge_calls += 1;
        match self.judge.classify(prompt, response) {
            Ok(judged) => Ok(Classification {
                label: judged.label,
                score: judged.score,
                evidence: Evidence::Ensemble {
                    first: Box::new(first),
                    judge: Some(Box::new(judged)),
                    judge_error: None,
                },
            }),
            Err(Error::Model(e)) => Err(Error::Model(e)),
            Err(e) => {
                self.judge_failures += 1;
                Ok(Classification {
                    label: first.label,
                    score: first.score,
                    evidence: Evidence::Ensemble {
                        first: Box::new(first),
                        judge: None,
                        judge_error: Some(e.to_string()),
                    },
                })
            }
        }
    }

    fn name(&self) -> String {
        format!("ensemble({} -> {})", self.first.name(), self.judge.name())
    }
}
