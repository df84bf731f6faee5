//! The driver and the model: runs a [`Case`] against a [`StreamCore`] as a transport actor would
//! drive it, delivers its events to model protocols, and checks the guarantees after every step.
//!
//! The model keeps what a protocol and a socket see from outside (the bytes fed to the core and
//! the bytes it delivered, the writes accepted and the bytes written, the acknowledgements out,
//! the edges told) and asks the core only through its public API; every check compares the two.

use std::{
    cell::{Cell, RefCell},
    collections::BTreeMap,
    io, mem,
    rc::Rc,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use switchboard_core::{
    DEFAULT_HIGH_WATER_MARK, Handles, Timeout, Waiter, WriteBufferLimits, WriteError,
    stream::{Direction, Event, Leftover, Release, StreamCore, StreamKind, StreamSettings},
};

use super::{
    runner::{self, Checked, Failure, Machine, Trace, brief, ensure, pattern, violation},
    step::{Case, Drain, Step},
};

// The invariants, by the names failures report them under.

/// DESIGN 4: at most one `DataReceived`/`EofReceived` in flight.
const ONE_IN_FLIGHT: &str = "one delivery in flight";
/// DESIGN 1 and 3: each protocol sees `ConnectionMade` first, nothing after it was switched
/// away from, and the last one `ConnectionLost` once and last; nothing is read before the
/// first `ConnectionMade` is acknowledged.
const LIFECYCLE: &str = "lifecycle";
/// DESIGN 2 and 3: bytes reach protocols in order, without loss or duplication, across
/// switches, leftover first.
const ORDER: &str = "read order and integrity";
/// DESIGN 6 and 11: bytes read are dropped only by close, abort or an upgrade, and only there.
const DROPS: &str = "drops only at close, abort or upgrade";
/// DESIGN 5: the bytes written are the accepted writes, in order; refused ones never.
const WRITE_ORDER: &str = "write order";
/// DESIGN 5: every acknowledged write and `WriteEof` resolved exactly once, `Ok` only once
/// written.
const OUTCOMES: &str = "write outcomes";
/// DESIGN 3 and 5: `PauseWriting`/`ResumeWriting` strictly alternate, at the watermarks.
const FLOW: &str = "write flow edges";
/// DESIGN 4: bytes held within the read-buffer limit (leftover excepted).
const READ_LIMIT: &str = "read-buffer limit";
/// DESIGN 4: nothing delivered (or read) while reading is paused.
const PAUSED: &str = "pause reading";
/// DESIGN 6: `is_closing` from `Close`/`Abort` on; writes refused after `Close`, `Abort`,
/// `WriteEof`.
const CLOSING: &str = "closing";
/// DESIGN 7 and 11: the peer's EOF, `WriteEof`, the shutdown, and truncation.
const HALF_CLOSE: &str = "half-close";
/// DESIGN 6 and 8: `Close` flushes, `Abort` resets, a failure is reported.
const ENDING: &str = "ending";
/// DESIGN 11: the upgrade is ordered after the plaintext before it, and nothing is read or
/// delivered while it goes on.
const UPGRADE: &str = "upgrade barrier";
/// DESIGN 5 and 6: the write stall timeout and the drain deadline.
const TIMEOUTS: &str = "timeouts";
/// The counters (`stats()`) agree with what was fed, delivered and written.
const COUNTERS: &str = "counters";
/// The write buffer never holds more than `max_write_buffer`, but for one write taken into an
/// empty buffer (its bytes are the protocol's already): a write that would take a non-empty
/// buffer past the maximum is refused with `BufferFull`, the connection is aborted (a reset), every pending write fails
/// with `BufferFull` and so does `ConnectionLost`.
const CEILING: &str = "write-buffer maximum";
/// A protocol that does not handle write flow gets no `DataReceived`, and nothing is read for
/// it, while writing is paused (as the edges it was told say); once the buffer drains it gets
/// what waits.
const THROTTLE: &str = "read-stop without write flow";
/// Bytes read wait only for what may hold them: an acknowledgement out, reading paused, an
/// upgrade, the read-stop, the close. Otherwise the round delivers them (and then the EOF).
const STUCK: &str = "no stuck delivery";
/// The idle and first-byte timeouts: never before their time, at the first `handle_timeout`
/// from their time on, `TimedOut` first to a protocol that handles it (and only to one), then
/// the end: a close when nothing waits to be written, an abort otherwise, and `ConnectionLost`
/// with the `TimedOut` of the timer that ran out.
const TIMERS: &str = "idle and first-byte timeouts";
/// `Drain` (asyncio's `drain()`) resolves `Ok` at once while writing is not paused, as the
/// protocols were told; while it is paused, it waits for the `ResumeWriting` edge (the write
/// buffer down to the low-water mark) and resolves `Ok` then, never before; a connection that
/// ends first fails it, with the error that ended it, and leaves none pending.
const DRAIN: &str = "drain";

// ---- the waiters ----

/// What the driver and the model share with the waiters, which the core resolves from inside
/// its calls.
#[derive(Default)]
struct Shared {
    /// Bytes that went through `handle_written`, counted before the call.
    written: Cell<u64>,
    /// Whether `handle_shutdown(Ok)` was called (set before the call).
    shut_down: Cell<bool>,
    /// Bytes accepted by `write` (set after the call: a write resolves no drain `Ok`).
    accepted: Cell<u64>,
    /// The low-water mark in force, by the model (set before any call that may resolve a drain
    /// against a new one).
    low: Cell<usize>,
    /// The first violation a waiter saw.
    violation: RefCell<Option<String>>,
}

impl Shared {
    fn report(&self, violation: String) {
        self.violation.borrow_mut().get_or_insert(violation);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pending,
    Done,
    Failed(Lost),
}

/// What a failure's `io::Error` says, as far as a protocol can tell: its kind, and the core's
/// own reason behind it, if there is one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lost {
    kind: io::ErrorKind,
    cause: Cause,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    /// An I/O error, or one with no typed source the core gives.
    Io,
    Write(WriteError),
    Timer(Timeout),
}

impl Lost {
    fn of(err: &io::Error) -> Self {
        let cause = if let Some(write) = WriteError::of(err) {
            Cause::Write(write)
        } else if let Some(timer) = Timeout::of(err) {
            Cause::Timer(timer)
        } else {
            Cause::Io
        };
        Lost {
            kind: err.kind(),
            cause,
        }
    }

    fn io(kind: io::ErrorKind) -> Self {
        Lost {
            kind,
            cause: Cause::Io,
        }
    }

    fn write(err: WriteError) -> Self {
        Lost::of(&err.into())
    }

    fn timer(timed_out: Timeout) -> Self {
        Lost::of(&timed_out.into())
    }
}

#[derive(Debug, Clone, Copy)]
enum Awaits {
    /// An acknowledged write, which ends at this offset of the accepted bytes.
    Write { end: u64 },
    /// A `WriteEof` requested once this many bytes had been accepted.
    Eof { flushed_at: u64 },
    /// A `Drain`, issued while writing was paused (as the protocols were told) or not.
    Drain { paused: bool },
}

/// A waiter that records its outcome and checks it is deserved.
struct Recorder {
    awaits: Awaits,
    outcome: Rc<Cell<Outcome>>,
    shared: Rc<Shared>,
    resolved: bool,
}

impl Recorder {
    fn new(awaits: Awaits, shared: &Rc<Shared>) -> (Self, Rc<Cell<Outcome>>) {
        let outcome = Rc::new(Cell::new(Outcome::Pending));
        let recorder = Recorder {
            awaits,
            outcome: outcome.clone(),
            shared: shared.clone(),
            resolved: false,
        };
        (recorder, outcome)
    }
}

impl Waiter for Recorder {
    fn resolve(mut self, result: Result<(), &io::Error>) {
        self.resolved = true;
        if self.outcome.get() != Outcome::Pending {
            self.shared.report(violation(
                OUTCOMES,
                format!("{:?} resolved a second time", self.awaits),
            ));
        }
        let outcome = match result {
            Ok(()) => {
                let written = self.shared.written.get();
                match self.awaits {
                    Awaits::Write { end } if written < end => self.shared.report(violation(
                        OUTCOMES,
                        format!("a write ending at byte {end} resolved Ok with {written} written"),
                    )),
                    Awaits::Eof { flushed_at }
                        if !self.shared.shut_down.get() || written < flushed_at =>
                    {
                        self.shared.report(violation(
                            HALF_CLOSE,
                            format!(
                                "WriteEof resolved Ok with the write side not shut down or \
                                 {written} of the {flushed_at} bytes before it written"
                            ),
                        ));
                    }
                    // Resolved at the resume edge: the buffer is down to the low-water mark.
                    Awaits::Drain { paused: true }
                        if self.shared.accepted.get().saturating_sub(written)
                            > self.shared.low.get() as u64 =>
                    {
                        self.shared.report(violation(
                            DRAIN,
                            format!(
                                "a drain issued while writing was paused resolved Ok with {} \
                                 bytes buffered, above the low-water mark {}",
                                self.shared.accepted.get().saturating_sub(written),
                                self.shared.low.get()
                            ),
                        ));
                    }
                    _ => {}
                }
                Outcome::Done
            }
            Err(err) => Outcome::Failed(Lost::of(err)),
        };
        self.outcome.set(outcome);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.resolved {
            self.shared.report(violation(
                OUTCOMES,
                format!("{:?} was dropped without an outcome", self.awaits),
            ));
        }
    }
}

// ---- the model ----

/// What the model knows of one protocol attached to the connection.
#[derive(Debug, Default)]
struct Protocol {
    /// What it handles: with `write_flow` false it is throttled while writing is paused; with
    /// `timeouts` it is told a timeout before it ends the connection.
    handles: Handles,
    made: bool,
    /// Whether this protocol was last told `PauseWriting`.
    told_paused: bool,
    /// It was switched to while writing was paused: a `PauseWriting` is due after its
    /// `ConnectionMade`.
    replay_due: bool,
    /// The chunk it last received, while its acknowledgement is out: the protocol may hand an
    /// unconsumed tail of it to the next protocol or to the upgrade.
    last_chunk: Option<(u64, Bytes)>,
}

#[derive(Debug)]
enum Upgrade {
    None,
    /// `start_upgrade` was called; the handshake waits for the plaintext queued before it.
    Requested {
        part: u64,
        /// What the new layer must be fed first.
        prefix: Vec<u8>,
        /// Bytes accepted before the request: they go out before the handshake.
        accepted_before: usize,
    },
    /// `upgrade_start` gave the prefix: the handshake is under way.
    Handshaking {
        part: u64,
        accepted_before: usize,
    },
}

impl Upgrade {
    fn accepted_before(&self) -> Option<usize> {
        match *self {
            Upgrade::None => None,
            Upgrade::Requested {
                accepted_before, ..
            }
            | Upgrade::Handshaking {
                accepted_before, ..
            } => Some(accepted_before),
        }
    }
}

/// The model of the idle and first-byte timers, from the harness's clock and what the driver
/// did (it knows each byte it read and wrote): when each period began, and whether the
/// protocol was told of it.
///
/// The bound, from `poll_timers` and `check_timers` in `stream.rs`: the timers run while the
/// connection is open and no upgrade is under way. A period begins at the connection's start
/// (the first `poll_timeout`) for the first-byte timer, and at the `poll_timeout` after the last
/// progress (a byte read, a byte written, an upgrade's end) for the idle one; this harness polls
/// after every step, so that is the time of the step that made progress. A timer runs out at
/// the first `handle_timeout(now)` with `now >= since + T` (the first-byte one only while
/// nothing was received, and it goes first when both ran out: one timer a call). A protocol
/// that handles timeouts and was not told is told, and the period begins again at `now`;
/// otherwise the connection ends. So, with the times of the `handle_timeout` calls,
/// * without `handles.timeouts` it ends at the first call at or after `since + T`;
/// * with it, it tells at the first call `t1 >= since + T` and ends at the first call at or
///   after `t1 + T`; a driver that calls at the deadline `poll_timeout` gave (the `Sleep` step)
///   is told at exactly `since + T` and ends at `since + 2T`.
///
/// Progress after a tell clears it (idle), so the next run-out tells again. `Run::timer_due`
/// applies this rule; `Run::ended_by_timer` checks the plain bounds on its own record.
#[derive(Debug)]
struct Timers {
    idle: Option<Duration>,
    first_byte: Option<Duration>,
    idle_since: Instant,
    first_byte_since: Instant,
    idle_told: bool,
    first_byte_told: bool,
    /// A byte moved since the last `poll_timeout`.
    active: bool,
    /// The last progress the core was told of, for the bounds.
    progress_at: Instant,
    /// `TimedOut(Idle)` reached a protocol since `progress_at`.
    idle_told_since_progress: bool,
    /// `TimedOut(FirstByte)` reached a protocol.
    first_byte_told_ever: bool,
}

/// What a dead protocol's dropped messages send back once the events are polled.
enum Dropped {
    Ack(u64),
    EofDecision,
}

/// One connection: the core, its driver's state and the model.
struct Run {
    core: StreamCore<Recorder>,
    settings: StreamSettings,
    kind: StreamKind,
    shared: Rc<Shared>,
    epoch: Instant,
    now: Instant,
    trace: Option<Trace>,
    ended: bool,

    // read side
    /// Every byte fed by `handle_read`.
    fed: Vec<u8>,
    /// Where the next delivery must begin in `fed`: bytes before it were delivered (and not
    /// handed back as leftover) or dropped.
    cursor: usize,
    drained: u64,
    deliveries: u64,
    /// Deliveries (`ConnectionMade` and `DataReceived`) whose acknowledgement is out: seq →
    /// (bytes, protocol).
    outstanding: BTreeMap<u64, (usize, usize)>,
    last_seq: u64,
    /// Leftover bytes handed over by a switch while their chunk's acknowledgement is out: they
    /// are counted twice, in the chunk in flight and in what waits for delivery.
    double_counted: Vec<(u64, usize)>,
    most_double_counted: usize,
    first_made: Option<u64>,
    /// The first `ConnectionMade` was acknowledged.
    attached: bool,
    paused: bool,
    eof_read: bool,
    unclean: bool,
    eof_delivered: bool,
    eof_unanswered: bool,

    // protocols
    /// Every protocol attached so far; the last one is attached now.
    protocols: Vec<Protocol>,
    /// Whether the protocol attached now is alive (`handle_protocol_gone` not called).
    alive: bool,
    dropped: Vec<Dropped>,
    /// The connection's write flow as told to its protocols (replays aside).
    writing_paused: bool,
    /// A step just asked the core to decide the flow edge.
    flow_checked: bool,

    // write side
    /// Every byte accepted by `write`, in order.
    accepted: Vec<u8>,
    /// How many of them went through `handle_written`.
    written: usize,
    /// Bytes offered to `write`, accepted or refused: the next write's first byte value.
    offered: u64,
    writes: Vec<(u64, Rc<Cell<Outcome>>)>,
    eof_waiters: Vec<Rc<Cell<Outcome>>>,
    eof_requested: bool,
    /// Every `Drain` issued, in order.
    drains: Vec<Rc<Cell<Outcome>>>,
    /// The drains issued while writing was paused (indices into `drains`), until the
    /// `ResumeWriting` that resolves them or the end.
    drains_pending: Vec<usize>,
    limits: WriteBufferLimits,
    limits_chosen: bool,

    // lifecycle
    /// `Close`, `Abort`, a closing EOF decision or a pipe's `WriteEof` was handled.
    closing: bool,
    was_closing: bool,
    aborted: bool,
    /// The error the connection failed with, if it did.
    failed: Option<Lost>,
    reader_closed: bool,
    upgrade: Upgrade,
    parts: u64,

    // time
    stall_since: Option<Instant>,
    drain_since: Option<Instant>,
    progressed: bool,
    timers: Timers,
    /// A `TimedOut` the core is to deliver in this round.
    timed_out_due: Option<Timeout>,
    /// The deadline the last `poll_timeout` gave, for `Sleep`.
    deadline: Option<Instant>,
    /// The write-buffer maximum, as the core holds it (at most 4 GiB).
    max_write_buffer: usize,
    /// The size of the last write taken into an empty buffer: the buffer may hold up to that
    /// much, even past the maximum, while it drains.
    taken_whole: usize,
}

/// Runs `case`; returns how many steps ran (a step whose precondition did not hold is skipped),
/// or the first violation. With `trace`, records each step and what the core did.
pub(crate) fn run(case: &Case, trace: Option<Trace>) -> Result<u64, Failure> {
    runner::drive(Run::new(case, trace), &case.steps)
}

impl runner::Case for Case {
    type Step = Step;

    fn steps_mut(&mut self) -> &mut Vec<Step> {
        &mut self.steps
    }

    fn run(&self, trace: Option<Trace>) -> Result<u64, Failure> {
        run(self, trace)
    }
}

impl Machine for Run {
    type Step = Step;

    fn round(&mut self) -> Checked {
        Run::round(self)
    }

    fn step(&mut self, step: &Step) -> Checked<bool> {
        Run::step(self, step)
    }

    fn ended(&self) -> bool {
        self.ended
    }

    fn stop(&mut self) -> Checked {
        Run::stop(self, None)
    }

    fn trace(&self) -> Option<&Trace> {
        self.trace.as_ref()
    }
}

impl Run {
    fn new(case: &Case, trace: Option<Trace>) -> Self {
        let limits = fit(
            case.settings.write_buffer_limits,
            case.settings.max_write_buffer,
        );
        let shared = Rc::new(Shared::default());
        shared.low.set(limits.low());
        // The one clock reading: the core takes `now` from its driver, and here time moves
        // only by `Tick` steps from this epoch.
        #[expect(
            clippy::disallowed_methods,
            reason = "the checker needs one Instant to start its own clock from"
        )]
        let epoch = Instant::now();
        Run {
            core: {
                let mut core = StreamCore::new(case.settings, case.kind);
                core.set_handles(case.handles);
                core
            },
            settings: case.settings,
            kind: case.kind,
            shared,
            epoch,
            now: epoch,
            trace,
            ended: false,
            fed: Vec::new(),
            cursor: 0,
            drained: 0,
            deliveries: 0,
            outstanding: BTreeMap::new(),
            last_seq: 0,
            double_counted: Vec::new(),
            most_double_counted: 0,
            first_made: None,
            attached: false,
            paused: false,
            // A write-only stream has nothing to read: as if its EOF were read and delivered.
            eof_read: case.kind.direction == Direction::WriteOnly,
            unclean: false,
            eof_delivered: case.kind.direction == Direction::WriteOnly,
            eof_unanswered: false,
            protocols: vec![Protocol {
                handles: case.handles,
                ..Protocol::default()
            }],
            alive: true,
            dropped: Vec::new(),
            writing_paused: false,
            flow_checked: false,
            accepted: Vec::new(),
            written: 0,
            offered: 0,
            writes: Vec::new(),
            eof_waiters: Vec::new(),
            eof_requested: false,
            drains: Vec::new(),
            drains_pending: Vec::new(),
            limits,
            limits_chosen: case.settings.limits_chosen,
            closing: false,
            was_closing: false,
            aborted: false,
            failed: None,
            reader_closed: false,
            upgrade: Upgrade::None,
            parts: 0,
            stall_since: None,
            drain_since: None,
            progressed: false,
            timers: Timers {
                idle: case.settings.idle_timeout,
                first_byte: case.settings.first_byte_timeout,
                idle_since: epoch,
                first_byte_since: epoch,
                idle_told: false,
                first_byte_told: false,
                active: false,
                progress_at: epoch,
                idle_told_since_progress: false,
                first_byte_told_ever: false,
            },
            timed_out_due: None,
            deadline: None,
            max_write_buffer: case.settings.max_write_buffer.min(u32::MAX as usize),
            taken_whole: 0,
        }
    }

    /// Records a line of the trace; returns its index.
    fn note(&self, line: impl FnOnce() -> String) -> Option<usize> {
        runner::note(self.trace.as_ref(), line)
    }

    fn current(&self) -> usize {
        self.protocols.len() - 1
    }

    fn at(&self, instant: Instant) -> Duration {
        instant.duration_since(self.epoch)
    }

    /// Whether the protocol attached now is held back by the read-stop, by the model: it does
    /// not handle write flow and the connection was told `PauseWriting` and not yet
    /// `ResumeWriting`.
    fn throttled(&self) -> bool {
        !self.protocols[self.current()].handles.write_flow && self.writing_paused
    }

    /// Bytes read and not delivered, by the model.
    fn waiting(&self) -> usize {
        self.fed.len() - self.cursor
    }

    /// Whether a byte was received (the first-byte timer's end).
    fn received(&self) -> bool {
        !self.fed.is_empty() || self.drained > 0
    }

    // ---- steps ----

    /// Runs one step; whether its precondition held.
    fn step(&mut self, step: &Step) -> Checked<bool> {
        // The protocol's commands come from a live protocol only.
        let protocol = self.alive;
        match *step {
            Step::Write { ref lens, acked } if protocol => self.write(lens, acked)?,
            Step::WriteEof if protocol => self.write_eof()?,
            // From whoever holds the transport: the protocol, or a `Connection`'s writer.
            Step::Drain => self.drain()?,
            Step::Close if protocol => {
                self.core.close();
                self.closing = true;
            }
            Step::Abort if protocol => {
                self.core.abort();
                self.closing = true;
                self.aborted = true;
                self.upgrade = Upgrade::None;
                ensure!(
                    self.core.write_queue().is_empty() && self.core.write_buffer_size() == 0,
                    ENDING,
                    "Abort left bytes to write"
                );
                self.check_drains_failed(Lost::write(WriteError::Aborted))?;
            }
            Step::PauseReading if protocol => {
                self.core.pause_reading();
                self.paused = true;
            }
            Step::ResumeReading if protocol => {
                self.core.resume_reading();
                self.paused = false;
            }
            Step::SetWriteBufferLimits { high, low } if protocol => self.set_limits(high, low)?,
            Step::SetProtocol {
                split,
                write_flow,
                timeouts,
            } if protocol => self.switch(
                split,
                Handles {
                    write_flow,
                    timeouts,
                },
            ),
            Step::EofDecided { keep_open } if protocol && self.eof_unanswered => {
                self.eof_decided(keep_open)?;
            }
            Step::Ack { pick } if !self.outstanding.is_empty() => {
                let nth = usize::from(pick) % self.outstanding.len();
                let seq = *self.outstanding.keys().nth(nth).expect("in range");
                self.note(|| format!("   ack {seq}"));
                self.ack(seq);
            }
            Step::StaleAck { pick } => {
                let seq = u64::from(pick) % (self.last_seq + 2);
                if self.outstanding.contains_key(&seq) {
                    return Ok(false);
                }
                let in_flight = self.core.stats().read_in_flight;
                self.note(|| format!("   stale ack {seq}"));
                self.core.ack(seq);
                ensure!(
                    self.core.stats().read_in_flight == in_flight,
                    ONE_IN_FLIGHT,
                    "a stale acknowledgement {seq} changed the bytes in flight"
                );
            }
            Step::StartUpgrade { policy, split }
                if protocol && self.core.check_upgrade().is_ok() =>
            {
                self.start_upgrade(policy, split);
            }
            Step::ProtocolGone if protocol => self.protocol_gone()?,
            Step::Read { len } if self.core.read_room() > 0 => {
                let room = self.core.read_room();
                let n = len.map_or(room, |len| usize::from(len) % room + 1);
                let start = self.fed.len();
                self.note(|| format!("   read {n} bytes (room {room})"));
                self.fed
                    .extend((start..start + n).map(|i| pattern(i as u64)));
                self.timers.active = true;
                self.core.handle_read(BytesMut::from(&self.fed[start..]));
            }
            Step::PeerEof { unclean } if self.core.read_room() > 0 => {
                self.eof_read = true;
                self.unclean = unclean;
                self.core.handle_eof(
                    unclean
                        .then(|| io::Error::new(io::ErrorKind::UnexpectedEof, "no close_notify")),
                );
            }
            Step::Written { n } => self.written(n)?,
            Step::Shutdown { ok } if self.core.wants_shutdown() => {
                if ok {
                    self.shared.shut_down.set(true);
                    self.core.handle_shutdown(Ok(()));
                } else {
                    // Closing after the peer's EOF, a failed shutdown is of no matter.
                    let fails = !(self.core.is_closing() && self.eof_read);
                    if fails {
                        self.failed = Some(Lost::io(io::ErrorKind::BrokenPipe));
                    }
                    self.core
                        .handle_shutdown(Err(io::ErrorKind::BrokenPipe.into()));
                    if fails {
                        self.check_drains_failed(Lost::io(io::ErrorKind::BrokenPipe))?;
                    }
                }
            }
            Step::Upgraded {
                ok,
                can_write_eof,
                drop_closes_after_eof,
                high,
                low,
            } if matches!(self.upgrade, Upgrade::Handshaking { .. }) => {
                let kind = StreamKind {
                    direction: self.kind.direction,
                    can_write_eof,
                    drop_closes_after_eof,
                };
                let limits = WriteBufferLimits::new(high.into(), low.into()).expect("low <= high");
                self.upgraded(ok.then_some((kind, limits)))?;
            }
            Step::Drained { read } if self.core.is_draining() => match read {
                Drain::Bytes(n) => {
                    self.drained += u64::from(n);
                    self.core.handle_drained(Ok(n.into()));
                }
                Drain::Eof => self.core.handle_drained(Ok(0)),
                Drain::Failed => self
                    .core
                    .handle_drained(Err(io::ErrorKind::ConnectionReset.into())),
            },
            Step::ReaderClosed if self.core.watches_reader() => {
                self.reader_closed = true;
                self.core.handle_reader_closed();
            }
            Step::Error => {
                self.failed = Some(Lost::io(io::ErrorKind::ConnectionReset));
                self.core
                    .handle_error(io::ErrorKind::ConnectionReset.into());
                self.check_drains_failed(Lost::io(io::ErrorKind::ConnectionReset))?;
            }
            Step::Tick { ms } => self.tick(Duration::from_millis(ms.into()))?,
            Step::Sleep { early } => {
                let Some(deadline) = self.deadline else {
                    return Ok(false);
                };
                let wake = if early {
                    deadline - Duration::from_micros(1)
                } else {
                    deadline
                };
                // A deadline already past: the driver's timer fires at once.
                let wait = wake.saturating_duration_since(self.now);
                self.note(|| format!("   sleep {wait:?}, to {:?}", self.at(self.now + wait)));
                self.tick(wait)?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn write(&mut self, lens: &[u8], acked: bool) -> Checked {
        let buffers: Vec<Bytes> = lens
            .iter()
            .map(|&len| {
                let start = self.offered;
                self.offered += u64::from(len);
                (start..self.offered)
                    .map(pattern)
                    .collect::<Vec<u8>>()
                    .into()
            })
            .collect();
        let total: usize = buffers.iter().map(Bytes::len).sum();
        let unwritten = self.accepted.len() - self.written;
        let due = if self.kind.direction == Direction::ReadOnly {
            Some(WriteError::ReadOnly)
        } else if self.core.is_closing() {
            Some(WriteError::Closing)
        } else if self.eof_requested {
            Some(WriteError::AfterEof)
        } else if unwritten > 0 && unwritten + total > self.max_write_buffer {
            Some(WriteError::BufferFull(self.max_write_buffer))
        } else {
            None
        };
        let end = (self.accepted.len() + total) as u64;
        match (self.core.write(buffers.iter().cloned()), due) {
            (Ok(ticket), None) => {
                if unwritten == 0 {
                    self.taken_whole = total;
                }
                ensure!(
                    ticket.end() == end,
                    WRITE_ORDER,
                    "a write of {total} bytes got a ticket ending at {}, not {end}",
                    ticket.end()
                );
                for buffer in &buffers {
                    self.accepted.extend_from_slice(buffer);
                }
                self.shared.accepted.set(self.accepted.len() as u64);
                if acked {
                    let (recorder, outcome) = Recorder::new(Awaits::Write { end }, &self.shared);
                    ticket.register(recorder);
                    self.writes.push((end, outcome));
                }
            }
            (Err(err), Some(due)) => {
                ensure!(
                    err == due,
                    if matches!(due, WriteError::BufferFull(_)) {
                        CEILING
                    } else {
                        CLOSING
                    },
                    "a write refused with {err:?}, not {due:?}"
                );
                if let WriteError::BufferFull(_) = due {
                    self.note(|| {
                        format!("   refused with {err:?}: {unwritten} + {total} bytes buffered")
                    });
                    self.overflowed(err)?;
                }
            }
            (Ok(_), Some(due @ WriteError::BufferFull(_))) => {
                return Err(violation(
                    CEILING,
                    format!(
                        "a write of {total} bytes accepted with {unwritten} buffered, past the \
                         maximum {} ({due:?} was due)",
                        self.max_write_buffer
                    ),
                ));
            }
            (Ok(_), Some(due)) => {
                return Err(violation(
                    CLOSING,
                    format!("a write accepted where {due:?} was due"),
                ));
            }
            (Err(err), None) => {
                return Err(violation(
                    if matches!(err, WriteError::BufferFull(_)) {
                        CEILING
                    } else {
                        CLOSING
                    },
                    format!(
                        "a write of {total} bytes refused with {err:?} on an open connection \
                         ({unwritten} bytes buffered, maximum {})",
                        self.max_write_buffer
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A write was refused with `BufferFull`: the connection is aborted, and every write still
    /// pending failed with that error, now.
    fn overflowed(&mut self, err: WriteError) -> Checked {
        self.closing = true;
        self.aborted = true;
        self.upgrade = Upgrade::None;
        self.failed = Some(Lost::write(err));
        ensure!(
            self.core.is_stopped()
                && self.core.write_queue().is_empty()
                && self.core.write_buffer_size() == 0,
            CEILING,
            "a write past the maximum was refused and the connection not aborted (stopped: {}, \
             {} bytes buffered)",
            self.core.is_stopped(),
            self.core.write_buffer_size()
        );
        self.check_pending_failed(CEILING, Lost::write(err))
    }

    /// Every acknowledged write not written and every `WriteEof` failed with `lost`: the
    /// connection was aborted.
    fn check_pending_failed(&self, invariant: &str, lost: Lost) -> Checked {
        for (i, (end, outcome)) in self.writes.iter().enumerate() {
            if *end > self.written as u64 {
                ensure!(
                    outcome.get() == Outcome::Failed(lost),
                    invariant,
                    "acknowledged write #{i} (ending at byte {end}, {} written) is {:?} where \
                     the abort failed it with {lost:?}",
                    self.written,
                    outcome.get()
                );
            }
        }
        for (i, outcome) in self.eof_waiters.iter().enumerate() {
            ensure!(
                outcome.get() != Outcome::Pending,
                invariant,
                "WriteEof #{i} still pending after the abort"
            );
        }
        self.check_drains_failed(lost)
    }

    /// Every drain waiting for the resume edge failed with `lost`: the connection ended with
    /// that error, now.
    fn check_drains_failed(&self, lost: Lost) -> Checked {
        for &i in &self.drains_pending {
            let got = self.drains[i].get();
            ensure!(
                got == Outcome::Failed(lost),
                DRAIN,
                "drain #{i}, issued while writing was paused, is {got:?} where the connection \
                 ended with {lost:?}"
            );
        }
        Ok(())
    }

    fn write_eof(&mut self) -> Checked {
        let open = !self.core.is_closing();
        let can = self.kind.can_write_eof && matches!(self.upgrade, Upgrade::None);
        let (recorder, outcome) = Recorder::new(
            Awaits::Eof {
                flushed_at: self.accepted.len() as u64,
            },
            &self.shared,
        );
        self.core.write_eof(recorder);
        let got = outcome.get();
        self.eof_waiters.push(outcome);
        if open && !can {
            ensure!(
                got == Outcome::Failed(Lost::io(io::ErrorKind::Unsupported)),
                HALF_CLOSE,
                "WriteEof on a transport that cannot half-close (now) gave {got:?}"
            );
        } else if !open {
            ensure!(
                got == Outcome::Failed(Lost::write(WriteError::Closing)),
                HALF_CLOSE,
                "WriteEof on a closing transport gave {got:?}"
            );
        } else if self.shared.shut_down.get() {
            ensure!(
                got == Outcome::Done,
                HALF_CLOSE,
                "WriteEof after the shutdown gave {got:?}"
            );
        } else {
            ensure!(
                got == Outcome::Pending,
                HALF_CLOSE,
                "WriteEof resolved at once ({got:?}) before the shutdown"
            );
            self.eof_requested = true;
            if self.kind.direction == Direction::WriteOnly {
                // Closing a pipe is its EOF.
                self.closing = true;
            }
        }
        Ok(())
    }

    /// `Drain`: `Ok` at once unless writing is paused (as the protocols were told); otherwise
    /// pending, until the `ResumeWriting` edge or the end.
    fn drain(&mut self) -> Checked {
        let paused = self.writing_paused;
        let (recorder, outcome) = Recorder::new(Awaits::Drain { paused }, &self.shared);
        self.core.drain(recorder);
        let got = outcome.get();
        let i = self.drains.len();
        self.drains.push(outcome);
        self.note(|| format!("   drain #{i}: {got:?}"));
        let size = self.core.write_buffer_size();
        if paused {
            ensure!(
                got == Outcome::Pending,
                DRAIN,
                "drain #{i} resolved at once ({got:?}) while writing is paused ({size} bytes \
                 buffered, {:?})",
                self.limits
            );
            self.drains_pending.push(i);
        } else {
            ensure!(
                got == Outcome::Done,
                DRAIN,
                "drain #{i} gave {got:?} while writing is not paused ({size} bytes buffered, \
                 {:?})",
                self.limits
            );
        }
        Ok(())
    }

    fn set_limits(&mut self, high: Option<u8>, low: Option<u8>) -> Checked {
        let (high, low) = (high.map(usize::from), low.map(usize::from));
        // asyncio's derivation: a missing high is 4 × low, or the default; a missing low is
        // high / 4; low > high is an error.
        let derived_high = high.unwrap_or(match low {
            Some(low) => 4 * low,
            None => DEFAULT_HIGH_WATER_MARK,
        });
        let derived_low = low.unwrap_or(derived_high / 4);
        let valid = derived_low <= derived_high;
        if valid {
            // The resume edge this call may decide resolves drains against the new mark.
            self.shared.low.set(derived_low);
        }
        let result = self
            .core
            .set_write_buffer_limits(high, low, WriteBufferLimits::default());
        ensure!(
            result.is_ok() == valid,
            FLOW,
            "SetWriteBufferLimits(high {high:?}, low {low:?}) gave {result:?}"
        );
        if valid {
            self.limits = WriteBufferLimits::new(derived_high, derived_low).expect("checked valid");
            self.limits_chosen = true;
            self.flow_checked = true;
        }
        Ok(())
    }

    /// The unconsumed tail (from `split`) of the chunk the protocol attached now last received,
    /// if its acknowledgement is still out, with that chunk's seq. The protocol consumed the
    /// rest: the tail is handed over once.
    fn take_leftover(&mut self, split: u8) -> (u64, Bytes) {
        let current = self.current();
        match self.protocols[current].last_chunk.take() {
            Some((seq, chunk)) if self.outstanding.contains_key(&seq) => {
                let split = usize::from(split) % (chunk.len() + 1);
                (seq, chunk.slice(split..))
            }
            _ => (0, Bytes::new()),
        }
    }

    fn switch(&mut self, split: u8, handles: Handles) {
        let (source, leftover) = self.take_leftover(split);
        if !leftover.is_empty() && !self.core.is_closing() {
            // The new protocol receives these bytes first.
            self.cursor -= leftover.len();
            self.double_counted.push((source, leftover.len()));
            let now: usize = self.double_counted.iter().map(|(_, n)| n).sum();
            self.most_double_counted = self.most_double_counted.max(now);
        }
        self.protocols.push(Protocol {
            handles,
            replay_due: self.writing_paused,
            ..Protocol::default()
        });
        self.note(|| {
            format!(
                "   switch to protocol #{} ({handles:?}) with {} leftover bytes",
                self.current(),
                leftover.len()
            )
        });
        self.core.set_protocol(leftover, handles);
    }

    fn eof_decided(&mut self, keep_open: bool) -> Checked {
        let was_closing = self.core.is_closing();
        self.eof_unanswered = false;
        self.core.eof_decided(keep_open);
        if !keep_open || !self.kind.can_write_eof {
            self.closing = true;
        } else {
            ensure!(
                was_closing || !self.core.is_closing(),
                HALF_CLOSE,
                "keep_open on a transport that can half-close closed it"
            );
        }
        Ok(())
    }

    fn ack(&mut self, seq: u64) {
        self.core.ack(seq);
        if self.outstanding.remove(&seq).is_some() {
            self.double_counted.retain(|&(source, _)| source != seq);
            if self.first_made == Some(seq) {
                self.attached = true;
            }
        }
    }

    fn start_upgrade(&mut self, policy: Leftover, split: u8) {
        let (_, leftover) = self.take_leftover(split);
        // Everything read and not consumed goes to the new layer, or is discarded.
        self.cursor -= leftover.len();
        let prefix = match policy {
            Leftover::Feed => self.fed[self.cursor..].to_vec(),
            Leftover::Discard => Vec::new(),
        };
        self.cursor = self.fed.len();
        self.parts += 1;
        self.upgrade = Upgrade::Requested {
            part: self.parts,
            prefix,
            accepted_before: self.accepted.len(),
        };
        // Unconsumed plaintext under `Discard` refuses the upgrade (the unit tests check that):
        // the protocol here drops what it did not consume before it asks.
        let leftover = match policy {
            Leftover::Feed => leftover,
            Leftover::Discard => Bytes::new(),
        };
        let started = self
            .core
            .start_upgrade(Box::new(self.parts), policy, leftover);
        assert!(started.is_ok(), "checked before");
    }

    fn upgraded(&mut self, outcome: Option<(StreamKind, WriteBufferLimits)>) -> Checked {
        let Upgrade::Handshaking { part, .. } = mem::replace(&mut self.upgrade, Upgrade::None)
        else {
            unreachable!("checked by the caller");
        };
        let result = outcome.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData));
        // The handshake's end counts as progress for the idle timer.
        self.timers.active = true;
        let returned = self.core.handle_upgraded(result);
        let returned = returned.and_then(|part| part.downcast::<u64>().ok());
        ensure!(
            returned.as_deref() == Some(&part),
            UPGRADE,
            "handle_upgraded gave back {returned:?}, not the driver's part {part}"
        );
        match outcome {
            Some((kind, limits)) => {
                self.kind = kind;
                if !self.limits_chosen {
                    self.limits = fit(limits, self.settings.max_write_buffer);
                    self.shared.low.set(self.limits.low());
                }
                ensure!(
                    self.core.kind() == kind,
                    UPGRADE,
                    "the kind after the upgrade is {:?}, not {kind:?}",
                    self.core.kind()
                );
            }
            None => {
                self.failed = Some(Lost::io(io::ErrorKind::InvalidData));
                self.check_drains_failed(Lost::io(io::ErrorKind::InvalidData))?;
            }
        }
        Ok(())
    }

    fn protocol_gone(&mut self) -> Checked {
        self.alive = false;
        let aborts = !self.core.is_closing();
        if aborts {
            self.closing = true;
            self.aborted = true;
            self.upgrade = Upgrade::None;
        }
        self.core.handle_protocol_gone();
        if aborts {
            self.check_drains_failed(Lost::write(WriteError::Aborted))?;
        }
        // Its mailbox goes with it: the acknowledgements it held come back, and an EOF it did
        // not answer closes.
        let current = self.current();
        let held: Vec<u64> = self
            .outstanding
            .iter()
            .filter(|(_, (_, protocol))| *protocol == current)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in held {
            self.ack(seq);
        }
        if mem::take(&mut self.eof_unanswered) {
            self.core.eof_decided(false);
        }
        Ok(())
    }

    fn written(&mut self, n: Option<u16>) -> Checked {
        let queued: usize = self.core.write_queue().iter().map(Bytes::len).sum();
        let k = n.map_or(queued, |n| usize::from(n) % (queued + 1));
        self.note(|| format!("   the socket takes {k} of {queued} bytes"));
        let mut out = Vec::with_capacity(k);
        for buffer in self.core.write_queue().iter() {
            let take = (k - out.len()).min(buffer.len());
            out.extend_from_slice(&buffer[..take]);
            if out.len() == k {
                break;
            }
        }
        let due = self.accepted.get(self.written..self.written + k);
        ensure!(
            due == Some(&out[..]),
            WRITE_ORDER,
            "the socket was given {} where the accepted writes go on with {}",
            brief(&out),
            due.map_or_else(|| "nothing".to_owned(), brief)
        );
        self.written += k;
        self.shared.written.set(self.written as u64);
        if k > 0 {
            self.progressed = true;
            self.timers.active = true;
        }
        self.core.handle_written(k);
        self.core.handle_write_attempted();
        self.flow_checked = true;
        Ok(())
    }

    /// Time passes by `wait`; then `poll_timeout(now)` and `handle_timeout(now)`, as a driver
    /// whose timer fired.
    fn tick(&mut self, wait: Duration) -> Checked {
        self.now += wait;
        self.poll_timeout()?;
        let stall_due = match (self.stall_since, self.settings.write_stall_timeout) {
            (Some(since), Some(timeout)) => self.now >= since + timeout,
            _ => false,
        };
        let drain_due = self.core.is_draining()
            && self
                .drain_since
                .is_some_and(|since| self.now >= since + self.settings.close_drain_timeout);
        let was_closing = self.core.is_closing();
        // The model's timers act first, as `handle_timeout` checks them first.
        let timer = self.timer_due();
        self.core.handle_timeout(self.now);
        if let Some((timed_out, end)) = timer {
            if end {
                return self.ended_by_timer(timed_out);
            }
            self.note(|| format!("   {timed_out:?} ran out: the protocol is to be told"));
            self.timed_out_due = Some(timed_out);
        }
        if stall_due {
            ensure!(
                self.core.is_stopped(),
                TIMEOUTS,
                "the write buffer made no progress since {:?} and the connection, at {:?}, \
                 was not aborted",
                self.at(self.stall_since.expect("due")),
                self.at(self.now)
            );
            let timeout = self.settings.write_stall_timeout.expect("due");
            self.failed = Some(Lost::write(WriteError::Stalled(timeout)));
            self.check_drains_failed(Lost::write(WriteError::Stalled(timeout)))?;
        } else if drain_due {
            ensure!(
                self.core.is_stopped(),
                TIMEOUTS,
                "the drain outlived its deadline"
            );
        } else {
            ensure!(
                !self.core.is_stopped(),
                TIMEOUTS,
                "a timeout that was not due ended the connection"
            );
            ensure!(
                was_closing || !self.core.is_closing(),
                TIMERS,
                "handle_timeout at {:?} began closing where no timer ran out (idle since {:?}, \
                 first byte since {:?}, {:?})",
                self.at(self.now),
                self.at(self.timers.idle_since),
                self.at(self.timers.first_byte_since),
                self.settings
            );
        }
        Ok(())
    }

    /// The timer that runs out at `handle_timeout(now)`, by the rule of [`Timers`], if one
    /// does, and whether it ends the connection (otherwise the protocol is told); the model's
    /// timers move on as the core's must.
    fn timer_due(&mut self) -> Option<(Timeout, bool)> {
        if self.core.is_closing() || !matches!(self.upgrade, Upgrade::None) {
            return None;
        }
        let received = self.received();
        let tell = self.protocols[self.current()].handles.timeouts;
        let now = self.now;
        let timers = &mut self.timers;
        let (timed_out, told) = if let Some(timeout) = timers
            .first_byte
            .filter(|&timeout| !received && now >= timers.first_byte_since + timeout)
        {
            let told = mem::replace(&mut timers.first_byte_told, true);
            if tell && !told {
                timers.first_byte_since = now;
            }
            (Timeout::FirstByte(timeout), told)
        } else if let Some(timeout) = timers
            .idle
            .filter(|&timeout| now >= timers.idle_since + timeout)
        {
            let told = mem::replace(&mut timers.idle_told, true);
            if tell && !told {
                timers.idle_since = now;
            }
            (Timeout::Idle(timeout), told)
        } else {
            return None;
        };
        Some((timed_out, told || !tell))
    }

    /// A timer ended the connection at `handle_timeout(now)`: checks the plain bounds (no
    /// progress, or no byte, for T; for 2T if the protocol was told), then the end itself.
    fn ended_by_timer(&mut self, timed_out: Timeout) -> Checked {
        let timers = &self.timers;
        let (since, told, setting) = match timed_out {
            Timeout::FirstByte(_) => {
                ensure!(
                    !self.received(),
                    TIMERS,
                    "the first-byte timeout ended a connection that received bytes"
                );
                (
                    self.epoch,
                    timers.first_byte_told_ever,
                    self.settings.first_byte_timeout,
                )
            }
            Timeout::Idle(_) => (
                timers.progress_at,
                timers.idle_told_since_progress,
                self.settings.idle_timeout,
            ),
            other => {
                return Err(violation(
                    TIMERS,
                    format!("a timeout the checker does not know: {other:?}"),
                ));
            }
        };
        let timeout = timed_out.duration();
        ensure!(
            setting == Some(timeout),
            TIMERS,
            "{timed_out:?} with the timeout set to {setting:?}"
        );
        let quiet = self.now - since;
        ensure!(
            quiet >= if told { 2 * timeout } else { timeout },
            TIMERS,
            "{timed_out:?} ended the connection at {:?}, {quiet:?} after {:?} (told: {told})",
            self.at(self.now),
            self.at(since)
        );
        self.note(|| format!("   {timed_out:?} ran out: the connection ends"));
        self.failed = Some(Lost::timer(timed_out));
        self.closing = true;
        if self.accepted.len() == self.written {
            // Nothing to flush: a close, which ends with the timeout's error.
            ensure!(
                self.core.is_closing(),
                TIMERS,
                "{timed_out:?} ran out with nothing to write and the connection is not closing"
            );
        } else {
            self.aborted = true;
            ensure!(
                self.core.is_stopped() && self.core.write_buffer_size() == 0,
                TIMERS,
                "{timed_out:?} ran out with {} bytes to write and the connection was not aborted",
                self.accepted.len() - self.written
            );
            self.check_pending_failed(TIMERS, Lost::timer(timed_out))?;
        }
        Ok(())
    }

    // ---- the driver's round after every step ----

    fn round(&mut self) -> Checked {
        self.poll_events()?;
        self.poll_upgrade()?;
        self.poll_timeout()?;
        if let Some(release) = self.core.take_release() {
            self.note(|| format!("   release {release:?}"));
            return self.stop(Some(release));
        }
        ensure!(
            !self.core.is_stopped(),
            LIFECYCLE,
            "the core stopped without a release"
        );
        self.check_state()
    }

    fn poll_events(&mut self) -> Checked {
        loop {
            while let Some(event) = self.core.poll_event() {
                self.note(|| format!("   -> protocol #{}: {event:?}", self.current()));
                self.deliver(event)?;
            }
            if self.dropped.is_empty() {
                break;
            }
            for dropped in mem::take(&mut self.dropped) {
                match dropped {
                    Dropped::Ack(seq) => self.ack(seq),
                    Dropped::EofDecision => {
                        self.eof_unanswered = false;
                        self.core.eof_decided(false);
                    }
                }
            }
        }
        if !self.core.is_stopped() {
            let current = self.current();
            let protocol = &self.protocols[current];
            ensure!(
                protocol.made,
                LIFECYCLE,
                "protocol #{current} is attached and got no ConnectionMade"
            );
            ensure!(
                self.timed_out_due.is_none(),
                TIMERS,
                "{:?} ran out and protocol #{current} ({:?}) was not told",
                self.timed_out_due,
                protocol.handles
            );
            // Nothing holds what waits: it went (a throttled protocol gets it once the buffer
            // drained, so this is also the end of the read-stop).
            let free = !self.core.is_closing()
                && !self.paused
                && self.outstanding.is_empty()
                && matches!(self.upgrade, Upgrade::None);
            ensure!(
                !free || self.throttled() || self.waiting() == 0,
                STUCK,
                "{} bytes wait for protocol #{current} ({:?}) and nothing holds them (writing \
                 paused: {}, {} bytes buffered)",
                self.waiting(),
                protocol.handles,
                self.writing_paused,
                self.core.write_buffer_size()
            );
            ensure!(
                !free || self.waiting() > 0 || !self.eof_read || self.eof_delivered,
                STUCK,
                "the peer's EOF waits for protocol #{current} and nothing holds it"
            );
            ensure!(
                !protocol.replay_due,
                FLOW,
                "protocol #{current}, switched to while writing was paused, got no PauseWriting \
                 after its ConnectionMade"
            );
        }
        Ok(())
    }

    fn deliver(&mut self, event: Event) -> Checked {
        let current = self.current();
        let size = self.core.write_buffer_size();
        let limits = self.limits;
        let made = self.protocols[current].made;
        if !matches!(event, Event::Made { .. }) {
            ensure!(
                made,
                LIFECYCLE,
                "{event:?} reached protocol #{current} before its ConnectionMade"
            );
        }
        match event {
            Event::Made { seq } => {
                ensure!(
                    !made,
                    LIFECYCLE,
                    "protocol #{current} got a second ConnectionMade"
                );
                ensure!(
                    seq > self.last_seq,
                    LIFECYCLE,
                    "acknowledgement {seq} issued again"
                );
                self.last_seq = seq;
                self.protocols[current].made = true;
                self.outstanding.insert(seq, (0, current));
                self.first_made.get_or_insert(seq);
                if !self.alive {
                    self.dropped.push(Dropped::Ack(seq));
                }
            }
            Event::PauseWriting => {
                let protocol = &mut self.protocols[current];
                ensure!(
                    !protocol.told_paused,
                    FLOW,
                    "protocol #{current} got PauseWriting twice in a row"
                );
                protocol.told_paused = true;
                if !mem::take(&mut protocol.replay_due) {
                    ensure!(
                        !self.writing_paused,
                        FLOW,
                        "a second PauseWriting on the connection (protocol #{current} is new)"
                    );
                    ensure!(
                        size > limits.high(),
                        FLOW,
                        "PauseWriting with {size} bytes buffered, not above {limits:?}"
                    );
                    self.writing_paused = true;
                }
            }
            Event::ResumeWriting => {
                let protocol = &mut self.protocols[current];
                ensure!(
                    !protocol.replay_due,
                    FLOW,
                    "ResumeWriting to protocol #{current} before its replayed PauseWriting"
                );
                ensure!(
                    protocol.told_paused && self.writing_paused,
                    FLOW,
                    "ResumeWriting to protocol #{current}, which was not paused"
                );
                ensure!(
                    size <= limits.low(),
                    FLOW,
                    "ResumeWriting with {size} bytes buffered, above {limits:?}"
                );
                protocol.told_paused = false;
                self.writing_paused = false;
            }
            Event::Data { data, seq } => {
                self.check_delivery("DataReceived")?;
                ensure!(
                    !self.throttled(),
                    THROTTLE,
                    "DataReceived to protocol #{current}, which does not handle write flow, while \
                     writing is paused ({size} bytes buffered, {limits:?})"
                );
                ensure!(!self.eof_delivered, ORDER, "DataReceived after EofReceived");
                ensure!(!data.is_empty(), ORDER, "an empty DataReceived");
                let due = self.fed.get(self.cursor..self.cursor + data.len());
                ensure!(
                    due == Some(&data[..]),
                    ORDER,
                    "protocol #{current} got {} where the stream goes on at byte {} with {}",
                    brief(&data),
                    self.cursor,
                    brief(self.fed.get(self.cursor..).unwrap_or_default())
                );
                ensure!(
                    seq > self.last_seq,
                    ONE_IN_FLIGHT,
                    "acknowledgement {seq} issued again"
                );
                self.last_seq = seq;
                self.cursor += data.len();
                self.deliveries += 1;
                self.outstanding.insert(seq, (data.len(), current));
                self.protocols[current].last_chunk = Some((seq, data));
                if !self.alive {
                    self.dropped.push(Dropped::Ack(seq));
                }
            }
            Event::Eof => {
                self.check_delivery("EofReceived")?;
                ensure!(
                    self.eof_read && !self.eof_delivered,
                    HALF_CLOSE,
                    "EofReceived without the peer's EOF, or a second time"
                );
                ensure!(
                    !self.unclean,
                    HALF_CLOSE,
                    "EofReceived for a stream that ended uncleanly (it must be reported as \
                     truncated)"
                );
                ensure!(
                    self.cursor == self.fed.len(),
                    ORDER,
                    "EofReceived with {} bytes read and not delivered",
                    self.fed.len() - self.cursor
                );
                self.eof_delivered = true;
                self.eof_unanswered = true;
                if !self.alive {
                    self.dropped.push(Dropped::EofDecision);
                }
            }
            Event::TimedOut(timed_out) => {
                ensure!(
                    self.protocols[current].handles.timeouts,
                    TIMERS,
                    "{timed_out:?} to protocol #{current}, which does not handle timeouts"
                );
                let due = self.timed_out_due.take();
                ensure!(
                    due == Some(timed_out),
                    TIMERS,
                    "{timed_out:?} to protocol #{current} at {:?} where {due:?} was due",
                    self.at(self.now)
                );
                match timed_out {
                    Timeout::Idle(_) => self.timers.idle_told_since_progress = true,
                    Timeout::FirstByte(_) => self.timers.first_byte_told_ever = true,
                    // `due` named it: the model knows only these two.
                    _ => unreachable!("{timed_out:?} was due"),
                }
            }
            other => {
                return Err(violation(
                    LIFECYCLE,
                    format!("an event the checker does not know: {other:?}"),
                ));
            }
        }
        Ok(())
    }

    /// What holds for every `DataReceived` and `EofReceived`.
    fn check_delivery(&self, what: &str) -> Checked {
        ensure!(
            self.outstanding.is_empty(),
            ONE_IN_FLIGHT,
            "{what} while the acknowledgements {:?} are out",
            self.outstanding.keys().collect::<Vec<_>>()
        );
        ensure!(!self.paused, PAUSED, "{what} while reading is paused");
        ensure!(
            !self.closing && !self.core.is_closing(),
            DROPS,
            "{what} after the connection began closing"
        );
        ensure!(
            matches!(self.upgrade, Upgrade::None),
            UPGRADE,
            "{what} during an upgrade"
        );
        Ok(())
    }

    /// Begins the upgrade's handshake once the core says so, as a driver polls for it.
    fn poll_upgrade(&mut self) -> Checked {
        let Upgrade::Requested {
            part,
            ref prefix,
            accepted_before,
        } = self.upgrade
        else {
            return Ok(());
        };
        let queued = !self.core.write_queue().is_empty();
        match self.core.upgrade_start() {
            Some(got) => {
                ensure!(
                    !queued && self.written >= accepted_before,
                    UPGRADE,
                    "the handshake began with {} of the {accepted_before} bytes before StartTls \
                     written",
                    self.written
                );
                ensure!(
                    got[..] == prefix[..],
                    UPGRADE,
                    "the new layer was fed {} where {} was due",
                    brief(&got),
                    brief(prefix)
                );
                self.note(|| format!("   handshake begins, fed {}", brief(&got)));
                self.upgrade = Upgrade::Handshaking {
                    part,
                    accepted_before,
                };
            }
            None => ensure!(
                queued || self.core.is_stopped(),
                UPGRADE,
                "the handshake did not begin with nothing left to write before it"
            ),
        }
        Ok(())
    }

    /// `poll_timeout(now)`, as a driver calls it after every round of I/O, against the model's
    /// deadline.
    fn poll_timeout(&mut self) -> Checked {
        let stopped = self.core.is_stopped();
        let queued = !self.core.write_queue().is_empty();
        let deadline = self.core.poll_timeout(self.now);
        let progressed = mem::take(&mut self.progressed);
        if self.settings.write_stall_timeout.is_some() && queued && !stopped {
            if self.stall_since.is_none() || progressed {
                self.stall_since = Some(self.now);
            }
        } else {
            self.stall_since = None;
        }
        let draining = self.core.is_draining();
        if draining {
            self.drain_since.get_or_insert(self.now);
        }
        let stall = self
            .stall_since
            .zip(self.settings.write_stall_timeout)
            .map(|(since, timeout)| since + timeout);
        let drain = self
            .drain_since
            .filter(|_| draining)
            .map(|since| since + self.settings.close_drain_timeout);
        let timers = self.timers_deadline();
        let due = [stall, drain, timers].into_iter().flatten().min();
        self.deadline = deadline;
        ensure!(
            deadline == due,
            if self.timers.idle.is_some() || self.timers.first_byte.is_some() {
                TIMERS
            } else {
                TIMEOUTS
            },
            "poll_timeout at {:?} gave {:?}, where the write buffer's last progress, the \
             drain's start and the timers ({:?}) call for {:?}",
            self.at(self.now),
            deadline.map(|deadline| self.at(deadline)),
            timers.map(|timers| self.at(timers)),
            due.map(|due| self.at(due))
        );
        Ok(())
    }

    /// The deadline of the idle and first-byte timers, as the core learns of progress at
    /// `poll_timeout`: none while closing or upgrading.
    fn timers_deadline(&mut self) -> Option<Instant> {
        let now = self.now;
        let timers = &mut self.timers;
        if mem::take(&mut timers.active) {
            timers.idle_since = now;
            timers.idle_told = false;
            timers.progress_at = now;
            timers.idle_told_since_progress = false;
        }
        if self.core.is_closing() || !matches!(self.upgrade, Upgrade::None) {
            return None;
        }
        let received = self.received();
        let timers = &self.timers;
        let first_byte = timers
            .first_byte
            .filter(|_| !received)
            .map(|timeout| timers.first_byte_since + timeout);
        let idle = timers.idle.map(|timeout| timers.idle_since + timeout);
        first_byte.into_iter().chain(idle).min()
    }

    /// What holds between steps while the connection lives.
    fn check_state(&mut self) -> Checked {
        if let Some(violation) = self.shared.violation.borrow_mut().take() {
            return Err(violation);
        }
        let core = &self.core;
        let stats = core.stats();
        let limit = self.settings.read_buffer_limit;

        // closing
        let closing = core.is_closing();
        ensure!(
            closing || !self.closing,
            CLOSING,
            "is_closing() is false after Close, Abort or a closing EOF decision"
        );
        ensure!(
            closing || !self.was_closing,
            CLOSING,
            "is_closing() went back to false"
        );
        self.was_closing = closing;

        // reading
        let room = core.read_room();
        if room > 0 {
            ensure!(
                self.attached,
                LIFECYCLE,
                "read_room() is {room} before the first ConnectionMade was acknowledged"
            );
            ensure!(!self.paused, PAUSED, "read_room() is {room} while paused");
            ensure!(
                !closing && !self.eof_read,
                DROPS,
                "read_room() is {room} while closing or after the peer's EOF"
            );
            ensure!(
                matches!(self.upgrade, Upgrade::None),
                UPGRADE,
                "read_room() is {room} during an upgrade"
            );
        }
        let held = stats.read_buffer_size + stats.read_in_flight;
        let double: usize = self.double_counted.iter().map(|(_, n)| n).sum();
        ensure!(
            held + room <= limit + double,
            READ_LIMIT,
            "{held} bytes held and read_room() {room}, past the limit {limit} (leftover \
             counted twice: {double})"
        );
        ensure!(
            stats.read_buffer_peak <= limit + self.most_double_counted,
            READ_LIMIT,
            "read_buffer_peak {} past the limit {limit} (leftover counted twice at most: {})",
            stats.read_buffer_peak,
            self.most_double_counted
        );
        let throttled = self.throttled();
        ensure!(
            core.is_throttled() == throttled,
            THROTTLE,
            "is_throttled() is {} where protocol #{} handles {:?} and writing is {}paused",
            core.is_throttled(),
            self.current(),
            self.protocols[self.current()].handles,
            if self.writing_paused { "" } else { "not " }
        );
        ensure!(
            !throttled || room == 0,
            THROTTLE,
            "read_room() is {room} while protocol #{} does not handle write flow and writing is \
             paused",
            self.current()
        );
        let expect_reading = !closing && !self.paused && !self.eof_read;
        ensure!(
            core.is_reading() == expect_reading,
            PAUSED,
            "is_reading() is {}",
            core.is_reading()
        );

        // no loss, no duplicate: what was fed and not delivered waits in the core
        if closing {
            ensure!(
                stats.read_buffer_size == 0,
                DROPS,
                "{} bytes wait for delivery on a closing connection",
                stats.read_buffer_size
            );
        } else {
            ensure!(
                stats.read_buffer_size == self.fed.len() - self.cursor,
                ORDER,
                "{} bytes wait in the core where {} were read and not delivered",
                stats.read_buffer_size,
                self.fed.len() - self.cursor
            );
        }
        let in_flight: usize = self.outstanding.values().map(|(bytes, _)| bytes).sum();
        ensure!(
            stats.read_in_flight == in_flight,
            ONE_IN_FLIGHT,
            "read_in_flight is {} where the deliveries out hold {in_flight} bytes",
            stats.read_in_flight
        );
        ensure!(
            stats.bytes_received == self.fed.len() as u64 + self.drained
                && stats.deliveries == self.deliveries
                && stats.bytes_sent == self.written as u64,
            COUNTERS,
            "{stats:?}: {} bytes fed, {} drained, {} deliveries, {} written",
            self.fed.len(),
            self.drained,
            self.deliveries,
            self.written
        );

        // writing
        let queued: usize = core.write_queue().iter().map(Bytes::len).sum();
        let held_back = self
            .upgrade
            .accepted_before()
            .map_or(0, |before| self.accepted.len().saturating_sub(before));
        let unwritten = self.accepted.len() - self.written;
        ensure!(
            queued + held_back == unwritten,
            WRITE_ORDER,
            "{queued} bytes queued and {held_back} held back by the upgrade, where {unwritten} \
             accepted bytes are unwritten"
        );
        ensure!(
            core.write_buffer_size() == unwritten
                && core.ledger().accepted() == self.accepted.len() as u64,
            COUNTERS,
            "write_buffer_size() {}, ledger {:?}, where {} bytes were accepted and {unwritten} \
             are unwritten",
            core.write_buffer_size(),
            core.ledger(),
            self.accepted.len()
        );
        ensure!(
            core.max_write_buffer() == self.max_write_buffer
                && core.write_buffer_size() <= self.max_write_buffer.max(self.taken_whole),
            CEILING,
            "{} bytes buffered, where the maximum is {} (max_write_buffer() {}) and the last \
             write taken into an empty buffer was {} bytes",
            core.write_buffer_size(),
            self.max_write_buffer,
            core.max_write_buffer(),
            self.taken_whole
        );
        ensure!(
            core.write_buffer_limits() == self.limits,
            FLOW,
            "the limits in force are {:?}, not {:?}",
            core.write_buffer_limits(),
            self.limits
        );
        ensure!(
            core.is_writing_paused() == self.writing_paused,
            FLOW,
            "is_writing_paused() is {} where the protocols were told {}",
            core.is_writing_paused(),
            self.writing_paused
        );
        if mem::take(&mut self.flow_checked) {
            let size = core.write_buffer_size();
            ensure!(
                self.writing_paused || size <= self.limits.high(),
                FLOW,
                "{size} bytes buffered, above {:?}, and no PauseWriting",
                self.limits
            );
            ensure!(
                !self.writing_paused || size > self.limits.low(),
                FLOW,
                "{size} bytes buffered, down to {:?}, and no ResumeWriting",
                self.limits
            );
        }
        // A drain issued while paused resolves with the ResumeWriting this round told, not
        // before; the connection lives, so it did not fail.
        for &i in &self.drains_pending {
            let got = self.drains[i].get();
            let due = if self.writing_paused {
                Outcome::Pending
            } else {
                Outcome::Done
            };
            ensure!(
                got == due,
                DRAIN,
                "drain #{i}, issued while writing was paused, is {got:?} where writing is {}paused \
                 ({unwritten} bytes buffered, {:?})",
                if self.writing_paused {
                    "still "
                } else {
                    "no longer "
                },
                self.limits
            );
        }
        if !self.writing_paused {
            self.drains_pending.clear();
        }
        if core.wants_shutdown() {
            ensure!(
                unwritten == 0 && (self.eof_requested || closing),
                HALF_CLOSE,
                "the core wants a shutdown with {unwritten} accepted bytes unwritten, or with \
                 neither WriteEof nor Close"
            );
        }
        ensure!(
            core.can_write_eof() == self.kind.can_write_eof,
            HALF_CLOSE,
            "can_write_eof() is {}",
            core.can_write_eof()
        );
        ensure!(
            !core.watches_reader() || self.kind.direction == Direction::WriteOnly,
            ENDING,
            "watches_reader() on a stream that is not write-only"
        );

        // upgrading
        let upgrading = !matches!(self.upgrade, Upgrade::None);
        ensure!(
            core.is_upgrading() == upgrading
                && core.is_handshaking() == matches!(self.upgrade, Upgrade::Handshaking { .. }),
            UPGRADE,
            "is_upgrading() {}, is_handshaking() {}, where the upgrade is {:?}",
            core.is_upgrading(),
            core.is_handshaking(),
            self.upgrade
        );
        ensure!(
            core.check_upgrade().is_ok() == (!closing && !upgrading && !self.eof_requested),
            UPGRADE,
            "check_upgrade() is {:?}",
            core.check_upgrade()
        );
        Ok(())
    }

    // ---- the end ----

    /// The driver stops (after a release, or for a reason of its own): `stopped()` once, then
    /// `ConnectionLost` to the protocol attached now, last.
    fn stop(&mut self, release: Option<Release>) -> Checked {
        self.ended = true;
        // A failure of the core's own (the maximum, a timer) under its own name.
        let failure = match self.failed.map(|failed| failed.cause) {
            Some(Cause::Write(WriteError::BufferFull(_))) => CEILING,
            Some(Cause::Timer(_)) => TIMERS,
            _ => ENDING,
        };
        if let Some(release) = release {
            ensure!(
                release.abort == self.aborted,
                failure,
                "released with abort = {}, where {} (failed with {:?})",
                release.abort,
                if self.aborted {
                    "the connection was aborted"
                } else {
                    "nothing aborted the connection"
                },
                self.failed
            );
        }
        // The drains still waiting when the driver stops fail with `Stopped`; those the last
        // step resolved failed with what ended the connection, or resolved Ok with the
        // ResumeWriting of the last round (the round closed the connection after telling it),
        // or with a clean close that flushed everything.
        // A clean close that flushed every byte resolves them Ok: the buffer did drain.
        let flushed = !self.aborted
            && self.failed.is_none()
            && self.written as u64 == self.accepted.len() as u64;
        let mut waiting = Vec::new();
        for &i in &self.drains_pending {
            match (self.drains[i].get(), self.writing_paused) {
                (Outcome::Pending, true) => waiting.push(i),
                (Outcome::Failed(_), true) | (Outcome::Done, false) => {}
                (Outcome::Done, true) if flushed => {}
                (got, _) => {
                    return Err(violation(
                        DRAIN,
                        format!(
                            "drain #{i}, issued while writing was paused, is {got:?} as the \
                             connection ends, where writing is {}paused",
                            if self.writing_paused {
                                "still "
                            } else {
                                "no longer "
                            }
                        ),
                    ));
                }
            }
        }
        let lost = self.core.stopped();
        let stopped = Outcome::Failed(Lost::write(WriteError::Stopped));
        for i in waiting {
            let got = self.drains[i].get();
            ensure!(
                got == stopped,
                DRAIN,
                "drain #{i}, pending when the driver stopped, is {got:?} after stopped()"
            );
        }
        let current = self.current();
        self.note(|| format!("   -> protocol #{current}: ConnectionLost({lost:?})"));
        ensure!(
            self.protocols[current].made,
            LIFECYCLE,
            "ConnectionLost to protocol #{current} before its ConnectionMade"
        );
        match (self.failed, &lost) {
            (Some(failed), Some(err)) => ensure!(
                Lost::of(err) == failed,
                failure,
                "ConnectionLost({err}: {:?}) where the connection failed with {failed:?}",
                Lost::of(err)
            ),
            (Some(failed), None) => {
                return Err(violation(
                    failure,
                    format!("the connection failed with {failed:?} and ConnectionLost(None)"),
                ));
            }
            (None, Some(err)) => ensure!(
                self.unclean && err.kind() == io::ErrorKind::UnexpectedEof,
                ENDING,
                "ConnectionLost({err}) though nothing failed"
            ),
            (None, None) => ensure!(
                !self.unclean,
                HALF_CLOSE,
                "a stream that ended uncleanly was reported as a clean close"
            ),
        }
        if let Some(release) = release
            && !release.abort
            && lost.is_none()
            && !self.reader_closed
        {
            ensure!(
                self.written == self.accepted.len(),
                ENDING,
                "a clean close left {} accepted bytes unwritten",
                self.accepted.len() - self.written
            );
        }
        if self.aborted {
            ensure!(
                self.core.write_queue().is_empty(),
                ENDING,
                "bytes left to write after Abort"
            );
        }
        ensure!(
            self.core.poll_event().is_none() && self.core.take_release().is_none(),
            LIFECYCLE,
            "an event or a release after ConnectionLost"
        );
        ensure!(
            self.core.is_closing() && self.core.is_stopped() && self.core.read_room() == 0,
            LIFECYCLE,
            "the core lives on after stopped()"
        );
        ensure!(
            self.core.write([Bytes::from_static(b"late")]).is_err(),
            CLOSING,
            "a write accepted after the transport stopped"
        );
        let (recorder, late) = Recorder::new(Awaits::Drain { paused: false }, &self.shared);
        self.core.drain(recorder);
        ensure!(
            late.get() == stopped,
            DRAIN,
            "a drain after the transport stopped gave {:?}",
            late.get()
        );
        for (i, (end, outcome)) in self.writes.iter().enumerate() {
            match outcome.get() {
                Outcome::Pending => {
                    return Err(violation(
                        OUTCOMES,
                        format!("acknowledged write #{i} (ending at byte {end}) never resolved"),
                    ));
                }
                Outcome::Failed(lost) => ensure!(
                    (self.written as u64) < *end,
                    OUTCOMES,
                    "acknowledged write #{i} failed ({lost:?}) though all its bytes were written"
                ),
                Outcome::Done => {}
            }
        }
        for (i, outcome) in self.eof_waiters.iter().enumerate() {
            ensure!(
                outcome.get() != Outcome::Pending,
                OUTCOMES,
                "WriteEof #{i} never resolved"
            );
        }
        for (i, outcome) in self.drains.iter().enumerate() {
            ensure!(
                outcome.get() != Outcome::Pending,
                DRAIN,
                "drain #{i} never resolved"
            );
        }
        if let Some(violation) = self.shared.violation.borrow_mut().take() {
            return Err(violation);
        }
        Ok(())
    }
}

/// The model of the rule for a kind's limits under a smaller maximum: pause at the maximum (as
/// the core caps it, at 4 GiB), resume at a quarter of it at most.
fn fit(limits: WriteBufferLimits, max: usize) -> WriteBufferLimits {
    let max = max.min(u32::MAX as usize);
    if limits.high() <= max {
        return limits;
    }
    WriteBufferLimits::new(max, limits.low().min(max / 4)).expect("low <= high")
}
