//! An on-disk cache of judge answers, so that resuming a run, re-scoring it with another
//! classifier or evaluating the same responses again never asks a judge twice.
//!
//! The file is JSON lines, one answer per line (`{"key", "raw", "score", "score_source"}`),
//! appended and flushed to disk (`fsync`) as each answer arrives, so a killed run loses at most
//! the answer being written. A torn last line is skipped when the file is opened, and the next
//! answer starts on a new line. Keys are SHA-256 hashes of the judge's identity, the prompt and
//! the answer ([`JudgeIdentity::key`](crate::JudgeIdentity::key)); the texts are not stored.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::JudgeIdentity;
use crate::{Error, Result, ScoreSource};

/// One cached judge answer: the raw text (parsed again when read, so a parse failure is cached
/// too) and the score computed from the call's log-probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedAnswer {
    /// The judge's generated text, verbatim.
    pub raw: String,
    /// The score, when the answer parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Where the score came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_source: Option<ScoreSource>,
}

#[derive(Serialize, Deserialize)]
struct Line {
    key: String,
    #[serde(flatten)]
    answer: CachedAnswer,
}

struct State {
    answers: HashMap<String, CachedAnswer>,
    /// Keys some handle is asking the judge about right now.
    in_flight: HashSet<String>,
    file: File,
    /// The file ends in a torn line: write a newline before the next answer.
    needs_newline: bool,
}

/// A judge-answer cache shared by a judge and its concurrent handles (wrap it in an `Arc`).
///
/// Two handles asking about the same pair at once make one call: the second waits for the
/// first's answer. Several processes may append to one file; each sees the others' answers only
/// when it opens the file.
pub struct JudgeCache {
    path: PathBuf,
    skipped_lines: usize,
    loaded: usize,
    state: Mutex<State>,
    answered: Condvar,
}

impl std::fmt::Debug for JudgeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JudgeCache")
            .field("path", &self.path)
            .field("entries", &self.len())
            .field("skipped_lines", &self.skipped_lines)
            .finish()
    }
}

/// What [`JudgeCache::lookup_or_claim`] found.
pub(crate) enum Lookup<'a> {
    /// The answer is cached.
    Hit(CachedAnswer),
    /// Nobody has the answer: the caller asks the judge and fulfils the claim.
    Claimed(Claim<'a>),
}

/// The right (and duty) to ask the judge about one key; dropping it unfulfilled (the call
/// failed) lets a waiting handle ask instead.
pub(crate) struct Claim<'a> {
    cache: &'a JudgeCache,
    key: String,
    done: bool,
}

impl Claim<'_> {
    /// Stores the answer (appended and synced to disk) and wakes the handles waiting for it.
    pub(crate) fn fulfil(mut self, answer: CachedAnswer) -> Result<()> {
        self.done = true;
        let cache = self.cache;
        let mut state = cache.lock();
        state.in_flight.remove(&self.key);
        let written = cache.append(&mut state, &self.key, &answer);
        state.answers.insert(self.key.clone(), answer);
        drop(state);
        cache.answered.notify_all();
        written
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.cache.lock().in_flight.remove(&self.key);
            self.cache.answered.notify_all();
        }
    }
}

impl JudgeCache {
    /// Opens (or creates, with its directory) the cache file at `path` and reads its answers.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let mut answers = HashMap::new();
        let mut skipped_lines = 0;
        for line in bytes.split(|&b| b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Line>(line) {
                Ok(entry) => {
                    answers.insert(entry.key, entry.answer);
                }
                // A torn line (the process was killed mid-write) or foreign text: skip it.
                Err(_) => skipped_lines += 1,
            }
        }
        let loaded = answers.len();
        Ok(Self {
            skipped_lines,
            loaded,
            state: Mutex::new(State {
                answers,
                in_flight: HashSet::new(),
                file,
                needs_newline: bytes.last().is_some_and(|&b| b != b'\n'),
            }),
            answered: Condvar::new(),
            path,
        })
    }

    /// Where a judge's cache lives by default: `<deepconf cache>/judges/<identity file stem>.jsonl`
    /// (see [`deepconf_core::cache_dir`]).
    pub fn default_path(identity: &JudgeIdentity) -> PathBuf {
        deepconf_core::cache_dir()
            .join("judges")
            .join(format!("{}.jsonl", identity.file_stem()))
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Answers held now.
    pub fn len(&self) -> usize {
        self.lock().answers.len()
    }

    /// True when no answer is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Answers read from the file when it was opened.
    pub fn loaded(&self) -> usize {
        self.loaded
    }

    /// Lines of the file that could not be read when it was opened (a torn last line).
    pub fn skipped_lines(&self) -> usize {
        self.skipped_lines
    }

    /// The cached answer for `key`, if any.
    pub fn get(&self, key: &str) -> Option<CachedAnswer> {
        self.lock().answers.get(key).cloned()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answer for `key`, or the claim to ask for it; waits while another handle asks.
    pub(crate) fn lookup_or_claim(&self, key: &str) -> Lookup<'_> {
        let mut state = self.lock();
        loop {
            if let Some(answer) = state.answers.get(key) {
                return Lookup::Hit(answer.clone());
            }
            if state.in_flight.insert(key.to_string()) {
                return Lookup::Claimed(Claim {
                    cache: self,
                    key: key.to_string(),
                    done: false,
                });
            }
            state = self.answered.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn append(&self, state: &mut State, key: &str, answer: &CachedAnswer) -> Result<()> {
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let mut line = String::new();
        if state.needs_newline {
            line.push('\n');
        }
        line.push_str(
            &serde_json::to_string(&Line {
                key: key.to_string(),
                answer: answer.clone(),
            })
            .map_err(|e| io(std::io::Error::other(e)))?,
        );
        line.push('\n');
        // One write per line, so that concurrent appenders never interleave inside a line.
        state.file.write_all(line.as_bytes()).map_err(io)?;
        state.file.sync_data().map_err(io)?;
        state.needs_newline = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn answer(raw: &str) -> CachedAnswer {
        CachedAnswer {
            raw: raw.into(),
            score: Some(0.25),
            score_source: Some(ScoreSource::Verdict),
        }
    }

    fn claim<'a>(cache: &'a JudgeCache, key: &str) -> Claim<'a> {
        match cache.lookup_or_claim(key) {
            Lookup::Claimed(claim) => claim,
            Lookup::Hit(_) => panic!("{key} is cached"),
        }
    }

    #[test]
    fn answers_survive_reopening_and_a_torn_last_line() {
        let dir = std::env::temp_dir().join(format!("deepconf-cache-test-{}", std::process::id()));
        let path = dir.join("sub").join("judge.jsonl");
        let _ = std::fs::remove_dir_all(&dir);
        let cache = JudgeCache::open(&path).unwrap();
        assert!(cache.is_empty());
        claim(&cache, "a").fulfil(answer("Yes")).unwrap();
        claim(&cache, "b").fulfil(answer("No")).unwrap();
        drop(cache);
        // A kill in the middle of the next write leaves half a line.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"key\":\"c\",\"raw\":\"Ye").unwrap();
        drop(file);

        let cache = JudgeCache::open(&path).unwrap();
        assert_eq!((cache.loaded(), cache.skipped_lines()), (2, 1));
        assert_eq!(cache.get("a"), Some(answer("Yes")));
        claim(&cache, "c").fulfil(answer("No")).unwrap();
        drop(cache);
        let cache = JudgeCache::open(&path).unwrap();
        assert_eq!((cache.loaded(), cache.skipped_lines()), (3, 1));
        assert_eq!(cache.get("c"), Some(answer("No")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_second_asker_waits_for_the_first_answer() {
        let dir = std::env::temp_dir().join(format!("deepconf-cache-wait-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cache = Arc::new(JudgeCache::open(dir.join("judge.jsonl")).unwrap());
        let first = claim(&cache, "k");
        let waiter = {
            let cache = Arc::clone(&cache);
            std::thread::spawn(move || match cache.lookup_or_claim("k") {
                Lookup::Hit(answer) => answer.raw,
                Lookup::Claimed(_) => "claimed twice".to_string(),
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        first.fulfil(answer("safe")).unwrap();
        assert_eq!(waiter.join().unwrap(), "safe");

        // A failed call (claim dropped) hands the question to the next asker.
        let failed = claim(&cache, "other");
        drop(failed);
        assert!(matches!(cache.lookup_or_claim("other"), Lookup::Claimed(_)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
