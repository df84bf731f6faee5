//! [`MockTransport`]: a transport with no socket, driven by the test.

use std::{
    borrow::Cow,
    collections::{HashMap, VecDeque},
    fmt, io, mem,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use actix::{
    Actor, ActorContext, ActorFuture, ActorFutureExt, Addr, AsyncContext, Context, Handler,
    Message, MessageResult, ResponseFuture, fut,
};
use bytes::{Bytes, BytesMut};
use switchboard_core::stream::{
    DEFAULT_READ_BUFFER_LIMIT, Event, Leftover, StreamCore, StreamKind, StreamSettings,
    UpgradeRefusal,
};
use tokio::sync::{Notify, oneshot};

use super::{Chunking, DEFAULT_EVENT_TIMEOUT};
use crate::dev::{DeliveryAcked, EofDecided, ProtocolWatch, Watchable, WriteReceipt, WriteReply};
use crate::{
    Abort, Ack, BufferedPlaintext, CanWriteEof, Close, ConnectionLost, ConnectionMade,
    DataReceived, Drain, EofReceived, ExtraInfo, GetExtraInfo, GetProtocol, GetStats,
    GetWriteBufferLimits, GetWriteBufferSize, IntoProtocol, InvalidWriteBufferLimits, IsClosing,
    IsReading, PauseReading, PauseWriting, ProtocolHandle, ResumeReading, ResumeWriting,
    SetProtocol, SetWriteBufferLimits, SocketAddress, StartTls, TimedOut, TlsError, TlsErrorKind,
    TransportHandle, TransportStats, Write, WriteBufferLimits, WriteEof, WriteError, WriteVectored,
    keys,
};

/// How many scheduler turns in a row must pass with nothing moving before
/// [`MockTransport::settle`] calls the protocol idle. Each turn lets every actor of the test's
/// thread handle what it was sent; three cover a protocol that asks another actor (a chat room)
/// which answers back.
pub(super) const IDLE_TURNS: usize = 3;

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
    /// The I/O object's kind, when it is not a socket (the pipes of the subprocess mock).
    kind: Option<StreamKind>,
    max_write_buffer: usize,
    idle_timeout: Option<Duration>,
    first_byte_timeout: Option<Duration>,
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
            kind: None,
            max_write_buffer: crate::DEFAULT_MAX_WRITE_BUFFER,
            idle_timeout: None,
            first_byte_timeout: None,
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

    /// The most bytes the write buffer may hold before the connection is aborted with
    /// [`WriteError::BufferFull`] ([`DEFAULT_MAX_WRITE_BUFFER`](crate::DEFAULT_MAX_WRITE_BUFFER)
    /// by default, as a real transport's).
    pub fn max_write_buffer(mut self, max: usize) -> Self {
        self.max_write_buffer = max;
        self
    }

    /// An idle timeout, as `StreamConfig::idle_timeout` sets on a real transport. The mock's
    /// clock moves only with [`MockTransport::advance`], so a test decides when it runs out.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// A first-byte timeout, as `StreamConfig::first_byte_timeout` sets on a real transport;
    /// on the mock's clock, like [`idle_timeout`](Self::idle_timeout).
    pub fn first_byte_timeout(mut self, timeout: Duration) -> Self {
        self.first_byte_timeout = Some(timeout);
        self
    }

    /// Scripts an I/O object of this kind instead of a socket: the subprocess mock's pipes are
    /// read-only and write-only streams.
    pub(super) fn kind(mut self, kind: StreamKind) -> Self {
        self.kind = Some(kind);
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
        self.attach(protocol).0
    }

    /// [`start`](Self::start), also returning what the protocol's [`IntoProtocol`] gives back
    /// (its `Addr`).
    pub fn attach<P: IntoProtocol>(self, protocol: P) -> (MockTransport, P::Output) {
        let mut parts = None;
        let kind = self.kind.unwrap_or(StreamKind {
            can_write_eof: self.can_write_eof,
            ..StreamKind::socket()
        });
        let settings = StreamSettings {
            write_buffer_limits: WriteBufferLimits::default(),
            limits_chosen: false,
            read_buffer_limit: DEFAULT_READ_BUFFER_LIMIT,
            // A stalled peer waits for the test.
            write_stall_timeout: None,
            close_drain_timeout: Duration::ZERO,
            max_write_buffer: self.max_write_buffer,
            idle_timeout: self.idle_timeout,
            first_byte_timeout: self.first_byte_timeout,
        };
        let addr = MockActor::create(|ctx| {
            ctx.set_mailbox_capacity(0);
            // One handle, shared by the protocol and the test, as a real transport's is: what the
            // mock retains for after its end answers through both.
            let made = TransportHandle::new(ctx.address());
            let (output, protocol) = protocol.into_protocol(&made);
            let mut core = StreamCore::new(settings, kind);
            core.set_handles(protocol.handles());
            let shared = Arc::new(Shared {
                state: Mutex::new(State::new(self.clone(), protocol)),
                changed: Notify::new(),
            });
            parts = Some((made.clone(), shared.clone(), output));
            MockActor {
                core,
                shared,
                handle: made,
                now: Instant::now(),
            }
        });
        let (handle, shared, output) = parts.expect("made by create");
        let mock = MockTransport {
            handle,
            addr,
            shared,
            timeout: self.timeout,
        };
        (mock, output)
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
/// It is the transport a protocol meets in production: the same I/O-free `StreamCore` that runs
/// every TCP, Unix, TLS and pipe transport makes every decision, with the test's script in
/// place of the socket. Unlike a socket the script never merges what the test feeds: each chunk
/// is one `DataReceived` (one over the read-buffer limit, 256 KiB, arrives in pieces), which is
/// what makes a parser testable at every split point ([`feed_chunked`](Self::feed_chunked),
/// [`Chunking::every`]).
///
/// ```
/// use switchboard_framework::{prelude::*, testing::MockTransport};
///
/// /// Says hello, then answers every chunk with its length.
/// struct Counter;
///
/// impl Protocol for Counter {
///     type Codec = Raw;
///     fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
///         cx.write("hello\n");
///     }
///     fn data_received(&mut self, data: Bytes, cx: &mut Ctx<'_, Self>) {
///         cx.write(format!("{}\n", data.len()));
///     }
/// }
///
/// # switchboard_framework::testing::run(async {
/// let mock = MockTransport::connect(Counter).await;
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
    /// once it is idle again: `true` if the half-open connection stays open, `false` if the
    /// transport closed: the default, what happens to a protocol that did not opt in to
    /// `EofReceived`, and what a transport that cannot half-close
    /// ([`MockBuilder::can_write_eof`]`(false)`, or after a `StartTls`) does whatever the
    /// protocol answers, as a real one does.
    pub async fn eof(&self) -> bool {
        self.enqueue(Inbound::Eof);
        self.settle().await;
        self.lock().eof_kept == Some(true)
    }

    /// The peer stops reading: its socket counts as full, so the protocol receives
    /// `PauseWriting` (ignored unless it opted in to write flow), and what it writes from now
    /// on stays in the transport's write buffer (`GetWriteBufferSize` counts it) until
    /// [`resume_writing`](Self::resume_writing). Settles. Write-flow changes do not wait behind
    /// queued data, so they reach a protocol that paused reading. As on a real transport,
    /// `PauseWriting` and `ResumeWriting` strictly alternate: pausing a paused peer again
    /// changes nothing.
    pub async fn pause_writing(&self) {
        self.enqueue(Inbound::PauseWriting);
        self.settle().await;
    }

    /// The peer reads again: everything buffered goes out, and the protocol receives
    /// `ResumeWriting` once the buffer is at its low-water mark. Settles.
    pub async fn resume_writing(&self) {
        self.enqueue(Inbound::ResumeWriting);
        self.settle().await;
    }

    /// Moves the mock's clock (which moves only so) forward by `elapsed`: an idle or first-byte
    /// timeout of the builder that runs out tells a protocol that handles
    /// [`TimedOut`](crate::TimedOut), or ends the connection, as on a real transport. Settles.
    pub async fn advance(&self, elapsed: Duration) {
        self.addr.do_send(Elapse(elapsed));
        self.settle().await;
    }

    /// Ends the connection as a peer's reset or an I/O error does: `ConnectionLost(err)` to the
    /// protocol after the chunks already queued (dropping them instead if reading is paused, as
    /// a reset drops unread bytes), then nothing more. Settles.
    pub async fn lose(&self, err: Option<io::Error>) {
        self.enqueue(Inbound::Lost(err));
        self.settle().await;
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

    /// Every byte that went out to the peer, in order, from the start: what the protocol wrote,
    /// but for what waits in the write buffer while the peer is stalled
    /// ([`pause_writing`](Self::pause_writing)).
    pub fn written(&self) -> Bytes {
        self.lock().wire.clone().freeze()
    }

    /// The bytes written since the last `take_written` (Twisted's `value()` then `clear()`).
    pub fn take_written(&self) -> Bytes {
        self.lock().unread.split().freeze()
    }

    /// Every accepted write, one entry per `Write` (a `WriteVectored` is one entry, its buffers
    /// joined), whether it went out yet or not.
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
        state.snapshot.closing || state.ending.is_some()
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
        self.lock().snapshot.eof_written
    }

    /// Whether deliveries are flowing: not paused by `PauseReading`, no EOF fed, not closing.
    pub fn is_reading(&self) -> bool {
        let state = self.lock();
        state.snapshot.reading && state.ending.is_none()
    }

    /// The counters, as `GetStats` answers them.
    pub fn stats(&self) -> TransportStats {
        self.lock().snapshot.stats
    }

    /// Counts every change the mock made, for the settling of a mock built on this one (the
    /// subprocess mock's pipes).
    pub(super) fn progress(&self) -> u64 {
        self.lock().progress
    }

    fn enqueue(&self, inbound: Inbound) {
        let mut state = self.lock();
        match inbound {
            Inbound::PauseWriting | Inbound::ResumeWriting => state.flow_scripted += 1,
            Inbound::Lost(_) => state.lost_scripted += 1,
            Inbound::Data(_) | Inbound::Eof => {}
        }
        state.script.push_back(inbound);
        drop(state);
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

/// What the test scripted for the connection's far side, played in order.
#[derive(Debug)]
enum Inbound {
    /// Bytes the peer sends: read as one chunk, delivered as one `DataReceived`.
    Data(Bytes),
    /// The peer's EOF.
    Eof,
    /// The peer stops reading: the socket takes nothing more and counts as full.
    PauseWriting,
    /// The peer reads again: everything written so far goes out.
    ResumeWriting,
    /// The connection breaks (with an error) or ends from below (without).
    Lost(Option<io::Error>),
}

/// What the test can see of the connection: its script, what the protocol sent, and a snapshot
/// of the core's state taken after each of the mock's turns. The decisions are the core's.
struct State {
    options: MockBuilder,
    protocol: ProtocolHandle,
    script: VecDeque<Inbound>,
    /// How many write-flow changes and losses the script holds, so that a long script of data
    /// is not searched for them at every turn.
    flow_scripted: usize,
    lost_scripted: usize,
    /// The peer stopped reading.
    peer_stalled: bool,
    /// An `EofReceived` was delivered and its answer has not come back.
    eof_pending: bool,
    /// Whether the protocol's answer to the EOF kept the connection open.
    eof_kept: Option<bool>,
    /// What ends the connection, as far as the mock can tell, once the core ends it.
    cause: Option<Ending>,
    ending: Option<Ending>,
    tls: bool,
    log: Vec<Sent>,
    log_taken: usize,
    writes: Vec<Bytes>,
    /// Every byte that went out, and those not yet taken by the test.
    wire: BytesMut,
    unread: BytesMut,
    snapshot: Snapshot,
    /// Counts every change, so `settle` can tell whether anything moved.
    progress: u64,
}

/// The core's state after the mock's last turn.
#[derive(Debug, Default, Clone, Copy)]
struct Snapshot {
    reading: bool,
    closing: bool,
    eof_written: bool,
    awaits_ack: bool,
    stats: TransportStats,
}

impl State {
    fn new(options: MockBuilder, protocol: ProtocolHandle) -> Self {
        State {
            options,
            protocol,
            script: VecDeque::new(),
            flow_scripted: 0,
            lost_scripted: 0,
            peer_stalled: false,
            eof_pending: false,
            eof_kept: None,
            cause: None,
            ending: None,
            tls: false,
            log: Vec::new(),
            log_taken: 0,
            writes: Vec::new(),
            wire: BytesMut::new(),
            unread: BytesMut::new(),
            snapshot: Snapshot::default(),
            progress: 0,
        }
    }

    /// Idle: ended, or every delivery acknowledged and no EOF answer pending (chunks may wait
    /// while reading is paused).
    fn is_settled(&mut self) -> bool {
        self.ending.is_some() || (!self.snapshot.awaits_ack && !self.eof_pending)
    }

    fn record(&mut self, sent: Sent) {
        self.log.push(sent);
    }

    /// Names what ends the connection, unless something already did.
    fn end_by(&mut self, cause: Ending) {
        self.cause.get_or_insert(cause);
    }

    fn describe(&self) -> String {
        format!(
            "deliveries not acknowledged: {}, EOF answer pending: {}, scripted: {:?}, reading: \
             {}, ended: {:?}, commands so far: {:?}",
            self.snapshot.awaits_ack,
            self.eof_pending,
            self.script,
            self.snapshot.reading,
            self.ending,
            self.log.iter().map(Sent::name).collect::<Vec<_>>()
        )
    }
}

/// The actor a protocol is attached to: the stream core every transport runs, driven by the
/// test's script instead of a socket.
struct MockActor {
    core: StreamCore<WriteReply>,
    shared: Arc<Shared>,
    handle: TransportHandle,
    /// The mock's clock, which only [`MockTransport::advance`] moves.
    now: Instant,
}

/// The protocol the mock delivers to now, as its death pact watches it.
struct CurrentProtocol(Arc<Shared>);

impl Watchable for CurrentProtocol {
    fn is_alive(&self) -> bool {
        self.0.lock().protocol.is_alive()
    }
}

/// The mock's part of an upgrade: the `StartTls` caller's reply.
struct UpgradeReply(Option<oneshot::Sender<Result<(), TlsError>>>);

impl Actor for MockActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.turn(ctx);
        // Like a real transport's driver, the script plays after each batch of messages, never
        // inside a command: a write sent right behind a `Close` meets a closing transport, not a
        // stopped one.
        ctx.spawn(Turns);
        // The real transports' death pact, on their watch: a transport whose protocol stopped
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
        // Stopped other than by the core (the System shutting down) counts as lost: the
        // protocol still hears of it once, as from a real transport.
        let lost = ConnectionLost(self.core.stopped());
        let protocol = {
            let mut state = self.shared.lock();
            state.end_by(Ending::Lost);
            state.ending = state.cause;
            state.snapshot = self.snapshot();
            state.protocol.clone()
        };
        self.retain_extra_info();
        protocol.deliver(lost);
        self.changed();
    }
}

impl MockActor {
    fn changed(&self) {
        self.shared.lock().progress += 1;
        self.shared.changed.notify_waiters();
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            reading: self.core.is_reading(),
            closing: self.core.is_closing(),
            eof_written: self.core.is_eof_requested(),
            awaits_ack: self.core.awaits_ack(),
            stats: self.core.stats(),
        }
    }

    /// One turn of the scripted I/O: moves bytes between the script and the core, and the
    /// core's events to the protocol, until nothing moves.
    fn turn(&mut self, ctx: &mut Context<Self>) {
        loop {
            // Whether the peer reads first: it decides what the write side can do.
            let mut moved = self.peer_reading();
            moved |= self.write_side();
            moved |= self.read_side();
            moved |= self.deliver_events();
            if self.core.take_release().is_some() {
                ctx.stop();
                break;
            }
            if !moved {
                break;
            }
        }
        // The core learns when bytes last moved, on the mock's clock.
        let _ = self.core.poll_timeout(self.now);
        let snapshot = self.snapshot();
        self.shared.lock().snapshot = snapshot;
        self.changed();
    }

    /// The scripted peer takes every byte while it reads, answers an upgrade as the builder
    /// says, and acknowledges the write side's shutdown at once (unless the test holds a
    /// close).
    fn write_side(&mut self) -> bool {
        let mut moved = false;
        let (stalled, hold_close) = {
            let state = self.shared.lock();
            (state.peer_stalled, state.options.hold_close)
        };
        if !stalled {
            let out: Vec<Bytes> = self.core.write_queue().iter().cloned().collect();
            let n: usize = out.iter().map(Bytes::len).sum();
            if n > 0 {
                let mut state = self.shared.lock();
                for data in &out {
                    state.wire.extend_from_slice(data);
                    state.unread.extend_from_slice(data);
                }
                drop(state);
                self.core.handle_written(n);
                moved = true;
            }
        }
        if self.core.upgrade_start().is_some() {
            // The handshake: over at once, as the builder scripted it.
            let result = self.shared.lock().options.start_tls.clone();
            let outcome = match &result {
                Ok(()) => Ok((
                    StreamKind {
                        can_write_eof: false,
                        ..self.core.kind()
                    },
                    WriteBufferLimits::tls(),
                )),
                Err(err) => {
                    self.shared.lock().end_by(Ending::Lost);
                    Err(io::Error::other(err.clone()))
                }
            };
            self.shared.lock().tls = result.is_ok();
            if let Some(part) = self.core.handle_upgraded(outcome)
                && let Ok(mut reply) = part.downcast::<UpgradeReply>()
                && let Some(reply) = reply.0.take()
            {
                let _ = reply.send(result);
            }
            moved = true;
        }
        let held = hold_close && self.core.is_closing();
        if self.core.wants_shutdown() && !held {
            self.core.handle_shutdown(Ok(()));
            moved = true;
        }
        self.core.handle_write_attempted();
        if self.core.is_draining() && !held {
            // The peer answers our FIN with its own.
            self.core.handle_drained(Ok(0));
            moved = true;
        }
        moved
    }

    /// Plays the script's write-flow changes (the peer stops or starts reading) at once: they
    /// do not wait behind queued data.
    fn peer_reading(&mut self) -> bool {
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
            state.peer_stalled = stalled;
            drop(state);
            self.core.handle_io_full(stalled);
            return true;
        }
        false
    }

    /// Plays the rest of the script: data and EOF when the core reads (one chunk per read,
    /// never merged with another), a loss after the data before it unless reading is paused (a
    /// reset drops unread bytes).
    fn read_side(&mut self) -> bool {
        let mut state = self.shared.lock();
        let room = self.core.read_room();
        let empty = self.core.read_buffered() == 0;
        let delivered = self.core.stats().read_buffer_size == 0;
        let paused = !self.core.is_reading();
        match state.script.front() {
            Some(Inbound::Data(_)) if room > 0 && empty => {
                let Some(Inbound::Data(mut data)) = state.script.pop_front() else {
                    return false;
                };
                // More than the read-buffer limit arrives in pieces, as from a socket.
                if data.len() > room {
                    let rest = data.split_off(room);
                    state.script.push_front(Inbound::Data(rest));
                }
                drop(state);
                self.core.handle_read(BytesMut::from(&data[..]));
                true
            }
            Some(Inbound::Eof) if room > 0 && empty => {
                state.script.pop_front();
                drop(state);
                self.core.handle_eof(None);
                true
            }
            _ => {
                if state.lost_scripted == 0 {
                    return false;
                }
                let lost = state
                    .script
                    .iter()
                    .position(|inbound| matches!(inbound, Inbound::Lost(_)))
                    .filter(|&at| (at == 0 && delivered) || paused);
                let Some(at) = lost else {
                    return false;
                };
                let Some(Inbound::Lost(err)) = state.script.remove(at) else {
                    return false;
                };
                state.lost_scripted -= 1;
                // The test's word ends it, a close it held included.
                state.cause = Some(Ending::Lost);
                drop(state);
                match err {
                    Some(err) => self.core.handle_error(err),
                    None => self.core.handle_closed(),
                }
                true
            }
        }
    }

    /// Stops at once if the command just handled ended the core, as a real transport's handler
    /// does (an `Abort`): a command sent behind it finds the transport stopped.
    fn settle(&mut self, ctx: &mut Context<Self>) {
        if self.core.take_release().is_some() {
            ctx.stop();
        }
    }

    /// Delivers the core's events to the protocol attached now.
    fn deliver_events(&mut self) -> bool {
        let mut moved = false;
        while let Some(event) = self.core.poll_event() {
            moved = true;
            let protocol = self.shared.lock().protocol.clone();
            match event {
                Event::Made { seq } => protocol.deliver(ConnectionMade::new(
                    self.handle.clone(),
                    Ack::new(self.handle.clone(), seq),
                )),
                Event::Data { data, seq } => {
                    protocol.deliver(DataReceived::new(data, Ack::new(self.handle.clone(), seq)));
                }
                Event::Eof => {
                    self.shared.lock().eof_pending = true;
                    protocol.deliver(EofReceived::new(self.handle.clone()));
                }
                Event::PauseWriting => protocol.deliver(PauseWriting),
                Event::ResumeWriting => protocol.deliver(ResumeWriting),
                Event::TimedOut(timeout) => protocol.deliver(TimedOut::new(timeout)),
                _ => {}
            }
        }
        moved
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

    fn write(&mut self, buffers: Vec<Bytes>, sent: Sent) -> WriteReceipt {
        let joined = Bytes::from(buffers.concat());
        let decision = self.core.write(buffers);
        {
            let mut state = self.shared.lock();
            match &decision {
                Ok(_) => {
                    state.writes.push(joined);
                    state.record(sent);
                }
                Err(reason) => state.record(Sent::RefusedWrite {
                    data: joined,
                    reason: *reason,
                }),
            }
        }
        WriteReceipt::from_core(decision)
    }
}

/// Plays the script after each batch of messages the mock handles (actix polls a context's
/// futures after its mailbox), as a real transport's driver moves bytes after its handlers.
struct Turns;

impl ActorFuture<MockActor> for Turns {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        mock: &mut MockActor,
        ctx: &mut Context<MockActor>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        mock.turn(ctx);
        if mock.core.is_stopped() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    }
}

/// Test side → mock: time passed.
#[derive(Message)]
#[rtype(result = "()")]
struct Elapse(Duration);

impl Handler<Elapse> for MockActor {
    type Result = ();

    fn handle(&mut self, Elapse(elapsed): Elapse, _: &mut Context<Self>) {
        self.now += elapsed;
        self.core.handle_timeout(self.now);
    }
}

/// Test side → mock: the script changed.
#[derive(Message)]
#[rtype(result = "()")]
struct Pump;

impl Handler<Pump> for MockActor {
    type Result = ();

    fn handle(&mut self, _: Pump, _: &mut Context<Self>) {}
}

impl Handler<DeliveryAcked> for MockActor {
    type Result = ();

    fn handle(&mut self, msg: DeliveryAcked, _: &mut Context<Self>) {
        self.core.ack(msg.seq);
    }
}

impl Handler<EofDecided> for MockActor {
    type Result = ();

    fn handle(&mut self, msg: EofDecided, ctx: &mut Context<Self>) {
        let kept = msg.keep_open && self.core.kind().can_write_eof;
        {
            let mut state = self.shared.lock();
            state.eof_pending = false;
            state.eof_kept = Some(kept);
            state.record(Sent::EofAnswered {
                keep_open: msg.keep_open,
            });
            if !kept && !self.core.is_closing() {
                state.end_by(Ending::ClosedAtEof);
            }
        }
        self.core.eof_decided(msg.keep_open);
        self.settle(ctx);
    }
}

impl Handler<Write> for MockActor {
    type Result = WriteReceipt;

    fn handle(&mut self, Write(data): Write, _: &mut Context<Self>) -> WriteReceipt {
        self.write(vec![data.clone()], Sent::Write(data))
    }
}

impl Handler<WriteVectored> for MockActor {
    type Result = WriteReceipt;

    fn handle(
        &mut self,
        WriteVectored(bufs): WriteVectored,
        _: &mut Context<Self>,
    ) -> WriteReceipt {
        self.write(bufs.clone(), Sent::WriteVectored(bufs))
    }
}

impl Handler<WriteEof> for MockActor {
    type Result = ResponseFuture<io::Result<()>>;

    fn handle(&mut self, _: WriteEof, ctx: &mut Context<Self>) -> Self::Result {
        self.shared.lock().record(Sent::WriteEof);
        let (tx, rx) = oneshot::channel();
        self.core.write_eof(WriteReply(tx));
        self.settle(ctx);
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(WriteError::Stopped.into())) })
    }
}

impl Handler<Drain> for MockActor {
    type Result = ResponseFuture<io::Result<()>>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.core.drain(WriteReply(tx));
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(WriteError::Stopped.into())) })
    }
}

impl Handler<CanWriteEof> for MockActor {
    type Result = bool;

    fn handle(&mut self, _: CanWriteEof, _: &mut Context<Self>) -> bool {
        self.core.can_write_eof()
    }
}

impl Handler<Close> for MockActor {
    type Result = ();

    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) {
        {
            let mut state = self.shared.lock();
            state.record(Sent::Close);
            if !self.core.is_closing() {
                state.end_by(Ending::Closed);
            }
        }
        self.core.close();
        self.settle(ctx);
    }
}

impl Handler<Abort> for MockActor {
    type Result = ();

    fn handle(&mut self, _: Abort, ctx: &mut Context<Self>) {
        {
            let mut state = self.shared.lock();
            state.record(Sent::Abort);
            if !self.core.is_stopped() {
                // `Abort` overrides a `Close` under way.
                state.cause = Some(Ending::Aborted);
            }
        }
        self.core.abort();
        self.settle(ctx);
    }
}

impl Handler<IsClosing> for MockActor {
    type Result = bool;

    fn handle(&mut self, _: IsClosing, _: &mut Context<Self>) -> bool {
        self.core.is_closing()
    }
}

impl Handler<PauseReading> for MockActor {
    type Result = ();

    fn handle(&mut self, _: PauseReading, _: &mut Context<Self>) {
        self.shared.lock().record(Sent::PauseReading);
        self.core.pause_reading();
    }
}

impl Handler<ResumeReading> for MockActor {
    type Result = ();

    fn handle(&mut self, _: ResumeReading, _: &mut Context<Self>) {
        self.shared.lock().record(Sent::ResumeReading);
        self.core.resume_reading();
    }
}

impl Handler<IsReading> for MockActor {
    type Result = bool;

    fn handle(&mut self, _: IsReading, _: &mut Context<Self>) -> bool {
        self.core.is_reading()
    }
}

impl Handler<GetWriteBufferSize> for MockActor {
    type Result = usize;

    fn handle(&mut self, _: GetWriteBufferSize, _: &mut Context<Self>) -> usize {
        self.core.write_buffer_size()
    }
}

impl Handler<GetWriteBufferLimits> for MockActor {
    type Result = MessageResult<GetWriteBufferLimits>;

    fn handle(
        &mut self,
        _: GetWriteBufferLimits,
        _: &mut Context<Self>,
    ) -> MessageResult<GetWriteBufferLimits> {
        MessageResult(self.core.write_buffer_limits().as_tuple())
    }
}

impl Handler<SetWriteBufferLimits> for MockActor {
    type Result = Result<(), InvalidWriteBufferLimits>;

    fn handle(
        &mut self,
        msg: SetWriteBufferLimits,
        _: &mut Context<Self>,
    ) -> Result<(), InvalidWriteBufferLimits> {
        let tls = {
            let mut state = self.shared.lock();
            state.record(Sent::SetWriteBufferLimits {
                high: msg.high,
                low: msg.low,
            });
            state.tls
        };
        // The kind's own default, as a real transport derives missing marks from it.
        let default = if tls {
            WriteBufferLimits::tls()
        } else {
            WriteBufferLimits::default()
        };
        let result = self
            .core
            .set_write_buffer_limits(msg.high, msg.low, default);
        // The edge the new limits call for at once, as from a real transport.
        self.deliver_events();
        result
    }
}

impl Handler<SetProtocol> for MockActor {
    type Result = MessageResult<SetProtocol>;

    fn handle(&mut self, msg: SetProtocol, _: &mut Context<Self>) -> MessageResult<SetProtocol> {
        let SetProtocol { protocol, leftover } = msg;
        self.shared.lock().record(Sent::SetProtocol {
            protocol: protocol.clone(),
            leftover: leftover.clone(),
        });
        // Whatever is due goes to the protocol it was due to before the switch.
        self.deliver_events();
        self.core.set_protocol(leftover, protocol.handles());
        let previous = mem::replace(&mut self.shared.lock().protocol, protocol);
        // Its `ConnectionMade` at once, as from a real transport: whatever comes next, even an
        // `Abort` in the same batch, comes after it.
        self.deliver_events();
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
        MessageResult(self.core.stats())
    }
}

impl Handler<StartTls> for MockActor {
    type Result = ResponseFuture<Result<(), TlsError>>;

    fn handle(&mut self, msg: StartTls, _: &mut Context<Self>) -> Self::Result {
        let StartTls {
            plaintext,
            leftover,
            ..
        } = msg;
        {
            let mut state = self.shared.lock();
            state.record(Sent::StartTls {
                plaintext,
                leftover: leftover.clone(),
            });
        }
        if let Err(refusal) = self.core.check_upgrade() {
            let err = TlsError::new(
                TlsErrorKind::InvalidState,
                match refusal {
                    UpgradeRefusal::Closing => "the transport is closing",
                    UpgradeRefusal::UnderWay => "a StartTls is already under way",
                    UpgradeRefusal::AfterEof => "the write side is shut down",
                    UpgradeRefusal::Injected(_) => "plaintext received before the handshake",
                },
            );
            return Box::pin(async move { Err(err) });
        }
        // What the test queued before the upgrade is plaintext the peer sent before the
        // handshake: what a STARTTLS injection would carry. It goes where the core sends the
        // bytes it read and did not deliver: discarded, or fed to TLS.
        self.shared
            .lock()
            .script
            .retain(|inbound| !matches!(inbound, Inbound::Data(_)));
        let policy = match plaintext {
            BufferedPlaintext::FeedToTls => Leftover::Feed,
            BufferedPlaintext::Discard => Leftover::Discard,
        };
        let (tx, rx) = oneshot::channel();
        if let Err(UpgradeRefusal::Injected(bytes)) =
            self.core
                .start_upgrade(Box::new(UpgradeReply(Some(tx))), policy, leftover)
        {
            let err = TlsError::injection(bytes);
            self.core.close_with(err.clone().into());
            return Box::pin(async move { Err(err) });
        }
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(TlsError::new(
                    TlsErrorKind::ConnectionEnded,
                    "the connection ended before the handshake did",
                ))
            })
        })
    }
}
