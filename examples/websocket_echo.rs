//! A WebSocket echo server (RFC 6455) behind a small HTTP/1.1 server: one connection, two
//! protocols, switched at runtime with `SetProtocol`.
//!
//! Every connection starts with the HTTP protocol ([`Http`]). `GET /` serves a page whose script
//! opens a WebSocket to `/ws`, sends what you type and shows the echoes. `GET /ws` with a valid
//! upgrade request is answered `101 Switching Protocols`, and the connection is handed to the
//! WebSocket protocol ([`WebSocket`]) together with the bytes the client sent behind its request
//! (a client may send its first frame without waiting for the `101`). The WebSocket protocol
//! echoes text and binary messages (fragmented ones reassembled), answers pings, performs the
//! closing handshake, and fails the connection with the close code RFC 6455 asks for: 1002 for
//! a protocol error (an unmasked frame, a control frame over 125 bytes or fragmented, a stray
//! continuation, a reserved opcode or bit), 1007 for a text message that is not UTF-8, 1009 for
//! a message over `--max-message`.
//!
//! ```text
//! cargo run --example websocket_echo                  # http://127.0.0.1:8080/
//! cargo run --example websocket_echo -- --addr 127.0.0.1:0 --max-message 65536
//! curl -i http://127.0.0.1:8080/
//! ```
//!
//! The HTTP side is HTTP/1.1 with persistent connections (`Connection: close` honoured; HTTP/1.0
//! closes unless it asks for `keep-alive`). Other paths get `404`, other methods than `GET` and
//! `HEAD` get `405`, a request that does not parse gets `400`, a head over 16 KiB or with over 64
//! fields gets `431`, and `/ws` without a proper upgrade gets `426 Upgrade Required`. A request
//! with a body is answered, then the connection is closed rather than the body read.
//!
//! Both protocols frame their bytes with [`Framing`] and a tokio-util codec. What is written by
//! hand here, and why:
//!
//! - the request-head decoder ([`HttpCodec`]) is a thin `Decoder` around `httparse`, which does
//!   the parsing; the decoder adds the size limits and owns the result;
//! - the WebSocket frame codec ([`FrameCodec`]) parses headers with tungstenite's
//!   `FrameHeader::parse`, which reads a byte slice through a `Cursor` and says "not enough
//!   bytes yet" without consuming any, so it fits a `Decoder` as is, and writes them with
//!   `FrameHeader::format`. What the codec adds is what tungstenite does in its own read loop,
//!   tied to its synchronous `Read + Write` stream: the payload limit checked before a payload
//!   is buffered, the masking and control-frame rules, and unmasking;
//! - messages, fragments and the closing handshake are the protocol actor's, since they are
//!   what this example is about.
//!
//! It prints exactly one line to stdout, `listening on ADDR` with the address really bound,
//! once it accepts connections; logs go to stderr (`RUST_LOG=debug`). On SIGINT or SIGTERM it
//! stops accepting, closes every connection and exits 0.

use std::{
    fmt,
    io::{self, Cursor},
    process::ExitCode,
    str,
};

use actix::prelude::*;
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use clap::Parser;
use sha1::{Digest, Sha1};
use switchboard::{Framing, Handled, ProtocolBuilder, Unhandled, prelude::*};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::codec::{Decoder, Encoder};
use tungstenite::protocol::frame::{
    FrameHeader,
    coding::{CloseCode, Control, Data, OpCode},
};

/// The default of `--max-message`: 16 MiB.
const DEFAULT_MAX_MESSAGE: usize = 16 * 1024 * 1024;

#[derive(Debug, Parser)]
#[command(about = "A WebSocket echo server behind a small HTTP/1.1 server")]
struct Args {
    /// The TCP address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// The largest WebSocket message accepted, in bytes, fragments together; a larger one closes
    /// the connection with 1009.
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE)]
    max_message: usize,
}

// ---------------------------------------------------------------------------------------------
// HTTP: request heads in, responses out.
// ---------------------------------------------------------------------------------------------

/// The most bytes a request head (request line and header fields) may take.
const MAX_HEAD: usize = 16 * 1024;

/// The most header fields a request may have.
const MAX_HEADERS: usize = 64;

/// A request head, owned.
#[derive(Debug)]
struct Request {
    method: String,
    /// The request target, as sent (`/ws?x=1`).
    target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    minor_version: u8,
    /// The header fields in order, names in lower case.
    headers: Vec<(String, Bytes)>,
}

impl Request {
    /// The path of the target, without its query.
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// Every value of the field `name` (lower case), trimmed.
    fn values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.headers
            .iter()
            .filter(move |(field, _)| field == name)
            .map(|(_, value)| value.trim_ascii())
    }

    /// The one value of the field `name`; `None` if it is missing or repeated.
    fn value(&self, name: &str) -> Option<&[u8]> {
        let mut values = self.values(name);
        let value = values.next()?;
        values.next().is_none().then_some(value)
    }

    /// Whether the comma-separated field `name` lists `token`, in any case, in any of its fields
    /// (`Connection: keep-alive, Upgrade`).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.values(name)
            .flat_map(|value| value.split(|&byte| byte == b','))
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    }

    /// Whether the connection should close after the response: HTTP/1.1 persists unless told
    /// `close`, HTTP/1.0 closes unless told `keep-alive`.
    fn wants_close(&self) -> bool {
        if self.minor_version >= 1 {
            self.has_token("connection", "close")
        } else {
            !self.has_token("connection", "keep-alive")
        }
    }

    /// Whether a body follows the head; `Err` for a `Content-Length` that is not one number.
    fn has_body(&self) -> Result<bool, HttpError> {
        if self.values("transfer-encoding").next().is_some() {
            return Ok(true);
        }
        let mut lengths = self.values("content-length").map(|value| {
            str::from_utf8(value)
                .ok()
                .filter(|text| !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()))
                .and_then(|text| text.parse::<u64>().ok())
        });
        let Some(first) = lengths.next() else {
            return Ok(false);
        };
        match first {
            Some(length) if lengths.all(|other| other == Some(length)) => Ok(length > 0),
            _ => Err(HttpError::Malformed("invalid Content-Length")),
        }
    }
}

/// Why a request head could not be decoded.
#[derive(Debug)]
enum HttpError {
    /// Not HTTP/1.x: answered `400 Bad Request`.
    Malformed(&'static str),
    /// Over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] fields: `431 Request Header Fields Too Large`.
    HeadTooLarge,
    /// The framing's own buffer limit (never reached: the codec's is lower).
    Io(io::Error),
}

impl From<io::Error> for HttpError {
    fn from(err: io::Error) -> Self {
        HttpError::Io(err)
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Malformed(why) => write!(f, "malformed request: {why}"),
            HttpError::HeadTooLarge => write!(
                f,
                "request head over {MAX_HEAD} bytes or {MAX_HEADERS} fields"
            ),
            HttpError::Io(err) => write!(f, "{err}"),
        }
    }
}

/// A response, written whole.
#[derive(Debug)]
struct Response {
    status: u16,
    reason: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    /// The answer to a `HEAD`: the head of the response only, `Content-Length` included.
    head_only: bool,
}

impl Response {
    fn new(status: u16, reason: &'static str) -> Self {
        Response {
            status,
            reason,
            headers: Vec::new(),
            body: Bytes::new(),
            head_only: false,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self.header("Content-Type", content_type)
    }

    /// A short plain-text response, for errors.
    fn text(status: u16, reason: &'static str) -> Self {
        Response::new(status, reason).body("text/plain; charset=utf-8", format!("{reason}\n"))
    }
}

/// Request heads in (a thin layer over `httparse`, with size limits), responses out.
#[derive(Debug, Default)]
struct HttpCodec;

impl Decoder for HttpCodec {
    type Item = Request;
    type Error = HttpError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Request>, HttpError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let len = match parsed.parse(src) {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
            Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
                return Err(HttpError::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) if src.len() > MAX_HEAD => {
                return Err(HttpError::HeadTooLarge);
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(err) => {
                tracing::debug!(%err, "unparsable request head");
                return Err(HttpError::Malformed("not an HTTP/1.x request head"));
            }
        };
        let (Some(method), Some(target), Some(minor_version)) =
            (parsed.method, parsed.path, parsed.version)
        else {
            return Err(HttpError::Malformed("incomplete request line"));
        };
        let request = Request {
            method: method.to_owned(),
            target: target.to_owned(),
            minor_version,
            headers: parsed
                .headers
                .iter()
                .map(|header| {
                    let value = Bytes::copy_from_slice(header.value);
                    (header.name.to_ascii_lowercase(), value)
                })
                .collect(),
        };
        src.advance(len);
        Ok(Some(request))
    }
}

impl Encoder<Response> for HttpCodec {
    type Error = HttpError;

    fn encode(&mut self, response: Response, dst: &mut BytesMut) -> Result<(), HttpError> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", response.status, response.reason);
        for (name, value) in &response.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        // A `101` has no body, and the bytes after its head belong to the new protocol.
        if response.status != 101 {
            head.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
        }
        head.push_str("\r\n");
        dst.reserve(head.len() + response.body.len());
        dst.put_slice(head.as_bytes());
        if !response.head_only {
            dst.put_slice(&response.body);
        }
        Ok(())
    }
}

/// The page at `/`: a text field, and a log of what went to the server and came back.
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>switchboard: WebSocket echo</title>
</head>
<body>
<h1>WebSocket echo</h1>
<form id="form"><input id="input" autocomplete="off" autofocus> <button>Send</button></form>
<pre id="log"></pre>
<script>
const log = (line) => { document.getElementById("log").textContent += line + "\n"; };
const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const socket = new WebSocket(`${scheme}//${location.host}/ws`);
socket.onopen = () => log("connected");
socket.onmessage = (event) => log("< " + event.data);
socket.onclose = (event) => log(`closed (${event.code})`);
document.getElementById("form").onsubmit = (event) => {
  event.preventDefault();
  const input = document.getElementById("input");
  socket.send(input.value);
  log("> " + input.value);
  input.value = "";
};
</script>
</body>
</html>
"#;

/// The GUID every `Sec-WebSocket-Accept` is computed with (RFC 6455, 1.3).
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

// ANCHOR: accept
/// The `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)).
fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(WEBSOCKET_GUID);
    BASE64.encode(sha1.finalize())
}
// ANCHOR_END: accept

/// What the HTTP protocol does after a response.
enum Next {
    /// Reads the next request on the same connection.
    KeepAlive,
    /// Closes the connection.
    Close,
    /// Hands the connection to the WebSocket protocol.
    Upgrade,
}

// ANCHOR: http_protocol
/// The protocol every connection starts with: HTTP/1.1 requests, answered in order.
struct Http {
    transport: Option<TransportHandle>,
    requests: Framing<HttpCodec>,
    max_message: usize,
    /// Set once the connection is closing or switched: nothing more is read.
    done: bool,
}

impl Http {
    fn new(max_message: usize) -> Self {
        Http {
            transport: None,
            requests: Framing::new(HttpCodec),
            max_message,
            done: false,
        }
    }

    /// Answers `request`, and says what comes next.
    fn respond(&mut self, transport: &TransportHandle, request: &Request) -> Next {
        let mut response = match route(request) {
            Route::Upgrade { accept } => {
                let response = Response::new(101, "Switching Protocols")
                    .header("Upgrade", "websocket")
                    .header("Connection", "Upgrade")
                    .header("Sec-WebSocket-Accept", accept);
                return match self.requests.write(transport, response) {
                    Ok(()) => Next::Upgrade,
                    Err(err) => {
                        tracing::warn!(%err, "cannot encode the 101");
                        Next::Close
                    }
                };
            }
            Route::Answer(response) => response,
        };
        // A body we do not read would be taken for the next request, and a client that sent a
        // bad request may be out of step: close after answering.
        let next = match request.has_body() {
            Ok(false) if !request.wants_close() && response.status != 400 => Next::KeepAlive,
            Ok(_) => Next::Close,
            Err(_) => {
                response = Response::text(400, "Bad Request");
                Next::Close
            }
        };
        let persistence = match (&next, request.minor_version) {
            (Next::Close, _) => Some("close"),
            (_, 0) => Some("keep-alive"),
            _ => None,
        };
        // A 426 already says `Connection: Upgrade`; the persistence token joins it.
        if let Some(token) = persistence {
            match response
                .headers
                .iter_mut()
                .find(|(name, _)| *name == "Connection")
            {
                Some((_, value)) => *value = format!("{value}, {token}"),
                None => response.headers.push(("Connection", token.to_owned())),
            }
        }
        response.head_only = request.method == "HEAD";
        if let Err(err) = self.requests.write(transport, response) {
            tracing::warn!(%err, "cannot encode a response");
            return Next::Close;
        }
        next
    }

    /// Closes the connection and reads nothing more.
    fn finish(&mut self, transport: &TransportHandle) {
        self.done = true;
        transport.close();
    }
}

/// What a request gets.
enum Route {
    /// A WebSocket upgrade, answered `101` with this `Sec-WebSocket-Accept`.
    Upgrade { accept: String },
    /// A response, and the connection stays HTTP.
    Answer(Response),
}

/// Routes a request: `/`, `/ws`, or an error.
fn route(request: &Request) -> Route {
    if request.minor_version >= 1 && request.values("host").next().is_none() {
        return Route::Answer(Response::text(400, "Bad Request"));
    }
    if request.method != "GET" && request.method != "HEAD" {
        let response = Response::text(405, "Method Not Allowed").header("Allow", "GET, HEAD");
        return Route::Answer(response);
    }
    match request.path() {
        "/" => Route::Answer(Response::new(200, "OK").body("text/html; charset=utf-8", PAGE)),
        "/ws" => match upgrade(request) {
            Ok(accept) => Route::Upgrade { accept },
            Err(response) => Route::Answer(response),
        },
        _ => Route::Answer(Response::text(404, "Not Found")),
    }
}

/// Checks a `GET /ws` against RFC 6455, 4.2.1: the `Sec-WebSocket-Accept` to answer with, or the
/// error response.
fn upgrade(request: &Request) -> Result<String, Response> {
    let upgrade_required = || {
        Response::text(426, "Upgrade Required")
            .header("Upgrade", "websocket")
            .header("Connection", "Upgrade")
            .header("Sec-WebSocket-Version", "13")
    };
    if request.method != "GET"
        || !request.has_token("upgrade", "websocket")
        || !request.has_token("connection", "upgrade")
    {
        return Err(upgrade_required());
    }
    if request.minor_version < 1 {
        return Err(Response::text(400, "Bad Request"));
    }
    if request.value("sec-websocket-version") != Some(b"13") {
        return Err(upgrade_required());
    }
    let Some(key) = request.value("sec-websocket-key") else {
        return Err(Response::text(400, "Bad Request"));
    };
    // The key is 16 random bytes in base64; anything else is not a WebSocket client.
    match BASE64.decode(key) {
        Ok(nonce) if nonce.len() == 16 => {}
        _ => return Err(Response::text(400, "Bad Request")),
    }
    if !matches!(request.has_body(), Ok(false)) {
        return Err(Response::text(400, "Bad Request"));
    }
    Ok(accept_key(key))
}

impl Actor for Http {
    type Context = Context<Self>;
}

impl Handler<ConnectionMade> for Http {
    type Result = ();

    fn handle(&mut self, msg: ConnectionMade, _: &mut Context<Self>) {
        self.transport = Some(msg.transport);
    }
}

impl Handler<DataReceived> for Http {
    type Result = ();

    fn handle(&mut self, msg: DataReceived, ctx: &mut Context<Self>) {
        let Some(transport) = self.transport.clone() else {
            return;
        };
        if self.done {
            return;
        }
        self.requests.feed(&msg.data);
        // Pipelined requests are answered in order, each response behind the last.
        loop {
            let request = match self.requests.next_frame() {
                Ok(Some(request)) => request,
                Ok(None) => return,
                Err(err) => {
                    tracing::debug!(%err, "bad request: closing");
                    let response = match err {
                        HttpError::HeadTooLarge => {
                            Response::text(431, "Request Header Fields Too Large")
                        }
                        HttpError::Malformed(_) | HttpError::Io(_) => {
                            Response::text(400, "Bad Request")
                        }
                    };
                    let _ = self
                        .requests
                        .write(&transport, response.header("Connection", "close"));
                    self.finish(&transport);
                    return;
                }
            };
            tracing::debug!(method = %request.method, target = %request.target, "request");
            match self.respond(&transport, &request) {
                Next::KeepAlive => {}
                Next::Close => {
                    self.finish(&transport);
                    return;
                }
                Next::Upgrade => {
                    // ANCHOR: switch
                    // The bytes behind the request head are the client's first frames: they go
                    // with the switch, and reach the WebSocket protocol before anything the
                    // transport reads later. The `101` is already in the transport's queue.
                    let leftover = self.requests.take_leftover();
                    let websocket = WebSocket::new(self.max_message).start();
                    transport.set_protocol(websocket_protocol(websocket), leftover);
                    // ANCHOR_END: switch
                    self.done = true;
                    ctx.stop();
                    return;
                }
            }
        }
    }
}

impl Handler<ConnectionLost> for Http {
    type Result = ();

    fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
// ANCHOR_END: http_protocol

// ---------------------------------------------------------------------------------------------
// WebSocket: frames in and out.
// ---------------------------------------------------------------------------------------------

/// The most payload a control frame may carry (RFC 6455, 5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// The longest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
const MAX_FRAME_HEADER: usize = 14;

/// One frame, unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    fin: bool,
    opcode: OpCode,
    payload: Bytes,
}

impl Frame {
    /// A whole message, or a control frame, in one frame.
    fn new(opcode: OpCode, payload: impl Into<Bytes>) -> Self {
        Frame {
            fin: true,
            opcode,
            payload: payload.into(),
        }
    }

    /// A close frame with `code` and `reason` (nothing for `None`).
    fn close(code: Option<CloseCode>, reason: &str) -> Self {
        let mut payload = BytesMut::new();
        if let Some(code) = code {
            payload.put_u16(code.into());
            payload.put_slice(reason.as_bytes());
        }
        Frame::new(OpCode::Control(Control::Close), payload)
    }
}

/// Why the connection is failed: the close code to send, and a short reason.
#[derive(Debug)]
struct Violation {
    code: CloseCode,
    reason: &'static str,
}

impl Violation {
    fn protocol(reason: &'static str) -> Self {
        Violation {
            code: CloseCode::Protocol,
            reason,
        }
    }
}

impl From<io::Error> for Violation {
    /// The framing's own limit, the one `io::Error` it reports: more bytes than any frame
    /// allowed could take (never reached, since the codec checks each length first).
    fn from(_: io::Error) -> Self {
        Violation {
            code: CloseCode::Size,
            reason: "message too big",
        }
    }
}

// ANCHOR: frame_codec
/// WebSocket frames: client frames in (masked, checked, unmasked), server frames out (unmasked).
#[derive(Debug)]
struct FrameCodec {
    /// The most payload the next data frame may carry: what is left of the message limit.
    data_budget: u64,
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = Violation;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Violation> {
        let mut cursor = Cursor::new(&src[..]);
        // `Ok(None)` until the whole header is there; an error for a reserved opcode.
        let Some((header, len)) =
            FrameHeader::parse(&mut cursor).map_err(|_| Violation::protocol("reserved opcode"))?
        else {
            return Ok(None);
        };
        // At most `MAX_FRAME_HEADER`.
        let header_len = cursor.position() as usize;
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(Violation::protocol("reserved bit set, no extension agreed"));
        }
        // A client masks every frame (RFC 6455, 5.1).
        let Some(mask) = header.mask else {
            return Err(Violation::protocol("unmasked client frame"));
        };
        match header.opcode {
            OpCode::Control(_) if len > MAX_CONTROL_PAYLOAD => {
                return Err(Violation::protocol("control frame over 125 bytes"));
            }
            OpCode::Control(_) if !header.is_final => {
                return Err(Violation::protocol("fragmented control frame"));
            }
            OpCode::Control(_) => {}
            OpCode::Data(_) if len > i64::MAX as u64 => {
                return Err(Violation::protocol("payload length with its top bit set"));
            }
            // Refused before a byte of it is buffered.
            OpCode::Data(_) if len > self.data_budget => {
                return Err(Violation {
                    code: CloseCode::Size,
                    reason: "message too big",
                });
            }
            OpCode::Data(_) => {}
        }
        // Within the budget, which came from a `usize`.
        let len = len as usize;
        if src.len() < header_len + len {
            src.reserve(header_len + len - src.len());
            return Ok(None);
        }
        src.advance(header_len);
        let mut payload = src.split_to(len);
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i % 4];
        }
        Ok(Some(Frame {
            fin: header.is_final,
            opcode: header.opcode,
            payload: payload.freeze(),
        }))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = Violation;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), Violation> {
        let header = FrameHeader {
            is_final: frame.fin,
            opcode: frame.opcode,
            ..FrameHeader::default()
        };
        let len = frame.payload.len() as u64;
        dst.reserve(header.len(len) + frame.payload.len());
        // Into memory: it cannot fail.
        header
            .format(len, &mut dst.writer())
            .map_err(|_| Violation {
                code: CloseCode::Error,
                reason: "cannot encode a frame header",
            })?;
        dst.put_slice(&frame.payload);
        Ok(())
    }
}
// ANCHOR_END: frame_codec

// ANCHOR: websocket_protocol
/// The protocol a connection is switched to after the `101`: echoes every message.
struct WebSocket {
    transport: Option<TransportHandle>,
    frames: Framing<FrameCodec>,
    max_message: usize,
    /// The message being reassembled: its opcode, and the payload of its fragments so far.
    partial: Option<(OpCode, BytesMut)>,
    /// Set once a close frame is sent: nothing more is read.
    closing: bool,
}

/// The WebSocket protocol's handle, opted in to the write-flow events.
fn websocket_protocol(
    websocket: Addr<WebSocket>,
) -> ProtocolBuilder<WebSocket, Unhandled, Handled> {
    ProtocolHandle::builder(websocket).write_flow()
}

impl WebSocket {
    fn new(max_message: usize) -> Self {
        let frames = Framing::new(FrameCodec {
            data_budget: max_message as u64,
        })
        // Enough for the longest frame the codec lets through; the codec is the real limit.
        .max_buffered(max_message.saturating_add(MAX_FRAME_HEADER));
        WebSocket {
            transport: None,
            frames,
            max_message,
            partial: None,
            closing: false,
        }
    }

    /// Handles one frame; what to send back goes to `out`.
    fn on_frame(&mut self, frame: Frame, out: &mut Vec<Frame>) -> Result<(), Violation> {
        match frame.opcode {
            OpCode::Data(Data::Continue) => {
                let Some((_, payload)) = &mut self.partial else {
                    return Err(Violation::protocol("continuation without a message"));
                };
                payload.extend_from_slice(&frame.payload);
                if frame.fin
                    && let Some((opcode, payload)) = self.partial.take()
                {
                    out.push(message(opcode, payload.freeze())?);
                }
            }
            OpCode::Data(Data::Text | Data::Binary) => {
                if self.partial.is_some() {
                    return Err(Violation::protocol("new message inside a fragmented one"));
                }
                if frame.fin {
                    out.push(message(frame.opcode, frame.payload)?);
                } else {
                    self.partial = Some((frame.opcode, BytesMut::from(&frame.payload[..])));
                }
            }
            OpCode::Control(Control::Ping) => {
                out.push(Frame::new(OpCode::Control(Control::Pong), frame.payload));
            }
            OpCode::Control(Control::Pong) => {}
            OpCode::Control(Control::Close) => {
                // The closing handshake: echo the code, then close the connection.
                out.push(Frame::close(close_code(&frame.payload)?, ""));
                self.closing = true;
            }
            // `FrameHeader::parse` refuses reserved opcodes.
            OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)) => {
                return Err(Violation::protocol("reserved opcode"));
            }
        }
        let assembled = self
            .partial
            .as_ref()
            .map_or(0, |(_, payload)| payload.len());
        self.frames.codec_mut().data_budget = (self.max_message - assembled) as u64;
        Ok(())
    }
}

/// The echo of a complete message, checked: a text message must be UTF-8 (RFC 6455, 8.1).
fn message(opcode: OpCode, payload: Bytes) -> Result<Frame, Violation> {
    if opcode == OpCode::Data(Data::Text) && str::from_utf8(&payload).is_err() {
        return Err(Violation {
            code: CloseCode::Invalid,
            reason: "text message not UTF-8",
        });
    }
    Ok(Frame::new(opcode, payload))
}

/// The code of a close frame's payload: none, or two bytes and a UTF-8 reason (RFC 6455, 5.5.1).
fn close_code(payload: &[u8]) -> Result<Option<CloseCode>, Violation> {
    let [high, low, reason @ ..] = payload else {
        return match payload {
            [] => Ok(None),
            _ => Err(Violation::protocol("close frame of one byte")),
        };
    };
    let code = CloseCode::from(u16::from_be_bytes([*high, *low]));
    if !code.is_allowed() {
        return Err(Violation::protocol("invalid close code"));
    }
    if str::from_utf8(reason).is_err() {
        return Err(Violation {
            code: CloseCode::Invalid,
            reason: "close reason not UTF-8",
        });
    }
    Ok(Some(code))
}

impl Actor for WebSocket {
    type Context = Context<Self>;
}

impl Handler<ConnectionMade> for WebSocket {
    type Result = ();

    /// Comes first after the switch, before the bytes the HTTP protocol handed over.
    fn handle(&mut self, msg: ConnectionMade, _: &mut Context<Self>) {
        self.transport = Some(msg.transport);
    }
}

impl Handler<DataReceived> for WebSocket {
    type Result = ();

    fn handle(&mut self, msg: DataReceived, _: &mut Context<Self>) {
        let Some(transport) = self.transport.clone() else {
            return;
        };
        if self.closing {
            return;
        }
        self.frames.feed(&msg.data);
        // Everything this chunk asks for goes out in one write.
        let mut out = Vec::new();
        while !self.closing {
            match self.frames.next_frame().and_then(|frame| match frame {
                Some(frame) => self.on_frame(frame, &mut out).map(|()| true),
                None => Ok(false),
            }) {
                Ok(true) => {}
                Ok(false) => break,
                Err(violation) => {
                    tracing::debug!(?violation, "failing the WebSocket connection");
                    out.push(Frame::close(Some(violation.code), violation.reason));
                    self.closing = true;
                }
            }
        }
        if let Err(violation) = self.frames.write_all(&transport, out) {
            tracing::warn!(?violation, "cannot encode frames");
            self.closing = true;
        }
        if self.closing {
            // Flushes the close frame first.
            transport.close();
        }
    }
}

impl Handler<ConnectionLost> for WebSocket {
    type Result = ();

    fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// A client that sends faster than it reads would fill the write buffer with echoes: stop
/// reading while the buffer is over its high-water mark.
impl Handler<PauseWriting> for WebSocket {
    type Result = ();

    fn handle(&mut self, _: PauseWriting, _: &mut Context<Self>) {
        if let Some(transport) = &self.transport {
            transport.pause_reading();
        }
    }
}

impl Handler<ResumeWriting> for WebSocket {
    type Result = ();

    fn handle(&mut self, _: ResumeWriting, _: &mut Context<Self>) {
        if let Some(transport) = &self.transport {
            transport.resume_reading();
        }
    }
}
// ANCHOR_END: websocket_protocol

#[actix::main]
async fn main() -> io::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();

    // Both signals are caught from before the `listening on` line: a client that sends one as
    // soon as it reads the line finds the handlers in place.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;

    // ANCHOR: serve
    let max_message = args.max_message;
    let server = tcp::serve(&args.addr, move || Http::new(max_message).start()).await?;
    println!("listening on {}", server.addresses()[0]);
    // ANCHOR_END: serve

    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down: no new connections, closing the live ones");
    server.close().await;
    server.close_clients().await;
    server.wait_closed().await;
    Ok(ExitCode::SUCCESS)
}
