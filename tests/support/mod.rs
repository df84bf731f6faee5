//! Helpers shared by the integration tests: connected pairs and servers of each transport kind
//! with an independent raw peer (plain tokio sockets, not switchboard), and a probe protocol
//! that records every event it receives, in order.
#![allow(dead_code, unreachable_pub)]

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use switchboard::{
    ProtocolBuilder, UnixAddress,
    prelude::*,
    server::ServerHandle,
    stream::{self, StreamConfig},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream, UnixStream},
    sync::mpsc,
};

/// How long any single expected event may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a test body with a deadline, so a hang fails instead of stalling CI.
pub async fn deadline<F: Future>(body: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(120), body).await {
        Ok(output) => output,
        Err(_) => panic!("test did not finish within 120 s"),
    }
}

/// Generates one `#[actix_rt::test]` per transport kind for each `async fn name(kind: Kind)`.
#[macro_export]
macro_rules! for_each_kind {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[actix_rt::test]
            async fn tcp() {
                $crate::support::deadline(super::$name($crate::support::Kind::Tcp)).await
            }

            #[actix_rt::test]
            async fn unix() {
                $crate::support::deadline(super::$name($crate::support::Kind::Unix)).await
            }
        }
    )*};
}

/// The stream transport kinds every guarantee is tested over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Unix,
}

/// The other end of a connection: a plain tokio socket.
#[derive(Debug)]
pub enum Peer {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Peer {
    /// Closes with a reset where the kind has one (TCP); otherwise just closes.
    pub fn reset(self) {
        if let Peer::Tcp(stream) = &self {
            stream.set_zero_linger().expect("SO_LINGER 0");
        }
        drop(self);
    }

    /// Shuts the write side down (sends FIN).
    pub async fn shutdown_write(&mut self) {
        self.shutdown().await.expect("shutdown(SHUT_WR)");
    }

    /// Reads until EOF; the error if the connection fails instead.
    pub async fn read_to_end_or_error(&mut self) -> (Vec<u8>, Option<io::Error>) {
        let mut data = Vec::new();
        let mut chunk = vec![0; 64 * 1024];
        loop {
            match self.read(&mut chunk).await {
                Ok(0) => return (data, None),
                Ok(n) => data.extend_from_slice(&chunk[..n]),
                Err(err) => return (data, Some(err)),
            }
        }
    }

    /// Reads exactly `n` bytes, failing the test after [`TIMEOUT`].
    pub async fn read_n(&mut self, n: usize) -> Vec<u8> {
        let mut data = vec![0; n];
        tokio::time::timeout(TIMEOUT, self.read_exact(&mut data))
            .await
            .expect("peer read timed out")
            .expect("peer read failed");
        data
    }
}

impl AsyncRead for Peer {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Peer::Tcp(stream) => Pin::new(stream).poll_read(cx, buf),
            Peer::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Peer {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Peer::Tcp(stream) => Pin::new(stream).poll_write(cx, buf),
            Peer::Unix(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Peer::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            Peer::Unix(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Peer::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            Peer::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
        }
    }
}

/// A switchboard transport of `kind` on the current arbiter, attached to what `protocol` makes,
/// and a raw peer at the other end.
pub async fn pair<P: IntoProtocol>(
    kind: Kind,
    config: StreamConfig,
    protocol: impl FnOnce() -> P,
) -> (TransportHandle, P::Output, Peer) {
    match kind {
        Kind::Tcp => {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("local_addr");
            let (peer, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
            let (ours, _) = accepted.expect("accept");
            ours.set_nodelay(true).expect("nodelay");
            let (transport, output) = stream::spawn(ours, config, protocol);
            (transport, output, Peer::Tcp(peer.expect("connect")))
        }
        Kind::Unix => {
            let (ours, peer) = UnixStream::pair().expect("socketpair");
            let (transport, output) = stream::spawn(ours, config, protocol);
            (transport, output, Peer::Unix(peer))
        }
    }
}

/// A [`Probe`] with `options` attached to a transport of `kind` (default settings), with its
/// `ConnectionMade` already seen: the transport, the probe, the raw peer and the probe's events.
pub async fn probed(
    kind: Kind,
    options: ProbeOptions,
) -> (TransportHandle, Addr<Probe>, Peer, ProbeRx) {
    let (probe, mut events) = Probe::new(options);
    let (transport, probe, peer) = pair(kind, StreamConfig::default(), || probe.start_full()).await;
    events.made().await;
    (transport, probe, peer, events)
}

/// A server of `kind` on a free address (TCP) or a fresh temp path (Unix).
pub struct Served {
    pub server: ServerHandle,
    pub kind: Kind,
    _dir: Option<tempfile::TempDir>,
}

impl Served {
    pub async fn start<F, P>(kind: Kind, options: ServerOptions, factory: F) -> Served
    where
        F: Fn() -> P + Send + Sync + 'static,
        P: IntoProtocol + 'static,
    {
        match kind {
            Kind::Tcp => Served {
                server: tcp::serve_with("127.0.0.1:0", options, factory)
                    .await
                    .expect("serve"),
                kind,
                _dir: None,
            },
            Kind::Unix => {
                let dir = tempfile::tempdir().expect("tempdir");
                let server = unix::serve_with(dir.path().join("server.sock"), options, factory)
                    .await
                    .expect("serve");
                Served {
                    server,
                    kind,
                    _dir: Some(dir),
                }
            }
        }
    }

    /// Connects a raw peer.
    pub async fn connect_raw(&self) -> io::Result<Peer> {
        match &self.server.addresses()[0] {
            SocketAddress::Inet(addr) => TcpStream::connect(addr).await.map(Peer::Tcp),
            SocketAddress::Unix(UnixAddress::Pathname(path)) => {
                UnixStream::connect(path).await.map(Peer::Unix)
            }
            other => panic!("unexpected server address {other:?}"),
        }
    }

    /// Connects a switchboard client transport.
    pub async fn connect<P: IntoProtocol>(
        &self,
        protocol: impl FnOnce() -> P,
    ) -> io::Result<(TransportHandle, P::Output)> {
        match &self.server.addresses()[0] {
            SocketAddress::Inet(addr) => tcp::connect(*addr, protocol).await,
            SocketAddress::Unix(UnixAddress::Pathname(path)) => unix::connect(path, protocol).await,
            other => panic!("unexpected server address {other:?}"),
        }
    }
}

/// What a [`Probe`] saw, in order.
#[derive(Debug)]
pub enum Event {
    Made(TransportHandle),
    Data(Bytes),
    Eof,
    Lost(Option<io::Error>),
    PauseWriting,
    ResumeWriting,
}

impl Event {
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

/// How a probe behaves.
#[derive(Debug, Clone, Default)]
pub struct ProbeOptions {
    /// Answer `EofReceived` with `keep_open()`.
    pub keep_open_on_eof: bool,
    /// Keep every `DataReceived` acknowledgement until [`ReleaseAcks`].
    pub hold_acks: bool,
    /// Send `PauseReading` from the `ConnectionMade` handler.
    pub pause_on_made: bool,
    /// Write these bytes from the `ConnectionMade` handler.
    pub greeting: Option<Bytes>,
    /// Panic when a chunk contains this byte string.
    pub panic_on: Option<Bytes>,
}

impl ProbeOptions {
    /// A probe that keeps every delivery's acknowledgement until [`ReleaseAcks`].
    pub fn holding_acks() -> Self {
        ProbeOptions {
            hold_acks: true,
            ..ProbeOptions::default()
        }
    }
}

/// Waits until the transport holds at least `n` bytes read and not yet delivered.
pub async fn wait_until_buffered(transport: &TransportHandle, n: usize) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while transport
        .send(GetStats)
        .await
        .expect("transport alive")
        .read_buffer_size
        < n
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} bytes never buffered"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A protocol that forwards every event to a channel the test reads, and handles every optional
/// event.
pub struct Probe {
    events: mpsc::UnboundedSender<Event>,
    options: ProbeOptions,
    transport: Option<TransportHandle>,
    held: Vec<Ack>,
}

/// The test's end of a probe.
pub struct ProbeRx {
    events: mpsc::UnboundedReceiver<Event>,
    pub seen: Vec<&'static str>,
}

impl Probe {
    pub fn new(options: ProbeOptions) -> (Probe, ProbeRx) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Probe {
                events: tx,
                options,
                transport: None,
                held: Vec::new(),
            },
            ProbeRx {
                events: rx,
                seen: Vec::new(),
            },
        )
    }

    /// Starts the probe on the current arbiter; returns what a transport attaches to.
    pub fn start_full(self) -> ProtocolBuilder<Probe, switchboard::Handled, switchboard::Handled> {
        ProtocolHandle::builder(self.start())
            .eof_received()
            .write_flow()
    }

    fn record(&self, event: Event) {
        let _ = self.events.send(event);
    }
}

/// A probe factory for servers: every connection gets a fresh probe, whose receiving end
/// arrives on the returned channel.
pub fn probe_factory(
    options: ProbeOptions,
) -> (
    impl Fn() -> ProtocolBuilder<Probe, switchboard::Handled, switchboard::Handled>
    + Send
    + Sync
    + 'static,
    mpsc::UnboundedReceiver<ProbeRx>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let factory = move || {
        let (probe, probe_rx) = Probe::new(options.clone());
        let _ = tx.send(probe_rx);
        probe.start_full()
    };
    (factory, rx)
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
        if let Some(needle) = &self.options.panic_on
            && msg.data.windows(needle.len()).any(|w| w == &needle[..])
        {
            panic!("probe told to panic on {needle:?}");
        }
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

/// Releases every held acknowledgement; with `keep_holding: false` the probe stops holding.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReleaseAcks {
    pub keep_holding: bool,
}

impl Handler<ReleaseAcks> for Probe {
    type Result = ();

    fn handle(&mut self, msg: ReleaseAcks, _: &mut Context<Self>) {
        self.options.hold_acks = msg.keep_holding;
        self.held.clear();
    }
}

/// Stops the probe actor (to test the death pact).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopProbe;

impl Handler<StopProbe> for Probe {
    type Result = ();

    fn handle(&mut self, _: StopProbe, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// Runs a closure inside the probe, with its transport (to send from inside the actor).
pub struct WithTransport(pub Box<dyn FnOnce(&TransportHandle) + Send>);

impl Message for WithTransport {
    type Result = ();
}

impl Handler<WithTransport> for Probe {
    type Result = ();

    fn handle(&mut self, msg: WithTransport, _: &mut Context<Self>) {
        let transport = self.transport.as_ref().expect("probe not connected");
        (msg.0)(transport);
    }
}

impl ProbeRx {
    /// The next event; fails the test after [`TIMEOUT`]. `None` once the probe has stopped and
    /// every event was read.
    pub async fn next(&mut self) -> Option<Event> {
        let event = tokio::time::timeout(TIMEOUT, self.events.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("no event within {TIMEOUT:?}; seen so far: {:?}", self.seen)
            });
        if let Some(event) = &event {
            self.seen.push(event.name());
        }
        event
    }

    /// An event already queued, without waiting.
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
            other => panic!("expected Made, got {other:?}"),
        }
    }

    /// Collects `DataReceived` bytes until `n` arrived, skipping write-flow edges; fails on any
    /// other event.
    pub async fn data(&mut self, n: usize) -> Vec<u8> {
        let mut data = Vec::with_capacity(n);
        while data.len() < n {
            match self.next().await {
                Some(Event::Data(chunk)) => data.extend_from_slice(&chunk),
                Some(Event::PauseWriting | Event::ResumeWriting) => {}
                other => panic!(
                    "expected data ({} of {n} bytes so far), got {other:?}",
                    data.len()
                ),
            }
        }
        assert_eq!(data.len(), n, "more bytes than expected");
        data
    }

    /// Collects data until `Eof`, skipping write-flow edges, and returns the bytes.
    pub async fn data_until_eof(&mut self) -> Vec<u8> {
        let mut data = Vec::new();
        loop {
            match self.next().await {
                Some(Event::Data(chunk)) => data.extend_from_slice(&chunk),
                Some(Event::PauseWriting | Event::ResumeWriting) => {}
                Some(Event::Eof) => return data,
                other => panic!("expected data or Eof, got {other:?}"),
            }
        }
    }

    /// Expects `ConnectionLost` next, then nothing more, ever.
    pub async fn lost(&mut self) -> Option<io::Error> {
        let err = match self.next().await {
            Some(Event::Lost(err)) => err,
            other => panic!("expected Lost, got {other:?}"),
        };
        self.assert_ended().await;
        err
    }

    /// Skips data and flow events until `ConnectionLost`, then expects nothing more.
    pub async fn until_lost(&mut self) -> Option<io::Error> {
        loop {
            match self.next().await {
                Some(Event::Lost(err)) => {
                    self.assert_ended().await;
                    return err;
                }
                Some(Event::Made(_)) => panic!("a second ConnectionMade"),
                Some(_) => {}
                None => panic!("probe stopped without ConnectionLost"),
            }
        }
    }

    /// Asserts the probe stopped and nothing else was delivered.
    pub async fn assert_ended(&mut self) {
        if let Some(event) = self.next().await {
            panic!("event after ConnectionLost: {event:?}");
        }
    }

    /// Asserts no event arrives for `quiet`.
    pub async fn assert_quiet(&mut self, quiet: Duration) {
        if let Ok(Some(event)) = tokio::time::timeout(quiet, self.events.recv()).await {
            panic!("unexpected event {event:?}");
        }
    }
}

/// A deterministic byte pattern: byte `i` of a stream, so large transfers can be checked
/// without keeping them.
pub fn pattern_byte(i: u64) -> u8 {
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i >> 7);
    (x >> 24) as u8
}

pub fn pattern(start: u64, len: usize) -> Bytes {
    let mut buf = BytesMut::with_capacity(len);
    for i in 0..len as u64 {
        buf.extend_from_slice(&[pattern_byte(start + i)]);
    }
    buf.freeze()
}

/// Counts this process's open file descriptors.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// A shared log a test's protocols append to.
pub type Log<T> = Arc<Mutex<Vec<T>>>;

pub fn log<T>() -> Log<T> {
    Arc::new(Mutex::new(Vec::new()))
}

/// Writes all of `data` from the peer, then keeps the peer.
pub async fn send_all(peer: &mut Peer, data: &[u8]) {
    tokio::time::timeout(TIMEOUT, peer.write_all(data))
        .await
        .expect("peer write timed out")
        .expect("peer write failed");
}
