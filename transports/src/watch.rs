//! The death pact: a transport aborts when its protocol actor stops.
//!
//! actix gives no notification when an actor stops; its address only reports
//! `connected() == false` from then on. A transport checks that before every delivery, which
//! covers busy connections. For idle ones, one sweep per arbiter thread checks every watched
//! protocol every [`PROTOCOL_WATCH_INTERVAL`] and wakes the transports whose protocol is gone.
//! Hand-written because nothing in actix or tokio watches an actor's liveness; one shared sweep
//! costs a few nanoseconds per connection per interval and no timer per connection, which
//! matters when a server holds tens of thousands of idle connections.

use std::{
    cell::{Cell, Ref, RefCell},
    rc::{Rc, Weak},
    sync::atomic::{AtomicUsize, Ordering},
    task::Waker,
    time::Duration,
};

use switchboard_framework::ProtocolHandle;

/// How often idle transports check that their protocol actor is still running.
pub const PROTOCOL_WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// A transport's current protocol, watched for death.
pub(crate) struct ProtocolWatch(Rc<Watched>);

/// One allocation per connection, kept to 40 bytes (64 with the reference counts and malloc's
/// header): the waker sits in a `Cell`, taken out to be used, and the sweep wakes a transport
/// once by taking its waker; a transport whose protocol is gone registers none again.
struct Watched {
    protocol: RefCell<ProtocolHandle>,
    waker: Cell<Option<Waker>>,
}

#[derive(Default)]
struct Watchlist {
    entries: Vec<Weak<Watched>>,
    sweeping: bool,
}

thread_local! {
    static WATCHLIST: RefCell<Watchlist> = RefCell::new(Watchlist::default());
}

/// Sweep tasks running, across all threads.
static SWEEPS: AtomicUsize = AtomicUsize::new(0);

/// The number of protocol-watch sweep tasks running in this process: one per arbiter thread
/// that has transports, none once they are all gone (within one interval). For leak checks.
pub fn protocol_watch_sweeps() -> usize {
    SWEEPS.load(Ordering::Relaxed)
}

impl ProtocolWatch {
    /// Watches `protocol`; must be called on an actix arbiter.
    pub(crate) fn new(protocol: ProtocolHandle) -> Self {
        let watched = Rc::new(Watched {
            protocol: RefCell::new(protocol),
            waker: Cell::new(None),
        });
        WATCHLIST.with(|list| {
            let mut list = list.borrow_mut();
            list.entries.push(Rc::downgrade(&watched));
            if !list.sweeping {
                list.sweeping = true;
                SWEEPS.fetch_add(1, Ordering::Relaxed);
                actix_rt::spawn(sweep());
            }
        });
        ProtocolWatch(watched)
    }

    /// The protocol delivered to now.
    pub(crate) fn protocol(&self) -> Ref<'_, ProtocolHandle> {
        self.0.protocol.borrow()
    }

    /// Switches to another protocol; returns the previous one.
    pub(crate) fn replace(&self, protocol: ProtocolHandle) -> ProtocolHandle {
        self.0.protocol.replace(protocol)
    }

    /// Records the task to wake when the protocol is found gone. Call it only while the
    /// protocol is alive, so that the sweep wakes the transport once.
    pub(crate) fn set_waker(&self, waker: &Waker) {
        let known = self.0.waker.take();
        let waker = match known {
            Some(known) if known.will_wake(waker) => known,
            _ => waker.clone(),
        };
        self.0.waker.set(Some(waker));
    }

    /// Whether the protocol actor has stopped.
    pub(crate) fn protocol_gone(&self) -> bool {
        !self.0.protocol.borrow().is_alive()
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
        actix_rt::time::sleep(PROTOCOL_WATCH_INTERVAL).await;
        let more = WATCHLIST.with(|list| {
            let mut list = list.borrow_mut();
            list.entries.retain(|entry| {
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
            list.sweeping = !list.entries.is_empty();
            list.sweeping
        });
        if !more {
            break;
        }
    }
}
