//! The stream core under seeded random interleavings: a driver and its protocols do everything
//! they can to a [`StreamCore`](switchboard_core::StreamCore), in random orders, and the
//! transport guarantees (DESIGN.md 1–7 and 11) are checked after every step.
//!
//! # What it generates
//!
//! A case is a fresh core, with random [`StreamSettings`](switchboard_core::stream::StreamSettings)
//! (read-buffer limit 1..=64, watermarks 0..=64, with or without a write stall timeout; a
//! write-buffer maximum mostly 64 to 544 bytes above the high-water mark, sometimes under 64,
//! sometimes none or past 4 GiB; an idle timeout in a quarter of the cases and a first-byte
//! timeout in a sixth, from a microsecond to 3 s), a random
//! [`StreamKind`](switchboard_core::stream::StreamKind) (duplex, read-only or write-only;
//! half-close or not) and random [`Handles`](switchboard_core::Handles) for its first protocol
//! (write flow in 70% of them, timeouts in half), then up to [`MAX_STEPS`] weighted steps
//! (`support/step.rs`; most cases are calm and run long, a few are hasty and end soon, so the
//! endings get their share):
//!
//! * the protocol's commands: writes of 0..=3 buffers, `WriteEof`, `Close`, `Abort`, pause and
//!   resume reading, `SetWriteBufferLimits` (invalid ones too), `SetProtocol` to a protocol with
//!   random `Handles`, handing over the
//!   unconsumed tail of the chunk the protocol last received and has not acknowledged, the
//!   answer to an `EofReceived`, acknowledgements of any outstanding delivery (a previous
//!   protocol's too) and stale or repeated ones, `StartTls` with either leftover policy, and the
//!   protocol actor's death; and `Drain`, which whoever holds the transport may send (a dead
//!   protocol's `Connection` too);
//! * the I/O object's inputs: reads of at most `read_room()` bytes of consecutive values, the
//!   peer's EOF (clean or truncated), partial and whole writes of `write_queue()` each followed
//!   by `handle_write_attempted`, the shutdown's end when `wants_shutdown()`, the handshake's
//!   end once `upgrade_start()` began it, drain reads when `is_draining()`, the reader's end
//!   when `watches_reader()`, I/O errors;
//! * time: `now` moves on, then `poll_timeout(now)` and `handle_timeout(now)`; or the driver
//!   sleeps until the deadline `poll_timeout` gave (or a microsecond short of it), as its timer
//!   does, so the deadlines are met exactly.
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
//! And for the write-buffer maximum, the read-stop and the timers:
//!
//! * the write buffer never holds more than `max_write_buffer()` (the setting, at most 4 GiB)
//!   while the core lives; a write that would take it past is refused with `BufferFull` (and
//!   one that reaches it exactly is not), the core is stopped at once, every acknowledged write
//!   still pending and every `WriteEof` is resolved (exactly once) with `BufferFull`, the
//!   release is an abort and `ConnectionLost` carries `BufferFull`;
//! * a protocol that does not handle write flow gets no `DataReceived` while writing is paused,
//!   as the model knows it from the `PauseWriting`/`ResumeWriting` it delivered, and
//!   `read_room()` is 0 then (`is_throttled()` must agree with the model); and no delivery is
//!   stuck: after every round, bytes read (or the peer's EOF) wait only while something holds
//!   them (an acknowledgement out, reading paused, an upgrade, the read-stop, the close), so a
//!   throttled protocol gets what waited in the round the buffer drains to the low-water mark;
//! * the idle and first-byte timers follow the rule spelt out on `Timers` in
//!   `support/harness.rs`: `poll_timeout` gives their exact deadline, `handle_timeout(now)` acts
//!   at the first call with `now` at or past it and never before (a timer a call, first-byte
//!   first); a protocol that handles timeouts is told (`TimedOut` of the right variant and
//!   duration goes to it, and never to one that does not) and the period begins again; the next
//!   run-out, or the first for a protocol that does not handle them, ends the connection: a
//!   close when nothing waits to be written, else an abort failing the pending writes with the
//!   timeout; `ConnectionLost` carries that `TimedOut`. Apart from that rule, an end by a timer
//!   must come at least T after the last progress (or the start, with nothing received), 2T if
//!   the protocol was told; with a driver that sleeps until the deadline, told at exactly T and
//!   ended at exactly 2T;
//! * `Drain` (asyncio's `await writer.drain()`), against the write flow the model knows from
//!   the edges it delivered: one issued while writing is not paused resolves `Ok` at once, one
//!   issued while paused is pending; a pending one resolves `Ok` only with the buffer at or below
//!   the low-water mark (checked as it resolves), and by the round whose `ResumeWriting` tells
//!   the protocol so (never while still paused, never failed on a live connection); a connection
//!   that ends first fails it with the error that ended it (an abort's, an I/O error's, the
//!   maximum's, a timer's), and `stopped()` fails the rest with `Stopped`, as it does a drain
//!   issued after it; none is left pending at the end, and none resolves twice.
//!
//! # Running and replaying
//!
//! `cargo test -p switchboard-core --test interleavings -- --nocapture` shows the seed of the run
//! and the number of steps executed: [`CASES`] cases of up to [`MAX_STEPS`] steps by default,
//! about 1.15 million steps executed (the test asserts at least [`MIN_STEPS`]), in about ten
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
const CASES: u32 = 9000;
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
    use std::{cell::RefCell, rc::Rc, time::Duration};

    use switchboard_core::{
        Handles, WriteBufferLimits,
        stream::{Direction, Leftover, StreamKind, StreamSettings},
    };

    use super::support::{
        harness,
        step::{Case, Drain, Step},
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

    /// What the protocols of the cases from before timers and the read-stop handle.
    const HANDLES: Handles = Handles {
        write_flow: true,
        timeouts: false,
    };

    fn check(case: &Case) {
        if let Err(err) = harness::run(case, None) {
            panic!("{err}\n{case:?}");
        }
    }

    /// Runs `case` as [`check`] does, traced, and checks that the trace shows the lines with
    /// `expected` in this order and none with `unexpected`: the case went the way it is meant
    /// to (a step whose precondition does not hold is skipped silently otherwise).
    fn check_traced(case: &Case, expected: &[&str], unexpected: &[&str]) {
        let trace = Rc::new(RefCell::new(Vec::new()));
        if let Err(err) = harness::run(case, Some(trace.clone())) {
            panic!("{err}\n{case:?}\n{}", trace.borrow().join("\n"));
        }
        let trace = trace.borrow();
        let mut lines = trace.iter();
        for want in expected {
            assert!(
                lines.any(|line| line.contains(want)),
                "no `{want}` in the trace where expected:\n{}",
                trace.join("\n")
            );
        }
        for unwanted in unexpected {
            assert!(
                !trace.iter().any(|line| line.contains(unwanted)),
                "`{unwanted}` in the trace:\n{}",
                trace.join("\n")
            );
        }
    }

    /// Settings for the cases of the write-buffer maximum, the read-stop and the timers: the
    /// limits (8, 2), no stall timeout, and whatever each case sets on top.
    fn plain() -> StreamSettings {
        StreamSettings {
            write_buffer_limits: WriteBufferLimits::new(8, 2).expect("valid"),
            limits_chosen: true,
            read_buffer_limit: 64,
            write_stall_timeout: None,
            close_drain_timeout: Duration::from_millis(50),
            max_write_buffer: usize::MAX,
            idle_timeout: None,
            first_byte_timeout: None,
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
            handles: HANDLES,
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
            handles: HANDLES,
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

    /// The write that would take the buffer past its maximum is refused with `BufferFull`, the
    /// connection is aborted (a reset), both acknowledged writes still pending fail with
    /// `BufferFull` (the harness checks each outcome) and `ConnectionLost` carries it; a write
    /// that fills the buffer to the maximum exactly is accepted.
    #[test]
    fn a_write_past_the_maximum_aborts_with_buffer_full() {
        check_traced(
            &Case {
                settings: StreamSettings {
                    max_write_buffer: 16,
                    ..plain()
                },
                kind: StreamKind::socket(),
                handles: HANDLES,
                steps: vec![
                    Step::Ack { pick: 0 },
                    Step::Write {
                        lens: vec![10],
                        acked: true,
                    },
                    Step::Written { n: Some(0) },
                    Step::Write {
                        lens: vec![2, 4],
                        acked: true,
                    },
                    Step::Written { n: Some(4) },
                    Step::Write {
                        lens: vec![5],
                        acked: true,
                    },
                    // Never runs: the connection ended.
                    Step::Written { n: None },
                ],
            },
            &[
                "-> protocol #0: PauseWriting",
                "refused with BufferFull(16): 12 + 5 bytes buffered",
                "release Release { abort: true }",
                "ConnectionLost(Some(Custom { kind: QuotaExceeded, error: BufferFull(16) }))",
            ],
            &["step 6"],
        );
    }

    /// A protocol that does not handle write flow gets nothing while writing is paused, and
    /// nothing is read for it (the read is skipped: no room); once the peer took every byte,
    /// `ResumeWriting` and the bytes that waited go. A switch to a protocol that handles write
    /// flow lifts the read-stop at once.
    #[test]
    fn the_read_stop_holds_deliveries_until_the_buffer_drains() {
        check_traced(
            &Case {
                settings: StreamSettings {
                    write_buffer_limits: WriteBufferLimits::new(4, 0).expect("valid"),
                    ..plain()
                },
                kind: StreamKind::socket(),
                handles: Handles {
                    write_flow: false,
                    timeouts: false,
                },
                steps: vec![
                    Step::Ack { pick: 0 },
                    // 3 bytes delivered, 5 more wait for the acknowledgement.
                    Step::Read { len: Some(2) },
                    Step::Read { len: Some(4) },
                    Step::Write {
                        lens: vec![10],
                        acked: true,
                    },
                    Step::Written { n: Some(0) },
                    Step::Ack { pick: 0 },
                    Step::Read { len: None },
                    Step::Written { n: Some(6) },
                    Step::Written { n: None },
                    // Paused again with 2 bytes waiting; a protocol that handles write flow
                    // gets them.
                    Step::Read { len: Some(1) },
                    Step::Write {
                        lens: vec![5],
                        acked: false,
                    },
                    Step::Written { n: Some(0) },
                    Step::Ack { pick: 0 },
                    Step::SetProtocol {
                        split: 0,
                        write_flow: true,
                        timeouts: false,
                    },
                    Step::Ack { pick: 0 },
                ],
            },
            &[
                "-> protocol #0: PauseWriting",
                "step 5: Ack",
                "step 6: Read { len: None } (skipped: precondition)",
                "step 7: Written",
                "step 8: Written",
                "-> protocol #0: ResumeWriting",
                "-> protocol #0: Data { data: b\"\\x03\\x04\\x05\\x06\\x07\"",
                "-> protocol #0: PauseWriting",
                "step 12: Ack",
                "switch to protocol #1",
                "-> protocol #1: PauseWriting",
                "step 14: Ack",
                "-> protocol #1: Data { data: b\"\\x08\\t\"",
            ],
            &[],
        );
    }

    /// A protocol that handles timeouts is told when the idle timeout runs out, and the period
    /// begins again; progress (a write that went out) clears it, so the next run-out tells
    /// again; the one after ends the connection, here with a close (nothing waits to be
    /// written), and `ConnectionLost` carries the timeout.
    #[test]
    fn the_idle_timeout_tells_then_ends() {
        check_traced(
            &Case {
                settings: StreamSettings {
                    idle_timeout: Some(Duration::from_millis(100)),
                    ..plain()
                },
                kind: StreamKind::socket(),
                handles: Handles {
                    write_flow: true,
                    timeouts: true,
                },
                steps: vec![
                    Step::Ack { pick: 0 },
                    Step::Tick { ms: 99 },
                    Step::Tick { ms: 1 },
                    Step::Write {
                        lens: vec![3],
                        acked: true,
                    },
                    Step::Written { n: None },
                    Step::Tick { ms: 99 },
                    Step::Sleep { early: false },
                    Step::Tick { ms: 99 },
                    Step::Sleep { early: true },
                    Step::Sleep { early: false },
                    Step::Shutdown { ok: true },
                    Step::Drained { read: Drain::Eof },
                ],
            },
            &[
                "step 2: Tick",
                "-> protocol #0: TimedOut(Idle(100ms))",
                "step 6: Sleep",
                "sleep 1ms, to 200ms",
                "-> protocol #0: TimedOut(Idle(100ms))",
                "step 9: Sleep",
                "sleep 1µs, to 300ms",
                "Idle(100ms) ran out: the connection ends",
                "release Release { abort: false }",
                "ConnectionLost(Some(Custom { kind: TimedOut, error: Idle(100ms) }))",
            ],
            &[],
        );
    }

    /// Without `handles.timeouts` the first-byte timeout ends the connection the first time it
    /// runs out, with no `TimedOut` to the protocol; with a write waiting, it aborts, and the
    /// write fails with the timeout (the harness checks its outcome).
    #[test]
    fn the_first_byte_timeout_ends_a_protocol_that_does_not_handle_timeouts() {
        check_traced(
            &Case {
                settings: StreamSettings {
                    first_byte_timeout: Some(Duration::from_millis(50)),
                    idle_timeout: Some(Duration::from_secs(1)),
                    ..plain()
                },
                kind: StreamKind::socket(),
                handles: HANDLES,
                steps: vec![
                    Step::Ack { pick: 0 },
                    Step::Write {
                        lens: vec![5],
                        acked: true,
                    },
                    Step::Written { n: Some(2) },
                    Step::Tick { ms: 49 },
                    Step::Sleep { early: true },
                    Step::Sleep { early: false },
                ],
            },
            &[
                "step 4: Sleep",
                "step 5: Sleep",
                "FirstByte(50ms) ran out: the connection ends",
                "release Release { abort: true }",
                "ConnectionLost(Some(Custom { kind: TimedOut, error: FirstByte(50ms) }))",
            ],
            &["-> protocol #0: TimedOut"],
        );
    }
}
