//! The book's chapter "Writing a client" reads `examples/kv_client.rs`, a request/response
//! client of `kv_server` outside any actor. These tests run both as processes and check what the
//! chapter says: each reply printed in order; a server that is not up yet is waited for with
//! back-off; a request without a reply fails when its timeout runs out, with a message that
//! says so (the process is bounded by the test's own timeout).

#[path = "support/process.rs"]
mod process;

use std::{net::TcpListener, thread};

use process::{Process, TIMEOUT, example_command};

fn kv_server(addr: &str) -> (Process, String) {
    let mut command = example_command("kv_server", "warn");
    command.args(["--addr", addr]);
    let server = Process::spawn("kv_server", command);
    let addr = server.listening_on();
    (server, addr)
}

fn kv_client(addr: &str, extra: &[&str], input: &str) -> Process {
    let mut command = example_command("kv_client", "warn");
    command.args(["--addr", addr]).args(extra);
    Process::spawn_with_input("kv_client", command, input.as_bytes().to_vec())
}

#[test]
fn each_request_gets_its_reply_in_order() {
    let (_server, addr) = kv_server("127.0.0.1:0");
    let finished = kv_client(
        &addr,
        &[],
        "SET greeting hello world\nGET greeting\nGET missing\n",
    )
    .finish(TIMEOUT);
    assert_eq!(
        finished.status.code(),
        Some(0),
        "{}",
        finished.stderr_text()
    );
    assert_eq!(finished.stdout_text(), "OK\nVALUE hello world\nNOT_FOUND\n");
}

#[test]
fn a_server_that_is_not_up_yet_is_waited_for() {
    // A port nobody listens on, for the server to take a moment later.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let client = kv_client(&addr, &["--retries", "30"], "SET a 1\nGET a\n");
    client
        .stderr()
        .wait_until(TIMEOUT, |bytes, _| {
            String::from_utf8_lossy(bytes).contains("retrying")
        })
        .expect("the client retries while nothing listens");
    let (_server, _) = kv_server(&addr);
    let finished = client.finish(TIMEOUT);
    assert_eq!(
        finished.status.code(),
        Some(0),
        "{}",
        finished.stderr_text()
    );
    assert_eq!(finished.stdout_text(), "OK\nVALUE 1\n");
}

#[test]
fn a_request_without_a_reply_fails_within_the_timeout() {
    // Accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("addr").to_string();
    let holder = thread::spawn(move || silent.accept().map(|(stream, _)| stream));
    let finished = kv_client(&addr, &["--timeout", "0.3"], "GET a\n").finish(TIMEOUT);
    assert_eq!(finished.status.code(), Some(1));
    assert!(
        finished
            .stderr_text()
            .contains("GET a: no reply within 300ms"),
        "{}",
        finished.stderr_text()
    );
    drop(holder.join());
}
