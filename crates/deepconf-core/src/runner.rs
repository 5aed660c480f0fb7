//! The runner: drives any [`LogprobModel`] under any [`PolicyConfig`] for one prompt.

use serde::{Deserialize, Serialize};

use deepconf_confidence::{ConfidenceConfig, ConfidenceSummary, StreamingConfidence};
use deepconf_policy::{Decision, FinishReason, Phase, PolicyConfig, Step, TraceOutcome};

use crate::{
    ChatMessage, GenerationRequest, LogprobModel, Result, SamplingParams, TokenControl,
    TokenObserver, TokenStep, Trace, TraceSpec,
};

/// A hook called after every generated token (e.g. to drive a progress bar).
pub type TokenProgress<'a> = dyn FnMut(&TraceSpec, &TokenStep) + 'a;

/// Extracts a trace's answer for voting (for safety: its refusal label).
pub trait AnswerExtractor {
    /// The answer of `trace`, or `None` when it has none (such a trace does not vote).
    fn answer(&mut self, request: &GenerationRequest, trace: &Trace) -> Result<Option<String>>;
}

impl<F> AnswerExtractor for F
where
    F: FnMut(&Trace) -> Option<String>,
{
    fn answer(&mut self, _: &GenerationRequest, trace: &Trace) -> Result<Option<String>> {
        Ok(self(trace))
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

/// One trace with everything the policy decided about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceRecord {
    /// The trace.
    pub trace: Trace,
    /// Schedule phase the trace was sampled in.
    pub phase: Phase,
    /// Trace-level confidence (`None` for a trace with no tokens).
    pub confidence: Option<ConfidenceSummary>,
    /// The extracted answer.
    pub answer: Option<String>,
    /// Present when the policy terminated the trace.
    pub termination: Option<Termination>,
}

impl TraceRecord {
    /// What the policy needs to know about this trace.
    pub fn outcome(&self) -> TraceOutcome {
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
pub struct PromptOutcome {
    /// Every trace in index order.
    pub traces: Vec<TraceRecord>,
    /// Every step the policy took, in order (the last is a [`Step::Finish`]).
    pub steps: Vec<Step>,
    /// Why sampling stopped.
    pub finish: FinishReason,
    /// Which traces voted and the vote.
    pub decision: Decision,
    /// Generated tokens over all traces (terminated traces count the tokens they produced).
    pub tokens_generated: usize,
}

impl PromptOutcome {
    /// The winning answer, if any trace voted.
    pub fn answer(&self) -> Option<&str> {
        self.decision.vote.as_ref().map(|v| v.winner.as_str())
    }
}

/// Watches the tokens of one batch: updates each trace's streaming confidence, cuts traces whose
/// full-window group confidence falls below the threshold, and forwards tokens to a progress hook.
struct BatchWatcher<'a, 'p> {
    streams: Vec<(TraceSpec, StreamingConfidence, Option<Termination>)>,
    stop_below: Option<f64>,
    progress: Option<&'a mut TokenProgress<'p>>,
}

impl TokenObserver for BatchWatcher<'_, '_> {
    fn on_token(&mut self, trace: &TraceSpec, step: &TokenStep) -> TokenControl {
        if let Some(progress) = self.progress.as_mut() {
            progress(trace, step);
        }
        let Some((_, stream, termination)) = self.streams.iter_mut().find(|(s, ..)| s == trace)
        else {
            return TokenControl::Continue;
        };
        if termination.is_some() {
            return TokenControl::Stop;
        }
        let group = stream.push_top_logprobs(&step.top_logprobs);
        match (group, self.stop_below) {
            (Some(group), Some(threshold)) if group < threshold => {
                *termination = Some(Termination {
                    group_confidence: group,
                    threshold,
                    at_token: stream.len(),
                });
                TokenControl::Stop
            }
            _ => TokenControl::Continue,
        }
    }
}

/// Drives a model under a policy for one prompt at a time.
///
/// ```
/// use deepconf_core::{ChatMessage, Runner, RunConfig};
/// # use deepconf_core::{GenerationRequest, LogprobModel, TokenObserver, TokenStep, Trace, TraceSpec, StopReason};
/// # struct Echo;
/// # impl LogprobModel for Echo {
/// #     fn generate(&mut self, _: &GenerationRequest, spec: TraceSpec, obs: &mut dyn TokenObserver)
/// #         -> deepconf_core::Result<Trace> {
/// #         let step = TokenStep { token_id: Some(1), text: "No.".into(), logprob: -0.1,
/// #             top_logprobs: vec![-0.1, -3.0], top_token_ids: vec![] };
/// #         obs.on_token(&spec, &step);
/// #         Ok(Trace { spec, text: "No.".into(), steps: vec![step],
/// #             stop_reason: StopReason::EndOfSequence, prompt_tokens: 3 })
/// #     }
/// # }
/// let mut model = Echo; // any LogprobModel
/// let runner = Runner::new(RunConfig::default())?;
/// let outcome = runner.run(&mut model, &[ChatMessage::user("Hi")], &mut |t: &Trace| {
///     Some(if t.text.starts_with("No") { "refusal" } else { "compliance" }.to_string())
/// })?;
/// assert_eq!(outcome.answer(), Some("refusal"));
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

    /// Runs one prompt to completion under the policy.
    pub fn run<M: LogprobModel + ?Sized>(
        &self,
        model: &mut M,
        messages: &[ChatMessage],
        answers: &mut dyn AnswerExtractor,
    ) -> Result<PromptOutcome> {
        self.run_with_progress(model, messages, answers, None)
    }

    /// Runs one prompt, calling `progress` after every generated token.
    pub fn run_with_progress<M: LogprobModel + ?Sized>(
        &self,
        model: &mut M,
        messages: &[ChatMessage],
        answers: &mut dyn AnswerExtractor,
        mut progress: Option<&mut TokenProgress<'_>>,
    ) -> Result<PromptOutcome> {
        let request = GenerationRequest {
            messages: messages.to_vec(),
            sampling: self.config.sampling.clone(),
        };
        let mut state = self.config.policy.start();
        let mut records: Vec<TraceRecord> = Vec::new();
        let mut outcomes: Vec<TraceOutcome> = Vec::new();
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
                    .map(|&s| {
                        StreamingConfidence::new(self.config.confidence.clone())
                            .map(|stream| (s, stream, None))
                    })
                    .collect::<std::result::Result<_, _>>()?,
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
            for (mut trace, (spec, _, termination)) in traces.into_iter().zip(watcher.streams) {
                if trace.spec != spec {
                    return Err(crate::Error::Contract(format!(
                        "generate_batch returned trace {:?} where {:?} was expected",
                        trace.spec, spec
                    )));
                }
                if termination.is_some() {
                    trace.stop_reason = crate::StopReason::Terminated;
                }
                let answer = answers.answer(&request, &trace)?;
                let record = TraceRecord {
                    confidence: trace.confidence_summary(&self.config.confidence),
                    trace,
                    phase,
                    answer,
                    termination,
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
