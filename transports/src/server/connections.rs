//! The server's books: every connection from the moment it is accepted until its protocol has
//! handled `ConnectionLost`. How it opens on its worker (handshake, transport, protocol), how
//! many are live (the connection limit), `CloseClients`/`AbortClients` reaching each, and the
//! drain `Close` and `WaitClosed` wait for, after which the workers retire.

use std::{
    collections::HashMap,
    io,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst},
    },
    time::Duration,
};

use actix::Arbiter;
use futures::{
    future::{AbortHandle, Abortable, LocalBoxFuture},
    task::AtomicWaker,
};
use switchboard_framework::dev::LostHandled;
use switchboard_framework::{Abort, Close, ExtraInfo, IntoProtocol, TransportHandle, keys};
use tokio::sync::oneshot;

use crate::stream::{StreamConfig, StreamIo, StreamTransport};

/// How often a retiring worker checks that its last task is gone.
const WORKER_RETIRE_POLL: Duration = Duration::from_millis(20);

/// What an accepted connection goes through on its worker before its transport starts: nothing
/// for a plaintext server, the handshake for a TLS one.
pub(crate) trait Open<In>: Send + Sync + 'static {
    /// The transport's I/O object.
    type Io: StreamIo;

    /// The I/O object at once, or the handshake that makes it (bounded by its own timeouts and
    /// limit).
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

    fn open(&self, io: In) -> Opening<IO> {
        Opening::Ready((self.0)(io))
    }
}

/// State shared by the server actor, the acceptor and the connections on every worker.
pub(super) struct Shared {
    /// Connections accepted and not yet ended: on their way to a worker, in their handshake,
    /// or with a running transport. The connection limit counts these.
    pub(super) live: AtomicUsize,
    /// Connections whose transport has stopped and whose protocol has not yet handled
    /// `ConnectionLost`; `WaitClosed` waits for these too.
    pub(super) finishing: AtomicUsize,
    pub(super) accepted: AtomicU64,
    pub(super) max_connections: usize,
    /// Whether the acceptor accepts (`StartServing`); cleared for good by `Close`.
    pub(super) serving: AtomicBool,
    /// Set by `Close`: the acceptor closes the listening sockets and ends.
    pub(super) closing: AtomicBool,
    /// The acceptor's task, woken by `StartServing`, `Close`, and a connection leaving while
    /// the limit holds the acceptor back.
    pub(super) acceptor: AtomicWaker,
    pub(super) clients: Mutex<HashMap<u64, Client>>,
    pub(super) drain: Mutex<Drain>,
}

/// A connection in the server's books, from the moment it is accepted.
pub(super) enum Client {
    /// Accepted, on its way to a worker; `CloseClients`/`AbortClients` sent meanwhile wait here,
    /// so a connection accepted just before them is not missed.
    Starting(Option<Shutdown>),
    /// In its handshake, which `CloseClients`/`AbortClients` end: there is no protocol yet to
    /// say goodbye to.
    Handshaking(AbortHandle),
    Running(TransportHandle),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Shutdown {
    Close,
    Abort,
}

impl Client {
    pub(super) fn shut_down(&mut self, how: Shutdown) {
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
pub(super) struct Drain {
    pub(super) closed: bool,
    /// Whether the acceptor still holds the server's sockets.
    pub(super) listening: bool,
    /// Whether the sockets listen (from the start, or since the first `StartServing`).
    pub(super) started: bool,
    /// `StartServing` replies once the sockets listen, so a connection made after it is served.
    pub(super) start_waiters: Vec<oneshot::Sender<()>>,
    /// `Close` replies once the listening sockets are closed.
    pub(super) close_waiters: Vec<oneshot::Sender<()>>,
    pub(super) waiters: Vec<oneshot::Sender<()>>,
    pub(super) workers: Vec<Arbiter>,
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
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
    pub(super) fn drained(&self, drain: &Drain) -> bool {
        drain.closed
            && !drain.listening
            && self.live.load(SeqCst) == 0
            && self.finishing.load(SeqCst) == 0
    }

    /// The acceptor's sockets listen now: `StartServing` may reply.
    pub(super) fn started_listening(&self) {
        let mut drain = lock(&self.drain);
        drain.started = true;
        for waiter in drain.start_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    /// The acceptor has closed the listening sockets: `Close` may reply.
    pub(super) fn stopped_listening(&self) {
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
    pub(super) fn check_drained(&self) {
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

pub(super) type Factory<P> = Arc<dyn Fn() -> P + Send + Sync>;

/// Takes a connection that will never start out of the books.
pub(super) fn abandon(shared: &Shared, id: u64) {
    shared.connection_stopped(id);
}

/// Runs on the connection's arbiter: the handshake, if there is one, then the transport and the
/// protocol.
pub(super) fn open_connection<In, O: Open<In>, P: IntoProtocol + 'static>(
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
            shared.connection_stopped(id);
            return;
        }
        clients.insert(id, Client::Handshaking(abort));
    }
    actix_rt::spawn(async move {
        let outcome = Abortable::new(handshake, registration).await;
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
