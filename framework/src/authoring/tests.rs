//! The adapter against the mock transport: every event reaches the protocol, the defaults are
//! the safe ones, and the actor never outlives its connection.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use actix::prelude::*;
use bytes::Bytes;
use tokio_util::codec::{LengthDelimitedCodec, LinesCodec};

use crate::{
    DecodeError, TlsErrorKind, TlsSettings,
    prelude::*,
    testing::{Ending, MockTransport, run},
};

/// What a protocol saw, shared with the test.
type Seen = Arc<Mutex<Vec<String>>>;

fn seen() -> Seen {
    Arc::default()
}

fn log(seen: &Seen, what: impl Into<String>) {
    seen.lock().unwrap().push(what.into());
}

fn events(seen: &Seen) -> Vec<String> {
    seen.lock().unwrap().clone()
}

struct Echo;

impl Protocol for Echo {
    type Codec = Raw;
    fn data_received(&mut self, data: Bytes, cx: &mut Ctx<'_, Self>) {
        cx.write(data);
    }
}

#[test]
fn the_shortest_protocol_echoes_closes_at_eof_and_stops() {
    run(async {
        let mock = MockTransport::connect(Echo).await;
        mock.feed("hello").await;
        assert_eq!(mock.take_written(), "hello");
        assert!(!mock.eof().await, "EOF closes by default");
        assert_eq!(mock.ending(), Some(Ending::ClosedAtEof));
        mock.protocol_stopped().await;
    });
}

/// Records every callback; keeps the connection half-open at EOF.
struct Recorder(Seen);

impl Protocol for Recorder {
    type Codec = LinesCodec;
    fn connection_made(&mut self, _: &mut Ctx<'_, Self>) {
        log(&self.0, "made");
    }
    fn data_received(&mut self, line: String, _: &mut Ctx<'_, Self>) {
        log(&self.0, format!("line {line}"));
    }
    fn eof_received(&mut self, cx: &mut Ctx<'_, Self>) -> bool {
        log(&self.0, "eof");
        cx.send("bye");
        true
    }
    fn pause_writing(&mut self, _: &mut Ctx<'_, Self>) {
        log(&self.0, "pause");
    }
    fn resume_writing(&mut self, _: &mut Ctx<'_, Self>) {
        log(&self.0, "resume");
    }
    fn timed_out(&mut self, timeout: Timeout, _: &mut Ctx<'_, Self>) {
        log(&self.0, format!("timed out {timeout:?}"));
    }
    fn connection_lost(&mut self, err: Option<std::io::Error>, _: &mut Ctx<'_, Self>) {
        log(&self.0, format!("lost {}", err.is_some()));
    }
}

#[test]
fn every_overridden_callback_is_called_with_no_registration() {
    run(async {
        let seen = seen();
        let mock = MockTransport::builder()
            .idle_timeout(Duration::from_secs(5))
            .connect(Recorder(seen.clone()))
            .await;
        mock.feed("one\ntw").await;
        mock.feed("o\nthree").await;
        mock.pause_writing().await;
        mock.resume_writing().await;
        mock.advance(Duration::from_secs(6)).await;
        assert!(mock.eof().await, "eof_received returned true: half-open");
        assert_eq!(mock.take_written(), "bye\n", "written after the peer's EOF");
        mock.lose(None).await;
        mock.protocol_stopped().await;
        assert_eq!(
            events(&seen),
            [
                "made",
                "line one",
                "line two",
                "pause",
                "resume",
                "timed out Idle(5s)",
                "line three", // the last line, unterminated, at EOF
                "eof",
                "lost false",
            ]
        );
    });
}

/// Starts a timer it never cancels and does nothing at `connection_lost`: the actor stops anyway.
struct Ticker;

impl Protocol for Ticker {
    type Codec = Raw;
    fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
        cx.run_interval(Duration::from_millis(1), |_, cx| cx.write("tick"));
    }
}

#[test]
fn a_protocol_with_a_timer_stops_with_its_connection() {
    run(async {
        let mut actors = Vec::new();
        for _ in 0..10 {
            let (mock, addr) = MockTransport::builder().attach(Ticker);
            mock.settle().await;
            mock.lose(None).await;
            actors.push(addr);
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
        let alive = actors.iter().filter(|addr| addr.connected()).count();
        assert_eq!(
            alive, 0,
            "{alive} of 10 protocol actors outlived their connection"
        );
    });
}

/// Lines, then length-prefixed frames after `UPGRADE`.
#[derive(Default)]
struct Lines(Seen);

impl Protocol for Lines {
    type Codec = LinesCodec;
    fn data_received(&mut self, line: String, cx: &mut Ctx<'_, Self>) {
        log(&self.0, format!("line {line}"));
        if line == "UPGRADE" {
            cx.send("OK");
            cx.switch_to(Frames(self.0.clone()));
        }
    }
}

struct Frames(Seen);

impl Protocol for Frames {
    type Codec = LengthDelimitedCodec;
    fn data_received(&mut self, frame: bytes::BytesMut, cx: &mut Ctx<'_, Self>) {
        log(
            &self.0,
            format!("frame {}", String::from_utf8_lossy(&frame)),
        );
        cx.send(frame.freeze());
    }
}

#[test]
fn a_switch_carries_the_bytes_pipelined_behind_the_switching_line() {
    run(async {
        let seen = seen();
        let (mock, lines) = MockTransport::builder().attach(Lines(seen.clone()));
        mock.settle().await;
        // The switching line, a line-shaped frame and half a frame, in one chunk.
        mock.feed(&b"PING\nUPGRADE\n\x00\x00\x00\x02hi\x00\x00\x00\x03ab"[..])
            .await;
        mock.feed("c").await;
        assert_eq!(
            mock.take_written(),
            &b"OK\n\x00\x00\x00\x02hi\x00\x00\x00\x03abc"[..]
        );
        assert_eq!(
            events(&seen),
            ["line PING", "line UPGRADE", "frame hi", "frame abc"]
        );
        assert!(
            !lines.connected(),
            "the old protocol stopped after the switch"
        );
        assert!(
            mock.protocol()
                .downcast::<ProtocolActor<Frames>>()
                .is_some(),
            "the transport delivers to the new one"
        );
    });
}

/// Answers lines up to 8 bytes, and says so for longer ones.
struct Short;

impl Protocol for Short {
    type Codec = LinesCodec;
    fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
        cx.set_codec(LinesCodec::new_with_max_length(8));
    }
    fn data_received(&mut self, line: String, cx: &mut Ctx<'_, Self>) {
        cx.send(format!("ok {line}"));
    }
    fn decode_error(&mut self, err: DecodeError<Self>, cx: &mut Ctx<'_, Self>) {
        cx.send(format!("error: {err}"));
    }
}

#[test]
fn decoding_goes_on_after_an_error_the_codec_skips() {
    run(async {
        let mock = MockTransport::connect(Short).await;
        mock.feed("a\nmuch too long a line\nb\n").await;
        assert_eq!(
            mock.take_written(),
            "ok a\nerror: max line length exceeded\nok b\n"
        );
    });
}

#[test]
fn a_decode_error_closes_by_default() {
    run(async {
        let mock = MockTransport::connect(Lines(seen())).await;
        mock.feed(&b"\xff\xfe\n"[..]).await;
        assert_eq!(mock.ending(), Some(Ending::Closed));
    });
}

#[test]
fn writes_waiting_hold_reading_by_default_and_the_protocols_own_pause_stays() {
    run(async {
        let mock = MockTransport::connect(Echo).await;
        mock.pause_writing().await;
        assert!(
            !mock.is_reading(),
            "the default pause_writing holds reading"
        );
        mock.resume_writing().await;
        assert!(mock.is_reading());
        let names = mock.take_command_names();
        assert!(
            names.ends_with(&["PauseReading", "ResumeReading"]),
            "{names:?}"
        );
    });
}

/// Pauses reading itself, then sees its writes wait.
struct Paused;

impl Protocol for Paused {
    type Codec = Raw;
    fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
        cx.pause_reading();
    }
}

#[test]
fn resume_writing_does_not_resume_what_the_protocol_paused() {
    run(async {
        let mock = MockTransport::connect(Paused).await;
        mock.pause_writing().await;
        mock.resume_writing().await;
        assert!(!mock.is_reading(), "still paused by the protocol itself");
        assert_eq!(mock.take_command_names(), ["PauseReading"]);
    });
}

#[test]
fn a_timeout_closes_by_default() {
    run(async {
        let mock = MockTransport::builder()
            .idle_timeout(Duration::from_secs(1))
            .connect(Echo)
            .await;
        mock.advance(Duration::from_secs(2)).await;
        assert_eq!(mock.ending(), Some(Ending::Closed));
        mock.protocol_stopped().await;
    });
}

#[derive(Message)]
#[rtype(result = "usize")]
struct Count;

#[derive(Default)]
struct Counter(usize);

impl Protocol for Counter {
    type Codec = Raw;
    fn data_received(&mut self, data: Bytes, _: &mut Ctx<'_, Self>) {
        self.0 += data.len();
    }
}

impl Handles<Count> for Counter {
    type Result = usize;
    fn handle(&mut self, _: Count, cx: &mut Ctx<'_, Self>) -> usize {
        cx.write(self.0.to_string());
        self.0
    }
}

#[test]
fn a_protocol_handles_messages_of_its_own_with_its_transport_at_hand() {
    run(async {
        let (mock, counter) = MockTransport::builder().attach(Counter::default());
        mock.settle().await;
        mock.feed("abc").await;
        assert_eq!(counter.send(Count).await.unwrap(), 3);
        assert_eq!(mock.take_written(), "3");
    });
}

/// Frames over `LengthDelimitedCodec`'s limit cannot be encoded.
struct TooBig;

impl Protocol for TooBig {
    type Codec = LengthDelimitedCodec;
    fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
        cx.set_codec(
            LengthDelimitedCodec::builder()
                .max_frame_length(4)
                .new_codec(),
        );
        cx.send(Bytes::from_static(b"ok"));
        cx.send(Bytes::from_static(b"too long"));
    }
}

#[test]
fn an_item_the_codec_cannot_encode_aborts_rather_than_skip_a_frame() {
    run(async {
        let mock = MockTransport::connect(TooBig).await;
        assert_eq!(mock.ending(), Some(Ending::Aborted));
        assert_eq!(mock.writes(), [Bytes::from_static(b"\x00\x00\x00\x02ok")]);
    });
}

#[test]
fn a_switch_the_transport_never_takes_stops_the_new_protocol_too() {
    run(async {
        let seen = seen();
        let mock = MockTransport::connect(Lines(seen.clone())).await;
        let lines = mock.protocol().downcast::<ProtocolActor<Lines>>().unwrap();
        // The transport is gone before it handles the switch the next line asks for.
        mock.push("UPGRADE\n");
        mock.lose(None).await;
        lines.do_send(Count);
        mock.protocol_stopped().await;
        let _ = seen;
    });
}

impl Handles<Count> for Lines {
    type Result = usize;
    fn handle(&mut self, _: Count, _: &mut Ctx<'_, Self>) -> usize {
        0
    }
}

/// Looks each line up somewhere slow, and answers the whole chunk's lines with one write.
struct Batcher {
    pending: Vec<String>,
}

impl Protocol for Batcher {
    type Codec = LinesCodec;
    fn data_received(&mut self, line: String, cx: &mut Ctx<'_, Self>) {
        if self.pending.is_empty() {
            cx.call_soon(|this, cx| {
                let lookup = actix_rt::time::sleep(Duration::from_millis(5));
                cx.wait(lookup, |(), this: &mut Batcher, cx| {
                    cx.send_all(this.pending.drain(..).map(|line| line.to_uppercase()));
                });
                let _ = this;
            });
        }
        self.pending.push(line);
    }
}

#[test]
fn a_batch_is_answered_with_one_write_and_waits_hold_the_next_delivery() {
    run(async {
        let (mock, _) = MockTransport::builder().attach(Batcher {
            pending: Vec::new(),
        });
        mock.settle().await;
        mock.push("a\nb\nc\n");
        mock.push("d\n");
        mock.expect_written("A\nB\nC\nD\n").await;
        assert_eq!(
            mock.writes(),
            [Bytes::from_static(b"A\nB\nC\n"), Bytes::from_static(b"D\n")],
            "one write per chunk, the second chunk after the first's wait"
        );
    });
}

/// Answers `slow` after a lookup that takes a while, anything else at once.
struct Lookup;

impl Protocol for Lookup {
    type Codec = LinesCodec;
    fn data_received(&mut self, line: String, cx: &mut Ctx<'_, Self>) {
        if line == "slow" {
            let lookup = actix_rt::time::sleep(Duration::from_millis(20));
            cx.wait(lookup, |(), _, cx| cx.send("slow done"));
        } else {
            cx.send(format!("{line} done"));
        }
    }
}

/// Answers lines, and closes at `QUIT`.
struct Quits;

impl Protocol for Quits {
    type Codec = LinesCodec;
    fn data_received(&mut self, line: String, cx: &mut Ctx<'_, Self>) {
        if line == "QUIT" {
            cx.close();
        } else {
            cx.send(line);
        }
    }
}

/// Switches to frames after a slow lookup that `UPGRADE` waits for.
struct SlowUpgrade(Seen);

impl Protocol for SlowUpgrade {
    type Codec = LinesCodec;
    fn data_received(&mut self, line: String, cx: &mut Ctx<'_, Self>) {
        log(&self.0, format!("line {line}"));
        if line == "UPGRADE" {
            let lookup = actix_rt::time::sleep(Duration::from_millis(5));
            cx.wait(lookup, |(), this: &mut SlowUpgrade, cx| {
                cx.send("OK");
                cx.switch_to(Frames(this.0.clone()));
            });
        }
    }
}

#[test]
fn items_behind_a_wait_in_the_same_chunk_are_handled_after_it_in_order() {
    run(async {
        let (mock, _) = MockTransport::builder().attach(Lookup);
        mock.settle().await;
        mock.push("slow\nfast\nslow\nfast\n");
        mock.expect_written("slow done\nfast done\nslow done\nfast done\n")
            .await;
        assert_eq!(mock.writes().len(), 4);
    });
}

#[test]
fn the_eof_behind_a_last_item_that_waits_is_decided_after_it() {
    run(async {
        let (mock, _) = MockTransport::builder().attach(Lookup);
        mock.settle().await;
        // The last line has no `\n`: it is decoded at the EOF, and waits.
        mock.push("fast\nslow");
        assert!(!mock.eof().await);
        mock.protocol_stopped().await;
        assert_eq!(mock.written(), "fast done\nslow done\n");
        assert_eq!(mock.ending(), Some(Ending::ClosedAtEof));
    });
}

#[test]
fn nothing_decoded_after_a_close_is_delivered() {
    run(async {
        let mock = MockTransport::connect(Quits).await;
        // The line pipelined behind `QUIT`, in the same chunk, is not served.
        mock.feed("one\nQUIT\ntwo\n").await;
        assert_eq!(mock.command_names(), ["Write", "Close"]);
        assert_eq!(mock.written(), "one\n");
    });
}

#[test]
fn a_switch_after_a_wait_loses_none_of_the_chunks_sent_meanwhile() {
    run(async {
        let seen = seen();
        let (mock, _) = MockTransport::builder().attach(SlowUpgrade(seen.clone()));
        mock.settle().await;
        // The switching line with half a frame behind it, then the rest in a chunk of its own
        // that the transport holds until the wait is done.
        mock.push(&b"UPGRADE\n\x00\x00"[..]);
        mock.push(&b"\x00\x02hi"[..]);
        mock.expect_written(&b"OK\n\x00\x00\x00\x02hi"[..]).await;
        assert_eq!(events(&seen), ["line UPGRADE", "frame hi"]);
    });
}

/// Lines of at most 8 bytes; `STARTTLS` upgrades, and the result is logged.
struct Upgrades(Seen);

impl Protocol for Upgrades {
    type Codec = LinesCodec;
    fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
        cx.set_codec(LinesCodec::new_with_max_length(8));
    }
    fn data_received(&mut self, line: String, cx: &mut Ctx<'_, Self>) {
        log(&self.0, format!("line {line}"));
        if line == "STARTTLS" {
            cx.start_tls(StartTls::new(TlsSettings::new(())), |result, this, _| {
                log(&this.0, format!("upgraded {}", result.is_ok()));
            });
        }
    }
    fn decode_error(&mut self, err: DecodeError<Self>, cx: &mut Ctx<'_, Self>) {
        log(&self.0, format!("error {err}"));
        cx.close();
    }
    fn connection_lost(&mut self, err: Option<std::io::Error>, _: &mut Ctx<'_, Self>) {
        log(&self.0, format!("lost {}", err.is_some()));
    }
}

#[test]
fn the_codec_set_before_starttls_goes_on_decoding_over_tls() {
    run(async {
        let seen = seen();
        let mock = MockTransport::connect(Upgrades(seen.clone())).await;
        mock.feed("STARTTLS\n").await;
        mock.feed("short\n").await;
        mock.feed("far too long\n").await;
        mock.protocol_stopped().await;
        let seen = events(&seen);
        assert_eq!(seen[..3], ["line STARTTLS", "upgraded true", "line short"]);
        assert!(
            seen[3].starts_with("error"),
            "the limit of 8 still holds: {seen:?}"
        );
    });
}

#[test]
fn a_refused_upgrade_reaches_its_callback_before_connection_lost() {
    run(async {
        let seen = seen();
        let mock = MockTransport::builder()
            .refuse_start_tls(TlsError::new(TlsErrorKind::Handshake, "no shared cipher"))
            .connect(Upgrades(seen.clone()))
            .await;
        mock.feed("STARTTLS\n").await;
        mock.protocol_stopped().await;
        assert_eq!(
            events(&seen),
            ["line STARTTLS", "upgraded false", "lost true"]
        );
    });
}

#[derive(Message)]
#[rtype(result = "usize")]
struct Buffered;

impl Handles<Buffered> for Lines {
    type Result = usize;
    fn handle(&mut self, _: Buffered, cx: &mut Ctx<'_, Self>) -> usize {
        cx.buffered()
    }
}

#[test]
fn buffered_counts_the_bytes_of_an_item_under_way() {
    run(async {
        let (mock, lines) = MockTransport::builder().attach(Lines(seen()));
        mock.feed("one\ntw").await;
        assert_eq!(lines.send(Buffered).await.unwrap(), 2);
        mock.feed("o\n").await;
        assert_eq!(lines.send(Buffered).await.unwrap(), 0);
    });
}
