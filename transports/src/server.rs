//! Servers (asyncio's `create_server`): an actor that accepts connections and starts a stream
//! transport with a fresh protocol for each one, spread over worker arbiters.
//!
//! [`tcp::serve`](crate::tcp::serve) and [`unix::serve`](crate::unix::serve) return a
//! [`ServerHandle`], which carries the server's messages:
//!
//! | message | asyncio | what it does |
//! |---|---|---|
//! | [`Close`] | `close()` | stops accepting and closes the listening sockets; live connections go on |
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

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst},
    },
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use actix::{
    Actor, Addr, Arbiter, Context, Handler, Message, MessageResult, Recipient, ResponseFuture,
};
use actix_rt::ArbiterHandle;
use futures::{
    future::{AbortHandle, Abortable, LocalBoxFuture},
    task::AtomicWaker,
};
use switchboard_framework::{
    Abort, Close, ExtraInfo, IntoProtocol, LostHandled, SocketAddress, SocketInfo, TransportHandle,
    keys,
};
use tokio::{sync::oneshot, time::Sleep};

use crate::stream::{StreamConfig, StreamIo, StreamTransport};

/// The default limit on live connections per server; past it the server stops accepting.
/// actix-server's default per worker.
pub const DEFAULT_MAX_CONNECTIONS: usize = 25_600;

/// The default listen backlog (tokio's and mio's).
pub const DEFAULT_BACKLOG: u32 = 1024;

/// How long a server waits before accepting again after running out of file descriptors or
/// memory: 500 ms, as actix-server (asyncio waits 1 s, ranch 100 ms).
pub const DEFAULT_ACCEPT_BACKOFF: Duration = Duration::from_millis(500);

/// The most connections accepted in one wake-up before the acceptor yields.
const MAX_ACCEPTS_PER_WAKEUP: usize = 128;

/// The grace period servers are commonly given to close their connections gracefully before
/// [`ServerHandle::shutdown`] aborts the rest: 5 s (what every server example uses by
/// default). Long enough to flush a reply to a client that reads; a client that does not read
/// holds nothing up for longer.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long [`ServerHandle::shutdown`] waits, after aborting the connections still open at the
/// end of its grace period, for their protocols to handle `ConnectionLost`: 1 s. An aborted
/// transport stops at once; only a protocol busy elsewhere takes longer.
pub const SHUTDOWN_ABORT_WAIT: Duration = Duration::from_secs(1);

/// How often a retiring worker checks that its last task is gone.
const WORKER_RETIRE_POLL: Duration = Duration::from_millis(20);

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
    /// sockets are only bound, and connections are refused, until [`StartServing`] makes them
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

/// A listening socket a server can accept from.
pub(crate) trait Listen: Detach + Send + Unpin + 'static {
    /// An accepted connection, registered with the acceptor's runtime.
    type Io: StreamIo + Detach;

    /// Starts listening, on the acceptor's arbiter; nothing to do if it listens already. A
    /// socket that does not listen yet refuses connections.
    fn listen(&mut self, backlog: u32) -> io::Result<()>;

    /// Accepts a connection; pending forever while the socket does not listen.
    fn poll_accept(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<Self::Io>>;

    fn socket(&self) -> ServerSocket;

    /// Stops listening (Unix sockets also remove their path).
    fn close(self);
}

/// What an accepted connection goes through on its worker before its transport starts: nothing
/// for a plaintext server, the handshake for a TLS one.
pub(crate) trait Open<In>: Send + Sync + 'static {
    /// The transport's I/O object.
    type Io: StreamIo;

    /// Whether connections go through a handshake, which counts against
    /// [`max_handshakes`](Self::max_handshakes).
    fn handshakes(&self) -> bool;

    /// The most handshakes at once; past it the server stops accepting.
    fn max_handshakes(&self) -> usize;

    /// The I/O object at once, or the handshake that makes it (bounded by its own timeout).
    fn open(&self, io: In) -> Opening<Self::Io>;
}

pub(crate) enum Opening<IO> {
    Ready(IO),
    #[cfg_attr(
        not(feature = "tls"),
        expect(dead_code, reason = "only TLS has handshakes")
    )]
    Handshake(LocalBoxFuture<'static, io::Result<IO>>),
}

/// A plaintext server: each accepted socket becomes the transport's I/O object as it is.
pub(crate) struct Direct<F>(pub(crate) F);

impl<In, IO, F> Open<In> for Direct<F>
where
    IO: StreamIo,
    F: Fn(In) -> IO + Send + Sync + 'static,
{
    type Io = IO;

    fn handshakes(&self) -> bool {
        false
    }

    fn max_handshakes(&self) -> usize {
        usize::MAX
    }

    fn open(&self, io: In) -> Opening<IO> {
        Opening::Ready((self.0)(io))
    }
}

/// Moves a socket (a listener to the accepting worker, an accepted connection to another
/// worker) from one arbiter's runtime to another's: each actix arbiter runs its own tokio
/// runtime with its own reactor.
pub(crate) trait Detach: Sized {
    type Detached: Send + 'static;

    /// Deregisters the socket from the current runtime.
    fn detach(self) -> io::Result<Self::Detached>;

    /// Registers it with the current (worker) runtime.
    fn attach(detached: Self::Detached) -> io::Result<Self>;
}

/// A cheap, cloneable handle on a running server.
#[derive(Clone)]
pub struct ServerHandle {
    ports: Arc<ServerPorts>,
    addresses: Arc<[SocketAddress]>,
}

struct ServerPorts {
    close: Recipient<Close>,
    wait_closed: Recipient<WaitClosed>,
    sockets: Recipient<Sockets>,
    is_serving: Recipient<IsServing>,
    start_serving: Recipient<StartServing>,
    close_clients: Recipient<CloseClients>,
    abort_clients: Recipient<AbortClients>,
    stats: Recipient<GetServerStats>,
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

/// State shared by the server actor, the acceptor and the connections on every worker.
struct Shared {
    /// Connections accepted and not yet ended: on their way to a worker, in their handshake,
    /// or with a running transport. The connection limit counts these.
    live: AtomicUsize,
    /// Connections whose transport has stopped and whose protocol has not yet handled
    /// `ConnectionLost`; `WaitClosed` waits for these too.
    finishing: AtomicUsize,
    /// Connections in their handshake now.
    handshaking: AtomicUsize,
    max_handshakes: usize,
    accepted: AtomicU64,
    max_connections: usize,
    /// Whether the acceptor accepts (`StartServing`); cleared for good by `Close`.
    serving: AtomicBool,
    /// Set by `Close`: the acceptor closes the listening sockets and ends.
    closing: AtomicBool,
    /// The acceptor's task, woken by `StartServing`, `Close`, and a connection leaving while
    /// the limit holds the acceptor back.
    acceptor: AtomicWaker,
    clients: Mutex<HashMap<u64, Client>>,
    drain: Mutex<Drain>,
}

/// A connection in the server's books, from the moment it is accepted.
enum Client {
    /// Accepted, on its way to a worker; `CloseClients`/`AbortClients` sent meanwhile wait here,
    /// so a connection accepted just before them is not missed.
    Starting(Option<Shutdown>),
    /// In its handshake, which `CloseClients`/`AbortClients` end: there is no protocol yet to
    /// say goodbye to.
    Handshaking(AbortHandle),
    Running(TransportHandle),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    Close,
    Abort,
}

impl Client {
    fn shut_down(&mut self, how: Shutdown) {
        match self {
            Client::Starting(pending) => {
                // Abort overrides Close, as on a transport.
                if *pending != Some(Shutdown::Abort) {
                    *pending = Some(how);
                }
            }
            Client::Handshaking(handshake) => handshake.abort(),
            Client::Running(transport) => match how {
                Shutdown::Close => transport.do_send(Close),
                Shutdown::Abort => transport.do_send(Abort),
            },
        }
    }
}

#[derive(Default)]
struct Drain {
    closed: bool,
    /// Whether the acceptor still holds the server's sockets.
    listening: bool,
    /// Whether the sockets listen (from the start, or since the first `StartServing`).
    started: bool,
    /// `StartServing` replies once the sockets listen, so a connection made after it is served.
    start_waiters: Vec<oneshot::Sender<()>>,
    /// `Close` replies once the listening sockets are closed.
    close_waiters: Vec<oneshot::Sender<()>>,
    waiters: Vec<oneshot::Sender<()>>,
    workers: Vec<Arbiter>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// A handshake has ended, one way or the other: the acceptor may go on.
    fn handshake_ended(&self) {
        let before = self.handshaking.fetch_sub(1, SeqCst);
        if before >= self.max_handshakes {
            self.acceptor.wake();
        }
    }

    fn connection_stopped(&self, id: u64) {
        lock(&self.clients).remove(&id);
        let before = self.live.fetch_sub(1, SeqCst);
        if before >= self.max_connections {
            // The acceptor may be waiting for a free place.
            self.acceptor.wake();
        }
        if before == 1 {
            self.check_drained();
        }
    }

    /// A connection's transport has stopped: it leaves the books at once (the connection limit
    /// counts it no more), and `WaitClosed` waits on until its protocol has handled
    /// `ConnectionLost`.
    fn transport_stopped(self: &Arc<Self>, id: u64, handled: LostHandled) {
        self.finishing.fetch_add(1, SeqCst);
        let finished = Finished(self.clone());
        let wait = async move {
            handled.await;
            drop(finished);
        };
        // Polled on the connection's own arbiter. An arbiter that is stopping drops the future
        // unpolled, and the connection counts as finished then: nothing is left to handle it.
        if let Some(arbiter) = Arbiter::try_current() {
            arbiter.spawn(wait);
        }
        self.connection_stopped(id);
    }

    /// Whether `WaitClosed` may resolve: closed, not listening, and every connection ended,
    /// its protocol's `ConnectionLost` handled.
    fn drained(&self, drain: &Drain) -> bool {
        drain.closed
            && !drain.listening
            && self.live.load(SeqCst) == 0
            && self.finishing.load(SeqCst) == 0
    }

    /// The acceptor's sockets listen now: `StartServing` may reply.
    fn started_listening(&self) {
        let mut drain = lock(&self.drain);
        drain.started = true;
        for waiter in drain.start_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    /// The acceptor has closed the listening sockets: `Close` may reply.
    fn stopped_listening(&self) {
        let mut drain = lock(&self.drain);
        drain.listening = false;
        // A `StartServing` that waited for sockets that will never listen has its answer.
        drain.start_waiters.clear();
        for waiter in drain.close_waiters.drain(..) {
            let _ = waiter.send(());
        }
        drop(drain);
        self.check_drained();
    }

    /// Once closed and empty: wakes `WaitClosed` waiters and retires the workers.
    fn check_drained(&self) {
        let mut drain = lock(&self.drain);
        if self.drained(&drain) {
            for waiter in drain.waiters.drain(..) {
                let _ = waiter.send(());
            }
            for worker in drain.workers.drain(..) {
                retire(worker);
            }
        }
    }
}

/// Counts a connection finished when dropped: once its protocol has handled `ConnectionLost`,
/// or when nothing is left to poll for it.
struct Finished(Arc<Shared>);

impl Drop for Finished {
    fn drop(&mut self) {
        if self.0.finishing.fetch_sub(1, SeqCst) == 1 {
            self.0.check_drained();
        }
    }
}

/// Stops a worker arbiter once its last task is gone, so protocols still handling their
/// `ConnectionLost` finish first (stopping an arbiter drops every task on it).
fn retire(worker: Arbiter) {
    worker.spawn(async {
        while tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
            > 1
        {
            tokio::time::sleep(WORKER_RETIRE_POLL).await;
        }
        Arbiter::current().stop();
    });
}

type Factory<P> = Arc<dyn Fn() -> P + Send + Sync>;

/// The server actor: answers the server's messages. Accepting is the [`Acceptor`]'s job, on
/// another task.
struct Server {
    sockets: Vec<ServerSocket>,
    shared: Arc<Shared>,
    serving: bool,
    closed: bool,
}

/// Starts a server over bound, listening sockets.
///
/// The acceptor runs on the first worker arbiter (on the calling one with `workers(0)`), and
/// each connection it accepts for that worker starts right there: with one worker, or for one
/// connection in N with N workers, a connection never crosses threads, and its socket is
/// registered with one reactor once. The others are moved to their worker.
pub(crate) fn start<L, O, F, P>(
    listeners: Vec<L>,
    options: ServerOptions,
    open: O,
    factory: F,
) -> ServerHandle
where
    L: Listen,
    O: Open<L::Io>,
    F: Fn() -> P + Send + Sync + 'static,
    P: IntoProtocol + 'static,
{
    let addresses: Arc<[SocketAddress]> = listeners.iter().map(|l| l.socket().address).collect();
    let sockets = listeners.iter().map(Listen::socket).collect();
    let arbiters: Vec<Arbiter> = (0..options.workers).map(|_| Arbiter::new()).collect();
    let pool: Vec<ArbiterHandle> = arbiters.iter().map(Arbiter::handle).collect();
    let shared = Arc::new(Shared {
        live: AtomicUsize::new(0),
        finishing: AtomicUsize::new(0),
        handshaking: AtomicUsize::new(0),
        max_handshakes: open.max_handshakes(),
        accepted: AtomicU64::new(0),
        max_connections: options.max_connections,
        serving: AtomicBool::new(options.start_serving),
        closing: AtomicBool::new(false),
        acceptor: AtomicWaker::new(),
        clients: Mutex::new(HashMap::new()),
        drain: Mutex::new(Drain {
            listening: true,
            started: options.start_serving,
            workers: arbiters,
            ..Drain::default()
        }),
    });
    let mut acceptor = Acceptor {
        listeners: Vec::new(),
        listening: options.start_serving,
        backlog: options.backlog,
        factory: Arc::new(factory),
        open: Arc::new(open),
        config: options.stream.clone(),
        accept_backoff: options.accept_backoff,
        pool,
        next_worker: 0,
        next_id: 0,
        shared: shared.clone(),
        backoff: None,
    };
    match acceptor.pool.first().cloned() {
        None => {
            acceptor.listeners = listeners;
            actix_rt::spawn(acceptor);
        }
        Some(worker) => {
            let detached: io::Result<Vec<_>> = listeners.into_iter().map(Detach::detach).collect();
            let started = worker.spawn(async move {
                let attached: io::Result<Vec<L>> = match detached {
                    Ok(detached) => detached.into_iter().map(L::attach).collect(),
                    Err(err) => Err(err),
                };
                match attached {
                    Ok(listeners) => {
                        acceptor.listeners = listeners;
                        acceptor.await;
                    }
                    // Dropping the acceptor tells `Close` there is nothing left to close.
                    Err(err) => {
                        tracing::error!(%err, "the listening sockets could not move to a worker");
                    }
                }
            });
            if !started {
                // The acceptor, dropped unstarted, told `Close` there is nothing to close.
                tracing::error!("the first worker arbiter is gone; the server cannot accept");
            }
        }
    }
    let server = Server {
        sockets,
        serving: options.start_serving,
        shared,
        closed: false,
    };
    let addr = server.start();
    ServerHandle {
        ports: Arc::new(ServerPorts::new(&addr)),
        addresses,
    }
}

impl ServerPorts {
    fn new(addr: &Addr<Server>) -> Self {
        ServerPorts {
            close: addr.clone().recipient(),
            wait_closed: addr.clone().recipient(),
            sockets: addr.clone().recipient(),
            is_serving: addr.clone().recipient(),
            start_serving: addr.clone().recipient(),
            close_clients: addr.clone().recipient(),
            abort_clients: addr.clone().recipient(),
            stats: addr.clone().recipient(),
        }
    }
}

/// The accept loop: a task on the first worker arbiter (or the calling one), steered by the
/// server actor through [`Shared`]. Dropping it closes the listening sockets.
struct Acceptor<L: Listen, O, P> {
    listeners: Vec<L>,
    /// Whether the sockets listen; with `start_serving(false)` they are only bound until the
    /// first `StartServing`.
    listening: bool,
    backlog: u32,
    factory: Factory<P>,
    open: Arc<O>,
    config: StreamConfig,
    accept_backoff: Duration,
    /// The worker arbiters; the acceptor runs on the first. Empty with `workers(0)`.
    pool: Vec<ArbiterHandle>,
    next_worker: usize,
    next_id: u64,
    shared: Arc<Shared>,
    backoff: Option<Pin<Box<Sleep>>>,
}

impl<L: Listen, O: Open<L::Io>, P: IntoProtocol + 'static> Future for Acceptor<L, O, P> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.shared.acceptor.register(cx.waker());
        if this.shared.closing.load(SeqCst) {
            return Poll::Ready(());
        }
        if !this.shared.serving.load(SeqCst) {
            // `StartServing` wakes us.
            return Poll::Pending;
        }
        if !this.listening {
            this.listen();
        }
        if let Some(backoff) = &mut this.backoff {
            if backoff.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.backoff = None;
        }
        this.accept(cx)
    }
}

impl<L: Listen, O, P> Drop for Acceptor<L, O, P> {
    fn drop(&mut self) {
        for listener in self.listeners.drain(..) {
            listener.close();
        }
        self.shared.stopped_listening();
    }
}

impl<L: Listen, O: Open<L::Io>, P: IntoProtocol + 'static> Acceptor<L, O, P> {
    /// Makes the bound sockets listen, at the first `StartServing`. A socket that cannot
    /// (another socket took its port meanwhile) is closed, and the error logged.
    fn listen(&mut self) {
        for mut listener in std::mem::take(&mut self.listeners) {
            match listener.listen(self.backlog) {
                Ok(()) => self.listeners.push(listener),
                Err(err) => {
                    tracing::error!(%err, "a server socket could not listen: closed");
                    listener.close();
                }
            }
        }
        self.listening = true;
        self.shared.started_listening();
    }

    fn accept(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        let mut accepted = 0;
        for index in 0..self.listeners.len() {
            loop {
                if self.shared.live.load(SeqCst) >= self.shared.max_connections
                    || self.shared.handshaking.load(SeqCst) >= self.shared.max_handshakes
                {
                    // Leave the rest in the backlog; a closing connection or an ended
                    // handshake wakes us (the waker was registered before this check).
                    return Poll::Pending;
                }
                if accepted == MAX_ACCEPTS_PER_WAKEUP {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                match self.listeners[index].poll_accept(cx) {
                    Poll::Ready(Ok(stream)) => {
                        accepted += 1;
                        self.dispatch(stream);
                    }
                    Poll::Ready(Err(err)) if is_per_connection(&err) => {
                        tracing::debug!(%err, "accept failed for one connection");
                    }
                    Poll::Ready(Err(err)) => {
                        tracing::warn!(
                            %err,
                            backoff = ?self.accept_backoff,
                            "accept failed; backing off"
                        );
                        let mut backoff = Box::pin(tokio::time::sleep(self.accept_backoff));
                        let _ = backoff.as_mut().poll(cx);
                        self.backoff = Some(backoff);
                        return Poll::Pending;
                    }
                    Poll::Pending => break,
                }
            }
        }
        Poll::Pending
    }

    fn dispatch(&mut self, io: L::Io) {
        let id = self.next_id;
        self.next_id += 1;
        self.shared.live.fetch_add(1, SeqCst);
        self.shared.accepted.fetch_add(1, SeqCst);
        if self.open.handshakes() {
            self.shared.handshaking.fetch_add(1, SeqCst);
        }
        let factory = self.factory.clone();
        let open = self.open.clone();
        let shared = self.shared.clone();
        let config = self.config.clone();
        let worker = match self.pool.len() {
            0 => 0,
            workers => self.next_worker % workers,
        };
        self.next_worker = self.next_worker.wrapping_add(1);
        if worker == 0 {
            // This arbiter's own share: no move, no second registration.
            return open_connection(io, &*open, factory, shared, id, config);
        }
        // On its way to another worker: in the books already, so that `CloseClients` or
        // `AbortClients` handled meanwhile reaches it.
        lock(&self.shared.clients).insert(id, Client::Starting(None));
        let detached = match io.detach() {
            Ok(detached) => detached,
            Err(err) => {
                tracing::warn!(%err, "accepted connection could not be moved to a worker");
                abandon(&shared, &*open, id);
                return;
            }
        };
        let fallback = (shared.clone(), open.clone());
        let sent = self.pool[worker].spawn_fn(move || match L::Io::attach(detached) {
            Ok(io) => open_connection(io, &*open, factory, shared, id, config),
            Err(err) => {
                tracing::warn!(%err, "accepted connection could not be set up");
                abandon(&shared, &*open, id);
            }
        });
        if !sent {
            tracing::warn!("worker arbiter is gone; connection dropped");
            abandon(&fallback.0, &*fallback.1, id);
        }
    }
}

/// Accept errors that concern one connection only (Linux's `accept(2)` passes a pending
/// network error of the new connection through); anything else means the process is short of
/// resources, and the server backs off.
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::PermissionDenied
            | io::ErrorKind::TimedOut
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::NetworkDown
    )
}

/// Takes a connection that will never start out of the books.
fn abandon<In, O: Open<In>>(shared: &Shared, open: &O, id: u64) {
    if open.handshakes() {
        shared.handshake_ended();
    }
    shared.connection_stopped(id);
}

/// Runs on the connection's arbiter: the handshake, if there is one, then the transport and the
/// protocol.
fn open_connection<In, O: Open<In>, P: IntoProtocol + 'static>(
    io: In,
    open: &O,
    factory: Factory<P>,
    shared: Arc<Shared>,
    id: u64,
    config: StreamConfig,
) {
    let handshake = match open.open(io) {
        Opening::Ready(io) => return start_transport(io, factory, shared, id, config),
        Opening::Handshake(handshake) => handshake,
    };
    let (abort, registration) = AbortHandle::new_pair();
    {
        let mut clients = lock(&shared.clients);
        if let Some(Client::Starting(Some(_))) = clients.get(&id) {
            // Closed or aborted on its way here: it ends before its handshake begins.
            drop(clients);
            shared.handshake_ended();
            shared.connection_stopped(id);
            return;
        }
        clients.insert(id, Client::Handshaking(abort));
    }
    actix_rt::spawn(async move {
        let outcome = Abortable::new(handshake, registration).await;
        shared.handshake_ended();
        match outcome {
            Ok(Ok(io)) => start_transport(io, factory, shared, id, config),
            Ok(Err(err)) => {
                tracing::debug!(%err, "handshake failed");
                shared.connection_stopped(id);
            }
            Err(_aborted) => shared.connection_stopped(id),
        }
    });
}

/// Starts the transport and the protocol. A factory that panics ends only this connection: it
/// is closed (the peer sees its end) and leaves the books, and the failure is logged.
fn start_transport<IO: StreamIo, P: IntoProtocol>(
    io: IO,
    factory: Factory<P>,
    shared: Arc<Shared>,
    id: u64,
    config: StreamConfig,
) {
    let protocol = match crate::factory::make(|| factory()) {
        Ok(protocol) => protocol,
        Err(err) => {
            let peer = io.extra_info(keys::PEERNAME);
            let peer = peer
                .as_ref()
                .and_then(ExtraInfo::as_address)
                .map_or_else(|| "unknown".to_owned(), ToString::to_string);
            tracing::error!(%peer, %err, "connection closed");
            // Out of the books before the peer can see the end.
            shared.connection_stopped(id);
            drop(io);
            return;
        }
    };
    let on_stopped = shared.clone();
    let (transport, _) = StreamTransport::start(
        io,
        config,
        protocol,
        Some(Box::new(move |handled| {
            on_stopped.transport_stopped(id, handled)
        })),
    );
    // The transport has not run yet (it is polled after this returns), so it cannot have
    // stopped and left the books already.
    let mut clients = lock(&shared.clients);
    if let Some(Client::Starting(Some(how))) = clients.get(&id) {
        let how = *how;
        let mut running = Client::Running(transport.clone());
        running.shut_down(how);
    }
    clients.insert(id, Client::Running(transport));
}

impl Actor for Server {
    type Context = Context<Self>;
}

impl Handler<Close> for Server {
    type Result = ResponseFuture<()>;

    /// Replies once the listening sockets are closed: a connection attempt after `Close` is
    /// refused.
    fn handle(&mut self, _: Close, _: &mut Context<Self>) -> Self::Result {
        if !self.closed {
            self.closed = true;
            self.serving = false;
            self.sockets.clear();
            self.shared.serving.store(false, SeqCst);
            self.shared.closing.store(true, SeqCst);
            self.shared.acceptor.wake();
            lock(&self.shared.drain).closed = true;
            self.shared.check_drained();
        }
        let mut drain = lock(&self.shared.drain);
        if !drain.listening {
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        drain.close_waiters.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<WaitClosed> for Server {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: WaitClosed, _: &mut Context<Self>) -> Self::Result {
        let mut drain = lock(&self.shared.drain);
        if self.shared.drained(&drain) {
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        drain.waiters.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<Sockets> for Server {
    type Result = MessageResult<Sockets>;

    fn handle(&mut self, _: Sockets, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.sockets.clone())
    }
}

impl Handler<IsServing> for Server {
    type Result = bool;

    fn handle(&mut self, _: IsServing, _: &mut Context<Self>) -> bool {
        self.serving
    }
}

impl Handler<StartServing> for Server {
    type Result = ResponseFuture<()>;

    /// Replies once the sockets listen, so that a connection made after the reply is served.
    fn handle(&mut self, _: StartServing, _: &mut Context<Self>) -> Self::Result {
        if !self.closed && !self.serving {
            self.serving = true;
            self.shared.serving.store(true, SeqCst);
            self.shared.acceptor.wake();
        }
        let mut drain = lock(&self.shared.drain);
        if self.closed || drain.started || !drain.listening {
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        drain.start_waiters.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}

impl Handler<CloseClients> for Server {
    type Result = ();

    fn handle(&mut self, _: CloseClients, _: &mut Context<Self>) {
        for client in lock(&self.shared.clients).values_mut() {
            client.shut_down(Shutdown::Close);
        }
    }
}

impl Handler<AbortClients> for Server {
    type Result = ();

    fn handle(&mut self, _: AbortClients, _: &mut Context<Self>) {
        for client in lock(&self.shared.clients).values_mut() {
            client.shut_down(Shutdown::Abort);
        }
    }
}

impl Handler<GetServerStats> for Server {
    type Result = MessageResult<GetServerStats>;

    fn handle(&mut self, _: GetServerStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(ServerStats {
            connections: self.shared.live.load(SeqCst),
            accepted: self.shared.accepted.load(SeqCst),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_exhaustion_backs_off_and_per_connection_errors_do_not() {
        // errno values of Linux: EMFILE 24, ENFILE 23, ENOBUFS 105, ENOMEM 12.
        for errno in [24, 23, 105, 12] {
            let err = io::Error::from_raw_os_error(errno);
            assert!(!is_per_connection(&err), "{err} must back off");
        }
        // ECONNABORTED 103, EINTR 4, EPERM 1, EHOSTUNREACH 113, ENETUNREACH 101.
        for errno in [103, 4, 1, 113, 101] {
            let err = io::Error::from_raw_os_error(errno);
            assert!(is_per_connection(&err), "{err} concerns one connection");
        }
    }
}
