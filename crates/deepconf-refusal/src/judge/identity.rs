//! What determines a judge's raw answer: the key of its cache entries.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::JudgeFormat;

/// Everything that determines a judge's raw answer to an exchange: the key of its cache entries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JudgeIdentity {
    /// The format (prompt template and parser).
    pub format: JudgeFormat,
    /// The judge model: a served model name, or a model file (name and checksum).
    pub model: String,
    /// New tokens generated per answer.
    pub max_tokens: usize,
    /// Top-k log-probabilities asked per token.
    pub top_logprobs: usize,
}

impl JudgeIdentity {
    /// One line that names the judge exactly.
    pub fn id(&self) -> String {
        format!(
            "{}|{}|max_tokens={}|top_logprobs={}",
            self.format, self.model, self.max_tokens, self.top_logprobs
        )
    }

    /// A file name stem for this judge's cache: format, a readable form of the model, and a hash
    /// of the whole identity.
    pub fn file_stem(&self) -> String {
        let readable: String = self
            .model
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .take(60)
            .collect();
        let hash = hex(&Sha256::digest(self.id().as_bytes()));
        format!("{}-{readable}-{}", self.format, &hash[..12])
    }

    /// The cache key of the judgement of `answer` to `prompt` (SHA-256 of identity, prompt and
    /// answer; the texts themselves are not stored).
    pub fn key(&self, prompt: &str, answer: &str) -> String {
        let mut hasher = Sha256::new();
        for part in [self.id().as_str(), prompt, answer] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        hex(&hasher.finalize())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_key_their_answers_apart() {
        let a = JudgeIdentity {
            format: JudgeFormat::WildGuard,
            model: "wildguard".into(),
            max_tokens: 32,
            top_logprobs: 20,
        };
        let b = JudgeIdentity {
            format: JudgeFormat::HarmBench,
            ..a.clone()
        };
        assert_eq!(a.key("p", "r"), a.key("p", "r"));
        assert_ne!(a.key("p", "r"), b.key("p", "r"));
        assert_ne!(
            a.key("p", "r"),
            a.key("pr", ""),
            "parts are length-prefixed"
        );
        assert_ne!(a.file_stem(), b.file_stem());
        let odd = JudgeIdentity {
            model: "models/Llama Guard 3.gguf@sha:12".into(),
            ..a
        };
        assert!(
            odd.file_stem()
                .starts_with("wildguard-models_Llama_Guard_3.gguf_sha_12-")
        );
    }

    #[test]
    fn format_names_parse_back() {
        for format in JudgeFormat::ALL {
            assert_eq!(format.name().parse::<JudgeFormat>(), Ok(format));
        }
        assert_eq!("llama-guard".parse(), Ok(JudgeFormat::LlamaGuard3));
        assert!("gpt4".parse::<JudgeFormat>().is_err());
    }
}
