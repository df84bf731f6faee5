//! The checks of the `http_request` and `websocket_*` fuzz targets, over the parsers of
//! `examples/websocket_echo/`: request heads, the routing and upgrade checks, the frame codec
//! and the message rules. `tests/example_websocket_echo.rs` replays the committed corpus
//! through them.

// The example's own modules, whole: the checks use their parsers, not every item.
#[allow(dead_code)]
#[path = "../../examples/websocket_echo/frame.rs"]
mod frame;
#[allow(dead_code)]
#[path = "../../examples/websocket_echo/http.rs"]
mod http;

#[path = "input.rs"]
pub(crate) mod input;

use std::io::Cursor;

use bytes::{Bytes, BytesMut};
use switchboard::Framing;
use tokio_util::codec::{Decoder, Encoder};
use tungstenite::protocol::frame::{
    Frame as TungsteniteFrame, FrameHeader,
    coding::{CloseCode, Control, Data, OpCode},
};

use frame::{Echo, Frame, MAX_CONTROL_PAYLOAD};
use http::{HttpCodec, HttpError, Request, Route, route};
use input::{Chunks, Input};

/// A request head, comparable.
type Head = (String, String, u8, Vec<(String, Bytes)>);

fn head(request: &Request) -> Head {
    (
        request.method.clone(),
        request.target.clone(),
        request.minor_version,
        request.headers.clone(),
    )
}

/// How a run of requests ended: after the last complete one, or with an error.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Pending,
    Malformed,
    HeadTooLarge,
}

/// The request heads in `chunks`, fed one after the other, the way `Http` reads them: until the
/// first error, which closes the connection.
fn requests(chunks: impl IntoIterator<Item = impl AsRef<[u8]>>) -> (Vec<Request>, End) {
    let mut framing = Framing::new(HttpCodec);
    let mut requests = Vec::new();
    for chunk in chunks {
        framing.feed(chunk.as_ref());
        loop {
            match framing.next_frame() {
                Ok(Some(request)) => requests.push(request),
                Ok(None) => break,
                Err(HttpError::Malformed(_)) => return (requests, End::Malformed),
                Err(HttpError::HeadTooLarge) => return (requests, End::HeadTooLarge),
                Err(HttpError::Io(err)) => panic!("the framing's limit: {err}"),
            }
        }
    }
    (requests, End::Pending)
}

/// `http_request`: request heads cut anywhere. The same requests and the same end as whole; each
/// request written back parses to itself; the routing never panics, answers with a response
/// `httparse` reads back as written, and upgrades only a request RFC 6455 §4.2.1 accepts, with
/// the accept key tungstenite computes.
pub(crate) fn http_request(fuzz: &[u8]) {
    let mut input = Input::new(fuzz);
    // Requests as long as the limit, from short inputs: a header field of `pad` × 70 bytes after
    // the first line.
    let pad = usize::from(input.byte());
    let cuts = input.cuts();
    let mut data = input.rest().to_vec();
    if pad > 0
        && let Some(newline) = data.iter().position(|&byte| byte == b'\n')
    {
        let field = format!("x-pad: {}\r\n", "a".repeat(pad * 70));
        data.splice(newline + 1..newline + 1, field.into_bytes());
    }
    let chunks = Chunks::new(&data, &cuts);

    let (cut, cut_end) = requests(chunks.iter());
    let (whole, whole_end) = requests([&data]);
    let cut_heads: Vec<Head> = cut.iter().map(head).collect();
    let whole_heads: Vec<Head> = whole.iter().map(head).collect();
    assert_eq!(cut_heads, whole_heads, "cut against whole");
    assert_eq!(cut_end, whole_end, "how cut and whole input end");

    for request in &whole {
        let written = write_request(request);
        let (again, end) = requests([&written]);
        assert_eq!(end, End::Pending, "{written:?}");
        assert_eq!(
            again.iter().map(head).collect::<Vec<_>>(),
            [head(request)],
            "{written:?} parsed back"
        );
        check_route(request);
    }
}

/// A request head as a client writes it.
fn write_request(request: &Request) -> Vec<u8> {
    let mut written = format!(
        "{} {} HTTP/1.{}\r\n",
        request.method, request.target, request.minor_version
    )
    .into_bytes();
    for (name, value) in &request.headers {
        written.extend_from_slice(format!("{name}: ").as_bytes());
        written.extend_from_slice(value);
        written.extend_from_slice(b"\r\n");
    }
    written.extend_from_slice(b"\r\n");
    written
}

fn check_route(request: &Request) {
    let _ = request.wants_close();
    match route(request) {
        Route::Upgrade { accept } => {
            assert_eq!(request.method, "GET");
            assert_eq!(request.path(), "/ws");
            assert!(request.minor_version >= 1);
            assert!(request.has_token("upgrade", "websocket"));
            assert!(request.has_token("connection", "upgrade"));
            assert_eq!(request.value("sec-websocket-version"), Some(&b"13"[..]));
            assert!(matches!(request.has_body(), Ok(false)));
            let key = request.value("sec-websocket-key").expect("a key");
            assert_eq!(accept, tungstenite::handshake::derive_accept_key(key));
        }
        Route::Answer(response) => {
            let status = response.status;
            let body = response.body.len();
            let mut written = BytesMut::new();
            HttpCodec
                .encode(response, &mut written)
                .expect("a response encodes");
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut parsed = httparse::Response::new(&mut headers);
            let len = match parsed.parse(&written) {
                Ok(httparse::Status::Complete(len)) => len,
                other => panic!("{other:?} for {written:?}"),
            };
            assert_eq!(parsed.code, Some(status));
            let length = parsed
                .headers
                .iter()
                .find(|header| header.name.eq_ignore_ascii_case("content-length"))
                .map(|header| header.value);
            assert_eq!(length, Some(body.to_string().as_bytes()));
            assert_eq!(written.len(), len + body, "{written:?}");
        }
    }
}

/// The frames `echo` answers to `chunks`, fed one after the other.
fn echo(
    max_message: usize,
    chunks: impl IntoIterator<Item = impl AsRef<[u8]>>,
) -> (Vec<Frame>, bool) {
    let mut echo = Echo::new(max_message);
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend(echo.receive(chunk.as_ref()));
    }
    (out, echo.is_closing())
}

/// `websocket_frames`: any bytes after the switch, cut anywhere. The same answer as whole; each
/// frame the server sends is one a client reads back as sent (unmasked, whole messages, text in
/// UTF-8, control frames short, a close frame last with a code a client accepts).
pub(crate) fn websocket_frames(fuzz: &[u8]) {
    let mut input = Input::new(fuzz);
    let max_message = usize::from(input.byte()) * 8;
    let chunks = input.chunks();
    let (cut, cut_closing) = echo(max_message, chunks.iter());
    let (whole, whole_closing) = echo(max_message, [chunks.data]);
    assert_eq!(cut, whole, "cut against whole");
    assert_eq!(cut_closing, whole_closing, "closing, cut against whole");
    check_replies(&whole, whole_closing, max_message);
}

fn check_replies(replies: &[Frame], closing: bool, max_message: usize) {
    for (i, reply) in replies.iter().enumerate() {
        // What a client reads: the header tungstenite parses, then the payload as sent.
        let wire = Echo::new(max_message).encode(vec![reply.clone()]);
        let mut cursor = Cursor::new(&wire[..]);
        let (header, len) = FrameHeader::parse(&mut cursor)
            .expect("a valid header")
            .expect("a whole header");
        let payload = &wire[cursor.position() as usize..];
        assert_eq!(len, payload.len() as u64, "{wire:?}");
        assert_eq!(payload, &reply.payload[..]);
        assert!(header.is_final && header.mask.is_none(), "{header:?}");
        assert!(!header.rsv1 && !header.rsv2 && !header.rsv3, "{header:?}");
        assert_eq!(header.opcode, reply.opcode);
        match reply.opcode {
            OpCode::Data(Data::Text) => {
                assert!(std::str::from_utf8(payload).is_ok(), "text not UTF-8")
            }
            OpCode::Data(Data::Binary) => assert!(payload.len() <= max_message),
            OpCode::Control(Control::Pong) => {
                assert!(payload.len() as u64 <= MAX_CONTROL_PAYLOAD)
            }
            OpCode::Control(Control::Close) => {
                assert_eq!(i, replies.len() - 1, "a frame after the close frame");
                assert!(payload.len() as u64 <= MAX_CONTROL_PAYLOAD);
                if let [high, low, reason @ ..] = payload {
                    let code = CloseCode::from(u16::from_be_bytes([*high, *low]));
                    assert!(code.is_allowed(), "close code {code}");
                    assert!(std::str::from_utf8(reason).is_ok(), "reason not UTF-8");
                } else {
                    assert!(payload.is_empty(), "a close payload of one byte");
                }
            }
            other => panic!("the server sent {other:?}"),
        }
    }
    let closed = replies
        .last()
        .is_some_and(|reply| reply.opcode == OpCode::Control(Control::Close));
    assert_eq!(closed, closing, "a close frame last, exactly when closing");
}

/// A frame a client sends, before masking.
#[derive(Debug)]
struct Sent {
    fin: bool,
    opcode: OpCode,
    /// The payload sent.
    payload: Vec<u8>,
    /// The payload bytes its header announces past those: the last frame, cut short by the end
    /// of the input.
    missing: usize,
    /// Where its payload starts on the wire.
    at: usize,
}

/// What the server answers, as the model says it: the opcode and payload of an echo or a pong,
/// or the code of a close frame.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Frame(OpCode, Vec<u8>),
    Close(Option<u16>),
}

impl From<&Frame> for Answer {
    fn from(frame: &Frame) -> Self {
        match (frame.opcode, &frame.payload[..]) {
            (OpCode::Control(Control::Close), [high, low, ..]) => {
                Answer::Close(Some(u16::from_be_bytes([*high, *low])))
            }
            (OpCode::Control(Control::Close), _) => Answer::Close(None),
            (opcode, payload) => Answer::Frame(opcode, payload.to_vec()),
        }
    }
}

/// RFC 6455 as the example's docs promise it, written here from the RFC: messages echoed whole
/// (fragments reassembled), pings answered, a close echoed with its code; a connection failed
/// with 1002 for a control frame fragmented or over 125 bytes, a continuation without a message,
/// a new message inside a fragmented one, or a close frame of one byte or an invalid code; 1007
/// for text or a close reason not UTF-8, as soon as the bytes of a text message so far can no
/// longer become UTF-8 (not only at its last fragment, nor only at the end of a frame: in a frame
/// cut short too); 1009 for a message over `max_message`, at the header that announces it. Which
/// close codes are valid is tungstenite's `is_allowed`.
fn model(sent: &[Sent], max_message: usize) -> Vec<Answer> {
    let mut out = Vec::new();
    let mut partial: Option<(OpCode, Vec<u8>)> = None;
    // Whether a message's payload so far is fine: not text, or UTF-8 (cut short in the middle
    // of a character, if the message goes on).
    let utf8 = |opcode, payload: &[u8], end: bool| {
        opcode != OpCode::Data(Data::Text)
            || match std::str::from_utf8(payload) {
                Ok(_) => true,
                Err(err) => !end && err.error_len().is_none(),
            }
    };
    for frame in sent {
        let fail = |mut out: Vec<Answer>, code| {
            out.push(Answer::Close(Some(code)));
            out
        };
        let assembled = partial.as_ref().map_or(0, |(_, payload)| payload.len());
        let announced = frame.payload.len() + frame.missing;
        match frame.opcode {
            OpCode::Control(_) if announced > 125 || !frame.fin => {
                return fail(out, 1002);
            }
            OpCode::Data(_) if announced > max_message - assembled => {
                return fail(out, 1009);
            }
            _ => {}
        }
        if frame.missing > 0 {
            // The input ends inside this frame. It is answered only if it carries text whose
            // bytes so far cannot become UTF-8 (a text frame that begins a message, or a
            // continuation of a text message); anything else waits for the rest.
            let text = match (frame.opcode, &partial) {
                (OpCode::Data(Data::Text), None) => Some(frame.payload.clone()),
                (OpCode::Data(Data::Continue), Some((OpCode::Data(Data::Text), so_far))) => {
                    Some([so_far, &frame.payload[..]].concat())
                }
                _ => None,
            };
            if text.is_some_and(|text| !utf8(OpCode::Data(Data::Text), &text, false)) {
                return fail(out, 1007);
            }
            return out;
        }
        match frame.opcode {
            OpCode::Data(Data::Continue) => {
                let Some((_, payload)) = &mut partial else {
                    return fail(out, 1002);
                };
                payload.extend_from_slice(&frame.payload);
                let (opcode, payload) = partial.as_ref().expect("a message");
                if !utf8(*opcode, payload, frame.fin) {
                    return fail(out, 1007);
                }
                if frame.fin {
                    let (opcode, payload) = partial.take().expect("a message");
                    out.push(Answer::Frame(opcode, payload));
                }
            }
            OpCode::Data(_) if partial.is_some() => return fail(out, 1002),
            opcode @ OpCode::Data(_) => {
                if !utf8(opcode, &frame.payload, frame.fin) {
                    return fail(out, 1007);
                }
                if frame.fin {
                    out.push(Answer::Frame(opcode, frame.payload.clone()));
                } else {
                    partial = Some((opcode, frame.payload.clone()));
                }
            }
            OpCode::Control(Control::Ping) => out.push(Answer::Frame(
                OpCode::Control(Control::Pong),
                frame.payload.clone(),
            )),
            OpCode::Control(Control::Close) => {
                match &frame.payload[..] {
                    [] => out.push(Answer::Close(None)),
                    [_] => return fail(out, 1002),
                    [high, low, reason @ ..] => {
                        let code = u16::from_be_bytes([*high, *low]);
                        if !CloseCode::from(code).is_allowed() {
                            return fail(out, 1002);
                        }
                        if std::str::from_utf8(reason).is_err() {
                            return fail(out, 1007);
                        }
                        out.push(Answer::Close(Some(code)));
                    }
                }
                return out;
            }
            _ => {}
        }
    }
    out
}

/// `websocket_messages`: frames as a client writes them (masked, with tungstenite's encoder)
/// from the fuzz input, cut anywhere: the server answers what [`model`] says, and the codec alone
/// decodes the frames encoded.
pub(crate) fn websocket_messages(fuzz: &[u8]) {
    let mut input = Input::new(fuzz);
    let max_message = usize::from(input.byte()) * 4;
    let cuts = input.cuts();
    const OPCODES: [OpCode; 6] = [
        OpCode::Data(Data::Continue),
        OpCode::Data(Data::Text),
        OpCode::Data(Data::Binary),
        OpCode::Control(Control::Close),
        OpCode::Control(Control::Ping),
        OpCode::Control(Control::Pong),
    ];
    // Each frame: a byte of flags, a byte for the length, 4 bytes of mask, the payload. The
    // flags: 0x01 fin, bits 1 to 5 the opcode (modulo 6), 0x40 cut short by the end of the input
    // (else shortened to fit), 0x80 mostly UTF-8.
    let mut sent = Vec::new();
    let mut wire = Vec::new();
    let mut rest = input.rest();
    while let [flags, len, rest_of @ ..] = rest {
        let opcode = OPCODES[usize::from((flags >> 1) & 0x1f) % OPCODES.len()];
        let fin = flags & 1 != 0;
        let (mask, rest_of) = rest_of
            .split_first_chunk::<4>()
            .unwrap_or((&[1, 2, 3, 4], rest_of));
        let len = usize::from(*len);
        let (payload, rest_of) = rest_of.split_at(len.min(rest_of.len()));
        let missing = if flags & 0x40 != 0 {
            len - payload.len()
        } else {
            0
        };
        let mut payload = payload.to_vec();
        if flags & 0x80 != 0 {
            // Mostly valid UTF-8, for messages that are echoed rather than refused.
            payload = String::from_utf8_lossy(&payload).into_owned().into_bytes();
        }
        let header = FrameHeader {
            is_final: fin,
            opcode,
            mask: Some(*mask),
            ..FrameHeader::default()
        };
        let mut announced = payload.clone();
        announced.resize(payload.len() + missing, 0);
        TungsteniteFrame::from_payload(header, announced.into())
            .format(&mut wire)
            .expect("into memory");
        wire.truncate(wire.len() - missing);
        sent.push(Sent {
            fin,
            opcode,
            at: wire.len() - payload.len(),
            payload,
            missing,
        });
        rest = rest_of;
    }

    let chunks = Chunks::new(&wire, &cuts);
    let (replies, closing) = echo(max_message, chunks.iter());
    let answers: Vec<Answer> = replies.iter().map(Answer::from).collect();
    assert_eq!(answers, model(&sent, max_message), "{sent:?}");
    check_replies(&replies, closing, max_message);

    // The codec alone, the message rules aside: a frame from tungstenite's encoder decodes to
    // the frame encoded, cut anywhere, up to the first control frame it refuses. A data frame of
    // the opcode `in_parts` names comes out in parts, cut where the chunks end inside its
    // payload; the others come out whole.
    let ends: Vec<usize> = chunks
        .iter()
        .scan(0, |end, chunk| {
            *end += chunk.len();
            Some(*end)
        })
        .collect();
    for in_parts in [None, Some(Data::Text), Some(Data::Continue)] {
        let mut codec = frame::FrameCodec::new(u64::MAX, in_parts);
        let mut buffer = BytesMut::new();
        let mut decoded = Vec::new();
        for chunk in chunks.iter() {
            buffer.extend_from_slice(chunk);
            while let Some(frame) = codec.decode(&mut buffer).ok().flatten() {
                decoded.push((frame.fin, frame.opcode, frame.payload.to_vec()));
            }
        }
        let mut expected = Vec::new();
        let valid = sent.iter().take_while(|frame| match frame.opcode {
            OpCode::Control(_) => frame.fin && frame.payload.len() + frame.missing <= 125,
            OpCode::Data(_) => true,
        });
        for frame in valid {
            let len = frame.payload.len();
            // Where its parts end: where chunks end inside the payload, then at the payload's end
            // if it is all sent.
            let mut part_ends: Vec<usize> = match frame.opcode {
                OpCode::Data(data) if in_parts == Some(data) => ends
                    .iter()
                    .filter(|&&end| frame.at < end && end < frame.at + len + frame.missing)
                    .map(|end| end - frame.at)
                    .collect(),
                _ => Vec::new(),
            };
            part_ends.dedup();
            if frame.missing == 0 {
                part_ends.push(len);
            }
            let mut start = 0;
            for (i, end) in part_ends.into_iter().enumerate() {
                let opcode = if i == 0 {
                    frame.opcode
                } else {
                    OpCode::Data(Data::Continue)
                };
                let fin = frame.fin && frame.missing == 0 && end == len;
                expected.push((fin, opcode, frame.payload[start..end].to_vec()));
                start = end;
            }
        }
        assert_eq!(decoded, expected, "frames decoded, {in_parts:?} in parts");
    }
}
