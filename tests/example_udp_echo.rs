//! The `udp_echo` example runs as a process, against independent peers (Python's asyncio over
//! UDP, std sockets over Unix datagrams), to check from the outside what its docs promise:
//!
//! - it prints exactly one line on stdout, `listening on ADDR`, with the address really bound
//!   (or the socket's path); its logs go to stderr;
//! - every datagram comes back to its sender byte-exact and whole, as one datagram: empty, tiny,
//!   ordinary and the largest UDP datagram, and hundreds of numbered ones, from several clients
//!   at once, each getting its own;
//! - over a Unix datagram socket, a stale socket file at the path does not stop it, a sender
//!   that never bound cannot be answered and is logged, a client that never reads is held back
//!   by the kernel instead of buffered, and errors sending to a client that went away are logged
//!   while the server serves on;
//! - on SIGINT or SIGTERM it exits 0, and a Unix socket's file is gone.
//!
//! Every child process is killed when its test fails, and every wait is bounded.

#[path = "support/process.rs"]
mod process;

use std::{
    io,
    net::SocketAddr,
    os::unix::net::UnixDatagram,
    path::Path,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use process::{
    Finished, Process, assert_same_bytes, example_command, pseudo_random, python_command,
};

/// How long the server may take to print its line, an echo to come back, or the server to exit.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Where a `udp_echo` serves.
enum Listen<'a> {
    /// `--addr 127.0.0.1:0`.
    Udp,
    /// `--unix PATH`.
    Unix(&'a Path),
}

/// A running `udp_echo` whose `listening on ADDR` line has been read.
struct UdpEcho {
    process: Process,
    /// ADDR, as printed.
    addr: String,
}

impl UdpEcho {
    /// Starts the server with `RUST_LOG=log` and waits for its one line.
    fn start(listen: Listen<'_>, log: &str) -> UdpEcho {
        UdpEcho::start_example("udp_echo", listen, log)
    }

    /// Starts the example `name` (`udp_echo`, or the benchmark's baseline `tokio_udp_echo`).
    fn start_example(name: &str, listen: Listen<'_>, log: &str) -> UdpEcho {
        let mut command = example_command(name, log);
        match listen {
            Listen::Udp => {
                command.args(["--addr", "127.0.0.1:0"]);
            }
            Listen::Unix(path) => {
                command.arg("--unix").arg(path);
            }
        }
        let process = Process::spawn(name, command);
        let addr = process.listening_on();
        match listen {
            Listen::Udp => {
                let bound: SocketAddr = addr
                    .parse()
                    .unwrap_or_else(|err| panic!("`{addr}` is not a socket address: {err}"));
                assert!(bound.ip().is_loopback(), "bound to {bound}, not loopback");
                assert_ne!(bound.port(), 0, "the line must show the port really bound");
            }
            Listen::Unix(path) => {
                assert_eq!(Path::new(&addr), path, "the line shows the socket path");
            }
        }
        UdpEcho { process, addr }
    }

    /// Sends `signal`, then checks that the server exits 0 within [`TIMEOUT`] having printed
    /// nothing but its one line on stdout.
    fn stop(mut self, signal: &str) -> Finished {
        self.process.signal(signal);
        let finished = self.process.finish(TIMEOUT);
        assert_eq!(
            finished.status.code(),
            Some(0),
            "udp_echo exit status ({}); stderr:\n{}",
            finished.status,
            finished.stderr_text()
        );
        assert_eq!(
            finished.stdout_text(),
            format!("listening on {}\n", self.addr),
            "udp_echo prints exactly one line on stdout over its whole life"
        );
        finished
    }
}

// ---------------------------------------------------------------------------------------------
// UDP, with Python's asyncio as an independent client

/// Runs `tests/support/peers/udp_asyncio.py` against `server` and returns its JSON summary,
/// failing the test (with the summary) unless it says `"ok": true`.
fn python_peer(server: &UdpEcho, args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/peers/udp_asyncio.py");
    let mut command = python_command(&script);
    command
        .args(["--addr", &server.addr, "--timeout", "5"])
        .args(args);
    let finished = Process::spawn("python3 udp_asyncio.py", command).finish(TIMEOUT);
    let stdout = finished.stdout_text();
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|err| {
        panic!(
            "the asyncio peer printed no JSON summary ({err}; {}); stdout:\n{stdout}\nstderr:\n{}",
            finished.status,
            finished.stderr_text()
        )
    });
    assert!(
        finished.status.success() && summary["ok"] == true,
        "the asyncio peer failed ({}): {summary:#}\nstderr:\n{}",
        finished.status,
        finished.stderr_text()
    );
    summary
}

/// One asyncio client, stop-and-wait: the empty datagram, 1 byte, 1000 bytes and 65,507 (the
/// largest over IPv4), each echoed byte-exact; then 200 numbered datagrams, 16 in flight.
#[test]
fn asyncio_client_gets_every_datagram_back_whole() {
    let server = UdpEcho::start(Listen::Udp, "warn");
    let summary = python_peer(&server, &["--count", "200"]);
    assert_eq!(summary["sizes"], serde_json::json!([0, 1, 1000, 65507]));
    // One `datagram_received` per datagram: a merged or split echo makes these differ.
    for key in ["sent", "datagram_received", "echoed"] {
        assert_eq!(summary[key], 204, "{key} in {summary:#}");
    }
    server.stop("INT");
}

/// Eight clients at once, each with its own port and its own bytes: every echo goes back to the
/// address it came from.
#[test]
fn concurrent_asyncio_clients_get_their_own_datagrams() {
    let server = UdpEcho::start(Listen::Udp, "warn");
    let summary = python_peer(
        &server,
        &["--clients", "8", "--count", "250", "--sizes", "0,1,1000"],
    );
    for key in ["sent", "datagram_received", "echoed"] {
        assert_eq!(summary[key], 8 * 253, "{key} in {summary:#}");
    }
    server.stop("TERM");
}

/// The benchmark's baseline (`tokio_udp_echo`, plain tokio) passes the same check, so the
/// benchmark compares two servers that do the same work.
#[test]
fn the_tokio_baseline_echoes_as_udp_echo_does() {
    let server = UdpEcho::start_example("tokio_udp_echo", Listen::Udp, "warn");
    let summary = python_peer(&server, &["--count", "200"]);
    for key in ["sent", "datagram_received", "echoed"] {
        assert_eq!(summary[key], 204, "{key} in {summary:#}");
    }
    server.stop("TERM");
}

// ---------------------------------------------------------------------------------------------
// Unix datagram sockets, with std's `UnixDatagram` as the client

/// A unique temporary directory for the sockets (removed when dropped).
fn socket_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("switchboard-example-udp-echo-")
        .tempdir()
        .expect("a temporary directory")
}

/// A client bound to `path` (so it can be answered), with `TIMEOUT` on its receives.
fn unix_client(path: &Path) -> UnixDatagram {
    let client = UnixDatagram::bind(path).expect("bind the client's socket");
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    client
}

/// Receives one datagram (up to 256 KiB) and checks that it came from `server`.
fn receive(client: &UnixDatagram, server: &Path) -> Vec<u8> {
    let mut buf = vec![0; 256 * 1024];
    let (len, from) = client
        .recv_from(&mut buf)
        .unwrap_or_else(|err| panic!("no echo within {TIMEOUT:?}: {err}"));
    assert_eq!(from.as_pathname(), Some(server), "the echo's sender");
    buf.truncate(len);
    buf
}

/// The datagrams a Unix client sends, in order: sizes from empty to 100,000 bytes (more than a
/// UDP datagram can hold), then 200 numbered ones.
fn unix_payloads() -> Vec<Vec<u8>> {
    let mut payloads: Vec<Vec<u8>> = [0, 1, 1000, 65_507, 100_000]
        .iter()
        .zip(1..)
        .map(|(&len, seed)| pseudo_random(len, seed))
        .collect();
    for number in 0..200_u64 {
        let mut payload = format!("{number}:").into_bytes();
        payload.extend(pseudo_random(number as usize % 65, 100 + number));
        payloads.push(payload);
    }
    payloads
}

/// Every datagram over a Unix datagram socket comes back whole and in order (a Unix datagram
/// socket neither loses nor reorders). The path holds a stale socket file when the server
/// starts, and its own file is gone once it exits.
#[test]
fn echo_over_unix_datagram_socket() {
    let dir = socket_dir();
    let path = dir.path().join("echo.sock");
    // A socket file nobody serves any more, as a crashed earlier run leaves behind.
    drop(UnixDatagram::bind(&path).expect("bind the stale socket"));
    assert!(path.exists(), "precondition: the stale file is there");

    let server = UdpEcho::start(Listen::Unix(&path), "warn");
    let client = unix_client(&dir.path().join("client.sock"));
    let payloads = unix_payloads();

    // Read on another thread, so neither side's small queue (`net.unix.max_dgram_qlen`) can hold
    // the exchange up.
    let reader = {
        let client = client.try_clone().unwrap();
        let (server, count) = (path.clone(), payloads.len());
        thread::spawn(move || (0..count).map(|_| receive(&client, &server)).collect())
    };
    for payload in &payloads {
        client.send_to(payload, &path).expect("send to udp_echo");
    }
    let echoes: Vec<Vec<u8>> = reader.join().expect("every echo arrives");
    assert_eq!(echoes.len(), payloads.len());
    for (number, (echo, payload)) in echoes.iter().zip(&payloads).enumerate() {
        assert_same_bytes(echo, payload, &format!("echo {number}"));
    }

    server.stop("TERM");
    assert!(
        !path.exists(),
        "the server's socket file is gone once it exits"
    );
}

/// A sender that never bound has no address: the server cannot answer it, says so on stderr,
/// and answers the next client as before.
#[test]
fn an_unnamed_sender_cannot_be_answered_and_the_server_serves_on() {
    let dir = socket_dir();
    let path = dir.path().join("echo.sock");
    let server = UdpEcho::start(Listen::Unix(&path), "warn");

    let unnamed = UnixDatagram::unbound().unwrap();
    unnamed.send_to(b"who am I", &path).unwrap();
    let client = unix_client(&dir.path().join("client.sock"));
    client.send_to(b"hello", &path).unwrap();
    assert_eq!(receive(&client, &path), b"hello");

    let finished = server.stop("TERM");
    let stderr = finished.stderr_text();
    assert!(
        stderr.contains("(unnamed) cannot be sent to"),
        "the unanswerable datagram is logged; stderr:\n{stderr}"
    );
}

/// How long a client's sends must make no progress before they count as held back.
const STALLED: Duration = Duration::from_millis(200);

/// Sends 1000-byte datagrams from `client` without blocking until the kernel refuses more for
/// [`STALLED`]; returns how many it took. Fails if that does not happen within [`TIMEOUT`].
fn send_until_held_back(client: &UnixDatagram, server: &Path) -> usize {
    client.set_nonblocking(true).unwrap();
    let payload = vec![b'x'; 1000];
    let deadline = Instant::now() + TIMEOUT;
    let (mut sent, mut progress) = (0, Instant::now());
    while progress.elapsed() < STALLED {
        match client.send_to(&payload, server) {
            Ok(_) => {
                sent += 1;
                progress = Instant::now();
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(1));
            }
            Err(err) => panic!("send failed after {sent} datagrams: {err}"),
        }
        assert!(
            Instant::now() < deadline,
            "the client was never held back: {sent} datagrams sent in {TIMEOUT:?}"
        );
    }
    sent
}

/// A Unix client that sends and never reads cannot make the server queue without bound: its
/// queue fills, the echoes wait in the endpoint, past the high-water mark the server stops
/// reading, and the kernel holds the client's sends back. Once that client is gone, the
/// server's sends to it fail, it logs each error, and serves the next client.
#[test]
fn a_unix_client_that_never_reads_is_held_back_and_the_server_serves_on() {
    let dir = socket_dir();
    let path = dir.path().join("echo.sock");
    let server = UdpEcho::start(Listen::Unix(&path), "warn");

    let greedy_path = dir.path().join("greedy.sock");
    let greedy = UnixDatagram::bind(&greedy_path).unwrap();
    let sent = send_until_held_back(&greedy, &path);
    let rss_kib = rss_kib(server.process.pid());
    eprintln!("the client was held back after {sent} datagrams; server RSS {rss_kib} KiB");
    assert!(
        rss_kib < 64 * 1024,
        "the server holds {rss_kib} KiB for one client that does not read"
    );

    // The client goes away; its socket file stays, with nobody behind it.
    drop(greedy);
    let (done, finished) = mpsc::channel();
    let next = dir.path().join("next.sock");
    let server_path = path.clone();
    thread::spawn(move || {
        let client = unix_client(&next);
        // Until the server resumes reading, this send waits in the kernel like the others.
        client.send_to(b"next", &server_path).unwrap();
        let _ = done.send(receive(&client, &server_path));
    });
    let echo = finished
        .recv_timeout(TIMEOUT)
        .expect("the next client is answered once the first one is gone");
    assert_eq!(echo, b"next");

    let finished = server.stop("TERM");
    let stderr = finished.stderr_text();
    assert!(
        stderr.contains("error received; serving on"),
        "the echoes that could not reach the closed client are logged; stderr:\n{stderr}"
    );
}

/// The resident memory of process `pid`, from `/proc`.
fn rss_kib(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS")
}
