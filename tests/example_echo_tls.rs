//! The echo examples over TLS: `echo_server --tls` and `echo_client --tls` run as processes,
//! against each other and against independent peers (Python's `ssl` with asyncio, and
//! `openssl s_client`), to check from the outside what their docs promise:
//!
//! - `echo_server --tls` prints `listening on ADDR` as over TCP; `--write-cert` saves the
//!   self-signed certificate it serves (made for `localhost` and `127.0.0.1`) before that line;
//!   `--cert` and `--key` serve PEM files, and go together or not at all;
//! - bytes come back byte-exact over TLS, 10 MiB included, with the server's back-pressure;
//! - `echo_client --tls` verifies the server's certificate and name by default, and fails with
//!   the reason and exit status 1 against a server it does not trust; `--ca` trusts a
//!   certificate file, `--insecure` trusts anything and warns.
//!
//! One more test runs in process: a client protocol writes 10 MiB through a TLS transport with
//! small write-buffer limits, hears `PauseWriting` and `ResumeWriting` in turn, and gets every
//! byte back in order.
//!
//! Every child process is killed when its test fails, and every wait is bounded.

#[path = "support/process.rs"]
mod process;
mod support;

use std::{ffi::OsString, net::SocketAddr, path::PathBuf, process::Command, time::Duration};

use actix::prelude::*;
use process::{Finished, Process, TIMEOUT, assert_same_bytes, example_command, pseudo_random};
use support::{Event, ProbeOptions, deadline, pattern};
use switchboard::{
    prelude::*,
    tls::{self, SelfSigned},
};

/// One mebibyte.
const MIB: usize = 1024 * 1024;

/// How long the server may take to exit once told to.
const EXIT_BOUND: Duration = Duration::from_secs(10);

/// A running `echo_server --tls` whose `listening on ADDR` line has been read.
struct TlsEchoServer {
    process: Process,
    addr: SocketAddr,
    /// The PEM file clients trust: written by the server (`--write-cert`) or given to it.
    cert: PathBuf,
    _dir: tempfile::TempDir,
}

impl TlsEchoServer {
    /// `echo_server --tls --write-cert DIR/cert.pem`: a self-signed certificate made at start.
    fn self_signed() -> TlsEchoServer {
        let dir = temp_dir();
        let cert = dir.path().join("cert.pem");
        let args = vec!["--write-cert".into(), cert.clone().into()];
        TlsEchoServer::start(args, cert, dir)
    }

    /// `echo_server --tls --cert CERT --key KEY`, with files made by the `openssl` command.
    fn with_pem_files() -> TlsEchoServer {
        let dir = temp_dir();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let status = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=localhost", "-addext"])
            .arg("subjectAltName=DNS:localhost,IP:127.0.0.1")
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the openssl command");
        assert!(status.success(), "openssl req failed: {status}");
        let args = vec![
            "--cert".into(),
            cert.clone().into(),
            "--key".into(),
            key.into(),
        ];
        TlsEchoServer::start(args, cert, dir)
    }

    fn start(args: Vec<OsString>, cert: PathBuf, dir: tempfile::TempDir) -> TlsEchoServer {
        let mut command = example_command("echo_server", "warn");
        command.args(["--tls", "--addr", "127.0.0.1:0"]).args(args);
        let process = Process::spawn("echo_server --tls", command);
        let Some(line) = process.stdout().first_line(TIMEOUT) else {
            panic!(
                "echo_server --tls printed no line within {TIMEOUT:?}; stderr:\n{}",
                process.stderr().text()
            );
        };
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.strip_suffix('\n'))
            .and_then(|addr| addr.parse::<SocketAddr>().ok())
            .unwrap_or_else(|| panic!("the first line is {line:?}, not `listening on ADDR`"));
        assert_ne!(addr.port(), 0, "the line shows the port really bound");
        assert!(
            cert.exists(),
            "{} exists by the time the server listens",
            cert.display()
        );
        TlsEchoServer {
            process,
            addr,
            cert,
            _dir: dir,
        }
    }

    /// SIGTERM; the server exits 0 having printed its one line and nothing else on stdout.
    fn stop(mut self) {
        self.process.signal("TERM");
        let finished = self.process.finish(EXIT_BOUND);
        assert_eq!(
            finished.status.code(),
            Some(0),
            "echo_server exit status ({}); stderr:\n{}",
            finished.status,
            finished.stderr_text()
        );
        assert_eq!(
            finished.stdout_text(),
            format!("listening on {}\n", self.addr)
        );
    }
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("switchboard-example-echo-tls-")
        .tempdir()
        .expect("a temporary directory")
}

/// Runs `echo_client --tls --addr ADDR ARGS` with `input` on its stdin, to completion.
fn run_echo_client(server: &TlsEchoServer, args: &[&OsString], input: Vec<u8>) -> Finished {
    let mut command = example_command("echo_client", "warn");
    command
        .args(["--tls", "--addr", &server.addr.to_string()])
        .args(args);
    Process::spawn_with_input("echo_client --tls", command, input).finish(TIMEOUT)
}

/// Checks that `echo_client` exited 0, printed exactly `input`, and told the cipher.
#[track_caller]
fn assert_echoed(finished: &Finished, input: &[u8]) {
    assert_eq!(
        finished.status.code(),
        Some(0),
        "echo_client exit status ({}); stderr:\n{}",
        finished.status,
        finished.stderr_text()
    );
    assert_same_bytes(&finished.stdout, input, "echo_client's stdout");
    assert!(
        finished
            .stderr_text()
            .contains("echo_client: tls: TLSv1.3 TLS_"),
        "the negotiated protocol and cipher are on stderr:\n{}",
        finished.stderr_text()
    );
}

/// Checks that `echo_client` exited 1 without echoing anything, and that its stderr says why
/// the certificate was refused.
#[track_caller]
fn assert_refused(finished: &Finished, reason: &str) {
    let stderr = finished.stderr_text();
    assert_eq!(
        finished.status.code(),
        Some(1),
        "echo_client exit status ({}); stderr:\n{stderr}",
        finished.status
    );
    assert!(
        finished.stdout.is_empty(),
        "nothing echoed: {:?}",
        finished.stdout_text()
    );
    assert!(
        stderr.contains(&format!("certificate verification failed: {reason}")),
        "stderr gives the TLS reason ({reason}):\n{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// echo_client --tls against echo_server --tls

/// Default verification: the system's trust store does not know a certificate made at start.
#[test]
fn echo_client_refuses_a_self_signed_server_by_default() {
    let server = TlsEchoServer::self_signed();
    let finished = run_echo_client(&server, &[], b"hi\n".to_vec());
    assert_refused(&finished, "self-signed certificate");
    server.stop();
}

#[test]
fn echo_client_trusts_the_written_certificate_with_ca() {
    let server = TlsEchoServer::self_signed();
    let ca = ["--ca".into(), server.cert.clone().into_os_string()];
    let ca: Vec<&OsString> = ca.iter().collect();

    let finished = run_echo_client(&server, &ca, b"hi\n".to_vec());
    assert_echoed(&finished, b"hi\n");
    // Larger than any TLS record, the kernel buffers and the client's 64 KiB reads.
    let input = pseudo_random(3 * MIB, 1);
    let finished = run_echo_client(&server, &ca, input.clone());
    assert_echoed(&finished, &input);
    let finished = run_echo_client(&server, &ca, Vec::new());
    assert_echoed(&finished, b"");

    server.stop();
}

/// The certificate is right but made out to other names: the name check refuses it.
#[test]
fn echo_client_checks_the_server_name() {
    let server = TlsEchoServer::self_signed();
    let args: [OsString; 4] = [
        "--ca".into(),
        server.cert.clone().into(),
        "--server-name".into(),
        "example.com".into(),
    ];
    let finished = run_echo_client(&server, &args.iter().collect::<Vec<_>>(), b"hi\n".to_vec());
    assert_refused(&finished, "hostname mismatch");
    server.stop();
}

#[test]
fn echo_client_insecure_connects_and_warns() {
    let server = TlsEchoServer::self_signed();
    let insecure = OsString::from("--insecure");
    let finished = run_echo_client(&server, &[&insecure], b"hi\n".to_vec());
    assert_echoed(&finished, b"hi\n");
    let stderr = finished.stderr_text();
    assert!(
        stderr
            .contains("echo_client: warning: --insecure: the server's certificate is not verified"),
        "--insecure warns on stderr:\n{stderr}"
    );
    server.stop();
}

/// `--cert` and `--key` serve a certificate made by the `openssl` command.
#[test]
fn echo_server_serves_pem_files() {
    let server = TlsEchoServer::with_pem_files();
    let ca = ["--ca".into(), server.cert.clone().into_os_string()];
    let input = pseudo_random(100_000, 2);
    let finished = run_echo_client(&server, &ca.iter().collect::<Vec<_>>(), input.clone());
    assert_echoed(&finished, &input);
    server.stop();
}

#[test]
fn echo_server_wants_cert_and_key_together_and_readable() {
    let dir = temp_dir();
    let missing = dir.path().join("missing.pem");
    let cannot_read = format!(
        "echo_server: cannot read the certificate chain {}: No such file or directory",
        missing.display()
    );
    let cases: [(&[&str], i32, &str); 3] = [
        (&["--cert", "c.pem"], 2, "--key <FILE>"),
        (&["--key", "k.pem"], 2, "--cert <FILE>"),
        (
            &["--cert", missing.to_str().unwrap(), "--key", "k.pem"],
            1,
            &cannot_read,
        ),
    ];
    for (args, code, message) in cases {
        let mut command = example_command("echo_server", "warn");
        command.args(["--tls", "--addr", "127.0.0.1:0"]).args(args);
        let finished = Process::spawn("echo_server", command).finish(TIMEOUT);
        assert_eq!(
            finished.status.code(),
            Some(code),
            "echo_server {args:?}; stderr:\n{}",
            finished.stderr_text()
        );
        assert!(
            finished.stdout.is_empty(),
            "echo_server {args:?} does not listen"
        );
        assert!(
            finished.stderr_text().contains(message),
            "echo_server {args:?}: stderr says {message:?}:\n{}",
            finished.stderr_text()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Independent peers: Python's ssl with asyncio, and openssl s_client

/// An asyncio TLS client that trusts `--cafile` and checks the name `--server-name`.
///
/// `messages`: checks the certificate the server presented (the one in `--cafile`, with CN and
/// subject alternative names for localhost), then sends a few messages one at a time and reads
/// each one back, byte-exact.
///
/// `stream`: writes `--size` pseudo-random bytes as fast as `pause_writing` and
/// `resume_writing` allow, while reading; checks every byte that comes back, in order, closes
/// once all came back, and reports the protocol's events.
///
/// Prints one line, `OK ...` or `FAIL ...`, and exits 0 only for `OK`.
const PYTHON_TLS_CLIENT: &str = r#"
import argparse, asyncio, random, ssl, sys

def describe_name(name):
    short = {"commonName": "CN", "organizationName": "O"}
    return ",".join(f"{short.get(k, k)}={v}" for rdn in name for k, v in rdn)

async def messages(args, context, host, port):
    reader, writer = await asyncio.open_connection(
        host, port, ssl=context, server_hostname=args.server_name)
    ssl_object = writer.get_extra_info("ssl_object")
    with open(args.cafile) as pem:
        if ssl_object.getpeercert(binary_form=True) != ssl.PEM_cert_to_DER_cert(pem.read()):
            return "FAIL messages: the server presented another certificate than --cafile's"
    cert = writer.get_extra_info("peercert")
    subject = describe_name(cert["subject"])
    names = cert.get("subjectAltName", ())
    for wanted in [("DNS", "localhost"), ("IP Address", "127.0.0.1")]:
        if wanted not in names:
            return f"FAIL messages: {wanted} not in the subject alternative names {names}"
    sent = [b"hello, tls\n", bytes(range(256)), random.Random(7).randbytes(100_000)]
    for message in sent:
        writer.write(message)
        await writer.drain()
        echoed = await reader.readexactly(len(message))
        if echoed != message:
            return f"FAIL messages: sent {message[:20]!r}..., got {echoed[:20]!r}..."
    version = ssl_object.version()
    writer.close()
    await writer.wait_closed()
    return (f"OK messages: {len(sent)} messages echoed byte-exact over {version}; "
            f"certificate {subject}, for DNS:localhost and IP:127.0.0.1")

class Streamer(asyncio.Protocol):
    def __init__(self, payload, done):
        self.payload, self.done = payload, done
        self.sent = self.received = self.pauses = 0
        self.paused = False
        self.events, self.failure = [], None

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport
        self.write_more()

    def write_more(self):
        while not self.paused and self.sent < len(self.payload):
            chunk = self.payload[self.sent:self.sent + 65536]
            self.sent += len(chunk)
            self.transport.write(chunk)  # may call pause_writing before it returns

    def pause_writing(self):
        self.paused = True
        self.pauses += 1

    def resume_writing(self):
        self.paused = False
        self.write_more()

    def data_received(self, data):
        if self.events[-1] != "data":
            self.events.append("data")
        expected = self.payload[self.received:self.received + len(data)]
        if data != expected:
            at = next((i for i, (a, b) in enumerate(zip(data, expected)) if a != b),
                      min(len(data), len(expected)))
            self.failure = f"byte {self.received + at} differs"
            self.transport.abort()
            return
        self.received += len(data)
        if self.received == len(self.payload):
            self.transport.close()

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append(f"lost({exc!r})")
        if not self.done.done():
            self.done.set_result(None)

async def stream(args, context, host, port):
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    protocol = Streamer(random.Random(11).randbytes(args.size), done)
    await loop.create_connection(
        lambda: protocol, host, port, ssl=context, server_hostname=args.server_name)
    await done
    print(f"writing paused {protocol.pauses} times", file=sys.stderr)
    if protocol.failure or protocol.received != args.size:
        return (f"FAIL stream: {protocol.failure or 'short'}; {protocol.received} of "
                f"{args.size} bytes back; events {protocol.events}")
    return (f"OK stream: {protocol.received} bytes echoed byte-exact, in order; "
            f"events {', '.join(protocol.events)}")

async def main(args):
    context = ssl.create_default_context(cafile=args.cafile)
    host, port = args.addr.rsplit(":", 1)
    run = {"messages": messages, "stream": stream}[args.mode]
    try:
        return await asyncio.wait_for(run(args, context, host, int(port)), args.timeout)
    except asyncio.TimeoutError:
        return f"FAIL {args.mode}: timed out after {args.timeout} s"
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
        return f"FAIL {args.mode}: {exc!r}"

parser = argparse.ArgumentParser()
parser.add_argument("mode", choices=["messages", "stream"])
parser.add_argument("--addr", required=True)
parser.add_argument("--cafile", required=True)
parser.add_argument("--server-name", default="localhost")
parser.add_argument("--size", type=int, default=1024 * 1024)
parser.add_argument("--timeout", type=float, default=20.0)
args = parser.parse_args()
result = asyncio.run(main(args))
print(result)
sys.exit(0 if result.startswith("OK ") else 1)
"#;

/// Runs [`PYTHON_TLS_CLIENT`] against `server` and checks that it printed exactly `expected`
/// and exited 0.
fn python_tls_client(server: &TlsEchoServer, args: &[&str], expected: &str) {
    let mut command = Command::new("python3");
    command
        .args(["-I", "-u", "-c", PYTHON_TLS_CLIENT])
        .args(args)
        .args(["--addr", &server.addr.to_string(), "--timeout", "60"])
        .arg("--cafile")
        .arg(&server.cert);
    let finished = Process::spawn("python3 tls client", command).finish(Duration::from_secs(90));
    assert!(
        finished.status.success() && finished.stdout_text() == format!("{expected}\n"),
        "the asyncio TLS client failed ({}); stdout:\n{}\nstderr:\n{}",
        finished.status,
        finished.stdout_text(),
        finished.stderr_text()
    );
}

#[test]
fn asyncio_ssl_client_verifies_the_certificate_and_gets_messages_back() {
    let server = TlsEchoServer::self_signed();
    python_tls_client(
        &server,
        &["messages"],
        "OK messages: 3 messages echoed byte-exact over TLSv1.3; \
         certificate CN=localhost,O=switchboard self-signed, for DNS:localhost and IP:127.0.0.1",
    );
    // The address instead of the name: verified against the certificate's IP address.
    python_tls_client(
        &server,
        &["messages", "--server-name", "127.0.0.1"],
        "OK messages: 3 messages echoed byte-exact over TLSv1.3; \
         certificate CN=localhost,O=switchboard self-signed, for DNS:localhost and IP:127.0.0.1",
    );
    server.stop();
}

/// 10 MiB written while reading: the server's transport pauses reading while its write buffer
/// is full (the example's back-pressure), over TLS as over TCP, and every byte comes back.
#[test]
fn asyncio_ssl_client_round_trips_ten_mebibytes() {
    let server = TlsEchoServer::self_signed();
    let size = (10 * MIB).to_string();
    python_tls_client(
        &server,
        &["stream", "--size", &size],
        // `eof`: the server answered the client's close_notify with its own (asyncio reports
        // a completed TLS shutdown as `eof_received`).
        "OK stream: 10485760 bytes echoed byte-exact, in order; events made, data, eof, lost(None)",
    );
    server.stop();
}

/// `openssl s_client` verifies the certificate (`-verify_return_error`: a failure ends the
/// handshake) and the name, and a line comes back. `-ign_eof` keeps it reading after its
/// stdin ends; the server's graceful shutdown (close_notify) then ends the session, and
/// `s_client` exits 0.
#[test]
fn openssl_s_client_verifies_and_gets_a_line_back() {
    let server = TlsEchoServer::self_signed();
    let mut command = Command::new("openssl");
    command
        .args(["s_client", "-connect", &server.addr.to_string(), "-CAfile"])
        .arg(&server.cert)
        .args(["-verify_return_error", "-verify_hostname", "localhost"])
        .args(["-brief", "-ign_eof"]);
    let mut client =
        Process::spawn_with_input("openssl s_client", command, b"hello, s_client\n".to_vec());
    let echoed = client
        .stdout()
        .wait_until(TIMEOUT, |bytes, closed| closed || bytes.ends_with(b"\n"));
    assert_eq!(
        echoed.as_deref(),
        Ok(&b"hello, s_client\n"[..]),
        "s_client's stdout is the echo; stderr:\n{}",
        client.stderr().text()
    );
    // s_client wrote these to stderr before it sent the line, but stderr is another pipe, read
    // by another thread: wait for them rather than read what has come so far.
    let wanted = [
        "CONNECTION ESTABLISHED",
        "Protocol version: TLSv1.3",
        "Verification: OK",
        "Verified peername: localhost",
    ];
    let stderr = client.stderr().wait_until(TIMEOUT, |bytes, closed| {
        closed || {
            let text = String::from_utf8_lossy(bytes);
            wanted.iter().all(|line| text.contains(line))
        }
    });
    let stderr = String::from_utf8_lossy(stderr.as_deref().unwrap_or_else(|bytes| bytes));
    for wanted in wanted {
        assert!(
            stderr.contains(wanted),
            "s_client says {wanted:?}:\n{stderr}"
        );
    }

    server.stop();
    let status = client.wait(TIMEOUT);
    assert!(
        status.success(),
        "s_client ends cleanly with the server's close ({status}); stderr:\n{}",
        client.stderr().text()
    );
}

// ---------------------------------------------------------------------------------------------
// In process: write flow control through a TLS transport

/// The server's protocol in process: an echo with `echo_server`'s back-pressure (it stops
/// reading while its write buffer is over the high-water mark). It starts with reading paused
/// and hands its transport to the test, which decides when it reads.
struct HeldEcho {
    transport: Option<TransportHandle>,
    report: tokio::sync::mpsc::UnboundedSender<TransportHandle>,
}

impl Actor for HeldEcho {
    type Context = Context<Self>;
}
ignore_events!(HeldEcho: EofReceived, TimedOut);

impl Handler<ConnectionMade> for HeldEcho {
    type Result = ();

    fn handle(&mut self, msg: ConnectionMade, _: &mut Context<Self>) {
        msg.transport.pause_reading();
        let _ = self.report.send(msg.transport.clone());
        self.transport = Some(msg.transport);
    }
}

impl Handler<DataReceived> for HeldEcho {
    type Result = ();

    fn handle(&mut self, msg: DataReceived, _: &mut Context<Self>) {
        if let Some(transport) = &self.transport {
            transport.write(msg.data);
        }
    }
}

impl Handler<PauseWriting> for HeldEcho {
    type Result = ();

    fn handle(&mut self, _: PauseWriting, _: &mut Context<Self>) {
        if let Some(transport) = &self.transport {
            transport.pause_reading();
        }
    }
}

impl Handler<ResumeWriting> for HeldEcho {
    type Result = ();

    fn handle(&mut self, _: ResumeWriting, _: &mut Context<Self>) {
        if let Some(transport) = &self.transport {
            transport.resume_reading();
        }
    }
}

impl Handler<ConnectionLost> for HeldEcho {
    type Result = ();

    fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// The client's write-buffer limits, far below the 64 KiB default.
const HIGH_WATER_MARK: usize = 16 * 1024;
const LOW_WATER_MARK: usize = 4 * 1024;

/// What the client writes at a time: less than the high-water mark, so only a backlog (the
/// socket not taking the bytes) takes the buffer over it.
const CHUNK: usize = 8 * 1024;

/// A client writes 10 MiB through a TLS transport with small write-buffer limits, and only while
/// it is not paused. The server does not read at first: once the kernel buffers are full (about
/// 4 MiB on loopback with Linux's default `tcp_wmem`), the client's write buffer goes over the
/// high-water mark and `PauseWriting` comes. Then the server reads and echoes, TLS drains the
/// client's buffer to the low-water mark, `ResumeWriting` comes, and writing goes on, pausing and
/// resuming as the flow dictates (the two strictly alternate) until every byte came back, in
/// order.
#[actix_rt::test]
async fn tls_transport_pauses_and_resumes_writing_and_echoes_ten_mebibytes() {
    deadline(async {
        let cert = SelfSigned::localhost().expect("a self-signed certificate");
        let acceptor = cert.acceptor().expect("an acceptor");
        let (report, mut accepted) = tokio::sync::mpsc::unbounded_channel();
        let server = tls::serve("127.0.0.1:0", acceptor, move || {
            let echo = HeldEcho {
                transport: None,
                report: report.clone(),
            };
            echo.start()
        })
        .await
        .expect("serve");
        let addr = server.addresses()[0].to_string();
        let (probe, mut events) = ProbeOptions::default().probe();
        let (transport, _probe) = cert
            .connector()
            .expect("a connector")
            .connect(&addr, || probe.start())
            .await
            .expect("a verified TLS connection");
        events.made().await;
        let server_side = tokio::time::timeout(support::TIMEOUT, accepted.recv())
            .await
            .expect("the server's protocol is made after the handshake")
            .expect("the server is alive");
        assert!(transport.cipher().await.is_some(), "the client speaks TLS");
        transport
            .send(SetWriteBufferLimits {
                high: Some(HIGH_WATER_MARK),
                low: Some(LOW_WATER_MARK),
            })
            .await
            .expect("transport alive")
            .expect("valid limits");

        let total = 10 * MIB;
        let (mut sent, mut received) = (0, 0);
        let mut paused = false;
        let mut server_reading = false;
        let (mut pauses, mut resumes) = (0, 0);
        while received < total {
            assert!(
                server_reading || sent < total,
                "all {total} bytes went to a server that does not read, without PauseWriting"
            );
            let can_write = !paused && sent < total;
            if can_write {
                let len = CHUNK.min(total - sent);
                transport.write(pattern(sent as u64, len));
                sent += len;
            }
            let event = if can_write {
                // Let the transport write (it runs on this thread), then take what arrived.
                tokio::task::yield_now().await;
                match events.try_next() {
                    Some(event) => event,
                    None => continue,
                }
            } else {
                events.next().await.expect("the probe is alive")
            };
            match event {
                Event::Data(chunk) => {
                    assert!(server_reading, "an echo from a server that does not read");
                    let expected = pattern(received as u64, chunk.len());
                    if chunk != expected {
                        let at = chunk.iter().zip(&expected).position(|(a, b)| a != b);
                        panic!(
                            "the echo differs from what was sent at byte {}",
                            received + at.unwrap_or(0)
                        );
                    }
                    received += chunk.len();
                    assert!(
                        received <= sent,
                        "more came back ({received}) than was sent"
                    );
                }
                Event::PauseWriting => {
                    assert!(!paused, "PauseWriting twice in a row");
                    let buffered = transport
                        .send(GetWriteBufferSize)
                        .await
                        .expect("transport alive");
                    assert!(
                        buffered > HIGH_WATER_MARK,
                        "PauseWriting with only {buffered} bytes buffered"
                    );
                    paused = true;
                    pauses += 1;
                    if !server_reading {
                        eprintln!("PauseWriting after {sent} bytes, {buffered} of them buffered");
                        server_side.resume_reading();
                        server_reading = true;
                    }
                }
                Event::ResumeWriting => {
                    assert!(paused, "ResumeWriting without PauseWriting");
                    let buffered = transport
                        .send(GetWriteBufferSize)
                        .await
                        .expect("transport alive");
                    assert!(
                        buffered <= LOW_WATER_MARK,
                        "ResumeWriting with {buffered} bytes still buffered"
                    );
                    paused = false;
                    resumes += 1;
                }
                other => panic!("unexpected {other:?} at {received} of {total} bytes back"),
            }
        }
        assert_eq!(received, total);
        assert!(
            pauses >= 1 && resumes >= 1 && resumes <= pauses,
            "{pauses} PauseWriting, {resumes} ResumeWriting"
        );
        eprintln!("{pauses} PauseWriting, {resumes} ResumeWriting");

        transport.close();
        let err = events.until_lost().await;
        assert!(err.is_none(), "a clean close: {err:?}");
        server.close().await;
        server.wait_closed().await;
    })
    .await;
}
