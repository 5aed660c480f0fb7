//! Integration tests of deepconf-analysis (single entry point).

mod analysis;
mod findings;
mod replay;
mod stats;
