//! `StartTls` on a live plaintext transport (DESIGN.md guarantee 11), on the server side and
//! the client side, against raw tokio-openssl peers: ordering after queued plaintext, writes
//! held during the handshake, buffered plaintext discarded (or fed to TLS when asked), the
//! protocol keeping its handle, and a failed handshake ending the connection with its error.

mod support;
use support::tls as tls_support;

use std::time::Duration;

use support::{Kind, Peer, ProbeOptions, ReleaseAcks, deadline, probed, wait_until_buffered};
use switchboard::{
    Framing, ServerOptions, TlsError, TlsErrorKind, keys,
    tls::{self, TlsAcceptor},
};
use tls_support::{localhost, probed_upgradable, raw_client, raw_server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::LinesCodec;

fn acceptor() -> (switchboard::tls::SelfSigned, TlsAcceptor) {
    let cert = localhost();
    let acceptor = cert.acceptor().expect("acceptor");
    (cert, acceptor)
}

#[actix_rt::test]
async fn server_side_start_tls_is_ordered_between_the_writes_around_it() {
    deadline(async {
        let (cert, acceptor) = acceptor();
        let (transport, _probe, mut peer, mut events) =
            probed_upgradable(ProbeOptions::default()).await;
        assert_eq!(transport.get_extra_info(keys::CIPHER).await, None);

        // One burst from the protocol's point of view: plaintext, the upgrade, more data.
        transport.write("plain before\n");
        let upgraded = transport.start_tls(acceptor.start_tls().unwrap());
        transport.write("secret after\n");

        // The plaintext comes first, in the clear; then the TLS session starts.
        assert_eq!(peer.read_n(13).await, b"plain before\n");
        let (mut tls, result) = tokio::join!(raw_client(peer, &cert), upgraded);
        result.expect("the handshake succeeded");
        let mut after = [0; 13];
        tls.read_exact(&mut after).await.unwrap();
        assert_eq!(&after, b"secret after\n", "held write goes out encrypted");

        // Same handle, no second ConnectionMade; reading resumes over TLS.
        tls.write_all(b"hello over tls").await.unwrap();
        assert_eq!(events.data(14).await, b"hello over tls");
        let cipher = transport.cipher().await.expect("TLS keys after StartTls");
        assert_eq!(cipher.protocol, "TLSv1.3");
        let session = transport.tls_session().await.unwrap();
        assert!(session.server_side);
        assert!(transport.peer_addr().await.is_some(), "socket keys remain");

        // Close after an upgrade sends close_notify: the peer sees a clean end.
        transport.write("bye");
        transport.close();
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest)
            .await
            .expect("a clean close_notify, not a truncation");
        assert_eq!(rest, b"bye");
        assert!(events.until_lost().await.is_none());
        assert!(
            !events.seen().iter().skip(1).any(|seen| *seen == "Made"),
            "{:?}",
            events.seen()
        );
    })
    .await
}

#[actix_rt::test]
async fn client_side_start_tls_upgrades_against_a_tls_server() {
    deadline(async {
        let cert = localhost();
        let connector = cert.connector().unwrap();
        let (transport, _probe, peer, mut events) =
            probed_upgradable(ProbeOptions::default()).await;
        let Peer::Tcp(mut stream) = peer else {
            unreachable!()
        };
        transport.write("STARTTLS\r\n");
        let mut line = [0; 10];
        stream.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"STARTTLS\r\n");
        stream.write_all(b"220 go ahead\r\n").await.unwrap();
        assert_eq!(events.data(14).await, b"220 go ahead\r\n");

        let server = tokio::spawn(async move {
            let mut tls = raw_server(stream, &cert).await;
            tls.write_all(b"welcome").await.unwrap();
            let mut buf = [0; 4];
            tls.read_exact(&mut buf).await.unwrap();
            buf
        });
        // Verified: the connector trusts that certificate, made out to localhost.
        transport
            .start_tls(connector.start_tls("localhost").unwrap())
            .await
            .expect("client handshake");
        assert_eq!(events.data(7).await, b"welcome");
        transport.write("ping");
        assert_eq!(&server.await.unwrap(), b"ping");
        let session = transport.tls_session().await.unwrap();
        assert!(!session.server_side);
        assert_eq!(session.peer_chain.len(), 1);
        assert_eq!(
            session.server_name.as_deref(),
            Some("localhost"),
            "SNI sent"
        );
        transport.abort();
        events.until_lost().await;
    })
    .await
}

#[actix_rt::test]
async fn plaintext_buffered_when_start_tls_arrives_is_discarded() {
    deadline(async {
        let (cert, acceptor) = acceptor();
        let (transport, probe, mut peer, mut events) =
            probed_upgradable(ProbeOptions::holding_acks()).await;
        peer.write_all(b"STARTTLS\r\n").await.unwrap();
        assert_eq!(events.data(10).await, b"STARTTLS\r\n");
        // The protocol is still busy with that line when an injected command arrives.
        peer.write_all(b"RSET\r\n").await.unwrap();
        wait_until_buffered(&transport, 6).await;

        let upgraded = transport.start_tls(acceptor.start_tls().unwrap());
        probe
            .send(ReleaseAcks {
                keep_holding: false,
            })
            .await
            .unwrap();
        let (mut tls, result) = tokio::join!(raw_client(peer, &cert), upgraded);
        result.unwrap();
        tls.write_all(b"NOOP\r\n").await.unwrap();
        assert_eq!(
            events.data(6).await,
            b"NOOP\r\n",
            "the injected plaintext must never reach the protocol"
        );
        drop(tls);
        events.until_lost().await;
    })
    .await
}

#[actix_rt::test]
async fn feed_to_tls_hands_buffered_bytes_to_the_handshake() {
    deadline(async {
        let (cert, acceptor) = acceptor();
        let (transport, probe, mut peer, mut events) =
            probed_upgradable(ProbeOptions::holding_acks()).await;
        // A PROXY-style line, then at once the ClientHello, read together by the transport.
        peer.write_all(b"UPGRADE\r\n").await.unwrap();
        assert_eq!(events.data(9).await, b"UPGRADE\r\n");
        let client = tokio::spawn(async move {
            let mut tls = raw_client(peer, &cert).await;
            tls.write_all(b"inside").await.unwrap();
            tls
        });
        wait_until_buffered(&transport, 1).await;
        let upgraded = transport.start_tls(acceptor.start_tls().unwrap().feed_to_tls(""));
        probe
            .send(ReleaseAcks {
                keep_holding: false,
            })
            .await
            .unwrap();
        upgraded
            .await
            .expect("the buffered ClientHello went to TLS");
        assert_eq!(events.data(6).await, b"inside");
        drop(client.await.unwrap());
        events.until_lost().await;
    })
    .await
}

#[actix_rt::test]
async fn discarding_a_buffered_client_hello_leaves_the_handshake_to_time_out() {
    deadline(async {
        let (cert, acceptor) = acceptor();
        let acceptor = TlsAcceptor::new(acceptor.ssl_acceptor().clone())
            .handshake_timeout(Duration::from_millis(300))
            .unwrap();
        let (transport, probe, mut peer, mut events) =
            probed_upgradable(ProbeOptions::holding_acks()).await;
        peer.write_all(b"UPGRADE\r\n").await.unwrap();
        assert_eq!(events.data(9).await, b"UPGRADE\r\n");
        let client = tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), raw_client(peer, &cert)).await;
        });
        wait_until_buffered(&transport, 1).await;
        let upgraded = transport.start_tls(acceptor.start_tls().unwrap());
        probe
            .send(ReleaseAcks {
                keep_holding: false,
            })
            .await
            .unwrap();
        let err = upgraded.await.expect_err("the ClientHello was discarded");
        assert_eq!(err.kind(), TlsErrorKind::TimedOut, "{err}");
        let lost = events
            .until_lost()
            .await
            .expect("ConnectionLost(Some(err))");
        assert_eq!(
            TlsError::of(&lost).map(TlsError::kind),
            Some(TlsErrorKind::TimedOut)
        );
        client.abort();
    })
    .await
}

#[actix_rt::test]
async fn a_failed_start_tls_handshake_ends_in_connection_lost_with_the_error() {
    deadline(async {
        let (_cert, acceptor) = acceptor();
        let (transport, _probe, mut peer, mut events) =
            probed_upgradable(ProbeOptions::default()).await;
        let upgraded = transport.start_tls(acceptor.start_tls().unwrap());
        // A peer that does not speak TLS.
        peer.write_all(b"HELO this is not a ClientHello\r\n\r\n")
            .await
            .unwrap();
        let err = upgraded.await.expect_err("not TLS");
        assert_eq!(err.kind(), TlsErrorKind::Handshake, "{err}");
        let lost = events.until_lost().await.expect("an error");
        assert_eq!(TlsError::of(&lost), Some(&err));
        assert_eq!(lost.kind(), std::io::ErrorKind::InvalidData);
        let (_, _) = peer.read_to_end_or_error().await;
    })
    .await
}

#[actix_rt::test]
async fn start_tls_refuses_what_it_cannot_do_and_the_connection_goes_on() {
    deadline(async {
        let (cert, acceptor) = acceptor();
        // A transport spawned over a bare socket has no TLS layer.
        let (bare, _probe, mut peer, mut events) =
            probed(Kind::Unix, ProbeOptions::default()).await;
        let err = bare
            .start_tls(acceptor.start_tls().unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), TlsErrorKind::Unsupported, "{err}");
        bare.write("still plain");
        assert_eq!(peer.read_n(11).await, b"still plain");
        peer.write_all(b"and reading").await.unwrap();
        assert_eq!(events.data(11).await, b"and reading");

        // A TLS transport is encrypted already; a second StartTls while one runs is refused.
        let (factory, mut probes) = support::probe_factory(ProbeOptions::default());
        let server = tls::serve_with(
            "127.0.0.1:0",
            ServerOptions::default().workers(1),
            acceptor.clone(),
            factory,
        )
        .await
        .unwrap();
        let (client, _) = cert
            .connector()
            .unwrap()
            .connect(&server.addresses()[0].to_string(), || {
                support::ProbeOptions::default().probe().0.start()
            })
            .await
            .unwrap();
        let err = client
            .start_tls(cert.connector().unwrap().start_tls("localhost").unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), TlsErrorKind::InvalidState, "{err}");
        client.write("ok");
        let mut served = probes.recv().await.unwrap();
        served.made().await;
        assert_eq!(served.data(2).await, b"ok");
        client.close();
        server.close().await;

        let (plain, _probe, _peer, _events) = probed_upgradable(ProbeOptions::default()).await;
        let first = plain.start_tls(acceptor.start_tls().unwrap());
        let second = plain
            .start_tls(acceptor.start_tls().unwrap())
            .await
            .unwrap_err();
        assert_eq!(second.kind(), TlsErrorKind::InvalidState);
        plain.close();
        let closing = plain
            .start_tls(acceptor.start_tls().unwrap())
            .await
            .unwrap_err();
        assert_eq!(closing.kind(), TlsErrorKind::InvalidState);
        plain.abort();
        assert_eq!(
            first.await.unwrap_err().kind(),
            TlsErrorKind::ConnectionEnded
        );
    })
    .await
}

#[actix_rt::test]
async fn start_tls_works_over_unix_sockets_served_by_switchboard() {
    deadline(async {
        let (cert, acceptor) = acceptor();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tls.sock");
        let (factory, mut probes) = support::probe_factory(ProbeOptions::default());
        let server =
            switchboard::unix::serve_with(&path, ServerOptions::default().workers(1), factory)
                .await
                .unwrap();
        let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
        let mut events = probes.recv().await.unwrap();
        let transport = events.made().await;
        let upgraded = transport.start_tls(acceptor.start_tls().unwrap());
        let (mut tls, result) = tokio::join!(raw_client(stream, &cert), upgraded);
        result.unwrap();
        tls.write_all(b"over unix").await.unwrap();
        assert_eq!(events.data(9).await, b"over unix");
        assert!(transport.cipher().await.is_some());
        drop(tls);
        events.until_lost().await;
        server.close().await;
    })
    .await
}

/// Guarantee 11, client side (CVE-2011-0411's class): a server (or someone on the path) that
/// sends plaintext after its go-ahead gets no upgrade. The client written the obvious way hands
/// its parser's leftover over with `Framing::start_tls`; the upgrade is refused, no ClientHello
/// leaves, and the connection ends with an `Injection` error.
#[actix_rt::test]
async fn client_side_start_tls_refuses_plaintext_injected_after_the_go_ahead() {
    deadline(async {
        let cert = localhost();
        let connector = cert.connector().unwrap();
        let (transport, _probe, peer, mut events) =
            probed_upgradable(ProbeOptions::default()).await;
        let Peer::Tcp(mut stream) = peer else {
            unreachable!()
        };
        // The go-ahead and an injected reply to the EHLO the client will send after the
        // upgrade, in one segment.
        stream
            .write_all(b"220 go ahead\r\n250 INJECTED\r\n")
            .await
            .unwrap();
        let mut lines = Framing::new(LinesCodec::new());
        lines.feed(&events.data(28).await);
        assert_eq!(lines.next_frame().unwrap().as_deref(), Some("220 go ahead"));
        let refused = transport
            .start_tls(lines.start_tls(connector.start_tls("localhost").unwrap()))
            .await
            .expect_err("plaintext after the go-ahead");
        assert_eq!(refused.kind(), TlsErrorKind::Injection, "{refused}");
        assert!(refused.message().contains("14 bytes"), "{refused}");
        let lost = events.until_lost().await.expect("an error");
        assert_eq!(
            TlsError::of(&lost).map(TlsError::kind),
            Some(TlsErrorKind::Injection)
        );
        // Nothing reached the server: no ClientHello, the connection just ends.
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "{rest:?}");
    })
    .await
}

/// The same on the mock, and on the server side: a client that pipelines bytes behind its
/// `STARTTLS` command, parsed by the server with `Framing`, gets no upgrade.
#[actix_rt::test]
async fn server_side_start_tls_refuses_what_the_client_pipelined_behind_the_command() {
    let (probe, mut events) = ProbeOptions::default().probe();
    let mock = switchboard::testing::MockTransport::builder()
        .connect(probe.start())
        .await;
    let transport = events.made().await;
    mock.feed("STARTTLS\r\nMAIL FROM:<evil@example>\r\n").await;
    let mut lines = Framing::new(LinesCodec::new());
    lines.feed(&events.data(36).await);
    assert_eq!(lines.next_frame().unwrap().as_deref(), Some("STARTTLS"));
    let (_, acceptor) = acceptor();
    let refused = transport
        .start_tls(lines.start_tls(acceptor.start_tls().unwrap()))
        .await
        .expect_err("pipelined plaintext");
    assert_eq!(refused.kind(), TlsErrorKind::Injection);
    let lost = events.until_lost().await.expect("an error");
    assert_eq!(
        TlsError::of(&lost).map(TlsError::kind),
        Some(TlsErrorKind::Injection)
    );
    // Without leftover, the same upgrade goes ahead (the mock's handshake succeeds at once).
    let (probe, mut events) = ProbeOptions::default().probe();
    let mock = switchboard::testing::MockTransport::builder()
        .connect(probe.start())
        .await;
    let transport = events.made().await;
    mock.feed("STARTTLS\r\n").await;
    let mut lines = Framing::new(LinesCodec::new());
    lines.feed(&events.data(10).await);
    assert_eq!(lines.next_frame().unwrap().as_deref(), Some("STARTTLS"));
    transport
        .start_tls(lines.start_tls(acceptor.start_tls().unwrap()))
        .await
        .expect("nothing pipelined: upgraded");
    mock.feed("EHLO over tls\r\n").await;
    lines.feed(&events.data(15).await);
    assert_eq!(
        lines.next_frame().unwrap().as_deref(),
        Some("EHLO over tls"),
        "the same Framing goes on over TLS"
    );
}
