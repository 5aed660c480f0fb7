//! Integration tests of deepconf-datasets (one entry point; modules below).

mod common;

mod errors;
mod generic;
mod harmbench;
mod hub;
mod mixture;
mod sampling;
mod strongreject;
mod toxicchat;
mod wildguardmix;
