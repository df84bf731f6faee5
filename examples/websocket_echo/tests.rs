//! The two protocols of the echo server on a mock transport, with no socket: HTTP (responses,
//! pipelining, persistence, the upgrade and the switch to WebSocket) and the WebSocket echo
//! (messages, pings, the closing handshake, and the close codes of a failed connection). Every
//! input is fed cut at every split point, since a socket may deliver it cut anywhere.

use bytes::Bytes;
use switchboard::testing::{Chunking, Ending, MockTransport, Sent};

use super::*;

/// The upgrade request of RFC 6455, 1.3, and the `101` that answers it.
const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
                       Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                       Sec-WebSocket-Version: 13\r\n\r\n";
const SWITCHING: &str = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                         Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\
                         \r\n\r\n";

// The opcodes (RFC 6455, 5.2).
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

/// The first byte and the length of a frame's header.
fn header(fin: bool, opcode: u8, mask_bit: u8, len: usize) -> Vec<u8> {
    let mut header = vec![if fin { 0x80 | opcode } else { opcode }];
    if len < 126 {
        header.push(mask_bit | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        header.push(mask_bit | 126);
        header.extend_from_slice(&len.to_be_bytes());
    } else {
        header.push(mask_bit | 127);
        header.extend_from_slice(&(len as u64).to_be_bytes());
    }
    header
}

/// A client's frame: its payload masked, as a client must (RFC 6455, 5.3).
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = header(fin, opcode, 0x80, payload.len());
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}

/// A whole message or control frame from a client.
fn client(opcode: u8, payload: &[u8]) -> Vec<u8> {
    client_frame(true, opcode, payload)
}

/// A server's frame: final, unmasked.
fn server(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = header(true, opcode, 0, payload.len());
    frame.extend_from_slice(payload);
    frame
}

/// A close frame's payload: the code, then the reason.
fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    [&code.to_be_bytes()[..], reason.as_bytes()].concat()
}

/// A plain-text response of the HTTP protocol, with `headers` (each ending in CRLF) between
/// its `Content-Type` and its `Content-Length`.
fn text_response(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n{headers}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A new connection, on the HTTP protocol.
async fn http() -> MockTransport {
    MockTransport::connect(Http::new(1024, WebSockets::default())).await
}

/// A connection on the WebSocket protocol, as after an upgrade.
async fn websocket(max_message: usize) -> MockTransport {
    MockTransport::connect(WebSocket::new(max_message, WebSockets::default())).await
}

/// What the HTTP protocol has read past the end of a request head of `head_len` bytes when
/// `input` arrives cut as `chunking` says: the rest of the chunk in which the head ends.
fn read_past_head(input: &[u8], head_len: usize, chunking: &Chunking) -> Bytes {
    let mut end = 0;
    for chunk in chunking.split(&Bytes::copy_from_slice(input)) {
        end += chunk.len();
        if end >= head_len {
            return Bytes::copy_from_slice(&input[head_len..end]);
        }
    }
    panic!("the head never ends")
}

// ANCHOR: test_websocket_upgrade
/// An upgrade request with the client's first frame right behind it, cut at every split point.
/// The HTTP protocol answers `101` and switches the connection to the WebSocket protocol
/// (`Ctx::switch_with`, a `SetProtocol`), handing over the bytes it read past the request head
/// (the start of the frame, or all of it); the WebSocket protocol then echoes the frame.
#[actix::test]
async fn test_websocket_upgrade() {
    let hello = client(TEXT, b"hello");
    let input = [UPGRADE.as_bytes(), &hello].concat();
    for chunking in Chunking::every(input.len()) {
        let mock = MockTransport::connect(Http::new(1024, WebSockets::default())).await;

        mock.feed_chunked(input.clone(), &chunking).await;

        // The `101`, then the echo, unmasked as a server's frames are.
        let echo = server(TEXT, b"hello");
        assert_eq!(
            mock.written(),
            [SWITCHING.as_bytes(), &echo].concat(),
            "{chunking:?}"
        );
        // One switch, to the WebSocket protocol, with what was read past the head.
        let switches: Vec<Bytes> = mock
            .take_commands()
            .into_iter()
            .filter_map(|sent| match sent {
                Sent::SetProtocol { leftover, .. } => Some(leftover),
                _ => None,
            })
            .collect();
        let leftover = read_past_head(&input, UPGRADE.len(), &chunking);
        assert_eq!(switches, [leftover], "{chunking:?}");
        assert!(
            mock.protocol()
                .downcast::<ProtocolActor<WebSocket>>()
                .is_some()
        );
    }
}
// ANCHOR_END: test_websocket_upgrade

/// Pipelined requests are answered in order: 404, 426 for `/ws` without an upgrade, 405, the
/// head of a 404 for `HEAD`, then 400 for an HTTP/1.1 request without `Host`, which closes the
/// connection: the request behind it is never answered.
#[actix::test]
async fn pipelined_requests_at_every_split_point() {
    let input = "GET /nope HTTP/1.1\r\nHost: a\r\n\r\n\
                 GET /ws HTTP/1.1\r\nHost: a\r\n\r\n\
                 POST / HTTP/1.1\r\nHost: a\r\n\r\n\
                 HEAD /nope?x=1 HTTP/1.1\r\nHost: a\r\n\r\n\
                 GET / HTTP/1.1\r\n\r\n\
                 GET /nope HTTP/1.1\r\nHost: a\r\n\r\n";
    let not_found = text_response("404 Not Found", "", "Not Found\n");
    let expected = [
        &not_found[..],
        &text_response(
            "426 Upgrade Required",
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n",
            "Upgrade Required\n",
        ),
        &text_response(
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "Method Not Allowed\n",
        ),
        &not_found[..not_found.len() - "Not Found\n".len()],
        &text_response("400 Bad Request", "Connection: close\r\n", "Bad Request\n"),
    ]
    .concat();
    for chunking in Chunking::every(input.len()) {
        let mock = http().await;
        mock.feed_chunked(input, &chunking).await;
        assert_eq!(
            String::from_utf8_lossy(&mock.written()),
            expected,
            "{chunking:?}"
        );
        assert_eq!(mock.ending(), Some(Ending::Closed), "{chunking:?}");
    }
}

/// HTTP/1.0 persists only with `keep-alive`, HTTP/1.1 unless `close`.
#[actix::test]
async fn persistence_at_every_split_point() {
    let input = "GET /nope HTTP/1.0\r\nConnection: keep-alive\r\n\r\n\
                 GET /nope HTTP/1.1\r\nHost: a\r\n\r\n\
                 GET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n\
                 GET /nope HTTP/1.1\r\nHost: a\r\n\r\n";
    let expected = [
        text_response("404 Not Found", "Connection: keep-alive\r\n", "Not Found\n"),
        text_response("404 Not Found", "", "Not Found\n"),
        text_response("404 Not Found", "Connection: close\r\n", "Not Found\n"),
    ]
    .concat();
    for chunking in Chunking::every(input.len()) {
        let mock = http().await;
        mock.feed_chunked(input, &chunking).await;
        assert_eq!(
            String::from_utf8_lossy(&mock.written()),
            expected,
            "{chunking:?}"
        );
        assert_eq!(mock.ending(), Some(Ending::Closed), "{chunking:?}");
    }

    // HTTP/1.0 without `keep-alive` closes.
    let mock = http().await;
    mock.feed("GET /nope HTTP/1.0\r\n\r\n").await;
    let expected = text_response("404 Not Found", "Connection: close\r\n", "Not Found\n");
    assert_eq!(String::from_utf8_lossy(&mock.written()), expected);
    assert_eq!(mock.ending(), Some(Ending::Closed));
}

/// `GET /` serves the page and keeps the connection.
#[actix::test]
async fn the_page() {
    let mock = http().await;
    mock.feed("GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let written = String::from_utf8_lossy(&mock.written()).into_owned();
    assert!(
        written.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"),
        "{written}"
    );
    assert!(written.ends_with("</html>\n"), "{written}");
    assert!(!mock.is_closing());
}

/// A head that does not parse is answered 400, one over 16 KiB 431, and either closes.
#[actix::test]
async fn bad_heads_are_answered_and_close() {
    let input = "GET /nope HTTP/1.1\r\nHost: a\r\n\r\nNOT AN HTTP REQUEST\r\n\r\n";
    let expected = [
        text_response("404 Not Found", "", "Not Found\n"),
        text_response("400 Bad Request", "Connection: close\r\n", "Bad Request\n"),
    ]
    .concat();
    for chunking in Chunking::every(input.len()) {
        let mock = http().await;
        mock.feed_chunked(input, &chunking).await;
        assert_eq!(
            String::from_utf8_lossy(&mock.written()),
            expected,
            "{chunking:?}"
        );
        assert_eq!(mock.ending(), Some(Ending::Closed), "{chunking:?}");
    }

    let input = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nx-pad: {}\r\n\r\n",
        "a".repeat(http::MAX_HEAD)
    );
    let expected = text_response(
        "431 Request Header Fields Too Large",
        "Connection: close\r\n",
        "Request Header Fields Too Large\n",
    );
    let chunkings = [
        Chunking::Whole,
        Chunking::Bytewise,
        Chunking::SplitAt(100),
        Chunking::SplitAt(http::MAX_HEAD - 1),
        Chunking::SplitAt(http::MAX_HEAD),
        Chunking::SplitAt(http::MAX_HEAD + 1),
        Chunking::Sizes(vec![1000]),
    ];
    for chunking in chunkings {
        let mock = http().await;
        mock.feed_chunked(input.clone(), &chunking).await;
        assert_eq!(
            String::from_utf8_lossy(&mock.written()),
            expected,
            "{chunking:?}"
        );
        assert_eq!(mock.ending(), Some(Ending::Closed), "{chunking:?}");
    }
}

/// Text and binary messages are echoed, fragmented ones reassembled (a UTF-8 character split
/// between fragments included), pings answered with the same payload, pongs ignored; a close
/// frame is answered with its code and the connection closed, and nothing after it is read.
#[actix::test]
async fn echo_at_every_split_point() {
    let input = [
        client(TEXT, b"hello"),
        client(BINARY, &[0, 1, 2, 255]),
        client(PING, b"are you there?"),
        client(PONG, b"unsolicited"),
        client_frame(false, TEXT, b"caf\xc3"),
        client(PING, b"mid"),
        client_frame(false, CONTINUATION, b"\xa9 "),
        client_frame(true, CONTINUATION, b"au lait"),
        client(CLOSE, &close_payload(1000, "bye")),
        client(TEXT, b"too late"),
    ]
    .concat();
    let expected = [
        server(TEXT, b"hello"),
        server(BINARY, &[0, 1, 2, 255]),
        server(PONG, b"are you there?"),
        server(PONG, b"mid"),
        server(TEXT, "café au lait".as_bytes()),
        server(CLOSE, &close_payload(1000, "")),
    ]
    .concat();
    for chunking in Chunking::every(input.len()) {
        let mock = websocket(1024).await;
        mock.feed_chunked(input.clone(), &chunking).await;
        assert_eq!(mock.written(), expected, "{chunking:?}");
        assert_eq!(mock.command_names().last(), Some(&"Close"), "{chunking:?}");
        assert_eq!(mock.ending(), Some(Ending::Closed), "{chunking:?}");
    }

    // A close frame without a code is answered with none.
    let mock = websocket(1024).await;
    mock.feed(client(CLOSE, b"")).await;
    assert_eq!(mock.written(), server(CLOSE, b""));
}

/// Frames with 16-bit and 64-bit lengths, echoed with the same lengths.
#[actix::test]
async fn long_frames_are_echoed() {
    let medium = vec![b'm'; 300];
    let long: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
    let input = [client(TEXT, &medium), client(BINARY, &long)].concat();
    let expected = [server(TEXT, &medium), server(BINARY, &long)].concat();
    let mut chunkings: Vec<Chunking> = (1..=20).map(Chunking::SplitAt).collect();
    chunkings.extend([
        Chunking::Whole,
        Chunking::Sizes(vec![1000]),
        Chunking::Sizes(vec![7, 4096]),
    ]);
    for chunking in chunkings {
        let mock = websocket(100_000).await;
        mock.feed_chunked(input.clone(), &chunking).await;
        assert_eq!(mock.written(), expected, "{chunking:?}");
        assert!(!mock.is_closing());
    }
}

/// Each violation of RFC 6455 fails the connection with its close code and a reason, after the
/// echo of the message before it, and nothing after it is read.
#[actix::test]
async fn violations_close_with_their_code_at_every_split_point() {
    let mut unmasked = server(TEXT, b"hi");
    unmasked[0] = 0x81;
    let mut reserved_bit = client(TEXT, b"hi");
    reserved_bit[0] |= 0x40;
    let cases: [(&str, usize, Vec<u8>, u16, &str); 14] = [
        ("unmasked", 1024, unmasked, 1002, "unmasked client frame"),
        (
            "reserved bit",
            1024,
            reserved_bit,
            1002,
            "reserved bit set, no extension agreed",
        ),
        (
            "reserved opcode",
            1024,
            client(0x3, b""),
            1002,
            "reserved opcode",
        ),
        (
            "long ping",
            1024,
            client(PING, &[b'p'; 126]),
            1002,
            "control frame over 125 bytes",
        ),
        (
            "fragmented ping",
            1024,
            client_frame(false, PING, b"p"),
            1002,
            "fragmented control frame",
        ),
        (
            "stray continuation",
            1024,
            client(CONTINUATION, b"x"),
            1002,
            "continuation without a message",
        ),
        (
            "message in a message",
            1024,
            [client_frame(false, TEXT, b"a"), client(TEXT, b"b")].concat(),
            1002,
            "new message inside a fragmented one",
        ),
        (
            "text not UTF-8",
            1024,
            client(TEXT, b"caf\xc3"),
            1007,
            "text message not UTF-8",
        ),
        (
            "message too big",
            16,
            client(BINARY, &[0; 17]),
            1009,
            "message too big",
        ),
        (
            "fragments too big",
            16,
            [
                client_frame(false, BINARY, &[0; 10]),
                client(CONTINUATION, &[0; 7]),
            ]
            .concat(),
            1009,
            "message too big",
        ),
        (
            "close of one byte",
            1024,
            client(CLOSE, &[3]),
            1002,
            "close frame of one byte",
        ),
        (
            "close code 1005",
            1024,
            client(CLOSE, &close_payload(1005, "")),
            1002,
            "invalid close code",
        ),
        (
            "close code 999",
            1024,
            client(CLOSE, &close_payload(999, "")),
            1002,
            "invalid close code",
        ),
        (
            "close reason not UTF-8",
            1024,
            client(CLOSE, &[&close_payload(1000, "")[..], b"\xff"].concat()),
            1007,
            "close reason not UTF-8",
        ),
    ];
    for (name, max_message, bad, code, reason) in cases {
        let input = [client(TEXT, b"ok"), bad, client(TEXT, b"never read")].concat();
        let expected = [
            server(TEXT, b"ok"),
            server(CLOSE, &close_payload(code, reason)),
        ]
        .concat();
        for chunking in Chunking::every(input.len()) {
            let mock = websocket(max_message).await;
            mock.feed_chunked(input.clone(), &chunking).await;
            assert_eq!(mock.written(), expected, "{name}, {chunking:?}");
            assert_eq!(mock.ending(), Some(Ending::Closed), "{name}, {chunking:?}");
        }
    }
}

/// While the peer reads slowly, neither protocol receives anything more: neither overrides
/// `pause_writing`, whose default pauses reading until the peer has read (and
/// `resume_writing`'s resumes it). Neither protocol does anything else for it. A lost
/// connection stops them.
#[actix::test]
async fn a_peer_that_does_not_read_gets_nothing_more_read() {
    let ws = websocket(1024).await;
    let http = http().await;
    for (mock, input, output) in [
        (&ws, client(TEXT, b"held"), server(TEXT, b"held")),
        (
            &http,
            b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            text_response("404 Not Found", "", "Not Found\n").into_bytes(),
        ),
    ] {
        mock.pause_writing().await;
        mock.push(input);
        mock.settle().await;
        assert!(
            mock.written().is_empty(),
            "delivered while the peer does not read"
        );
        mock.resume_writing().await;
        assert_eq!(
            mock.command_names(),
            ["PauseReading", "ResumeReading", "Write"],
            "the default write flow, then the response"
        );
        assert_eq!(mock.written(), output);
        mock.lose(None).await;
        mock.protocol_stopped().await;
    }
}

/// A connection on the HTTP protocol whose heads must come whole within `timeout`.
async fn http_timed(timeout: Duration) -> MockTransport {
    let http = Http::new(1024, WebSockets::default()).header_timeout(Some(timeout));
    MockTransport::connect(http).await
}

/// What a head that did not come whole in time is answered with, before the connection closes.
fn request_timeout() -> String {
    text_response(
        "408 Request Timeout",
        "Connection: close\r\n",
        "Request Timeout\n",
    )
}

/// The first request head must be whole within the header timeout of the connection's start:
/// one that is not gets `408` and the connection closes; one that is, is answered.
#[actix::test]
async fn a_first_head_not_whole_in_time_gets_408() {
    let timeout = Duration::from_millis(200);
    let mock = http_timed(timeout).await;
    mock.feed("GET / HTTP/1.1\r\nHo").await;
    tokio::time::sleep(timeout / 2).await;
    mock.feed("st: a\r\n").await;
    tokio::time::sleep(timeout).await;
    mock.settle().await;
    assert_eq!(String::from_utf8_lossy(&mock.written()), request_timeout());
    assert_eq!(mock.ending(), Some(Ending::Closed));

    // Whole in time, it is answered, and nothing times out after it.
    let mock = http_timed(timeout).await;
    mock.feed("GET /nope HTTP/1.1\r\nHo").await;
    mock.feed("st: a\r\n\r\n").await;
    tokio::time::sleep(timeout * 2).await;
    mock.settle().await;
    assert_eq!(
        String::from_utf8_lossy(&mock.written()),
        text_response("404 Not Found", "", "Not Found\n")
    );
    assert!(!mock.is_closing());
}

/// A later head's time counts from its first byte, not from the previous response: between
/// requests, only the keep-alive (idle) timeout of the transport counts. Its first byte may
/// come with the end of the request before it.
#[actix::test]
async fn a_later_head_is_timed_from_its_first_byte() {
    let timeout = Duration::from_millis(200);
    let not_found = text_response("404 Not Found", "", "Not Found\n");
    for first in [
        "GET /nope HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /nope HTTP/1.1\r\nHost: a\r\n\r\nGET",
    ] {
        let mock = http_timed(timeout).await;
        mock.feed(first).await;
        // Longer than the header timeout, between requests.
        tokio::time::sleep(timeout + timeout / 2).await;
        let begun = first.ends_with("GET");
        mock.feed(if begun {
            " /nope HTTP/1.1\r\n"
        } else {
            "GET /nope HTTP/1.1\r\n"
        })
        .await;
        tokio::time::sleep(timeout / 2).await;
        mock.feed("Host: a\r\n\r\n").await;
        mock.settle().await;
        if begun {
            // Begun with the first request's end: its time is out.
            assert_eq!(
                String::from_utf8_lossy(&mock.written()),
                [&not_found[..], &request_timeout()].concat()
            );
            assert_eq!(mock.ending(), Some(Ending::Closed));
        } else {
            assert_eq!(
                String::from_utf8_lossy(&mock.written()),
                [&not_found[..], &not_found].concat(),
                "{first:?}"
            );
            assert!(!mock.is_closing());
        }
    }
}

/// A WebSocket idle for the keep-alive timeout is pinged; anything from the client, its pong
/// or a message, keeps it open; a ping left unanswered until the next timeout closes it with
/// 1001.
#[actix::test]
async fn an_idle_websocket_is_pinged_then_closed_if_silent() {
    let timeout = Duration::from_secs(60);
    let mock = MockTransport::builder()
        .idle_timeout(timeout)
        .connect(WebSocket::new(1024, WebSockets::default()))
        .await;
    for answer in [client(PONG, b""), client(TEXT, b"still here")] {
        mock.advance(timeout).await;
        assert_eq!(mock.take_written(), server(PING, b""));
        mock.feed(answer).await;
        mock.take_written();
    }
    mock.advance(timeout).await;
    assert_eq!(mock.take_written(), server(PING, b""));
    assert!(!mock.is_closing());
    mock.advance(timeout).await;
    assert_eq!(
        mock.take_written(),
        server(CLOSE, &close_payload(1001, "no answer to ping"))
    );
    assert_eq!(mock.ending(), Some(Ending::Closed));
    mock.protocol_stopped().await;
}

/// A text message fails with 1007 at the first fragment no continuation can make valid, before
/// its last fragment comes (here it never does): an invalid byte, a character cut by a fragment
/// and proven wrong by the next, a surrogate, a code point past U+10FFFF.
#[actix::test]
async fn a_text_fragment_not_utf8_fails_before_the_message_ends() {
    let not_utf8 = server(CLOSE, &close_payload(1007, "text message not UTF-8"));
    let cases: [(&str, Vec<u8>); 4] = [
        ("an invalid byte", client_frame(false, TEXT, b"caf\xff")),
        (
            "a cut character, then a byte that cannot continue it",
            [
                client_frame(false, TEXT, b"caf\xc3"),
                client_frame(false, CONTINUATION, b"!"),
            ]
            .concat(),
        ),
        (
            "a surrogate, across fragments",
            [
                client_frame(false, TEXT, b"ok \xed"),
                client_frame(false, CONTINUATION, b"\xa0"),
            ]
            .concat(),
        ),
        (
            "past U+10FFFF (Autobahn 6.4.1)",
            [
                client_frame(false, TEXT, "κόσμε".as_bytes()),
                client_frame(false, CONTINUATION, b"\xf4\x90\x80\x80"),
            ]
            .concat(),
        ),
    ];
    for (name, input) in cases {
        for chunking in Chunking::every(input.len()) {
            let mock = websocket(1024).await;
            mock.feed_chunked(input.clone(), &chunking).await;
            assert_eq!(mock.written(), not_utf8, "{name}, {chunking:?}");
            assert_eq!(mock.ending(), Some(Ending::Closed), "{name}, {chunking:?}");
        }
    }
}

/// A text message fails with 1007 as soon as the bytes received prove it, before the rest of
/// their frame comes (here it never does), as Autobahn's cases 6.4.3 and 6.4.4 ask: the close
/// frame goes out and the connection closes with the start of a frame alone, cut anywhere.
#[actix::test]
async fn a_text_frame_not_utf8_fails_before_the_frame_ends() {
    let not_utf8 = server(CLOSE, &close_payload(1007, "text message not UTF-8"));
    let kosme = "κόσμε".as_bytes();
    // A frame of `len` bytes of which only `sent` come: its header, then those.
    let cut_short = |fin, opcode, sent: &[u8], len| {
        let mut payload = sent.to_vec();
        payload.resize(len, b'x');
        let mut frame = client_frame(fin, opcode, &payload);
        frame.truncate(frame.len() - (len - sent.len()));
        frame
    };
    let cases: [(&str, Vec<u8>); 3] = [
        (
            "past U+10FFFF, in one frame (Autobahn 6.4.4)",
            cut_short(true, TEXT, &[kosme, b"\xf4\x90"].concat(), 21),
        ),
        (
            "an invalid byte, in a fragment",
            cut_short(false, TEXT, b"caf\xff", 100),
        ),
        (
            "a character begun in the fragment before",
            [
                client_frame(false, TEXT, &[kosme, b"\xf4"].concat()),
                cut_short(true, CONTINUATION, b"\x90", 10),
            ]
            .concat(),
        ),
    ];
    for (name, input) in cases {
        for chunking in Chunking::every(input.len()) {
            let mock = websocket(1024).await;
            mock.feed_chunked(input.clone(), &chunking).await;
            assert_eq!(mock.written(), not_utf8, "{name}, {chunking:?}");
            assert_eq!(mock.ending(), Some(Ending::Closed), "{name}, {chunking:?}");
        }
    }
}

/// The close frame a WebSocket going away sends: 1001, with a reason.
fn going_away() -> Vec<u8> {
    server(CLOSE, &close_payload(1001, "shutting down"))
}

/// A connection upgraded to WebSocket through the HTTP protocol, which makes its WebSocket
/// protocol join `websockets`; the `101` taken.
async fn upgraded(websockets: &WebSockets) -> MockTransport {
    let mock = MockTransport::connect(Http::new(1024, websockets.clone())).await;
    mock.feed(UPGRADE).await;
    mock.expect_written(SWITCHING).await;
    mock
}

/// On shutdown every live WebSocket sends its client a close frame with 1001 (going away), and
/// ignores what the client still sends, pings and messages alike; the client's close frame ends
/// the handshake and the connection, with no second close frame. `go_away` resolves once they
/// are gone. A WebSocket connected after shutdown began goes away at once.
#[actix::test]
async fn going_away_sends_1001_then_closes_at_the_clients_close() {
    let websockets = WebSockets::default();
    let first = upgraded(&websockets).await;
    let second = upgraded(&websockets).await;
    second.feed(client_frame(false, TEXT, b"half a mess")).await;

    // Polled once, it tells them all, then waits.
    let mut shutdown = std::pin::pin!(websockets.go_away());
    assert!(futures::poll!(&mut shutdown).is_pending());
    for mock in [&first, &second] {
        mock.expect_written(going_away()).await;
        mock.feed(client(TEXT, b"ignored")).await;
        mock.feed(client(PING, b"unanswered")).await;
        mock.feed(client_frame(true, CONTINUATION, b"age")).await;
        assert!(mock.take_written().is_empty());
        assert!(!mock.is_closing(), "closed before the client's close frame");
    }
    first.feed(client(CLOSE, &close_payload(1001, ""))).await;
    assert_eq!(first.ending(), Some(Ending::Closed));
    assert!(
        futures::poll!(&mut shutdown).is_pending(),
        "a WebSocket is still open"
    );
    second.feed(client(CLOSE, b"")).await;
    assert_eq!(second.ending(), Some(Ending::Closed));
    for mock in [&first, &second] {
        assert!(mock.take_written().is_empty(), "a second close frame");
        assert_eq!(mock.command_names().last(), Some(&"Close"));
        mock.protocol_stopped().await;
    }
    assert!(
        futures::poll!(&mut shutdown).is_ready(),
        "go_away resolves once every WebSocket is gone"
    );

    let late = upgraded(&websockets).await;
    late.expect_written(going_away()).await;
    assert!(!late.is_closing());
}

/// A WebSocket the HTTP protocol switches to once shutdown has begun goes away as soon as it
/// is connected, and shutdown waits for it. (A `GoAway` that reaches it before its
/// `connection_made` needs no test of its own: a protocol has its transport from the start, so
/// it writes the close frame behind the `101` at once, and `connection_made` sends none again.)
#[actix::test]
async fn a_websocket_switched_to_during_shutdown_goes_away_once_connected() {
    let websockets = WebSockets::default();
    let live = upgraded(&websockets).await;
    let mut shutdown = std::pin::pin!(websockets.go_away());
    assert!(futures::poll!(&mut shutdown).is_pending());
    live.expect_written(going_away()).await;

    let mock = upgraded(&websockets).await;
    mock.expect_written(going_away()).await;
    assert!(mock.take_written().is_empty(), "one close frame");
    for mock in [&live, &mock] {
        mock.feed(client(CLOSE, b"")).await;
        assert_eq!(mock.ending(), Some(Ending::Closed));
        mock.protocol_stopped().await;
    }
    assert!(
        futures::poll!(&mut shutdown).is_ready(),
        "shutdown waited for both"
    );
}

/// A client that never answers the close frame: the connection closes anyway, once
/// `CLOSE_HANDSHAKE_TIMEOUT` has passed, and not before.
#[actix::test]
async fn going_away_closes_after_the_timeout_without_the_clients_close() {
    let (mock, websocket) =
        MockTransport::builder().attach(WebSocket::new(1024, WebSockets::default()));
    mock.settle().await;
    let sent = tokio::time::Instant::now();
    websocket
        .send(GoAway)
        .await
        .expect("the WebSocket is running");
    mock.settle().await;
    assert_eq!(mock.written(), going_away());
    assert!(!mock.is_closing(), "closed before the timeout");

    mock.protocol_stopped().await;
    assert_eq!(mock.ending(), Some(Ending::Closed));
    assert!(
        sent.elapsed() >= CLOSE_HANDSHAKE_TIMEOUT,
        "{:?}",
        sent.elapsed()
    );
    assert_eq!(
        mock.written(),
        going_away(),
        "nothing after the close frame"
    );
}
