//! Datagram endpoints (guarantee 13), over UDP (IPv4, IPv6) and Unix datagram sockets, against
//! plain tokio sockets as peers: datagrams of every size arrive whole and one by one, errors
//! reach `ErrorReceived` and leave the endpoint usable, the send-address rules, read and write
//! flow control, close, abort, protocol switching and death, and the socket options.

mod support;

use std::{io, net::SocketAddr, time::Duration};

use actix::prelude::*;
use bytes::Bytes;
use support::{TIMEOUT, deadline};
use switchboard::{
    Ack, DatagramConfig, DatagramProtocolHandle, GetWriteBufferSize, SetDatagramProtocol,
    SetWriteBufferLimits, SocketAddress, SocketKind, TransportStats, UnixAddress, WriteError,
    prelude::*, udp, unix_datagram,
};
use tokio::{
    net::{UdpSocket, UnixDatagram},
    sync::mpsc,
};

/// What a [`Dgram`] probe saw, in order.
#[derive(Debug)]
enum Seen {
    Made(DatagramHandle),
    Datagram(Bytes, SocketAddress),
    Error(io::Error),
    PauseWriting,
    ResumeWriting,
    Lost(Option<io::Error>),
}

/// A datagram protocol that forwards every event to the test, and can keep its
/// acknowledgements or pause reading from `ConnectionMade`.
struct Dgram {
    events: mpsc::UnboundedSender<Seen>,
    hold_acks: bool,
    pause_on_made: bool,
    held: Vec<Ack>,
}

struct DgramRx(mpsc::UnboundedReceiver<Seen>);

impl Dgram {
    fn new() -> (Dgram, DgramRx) {
        let (tx, rx) = mpsc::unbounded_channel();
        let probe = Dgram {
            events: tx,
            hold_acks: false,
            pause_on_made: false,
            held: Vec::new(),
        };
        (probe, DgramRx(rx))
    }

    fn holding_acks(mut self) -> Self {
        self.hold_acks = true;
        self
    }

    fn paused(mut self) -> Self {
        self.pause_on_made = true;
        self
    }

    /// Starts it with write flow, on the current arbiter.
    fn handle(self) -> DatagramProtocolHandle {
        DatagramProtocolHandle::with_write_flow(self.start())
    }
}

impl Actor for Dgram {
    type Context = Context<Self>;
}

impl Handler<ConnectionMade<DatagramHandle>> for Dgram {
    type Result = ();
    fn handle(&mut self, msg: ConnectionMade<DatagramHandle>, _: &mut Context<Self>) {
        if self.pause_on_made {
            msg.transport.pause_reading();
        }
        let _ = self.events.send(Seen::Made(msg.transport));
    }
}

impl Handler<DatagramReceived> for Dgram {
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

impl Handler<ErrorReceived> for Dgram {
    type Result = ();
    fn handle(&mut self, msg: ErrorReceived, _: &mut Context<Self>) {
        let _ = self.events.send(Seen::Error(msg.0));
    }
}

impl Handler<PauseWriting> for Dgram {
    type Result = ();
    fn handle(&mut self, _: PauseWriting, _: &mut Context<Self>) {
        let _ = self.events.send(Seen::PauseWriting);
    }
}

impl Handler<ResumeWriting> for Dgram {
    type Result = ();
    fn handle(&mut self, _: ResumeWriting, _: &mut Context<Self>) {
        let _ = self.events.send(Seen::ResumeWriting);
    }
}

impl Handler<ConnectionLost> for Dgram {
    type Result = ();
    fn handle(&mut self, msg: ConnectionLost, ctx: &mut Context<Self>) {
        let _ = self.events.send(Seen::Lost(msg.0));
        ctx.stop();
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct ReleaseAcks;

impl Handler<ReleaseAcks> for Dgram {
    type Result = ();
    fn handle(&mut self, _: ReleaseAcks, _: &mut Context<Self>) {
        self.held.clear();
        self.hold_acks = false;
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Stop;

impl Handler<Stop> for Dgram {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl DgramRx {
    async fn next(&mut self) -> Seen {
        tokio::time::timeout(TIMEOUT, self.0.recv())
            .await
            .expect("no event within the timeout")
            .expect("the probe stopped")
    }

    async fn made(&mut self) -> DatagramHandle {
        match self.next().await {
            Seen::Made(handle) => handle,
            other => panic!("expected ConnectionMade, got {other:?}"),
        }
    }

    async fn datagram(&mut self) -> (Bytes, SocketAddress) {
        match self.next().await {
            Seen::Datagram(data, addr) => (data, addr),
            other => panic!("expected a datagram, got {other:?}"),
        }
    }

    async fn error(&mut self) -> io::Error {
        match self.next().await {
            Seen::Error(err) => err,
            other => panic!("expected ErrorReceived, got {other:?}"),
        }
    }

    async fn lost(&mut self) -> Option<io::Error> {
        loop {
            if let Seen::Lost(err) = self.next().await {
                return err;
            }
        }
    }

    /// Asserts nothing arrives for `quiet`.
    async fn assert_quiet(&mut self, quiet: Duration) {
        if let Ok(Some(event)) = tokio::time::timeout(quiet, self.0.recv()).await {
            panic!("expected no event, got {event:?}");
        }
    }
}

/// A datagram numbered `n`, of `len` bytes (at least 8): the number, then bytes derived from it.
fn numbered(n: u64, len: usize) -> Bytes {
    let mut data = n.to_be_bytes().to_vec();
    data.extend((8..len).map(|i| (n as usize).wrapping_mul(31).wrapping_add(i) as u8));
    data.into()
}

/// Checks a datagram made by [`numbered`] is whole and returns its number.
fn check_numbered(data: &[u8], len: usize) -> u64 {
    assert_eq!(data.len(), len, "a datagram was merged or split");
    let n = u64::from_be_bytes(data[..8].try_into().expect("8 bytes"));
    assert_eq!(data, &numbered(n, len)[..], "datagram {n} was altered");
    n
}

fn bytes_of(len: usize) -> Bytes {
    (0..len).map(|i| (i % 251) as u8).collect()
}

async fn stats(endpoint: &DatagramHandle) -> TransportStats {
    endpoint.stats().await.expect("endpoint alive")
}

/// Polls `check` every 5 ms until it holds.
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The largest UDP payload over IPv4: 65,535 minus the IP and UDP headers.
const MAX_UDP_V4: usize = 65_507;

async fn udp_round_trip(local: &str, sizes: &[usize]) {
    let (probe, mut rx) = Dgram::new();
    let (endpoint, _) = udp::bind(local, || probe.handle()).await.expect("bind");
    let made = rx.made().await;
    assert!(made.same_transport(&endpoint));
    let addr = endpoint.local_addr().expect("bound to an IP address");
    assert_ne!(addr.port(), 0);
    let peer = UdpSocket::bind(SocketAddr::new(addr.ip(), 0))
        .await
        .expect("peer");
    let peer_addr = peer.local_addr().expect("peer address");

    for &len in sizes {
        let sent = bytes_of(len);
        peer.send_to(&sent, addr).await.expect("peer send");
        let (data, from) = rx.datagram().await;
        assert_eq!(data.len(), len);
        assert_eq!(data, sent);
        assert_eq!(from, SocketAddress::Inet(peer_addr));

        endpoint
            .send_to_acked(SendTo::new(data, from))
            .await
            .expect("echo sent");
        let mut buf = vec![0; 70_000];
        let (n, echo_from) = tokio::time::timeout(TIMEOUT, peer.recv_from(&mut buf))
            .await
            .expect("echo within the timeout")
            .expect("peer recv");
        assert_eq!((n, echo_from), (len, addr));
        assert_eq!(&buf[..n], &sent[..]);
    }
    let totals = stats(&endpoint).await;
    let total: usize = sizes.iter().sum();
    assert_eq!(totals.bytes_received, total as u64);
    assert_eq!(totals.bytes_sent, total as u64);
    assert_eq!(totals.deliveries, sizes.len() as u64);

    endpoint.close();
    assert!(rx.lost().await.is_none());
}

#[actix_rt::test]
async fn udp_v4_round_trips_datagrams_of_0_1_and_65507_bytes() {
    deadline(udp_round_trip("127.0.0.1:0", &[0, 1, 1400, MAX_UDP_V4])).await;
}

#[actix_rt::test]
async fn udp_v6_round_trips_datagrams_of_0_1_and_65507_bytes() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: this machine has no IPv6 loopback");
        return;
    }
    deadline(udp_round_trip("[::1]:0", &[0, 1, 1400, MAX_UDP_V4, 65_527])).await;
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("sb-dgram")
        .tempdir()
        .expect("temp dir")
}

#[actix_rt::test]
async fn unix_datagrams_round_trip_with_their_sender_path() {
    deadline(async {
        let dir = temp_dir();
        let path = dir.path().join("endpoint.sock");
        let (probe, mut rx) = Dgram::new();
        let (endpoint, _) = unix_datagram::bind(&path, || probe.handle()).expect("bind");
        rx.made().await;
        assert_eq!(
            endpoint.sockname(),
            Some(&SocketAddress::Unix(UnixAddress::Pathname(path.clone())))
        );
        let peer_path = dir.path().join("peer.sock");
        let peer = UnixDatagram::bind(&peer_path).expect("peer");

        for len in [0, 1, 1000, 100_000] {
            let sent = bytes_of(len);
            peer.send_to(&sent, &path).await.expect("peer send");
            let (data, from) = rx.datagram().await;
            assert_eq!(data, sent, "a {len}-byte datagram arrived whole");
            assert_eq!(
                from,
                SocketAddress::Unix(UnixAddress::Pathname(peer_path.clone()))
            );
            endpoint
                .send_to_acked(SendTo::new(data, from))
                .await
                .expect("echo");
            let mut buf = vec![0; 200_000];
            let n = peer.recv(&mut buf).await.expect("peer recv");
            assert_eq!(&buf[..n], &sent[..]);
        }

        // An unbound sender cannot be answered, and saying so closes nothing.
        let anonymous = UnixDatagram::unbound().expect("unbound");
        anonymous.send_to(b"who", &path).await.expect("send");
        let (data, from) = rx.datagram().await;
        assert_eq!(
            (&data[..], &from),
            (&b"who"[..], &SocketAddress::Unix(UnixAddress::Unnamed))
        );
        let err = endpoint
            .send_to_acked(SendTo::new("reply", from))
            .await
            .expect_err("an unnamed address cannot be sent to");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(matches!(
            SendToError::of(&err),
            Some(SendToError::Unaddressable(_))
        ));
        assert!(!endpoint.is_closing().await);

        endpoint.close();
        assert!(rx.lost().await.is_none());
        assert!(!path.exists(), "the endpoint removes its socket file");
    })
    .await;
}

#[actix_rt::test]
async fn a_stale_socket_file_is_replaced_and_someone_elses_file_is_left_alone() {
    deadline(async {
        let dir = temp_dir();
        let path = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixDatagram::bind(&path).expect("first"));
        assert!(path.exists(), "a stale socket file");
        let (probe, mut rx) = Dgram::new();
        let (endpoint, _) = unix_datagram::bind(&path, || probe.handle()).expect("rebind");
        rx.made().await;
        // Someone replaces the file while the endpoint runs: it is not the endpoint's to remove.
        std::fs::remove_file(&path).expect("remove");
        let other = std::os::unix::net::UnixDatagram::bind(&path).expect("other");
        endpoint.close();
        rx.lost().await;
        assert!(path.exists(), "another socket's file stays");
        drop(other);

        let regular = dir.path().join("regular");
        std::fs::write(&regular, b"data").expect("file");
        let err = unix_datagram::bind(&regular, || Dgram::new().0.handle())
            .expect_err("a regular file is not replaced");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains("could not bind"), "{err}");
        assert_eq!(std::fs::read(&regular).expect("file"), b"data");
    })
    .await;
}

#[actix_rt::test]
async fn ten_thousand_udp_datagrams_arrive_whole_none_merged_or_split() {
    deadline(async {
        let (probe, mut rx) = Dgram::new();
        let (endpoint, _) = udp::bind("127.0.0.1:0", || probe.handle())
            .await
            .expect("bind");
        rx.made().await;
        let addr = endpoint.local_addr().expect("bound");
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("peer");
        let len_of = |n: u64| 8 + (n as usize * 37) % 1400;
        // In bursts of 100, so the kernel's receive buffer never overflows on a busy machine:
        // the point is that each datagram arrives as itself, and every one of them does.
        let mut next = 0;
        for burst in 0..100u64 {
            for n in burst * 100..(burst + 1) * 100 {
                peer.send_to(&numbered(n, len_of(n)), addr)
                    .await
                    .expect("send");
            }
            for _ in 0..100 {
                let (data, _) = rx.datagram().await;
                let n = u64::from_be_bytes(data[..8].try_into().expect("8 bytes"));
                assert_eq!(n, next, "datagrams arrive in order on loopback");
                check_numbered(&data, len_of(n));
                next += 1;
            }
        }
        assert_eq!(stats(&endpoint).await.deliveries, 10_000);
        endpoint.close();
        rx.lost().await;
    })
    .await;
}

#[actix_rt::test]
async fn ten_thousand_unix_datagrams_sent_flat_out_arrive_in_order_and_whole() {
    deadline(async {
        let dir = temp_dir();
        let path = dir.path().join("flood.sock");
        let (probe, mut rx) = Dgram::new();
        let (endpoint, _) = unix_datagram::bind(&path, || probe.handle()).expect("bind");
        rx.made().await;
        let len_of = |n: u64| 8 + (n as usize * 53) % 4000;
        let sender = tokio::spawn({
            let path = path.clone();
            async move {
                let peer = UnixDatagram::unbound().expect("peer");
                // A full receive queue blocks the sender: nothing is lost on a Unix socket.
                for n in 0..10_000u64 {
                    peer.send_to(&numbered(n, len_of(n)), &path)
                        .await
                        .expect("send");
                }
            }
        });
        for expected in 0..10_000u64 {
            let (data, _) = rx.datagram().await;
            assert_eq!(check_numbered(&data, len_of(expected)), expected);
        }
        sender.await.expect("sender");
        let totals = stats(&endpoint).await;
        assert_eq!(totals.deliveries, 10_000);
        assert!(
            totals.read_buffer_peak <= 32 * 4008,
            "at most the read window in flight: {totals:?}"
        );
        endpoint.close();
        rx.lost().await;
    })
    .await;
}

/// A UDP port nothing listens on (it was bound, then released).
async fn closed_udp_port() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket.local_addr().expect("address")
}

#[actix_rt::test]
async fn port_unreachable_reaches_error_received_and_the_endpoint_lives_on() {
    deadline(async {
        let target = closed_udp_port().await;
        let (probe, mut rx) = Dgram::new();
        let (endpoint, _) = udp::connect(target, || probe.handle())
            .await
            .expect("connect");
        rx.made().await;
        assert_eq!(endpoint.peername(), Some(&SocketAddress::Inet(target)));

        // Each datagram to the closed port brings one ICMP port unreachable back.
        for round in 0..2 {
            endpoint.send_connected(format!("ping {round}"));
            let err = rx.error().await;
            assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
            assert!(!endpoint.is_closing().await, "the endpoint stays open");
        }

        // Something starts listening there: the same endpoint now reaches it, both ways.
        let listener = UdpSocket::bind(target).await.expect("rebind the port");
        endpoint
            .send_to_acked(SendTo::connected("hello"))
            .await
            .expect("sent");
        let mut buf = [0; 16];
        let (n, from) = listener.recv_from(&mut buf).await.expect("recv");
        assert_eq!(&buf[..n], b"hello");
        listener.send_to(b"back", from).await.expect("reply");
        let (data, _) = rx.datagram().await;
        assert_eq!(&data[..], b"back");
        endpoint.close();
        assert!(rx.lost().await.is_none());
    })
    .await;
}

#[actix_rt::test]
async fn send_address_errors_are_refused_clearly_and_close_nothing() {
    deadline(async {
        let target = UdpSocket::bind("127.0.0.1:0").await.expect("target");
        let target_addr = target.local_addr().expect("address");
        let other = closed_udp_port().await;
        let (probe, mut rx) = Dgram::new();
        let (connected, _) = udp::connect(target_addr, || probe.handle())
            .await
            .expect("connect");
        rx.made().await;

        let err = connected
            .send_to_acked(SendTo::new("x", other))
            .await
            .expect_err("another address than the connected one");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            SendToError::of(&err),
            Some(&SendToError::NotConnectedAddress {
                given: SocketAddress::Inet(other),
                connected: SocketAddress::Inet(target_addr),
            })
        );
        assert!(err.to_string().contains(&other.to_string()), "{err}");
        // A fire-and-forget refusal is logged, and no datagram leaves.
        connected.send_to("y", other);
        // The connected address itself, or none, is fine.
        connected
            .send_to_acked(SendTo::new("one", target_addr))
            .await
            .expect("to the connected address");
        connected
            .send_to_acked(SendTo::connected("two"))
            .await
            .expect("to no address");
        let mut buf = [0; 16];
        for expected in [&b"one"[..], b"two"] {
            let n = target.recv(&mut buf).await.expect("recv");
            assert_eq!(&buf[..n], expected);
        }

        let (probe, mut unconnected_rx) = Dgram::new();
        let (unconnected, _) = udp::bind("127.0.0.1:0", || probe.handle())
            .await
            .expect("bind");
        unconnected_rx.made().await;
        let err = unconnected
            .send_to_acked(SendTo::connected("nowhere"))
            .await
            .expect_err("no address on an unconnected endpoint");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(SendToError::of(&err), Some(&SendToError::NoAddress));
        let unix_addr = SocketAddress::Unix(UnixAddress::Pathname("/tmp/x.sock".into()));
        let err = unconnected
            .send_to_acked(SendTo::new("x", unix_addr.clone()))
            .await
            .expect_err("a path for a UDP socket");
        assert_eq!(
            SendToError::of(&err),
            Some(&SendToError::WrongFamily(unix_addr))
        );

        // Both endpoints are still open and working, and no error event was raised for a
        // refusal: refusals are not socket errors.
        assert!(!connected.is_closing().await && !unconnected.is_closing().await);
        unconnected
            .send_to_acked(SendTo::new("fine", target_addr))
            .await
            .expect("still sends");
        let n = target.recv(&mut buf).await.expect("recv");
        assert_eq!(&buf[..n], b"fine");
        rx.assert_quiet(Duration::from_millis(100)).await;
        unconnected_rx.assert_quiet(Duration::from_millis(1)).await;
    })
    .await;
}

#[actix_rt::test]
async fn a_protocol_that_keeps_its_acks_holds_the_window_and_the_kernel_keeps_the_rest() {
    deadline(async {
        let (probe, mut rx) = Dgram::new();
        let probe = probe.holding_acks();
        let addr = probe.start();
        let (endpoint, _) = udp::bind("127.0.0.1:0", || {
            DatagramProtocolHandle::with_write_flow(addr.clone())
        })
        .await
        .expect("bind");
        rx.made().await;
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("peer");
        let to = endpoint.local_addr().expect("bound");
        for n in 0..100 {
            peer.send_to(&numbered(n, 100), to).await.expect("send");
        }
        for n in 0..32 {
            let (data, _) = rx.datagram().await;
            assert_eq!(check_numbered(&data, 100), n);
        }
        rx.assert_quiet(Duration::from_millis(200)).await;
        let held = stats(&endpoint).await;
        assert_eq!(held.deliveries, 32, "the read window: 32 in flight");
        assert_eq!(held.read_in_flight, 3200);

        addr.send(ReleaseAcks).await.expect("release");
        for n in 32..100 {
            let (data, _) = rx.datagram().await;
            assert_eq!(
                check_numbered(&data, 100),
                n,
                "the rest waited in the kernel"
            );
        }
        endpoint.close();
        rx.lost().await;
    })
    .await;
}

#[actix_rt::test]
async fn a_paused_endpoint_reads_nothing_and_the_kernel_drops_what_does_not_fit() {
    deadline(async {
        let (probe, mut rx) = Dgram::new();
        let (endpoint, _) = udp::bind("127.0.0.1:0", || probe.paused().handle())
            .await
            .expect("bind");
        rx.made().await;
        assert!(!endpoint.send(IsReading).await.expect("alive"));
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("peer");
        let to = endpoint.local_addr().expect("bound");
        // 20 MB: far more than any default receive buffer.
        let sent = 20_000u64;
        for n in 0..sent {
            peer.send_to(&numbered(n, 1000), to).await.expect("send");
        }
        rx.assert_quiet(Duration::from_millis(100)).await;
        let paused = stats(&endpoint).await;
        assert_eq!((paused.deliveries, paused.bytes_received), (0, 0));

        endpoint.resume_reading();
        let mut received = 0u64;
        let mut last = None;
        while let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(300), rx.0.recv()).await
        {
            let Seen::Datagram(data, _) = event else {
                panic!("expected datagrams, got {event:?}");
            };
            let n = check_numbered(&data, 1000);
            assert!(last.is_none_or(|last| n > last), "in order");
            last = Some(n);
            received += 1;
        }
        assert!(received > 0, "what the kernel kept is delivered");
        assert!(
            received < sent,
            "the kernel dropped what did not fit ({received} of {sent} kept)"
        );
        let after = stats(&endpoint).await;
        assert!(
            after.read_buffer_peak <= 32 * 1000,
            "never more than the window held by us: {after:?}"
        );
        endpoint.close();
        rx.lost().await;
    })
    .await;
}

#[actix_rt::test]
async fn a_datagram_longer_than_the_limit_is_reported_not_cut_short() {
    deadline(async {
        let (probe, mut rx) = Dgram::new();
        let (endpoint, _) = udp::Endpoint::new()
            .local_addr("127.0.0.1:0".parse().expect("address"))
            .config(DatagramConfig::default().max_datagram_size(1000))
            .start(|| probe.handle())
            .expect("start");
        rx.made().await;
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("peer");
        let to = endpoint.local_addr().expect("bound");
        peer.send_to(&bytes_of(1000), to).await.expect("send");
        peer.send_to(&bytes_of(1001), to).await.expect("send");
        peer.send_to(&bytes_of(10), to).await.expect("send");
        assert_eq!(rx.datagram().await.0.len(), 1000, "the limit itself fits");
        let err = rx.error().await;
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("1000-byte limit"), "{err}");
        assert_eq!(rx.datagram().await.0.len(), 10, "the endpoint reads on");
        endpoint.close();
        rx.lost().await;
    })
    .await;
}

/// A connected pair of Unix datagram sockets: one an endpoint with a probe, the other a plain
/// tokio socket with a small receive queue.
fn unix_pair(config: DatagramConfig) -> (DatagramHandle, DgramRx, UnixDatagram) {
    let (ours, theirs) = std::os::unix::net::UnixDatagram::pair().expect("pair");
    let (probe, rx) = Dgram::new();
    let (endpoint, _) = unix_datagram::from_std(ours, config, || probe.handle()).expect("start");
    theirs.set_nonblocking(true).expect("nonblocking");
    (endpoint, rx, UnixDatagram::from_std(theirs).expect("tokio"))
}

#[actix_rt::test]
async fn a_full_unix_peer_queues_datagrams_pauses_writing_and_loses_none() {
    deadline(async {
        let (endpoint, mut rx, peer) = unix_pair(DatagramConfig::default());
        rx.made().await;
        // Unix datagram sockets block once the receiver holds `max_dgram_qlen` (10 by default)
        // datagrams: the rest queue in the endpoint.
        let count = 200u64;
        let mut receipts = Vec::new();
        for n in 0..count {
            receipts.push(endpoint.send_to_acked(SendTo::connected(numbered(n, 1000))));
        }
        match rx.next().await {
            Seen::PauseWriting => {}
            other => panic!("expected PauseWriting, got {other:?}"),
        }
        let queued = endpoint.send(GetWriteBufferSize).await.expect("alive");
        assert!(
            queued > 64 * 1024,
            "{queued} bytes queued past the high-water mark"
        );

        let mut buf = [0; 2000];
        for expected in 0..count {
            let n = peer.recv(&mut buf).await.expect("recv");
            assert_eq!(check_numbered(&buf[..n], 1000), expected);
        }
        match rx.next().await {
            Seen::ResumeWriting => {}
            other => panic!("expected ResumeWriting, got {other:?}"),
        }
        for receipt in receipts {
            receipt.await.expect("every datagram was sent");
        }
        assert_eq!(endpoint.send(GetWriteBufferSize).await.expect("alive"), 0);
        let totals = stats(&endpoint).await;
        assert_eq!(totals.bytes_sent, count * 1000);
        assert!(totals.write_buffer_peak > 64 * 1024);
        endpoint.close();
        rx.lost().await;
    })
    .await;
}

#[actix_rt::test]
async fn close_sends_what_is_queued_and_abort_drops_it() {
    deadline(async {
        // Close: the peer reads after the close, and still gets everything.
        let (endpoint, mut rx, peer) = unix_pair(DatagramConfig::default());
        rx.made().await;
        // More than the peer's queue holds, so that some wait in the endpoint's.
        for n in 0..200 {
            endpoint.send_connected(numbered(n, 1000));
        }
        assert!(endpoint.send(GetWriteBufferSize).await.expect("alive") > 0);
        endpoint.close();
        assert!(endpoint.is_closing().await);
        let refused = endpoint
            .send_to_acked(SendTo::connected("late"))
            .await
            .expect_err("refused after Close");
        assert_eq!(WriteError::of(&refused), Some(WriteError::Closing));
        let mut buf = [0; 2000];
        for expected in 0..200 {
            let n = peer.recv(&mut buf).await.expect("recv");
            assert_eq!(check_numbered(&buf[..n], 1000), expected);
        }
        assert!(rx.lost().await.is_none());

        // Abort: what is queued fails, and nothing more reaches the peer.
        let (endpoint, mut rx, peer) = unix_pair(DatagramConfig::default());
        rx.made().await;
        let receipts: Vec<_> = (0..200)
            .map(|n| endpoint.send_to_acked(SendTo::connected(numbered(n, 1000))))
            .collect();
        endpoint.abort();
        let mut sent = 0;
        let mut aborted = 0;
        for receipt in receipts {
            match receipt.await {
                Ok(()) => sent += 1,
                Err(err) => {
                    assert_eq!(WriteError::of(&err), Some(WriteError::Aborted), "{err}");
                    aborted += 1;
                }
            }
        }
        assert!(aborted > 0, "the queue was dropped ({sent} sent first)");
        assert!(rx.lost().await.is_none());
        let mut received = 0;
        while peer.try_recv(&mut buf).is_ok() {
            received += 1;
        }
        assert_eq!(
            received, sent,
            "exactly the datagrams reported sent arrived"
        );
    })
    .await;
}

#[actix_rt::test]
async fn close_gives_up_on_a_peer_that_never_reads_after_the_close_timeout() {
    deadline(async {
        let config = DatagramConfig::default().close_timeout(Duration::from_millis(200));
        let (endpoint, mut rx, _peer) = unix_pair(config);
        rx.made().await;
        let receipts: Vec<_> = (0..200)
            .map(|n| endpoint.send_to_acked(SendTo::connected(numbered(n, 1000))))
            .collect();
        endpoint.close();
        assert!(rx.lost().await.is_none());
        let mut stalled = 0;
        for receipt in receipts {
            if let Err(err) = receipt.await {
                assert!(
                    matches!(WriteError::of(&err), Some(WriteError::Stalled(_))),
                    "{err}"
                );
                stalled += 1;
            }
        }
        assert!(stalled > 0, "the datagrams the peer never took failed");
    })
    .await;
}

/// What descriptor `fd` of this process is (`socket:[INODE]`), if it is open.
fn socket_inode(fd: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .ok()
        .map(|target| target.display().to_string())
}

#[actix_rt::test]
async fn a_stopped_protocol_aborts_its_endpoint_and_releases_the_socket() {
    deadline(async {
        let (probe, mut rx) = Dgram::new();
        let addr = probe.start();
        let (endpoint, _) = udp::bind("127.0.0.1:0", || DatagramProtocolHandle::new(addr.clone()))
            .await
            .expect("bind");
        rx.made().await;
        let fd = endpoint.socket().await.expect("socket").fd;
        // The socket's inode, not a count of descriptors: other tests open sockets meanwhile.
        let ours = socket_inode(fd).expect("the endpoint's descriptor is open");
        addr.do_send(Stop);
        eventually(
            "the idle endpoint notices its protocol is gone",
            async || !endpoint.is_alive(),
        )
        .await;
        eventually("the socket is released", async || {
            socket_inode(fd) != Some(ours.clone())
        })
        .await;
    })
    .await;
}

#[actix_rt::test]
async fn set_protocol_hands_the_endpoint_over_and_the_old_protocol_hears_nothing_more() {
    deadline(async {
        let (first, mut first_rx) = Dgram::new();
        let (endpoint, _) = udp::bind("127.0.0.1:0", || first.handle())
            .await
            .expect("bind");
        first_rx.made().await;
        let peer = UdpSocket::bind("127.0.0.1:0").await.expect("peer");
        let to = endpoint.local_addr().expect("bound");
        peer.send_to(b"to the first", to).await.expect("send");
        assert_eq!(&first_rx.datagram().await.0[..], b"to the first");

        let (second, mut second_rx) = Dgram::new();
        let second = second.handle();
        let previous = endpoint
            .send(SetDatagramProtocol::new(second.clone()))
            .await
            .expect("switched");
        assert!(!previous.same_protocol(&second));
        let made = second_rx.made().await;
        assert!(made.same_transport(&endpoint));
        peer.send_to(b"to the second", to).await.expect("send");
        assert_eq!(&second_rx.datagram().await.0[..], b"to the second");
        first_rx.assert_quiet(Duration::from_millis(100)).await;

        endpoint.close();
        assert!(second_rx.lost().await.is_none());
        first_rx.assert_quiet(Duration::from_millis(100)).await;
    })
    .await;
}

#[actix_rt::test]
async fn reuse_port_lets_two_endpoints_share_a_port_and_without_it_the_second_fails() {
    deadline(async {
        let (a, mut a_rx) = Dgram::new();
        let (first, _) = udp::Endpoint::new()
            .local_addr("127.0.0.1:0".parse().expect("address"))
            .reuse_port(true)
            .start(|| a.handle())
            .expect("first");
        a_rx.made().await;
        let shared = first.local_addr().expect("bound");
        let (b, mut b_rx) = Dgram::new();
        let (second, _) = udp::Endpoint::new()
            .local_addr(shared)
            .reuse_port(true)
            .start(|| b.handle())
            .expect("second on the same port");
        b_rx.made().await;
        assert_eq!(second.local_addr(), Some(shared));

        let err = udp::Endpoint::new()
            .local_addr(shared)
            .start(|| Dgram::new().0.handle())
            .expect_err("the port is taken");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&shared.to_string()), "{err}");
        first.close();
        second.close();
        a_rx.lost().await;
        b_rx.lost().await;
    })
    .await;
}

#[actix_rt::test]
async fn allow_broadcast_makes_the_remote_address_a_default_destination_without_connecting() {
    deadline(async {
        let target = UdpSocket::bind("127.0.0.1:0").await.expect("target");
        let target_addr = target.local_addr().expect("address");
        let stranger = UdpSocket::bind("127.0.0.1:0").await.expect("stranger");
        let (probe, mut rx) = Dgram::new();
        let (endpoint, _) = udp::Endpoint::new()
            .remote_addr(target_addr)
            .allow_broadcast(true)
            .start(|| probe.handle())
            .expect("start");
        rx.made().await;
        assert_eq!(endpoint.peername(), None, "not connected");
        let info = endpoint.socket().await.expect("socket info");
        assert_eq!(info.kind, SocketKind::Datagram);

        endpoint
            .send_to_acked(SendTo::connected("default"))
            .await
            .expect("to the default destination");
        let mut buf = [0; 16];
        let (n, from) = target.recv_from(&mut buf).await.expect("recv");
        assert_eq!(&buf[..n], b"default");
        // Not connected: anyone may send to it.
        stranger.send_to(b"hi", from).await.expect("send");
        let (data, sender) = rx.datagram().await;
        assert_eq!(&data[..], b"hi");
        assert_eq!(sender.as_inet(), stranger.local_addr().ok());
        endpoint.close();
        rx.lost().await;
    })
    .await;
}

#[actix_rt::test]
async fn extra_info_names_both_ends_and_the_socket() {
    deadline(async {
        let target = UdpSocket::bind("127.0.0.1:0").await.expect("target");
        let target_addr = target.local_addr().expect("address");
        let (probe, mut rx) = Dgram::new();
        let (endpoint, _) = udp::connect(target_addr, || probe.handle())
            .await
            .expect("connect");
        rx.made().await;
        let local = endpoint.local_addr().expect("bound by connect");
        assert_eq!(
            endpoint.get_extra_info(keys::SOCKNAME).await,
            Some(ExtraInfo::Address(SocketAddress::Inet(local)))
        );
        assert_eq!(
            endpoint.get_extra_info(keys::PEERNAME).await,
            Some(ExtraInfo::Address(SocketAddress::Inet(target_addr)))
        );
        let socket = endpoint.socket().await.expect("socket");
        assert_eq!(socket.kind, SocketKind::Datagram);
        assert!(endpoint.get_extra_info(keys::CIPHER).await.is_none());
        let limits = endpoint
            .send(SetWriteBufferLimits {
                high: Some(10),
                low: Some(20),
            })
            .await
            .expect("alive");
        assert!(limits.is_err(), "low above high is refused");
        endpoint.close();
        rx.lost().await;
    })
    .await;
}

#[actix_rt::test]
async fn a_unix_peer_that_goes_away_is_an_error_received_not_the_end() {
    deadline(async {
        let (endpoint, mut rx, peer) = unix_pair(DatagramConfig::default());
        rx.made().await;
        drop(peer);
        // Linux refuses the first datagram after the peer closed, then says the socket is no
        // longer connected: both reach the sender and `ErrorReceived`, asyncio's behaviour.
        for expected in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::NotConnected,
        ] {
            let err = endpoint
                .send_to_acked(SendTo::connected("anyone?"))
                .await
                .expect_err("nobody at the other end");
            assert_eq!(err.kind(), expected, "{err}");
            match rx.next().await {
                Seen::Error(seen) => assert_eq!(seen.raw_os_error(), err.raw_os_error()),
                other => panic!("expected ErrorReceived, got {other:?}"),
            }
        }
        assert!(!endpoint.is_closing().await, "the endpoint stays open");
    })
    .await;
}

/// Linux's "message too long".
const EMSGSIZE: i32 = 90;

#[actix_rt::test]
async fn a_datagram_too_large_to_send_is_an_error_received_and_the_next_one_goes() {
    deadline(async {
        let target = UdpSocket::bind("127.0.0.1:0").await.expect("target");
        let (probe, mut rx) = Dgram::new();
        let (endpoint, _) = udp::connect(target.local_addr().expect("address"), || probe.handle())
            .await
            .expect("connect");
        rx.made().await;
        // Fire-and-forget: the error reaches the protocol.
        endpoint.send_connected(bytes_of(MAX_UDP_V4 + 1));
        let err = rx.error().await;
        assert_eq!(err.raw_os_error(), Some(EMSGSIZE), "{err}");
        // Acknowledged: the reply carries it too.
        let reply = endpoint
            .send_to_acked(SendTo::connected(bytes_of(MAX_UDP_V4 + 1)))
            .await
            .expect_err("too large");
        assert_eq!(reply.raw_os_error(), Some(EMSGSIZE), "{reply}");
        rx.error().await;
        endpoint
            .send_to_acked(SendTo::connected("small"))
            .await
            .expect("the endpoint sends on");
        let mut buf = [0; 16];
        let n = target.recv(&mut buf).await.expect("recv");
        assert_eq!(&buf[..n], b"small");
        endpoint.close();
        assert!(rx.lost().await.is_none());
    })
    .await;
}

#[actix_rt::test]
async fn an_endpoint_with_both_addresses_is_bound_where_asked_and_connected() {
    deadline(async {
        let target = UdpSocket::bind("127.0.0.1:0").await.expect("target");
        let target_addr = target.local_addr().expect("address");
        let local = closed_udp_port().await;
        let (probe, mut rx) = Dgram::new();
        let (endpoint, _) = udp::Endpoint::new()
            .local_addr(local)
            .remote_addr(target_addr)
            .start(|| probe.handle())
            .expect("start");
        rx.made().await;
        assert_eq!(endpoint.local_addr(), Some(local));
        assert_eq!(endpoint.peername(), Some(&SocketAddress::Inet(target_addr)));
        target.send_to(b"from the peer", local).await.expect("send");
        let (data, from) = rx.datagram().await;
        assert_eq!(
            (&data[..], from),
            (&b"from the peer"[..], SocketAddress::Inet(target_addr))
        );
        // A connected socket hears only its peer.
        let stranger = UdpSocket::bind("127.0.0.1:0").await.expect("stranger");
        stranger.send_to(b"ignored", local).await.expect("send");
        rx.assert_quiet(Duration::from_millis(100)).await;
        endpoint.close();
        rx.lost().await;
    })
    .await;
}

#[actix_rt::test]
async fn datagrams_sent_before_the_endpoint_started_keep_their_order() {
    deadline(async {
        // Before the endpoint's actor runs: past 16 messages an actix mailbox makes `send` wait
        // to be polled, behind the later `Close`, unless the transport unbounds it at creation.
        let (endpoint, mut rx, peer) = unix_pair(DatagramConfig::default());
        let receipts: Vec<_> = (0..100)
            .map(|n| endpoint.send_to_acked(SendTo::connected(numbered(n, 100))))
            .collect();
        endpoint.close();
        let mut buf = [0; 200];
        for expected in 0..100 {
            let n = tokio::time::timeout(Duration::from_secs(10), peer.recv(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("datagram {expected} never arrived"))
                .expect("recv");
            assert_eq!(check_numbered(&buf[..n], 100), expected);
        }
        for (n, receipt) in receipts.into_iter().enumerate() {
            receipt
                .await
                .unwrap_or_else(|err| panic!("datagram {n}: {err}"));
        }
        rx.made().await;
        assert!(rx.lost().await.is_none());
    })
    .await
}

/// A factory that panics fails the bind with a [`FactoryPanicked`](switchboard::FactoryPanicked)
/// error instead of unwinding through the caller, and releases the socket: the same UDP port and
/// Unix path can be bound again at once, and the arbiter goes on.
#[actix_rt::test]
async fn a_panicking_factory_fails_the_bind_and_releases_the_socket() {
    deadline(async {
        let panicking = || -> Addr<Dgram> { panic!("factory told to panic") };
        let told = |err: &io::Error| {
            switchboard::FactoryPanicked::of(err).map(|err| err.message().to_owned())
        };

        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = udp::bind(port, panicking)
            .await
            .expect_err("the factory panicked");
        assert_eq!(
            told(&err).as_deref(),
            Some("factory told to panic"),
            "{err}"
        );
        let (probe, _events) = Dgram::new();
        let (endpoint, _) = udp::bind(port, || probe.start())
            .await
            .expect("the port is free again");
        endpoint.abort();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("endpoint.sock");
        let err = unix_datagram::bind(&path, panicking).expect_err("the factory panicked");
        assert_eq!(
            told(&err).as_deref(),
            Some("factory told to panic"),
            "{err}"
        );
        assert!(
            !path.exists(),
            "the socket file of a failed bind is removed"
        );
        let (probe, _events) = Dgram::new();
        let (endpoint, _) =
            unix_datagram::bind(&path, || probe.start()).expect("the path is free again");
        endpoint.abort();
    })
    .await
}
