//! Replicas of one served model: a prompt's requests stay on one (prefix-cache affinity), a
//! failing one rests; and the waits between retries.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use deepconf_core::{GenerationRequest, Prompt};

use crate::config::OpenAiConfig;

/// One API root serving the model, with its health.
#[derive(Debug)]
pub(super) struct Replica {
    pub(super) base_url: String,
    /// Mixed into a prompt's affinity to rank the replicas for that prompt.
    pub(super) hash: u64,
    pub(super) health: Mutex<Health>,
    /// The server answered a request for several choices (`n`) with an error or fewer choices.
    pub(super) refuses_choices: AtomicBool,
}

#[derive(Debug, Default)]
pub(super) struct Health {
    /// Transient failures since the last success.
    failures: u32,
    /// Not chosen before this time unless every replica rests.
    resting_until: Option<Instant>,
}

/// The replicas: a prompt's requests go to the same one while it is healthy (so that its prompt
/// stays in that server's prefix cache), and a replica that fails rests for a while, its work
/// going to the prompt's next replica.
#[derive(Debug)]
pub(super) struct Replicas {
    pub(super) list: Vec<Replica>,
    pub(super) first_rest: Duration,
    pub(super) longest_rest: Duration,
}

/// SplitMix64 finaliser, for affinity ranks.
pub(super) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(super) fn hash_text(hash: u64, text: &str) -> u64 {
    // FNV-1a over the bytes, mixed once at the end: cheap, stable across runs and platforms.
    let fnv = text.bytes().fold(hash ^ 0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    });
    mix64(fnv)
}

/// The affinity key of a request: a hash of its prompt, equal for equal prompts.
pub(super) fn prompt_affinity(request: &GenerationRequest) -> u64 {
    match &request.prompt {
        Prompt::Text(text) => hash_text(1, text),
        Prompt::Chat(messages) => messages.iter().fold(2, |h, m| {
            hash_text(hash_text(h, m.role.as_str()), &m.content)
        }),
    }
}

impl Replicas {
    pub(super) fn new(config: &OpenAiConfig) -> Self {
        let list = std::iter::once(&config.base_url)
            .chain(&config.replicas)
            .map(|url| Replica {
                base_url: url.clone(),
                hash: hash_text(3, url),
                health: Mutex::new(Health::default()),
                refuses_choices: AtomicBool::new(false),
            })
            .collect();
        Self {
            list,
            first_rest: config.initial_backoff.max(Duration::from_millis(100)),
            longest_rest: config.max_backoff.max(Duration::from_secs(1)) * 4,
        }
    }

    /// The replica for a request of this affinity: the highest ranked (rendezvous hashing, so
    /// that a resting replica moves only its own prompts) that is not resting; when all rest, the
    /// one back soonest.
    pub(super) fn pick(&self, affinity: u64) -> usize {
        if self.list.len() == 1 {
            return 0;
        }
        let now = Instant::now();
        let mut ready: Option<(u64, usize)> = None;
        let mut soonest: Option<(Instant, usize)> = None;
        for (index, replica) in self.list.iter().enumerate() {
            let rank = mix64(affinity ^ replica.hash);
            let until = replica
                .health
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .resting_until;
            match until {
                Some(until) if until > now => {
                    if soonest.is_none_or(|(best, _)| until < best) {
                        soonest = Some((until, index));
                    }
                }
                _ => {
                    if ready.is_none_or(|(best, _)| rank > best) {
                        ready = Some((rank, index));
                    }
                }
            }
        }
        ready
            .map(|(_, i)| i)
            .or(soonest.map(|(_, i)| i))
            .unwrap_or(0)
    }

    /// A transient failure: the replica rests, twice as long as last time, up to a limit.
    pub(super) fn failed(&self, index: usize) {
        let mut health = self.list[index]
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Requests sent before the rest began fail too; they do not lengthen it.
        if health.resting_until.is_some_and(|until| until > now) {
            return;
        }
        health.failures = health.failures.saturating_add(1);
        let rest = self
            .first_rest
            .saturating_mul(1 << (health.failures - 1).min(16))
            .min(self.longest_rest);
        health.resting_until = Some(now + rest);
    }

    pub(super) fn succeeded(&self, index: usize) {
        let mut health = self.list[index]
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        health.failures = 0;
        health.resting_until = None;
    }
}

/// A uniformly random fraction in `[0, 1)` for backoff jitter (SplitMix64 over a counter and the
/// clock: retries need spreading, not cryptographic randomness).
pub(super) fn jitter_fraction() -> f64 {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let mut z = (COUNTER.fetch_add(1, Ordering::Relaxed) as u64) ^ (nanos << 20);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// The wait before a retry: the server's `Retry-After` when it sent one (plus up to 10%, so that
/// clients told the same time do not return together), else `backoff` with equal jitter (half
/// fixed, half random).
pub(super) fn retry_wait(backoff: Duration, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(after) => after.mul_f64(1.0 + 0.1 * jitter_fraction()),
        None => backoff.mul_f64(0.5 + 0.5 * jitter_fraction()),
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by inference servers and is ignored).
pub(super) fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(3600.0)))
}
