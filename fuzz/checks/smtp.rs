//! The checks of the `smtp_*` fuzz targets, over the parsers of `examples/smtp_server/`: the
//! command line parser, the line splitter, the DATA content reader, and the three together as
//! one connection reads them. `tests/example_smtp.rs` replays the committed corpus through them.

// The example's own modules, whole: the checks use their parsers, not every item.
#[allow(dead_code)]
#[path = "../../examples/smtp_server/command.rs"]
mod command;
#[allow(dead_code)]
#[path = "../../examples/smtp_server/content.rs"]
mod content;
#[allow(dead_code)]
#[path = "../../examples/smtp_server/envelope.rs"]
mod envelope;
#[allow(dead_code)]
#[path = "../../examples/smtp_server/lines.rs"]
mod lines;

#[path = "input.rs"]
pub(crate) mod input;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use command::{Command, parse};
use content::{MessageReader, TooBig};
use envelope::{Envelope, Hello};
use input::{Chunks, Input};
use lines::{CommandLines, Line, MAX_LINE};

/// `smtp_command`: one command line. Besides never panicking, the verb is case-insensitive,
/// and what a command takes from its line (a domain, an address, a size) parses back to itself
/// when written as a client would write it, and cannot break the lines of the trace fields it
/// ends up in.
pub(crate) fn command(line: &[u8]) {
    let parsed = parse(line);

    let verb_end = line
        .iter()
        .position(|&byte| byte == b' ')
        .unwrap_or(line.len());
    for case in [u8::to_ascii_lowercase, u8::to_ascii_uppercase] {
        let mut other = line.to_vec();
        other[..verb_end]
            .iter_mut()
            .for_each(|byte| *byte = case(byte));
        assert_eq!(parse(&other), parsed, "the verb in another case");
    }

    let Ok(command) = parsed else {
        return;
    };
    let written = match &command {
        Command::Helo(domain) => format!("HELO {domain}"),
        Command::Ehlo(domain) => format!("EHLO {domain}"),
        Command::Mail { from, size: None } => format!("MAIL FROM:<{from}>"),
        Command::Mail {
            from,
            size: Some(size),
        } => format!("MAIL FROM:<{from}> SIZE={size}"),
        Command::Rcpt { to } => format!("RCPT TO:<{to}>"),
        _ => return,
    };
    assert_eq!(
        parse(written.as_bytes()),
        Ok(command),
        "{written:?} parsed back"
    );

    // Whatever a client names itself and its addresses, the trace fields stay the lines they
    // are: a client cannot add a header field of its own to the stored message.
    let word = match parse(written.as_bytes()) {
        Ok(Command::Helo(word) | Command::Ehlo(word)) => word,
        Ok(Command::Mail { from: word, .. } | Command::Rcpt { to: word }) => word,
        other => panic!("{other:?}"),
    };
    let envelope = Envelope {
        hello: Hello {
            name: word.clone(),
            extended: true,
        },
        peer: None,
        tls: false,
        from: word.clone(),
        recipients: vec![word],
    };
    let trace = envelope.trace_fields("mx.test", "ID", 0);
    let lines: Vec<&str> = trace.split_terminator("\r\n").collect();
    assert_eq!(lines.len(), 5, "{trace:?}");
    assert!(
        lines.iter().all(|line| !line.contains(['\r', '\n'])),
        "a bare CR or LF in {trace:?}"
    );
    assert!(lines[0].starts_with("Return-Path: <") && lines[1].starts_with("Received: from "));
    assert!(
        lines[2..].iter().all(|line| line.starts_with('\t')),
        "{trace:?}"
    );
}

/// The content of `DATA` as RFC 5321 §4.5.2 defines it, written here from the RFC: lines end
/// with `<CRLF>`, a line `.` ends the content, and a line that starts with a dot loses that dot.
/// The content and the length of the input it took, or `None` if the input has no end line.
fn content_model(data: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut content = Vec::new();
    let mut start = 0;
    loop {
        let line = &data[start..];
        if line.starts_with(b".\r\n") {
            return Some((content, start + 3));
        }
        let len = line.windows(2).position(|pair| pair == b"\r\n")? + 2;
        let line = &line[..len];
        content.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        start += len;
    }
}

/// What a client sends for `content` (smtplib's way): `<CRLF>` added at the end if it is not
/// there, a dot added before every line that starts with one, and the end line `.`.
fn stuff(content: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut content = content.to_vec();
    if !content.ends_with(b"\r\n") {
        content.extend_from_slice(b"\r\n");
    }
    let mut sent = Vec::with_capacity(content.len() + 8);
    let mut line_start = true;
    for (i, &byte) in content.iter().enumerate() {
        if line_start && byte == b'.' {
            sent.push(b'.');
        }
        sent.push(byte);
        line_start = byte == b'\n' && i > 0 && content[i - 1] == b'\r';
    }
    sent.extend_from_slice(b".\r\n");
    (sent, content)
}

/// `smtp_data`: the DATA content reader, over the bytes of a peer cut anywhere; in one mode
/// they are any bytes, checked against [`content_model`], message after message; in the other
/// they are a message dot-stuffed by [`stuff`], which must come back whole, ending exactly at
/// the end line.
pub(crate) fn data(fuzz: &[u8]) {
    let mut input = Input::new(fuzz);
    let settings = input.byte();
    let max_size = match settings & 0x7f {
        0 => usize::MAX,
        size => usize::from(size),
    };
    if settings & 0x80 != 0 {
        let cuts = input.cuts();
        let (sent, content) = stuff(input.rest());
        let chunks = Chunks::new(&sent, &cuts);
        let mut reader = MessageReader::new(max_size);
        let mut offset = 0;
        for chunk in chunks.iter() {
            if let Some(end) = reader.feed(chunk) {
                assert_eq!(offset + end, sent.len(), "the end of {sent:?}");
                let expected = if content.len() > max_size {
                    Err(TooBig)
                } else {
                    Ok(content)
                };
                assert_eq!(reader.take_message(), expected, "{sent:?}");
                return;
            }
            offset += chunk.len();
        }
        panic!("no end found in {sent:?}");
    }

    let chunks = input.chunks();
    let stream = chunks.data;
    let mut reader = MessageReader::new(max_size);
    // Where the current message started in the stream.
    let mut start = 0;
    let mut offset = 0;
    for chunk in chunks.iter() {
        let mut chunk = chunk;
        while let Some(end) = reader.feed(chunk) {
            let (content, len) = content_model(&stream[start..]).expect("an end, as the model");
            assert_eq!(
                offset + end,
                start + len,
                "the end of {:?}",
                &stream[start..]
            );
            let expected = if content.len() > max_size {
                Err(TooBig)
            } else {
                Ok(content)
            };
            assert_eq!(reader.take_message(), expected, "{:?}", &stream[start..]);
            // The reader starts afresh: the next message follows.
            start += len;
            offset += end;
            chunk = &chunk[end..];
        }
        offset += chunk.len();
    }
    assert_eq!(
        content_model(&stream[start..]),
        None,
        "an end the reader missed"
    );
}

/// What a connection reads: lines, then after a `DATA` line the content of a message, then
/// lines again.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Line(Bytes),
    TooLong,
    Message(Result<Vec<u8>, TooBig>),
}

/// The parsing side of a connection, as `session.rs` and `data.rs` put the parsers together: a
/// [`CommandLines`] codec for the commands, and from a `DATA` line on a [`MessageReader`] over
/// the bytes after it (what the codec's buffer held first, as a switch hands them on), until the
/// end line hands what follows back to the same codec. (`STARTTLS`
/// drops what follows it in the same read, by design: it is a command like another here.)
struct Connection<'s> {
    stream: &'s [u8],
    max_size: usize,
    lines: CommandLines,
    /// What the codec has not decoded yet.
    buffer: BytesMut,
    /// The message being read, and where it started in the stream.
    message: Option<(MessageReader, usize)>,
    events: Vec<Event>,
    /// Where the next chunk starts in the stream.
    offset: usize,
    /// Where the last message ended (or the stream starts): lines start there too.
    boundary: usize,
}

impl Connection<'_> {
    fn receive(&mut self, chunk: &[u8]) {
        let chunk_start = self.offset;
        self.offset += chunk.len();
        let mut input = Bytes::copy_from_slice(chunk);
        loop {
            // Where `input` starts in the stream.
            let at = chunk_start + chunk.len() - input.len();
            if let Some((reader, start)) = &mut self.message {
                let Some(end) = reader.feed(&input) else {
                    return;
                };
                let (content, len) =
                    content_model(&self.stream[*start..]).expect("an end, as the model");
                assert_eq!(at + end, *start + len, "the end of the message");
                let expected = if content.len() > self.max_size {
                    Err(TooBig)
                } else {
                    Ok(content)
                };
                let message = reader.take_message();
                assert_eq!(message, expected);
                self.events.push(Event::Message(message));
                self.message = None;
                self.boundary = at + end;
                input = input.slice(end..);
                continue;
            }
            self.buffer.extend_from_slice(&input);
            input = Bytes::new();
            let Some(line) = self.lines.decode(&mut self.buffer).expect("no error") else {
                assert!(self.buffer.len() < MAX_LINE, "a line kept over the limit");
                return;
            };
            match line {
                Line::Complete(line) => {
                    // The line is the bytes before its line ending (`\n`, or `\r\n`), from
                    // the start of the stream, the end of a message or a line feed.
                    let after = self.offset - self.buffer.len();
                    let raw = self.stream[..after]
                        .strip_suffix(b"\n")
                        .expect("a line ending");
                    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
                    assert!(
                        raw.ends_with(&line),
                        "{line:?} is not the bytes before its end"
                    );
                    let start = raw.len() - line.len();
                    assert!(
                        start == self.boundary
                            || (start > self.boundary && self.stream[start - 1] == b'\n'),
                        "{line:?} does not start a line"
                    );
                    assert!(!line.contains(&b'\n'), "{line:?} holds a line feed");
                    assert!(after - start <= MAX_LINE, "a line over the limit");
                    if parse(&line) == Ok(Command::Data) {
                        self.message = Some((MessageReader::new(self.max_size), after));
                        self.boundary = after;
                        // The switch to the DATA phase hands it what the codec holds.
                        input = self.buffer.split().freeze();
                    }
                    self.events.push(Event::Line(line));
                }
                Line::TooLong => self.events.push(Event::TooLong),
            }
        }
    }
}

/// `smtp_session`: a connection's bytes cut anywhere read as the session reads them: the same
/// lines, commands and messages as the bytes read whole, each line exactly the bytes before its
/// ending, each message as [`content_model`] reads it from right after its `DATA` line.
pub(crate) fn session(fuzz: &[u8]) {
    let mut input = Input::new(fuzz);
    let max_size = usize::from(input.byte()).max(1) * 4;
    let chunks = input.chunks();
    let connection = |stream| Connection {
        stream,
        max_size,
        lines: CommandLines::default(),
        buffer: BytesMut::new(),
        message: None,
        events: Vec::new(),
        offset: 0,
        boundary: 0,
    };
    let mut cut = connection(chunks.data);
    chunks.iter().for_each(|chunk| cut.receive(chunk));
    let mut whole = connection(chunks.data);
    whole.receive(chunks.data);
    assert_eq!(cut.events, whole.events, "cut against whole");
}
