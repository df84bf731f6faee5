//! The checks of the `framing_lines` and `framing_length_delimited` fuzz targets: `Framing` over
//! the tokio-util codecs the project frames with (`LinesCodec`, with and without a length limit,
//! and `LengthDelimitedCodec`), fed a peer's bytes cut anywhere.
//!
//! Each check compares what `Framing` yields with a model of the codec written here from its
//! documentation, over the whole input at once; so the frames of cut input are those of whole
//! input, and no frame comes after an error the codec does not move past. It also checks the
//! bounds: the bytes held never pass `max_buffered` by more than one chunk (also for a protocol
//! that goes on after errors), and nothing is decoded after the limit error; and the hand-over:
//! `take_leftover` gives exactly the bytes not decoded, which a new `Framing` decodes as the rest
//! of the stream, while the old one never yields a frame it should not.
//!
//! Its includer has `Framing` in scope: the fuzz target imports `switchboard::Framing`, and
//! `framework/src/framing.rs` declares this module next to the type, to replay the committed
//! corpus in its unit tests.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec, LinesCodec, LinesCodecError};

use super::Framing;

#[path = "input.rs"]
pub(crate) mod input;

use input::{Chunks, Input};

/// The bytes a model leaves pending at the end of its input: the start of a frame, or `None`
/// where the codec is past them (skipping a line over its limit, stuck at a frame too big).
type Pending = Option<Vec<u8>>;

/// What one `next_frame` (or `decode_eof`) call yielded, errors told apart.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got<T> {
    Frame(T),
    /// The codec's own error: a line over its limit, a line not UTF-8, a frame too big.
    CodecError(String),
    /// `Framing`'s error: over `max_buffered` bytes without a frame.
    OverLimit,
}

/// What the settings bytes ask for, common to both codecs.
#[derive(Debug)]
struct Settings {
    /// `Framing::max_buffered`, or the default (8 MiB, never reached here).
    max_buffered: Option<usize>,
    /// Take the leftover after this chunk, and go on with a new `Framing` over it.
    hand_over_after: Option<usize>,
    /// Decode with the `decode` iterator rather than with `next_frame`.
    iterator: bool,
}

impl Settings {
    fn read(input: &mut Input<'_>) -> Self {
        let limit = input.byte();
        let hand_over = input.byte();
        Settings {
            max_buffered: (limit & 0x80 != 0).then_some(usize::from(limit & 0x7f)),
            hand_over_after: (hand_over & 0x80 != 0).then_some(usize::from(hand_over & 0x0f)),
            iterator: hand_over & 0x40 != 0,
        }
    }
}

/// The error `Framing` itself reports: the only one whose message says so.
fn is_over_limit(err: &impl std::fmt::Display) -> bool {
    err.to_string()
        .contains("without a complete frame, over the limit of")
}

/// Every frame decodable now, the way a protocol takes them: until `Ok(None)`, or until an
/// error comes twice over the same bytes (the codec does not move past it).
fn drain<C>(framing: &mut Framing<C>, iterator: bool, got: &mut Vec<Got<C::Item>>)
where
    C: Decoder,
    C::Error: std::fmt::Display,
{
    // Whether the last call was an error that consumed nothing.
    let mut stuck = false;
    // Each round consumes a frame or some bytes, or ends, or is an error with the next round
    // ending or consuming: a bound that cannot be hit.
    for _ in 0..=2 * framing.buffered() + 4 {
        let before = framing.buffered();
        let next = if iterator {
            // An error ends the iteration; a new `decode` call goes on after it.
            let mut frames = framing.decode(&[]);
            let next = frames.next().transpose();
            drop(frames);
            next
        } else {
            framing.next_frame()
        };
        match next {
            Ok(Some(frame)) => got.push(Got::Frame(frame)),
            Ok(None) => return,
            Err(err) if is_over_limit(&err) => {
                got.push(Got::OverLimit);
                return;
            }
            Err(err) => {
                got.push(Got::CodecError(err.to_string()));
                if framing.buffered() == before && stuck {
                    return;
                }
                stuck = framing.buffered() == before;
                continue;
            }
        }
        stuck = false;
    }
    panic!("next_frame neither ends nor consumes");
}

/// `LinesCodec` as its documentation describes it: a line ends at `\n`, one `\r` before it
/// goes; a line of over `max_length` bytes before its `\n` is one error and is skipped; a line
/// that is not UTF-8 is one error. The frames of all of `data`, and what is left pending: the
/// start of a line not ended yet, or `None` while a line over the limit is being skipped.
fn lines_model(data: &[u8], max_length: usize) -> (Vec<Got<String>>, Pending) {
    let mut got = Vec::new();
    let mut start = 0;
    while let Some(newline) = data[start..].iter().position(|&byte| byte == b'\n') {
        got.push(line_model(&data[start..start + newline], max_length));
        start += newline + 1;
    }
    let tail = &data[start..];
    if tail.len() > max_length {
        got.push(Got::CodecError(
            LinesCodecError::MaxLineLengthExceeded.to_string(),
        ));
        return (got, None);
    }
    (got, Some(tail.to_vec()))
}

fn line_model(raw: &[u8], max_length: usize) -> Got<String> {
    if raw.len() > max_length {
        return Got::CodecError(LinesCodecError::MaxLineLengthExceeded.to_string());
    }
    let line = raw.strip_suffix(b"\r").unwrap_or(raw);
    match std::str::from_utf8(line) {
        Ok(line) => Got::Frame(line.to_owned()),
        Err(_) => Got::CodecError("Unable to decode input as UTF8".to_owned()),
    }
}

/// What `decode_eof` yields after the model's pending bytes.
fn lines_eof_model(pending: Option<&[u8]>) -> Option<Got<String>> {
    match pending {
        None | Some(b"" | b"\r") => None,
        Some(tail) => Some(line_model(tail, usize::MAX)),
    }
}

/// `framing_lines`: `Framing<LinesCodec>`, with a length limit or none.
pub(crate) fn lines(fuzz: &[u8]) {
    let mut input = Input::new(fuzz);
    let limit = input.byte();
    let max_length = (limit != 0).then_some(usize::from(limit % 32));
    let settings = Settings::read(&mut input);
    let chunks = input.chunks();
    let codec = || match max_length {
        Some(max) => LinesCodec::new_with_max_length(max),
        None => LinesCodec::new(),
    };
    let max_length = max_length.unwrap_or(usize::MAX);
    let model = |data: &[u8]| lines_model(data, max_length);
    // `LinesCodec` holds no byte back: what it has not decoded stays in the buffer.
    check(
        &chunks,
        &settings,
        codec,
        model,
        |_| 0,
        |framing, pending| {
            let eof = framing.decode_eof().transpose().map(|eof| match eof {
                Ok(line) => Got::Frame(line),
                Err(err) => Got::CodecError(err.to_string()),
            });
            assert_eq!(eof, lines_eof_model(pending), "decode_eof");
        },
    );
}

/// `LengthDelimitedCodec` with a 4-byte big-endian length, as its documentation describes it:
/// a frame over `max_frame_length` is an error that stays (the codec never skips it). The
/// frames of all of `data` and the bytes pending after them, or `None` after the error.
fn length_delimited_model(data: &[u8], max_frame_length: usize) -> (Vec<Got<BytesMut>>, Pending) {
    let mut got = Vec::new();
    let mut rest = data;
    while let Some((head, body)) = rest.split_first_chunk::<4>() {
        let len = u32::from_be_bytes(*head) as usize;
        if len > max_frame_length {
            got.push(Got::CodecError("frame size too big".to_owned()));
            return (got, None);
        }
        if body.len() < len {
            break;
        }
        got.push(Got::Frame(BytesMut::from(&body[..len])));
        rest = &body[len..];
    }
    (got, Some(rest.to_vec()))
}

/// `framing_length_delimited`: `Framing<LengthDelimitedCodec>`, each frame re-encoded to the
/// bytes it came from.
pub(crate) fn length_delimited(fuzz: &[u8]) {
    let mut input = Input::new(fuzz);
    let limit = input.byte();
    let max_frame_length = match limit & 0x80 {
        0 => LengthDelimitedCodec::new().max_frame_length(),
        _ => usize::from(limit & 0x7f),
    };
    let settings = Settings::read(&mut input);
    let chunks = input.chunks();
    let codec = || {
        LengthDelimitedCodec::builder()
            .max_frame_length(max_frame_length)
            .new_codec()
    };
    let model = |data: &[u8]| length_delimited_model(data, max_frame_length);
    check(
        &chunks,
        &settings,
        codec,
        model,
        held_head,
        |framing, pending| {
            // tokio-util's default `decode_eof`: an error for bytes left in the buffer. The codec
            // takes a frame's 4-byte head out of the buffer as soon as it has it, so a stream that
            // ends right after a head ends cleanly: that is tokio-util's behaviour, and checked
            // as such.
            let eof = framing.decode_eof();
            let buffered = pending.map_or(0, |tail| tail.len() - held_head(tail));
            match eof {
                Ok(None) => assert!(buffered == 0, "decode_eof passed over {buffered} bytes"),
                Ok(Some(frame)) => panic!("decode_eof yielded {frame:?} the model does not have"),
                Err(_) => assert!(buffered > 0 || pending.is_none(), "decode_eof error"),
            }
        },
    );

    // Every frame, encoded again, is the bytes it came from: the frames cover the input's
    // start exactly.
    let (frames, _) = length_delimited_model(chunks.data, max_frame_length);
    let mut encoded = BytesMut::new();
    for frame in frames {
        if let Got::Frame(frame) = frame {
            codec()
                .encode(frame.freeze(), &mut encoded)
                .expect("encodes");
        }
    }
    assert_eq!(
        &encoded[..],
        &chunks.data[..encoded.len()],
        "re-encoded frames"
    );
}

/// The bytes of `pending` a `LengthDelimitedCodec` has taken out of the buffer: the head of the
/// frame it waits for, once it has all 4 bytes of it.
fn held_head(pending: &[u8]) -> usize {
    if pending.len() >= 4 { 4 } else { 0 }
}

/// Feeds `chunks` to a `Framing`, one after the other, and compares what comes out with
/// `model` over the whole input; `held` says how many of the pending bytes the codec has taken
/// out of the buffer, and `eof` checks `decode_eof` at the end against what the model leaves
/// pending.
fn check<C, M>(
    chunks: &Chunks<'_>,
    settings: &Settings,
    codec: impl Fn() -> C,
    model: M,
    held: fn(&[u8]) -> usize,
    eof: impl FnOnce(&mut Framing<C>, Option<&[u8]>),
) where
    C: Decoder,
    C::Item: Clone + PartialEq + std::fmt::Debug,
    C::Error: std::fmt::Display,
    M: Fn(&[u8]) -> (Vec<Got<C::Item>>, Pending),
{
    let mut framing = Framing::new(codec());
    if let Some(limit) = settings.max_buffered {
        framing = framing.max_buffered(limit);
    }
    let all: Vec<&[u8]> = chunks.iter().collect();
    let longest = all.iter().map(|chunk| chunk.len()).max().unwrap_or(0);
    let mut got = Vec::new();
    let mut fed = 0;
    // Once over the limit, the bytes held stay as they were.
    let mut over_limit: Option<usize> = None;
    for (i, chunk) in all.iter().enumerate() {
        framing.feed(chunk);
        fed += chunk.len();
        drain(&mut framing, settings.iterator, &mut got);
        if let Some(limit) = settings.max_buffered {
            assert!(
                framing.buffered() <= limit + longest,
                "{} bytes held, over the limit of {limit} and a chunk",
                framing.buffered()
            );
        }
        if let Some(held) = over_limit {
            assert_eq!(framing.buffered(), held, "bytes taken after the limit");
        }
        if got.last() == Some(&Got::OverLimit) && over_limit.is_none() {
            over_limit = Some(framing.buffered());
            assert!(
                framing.buffered() > settings.max_buffered.expect("a limit"),
                "the limit error with {} bytes held",
                framing.buffered()
            );
        }
        if settings.hand_over_after == Some(i) && over_limit.is_none() {
            let fed = &chunks.data[..fed];
            hand_over(framing, &all[i + 1..], fed, &got, &codec, &model, held);
            return;
        }
    }
    let (expected, pending) = model(chunks.data);
    match over_limit {
        // Over the limit: what came before the error is what the whole input gives, and
        // nothing comes after it.
        Some(_) => {
            let before = dedup_errors(got[..got.len() - 1].to_vec());
            let expected = expected.get(..before.len());
            assert_eq!(Some(&before[..]), expected, "frames before the limit");
            assert_eq!(
                framing.next_frame().ok().flatten(),
                None,
                "a frame after the limit"
            );
        }
        None => {
            assert_eq!(dedup_errors(got), expected, "cut input against whole input");
            eof(&mut framing, pending.as_deref());
        }
    }
}

/// An error that stays (`LengthDelimitedCodec`'s frame too big) comes once per call: as one.
fn dedup_errors<T: PartialEq>(mut got: Vec<Got<T>>) -> Vec<Got<T>> {
    got.dedup_by(|next, previous| match (previous, next) {
        (Got::CodecError(previous), Got::CodecError(next)) => {
            previous == next && next.contains("too big")
        }
        _ => false,
    });
    got
}

/// Takes the leftover after `fed` and checks it is exactly the bytes not decoded; then a new
/// `Framing` over the leftover and the chunks still to come decodes them as the start of a
/// stream, and the old one, fed on, never yields a frame that is not one.
fn hand_over<C, M>(
    mut old: Framing<C>,
    rest: &[&[u8]],
    fed: &[u8],
    got: &[Got<C::Item>],
    codec: &impl Fn() -> C,
    model: &M,
    held: fn(&[u8]) -> usize,
) where
    C: Decoder,
    C::Item: Clone + PartialEq + std::fmt::Debug,
    C::Error: std::fmt::Display,
    M: Fn(&[u8]) -> (Vec<Got<C::Item>>, Pending),
{
    let (expected, pending) = model(fed);
    assert_eq!(
        dedup_errors(got.to_vec()),
        expected,
        "frames before the hand-over"
    );
    let leftover = old.take_leftover();
    assert_eq!(old.buffered(), 0, "bytes left after take_leftover");
    // The bytes not decoded, less those the codec has taken out of the buffer already (a
    // `LengthDelimitedCodec` reads a frame's head as soon as it has it); after an error that
    // stays, they are all still there.
    if let Some(pending) = &pending {
        assert_eq!(&leftover[..], &pending[held(pending)..], "the leftover");
    }

    let mut stream = leftover.to_vec();
    rest.iter()
        .for_each(|chunk| stream.extend_from_slice(chunk));
    let mut new = Framing::with_leftover(codec(), &leftover);
    let mut got = Vec::new();
    drain(&mut new, false, &mut got);
    for chunk in rest {
        new.feed(chunk);
        drain(&mut new, false, &mut got);
    }
    let (expected, _) = model(&stream);
    assert_eq!(
        dedup_errors(got),
        expected,
        "a new Framing over the leftover"
    );

    // The old `Framing` has handed its bytes over; its codec may still describe them (where a
    // line search stopped, the length of a frame whose head it read). Fed on, it yields errors
    // or the frames of the bytes fed to it, never others, and never panics.
    let rest_stream: Vec<u8> = rest.concat();
    let (fresh, _) = model(&rest_stream);
    let fresh: Vec<_> = fresh
        .into_iter()
        .filter_map(|got| match got {
            Got::Frame(frame) => Some(frame),
            _ => None,
        })
        .collect();
    let mut after = Vec::new();
    for chunk in rest {
        old.feed(chunk);
        drain(&mut old, false, &mut after);
    }
    let after: Vec<_> = after
        .into_iter()
        .filter_map(|got| match got {
            Got::Frame(frame) => Some(frame),
            _ => None,
        })
        .collect();
    assert!(
        fresh.starts_with(&after),
        "after take_leftover: {after:?}, from bytes that make {fresh:?}"
    );
}
