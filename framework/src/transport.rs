//! [`TransportHandle`]: how protocols (and anyone else) address a transport, whatever its kind.

use std::{
    any::Any,
    borrow::Cow,
    fmt,
    future::Future,
    io, net,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context as TaskContext, Poll},
};

use actix::{Actor, Addr, Context, Handler, MailboxError, Message};
use bytes::Bytes;
use futures::future::BoxFuture;

use crate::dev::{DeliveryAcked, EofDecided};
use crate::stopped::StoppedNotice;
use crate::{
    Abort, CanWriteEof, Close, Drain, ExtraInfo, GetExtraInfo, GetProtocol, GetStats,
    GetWriteBufferLimits, GetWriteBufferSize, IntoProtocol, IsClosing, IsReading, PauseReading,
    ResumeReading, SetProtocol, SetWriteBufferLimits, SocketAddress, SocketInfo, StartTls,
    TlsError, TlsErrorKind, Write, WriteEof, WriteError, WriteVectored, keys,
};

macro_rules! transport_commands {
    ($($msg:ident => $do_send:ident, $send:ident;)*) => {
        /// What makes an actor a stream transport: it handles every transport command, plus the
        /// two transport-side answers ([`DeliveryAcked`], [`EofDecided`]) that protocols send by
        /// dropping tokens.
        ///
        /// Implemented automatically for every actor with those handlers; build a
        /// [`TransportHandle`] for one with [`TransportHandle::new`].
        pub trait Transport:
            Actor<Context = Context<Self>>
            $(+ Handler<$msg>)*
            + Handler<DeliveryAcked>
            + Handler<EofDecided>
        {
        }

        impl<T> Transport for T where
            T: Actor<Context = Context<T>>
            $(+ Handler<$msg>)*
            + Handler<DeliveryAcked>
            + Handler<EofDecided>
        {
        }

        pub(crate) mod port {
            use super::*;

            /// The type-erased address of a transport actor: one method per command.
            pub trait Port: Send + Sync + 'static {
                fn connected(&self) -> bool;
                fn lasting(&self) -> &Lasting;
                fn stopped(&self) -> &StoppedNotice;
                fn as_any(&self) -> &dyn Any;
                fn same(&self, other: &dyn Port) -> bool;
                fn acked(&self, msg: DeliveryAcked);
                fn eof_decided(&self, msg: EofDecided);
                $(
                    fn $do_send(&self, msg: $msg);
                    fn $send(
                        &self,
                        msg: $msg,
                    ) -> BoxFuture<'static, Result<<$msg as Message>::Result, MailboxError>>;
                )*
            }

            /// Routes one command type through a [`Port`]; sealed, so the command set is closed.
            pub trait Command: Message<Result: Send> + Send + Sized + 'static {
                fn do_send_via(self, port: &dyn Port);
                fn send_via(self, port: &dyn Port)
                    -> BoxFuture<'static, Result<Self::Result, MailboxError>>;
            }
        }

        impl<A: Transport> port::Port for Bound<A> {
            fn connected(&self) -> bool {
                self.addr.connected()
            }

            fn lasting(&self) -> &Lasting {
                &self.lasting
            }

            fn stopped(&self) -> &StoppedNotice {
                &self.stopped
            }

            fn as_any(&self) -> &dyn Any {
                &self.addr
            }

            fn same(&self, other: &dyn port::Port) -> bool {
                other.as_any().downcast_ref::<Addr<A>>().is_some_and(|other| *other == self.addr)
            }

            fn acked(&self, msg: DeliveryAcked) {
                self.addr.do_send(msg);
            }

            fn eof_decided(&self, msg: EofDecided) {
                self.addr.do_send(msg);
            }

            $(
                fn $do_send(&self, msg: $msg) {
                    self.addr.do_send(msg);
                }

                fn $send(
                    &self,
                    msg: $msg,
                ) -> BoxFuture<'static, Result<<$msg as Message>::Result, MailboxError>> {
                    Box::pin(self.addr.send(msg))
                }
            )*
        }

        $(
            impl port::Command for $msg {
                fn do_send_via(self, port: &dyn port::Port) {
                    port.$do_send(self)
                }

                fn send_via(
                    self,
                    port: &dyn port::Port,
                ) -> BoxFuture<'static, Result<Self::Result, MailboxError>> {
                    port.$send(self)
                }
            }

            impl TransportCommand for $msg {}
        )*
    };
}

transport_commands! {
    Write => do_send_write, send_write;
    WriteVectored => do_send_write_vectored, send_write_vectored;
    WriteEof => do_send_write_eof, send_write_eof;
    Drain => do_send_drain, send_drain;
    CanWriteEof => do_send_can_write_eof, send_can_write_eof;
    Close => do_send_close, send_close;
    Abort => do_send_abort, send_abort;
    IsClosing => do_send_is_closing, send_is_closing;
    PauseReading => do_send_pause_reading, send_pause_reading;
    ResumeReading => do_send_resume_reading, send_resume_reading;
    IsReading => do_send_is_reading, send_is_reading;
    GetWriteBufferSize => do_send_get_write_buffer_size, send_get_write_buffer_size;
    GetWriteBufferLimits => do_send_get_write_buffer_limits, send_get_write_buffer_limits;
    SetWriteBufferLimits => do_send_set_write_buffer_limits, send_set_write_buffer_limits;
    SetProtocol => do_send_set_protocol, send_set_protocol;
    StartTls => do_send_start_tls, send_start_tls;
    GetProtocol => do_send_get_protocol, send_get_protocol;
    GetExtraInfo => do_send_get_extra_info, send_get_extra_info;
    GetStats => do_send_get_stats, send_get_stats;
}

/// A message a [`TransportHandle`] can carry: every transport command of the framework.
pub trait TransportCommand: port::Command {}

/// What a [`TransportHandle`] points at: the transport actor's address, and the extra
/// information that outlives it.
struct Bound<A: Actor> {
    addr: Addr<A>,
    lasting: Lasting,
    stopped: StoppedNotice,
}

/// Extra information a transport keeps answering after it has stopped, as asyncio answers
/// `get_extra_info` until the end: what the transport recorded while it ran (its peer's address
/// at connect or accept, before a reset can take it away) and when it let go of its I/O object
/// (everything but descriptors, which are closed by then).
///
/// Every connection carries one, inside its handle's allocation, so it is kept to 48 bytes: an
/// internet peer's address has a slot of its own, and the rest, recorded only as the transport
/// stops, goes to a list allocated then (one `ExtraInfo` is 176 bytes). That keeps an idle
/// connection's handle in a 96-byte allocation.
#[derive(Debug, Default)]
pub struct Lasting(Mutex<LastingValues>);

/// Extra-info values by key.
type Values = Vec<(Cow<'static, str>, ExtraInfo)>;

#[derive(Debug, Default)]
struct LastingValues {
    peer: Option<net::SocketAddr>,
    /// Boxed: 8 bytes of every handle, where a bare list takes 24.
    rest: Option<Box<Values>>,
}

impl Lasting {
    fn lock(&self) -> MutexGuard<'_, LastingValues> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, name: Cow<'static, str>, value: ExtraInfo) {
        let mut values = self.lock();
        if name == keys::PEERNAME
            && let Some(peer) = value.as_address().and_then(SocketAddress::as_inet)
        {
            values.peer = Some(peer);
            return;
        }
        let rest = values.rest.get_or_insert_default();
        match rest.iter_mut().find(|(known, _)| *known == name) {
            Some((_, known)) => *known = value,
            None => rest.push((name, value)),
        }
    }

    fn get(&self, name: &str) -> Option<ExtraInfo> {
        let values = self.lock();
        if name == keys::PEERNAME
            && let Some(peer) = values.peer
        {
            return Some(ExtraInfo::from(peer));
        }
        values
            .rest
            .as_ref()?
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, value)| value.clone())
    }

    fn has(&self, name: &str) -> bool {
        let values = self.lock();
        (name == keys::PEERNAME && values.peer.is_some())
            || values
                .rest
                .as_ref()
                .is_some_and(|rest| rest.iter().any(|(known, _)| known == name))
    }
}

/// A cheap, cloneable address of a running transport (one reference count), the same type for
/// every stream transport: TCP, Unix sockets, and the kinds that build on the same driver.
///
/// `do_send` is fire-and-forget; `send` returns a [`TransportRequest`] that resolves with the
/// command's reply. Both keep order: commands sent through one handle (or its clones, from one
/// actor) are handled in the order sent, whichever of the two carried them, because transports
/// run with an unbounded mailbox and `send` never waits for capacity.
///
/// A command sent after the transport stopped is dropped with a logged warning (`do_send`) or
/// resolves to `MailboxError::Closed` (`send`).
#[derive(Clone)]
pub struct TransportHandle {
    port: Arc<dyn port::Port>,
}

impl TransportHandle {
    /// The handle of a transport actor.
    pub fn new<A: Transport>(addr: Addr<A>) -> Self {
        TransportHandle {
            port: Arc::new(Bound {
                addr,
                lasting: Lasting::default(),
                stopped: StoppedNotice::default(),
            }),
        }
    }

    /// For transports: records `value` as what `name` answers once the transport has stopped
    /// (every clone of this handle shares it). A transport records its peer's address when it
    /// starts, while a reset cannot have taken it away yet, and the rest of its extra
    /// information (but descriptors) when it lets go of its I/O object.
    pub fn retain_extra_info(&self, name: impl Into<Cow<'static, str>>, value: ExtraInfo) {
        self.port.lasting().record(name.into(), value);
    }

    /// What the transport recorded with [`retain_extra_info`](Self::retain_extra_info) for
    /// `name`: the answer to `GetExtraInfo` once it has stopped.
    pub fn retained_extra_info(&self, name: &str) -> Option<ExtraInfo> {
        self.port.lasting().get(name)
    }

    /// Whether the transport recorded a value for `name` already.
    pub fn has_retained_extra_info(&self, name: &str) -> bool {
        self.port.lasting().has(name)
    }

    pub(crate) fn port(&self) -> &dyn port::Port {
        &*self.port
    }

    /// Sends a command without waiting for its reply; dropped if the transport has stopped,
    /// with a warning logged once per transport (debug level after).
    pub fn do_send<M: TransportCommand>(&self, msg: M) {
        if !self.port.connected() {
            self.port.stopped().dropped::<M>("transport");
            return;
        }
        msg.do_send_via(&*self.port);
    }

    /// Sends a command; the request resolves with its reply.
    pub fn send<M: TransportCommand>(&self, msg: M) -> TransportRequest<M::Result> {
        TransportRequest {
            inner: msg.send_via(&*self.port),
        }
    }

    /// Whether the transport actor is still running.
    pub fn is_alive(&self) -> bool {
        self.port.connected()
    }

    /// Whether both handles address the same transport actor.
    pub fn same_transport(&self, other: &TransportHandle) -> bool {
        Arc::ptr_eq(&self.port, &other.port) || self.port.same(&*other.port)
    }

    /// Writes `data`, fire-and-forget ([`Write`]).
    pub fn write(&self, data: impl Into<Bytes>) {
        self.do_send(Write(data.into()));
    }

    /// Writes `data` and resolves once every byte reached the kernel, or with the error that
    /// stopped it: a socket error, or one carrying a [`WriteError`] (closing, aborted, stalled,
    /// transport stopped).
    pub fn write_acked<D: Into<Bytes>>(
        &self,
        data: D,
    ) -> impl Future<Output = io::Result<()>> + use<D> {
        let request = self.send(Write(data.into()));
        async move { flatten(request.await) }
    }

    /// Writes `data` once the write buffer has room: waits for [`Drain`], then writes,
    /// fire-and-forget. A producer outside an actor that awaits it between writes keeps at most
    /// one write over the high-water mark, with no yielding of its own: asyncio's
    /// `writer.write(data); await writer.drain()`, the other way round so the first write goes
    /// at once. Fails with the error that ended the connection.
    pub fn write_ready<D: Into<Bytes>>(
        &self,
        data: D,
    ) -> impl Future<Output = io::Result<()>> + use<D> {
        let drained = self.send(Drain);
        let transport = self.clone();
        async move {
            flatten(drained.await)?;
            transport.write(data);
            Ok(())
        }
    }

    /// Shuts the write side down after flushing ([`WriteEof`]), fire-and-forget.
    pub fn write_eof(&self) {
        self.do_send(WriteEof);
    }

    /// Closes gracefully ([`Close`]).
    pub fn close(&self) {
        self.do_send(Close);
    }

    /// Closes at once, discarding the write buffer ([`Abort`]).
    pub fn abort(&self) {
        self.do_send(Abort);
    }

    /// Stops deliveries ([`PauseReading`]).
    pub fn pause_reading(&self) {
        self.do_send(PauseReading);
    }

    /// Resumes deliveries ([`ResumeReading`]).
    pub fn resume_reading(&self) {
        self.do_send(ResumeReading);
    }

    /// Switches to another protocol, handing it `leftover` first ([`SetProtocol`]).
    /// Returns what the protocol's [`IntoProtocol`] gives back, usually its `Addr`.
    pub fn set_protocol<P: IntoProtocol>(
        &self,
        protocol: P,
        leftover: impl Into<Bytes>,
    ) -> P::Output {
        let (output, handle) = protocol.into_protocol(self);
        self.do_send(SetProtocol {
            protocol: handle,
            leftover: leftover.into(),
        });
        output
    }

    /// Upgrades the connection to TLS in place ([`StartTls`]) and resolves when the handshake
    /// has ended; a transport that stopped first gives a
    /// [`ConnectionEnded`](TlsErrorKind::ConnectionEnded) error.
    pub fn start_tls(&self, start: StartTls) -> impl Future<Output = Result<(), TlsError>> + use<> {
        let request = self.send(start);
        async move {
            request.await.unwrap_or_else(|_| {
                Err(TlsError::new(
                    TlsErrorKind::ConnectionEnded,
                    "the transport stopped before the handshake ended",
                ))
            })
        }
    }

    /// One value of extra information, or `None` for a key the transport does not know. After
    /// the transport has stopped, the values it retained answer (its addresses, and the TLS
    /// keys), as in asyncio; the descriptor (`socket`, `pipe`) is gone by then.
    pub fn get_extra_info(
        &self,
        name: &'static str,
    ) -> impl Future<Output = Option<ExtraInfo>> + use<> {
        let request = self.send(GetExtraInfo::new(name));
        let port = self.port.clone();
        async move {
            match request.await {
                Ok(value) => value,
                Err(_stopped) => port.lasting().get(name),
            }
        }
    }

    /// The remote address (`peername`).
    pub fn peername(&self) -> impl Future<Output = Option<SocketAddress>> + use<> {
        let info = self.get_extra_info(keys::PEERNAME);
        async move { info.await?.as_address().cloned() }
    }

    /// The local address (`sockname`).
    pub fn sockname(&self) -> impl Future<Output = Option<SocketAddress>> + use<> {
        let info = self.get_extra_info(keys::SOCKNAME);
        async move { info.await?.as_address().cloned() }
    }

    /// The remote IP address and port, for internet sockets.
    pub fn peer_addr(&self) -> impl Future<Output = Option<net::SocketAddr>> + use<> {
        let peer = self.peername();
        async move { peer.await?.as_inet() }
    }

    /// The local IP address and port, for internet sockets.
    pub fn local_addr(&self) -> impl Future<Output = Option<net::SocketAddr>> + use<> {
        let local = self.sockname();
        async move { local.await?.as_inet() }
    }

    /// The socket's descriptor, family and type (`socket`).
    pub fn socket(&self) -> impl Future<Output = Option<SocketInfo>> + use<> {
        let info = self.get_extra_info(keys::SOCKET);
        async move { info.await?.as_socket().copied() }
    }

    /// The negotiated cipher of a TLS transport (`cipher`).
    pub fn cipher(&self) -> impl Future<Output = Option<crate::CipherInfo>> + use<> {
        let info = self.get_extra_info(keys::CIPHER);
        async move { info.await?.as_cipher().cloned() }
    }

    /// The certificate the peer of a TLS transport sent (`peercert`); `None` also when it sent
    /// none.
    pub fn peer_certificate(&self) -> impl Future<Output = Option<crate::Certificate>> + use<> {
        let info = self.get_extra_info(keys::PEERCERT);
        async move { info.await?.as_peer_cert().flatten().cloned() }
    }

    /// A snapshot of the TLS session (`ssl_object`); `None` on a plaintext transport.
    pub fn tls_session(&self) -> impl Future<Output = Option<crate::TlsSession>> + use<> {
        let info = self.get_extra_info(keys::SSL_OBJECT);
        async move { info.await?.as_tls_session().cloned() }
    }

    /// Whether `Close` or `Abort` has been handled; `true` for a stopped transport.
    pub fn is_closing(&self) -> impl Future<Output = bool> + use<> {
        let request = self.send(IsClosing);
        async move { request.await.unwrap_or(true) }
    }
}

/// Flattens the reply to an acknowledged write into one `io::Result`.
pub(crate) fn flatten(reply: Result<io::Result<()>, MailboxError>) -> io::Result<()> {
    reply.map_err(|_| io::Error::from(WriteError::Stopped))?
}

impl fmt::Debug for TransportHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportHandle")
            .field("alive", &self.is_alive())
            .finish()
    }
}

/// The reply to a command sent with [`TransportHandle::send`].
///
/// Dropping it before it resolves cancels the reply and, as with actix's own requests, the
/// command is then skipped if it has not been handled yet.
#[must_use = "a request does nothing unless awaited"]
pub struct TransportRequest<R> {
    inner: BoxFuture<'static, Result<R, MailboxError>>,
}

impl<R> Future for TransportRequest<R> {
    type Output = Result<R, MailboxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<R> fmt::Debug for TransportRequest<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransportRequest").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection's handle carries a `Lasting`: 48 bytes keep an idle connection's handle
    /// allocation (with the reference counts and the actor's address) at 88 bytes, a 96-byte
    /// malloc chunk.
    #[test]
    fn what_outlives_a_transport_costs_an_idle_connection_48_bytes() {
        assert!(
            std::mem::size_of::<Lasting>() <= 48,
            "{}",
            std::mem::size_of::<Lasting>()
        );
    }

    #[test]
    fn an_internet_peer_has_its_slot_and_the_rest_a_list() {
        let lasting = Lasting::default();
        let peer: net::SocketAddr = "127.0.0.1:4321".parse().unwrap();
        lasting.record(keys::PEERNAME.into(), peer.into());
        assert!(lasting.lock().rest.is_none(), "no allocation for the peer");
        assert_eq!(lasting.get(keys::PEERNAME), Some(ExtraInfo::from(peer)));
        lasting.record(keys::SOCKNAME.into(), peer.into());
        assert!(lasting.has(keys::SOCKNAME) && lasting.has(keys::PEERNAME));
        assert!(!lasting.has(keys::CIPHER));
        assert_eq!(lasting.get(keys::SOCKNAME), Some(ExtraInfo::from(peer)));
        assert_eq!(lasting.get(keys::CIPHER), None);
    }
}
