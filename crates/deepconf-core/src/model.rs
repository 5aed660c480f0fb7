//! The [`LogprobModel`] trait: what a backend must provide.

use crate::{GenerationRequest, Result, TokenStep, Trace, TraceSpec};

/// What a [`TokenObserver`] wants after seeing a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenControl {
    /// Keep generating this trace.
    Continue,
    /// End this trace now; the backend records it with [`StopReason::Terminated`](crate::StopReason).
    Stop,
}

/// Sees every generated token as it is produced and may stop the trace it belongs to.
///
/// This is how DeepConf's online mode terminates a low-confidence trace mid-generation, and how a run
/// reports progress. Closures `FnMut(&TraceSpec, &TokenStep) -> TokenControl` implement it.
pub trait TokenObserver {
    /// Called after each generated token of trace `trace` (`step` is already part of the trace).
    fn on_token(&mut self, trace: &TraceSpec, step: &TokenStep) -> TokenControl;
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

/// A language model that samples traces and reports top-k log-probabilities for every token.
///
/// Only [`generate`](Self::generate) is required. A backend that can decode several traces of one
/// prompt together (one prompt prefill, lockstep decode) overrides
/// [`generate_batch`](Self::generate_batch) and reports its preferred batch size through
/// [`max_batch_size`](Self::max_batch_size).
///
/// Contract for implementers:
/// - every [`TokenStep`] carries `sampling.top_logprobs` candidate log-probabilities of the model's
///   distribution at that step, most likely first (fewer only when the vocabulary is smaller);
/// - the observer is called after every generated token, and a trace whose observer returned
///   [`TokenControl::Stop`] ends at once with [`StopReason::Terminated`](crate::StopReason);
/// - equal [`TraceSpec::seed`]s with equal requests give equal traces;
/// - the chat template of the model formats `request.messages`.
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

    /// How many traces this backend prefers to decode together (1 when it does not batch).
    fn max_batch_size(&self) -> usize {
        1
    }

    /// A name for reports and run records (model file or id).
    fn model_id(&self) -> String {
        std::any::type_name::<Self>().to_string()
    }
}

impl<M: LogprobModel + ?Sized> LogprobModel for &mut M {
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

    fn max_batch_size(&self) -> usize {
        (**self).max_batch_size()
    }

    fn model_id(&self) -> String {
        (**self).model_id()
    }
}

impl<M: LogprobModel + ?Sized> LogprobModel for Box<M> {
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

    fn max_batch_size(&self) -> usize {
        (**self).max_batch_size()
    }

    fn model_id(&self) -> String {
        (**self).model_id()
    }
}
