//! What the bounds tests of the server examples share: a client that pipelines requests as fast
//! as it can and never reads a reply, a sampler of a process's resident memory, and a slowloris
//! that sends a request one byte at a time.
//!
//! Include it with `#[path = "support/bounds.rs"] mod bounds;`.
// Each test file uses a part of these helpers.
#![allow(dead_code)]

use std::{
    fs,
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// The resident memory (`VmRSS`) of process `pid`, in KiB; `None` once it is gone.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
}

/// Samples a process's resident memory every 10 ms on a thread of its own, keeping the peak.
/// Past `ceiling_kib` it raises [`over_ceiling`](Self::over_ceiling), so that a flood against
/// a server that does not bound it stops before it takes the machine's memory.
pub(crate) struct RssSampler {
    baseline_kib: u64,
    peak_kib: Arc<AtomicU64>,
    over: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RssSampler {
    pub(crate) fn start(pid: u32, ceiling_kib: u64) -> RssSampler {
        let baseline_kib = rss_kib(pid).expect("the process's /proc/PID/status");
        let peak_kib = Arc::new(AtomicU64::new(baseline_kib));
        let over = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak_kib, over, stop) = (peak_kib.clone(), over.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(rss) = rss_kib(pid) else { return };
                    let peak = peak_kib.fetch_max(rss, Ordering::Relaxed).max(rss);
                    if peak > ceiling_kib {
                        over.store(true, Ordering::Relaxed);
                    }
                    thread::sleep(Duration::from_millis(10));
                }
            })
        };
        RssSampler {
            baseline_kib,
            peak_kib,
            over,
            stop,
            thread: Some(thread),
        }
    }

    /// The resident memory when sampling began, in KiB.
    pub(crate) fn baseline_kib(&self) -> u64 {
        self.baseline_kib
    }

    /// The highest resident memory sampled so far, in KiB.
    pub(crate) fn peak_kib(&self) -> u64 {
        self.peak_kib.load(Ordering::Relaxed)
    }

    /// Whether the memory went past the ceiling.
    pub(crate) fn over_ceiling(&self) -> Arc<AtomicBool> {
        self.over.clone()
    }

    /// Stops sampling; the peak, in KiB.
    pub(crate) fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the RSS sampler");
        }
        self.peak_kib()
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What a [`pipeline_without_reading`] client did.
#[derive(Debug)]
pub(crate) struct Flood {
    /// The bytes it wrote.
    pub(crate) sent: u64,
    /// The connections it opened: one more each time the server ended the last.
    pub(crate) connections: u32,
}

/// For `duration`, or until `stop` is raised: writes `request` over and over to `addr` as fast
/// as the server takes it, and never reads a byte. Whole requests only, however the writes are
/// cut, so the server sees a stream of valid requests. When the server ends the connection,
/// it connects again.
pub(crate) fn pipeline_without_reading(
    addr: SocketAddr,
    request: &[u8],
    duration: Duration,
    stop: Arc<AtomicBool>,
) -> Flood {
    let chunk = request.repeat((64 * 1024 / request.len()).max(1));
    let deadline = Instant::now() + duration;
    let mut flood = Flood {
        sent: 0,
        connections: 0,
    };
    let mut stream: Option<TcpStream> = None;
    // Where the next write starts in `chunk`, so a short write does not cut a request in two.
    let mut at = 0;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        let conn = match &mut stream {
            Some(conn) => conn,
            None => {
                let conn = TcpStream::connect(addr).expect("connect the pipelining client");
                // A write that blocks (the server stopped reading) gives up after a moment, so
                // the loop sees the deadline.
                conn.set_write_timeout(Some(Duration::from_millis(50)))
                    .unwrap();
                flood.connections += 1;
                at = 0;
                stream.insert(conn)
            }
        };
        match conn.write(&chunk[at..]) {
            Ok(n) => {
                flood.sent += n as u64;
                at = (at + n) % chunk.len();
            }
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            // The server ended the connection.
            Err(_) => stream = None,
        }
    }
    flood
}

/// Sends `request` one byte every `interval` until the server ends the connection or the
/// request is all sent; what the server wrote meanwhile, and how long after the connect it
/// ended the connection (`None` if it did not).
pub(crate) fn slowloris(
    addr: SocketAddr,
    request: &[u8],
    interval: Duration,
) -> (Vec<u8>, Option<Duration>) {
    let start = Instant::now();
    let mut conn = TcpStream::connect(addr).expect("connect the slowloris");
    conn.set_nonblocking(true).unwrap();
    let mut received = Vec::new();
    for &byte in request {
        thread::sleep(interval);
        if let Some(ended) = read_available(&mut conn, &mut received) {
            return (received, ended.then(|| start.elapsed()));
        }
        if conn.write_all(&[byte]).is_err() {
            break;
        }
    }
    // Sent whole (or cut off): what comes back, until the end or a while.
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let ended = read_to_end(&mut conn, &mut received);
    (received, ended.then(|| start.elapsed()))
}

/// Reads what is there without blocking; `Some(true)` if the server ended the connection (EOF
/// or reset), `None` if it is open.
fn read_available(conn: &mut TcpStream, into: &mut Vec<u8>) -> Option<bool> {
    let mut buf = [0; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return Some(true),
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return None,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Some(true),
        }
    }
}

/// Reads until the server ends the connection (`true`) or the read timeout passes (`false`).
pub(crate) fn read_to_end(conn: &mut TcpStream, into: &mut Vec<u8>) -> bool {
    let mut buf = [0; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            // A reset ends it too.
            Err(_) => return true,
        }
    }
}

/// Opens a connection that sends nothing, and waits (up to `limit`) for the server to end it:
/// what the server wrote, and how long after the connect it ended the connection (`None` if it
/// did not within `limit`).
pub(crate) fn silent(addr: SocketAddr, limit: Duration) -> (Vec<u8>, Option<Duration>) {
    let start = Instant::now();
    let mut conn = TcpStream::connect(addr).expect("connect a silent client");
    conn.set_read_timeout(Some(limit)).unwrap();
    let mut received = Vec::new();
    let ended = read_to_end(&mut conn, &mut received);
    (received, ended.then(|| start.elapsed()))
}

/// The number of MiB in `kib` KiB, for messages.
pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
