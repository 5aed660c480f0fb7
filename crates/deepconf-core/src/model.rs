//! The [`LogprobModel`] trait: what a backend must provide, the [`Capabilities`] it may declare, and
//! [`TraceBuilder`], which keeps the trait's contract for a backend that produces one token at a
//! time.

use crate::contract::{check_step, sort_candidates};
use crate::{Error, GenerationRequest, Result, StopReason, TokenStep, Trace, TraceSpec, Violation};

/// What a [`TokenObserver`] wants after seeing a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenControl {
    /// Keep generating this trace.
    Continue,
    /// End this trace now; the backend records it with [`StopReason::Terminated`].
    Stop,
}

impl TokenControl {
    /// True for [`TokenControl::Stop`].
    pub fn is_stop(self) -> bool {
        self == TokenControl::Stop
    }
}

/// Sees every generated token as it is produced and may stop the trace it belongs to.
///
/// This is how DeepConf's online mode terminates a low-confidence trace mid-generation, and how a run
/// reports progress. Closures `FnMut(&TraceSpec, &TokenStep) -> TokenControl` implement it.
pub trait TokenObserver {
    /// Called after each generated token of trace `trace` (`step` is already part of the trace).
    fn on_token(&mut self, trace: &TraceSpec, step: &TokenStep) -> TokenControl;

    /// The backend dropped the tokens of `trace` seen so far and generates it again from its start
    /// (a server cut the stream mid-trace). An observer that accumulates per-trace state resets it,
    /// so that a restarted trace is judged on its final tokens only. The default does nothing.
    fn on_restart(&mut self, trace: &TraceSpec) {
        let _ = trace;
    }
}

impl<F> TokenObserver for F
where
    F: FnMut(&TraceSpec, &TokenStep) -> TokenControl,
{
    fn on_token(&mut self, trace: &TraceSpec, step: &TokenStep) -> TokenControl {
        self(trace, step)
    }
}

/// An observer that never stops anything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl TokenObserver for NoObserver {
    fn on_token(&mut self, _: &TraceSpec, _: &TokenStep) -> TokenControl {
        TokenControl::Continue
    }
}

/// What a backend can do beyond generating one trace at a time; the experiment engine sizes its
/// work from it. Build one with [`Capabilities::new`] and the `with_*` setters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Traces of one prompt that one [`LogprobModel::generate_batch`] call decodes together
    /// (1: the backend generates them one after another).
    pub max_batch_size: usize,
    /// Traces the backend serves at once across all its [`LogprobModel::concurrent_handle`]s: the
    /// rows of a continuous batch, or the requests a server takes in parallel. 1 when the backend
    /// has no handles.
    pub max_concurrent_traces: usize,
    /// Tokens in the model's vocabulary, when the backend knows it. A model with fewer tokens
    /// than the run's top-k cannot report k candidates: the runner then asks every token for
    /// `min(k, vocabulary_size)` of them. `None`: the vocabulary is not smaller than any k.
    pub vocabulary_size: Option<usize>,
    /// The backend may report fewer candidates than asked for some tokens, by its nature rather
    /// than by fault: a server that keys candidates by their decoded text merges candidates that
    /// decode alike. The runner then accepts any non-empty list, and token confidence averages
    /// the candidates present. `false` by default.
    pub partial_top_logprobs: bool,
}

impl Default for Capabilities {
    /// The same as [`Capabilities::new`]: one trace at a time, no handles, a vocabulary of at
    /// least k tokens, full top-k lists.
    fn default() -> Self {
        Self::new()
    }
}

impl Capabilities {
    /// A backend that generates one trace at a time (`max_batch_size` and
    /// `max_concurrent_traces` 1), with a vocabulary of at least k tokens and full top-k lists
    /// (`vocabulary_size` `None`, `partial_top_logprobs` `false`).
    pub fn new() -> Self {
        Self {
            max_batch_size: 1,
            max_concurrent_traces: 1,
            vocabulary_size: None,
            partial_top_logprobs: false,
        }
    }

    /// Sets [`vocabulary_size`](Self::vocabulary_size) (at least 1).
    #[must_use]
    pub fn with_vocabulary_size(mut self, tokens: usize) -> Self {
        self.vocabulary_size = Some(tokens.max(1));
        self
    }

    /// Sets [`partial_top_logprobs`](Self::partial_top_logprobs).
    #[must_use]
    pub fn with_partial_top_logprobs(mut self, partial: bool) -> Self {
        self.partial_top_logprobs = partial;
        self
    }

    /// Candidates every token must report when the run averages `top_k` of them.
    pub fn min_candidates(&self, top_k: usize) -> usize {
        if self.partial_top_logprobs {
            return 1;
        }
        self.vocabulary_size
            .map_or(top_k, |vocabulary| top_k.min(vocabulary))
            .max(1)
    }

    /// Sets [`max_batch_size`](Self::max_batch_size) (at least 1).
    #[must_use]
    pub fn with_max_batch_size(mut self, traces: usize) -> Self {
        self.max_batch_size = traces.max(1);
        self
    }

    /// Sets [`max_concurrent_traces`](Self::max_concurrent_traces) (at least 1).
    #[must_use]
    pub fn with_max_concurrent_traces(mut self, traces: usize) -> Self {
        self.max_concurrent_traces = traces.max(1);
        self
    }
}

/// A language model that samples traces and reports top-k log-probabilities for every token.
///
/// Only [`generate`](Self::generate) is required; [`TraceBuilder`] keeps the contract below for a
/// backend that yields one token at a time. Everything else is an opt-in capability:
/// - [`generate_batch`](Self::generate_batch): decode several traces of one prompt together (one
///   prompt prefill, lockstep decode), with [`Capabilities::max_batch_size`];
/// - [`concurrent_handle`](Self::concurrent_handle): more handles on the same model that other
///   threads drive at once (a server's parallel requests, a continuous batch across prompts), with
///   [`Capabilities::max_concurrent_traces`];
/// - [`token_text`](Self::token_text): the text of a token id, which LLM judges use to read the
///   top-k candidates of their answer token.
///
/// Contract for implementers:
/// - every [`TokenStep`] carries `sampling.top_logprobs` candidate log-probabilities of the model's
///   distribution at that step, most likely first (fewer only when the vocabulary is smaller, see
///   [`Capabilities::vocabulary_size`] and [`Capabilities::partial_top_logprobs`]); every value,
///   the sampled token's included, is finite and `<= 0`, and the sampled token's log-probability
///   agrees with the list;
/// - the observer is called after every generated token, and a trace whose observer returned
///   [`TokenControl::Stop`] ends at once with [`StopReason::Terminated`];
/// - a trace generated again from its start (a retry after a cut stream) is announced with
///   [`TokenObserver::on_restart`] before its first token;
/// - equal [`TraceSpec::seed`]s with equal requests give equal traces;
/// - the chat template of the model formats a [`Prompt::Chat`](crate::Prompt), and a
///   [`Prompt::Text`](crate::Prompt) reaches the model verbatim.
///
/// The [`Runner`](crate::Runner) does not take this on trust. It checks every token, whether the
/// observer saw it or it only arrives in the returned trace, and answers a broken rule with
/// [`Error::Contract`] naming the backend, trace, token and value ([`Violation`](crate::Violation)
/// lists the checks and their tolerance); it sorts an unsorted candidate list; it cuts a returned
/// trace the observer would have cut (see [`Termination::late`](crate::Termination)); and a panic
/// in the backend becomes [`Error::Backend`] carrying the panic message.
pub trait LogprobModel {
    /// Generates one trace for `request`.
    fn generate(
        &mut self,
        request: &GenerationRequest,
        trace: TraceSpec,
        observer: &mut dyn TokenObserver,
    ) -> Result<Trace>;

    /// Generates several traces of the same request, returned in the order of `traces`. The default
    /// generates them one after another.
    fn generate_batch(
        &mut self,
        request: &GenerationRequest,
        traces: &[TraceSpec],
        observer: &mut dyn TokenObserver,
    ) -> Result<Vec<Trace>> {
        traces
            .iter()
            .map(|&spec| self.generate(request, spec, observer))
            .collect()
    }

    /// What this backend can do besides [`generate`](Self::generate); the default is one trace at a
    /// time.
    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
    }

    /// A name for reports and run records (model file or id).
    fn model_id(&self) -> String {
        std::any::type_name::<Self>().to_string()
    }

    /// The text of token `token_id` (as [`TokenStep::top_token_ids`] reports it), when the backend
    /// knows its vocabulary.
    fn token_text(&self, token_id: u32) -> Option<String> {
        let _ = token_id;
        None
    }

    /// Another handle on the same model that a different thread may drive while this one is busy;
    /// all handles share the model's capacity ([`Capabilities::max_concurrent_traces`]). `None`
    /// (the default) when the backend serves one call at a time.
    fn concurrent_handle(&self) -> Option<Box<dyn LogprobModel + Send>> {
        None
    }
}

macro_rules! forward_logprob_model {
    ($($target:ty),*) => {$(
        impl<M: LogprobModel + ?Sized> LogprobModel for $target {
            fn generate(
                &mut self,
                request: &GenerationRequest,
                trace: TraceSpec,
                observer: &mut dyn TokenObserver,
            ) -> Result<Trace> {
                (**self).generate(request, trace, observer)
            }

            fn generate_batch(
                &mut self,
                request: &GenerationRequest,
                traces: &[TraceSpec],
                observer: &mut dyn TokenObserver,
            ) -> Result<Vec<Trace>> {
                (**self).generate_batch(request, traces, observer)
            }

            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }

            fn model_id(&self) -> String {
                (**self).model_id()
            }

            fn token_text(&self, token_id: u32) -> Option<String> {
                (**self).token_text(token_id)
            }

            fn concurrent_handle(&self) -> Option<Box<dyn LogprobModel + Send>> {
                (**self).concurrent_handle()
            }
        }
    )*};
}

forward_logprob_model!(&mut M, Box<M>);

/// Builds one [`Trace`] token by token while keeping the [`LogprobModel`] contract: the token is
/// checked as the runner checks it (every check of [`Violation`](crate::Violation) but the number
/// of candidates, which depends on the run), the top-k list is sorted and cut to
/// `sampling.top_logprobs`, the observer sees every token, a stop from
/// the observer ends the trace as [`StopReason::Terminated`], and `sampling.max_tokens` ends it as
/// [`StopReason::MaxTokens`].
///
/// ```
/// use deepconf_core::{GenerationRequest, NoObserver, SamplingParams, StopReason, TraceBuilder, TraceSpec};
///
/// let request = GenerationRequest::user("Hi", SamplingParams::default().with_max_tokens(2));
/// let mut observer = NoObserver;
/// let mut trace = TraceBuilder::new(&request, TraceSpec::derive(0, 0), &mut observer);
/// for word in ["Hello", " there", " friend"] {
///     if trace.push_token(None, word, -0.1, vec![-0.1, -2.5])?.is_stop() {
///         break;
///     }
/// }
/// let trace = trace.finish(StopReason::EndOfSequence);
/// assert_eq!((trace.text.as_str(), trace.stop_reason), ("Hello there", StopReason::MaxTokens));
/// # Ok::<(), deepconf_core::Error>(())
/// ```
pub struct TraceBuilder<'a> {
    spec: TraceSpec,
    top_k: usize,
    max_tokens: usize,
    observer: &'a mut dyn TokenObserver,
    steps: Vec<TokenStep>,
    text: String,
    stop: Option<StopReason>,
    prompt_tokens: usize,
}

impl std::fmt::Debug for TraceBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceBuilder")
            .field("spec", &self.spec)
            .field("tokens", &self.steps.len())
            .field("stop", &self.stop)
            .finish()
    }
}

impl<'a> TraceBuilder<'a> {
    /// A builder for trace `spec` of `request`, reporting to `observer`.
    pub fn new(
        request: &GenerationRequest,
        spec: TraceSpec,
        observer: &'a mut dyn TokenObserver,
    ) -> Self {
        Self {
            spec,
            top_k: request.sampling.top_logprobs,
            max_tokens: request.sampling.max_tokens,
            observer,
            steps: Vec::new(),
            text: String::new(),
            stop: None,
            prompt_tokens: 0,
        }
    }

    /// Records how many tokens the formatted prompt has.
    #[must_use]
    pub fn with_prompt_tokens(mut self, tokens: usize) -> Self {
        self.prompt_tokens = tokens;
        self
    }

    /// Adds one token; returns [`TokenControl::Stop`] once the trace is over (the observer stopped
    /// it or `max_tokens` is reached), after which further tokens are refused.
    pub fn push(&mut self, mut step: TokenStep) -> Result<TokenControl> {
        let token = Some(self.steps.len());
        if let Some(reason) = self.stop {
            return Err(Error::contract_at(
                self.spec.index,
                token,
                Violation::TokenAfterEnd { reason },
            ));
        }
        check_step(&step, 1)
            .map_err(|violation| Error::contract_at(self.spec.index, token, violation))?;
        sort_candidates(&mut step);
        step.top_logprobs.truncate(self.top_k);
        step.top_token_ids.truncate(self.top_k);
        step.top_tokens.truncate(self.top_k);
        self.text.push_str(&step.text);
        self.steps.push(step);
        let step = self.steps.last().expect("just pushed");
        if self.observer.on_token(&self.spec, step).is_stop() {
            self.stop = Some(StopReason::Terminated);
        } else if self.steps.len() >= self.max_tokens {
            self.stop = Some(StopReason::MaxTokens);
        }
        Ok(if self.stop.is_some() {
            TokenControl::Stop
        } else {
            TokenControl::Continue
        })
    }

    /// [`push`](Self::push) of a token given by its parts (ids of the candidates unknown).
    pub fn push_token(
        &mut self,
        token_id: Option<u32>,
        text: impl Into<String>,
        logprob: f32,
        top_logprobs: Vec<f32>,
    ) -> Result<TokenControl> {
        self.push(TokenStep {
            token_id,
            text: text.into(),
            logprob,
            top_logprobs,
            top_token_ids: Vec::new(),
            top_tokens: Vec::new(),
        })
    }

    /// Tokens so far.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// True before the first token.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// True once the trace is over.
    pub fn is_done(&self) -> bool {
        self.stop.is_some()
    }

    /// Drops the tokens so far and starts the trace again (a retry), telling the observer.
    pub fn restart(&mut self) {
        self.steps.clear();
        self.text.clear();
        self.stop = None;
        self.observer.on_restart(&self.spec);
    }

    /// The trace; `reason` is why it ended unless the observer or `max_tokens` ended it first
    /// (e.g. [`StopReason::EndOfSequence`]). The text is the concatenation of the token texts.
    pub fn finish(self, reason: StopReason) -> Trace {
        let text = self.text.clone();
        self.finish_with_text(reason, text)
    }

    /// Like [`finish`](Self::finish) with the trace's text decoded by the backend (so that
    /// characters split over tokens come out whole).
    pub fn finish_with_text(self, reason: StopReason, text: String) -> Trace {
        Trace {
            spec: self.spec,
            text,
            steps: self.steps,
            stop_reason: self.stop.unwrap_or(reason),
            prompt_tokens: self.prompt_tokens,
        }
    }
}
