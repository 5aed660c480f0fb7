//! Integration tests of deepconf-analysis (single entry point).

mod analysis;
mod replay;
mod stats;
