//! Splits the command stream into lines, with a bound on how much of a line is ever kept.

use bytes::{Bytes, BytesMut};

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

/// What is kept of the command stream between two chunks: the start of a line not ended yet,
/// never more than [`MAX_LINE`] bytes.
#[derive(Debug, Default)]
pub(crate) struct LineReader {
    partial: BytesMut,
    /// In the middle of a line already reported [`Line::TooLong`].
    discarding: bool,
}

impl LineReader {
    /// The next line, taken from the front of `input`; `None` once `input` holds no more whole
    /// line, and then the start of the next one is kept here. So after a `Complete` line,
    /// `input` holds exactly the bytes that follow it.
    pub(crate) fn next_line(&mut self, input: &mut Bytes) -> Option<Line> {
        loop {
            if input.is_empty() {
                return None;
            }
            let Some(newline) = input.iter().position(|&byte| byte == b'\n') else {
                if self.discarding {
                    input.clear();
                    return None;
                }
                // Even a line ending in the next byte would be too long.
                if self.partial.len() + input.len() >= MAX_LINE {
                    return Some(self.too_long(input));
                }
                self.partial.extend_from_slice(input);
                input.clear();
                return None;
            };
            let end = input.split_to(newline + 1);
            if self.discarding {
                // The end of a line already answered.
                self.discarding = false;
                continue;
            }
            if self.partial.len() + end.len() > MAX_LINE {
                self.partial.clear();
                return Some(Line::TooLong);
            }
            let mut line = if self.partial.is_empty() {
                end
            } else {
                self.partial.extend_from_slice(&end);
                self.partial.split().freeze()
            };
            line.truncate(line.len() - 1);
            if line.ends_with(b"\r") {
                line.truncate(line.len() - 1);
            }
            return Some(Line::Complete(line));
        }
    }

    /// Whether a line has begun and not ended: bytes of it were kept, or it is being
    /// discarded.
    pub(crate) fn in_line(&self) -> bool {
        !self.partial.is_empty() || self.discarding
    }

    fn too_long(&mut self, input: &mut Bytes) -> Line {
        self.partial = BytesMut::new();
        input.clear();
        self.discarding = true;
        Line::TooLong
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` one after the other; every line, and what is left of the last chunk.
    fn lines(reader: &mut LineReader, chunks: &[&[u8]]) -> Vec<Line> {
        let mut lines = Vec::new();
        for chunk in chunks {
            let mut input = Bytes::copy_from_slice(chunk);
            while let Some(line) = reader.next_line(&mut input) {
                lines.push(line);
            }
            assert!(input.is_empty());
        }
        lines
    }

    fn complete(text: &str) -> Line {
        Line::Complete(Bytes::copy_from_slice(text.as_bytes()))
    }

    #[test]
    fn lines_end_with_crlf_or_a_bare_lf_and_may_span_chunks() {
        let mut reader = LineReader::default();
        let got = lines(
            &mut reader,
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
        assert_eq!(&reader.partial[..], b"RS");
    }

    #[test]
    fn the_bytes_after_a_line_stay_in_the_input() {
        let mut reader = LineReader::default();
        let mut input = Bytes::from_static(b"DATA\r\nSubject: x\r\n");
        assert_eq!(reader.next_line(&mut input), Some(complete("DATA")));
        assert_eq!(&input[..], b"Subject: x\r\n");
    }

    #[test]
    fn a_line_of_512_octets_is_fine_and_one_more_is_too_long() {
        let longest = format!("{}\r\n", "a".repeat(MAX_LINE - 2));
        let mut reader = LineReader::default();
        let got = lines(&mut reader, &[longest.as_bytes()]);
        assert_eq!(got, [complete(&"a".repeat(MAX_LINE - 2))]);

        let too_long = format!("{}\r\nNOOP\r\n", "a".repeat(MAX_LINE - 1));
        let got = lines(&mut reader, &[too_long.as_bytes()]);
        assert_eq!(got, [Line::TooLong, complete("NOOP")]);
    }

    #[test]
    fn a_long_line_is_reported_once_and_skipped_to_its_end() {
        let mut reader = LineReader::default();
        let chunk = vec![b'x'; 300];
        let got = lines(
            &mut reader,
            &[&chunk, &chunk, &chunk, b"xx\r\nNOOP\r\n", b"QUIT\r\n"],
        );
        assert_eq!(got, [Line::TooLong, complete("NOOP"), complete("QUIT")]);
    }

    #[test]
    fn an_endless_line_never_grows_the_buffer() {
        let mut reader = LineReader::default();
        let chunk = vec![b'x'; 64 * 1024];
        let mut reported = 0;
        for _ in 0..1600 {
            // 100 MiB in all.
            let mut input = Bytes::from(chunk.clone());
            while let Some(line) = reader.next_line(&mut input) {
                assert_eq!(line, Line::TooLong);
                reported += 1;
            }
            assert!(reader.partial.capacity() <= MAX_LINE);
        }
        assert_eq!(reported, 1);
        assert_eq!(lines(&mut reader, &[b"\nNOOP\r\n"]), [complete("NOOP")]);
    }
}
