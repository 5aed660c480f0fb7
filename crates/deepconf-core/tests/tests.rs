//! Integration tests of the runner.
mod adversarial;
mod misbehaving;
mod runner;
