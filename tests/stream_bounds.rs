//! Guarantee 5's "bounded by default" and guarantee 14's timeouts, over TCP, Unix sockets, TLS
//! and the mock (where each applies; see the lists below): what a peer that does not read, or
//! says nothing, can cost a protocol that never thinks about it.

mod support;

use std::{io, time::Duration};

use actix::prelude::*;
use futures::future::join_all;
use support::{Kind, ProbeOptions, pair, probed_with};
use switchboard::{
    Timeout, WriteError,
    prelude::*,
    stream::{DEFAULT_READ_BUFFER_LIMIT, StreamConfig},
    testing::MockTransport,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

for_each_kind!([tcp, unix, tls, mock] =>
    the_obvious_echo_stays_bounded_by_a_peer_that_does_not_read,
    a_protocol_that_writes_past_the_maximum_is_aborted_with_buffer_full,
);

// Not the mock: its clock moves only when a test says (see the mock's own test below).
for_each_kind!([tcp, unix, tls] =>
    a_silent_peer_is_closed_by_the_first_byte_timeout,
    an_idle_connection_tells_a_protocol_that_asks_then_ends,
);

/// The obvious echo, the one chapter 1 teaches: one write per chunk and nothing else. It has no
/// `pause_writing` of its own: the `Protocol` default stops reading while its echo waits.
struct Echo;

impl Protocol for Echo {
    type Codec = Raw;
    fn data_received(&mut self, data: Bytes, cx: &mut Ctx<'_, Self>) {
        cx.write(data);
    }
}

const MIB: usize = 1024 * 1024;

async fn the_obvious_echo_stays_bounded_by_a_peer_that_does_not_read(kind: Kind) {
    let (transport, _, mut peer) = pair(kind, StreamConfig::default(), || Echo).await;
    let (_, high) = kind.default_write_buffer_limits();
    // The peer sends 24 MiB and reads nothing until it has sent them all: more than the kernel
    // buffers of both sides hold, so the writer blocks unless the transport keeps reading.
    let data: Vec<u8> = (0..24 * MIB).map(|i| (i % 251) as u8).collect();
    peer.stop_reading();
    let sent = async {
        let mut peer_sent = 0;
        for chunk in data.chunks(64 * 1024) {
            let write = tokio::time::timeout(Duration::from_millis(500), peer.write_all(chunk));
            if write.await.is_err() {
                // Blocked: the transport stopped reading, as it must.
                break;
            }
            peer_sent += chunk.len();
        }
        peer_sent
    }
    .await;
    let stats = transport.send(GetStats).await.expect("running");
    // What the echo could be made to buffer: the delivery that crosses the high-water mark,
    // and one more: the transport may deliver the next chunk before the protocol's
    // `PauseReading` (its answer to `PauseWriting`) reaches it. Nothing after that.
    let bound = high + 2 * DEFAULT_READ_BUFFER_LIMIT;
    assert!(
        stats.write_buffer_peak <= bound,
        "{kind:?}: the write buffer reached {} bytes (bound {bound})",
        stats.write_buffer_peak
    );
    if kind != Kind::Mock {
        assert!(
            sent < data.len(),
            "{kind:?}: the peer sent everything without reading: nothing held it back"
        );
    }
    // The peer reads: everything it sent comes back, in order, nothing lost.
    let mut echoed = vec![0; sent];
    peer.read_exact(&mut echoed).await.expect("the echo");
    assert!(
        echoed == data[..sent],
        "{kind:?}: the echo is not what was sent"
    );
    transport.close();
}

async fn a_protocol_that_writes_past_the_maximum_is_aborted_with_buffer_full(kind: Kind) {
    const MAX: usize = 256 * 1024;
    let config = StreamConfig::default()
        .max_write_buffer(MAX)
        .expect("above the high-water mark");
    let (transport, _, mut peer, mut events) =
        probed_with(kind, ProbeOptions::default(), config).await;
    peer.stop_reading();
    // A protocol that handles write flow, and goes on writing past `PauseWriting` anyway:
    // 12.5 MiB in 64 KiB writes, far more than the socket buffers take.
    let writes: Vec<_> = (0..200)
        .map(|_| transport.write_acked(vec![7u8; 64 * 1024]))
        .collect();
    let writes = actix_rt::spawn(join_all(writes));
    let lost = events
        .until_lost()
        .await
        .expect("an error, not a clean close");
    assert_eq!(
        WriteError::of(&lost),
        Some(WriteError::BufferFull(MAX)),
        "{lost}"
    );
    assert_eq!(lost.kind(), io::ErrorKind::QuotaExceeded);
    assert!(
        lost.to_string().contains("maximum of 262144 bytes"),
        "the error says what happened: {lost}"
    );
    // Each write has its outcome: written to the kernel, then failed with the connection
    // (the one that went past the maximum and those pending), then refused as the connection
    // had ended.
    let outcomes = writes.await.expect("the writes' outcomes");
    let written = outcomes
        .iter()
        .take_while(|outcome| outcome.is_ok())
        .count();
    let failed: Vec<_> = outcomes[written..]
        .iter()
        .map(|outcome| WriteError::of(outcome.as_ref().expect_err("no success after a failure")))
        .collect();
    let full = failed
        .iter()
        .take_while(|&&err| err == Some(WriteError::BufferFull(MAX)))
        .count();
    assert!(full >= 1, "{kind:?}: {failed:?}");
    assert!(
        failed[full..]
            .iter()
            .all(|&err| matches!(err, Some(WriteError::Aborted | WriteError::Stopped))),
        "{kind:?}: after the end, writes are refused: {failed:?}"
    );
    assert!(
        written * 64 * 1024 <= 32 * MIB,
        "{kind:?}: {written} writes of 64 KiB reached the kernel"
    );
}

async fn a_silent_peer_is_closed_by_the_first_byte_timeout(kind: Kind) {
    const T: Duration = Duration::from_millis(300);
    let config = StreamConfig::default()
        .first_byte_timeout(Some(T))
        .expect("not zero");
    let started = tokio::time::Instant::now();
    let (_, _, mut peer, mut events) = probed_with(kind, ProbeOptions::default(), config).await;
    let lost = events.until_lost().await.expect("a timeout is an error");
    let elapsed = started.elapsed();
    assert_eq!(lost.kind(), io::ErrorKind::TimedOut, "{lost}");
    assert_eq!(Timeout::of(&lost), Some(Timeout::FirstByte(T)), "{lost}");
    assert!(
        elapsed >= T,
        "{kind:?}: ended after {elapsed:?}, before the timeout"
    );
    // The peer sees the connection end (a close: nothing was queued).
    let (_, err) = peer.read_to_end_or_error().await;
    assert!(err.is_none(), "{kind:?}: a clean close, got {err:?}");
}

/// A protocol that asks to be told of timeouts: it says goodbye and closes.
struct Polite {
    transport: Option<TransportHandle>,
    told: Vec<Timeout>,
    lost: Option<tokio::sync::oneshot::Sender<(Vec<Timeout>, Option<io::Error>)>>,
}

impl Actor for Polite {
    type Context = Context<Self>;
}
ignore_events!(Polite: EofReceived, PauseWriting, ResumeWriting);

impl Handler<ConnectionMade> for Polite {
    type Result = ();
    fn handle(&mut self, msg: ConnectionMade, _: &mut Context<Self>) {
        self.transport = Some(msg.transport);
    }
}

impl Handler<DataReceived> for Polite {
    type Result = ();
    fn handle(&mut self, _: DataReceived, _: &mut Context<Self>) {}
}

impl Handler<TimedOut> for Polite {
    type Result = ();
    fn handle(&mut self, msg: TimedOut, _: &mut Context<Self>) {
        self.told.push(msg.timeout);
        if let Some(transport) = &self.transport {
            transport.write("421 idle for too long\r\n");
            transport.close();
        }
    }
}

impl Handler<ConnectionLost> for Polite {
    type Result = ();
    fn handle(&mut self, msg: ConnectionLost, ctx: &mut Context<Self>) {
        if let Some(lost) = self.lost.take() {
            let _ = lost.send((std::mem::take(&mut self.told), msg.0));
        }
        ctx.stop();
    }
}

/// What `Polite` reports at its end: the timeouts it was told of, and how it ended.
type PoliteEnd = tokio::sync::oneshot::Receiver<(Vec<Timeout>, Option<io::Error>)>;

fn polite() -> (impl FnOnce() -> Addr<Polite>, PoliteEnd) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let make = move || {
        let polite = Polite {
            transport: None,
            told: Vec::new(),
            lost: Some(tx),
        };
        polite.start()
    };
    (make, rx)
}

async fn an_idle_connection_tells_a_protocol_that_asks_then_ends(kind: Kind) {
    const T: Duration = Duration::from_millis(300);
    let config = StreamConfig::default()
        .idle_timeout(Some(T))
        .expect("not zero");
    let (make, lost) = polite();
    let (_, _, mut peer) = pair(kind, config, make).await;
    // Activity keeps it open: a byte every T/3 for a while.
    for _ in 0..4 {
        tokio::time::sleep(T / 3).await;
        peer.write_all(b".").await.expect("open");
    }
    let (told, err) = lost.await.expect("ConnectionLost");
    assert_eq!(told, [Timeout::Idle(T)], "told once, then it closed");
    assert!(err.is_none(), "its own close: {err:?}");
    let (said, err) = peer.read_to_end_or_error().await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(said, b"421 idle for too long\r\n");
}

/// The mock's clock moves when the test says: a protocol's timeout handling is tested without
/// waiting.
#[actix_rt::test]
async fn the_mock_runs_the_same_timers_on_its_own_clock() {
    let (make, lost) = polite();
    let mock = MockTransport::builder()
        .idle_timeout(Duration::from_secs(300))
        .connect(make())
        .await;
    mock.advance(Duration::from_secs(299)).await;
    assert!(!mock.is_closing(), "not yet");
    mock.advance(Duration::from_secs(1)).await;
    assert_eq!(mock.written(), "421 idle for too long\r\n");
    let (told, err) = lost.await.expect("ConnectionLost");
    assert_eq!(told, [Timeout::Idle(Duration::from_secs(300))]);
    assert!(err.is_none());

    // Without `timed_out()`, the timeout ends the connection with its error.
    let (probe, mut events) = ProbeOptions::default().probe();
    let mock = MockTransport::builder()
        .first_byte_timeout(Duration::from_secs(10))
        .connect(probe.start())
        .await;
    events.made().await;
    mock.advance(Duration::from_secs(10)).await;
    let lost = events.until_lost().await.expect("an error");
    assert_eq!(
        Timeout::of(&lost),
        Some(Timeout::FirstByte(Duration::from_secs(10)))
    );
}

#[test]
fn settings_that_cannot_work_are_refused() {
    let zero = StreamConfig::default()
        .idle_timeout(Some(Duration::ZERO))
        .unwrap_err();
    assert_eq!(zero.kind(), io::ErrorKind::InvalidInput);
    assert!(zero.to_string().contains("idle timeout of zero"), "{zero}");
    let zero = StreamConfig::default()
        .first_byte_timeout(Some(Duration::ZERO))
        .unwrap_err();
    assert_eq!(zero.kind(), io::ErrorKind::InvalidInput);
    let low = StreamConfig::default().max_write_buffer(1000).unwrap_err();
    assert_eq!(low.kind(), io::ErrorKind::InvalidInput);
    assert!(
        low.to_string().contains("below the high-water mark"),
        "{low}"
    );
}
