//! Integration tests of deepconf-records (single entry point).

mod records;
