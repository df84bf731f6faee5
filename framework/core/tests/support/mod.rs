//! The interleavings checker's parts: what it generates, and the driver with its model.

pub(crate) mod harness;
pub(crate) mod step;
