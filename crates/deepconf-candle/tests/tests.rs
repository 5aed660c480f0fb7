//! Integration tests of deepconf-candle (one entry point; modules per area).

mod common;
mod generation;
mod llama_cpp_reference;
mod lora;
mod qwen3;
mod tokenizer;
mod vocab_files;
