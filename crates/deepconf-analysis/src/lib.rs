//! placeholder
#![deny(missing_docs)]
pub mod confusion;
pub mod error;
pub mod records;
pub mod replay;
pub mod stats;
pub mod stratify;
pub mod plots;
