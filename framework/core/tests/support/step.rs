//! What the checker generates: a connection's settings and kind, and the steps its driver and
//! its protocols take, with the weights that make long and varied runs.

use std::{fmt, time::Duration};

use proptest::prelude::*;
use switchboard_core::{
    Handles, WriteBufferLimits,
    stream::{Direction, Leftover, StreamKind, StreamSettings},
};

use super::runner::{self, Bits, Temper};

/// One generated run: a fresh core with these settings and kind, driven through `steps`.
#[derive(Clone)]
pub(crate) struct Case {
    pub(crate) settings: StreamSettings,
    pub(crate) kind: StreamKind,
    /// What the first protocol handles (`set_handles` before the first event).
    pub(crate) handles: Handles,
    pub(crate) steps: Vec<Step>,
}

/// Everything a driver and a protocol can do to a core.
///
/// A step is generated without knowing the state it will meet, so the parts that depend on the
/// state are selectors that [`harness`](super::harness) resolves when it runs the step (which
/// outstanding acknowledgement, how much of the room to read, where to cut the leftover), and a
/// step whose precondition does not hold then (a shutdown nobody wants, an acknowledgement with
/// none outstanding) is skipped and not counted. So shrinking may delete any step and the rest
/// keep their meaning.
#[derive(Clone, Debug)]
pub(crate) enum Step {
    // ---- the protocol's commands ----
    /// `Write`/`WriteVectored` of these buffer lengths; `acked` registers a waiter on the ticket.
    Write {
        lens: Vec<u8>,
        acked: bool,
    },
    WriteEof,
    /// `Drain` (asyncio's `await writer.drain()`), from whoever holds the transport: the
    /// protocol or a `Connection`'s writer, so a dead protocol's too.
    Drain,
    Close,
    Abort,
    PauseReading,
    ResumeReading,
    /// Marks missing where `None`; `low > high` is an invalid request.
    SetWriteBufferLimits {
        high: Option<u8>,
        low: Option<u8>,
    },
    /// Switches to a new protocol, handing over the tail of the chunk the current protocol last
    /// received and has not acknowledged, from `split` (modulo its length + 1) on. The new
    /// protocol handles write flow and `TimedOut` as these say.
    SetProtocol {
        split: u8,
        write_flow: bool,
        timeouts: bool,
    },
    /// Answers an `EofReceived` delivered and not answered yet.
    EofDecided {
        keep_open: bool,
    },
    /// Acknowledges the `pick`-th outstanding delivery (of any protocol, current or not).
    Ack {
        pick: u8,
    },
    /// Acknowledges a delivery that is not outstanding: already acknowledged, or never issued.
    StaleAck {
        pick: u8,
    },
    /// `StartTls`, when the core allows one, handing over the unconsumed tail of the last chunk.
    StartUpgrade {
        policy: Leftover,
        split: u8,
    },
    /// The protocol actor stopped (the death pact).
    ProtocolGone,

    // ---- the I/O object ----
    /// A read of `len` bytes (modulo the room, at least one), or of the whole room.
    Read {
        len: Option<u8>,
    },
    /// The peer's EOF, clean or not (a TLS stream without close_notify).
    PeerEof {
        unclean: bool,
    },
    /// A write attempt: the socket takes `n` bytes (modulo what is queued), or all of them.
    Written {
        n: Option<u16>,
    },
    /// The write side's shutdown ended, when the core wants one.
    Shutdown {
        ok: bool,
    },
    /// The handshake of a begun upgrade ended.
    Upgraded {
        ok: bool,
        can_write_eof: bool,
        drop_closes_after_eof: bool,
        high: u8,
        low: u8,
    },
    /// A drain read, while the core drains.
    Drained {
        read: Drain,
    },
    /// The reader of a write-only stream went away, while the core watches for it.
    ReaderClosed,
    /// An I/O error.
    Error,

    // ---- time ----
    /// Time passes; then `poll_timeout(now)` and `handle_timeout(now)`.
    Tick {
        ms: u16,
    },
    /// The driver sleeps until the deadline `poll_timeout` last gave (or a microsecond short of
    /// it, `early`), as a driver's timer does; then as `Tick`. Skipped without a deadline.
    Sleep {
        early: bool,
    },
}

/// What a drain read gives.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Drain {
    Bytes(u8),
    Eof,
    Failed,
}

impl fmt::Debug for Case {
    /// One step a line, numbered as the failure report numbers them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Case {{")?;
        writeln!(f, "    settings: {:?},", self.settings)?;
        writeln!(f, "    kind: {:?},", self.kind)?;
        writeln!(f, "    handles: {:?},", self.handles)?;
        writeln!(f, "    steps: [")?;
        for (i, step) in self.steps.iter().enumerate() {
            writeln!(f, "        /* {i:3} */ {step:?},")?;
        }
        writeln!(f, "    ],")?;
        write!(f, "}}")
    }
}

/// Cases of up to `max_steps` steps, of a random temper (see [`runner::steps`]).
pub(crate) fn case(max_steps: usize) -> impl Strategy<Value = Case> {
    (
        settings(),
        kind(),
        handles(),
        runner::steps(max_steps, weights, decode),
    )
        .prop_map(|(settings, kind, handles, steps)| Case {
            settings,
            kind,
            handles,
            steps,
        })
}

/// What a protocol handles: most handle write flow, half handle `TimedOut`.
fn handles() -> impl Strategy<Value = Handles> {
    (prop::bool::weighted(0.7), any::<bool>()).prop_map(|(write_flow, timeouts)| Handles {
        write_flow,
        timeouts,
    })
}

/// A write-buffer maximum for these limits: mostly above the high-water mark by 64 to 384 bytes
/// (a step writes up to 72 bytes, so a protocol that writes on while the peer does not read
/// reaches it, but not at once), sometimes anywhere under 64 (below the high-water mark too:
/// the core does not refuse one), sometimes none (`usize::MAX`, which the core holds as 4 GiB)
/// or past 4 GiB.
fn max_write_buffer(limits: WriteBufferLimits, pick: u8, extra: usize) -> usize {
    match pick % 32 {
        0..=11 => usize::MAX,
        12 => 1 << 40,
        13 => extra % 65,
        _ => limits.high() + 64 + 3 * extra,
    }
}

/// An idle or first-byte timeout: a few milliseconds (to the microsecond sometimes: the timers
/// are not rounded), or long enough that only a stuck connection reaches it.
fn timeout() -> impl Strategy<Value = Duration> {
    prop_oneof![
        2 => (1..=80u64).prop_map(Duration::from_millis),
        1 => (1..=5000u64).prop_map(Duration::from_micros),
        3 => (100..=3000u64).prop_map(Duration::from_millis),
    ]
}

fn limits() -> impl Strategy<Value = WriteBufferLimits> {
    (0..=64usize, 0..=64usize)
        .prop_map(|(a, b)| WriteBufferLimits::new(a.max(b), a.min(b)).expect("low <= high"))
}

fn settings() -> impl Strategy<Value = StreamSettings> {
    (
        limits(),
        any::<bool>(),
        1..=64usize,
        prop::option::weighted(0.7, 100..=2000u64),
        10..=1000u64,
        (any::<u8>(), 0..=160usize),
        prop::option::weighted(0.25, timeout()),
        prop::option::weighted(0.15, timeout()),
    )
        .prop_map(
            |(
                write_buffer_limits,
                limits_chosen,
                read_buffer_limit,
                stall,
                drain,
                (pick, extra),
                idle_timeout,
                first_byte_timeout,
            )| {
                StreamSettings {
                    write_buffer_limits,
                    limits_chosen,
                    read_buffer_limit,
                    write_stall_timeout: stall.map(Duration::from_millis),
                    close_drain_timeout: Duration::from_millis(drain),
                    max_write_buffer: max_write_buffer(write_buffer_limits, pick, extra),
                    idle_timeout,
                    first_byte_timeout,
                }
            },
        )
}

fn kind() -> impl Strategy<Value = StreamKind> {
    (
        prop_oneof![
            6 => Just(Direction::Duplex),
            1 => Just(Direction::ReadOnly),
            1 => Just(Direction::WriteOnly),
        ],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(direction, can_write_eof, drop_closes_after_eof)| StreamKind {
                direction,
                can_write_eof,
                drop_closes_after_eof,
            },
        )
}

/// The kinds of step, in the order proptest shrinks a step's kind towards (an acknowledgement
/// disturbs a run least), with their weights in a calm case.
const KINDS: [(StepKind, u32); 24] = [
    (StepKind::Ack, 1200),
    (StepKind::StaleAck, 200),
    (StepKind::Read, 1400),
    (StepKind::Write, 1300),
    (StepKind::Written, 1400),
    (StepKind::Tick, 400),
    (StepKind::Sleep, 10),
    (StepKind::PauseReading, 150),
    (StepKind::ResumeReading, 300),
    (StepKind::SetWriteBufferLimits, 200),
    (StepKind::SetProtocol, 300),
    (StepKind::EofDecided, 150),
    (StepKind::StartUpgrade, 60),
    (StepKind::Upgraded, 150),
    (StepKind::Shutdown, 150),
    (StepKind::Drained, 150),
    // Waits for the resume edge: it matters only while writing is paused.
    (StepKind::Drain, 40),
    // Half-closes: they end a connection only sometimes.
    (StepKind::PeerEof, 40),
    (StepKind::WriteEof, 20),
    // The steps that begin the end, and those that end a connection at once: their weights
    // depend on the case's temper.
    (StepKind::Close, 0),
    (StepKind::ReaderClosed, 0),
    (StepKind::Abort, 0),
    (StepKind::Error, 0),
    (StepKind::ProtocolGone, 0),
];

#[derive(Clone, Copy, Debug)]
enum StepKind {
    Ack,
    StaleAck,
    Read,
    Write,
    Written,
    Tick,
    Sleep,
    PauseReading,
    ResumeReading,
    SetWriteBufferLimits,
    SetProtocol,
    EofDecided,
    StartUpgrade,
    Upgraded,
    Shutdown,
    Drained,
    Drain,
    PeerEof,
    WriteEof,
    Close,
    ReaderClosed,
    Abort,
    Error,
    ProtocolGone,
}

/// The weights of the kinds of step in a case of this temper.
fn weights(temper: Temper) -> [(StepKind, u32); 24] {
    // In about 7600ths of all steps (the sum of the other weights).
    let (begin_end, end_now) = match temper {
        Temper::Calm => (2, 0),
        Temper::Usual => (60, 20),
        Temper::Hasty => (300, 100),
    };
    let mut weights = KINDS;
    for (kind, weight) in &mut weights {
        match kind {
            StepKind::Close | StepKind::ReaderClosed => *weight = begin_end,
            StepKind::Abort | StepKind::Error | StepKind::ProtocolGone => *weight = end_now,
            _ => {}
        }
    }
    weights
}

fn decode(kind: StepKind, bits: &mut Bits) -> Step {
    match kind {
        StepKind::Ack => Step::Ack { pick: bits.byte() },
        StepKind::StaleAck => Step::StaleAck { pick: bits.byte() },
        StepKind::Read => {
            let whole = bits.chance(5);
            let len = bits.byte();
            Step::Read {
                len: (!whole).then_some(len),
            }
        }
        StepKind::Write => {
            let acked = !bits.chance(3);
            let count = bits.take(2);
            let lens = (0..count).map(|_| bits.upto(24)).collect();
            Step::Write { lens, acked }
        }
        StepKind::Written => {
            let all = bits.chance(8);
            let n = bits.take(16) as u16;
            Step::Written {
                n: (!all).then_some(n),
            }
        }
        // Mostly short: a stall timeout should fire for a stalled buffer, not for any.
        StepKind::Tick => {
            let long = bits.chance(2);
            let ms = bits.take(16) % if long { 1001 } else { 21 };
            Step::Tick { ms: ms as u16 }
        }
        StepKind::Sleep => Step::Sleep {
            early: bits.chance(4),
        },
        StepKind::PauseReading => Step::PauseReading,
        StepKind::ResumeReading => Step::ResumeReading,
        StepKind::SetWriteBufferLimits => {
            let no_high = bits.chance(2);
            let no_low = bits.chance(5);
            let high = bits.upto(64);
            let low = bits.upto(64);
            Step::SetWriteBufferLimits {
                high: (!no_high).then_some(high),
                low: (!no_low).then_some(low),
            }
        }
        StepKind::SetProtocol => Step::SetProtocol {
            split: bits.byte(),
            write_flow: !bits.chance(5),
            timeouts: bits.chance(8),
        },
        StepKind::EofDecided => Step::EofDecided {
            keep_open: bits.chance(10),
        },
        StepKind::StartUpgrade => Step::StartUpgrade {
            policy: if bits.chance(8) {
                Leftover::Feed
            } else {
                Leftover::Discard
            },
            split: bits.byte(),
        },
        StepKind::Upgraded => {
            let failed = bits.chance(1);
            let can_write_eof = bits.chance(8);
            let drop_closes_after_eof = bits.chance(8);
            let high = bits.upto(64);
            let low = bits.upto(high);
            Step::Upgraded {
                ok: !failed,
                can_write_eof,
                drop_closes_after_eof,
                high,
                low,
            }
        }
        StepKind::Shutdown => Step::Shutdown {
            ok: !bits.chance(2),
        },
        StepKind::Drained => Step::Drained {
            read: match bits.take(3) {
                0..=5 => Drain::Bytes(bits.upto(99) + 1),
                6 => Drain::Eof,
                _ => Drain::Failed,
            },
        },
        StepKind::PeerEof => Step::PeerEof {
            unclean: bits.chance(5),
        },
        StepKind::WriteEof => Step::WriteEof,
        StepKind::Drain => Step::Drain,
        StepKind::Close => Step::Close,
        StepKind::ReaderClosed => Step::ReaderClosed,
        StepKind::Abort => Step::Abort,
        StepKind::Error => Step::Error,
        StepKind::ProtocolGone => Step::ProtocolGone,
    }
}
