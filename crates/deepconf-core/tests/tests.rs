//! Integration tests of the runner.
mod runner;
