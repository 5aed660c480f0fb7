//! Two-stage classification: a cheap classifier first, a judge when it is uncertain, and how
//! often the two agree.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::{Agreement, Classification, Error, Evidence, RefusalClassifier, RefusalLabel, Result};

#[derive(Debug, Default)]
struct Shared {
    judge_calls: AtomicUsize,
    judge_failures: AtomicUsize,
    agreement: Mutex<Agreement>,
}

/// Runs `first` (typically a [`PatternClassifier`](crate::PatternClassifier)) and consults `judge`
/// when the first score falls inside the uncertainty band (default `[0.2, 0.8]`), or on every
/// answer with [`consult_always`](Self::consult_always) (the label still follows the band).
///
/// Incomplete answers never reach the judge. When the judge fails on an output (parse error or
/// no label), the first stage's label stands and the judge's error is kept in the evidence; a
/// model failure ends the call. Judge calls, failures and the agreement of the two stages
/// (where both labelled) are counted, over this ensemble and its concurrent handles; each
/// trace's evidence says whether the stages agreed.
#[derive(Debug)]
pub struct Ensemble<F, J> {
    first: F,
    judge: J,
    uncertain_from: f64,
    uncertain_to: f64,
    consult_always: bool,
    shared: Arc<Shared>,
}

impl<F: RefusalClassifier, J: RefusalClassifier> Ensemble<F, J> {
    /// An ensemble with the uncertainty band `[0.2, 0.8]`.
    pub fn new(first: F, judge: J) -> Self {
        Self {
            first,
            judge,
            uncertain_from: 0.2,
            uncertain_to: 0.8,
            consult_always: false,
            shared: Arc::default(),
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

    /// Consults the judge on every complete answer, so that the agreement covers them all; the
    /// label is still the judge's inside the band and the first stage's outside.
    #[must_use]
    pub fn consult_always(mut self, always: bool) -> Self {
        self.consult_always = always;
        self
    }

    /// How many times the judge was consulted.
    pub fn judge_calls(&self) -> usize {
        self.shared.judge_calls.load(Ordering::Relaxed)
    }

    /// How many judge consultations failed (the first stage's label was kept).
    pub fn judge_failures(&self) -> usize {
        self.shared.judge_failures.load(Ordering::Relaxed)
    }

    /// How the two stages agreed where both labelled the answer.
    pub fn agreement(&self) -> Agreement {
        *self
            .shared
            .agreement
            .lock()
            .unwrap_or_else(|p| p.into_inner())
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
        if first.label == RefusalLabel::Incomplete || !(uncertain || self.consult_always) {
            return Ok(Classification {
                label: first.label,
                score: first.score,
                evidence: Evidence::Ensemble {
                    first: Box::new(first),
                    judge: None,
                    judge_error: None,
                    agreement: None,
                },
            });
        }
        self.shared.judge_calls.fetch_add(1, Ordering::Relaxed);
        match self.judge.classify(prompt, response) {
            Ok(judged) => {
                let agreement = self
                    .shared
                    .agreement
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .add(first.label, judged.label);
                let (label, score) = if uncertain {
                    (judged.label, judged.score)
                } else {
                    (first.label, first.score)
                };
                Ok(Classification {
                    label,
                    score,
                    evidence: Evidence::Ensemble {
                        first: Box::new(first),
                        judge: Some(Box::new(judged)),
                        judge_error: None,
                        agreement,
                    },
                })
            }
            Err(Error::Model(e)) => Err(Error::Model(e)),
            Err(e) => {
                self.shared.judge_failures.fetch_add(1, Ordering::Relaxed);
                Ok(Classification {
                    label: first.label,
                    score: first.score,
                    evidence: Evidence::Ensemble {
                        first: Box::new(first),
                        judge: None,
                        judge_error: Some(e.to_string()),
                        agreement: None,
                    },
                })
            }
        }
    }

    fn name(&self) -> String {
        format!("ensemble({} -> {})", self.first.name(), self.judge.name())
    }

    fn concurrent_handle(&self) -> Option<Box<dyn RefusalClassifier + Send>> {
        Some(Box::new(Ensemble {
            first: self.first.concurrent_handle()?,
            judge: self.judge.concurrent_handle()?,
            uncertain_from: self.uncertain_from,
            uncertain_to: self.uncertain_to,
            consult_always: self.consult_always,
            shared: Arc::clone(&self.shared),
        }))
    }
}
