//! Root package of the workspace: it only hosts the runnable examples in `examples/`.
