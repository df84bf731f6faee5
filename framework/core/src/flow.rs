//! Write flow control: the write-buffer limits and the one watermark rule every transport
//! shares.

use std::{io, time::Duration};

use crate::error::InvalidWriteBufferLimits;

/// The default high-water mark of a transport's write buffer: 64 KiB, as in asyncio.
pub const DEFAULT_HIGH_WATER_MARK: usize = 64 * 1024;

/// The default low-water mark: a quarter of the high-water mark, as in asyncio.
pub const DEFAULT_LOW_WATER_MARK: usize = DEFAULT_HIGH_WATER_MARK / 4;

/// The default high-water mark of a TLS transport's write buffer: 512 KiB, as asyncio's SSL
/// transports. A TLS record holds up to 16 KiB and the library encrypts what it is given in
/// batches, so a TLS connection pausing at a TCP connection's 64 KiB would stop and start its
/// writer eight times as often for the same stream.
pub const DEFAULT_TLS_HIGH_WATER_MARK: usize = 512 * 1024;

/// The default low-water mark of a TLS transport: a quarter of its high-water mark, 128 KiB.
pub const DEFAULT_TLS_LOW_WATER_MARK: usize = DEFAULT_TLS_HIGH_WATER_MARK / 4;

/// The default maximum of a transport's write buffer: 4 MiB. Past it the transport aborts the
/// connection, and `ConnectionLost` carries [`WriteError::BufferFull`](crate::WriteError).
///
/// The high-water mark bounds what a protocol that does not handle write flow can make the
/// write buffer hold: above it the transport delivers nothing more until the buffer drains.
/// What one delivery makes the protocol write is still unbounded, since it may answer each of
/// many pipelined requests in a 256 KiB chunk; the maximum bounds that, and what a protocol that
/// handles write flow writes past `PauseWriting`. 4 MiB is eight times the TLS high-water mark
/// and sixty-four times the TCP one, so no protocol that heeds `PauseWriting` comes near it;
/// with the read-buffer limit it makes a connection's worst case about 4.25 MiB. The book's
/// chapter "What a connection can cost" gives the measurements.
pub const DEFAULT_MAX_WRITE_BUFFER: usize = 4 * 1024 * 1024;

/// Refuses a maximum write buffer below the high-water mark it must stand above (the transport
/// would abort before it paused anyone) with `InvalidInput`.
pub fn check_max_write_buffer(max: usize, high: usize) -> io::Result<usize> {
    if max < high {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a maximum write buffer of {max} bytes is below the high-water mark ({high} bytes)"
            ),
        ));
    }
    Ok(max)
}

/// Refuses a zero timeout, which would end every connection at once, with `InvalidInput`;
/// `what` names the setting in the error.
pub fn check_timeout(what: &str, timeout: Option<Duration>) -> io::Result<Option<Duration>> {
    if timeout == Some(Duration::ZERO) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a {what} of zero would end every connection at once"),
        ));
    }
    Ok(timeout)
}

/// What the protocol attached now handles, among the events a transport may not send to every
/// protocol, and which change what the transport does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Handles {
    /// It handles `PauseWriting` and `ResumeWriting`: the transport goes on delivering while
    /// its write buffer is above the high-water mark (up to the maximum). Otherwise it stops
    /// delivering, and reading, until the buffer drains to the low-water mark.
    pub write_flow: bool,
    /// It handles `TimedOut`: a timeout tells it first, and ends the connection only if it runs
    /// out a second time. Otherwise the timeout ends the connection at once.
    pub timeouts: bool,
}

/// The high- and low-water marks of a transport's write buffer.
///
/// The transport sends `PauseWriting` when its buffer grows past `high`
/// (strictly greater) and `ResumeWriting` when it drains to `low` or below.
/// Bytes the socket accepts at once are never buffered, so they never pause anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteBufferLimits {
    high: usize,
    low: usize,
}

impl WriteBufferLimits {
    /// Limits with these marks; `low > high` is an error.
    pub fn new(high: usize, low: usize) -> Result<Self, InvalidWriteBufferLimits> {
        if low > high {
            return Err(InvalidWriteBufferLimits { high, low });
        }
        Ok(WriteBufferLimits { high, low })
    }

    /// Limits derived as asyncio's `set_write_buffer_limits(high, low)` derives them: a missing
    /// `high` is 64 KiB, or `4 * low` when only `low` is given; a missing `low` is `high / 4`.
    pub fn from_options(
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<Self, InvalidWriteBufferLimits> {
        WriteBufferLimits::default().with_options(high, low)
    }

    /// Limits derived from `high` and `low` as [`from_options`](Self::from_options) derives
    /// them, with this kind's default high-water mark where both are missing (asyncio's SSL
    /// transports use their own 512 KiB there).
    pub fn with_options(
        self,
        high: Option<usize>,
        low: Option<usize>,
    ) -> Result<Self, InvalidWriteBufferLimits> {
        let high = high.unwrap_or_else(|| match low {
            Some(low) => low.saturating_mul(4),
            None => self.high,
        });
        let low = low.unwrap_or(high / 4);
        WriteBufferLimits::new(high, low)
    }

    /// The default limits of a TLS transport: [`DEFAULT_TLS_HIGH_WATER_MARK`] and
    /// [`DEFAULT_TLS_LOW_WATER_MARK`].
    pub fn tls() -> Self {
        WriteBufferLimits {
            high: DEFAULT_TLS_HIGH_WATER_MARK,
            low: DEFAULT_TLS_LOW_WATER_MARK,
        }
    }

    /// The high-water mark.
    pub fn high(&self) -> usize {
        self.high
    }

    /// The low-water mark.
    pub fn low(&self) -> usize {
        self.low
    }

    /// `(low, high)`, the order asyncio's `get_write_buffer_limits` returns.
    pub fn as_tuple(&self) -> (usize, usize) {
        (self.low, self.high)
    }
}

impl Default for WriteBufferLimits {
    fn default() -> Self {
        WriteBufferLimits {
            high: DEFAULT_HIGH_WATER_MARK,
            low: DEFAULT_LOW_WATER_MARK,
        }
    }
}

/// An edge the protocol must be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowEdge {
    /// The buffer went over the high-water mark: send `PauseWriting`.
    Pause,
    /// The buffer drained to the low-water mark: send `ResumeWriting`.
    Resume,
}

/// The write-buffer accounting every transport shares: the size, the limits, the paused flag.
///
/// One function ([`check`](Self::check)) decides both edges with one comparison each (`> high`
/// pauses, `<= low` resumes), and the paused flag makes them strictly alternate. Call it after
/// anything that changes the size or the limits.
#[derive(Debug, Clone, Default)]
pub struct WriteFlow {
    limits: WriteBufferLimits,
    size: usize,
    peak: usize,
    paused: bool,
    /// The I/O object said it is full itself (see [`set_full`](Self::set_full)).
    full: bool,
}

impl WriteFlow {
    /// Accounting that starts empty, with these limits.
    pub fn new(limits: WriteBufferLimits) -> Self {
        WriteFlow {
            limits,
            ..WriteFlow::default()
        }
    }

    /// Counts `n` more buffered bytes.
    pub fn add(&mut self, n: usize) {
        self.size += n;
        self.peak = self.peak.max(self.size);
    }

    /// Counts `n` bytes that left the buffer.
    pub fn remove(&mut self, n: usize) {
        debug_assert!(n <= self.size, "removing more than was buffered");
        self.size -= n.min(self.size);
    }

    /// Forgets the whole buffer (abort). No edge follows: `ConnectionLost` is the only signal.
    pub fn clear(&mut self) {
        self.size = 0;
    }

    /// Bytes buffered now.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The largest size seen.
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// The limits in force.
    pub fn limits(&self) -> WriteBufferLimits {
        self.limits
    }

    /// Changes the limits; call [`check`](Self::check) afterwards, since either edge may now be due.
    pub fn set_limits(&mut self, limits: WriteBufferLimits) {
        self.limits = limits;
    }

    /// Whether the protocol was last told to pause.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Counts the buffer as over its high-water mark whatever its size, while `full`: for an
    /// I/O object whose own buffer is full although this one holds little (the scripted peer of
    /// the mock transport that stopped reading). It lasts until `set_full(false)`, whatever the
    /// limits. Call [`check`](Self::check) afterwards.
    pub fn set_full(&mut self, full: bool) {
        self.full = full;
    }

    /// The edge now due, if any, recorded as delivered.
    pub fn check(&mut self) -> Option<FlowEdge> {
        if !self.paused && (self.size > self.limits.high || self.full) {
            self.paused = true;
            Some(FlowEdge::Pause)
        } else if self.paused && self.size <= self.limits.low && !self.full {
            self.paused = false;
            Some(FlowEdge::Resume)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_asyncio_derivation() {
        let limits = |high, low| WriteBufferLimits::from_options(high, low).map(|l| l.as_tuple());
        assert_eq!(limits(None, None), Ok((16384, 65536)));
        assert_eq!(limits(Some(100), None), Ok((25, 100)));
        assert_eq!(limits(None, Some(100)), Ok((100, 400)));
        assert_eq!(limits(Some(0), None), Ok((0, 0)));
        assert_eq!(
            limits(Some(10), Some(20)),
            Err(InvalidWriteBufferLimits { high: 10, low: 20 })
        );
    }

    #[test]
    fn edges_alternate_and_use_strict_high_and_inclusive_low() {
        let mut flow = WriteFlow::new(WriteBufferLimits::new(100, 25).unwrap());
        flow.add(100);
        assert_eq!(flow.check(), None, "a buffer equal to high does not pause");
        flow.add(1);
        assert_eq!(flow.check(), Some(FlowEdge::Pause));
        flow.add(1000);
        assert_eq!(flow.check(), None, "no second pause");
        flow.remove(1075);
        assert_eq!(flow.check(), None, "26 bytes is above low");
        flow.remove(1);
        assert_eq!(flow.check(), Some(FlowEdge::Resume));
        assert_eq!(flow.check(), None, "no second resume");
        assert_eq!(flow.peak(), 1101);
    }

    #[test]
    fn changing_limits_re_evaluates_both_edges() {
        let mut flow = WriteFlow::new(WriteBufferLimits::default());
        flow.add(1000);
        assert_eq!(flow.check(), None);
        flow.set_limits(WriteBufferLimits::new(500, 100).unwrap());
        assert_eq!(flow.check(), Some(FlowEdge::Pause));
        flow.set_limits(WriteBufferLimits::new(4000, 1000).unwrap());
        assert_eq!(
            flow.check(),
            Some(FlowEdge::Resume),
            "raising the limits resumes (asyncio#329 does not)"
        );
    }

    #[test]
    fn every_sequence_of_adds_and_removes_returns_to_zero_and_alternates() {
        // A deterministic pseudo-random walk (xorshift), checked against a model.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut flow = WriteFlow::new(WriteBufferLimits::new(300, 100).unwrap());
        let mut model = 0usize;
        let mut last_edge = FlowEdge::Resume;
        for _ in 0..10_000 {
            if next() % 2 == 0 {
                let n = (next() % 200) as usize;
                flow.add(n);
                model += n;
            } else {
                let n = (next() % 200) as usize % (model + 1);
                flow.remove(n);
                model -= n;
            }
            assert_eq!(flow.size(), model);
            if let Some(edge) = flow.check() {
                assert_ne!(edge, last_edge, "edges must alternate");
                last_edge = edge;
            }
            assert_eq!(flow.is_paused(), last_edge == FlowEdge::Pause);
        }
        flow.remove(model);
        assert_eq!(flow.size(), 0);
    }
}
