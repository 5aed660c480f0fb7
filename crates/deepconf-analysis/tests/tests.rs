//! Integration tests of deepconf-analysis (single entry point).

mod analysis;
mod findings;
mod golden;
mod old_runs;
mod replay;
mod stats;
