//! Raw TLS peers for the TLS tests: tokio-openssl over plain tokio sockets, independent of
//! switchboard's transport, with certificates made at run time.
#![allow(dead_code)]

use std::{io::Read, os::unix::net::UnixStream, pin::Pin};

use switchboard::tls::{
    SelfSigned,
    openssl::ssl::{HandshakeError, Ssl, SslAcceptor, SslConnector, SslMethod, SslVerifyMode},
};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// A TLS client stream made by hand over `stream`, trusting `cert` only and checking the name
/// `localhost`.
pub(crate) async fn raw_client<S>(stream: S, cert: &SelfSigned) -> SslStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    try_raw_client(stream, cert)
        .await
        .expect("raw TLS handshake")
}

/// [`raw_client`], with the handshake's failure as an error.
pub(crate) async fn try_raw_client<S>(stream: S, cert: &SelfSigned) -> std::io::Result<SslStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut builder = SslConnector::builder(SslMethod::tls_client()).expect("connector");
    builder
        .cert_store_mut()
        .add_cert(cert.certificate().clone())
        .expect("trust the test certificate");
    builder.set_verify(SslVerifyMode::PEER);
    let ssl = builder
        .build()
        .configure()
        .expect("configure")
        .into_ssl("localhost")
        .expect("ssl");
    let mut tls = SslStream::new(ssl, stream).expect("ssl stream");
    Pin::new(&mut tls)
        .connect()
        .await
        .map_err(std::io::Error::other)?;
    Ok(tls)
}

/// A TLS server stream made by hand over an accepted `stream`, serving `cert`.
pub(crate) async fn raw_server<S>(stream: S, cert: &SelfSigned) -> SslStream<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut builder =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).expect("acceptor");
    builder.set_certificate(cert.certificate()).expect("cert");
    builder.set_private_key(cert.private_key()).expect("key");
    let acceptor = builder.build();
    let ssl = Ssl::new(acceptor.context()).expect("ssl");
    let mut tls = SslStream::new(ssl, stream).expect("ssl stream");
    Pin::new(&mut tls).accept().await.expect("raw TLS accept");
    tls
}

/// A certificate for `localhost` and the loopback addresses.
pub(crate) fn localhost() -> SelfSigned {
    SelfSigned::localhost().expect("self-signed certificate")
}

/// Like [`crate::support::probed`] over TCP, but the transport's socket is wrapped so it can
/// `StartTls`, as `tcp::connect` and `tcp::serve` wrap theirs.
pub(crate) async fn probed_upgradable(
    options: crate::support::ProbeOptions,
) -> (
    switchboard::TransportHandle,
    actix::Addr<crate::support::Probe>,
    crate::support::Peer,
    crate::support::ProbeRx,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let (peer, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (ours, _) = accepted.expect("accept");
    let (probe, mut events) = options.probe();
    let (transport, probe) = switchboard::stream::spawn(
        switchboard::tls::MaybeTls::plain(ours),
        switchboard::StreamConfig::default(),
        || probe.start(),
    );
    events.made().await;
    (
        transport,
        probe,
        crate::support::Peer::Tcp(peer.expect("connect")),
        events,
    )
}

/// The ClientHello a real OpenSSL client sends to `server_name`: its first TLS record, whole,
/// for peers that start a handshake and then misbehave (stall, trickle, vanish).
pub(crate) fn client_hello(server_name: &str) -> Vec<u8> {
    let (client, mut wire) = UnixStream::pair().expect("socketpair");
    client.set_nonblocking(true).expect("non-blocking");
    let connector = SslConnector::builder(SslMethod::tls_client())
        .expect("connector")
        .build();
    // The client writes its hello, then would block on an answer that never comes.
    let _waiting = match connector.connect(server_name, client) {
        Err(HandshakeError::WouldBlock(waiting)) => waiting,
        Err(err) => panic!("the client failed before its hello: {err}"),
        Ok(_) => unreachable!("nobody answered"),
    };
    let mut hello = vec![0; 5];
    wire.read_exact(&mut hello).expect("the record header");
    assert_eq!(hello[0], 0x16, "a handshake record: {hello:02x?}");
    let len = usize::from(u16::from_be_bytes([hello[3], hello[4]]));
    hello.resize(5 + len, 0);
    wire.read_exact(&mut hello[5..]).expect("the record");
    hello
}
