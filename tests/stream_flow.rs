//! Guarantees 4 (read flow control) and 5 (write flow control), over TCP, Unix sockets, TLS and
//! the mock (where each applies; see the lists below).

mod support;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::SeqCst},
    },
    time::Duration,
};

use bytes::Bytes;
use futures::future::join_all;
use support::{Event, Kind, Peer, ProbeOptions, ReleaseAcks, pair, probed, send_all};
use switchboard::{InvalidWriteBufferLimits, prelude::*, stream::StreamConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

for_each_kind!([tcp, unix, tls, mock] =>
    pause_reading_holds_back_buffered_bytes,
    pause_and_resume_writing_strictly_alternate_under_a_slow_reader,
    write_buffer_limits_are_validated_and_derived_as_asyncio,
    every_acknowledged_write_gets_exactly_one_outcome,
    vectored_writes_go_out_whole_and_in_order,
);

// Not the mock: its script takes whatever the peer sends, so the peer's writes never block (there
// is no back-pressure to feel) and a flood never yields; the bounded read per wake-up is the
// socket driver's.
for_each_kind!([tcp, unix, tls] =>
    slow_protocol_costs_bounded_memory_and_the_peer_blocks,
    a_flood_cannot_starve_abort,
);

// Not the mock: it delivers each chunk the peer sent on its own (a test chooses the chunking),
// never coalesced with the next.
for_each_kind!([tcp, unix, tls] => one_delivery_in_flight_and_the_rest_coalesced);

// Not the mock: its peer that stops reading stands for a full kernel buffer too, which it has
// none of, so it holds the pause until the peer reads again, whatever the limits.
for_each_kind!([tcp, unix, tls] => changing_limits_re_evaluates_both_edges);

// TLS has no half-close: the peer's EOF closes the connection.
for_each_kind!([tcp, unix, mock] => pause_and_resume_reading_are_idempotent_in_every_state);

// The mock has no clock, so no write stall timeout.
for_each_kind!([tcp, unix, tls] => a_stalled_write_aborts_the_connection);

/// A 64 KiB block stamped with its sequence number, so reordering, loss and duplication of
/// whole blocks show up, and the rest compares with one `memcmp`.
fn block(seq: u64) -> Vec<u8> {
    let mut block: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    block[..8].copy_from_slice(&seq.to_be_bytes());
    block
}

async fn wait_until_stable(counter: &AtomicU64) -> u64 {
    let mut last = counter.load(SeqCst);
    let mut stable = 0;
    while stable < 3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let now = counter.load(SeqCst);
        if now == last {
            stable += 1;
        } else {
            stable = 0;
            last = now;
        }
    }
    last
}

async fn slow_protocol_costs_bounded_memory_and_the_peer_blocks(kind: Kind) {
    const BLOCKS: u64 = 1600; // 100 MiB
    let (transport, probe, mut peer, mut events) = probed(kind, ProbeOptions::holding_acks()).await;
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let written = written.clone();
        actix_rt::spawn(async move {
            for seq in 0..BLOCKS {
                peer.write_all(&block(seq)).await.unwrap();
                written.fetch_add(64 * 1024, SeqCst);
            }
            peer.shutdown_write().await;
            peer
        })
    };
    // The protocol never acknowledges: after the first delivery the transport buffers up to its
    // limit, then stops reading; the kernel buffers fill and the peer's writes block.
    let Some(Event::Data(first)) = events.next().await else {
        panic!("first delivery")
    };
    let blocked_at = wait_until_stable(&written).await;
    assert!(
        blocked_at < BLOCKS * 64 * 1024,
        "the peer's writes never blocked ({blocked_at} bytes written)"
    );
    let stats = transport.send(GetStats).await.unwrap();
    let limit = stats.read_buffer_limit as u64;
    assert!(stats.read_buffer_peak as u64 <= limit, "{stats:?}");
    assert!(stats.read_buffer_size as u64 <= limit, "{stats:?}");
    assert_eq!(
        stats.deliveries, 1,
        "one delivery in flight, never acknowledged"
    );
    assert!(
        stats.bytes_received <= limit,
        "read more than the limit while the protocol held its delivery: {stats:?}"
    );
    assert_eq!(
        (stats.read_buffer_size + stats.read_in_flight) as u64,
        stats.bytes_received
    );

    // Let it flow: every byte arrives, in order, exactly once.
    probe.do_send(ReleaseAcks {
        keep_holding: false,
    });
    let mut received = 0u64;
    let mut pending = first.to_vec();
    loop {
        while pending.len() >= 64 * 1024 {
            let seq = u64::from_be_bytes(pending[..8].try_into().unwrap());
            assert_eq!(seq * 64 * 1024, received, "block out of order");
            assert!(
                pending[..64 * 1024] == block(seq)[..],
                "block {seq} corrupted"
            );
            pending.drain(..64 * 1024);
            received += 64 * 1024;
        }
        match events.next().await {
            Some(Event::Data(chunk)) => pending.extend_from_slice(&chunk),
            Some(Event::Eof) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pending.is_empty(), "a partial block at the end");
    let _peer = writer.await.unwrap();
    assert_eq!(received, BLOCKS * 64 * 1024);
}

async fn one_delivery_in_flight_and_the_rest_coalesced(kind: Kind) {
    let (transport, probe, mut peer, mut events) = probed(kind, ProbeOptions::holding_acks()).await;
    send_all(&mut peer, b"a").await;
    assert_eq!(events.data(1).await, b"a");
    for byte in [b"b", b"c", b"d"] {
        send_all(&mut peer, byte).await;
        peer.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    events.assert_quiet(Duration::from_millis(200)).await;
    let stats = transport.send(GetStats).await.unwrap();
    assert_eq!(
        (
            stats.deliveries,
            stats.read_buffer_size,
            stats.read_in_flight
        ),
        (1, 3, 1)
    );
    probe.do_send(ReleaseAcks { keep_holding: true });
    match events.next().await {
        Some(Event::Data(chunk)) => assert_eq!(&chunk[..], b"bcd", "coalesced into one"),
        other => panic!("expected one coalesced delivery, got {other:?}"),
    }
    assert_eq!(transport.send(GetStats).await.unwrap().deliveries, 2);
}

async fn pause_reading_holds_back_buffered_bytes(kind: Kind) {
    let (transport, probe, mut peer, mut events) = probed(kind, ProbeOptions::holding_acks()).await;
    send_all(&mut peer, b"a").await;
    assert_eq!(events.data(1).await, b"a");
    send_all(&mut peer, b"bc").await;
    support::wait_until_buffered(&transport, 2).await;
    transport.pause_reading();
    probe.do_send(ReleaseAcks {
        keep_holding: false,
    });
    events.assert_quiet(Duration::from_millis(200)).await;
    transport.resume_reading();
    assert_eq!(events.data(2).await, b"bc");
}

async fn pause_and_resume_reading_are_idempotent_in_every_state(kind: Kind) {
    let (transport, _, mut peer, mut events) = probed(
        kind,
        ProbeOptions {
            keep_open_on_eof: true,
            ..ProbeOptions::default()
        },
    )
    .await;
    let reading = || transport.send(IsReading);
    assert!(reading().await.unwrap());
    transport.pause_reading();
    transport.pause_reading();
    assert!(!reading().await.unwrap());
    transport.resume_reading();
    transport.resume_reading();
    assert!(reading().await.unwrap());
    // At EOF (kept open), reading is over: pause/resume are accepted and change nothing.
    peer.shutdown_write().await;
    assert!(matches!(events.next().await, Some(Event::Eof)));
    assert!(!reading().await.unwrap());
    transport.pause_reading();
    transport.resume_reading();
    assert!(!reading().await.unwrap());
    events.assert_quiet(Duration::from_millis(100)).await; // no second EOF (asyncio's quirk)
    // Closing: still accepted.
    transport.close();
    transport.pause_reading();
    transport.resume_reading();
    assert!(events.lost().await.is_none());
}

async fn a_flood_cannot_starve_abort(kind: Kind) {
    let (transport, _, mut peer, mut events) = probed(kind, ProbeOptions::default()).await;
    let flood = actix_rt::spawn(async move {
        let chunk = vec![1u8; 64 * 1024];
        while peer.write_all(&chunk).await.is_ok() {}
    });
    // Let the flood run, consuming deliveries as fast as they come.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    while tokio::time::Instant::now() < deadline {
        let Some(Event::Data(_)) = events.next().await else {
            panic!("data")
        };
    }
    transport.abort();
    assert!(events.until_lost().await.is_none());
    flood.await.unwrap();
}

/// Writes 64 KiB chunks while allowed, stops on PauseWriting, goes on at ResumeWriting.
struct Producer {
    remaining: usize,
    paused: bool,
    edges: Arc<Mutex<Vec<&'static str>>>,
}

impl Producer {
    fn produce(&mut self, cx: &mut Ctx<'_, Self>) {
        if self.paused {
            return;
        }
        if self.remaining == 0 {
            cx.close();
            return;
        }
        let n = self.remaining.min(64 * 1024);
        self.remaining -= n;
        cx.write(vec![b'p'; n]);
        // Yield to the runtime between chunks (a loop, or `call_soon`, which runs before the
        // actor yields, would enqueue everything before the transport could say PauseWriting).
        cx.run_later(Duration::ZERO, Self::produce);
    }
}

impl Protocol for Producer {
    type Codec = Raw;

    fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
        self.produce(cx);
    }

    fn pause_writing(&mut self, _: &mut Ctx<'_, Self>) {
        self.paused = true;
        self.edges.lock().unwrap().push("pause");
    }

    fn resume_writing(&mut self, cx: &mut Ctx<'_, Self>) {
        self.paused = false;
        self.edges.lock().unwrap().push("resume");
        self.produce(cx);
    }
}

async fn pause_and_resume_writing_strictly_alternate_under_a_slow_reader(kind: Kind) {
    const TOTAL: usize = 16 * 1024 * 1024;
    let edges = Arc::new(Mutex::new(Vec::new()));
    let (transport, _, mut peer) = pair(kind, StreamConfig::default(), || Producer {
        remaining: TOTAL,
        paused: false,
        edges: edges.clone(),
    })
    .await;
    let mut received = 0;
    let mut buf = vec![0; 16 * 1024];
    loop {
        // The mock's peer stops reading between reads (a socket peer does by not reading).
        peer.stop_reading();
        let n = peer.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|b| *b == b'p'));
        received += n;
        tokio::time::sleep(Duration::from_millis(1)).await; // a slow reader: ~16 MB/s at most
    }
    assert_eq!(received, TOTAL, "every byte arrives before EOF");
    let edges = edges.lock().unwrap().clone();
    assert!(
        edges.len() >= 4,
        "expected several pauses under a slow reader: {edges:?}"
    );
    for (i, edge) in edges.iter().enumerate() {
        assert_eq!(
            *edge,
            if i % 2 == 0 { "pause" } else { "resume" },
            "{edges:?}"
        );
    }
    let _ = transport;
}

async fn write_buffer_limits_are_validated_and_derived_as_asyncio(kind: Kind) {
    let (transport, _, _peer, _events) = probed(kind, ProbeOptions::default()).await;
    let limits = || transport.send(GetWriteBufferLimits);
    let defaults = kind.default_write_buffer_limits();
    assert_eq!(limits().await.unwrap(), defaults);
    let set = |high, low| transport.send(SetWriteBufferLimits { high, low });
    assert_eq!(
        set(Some(10), Some(20)).await.unwrap(),
        Err(InvalidWriteBufferLimits { high: 10, low: 20 })
    );
    assert_eq!(limits().await.unwrap(), defaults, "old limits kept");
    set(Some(100), None).await.unwrap().unwrap();
    assert_eq!(limits().await.unwrap(), (25, 100));
    set(None, Some(100)).await.unwrap().unwrap();
    assert_eq!(limits().await.unwrap(), (100, 400));
    set(None, None).await.unwrap().unwrap();
    assert_eq!(limits().await.unwrap(), defaults);
    assert!(
        transport.is_alive(),
        "a bad request does not hurt the transport"
    );
}

async fn changing_limits_re_evaluates_both_edges(kind: Kind) {
    let (transport, _, mut peer, mut events) = probed(kind, ProbeOptions::default()).await;
    // Nobody reads: whatever the kernel does not take stays in the write buffer.
    peer.stop_reading();
    transport.write(vec![0u8; 32 * 1024 * 1024]);
    assert!(matches!(events.next().await, Some(Event::PauseWriting)));
    let buffered = transport.send(GetWriteBufferSize).await.unwrap();
    assert!(buffered > 64 * 1024, "{buffered}");
    transport
        .send(SetWriteBufferLimits {
            high: Some(64 * 1024 * 1024),
            low: Some(48 * 1024 * 1024),
        })
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(events.next().await, Some(Event::ResumeWriting)),
        "raising the limits above the buffer resumes"
    );
    transport
        .send(SetWriteBufferLimits {
            high: Some(1024),
            low: None,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(events.next().await, Some(Event::PauseWriting)));
    transport.abort();
    assert!(events.until_lost().await.is_none());
}

async fn every_acknowledged_write_gets_exactly_one_outcome(kind: Kind) {
    // 40 MiB go past the default maximum write buffer (4 MiB): raised, as this protocol queues
    // them on purpose.
    let config = StreamConfig::default()
        .max_write_buffer(64 * 1024 * 1024)
        .expect("above the high-water mark");
    let (transport, _, mut peer, mut events) =
        support::probed_with(kind, ProbeOptions::default(), config).await;
    transport
        .write_acked("first")
        .await
        .expect("reaches the kernel");
    assert_eq!(peer.read_n(5).await, b"first");

    // Nobody reads: some writes reach the kernel, the rest are pending when we abort.
    peer.stop_reading();
    let writes: Vec<_> = (0..40)
        .map(|_| transport.write_acked(vec![9u8; 1024 * 1024]))
        .collect();
    let abort = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        transport.abort();
    };
    let (outcomes, ()) = tokio::join!(join_all(writes), abort);
    assert_eq!(outcomes.len(), 40, "every write resolved");
    let ok = outcomes.iter().take_while(|o| o.is_ok()).count();
    assert!(ok < 40, "some writes were still pending at the abort");
    for outcome in &outcomes[ok..] {
        let err = outcome
            .as_ref()
            .expect_err("no success after the first failure");
        assert_eq!(WriteError::of(err), Some(WriteError::Aborted), "{err}");
    }
    assert!(events.until_lost().await.is_none());
}

async fn a_stalled_write_aborts_the_connection(kind: Kind) {
    let (probe, mut events) = ProbeOptions::default().probe();
    let config = StreamConfig::default().write_stall_timeout(Some(Duration::from_millis(300)));
    let (transport, _, _peer) = pair(kind, config, || probe.start()).await;
    events.made().await;
    let write = transport.write_acked(vec![0u8; 64 * 1024 * 1024]);
    let err = events.until_lost().await.expect("a stall is an error");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert_eq!(
        WriteError::of(&err),
        Some(WriteError::Stalled(Duration::from_millis(300)))
    );
    let write_err = write.await.unwrap_err();
    assert_eq!(write_err.kind(), std::io::ErrorKind::TimedOut);
}

async fn vectored_writes_go_out_whole_and_in_order(kind: Kind) {
    let (transport, _, mut peer, _events) = probed(kind, ProbeOptions::default()).await;
    transport.write("<");
    let parts: Vec<Bytes> = (0..300).map(|i| Bytes::from(format!("{i:03}"))).collect();
    transport
        .send(WriteVectored(parts))
        .await
        .unwrap()
        .expect("written");
    transport.write(">");
    let expected: String = std::iter::once("<".to_string())
        .chain((0..300).map(|i| format!("{i:03}")))
        .chain(std::iter::once(">".to_string()))
        .collect();
    assert_eq!(peer.read_n(expected.len()).await, expected.as_bytes());
    let _: &Peer = &peer;
}
