//! Subprocess transports (guarantee 12), against `sb-child`: bytes through the child's pipes,
//! the order of `ConnectionMade`, `PipeDataReceived`, `PipeConnectionLost`, `ProcessExited` and
//! `ConnectionLost`, exit statuses and signals, `Close` and the death pact, flow control on the
//! pipes, stdio options, spawn errors, and no zombie or descriptor left behind.

#[path = "support/process.rs"]
mod process;
#[path = "support/subprocess.rs"]
mod subprocess_support;
mod support;

use std::{
    collections::BTreeMap,
    io,
    os::unix::process::ExitStatusExt,
    process::{ExitStatus, Stdio},
    sync::{PoisonError, RwLock, RwLockReadGuard},
    time::Duration,
};

use actix::prelude::*;
use bytes::{Bytes, BytesMut};
use subprocess_support::{
    ReleaseAcks, ReleaseMade, StopProbe, SubEvent, SubProbe, SubProbeOptions, SubProbeRx,
    check_run, child, eventually, is_our_child, our_zombies, proc_stat, spawn_probed,
};
use support::TIMEOUT;
use switchboard::{
    DEFAULT_HIGH_WATER_MARK, GetPid, GetPipeTransport, GetReturnCode, Kill, PipeEnd, PipeFileType,
    ProcessGone, ProcessInfo, SendSignal, TransportStats,
    prelude::*,
    subprocess::{self, Command, STDERR, STDIN, STDOUT},
};
use tokio::signal::unix::SignalKind;

/// `fds_and_zombies_after_a_thousand_spawns` counts the descriptors and the zombie children of
/// the whole test process, so it runs alone: every other test holds this lock shared, it holds
/// it exclusively, each from before its actix system (and the runtime's own descriptors) exists
/// until after it is gone.
static CENSUS: RwLock<()> = RwLock::new(());

fn census_shared() -> RwLockReadGuard<'static, ()> {
    CENSUS.read().unwrap_or_else(PoisonError::into_inner)
}

/// One test per `async fn name()`, on an actix system of its own as `#[actix_rt::test]` makes,
/// under the shared census lock and the support deadline.
macro_rules! subprocess_tests {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn run() {
                let _census = super::census_shared();
                actix_rt::System::new().block_on(crate::support::deadline(super::$name()));
            }
        }
    )*};
}

subprocess_tests!(
    fifty_mib_through_cat_arrive_byte_exact,
    stdout_and_stderr_interleaved_each_whole_and_in_order,
    exit_codes_and_signals_reach_process_exited,
    after_exit_signals_fail_with_process_gone_and_close_kills_nothing,
    grandchild_holding_stdout_delays_pipe_end_and_connection_lost,
    kill_ends_a_hung_child,
    realtime_signals_are_refused_and_signal_zero_checks_the_child,
    close_on_a_running_child_ends_its_pipes_and_kills_it,
    close_on_a_running_child_gives_the_events_asyncio_gives,
    held_ack_bounds_a_flooding_child_then_data_flows_again,
    pause_reading_from_connection_made_holds_stdout_back,
    holding_the_connection_made_ack_holds_every_pipe,
    streams_not_piped_have_no_pipe_and_no_events,
    stderr_to_stdout_arrives_on_fd_1_in_the_order_written,
    missing_program_fails_and_makes_no_protocol,
    a_panicking_factory_fails_the_spawn_and_kills_the_child,
    protocol_that_stops_gets_its_child_killed,
    extra_info_subprocess_and_pipe,
    shell_and_exec_forms,
    child_closing_its_stdin_ends_pipe_0_without_a_write,
    stdin_bytes_the_child_never_read_end_pipe_0_with_broken_pipe,
    a_pipe_closed_by_the_spawner_at_once_ends_after_connection_made,
);

const SIGKILL: i32 = 9;

fn sigterm() -> i32 {
    SignalKind::terminate().as_raw_value()
}

fn sigusr1() -> i32 {
    SignalKind::user_defined1().as_raw_value()
}

/// `"{prefix} 0\n{prefix} 1\n..."`, as `sb-child interleave` writes each stream.
fn lines(prefix: &str, n: usize) -> String {
    (0..n).map(|i| format!("{prefix} {i}\n")).collect()
}

/// `sb-child hang`, its `ConnectionMade` seen.
async fn hung_child() -> (SubprocessHandle, Addr<SubProbe>, SubProbeRx) {
    let (handle, probe, mut events) =
        spawn_probed(child(&["hang"]), SubProbeOptions::default()).expect("spawn sb-child hang");
    let made = events.made().await;
    assert!(
        made.same_transport(&handle),
        "ConnectionMade carries the transport's handle"
    );
    (handle, probe, events)
}

/// Runs `command` to its `ConnectionLost` and checks the run.
async fn run_to_end(command: Command) -> subprocess_support::Run {
    let (_handle, _probe, mut events) =
        spawn_probed(command, SubProbeOptions::default()).expect("spawn sb-child");
    check_run(&events.until_lost().await)
}

fn assert_process_gone(result: io::Result<()>, what: &str) {
    let err = result.expect_err(what);
    assert!(ProcessGone::of(&err), "{what}: {err:?} is no ProcessGone");
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{what}");
}

/// Pipes 0, 1 and 2 all ended, with no error.
fn all_pipes_ended_cleanly() -> BTreeMap<i32, Option<io::ErrorKind>> {
    BTreeMap::from([(STDIN, None), (STDOUT, None), (STDERR, None)])
}

async fn stats(transport: &TransportHandle) -> TransportStats {
    transport
        .send(GetStats)
        .await
        .expect("the pipe transport is alive")
}

/// A stretch of the support pattern, of a length no power of two, so a chunk lost, duplicated
/// or reordered shows up as a mismatch; stored twice, so any window of it is one slice.
struct Pattern(Bytes);

const PATTERN_LEN: usize = 1_000_003;

impl Pattern {
    fn new() -> Pattern {
        let once = support::pattern(0, PATTERN_LEN);
        let mut twice = BytesMut::with_capacity(2 * PATTERN_LEN);
        twice.extend_from_slice(&once);
        twice.extend_from_slice(&once);
        Pattern(twice.freeze())
    }

    /// The `len` bytes of the endless stream at `offset`.
    fn window(&self, offset: usize, len: usize) -> Bytes {
        assert!(len <= PATTERN_LEN, "a window longer than the pattern");
        let start = offset % PATTERN_LEN;
        self.0.slice(start..start + len)
    }
}

async fn fifty_mib_through_cat_arrive_byte_exact() {
    const TOTAL: usize = 50 << 20;
    const CHUNK: usize = 256 << 10;
    let (handle, _probe, mut events) =
        spawn_probed(child(&["cat"]), SubProbeOptions::default()).expect("spawn sb-child cat");
    events.made().await;
    let stdin = handle.pipe(STDIN).expect("stdin is piped");
    let pattern = Pattern::new();
    let mut paused = events.stdin_paused();

    let writer = async {
        let mut offset = 0;
        while offset < TOTAL {
            tokio::time::timeout(TIMEOUT, paused.wait_for(|paused| !paused))
                .await
                .expect("stdin stayed paused: the child stopped reading")
                .expect("the probe is alive");
            let len = CHUNK.min(TOTAL - offset);
            stdin.write(pattern.window(offset, len));
            // A round trip, so the transport has taken the chunk (and sent PauseWriting if it
            // crossed the high-water mark) before the next look at `paused`.
            stdin.send(GetWriteBufferSize).await.expect("stdin is open");
            offset += len;
        }
        let written = stats(&stdin).await;
        stdin.write_eof();
        written
    };
    let reader = async {
        let mut received = 0;
        let mut others = Vec::new();
        loop {
            match events
                .next()
                .await
                .expect("the probe runs until ConnectionLost")
            {
                SubEvent::Data(STDOUT, data) => {
                    assert!(
                        data[..] == pattern.window(received, data.len())[..],
                        "stdout differs from what went to stdin in the {} bytes at offset {received}",
                        data.len()
                    );
                    received += data.len();
                }
                event @ SubEvent::Lost(_) => {
                    others.push(event);
                    return (received, others);
                }
                event => others.push(event),
            }
        }
    };
    let (written, (received, others)) = tokio::join!(writer, reader);
    events.assert_ended().await;

    assert_eq!(received, TOTAL, "every byte came back, no more");
    let run = check_run(&others);
    assert!(run.status().success(), "cat exited with {}", run.status());
    assert!(!run.output.contains_key(&STDERR), "cat wrote to stderr");
    assert_eq!(run.pipes_lost, all_pipes_ended_cleanly());
    // 50 MiB through a 64 KiB pipe: the stdin transport paused its writer, which waited.
    let pauses = others
        .iter()
        .filter(|event| matches!(event, SubEvent::PauseWriting))
        .count();
    assert!(
        pauses > 0,
        "PauseWriting never reached a with_write_flow protocol"
    );
    assert!(
        written.write_buffer_peak <= DEFAULT_HIGH_WATER_MARK + 2 * CHUNK,
        "the stdin buffer peaked at {} bytes though the writer waited at each pause",
        written.write_buffer_peak
    );
}

async fn stdout_and_stderr_interleaved_each_whole_and_in_order() {
    const LINES: usize = 2000;
    let run = run_to_end(child(&["interleave", &LINES.to_string()])).await;
    // check_run: no empty chunk, each pipe's data before its PipeConnectionLost.
    assert_eq!(run.text(STDOUT), lines("out", LINES));
    assert_eq!(run.text(STDERR), lines("err", LINES));
    assert!(run.status().success(), "{}", run.status());
    assert_eq!(run.pipes_lost, all_pipes_ended_cleanly());
}

async fn exit_codes_and_signals_reach_process_exited() {
    // An exit code.
    let (handle, _probe, mut events) =
        spawn_probed(child(&["exit", "7"]), SubProbeOptions::default()).expect("spawn");
    events.made().await;
    let events = events.until_lost().await;
    let run = check_run(&events);
    assert_eq!(run.status().code(), Some(7));
    assert_eq!(run.status().signal(), None);
    let Some(SubEvent::Exited { returncode, .. }) = events
        .iter()
        .find(|event| matches!(event, SubEvent::Exited { .. }))
    else {
        unreachable!("check_run found ProcessExited")
    };
    assert_eq!(
        *returncode,
        Some(run.status()),
        "returncode() inside ProcessExited's handler"
    );
    assert_eq!(
        handle.returncode(),
        Some(run.status()),
        "returncode() after"
    );

    // A signal the child sends itself.
    let run = run_to_end(child(&["raise", &sigusr1().to_string()])).await;
    assert_eq!(run.status().signal(), Some(sigusr1()), "{}", run.status());
    assert_eq!(run.status().code(), None);

    // Terminate, Kill and SendSignal on a hung child.
    let (handle, _probe, mut events) = hung_child().await;
    assert_eq!(handle.returncode(), None, "running");
    assert_eq!(handle.send(GetReturnCode).await.expect("alive"), None);
    handle
        .terminate()
        .await
        .expect("SIGTERM to a running child");
    let run = check_run(&events.until_lost().await);
    assert_eq!(run.status().signal(), Some(sigterm()), "{}", run.status());
    assert_eq!(handle.returncode(), Some(run.status()));

    let (handle, _probe, mut events) = hung_child().await;
    handle
        .send(Kill)
        .await
        .expect("alive")
        .expect("SIGKILL to a running child");
    let run = check_run(&events.until_lost().await);
    assert_eq!(run.status().signal(), Some(SIGKILL), "{}", run.status());

    let (handle, _probe, mut events) = hung_child().await;
    handle
        .send(SendSignal(sigusr1()))
        .await
        .expect("alive")
        .expect("SIGUSR1 to a running child");
    let run = check_run(&events.until_lost().await);
    assert_eq!(run.status().signal(), Some(sigusr1()), "{}", run.status());
    assert_eq!(handle.returncode(), Some(run.status()));
}

async fn after_exit_signals_fail_with_process_gone_and_close_kills_nothing() {
    // Stdout paused before its first read cannot see its EOF, so the transport outlives the
    // child for as long as the test needs.
    let (handle, _probe, mut events) = spawn_probed(
        child(&["exit", "7"]),
        SubProbeOptions {
            pause_on_made: vec![STDOUT],
            ..SubProbeOptions::default()
        },
    )
    .expect("spawn");
    events.made().await;
    let mut seen = events
        .until(|event| matches!(event, SubEvent::Exited { .. }))
        .await;
    let Some(&SubEvent::Exited { status, returncode }) = seen.last() else {
        unreachable!()
    };
    assert_eq!(status.code(), Some(7));
    assert_eq!(returncode, Some(status));
    assert!(
        !seen
            .iter()
            .any(|event| matches!(event, SubEvent::PipeLost(STDOUT, _) | SubEvent::Lost(_))),
        "stdout ended while paused: {:?}",
        events.seen
    );
    assert!(!is_our_child(handle.pid()), "the exited child is reaped");

    // Alive, exited: the status by message too, not closing, and no signal goes out.
    assert_eq!(
        handle
            .send(GetReturnCode)
            .await
            .expect("alive while stdout is open"),
        Some(status)
    );
    assert!(
        !handle.send(IsClosing).await.expect("alive"),
        "a child that exited by itself leaves the transport not closing"
    );
    assert_process_gone(handle.kill().await, "Kill after exit");
    assert_process_gone(handle.terminate().await, "Terminate after exit");
    assert_process_gone(handle.send_signal(sigusr1()).await, "SendSignal after exit");
    // A number that is no signal is refused as such, exited or not.
    for bad in [-1, 65, i32::MAX] {
        let err = handle
            .send_signal(bad)
            .await
            .expect_err("a number that is no signal");
        assert_eq!(
            err.kind(),
            io::ErrorKind::InvalidInput,
            "signal {bad}: {err}"
        );
    }

    // Close after exit: the pipes close, nothing is killed.
    handle.close();
    assert!(handle.send(IsClosing).await.expect("alive"));
    seen.extend(events.until_lost().await);
    let run = check_run(&seen);
    assert_eq!(run.status().code(), Some(7), "Close changed the status");
    assert_eq!(run.pipes_lost, all_pipes_ended_cleanly());
    assert!(run.output.is_empty());

    // Stopped: the same answers, from the handle alone.
    eventually("the transport stops after ConnectionLost", || {
        !handle.is_alive()
    })
    .await;
    assert_process_gone(handle.kill().await, "Kill after the transport stopped");
    assert_process_gone(
        handle.send_signal(sigusr1()).await,
        "SendSignal after the transport stopped",
    );
    assert!(handle.send(GetReturnCode).await.is_err(), "a stopped actor");
    assert_eq!(handle.returncode(), Some(status));
}

async fn grandchild_holding_stdout_delays_pipe_end_and_connection_lost() {
    let (handle, _probe, mut events) =
        spawn_probed(child(&["grandchild", "1500"]), SubProbeOptions::default()).expect("spawn");
    events.made().await;
    let mut seen = events
        .until(|event| matches!(event, SubEvent::Exited { .. }))
        .await;
    // The child exited and is collected at once, though the grandchild holds its pipes.
    assert!(
        !is_our_child(handle.pid()),
        "the exited child is left unreaped: {:?}",
        proc_stat(handle.pid())
    );
    assert!(
        !seen.iter().any(|event| matches!(
            event,
            SubEvent::Lost(_) | SubEvent::PipeLost(STDOUT | STDERR, _) | SubEvent::Data(..)
        )),
        "ProcessExited came after the grandchild released its pipes: {:?}",
        events.seen
    );
    seen.extend(events.until_lost().await);
    let run = check_run(&seen);
    assert!(run.status().success(), "{}", run.status());
    // check_run: "released\n" before PipeConnectionLost(1), ConnectionLost last.
    assert_eq!(run.text(STDOUT), "released\n");
    assert_eq!(run.pipes_lost, all_pipes_ended_cleanly());
}

async fn kill_ends_a_hung_child() {
    let (handle, _probe, mut events) = hung_child().await;
    // A number that is no signal: refused, and the child keeps running.
    let err = handle
        .send(SendSignal(-1))
        .await
        .expect("alive")
        .expect_err("-1 is no signal");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(handle.send(GetReturnCode).await.expect("alive"), None);

    handle.kill().await.expect("SIGKILL to a running child");
    let run = check_run(&events.until_lost().await);
    assert_eq!(run.status().signal(), Some(SIGKILL));
    assert_eq!(run.pipes_lost, all_pipes_ended_cleanly());
    assert!(run.output.is_empty());
    assert!(!is_our_child(handle.pid()));
}

async fn realtime_signals_are_refused_and_signal_zero_checks_the_child() {
    // SIGRTMIN + 6 on Linux (the C library keeps 32 and 33, so its SIGRTMIN is 34). kill(2)
    // takes it, but no safe Rust API builds one, so it is refused up front, clearly.
    const SIGRTMIN_PLUS_6: i32 = 40;
    let (handle, _probe, mut events) = hung_child().await;
    let err = handle
        .send_signal(SIGRTMIN_PLUS_6)
        .await
        .expect_err("a real-time signal is refused");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("real-time"), "{err}");
    // Signal 0 sends nothing and says whether the child is still ours to signal.
    handle
        .send_signal(0)
        .await
        .expect("signal 0 succeeds while the child runs");
    assert!(is_our_child(handle.pid()), "signal 0 left the child alone");
    handle.kill().await.expect("kill");
    let run = check_run(&events.until_lost().await);
    assert_eq!(run.status().signal(), Some(SIGKILL), "{}", run.status());
    let err = handle
        .send_signal(0)
        .await
        .expect_err("signal 0 after the exit");
    assert!(ProcessGone::of(&err), "{err}");
}

async fn a_pipe_closed_by_the_spawner_at_once_ends_after_connection_made() {
    // The caller of `spawn` holds the pipes before the protocol has handled anything, and a read
    // pipe closes without waiting for its protocol: its end must still come after
    // `ConnectionMade`.
    let (handle, _probe, mut events) =
        spawn_probed(child(&["hang"]), SubProbeOptions::default()).expect("spawn sb-child hang");
    handle.pipe(STDOUT).expect("stdout is piped").close();
    handle.pipe(STDERR).expect("stderr is piped").abort();
    let made = events.made().await;
    assert!(made.same_transport(&handle));
    handle.close();
    let run = check_run(&events.until_lost().await);
    assert_eq!(run.status().signal(), Some(SIGKILL), "{}", run.status());
}

async fn close_on_a_running_child_ends_its_pipes_and_kills_it() {
    let (handle, _probe, mut events) = hung_child().await;
    assert!(!handle.send(IsClosing).await.expect("alive"));
    handle.close();
    // Handled right after Close, before any pipe reports back, so the transport is alive.
    assert!(handle.send(IsClosing).await.expect("alive"));
    handle.close(); // idempotent: no second round of events
    let events = events.until_lost().await;
    let run = check_run(&events);
    assert_eq!(run.status().signal(), Some(SIGKILL), "{}", run.status());
    assert_eq!(run.pipes_lost, all_pipes_ended_cleanly());
    assert!(run.output.is_empty());
    assert!(handle.is_closing().await);
    assert!(!is_our_child(handle.pid()));
}

/// asyncio's `subprocess_exec` of `sb-child hang`, closed at once, as its callbacks report.
const ASYNCIO_CLOSE: &str = r#"
import asyncio, sys

class Recorder(asyncio.SubprocessProtocol):
    def __init__(self, done):
        self.done = done
    def connection_made(self, transport):
        self.transport = transport
        print("made")
    def pipe_data_received(self, fd, data):
        print("data", fd)
    def pipe_connection_lost(self, fd, exc):
        print("pcl", fd, "None" if exc is None else type(exc).__name__)
    def process_exited(self):
        print("exited", self.transport.get_returncode())
    def connection_lost(self, exc):
        print("lost", exc)
        self.done.set_result(None)

async def main():
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    transport, _ = await loop.subprocess_exec(lambda: Recorder(done), sys.argv[1], "hang")
    transport.close()
    await done

asyncio.run(main())
"#;

async fn close_on_a_running_child_gives_the_events_asyncio_gives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("asyncio_close.py");
    std::fs::write(&script, ASYNCIO_CLOSE).expect("write the script");
    let mut python = process::python_command(&script);
    python.arg(process::child_program());
    let finished = tokio::task::spawn_blocking(move || {
        process::Process::spawn("asyncio", python).finish(process::TIMEOUT)
    })
    .await
    .expect("the python runner");
    assert!(
        finished.status.success(),
        "python failed: {}",
        finished.stderr_text()
    );
    let theirs: Vec<String> = finished.stdout_text().lines().map(str::to_owned).collect();

    let (handle, _probe, mut events) = hung_child().await;
    handle.close();
    let ours: Vec<String> = std::iter::once("made".to_owned())
        .chain(events.until_lost().await.iter().map(SubEvent::describe))
        .collect();

    // The same events, made first and lost last; between them, asyncio itself does not order
    // the exit against the pipes' ends.
    let sorted = |events: &[String]| {
        let mut events = events.to_vec();
        events.sort();
        events
    };
    assert_eq!(
        sorted(&ours),
        sorted(&theirs),
        "ours {ours:?}, asyncio's {theirs:?}"
    );
    assert_eq!(ours.first(), theirs.first());
    assert_eq!(
        ours.last(),
        theirs.last(),
        "ours {ours:?}, asyncio's {theirs:?}"
    );
}

async fn held_ack_bounds_a_flooding_child_then_data_flows_again() {
    const LIMIT: usize = 64 * 1024;
    let command = child(&["flood", "0"])
        .pipe_config(switchboard::StreamConfig::for_pipes().read_buffer_limit(LIMIT));
    let (handle, probe, mut events) = spawn_probed(
        command,
        SubProbeOptions {
            hold_acks: true,
            ..SubProbeOptions::default()
        },
    )
    .expect("spawn");
    events.made().await;
    let mut seen = events
        .until(|event| matches!(event, SubEvent::Data(STDOUT, _)))
        .await;
    let stdout = handle.pipe(STDOUT).expect("stdout is piped");

    // The first chunk's ack is held: the pipe transport reads up to its limit, then leaves the
    // rest in the kernel, and the child blocks on a full pipe.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut before = stats(&stdout).await;
    let held = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = stats(&stdout).await;
        assert!(
            now.bytes_received <= LIMIT as u64,
            "{} bytes read while every one was unacknowledged, past the {LIMIT}-byte limit",
            now.bytes_received
        );
        if now.bytes_received == before.bytes_received {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reading never stopped: {now:?}"
        );
        before = now;
    };
    assert_eq!(held.read_buffer_limit, LIMIT);
    assert!(held.read_buffer_peak <= held.read_buffer_limit, "{held:?}");
    assert_eq!(
        held.deliveries, 1,
        "one delivery in flight while its ack is held"
    );
    assert!(
        events.try_next().is_none(),
        "delivered while the ack was held: {:?}",
        events.seen
    );

    // Released: the flood flows again, many times the limit.
    probe.do_send(ReleaseAcks {
        keep_holding: false,
    });
    let mut more = 0;
    seen.extend(
        events
            .until(|event| {
                if let SubEvent::Data(STDOUT, data) = event {
                    more += data.len();
                }
                more > 16 * LIMIT
            })
            .await,
    );
    let flowing = stats(&stdout).await;
    // More than 16 limits delivered since the release, and at most one limit was read before.
    assert!(
        flowing.bytes_received > held.bytes_received + 15 * LIMIT as u64,
        "{flowing:?} after {held:?}"
    );
    assert!(flowing.read_buffer_peak <= LIMIT, "{flowing:?}");

    // Close kills it.
    handle.close();
    seen.extend(events.until_lost().await);
    let run = check_run(&seen);
    assert_eq!(run.status().signal(), Some(SIGKILL), "{}", run.status());
    assert_eq!(run.pipes_lost, all_pipes_ended_cleanly());
    let flood = &run.output[&STDOUT];
    assert!(
        flood.iter().all(|&byte| byte == b'x'),
        "the flood is all 'x'"
    );
}

async fn pause_reading_from_connection_made_holds_stdout_back() {
    const LINES: usize = 50;
    let (handle, _probe, mut events) = spawn_probed(
        child(&["interleave", &LINES.to_string()]),
        SubProbeOptions {
            pause_on_made: vec![STDOUT],
            ..SubProbeOptions::default()
        },
    )
    .expect("spawn");
    events.made().await;
    // The child writes each stdout line before its stderr line: once stderr ended and the
    // child exited, all of stdout waits in the pipe.
    let (mut stderr_ended, mut exited) = (false, false);
    let mut seen = events
        .until(|event| {
            match event {
                SubEvent::PipeLost(STDERR, _) => stderr_ended = true,
                SubEvent::Exited { .. } => exited = true,
                _ => {}
            }
            stderr_ended && exited
        })
        .await;
    assert!(
        !seen.iter().any(|event| matches!(
            event,
            SubEvent::Data(STDOUT, _) | SubEvent::PipeLost(STDOUT, _)
        )),
        "stdout delivered while paused: {:?}",
        events.seen
    );
    let stdout = handle.pipe(STDOUT).expect("stdout is open");
    assert_eq!(stats(&stdout).await.bytes_received, 0, "read while paused");
    assert!(!stdout.send(IsReading).await.expect("alive"));

    stdout.resume_reading();
    seen.extend(events.until_lost().await);
    let run = check_run(&seen);
    assert_eq!(run.text(STDOUT), lines("out", LINES));
    assert_eq!(run.text(STDERR), lines("err", LINES));
    assert_eq!(run.pipes_lost, all_pipes_ended_cleanly());
    assert!(run.status().success());
}

async fn holding_the_connection_made_ack_holds_every_pipe() {
    const LINES: usize = 5;
    let (handle, probe, mut events) = spawn_probed(
        child(&["interleave", &LINES.to_string()]),
        SubProbeOptions {
            hold_made: true,
            ..SubProbeOptions::default()
        },
    )
    .expect("spawn");
    events.made().await;
    // The child writes both streams and exits; ProcessExited is no pipe event, so it comes.
    let mut seen = events
        .until(|event| matches!(event, SubEvent::Exited { .. }))
        .await;
    assert_eq!(
        seen.len(),
        1,
        "a pipe delivered before ConnectionMade was acknowledged: {:?}",
        events.seen
    );
    // Every pipe has had its chance: stdin's reader is gone, stdout and stderr hold the output
    // and their EOF.
    events.assert_quiet(Duration::from_millis(300)).await;
    for fd in [STDOUT, STDERR] {
        let pipe = handle.pipe(fd).expect("piped and open");
        assert_eq!(stats(&pipe).await.bytes_received, 0, "pipe {fd} read");
    }

    probe.do_send(ReleaseMade);
    seen.extend(events.until_lost().await);
    let run = check_run(&seen);
    assert_eq!(run.text(STDOUT), lines("out", LINES));
    assert_eq!(run.text(STDERR), lines("err", LINES));
    assert_eq!(run.pipes_lost, all_pipes_ended_cleanly());
    assert!(run.status().success());
}

async fn streams_not_piped_have_no_pipe_and_no_events() {
    // Stdout to /dev/null: no fd-1 event, stderr as ever.
    let run = run_to_end(child(&["interleave", "20"]).stdout(Stdio::null())).await;
    assert!(!run.output.contains_key(&STDOUT), "{:?}", run.output);
    assert_eq!(run.text(STDERR), lines("err", 20));
    assert_eq!(
        run.pipes_lost,
        BTreeMap::from([(STDIN, None), (STDERR, None)])
    );

    // Only stderr piped, on a running child: no pipe 0 nor 1, nor any other fd.
    let (handle, _probe, mut events) = spawn_probed(
        child(&["hang"]).stdin(Stdio::null()).stdout(Stdio::null()),
        SubProbeOptions::default(),
    )
    .expect("spawn");
    events.made().await;
    assert!(handle.pipe(STDIN).is_none(), "stdin was not piped");
    assert!(handle.pipe(STDOUT).is_none(), "stdout was not piped");
    assert!(handle.pipe(3).is_none());
    assert!(handle.pipe(-1).is_none());
    assert!(
        handle
            .send(GetPipeTransport(STDERR))
            .await
            .expect("alive")
            .is_some(),
        "stderr is piped"
    );
    handle.close();
    let run = check_run(&events.until_lost().await);
    assert_eq!(run.pipes_lost, BTreeMap::from([(STDERR, None)]));
    assert_eq!(run.status().signal(), Some(SIGKILL));
}

async fn stderr_to_stdout_arrives_on_fd_1_in_the_order_written() {
    const LINES: usize = 200;
    let run = run_to_end(child(&["interleave", &LINES.to_string()]).stderr_to_stdout()).await;
    // Each line is flushed before the next is written, to the one pipe both streams share.
    let merged: String = (0..LINES).map(|i| format!("out {i}\nerr {i}\n")).collect();
    assert_eq!(run.text(STDOUT), merged);
    assert!(!run.output.contains_key(&STDERR));
    assert_eq!(
        run.pipes_lost,
        BTreeMap::from([(STDIN, None), (STDOUT, None)])
    );
    assert!(run.status().success());

    // No pipe 2 (asyncio's get_pipe_transport(2) is None with stderr=STDOUT).
    let (handle, _probe, mut events) = spawn_probed(
        child(&["hang"]).stderr_to_stdout(),
        SubProbeOptions::default(),
    )
    .expect("spawn");
    events.made().await;
    assert!(handle.pipe(STDERR).is_none());
    assert!(handle.pipe(STDOUT).is_some());
    handle.close();
    let run = check_run(&events.until_lost().await);
    assert_eq!(
        run.pipes_lost,
        BTreeMap::from([(STDIN, None), (STDOUT, None)])
    );
}

async fn missing_program_fails_and_makes_no_protocol() {
    let not_executable = tempfile::NamedTempFile::new().expect("temp file");
    for (program, kind) in [
        ("/nonexistent/sb-child".into(), io::ErrorKind::NotFound),
        ("sb-child-not-in-path".into(), io::ErrorKind::NotFound),
        (
            not_executable.path().to_owned(),
            io::ErrorKind::PermissionDenied,
        ),
    ] {
        let mut made = false;
        let result = subprocess::spawn(Command::new(&program), || {
            made = true;
            SubProbe::new(SubProbeOptions::default()).0.start()
        });
        let err = result.expect_err("spawning a program that cannot run");
        assert_eq!(err.kind(), kind, "{}: {err}", program.display());
        assert!(!made, "{}: a protocol was made", program.display());
    }
}

async fn protocol_that_stops_gets_its_child_killed() {
    let (handle, probe, mut events) = hung_child().await;
    let pid = handle.pid();
    assert!(is_our_child(pid));
    probe.do_send(StopProbe);
    assert!(events.next().await.is_none(), "the probe stopped");
    eventually(
        "the child of a stopped protocol is killed and collected",
        || !is_our_child(pid),
    )
    .await;
    eventually("the transport of a stopped protocol stops", || {
        !handle.is_alive()
    })
    .await;
    assert_eq!(
        handle.returncode().and_then(|status| status.signal()),
        Some(SIGKILL)
    );
}

async fn extra_info_subprocess_and_pipe() {
    let (handle, _probe, mut events) = hung_child().await;
    let info = handle
        .send(GetExtraInfo::new(keys::SUBPROCESS))
        .await
        .expect("alive");
    assert_eq!(
        info,
        Some(ExtraInfo::Subprocess(ProcessInfo::new(handle.pid())))
    );
    assert_eq!(handle.send(GetPid).await.expect("alive"), handle.pid());
    assert!(is_our_child(handle.pid()), "the pid is our child's");
    // Only `subprocess`: other keys give the caller's default, or None.
    assert_eq!(
        handle
            .send(GetExtraInfo::new(keys::PEERNAME))
            .await
            .expect("alive"),
        None
    );
    let default = ExtraInfo::Text("fallback".into());
    assert_eq!(
        handle
            .send(GetExtraInfo::new("no-such-key").or(default.clone()))
            .await
            .expect("alive"),
        Some(default)
    );
    // Each pipe transport describes its pipe: our end of it, open in this process.
    for (fd, end) in [
        (STDIN, PipeEnd::Write),
        (STDOUT, PipeEnd::Read),
        (STDERR, PipeEnd::Read),
    ] {
        let pipe = handle.pipe(fd).expect("piped");
        let Some(ExtraInfo::Pipe(info)) = pipe.get_extra_info(keys::PIPE).await else {
            panic!("pipe {fd} has no `pipe` extra info");
        };
        assert_eq!(info.end, end, "pipe {fd}");
        assert_eq!(info.file_type, PipeFileType::Fifo, "pipe {fd}");
        assert!(
            std::fs::metadata(format!("/proc/self/fd/{}", info.fd)).is_ok(),
            "pipe {fd}: descriptor {} is not open",
            info.fd
        );
    }
    handle.close();
    check_run(&events.until_lost().await);
}

async fn shell_and_exec_forms() {
    let (probe, mut events) = SubProbe::new(SubProbeOptions::default());
    let (handle, _) = subprocess::shell("echo $((6*7)); exit 3", || probe.start()).expect("sh -c");
    assert!(events.made().await.same_transport(&handle));
    let run = check_run(&events.until_lost().await);
    assert_eq!(run.text(STDOUT), "42\n");
    assert_eq!(run.status().code(), Some(3));

    let (probe, mut events) = SubProbe::new(SubProbeOptions::default());
    subprocess::exec(process::child_program(), ["exit", "5"], || probe.start())
        .expect("exec sb-child");
    events.made().await;
    let run = check_run(&events.until_lost().await);
    assert_eq!(run.status().code(), Some(5));
}

async fn child_closing_its_stdin_ends_pipe_0_without_a_write() {
    let (handle, _probe, mut events) =
        spawn_probed(child(&["close-stdin", "30000"]), SubProbeOptions::default()).expect("spawn");
    events.made().await;
    // The child closes its stdin, then prints "closed\n"; a Close drops what was not read yet,
    // so wait for both.
    let (mut stdout, mut stdin_end) = (Vec::new(), None);
    let mut seen = events
        .until(|event| {
            match event {
                SubEvent::Data(STDOUT, data) => stdout.extend_from_slice(data),
                SubEvent::PipeLost(STDIN, err) => {
                    stdin_end = Some(err.as_ref().map(io::Error::kind));
                }
                _ => {}
            }
            stdout == b"closed\n" && stdin_end.is_some()
        })
        .await;
    assert_eq!(stdin_end, Some(None), "nothing was buffered: no error");
    // The child sleeps 30 s: pipe 0 ended because it closed its stdin, not because it exited.
    assert!(
        !seen
            .iter()
            .any(|event| matches!(event, SubEvent::Exited { .. }))
    );
    assert_eq!(handle.send(GetReturnCode).await.expect("alive"), None);

    // A write now fails; nothing panics.
    if let Some(stdin) = handle.pipe(STDIN) {
        stdin
            .write_acked("too late")
            .await
            .expect_err("a write to a stdin the child closed");
    }

    handle.close();
    seen.extend(events.until_lost().await);
    let run = check_run(&seen);
    assert_eq!(run.text(STDOUT), "closed\n");
    assert_eq!(run.pipes_lost, all_pipes_ended_cleanly());
    assert_eq!(run.status().signal(), Some(SIGKILL));
}

async fn stdin_bytes_the_child_never_read_end_pipe_0_with_broken_pipe() {
    let (handle, _probe, mut events) = hung_child().await;
    let stdin = handle.pipe(STDIN).expect("stdin is piped");
    // The child never reads: the pipe fills and the rest waits in the transport.
    stdin.write(vec![b'x'; 1 << 20]);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while stdin.send(GetWriteBufferSize).await.expect("stdin is open") == 0 {
        assert!(tokio::time::Instant::now() < deadline, "nothing buffered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.kill().await.expect("SIGKILL");
    let run = check_run(&events.until_lost().await);
    assert_eq!(
        run.pipes_lost[&STDIN],
        Some(io::ErrorKind::BrokenPipe),
        "bytes left unwritten when the reader went away"
    );
    assert_eq!(run.status().signal(), Some(SIGKILL));
}

/// The checker the other tests rely on rejects each disorder it is there to catch.
#[test]
fn check_run_rejects_what_the_order_forbids() {
    let exited = || SubEvent::Exited {
        status: ExitStatus::from_raw(0),
        returncode: None,
    };
    let data = |fd, bytes: &'static [u8]| SubEvent::Data(fd, Bytes::from_static(bytes));
    let pcl = |fd| SubEvent::PipeLost(fd, None);
    let lost = || SubEvent::Lost(None);
    let good = vec![
        data(1, b"a"),
        exited(),
        pcl(1),
        data(2, b"b"),
        pcl(2),
        lost(),
    ];
    assert_eq!(check_run(&good).text(STDOUT), "a");
    let bad: Vec<(&str, Vec<SubEvent>)> = vec![
        (
            "data after its pipe's end",
            vec![pcl(1), data(1, b"a"), exited(), lost()],
        ),
        (
            "an empty chunk",
            vec![data(1, b""), pcl(1), exited(), lost()],
        ),
        ("data from stdin", vec![data(0, b"a"), exited(), lost()]),
        (
            "a pipe ending twice",
            vec![pcl(1), pcl(1), exited(), lost()],
        ),
        ("two exits", vec![exited(), exited(), lost()]),
        ("lost before the exit", vec![pcl(1), lost()]),
        ("lost not last", vec![exited(), lost(), pcl(1)]),
        (
            "lost with an error",
            vec![exited(), SubEvent::Lost(Some(io::ErrorKind::Other.into()))],
        ),
        ("resume without pause", vec![SubEvent::ResumeWriting]),
    ];
    for (what, events) in bad {
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check_run(&events)));
        assert!(caught.is_err(), "check_run accepted {what}");
    }
}

#[test]
fn fds_and_zombies_after_a_thousand_spawns() {
    let _census = CENSUS.write().unwrap_or_else(PoisonError::into_inner);
    actix_rt::System::new().block_on(support::deadline(thousand_spawns()));
}

async fn thousand_spawns() {
    const SPAWNS: usize = 1000;
    const AT_ONCE: usize = 4;
    let short = || child(&["exit", "0"]);
    // Warm-up: the runtime opens its signal and process descriptors on first use.
    assert!(run_to_end(short()).await.status().success());
    let baseline = support::open_fds();

    for _ in 0..SPAWNS / AT_ONCE {
        let batch = (0..AT_ONCE).map(|_| run_to_end(short()));
        for run in futures::future::join_all(batch).await {
            assert!(run.status().success(), "{}", run.status());
        }
    }

    // ProcessExited comes after the status was collected, so no zombie is left now.
    assert_eq!(our_zombies(), Vec::<u32>::new(), "zombie children");
    // The last pipe transports may be dropped just after their ConnectionLost.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while support::open_fds() > baseline {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} descriptors open after {SPAWNS} spawns, {baseline} before: {:?}",
            support::open_fds(),
            open_fd_targets()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What this process's descriptors point at, for a failure message.
fn open_fd_targets() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            Some(format!(
                "{} -> {}",
                entry.file_name().to_string_lossy(),
                target.display()
            ))
        })
        .collect()
}

/// A factory that panics fails the spawn with a
/// [`FactoryPanicked`](switchboard::FactoryPanicked) error instead of unwinding through the
/// caller, and the child it was for is killed and collected.
async fn a_panicking_factory_fails_the_spawn_and_kills_the_child() {
    let marker = format!("factory-panic-{}", std::process::id());
    let result = subprocess::spawn(child(&["hang", &marker]), || -> Addr<SubProbe> {
        panic!("factory told to panic")
    });
    let err = result.expect_err("the factory panicked");
    assert_eq!(
        switchboard::FactoryPanicked::of(&err).map(|err| err.message().to_owned()),
        Some("factory told to panic".to_owned()),
        "{err}"
    );
    let ours_with_marker = || {
        std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| is_our_child(pid))
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                    cmdline
                        .windows(marker.len())
                        .any(|w| w == marker.as_bytes())
                })
            })
            .count()
    };
    eventually(
        "the child of a failed spawn is killed and collected",
        || ours_with_marker() == 0,
    )
    .await;
    let after = run_to_end(child(&["exit", "3"])).await;
    assert_eq!(
        after.status.and_then(|status| status.code()),
        Some(3),
        "spawning goes on"
    );
}
