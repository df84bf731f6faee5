//! The I/O-free core of [switchboard]: every decision its transports make, as plain state
//! machines in the manner of quinn-proto — inputs (bytes read, the peer's EOF, bytes written,
//! I/O errors, the protocol's commands and acknowledgements, the time now), outputs (events for
//! the protocol, bytes to write, what to do with the I/O object, the next deadline), and no
//! sockets, no runtime and no clock of its own.
//!
//! * [`StreamCore`] decides for every stream transport: the lifecycle, the read gate (attach,
//!   one delivery in flight, acknowledgements, pause, the read-buffer limit), the write queue
//!   with its watermarks and the ledger of acknowledged writes, close, abort, drain and
//!   half-close, protocol switches with their leftover, and the upgrade barrier of `StartTls`.
//! * [`DatagramCore`] decides for every datagram endpoint: the same lifecycle, a read window of
//!   N datagrams in flight, and a send queue whose datagrams each get their own outcome.
//! * [`SubprocessCore`] decides for a subprocess transport's supervisor, over one stream core
//!   per pipe: no pipe delivers before the protocol is attached, `ProcessExited` once, and the
//!   end once the child exited and every pipe closed.
//! * [`WriteFlow`], [`WriteBufferLimits`] and [`WriteLedger`] are the write-side pieces every
//!   kind shares.
//!
//! The actors of `switchboard-transports` are thin drivers that move bytes between a core and
//! the operating system; the mock transports of `switchboard-framework`'s `testing` module are
//! the same cores with scripted I/O. So a protocol tested on a mock meets exactly the transport
//! it will meet in production, and the cores are checked on their own under seeded random
//! interleavings (`tests/interleavings.rs` for the stream core, `tests/datagram_interleavings.rs`
//! for the datagram core).
//!
//! # How it stays I/O-free
//!
//! Its dependencies are `bytes`, `derive_more` and `tracing`: nothing that reaches a socket, a
//! runtime or a timer, which `.ci/run` checks on the dependency tree. Its `clippy.toml` forbids
//! the std calls that would (reading a clock, sleeping, spawning threads, opening sockets, files
//! or processes). Time is always an argument.
//!
//! [switchboard]: https://docs.rs/switchboard
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]
// docs.rs (`--cfg docsrs`, nightly): mark each item with the features it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod datagram;
mod error;
mod flow;
mod gate;
mod ledger;
mod queue;
mod stats;
pub mod stream;
pub mod subprocess;

pub use datagram::DatagramCore;
pub use error::{InvalidWriteBufferLimits, Timeout, WriteError, copy_error};
pub use flow::{
    DEFAULT_HIGH_WATER_MARK, DEFAULT_LOW_WATER_MARK, DEFAULT_MAX_WRITE_BUFFER,
    DEFAULT_TLS_HIGH_WATER_MARK, DEFAULT_TLS_LOW_WATER_MARK, FlowEdge, Handles, WriteBufferLimits,
    WriteFlow, check_max_write_buffer, check_timeout,
};
pub use ledger::{Ticket, Waiter, WriteLedger};
pub use queue::WriteQueue;
pub use stats::TransportStats;
pub use stream::StreamCore;
pub use subprocess::SubprocessCore;
