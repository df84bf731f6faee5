//! Every server example shuts down in a bounded time, whatever its clients do.
//!
//! A client that sends a flood of requests and never reads the replies holds a graceful close
//! up forever (the replies can never be flushed). On SIGTERM each server closes its connections
//! gracefully, aborts the ones still open after `--grace`, and exits 0 within `--grace` and a
//! second; a second signal (SIGINT after SIGTERM) aborts at once, and the server exits within a
//! second of it. Each server runs as a process, with a plain std socket as its client.

#[path = "support/process.rs"]
mod process;

use std::{
    io::Write,
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use process::{Process, example_command};

const MIB: usize = 1024 * 1024;

/// How long the server may take to exit beyond what it was told (its grace, or nothing after a
/// second signal).
const MARGIN: Duration = Duration::from_secs(1);

/// A server example, the request it answers, and how much of it a client that never reads
/// sends: enough for the server to hold about 10 MiB of replies it cannot deliver, or to stop
/// reading (`echo_server` and `kv_server` pause reading while their write buffer is full).
struct Case {
    example: &'static str,
    args: &'static [&'static str],
    request: &'static [u8],
    flood: usize,
    /// Whether the server answers the flood, so that unsent replies hold the graceful close up
    /// for the whole grace period.
    answers: bool,
}

const CASES: &[Case] = &[
    Case {
        example: "echo_server",
        args: &["--workers", "1"],
        request: b"0123456789abcdef",
        flood: 10 * MIB,
        answers: true,
    },
    Case {
        example: "kv_server",
        args: &["--workers", "1"],
        request: b"GET key\n",
        flood: 10 * MIB,
        answers: true,
    },
    Case {
        example: "smtp_server",
        args: &[],
        // A six-line reply, 10 times its command: 1 MiB of commands (as many as a debug build
        // answers in well under a second of CPU) makes some 10 MiB of replies, far more than
        // the socket buffers of a client that never reads hold.
        request: b"EHLO client.example\r\n",
        flood: MIB,
        answers: true,
    },
    Case {
        example: "websocket_echo",
        args: &[],
        // The index page, about 900 bytes, for 37.
        request: b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        flood: MIB / 2,
        answers: true,
    },
    // The room drops a client that does not read once its write buffer is full, so nothing
    // is left to hold the close up; the shutdown must still be bounded.
    Case {
        example: "chat_server",
        args: &["--workers", "1"],
        request: b"a line for the others\n",
        flood: MIB,
        answers: false,
    },
];

/// A running server example with a connected client that floods it and never reads.
struct Flooded {
    server: Process,
    _client: TcpStream,
    sent: Arc<AtomicUsize>,
}

impl Flooded {
    fn start(case: &Case, grace: &str, maildir: &std::path::Path) -> Flooded {
        let mut command = example_command(case.example, "warn");
        command
            .args(["--addr", "127.0.0.1:0", "--grace", grace])
            .args(case.args);
        if case.example == "smtp_server" {
            command.arg("--maildir").arg(maildir);
        }
        let server = Process::spawn(case.example, command);
        let addr = server.listening_on();
        let client = TcpStream::connect(&addr).expect("connect");
        let sent = Arc::new(AtomicUsize::new(0));
        let flood: Vec<u8> = case
            .request
            .iter()
            .copied()
            .cycle()
            .take(case.flood / case.request.len() * case.request.len())
            .collect();
        let total = flood.len();
        let mut writer = client.try_clone().expect("clone the socket");
        let counter = sent.clone();
        thread::spawn(move || {
            // Until the server stops reading (or the connection ends): the client never reads.
            for chunk in flood.chunks(64 * 1024) {
                if writer.write_all(chunk).is_err() {
                    return;
                }
                counter.fetch_add(chunk.len(), Ordering::SeqCst);
            }
        });
        let flooded = Flooded {
            server,
            _client: client,
            sent,
        };
        flooded.wait_until_stuck(total);
        flooded
    }

    /// Waits until the flood is stuck: the client has sent it all or makes no progress, and
    /// the server has done with what it read (its CPU time stands still). It then holds
    /// replies it cannot deliver, and has stopped reading or read everything; what the test
    /// measures next is the shutdown alone, not a backlog of requests still being answered.
    fn wait_until_stuck(&self, total: usize) {
        let deadline = Instant::now() + process::TIMEOUT;
        let sample = || {
            (
                self.sent.load(Ordering::SeqCst),
                cpu_ticks(self.server.pid()),
            )
        };
        let mut last = (sample(), Instant::now());
        loop {
            thread::sleep(Duration::from_millis(50));
            let now = sample();
            let (sent, _) = now;
            if sent > 0 && now == last.0 && last.1.elapsed() > Duration::from_millis(300) {
                return;
            }
            if now != last.0 {
                last = (now, Instant::now());
            }
            assert!(
                Instant::now() < deadline,
                "still busy after {:?}: the client sent {sent} of {total} bytes",
                process::TIMEOUT
            );
        }
    }

    /// Sends `first`, then `second` after `second_after` if given; returns how long the server
    /// took to exit after the last signal, having checked it exited 0 within `bound` of it.
    fn stop(mut self, first: &str, second: Option<(&str, Duration)>, bound: Duration) -> Duration {
        self.server.signal(first);
        let mut start = Instant::now();
        if let Some((second, after)) = second {
            thread::sleep(after);
            assert!(
                self.server.try_status().is_none(),
                "{} exited before the second signal",
                self.server.name()
            );
            self.server.signal(second);
            start = Instant::now();
        }
        let status = self.server.wait(bound);
        let took = start.elapsed();
        let name = self.server.name().to_owned();
        let finished = self.server.finish(MARGIN);
        assert_eq!(
            status.code(),
            Some(0),
            "{name} exit status ({status}); stderr:\n{}",
            finished.stderr_text()
        );
        took
    }
}

/// The user and system CPU time of process `pid`, in clock ticks (`/proc/PID/stat`, fields 14
/// and 15).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // "pid (comm) state ppid ...": comm may hold spaces, so count from the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

#[test]
fn sigterm_ends_a_client_that_never_reads_after_the_grace() {
    let maildir = tempfile::tempdir().expect("temp dir");
    let grace = Duration::from_secs(1);
    // One server at a time: ten server processes and their floods at once on two cores would
    // measure the machine's load, not the shutdown.
    for case in CASES {
        let flooded = Flooded::start(case, "1", &maildir.path().join(case.example));
        let took = flooded.stop("TERM", None, grace + MARGIN);
        eprintln!("{}: exited {took:?} after SIGTERM", case.example);
        if case.answers {
            assert!(
                took >= grace - Duration::from_millis(100),
                "{} exited after {took:?}, before its grace period: the flood's replies could \
                 not have been delivered",
                case.example
            );
        }
    }
}

#[test]
fn a_second_signal_aborts_at_once() {
    let maildir = tempfile::tempdir().expect("temp dir");
    for case in CASES {
        // A grace far longer than the test: only the second signal can end it in time.
        let flooded = Flooded::start(case, "60", &maildir.path().join(case.example));
        let took = flooded.stop("TERM", Some(("INT", Duration::from_millis(300))), MARGIN);
        eprintln!("{}: exited {took:?} after the second signal", case.example);
    }
}
