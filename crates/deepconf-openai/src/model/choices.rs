//! A batch's traces as the choices of one request (`n`, not streamed), with the fallback to one
//! request per trace on a server that refuses `n`.

use std::sync::atomic::{AtomicBool, Ordering};

use deepconf_core::{GenerationRequest, StopReason, TokenControl, TokenObserver, Trace, TraceSpec};

use super::OpenAiModel;
use super::batch::fill_prompt_tokens;
use super::replicas::prompt_affinity;
use crate::wire::{self};
use crate::{OpenAiError, Result};

impl OpenAiModel {
    /// One request for the choices `traces` (`n`, not streamed), the first with wire seed `seed`
    /// and choice `j` with `seed + j`, as vLLM seeds them. Returns the traces of the choices the
    /// server sent (`None` where it sent none), or `None` when it refused `n`. A replica that
    /// refuses `n` or sends fewer choices is remembered as one that does not serve it.
    pub(super) fn request_choices(
        &self,
        request: &GenerationRequest,
        traces: &[TraceSpec],
        seed: u64,
        affinity: u64,
    ) -> Result<Option<Vec<Option<Trace>>>> {
        let (route, mut body) = wire::request_body(&self.config, request, traces[0]);
        body["seed"] = seed.into();
        if traces.len() > 1 {
            body["n"] = traces.len().into();
        }
        let body = body.to_string();
        let never = AtomicBool::new(false);
        self.with_retries(affinity, &never, |replica, base_url| {
            let url = format!("{base_url}{}", route.path());
            let refuses = || {
                self.replicas.list[replica]
                    .refuses_choices
                    .store(true, Ordering::Relaxed);
            };
            let response = match self.send(&url, &body, false) {
                Ok(response) => response,
                Err((error, _)) if traces.len() > 1 && refuses_choices(&error) => {
                    refuses();
                    return Ok(None);
                }
                Err(failure) => return Err(failure),
            };
            let (pieces, prompt_tokens) = self
                .read_whole(&url, route, response.into_reader())
                .map_err(|e| (e, None))?;
            let mut out: Vec<Option<Trace>> = vec![None; traces.len()];
            for (index, piece) in pieces {
                let Some(slot) = out.get_mut(index).filter(|slot| slot.is_none()) else {
                    continue;
                };
                let mut assembler = self.assembler(request, traces[index]);
                assembler.prompt_tokens = prompt_tokens;
                assembler
                    .push(&url, piece, &mut |_| TokenControl::Continue)
                    .map_err(|e| (e, None))?;
                *slot = Some(assembler.finish(&url).map_err(|e| (e, None))?);
            }
            if out.iter().any(Option::is_none) {
                refuses();
            }
            Ok(Some(out))
        })
    }

    /// The traces of a batch when the server need not stream: one request for all of them (`n`)
    /// where the prompt's replica serves it, else one request per trace with the same seeds, so
    /// that the traces do not depend on which way they were asked for. The observer sees each
    /// trace's tokens once it has arrived whole, and a stop cuts the trace there.
    pub(super) fn generate_choices(
        &self,
        request: &GenerationRequest,
        traces: &[TraceSpec],
        observer: &mut dyn TokenObserver,
    ) -> Result<Vec<Trace>> {
        let affinity = prompt_affinity(request);
        // 30 bits, so that `seed + j` stays within the 31 bits every server takes.
        let seed = wire::wire_seed(traces[0]) & 0x3fff_ffff;
        let seeds: Vec<u64> = (0..traces.len()).map(|j| seed + j as u64).collect();
        let replica = self.replicas.pick(affinity);
        let mut results: Vec<Option<Trace>> = vec![None; traces.len()];
        if !self.replicas.list[replica]
            .refuses_choices
            .load(Ordering::Relaxed)
            && let Some(served) = self.request_choices(request, traces, seed, affinity)?
        {
            for (slot, trace) in results.iter_mut().zip(served) {
                *slot = trace.map(|trace| replay(trace, observer));
            }
        }
        let missing: Vec<usize> = (0..traces.len())
            .filter(|&i| results[i].is_none())
            .collect();
        if !missing.is_empty() {
            let specs: Vec<TraceSpec> = missing.iter().map(|&i| traces[i]).collect();
            let missing_seeds: Vec<u64> = missing.iter().map(|&i| seeds[i]).collect();
            let more = self.batch_per_trace(request, &specs, &missing_seeds, observer)?;
            for (i, trace) in missing.into_iter().zip(more) {
                results[i] = Some(trace);
            }
        }
        let mut out: Vec<Trace> = results.into_iter().flatten().collect();
        fill_prompt_tokens(&mut out);
        Ok(out)
    }

    /// Whether a batch is asked for as choices of one request.
    pub(super) fn uses_choices(&self) -> bool {
        self.config.choices_per_request && !self.config.stream
    }
}

/// Shows a whole trace's tokens to the observer; a stop cuts the trace after that token.
pub(super) fn replay(mut trace: Trace, observer: &mut dyn TokenObserver) -> Trace {
    let spec = trace.spec;
    let stop_at = trace
        .steps
        .iter()
        .position(|step| observer.on_token(&spec, step) == TokenControl::Stop);
    if let Some(at) = stop_at
        && at + 1 < trace.steps.len()
    {
        trace.steps.truncate(at + 1);
        trace.text = trace.steps.iter().map(|s| s.text.as_str()).collect();
        trace.stop_reason = StopReason::Terminated;
    } else if stop_at.is_some() {
        trace.stop_reason = StopReason::Terminated;
    }
    trace
}

/// Whether a failed request for several choices says that the server does not serve `n`:
/// a client error (vLLM and SGLang check their fields with 400 or 422), or a message about
/// choices (llama.cpp's server answers "Only one completion choice is allowed", with 500 in some
/// versions).
pub(super) fn refuses_choices(error: &OpenAiError) -> bool {
    match error {
        OpenAiError::Status {
            status, message, ..
        } => matches!(status, 400 | 422 | 501) || message.to_lowercase().contains("choice"),
        _ => false,
    }
}
