//! Progress of a run: a bar with ETA and tokens/s on a terminal, periodic log lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How a run reports progress on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A progress bar when stderr is a terminal, else a log line every 30 seconds.
    #[default]
    Auto,
    /// No bar; a log line every 30 seconds (`--quiet`).
    Quiet,
    /// Nothing at all (tests, library use).
    Silent,
}

const LOG_EVERY: Duration = Duration::from_secs(30);

/// Tracks instances and tokens and shows them.
#[derive(Debug)]
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    log_lines: bool,
    started: Instant,
    last_log: Instant,
    total: usize,
    done: usize,
    tokens: u64,
    prefix: String,
}

impl Progress {
    pub(crate) fn new(mode: ProgressMode, name: &str, total: usize, already_done: usize) -> Self {
        let show_bar = mode == ProgressMode::Auto && std::io::stderr().is_terminal();
        let bar = show_bar.then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(total as u64),
                ProgressDrawTarget::stderr_with_hz(4),
            );
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} instances, ETA {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_prefix(name.to_string());
            bar.set_position(already_done as u64);
            bar.reset_eta();
            bar
        });
        let now = Instant::now();
        Self {
            bar,
            log_lines: mode != ProgressMode::Silent,
            started: now,
            last_log: now,
            total,
            done: already_done,
            tokens: 0,
            prefix: name.to_string(),
        }
    }

    pub(crate) fn tokens_per_second(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs > 0.0 {
            self.tokens as f64 / secs
        } else {
            0.0
        }
    }

    /// Updates the token count (all threads' tokens so far).
    pub(crate) fn tick(&mut self, tokens: u64) {
        self.tokens = tokens;
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{:.1} tok/s", self.tokens_per_second()));
        }
    }

    pub(crate) fn on_instance(&mut self, newly_done: usize, resumed: usize) {
        self.done = resumed + newly_done;
        if let Some(bar) = &self.bar {
            bar.set_position(self.done as u64);
            bar.set_message(format!("{:.1} tok/s", self.tokens_per_second()));
            return;
        }
        let finished = self.done == self.total;
        if self.log_lines && (finished || self.last_log.elapsed() >= LOG_EVERY) {
            self.last_log = Instant::now();
            let elapsed = self.started.elapsed().as_secs_f64();
            let eta = if newly_done > 0 {
                let per_instance = elapsed / newly_done as f64;
                format!("{:.0}s", per_instance * (self.total - self.done) as f64)
            } else {
                "?".to_string()
            };
            eprintln!(
                "[{}] {}/{} instances, {} tokens, {:.1} tok/s, {:.0}s elapsed, ETA {eta}",
                self.prefix,
                self.done,
                self.total,
                self.tokens,
                self.tokens_per_second(),
                elapsed
            );
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
