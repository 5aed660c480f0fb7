//! Integration tests of deepconf-openai: against a real llama-cpp-python server serving the embedded
//! SmolLM2 GGUF (started once per test binary), and against scripted broken servers.

mod common;
mod failures;
mod llama_server;
mod serving;
