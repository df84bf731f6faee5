//! The stream checker's parts: what it generates, the driver with its model, and the runner
//! (`runner.rs`), which knows nothing of either core.

pub(crate) mod harness;
pub(crate) mod runner;
pub(crate) mod step;
