//! What the datagram and subprocess mocks share: the state their actor and the test both see,
//! the notification of its changes, and the waits built on them (the stream mock has its own
//! copy of the same, older than these).

use std::{
    fmt,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;

use super::mock::IDLE_TURNS;

/// A mock's state, as its waits need to see it.
pub(super) trait Scripted {
    /// Whether the protocol is idle as far as this state tells: every delivery acknowledged, or
    /// the transport ended.
    fn is_settled(&self) -> bool;

    /// What a timed-out wait reports.
    fn describe(&self) -> String;
}

/// The state of one mock, shared by its actor and the test.
pub(super) struct Shared<S> {
    state: Mutex<S>,
    changed: Notify,
    /// Counts every change, so a settle can tell whether anything moved.
    progress: AtomicU64,
}

impl<S: Scripted> Shared<S> {
    pub(super) fn new(state: S) -> Self {
        Shared {
            state: Mutex::new(state),
            changed: Notify::new(),
            progress: AtomicU64::new(0),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, S> {
        // A test that panicked while holding the lock has already failed; its state is still
        // the best account of what happened.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The actor changed something: wakes the waits.
    pub(super) fn changed(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_waiters();
    }

    pub(super) fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    /// Waits until `ready` holds; fails the test after `timeout`, saying what it waited for.
    pub(super) async fn wait(
        &self,
        mock: &str,
        timeout: Duration,
        what: &str,
        ready: impl FnMut(&S) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        self.wait_until(mock, (deadline, timeout), what, ready)
            .await;
    }

    async fn wait_until(
        &self,
        mock: &str,
        (deadline, timeout): (tokio::time::Instant, Duration),
        what: &str,
        mut ready: impl FnMut(&S) -> bool,
    ) {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if ready(&self.lock()) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!(
                    "{mock}: timed out after {timeout:?} waiting for {what}; {}",
                    self.lock().describe()
                );
            }
        }
    }

    /// Resolves once the state is settled and nothing moved for a few scheduler turns (as
    /// the stream mock's `settle`), or fails the test after `timeout`.
    pub(super) async fn settle(&self, mock: &str, timeout: Duration) {
        let deadline = (tokio::time::Instant::now() + timeout, timeout);
        'settling: loop {
            self.wait_until(mock, deadline, "the protocol to become idle", S::is_settled)
                .await;
            let before = self.progress();
            for _ in 0..IDLE_TURNS {
                tokio::task::yield_now().await;
                if self.progress() != before {
                    continue 'settling;
                }
            }
            return;
        }
    }
}

impl<S: Scripted> fmt::Debug for Shared<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lock().describe())
    }
}
