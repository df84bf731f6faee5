//! [`SubprocessCore`]: the decisions of a subprocess transport's supervisor, with no I/O.
//!
//! A subprocess transport is a supervisor over a child process and one stream transport per
//! piped standard stream (each a [`StreamCore`](crate::StreamCore) of its own, write-only for
//! stdin, read-only for stdout and stderr). What the pipes promise, they promise themselves;
//! what is left to the supervisor is guarantee 12's ordering across them, decided here:
//!
//! * **No pipe delivers before the protocol is attached.** Each pipe's acknowledgement of its
//!   own `ConnectionMade` comes to the supervisor ([`pipe_opened`](SubprocessCore::pipe_opened)),
//!   which holds it until the protocol acknowledged the subprocess's `ConnectionMade`
//!   ([`ack`](SubprocessCore::ack) gives them back to release).
//! * **`ProcessExited` once**, when the exit status is collected
//!   ([`handle_exited`](SubprocessCore::handle_exited)), whatever the pipes are doing: a child
//!   may exit before its output is read, a grandchild may hold a pipe open long after.
//! * **`ConnectionLost` once, last**: the supervisor ends once the child exited *and* every pipe
//!   closed ([`take_release`](SubprocessCore::take_release)).
//! * **No signal after the status was collected** ([`is_collected`](SubprocessCore::is_collected)),
//!   since the pid may be another process's by then.
//! * **`Close`** closes every pipe and kills the child if it has not exited
//!   ([`close`](SubprocessCore::close)); so does the protocol's death.
//!
//! Its drivers: the subprocess actor of `switchboard-transports` (a real child and real pipes)
//! and the subprocess mock of `switchboard-framework`'s `testing` module (a scripted child, and
//! scripted pipes on stream cores).

use std::{mem, process::ExitStatus};

/// The child's standard streams a subprocess transport can pipe: fds 0, 1 and 2.
pub const STANDARD_STREAMS: usize = 3;

/// What the driver must do on `Close` (or when the protocol died), once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Closing {
    /// Whether the child is to be killed: it has not exited, as far as the core knows (a driver
    /// that can check first, and finds it exited, tells [`SubprocessCore::handle_exited`]
    /// instead, as asyncio does not kill a finished process).
    pub kill: bool,
}

/// The decisions of a subprocess transport's supervisor; see the [module docs](self).
///
/// `T` is what a pipe's held acknowledgement is (the actors' `Ack`): the core only keeps it and
/// gives it back.
pub struct SubprocessCore<T> {
    /// Per fd 0, 1 and 2: whether it has a pipe that has not closed.
    open: [bool; STANDARD_STREAMS],
    /// Whether the protocol acknowledged its `ConnectionMade`.
    attached: bool,
    /// The pipes' acknowledgements held until then.
    held: Vec<T>,
    status: Option<ExitStatus>,
    closing: bool,
    /// Whether the end was reported.
    released: bool,
}

impl<T> SubprocessCore<T> {
    /// A supervisor for a child whose fds 0, 1 and 2 are piped as `piped` says. The protocol's
    /// `ConnectionMade` is the driver's first delivery; nothing is attached until its
    /// acknowledgement.
    pub fn new(piped: [bool; STANDARD_STREAMS]) -> Self {
        SubprocessCore {
            open: piped,
            attached: false,
            held: Vec::new(),
            status: None,
            closing: false,
            released: false,
        }
    }

    // ---- getters ----

    /// Whether the protocol acknowledged its `ConnectionMade`, so the pipes may deliver.
    pub fn is_attached(&self) -> bool {
        self.attached
    }

    /// Whether `Close` was handled (or the protocol died).
    pub fn is_closing(&self) -> bool {
        self.closing
    }

    /// The exit status, once collected.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Whether the exit status was collected: the pid may belong to another process by now, so
    /// no signal may be sent to it.
    pub fn is_collected(&self) -> bool {
        self.status.is_some()
    }

    /// Whether the pipe of fd `fd` exists and has not closed.
    pub fn is_pipe_open(&self, fd: usize) -> bool {
        self.open.get(fd).copied().unwrap_or(false)
    }

    /// Whether any pipe has not closed.
    pub fn has_open_pipes(&self) -> bool {
        self.open.iter().any(|open| *open)
    }

    // ---- inputs ----

    /// The protocol acknowledged its `ConnectionMade`: the pipes may deliver. Returns the
    /// pipes' acknowledgements held until now, to release.
    pub fn ack(&mut self) -> Vec<T> {
        self.attached = true;
        mem::take(&mut self.held)
    }

    /// A pipe delivered its own `ConnectionMade`, whose acknowledgement is `ack`: held until the
    /// protocol is attached, or given back to release at once if it is.
    pub fn pipe_opened(&mut self, ack: T) -> Option<T> {
        if self.attached {
            Some(ack)
        } else {
            self.held.push(ack);
            None
        }
    }

    /// The pipe of fd `fd` closed (its `PipeConnectionLost` was delivered), or stopped
    /// answering for the protocol (it was switched to another one).
    pub fn pipe_closed(&mut self, fd: usize) {
        if let Some(open) = self.open.get_mut(fd) {
            *open = false;
        }
    }

    /// The child exited and its status was collected. Whether this is the first time, so the
    /// driver delivers `ProcessExited`.
    pub fn handle_exited(&mut self, status: ExitStatus) -> bool {
        if self.status.is_some() {
            return false;
        }
        self.status = Some(status);
        true
    }

    /// `Close`: the first time, what to do (close every pipe, kill the child unless it exited);
    /// `None` after.
    pub fn close(&mut self) -> Option<Closing> {
        if mem::replace(&mut self.closing, true) {
            return None;
        }
        Some(Closing {
            kill: self.status.is_none(),
        })
    }

    /// The protocol actor stopped: the transport closes, as [`close`](Self::close) says.
    pub fn handle_protocol_gone(&mut self) -> Option<Closing> {
        self.close()
    }

    // ---- outputs ----

    /// Whether the transport ends now: the child exited and every pipe closed. `true` once;
    /// the driver then stops and sends `ConnectionLost`, last.
    pub fn take_release(&mut self) -> bool {
        if self.released || self.status.is_none() || self.has_open_pipes() {
            return false;
        }
        self.released = true;
        true
    }

    /// The driver stopped: the acknowledgements still held, to drop.
    pub fn stopped(&mut self) -> Vec<T> {
        self.released = true;
        mem::take(&mut self.held)
    }
}

impl<T> std::fmt::Debug for SubprocessCore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubprocessCore")
            .field("open", &self.open)
            .field("attached", &self.attached)
            .field("held", &self.held.len())
            .field("status", &self.status)
            .field("closing", &self.closing)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    fn exit(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn pipes_are_held_until_the_protocol_is_attached() {
        let mut core = SubprocessCore::new([true; 3]);
        assert_eq!(core.pipe_opened("stdin"), None);
        assert_eq!(core.pipe_opened("stdout"), None);
        assert!(!core.is_attached());
        assert_eq!(core.ack(), ["stdin", "stdout"]);
        assert_eq!(
            core.pipe_opened("stderr"),
            Some("stderr"),
            "released at once once attached"
        );
        assert!(core.ack().is_empty());
    }

    /// Guarantee 12: `ConnectionLost` once, after the exit and every pipe's close, in every
    /// order the four can come in; `ProcessExited` once.
    #[test]
    fn the_end_comes_once_after_the_exit_and_every_pipe_in_every_order() {
        // Each step: 0..3 closes that pipe, 3 is the exit.
        let mut orders: Vec<Vec<usize>> = vec![vec![]];
        for _ in 0..4 {
            orders = orders
                .iter()
                .flat_map(|order| {
                    (0..4)
                        .filter(move |step| !order.contains(step))
                        .map(move |step| [&order[..], &[step]].concat())
                })
                .collect();
        }
        assert_eq!(orders.len(), 24);
        for order in orders {
            let mut core = SubprocessCore::<()>::new([true; 3]);
            core.ack();
            let mut exited = 0;
            for (i, &step) in order.iter().enumerate() {
                if step == 3 {
                    exited += usize::from(core.handle_exited(exit(0)));
                    assert!(!core.handle_exited(exit(1)), "ProcessExited once");
                } else {
                    core.pipe_closed(step);
                }
                let last = i == order.len() - 1;
                assert_eq!(core.take_release(), last, "order {order:?}, step {i}");
            }
            assert_eq!(exited, 1);
            assert!(!core.take_release(), "once: {order:?}");
            assert_eq!(core.status(), Some(exit(0)), "the first status stays");
        }
    }

    #[test]
    fn missing_pipes_do_not_hold_the_end() {
        let mut core = SubprocessCore::<()>::new([false, true, false]);
        assert!(!core.is_pipe_open(0) && core.is_pipe_open(1) && !core.is_pipe_open(7));
        core.handle_exited(exit(3));
        assert!(!core.take_release(), "stdout is open");
        core.pipe_closed(1);
        core.pipe_closed(9); // no such pipe: nothing happens
        assert!(core.take_release());
    }

    #[test]
    fn close_kills_a_running_child_once_and_signals_stop_at_the_exit() {
        let mut core = SubprocessCore::<()>::new([true; 3]);
        assert!(!core.is_collected());
        assert_eq!(core.close(), Some(Closing { kill: true }));
        assert_eq!(core.close(), None, "idempotent");
        assert_eq!(core.handle_protocol_gone(), None);
        assert!(core.is_closing());
        core.handle_exited(ExitStatus::from_raw(9));
        assert!(core.is_collected());

        let mut core = SubprocessCore::<()>::new([true; 3]);
        core.handle_exited(exit(0));
        assert_eq!(
            core.handle_protocol_gone(),
            Some(Closing { kill: false }),
            "an exited child is not killed"
        );
    }
}
