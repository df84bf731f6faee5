//! The `websocket_echo` example runs as a process, and independent peers check from the outside
//! what its docs promise:
//!
//! - `tungstenite`'s client: text, binary and 1 MiB messages come back intact, pings get pongs,
//!   and a close is echoed with its code before the server closes the TCP connection;
//! - raw frames over a `TcpStream`, built here by hand: fragmented messages are reassembled, the
//!   upgrade request and the first frames sent in one write lose nothing, and each protocol
//!   error closes the connection with its code (1002, 1007, 1009), invalid text as soon as its
//!   bytes prove it, before the end of its fragment or frame;
//! - `curl` and raw HTTP/1.1: the page, `404`, persistent connections, `Connection: close`,
//!   HTTP/1.0, `400`, `431`, and `426` for `/ws` without a proper upgrade;
//! - bounds: a client that pipelines `GET /` as fast as it can and never reads a response holds
//!   the server's memory within a few MiB (sampled from `/proc/PID/status`) while a browser-like
//!   client gets pages and WebSocket echoes all along; a silent connection is closed after
//!   `--header-timeout`, a head sent one byte at a time (slowloris) is answered `408` and
//!   closed, an idle keep-alive connection is closed after `--keep-alive`, and an idle WebSocket
//!   is pinged, kept while it answers (tungstenite does), and closed with 1001 when it does not;
//! - the server prints exactly one line, `listening on ADDR`, and exits 0 on SIGTERM: each live
//!   WebSocket gets a close frame with 1001 (going away) and a bounded wait for its client's
//!   close frame before its TCP connection closes, plain HTTP connections just close;
//! - the committed corpus of the `http_request` and `websocket_*` fuzz targets passes their
//!   checks, the parsers' unit tests with it (both come in with `fuzz/checks/websocket.rs`).
//!
//! Every child process is killed when its test fails, and every wait is bounded.

#[path = "support/process.rs"]
mod process;

#[path = "support/bounds.rs"]
mod bounds;

/// The checks of the `http_request` and `websocket_*` fuzz targets, over the example's parsers.
#[path = "../fuzz/checks/websocket.rs"]
mod fuzz_checks;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    process::{Command, Output},
    time::{Duration, Instant},
};

use process::{Process, assert_same_bytes, example_command, pseudo_random};
use tungstenite::{
    Message,
    protocol::{
        CloseFrame, WebSocket,
        frame::{
            Frame,
            coding::{CloseCode, Data, OpCode},
        },
    },
};

/// One mebibyte: the "large" message of the round-trip tests.
const MIB: usize = 1024 * 1024;

/// How long a socket read may block before the test fails.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server may take to exit after SIGTERM.
const EXIT_BOUND: Duration = Duration::from_secs(10);

/// The example's `CLOSE_HANDSHAKE_TIMEOUT`: how long a WebSocket going away waits for its
/// client's close frame.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

/// The `Sec-WebSocket-Key` of RFC 6455's own example, and the accept value the RFC gives for it.
const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Opcodes (RFC 6455, 5.2).
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// A running `websocket_echo` whose `listening on ADDR` line has been read.
struct Server {
    process: Process,
    addr: SocketAddr,
}

impl Server {
    /// Starts the example on `127.0.0.1:0` with `extra_args`.
    fn start(extra_args: &[&str]) -> Server {
        let mut command = example_command("websocket_echo", "warn");
        command.args(["--addr", "127.0.0.1:0"]).args(extra_args);
        let process = Process::spawn("websocket_echo", command);
        let addr = process.listening_on();
        let addr: SocketAddr = addr
            .parse()
            .unwrap_or_else(|err| panic!("`{addr}` is not a socket address: {err}"));
        assert!(addr.ip().is_loopback(), "bound to {addr}, not loopback");
        assert_ne!(addr.port(), 0, "the line must show the port really bound");
        Server { process, addr }
    }

    /// A plain TCP connection, reads bounded by [`READ_TIMEOUT`].
    fn connect(&self) -> Conn {
        Server::conn_to(self.addr)
    }

    /// A plain TCP connection to `addr`, reads bounded by [`READ_TIMEOUT`].
    fn conn_to(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect to websocket_echo");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            reader: BufReader::new(stream),
        }
    }

    /// A WebSocket connection through tungstenite's client handshake (which checks the `101`
    /// and its `Sec-WebSocket-Accept`).
    fn websocket(&self) -> WebSocket<TcpStream> {
        let stream = TcpStream::connect(self.addr).expect("connect to websocket_echo");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let url = format!("ws://{}/ws", self.addr);
        let (socket, response) = tungstenite::client(url.as_str(), stream)
            .unwrap_or_else(|err| panic!("the WebSocket handshake with {url} failed: {err}"));
        assert_eq!(response.status(), 101);
        socket
    }

    /// A raw connection upgraded to WebSocket with RFC 6455's sample key, the `101` checked and
    /// read: what follows on it are frames.
    fn raw_websocket(&self) -> Conn {
        let mut conn = self.connect();
        conn.send(upgrade_request("/ws", RFC_KEY).as_bytes());
        conn.expect_switch();
        conn
    }

    /// Sends SIGTERM; the server exits 0 having printed nothing but its one line.
    fn stop(mut self) {
        self.terminate();
        self.exits_cleanly();
    }

    /// Sends SIGTERM, and returns at once.
    fn terminate(&mut self) {
        self.process.signal("TERM");
    }

    /// The server exits 0 within [`EXIT_BOUND`], having printed nothing but its one line.
    fn exits_cleanly(self) {
        let finished = self.process.finish(EXIT_BOUND);
        assert_eq!(
            finished.status.code(),
            Some(0),
            "websocket_echo exit status ({}); stderr:\n{}",
            finished.status,
            finished.stderr_text()
        );
        assert_eq!(
            finished.stdout_text(),
            format!("listening on {}\n", self.addr),
            "websocket_echo prints exactly one line on stdout"
        );
    }
}

/// A valid upgrade request for `path` with `key`.
fn upgrade_request(path: &str, key: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// One client TCP connection, read through a buffer that keeps what a read took beyond what was
/// asked for.
struct Conn {
    reader: BufReader<TcpStream>,
}

/// An HTTP response as read off the wire.
#[derive(Debug)]
struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    /// The one value of header `name`, any case.
    #[track_caller]
    fn header(&self, name: &str) -> &str {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .collect();
        match values[..] {
            [value] => value,
            _ => panic!("header {name}: {values:?} in {self:?}"),
        }
    }

    fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(field, _)| field.eq_ignore_ascii_case(name))
    }

    /// Whether the comma-separated header `name` lists `token`, any case.
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(field, _)| field.eq_ignore_ascii_case(name))
            .flat_map(|(_, value)| value.split(','))
            .any(|item| item.trim().eq_ignore_ascii_case(token))
    }
}

impl Conn {
    fn send(&mut self, bytes: &[u8]) {
        self.reader
            .get_mut()
            .write_all(bytes)
            .expect("write to websocket_echo");
    }

    fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        self.reader
            .read_exact(&mut buf)
            .unwrap_or_else(|err| panic!("reading {n} bytes: {err}"));
        buf
    }

    /// Reads one response; `head_only` for the answer to a `HEAD` (no body, whatever
    /// `Content-Length` says).
    fn read_response(&mut self, head_only: bool) -> HttpResponse {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let n = self
                .reader
                .read_until(b'\n', &mut head)
                .expect("read a response head");
            assert!(
                n > 0,
                "EOF in a response head: {:?}",
                String::from_utf8_lossy(&head)
            );
        }
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut fields);
        let status = parsed.parse(&head).expect("a valid response head");
        assert!(status.is_complete());
        assert_eq!(parsed.version, Some(1), "an HTTP/1.1 response");
        let response = HttpResponse {
            status: parsed.code.expect("a status"),
            headers: parsed
                .headers
                .iter()
                .map(|field| {
                    let value = String::from_utf8(field.value.to_vec()).expect("ASCII");
                    (field.name.to_owned(), value)
                })
                .collect(),
            body: Vec::new(),
        };
        if response.status == 101 || head_only {
            return response;
        }
        let len: usize = response
            .header("Content-Length")
            .parse()
            .expect("a numeric Content-Length");
        HttpResponse {
            body: self.read_exact(len),
            ..response
        }
    }

    /// Reads the `101` of an upgrade with [`RFC_KEY`], and checks it.
    fn expect_switch(&mut self) {
        let response = self.read_response(false);
        assert_eq!(response.status, 101, "{response:?}");
        assert!(response.has_token("Upgrade", "websocket"), "{response:?}");
        assert!(response.has_token("Connection", "Upgrade"), "{response:?}");
        assert_eq!(response.header("Sec-WebSocket-Accept"), RFC_ACCEPT);
    }

    /// Reads one frame from the server: `(fin, opcode, payload)`. A server never masks.
    fn read_frame(&mut self) -> (bool, u8, Vec<u8>) {
        let head = self.read_exact(2);
        assert_eq!(head[0] & 0x70, 0, "reserved bits set by the server");
        assert_eq!(head[1] & 0x80, 0, "a server frame must not be masked");
        let len = match head[1] & 0x7F {
            126 => u16::from_be_bytes(self.read_exact(2).try_into().unwrap()) as usize,
            127 => u64::from_be_bytes(self.read_exact(8).try_into().unwrap()) as usize,
            len => len as usize,
        };
        (head[0] & 0x80 != 0, head[0] & 0x0F, self.read_exact(len))
    }

    /// Reads one whole unfragmented message or control frame: `(opcode, payload)`.
    #[track_caller]
    fn read_message(&mut self) -> (u8, Vec<u8>) {
        let (fin, opcode, payload) = self.read_frame();
        assert!(fin, "the server echoes each message in one frame");
        (opcode, payload)
    }

    /// Expects a close frame with `code`, then the server closing the connection.
    #[track_caller]
    fn expect_close(&mut self, code: u16) {
        let (opcode, payload) = self.read_message();
        assert_eq!(
            opcode,
            CLOSE,
            "expected a close frame, got opcode {opcode:#x} with {:?}",
            String::from_utf8_lossy(&payload)
        );
        assert!(payload.len() >= 2, "a close frame without a code");
        let got = u16::from_be_bytes([payload[0], payload[1]]);
        assert_eq!(
            got,
            code,
            "close code (reason {:?})",
            String::from_utf8_lossy(&payload[2..])
        );
        std::str::from_utf8(&payload[2..]).expect("a UTF-8 close reason");
        self.expect_eof();
    }

    /// Expects the server to close the connection, with nothing more sent.
    #[track_caller]
    fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "bytes after the end: {rest:?}"),
            Err(err) => panic!("expected the server to close the connection, got {err}"),
        }
    }
}

/// A frame as a client sends it, masked (RFC 6455, 5.2).
fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, opcode, payload, Some([0x37, 0xfa, 0x21, 0x3d]))
}

/// A frame with any first byte's flags, masked or not.
fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        len @ 0..=125 => out.push(mask_bit | len as u8),
        len @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// Reads the next data message through tungstenite, skipping nothing.
fn read(socket: &mut WebSocket<TcpStream>) -> Message {
    socket
        .read()
        .unwrap_or_else(|err| panic!("reading from the WebSocket: {err}"))
}

// ---------------------------------------------------------------------------------------------
// WebSocket, through tungstenite.
// ---------------------------------------------------------------------------------------------

#[test]
fn text_and_binary_messages_are_echoed() {
    let server = Server::start(&[]);
    let mut socket = server.websocket();

    for text in ["hello", "", "héllo, wörld ✓ 🦀"] {
        socket.send(Message::text(text)).unwrap();
        assert_eq!(read(&mut socket), Message::text(text));
    }
    let every_byte: Vec<u8> = (0..=255).collect();
    socket.send(Message::binary(every_byte.clone())).unwrap();
    assert_eq!(read(&mut socket), Message::binary(every_byte));

    drop(socket);
    server.stop();
}

#[test]
fn one_mebibyte_messages_are_echoed() {
    let server = Server::start(&[]);
    let mut socket = server.websocket();

    let binary = pseudo_random(MIB, 7);
    socket.send(Message::binary(binary.clone())).unwrap();
    match read(&mut socket) {
        Message::Binary(echo) => assert_same_bytes(&echo, &binary, "the 1 MiB binary echo"),
        other => panic!("expected a binary message, got {other:?}"),
    }
    let text: String = (0..MIB).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    socket.send(Message::text(text.clone())).unwrap();
    match read(&mut socket) {
        Message::Text(echo) => {
            assert_same_bytes(echo.as_bytes(), text.as_bytes(), "the 1 MiB text echo")
        }
        other => panic!("expected a text message, got {other:?}"),
    }

    drop(socket);
    server.stop();
}

#[test]
fn pings_are_answered_with_pongs() {
    let server = Server::start(&[]);
    let mut socket = server.websocket();

    socket.send(Message::Ping("are you there".into())).unwrap();
    assert_eq!(read(&mut socket), Message::Pong("are you there".into()));
    // An unsolicited pong gets no answer: the next thing back is the echo.
    socket.send(Message::Pong("unsolicited".into())).unwrap();
    socket.send(Message::text("after the pong")).unwrap();
    assert_eq!(read(&mut socket), Message::text("after the pong"));

    drop(socket);
    server.stop();
}

#[test]
fn a_client_close_is_echoed_then_the_connection_closes() {
    let server = Server::start(&[]);
    let mut socket = server.websocket();
    socket.send(Message::text("before closing")).unwrap();
    assert_eq!(read(&mut socket), Message::text("before closing"));

    socket
        .close(Some(CloseFrame {
            code: CloseCode::from(4321),
            reason: "done here".into(),
        }))
        .unwrap();
    match read(&mut socket) {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 4321),
        other => panic!("expected the close echoed, got {other:?}"),
    }
    match socket.read() {
        Err(tungstenite::Error::ConnectionClosed) => {}
        other => panic!("expected the closing handshake complete, got {other:?}"),
    }
    // The server closes the TCP connection: EOF, not a timeout.
    let mut rest = Vec::new();
    let read = socket.get_mut().read_to_end(&mut rest);
    assert!(matches!(read, Ok(0)), "expected EOF, got {read:?} {rest:?}");

    server.stop();
}

// ---------------------------------------------------------------------------------------------
// WebSocket, raw frames.
// ---------------------------------------------------------------------------------------------

#[test]
fn fragmented_messages_are_reassembled() {
    let server = Server::start(&[]);
    let mut conn = server.raw_websocket();

    // "é" is two bytes: the first fragment ends in the middle of it, which is fine as long as
    // the whole message is UTF-8. A ping between fragments is answered at once.
    let text = "fragments: é✓".as_bytes();
    let mut wire = masked(false, TEXT, &text[..12]);
    wire.extend(masked(true, PING, b"between"));
    wire.extend(masked(false, CONTINUATION, &text[12..13]));
    wire.extend(masked(false, CONTINUATION, b""));
    wire.extend(masked(true, CONTINUATION, &text[13..]));
    conn.send(&wire);
    assert_eq!(conn.read_message(), (PONG, b"between".to_vec()));
    assert_eq!(conn.read_message(), (TEXT, text.to_vec()));

    // Fragments in separate writes, the last one large.
    let binary = pseudo_random(200_000, 3);
    conn.send(&masked(false, BINARY, &binary[..1]));
    conn.send(&masked(false, CONTINUATION, &binary[1..100]));
    conn.send(&masked(true, CONTINUATION, &binary[100..]));
    let (opcode, echo) = conn.read_message();
    assert_eq!(opcode, BINARY);
    assert_same_bytes(&echo, &binary, "the reassembled binary message");

    conn.send(&masked(true, CLOSE, &1000u16.to_be_bytes()));
    conn.expect_close(1000);
    server.stop();
}

/// A client need not wait for the `101`: its first frames may travel in the same TCP segment
/// as the request. The HTTP protocol hands them over with the switch.
#[test]
fn the_upgrade_and_the_first_frames_in_one_write_lose_nothing() {
    let server = Server::start(&[]);
    let mut conn = server.connect();

    let mut wire = upgrade_request("/ws", RFC_KEY).into_bytes();
    wire.extend(masked(true, TEXT, b"first, in the request's segment"));
    wire.extend(masked(true, BINARY, &[0, 1, 2, 3]));
    wire.extend(masked(false, TEXT, b"split "));
    conn.send(&wire);
    conn.expect_switch();
    assert_eq!(
        conn.read_message(),
        (TEXT, b"first, in the request's segment".to_vec())
    );
    assert_eq!(conn.read_message(), (BINARY, vec![0, 1, 2, 3]));
    // What comes after the switch continues what came with it.
    conn.send(&masked(true, CONTINUATION, b"across the switch"));
    assert_eq!(
        conn.read_message(),
        (TEXT, b"split across the switch".to_vec())
    );

    conn.send(&masked(true, CLOSE, b""));
    let (opcode, payload) = conn.read_message();
    assert_eq!(
        (opcode, payload),
        (CLOSE, Vec::new()),
        "an empty close echoed"
    );
    conn.expect_eof();
    server.stop();
}

#[test]
fn an_unmasked_frame_is_closed_with_1002() {
    let server = Server::start(&[]);
    let mut conn = server.raw_websocket();
    conn.send(&masked(true, TEXT, b"masked is fine"));
    assert_eq!(conn.read_message(), (TEXT, b"masked is fine".to_vec()));

    conn.send(&frame(true, TEXT, b"unmasked", None));
    conn.expect_close(1002);
    server.stop();
}

#[test]
fn protocol_errors_are_closed_with_1002() {
    let server = Server::start(&[]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a ping over 125 bytes", masked(true, PING, &[b'p'; 126])),
        ("a fragmented ping", masked(false, PING, b"half")),
        (
            "a continuation without a message",
            masked(true, CONTINUATION, b"orphan"),
        ),
        ("a new message inside a fragmented one", {
            let mut wire = masked(false, TEXT, b"one");
            wire.extend(masked(true, TEXT, b"two"));
            wire
        }),
        ("reserved opcode 3", masked(true, 0x3, b"")),
        ("reserved opcode 0xB", masked(true, 0xB, b"")),
        ("RSV1 without an extension", masked(true, 0x40 | TEXT, b"x")),
        ("a one-byte close", masked(true, CLOSE, &[3])),
        (
            "close code 1005, never sent",
            masked(true, CLOSE, &1005u16.to_be_bytes()),
        ),
        ("close code 999", masked(true, CLOSE, &999u16.to_be_bytes())),
    ];
    for (case, wire) in cases {
        let mut conn = server.raw_websocket();
        conn.send(&wire);
        let (opcode, payload) = conn.read_message();
        assert_eq!(opcode, CLOSE, "{case}: expected a close frame");
        assert_eq!(payload[..2], 1002u16.to_be_bytes(), "{case}: close code");
        conn.expect_eof();
    }
    server.stop();
}

#[test]
fn invalid_utf8_is_closed_with_1007() {
    let server = Server::start(&[]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("a text frame", masked(true, TEXT, b"caf\xc3")),
        ("a fragmented text message", {
            let mut wire = masked(false, TEXT, b"ok so far ");
            wire.extend(masked(true, CONTINUATION, b"\xff\xfe"));
            wire
        }),
        ("a close reason", masked(true, CLOSE, b"\x03\xe8\xc3\x28")),
    ];
    for (case, wire) in cases {
        let mut conn = server.raw_websocket();
        conn.send(&wire);
        let (opcode, payload) = conn.read_message();
        assert_eq!(opcode, CLOSE, "{case}: expected a close frame");
        assert_eq!(payload[..2], 1007u16.to_be_bytes(), "{case}: close code");
        conn.expect_eof();
    }
    // The same bytes in a binary message are just bytes.
    let mut conn = server.raw_websocket();
    conn.send(&masked(true, BINARY, b"caf\xc3"));
    assert_eq!(conn.read_message(), (BINARY, b"caf\xc3".to_vec()));
    server.stop();
}

/// A text message fails with 1007 as soon as a fragment makes it invalid, before its last
/// fragment is sent (here it never is), as Autobahn's cases 6.4.1 and 6.4.2 ask: U+110000 in
/// the second fragment, or begun at the end of the first and proven invalid by the second.
#[test]
fn a_text_fragment_not_utf8_is_closed_with_1007_before_the_message_ends() {
    let server = Server::start(&[]);
    let kosme = "κόσμε".as_bytes();
    let cases: [(&str, Vec<u8>, &[u8]); 2] = [
        ("6.4.1", kosme.to_vec(), b"\xf4\x90\x80\x80"),
        ("6.4.2", [kosme, b"\xf4"].concat(), b"\x90\x80\x80"),
    ];
    for (case, first, second) in cases {
        let mut socket = server.websocket();
        let text = OpCode::Data(Data::Text);
        let more = OpCode::Data(Data::Continue);
        socket
            .send(Message::Frame(Frame::message(first, text, false)))
            .unwrap();
        socket
            .send(Message::Frame(Frame::message(second.to_vec(), more, false)))
            .unwrap();
        match read(&mut socket) {
            Message::Close(Some(frame)) => {
                assert_eq!(frame.code, CloseCode::Invalid, "{case}: 1007: {frame:?}")
            }
            other => panic!("{case}: expected a close frame, got {other:?}"),
        }
        match socket.read() {
            Err(tungstenite::Error::ConnectionClosed) => {}
            other => panic!("{case}: expected the connection closed, got {other:?}"),
        }
    }
    server.stop();
}

/// A text message fails with 1007 as soon as the bytes received prove it, inside a frame, as
/// Autobahn's cases 6.4.3 and 6.4.4 ask: one text frame written in chops, the first valid, the
/// second with the code point past U+10FFFF that makes it invalid (6.4.3: all four bytes of it;
/// 6.4.4: up to its second byte, the one that proves it). The close frame comes, and the
/// connection closes, while the rest of the frame is still unsent.
#[test]
fn a_text_frame_not_utf8_is_closed_with_1007_before_the_frame_ends() {
    let server = Server::start(&[]);
    let kosme = "κόσμε".as_bytes();
    let payload = [kosme, b"\xf4\x90\x80\x80", b"edited"].concat();
    let wire = masked(true, TEXT, &payload);
    // The header and the valid text.
    let valid = wire.len() - payload.len() + kosme.len();
    for invalid in [4, 2] {
        let mut conn = server.raw_websocket();
        conn.send(&wire[..valid]);
        conn.send(&wire[valid..valid + invalid]);
        conn.expect_close(1007);
    }
    server.stop();
}

#[test]
fn a_message_over_the_limit_is_closed_with_1009() {
    let server = Server::start(&["--max-message", "1024"]);

    let mut conn = server.raw_websocket();
    let at_limit = pseudo_random(1024, 5);
    conn.send(&masked(true, BINARY, &at_limit));
    assert_eq!(conn.read_message(), (BINARY, at_limit));
    conn.send(&masked(true, BINARY, &[0; 1025]));
    conn.expect_close(1009);

    // Fragments count together; control frames between them do not.
    let mut conn = server.raw_websocket();
    conn.send(&masked(false, TEXT, &[b'a'; 1000]));
    conn.send(&masked(true, PING, &[b'p'; 125]));
    assert_eq!(conn.read_message(), (PONG, vec![b'p'; 125]));
    conn.send(&masked(false, CONTINUATION, &[b'b'; 24]));
    conn.send(&masked(true, CONTINUATION, &[b'c'; 1]));
    conn.expect_close(1009);

    // A header announcing far more than the limit is refused before any payload is sent.
    let mut conn = server.raw_websocket();
    let mut header = vec![0x80 | BINARY, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 40).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    conn.send(&header);
    conn.expect_close(1009);

    server.stop();
}

/// On SIGTERM a live WebSocket gets a close frame with 1001 (going away), as a browser shows it,
/// not a bare TCP close (1006); the client answers with its own close frame, as tungstenite does
/// on its own, and the server closes the TCP connection. A plain HTTP connection just closes.
/// The server exits 0.
#[test]
fn sigterm_sends_websockets_1001_then_closes_at_the_clients_close() {
    let mut server = Server::start(&[]);
    let mut socket = server.websocket();
    socket.send(Message::text("still here")).unwrap();
    assert_eq!(read(&mut socket), Message::text("still here"));
    let mut http = server.connect();
    http.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(http.read_response(false).status, 200);

    server.terminate();
    match read(&mut socket) {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Away, "1001, going away: {frame:?}")
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    match socket.read() {
        Err(tungstenite::Error::ConnectionClosed) => {}
        other => panic!("expected the closing handshake complete, got {other:?}"),
    }
    let mut rest = Vec::new();
    let read = socket.get_mut().read_to_end(&mut rest);
    assert!(matches!(read, Ok(0)), "expected EOF, got {read:?} {rest:?}");
    // Closing our end too, as a browser does, ends the server's wait for the WebSockets.
    drop(socket);
    http.expect_eof();
    drop(http);
    server.exits_cleanly();
}

/// A client that never answers the close frame: the server closes the TCP connection anyway,
/// after a bounded wait (`CLOSE_HANDSHAKE_TIMEOUT`, not at once), ignoring the messages that
/// still come, and exits 0.
#[test]
fn sigterm_closes_a_silent_websocket_after_a_bounded_wait() {
    let mut server = Server::start(&[]);
    let mut conn = server.raw_websocket();
    conn.send(&masked(true, TEXT, b"still here"));
    assert_eq!(conn.read_message(), (TEXT, b"still here".to_vec()));

    let signalled = Instant::now();
    server.terminate();
    let (opcode, payload) = conn.read_message();
    assert_eq!(opcode, CLOSE, "{:?}", String::from_utf8_lossy(&payload));
    assert_eq!(payload[..2], 1001u16.to_be_bytes(), "1001, going away");
    conn.send(&masked(true, TEXT, b"not echoed"));
    conn.expect_eof();
    // The server's wait began after the signal, and a timer never fires early.
    let waited = signalled.elapsed();
    assert!(
        waited >= CLOSE_HANDSHAKE_TIMEOUT,
        "closed {waited:?} after the signal"
    );
    drop(conn);
    server.exits_cleanly();
}

// ---------------------------------------------------------------------------------------------
// HTTP.
// ---------------------------------------------------------------------------------------------

/// Runs `curl -s --max-time 10 ARGS`.
fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run curl, a peer of these tests: {err}"))
}

#[test]
fn curl_gets_the_page_and_a_404() {
    let server = Server::start(&[]);

    let page = curl(&["-i", &format!("http://{}/", server.addr)]);
    assert!(page.status.success(), "curl failed: {page:?}");
    let page = String::from_utf8(page.stdout).expect("a UTF-8 page");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(
        page.to_ascii_lowercase()
            .contains("\r\ncontent-type: text/html; charset=utf-8\r\n"),
        "{page}"
    );
    assert!(page.contains("<!doctype html>"), "{page}");
    assert!(page.contains("new WebSocket("), "the page's script: {page}");
    assert!(page.contains("/ws`"), "the script opens /ws: {page}");

    let missing = curl(&["-i", &format!("http://{}/nope", server.addr)]);
    let missing = String::from_utf8_lossy(&missing.stdout);
    assert!(
        missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
        "{missing}"
    );

    server.stop();
}

#[test]
fn curl_reuses_a_keep_alive_connection() {
    let server = Server::start(&[]);
    let url = format!("http://{}/", server.addr);

    let twice = curl(&["-v", &url, &url]);
    assert!(twice.status.success(), "curl failed: {twice:?}");
    let page = String::from_utf8_lossy(&twice.stdout);
    assert_eq!(page.matches("<!doctype html>").count(), 2, "two pages");
    let log = String::from_utf8_lossy(&twice.stderr);
    assert!(
        log.contains("Re-using existing connection"),
        "curl's second request should reuse the connection:\n{log}"
    );
    assert_eq!(log.matches("Connected to").count(), 1, "{log}");

    server.stop();
}

#[test]
fn persistent_connections_follow_http_1_1_and_1_0() {
    let server = Server::start(&[]);

    // HTTP/1.1: two pipelined requests and a HEAD, answered in order on one connection.
    let mut conn = server.connect();
    conn.send(
        b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n\
          HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let first = conn.read_response(false);
    assert_eq!(first.status, 404);
    assert!(!first.has_header("Connection"), "{first:?}");
    let second = conn.read_response(false);
    assert_eq!(second.status, 200);
    assert!(String::from_utf8_lossy(&second.body).contains("new WebSocket("));
    let head = conn.read_response(true);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("Content-Length"), second.body.len().to_string());
    // `Connection: close` is honoured: the answer, then EOF.
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let last = conn.read_response(false);
    assert_eq!(last.status, 200);
    assert!(last.has_token("Connection", "close"), "{last:?}");
    conn.expect_eof();

    // HTTP/1.0 closes after one response, unless it asks for keep-alive.
    let mut conn = server.connect();
    conn.send(b"GET / HTTP/1.0\r\n\r\n");
    let response = conn.read_response(false);
    assert_eq!(response.status, 200);
    conn.expect_eof();
    let mut conn = server.connect();
    conn.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    let response = conn.read_response(false);
    assert!(
        response.has_token("Connection", "keep-alive"),
        "{response:?}"
    );
    conn.send(b"GET /nope HTTP/1.0\r\n\r\n");
    assert_eq!(conn.read_response(false).status, 404);
    conn.expect_eof();

    server.stop();
}

#[test]
fn a_malformed_request_gets_400_and_the_connection_closes() {
    let server = Server::start(&[]);
    let cases: [(&str, &[u8]); 4] = [
        ("not HTTP", b"HELLO THERE\r\n\r\n"),
        (
            "a field without a colon",
            b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
        ),
        ("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\n\r\n"),
        (
            "a bad Content-Length",
            b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n",
        ),
    ];
    for (case, request) in cases {
        let mut conn = server.connect();
        conn.send(request);
        let response = conn.read_response(false);
        assert_eq!(response.status, 400, "{case}: {response:?}");
        assert!(response.has_token("Connection", "close"), "{case}");
        conn.expect_eof();
    }

    // A head over 16 KiB.
    let mut conn = server.connect();
    let long = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    conn.send(long.as_bytes());
    assert_eq!(conn.read_response(false).status, 431);
    conn.expect_eof();

    server.stop();
}

#[test]
fn ws_without_a_proper_upgrade_gets_426() {
    let server = Server::start(&[]);
    let assert_426 = |request: &str| {
        let mut conn = server.connect();
        conn.send(request.as_bytes());
        let response = conn.read_response(false);
        assert_eq!(response.status, 426, "{request}: {response:?}");
        assert_eq!(response.header("Sec-WebSocket-Version"), "13");
        assert!(response.has_token("Upgrade", "websocket"), "{response:?}");
        assert!(response.has_token("Connection", "Upgrade"), "{response:?}");
        conn
    };

    // A plain GET: the connection stays HTTP and open.
    let mut conn = assert_426("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n");
    conn.send(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n");
    assert_eq!(
        conn.read_response(false).status,
        426,
        "no Connection: Upgrade"
    );
    // A version the server does not speak.
    let request = upgrade_request("/ws", RFC_KEY).replace("Version: 13", "Version: 8");
    let mut conn = assert_426(&request);
    // A proper upgrade on the same connection still works.
    conn.send(upgrade_request("/ws", RFC_KEY).as_bytes());
    conn.expect_switch();
    conn.send(&masked(true, TEXT, b"upgraded at last"));
    assert_eq!(conn.read_message(), (TEXT, b"upgraded at last".to_vec()));

    // A key that is not 16 bytes of base64 is a bad request.
    let mut conn = server.connect();
    conn.send(upgrade_request("/ws", "c2hvcnQ=").as_bytes());
    assert_eq!(conn.read_response(false).status, 400);
    // So is an upgrade elsewhere than /ws: not found.
    let mut conn = server.connect();
    conn.send(upgrade_request("/chat", RFC_KEY).as_bytes());
    assert_eq!(conn.read_response(false).status, 404);

    server.stop();
}

#[test]
fn peer_bytes_never_crash_the_server() {
    let server = Server::start(&["--max-message", "4096"]);
    // Arbitrary bytes as HTTP, and as frames after an upgrade, in odd-sized writes.
    for seed in 0..20 {
        let junk = pseudo_random(3000, seed);
        let mut conn = server.connect();
        for chunk in junk.chunks(1 + seed as usize * 37) {
            if conn.reader.get_mut().write_all(chunk).is_err() {
                break;
            }
        }
        drop(conn);
        let mut conn = server.raw_websocket();
        for chunk in junk.chunks(1 + seed as usize * 37) {
            if conn.reader.get_mut().write_all(chunk).is_err() {
                break;
            }
        }
        // Whatever the server made of it, it answers or closes (at the latest at our EOF), and
        // stays up.
        let _ = conn.reader.get_ref().shutdown(Shutdown::Write);
        let mut sink = Vec::new();
        let _ = conn.reader.read_to_end(&mut sink);
    }
    // Still serving.
    let mut conn = server.connect();
    conn.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(conn.read_response(false).status, 200);
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// Bounds: memory under a client that never reads, time under clients that say nothing.
// ---------------------------------------------------------------------------------------------

/// How long the pipelining client of the memory test sends.
const FLOOD: Duration = Duration::from_secs(3);

/// The most resident memory the server may have while a client pipelines `GET /` and never
/// reads a response: 64 MiB. (Before switchboard bounded writes by default, it passed 1.7 GiB in
/// 3 s in a release build.)
const RSS_BOUND_KIB: u64 = 64 * 1024;

/// The most its memory may grow over its idle size meanwhile: 16 MiB. The transport holds one
/// read and the responses to it: at most its maximum write buffer, 4 MiB, past which it aborts
/// the connection.
const GROWTH_BOUND_KIB: u64 = 16 * 1024;

/// One client pipelines `GET /` (a 27-byte request for a page of over 1 KiB) as fast as the
/// server takes them and never reads, for [`FLOOD`]; meanwhile another gets the page and a
/// WebSocket echo every 50 ms. Without a bound on what the server writes, the pages pile up in
/// memory as fast as it parses requests; with switchboard's default, the transport stops reading
/// while its write buffer is over the high-water mark. The server's memory stays within
/// [`GROWTH_BOUND_KIB`] of its idle size and under [`RSS_BOUND_KIB`], and the other client is
/// served all along.
#[test]
fn a_client_that_pipelines_and_never_reads_costs_bounded_memory() {
    let server = Server::start(&[]);
    let sampler = bounds::RssSampler::start(server.process.pid(), 4 * RSS_BOUND_KIB);
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let normal = {
        let (addr, flooding) = (server.addr, flooding.clone());
        let mut socket = server.websocket();
        std::thread::spawn(move || {
            let (mut rounds, mut worst) = (0, Duration::ZERO);
            while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                let began = Instant::now();
                let stream = TcpStream::connect(addr).expect("connect");
                stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
                let mut conn = Conn {
                    reader: BufReader::new(stream),
                };
                conn.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                assert_eq!(conn.read_response(false).status, 200);
                let text = format!("round {rounds}");
                socket.send(Message::text(text.clone())).unwrap();
                assert_eq!(read(&mut socket), Message::text(text));
                worst = worst.max(began.elapsed());
                rounds += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            (rounds, worst)
        })
    };
    let flood = bounds::pipeline_without_reading(
        server.addr,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        FLOOD,
        sampler.over_ceiling(),
    );
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let (rounds, worst) = normal.join().expect("the other client");
    let baseline = sampler.baseline_kib();
    let peak = sampler.finish();
    println!(
        "websocket_echo: {:.1} MiB idle, {:.1} MiB at peak, while a client pipelined {:.1} MB of \
         GETs over {} connection(s) in {FLOOD:?} without reading; meanwhile {rounds} rounds of \
         page and echo, the slowest {worst:?}",
        bounds::mib(baseline),
        bounds::mib(peak),
        flood.sent as f64 / 1e6,
        flood.connections
    );
    assert!(
        peak < RSS_BOUND_KIB && peak - baseline < GROWTH_BOUND_KIB,
        "websocket_echo's resident memory went from {:.1} MiB to {:.1} MiB",
        bounds::mib(baseline),
        bounds::mib(peak)
    );
    assert!(flood.sent > 64 * 1024, "only {} bytes sent", flood.sent);
    assert!(rounds >= 5, "only {rounds} rounds served");
    assert!(worst < Duration::from_secs(2), "a round took {worst:?}");
    server.stop();
}

/// With `--header-timeout 1 --keep-alive 2`: a connection that sends nothing is closed after
/// about a second, without a word; a request head sent a byte every 250 ms (slowloris), the
/// first on its connection or one after a response, is answered `408` and closed about a second
/// after it began; a keep-alive connection idle after a response is closed about two seconds
/// after it. Each between 0.9 times its timeout and 3 s. The server goes on serving.
#[test]
fn silent_slow_and_idle_http_clients_are_closed_by_their_timeouts() {
    let server = Server::start(&["--header-timeout", "1", "--keep-alive", "2"]);
    let addr = server.addr;
    let within = |elapsed: Duration, timeout: f64, what: &str| {
        let secs = elapsed.as_secs_f64();
        assert!(
            (timeout * 0.9..timeout + 1.5).contains(&secs),
            "{what} closed after {secs:.3} s"
        );
    };
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let timed_out = "HTTP/1.1 408 Request Timeout\r\n";

    let silent: Vec<_> = (0..10)
        .map(|_| std::thread::spawn(move || bounds::silent(addr, READ_TIMEOUT)))
        .collect();
    let slow: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || bounds::slowloris(addr, request, Duration::from_millis(250)))
        })
        .collect();
    // A request answered, then the next head a byte at a time; its time counts from its first
    // byte.
    let slow_later = std::thread::spawn(move || {
        let mut conn = Server::conn_to(addr);
        conn.send(request);
        assert_eq!(conn.read_response(false).status, 200);
        let began = Instant::now();
        let mut received = Vec::new();
        for &byte in request.iter() {
            if conn.reader.get_mut().write_all(&[byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
            conn.reader
                .get_ref()
                .set_read_timeout(Some(Duration::from_millis(1)))
                .unwrap();
            match conn.reader.read_to_end(&mut received) {
                Ok(_) => return (received, began.elapsed()),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(err) => panic!("{err}"),
            }
        }
        panic!(
            "the head was sent whole; received {:?}",
            String::from_utf8_lossy(&received)
        );
    });
    let idle = std::thread::spawn(move || {
        let mut conn = Server::conn_to(addr);
        conn.send(request);
        assert_eq!(conn.read_response(false).status, 200);
        let answered = Instant::now();
        conn.expect_eof();
        answered.elapsed()
    });

    for client in silent {
        let (received, ended) = client.join().unwrap();
        assert!(received.is_empty(), "{received:?}");
        within(
            ended.expect("a silent client is closed"),
            1.0,
            "a silent client",
        );
    }
    for client in slow {
        let (received, ended) = client.join().unwrap();
        let received = String::from_utf8_lossy(&received);
        assert!(received.starts_with(timed_out), "{received:?}");
        within(ended.expect("a slowloris is closed"), 1.0, "a slowloris");
    }
    let (received, ended) = slow_later.join().unwrap();
    let received = String::from_utf8_lossy(&received);
    assert!(received.starts_with(timed_out), "{received:?}");
    within(ended, 1.0, "a slowloris after a response");
    within(idle.join().unwrap(), 2.0, "an idle keep-alive connection");

    let mut conn = server.connect();
    conn.send(request);
    assert_eq!(conn.read_response(false).status, 200);
    server.stop();
}

/// With `--keep-alive 0.5`: an idle WebSocket is pinged after half a second; a pong keeps it,
/// and the next ping left unanswered closes it with 1001 half a second later. tungstenite's
/// client, which answers pings by itself, stays connected through many such periods.
#[test]
fn an_idle_websocket_is_pinged_and_closed_if_it_does_not_answer() {
    let server = Server::start(&["--keep-alive", "0.5"]);
    let keep_alive = Duration::from_millis(500);
    let within = |elapsed: Duration, what: &str| {
        assert!(
            elapsed >= keep_alive * 9 / 10 && elapsed < keep_alive * 4,
            "{what} after {elapsed:?}"
        );
    };

    // tungstenite's client reads all along, so it answers every ping as it reads it.
    let mut tungstenite = server.websocket();
    let reading = std::thread::spawn(move || {
        tungstenite
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut pings = 0;
        let deadline = Instant::now() + keep_alive * 6;
        while Instant::now() < deadline {
            match tungstenite.read() {
                Ok(Message::Ping(_)) => pings += 1,
                Ok(other) => panic!("unexpected {other:?}"),
                Err(tungstenite::Error::Io(err))
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(err) => panic!("tungstenite's WebSocket ended: {err}"),
            }
        }
        tungstenite
            .get_ref()
            .set_read_timeout(Some(READ_TIMEOUT))
            .unwrap();
        tungstenite.send(Message::text("still here")).unwrap();
        // A ping the server sent before our text arrived may come first; tungstenite answers
        // it as it reads it.
        let echo = loop {
            match read(&mut tungstenite) {
                Message::Ping(_) => pings += 1,
                other => break other,
            }
        };
        assert_eq!(echo, Message::text("still here"));
        pings
    });

    let mut conn = server.raw_websocket();
    let idle_since = Instant::now();
    assert_eq!(conn.read_message(), (PING, Vec::new()));
    within(idle_since.elapsed(), "the first ping");
    conn.send(&masked(true, PONG, b""));
    let answered = Instant::now();
    assert_eq!(conn.read_message(), (PING, Vec::new()));
    within(answered.elapsed(), "the second ping");
    let pinged = Instant::now();
    conn.expect_close(1001);
    within(pinged.elapsed(), "the close");

    let pings = reading.join().expect("tungstenite's client");
    assert!(pings >= 3, "{pings} pings in {:?}", keep_alive * 6);
    server.stop();
}

/// Checks the helpers of this file against RFC 6455's own examples, so the raw tests above
/// speak real WebSocket.
#[test]
fn frame_helpers_match_the_rfc() {
    // RFC 6455, 5.7: a masked "Hello".
    assert_eq!(
        frame(true, TEXT, b"Hello", Some([0x37, 0xfa, 0x21, 0x3d])),
        [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
        ]
    );
    // An unmasked 256-byte binary message: a 16-bit length.
    assert_eq!(
        frame(true, BINARY, &[0; 256], None)[..4],
        [0x82, 0x7E, 0x01, 0x00]
    );
}

/// The committed seeds and regressions of the `http_request` and `websocket_*` fuzz targets pass
/// the checks the targets run, here on the stable toolchain without a fuzzer.
#[test]
fn the_fuzz_corpus_passes_the_fuzz_checks() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    fuzz_checks::input::replay(&corpus.join("http_request"), fuzz_checks::http_request);
    fuzz_checks::input::replay(
        &corpus.join("websocket_frames"),
        fuzz_checks::websocket_frames,
    );
    fuzz_checks::input::replay(
        &corpus.join("websocket_messages"),
        fuzz_checks::websocket_messages,
    );
}
