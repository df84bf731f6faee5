//! Helpers shared by the integration tests: connected pairs and servers of each transport kind
//! with an independent peer (plain tokio sockets and tokio-openssl, not switchboard; for the mock,
//! its script). The probe protocol that records every event is the library's own
//! (`switchboard::testing::Probe`), so the tests exercise what users get.
//!
//! The guarantee suites (`tests/stream_*.rs`) run one body per [`Kind`]: [`pair`] and [`probed`]
//! start a transport of that kind and hand back its [`Peer`], which sends (`write_all`), reads
//! ([`Peer::read_n`], [`Peer::read_to_end_or_error`]), half-closes ([`Peer::shutdown_write`]),
//! closes ([`Peer::close`]), resets ([`Peer::reset`]) and stops reading ([`Peer::stop_reading`])
//! whatever the kind.
#![allow(dead_code, unreachable_pub, unused_imports)]

pub mod tls;

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
use futures::FutureExt;
pub use switchboard::testing::{
    Ending, Event, MockTransport, PendingProbe, Probe, ProbeEvents as ProbeRx, ReleaseAcks, Sent,
    StartedProbe, StopProbe,
};
use switchboard::{
    UnixAddress, WriteBufferLimits,
    prelude::*,
    server::ServerHandle,
    stream::{self, StreamConfig},
    tls::{MaybeTls, SelfSigned},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream, UnixStream},
    sync::mpsc,
};
use tokio_openssl::SslStream;

/// How long any single expected event may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a test body with a deadline, so a hang fails instead of stalling CI.
pub async fn deadline<F: Future>(body: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(120), body).await {
        Ok(output) => output,
        Err(_) => panic!("test did not finish within 120 s"),
    }
}

/// Implements, for a raw test protocol, the stream events it does not look at, with empty
/// handlers: a dropped `EofReceived` closes (asyncio's default), write-flow edges are ignored (the
/// maximum write buffer still bounds the protocol), and a `TimedOut` ignored lets the transport
/// end the connection when the timeout runs out again. A raw protocol receives every event
/// (`RawProtocol`), so a test that handles an event must not list it here: the impls would
/// conflict.
#[macro_export]
macro_rules! ignore_events {
    ($actor:ty: $($event:ident),+ $(,)?) => {$(
        impl actix::Handler<switchboard::$event> for $actor {
            type Result = ();
            fn handle(&mut self, _: switchboard::$event, _: &mut actix::Context<Self>) {}
        }
    )+};
}

/// Generates, for each `async fn name(kind: Kind)`, a module `name` with one `#[actix_rt::test]`
/// per kind: `[tcp, unix, tls, mock] => name, ...` lists the kinds, and a body that needs what a
/// kind cannot do is listed without it, with a comment saying why.
#[macro_export]
macro_rules! for_each_kind {
    ($kinds:tt => $($name:ident),* $(,)?) => {$(
        $crate::for_each_kind!(@mod $name $kinds);
    )*};
    (@mod $name:ident [$($kind:ident),+ $(,)?]) => {
        mod $name {
            $($crate::for_each_kind!(@test $name $kind);)+
        }
    };
    (@test $name:ident tcp) => { $crate::for_each_kind!(@make $name tcp Tcp); };
    (@test $name:ident unix) => { $crate::for_each_kind!(@make $name unix Unix); };
    (@test $name:ident tls) => { $crate::for_each_kind!(@make $name tls Tls); };
    (@test $name:ident mock) => { $crate::for_each_kind!(@make $name mock Mock); };
    (@make $name:ident $test:ident $kind:ident) => {
        #[actix_rt::test]
        async fn $test() {
            $crate::support::deadline(super::$name($crate::support::Kind::$kind)).await
        }
    };
}

/// The stream transport kinds the guarantees are tested over: three real ones, and the
/// test-util mock, which runs the same core with scripted I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Unix,
    /// TLS over TCP: the transport is a client made by `TlsConnector`, the peer a raw
    /// tokio-openssl server.
    Tls,
    /// `switchboard::testing::MockTransport`: the peer is its script.
    Mock,
}

impl Kind {
    /// Whether an abort, or the peer's reset, reaches the other end as a reset (TCP, and TLS
    /// over it) rather than as an EOF (Unix sockets). The mock's peer plays one: its reset is
    /// the script's `lose(ConnectionReset)`, and it reads an abort as a reset.
    pub fn resets(self) -> bool {
        matches!(self, Kind::Tcp | Kind::Tls | Kind::Mock)
    }

    /// What `GetWriteBufferLimits` answers on a new transport of this kind, `(low, high)`.
    pub fn default_write_buffer_limits(self) -> (usize, usize) {
        match self {
            Kind::Tls => WriteBufferLimits::tls().as_tuple(),
            Kind::Tcp | Kind::Unix | Kind::Mock => WriteBufferLimits::default().as_tuple(),
        }
    }
}

/// The certificate of every TLS transport and peer of this test process, made on first use.
pub fn certificate() -> &'static SelfSigned {
    static CERTIFICATE: std::sync::OnceLock<SelfSigned> = std::sync::OnceLock::new();
    CERTIFICATE.get_or_init(tls::localhost)
}

/// The `StartTls` that makes a transport the TLS server of [`certificate`], for a peer that
/// upgrades with [`Peer::start_tls_client`].
pub fn server_start_tls() -> StartTls {
    certificate()
        .acceptor()
        .expect("acceptor")
        .start_tls()
        .expect("StartTls settings")
}

/// What the mock answers for `peername` and `sockname`: the addresses of the connection it acts
/// out, which a real transport would take from its socket.
pub const MOCK_PEERNAME: std::net::SocketAddr = std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 40_001),
);
pub const MOCK_SOCKNAME: std::net::SocketAddr = std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 40_000),
);

/// The other end of a connection: a plain tokio socket, a raw TLS stream over one, or the
/// mock's script.
#[derive(Debug)]
pub enum Peer {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// TLS over another peer: TCP for [`Kind::Tls`], TCP or Unix after a STARTTLS.
    Tls(Box<SslStream<Peer>>),
    Mock(MockPeer),
}

impl Peer {
    /// The peer's own address, for TCP (what the server logs as the connection's peer).
    pub fn local_inet_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Peer::Tcp(stream) => stream.local_addr().ok(),
            Peer::Tls(tls) => tls.get_ref().local_inet_addr(),
            Peer::Unix(_) | Peer::Mock(_) => None,
        }
    }

    /// The address the peer is connected to, for TCP (the transport's own).
    pub fn peer_inet_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Peer::Tcp(stream) => stream.peer_addr().ok(),
            Peer::Tls(tls) => tls.get_ref().peer_inet_addr(),
            Peer::Unix(_) | Peer::Mock(_) => None,
        }
    }

    /// The mock, for a [`Kind::Mock`] peer.
    pub fn mock(&self) -> Option<&MockTransport> {
        match self {
            Peer::Mock(peer) => Some(&peer.mock),
            _ => None,
        }
    }

    /// Closes with a reset where the kind has one: TCP and TLS over it (SO_LINGER 0, and no
    /// close_notify), the mock (its script loses the connection with `ConnectionReset`, after
    /// the bytes already sent). A Unix socket has none: it just closes.
    pub fn reset(self) {
        match self {
            Peer::Tcp(stream) => stream.set_zero_linger().expect("SO_LINGER 0"),
            Peer::Tls(tls) => {
                if let Peer::Tcp(stream) = tls.get_ref() {
                    stream.set_zero_linger().expect("SO_LINGER 0");
                }
            }
            Peer::Mock(mut peer) => peer.reset(),
            Peer::Unix(_) => {}
        }
    }

    /// Closes the connection cleanly: a TLS peer sends close_notify first (else the transport
    /// reports a truncation), the mock's peer sends its EOF.
    pub async fn close(mut self) {
        if let Peer::Tls(_) = self {
            let _ = self.shutdown().await;
        }
    }

    /// Shuts the write side down: a FIN (over TLS, close_notify then the FIN); the mock's EOF.
    pub async fn shutdown_write(&mut self) {
        self.shutdown().await.expect("shutdown(SHUT_WR)");
    }

    /// Stops reading until the next read. A socket peer does so by not reading: its kernel
    /// buffers fill, which takes megabytes. The mock's peer tells its script
    /// (`MockTransport::pause_writing`): everything written from now on stays in the
    /// transport's write buffer, which counts as full, so the protocol hears `PauseWriting` at
    /// once.
    pub fn stop_reading(&mut self) {
        if let Peer::Mock(peer) = self {
            peer.stop_reading();
        }
    }

    /// The client side of a STARTTLS that the transport answers with [`server_start_tls`]: a raw
    /// TLS handshake over the socket. The mock's `StartTls` succeeds by itself, so its peer
    /// stays as it is.
    pub async fn start_tls_client(self) -> Peer {
        match self {
            Peer::Mock(_) => self,
            Peer::Tls(_) => panic!("the peer speaks TLS already"),
            plain @ (Peer::Tcp(_) | Peer::Unix(_)) => {
                Peer::Tls(Box::new(tls::raw_client(plain, certificate()).await))
            }
        }
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
            Peer::Tls(stream) => Pin::new(&mut **stream).poll_read(cx, buf),
            Peer::Mock(peer) => peer.poll_read(cx, buf),
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
            Peer::Tls(stream) => Pin::new(&mut **stream).poll_write(cx, buf),
            Peer::Mock(peer) => Poll::Ready(Ok(peer.write(buf))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Peer::Tcp(stream) => Pin::new(stream).poll_flush(cx),
            Peer::Unix(stream) => Pin::new(stream).poll_flush(cx),
            Peer::Tls(stream) => Pin::new(&mut **stream).poll_flush(cx),
            Peer::Mock(_) => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Peer::Tcp(stream) => Pin::new(stream).poll_shutdown(cx),
            Peer::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
            Peer::Tls(stream) => Pin::new(&mut **stream).poll_shutdown(cx),
            Peer::Mock(peer) => {
                peer.eof();
                Poll::Ready(Ok(()))
            }
        }
    }
}

/// How often a mock peer waiting to read looks at what the transport wrote: the mock wakes no
/// reader, so a read polls it (a wait for a condition, under the caller's deadline).
const MOCK_READ_POLL: Duration = Duration::from_millis(1);

/// The peer of a [`MockTransport`]: what it sends and its EOF are the script's `push` and `eof`,
/// what it reads is `take_written`, its reset is `lose`, and it stops reading with
/// `pause_writing`. It reads the end once the transport shut its write side down (`WriteEof`
/// with the buffer flushed) or ended, an end by `Abort` (or by the death pact) as a reset, as a
/// TCP peer does.
///
/// The script is queued, not awaited: like a socket's, the peer's sending returns before the
/// protocol has handled anything (the mock's own `feed` and `eof` wait until the protocol is
/// idle, which a protocol that holds its acknowledgements never is). Dropping the peer sends its
/// EOF, as closing a socket sends a FIN.
#[derive(Debug)]
pub struct MockPeer {
    mock: MockTransport,
    /// Taken from the mock, not read yet.
    unread: Bytes,
    stalled: bool,
    /// Reset: nothing more to send, not even the EOF of a drop.
    gone: bool,
    wait: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// Queues a step of the mock's script: each step queues itself when first polled and then waits
/// for the protocol to settle, which a peer does not wait for.
fn queue<F: Future>(step: F) {
    let _ = step.now_or_never();
}

impl MockPeer {
    fn new(mock: MockTransport) -> MockPeer {
        MockPeer {
            mock,
            unread: Bytes::new(),
            stalled: false,
            gone: false,
            wait: None,
        }
    }

    fn write(&mut self, buf: &[u8]) -> usize {
        self.mock.push(Bytes::copy_from_slice(buf));
        buf.len()
    }

    fn eof(&mut self) {
        queue(self.mock.eof());
    }

    fn reset(&mut self) {
        self.gone = true;
        queue(
            self.mock
                .lose(Some(io::Error::from(io::ErrorKind::ConnectionReset))),
        );
    }

    fn stop_reading(&mut self) {
        if !self.stalled {
            self.stalled = true;
            queue(self.mock.pause_writing());
        }
    }

    /// The end of what the peer reads, once the transport wrote everything it will.
    fn end(&self) -> Option<io::Result<()>> {
        match self.mock.ending() {
            Some(Ending::Aborted | Ending::ProtocolStopped) => {
                Some(Err(io::ErrorKind::ConnectionReset.into()))
            }
            Some(_) => Some(Ok(())),
            None if self.mock.is_eof_written() && self.mock.stats().write_buffer_size == 0 => {
                Some(Ok(()))
            }
            None => None,
        }
    }

    fn poll_read(
        &mut self,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.stalled {
            self.stalled = false;
            queue(self.mock.resume_writing());
        }
        loop {
            let end = self.end();
            if self.unread.is_empty() {
                self.unread = self.mock.take_written();
            }
            if !self.unread.is_empty() {
                let n = self.unread.len().min(buf.remaining());
                buf.put_slice(&self.unread.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if let Some(end) = end {
                return Poll::Ready(end);
            }
            let wait = self
                .wait
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(MOCK_READ_POLL)));
            std::task::ready!(wait.as_mut().poll(cx));
            self.wait = None;
        }
    }
}

impl Drop for MockPeer {
    fn drop(&mut self) {
        if !self.gone {
            self.eof();
        }
    }
}

/// A switchboard transport of `kind` on the current arbiter, attached to what `protocol` makes,
/// and its peer.
///
/// The mock takes no `StreamConfig`: `pair` gives it `config`'s write-buffer limits with
/// `SetWriteBufferLimits`, and refuses other settings (it has no clock, so no stall timeout).
pub async fn pair<P: IntoProtocol>(
    kind: Kind,
    config: StreamConfig,
    protocol: impl FnOnce() -> P,
) -> (TransportHandle, P::Output, Peer) {
    match kind {
        Kind::Tcp => {
            let (ours, peer) = tcp_pair().await;
            let (transport, output) = stream::spawn(ours, config, protocol);
            (transport, output, Peer::Tcp(peer))
        }
        Kind::Unix => {
            let (ours, peer) = UnixStream::pair().expect("socketpair");
            let (transport, output) = stream::spawn(ours, config, protocol);
            (transport, output, Peer::Unix(peer))
        }
        Kind::Tls => {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("local_addr");
            let connector = certificate().connector().expect("connector").config(config);
            let accept = async {
                let (stream, _) = listener.accept().await.expect("accept");
                tls::raw_server(Peer::Tcp(stream), certificate()).await
            };
            let addr = addr.to_string();
            let (connected, peer) = tokio::join!(connector.connect(&addr, protocol), accept);
            let (transport, output) = connected.expect("TLS connect");
            (transport, output, Peer::Tls(Box::new(peer)))
        }
        Kind::Mock => mock_pair(MockTransport::builder(), config, protocol),
    }
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let (peer, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (ours, _) = accepted.expect("accept");
    ours.set_nodelay(true).expect("nodelay");
    (ours, peer.expect("connect"))
}

fn mock_pair<P: IntoProtocol>(
    builder: switchboard::testing::MockBuilder,
    config: StreamConfig,
    protocol: impl FnOnce() -> P,
) -> (TransportHandle, P::Output, Peer) {
    let mut rest = config.clone();
    rest.write_buffer_limits = None;
    rest.max_write_buffer = StreamConfig::default().max_write_buffer;
    assert_eq!(
        rest,
        StreamConfig::default(),
        "the mock takes write-buffer limits and maximum only"
    );
    let (mock, output) = builder
        .max_write_buffer(config.max_write_buffer)
        .timeout(TIMEOUT)
        .peername(MOCK_PEERNAME)
        .sockname(MOCK_SOCKNAME)
        .attach(protocol());
    let transport = mock.handle();
    if let Some(limits) = config.write_buffer_limits {
        transport.do_send(SetWriteBufferLimits {
            high: Some(limits.high()),
            low: Some(limits.low()),
        });
    }
    (transport, output, Peer::Mock(MockPeer::new(mock)))
}

/// A [`Probe`] with `options` attached to a transport of `kind` (default settings), with its
/// `ConnectionMade` already seen: the transport, the probe, the peer and the probe's events.
pub async fn probed(
    kind: Kind,
    options: ProbeOptions,
) -> (TransportHandle, Addr<Probe>, Peer, ProbeRx) {
    probed_with(kind, options, StreamConfig::default()).await
}

/// [`probed`] with chosen settings (the mock takes write-buffer limits and maximum only).
pub async fn probed_with(
    kind: Kind,
    options: ProbeOptions,
    config: StreamConfig,
) -> (TransportHandle, Addr<Probe>, Peer, ProbeRx) {
    let (probe, mut events) = options.probe();
    let (transport, probe, peer) = pair(kind, config, || probe.start()).await;
    events.made().await;
    (transport, probe, peer, events)
}

/// [`probed`] over a transport that cannot half-close: TLS, or the mock acting one out
/// (`MockBuilder::can_write_eof(false)`). TCP and Unix sockets can.
pub async fn probed_without_half_close(
    kind: Kind,
    options: ProbeOptions,
) -> (TransportHandle, Addr<Probe>, Peer, ProbeRx) {
    let (probe, mut events) = options.probe();
    let (transport, probe, peer) = match kind {
        Kind::Tls => pair(kind, StreamConfig::default(), || probe.start()).await,
        Kind::Mock => mock_pair(
            MockTransport::builder().can_write_eof(false),
            StreamConfig::default(),
            || probe.start(),
        ),
        Kind::Tcp | Kind::Unix => panic!("{kind:?} can half-close"),
    };
    events.made().await;
    (transport, probe, peer, events)
}

/// [`probed`] over a plaintext transport that can `StartTls` (its socket wrapped in `MaybeTls`,
/// as `tcp::connect`, `unix::connect` and their servers wrap theirs); the mock can by itself.
pub async fn probed_upgradable(
    kind: Kind,
    options: ProbeOptions,
) -> (TransportHandle, Addr<Probe>, Peer, ProbeRx) {
    let (probe, mut events) = options.probe();
    let config = StreamConfig::default();
    let (transport, probe, peer) = match kind {
        Kind::Tcp => {
            let (ours, peer) = tcp_pair().await;
            let (transport, probe) = stream::spawn(MaybeTls::plain(ours), config, || probe.start());
            (transport, probe, Peer::Tcp(peer))
        }
        Kind::Unix => {
            let (ours, peer) = UnixStream::pair().expect("socketpair");
            let (transport, probe) = stream::spawn(MaybeTls::plain(ours), config, || probe.start());
            (transport, probe, Peer::Unix(peer))
        }
        Kind::Mock => pair(kind, config, || probe.start()).await,
        Kind::Tls => panic!("a TLS transport cannot start TLS again"),
    };
    events.made().await;
    (transport, probe, peer, events)
}

/// A server of `kind` on a free address (TCP, TLS) or a fresh temp path (Unix). The mock has
/// none: it is one connection.
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
            Kind::Tls => Served {
                server: switchboard::tls::serve_with(
                    "127.0.0.1:0",
                    options,
                    certificate().acceptor().expect("acceptor"),
                    factory,
                )
                .await
                .expect("serve"),
                kind,
                _dir: None,
            },
            Kind::Mock => panic!("the mock has no server"),
        }
    }

    /// Connects a raw peer (for TLS, with its handshake done).
    pub async fn connect_raw(&self) -> io::Result<Peer> {
        match &self.server.addresses()[0] {
            SocketAddress::Inet(addr) if self.kind == Kind::Tls => {
                let stream = TcpStream::connect(addr).await?;
                let tls = tls::try_raw_client(Peer::Tcp(stream), certificate()).await?;
                Ok(Peer::Tls(Box::new(tls)))
            }
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
            SocketAddress::Inet(addr) if self.kind == Kind::Tls => {
                certificate()
                    .connector()?
                    .connect(&addr.to_string(), protocol)
                    .await
            }
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

/// Waits until the transport actor has stopped (its handle says so), failing the test after
/// [`TIMEOUT`].
pub async fn stopped(transport: &TransportHandle) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while transport.is_alive() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the transport actor did not stop"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A probe factory for servers: every connection gets a fresh probe, whose receiving end
/// arrives on the returned channel.
pub fn probe_factory(
    options: ProbeOptions,
) -> (
    impl Fn() -> StartedProbe + Send + Sync + 'static,
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
crate::ignore_events!(Fragile: EofReceived, PauseWriting, ResumeWriting, TimedOut);

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
