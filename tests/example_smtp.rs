//! The `smtp_server` example runs as a process, and independent clients check what its docs
//! promise, byte for byte:
//!
//! - Python's smtplib: `EHLO`, `STARTTLS` verified against the server's certificate, `EHLO`
//!   again (STARTTLS advertised before, not after), a message with dot-stuffed lines and 8-bit
//!   bytes, `QUIT`; the Maildir file holds the message exactly, behind the trace fields;
//! - `openssl s_client -starttls smtp` completes a verified handshake;
//! - plaintext pipelined behind `STARTTLS` is never executed (RFC 3207 §4.2): the server refuses
//!   the upgrade and ends the connection; without it, the session starts over under TLS;
//! - `--require-tls` refuses `MAIL` until `STARTTLS`;
//! - a message over `--max-size` is refused with 552, stored nowhere, and the connection goes on;
//! - commands pipelined across the switches to and from the DATA phase (`SetProtocol` with
//!   leftover bytes, both ways) are answered in order, also when they trickle in;
//! - errors: bad sequence (503), unknown commands (500), over-long lines (500, once, then the
//!   session goes on), and a line that never ends does not grow the server's memory;
//! - bounds: a client that pipelines `NOOP`s as fast as it can and never reads a reply holds
//!   the server's memory within a few MiB (sampled from `/proc/PID/status`) while smtplib sends
//!   messages all along; silent clients, clients that send a command one byte at a time, and
//!   clients silent in the middle of a message are told `421` and closed once
//!   `--command-timeout` has passed, while a client that talks is not;
//! - the server prints `listening on ADDR`, then one `stored PATH` per message, and exits 0 on
//!   SIGTERM;
//! - the committed corpus of the `smtp_*` fuzz targets passes their checks, the parsers' unit
//!   tests with it (both come in with `fuzz/checks/smtp.rs`).
//!
//! Every child process is killed when its test fails, and every wait is bounded.

#[path = "support/process.rs"]
mod process;

#[path = "support/bounds.rs"]
mod bounds;

/// The checks of the `smtp_*` fuzz targets, over the example's parsers.
#[path = "../fuzz/checks/smtp.rs"]
mod fuzz_checks;

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    process::Command,
    time::{Duration, Instant},
};

use process::{Process, TIMEOUT, example_command};
use switchboard::tls::{
    SelfSigned,
    openssl::ssl::{SslConnector, SslMethod},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tokio_openssl::SslStream;

/// How long a client waits for a reply (or for the server's EOF).
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The greeting, with the default `--hostname`.
const GREETING: &str = "220 localhost ESMTP switchboard\r\n";

// ---------------------------------------------------------------------------------------------
// The server process

/// A running `smtp_server` with its certificate and Maildir in a temporary directory.
struct SmtpServer {
    process: Process,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl SmtpServer {
    /// Starts the server on a free port with a certificate for localhost made now, and waits for
    /// its `listening on ADDR`.
    fn start(extra_args: &[&str]) -> SmtpServer {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-example-smtp-")
            .tempdir()
            .expect("a temporary directory");
        let cert = SelfSigned::localhost().expect("a self-signed certificate");
        fs::write(dir.path().join("cert.pem"), cert.certificate_pem().unwrap()).unwrap();
        fs::write(dir.path().join("key.pem"), cert.private_key_pem().unwrap()).unwrap();

        let mut command = example_command("smtp_server", "warn");
        command
            .args(["--addr", "127.0.0.1:0", "--maildir"])
            .arg(dir.path().join("maildir"))
            .arg("--cert")
            .arg(dir.path().join("cert.pem"))
            .arg("--key")
            .arg(dir.path().join("key.pem"))
            .args(extra_args);
        let process = Process::spawn("smtp_server", command);
        let Some(line) = process.stdout().first_line(TIMEOUT) else {
            panic!(
                "smtp_server printed no complete line within {TIMEOUT:?}; stdout {:?}, stderr:\n{}",
                process.stdout().text(),
                process.stderr().text()
            );
        };
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|rest| rest.strip_suffix('\n'))
            .unwrap_or_else(|| panic!("the first line is {line:?}, not `listening on ADDR`"));
        let addr: SocketAddr = addr
            .parse()
            .unwrap_or_else(|err| panic!("`{addr}` is not a socket address: {err}"));
        assert!(
            addr.ip().is_loopback() && addr.port() != 0,
            "bound to {addr}"
        );
        SmtpServer { process, addr, dir }
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn maildir(&self) -> PathBuf {
        self.dir.path().join("maildir")
    }

    /// Connects a plaintext client and reads the greeting.
    async fn connect(&self) -> Client<TcpStream> {
        let stream = tokio::time::timeout(REPLY_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .expect("connect timed out")
            .expect("connect to smtp_server");
        let mut client = Client::new(stream);
        assert_eq!(client.reply().await, GREETING);
        client
    }

    /// The paths of the `stored PATH` lines, once there are `n` of them.
    fn stored(&self, n: usize) -> Vec<PathBuf> {
        let stored_lines = |bytes: &[u8]| {
            String::from_utf8_lossy(bytes)
                .lines()
                .filter_map(|line| line.strip_prefix("stored ").map(PathBuf::from))
                .collect::<Vec<_>>()
        };
        let stdout = self
            .process
            .stdout()
            .wait_until(TIMEOUT, |bytes, _| {
                let complete =
                    &bytes[..bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)];
                stored_lines(complete).len() >= n
            })
            .unwrap_or_else(|stdout| {
                panic!(
                    "expected {n} `stored PATH` lines; stdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&stdout),
                    self.process.stderr().text()
                )
            });
        let paths = stored_lines(&stdout);
        assert_eq!(
            paths.len(),
            n,
            "stdout:\n{}",
            String::from_utf8_lossy(&stdout)
        );
        for path in &paths {
            assert_eq!(
                path.parent(),
                Some(&*self.maildir().join("new")),
                "messages are stored in MAILDIR/new"
            );
        }
        paths
    }

    /// The names of the files in `MAILDIR/sub`.
    fn files_in(&self, sub: &str) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(self.maildir().join(sub))
            .unwrap_or_else(|err| panic!("MAILDIR/{sub}: {err}"))
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Sends SIGTERM and checks the server exits 0, having printed its first line and then
    /// exactly `stored` lines of `stored PATH`, with no file left in `MAILDIR/tmp`.
    fn stop(mut self, stored: usize) {
        self.process.signal("TERM");
        let finished = self.process.finish(TIMEOUT);
        assert_eq!(
            finished.status.code(),
            Some(0),
            "smtp_server exit status ({}); stderr:\n{}",
            finished.status,
            finished.stderr_text()
        );
        let stdout = finished.stdout_text();
        let mut lines = stdout.lines();
        assert_eq!(lines.next(), Some(&*format!("listening on {}", self.addr)));
        let rest: Vec<_> = lines.collect();
        assert_eq!(rest.len(), stored, "stdout:\n{stdout}");
        assert!(
            rest.iter().all(|line| line.starts_with("stored ")),
            "stdout:\n{stdout}"
        );
        assert!(stdout.ends_with('\n'));
        let tmp: Vec<_> = fs::read_dir(self.dir.path().join("maildir/tmp"))
            .unwrap()
            .collect();
        assert!(tmp.is_empty(), "files left in MAILDIR/tmp: {tmp:?}");
    }
}

/// A stored file: its trace fields (`Return-Path:` and the folded `Received:`) and the message.
struct Stored {
    trace: String,
    message: Vec<u8>,
}

impl Stored {
    fn read(path: &Path) -> Stored {
        let bytes = fs::read(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        let mut end = 0;
        for (i, line) in bytes.split_inclusive(|&byte| byte == b'\n').enumerate() {
            let trace = match i {
                0 => line.starts_with(b"Return-Path: <"),
                1 => line.starts_with(b"Received: from "),
                _ => line.starts_with(b"\t"),
            };
            if !trace {
                break;
            }
            assert!(
                line.ends_with(b"\r\n"),
                "trace lines end with CRLF: {line:?}"
            );
            end += line.len();
        }
        Stored {
            trace: String::from_utf8(bytes[..end].to_vec()).expect("ASCII trace fields"),
            message: bytes[end..].to_vec(),
        }
    }

    /// Checks the trace fields name the sender, the client, the protocol and the one recipient
    /// (with the queue id of the reply when given), and the message is `message` exactly.
    #[track_caller]
    fn check(
        &self,
        from: &str,
        helo: &str,
        with: &str,
        to: &str,
        id: Option<&str>,
        message: &[u8],
    ) {
        let id = id.map_or(String::new(), |id| format!("{id}\r\n"));
        let expected_start = format!(
            "Return-Path: <{from}>\r\nReceived: from {helo} ([127.0.0.1])\r\n\tby localhost with {with} id {id}"
        );
        assert!(
            self.trace.starts_with(&expected_start),
            "trace fields {:?}, expected to start with {expected_start:?}",
            self.trace
        );
        assert!(
            self.trace.contains(&format!("\r\n\tfor <{to}>;\r\n\t")),
            "{:?}",
            self.trace
        );
        assert!(self.trace.ends_with(" +0000\r\n"), "{:?}", self.trace);
        assert_same_bytes(&self.message, message, "the stored message");
    }
}

#[track_caller]
fn assert_same_bytes(actual: &[u8], expected: &[u8], what: &str) {
    assert!(
        actual == expected,
        "{what}:\n got      {:?}\n expected {:?}",
        String::from_utf8_lossy(actual),
        String::from_utf8_lossy(expected)
    );
}

/// The queue id of a `250 2.0.0 OK: queued as ID` reply.
#[track_caller]
fn queue_id(reply: &str) -> &str {
    reply
        .strip_prefix("250 2.0.0 OK: queued as ")
        .and_then(|rest| rest.strip_suffix("\r\n"))
        .unwrap_or_else(|| panic!("not a `queued as` reply: {reply:?}"))
}

// ---------------------------------------------------------------------------------------------
// A raw SMTP client, over TCP or TLS

/// An SMTP client that sends bytes as told and reads replies exactly as they come.
struct Client<S> {
    stream: S,
    /// Read and not yet taken as part of a reply.
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    fn new(stream: S) -> Self {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(REPLY_TIMEOUT, self.stream.write_all(bytes))
            .await
            .expect("write timed out")
            .expect("write to smtp_server");
    }

    /// Reads more; the number of bytes, 0 at EOF.
    async fn read_more(&mut self) -> usize {
        let mut chunk = [0; 16 * 1024];
        let n = tokio::time::timeout(REPLY_TIMEOUT, self.stream.read(&mut chunk))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "nothing from the server within {REPLY_TIMEOUT:?}; unread: {:?}",
                    String::from_utf8_lossy(&self.buf)
                )
            })
            .expect("read from smtp_server");
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// One whole reply, all its lines, each with its CRLF.
    async fn reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let end = loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    break i + 2;
                }
                if self.read_more().await == 0 {
                    panic!(
                        "EOF inside a reply; so far {reply:?} then {:?}",
                        String::from_utf8_lossy(&self.buf)
                    );
                }
            };
            let line: Vec<u8> = self.buf.drain(..end).collect();
            let line = String::from_utf8(line).expect("replies are ASCII");
            let bytes = line.as_bytes();
            assert!(
                bytes.len() >= 5
                    && bytes[..3].iter().all(u8::is_ascii_digit)
                    && b" -".contains(&bytes[3]),
                "not a reply line: {line:?}"
            );
            if !reply.is_empty() {
                assert_eq!(
                    line[..3],
                    reply[..3],
                    "one code per reply: {reply:?} then {line:?}"
                );
            }
            reply.push_str(&line);
            if bytes[3] == b' ' {
                return reply;
            }
        }
    }

    /// Sends `line` with CRLF and reads the reply.
    async fn command(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Sends `line` and checks the reply is exactly `expected` (one line, CRLF added).
    async fn expect(&mut self, line: &str, expected: &str) {
        let reply = self.command(line).await;
        assert_eq!(reply, format!("{expected}\r\n"), "the reply to {line:?}");
    }

    /// Expects the server's EOF and nothing before it.
    async fn expect_eof(&mut self) {
        while self.read_more().await > 0 {}
        assert!(
            self.buf.is_empty(),
            "unexpected bytes before EOF: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }

    /// The standard transaction: `MAIL`, `RCPT`, `DATA`, then `content` (already dot-stuffed,
    /// with its final dot); the final reply.
    async fn send_mail(&mut self, from: &str, to: &str, content: &[u8]) -> String {
        self.expect(&format!("MAIL FROM:<{from}>"), "250 2.1.0 Sender OK")
            .await;
        self.expect(&format!("RCPT TO:<{to}>"), "250 2.1.5 Recipient OK")
            .await;
        self.expect("DATA", "354 End data with <CR><LF>.<CR><LF>")
            .await;
        self.send(content).await;
        self.reply().await
    }
}

impl Client<TcpStream> {
    /// Runs a TLS handshake over this connection, trusting only the certificate in `ca_file`
    /// and checking the name `localhost`. Nothing must be left unread in plaintext.
    async fn start_tls(self, ca_file: &Path) -> Client<SslStream<TcpStream>> {
        assert!(
            self.buf.is_empty(),
            "plaintext left unread before the handshake: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
        builder.set_ca_file(ca_file).unwrap();
        let ssl = builder
            .build()
            .configure()
            .unwrap()
            .into_ssl("localhost")
            .unwrap();
        let mut stream = SslStream::new(ssl, self.stream).unwrap();
        tokio::time::timeout(REPLY_TIMEOUT, Pin::new(&mut stream).connect())
            .await
            .expect("TLS handshake timed out")
            .expect("TLS handshake with smtp_server");
        Client::new(stream)
    }
}

/// `EHLO name`; the reply's lines after the first, without `250-` and CRLF.
async fn ehlo<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Client<S>,
    name: &str,
) -> Vec<String> {
    let reply = client.command(&format!("EHLO {name}")).await;
    let mut lines = reply.split_terminator("\r\n");
    assert_eq!(
        lines.next(),
        Some(&*format!("250-localhost greets {name}")),
        "{reply:?}"
    );
    lines.map(|line| line[4..].to_owned()).collect()
}

// ---------------------------------------------------------------------------------------------
// Real clients

/// Python's smtplib: STARTTLS with a verifying context, then `sendmail` and `quit`.
const SMTPLIB_CLIENT: &str = r#"
import json, smtplib, ssl, sys

host, port, cafile, message = sys.argv[1], int(sys.argv[2]), sys.argv[3], bytes.fromhex(sys.argv[4])
context = ssl.create_default_context(cafile=cafile)
assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
smtp = smtplib.SMTP(host, port, local_hostname="client.example", timeout=20)
smtp.ehlo()
before = sorted(smtp.esmtp_features)
code, text = smtp.starttls(context=context)
starttls = [code, text.decode()]
smtp.ehlo()
after = sorted(smtp.esmtp_features)
size = smtp.esmtp_features["size"]
refused = smtp.sendmail("alice@example.org", ["bob@example.net"], message, mail_options=["BODY=8BITMIME"])
tls = [smtp.sock.version(), smtp.sock.cipher()[0]]
code, text = smtp.quit()
print(json.dumps({"before": before, "starttls": starttls, "after": after, "size": size,
                  "refused": refused, "tls": tls, "quit": [code, text.decode()]}))
"#;

/// What the smtplib test gives `sendmail`: lines that start with dots (smtplib stuffs them), a
/// line that is a single dot, and 8-bit bytes, all with CRLF, as smtplib sends bytes as they are.
const PYTHON_MESSAGE: &[u8] = b"From: Alice <alice@example.org>\r\n\
To: Bob <bob@example.net>\r\n\
Subject: dots and eight bits\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
.a line that starts with a dot\r\n\
..and one with two\r\n\
.\r\n\
caf\xc3\xa9 \xe2\x82\xac and a raw \xff byte\r\n\
last line\r\n";

#[test]
fn python_smtplib_sends_a_message_over_starttls() {
    let server = SmtpServer::start(&[]);
    let mut command = Command::new("python3");
    command
        .args(["-I", "-u", "-c", SMTPLIB_CLIENT, "localhost"])
        .arg(server.addr.port().to_string())
        .arg(server.cert_path())
        .arg(
            PYTHON_MESSAGE
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect::<String>(),
        );
    let finished = Process::spawn("python3 smtplib client", command).finish(TIMEOUT);
    assert_eq!(
        finished.status.code(),
        Some(0),
        "smtplib client ({}); stderr:\n{}\nserver stderr:\n{}",
        finished.status,
        finished.stderr_text(),
        server.process.stderr().text()
    );
    let result: serde_json::Value =
        serde_json::from_slice(&finished.stdout).expect("the smtplib client's JSON line");

    let features =
        |key: &str| -> Vec<String> { serde_json::from_value(result[key].clone()).unwrap() };
    let mut before = features("before");
    assert!(before.contains(&"starttls".to_owned()), "{before:?}");
    let after = features("after");
    assert!(!after.contains(&"starttls".to_owned()), "{after:?}");
    before.retain(|feature| feature != "starttls");
    assert_eq!(before, after, "STARTTLS aside, the same extensions");
    for feature in ["8bitmime", "enhancedstatuscodes", "pipelining", "size"] {
        assert!(
            after.contains(&feature.to_owned()),
            "{feature} in {after:?}"
        );
    }
    assert_eq!(result["size"], "10485760");
    assert_eq!(
        result["starttls"],
        serde_json::json!([220, "2.0.0 Ready to start TLS"])
    );
    assert_eq!(result["refused"], serde_json::json!({}));
    assert_eq!(result["tls"][0], "TLSv1.3");
    assert_eq!(result["quit"], serde_json::json!([221, "2.0.0 Bye"]));

    let [path] = &server.stored(1)[..] else {
        unreachable!()
    };
    Stored::read(path).check(
        "alice@example.org",
        "client.example",
        "ESMTPS",
        "bob@example.net",
        None,
        PYTHON_MESSAGE,
    );
    assert_eq!(server.files_in("new").len(), 1);
    server.stop(1);
}

#[test]
fn openssl_s_client_completes_a_verified_starttls_handshake() {
    let server = SmtpServer::start(&[]);
    let mut command = Command::new("openssl");
    command
        .args(["s_client", "-starttls", "smtp", "-connect"])
        .arg(server.addr.to_string())
        .arg("-CAfile")
        .arg(server.cert_path())
        .args(["-verify_return_error", "-verify_hostname", "localhost"])
        .args(["-brief", "-ign_eof"]);
    // s_client sends QUIT once TLS is up (with a bare LF, as typed), and with `-ign_eof` runs
    // until the server closes rather than until its stdin ends.
    let finished =
        Process::spawn_with_input("openssl s_client", command, b"QUIT\n".to_vec()).finish(TIMEOUT);
    let (stdout, stderr) = (finished.stdout_text(), finished.stderr_text());
    assert_eq!(
        finished.status.code(),
        Some(0),
        "s_client ({}); stdout:\n{stdout}\nstderr:\n{stderr}",
        finished.status
    );
    for expected in [
        "CONNECTION ESTABLISHED",
        "Protocol version: TLSv1.3",
        "Ciphersuite: TLS_",
        "Verification: OK",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected:?} in s_client's stderr:\n{stderr}"
        );
    }
    assert!(!stderr.contains("didn't find starttls"), "{stderr}");
    assert_eq!(
        stdout, "221 2.0.0 Bye\r\n",
        "after the handshake, QUIT's reply only"
    );
    server.stop(0);
}

// ---------------------------------------------------------------------------------------------
// STARTTLS

/// The CVE-2011-0411 class: a command pipelined behind STARTTLS arrives in plaintext and must
/// never be executed, neither before the handshake nor after it. The session hands it to the
/// upgrade as unconsumed plaintext, and the transport refuses the upgrade and ends the
/// connection: the client gets no TLS session and no reply to the `RSET`.
#[tokio::test]
async fn plaintext_pipelined_after_starttls_is_never_executed() {
    let server = SmtpServer::start(&[]);
    let mut client = server.connect().await;
    assert!(
        ehlo(&mut client, "client")
            .await
            .contains(&"STARTTLS".to_owned())
    );

    // One write: the server reads both lines in one chunk.
    client.send(b"STARTTLS\r\nRSET\r\n").await;
    // Whatever comes before the end, it is at most the go-ahead: never `250 2.0.0 Reset`, and
    // never a handshake. (The transport ends the connection as soon as it sees the plaintext,
    // today before the queued `220` goes out.)
    let mut rest = Vec::new();
    tokio::time::timeout(REPLY_TIMEOUT, client.stream.read_to_end(&mut rest))
        .await
        .expect("the server ends the connection")
        .ok();
    let rest = [&client.buf[..], &rest].concat();
    assert!(
        rest.is_empty() || rest == b"220 2.0.0 Ready to start TLS\r\n",
        "{:?}",
        String::from_utf8_lossy(&rest)
    );

    // The server goes on serving, and the same commands without the pipelined one upgrade.
    let mut client = server.connect().await;
    client
        .expect("STARTTLS", "220 2.0.0 Ready to start TLS")
        .await;
    let mut client = client.start_tls(&server.cert_path()).await;
    client.send(b"NOOP\r\n").await;
    assert_eq!(client.reply().await, "250 2.0.0 OK\r\n");
    client.expect("QUIT", "221 2.0.0 Bye").await;
    client.expect_eof().await;
    server.stop(0);
}

/// Without anything pipelined behind it, STARTTLS upgrades and the session starts over (RFC
/// 3207 §4.2): the EHLO sent in plaintext is forgotten, and STARTTLS is no longer offered.
#[tokio::test]
async fn starttls_starts_the_session_over() {
    let server = SmtpServer::start(&[]);
    let mut client = server.connect().await;
    assert!(
        ehlo(&mut client, "client")
            .await
            .contains(&"STARTTLS".to_owned())
    );
    client
        .expect("STARTTLS", "220 2.0.0 Ready to start TLS")
        .await;
    let mut client = client.start_tls(&server.cert_path()).await;
    client
        .expect("MAIL FROM:<a@x>", "503 5.5.1 Bad sequence of commands")
        .await;
    let extensions = ehlo(&mut client, "client").await;
    assert!(
        !extensions.contains(&"STARTTLS".to_owned()),
        "{extensions:?}"
    );
    client
        .expect("STARTTLS", "503 5.5.1 TLS already active")
        .await;
    client.expect("QUIT", "221 2.0.0 Bye").await;
    client.expect_eof().await;
    server.stop(0);
}

#[tokio::test]
async fn starttls_takes_no_arguments() {
    let server = SmtpServer::start(&[]);
    let mut client = server.connect().await;
    client
        .expect(
            "STARTTLS now",
            "501 5.5.4 Syntax: STARTTLS (no parameters allowed)",
        )
        .await;
    // Still plaintext, and STARTTLS still possible, even before EHLO.
    client.expect("NOOP", "250 2.0.0 OK").await;
    client
        .expect("STARTTLS", "220 2.0.0 Ready to start TLS")
        .await;
    let mut client = client.start_tls(&server.cert_path()).await;
    client.expect("QUIT", "221 2.0.0 Bye").await;
    client.expect_eof().await;
    server.stop(0);
}

#[tokio::test]
async fn require_tls_refuses_mail_until_starttls() {
    let server = SmtpServer::start(&["--require-tls"]);
    let mut client = server.connect().await;
    assert!(
        ehlo(&mut client, "client")
            .await
            .contains(&"STARTTLS".to_owned())
    );
    client
        .expect(
            "MAIL FROM:<a@x>",
            "530 5.7.0 Must issue a STARTTLS command first",
        )
        .await;
    client
        .expect("RCPT TO:<b@y>", "503 5.5.1 Bad sequence of commands")
        .await;
    client
        .expect("STARTTLS", "220 2.0.0 Ready to start TLS")
        .await;

    let mut client = client.start_tls(&server.cert_path()).await;
    ehlo(&mut client, "client").await;
    let reply = client
        .send_mail("a@x", "b@y", b"Subject: tls\r\n\r\nover TLS\r\n.\r\n")
        .await;
    let id = queue_id(&reply).to_owned();
    client.expect("QUIT", "221 2.0.0 Bye").await;
    client.expect_eof().await;

    let [path] = &server.stored(1)[..] else {
        unreachable!()
    };
    assert!(
        path.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(&format!("{id}."))
    );
    Stored::read(path).check(
        "a@x",
        "client",
        "ESMTPS",
        "b@y",
        Some(&id),
        b"Subject: tls\r\n\r\nover TLS\r\n",
    );
    server.stop(1);
}

// ---------------------------------------------------------------------------------------------
// The DATA phase

#[tokio::test]
async fn a_message_over_max_size_is_refused_and_the_session_goes_on() {
    let server = SmtpServer::start(&["--max-size", "1000"]);
    let mut client = server.connect().await;
    assert!(
        ehlo(&mut client, "client")
            .await
            .contains(&"SIZE 1000".to_owned())
    );
    // Announced too big: refused at MAIL.
    client
        .expect(
            "MAIL FROM:<a@x> SIZE=1001",
            "552 5.3.4 Message size exceeds fixed maximum message size",
        )
        .await;

    // 1001 bytes of content: read to the end, refused, stored nowhere.
    let line = format!("{}\r\n", "x".repeat(98));
    let mut content = line.repeat(10).into_bytes();
    content.push(b'y');
    assert_eq!(content.len(), 1001);
    let reply = client
        .send_mail("a@x", "b@y", &[&content[..], b"\r\n.\r\n"].concat())
        .await;
    assert_eq!(
        reply,
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    assert!(server.files_in("new").is_empty());
    assert!(server.files_in("tmp").is_empty());

    // The transaction is over, the connection is not: exactly 1000 bytes go through.
    client
        .expect("RCPT TO:<b@y>", "503 5.5.1 Bad sequence of commands")
        .await;
    content.truncate(998);
    content.extend_from_slice(b"\r\n");
    let reply = client
        .send_mail("a@x", "b@y", &[&content[..], b".\r\n"].concat())
        .await;
    let id = queue_id(&reply).to_owned();
    client.expect("QUIT", "221 2.0.0 Bye").await;
    client.expect_eof().await;

    let [path] = &server.stored(1)[..] else {
        unreachable!()
    };
    Stored::read(path).check("a@x", "client", "ESMTP", "b@y", Some(&id), &content);
    assert_eq!(server.files_in("new").len(), 1);
    server.stop(1);
}

/// What the pipelining tests send: two transactions, the second behind the first's final dot,
/// then QUIT behind the second's.
const PIPELINED: &[u8] = b"EHLO client\r\n\
MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n\
Subject: t\r\n\r\nbody\r\n.\r\n\
MAIL FROM:<>\r\nRCPT TO:<c@z>\r\nDATA\r\n\
Subject: two\r\n\r\n..stuffed\r\nDATA\r\nQUIT\r\n.\r\n\
QUIT\r\n";

/// Reads the replies to [`PIPELINED`], then EOF, and checks both messages.
async fn check_pipelined<S: AsyncRead + AsyncWrite + Unpin>(
    server: &SmtpServer,
    client: &mut Client<S>,
) {
    let ehlo = client.reply().await;
    assert!(
        ehlo.starts_with("250-localhost greets client\r\n"),
        "{ehlo:?}"
    );
    let mut ids = Vec::new();
    for _ in 0..2 {
        assert_eq!(client.reply().await, "250 2.1.0 Sender OK\r\n");
        assert_eq!(client.reply().await, "250 2.1.5 Recipient OK\r\n");
        assert_eq!(
            client.reply().await,
            "354 End data with <CR><LF>.<CR><LF>\r\n"
        );
        ids.push(queue_id(&client.reply().await).to_owned());
    }
    assert_eq!(client.reply().await, "221 2.0.0 Bye\r\n");
    client.expect_eof().await;

    let stored = server.stored(2);
    Stored::read(&stored[0]).check(
        "a@x",
        "client",
        "ESMTP",
        "b@y",
        Some(&ids[0]),
        b"Subject: t\r\n\r\nbody\r\n",
    );
    Stored::read(&stored[1]).check(
        "",
        "client",
        "ESMTP",
        "c@z",
        Some(&ids[1]),
        b"Subject: two\r\n\r\n.stuffed\r\nDATA\r\nQUIT\r\n",
    );
}

/// Everything in one write: the bytes behind each DATA line travel to the DATA phase, and the
/// bytes behind each final dot travel back, as `SetProtocol` leftovers.
#[tokio::test]
async fn commands_pipelined_across_the_data_phase_are_answered_in_order() {
    let server = SmtpServer::start(&[]);
    let mut client = server.connect().await;
    client.send(PIPELINED).await;
    check_pipelined(&server, &mut client).await;
    server.stop(2);
}

/// The same bytes in three-byte pieces, so that chunks end anywhere: inside a line, between CR
/// and LF, inside the final dot.
#[tokio::test]
async fn commands_trickling_in_are_answered_in_order() {
    let server = SmtpServer::start(&[]);
    let mut client = server.connect().await;
    client.stream.set_nodelay(true).unwrap();
    for piece in PIPELINED.chunks(3) {
        client.send(piece).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    check_pipelined(&server, &mut client).await;
    server.stop(2);
}

#[tokio::test]
async fn concurrent_sessions_store_distinct_messages() {
    const SESSIONS: usize = 8;
    let server = SmtpServer::start(&[]);
    let mut tasks = Vec::new();
    for i in 0..SESSIONS {
        let mut client = server.connect().await;
        tasks.push(tokio::spawn(async move {
            client.expect("HELO client", "250 localhost").await;
            let content = format!("Subject: {i}\r\n\r\nmessage {i}\r\n");
            let reply = client
                .send_mail(
                    "a@x",
                    &format!("r{i}@y"),
                    format!("{content}.\r\n").as_bytes(),
                )
                .await;
            client.expect("QUIT", "221 2.0.0 Bye").await;
            client.expect_eof().await;
            (queue_id(&reply).to_owned(), content)
        }));
    }
    let mut sent = Vec::new();
    for task in tasks {
        sent.push(tokio::time::timeout(TIMEOUT, task).await.unwrap().unwrap());
    }
    let stored = server.stored(SESSIONS);
    for (i, (id, content)) in sent.iter().enumerate() {
        let path = stored
            .iter()
            .find(|path| {
                path.file_name()
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .starts_with(&format!("{id}."))
            })
            .unwrap_or_else(|| panic!("no file for {id} in {stored:?}"));
        Stored::read(path).check(
            "a@x",
            "client",
            "SMTP",
            &format!("r{i}@y"),
            Some(id),
            content.as_bytes(),
        );
    }
    assert_eq!(server.files_in("new").len(), SESSIONS);
    server.stop(SESSIONS);
}

// ---------------------------------------------------------------------------------------------
// Errors

#[tokio::test]
async fn errors_are_answered_and_the_session_goes_on() {
    let server = SmtpServer::start(&[]);
    let mut client = server.connect().await;
    let bad_sequence = "503 5.5.1 Bad sequence of commands";
    client.expect("MAIL FROM:<a@x>", bad_sequence).await;
    client
        .expect("FOO bar", "500 5.5.2 Command not recognized")
        .await;
    client
        .expect("EXPN staff", "502 5.5.1 Command not implemented")
        .await;
    client.expect("EHLO", "501 5.5.4 Syntax: EHLO domain").await;
    ehlo(&mut client, "client").await;
    client.expect("RCPT TO:<b@y>", bad_sequence).await;
    client.expect("DATA", bad_sequence).await;
    client
        .expect("MAIL FROM:<a@x>", "250 2.1.0 Sender OK")
        .await;
    client.expect("MAIL FROM:<a@x>", bad_sequence).await;
    client.expect("DATA", bad_sequence).await;
    client
        .expect("RCPT TO:b@y", "501 5.5.4 Syntax: RCPT TO:<address>")
        .await;
    client
        .expect(
            "RCPT TO:<b@y> NOTIFY=NEVER",
            "555 5.5.4 Unsupported parameter",
        )
        .await;

    // 8-bit and control bytes: an answer, not a crash.
    client
        .send(b"\x00\xff\xfe\r\nNOOP caf\xc3\xa9\r\nVRFY \x01\r\nNOOP\r\n")
        .await;
    assert_eq!(client.reply().await, "500 5.5.2 Command not recognized\r\n");
    let not_ascii = "501 5.5.4 Arguments must be printable ASCII\r\n";
    assert_eq!(client.reply().await, not_ascii);
    assert_eq!(client.reply().await, not_ascii);
    assert_eq!(client.reply().await, "250 2.0.0 OK\r\n");

    // A line of 512 octets is fine; one more is too long, answered once, then forgotten.
    let longest = format!("NOOP {}", "x".repeat(512 - 7));
    client.expect(&longest, "250 2.0.0 OK").await;
    let too_long = format!("RSET {}", "x".repeat(600));
    client.expect(&too_long, "500 5.5.6 Line too long").await;
    client.expect("NOOP", "250 2.0.0 OK").await;

    // The transaction survived it all.
    client
        .expect("RCPT TO:<b@y>", "250 2.1.5 Recipient OK")
        .await;
    client.expect("RSET", "250 2.0.0 Reset").await;
    client.expect("DATA", bad_sequence).await;
    client.expect("QUIT", "221 2.0.0 Bye").await;
    client.expect_eof().await;
    server.stop(0);
}

/// The peak resident memory (`VmHWM`) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// A peer that sends 32 MiB without a line ending gets one `500` and costs the server no more
/// memory than a short line would.
#[tokio::test]
async fn a_line_that_never_ends_does_not_grow_memory() {
    const ENDLESS: usize = 32 * 1024 * 1024;
    let server = SmtpServer::start(&[]);
    let mut client = server.connect().await;
    client.expect("NOOP", "250 2.0.0 OK").await;
    let before = peak_rss_kib(server.process.pid());

    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..ENDLESS / chunk.len() {
        client.send(&chunk).await;
    }
    client.send(b"\r\nNOOP\r\n").await;
    assert_eq!(client.reply().await, "500 5.5.6 Line too long\r\n");
    assert_eq!(client.reply().await, "250 2.0.0 OK\r\n");

    let grown = peak_rss_kib(server.process.pid()).saturating_sub(before);
    assert!(
        grown < 8 * 1024,
        "the server's peak memory grew by {grown} KiB"
    );
    client.expect("QUIT", "221 2.0.0 Bye").await;
    client.expect_eof().await;
    server.stop(0);
}

// ---------------------------------------------------------------------------------------------
// Bounds: memory under a client that never reads, time under clients that say nothing

/// How long the pipelining client of the memory test sends.
const FLOOD: Duration = Duration::from_secs(3);

/// The most resident memory the server may have while a client pipelines `NOOP`s and never
/// reads a reply: 64 MiB. (Before switchboard bounded writes by default, it passed 1 GiB in
/// 3 s in a release build.)
const RSS_BOUND_KIB: u64 = 64 * 1024;

/// The most its memory may grow over its idle size meanwhile: 8 MiB. What the transport holds
/// is one read (256 KiB) and the replies to it (some 600 KiB, over the 64 KiB high-water
/// mark), whatever the client sends; a debug build of the server without the bound grows by
/// more than twice this in the same time.
const GROWTH_BOUND_KIB: u64 = 8 * 1024;

/// Python's smtplib, one session that sends a message, and a `NOOP`, over and over for
/// `seconds`: how many messages, and the slowest round.
const SMTPLIB_LOOP: &str = r#"
import json, smtplib, sys, time

host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
start = time.monotonic()
smtp = smtplib.SMTP(host, port, local_hostname="client.example", timeout=10)
messages, worst = 0, 0.0
while time.monotonic() - start < seconds:
    began = time.monotonic()
    assert smtp.noop()[0] == 250
    refused = smtp.sendmail("alice@example.org", ["bob@example.net"],
                            f"Subject: {messages}\r\n\r\nhello\r\n")
    assert refused == {}, refused
    worst = max(worst, time.monotonic() - began)
    messages += 1
    time.sleep(0.05)
code, _ = smtp.quit()
print(json.dumps({"messages": messages, "worst": worst, "quit": code}))
"#;

/// One client pipelines `NOOP`s as fast as the server takes them and never reads a reply, for
/// [`FLOOD`]; meanwhile smtplib sends messages. Without a bound on what the server writes, its
/// replies pile up in memory as fast as it parses; with switchboard's default, the session's
/// transport stops reading while its write buffer is over the high-water mark, and the client
/// stalls on TCP's back-pressure. The server's memory stays within [`GROWTH_BOUND_KIB`] of its
/// idle size and under [`RSS_BOUND_KIB`], and smtplib is served all along.
#[test]
fn a_client_that_pipelines_and_never_reads_costs_bounded_memory() {
    let server = SmtpServer::start(&[]);
    let pid = server.process.pid();
    let sampler = bounds::RssSampler::start(pid, 4 * RSS_BOUND_KIB);
    let mut smtplib = Command::new("python3");
    smtplib
        .args(["-I", "-u", "-c", SMTPLIB_LOOP, "127.0.0.1"])
        .arg(server.addr.port().to_string())
        .arg(FLOOD.as_secs_f64().to_string());
    let smtplib = Process::spawn("python3 smtplib loop", smtplib);

    let flood =
        bounds::pipeline_without_reading(server.addr, b"NOOP\r\n", FLOOD, sampler.over_ceiling());
    let finished = smtplib.finish(TIMEOUT);
    let baseline = sampler.baseline_kib();
    let peak = sampler.finish();
    println!(
        "smtp_server: {:.1} MiB idle, {:.1} MiB at peak, while a client pipelined {:.1} MB of \
         NOOPs over {} connection(s) in {FLOOD:?} without reading",
        bounds::mib(baseline),
        bounds::mib(peak),
        flood.sent as f64 / 1e6,
        flood.connections
    );
    assert!(
        peak < RSS_BOUND_KIB && peak - baseline < GROWTH_BOUND_KIB,
        "smtp_server's resident memory went from {:.1} MiB to {:.1} MiB",
        bounds::mib(baseline),
        bounds::mib(peak)
    );
    // The pipelining client filled the server's buffers and its own, and got no further.
    assert_eq!(
        flood.connections, 1,
        "the server ended the pipelining connection"
    );
    assert!(flood.sent > 64 * 1024, "only {} bytes sent", flood.sent);

    assert_eq!(
        finished.status.code(),
        Some(0),
        "smtplib loop ({}); stderr:\n{}\nserver stderr:\n{}",
        finished.status,
        finished.stderr_text(),
        server.process.stderr().text()
    );
    let result: serde_json::Value =
        serde_json::from_slice(&finished.stdout).expect("the smtplib loop's JSON line");
    let messages = result["messages"].as_u64().expect("a count") as usize;
    let worst = result["worst"].as_f64().expect("seconds");
    println!("smtplib meanwhile: {messages} messages, the slowest round {worst:.3} s");
    assert!(messages >= 5, "smtplib sent only {messages} messages");
    assert!(worst < 2.0, "a round of smtplib took {worst:.3} s");
    assert_eq!(result["quit"], 221);
    server.stored(messages);
    server.stop(messages);
}

/// The reply before a timeout closes the connection, with the default `--hostname`.
const TIMED_OUT: &[u8] = b"421 4.4.2 localhost Error: timeout exceeded\r\n";

/// Reads replies from `conn` until the server ends the connection; everything it sent, and
/// how long after `since` it ended it.
fn until_closed(conn: &mut std::net::TcpStream, since: Instant) -> (Vec<u8>, Duration) {
    conn.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    let mut received = Vec::new();
    assert!(
        bounds::read_to_end(conn, &mut received),
        "the connection is still open after {REPLY_TIMEOUT:?}; received {:?}",
        String::from_utf8_lossy(&received)
    );
    (received, since.elapsed())
}

/// With `--command-timeout 1`: a client that says nothing, one that sends its commands a byte
/// every 250 ms (slowloris: bytes move all the time, but no command is ever complete within the
/// timeout), and one that goes silent in the middle of a message, each get `421 4.4.2` and the
/// connection closes, between 1 and 3 s after their last command (or the greeting). A client
/// that sends a command every half second is served throughout, and the server goes on
/// accepting.
#[test]
fn silent_and_slow_clients_are_told_421_and_closed() {
    const TIMEOUT_SECS: f64 = 1.0;
    let server = SmtpServer::start(&["--command-timeout", "1"]);
    let addr = server.addr;
    let bound = |elapsed: Duration, what: &str| {
        let secs = elapsed.as_secs_f64();
        assert!(
            (TIMEOUT_SECS * 0.9..3.0).contains(&secs),
            "{what} closed after {secs:.3} s"
        );
    };
    let greeting_then_421 = |received: &[u8], what: &str| {
        assert_eq!(
            String::from_utf8_lossy(received),
            String::from_utf8_lossy(&[GREETING.as_bytes(), TIMED_OUT].concat()),
            "{what}"
        );
    };

    let silent: Vec<_> = (0..10)
        .map(|_| std::thread::spawn(move || bounds::silent(addr, Duration::from_secs(10))))
        .collect();
    let slow: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                bounds::slowloris(addr, b"NOOP\r\nNOOP\r\n", Duration::from_millis(250))
            })
        })
        .collect();
    let in_data = std::thread::spawn(move || {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        use std::io::Write;
        // Pipelined up to DATA (RFC 2920: DATA ends a group), then the start of a message.
        conn.write_all(b"HELO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        conn.write_all(b"Subject: half a message\r\n").unwrap();
        let since = Instant::now();
        until_closed(&mut conn, since)
    });
    let talker = std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        let conn = std::net::TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, GREETING);
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(500));
            reader.get_mut().write_all(b"NOOP\r\n").unwrap();
            line.clear();
            reader.read_line(&mut line).unwrap();
            assert_eq!(line, "250 2.0.0 OK\r\n", "a talking client is served");
        }
        reader.get_mut().write_all(b"QUIT\r\n").unwrap();
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "221 2.0.0 Bye\r\n");
    });

    for client in silent {
        let (received, ended) = client.join().unwrap();
        greeting_then_421(&received, "a silent client");
        bound(ended.expect("a silent client is closed"), "a silent client");
    }
    for client in slow {
        let (received, ended) = client.join().unwrap();
        greeting_then_421(&received, "a slowloris");
        // The first NOOP was never complete in time: nothing was executed.
        let ended = ended.expect("a slowloris is closed");
        bound(ended, "a slowloris");
    }
    let (received, ended) = in_data.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&received),
        [
            GREETING,
            "250 localhost\r\n",
            "250 2.1.0 Sender OK\r\n",
            "250 2.1.5 Recipient OK\r\n",
            "354 End data with <CR><LF>.<CR><LF>\r\n",
            std::str::from_utf8(TIMED_OUT).unwrap(),
        ]
        .concat(),
        "a client silent in the middle of a message"
    );
    bound(ended, "a client silent in the middle of a message");
    talker.join().unwrap();

    // Still serving.
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    let (received, _) = {
        use std::io::Write;
        conn.write_all(b"QUIT\r\n").unwrap();
        until_closed(&mut conn, Instant::now())
    };
    assert_eq!(
        String::from_utf8_lossy(&received),
        [GREETING, "221 2.0.0 Bye\r\n"].concat()
    );
    server.stop(0);
}

/// The committed seeds and regressions of the `smtp_*` fuzz targets pass the checks the targets
/// run, here on the stable toolchain without a fuzzer.
#[test]
fn the_fuzz_corpus_passes_the_fuzz_checks() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    fuzz_checks::input::replay(&corpus.join("smtp_command"), fuzz_checks::command);
    fuzz_checks::input::replay(&corpus.join("smtp_data"), fuzz_checks::data);
    fuzz_checks::input::replay(&corpus.join("smtp_session"), fuzz_checks::session);
}
