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

/// What a client that never reads sends: 10 MiB of whatever makes the server answer.
const FLOOD: usize = 10 * 1024 * 1024;

/// How long the server may take to exit beyond what it was told (its grace, or nothing after a
/// second signal).
const MARGIN: Duration = Duration::from_secs(1);

/// A server example and the request it answers, repeated in the flood.
struct Case {
    example: &'static str,
    args: &'static [&'static str],
    request: &'static [u8],
    /// Whether the server answers the flood, so that unsent replies hold the graceful close up
    /// for the whole grace period.
    answers: bool,
}

const CASES: &[Case] = &[
    Case {
        example: "echo_server",
        args: &["--workers", "1"],
        request: b"0123456789abcdef",
        answers: true,
    },
    Case {
        example: "kv_server",
        args: &["--workers", "1"],
        request: b"GET key\n",
        answers: true,
    },
    Case {
        example: "smtp_server",
        args: &[],
        request: b"NOOP\r\n",
        answers: true,
    },
    Case {
        example: "websocket_echo",
        args: &[],
        request: b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        answers: true,
    },
    // The room drops a client that does not read once its write buffer is full, so nothing
    // is left to hold the close up; the shutdown must still be bounded.
    Case {
        example: "chat_server",
        args: &["--workers", "1"],
        request: b"a line for the others\n",
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
            .take(FLOOD / case.request.len() * case.request.len())
            .collect();
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
        flooded.wait_until_stuck();
        flooded
    }

    /// Waits until the flood is all sent or makes no progress for a while: the server holds
    /// replies it cannot deliver, and has stopped reading or read everything.
    fn wait_until_stuck(&self) {
        let deadline = Instant::now() + process::TIMEOUT;
        let mut last = (self.sent.load(Ordering::SeqCst), Instant::now());
        loop {
            thread::sleep(Duration::from_millis(50));
            let now = self.sent.load(Ordering::SeqCst);
            let stalled = now > 0 && now == last.0 && last.1.elapsed() > Duration::from_millis(300);
            if stalled || now == FLOOD {
                return;
            }
            if now != last.0 {
                last = (now, Instant::now());
            }
            assert!(
                Instant::now() < deadline,
                "the client sent only {now} bytes within {:?}",
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

#[test]
fn sigterm_ends_a_client_that_never_reads_after_the_grace() {
    let maildir = tempfile::tempdir().expect("temp dir");
    let grace = Duration::from_secs(1);
    // The servers are independent processes: stop them side by side, to keep the test short.
    thread::scope(|scope| {
        for case in CASES {
            let maildir = maildir.path().join(case.example);
            scope.spawn(move || {
                let flooded = Flooded::start(case, "1", &maildir);
                let took = flooded.stop("TERM", None, grace + MARGIN);
                if case.answers {
                    assert!(
                        took >= grace - Duration::from_millis(100),
                        "{} exited after {took:?}, before its grace period: the flood's replies \
                         could not have been delivered",
                        case.example
                    );
                }
            });
        }
    });
}

#[test]
fn a_second_signal_aborts_at_once() {
    let maildir = tempfile::tempdir().expect("temp dir");
    thread::scope(|scope| {
        for case in CASES {
            let maildir = maildir.path().join(case.example);
            scope.spawn(move || {
                // A grace far longer than the test: only the second signal can end it in time.
                let flooded = Flooded::start(case, "60", &maildir);
                flooded.stop("TERM", Some(("INT", Duration::from_millis(300))), MARGIN);
            });
        }
    });
}
