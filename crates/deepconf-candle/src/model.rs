//! [`CandleModel`]: loading, prompt formatting and batched trace generation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use deepconf_core::{
    ChatMessage, GenerationRequest, LogprobModel, StopReason, TokenControl, TokenObserver,
    TokenStep, Trace, TraceSpec,
};

use crate::chat::{ChatTemplate, RenderOptions};
use crate::decoder::{Decoder, KvCache, Workspace};
use crate::models::{GgufFile, llama, qwen3};
use crate::sampling::{SampledToken, TraceRng, sample};
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

/// Runs `work` on a thread of rayon's pool. A forward pass makes over a hundred parallel
/// matmuls; started from a thread outside the pool, each one would put the caller to sleep and
/// wake it again (measured: a quarter of batch-1 decode time in the scheduler), while from a pool
/// thread the caller joins the work itself.
fn on_worker<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    rayon::scope(|_| work())
}

/// Removes `<think>…</think>` blocks (and an unclosed trailing `<think>…`) from generated text, so
/// classifiers see only the answer of a reasoning model.
pub fn strip_thinking(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<think>") {
        out.push_str(&rest[..start]);
        match rest[start..].find("</think>") {
            Some(end) => rest = &rest[start + end + "</think>".len()..],
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    if text.contains("</think>") {
        out.trim_start().to_string()
    } else {
        out
    }
}

/// Builds a [`CandleModel`]: choose the source and options, then [`build`](Self::build).
#[derive(Debug, Clone)]
pub struct CandleModelBuilder {
    source: ModelSource,
    weight_format: WeightFormat,
    enable_thinking: bool,
    max_batch_size: usize,
}

impl Default for CandleModelBuilder {
    fn default() -> Self {
        Self {
            source: ModelSource::Default,
            weight_format: WeightFormat::Native,
            enable_thinking: false,
            max_batch_size: 16,
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

    /// Most traces decoded together in one lockstep batch (default 16).
    #[must_use]
    pub fn max_batch_size(mut self, traces: usize) -> Self {
        self.max_batch_size = traces;
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
        let (decoder, tokenizer, template, model_id) = match &self.source {
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
        Ok(CandleModel {
            decoder: Arc::new(decoder),
            tokenizer,
            template,
            model_id,
            enable_thinking: self.enable_thinking,
            max_batch_size: self.max_batch_size,
            workspace: Workspace::default(),
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
/// [`LogprobModel`] with batched lockstep decoding of the traces of one prompt.
#[derive(Debug)]
pub struct CandleModel {
    decoder: Arc<Decoder>,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    model_id: String,
    enable_thinking: bool,
    max_batch_size: usize,
    workspace: Workspace,
}

/// One trace being decoded.
struct Row {
    spec: TraceSpec,
    rng: TraceRng,
    cache: KvCache,
    logits: Vec<f32>,
    ids: Vec<u32>,
    steps: Vec<TokenStep>,
    decoded: String,
    stop: Option<StopReason>,
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

    /// Generates the traces of `request` from an already tokenized prompt (used by
    /// [`LogprobModel`] after [`encode_chat`](Self::encode_chat)).
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
        let decoder = Arc::clone(&self.decoder);
        let mut prompt_cache = KvCache::new(decoder.config.layers);
        let workspace = &mut self.workspace;
        let first_logits =
            on_worker(|| decoder.forward(&mut [&mut prompt_cache], &[prompt], workspace));

        let mut finished: Vec<Trace> = Vec::with_capacity(traces.len());
        for chunk in traces.chunks(self.max_batch_size) {
            let mut rows: Vec<Row> = chunk
                .iter()
                .map(|&spec| Row {
                    spec,
                    rng: TraceRng::new(spec.seed),
                    cache: prompt_cache.clone(),
                    logits: first_logits.clone(),
                    ids: Vec::new(),
                    steps: Vec::new(),
                    decoded: String::new(),
                    stop: None,
                })
                .collect();
            loop {
                // Sampling (softmax, top-k, nucleus) of the rows is independent: run it in parallel,
                // then apply the stop rules and the observer in trace order.
                let sampled: Vec<(usize, SampledToken)> = rows
                    .par_iter_mut()
                    .enumerate()
                    .filter(|(_, r)| r.stop.is_none())
                    .map(|(i, r)| (i, sample(&r.logits, &request.sampling, &mut r.rng)))
                    .collect();
                for (i, token) in sampled {
                    self.advance(&mut rows[i], token, request, context_length, observer)?;
                }
                let mut active: Vec<&mut Row> =
                    rows.iter_mut().filter(|r| r.stop.is_none()).collect();
                if active.is_empty() {
                    break;
                }
                let last: Vec<[u32; 1]> = active
                    .iter()
                    .map(|r| [*r.ids.last().expect("an active row has a token")])
                    .collect();
                let tokens: Vec<&[u32]> = last.iter().map(|t| &t[..]).collect();
                let mut caches: Vec<&mut KvCache> =
                    active.iter_mut().map(|r| &mut r.cache).collect();
                let workspace = &mut self.workspace;
                let logits = on_worker(|| decoder.forward(&mut caches, &tokens, workspace));
                let vocab = decoder.config.vocab;
                for (row, l) in active.iter_mut().zip(logits.chunks_exact(vocab)) {
                    row.logits.clear();
                    row.logits.extend_from_slice(l);
                }
            }
            for row in rows {
                let text = strip_thinking(&self.tokenizer.decode(&row.ids, true)?);
                finished.push(Trace {
                    spec: row.spec,
                    text,
                    steps: row.steps,
                    stop_reason: row.stop.unwrap_or(StopReason::MaxTokens),
                    prompt_tokens: prompt.len(),
                });
            }
        }
        Ok(finished)
    }

    /// Appends the sampled token to `row` and decides whether the row stops.
    fn advance(
        &self,
        row: &mut Row,
        sampled: SampledToken,
        request: &GenerationRequest,
        context_length: usize,
        observer: &mut dyn TokenObserver,
    ) -> Result<()> {
        if self.tokenizer.eos_token_ids().contains(&sampled.token) {
            row.stop = Some(StopReason::EndOfSequence);
            return Ok(());
        }
        row.ids.push(sampled.token);
        // Token text is the growth of the decoded string; a token that ends inside a multi-byte
        // character contributes nothing until the character completes.
        let full = self.tokenizer.decode(&row.ids, false)?;
        let text = if full.ends_with('\u{FFFD}') || !full.starts_with(&row.decoded) {
            String::new()
        } else {
            let piece = full[row.decoded.len()..].to_string();
            row.decoded = full;
            piece
        };
        row.steps.push(TokenStep {
            token_id: Some(sampled.token),
            text,
            logprob: sampled.logprob,
            top_logprobs: sampled.top_logprobs,
            top_token_ids: sampled.top_ids,
        });
        let step = row.steps.last().expect("just pushed");
        row.stop = if observer.on_token(&row.spec, step) == TokenControl::Stop {
            Some(StopReason::Terminated)
        } else if row.steps.len() >= request.sampling.max_tokens {
            Some(StopReason::MaxTokens)
        } else if row.cache.len() + 1 >= context_length {
            Some(StopReason::ContextFull)
        } else {
            None
        };
        Ok(())
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
        traces
            .pop()
            .ok_or_else(|| deepconf_core::Error::Contract("no trace generated".into()))
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
        let prompt = self.encode_chat(&request.messages)?;
        Ok(self.generate_from_tokens(&prompt, request, traces, observer)?)
    }

    fn max_batch_size(&self) -> usize {
        self.max_batch_size
    }

    fn model_id(&self) -> String {
        self.model_id.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinking_blocks_are_removed() {
        assert_eq!(strip_thinking("<think>\nhmm\n</think>\n\nNo."), "No.");
        assert_eq!(strip_thinking("Sure <think>x</think>thing"), "Sure thing");
        assert_eq!(strip_thinking("<think>unfinished"), "");
        assert_eq!(strip_thinking("plain"), "plain");
    }
}
