//! The `kv_server` example runs as a process, and plain std sockets check what its docs promise:
//!
//! - a session's replies on the wire (`OK`, `VALUE`, `NOT_FOUND`, `ERR`, `BYE` then EOF), and
//!   the logs on stderr: one line per connection and disconnection, carrying the connection's
//!   `id` and `peer`, and at `debug` one per request, from the store's thread, with the same
//!   fields;
//! - 100 requests pipelined in one write get 100 replies, in order, on two connections at once;
//! - with `--max-connections 2`, a third client is not served until one of the first two
//!   leaves, and then it is;
//! - a client silent for `--idle-timeout` gets `ERR idle timeout` then EOF, while a client that
//!   keeps sending stays;
//! - a line over `--max-line` bytes (even a megabyte without a newline), or not UTF-8, gets an
//!   `ERR` line and the session goes on;
//! - on SIGTERM, a client gets every reply the server had to send, then EOF, and the server
//!   exits 0 within the grace period and logs each step; a client that does not read is aborted
//!   once the grace period is over (or at a second signal), and the server still exits 0.
//!
//! Every child process is killed when its test fails, and every wait is bounded.

#[path = "support/process.rs"]
mod process;

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use process::{Finished, Process, example_command};

/// How long a client waits for a line it expects (or for the server's EOF).
const LINE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client listens to make sure nothing arrives.
const QUIET: Duration = Duration::from_millis(500);

/// How long the server may take to exit after SIGTERM, beyond its grace period.
const EXIT_MARGIN: Duration = Duration::from_secs(3);

/// The `ERR` line of an unknown command.
fn unknown(name: &str) -> String {
    format!("ERR unknown command {name:?} (try SET, GET, DEL or QUIT)")
}

/// A running `kv_server` whose `listening on ADDR` line has been read.
struct KvServer {
    process: Process,
    addr: SocketAddr,
}

impl KvServer {
    /// Starts the server on `127.0.0.1:0` with `RUST_LOG=log` and `extra_args`.
    fn start(log: &str, extra_args: &[&str]) -> KvServer {
        let mut command = example_command("kv_server", log);
        command.args(["--addr", "127.0.0.1:0"]).args(extra_args);
        let process = Process::spawn("kv_server", command);
        let addr = process.listening_on();
        let addr: SocketAddr = addr
            .parse()
            .unwrap_or_else(|err| panic!("`{addr}` is not a socket address: {err}"));
        assert_ne!(addr.port(), 0, "the line must show the port really bound");
        KvServer { process, addr }
    }

    fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Sends `signal`, then checks the server exits 0 within `bound`, having printed nothing
    /// but its one line on stdout; returns what it printed.
    fn stop(mut self, signal: &str, bound: Duration) -> (Finished, Duration) {
        let start = Instant::now();
        self.process.signal(signal);
        let status = self.process.wait(bound);
        let took = start.elapsed();
        let finished = self.process.finish(EXIT_MARGIN);
        assert_eq!(
            status.code(),
            Some(0),
            "kv_server exit status ({status}); stderr:\n{}",
            finished.stderr_text()
        );
        assert_eq!(
            finished.stdout_text(),
            format!("listening on {}\n", self.addr),
            "kv_server prints exactly one line on stdout"
        );
        (finished, took)
    }
}

/// A client over a plain std socket.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let writer = stream.try_clone().expect("clone the socket");
        Client {
            reader: BufReader::new(stream),
            writer,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    /// The next line without its newline, `Ok(None)` at EOF, `Err` after `timeout`.
    fn next_line(&mut self, timeout: Duration) -> io::Result<Option<String>> {
        self.reader.get_ref().set_read_timeout(Some(timeout))?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let line = line
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("a line without its newline: {line:?}"));
        Ok(Some(line.to_owned()))
    }

    /// Checks the next lines are `expected`, in order.
    #[track_caller]
    fn expect(&mut self, expected: &[&str]) {
        for want in expected {
            match self.next_line(LINE_TIMEOUT) {
                Ok(Some(line)) => assert_eq!(&line, want),
                Ok(None) => panic!("EOF while {want:?} was expected"),
                Err(err) => panic!("no {want:?} within {LINE_TIMEOUT:?}: {err}"),
            }
        }
    }

    /// Checks the server closes the connection (EOF, not a reset) with nothing before it.
    #[track_caller]
    fn expect_eof(&mut self) {
        match self.next_line(LINE_TIMEOUT) {
            Ok(None) => {}
            Ok(Some(line)) => panic!("EOF expected, received {line:?}"),
            Err(err) => panic!("no EOF within {LINE_TIMEOUT:?}: {err}"),
        }
    }

    /// Checks nothing arrives for [`QUIET`].
    #[track_caller]
    fn expect_quiet(&mut self) {
        match self.next_line(QUIET) {
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            other => panic!("nothing expected, got {other:?}"),
        }
    }

    /// Waits until at least one byte of a reply has arrived, without reading it.
    fn wait_for_bytes(&mut self) {
        let socket = self.reader.get_ref();
        socket
            .set_read_timeout(Some(LINE_TIMEOUT))
            .expect("timeout");
        let n = socket
            .peek(&mut [0; 1])
            .expect("a reply within the timeout");
        assert_eq!(n, 1, "EOF instead of a reply");
    }
}

/// Sets `key` to a value of `len` bytes; returns the value.
fn set_big(client: &mut Client, key: &str, len: usize) -> String {
    let value = "v".repeat(len);
    client.send(format!("SET {key} {value}\n").as_bytes());
    client.expect(&["OK"]);
    value
}

// ---------------------------------------------------------------------------------------------

#[test]
fn a_session_on_the_wire_and_its_logs() {
    let server = KvServer::start("kv_server=debug", &[]);
    let mut client = server.connect();
    client.send(b"SET greeting hello world\nGET greeting\n");
    client.expect(&["OK", "VALUE hello world"]);
    client.send(b"get greeting\r\nDEL greeting\nDEL greeting\nGET greeting\n");
    client.expect(&["VALUE hello world", "OK", "NOT_FOUND", "NOT_FOUND"]);
    client.send(b"FLY away\nGET\nSET lonely\nGET a b\n\nQUIT now\n");
    client.expect(&[
        &unknown("FLY"),
        "ERR usage: GET key",
        "ERR usage: SET key value",
        "ERR usage: GET key",
        "ERR empty request",
        "ERR usage: QUIT",
    ]);
    client.send(b"SET k v\nQUIT\nGET k\n");
    client.expect(&["OK", "BYE"]);
    client.expect_eof();
    drop(client);

    let (finished, _) = server.stop("TERM", LINE_TIMEOUT);
    let logs = finished.stderr_text();
    let conn = "conn{id=1 peer=127.0.0.1:";
    for (what, needle) in [
        ("the connection", "connected"),
        (
            "a request, logged by the store",
            "request command=SET greeting (11 bytes)",
        ),
        ("the disconnection", "disconnected answered=14"),
    ] {
        assert!(
            logs.lines()
                .any(|line| line.contains(conn) && line.contains(needle)),
            "no log line of {what} ({needle:?}) in the span {conn}...}}:\n{logs}"
        );
    }
    assert!(logs.contains(" INFO kv_server: serving addr="), "{logs}");
}

#[test]
fn a_hundred_pipelined_requests_are_answered_in_order() {
    let server = KvServer::start("info", &["--workers", "2"]);
    let clients: Vec<_> = (0..2)
        .map(|id| {
            let mut client = server.connect();
            thread::spawn(move || {
                // SETs, GETs of what was set, and mistakes the session answers itself, mixed.
                let mut requests = String::new();
                let mut expected = Vec::new();
                for i in 0..100 {
                    match i % 4 {
                        0 => {
                            requests += &format!("SET c{id}k{i} value {i}\n");
                            expected.push("OK".to_owned());
                        }
                        1 => {
                            requests += &format!("GET c{id}k{}\n", i - 1);
                            expected.push(format!("VALUE value {}", i - 1));
                        }
                        2 => {
                            requests += &format!("NOPE{i}\n");
                            expected.push(unknown(&format!("NOPE{i}")));
                        }
                        _ => {
                            requests += &format!("DEL c{id}k{}\n", i - 3);
                            expected.push("OK".to_owned());
                        }
                    }
                }
                client.send(requests.as_bytes());
                let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
                client.expect(&expected);
                client.expect_quiet();
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client's checks failed");
    }
    server.stop("TERM", LINE_TIMEOUT);
}

#[test]
fn past_max_connections_a_client_waits_until_one_leaves() {
    let server = KvServer::start("info", &["--max-connections", "2", "--workers", "1"]);
    let mut first = server.connect();
    let mut second = server.connect();
    first.send(b"SET who first\n");
    first.expect(&["OK"]);
    second.send(b"GET who\n");
    second.expect(&["VALUE first"]);

    // The kernel completes the handshake (the backlog), but the server does not accept.
    let mut third = server.connect();
    third.send(b"GET who\n");
    third.expect_quiet();

    first.send(b"QUIT\n");
    first.expect(&["BYE"]);
    first.expect_eof();
    third.expect(&["VALUE first"]);
    second.send(b"GET who\n");
    second.expect(&["VALUE first"]);
    server.stop("TERM", LINE_TIMEOUT);
}

#[test]
fn an_idle_client_is_told_and_disconnected() {
    let server = KvServer::start("info", &["--idle-timeout", "0.5"]);
    let start = Instant::now();
    let mut idle = server.connect();
    let mut busy = server.connect();

    // Busy sends a request every 150 ms for 1.5 s: never idle for 0.5 s.
    for _ in 0..10 {
        thread::sleep(Duration::from_millis(150));
        busy.send(b"GET x\n");
        busy.expect(&["NOT_FOUND"]);
    }
    idle.expect(&["ERR idle timeout"]);
    idle.expect_eof();
    let idle_for = start.elapsed();
    assert!(
        idle_for >= Duration::from_millis(450),
        "closed after {idle_for:?}, before the idle timeout"
    );

    // Once busy stops, it is idle too, 0.5 s after its last reply.
    let quiet_since = Instant::now();
    busy.expect(&["ERR idle timeout"]);
    busy.expect_eof();
    assert!(quiet_since.elapsed() >= Duration::from_millis(400));

    let (finished, _) = server.stop("TERM", LINE_TIMEOUT);
    let logs = finished.stderr_text();
    assert_eq!(
        logs.matches("idle timeout: closing timeout=500ms").count(),
        2,
        "{logs}"
    );
}

#[test]
fn a_line_too_long_is_refused_and_the_session_goes_on() {
    let server = KvServer::start("info", &["--max-line", "16"]);
    let mut client = server.connect();
    let long = format!("SET k {}\n", "x".repeat(100));
    client.send(long.as_bytes());
    client.send(b"GET k\nSET k short\nGET k\n\xff\xfe\n");
    client.expect(&[
        "ERR line too long (max 16 bytes)",
        "NOT_FOUND",
        "OK",
        "VALUE short",
        "ERR request is not valid UTF-8",
    ]);

    // A megabyte without a newline: one error, nothing held, and the next line is answered.
    client.send(&vec![b'y'; 1024 * 1024]);
    client.expect(&["ERR line too long (max 16 bytes)"]);
    client.send(b"\nGET k\n");
    client.expect(&["VALUE short"]);
    client.expect_quiet();
    server.stop("TERM", LINE_TIMEOUT);
}

#[test]
fn sigterm_delivers_the_pending_replies_then_eof_and_exits_0() {
    let grace = Duration::from_secs(5);
    let server = KvServer::start("info", &["--grace", "5"]);
    let mut client = server.connect();
    let value = set_big(&mut client, "big", 60_000);

    // 40 replies of 60 kB: more than the socket buffers hold at once, so some wait in the
    // server's write buffer when SIGTERM comes.
    client.send("GET big\n".repeat(40).as_bytes());
    client.wait_for_bytes();
    let stopping = thread::spawn(move || server.stop("TERM", grace + EXIT_MARGIN));

    let reply = format!("VALUE {value}");
    for n in 0..40 {
        match client.next_line(LINE_TIMEOUT) {
            Ok(Some(line)) if line == reply => {}
            other => panic!("reply {n}: {:?}", other.map(|line| line.map(|l| l.len()))),
        }
    }
    client.expect_eof();

    let (finished, took) = stopping.join().expect("the server exits 0");
    assert!(
        took < grace,
        "exited {took:?} after SIGTERM, not within the grace"
    );
    let logs = finished.stderr_text();
    for needle in [
        "shutting down: no new connections signal=\"SIGTERM\" connections=1 grace=5s",
        "disconnected answered=41",
        "server closed accepted=1",
    ] {
        assert!(logs.contains(needle), "no {needle:?} in the logs:\n{logs}");
    }
    assert!(logs.contains("conn{id=1 peer=127.0.0.1:"), "{logs}");
    assert!(!logs.contains("aborting"), "{logs}");
}

/// A client that never reads: its replies cannot all be delivered. Returns the server, stopped
/// with `signal` (a second `signal` follows the first after `second_after`, if given), what it
/// logged and how long it took.
fn stop_with_a_client_that_does_not_read(
    extra_args: &[&str],
    second_after: Option<Duration>,
    bound: Duration,
) -> (String, Duration) {
    let server = KvServer::start("info", extra_args);
    let mut client = server.connect();
    set_big(&mut client, "big", 60_000);
    // 12 MB of replies, far more than the socket buffers hold.
    client.send("GET big\n".repeat(200).as_bytes());
    client.wait_for_bytes();

    let pid = server.process.pid();
    if let Some(after) = second_after {
        thread::spawn(move || {
            thread::sleep(after);
            // The server may be gone already (then kill fails, harmlessly).
            let _ = std::process::Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status();
        });
    }
    let (finished, took) = server.stop("TERM", bound);

    // The client was aborted: it reads fewer than its 200 replies, then a reset or EOF.
    client.writer.shutdown(Shutdown::Write).ok();
    let mut received = 0;
    let mut chunk = vec![0; 64 * 1024];
    client
        .reader
        .get_ref()
        .set_read_timeout(Some(LINE_TIMEOUT))
        .expect("timeout");
    loop {
        match client.reader.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
    }
    assert!(
        received < 200 * 60_006,
        "all {received} bytes were delivered"
    );
    (finished.stderr_text(), took)
}

#[test]
fn sigterm_aborts_a_client_that_does_not_read_after_the_grace() {
    let (logs, took) = stop_with_a_client_that_does_not_read(
        &["--grace", "1"],
        None,
        Duration::from_secs(1) + EXIT_MARGIN,
    );
    assert!(took >= Duration::from_millis(900), "exited after {took:?}");
    for needle in [
        "still open after the grace period: aborting them connections=1",
        "server closed accepted=1",
    ] {
        assert!(logs.contains(needle), "no {needle:?} in the logs:\n{logs}");
    }
}

#[test]
fn a_second_signal_aborts_at_once() {
    let (logs, took) = stop_with_a_client_that_does_not_read(
        &["--grace", "60"],
        Some(Duration::from_millis(300)),
        EXIT_MARGIN * 2,
    );
    assert!(took < EXIT_MARGIN * 2, "exited after {took:?}");
    assert!(
        logs.contains("second signal: aborting the connections signal=\"SIGINT\""),
        "{logs}"
    );
}
