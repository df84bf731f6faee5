//! The content of `DATA`, as bytes: the dot-stuffing removed and the end found (RFC 5321
//! §4.5.2, §3.3). No I/O here, so the fuzz targets under `fuzz/` drive the same code.

/// Where the decoder is, relative to the lines of the content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (and of the content).
    LineStart,
    /// After a `.` at the start of a line.
    Dot,
    /// After `.<CR>` at the start of a line.
    DotCr,
    /// Inside a line.
    Middle,
    /// After a `<CR>` inside a line.
    Cr,
}

/// The message was larger than the limit; its content was read to the end and dropped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TooBig;

/// Decodes the content of `DATA`: removes the dot-stuffing and finds the end, the line `.`.
///
/// Lines end with `<CRLF>` only. A bare `<LF>` or `<CR>` is content like any other byte, so a
/// `<LF>.<LF>` does not end the message: no client can smuggle a second message past a server
/// that reads the end differently.
#[derive(Debug)]
pub(crate) struct MessageReader {
    state: State,
    message: Vec<u8>,
    /// Bytes of content so far, kept or not.
    size: usize,
    max_size: usize,
}

impl MessageReader {
    /// A reader that keeps at most `max_size` bytes of content.
    pub(crate) fn new(max_size: usize) -> Self {
        MessageReader {
            state: State::LineStart,
            message: Vec::new(),
            size: 0,
            max_size,
        }
    }

    /// Reads `input`. Once it holds the end of the content, returns how many bytes of it the
    /// content took: what follows is no longer the message.
    pub(crate) fn feed(&mut self, input: &[u8]) -> Option<usize> {
        let mut at = 0;
        while at < input.len() {
            let byte = input[at];
            match self.state {
                State::Middle => {
                    // Everything up to the next CR is content.
                    let rest = &input[at..];
                    let end = rest.iter().position(|&byte| byte == b'\r');
                    let take = end.map_or(rest.len(), |cr| cr + 1);
                    self.keep(&rest[..take]);
                    if end.is_some() {
                        self.state = State::Cr;
                    }
                    at += take;
                    continue;
                }
                State::LineStart | State::Cr if byte == b'\r' => {
                    self.keep(b"\r");
                    self.state = State::Cr;
                }
                State::Cr if byte == b'\n' => {
                    self.keep(b"\n");
                    self.state = State::LineStart;
                }
                State::LineStart if byte == b'.' => self.state = State::Dot,
                State::LineStart | State::Cr => {
                    self.keep(&[byte]);
                    self.state = State::Middle;
                }
                State::Dot if byte == b'\r' => self.state = State::DotCr,
                State::Dot => {
                    // A line that starts with a dot and goes on: the first dot was stuffing.
                    self.keep(&[byte]);
                    self.state = State::Middle;
                }
                State::DotCr if byte == b'\n' => {
                    self.state = State::LineStart;
                    return Some(at + 1);
                }
                State::DotCr => {
                    // `.<CR>` and more: the dot was stuffing, the CR is content, and this byte
                    // is read again after it.
                    self.keep(b"\r");
                    self.state = State::Cr;
                    continue;
                }
            }
            at += 1;
        }
        None
    }

    fn keep(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len());
        if self.size <= self.max_size {
            self.message.extend_from_slice(bytes);
        } else {
            // Over the limit: what was kept goes, and nothing more is.
            self.message = Vec::new();
        }
    }

    /// The message, once [`feed`](Self::feed) found its end.
    pub(crate) fn take_message(&mut self) -> Result<Vec<u8>, TooBig> {
        let size = std::mem::take(&mut self.size);
        let message = std::mem::take(&mut self.message);
        if size > self.max_size {
            Err(TooBig)
        } else {
            Ok(message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in chunks of `size`; the message and the bytes after its end.
    fn read(input: &[u8], size: usize, max_size: usize) -> (Result<Vec<u8>, TooBig>, Vec<u8>) {
        let mut reader = MessageReader::new(max_size);
        let mut offset = 0;
        for chunk in input.chunks(size) {
            if let Some(end) = reader.feed(chunk) {
                let rest = input[offset + end..].to_vec();
                return (reader.take_message(), rest);
            }
            offset += chunk.len();
        }
        panic!("no end in {:?}", String::from_utf8_lossy(input));
    }

    /// `read` with every chunk size from 1 to the whole input, which must all agree.
    #[track_caller]
    fn assert_reads(input: &[u8], message: &[u8], rest: &[u8]) {
        for size in 1..=input.len() {
            let (got, got_rest) = read(input, size, 1024);
            assert_eq!(
                got.as_deref().map(String::from_utf8_lossy),
                Ok(String::from_utf8_lossy(message)),
                "chunks of {size}"
            );
            assert_eq!(got_rest, rest, "chunks of {size}");
        }
    }

    #[test]
    fn content_ends_at_the_line_with_a_single_dot() {
        assert_reads(b".\r\n", b"", b"");
        assert_reads(
            b"Subject: t\r\n\r\nbody\r\n.\r\nQUIT\r\n",
            b"Subject: t\r\n\r\nbody\r\n",
            b"QUIT\r\n",
        );
    }

    #[test]
    fn a_leading_dot_is_unstuffed() {
        assert_reads(b"..\r\n...x\r\n.a.\r\n.\r\n", b".\r\n..x\r\na.\r\n", b"");
        assert_reads(b"a\r\n.\rb\r\n.\r\n", b"a\r\n\rb\r\n", b"");
        assert_reads(b".\r\r\n.\r\n", b"\r\r\n", b"");
    }

    #[test]
    fn only_crlf_dot_crlf_ends_the_content() {
        assert_reads(
            b"a\n.\nb\r.\rc.\r\n .\r\n.\n.\r\n.\r\nX",
            b"a\n.\nb\r.\rc.\r\n .\r\n\n.\r\n",
            b"X",
        );
    }

    #[test]
    fn eight_bit_and_nul_bytes_are_content() {
        assert_reads(
            b"caf\xc3\xa9 \xff\x00\r\n.\r\n",
            b"caf\xc3\xa9 \xff\x00\r\n",
            b"",
        );
    }

    #[test]
    fn a_message_over_the_limit_is_read_to_its_end_and_dropped() {
        let input = b"0123456789\r\n..x\r\n.\r\nNOOP\r\n";
        // The unstuffed content is 16 bytes.
        for size in [1, 5, input.len()] {
            let (message, rest) = read(input, size, 16);
            assert_eq!(message, Ok(b"0123456789\r\n.x\r\n".to_vec()));
            assert_eq!(rest, b"NOOP\r\n");
            let (message, rest) = read(input, size, 15);
            assert_eq!(message, Err(TooBig));
            assert_eq!(rest, b"NOOP\r\n");
        }
    }

    #[test]
    fn a_reader_starts_afresh_after_take() {
        let mut reader = MessageReader::new(8);
        assert_eq!(reader.feed(b"123456789\r\n.\r\n"), Some(14));
        assert_eq!(reader.take_message(), Err(TooBig));
        assert_eq!(reader.feed(b"ok\r\n.\r\n"), Some(7));
        assert_eq!(reader.take_message(), Ok(b"ok\r\n".to_vec()));
    }
}
