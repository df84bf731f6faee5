//! Guarantees 6 (close and abort) and 7 (half-close), over TCP, Unix sockets, TLS and the mock.

mod support;

use std::{
    io,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use support::{
    Event, Kind, ProbeOptions, Sent, pair, probed, probed_upgradable, probed_without_half_close,
    send_all,
};
use switchboard::{prelude::*, stream::StreamConfig};
use tokio::io::AsyncWriteExt;

for_each_kind!([tcp, unix, tls, mock] =>
    close_with_ten_mib_queued_delivers_all_of_it,
    abort_delivers_none_of_it_and_resets,
    close_and_abort_are_idempotent_and_abort_overrides_close,
    is_closing_is_true_from_close_on,
    close_drains_unread_input_so_the_peer_gets_everything,
    peer_eof_closes_after_flushing_by_default,
    eof_is_delivered_after_the_data_and_never_while_paused,
);

for_each_kind!([tcp, unix, tls, mock] => writes_after_close_are_refused_and_never_reach_the_wire);

// TLS has no half-close: it cannot keep a connection open after the peer's EOF, nor write an EOF.
for_each_kind!([tcp, unix, mock] =>
    keep_open_leaves_the_connection_writable,
    write_eof_flushes_then_half_closes_and_reading_goes_on,
);

// The transports that cannot half-close: TLS, and the mock acting one out.
for_each_kind!([tls, mock] => keep_open_has_no_effect_where_half_close_is_impossible);

// The plaintext transports that can StartTls (TLS is one already).
for_each_kind!([tcp, unix, mock] => after_start_tls_the_transport_cannot_half_close);

const TEN_MIB: usize = 10 * 1024 * 1024;

async fn close_with_ten_mib_queued_delivers_all_of_it(kind: Kind) {
    let (transport, _, mut peer, mut events) = probed(kind, ProbeOptions::default()).await;
    let data = support::pattern(0, TEN_MIB);
    transport.write(data.clone());
    transport.close();
    assert!(transport.is_closing().await);
    let (received, err) = peer.read_to_end_or_error().await;
    assert!(err.is_none(), "clean EOF expected, got {err:?}");
    assert_eq!(received.len(), TEN_MIB);
    assert!(received == data[..], "bytes corrupted");
    assert!(events.until_lost().await.is_none());
}

async fn abort_delivers_none_of_it_and_resets(kind: Kind) {
    let (transport, _, mut peer, mut events) = probed(kind, ProbeOptions::default()).await;
    // The peer reads nothing yet. A socket transport handles both commands in one mailbox pass,
    // before writing anything; the mock writes at once to a peer that reads, so it must not.
    peer.stop_reading();
    transport.write(vec![1u8; TEN_MIB]);
    transport.abort();
    assert!(
        events.until_lost().await.is_none(),
        "abort ends in ConnectionLost(None)"
    );
    let (received, err) = peer.read_to_end_or_error().await;
    assert!(
        received.is_empty(),
        "abort delivered {} bytes",
        received.len()
    );
    if kind.resets() {
        let err = err.expect("the peer sees a reset");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }
}

async fn close_and_abort_are_idempotent_and_abort_overrides_close(kind: Kind) {
    let (transport, _, mut peer, mut events) = probed(kind, ProbeOptions::default()).await;
    // The peer does not read: the close cannot finish flushing, so the abort cuts it short.
    peer.stop_reading();
    transport.write(vec![1u8; 64 * TEN_MIB / 10]);
    transport.close();
    transport.close();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(transport.send(GetWriteBufferSize).await.unwrap() > 0);
    transport.abort();
    transport.abort();
    assert!(
        events.until_lost().await.is_none(),
        "exactly one ConnectionLost"
    );
    drop(peer);
}

async fn is_closing_is_true_from_close_on(kind: Kind) {
    let (transport, _, mut peer, mut events) = probed(kind, ProbeOptions::default()).await;
    assert!(!transport.send(IsClosing).await.unwrap());
    peer.stop_reading();
    transport.write(vec![1u8; TEN_MIB]); // the close stays pending while the peer does not read
    transport.close();
    assert!(transport.send(IsClosing).await.unwrap());
    assert!(!transport.send(IsReading).await.unwrap());
    transport.abort();
    assert!(events.until_lost().await.is_none());
}

async fn writes_after_close_are_refused_and_never_reach_the_wire(kind: Kind) {
    let (transport, _, mut peer, mut events) = probed(kind, ProbeOptions::default()).await;
    let before = transport.write_acked("before close;");
    transport.close();
    transport.write("fire-and-forget after close;");
    let after = transport.write_acked("acknowledged after close;");
    before.await.expect("written before the close");
    let err = after.await.expect_err("refused");
    assert_eq!(WriteError::of(&err), Some(WriteError::Closing));
    let (received, err) = peer.read_to_end_or_error().await;
    assert!(err.is_none());
    assert_eq!(received, b"before close;");
    assert!(events.until_lost().await.is_none());
}

async fn close_drains_unread_input_so_the_peer_gets_everything(kind: Kind) {
    let (transport, _, mut peer, mut events) = probed(
        kind,
        ProbeOptions {
            pause_on_made: true, // the protocol never reads what the peer sends
            ..ProbeOptions::default()
        },
    )
    .await;
    send_all(&mut peer, &vec![2u8; 100_000]).await; // unread input waiting in the kernel
    let reply = support::pattern(7, 200_000);
    transport.write(reply.clone());
    transport.close();
    // Without the drain, closing a socket with unread input sends a reset, and the peer loses
    // whatever it had not read yet.
    let mut received = Vec::new();
    let mut chunk = vec![0; 4096];
    loop {
        tokio::time::sleep(Duration::from_millis(1)).await; // a slow reader, so the reset would win
        match tokio::io::AsyncReadExt::read(&mut peer, &mut chunk).await {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(err) => panic!("peer lost data to {err} after {} bytes", received.len()),
        }
    }
    assert!(received == reply[..]);
    peer.shutdown_write().await;
    assert!(events.until_lost().await.is_none());
}

async fn peer_eof_closes_after_flushing_by_default(kind: Kind) {
    /// Echoes a big reply, with the `Protocol` defaults: EOF closes after flushing (asyncio's
    /// default).
    struct Echo;
    impl Protocol for Echo {
        type Codec = Raw;
        fn data_received(&mut self, data: Bytes, cx: &mut Ctx<'_, Self>) {
            // A big reply, so the close has something to flush.
            let reply: Vec<u8> = data
                .iter()
                .cycle()
                .take(data.len() * 1000)
                .copied()
                .collect();
            cx.write(reply);
        }
    }
    let (transport, _, mut peer) = pair(kind, StreamConfig::default(), || Echo).await;
    send_all(&mut peer, b"0123456789").await;
    peer.shutdown_write().await;
    let (received, err) = peer.read_to_end_or_error().await;
    assert!(err.is_none());
    assert_eq!(
        received.len(),
        10_000,
        "everything flushed before the close"
    );
    support::stopped(&transport).await;
}

async fn keep_open_leaves_the_connection_writable(kind: Kind) {
    let (transport, _, mut peer, mut events) = probed(
        kind,
        ProbeOptions {
            keep_open_on_eof: true,
            ..ProbeOptions::default()
        },
    )
    .await;
    send_all(&mut peer, b"question").await;
    peer.shutdown_write().await;
    assert_eq!(events.data_until_eof().await, b"question");
    events.assert_quiet(Duration::from_millis(200)).await; // still open
    transport
        .write_acked("late answer")
        .await
        .expect("writable after the peer's EOF");
    transport.close();
    let (received, err) = peer.read_to_end_or_error().await;
    assert!(err.is_none());
    assert_eq!(received, b"late answer");
    assert!(events.lost().await.is_none());
}

async fn write_eof_flushes_then_half_closes_and_reading_goes_on(kind: Kind) {
    let (transport, _, mut peer, mut events) = probed(kind, ProbeOptions::default()).await;
    assert!(transport.send(CanWriteEof).await.unwrap());
    let data = support::pattern(3, 1024 * 1024);
    transport.write(data.clone());
    let eof = transport.send(WriteEof);
    let (received, err) = peer.read_to_end_or_error().await;
    assert!(err.is_none());
    assert!(received == data[..], "flushed before the FIN");
    eof.await.unwrap().expect("the FIN was sent");
    // Writing is over; reading is not.
    let err = transport.write_acked("after eof").await.unwrap_err();
    assert_eq!(WriteError::of(&err), Some(WriteError::AfterEof));
    send_all(&mut peer, b"still listening").await;
    assert_eq!(events.data(15).await, b"still listening");
    // WriteEof again is fine.
    transport.send(WriteEof).await.unwrap().unwrap();
    peer.shutdown_write().await;
    assert!(events.data_until_eof().await.is_empty());
    assert!(events.lost().await.is_none());
}

async fn eof_is_delivered_after_the_data_and_never_while_paused(kind: Kind) {
    let (transport, probe, mut peer, mut events) = probed(kind, ProbeOptions::holding_acks()).await;
    send_all(&mut peer, b"first").await;
    assert_eq!(events.data(5).await, b"first");
    send_all(&mut peer, b"second").await;
    peer.shutdown_write().await;
    support::wait_until_buffered(&transport, 6).await;
    transport.pause_reading();
    probe.do_send(support::ReleaseAcks {
        keep_holding: false,
    });
    events.assert_quiet(Duration::from_millis(200)).await; // neither the data nor the EOF
    transport.resume_reading();
    assert_eq!(events.data_until_eof().await, b"second");
    assert!(events.lost().await.is_none());
    let _ = peer.flush().await;
}

/// Asyncio's rule, and the mock's since it runs the core: `keep_open()` keeps a half-open
/// connection only where the transport can half-close. Where it cannot, the answer has no
/// effect: the transport closes as if the protocol had let the EOF close it.
async fn keep_open_has_no_effect_where_half_close_is_impossible(kind: Kind) {
    let (transport, _, mut peer, mut events) = probed_without_half_close(
        kind,
        ProbeOptions {
            keep_open_on_eof: true,
            ..ProbeOptions::default()
        },
    )
    .await;
    assert!(!transport.send(CanWriteEof).await.unwrap());
    send_all(&mut peer, b"question").await;
    peer.shutdown_write().await;
    assert_eq!(events.data_until_eof().await, b"question");
    if let Some(mock) = peer.mock() {
        // The probe did answer keep_open (on TLS only its effect shows).
        let answers: Vec<bool> = mock
            .take_commands()
            .into_iter()
            .filter_map(|sent| match sent {
                Sent::EofAnswered { keep_open } => Some(keep_open),
                _ => None,
            })
            .collect();
        assert_eq!(answers, [true]);
    }
    assert!(
        events.lost().await.is_none(),
        "closed cleanly in spite of keep_open"
    );
    let (rest, err) = peer.read_to_end_or_error().await;
    assert!(err.is_none(), "the peer sees a clean end, not {err:?}");
    assert!(rest.is_empty());
    support::stopped(&transport).await;
}

/// A plaintext transport can half-close until it starts TLS; then it cannot, as a TLS transport
/// cannot: `CanWriteEof` answers false, `WriteEof` is refused, and the peer's EOF closes it even
/// when the protocol answers `keep_open()`.
async fn after_start_tls_the_transport_cannot_half_close(kind: Kind) {
    let (transport, _, peer, mut events) = probed_upgradable(
        kind,
        ProbeOptions {
            keep_open_on_eof: true,
            ..ProbeOptions::default()
        },
    )
    .await;
    assert!(transport.send(CanWriteEof).await.unwrap(), "plaintext");
    let upgraded = transport.start_tls(support::server_start_tls());
    let (mut peer, upgraded) = tokio::join!(peer.start_tls_client(), upgraded);
    upgraded.expect("the handshake succeeded");
    assert!(
        !transport.send(CanWriteEof).await.unwrap(),
        "TLS cannot half-close"
    );
    let err = transport.send(WriteEof).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{err}");

    // The connection goes on, and reads and writes as before.
    transport.write("over tls");
    assert_eq!(peer.read_n(8).await, b"over tls");
    send_all(&mut peer, b"answer").await;
    peer.shutdown_write().await;
    assert_eq!(events.data_until_eof().await, b"answer");
    assert!(
        events.lost().await.is_none(),
        "closed cleanly in spite of keep_open"
    );
    let (rest, err) = peer.read_to_end_or_error().await;
    assert!(err.is_none(), "the peer sees a clean end, not {err:?}");
    assert!(rest.is_empty());
}

/// A Unix socket that counts its shutdowns and says whether dropping it closes completely after
/// the peer's EOF, as a TLS layer (which owes a close_notify) says no.
struct CountedShutdowns {
    io: tokio::net::UnixStream,
    shutdowns: Arc<AtomicUsize>,
    drop_closes_after_eof: bool,
}

impl tokio::io::AsyncRead for CountedShutdowns {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for CountedShutdowns {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.shutdowns.fetch_add(1, SeqCst);
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

impl switchboard::stream::StreamIo for CountedShutdowns {
    fn extra_info(&self, _: &str) -> Option<ExtraInfo> {
        None
    }

    fn drop_closes_after_eof(&self) -> bool {
        self.drop_closes_after_eof
    }
}

#[actix_rt::test]
async fn close_after_the_peers_eof_shuts_down_only_where_dropping_is_not_enough() {
    for drop_closes_after_eof in [true, false] {
        let (io, mut peer) = tokio::net::UnixStream::pair().expect("socket pair");
        let shutdowns = Arc::new(AtomicUsize::new(0));
        let io = CountedShutdowns {
            io,
            shutdowns: shutdowns.clone(),
            drop_closes_after_eof,
        };
        // The probe lets the EOF close the transport, as asyncio's default does.
        let (probe, mut events) = ProbeOptions::default().probe();
        let _ = switchboard::stream::spawn(io, StreamConfig::default(), || probe.start());
        events.made().await;
        peer.shutdown().await.expect("the peer's EOF");
        assert!(matches!(events.next().await, Some(Event::Eof)));
        let lost = support::deadline(events.lost()).await;
        assert!(lost.is_none(), "a clean close, not {lost:?}");
        let mut rest = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut peer, &mut rest)
            .await
            .expect("the peer reads our EOF");
        assert!(rest.is_empty());
        let expected = if drop_closes_after_eof { 0 } else { 1 };
        assert_eq!(
            shutdowns.load(SeqCst),
            expected,
            "drop_closes_after_eof = {drop_closes_after_eof}"
        );
    }
}
