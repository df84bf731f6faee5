//! [`Framing`]: frames over a protocol's bytes, with tokio-util's `Decoder` and `Encoder`.

use std::{fmt, io};

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::{StartTls, TransportHandle};

/// The most bytes a [`Framing`] holds without a complete frame by default: 8 MiB, the default
/// frame limit of tokio-util's `LengthDelimitedCodec`.
pub const DEFAULT_MAX_BUFFERED: usize = 8 * 1024 * 1024;

/// Frames over the bytes a protocol receives and writes, with a tokio-util codec.
///
/// A protocol that thinks in frames (lines, length-prefixed messages, WebSocket frames) keeps
/// one `Framing` next to its transport handle. It [`feed`](Self::feed)s it the bytes of each
/// `DataReceived` and takes out each complete frame with [`next_frame`](Self::next_frame) (or
/// all of them at once with [`decode`](Self::decode)); the rest waits for the next chunk. It
/// writes frames with [`write`](Self::write), which encodes them and sends one `Write`.
///
/// For a protocol switch, [`take_leftover`](Self::take_leftover) gives the bytes received and
/// not yet decoded, to hand to [`SetProtocol`](crate::SetProtocol) as the new protocol's first
/// bytes; the new protocol's `Framing` starts with them from its first `DataReceived`.
///
/// ```
/// use actix::prelude::*;
/// use switchboard_framework::{Framing, prelude::*};
/// use tokio_util::codec::LinesCodec;
///
/// /// Answers each line with the same line in upper case.
/// struct Shout {
///     transport: Option<TransportHandle>,
///     lines: Framing<LinesCodec>,
/// }
///
/// impl Actor for Shout {
///     type Context = Context<Self>;
/// }
///
/// impl Handler<ConnectionMade> for Shout {
///     type Result = ();
///     fn handle(&mut self, msg: ConnectionMade, _: &mut Context<Self>) {
///         self.transport = Some(msg.transport);
///     }
/// }
///
/// impl Handler<DataReceived> for Shout {
///     type Result = ();
///     fn handle(&mut self, msg: DataReceived, _: &mut Context<Self>) {
///         let Some(transport) = &self.transport else { return };
///         self.lines.feed(&msg.data);
///         while let Some(line) = self.lines.next_frame().transpose() {
///             match line {
///                 Ok(line) => self.lines.write(transport, line.to_uppercase()).expect("encodes"),
///                 // A line over the limit: `LinesCodec` skips it, and we say so.
///                 Err(_) => self.lines.write(transport, "line too long").expect("encodes"),
///             }
///         }
///     }
/// }
///
/// impl Handler<ConnectionLost> for Shout {
///     type Result = ();
///     fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
///         ctx.stop();
///     }
/// }
///
/// # let _ = || Shout { transport: None, lines: Framing::new(LinesCodec::new_with_max_length(1024)) };
/// ```
pub struct Framing<C> {
    codec: C,
    read: BytesMut,
    write: BytesMut,
    max_buffered: usize,
    state: State,
    /// The codec's last answer was an error that took no byte.
    stuck: bool,
}

/// Whether a [`Framing`] decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Frames come out as bytes come in.
    Decoding,
    /// More than `max_buffered` bytes made no frame: nothing is decoded after that.
    OverLimit,
    /// [`take_leftover`](Framing::take_leftover) took the bytes not yet decoded, which the codec
    /// may still describe: nothing is decoded until [`with_codec`](Framing::with_codec).
    HandedOver,
}

impl<C> Framing<C> {
    /// Frames with `codec`, from the first byte.
    pub fn new(codec: C) -> Self {
        Framing {
            codec,
            read: BytesMut::new(),
            write: BytesMut::new(),
            max_buffered: DEFAULT_MAX_BUFFERED,
            state: State::Decoding,
            stuck: false,
        }
    }

    /// Frames with `codec`, starting with `leftover`: the bytes a protocol switch handed over
    /// (the `leftover` of [`SetProtocol`](crate::SetProtocol), delivered first).
    pub fn with_leftover(codec: C, leftover: &[u8]) -> Self {
        let mut framing = Framing::new(codec);
        framing.read.extend_from_slice(leftover);
        framing
    }

    /// Sets the most bytes held without a complete frame (default [`DEFAULT_MAX_BUFFERED`]);
    /// past it, [`decode`](Self::decode) yields an `InvalidData` error. Bytes held behind an
    /// error the codec does not move past (a `LengthDelimitedCodec` answers a frame too big with
    /// the same error at every call) count too, for a protocol that goes on after errors. A
    /// codec's own limit (`LinesCodec::new_with_max_length`) is the better guard where there is
    /// one.
    pub fn max_buffered(mut self, limit: usize) -> Self {
        self.max_buffered = limit;
        self
    }

    /// Appends bytes received (those of a `DataReceived`); take the frames out with
    /// [`next_frame`](Self::next_frame).
    pub fn feed(&mut self, data: &[u8]) {
        if self.state != State::OverLimit {
            self.read.extend_from_slice(data);
        }
    }

    /// Bytes received and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.read.len()
    }

    /// Takes the bytes received and not yet decoded, for a switch to another protocol.
    ///
    /// This `Framing` decodes nothing more after it. Its codec may still describe the bytes
    /// taken (how far a `LinesCodec` has looked for a newline, the length of the frame whose
    /// head a `LengthDelimitedCodec` has read), and would misread the next bytes by it: bytes
    /// fed afterwards make [`next_frame`](Self::next_frame) an `InvalidInput` error. To go on
    /// reading in the same actor (after `STARTTLS`, say), go on with
    /// [`with_codec`](Self::with_codec) and a new codec.
    ///
    /// The leftover is every byte not decoded where the codec leaves what it has not decoded
    /// in the buffer, as `LinesCodec` does. A codec that takes the start of a frame out before
    /// the frame is complete (`LengthDelimitedCodec` takes its head) holds those bytes itself:
    /// take its leftover right after a frame, before asking for the next one.
    pub fn take_leftover(&mut self) -> Bytes {
        self.state = State::HandedOver;
        self.read.split().freeze()
    }

    /// Hands `start` what this `Framing` received and did not decode, as
    /// [`StartTls::unconsumed`] does: the safe way to upgrade after a go-ahead line (`220
    /// ready` on a client, a `STARTTLS` command on a server). If any byte is left, the transport
    /// refuses the upgrade and ends the connection with a
    /// [`TlsErrorKind::Injection`](crate::TlsErrorKind::Injection) error, and this `Framing`
    /// decodes nothing more; if none is, it goes on decoding the bytes that come over TLS.
    ///
    /// ```
    /// # use switchboard_framework::{Framing, StartTls, TlsSettings};
    /// # use tokio_util::codec::LinesCodec;
    /// let mut lines = Framing::new(LinesCodec::new());
    /// lines.feed(b"220 ready\r\n250 INJECTED\r\n");
    /// assert_eq!(lines.next_frame().unwrap().as_deref(), Some("220 ready"));
    /// let start = lines.start_tls(StartTls::new(TlsSettings::new(())));
    /// assert_eq!(&start.leftover[..], b"250 INJECTED\r\n", "the transport will refuse");
    /// ```
    pub fn start_tls(&mut self, start: StartTls) -> StartTls {
        if self.read.is_empty() {
            return start.unconsumed(Bytes::new());
        }
        start.unconsumed(self.take_leftover())
    }

    /// The buffer [`encode`](Self::encode) encodes into, kept between writes.
    pub(crate) fn write_buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.write
    }

    /// The codec, with its settings; the bytes not decoded are dropped.
    pub fn into_codec(self) -> C {
        self.codec
    }

    /// The codec.
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// The codec, to change its settings.
    pub fn codec_mut(&mut self) -> &mut C {
        &mut self.codec
    }

    /// Goes on with another codec, over the bytes not yet decoded: a switch of framing inside
    /// one protocol actor (a line-based handshake, then length-prefixed messages), or the same
    /// framing afresh after [`take_leftover`](Self::take_leftover).
    pub fn with_codec<D>(self, codec: D) -> Framing<D> {
        Framing {
            codec,
            read: self.read,
            write: self.write,
            max_buffered: self.max_buffered,
            state: State::Decoding,
            stuck: false,
        }
    }

    /// Encodes `item` into one buffer.
    pub fn encode<I>(&mut self, item: I) -> Result<Bytes, C::Error>
    where
        C: Encoder<I>,
    {
        self.codec.encode(item, &mut self.write)?;
        Ok(self.write.split().freeze())
    }

    /// Encodes `item` and writes it through `transport`, fire-and-forget.
    pub fn write<I>(&mut self, transport: &TransportHandle, item: I) -> Result<(), C::Error>
    where
        C: Encoder<I>,
    {
        let frame = self.encode(item)?;
        transport.write(frame);
        Ok(())
    }

    /// Encodes every item into one buffer and writes it with one `Write`: a batch of frames
    /// costs one message and, usually, one system call.
    pub fn write_all<I>(
        &mut self,
        transport: &TransportHandle,
        items: impl IntoIterator<Item = I>,
    ) -> Result<(), C::Error>
    where
        C: Encoder<I>,
    {
        for item in items {
            self.codec.encode(item, &mut self.write)?;
        }
        if !self.write.is_empty() {
            transport.write(self.write.split().freeze());
        }
        Ok(())
    }
}

impl<C: Decoder> Framing<C> {
    /// Appends `data` (the bytes of a `DataReceived`) and yields every frame now complete, in
    /// order. An error ends the iteration. Whether decoding can go on after it is the codec's
    /// to say: `LinesCodec` skips a line over its length limit and goes on with the next, so a
    /// protocol can answer with an error and carry on; after most other errors the protocol
    /// should close the transport. Over [`max_buffered`](Self::max_buffered) bytes without a
    /// frame is the end: nothing is decoded after it.
    pub fn decode<'a>(&'a mut self, data: &[u8]) -> Decoded<'a, C> {
        self.feed(data);
        Decoded {
            framing: self,
            done: false,
        }
    }

    /// The next frame from the bytes fed so far, if one is complete. Errors are as for
    /// [`decode`](Self::decode).
    pub fn next_frame(&mut self) -> Result<Option<C::Item>, C::Error> {
        if let Some(end) = self.ended() {
            return end;
        }
        let before = self.read.len();
        let decoded = self.codec.decode(&mut self.read);
        // An error over the same bytes twice: the codec is stuck at them (`LengthDelimitedCodec`
        // at a frame too big, where `LinesCodec` skips a long line at the next call). It holds
        // the bytes fed after that as if it waited for a frame, so the limit holds for it too,
        // for a protocol that goes on after errors.
        let took_none = decoded.is_err() && self.read.len() == before;
        let stuck = took_none && self.stuck;
        self.stuck = took_none;
        let waits = match &decoded {
            Ok(Some(_)) => false,
            Ok(None) => true,
            Err(_) => stuck,
        };
        if waits && self.read.len() > self.max_buffered {
            self.state = State::OverLimit;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} bytes received without a complete frame, over the limit of {}",
                    self.read.len(),
                    self.max_buffered
                ),
            )
            .into());
        }
        decoded
    }

    /// The frames left at the peer's EOF (tokio-util's `decode_eof`): a last frame without its
    /// terminator, or an error for bytes that make no frame.
    pub fn decode_eof(&mut self) -> Result<Option<C::Item>, C::Error> {
        if let Some(end) = self.ended() {
            return end;
        }
        self.codec.decode_eof(&mut self.read)
    }

    /// What decoding yields once it is over, if it is.
    fn ended(&self) -> Option<Result<Option<C::Item>, C::Error>> {
        match self.state {
            State::Decoding => None,
            State::OverLimit => Some(Ok(None)),
            State::HandedOver if self.read.is_empty() => Some(Ok(None)),
            State::HandedOver => Some(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bytes fed after take_leftover, to a codec that may still describe the bytes taken",
            )
            .into())),
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for Framing<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framing")
            .field("codec", &self.codec)
            .field("buffered", &self.read.len())
            .field("max_buffered", &self.max_buffered)
            .field("state", &self.state)
            .finish()
    }
}

/// The frames one [`Framing::decode`] call completes; an iterator of `Result`s.
#[must_use = "frames are decoded only as the iterator is consumed"]
pub struct Decoded<'a, C: Decoder> {
    framing: &'a mut Framing<C>,
    /// Set after an error, so that a codec that cannot recover does not yield it forever.
    done: bool,
}

impl<C: Decoder> Iterator for Decoded<'_, C> {
    type Item = Result<C::Item, C::Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = self.framing.next_frame().transpose();
        self.done = matches!(next, Some(Err(_)));
        next
    }
}

impl<C: Decoder + fmt::Debug> fmt::Debug for Decoded<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Decoded").field(&self.framing).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::codec::{LengthDelimitedCodec, LinesCodec, LinesCodecError};

    #[test]
    fn frames_split_anywhere_come_out_whole_and_in_order() {
        let input = b"one\ntwo\nthree\nfour";
        for split in 0..input.len() {
            let mut framing = Framing::new(LinesCodec::new());
            let mut lines: Vec<String> = framing
                .decode(&input[..split])
                .collect::<Result<_, _>>()
                .expect("lines");
            lines.extend(
                framing
                    .decode(&input[split..])
                    .collect::<Result<Vec<_>, _>>()
                    .expect("lines"),
            );
            assert_eq!(lines, ["one", "two", "three"], "split at {split}");
            assert_eq!(framing.buffered(), 4);
            assert_eq!(framing.decode_eof().expect("eof"), Some("four".into()));
        }
    }

    #[test]
    fn the_leftover_is_exactly_what_was_not_decoded() {
        let mut framing = Framing::new(LinesCodec::new());
        let mut lines = framing.decode(b"STARTTLS\n\x16\x03\x01binary");
        assert_eq!(
            lines.next().transpose().expect("line"),
            Some("STARTTLS".into())
        );
        drop(lines);
        assert_eq!(&framing.take_leftover()[..], b"\x16\x03\x01binary");
        assert_eq!(framing.buffered(), 0);

        let handed = Framing::with_leftover(LinesCodec::new(), b"half");
        let mut handed = handed;
        let rest: Vec<String> = handed
            .decode(b" line\n")
            .collect::<Result<_, _>>()
            .expect("line");
        assert_eq!(rest, ["half line"]);
    }

    #[test]
    fn a_framing_switch_keeps_the_undecoded_bytes() {
        let mut lines = Framing::new(LinesCodec::new());
        let mut wire = b"HELLO\n".to_vec();
        wire.extend_from_slice(&[0, 0, 0, 3]);
        wire.extend_from_slice(b"abc");
        let hello: Vec<String> = lines
            .decode(&wire)
            .take(1)
            .collect::<Result<_, _>>()
            .expect("hello");
        assert_eq!(hello, ["HELLO"]);
        let mut frames = lines.with_codec(LengthDelimitedCodec::new());
        let frame = frames.next_frame().expect("decodes").expect("a frame");
        assert_eq!(&frame[..], b"abc");
        let encoded = frames.encode(Bytes::from_static(b"xy")).expect("encodes");
        assert_eq!(&encoded[..], &[0, 0, 0, 2, b'x', b'y']);
    }

    #[test]
    fn too_many_bytes_without_a_frame_is_an_error_and_the_end() {
        let mut framing = Framing::new(LinesCodec::new()).max_buffered(8);
        assert!(framing.decode(b"12345678").next().is_none(), "at the limit");
        let err = framing
            .decode(b"9")
            .next()
            .expect("an error")
            .expect_err("over the limit");
        assert!(err.to_string().contains("over the limit of 8"), "{err}");
        assert!(
            framing.decode(b"\n").next().is_none(),
            "nothing after an error"
        );

        // A codec that recovers goes on at the next call: `LinesCodec` skips the long line.
        let mut limited = Framing::new(LinesCodec::new_with_max_length(4));
        let mut decoded = limited.decode(b"toolong\nok\n");
        assert!(
            decoded.next().expect("an item").is_err(),
            "the codec's own limit"
        );
        assert!(decoded.next().is_none(), "an error ends the iteration");
        let rest: Vec<String> = limited.decode(b"").collect::<Result<_, _>>().expect("ok");
        assert_eq!(rest, ["ok"]);
    }

    /// Found by `fuzz/fuzz_targets/framing_lines.rs`: `LinesCodec` remembers how far it has
    /// looked for a newline, and after `take_leftover` it looked past the end of the buffer (a
    /// panic) or skipped the newlines of the next bytes (lines merged).
    #[test]
    fn after_take_leftover_nothing_is_decoded_until_a_new_codec() {
        let mut framing = Framing::new(LinesCodec::new());
        assert!(framing.decode(b"abc").next().is_none());
        assert_eq!(&framing.take_leftover()[..], b"abc");
        assert!(framing.next_frame().expect("nothing fed").is_none());
        assert!(framing.decode_eof().expect("nothing fed").is_none());

        let err = framing
            .decode(b"x\nyz\n")
            .next()
            .expect("an error")
            .expect_err("bytes fed after the hand-over");
        let LinesCodecError::Io(err) = err else {
            panic!("{err:?}");
        };
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(framing.decode_eof().is_err(), "the bytes are still there");

        let mut framing = framing.with_codec(LinesCodec::new());
        let lines: Vec<String> = framing
            .decode(b"")
            .collect::<Result<_, _>>()
            .expect("lines");
        assert_eq!(lines, ["x", "yz"]);
    }

    /// Found by `fuzz/fuzz_targets/framing_length_delimited.rs`: a `LengthDelimitedCodec`
    /// answers a frame too big with the same error at every call, and took every byte fed after
    /// it, past `max_buffered`, for a protocol that went on after the error.
    #[test]
    fn a_codec_stuck_at_an_error_is_held_to_the_limit() {
        let codec = LengthDelimitedCodec::builder()
            .max_frame_length(4)
            .new_codec();
        let mut framing = Framing::new(codec).max_buffered(8);
        framing.feed(&[0, 0, 0, 9]);
        for _ in 0..2 {
            let err = framing.next_frame().expect_err("a frame too big");
            assert!(err.to_string().contains("too big"), "{err}");
        }
        framing.feed(&[0; 16]);
        let err = framing.next_frame().expect_err("stuck, over the limit");
        assert!(err.to_string().contains("over the limit of 8"), "{err}");
        framing.feed(&[0; 16]);
        assert!(framing.next_frame().expect("the end").is_none());
        assert_eq!(framing.buffered(), 20, "bytes taken after the limit");

        // A codec that moves past its errors is not stuck, whatever it holds.
        let mut lines = Framing::new(LinesCodec::new_with_max_length(2)).max_buffered(8);
        lines.feed(b"long line\nok\n");
        assert!(
            lines.next_frame().is_err(),
            "the line over the codec's limit"
        );
        assert_eq!(lines.next_frame().expect("a line"), Some("ok".into()));
    }

    /// The committed seeds and regressions of the `framing_*` fuzz targets, through the checks
    /// the targets run.
    #[test]
    fn the_fuzz_corpus_passes_the_fuzz_checks() {
        let corpus = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus"));
        fuzz_checks::input::replay(&corpus.join("framing_lines"), fuzz_checks::lines);
        fuzz_checks::input::replay(
            &corpus.join("framing_length_delimited"),
            fuzz_checks::length_delimited,
        );
    }
}

/// The checks of the `framing_*` fuzz targets, to replay their corpus in the tests above.
#[cfg(test)]
#[path = "../../fuzz/checks/framing.rs"]
mod fuzz_checks;
