//! The classifier trait and its adapter to DeepConf voting.

use serde::{Deserialize, Serialize};

use deepconf_core::{AnswerExtractor, Extracted, GenerationRequest, Trace};

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

    /// Another handle on this classifier that a different thread may use at the same time (a
    /// judge's concurrent model handle, or a copy of a pattern classifier). `None` (the default)
    /// when calls must go one at a time.
    fn concurrent_handle(&self) -> Option<Box<dyn RefusalClassifier + Send>> {
        None
    }
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

    fn concurrent_handle(&self) -> Option<Box<dyn RefusalClassifier + Send>> {
        (**self).concurrent_handle()
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

    fn concurrent_handle(&self) -> Option<Box<dyn RefusalClassifier + Send>> {
        (**self).concurrent_handle()
    }
}

/// What the classifier made of one trace: the detail that [`RefusalAnswers`] records next to the
/// trace's vote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum TraceLabel {
    /// The classifier labelled the trace.
    Classified(Classification),
    /// The classifier could not label this output (e.g. an unparsable judge answer); the trace
    /// abstains from the vote.
    Unclassified {
        /// Why.
        reason: String,
    },
}

impl TraceLabel {
    /// The classification, when there is one.
    pub fn classification(&self) -> Option<&Classification> {
        match self {
            TraceLabel::Classified(c) => Some(c),
            TraceLabel::Unclassified { .. } => None,
        }
    }

    /// Whether the trace refused: `Some(true)` for a refusal, `Some(false)` for a compliance,
    /// `None` when incomplete or unclassified.
    pub fn refused(&self) -> Option<bool> {
        match self.classification()?.label {
            RefusalLabel::Refusal => Some(true),
            RefusalLabel::Compliance => Some(false),
            RefusalLabel::Incomplete => None,
        }
    }
}

/// Uses a [`RefusalClassifier`] as the answer extractor of DeepConf voting: a trace votes with its
/// [`RefusalLabel`] (refusal or compliance) and records the [`TraceLabel`] (score and evidence); an
/// incomplete trace (unclosed thinking) has no answer and does not vote.
///
/// The prompt given to the classifier is the request's user text ([`deepconf_core::Prompt::user_text`]).
/// A classifier error that concerns one output (an unparsable judge answer) makes that trace
/// abstain with a [`TraceLabel::Unclassified`]; a model failure of the judge ends the run.
#[derive(Debug)]
pub struct RefusalAnswers<C> {
    classifier: C,
}

impl<C: RefusalClassifier> RefusalAnswers<C> {
    /// Wraps a classifier.
    pub fn new(classifier: C) -> Self {
        Self { classifier }
    }

    /// The wrapped classifier.
    pub fn classifier(&self) -> &C {
        &self.classifier
    }

    /// The wrapped classifier, mutably (e.g. to classify a reference response with it).
    pub fn classifier_mut(&mut self) -> &mut C {
        &mut self.classifier
    }

    /// Unwraps the classifier.
    pub fn into_inner(self) -> C {
        self.classifier
    }

    /// Labels one response: the answer it votes with and the detail to record.
    pub fn label(
        &mut self,
        prompt: &str,
        response: &str,
    ) -> deepconf_core::Result<Extracted<RefusalLabel, TraceLabel>> {
        match self.classifier.classify(prompt, response) {
            Ok(c) => Ok(Extracted {
                answer: (c.label != RefusalLabel::Incomplete).then_some(c.label),
                detail: TraceLabel::Classified(c),
            }),
            Err(Error::Model(e)) => Err(e),
            Err(e) => Ok(Extracted {
                answer: None,
                detail: TraceLabel::Unclassified {
                    reason: e.to_string(),
                },
            }),
        }
    }
}

impl<C: RefusalClassifier> AnswerExtractor for RefusalAnswers<C> {
    type Answer = RefusalLabel;
    type Detail = TraceLabel;

    fn extract(
        &mut self,
        request: &GenerationRequest,
        trace: &Trace,
    ) -> deepconf_core::Result<Extracted<RefusalLabel, TraceLabel>> {
        self.label(request.prompt.user_text(), &trace.text)
    }
}
