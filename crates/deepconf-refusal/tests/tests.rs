//! Integration tests of deepconf-refusal.
