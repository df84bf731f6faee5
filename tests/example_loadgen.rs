//! The benchmark's tools run as processes: `tokio_echo` (the baseline) is a working echo
//! server with `echo_server`'s flags and first line, and `loadgen` drives both in every mode and
//! reports what it did as one JSON line, with the server's CPU time and memory read from `/proc`.
//!
//! These check what the tools do, never how fast: the figures themselves belong to
//! `cargo bench --bench echo`, on a quiet machine.

#[path = "support/process.rs"]
mod process;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::Command,
};

use process::{Process, TIMEOUT, example_command};
use serde_json::Value;

/// A server example (`tokio_echo` or `echo_server`) listening on a free loopback port.
struct Server {
    process: Process,
    addr: SocketAddr,
}

impl Server {
    fn start(name: &str, extra_args: &[&str]) -> Server {
        let mut command = example_command(name, "warn");
        command.args(["--addr", "127.0.0.1:0"]).args(extra_args);
        let process = Process::spawn(name, command);
        let line = process
            .stdout()
            .first_line(TIMEOUT)
            .unwrap_or_else(|| panic!("{name} printed no line: {}", process.stderr().text()));
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.trim_end().parse().ok())
            .unwrap_or_else(|| panic!("{name}'s first line is {line:?}, not `listening on ADDR`"));
        Server { process, addr }
    }

    /// Stops the server with SIGTERM; it must exit 0.
    fn stop(mut self) {
        self.process.signal("TERM");
        let status = self.process.wait(TIMEOUT);
        assert!(
            status.success(),
            "{} exited with {status}: {}",
            self.process.name(),
            self.process.stderr().text()
        );
    }
}

/// Runs `loadgen` against `server` and returns its JSON report.
fn loadgen(server: &Server, args: &[&str]) -> Value {
    let mut command: Command = example_command("loadgen", "warn");
    command
        .args(["--addr", &server.addr.to_string()])
        .args(["--server-pid", &server.process.pid().to_string()])
        .args(["--warmup", "0.1"])
        .args(args);
    if !args.contains(&"--duration") {
        command.args(["--duration", "0.3"]);
    }
    let finished = Process::spawn("loadgen", command).finish(TIMEOUT);
    assert!(
        finished.status.success(),
        "loadgen {args:?} failed: {}",
        finished.stderr_text()
    );
    let stdout = finished.stdout_text();
    assert_eq!(stdout.lines().count(), 1, "one JSON line, not {stdout:?}");
    serde_json::from_str(&stdout).unwrap_or_else(|err| panic!("{stdout:?} is not JSON: {err}"))
}

fn number(report: &Value, path: &[&str]) -> f64 {
    path.iter()
        .fold(report, |value, key| &value[*key])
        .as_f64()
        .unwrap_or_else(|| panic!("no number at {path:?} in {report}"))
}

/// Every mode against `name`: operations were done, none failed, and the figures agree.
fn every_mode_against(name: &str) {
    let server = Server::start(name, &["--workers", "1"]);

    let pingpong = loadgen(
        &server,
        &["--mode", "pingpong", "--connections", "4", "--size", "100"],
    );
    assert_eq!(pingpong["mode"], "pingpong");
    assert_eq!(number(&pingpong, &["errors"]), 0.0, "{pingpong}");
    let operations = number(&pingpong, &["operations"]);
    assert!(operations > 0.0, "{pingpong}");
    let seconds = number(&pingpong, &["seconds"]);
    let megabytes = number(&pingpong, &["megabytes_per_second"]) * seconds;
    assert!(
        (megabytes * 1e6 - operations * 100.0).abs() < 1.0,
        "each round trip echoes 100 bytes: {pingpong}"
    );
    let (p50, p99, p999) = (
        number(&pingpong, &["latency_us", "p50"]),
        number(&pingpong, &["latency_us", "p99"]),
        number(&pingpong, &["latency_us", "p999"]),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{pingpong}");
    // The server did the echoing, so it used some CPU time, and it holds some memory.
    assert!(
        number(&pingpong, &["server", "cpu_seconds"]) >= 0.0,
        "{pingpong}"
    );
    assert!(
        number(&pingpong, &["server", "rss_after_kib"]) > 0.0,
        "{pingpong}"
    );

    let stream = loadgen(
        &server,
        &["--mode", "stream", "--connections", "2", "--size", "65536"],
    );
    assert_eq!(number(&stream, &["errors"]), 0.0, "{stream}");
    assert!(number(&stream, &["operations"]) > 0.0, "{stream}");
    assert!(number(&stream, &["megabytes_per_second"]) > 0.0, "{stream}");

    let connect = loadgen(&server, &["--mode", "connect", "--connections", "3"]);
    assert_eq!(number(&connect, &["errors"]), 0.0, "{connect}");
    assert!(number(&connect, &["operations"]) > 0.0, "{connect}");
    assert_eq!(number(&connect, &["size"]), 64.0, "connect echoes 64 bytes");

    let idle = loadgen(
        &server,
        &["--mode", "idle", "--connections", "200", "--duration", "0"],
    );
    assert_eq!(number(&idle, &["errors"]), 0.0, "{idle}");
    assert_eq!(
        number(&idle, &["operations"]),
        200.0,
        "every connection opened and echoed once"
    );
    assert!(
        number(&idle, &["server", "rss_after_kib"]) >= number(&idle, &["server", "rss_before_kib"]),
        "{idle}"
    );

    server.stop();
}

#[test]
fn loadgen_drives_the_tokio_baseline_in_every_mode() {
    every_mode_against("tokio_echo");
}

#[test]
fn loadgen_drives_echo_server_in_every_mode() {
    every_mode_against("echo_server");
}

#[test]
fn tokio_echo_echoes_byte_exact_until_the_client_half_closes() {
    for workers in ["0", "2"] {
        let server = Server::start("tokio_echo", &["--workers", workers]);
        let mut stream = TcpStream::connect(server.addr).expect("connect to tokio_echo");
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let mut stream = stream.try_clone().expect("clone the stream");
            let payload = payload.clone();
            std::thread::spawn(move || {
                stream.write_all(&payload).expect("write the payload");
                stream
                    .shutdown(std::net::Shutdown::Write)
                    .expect("half-close");
            })
        };
        let mut echoed = Vec::new();
        stream
            .read_to_end(&mut echoed)
            .expect("read the echo to EOF");
        writer.join().expect("the writer thread");
        assert!(
            echoed == payload,
            "workers {workers}: {} bytes came back",
            echoed.len()
        );
        server.stop();
    }
}

#[test]
fn loadgen_reports_a_refused_server_as_an_error() {
    // A port nobody listens on: bind one, note it, close it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let mut command = example_command("loadgen", "warn");
    command.args(["--addr", &addr.to_string(), "--mode", "pingpong"]);
    let finished = Process::spawn("loadgen", command).finish(TIMEOUT);
    assert!(
        !finished.status.success(),
        "loadgen must fail when it cannot connect"
    );
    assert!(
        finished.stderr_text().contains("refused"),
        "says why: {}",
        finished.stderr_text()
    );
}
