//! TLS servers and clients against broken and hostile peers (issue 8): garbage instead of a
//! ClientHello, handshakes that stall or trickle, clients that vanish mid-handshake,
//! certificates for another host or out of date, and more stalled handshakes than a server
//! runs at once. Each ends in a clear error within a bound, never a hang; the server's socket
//! is closed, no protocol is made for a failed handshake, and the next client is served.
//!
//! The tests take turns ([`alone`]): they count this process's file descriptors and
//! transports, which tests running in parallel threads would disturb.

mod support;
use support::tls as tls_support;

use std::{
    future::Future,
    io::{self, Read},
    net::SocketAddr,
    path::Path,
    process::{Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use support::{ProbeOptions, ProbeRx, deadline, open_fds, probe_factory};
use switchboard::{
    ServerHandle, ServerOptions, TlsError, TlsErrorKind,
    stream::live_transports,
    tls::{
        self, TlsAcceptor, TlsConnector,
        openssl::{
            asn1::Asn1Time,
            bn::{BigNum, MsbOption},
            ec::{EcGroup, EcKey},
            error::ErrorStack,
            hash::MessageDigest,
            nid::Nid,
            pkey::{PKey, Private},
            ssl::{HandshakeError, SslAcceptor, SslConnector, SslMethod},
            x509::{
                X509, X509NameBuilder,
                extension::{BasicConstraints, KeyUsage, SubjectAlternativeName},
            },
        },
    },
};
use tls_support::{client_hello, localhost};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc::UnboundedReceiver,
    time::Instant,
};

/// Runs a test body on an actix system of its own, with the deadline of every test, and alone:
/// descriptor and transport counts are per process. The turn is held until the system and its
/// runtime (an epoll descriptor, an eventfd) are gone, so the next test's counts start clean.
fn alone(body: impl Future<Output = ()>) {
    static TURN: Mutex<()> = Mutex::new(());
    let _turn = lock(&TURN);
    actix_rt::System::new().block_on(deadline(body));
}

/// The handshake timeout of servers whose clients fail for a reason of their own: long, so that
/// a connection dropped by the timeout cannot pass for one dropped at once.
const PATIENT: Duration = Duration::from_secs(20);

/// How soon a failed handshake's connection must be gone: a tenth of [`PATIENT`], and over a
/// hundred times what it takes on an idle machine (a millisecond or so, some ten with the
/// polling of [`Server::gave_up`]).
const PROMPT: Duration = Duration::from_secs(2);

/// The handshake timeout of the tests of stalled handshakes.
const SHORT: Duration = Duration::from_millis(500);

/// When a stalled handshake may be cut off, at the earliest and the latest, measured from the
/// client's connect: the server's clock starts a little later, when it accepts; the upper bound
/// leaves a loaded CI machine a second.
const CUT_OFF: (Duration, Duration) = (Duration::from_millis(480), Duration::from_millis(1500));

/// A TLS server on the test's own arbiter (`workers(0)`), so that what it logs is logged on the
/// test's thread, where [`ServerLog`] reads it.
struct Server {
    handle: ServerHandle,
    addr: SocketAddr,
    probes: UnboundedReceiver<ProbeRx>,
    /// Protocols made: one per successful handshake, none for a failed one.
    made: Arc<AtomicUsize>,
    /// This process's descriptors once the server listens, before any client.
    fds: usize,
    transports: usize,
    log: ServerLog,
}

impl Server {
    async fn start(acceptor: TlsAcceptor) -> Server {
        let log = ServerLog::capture();
        let transports = live_transports();
        let (factory, probes) = probe_factory(ProbeOptions::default());
        let made = Arc::new(AtomicUsize::new(0));
        let counted = made.clone();
        let handle = tls::serve_with(
            "127.0.0.1:0",
            ServerOptions::default().workers(0),
            acceptor,
            move || {
                counted.fetch_add(1, SeqCst);
                factory()
            },
        )
        .await
        .expect("serve TLS");
        let addr = handle.addresses()[0].as_inet().expect("a TCP address");
        Server {
            handle,
            addr,
            probes,
            made,
            fds: open_fds(),
            transports,
            log,
        }
    }

    fn made(&self) -> usize {
        self.made.load(SeqCst)
    }

    /// Waits until the server has given up on `n` more handshakes and holds no connection;
    /// asserts it closed their sockets and made no protocol past `made`. Returns why each
    /// failed, as the server logged it.
    async fn gave_up(&self, n: usize, made: usize) -> Vec<String> {
        let end = Instant::now() + support::TIMEOUT;
        while self.log.failed_handshakes().len() < n || self.handle.stats().await.connections > 0 {
            assert!(
                Instant::now() < end,
                "the server never gave up on {n} handshakes: {:?}",
                self.log.failed_handshakes()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(server_ends(self.addr), 0, "the server holds a socket still");
        assert_eq!(self.made(), made, "a protocol without a handshake");
        self.log.take_failed_handshakes()
    }

    /// A well-behaved client connects, and the server's fresh protocol hears it.
    async fn serves(&mut self, connector: &TlsConnector) {
        let made_before = self.made();
        let (probe, mut events) = ProbeOptions::default().probe();
        let (transport, _) = tokio::time::timeout(
            support::TIMEOUT,
            connector.connect(&self.addr.to_string(), || probe.start()),
        )
        .await
        .expect("a good client's handshake hung")
        .expect("a good client is served");
        events.made().await;
        let mut served = tokio::time::timeout(support::TIMEOUT, self.probes.recv())
            .await
            .expect("no protocol for a good client")
            .expect("the server is gone");
        served.made().await;
        transport.write("ping");
        assert_eq!(served.data(4).await, b"ping");
        transport.close();
        assert!(events.until_lost().await.is_none());
        assert!(served.until_lost().await.is_none());
        assert_eq!(self.made(), made_before + 1);
    }

    /// Asserts every socket the server accepted is closed and every transport it started is
    /// gone, then closes it.
    async fn finish(self) {
        let end = Instant::now() + support::TIMEOUT;
        while self.handle.stats().await.connections > 0
            || open_fds() != self.fds
            || live_transports() != self.transports
        {
            assert!(
                Instant::now() < end,
                "{:?}; {} descriptors open, {} when the server started; {} transports, {} then",
                self.handle.stats().await,
                open_fds(),
                self.fds,
                live_transports(),
                self.transports
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.handle.close().await;
    }
}

/// The server's log: the one place it says why it dropped a connection whose handshake failed,
/// at debug level (`handshake failed err=...`), as no protocol exists yet to be told.
struct ServerLog {
    text: Arc<Mutex<Vec<u8>>>,
    _default: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ServerLog {
    /// Captures what is logged on this thread, debug level up, until dropped.
    fn capture() -> ServerLog {
        let text = Arc::new(Mutex::new(Vec::new()));
        let buffer = LogBuffer(text.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_writer(move || buffer.clone())
            .finish();
        ServerLog {
            text,
            _default: tracing::subscriber::set_default(subscriber),
        }
    }

    /// The errors of the handshakes that failed since the last
    /// [`take_failed_handshakes`](Self::take_failed_handshakes), as the server logged them.
    fn failed_handshakes(&self) -> Vec<String> {
        String::from_utf8_lossy(&lock(&self.text))
            .lines()
            .filter_map(|line| line.split_once("handshake failed err="))
            .map(|(_, err)| err.to_owned())
            .collect()
    }

    fn take_failed_handshakes(&self) -> Vec<String> {
        let failed = self.failed_handshakes();
        lock(&self.text).clear();
        failed
    }
}

/// How many accepted sockets of the server listening on `server` this process holds: its
/// descriptors whose sockets `/proc/net/tcp` lists from that address to a peer. Exact where a
/// count of every descriptor is not: it names the server's own sockets.
fn server_ends(server: SocketAddr) -> usize {
    let port = |field: &str| {
        field
            .rsplit_once(':')
            .and_then(|(_, port)| u16::from_str_radix(port, 16).ok())
    };
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let sockets: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let accepted = port(fields[1]) == Some(server.port())
                // The listening socket's peer is port 0.
                && port(fields[2]) != Some(0)
                // A socket closed and in TIME_WAIT has no inode.
                && fields[9] != "0";
            accepted.then(|| format!("socket:[{}]", fields[9]))
        })
        .collect();
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| sockets.iter().any(|socket| target == Path::new(socket)))
        .count()
}

/// How the server hung up on a raw client.
#[derive(Debug)]
struct HungUp {
    /// From the client's connect to the end of the connection.
    after: Duration,
    /// What the server sent before.
    received: Vec<u8>,
    /// A FIN (`Ok`) or a reset.
    ended: io::Result<()>,
}

/// Reads until the server ends the connection of the client `what`, failing the test after
/// [`support::TIMEOUT`].
async fn until_hung_up(
    what: &str,
    stream: &mut (impl AsyncRead + Unpin),
    started: Instant,
) -> HungUp {
    let mut received = Vec::new();
    let mut chunk = [0; 4096];
    let ended = tokio::time::timeout(support::TIMEOUT, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => return Ok(()),
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                Err(err) => return Err(err),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: the server never hung up"));
    HungUp {
        after: started.elapsed(),
        received,
        ended,
    }
}

/// A TLS alert record (RFC 8446 §6): what a server may say before it hangs up on a bad
/// handshake, and nothing else.
fn assert_at_most_an_alert(hung_up: &HungUp) {
    let received = &hung_up.received;
    assert!(
        received.is_empty() || (received.len() == 7 && received[..2] == [0x15, 0x03]),
        "the server sent more than an alert: {received:02x?}"
    );
    if let Err(err) = &hung_up.ended {
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    }
}

/// Asserts a stalled handshake was cut off by a [`SHORT`] timeout, without a word.
fn assert_cut_off(what: &str, hung_up: &HungUp) {
    assert!(
        CUT_OFF.0 <= hung_up.after && hung_up.after <= CUT_OFF.1,
        "{what}: cut off after {:?}, with a {SHORT:?} timeout",
        hung_up.after
    );
    // Dropped, not answered: the client said nothing an alert could answer yet.
    assert!(hung_up.received.is_empty(), "{what}: {hung_up:?}");
}

/// An OpenSSL client that trusts `certificate` and no other.
fn trusting(certificate: &X509) -> SslConnector {
    let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
    builder
        .cert_store_mut()
        .add_cert(certificate.clone())
        .unwrap();
    builder.build()
}

/// Writes `certificate` to a PEM file in `dir`, for clients' `-CAfile` and `cafile=`.
fn ca_file(dir: &Path, certificate: &X509) -> String {
    let path = dir.join("ca.pem");
    std::fs::write(&path, certificate.to_pem().unwrap()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Runs an independent client to its end, failing the test after [`support::TIMEOUT`]; returns
/// its exit status and what it printed, stdout then stderr. Polled without blocking the thread,
/// which the server shares.
async fn run_client(mut command: Command) -> (ExitStatus, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the client");
    let end = Instant::now() + support::TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut printed = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut printed)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut printed)
        .unwrap();
    (status, printed)
}

/// `openssl s_client` verifying the server's certificate against `ca_file` and the name
/// `host_name`, giving up on any verification error.
fn s_client(server: SocketAddr, ca_file: &str, host_name: &str) -> Command {
    let mut command = Command::new("openssl");
    command.args([
        "s_client",
        "-connect",
        &server.to_string(),
        "-CAfile",
        ca_file,
    ]);
    command.args(["-verify_hostname", host_name, "-verify_return_error"]);
    command
}

/// Python's `ssl` with its default context, trusting `ca_file`: exits 3 with the reason when the
/// certificate does not verify.
fn python_client(server: SocketAddr, ca_file: &str, host_name: &str) -> Command {
    const SCRIPT: &str = "
import socket, ssl, sys
host, port, cafile, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
context = ssl.create_default_context(cafile=cafile)
try:
    with socket.create_connection((host, port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=name) as tls:
            print('connected', tls.version())
except ssl.SSLCertVerificationError as err:
    print('verification failed:', err.verify_message)
    sys.exit(3)
";
    let mut command = Command::new("python3");
    command.args(["-I", "-c", SCRIPT]);
    command.args([
        &server.ip().to_string(),
        &server.port().to_string(),
        ca_file,
        host_name,
    ]);
    command
}

/// A certificate for localhost that expired yesterday (valid from two days ago to one day ago),
/// otherwise made as `SelfSigned::new` makes its own: a CA of its own, a P-256 key, SHA-256.
fn expired_localhost() -> Result<(X509, PKey<Private>), ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, "localhost")?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "switchboard expired")?;
    let name = name.build();
    let mut builder = X509::builder()?;
    builder.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(&name)?;
    builder.set_issuer_name(&name)?;
    builder.set_pubkey(&key)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let day = 24 * 60 * 60;
    let at = |secs: u64| Asn1Time::from_unix(i64::try_from(secs).unwrap());
    let (from, until) = (at(now - 2 * day)?, at(now - day)?);
    builder.set_not_before(&from)?;
    builder.set_not_after(&until)?;
    builder.append_extension(BasicConstraints::new().critical().ca().build()?)?;
    builder.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_cert_sign()
            .build()?,
    )?;
    let alt_names = SubjectAlternativeName::new()
        .dns("localhost")
        .ip("127.0.0.1")
        .build(&builder.x509v3_context(None, None))?;
    builder.append_extension(alt_names)?;
    builder.sign(&key, MessageDigest::sha256())?;
    Ok((builder.build(), key))
}

#[test]
fn garbage_instead_of_a_client_hello_is_hung_up_on_at_once_and_the_next_client_is_served() {
    alone(async {
        let cert = localhost();
        let mut server =
            Server::start(cert.acceptor().unwrap().handshake_timeout(PATIENT).unwrap()).await;
        let hello = client_hello("localhost");
        let random = support::pattern(7, 4096);
        let mut not_a_client_hello = hello.clone();
        // The handshake message's type: 2, a ServerHello.
        not_a_client_hello[5] = 2;
        // SSL 2's two-byte header (length 28), CLIENT-HELLO, version 2, one cipher spec, no
        // session id, a 16-byte challenge: what very old clients sent.
        let mut ssl2_hello = vec![0x80, 28, 0x01, 0x00, 0x02, 0x00, 0x03, 0x00, 0x00, 0x00, 16];
        ssl2_hello.extend_from_slice(&[0x01, 0x00, 0x80]);
        ssl2_hello.extend_from_slice(&[0x5a; 16]);

        // (what the client sends, whether it then closes its side, why the server gave up)
        let cases: [(&str, &[u8], bool, &str); 6] = [
            (
                "an HTTP request",
                b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
                false,
                "TLS handshake failed: http request",
            ),
            (
                "random bytes",
                &random,
                false,
                "TLS handshake failed: wrong version number",
            ),
            (
                "a handshake record that is not a ClientHello",
                &not_a_client_hello,
                false,
                "TLS handshake failed: unexpected message",
            ),
            (
                "a ClientHello cut short, then EOF",
                &hello[..hello.len() / 2],
                true,
                "connection ended during the TLS handshake: the peer closed the connection",
            ),
            (
                "a ClientHello in SSL 2's format",
                &ssl2_hello,
                false,
                "TLS handshake failed: unknown protocol",
            ),
            (
                "nothing but EOF",
                b"",
                true,
                "connection ended during the TLS handshake: the peer closed the connection",
            ),
        ];
        for (what, garbage, then_eof, why) in cases {
            let started = Instant::now();
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            // The server may hang up before it has read it all.
            let _ = stream.write_all(garbage).await;
            if then_eof {
                let _ = stream.shutdown().await;
            }
            let hung_up = until_hung_up(what, &mut stream, started).await;
            assert!(hung_up.after < PROMPT, "{what}: {hung_up:?}");
            assert_at_most_an_alert(&hung_up);
            assert_eq!(server.gave_up(1, 0).await, [why], "{what}");
        }
        server.serves(&cert.connector().unwrap()).await;
        server.finish().await;
    })
}

#[test]
fn a_client_hello_that_stalls_or_trickles_is_cut_off_by_the_handshake_timeout() {
    alone(async {
        let cert = localhost();
        let mut server =
            Server::start(cert.acceptor().unwrap().handshake_timeout(SHORT).unwrap()).await;
        let hello = client_hello("localhost");

        // Slowloris: the record header and a few bytes of a real ClientHello, then nothing.
        let started = Instant::now();
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(&hello[..10]).await.unwrap();
        tokio::time::sleep(SHORT / 2).await;
        assert_eq!(server_ends(server.addr), 1, "the handshake is under way");
        let stalled = until_hung_up("stalled", &mut stream, started).await;
        drop(stream);
        assert_cut_off("stalled", &stalled);
        let timed_out = "TLS handshake timed out: no handshake within 500ms";
        assert_eq!(server.gave_up(1, 0).await, [timed_out]);

        // A byte every 100 ms: the timeout bounds the whole handshake, however busy the client
        // keeps it (an idle timeout would wait for this one for half a minute).
        let started = Instant::now();
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let (mut reader, mut writer) = stream.split();
        let mut sent = 0;
        let trickle = async {
            for byte in hello.chunks(1) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if writer.write_all(byte).await.is_err() {
                    break;
                }
                sent += 1;
            }
            std::future::pending().await
        };
        let trickled = tokio::select! {
            hung_up = until_hung_up("trickled", &mut reader, started) => hung_up,
            () = trickle => unreachable!(),
        };
        drop(stream);
        assert_cut_off("trickled", &trickled);
        // Bytes kept coming while the handshake ran, and the hello was far from complete.
        assert!(
            (2..hello.len()).contains(&sent),
            "{sent} of {} bytes",
            hello.len()
        );
        assert_eq!(server.gave_up(1, 0).await, [timed_out]);

        server.serves(&cert.connector().unwrap()).await;
        server.finish().await;
    })
}

#[test]
fn a_client_that_vanishes_mid_handshake_is_forgotten_at_once() {
    alone(async {
        let cert = localhost();
        let mut server =
            Server::start(cert.acceptor().unwrap().handshake_timeout(PATIENT).unwrap()).await;
        let connector = trusting(cert.certificate());
        let closed = "connection ended during the TLS handshake: the peer closed the connection";
        // (how the client goes, whether it first waits for the server's answer, how it leaves,
        // why the server gave up)
        let cases = [
            ("hangs up right after its ClientHello", false, false, closed),
            ("hangs up once the server answered", true, false, closed),
            (
                "resets once the server answered",
                true,
                true,
                "connection ended during the TLS handshake: Connection reset by peer (os error 104)",
            ),
        ];
        for (what, answered, reset, why) in cases {
            let tcp = std::net::TcpStream::connect(server.addr).unwrap();
            tcp.set_nonblocking(true).unwrap();
            // A second descriptor of the same socket, for the test to watch and end it with.
            let socket = TcpStream::from_std(tcp.try_clone().unwrap()).unwrap();
            // A real OpenSSL client on a non-blocking socket: it sends its ClientHello and
            // stops, mid-handshake, waiting for the server (which cannot have answered: it runs
            // on this thread, busy here).
            let waiting = match connector.connect("localhost", tcp) {
                Err(HandshakeError::WouldBlock(waiting)) => waiting,
                Err(err) => panic!("{what}: {err}"),
                Ok(_) => unreachable!("{what}: the server cannot have answered yet"),
            };
            if answered {
                // The server's first flight: it now waits for the client's Finished.
                let mut first = [0; 1];
                tokio::time::timeout(support::TIMEOUT, socket.peek(&mut first))
                    .await
                    .expect("the server never answered")
                    .unwrap();
                assert_eq!(first, [0x16], "{what}: a handshake record");
            }
            let vanished = Instant::now();
            let kept = if reset {
                socket.set_zero_linger().unwrap();
                drop((waiting, socket));
                None
            } else {
                // A FIN, whatever the server sent meanwhile (closing a socket with unread
                // data would send a reset).
                let mut socket = socket;
                socket.shutdown().await.unwrap();
                Some((waiting, socket))
            };
            assert_eq!(server.gave_up(1, 0).await, [why], "{what}");
            let gone = vanished.elapsed();
            assert!(gone < PROMPT, "{what}: forgotten after {gone:?}");
            drop(kept);
        }
        server.serves(&cert.connector().unwrap()).await;
        server.finish().await;
    })
}

#[test]
fn a_certificate_for_another_host_is_refused_by_name_and_the_server_is_told() {
    alone(async {
        let cert = localhost();
        let mut server =
            Server::start(cert.acceptor().unwrap().handshake_timeout(PATIENT).unwrap()).await;

        // switchboard's client, asking for example.com of a server whose certificate is for
        // localhost and the loopback addresses.
        let mut client_made = false;
        let started = Instant::now();
        let err = tokio::time::timeout(
            support::TIMEOUT,
            cert.connector()
                .unwrap()
                .server_name("example.com")
                .connect(&server.addr.to_string(), || {
                    client_made = true;
                    ProbeOptions::default().probe().0.start()
                }),
        )
        .await
        .expect("the handshake hung")
        .expect_err("a certificate for another name must be refused");
        assert!(
            started.elapsed() < PROMPT,
            "refused after {:?}",
            started.elapsed()
        );
        assert_eq!(
            err.to_string(),
            "certificate verification failed: hostname mismatch"
        );
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let tls_err = TlsError::of(&err).expect("a TlsError source");
        assert_eq!(tls_err.kind(), TlsErrorKind::Certificate);
        assert_eq!(tls_err.message(), "hostname mismatch");
        assert!(!client_made, "no protocol without a handshake");
        // The client's alert ends the server's side of the handshake at once.
        let bad_certificate = "TLS handshake failed: ssl/tls alert bad certificate";
        assert_eq!(server.gave_up(1, 0).await, [bad_certificate]);

        // An independent client checks the name the same way.
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_file(dir.path(), cert.certificate());
        let (status, printed) = run_client(s_client(server.addr, &ca, "wronghost")).await;
        assert!(!status.success(), "{printed}");
        assert!(
            printed.contains("verify error:num=62:hostname mismatch"),
            "{printed}"
        );
        assert_eq!(server.gave_up(1, 0).await, [bad_certificate]);
        // The same client and trust, with the right name: the name made the difference.
        let (status, printed) = run_client(s_client(server.addr, &ca, "localhost")).await;
        assert!(status.success(), "{printed}");
        assert!(printed.contains("Verify return code: 0 (ok)"), "{printed}");
        let mut served = server.probes.recv().await.unwrap();
        served.made().await;
        assert!(served.until_lost().await.is_none());
        assert_eq!(server.made(), 1);

        server.serves(&cert.connector().unwrap()).await;
        server.finish().await;
    })
}

#[test]
fn an_expired_certificate_is_refused_as_expired_by_every_client() {
    alone(async {
        let (certificate, key) = expired_localhost().expect("an expired certificate");
        let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).unwrap();
        acceptor.set_certificate(&certificate).unwrap();
        acceptor.set_private_key(&key).unwrap();
        let acceptor = TlsAcceptor::new(acceptor.build())
            .handshake_timeout(PATIENT)
            .unwrap();
        let mut server = Server::start(acceptor).await;

        // switchboard's client trusts that certificate, and nothing else is wrong with it.
        let started = Instant::now();
        let err = tokio::time::timeout(
            support::TIMEOUT,
            TlsConnector::from_connector(trusting(&certificate))
                .connect(&server.addr.to_string(), || {
                    ProbeOptions::default().probe().0.start()
                }),
        )
        .await
        .expect("the handshake hung")
        .expect_err("an expired certificate must be refused");
        assert!(
            started.elapsed() < PROMPT,
            "refused after {:?}",
            started.elapsed()
        );
        assert_eq!(
            err.to_string(),
            "certificate verification failed: certificate has expired"
        );
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let tls_err = TlsError::of(&err).expect("a TlsError source");
        assert_eq!(tls_err.kind(), TlsErrorKind::Certificate);
        let expired = "TLS handshake failed: ssl/tls alert certificate expired";
        assert_eq!(server.gave_up(1, 0).await, [expired]);

        // Independent clients refuse it for the same reason.
        let dir = tempfile::tempdir().unwrap();
        let ca = ca_file(dir.path(), &certificate);
        let (status, printed) = run_client(python_client(server.addr, &ca, "localhost")).await;
        assert_eq!(status.code(), Some(3), "{printed}");
        assert_eq!(printed, "verification failed: certificate has expired\n");
        assert_eq!(server.gave_up(1, 0).await, [expired]);
        let (status, printed) = run_client(s_client(server.addr, &ca, "localhost")).await;
        assert!(!status.success(), "{printed}");
        assert!(
            printed.contains("verify error:num=10:certificate has expired"),
            "{printed}"
        );
        assert_eq!(server.gave_up(1, 0).await, [expired]);

        // The server itself is fine: a client told to accept anything is served.
        let lax = TlsConnector::new()
            .unwrap()
            .danger_accept_invalid_certs(true);
        server.serves(&lax).await;
        server.finish().await;
    })
}

#[test]
fn stalled_handshakes_past_the_limit_wait_their_turn_and_a_good_client_follows_them() {
    alone(async {
        const LIMIT: usize = 2;
        const STALLED: usize = 5;
        let cert = localhost();
        let acceptor = cert
            .acceptor()
            .unwrap()
            .max_handshakes(LIMIT)
            .handshake_timeout(SHORT)
            .unwrap();
        let mut server = Server::start(acceptor).await;
        let hello = client_hello("localhost");

        let started = Instant::now();
        let mut stalled = Vec::new();
        for _ in 0..STALLED {
            let mut stream = TcpStream::connect(server.addr).await.unwrap();
            stream.write_all(&hello[..10]).await.unwrap();
            stalled.push(stream);
        }
        // The good client queues behind every stalled one.
        let connector = cert.connector().unwrap();
        let addr = server.addr.to_string();
        let (probe, mut events) = ProbeOptions::default().probe();
        let good = actix_rt::spawn(async move { connector.connect(&addr, || probe.start()).await });
        let (mut most_connections, mut most_sockets) = (0, 0);
        while !good.is_finished() {
            assert!(
                started.elapsed() < support::TIMEOUT,
                "the good client never got through"
            );
            most_connections = most_connections.max(server.handle.stats().await.connections);
            most_sockets = most_sockets.max(server_ends(server.addr));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let through = started.elapsed();
        let (transport, _) = good.await.unwrap().expect("the good client is served");
        // Every connection is accepted (the limit is on handshakes, not on connections): the
        // ones without a place wait their turn holding only their socket.
        assert_eq!(
            (most_connections, most_sockets),
            (STALLED + 1, STALLED + 1),
            "every connection accepted"
        );
        // Two rounds of stalled handshakes had to time out before the good client's turn (had
        // more than LIMIT run at once, it would have been through sooner).
        let rounds = u32::try_from(STALLED / LIMIT).unwrap();
        assert!(
            SHORT * rounds <= through && through <= SHORT * rounds + CUT_OFF.1,
            "through after {through:?}"
        );
        events.made().await;
        let mut served = server.probes.recv().await.unwrap();
        served.made().await;
        transport.write("ping");
        assert_eq!(served.data(4).await, b"ping");
        transport.close();
        assert!(events.until_lost().await.is_none());
        assert!(served.until_lost().await.is_none());

        for mut stream in stalled {
            let hung_up = until_hung_up("stalled", &mut stream, started).await;
            assert!(hung_up.received.is_empty(), "{hung_up:?}");
        }
        assert_eq!(
            server.gave_up(STALLED, 1).await,
            ["TLS handshake timed out: no handshake within 500ms"; STALLED]
        );
        server.serves(&cert.connector().unwrap()).await;
        server.finish().await;
    })
}

/// What a raw server does once it has read a client's ClientHello.
#[derive(Clone, Copy)]
enum Answer {
    Garbage(&'static [u8]),
    HangUp,
    Reset,
}

#[test]
fn a_server_that_answers_garbage_or_vanishes_mid_handshake_fails_the_client_at_once() {
    alone(async {
        let cert = localhost();
        let connector = cert
            .connector()
            .unwrap()
            .handshake_timeout(PATIENT)
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (fds, transports) = (open_fds(), live_transports());
        let closed = "connection ended during the TLS handshake: the peer closed the connection";
        // (what the server does, what the client's error says)
        let cases = [
            (
                "answers in HTTP",
                Answer::Garbage(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"),
                "TLS handshake failed: wrong version number",
            ),
            ("hangs up", Answer::HangUp, closed),
            (
                "resets",
                Answer::Reset,
                "connection ended during the TLS handshake: Connection reset by peer (os error 104)",
            ),
        ];
        for (what, answer, why) in cases {
            let server = async {
                let (mut stream, _) = listener.accept().await.unwrap();
                // All of it: closing a socket with unread data would send a reset.
                let mut header = [0; 5];
                stream.read_exact(&mut header).await.unwrap();
                let mut hello = vec![0; usize::from(u16::from_be_bytes([header[3], header[4]]))];
                stream.read_exact(&mut hello).await.unwrap();
                match answer {
                    Answer::Garbage(bytes) => {
                        stream.write_all(bytes).await.unwrap();
                        stream.shutdown().await.unwrap();
                    }
                    Answer::HangUp => stream.shutdown().await.unwrap(),
                    Answer::Reset => {
                        stream.set_zero_linger().unwrap();
                        return None;
                    }
                }
                Some(stream)
            };
            let started = Instant::now();
            let mut client_made = false;
            let connecting = tokio::time::timeout(
                support::TIMEOUT,
                connector.connect(&addr, || {
                    client_made = true;
                    ProbeOptions::default().probe().0.start()
                }),
            );
            let (kept, connected) = tokio::join!(server, connecting);
            let err = connected
                .expect("the client's handshake hung")
                .expect_err("no TLS server there");
            let failed_after = started.elapsed();
            assert!(failed_after < PROMPT, "{what}: {failed_after:?}");
            assert_eq!(err.to_string(), why, "{what}");
            assert!(TlsError::of(&err).is_some(), "{what}: {err:?}");
            assert!(!client_made, "no protocol without a handshake");
            drop(kept);
            // The client's socket is closed: only the listener is left.
            assert_eq!((open_fds(), live_transports()), (fds, transports), "{what}");
        }
    })
}
