//! Servers: accepting, workers, Close / WaitClosed / Sockets / IsServing / StartServing /
//! CloseClients / AbortClients, the connection limit, and back-off when out of descriptors.

mod support;

use std::{
    collections::HashSet,
    io,
    sync::{Arc, Mutex},
    thread::ThreadId,
    time::Duration,
};

use actix::prelude::*;
use bytes::Bytes;
use support::{Fragile, Kind, Peer, ProbeOptions, Served, probe_factory, send_all};
use switchboard::{prelude::*, server::ServerSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: usize = 1024 * 1024;

for_each_kind!([tcp, unix] =>
    close_stops_accepting_and_live_connections_go_on,
    wait_closed_waits_for_every_connection,
    wait_closed_waits_for_every_protocol_to_handle_connection_lost,
    close_clients_flushes_and_abort_clients_resets,
    start_serving_later_and_sockets,
    connection_limit_holds_the_excess_in_the_backlog,
    a_panicking_protocol_leaves_the_others_alone,
    a_panicking_factory_ends_only_its_connection,
    shutdown_closes_gracefully_then_aborts_what_is_left,
);

/// Echoes, and records which thread it runs on. A `Protocol` with the defaults: while its echo
/// waits in the write buffer past the high-water mark, it reads nothing more.
struct Echo {
    threads: ThreadLog,
    factory_thread: ThreadId,
}

impl Protocol for Echo {
    type Codec = Raw;

    fn connection_made(&mut self, _: &mut Ctx<'_, Self>) {
        self.threads
            .lock()
            .unwrap()
            .push((self.factory_thread, std::thread::current().id()));
    }

    fn data_received(&mut self, data: Bytes, cx: &mut Ctx<'_, Self>) {
        cx.write(data);
    }
}

/// Which thread made each protocol, and which thread it handled `ConnectionMade` on.
type ThreadLog = Arc<Mutex<Vec<(ThreadId, ThreadId)>>>;

fn echo_factory() -> (impl Fn() -> Echo + Send + Sync + 'static, ThreadLog) {
    let threads = Arc::new(Mutex::new(Vec::new()));
    let log = threads.clone();
    let factory = move || Echo {
        threads: log.clone(),
        factory_thread: std::thread::current().id(),
    };
    (factory, threads)
}

async fn echo_once(peer: &mut Peer, text: &[u8]) {
    send_all(peer, text).await;
    assert_eq!(peer.read_n(text.len()).await, text);
}

#[actix_rt::test]
async fn connections_spread_over_workers_with_protocol_and_transport_together() {
    support::deadline(async {
        let (factory, threads) = echo_factory();
        let served = Served::start(Kind::Tcp, ServerOptions::default().workers(2), factory).await;
        let mut peers = Vec::new();
        for i in 0..4u8 {
            let mut peer = served.connect_raw().await.unwrap();
            echo_once(&mut peer, &[i; 10]).await;
            peers.push(peer);
        }
        let threads = threads.lock().unwrap().clone();
        assert_eq!(threads.len(), 4);
        let test_thread = std::thread::current().id();
        for (factory_thread, handler_thread) in &threads {
            assert_eq!(
                factory_thread, handler_thread,
                "the factory runs on the worker"
            );
            assert_ne!(
                *handler_thread, test_thread,
                "connections run on worker arbiters"
            );
        }
        let distinct: HashSet<_> = threads.iter().map(|(t, _)| *t).collect();
        assert_eq!(distinct.len(), 2, "round-robin over two workers");
        let stats = served.server.stats().await;
        assert_eq!((stats.connections, stats.accepted), (4, 4));
    })
    .await
}

#[actix_rt::test]
async fn workers_zero_serves_on_the_calling_arbiter() {
    support::deadline(async {
        let (factory, threads) = echo_factory();
        let served = Served::start(Kind::Tcp, ServerOptions::default().workers(0), factory).await;
        let mut peer = served.connect_raw().await.unwrap();
        echo_once(&mut peer, b"here").await;
        let threads = threads.lock().unwrap().clone();
        assert_eq!(threads[0].1, std::thread::current().id());
    })
    .await
}

async fn close_stops_accepting_and_live_connections_go_on(kind: Kind) {
    let (factory, _) = echo_factory();
    let served = Served::start(kind, ServerOptions::default(), factory).await;
    let mut live = served.connect_raw().await.unwrap();
    echo_once(&mut live, b"before").await;
    assert!(served.server.is_serving().await);
    served.server.close().await;
    assert!(!served.server.is_serving().await);
    assert!(served.server.sockets().await.is_empty());
    let refused = served
        .connect_raw()
        .await
        .expect_err("a closed server refuses");
    assert!(
        matches!(
            refused.kind(),
            io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
        ),
        "{refused}"
    );
    echo_once(&mut live, b"after close").await;
    served.server.close().await; // idempotent
}

async fn wait_closed_waits_for_every_connection(kind: Kind) {
    let (factory, _) = echo_factory();
    let served = Served::start(kind, ServerOptions::default(), factory).await;
    let mut live = served.connect_raw().await.unwrap();
    echo_once(&mut live, b"x").await;
    served.server.close().await;
    let waiting = tokio::time::timeout(Duration::from_millis(300), served.server.wait_closed());
    assert!(
        waiting.await.is_err(),
        "a live connection keeps wait_closed pending"
    );
    live.shutdown_write().await;
    let (_, err) = live.read_to_end_or_error().await;
    assert!(err.is_none());
    tokio::time::timeout(support::TIMEOUT, served.server.wait_closed())
        .await
        .expect("wait_closed resolves once the last connection is gone");
    // And at once forever after.
    served.server.wait_closed().await;
    assert_eq!(served.server.stats().await.connections, 0);
}

/// A protocol that is busy when its connection ends handles `ConnectionLost` late; `wait_closed`
/// waits for that, so a `main` that returns right after it loses none of its protocols' last
/// words (asyncio's `wait_closed` waits for every connection to be gone).
async fn wait_closed_waits_for_every_protocol_to_handle_connection_lost(kind: Kind) {
    /// Told `busy`, it waits half a second before handling anything else (`ctx.wait` holds its
    /// mailbox), so its `ConnectionLost` is handled well after its transport has stopped.
    struct Busy(Arc<Mutex<Vec<&'static str>>>);
    impl Actor for Busy {
        type Context = Context<Self>;
    }
    ignore_events!(Busy: EofReceived, PauseWriting, ResumeWriting, TimedOut);
    impl Handler<ConnectionMade> for Busy {
        type Result = ();
        fn handle(&mut self, _: ConnectionMade, _: &mut Context<Self>) {}
    }
    impl Handler<DataReceived> for Busy {
        type Result = ();
        fn handle(&mut self, _: DataReceived, ctx: &mut Context<Self>) {
            ctx.wait(actix::fut::wrap_future(tokio::time::sleep(
                Duration::from_millis(500),
            )));
        }
    }
    impl Handler<ConnectionLost> for Busy {
        type Result = ();
        fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
            self.0.lock().unwrap().push("lost handled");
            ctx.stop();
        }
    }

    let log = Arc::new(Mutex::new(Vec::new()));
    let factory = {
        let log = log.clone();
        move || Busy(log.clone()).start()
    };
    let served = Served::start(kind, ServerOptions::default().workers(1), factory).await;
    let mut peer = served.connect_raw().await.unwrap();
    send_all(&mut peer, b"busy").await;
    peer.shutdown_write().await; // our EOF: the transport closes and stops at once
    let (_, err) = peer.read_to_end_or_error().await;
    assert!(err.is_none(), "{err:?}");
    served.server.close().await;
    tokio::time::timeout(support::TIMEOUT, served.server.wait_closed())
        .await
        .expect("wait_closed resolves");
    assert_eq!(
        *log.lock().unwrap(),
        ["lost handled"],
        "wait_closed resolved before the protocol handled ConnectionLost"
    );
}

async fn close_clients_flushes_and_abort_clients_resets(kind: Kind) {
    /// Greets with a large message on connect.
    struct Greeter;
    impl Actor for Greeter {
        type Context = Context<Self>;
    }
    ignore_events!(Greeter: EofReceived, PauseWriting, ResumeWriting, TimedOut);
    impl Handler<ConnectionMade> for Greeter {
        type Result = ();
        fn handle(&mut self, msg: ConnectionMade, _: &mut Context<Self>) {
            msg.transport
                .write(Bytes::from(vec![b'g'; 4 * 1024 * 1024]));
        }
    }
    impl Handler<DataReceived> for Greeter {
        type Result = ();
        fn handle(&mut self, _: DataReceived, _: &mut Context<Self>) {}
    }
    impl Handler<ConnectionLost> for Greeter {
        type Result = ();
        fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
            ctx.stop();
        }
    }
    let served = Served::start(kind, ServerOptions::default(), || Greeter.start()).await;
    let mut graceful = served.connect_raw().await.unwrap();
    let _ = graceful.read_n(1).await; // connected and greeting
    while served.server.stats().await.connections < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    served.server.close_clients().await;
    assert!(
        served.server.is_serving().await,
        "close_clients does not stop the listener"
    );
    let (rest, err) = graceful.read_to_end_or_error().await;
    assert!(err.is_none());
    assert_eq!(rest.len() + 1, 4 * 1024 * 1024, "close_clients flushes");

    let mut aborted = served.connect_raw().await.unwrap();
    let _ = aborted.read_n(1).await;
    served.server.abort_clients().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (rest, err) = aborted.read_to_end_or_error().await;
    assert!(rest.len() + 1 < 4 * 1024 * 1024, "abort_clients discards");
    if kind == Kind::Tcp {
        assert_eq!(err.expect("reset").kind(), io::ErrorKind::ConnectionReset);
    }
    served.server.close().await;
    tokio::time::timeout(support::TIMEOUT, served.server.wait_closed())
        .await
        .unwrap();
}

async fn start_serving_later_and_sockets(kind: Kind) {
    let (factory, mut probes) = probe_factory(ProbeOptions {
        greeting: Some(Bytes::from_static(b"hello")),
        ..ProbeOptions::default()
    });
    let served = Served::start(kind, ServerOptions::default().start_serving(false), factory).await;
    let sockets: Vec<ServerSocket> = served.server.sockets().await;
    assert_eq!(sockets.len(), 1);
    assert_eq!(sockets[0].address, served.server.addresses()[0]);
    assert!(!served.server.is_serving().await);
    // Bound, not listening: a connection is refused, as asyncio refuses it before
    // `start_serving()` (the kernel does not queue it for later).
    let early = served
        .connect_raw()
        .await
        .expect_err("connected before start_serving");
    assert_eq!(early.kind(), io::ErrorKind::ConnectionRefused, "{early}");
    served.server.start_serving().await;
    served.server.start_serving().await; // idempotent
    assert!(served.server.is_serving().await);
    assert_eq!(served.server.sockets().await, sockets, "the same sockets");
    // Listening by the time `start_serving` answers.
    let mut peer = served
        .connect_raw()
        .await
        .expect("served after start_serving");
    assert_eq!(peer.read_n(5).await, b"hello");
    let mut probe = probes.recv().await.unwrap();
    probe.made().await;
}

async fn connection_limit_holds_the_excess_in_the_backlog(kind: Kind) {
    let (factory, _) = probe_factory(ProbeOptions {
        greeting: Some(Bytes::from_static(b"hi")),
        ..ProbeOptions::default()
    });
    let served = Served::start(kind, ServerOptions::default().max_connections(2), factory).await;
    let mut first = served.connect_raw().await.unwrap();
    let mut second = served.connect_raw().await.unwrap();
    assert_eq!(first.read_n(2).await, b"hi");
    assert_eq!(second.read_n(2).await, b"hi");
    let mut third = served.connect_raw().await.expect("the kernel queues it");
    let mut byte = [0; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut byte)).await;
    assert!(early.is_err(), "accepted past the limit");
    let stats = served.server.stats().await;
    assert_eq!((stats.connections, stats.accepted), (2, 2));
    drop(first);
    assert_eq!(
        third.read_n(2).await,
        b"hi",
        "accepting resumes below the limit"
    );
    assert_eq!(served.server.stats().await.accepted, 3);
    drop(second);
}

async fn a_panicking_protocol_leaves_the_others_alone(kind: Kind) {
    let factory = || Fragile.start();
    let served = Served::start(kind, ServerOptions::default().workers(1), factory).await;
    let mut victim = served.connect_raw().await.unwrap();
    let mut bystander = served.connect_raw().await.unwrap();
    send_all(&mut victim, b"boom").await;
    let (rest, _) = victim.read_to_end_or_error().await;
    assert!(rest.is_empty());
    // Same worker, still serving: the bystander's connection and new ones work.
    let mut newcomer = served.connect_raw().await.unwrap();
    send_all(&mut bystander, b"still here").await;
    send_all(&mut newcomer, b"me too").await;
    for _ in 0..200 {
        if served.server.stats().await.connections == 2 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the panicked connection was not released");
}

#[actix_rt::test]
async fn unix_server_replaces_a_stale_socket_and_removes_its_own() {
    support::deadline(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // leaves the file behind
        assert!(path.exists());
        let (factory, _) = echo_factory();
        let server = unix::serve(&path, factory)
            .await
            .expect("a stale socket is replaced");
        let mut peer = Peer::Unix(tokio::net::UnixStream::connect(&path).await.unwrap());
        echo_once(&mut peer, b"ok").await;
        server.close().await;
        assert!(!path.exists(), "close removes the socket file");

        // A file that is not a socket is never removed.
        let regular = dir.path().join("regular");
        std::fs::write(&regular, b"keep me").unwrap();
        let (factory, _) = echo_factory();
        let err = unix::serve(&regular, factory)
            .await
            .expect_err("address in use");
        assert!(err.to_string().contains("regular"), "{err}");
        assert_eq!(std::fs::read(&regular).unwrap(), b"keep me");
    })
    .await
}

#[actix_rt::test]
async fn binding_a_busy_address_is_a_clear_error() {
    support::deadline(async {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let (factory, _) = echo_factory();
        let err = tcp::serve(addr, factory).await.expect_err("in use");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    })
    .await
}

/// The echo_server example under `ulimit -n 40`: once out of descriptors it backs off instead
/// of spinning or dropping connections, and serves the waiting ones when descriptors free up.
#[test]
fn out_of_descriptors_the_server_backs_off_and_recovers() {
    use std::{
        io::{BufRead, BufReader, Read, Write},
        net::TcpStream,
        process::{Command, Stdio},
    };
    let server = support_example("echo_server");
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "ulimit -n 40 && exec {} --addr 127.0.0.1:0 --workers 0",
            server.display()
        ))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn echo_server");
    let guard = KillOnDrop(&mut child);
    let stdout = guard.0.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("listening line")
        .to_string();

    // More connections than the server has descriptors for; each sends one ping.
    let mut clients: Vec<(TcpStream, bool)> = (0..60)
        .map(|_| {
            let mut client = TcpStream::connect(&addr).expect("the backlog takes it");
            client.write_all(b"ping").unwrap();
            (client, false)
        })
        .collect();
    let collect = |clients: &mut [(TcpStream, bool)], timeout: Duration| {
        for (client, echoed) in clients.iter_mut().filter(|(_, echoed)| !*echoed) {
            client.set_read_timeout(Some(timeout)).unwrap();
            let mut buf = [0; 4];
            *echoed = client.read_exact(&mut buf).is_ok() && &buf == b"ping";
        }
        clients.iter().filter(|(_, echoed)| *echoed).count()
    };
    std::thread::sleep(Duration::from_millis(500));
    let served = collect(&mut clients, Duration::from_millis(200));
    assert!(
        served > 0 && served < 60,
        "{served} of 60 served under ulimit -n 40"
    );
    // Free descriptors by closing the served clients; the waiting ones must be served in turn.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !clients.is_empty() && std::time::Instant::now() < deadline {
        clients.retain(|(_, echoed)| !*echoed);
        collect(&mut clients, Duration::from_millis(100));
    }
    clients.retain(|(_, echoed)| !*echoed);
    assert!(
        clients.is_empty(),
        "{} connections never served after back-off",
        clients.len()
    );
    drop(clients);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(guard.0.id().to_string())
        .status();
    let status = guard.0.wait().unwrap();
    let mut stderr = String::new();
    guard
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains("backing off"),
        "no back-off logged: {stderr}"
    );
    assert!(status.success(), "{status}");
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The path of a built example, building it if needed.
fn support_example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap().join("examples");
    let path = dir.join(name);
    if !path.exists() {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--example", name])
            .status()
            .unwrap();
        assert!(status.success());
    }
    path
}

/// A factory that panics for every third connection ends only that connection, on one worker or
/// two (where connections cross to the second worker's thread): of thirty clients, the ten
/// whose factory panicked see their connection end with nothing served, the failure is logged at
/// error level with their address, and the twenty others, and a newcomer, are served.
async fn a_panicking_factory_ends_only_its_connection(kind: Kind) {
    support::captured_logs(); // installs the capture before anything logs
    for workers in [1, 2] {
        let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (echo, _) = echo_factory();
        let factory = {
            let made = made.clone();
            move || {
                let n = made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                assert!(n % 3 != 2, "factory told to panic for connection {n}");
                echo()
            }
        };
        let served = Served::start(kind, ServerOptions::default().workers(workers), factory).await;
        let mut served_peers = Vec::new();
        for n in 0..30 {
            let mut peer = served
                .connect_raw()
                .await
                .expect("the server still accepts");
            if n % 3 == 2 {
                let (rest, _) = tokio::time::timeout(support::TIMEOUT, peer.read_to_end_or_error())
                    .await
                    .expect("the connection whose factory panicked ends");
                assert!(rest.is_empty(), "connection {n} was served: {rest:?}");
                if let Some(local) = peer.local_inet_addr() {
                    let logs = support::captured_logs();
                    let line = logs
                        .lines()
                        .find(|line| line.contains(&format!("peer={local}")))
                        .unwrap_or_else(|| panic!("no log line for {local}:\n{logs}"));
                    assert!(line.contains("ERROR"), "{line}");
                    assert!(
                        line.contains(&format!(
                            "the protocol factory panicked: factory told to panic for connection {n}"
                        )),
                        "{line}"
                    );
                }
            } else {
                echo_once(&mut peer, format!("connection {n}").as_bytes()).await;
                served_peers.push(peer);
            }
        }
        let mut newcomer = served.connect_raw().await.unwrap();
        echo_once(&mut newcomer, b"newcomer").await;
        for (i, peer) in served_peers.iter_mut().enumerate() {
            echo_once(peer, format!("still served {i}").as_bytes()).await;
        }
        let stats = served.server.stats().await;
        assert_eq!(
            (stats.connections, stats.accepted),
            (21, 31),
            "{workers} workers"
        );
    }
}

/// `shutdown(grace)` closes every connection gracefully, waits out the grace for the one that
/// cannot flush (its client never reads), aborts it, and says so; the client that reads gets
/// every byte and a clean EOF. A second `shutdown` on the drained server returns at once.
async fn shutdown_closes_gracefully_then_aborts_what_is_left(kind: Kind) {
    let (factory, _) = echo_factory();
    let served = Served::start(kind, ServerOptions::default().workers(1), factory).await;
    let mut polite = served.connect_raw().await.unwrap();
    echo_once(&mut polite, b"hi").await;
    // 32 MiB whose echo this client never reads: the server reads until its echo waits in the
    // write buffer past the high-water mark, then stops reading (the default bound), so the
    // client's write blocks with the rest unsent; the echo waiting keeps the close from
    // finishing.
    let mut rude = served.connect_raw().await.unwrap();
    let blocked = tokio::time::timeout(
        Duration::from_millis(500),
        rude.write_all(&vec![b'x'; 32 * MIB]),
    )
    .await;
    assert!(
        blocked.is_err(),
        "{kind:?}: the server never stopped reading"
    );

    // The polite client reads to the end and then closes its side, as a client does.
    let polite = tokio::spawn(async move {
        let ended = polite.read_to_end_or_error().await;
        drop(polite);
        ended
    });

    let grace = Duration::from_millis(500);
    let started = tokio::time::Instant::now();
    let report = served.server.shutdown(grace).await;
    let took = started.elapsed();
    assert!(took >= grace, "returned after {took:?}, before the grace");
    assert!(
        took < grace + switchboard::server::SHUTDOWN_ABORT_WAIT,
        "returned after {took:?}"
    );
    assert_eq!((report.connections, report.aborted), (2, 1), "{report:?}");
    assert!(report.complete, "{report:?}");
    let (rest, err) = polite.await.unwrap();
    assert!(rest.is_empty() && err.is_none(), "{rest:?} {err:?}");
    assert_eq!(served.server.stats().await.connections, 0);

    let started = tokio::time::Instant::now();
    let again = served.server.shutdown(Duration::from_secs(60)).await;
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!((again.connections, again.aborted), (0, 0));
}
