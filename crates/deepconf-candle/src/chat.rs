//! Chat templates: the model's own Jinja template rendered with minijinja.
//!
//! Hugging Face templates are written for Python's Jinja2, so the environment mirrors the
//! settings `transformers` uses (`trim_blocks`, `lstrip_blocks`), adds Python string and dict
//! methods (`.strip()`, `.startswith()`, `.split()`, `.items()`, ...) and `raise_exception`.

use std::path::Path;

use candle_core::quantized::gguf_file;
use deepconf_core::ChatMessage;
use minijinja::{Environment, ErrorKind, context, syntax::SyntaxConfig};
use serde::Serialize;

use crate::{Error, Result};

const TEMPLATE_NAME: &str = "chat_template";

/// Settings passed to a chat template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderOptions {
    /// End the prompt with the header of an assistant turn, so the model answers next.
    pub add_generation_prompt: bool,
    /// Qwen3's switch for its `<think>` block; templates that do not know it ignore it.
    pub enable_thinking: bool,
    /// Text of the begin-of-sequence token, for templates that write it.
    pub bos_token: String,
    /// Text of the end-of-sequence token, for templates that write it.
    pub eos_token: String,
}

impl Default for RenderOptions {
    /// A generation prompt, thinking off, empty BOS/EOS texts.
    fn default() -> Self {
        Self {
            add_generation_prompt: true,
            enable_thinking: false,
            bos_token: String::new(),
            eos_token: String::new(),
        }
    }
}

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    environment: Environment<'static>,
    source: String,
}

#[derive(Serialize)]
struct TemplateMessage<'a> {
    role: &'a str,
    content: &'a str,
}

impl ChatTemplate {
    /// Compiles a Jinja chat template. `origin` names where it came from, for error messages.
    pub fn new(source: impl Into<String>, origin: &str) -> Result<Self> {
        let source = source.into();
        let mut environment = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| Error::ChatTemplate(format!("{origin}: {e}")))?;
        environment.set_syntax(syntax);
        environment
            .set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        environment.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        environment
            .add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|e| Error::ChatTemplate(format!("{origin}: {e:#}")))?;
        Ok(Self {
            environment,
            source,
        })
    }

    /// The template in `tokenizer.chat_template` of a GGUF file, if it has one.
    pub fn from_gguf(content: &gguf_file::Content) -> Result<Option<Self>> {
        match content.metadata.get("tokenizer.chat_template") {
            None => Ok(None),
            Some(gguf_file::Value::String(source)) => {
                Self::new(source.clone(), "GGUF tokenizer.chat_template").map(Some)
            }
            Some(_) => Err(Error::ChatTemplate(
                "GGUF tokenizer.chat_template is not a string".into(),
            )),
        }
    }

    /// The template in a Hugging Face `tokenizer_config.json` (`chat_template` as a string, or
    /// a list of `{name, template}` of which `default` or else the first is used), if any.
    pub fn from_tokenizer_config(path: &Path) -> Result<Option<Self>> {
        let json = crate::tokenizer::read_json(path)?;
        let origin = format!("{}: chat_template", path.display());
        match json.get("chat_template") {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(source)) => Self::new(source.clone(), &origin).map(Some),
            Some(serde_json::Value::Array(named)) => {
                let template_of = |entry: &serde_json::Value| {
                    entry
                        .get("template")
                        .and_then(|t| t.as_str())
                        .map(str::to_string)
                };
                let chosen = named
                    .iter()
                    .find(|entry| entry.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .or_else(|| named.first())
                    .and_then(template_of);
                match chosen {
                    Some(source) => Self::new(source, &origin).map(Some),
                    None => Err(Error::ChatTemplate(format!(
                        "{origin}: the list has no entry with a `template` string"
                    ))),
                }
            }
            Some(_) => Err(Error::ChatTemplate(format!(
                "{origin}: neither a string nor a list of named templates"
            ))),
        }
    }

    /// The template's source text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Formats `messages` as the prompt text (special tokens written out, to be encoded with
    /// `parse_special = true`).
    pub fn render(&self, messages: &[ChatMessage], options: &RenderOptions) -> Result<String> {
        let messages: Vec<TemplateMessage<'_>> = messages
            .iter()
            .map(|message| TemplateMessage {
                role: message.role.as_str(),
                content: &message.content,
            })
            .collect();
        let template = self
            .environment
            .get_template(TEMPLATE_NAME)
            .map_err(|e| Error::ChatTemplate(e.to_string()))?;
        template
            .render(context! {
                messages => minijinja::Value::from(minijinja::value::Serde(&messages)),
                add_generation_prompt => options.add_generation_prompt,
                enable_thinking => options.enable_thinking,
                bos_token => &options.bos_token,
                eos_token => &options.eos_token,
            })
            .map_err(|e| Error::ChatTemplate(format!("rendering failed: {e:#}")))
    }
}
