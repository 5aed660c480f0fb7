//! Integration tests of deepconf-eval (one entry point; modules below).
