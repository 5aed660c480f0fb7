//! Integration tests of deepconf-candle (one entry point; modules per area).

mod tokenizer;
