//! The datagram core under seeded random interleavings: a driver, its protocols and its socket
//! do everything they can to a [`DatagramCore`](switchboard_core::DatagramCore), in random
//! orders, and the guarantees of a datagram endpoint (DESIGN.md 1, 4 with its window of N, 5, 6,
//! 8 and 13) are checked after every step.
//!
//! It is the stream checker (`tests/interleavings.rs`) for the other core, and shares its runner
//! (`support/runner.rs`: the seed, the extra shrinking pass, the report, the count of executed
//! steps, a step's encoding as two numbers); the generator is `support/datagram_step.rs` and the
//! driver with its model `support/datagram.rs`.
//!
//! # What it generates
//!
//! A case is a fresh core with random
//! [`DatagramSettings`](switchboard_core::datagram::DatagramSettings) (a read window of 1..=8,
//! datagrams of at most 1..=32 bytes, watermarks 0..=48, a close timeout of 0..=800 ms), then up
//! to [`MAX_STEPS`] weighted steps (most cases are calm and run long, a few are hasty and end
//! soon):
//!
//! * the protocol's commands: `send` of 0..=24 bytes to one of four addresses — when the core
//!   says `Outbound::Direct` the socket takes it (`handle_sent_direct`), would block (the driver
//!   `enqueue`s it) or refuses it (the core hears nothing), and a recording waiter is registered
//!   on most tickets of queued ones — `close`, `abort`, `pause_reading`, `resume_reading`,
//!   `set_write_buffer_limits` (invalid ones too), `set_protocol`, acknowledgements of any
//!   outstanding delivery (a previous protocol's too) and stale or repeated ones, the protocol
//!   actor's death;
//! * the socket's inputs: `handle_received` of datagrams of 0..=max bytes from varying
//!   addresses, never more than `receive_room()`; send attempts, each `handle_sent(Ok)` or
//!   `handle_sent(Err)` for some datagrams from the front of the queue and then
//!   `handle_send_attempted()`; a fatal `handle_error`;
//! * time: `now` moves on, then `poll_timeout(now)` and `handle_timeout(now)`.
//!
//! After every step the checker drives the core as the datagram actor does: it polls every event
//! and delivers it to the model protocol attached now, calls `poll_timeout(now)`, and takes the
//! release; after a release it calls `stopped()` once, sends `ConnectionLost`, and the case ends.
//! A case whose steps run out ends with `stopped()` all the same, without a release, as an actor
//! its system stopped.
//!
//! # What it checks
//!
//! After every step (`support/datagram.rs` names each invariant in its failure message):
//!
//! * the window: a datagram is delivered only while fewer than `read_window` deliveries
//!   (`ConnectionMade` and datagrams, of any protocol) are un-acknowledged, so at most
//!   `read_window` datagrams are ever out, and `receive_room()` is exactly the room left — none
//!   before the current protocol acknowledged its `ConnectionMade`, while paused or closing
//!   (only a switch's `ConnectionMade` may take the count past the window: it cannot wait);
//! * the lifecycle: each protocol gets `ConnectionMade` first and nothing after a switch away;
//!   the last one gets `ConnectionLost` once and last, and nothing follows it;
//! * every datagram is delivered whole, once, in the order `handle_received` got it, with its
//!   address and a fresh acknowledgement; nothing is delivered while paused or after
//!   `Close`/`Abort`;
//! * `PauseWriting`/`ResumeWriting` strictly alternate, the queue is on the right side of the
//!   marks after every send attempt and limits change, and a protocol switched to while paused
//!   gets `PauseWriting` replayed after its `ConnectionMade`;
//! * every registered waiter is resolved exactly once: `Ok` only by its own datagram's
//!   `handle_sent(Ok)`, its own error by its `handle_sent(Err)` (which resolves no other), and
//!   otherwise `Aborted`, `Stalled`, the fatal error or `Stopped` by the call that ended the
//!   endpoint — and all of them by the end;
//! * the datagrams sent (at once or from the queue's front) are the accepted ones in order, with
//!   their addresses; refused ones never appear, and nothing is sent after `Abort`;
//! * `is_closing()` from `Close`/`Abort` on, sends refused with `Closing` from then on and with
//!   `Stopped` after the end; a close ends once the queue is empty, or at its deadline (the
//!   close's time plus the close timeout, which `poll_timeout` reports) and not before,
//!   failing what is left with `Stalled`; a fatal error reaches `ConnectionLost`, nothing else
//!   does;
//! * `stats()` agrees with the model, counter by counter.
//!
//! # Running and replaying
//!
//! `cargo test -p switchboard-core --test datagram_interleavings -- --nocapture` shows the seed of
//! the run and the number of steps executed: [`CASES`] cases of up to [`MAX_STEPS`] steps by
//! default, about 1.3 million steps executed (the test asserts at least [`MIN_STEPS`]), in about
//! four seconds of CPU in debug. `PROPTEST_CASES=<n>` runs more (or fewer). A failure prints the invariant,
//! the seed, the minimal case and a trace of it; `PROPTEST_RNG_SEED=<seed>` replays the run, and
//! `tests/datagram_interleavings.proptest-regressions` replays the failing case first, as the
//! stream checker's docs tell. Once understood, a failure becomes a plain `#[test]` in
//! `regressions` below.

#[path = "support/datagram.rs"]
mod datagram;
#[path = "support/datagram_step.rs"]
mod datagram_step;
#[path = "support/runner.rs"]
mod runner;

use runner::Checker;

/// Cases per run, unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 5000;
/// The most steps in a case.
const MAX_STEPS: usize = 1000;
/// The steps a default run must execute at least.
const MIN_STEPS: u64 = 1_000_000;

#[test]
fn random_interleavings_keep_the_datagram_guarantees() {
    Checker {
        test: "datagram_interleavings",
        source_file: file!(),
        cases: CASES,
        max_steps: MAX_STEPS,
        min_steps: MIN_STEPS,
    }
    .check(datagram_step::case(MAX_STEPS));
}
