//! The server actor: [`start`] sets a server up (its workers, acceptor and books) and the actor
//! answers the [`ServerHandle`]'s messages.

use std::{
    collections::HashMap,
    io,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst},
    },
};

use actix::{Actor, Addr, Arbiter, Context, Handler, MessageResult, ResponseFuture};
use actix_rt::ArbiterHandle;
use futures::task::AtomicWaker;
use switchboard_framework::{Close, IntoProtocol, SocketAddress};
use tokio::sync::oneshot;

use super::{
    acceptor::{Acceptor, Detach, Listen},
    connections::{Drain, Open, Shared, Shutdown, lock},
    handle::{
        AbortClients, CloseClients, GetServerStats, IsServing, ServerHandle, ServerPorts,
        ServerSocket, ServerStats, Sockets, StartServing, WaitClosed,
    },
    options::ServerOptions,
};

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

// Here rather than next to `ServerPorts`: the handle need not know the actor's type.
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
