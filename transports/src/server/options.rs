//! [`ServerOptions`]: a server's workers, connection limit, listen backlog, accept back-off, and
//! the settings of every connection's transport.

use std::time::Duration;

use crate::stream::StreamConfig;

/// The default limit on live connections per server; past it the server stops accepting.
/// actix-server's default per worker.
pub const DEFAULT_MAX_CONNECTIONS: usize = 25_600;

/// The default listen backlog (tokio's and mio's).
pub const DEFAULT_BACKLOG: u32 = 1024;

/// How long a server waits before accepting again after running out of file descriptors or
/// memory: 500 ms, as actix-server (asyncio waits 1 s, ranch 100 ms).
pub const DEFAULT_ACCEPT_BACKOFF: Duration = Duration::from_millis(500);

/// The settings of a server. Start from `ServerOptions::default()`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerOptions {
    /// Worker arbiters (threads) connections are spread over; default: the number of cores.
    /// `0` serves every connection on the arbiter that called `serve`.
    pub workers: usize,
    /// See [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`DEFAULT_BACKLOG`].
    pub backlog: u32,
    /// See [`DEFAULT_ACCEPT_BACKOFF`].
    pub accept_backoff: Duration,
    /// Whether to listen and accept at once (asyncio's `start_serving=True`). Otherwise the
    /// sockets are only bound, and connections are refused, until [`StartServing`](super::StartServing) makes them
    /// listen (asyncio calls `listen(2)` in `start_serving()` too).
    pub start_serving: bool,
    /// The settings of every connection's transport.
    pub stream: StreamConfig,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            backlog: DEFAULT_BACKLOG,
            accept_backoff: DEFAULT_ACCEPT_BACKOFF,
            start_serving: true,
            stream: StreamConfig::default(),
        }
    }
}

impl ServerOptions {
    /// Sets the number of worker arbiters (`0`: the calling arbiter).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Sets the connection limit (at least 1).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Sets the listen backlog.
    pub fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = backlog;
        self
    }

    /// Sets the back-off after resource exhaustion.
    pub fn accept_backoff(mut self, backoff: Duration) -> Self {
        self.accept_backoff = backoff;
        self
    }

    /// Sets whether the server accepts at once.
    pub fn start_serving(mut self, start: bool) -> Self {
        self.start_serving = start;
        self
    }

    /// Sets the transport settings of every connection.
    pub fn stream(mut self, config: StreamConfig) -> Self {
        self.stream = config;
        self
    }
}
