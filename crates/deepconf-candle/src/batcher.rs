//! Continuous batching: one decoder thread serves the traces of every prompt in flight.
//!
//! A caller submits a [`Job`] (one prompt, its sampling settings, the traces to generate) and then
//! services it on its own thread: it receives each decode step's tokens of its traces, runs its
//! [`TokenObserver`] on them and answers with the controls, until the finished traces arrive. The
//! decoder thread keeps up to `max_rows` trace rows of any mix of prompts in one forward pass per
//! step: a prompt is prefilled once when its first trace is admitted and its traces start from a
//! copy of that prompt's KV cache; a row leaves when it ends (end of sequence, `max_tokens`, a full
//! context, or a stop from its observer) and the next waiting trace takes its place.
//!
//! Every row's arithmetic depends only on its own tokens (the kernels compute each output from its
//! own row, whatever the batch), and each trace samples from its own seeded generator, so a trace
//! comes out the same whatever else shares the batch.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use deepconf_core::{
    SamplingParams, StopReason, TokenControl, TokenObserver, TokenStep, Trace, TraceSpec,
};

use crate::decoder::{Decoder, KvCache, Workspace};
use crate::sampling::{SampledToken, TraceRng, sample};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// What the decoder thread tells the caller of a job.
enum JobEvent {
    /// One decode step's new tokens of the job's traces: (trace slot, token).
    Tokens(Vec<(usize, TokenStep)>),
    /// Every trace of the job, in the order of its specs.
    Done(Result<Vec<Trace>>),
}

/// One prompt's traces, waiting or in progress.
struct Job {
    prompt: Vec<u32>,
    sampling: SamplingParams,
    specs: Vec<TraceSpec>,
    events: Sender<JobEvent>,
    controls: Receiver<Vec<TokenControl>>,
}

/// A prompt's KV cache and the logits after its last token.
type Prefill = Arc<(KvCache, Vec<f32>)>;

/// Prefills of recent prompts, newest last, within a byte budget: the online policy sends a
/// prompt's later batches soon after its warmup, and a prompt is then prefilled only once; a new
/// prompt starts from the longest prefix it shares with a kept one (the chat template's system
/// turn, few-shot examples), so only its own tokens are computed. Reusing a prefill gives the same
/// numbers as computing it again: a position's keys and values depend only on the tokens up to it.
#[derive(Default)]
struct PrefillCache {
    entries: VecDeque<(Vec<u32>, Prefill, usize)>,
    bytes: usize,
}

/// Most bytes of KV cache kept for reuse.
const PREFILL_CACHE_BYTES: usize = 256 << 20;

/// Shorter shared prefixes are computed again: copying them saves less than it costs.
const MIN_SHARED_PREFIX: usize = 8;

impl PrefillCache {
    fn get(&mut self, prompt: &[u32]) -> Option<Prefill> {
        let at = self.entries.iter().position(|(p, ..)| p == prompt)?;
        let entry = self.entries.remove(at)?;
        let prefill = Arc::clone(&entry.1);
        self.entries.push_back(entry);
        Some(prefill)
    }

    /// The KV cache of the longest prefix `prompt` shares with a kept prompt, when it is at least
    /// [`MIN_SHARED_PREFIX`] positions long; one token at least is left to compute, for the logits.
    fn shared_prefix(&self, prompt: &[u32]) -> Option<KvCache> {
        let usable = prompt.len().saturating_sub(1);
        let (length, prefill) = self
            .entries
            .iter()
            .map(|(kept, prefill, _)| {
                let common = kept.iter().zip(prompt).take_while(|(a, b)| a == b).count();
                (common.min(usable), prefill)
            })
            .max_by_key(|(common, _)| *common)?;
        (length >= MIN_SHARED_PREFIX).then(|| prefill.0.prefix(length))
    }

    fn insert(&mut self, prompt: Vec<u32>, prefill: Prefill, bytes: usize) {
        if bytes > PREFILL_CACHE_BYTES {
            return;
        }
        self.bytes += bytes;
        self.entries.push_back((prompt, prefill, bytes));
        while self.bytes > PREFILL_CACHE_BYTES {
            let Some((_, _, freed)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= freed;
        }
    }
}

/// Scheduling state shared by the callers and the decoder thread.
struct Queue {
    waiting: VecDeque<Job>,
    /// True while a decoder thread runs; it exits when it has nothing left to do.
    running: bool,
    /// Buffers kept between decoder threads.
    workspace: Option<Workspace>,
    /// Prefills kept between decoder threads.
    prefills: Option<PrefillCache>,
}

/// The model and the queue behind every handle of one loaded model.
pub(crate) struct Batcher {
    decoder: Arc<Decoder>,
    tokenizer: Arc<Tokenizer>,
    max_rows: usize,
    queue: Mutex<Queue>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("max_rows", &self.max_rows)
            .finish()
    }
}

/// Runs `work` on a thread of rayon's pool. A forward pass makes over a hundred parallel
/// matmuls; started from a thread outside the pool, each one would put the caller to sleep and
/// wake it again (measured: a quarter of batch-1 decode time in the scheduler), while from a pool
/// thread the caller joins the work itself.
fn on_worker<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    rayon::scope(|_| work())
}

impl Batcher {
    pub(crate) fn new(decoder: Arc<Decoder>, tokenizer: Arc<Tokenizer>, max_rows: usize) -> Self {
        Self {
            decoder,
            tokenizer,
            max_rows,
            queue: Mutex::new(Queue {
                waiting: VecDeque::new(),
                running: false,
                workspace: None,
                prefills: None,
            }),
        }
    }

    /// Generates `specs` for the tokenized `prompt` (already checked against the context and the
    /// vocabulary), calling `observer` on the calling thread for every token.
    pub(crate) fn generate(
        self: &Arc<Self>,
        prompt: &[u32],
        sampling: &SamplingParams,
        specs: &[TraceSpec],
        observer: &mut dyn TokenObserver,
    ) -> Result<Vec<Trace>> {
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        let (events_tx, events) = channel();
        let (controls, controls_rx) = sync_channel(1);
        self.submit(Job {
            prompt: prompt.to_vec(),
            sampling: sampling.clone(),
            specs: specs.to_vec(),
            events: events_tx,
            controls: controls_rx,
        });
        serve(&events, &controls, specs, observer)
    }

    fn submit(self: &Arc<Self>, job: Job) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.waiting.push_back(job);
        if !queue.running {
            queue.running = true;
            let workspace = queue.workspace.take().unwrap_or_default();
            let prefills = queue.prefills.take().unwrap_or_default();
            let batcher = Arc::clone(self);
            std::thread::Builder::new()
                .name("deepconf-decoder".into())
                .spawn(move || batcher.decode_loop(workspace, prefills))
                .expect("spawn the decoder thread");
        }
    }

    /// Takes the jobs that arrived since the last step; when there is no work at all, marks the
    /// thread stopped (under the lock, so a concurrent submit starts a new one) and returns `None`.
    fn take_arrivals(
        &self,
        idle: bool,
        workspace: &mut Option<Workspace>,
        prefills: &mut Option<PrefillCache>,
    ) -> Option<Vec<Job>> {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if idle && queue.waiting.is_empty() {
            queue.running = false;
            queue.workspace = workspace.take();
            queue.prefills = prefills.take();
            return None;
        }
        Some(queue.waiting.drain(..).collect())
    }

    fn decode_loop(self: Arc<Self>, workspace: Workspace, prefills: PrefillCache) {
        let (mut workspace, mut prefills) = (Some(workspace), Some(prefills));
        let mut jobs: Vec<ActiveJob> = Vec::new();
        let mut rows: Vec<Row> = Vec::new();
        loop {
            let idle = jobs.is_empty() && rows.is_empty();
            let Some(arrivals) = self.take_arrivals(idle, &mut workspace, &mut prefills) else {
                return;
            };
            jobs.extend(arrivals.into_iter().map(ActiveJob::new));
            let ws = workspace.as_mut().expect("held while running");
            let cache = prefills.as_mut().expect("held while running");
            self.step(&mut jobs, &mut rows, ws, cache);
        }
    }

    /// Bytes of a KV cache of `positions` positions.
    fn kv_bytes(&self, positions: usize) -> usize {
        let c = &self.decoder.config;
        positions * c.layers * c.kv_heads * c.head_dim * 2 * std::mem::size_of::<f32>()
    }

    /// One scheduling step: admit traces, sample every row that has fresh logits, let the callers'
    /// observers see the tokens, retire finished traces, then one forward pass for the prompts to
    /// prefill and the rows still running.
    fn step(
        &self,
        jobs: &mut Vec<ActiveJob>,
        rows: &mut Vec<Row>,
        ws: &mut Workspace,
        prefills: &mut PrefillCache,
    ) {
        for job in jobs.iter_mut() {
            if job.prefilled.is_none() && job.next_spec == 0 && !job.failed {
                job.prefilled = prefills.get(&job.job.prompt);
            }
        }
        // Admit waiting traces of prefilled prompts, oldest job first.
        for (key, job) in jobs.iter_mut().enumerate() {
            let Some(prefilled) = job.prefilled.clone().filter(|_| !job.failed) else {
                continue;
            };
            while rows.len() < self.max_rows && job.next_spec < job.job.specs.len() {
                let slot = job.next_spec;
                job.next_spec += 1;
                job.live += 1;
                rows.push(Row::new(
                    key,
                    slot,
                    job.job.specs[slot],
                    &job.job.sampling,
                    &prefilled,
                ));
            }
            if job.next_spec == job.job.specs.len() {
                job.prefilled = None;
            }
        }

        self.sample_and_observe(jobs, rows);
        self.retire(jobs, rows);

        // Prompts to prefill: the oldest jobs with traces waiting for a free row.
        let mut free = self.max_rows.saturating_sub(rows.len());
        let mut prefill: Vec<usize> = Vec::new();
        for (key, job) in jobs.iter().enumerate() {
            if free == 0 {
                break;
            }
            if job.prefilled.is_none() && job.next_spec == 0 && !job.failed {
                prefill.push(key);
                free = free.saturating_sub(job.job.specs.len());
            }
        }
        let running: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].stop.is_none())
            .collect();
        if prefill.is_empty() && running.is_empty() {
            return;
        }
        let mut prompt_caches: Vec<KvCache> = prefill
            .iter()
            .map(|&key| {
                prefills
                    .shared_prefix(&jobs[key].job.prompt)
                    .unwrap_or_else(|| KvCache::new(self.decoder.config.layers))
            })
            .collect();
        let last_tokens: Vec<[u32; 1]> = running
            .iter()
            .map(|&i| [*rows[i].ids.last().expect("a running row has a token")])
            .collect();
        let mut tokens: Vec<&[u32]> = prefill
            .iter()
            .zip(&prompt_caches)
            .map(|(&key, cache)| &jobs[key].job.prompt[cache.len()..])
            .collect();
        tokens.extend(last_tokens.iter().map(|t| &t[..]));
        let mut row_caches: Vec<&mut KvCache> = Vec::with_capacity(running.len());
        {
            let mut running_iter = running.iter().peekable();
            for (i, row) in rows.iter_mut().enumerate() {
                if running_iter.peek() == Some(&&i) {
                    running_iter.next();
                    row_caches.push(&mut row.cache);
                }
            }
        }
        let mut caches: Vec<&mut KvCache> = prompt_caches.iter_mut().collect();
        caches.extend(row_caches);
        let decoder = &self.decoder;
        let logits = on_worker(|| decoder.forward(&mut caches, &tokens, ws));
        let vocab = decoder.config.vocab;
        let mut chunks = logits.chunks_exact(vocab);
        for (&key, cache) in prefill.iter().zip(prompt_caches) {
            let first = chunks.next().expect("one logit row per sequence").to_vec();
            let bytes = self.kv_bytes(cache.len());
            let prefilled = Arc::new((cache, first));
            prefills.insert(jobs[key].job.prompt.clone(), Arc::clone(&prefilled), bytes);
            jobs[key].prefilled = Some(prefilled);
        }
        for (&i, l) in running.iter().zip(chunks) {
            rows[i].logits.clear();
            rows[i].logits.extend_from_slice(l);
            rows[i].fresh = true;
        }
    }

    /// Samples the rows with fresh logits, applies the stop rules, and sends each job its tokens;
    /// then applies the observers' controls.
    fn sample_and_observe(&self, jobs: &mut [ActiveJob], rows: &mut [Row]) {
        let sampled: Vec<(usize, SampledToken)> = rows
            .par_iter_mut()
            .enumerate()
            .filter(|(_, r)| r.fresh && r.stop.is_none())
            .map(|(i, r)| (i, sample(&r.logits, &r.sampling, &mut r.rng)))
            .collect();
        let context_length = self.decoder.config.context_length;
        let mut outgoing: Vec<Vec<usize>> = vec![Vec::new(); jobs.len()];
        for (i, token) in sampled {
            let row = &mut rows[i];
            row.fresh = false;
            if let Err(e) = self.advance(row, token, context_length) {
                // A decoding failure ends the job with its error.
                jobs[row.job].fail(e);
                continue;
            }
            if row.new_token {
                outgoing[row.job].push(i);
            }
        }
        // Every job's tokens go out before any answer is awaited, so the callers' observers run
        // side by side and the step waits for the slowest of them, not for their sum.
        let mut awaiting: Vec<(usize, Vec<usize>)> = Vec::new();
        for (key, row_indices) in outgoing.into_iter().enumerate() {
            if row_indices.is_empty() || jobs[key].failed {
                continue;
            }
            let batch: Vec<(usize, TokenStep)> = row_indices
                .iter()
                .map(|&i| {
                    (
                        rows[i].slot,
                        rows[i].steps.last().expect("a new token").clone(),
                    )
                })
                .collect();
            let job = &mut jobs[key];
            if job.job.events.send(JobEvent::Tokens(batch)).is_ok() {
                awaiting.push((key, row_indices));
            } else {
                // The caller is gone (its thread ended or its observer panicked): drop the job.
                job.failed = true;
            }
        }
        for (key, row_indices) in awaiting {
            let job = &mut jobs[key];
            let answered = job.job.controls.recv().ok();
            let Some(controls) = answered.filter(|c| c.len() == row_indices.len()) else {
                job.failed = true;
                continue;
            };
            for (&i, control) in row_indices.iter().zip(controls) {
                let row = &mut rows[i];
                if control.is_stop() {
                    row.stop = Some(StopReason::Terminated);
                }
            }
        }
    }

    fn retire(&self, jobs: &mut Vec<ActiveJob>, rows: &mut Vec<Row>) {
        let mut i = 0;
        while i < rows.len() {
            let key = rows[i].job;
            if rows[i].stop.is_some() || jobs[key].failed {
                let row = rows.swap_remove(i);
                let job = &mut jobs[key];
                job.live -= 1;
                if !job.failed {
                    match self.tokenizer.decode(&row.ids, true) {
                        Ok(text) => {
                            let slot = row.slot;
                            job.results[slot] = Some(row.into_trace(text));
                        }
                        Err(e) => job.fail(e),
                    }
                }
            } else {
                i += 1;
            }
        }
        // Keep the rows in admission order, so a step's work is laid out the same every time.
        rows.sort_by_key(|r| (r.job, r.slot));
        let mut key = 0;
        while key < jobs.len() {
            let job = &jobs[key];
            let finished = job.live == 0
                && (job.failed || job.next_spec == job.job.specs.len() && job.prefilled.is_none());
            if finished {
                let job = jobs.remove(key);
                job.complete();
                for row in rows.iter_mut() {
                    if row.job > key {
                        row.job -= 1;
                    }
                }
            } else {
                key += 1;
            }
        }
    }

    /// Appends the sampled token to `row` and decides whether the row stops.
    fn advance(&self, row: &mut Row, sampled: SampledToken, context_length: usize) -> Result<()> {
        row.new_token = false;
        if self.tokenizer.eos_token_ids().contains(&sampled.token) {
            row.stop = Some(StopReason::EndOfSequence);
            return Ok(());
        }
        row.ids.push(sampled.token);
        // Token text is the growth of the decoded string; a token that ends inside a multi-byte
        // character contributes nothing until the character completes.
        let full = self.tokenizer.decode(&row.ids, false)?;
        let text = if full.ends_with('\u{FFFD}') || !full.starts_with(&row.decoded) {
            String::new()
        } else {
            let piece = full[row.decoded.len()..].to_string();
            row.decoded = full;
            piece
        };
        row.steps.push(TokenStep {
            token_id: Some(sampled.token),
            text,
            logprob: sampled.logprob,
            top_logprobs: sampled.top_logprobs,
            top_token_ids: sampled.top_ids,
            top_tokens: Vec::new(),
        });
        row.new_token = true;
        row.stop = if row.steps.len() >= row.sampling.max_tokens {
            Some(StopReason::MaxTokens)
        } else if row.cache.len() + 1 >= context_length {
            Some(StopReason::ContextFull)
        } else {
            None
        };
        Ok(())
    }
}

/// The caller's side of a job: run the observer on every token batch until the traces arrive.
fn serve(
    events: &Receiver<JobEvent>,
    controls: &SyncSender<Vec<TokenControl>>,
    specs: &[TraceSpec],
    observer: &mut dyn TokenObserver,
) -> Result<Vec<Trace>> {
    loop {
        match events.recv() {
            Ok(JobEvent::Tokens(batch)) => {
                let answer = batch
                    .iter()
                    .map(|(slot, step)| observer.on_token(&specs[*slot], step))
                    .collect();
                // The decoder only goes away after sending `Done`.
                let _ = controls.send(answer);
            }
            Ok(JobEvent::Done(result)) => return result,
            Err(_) => {
                return Err(Error::InvalidParameter {
                    parameter: "decoder",
                    reason: "the decoder thread ended before the traces were done".into(),
                });
            }
        }
    }
}

/// A job in the decoder's hands.
struct ActiveJob {
    job: Job,
    /// The prompt's KV cache and the logits after its last token, while traces wait to start.
    prefilled: Option<Prefill>,
    /// Specs admitted so far (in order).
    next_spec: usize,
    /// Admitted rows not yet retired.
    live: usize,
    results: Vec<Option<Trace>>,
    failed: bool,
    error: Option<Error>,
}

impl ActiveJob {
    fn new(job: Job) -> Self {
        let n = job.specs.len();
        Self {
            job,
            prefilled: None,
            next_spec: 0,
            live: 0,
            results: (0..n).map(|_| None).collect(),
            failed: false,
            error: None,
        }
    }

    fn fail(&mut self, error: Error) {
        self.failed = true;
        self.error.get_or_insert(error);
    }

    fn complete(self) {
        let result = match self.error {
            Some(e) => Err(e),
            None if self.failed => return,
            None => self
                .results
                .into_iter()
                .map(|t| {
                    t.ok_or_else(|| Error::InvalidParameter {
                        parameter: "decoder",
                        reason: "a trace of the job was never finished".into(),
                    })
                })
                .collect(),
        };
        // A caller that went away needs no answer.
        let _ = self.job.events.send(JobEvent::Done(result));
    }
}

/// One trace being decoded.
struct Row {
    /// Index of its job in the decoder's list.
    job: usize,
    /// Index of its spec within the job.
    slot: usize,
    spec: TraceSpec,
    sampling: SamplingParams,
    rng: TraceRng,
    cache: KvCache,
    logits: Vec<f32>,
    /// The logits are new and not sampled yet.
    fresh: bool,
    ids: Vec<u32>,
    steps: Vec<TokenStep>,
    decoded: String,
    stop: Option<StopReason>,
    /// The last sample added a token (rather than ending the trace at end of sequence).
    new_token: bool,
    prompt_tokens: usize,
}

impl Row {
    fn new(
        job: usize,
        slot: usize,
        spec: TraceSpec,
        sampling: &SamplingParams,
        prefilled: &(KvCache, Vec<f32>),
    ) -> Self {
        Self {
            job,
            slot,
            spec,
            sampling: sampling.clone(),
            rng: TraceRng::new(spec.seed),
            cache: prefilled.0.clone(),
            logits: prefilled.1.clone(),
            fresh: true,
            ids: Vec::new(),
            steps: Vec::new(),
            decoded: String::new(),
            stop: None,
            new_token: false,
            prompt_tokens: prefilled.0.len(),
        }
    }

    fn into_trace(self, text: String) -> Trace {
        Trace {
            spec: self.spec,
            text,
            prompt_tokens: self.prompt_tokens,
            steps: self.steps,
            stop_reason: self.stop.unwrap_or(StopReason::MaxTokens),
        }
    }
}
