//! [`Probe`]: a protocol that records every event it receives (Akka's `TestProbe`).

use std::{fmt, io, time::Duration};

use actix::{Actor, ActorContext, Addr, AsyncContext, Context, Handler, Message};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::DEFAULT_EVENT_TIMEOUT;
use crate::{
    Ack, ConnectionLost, ConnectionMade, DataReceived, EofReceived, IntoProtocol, PauseWriting,
    ProtocolHandle, ResumeWriting, TransportHandle,
};

/// One event a [`Probe`] received.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// `ConnectionMade`, with the transport's handle.
    Made(TransportHandle),
    /// `DataReceived`, with the bytes.
    Data(Bytes),
    /// `EofReceived`.
    Eof,
    /// `ConnectionLost`, with the error.
    Lost(Option<io::Error>),
    /// `PauseWriting`.
    PauseWriting,
    /// `ResumeWriting`.
    ResumeWriting,
}

impl Event {
    /// The event's name: `"Made"`, `"Data"`, `"Eof"`, `"Lost"`, `"PauseWriting"` or
    /// `"ResumeWriting"`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Made(_) => "Made",
            Event::Data(_) => "Data",
            Event::Eof => "Eof",
            Event::Lost(_) => "Lost",
            Event::PauseWriting => "PauseWriting",
            Event::ResumeWriting => "ResumeWriting",
        }
    }
}

/// How a [`Probe`] behaves besides recording.
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct ProbeBuilder {
    hold_acks: bool,
    keep_open_on_eof: bool,
    pause_on_made: bool,
    greeting: Option<Bytes>,
    timeout: Option<Duration>,
}

impl ProbeBuilder {
    /// Keeps every `DataReceived` acknowledgement until [`ProbeEvents::release_acks`], so the
    /// transport delivers nothing more meanwhile (a slow protocol).
    pub fn hold_acks(mut self) -> Self {
        self.hold_acks = true;
        self
    }

    /// Answers `EofReceived` with `keep_open()` (by default the probe lets the transport close).
    pub fn keep_open_on_eof(mut self) -> Self {
        self.keep_open_on_eof = true;
        self
    }

    /// Sends `PauseReading` from its `ConnectionMade` handler.
    pub fn pause_on_made(mut self) -> Self {
        self.pause_on_made = true;
        self
    }

    /// Writes `greeting` from its `ConnectionMade` handler.
    pub fn greeting(mut self, greeting: impl Into<Bytes>) -> Self {
        self.greeting = Some(greeting.into());
        self
    }

    /// How long [`ProbeEvents::next`] waits before failing the test
    /// ([`DEFAULT_EVENT_TIMEOUT`] by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Starts the probe on the current arbiter. Returns what a transport attaches to (it opted
    /// in to every optional event) and the receiving end of its events.
    pub fn start(self) -> (StartedProbe, ProbeEvents) {
        let (pending, events) = self.build();
        (pending.start(), events)
    }

    /// Makes the probe without starting it, for a protocol factory that runs elsewhere (a
    /// server's worker arbiter): the events reach this end wherever it is started.
    pub fn build(self) -> (PendingProbe, ProbeEvents) {
        let (tx, rx) = mpsc::unbounded_channel();
        let timeout = self.timeout.unwrap_or(DEFAULT_EVENT_TIMEOUT);
        let context = Context::new();
        let events = ProbeEvents {
            events: rx,
            seen: Vec::new(),
            addr: context.address(),
            timeout,
        };
        let probe = Probe {
            events: tx,
            options: self,
            transport: None,
            held: Vec::new(),
        };
        (PendingProbe { context, probe }, events)
    }
}

/// A [`Probe`] made and not started yet; see [`ProbeBuilder::build`].
#[must_use = "a probe records nothing until started"]
pub struct PendingProbe {
    context: Context<Probe>,
    probe: Probe,
}

impl PendingProbe {
    /// Starts the probe on the current arbiter; returns what a transport attaches to.
    pub fn start(self) -> StartedProbe {
        let addr = self.context.run(self.probe);
        // Timeouts are left to the transport, which ends the connection: a probe records what
        // a protocol sees, and a `TimedOut` it ignored would only put the end off.
        let handle = ProtocolHandle::builder(addr.clone())
            .eof_received()
            .write_flow()
            .build();
        StartedProbe { addr, handle }
    }
}

/// A started [`Probe`], ready to attach: the transport delivers every event to it but
/// `TimedOut`, which it leaves to the transport (the connection ends with the timeout's error,
/// which is what tests of timeouts look for). Attaching it gives back the probe's `Addr`.
#[must_use = "a probe records nothing until attached"]
pub struct StartedProbe {
    addr: Addr<Probe>,
    handle: ProtocolHandle,
}

impl StartedProbe {
    /// The probe's address.
    pub fn addr(&self) -> &Addr<Probe> {
        &self.addr
    }
}

impl fmt::Debug for StartedProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartedProbe").finish_non_exhaustive()
    }
}

impl From<StartedProbe> for ProtocolHandle {
    fn from(probe: StartedProbe) -> Self {
        probe.handle
    }
}

impl IntoProtocol for StartedProbe {
    type Output = Addr<Probe>;

    fn into_protocol(self, _: &TransportHandle) -> (Addr<Probe>, ProtocolHandle) {
        (self.addr, self.handle)
    }
}

impl fmt::Debug for PendingProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingProbe")
            .field("probe", &self.probe)
            .finish_non_exhaustive()
    }
}

/// A protocol that records every event it receives, in order, for a test to await and assert on
/// through its [`ProbeEvents`]. It handles every optional event, keeps the connection's
/// handle, and stops at `ConnectionLost`.
///
/// ```
/// use switchboard_framework::testing::{MockTransport, Probe};
///
/// # switchboard_framework::testing::run(async {
/// let (protocol, mut events) = Probe::builder().greeting("hi\n").start();
/// let mock = MockTransport::connect(protocol).await;
/// mock.feed("abc").await;
/// mock.eof().await;
/// assert!(events.made().await.same_transport(&mock.handle()));
/// assert_eq!(events.data_until_eof().await, b"abc");
/// assert!(events.lost().await.is_none());
/// assert_eq!(events.seen(), ["Made", "Data", "Eof", "Lost"]);
/// assert_eq!(mock.written(), "hi\n");
/// # });
/// ```
pub struct Probe {
    events: mpsc::UnboundedSender<Event>,
    options: ProbeBuilder,
    transport: Option<TransportHandle>,
    held: Vec<Ack>,
}

impl Probe {
    /// A probe that records and does nothing else; see [`ProbeBuilder`] for the rest.
    pub fn builder() -> ProbeBuilder {
        ProbeBuilder::default()
    }

    fn record(&self, event: Event) {
        // The test may have dropped its end; recording is then moot.
        let _ = self.events.send(event);
    }
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe")
            .field("options", &self.options)
            .field("connected", &self.transport.is_some())
            .field("held_acks", &self.held.len())
            .finish()
    }
}

impl Actor for Probe {
    type Context = Context<Self>;
}

impl Handler<ConnectionMade> for Probe {
    type Result = ();

    fn handle(&mut self, msg: ConnectionMade, _: &mut Context<Self>) {
        if self.options.pause_on_made {
            msg.transport.pause_reading();
        }
        if let Some(greeting) = &self.options.greeting {
            msg.transport.write(greeting.clone());
        }
        self.transport = Some(msg.transport.clone());
        self.record(Event::Made(msg.transport));
    }
}

impl Handler<DataReceived> for Probe {
    type Result = ();

    fn handle(&mut self, msg: DataReceived, _: &mut Context<Self>) {
        let DataReceived { data, ack, .. } = msg;
        if self.options.hold_acks {
            self.held.push(ack);
        }
        self.record(Event::Data(data));
    }
}

impl Handler<EofReceived> for Probe {
    type Result = ();

    fn handle(&mut self, msg: EofReceived, _: &mut Context<Self>) {
        self.record(Event::Eof);
        if self.options.keep_open_on_eof {
            msg.keep_open();
        }
    }
}

impl Handler<ConnectionLost> for Probe {
    type Result = ();

    fn handle(&mut self, ConnectionLost(err): ConnectionLost, ctx: &mut Context<Self>) {
        self.record(Event::Lost(err));
        ctx.stop();
    }
}

impl Handler<PauseWriting> for Probe {
    type Result = ();

    fn handle(&mut self, _: PauseWriting, _: &mut Context<Self>) {
        self.record(Event::PauseWriting);
    }
}

impl Handler<ResumeWriting> for Probe {
    type Result = ();

    fn handle(&mut self, _: ResumeWriting, _: &mut Context<Self>) {
        self.record(Event::ResumeWriting);
    }
}

/// Releases every acknowledgement a [`Probe`] holds; with `keep_holding` it goes on holding the
/// next ones. (Also [`ProbeEvents::release_acks`].)
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct ReleaseAcks {
    /// Whether to go on holding acknowledgements after these.
    pub keep_holding: bool,
}

impl Handler<ReleaseAcks> for Probe {
    type Result = ();

    fn handle(&mut self, msg: ReleaseAcks, _: &mut Context<Self>) {
        self.options.hold_acks = msg.keep_holding;
        self.held.clear();
    }
}

/// Stops a [`Probe`], as a protocol that dies does. (Also [`ProbeEvents::stop`].)
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct StopProbe;

impl Handler<StopProbe> for Probe {
    type Result = ();

    fn handle(&mut self, _: StopProbe, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Runs a closure inside the probe, with its transport.
#[derive(Message)]
#[rtype(result = "()")]
struct WithTransport(Box<dyn FnOnce(&TransportHandle) + Send>);

impl Handler<WithTransport> for Probe {
    type Result = ();

    fn handle(&mut self, msg: WithTransport, _: &mut Context<Self>) {
        let transport = self
            .transport
            .as_ref()
            .expect("Probe::with_transport before ConnectionMade");
        (msg.0)(transport);
    }
}

/// The test's end of a [`Probe`]: its events, in order, and the controls of the actor.
///
/// Every wait fails the test after the probe's timeout, listing the events seen so far.
pub struct ProbeEvents {
    events: mpsc::UnboundedReceiver<Event>,
    seen: Vec<&'static str>,
    addr: Addr<Probe>,
    timeout: Duration,
}

impl fmt::Debug for ProbeEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeEvents")
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

impl ProbeEvents {
    /// The probe actor's address.
    pub fn addr(&self) -> &Addr<Probe> {
        &self.addr
    }

    /// The names of the events taken so far, in order: `["Made", "Data", "Eof", "Lost"]`.
    pub fn seen(&self) -> &[&'static str] {
        &self.seen
    }

    /// The next event; fails the test after the timeout. `None` once the probe has stopped and
    /// every event was taken.
    pub async fn next(&mut self) -> Option<Event> {
        let event = tokio::time::timeout(self.timeout, self.events.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "Probe: no event within {:?}; seen so far: {:?}",
                    self.timeout, self.seen
                )
            });
        if let Some(event) = &event {
            self.seen.push(event.name());
        }
        event
    }

    /// An event already received, without waiting.
    pub fn try_next(&mut self) -> Option<Event> {
        let event = self.events.try_recv().ok();
        if let Some(event) = &event {
            self.seen.push(event.name());
        }
        event
    }

    /// Expects `ConnectionMade` next and returns its handle.
    pub async fn made(&mut self) -> TransportHandle {
        match self.next().await {
            Some(Event::Made(transport)) => transport,
            other => panic!("Probe: expected Made, got {other:?}; seen: {:?}", self.seen),
        }
    }

    /// Collects `DataReceived` bytes until `n` arrived, skipping write-flow events; fails on
    /// any other event and on more than `n` bytes.
    pub async fn data(&mut self, n: usize) -> Vec<u8> {
        let mut data = Vec::with_capacity(n);
        while data.len() < n {
            match self.next().await {
                Some(Event::Data(chunk)) => data.extend_from_slice(&chunk),
                Some(Event::PauseWriting | Event::ResumeWriting) => {}
                other => panic!(
                    "Probe: expected data ({} of {n} bytes so far), got {other:?}",
                    data.len()
                ),
            }
        }
        assert_eq!(data.len(), n, "Probe: more bytes than expected");
        data
    }

    /// Collects data until `EofReceived`, skipping write-flow events, and returns the bytes.
    pub async fn data_until_eof(&mut self) -> Vec<u8> {
        let mut data = Vec::new();
        loop {
            match self.next().await {
                Some(Event::Data(chunk)) => data.extend_from_slice(&chunk),
                Some(Event::PauseWriting | Event::ResumeWriting) => {}
                Some(Event::Eof) => return data,
                other => panic!("Probe: expected data or Eof, got {other:?}"),
            }
        }
    }

    /// Expects `ConnectionLost` next, then nothing more, ever; returns its error.
    pub async fn lost(&mut self) -> Option<io::Error> {
        let err = match self.next().await {
            Some(Event::Lost(err)) => err,
            other => panic!("Probe: expected Lost, got {other:?}; seen: {:?}", self.seen),
        };
        self.assert_ended().await;
        err
    }

    /// Skips data, EOF and write-flow events until `ConnectionLost`, then expects nothing more.
    pub async fn until_lost(&mut self) -> Option<io::Error> {
        loop {
            match self.next().await {
                Some(Event::Lost(err)) => {
                    self.assert_ended().await;
                    return err;
                }
                Some(Event::Made(_)) => panic!("Probe: a second ConnectionMade"),
                Some(_) => {}
                None => panic!("Probe: stopped without ConnectionLost"),
            }
        }
    }

    /// Asserts the probe stopped and nothing else was delivered.
    pub async fn assert_ended(&mut self) {
        if let Some(event) = self.next().await {
            panic!("Probe: event after ConnectionLost: {event:?}");
        }
    }

    /// Asserts no event arrives for `quiet`.
    pub async fn assert_quiet(&mut self, quiet: Duration) {
        if let Ok(Some(event)) = tokio::time::timeout(quiet, self.events.recv()).await {
            panic!(
                "Probe: unexpected event {event:?}; seen before: {:?}",
                self.seen
            );
        }
    }

    /// Takes the next `names.len()` events and asserts their names, e.g.
    /// `expect(&["Made", "Data"])`; returns them.
    pub async fn expect(&mut self, names: &[&str]) -> Vec<Event> {
        let mut events = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            match self.next().await {
                Some(event) if event.name() == *name => events.push(event),
                other => panic!(
                    "Probe: event {i} should be {name}, got {other:?}; expected {names:?}, seen: \
                     {:?}",
                    self.seen
                ),
            }
        }
        events
    }

    /// Releases every held acknowledgement; with `keep_holding` the probe goes on holding the
    /// next ones.
    pub fn release_acks(&self, keep_holding: bool) {
        self.addr.do_send(ReleaseAcks { keep_holding });
    }

    /// Stops the probe actor, as a protocol that dies does (its transport then aborts).
    pub fn stop(&self) {
        self.addr.do_send(StopProbe);
    }

    /// Runs `f` inside the probe actor with its transport handle, so commands are sent from
    /// the protocol itself, in order with what it sends on its own.
    pub fn with_transport(&self, f: impl FnOnce(&TransportHandle) + Send + 'static) {
        self.addr.do_send(WithTransport(Box::new(f)));
    }
}
