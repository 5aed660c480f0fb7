//! LLM judges: a model of its own (a local GGUF or a served WildGuard, HarmBench classifier or
//! Llama Guard) asked in its exact published format.
//!
//! An [`LlmJudge`] sends [`JudgeFormat::prompt`] as raw text ([`GenerationRequest::text`](deepconf_core::GenerationRequest::text): no
//! chat template; an OpenAI-compatible server receives it on `/v1/completions`), decodes
//! greedily, parses the answer exactly as the format's reference code does (an answer that does
//! not parse is an [`Error::JudgeParse`](crate::Error::JudgeParse), counted, never guessed), maps the verdict to a
//! [`RefusalLabel`](crate::RefusalLabel) (see [`JudgeVerdict::label`]) and scores it from the log-probabilities of the
//! answer token ([`ScoreSource`]). Answers can be kept in a [`JudgeCache`](crate::JudgeCache) so that no pair is
//! judged twice.

mod cache;
mod counts;
mod format;
mod harmbench;
mod identity;
mod llama_guard;
mod llm_judge;
mod score;
mod verdict;
mod wildguard;

pub use cache::{CachedAnswer, JudgeCache};
pub use counts::{JudgeCounts, JudgeCountsHandle};
pub use harmbench::{
    HARMBENCH_CONTEXT_SEPARATOR, harmbench_prompt, harmbench_prompt_for, parse_harmbench_output,
};
pub use identity::JudgeIdentity;
pub use llama_guard::{LLAMA_GUARD_3_CATEGORIES, llama_guard_prompt, parse_llama_guard_output};
pub use llm_judge::{JudgeOutput, LlmJudge};
pub use verdict::NotHarmfulReading;
pub use wildguard::{parse_wildguard_output, wildguard_instruction, wildguard_prompt};
