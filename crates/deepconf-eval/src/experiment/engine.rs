//! The experiment engine: many instances in flight, results written in instance order, failures
//! recorded instead of ending the run.
//!
//! With a backend that offers concurrent handles, `concurrency` worker threads each take the next
//! instance, run it under the policy (the [`Runner`]) with their own model handle, and send the
//! rows to the calling thread, which writes them in the order of the instances (a bounded reorder
//! window keeps memory flat), shows progress and, for a classifier without concurrent handles,
//! classifies on the workers' behalf. Without handles the calling thread runs the instances one by
//! one. An instance whose model calls keep failing after the backend's retries is recorded in
//! `failures.jsonl` and the run goes on; `--resume` tries it again.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use deepconf_core::{
    GenerationRequest, LogprobModel, Prompt, Runner, TokenControl, TokenObserver, TokenStep, Trace,
    TraceSpec,
};
use deepconf_datasets::Instance;
use deepconf_records::{
    FailedInstance, InstanceMeta, InstanceRow, RunWriter, TraceRow, rows_from_outcome,
};
use deepconf_refusal::{Classification, RefusalAnswers, RefusalClassifier, RefusalLabel};

use super::{Experiment, RunReport};
use crate::progress::Progress;
use crate::seed::instance_seed;
use crate::{Error, Result};

/// How far ahead of the oldest unwritten instance the workers may run, per worker: finished
/// instances wait at most this long for a slow one before them, which bounds memory.
const REORDER_WINDOW_PER_WORKER: usize = 4;

/// After this many failed instances with no success at all the backend is taken to be unusable
/// (a wrong URL, a server that is down) and the run stops with the last error.
const FAILURES_BEFORE_GIVING_UP: usize = 8;

/// How often the writing thread looks at progress, the part age and the interrupt flag.
const TICK: Duration = Duration::from_millis(200);

/// What became of one instance.
enum Outcome {
    Done(Box<(InstanceRow, Vec<TraceRow>)>),
    Failed(FailedInstance),
}

pub(crate) fn run(
    experiment: &Experiment,
    model: &mut dyn LogprobModel,
    classifier: &mut dyn RefusalClassifier,
    out_dir: &Path,
) -> Result<RunReport> {
    experiment.check()?;
    let started = Instant::now();
    let concurrency = experiment.effective_concurrency(model);
    let writer = experiment.open(out_dir, concurrency)?;
    let work = Work::new(&experiment.instances, |id| writer.is_done(id));
    let resumed = experiment.instances.len() - work.pending;
    let progress = Progress::new(
        experiment.progress,
        &experiment.config.name,
        experiment.instances.len(),
        resumed,
    );
    let tokens = Arc::new(AtomicU64::new(0));
    let cancel = Arc::new(AtomicBool::new(false));
    let mut collector = Collector {
        writer: Some(writer),
        buffered: BTreeMap::new(),
        front: 0,
        newly_run: 0,
        failed: Vec::new(),
        progress,
        stop_after: experiment.stop_after,
        resumed,
        tokens: Arc::clone(&tokens),
    };
    let stopped = if concurrency <= 1 || work.pending <= 1 {
        run_inline(
            experiment,
            &work,
            model,
            classifier,
            &mut collector,
            &tokens,
        )
    } else {
        run_concurrent(
            experiment,
            &work,
            model,
            classifier,
            &mut collector,
            Workers {
                count: concurrency.min(work.pending),
                tokens: &tokens,
                cancel: &cancel,
            },
        )
    };
    collector.progress.finish();
    let stop = stopped?;
    if stop == Stop::Interrupted {
        // Instances that finished after one still in flight are written too: a resumed run
        // skips them by id, whatever the order in the file.
        collector.write_out_of_order()?;
    }
    let tokens_generated = tokens.load(Ordering::Relaxed);
    let completed = matches!(stop, Stop::Finished);
    // A simulated kill leaves the buffer unwritten; every other stop writes what is finished.
    let writer = collector.writer.take();
    if !matches!(stop, Stop::Killed)
        && let Some(writer) = writer
    {
        writer.finish()?;
    }
    Ok(RunReport {
        out_dir: out_dir.to_path_buf(),
        instances: experiment.instances.len(),
        resumed,
        newly_run: collector.newly_run,
        failed: collector.failed,
        completed,
        interrupted: matches!(stop, Stop::Interrupted),
        concurrency,
        tokens_generated,
        elapsed: started.elapsed(),
    })
}

/// Why the engine stopped taking instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Every instance was tried.
    Finished,
    /// The interrupt flag was raised.
    Interrupted,
    /// [`Experiment::stop_after`] was reached: leave things as a kill would.
    Killed,
}

fn interrupted(experiment: &Experiment) -> bool {
    experiment
        .interrupt
        .as_ref()
        .is_some_and(|flag| flag.load(Ordering::Relaxed))
}

/// The instances a run still has to do: those not found finished in the run directory. One bit
/// per instance, so that nothing the engine keeps grows with the run beyond the caller's list.
struct Work<'a> {
    instances: &'a [Instance],
    finished: Vec<u64>,
    /// Instances not finished.
    pending: usize,
}

impl<'a> Work<'a> {
    fn new(instances: &'a [Instance], is_finished: impl Fn(&str) -> bool) -> Self {
        let mut finished = vec![0u64; instances.len().div_ceil(64)];
        let mut pending = instances.len();
        for (index, instance) in instances.iter().enumerate() {
            if is_finished(&instance.id) {
                finished[index / 64] |= 1 << (index % 64);
                pending -= 1;
            }
        }
        Self {
            instances,
            finished,
            pending,
        }
    }

    fn is_finished(&self, index: usize) -> bool {
        self.finished[index / 64] & (1 << (index % 64)) != 0
    }

    /// The first instance at or after `index` still to do, with its index.
    fn next_from(&self, mut index: usize) -> Option<(usize, &'a Instance)> {
        while index < self.instances.len() {
            if !self.is_finished(index) {
                return Some((index, &self.instances[index]));
            }
            index += 1;
        }
        None
    }

    /// The instances still to do, in order.
    fn iter(&self) -> impl Iterator<Item = &'a Instance> + '_ {
        self.instances
            .iter()
            .enumerate()
            .filter(|(index, _)| !self.is_finished(*index))
            .map(|(_, instance)| instance)
    }
}

/// One instance after another on the calling thread (a backend without concurrent handles).
fn run_inline(
    experiment: &Experiment,
    work: &Work<'_>,
    model: &mut dyn LogprobModel,
    classifier: &mut dyn RefusalClassifier,
    collector: &mut Collector,
    tokens: &AtomicU64,
) -> Result<Stop> {
    let never = AtomicBool::new(false);
    let cancel = experiment.interrupt.as_deref().unwrap_or(&never);
    for (position, instance) in work.iter().enumerate() {
        if collector.reached_stop_after() {
            return Ok(Stop::Killed);
        }
        if interrupted(experiment) {
            return Ok(Stop::Interrupted);
        }
        let mut on_token = || {
            tokens.fetch_add(1, Ordering::Relaxed);
        };
        let outcome = run_instance(
            experiment,
            model,
            classifier,
            instance,
            cancel,
            &mut on_token,
        );
        if interrupted(experiment) {
            return Ok(Stop::Interrupted);
        }
        collector.accept(position, outcome?)?;
    }
    Ok(if collector.reached_stop_after() {
        Stop::Killed
    } else {
        Stop::Finished
    })
}

struct Workers<'a> {
    count: usize,
    tokens: &'a Arc<AtomicU64>,
    cancel: &'a Arc<AtomicBool>,
}

/// What a worker tells the writing thread.
enum Message {
    /// An instance's outcome (or an error that ends the run).
    Finished {
        position: usize,
        outcome: Result<Outcome>,
    },
    /// A classification for a worker whose classifier is the writing thread's.
    Classify {
        prompt: String,
        response: String,
        reply: SyncSender<deepconf_refusal::Result<Classification>>,
    },
}

/// Where [`Claims`] stands.
struct ClaimState {
    /// The position (among the instances to do) of the next instance to hand out.
    next: usize,
    /// The index (among all instances) from which to look for it.
    next_index: usize,
    /// The position of the oldest instance not yet written.
    front: usize,
}

/// Hands out the instances to do in order, each with its position among them, at most a window
/// ahead of the oldest unwritten one.
struct Claims<'w, 'a> {
    work: &'w Work<'a>,
    state: Mutex<ClaimState>,
    moved: Condvar,
    window: usize,
}

impl<'a> Claims<'_, 'a> {
    /// The next instance to run and its position; `None` when every instance is taken or the run
    /// is cancelled.
    fn next(&self, cancel: &AtomicBool) -> Option<(usize, &'a Instance)> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if state.next >= self.work.pending || cancel.load(Ordering::Relaxed) {
                return None;
            }
            if state.next < state.front + self.window {
                let (index, instance) = self.work.next_from(state.next_index)?;
                let position = state.next;
                state.next += 1;
                state.next_index = index + 1;
                return Some((position, instance));
            }
            state = self
                .moved
                .wait_timeout(state, TICK)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn advance_front(&self, front: usize) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).front = front;
        self.moved.notify_all();
    }

    fn wake_all(&self) {
        self.moved.notify_all();
    }
}

fn run_concurrent(
    experiment: &Experiment,
    work: &Work<'_>,
    model: &mut dyn LogprobModel,
    classifier: &mut dyn RefusalClassifier,
    collector: &mut Collector,
    workers: Workers<'_>,
) -> Result<Stop> {
    let mut handles = Vec::with_capacity(workers.count);
    for _ in 0..workers.count {
        let model_handle = model
            .concurrent_handle()
            .ok_or_else(|| Error::InvalidParameter {
                parameter: "concurrency",
                value: workers.count.to_string(),
                reason: "the backend stopped offering concurrent handles".into(),
            })?;
        handles.push((model_handle, classifier.concurrent_handle()));
    }
    let claims = Claims {
        work,
        state: Mutex::new(ClaimState {
            next: 0,
            next_index: 0,
            front: 0,
        }),
        moved: Condvar::new(),
        window: REORDER_WINDOW_PER_WORKER * workers.count,
    };
    let (messages, inbox) = channel::<Message>();
    let cancel = workers.cancel;
    std::thread::scope(|scope| -> Result<Stop> {
        for (model_handle, classifier_handle) in handles {
            let messages = messages.clone();
            let (claims, tokens, cancel) = (&claims, workers.tokens, cancel);
            scope.spawn(move || {
                let mut model = model_handle;
                let mut classifier: Box<dyn RefusalClassifier + Send> = match classifier_handle {
                    Some(own) => own,
                    None => Box::new(ProxyClassifier {
                        messages: messages.clone(),
                    }),
                };
                while let Some((position, instance)) = claims.next(cancel) {
                    let mut on_token = || {
                        tokens.fetch_add(1, Ordering::Relaxed);
                    };
                    let outcome = run_instance(
                        experiment,
                        model.as_mut(),
                        classifier.as_mut(),
                        instance,
                        cancel,
                        &mut on_token,
                    );
                    if cancel.load(Ordering::Relaxed) {
                        break;
                    }
                    let message = Message::Finished { position, outcome };
                    if messages.send(message).is_err() {
                        break;
                    }
                }
            });
        }
        drop(messages);
        let stop = serve(
            experiment,
            work.pending,
            classifier,
            collector,
            &claims,
            &inbox,
        );
        // Whatever the reason, stop the workers before the scope joins them.
        cancel.store(true, Ordering::Relaxed);
        claims.wake_all();
        // Answer classifications still asked for, so no worker waits forever.
        while let Ok(message) = inbox.recv() {
            if let Message::Classify {
                prompt,
                response,
                reply,
            } = message
            {
                let _ = reply.send(classifier.classify(&prompt, &response));
            }
        }
        stop
    })
}

/// The writing thread's loop: collect outcomes in order, classify for proxies, show progress,
/// watch the interrupt flag.
fn serve(
    experiment: &Experiment,
    pending: usize,
    classifier: &mut dyn RefusalClassifier,
    collector: &mut Collector,
    claims: &Claims<'_, '_>,
    inbox: &Receiver<Message>,
) -> Result<Stop> {
    loop {
        if collector.reached_stop_after() {
            return Ok(Stop::Killed);
        }
        if interrupted(experiment) {
            return Ok(Stop::Interrupted);
        }
        match inbox.recv_timeout(TICK) {
            Ok(Message::Finished { position, outcome }) => {
                collector.accept(position, outcome?)?;
                claims.advance_front(collector.front);
            }
            Ok(Message::Classify {
                prompt,
                response,
                reply,
            }) => {
                let _ = reply.send(classifier.classify(&prompt, &response));
            }
            Err(RecvTimeoutError::Timeout) => collector.flush_if_due()?,
            Err(RecvTimeoutError::Disconnected) => {
                return Ok(if collector.front >= pending {
                    Stop::Finished
                } else {
                    Stop::Interrupted
                });
            }
        }
    }
}

/// A classifier that asks the writing thread's classifier (one without concurrent handles).
struct ProxyClassifier {
    messages: Sender<Message>,
}

impl RefusalClassifier for ProxyClassifier {
    fn classify(
        &mut self,
        prompt: &str,
        response: &str,
    ) -> deepconf_refusal::Result<Classification> {
        let (reply, answer) = sync_channel(1);
        let asked = self.messages.send(Message::Classify {
            prompt: prompt.to_string(),
            response: response.to_string(),
            reply,
        });
        asked
            .ok()
            .and_then(|()| answer.recv().ok())
            .unwrap_or_else(|| {
                Err(deepconf_refusal::Error::Model(
                    deepconf_core::Error::backend(
                        "classifier",
                        "the run stopped before the classification was answered",
                    ),
                ))
            })
    }

    fn name(&self) -> String {
        "proxy".into()
    }
}

/// A model whose traces all stop at once when `cancel` is raised (an interrupt), so that a worker
/// does not finish an instance nobody will write.
struct Cancellable<'a> {
    model: &'a mut dyn LogprobModel,
    cancel: &'a AtomicBool,
}

struct CancellingObserver<'a> {
    observer: &'a mut dyn TokenObserver,
    cancel: &'a AtomicBool,
}

impl TokenObserver for CancellingObserver<'_> {
    fn on_token(&mut self, trace: &TraceSpec, step: &TokenStep) -> TokenControl {
        let control = self.observer.on_token(trace, step);
        if self.cancel.load(Ordering::Relaxed) {
            TokenControl::Stop
        } else {
            control
        }
    }

    fn on_restart(&mut self, trace: &TraceSpec) {
        self.observer.on_restart(trace);
    }
}

impl LogprobModel for Cancellable<'_> {
    fn generate(
        &mut self,
        request: &GenerationRequest,
        trace: TraceSpec,
        observer: &mut dyn TokenObserver,
    ) -> deepconf_core::Result<Trace> {
        let mut observer = CancellingObserver {
            observer,
            cancel: self.cancel,
        };
        self.model.generate(request, trace, &mut observer)
    }

    fn generate_batch(
        &mut self,
        request: &GenerationRequest,
        traces: &[TraceSpec],
        observer: &mut dyn TokenObserver,
    ) -> deepconf_core::Result<Vec<Trace>> {
        let mut observer = CancellingObserver {
            observer,
            cancel: self.cancel,
        };
        self.model.generate_batch(request, traces, &mut observer)
    }

    fn capabilities(&self) -> deepconf_core::Capabilities {
        self.model.capabilities()
    }

    fn model_id(&self) -> String {
        self.model.model_id()
    }
}

/// Runs one instance: its traces under the policy, each labelled by the classifier, and the
/// classifier on the reference response when the dataset labels one. A model failure (after the
/// backend's retries) becomes [`Outcome::Failed`]; other errors end the run.
fn run_instance(
    experiment: &Experiment,
    model: &mut dyn LogprobModel,
    classifier: &mut dyn RefusalClassifier,
    instance: &Instance,
    cancel: &AtomicBool,
    on_token: &mut dyn FnMut(),
) -> Result<Outcome> {
    let mut config = experiment.config.run.clone();
    config.sampling.seed = instance_seed(experiment.config.run.sampling.seed, &instance.id);
    let runner = Runner::new(config)?;
    let mut answers = RefusalAnswers::new(classifier);
    let mut progress = |_: &TraceSpec, _: &TokenStep| on_token();
    let mut model = Cancellable { model, cancel };
    let outcome = match runner.run_prompt(
        &mut model,
        Prompt::Chat(instance.messages.clone()),
        &mut answers,
        Some(&mut progress),
    ) {
        Ok(outcome) => outcome,
        Err(error) => return failed(instance, error),
    };
    let reference_refusal_predicted =
        match (&instance.reference_response, instance.reference_refusal) {
            (Some(response), Some(_)) => {
                match answers
                    .classifier_mut()
                    .classify(instance.user_prompt(), response)
                {
                    Ok(c) => match c.label {
                        RefusalLabel::Refusal => Some(true),
                        RefusalLabel::Compliance => Some(false),
                        RefusalLabel::Incomplete => None,
                    },
                    Err(deepconf_refusal::Error::Model(e)) => return failed(instance, e),
                    Err(_) => None,
                }
            }
            _ => None,
        };
    let meta = InstanceMeta {
        instance_id: instance.id.clone(),
        prompt: instance.user_prompt().to_string(),
        gold_harmful: instance.harmful,
        dataset: instance.dataset.clone(),
        category: instance.category.clone(),
        subcategory: instance.subcategory.clone(),
        adversarial: instance.adversarial,
        reference_refusal: instance.reference_refusal,
        reference_refusal_predicted,
    };
    let rows = rows_from_outcome(&meta, &outcome, experiment.config.store_logprobs);
    Ok(Outcome::Done(Box::new(rows)))
}

/// A backend failure is the instance's; anything else (a bad configuration, a broken contract)
/// is the run's.
fn failed(instance: &Instance, error: deepconf_core::Error) -> Result<Outcome> {
    match error {
        deepconf_core::Error::Backend { .. } => Ok(Outcome::Failed(FailedInstance {
            instance_id: instance.id.clone(),
            prompt: instance.user_prompt().to_string(),
            gold_harmful: instance.harmful,
            error: error_chain(&error),
        })),
        other => Err(other.into()),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Writes outcomes in instance order.
struct Collector {
    writer: Option<RunWriter>,
    buffered: BTreeMap<usize, Outcome>,
    /// The position of the oldest instance not yet written.
    front: usize,
    newly_run: usize,
    failed: Vec<String>,
    progress: Progress,
    stop_after: Option<usize>,
    resumed: usize,
    tokens: Arc<AtomicU64>,
}

impl Collector {
    fn reached_stop_after(&self) -> bool {
        self.stop_after.is_some_and(|n| self.newly_run >= n)
    }

    fn writer(&mut self) -> &mut RunWriter {
        self.writer
            .as_mut()
            .expect("the writer lives until the run ends")
    }

    fn accept(&mut self, position: usize, outcome: Outcome) -> Result<()> {
        self.buffered.insert(position, outcome);
        self.accept_ready()
    }

    /// Writes the outcomes from the front on, as far as they are contiguous.
    fn accept_ready(&mut self) -> Result<()> {
        while let Some(outcome) = self.buffered.remove(&self.front) {
            self.front += 1;
            match outcome {
                Outcome::Done(rows) => {
                    if self.reached_stop_after() {
                        // A simulated kill: what comes after the limit is never written.
                        continue;
                    }
                    let (row, traces) = *rows;
                    self.writer().push(row, traces)?;
                    self.newly_run += 1;
                }
                Outcome::Failed(failure) => {
                    self.writer().record_failure(&failure)?;
                    self.failed.push(failure.instance_id);
                    if self.newly_run == 0 && self.failed.len() >= FAILURES_BEFORE_GIVING_UP {
                        return Err(Error::Unusable {
                            failed: self.failed.len(),
                            last_error: failure.error,
                        });
                    }
                }
            }
            self.progress
                .on_instance(self.newly_run + self.failed.len(), self.resumed);
        }
        self.progress.tick(self.tokens.load(Ordering::Relaxed));
        Ok(())
    }

    /// Writes every finished outcome still waiting for an earlier instance, in position order.
    fn write_out_of_order(&mut self) -> Result<()> {
        while let Some((&position, _)) = self.buffered.iter().next() {
            self.front = position;
            self.accept_ready()?;
        }
        Ok(())
    }

    fn flush_if_due(&mut self) -> Result<()> {
        self.progress.tick(self.tokens.load(Ordering::Relaxed));
        Ok(self.writer().flush_if_due()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_skips_finished_instances_across_bitmap_words() {
        let instances: Vec<Instance> = (0..130)
            .map(|i| Instance::user(format!("i{i}"), "p", None))
            .collect();
        let finished = ["i0", "i63", "i64", "i129"];
        let work = Work::new(&instances, |id| finished.contains(&id));
        assert_eq!(work.pending, 126);
        let ids: Vec<&str> = work.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids.len(), 126);
        assert!(ids.iter().all(|id| !finished.contains(id)));
        assert_eq!((ids[0], ids[62], ids[125]), ("i1", "i65", "i128"));
        assert_eq!(work.next_from(0).map(|(i, _)| i), Some(1));
        assert_eq!(work.next_from(63).map(|(i, _)| i), Some(65));
        assert_eq!(work.next_from(129).map(|(i, _)| i), None);
    }
}
