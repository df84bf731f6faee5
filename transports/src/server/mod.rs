//! Servers (asyncio's `create_server`): an actor that accepts connections and starts a stream
//! transport with a fresh protocol for each one, spread over worker arbiters.
//!
//! [`tcp::serve`](crate::tcp::serve) and [`unix::serve`](crate::unix::serve) return a
//! [`ServerHandle`], which carries the server's messages:
//!
//! | message | asyncio | what it does |
//! |---|---|---|
//! | [`Close`](switchboard_framework::Close) | `close()` | stops accepting and closes the listening sockets; live connections go on |
//! | [`WaitClosed`] | `wait_closed()` | resolves once the server is closed *and* every connection is gone, its protocol's `ConnectionLost` handled |
//! | [`Sockets`] | `sockets` | the listening sockets, empty after `Close` |
//! | [`IsServing`] / [`StartServing`] | `is_serving()` / `start_serving()` | |
//! | [`CloseClients`] / [`AbortClients`] | `close_clients()` / `abort_clients()` | `Close` / `Abort` every live connection |
//! | [`GetServerStats`] | – | live connections and connections accepted |
//!
//! [`ServerHandle::shutdown`] runs the usual sequence in one call, bounded by a grace period:
//! stop accepting, close the clients gracefully, wait, abort the rest.
//!
//! Each connection's transport and protocol live on the same worker arbiter: the protocol
//! factory runs there. The accept loop runs on the first worker (on the calling arbiter with
//! `workers(0)`), and that worker's connections start where they were accepted; the others
//! move to their worker once. Past [`ServerOptions::max_connections`] the server stops accepting and
//! the kernel's backlog holds the rest, instead of accepting and dropping them; it accepts again
//! as connections close. When accepting fails for lack of resources (`EMFILE`, `ENFILE`,
//! `ENOBUFS`, `ENOMEM`) it backs off for [`ServerOptions::accept_backoff`] and tries again.

mod acceptor;
mod actor;
mod connections;
mod handle;
mod options;

#[cfg(feature = "tls")]
pub(crate) use self::connections::{Open, Opening};
pub(crate) use self::{
    acceptor::{Detach, Listen},
    actor::start,
    connections::Direct,
};
pub use self::{
    handle::{
        AbortClients, CloseClients, DEFAULT_SHUTDOWN_GRACE, GetServerStats, IsServing,
        SHUTDOWN_ABORT_WAIT, ServerHandle, ServerSocket, ServerStats, ShutdownReport, Sockets,
        StartServing, WaitClosed,
    },
    options::{DEFAULT_ACCEPT_BACKOFF, DEFAULT_BACKLOG, DEFAULT_MAX_CONNECTIONS, ServerOptions},
};
