//! [`ServerHandle`]: the cheap, cloneable handle `serve` returns, the messages it sends the
//! server actor, and [`shutdown`](ServerHandle::shutdown) with its grace period.

use std::{fmt, sync::Arc, time::Duration};

use actix::{Message, Recipient};
use switchboard_framework::{Close, SocketAddress, SocketInfo};

/// The grace period servers are commonly given to close their connections gracefully before
/// [`ServerHandle::shutdown`] aborts the rest: 5 s (what every server example uses by
/// default). Long enough to flush a reply to a client that reads; a client that does not read
/// holds nothing up for longer.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long [`ServerHandle::shutdown`] waits, after aborting the connections still open at the
/// end of its grace period, for their protocols to handle `ConnectionLost`: 1 s. An aborted
/// transport stops at once; only a protocol busy elsewhere takes longer.
pub const SHUTDOWN_ABORT_WAIT: Duration = Duration::from_secs(1);

/// Resolves once the server is closed and every connection it accepted is gone, its protocol
/// having handled `ConnectionLost` (asyncio 3.12.1+ `wait_closed`); then at once, forever after.
/// A `main` that returns right after it loses none of its protocols' last words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "()")]
pub struct WaitClosed;

/// The listening sockets; empty after `Close`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "Vec<ServerSocket>")]
pub struct Sockets;

/// Whether the server is accepting connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "bool")]
pub struct IsServing;

/// Makes the sockets listen and starts accepting; replies once they listen, so a connection
/// made after the reply is served (idempotent; does nothing after `Close`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "()")]
pub struct StartServing;

/// Sends `Close` to every live connection; the server goes on accepting unless closed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "()")]
pub struct CloseClients;

/// Sends `Abort` to every live connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "()")]
pub struct AbortClients;

/// The server's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "ServerStats")]
pub struct GetServerStats;

/// A listening socket: where it is bound, and the socket itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerSocket {
    /// The bound address (with the real port when port 0 was asked for).
    pub address: SocketAddress,
    /// The descriptor, family and type.
    pub socket: SocketInfo,
}

impl ServerSocket {
    pub(crate) fn new(address: SocketAddress, socket: SocketInfo) -> Self {
        ServerSocket { address, socket }
    }
}

/// The reply to [`GetServerStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections alive now.
    pub connections: usize,
    /// Connections accepted since the server started.
    pub accepted: u64,
}

/// A cheap, cloneable handle on a running server.
#[derive(Clone)]
pub struct ServerHandle {
    pub(super) ports: Arc<ServerPorts>,
    pub(super) addresses: Arc<[SocketAddress]>,
}

pub(super) struct ServerPorts {
    pub(super) close: Recipient<Close>,
    pub(super) wait_closed: Recipient<WaitClosed>,
    pub(super) sockets: Recipient<Sockets>,
    pub(super) is_serving: Recipient<IsServing>,
    pub(super) start_serving: Recipient<StartServing>,
    pub(super) close_clients: Recipient<CloseClients>,
    pub(super) abort_clients: Recipient<AbortClients>,
    pub(super) stats: Recipient<GetServerStats>,
}

impl ServerHandle {
    /// Where the server was bound, with the real port when port 0 was asked for. Unlike
    /// [`sockets`](Self::sockets), this stays the same after `Close`.
    pub fn addresses(&self) -> &[SocketAddress] {
        &self.addresses
    }

    /// Stops accepting and closes the listening sockets; live connections go on.
    pub async fn close(&self) {
        let _ = self.ports.close.send(Close).await;
    }

    /// Resolves once the server is closed and every connection is gone, its protocol having
    /// handled `ConnectionLost`.
    pub async fn wait_closed(&self) {
        let _ = self.ports.wait_closed.send(WaitClosed).await;
    }

    /// The listening sockets; empty after `close`.
    pub async fn sockets(&self) -> Vec<ServerSocket> {
        self.ports.sockets.send(Sockets).await.unwrap_or_default()
    }

    /// Whether the server is accepting.
    pub async fn is_serving(&self) -> bool {
        self.ports.is_serving.send(IsServing).await.unwrap_or(false)
    }

    /// Starts listening and accepting; resolves once the sockets listen.
    pub async fn start_serving(&self) {
        let _ = self.ports.start_serving.send(StartServing).await;
    }

    /// Closes every live connection gracefully.
    pub async fn close_clients(&self) {
        let _ = self.ports.close_clients.send(CloseClients).await;
    }

    /// Aborts every live connection.
    pub async fn abort_clients(&self) {
        let _ = self.ports.abort_clients.send(AbortClients).await;
    }

    /// The server's counters.
    pub async fn stats(&self) -> ServerStats {
        self.ports
            .stats
            .send(GetServerStats)
            .await
            .unwrap_or_default()
    }

    /// Shuts the server down the usual way, in a bounded time: stops accepting (`close`),
    /// closes every connection gracefully (`close_clients`: each flushes what it has buffered,
    /// then ends), waits up to `grace` for them all to end (`wait_closed`), aborts those still
    /// open (`abort_clients`), and waits up to [`SHUTDOWN_ABORT_WAIT`] more for their protocols
    /// to handle `ConnectionLost`. So it returns within about `grace` + 1 s, whatever the
    /// clients do: a client that never reads cannot hold a graceful close up for longer.
    ///
    /// A shutdown in progress can be cut short by starting another with a zero grace (a second
    /// signal's usual meaning): `server.shutdown(Duration::ZERO)` aborts every connection at
    /// once. asyncio's equivalent is `close()`, `close_clients()`, then `wait_closed()` under a
    /// timeout and `abort_clients()`.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        self.close().await;
        let connections = self.stats().await.connections;
        self.close_clients().await;
        if tokio::time::timeout(grace, self.wait_closed())
            .await
            .is_ok()
        {
            return ShutdownReport {
                connections,
                aborted: 0,
                complete: true,
            };
        }
        let aborted = self.stats().await.connections;
        if aborted > 0 {
            tracing::warn!(
                connections = aborted,
                ?grace,
                "still open after the grace period: aborting them"
            );
        }
        self.abort_clients().await;
        let complete = tokio::time::timeout(SHUTDOWN_ABORT_WAIT, self.wait_closed())
            .await
            .is_ok();
        if !complete {
            tracing::warn!(
                wait = ?SHUTDOWN_ABORT_WAIT,
                "protocols still handling ConnectionLost after the abort: giving up on them"
            );
        }
        ShutdownReport {
            connections,
            aborted,
            complete,
        }
    }
}

/// What [`ServerHandle::shutdown`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Connections open when the shutdown began.
    pub connections: usize,
    /// Connections still open at the end of the grace period, and aborted then.
    pub aborted: usize,
    /// Whether every connection's protocol had handled `ConnectionLost` when the shutdown
    /// returned; false only if one took longer than [`SHUTDOWN_ABORT_WAIT`] after the abort.
    pub complete: bool,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addresses", &self.addresses)
            .finish_non_exhaustive()
    }
}
