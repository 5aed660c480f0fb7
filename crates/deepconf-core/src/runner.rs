//! The runner: drives any [`LogprobModel`] under any [`PolicyConfig`] for one prompt.

use std::panic::{AssertUnwindSafe, catch_unwind};

use serde::{Deserialize, Serialize};

use deepconf_confidence::{
    ConfidenceConfig, ConfidenceSummary, StreamingConfidence, summarize, token_confidence,
};
use deepconf_policy::{Decision, FinishReason, Phase, PolicyConfig, Step, TraceOutcome};

use crate::contract::{check_step, sort_candidates, sorted_token_confidence};
use crate::{
    ChatMessage, Error, GenerationRequest, LogprobModel, Prompt, Result, SamplingParams,
    StopReason, TokenControl, TokenObserver, TokenStep, Trace, TraceSpec, Violation,
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
///
/// The default is [`PolicyConfig::default`] (DeepConf-low online: 4 warmup traces, at most 16,
/// keep 10%), [`ConfidenceConfig::default`] (k = 20, window 32, tail 32, bottom 10%) and
/// [`SamplingParams::default`] (temperature 0.7, top-p 0.95, 256 tokens, seed 0, 20 top
/// log-probabilities).
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
    /// True when the backend went on past `at_token`: it ignored the observer's stop, or never
    /// showed these tokens to the observer. The runner applied the cut when the trace came back:
    /// the trace is recorded as [`StopReason::Terminated`] and does not vote, and the tokens after
    /// the cut stay in the trace and in [`PromptOutcome::tokens_generated`] (they were spent).
    /// [`PromptOutcome::late_cuts`] counts such traces.
    #[serde(default)]
    pub late: bool,
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

    /// Traces the runner cut after they came back because the backend did not stop them at the
    /// policy's threshold (see [`Termination::late`]).
    pub fn late_cuts(&self) -> usize {
        self.traces
            .iter()
            .filter(|r| r.termination.is_some_and(|t| t.late))
            .count()
    }
}

/// The streaming state of one trace of a batch.
struct TraceStream {
    spec: TraceSpec,
    confidence: StreamingConfidence,
    /// Token confidences of the tokens the observer saw (since the trace's last restart).
    token_confidences: Vec<f64>,
    termination: Option<Termination>,
}

/// Watches the tokens of one batch: checks each against the contract, updates its trace's
/// streaming confidence, cuts traces whose full-window group confidence falls below the threshold,
/// and forwards tokens to a progress hook. A broken contract stops every trace of the batch and is
/// reported once the backend returns.
struct BatchWatcher<'a, 'p> {
    streams: Vec<TraceStream>,
    top_k: usize,
    min_candidates: usize,
    stop_below: Option<f64>,
    progress: Option<&'a mut TokenProgress<'p>>,
    violation: Option<Error>,
}

impl BatchWatcher<'_, '_> {
    fn stream(&mut self, trace: &TraceSpec) -> Option<&mut TraceStream> {
        // Batches are small and specs unique: a scan beats hashing.
        self.streams.iter_mut().find(|s| s.spec == *trace)
    }
}

impl TokenObserver for BatchWatcher<'_, '_> {
    fn on_token(&mut self, trace: &TraceSpec, step: &TokenStep) -> TokenControl {
        if self.violation.is_some() {
            return TokenControl::Stop;
        }
        let (top_k, min_candidates, stop_below) =
            (self.top_k, self.min_candidates, self.stop_below);
        let Some(stream) = self.stream(trace) else {
            self.violation = Some(Error::contract_at(
                trace.index,
                None,
                Violation::UnknownTrace { spec: *trace },
            ));
            return TokenControl::Stop;
        };
        let token = stream.token_confidences.len();
        if let Err(violation) = check_step(step, min_candidates) {
            self.violation = Some(Error::contract_at(trace.index, Some(token), violation));
            return TokenControl::Stop;
        }
        let confidence = sorted_token_confidence(&step.top_logprobs, top_k);
        stream.token_confidences.push(confidence);
        let group = stream.confidence.push(confidence);
        let control = if stream.termination.is_some() {
            TokenControl::Stop
        } else {
            match (group, stop_below) {
                (Some(group), Some(threshold)) if group < threshold => {
                    stream.termination = Some(Termination {
                        group_confidence: group,
                        threshold,
                        at_token: stream.confidence.len(),
                        late: false,
                    });
                    TokenControl::Stop
                }
                _ => TokenControl::Continue,
            }
        };
        if let Some(progress) = self.progress.as_mut() {
            progress(trace, step);
        }
        control
    }

    fn on_restart(&mut self, trace: &TraceSpec) {
        if let Some(stream) = self.stream(trace) {
            stream.confidence.reset();
            stream.token_confidences.clear();
            stream.termination = None;
        }
    }
}

/// A returned trace that passed the contract, with what the runner measured of it.
struct CheckedTrace {
    trace: Trace,
    token_confidences: Vec<f64>,
    confidence: Option<ConfidenceSummary>,
    termination: Option<Termination>,
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// Where the policy cuts a trace of these token confidences under `threshold`: the first full
/// window whose group confidence is below it, computed as the live observer computes it (so the
/// two agree bit for bit).
fn first_cut(
    confidences: &[f64],
    config: &ConfidenceConfig,
    threshold: f64,
) -> Result<Option<Termination>> {
    let mut stream = StreamingConfidence::new(config.clone())?;
    Ok(confidences.iter().find_map(|&c| {
        stream
            .push(c)
            .filter(|&group| group < threshold)
            .map(|group| Termination {
                group_confidence: group,
                threshold,
                at_token: stream.len(),
                late: false,
            })
    }))
}

/// `Err` unless every metric of a trace's summary is finite.
fn check_summary(summary: Option<&ConfidenceSummary>, trace: usize) -> Result<()> {
    let Some(s) = summary else {
        return Ok(());
    };
    for (metric, value) in [
        ("mean confidence", s.mean),
        ("lowest group confidence", s.lowest_group),
        ("bottom group confidence", s.bottom_group),
        ("tail confidence", s.tail),
    ] {
        if !value.is_finite() {
            return Err(Error::contract_at(
                trace,
                None,
                Violation::NonFiniteMetric { metric, value },
            ));
        }
    }
    Ok(())
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
/// #         let top: Vec<f32> = (0..20).map(|j| -0.1 - 3.0 * j as f32).collect();
/// #         trace.push_token(Some(1), "No.", top[0], top)?;
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
    ///
    /// The backend is checked, not trusted (see [`LogprobModel`]'s contract): a prompt without a
    /// user message or with a blank one is an [`Error::InvalidParameter`]; a token that breaks
    /// the contract, seen by the observer or only in a returned trace, ends the run with
    /// [`Error::Contract`]; a returned trace that should have been cut is cut
    /// ([`Termination::late`]); a panicking backend gives [`Error::Backend`] with the panic
    /// message (under `panic = "abort"` the process aborts instead).
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
        prompt.validate()?;
        let request = GenerationRequest {
            prompt,
            sampling: self.config.sampling.clone(),
        };
        let backend = model.model_id();
        let min_candidates = model
            .capabilities()
            .min_candidates(self.config.confidence.top_k);
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
            if let Some(value) = stop_below.filter(|t| !t.is_finite()) {
                return Err(Error::contract(
                    backend,
                    Violation::NonFiniteMetric {
                        metric: "termination threshold",
                        value,
                    },
                ));
            }
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
                min_candidates,
                stop_below,
                progress: progress.as_deref_mut(),
                violation: None,
            };
            // The model and the watcher are not used again after a panic but to report it.
            let generated = catch_unwind(AssertUnwindSafe(|| {
                model.generate_batch(&request, &specs, &mut watcher)
            }));
            let BatchWatcher {
                streams, violation, ..
            } = watcher;
            let traces = match (generated, violation) {
                (Err(payload), _) => {
                    return Err(Error::backend(
                        backend,
                        format!("panicked: {}", panic_message(payload.as_ref())),
                    ));
                }
                // The observer's finding comes first: the backend's own error, if any, is
                // likely its consequence (a stopped trace).
                (Ok(_), Some(violation)) => return Err(violation.with_backend_name(&backend)),
                (Ok(traces), None) => traces.map_err(|e| e.with_backend_name(&backend))?,
            };
            if traces.len() != specs.len() {
                return Err(Error::contract(
                    backend,
                    Violation::WrongTraceCount {
                        returned: traces.len(),
                        requested: specs.len(),
                    },
                ));
            }
            for (trace, stream) in traces.into_iter().zip(streams) {
                let CheckedTrace {
                    trace,
                    token_confidences,
                    confidence,
                    termination,
                } = self
                    .check_trace(trace, stream, stop_below, min_candidates)
                    .map_err(|e| e.with_backend_name(&backend))?;
                let Extracted { answer, detail } = answers.extract(&request, &trace)?;
                let record = TraceRecord {
                    trace,
                    phase,
                    token_confidences,
                    confidence,
                    answer,
                    detail,
                    termination,
                };
                outcomes.push(record.outcome());
                records.push(record);
            }
        };
        let decision = state.decide(&outcomes);
        let weights = decision.vote.iter().flat_map(|v| {
            v.tally
                .iter()
                .map(|(_, w)| ("vote weight", *w))
                .chain([("total vote weight", v.total_weight)])
        });
        if let Some((metric, value)) = decision
            .threshold
            .map(|t| ("threshold", t))
            .into_iter()
            .chain(weights)
            .find(|(_, value)| !value.is_finite())
        {
            return Err(Error::contract(
                backend,
                Violation::NonFiniteMetric { metric, value },
            ));
        }
        Ok(PromptOutcome {
            tokens_generated: records.iter().map(|r| r.trace.n_tokens()).sum(),
            traces: records,
            steps,
            finish,
            decision,
        })
    }

    /// Checks a returned trace against the contract and the policy's threshold: every token is
    /// checked and its candidates sorted, the token confidences are recomputed from the trace
    /// (and must match what the observer saw), and a trace whose group confidence fell below
    /// `stop_below` is cut, live or late.
    fn check_trace(
        &self,
        mut trace: Trace,
        stream: TraceStream,
        stop_below: Option<f64>,
        min_candidates: usize,
    ) -> Result<CheckedTrace> {
        let index = stream.spec.index;
        if trace.spec != stream.spec {
            return Err(Error::contract_at(
                index,
                None,
                Violation::UnexpectedTrace {
                    returned: trace.spec,
                    expected: stream.spec,
                },
            ));
        }
        let config = &self.config.confidence;
        let mut confidences = Vec::with_capacity(trace.steps.len());
        for (token, step) in trace.steps.iter_mut().enumerate() {
            check_step(step, min_candidates)
                .map_err(|violation| Error::contract_at(index, Some(token), violation))?;
            sort_candidates(step);
            let confidence = token_confidence(&step.top_logprobs, config.top_k);
            if let Some(&shown) = stream.token_confidences.get(token)
                && shown != confidence
            {
                return Err(Error::contract_at(
                    index,
                    Some(token),
                    Violation::ObserverMismatch {
                        shown,
                        returned: confidence,
                    },
                ));
            }
            confidences.push(confidence);
        }
        let termination = match (stream.termination, stop_below) {
            (Some(live), _) => Some(live),
            (None, Some(threshold)) => first_cut(&confidences, config, threshold)?,
            (None, None) => None,
        }
        .map(|cut| Termination {
            late: trace.n_tokens() > cut.at_token,
            ..cut
        });
        if termination.is_some() {
            trace.stop_reason = StopReason::Terminated;
        }
        let confidence = summarize(&confidences, config)?;
        check_summary(confidence.as_ref(), index)?;
        Ok(CheckedTrace {
            trace,
            token_confidences: confidences,
            confidence,
            termination,
        })
    }
}
