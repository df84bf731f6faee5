//! What the datagram checker generates: an endpoint's settings, and the steps its driver, its
//! protocols and its socket take, with the weights that make long and varied runs.

use std::{fmt, time::Duration};

use proptest::prelude::*;
use switchboard_core::{WriteBufferLimits, datagram::DatagramSettings};

use crate::runner::{self, Bits, Temper};

/// One generated run: a fresh core with these settings, driven through `steps`.
#[derive(Clone)]
pub(crate) struct Case {
    pub(crate) settings: DatagramSettings,
    pub(crate) steps: Vec<Step>,
}

/// Everything a driver, a protocol and a socket can do to a datagram core.
///
/// As for the stream checker, what depends on the state a step meets is a selector resolved when
/// it runs (which acknowledgement, how many datagrams of the room or of the queue), and a step
/// whose precondition does not hold then is skipped and not counted: shrinking may delete any
/// step and the rest keep their meaning.
#[derive(Clone, Debug)]
pub(crate) enum Step {
    // ---- the protocol's commands ----
    /// `SendTo` of a datagram of `len` bytes (0..=24) to address `to`. When the
    /// core says `Direct`, the socket takes it, or would block (the driver `enqueue`s it), or
    /// fails; `acked` registers a waiter on the ticket of a queued one.
    Send {
        len: u8,
        to: u8,
        socket: Direct,
        acked: bool,
    },
    Close,
    Abort,
    PauseReading,
    ResumeReading,
    /// Marks missing where `None`; `low > high` is an invalid request.
    SetWriteBufferLimits {
        high: Option<u8>,
        low: Option<u8>,
    },
    SetProtocol,
    /// Acknowledges the `pick`-th outstanding delivery (of any protocol, current or not).
    Ack {
        pick: u8,
    },
    /// Acknowledges a delivery that is not outstanding: already acknowledged, or never issued.
    StaleAck {
        pick: u8,
    },
    /// The protocol actor stopped (the death pact).
    ProtocolGone,

    // ---- the socket ----
    /// `count` datagrams (modulo the room, at least one), or the whole room, from addresses
    /// `from`, `from + 1`, ..., of lengths cut from `lens`.
    Receive {
        count: Option<u8>,
        lens: u32,
        from: u8,
    },
    /// A send attempt: the socket takes `count` datagrams of the queue (modulo its length + 1),
    /// or all of them; the `i`-th fails if bit `i` of `fails` is set. Then
    /// `handle_send_attempted`.
    Sent {
        count: Option<u8>,
        fails: u8,
    },
    /// A fatal error of the socket.
    Error,

    // ---- time ----
    /// Time passes; then `poll_timeout(now)` and `handle_timeout(now)`.
    Tick {
        ms: u16,
    },
}

/// What the socket does with a datagram the core said to send now.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Direct {
    Taken,
    WouldBlock,
    Failed,
}

impl fmt::Debug for Case {
    /// One step a line, numbered as the failure report numbers them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Case {{")?;
        writeln!(f, "    settings: {:?},", self.settings)?;
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
    (settings(), runner::steps(max_steps, weights, decode))
        .prop_map(|(settings, steps)| Case { settings, steps })
}

fn settings() -> impl Strategy<Value = DatagramSettings> {
    (
        (0..=48usize, 0..=48usize),
        1..=8usize,
        1..=32usize,
        prop_oneof![1 => Just(0u64), 9 => 1..=800u64],
        prop_oneof![4 => Just(usize::MAX), 1 => 0..=96usize],
    )
        .prop_map(
            |((a, b), read_window, max_datagram_size, close, max_write_buffer)| DatagramSettings {
                write_buffer_limits: WriteBufferLimits::new(a.max(b), a.min(b))
                    .expect("low <= high"),
                read_window,
                max_datagram_size,
                close_timeout: Duration::from_millis(close),
                max_write_buffer,
            },
        )
}

/// The kinds of step, in the order proptest shrinks a step's kind towards (an acknowledgement
/// disturbs a run least), with their weights in a calm case.
const KINDS: [(StepKind, u32); 14] = [
    (StepKind::Ack, 1300),
    (StepKind::StaleAck, 200),
    (StepKind::Receive, 1300),
    (StepKind::Send, 1500),
    (StepKind::Sent, 1100),
    (StepKind::Tick, 400),
    (StepKind::PauseReading, 150),
    (StepKind::ResumeReading, 300),
    (StepKind::SetWriteBufferLimits, 200),
    (StepKind::SetProtocol, 250),
    // The steps that begin the end, and those that end an endpoint at once: their weights
    // depend on the case's temper.
    (StepKind::Close, 0),
    (StepKind::Abort, 0),
    (StepKind::Error, 0),
    (StepKind::ProtocolGone, 0),
];

#[derive(Clone, Copy, Debug)]
enum StepKind {
    Ack,
    StaleAck,
    Receive,
    Send,
    Sent,
    Tick,
    PauseReading,
    ResumeReading,
    SetWriteBufferLimits,
    SetProtocol,
    Close,
    Abort,
    Error,
    ProtocolGone,
}

/// The weights of the kinds of step in a case of this temper.
fn weights(temper: Temper) -> [(StepKind, u32); 14] {
    // In about 6700ths of all steps (the sum of the other weights).
    let (begin_end, end_now) = match temper {
        Temper::Calm => (2, 0),
        Temper::Usual => (60, 20),
        Temper::Hasty => (300, 100),
    };
    let mut weights = KINDS;
    for (kind, weight) in &mut weights {
        match kind {
            StepKind::Close => *weight = begin_end,
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
        StepKind::Receive => {
            let whole = bits.chance(5);
            let count = bits.byte();
            let from = bits.upto(3);
            Step::Receive {
                count: (!whole).then_some(count),
                lens: bits.take(32) as u32,
                from,
            }
        }
        StepKind::Send => {
            let acked = !bits.chance(3);
            // Mostly taken at once, as a socket does, but often enough not to build a queue.
            let socket = match bits.take(4) {
                0..=8 => Direct::Taken,
                9..=14 => Direct::WouldBlock,
                _ => Direct::Failed,
            };
            Step::Send {
                len: bits.upto(24),
                to: bits.upto(3),
                socket,
                acked,
            }
        }
        StepKind::Sent => {
            let all = bits.chance(6);
            let count = bits.byte();
            // A send fails about once in eight.
            let fails = bits.byte() & bits.byte() & bits.byte();
            Step::Sent {
                count: (!all).then_some(count),
                fails,
            }
        }
        // Mostly short: a close deadline should fire for a stuck queue, not for any.
        StepKind::Tick => {
            let long = bits.chance(2);
            let ms = bits.take(16) % if long { 801 } else { 21 };
            Step::Tick { ms: ms as u16 }
        }
        StepKind::PauseReading => Step::PauseReading,
        StepKind::ResumeReading => Step::ResumeReading,
        StepKind::SetWriteBufferLimits => {
            let no_high = bits.chance(2);
            let no_low = bits.chance(5);
            let high = bits.upto(48);
            let low = bits.upto(48);
            Step::SetWriteBufferLimits {
                high: (!no_high).then_some(high),
                low: (!no_low).then_some(low),
            }
        }
        StepKind::SetProtocol => Step::SetProtocol,
        StepKind::Close => Step::Close,
        StepKind::Abort => Step::Abort,
        StepKind::Error => Step::Error,
        StepKind::ProtocolGone => Step::ProtocolGone,
    }
}
