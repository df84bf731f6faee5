//! [`StreamCore`]: every decision of a stream transport (TCP, Unix sockets, TLS, pipes, and the
//! mock), with no I/O.
//!
//! The core is a state machine in quinn-proto's manner. Its driver (an actor with a socket, or
//! the mock with a script) calls it in four ways:
//!
//! * **commands** from the protocol: [`write`](StreamCore::write),
//!   [`write_eof`](StreamCore::write_eof), [`close`](StreamCore::close),
//!   [`abort`](StreamCore::abort), [`pause_reading`](StreamCore::pause_reading),
//!   [`set_protocol`](StreamCore::set_protocol), [`start_upgrade`](StreamCore::start_upgrade),
//!   [`ack`](StreamCore::ack), [`eof_decided`](StreamCore::eof_decided), ...;
//! * **inputs** from the I/O object: `handle_read`, `handle_eof`, `handle_written`,
//!   `handle_write_attempted`, `handle_shutdown`, `handle_drained`, `handle_upgraded`,
//!   `handle_reader_closed`, `handle_error`, `handle_protocol_gone`, `handle_timeout(now)`;
//! * **what to do** with the I/O object, asked after any of the above:
//!   [`write_queue`](StreamCore::write_queue) (bytes to write), [`read_room`](StreamCore::read_room)
//!   (how much to read), [`wants_shutdown`](StreamCore::wants_shutdown),
//!   [`upgrade_start`](StreamCore::upgrade_start), [`is_handshaking`](StreamCore::is_handshaking),
//!   [`is_draining`](StreamCore::is_draining), [`watches_reader`](StreamCore::watches_reader),
//!   [`take_release`](StreamCore::take_release) and [`poll_timeout`](StreamCore::poll_timeout);
//! * **events** for the protocol: [`poll_event`](StreamCore::poll_event), until `None`, after
//!   any of the above. `ConnectionLost` is not among them: a driver sends it when it stops, with
//!   [`stopped`](StreamCore::stopped)'s error, so that it is last whatever stopped the driver.
//!
//! A driver delivers every event to the protocol attached at the time it polls it, so it must
//! poll them before it switches protocols ([`set_protocol`](StreamCore::set_protocol) queues the
//! new protocol's `ConnectionMade`).

use std::{
    any::Any,
    collections::VecDeque,
    fmt, io, mem,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};

use crate::{
    FlowEdge, Handles, InvalidWriteBufferLimits, Timeout, TransportStats, WriteBufferLimits,
    WriteError, WriteFlow,
    gate::Unacked,
    ledger::{Ticket, Waiter, WriteLedger},
    queue::WriteQueue,
};

/// The most bytes a transport holds read and not yet acknowledged by its protocol (the chunk in
/// flight plus what arrived since) before it stops reading the socket: 256 KiB, asyncio's TLS
/// read high-water mark. The peer then feels TCP back-pressure.
pub const DEFAULT_READ_BUFFER_LIMIT: usize = 256 * 1024;

/// Which ways a stream carries bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Direction {
    /// Both ways: a socket.
    Duplex,
    /// In only: the read end of a pipe. Writes are refused with [`WriteError::ReadOnly`], and
    /// `Close` ends at once, with nothing to flush or drain.
    ReadOnly,
    /// Out only: the write end of a pipe. Nothing is read; `WriteEof` flushes and then closes,
    /// as closing a pipe is its EOF.
    WriteOnly,
}

/// What the core must know of its I/O object's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamKind {
    /// Which ways it carries bytes.
    pub direction: Direction,
    /// Whether its write side can be shut down while reading goes on (TLS cannot).
    pub can_write_eof: bool,
    /// Whether dropping it closes the connection completely once the peer has sent its EOF, so
    /// that `Close` can skip the shutdown then (TCP and Unix sockets).
    pub drop_closes_after_eof: bool,
}

impl StreamKind {
    /// A socket that can half-close and whose `close(2)` sends the FIN.
    pub fn socket() -> Self {
        StreamKind {
            direction: Direction::Duplex,
            can_write_eof: true,
            drop_closes_after_eof: true,
        }
    }
}

/// The settings of one stream core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// The write-buffer limits at the start.
    pub write_buffer_limits: WriteBufferLimits,
    /// Whether those limits were chosen rather than the kind's defaults (an upgrade then keeps
    /// them).
    pub limits_chosen: bool,
    /// The most bytes read and not yet acknowledged before reading stops (at least 1, at most
    /// 4 GiB).
    pub read_buffer_limit: usize,
    /// How long the write buffer may make no progress before the connection is aborted (to the
    /// millisecond, rounded up).
    pub write_stall_timeout: Option<Duration>,
    /// How long `Close` drains inbound data after the write side is shut down (to the
    /// millisecond, rounded up).
    pub close_drain_timeout: Duration,
    /// The most bytes the write buffer may hold (at most 4 GiB); a write that takes it past
    /// aborts the connection with [`WriteError::BufferFull`], unless the buffer was empty (one
    /// write's bytes are the protocol's already, whatever their size).
    pub max_write_buffer: usize,
    /// How long the connection may go without reading or writing a byte.
    pub idle_timeout: Option<Duration>,
    /// How long the connection may go from its start without receiving a byte.
    pub first_byte_timeout: Option<Duration>,
}

/// An event for the protocol, in the order [`StreamCore::poll_event`] gives them.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// `ConnectionMade`, to the protocol attached now; reading waits for the acknowledgement
    /// `seq`.
    Made {
        /// The acknowledgement the message carries.
        seq: u64,
    },
    /// `DataReceived`: nothing more is delivered until the acknowledgement `seq` is back.
    Data {
        /// The bytes.
        data: Bytes,
        /// The acknowledgement the message carries.
        seq: u64,
    },
    /// `EofReceived`: the protocol answers with [`StreamCore::eof_decided`].
    Eof,
    /// `PauseWriting`.
    PauseWriting,
    /// `ResumeWriting`.
    ResumeWriting,
    /// `TimedOut`, to a protocol that [handles](Handles::timeouts) it: the connection ends if
    /// the timeout runs out once more.
    TimedOut(Timeout),
}

/// How the driver must let go of its I/O object once the core has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// Whether the connection was aborted: the peer must see a reset (`SO_LINGER` 0).
    pub abort: bool,
}

/// Why an upgrade is refused now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeRefusal {
    /// The transport is closing or has ended.
    Closing,
    /// An upgrade is already under way.
    UnderWay,
    /// `WriteEof` shut the write side down (or will): a handshake could not write.
    AfterEof,
    /// The protocol held this many bytes of plaintext it had received and not consumed, and
    /// did not ask for them to be fed to the new layer: the peer sent them after its go-ahead,
    /// in the clear. The connection ends (the driver says with what error).
    Injected(usize),
}

/// What to do with bytes read and not delivered when an upgrade begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftover {
    /// Feed them to the upgraded layer first.
    Feed,
    /// Discard them (the default against STARTTLS injection).
    Discard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading (unless paused) and writing.
    Open,
    /// `Close` was handled: flushing, then shutting the write side down, then draining.
    Closing,
    /// Done: the driver releases the I/O object and stops.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inbound {
    Open,
    /// The peer's EOF was read; `delivered` once `EofReceived` went to the protocol.
    Eof {
        delivered: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    NotRequested,
    Requested,
    Done,
}

/// What few connections ever need: allocated the first time one does (a protocol switch
/// handing over leftover bytes, a `WriteEof`, a write the socket cannot take at once, closing,
/// failing, a refused write, an upgrade), then kept until the core is dropped.
struct Rare<W> {
    /// Leftover bytes handed over by `SetProtocol`, delivered before `read_buf`.
    front: VecDeque<Bytes>,
    front_len: usize,
    eof_waiters: Vec<W>,
    /// `Drain`s waiting for the write buffer to go down to its low-water mark.
    drain_waiters: Vec<W>,
    /// When the write buffer last made progress, while it holds bytes (with a stall timeout).
    stall_since: Option<Instant>,
    /// When draining ends, once it has begun.
    drain_deadline: Option<Instant>,
    draining: bool,
    /// The error `ConnectionLost` will carry.
    lost: Option<io::Error>,
    refused_writes: u64,
    upgrade: Option<Upgrade>,
}

impl<W> Default for Rare<W> {
    fn default() -> Self {
        Rare {
            front: VecDeque::new(),
            front_len: 0,
            eof_waiters: Vec::new(),
            drain_waiters: Vec::new(),
            stall_since: None,
            drain_deadline: None,
            draining: false,
            lost: None,
            refused_writes: 0,
            upgrade: None,
        }
    }
}

/// The idle and first-byte timers, for a connection that has either.
struct Timers {
    idle: Option<Duration>,
    first_byte: Option<Duration>,
    /// When the first-byte period began: the connection's start (its first
    /// [`poll_timeout`](StreamCore::poll_timeout)), or when the protocol was told.
    first_byte_since: Option<Instant>,
    /// When the idle period began: the last byte read or written, or when the protocol was told.
    idle_since: Option<Instant>,
    /// The protocol was told of the first-byte timeout: the next time it runs out, it ends the
    /// connection.
    first_byte_told: bool,
    /// The same for the idle timeout; any progress clears it.
    idle_told: bool,
    /// A `TimedOut` to deliver.
    pending: Option<Timeout>,
}

/// An upgrade (`StartTls`) from the moment it is asked for until its handshake ends. Meanwhile
/// nothing is read or delivered, the plaintext queued before it is written, and later writes
/// wait here.
struct Upgrade {
    /// The bytes to feed to the new layer first; taken when the handshake starts, once the
    /// plaintext queue is written.
    prefix: Option<Bytes>,
    /// Writes accepted after the request: they go out through the new layer, after the
    /// handshake.
    held: Vec<Bytes>,
    /// The driver's own part (its settings, its reply), kept for it until the upgrade ends, and
    /// dropped with the upgrade when the connection ends first.
    part: Box<dyn Any>,
}

/// Every decision of a stream transport, with no I/O; see the [module docs](self).
///
/// `W` is what waits for the outcome of an acknowledged write or a `WriteEof`.
//
// The actors keep one of these inline in their connection's task, so every field is paid per
// connection, idle or not: what few connections need lives in `Rare`.
pub struct StreamCore<W> {
    state: State,
    inbound: Inbound,
    shutdown: Shutdown,
    kind: StreamKind,
    /// Reading paused by the protocol.
    paused: bool,
    /// Whether the first `ConnectionMade` was acknowledged; nothing is read before.
    attached: bool,
    limits_chosen: bool,
    /// What the protocol attached now handles.
    handles: Handles,
    /// A byte was read or written since the last [`poll_timeout`](Self::poll_timeout).
    active: bool,
    /// A `ConnectionMade` to deliver to the protocol attached now.
    made_pending: bool,
    /// A `PauseWriting` to deliver to a protocol just switched to while writing is paused.
    pause_replay: bool,
    /// The write buffer made progress since the last [`poll_timeout`](Self::poll_timeout).
    progressed: bool,
    /// A flow edge decided and not yet polled.
    edge: Option<FlowEdge>,
    release: Option<Release>,
    /// Counts the transitions after which the driver has I/O to do again (wrapping: a driver
    /// only compares it before and after one round).
    transitions: u16,

    /// In whole milliseconds, rounded up (a drain's precision), to keep the core 16 bytes
    /// smaller than a `Duration` would.
    close_drain_millis: u32,
    /// A `u32` (4 GiB is more than any connection should hold) beside the other small fields,
    /// where a `usize` would take 8 bytes of its own in every connection.
    read_buffer_limit: u32,
    /// A `u32` for the same reason: 4 GiB of write buffer is no bound at all.
    max_write_buffer: u32,
    /// In whole milliseconds, rounded up, 0 for none: 12 bytes less than an
    /// `Option<Duration>` in every connection.
    write_stall_millis: u32,
    timers: Option<Box<Timers>>,

    read_buf: BytesMut,
    unacked: Unacked,
    seq: u64,

    queue: WriteQueue,
    flow: WriteFlow,
    ledger: WriteLedger<W>,

    bytes_received: u64,
    deliveries: u64,
    read_buffer_peak: usize,

    rare: Option<Box<Rare<W>>>,
}

impl<W: Waiter> StreamCore<W> {
    /// A core for a new connection: its first event is the protocol's `ConnectionMade`, and it
    /// reads nothing until that is acknowledged.
    pub fn new(settings: StreamSettings, kind: StreamKind) -> Self {
        // A write-only stream has nothing to read: as if its EOF were read and delivered.
        let inbound = match kind.direction {
            Direction::WriteOnly => Inbound::Eof { delivered: true },
            Direction::Duplex | Direction::ReadOnly => Inbound::Open,
        };
        StreamCore {
            state: State::Open,
            inbound,
            shutdown: Shutdown::NotRequested,
            kind,
            paused: false,
            attached: false,
            limits_chosen: settings.limits_chosen,
            handles: Handles::default(),
            active: false,
            made_pending: true,
            pause_replay: false,
            progressed: false,
            edge: None,
            release: None,
            transitions: 0,
            read_buffer_limit: settings
                .read_buffer_limit
                .clamp(1, u32::MAX as usize)
                .try_into()
                .unwrap_or(u32::MAX),
            max_write_buffer: settings.max_write_buffer.try_into().unwrap_or(u32::MAX),
            write_stall_millis: settings.write_stall_timeout.map_or(0, |timeout| {
                timeout
                    .as_nanos()
                    .div_ceil(1_000_000)
                    .clamp(1, u32::MAX.into())
                    .try_into()
                    .unwrap_or(u32::MAX)
            }),
            timers: (settings.idle_timeout.is_some() || settings.first_byte_timeout.is_some())
                .then(|| {
                    Box::new(Timers {
                        idle: settings.idle_timeout,
                        first_byte: settings.first_byte_timeout,
                        first_byte_since: None,
                        idle_since: None,
                        first_byte_told: false,
                        idle_told: false,
                        pending: None,
                    })
                }),
            close_drain_millis: settings
                .close_drain_timeout
                .as_nanos()
                .div_ceil(1_000_000)
                .try_into()
                .unwrap_or(u32::MAX),
            read_buf: BytesMut::new(),
            unacked: Unacked::None,
            seq: 0,
            queue: WriteQueue::default(),
            flow: WriteFlow::new(fit(settings.write_buffer_limits, settings.max_write_buffer)),
            ledger: WriteLedger::new(),
            bytes_received: 0,
            deliveries: 0,
            read_buffer_peak: 0,
            rare: None,
        }
    }

    // ---- getters ----

    /// Whether `Close` or `Abort` was handled, or the connection ended (asyncio's `is_closing`).
    pub fn is_closing(&self) -> bool {
        self.state != State::Open
    }

    /// Whether the core has ended: the driver releases its I/O object and stops.
    pub fn is_stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// Whether bytes are read and delivered: open, not paused, the peer's EOF not read.
    pub fn is_reading(&self) -> bool {
        self.state == State::Open && !self.paused && self.inbound == Inbound::Open
    }

    /// Whether `WriteEof` can be accepted: the kind can half-close, and the core has not ended.
    pub fn can_write_eof(&self) -> bool {
        self.kind.can_write_eof && self.state != State::Stopped
    }

    /// The kind of I/O object, as last told.
    pub fn kind(&self) -> StreamKind {
        self.kind
    }

    /// Bytes waiting to be written.
    pub fn write_buffer_size(&self) -> usize {
        self.flow.size()
    }

    /// The write-buffer limits in force.
    pub fn write_buffer_limits(&self) -> WriteBufferLimits {
        self.flow.limits()
    }

    /// Whether the protocol was last told `PauseWriting`.
    pub fn is_writing_paused(&self) -> bool {
        self.flow.is_paused()
    }

    /// The most bytes the write buffer may hold before the connection is aborted.
    pub fn max_write_buffer(&self) -> usize {
        self.max_write_buffer as usize
    }

    /// Whether deliveries wait for the write buffer to drain: the protocol attached now does not
    /// handle write flow, and the buffer went above its high-water mark and has not drained to
    /// its low-water mark since.
    pub fn is_throttled(&self) -> bool {
        !self.handles.write_flow && self.flow.is_paused()
    }

    /// Whether a delivery (`ConnectionMade` or `DataReceived`) awaits its acknowledgement.
    pub fn awaits_ack(&self) -> bool {
        !self.unacked.is_empty()
    }

    /// Whether `WriteEof` was accepted: the write side is shut down, or will be once flushed.
    pub fn is_eof_requested(&self) -> bool {
        self.shutdown != Shutdown::NotRequested
    }

    /// The ledger of acknowledged writes.
    pub fn ledger(&self) -> &WriteLedger<W> {
        &self.ledger
    }

    /// Whether an upgrade is under way.
    pub fn is_upgrading(&self) -> bool {
        self.rare
            .as_ref()
            .is_some_and(|rare| rare.upgrade.is_some())
    }

    /// The driver's part of the upgrade under way, as it gave it to
    /// [`start_upgrade`](Self::start_upgrade).
    pub fn upgrade_part(&mut self) -> Option<&mut Box<dyn Any>> {
        let upgrade = self.rare.as_mut()?.upgrade.as_mut()?;
        Some(&mut upgrade.part)
    }

    /// A count that changes at every transition after which the driver may have I/O to do that
    /// it did not have before (closing began, the write side may shut down, an upgrade ended):
    /// a driver polls its I/O again while it changes.
    pub fn transitions(&self) -> u16 {
        self.transitions
    }

    /// The counters.
    pub fn stats(&self) -> TransportStats {
        TransportStats {
            bytes_received: self.bytes_received,
            bytes_sent: self.ledger.written_total(),
            deliveries: self.deliveries,
            read_buffer_size: self.buffered(),
            read_in_flight: self.unacked.bytes(),
            read_buffer_peak: self.read_buffer_peak,
            read_buffer_limit: self.read_buffer_limit as usize,
            write_buffer_size: self.flow.size(),
            write_buffer_peak: self.flow.peak(),
        }
    }

    // ---- commands ----

    /// Accepts `buffers` as one write, or refuses it (and logs why, loudly the first time).
    pub fn write(
        &mut self,
        buffers: impl IntoIterator<Item = Bytes>,
    ) -> Result<Ticket<W>, WriteError> {
        if let Some(err) = self.refusal() {
            let len: usize = buffers.into_iter().map(|data| data.len()).sum();
            let refused = &mut self.rare().refused_writes;
            *refused += 1;
            let refused = *refused;
            if refused == 1 {
                tracing::warn!(bytes = len, %err, "write refused; it will not reach the wire");
            } else {
                tracing::debug!(bytes = len, %err, refused, "write refused");
            }
            return Err(err);
        }
        let mut total = 0;
        let before = self.flow.size();
        let mut held = self
            .rare
            .as_mut()
            .and_then(|rare| rare.upgrade.as_mut())
            .map(|upgrade| &mut upgrade.held);
        for data in buffers {
            if !data.is_empty() {
                total += data.len();
                match &mut held {
                    Some(held) => held.push(data),
                    None => self.queue.push(data),
                }
            }
        }
        self.flow.add(total);
        // A write into an empty buffer is taken whatever its size: its bytes are the protocol's
        // already, and go out as the peer reads. What the maximum bounds is what piles up
        // behind them while the peer does not read.
        if before > 0 && self.flow.size() > self.max_write_buffer as usize {
            return Err(self.overflow());
        }
        Ok(self.ledger.accept(total))
    }

    /// What the attached protocol handles: set at the start (before the first `poll_event`)
    /// and with every switch.
    pub fn set_handles(&mut self, handles: Handles) {
        self.handles = handles;
    }

    /// `WriteEof`: flush, then shut the write side down; `waiter` is resolved then, or at once
    /// with the reason it cannot be.
    pub fn write_eof(&mut self, waiter: W) {
        let can = self.kind.can_write_eof && !self.is_upgrading();
        if !can && self.state == State::Open {
            let err = io::Error::new(
                io::ErrorKind::Unsupported,
                "this transport cannot shut its write side down alone",
            );
            return waiter.resolve(Err(&err));
        }
        if self.state != State::Open {
            return waiter.resolve(Err(&WriteError::Closing.into()));
        }
        if self.shutdown == Shutdown::Done {
            return waiter.resolve(Ok(()));
        }
        self.shutdown = Shutdown::Requested;
        self.transitions = self.transitions.wrapping_add(1);
        self.rare().eof_waiters.push(waiter);
        if self.kind.direction == Direction::WriteOnly {
            // Closing a pipe is its EOF: flush, then close (asyncio's write pipes do the same).
            self.begin_close();
        }
    }

    /// `Drain` (asyncio's `await writer.drain()`): `waiter` is resolved once the write buffer is
    /// at or below its low-water mark (at once if writing is not paused), or with the error that
    /// ended the connection first. While closing, what is buffered still drains.
    pub fn drain(&mut self, waiter: W) {
        match self.state {
            State::Stopped => waiter.resolve(Err(&WriteError::Stopped.into())),
            _ if !self.flow.is_paused() && self.edge != Some(FlowEdge::Pause) => {
                waiter.resolve(Ok(()));
            }
            _ => self.rare().drain_waiters.push(waiter),
        }
    }

    /// `Close`: stop reading, flush, shut the write side down, drain, end.
    pub fn close(&mut self) {
        self.begin_close();
    }

    /// `Abort`: discard the write buffer, fail every pending write, end at once with a reset.
    pub fn abort(&mut self) {
        self.abort_with(WriteError::Aborted.into(), None);
    }

    /// Closes as `Close` does (what was written before goes out: the go-ahead of a refused
    /// STARTTLS), and `ConnectionLost` carries `err`.
    pub fn close_with(&mut self, err: io::Error) {
        if self.state == State::Open {
            tracing::debug!(%err, "closing with an error");
            self.rare().lost = Some(err);
            self.begin_close();
        }
    }

    /// `PauseReading`: nothing more is delivered (buffered bytes neither) until resumed.
    pub fn pause_reading(&mut self) {
        self.paused = true;
    }

    /// `ResumeReading`.
    pub fn resume_reading(&mut self) {
        self.paused = false;
    }

    /// `SetWriteBufferLimits`: the missing marks are derived from `default`, the kind's own.
    pub fn set_write_buffer_limits(
        &mut self,
        high: Option<usize>,
        low: Option<usize>,
        default: WriteBufferLimits,
    ) -> Result<(), InvalidWriteBufferLimits> {
        let limits = default.with_options(high, low)?;
        self.flow.set_limits(limits);
        self.limits_chosen = true;
        self.check_flow();
        Ok(())
    }

    /// `SetProtocol`: from now on events go to a new protocol, which first receives
    /// `ConnectionMade`, then `PauseWriting` if writing is paused, then `leftover` before any
    /// byte read later. Poll every event before, so none meant for the old protocol is left.
    pub fn set_protocol(&mut self, leftover: Bytes, handles: Handles) {
        self.handles = handles;
        self.made_pending = true;
        self.pause_replay = self.flow.is_paused();
        if !leftover.is_empty() && self.state == State::Open {
            let rare = self.rare();
            rare.front_len += leftover.len();
            rare.front.push_front(leftover);
            self.note_read_buffer_peak();
        }
    }

    /// The acknowledgement `seq` came back (its message was dropped).
    pub fn ack(&mut self, seq: u64) {
        self.unacked.remove(seq);
        if self.unacked.is_empty() {
            self.attached = true;
        }
    }

    /// The protocol's answer to `EofReceived`: keep the half-open connection, or close. A
    /// transport that cannot half-close closes either way, as asyncio does over TLS.
    pub fn eof_decided(&mut self, keep_open: bool) {
        if keep_open && !self.kind.can_write_eof {
            tracing::debug!("keep_open has no effect on a transport that cannot half-close");
        }
        if !keep_open || !self.kind.can_write_eof {
            self.begin_close();
        }
    }

    /// Why an upgrade would be refused now by the core (the I/O object may refuse too).
    pub fn check_upgrade(&self) -> Result<(), UpgradeRefusal> {
        if self.state != State::Open {
            Err(UpgradeRefusal::Closing)
        } else if self.is_upgrading() {
            Err(UpgradeRefusal::UnderWay)
        } else if self.shutdown != Shutdown::NotRequested {
            Err(UpgradeRefusal::AfterEof)
        } else {
            Ok(())
        }
    }

    /// Begins an upgrade in place (`StartTls`), checked with
    /// [`check_upgrade`](Self::check_upgrade) first. It waits until every write queued before
    /// it is written; meanwhile nothing is read or delivered, and later writes wait for the
    /// handshake's end. Bytes read and not delivered, after `leftover` (what the protocol
    /// received and did not consume), are fed to the new layer or discarded as `leftover_policy`
    /// says. `part` is the driver's, given back by [`upgrade_part`](Self::upgrade_part) and
    /// [`handle_upgraded`](Self::handle_upgraded).
    ///
    /// Unconsumed `leftover` under [`Leftover::Discard`] refuses the upgrade with
    /// [`UpgradeRefusal::Injected`]: the driver ends the connection then, with
    /// [`close_with`](Self::close_with) and the error it reports such a refusal with.
    pub fn start_upgrade(
        &mut self,
        part: Box<dyn Any>,
        leftover_policy: Leftover,
        leftover: Bytes,
    ) -> Result<(), UpgradeRefusal> {
        debug_assert!(self.check_upgrade().is_ok(), "an upgrade the core refuses");
        if leftover_policy == Leftover::Discard && !leftover.is_empty() {
            tracing::warn!(
                bytes = leftover.len(),
                "upgrade refused: the protocol holds plaintext received after the go-ahead"
            );
            return Err(UpgradeRefusal::Injected(leftover.len()));
        }
        // Everything read and not delivered arrived after the protocol decided to upgrade.
        let mut pending = vec![leftover];
        if let Some(rare) = &mut self.rare {
            pending.extend(rare.front.drain(..));
            rare.front_len = 0;
        }
        pending.push(mem::take(&mut self.read_buf).freeze());
        let prefix = match leftover_policy {
            Leftover::Feed => pending.concat().into(),
            Leftover::Discard => {
                let discarded: usize = pending.iter().map(Bytes::len).sum();
                if discarded > 0 {
                    tracing::debug!(
                        bytes = discarded,
                        "upgrade: plaintext received before the handshake discarded"
                    );
                }
                Bytes::new()
            }
        };
        self.rare().upgrade = Some(Upgrade {
            prefix: Some(prefix),
            held: Vec::new(),
            part,
        });
        self.transitions = self.transitions.wrapping_add(1);
        Ok(())
    }

    // ---- inputs from the I/O object ----

    /// How many bytes to read now: none while not reading, before the protocol acknowledged its
    /// `ConnectionMade`, during an upgrade, while [throttled](Self::is_throttled), or with the
    /// read-buffer limit reached.
    pub fn read_room(&self) -> usize {
        if !self.is_reading() || !self.attached || self.is_upgrading() || self.is_throttled() {
            return 0;
        }
        (self.read_buffer_limit as usize).saturating_sub(self.unconsumed())
    }

    /// Bytes read and waiting in the read buffer (not counting leftover handed over by a
    /// switch): a driver coalesces small reads into it.
    pub fn read_buffered(&self) -> usize {
        self.read_buf.len()
    }

    /// Bytes read from the peer: appended to what waits for delivery.
    pub fn handle_read(&mut self, data: BytesMut) {
        self.bytes_received += data.len() as u64;
        self.active |= !data.is_empty();
        if self.read_buf.is_empty() {
            self.read_buf = data;
        } else {
            self.read_buf.extend_from_slice(&data);
        }
        self.note_read_buffer_peak();
    }

    /// The peer's EOF, with the error that says its stream did not end cleanly if it did not (a
    /// TLS stream without close_notify): what was read is delivered, then instead of
    /// `EofReceived` the transport closes and ends with that error.
    pub fn handle_eof(&mut self, unclean: Option<io::Error>) {
        if self.inbound != Inbound::Open {
            return;
        }
        self.inbound = Inbound::Eof { delivered: false };
        self.transitions = self.transitions.wrapping_add(1);
        if let Some(err) = unclean {
            tracing::debug!(%err, "the peer's stream ended uncleanly");
            self.rare().lost = Some(err);
        }
    }

    /// What to write: the queue, in order ([`handle_written`](Self::handle_written) says how
    /// much went out).
    pub fn write_queue(&self) -> &WriteQueue {
        &self.queue
    }

    /// `n` bytes of the queue's front went out.
    pub fn handle_written(&mut self, n: usize) {
        self.queue.advance(n);
        self.flow.remove(n);
        self.ledger.written(n);
        if n > 0 {
            self.progressed = true;
            self.active = true;
        }
        self.advance_close();
    }

    /// The driver wrote all the I/O object would take now: the write buffer is what is left, so
    /// the flow edge it calls for (if any) is decided now. Bytes the socket takes at once never
    /// pause anyone.
    pub fn handle_write_attempted(&mut self) {
        self.check_flow();
    }

    /// Whether to shut the write side down now: asked for, everything before it written, no
    /// upgrade under way.
    pub fn wants_shutdown(&self) -> bool {
        self.state != State::Stopped
            && self.shutdown == Shutdown::Requested
            && self.queue.is_empty()
            && !self.is_upgrading()
    }

    /// The write side's shutdown ended.
    pub fn handle_shutdown(&mut self, result: io::Result<()>) {
        match result {
            Ok(()) => {
                self.shutdown = Shutdown::Done;
                self.transitions = self.transitions.wrapping_add(1);
                self.resolve_eof_waiters(Ok(()));
            }
            // Closing after the peer's EOF: the peer may be gone already, and everything we had
            // to say is written.
            Err(err)
                if self.state == State::Closing && matches!(self.inbound, Inbound::Eof { .. }) =>
            {
                tracing::debug!(%err, "shutdown after the peer's EOF failed");
                self.shutdown = Shutdown::Done;
                self.transitions = self.transitions.wrapping_add(1);
            }
            Err(err) => return self.handle_error(err),
        }
        self.advance_close();
    }

    /// Whether the upgrade's handshake is to begin now: the plaintext before it is written.
    /// Returns the bytes to feed the new layer first (once).
    pub fn upgrade_start(&mut self) -> Option<Bytes> {
        if !self.queue.is_empty() || self.state == State::Stopped {
            return None;
        }
        self.rare.as_mut()?.upgrade.as_mut()?.prefix.take()
    }

    /// Whether a handshake is under way (begun, not ended).
    pub fn is_handshaking(&self) -> bool {
        self.rare
            .as_ref()
            .and_then(|rare| rare.upgrade.as_ref())
            .is_some_and(|upgrade| upgrade.prefix.is_none())
    }

    /// The handshake ended. On success the writes held back go out through the new layer, the
    /// kind is now `kind`, and unless limits were chosen the write-buffer limits become
    /// `default_limits` (a TLS transport's own, as asyncio's `start_tls` makes a new transport);
    /// a close that waited for the upgrade goes on. On failure the connection ends with `err`.
    /// Returns the driver's part, to answer its caller.
    pub fn handle_upgraded(
        &mut self,
        result: Result<(StreamKind, WriteBufferLimits), io::Error>,
    ) -> Option<Box<dyn Any>> {
        let upgrade = self.rare.as_mut()?.upgrade.take()?;
        self.transitions = self.transitions.wrapping_add(1);
        // The handshake's bytes were progress the core did not see.
        self.active = true;
        match result {
            Ok((kind, default_limits)) => {
                self.kind = kind;
                for data in upgrade.held {
                    self.queue.push(data);
                }
                if !self.limits_chosen {
                    self.flow
                        .set_limits(fit(default_limits, self.max_write_buffer as usize));
                }
                self.advance_close();
            }
            Err(err) => self.handle_error(err),
        }
        Some(upgrade.part)
    }

    /// Whether a closing transport drains inbound data now (read and discard it, and tell
    /// [`handle_drained`](Self::handle_drained)).
    pub fn is_draining(&self) -> bool {
        self.state == State::Closing && self.rare.as_ref().is_some_and(|rare| rare.draining)
    }

    /// What a drain read gave: `Ok(0)` is the peer's EOF, an error means the peer is gone; both
    /// end the close, as everything we had to say was flushed already.
    pub fn handle_drained(&mut self, result: io::Result<usize>) {
        if !self.is_draining() {
            return;
        }
        match result {
            Ok(0) | Err(_) => {
                if result.is_ok() {
                    self.inbound = Inbound::Eof { delivered: true };
                }
                self.finish(Some(Release { abort: false }), None);
            }
            Ok(n) => self.bytes_received += n as u64,
        }
    }

    /// Whether the driver should watch for the reader of a write-only stream to go away (a
    /// pipe whose read end closed): attached, open, with nothing left to write. With bytes
    /// queued the write fails instead (a broken pipe), so the protocol learns they were lost.
    pub fn watches_reader(&self) -> bool {
        self.state == State::Open
            && self.attached
            && self.kind.direction == Direction::WriteOnly
            && self.queue.is_empty()
    }

    /// Nobody reads a write-only stream any more: it ends with `ConnectionLost(None)`, as
    /// asyncio's write pipes do.
    pub fn handle_reader_closed(&mut self) {
        if self.state != State::Stopped {
            tracing::debug!("the read end of the pipe closed");
        }
        self.handle_closed();
    }

    /// The I/O object ended without an error (a scripted connection the test ends): the
    /// connection ends with `ConnectionLost(None)`, what was not delivered undelivered.
    pub fn handle_closed(&mut self) {
        if self.state == State::Stopped {
            return;
        }
        self.finish(Some(Release { abort: false }), None);
    }

    /// The I/O object's own buffer is full although the core's may hold little (`true`), or it
    /// has room again (`false`): the protocol is told `PauseWriting` and `ResumeWriting` as if
    /// the write buffer had crossed its marks. The mock's scripted peer that stops reading says
    /// so; a socket's driver has no need to, as its kernel buffer filling leaves the bytes in
    /// the core's.
    pub fn handle_io_full(&mut self, full: bool) {
        self.flow.set_full(full);
        self.check_flow();
    }

    /// An I/O error: the connection ends with it (every pending write fails with it).
    pub fn handle_error(&mut self, err: io::Error) {
        if self.state == State::Stopped {
            return;
        }
        tracing::debug!(%err, "stream transport failed");
        self.resolve_eof_waiters(Err(&err));
        self.resolve_drain_waiters(Err(&err));
        self.ledger.fail(W::duplicate(&err));
        if let Some(rare) = &mut self.rare {
            rare.upgrade = None;
        }
        self.finish(Some(Release { abort: false }), Some(err));
    }

    /// The protocol actor stopped (the death pact): an open transport aborts; a closing one
    /// goes on flushing what the protocol said before.
    pub fn handle_protocol_gone(&mut self) {
        if self.state == State::Open {
            tracing::debug!("protocol actor stopped: aborting its transport");
            self.abort();
        }
    }

    /// The next deadline, given the time now: the write stall timeout while bytes wait, the
    /// drain timeout while closing, the idle and first-byte timeouts while open. Call it after
    /// every round of I/O, so the core learns when bytes last moved.
    pub fn poll_timeout(&mut self, now: Instant) -> Option<Instant> {
        let timers = self.poll_timers(now);
        let stalling = self.state != State::Stopped && !self.queue.is_empty();
        let progressed = mem::take(&mut self.progressed);
        let stall = match self.write_stall_timeout() {
            Some(timeout) if stalling => {
                let since = &mut self.rare().stall_since;
                match since {
                    Some(since) if progressed => *since = now,
                    Some(_) => {}
                    None => *since = Some(now),
                }
                since.map(|since| since + timeout)
            }
            _ => {
                if let Some(rare) = &mut self.rare {
                    rare.stall_since = None;
                }
                None
            }
        };
        let drain = if self.is_draining() {
            let timeout = Duration::from_millis(self.close_drain_millis.into());
            let rare = self.rare();
            Some(*rare.drain_deadline.get_or_insert(now + timeout))
        } else {
            None
        };
        [stall, drain, timers].into_iter().flatten().min()
    }

    /// Time passed: a write buffer stalled for the timeout aborts the connection; a drain that
    /// reached its deadline ends the close; an idle or first-byte timeout tells the protocol, or
    /// ends the connection.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.check_timers(now);
        let Some(rare) = &self.rare else {
            return;
        };
        if let (Some(since), Some(timeout)) = (rare.stall_since, self.write_stall_timeout())
            && !self.queue.is_empty()
            && now >= since + timeout
        {
            tracing::debug!(?timeout, "write stalled: aborting");
            return self.handle_error(WriteError::Stalled(timeout).into());
        }
        if self.is_draining() && rare.drain_deadline.is_some_and(|deadline| now >= deadline) {
            self.finish(Some(Release { abort: false }), None);
        }
    }

    // ---- outputs ----

    /// The next event for the protocol attached now, if one is due: `ConnectionMade` (after a
    /// start or a switch), a replayed `PauseWriting`, a flow edge, then the next chunk or the
    /// EOF (one at a time, only once the previous delivery is acknowledged, never while paused).
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.state == State::Stopped {
            return None;
        }
        if mem::take(&mut self.made_pending) {
            return Some(Event::Made {
                seq: self.issue_ack(0),
            });
        }
        if mem::take(&mut self.pause_replay) {
            return Some(Event::PauseWriting);
        }
        if let Some(edge) = self.edge.take() {
            return Some(match edge {
                FlowEdge::Pause => Event::PauseWriting,
                FlowEdge::Resume => Event::ResumeWriting,
            });
        }
        if let Some(timed_out) = self
            .timers
            .as_mut()
            .and_then(|timers| timers.pending.take())
        {
            return Some(Event::TimedOut(timed_out));
        }
        self.next_delivery()
    }

    /// Once the core has ended: how to let go of the I/O object (once).
    pub fn take_release(&mut self) -> Option<Release> {
        self.release.take()
    }

    /// The driver stopped (for whatever reason): every write still pending fails, and this
    /// returns the error `ConnectionLost` carries, which the driver sends last.
    pub fn stopped(&mut self) -> Option<io::Error> {
        self.state = State::Stopped;
        self.release = None;
        let stopped: io::Error = WriteError::Stopped.into();
        self.resolve_eof_waiters(Err(&stopped));
        self.resolve_drain_waiters(Err(&stopped));
        self.ledger.fail(stopped);
        let rare = self.rare.as_mut()?;
        rare.upgrade = None;
        rare.lost.take()
    }

    // ---- inside ----

    fn write_stall_timeout(&self) -> Option<Duration> {
        (self.write_stall_millis > 0).then(|| Duration::from_millis(self.write_stall_millis.into()))
    }

    fn rare(&mut self) -> &mut Rare<W> {
        self.rare.get_or_insert_default()
    }

    /// Bytes read and waiting for delivery.
    fn buffered(&self) -> usize {
        self.read_buf.len() + self.rare.as_ref().map_or(0, |rare| rare.front_len)
    }

    /// Bytes read and not yet acknowledged: what the read-buffer limit bounds.
    fn unconsumed(&self) -> usize {
        self.buffered() + self.unacked.bytes()
    }

    fn note_read_buffer_peak(&mut self) {
        self.read_buffer_peak = self.read_buffer_peak.max(self.unconsumed());
    }

    /// Why a write is refused now, if it is.
    fn refusal(&self) -> Option<WriteError> {
        if self.kind.direction == Direction::ReadOnly {
            return Some(WriteError::ReadOnly);
        }
        match self.state {
            State::Open if self.shutdown != Shutdown::NotRequested => Some(WriteError::AfterEof),
            State::Open => None,
            State::Closing => Some(WriteError::Closing),
            State::Stopped => Some(WriteError::Aborted),
        }
    }

    fn check_flow(&mut self) {
        if self.state != State::Stopped && self.edge.is_none() {
            self.edge = self.flow.check();
            if self.edge.is_some() && !self.handles.write_flow {
                // Deliveries and reads stop or go on: the driver has I/O to look at again.
                self.transitions = self.transitions.wrapping_add(1);
            }
            if self.edge == Some(FlowEdge::Resume) {
                self.resolve_drain_waiters(Ok(()));
            }
        }
    }

    fn issue_ack(&mut self, bytes: usize) -> u64 {
        self.seq += 1;
        self.unacked.push(self.seq, bytes);
        self.seq
    }

    fn next_delivery(&mut self) -> Option<Event> {
        if self.state != State::Open
            || self.paused
            || !self.unacked.is_empty()
            || self.is_upgrading()
        {
            return None;
        }
        if self.is_throttled() && self.buffered() > 0 {
            // The protocol does not handle write flow and its writes wait for the peer: it gets
            // nothing more to answer until they drain. (Its EOF may go: answering it closes.)
            return None;
        }
        let front = self.rare.as_mut().and_then(|rare| {
            let front = rare.front.pop_front()?;
            rare.front_len -= front.len();
            Some(front)
        });
        let data = if let Some(front) = front {
            front
        } else if !self.read_buf.is_empty() {
            // Taken whole: an idle connection keeps no spare capacity of it.
            mem::take(&mut self.read_buf).freeze()
        } else {
            if self.inbound == (Inbound::Eof { delivered: false }) {
                self.inbound = Inbound::Eof { delivered: true };
                // While open, `lost` holds only the error of an unclean end: no `EofReceived`,
                // the stream did not end, it broke.
                if self.rare.as_ref().is_some_and(|rare| rare.lost.is_some()) {
                    self.begin_close();
                    return None;
                }
                return Some(Event::Eof);
            }
            return None;
        };
        self.deliveries += 1;
        let seq = self.issue_ack(data.len());
        Some(Event::Data { data, seq })
    }

    /// Ends the connection at once: the write buffer is discarded, every pending write fails
    /// with `err`, the peer sees a reset, and `ConnectionLost` carries `lost`.
    fn abort_with(&mut self, err: io::Error, lost: Option<io::Error>) {
        if self.state == State::Stopped {
            return;
        }
        self.queue.clear();
        self.flow.clear();
        if let Some(rare) = &mut self.rare {
            // The driver's part goes with it: a dropped reply tells its caller the connection
            // ended.
            rare.upgrade = None;
        }
        self.resolve_eof_waiters(Err(&err));
        self.resolve_drain_waiters(Err(&err));
        self.ledger.fail(err);
        self.finish(Some(Release { abort: true }), lost);
    }

    /// The write buffer passed its maximum: the connection is aborted with `BufferFull`.
    fn overflow(&mut self) -> WriteError {
        let err = WriteError::BufferFull(self.max_write_buffer as usize);
        tracing::warn!(
            buffered = self.flow.size(),
            max = self.max_write_buffer,
            "write buffer past its maximum: aborting the connection"
        );
        self.abort_with(err.into(), Some(err.into()));
        err
    }

    /// Learns whether bytes moved, and gives the next deadline of the idle and first-byte
    /// timers. They run while the connection is open and no upgrade is under way.
    fn poll_timers(&mut self, now: Instant) -> Option<Instant> {
        let active = mem::take(&mut self.active);
        let running = self.state == State::Open && !self.is_upgrading();
        let received = self.bytes_received > 0;
        let timers = self.timers.as_deref_mut()?;
        let first_byte_since = *timers.first_byte_since.get_or_insert(now);
        if active || timers.idle_since.is_none() {
            timers.idle_since = Some(now);
            timers.idle_told &= !active;
        }
        if !running {
            return None;
        }
        let first_byte = timers
            .first_byte
            .filter(|_| !received)
            .map(|timeout| first_byte_since + timeout);
        let idle = timers
            .idle
            .zip(timers.idle_since)
            .map(|(timeout, since)| since + timeout);
        first_byte.into_iter().chain(idle).min()
    }

    /// A timer that ran out tells a protocol that handles `TimedOut` the first time, and ends
    /// the connection otherwise.
    fn check_timers(&mut self, now: Instant) {
        if self.state != State::Open || self.is_upgrading() {
            return;
        }
        let received = self.bytes_received > 0;
        let tell = self.handles.timeouts;
        let Some(timers) = self.timers.as_deref_mut() else {
            return;
        };
        let ran_out = |timeout: Option<Duration>, since: Option<Instant>| {
            timeout
                .zip(since)
                .filter(|&(timeout, since)| now >= since + timeout)
                .map(|(timeout, _)| timeout)
        };
        let (timed_out, told) = if let Some(timeout) =
            ran_out(timers.first_byte, timers.first_byte_since).filter(|_| !received)
        {
            if tell && !timers.first_byte_told {
                timers.first_byte_since = Some(now);
            }
            (
                Timeout::FirstByte(timeout),
                mem::replace(&mut timers.first_byte_told, true),
            )
        } else if let Some(timeout) = ran_out(timers.idle, timers.idle_since) {
            if tell && !timers.idle_told {
                timers.idle_since = Some(now);
            }
            (
                Timeout::Idle(timeout),
                mem::replace(&mut timers.idle_told, true),
            )
        } else {
            return;
        };
        if tell && !told {
            tracing::debug!(%timed_out, "telling the protocol");
            timers.pending = Some(timed_out);
            return;
        }
        tracing::debug!(%timed_out, "ending the connection");
        if self.queue.is_empty() {
            self.rare().lost = Some(timed_out.into());
            self.begin_close();
        } else {
            self.abort_with(timed_out.into(), Some(timed_out.into()));
        }
    }

    fn begin_close(&mut self) {
        if self.state != State::Open {
            return;
        }
        self.state = State::Closing;
        self.transitions = self.transitions.wrapping_add(1);
        // Closing stops reading: what was read and not delivered will not be.
        self.read_buf = BytesMut::new();
        if let Some(rare) = &mut self.rare {
            rare.front.clear();
            rare.front_len = 0;
        }
        if self.shutdown == Shutdown::NotRequested {
            let peer_done = matches!(self.inbound, Inbound::Eof { .. });
            self.shutdown = if peer_done && self.kind.drop_closes_after_eof {
                // The peer has finished sending, so closing the socket sends our FIN without
                // a reset: a separate shutdown(2) would be one more system call for nothing.
                Shutdown::Done
            } else {
                Shutdown::Requested
            };
        }
        self.advance_close();
    }

    /// Closing: once the write side is flushed and shut down, drain inbound data until the
    /// peer's EOF or the drain timeout. A pipe has no peer to answer unread data with a reset:
    /// nothing to drain. An upgrade under way holds writes back for after its handshake, out of
    /// the queue: the close waits for its end, even when no shutdown is left to do.
    fn advance_close(&mut self) {
        if self.state != State::Closing
            || !self.queue.is_empty()
            || self.shutdown != Shutdown::Done
            || self.is_draining()
            || self.is_upgrading()
        {
            return;
        }
        if matches!(self.inbound, Inbound::Eof { .. }) || self.kind.direction != Direction::Duplex {
            self.finish(Some(Release { abort: false }), None);
        } else {
            self.rare().draining = true;
            self.transitions = self.transitions.wrapping_add(1);
        }
    }

    fn finish(&mut self, release: Option<Release>, lost: Option<io::Error>) {
        if release.is_some_and(|release| !release.abort) && lost.is_none() && self.flow.size() == 0
        {
            // A clean close flushed everything: the buffer did drain (asyncio resolves its
            // `drain()` waiters at a clean `connection_lost` too).
            self.resolve_drain_waiters(Ok(()));
        }
        self.state = State::Stopped;
        self.transitions = self.transitions.wrapping_add(1);
        self.release = release;
        self.edge = None;
        if let Some(rare) = &mut self.rare {
            rare.stall_since = None;
            rare.drain_deadline = None;
            rare.draining = false;
        }
        if lost.is_some() {
            self.rare().lost = lost;
        }
    }

    fn resolve_drain_waiters(&mut self, result: Result<(), &io::Error>) {
        let Some(rare) = &mut self.rare else {
            return;
        };
        for waiter in rare.drain_waiters.drain(..) {
            waiter.resolve(result);
        }
    }

    fn resolve_eof_waiters(&mut self, result: Result<(), &io::Error>) {
        let Some(rare) = &mut self.rare else {
            return;
        };
        for waiter in rare.eof_waiters.drain(..) {
            waiter.resolve(result);
        }
    }
}

/// A kind's default limits under a maximum write buffer below their high-water mark (a TLS
/// transport's 512 KiB under a smaller maximum): pausing at the maximum, resuming at a quarter of
/// it, so the protocol is told before the transport would abort.
fn fit(limits: WriteBufferLimits, max: usize) -> WriteBufferLimits {
    if limits.high() <= max {
        return limits;
    }
    WriteBufferLimits::new(max, limits.low().min(max / 4)).unwrap_or(limits)
}

impl<W> fmt::Debug for StreamCore<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamCore")
            .field("state", &self.state)
            .field("inbound", &self.inbound)
            .field("shutdown", &self.shutdown)
            .field("paused", &self.paused)
            .field("unacked", &self.unacked)
            .field("read_buffered", &self.read_buf.len())
            .field("write_buffered", &self.flow.size())
            .finish_non_exhaustive()
    }
}
