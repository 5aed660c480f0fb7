//! Integration tests of deepconf-refusal (one entry point; modules below).

mod common;

mod answers;
mod ensemble;
mod fixture;
mod judge_model;
mod properties;
