//! The death pact: a transport ends when its protocol actor stops.
//!
//! actix gives no notification when an actor stops; its address only reports
//! `connected() == false` from then on. A transport checks that whenever it wakes up, which
//! covers busy connections. For idle ones, one sweep per arbiter thread checks every watched
//! protocol every [`PROTOCOL_WATCH_INTERVAL`] and wakes the transports whose protocol is gone.
//! Every transport uses it: stream transports, datagram endpoints, subprocess transports and the
//! test-util mock, whatever kind of protocol handle each one watches ([`Watchable`]).
//!
//! Hand-written because nothing in actix or tokio watches an actor's liveness; one shared sweep
//! costs a few nanoseconds per connection per interval and no timer per connection, which
//! matters when a server holds tens of thousands of idle connections.

use std::{
    any::Any,
    cell::{Cell, Ref, RefCell},
    fmt,
    future::poll_fn,
    rc::{Rc, Weak},
    sync::atomic::{AtomicUsize, Ordering},
    task::{Context as TaskContext, Poll, Waker},
    time::Duration,
};

use crate::{DatagramProtocolHandle, ProtocolHandle, SubprocessProtocolHandle};

/// How often idle transports check that their protocol actor is still running: a transport
/// whose protocol stopped notices it at its next wake-up, and within this interval when idle.
pub const PROTOCOL_WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// A handle to an actor a transport watches for its death: [`ProtocolHandle`],
/// [`DatagramProtocolHandle`] and [`SubprocessProtocolHandle`] are.
pub trait Watchable: 'static {
    /// Whether the actor is still running. The sweep asks it while it holds the thread's list
    /// of watches: it must not create a [`ProtocolWatch`].
    fn is_alive(&self) -> bool;
}

impl Watchable for ProtocolHandle {
    fn is_alive(&self) -> bool {
        ProtocolHandle::is_alive(self)
    }
}

impl Watchable for DatagramProtocolHandle {
    fn is_alive(&self) -> bool {
        DatagramProtocolHandle::is_alive(self)
    }
}

impl Watchable for SubprocessProtocolHandle {
    fn is_alive(&self) -> bool {
        SubprocessProtocolHandle::is_alive(self)
    }
}

/// A transport's current protocol, watched for death: the transport keeps its protocol handle
/// here, and [`poll_gone`](Self::poll_gone) tells it once the protocol actor has stopped.
///
/// For transport implementers. One allocation per transport, and no timer: the thread's sweep
/// holds a weak reference to it.
pub struct ProtocolWatch<H>(Rc<Watched<H>>);

/// One allocation per connection, kept to 40 bytes for a [`ProtocolHandle`] (64 with the
/// reference counts and malloc's header): the waker sits in a `Cell`, taken out to be used, and
/// the sweep wakes a transport once by taking its waker; a transport whose protocol is gone
/// registers none again.
struct Watched<H> {
    protocol: RefCell<H>,
    waker: Cell<Option<Waker>>,
}

/// The watched protocols of one kind of handle on this thread: a thin weak reference each.
struct Entries<H>(Vec<Weak<Watched<H>>>);

/// What the sweep needs of a thread's list of one kind of handle.
trait Sweep {
    /// Wakes the transports whose protocol is gone and forgets the watches that were dropped;
    /// whether any watch is left.
    fn sweep(&mut self) -> bool;

    fn as_any(&mut self) -> &mut dyn Any;
}

impl<H: Watchable> Sweep for Entries<H> {
    fn sweep(&mut self) -> bool {
        self.0.retain(|entry| {
            let Some(watched) = entry.upgrade() else {
                return false;
            };
            if !watched.protocol.borrow().is_alive()
                && let Some(waker) = watched.waker.take()
            {
                waker.wake();
            }
            true
        });
        !self.0.is_empty()
    }

    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}

#[derive(Default)]
struct Watchlist {
    /// One list per kind of handle watched on this thread (a few at most).
    kinds: Vec<Box<dyn Sweep>>,
    sweeping: bool,
}

impl Watchlist {
    fn entries<H: Watchable>(&mut self) -> &mut Vec<Weak<Watched<H>>> {
        let index = match self
            .kinds
            .iter_mut()
            .position(|kind| kind.as_any().is::<Entries<H>>())
        {
            Some(index) => index,
            None => {
                self.kinds.push(Box::new(Entries::<H>(Vec::new())));
                self.kinds.len() - 1
            }
        };
        match self.kinds[index].as_any().downcast_mut::<Entries<H>>() {
            Some(entries) => &mut entries.0,
            None => unreachable!("found by its type"),
        }
    }
}

thread_local! {
    static WATCHLIST: RefCell<Watchlist> = RefCell::new(Watchlist::default());
}

/// Sweep tasks running, across all threads.
static SWEEPS: AtomicUsize = AtomicUsize::new(0);

/// The number of protocol-watch sweep tasks running in this process: one per arbiter thread
/// that has transports (or test-util mocks), none once they are all gone (within one
/// [`PROTOCOL_WATCH_INTERVAL`]). For leak checks.
pub fn protocol_watch_sweeps() -> usize {
    SWEEPS.load(Ordering::Relaxed)
}

impl<H: Watchable> ProtocolWatch<H> {
    /// Watches `protocol`, starting the thread's sweep if it is not running.
    ///
    /// # Panics
    ///
    /// Outside an actix arbiter (the sweep is a task on it).
    pub fn new(protocol: H) -> Self {
        let watched = Rc::new(Watched {
            protocol: RefCell::new(protocol),
            waker: Cell::new(None),
        });
        WATCHLIST.with(|list| {
            let mut list = list.borrow_mut();
            list.entries::<H>().push(Rc::downgrade(&watched));
            if !list.sweeping {
                list.sweeping = true;
                SWEEPS.fetch_add(1, Ordering::Relaxed);
                actix::spawn(sweep());
            }
        });
        ProtocolWatch(watched)
    }

    /// The protocol delivered to now.
    pub fn protocol(&self) -> Ref<'_, H> {
        self.0.protocol.borrow()
    }

    /// Switches to another protocol; returns the previous one. Only the current protocol's
    /// death counts.
    pub fn replace(&self, protocol: H) -> H {
        self.0.protocol.replace(protocol)
    }

    /// Ready once the protocol actor has stopped; until then, records the task to wake when the
    /// sweep finds it gone. Once ready, no task is recorded any more: the sweep wakes a
    /// transport once.
    pub fn poll_gone(&self, cx: &mut TaskContext<'_>) -> Poll<()> {
        if !self.0.protocol.borrow().is_alive() {
            return Poll::Ready(());
        }
        let known = self.0.waker.take();
        let waker = match known {
            Some(known) if known.will_wake(cx.waker()) => known,
            _ => cx.waker().clone(),
        };
        self.0.waker.set(Some(waker));
        Poll::Pending
    }

    /// Resolves once the protocol actor has stopped: [`poll_gone`](Self::poll_gone) as a future,
    /// for an actor with no driver of its own to poll it from.
    pub async fn gone(&self) {
        poll_fn(|cx| self.poll_gone(cx)).await;
    }
}

impl<H: Watchable + fmt::Debug> fmt::Debug for ProtocolWatch<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ProtocolWatch")
            .field(&*self.0.protocol.borrow())
            .finish()
    }
}

/// Ends a sweep's bookkeeping however the sweep ends: its loop finds the list empty, or its
/// runtime drops it mid-sleep. The second happens when an actix `System` stops while transports
/// live on its thread and another `System` runs on the same thread later: without the reset,
/// the thread's list would stay marked as swept and no idle transport there would ever notice
/// its protocol's death again.
struct SweepRunning;

impl Drop for SweepRunning {
    fn drop(&mut self) {
        SWEEPS.fetch_sub(1, Ordering::Relaxed);
        // The thread may be exiting (its locals gone), or a list borrow may be live in a frame
        // this drop interrupts; in both cases there is no later sweep to enable.
        let _ = WATCHLIST.try_with(|list| {
            if let Ok(mut list) = list.try_borrow_mut() {
                list.sweeping = false;
            }
        });
    }
}

async fn sweep() {
    let _running = SweepRunning;
    loop {
        actix::clock::sleep(PROTOCOL_WATCH_INTERVAL).await;
        let more = WATCHLIST.with(|list| {
            let mut list = list.borrow_mut();
            list.kinds.retain_mut(|kind| kind.sweep());
            list.sweeping = !list.kinds.is_empty();
            list.sweeping
        });
        if !more {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watched_stream_protocol_costs_one_small_allocation() {
        assert!(std::mem::size_of::<Watched<ProtocolHandle>>() <= 40);
        assert_eq!(
            std::mem::size_of::<ProtocolWatch<ProtocolHandle>>(),
            std::mem::size_of::<usize>()
        );
        assert_eq!(
            std::mem::size_of::<Weak<Watched<ProtocolHandle>>>(),
            std::mem::size_of::<usize>(),
            "the sweep's list holds a thin pointer per connection"
        );
    }
}
