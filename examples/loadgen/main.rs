//! A load generator for echo servers, written with plain tokio so that it measures the server
//! and nothing of switchboard's own.
//!
//! ```text
//! cargo run --release --example loadgen -- --addr 127.0.0.1:8888 --mode pingpong --connections 50 --size 64
//! ```
//!
//! Modes:
//! - `pingpong`: each connection sends `--size` bytes, waits until all of them came back, repeats;
//!   an operation is a round trip.
//! - `stream`: each connection writes `--size`-byte chunks without pause while it reads the
//!   echo; an operation is a chunk echoed, its latency the time from its write to its last byte
//!   read back.
//! - `connect`: `--connections` workers each connect, echo 64 bytes and close, again and again;
//!   an operation is a whole connection. The client end of each closed connection waits in
//!   TIME_WAIT for a minute, which would cap the rate at about 28,000 connections a minute per
//!   source address whatever the server does; so connections to a 127.0.0.0/8 address come from
//!   `--source-addresses` different sources, 127.0.0.2 and up.
//! - `idle`: opens `--connections` connections, echoes `--size` bytes on each once, then holds
//!   them all for `--duration` seconds; an operation is a connection opened and echoed.
//!
//! Every mode but `idle` runs `--warmup` seconds unmeasured, then measures `--duration` seconds.
//! It prints one JSON line: operations, operations/s, MB/s of echoed bytes, latency percentiles
//! in microseconds (an HDR histogram), errors, and, with `--server-pid`, the server process's
//! CPU time (utime + stime from `/proc`) over the measured window and its resident memory
//! before and after (for `idle`, after all connections are open and echoed).

use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use hdrhistogram::Histogram;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
    sync::mpsc,
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;

use procfs::{cpu_seconds, rss_kib};
use report::{Latency, Mode, Report, ServerUsage};

mod procfs;
mod report;

#[derive(Debug, Parser)]
#[command(about = "A load generator for echo servers")]
struct Args {
    /// The echo server's TCP address.
    #[arg(long, default_value = "127.0.0.1:8888")]
    addr: SocketAddr,
    /// What each connection does.
    #[arg(long, value_enum, default_value_t = Mode::Pingpong)]
    mode: Mode,
    /// Concurrent connections (in `connect` mode: concurrent connect-echo-close workers).
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Bytes per message (`connect` always echoes 64).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Seconds measured (in `idle` mode: seconds the connections are held).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of load before the measured window starts.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// The server's process id, to report its CPU time and resident memory.
    #[arg(long)]
    server_pid: Option<u32>,
    /// How many loopback source addresses (127.0.0.2 and up) `connect` and `idle` spread over.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u8).range(1..=250))]
    source_addresses: u8,
}

/// What every connection task shares with the conductor.
#[derive(Debug, Default)]
struct Shared {
    measuring: AtomicBool,
    stop: CancellationToken,
    errors: AtomicU64,
    next_source: AtomicUsize,
}

impl Shared {
    fn counts(&self) -> bool {
        self.measuring.load(Ordering::Relaxed) && !self.stop.is_cancelled()
    }

    /// Runs `work` unless the run stops first (an echo still in flight then never comes back).
    async fn until_stopped<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            output = work => Some(output),
            () = self.stop.cancelled() => None,
        }
    }

    fn error(&self, error: &io::Error) {
        if self.errors.fetch_add(1, Ordering::Relaxed) == 0 {
            eprintln!("loadgen: {error}");
        }
    }
}

/// Operations, echoed bytes and latencies one task saw in the measured window.
#[derive(Debug)]
struct Tally {
    operations: u64,
    bytes: u64,
    latency: Histogram<u64>,
}

impl Tally {
    fn new() -> Self {
        Tally {
            operations: 0,
            bytes: 0,
            // 1 µs to 60 s at 3 significant figures; slower operations count as 60 s.
            latency: Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("the bounds and precision are valid"),
        }
    }

    fn record(&mut self, bytes: usize, started: Instant) {
        self.operations += 1;
        self.bytes += bytes as u64;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.latency.saturating_record(micros.max(1));
    }

    fn merge(&mut self, other: Tally) {
        self.operations += other.operations;
        self.bytes += other.bytes;
        self.latency
            .add(other.latency)
            .expect("histograms of the same precision merge");
    }
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    // One thread: the load generator gets one core of its own, and a single-threaded runtime
    // spends all of it on the connections.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> io::Result<()> {
    let shared = Arc::new(Shared::default());
    let rss_before = args.server_pid.map(rss_kib).transpose()?;
    let mut tasks = JoinSet::new();
    match args.mode {
        Mode::Pingpong | Mode::Stream => {
            for _ in 0..args.connections {
                let stream = connect(&args, &shared).await?;
                let shared = Arc::clone(&shared);
                if args.mode == Mode::Pingpong {
                    tasks.spawn(pingpong(stream, args.size, shared));
                } else {
                    tasks.spawn(stream_chunks(stream, args.size, shared));
                }
            }
        }
        Mode::Connect => {
            for _ in 0..args.connections {
                tasks.spawn(connect_echo_close(
                    args.addr,
                    args.source_addresses,
                    Arc::clone(&shared),
                ));
            }
        }
        Mode::Idle => return idle(&args, &shared, rss_before).await,
    }

    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let cpu_before = args.server_pid.map(cpu_seconds).transpose()?;
    let started = Instant::now();
    shared.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    shared.stop.cancel();
    let seconds = started.elapsed().as_secs_f64();
    let server = match (args.server_pid, cpu_before) {
        (Some(pid), Some(before)) => Some(ServerUsage {
            cpu_seconds: cpu_seconds(pid)? - before,
            rss_before_kib: rss_before.unwrap_or(0),
            rss_after_kib: rss_kib(pid)?,
        }),
        _ => None,
    };

    let mut tally = Tally::new();
    while let Some(done) = tasks.join_next().await {
        tally.merge(done.map_err(io::Error::other)?);
    }
    print_report(&args, &shared, tally, seconds, server)
}

fn print_report(
    args: &Args,
    shared: &Shared,
    tally: Tally,
    seconds: f64,
    server: Option<ServerUsage>,
) -> io::Result<()> {
    let report = Report {
        mode: args.mode,
        connections: args.connections,
        size: if args.mode == Mode::Connect {
            CONNECT_SIZE
        } else {
            args.size
        },
        seconds,
        operations: tally.operations,
        operations_per_second: tally.operations as f64 / seconds,
        megabytes_per_second: tally.bytes as f64 / seconds / 1e6,
        latency_us: Latency {
            p50: tally.latency.value_at_quantile(0.5),
            p99: tally.latency.value_at_quantile(0.99),
            p999: tally.latency.value_at_quantile(0.999),
            max: tally.latency.max(),
        },
        errors: shared.errors.load(Ordering::Relaxed),
        server,
    };
    println!(
        "{}",
        serde_json::to_string(&report).map_err(io::Error::other)?
    );
    Ok(())
}

/// Sends `size` bytes, waits for all of them back, and again, until the run stops.
async fn pingpong(mut stream: TcpStream, size: usize, shared: Arc<Shared>) -> Tally {
    let mut tally = Tally::new();
    let message = vec![b'p'; size];
    let mut echo = vec![0; size];
    loop {
        let started = Instant::now();
        let round_trip = async {
            stream.write_all(&message).await?;
            stream.read_exact(&mut echo).await
        };
        match shared.until_stopped(round_trip).await {
            None => break,
            Some(Err(error)) => {
                shared.error(&error);
                break;
            }
            Some(Ok(_)) if shared.counts() => tally.record(size, started),
            Some(Ok(_)) => {}
        }
    }
    tally
}

/// Writes `size`-byte chunks without waiting while a second task reads the echo back.
async fn stream_chunks(stream: TcpStream, size: usize, shared: Arc<Shared>) -> Tally {
    let (mut reader, mut writer) = stream.into_split();
    // The writer tells the reader when each chunk left, so that the reader can time it when its
    // last byte is back; the queue is as long as the data in flight, which the sockets bound.
    let (sent, mut sent_at) = mpsc::unbounded_channel::<Instant>();
    let writing = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let chunk = vec![b's'; size];
            loop {
                // Queued before the write: the echo of a chunk's first bytes can be back before
                // the write of its last ones returns.
                if sent.send(Instant::now()).is_err() {
                    break;
                }
                match shared.until_stopped(writer.write_all(&chunk)).await {
                    None => break,
                    Some(Err(error)) => {
                        shared.error(&error);
                        break;
                    }
                    Some(Ok(())) => {}
                }
            }
        })
    };
    let mut tally = Tally::new();
    let mut buffer = vec![0; 64 * 1024];
    let mut pending = 0;
    loop {
        match shared.until_stopped(reader.read(&mut buffer)).await {
            None | Some(Ok(0)) => break,
            Some(Ok(read)) => pending += read,
            Some(Err(error)) => {
                shared.error(&error);
                break;
            }
        }
        while pending >= size {
            pending -= size;
            let Some(started) = sent_at.recv().await else {
                break;
            };
            if shared.counts() {
                tally.record(size, started);
            }
        }
    }
    // The writer sees the same stop; wait for it so that its error, if any, is counted.
    let _ = writing.await;
    tally
}

/// The bytes `connect` mode echoes on each connection.
const CONNECT_SIZE: usize = 64;

/// Connects, echoes 64 bytes and closes, again and again, until the run stops.
async fn connect_echo_close(addr: SocketAddr, sources: u8, shared: Arc<Shared>) -> Tally {
    let mut tally = Tally::new();
    let message = [b'c'; CONNECT_SIZE];
    let mut echo = [0; CONNECT_SIZE];
    loop {
        let started = Instant::now();
        let once = async {
            let mut stream = connect_from(addr, next_source(addr, sources, &shared)).await?;
            stream.write_all(&message).await?;
            stream.read_exact(&mut echo).await?;
            // The client closes first, so the TIME_WAIT stays on this side, as with most clients.
            drop(stream);
            io::Result::Ok(())
        };
        match shared.until_stopped(once).await {
            None => break,
            Some(Ok(())) if shared.counts() => tally.record(CONNECT_SIZE, started),
            Some(Ok(())) => {}
            Some(Err(error)) => {
                shared.error(&error);
                // A refused connection comes back at once; do not spin on it.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tally
}

/// Opens the connections, echoes once on each, reports, and holds them for `--duration`.
async fn idle(args: &Args, shared: &Arc<Shared>, rss_before: Option<u64>) -> io::Result<()> {
    shared.measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut opening = JoinSet::new();
    let mut held = Vec::with_capacity(args.connections);
    let mut tally = Tally::new();
    // Open them a hundred at a time: a burst of ten thousand would overflow the listen backlog.
    const AT_ONCE: usize = 100;
    for _ in 0..args.connections {
        if opening.len() == AT_ONCE {
            collect_idle(&mut opening, &mut held, &mut tally, shared).await?;
        }
        let (addr, size) = (args.addr, args.size);
        let source = next_source(addr, args.source_addresses, shared);
        opening.spawn(async move {
            let started = Instant::now();
            let mut stream = connect_from(addr, source).await?;
            stream.set_nodelay(true)?;
            let message = vec![b'i'; size];
            let mut echo = vec![0; size];
            stream.write_all(&message).await?;
            stream.read_exact(&mut echo).await?;
            Ok((stream, started))
        });
    }
    while !opening.is_empty() {
        collect_idle(&mut opening, &mut held, &mut tally, shared).await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    // Let the server settle (free what it used for the echoes) before its memory is read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server = match args.server_pid {
        Some(pid) => Some(ServerUsage {
            cpu_seconds: 0.0,
            rss_before_kib: rss_before.unwrap_or(0),
            rss_after_kib: rss_kib(pid)?,
        }),
        None => None,
    };
    print_report(args, shared, tally, seconds, server)?;
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    drop(held);
    Ok(())
}

type Opened = io::Result<(TcpStream, Instant)>;

async fn collect_idle(
    opening: &mut JoinSet<Opened>,
    held: &mut Vec<TcpStream>,
    tally: &mut Tally,
    shared: &Shared,
) -> io::Result<()> {
    if let Some(opened) = opening.join_next().await {
        match opened.map_err(io::Error::other)? {
            Ok((stream, started)) => {
                tally.record(0, started);
                held.push(stream);
            }
            Err(error) => shared.error(&error),
        }
    }
    Ok(())
}

/// Connects from the run's first source, with `TCP_NODELAY` as the servers set it.
async fn connect(args: &Args, shared: &Shared) -> io::Result<TcpStream> {
    let stream = connect_from(
        args.addr,
        next_source(args.addr, args.source_addresses, shared),
    )
    .await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The next source address, round robin over 127.0.0.2 and up when the server is on loopback.
fn next_source(addr: SocketAddr, sources: u8, shared: &Shared) -> Option<Ipv4Addr> {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            let index = shared.next_source.fetch_add(1, Ordering::Relaxed) % usize::from(sources);
            Some(Ipv4Addr::new(127, 0, 0, 2 + index as u8))
        }
        _ => None,
    }
}

async fn connect_from(addr: SocketAddr, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source.into(), 0))?;
    }
    socket.connect(addr).await
}
