//! The traces of a batch on the worker pool, one request each, every token shown to the calling
//! thread's observer.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use deepconf_core::pool::{self, JobContext};
use deepconf_core::{
    GenerationRequest, StopReason, TokenControl, TokenObserver, TokenStep, Trace, TraceSpec,
};

use super::{ObserverSink, OpenAiModel, TraceSink};
use crate::{OpenAiError, Result};

/// What a worker tells the calling thread about its trace while it runs.
pub(super) enum Report {
    /// One more token of the current attempt.
    Token(TokenStep),
    /// The attempt failed and the trace starts again.
    Restart,
}

impl OpenAiModel {
    /// The traces of a batch, one request each, trace `i` with wire seed `seeds[i]`, on worker
    /// threads; every token goes through the calling thread's observer.
    pub(super) fn batch_per_trace(
        &self,
        request: &GenerationRequest,
        traces: &[TraceSpec],
        seeds: &[u64],
        observer: &mut dyn TokenObserver,
    ) -> Result<Vec<Trace>> {
        let workers = self.config.max_concurrency.min(traces.len());
        if workers <= 1 {
            let never = AtomicBool::new(false);
            return traces
                .iter()
                .zip(seeds)
                .map(|(&spec, &seed)| {
                    let mut sink = ObserverSink {
                        spec,
                        observer: &mut *observer,
                    };
                    self.run_trace(request, spec, seed, &mut sink, &never)
                        .map(|(trace, _)| trace)
                })
                .collect();
        }
        let mut results: Vec<Option<Trace>> = vec![None; traces.len()];
        let mut first_error: Option<OpenAiError> = None;
        // Per trace: the observer's stop, as `(attempt + 1) << 32 | tokens kept`, 0 for none.
        let stops: Vec<AtomicU64> = (0..traces.len()).map(|_| AtomicU64::new(0)).collect();
        // Per trace, on this thread: tokens the observer saw in the current attempt, whether it
        // stopped the trace, and the attempt.
        let mut seen: Vec<(usize, bool, u32)> = vec![(0, false, 0); traces.len()];
        // The pool hands out the traces from this thread, a new one for each that ended, so that
        // no trace starts once it has stopped reading (an error, or a panicking observer); its
        // stop flag then also cuts the traces in flight.
        pool::run::<(), Report, Result<(Trace, Vec<usize>)>>(
            vec![(); workers],
            traces.len(),
            |_, job| {
                let slot = job.index();
                let mut sink = ChannelSink {
                    job,
                    stop: &stops[slot],
                    attempt: 0,
                };
                std::panic::catch_unwind(AssertUnwindSafe(|| {
                    self.run_trace(
                        request,
                        traces[slot],
                        seeds[slot],
                        &mut sink,
                        job.stop_flag(),
                    )
                }))
                .unwrap_or(Err(OpenAiError::WorkerPanicked {
                    trace: traces[slot].index,
                }))
            },
            |event| match event {
                pool::Event::Message {
                    index: slot,
                    message: Report::Token(step),
                } => {
                    let (count, stopped, attempt) = &mut seen[slot];
                    if *stopped || first_error.is_some() {
                        return pool::Flow::Continue;
                    }
                    *count += 1;
                    if observer.on_token(&traces[slot], &step) == TokenControl::Stop {
                        *stopped = true;
                        let flag = (u64::from(*attempt) + 1) << 32 | *count as u64;
                        stops[slot].store(flag, Ordering::Release);
                    }
                    pool::Flow::Continue
                }
                pool::Event::Message {
                    index: slot,
                    message: Report::Restart,
                } => {
                    let (count, stopped, attempt) = &mut seen[slot];
                    (*count, *stopped) = (0, false);
                    *attempt += 1;
                    observer.on_restart(&traces[slot]);
                    pool::Flow::Continue
                }
                pool::Event::Done {
                    index: slot,
                    result,
                } => match result {
                    Ok((trace, cuts)) => {
                        let (count, stopped, _) = seen[slot];
                        results[slot] = Some(if stopped {
                            cut(trace, count, &cuts)
                        } else {
                            trace
                        });
                        pool::Flow::Continue
                    }
                    Err(error) => {
                        first_error.get_or_insert(error);
                        pool::Flow::Stop
                    }
                },
            },
        );
        if let Some(error) = first_error {
            return Err(error);
        }
        let mut out = Vec::with_capacity(traces.len());
        for (slot, trace) in results.into_iter().enumerate() {
            out.push(trace.ok_or(OpenAiError::WorkerPanicked {
                trace: traces[slot].index,
            })?);
        }
        fill_prompt_tokens(&mut out);
        Ok(out)
    }
}

/// A stream cut short never receives the usage chunk; the prompt is the same for all traces.
pub(super) fn fill_prompt_tokens(traces: &mut [Trace]) {
    if let Some(prompt_tokens) = traces.iter().map(|t| t.prompt_tokens).find(|&n| n > 0) {
        for trace in traces.iter_mut().filter(|t| t.prompt_tokens == 0) {
            trace.prompt_tokens = prompt_tokens;
        }
    }
}

/// A worker thread's sink: every token goes to the calling thread, whose observer may flag a stop.
pub(super) struct ChannelSink<'a, 'p> {
    job: &'a JobContext<'p, Report, Result<(Trace, Vec<usize>)>>,
    /// The observer's stop for this trace (see `batch_per_trace`).
    stop: &'a AtomicU64,
    /// Attempts restarted so far.
    attempt: u32,
}

impl TraceSink for ChannelSink<'_, '_> {
    fn token(&mut self, step: &TokenStep) -> TokenControl {
        let sent = self.job.send(Report::Token(step.clone()));
        let flag = self.stop.load(Ordering::Acquire);
        let stopped = flag != 0 && (flag >> 32) == u64::from(self.attempt) + 1;
        if !sent || stopped || self.job.stopped() {
            TokenControl::Stop
        } else {
            TokenControl::Continue
        }
    }

    fn restart(&mut self) {
        self.attempt += 1;
        let _ = self.job.send(Report::Restart);
    }
}

/// The trace as the observer stopped it: its first `keep` tokens, the text it had then, ended
/// [`StopReason::Terminated`]. The worker may have read a few tokens more before it saw the stop.
pub(super) fn cut(mut trace: Trace, keep: usize, cuts: &[usize]) -> Trace {
    if keep < trace.steps.len() {
        trace.steps.truncate(keep);
        if let Some(&length) = keep.checked_sub(1).and_then(|last| cuts.get(last)) {
            trace.text.truncate(length);
        }
    }
    trace.stop_reason = StopReason::Terminated;
    trace
}
