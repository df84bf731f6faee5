//! The accept loop: listening sockets (bound, then listening at `StartServing`), the connection
//! limit that leaves connections in the backlog, the back-off when the process
//! runs out of descriptors or memory, and the hand-out of connections to the workers.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, atomic::Ordering::SeqCst},
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use actix_rt::ArbiterHandle;
use switchboard_framework::IntoProtocol;
use tokio::time::Sleep;

use super::{
    connections::{Client, Factory, Open, Shared, abandon, lock, open_connection},
    handle::ServerSocket,
};
use crate::stream::{StreamConfig, StreamIo};

/// The most connections accepted in one wake-up before the acceptor yields.
const MAX_ACCEPTS_PER_WAKEUP: usize = 128;

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

/// The accept loop: a task on the first worker arbiter (or the calling one), steered by the
/// server actor through [`Shared`]. Dropping it closes the listening sockets.
pub(super) struct Acceptor<L: Listen, O, P> {
    pub(super) listeners: Vec<L>,
    /// Whether the sockets listen; with `start_serving(false)` they are only bound until the
    /// first `StartServing`.
    pub(super) listening: bool,
    pub(super) backlog: u32,
    pub(super) factory: Factory<P>,
    pub(super) open: Arc<O>,
    pub(super) config: StreamConfig,
    pub(super) accept_backoff: Duration,
    /// The worker arbiters; the acceptor runs on the first. Empty with `workers(0)`.
    pub(super) pool: Vec<ArbiterHandle>,
    pub(super) next_worker: usize,
    pub(super) next_id: u64,
    pub(super) shared: Arc<Shared>,
    pub(super) backoff: Option<Pin<Box<Sleep>>>,
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
                // Not the handshake limit: a connection that has sent nothing holds no handshake
                // place (see `tls::serve`), so silent ones must not stop the accepting either.
                if self.shared.live.load(SeqCst) >= self.shared.max_connections {
                    // Leave the rest in the backlog; a closing connection wakes us (the waker
                    // was registered before this check).
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
                abandon(&shared, id);
                return;
            }
        };
        let fallback = shared.clone();
        let sent = self.pool[worker].spawn_fn(move || match L::Io::attach(detached) {
            Ok(io) => open_connection(io, &*open, factory, shared, id, config),
            Err(err) => {
                tracing::warn!(%err, "accepted connection could not be set up");
                abandon(&shared, id);
            }
        });
        if !sent {
            tracing::warn!("worker arbiter is gone; connection dropped");
            abandon(&fallback, id);
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
