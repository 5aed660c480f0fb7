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

use crate::experiment::{Experiment, RunReport};
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
    let pending: Vec<&Instance> = experiment
        .instances
        .iter()
        .filter(|i| !writer.is_done(&i.id))
        .collect();
    let resumed = experiment.instances.len() - pending.len();
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
    let stopped = if concurrency <= 1 || pending.len() <= 1 {
        run_inline(
            experiment,
            &pending,
            model,
            classifier,
            &mut collector,
            &tokens,
        )
    } else {
        run_concurrent(
            experiment,
            &pending,
            model,
            classifier,
            &mut collector,
            Workers {
                count: concurrency.min(pending.len()),
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

/// One instance after another on the calling thread (a backend without concurrent handles).
fn run_inline(
    experiment: &Experiment,
    pending: &[&Instance],
    model: &mut dyn LogprobModel,
    classifier: &mut dyn RefusalClassifier,
    collector: &mut Collector,
    tokens: &AtomicU64,
) -> Result<Stop> {
    let never = AtomicBool::new(false);
    let cancel = experiment.interrupt.as_deref().unwrap_or(&never);
    for (position, &instance) in pending.iter().enumerate() {
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

/// Hands out instance positions in order, at most a window ahead of the oldest unwritten one.
struct Claims {
    state: Mutex<(usize, usize)>,
    moved: Condvar,
    total: usize,
    window: usize,
}

impl Claims {
    /// The next position to run; `None` when every instance is taken or the run is cancelled.
    fn next(&self, cancel: &AtomicBool) -> Option<usize> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let (next, front) = *state;
            if next >= self.total || cancel.load(Ordering::Relaxed) {
                return None;
            }
            if next < front + self.window {
                state.0 += 1;
                return Some(next);
            }
            state = self
                .moved
                .wait_timeout(state, TICK)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn advance_front(&self, front: usize) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = front;
        self.moved.notify_all();
    }

    fn wake_all(&self) {
        self.moved.notify_all();
    }
}

fn run_concurrent(
    experiment: &Experiment,
    pending: &[&Instance],
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
        state: Mutex::new((0, 0)),
        moved: Condvar::new(),
        total: pending.len(),
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
                while let Some(position) = claims.next(cancel) {
                    let mut on_token = || {
                        tokens.fetch_add(1, Ordering::Relaxed);
                    };
                    let outcome = run_instance(
                        experiment,
                        model.as_mut(),
                        classifier.as_mut(),
                        pending[position],
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
        let stop = serve(experiment, pending, classifier, collector, &claims, &inbox);
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
    pending: &[&Instance],
    classifier: &mut dyn RefusalClassifier,
    collector: &mut Collector,
    claims: &Claims,
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
                return Ok(if collector.front >= pending.len() {
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
