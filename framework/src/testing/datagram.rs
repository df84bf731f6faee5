//! [`MockDatagramTransport`]: a datagram endpoint with no socket, driven by the test.
//!
//! It is the [`DatagramCore`] every UDP and Unix-datagram endpoint runs, with a scripted socket
//! instead of a real one: the read window, the acknowledgements, the send queue with its
//! watermarks and per-datagram outcomes, close and abort are the core's decisions, as on a real
//! endpoint. The test scripts what the socket would bring (datagrams from their senders, errors,
//! a socket that stops taking datagrams, a failure) and reads back what the protocol sent.

use std::{
    borrow::Cow,
    collections::{HashMap, VecDeque},
    fmt, io, mem,
    sync::Arc,
    time::{Duration, Instant},
};

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message,
    MessageResult,
    dev::{MessageResponse, OneshotSender},
    fut,
};
use bytes::Bytes;
use switchboard_core::datagram::{
    DEFAULT_CLOSE_TIMEOUT, DEFAULT_MAX_DATAGRAM_SIZE, DEFAULT_READ_WINDOW, DatagramCore,
    DatagramEvent, DatagramSettings, Outbound, SendTicket,
};

use super::{
    DEFAULT_EVENT_TIMEOUT, Ending,
    scripted::{Scripted, Shared},
};
use crate::dev::{DeliveryAcked, ProtocolWatch, Watchable, WriteReply};
use crate::{
    Abort, Close, ConnectionLost, ConnectionMade, DatagramHandle, DatagramProtocolHandle,
    DatagramReceived, ErrorReceived, ExtraInfo, GetExtraInfo, GetStats, GetWriteBufferLimits,
    GetWriteBufferSize, IntoDatagramProtocol, IsClosing, IsReading, PauseReading, ResumeReading,
    SendTo, SendToError, SetDatagramProtocol, SetWriteBufferLimits, SocketAddress, TransportStats,
    UnixAddress, WriteBufferLimits, WriteError, keys,
};

/// What a [`MockDatagramTransport`] calls itself when a wait fails.
const NAME: &str = "MockDatagramTransport";

/// Something the protocol sent to the endpoint, recorded in order by a
/// [`MockDatagramTransport`].
///
/// Queries (`IsClosing`, `GetExtraInfo`, `GetWriteBufferSize`, ...) are answered and not
/// recorded; everything that would change a real endpoint is.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum DatagramSent {
    /// A [`SendTo`], accepted: the datagram, and the address the protocol gave (`None` for
    /// the connected peer). Where it went is in [`MockDatagramTransport::sent`].
    SendTo {
        /// The datagram.
        data: Bytes,
        /// The address the protocol gave.
        addr: Option<SocketAddress>,
    },
    /// A [`SendTo`] refused, as a real endpoint refuses it; it never reaches
    /// [`MockDatagramTransport::sent`].
    RefusedSendTo {
        /// The datagram.
        data: Bytes,
        /// The address the protocol gave.
        addr: Option<SocketAddress>,
        /// Why a real endpoint refuses it.
        reason: SendRefusal,
    },
    /// [`Close`].
    Close,
    /// [`Abort`].
    Abort,
    /// [`PauseReading`].
    PauseReading,
    /// [`ResumeReading`].
    ResumeReading,
    /// [`SetWriteBufferLimits`], with the values asked for.
    SetWriteBufferLimits {
        /// The high-water mark asked for.
        high: Option<usize>,
        /// The low-water mark asked for.
        low: Option<usize>,
    },
    /// [`SetDatagramProtocol`]: the protocol switched to.
    SetDatagramProtocol {
        /// The new protocol.
        protocol: DatagramProtocolHandle,
    },
}

impl DatagramSent {
    /// The command's name, e.g. `"SendTo"`: for asserting on a sequence.
    pub fn name(&self) -> &'static str {
        match self {
            DatagramSent::SendTo { .. } => "SendTo",
            DatagramSent::RefusedSendTo { .. } => "RefusedSendTo",
            DatagramSent::Close => "Close",
            DatagramSent::Abort => "Abort",
            DatagramSent::PauseReading => "PauseReading",
            DatagramSent::ResumeReading => "ResumeReading",
            DatagramSent::SetWriteBufferLimits { .. } => "SetWriteBufferLimits",
            DatagramSent::SetDatagramProtocol { .. } => "SetDatagramProtocol",
        }
    }
}

/// Why a datagram endpoint refuses a datagram before it reaches the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendRefusal {
    /// Its address: missing on an endpoint that is not connected, not the connected peer's, or
    /// not one the socket can send to.
    Destination(SendToError),
    /// The endpoint's state: closing ([`WriteError::Closing`]) or ended.
    Endpoint(WriteError),
}

impl From<SendRefusal> for io::Error {
    fn from(refusal: SendRefusal) -> Self {
        match refusal {
            SendRefusal::Destination(err) => err.into(),
            SendRefusal::Endpoint(err) => err.into(),
        }
    }
}

/// Builds a [`MockDatagramTransport`] with scripted addresses and settings.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `connect` is awaited"]
pub struct MockDatagramBuilder {
    sockname: Option<SocketAddress>,
    peername: Option<SocketAddress>,
    extra: HashMap<Cow<'static, str>, ExtraInfo>,
    read_window: usize,
    write_buffer_limits: WriteBufferLimits,
    close_timeout: Duration,
    timeout: Duration,
}

impl Default for MockDatagramBuilder {
    fn default() -> Self {
        MockDatagramBuilder {
            sockname: None,
            peername: None,
            extra: HashMap::new(),
            read_window: DEFAULT_READ_WINDOW,
            write_buffer_limits: WriteBufferLimits::default(),
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            timeout: DEFAULT_EVENT_TIMEOUT,
        }
    }
}

impl MockDatagramBuilder {
    /// The endpoint's own address (`sockname`, and `DatagramHandle::sockname`). Its family is
    /// the socket's: an endpoint that is not connected refuses datagrams for an address of the
    /// other family, as a real one does. None by default.
    pub fn sockname(mut self, addr: impl Into<SocketAddress>) -> Self {
        self.sockname = Some(addr.into());
        self
    }

    /// Connects the endpoint to `addr` (`peername`): a `SendTo` without an address goes there,
    /// and one for any other address is refused ([`SendToError::NotConnectedAddress`]). Not
    /// connected by default, so every `SendTo` needs its address.
    pub fn peername(mut self, addr: impl Into<SocketAddress>) -> Self {
        self.peername = Some(addr.into());
        self
    }

    /// Answers `GetExtraInfo` for `name` with `value`.
    pub fn extra(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<ExtraInfo>,
    ) -> Self {
        self.extra.insert(name.into(), value.into());
        self
    }

    /// How many datagrams may be in flight to the protocol, delivered and not acknowledged (at
    /// least 1); a real endpoint's default, [`DEFAULT_READ_WINDOW`], by default.
    pub fn read_window(mut self, window: usize) -> Self {
        self.read_window = window.max(1);
        self
    }

    /// The write-buffer limits at the start (64 KiB / 16 KiB by default).
    pub fn write_buffer_limits(mut self, limits: WriteBufferLimits) -> Self {
        self.write_buffer_limits = limits;
        self
    }

    /// How long `Close` waits for queued datagrams, as far as the close's acknowledged sends
    /// tell ([`WriteError::Stalled`]); the mock has no clock, so the time passes when the test
    /// says ([`MockDatagramTransport::expire_close_timeout`]).
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// How long [`MockDatagramTransport::settle`] and the waits built on it may take before
    /// they fail the test ([`DEFAULT_EVENT_TIMEOUT`] by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Attaches `protocol` as a real endpoint would: it receives
    /// `ConnectionMade<DatagramHandle>`, and this resolves once its handler has returned and
    /// released the acknowledgement, so whatever it sent from there is already recorded.
    ///
    /// Call it inside an actix `System`; the mock runs on the current arbiter. Start the
    /// protocol there too, so [`settle`](MockDatagramTransport::settle) can tell when it is idle.
    pub async fn connect(self, protocol: impl IntoDatagramProtocol) -> MockDatagramTransport {
        let mock = self.start(protocol);
        mock.settle().await;
        mock
    }

    /// Attaches `protocol` and returns at once, without waiting for `ConnectionMade` to be
    /// handled (for a protocol that keeps its acknowledgement).
    pub fn start(self, protocol: impl IntoDatagramProtocol) -> MockDatagramTransport {
        let (_, protocol) = protocol.into_datagram_protocol();
        let timeout = self.timeout;
        let settings = DatagramSettings {
            write_buffer_limits: self.write_buffer_limits,
            read_window: self.read_window,
            max_datagram_size: DEFAULT_MAX_DATAGRAM_SIZE,
            close_timeout: self.close_timeout,
            max_write_buffer: crate::DEFAULT_MAX_WRITE_BUFFER,
        };
        let handles = crate::dev::Handles {
            write_flow: protocol.handles_write_flow(),
            timeouts: false,
        };
        let shared = Arc::new(Shared::new(State::new(self.clone(), protocol)));
        let mut handle = None;
        let addr = MockDatagramActor::create(|ctx| {
            ctx.set_mailbox_capacity(0);
            let me = handle.insert(DatagramHandle::new(
                ctx.address(),
                self.sockname.clone(),
                self.peername.clone(),
            ));
            let mut core = DatagramCore::new(settings);
            core.set_handles(handles);
            MockDatagramActor {
                core,
                shared: Arc::clone(&shared),
                me: me.clone(),
                sockname: self.sockname,
                peername: self.peername,
            }
        });
        MockDatagramTransport {
            addr,
            handle: handle.expect("made by create"),
            shared,
            timeout,
        }
    }
}

/// A datagram endpoint with no socket, for unit-testing datagram protocols: the
/// [`DatagramCore`] of every real endpoint, driven by the test's script.
///
/// What the test scripts, in order: datagrams from their senders
/// ([`push_datagram`](Self::push_datagram), [`feed_datagram`](Self::feed_datagram)), socket
/// errors ([`error`](Self::error)), a socket that stops taking datagrams and takes them again
/// ([`pause_writing`](Self::pause_writing), [`resume_writing`](Self::resume_writing)), and a
/// socket that fails for good ([`lose`](Self::lose)). What it reads back: the datagrams that
/// left, with their destination ([`sent`](Self::sent)), every command
/// ([`take_commands`](Self::take_commands)), the endpoint's state and counters.
///
/// ```
/// use actix::prelude::*;
/// use bytes::Bytes;
/// use switchboard_framework::prelude::*;
/// use switchboard_framework::testing::MockDatagramTransport;
///
/// /// Answers each datagram with its length, to its sender.
/// #[derive(Default)]
/// struct Lengths(Option<DatagramHandle>);
///
/// impl Actor for Lengths {
///     type Context = Context<Self>;
/// }
///
/// impl Handler<ConnectionMade<DatagramHandle>> for Lengths {
///     type Result = ();
///     fn handle(&mut self, msg: ConnectionMade<DatagramHandle>, _: &mut Context<Self>) {
///         self.0 = Some(msg.transport);
///     }
/// }
///
/// impl Handler<DatagramReceived> for Lengths {
///     type Result = ();
///     fn handle(&mut self, msg: DatagramReceived, _: &mut Context<Self>) {
///         if let Some(endpoint) = &self.0 {
///             endpoint.send_to(msg.data.len().to_string(), msg.addr);
///         }
///     }
/// }
///
/// impl Handler<ErrorReceived> for Lengths {
///     type Result = ();
///     fn handle(&mut self, _: ErrorReceived, _: &mut Context<Self>) {}
/// }
///
/// impl Handler<ConnectionLost> for Lengths {
///     type Result = ();
///     fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
///         ctx.stop();
///     }
/// }
///
/// # switchboard_framework::testing::run(async {
/// let alice: std::net::SocketAddr = "192.0.2.1:5000".parse().unwrap();
/// let bob: std::net::SocketAddr = "192.0.2.2:6000".parse().unwrap();
/// let mock = MockDatagramTransport::connect(Lengths::default().start()).await;
/// mock.feed_datagram("hello", alice).await;
/// mock.feed_datagram("", bob).await; // a zero-length datagram is one too
/// mock.error(std::io::ErrorKind::ConnectionRefused.into()).await; // the endpoint goes on
/// mock.feed_datagram("hi", alice).await;
/// assert_eq!(
///     mock.take_sent(),
///     [
///         (Bytes::from("5"), alice.into()),
///         (Bytes::from("0"), bob.into()),
///         (Bytes::from("2"), alice.into()),
///     ]
/// );
/// assert_eq!(mock.stats().deliveries, 3);
/// assert!(!mock.is_closing());
/// # });
/// ```
#[derive(Clone)]
#[must_use = "the mock ends when every handle to it is dropped"]
pub struct MockDatagramTransport {
    addr: Addr<MockDatagramActor>,
    handle: DatagramHandle,
    shared: Arc<Shared<State>>,
    timeout: Duration,
}

impl MockDatagramTransport {
    /// A mock endpoint that is not connected and has no address.
    pub fn builder() -> MockDatagramBuilder {
        MockDatagramBuilder::default()
    }

    /// Attaches `protocol` to a default mock; see [`MockDatagramBuilder::connect`].
    pub async fn connect(protocol: impl IntoDatagramProtocol) -> MockDatagramTransport {
        MockDatagramTransport::builder().connect(protocol).await
    }

    /// The handle the protocol received.
    pub fn handle(&self) -> DatagramHandle {
        self.handle.clone()
    }

    /// The protocol deliveries go to now (the last one switched to).
    pub fn protocol(&self) -> DatagramProtocolHandle {
        self.shared.lock().protocol.clone()
    }

    // ---- what the socket brings ----

    /// Queues a datagram from `from` and returns at once. It is delivered as one
    /// `DatagramReceived` while the read window has room (the core's: a few delivered and not
    /// acknowledged at most) and reading is not paused; zero-length datagrams included.
    pub fn push_datagram(&self, data: impl Into<Bytes>, from: impl Into<SocketAddress>) {
        self.enqueue(Inbound::Datagram(data.into(), from.into()));
    }

    /// [`push_datagram`](Self::push_datagram), then [`settle`](Self::settle).
    pub async fn feed_datagram(&self, data: impl Into<Bytes>, from: impl Into<SocketAddress>) {
        self.push_datagram(data, from);
        self.settle().await;
    }

    /// The socket reports `err` (an ICMP port unreachable, say): the protocol receives
    /// `ErrorReceived` once the datagrams queued before it were read, and the endpoint goes on.
    /// Settles.
    pub async fn error(&self, err: io::Error) {
        self.enqueue(Inbound::Error(err));
        self.settle().await;
    }

    /// The socket stops taking datagrams: what the protocol sends from now on waits in the
    /// endpoint's queue (`GetWriteBufferSize` counts it), and a protocol with write flow
    /// receives `PauseWriting` at once, as from the stream mock's peer that stops reading.
    /// Settles. Write-flow changes do not wait behind queued datagrams.
    pub async fn pause_writing(&self) {
        self.enqueue(Inbound::PauseWriting);
        self.settle().await;
    }

    /// The socket takes datagrams again: the queue goes out in order, each queued acknowledged
    /// send resolves, and the protocol receives `ResumeWriting` once the queue is at its
    /// low-water mark. Settles.
    pub async fn resume_writing(&self) {
        self.enqueue(Inbound::ResumeWriting);
        self.settle().await;
    }

    /// The socket fails for good: after the datagrams queued before it (or at once while
    /// reading is paused, dropping them), every queued send fails with `err` and the protocol
    /// receives `ConnectionLost(Some(err))`, last. Settles.
    pub async fn lose(&self, err: io::Error) {
        self.enqueue(Inbound::Lost(err));
        self.settle().await;
    }

    /// Lets a `Close`'s timeout pass: a closing endpoint whose socket would not take its queued
    /// datagrams drops them (their acknowledged sends fail with [`WriteError::Stalled`]) and
    /// ends. Nothing happens to an endpoint that is not closing. Settles.
    pub async fn expire_close_timeout(&self) {
        self.addr.do_send(ExpireCloseTimeout);
        self.settle().await;
    }

    /// Resolves once the protocol is idle: every delivery acknowledged (or reading paused with
    /// datagrams waiting, or the endpoint ended), and nothing moving between the protocol and
    /// the mock for a few scheduler turns. Fails the test after the builder's timeout, saying
    /// what it was waiting for.
    pub async fn settle(&self) {
        self.shared.settle(NAME, self.timeout).await;
    }

    /// Waits until the endpoint has ended (`ConnectionLost` delivered); fails the test after the
    /// builder's timeout.
    pub async fn ended(&self) {
        self.shared
            .wait(NAME, self.timeout, "the endpoint to end", |state| {
                state.ending.is_some()
            })
            .await;
    }

    // ---- what the protocol sent ----

    /// Every datagram that left, with its destination, in order.
    pub fn sent(&self) -> Vec<(Bytes, SocketAddress)> {
        self.shared.lock().sent.clone()
    }

    /// The datagrams that left since the last `take_sent`.
    pub fn take_sent(&self) -> Vec<(Bytes, SocketAddress)> {
        let mut state = self.shared.lock();
        let to = state.sent.len();
        let from = mem::replace(&mut state.sent_taken, to);
        state.sent[from..].to_vec()
    }

    /// The names of every recorded command, in order: `["SendTo", "PauseReading", "Close"]`.
    pub fn command_names(&self) -> Vec<&'static str> {
        self.shared
            .lock()
            .log
            .iter()
            .map(DatagramSent::name)
            .collect()
    }

    /// The commands recorded since the last `take_commands`, in order.
    pub fn take_commands(&self) -> Vec<DatagramSent> {
        let mut state = self.shared.lock();
        let to = state.log.len();
        let from = mem::replace(&mut state.log_taken, to);
        state.log[from..].to_vec()
    }

    /// The names of the commands recorded since the last `take_commands`.
    pub fn take_command_names(&self) -> Vec<&'static str> {
        self.take_commands()
            .iter()
            .map(DatagramSent::name)
            .collect()
    }

    /// Whether the protocol sent `Close` or `Abort`, or the endpoint ended.
    pub fn is_closing(&self) -> bool {
        let state = self.shared.lock();
        state.snapshot.closing || state.ending.is_some()
    }

    /// Whether the endpoint has ended: `ConnectionLost` was delivered.
    pub fn is_ended(&self) -> bool {
        self.shared.lock().ending.is_some()
    }

    /// How the endpoint ended, if it has: `Closed`, `Aborted`, `Lost` or `ProtocolStopped`.
    pub fn ending(&self) -> Option<Ending> {
        self.shared.lock().ending
    }

    /// Whether datagrams are read: not paused by `PauseReading`, not closing.
    pub fn is_reading(&self) -> bool {
        let state = self.shared.lock();
        state.snapshot.reading && state.ending.is_none()
    }

    /// The counters, as `GetStats` answers them: `read_in_flight` is the bytes of the
    /// datagrams delivered and not acknowledged, `write_buffer_size` the bytes queued.
    pub fn stats(&self) -> TransportStats {
        self.shared.lock().snapshot.stats
    }

    fn enqueue(&self, inbound: Inbound) {
        let mut state = self.shared.lock();
        if matches!(inbound, Inbound::PauseWriting | Inbound::ResumeWriting) {
            state.flow_scripted += 1;
        }
        state.script.push_back(inbound);
        drop(state);
        self.addr.do_send(Pump);
    }
}

impl fmt::Debug for MockDatagramTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockDatagramTransport")
            .field("state", &self.shared)
            .finish()
    }
}

/// What the test scripted for the socket, played in order.
#[derive(Debug)]
enum Inbound {
    Datagram(Bytes, SocketAddress),
    Error(io::Error),
    PauseWriting,
    ResumeWriting,
    Lost(io::Error),
}

/// What the test can see: the script, what the protocol sent, and a snapshot of the core after
/// each of the mock's turns. The decisions are the core's.
struct State {
    options: MockDatagramBuilder,
    protocol: DatagramProtocolHandle,
    script: VecDeque<Inbound>,
    /// How many write-flow changes the script holds.
    flow_scripted: usize,
    /// The socket takes no datagram.
    stalled: bool,
    /// What ends the endpoint, as far as the mock can tell, once the core ends it.
    cause: Option<Ending>,
    ending: Option<Ending>,
    log: Vec<DatagramSent>,
    log_taken: usize,
    sent: Vec<(Bytes, SocketAddress)>,
    sent_taken: usize,
    snapshot: Snapshot,
}

#[derive(Debug, Default, Clone, Copy)]
struct Snapshot {
    reading: bool,
    closing: bool,
    awaits_ack: bool,
    stats: TransportStats,
}

impl State {
    fn new(options: MockDatagramBuilder, protocol: DatagramProtocolHandle) -> Self {
        State {
            options,
            protocol,
            script: VecDeque::new(),
            flow_scripted: 0,
            stalled: false,
            cause: None,
            ending: None,
            log: Vec::new(),
            log_taken: 0,
            sent: Vec::new(),
            sent_taken: 0,
            snapshot: Snapshot::default(),
        }
    }

    fn record(&mut self, sent: DatagramSent) {
        self.log.push(sent);
    }

    fn end_by(&mut self, cause: Ending) {
        self.cause.get_or_insert(cause);
    }
}

impl Scripted for State {
    fn is_settled(&self) -> bool {
        self.ending.is_some() || !self.snapshot.awaits_ack
    }

    fn describe(&self) -> String {
        format!(
            "deliveries not acknowledged: {} ({} bytes), scripted: {:?}, reading: {}, ended: \
             {:?}, commands so far: {:?}",
            self.snapshot.awaits_ack,
            self.snapshot.stats.read_in_flight,
            self.script,
            self.snapshot.reading,
            self.ending,
            self.log.iter().map(DatagramSent::name).collect::<Vec<_>>()
        )
    }
}

/// The actor a datagram protocol is attached to: the datagram core every endpoint runs, driven
/// by the test's script instead of a socket.
struct MockDatagramActor {
    core: DatagramCore<SocketAddress, WriteReply>,
    shared: Arc<Shared<State>>,
    me: DatagramHandle,
    sockname: Option<SocketAddress>,
    /// The connected peer, where sends without an address go.
    peername: Option<SocketAddress>,
}

/// The protocol the endpoint delivers to now, as the death pact watches it.
struct CurrentProtocol(Arc<Shared<State>>);

impl Watchable for CurrentProtocol {
    fn is_alive(&self) -> bool {
        self.0.lock().protocol.is_alive()
    }
}

impl Actor for MockDatagramActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.turn(ctx);
        // The real transports' death pact, on their watch: an endpoint whose protocol stopped
        // aborts.
        let watch = ProtocolWatch::new(CurrentProtocol(Arc::clone(&self.shared)));
        let gone = fut::wrap_future::<_, Self>(async move { watch.gone().await });
        ctx.spawn(gone.map(|(), mock, ctx| {
            if !mock.core.is_closing() {
                mock.shared.lock().end_by(Ending::ProtocolStopped);
            }
            mock.core.handle_protocol_gone();
            mock.turn(ctx);
        }));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        let lost = ConnectionLost(self.core.stopped());
        let protocol = {
            let mut state = self.shared.lock();
            state.end_by(Ending::Lost);
            state.ending = state.cause;
            state.snapshot = self.snapshot();
            state.protocol.clone()
        };
        protocol.connection_lost(lost);
        self.shared.changed();
    }
}

impl MockDatagramActor {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            reading: self.core.is_reading(),
            closing: self.core.is_closing(),
            awaits_ack: self.core.awaits_ack(),
            stats: self.core.stats(),
        }
    }

    /// One turn of the scripted socket: sends what is queued, plays the script, delivers the
    /// core's events, until nothing moves.
    fn turn(&mut self, ctx: &mut Context<Self>) {
        loop {
            let mut moved = self.send_side();
            moved |= self.deliver_events();
            moved |= self.receive_side();
            if self.core.take_release() {
                ctx.stop();
                break;
            }
            if !moved {
                break;
            }
        }
        let snapshot = self.snapshot();
        self.shared.lock().snapshot = snapshot;
        self.shared.changed();
    }

    /// The scripted socket takes every queued datagram, in order, unless it is stalled.
    fn send_side(&mut self) -> bool {
        let mut moved = false;
        if !self.shared.lock().stalled {
            while let Some((data, to)) = self.core.send_queue_front() {
                let datagram = (data.clone(), to.clone());
                self.shared.lock().sent.push(datagram);
                self.core.handle_sent(Ok(()));
                moved = true;
            }
        }
        self.core.handle_send_attempted();
        moved
    }

    /// Plays one step of the script: a write-flow change at once; the datagram or error at the
    /// front when the core reads (a datagram needs room in the window, an error none); a loss
    /// once what was scripted before it was read, or at once while not reading.
    fn receive_side(&mut self) -> bool {
        let mut state = self.shared.lock();
        let flow = (state.flow_scripted > 0)
            .then(|| {
                state.script.iter().position(|inbound| {
                    matches!(inbound, Inbound::PauseWriting | Inbound::ResumeWriting)
                })
            })
            .flatten();
        if let Some(at) = flow {
            state.flow_scripted -= 1;
            let stalled = matches!(state.script.remove(at), Some(Inbound::PauseWriting));
            state.stalled = stalled;
            drop(state);
            self.core.handle_io_full(stalled);
            return true;
        }
        if self.core.is_stopped() {
            return false;
        }
        let reading = self.core.is_reading();
        let lost = state
            .script
            .iter()
            .position(|inbound| matches!(inbound, Inbound::Lost(_)))
            .filter(|&at| at == 0 || !reading);
        if let Some(at) = lost {
            let Some(Inbound::Lost(err)) = state.script.remove(at) else {
                return false;
            };
            // The test's word ends it, a close under way included.
            state.cause = Some(Ending::Lost);
            drop(state);
            self.core.handle_error(err);
            return true;
        }
        match state.script.front() {
            Some(Inbound::Error(_)) => {
                let Some(Inbound::Error(err)) = state.script.pop_front() else {
                    return false;
                };
                let protocol = state.protocol.clone();
                drop(state);
                protocol.error_received(ErrorReceived(err));
                true
            }
            Some(Inbound::Datagram(..)) if self.core.receive_room() > 0 => {
                let Some(Inbound::Datagram(data, from)) = state.script.pop_front() else {
                    return false;
                };
                drop(state);
                let event = self.core.handle_received(data, from);
                self.deliver(event);
                true
            }
            _ => false,
        }
    }

    /// Delivers the core's events to the protocol attached now.
    fn deliver_events(&mut self) -> bool {
        let mut moved = false;
        while let Some(event) = self.core.poll_event() {
            moved = true;
            self.deliver(event);
        }
        moved
    }

    fn deliver(&self, event: DatagramEvent<SocketAddress>) {
        let protocol = self.shared.lock().protocol.clone();
        match event {
            DatagramEvent::Made { seq } => {
                protocol.connection_made(ConnectionMade::new(self.me.clone(), self.me.ack(seq)));
            }
            DatagramEvent::Datagram { data, addr, seq } => {
                protocol.datagram_received(DatagramReceived::new(data, addr, self.me.ack(seq)));
            }
            DatagramEvent::PauseWriting => protocol.pause_writing(),
            DatagramEvent::ResumeWriting => protocol.resume_writing(),
            _ => {}
        }
    }

    /// Where a datagram for `addr` goes, or why it may not, as a real endpoint decides: a
    /// connected endpoint sends only to its peer, one that is not connected needs an address
    /// its socket's family can reach.
    fn destination(&self, addr: Option<SocketAddress>) -> Result<SocketAddress, SendToError> {
        match (addr, &self.peername) {
            (None, None) => Err(SendToError::NoAddress),
            (None, Some(peer)) => Ok(peer.clone()),
            (Some(given), Some(peer)) if given != *peer => Err(SendToError::NotConnectedAddress {
                given,
                connected: peer.clone(),
            }),
            (Some(_), Some(peer)) => Ok(peer.clone()),
            (Some(given), None) => reachable(self.sockname.as_ref(), given),
        }
    }
}

/// Whether a socket bound to `sockname` can send to `addr`: an address of its family (either,
/// for a mock with no address), and for Unix sockets a path (as tokio sends to paths only).
fn reachable(
    sockname: Option<&SocketAddress>,
    addr: SocketAddress,
) -> Result<SocketAddress, SendToError> {
    match (sockname, &addr) {
        (Some(SocketAddress::Unix(_)), SocketAddress::Inet(_))
        | (Some(SocketAddress::Inet(_)), SocketAddress::Unix(_)) => {
            Err(SendToError::WrongFamily(addr))
        }
        (_, SocketAddress::Unix(UnixAddress::Pathname(_)) | SocketAddress::Inet(_)) => Ok(addr),
        (_, _) => Err(SendToError::Unaddressable(addr)),
    }
}

/// The reply to a [`SendTo`]: its outcome now, or once its queued datagram is sent.
enum SendReceipt {
    Done(io::Result<()>),
    Queued(SendTicket<WriteReply>),
}

impl MessageResponse<MockDatagramActor, SendTo> for SendReceipt {
    fn handle(self, _: &mut Context<MockDatagramActor>, tx: Option<OneshotSender<io::Result<()>>>) {
        let Some(tx) = tx else {
            return;
        };
        match self {
            SendReceipt::Done(result) => {
                let _ = tx.send(result);
            }
            SendReceipt::Queued(ticket) => ticket.register(WriteReply(tx)),
        }
    }
}

/// Test side → mock: the script changed.
#[derive(Message)]
#[rtype(result = "()")]
struct Pump;

impl Handler<Pump> for MockDatagramActor {
    type Result = ();

    fn handle(&mut self, _: Pump, ctx: &mut Context<Self>) {
        self.turn(ctx);
    }
}

/// Test side → mock: the close timeout passed.
#[derive(Message)]
#[rtype(result = "()")]
struct ExpireCloseTimeout;

impl Handler<ExpireCloseTimeout> for MockDatagramActor {
    type Result = ();

    fn handle(&mut self, _: ExpireCloseTimeout, ctx: &mut Context<Self>) {
        // The core's deadline is set when it is first asked for; the time is then at it.
        if let Some(deadline) = self.core.poll_timeout(Instant::now()) {
            self.core.handle_timeout(deadline);
        }
        self.turn(ctx);
    }
}

impl Handler<SendTo> for MockDatagramActor {
    type Result = SendReceipt;

    fn handle(&mut self, SendTo { data, addr }: SendTo, ctx: &mut Context<Self>) -> SendReceipt {
        let to = match self.core.send_refusal() {
            // Refused while closing whatever the destination, as a real endpoint does.
            Some(err) => Err(SendRefusal::Endpoint(err)),
            None => self
                .destination(addr.clone())
                .map_err(SendRefusal::Destination),
        };
        let decision = to.and_then(|to| {
            self.core
                .send(data.clone(), to)
                .map_err(SendRefusal::Endpoint)
        });
        let outbound = match decision {
            Ok(outbound) => outbound,
            Err(reason) => {
                self.shared.lock().record(DatagramSent::RefusedSendTo {
                    data,
                    addr,
                    reason: reason.clone(),
                });
                return SendReceipt::Done(Err(reason.into()));
            }
        };
        let stalled = {
            let mut state = self.shared.lock();
            state.record(DatagramSent::SendTo { data, addr });
            state.stalled
        };
        let receipt = match outbound {
            Outbound::Queued(ticket) => SendReceipt::Queued(ticket),
            // The socket takes nothing now: queued, as a real endpoint queues a datagram its
            // socket would block on.
            Outbound::Direct(data, to) if stalled => {
                SendReceipt::Queued(self.core.enqueue(data, to))
            }
            Outbound::Direct(data, to) => {
                self.core.handle_sent_direct(data.len());
                self.shared.lock().sent.push((data, to));
                SendReceipt::Done(Ok(()))
            }
        };
        self.turn(ctx);
        receipt
    }
}

impl Handler<Close> for MockDatagramActor {
    type Result = ();

    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) {
        {
            let mut state = self.shared.lock();
            state.record(DatagramSent::Close);
            if !self.core.is_closing() {
                state.end_by(Ending::Closed);
            }
        }
        self.core.close();
        self.turn(ctx);
    }
}

impl Handler<Abort> for MockDatagramActor {
    type Result = ();

    fn handle(&mut self, _: Abort, ctx: &mut Context<Self>) {
        {
            let mut state = self.shared.lock();
            state.record(DatagramSent::Abort);
            if !self.core.is_stopped() {
                // `Abort` overrides a `Close` under way.
                state.cause = Some(Ending::Aborted);
            }
        }
        self.core.abort();
        self.turn(ctx);
    }
}

impl Handler<IsClosing> for MockDatagramActor {
    type Result = bool;

    fn handle(&mut self, _: IsClosing, _: &mut Context<Self>) -> bool {
        self.core.is_closing()
    }
}

impl Handler<PauseReading> for MockDatagramActor {
    type Result = ();

    fn handle(&mut self, _: PauseReading, ctx: &mut Context<Self>) {
        self.shared.lock().record(DatagramSent::PauseReading);
        self.core.pause_reading();
        self.turn(ctx);
    }
}

impl Handler<ResumeReading> for MockDatagramActor {
    type Result = ();

    fn handle(&mut self, _: ResumeReading, ctx: &mut Context<Self>) {
        self.shared.lock().record(DatagramSent::ResumeReading);
        self.core.resume_reading();
        self.turn(ctx);
    }
}

impl Handler<IsReading> for MockDatagramActor {
    type Result = bool;

    fn handle(&mut self, _: IsReading, _: &mut Context<Self>) -> bool {
        self.core.is_reading()
    }
}

impl Handler<GetWriteBufferSize> for MockDatagramActor {
    type Result = usize;

    fn handle(&mut self, _: GetWriteBufferSize, _: &mut Context<Self>) -> usize {
        self.core.write_buffer_size()
    }
}

impl Handler<GetWriteBufferLimits> for MockDatagramActor {
    type Result = MessageResult<GetWriteBufferLimits>;

    fn handle(&mut self, _: GetWriteBufferLimits, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.core.write_buffer_limits().as_tuple())
    }
}

impl Handler<SetWriteBufferLimits> for MockDatagramActor {
    type Result = <SetWriteBufferLimits as Message>::Result;

    fn handle(&mut self, msg: SetWriteBufferLimits, ctx: &mut Context<Self>) -> Self::Result {
        self.shared
            .lock()
            .record(DatagramSent::SetWriteBufferLimits {
                high: msg.high,
                low: msg.low,
            });
        let result = self.core.set_write_buffer_limits(msg.high, msg.low);
        self.turn(ctx);
        result
    }
}

impl Handler<SetDatagramProtocol> for MockDatagramActor {
    type Result = MessageResult<SetDatagramProtocol>;

    fn handle(&mut self, msg: SetDatagramProtocol, ctx: &mut Context<Self>) -> Self::Result {
        self.shared
            .lock()
            .record(DatagramSent::SetDatagramProtocol {
                protocol: msg.0.clone(),
            });
        // Whatever is due goes to the protocol it was due to before the switch.
        self.deliver_events();
        let handles = crate::dev::Handles {
            write_flow: msg.0.handles_write_flow(),
            timeouts: false,
        };
        let old = mem::replace(&mut self.shared.lock().protocol, msg.0);
        self.core.set_protocol(handles);
        self.turn(ctx);
        MessageResult(old)
    }
}

impl Handler<GetExtraInfo> for MockDatagramActor {
    type Result = Option<ExtraInfo>;

    fn handle(&mut self, msg: GetExtraInfo, _: &mut Context<Self>) -> Option<ExtraInfo> {
        let value = match &*msg.name {
            keys::SOCKNAME => self.sockname.clone().map(ExtraInfo::from),
            keys::PEERNAME => self.peername.clone().map(ExtraInfo::from),
            name => self.shared.lock().options.extra.get(name).cloned(),
        };
        value.or(msg.default)
    }
}

impl Handler<GetStats> for MockDatagramActor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.core.stats())
    }
}

impl Handler<DeliveryAcked> for MockDatagramActor {
    type Result = ();

    fn handle(&mut self, msg: DeliveryAcked, ctx: &mut Context<Self>) {
        self.core.ack(msg.seq);
        self.turn(ctx);
    }
}

#[cfg(test)]
mod tests;
