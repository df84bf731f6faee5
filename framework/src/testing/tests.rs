//! The mock transport and the probe, tested against each other and against what a real
//! transport promises (DESIGN guarantees 1–4, 6, 7, 9), so a protocol tested on the mock is
//! tested on what it will meet.

use std::{io, net::SocketAddr, time::Duration};

use bytes::Bytes;

use super::*;
use crate::{
    BufferedPlaintext, ExtraInfo, StartTls, TlsError, TlsErrorKind, TlsSettings, WriteError, keys,
    prelude::*,
};

fn probe() -> (StartedProbe, ProbeEvents) {
    Probe::builder().start()
}

#[actix::test]
async fn connection_made_comes_first_and_its_writes_are_recorded_before_connect_returns() {
    let (protocol, mut events) = Probe::builder().greeting("220 ready\r\n").start();
    let mock = MockTransport::connect(protocol).await;
    assert_eq!(mock.written(), "220 ready\r\n");
    let transport = events.made().await;
    assert!(transport.same_transport(&mock.handle()));
    assert!(events.try_next().is_none());
    assert_eq!(mock.command_names(), ["Write"]);
}

#[actix::test]
async fn each_fed_chunk_is_one_delivery_never_merged_nor_split() {
    let (protocol, mut events) = probe();
    let mock = MockTransport::connect(protocol).await;
    events.made().await;
    mock.feed_chunked("hello", &Chunking::Bytewise).await;
    mock.feed_chunked("abcdefg", &Chunking::Sizes(vec![2, 3]))
        .await;
    let mut chunks = Vec::new();
    while let Some(Event::Data(data)) = events.try_next() {
        chunks.push(data);
    }
    assert_eq!(chunks, ["h", "e", "l", "l", "o", "ab", "cde", "fg"]);
    assert_eq!(mock.stats().deliveries, 8);
    assert_eq!(mock.stats().bytes_received, 12);
}

#[actix::test]
async fn the_next_chunk_waits_for_the_previous_ack() {
    let (protocol, mut events) = Probe::builder().hold_acks().start();
    let mock = MockTransport::connect(protocol).await;
    events.made().await;
    mock.push("one");
    mock.push("two");
    assert_eq!(events.data(3).await, b"one");
    events.assert_quiet(Duration::from_millis(50)).await;
    assert_eq!(mock.stats().read_buffer_size, 3, "`two` waits in the mock");
    events.release_acks(false);
    assert_eq!(events.data(3).await, b"two");
    mock.settle().await;
}

#[test]
#[should_panic(expected = "deliveries not acknowledged")]
fn settle_names_the_ack_a_protocol_kept() {
    run(async {
        let (protocol, _events) = Probe::builder().hold_acks().start();
        let mock = MockTransport::builder()
            .timeout(Duration::from_millis(100))
            .connect(protocol)
            .await;
        mock.feed("kept").await;
    });
}

#[actix::test]
async fn pause_reading_holds_deliveries_until_resume() {
    let (protocol, mut events) = Probe::builder().pause_on_made().start();
    let mock = MockTransport::connect(protocol).await;
    events.made().await;
    assert!(!mock.is_reading());
    mock.feed("held").await;
    assert!(
        events.try_next().is_none(),
        "nothing is delivered while paused"
    );
    events.with_transport(|transport| transport.resume_reading());
    assert_eq!(events.data(4).await, b"held");
    assert_eq!(mock.command_names(), ["PauseReading", "ResumeReading"]);
}

#[actix::test]
async fn eof_closes_unless_the_protocol_keeps_the_connection_open() {
    let (protocol, mut events) = probe();
    let mock = MockTransport::connect(protocol).await;
    mock.feed("last").await;
    assert!(!mock.eof().await);
    assert_eq!(mock.ending(), Some(Ending::ClosedAtEof));
    events.made().await;
    assert_eq!(events.data_until_eof().await, b"last");
    assert!(events.lost().await.is_none());

    let (protocol, mut events) = Probe::builder().keep_open_on_eof().start();
    let mock = MockTransport::connect(protocol).await;
    assert!(mock.eof().await);
    assert!(!mock.is_ended() && !mock.is_reading());
    events.with_transport(|transport| transport.write("still talking"));
    mock.settle().await;
    assert_eq!(mock.written(), "still talking");
    events.expect(&["Made", "Eof"]).await;
}

#[actix::test]
async fn a_protocol_that_leaves_eof_to_its_default_closes_at_eof_as_in_asyncio() {
    /// Writes nothing, overrides nothing.
    struct Quiet;
    impl Protocol for Quiet {
        type Codec = Raw;
    }
    let mock = MockTransport::connect(Quiet).await;
    assert!(!mock.eof().await);
    assert!(mock.is_ended());
    assert_eq!(mock.command_names(), ["EofAnswered"]);
}

#[actix::test]
async fn close_ends_with_connection_lost_and_later_writes_are_refused() {
    let (protocol, mut events) = probe();
    let mock = MockTransport::builder()
        .hold_close()
        .connect(protocol)
        .await;
    events.with_transport(|transport| {
        transport.write("bye");
        transport.close();
        transport.write("too late");
    });
    mock.settle().await;
    assert!(mock.is_closing() && !mock.is_ended());
    assert_eq!(mock.written(), "bye");
    let commands = mock.take_commands();
    assert!(matches!(
        &commands[..],
        [Sent::Write(_), Sent::Close, Sent::RefusedWrite { data, reason: WriteError::Closing }]
            if data == "too late"
    ));
    mock.lose(None).await;
    events.made().await;
    assert!(events.lost().await.is_none());
    assert_eq!(mock.ending(), Some(Ending::Lost));

    let (protocol, mut events) = probe();
    let mock = MockTransport::connect(protocol).await;
    events.with_transport(|transport| transport.close());
    mock.settle().await;
    assert_eq!(mock.ending(), Some(Ending::Closed));
    events.made().await;
    assert!(events.lost().await.is_none());
}

#[actix::test]
async fn abort_and_acknowledged_writes() {
    let (protocol, mut events) = probe();
    let mock = MockTransport::connect(protocol).await;
    let handle = mock.handle();
    handle.write_acked("ok").await.expect("accepted");
    handle.abort();
    let err = handle.write_acked("lost").await.expect_err("refused");
    assert_eq!(err.kind(), io::Error::from(WriteError::Stopped).kind());
    assert_eq!(mock.ending(), Some(Ending::Aborted));
    events.made().await;
    assert!(events.lost().await.is_none());
}

#[actix::test]
async fn write_eof_is_recorded_and_refused_where_the_transport_cannot() {
    let (protocol, _events) = probe();
    let mock = MockTransport::connect(protocol).await;
    mock.handle()
        .send(WriteEof)
        .await
        .unwrap()
        .expect("write_eof");
    assert!(mock.is_eof_written());
    let err = mock
        .handle()
        .write_acked("after")
        .await
        .expect_err("after eof");
    assert_eq!(err.to_string(), WriteError::AfterEof.to_string());

    let (protocol, _events) = probe();
    let mock = MockTransport::builder()
        .can_write_eof(false)
        .connect(protocol)
        .await;
    assert!(!mock.handle().send(CanWriteEof).await.unwrap());
    let err = mock
        .handle()
        .send(WriteEof)
        .await
        .unwrap()
        .expect_err("no eof");
    assert_eq!(err.kind(), io::ErrorKind::Unsupported);
}

#[actix::test]
async fn vectored_writes_are_one_write() {
    let (protocol, _events) = probe();
    let mock = MockTransport::connect(protocol).await;
    mock.handle()
        .do_send(WriteVectored(vec![Bytes::from("a"), Bytes::from("bc")]));
    mock.handle().write("d");
    mock.settle().await;
    assert_eq!(mock.writes(), ["abc", "d"]);
    assert_eq!(mock.take_written(), "abcd");
    assert_eq!(mock.take_written(), "");
    assert_eq!(mock.written(), "abcd");
}

#[actix::test]
async fn set_protocol_hands_the_leftover_to_the_new_protocol_first() {
    let (old, mut old_events) = probe();
    let mock = MockTransport::connect(old).await;
    old_events.with_transport(|transport| transport.pause_reading());
    mock.settle().await;
    mock.feed("queued").await;
    let (new, mut new_events) = probe();
    old_events.with_transport(move |transport| {
        transport.set_protocol(new, "tail");
        transport.resume_reading();
    });
    mock.settle().await;
    assert_eq!(
        mock.protocol().downcast::<Probe>().as_ref(),
        Some(new_events.addr())
    );
    let made = new_events.made().await;
    assert!(made.same_transport(&mock.handle()));
    let chunks: Vec<_> = new_events
        .expect(&["Data", "Data"])
        .await
        .into_iter()
        .map(|event| match event {
            Event::Data(data) => data,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(chunks, ["tail", "queued"], "the leftover comes first");
    old_events.made().await;
    assert!(
        old_events.try_next().is_none(),
        "the old protocol receives nothing after the switch"
    );
    mock.lose(None).await;
    assert!(new_events.lost().await.is_none());
    assert_eq!(
        mock.command_names(),
        ["PauseReading", "SetProtocol", "ResumeReading"]
    );
    assert!(matches!(
        &mock.take_commands()[1],
        Sent::SetProtocol { leftover, .. } if leftover == "tail"
    ));
}

#[actix::test]
async fn a_protocol_switched_in_while_writing_is_paused_hears_pause_writing_after_made() {
    let (old, _old_events) = probe();
    let mock = MockTransport::connect(old).await;
    mock.pause_writing().await;
    let (new, mut new_events) = probe();
    mock.handle().set_protocol(new, Bytes::new());
    mock.settle().await;
    new_events.expect(&["Made", "PauseWriting"]).await;
    mock.resume_writing().await;
    new_events.expect(&["ResumeWriting"]).await;
}

#[actix::test]
async fn extra_info_is_scripted_and_unknown_keys_give_the_default() {
    let peer: SocketAddr = "127.0.0.1:4321".parse().unwrap();
    let (protocol, _events) = probe();
    let mock = MockTransport::builder()
        .peername(peer)
        .extra("x-tenant", ExtraInfo::Text("blue".into()))
        .connect(protocol)
        .await;
    let handle = mock.handle();
    assert_eq!(handle.peer_addr().await, Some(peer));
    assert_eq!(handle.sockname().await, None);
    let tenant = handle.send(GetExtraInfo::new("x-tenant")).await.unwrap();
    assert_eq!(tenant.as_ref().and_then(ExtraInfo::as_text), Some("blue"));
    let fallback = handle
        .send(GetExtraInfo::new(keys::CIPHER).or(ExtraInfo::Text("none".into())))
        .await
        .unwrap();
    assert_eq!(fallback, Some(ExtraInfo::Text("none".into())));
}

/// As on a real transport, the scripted extra information answers after the end too: in the
/// protocol's `ConnectionLost` handler and through the handle; the descriptor does not.
#[actix::test]
async fn extra_info_answers_after_the_connection_is_lost() {
    let peer: SocketAddr = "127.0.0.1:4321".parse().unwrap();
    for reset in [false, true] {
        let (protocol, mut events) = probe();
        let mock = MockTransport::builder()
            .peername(peer)
            .extra(keys::SOCKET, ExtraInfo::Text("a descriptor".into()))
            .connect(protocol)
            .await;
        let handle = events.made().await;
        assert!(handle.get_extra_info(keys::SOCKET).await.is_some());
        if reset {
            mock.lose(Some(io::ErrorKind::ConnectionReset.into())).await;
        } else {
            handle.close();
        }
        events.until_lost().await;
        assert_eq!(handle.peer_addr().await, Some(peer), "reset: {reset}");
        assert_eq!(mock.handle().peer_addr().await, Some(peer), "one handle");
        assert_eq!(handle.get_extra_info(keys::SOCKET).await, None);
    }
}

#[actix::test]
async fn start_tls_is_recorded_discards_queued_plaintext_and_can_be_refused() {
    let (protocol, mut events) = Probe::builder().pause_on_made().start();
    let mock = MockTransport::builder()
        .tls_extra(keys::COMPRESSION, ExtraInfo::Text("none".into()))
        .connect(protocol)
        .await;
    mock.push("injected");
    let handle = mock.handle();
    assert_eq!(handle.get_extra_info(keys::COMPRESSION).await, None);
    handle
        .start_tls(StartTls::new(TlsSettings::new(())))
        .await
        .expect("upgrade");
    assert!(handle.get_extra_info(keys::COMPRESSION).await.is_some());
    handle.resume_reading();
    mock.settle().await;
    events.made().await;
    assert!(
        events.try_next().is_none(),
        "plaintext queued before the upgrade was discarded"
    );
    assert!(matches!(
        &mock.take_commands()[..],
        [
            Sent::PauseReading,
            Sent::StartTls {
                plaintext: BufferedPlaintext::Discard,
                ..
            },
            Sent::ResumeReading
        ]
    ));

    let (protocol, mut events) = probe();
    let mock = MockTransport::builder()
        .refuse_start_tls(TlsError::new(TlsErrorKind::Handshake, "no shared cipher"))
        .connect(protocol)
        .await;
    let err = mock
        .handle()
        .start_tls(StartTls::new(TlsSettings::new(())))
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), TlsErrorKind::Handshake);
    events.made().await;
    let lost = events.lost().await.expect("an error");
    assert!(lost.to_string().contains("no shared cipher"), "{lost}");
}

#[actix::test]
async fn lose_delivers_the_error_after_the_queued_data() {
    let (protocol, mut events) = probe();
    let mock = MockTransport::connect(protocol).await;
    mock.push("before");
    mock.lose(Some(io::ErrorKind::ConnectionReset.into())).await;
    events.made().await;
    assert_eq!(events.data(6).await, b"before");
    let err = events.lost().await.expect("an error");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    mock.feed("after the end is dropped").await;
    assert_eq!(events.seen(), ["Made", "Data", "Lost"]);
}

#[actix::test]
async fn a_protocol_that_stops_makes_the_mock_abort() {
    let (protocol, events) = probe();
    let mock = MockTransport::connect(protocol).await;
    events.stop();
    mock.protocol_stopped().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !mock.is_ended() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the mock did not notice"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(mock.ending(), Some(Ending::ProtocolStopped));
}

#[actix::test]
async fn write_buffer_queries_and_limits() {
    let (protocol, _events) = probe();
    let mock = MockTransport::connect(protocol).await;
    let handle = mock.handle();
    // A peer that stops reading leaves what the protocol writes in the write buffer.
    mock.pause_writing().await;
    handle.do_send(Write(Bytes::from(vec![b'x'; 70_000])));
    assert_eq!(handle.send(GetWriteBufferSize).await.unwrap(), 70_000);
    assert_eq!(mock.written(), "", "nothing reached the stalled peer");
    mock.resume_writing().await;
    assert_eq!(handle.send(GetWriteBufferSize).await.unwrap(), 0);
    assert_eq!(mock.written().len(), 70_000);
    assert_eq!(
        handle.send(GetWriteBufferLimits).await.unwrap(),
        (
            crate::DEFAULT_LOW_WATER_MARK,
            crate::DEFAULT_HIGH_WATER_MARK
        )
    );
    handle
        .send(SetWriteBufferLimits {
            high: Some(100),
            low: None,
        })
        .await
        .unwrap()
        .expect("valid");
    assert_eq!(handle.send(GetWriteBufferLimits).await.unwrap(), (25, 100));
    let refused = handle
        .send(SetWriteBufferLimits {
            high: Some(10),
            low: Some(20),
        })
        .await
        .unwrap();
    assert!(refused.is_err());
    assert_eq!(handle.send(GetWriteBufferLimits).await.unwrap(), (25, 100));
}

#[actix::test]
async fn expect_written_waits_for_bytes_written_later() {
    let (protocol, events) = probe();
    let mock = MockTransport::connect(protocol).await;
    events.with_transport(|transport| {
        let transport = transport.clone();
        actix::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            transport.write("later\n");
        });
    });
    mock.expect_written("later\n").await;
}

#[test]
fn chunkings_cut_without_empty_pieces() {
    let data = Bytes::from_static(b"abcde");
    assert_eq!(Chunking::Whole.split(&data), ["abcde"]);
    assert_eq!(Chunking::Bytewise.split(&data), ["a", "b", "c", "d", "e"]);
    assert_eq!(Chunking::SplitAt(2).split(&data), ["ab", "cde"]);
    assert_eq!(Chunking::SplitAt(0).split(&data), ["abcde"]);
    assert_eq!(Chunking::SplitAt(9).split(&data), ["abcde"]);
    assert_eq!(Chunking::Sizes(vec![0, 2]).split(&data), ["ab", "cd", "e"]);
    assert_eq!(Chunking::Sizes(vec![0]).split(&data), ["abcde"]);
    assert!(Chunking::Whole.split(&Bytes::new()).is_empty());
    let every: Vec<_> = Chunking::every(3).collect();
    assert_eq!(
        every,
        [
            Chunking::Whole,
            Chunking::Bytewise,
            Chunking::SplitAt(1),
            Chunking::SplitAt(2)
        ]
    );
    for chunking in Chunking::every(5) {
        assert_eq!(chunking.split(&data).concat(), b"abcde");
    }
}

#[test]
#[should_panic(expected = "did not finish within")]
fn run_within_fails_a_test_that_hangs() {
    run_within(Duration::from_millis(20), futures::future::pending::<()>());
}

#[actix::test]
async fn write_flow_events_reach_a_protocol_that_paused_reading() {
    let (protocol, mut events) = Probe::builder().pause_on_made().start();
    let mock = MockTransport::connect(protocol).await;
    mock.push("waits for reading");
    mock.pause_writing().await;
    mock.resume_writing().await;
    events
        .expect(&["Made", "PauseWriting", "ResumeWriting"])
        .await;
    // Not even read: a paused transport leaves what the peer sends in the kernel.
    assert_eq!(mock.stats().read_buffer_size, 0);
    assert_eq!(mock.stats().deliveries, 0, "the data still waits");
    mock.lose(Some(io::ErrorKind::ConnectionReset.into())).await;
    assert_eq!(
        events.lost().await.map(|err| err.kind()),
        Some(io::ErrorKind::ConnectionReset)
    );
    assert_eq!(
        events.seen(),
        ["Made", "PauseWriting", "ResumeWriting", "Lost"]
    );
}

#[actix::test]
async fn commands_after_the_end_are_dropped_and_said_once() {
    let warnings = crate::stopped::capture::Warnings::start();
    let (protocol, _events) = probe();
    let mock = MockTransport::connect(protocol).await;
    let transport = mock.handle();
    mock.lose(None).await;
    let stopped = async {
        while transport.is_alive() {
            actix_rt::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), stopped)
        .await
        .expect("the actor stops after its end");
    for _ in 0..3 {
        transport.write("late");
    }
    assert_eq!(
        warnings.count("transport that has stopped was dropped"),
        1,
        "one warning for three dropped commands, none silent"
    );
}
