//! The tour example runs as a process and tells the story its docs promise: it exits 0, and its
//! transcript, once the `[bracketed]` parts that vary from run to run are cut off, is exactly
//! the one below, line for line.
//!
//! The tour checks each step itself and exits 1 when one goes wrong (frames that do not arrive
//! after the switch leave it waiting until its own timeout), so a broken step fails here twice:
//! by its exit status, and by the lines it did not print.

#[path = "support/process.rs"]
mod process;

use std::time::Duration;

use process::{Finished, Process, example_command};

/// Longer than the tour's own 15-second timeout per step, so a stuck tour reports which step
/// it was in before this test kills it.
const TOUR_BOUND: Duration = Duration::from_secs(60);

/// What the tour prints, without the `[bracketed]` ends of lines.
const TRANSCRIPT: &[&str] = &[
    "switchboard tour: servers and clients on loopback, all in this process",
    "",
    "1. A TCP server and a client",
    "   server: tcp::serve with the line protocol",
    "   client: tcp::connect",
    "   server: the line protocol received ConnectionMade",
    r#"   client -> server: "hello, switchboard""#,
    r#"   server: the line protocol read "hello, switchboard""#,
    r#"   server -> client: "HELLO, SWITCHBOARD""#,
    "",
    "2. Flow control",
    "   server: a sink that pauses reading as soon as a client connects",
    "   client: a producer of 64 MiB, with SetWriteBufferLimits; each write waits for room (write_ready)",
    "   server: the sink paused reading; IsReading says false",
    "   client: write-buffer limits are low 4096, high 16384",
    "   client: PauseWriting: the write buffer went over the high-water mark",
    "   server: the sink resumes reading",
    "   client: ResumeWriting: the write buffer drained to the low-water mark; writing goes on",
    "   client: wrote all 64 MiB, then Close",
    "   server: the sink received all 64 MiB; ConnectionLost(None) on both sides",
    "",
    "3. Switching protocols mid-connection",
    r#"   client -> server, in one write: "SWITCH\n" and 3 length-prefixed frames"#,
    r#"   server: the line protocol read "SWITCH" and switched to the length-prefixed protocol, with the bytes it had not decoded"#,
    "   server: the length-prefixed protocol received ConnectionMade, same transport",
    r#"   server: the length-prefixed protocol decoded "alpha""#,
    r#"   server: the length-prefixed protocol decoded "bravo\ncharlie""#,
    r#"   server: the length-prefixed protocol decoded "SWITCH\n""#,
    "   client: got the 3 frames back, intact",
    "",
    "4. Extra information",
    "   client: peer_addr() is the server's listening address",
    r#"   server: GetExtraInfo("peername") is the client's sockname()"#,
    "   client: socket() is a Stream socket of family Inet",
    r#"   client: GetExtraInfo("cipher") on plain TCP returns the caller's default, "none""#,
    "",
    "5. Closing",
    "   client: Close",
    "   client: a write after Close is refused: transport is closing",
    "   client: ConnectionLost(None)",
    "   server: ConnectionLost(None)",
    "   server: close() and wait_closed() returned",
    "",
    "6. The same protocols over a Unix socket",
    "   server: unix::serve with the line protocol",
    "   client: unix::connect",
    "   server: the line protocol received ConnectionMade",
    r#"   client -> server: "hello over a unix socket""#,
    r#"   server: the line protocol read "hello over a unix socket""#,
    r#"   server -> client: "HELLO OVER A UNIX SOCKET""#,
    "   client: peername() is the socket file; sockname() is unnamed",
    "   client: Close",
    "   client: ConnectionLost(None)",
    "   server: ConnectionLost(None)",
    "   server: close() and wait_closed() returned",
    "   server: the socket file is gone",
    "",
    "7. TLS",
    "   server: SelfSigned::localhost(), a certificate made at start",
    "   server: tls::serve with that certificate and the line protocol",
    "   client: TlsConnector::connect, trusting that certificate only; it verified it, and the name 127.0.0.1",
    "   server: the line protocol received ConnectionMade",
    "   client: peer_certificate() is CN=localhost,O=switchboard self-signed, for localhost, 127.0.0.1, ::1",
    r#"   client: GetExtraInfo("cipher") is TLSv1.3"#,
    r#"   client -> server: "hello over tls""#,
    r#"   server: the line protocol read "hello over tls""#,
    r#"   server -> client: "HELLO OVER TLS""#,
    "   server: tls_session() on its end: TLSv1.3, server side, the same cipher",
    "   client: Close (close_notify, then FIN)",
    "   client: ConnectionLost(None)",
    "   server: ConnectionLost(None)",
    "   server: close() and wait_closed() returned",
    "",
    "8. STARTTLS: upgrading a live connection",
    "   server: tcp::serve with a STARTTLS gate in front of the line protocol",
    "   client: tcp::connect with a STARTTLS client protocol, in plaintext",
    "   server: the gate received ConnectionMade",
    r#"   client -> server: "STARTTLS""#,
    "   server: the gate answered, upgraded with Ctx::start_tls and switched to the line protocol",
    r#"   server -> client, in plaintext: "READY""#,
    "   client: the go-ahead; upgraded with Ctx::start_tls (TlsConnector::start_tls)",
    "   client: the handshake succeeded; tls_session() says TLSv1.3",
    "   server: the line protocol received ConnectionMade, same transport",
    r#"   client -> server: "hello after starttls""#,
    r#"   server: the line protocol read "hello after starttls""#,
    r#"   server -> client: "HELLO AFTER STARTTLS", read by the client's codec over TLS"#,
    "   server: cipher() on its end: TLSv1.3, the same",
    "   client: Close",
    "   client: ConnectionLost(None)",
    "   server: ConnectionLost(None)",
    "   server: close() and wait_closed() returned",
    r#"   fake server: a tokio TcpListener that answers "STARTTLS" with "READY\nINJECTED\n" in one write"#,
    "   client: tcp::connect to it, with the same client protocol",
    r#"   client -> fake server: "STARTTLS""#,
    r#"   fake server -> client, in one write: "READY\nINJECTED\n""#,
    "   client: the go-ahead; Ctx::start_tls hands the transport the line behind it, undecoded",
    "   client: ConnectionLost(Some(err)): the transport refused the upgrade, plaintext received before the TLS handshake",
    "   fake server: nothing came after the injection, no ClientHello",
    "",
    "9. A subprocess",
    r#"   parent: subprocess::shell("tr a-z A-Z; echo bye >&2; exit 3")"#,
    r#"   parent -> child's stdin (pipe 0): "hello, subprocess\n", then WriteEof"#,
    r#"   child's stdout (pipe 1): "HELLO, SUBPROCESS\n""#,
    r#"   child's stderr (pipe 2): "bye\n""#,
    "   PipeConnectionLost for pipes 0, 1 and 2, each after its data",
    "   ProcessExited: exit status: 3",
    "   ConnectionLost(None), last",
    "   parent: returncode() is exit status: 3; Terminate now fails: the process has already exited",
    "",
    "10. Datagrams",
    "   server: udp::bind with an echo protocol",
    "   client: udp::connect to the server",
    r#"   client -> server: "ping", "", "pong", back to back"#,
    r#"   server: DatagramReceived "ping""#,
    r#"   server: DatagramReceived """#,
    r#"   server: DatagramReceived "pong""#,
    "   client: three DatagramReceived, one per echo, the empty one included",
    "   client: SendTo for another address is refused; the endpoint stays open",
    "   server: Close",
    "   server: ConnectionLost(None)",
    r#"   client -> the closed port: "anyone?", taken by the kernel"#,
    "   client: ErrorReceived, ConnectionRefused; the endpoint stays open",
    "   client: Close",
    "   client: ConnectionLost(None)",
    "",
    "11. HTTP to WebSocket: a switch on upgrade",
    "   server: tcp::serve with an HTTP protocol",
    "   client: tcp::connect",
    "   server: the HTTP protocol received ConnectionMade",
    r#"   client -> server, in one write: "GET /ws" with Upgrade: websocket, and a masked text frame "hello, websocket""#,
    "   server: the HTTP protocol answered 101 and switched to the WebSocket protocol, with the bytes behind the request head",
    "   server: the WebSocket protocol received ConnectionMade, same transport",
    r#"   server: the WebSocket protocol echoed "hello, websocket""#,
    "   server -> client: 101 Switching Protocols, with the Sec-WebSocket-Accept of RFC 6455",
    r#"   server -> client: a text frame "hello, websocket""#,
    "   client -> server: a close frame, code 1000",
    "   server -> client: the close frame echoed, code 1000; the server closes",
    "   client: the server's EOF, then Close",
    "   client: ConnectionLost(None)",
    "   server: ConnectionLost(None)",
    "   server: close() and wait_closed() returned",
    "",
    "tour complete",
];

/// Runs the tour to completion and checks its exit status.
fn run_tour() -> Finished {
    let finished = Process::spawn("tour", example_command("tour", "warn")).finish(TOUR_BOUND);
    assert_eq!(
        finished.status.code(),
        Some(0),
        "the tour failed ({}); stdout:\n{}\nstderr:\n{}",
        finished.status,
        finished.stdout_text(),
        finished.stderr_text()
    );
    finished
}

/// A line without its `[bracketed]` end, the part that varies from run to run.
fn stable_part(line: &str) -> &str {
    match line.rfind(" [") {
        Some(start) if line.ends_with(']') => &line[..start],
        _ => line,
    }
}

#[test]
fn tour_exits_0_and_tells_every_step() {
    let finished = run_tour();
    let stdout = finished.stdout_text();
    let lines: Vec<&str> = stdout.lines().map(stable_part).collect();
    for (number, (got, expected)) in lines.iter().zip(TRANSCRIPT).enumerate() {
        assert_eq!(
            got,
            expected,
            "line {} of the transcript differs; the whole transcript:\n{stdout}",
            number + 1
        );
    }
    assert_eq!(
        lines.len(),
        TRANSCRIPT.len(),
        "the transcript has {} lines, not {}:\n{stdout}",
        lines.len(),
        TRANSCRIPT.len()
    );
}

#[test]
fn stable_part_cuts_only_a_bracketed_end() {
    assert_eq!(
        stable_part("   client: peer_addr() is it [127.0.0.1:1234]"),
        "   client: peer_addr() is it"
    );
    assert_eq!(
        stable_part("   client: wrote [not at the end] here"),
        "   client: wrote [not at the end] here"
    );
    assert_eq!(stable_part("5. Closing"), "5. Closing");
}
