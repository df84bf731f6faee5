//! switchboard's transports: actors that own sockets and deliver to protocol actors.
//!
//! * [`stream`]: the generic stream transport, one actor over any `AsyncRead + AsyncWrite`,
//!   which implements flow control, close, half-close and protocol switching once;
//! * [`tcp`] and [`unix`]: `connect` and `serve` for TCP and Unix-domain stream sockets;
//! * [`pipe`]: read-pipe and write-pipe transports over pipes, FIFOs and terminals;
//! * [`subprocess`]: a child process with a pipe transport per standard stream;
//! * [`datagram`]: the generic datagram transport, one actor over any [`DatagramSocket`];
//! * [`udp`] and [`unix_datagram`]: UDP (IPv4, IPv6) and Unix datagram endpoints;
//! * `tls` (feature `tls`): `connect` and `serve` for TLS, and `StartTls` on TCP and Unix
//!   transports;
//! * [`server`]: the server actor behind `serve`, and its [`ServerHandle`].
//!
//! The messages and handles come from `switchboard-framework`; the `switchboard` crate
//! re-exports both. See the [`tcp`] module for a complete echo server.
//!
//! # Actor lifecycle
//!
//! A transport actor starts paused, queues `ConnectionMade` to its protocol, then reads. It
//! stops after a graceful close (flush, shutdown, drain), an abort, an I/O error, a stalled
//! write, or the death of its protocol actor; in every case it sends `ConnectionLost` from
//! `stopped()` and releases its socket. Commands still in its mailbox when it stops are dropped:
//! a pending acknowledged write resolves to an error. A server actor keeps accepting until
//! `Close`, even with no handle left; its worker arbiters stop once it is closed and its last
//! connection is gone.
//!
//! A pipe transport is a stream transport: it stops as one does, and releases its descriptor
//! (restoring blocking mode if it found it blocking). A subprocess transport stops once its
//! child has exited and every pipe transport has stopped, and sends `ConnectionLost` from
//! `stopped()`; if it is stopped earlier (its system shutting down), its child is killed, and
//! collected by tokio. Its protocol stopping makes it close: the pipes close and a running child
//! is killed.
//!
//! A datagram endpoint stops after `Close` (once its queued datagrams are sent), `Abort`, a
//! socket failure that leaves it unusable, or the death of its protocol actor, and sends
//! `ConnectionLost` from `stopped()`. Errors the socket reports about single datagrams (ICMP,
//! sizes) do not stop it.
//!
//! A TLS connection's handshake runs before its transport actor exists (on the worker that will
//! own it, for a server): a handshake that fails, times out or is ended by `CloseClients` leaves
//! no actor and no protocol behind. A `StartTls` in progress when its transport stops is answered
//! with a `ConnectionEnded` error.
//!
//! # Feature flags
//!
//! * `tls` (off here, on by default in the `switchboard` facade): the `tls` module, and
//!   `StartTls` on TCP and Unix-socket transports. It links OpenSSL through openssl-sys, which
//!   finds the system's library (Debian: `libssl-dev`) or builds its own with openssl's
//!   `vendored` feature. Without it, `StartTls` answers `Unsupported`.
//! * `test-util` (off by default): the `testing` module: loopback servers, Unix socket paths
//!   in a temporary directory, TLS certificates; for `[dev-dependencies]` only.
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]
// docs.rs (`--cfg docsrs`, nightly): mark each item with the features it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod datagram;
mod driver;
mod factory;
pub mod pipe;
mod runtime;
pub mod server;
pub mod stream;
pub mod subprocess;
pub mod tcp;
#[cfg(feature = "test-util")]
pub mod testing;
#[cfg(feature = "tls")]
pub mod tls;
pub mod udp;
pub mod unix;
pub mod unix_datagram;
mod upgradable;

pub use datagram::{DatagramConfig, DatagramSocket};
pub use server::{ServerHandle, ServerOptions, ShutdownReport};
pub use stream::{Direction, StreamConfig, StreamIo, StreamTransport};
pub use tcp::TcpConnector;

/// The names a server author needs: `use switchboard_transports::prelude::*;`.
pub mod prelude {
    #[cfg(feature = "tls")]
    pub use crate::tls::{self, TlsAcceptor, TlsConnector};
    pub use crate::{
        DatagramConfig, ServerHandle, ServerOptions, StreamConfig, pipe, subprocess, tcp, udp,
        unix, unix_datagram,
    };
}
