//! Resolution: the flags against an example's [`Defaults`] into a [`Plan`], the model flags into
//! the factory's model, the classifier flags into a [`JudgeSpec`]. Each default is applied here
//! and nowhere else.

use std::path::{Path, PathBuf};

use deepconf_core::policy::PolicyConfig;
use deepconf_core::{RunConfig, SamplingParams};
use deepconf_records::ClassifierKind;

use super::flags::{ClassifierArgs, EvalArgs, PolicyKind};
use crate::factory::{BackendKind, GUARDED_MODEL, ModelSpec};
use crate::judges::{JudgeBackend, JudgeCacheLocation, JudgeSpec};
use crate::seed::Stratify;
use crate::{Error, Result};

/// An example's defaults for the options a user leaves out.
#[derive(Debug, Clone, PartialEq)]
pub struct Defaults {
    /// Name of the run (and of the default output directory `out/NAME`).
    pub name: &'static str,
    /// Instances (`None`: all).
    pub limit: Option<usize>,
    /// Traces per instance.
    pub traces: usize,
    /// Warmup traces (online).
    pub warmup: usize,
    /// Policy.
    pub policy: PolicyKind,
    /// Percent kept.
    pub keep_percent: f64,
    /// Consensus tau of the online policy (above 1: no consensus stop).
    pub consensus: f64,
    /// Maximum tokens per trace.
    pub max_tokens: usize,
    /// How instances are sampled when limited.
    pub stratify: Stratify,
}

impl Defaults {
    /// The README's main job, sized to finish in a few minutes on 2 CPU cores with the embedded
    /// model: 32 behaviours stratified over functional categories (16 standard, 8 contextual, 8
    /// copyright), DeepConf online with 4 warmup and at most 8 traces, 128 tokens per trace.
    pub fn harmbench() -> Self {
        Self {
            name: "harmbench",
            limit: Some(32),
            traces: 8,
            warmup: 4,
            policy: PolicyKind::Online,
            keep_percent: 10.0,
            consensus: 0.95,
            max_tokens: 128,
            stratify: Stratify::Category,
        }
    }

    /// A labelled benchmark with harmful and benign prompts (sample keeps the label ratio).
    pub fn labelled(name: &'static str) -> Self {
        Self {
            name,
            limit: Some(40),
            stratify: Stratify::Label,
            ..Self::harmbench()
        }
    }
}

/// The options resolved against an example's [`Defaults`].
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Run name.
    pub name: String,
    /// Instances to run (`None`: all).
    pub limit: Option<usize>,
    /// Policy, confidence and sampling settings (`sampling.seed` is the run seed).
    pub run: RunConfig,
    /// Output directory.
    pub out: PathBuf,
    /// How instances are sampled.
    pub stratify: Stratify,
}

impl EvalArgs {
    /// Resolves the flags against `defaults` and checks them.
    pub fn plan(&self, defaults: &Defaults) -> Result<Plan> {
        let traces = self.traces.unwrap_or(defaults.traces);
        let keep_percent = self.keep_percent.unwrap_or(defaults.keep_percent);
        let policy = match self.policy.unwrap_or(defaults.policy) {
            PolicyKind::Fixed => PolicyConfig::fixed(traces),
            PolicyKind::Offline => PolicyConfig::offline(traces, keep_percent),
            PolicyKind::Online => {
                let warmup = self.warmup.unwrap_or(defaults.warmup).min(traces);
                PolicyConfig::online(warmup, traces, keep_percent)
                    .with_consensus(self.consensus.unwrap_or(defaults.consensus))
            }
            PolicyKind::Prototype => match PolicyConfig::prototype() {
                PolicyConfig::Prototype {
                    warmup_traces,
                    batch_size,
                    percentile,
                    ..
                } => PolicyConfig::Prototype {
                    warmup_traces: warmup_traces.min(traces),
                    batch_size,
                    max_traces: traces,
                    percentile,
                },
                other => other,
            },
        };
        let mut run = RunConfig {
            policy,
            ..RunConfig::default()
        };
        if let Some(window) = self.window {
            run.confidence.window = window;
        }
        run.sampling = SamplingParams {
            max_tokens: self.max_tokens.unwrap_or(defaults.max_tokens),
            seed: self.seed,
            ..run.sampling
        };
        if let Some(t) = self.temperature {
            run.sampling.temperature = t;
        }
        run.validate()?;
        let limit = match self.limit.or(defaults.limit) {
            Some(0) => None,
            other => other,
        };
        Ok(Plan {
            name: defaults.name.to_string(),
            limit,
            run,
            out: self
                .out
                .clone()
                .unwrap_or_else(|| Path::new("out").join(defaults.name)),
            stratify: defaults.stratify,
        })
    }

    /// The model of `--backend`/`--model`/`--adapter`/`--base-url`/`--max-requests`/
    /// `--max-retries`, checked: an openai model needs a base URL and a name, and takes no
    /// adapter.
    pub(crate) fn model_spec(&self) -> Result<ModelSpec> {
        match self.backend {
            BackendKind::Candle => {
                let guarded = self.model.as_deref() == Some(GUARDED_MODEL);
                Ok(ModelSpec::Candle {
                    model: self.model.as_ref().filter(|_| !guarded).map(PathBuf::from),
                    adapter: self.adapter.clone(),
                    guarded,
                })
            }
            BackendKind::Openai if self.adapter.is_some() => Err(Error::InvalidParameter {
                parameter: "adapter",
                value: self
                    .adapter
                    .as_deref()
                    .map_or_else(String::new, |p| p.display().to_string()),
                reason:
                    "adapters are applied by the candle backend; a served model has its own weights"
                        .into(),
            }),
            BackendKind::Openai => {
                if self.base_url.is_empty() {
                    return Err(Error::InvalidParameter {
                        parameter: "base-url",
                        value: "(none)".into(),
                        reason: "--backend openai needs --base-url, e.g. http://127.0.0.1:8000/v1"
                            .into(),
                    });
                }
                let model = self.model.clone().ok_or_else(|| Error::InvalidParameter {
                    parameter: "model",
                    value: "(none)".into(),
                    reason: "--backend openai needs --model, the served model's name".into(),
                })?;
                Ok(ModelSpec::Openai {
                    base_urls: self.base_url.clone(),
                    model,
                    max_requests: self.max_requests,
                    max_retries: self.max_retries,
                    // Policies that never cut a trace need no stream: a prompt's traces are then
                    // asked for in one request (`n`), which vLLM and SGLang serve with one
                    // prefill. Only the flag counts, as it always has: an example's default
                    // policy keeps the stream.
                    stream: !matches!(self.policy, Some(PolicyKind::Fixed | PolicyKind::Offline)),
                    candidate_texts: false,
                })
            }
        }
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
}
