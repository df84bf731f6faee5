//! The datagram mock against what a real datagram endpoint promises (DESIGN guarantees 1, 4, 5,
//! 6, 8 and 13 as a datagram endpoint keeps them), with a recording datagram protocol.

use std::{collections::HashMap, io, net::SocketAddr, time::Duration};

use actix::{Actor, ActorContext, Addr, Context, Handler, Message};
use bytes::Bytes;
use tokio::sync::mpsc;

use super::*;
use crate::{
    Ack, ConnectionLost, ConnectionMade, DatagramHandle, DatagramProtocolHandle, DatagramReceived,
    ErrorReceived, ExtraInfo, GetExtraInfo, GetWriteBufferSize, PauseWriting, ResumeWriting,
    SendTo, SendToError, SocketAddress, UnixAddress, WriteBufferLimits, WriteError, keys,
    testing::{Ending, run},
};

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

/// One event the recorder received.
#[derive(Debug)]
enum Seen {
    Made(DatagramHandle),
    Datagram(Bytes, SocketAddress),
    Error(io::ErrorKind),
    PauseWriting,
    ResumeWriting,
    Lost(Option<io::ErrorKind>),
}

impl Seen {
    fn name(&self) -> &'static str {
        match self {
            Seen::Made(_) => "Made",
            Seen::Datagram(..) => "Datagram",
            Seen::Error(_) => "Error",
            Seen::PauseWriting => "PauseWriting",
            Seen::ResumeWriting => "ResumeWriting",
            Seen::Lost(_) => "Lost",
        }
    }
}

/// A datagram protocol that records every event, as the stream `Probe` does.
struct Recorder {
    events: mpsc::UnboundedSender<Seen>,
    endpoint: Option<DatagramHandle>,
    hold_acks: bool,
    pause_on_made: bool,
    held: Vec<Ack>,
}

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<ConnectionMade<DatagramHandle>> for Recorder {
    type Result = ();

    fn handle(&mut self, msg: ConnectionMade<DatagramHandle>, _: &mut Context<Self>) {
        if self.pause_on_made {
            msg.transport.pause_reading();
        }
        self.endpoint = Some(msg.transport.clone());
        let _ = self.events.send(Seen::Made(msg.transport));
    }
}

impl Handler<DatagramReceived> for Recorder {
    type Result = ();

    fn handle(&mut self, msg: DatagramReceived, _: &mut Context<Self>) {
        let DatagramReceived {
            data, addr, ack, ..
        } = msg;
        if self.hold_acks {
            self.held.push(ack);
        }
        let _ = self.events.send(Seen::Datagram(data, addr));
    }
}

impl Handler<ErrorReceived> for Recorder {
    type Result = ();

    fn handle(&mut self, ErrorReceived(err): ErrorReceived, _: &mut Context<Self>) {
        let _ = self.events.send(Seen::Error(err.kind()));
    }
}

impl Handler<ConnectionLost> for Recorder {
    type Result = ();

    fn handle(&mut self, ConnectionLost(err): ConnectionLost, ctx: &mut Context<Self>) {
        let _ = self.events.send(Seen::Lost(err.map(|err| err.kind())));
        ctx.stop();
    }
}

impl Handler<PauseWriting> for Recorder {
    type Result = ();

    fn handle(&mut self, _: PauseWriting, _: &mut Context<Self>) {
        let _ = self.events.send(Seen::PauseWriting);
    }
}

impl Handler<ResumeWriting> for Recorder {
    type Result = ();

    fn handle(&mut self, _: ResumeWriting, _: &mut Context<Self>) {
        let _ = self.events.send(Seen::ResumeWriting);
    }
}

/// Runs a closure inside the recorder, with its endpoint; or releases its held acks; or stops it.
#[derive(Message)]
#[rtype(result = "()")]
enum Control {
    With(Box<dyn FnOnce(&DatagramHandle) + Send>),
    Release { keep_holding: bool },
    Stop,
}

impl Handler<Control> for Recorder {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Context<Self>) {
        match msg {
            Control::With(f) => f(self.endpoint.as_ref().expect("ConnectionMade first")),
            Control::Release { keep_holding } => {
                self.hold_acks = keep_holding;
                self.held.clear();
            }
            Control::Stop => ctx.stop(),
        }
    }
}

struct Events {
    events: mpsc::UnboundedReceiver<Seen>,
    addr: Addr<Recorder>,
}

impl Events {
    async fn next(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(5), self.events.recv())
            .await
            .expect("an event within 5 s")
            .expect("the recorder is running")
    }

    /// The names of the next `n` events.
    async fn names(&mut self, n: usize) -> Vec<&'static str> {
        let mut names = Vec::new();
        for _ in 0..n {
            names.push(self.next().await.name());
        }
        names
    }

    /// The events already received, without waiting.
    fn received(&mut self) -> Vec<Seen> {
        std::iter::from_fn(|| self.events.try_recv().ok()).collect()
    }

    async fn datagram(&mut self) -> (Bytes, SocketAddress) {
        match self.next().await {
            Seen::Datagram(data, from) => (data, from),
            other => panic!("expected a datagram, got {other:?}"),
        }
    }

    async fn assert_quiet(&mut self) {
        if let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(50), self.events.recv()).await
        {
            panic!("unexpected event {event:?}");
        }
    }

    fn with(&self, f: impl FnOnce(&DatagramHandle) + Send + 'static) {
        self.addr.do_send(Control::With(Box::new(f)));
    }

    fn release(&self, keep_holding: bool) {
        self.addr.do_send(Control::Release { keep_holding });
    }
}

#[derive(Default)]
struct RecorderOptions {
    hold_acks: bool,
    pause_on_made: bool,
}

fn recorder(options: RecorderOptions) -> (DatagramProtocolHandle, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = Recorder {
        events: tx,
        endpoint: None,
        hold_acks: options.hold_acks,
        pause_on_made: options.pause_on_made,
        held: Vec::new(),
    }
    .start();
    let events = Events {
        events: rx,
        addr: addr.clone(),
    };
    (DatagramProtocolHandle::with_write_flow(addr), events)
}

fn plain() -> (DatagramProtocolHandle, Events) {
    recorder(RecorderOptions::default())
}

#[actix::test]
async fn connection_made_comes_first_and_a_pause_from_it_is_honoured() {
    let (protocol, mut events) = recorder(RecorderOptions {
        pause_on_made: true,
        ..RecorderOptions::default()
    });
    let mock = MockDatagramTransport::connect(protocol).await;
    let made = match events.next().await {
        Seen::Made(handle) => handle,
        other => panic!("{other:?}"),
    };
    assert!(made.same_transport(&mock.handle()));
    mock.feed_datagram("early", addr("192.0.2.1:1")).await;
    assert!(events.received().is_empty(), "paused before the first one");
    assert!(!mock.is_reading());
    assert_eq!(mock.stats().deliveries, 0, "left in the kernel");
    events.with(|endpoint| endpoint.resume_reading());
    assert_eq!(
        events.datagram().await,
        (Bytes::from("early"), addr("192.0.2.1:1").into())
    );
    mock.settle().await;
    assert_eq!(mock.command_names(), ["PauseReading", "ResumeReading"]);
}

#[actix::test]
async fn each_datagram_is_one_delivery_with_its_sender_never_merged() {
    let (alice, bob) = (addr("192.0.2.1:1000"), addr("192.0.2.2:2000"));
    let (protocol, mut events) = plain();
    let mock = MockDatagramTransport::connect(protocol).await;
    mock.push_datagram("a", alice);
    mock.push_datagram("", bob);
    mock.feed_datagram("bc", alice).await;
    events.next().await; // Made
    let got = [
        events.datagram().await,
        events.datagram().await,
        events.datagram().await,
    ];
    assert_eq!(
        got,
        [
            (Bytes::from("a"), alice.into()),
            (Bytes::new(), bob.into()),
            (Bytes::from("bc"), alice.into()),
        ]
    );
    let stats = mock.stats();
    assert_eq!((stats.deliveries, stats.bytes_received), (3, 3));
    assert_eq!(stats.read_in_flight, 0);
}

/// Guarantee 4 for datagrams: at most `read_window` in flight, the next read only as an
/// acknowledgement comes back, in order, one datagram per delivery.
#[actix::test]
async fn the_read_window_bounds_the_datagrams_in_flight() {
    let sender = addr("192.0.2.9:53");
    let (protocol, mut events) = recorder(RecorderOptions {
        hold_acks: true,
        ..RecorderOptions::default()
    });
    let mock = MockDatagramTransport::builder()
        .read_window(2)
        .connect(protocol)
        .await;
    events.next().await; // Made
    for n in 0..5 {
        mock.push_datagram(format!("d{n}"), sender);
    }
    assert_eq!(events.datagram().await.0, "d0");
    assert_eq!(events.datagram().await.0, "d1");
    events.assert_quiet().await;
    assert_eq!(mock.stats().read_in_flight, 4, "two datagrams in flight");
    assert_eq!(
        mock.stats().read_buffer_limit,
        2 * DEFAULT_MAX_DATAGRAM_SIZE
    );

    events.release(true);
    assert_eq!(events.datagram().await.0, "d2");
    assert_eq!(events.datagram().await.0, "d3");
    events.assert_quiet().await;
    events.release(false);
    assert_eq!(events.datagram().await.0, "d4");
    mock.settle().await;
    assert_eq!(mock.stats().deliveries, 5);
    assert_eq!(mock.stats().read_in_flight, 0);
    assert_eq!(
        mock.stats().read_buffer_peak,
        4,
        "never more than the window"
    );
}

#[test]
#[should_panic(expected = "deliveries not acknowledged: true")]
fn settle_names_the_acknowledgements_a_protocol_kept() {
    run(async {
        let (protocol, _events) = recorder(RecorderOptions {
            hold_acks: true,
            ..RecorderOptions::default()
        });
        let mock = MockDatagramTransport::builder()
            .timeout(Duration::from_millis(100))
            .connect(protocol)
            .await;
        mock.feed_datagram("kept", addr("192.0.2.1:1")).await;
    });
}

#[actix::test]
async fn errors_are_reported_in_order_and_the_endpoint_goes_on() {
    let sender = addr("192.0.2.1:7");
    let (protocol, mut events) = plain();
    let mock = MockDatagramTransport::connect(protocol).await;
    mock.push_datagram("before", sender);
    mock.error(io::ErrorKind::ConnectionRefused.into()).await;
    mock.feed_datagram("after", sender).await;
    assert_eq!(events.names(2).await, ["Made", "Datagram"]);
    assert!(matches!(
        events.next().await,
        Seen::Error(io::ErrorKind::ConnectionRefused)
    ));
    assert_eq!(events.datagram().await.0, "after");
    assert!(!mock.is_closing() && mock.is_reading());
}

/// A socket that takes nothing: datagrams queue in the core, in order, counted against the
/// write-buffer limits; `PauseWriting` and `ResumeWriting` alternate; each acknowledged send
/// gets its own outcome once its datagram left.
#[actix::test]
async fn a_stalled_socket_queues_datagrams_in_order() {
    let peer = addr("198.51.100.1:9000");
    let (protocol, mut events) = plain();
    let mock = MockDatagramTransport::builder()
        .peername(peer)
        .write_buffer_limits(WriteBufferLimits::new(100, 0).unwrap())
        .connect(protocol)
        .await;
    let handle = mock.handle();
    mock.pause_writing().await;
    mock.pause_writing().await; // pausing a paused socket changes nothing
    events.with(|endpoint| {
        endpoint.send_connected("one");
        endpoint.send_connected("two");
    });
    mock.settle().await;
    let acked = handle.send_to_acked(SendTo::new("three", peer));
    assert_eq!(handle.send(GetWriteBufferSize).await.unwrap(), 11);
    assert!(mock.sent().is_empty(), "nothing left while stalled");
    mock.resume_writing().await;
    acked.await.expect("sent once the socket took it");
    assert_eq!(
        mock.take_sent(),
        [
            (Bytes::from("one"), peer.into()),
            (Bytes::from("two"), peer.into()),
            (Bytes::from("three"), peer.into()),
        ]
    );
    assert_eq!(
        events.names(3).await,
        ["Made", "PauseWriting", "ResumeWriting"]
    );
    assert_eq!(mock.stats().write_buffer_size, 0);
    assert_eq!(mock.stats().write_buffer_peak, 11);
    assert_eq!(mock.stats().bytes_sent, 11);
    assert_eq!(mock.command_names(), ["SendTo", "SendTo", "SendTo"]);
}

#[actix::test]
async fn close_sends_what_is_queued_then_ends_and_refuses_later_sends() {
    let peer = addr("198.51.100.1:9000");
    let (protocol, mut events) = plain();
    let mock = MockDatagramTransport::builder()
        .peername(peer)
        .connect(protocol)
        .await;
    let handle = mock.handle();
    mock.pause_writing().await;
    let queued = handle.send_to_acked(SendTo::connected("queued"));
    handle.close();
    let refused = handle
        .send_to_acked(SendTo::connected("too late"))
        .await
        .expect_err("refused while closing");
    assert_eq!(WriteError::of(&refused), Some(WriteError::Closing));
    mock.settle().await;
    assert!(mock.is_closing() && !mock.is_ended() && !mock.is_reading());
    mock.resume_writing().await;
    queued.await.expect("sent before the end");
    mock.ended().await;
    assert_eq!(mock.ending(), Some(Ending::Closed));
    assert_eq!(mock.sent(), [(Bytes::from("queued"), peer.into())]);
    assert!(matches!(
        &mock.take_commands()[..],
        [
            DatagramSent::SendTo { .. },
            DatagramSent::Close,
            DatagramSent::RefusedSendTo {
                reason: SendRefusal::Endpoint(WriteError::Closing),
                ..
            }
        ]
    ));
    assert_eq!(
        events.names(3).await,
        ["Made", "PauseWriting", "Lost"],
        "no ResumeWriting once closing ended it"
    );
}

#[actix::test]
async fn a_close_whose_timeout_passes_drops_the_queue_and_abort_fails_it() {
    let peer = addr("198.51.100.1:9000");
    for abort in [false, true] {
        let (protocol, mut events) = plain();
        let mock = MockDatagramTransport::builder()
            .peername(peer)
            .close_timeout(Duration::from_secs(2))
            .connect(protocol)
            .await;
        let handle = mock.handle();
        mock.pause_writing().await;
        let queued = handle.send_to_acked(SendTo::connected("never"));
        handle.close();
        if abort {
            handle.abort();
        }
        mock.expire_close_timeout().await;
        let err = queued.await.expect_err("dropped");
        let expected = if abort {
            WriteError::Aborted
        } else {
            WriteError::Stalled(Duration::from_secs(2))
        };
        assert_eq!(WriteError::of(&err), Some(expected), "abort: {abort}");
        mock.ended().await;
        let ending = if abort {
            Ending::Aborted
        } else {
            Ending::Closed
        };
        assert_eq!(mock.ending(), Some(ending));
        assert!(mock.sent().is_empty());
        assert_eq!(events.names(2).await, ["Made", "PauseWriting"]);
        assert!(matches!(events.next().await, Seen::Lost(None)));
    }
}

#[actix::test]
async fn refused_datagrams_are_recorded_with_their_reason() {
    let (protocol, _events) = plain();
    let mock = MockDatagramTransport::builder()
        .sockname(addr("127.0.0.1:5000"))
        .connect(protocol)
        .await;
    let handle = mock.handle();
    let no_address = handle
        .send_to_acked(SendTo::connected("x"))
        .await
        .unwrap_err();
    assert_eq!(SendToError::of(&no_address), Some(&SendToError::NoAddress));
    let path = SocketAddress::Unix(UnixAddress::Pathname("/tmp/sock".into()));
    let family = handle
        .send_to_acked(SendTo::new("x", path.clone()))
        .await
        .unwrap_err();
    assert_eq!(
        SendToError::of(&family),
        Some(&SendToError::WrongFamily(path))
    );
    handle
        .send_to_acked(SendTo::new("ok", addr("127.0.0.1:6000")))
        .await
        .expect("an address of the socket's family");
    assert_eq!(
        mock.command_names(),
        ["RefusedSendTo", "RefusedSendTo", "SendTo"]
    );
    assert_eq!(mock.sent().len(), 1);

    let (protocol, _events) = plain();
    let peer = addr("127.0.0.1:7000");
    let mock = MockDatagramTransport::builder()
        .peername(peer)
        .connect(protocol)
        .await;
    let other = addr("127.0.0.1:7001");
    let err = mock
        .handle()
        .send_to_acked(SendTo::new("x", other))
        .await
        .unwrap_err();
    assert_eq!(
        SendToError::of(&err),
        Some(&SendToError::NotConnectedAddress {
            given: other.into(),
            connected: peer.into()
        })
    );
    mock.handle()
        .send_to_acked(SendTo::new("to the peer", peer))
        .await
        .expect("the connected address itself");
    assert!(matches!(
        &mock.take_commands()[0],
        DatagramSent::RefusedSendTo {
            reason: SendRefusal::Destination(SendToError::NotConnectedAddress { .. }),
            ..
        }
    ));
    assert!(!mock.is_closing(), "a refusal does not end the endpoint");
}

#[actix::test]
async fn a_switch_re_addresses_deliveries_after_connection_made() {
    let sender = addr("192.0.2.1:1");
    let (old, mut old_events) = recorder(RecorderOptions {
        pause_on_made: true,
        ..RecorderOptions::default()
    });
    let mock = MockDatagramTransport::connect(old).await;
    mock.feed_datagram("waiting", sender).await;
    mock.pause_writing().await;
    let (new, mut new_events) = plain();
    let switched = new.clone();
    old_events.with(move |endpoint| {
        endpoint.set_protocol(switched);
        endpoint.resume_reading();
    });
    assert_eq!(
        new_events.names(3).await,
        ["Made", "PauseWriting", "Datagram"]
    );
    mock.settle().await;
    assert!(mock.protocol().same_protocol(&new));
    assert_eq!(old_events.names(2).await, ["Made", "PauseWriting"]);
    assert!(old_events.received().is_empty(), "nothing after the switch");
    assert_eq!(
        mock.command_names(),
        ["PauseReading", "SetDatagramProtocol", "ResumeReading"]
    );
}

#[actix::test]
async fn lose_ends_the_endpoint_after_the_datagrams_before_it() {
    let sender = addr("192.0.2.1:1");
    let (protocol, mut events) = plain();
    let mock = MockDatagramTransport::connect(protocol).await;
    mock.push_datagram("before", sender);
    mock.lose(io::Error::other("the socket is gone")).await;
    mock.feed_datagram("after the end", sender).await;
    assert_eq!(events.names(2).await, ["Made", "Datagram"]);
    assert!(matches!(
        events.next().await,
        Seen::Lost(Some(io::ErrorKind::Other))
    ));
    assert_eq!(mock.ending(), Some(Ending::Lost));
    assert!(events.received().is_empty());
}

#[actix::test]
async fn a_protocol_that_stops_makes_the_mock_abort() {
    let (protocol, events) = plain();
    let mock = MockDatagramTransport::connect(protocol).await;
    events.addr.do_send(Control::Stop);
    mock.ended().await;
    assert_eq!(mock.ending(), Some(Ending::ProtocolStopped));
}

#[actix::test]
async fn addresses_and_extra_info_are_scripted() {
    let (me, peer) = (addr("127.0.0.1:5000"), addr("127.0.0.1:7000"));
    let (protocol, _events) = plain();
    let mock = MockDatagramTransport::builder()
        .sockname(me)
        .peername(peer)
        .extra("x-zone", ExtraInfo::Text("blue".into()))
        .connect(protocol)
        .await;
    let handle = mock.handle();
    assert_eq!(handle.local_addr(), Some(me));
    assert_eq!(handle.peername(), Some(&peer.into()));
    let sockname = handle.get_extra_info(keys::SOCKNAME).await;
    assert_eq!(sockname, Some(ExtraInfo::from(SocketAddress::from(me))));
    let zone = handle.get_extra_info("x-zone").await;
    assert_eq!(zone.as_ref().and_then(ExtraInfo::as_text), Some("blue"));
    let fallback = handle
        .send(GetExtraInfo::new(keys::SOCKET).or(ExtraInfo::Text("none".into())))
        .await
        .unwrap();
    assert_eq!(fallback, Some(ExtraInfo::Text("none".into())));
}

/// A small protocol driven end to end: each datagram `add N` adds to its sender's tally and
/// is answered with the new total; `bye` closes the endpoint once the answers are out.
#[derive(Default)]
struct Tally {
    endpoint: Option<DatagramHandle>,
    totals: HashMap<SocketAddress, i64>,
}

impl Actor for Tally {
    type Context = Context<Self>;
}

impl Handler<ConnectionMade<DatagramHandle>> for Tally {
    type Result = ();

    fn handle(&mut self, msg: ConnectionMade<DatagramHandle>, _: &mut Context<Self>) {
        self.endpoint = Some(msg.transport);
    }
}

impl Handler<DatagramReceived> for Tally {
    type Result = ();

    fn handle(&mut self, msg: DatagramReceived, _: &mut Context<Self>) {
        let Some(endpoint) = &self.endpoint else {
            return;
        };
        let text = String::from_utf8_lossy(&msg.data);
        if text == "bye" {
            return endpoint.close();
        }
        let reply = match text.strip_prefix("add ").map(str::parse::<i64>) {
            Some(Ok(n)) => {
                let total = self.totals.entry(msg.addr.clone()).or_default();
                *total += n;
                total.to_string()
            }
            _ => "?".to_owned(),
        };
        endpoint.send_to(reply, msg.addr);
    }
}

impl Handler<ErrorReceived> for Tally {
    type Result = ();

    fn handle(&mut self, _: ErrorReceived, _: &mut Context<Self>) {}
}

impl Handler<ConnectionLost> for Tally {
    type Result = ();

    fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

#[actix::test]
async fn a_tally_protocol_end_to_end() {
    let (alice, bob) = (addr("192.0.2.1:1000"), addr("192.0.2.2:2000"));
    let mock = MockDatagramTransport::builder()
        .sockname(addr("0.0.0.0:4000"))
        .connect(Tally::default().start())
        .await;
    mock.feed_datagram("add 2", alice).await;
    mock.feed_datagram("add 40", alice).await;
    mock.feed_datagram("add 5", bob).await;
    mock.error(io::ErrorKind::ConnectionRefused.into()).await;
    mock.feed_datagram("nonsense", bob).await;
    assert_eq!(
        mock.take_sent(),
        [
            (Bytes::from("2"), alice.into()),
            (Bytes::from("42"), alice.into()),
            (Bytes::from("5"), bob.into()),
            (Bytes::from("?"), bob.into()),
        ]
    );
    // Under a stalled socket, a protocol that does not handle write flow receives nothing
    // more (its answers could not go out); once the socket drains, it answers, and `bye`
    // closes after the answer went out.
    mock.pause_writing().await;
    mock.push_datagram("add 1", bob);
    mock.feed_datagram("bye", alice).await;
    assert!(
        !mock.is_closing(),
        "nothing delivered while the socket is stalled"
    );
    assert!(mock.take_sent().is_empty());
    mock.resume_writing().await;
    mock.ended().await;
    assert_eq!(mock.take_sent(), [(Bytes::from("6"), bob.into())]);
    assert_eq!(mock.ending(), Some(Ending::Closed));
    assert_eq!(
        mock.command_names(),
        ["SendTo", "SendTo", "SendTo", "SendTo", "SendTo", "Close"]
    );
}

#[actix::test]
async fn commands_after_the_end_are_dropped_and_said_once() {
    let warnings = crate::stopped::capture::Warnings::start();
    let (protocol, _events) = plain();
    let mock = MockDatagramTransport::connect(protocol).await;
    let endpoint = mock.handle();
    mock.lose(io::Error::other("the socket is gone")).await;
    let stopped = async {
        while endpoint.is_alive() {
            actix_rt::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), stopped)
        .await
        .expect("the actor stops after its end");
    for _ in 0..3 {
        endpoint.do_send(SendTo::new("late", addr("192.0.2.1:1")));
    }
    assert_eq!(
        warnings.count("datagram endpoint that has stopped was dropped"),
        1,
        "one warning for three dropped commands, none silent"
    );
}
