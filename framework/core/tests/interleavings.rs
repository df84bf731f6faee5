//! The stream core under seeded random interleavings: a driver and its protocols do everything
//! they can to a [`StreamCore`](switchboard_core::StreamCore), in random orders, and the
//! transport guarantees (DESIGN.md 1–7 and 11) are checked after every step.
//!
//! # What it generates
//!
//! A case is a fresh core, with random [`StreamSettings`](switchboard_core::stream::StreamSettings)
//! (read-buffer limit 1..=64, watermarks 0..=64, with or without a write stall timeout) and a
//! random [`StreamKind`](switchboard_core::stream::StreamKind) (duplex, read-only or write-only;
//! half-close or not), then up to [`MAX_STEPS`] weighted steps (`support/step.rs`; most cases
//! are calm and run long, a few are hasty and end soon, so the endings get their share):
//!
//! * the protocol's commands: writes of 0..=3 buffers, `WriteEof`, `Close`, `Abort`, pause and
//!   resume reading, `SetWriteBufferLimits` (invalid ones too), `SetProtocol` handing over the
//!   unconsumed tail of the chunk the protocol last received and has not acknowledged, the
//!   answer to an `EofReceived`, acknowledgements of any outstanding delivery (a previous
//!   protocol's too) and stale or repeated ones, `StartTls` with either leftover policy, and the
//!   protocol actor's death;
//! * the I/O object's inputs: reads of at most `read_room()` bytes of consecutive values, the
//!   peer's EOF (clean or truncated), partial and whole writes of `write_queue()` each followed
//!   by `handle_write_attempted`, the shutdown's end when `wants_shutdown()`, the handshake's
//!   end once `upgrade_start()` began it, drain reads when `is_draining()`, the reader's end
//!   when `watches_reader()`, I/O errors;
//! * time: `now` moves on, then `poll_timeout(now)` and `handle_timeout(now)`.
//!
//! A step is generated without knowing the state it will meet: what depends on the state is a
//! selector (which acknowledgement, how much of the room) resolved when it runs, and a step
//! whose precondition does not hold then is skipped and not counted. After every step the
//! checker drives the core as a driver does: it polls every event and delivers it to the model
//! protocol attached now (dead protocols' acknowledgements come back, as their dropped messages
//! do), begins a pending handshake when `upgrade_start()` says so, calls `poll_timeout(now)`,
//! and takes the release; after a release it calls `stopped()` once, sends `ConnectionLost`, and
//! the case ends. A case whose steps run out ends with `stopped()` all the same.
//!
//! # What it checks
//!
//! After every step (`support/harness.rs` names each invariant in its failure message): one
//! `DataReceived`/`EofReceived` in flight at most; each protocol sees `ConnectionMade` first (so
//! nothing meant for the protocol switched away from reaches the new one) and the last one
//! `ConnectionLost` once and last, and nothing is read before the first `ConnectionMade` is
//! acknowledged; the bytes delivered, across switches and leftover, are the bytes read, in order,
//! without loss or duplicate, dropped only by a close, an abort or an upgrade (whose new layer gets
//! exactly the unread bytes with `Feed`); the bytes written are the accepted writes in order and
//! refused ones never appear; every acknowledged write and `WriteEof` is resolved exactly once,
//! `Ok` only once its bytes were written (or the write side shut down after them);
//! `PauseWriting`/`ResumeWriting` strictly alternate at the watermarks, with the replay to a
//! protocol switched to while paused; bytes held stay within the read-buffer limit but for leftover
//! counted twice; nothing is delivered or read while paused or during an upgrade; `is_closing()`
//! holds from `Close`/`Abort` on and writes are refused after `Close`, `Abort` and `WriteEof`; a
//! clean close flushes everything, an abort releases with a reset, a failure reaches
//! `ConnectionLost` and a truncated stream is not a clean close; the stall timeout and the drain
//! deadline fire when due and only then; the counters agree.
//!
//! # Running and replaying
//!
//! `cargo test -p switchboard-core --test interleavings -- --nocapture` shows the seed of the run
//! and the number of steps executed: [`CASES`] cases of up to [`MAX_STEPS`] steps by default,
//! about 1.3 million steps executed (the test asserts at least [`MIN_STEPS`]), in about ten
//! seconds in debug. `PROPTEST_CASES=<n>` runs more (or fewer).
//!
//! A failure prints the invariant, the seed, the minimal case and a trace of it, event by event.
//! The minimal case is what proptest shrank, then cut after its failing step and stripped of
//! every step it still fails the same invariant without (proptest deletes steps in one sweep
//! before it simplifies them, so some that became useless stay). To replay:
//!
//! * `PROPTEST_RNG_SEED=<seed> cargo test -p switchboard-core --test interleavings` generates the
//!   same cases in the same order (the seed fixes generation, with proptest's XorShift generator
//!   unless `PROPTEST_RNG_ALGORITHM` says otherwise; the core and the checker have no other
//!   randomness, and the checker's clock moves only by the steps), so it fails again with the
//!   same minimal case;
//! * proptest also appends the failing case's own seed to
//!   `tests/interleavings.proptest-regressions` (an `xs` line) and replays every seed there
//!   first, whatever the run's seed: a failure from that file prints the run's seed, which does
//!   not reproduce it without the file;
//! * once understood, a failure becomes a plain `#[test]` in `regressions` below, with its
//!   minimal steps: it stays valid when the generator changes, which a seed does not.
//!
//! # Why proptest
//!
//! It is a well-kept crate that gives what a checker of this kind needs and a hand-written one
//! would have to grow: seeded generation, shrinking of a failing sequence towards the shortest
//! one that still fails (deleting steps and simplifying each), and replay by seed or from its
//! regressions file. The checker adds only the last pass described above.
//!
//! That runner (the seed, the extra pass, the report, the count of executed steps) and the
//! encoding of a step as two numbers are `support/runner.rs`, which the datagram core's checker
//! (`tests/datagram_interleavings.rs`) shares.

mod support;

use support::{runner::Checker, step};

/// Cases per run, unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 8000;
/// The most steps in a case.
const MAX_STEPS: usize = 1000;
/// The steps a default run must execute at least.
const MIN_STEPS: u64 = 1_000_000;

#[test]
fn random_interleavings_keep_the_guarantees() {
    Checker {
        test: "interleavings",
        source_file: file!(),
        cases: CASES,
        max_steps: MAX_STEPS,
        min_steps: MIN_STEPS,
    }
    .check(step::case(MAX_STEPS));
}

/// Minimal cases the checker found, kept as plain tests: they fail on the code before their fix
/// whatever the seed.
mod regressions {
    use std::time::Duration;

    use switchboard_core::{
        WriteBufferLimits,
        stream::{Direction, Leftover, StreamKind, StreamSettings},
    };

    use super::support::{
        harness,
        step::{Case, Step},
    };

    fn settings() -> StreamSettings {
        StreamSettings {
            write_buffer_limits: WriteBufferLimits::new(61, 1).expect("valid"),
            limits_chosen: true,
            read_buffer_limit: 6,
            write_stall_timeout: Some(Duration::from_millis(786)),
            close_drain_timeout: Duration::from_millis(803),
            max_write_buffer: usize::MAX,
            idle_timeout: None,
            first_byte_timeout: None,
        }
    }

    fn check(case: &Case) {
        if let Err(err) = harness::run(case, None) {
            panic!("{err}\n{case:?}");
        }
    }

    /// `Close` during an upgrade, once the peer's EOF was read (a write-only pipe counts as
    /// such from the start), ended the connection at once as a clean close: `advance_close`
    /// saw an empty queue and a write side that needs no shutdown, and did not see the writes
    /// held back for after the handshake. They never went out (their waiters failed with
    /// `Stopped`, fire-and-forget ones were lost silently) and `ConnectionLost(None)` said all
    /// was well. The checker's first run found it, shrunk to these three steps.
    #[test]
    fn close_during_an_upgrade_on_a_pipe_flushes_the_writes_held_for_after_it() {
        check(&Case {
            settings: settings(),
            kind: StreamKind {
                direction: Direction::WriteOnly,
                can_write_eof: true,
                drop_closes_after_eof: true,
            },
            steps: vec![
                Step::StartUpgrade {
                    policy: Leftover::Discard,
                    split: 0,
                },
                Step::Write {
                    lens: vec![1],
                    acked: true,
                },
                Step::Close,
            ],
        });
    }

    /// The same on a socket that cannot half-close (TLS-like): the peer's EOF arrived, the
    /// protocol began an upgrade, wrote, and answered the EOF by closing. Every run found it
    /// (seed 3127976277395056637 among them), shrunk to the first five steps; the last two,
    /// which end the handshake and write, show the close going on after the fix.
    #[test]
    fn close_during_an_upgrade_after_the_peers_eof_flushes_the_writes_held_for_after_it() {
        check(&Case {
            settings: StreamSettings {
                write_buffer_limits: WriteBufferLimits::new(0, 0).expect("valid"),
                limits_chosen: false,
                read_buffer_limit: 1,
                write_stall_timeout: None,
                close_drain_timeout: Duration::from_millis(10),
                max_write_buffer: usize::MAX,
                idle_timeout: None,
                first_byte_timeout: None,
            },
            kind: StreamKind {
                direction: Direction::Duplex,
                can_write_eof: false,
                drop_closes_after_eof: true,
            },
            steps: vec![
                Step::Ack { pick: 0 },
                Step::PeerEof { unclean: false },
                Step::StartUpgrade {
                    policy: Leftover::Discard,
                    split: 0,
                },
                Step::Write {
                    lens: vec![5],
                    acked: true,
                },
                Step::EofDecided { keep_open: false },
                Step::Upgraded {
                    ok: true,
                    can_write_eof: false,
                    drop_closes_after_eof: true,
                    high: 64,
                    low: 16,
                },
                Step::Written { n: None },
            ],
        });
    }
}
