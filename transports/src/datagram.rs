//! The generic datagram transport: one actor over any [`DatagramSocket`] that implements every
//! guarantee of a switchboard datagram endpoint once, for [UDP](crate::udp) and
//! [Unix datagram sockets](crate::unix_datagram).
//!
//! * **Datagrams stay datagrams.** Each datagram read is one [`DatagramReceived`], never merged
//!   with another nor split; a zero-length datagram is delivered as one. A datagram longer than
//!   [`DatagramConfig::max_datagram_size`] is not delivered cut short: it is dropped, and the
//!   protocol receives an [`ErrorReceived`] saying so.
//! * **Errors do not end the endpoint.** What the socket reports (an ICMP port unreachable on a
//!   connected endpoint, a datagram too large to send) reaches [`ErrorReceived`], and the
//!   endpoint goes on.
//! * **Read flow control costs the kernel, never our memory.** At most
//!   [`DatagramConfig::read_window`] datagrams are in flight to the protocol; the endpoint reads
//!   the socket again only as their acknowledgements come back. A slow or paused protocol
//!   leaves datagrams in the kernel's receive buffer, which drops what does not fit.
//! * **Write flow control.** A datagram the kernel cannot take at once (a Unix-datagram peer
//!   whose queue is full) is queued and counted against the write-buffer limits, and a
//!   protocol built with `with_write_flow` receives `PauseWriting` / `ResumeWriting`.
//!
//! An endpoint is created paused, its protocol receives `ConnectionMade<DatagramHandle>`, and
//! reading starts once that is acknowledged. `Close` stops reading, sends what is queued (for
//! up to [`DatagramConfig::close_timeout`]), then `ConnectionLost(None)`; `Abort` drops the
//! queue. The protocol actor stopping aborts the endpoint.

use std::{
    cell::RefCell,
    fmt,
    future::Future,
    io,
    pin::Pin,
    rc::Rc,
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use actix::{
    Actor, ActorContext, AsyncContext, Context, Handler, Message, MessageResult,
    dev::{MessageResponse, OneshotSender},
};
use bytes::Bytes;
use futures::future::LocalBoxFuture;
use switchboard_core::datagram::{
    DatagramCore, DatagramEvent, DatagramSettings, Outbound, SendTicket,
};
use switchboard_framework::dev::{DeliveryAcked, ProtocolWatch, WriteReply, duplicate_error};
use switchboard_framework::{
    Abort, Close, ConnectionLost, ConnectionMade, DEFAULT_MAX_WRITE_BUFFER, DatagramHandle,
    DatagramProtocolHandle, DatagramReceived, ErrorReceived, ExtraInfo, GetExtraInfo, GetStats,
    GetWriteBufferLimits, GetWriteBufferSize, IntoDatagramProtocol, IsClosing, IsReading,
    PauseReading, ResumeReading, SendTo, SendToError, SetDatagramProtocol, SetWriteBufferLimits,
    SocketAddress, WriteBufferLimits, WriteError, dev::Handles,
};
use tokio::{
    io::ReadBuf,
    time::{Instant, Sleep},
};

// The defaults are the core's, so the mock endpoint of `switchboard_framework::testing` has them
// too.
pub use switchboard_core::datagram::{
    DEFAULT_CLOSE_TIMEOUT, DEFAULT_MAX_DATAGRAM_SIZE, DEFAULT_READ_WINDOW,
};

/// The settings of a datagram endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatagramConfig {
    /// The write-buffer limits at the start (default 64 KiB / 16 KiB).
    pub write_buffer_limits: WriteBufferLimits,
    /// See [`DEFAULT_MAX_DATAGRAM_SIZE`].
    pub max_datagram_size: usize,
    /// See [`DEFAULT_READ_WINDOW`].
    pub read_window: usize,
    /// See [`DEFAULT_CLOSE_TIMEOUT`].
    pub close_timeout: Duration,
    /// The most bytes the send queue may hold ([`DEFAULT_MAX_WRITE_BUFFER`]): a datagram that
    /// would take it past is refused with
    /// [`WriteError::BufferFull`]; the endpoint
    /// goes on.
    pub max_write_buffer: usize,
}

impl Default for DatagramConfig {
    fn default() -> Self {
        DatagramConfig {
            write_buffer_limits: WriteBufferLimits::default(),
            max_datagram_size: DEFAULT_MAX_DATAGRAM_SIZE,
            read_window: DEFAULT_READ_WINDOW,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            max_write_buffer: DEFAULT_MAX_WRITE_BUFFER,
        }
    }
}

impl DatagramConfig {
    /// Sets the most bytes the send queue may hold. A maximum below the high-water mark is
    /// refused with `InvalidInput`.
    pub fn max_write_buffer(mut self, max: usize) -> std::io::Result<Self> {
        self.max_write_buffer =
            switchboard_core::check_max_write_buffer(max, self.write_buffer_limits.high())?;
        Ok(self)
    }

    /// Sets the initial write-buffer limits.
    pub fn write_buffer_limits(mut self, limits: WriteBufferLimits) -> Self {
        self.write_buffer_limits = limits;
        self
    }

    /// Sets the longest datagram received whole (at least 1 byte).
    pub fn max_datagram_size(mut self, size: usize) -> Self {
        self.max_datagram_size = size.max(1);
        self
    }

    /// Sets how many datagrams may be in flight to the protocol (at least 1).
    pub fn read_window(mut self, window: usize) -> Self {
        self.read_window = window.max(1);
        self
    }

    /// Sets how long `Close` waits for queued datagrams.
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }
}

/// A datagram socket a [`DatagramTransportActor`] can drive: tokio's `UdpSocket` and `UnixDatagram`
/// (through the wrappers of [`udp`](crate::udp) and [`unix_datagram`](crate::unix_datagram)).
pub trait DatagramSocket: Sized + 'static {
    /// Receives one datagram into `buf`, with its sender's address.
    fn poll_recv_from(
        &self,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<SocketAddress>>;

    /// Whether this socket can send to `addr` at all: an address of its family, in a form it
    /// can reach.
    fn check_destination(&self, addr: &SocketAddress) -> Result<(), SendToError>;

    /// Sends one datagram to `addr`, which passed [`check_destination`](Self::check_destination).
    fn poll_send_to(
        &self,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
        addr: &SocketAddress,
    ) -> Poll<io::Result<usize>>;

    /// Sends one datagram to the connected peer.
    fn poll_send(&self, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>>;

    /// Waits for the socket to report an error (`EPOLLERR`), such as an ICMP port unreachable.
    fn error_ready(self: Rc<Self>) -> LocalBoxFuture<'static, io::Result<()>>;

    /// Takes the socket's pending error (`SO_ERROR`), and forgets the readiness that announced
    /// it, so the next [`error_ready`](Self::error_ready) waits for a new one.
    fn take_error(&self) -> io::Result<Option<io::Error>>;

    /// The local address (`sockname`).
    fn sockname(&self) -> Option<SocketAddress>;

    /// The connected peer's address (`peername`).
    fn peername(&self) -> Option<SocketAddress>;

    /// Extra information for `name` beyond `sockname` and `peername` (at least `socket`).
    fn extra_info(&self, name: &str) -> Option<ExtraInfo>;
}

/// The most datagrams (or errors) read in one wake-up of the driver, before it yields.
const MAX_EVENTS_PER_WAKEUP: usize = 64;

thread_local! {
    /// Every endpoint on a thread receives into this one buffer and copies each datagram out at
    /// its exact size, so an idle endpoint holds no receive buffer and a 10-byte datagram does
    /// not pin 256 KiB.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The reply to a [`SendTo`]: its outcome now, or once its queued datagram is sent.
pub struct SendReceipt(Receipt);

enum Receipt {
    Done(io::Result<()>),
    Queued(SendTicket<WriteReply>),
}

impl<A: Actor> MessageResponse<A, SendTo> for SendReceipt {
    fn handle(self, _: &mut A::Context, tx: Option<OneshotSender<io::Result<()>>>) {
        let Some(tx) = tx else {
            return;
        };
        match self.0 {
            Receipt::Done(result) => {
                let _ = tx.send(result);
            }
            Receipt::Queued(ticket) => ticket.register(WriteReply(tx)),
        }
    }
}

impl fmt::Debug for SendReceipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Receipt::Done(result) => f.debug_tuple("SendReceipt").field(result).finish(),
            Receipt::Queued(ticket) => f.debug_tuple("SendReceipt").field(ticket).finish(),
        }
    }
}

/// Where a datagram goes: its own address, or the endpoint's default peer.
type Destination = Option<SocketAddress>;

/// The datagram transport actor: the glue between a [`DatagramCore`], which makes every
/// decision, and the socket. Start one with [`start`].
pub struct DatagramTransportActor<S: DatagramSocket> {
    socket: Option<Rc<S>>,
    me: DatagramHandle,
    protocol: ProtocolWatch<DatagramProtocolHandle>,
    core: DatagramCore<Destination, WriteReply>,
    max_datagram_size: usize,
    /// Where a send without an address goes: the connected peer, or (with `allow_broadcast`)
    /// the default destination of an endpoint that is not connected.
    default_peer: Option<SocketAddress>,
    connected: bool,
    error_watch: Option<LocalBoxFuture<'static, io::Result<()>>>,
    /// The core's next deadline, while it has one.
    timer: Option<Pin<Box<Sleep>>>,
}

/// The number of datagram endpoints alive in this process (started and not yet stopped), for
/// leak checks and monitoring.
pub fn live_endpoints() -> usize {
    crate::driver::DATAGRAMS.count()
}

/// Starts a datagram transport over `socket` on the current arbiter and attaches the protocol
/// that `protocol` makes (call `.start()` inside it, so the protocol lives on the same arbiter).
///
/// `default_peer` is where sends without an address go; `connected` says whether the socket is
/// connected to it (otherwise it is only a default destination, as with `allow_broadcast`).
/// `protocol` is called here, in the caller's code: a panic in it propagates to the caller, with
/// `socket` dropped (`udp::bind` and the other openers turn it into a
/// [`FactoryPanicked`](switchboard_framework::FactoryPanicked) error instead).
///
/// # Panics
///
/// Outside an actix arbiter (under `#[tokio::main]`, say), with a message that says so.
pub fn start<S, P>(
    socket: S,
    default_peer: Option<SocketAddress>,
    connected: bool,
    config: DatagramConfig,
    protocol: impl FnOnce() -> P,
) -> (DatagramHandle, P::Output)
where
    S: DatagramSocket,
    P: IntoDatagramProtocol,
{
    crate::runtime::assert_arbiter("datagram::start");
    let ctx = crate::driver::unbounded_context();
    let peername = if connected {
        socket.peername().or_else(|| default_peer.clone())
    } else {
        None
    };
    let me = DatagramHandle::new(ctx.address(), socket.sockname(), peername);
    let (output, protocol) = protocol().into_datagram_protocol();
    let mut core = DatagramCore::new(DatagramSettings {
        write_buffer_limits: config.write_buffer_limits,
        read_window: config.read_window,
        max_datagram_size: config.max_datagram_size,
        close_timeout: config.close_timeout,
        max_write_buffer: config.max_write_buffer,
    });
    core.set_handles(Handles {
        write_flow: protocol.handles_write_flow(),
        timeouts: false,
    });
    let transport = DatagramTransportActor {
        socket: Some(Rc::new(socket)),
        me: me.clone(),
        protocol: ProtocolWatch::new(protocol),
        core,
        max_datagram_size: config.max_datagram_size,
        default_peer,
        connected,
        error_watch: None,
        timer: None,
    };
    ctx.run(transport);
    (me, output)
}

impl<S: DatagramSocket> DatagramTransportActor<S> {
    /// Where a datagram for `addr` goes, or why it may not.
    fn destination(&self, addr: Option<SocketAddress>) -> Result<Destination, SendToError> {
        match (addr, &self.default_peer) {
            (None, None) => Err(SendToError::NoAddress),
            (None, Some(_)) => Ok(None),
            (Some(given), Some(peer)) if given != *peer => Err(SendToError::NotConnectedAddress {
                given,
                connected: peer.clone(),
            }),
            (Some(_), Some(_)) => Ok(None),
            (Some(given), None) => match &self.socket {
                Some(socket) => socket.check_destination(&given).map(|()| Some(given)),
                None => Ok(Some(given)),
            },
        }
    }

    fn poll_send_one(
        &self,
        cx: &mut TaskContext<'_>,
        data: &[u8],
        addr: Option<&SocketAddress>,
    ) -> Poll<io::Result<usize>> {
        let Some(socket) = &self.socket else {
            return Poll::Ready(Err(WriteError::Stopped.into()));
        };
        match (addr, &self.default_peer) {
            (Some(addr), _) => socket.poll_send_to(cx, data, addr),
            (None, Some(_)) if self.connected => socket.poll_send(cx, data),
            (None, Some(peer)) => socket.poll_send_to(cx, data, peer),
            (None, None) => Poll::Ready(Err(SendToError::NoAddress.into())),
        }
    }

    /// Reports an error from the socket to the protocol.
    fn error_received(&self, err: io::Error) {
        tracing::debug!(%err, "datagram endpoint error");
        self.protocol.protocol().error_received(ErrorReceived(err));
    }

    /// Delivers every event the core has for the protocol attached now.
    fn deliver_events(&mut self) {
        while let Some(event) = self.core.poll_event() {
            self.deliver(event);
        }
    }

    fn deliver(&self, event: DatagramEvent<Destination>) {
        let protocol = self.protocol.protocol();
        match event {
            DatagramEvent::Made { seq } => {
                protocol.connection_made(ConnectionMade::new(self.me.clone(), self.me.ack(seq)))
            }
            DatagramEvent::Datagram {
                data,
                addr: Some(addr),
                seq,
            } => protocol.datagram_received(DatagramReceived::new(data, addr, self.me.ack(seq))),
            DatagramEvent::PauseWriting => protocol.pause_writing(),
            DatagramEvent::ResumeWriting => protocol.resume_writing(),
            _ => {}
        }
    }

    /// Once the core has ended: lets go of the socket and stops the actor, which sends
    /// `ConnectionLost` from `stopped`. Whether it did.
    fn settle(&mut self, ctx: &mut Context<Self>) -> bool {
        if !self.core.take_release() {
            return false;
        }
        self.socket = None;
        self.error_watch = None;
        self.timer = None;
        ctx.stop();
        true
    }

    fn poll_io(&mut self, ctx: &mut Context<Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.core.is_stopped() {
            return Poll::Ready(());
        }
        // Until the protocol is gone, the sweep wakes an idle endpoint if it finds it so.
        if self.protocol.poll_gone(cx).is_ready() {
            self.core.handle_protocol_gone();
        }
        self.poll_errors(cx);
        self.poll_send_queue(cx);
        self.deliver_events();
        self.poll_receive(cx);
        if self.settle(ctx) || self.poll_timer(cx) && self.settle(ctx) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Keeps the timer on the core's next deadline; whether it fired (and the core was told).
    fn poll_timer(&mut self, cx: &mut TaskContext<'_>) -> bool {
        let Some(deadline) = self.core.poll_timeout(Instant::now().into_std()) else {
            self.timer = None;
            return false;
        };
        let deadline = Instant::from_std(deadline);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.timer = None;
        self.core.handle_timeout(Instant::now().into_std());
        true
    }

    /// Reports each error the socket announces through `EPOLLERR`.
    fn poll_errors(&mut self, cx: &mut TaskContext<'_>) {
        let Some(socket) = &self.socket else {
            return;
        };
        // Bounded, so a readiness that would not clear cannot spin: the rest waits for the next
        // wake-up.
        for _ in 0..MAX_EVENTS_PER_WAKEUP {
            let watch = self
                .error_watch
                .get_or_insert_with(|| Rc::clone(socket).error_ready());
            match watch.as_mut().poll(cx) {
                Poll::Pending => return,
                Poll::Ready(ready) => {
                    self.error_watch = None;
                    let err = match ready.and_then(|()| socket.take_error()) {
                        Ok(Some(err)) => err,
                        // The error was already taken by a send or a receive.
                        Ok(None) => continue,
                        Err(err) => err,
                    };
                    self.error_received(err);
                }
            }
        }
        cx.waker().wake_by_ref();
    }

    /// Sends queued datagrams in order until the socket would block.
    fn poll_send_queue(&mut self, cx: &mut TaskContext<'_>) {
        while let Some((data, addr)) = self.core.send_queue_front() {
            let outcome = match self.poll_send_one(cx, data, addr.as_ref()) {
                Poll::Pending => break,
                Poll::Ready(outcome) => outcome,
            };
            match outcome {
                Ok(_) => self.core.handle_sent(Ok(())),
                Err(err) => {
                    self.core.handle_sent(Err(&err));
                    self.error_received(err);
                }
            }
        }
        self.core.handle_send_attempted();
    }

    /// Reads and delivers datagrams while the window has room.
    fn poll_receive(&mut self, cx: &mut TaskContext<'_>) {
        let max = self.max_datagram_size;
        // Errors and oversized datagrams take no room in the window: bound them per wake-up so
        // a flood of them cannot starve the mailbox (`Close`, `Abort`).
        let mut budget = MAX_EVENTS_PER_WAKEUP;
        while self.core.receive_room() > 0 {
            if budget == 0 {
                cx.waker().wake_by_ref();
                return;
            }
            budget -= 1;
            let Some(socket) = self.socket.clone() else {
                return;
            };
            let received = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                // One byte more than the longest datagram we accept: filling it means the
                // datagram was longer, and the kernel cut it.
                if scratch.len() < max + 1 {
                    scratch.resize(max + 1, 0);
                }
                let mut buf = ReadBuf::new(&mut scratch[..max + 1]);
                socket
                    .poll_recv_from(cx, &mut buf)
                    .map_ok(|addr| (Bytes::copy_from_slice(buf.filled()), addr))
            });
            match received {
                Poll::Pending => return,
                Poll::Ready(Ok((data, addr))) if data.len() > max => {
                    self.error_received(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "a datagram from {addr} was longer than the {max}-byte limit and was dropped"
                        ),
                    ));
                }
                Poll::Ready(Ok((data, addr))) => {
                    let event = self.core.handle_received(data, Some(addr));
                    self.deliver(event);
                }
                Poll::Ready(Err(err)) if is_transient(&err) => self.error_received(err),
                Poll::Ready(Err(err)) => return self.core.handle_error(err),
            }
        }
    }
}

/// Whether a receive error is one the endpoint lives on after (asyncio: any `OSError`).
/// Only errors that say the socket itself is unusable end it.
fn is_transient(err: &io::Error) -> bool {
    !matches!(
        err.raw_os_error(),
        Some(code) if code == rustix::io::Errno::BADF.raw_os_error()
            || code == rustix::io::Errno::NOTSOCK.raw_os_error()
            || code == rustix::io::Errno::INVAL.raw_os_error()
    )
}

impl<S: DatagramSocket> fmt::Debug for DatagramTransportActor<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramTransportActor")
            .field("core", &self.core)
            .field("default_peer", &self.default_peer)
            .finish_non_exhaustive()
    }
}

impl<S: DatagramSocket> crate::driver::Driven for DatagramTransportActor<S> {
    fn poll_driver(&mut self, ctx: &mut Context<Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        self.poll_io(ctx, cx)
    }
}

impl<S: DatagramSocket> Actor for DatagramTransportActor<S> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        crate::driver::DATAGRAMS.started();
        self.deliver_events();
        crate::driver::spawn(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        crate::driver::DATAGRAMS.stopped();
        self.socket = None;
        self.error_watch = None;
        self.timer = None;
        let lost = ConnectionLost(self.core.stopped());
        self.protocol.protocol().connection_lost(lost);
    }
}

impl<S: DatagramSocket> Handler<SendTo> for DatagramTransportActor<S> {
    type Result = SendReceipt;

    fn handle(&mut self, msg: SendTo, _: &mut Context<Self>) -> SendReceipt {
        let len = msg.data.len();
        let refused = |err: io::Error| {
            tracing::warn!(len, %err, "datagram refused");
            SendReceipt(Receipt::Done(Err(err)))
        };
        // Refused while closing whatever the destination.
        if let Some(err) = self.core.send_refusal() {
            return refused(err.into());
        }
        let addr = match self.destination(msg.addr) {
            Ok(addr) => addr,
            Err(err) => return refused(err.into()),
        };
        let (data, addr) = match self.core.send(msg.data, addr) {
            Err(err) => return refused(err.into()),
            Ok(Outbound::Queued(ticket)) => return SendReceipt(Receipt::Queued(ticket)),
            Ok(Outbound::Direct(data, addr)) => (data, addr),
        };
        // The common case: the kernel takes it now, and nothing is queued or allocated.
        let waker = futures::task::noop_waker();
        let mut cx = TaskContext::from_waker(&waker);
        match self.poll_send_one(&mut cx, &data, addr.as_ref()) {
            Poll::Ready(Ok(_)) => {
                self.core.handle_sent_direct(len);
                SendReceipt(Receipt::Done(Ok(())))
            }
            Poll::Ready(Err(err)) => {
                let reply = duplicate_error(&err);
                self.error_received(err);
                SendReceipt(Receipt::Done(Err(reply)))
            }
            // Queued; the driver, polled after this handler, registers its waker.
            Poll::Pending => {
                let ticket = self.core.enqueue(data, addr);
                self.deliver_events();
                SendReceipt(Receipt::Queued(ticket))
            }
        }
    }
}

impl<S: DatagramSocket> Handler<Close> for DatagramTransportActor<S> {
    type Result = ();

    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) {
        self.core.close();
        self.settle(ctx);
    }
}

impl<S: DatagramSocket> Handler<Abort> for DatagramTransportActor<S> {
    type Result = ();

    fn handle(&mut self, _: Abort, ctx: &mut Context<Self>) {
        self.core.abort();
        self.settle(ctx);
    }
}

impl<S: DatagramSocket> Handler<IsClosing> for DatagramTransportActor<S> {
    type Result = bool;

    fn handle(&mut self, _: IsClosing, _: &mut Context<Self>) -> bool {
        self.core.is_closing()
    }
}

impl<S: DatagramSocket> Handler<PauseReading> for DatagramTransportActor<S> {
    type Result = ();

    fn handle(&mut self, _: PauseReading, _: &mut Context<Self>) {
        self.core.pause_reading();
    }
}

impl<S: DatagramSocket> Handler<ResumeReading> for DatagramTransportActor<S> {
    type Result = ();

    fn handle(&mut self, _: ResumeReading, _: &mut Context<Self>) {
        self.core.resume_reading();
    }
}

impl<S: DatagramSocket> Handler<IsReading> for DatagramTransportActor<S> {
    type Result = bool;

    fn handle(&mut self, _: IsReading, _: &mut Context<Self>) -> bool {
        self.core.is_reading()
    }
}

impl<S: DatagramSocket> Handler<GetWriteBufferSize> for DatagramTransportActor<S> {
    type Result = usize;

    fn handle(&mut self, _: GetWriteBufferSize, _: &mut Context<Self>) -> usize {
        self.core.write_buffer_size()
    }
}

impl<S: DatagramSocket> Handler<GetWriteBufferLimits> for DatagramTransportActor<S> {
    type Result = MessageResult<GetWriteBufferLimits>;

    fn handle(&mut self, _: GetWriteBufferLimits, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.core.write_buffer_limits().as_tuple())
    }
}

impl<S: DatagramSocket> Handler<SetWriteBufferLimits> for DatagramTransportActor<S> {
    type Result = <SetWriteBufferLimits as Message>::Result;

    fn handle(&mut self, msg: SetWriteBufferLimits, _: &mut Context<Self>) -> Self::Result {
        self.core.set_write_buffer_limits(msg.high, msg.low)?;
        self.deliver_events();
        Ok(())
    }
}

impl<S: DatagramSocket> Handler<SetDatagramProtocol> for DatagramTransportActor<S> {
    type Result = MessageResult<SetDatagramProtocol>;

    fn handle(&mut self, msg: SetDatagramProtocol, _: &mut Context<Self>) -> Self::Result {
        // Whatever is due goes to the protocol it was due to before the switch.
        self.deliver_events();
        let handles = Handles {
            write_flow: msg.0.handles_write_flow(),
            timeouts: false,
        };
        let old = self.protocol.replace(msg.0);
        self.core.set_protocol(handles);
        self.deliver_events();
        MessageResult(old)
    }
}

impl<S: DatagramSocket> Handler<GetExtraInfo> for DatagramTransportActor<S> {
    type Result = Option<ExtraInfo>;

    fn handle(&mut self, msg: GetExtraInfo, _: &mut Context<Self>) -> Self::Result {
        let socket = self.socket.as_ref();
        let value = match &*msg.name {
            switchboard_framework::keys::SOCKNAME => socket
                .and_then(|socket| socket.sockname())
                .map(ExtraInfo::from),
            switchboard_framework::keys::PEERNAME => {
                self.me.peername().cloned().map(ExtraInfo::from)
            }
            name => socket.and_then(|socket| socket.extra_info(name)),
        };
        value.or(msg.default)
    }
}

impl<S: DatagramSocket> Handler<GetStats> for DatagramTransportActor<S> {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.core.stats())
    }
}

impl<S: DatagramSocket> Handler<DeliveryAcked> for DatagramTransportActor<S> {
    type Result = ();

    fn handle(&mut self, msg: DeliveryAcked, _: &mut Context<Self>) {
        self.core.ack(msg.seq);
    }
}
