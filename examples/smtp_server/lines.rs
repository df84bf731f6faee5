//! The command stream's codec: lines, with a bound on how much of a line is ever kept.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// The longest command line, `<CRLF>` included (RFC 5321 §4.5.3.1.4).
pub(crate) const MAX_LINE: usize = 512;

/// One line of the command stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A whole line, without its line ending (`<CRLF>`, or a bare `<LF>`, which clients such as
    /// `openssl s_client` send without `-crlf`).
    Complete(Bytes),
    /// A line longer than [`MAX_LINE`]: reported once, as soon as it is known to be too long;
    /// the rest of it, up to its line ending, is discarded as it arrives.
    TooLong,
}

/// Decodes the command stream into [`Line`]s. The bytes after a line stay in the buffer: the
/// start of a message pipelined behind `DATA`, say, which a switch hands on. What is kept of a
/// line not ended yet is never more than [`MAX_LINE`] bytes.
#[derive(Debug, Default)]
pub(crate) struct CommandLines {
    /// In the middle of a line already reported [`Line::TooLong`].
    discarding: bool,
}

impl Decoder for CommandLines {
    type Item = Line;
    type Error = io::Error;

    fn decode(&mut self, buffer: &mut BytesMut) -> io::Result<Option<Line>> {
        let newline = buffer.iter().position(|&byte| byte == b'\n');
        if self.discarding {
            // The rest of a line already answered: dropped up to its end.
            let Some(newline) = newline else {
                buffer.clear();
                return Ok(None);
            };
            buffer.advance(newline + 1);
            self.discarding = false;
            return self.decode(buffer);
        }
        match newline {
            Some(newline) if newline < MAX_LINE => {
                let mut line = buffer.split_to(newline + 1).freeze();
                line.truncate(newline);
                if line.ends_with(b"\r") {
                    line.truncate(newline - 1);
                }
                Ok(Some(Line::Complete(line)))
            }
            Some(newline) => {
                buffer.advance(newline + 1);
                Ok(Some(Line::TooLong))
            }
            // Even a line ending in the next byte would be too long.
            None if buffer.len() >= MAX_LINE => {
                buffer.clear();
                self.discarding = true;
                Ok(Some(Line::TooLong))
            }
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` one after the other into one buffer, as a transport delivers them; every
    /// line, and the buffer left.
    fn lines(codec: &mut CommandLines, chunks: &[&[u8]]) -> (Vec<Line>, BytesMut) {
        let mut buffer = BytesMut::new();
        let mut lines = Vec::new();
        for chunk in chunks {
            buffer.extend_from_slice(chunk);
            while let Some(line) = codec.decode(&mut buffer).unwrap() {
                lines.push(line);
            }
            assert!(buffer.len() < MAX_LINE);
        }
        (lines, buffer)
    }

    fn complete(text: &str) -> Line {
        Line::Complete(Bytes::copy_from_slice(text.as_bytes()))
    }

    #[test]
    fn lines_end_with_crlf_or_a_bare_lf_and_may_span_chunks() {
        let mut codec = CommandLines::default();
        let (got, left) = lines(
            &mut codec,
            &[b"EHLO a\r\nNO", b"OP\r", b"\nQUIT\n", b"\r\n", b"RS"],
        );
        assert_eq!(
            got,
            [
                complete("EHLO a"),
                complete("NOOP"),
                complete("QUIT"),
                complete("")
            ]
        );
        assert_eq!(&left[..], b"RS");
    }

    #[test]
    fn the_bytes_after_a_line_stay_in_the_buffer() {
        let mut codec = CommandLines::default();
        let mut buffer = BytesMut::from(&b"DATA\r\nSubject: x\r\n"[..]);
        assert_eq!(codec.decode(&mut buffer).unwrap(), Some(complete("DATA")));
        assert_eq!(&buffer[..], b"Subject: x\r\n");
    }

    #[test]
    fn a_line_of_512_octets_is_fine_and_one_more_is_too_long() {
        let longest = format!("{}\r\n", "a".repeat(MAX_LINE - 2));
        let mut codec = CommandLines::default();
        let (got, _) = lines(&mut codec, &[longest.as_bytes()]);
        assert_eq!(got, [complete(&"a".repeat(MAX_LINE - 2))]);

        let too_long = format!("{}\r\nNOOP\r\n", "a".repeat(MAX_LINE - 1));
        let (got, _) = lines(&mut codec, &[too_long.as_bytes()]);
        assert_eq!(got, [Line::TooLong, complete("NOOP")]);
    }

    #[test]
    fn a_long_line_is_reported_once_and_skipped_to_its_end() {
        let mut codec = CommandLines::default();
        let chunk = vec![b'x'; 300];
        let (got, _) = lines(
            &mut codec,
            &[&chunk, &chunk, &chunk, b"xx\r\nNOOP\r\n", b"QUIT\r\n"],
        );
        assert_eq!(got, [Line::TooLong, complete("NOOP"), complete("QUIT")]);
    }

    #[test]
    fn an_endless_line_never_grows_the_buffer() {
        let mut codec = CommandLines::default();
        let chunk = vec![b'x'; 64 * 1024];
        let mut buffer = BytesMut::new();
        let mut reported = 0;
        for _ in 0..1600 {
            // 100 MiB in all.
            buffer.extend_from_slice(&chunk);
            while let Some(line) = codec.decode(&mut buffer).unwrap() {
                assert_eq!(line, Line::TooLong);
                reported += 1;
            }
            assert!(buffer.is_empty());
        }
        assert_eq!(reported, 1);
        assert_eq!(lines(&mut codec, &[b"\nNOOP\r\n"]).0, [complete("NOOP")]);
    }
}
