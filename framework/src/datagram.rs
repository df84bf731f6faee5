//! The vocabulary of datagram transports (UDP and Unix datagram sockets): their commands, the
//! events their protocols receive, and the two handles, [`DatagramHandle`] and
//! [`DatagramProtocolHandle`].

use std::{fmt, future::Future, io, sync::Arc};

use actix::{Actor, Addr, Context, Handler, MailboxError, Message, Recipient};
use bytes::Bytes;
use derive_more::{Display, Error};

use crate::dev::DeliveryAcked;
use crate::stopped::StoppedNotice;
use crate::{
    Abort, Ack, Close, ConnectionLost, ConnectionMade, ExtraInfo, GetExtraInfo, GetStats,
    GetWriteBufferLimits, GetWriteBufferSize, IsClosing, IsReading, PauseReading, PauseWriting,
    ResumeReading, ResumeWriting, SetWriteBufferLimits, SocketAddress, SocketInfo, TransportStats,
    keys,
};

/// Sends one datagram (asyncio's `sendto`). Never blocks the sender.
///
/// `addr` is where to: required on an endpoint that is not connected, and `None` (or the
/// connected address itself) on a connected one. Any other address is refused with a
/// [`SendToError`] and the endpoint stays open. A zero-length datagram is sent as one.
///
/// With `do_send` it is fire-and-forget: a refusal is logged, an error from the socket reaches the
/// protocol as [`ErrorReceived`]. With `send` the reply is the datagram's one outcome: `Ok(())`
/// once the kernel took it (which says nothing about its arrival), or the error that stopped it.
/// A datagram the kernel cannot take at once is queued, counted against the write-buffer limits
/// (so a protocol with write flow receives `PauseWriting`), and sent in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendTo {
    /// The datagram.
    pub data: Bytes,
    /// Where to send it; `None` on a connected endpoint.
    pub addr: Option<SocketAddress>,
}

impl SendTo {
    /// A datagram for `addr`.
    pub fn new(data: impl Into<Bytes>, addr: impl Into<SocketAddress>) -> Self {
        SendTo {
            data: data.into(),
            addr: Some(addr.into()),
        }
    }

    /// A datagram for the address a connected endpoint is connected to.
    pub fn connected(data: impl Into<Bytes>) -> Self {
        SendTo {
            data: data.into(),
            addr: None,
        }
    }
}

impl Message for SendTo {
    type Result = io::Result<()>;
}

/// Switches a datagram endpoint to another protocol (asyncio's `set_protocol`); the reply is the
/// previous protocol. The new one receives `ConnectionMade` first, then `PauseWriting` if
/// writing is paused, then every datagram not yet delivered; the old one receives nothing more.
#[derive(Debug, Message)]
#[rtype(result = "DatagramProtocolHandle")]
pub struct SetDatagramProtocol(pub DatagramProtocolHandle);

impl SetDatagramProtocol {
    /// A switch to this protocol: an actor's `Addr` or a [`DatagramProtocolHandle`].
    pub fn new(protocol: impl IntoDatagramProtocol) -> Self {
        SetDatagramProtocol(protocol.into_datagram_protocol().1)
    }
}

/// One datagram from a peer (asyncio's `datagram_received`): one per datagram, never merged
/// with another nor split, zero-length datagrams included.
///
/// The [`Ack`] bounds what the endpoint holds for its protocol: it keeps a few datagrams in
/// flight (the `read_window` of its configuration) and reads the socket again only as their
/// acknowledgements come back, by default when each handler returns. A protocol that keeps the
/// `Ack`s, or pauses reading, leaves datagrams in the kernel's receive buffer, and once that is
/// full the kernel drops what arrives: memory never grows, as UDP promises no delivery anyway.
#[derive(Debug, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub struct DatagramReceived {
    /// The datagram's bytes; may be empty.
    pub data: Bytes,
    /// The sender's address ([`UnixAddress::Unnamed`](crate::UnixAddress::Unnamed) for an
    /// unbound Unix-datagram sender, which cannot be answered).
    pub addr: SocketAddress,
    /// The acknowledgement; dropping it lets the endpoint read another datagram.
    pub ack: Ack,
}

impl DatagramReceived {
    /// A delivery of one datagram from `addr`. For transports and tests.
    pub fn new(data: Bytes, addr: SocketAddress, ack: Ack) -> Self {
        DatagramReceived { data, addr, ack }
    }
}

/// An error the socket reported (asyncio's `error_received`): an ICMP error such as port
/// unreachable (`ConnectionRefused`) on a connected endpoint, a datagram too large to send,
/// a datagram too large to receive. The endpoint stays open and goes on reading.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ErrorReceived(pub io::Error);

/// Why a datagram was refused before reaching the socket; the endpoint stays open.
///
/// The reply to an acknowledged [`SendTo`] carries it inside an `io::Error` of kind
/// `InvalidInput`; find it with [`SendToError::of`].
#[derive(Debug, Display, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendToError {
    /// An endpoint that is not connected needs an address for each datagram.
    #[display("no address given and the endpoint is not connected")]
    NoAddress,
    /// A connected endpoint (or one with a default destination, with `allow_broadcast`) sends
    /// only to that address.
    #[display("invalid address {given}: this endpoint sends only to {connected}")]
    NotConnectedAddress {
        /// The address asked for.
        given: SocketAddress,
        /// The address the endpoint is connected to.
        connected: SocketAddress,
    },
    /// The address is of another family than the socket's (a path for a UDP socket, an IP
    /// address for a Unix one).
    #[display("address {_0} does not suit this socket's family")]
    WrongFamily(#[error(not(source))] SocketAddress),
    /// The address cannot be sent to: an unnamed Unix socket (an unbound sender, which cannot
    /// be answered) or one in the abstract namespace.
    #[display("address {_0} cannot be sent to")]
    Unaddressable(#[error(not(source))] SocketAddress),
}

impl SendToError {
    /// The `SendToError` behind an `io::Error`, if there is one.
    pub fn of(err: &io::Error) -> Option<&SendToError> {
        err.get_ref()?.downcast_ref::<SendToError>()
    }
}

impl From<SendToError> for io::Error {
    fn from(err: SendToError) -> Self {
        io::Error::new(io::ErrorKind::InvalidInput, err)
    }
}

/// What makes an actor a datagram transport: it handles every datagram command, plus
/// [`DeliveryAcked`]. Implemented automatically.
pub trait DatagramTransport:
    Actor<Context = Context<Self>>
    + Handler<SendTo>
    + Handler<Close>
    + Handler<Abort>
    + Handler<IsClosing>
    + Handler<PauseReading>
    + Handler<ResumeReading>
    + Handler<IsReading>
    + Handler<GetWriteBufferSize>
    + Handler<GetWriteBufferLimits>
    + Handler<SetWriteBufferLimits>
    + Handler<SetDatagramProtocol>
    + Handler<GetExtraInfo>
    + Handler<GetStats>
    + Handler<DeliveryAcked>
{
}

impl<T> DatagramTransport for T where
    T: Actor<Context = Context<T>>
        + Handler<SendTo>
        + Handler<Close>
        + Handler<Abort>
        + Handler<IsClosing>
        + Handler<PauseReading>
        + Handler<ResumeReading>
        + Handler<IsReading>
        + Handler<GetWriteBufferSize>
        + Handler<GetWriteBufferLimits>
        + Handler<SetWriteBufferLimits>
        + Handler<SetDatagramProtocol>
        + Handler<GetExtraInfo>
        + Handler<GetStats>
        + Handler<DeliveryAcked>
{
}

/// The address of a running datagram endpoint, cheap to clone (one reference count).
///
/// Commands go with [`send`](Self::send) or [`do_send`](Self::do_send), or through the
/// shortcuts. The endpoint's own address and, if it is connected, its peer's are kept in the
/// handle, so [`sockname`](Self::sockname) and [`peername`](Self::peername) answer at once.
#[derive(Clone)]
pub struct DatagramHandle {
    inner: Arc<sealed::Ports>,
}

mod sealed {
    use super::*;

    /// The recipients behind a [`DatagramHandle`], one per command, and the addresses.
    #[derive(Debug)]
    pub struct Ports {
        pub(super) sockname: Option<SocketAddress>,
        pub(super) peername: Option<SocketAddress>,
        pub(super) send_to: Recipient<SendTo>,
        pub(super) close: Recipient<Close>,
        pub(super) abort: Recipient<Abort>,
        pub(super) is_closing: Recipient<IsClosing>,
        pub(super) pause_reading: Recipient<PauseReading>,
        pub(super) resume_reading: Recipient<ResumeReading>,
        pub(super) is_reading: Recipient<IsReading>,
        pub(super) get_write_buffer_size: Recipient<GetWriteBufferSize>,
        pub(super) get_write_buffer_limits: Recipient<GetWriteBufferLimits>,
        pub(super) set_write_buffer_limits: Recipient<SetWriteBufferLimits>,
        pub(super) set_protocol: Recipient<SetDatagramProtocol>,
        pub(super) get_extra_info: Recipient<GetExtraInfo>,
        pub(super) stopped: StoppedNotice,
        pub(super) get_stats: Recipient<GetStats>,
        pub(super) acked: Recipient<DeliveryAcked>,
    }

    /// Which recipient of [`Ports`] a command goes to; sealed, so the command set is closed.
    pub trait Routed: Message<Result: Send> + Send + Sized + 'static {
        fn recipient(ports: &Ports) -> &Recipient<Self>;
    }
}

impl DatagramHandle {
    /// The handle of the datagram transport `addr`, bound to `sockname` and connected to
    /// `peername`. For transports.
    pub fn new<A: DatagramTransport>(
        addr: Addr<A>,
        sockname: Option<SocketAddress>,
        peername: Option<SocketAddress>,
    ) -> Self {
        DatagramHandle {
            inner: Arc::new(sealed::Ports {
                sockname,
                peername,
                send_to: addr.clone().recipient(),
                close: addr.clone().recipient(),
                abort: addr.clone().recipient(),
                is_closing: addr.clone().recipient(),
                pause_reading: addr.clone().recipient(),
                resume_reading: addr.clone().recipient(),
                is_reading: addr.clone().recipient(),
                get_write_buffer_size: addr.clone().recipient(),
                get_write_buffer_limits: addr.clone().recipient(),
                set_write_buffer_limits: addr.clone().recipient(),
                set_protocol: addr.clone().recipient(),
                get_extra_info: addr.clone().recipient(),
                stopped: StoppedNotice::default(),
                get_stats: addr.clone().recipient(),
                acked: addr.recipient(),
            }),
        }
    }

    /// The acknowledgement of delivery `seq`, going back to this endpoint. For transports.
    pub fn ack(&self, seq: u64) -> Ack {
        Ack::to(self.inner.acked.clone(), seq)
    }

    /// The endpoint's own address (`sockname`); `None` for an unbound Unix-datagram socket.
    pub fn sockname(&self) -> Option<&SocketAddress> {
        self.inner.sockname.as_ref()
    }

    /// The address the endpoint is connected to (`peername`), or `None` if it is not connected.
    pub fn peername(&self) -> Option<&SocketAddress> {
        self.inner.peername.as_ref()
    }

    /// The endpoint's own IP address and port, for a UDP endpoint.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.sockname()?.as_inet()
    }

    /// Whether the transport actor is still running.
    pub fn is_alive(&self) -> bool {
        self.inner.close.connected()
    }

    /// Whether both handles address the same endpoint.
    pub fn same_transport(&self, other: &DatagramHandle) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Sends a command without waiting for its reply; dropped if the endpoint has stopped,
    /// with a warning logged once per endpoint (debug level after).
    pub fn do_send<M: DatagramCommand>(&self, msg: M) {
        let recipient = M::recipient(&self.inner);
        if !recipient.connected() {
            self.inner.stopped.dropped::<M>("datagram endpoint");
            return;
        }
        recipient.do_send(msg);
    }

    /// Sends a command; resolves with its reply, or `MailboxError::Closed` once the endpoint
    /// has stopped.
    pub fn send<M: DatagramCommand>(
        &self,
        msg: M,
    ) -> impl Future<Output = Result<M::Result, MailboxError>> + use<M> {
        M::recipient(&self.inner).send(msg)
    }

    /// Sends `data` to `addr`, fire-and-forget ([`SendTo`]).
    pub fn send_to(&self, data: impl Into<Bytes>, addr: impl Into<SocketAddress>) {
        self.do_send(SendTo::new(data, addr));
    }

    /// Sends `data` to the connected peer, fire-and-forget ([`SendTo`] without an address).
    pub fn send_connected(&self, data: impl Into<Bytes>) {
        self.do_send(SendTo::connected(data));
    }

    /// Sends a datagram and resolves once the kernel took it, or with what stopped it: a
    /// [`SendToError`], a socket error, or a [`WriteError`](crate::WriteError) (closing, aborted, stopped).
    pub fn send_to_acked(&self, msg: SendTo) -> impl Future<Output = io::Result<()>> + use<> {
        let request = self.send(msg);
        async move { crate::transport::flatten(request.await) }
    }

    /// Closes gracefully ([`Close`]): stops reading, sends what is queued, then
    /// `ConnectionLost(None)`.
    pub fn close(&self) {
        self.do_send(Close);
    }

    /// Closes at once, discarding queued datagrams ([`Abort`]).
    pub fn abort(&self) {
        self.do_send(Abort);
    }

    /// Stops reading ([`PauseReading`]); datagrams wait in the kernel, which drops what does
    /// not fit.
    pub fn pause_reading(&self) {
        self.do_send(PauseReading);
    }

    /// Resumes reading ([`ResumeReading`]).
    pub fn resume_reading(&self) {
        self.do_send(ResumeReading);
    }

    /// Switches to another protocol ([`SetDatagramProtocol`]).
    pub fn set_protocol(&self, protocol: impl IntoDatagramProtocol) {
        self.do_send(SetDatagramProtocol::new(protocol));
    }

    /// One value of extra information, or `None` for an unknown key or a stopped endpoint.
    pub fn get_extra_info(
        &self,
        name: &'static str,
    ) -> impl Future<Output = Option<ExtraInfo>> + use<> {
        let request = self.send(GetExtraInfo::new(name));
        async move { request.await.ok().flatten() }
    }

    /// The socket's descriptor, family and type (`socket`).
    pub fn socket(&self) -> impl Future<Output = Option<SocketInfo>> + use<> {
        let info = self.get_extra_info(keys::SOCKET);
        async move { info.await?.as_socket().copied() }
    }

    /// The endpoint's counters; `None` once it has stopped.
    pub fn stats(&self) -> impl Future<Output = Option<TransportStats>> + use<> {
        let request = self.send(GetStats);
        async move { request.await.ok() }
    }

    /// Whether `Close` or `Abort` has been handled; `true` for a stopped endpoint.
    pub fn is_closing(&self) -> impl Future<Output = bool> + use<> {
        let request = self.send(IsClosing);
        async move { request.await.unwrap_or(true) }
    }
}

impl fmt::Debug for DatagramHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramHandle")
            .field("sockname", &self.inner.sockname)
            .field("peername", &self.inner.peername)
            .field("alive", &self.is_alive())
            .finish()
    }
}

/// A message a [`DatagramHandle`] can carry: every datagram command.
pub trait DatagramCommand: sealed::Routed {}

macro_rules! datagram_commands {
    ($($msg:ty => $field:ident;)*) => {$(
        impl sealed::Routed for $msg {
            fn recipient(ports: &sealed::Ports) -> &Recipient<Self> {
                &ports.$field
            }
        }

        impl DatagramCommand for $msg {}
    )*};
}

datagram_commands! {
    SendTo => send_to;
    Close => close;
    Abort => abort;
    IsClosing => is_closing;
    PauseReading => pause_reading;
    ResumeReading => resume_reading;
    IsReading => is_reading;
    GetWriteBufferSize => get_write_buffer_size;
    GetWriteBufferLimits => get_write_buffer_limits;
    SetWriteBufferLimits => set_write_buffer_limits;
    SetDatagramProtocol => set_protocol;
    GetExtraInfo => get_extra_info;
    GetStats => get_stats;
}

/// What makes an actor a datagram protocol: it handles [`ConnectionMade<DatagramHandle>`],
/// [`DatagramReceived`], [`ErrorReceived`] and [`ConnectionLost`]. Implemented automatically.
///
/// # Event order
///
/// * `ConnectionMade<DatagramHandle>` once, first. The endpoint reads nothing until its handler
///   has returned (or its `Ack` is dropped), so a `PauseReading` sent from it is honoured
///   before the first datagram.
/// * `DatagramReceived` once per datagram, in the order the socket gave them, a few in flight
///   at most (see [`DatagramReceived`]), and `ErrorReceived` for each error the socket reports,
///   in between. Neither ends the endpoint.
/// * `PauseWriting` / `ResumeWriting`, strictly alternating, with
///   [`DatagramProtocolHandle::with_write_flow`].
/// * `ConnectionLost` once, last: `None` after `Close` or `Abort`, `Some(err)` if the socket
///   failed for good.
pub trait DatagramProtocol:
    Actor<Context = Context<Self>>
    + Handler<ConnectionMade<DatagramHandle>>
    + Handler<DatagramReceived>
    + Handler<ErrorReceived>
    + Handler<ConnectionLost>
{
}

impl<T> DatagramProtocol for T where
    T: Actor<Context = Context<T>>
        + Handler<ConnectionMade<DatagramHandle>>
        + Handler<DatagramReceived>
        + Handler<ErrorReceived>
        + Handler<ConnectionLost>
{
}

/// The address of a datagram protocol actor, cheap to clone (one reference count). Datagram
/// transports deliver through it, always with `do_send`.
#[derive(Clone)]
pub struct DatagramProtocolHandle {
    routes: Arc<Routes>,
}

struct Routes {
    made: Recipient<ConnectionMade<DatagramHandle>>,
    datagram: Recipient<DatagramReceived>,
    error: Recipient<ErrorReceived>,
    lost: Recipient<ConnectionLost>,
    write_flow: Option<(Recipient<PauseWriting>, Recipient<ResumeWriting>)>,
}

impl DatagramProtocolHandle {
    /// The handle of a datagram protocol; `PauseWriting`/`ResumeWriting` are not delivered.
    pub fn new<A: DatagramProtocol>(addr: Addr<A>) -> Self {
        Self::with_routes(addr, None)
    }

    /// The handle of a datagram protocol that also receives [`PauseWriting`] and
    /// [`ResumeWriting`].
    pub fn with_write_flow<A>(addr: Addr<A>) -> Self
    where
        A: DatagramProtocol + Handler<PauseWriting> + Handler<ResumeWriting>,
    {
        let flow = (addr.clone().recipient(), addr.clone().recipient());
        Self::with_routes(addr, Some(flow))
    }

    fn with_routes<A: DatagramProtocol>(
        addr: Addr<A>,
        write_flow: Option<(Recipient<PauseWriting>, Recipient<ResumeWriting>)>,
    ) -> Self {
        DatagramProtocolHandle {
            routes: Arc::new(Routes {
                made: addr.clone().recipient(),
                datagram: addr.clone().recipient(),
                error: addr.clone().recipient(),
                lost: addr.recipient(),
                write_flow,
            }),
        }
    }

    /// Whether the protocol actor is still running. An endpoint whose protocol stopped aborts.
    pub fn is_alive(&self) -> bool {
        self.routes.lost.connected()
    }

    /// Whether both handles address the same protocol.
    pub fn same_protocol(&self, other: &DatagramProtocolHandle) -> bool {
        Arc::ptr_eq(&self.routes, &other.routes) || self.routes.lost == other.routes.lost
    }

    /// Whether the protocol receives `PauseWriting` and `ResumeWriting`.
    pub fn handles_write_flow(&self) -> bool {
        self.routes.write_flow.is_some()
    }

    /// Delivers `ConnectionMade`.
    pub fn connection_made(&self, msg: ConnectionMade<DatagramHandle>) {
        self.routes.made.do_send(msg);
    }

    /// Delivers `DatagramReceived`.
    pub fn datagram_received(&self, msg: DatagramReceived) {
        self.routes.datagram.do_send(msg);
    }

    /// Delivers `ErrorReceived`.
    pub fn error_received(&self, msg: ErrorReceived) {
        self.routes.error.do_send(msg);
    }

    /// Delivers `ConnectionLost`.
    pub fn connection_lost(&self, msg: ConnectionLost) {
        self.routes.lost.do_send(msg);
    }

    /// Delivers `PauseWriting`, if the protocol asked for it.
    pub fn pause_writing(&self) {
        if let Some((pause, _)) = &self.routes.write_flow {
            pause.do_send(PauseWriting);
        }
    }

    /// Delivers `ResumeWriting`, if the protocol asked for it.
    pub fn resume_writing(&self) {
        if let Some((_, resume)) = &self.routes.write_flow {
            resume.do_send(ResumeWriting);
        }
    }
}

impl fmt::Debug for DatagramProtocolHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramProtocolHandle")
            .field("alive", &self.is_alive())
            .field("write_flow", &self.handles_write_flow())
            .finish()
    }
}

/// Anything a datagram endpoint can be attached to: an actor's `Addr` or a ready
/// [`DatagramProtocolHandle`].
pub trait IntoDatagramProtocol {
    /// What the caller gets back: the `Addr`, or the handle itself.
    type Output;

    /// The caller's address of the protocol, and the handle the transport delivers through.
    fn into_datagram_protocol(self) -> (Self::Output, DatagramProtocolHandle);
}

impl<A: DatagramProtocol> IntoDatagramProtocol for Addr<A> {
    type Output = Addr<A>;

    fn into_datagram_protocol(self) -> (Addr<A>, DatagramProtocolHandle) {
        (self.clone(), DatagramProtocolHandle::new(self))
    }
}

impl IntoDatagramProtocol for DatagramProtocolHandle {
    type Output = DatagramProtocolHandle;

    fn into_datagram_protocol(self) -> (Self, Self) {
        (self.clone(), self)
    }
}
