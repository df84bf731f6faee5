//! RFC 6455 frames as the echo server reads and writes them: the frame codec (tungstenite's
//! header parser, the masking, length and control-frame rules) and the message rules
//! (reassembly, pings, the closing handshake, UTF-8), bytes in and frames out. No I/O here, so
//! the fuzz targets under `fuzz/` drive the same code.

use std::{
    io::{self, Cursor},
    str,
};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use switchboard::Framing;
use tokio_util::codec::{Decoder, Encoder};
use tungstenite::protocol::frame::{
    FrameHeader,
    coding::{CloseCode, Control, Data, OpCode},
};

/// The most payload a control frame may carry (RFC 6455, 5.5).
pub(crate) const MAX_CONTROL_PAYLOAD: u64 = 125;

/// The longest frame header: 2 bytes, an 8-byte length and a 4-byte mask.
pub(crate) const MAX_FRAME_HEADER: usize = 14;

/// One frame, unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) fin: bool,
    pub(crate) opcode: OpCode,
    pub(crate) payload: Bytes,
}

impl Frame {
    /// A whole message, or a control frame, in one frame.
    pub(crate) fn new(opcode: OpCode, payload: impl Into<Bytes>) -> Self {
        Frame {
            fin: true,
            opcode,
            payload: payload.into(),
        }
    }

    /// A close frame with `code` and `reason` (nothing for `None`).
    pub(crate) fn close(code: Option<CloseCode>, reason: &str) -> Self {
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
pub(crate) struct Violation {
    pub(crate) code: CloseCode,
    pub(crate) reason: &'static str,
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
///
/// A frame comes out whole, its payload split off the buffer without a copy, except a data frame
/// of the opcode [`in_parts`](Self::in_parts) names: that one comes out as its payload arrives,
/// each part a fragment of its own (the first with the frame's opcode, the others continuations,
/// the last with the frame's FIN bit), as an intermediary may refragment a message (RFC 6455,
/// 5.4). [`Echo`] asks it for text, to check the UTF-8 of a message as its bytes come, inside a
/// frame too.
#[derive(Debug)]
pub(crate) struct FrameCodec {
    /// The most payload the next data frame may carry: what is left of the message limit.
    pub(crate) data_budget: u64,
    /// The data frames that come out in parts, as they arrive (from the next frame on).
    pub(crate) in_parts: Option<Data>,
    /// The frame coming out in parts: its header read, the rest of its payload to come.
    parts: Option<Parts>,
}

/// A data frame coming out in parts.
#[derive(Debug)]
struct Parts {
    fin: bool,
    /// The opcode of the next part: the frame's for the first, a continuation's after it.
    opcode: OpCode,
    /// The mask, turned so that it starts at the next payload byte.
    mask: [u8; 4],
    /// The payload bytes still to come.
    left: usize,
}

impl FrameCodec {
    /// Data frames of up to `data_budget` bytes, those of the opcode `in_parts` in parts.
    pub(crate) fn new(data_budget: u64, in_parts: Option<Data>) -> Self {
        FrameCodec {
            data_budget,
            in_parts,
            parts: None,
        }
    }

    /// The payload bytes of the frame coming out in parts that `src` holds, unmasked, as its
    /// next part; `None` if there are none yet.
    fn next_part(&mut self, src: &mut BytesMut) -> Option<Frame> {
        let parts = self.parts.as_mut()?;
        let len = parts.left.min(src.len());
        if len == 0 {
            return None;
        }
        let mut payload = src.split_to(len);
        unmask(&mut payload, parts.mask);
        parts.mask.rotate_left(len % 4);
        parts.left -= len;
        let part = Frame {
            fin: parts.fin && parts.left == 0,
            opcode: parts.opcode,
            payload: payload.freeze(),
        };
        parts.opcode = OpCode::Data(Data::Continue);
        if parts.left == 0 {
            self.parts = None;
        }
        Some(part)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = Violation;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Violation> {
        if self.parts.is_some() {
            return Ok(self.next_part(src));
        }
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
            if matches!(header.opcode, OpCode::Data(data) if self.in_parts == Some(data)) {
                src.advance(header_len);
                self.parts = Some(Parts {
                    fin: header.is_final,
                    opcode: header.opcode,
                    mask,
                    left: len,
                });
                return Ok(self.next_part(src));
            }
            src.reserve(header_len + len - src.len());
            return Ok(None);
        }
        src.advance(header_len);
        let mut payload = src.split_to(len);
        unmask(&mut payload, mask);
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

/// Unmasks `payload` in place, its first byte with `mask[0]` (RFC 6455, 5.3).
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (byte, mask) in payload.iter_mut().zip(mask.iter().cycle()) {
        *byte ^= mask;
    }
}
// ANCHOR_END: frame_codec

// ANCHOR: echo
/// The WebSocket side of one connection, without its I/O: the bytes received go in, the frames
/// to send back come out. It echoes text and binary messages (fragmented ones reassembled),
/// answers pings, performs the closing handshake, and fails the connection with the close code
/// RFC 6455 asks for. A text message is checked as its bytes arrive, inside a frame too: the
/// codec hands text frames over in parts ([`FrameCodec::in_parts`]), which are reassembled as
/// fragments are.
#[derive(Debug)]
pub(crate) struct Echo {
    frames: Framing<FrameCodec>,
    max_message: usize,
    /// The message being reassembled.
    partial: Option<Partial>,
    handshake: Handshake,
}

/// Where the closing handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handshake {
    /// Not begun: messages flow both ways.
    Open,
    /// This side sent its close frame first ([`Echo::go_away`]) and waits for the peer's: what
    /// else the peer sends is ignored.
    AwaitingClose,
    /// Over, or the connection failed: the TCP connection is to close, and nothing more is read.
    Closed,
}

/// A message arriving in fragments.
#[derive(Debug)]
struct Partial {
    opcode: OpCode,
    /// The payload of its fragments so far.
    payload: BytesMut,
    /// For a text message, how many bytes of `payload` are checked UTF-8: all but the start of
    /// a character cut by the end of the last fragment.
    checked: usize,
}

impl Partial {
    /// Appends a fragment (or a part of a frame still arriving); a text message is checked as far
    /// as its bytes go ([`check_utf8`]), so it fails at the first fragment that makes it invalid,
    /// not at its last one.
    fn push(&mut self, fragment: &[u8], fin: bool) -> Result<(), Violation> {
        self.payload.extend_from_slice(fragment);
        if self.opcode == OpCode::Data(Data::Text) {
            check_utf8(&self.payload, &mut self.checked, fin)?;
        }
        Ok(())
    }
}

impl Echo {
    /// Accepts messages of up to `max_message` bytes, fragments together.
    pub(crate) fn new(max_message: usize) -> Self {
        let frames = Framing::new(FrameCodec::new(max_message as u64, Some(Data::Text)))
            // Enough for the longest frame the codec lets through, a control frame of 125 bytes
            // included whatever the message limit; the codec is the real limit.
            .max_buffered(
                max_message
                    .max(MAX_CONTROL_PAYLOAD as usize)
                    .saturating_add(MAX_FRAME_HEADER),
            );
        Echo {
            frames,
            max_message,
            partial: None,
            handshake: Handshake::Open,
        }
    }

    /// Whether the closing handshake is over or the connection failed: the TCP connection is to
    /// close, and nothing more is read.
    pub(crate) fn is_closing(&self) -> bool {
        self.handshake == Handshake::Closed
    }

    /// Reads `data` (the bytes of one `DataReceived`): the frames to send back, in order. Once
    /// [`is_closing`](Self::is_closing), the last of them is a close frame (unless this side
    /// sent its own before, with [`go_away`](Self::go_away)), and every byte after it is ignored.
    pub(crate) fn receive(&mut self, data: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        if self.is_closing() {
            return out;
        }
        self.frames.feed(data);
        while !self.is_closing() {
            let handled = match self.frames.next_frame() {
                Ok(Some(frame)) if self.handshake == Handshake::AwaitingClose => {
                    // Our close frame is out: only the peer's matters now, and nothing more is
                    // sent, not even a pong (RFC 6455, 5.5.1).
                    if frame.opcode == OpCode::Control(Control::Close) {
                        self.handshake = Handshake::Closed;
                    }
                    Ok(())
                }
                Ok(Some(frame)) => self.on_frame(frame, &mut out),
                Ok(None) => break,
                Err(violation) => Err(violation),
            };
            if let Err(violation) = handled {
                tracing::debug!(?violation, "failing the WebSocket connection");
                // One close frame per side: after ours, the TCP connection just closes.
                if self.handshake == Handshake::Open {
                    out.push(Frame::close(Some(violation.code), violation.reason));
                }
                self.handshake = Handshake::Closed;
            }
        }
        out
    }

    /// Starts the closing handshake from this side (RFC 6455, 7.1.2), as a server going down
    /// does: the close frame to send, with 1001, going away (7.4.1); `None` if the handshake has
    /// begun already. From then on the peer's data frames are ignored, and its close frame ends
    /// the handshake: [`is_closing`](Self::is_closing) says when.
    pub(crate) fn go_away(&mut self) -> Option<Frame> {
        if self.handshake != Handshake::Open {
            return None;
        }
        self.handshake = Handshake::AwaitingClose;
        self.partial = None;
        Some(Frame::close(Some(CloseCode::Away), "shutting down"))
    }

    /// A ping, to ask a peer that has been idle whether it is still there (RFC 6455, 5.5.2: its
    /// pong, or anything it sends, says it is); `None` once the closing handshake has begun.
    pub(crate) fn ping(&self) -> Option<Frame> {
        (self.handshake == Handshake::Open)
            .then(|| Frame::new(OpCode::Control(Control::Ping), Bytes::new()))
    }

    /// Gives up on a peer that did not answer a ping: the close frame to send, with 1001 (going
    /// away, 7.4.1, as a server that ends an idle connection says), after which the TCP
    /// connection closes and nothing more is read; `None` if the closing handshake has begun.
    pub(crate) fn give_up(&mut self) -> Option<Frame> {
        if self.handshake != Handshake::Open {
            return None;
        }
        self.handshake = Handshake::Closed;
        self.partial = None;
        Some(Frame::close(Some(CloseCode::Away), "no answer to ping"))
    }

    /// Encodes `frames` into one buffer, for one `Write`. A frame that cannot be encoded (never:
    /// the header goes into memory) closes the connection.
    pub(crate) fn encode(&mut self, frames: Vec<Frame>) -> Bytes {
        let mut out = BytesMut::new();
        for frame in frames {
            if let Err(violation) = self.frames.codec_mut().encode(frame, &mut out) {
                tracing::warn!(?violation, "cannot encode a frame");
                self.handshake = Handshake::Closed;
                break;
            }
        }
        out.freeze()
    }

    /// Handles one frame; what to send back goes to `out`.
    fn on_frame(&mut self, frame: Frame, out: &mut Vec<Frame>) -> Result<(), Violation> {
        match frame.opcode {
            OpCode::Data(Data::Continue) => {
                let Some(partial) = &mut self.partial else {
                    return Err(Violation::protocol("continuation without a message"));
                };
                partial.push(&frame.payload, frame.fin)?;
                if frame.fin
                    && let Some(message) = self.partial.take()
                {
                    out.push(Frame::new(message.opcode, message.payload.freeze()));
                }
            }
            OpCode::Data(Data::Text | Data::Binary) if self.partial.is_some() => {
                return Err(Violation::protocol("new message inside a fragmented one"));
            }
            OpCode::Data(Data::Text) if frame.fin => {
                check_utf8(&frame.payload, &mut 0, true)?;
                out.push(frame);
            }
            OpCode::Data(Data::Binary) if frame.fin => out.push(frame),
            OpCode::Data(Data::Text | Data::Binary) => {
                let mut partial = Partial {
                    opcode: frame.opcode,
                    payload: BytesMut::new(),
                    checked: 0,
                };
                partial.push(&frame.payload, false)?;
                self.partial = Some(partial);
            }
            OpCode::Control(Control::Ping) => {
                out.push(Frame::new(OpCode::Control(Control::Pong), frame.payload));
            }
            OpCode::Control(Control::Pong) => {}
            OpCode::Control(Control::Close) => {
                // The closing handshake: echo the code, then close the connection.
                out.push(Frame::close(close_code(&frame.payload)?, ""));
                self.handshake = Handshake::Closed;
            }
            // `FrameHeader::parse` refuses reserved opcodes.
            OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)) => {
                return Err(Violation::protocol("reserved opcode"));
            }
        }
        let assembled = self
            .partial
            .as_ref()
            .map_or(0, |partial| partial.payload.len());
        let text = self.text_frames();
        let codec = self.frames.codec_mut();
        codec.data_budget = (self.max_message - assembled) as u64;
        codec.in_parts = text;
        Ok(())
    }

    /// The data frames that may carry text next: the codec hands them over in parts as they
    /// arrive, so that text fails as soon as its bytes prove it invalid, before its frame ends
    /// (Autobahn 6.4.3 and 6.4.4). That is a text frame when no message is being reassembled,
    /// and a continuation when a text one is. Other data frames come whole: a binary frame, and
    /// one refused whatever it carries (a text frame inside a message, a stray continuation),
    /// whose 1002 comes once it is whole.
    fn text_frames(&self) -> Option<Data> {
        match &self.partial {
            None => Some(Data::Text),
            Some(partial) if partial.opcode == OpCode::Data(Data::Text) => Some(Data::Continue),
            Some(_) => None,
        }
    }
}

/// Checks the UTF-8 of a text message as its bytes arrive (RFC 6455, 8.1): `text[..*checked]`
/// is known good, the rest is checked and `checked` moves on. A fragment (or a part of a frame)
/// may end in the middle of a character: until the message's `end` that is no error, so a
/// message fails at the first byte no continuation can make valid, and at its end if a
/// character is left unfinished.
///
/// std's own check says which is which (`error_len() == None`: the bytes end inside a character
/// that more bytes may complete), so no incremental decoder is needed: each byte is checked once,
/// the up to three of a cut character twice.
fn check_utf8(text: &[u8], checked: &mut usize, end: bool) -> Result<(), Violation> {
    match str::from_utf8(&text[*checked..]) {
        Ok(_) => {
            *checked = text.len();
            Ok(())
        }
        Err(err) if err.error_len().is_none() && !end => {
            *checked += err.valid_up_to();
            Ok(())
        }
        Err(_) => Err(Violation {
            code: CloseCode::Invalid,
            reason: "text message not UTF-8",
        }),
    }
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
// ANCHOR_END: echo

#[cfg(test)]
mod tests {
    use super::*;

    /// `payload` in a client's frame, masked (RFC 6455, 5.3).
    fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
        fragment(true, opcode, payload)
    }

    /// `payload` in a client's frame, final or not, masked.
    fn fragment(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let fin_bit = if fin { 0x80 } else { 0 };
        let mut frame = vec![fin_bit | opcode, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(
            payload
                .iter()
                .zip(mask.iter().cycle())
                .map(|(byte, mask)| byte ^ mask),
        );
        frame
    }

    /// Found by `fuzz/fuzz_targets/websocket_frames.rs`: under a message limit below 125 bytes,
    /// a ping longer than the limit that arrived in two reads failed the connection with 1009,
    /// where the same ping in one read was answered.
    #[test]
    fn a_ping_in_two_reads_is_answered_under_a_small_message_limit() {
        let ping = masked(0x9, &[b'p'; 100]);
        let (first, second) = ping.split_at(50);
        let mut echo = Echo::new(16);
        assert!(echo.receive(first).is_empty());
        let replies = echo.receive(second);
        assert_eq!(
            replies,
            [Frame::new(OpCode::Control(Control::Pong), vec![b'p'; 100])]
        );
        assert!(!echo.is_closing());

        // A message over the limit is still refused, before its payload is read.
        let replies = echo.receive(&masked(0x2, &[0; 17])[..6]);
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].payload[..2], [0x03, 0xf1], "1009");
    }

    /// A text message with characters of two, three and four bytes.
    const TEXT: &str = "é ✓ 🦀 κόσμε";

    /// The close frame of a text message that is not UTF-8.
    fn not_utf8() -> Frame {
        Frame::close(Some(CloseCode::Invalid), "text message not UTF-8")
    }

    /// A text message in two or three fragments, cut at every pair of points, characters cut
    /// included, is echoed whole; so is each of its fragments sent as a message of its own when
    /// it holds whole characters, and refused when it does not.
    #[test]
    fn text_cut_anywhere_into_fragments_is_echoed() {
        let text = TEXT.as_bytes();
        for first in 0..=text.len() {
            for second in first..=text.len() {
                let mut echo = Echo::new(1024);
                let mut replies = echo.receive(&fragment(false, 0x1, &text[..first]));
                replies.extend(echo.receive(&fragment(false, 0x0, &text[first..second])));
                replies.extend(echo.receive(&masked(0x0, &text[second..])));
                assert_eq!(
                    replies,
                    [Frame::new(OpCode::Data(Data::Text), TEXT)],
                    "cut at {first} and {second}"
                );
                assert!(!echo.is_closing());
            }
            let mut echo = Echo::new(1024);
            let expected = if TEXT.is_char_boundary(first) {
                Frame::new(OpCode::Data(Data::Text), text[..first].to_vec())
            } else {
                not_utf8()
            };
            assert_eq!(echo.receive(&masked(0x1, &text[..first])), [expected]);
        }
    }

    /// Text that is not UTF-8, and how many of its bytes prove it: after those, no continuation
    /// can make it valid (`None`: only its end does).
    const NOT_UTF8: [(&[u8], Option<usize>); 7] = [
        // Autobahn 6.4.1 to 6.4.4: U+110000, past the last code point, proven at F4 90.
        (
            b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80edited",
            Some(13),
        ),
        (b"ab\x80cd", Some(3)),
        // A surrogate, U+D800.
        (b"a\xed\xa0\x80b", Some(3)),
        // An overlong '/'.
        (b"\xc0\xaf", Some(1)),
        (b"\xff", Some(1)),
        (b"\xe2\x82a", Some(3)),
        // Cut short: nothing proves it before the end.
        (b"caf\xc3", None),
    ];

    /// A text message that is not UTF-8 fails with 1007 at the first fragment that proves it,
    /// wherever the fragments are cut: as soon as its bytes so far can no longer become UTF-8
    /// (`proven` of them), and at its end when it stops in the middle of a character.
    #[test]
    fn text_not_utf8_fails_at_the_first_fragment_that_proves_it() {
        for (text, proven) in NOT_UTF8 {
            for cut in 0..=text.len() {
                let mut echo = Echo::new(1024);
                let replies = echo.receive(&fragment(false, 0x1, &text[..cut]));
                if proven.is_some_and(|proven| cut >= proven) {
                    assert_eq!(replies, [not_utf8()], "{text:?} cut at {cut}");
                    assert!(echo.is_closing());
                    continue;
                }
                assert_eq!(replies, [], "{text:?} cut at {cut}");
                assert_eq!(
                    echo.receive(&masked(0x0, &text[cut..])),
                    [not_utf8()],
                    "{text:?} cut at {cut}"
                );
            }
        }
    }

    /// `wire` in three chops, cut at every pair of points, each time to a new `Echo`: nothing
    /// comes back before its first `answered` bytes are in, then `answer`, with the chop that
    /// brings them (the bytes after that chop are never sent).
    fn chops_answered_once(wire: &[u8], answered: usize, answer: &[Frame]) {
        for first in 0..=wire.len() {
            for second in first..=wire.len() {
                let mut echo = Echo::new(1024);
                let mut start = 0;
                for end in [first, second, wire.len()] {
                    let replies = echo.receive(&wire[start..end]);
                    start = end;
                    if end >= answered {
                        assert_eq!(replies, answer, "cut at {first} and {second}");
                        break;
                    }
                    assert_eq!(replies, [], "cut at {first} and {second}, {end} in");
                    assert!(!echo.is_closing(), "cut at {first} and {second}, {end} in");
                }
            }
        }
    }

    /// A text message that is not UTF-8 fails with 1007 as soon as the bytes received prove it,
    /// before the rest of their frame arrives (Autobahn 6.4.3 and 6.4.4: one frame in three
    /// TCP writes, the second bringing the invalid bytes), wherever the frame is cut: not a chop
    /// earlier, and without its end. So does a continuation of a text message, its characters
    /// cut anywhere between the fragments; text cut short fails with its last byte.
    #[test]
    fn text_not_utf8_fails_inside_its_frame() {
        const HEADER: usize = 6;
        for (text, proven) in NOT_UTF8 {
            let wire = masked(0x1, text);
            let answered = proven.map_or(wire.len(), |proven| HEADER + proven);
            chops_answered_once(&wire, answered, &[not_utf8()]);

            for cut in 0..=text.len() {
                let mut wire = fragment(false, 0x1, &text[..cut]);
                wire.extend(masked(0x0, &text[cut..]));
                // The continuation's header sits between the bytes before the cut and after it.
                let answered = match proven {
                    Some(proven) if proven <= cut => HEADER + proven,
                    Some(proven) => 2 * HEADER + proven,
                    None => wire.len(),
                };
                chops_answered_once(&wire, answered, &[not_utf8()]);
            }
        }
    }

    /// Text, its characters of up to four bytes cut anywhere inside its frame, is echoed whole
    /// once the frame ends, and not before; in one frame, or in two fragments cut anywhere.
    #[test]
    fn text_cut_anywhere_inside_its_frame_is_echoed_whole() {
        let text = TEXT.as_bytes();
        let echoed = [Frame::new(OpCode::Data(Data::Text), TEXT)];
        let wire = masked(0x1, text);
        chops_answered_once(&wire, wire.len(), &echoed);
        for cut in 0..=text.len() {
            let mut wire = fragment(false, 0x1, &text[..cut]);
            wire.extend(masked(0x0, &text[cut..]));
            chops_answered_once(&wire, wire.len(), &echoed);
        }
    }

    /// What has arrived of a frame of the opcode `in_parts` names comes out at once, unmasked,
    /// in parts that add up to the frame: the first with its opcode, the others continuations,
    /// the last with its FIN bit. A frame of another opcode waits until it is whole.
    #[test]
    fn a_frame_in_parts_comes_out_as_it_arrives() {
        let text = masked(0x1, b"hello, world");
        let binary = masked(0x2, b"bytes");
        let mut codec = FrameCodec::new(1024, Some(Data::Text));
        let mut src = BytesMut::new();
        let mut decode = |bytes: &[u8]| {
            src.extend_from_slice(bytes);
            let mut out = Vec::new();
            while let Some(frame) = codec.decode(&mut src).expect("valid frames") {
                out.push((frame.fin, frame.opcode, frame.payload));
            }
            out
        };
        let text_opcode = OpCode::Data(Data::Text);
        let more = OpCode::Data(Data::Continue);
        assert_eq!(decode(&text[..5]), []);
        assert_eq!(decode(&text[5..6]), [], "the header, no payload yet");
        assert_eq!(decode(&text[6..9]), [(false, text_opcode, "hel".into())]);
        assert_eq!(decode(&text[9..14]), [(false, more, "lo, w".into())]);
        assert_eq!(
            decode(&[&text[14..], &binary[..8]].concat()),
            [(true, more, "orld".into())]
        );
        assert_eq!(
            decode(&binary[8..]),
            [(true, OpCode::Data(Data::Binary), "bytes".into())]
        );
    }
}
