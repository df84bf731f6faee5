//! Guarantees 1 (lifecycle), 2 (order and integrity), 8 (failure) and 9 (extra info), over TCP,
//! Unix sockets, TLS and the mock.

mod support;

use std::{io, time::Duration};

use actix::prelude::*;
use support::{
    Event, Fragile, Kind, MOCK_PEERNAME, MOCK_SOCKNAME, ProbeOptions, StopProbe, pair, pattern,
    probed, send_all,
};
use switchboard::{AddressFamily, SocketKind, UnixAddress, prelude::*, stream::StreamConfig};
use tokio::io::AsyncWriteExt;

for_each_kind!([tcp, unix, tls, mock] =>
    made_first_then_data_then_eof_then_lost_once,
    pause_reading_in_connection_made_is_honoured,
    holding_the_connection_made_ack_delays_reading,
    transport_actor_stops_after_connection_lost,
    bytes_arrive_in_order_whatever_the_chunking,
    one_byte_at_a_time,
    protocol_that_stops_makes_its_transport_abort,
    protocol_that_panics_makes_its_transport_abort,
    extra_info_keys_and_defaults,
    addresses_answer_after_the_connection_is_lost,
    commands_to_a_stopped_transport_fail_cleanly,
    events_arrive_in_the_documented_order_only,
);

// A Unix socket has no reset: its peer's close is an EOF.
for_each_kind!([tcp, tls, mock] => peer_reset_ends_in_connection_lost_with_the_error);

async fn made_first_then_data_then_eof_then_lost_once(kind: Kind) {
    let (probe, mut events) = ProbeOptions::default().probe();
    let (transport, _, mut peer) = pair(kind, StreamConfig::default(), || probe.start()).await;
    let made = events.made().await;
    assert!(
        made.same_transport(&transport),
        "ConnectionMade carries the transport's handle"
    );
    send_all(&mut peer, b"hello").await;
    peer.shutdown_write().await;
    assert_eq!(events.data_until_eof().await, b"hello");
    // The default answer to EOF (the event is dropped) closes: ConnectionLost(None), last, once.
    assert!(events.lost().await.is_none());
    assert_eq!(events.seen().first(), Some(&"Made"));
    let (rest, err) = peer.read_to_end_or_error().await;
    assert!(rest.is_empty() && err.is_none(), "peer sees a clean EOF");
}

async fn pause_reading_in_connection_made_is_honoured(kind: Kind) {
    let (probe, mut events) = (ProbeOptions {
        pause_on_made: true,
        ..ProbeOptions::default()
    })
    .probe();
    let (transport, _, mut peer) = pair(kind, StreamConfig::default(), || probe.start()).await;
    send_all(&mut peer, b"early bytes").await;
    events.made().await;
    events.assert_quiet(Duration::from_millis(300)).await;
    let stats = transport.send(GetStats).await.unwrap();
    assert_eq!(
        stats.bytes_received, 0,
        "nothing read from the socket while paused"
    );
    assert!(!transport.send(IsReading).await.unwrap());
    transport.resume_reading();
    assert_eq!(events.data(11).await, b"early bytes");
    assert!(transport.send(IsReading).await.unwrap());
}

async fn holding_the_connection_made_ack_delays_reading(kind: Kind) {
    /// Keeps its ConnectionMade acknowledgement until told.
    struct SlowStart {
        ack: Option<Ack>,
        got: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    }
    impl Actor for SlowStart {
        type Context = Context<Self>;
    }
    ignore_events!(SlowStart: EofReceived, PauseWriting, ResumeWriting, TimedOut);
    impl Handler<ConnectionMade> for SlowStart {
        type Result = ();
        fn handle(&mut self, msg: ConnectionMade, _: &mut Context<Self>) {
            self.ack = Some(msg.ack);
        }
    }
    impl Handler<DataReceived> for SlowStart {
        type Result = ();
        fn handle(&mut self, msg: DataReceived, _: &mut Context<Self>) {
            let _ = self.got.send(msg.data.to_vec());
        }
    }
    impl Handler<ConnectionLost> for SlowStart {
        type Result = ();
        fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
            ctx.stop();
        }
    }
    #[derive(Message)]
    #[rtype(result = "()")]
    struct Ready;
    impl Handler<Ready> for SlowStart {
        type Result = ();
        fn handle(&mut self, _: Ready, _: &mut Context<Self>) {
            self.ack.take().expect("ack held").release();
        }
    }

    let (tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    let (transport, slow, mut peer) = pair(kind, StreamConfig::default(), || {
        SlowStart { ack: None, got: tx }.start()
    })
    .await;
    send_all(&mut peer, b"wait for me").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(transport.send(GetStats).await.unwrap().bytes_received, 0);
    assert!(got.try_recv().is_err());
    slow.do_send(Ready);
    let data = tokio::time::timeout(support::TIMEOUT, got.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(data, b"wait for me");
}

async fn transport_actor_stops_after_connection_lost(kind: Kind) {
    let (transport, _, mut peer, mut events) = probed(kind, ProbeOptions::default()).await;
    transport.close();
    assert!(events.lost().await.is_none());
    // The peer sees EOF, and the transport actor is gone (its handle reports it).
    let (rest, err) = peer.read_to_end_or_error().await;
    assert!(rest.is_empty() && err.is_none());
    for _ in 0..100 {
        if !transport.is_alive() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("transport actor still alive after ConnectionLost");
}

async fn bytes_arrive_in_order_whatever_the_chunking(kind: Kind) {
    let (_transport, _, mut peer, mut events) = probed(kind, ProbeOptions::default()).await;
    let total: usize = 8 * 1024 * 1024;
    let expected = pattern(0, total);
    let writer = {
        let expected = expected.clone();
        async move {
            let mut offset = 0;
            let mut size = 1;
            while offset < total {
                let end = (offset + size).min(total);
                peer.write_all(&expected[offset..end]).await.unwrap();
                offset = end;
                size = (size * 7 + 13) % 100_003 + 1; // uneven sizes, 1 byte to ~100 KB
            }
            peer.shutdown_write().await;
            peer
        }
    };
    let (received, _peer) = tokio::join!(events.data_until_eof(), writer);
    assert_eq!(received.len(), total);
    assert!(
        received == expected[..],
        "bytes reordered, lost or duplicated"
    );
    assert!(events.lost().await.is_none());
}

async fn one_byte_at_a_time(kind: Kind) {
    let (_transport, _, mut peer, mut events) = probed(kind, ProbeOptions::default()).await;
    let message = b"one byte at a time, in order";
    for byte in message {
        peer.write_all(&[*byte]).await.unwrap();
        peer.flush().await.unwrap();
    }
    peer.shutdown_write().await;
    assert_eq!(events.data_until_eof().await, message);
}

async fn protocol_that_stops_makes_its_transport_abort(kind: Kind) {
    let (transport, probe, mut peer, _events) = probed(kind, ProbeOptions::default()).await;
    // The connection is idle: only the protocol watch can notice.
    probe.do_send(StopProbe);
    let (rest, err) = tokio::time::timeout(support::TIMEOUT, peer.read_to_end_or_error())
        .await
        .expect("transport did not abort after its protocol stopped");
    assert!(rest.is_empty());
    if kind.resets() {
        let err = err.expect("abort resets a TCP connection");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }
    support::stopped(&transport).await;
}

async fn protocol_that_panics_makes_its_transport_abort(kind: Kind) {
    let (transport, _, mut peer) = pair(kind, StreamConfig::default(), || Fragile.start()).await;
    send_all(&mut peer, b"boom").await;
    let (rest, _) = tokio::time::timeout(support::TIMEOUT, peer.read_to_end_or_error())
        .await
        .expect("transport did not abort after its protocol panicked");
    assert!(rest.is_empty());
    support::stopped(&transport).await;
}

async fn extra_info_keys_and_defaults(kind: Kind) {
    let (transport, _, peer, _events) = probed(kind, ProbeOptions::default()).await;
    if kind == Kind::Mock {
        // No socket: the mock answers the addresses it was scripted with.
        assert_eq!(transport.socket().await, None);
        assert_eq!(transport.peer_addr().await, Some(MOCK_PEERNAME));
        assert_eq!(transport.local_addr().await, Some(MOCK_SOCKNAME));
    } else {
        let socket = transport.socket().await.expect("socket key");
        assert_eq!(socket.kind, SocketKind::Stream);
        assert!(std::fs::metadata(format!("/proc/self/fd/{}", socket.fd)).is_ok());
        if kind == Kind::Unix {
            assert_eq!(socket.family, AddressFamily::Unix);
            assert_eq!(
                transport.peername().await,
                Some(SocketAddress::Unix(UnixAddress::Unnamed))
            );
        } else {
            let (peer_local, peer_remote) = (peer.local_inet_addr(), peer.peer_inet_addr());
            assert!(peer_local.is_some() && peer_remote.is_some());
            assert_eq!(socket.family, AddressFamily::Inet);
            assert_eq!(transport.peer_addr().await, peer_local);
            assert_eq!(transport.local_addr().await, peer_remote);
            let GetExtraInfo { .. } = GetExtraInfo::new(keys::PEERNAME);
            let peername = transport
                .send(GetExtraInfo::new(keys::PEERNAME))
                .await
                .unwrap();
            assert_eq!(peername, peer_local.map(ExtraInfo::from));
        }
    }
    // Unknown keys: the caller's default, or None. Never an error.
    let default = ExtraInfo::Text("fallback".into());
    let got = transport
        .send(GetExtraInfo::new("no-such-key").or(default.clone()))
        .await
        .unwrap();
    assert_eq!(got, Some(default));
    // The TLS client holds the server's certificate; the others have none.
    let peercert = transport.get_extra_info("peercert").await;
    assert_eq!(peercert.is_some(), kind == Kind::Tls, "{peercert:?}");
    drop(peer);
}

/// Says, from its `ConnectionLost` handler, what the transport answers for its addresses then:
/// where a server logs its peer.
struct LogsPeer {
    transport: Option<TransportHandle>,
    told: tokio::sync::mpsc::UnboundedSender<(Option<SocketAddress>, Option<SocketAddress>)>,
}

impl Actor for LogsPeer {
    type Context = Context<Self>;
}
ignore_events!(LogsPeer: EofReceived, PauseWriting, ResumeWriting, TimedOut);

impl Handler<ConnectionMade> for LogsPeer {
    type Result = ();
    fn handle(&mut self, msg: ConnectionMade, _: &mut Context<Self>) {
        self.transport = Some(msg.transport);
    }
}

impl Handler<DataReceived> for LogsPeer {
    type Result = ();
    fn handle(&mut self, _: DataReceived, _: &mut Context<Self>) {}
}

impl Handler<ConnectionLost> for LogsPeer {
    type Result = ();
    fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
        let transport = self.transport.clone().expect("connected");
        let told = self.told.clone();
        actix::spawn(async move {
            let _ = told.send((transport.peername().await, transport.sockname().await));
        });
        ctx.stop();
    }
}

/// The `ConnectionLost` handler is where a server logs its peer: `peername` and `sockname`
/// answer there, and through a handle that outlives the transport, after a clean end and after
/// a reset alike, as asyncio answers them until the end. The descriptor does not: it is closed.
async fn addresses_answer_after_the_connection_is_lost(kind: Kind) {
    for reset in [false, true] {
        let (told, mut heard) = tokio::sync::mpsc::unbounded_channel();
        let (transport, _, peer) = pair(kind, StreamConfig::default(), || {
            LogsPeer {
                transport: None,
                told,
            }
            .start()
        })
        .await;
        let peername = transport.peername().await;
        let sockname = transport.sockname().await;
        assert!(peername.is_some() && sockname.is_some());
        if reset {
            peer.reset(); // TCP: a reset, after which the socket has no peer any more
        } else {
            drop(peer);
        }
        let in_handler = tokio::time::timeout(support::TIMEOUT, heard.recv())
            .await
            .expect("ConnectionLost handled")
            .expect("the protocol says what it heard");
        assert_eq!(
            in_handler,
            (peername.clone(), sockname.clone()),
            "reset: {reset}"
        );
        let deadline = tokio::time::Instant::now() + support::TIMEOUT;
        while transport.is_alive() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the transport never stopped"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(transport.peername().await, peername, "reset: {reset}");
        assert_eq!(transport.sockname().await, sockname, "reset: {reset}");
        assert_eq!(transport.socket().await, None, "the descriptor is closed");
    }
}

async fn commands_to_a_stopped_transport_fail_cleanly(kind: Kind) {
    let (transport, _, _peer, mut events) = probed(kind, ProbeOptions::default()).await;
    transport.abort();
    assert!(events.lost().await.is_none());
    while transport.is_alive() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Fire-and-forget: logged and dropped, no panic.
    transport.write("too late");
    transport.close();
    // Awaited: a clear error, never a hang.
    let err = transport.write_acked("too late").await.unwrap_err();
    assert_eq!(WriteError::of(&err), Some(WriteError::Stopped));
    assert!(transport.send(IsClosing).await.is_err());
    assert!(transport.is_closing().await);
    // Extra information: what the transport retained answers, the rest is the default.
    assert!(transport.get_extra_info(keys::PEERNAME).await.is_some());
    assert_eq!(transport.get_extra_info(keys::SOCKET).await, None);
    assert_eq!(transport.get_extra_info("no-such-key").await, None);
}

async fn peer_reset_ends_in_connection_lost_with_the_error(kind: Kind) {
    let (probe, mut events) = ProbeOptions::default().probe();
    let (_transport, _, peer) = pair(kind, StreamConfig::default(), || probe.start()).await;
    events.made().await;
    peer.reset();
    let err = events.until_lost().await.expect("a reset is an error");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
}

/// A model check of one connection's whole event sequence: Made, Data*, Eof?, Lost.
async fn events_arrive_in_the_documented_order_only(kind: Kind) {
    let (probe, mut events) = ProbeOptions::default().probe();
    let (_transport, _, mut peer) = pair(kind, StreamConfig::default(), || probe.start()).await;
    for i in 0..50u8 {
        send_all(&mut peer, &[i; 100]).await;
    }
    peer.shutdown_write().await;
    let mut sequence = Vec::new();
    while let Some(event) = events.next().await {
        sequence.push(event);
    }
    let names: Vec<_> = sequence.iter().map(Event::name).collect();
    assert_eq!(names.first(), Some(&"Made"));
    assert_eq!(names.last(), Some(&"Lost"));
    let eof_at = names
        .iter()
        .position(|n| *n == "Eof")
        .expect("Eof delivered");
    assert!(names[1..eof_at].iter().all(|n| *n == "Data"));
    assert_eq!(eof_at, names.len() - 2, "only Lost after Eof");
    let bytes: usize = sequence
        .iter()
        .map(|e| if let Event::Data(d) = e { d.len() } else { 0 })
        .sum();
    assert_eq!(bytes, 5000);
}

/// An actix `System` that stops while its transports' protocol watch sleeps, then another
/// `System` on the same thread: the second one's idle connections still notice a protocol that
/// stopped. (The first runtime drops the sweep mid-sleep; the thread's watch list must not stay
/// marked as swept.)
#[test]
fn a_later_system_on_the_same_thread_still_watches_idle_connections() {
    System::new().block_on(async {
        let (_transport, _probe, _peer, _events) = probed(Kind::Tcp, ProbeOptions::default()).await;
        // Returning drops the runtime, and with it the sweep sleeping on this thread.
    });
    System::new().block_on(async {
        let (_transport, probe, mut peer, _events) =
            probed(Kind::Tcp, ProbeOptions::default()).await;
        probe.do_send(StopProbe);
        let (rest, err) = tokio::time::timeout(support::TIMEOUT, peer.read_to_end_or_error())
            .await
            .expect("an idle transport on a later System never noticed its protocol stopped");
        assert!(rest.is_empty());
        assert_eq!(
            err.expect("abort resets a TCP connection").kind(),
            io::ErrorKind::ConnectionReset
        );
    });
}
