//! The judge of `--classifier judge|ensemble`: a model of its own ([`JudgeBackend`]: a local
//! GGUF or checkpoint with candle, or an OpenAI-compatible server with its own base URLs and
//! served model name), asked in a published format, with its answers cached on disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use deepconf_core::LogprobModel;
use deepconf_refusal::{
    Ensemble, JudgeCache, JudgeCountsHandle, JudgeFormat, LlmJudge, NotHarmfulReading,
    PatternClassifier, PatternConfig, PatternSet, RefusalClassifier,
};

use deepconf_records::{ClassifierInfo, ClassifierKind as RecordedKind, JudgeInfo};

use crate::cli::{BackendKind, Classifier, ClassifierKind};
use crate::{Error, Result};

/// `--judge-format`: the judge's published format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JudgeFormatArg {
    /// WildGuard's three lines (`allenai/wildguard`).
    Wildguard,
    /// The HarmBench classifier's yes/no (`cais/HarmBench-Llama-2-13b-cls`).
    Harmbench,
    /// Llama Guard 3's safe/unsafe and categories (`meta-llama/Llama-Guard-3-8B`).
    LlamaGuard,
}

impl From<JudgeFormatArg> for JudgeFormat {
    fn from(arg: JudgeFormatArg) -> Self {
        match arg {
            JudgeFormatArg::Wildguard => JudgeFormat::WildGuard,
            JudgeFormatArg::Harmbench => JudgeFormat::HarmBench,
            JudgeFormatArg::LlamaGuard => JudgeFormat::LlamaGuard3,
        }
    }
}

/// `--judge-not-harmful`: what a harm judge's "not harmful" answer becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NotHarmfulArg {
    /// No label: the trace abstains (only harmful compliance is labelled).
    Abstain,
    /// A refusal (the attack-success convention; for all-harmful benchmarks).
    Refusal,
}

impl From<NotHarmfulArg> for NotHarmfulReading {
    fn from(arg: NotHarmfulArg) -> Self {
        match arg {
            NotHarmfulArg::Abstain => NotHarmfulReading::Abstain,
            NotHarmfulArg::Refusal => NotHarmfulReading::Refusal,
        }
    }
}

/// The classifier flags, shared by the evaluation examples (flattened into [`EvalArgs`]
/// (crate::EvalArgs)) and the ones that re-score or score without a model under test.
#[derive(Debug, Clone, clap::Args)]
pub struct ClassifierArgs {
    /// Refusal classifier.
    #[arg(long = "classifier", value_enum, default_value_t = ClassifierKind::Patterns)]
    pub kind: ClassifierKind,
    /// Where the judge runs (default: openai when --judge-base-url is given, else candle).
    #[arg(long, value_enum)]
    pub judge_backend: Option<BackendKind>,
    /// Base URL of the judge's OpenAI-compatible server, e.g. `http://127.0.0.1:8001/v1`; repeat
    /// it for replicas.
    #[arg(long)]
    pub judge_base_url: Vec<String>,
    /// The judge model, needed by `--classifier judge|ensemble`: a GGUF file or checkpoint
    /// directory (candle), or the served model's name (openai). The model under test never
    /// judges itself.
    #[arg(long)]
    pub judge_model: Option<String>,
    /// The judge's published prompt and answer format.
    #[arg(long, value_enum, default_value_t = JudgeFormatArg::Wildguard)]
    pub judge_format: JudgeFormatArg,
    /// What a HarmBench `No` or a Llama Guard `safe` becomes: no label (the trace abstains) or a
    /// refusal (the attack-success convention, for benchmarks whose prompts are all harmful).
    #[arg(long, value_enum, default_value_t = NotHarmfulArg::Abstain)]
    pub judge_not_harmful: NotHarmfulArg,
    /// The judge's answer cache (JSON lines); default `<cache>/judges/<judge>.jsonl`.
    #[arg(long)]
    pub judge_cache: Option<PathBuf>,
    /// Requests in flight at once to the judge's server (default 128).
    #[arg(long)]
    pub judge_max_requests: Option<usize>,
    /// Ensemble: ask the judge about every answer, not only the uncertain ones, so that the
    /// agreement of the two stages covers them all (labels still follow the band).
    #[arg(long)]
    pub judge_all: bool,
    /// A JSON pattern set appended to the built-in patterns (patterns and ensemble).
    #[arg(long)]
    pub patterns: Option<PathBuf>,
}

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

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

#[cfg(feature = "candle")]
fn load_candle(path: &Path) -> Result<Box<dyn LogprobModel + Send>> {
    use deepconf_candle::{CandleModel, ModelSource};
    let model = CandleModel::builder()
        .source(ModelSource::from_path(path))
        .build()
        .map_err(|e| deepconf_core::Error::backend("candle", e))?;
    Ok(Box::new(model))
}

#[cfg(not(feature = "candle"))]
fn load_candle(_: &Path) -> Result<Box<dyn LogprobModel + Send>> {
    Err(Error::BackendUnavailable { backend: "candle" })
}

#[cfg(feature = "openai")]
fn connect_openai(
    base_urls: &[String],
    model: &str,
    max_requests: Option<usize>,
    max_retries: u32,
) -> Result<Box<dyn LogprobModel + Send>> {
    let (base_url, replicas) = base_urls
        .split_first()
        .ok_or_else(|| Error::InvalidParameter {
            parameter: "judge-base-url",
            value: "(none)".into(),
            reason: "an openai judge needs --judge-base-url, e.g. http://127.0.0.1:8001/v1".into(),
        })?;
    // Candidate texts let the judge read the alternatives of its answer token.
    let mut builder = deepconf_openai::OpenAiModel::builder(base_url, model)
        .max_retries(max_retries)
        .candidate_texts(true);
    if let Some(requests) = max_requests {
        builder = builder.max_concurrency(requests);
    }
    for replica in replicas {
        builder = builder.replica(replica);
    }
    let model = builder
        .build()
        .map_err(|e| deepconf_core::Error::backend("openai", e))?;
    Ok(Box::new(model))
}

#[cfg(not(feature = "openai"))]
fn connect_openai(
    _: &[String],
    _: &str,
    _: Option<usize>,
    _: u32,
) -> Result<Box<dyn LogprobModel + Send>> {
    Err(Error::BackendUnavailable { backend: "openai" })
}

impl JudgeSpec {
    /// Loads or connects the judge model and opens its cache.
    pub fn build(&self) -> Result<BuiltJudge> {
        let (model, name, backend, source, sha256) = match &self.backend {
            JudgeBackend::Candle { model } => {
                let sha256 = if model.is_file() {
                    Some(crate::sha256_file(model)?)
                } else {
                    None
                };
                let loaded = load_candle(model)?;
                // The file's checksum, not its path, says which judge answered.
                let name = match &sha256 {
                    Some(sum) => format!("{}@sha256:{}", file_name(model), &sum[..16]),
                    None => file_name(model),
                };
                let source = model.display().to_string();
                (loaded, name, "candle", source, sha256)
            }
            JudgeBackend::Openai {
                base_urls,
                model,
                max_requests,
                max_retries,
            } => {
                let connected = connect_openai(base_urls, model, *max_requests, *max_retries)?;
                (
                    connected,
                    model.clone(),
                    "openai",
                    base_urls.join(" "),
                    None,
                )
            }
        };
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
                backend: backend.into(),
                model: name,
                source,
                sha256,
                cache: cache_path,
            },
        })
    }
}

impl ClassifierArgs {
    /// The judge these flags describe; `None` for `--classifier patterns`. Without
    /// `--judge-model` a judge is an error naming the flag: the model under test never judges
    /// itself.
    pub fn judge_spec(&self, max_retries: u32) -> Result<Option<JudgeSpec>> {
        if self.kind == ClassifierKind::Patterns {
            return Ok(None);
        }
        let model = self
            .judge_model
            .clone()
            .ok_or_else(|| Error::InvalidParameter {
                parameter: "judge-model",
                value: "(none)".into(),
                reason: format!(
                    "--classifier {} needs --judge-model: a GGUF file or checkpoint directory \
                     (--judge-backend candle), or the served model's name with --judge-base-url \
                     (--judge-backend openai); the model under test never judges itself",
                    self.kind.name()
                ),
            })?;
        let kind = self
            .judge_backend
            .unwrap_or(if self.judge_base_url.is_empty() {
                BackendKind::Candle
            } else {
                BackendKind::Openai
            });
        let backend = match kind {
            BackendKind::Candle => {
                if !self.judge_base_url.is_empty() {
                    return Err(Error::InvalidParameter {
                        parameter: "judge-base-url",
                        value: self.judge_base_url.join(" "),
                        reason: "a candle judge runs in this process; drop --judge-base-url or \
                                 use --judge-backend openai"
                            .into(),
                    });
                }
                JudgeBackend::Candle {
                    model: PathBuf::from(model),
                }
            }
            BackendKind::Openai => JudgeBackend::Openai {
                base_urls: self.judge_base_url.clone(),
                model,
                max_requests: self.judge_max_requests,
                max_retries,
            },
        };
        Ok(Some(JudgeSpec {
            backend,
            format: self.judge_format.into(),
            reading: self.judge_not_harmful.into(),
            cache: self
                .judge_cache
                .clone()
                .map_or(JudgeCacheLocation::Default, JudgeCacheLocation::At),
        }))
    }

    /// The pattern classifier: the built-in set, extended by `--patterns`.
    fn patterns(&self) -> Result<PatternClassifier> {
        let mut set = PatternSet::default();
        if let Some(path) = &self.patterns {
            set.extend(PatternSet::from_path(path)?);
        }
        Ok(PatternClassifier::new(set, PatternConfig::default())?)
    }

    /// Builds the classifier (loading or connecting the judge for `judge` and `ensemble`).
    pub fn build(&self, max_retries: u32) -> Result<Classifier> {
        let extra_patterns = self.patterns.as_ref().map(|p| p.display().to_string());
        let Some(spec) = self.judge_spec(max_retries)? else {
            let classifier = self.patterns()?;
            return Ok(Classifier {
                info: ClassifierInfo::patterns(classifier.name(), extra_patterns),
                classifier: Box::new(classifier),
                judge_counts: None,
            });
        };
        let BuiltJudge { judge, info } = spec.build()?;
        let counts = judge.counts_handle();
        Ok(match self.kind {
            ClassifierKind::Ensemble => {
                let ensemble =
                    Ensemble::new(self.patterns()?, judge).consult_always(self.judge_all);
                Classifier {
                    info: ClassifierInfo {
                        name: ensemble.name(),
                        kind: RecordedKind::Ensemble,
                        extra_patterns,
                        judge: Some(info),
                        judge_all: Some(self.judge_all),
                    },
                    classifier: Box::new(ensemble),
                    judge_counts: Some(counts),
                }
            }
            _ => Classifier {
                info: ClassifierInfo {
                    name: judge.name(),
                    kind: RecordedKind::Judge,
                    extra_patterns: None,
                    judge: Some(info),
                    judge_all: None,
                },
                classifier: Box::new(judge),
                judge_counts: Some(counts),
            },
        })
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
