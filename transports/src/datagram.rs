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
    collections::VecDeque,
    fmt,
    future::Future,
    io,
    pin::Pin,
    rc::Rc,
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use actix::{
    Actor, ActorContext, ActorFuture, AsyncContext, Context, Handler, Message, MessageResult,
    dev::{MessageResponse, OneshotSender},
};
use bytes::Bytes;
use futures::future::LocalBoxFuture;
use switchboard_framework::{
    Abort, Close, ConnectionLost, ConnectionMade, DatagramHandle, DatagramProtocolHandle,
    DatagramReceived, DeliveryAcked, ErrorReceived, ExtraInfo, FlowEdge, GetExtraInfo, GetStats,
    GetWriteBufferLimits, GetWriteBufferSize, IntoDatagramProtocol, IsClosing, IsReading,
    PauseReading, ResumeReading, SendTo, SendToError, SetDatagramProtocol, SetWriteBufferLimits,
    SocketAddress, TransportStats, WriteBufferLimits, WriteError, WriteFlow, duplicate_error,
};
use tokio::io::ReadBuf;

use crate::PROTOCOL_WATCH_INTERVAL;

/// The longest datagram an endpoint receives whole by default: 256 KiB, asyncio's read size.
/// Larger than any UDP datagram (65,507 bytes over IPv4, 65,527 over IPv6), and than a Unix
/// datagram under Linux's default socket buffer sizes.
pub const DEFAULT_MAX_DATAGRAM_SIZE: usize = 256 * 1024;

/// How many datagrams an endpoint keeps in flight to its protocol by default, delivered and not
/// yet acknowledged. Bounds what a slow protocol costs to 32 datagrams.
pub const DEFAULT_READ_WINDOW: usize = 32;

/// How long `Close` waits for queued datagrams to be sent by default, before it drops them
/// (failing their acknowledged sends with [`WriteError::Stalled`]) and ends anyway.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

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
}

impl Default for DatagramConfig {
    fn default() -> Self {
        DatagramConfig {
            write_buffer_limits: WriteBufferLimits::default(),
            max_datagram_size: DEFAULT_MAX_DATAGRAM_SIZE,
            read_window: DEFAULT_READ_WINDOW,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
        }
    }
}

impl DatagramConfig {
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

/// One datagram waiting for the socket, and who waits for its outcome.
struct Queued {
    data: Bytes,
    addr: Option<SocketAddress>,
    seq: u64,
}

/// The waiters of acknowledged sends that were queued, shared with the [`SendReceipt`]s that
/// register them, in the order of their datagrams.
#[derive(Default)]
struct Waiters(RefCell<VecDeque<(u64, OneshotSender<io::Result<()>>)>>);

impl Waiters {
    fn resolve(&self, seq: u64, outcome: impl FnOnce() -> io::Result<()>) {
        let mut waiters = self.0.borrow_mut();
        if waiters.front().is_some_and(|(front, _)| *front == seq)
            && let Some((_, tx)) = waiters.pop_front()
        {
            let _ = tx.send(outcome());
        }
    }

    fn fail_all(&self, err: &io::Error) {
        for (_, tx) in self.0.borrow_mut().drain(..) {
            let _ = tx.send(Err(duplicate_error(err)));
        }
    }
}

/// The reply to a [`SendTo`]: its outcome now, or once its queued datagram is sent.
pub struct SendReceipt(Receipt);

enum Receipt {
    Done(io::Result<()>),
    Queued { seq: u64, waiters: Rc<Waiters> },
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
            Receipt::Queued { seq, waiters } => waiters.0.borrow_mut().push_back((seq, tx)),
        }
    }
}

impl fmt::Debug for SendReceipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Receipt::Done(result) => f.debug_tuple("SendReceipt").field(result).finish(),
            Receipt::Queued { seq, .. } => f.debug_struct("SendReceipt").field("seq", seq).finish(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Closing,
    Stopped,
}

/// The datagram transport actor. Start one with [`start`].
pub struct DatagramTransportActor<S: DatagramSocket> {
    socket: Option<Rc<S>>,
    me: DatagramHandle,
    protocol: DatagramProtocolHandle,
    config: DatagramConfig,
    state: State,
    /// Whether the protocol acknowledged its `ConnectionMade`.
    attached: bool,
    /// The delivery number of the last `ConnectionMade`.
    made_seq: u64,
    paused: bool,
    /// Where a send without an address goes: the connected peer, or (with `allow_broadcast`)
    /// the default destination of an endpoint that is not connected.
    default_peer: Option<SocketAddress>,
    connected: bool,
    error_watch: Option<LocalBoxFuture<'static, io::Result<()>>>,
    /// Deliveries not yet acknowledged: sequence number and size.
    in_flight: VecDeque<(u64, usize)>,
    seq: u64,
    queue: VecDeque<Queued>,
    send_seq: u64,
    waiters: Rc<Waiters>,
    flow: WriteFlow,
    close_deadline: Option<Pin<Box<actix_rt::time::Sleep>>>,
    lost: Option<io::Error>,
    stats: TransportStats,
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
    let mut ctx = Context::new();
    // Unbounded from the first message on: an actix mailbox holds 16 messages until its actor
    // starts and past that a `send` waits to be polled, so `send` and `do_send` from one sender
    // would lose their order. Memory is bounded by flow control, not by the mailbox.
    ctx.set_mailbox_capacity(0);
    let peername = if connected {
        socket.peername().or_else(|| default_peer.clone())
    } else {
        None
    };
    let me = DatagramHandle::new(ctx.address(), socket.sockname(), peername);
    let (output, protocol) = protocol().into_datagram_protocol();
    let mut stats = TransportStats::default();
    stats.read_buffer_limit = config.read_window.saturating_mul(config.max_datagram_size);
    let transport = DatagramTransportActor {
        socket: Some(Rc::new(socket)),
        me: me.clone(),
        protocol,
        flow: WriteFlow::new(config.write_buffer_limits),
        config,
        state: State::Open,
        attached: false,
        made_seq: 1,
        paused: false,
        default_peer,
        connected,
        error_watch: None,
        in_flight: VecDeque::new(),
        seq: 0,
        queue: VecDeque::new(),
        send_seq: 0,
        waiters: Rc::default(),
        close_deadline: None,
        lost: None,
        stats,
    };
    ctx.run(transport);
    (me, output)
}

impl<S: DatagramSocket> DatagramTransportActor<S> {
    fn issue_ack(&mut self, bytes: usize) -> switchboard_framework::Ack {
        self.seq += 1;
        self.in_flight.push_back((self.seq, bytes));
        self.stats.read_in_flight += bytes;
        self.stats.read_buffer_peak = self.stats.read_buffer_peak.max(self.stats.read_in_flight);
        self.me.ack(self.seq)
    }

    fn is_reading(&self) -> bool {
        self.state == State::Open && !self.paused
    }

    /// Where a datagram for `addr` goes, or why it may not.
    fn destination(
        &self,
        addr: Option<SocketAddress>,
    ) -> Result<Option<SocketAddress>, SendToError> {
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
        self.protocol.error_received(ErrorReceived(err));
    }

    fn deliver_flow_edge(&mut self) {
        match self.flow.check() {
            Some(FlowEdge::Pause) => self.protocol.pause_writing(),
            Some(FlowEdge::Resume) => self.protocol.resume_writing(),
            None => {}
        }
    }

    fn abort(&mut self, ctx: &mut Context<Self>) {
        if self.state == State::Stopped {
            return;
        }
        self.queue.clear();
        self.flow.clear();
        self.waiters.fail_all(&WriteError::Aborted.into());
        self.finish(ctx);
    }

    fn finish(&mut self, ctx: &mut Context<Self>) {
        self.state = State::Stopped;
        self.socket = None;
        self.error_watch = None;
        self.close_deadline = None;
        ctx.stop();
    }

    fn poll_io(&mut self, ctx: &mut Context<Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.state == State::Stopped {
            return Poll::Ready(());
        }
        if !self.protocol.is_alive() {
            tracing::debug!("protocol actor stopped: aborting its datagram endpoint");
            self.abort(ctx);
            return Poll::Ready(());
        }
        self.poll_errors(cx);
        self.poll_send_queue(cx);
        match self.state {
            State::Open => {
                if let Err(err) = self.poll_receive(cx) {
                    tracing::debug!(%err, "datagram endpoint failed");
                    self.lost = Some(err);
                    self.abort(ctx);
                    return Poll::Ready(());
                }
            }
            State::Closing => {
                let timed_out = self
                    .close_deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if timed_out {
                    let stalled: io::Error = WriteError::Stalled(self.config.close_timeout).into();
                    tracing::warn!(
                        dropped = self.queue.len(),
                        "datagram endpoint closed with datagrams the socket would not take"
                    );
                    self.waiters.fail_all(&stalled);
                    self.queue.clear();
                }
                if self.queue.is_empty() {
                    self.finish(ctx);
                    return Poll::Ready(());
                }
            }
            State::Stopped => return Poll::Ready(()),
        }
        Poll::Pending
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
        while let Some(front) = self.queue.front() {
            let outcome = match self.poll_send_one(cx, &front.data, front.addr.as_ref()) {
                Poll::Pending => break,
                Poll::Ready(outcome) => outcome,
            };
            let Some(sent) = self.queue.pop_front() else {
                break;
            };
            self.flow.remove(sent.data.len());
            match outcome {
                Ok(_) => {
                    self.stats.bytes_sent += sent.data.len() as u64;
                    self.waiters.resolve(sent.seq, || Ok(()));
                }
                Err(err) => {
                    self.waiters
                        .resolve(sent.seq, || Err(duplicate_error(&err)));
                    self.error_received(err);
                }
            }
        }
        self.stats.write_buffer_size = self.flow.size();
        self.deliver_flow_edge();
    }

    /// Reads and delivers datagrams while the window has room.
    fn poll_receive(&mut self, cx: &mut TaskContext<'_>) -> io::Result<()> {
        let max = self.config.max_datagram_size;
        // Errors and oversized datagrams take no room in the window: bound them per wake-up so
        // a flood of them cannot starve the mailbox (`Close`, `Abort`).
        let mut budget = MAX_EVENTS_PER_WAKEUP;
        while self.attached && self.is_reading() && self.in_flight.len() < self.config.read_window {
            if budget == 0 {
                cx.waker().wake_by_ref();
                return Ok(());
            }
            budget -= 1;
            let Some(socket) = self.socket.clone() else {
                return Ok(());
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
                Poll::Pending => return Ok(()),
                Poll::Ready(Ok((data, addr))) if data.len() > max => {
                    self.error_received(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "a datagram from {addr} was longer than the {max}-byte limit and was dropped"
                        ),
                    ));
                }
                Poll::Ready(Ok((data, addr))) => {
                    self.stats.bytes_received += data.len() as u64;
                    self.stats.deliveries += 1;
                    let ack = self.issue_ack(data.len());
                    self.protocol
                        .datagram_received(DatagramReceived::new(data, addr, ack));
                }
                Poll::Ready(Err(err)) if is_transient(&err) => self.error_received(err),
                Poll::Ready(Err(err)) => return Err(err),
            }
        }
        Ok(())
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
            .field("state", &self.state)
            .field("paused", &self.paused)
            .field("in_flight", &self.in_flight.len())
            .field("queued", &self.queue.len())
            .field("default_peer", &self.default_peer)
            .finish_non_exhaustive()
    }
}

/// Drives the socket from inside the actor's context, after each mailbox drain.
struct Driver;

impl<S: DatagramSocket> ActorFuture<DatagramTransportActor<S>> for Driver {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut DatagramTransportActor<S>,
        ctx: &mut Context<DatagramTransportActor<S>>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<()> {
        act.poll_io(ctx, cx)
    }
}

impl<S: DatagramSocket> Actor for DatagramTransportActor<S> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let ack = self.issue_ack(0);
        self.protocol
            .connection_made(ConnectionMade::new(self.me.clone(), ack));
        ctx.spawn(Driver);
        // An idle endpoint has nothing to wake its driver when its protocol stops.
        ctx.run_interval(PROTOCOL_WATCH_INTERVAL, |act, ctx| {
            if !act.protocol.is_alive() {
                tracing::debug!("protocol actor stopped: aborting its datagram endpoint");
                act.abort(ctx);
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.state = State::Stopped;
        self.socket = None;
        self.error_watch = None;
        self.waiters.fail_all(&WriteError::Stopped.into());
        self.protocol
            .connection_lost(ConnectionLost(self.lost.take()));
    }
}

impl<S: DatagramSocket> Handler<SendTo> for DatagramTransportActor<S> {
    type Result = SendReceipt;

    fn handle(&mut self, msg: SendTo, _: &mut Context<Self>) -> SendReceipt {
        let refusal = match self.state {
            State::Open => None,
            State::Closing => Some(WriteError::Closing),
            State::Stopped => Some(WriteError::Stopped),
        };
        if let Some(refusal) = refusal {
            tracing::warn!(len = msg.data.len(), %refusal, "datagram refused");
            return SendReceipt(Receipt::Done(Err(refusal.into())));
        }
        let addr = match self.destination(msg.addr) {
            Ok(addr) => addr,
            Err(err) => {
                tracing::warn!(len = msg.data.len(), %err, "datagram refused");
                return SendReceipt(Receipt::Done(Err(err.into())));
            }
        };
        if self.queue.is_empty() {
            // The common case: the kernel takes it now, and nothing is queued or allocated.
            let waker = futures::task::noop_waker();
            let mut cx = TaskContext::from_waker(&waker);
            match self.poll_send_one(&mut cx, &msg.data, addr.as_ref()) {
                Poll::Ready(Ok(_)) => {
                    self.stats.bytes_sent += msg.data.len() as u64;
                    return SendReceipt(Receipt::Done(Ok(())));
                }
                Poll::Ready(Err(err)) => {
                    let reply = duplicate_error(&err);
                    self.error_received(err);
                    return SendReceipt(Receipt::Done(Err(reply)));
                }
                // Queued below; the driver, polled after this handler, registers its waker.
                Poll::Pending => {}
            }
        }
        self.send_seq += 1;
        let seq = self.send_seq;
        self.flow.add(msg.data.len());
        self.stats.write_buffer_peak = self.stats.write_buffer_peak.max(self.flow.size());
        self.stats.write_buffer_size = self.flow.size();
        self.queue.push_back(Queued {
            data: msg.data,
            addr,
            seq,
        });
        self.deliver_flow_edge();
        SendReceipt(Receipt::Queued {
            seq,
            waiters: Rc::clone(&self.waiters),
        })
    }
}

impl<S: DatagramSocket> Handler<Close> for DatagramTransportActor<S> {
    type Result = ();

    fn handle(&mut self, _: Close, _: &mut Context<Self>) {
        if self.state == State::Open {
            self.state = State::Closing;
            self.close_deadline = Some(Box::pin(actix_rt::time::sleep(self.config.close_timeout)));
        }
    }
}

impl<S: DatagramSocket> Handler<Abort> for DatagramTransportActor<S> {
    type Result = ();

    fn handle(&mut self, _: Abort, ctx: &mut Context<Self>) {
        self.abort(ctx);
    }
}

impl<S: DatagramSocket> Handler<IsClosing> for DatagramTransportActor<S> {
    type Result = bool;

    fn handle(&mut self, _: IsClosing, _: &mut Context<Self>) -> bool {
        self.state != State::Open
    }
}

impl<S: DatagramSocket> Handler<PauseReading> for DatagramTransportActor<S> {
    type Result = ();

    fn handle(&mut self, _: PauseReading, _: &mut Context<Self>) {
        self.paused = true;
    }
}

impl<S: DatagramSocket> Handler<ResumeReading> for DatagramTransportActor<S> {
    type Result = ();

    fn handle(&mut self, _: ResumeReading, _: &mut Context<Self>) {
        self.paused = false;
    }
}

impl<S: DatagramSocket> Handler<IsReading> for DatagramTransportActor<S> {
    type Result = bool;

    fn handle(&mut self, _: IsReading, _: &mut Context<Self>) -> bool {
        self.is_reading()
    }
}

impl<S: DatagramSocket> Handler<GetWriteBufferSize> for DatagramTransportActor<S> {
    type Result = usize;

    fn handle(&mut self, _: GetWriteBufferSize, _: &mut Context<Self>) -> usize {
        self.flow.size()
    }
}

impl<S: DatagramSocket> Handler<GetWriteBufferLimits> for DatagramTransportActor<S> {
    type Result = MessageResult<GetWriteBufferLimits>;

    fn handle(&mut self, _: GetWriteBufferLimits, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.flow.limits().as_tuple())
    }
}

impl<S: DatagramSocket> Handler<SetWriteBufferLimits> for DatagramTransportActor<S> {
    type Result = <SetWriteBufferLimits as Message>::Result;

    fn handle(&mut self, msg: SetWriteBufferLimits, _: &mut Context<Self>) -> Self::Result {
        let limits = WriteBufferLimits::from_options(msg.high, msg.low)?;
        self.flow.set_limits(limits);
        self.deliver_flow_edge();
        Ok(())
    }
}

impl<S: DatagramSocket> Handler<SetDatagramProtocol> for DatagramTransportActor<S> {
    type Result = MessageResult<SetDatagramProtocol>;

    fn handle(&mut self, msg: SetDatagramProtocol, _: &mut Context<Self>) -> Self::Result {
        let old = std::mem::replace(&mut self.protocol, msg.0);
        if self.state == State::Stopped {
            return MessageResult(old);
        }
        // Nothing more is read until the new protocol acknowledges its `ConnectionMade`.
        self.attached = false;
        let ack = self.issue_ack(0);
        self.made_seq = self.seq;
        self.protocol
            .connection_made(ConnectionMade::new(self.me.clone(), ack));
        if self.flow.is_paused() {
            self.protocol.pause_writing();
        }
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
        MessageResult(self.stats)
    }
}

impl<S: DatagramSocket> Handler<DeliveryAcked> for DatagramTransportActor<S> {
    type Result = ();

    fn handle(&mut self, msg: DeliveryAcked, _: &mut Context<Self>) {
        // Acknowledgements come back in order unless a protocol keeps some, so the search
        // usually ends at the front.
        if let Some(at) = self.in_flight.iter().position(|(seq, _)| *seq == msg.seq)
            && let Some((_, bytes)) = self.in_flight.remove(at)
        {
            self.stats.read_in_flight -= bytes;
        }
        // From `ConnectionMade`'s acknowledgement on, the protocol may receive.
        if msg.seq == self.made_seq {
            self.attached = true;
        }
    }
}
