//! The classifier trait and its adapter to DeepConf voting.

use deepconf_core::{AnswerExtractor, GenerationRequest, Role, Trace};

use crate::{Classification, Error, RefusalLabel, Result};

/// Decides whether a response refuses its prompt.
///
/// `&mut self` because an LLM judge drives a model; pattern classifiers ignore the mutability.
pub trait RefusalClassifier {
    /// Classifies one response to `prompt`.
    fn classify(&mut self, prompt: &str, response: &str) -> Result<Classification>;

    /// Classifies many `(prompt, response)` pairs; one result per pair, in order, so one failed
    /// item (e.g. an unparsable judge output) does not hide the others.
    fn classify_batch(&mut self, items: &[(&str, &str)]) -> Vec<Result<Classification>> {
        items
            .iter()
            .map(|(prompt, response)| self.classify(prompt, response))
            .collect()
    }

    /// A short name for reports.
    fn name(&self) -> String;
}

impl<C: RefusalClassifier + ?Sized> RefusalClassifier for &mut C {
    fn classify(&mut self, prompt: &str, response: &str) -> Result<Classification> {
        (**self).classify(prompt, response)
    }

    fn classify_batch(&mut self, items: &[(&str, &str)]) -> Vec<Result<Classification>> {
        (**self).classify_batch(items)
    }

    fn name(&self) -> String {
        (**self).name()
    }
}

impl<C: RefusalClassifier + ?Sized> RefusalClassifier for Box<C> {
    fn classify(&mut self, prompt: &str, response: &str) -> Result<Classification> {
        (**self).classify(prompt, response)
    }

    fn classify_batch(&mut self, items: &[(&str, &str)]) -> Vec<Result<Classification>> {
        (**self).classify_batch(items)
    }

    fn name(&self) -> String {
        (**self).name()
    }
}

/// A trace the adapter could not classify, kept for the report.
#[derive(Debug, Clone, PartialEq)]
pub struct UnclassifiedTrace {
    /// Index of the trace within its prompt.
    pub trace_index: usize,
    /// Why it could not be classified.
    pub reason: String,
}

/// Uses a [`RefusalClassifier`] as the answer extractor of DeepConf voting: a trace's answer is
/// `"refusal"` or `"compliance"`; an incomplete trace (unclosed thinking) has no answer and does not
/// vote.
///
/// The prompt given to the classifier is the last user message of the request. A classifier error
/// that concerns one output (an unparsable judge answer) makes that trace abstain and is recorded in
/// [`unclassified`](Self::unclassified); a model failure of the judge ends the run.
#[derive(Debug)]
pub struct RefusalAnswers<C> {
    classifier: C,
    unclassified: Vec<UnclassifiedTrace>,
}

impl<C: RefusalClassifier> RefusalAnswers<C> {
    /// Wraps a classifier.
    pub fn new(classifier: C) -> Self {
        Self {
            classifier,
            unclassified: Vec::new(),
        }
    }

    /// Traces that abstained because their output could not be classified.
    pub fn unclassified(&self) -> &[UnclassifiedTrace] {
        &self.unclassified
    }

    /// The wrapped classifier.
    pub fn classifier(&self) -> &C {
        &self.classifier
    }

    /// Unwraps the classifier.
    pub fn into_inner(self) -> C {
        self.classifier
    }
}

impl<C: RefusalClassifier> AnswerExtractor for RefusalAnswers<C> {
    fn answer(
        &mut self,
        request: &GenerationRequest,
        trace: &Trace,
    ) -> deepconf_core::Result<Option<String>> {
        let prompt = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map_or("", |m| m.content.as_str());
        match self.classifier.classify(prompt, &trace.text) {
            Ok(c) => Ok(match c.label {
                RefusalLabel::Incomplete => None,
                label => Some(label.as_str().to_string()),
            }),
            Err(Error::Model(e)) => Err(e),
            Err(e) => {
                self.unclassified.push(UnclassifiedTrace {
                    trace_index: trace.spec.index,
                    reason: e.to_string(),
                });
                Ok(None)
            }
        }
    }
}
