//! HTTP/1.1 as the echo server speaks it: request heads in (a thin [`Decoder`] over `httparse`,
//! with size limits), responses out, and the routing of a request, upgrade checks included. No
//! I/O here, so the fuzz targets under `fuzz/` drive the same code.

use std::{fmt, io, str};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use sha1::{Digest, Sha1};
use tokio_util::codec::{Decoder, Encoder};

/// The most bytes a request head (request line and header fields) may take.
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// The most header fields a request may have.
pub(crate) const MAX_HEADERS: usize = 64;

/// A request head, owned.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) method: String,
    /// The request target, as sent (`/ws?x=1`).
    pub(crate) target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub(crate) minor_version: u8,
    /// The header fields in order, names in lower case.
    pub(crate) headers: Vec<(String, Bytes)>,
}

impl Request {
    /// The path of the target, without its query.
    pub(crate) fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    /// Every value of the field `name` (lower case), trimmed.
    pub(crate) fn values<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a [u8]> + use<'a, 'n> {
        self.headers
            .iter()
            .filter(move |(field, _)| field == name)
            .map(|(_, value)| value.trim_ascii())
    }

    /// The one value of the field `name`; `None` if it is missing or repeated.
    pub(crate) fn value(&self, name: &str) -> Option<&[u8]> {
        let mut values = self.values(name);
        let value = values.next()?;
        values.next().is_none().then_some(value)
    }

    /// Whether the comma-separated field `name` lists `token`, in any case, in any of its fields
    /// (`Connection: keep-alive, Upgrade`).
    pub(crate) fn has_token(&self, name: &str, token: &str) -> bool {
        self.values(name)
            .flat_map(|value| value.split(|&byte| byte == b','))
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    }

    /// Whether the connection should close after the response: HTTP/1.1 persists unless told
    /// `close`, HTTP/1.0 closes unless told `keep-alive`.
    pub(crate) fn wants_close(&self) -> bool {
        if self.minor_version >= 1 {
            self.has_token("connection", "close")
        } else {
            !self.has_token("connection", "keep-alive")
        }
    }

    /// Whether a body follows the head; `Err` for a `Content-Length` that is not one number.
    pub(crate) fn has_body(&self) -> Result<bool, HttpError> {
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
pub(crate) enum HttpError {
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
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) reason: &'static str,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: Bytes,
    /// The answer to a `HEAD`: the head of the response only, `Content-Length` included.
    pub(crate) head_only: bool,
}

impl Response {
    pub(crate) fn new(status: u16, reason: &'static str) -> Self {
        Response {
            status,
            reason,
            headers: Vec::new(),
            body: Bytes::new(),
            head_only: false,
        }
    }

    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub(crate) fn body(mut self, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self.header("Content-Type", content_type)
    }

    /// A short plain-text response, for errors.
    pub(crate) fn text(status: u16, reason: &'static str) -> Self {
        Response::new(status, reason).body("text/plain; charset=utf-8", format!("{reason}\n"))
    }
}

/// Request heads in (a thin layer over `httparse`, with size limits), responses out.
#[derive(Debug, Default)]
pub(crate) struct HttpCodec;

impl Decoder for HttpCodec {
    type Item = Request;
    type Error = HttpError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Request>, HttpError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        // A head fits in its first `MAX_HEAD` bytes or is too large: only those are parsed, so
        // the bytes after them cannot turn a head too large into a malformed one, and the
        // answer is the same however the bytes arrive.
        let len = match parsed.parse(&src[..src.len().min(MAX_HEAD)]) {
            Ok(httparse::Status::Complete(len)) => len,
            Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
            Ok(httparse::Status::Partial) if src.len() >= MAX_HEAD => {
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

/// What a request gets.
pub(crate) enum Route {
    /// A WebSocket upgrade, answered `101` with this `Sec-WebSocket-Accept`.
    Upgrade { accept: String },
    /// A response, and the connection stays HTTP.
    Answer(Response),
}

/// Routes a request: `/`, `/ws`, or an error.
pub(crate) fn route(request: &Request) -> Route {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(chunks: &[&[u8]]) -> Result<Option<Request>, HttpError> {
        let mut codec = HttpCodec;
        let mut src = BytesMut::new();
        for chunk in chunks {
            src.extend_from_slice(chunk);
            if let Some(request) = codec.decode(&mut src)? {
                return Ok(Some(request));
            }
        }
        Ok(None)
    }

    /// Found by `fuzz/fuzz_targets/http_request.rs`: a head over the limit with a byte no head
    /// may hold after the limit was `400 Bad Request` when it arrived whole, and `431` when it
    /// arrived in two reads, the first one over the limit.
    #[test]
    fn a_head_over_the_limit_is_too_large_however_it_arrives() {
        let mut head = b"GET / HTTP/1.1\r\nHost: x\r\nx-pad: ".to_vec();
        head.resize(MAX_HEAD + 100, b'a');
        head.extend_from_slice(b"\r\n/not a field\r\n\r\n");
        let (first, second) = head.split_at(MAX_HEAD + 10);
        for chunks in [&[&head[..]][..], &[first, second]] {
            assert!(
                matches!(decode(chunks), Err(HttpError::HeadTooLarge)),
                "{} chunks",
                chunks.len()
            );
        }

        // A head of exactly the limit is fine.
        let mut head = b"GET / HTTP/1.1\r\nx-pad: ".to_vec();
        head.resize(MAX_HEAD - 4, b'a');
        head.extend_from_slice(b"\r\n\r\n");
        let request = decode(&[&head]).expect("a head").expect("complete");
        assert_eq!(request.headers.len(), 1);
        assert!(matches!(decode(&[&head[..MAX_HEAD - 1]]), Ok(None)));
    }
}
