//! Counts shared by a judge and its concurrent handles.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

/// Counts of a judge and all its concurrent handles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeCounts {
    /// Model calls made.
    pub calls: usize,
    /// Answers taken from the cache.
    pub cache_hits: usize,
    /// Answers (called or cached) that did not parse.
    pub parse_failures: usize,
    /// Parsed answers that give no label (WildGuard `N/A`, an abstaining "not harmful").
    pub not_applicable: usize,
}

/// A live view of a judge's [`JudgeCounts`], kept by whoever boxed the judge away (the counts
/// of the judge and all its handles).
#[derive(Debug, Clone)]
pub struct JudgeCountsHandle(pub(super) Arc<SharedCounts>);

impl JudgeCountsHandle {
    /// The counts now.
    pub fn get(&self) -> JudgeCounts {
        counts_of(&self.0)
    }
}

pub(super) fn counts_of(c: &SharedCounts) -> JudgeCounts {
    JudgeCounts {
        calls: c.calls.load(Ordering::Relaxed),
        cache_hits: c.cache_hits.load(Ordering::Relaxed),
        parse_failures: c.parse_failures.load(Ordering::Relaxed),
        not_applicable: c.not_applicable.load(Ordering::Relaxed),
    }
}

#[derive(Debug, Default)]
pub(super) struct SharedCounts {
    pub(super) calls: AtomicUsize,
    pub(super) cache_hits: AtomicUsize,
    pub(super) parse_failures: AtomicUsize,
    pub(super) not_applicable: AtomicUsize,
}

pub(super) fn bump(counter: &AtomicUsize) {
    counter.fetch_add(1, Ordering::Relaxed);
}
