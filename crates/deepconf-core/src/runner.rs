//! The runner: drives any [`LogprobModel`] under any [`PolicyConfig`] for one prompt.

use serde::{Deserialize, Serialize};

use deepconf_confidence::{
    ConfidenceConfig, ConfidenceSummary, StreamingConfidence, summarize, token_confidence,
};
use deepconf_policy::{Decision, FinishReason, Phase, PolicyConfig, Step, TraceOutcome};

use crate::{
    ChatMessage, GenerationRequest, LogprobModel, Prompt, Result, SamplingParams, TokenControl,
    TokenObserver, TokenStep, Trace, TraceSpec,
};

/// A hook called after every generated token (e.g. to drive a progress bar).
pub type TokenProgress<'a> = dyn FnMut(&TraceSpec, &TokenStep) + 'a;

/// What an [`AnswerExtractor`] says about one trace: the answer it votes with (`None`: the trace
/// abstains) and the details worth recording (for a refusal classifier: its score and evidence).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Extracted<A, D = ()> {
    /// The trace's answer; `None` when it has none, and then it does not vote.
    pub answer: Option<A>,
    /// Whatever else the extractor found, kept in the trace's record.
    pub detail: D,
}

impl<A> Extracted<A> {
    /// An answer without details.
    pub fn answer(answer: Option<A>) -> Self {
        Self { answer, detail: () }
    }
}

/// Extracts a trace's answer for voting (for safety: its refusal label).
///
/// Closures `FnMut(&Trace) -> Option<A>` implement it with no details.
pub trait AnswerExtractor {
    /// The answer traces vote with (`Ord` breaks vote ties deterministically).
    type Answer: Clone + Ord + std::fmt::Debug;
    /// What the extractor records about a trace besides its answer.
    type Detail: Clone + std::fmt::Debug;

    /// The answer of `trace` and its details.
    fn extract(
        &mut self,
        request: &GenerationRequest,
        trace: &Trace,
    ) -> Result<Extracted<Self::Answer, Self::Detail>>;
}

impl<A, F> AnswerExtractor for F
where
    F: FnMut(&Trace) -> Option<A>,
    A: Clone + Ord + std::fmt::Debug,
{
    type Answer = A;
    type Detail = ();

    fn extract(&mut self, _: &GenerationRequest, trace: &Trace) -> Result<Extracted<A>> {
        Ok(Extracted::answer(self(trace)))
    }
}

/// Everything a run of one prompt needs besides the model and the answer extractor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RunConfig {
    /// The sampling policy.
    pub policy: PolicyConfig,
    /// Confidence metric parameters (window, k, ...).
    pub confidence: ConfidenceConfig,
    /// Sampling settings; `sampling.seed` is the base seed from which each trace's seed derives.
    pub sampling: SamplingParams,
}

impl RunConfig {
    /// Checks the policy, confidence and sampling parameters.
    pub fn validate(&self) -> Result<()> {
        self.policy.validate()?;
        self.confidence.validate()?;
        self.sampling.validate()?;
        if self.sampling.top_logprobs < self.confidence.top_k {
            return Err(crate::Error::InvalidParameter {
                parameter: "sampling.top_logprobs",
                value: self.sampling.top_logprobs.to_string(),
                reason: "must be at least confidence.top_k, or token confidence averages fewer candidates than asked",
            });
        }
        Ok(())
    }
}

/// Where and why the policy cut a trace short.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Termination {
    /// Group confidence of the window that fell below the threshold.
    pub group_confidence: f64,
    /// The threshold in force.
    pub threshold: f64,
    /// Number of tokens generated when the trace was cut.
    pub at_token: usize,
}

/// One trace with everything the policy and the answer extractor decided about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceRecord<A = String, D = ()> {
    /// The trace.
    pub trace: Trace,
    /// Schedule phase the trace was sampled in.
    pub phase: Phase,
    /// DeepConf token confidence of every token (over the run's `top_k`), as the runner computed it
    /// while the trace streamed.
    pub token_confidences: Vec<f64>,
    /// Trace-level confidence (`None` for a trace with no tokens).
    pub confidence: Option<ConfidenceSummary>,
    /// The extracted answer (`None`: the trace abstains).
    pub answer: Option<A>,
    /// The extractor's details.
    pub detail: D,
    /// Present when the policy terminated the trace.
    pub termination: Option<Termination>,
}

impl<A: Clone, D> TraceRecord<A, D> {
    /// What the policy needs to know about this trace.
    pub fn outcome(&self) -> TraceOutcome<A> {
        let c = self.confidence.unwrap_or(ConfidenceSummary {
            n_tokens: 0,
            mean: 0.0,
            lowest_group: 0.0,
            bottom_group: 0.0,
            tail: 0.0,
        });
        TraceOutcome {
            index: self.trace.spec.index,
            tokens: self.trace.n_tokens(),
            terminated: self.termination.is_some(),
            answer: self.answer.clone(),
            mean: c.mean,
            lowest_group: c.lowest_group,
            bottom_group: c.bottom_group,
            tail: c.tail,
        }
    }
}

/// The result of running one prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptOutcome<A = String, D = ()> {
    /// Every trace in index order.
    pub traces: Vec<TraceRecord<A, D>>,
    /// Every step the policy took, in order (the last is a [`Step::Finish`]).
    pub steps: Vec<Step>,
    /// Why sampling stopped.
    pub finish: FinishReason,
    /// Which traces voted and the vote.
    pub decision: Decision<A>,
    /// Generated tokens over all traces (terminated traces count the tokens they produced).
    pub tokens_generated: usize,
}

impl<A, D> PromptOutcome<A, D> {
    /// The winning answer, if any trace voted.
    pub fn answer(&self) -> Option<&A> {
        self.decision.vote.as_ref().map(|v| &v.winner)
    }
}

/// The streaming state of one trace of a batch.
struct TraceStream {
    spec: TraceSpec,
    confidence: StreamingConfidence,
    token_confidences: Vec<f64>,
    termination: Option<Termination>,
}

/// Watches the tokens of one batch: updates each trace's streaming confidence, cuts traces whose
/// full-window group confidence falls below the threshold, and forwards tokens to a progress hook.
struct BatchWatcher<'a, 'p> {
    streams: Vec<TraceStream>,
    top_k: usize,
    stop_below: Option<f64>,
    progress: Option<&'a mut TokenProgress<'p>>,
}

impl BatchWatcher<'_, '_> {
    fn stream(&mut self, trace: &TraceSpec) -> Option<&mut TraceStream> {
        // Batches are small and specs unique: a scan beats hashing.
        self.streams.iter_mut().find(|s| s.spec == *trace)
    }
}

impl TokenObserver for BatchWatcher<'_, '_> {
    fn on_token(&mut self, trace: &TraceSpec, step: &TokenStep) -> TokenControl {
        if let Some(progress) = self.progress.as_mut() {
            progress(trace, step);
        }
        let (top_k, stop_below) = (self.top_k, self.stop_below);
        let Some(stream) = self.stream(trace) else {
            return TokenControl::Continue;
        };
        let confidence = token_confidence(&step.top_logprobs, top_k);
        stream.token_confidences.push(confidence);
        // Tokens a backend produces after a stop are still measured: they were generated.
        let group = stream.confidence.push(confidence);
        if stream.termination.is_some() {
            return TokenControl::Stop;
        }
        match (group, stop_below) {
            (Some(group), Some(threshold)) if group < threshold => {
                stream.termination = Some(Termination {
                    group_confidence: group,
                    threshold,
                    at_token: stream.confidence.len(),
                });
                TokenControl::Stop
            }
            _ => TokenControl::Continue,
        }
    }

    fn on_restart(&mut self, trace: &TraceSpec) {
        if let Some(stream) = self.stream(trace) {
            stream.confidence.reset();
            stream.token_confidences.clear();
            stream.termination = None;
        }
    }
}

/// Drives a model under a policy for one prompt at a time.
///
/// ```
/// use deepconf_core::{ChatMessage, Runner, RunConfig};
/// # use deepconf_core::{GenerationRequest, LogprobModel, TokenObserver, Trace, TraceBuilder, TraceSpec, StopReason};
/// # struct Echo;
/// # impl LogprobModel for Echo {
/// #     fn generate(&mut self, request: &GenerationRequest, spec: TraceSpec, observer: &mut dyn TokenObserver)
/// #         -> deepconf_core::Result<Trace> {
/// #         let mut trace = TraceBuilder::new(request, spec, observer).with_prompt_tokens(3);
/// #         trace.push_token(Some(1), "No.", -0.1, vec![-0.1, -3.0])?;
/// #         Ok(trace.finish(StopReason::EndOfSequence))
/// #     }
/// # }
/// let mut model = Echo; // any LogprobModel
/// let runner = Runner::new(RunConfig::default())?;
/// let outcome = runner.run(&mut model, &[ChatMessage::user("Hi")], &mut |t: &Trace| {
///     Some(if t.text.starts_with("No") { "refusal" } else { "compliance" })
/// })?;
/// assert_eq!(outcome.answer(), Some(&"refusal"));
/// # Ok::<(), deepconf_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Runner {
    config: RunConfig,
}

impl Runner {
    /// A runner; fails on invalid parameters.
    pub fn new(config: RunConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }

    /// The configuration.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// Runs one chat prompt to completion under the policy.
    pub fn run<M, X>(
        &self,
        model: &mut M,
        messages: &[ChatMessage],
        answers: &mut X,
    ) -> Result<PromptOutcome<X::Answer, X::Detail>>
    where
        M: LogprobModel + ?Sized,
        X: AnswerExtractor + ?Sized,
    {
        self.run_prompt(model, Prompt::Chat(messages.to_vec()), answers, None)
    }

    /// Runs one chat prompt, calling `progress` after every generated token.
    pub fn run_with_progress<M, X>(
        &self,
        model: &mut M,
        messages: &[ChatMessage],
        answers: &mut X,
        progress: Option<&mut TokenProgress<'_>>,
    ) -> Result<PromptOutcome<X::Answer, X::Detail>>
    where
        M: LogprobModel + ?Sized,
        X: AnswerExtractor + ?Sized,
    {
        self.run_prompt(model, Prompt::Chat(messages.to_vec()), answers, progress)
    }

    /// Runs any [`Prompt`] to completion under the policy, calling `progress` after every token.
    pub fn run_prompt<M, X>(
        &self,
        model: &mut M,
        prompt: Prompt,
        answers: &mut X,
        mut progress: Option<&mut TokenProgress<'_>>,
    ) -> Result<PromptOutcome<X::Answer, X::Detail>>
    where
        M: LogprobModel + ?Sized,
        X: AnswerExtractor + ?Sized,
    {
        let request = GenerationRequest {
            prompt,
            sampling: self.config.sampling.clone(),
        };
        let mut state = self.config.policy.start();
        let mut records: Vec<TraceRecord<X::Answer, X::Detail>> = Vec::new();
        let mut outcomes: Vec<TraceOutcome<X::Answer>> = Vec::new();
        let mut steps = Vec::new();
        let finish = loop {
            let step = state.next_step(&outcomes);
            steps.push(step.clone());
            let (count, phase, stop_below) = match step {
                Step::Finish(reason) => break reason,
                Step::Generate {
                    count,
                    phase,
                    stop_below,
                } => (count, phase, stop_below),
            };
            let specs: Vec<TraceSpec> = (records.len()..records.len() + count)
                .map(|i| TraceSpec::derive(request.sampling.seed, i))
                .collect();
            let mut watcher = BatchWatcher {
                streams: specs
                    .iter()
                    .map(|&spec| {
                        Ok(TraceStream {
                            spec,
                            confidence: StreamingConfidence::new(self.config.confidence.clone())?,
                            token_confidences: Vec::new(),
                            termination: None,
                        })
                    })
                    .collect::<Result<_>>()?,
                top_k: self.config.confidence.top_k,
                stop_below,
                progress: progress.as_deref_mut(),
            };
            let traces = model.generate_batch(&request, &specs, &mut watcher)?;
            if traces.len() != specs.len() {
                return Err(crate::Error::Contract(format!(
                    "generate_batch returned {} traces for {} requested",
                    traces.len(),
                    specs.len()
                )));
            }
            for (mut trace, stream) in traces.into_iter().zip(watcher.streams) {
                if trace.spec != stream.spec {
                    return Err(crate::Error::Contract(format!(
                        "generate_batch returned trace {:?} where {:?} was expected",
                        trace.spec, stream.spec
                    )));
                }
                if stream.termination.is_some() {
                    trace.stop_reason = crate::StopReason::Terminated;
                }
                let (token_confidences, confidence) =
                    if stream.token_confidences.len() == trace.n_tokens() {
                        (stream.token_confidences, stream.confidence.summary())
                    } else {
                        // The backend did not show every token to the observer: measure the
                        // trace it returned.
                        let confidences = trace.token_confidences(self.config.confidence.top_k);
                        let summary = summarize(&confidences, &self.config.confidence);
                        (confidences, summary)
                    };
                let Extracted { answer, detail } = answers.extract(&request, &trace)?;
                let record = TraceRecord {
                    trace,
                    phase,
                    token_confidences,
                    confidence,
                    answer,
                    detail,
                    termination: stream.termination,
                };
                outcomes.push(record.outcome());
                records.push(record);
            }
        };
        let decision = state.decide(&outcomes);
        Ok(PromptOutcome {
            tokens_generated: records.iter().map(|r| r.trace.n_tokens()).sum(),
            traces: records,
            steps,
            finish,
            decision,
        })
    }
}
