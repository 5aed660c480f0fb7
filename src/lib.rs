//! Root package of the workspace: it only hosts the runnable examples in `examples/`.

// Compiles the README's code blocks as doc tests, so the library example there cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
