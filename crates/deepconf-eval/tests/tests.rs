//! Integration tests of deepconf-eval. Runs use the real embedded model (SmolLM2-135M Q4_1, placed by
//! `cargo xtask fetch-model`) and real HarmBench behaviours (`cargo xtask fetch-data harmbench`),
//! kept tiny: a few instances, a few traces, 24 tokens.

mod common;

mod cli;
mod engine;
mod full_and_live;
mod judges;
mod resume;
mod run;
mod served;
