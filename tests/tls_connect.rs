//! TLS transports made by `tls::connect` and `tls::serve`: bytes both ways with write-buffer
//! flow control, close_notify, verification by default, bounded handshakes, and the TLS
//! extra-info keys checked against what an independent peer (Python's `ssl`, tokio-openssl)
//! sees.

#[path = "support/process.rs"]
mod process;
mod support;
use support::tls as tls_support;

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use support::{Event, ProbeOptions, deadline, pattern, probe_factory};
use switchboard::{
    CanWriteEof, ExtraInfo, ServerOptions, StreamConfig, TlsError, TlsErrorKind, WriteBufferLimits,
    WriteEof, keys,
    tls::{
        self, SelfSigned, TlsAcceptor, TlsConnector,
        openssl::ssl::{ErrorCode, SslAcceptor, SslContext, SslMethod},
    },
};
use tls_support::{localhost, raw_server};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// A TLS server with one worker and a probe per connection; also counts protocols made.
async fn probe_server(
    acceptor: TlsAcceptor,
) -> (
    switchboard::ServerHandle,
    tokio::sync::mpsc::UnboundedReceiver<support::ProbeRx>,
    Arc<AtomicUsize>,
) {
    let (factory, probes) = probe_factory(ProbeOptions::default());
    let made = Arc::new(AtomicUsize::new(0));
    let counted = made.clone();
    let server = tls::serve_with(
        "127.0.0.1:0",
        ServerOptions::default().workers(1),
        acceptor,
        move || {
            counted.fetch_add(1, Ordering::SeqCst);
            factory()
        },
    )
    .await
    .expect("serve TLS");
    (server, probes, made)
}

fn addr_of(server: &switchboard::ServerHandle) -> String {
    server.addresses()[0].to_string()
}

/// Waits until the server has no connection left (handshakes included).
async fn until_no_connections(server: &switchboard::ServerHandle) {
    let end = tokio::time::Instant::now() + support::TIMEOUT;
    while server.stats().await.connections > 0 {
        assert!(tokio::time::Instant::now() < end, "connections never ended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[actix_rt::test]
async fn ten_mib_echo_through_tls_with_write_flow_control_then_close_notify() {
    deadline(async {
        let cert = localhost();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        // An echo server independent of switchboard: OpenSSL's blocking stream over a std
        // socket, on a thread of its own. It reports how its peer's stream ended, telling a
        // close_notify (`ZERO_RETURN`) from a bare TCP EOF.
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
        builder.set_certificate(cert.certificate()).unwrap();
        builder.set_private_key(cert.private_key()).unwrap();
        let acceptor = builder.build();
        let echo = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut tls = acceptor.accept(stream).expect("raw TLS accept");
            let mut buf = vec![0; 64 * 1024];
            let mut echoed = 0usize;
            loop {
                match tls.ssl_read(&mut buf) {
                    Ok(n) => {
                        std::io::Write::write_all(&mut tls, &buf[..n]).unwrap();
                        echoed += n;
                    }
                    Err(err) if err.code() == ErrorCode::ZERO_RETURN => return Ok(echoed),
                    Err(err) => return Err(format!("{err} after {echoed} bytes")),
                }
            }
        });

        let (probe, mut events) = ProbeOptions::default().probe();
        let connector = cert.connector().unwrap().config(
            StreamConfig::default()
                .write_buffer_limits(WriteBufferLimits::default())
                // 10 MiB written at once, past the default maximum (4 MiB), on purpose.
                .max_write_buffer(16 * 1024 * 1024)
                .expect("above the high-water mark"),
        );
        let (transport, _) = connector
            .connect(&addr, || probe.start())
            .await
            .expect("TLS connect");
        events.made().await;

        const TOTAL: usize = 10 * 1024 * 1024;
        const CHUNK: usize = 64 * 1024;
        for offset in (0..TOTAL).step_by(CHUNK) {
            transport.write(pattern(offset as u64, CHUNK));
        }
        let mut received = Vec::with_capacity(TOTAL);
        let mut edges = Vec::new();
        while received.len() < TOTAL {
            match events.next().await {
                Some(Event::Data(chunk)) => received.extend_from_slice(&chunk),
                Some(Event::PauseWriting) => edges.push("pause"),
                Some(Event::ResumeWriting) => edges.push("resume"),
                other => panic!("unexpected {other:?} after {} bytes", received.len()),
            }
        }
        assert!(
            received == pattern(0, TOTAL),
            "the echo differs from what was sent"
        );
        assert_eq!(
            edges.first(),
            Some(&"pause"),
            "10 MiB written at once must cross the 64 KiB high-water mark"
        );
        assert!(
            edges.contains(&"resume"),
            "the buffer drained, so writing must resume: {edges:?}"
        );
        assert!(
            edges.windows(2).all(|pair| pair[0] != pair[1]),
            "pause and resume alternate: {edges:?}"
        );

        // TLS has no half-close.
        assert!(!transport.send(CanWriteEof).await.unwrap());
        let eof = transport.send(WriteEof).await.unwrap();
        assert_eq!(eof.unwrap_err().kind(), std::io::ErrorKind::Unsupported);

        transport.close();
        assert!(events.until_lost().await.is_none());
        let ended = tokio::task::spawn_blocking(move || echo.join().unwrap())
            .await
            .unwrap();
        assert_eq!(
            ended,
            Ok(TOTAL),
            "the peer must see a clean close_notify after every byte"
        );
    })
    .await
}

#[actix_rt::test]
async fn extra_info_agrees_with_what_a_python_client_sees() {
    deadline(async {
        let cert = localhost();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("cert.pem");
        std::fs::write(&ca, cert.certificate_pem().unwrap()).unwrap();
        let (server, mut probes, _) = probe_server(cert.acceptor().unwrap()).await;
        let port = server.addresses()[0].as_inet().unwrap().port().to_string();

        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/peers/tls_info.py");
        let mut command = process::python_command(&script);
        command.args(["127.0.0.1", &port, ca.to_str().unwrap(), "localhost"]);
        let python = process::Process::spawn("python3 tls_info.py", command);
        let mut events = probes.recv().await.unwrap();
        let transport = events.made().await;
        assert_eq!(events.data(6).await, b"ready\n");
        let line = python
            .stdout()
            .first_line(process::TIMEOUT)
            .expect("the Python client's report");
        let seen: serde_json::Value = serde_json::from_str(&line).unwrap();

        let cipher = transport.cipher().await.expect("cipher");
        assert_eq!(
            serde_json::json!([cipher.name, cipher.protocol, cipher.secret_bits]),
            seen["cipher"]
        );
        let session = transport.tls_session().await.expect("ssl_object");
        assert_eq!(session.version, seen["version"].as_str().unwrap());
        assert_eq!(session.cipher, cipher);
        assert_eq!(session.server_name.as_deref(), Some("localhost"), "SNI");
        assert!(session.server_side);
        assert!(!session.session_reused);
        assert!(
            session.peer_chain.is_empty(),
            "the client sent no certificate"
        );
        assert_eq!(
            transport.get_extra_info(keys::PEERCERT).await,
            Some(ExtraInfo::PeerCert(None))
        );
        assert_eq!(
            transport.get_extra_info(keys::COMPRESSION).await,
            Some(ExtraInfo::Compression(None))
        );
        let context = transport.get_extra_info(keys::SSLCONTEXT).await.unwrap();
        assert!(
            context.downcast_ref::<SslContext>().is_some(),
            "{context:?}"
        );
        // The socket's keys answer through the TLS layer, swapped as the client sees them.
        let peer = transport.peer_addr().await.unwrap();
        let local = transport.local_addr().await.unwrap();
        assert_eq!(
            serde_json::json!([peer.ip().to_string(), peer.port()]),
            seen["sockname"]
        );
        assert_eq!(
            serde_json::json!([local.ip().to_string(), local.port()]),
            seen["peername"]
        );
        // The certificate the client got is the one the server was given.
        assert_eq!(
            seen["peer_der"].as_str().unwrap(),
            hex(&cert.certificate().to_der().unwrap())
        );

        transport.close();
        assert!(events.until_lost().await.is_none());
        python.finish(process::TIMEOUT);
        server.close().await;
    })
    .await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[actix_rt::test]
async fn a_client_sees_the_server_certificate_it_verified() {
    deadline(async {
        let server_cert = SelfSigned::new(&["localhost", "127.0.0.1"]).unwrap();
        let expected_der = server_cert.certificate().to_der().unwrap();
        let connector = server_cert.connector().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let raw = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut tls = raw_server(stream, &server_cert).await;
            tls.write_all(b"hello").await.unwrap();
            let mut rest = Vec::new();
            let _ = tls.read_to_end(&mut rest).await;
        });
        let (probe, mut events) = ProbeOptions::default().probe();
        let (transport, _) = connector
            .connect(&addr, || probe.start())
            .await
            .expect("connect, verifying the certificate and the IP address");
        events.made().await;
        assert_eq!(events.data(5).await, b"hello");
        let peer = transport.peer_certificate().await.expect("peercert");
        assert_eq!(&peer.der[..], &expected_der[..]);
        assert_eq!(peer.subject, "CN=localhost,O=switchboard self-signed");
        assert_eq!(peer.issuer, peer.subject);
        assert_eq!(peer.subject_alt_names, ["localhost", "127.0.0.1"]);
        assert!(peer.not_after.ends_with("GMT"), "{}", peer.not_after);
        let session = transport.tls_session().await.unwrap();
        assert!(!session.server_side);
        assert_eq!(session.peer_chain.first(), Some(&peer));
        assert_eq!(session.server_name, None, "no SNI for an IP address");
        transport.close();
        assert!(events.until_lost().await.is_none());
        raw.await.unwrap();
    })
    .await
}

#[actix_rt::test]
async fn clients_refuse_a_self_signed_certificate_unless_told_in_so_many_words() {
    deadline(async {
        let cert = localhost();
        let (server, mut probes, made) = probe_server(cert.acceptor().unwrap()).await;
        let addr = addr_of(&server);

        // The system's trust store does not know the certificate.
        let mut client_made = false;
        let err = tls::connect(&addr, || {
            client_made = true;
            ProbeOptions::default().probe().0.start()
        })
        .await
        .expect_err("a self-signed certificate must be refused");
        let tls_err = TlsError::of(&err).unwrap_or_else(|| panic!("not a TLS error: {err}"));
        assert_eq!(tls_err.kind(), TlsErrorKind::Certificate, "{tls_err}");
        assert!(tls_err.message().contains("self-signed"), "{tls_err}");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(!client_made, "no protocol without a handshake");

        // Trusted, but made out to another name.
        let other = SelfSigned::new(&["example.org"]).unwrap();
        let (other_server, _other_probes, _) = probe_server(other.acceptor().unwrap()).await;
        let err = other
            .connector()
            .unwrap()
            .connect(&addr_of(&other_server), || {
                ProbeOptions::default().probe().0.start()
            })
            .await
            .expect_err("a certificate for another name must be refused");
        let tls_err = TlsError::of(&err).unwrap();
        assert_eq!(tls_err.kind(), TlsErrorKind::Certificate, "{tls_err}");
        assert!(tls_err.message().contains("mismatch"), "{tls_err}");
        // Named explicitly, the name matches.
        let (named, _) = other
            .connector()
            .unwrap()
            .server_name("example.org")
            .connect(&addr_of(&other_server), || {
                ProbeOptions::default().probe().0.start()
            })
            .await
            .expect("the certificate is for example.org");
        named.abort();
        let (lax, _) = other
            .connector()
            .unwrap()
            .danger_accept_invalid_hostnames(true)
            .connect(&addr_of(&other_server), || {
                ProbeOptions::default().probe().0.start()
            })
            .await
            .expect("host name check turned off");
        lax.abort();
        other_server.close().await;

        // Verification off, by its explicit name.
        let (transport, _) = TlsConnector::new()
            .unwrap()
            .danger_accept_invalid_certs(true)
            .connect(&addr, || ProbeOptions::default().probe().0.start())
            .await
            .expect("verification turned off");
        let mut events = probes.recv().await.unwrap();
        events.made().await;
        // Only the successful handshake made a protocol on the server.
        assert_eq!(made.load(Ordering::SeqCst), 1);
        transport.close();
        events.until_lost().await;
        until_no_connections(&server).await;
        server.close().await;
    })
    .await
}

#[actix_rt::test]
async fn a_handshake_that_never_completes_is_cut_off_by_the_timeout() {
    deadline(async {
        let cert = localhost();
        let acceptor = cert
            .acceptor()
            .unwrap()
            .handshake_timeout(Duration::from_millis(300))
            .unwrap()
            .client_hello_timeout(Duration::from_millis(300))
            .unwrap();
        let (server, _probes, made) = probe_server(acceptor).await;
        let addr = server.addresses()[0].as_inet().unwrap();

        // A client that connects and never says anything: cut off by the ClientHello timeout.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let started = tokio::time::Instant::now();
        let mut buf = [0; 16];
        let read = tokio::time::timeout(support::TIMEOUT, silent.read(&mut buf))
            .await
            .expect("the server must give up on the handshake");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "cut off before the timeout: {:?}",
            started.elapsed()
        );
        until_no_connections(&server).await;
        assert_eq!(made.load(Ordering::SeqCst), 0, "no protocol was made");
        server.close().await;

        // A server that accepts and never answers: the client gives up too.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let holder = tokio::spawn(async move { listener.accept().await });
        let err = cert
            .connector()
            .unwrap()
            .handshake_timeout(Duration::from_millis(300))
            .unwrap()
            .connect(&addr, || ProbeOptions::default().probe().0.start())
            .await
            .expect_err("no handshake");
        assert_eq!(
            TlsError::of(&err).map(TlsError::kind),
            Some(TlsErrorKind::TimedOut),
            "{err}"
        );
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        drop(holder);
    })
    .await
}

#[actix_rt::test]
async fn a_server_runs_at_most_its_limit_of_handshakes_at_once() {
    deadline(async {
        let cert = localhost();
        let acceptor = cert
            .acceptor()
            .unwrap()
            .max_handshakes(1)
            .handshake_timeout(Duration::from_secs(60))
            .unwrap();
        let (server, mut probes, _) = probe_server(acceptor).await;
        let addr = addr_of(&server);

        // A client that sends half a ClientHello and stalls takes the one place.
        let mut stalled = TcpStream::connect(&addr).await.unwrap();
        stalled
            .write_all(&tls_support::client_hello("localhost")[..10])
            .await
            .unwrap();
        let end = tokio::time::Instant::now() + support::TIMEOUT;
        while server.stats().await.accepted < 1 {
            assert!(tokio::time::Instant::now() < end);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The one place is taken: a real client waits for it.
        let connector = cert.connector().unwrap();
        let client_addr = addr.clone();
        let mut client = Box::pin(async move {
            connector
                .connect(&client_addr, || ProbeOptions::default().probe().0.start())
                .await
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(300), &mut client)
                .await
                .is_err(),
            "a second handshake ran while the limit was 1"
        );
        assert_eq!(
            server.stats().await.accepted,
            2,
            "accepting goes on: the limit is on handshakes, not connections"
        );
        // The stalled client leaves: its handshake fails, the place is free.
        drop(stalled);
        let (transport, _) = client.await.expect("served once a place was free");
        let mut events = probes.recv().await.unwrap();
        events.made().await;
        transport.close();
        events.until_lost().await;
        server.close().await;
    })
    .await
}

/// Guarantee 10: a silent peer cannot hold a handshake place. Far more silent connections than
/// places are open; a real client's handshake still completes at once, and the silent ones are
/// dropped at the ClientHello timeout.
#[actix_rt::test]
async fn silent_connections_cannot_lock_real_clients_out() {
    deadline(async {
        const PLACES: usize = 8;
        const SILENT: usize = 200;
        let cert = localhost();
        let acceptor = cert
            .acceptor()
            .unwrap()
            .max_handshakes(PLACES)
            .client_hello_timeout(Duration::from_secs(2))
            .unwrap();
        let (server, mut probes, _) = probe_server(acceptor).await;
        let addr = addr_of(&server);
        let mut silent = Vec::new();
        for _ in 0..SILENT {
            silent.push(TcpStream::connect(&addr).await.unwrap());
        }
        let end = tokio::time::Instant::now() + support::TIMEOUT;
        while server.stats().await.accepted < SILENT as u64 {
            assert!(
                tokio::time::Instant::now() < end,
                "the silent ones were not accepted"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = tokio::time::Instant::now();
        let (transport, _) = tokio::time::timeout(
            Duration::from_secs(1),
            cert.connector()
                .unwrap()
                .connect(&addr, || ProbeOptions::default().probe().0.start()),
        )
        .await
        .expect("a real client's handshake completes within 1 s")
        .expect("served");
        let took = started.elapsed();
        let mut events = probes.recv().await.unwrap();
        events.made().await;
        transport.close();
        events.until_lost().await;
        // The silent ones are dropped at the ClientHello timeout.
        for mut stream in silent {
            let mut buf = [0; 8];
            let read = tokio::time::timeout(support::TIMEOUT, stream.read(&mut buf))
                .await
                .expect("dropped at the ClientHello timeout");
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        }
        assert!(took < Duration::from_secs(1), "{took:?}");
        server.close().await;
    })
    .await
}

#[actix_rt::test]
async fn close_clients_ends_handshakes_under_way() {
    deadline(async {
        let cert = localhost();
        let acceptor = cert
            .acceptor()
            .unwrap()
            .handshake_timeout(Duration::from_secs(60))
            .unwrap();
        let (server, _probes, made) = probe_server(acceptor).await;
        let mut silent = TcpStream::connect(addr_of(&server)).await.unwrap();
        let end = tokio::time::Instant::now() + support::TIMEOUT;
        while server.stats().await.connections < 1 {
            assert!(tokio::time::Instant::now() < end);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.close().await;
        server.close_clients().await;
        tokio::time::timeout(support::TIMEOUT, server.wait_closed())
            .await
            .expect("wait_closed must not wait for the 60 s handshake timeout");
        let mut buf = [0; 8];
        let read = silent.read(&mut buf).await;
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert_eq!(made.load(Ordering::SeqCst), 0);
    })
    .await
}

/// Reads the server-side probe's events up to `ConnectionLost`: the bytes, whether
/// `EofReceived` came, and the error.
async fn bytes_eof_and_end(
    events: &mut support::ProbeRx,
) -> (Vec<u8>, bool, Option<std::io::Error>) {
    let mut bytes = Vec::new();
    let mut eof = false;
    loop {
        match events.next().await {
            Some(Event::Data(chunk)) => {
                assert!(!eof, "data after EofReceived");
                bytes.extend_from_slice(&chunk);
            }
            Some(Event::Eof) => eof = true,
            Some(Event::Lost(err)) => {
                events.assert_ended().await;
                return (bytes, eof, err);
            }
            Some(Event::PauseWriting | Event::ResumeWriting) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn truncated(err: Option<&std::io::Error>) -> Option<(std::io::ErrorKind, String)> {
    let err = err?;
    let tls = TlsError::of(err)?;
    assert_eq!(tls.kind(), TlsErrorKind::Truncated, "{err}");
    Some((err.kind(), tls.message().to_owned()))
}

/// A client that ends its stream with close_notify ends cleanly: every byte, `EofReceived`,
/// `ConnectionLost(None)`. One that closes the TCP connection without it (what a Python `ssl`
/// socket's `close()` does) is truncated: every byte it sent is still delivered, then no
/// `EofReceived`, and `ConnectionLost` carries a `Truncated` error, so a protocol reading a
/// body up to the end of the stream cannot take a cut one as complete.
#[actix_rt::test]
async fn a_clean_tls_end_and_a_truncated_one_are_told_apart() {
    deadline(async {
        let cert = localhost();
        let (server, mut probes, _) = probe_server(cert.acceptor().unwrap()).await;
        let body = pattern(0, 256 * 1024);

        // With close_notify (tokio-openssl's shutdown sends it before the TCP FIN).
        let stream = TcpStream::connect(addr_of(&server)).await.unwrap();
        let mut tls = tls_support::raw_client(stream, &cert).await;
        let mut events = probes.recv().await.unwrap();
        events.made().await;
        tls.write_all(&body).await.unwrap();
        tls.shutdown().await.unwrap();
        let (bytes, eof, err) = bytes_eof_and_end(&mut events).await;
        assert!(bytes == body, "{} of {} bytes", bytes.len(), body.len());
        assert!(eof, "a clean end is an EOF");
        assert!(err.is_none(), "{err:?}");

        // Without: a TCP FIN straight after the data.
        let stream = TcpStream::connect(addr_of(&server)).await.unwrap();
        let mut tls = tls_support::raw_client(stream, &cert).await;
        let mut events = probes.recv().await.unwrap();
        events.made().await;
        tls.write_all(&body).await.unwrap();
        tls.get_mut().shutdown().await.unwrap();
        let (bytes, eof, err) = bytes_eof_and_end(&mut events).await;
        assert!(bytes == body, "{} of {} bytes", bytes.len(), body.len());
        assert!(!eof, "a truncated stream has no EOF");
        assert_eq!(
            truncated(err.as_ref()),
            Some((
                std::io::ErrorKind::UnexpectedEof,
                "the peer ended the connection without close_notify".to_owned()
            ))
        );

        // Python's `ssl`, an independent client: `close()` sends no close_notify, `unwrap()`
        // does.
        let ca = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(ca.path(), cert.certificate_pem().unwrap()).unwrap();
        for (unwrap, clean) in [("False", false), ("True", true)] {
            let addr = server.addresses()[0].as_inet().unwrap();
            // TLS 1.2: a TLS 1.3 server sends session tickets after the handshake, which a
            // client that never reads leaves unread, and closing a socket with unread bytes
            // sends a reset instead of a FIN.
            let script = format!(
                "import socket, ssl\n\
                 ctx = ssl.create_default_context(cafile={ca:?})\n\
                 ctx.maximum_version = ssl.TLSVersion.TLSv1_2\n\
                 raw = socket.create_connection(('127.0.0.1', {port}))\n\
                 tls = ctx.wrap_socket(raw, server_hostname='localhost')\n\
                 tls.sendall(b'x' * 100000)\n\
                 if {unwrap}:\n    tls.unwrap().close()\n\
                 else:\n    tls.close()\n",
                ca = ca.path().display().to_string(),
                port = addr.port(),
            );
            let status = tokio::process::Command::new("python3")
                .args(["-c", &script])
                .status()
                .await
                .expect("python3");
            assert!(status.success());
            let mut events = probes.recv().await.unwrap();
            events.made().await;
            let (bytes, eof, err) = bytes_eof_and_end(&mut events).await;
            assert_eq!(bytes.len(), 100_000, "unwrap: {unwrap}");
            assert_eq!(eof, clean, "unwrap: {unwrap}");
            assert_eq!(truncated(err.as_ref()).is_none(), clean, "{err:?}");
        }
    })
    .await
}

/// After our `Close`, how the peer's stream ends changes nothing the protocol received: a
/// peer that answers our close_notify, one that keeps the connection open past the close's
/// drain, and one that drops it without a word all end in `ConnectionLost(None)`, once the
/// peer has read every byte we sent, and within the drain (1 s) of the quiet one. Reporting the
/// last two would make nearly every close an error: most TLS stacks (rustls, Go's, browsers,
/// Python's `ssl` sockets) never answer close_notify.
#[actix_rt::test]
async fn after_our_close_how_the_peer_ends_its_stream_is_no_error() {
    deadline(async {
        let cert = Arc::new(localhost());
        #[derive(Debug, Clone, Copy, PartialEq)]
        enum Peer {
            Answers,
            KeepsQuiet,
            HangsUp,
        }
        for peer in [Peer::Answers, Peer::KeepsQuiet, Peer::HangsUp] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let server_cert = cert.clone();
            let server = tokio::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                let mut tls = raw_server(stream, &server_cert).await;
                let mut got = Vec::new();
                tls.read_to_end(&mut got).await.expect("our close_notify");
                match peer {
                    Peer::Answers => tls.shutdown().await.unwrap(),
                    // Longer than the close's 1 s drain.
                    Peer::KeepsQuiet => tokio::time::sleep(Duration::from_secs(3)).await,
                    Peer::HangsUp => tls.get_mut().shutdown().await.unwrap(),
                }
                got
            });
            let (probe, mut events) = ProbeOptions::default().probe();
            let (transport, _) = cert
                .connector()
                .unwrap()
                .connect(&addr, || probe.start())
                .await
                .unwrap();
            events.made().await;
            transport.write("last words");
            transport.close();
            let closing = tokio::time::Instant::now();
            let err = events.until_lost().await;
            assert!(err.is_none(), "{peer:?}: {err:?}");
            assert!(
                closing.elapsed() < Duration::from_millis(2500),
                "{peer:?}: the close took {:?}",
                closing.elapsed()
            );
            assert_eq!(server.await.unwrap(), b"last words", "{peer:?}");
            // The TLS keys answer after the end too, as asyncio's do (the descriptor does not).
            let deadline = tokio::time::Instant::now() + support::TIMEOUT;
            while transport.is_alive() {
                assert!(tokio::time::Instant::now() < deadline);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let cipher = transport.cipher().await.expect("cipher after the end");
            assert!(cipher.protocol.starts_with("TLSv1."), "{cipher:?}");
            assert!(
                transport.get_extra_info(keys::SSLCONTEXT).await.is_some(),
                "sslcontext after the end"
            );
            assert!(
                transport.peer_addr().await.is_some(),
                "peername after the end"
            );
            assert_eq!(transport.socket().await, None);
        }
    })
    .await
}

/// A TLS transport's write buffer defaults to asyncio's SSL marks (512 KiB / 128 KiB), on
/// either side, and `SetWriteBufferLimits` derives missing marks from them; limits chosen in
/// the config stay. A plaintext transport takes the TLS defaults when `StartTls` succeeds,
/// unless limits were chosen.
#[actix_rt::test]
async fn tls_transports_default_to_asyncio_s_tls_write_buffer_limits() {
    deadline(async {
        let tls_limits = (128 * 1024, 512 * 1024);
        let cert = localhost();
        let (server, mut probes, _) = probe_server(cert.acceptor().unwrap()).await;
        let (probe, mut events) = ProbeOptions::default().probe();
        let (client, _) = cert
            .connector()
            .unwrap()
            .connect(&addr_of(&server), || probe.start())
            .await
            .unwrap();
        events.made().await;
        let served = probes.recv().await.unwrap().made().await;
        for transport in [&client, &served] {
            let limits = transport.send(switchboard::GetWriteBufferLimits).await;
            assert_eq!(limits.unwrap(), tls_limits);
        }
        let set = |high, low| switchboard::SetWriteBufferLimits { high, low };
        client.send(set(None, None)).await.unwrap().unwrap();
        assert_eq!(
            client
                .send(switchboard::GetWriteBufferLimits)
                .await
                .unwrap(),
            tls_limits,
            "missing marks are TLS's defaults"
        );
        client
            .send(set(Some(100 * 1024), None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            client
                .send(switchboard::GetWriteBufferLimits)
                .await
                .unwrap(),
            (25 * 1024, 100 * 1024)
        );

        let chosen = WriteBufferLimits::new(4096, 1024).unwrap();
        let (probe, mut events) = ProbeOptions::default().probe();
        let (client, _) = cert
            .connector()
            .unwrap()
            .config(StreamConfig::default().write_buffer_limits(chosen))
            .connect(&addr_of(&server), || probe.start())
            .await
            .unwrap();
        events.made().await;
        assert_eq!(
            client
                .send(switchboard::GetWriteBufferLimits)
                .await
                .unwrap(),
            (1024, 4096)
        );

        // StartTls on a plaintext transport.
        for choose_first in [false, true] {
            let (transport, _probe, peer, _events) =
                tls_support::probed_upgradable(ProbeOptions::default()).await;
            assert_eq!(
                transport
                    .send(switchboard::GetWriteBufferLimits)
                    .await
                    .unwrap(),
                (16 * 1024, 64 * 1024),
                "plaintext: TCP's defaults"
            );
            if choose_first {
                transport
                    .send(set(Some(8192), None))
                    .await
                    .unwrap()
                    .unwrap();
            }
            let support::Peer::Tcp(peer) = peer else {
                unreachable!()
            };
            let acceptor = cert.acceptor().unwrap();
            let (tls, upgraded) = tokio::join!(
                tls_support::raw_client(peer, &cert),
                transport.start_tls(acceptor.start_tls().unwrap())
            );
            upgraded.expect("handshake");
            let expected = if choose_first {
                (2048, 8192)
            } else {
                tls_limits
            };
            assert_eq!(
                transport
                    .send(switchboard::GetWriteBufferLimits)
                    .await
                    .unwrap(),
                expected,
                "chosen first: {choose_first}"
            );
            drop(tls);
        }
    })
    .await
}

/// A TLS server's factory runs after the handshake; one that panics there ends only its
/// connection, as on TCP: the client sees it end with nothing served, and the server goes on
/// serving the others on the same worker.
#[actix_rt::test]
async fn a_factory_that_panics_after_the_handshake_ends_only_its_connection() {
    deadline(async {
        let cert = localhost();
        let (factory, mut probes) = probe_factory(ProbeOptions::default());
        let made = Arc::new(AtomicUsize::new(0));
        let counted = made.clone();
        let server = tls::serve_with(
            "127.0.0.1:0",
            ServerOptions::default().workers(1),
            cert.acceptor().unwrap(),
            move || {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                assert!(n % 3 != 2, "factory told to panic for connection {n}");
                factory()
            },
        )
        .await
        .unwrap();
        let mut served = Vec::new();
        for n in 0..9 {
            let stream = TcpStream::connect(addr_of(&server)).await.unwrap();
            let mut tls = tls_support::raw_client(stream, &cert).await;
            if n % 3 == 2 {
                let mut rest = Vec::new();
                // A TCP end without close_notify: an error or an EOF, and nothing before it.
                let _ = tokio::time::timeout(support::TIMEOUT, tls.read_to_end(&mut rest))
                    .await
                    .expect("the connection whose factory panicked ends");
                assert!(rest.is_empty(), "connection {n} was served");
            } else {
                let mut events = probes.recv().await.unwrap();
                events.made().await;
                tls.write_all(format!("connection {n}").as_bytes())
                    .await
                    .unwrap();
                assert_eq!(events.data(12).await, format!("connection {n}").as_bytes());
                served.push((tls, events));
            }
        }
        assert_eq!(made.load(Ordering::SeqCst), 9);
        let stats = server.stats().await;
        assert_eq!((stats.connections, stats.accepted), (6, 9));
        for (tls, events) in &mut served {
            tls.write_all(b"still here").await.unwrap();
            assert_eq!(events.data(10).await, b"still here");
        }
    })
    .await
}
