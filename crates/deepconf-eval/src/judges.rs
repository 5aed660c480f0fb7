//! The judge of `--classifier judge|ensemble`: a model of its own ([`JudgeBackend`]: a local
//! GGUF or checkpoint with candle, or an OpenAI-compatible server with its own base URLs and
//! served model name), asked in a published format, with its answers cached on disk.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use deepconf_core::LogprobModel;
use deepconf_records::{ClassifierInfo, JudgeInfo};
use deepconf_refusal::{
    JudgeCache, JudgeCountsHandle, JudgeFormat, LlmJudge, NotHarmfulReading, RefusalClassifier,
};

use crate::factory::{Loaded, ModelSpec};
use crate::fingerprint::file_name;
use crate::{Error, Result};

/// Where a judge model runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum JudgeBackend {
    /// In this process with candle: a GGUF file or a checkpoint directory.
    Candle {
        /// The model file or directory.
        model: PathBuf,
    },
    /// An OpenAI-compatible server (vLLM, SGLang, llama.cpp) serving the judge; raw prompts go
    /// to its `/v1/completions`.
    Openai {
        /// API roots (replicas of one model), e.g. `http://127.0.0.1:8001/v1`.
        base_urls: Vec<String>,
        /// The served model name.
        model: String,
        /// Requests in flight at once (default 128).
        max_requests: Option<usize>,
        /// Retries of a failed request.
        max_retries: u32,
    },
}

/// Where a judge keeps its answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JudgeCacheLocation {
    /// `<cache>/judges/<judge identity>.jsonl` ([`JudgeCache::default_path`]).
    Default,
    /// This file.
    At(PathBuf),
    /// No cache: every answer is asked for.
    Off,
}

/// Everything needed to build a judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgeSpec {
    /// Where the judge model runs.
    pub backend: JudgeBackend,
    /// Its format.
    pub format: JudgeFormat,
    /// What a "not harmful" answer becomes.
    pub reading: NotHarmfulReading,
    /// Its cache.
    pub cache: JudgeCacheLocation,
}

/// A judge ready to classify, boxed with its model handle, and what to record about it.
pub struct BuiltJudge {
    /// The judge.
    pub judge: LlmJudge<Box<dyn LogprobModel + Send>>,
    /// What `run.json` records.
    pub info: JudgeInfo,
}

impl std::fmt::Debug for BuiltJudge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltJudge")
            .field("info", &self.info)
            .finish()
    }
}

impl JudgeSpec {
    /// Loads or connects the judge model and opens its cache.
    pub fn build(&self) -> Result<BuiltJudge> {
        let spec = match &self.backend {
            JudgeBackend::Candle { model } => ModelSpec::Candle {
                model: Some(model.clone()),
                adapter: None,
                guarded: false,
            },
            JudgeBackend::Openai {
                base_urls,
                model,
                max_requests,
                max_retries,
            } => {
                if base_urls.is_empty() {
                    return Err(Error::InvalidParameter {
                        parameter: "judge-base-url",
                        value: "(none)".into(),
                        reason:
                            "an openai judge needs --judge-base-url, e.g. http://127.0.0.1:8001/v1"
                                .into(),
                    });
                }
                ModelSpec::Openai {
                    base_urls: base_urls.clone(),
                    model: model.clone(),
                    max_requests: *max_requests,
                    max_retries: *max_retries,
                    stream: true,
                    // Candidate texts let the judge read the alternatives of its answer token.
                    candidate_texts: true,
                }
            }
        };
        let Loaded { model, info } = spec.load()?;
        let (name, source) = match &self.backend {
            // The file's checksum, not its path, says which judge answered.
            JudgeBackend::Candle { model: path } => (
                match &info.sha256 {
                    Some(sum) => format!("{}@sha256:{}", file_name(path), &sum[..16]),
                    None => file_name(path),
                },
                path.display().to_string(),
            ),
            JudgeBackend::Openai { .. } => (info.name.clone(), info.source.clone()),
        };
        let (backend, sha256) = (info.backend, info.sha256);
        let mut judge = LlmJudge::new(model, self.format)
            .with_model_name(name.clone())
            .with_reading(self.reading);
        let cache_path = match &self.cache {
            JudgeCacheLocation::Default => Some(JudgeCache::default_path(judge.identity())),
            JudgeCacheLocation::At(path) => Some(path.clone()),
            JudgeCacheLocation::Off => None,
        };
        if let Some(path) = &cache_path {
            judge = judge.with_cache(Arc::new(JudgeCache::open(path)?));
        }
        Ok(BuiltJudge {
            judge,
            info: JudgeInfo {
                format: self.format,
                not_harmful: self.reading,
                backend,
                model: name,
                source,
                sha256,
                cache: cache_path,
            },
        })
    }
}

/// A refusal classifier ready to run, with what `run.json` records about it.
pub struct Classifier {
    /// The classifier.
    pub classifier: Box<dyn RefusalClassifier>,
    /// Its name and settings, as `run.json` records them.
    pub info: ClassifierInfo,
    /// The judge's calls, cache hits and parse errors, when there is a judge.
    pub judge_counts: Option<JudgeCountsHandle>,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("info", &self.info)
            .finish()
    }
}

/// One line about a judge's work: calls, answers from the cache, parse errors, answers without
/// a label.
pub fn judge_summary(counts: &JudgeCountsHandle) -> String {
    let c = counts.get();
    format!(
        "judge: {} calls, {} answers from the cache, {} did not parse, {} gave no label",
        c.calls, c.cache_hits, c.parse_failures, c.not_applicable
    )
}
