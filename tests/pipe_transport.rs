//! Pipe transports (`pipe::connect_read`, `pipe::connect_write`) over real OS pipes, FIFOs, a
//! socket and a terminal, against independent peers: Python programs
//! (`tests/support/peers/pipe_peer.py`) and plain tokio pipe ends in this process.
//!
//! A transport's descriptor counts as released when this process no longer has it open: its
//! `/proc/self/fd` entry is gone or names another file, a writer at the other end gets `EPIPE`,
//! or a reader at the other end sees its EOF.

mod support;

use std::{
    fs,
    io::{self, Read as _, Write as _},
    os::{
        fd::{AsRawFd, OwnedFd, RawFd},
        unix::fs::OpenOptionsExt,
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::SeqCst},
    },
    time::Duration,
};

use actix::prelude::*;
use bytes::Bytes;
use support::{
    Event, Probe, ProbeOptions, ReleaseAcks, StartedProbe, StopProbe, TIMEOUT, deadline, pattern,
};
use switchboard::{PipeEnd, PipeFileType, PipeInfo, StreamConfig, pipe, prelude::*};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::unix::pipe::{OpenOptions as PipeOpenOptions, Receiver, Sender},
    sync::mpsc,
    time::Instant,
};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The bytes `pipe_peer.py` writes and hashes: SHA-256 in counter mode (block `k` is
/// `sha256(k as 8 bytes, big-endian)`), cut to `len`.
fn peer_stream(len: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(len + 32);
    let mut k = 0u64;
    while data.len() < len {
        data.extend_from_slice(&openssl::sha::sha256(&k.to_be_bytes()));
        k += 1;
    }
    data.truncate(len);
    data
}

/// What `pipe_peer.py read` prints for `data`: its length and SHA-256.
fn digest_line(data: &[u8]) -> String {
    let hex: String = openssl::sha::sha256(data)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("{} {hex}\n", data.len())
}

/// A `pipe_peer.py` process, killed and reaped if the test ends before it does.
struct PyPeer {
    child: Child,
}

impl PyPeer {
    /// Starts `pipe_peer.py ARGS` with `stdin` and `stdout`; its stderr is the test's.
    fn spawn(args: &[&str], stdin: Stdio, stdout: Stdio) -> PyPeer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/peers/pipe_peer.py");
        // A `Command` keeps the descriptors it was given until it is dropped: it must not
        // outlive this function, or this process would keep a pipe end open.
        let child = Command::new("python3")
            .arg(script)
            .args(args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start pipe_peer.py {args:?}: {err}"));
        PyPeer { child }
    }

    /// Waits, without blocking the arbiter, for a successful exit; returns what it printed (if
    /// its stdout was piped).
    async fn success(mut self) -> String {
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for pipe_peer.py") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "pipe_peer.py did not exit within {TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(status.success(), "pipe_peer.py failed: {status}");
        let mut printed = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            stdout
                .read_to_string(&mut printed)
                .expect("read pipe_peer.py's output");
        }
        printed
    }
}

impl Drop for PyPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh FIFO in a temporary directory (kept alive by the returned guard), made by Python's
/// `os.mkfifo`.
async fn fifo() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("fifo");
    PyPeer::spawn(
        &["mkfifo", path.to_str().expect("a UTF-8 temp path")],
        Stdio::null(),
        Stdio::null(),
    )
    .success()
    .await;
    (dir, path)
}

/// What descriptor `fd` of this process refers to (`pipe:[inode]`, a path), if it is open.
fn fd_target(fd: RawFd) -> Option<PathBuf> {
    fs::read_link(format!("/proc/self/fd/{fd}")).ok()
}

/// Whether the open file description behind `fd` is in non-blocking mode (`O_NONBLOCK`,
/// 0o4000 on Linux, in the octal `flags` line of `/proc/self/fdinfo`).
fn is_nonblocking(fd: RawFd) -> bool {
    let info = fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).expect("fdinfo");
    let flags = info
        .lines()
        .find_map(|line| line.strip_prefix("flags:"))
        .expect("a flags line in fdinfo");
    let flags = u32::from_str_radix(flags.trim(), 8).expect("octal flags");
    flags & 0o4000 != 0
}

/// The transport's `pipe` extra info.
async fn pipe_info(transport: &TransportHandle) -> PipeInfo {
    let info = transport.get_extra_info(keys::PIPE).await;
    match info.as_ref().and_then(ExtraInfo::as_pipe) {
        Some(pipe) => *pipe,
        None => panic!("expected ExtraInfo::Pipe for `pipe`, got {info:?}"),
    }
}

/// Waits until the transport actor has stopped.
async fn wait_until_stopped(transport: &TransportHandle) {
    let deadline = Instant::now() + TIMEOUT;
    while transport.is_alive() {
        assert!(
            Instant::now() < deadline,
            "transport actor still alive {TIMEOUT:?} after its end"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until writing to `writer` fails with `EPIPE`: nobody holds the read end any more.
/// (Another test's child may hold a copy for the moment between its fork and its exec.)
async fn wait_for_broken_pipe(writer: &Sender) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match writer.try_write(b"x") {
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => return,
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => panic!("unexpected write error {err}"),
        }
        assert!(
            Instant::now() < deadline,
            "the read end is still open {TIMEOUT:?} later"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads `reader` to its EOF, failing the test after [`TIMEOUT`].
async fn read_to_eof(reader: &mut Receiver) -> Vec<u8> {
    let mut data = Vec::new();
    tokio::time::timeout(TIMEOUT, reader.read_to_end(&mut data))
        .await
        .expect("no EOF on the pipe: the write end is still open")
        .expect("read the pipe");
    data
}

/// A std pipe's ends as tokio's, for a peer that must not block the arbiter.
fn tokio_pipe() -> (Receiver, Sender) {
    let (reader, writer) = io::pipe().expect("pipe");
    (
        Receiver::from_owned_fd(reader.into()).expect("tokio receiver"),
        Sender::from_owned_fd(writer.into()).expect("tokio sender"),
    )
}

/// The protocol factory for descriptors that must be rejected before a protocol exists.
fn never() -> StartedProbe {
    panic!("the protocol factory ran for a rejected descriptor")
}

fn rejected(result: io::Result<(TransportHandle, Addr<Probe>)>) -> io::Error {
    match result {
        Ok(_) => panic!("the descriptor was accepted"),
        Err(err) => err,
    }
}

// ---------------------------------------------------------------------------------------------
// Read pipes
// ---------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn read_pipe_delivers_an_independent_writers_bytes_then_eof_then_lost() {
    deadline(async {
        const LEN: usize = 5 * 1024 * 1024 + 12_345;
        let (reader, writer) = io::pipe().unwrap();
        let target = fd_target(reader.as_raw_fd()).unwrap();
        let writer = PyPeer::spawn(
            &["write", &LEN.to_string()],
            Stdio::null(),
            Stdio::from(OwnedFd::from(writer)),
        );
        let (probe, mut events) = ProbeOptions::default().probe();
        let (transport, _) = pipe::connect_read(reader, || probe.start()).unwrap();
        assert!(events.made().await.same_transport(&transport));
        let fd = pipe_info(&transport).await.fd;
        assert_eq!(fd_target(fd).as_ref(), Some(&target));

        let received = events.data_until_eof().await;
        assert_eq!(received.len(), LEN);
        assert!(
            received == peer_stream(LEN),
            "bytes reordered, lost or duplicated"
        );
        // The default answer to EofReceived closes: ConnectionLost(None), once, last.
        assert!(events.lost().await.is_none());
        assert_eq!(events.seen().first(), Some(&"Made"));
        writer.success().await;

        wait_until_stopped(&transport).await;
        assert_ne!(
            fd_target(fd),
            Some(target),
            "the stopped transport still holds the pipe"
        );
    })
    .await
}

#[actix_rt::test]
async fn read_pipe_eof_reaches_the_protocol_and_its_default_ends_the_pipe() {
    deadline(async {
        const LEN: usize = 100_000;
        let (reader, writer) = io::pipe().unwrap();
        let writer = PyPeer::spawn(
            &["write", &LEN.to_string()],
            Stdio::null(),
            Stdio::from(OwnedFd::from(writer)),
        );
        let (probe, mut events) = ProbeOptions::default().probe();
        // The probe drops the EOF's decision, as a protocol that has no use for it does: the
        // pipe then ends cleanly.
        let (_transport, _) = pipe::connect_read(reader, || probe.start()).unwrap();
        events.made().await;
        assert!(events.data(LEN).await == peer_stream(LEN));
        events.expect(&["Eof"]).await;
        assert!(events.lost().await.is_none());
        writer.success().await;
    })
    .await
}

/// Counts how far a blocking writer got; stable once it is blocked.
async fn wait_until_stable(counter: &AtomicU64) -> u64 {
    let mut last = counter.load(SeqCst);
    let mut stable = 0;
    while stable < 3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let now = counter.load(SeqCst);
        if now == last {
            stable += 1;
        } else {
            stable = 0;
            last = now;
        }
    }
    last
}

#[actix_rt::test]
async fn read_pipe_stops_reading_at_its_limit_and_the_writer_blocks() {
    deadline(async {
        const LIMIT: usize = 16 * 1024;
        const TOTAL: usize = 4 * 1024 * 1024;
        let (reader, writer) = io::pipe().unwrap();
        let (probe, mut events) = ProbeOptions::holding_acks().probe();
        let config = StreamConfig::for_pipes().read_buffer_limit(LIMIT);
        let (transport, probe) = pipe::connect_read_with(reader, config, || probe.start()).unwrap();
        events.made().await;

        // A plain blocking writer on its own thread: its progress stops when the pipe is full.
        let written = Arc::new(AtomicU64::new(0));
        let (done_tx, done) = tokio::sync::oneshot::channel();
        std::thread::spawn({
            let written = written.clone();
            move || {
                let mut writer = writer;
                let data = pattern(0, TOTAL);
                let result = data.chunks(8 * 1024).try_for_each(|chunk| {
                    writer.write_all(chunk)?;
                    written.fetch_add(chunk.len() as u64, SeqCst);
                    Ok::<_, io::Error>(())
                });
                drop(writer); // its EOF
                let _ = done_tx.send(result);
            }
        });

        // The protocol holds its first delivery: the transport reads up to its limit, then
        // leaves the rest in the pipe, and the writer blocks.
        let Some(Event::Data(first)) = events.next().await else {
            panic!("first delivery, got {:?}", events.seen())
        };
        let blocked_at = wait_until_stable(&written).await;
        assert!(
            blocked_at < TOTAL as u64,
            "the writer never blocked ({blocked_at} bytes written)"
        );
        let stats = transport.send(GetStats).await.unwrap();
        assert_eq!(stats.read_buffer_limit, LIMIT);
        assert_eq!(
            stats.deliveries, 1,
            "one delivery in flight, never acknowledged"
        );
        assert!(
            stats.bytes_received <= LIMIT as u64,
            "read past the limit while the protocol held its delivery: {stats:?}"
        );
        assert!(stats.read_buffer_peak <= LIMIT, "{stats:?}");

        // Let it flow: every byte arrives, in order, once, then the EOF and the end.
        probe.do_send(ReleaseAcks {
            keep_holding: false,
        });
        let mut received = first.to_vec();
        received.extend(events.data_until_eof().await);
        assert_eq!(received.len(), TOTAL);
        assert!(
            received == pattern(0, TOTAL)[..],
            "bytes reordered, lost or duplicated"
        );
        assert!(events.lost().await.is_none());
        tokio::time::timeout(TIMEOUT, done)
            .await
            .expect("the writer thread finished")
            .unwrap()
            .expect("every write succeeded");
    })
    .await
}

#[actix_rt::test]
async fn pause_reading_stops_deliveries_and_resume_reading_restarts_them() {
    deadline(async {
        let (reader, writer) = io::pipe().unwrap();
        let mut writer = Sender::from_owned_fd(writer.into()).unwrap();
        let (probe, mut events) = ProbeOptions::default().probe();
        let (transport, _) = pipe::connect_read(reader, || probe.start()).unwrap();
        events.made().await;
        assert!(transport.send(IsReading).await.unwrap());

        transport.pause_reading();
        assert!(!transport.send(IsReading).await.unwrap());
        writer.write_all(b"while paused").await.unwrap();
        events.assert_quiet(Duration::from_millis(300)).await;
        assert_eq!(
            transport.send(GetStats).await.unwrap().bytes_received,
            0,
            "nothing read from the pipe while paused"
        );

        transport.resume_reading();
        assert_eq!(events.data(12).await, b"while paused");
        assert!(transport.send(IsReading).await.unwrap());

        // Paused again, then the writer's EOF: nothing until resumed, then the EOF.
        transport.pause_reading();
        assert!(!transport.send(IsReading).await.unwrap());
        writer.write_all(b"tail").await.unwrap();
        drop(writer);
        events.assert_quiet(Duration::from_millis(300)).await;
        transport.resume_reading();
        assert_eq!(events.data_until_eof().await, b"tail");
        assert!(events.lost().await.is_none());
    })
    .await
}

#[actix_rt::test]
async fn read_pipe_refuses_writes_and_closes_without_waiting_for_eof() {
    deadline(async {
        let (reader, writer) = io::pipe().unwrap();
        let mut writer = Sender::from_owned_fd(writer.into()).unwrap();
        let (probe, mut events) = ProbeOptions::default().probe();
        let (transport, _) = pipe::connect_read(reader, || probe.start()).unwrap();
        events.made().await;

        let err = transport.write_acked("nowhere to go").await.unwrap_err();
        assert_eq!(WriteError::of(&err), Some(WriteError::ReadOnly), "{err}");
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
        transport.write("fire and forget: refused too");
        assert!(!transport.send(CanWriteEof).await.unwrap());
        let err = transport.send(WriteEof).await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{err}");

        // Refusals leave it open and reading.
        assert!(!transport.is_closing().await);
        writer.write_all(b"still reading").await.unwrap();
        assert_eq!(events.data(13).await, b"still reading");

        // The writer stays open: Close ends at once, with nothing to flush or drain.
        transport.close();
        assert!(events.lost().await.is_none());
        wait_for_broken_pipe(&writer).await;
        wait_until_stopped(&transport).await;
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Write pipes
// ---------------------------------------------------------------------------------------------

/// What a [`Producer`] saw and got back, in order.
#[derive(Debug)]
enum Out {
    Pause,
    Resume,
    EofFlushed(io::Result<()>),
    LateWrite(io::Result<()>),
    Lost(Option<io::Error>),
}

/// Writes `data` in 64 KiB chunks while allowed: stops at PauseWriting, goes on at
/// ResumeWriting; at the end sends `WriteEof`, then one write too many.
struct Producer {
    transport: Option<TransportHandle>,
    data: Bytes,
    sent: usize,
    paused: bool,
    finished: bool,
    out: mpsc::UnboundedSender<Out>,
}

impl Actor for Producer {
    type Context = Context<Self>;
}
ignore_events!(Producer: EofReceived, TimedOut);

impl Producer {
    fn produce(&mut self, ctx: &mut Context<Self>) {
        if self.paused || self.finished {
            return;
        }
        let transport = self.transport.as_ref().unwrap();
        if self.sent == self.data.len() {
            self.finished = true;
            // Sent in this order, handled in this order.
            let eof = transport.send(WriteEof);
            let late = transport.write_acked("after the EOF");
            let out = self.out.clone();
            actix_rt::spawn(async move {
                let flushed = eof
                    .await
                    .unwrap_or_else(|_| Err(WriteError::Stopped.into()));
                let _ = out.send(Out::EofFlushed(flushed));
                let _ = out.send(Out::LateWrite(late.await));
            });
            return;
        }
        let end = (self.sent + 64 * 1024).min(self.data.len());
        transport.write(self.data.slice(self.sent..end));
        self.sent = end;
        // Yield between chunks, so the transport can say PauseWriting in time.
        ctx.run_later(Duration::ZERO, |producer, ctx| producer.produce(ctx));
    }
}

impl Handler<ConnectionMade> for Producer {
    type Result = ();
    fn handle(&mut self, msg: ConnectionMade, ctx: &mut Context<Self>) {
        self.transport = Some(msg.transport);
        self.produce(ctx);
    }
}

impl Handler<DataReceived> for Producer {
    type Result = ();
    fn handle(&mut self, msg: DataReceived, _: &mut Context<Self>) {
        panic!("a write pipe delivered {} bytes", msg.data.len());
    }
}

impl Handler<PauseWriting> for Producer {
    type Result = ();
    fn handle(&mut self, _: PauseWriting, _: &mut Context<Self>) {
        self.paused = true;
        let _ = self.out.send(Out::Pause);
    }
}

impl Handler<ResumeWriting> for Producer {
    type Result = ();
    fn handle(&mut self, _: ResumeWriting, ctx: &mut Context<Self>) {
        self.paused = false;
        let _ = self.out.send(Out::Resume);
        self.produce(ctx);
    }
}

impl Handler<ConnectionLost> for Producer {
    type Result = ();
    fn handle(&mut self, ConnectionLost(err): ConnectionLost, ctx: &mut Context<Self>) {
        let _ = self.out.send(Out::Lost(err));
        ctx.stop();
    }
}

#[actix_rt::test]
async fn write_pipe_carries_ten_mib_to_a_slow_reader_with_alternating_flow_edges() {
    deadline(async {
        const TOTAL: usize = 10 * 1024 * 1024 + 4321;
        let data = pattern(0, TOTAL);
        let (reader, writer) = io::pipe().unwrap();
        let reader = PyPeer::spawn(
            &["read", "--slow"],
            Stdio::from(OwnedFd::from(reader)),
            Stdio::piped(),
        );
        let (out_tx, mut out) = mpsc::unbounded_channel();
        let (transport, _) = pipe::connect_write(writer, || {
            let producer = Producer {
                transport: None,
                data: data.clone(),
                sent: 0,
                paused: false,
                finished: false,
                out: out_tx,
            };
            producer.start()
        })
        .unwrap();

        // Everything the producer reports, until it and its requests are gone.
        let mut seen = Vec::new();
        while let Some(item) = tokio::time::timeout(TIMEOUT, out.recv())
            .await
            .unwrap_or_else(|_| panic!("nothing from the producer for {TIMEOUT:?}: {seen:?}"))
        {
            seen.push(item);
        }

        assert_eq!(
            reader.success().await,
            digest_line(&data),
            "the reader got every byte, in order, then EOF"
        );
        let protocol_events: Vec<&Out> = seen
            .iter()
            .filter(|item| matches!(item, Out::Pause | Out::Resume | Out::Lost(_)))
            .collect();
        let Some((Out::Lost(None), edges)) = protocol_events.split_last() else {
            panic!("expected ConnectionLost(None) last: {seen:?}")
        };
        assert!(
            edges.len() >= 4,
            "expected several pauses under a slow reader: {edges:?}"
        );
        for (i, edge) in edges.iter().enumerate() {
            let expected_pause = i % 2 == 0;
            assert!(
                matches!(
                    (edge, expected_pause),
                    (Out::Pause, true) | (Out::Resume, false)
                ),
                "pause and resume do not alternate: {edges:?}"
            );
        }
        let flushed = seen.iter().find_map(|item| match item {
            Out::EofFlushed(result) => Some(result),
            _ => None,
        });
        assert!(matches!(flushed, Some(Ok(()))), "WriteEof: {flushed:?}");
        let late = seen.iter().find_map(|item| match item {
            Out::LateWrite(result) => Some(result),
            _ => None,
        });
        let Some(Err(err)) = late else {
            panic!("a write after WriteEof was accepted: {late:?}")
        };
        assert!(
            matches!(
                WriteError::of(err),
                Some(WriteError::Closing | WriteError::AfterEof)
            ),
            "{err}"
        );
        wait_until_stopped(&transport).await;
    })
    .await
}

#[actix_rt::test]
async fn write_pipe_ends_when_its_idle_reader_closes() {
    deadline(async {
        let (reader, writer) = io::pipe().unwrap();
        let (probe, mut events) = ProbeOptions::default().probe();
        let (transport, _) = pipe::connect_write(writer, || probe.start()).unwrap();
        events.made().await;
        assert_eq!(transport.send(GetStats).await.unwrap().bytes_sent, 0);
        // No write is made: the transport notices the reader leaving by itself, as asyncio does.
        drop(reader);
        assert!(events.lost().await.is_none());
        wait_until_stopped(&transport).await;
    })
    .await
}

#[actix_rt::test]
async fn write_pipe_reports_a_broken_pipe_when_its_reader_closes_with_bytes_queued() {
    deadline(async {
        const LEN: usize = 4 * 1024 * 1024;
        let (reader, writer) = io::pipe().unwrap();
        let (probe, mut events) = ProbeOptions::default().probe();
        let (transport, _) = pipe::connect_write(writer, || probe.start()).unwrap();
        events.made().await;
        // Nobody reads: the pipe fills and the rest waits in the write buffer.
        let pending = transport.write_acked(vec![7u8; LEN]);
        assert!(matches!(events.next().await, Some(Event::PauseWriting)));
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let stats = transport.send(GetStats).await.unwrap();
            if stats.bytes_sent > 0 {
                assert!(stats.write_buffer_size > 0, "{stats:?}");
                break;
            }
            assert!(Instant::now() < deadline, "nothing reached the pipe");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        drop(reader);
        let err = events
            .until_lost()
            .await
            .expect("bytes were lost: an error");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
        let err = pending.await.expect_err("the write never completed");
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe, "{err}");
        wait_until_stopped(&transport).await;
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Extra info, FIFOs, sockets, terminals
// ---------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn both_ends_of_a_pipe_report_pipe_extra_info_and_no_socket_keys() {
    deadline(async {
        let (reader, writer) = io::pipe().unwrap();
        let read_target = fd_target(reader.as_raw_fd()).unwrap();
        let write_target = fd_target(writer.as_raw_fd()).unwrap();
        assert_eq!(read_target, write_target, "one pipe, one inode");
        let (read_probe, mut read_events) = ProbeOptions::default().probe();
        let (write_probe, mut write_events) = ProbeOptions::default().probe();
        let (read_transport, _) = pipe::connect_read(reader, || read_probe.start()).unwrap();
        let (write_transport, _) = pipe::connect_write(writer, || write_probe.start()).unwrap();
        read_events.made().await;
        write_events.made().await;

        for (transport, end, target) in [
            (&read_transport, PipeEnd::Read, &read_target),
            (&write_transport, PipeEnd::Write, &write_target),
        ] {
            let info = pipe_info(transport).await;
            assert_eq!(info.end, end);
            assert_eq!(info.file_type, PipeFileType::Fifo);
            assert_eq!(fd_target(info.fd).as_ref(), Some(target));
            for key in [
                keys::SOCKET,
                keys::PEERNAME,
                keys::SOCKNAME,
                keys::SUBPROCESS,
            ] {
                assert_eq!(transport.get_extra_info(key).await, None, "{key}");
            }
            let fallback = ExtraInfo::Text("fallback".into());
            let got = transport
                .send(GetExtraInfo::new(keys::PEERNAME).or(fallback.clone()))
                .await
                .unwrap();
            assert_eq!(got, Some(fallback));
            assert_eq!(transport.socket().await, None);
            assert_eq!(transport.peername().await, None);
        }

        // The two transports talk through the pipe.
        write_transport.write("from one end to the other");
        write_transport.write_eof();
        assert_eq!(
            read_events.data_until_eof().await,
            b"from one end to the other"
        );
        assert!(read_events.lost().await.is_none());
        assert!(write_events.lost().await.is_none());
    })
    .await
}

#[actix_rt::test]
async fn fifo_read_end_delivers_what_another_process_writes() {
    deadline(async {
        const LEN: usize = 1024 * 1024 + 7;
        let (_dir, path) = fifo().await;
        // Opening the read end does not wait for a writer (tokio opens it non-blocking).
        let fd = PipeOpenOptions::new()
            .open_receiver(&path)
            .unwrap()
            .into_nonblocking_fd()
            .unwrap();
        let (probe, mut events) = ProbeOptions::default().probe();
        let (transport, _) = pipe::connect_read(fd, || probe.start()).unwrap();
        events.made().await;
        let info = pipe_info(&transport).await;
        assert_eq!(
            (info.end, info.file_type),
            (PipeEnd::Read, PipeFileType::Fifo)
        );
        assert_eq!(fd_target(info.fd).as_deref(), Some(path.as_path()));

        let writer = PyPeer::spawn(
            &["fifo-write", path.to_str().unwrap(), &LEN.to_string()],
            Stdio::null(),
            Stdio::null(),
        );
        assert!(events.data_until_eof().await == peer_stream(LEN));
        assert!(events.lost().await.is_none());
        writer.success().await;
    })
    .await
}

#[actix_rt::test]
async fn fifo_write_end_carries_bytes_to_another_process() {
    deadline(async {
        const LEN: usize = 1024 * 1024 + 9;
        let (_dir, path) = fifo().await;
        let reader = PyPeer::spawn(
            &["fifo-read", path.to_str().unwrap()],
            Stdio::null(),
            Stdio::piped(),
        );
        // Opening a FIFO's write end fails (ENXIO) until a reader has it open.
        let deadline = Instant::now() + TIMEOUT;
        let sender = loop {
            match PipeOpenOptions::new().open_sender(&path) {
                Ok(sender) => break sender,
                Err(err) => assert!(
                    Instant::now() < deadline,
                    "the reader never opened the FIFO: {err}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let (probe, mut events) = ProbeOptions::default().probe();
        let (transport, _) =
            pipe::connect_write(sender.into_nonblocking_fd().unwrap(), || probe.start()).unwrap();
        events.made().await;
        let info = pipe_info(&transport).await;
        assert_eq!(
            (info.end, info.file_type),
            (PipeEnd::Write, PipeFileType::Fifo)
        );
        assert_eq!(fd_target(info.fd).as_deref(), Some(path.as_path()));

        let data = peer_stream(LEN);
        transport.write(data.clone());
        transport.send(WriteEof).await.unwrap().expect("flushed");
        assert!(events.until_lost().await.is_none());
        assert_eq!(reader.success().await, digest_line(&data));
    })
    .await
}

#[actix_rt::test]
async fn a_socket_is_accepted_as_a_pipe() {
    deadline(async {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let (probe, mut events) = ProbeOptions::default().probe();
        let (transport, _) = pipe::connect_read(ours, || probe.start()).unwrap();
        events.made().await;
        let info = pipe_info(&transport).await;
        assert_eq!(
            (info.end, info.file_type),
            (PipeEnd::Read, PipeFileType::Socket)
        );
        let mut theirs = tokio::net::UnixStream::from_std({
            theirs.set_nonblocking(true).unwrap();
            theirs
        })
        .unwrap();
        theirs.write_all(b"over a socket").await.unwrap();
        drop(theirs);
        assert_eq!(events.data_until_eof().await, b"over a socket");
        assert!(events.lost().await.is_none());
    })
    .await
}

#[actix_rt::test]
async fn a_terminal_is_read_line_by_line_until_its_eof() {
    deadline(async {
        // Python opens a pseudo-terminal, prints the terminal's path, and types into it when
        // told to.
        let mut peer = PyPeer::spawn(&["tty"], Stdio::piped(), Stdio::piped());
        let stdout = OwnedFd::from(peer.child.stdout.take().unwrap());
        let mut lines = BufReader::new(Receiver::from_owned_fd(stdout).unwrap());
        let mut path = String::new();
        tokio::time::timeout(TIMEOUT, lines.read_line(&mut path))
            .await
            .expect("pipe_peer.py tty printed its terminal")
            .unwrap();
        let tty = fs::OpenOptions::new()
            .read(true)
            // O_NOCTTY (Linux's value; std has no constant): never our controlling terminal.
            .custom_flags(0o400)
            .open(path.trim())
            .unwrap();
        let (probe, mut events) = ProbeOptions::default().probe();
        let (transport, _) = pipe::connect_read(tty, || probe.start()).unwrap();
        events.made().await;
        let info = pipe_info(&transport).await;
        assert_eq!(
            (info.end, info.file_type),
            (PipeEnd::Read, PipeFileType::CharDevice)
        );

        let mut stdin = peer.child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
        // Two lines, then ^D on an empty line: the terminal's EOF. Each read of a terminal
        // returns one line at most, so the transport must read again after a short read.
        let mut typed = Vec::new();
        loop {
            // Bounded below `events.next()`'s own limit, to say what arrived before a stall.
            match tokio::time::timeout(TIMEOUT / 2, events.next()).await {
                Ok(Some(Event::Data(chunk))) => typed.extend_from_slice(&chunk),
                Ok(Some(Event::Eof)) => break,
                Ok(other) => panic!("expected data or Eof, got {other:?}"),
                Err(_) => panic!(
                    "nothing more after {:?} (events {:?}): the rest waits in the terminal",
                    String::from_utf8_lossy(&typed),
                    events.seen()
                ),
            }
        }
        assert_eq!(typed, b"typed on a terminal\nand a second line\n");
        assert!(events.lost().await.is_none());
        drop(stdin);
        peer.success().await;
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// What is refused, and what is left behind
// ---------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn regular_files_directories_and_dev_null_are_refused() {
    deadline(async {
        type Connect = fn(OwnedFd) -> io::Result<(TransportHandle, Addr<Probe>)>;
        let connects: [(&str, Connect); 2] = [
            ("connect_read", |fd| pipe::connect_read(fd, never)),
            ("connect_write", |fd| pipe::connect_write(fd, never)),
        ];
        for (name, connect) in connects {
            let file = tempfile::tempfile().unwrap();
            let err = rejected(connect(file.into()));
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name}: {err}");
            assert!(err.to_string().contains("regular file"), "{name}: {err}");

            let dir = tempfile::tempdir().unwrap();
            let err = rejected(connect(fs::File::open(dir.path()).unwrap().into()));
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name}: {err}");
            assert!(err.to_string().contains("directory"), "{name}: {err}");

            // A character device the kernel cannot poll: an error, not a panic.
            let null = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .unwrap();
            let err = rejected(connect(null.into()));
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name}: {err}");
        }
    })
    .await
}

#[actix_rt::test]
async fn blocking_mode_is_restored_when_the_transport_releases_the_pipe() {
    deadline(async {
        // A blocking read end: non-blocking while the transport has it, blocking after. `watch`
        // shares its open file description, so it shares its mode.
        let (reader, writer) = io::pipe().unwrap();
        let watch = reader.try_clone().unwrap();
        assert!(!is_nonblocking(watch.as_raw_fd()));
        let (probe, mut events) = ProbeOptions::default().probe();
        let (transport, _) = pipe::connect_read(reader, || probe.start()).unwrap();
        events.made().await;
        assert!(is_nonblocking(watch.as_raw_fd()));
        drop(writer);
        assert!(events.data_until_eof().await.is_empty());
        assert!(events.lost().await.is_none());
        wait_until_stopped(&transport).await;
        assert!(
            !is_nonblocking(watch.as_raw_fd()),
            "the read end was left non-blocking"
        );

        // The same for a write end.
        let (reader, writer) = io::pipe().unwrap();
        let watch = writer.try_clone().unwrap();
        let (probe, mut events) = ProbeOptions::default().probe();
        let (transport, _) = pipe::connect_write(writer, || probe.start()).unwrap();
        events.made().await;
        assert!(is_nonblocking(watch.as_raw_fd()));
        transport.close();
        assert!(events.lost().await.is_none());
        wait_until_stopped(&transport).await;
        assert!(
            !is_nonblocking(watch.as_raw_fd()),
            "the write end was left non-blocking"
        );
        drop(reader);

        // A descriptor that was non-blocking already stays so.
        let (reader, writer) = tokio_pipe();
        let reader = reader.into_nonblocking_fd().unwrap();
        let watch = reader.try_clone().unwrap();
        let (probe, mut events) = ProbeOptions::default().probe();
        let (transport, _) = pipe::connect_read(reader, || probe.start()).unwrap();
        events.made().await;
        drop(writer);
        assert!(events.data_until_eof().await.is_empty());
        assert!(events.lost().await.is_none());
        wait_until_stopped(&transport).await;
        assert!(is_nonblocking(watch.as_raw_fd()));
    })
    .await
}

#[actix_rt::test]
async fn a_stopped_protocol_makes_its_read_pipe_abort_and_release_the_pipe() {
    deadline(async {
        let (reader, writer) = io::pipe().unwrap();
        let writer = Sender::from_owned_fd(writer.into()).unwrap();
        let (probe, mut events) = ProbeOptions::default().probe();
        let (transport, probe) = pipe::connect_read(reader, || probe.start()).unwrap();
        events.made().await;
        // The pipe is idle: only the protocol watch can notice.
        probe.do_send(StopProbe);
        assert!(events.next().await.is_none(), "the probe stopped");
        wait_for_broken_pipe(&writer).await;
        wait_until_stopped(&transport).await;
    })
    .await
}

#[actix_rt::test]
async fn a_stopped_protocol_makes_its_write_pipe_abort_and_release_the_pipe() {
    deadline(async {
        let (mut reader, writer) = tokio_pipe();
        let (probe, mut events) = ProbeOptions::default().probe();
        let (transport, probe) =
            pipe::connect_write(writer.into_nonblocking_fd().unwrap(), || probe.start()).unwrap();
        events.made().await;
        probe.do_send(StopProbe);
        assert!(events.next().await.is_none(), "the probe stopped");
        assert!(read_to_eof(&mut reader).await.is_empty());
        wait_until_stopped(&transport).await;
    })
    .await
}

/// The write-buffer maximum holds for pipes as for sockets (one core decides for both): a
/// protocol that goes on writing to a reader that does not read is aborted with `BufferFull`,
/// its pending writes fail with it, and the reader sees the pipe close.
#[actix_rt::test]
async fn a_write_pipe_past_its_maximum_write_buffer_is_aborted_with_buffer_full() {
    deadline(async {
        const MAX: usize = 256 * 1024;
        let (mut reader, writer) = tokio_pipe();
        let (probe, mut events) = ProbeOptions::default().probe();
        let config = StreamConfig::for_pipes()
            .max_write_buffer(MAX)
            .expect("above the high-water mark");
        let (transport, _probe) =
            pipe::connect_write_with(writer.into_nonblocking_fd().unwrap(), config, || {
                probe.start()
            })
            .unwrap();
        events.made().await;
        // A pipe buffer holds 64 KiB: 4 MiB in 64 KiB writes cannot all go out.
        let writes: Vec<_> = (0..64)
            .map(|_| transport.write_acked(vec![5u8; 64 * 1024]))
            .collect();
        let writes = actix_rt::spawn(futures::future::join_all(writes));
        let lost = events.until_lost().await.expect("an error");
        assert_eq!(
            switchboard::WriteError::of(&lost),
            Some(switchboard::WriteError::BufferFull(MAX)),
            "{lost}"
        );
        let outcomes = writes.await.unwrap();
        let full = outcomes
            .iter()
            .filter(|outcome| {
                outcome.as_ref().err().and_then(switchboard::WriteError::of)
                    == Some(switchboard::WriteError::BufferFull(MAX))
            })
            .count();
        assert!(full >= 1, "{outcomes:?}");
        // What reached the pipe is whole 64 KiB writes' bytes, then the end.
        let got = read_to_eof(&mut reader).await;
        assert!(
            got.iter().all(|&byte| byte == 5),
            "only the protocol's bytes"
        );
        wait_until_stopped(&transport).await;
    })
    .await
}
