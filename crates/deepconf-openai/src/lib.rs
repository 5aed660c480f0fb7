//! OpenAI-compatible HTTP backend for deepconf-core (vLLM, SGLang, llama.cpp server) with streaming top-k logprobs
#![deny(missing_docs)]
