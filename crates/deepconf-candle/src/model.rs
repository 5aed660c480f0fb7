//! [`CandleModel`]: loading, prompt formatting and batched trace generation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use deepconf_core::{
    Capabilities, ChatMessage, GenerationRequest, LogprobModel, Prompt, TokenObserver, Trace,
    TraceSpec,
};

use crate::batcher::Batcher;
use crate::chat::{ChatTemplate, RenderOptions};
use crate::decoder::{Decoder, KvCache, Workspace};
use crate::dense::DenseModel;
use crate::lora::{AdapterMode, LoraAdapter};
use crate::models::{GgufFile, llama, qwen3};
use crate::tokenizer::Tokenizer;
use crate::{Error, ModelSource, Result, WeightFormat};

/// File name of the default model inside `<cache>/models/`.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where the default model lives: `<cache>/models/SmolLM2-135M-Instruct.Q4_1.gguf`, with the cache
/// of [`deepconf_core::cache_dir`] (`$DEEPCONF_CACHE`, else `~/.cache/deepconf`). `cargo xtask
/// fetch-model` puts it there.
pub fn default_model_path() -> PathBuf {
    deepconf_core::cache_dir()
        .join("models")
        .join(DEFAULT_MODEL_FILE)
}

/// Builds a [`CandleModel`]: choose the source and options, then [`build`](Self::build).
#[derive(Debug, Clone)]
pub struct CandleModelBuilder {
    source: ModelSource,
    weight_format: WeightFormat,
    enable_thinking: bool,
    max_batch_size: usize,
    adapter: Option<LoraAdapter>,
    adapter_mode: AdapterMode,
}

impl Default for CandleModelBuilder {
    fn default() -> Self {
        Self {
            source: ModelSource::Default,
            weight_format: WeightFormat::Native,
            enable_thinking: false,
            max_batch_size: 16,
            adapter: None,
            adapter_mode: AdapterMode::default(),
        }
    }
}

impl CandleModelBuilder {
    /// Where the weights come from (default: [`ModelSource::Default`]).
    #[must_use]
    pub fn source(mut self, source: ModelSource) -> Self {
        self.source = source;
        self
    }

    /// How weights are held in memory (default: [`WeightFormat::Native`]).
    #[must_use]
    pub fn weight_format(mut self, format: WeightFormat) -> Self {
        self.weight_format = format;
        self
    }

    /// Passes `enable_thinking` to the chat template (Qwen3). Off by default: answers come without a
    /// reasoning block.
    #[must_use]
    pub fn enable_thinking(mut self, enable: bool) -> Self {
        self.enable_thinking = enable;
        self
    }

    /// Most traces decoded together, across every prompt in flight (default 16): the rows of the
    /// continuous batch that all handles of the model share.
    #[must_use]
    pub fn max_batch_size(mut self, traces: usize) -> Self {
        self.max_batch_size = traces;
        self
    }

    /// A LoRA adapter to apply to the loaded weights (see [`LoraAdapter::load`] for PEFT
    /// adapter directories), applied as [`adapter_mode`](Self::adapter_mode) says.
    #[must_use]
    pub fn adapter(mut self, adapter: LoraAdapter) -> Self {
        self.adapter = Some(adapter);
        self
    }

    /// How the adapter is applied (default: merged into Q8_0 weights, the faster choice in
    /// `docs/benchmarks.md`).
    #[must_use]
    pub fn adapter_mode(mut self, mode: AdapterMode) -> Self {
        self.adapter_mode = mode;
        self
    }

    /// Loads the model.
    pub fn build(self) -> Result<CandleModel> {
        if self.max_batch_size == 0 {
            return Err(Error::InvalidParameter {
                parameter: "max_batch_size",
                reason: "must be at least 1".into(),
            });
        }
        let (mut decoder, tokenizer, template, mut model_id) = match &self.source {
            ModelSource::Default => {
                let path = default_model_path();
                if !path.is_file() {
                    return Err(Error::DefaultModelMissing { path });
                }
                load_gguf(&path, self.weight_format)?
            }
            ModelSource::Gguf { path } => load_gguf(path, self.weight_format)?,
            ModelSource::SafetensorsDir { path } => {
                let weights = safetensors_files(path)?;
                load_safetensors(
                    path,
                    &weights,
                    self.weight_format,
                    path.display().to_string(),
                )?
            }
            ModelSource::Hub { repo_id, revision } => {
                load_hub(repo_id, revision.as_deref(), self.weight_format)?
            }
        };
        if let Some(adapter) = &self.adapter {
            let path = adapter
                .source()
                .map_or_else(|| PathBuf::from(adapter.name()), Path::to_path_buf);
            crate::lora::apply_adapter(&mut decoder, adapter, self.adapter_mode, &path)?;
            model_id = format!("{model_id} + {}", adapter.name());
        }
        let decoder = Arc::new(decoder);
        let tokenizer = Arc::new(tokenizer);
        Ok(CandleModel {
            batcher: Arc::new(Batcher::new(
                Arc::clone(&decoder),
                Arc::clone(&tokenizer),
                self.max_batch_size,
            )),
            decoder,
            tokenizer,
            template: template.map(Arc::new),
            model_id,
            enable_thinking: self.enable_thinking,
            max_batch_size: self.max_batch_size,
        })
    }
}

type Loaded = (Decoder, Tokenizer, Option<ChatTemplate>, String);

fn load_gguf(path: &Path, format: WeightFormat) -> Result<Loaded> {
    let mut gguf = GgufFile::open(path)?;
    let arch = gguf.architecture()?;
    let decoder = match arch.as_str() {
        "qwen3" => qwen3::load_gguf(&mut gguf, format)?,
        "llama" => llama::load_gguf(&mut gguf, format)?,
        other => {
            return Err(Error::Model {
                path: path.to_path_buf(),
                message: format!("unsupported architecture `{other}` (supported: llama, qwen3)"),
            });
        }
    };
    let tokenizer = Tokenizer::from_gguf(&gguf.content)?;
    let template = ChatTemplate::from_gguf(&gguf.content)?;
    let id = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    Ok((decoder, tokenizer, template, id))
}

fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Model {
            path: dir.to_path_buf(),
            message: "no *.safetensors files in the directory".into(),
        });
    }
    Ok(files)
}

fn load_safetensors(
    dir: &Path,
    weights: &[PathBuf],
    format: WeightFormat,
    model_id: String,
) -> Result<Loaded> {
    let decoder = qwen3::load_safetensors(dir, weights, format)?;
    let tokenizer = Tokenizer::from_tokenizer_json(&dir.join("tokenizer.json"))?;
    let config = dir.join("tokenizer_config.json");
    let template = if config.is_file() {
        ChatTemplate::from_tokenizer_config(&config)?
    } else {
        None
    };
    Ok((decoder, tokenizer, template, model_id))
}

fn load_hub(repo_id: &str, revision: Option<&str>, format: WeightFormat) -> Result<Loaded> {
    let files = crate::hub::resolve_repo_files(
        repo_id,
        revision,
        &["config.json", "tokenizer.json", "tokenizer_config.json"],
    )?;
    let dir = files[0].parent().map(Path::to_path_buf).unwrap_or_default();
    // Sharded checkpoints list their shards in an index; single-file ones have none.
    let weights = match crate::hub::resolve_repo_files(
        repo_id,
        revision,
        &["model.safetensors.index.json"],
    ) {
        Ok(index) => {
            let text = std::fs::read_to_string(&index[0]).map_err(|source| Error::Io {
                path: index[0].clone(),
                source,
            })?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::Model {
                    path: index[0].clone(),
                    message: format!("invalid safetensors index: {e}"),
                })?;
            let mut shards: Vec<String> = json["weight_map"]
                .as_object()
                .map(|m| {
                    m.values()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            shards.sort();
            shards.dedup();
            let names: Vec<&str> = shards.iter().map(String::as_str).collect();
            crate::hub::resolve_repo_files(repo_id, revision, &names)?
        }
        Err(_) => crate::hub::resolve_repo_files(repo_id, revision, &["model.safetensors"])?,
    };
    load_safetensors(&dir, &weights, format, repo_id.to_string())
}

/// A language model running on candle-loaded weights with this crate's CPU kernels; implements
/// [`LogprobModel`] with continuous batching.
///
/// Every handle of one loaded model (the model itself, its clones and its
/// [`concurrent_handle`](LogprobModel::concurrent_handle)s) feeds one decoder thread, which decodes
/// up to [`max_batch_size`](CandleModelBuilder::max_batch_size) traces of any mix of prompts in
/// one forward pass per step. Threads that generate at the same time therefore share the batch: a
/// prompt's traces join as rows free up, and its prefill is shared by its traces. A trace's tokens
/// do not depend on what else is in the batch.
#[derive(Debug, Clone)]
pub struct CandleModel {
    decoder: Arc<Decoder>,
    tokenizer: Arc<Tokenizer>,
    template: Option<Arc<ChatTemplate>>,
    model_id: String,
    enable_thinking: bool,
    max_batch_size: usize,
    batcher: Arc<Batcher>,
}

impl CandleModel {
    /// A builder with default options.
    pub fn builder() -> CandleModelBuilder {
        CandleModelBuilder::default()
    }

    /// Loads the default model (SmolLM2-135M-Instruct Q4_1) from [`default_model_path`];
    /// [`Error::DefaultModelMissing`] says how to fetch it.
    pub fn load_default() -> Result<Self> {
        Self::builder().build()
    }

    /// Loads a GGUF file or a safetensors checkpoint directory with default options.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self> {
        Self::builder().source(ModelSource::from_path(path)).build()
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Context length in tokens.
    pub fn context_length(&self) -> usize {
        self.decoder.config.context_length
    }

    /// Bytes held by the weight matrices in their in-memory format.
    pub fn weight_bytes(&self) -> usize {
        self.decoder.weight_bytes()
    }

    /// Vocabulary size of the output layer.
    pub fn vocab_size(&self) -> usize {
        self.decoder.config.vocab
    }

    /// The logits of the token after `tokens` (`vocab_size` values), from a fresh context.
    pub fn next_token_logits(&self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.is_empty() || tokens.len() > self.context_length() {
            return Err(Error::InvalidParameter {
                parameter: "tokens",
                reason: format!(
                    "{} tokens; 1 to {} fit the context",
                    tokens.len(),
                    self.context_length()
                ),
            });
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.vocab_size()) {
            return Err(Error::InvalidParameter {
                parameter: "tokens",
                reason: format!(
                    "token id {bad} is outside the vocabulary ({})",
                    self.vocab_size()
                ),
            });
        }
        let mut cache = KvCache::new(self.decoder.config.layers);
        let mut workspace = Workspace::default();
        Ok(self
            .decoder
            .forward(&mut [&mut cache], &[tokens], &mut workspace))
    }

    /// Every weight as dense f32 with Hugging Face names and layout (see [`DenseModel`]), for
    /// training adapters on this model.
    pub fn dense_weights(&self) -> Result<DenseModel> {
        crate::dense::export(&self.decoder, &self.model_id)
    }

    /// Formats `messages` with the model's chat template (generation prompt added) and tokenizes.
    pub fn encode_chat(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let template = self.template.as_ref().ok_or_else(|| {
            Error::ChatTemplate(format!("model `{}` has no chat template", self.model_id))
        })?;
        let token_text = |id: Option<u32>| {
            id.and_then(|i| self.tokenizer.token_text(i))
                .unwrap_or_default()
                .to_string()
        };
        let options = RenderOptions {
            add_generation_prompt: true,
            enable_thinking: self.enable_thinking,
            bos_token: token_text(self.tokenizer.bos_token_id()),
            eos_token: token_text(self.tokenizer.eos_token_ids().first().copied()),
        };
        let text = template.render(messages, &options)?;
        let mut ids = self.tokenizer.encode(&text, true)?;
        if let Some(bos) = self.tokenizer.bos_token_id()
            && self.tokenizer.add_bos()
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        Ok(ids)
    }

    /// Tokenizes a prompt: chat messages through the chat template, raw text as it is (special
    /// tokens in it are parsed; the beginning-of-sequence token is added when the model asks for
    /// it).
    pub fn encode_prompt(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        match prompt {
            Prompt::Chat(messages) => self.encode_chat(messages),
            Prompt::Text(text) => {
                let mut ids = self.tokenizer.encode(text, true)?;
                if let Some(bos) = self.tokenizer.bos_token_id()
                    && self.tokenizer.add_bos()
                    && ids.first() != Some(&bos)
                {
                    ids.insert(0, bos);
                }
                Ok(ids)
            }
        }
    }

    /// Generates the traces of `request` from an already tokenized prompt (used by
    /// [`LogprobModel`] after [`encode_prompt`](Self::encode_prompt)).
    pub fn generate_from_tokens(
        &mut self,
        prompt: &[u32],
        request: &GenerationRequest,
        traces: &[TraceSpec],
        observer: &mut dyn TokenObserver,
    ) -> Result<Vec<Trace>> {
        let sampling = &request.sampling;
        let context_length = self.context_length();
        if prompt.is_empty() || prompt.len() >= context_length {
            return Err(Error::ContextLength {
                prompt_tokens: prompt.len(),
                max_tokens: sampling.max_tokens,
                context_length,
            });
        }
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= self.vocab_size()) {
            return Err(Error::InvalidParameter {
                parameter: "prompt",
                reason: format!(
                    "token id {bad} is outside the vocabulary ({})",
                    self.vocab_size()
                ),
            });
        }
        self.batcher.generate(prompt, sampling, traces, observer)
    }
}

impl LogprobModel for CandleModel {
    fn generate(
        &mut self,
        request: &GenerationRequest,
        trace: TraceSpec,
        observer: &mut dyn TokenObserver,
    ) -> deepconf_core::Result<Trace> {
        let mut traces = self.generate_batch(request, &[trace], observer)?;
        traces.pop().ok_or_else(|| {
            deepconf_core::Error::contract(
                self.model_id(),
                deepconf_core::Violation::WrongTraceCount {
                    returned: 0,
                    requested: 1,
                },
            )
        })
    }

    fn generate_batch(
        &mut self,
        request: &GenerationRequest,
        traces: &[TraceSpec],
        observer: &mut dyn TokenObserver,
    ) -> deepconf_core::Result<Vec<Trace>> {
        request.sampling.validate()?;
        if traces.is_empty() {
            return Ok(Vec::new());
        }
        let prompt = self.encode_prompt(&request.prompt)?;
        Ok(self.generate_from_tokens(&prompt, request, traces, observer)?)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
            .with_max_batch_size(self.max_batch_size)
            .with_max_concurrent_traces(self.max_batch_size)
            .with_vocabulary_size(self.vocab_size())
    }

    fn model_id(&self) -> String {
        self.model_id.clone()
    }

    fn token_text(&self, token_id: u32) -> Option<String> {
        self.tokenizer.decode(&[token_id], false).ok()
    }

    fn concurrent_handle(&self) -> Option<Box<dyn LogprobModel + Send>> {
        Some(Box::new(self.clone()))
    }
}
