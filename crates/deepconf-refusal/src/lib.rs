//! Refusal classifiers for LLM safety evaluation: a normalising pattern classifier and a WildGuard-format LLM judge
#![deny(missing_docs)]
