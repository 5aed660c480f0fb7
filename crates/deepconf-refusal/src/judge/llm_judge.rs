//! The judge itself: a model asked in a format, with its cache and counts.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use deepconf_core::{
    GenerationRequest, LogprobModel, NoObserver, SamplingParams, Trace, TraceSpec,
};

use super::cache::{CachedAnswer, JudgeCache, Lookup};
use super::counts::{JudgeCounts, JudgeCountsHandle, SharedCounts, bump, counts_of};
use super::score::{score, verdict_score};
use super::verdict::ParsedAnswer;
use super::{JudgeIdentity, NotHarmfulReading};
use crate::normalize::{AnswerText, strip_thinking};
use crate::{
    Classification, Error, Evidence, JudgeFormat, JudgeVerdict, RefusalClassifier, Result,
    ScoreSource,
};

/// What the judge said about one exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgeOutput {
    /// The format.
    pub format: JudgeFormat,
    /// The generated text, verbatim.
    pub raw: String,
    /// The parsed verdict.
    pub verdict: JudgeVerdict,
    /// Probability-like score in `[0, 1]` of the "no harmful compliance" reading (for WildGuard:
    /// of a refusal).
    pub score: f64,
    /// Where the score came from.
    pub score_source: ScoreSource,
    /// True when the answer came from the cache (no model call).
    pub cached: bool,
}
/// A refusal classifier that asks an LLM judge in a published format (see the module docs).
///
/// Responses whose thinking block never closes are [`RefusalLabel::Incomplete`](crate::RefusalLabel::Incomplete) without a call;
/// closed thinking blocks are removed before the judge sees the answer. Handles from
/// [`RefusalClassifier::concurrent_handle`] drive the model's own concurrent handles (the same
/// server limit or continuous batch) and share the cache and the counts.
pub struct LlmJudge<M> {
    model: M,
    identity: JudgeIdentity,
    reading: NotHarmfulReading,
    sampling: SamplingParams,
    cache: Option<Arc<JudgeCache>>,
    counts: Arc<SharedCounts>,
}

impl<M> std::fmt::Debug for LlmJudge<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmJudge")
            .field("identity", &self.identity)
            .field("reading", &self.reading)
            .field(
                "cache",
                &self.cache.as_ref().map(|c| c.path().to_path_buf()),
            )
            .field("counts", &self.counts())
            .finish()
    }
}

impl<M> LlmJudge<M> {
    /// The calls, cache hits and failures of this judge and its handles.
    pub fn counts(&self) -> JudgeCounts {
        counts_of(&self.counts)
    }

    /// A handle on the counts that outlives moving the judge (e.g. into a `Box<dyn
    /// RefusalClassifier>`).
    pub fn counts_handle(&self) -> JudgeCountsHandle {
        JudgeCountsHandle(Arc::clone(&self.counts))
    }

    /// Model calls made so far (by this judge and its handles).
    pub fn calls(&self) -> usize {
        self.counts().calls
    }

    /// Answers that failed to parse so far.
    pub fn parse_failures(&self) -> usize {
        self.counts().parse_failures
    }

    /// The judge's identity (what its cache entries are keyed by).
    pub fn identity(&self) -> &JudgeIdentity {
        &self.identity
    }

    /// The format.
    pub fn format(&self) -> JudgeFormat {
        self.identity.format
    }

    /// What a "not harmful" answer becomes.
    pub fn reading(&self) -> NotHarmfulReading {
        self.reading
    }

    /// The cache, when there is one.
    pub fn cache(&self) -> Option<&Arc<JudgeCache>> {
        self.cache.as_ref()
    }

    /// The judge model.
    pub fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }

    /// Unwraps the model.
    pub fn into_model(self) -> M {
        self.model
    }
}

impl<M: LogprobModel> LlmJudge<M> {
    /// A judge over `model` in `format`: greedy decoding, the format's
    /// [`default_max_tokens`](JudgeFormat::default_max_tokens), top-20 log-probabilities, no
    /// cache, the model named by its [`LogprobModel::model_id`].
    pub fn new(model: M, format: JudgeFormat) -> Self {
        let sampling = SamplingParams::greedy()
            .with_max_tokens(format.default_max_tokens())
            .with_top_logprobs(20);
        let identity = JudgeIdentity {
            format,
            model: model.model_id(),
            max_tokens: sampling.max_tokens,
            top_logprobs: sampling.top_logprobs,
        };
        Self {
            model,
            identity,
            reading: NotHarmfulReading::default(),
            sampling,
            cache: None,
            counts: Arc::default(),
        }
    }

    /// Names the judge model in its identity (a served model name, or a file name with its
    /// checksum); the default is the backend's model id.
    #[must_use]
    pub fn with_model_name(mut self, name: impl Into<String>) -> Self {
        self.identity.model = name.into();
        self
    }

    /// Sets what a "not harmful" answer becomes (HarmBench and Llama Guard).
    #[must_use]
    pub fn with_reading(mut self, reading: NotHarmfulReading) -> Self {
        self.reading = reading;
        self
    }

    /// Keeps answers in `cache`, and takes answers from it instead of calling the model.
    #[must_use]
    pub fn with_cache(mut self, cache: Arc<JudgeCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Replaces the sampling settings (checked; the identity follows `max_tokens` and
    /// `top_logprobs`). Judges are meant to decode greedily.
    pub fn with_sampling(mut self, sampling: SamplingParams) -> Result<Self> {
        sampling.validate()?;
        self.identity.max_tokens = sampling.max_tokens;
        self.identity.top_logprobs = sampling.top_logprobs;
        self.sampling = sampling;
        Ok(self)
    }

    /// Runs the judge on one exchange (the answer as given: no thinking removed), from the cache
    /// when it holds the pair. An answer that does not parse is an [`Error::JudgeParse`]; a model
    /// failure is an [`Error::Model`] (and nothing is cached).
    pub fn judge(&mut self, prompt: &str, answer: &str) -> Result<JudgeOutput> {
        let format = self.identity.format;
        let Some(cache) = self.cache.clone() else {
            let (raw, trace) = self.call(prompt, answer)?;
            return self.read(format, raw, |parsed| {
                score(format, &trace, parsed, &self.model)
            });
        };
        let key = self.identity.key(prompt, answer);
        match cache.lookup_or_claim(&key) {
            Lookup::Hit(entry) => {
                bump(&self.counts.cache_hits);
                let (score, source) = (entry.score, entry.score_source);
                let mut output = self.read(format, entry.raw, |parsed| match (score, source) {
                    (Some(score), Some(source)) => (score, source),
                    _ => verdict_score(parsed),
                })?;
                output.cached = true;
                Ok(output)
            }
            Lookup::Claimed(claim) => {
                let (raw, trace) = self.call(prompt, answer)?;
                let result = self.read(format, raw.clone(), |parsed| {
                    score(format, &trace, parsed, &self.model)
                });
                let (score, score_source) = match &result {
                    Ok(output) => (Some(output.score), Some(output.score_source)),
                    Err(_) => (None, None),
                };
                claim.fulfil(CachedAnswer {
                    raw,
                    score,
                    score_source,
                })?;
                result
            }
        }
    }

    fn call(&mut self, prompt: &str, answer: &str) -> Result<(String, Trace)> {
        let request = GenerationRequest::text(
            self.identity.format.prompt(prompt, answer),
            self.sampling.clone(),
        );
        bump(&self.counts.calls);
        let trace = self.model.generate(
            &request,
            TraceSpec::derive(self.sampling.seed, 0),
            &mut NoObserver,
        )?;
        Ok((trace.text.clone(), trace))
    }

    fn read(
        &self,
        format: JudgeFormat,
        raw: String,
        scorer: impl FnOnce(&ParsedAnswer) -> (f64, ScoreSource),
    ) -> Result<JudgeOutput> {
        let parsed = match format.parsed_answer(&raw) {
            Ok(parsed) => parsed,
            Err(e) => {
                bump(&self.counts.parse_failures);
                return Err(e);
            }
        };
        let (score, score_source) = scorer(&parsed);
        Ok(JudgeOutput {
            format,
            raw,
            verdict: parsed.verdict,
            score,
            score_source,
            cached: false,
        })
    }
}
impl<M: LogprobModel> RefusalClassifier for LlmJudge<M> {
    fn classify(&mut self, prompt: &str, response: &str) -> Result<Classification> {
        let answer = match strip_thinking(response) {
            AnswerText::UnclosedThinking { thinking_bytes } => {
                return Ok(Classification::incomplete(thinking_bytes));
            }
            AnswerText::Answer(answer) => answer,
        };
        let output = self.judge(prompt, answer.trim())?;
        match output.verdict.label(self.reading) {
            Ok(label) => Ok(Classification {
                label,
                score: output.score,
                evidence: Evidence::Judge {
                    format: output.format,
                    raw: output.raw,
                    verdict: output.verdict,
                    score_source: output.score_source,
                    cached: output.cached,
                },
            }),
            Err(reason) => {
                bump(&self.counts.not_applicable);
                Err(Error::JudgeNotApplicable {
                    format: output.format,
                    raw: output.raw,
                    reason: reason.to_string(),
                })
            }
        }
    }

    fn name(&self) -> String {
        format!("{}-judge({})", self.identity.format, self.identity.model)
    }

    fn concurrent_handle(&self) -> Option<Box<dyn RefusalClassifier + Send>> {
        let model = self.model.concurrent_handle()?;
        Some(Box::new(LlmJudge {
            model,
            identity: self.identity.clone(),
            reading: self.reading,
            sampling: self.sampling.clone(),
            cache: self.cache.clone(),
            counts: Arc::clone(&self.counts),
        }))
    }
}
