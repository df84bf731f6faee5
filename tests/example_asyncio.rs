//! The book's chapter "Coming from asyncio" puts two echo servers side by side: the asyncio one,
//! `examples/asyncio/echo_server.py`, and switchboard's, `examples/echo_server.rs`. These tests
//! run both as processes and point the same client at each, switchboard's `echo_client`, to
//! check what the chapter says of them:
//!
//! - each prints exactly one line on stdout, `listening on ADDR`, with the port really bound;
//! - `printf 'hi\n' | echo_client` prints `hi`, and a mebibyte comes back byte-exact, from
//!   either server, to the same client with the same arguments;
//! - a client that half-closes gets everything echoed, then the server's EOF: the default
//!   `eof_received` (asyncio) and the default `EofReceived` (switchboard) both close after
//!   flushing;
//! - on SIGTERM each server stops accepting, closes its connections and exits 0.
//!
//! That the chapter's includes name anchors that exist is checked for every chapter by
//! `.ci/book-check.py`.
//!
//! Every child process is killed when its test fails, and every wait is bounded.

#[path = "support/process.rs"]
mod process;

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    path::Path,
    thread,
    time::Duration,
};

use process::{
    Finished, Process, TIMEOUT, assert_same_bytes, example_command, pseudo_random, python_command,
};

/// One mebibyte: the "large" payload.
const MIB: usize = 1024 * 1024;

/// How long a server may take to exit after SIGTERM.
const EXIT_BOUND: Duration = Duration::from_secs(10);

/// The two echo servers of the chapter.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `python3 examples/asyncio/echo_server.py`.
    Asyncio,
    /// `cargo run --example echo_server`.
    Switchboard,
}

/// A running echo server whose `listening on ADDR` line has been read.
struct EchoServer {
    kind: Kind,
    process: Process,
    /// ADDR, as printed.
    addr: String,
}

impl EchoServer {
    /// Starts the server on a free loopback port, with the same arguments for both kinds.
    fn start(kind: Kind) -> EchoServer {
        let mut command = match kind {
            Kind::Asyncio => python_command(
                &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/asyncio/echo_server.py"),
            ),
            Kind::Switchboard => example_command("echo_server", "warn"),
        };
        command.args(["--addr", "127.0.0.1:0"]);
        let process = Process::spawn(&format!("{kind:?} echo server"), command);
        let addr = process.listening_on();
        let bound: SocketAddr = addr
            .parse()
            .unwrap_or_else(|err| panic!("{kind:?}: `{addr}` is not a socket address: {err}"));
        assert!(bound.ip().is_loopback(), "{kind:?}: bound to {bound}");
        assert_ne!(bound.port(), 0, "{kind:?}: the line shows the port bound");
        EchoServer {
            kind,
            process,
            addr,
        }
    }

    fn tcp_addr(&self) -> SocketAddr {
        self.addr.parse().expect("checked in start")
    }

    /// Sends SIGTERM and checks that the server exits 0 within [`EXIT_BOUND`], having printed
    /// nothing on stdout but its one line.
    fn stop(mut self) {
        self.process.signal("TERM");
        let finished = self.process.finish(EXIT_BOUND);
        assert_eq!(
            finished.status.code(),
            Some(0),
            "{:?} server's exit status ({}); stderr:\n{}",
            self.kind,
            finished.status,
            finished.stderr_text()
        );
        assert_eq!(
            finished.stdout_text(),
            format!("listening on {}\n", self.addr),
            "{:?}: one line on stdout over the server's whole life",
            self.kind
        );
    }
}

/// Runs `echo_client --addr ADDR` against `server` with `input` on its stdin, to completion.
fn run_echo_client(server: &EchoServer, input: Vec<u8>) -> Finished {
    let mut command = example_command("echo_client", "warn");
    command.args(["--addr", &server.addr]);
    Process::spawn_with_input("echo_client", command, input).finish(TIMEOUT)
}

/// Checks that `echo_client` exited 0 having printed exactly `input`.
#[track_caller]
fn assert_echoed(kind: Kind, finished: &Finished, input: &[u8]) {
    assert_eq!(
        finished.status.code(),
        Some(0),
        "echo_client against the {kind:?} server: exit status ({}); stderr:\n{}",
        finished.status,
        finished.stderr_text()
    );
    assert_same_bytes(
        &finished.stdout,
        input,
        &format!("echo_client's stdout, against the {kind:?} server"),
    );
}

/// The chapter's commands, literally: `printf 'hi\n' | echo_client --addr ADDR` prints `hi`
/// when ADDR is the asyncio server.
#[test]
fn echo_client_prints_hi_from_the_asyncio_server() {
    let server = EchoServer::start(Kind::Asyncio);
    let finished = run_echo_client(&server, b"hi\n".to_vec());
    assert_echoed(Kind::Asyncio, &finished, b"hi\n");
    assert_eq!(finished.stdout_text(), "hi\n");
    server.stop();
}

/// The same client, the same arguments and the same mebibyte, against each server in turn: the
/// client cannot tell them apart.
#[test]
fn the_same_client_gets_the_same_bytes_from_both_servers() {
    let input = pseudo_random(MIB, 10);
    let mut outputs = Vec::new();
    for kind in [Kind::Asyncio, Kind::Switchboard] {
        let server = EchoServer::start(kind);
        let finished = run_echo_client(&server, input.clone());
        assert_echoed(kind, &finished, &input);
        outputs.push(finished.stdout);
        server.stop();
    }
    assert_eq!(outputs[0], outputs[1], "both servers echo the same bytes");
}

/// A plain socket writes a payload in pieces, half-closes, and reads until EOF: each server
/// echoes everything, then closes (EOF, not a reset), which is the default end of both
/// `eof_received` and `EofReceived`.
#[test]
fn both_servers_finish_echoing_after_a_half_close_then_close() {
    let payload = pseudo_random(256 * 1024, 11);
    for kind in [Kind::Asyncio, Kind::Switchboard] {
        let server = EchoServer::start(kind);
        let stream = TcpStream::connect(server.tcp_addr()).expect("connect to the server");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        // Write on another thread while this one reads, so neither side's buffers can fill up.
        let writer = thread::spawn({
            let mut stream = stream.try_clone().unwrap();
            let payload = payload.clone();
            move || {
                for piece in payload.chunks(10_000) {
                    stream.write_all(piece)?;
                }
                stream.shutdown(Shutdown::Write)
            }
        });
        let mut echoed = Vec::new();
        (&stream)
            .read_to_end(&mut echoed)
            .unwrap_or_else(|err| panic!("{kind:?}: a graceful close, EOF, expected: {err}"));
        writer
            .join()
            .expect("the writer thread does not panic")
            .unwrap_or_else(|err| panic!("{kind:?}: writing the payload failed: {err}"));
        assert_same_bytes(&echoed, &payload, &format!("{kind:?} server's echo"));
        server.stop();
    }
}
