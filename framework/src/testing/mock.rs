//! [`MockTransport`]: a transport with no socket, driven by the test.

use std::{
    borrow::Cow,
    collections::{BTreeSet, HashMap, VecDeque},
    fmt, io, mem,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use actix::{Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message, MessageResult};
use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use super::{Chunking, DEFAULT_EVENT_TIMEOUT};
use crate::{
    Abort, Ack, BufferedPlaintext, CanWriteEof, Close, ConnectionLost, ConnectionMade,
    DataReceived, DeliveryAcked, EofDecided, EofReceived, ExtraInfo, GetExtraInfo, GetProtocol,
    GetStats, GetWriteBufferLimits, GetWriteBufferSize, IntoProtocol, InvalidWriteBufferLimits,
    IsClosing, IsReading, PauseReading, PauseWriting, ProtocolHandle, ResumeReading, ResumeWriting,
    SetProtocol, SetWriteBufferLimits, SocketAddress, StartTls, TlsError, TransportHandle,
    TransportStats, Write, WriteBufferLimits, WriteEof, WriteError, WriteVectored, keys,
};

/// How often the mock checks that its protocol actor is still alive (the real transports'
/// death pact: a transport whose protocol stopped aborts).
const PROTOCOL_WATCH: Duration = Duration::from_millis(20);

/// How many scheduler turns in a row must pass with nothing moving before
/// [`MockTransport::settle`] calls the protocol idle. Each turn lets every actor of the test's
/// thread handle what it was sent; three cover a protocol that asks another actor (a chat room)
/// which answers back.
const IDLE_TURNS: usize = 3;

/// Something the protocol sent to the transport, recorded in order by a [`MockTransport`].
///
/// Queries (`IsClosing`, `GetExtraInfo`, `GetWriteBufferSize`, ...) are answered and not
/// recorded; everything that would change a real transport is.
#[derive(Debug)]
#[non_exhaustive]
pub enum Sent {
    /// A [`Write`], accepted.
    Write(Bytes),
    /// A [`WriteVectored`], accepted: its buffers, one write.
    WriteVectored(Vec<Bytes>),
    /// A write sent after `Close`, `Abort` or `WriteEof`: refused, as a real transport refuses
    /// it, and never part of [`MockTransport::written`].
    RefusedWrite {
        /// The bytes the protocol tried to write.
        data: Bytes,
        /// Why a real transport would refuse them.
        reason: WriteError,
    },
    /// [`WriteEof`].
    WriteEof,
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
    /// [`SetProtocol`]: the protocol switched to and the bytes handed over.
    SetProtocol {
        /// The new protocol.
        protocol: ProtocolHandle,
        /// The unconsumed tail the old protocol handed over.
        leftover: Bytes,
    },
    /// [`StartTls`]: what the upgrade asked for (the settings stay opaque).
    StartTls {
        /// What to do with plaintext read and not delivered.
        plaintext: BufferedPlaintext,
        /// The bytes handed to TLS with `feed_to_tls`.
        leftover: Bytes,
    },
    /// The protocol's answer to [`EofReceived`]: keep the half-open connection, or close.
    EofAnswered {
        /// Whether the protocol kept the connection open.
        keep_open: bool,
    },
}

impl Sent {
    /// The command's name, e.g. `"Write"`: for asserting on a sequence.
    pub fn name(&self) -> &'static str {
        match self {
            Sent::Write(_) => "Write",
            Sent::WriteVectored(_) => "WriteVectored",
            Sent::RefusedWrite { .. } => "RefusedWrite",
            Sent::WriteEof => "WriteEof",
            Sent::Close => "Close",
            Sent::Abort => "Abort",
            Sent::PauseReading => "PauseReading",
            Sent::ResumeReading => "ResumeReading",
            Sent::SetWriteBufferLimits { .. } => "SetWriteBufferLimits",
            Sent::SetProtocol { .. } => "SetProtocol",
            Sent::StartTls { .. } => "StartTls",
            Sent::EofAnswered { .. } => "EofAnswered",
        }
    }
}

/// How a [`MockTransport`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ending {
    /// The protocol sent `Close`.
    Closed,
    /// The protocol sent `Abort`.
    Aborted,
    /// The protocol answered the peer's EOF by closing (dropped the `EofReceived`).
    ClosedAtEof,
    /// The test ended the connection with [`MockTransport::lose`].
    Lost,
    /// The protocol actor stopped while attached, so the transport aborted (the death pact).
    ProtocolStopped,
}

/// Builds a [`MockTransport`] with scripted extra information and behaviour.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `connect` is awaited"]
pub struct MockBuilder {
    extra: HashMap<Cow<'static, str>, ExtraInfo>,
    can_write_eof: bool,
    hold_close: bool,
    start_tls: Result<(), TlsError>,
    tls_extra: HashMap<Cow<'static, str>, ExtraInfo>,
    timeout: Duration,
}

impl Default for MockBuilder {
    fn default() -> Self {
        MockBuilder {
            extra: HashMap::new(),
            can_write_eof: true,
            hold_close: false,
            start_tls: Ok(()),
            tls_extra: HashMap::new(),
            timeout: DEFAULT_EVENT_TIMEOUT,
        }
    }
}

impl MockBuilder {
    /// Answers `peername` with `addr`.
    pub fn peername(self, addr: impl Into<SocketAddress>) -> Self {
        self.extra(keys::PEERNAME, ExtraInfo::Address(addr.into()))
    }

    /// Answers `sockname` with `addr`.
    pub fn sockname(self, addr: impl Into<SocketAddress>) -> Self {
        self.extra(keys::SOCKNAME, ExtraInfo::Address(addr.into()))
    }

    /// Answers `GetExtraInfo` for `name` with `value` (any key, asyncio's or your own).
    pub fn extra(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<ExtraInfo>,
    ) -> Self {
        self.extra.insert(name.into(), value.into());
        self
    }

    /// Whether `CanWriteEof` is true and `WriteEof` succeeds (true by default; a TLS transport
    /// says false).
    pub fn can_write_eof(mut self, can: bool) -> Self {
        self.can_write_eof = can;
        self
    }

    /// Records `Close` without ending the connection, so the test sees what the protocol does
    /// while closing; [`MockTransport::lose`] ends it. By default a `Close` ends it at once, as
    /// a real transport with nothing left to flush does.
    pub fn hold_close(mut self) -> Self {
        self.hold_close = true;
        self
    }

    /// Answers every `StartTls` with this error and ends the connection with it, as a failed
    /// handshake does. By default a `StartTls` succeeds at once.
    pub fn refuse_start_tls(mut self, err: TlsError) -> Self {
        self.start_tls = Err(err);
        self
    }

    /// Answers `GetExtraInfo` for `name` with `value` once a `StartTls` has succeeded (the TLS
    /// keys: `cipher`, `peercert`, ...).
    pub fn tls_extra(
        mut self,
        name: impl Into<Cow<'static, str>>,
        value: impl Into<ExtraInfo>,
    ) -> Self {
        self.tls_extra.insert(name.into(), value.into());
        self
    }

    /// How long [`MockTransport::settle`] and the waits built on it may take before they fail
    /// the test ([`DEFAULT_EVENT_TIMEOUT`] by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Attaches `protocol` as a real transport would: it receives `ConnectionMade`, and this
    /// resolves once its handler has returned and released the acknowledgement, so whatever it
    /// sent from there (a greeting, `PauseReading`) is already recorded.
    ///
    /// Call it inside an actix `System` (`#[actix::test]`, [`run`](super::run)); the mock runs
    /// on the current arbiter. Start the protocol there too, so [`settle`](MockTransport::settle)
    /// can tell when it is idle.
    pub async fn connect(self, protocol: impl IntoProtocol) -> MockTransport {
        let mock = self.start(protocol);
        mock.settle().await;
        mock
    }

    /// Attaches `protocol` and returns at once, without waiting for `ConnectionMade` to be
    /// handled (for a protocol that keeps its acknowledgement).
    pub fn start(self, protocol: impl IntoProtocol) -> MockTransport {
        let (_, protocol) = protocol.into_protocol();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(self.clone(), protocol)),
            changed: Notify::new(),
        });
        let mut handle = None;
        let addr = MockActor::create(|ctx| {
            ctx.set_mailbox_capacity(0);
            // One handle, shared by the protocol and the test, as a real transport's is: what the
            // mock retains for after its end answers through both.
            let made = handle.insert(TransportHandle::new(ctx.address()));
            MockActor {
                shared: shared.clone(),
                handle: made.clone(),
            }
        });
        MockTransport {
            handle: handle.expect("made by create"),
            addr,
            shared,
            timeout: self.timeout,
        }
    }
}

/// A transport with no socket (Twisted's `StringTransport`, as an actor): the test feeds the
/// protocol events and reads back what it sent.
///
/// A protocol attached to it cannot tell it from a real one: it receives `ConnectionMade` with
/// a [`TransportHandle`], one `DataReceived` at a time (the next only once the previous one's
/// [`Ack`] is released), nothing while reading is paused, `EofReceived` after the data, and
/// `ConnectionLost` exactly once, last. What the protocol sends is recorded in order
/// ([`take_commands`](Self::take_commands), [`written`](Self::written)) and answered as a real transport
/// answers: writes after `Close` are refused, `SetProtocol` re-addresses the deliveries (the
/// leftover first), `Close` and `Abort` end the connection with `ConnectionLost(None)`.
///
/// Unlike a socket it never merges nor splits what the test feeds: each chunk is one
/// `DataReceived`, which is what makes a parser testable at every split point
/// ([`feed_chunked`](Self::feed_chunked), [`Chunking::every`]).
///
/// ```
/// use actix::prelude::*;
/// use switchboard_framework::{prelude::*, testing::MockTransport};
///
/// /// Answers every chunk with its length.
/// #[derive(Default)]
/// struct Counter(Option<TransportHandle>);
///
/// impl Actor for Counter {
///     type Context = Context<Self>;
/// }
///
/// impl Handler<ConnectionMade> for Counter {
///     type Result = ();
///     fn handle(&mut self, msg: ConnectionMade, _: &mut Context<Self>) {
///         msg.transport.write("hello\n");
///         self.0 = Some(msg.transport);
///     }
/// }
///
/// impl Handler<DataReceived> for Counter {
///     type Result = ();
///     fn handle(&mut self, msg: DataReceived, _: &mut Context<Self>) {
///         if let Some(transport) = &self.0 {
///             transport.write(format!("{}\n", msg.data.len()));
///         }
///     }
/// }
///
/// impl Handler<ConnectionLost> for Counter {
///     type Result = ();
///     fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
///         ctx.stop();
///     }
/// }
///
/// # switchboard_framework::testing::run(async {
/// let mock = MockTransport::connect(Counter::default().start()).await;
/// assert_eq!(mock.take_written(), "hello\n");
/// mock.feed("abc").await;
/// mock.feed("de").await;
/// assert_eq!(mock.take_written(), "3\n2\n");
/// assert!(!mock.eof().await, "closes at EOF, asyncio's default");
/// assert!(mock.is_ended());
/// # });
/// ```
#[derive(Clone)]
#[must_use = "the mock ends when every handle to it is dropped"]
pub struct MockTransport {
    addr: Addr<MockActor>,
    handle: TransportHandle,
    shared: Arc<Shared>,
    timeout: Duration,
}

impl MockTransport {
    /// A mock with no extra information, that can write EOF and upgrade to TLS.
    pub fn builder() -> MockBuilder {
        MockBuilder::default()
    }

    /// Attaches `protocol` to a default mock; see [`MockBuilder::connect`].
    pub async fn connect(protocol: impl IntoProtocol) -> MockTransport {
        MockTransport::builder().connect(protocol).await
    }

    /// The handle the protocol received, to send commands as another actor would.
    pub fn handle(&self) -> TransportHandle {
        self.handle.clone()
    }

    /// The protocol deliveries go to now (the last one switched to).
    pub fn protocol(&self) -> ProtocolHandle {
        self.lock().protocol.clone()
    }

    // ---- what the test sends the protocol ----

    /// Queues `data` as one `DataReceived` and returns at once. It is delivered once every
    /// earlier delivery was acknowledged and while reading is not paused.
    pub fn push(&self, data: impl Into<Bytes>) {
        let data = data.into();
        if !data.is_empty() {
            self.enqueue(Inbound::Data(data));
        }
    }

    /// Delivers `data` as one `DataReceived` and resolves once the protocol is idle again
    /// ([`settle`](Self::settle)). Empty data is never delivered, as no transport delivers it.
    pub async fn feed(&self, data: impl Into<Bytes>) {
        self.push(data);
        self.settle().await;
    }

    /// Delivers `data` cut as `chunking` says, one `DataReceived` per piece, then settles.
    pub async fn feed_chunked(&self, data: impl Into<Bytes>, chunking: &Chunking) {
        for chunk in chunking.split(&data.into()) {
            self.push(chunk);
        }
        self.settle().await;
    }

    /// Delivers `EofReceived` after every queued chunk and resolves with the protocol's answer
    /// once it is idle again: `true` if it kept the half-open connection, `false` if the
    /// transport closed (the default, and what happens to a protocol that did not opt in to
    /// `EofReceived`).
    pub async fn eof(&self) -> bool {
        self.enqueue(Inbound::Eof);
        self.settle().await;
        self.lock().eof_answer == Some(true)
    }

    /// Delivers `PauseWriting` (ignored unless the protocol opted in to write flow) and settles.
    /// Write-flow events do not wait behind queued data, so they reach a protocol that paused
    /// reading.
    /// The mock does not check that pause and resume alternate: the test decides.
    pub async fn pause_writing(&self) {
        self.enqueue(Inbound::PauseWriting);
        self.settle().await;
    }

    /// Delivers `ResumeWriting` and settles.
    pub async fn resume_writing(&self) {
        self.enqueue(Inbound::ResumeWriting);
        self.settle().await;
    }

    /// Ends the connection as a peer's reset or an I/O error does: `ConnectionLost(err)` to the
    /// protocol after the chunks already queued (dropping them instead if reading is paused, as
    /// a reset drops unread bytes), then nothing more. Settles.
    pub async fn lose(&self, err: Option<io::Error>) {
        self.enqueue(Inbound::Lost(err));
        self.settle().await;
    }

    /// Sets what `GetWriteBufferSize` answers (and `GetStats` reports), to act out a peer that
    /// reads slowly; pair it with [`pause_writing`](Self::pause_writing).
    pub fn set_write_buffer_size(&self, size: usize) {
        self.lock().write_buffer_size = size;
    }

    /// Resolves once the protocol is idle: every delivery acknowledged (or reading paused with
    /// chunks waiting, or the connection ended), and nothing moving between the protocol and the
    /// mock for a few scheduler turns. Fails the test after the builder's timeout, saying what
    /// it was waiting for (typically an `Ack` the protocol kept).
    ///
    /// Deterministic for protocols running on the test's thread, which is where `start()` puts
    /// an actor started from the test.
    pub async fn settle(&self) {
        let deadline = tokio::time::Instant::now() + self.timeout;
        'settling: loop {
            self.wait(deadline, "the protocol to become idle", State::is_settled)
                .await;
            let before = self.lock().progress;
            for _ in 0..IDLE_TURNS {
                tokio::task::yield_now().await;
                if self.lock().progress != before {
                    continue 'settling;
                }
            }
            return;
        }
    }

    /// Waits until the protocol has written at least `expected.len()` bytes not yet taken, then
    /// takes exactly that many and asserts they are `expected`. For replies that come after
    /// work the mock cannot see (a timer, another arbiter).
    pub async fn expect_written(&self, expected: impl AsRef<[u8]>) {
        let expected = expected.as_ref();
        let deadline = tokio::time::Instant::now() + self.timeout;
        self.wait(deadline, "the expected bytes to be written", |state| {
            state.unread.len() >= expected.len()
        })
        .await;
        let got = self.lock().unread.split_to(expected.len()).freeze();
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected),
            "written bytes differ"
        );
    }

    /// Waits until the protocol actor has stopped.
    pub async fn protocol_stopped(&self) {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let protocol = self.protocol();
        while protocol.is_alive() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the protocol actor did not stop within {:?}",
                self.timeout
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    // ---- what the protocol sent ----

    /// Every byte the protocol wrote and the transport accepted, concatenated, from the start.
    pub fn written(&self) -> Bytes {
        let state = self.lock();
        let mut all = BytesMut::new();
        for write in &state.writes {
            all.extend_from_slice(write);
        }
        all.freeze()
    }

    /// The bytes written since the last `take_written` (Twisted's `value()` then `clear()`).
    pub fn take_written(&self) -> Bytes {
        self.lock().unread.split().freeze()
    }

    /// Every accepted write, one entry per `Write` (a `WriteVectored` is one entry, its buffers
    /// joined).
    pub fn writes(&self) -> Vec<Bytes> {
        self.lock().writes.clone()
    }

    /// How many commands the protocol has sent so far.
    pub fn command_count(&self) -> usize {
        self.lock().log.len()
    }

    /// The names of every recorded command, in order: `["Write", "SetProtocol", "Close"]`.
    pub fn command_names(&self) -> Vec<&'static str> {
        self.lock().log.iter().map(Sent::name).collect()
    }

    /// The names of the commands recorded since the last `take_commands` (or this), in order.
    pub fn take_command_names(&self) -> Vec<&'static str> {
        self.take_commands().iter().map(Sent::name).collect()
    }

    /// The commands recorded since the last `take_commands`, in order.
    pub fn take_commands(&self) -> Vec<Sent> {
        let mut state = self.lock();
        let to = state.log.len();
        let from = mem::replace(&mut state.log_taken, to);
        state.log[from..].iter().map(Sent::duplicate).collect()
    }

    /// Whether the protocol sent `Close`, or `Abort`, or the connection ended otherwise
    /// (asyncio's `is_closing()`).
    pub fn is_closing(&self) -> bool {
        let state = self.lock();
        state.closing || state.ending.is_some()
    }

    /// Whether the connection has ended: `ConnectionLost` was delivered (or the protocol died).
    pub fn is_ended(&self) -> bool {
        self.lock().ending.is_some()
    }

    /// How the connection ended, if it has.
    pub fn ending(&self) -> Option<Ending> {
        self.lock().ending
    }

    /// Whether the protocol shut the write side down with `WriteEof`.
    pub fn is_eof_written(&self) -> bool {
        self.lock().eof_written
    }

    /// Whether deliveries are flowing: not paused by `PauseReading`, no EOF fed, not closing.
    pub fn is_reading(&self) -> bool {
        self.lock().is_reading()
    }

    /// The counters, as `GetStats` answers them.
    pub fn stats(&self) -> TransportStats {
        self.lock().stats()
    }

    fn enqueue(&self, inbound: Inbound) {
        self.lock().inbound.push_back(inbound);
        self.addr.do_send(Pump);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    async fn wait(
        &self,
        deadline: tokio::time::Instant,
        what: &str,
        mut ready: impl FnMut(&mut State) -> bool,
    ) {
        loop {
            let changed = self.shared.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.lock();
                if ready(&mut state) {
                    return;
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let state = self.lock();
                panic!(
                    "MockTransport: timed out after {:?} waiting for {what}; {}",
                    self.timeout,
                    state.describe()
                );
            }
        }
    }
}

impl fmt::Debug for MockTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockTransport")
            .field("state", &self.lock().describe())
            .finish()
    }
}

impl Sent {
    /// A copy for the test (a `Sent` is not `Clone` only because `ProtocolHandle` compares by
    /// actor, which a derived `PartialEq` could not say).
    fn duplicate(&self) -> Sent {
        match self {
            Sent::Write(data) => Sent::Write(data.clone()),
            Sent::WriteVectored(bufs) => Sent::WriteVectored(bufs.clone()),
            Sent::RefusedWrite { data, reason } => Sent::RefusedWrite {
                data: data.clone(),
                reason: *reason,
            },
            Sent::WriteEof => Sent::WriteEof,
            Sent::Close => Sent::Close,
            Sent::Abort => Sent::Abort,
            Sent::PauseReading => Sent::PauseReading,
            Sent::ResumeReading => Sent::ResumeReading,
            Sent::SetWriteBufferLimits { high, low } => Sent::SetWriteBufferLimits {
                high: *high,
                low: *low,
            },
            Sent::SetProtocol { protocol, leftover } => Sent::SetProtocol {
                protocol: protocol.clone(),
                leftover: leftover.clone(),
            },
            Sent::StartTls {
                plaintext,
                leftover,
            } => Sent::StartTls {
                plaintext: *plaintext,
                leftover: leftover.clone(),
            },
            Sent::EofAnswered { keep_open } => Sent::EofAnswered {
                keep_open: *keep_open,
            },
        }
    }
}

impl Clone for Sent {
    fn clone(&self) -> Self {
        self.duplicate()
    }
}

struct Shared {
    state: Mutex<State>,
    changed: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has already failed; its state is still
        // the best account of what happened.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What the test queued for the protocol, delivered in order.
#[derive(Debug)]
enum Inbound {
    Data(Bytes),
    Eof,
    PauseWriting,
    ResumeWriting,
    Lost(Option<io::Error>),
}

struct State {
    options: MockBuilder,
    protocol: ProtocolHandle,
    inbound: VecDeque<Inbound>,
    /// Deliveries (`ConnectionMade`, `DataReceived`) not yet acknowledged.
    outstanding: BTreeSet<u64>,
    next_seq: u64,
    /// An `EofReceived` was delivered and its answer has not come back.
    eof_pending: bool,
    eof_answer: Option<bool>,
    eof_received: bool,
    paused: bool,
    /// `PauseWriting` was delivered last (not `ResumeWriting`): a switched-to protocol hears it.
    write_paused: bool,
    closing: bool,
    eof_written: bool,
    tls: bool,
    ending: Option<Ending>,
    log: Vec<Sent>,
    log_taken: usize,
    writes: Vec<Bytes>,
    unread: BytesMut,
    limits: WriteBufferLimits,
    write_buffer_size: usize,
    bytes_received: u64,
    bytes_sent: u64,
    deliveries: u64,
    read_in_flight: usize,
    /// Counts every change, so `settle` can tell whether anything moved.
    progress: u64,
}

impl State {
    fn new(options: MockBuilder, protocol: ProtocolHandle) -> Self {
        State {
            options,
            protocol,
            inbound: VecDeque::new(),
            outstanding: BTreeSet::new(),
            next_seq: 0,
            eof_pending: false,
            eof_answer: None,
            eof_received: false,
            paused: false,
            write_paused: false,
            closing: false,
            eof_written: false,
            tls: false,
            ending: None,
            log: Vec::new(),
            log_taken: 0,
            writes: Vec::new(),
            unread: BytesMut::new(),
            limits: WriteBufferLimits::default(),
            write_buffer_size: 0,
            bytes_received: 0,
            bytes_sent: 0,
            deliveries: 0,
            read_in_flight: 0,
            progress: 0,
        }
    }

    fn is_settled(&mut self) -> bool {
        self.ending.is_some()
            || (self.next_deliverable().is_none()
                && self.outstanding.is_empty()
                && !self.eof_pending)
    }

    /// The position of the next queued event that can be delivered now. Data and EOF keep
    /// their order and wait for the previous acknowledgement and for reading; write-flow events
    /// never wait for them (a real transport's write side is independent of its read side); a
    /// lost connection comes after the data unless reading is paused, when it drops the data as
    /// a reset drops unread bytes.
    fn next_deliverable(&self) -> Option<usize> {
        let reads_blocked =
            self.paused || self.closing || !self.outstanding.is_empty() || self.eof_pending;
        for (i, inbound) in self.inbound.iter().enumerate() {
            match inbound {
                Inbound::Data(_) | Inbound::Eof if reads_blocked => {}
                Inbound::Data(_) | Inbound::Eof => return Some(i),
                Inbound::PauseWriting | Inbound::ResumeWriting => return Some(i),
                Inbound::Lost(_) if i == 0 || self.paused => return Some(i),
                Inbound::Lost(_) => return None,
            }
        }
        None
    }

    fn is_reading(&self) -> bool {
        !self.paused && !self.eof_received && !self.closing && self.ending.is_none()
    }

    fn stats(&self) -> TransportStats {
        let mut stats = TransportStats::default();
        stats.bytes_received = self.bytes_received;
        stats.bytes_sent = self.bytes_sent;
        stats.deliveries = self.deliveries;
        stats.read_buffer_size = self
            .inbound
            .iter()
            .map(|inbound| match inbound {
                Inbound::Data(data) => data.len(),
                _ => 0,
            })
            .sum();
        stats.read_in_flight = self.read_in_flight;
        stats.write_buffer_size = self.write_buffer_size;
        stats
    }

    fn record(&mut self, sent: Sent) {
        self.log.push(sent);
    }

    fn describe(&self) -> String {
        format!(
            "deliveries not acknowledged: {:?}, EOF answer pending: {}, queued: {:?}, reading \
             paused: {}, ended: {:?}, commands so far: {:?}",
            self.outstanding,
            self.eof_pending,
            self.inbound,
            self.paused,
            self.ending,
            self.log.iter().map(Sent::name).collect::<Vec<_>>()
        )
    }
}

/// The actor a protocol is attached to.
struct MockActor {
    shared: Arc<Shared>,
    handle: TransportHandle,
}

impl Actor for MockActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let seq = {
            let mut state = self.shared.lock();
            state.next_seq += 1;
            let seq = state.next_seq;
            state.outstanding.insert(seq);
            seq
        };
        let protocol = self.shared.lock().protocol.clone();
        protocol.deliver(ConnectionMade::new(
            self.handle.clone(),
            Ack::new(self.handle.clone(), seq),
        ));
        ctx.run_interval(PROTOCOL_WATCH, |mock, ctx| {
            let alive = mock.shared.lock().protocol.is_alive();
            if !alive {
                mock.end(ctx, Ending::ProtocolStopped, None);
            }
        });
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // Stopped other than through `end` (the System shutting down): the protocol still hears
        // of it once, as from a real transport.
        let protocol = {
            let mut state = self.shared.lock();
            if state.ending.is_some() {
                None
            } else {
                state.ending = Some(Ending::Lost);
                Some(state.protocol.clone())
            }
        };
        if let Some(protocol) = protocol {
            self.retain_extra_info();
            protocol.deliver(ConnectionLost(None));
        }
        self.changed();
    }
}

impl MockActor {
    fn changed(&self) {
        self.shared.lock().progress += 1;
        self.shared.changed.notify_waiters();
    }

    /// Delivers what can be delivered now.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        loop {
            let mut state = self.shared.lock();
            if state.ending.is_some() {
                return;
            }
            let protocol = state.protocol.clone();
            let Some(next) = state.next_deliverable() else {
                return;
            };
            let next = state.inbound.remove(next).expect("a queued event");
            match next {
                Inbound::Data(data) => {
                    state.next_seq += 1;
                    let seq = state.next_seq;
                    state.outstanding.insert(seq);
                    state.bytes_received += data.len() as u64;
                    state.deliveries += 1;
                    state.read_in_flight = data.len();
                    state.progress += 1;
                    drop(state);
                    protocol.deliver(DataReceived::new(data, Ack::new(self.handle.clone(), seq)));
                }
                Inbound::Eof => {
                    state.eof_pending = true;
                    state.eof_received = true;
                    state.progress += 1;
                    drop(state);
                    protocol.deliver(EofReceived::new(self.handle.clone()));
                }
                Inbound::PauseWriting => {
                    state.write_paused = true;
                    state.progress += 1;
                    drop(state);
                    protocol.deliver(PauseWriting);
                }
                Inbound::ResumeWriting => {
                    state.write_paused = false;
                    state.progress += 1;
                    drop(state);
                    protocol.deliver(ResumeWriting);
                }
                Inbound::Lost(err) => {
                    drop(state);
                    self.end(ctx, Ending::Lost, err);
                    return;
                }
            }
        }
    }

    /// Ends the connection: `ConnectionLost(err)` to the protocol (if it is alive), then stop.
    fn end(&mut self, ctx: &mut Context<Self>, ending: Ending, err: Option<io::Error>) {
        let protocol = {
            let mut state = self.shared.lock();
            if state.ending.is_some() {
                return;
            }
            state.ending = Some(ending);
            state.closing = true;
            state.progress += 1;
            state.protocol.clone()
        };
        self.retain_extra_info();
        if ending != Ending::ProtocolStopped {
            protocol.deliver(ConnectionLost(err));
        }
        ctx.stop();
        self.changed();
    }

    /// Records the scripted extra information on the handle, as a real transport does when it
    /// lets go of its socket: it answers after the end, but for the descriptors.
    fn retain_extra_info(&self) {
        let state = self.shared.lock();
        let tls = state.tls.then_some(&state.options.tls_extra);
        for (name, value) in state.options.extra.iter().chain(tls.into_iter().flatten()) {
            if name != keys::SOCKET && name != keys::PIPE {
                self.handle.retain_extra_info(name.clone(), value.clone());
            }
        }
    }

    fn refuse_reason(&self) -> Option<WriteError> {
        let state = self.shared.lock();
        if state.ending == Some(Ending::Aborted) || state.ending == Some(Ending::ProtocolStopped) {
            Some(WriteError::Aborted)
        } else if state.closing || state.ending.is_some() {
            Some(WriteError::Closing)
        } else if state.eof_written {
            Some(WriteError::AfterEof)
        } else {
            None
        }
    }

    fn accept_write(&mut self, data: Bytes, sent: Sent) -> io::Result<()> {
        if let Some(reason) = self.refuse_reason() {
            tracing::warn!(%reason, bytes = data.len(), "mock transport refused a write");
            self.shared
                .lock()
                .record(Sent::RefusedWrite { data, reason });
            self.changed();
            return Err(reason.into());
        }
        {
            let mut state = self.shared.lock();
            state.bytes_sent += data.len() as u64;
            state.unread.extend_from_slice(&data);
            state.writes.push(data);
            state.record(sent);
        }
        self.changed();
        Ok(())
    }
}

/// Test side → mock: something was queued.
#[derive(Message)]
#[rtype(result = "()")]
struct Pump;

impl Handler<Pump> for MockActor {
    type Result = ();

    fn handle(&mut self, _: Pump, ctx: &mut Context<Self>) {
        self.pump(ctx);
        self.changed();
    }
}

impl Handler<DeliveryAcked> for MockActor {
    type Result = ();

    fn handle(&mut self, msg: DeliveryAcked, ctx: &mut Context<Self>) {
        {
            let mut state = self.shared.lock();
            state.outstanding.remove(&msg.seq);
            if state.outstanding.is_empty() {
                state.read_in_flight = 0;
            }
        }
        self.pump(ctx);
        self.changed();
    }
}

impl Handler<EofDecided> for MockActor {
    type Result = ();

    fn handle(&mut self, msg: EofDecided, ctx: &mut Context<Self>) {
        {
            let mut state = self.shared.lock();
            state.eof_pending = false;
            state.eof_answer = Some(msg.keep_open);
            state.record(Sent::EofAnswered {
                keep_open: msg.keep_open,
            });
        }
        if !msg.keep_open {
            self.end(ctx, Ending::ClosedAtEof, None);
        }
        self.pump(ctx);
        self.changed();
    }
}

impl Handler<Write> for MockActor {
    type Result = io::Result<()>;

    fn handle(&mut self, Write(data): Write, _: &mut Context<Self>) -> io::Result<()> {
        self.accept_write(data.clone(), Sent::Write(data))
    }
}

impl Handler<WriteVectored> for MockActor {
    type Result = io::Result<()>;

    fn handle(
        &mut self,
        WriteVectored(bufs): WriteVectored,
        _: &mut Context<Self>,
    ) -> io::Result<()> {
        let joined = bufs.concat();
        self.accept_write(joined.into(), Sent::WriteVectored(bufs))
    }
}

impl Handler<WriteEof> for MockActor {
    type Result = io::Result<()>;

    fn handle(&mut self, _: WriteEof, _: &mut Context<Self>) -> io::Result<()> {
        let result = {
            let mut state = self.shared.lock();
            state.record(Sent::WriteEof);
            if !state.options.can_write_eof {
                Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "this transport cannot write EOF",
                ))
            } else if state.closing {
                Err(WriteError::Closing.into())
            } else {
                state.eof_written = true;
                Ok(())
            }
        };
        self.changed();
        result
    }
}

impl Handler<CanWriteEof> for MockActor {
    type Result = bool;

    fn handle(&mut self, _: CanWriteEof, _: &mut Context<Self>) -> bool {
        self.shared.lock().options.can_write_eof
    }
}

impl Handler<Close> for MockActor {
    type Result = ();

    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) {
        let hold = {
            let mut state = self.shared.lock();
            state.record(Sent::Close);
            state.closing = true;
            state.options.hold_close
        };
        if !hold {
            self.end(ctx, Ending::Closed, None);
        }
        self.changed();
    }
}

impl Handler<Abort> for MockActor {
    type Result = ();

    fn handle(&mut self, _: Abort, ctx: &mut Context<Self>) {
        self.shared.lock().record(Sent::Abort);
        self.end(ctx, Ending::Aborted, None);
        self.changed();
    }
}

impl Handler<IsClosing> for MockActor {
    type Result = bool;

    fn handle(&mut self, _: IsClosing, _: &mut Context<Self>) -> bool {
        let state = self.shared.lock();
        state.closing || state.ending.is_some()
    }
}

impl Handler<PauseReading> for MockActor {
    type Result = ();

    fn handle(&mut self, _: PauseReading, _: &mut Context<Self>) {
        {
            let mut state = self.shared.lock();
            state.record(Sent::PauseReading);
            state.paused = true;
        }
        self.changed();
    }
}

impl Handler<ResumeReading> for MockActor {
    type Result = ();

    fn handle(&mut self, _: ResumeReading, ctx: &mut Context<Self>) {
        {
            let mut state = self.shared.lock();
            state.record(Sent::ResumeReading);
            state.paused = false;
        }
        self.pump(ctx);
        self.changed();
    }
}

impl Handler<IsReading> for MockActor {
    type Result = bool;

    fn handle(&mut self, _: IsReading, _: &mut Context<Self>) -> bool {
        self.shared.lock().is_reading()
    }
}

impl Handler<GetWriteBufferSize> for MockActor {
    type Result = usize;

    fn handle(&mut self, _: GetWriteBufferSize, _: &mut Context<Self>) -> usize {
        self.shared.lock().write_buffer_size
    }
}

impl Handler<GetWriteBufferLimits> for MockActor {
    type Result = MessageResult<GetWriteBufferLimits>;

    fn handle(
        &mut self,
        _: GetWriteBufferLimits,
        _: &mut Context<Self>,
    ) -> MessageResult<GetWriteBufferLimits> {
        MessageResult(self.shared.lock().limits.as_tuple())
    }
}

impl Handler<SetWriteBufferLimits> for MockActor {
    type Result = Result<(), InvalidWriteBufferLimits>;

    fn handle(
        &mut self,
        msg: SetWriteBufferLimits,
        _: &mut Context<Self>,
    ) -> Result<(), InvalidWriteBufferLimits> {
        let result = {
            let mut state = self.shared.lock();
            state.record(Sent::SetWriteBufferLimits {
                high: msg.high,
                low: msg.low,
            });
            WriteBufferLimits::from_options(msg.high, msg.low).map(|limits| {
                state.limits = limits;
            })
        };
        self.changed();
        result
    }
}

impl Handler<SetProtocol> for MockActor {
    type Result = MessageResult<SetProtocol>;

    fn handle(&mut self, msg: SetProtocol, _: &mut Context<Self>) -> MessageResult<SetProtocol> {
        let SetProtocol { protocol, leftover } = msg;
        let (previous, seq, write_paused) = {
            let mut state = self.shared.lock();
            state.record(Sent::SetProtocol {
                protocol: protocol.clone(),
                leftover: leftover.clone(),
            });
            if !leftover.is_empty() {
                state.inbound.push_front(Inbound::Data(leftover));
            }
            state.next_seq += 1;
            let seq = state.next_seq;
            state.outstanding.insert(seq);
            let previous = mem::replace(&mut state.protocol, protocol.clone());
            (previous, seq, state.write_paused)
        };
        protocol.deliver(ConnectionMade::new(
            self.handle.clone(),
            Ack::new(self.handle.clone(), seq),
        ));
        if write_paused {
            protocol.deliver(PauseWriting);
        }
        self.changed();
        MessageResult(previous)
    }
}

impl Handler<GetProtocol> for MockActor {
    type Result = MessageResult<GetProtocol>;

    fn handle(&mut self, _: GetProtocol, _: &mut Context<Self>) -> MessageResult<GetProtocol> {
        MessageResult(self.shared.lock().protocol.clone())
    }
}

impl Handler<GetExtraInfo> for MockActor {
    type Result = Option<ExtraInfo>;

    fn handle(&mut self, msg: GetExtraInfo, _: &mut Context<Self>) -> Option<ExtraInfo> {
        let state = self.shared.lock();
        let scripted = state.options.extra.get(&msg.name);
        let tls = state
            .tls
            .then(|| state.options.tls_extra.get(&msg.name))
            .flatten();
        tls.or(scripted).cloned().or(msg.default)
    }
}

impl Handler<GetStats> for MockActor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> MessageResult<GetStats> {
        MessageResult(self.shared.lock().stats())
    }
}

impl Handler<StartTls> for MockActor {
    type Result = Result<(), TlsError>;

    fn handle(&mut self, msg: StartTls, ctx: &mut Context<Self>) -> Result<(), TlsError> {
        let result = {
            let mut state = self.shared.lock();
            state.record(Sent::StartTls {
                plaintext: msg.plaintext,
                leftover: msg.leftover,
            });
            // Plaintext queued behind the upgrade is what a STARTTLS injection would carry; a
            // real transport discards it unless told to feed it to TLS.
            state
                .inbound
                .retain(|inbound| !matches!(inbound, Inbound::Data(_)));
            let result = state.options.start_tls.clone();
            state.tls = result.is_ok();
            result
        };
        if let Err(err) = &result {
            self.end(ctx, Ending::Lost, Some(io::Error::other(err.clone())));
        }
        self.changed();
        result
    }
}
