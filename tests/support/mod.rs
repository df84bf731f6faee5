//! Helpers shared by the integration tests: connected pairs and servers of each transport kind
//! with an independent raw peer (plain tokio sockets, not switchboard). The probe protocol that
//! records every event is the library's own (`switchboard::testing::Probe`), so the tests
//! exercise what users get.
#![allow(dead_code, unreachable_pub, unused_imports)]

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
pub use switchboard::testing::{
    Event, PendingProbe, Probe, ProbeEvents as ProbeRx, ReleaseAcks, StopProbe,
};
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
    /// The peer's own address, for TCP (what the server logs as the connection's peer).
    pub fn local_inet_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Peer::Tcp(stream) => stream.local_addr().ok(),
            Peer::Unix(_) => None,
        }
    }

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
    let (probe, mut events) = options.probe();
    let (transport, probe, peer) = pair(kind, StreamConfig::default(), || probe.start()).await;
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

/// How a probe behaves (the fields of [`ProbeBuilder`], as a struct the tests fill in).
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
}

impl ProbeOptions {
    /// A probe that keeps every delivery's acknowledgement until [`ReleaseAcks`].
    pub fn holding_acks() -> Self {
        ProbeOptions {
            hold_acks: true,
            ..ProbeOptions::default()
        }
    }

    /// The library's probe with these options, not started yet, and its events.
    pub fn probe(self) -> (PendingProbe, ProbeRx) {
        let mut builder = Probe::builder().timeout(TIMEOUT);
        if self.keep_open_on_eof {
            builder = builder.keep_open_on_eof();
        }
        if self.hold_acks {
            builder = builder.hold_acks();
        }
        if self.pause_on_made {
            builder = builder.pause_on_made();
        }
        if let Some(greeting) = self.greeting {
            builder = builder.greeting(greeting);
        }
        builder.build()
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
        let (probe, probe_rx) = options.clone().probe();
        let _ = tx.send(probe_rx);
        probe.start()
    };
    (factory, rx)
}

/// A protocol that panics in its handler when a chunk contains `boom`.
pub struct Fragile;

impl Actor for Fragile {
    type Context = Context<Self>;
}

impl Handler<ConnectionMade> for Fragile {
    type Result = ();
    fn handle(&mut self, _: ConnectionMade, _: &mut Context<Self>) {}
}

impl Handler<DataReceived> for Fragile {
    type Result = ();
    fn handle(&mut self, msg: DataReceived, _: &mut Context<Self>) {
        assert!(
            !msg.data.windows(4).any(|window| window == b"boom"),
            "told to panic on boom"
        );
    }
}

impl Handler<ConnectionLost> for Fragile {
    type Result = ();
    fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
        ctx.stop();
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

/// What the library logs at `WARN` and above in this test process, as text.
///
/// Captured by a global `tracing` subscriber installed on first use, so the log of every thread
/// (worker arbiters included) lands here. Tests look for their own lines by something unique to
/// them, such as a peer's address, as other tests in the same process log too.
pub fn captured_logs() -> String {
    use std::sync::OnceLock;
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    let logs = LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global tracing subscriber in the tests");
        logs
    });
    String::from_utf8_lossy(&logs.lock().unwrap()).into_owned()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
