//! The one model factory: the model under test and a judge's model are both built here from a
//! resolved [`ModelSpec`], so that both backends load, connect and are recorded the same way.

use std::path::{Path, PathBuf};

use deepconf_core::LogprobModel;
use deepconf_records::ModelInfo;

use crate::{Error, Result};

/// Which [`LogprobModel`] runs the prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// Local CPU inference with candle (default model: the embedded SmolLM2-135M Q4_1 GGUF).
    Candle,
    /// An OpenAI-compatible server (`--base-url`), e.g. vLLM or llama.cpp's server.
    Openai,
}

/// The `--model` name of the embedded model with the project's guarded LoRA adapter.
pub const GUARDED_MODEL: &str = "guarded";

/// A model ready to run, with what `run.json` records about it.
pub struct Backend {
    /// The model.
    pub model: Box<dyn LogprobModel>,
    /// Name, backend, source and checksum.
    pub info: ModelInfo,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("info", &self.info).finish()
    }
}

/// A model to build, every choice made: flags and defaults are resolved before this (the run's
/// in [`EvalArgs`](crate::EvalArgs), a judge's in [`JudgeSpec`](crate::JudgeSpec)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ModelSpec {
    /// In this process with candle.
    Candle {
        /// A GGUF file or checkpoint directory; `None`: the embedded default model.
        model: Option<PathBuf>,
        /// A LoRA adapter directory merged at load.
        adapter: Option<PathBuf>,
        /// Without `adapter`, apply the project's guarded adapter (which must be fetched).
        guarded: bool,
    },
    /// An OpenAI-compatible server.
    Openai {
        /// API roots: the first, then replicas; never empty.
        base_urls: Vec<String>,
        /// The served model name.
        model: String,
        /// Requests in flight at once (`None`: the client's default).
        max_requests: Option<usize>,
        /// Retries of a failed request.
        max_retries: u32,
        /// Stream the tokens (needed when a policy may cut a trace).
        stream: bool,
        /// Keep the candidates' texts, so a judge can read the alternatives of its answer token.
        candidate_texts: bool,
    },
}

/// A built model, `Send` so a judge can hand it to its worker threads.
pub(crate) struct Loaded {
    pub(crate) model: Box<dyn LogprobModel + Send>,
    pub(crate) info: ModelInfo,
}

impl ModelSpec {
    /// Loads or connects the model.
    pub(crate) fn load(&self) -> Result<Loaded> {
        match self {
            ModelSpec::Candle {
                model,
                adapter,
                guarded,
            } => load_candle(model.as_deref(), adapter.as_deref(), *guarded),
            ModelSpec::Openai {
                base_urls,
                model,
                max_requests,
                max_retries,
                stream,
                candidate_texts,
            } => connect_openai(
                base_urls,
                model,
                *max_requests,
                *max_retries,
                *stream,
                *candidate_texts,
            ),
        }
    }

    /// The model under test.
    pub(crate) fn build(&self) -> Result<Backend> {
        let Loaded { model, info } = self.load()?;
        Ok(Backend { model, info })
    }
}

#[cfg(feature = "candle")]
fn load_candle(model: Option<&Path>, adapter: Option<&Path>, guarded: bool) -> Result<Loaded> {
    use crate::fingerprint::{file_name, sha256_file};
    use deepconf_candle::{CandleModel, LoraAdapter, ModelSource};
    let path = model.map_or_else(deepconf_candle::default_model_path, Path::to_path_buf);
    let adapter_dir = adapter
        .map(Path::to_path_buf)
        .or_else(|| guarded.then(deepconf_candle::lora::guarded_adapter_dir));
    let mut builder = CandleModel::builder().source(ModelSource::from_path(&path));
    let mut adapter_record = None;
    if let Some(dir) = &adapter_dir {
        if guarded && adapter.is_none() && !dir.is_dir() {
            return Err(Error::InvalidParameter {
                parameter: "model",
                value: GUARDED_MODEL.into(),
                reason: format!(
                    "the guarded adapter is not in {}; run `cargo xtask fetch-model guarded`",
                    dir.display()
                ),
            });
        }
        let lora =
            LoraAdapter::load(dir).map_err(|e| deepconf_core::Error::backend("candle", e))?;
        adapter_record = Some(crate::fingerprint::adapter_info(dir, "merged q8_0")?);
        builder = builder.adapter(lora);
    }
    let loaded = builder
        .build()
        .map_err(|e| deepconf_core::Error::backend("candle", e))?;
    let sha256 = if path.is_file() {
        Some(sha256_file(&path)?)
    } else {
        None
    };
    Ok(Loaded {
        info: ModelInfo {
            name: loaded.model_id(),
            backend: "candle".into(),
            source: file_name(&path),
            sha256,
            adapter: adapter_record,
        },
        model: Box::new(loaded),
    })
}

#[cfg(not(feature = "candle"))]
fn load_candle(_: Option<&Path>, _: Option<&Path>, _: bool) -> Result<Loaded> {
    Err(Error::BackendUnavailable { backend: "candle" })
}

#[cfg(feature = "openai")]
fn connect_openai(
    base_urls: &[String],
    name: &str,
    max_requests: Option<usize>,
    max_retries: u32,
    stream: bool,
    candidate_texts: bool,
) -> Result<Loaded> {
    let Some((base_url, replicas)) = base_urls.split_first() else {
        return Err(Error::InvalidParameter {
            parameter: "base-url",
            value: "(none)".into(),
            reason: "an openai model needs a base URL, e.g. http://127.0.0.1:8000/v1".into(),
        });
    };
    let mut builder =
        deepconf_openai::OpenAiModel::builder(base_url, name).max_retries(max_retries);
    if candidate_texts {
        builder = builder.candidate_texts(true);
    }
    if let Some(requests) = max_requests {
        builder = builder.max_concurrency(requests);
    }
    for replica in replicas {
        builder = builder.replica(replica);
    }
    if !stream {
        builder = builder.stream(false);
    }
    let loaded = builder
        .build()
        .map_err(|e| deepconf_core::Error::backend("openai", e))?;
    Ok(Loaded {
        info: ModelInfo {
            name: name.to_string(),
            backend: "openai".into(),
            source: base_urls.join(" "),
            sha256: None,
            adapter: None,
        },
        model: Box::new(loaded),
    })
}

#[cfg(not(feature = "openai"))]
fn connect_openai(
    _: &[String],
    _: &str,
    _: Option<usize>,
    _: u32,
    _: bool,
    _: bool,
) -> Result<Loaded> {
    Err(Error::BackendUnavailable { backend: "openai" })
}
