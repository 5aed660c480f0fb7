//! Integration tests of deepconf-datasets (one entry point; modules below).

mod common;

mod errors;
mod generic;
mod harmbench;
mod hub;
mod sampling;
mod toxicchat;
mod wildguardmix;
