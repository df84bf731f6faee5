//! Write flow control: the write-buffer limits, the one watermark rule every transport shares,
//! and the ledger that gives each acknowledged write exactly one outcome.

use std::{cell::Cell, collections::VecDeque, fmt, io, rc::Rc};

use actix::{Actor, Message, dev::MessageResponse, dev::OneshotSender};

use crate::error::{InvalidWriteBufferLimits, WriteError, duplicate_error};

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

/// The high- and low-water marks of a transport's write buffer.
///
/// The transport sends [`PauseWriting`](crate::PauseWriting) when its buffer grows past `high`
/// (strictly greater) and [`ResumeWriting`](crate::ResumeWriting) when it drains to `low` or below.
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
    /// The buffer went over the high-water mark: send [`PauseWriting`](crate::PauseWriting).
    Pause,
    /// The buffer drained to the low-water mark: send [`ResumeWriting`](crate::ResumeWriting).
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

    /// The edge now due, if any, recorded as delivered.
    pub fn check(&mut self) -> Option<FlowEdge> {
        if !self.paused && self.size > self.limits.high {
            self.paused = true;
            Some(FlowEdge::Pause)
        } else if self.paused && self.size <= self.limits.low {
            self.paused = false;
            Some(FlowEdge::Resume)
        } else {
            None
        }
    }
}

/// Gives each acknowledged write exactly one outcome.
///
/// A transport counts every byte it accepts ([`accept`](Self::accept) returns the write's end
/// offset) and every byte the kernel takes ([`written`](Self::written)). A write is done when the
/// written count reaches its end offset; [`fail`](Self::fail) resolves everything still pending.
/// The ledger is shared (cheaply, on the transport's thread) with the [`WriteReceipt`]s the
/// transport's `Write` handler returns, which register a waiter only when the sender asked for a
/// reply, so fire-and-forget writes cost nothing here.
#[derive(Clone, Default)]
pub struct WriteLedger {
    inner: Rc<LedgerState>,
}

/// Every transport allocates one, so it is kept to 72 bytes with the reference counts (an
/// 80-byte malloc chunk, where a `RefCell` around it would take 96): plain `Cell`s, the values
/// that are not `Copy` taken out while they are used.
#[derive(Default)]
struct LedgerState {
    accepted: Cell<u64>,
    written: Cell<u64>,
    failure: Cell<Option<io::Error>>,
    waiters: Cell<VecDeque<(u64, OneshotSender<io::Result<()>>)>>,
}

impl WriteLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        WriteLedger::default()
    }

    /// Counts `n` accepted bytes and returns a receipt that resolves once they are written.
    pub fn accept(&self, n: usize) -> WriteReceipt {
        let end = self.inner.accepted.get() + n as u64;
        self.inner.accepted.set(end);
        WriteReceipt(Receipt::Pending {
            end,
            ledger: self.clone(),
        })
    }

    /// Counts `n` bytes taken by the kernel and resolves every write they complete.
    pub fn written(&self, n: usize) {
        let written = self.inner.written.get() + n as u64;
        self.inner.written.set(written);
        let mut waiters = self.inner.waiters.take();
        while waiters.front().is_some_and(|(end, _)| *end <= written) {
            if let Some((_, tx)) = waiters.pop_front() {
                let _ = tx.send(Ok(()));
            }
        }
        self.inner.waiters.set(waiters);
    }

    /// Fails every write not yet written, and every one registered later, with `err`.
    pub fn fail(&self, err: &io::Error) {
        let mut waiters = self.inner.waiters.take();
        for (_, tx) in waiters.drain(..) {
            let _ = tx.send(Err(duplicate_error(err)));
        }
        self.inner.waiters.set(waiters);
        let failure = self.inner.failure.take();
        self.inner
            .failure
            .set(Some(failure.unwrap_or_else(|| duplicate_error(err))));
    }

    /// Bytes accepted so far.
    pub fn accepted(&self) -> u64 {
        self.inner.accepted.get()
    }

    /// Bytes written so far.
    pub fn written_total(&self) -> u64 {
        self.inner.written.get()
    }

    fn register(&self, end: u64, tx: OneshotSender<io::Result<()>>) {
        let failure = self.inner.failure.take();
        if end <= self.inner.written.get() {
            let _ = tx.send(Ok(()));
        } else if let Some(err) = &failure {
            let _ = tx.send(Err(duplicate_error(err)));
        } else {
            let mut waiters = self.inner.waiters.take();
            waiters.push_back((end, tx));
            self.inner.waiters.set(waiters);
        }
        self.inner.failure.set(failure);
    }
}

impl fmt::Debug for WriteLedger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failure = self.inner.failure.take();
        let waiters = self.inner.waiters.take();
        let result = f
            .debug_struct("WriteLedger")
            .field("accepted", &self.accepted())
            .field("written", &self.written_total())
            .field("failed", &failure.is_some())
            .field("waiters", &waiters.len())
            .finish();
        self.inner.failure.set(failure);
        self.inner.waiters.set(waiters);
        result
    }
}

/// What a transport's `Write`, `WriteVectored` and `WriteEof` handlers return: the reply to an
/// acknowledged write, sent when the bytes reach the kernel or the write fails.
///
/// With `do_send` nothing is registered and nothing is allocated.
#[derive(Debug)]
pub struct WriteReceipt(Receipt);

#[derive(Debug)]
enum Receipt {
    Ready(io::Result<()>),
    Pending { end: u64, ledger: WriteLedger },
}

impl WriteReceipt {
    /// A receipt whose outcome is already known (a refused write, or an empty one).
    pub fn ready(result: io::Result<()>) -> Self {
        WriteReceipt(Receipt::Ready(result))
    }

    /// A receipt for a refused write.
    pub fn refused(err: WriteError) -> Self {
        WriteReceipt::ready(Err(err.into()))
    }
}

impl<A, M> MessageResponse<A, M> for WriteReceipt
where
    A: Actor,
    M: Message<Result = io::Result<()>>,
{
    fn handle(self, _: &mut A::Context, tx: Option<OneshotSender<io::Result<()>>>) {
        let Some(tx) = tx else { return };
        match self.0 {
            Receipt::Ready(result) => {
                let _ = tx.send(result);
            }
            Receipt::Pending { end, ledger } => ledger.register(end, tx),
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

    #[test]
    fn ledger_resolves_each_write_once_in_order() {
        let ledger = WriteLedger::new();
        let (tx1, mut rx1) = tokio::sync::oneshot::channel();
        let (tx2, mut rx2) = tokio::sync::oneshot::channel();
        let (tx3, mut rx3) = tokio::sync::oneshot::channel();
        let Receipt::Pending { end: end1, .. } = ledger.accept(10).0 else {
            panic!("pending")
        };
        let Receipt::Pending { end: end2, .. } = ledger.accept(5).0 else {
            panic!("pending")
        };
        ledger.register(end1, tx1);
        ledger.register(end2, tx2);
        ledger.written(9);
        assert!(rx1.try_recv().is_err(), "not yet written");
        ledger.written(1);
        assert!(rx1.try_recv().unwrap().is_ok());
        assert!(rx2.try_recv().is_err());
        ledger.fail(&WriteError::Aborted.into());
        let err = rx2.try_recv().unwrap().unwrap_err();
        assert_eq!(WriteError::of(&err), Some(WriteError::Aborted));
        // A write registered after the failure fails too; one already written succeeds.
        let Receipt::Pending { end: end3, .. } = ledger.accept(1).0 else {
            panic!("pending")
        };
        ledger.register(end3, tx3);
        assert!(rx3.try_recv().unwrap().is_err());
        let (tx4, mut rx4) = tokio::sync::oneshot::channel();
        ledger.register(end1, tx4);
        assert!(rx4.try_recv().unwrap().is_ok());
    }
}
