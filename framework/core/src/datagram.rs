//! [`DatagramCore`]: every decision of a datagram endpoint (UDP, Unix datagrams), with no I/O.
//!
//! Its driver calls it as a [`StreamCore`](crate::StreamCore)'s does: commands
//! ([`send`](DatagramCore::send), [`close`](DatagramCore::close), [`abort`](DatagramCore::abort),
//! [`pause_reading`](DatagramCore::pause_reading), [`set_protocol`](DatagramCore::set_protocol),
//! [`ack`](DatagramCore::ack), ...), inputs from the socket
//! ([`handle_received`](DatagramCore::handle_received), [`handle_sent`](DatagramCore::handle_sent),
//! [`handle_error`](DatagramCore::handle_error), [`handle_timeout`](DatagramCore::handle_timeout),
//! and, for a scripted socket, [`handle_io_full`](DatagramCore::handle_io_full)),
//! and outputs: how many datagrams to read ([`receive_room`](DatagramCore::receive_room)), the
//! next datagram to send ([`send_queue_front`](DatagramCore::send_queue_front)), events for the
//! protocol ([`poll_event`](DatagramCore::poll_event)), whether to stop
//! ([`take_release`](DatagramCore::take_release)) and the next deadline
//! ([`poll_timeout`](DatagramCore::poll_timeout)).
//!
//! What it shares with the stream core: the lifecycle, the read gate (an acknowledgement per
//! delivery, here a window of N in flight), and the write side (the watermark rule, and a
//! ledger whose waiters each get exactly one outcome, here one per datagram, which can fail
//! alone).

use std::{
    cell::RefCell,
    collections::VecDeque,
    fmt, io, mem,
    rc::Rc,
    time::{Duration, Instant},
};

use bytes::Bytes;

use crate::{
    FlowEdge, Handles, InvalidWriteBufferLimits, TransportStats, WriteBufferLimits, WriteError,
    WriteFlow, gate::Unacked, ledger::Waiter,
};

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

/// The settings of one datagram core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatagramSettings {
    /// The write-buffer limits at the start.
    pub write_buffer_limits: WriteBufferLimits,
    /// How many datagrams may be delivered and not yet acknowledged (at least 1).
    pub read_window: usize,
    /// The longest datagram received whole; with the window, it bounds what a slow protocol
    /// holds (reported as the read-buffer limit).
    pub max_datagram_size: usize,
    /// How long `Close` waits for queued datagrams before it drops them.
    pub close_timeout: Duration,
    /// The most bytes the send queue may hold: a datagram that would take it past is refused
    /// with [`WriteError::BufferFull`], and the endpoint goes on. (A stream transport aborts
    /// instead, as its bytes are one stream; a datagram endpoint loses one datagram, as the
    /// network may, and says so.)
    pub max_write_buffer: usize,
}

/// An event for the protocol, in the order [`DatagramCore::poll_event`] gives them (datagrams
/// come from [`DatagramCore::handle_received`] directly).
#[derive(Debug)]
#[non_exhaustive]
pub enum DatagramEvent<A> {
    /// `ConnectionMade`, to the protocol attached now; reading waits for the acknowledgement.
    Made {
        /// The acknowledgement the message carries.
        seq: u64,
    },
    /// `DatagramReceived`.
    Datagram {
        /// The datagram, whole.
        data: Bytes,
        /// Its sender.
        addr: A,
        /// The acknowledgement the message carries.
        seq: u64,
    },
    /// `PauseWriting`.
    PauseWriting,
    /// `ResumeWriting`.
    ResumeWriting,
}

/// What to do with a datagram the core accepted.
#[derive(Debug)]
pub enum Outbound<A, W> {
    /// Nothing is queued: try to send it now, and [`enqueue`](DatagramCore::enqueue) it if the
    /// socket cannot take it.
    Direct(Bytes, A),
    /// Queued behind others: its outcome comes through the ticket.
    Queued(SendTicket<W>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    /// `Close` was handled: sending what is queued, until the close deadline.
    Closing,
    Stopped,
}

/// One datagram waiting for the socket.
struct Queued<A> {
    data: Bytes,
    addr: A,
    seq: u64,
}

/// The waiters of acknowledged sends that were queued, in the order of their datagrams: each
/// gets the outcome of its own datagram, so one can fail alone.
struct SendWaiters<W> {
    waiters: RefCell<VecDeque<(u64, W)>>,
}

/// An accepted datagram that was queued, and the way to wait for its outcome.
pub struct SendTicket<W> {
    seq: u64,
    waiters: Rc<SendWaiters<W>>,
}

impl<W: Waiter> SendTicket<W> {
    /// Waits for the datagram's outcome. Register before the next call into the core (an
    /// actor does, as the receipt is handled right after the `SendTo` handler returns): the
    /// waiters are kept in the order of their datagrams, and the outcome of a datagram already
    /// sent is not kept for a late one.
    pub fn register(self, waiter: W) {
        self.waiters
            .waiters
            .borrow_mut()
            .push_back((self.seq, waiter));
    }
}

impl<W> fmt::Debug for SendTicket<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendTicket")
            .field("seq", &self.seq)
            .finish()
    }
}

impl<W: Waiter> SendWaiters<W> {
    fn resolve(&self, seq: u64, result: Result<(), &io::Error>) {
        let mut waiters = self.waiters.borrow_mut();
        // Waiters register in the order of their datagrams, and only for some: one for `seq`
        // is at the front if there is one.
        if waiters.front().is_some_and(|(front, _)| *front == seq)
            && let Some((_, waiter)) = waiters.pop_front()
        {
            drop(waiters);
            waiter.resolve(result);
        }
    }

    fn fail_all(&self, err: &io::Error) {
        let waiters = mem::take(&mut *self.waiters.borrow_mut());
        for (_, waiter) in waiters {
            waiter.resolve(Err(err));
        }
    }
}

/// Every decision of a datagram endpoint, with no I/O; see the [module docs](self).
///
/// `A` is a datagram's address, `W` what waits for a queued datagram's outcome.
pub struct DatagramCore<A, W> {
    state: State,
    paused: bool,
    /// Whether the protocol attached now acknowledged its `ConnectionMade`.
    attached: bool,
    made_pending: bool,
    pause_replay: bool,
    edge: Option<FlowEdge>,
    release: bool,
    /// The acknowledgement of the last `ConnectionMade`.
    made_seq: u64,
    read_window: usize,
    close_timeout: Duration,
    close_deadline: Option<Instant>,
    unacked: Unacked,
    seq: u64,
    queue: VecDeque<Queued<A>>,
    send_seq: u64,
    waiters: Rc<SendWaiters<W>>,
    flow: WriteFlow,
    max_write_buffer: usize,
    handles: Handles,
    lost: Option<io::Error>,
    stats: TransportStats,
}

impl<A, W: Waiter> DatagramCore<A, W> {
    /// A core for a new endpoint: its first event is the protocol's `ConnectionMade`, and it
    /// reads nothing until that is acknowledged.
    pub fn new(settings: DatagramSettings) -> Self {
        let read_window = settings.read_window.max(1);
        let stats = TransportStats {
            read_buffer_limit: read_window.saturating_mul(settings.max_datagram_size),
            ..TransportStats::default()
        };
        DatagramCore {
            state: State::Open,
            paused: false,
            attached: false,
            made_pending: true,
            pause_replay: false,
            edge: None,
            release: false,
            made_seq: 0,
            read_window,
            close_timeout: settings.close_timeout,
            close_deadline: None,
            unacked: Unacked::None,
            seq: 0,
            queue: VecDeque::new(),
            send_seq: 0,
            waiters: Rc::new(SendWaiters {
                waiters: RefCell::new(VecDeque::new()),
            }),
            flow: WriteFlow::new(settings.write_buffer_limits),
            max_write_buffer: settings.max_write_buffer,
            handles: Handles::default(),
            lost: None,
            stats,
        }
    }

    // ---- getters ----

    /// Whether `Close` or `Abort` was handled, or the endpoint ended.
    pub fn is_closing(&self) -> bool {
        self.state != State::Open
    }

    /// Whether the endpoint has ended: the driver lets go of its socket and stops.
    pub fn is_stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// Whether datagrams are read: open and not paused.
    pub fn is_reading(&self) -> bool {
        self.state == State::Open && !self.paused
    }

    /// Bytes queued for the socket.
    pub fn write_buffer_size(&self) -> usize {
        self.flow.size()
    }

    /// The write-buffer limits in force.
    pub fn write_buffer_limits(&self) -> WriteBufferLimits {
        self.flow.limits()
    }

    /// Whether a delivery awaits its acknowledgement.
    pub fn awaits_ack(&self) -> bool {
        !self.unacked.is_empty()
    }

    /// The counters.
    pub fn stats(&self) -> TransportStats {
        TransportStats {
            read_in_flight: self.unacked.bytes(),
            write_buffer_size: self.flow.size(),
            write_buffer_peak: self.flow.peak(),
            ..self.stats
        }
    }

    // ---- commands ----

    /// Accepts a datagram for `addr`, or refuses it.
    pub fn send(&mut self, data: Bytes, addr: A) -> Result<Outbound<A, W>, WriteError> {
        if let Some(err) = self.send_refusal() {
            return Err(err);
        }
        if self.queue.is_empty() {
            return Ok(Outbound::Direct(data, addr));
        }
        if self.flow.size() + data.len() > self.max_write_buffer {
            tracing::warn!(
                bytes = data.len(),
                queued = self.flow.size(),
                max = self.max_write_buffer,
                "datagram refused: the send queue is at its maximum"
            );
            return Err(WriteError::BufferFull(self.max_write_buffer));
        }
        Ok(Outbound::Queued(self.enqueue(data, addr)))
    }

    /// Why a datagram would be refused now, if it would.
    pub fn send_refusal(&self) -> Option<WriteError> {
        match self.state {
            State::Open => None,
            State::Closing => Some(WriteError::Closing),
            State::Stopped => Some(WriteError::Stopped),
        }
    }

    /// Queues a datagram the socket could not take at once (or that [`send`](Self::send) queued
    /// behind others); its outcome comes through the ticket.
    pub fn enqueue(&mut self, data: Bytes, addr: A) -> SendTicket<W> {
        self.send_seq += 1;
        self.flow.add(data.len());
        self.queue.push_back(Queued {
            data,
            addr,
            seq: self.send_seq,
        });
        self.check_flow();
        SendTicket {
            seq: self.send_seq,
            waiters: Rc::clone(&self.waiters),
        }
    }

    /// A datagram sent directly (never queued): counted.
    pub fn handle_sent_direct(&mut self, len: usize) {
        self.stats.bytes_sent += len as u64;
    }

    /// `Close`: stop reading, send what is queued (until the close timeout), end.
    pub fn close(&mut self) {
        if self.state == State::Open {
            self.state = State::Closing;
            self.advance_close();
        }
    }

    /// `Abort`: drop the queue (failing its acknowledged sends), end at once.
    pub fn abort(&mut self) {
        if self.state == State::Stopped {
            return;
        }
        self.queue.clear();
        self.flow.clear();
        self.waiters.fail_all(&WriteError::Aborted.into());
        self.finish();
    }

    /// `PauseReading`.
    pub fn pause_reading(&mut self) {
        self.paused = true;
    }

    /// `ResumeReading`.
    pub fn resume_reading(&mut self) {
        self.paused = false;
    }

    /// `SetWriteBufferLimits`.
    pub fn set_write_buffer_limits(
        &mut self,
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<(), InvalidWriteBufferLimits> {
        let limits = WriteBufferLimits::from_options(high, low)?;
        self.flow.set_limits(limits);
        self.check_flow();
        Ok(())
    }

    /// `SetDatagramProtocol`: events go to a new protocol, which first receives
    /// `ConnectionMade` (and nothing is read until it acknowledges it), then `PauseWriting` if
    /// writing is paused. Poll every event before.
    pub fn set_protocol(&mut self, handles: Handles) {
        if self.state == State::Stopped {
            return;
        }
        self.handles = handles;
        self.attached = false;
        self.made_pending = true;
        self.pause_replay = self.flow.is_paused();
    }

    /// What the attached protocol handles: set at the start, before the first `poll_event`.
    pub fn set_handles(&mut self, handles: Handles) {
        self.handles = handles;
    }

    /// Whether receiving waits for the send queue to drain: the protocol attached now does not
    /// handle write flow, and the queue went above its high-water mark and has not drained to
    /// its low-water mark since. Datagrams that arrive meanwhile wait in the kernel's buffer,
    /// which drops what does not fit, as the network may.
    pub fn is_throttled(&self) -> bool {
        !self.handles.write_flow && self.flow.is_paused()
    }

    /// The acknowledgement `seq` came back.
    pub fn ack(&mut self, seq: u64) {
        self.unacked.remove(seq);
        // From `ConnectionMade`'s acknowledgement on, the protocol may receive.
        if seq == self.made_seq {
            self.attached = true;
        }
    }

    // ---- inputs from the socket ----

    /// How many datagrams to read now: the room in the window, none before the protocol
    /// acknowledged its `ConnectionMade`, while not reading, or while
    /// [throttled](Self::is_throttled).
    pub fn receive_room(&self) -> usize {
        if !self.attached || !self.is_reading() || self.is_throttled() {
            return 0;
        }
        self.read_window.saturating_sub(self.unacked.len())
    }

    /// A datagram arrived: the event that delivers it.
    pub fn handle_received(&mut self, data: Bytes, addr: A) -> DatagramEvent<A> {
        self.stats.bytes_received += data.len() as u64;
        self.stats.deliveries += 1;
        let seq = self.issue_ack(data.len());
        self.stats.read_buffer_peak = self.stats.read_buffer_peak.max(self.unacked.bytes());
        DatagramEvent::Datagram { data, addr, seq }
    }

    /// The datagram to send next, and where.
    pub fn send_queue_front(&self) -> Option<(&Bytes, &A)> {
        self.queue
            .front()
            .map(|queued| (&queued.data, &queued.addr))
    }

    /// The front datagram's send ended: its waiter gets this outcome (a failed send fails that
    /// datagram alone; the driver reports the error to the protocol too).
    pub fn handle_sent(&mut self, result: Result<(), &io::Error>) {
        let Some(sent) = self.queue.pop_front() else {
            return;
        };
        self.flow.remove(sent.data.len());
        if result.is_ok() {
            self.stats.bytes_sent += sent.data.len() as u64;
        }
        self.waiters.resolve(sent.seq, result);
        self.advance_close();
    }

    /// The driver sent all the socket would take now: the flow edge the queue calls for is
    /// decided.
    pub fn handle_send_attempted(&mut self) {
        self.check_flow();
    }

    /// The socket cannot take a datagram now although the queue may hold little (`true`), or
    /// it can again (`false`): the protocol is told `PauseWriting` and `ResumeWriting` as if the
    /// queue had crossed its marks (the same rule as
    /// [`StreamCore::handle_io_full`](crate::StreamCore::handle_io_full)). The mock endpoint's
    /// scripted socket that stops taking datagrams says so; a socket's driver has no need to,
    /// as the datagrams its socket cannot take wait in the core's queue and count there.
    pub fn handle_io_full(&mut self, full: bool) {
        self.flow.set_full(full);
        self.check_flow();
    }

    /// The socket is unusable: the endpoint ends with `err` (every queued send fails).
    pub fn handle_error(&mut self, err: io::Error) {
        if self.state == State::Stopped {
            return;
        }
        tracing::debug!(%err, "datagram endpoint failed");
        self.waiters.fail_all(&err);
        self.queue.clear();
        self.flow.clear();
        self.lost = Some(err);
        self.finish();
    }

    /// The protocol actor stopped: the endpoint aborts.
    pub fn handle_protocol_gone(&mut self) {
        if self.state != State::Stopped {
            tracing::debug!("protocol actor stopped: aborting its datagram endpoint");
            self.abort();
        }
    }

    /// The next deadline: the close timeout while closing.
    pub fn poll_timeout(&mut self, now: Instant) -> Option<Instant> {
        if self.state != State::Closing {
            return None;
        }
        let timeout = self.close_timeout;
        Some(*self.close_deadline.get_or_insert(now + timeout))
    }

    /// Time passed: a close that reached its deadline drops what the socket would not take
    /// (failing those sends with [`WriteError::Stalled`]) and ends.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state != State::Closing || self.close_deadline.is_none_or(|at| now < at) {
            return;
        }
        tracing::warn!(
            dropped = self.queue.len(),
            "datagram endpoint closed with datagrams the socket would not take"
        );
        self.waiters
            .fail_all(&WriteError::Stalled(self.close_timeout).into());
        self.queue.clear();
        self.flow.clear();
        self.finish();
    }

    // ---- outputs ----

    /// The next event for the protocol attached now: `ConnectionMade` after a start or a
    /// switch, a replayed `PauseWriting`, a flow edge.
    pub fn poll_event(&mut self) -> Option<DatagramEvent<A>> {
        if self.state == State::Stopped {
            return None;
        }
        if mem::take(&mut self.made_pending) {
            let seq = self.issue_ack(0);
            self.made_seq = seq;
            return Some(DatagramEvent::Made { seq });
        }
        if mem::take(&mut self.pause_replay) {
            return Some(DatagramEvent::PauseWriting);
        }
        match self.edge.take()? {
            FlowEdge::Pause => Some(DatagramEvent::PauseWriting),
            FlowEdge::Resume => Some(DatagramEvent::ResumeWriting),
        }
    }

    /// Once the endpoint has ended: whether to let go of the socket and stop (once).
    pub fn take_release(&mut self) -> bool {
        mem::take(&mut self.release)
    }

    /// The driver stopped: every send still waiting fails, and this returns the error
    /// `ConnectionLost` carries.
    pub fn stopped(&mut self) -> Option<io::Error> {
        self.state = State::Stopped;
        self.release = false;
        self.waiters.fail_all(&WriteError::Stopped.into());
        self.lost.take()
    }

    // ---- inside ----

    fn issue_ack(&mut self, bytes: usize) -> u64 {
        self.seq += 1;
        self.unacked.push(self.seq, bytes);
        self.seq
    }

    fn check_flow(&mut self) {
        if self.state != State::Stopped && self.edge.is_none() {
            self.edge = self.flow.check();
        }
    }

    fn advance_close(&mut self) {
        if self.state == State::Closing && self.queue.is_empty() {
            self.finish();
        }
    }

    fn finish(&mut self) {
        self.state = State::Stopped;
        self.release = true;
        self.edge = None;
        self.close_deadline = None;
    }
}

impl<A, W> fmt::Debug for DatagramCore<A, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatagramCore")
            .field("state", &self.state)
            .field("paused", &self.paused)
            .field("in_flight", &self.unacked)
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records a queued datagram's outcome.
    struct Outcome(Rc<RefCell<Vec<Option<io::ErrorKind>>>>);

    impl Waiter for Outcome {
        fn resolve(self, result: Result<(), &io::Error>) {
            self.0.borrow_mut().push(result.err().map(io::Error::kind));
        }
    }

    fn core() -> DatagramCore<&'static str, Outcome> {
        DatagramCore::new(DatagramSettings {
            write_buffer_limits: WriteBufferLimits::new(100, 2).unwrap(),
            read_window: 2,
            max_datagram_size: 1000,
            close_timeout: Duration::from_secs(1),
            max_write_buffer: 120,
        })
    }

    #[test]
    fn a_datagram_past_the_maximum_is_refused_and_the_endpoint_goes_on() {
        let mut core = core();
        core.set_handles(Handles {
            write_flow: true,
            timeouts: false,
        });
        assert_eq!(events(&mut core), ["Made"]);
        let Ok(Outbound::Direct(data, addr)) = core.send(Bytes::from(vec![1; 100]), "a") else {
            panic!("nothing queued: sent directly");
        };
        core.enqueue(data, addr).register(Outcome(Rc::default()));
        assert!(matches!(
            core.send(Bytes::from(vec![2; 20]), "a"),
            Ok(Outbound::Queued(_))
        ));
        let refused = core.send(Bytes::from(vec![3; 1]), "a");
        assert!(matches!(refused, Err(WriteError::BufferFull(120))));
        assert!(!core.is_closing(), "one datagram lost, the endpoint open");
        assert_eq!(core.write_buffer_size(), 120);
    }

    #[test]
    fn a_protocol_without_write_flow_receives_nothing_while_the_queue_is_above_its_mark() {
        let mut core = core();
        assert_eq!(events(&mut core), ["Made"]);
        core.ack(1);
        assert_eq!(core.receive_room(), 2);
        core.handle_io_full(true);
        assert_eq!(events(&mut core), ["PauseWriting"]);
        assert!(core.is_throttled());
        assert_eq!(
            core.receive_room(),
            0,
            "nothing read while its answers wait"
        );
        core.handle_io_full(false);
        assert_eq!(events(&mut core), ["ResumeWriting"]);
        assert_eq!(core.receive_room(), 2);
    }

    fn events(core: &mut DatagramCore<&'static str, Outcome>) -> Vec<&'static str> {
        std::iter::from_fn(|| core.poll_event())
            .map(|event| match event {
                DatagramEvent::Made { .. } => "Made",
                DatagramEvent::Datagram { .. } => "Datagram",
                DatagramEvent::PauseWriting => "PauseWriting",
                DatagramEvent::ResumeWriting => "ResumeWriting",
            })
            .collect()
    }

    /// A socket that takes nothing pauses the protocol at once, however little is queued; the
    /// datagrams wait in order with their own outcomes, and the resume comes once they are
    /// sent and the socket takes datagrams again.
    #[test]
    fn a_full_socket_pauses_writing_and_queued_datagrams_keep_their_order() {
        let outcomes = Rc::new(RefCell::new(Vec::new()));
        let mut core = core();
        assert_eq!(events(&mut core), ["Made"]);
        core.handle_io_full(true);
        assert_eq!(events(&mut core), ["PauseWriting"]);
        let Ok(Outbound::Direct(data, addr)) = core.send(Bytes::from("one"), "a") else {
            panic!("nothing queued: sent directly");
        };
        // The socket cannot take it: queued.
        core.enqueue(data, addr)
            .register(Outcome(Rc::clone(&outcomes)));
        let Ok(Outbound::Queued(ticket)) = core.send(Bytes::from("two"), "b") else {
            panic!("queued behind the first");
        };
        ticket.register(Outcome(Rc::clone(&outcomes)));
        core.handle_send_attempted();
        assert_eq!(events(&mut core), [] as [&str; 0], "no second pause");
        assert_eq!(core.write_buffer_size(), 6);

        core.handle_io_full(false);
        assert_eq!(
            events(&mut core),
            [] as [&str; 0],
            "above the low-water mark: no resume yet"
        );
        assert_eq!(core.send_queue_front().map(|(_, to)| *to), Some("a"));
        core.handle_sent(Ok(()));
        assert_eq!(core.send_queue_front().map(|(_, to)| *to), Some("b"));
        core.handle_sent(Err(&io::ErrorKind::ConnectionRefused.into()));
        core.handle_send_attempted();
        assert_eq!(events(&mut core), ["ResumeWriting"]);
        assert_eq!(
            *outcomes.borrow(),
            [None, Some(io::ErrorKind::ConnectionRefused)],
            "each datagram its own outcome"
        );
        assert_eq!(core.stats().bytes_sent, 3);
    }
}
