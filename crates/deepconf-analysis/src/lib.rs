//! Safety analysis of DeepConf runs: run records, confusion matrices with bootstrap intervals, percentile replay, statistics, plots and reports
#![deny(missing_docs)]
