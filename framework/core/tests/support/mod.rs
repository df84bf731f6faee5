//! The stream checker's parts: what it generates, the driver with its model, and the runner it
//! shares with the datagram checker (`tests/datagram_interleavings.rs` takes `runner.rs`,
//! `datagram_step.rs` and `datagram.rs` by path, so that each test compiles only what it uses).

pub(crate) mod harness;
pub(crate) mod runner;
pub(crate) mod step;
