//! The book's chapter "Getting started" shows a new crate, `examples/getting-started/`, that
//! depends on switchboard as a user's project does. This test builds it from its own manifest,
//! `examples/getting-started/Cargo.toml`, which the chapter shows (`-p getting-started`), runs it, and talks to it as the chapter says: a greeting, then each
//! line back in upper case, pipelined lines included.

#[path = "support/process.rs"]
mod process;

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    process::Command,
};

use process::{Process, TIMEOUT, workspace_program};

#[test]
fn the_getting_started_server_greets_and_shouts_back() {
    let program = workspace_program(
        "getting-started",
        "getting-started",
        "examples/getting-started",
    );
    let mut command = Command::new(program);
    command.arg("127.0.0.1:0");
    let server = Process::spawn("getting-started", command);
    let addr = server.listening_on();

    let stream = TcpStream::connect(&addr).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let mut lines = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    lines.read_line(&mut line).expect("greeting");
    assert_eq!(line, "hello: send me lines\n");

    (&stream).write_all(b"abc\nsecond line\n").expect("write");
    for expected in ["ABC\n", "SECOND LINE\n"] {
        line.clear();
        lines.read_line(&mut line).expect("reply");
        assert_eq!(line, expected);
    }
}
