//! The ledger that gives each acknowledged write exactly one outcome.

use std::{cell::Cell, collections::VecDeque, fmt, io, rc::Rc};

/// Someone waiting for the outcome of a write (or of a `WriteEof`): a reply channel in the
/// actors, a recorder in the tests.
///
/// The core calls [`resolve`](Self::resolve) exactly once per waiter, with `Ok` once the bytes
/// reached the kernel (or the write side was shut down) and with the error that ended the
/// connection otherwise. The error is lent: `io::Error` is not `Clone`, and how to copy one for
/// each waiter (keeping its typed source) is the vocabulary's business, not the core's.
pub trait Waiter {
    /// Delivers the outcome.
    fn resolve(self, result: Result<(), &io::Error>);

    /// Copies an error for a second recipient (`io::Error` is not `Clone`), keeping what the
    /// waiters' side can tell of it: by default its kind, its message, its OS error code and a
    /// [`WriteError`](crate::WriteError) source.
    fn duplicate(err: &io::Error) -> io::Error
    where
        Self: Sized,
    {
        crate::error::copy_error(err)
    }
}

/// Gives each acknowledged write exactly one outcome.
///
/// A transport counts every byte it accepts ([`accept`](Self::accept) returns a [`Ticket`] with
/// the write's end offset) and every byte the kernel takes ([`written`](Self::written)). A write
/// is done when the written count reaches its end offset; [`fail`](Self::fail) resolves
/// everything still pending, and every waiter registered later, with the error.
///
/// The ledger is shared (cheaply, on the transport's thread) with the tickets, because a waiter
/// is registered after the write was handled, and only when its sender asked for a reply: a
/// fire-and-forget write costs nothing here.
pub struct WriteLedger<W> {
    inner: Rc<LedgerState<W>>,
}

/// Every transport allocates one, so it is kept small (72 bytes with the reference counts, an
/// 80-byte malloc chunk, where a `RefCell` around it would take 96): plain `Cell`s, the values
/// that are not `Copy` taken out while they are used.
struct LedgerState<W> {
    accepted: Cell<u64>,
    written: Cell<u64>,
    failure: Cell<Option<io::Error>>,
    waiters: Cell<VecDeque<(u64, W)>>,
}

impl<W> Clone for WriteLedger<W> {
    fn clone(&self) -> Self {
        WriteLedger {
            inner: self.inner.clone(),
        }
    }
}

impl<W> Default for WriteLedger<W> {
    fn default() -> Self {
        WriteLedger {
            inner: Rc::new(LedgerState {
                accepted: Cell::new(0),
                written: Cell::new(0),
                failure: Cell::new(None),
                waiters: Cell::new(VecDeque::new()),
            }),
        }
    }
}

impl<W: Waiter> WriteLedger<W> {
    /// An empty ledger.
    pub fn new() -> Self {
        WriteLedger::default()
    }

    /// Counts `n` accepted bytes and returns the ticket that registers a waiter for them.
    pub fn accept(&self, n: usize) -> Ticket<W> {
        let end = self.inner.accepted.get() + n as u64;
        self.inner.accepted.set(end);
        Ticket {
            end,
            ledger: self.clone(),
        }
    }

    /// Counts `n` bytes taken by the kernel and resolves every write they complete.
    pub fn written(&self, n: usize) {
        let written = self.inner.written.get() + n as u64;
        self.inner.written.set(written);
        let mut waiters = self.inner.waiters.take();
        while waiters.front().is_some_and(|(end, _)| *end <= written) {
            if let Some((_, waiter)) = waiters.pop_front() {
                waiter.resolve(Ok(()));
            }
        }
        self.inner.waiters.set(waiters);
    }

    /// Fails every write not yet written, and every one registered later, with `err` (the first
    /// failure is kept; a later one changes nothing).
    pub fn fail(&self, err: io::Error) {
        let failure = self.inner.failure.take().unwrap_or(err);
        let mut waiters = self.inner.waiters.take();
        for (_, waiter) in waiters.drain(..) {
            waiter.resolve(Err(&failure));
        }
        self.inner.waiters.set(waiters);
        self.inner.failure.set(Some(failure));
    }

    /// Bytes accepted so far.
    pub fn accepted(&self) -> u64 {
        self.inner.accepted.get()
    }

    /// Bytes written so far.
    pub fn written_total(&self) -> u64 {
        self.inner.written.get()
    }

    /// Whether the ledger has failed.
    pub fn has_failed(&self) -> bool {
        let failure = self.inner.failure.take();
        let failed = failure.is_some();
        self.inner.failure.set(failure);
        failed
    }

    fn register(&self, end: u64, waiter: W) {
        let failure = self.inner.failure.take();
        if end <= self.inner.written.get() {
            waiter.resolve(Ok(()));
        } else if let Some(err) = &failure {
            waiter.resolve(Err(err));
        } else {
            let mut waiters = self.inner.waiters.take();
            waiters.push_back((end, waiter));
            self.inner.waiters.set(waiters);
        }
        self.inner.failure.set(failure);
    }
}

impl<W> fmt::Debug for WriteLedger<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failure = self.inner.failure.take();
        let waiters = self.inner.waiters.take();
        let result = f
            .debug_struct("WriteLedger")
            .field("accepted", &self.inner.accepted.get())
            .field("written", &self.inner.written.get())
            .field("failed", &failure.is_some())
            .field("waiters", &waiters.len())
            .finish();
        self.inner.failure.set(failure);
        self.inner.waiters.set(waiters);
        result
    }
}

/// One accepted write: its end offset in the ledger, and the way to wait for its outcome.
pub struct Ticket<W> {
    end: u64,
    ledger: WriteLedger<W>,
}

impl<W: Waiter> Ticket<W> {
    /// Where the write ends in the stream of accepted bytes.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Waits for the write's outcome: `waiter` is resolved at once if it is known, or when it
    /// is.
    pub fn register(self, waiter: W) {
        self.ledger.register(self.end, waiter);
    }
}

impl<W> fmt::Debug for Ticket<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket").field("end", &self.end).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, rc::Rc};

    use super::*;
    use crate::WriteError;

    /// A waiter's name and the kind of its error, if it failed.
    type Outcome = (&'static str, Option<io::ErrorKind>);

    /// Records each outcome under its name.
    #[derive(Clone, Default)]
    struct Outcomes(Rc<RefCell<Vec<Outcome>>>);

    struct Named(&'static str, Outcomes);

    impl Waiter for Named {
        fn resolve(self, result: Result<(), &io::Error>) {
            self.1
                .0
                .borrow_mut()
                .push((self.0, result.err().map(io::Error::kind)));
        }
    }

    impl Outcomes {
        fn take(&self) -> Vec<Outcome> {
            std::mem::take(&mut self.0.borrow_mut())
        }
    }

    #[test]
    fn ledger_resolves_each_write_once_in_order() {
        let outcomes = Outcomes::default();
        let ledger = WriteLedger::new();
        let first = ledger.accept(10);
        let second = ledger.accept(5);
        assert_eq!((first.end(), second.end()), (10, 15));
        first.register(Named("first", outcomes.clone()));
        second.register(Named("second", outcomes.clone()));
        ledger.written(9);
        assert_eq!(outcomes.take(), [], "not yet written");
        ledger.written(1);
        assert_eq!(outcomes.take(), [("first", None)]);
        ledger.fail(WriteError::Aborted.into());
        assert_eq!(
            outcomes.take(),
            [("second", Some(io::ErrorKind::ConnectionAborted))]
        );
        // A later failure does not replace the first.
        ledger.fail(io::ErrorKind::BrokenPipe.into());
        // A write registered after the failure fails too, with the first error; one already
        // written succeeds.
        ledger.accept(1).register(Named("third", outcomes.clone()));
        let early = Ticket {
            end: 10,
            ledger: ledger.clone(),
        };
        early.register(Named("early", outcomes.clone()));
        assert_eq!(
            outcomes.take(),
            [
                ("third", Some(io::ErrorKind::ConnectionAborted)),
                ("early", None)
            ]
        );
        assert!(ledger.has_failed());
    }
}
