//! Integration tests of deepconf-analysis (single entry point).

mod analysis;
mod common;
mod findings;
mod records;
mod replay;
mod stats;
