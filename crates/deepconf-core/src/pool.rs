//! One scoped worker pool for the crates above: jobs `0..n` on a fixed set of worker threads, each
//! worker owning its state (a model or classifier handle), results back on the calling thread.
//!
//! The calling thread hands out every job itself, one more for each that finished, so that once it
//! stops (a failure, or a panic in its own code) no job starts; a worker thread is never left
//! waiting for work that will not come. Jobs can also send messages while they run (e.g. every
//! token of a trace), which the calling thread sees in order with the results; that keeps a
//! non-`Send` observer on the calling thread.
//!
//! ```
//! use deepconf_core::pool;
//!
//! // Three workers, each with its own state; the results in job order.
//! let items = [1, 2, 3, 4, 5];
//! let squares = pool::map_ordered(vec![0u32; 3], &items, |calls, &x| {
//!     *calls += 1;
//!     Ok::<_, String>(x * x)
//! });
//! assert_eq!(squares, Ok(vec![1, 4, 9, 16, 25]));
//!
//! // The first failure is returned and no job starts after it is seen.
//! let failed = pool::map_ordered(vec![(); 2], &items, |_, &x| {
//!     if x == 2 { Err(format!("job {x} failed")) } else { Ok(x) }
//! });
//! assert_eq!(failed, Err("job 2 failed".to_string()));
//! ```

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Sender, channel};

/// What the calling thread receives while the pool runs.
#[derive(Debug)]
pub enum Event<M, R> {
    /// A message a job sent while it ran ([`JobContext::send`]).
    Message {
        /// The job's index.
        index: usize,
        /// The message.
        message: M,
    },
    /// A job finished.
    Done {
        /// The job's index.
        index: usize,
        /// What it returned.
        result: R,
    },
}

/// The calling thread's answer to an [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on handing out jobs.
    Continue,
    /// Start no more jobs and raise the stop flag ([`JobContext::stopped`]); the running ones
    /// still report.
    Stop,
}

/// What a running job sees of the pool: its index, a channel to the calling thread and the stop
/// flag.
pub struct JobContext<'a, M, R> {
    index: usize,
    events: &'a Sender<Payload<M, R>>,
    stop: &'a AtomicBool,
}

impl<M, R> std::fmt::Debug for JobContext<'_, M, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("index", &self.index)
            .field("stopped", &self.stopped())
            .finish()
    }
}

impl<M, R> JobContext<'_, M, R> {
    /// The job's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Sends `message` to the calling thread; `false` once it no longer listens (it stopped by
    /// unwinding), when the job should end.
    pub fn send(&self, message: M) -> bool {
        self.events
            .send(Payload::Event(Event::Message {
                index: self.index,
                message,
            }))
            .is_ok()
    }

    /// Whether the calling thread stopped the pool ([`Flow::Stop`], or a panic on its side).
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The stop flag itself, for code that polls an [`AtomicBool`].
    pub fn stop_flag(&self) -> &AtomicBool {
        self.stop
    }
}

/// What a worker sends: an event, or the panic of a job (resumed on the calling thread).
enum Payload<M, R> {
    Event(Event<M, R>),
    Panicked(Box<dyn Any + Send>),
}

/// Raises the stop flag when dropped, also while unwinding.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs jobs `0..jobs` on one thread per worker state (at most `jobs` threads), in index order as
/// workers come free: `job(state, context)` runs on the worker, `on_event` on the calling thread for
/// every message and result, in the order they arrive. After [`Flow::Stop`] no job starts; the
/// running ones finish and report. A panicking job stops the pool and its panic resumes on the
/// calling thread once every worker has ended; a panic in `on_event` raises the stop flag and
/// closes the channel, so workers end at their next send.
pub fn run<W, M, R>(
    workers: Vec<W>,
    jobs: usize,
    job: impl Fn(&mut W, &JobContext<'_, M, R>) -> R + Sync,
    mut on_event: impl FnMut(Event<M, R>) -> Flow,
) where
    W: Send,
    M: Send,
    R: Send,
{
    let threads = workers.len().min(jobs);
    if threads == 0 {
        return;
    }
    let stop = AtomicBool::new(false);
    let (event_tx, event_rx) = channel::<Payload<M, R>>();
    let (work_tx, work_rx) = channel::<usize>();
    let work_rx = Mutex::new(work_rx);
    let mut panic: Option<Box<dyn Any + Send>> = None;
    std::thread::scope(|scope| {
        for mut state in workers.into_iter().take(threads) {
            let events = event_tx.clone();
            let (work_rx, stop, job) = (&work_rx, &stop, &job);
            scope.spawn(move || {
                loop {
                    let next = work_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok(index) = next else { break };
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let context = JobContext {
                        index,
                        events: &events,
                        stop,
                    };
                    let payload = match std::panic::catch_unwind(AssertUnwindSafe(|| {
                        job(&mut state, &context)
                    })) {
                        Ok(result) => Payload::Event(Event::Done { index, result }),
                        Err(panic) => Payload::Panicked(panic),
                    };
                    if events.send(payload).is_err() {
                        break;
                    }
                }
            });
        }
        // Only workers hold senders now, so the loop below ends when the last worker exits.
        drop(event_tx);
        // Owned here so that a panic in `on_event` drops it before the scope joins the workers:
        // their sends then fail and they stop. The guard, dropped first, keeps them from starting
        // another job meanwhile.
        let event_rx = event_rx;
        let mut work_tx = Some(work_tx);
        let mut granted = 0;
        while granted < threads {
            if let Some(work) = &work_tx {
                let _ = work.send(granted);
            }
            granted += 1;
        }
        if granted == jobs {
            work_tx = None;
        }
        let _stop_on_unwind = StopOnDrop(&stop);
        while let Ok(payload) = event_rx.recv() {
            let (flow, finished) = match payload {
                Payload::Event(event) => {
                    let finished = matches!(event, Event::Done { .. });
                    (on_event(event), finished)
                }
                Payload::Panicked(payload) => {
                    panic.get_or_insert(payload);
                    (Flow::Stop, true)
                }
            };
            if flow == Flow::Stop {
                stop.store(true, Ordering::Relaxed);
            }
            if finished && granted < jobs && !stop.load(Ordering::Relaxed) {
                if let Some(work) = &work_tx {
                    let _ = work.send(granted);
                }
                granted += 1;
            }
            // Without more work the workers' waits end and they exit.
            if granted == jobs || stop.load(Ordering::Relaxed) {
                work_tx = None;
            }
        }
    });
    if let Some(payload) = panic {
        std::panic::resume_unwind(payload);
    }
}

/// `f(state, item)` for every item on one thread per worker state, the results in item order; the
/// first error (in the order they arrive) is returned and no item starts after it is seen (the
/// running ones finish). A panic in `f` resumes on the calling thread.
///
/// # Panics
/// With items but no worker state.
pub fn map_ordered<W, T, R, E>(
    workers: Vec<W>,
    items: &[T],
    f: impl Fn(&mut W, &T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E>
where
    W: Send,
    T: Sync,
    R: Send,
    E: Send,
{
    assert!(
        !workers.is_empty() || items.is_empty(),
        "map_ordered needs a worker"
    );
    let mut slots: Vec<Option<R>> = items.iter().map(|_| None).collect();
    let mut failure: Option<E> = None;
    run::<W, std::convert::Infallible, Result<R, E>>(
        workers,
        items.len(),
        |state, context| f(state, &items[context.index()]),
        |event| match event {
            Event::Done {
                index,
                result: Ok(value),
            } => {
                slots[index] = Some(value);
                Flow::Continue
            }
            Event::Done { result: Err(e), .. } => {
                failure.get_or_insert(e);
                Flow::Stop
            }
            Event::Message { message, .. } => match message {},
        },
    );
    if let Some(e) = failure {
        return Err(e);
    }
    // Without a failure or a panic every job ran and reported.
    Ok(slots
        .into_iter()
        .map(|slot| slot.expect("every job reported"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn results_keep_item_order_and_every_worker_keeps_its_state() {
        let items: Vec<usize> = (0..100).collect();
        let out = map_ordered(vec![Vec::new(); 4], &items, |seen: &mut Vec<usize>, &x| {
            seen.push(x);
            Ok::<_, ()>(x * 2)
        })
        .unwrap();
        assert_eq!(out, items.iter().map(|x| x * 2).collect::<Vec<_>>());
    }

    #[test]
    fn no_job_starts_after_a_failure_is_seen() {
        let started = AtomicUsize::new(0);
        let items: Vec<usize> = (0..1000).collect();
        let result = map_ordered(vec![(); 2], &items, |_, &x| {
            started.fetch_add(1, Ordering::Relaxed);
            if x == 3 { Err(x) } else { Ok(x) }
        });
        assert_eq!(result, Err(3));
        // Job 3 and at most the other worker's next jobs while the failure travelled.
        assert!(started.load(Ordering::Relaxed) < 10, "{started:?}");
    }

    #[test]
    fn messages_arrive_before_their_job_is_done() {
        let mut log = Vec::new();
        run(
            vec![(); 3],
            5,
            |_, context: &JobContext<'_, usize, usize>| {
                for step in 0..3 {
                    assert!(context.send(step));
                }
                context.index()
            },
            |event| {
                match event {
                    Event::Message { index, message } => log.push((index, Some(message))),
                    Event::Done { index, result } => {
                        assert_eq!(index, result);
                        log.push((index, None));
                    }
                }
                Flow::Continue
            },
        );
        for index in 0..5 {
            let of_job: Vec<Option<usize>> = log
                .iter()
                .filter(|(i, _)| *i == index)
                .map(|(_, m)| *m)
                .collect();
            assert_eq!(of_job, vec![Some(0), Some(1), Some(2), None]);
        }
    }

    #[test]
    fn a_panicking_job_panics_the_caller() {
        let result = std::panic::catch_unwind(|| {
            map_ordered(vec![(); 2], &[1, 2, 3], |_, &x| {
                assert_ne!(x, 2, "job two");
                Ok::<_, ()>(x)
            })
        });
        assert!(result.is_err());
    }

    #[test]
    fn no_items_no_threads() {
        assert_eq!(
            map_ordered(vec![(); 4], &[] as &[u8], |_, &x| Ok::<_, ()>(x)),
            Ok(vec![])
        );
    }
}
