//! The datagram checker's driver and model: runs a [`Case`] against a [`DatagramCore`] as the
//! datagram actor drives it, delivers its events to model protocols, and checks the guarantees
//! after every step.
//!
//! The model keeps what protocols and a socket see from outside (the datagrams fed to the core
//! and delivered, the acknowledgements out, the datagrams accepted, queued and sent, the waiters
//! and their outcomes, the edges told) and asks the core only through its public API; every
//! check compares the two.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    io, mem,
    rc::Rc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use switchboard_core::{
    DEFAULT_HIGH_WATER_MARK, Waiter, WriteBufferLimits, WriteError,
    datagram::{DatagramCore, DatagramEvent, DatagramSettings, Outbound, SendTicket},
};

use crate::{
    datagram_step::{Case, Direct, Step},
    runner::{self, Checked, Failure, Machine, Trace, brief, ensure, pattern, violation},
};

// The invariants, by the names failures report them under.

/// DESIGN 4 (a window of N): a datagram is delivered only while fewer than `read_window`
/// deliveries (`ConnectionMade` and `DatagramReceived`, of any protocol) are un-acknowledged, so
/// at most `read_window` datagrams are out; `receive_room()` is exactly the room left, and none
/// before the current protocol acknowledged its `ConnectionMade`.
const WINDOW: &str = "read window";
/// DESIGN 1 and 3: each protocol sees `ConnectionMade` first, nothing after it was switched away
/// from, and the last one `ConnectionLost` once and last.
const LIFECYCLE: &str = "lifecycle";
/// DESIGN 13: every datagram is delivered whole, once, in the order it was received, with its
/// address and a fresh acknowledgement.
const DATAGRAMS: &str = "datagrams whole and in order";
/// DESIGN 4: nothing is delivered (or read) while reading is paused.
const PAUSED: &str = "pause reading";
/// DESIGN 6: `is_closing` from `Close`/`Abort` on; sends refused from then on; nothing delivered.
const CLOSING: &str = "closing";
/// DESIGN 5: the datagrams sent (at once or from the queue) are the accepted ones, in order;
/// refused ones never.
const SEND_ORDER: &str = "send order";
/// DESIGN 5 and 13: every queued send's waiter resolved exactly once, with its own datagram's
/// outcome, or with the end of the endpoint if it never went out.
const OUTCOMES: &str = "send outcomes";
/// DESIGN 3 and 5: `PauseWriting`/`ResumeWriting` strictly alternate, at the watermarks, with the
/// replay to a protocol switched to while paused.
const FLOW: &str = "write flow edges";
/// DESIGN 6 and 8: a close ends once the queue is empty, or at its deadline and not before; an
/// abort ends at once; a fatal error reaches `ConnectionLost`.
const ENDING: &str = "ending";
/// The counters (`stats()`) agree with what was received, delivered, queued and sent.
const COUNTERS: &str = "counters";
/// The send queue never takes a datagram past `max_write_buffer` behind others: that datagram
/// is refused with `BufferFull`, and the endpoint goes on.
const CEILING: &str = "send-queue maximum";
/// A protocol that does not handle write flow is given nothing (nothing is read for it) while
/// writing is paused.
const THROTTLE: &str = "read-stop without write flow";

/// The addresses datagrams come from and go to.
type Addr = u8;

/// How the socket refuses datagram `id` (its own error, to tell it from another's).
fn refused(id: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionRefused,
        format!("datagram #{id} refused"),
    )
}

/// The fatal error of the socket.
fn fatal() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the socket failed")
}

// ---- the waiters ----

/// What the driver and the model share with the waiters, which the core resolves from inside
/// its calls.
#[derive(Default)]
struct Shared {
    /// What the core call under way may resolve: the driver says so around every call.
    expect: Cell<Expect>,
    /// The first violation a waiter saw.
    violation: RefCell<Option<String>>,
}

impl Shared {
    fn report(&self, violation: String) {
        self.violation.borrow_mut().get_or_insert(violation);
    }
}

#[derive(Debug, Clone, Copy, Default)]
enum Expect {
    /// The call decides no outcome.
    #[default]
    Nothing,
    /// `handle_sent` of datagram `id`: its waiter alone, with this outcome.
    Sent { id: usize, ok: bool },
    /// A call that ends the endpoint: every waiter left fails, with this.
    End(Ended),
}

/// Why the endpoint ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// `Close`, and the queue emptied.
    Closed,
    /// `Abort`, or the protocol's death.
    Aborted,
    /// `Close`, and the close deadline passed with datagrams queued.
    Stalled,
    /// The socket's fatal error.
    Failed,
    /// The driver stopped.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pending,
    Done,
    Failed,
}

/// A waiter that records its outcome and checks it is deserved.
struct Recorder {
    /// The datagram it waits for.
    id: usize,
    outcome: Rc<Cell<Outcome>>,
    shared: Rc<Shared>,
    close_timeout: Duration,
    resolved: bool,
}

impl Waiter for Recorder {
    fn resolve(mut self, result: Result<(), &io::Error>) {
        self.resolved = true;
        let id = self.id;
        if self.outcome.get() != Outcome::Pending {
            self.shared.report(violation(
                OUTCOMES,
                format!("the waiter of datagram #{id} resolved a second time"),
            ));
        }
        let expect = self.shared.expect.get();
        let deserved = match (expect, result) {
            (Expect::Sent { id: sent, ok: true }, Ok(())) => sent == id,
            (
                Expect::Sent {
                    id: sent,
                    ok: false,
                },
                Err(err),
            ) => sent == id && err.to_string() == refused(id).to_string(),
            (Expect::End(ended), Err(err)) => match ended {
                Ended::Aborted => WriteError::of(err) == Some(WriteError::Aborted),
                Ended::Stalled => {
                    WriteError::of(err) == Some(WriteError::Stalled(self.close_timeout))
                }
                Ended::Failed => err.to_string() == fatal().to_string(),
                Ended::Stopped => WriteError::of(err) == Some(WriteError::Stopped),
                Ended::Closed => false,
            },
            _ => false,
        };
        if !deserved {
            self.shared.report(violation(
                OUTCOMES,
                format!("the waiter of datagram #{id} resolved with {result:?} during {expect:?}"),
            ));
        }
        self.outcome.set(match result {
            Ok(()) => Outcome::Done,
            Err(_) => Outcome::Failed,
        });
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.resolved {
            self.shared.report(violation(
                OUTCOMES,
                format!("the waiter of datagram #{} was dropped unresolved", self.id),
            ));
        }
    }
}

// ---- the model ----

/// What the model knows of one protocol attached to the endpoint.
#[derive(Debug, Default)]
struct Protocol {
    made: bool,
    made_acked: bool,
    /// Whether it handles write flow: without, nothing is received for it while writing is
    /// paused. Protocol `i` does unless `i` is a multiple of 3 (the first one does not).
    write_flow: bool,
    /// Whether this protocol was last told `PauseWriting`.
    told_paused: bool,
    /// It was switched to while writing was paused: a `PauseWriting` is due after its
    /// `ConnectionMade`.
    replay_due: bool,
}

/// A delivery whose acknowledgement is out.
#[derive(Debug)]
struct Delivery {
    seq: u64,
    bytes: usize,
    protocol: usize,
    made: bool,
}

/// An accepted datagram waiting in the queue.
struct Queued {
    id: usize,
    data: Bytes,
    addr: Addr,
}

/// One endpoint: the core, its driver's state and the model.
struct Run {
    core: DatagramCore<Addr, Recorder>,
    settings: DatagramSettings,
    /// The read window in force (at least 1).
    window: usize,
    shared: Rc<Shared>,
    epoch: Instant,
    now: Instant,
    trace: Option<Trace>,
    ended: bool,

    // read side
    /// Bytes received so far: the next datagram's first byte value.
    received: u64,
    deliveries: u64,
    /// Deliveries whose acknowledgement is out, in the order of their seqs (a few: a `Vec` is
    /// quicker than a map).
    outstanding: Vec<Delivery>,
    last_seq: u64,
    most_in_flight: usize,
    paused: bool,

    // protocols
    /// Every protocol attached so far; the last one is attached now.
    protocols: Vec<Protocol>,
    /// The endpoint's write flow as told to its protocols (replays aside).
    writing_paused: bool,

    // write side
    /// Bytes offered to `send`, accepted or refused: the next datagram's first byte value.
    offered: u64,
    /// Datagrams queued so far: the next one's id.
    next_id: usize,
    queue: VecDeque<Queued>,
    /// The waiters registered, in the order of their datagrams' ids.
    waiters: Vec<(usize, Rc<Cell<Outcome>>)>,
    bytes_sent: u64,
    most_queued: usize,
    limits: WriteBufferLimits,

    // lifecycle
    /// `Close` or `Abort` was handled.
    closing: bool,
    close_at: Option<Instant>,
    /// Why the endpoint ended, once it did: the release is due.
    end: Option<Ended>,
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
        Run::stop(self, false)
    }

    fn trace(&self) -> Option<&Trace> {
        self.trace.as_ref()
    }
}

impl Run {
    fn new(case: &Case, trace: Option<Trace>) -> Self {
        // The one clock reading: the core takes `now` from its driver, and here time moves
        // only by `Tick` steps from this epoch.
        #[expect(
            clippy::disallowed_methods,
            reason = "the checker needs one Instant to start its own clock from"
        )]
        let epoch = Instant::now();
        Run {
            core: {
                let mut core = DatagramCore::new(case.settings);
                core.set_handles(switchboard_core::Handles {
                    write_flow: false,
                    timeouts: false,
                });
                core
            },
            settings: case.settings,
            window: case.settings.read_window.max(1),
            shared: Rc::default(),
            epoch,
            now: epoch,
            trace,
            ended: false,
            received: 0,
            deliveries: 0,
            outstanding: Vec::new(),
            last_seq: 0,
            most_in_flight: 0,
            paused: false,
            protocols: vec![Protocol::default()],
            writing_paused: false,
            offered: 0,
            next_id: 0,
            queue: VecDeque::new(),
            waiters: Vec::new(),
            bytes_sent: 0,
            most_queued: 0,
            limits: case.settings.write_buffer_limits,
            closing: false,
            close_at: None,
            end: None,
        }
    }

    fn note(&self, line: impl FnOnce() -> String) -> Option<usize> {
        runner::note(self.trace.as_ref(), line)
    }

    fn current(&self) -> usize {
        self.protocols.len() - 1
    }

    fn at(&self, instant: Instant) -> Duration {
        instant.duration_since(self.epoch)
    }

    /// Calls into the core with `expect` as what the call may resolve.
    fn expecting<T>(&mut self, expect: Expect, call: impl FnOnce(&mut Self) -> T) -> T {
        self.shared.expect.set(expect);
        let result = call(self);
        self.shared.expect.set(Expect::Nothing);
        result
    }

    fn queued_bytes(&self) -> usize {
        self.queue.iter().map(|queued| queued.data.len()).sum()
    }

    fn in_flight(&self) -> usize {
        self.outstanding.iter().map(|delivery| delivery.bytes).sum()
    }

    /// The room the window leaves, as the model sees it.
    fn room(&self) -> usize {
        let protocol = &self.protocols[self.current()];
        let throttled = !protocol.write_flow && self.writing_paused;
        if self.closing || self.paused || !protocol.made_acked || throttled {
            0
        } else {
            self.window.saturating_sub(self.outstanding.len())
        }
    }

    // ---- steps ----

    /// Runs one step; whether its precondition held.
    fn step(&mut self, step: &Step) -> Checked<bool> {
        match *step {
            Step::Send {
                len,
                to,
                socket,
                acked,
            } => self.send(len, to, socket, acked)?,
            Step::Close => {
                self.core.close();
                if !self.closing {
                    self.closing = true;
                    self.close_at = Some(self.now);
                    if self.queue.is_empty() {
                        self.end = Some(Ended::Closed);
                    }
                }
            }
            Step::Abort => {
                self.expecting(Expect::End(Ended::Aborted), |run| run.core.abort());
                self.aborted()?;
            }
            Step::ProtocolGone => {
                self.expecting(Expect::End(Ended::Aborted), |run| {
                    run.core.handle_protocol_gone();
                });
                self.aborted()?;
            }
            Step::Error => {
                self.expecting(Expect::End(Ended::Failed), |run| {
                    run.core.handle_error(fatal());
                });
                self.closing = true;
                self.queue.clear();
                self.end = Some(Ended::Failed);
            }
            Step::PauseReading => {
                self.core.pause_reading();
                self.paused = true;
            }
            Step::ResumeReading => {
                self.core.resume_reading();
                self.paused = false;
            }
            Step::SetWriteBufferLimits { high, low } => self.set_limits(high, low)?,
            Step::SetProtocol => {
                let write_flow = !self.protocols.len().is_multiple_of(3);
                self.protocols.push(Protocol {
                    replay_due: self.writing_paused,
                    write_flow,
                    ..Protocol::default()
                });
                self.note(|| {
                    format!(
                        "   switch to protocol #{} (write flow: {write_flow})",
                        self.current()
                    )
                });
                self.core.set_protocol(switchboard_core::Handles {
                    write_flow,
                    timeouts: false,
                });
            }
            Step::Ack { pick } if !self.outstanding.is_empty() => {
                let nth = usize::from(pick) % self.outstanding.len();
                let seq = self.outstanding[nth].seq;
                self.note(|| format!("   ack {seq}"));
                self.core.ack(seq);
                let delivery = self.outstanding.remove(nth);
                if delivery.made {
                    self.protocols[delivery.protocol].made_acked = true;
                }
            }
            Step::StaleAck { pick } => {
                let seq = u64::from(pick) % (self.last_seq + 2);
                if self.outstanding.iter().any(|delivery| delivery.seq == seq) {
                    return Ok(false);
                }
                let (in_flight, room) =
                    (self.core.stats().read_in_flight, self.core.receive_room());
                self.note(|| format!("   stale ack {seq}"));
                self.core.ack(seq);
                ensure!(
                    self.core.stats().read_in_flight == in_flight
                        && self.core.receive_room() == room,
                    WINDOW,
                    "a stale acknowledgement {seq} changed the bytes in flight or the room"
                );
            }
            Step::Receive { count, lens, from } if self.core.receive_room() > 0 => {
                self.receive(count, lens, from)?;
            }
            Step::Sent { count, fails } => self.sent(count, fails)?,
            Step::Tick { ms } => self.tick(ms)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn send(&mut self, len: u8, to: Addr, socket: Direct, acked: bool) -> Checked {
        let start = self.offered;
        self.offered += u64::from(len);
        let data = Bytes::from((start..self.offered).map(pattern).collect::<Vec<u8>>());
        let queued_before = self.queue.len();
        let queued_bytes: usize = self.queue.iter().map(|queued| queued.data.len()).sum();
        let max = self.settings.max_write_buffer;
        let full = queued_before > 0 && queued_bytes + data.len() > max;
        match (self.core.send(data.clone(), to), self.closing) {
            (Err(err), false) if full => ensure!(
                err == WriteError::BufferFull(max),
                CEILING,
                "a datagram past the maximum ({queued_bytes} + {len} > {max}) refused with \
                 {err:?}"
            ),
            (Ok(_), false) if full => {
                return Err(violation(
                    CEILING,
                    format!(
                        "a datagram accepted past the maximum ({queued_bytes} + {len} > {max})"
                    ),
                ));
            }
            (Err(err), true) => ensure!(
                err == WriteError::Closing,
                CLOSING,
                "a send after Close refused with {err:?}"
            ),
            (Err(err), false) => {
                return Err(violation(
                    CLOSING,
                    format!("a send refused with {err:?} on an open endpoint"),
                ));
            }
            (Ok(_), true) => {
                return Err(violation(
                    CLOSING,
                    "a send accepted after Close or Abort".to_owned(),
                ));
            }
            (Ok(Outbound::Direct(got, addr)), false) => {
                ensure!(
                    queued_before == 0,
                    SEND_ORDER,
                    "a datagram to send at once with {queued_before} queued before it"
                );
                ensure!(
                    got == data && addr == to,
                    SEND_ORDER,
                    "Direct gave {} to {addr} for {} to {to}",
                    brief(&got),
                    brief(&data)
                );
                match socket {
                    Direct::Taken => {
                        self.note(|| format!("   sent at once: {} to {to}", brief(&data)));
                        self.bytes_sent += u64::from(len);
                        self.core.handle_sent_direct(len.into());
                    }
                    Direct::WouldBlock => {
                        let ticket = self.core.enqueue(got, addr);
                        self.queued(data, to, ticket, acked);
                    }
                    Direct::Failed => {
                        // The driver answers the sender and tells the protocol; the core hears
                        // nothing of it.
                        self.note(|| format!("   the socket refused {} at once", brief(&data)));
                    }
                }
            }
            (Ok(Outbound::Queued(ticket)), false) => {
                ensure!(
                    queued_before > 0,
                    SEND_ORDER,
                    "a datagram queued with nothing queued before it"
                );
                self.queued(data, to, ticket, acked);
            }
        }
        Ok(())
    }

    fn queued(&mut self, data: Bytes, addr: Addr, ticket: SendTicket<Recorder>, acked: bool) {
        let id = self.next_id;
        self.next_id += 1;
        self.note(|| {
            format!(
                "   queued as datagram #{id}{}: {} to {addr}",
                if acked { ", acknowledged" } else { "" },
                brief(&data)
            )
        });
        self.queue.push_back(Queued { id, data, addr });
        self.most_queued = self.most_queued.max(self.queued_bytes());
        if acked {
            let outcome = Rc::new(Cell::new(Outcome::Pending));
            ticket.register(Recorder {
                id,
                outcome: outcome.clone(),
                shared: self.shared.clone(),
                close_timeout: self.settings.close_timeout,
                resolved: false,
            });
            self.waiters.push((id, outcome));
        }
    }

    fn aborted(&mut self) -> Checked {
        self.closing = true;
        self.queue.clear();
        self.end = Some(Ended::Aborted);
        ensure!(
            self.core.send_queue_front().is_none() && self.core.write_buffer_size() == 0,
            ENDING,
            "Abort left datagrams to send"
        );
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
        let result = self.core.set_write_buffer_limits(high, low);
        ensure!(
            result.is_ok() == valid,
            FLOW,
            "SetWriteBufferLimits(high {high:?}, low {low:?}) gave {result:?}"
        );
        if valid {
            self.limits = WriteBufferLimits::new(derived_high, derived_low).expect("checked valid");
        }
        Ok(())
    }

    fn receive(&mut self, count: Option<u8>, lens: u32, from: Addr) -> Checked {
        let room = self.core.receive_room();
        let n = count.map_or(room, |count| usize::from(count) % room + 1);
        self.note(|| format!("   receive {n} datagrams (room {room})"));
        let max = self.settings.max_datagram_size;
        for i in 0..n {
            let left = self.core.receive_room();
            ensure!(
                left == room - i,
                WINDOW,
                "receive_room() is {left} after {i} of the {room} datagrams it allowed"
            );
            let len = (lens.rotate_right(5 * i as u32) & 0xff) as usize % (max + 1);
            let addr = from.wrapping_add(i as u8) % 4;
            let start = self.received;
            self.received += len as u64;
            let data = Bytes::from((start..self.received).map(pattern).collect::<Vec<u8>>());
            match self.core.handle_received(data.clone(), addr) {
                DatagramEvent::Datagram {
                    data: got,
                    addr: got_addr,
                    seq,
                } => {
                    self.note(|| {
                        format!(
                            "   -> protocol #{}: datagram {} from {got_addr}, seq {seq}",
                            self.current(),
                            brief(&got)
                        )
                    });
                    ensure!(
                        got == data && got_addr == addr,
                        DATAGRAMS,
                        "{} from {addr} was delivered as {} from {got_addr}",
                        brief(&data),
                        brief(&got)
                    );
                    ensure!(
                        seq > self.last_seq,
                        DATAGRAMS,
                        "acknowledgement {seq} issued again"
                    );
                    self.deliver_datagram(seq, len)?;
                }
                other => {
                    return Err(violation(
                        DATAGRAMS,
                        format!("handle_received gave {other:?}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// What holds for every `DatagramReceived`.
    fn deliver_datagram(&mut self, seq: u64, len: usize) -> Checked {
        let current = self.current();
        let protocol = &self.protocols[current];
        ensure!(
            protocol.made && protocol.made_acked,
            LIFECYCLE,
            "a datagram to protocol #{current} before its ConnectionMade was acknowledged"
        );
        ensure!(!self.paused, PAUSED, "a datagram while reading is paused");
        ensure!(!self.closing, CLOSING, "a datagram after Close or Abort");
        ensure!(
            self.outstanding.len() < self.window,
            WINDOW,
            "a datagram with the acknowledgements {:?} out, a full window of {}",
            self.outstanding
                .iter()
                .map(|delivery| delivery.seq)
                .collect::<Vec<_>>(),
            self.window
        );
        self.last_seq = seq;
        self.deliveries += 1;
        self.outstanding.push(Delivery {
            seq,
            bytes: len,
            protocol: current,
            made: false,
        });
        self.most_in_flight = self.most_in_flight.max(self.in_flight());
        Ok(())
    }

    fn sent(&mut self, count: Option<u8>, fails: u8) -> Checked {
        let queued = self.queue.len();
        let k = count.map_or(queued, |count| usize::from(count) % (queued + 1));
        for i in 0..k {
            let Queued { id, data, addr } = self.queue.pop_front().expect("k <= queued");
            let front = self
                .core
                .send_queue_front()
                .map(|(data, addr)| (data.clone(), *addr));
            ensure!(
                front.as_ref() == Some(&(data.clone(), addr)),
                SEND_ORDER,
                "the queue's front is {:?} where datagram #{id} ({} to {addr}) is due",
                front.map(|(data, addr)| (brief(&data), addr)),
                brief(&data)
            );
            let ok = fails & (1 << (i % 8)) == 0;
            self.note(|| {
                format!(
                    "   datagram #{id} {}",
                    if ok { "sent" } else { "refused by the socket" }
                )
            });
            let err = refused(id);
            self.expecting(Expect::Sent { id, ok }, |run| {
                run.core.handle_sent(if ok { Ok(()) } else { Err(&err) });
            });
            if ok {
                self.bytes_sent += data.len() as u64;
            }
            if let Ok(i) = self.waiters.binary_search_by_key(&id, |(id, _)| *id) {
                let outcome = &self.waiters[i].1;
                ensure!(
                    outcome.get() != Outcome::Pending,
                    OUTCOMES,
                    "datagram #{id} went through handle_sent and its waiter is still pending"
                );
            }
            if self.closing && self.queue.is_empty() {
                self.end = Some(Ended::Closed);
            }
        }
        self.core.handle_send_attempted();
        Ok(())
    }

    fn tick(&mut self, ms: u16) -> Checked {
        self.now += Duration::from_millis(ms.into());
        self.poll_timeout()?;
        let due = self
            .close_at
            .is_some_and(|at| self.now >= at + self.settings.close_timeout);
        if due {
            self.expecting(Expect::End(Ended::Stalled), |run| {
                run.core.handle_timeout(run.now);
            });
            self.queue.clear();
            self.end = Some(Ended::Stalled);
        } else {
            self.core.handle_timeout(self.now);
            ensure!(
                !self.core.is_stopped(),
                ENDING,
                "handle_timeout at {:?} ended the endpoint before its close deadline",
                self.at(self.now)
            );
        }
        Ok(())
    }

    // ---- the driver's round after every step ----

    fn round(&mut self) -> Checked {
        self.poll_events()?;
        let release = self.core.take_release();
        ensure!(
            release == self.end.is_some(),
            ENDING,
            "take_release() is {release} where the endpoint {}",
            match self.end {
                Some(end) => format!("ended ({end:?})"),
                None if self.closing => format!(
                    "is closing with {} datagrams queued, before its deadline",
                    self.queue.len()
                ),
                None => "is open".to_owned(),
            }
        );
        if release {
            self.note(|| format!("   release ({:?})", self.end));
            return self.stop(true);
        }
        self.poll_timeout()?;
        self.check_state()
    }

    fn poll_events(&mut self) -> Checked {
        while let Some(event) = self.core.poll_event() {
            self.note(|| format!("   -> protocol #{}: {event:?}", self.current()));
            self.deliver(event)?;
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
                !protocol.replay_due,
                FLOW,
                "protocol #{current}, switched to while writing was paused, got no PauseWriting \
                 after its ConnectionMade"
            );
        }
        Ok(())
    }

    fn deliver(&mut self, event: DatagramEvent<Addr>) -> Checked {
        let current = self.current();
        let size = self.core.write_buffer_size();
        let limits = self.limits;
        let made = self.protocols[current].made;
        if !matches!(event, DatagramEvent::Made { .. }) {
            ensure!(
                made,
                LIFECYCLE,
                "{event:?} reached protocol #{current} before its ConnectionMade"
            );
        }
        match event {
            DatagramEvent::Made { seq } => {
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
                self.outstanding.push(Delivery {
                    seq,
                    bytes: 0,
                    protocol: current,
                    made: true,
                });
            }
            DatagramEvent::PauseWriting => {
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
                        "a second PauseWriting on the endpoint (protocol #{current} is new)"
                    );
                    ensure!(
                        size > limits.high(),
                        FLOW,
                        "PauseWriting with {size} bytes queued, not above {limits:?}"
                    );
                    self.writing_paused = true;
                }
            }
            DatagramEvent::ResumeWriting => {
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
                    "ResumeWriting with {size} bytes queued, above {limits:?}"
                );
                protocol.told_paused = false;
                self.writing_paused = false;
            }
            other => {
                return Err(violation(
                    LIFECYCLE,
                    format!("poll_event gave {other:?}: datagrams come from handle_received"),
                ));
            }
        }
        Ok(())
    }

    /// `poll_timeout(now)`, as a driver calls it after every round, against the close deadline.
    fn poll_timeout(&mut self) -> Checked {
        let deadline = self.core.poll_timeout(self.now);
        let due = self
            .close_at
            .filter(|_| self.end.is_none())
            .map(|at| at + self.settings.close_timeout);
        ensure!(
            deadline == due,
            ENDING,
            "poll_timeout at {:?} gave {:?}, where the close calls for {:?}",
            self.at(self.now),
            deadline.map(|deadline| self.at(deadline)),
            due.map(|due| self.at(due))
        );
        Ok(())
    }

    /// What holds between steps while the endpoint lives.
    fn check_state(&mut self) -> Checked {
        if let Some(violation) = self.shared.violation.borrow_mut().take() {
            return Err(violation);
        }
        let core = &self.core;

        // closing
        ensure!(
            core.is_closing() == self.closing,
            CLOSING,
            "is_closing() is {} where Close or Abort was {}",
            core.is_closing(),
            if self.closing { "handled" } else { "not" }
        );
        ensure!(
            core.send_refusal() == self.closing.then_some(WriteError::Closing),
            CLOSING,
            "send_refusal() is {:?}",
            core.send_refusal()
        );
        ensure!(
            !core.is_stopped(),
            LIFECYCLE,
            "the core stopped without a release"
        );

        // reading
        ensure!(
            core.is_reading() == (!self.closing && !self.paused),
            PAUSED,
            "is_reading() is {} where paused is {} and closing {}",
            core.is_reading(),
            self.paused,
            self.closing
        );
        let room = core.receive_room();
        let due = self.room();
        if room != due {
            let current = self.current();
            let (invariant, why) = if self.closing {
                (CLOSING, "the endpoint is closing")
            } else if self.paused {
                (PAUSED, "reading is paused")
            } else if !self.protocols[current].write_flow && self.writing_paused {
                (
                    THROTTLE,
                    "writing is paused and the protocol does not handle write flow",
                )
            } else if !self.protocols[current].made_acked {
                (
                    LIFECYCLE,
                    "the current protocol's ConnectionMade is not acknowledged",
                )
            } else {
                (WINDOW, "the window says so")
            };
            return Err(violation(
                invariant,
                format!(
                    "receive_room() is {room} where {due} is due ({why}; window {}, {} \
                     deliveries out)",
                    self.window,
                    self.outstanding.len()
                ),
            ));
        }
        let datagrams_out = self.outstanding.iter().filter(|d| !d.made).count();
        ensure!(
            datagrams_out <= self.window,
            WINDOW,
            "{datagrams_out} datagrams out, past the window of {}",
            self.window
        );
        ensure!(
            core.awaits_ack() != self.outstanding.is_empty(),
            WINDOW,
            "awaits_ack() is {} with {} deliveries out",
            core.awaits_ack(),
            self.outstanding.len()
        );

        // sending
        let front = core
            .send_queue_front()
            .map(|(data, addr)| (data.clone(), *addr));
        let due = self
            .queue
            .front()
            .map(|queued| (queued.data.clone(), queued.addr));
        ensure!(
            front == due,
            SEND_ORDER,
            "the queue's front is {:?} where {:?} is due",
            front.map(|(data, addr)| (brief(&data), addr)),
            due.map(|(data, addr)| (brief(&data), addr))
        );
        let size = core.write_buffer_size();
        let queued = self.queued_bytes();
        ensure!(
            size == queued,
            COUNTERS,
            "write_buffer_size() is {size} where {queued} bytes are queued"
        );
        ensure!(
            core.write_buffer_limits() == self.limits,
            FLOW,
            "the limits in force are {:?}, not {:?}",
            core.write_buffer_limits(),
            self.limits
        );
        // Every step that changes the queue or the limits ends with the core deciding the edge
        // (`enqueue`, `handle_send_attempted`, `set_write_buffer_limits`), and every edge was
        // polled.
        ensure!(
            self.writing_paused || size <= self.limits.high(),
            FLOW,
            "{size} bytes queued, above {:?}, and no PauseWriting",
            self.limits
        );
        ensure!(
            !self.writing_paused || size > self.limits.low(),
            FLOW,
            "{size} bytes queued, down to {:?}, and no ResumeWriting",
            self.limits
        );

        // counters
        let stats = core.stats();
        let limit = self.window * self.settings.max_datagram_size;
        let in_flight = self.in_flight();
        ensure!(
            stats.bytes_received == self.received
                && stats.bytes_sent == self.bytes_sent
                && stats.deliveries == self.deliveries
                && stats.read_buffer_size == 0
                && stats.read_in_flight == in_flight
                && stats.read_buffer_peak == self.most_in_flight
                && stats.read_buffer_limit == limit
                && stats.write_buffer_size == queued
                && stats.write_buffer_peak == self.most_queued,
            COUNTERS,
            "{stats:?}: {} bytes received in {} datagrams, {in_flight} in flight (at most {}), \
             limit {limit}, {} bytes sent, {queued} queued (at most {})",
            self.received,
            self.deliveries,
            self.most_in_flight,
            self.bytes_sent,
            self.most_queued
        );
        ensure!(
            stats.read_buffer_peak <= limit,
            WINDOW,
            "read_buffer_peak {} past the limit {limit}",
            stats.read_buffer_peak
        );
        Ok(())
    }

    // ---- the end ----

    /// The driver stops (after a release, or for a reason of its own): `stopped()` once, then
    /// `ConnectionLost` to the protocol attached now, last.
    fn stop(&mut self, released: bool) -> Checked {
        self.ended = true;
        let lost = self.expecting(Expect::End(Ended::Stopped), |run| run.core.stopped());
        let current = self.current();
        self.note(|| format!("   -> protocol #{current}: ConnectionLost({lost:?})"));
        ensure!(
            self.protocols[current].made,
            LIFECYCLE,
            "ConnectionLost to protocol #{current} before its ConnectionMade"
        );
        match (self.end, &lost) {
            (Some(Ended::Failed), Some(err)) => ensure!(
                err.to_string() == fatal().to_string(),
                ENDING,
                "ConnectionLost({err}) where the socket failed with {}",
                fatal()
            ),
            (Some(Ended::Failed), None) => {
                return Err(violation(
                    ENDING,
                    "the socket failed and ConnectionLost(None)".to_owned(),
                ));
            }
            (_, Some(err)) => {
                return Err(violation(
                    ENDING,
                    format!("ConnectionLost({err}) though the socket did not fail"),
                ));
            }
            (_, None) => {}
        }
        if released && self.end == Some(Ended::Closed) {
            ensure!(
                self.queue.is_empty(),
                ENDING,
                "a close ended with {} datagrams queued, before its deadline",
                self.queue.len()
            );
        }
        ensure!(
            self.core.poll_event().is_none() && !self.core.take_release(),
            LIFECYCLE,
            "an event or a release after ConnectionLost"
        );
        ensure!(
            self.core.is_closing()
                && self.core.is_stopped()
                && !self.core.is_reading()
                && self.core.receive_room() == 0,
            LIFECYCLE,
            "the core lives on after stopped()"
        );
        ensure!(
            matches!(
                self.core.send(Bytes::from_static(b"late"), 0),
                Err(WriteError::Stopped)
            ) && self.core.send_refusal() == Some(WriteError::Stopped),
            CLOSING,
            "a send not refused with Stopped after the endpoint stopped"
        );
        for (id, outcome) in &self.waiters {
            ensure!(
                outcome.get() != Outcome::Pending,
                OUTCOMES,
                "the waiter of datagram #{id} never resolved"
            );
        }
        if let Some(violation) = self.shared.violation.borrow_mut().take() {
            return Err(violation);
        }
        Ok(())
    }
}
