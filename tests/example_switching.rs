//! The book's line-count comparison holds three versions of one server — lines, then
//! length-prefixed frames after `UPGRADE` — in `examples/switching/`: switchboard's, plain tokio
//! with tokio-util's `Framed`, and asyncio's. These tests run each as a process and hold them to
//! the same bytes on the wire, so the table compares servers that do the same thing:
//!
//! - the commands answer alike in both framings, and a client that pipelines frames behind
//!   `UPGRADE` in the same write gets every one answered (none lost in the switch);
//! - the same holds when the client's bytes arrive one at a time;

#[path = "support/process.rs"]
mod process;

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    thread,
    time::Duration,
};

use process::{Process, TIMEOUT, example_command, python_command};

#[derive(Debug, Clone, Copy)]
enum Version {
    Switchboard,
    Tokio,
    Asyncio,
}

const VERSIONS: [Version; 3] = [Version::Switchboard, Version::Tokio, Version::Asyncio];

fn start(version: Version) -> (Process, String) {
    let command = match version {
        Version::Switchboard => example_command("switching", "warn"),
        Version::Tokio => example_command("tokio_switching", "warn"),
        Version::Asyncio => python_command(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/switching/asyncio.py"),
        ),
    };
    let mut command = command;
    command.arg("127.0.0.1:0");
    let process = Process::spawn(&format!("{version:?} switching server"), command);
    let addr = process.listening_on();
    (process, addr)
}

fn frame(payload: &str) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(payload.as_bytes());
    frame
}

/// A session: lines, the switch, and frames pipelined behind it in the same write.
fn request() -> Vec<u8> {
    let mut bytes =
        b"PING\nSET greeting hello world\nGET greeting\nGET nothing\nBAD\nUPGRADE\n".to_vec();
    for command in ["GET greeting", "SET n 1", "GET n", "PING"] {
        bytes.extend(frame(command));
    }
    bytes
}

fn expected() -> Vec<u8> {
    let mut bytes = b"PONG\nOK\nhello world\nNIL\nERR unknown command\nOK\n".to_vec();
    for reply in ["hello world", "OK", "1", "PONG"] {
        bytes.extend(frame(reply));
    }
    bytes
}

/// Sends `request()` as `pieces` writes and reads back exactly as many bytes as expected.
fn session(addr: &str, one_byte_at_a_time: bool) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    let request = request();
    if one_byte_at_a_time {
        for byte in &request {
            stream.write_all(std::slice::from_ref(byte)).expect("write");
            thread::sleep(Duration::from_micros(200));
        }
    } else {
        stream.write_all(&request).expect("write");
    }
    let mut reply = vec![0; expected().len()];
    stream
        .read_exact(&mut reply)
        .unwrap_or_else(|err| panic!("reading the replies: {err}"));
    reply
}

#[test]
fn the_three_versions_answer_the_same_bytes_and_lose_nothing_in_the_switch() {
    for version in VERSIONS {
        let (_process, addr) = start(version);
        assert_eq!(
            String::from_utf8_lossy(&session(&addr, false)),
            String::from_utf8_lossy(&expected()),
            "{version:?}, one write"
        );
        assert_eq!(
            String::from_utf8_lossy(&session(&addr, true)),
            String::from_utf8_lossy(&expected()),
            "{version:?}, one byte at a time"
        );
    }
}
