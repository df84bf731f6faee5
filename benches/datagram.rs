//! The datagram benchmark: switchboard's `udp_echo` against the plain tokio server a user would
//! write instead (`tokio_udp_echo`), one after the other in the same run.
//!
//! ```text
//! cargo bench --bench datagram                   # 3 runs of every case, 3 s each
//! cargo bench --bench datagram -- --runs 5 --duration 5 --only 50x
//! ```
//!
//! It builds the two example servers in release, then for each run, case and server starts the
//! server pinned to CPU 0 and drives it with a load generator pinned to CPU 1: this very binary,
//! started again with the hidden `load` subcommand. The load generator runs one thread per
//! flow, each with its own connected `std` UDP socket and one datagram outstanding: it sends a
//! datagram numbered in its first 8 bytes, waits for the echo of that number, and sends the
//! next. A flow whose echo does not come within [`LOSS_TIMEOUT`] counts a loss and sends a new
//! datagram; a late echo of an abandoned datagram is ignored. After `--warmup` seconds it
//! measures `--duration` seconds: datagrams echoed, round-trip latencies (an HDR histogram),
//! and the server's CPU time (utime + stime from `/proc/PID/stat`, all threads).
//!
//! Each figure is the median over the runs; each ratio is switchboard's median over tokio's.
//! Losses are totals over all runs, warm-up included. The raw reports go to
//! `target/bench/datagram.json`.

use std::{
    fmt::Write as _,
    fs, io,
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

#[path = "support/pinning.rs"]
mod pinning;
#[path = "../examples/loadgen/procfs.rs"]
mod procfs;
#[path = "support/server.rs"]
mod server;

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use pinning::{Pinning, machine};
use procfs::cpu_seconds;
use server::Server;

/// How long a flow waits for an echo before it counts the datagram lost and sends another.
const LOSS_TIMEOUT: Duration = Duration::from_millis(200);

/// The two servers, baseline first.
const SERVERS: [&str; 2] = ["tokio_udp_echo", "udp_echo"];

#[derive(Debug, Parser)]
#[command(about = "switchboard's UDP echo server against a plain tokio one, side by side")]
struct Args {
    /// Runs of every case; figures are the medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds measured per case and server.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Seconds of unmeasured load before each measured window.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Only the cases whose key contains one of these (keys: 1x64, 50x64, 50x1400).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// `cargo bench` passes `--bench`; it means nothing here.
    #[arg(long, hide = true)]
    bench: bool,
    /// The load generator's role, when the benchmark starts itself as one.
    #[command(subcommand)]
    role: Option<Role>,
}

/// What a started copy of this binary does instead of benchmarking.
#[derive(Debug, Subcommand)]
enum Role {
    /// Drives an echo server and prints one JSON report (internal).
    #[command(hide = true)]
    Load(LoadArgs),
}

/// The load generator's settings.
#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// The echo server's UDP address.
    #[arg(long)]
    addr: SocketAddr,
    /// Flows: client sockets, each with one datagram outstanding.
    #[arg(long)]
    flows: usize,
    /// Bytes per datagram (at least 8, for the sequence number).
    #[arg(long)]
    size: usize,
    /// Seconds measured.
    #[arg(long)]
    duration: f64,
    /// Seconds of load before the measured window.
    #[arg(long)]
    warmup: f64,
    /// The server's process id, whose CPU time is measured.
    #[arg(long)]
    server_pid: u32,
}

/// One load, measured on both servers.
#[derive(Debug)]
struct Case {
    /// What `--only` matches.
    key: &'static str,
    title: &'static str,
    flows: usize,
    size: usize,
    /// The lines of the table this case makes.
    figures: &'static [Figure],
}

const CASES: &[Case] = &[
    Case {
        key: "pingpong-1x64",
        title: "ping-pong, 1 flow, 64 B",
        flows: 1,
        size: 64,
        figures: &[
            Figure::P50Latency,
            Figure::P99Latency,
            Figure::CpuPerDatagram,
        ],
    },
    Case {
        key: "pingpong-50x64",
        title: "ping-pong, 50 flows, 64 B",
        flows: 50,
        size: 64,
        figures: &[
            Figure::CpuPerDatagram,
            Figure::DatagramsPerSecond,
            Figure::ServerBusy,
        ],
    },
    Case {
        key: "pingpong-50x1400",
        title: "ping-pong, 50 flows, 1400 B",
        flows: 50,
        size: 1400,
        figures: &[
            Figure::CpuPerDatagram,
            Figure::DatagramsPerSecond,
            Figure::ServerBusy,
        ],
    },
];

/// A figure one run yields.
#[derive(Debug, Clone, Copy)]
enum Figure {
    /// The median round-trip time, in microseconds.
    P50Latency,
    /// The 99th percentile of the round-trip time, in microseconds.
    P99Latency,
    /// Server CPU time per datagram echoed, in microseconds.
    CpuPerDatagram,
    /// Datagrams echoed per second.
    DatagramsPerSecond,
    /// Server CPU time over wall time, in percent.
    ServerBusy,
}

impl Figure {
    fn label(self) -> &'static str {
        match self {
            Figure::P50Latency => "p50 round trip µs",
            Figure::P99Latency => "p99 round trip µs",
            Figure::CpuPerDatagram => "server CPU µs / datagram",
            Figure::DatagramsPerSecond => "datagrams / s",
            Figure::ServerBusy => "server CPU busy %",
        }
    }

    /// Whether a lower figure is the better one (for the table's reader).
    fn lower_is_better(self) -> bool {
        !matches!(self, Figure::DatagramsPerSecond)
    }

    fn of(self, report: &Report) -> f64 {
        let seconds = report.seconds.max(f64::MIN_POSITIVE);
        match self {
            Figure::P50Latency => report.latency_ns.p50 as f64 / 1e3,
            Figure::P99Latency => report.latency_ns.p99 as f64 / 1e3,
            Figure::CpuPerDatagram => {
                report.server_cpu_seconds * 1e6 / report.datagrams.max(1) as f64
            }
            Figure::DatagramsPerSecond => report.datagrams as f64 / seconds,
            Figure::ServerBusy => report.server_cpu_seconds * 100.0 / seconds,
        }
    }

    /// The figure with as many decimals as it deserves.
    fn format(self, value: f64) -> String {
        match self {
            Figure::DatagramsPerSecond | Figure::ServerBusy => format!("{value:.0}"),
            _ => format!("{value:.2}"),
        }
    }
}

/// What the load generator prints: one run of one case on one server.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Report {
    flows: usize,
    size: usize,
    /// The measured window's length.
    seconds: f64,
    /// Datagrams echoed within the window.
    datagrams: u64,
    /// Datagrams given up on after [`LOSS_TIMEOUT`], over the whole run (warm-up included).
    losses: u64,
    /// Echoes that came back after their datagram was given up on, over the whole run.
    late: u64,
    /// Round-trip percentiles within the window, in nanoseconds.
    latency_ns: Latency,
    /// The server's utime + stime within the window.
    server_cpu_seconds: f64,
}

/// Round-trip percentiles, in nanoseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Latency {
    p50: u64,
    p99: u64,
    max: u64,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    if let Some(Role::Load(load)) = &args.role {
        let report = generate_load(load)?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let binaries = build(root)?;
    let cases: Vec<&Case> = CASES
        .iter()
        .filter(|case| args.only.is_empty() || args.only.iter().any(|key| case.key.contains(key)))
        .collect();
    let pinning = Pinning::detect();
    eprintln!("{}", pinning.describe());

    // samples[case][server]: every run's report.
    let mut samples: Vec<[Vec<Report>; 2]> = cases.iter().map(|_| Default::default()).collect();
    // Runs outermost, so that each case's samples are spread over the whole run's time; the
    // servers take turns at going first, so that neither always follows the other.
    for run in 1..=args.runs {
        for (case, samples) in cases.iter().zip(&mut samples) {
            let order = if run % 2 == 1 { [0, 1] } else { [1, 0] };
            for index in order {
                let server = SERVERS[index];
                eprint!("run {run}/{}: {} on {server} ... ", args.runs, case.key);
                let report = measure(&binaries, &pinning, &args, case, server)?;
                eprintln!(
                    "{:.0} datagrams/s, {:.2} µs CPU each, p99 {:.1} µs, {} lost",
                    Figure::DatagramsPerSecond.of(&report),
                    Figure::CpuPerDatagram.of(&report),
                    Figure::P99Latency.of(&report),
                    report.losses,
                );
                samples[index].push(report);
            }
        }
    }

    println!("{}", table(&cases, &samples, &args, &pinning));

    let results = target_dir(root).join("bench");
    fs::create_dir_all(&results)?;
    let raw: Vec<_> = cases.iter().map(|case| case.key).zip(&samples).collect();
    let path = results.join("datagram.json");
    fs::write(&path, serde_json::to_string_pretty(&raw)?)?;
    eprintln!("raw reports: {}", path.display());
    Ok(())
}

fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut sorted: Vec<f64> = values.into_iter().collect();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        len if len % 2 == 1 => sorted[len / 2],
        len => (sorted[len / 2 - 1] + sorted[len / 2]) / 2.0,
    }
}

/// The release binaries of the two servers, by name.
#[derive(Debug)]
struct Binaries(Vec<(String, PathBuf)>);

impl Binaries {
    fn path(&self, name: &str) -> io::Result<&Path> {
        self.0
            .iter()
            .find(|(built, _)| built == name)
            .map(|(_, path)| path.as_path())
            .ok_or_else(|| io::Error::other(format!("cargo built no `{name}` example")))
    }
}

/// Builds the servers in release and takes their paths from cargo's own report, so that they
/// are found wherever the target directory is (`CARGO_TARGET_DIR` included).
fn build(root: &Path) -> io::Result<Binaries> {
    eprintln!("building the examples in release");
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(root)
        .args(["build", "--release", "--locked", "--quiet"])
        .args(["--message-format", "json-render-diagnostics"]);
    for server in SERVERS {
        command.args(["--example", server]);
    }
    let output = command.stderr(Stdio::inherit()).output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "cargo build failed: {}",
            output.status
        )));
    }
    let mut built = Vec::new();
    for line in output.stdout.split(|&byte| byte == b'\n') {
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        if let (Some(name), Some(executable)) = (
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) {
            built.push((name.to_owned(), PathBuf::from(executable)));
        }
    }
    Ok(Binaries(built))
}

/// The target directory this benchmark was built in (`target/release/deps/datagram-*` is three
/// levels below it), or `target` beside the manifest.
fn target_dir(root: &Path) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .unwrap_or_else(|| root.join("target"))
}

/// One case on one server: start the server, run the load generator against it, stop the
/// server.
fn measure(
    binaries: &Binaries,
    pinning: &Pinning,
    args: &Args,
    case: &Case,
    server: &str,
) -> io::Result<Report> {
    let mut command = pinning.command(binaries.path(server)?, true);
    command.args(["--addr", "127.0.0.1:0"]);
    let mut server = Server::start(command)?;
    let output = pinning
        .command(&std::env::current_exe()?, false)
        .args(["load", "--addr", &server.addr])
        .args(["--flows", &case.flows.to_string()])
        .args(["--size", &case.size.to_string()])
        .args(["--duration", &args.duration.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--server-pid", &server.pid().to_string()])
        .stderr(Stdio::inherit())
        .output()?;
    server.stop()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "the load generator failed: {}",
            output.status
        )));
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// What the flows share with the conductor.
#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    measuring: AtomicBool,
    /// Datagrams echoed so far, warm-up included; the conductor reads it at both ends of the
    /// window.
    echoed: AtomicU64,
    losses: AtomicU64,
    late: AtomicU64,
}

/// The load generator: `flows` threads, each ping-ponging one datagram at a time.
fn generate_load(args: &LoadArgs) -> io::Result<Report> {
    if args.size < 8 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "datagrams carry an 8-byte sequence number: --size must be at least 8",
        ));
    }
    let shared = Arc::new(Shared::default());
    let local: SocketAddr = match args.addr {
        SocketAddr::V4(_) => "0.0.0.0:0",
        SocketAddr::V6(_) => "[::]:0",
    }
    .parse()
    .expect("an address");
    let mut flows = Vec::with_capacity(args.flows);
    for _ in 0..args.flows {
        let socket = UdpSocket::bind(local)?;
        socket.connect(args.addr)?;
        socket.set_read_timeout(Some(LOSS_TIMEOUT))?;
        let shared = Arc::clone(&shared);
        let size = args.size;
        flows.push(thread::spawn(move || flow(&socket, size, &shared)));
    }

    thread::sleep(Duration::from_secs_f64(args.warmup));
    let cpu_before = cpu_seconds(args.server_pid)?;
    let echoed_before = shared.echoed.load(Ordering::Relaxed);
    let started = Instant::now();
    shared.measuring.store(true, Ordering::Relaxed);
    thread::sleep(Duration::from_secs_f64(args.duration));
    shared.measuring.store(false, Ordering::Relaxed);
    let echoed_after = shared.echoed.load(Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = cpu_seconds(args.server_pid)?;
    shared.stop.store(true, Ordering::Relaxed);

    let mut latency = round_trips();
    for flow in flows {
        let flow_latency = flow
            .join()
            .map_err(|_| io::Error::other("a flow panicked"))??;
        latency
            .add(&flow_latency)
            .map_err(|err| io::Error::other(format!("merging histograms: {err}")))?;
    }
    Ok(Report {
        flows: args.flows,
        size: args.size,
        seconds,
        datagrams: echoed_after - echoed_before,
        losses: shared.losses.load(Ordering::Relaxed),
        late: shared.late.load(Ordering::Relaxed),
        latency_ns: Latency {
            p50: latency.value_at_quantile(0.5),
            p99: latency.value_at_quantile(0.99),
            max: latency.max(),
        },
        server_cpu_seconds: cpu_after - cpu_before,
    })
}

/// An empty histogram of round trips in nanoseconds, up to a minute, 3 significant digits.
fn round_trips() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// One flow: send a numbered datagram, wait for its echo (or give up after [`LOSS_TIMEOUT`]),
/// repeat until told to stop. Returns the round trips measured in the window.
fn flow(socket: &UdpSocket, size: usize, shared: &Shared) -> io::Result<Histogram<u64>> {
    let mut latency = round_trips();
    let mut datagram = vec![0xa5; size];
    let mut echo = vec![0; size + 1];
    let mut seq = 0_u64;
    while !shared.stop.load(Ordering::Relaxed) {
        seq += 1;
        datagram[..8].copy_from_slice(&seq.to_le_bytes());
        let sent = Instant::now();
        socket.send(&datagram)?;
        loop {
            match socket.recv(&mut echo) {
                Ok(len) if echo[..len] == datagram[..] => {
                    if shared.measuring.load(Ordering::Relaxed) {
                        let nanos = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        latency.saturating_record(nanos.max(1));
                    }
                    shared.echoed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(len) if len == size && echo[8..len] == datagram[8..] => {
                    // The echo of a datagram given up on: keep waiting for this one's.
                    shared.late.fetch_add(1, Ordering::Relaxed);
                }
                Ok(len) => {
                    return Err(io::Error::other(format!(
                        "an echo of {len} bytes for a datagram of {size}, or with other bytes"
                    )));
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    shared.losses.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(err) => return Err(err),
            }
        }
    }
    Ok(latency)
}

/// The results as a Markdown table, with how they were made.
fn table(cases: &[&Case], samples: &[[Vec<Report>; 2]], args: &Args, pinning: &Pinning) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| case | figure | tokio | switchboard | switchboard / tokio | better | lost (tokio / switchboard) |"
    );
    let _ = writeln!(out, "|---|---|--:|--:|--:|:-:|--:|");
    for (case, [tokio, switchboard]) in cases.iter().zip(samples) {
        let losses = |reports: &[Report]| reports.iter().map(|report| report.losses).sum::<u64>();
        for (index, figure) in case.figures.iter().enumerate() {
            let tokio_figure = median(tokio.iter().map(|report| figure.of(report)));
            let switchboard_figure = median(switchboard.iter().map(|report| figure.of(report)));
            let (title, lost) = match index {
                0 => (
                    case.title.to_owned(),
                    format!("{} / {}", losses(tokio), losses(switchboard)),
                ),
                _ => (String::new(), String::new()),
            };
            let _ = writeln!(
                out,
                "| {title} | {} | {} | {} | {:.2}× | {} | {lost} |",
                figure.label(),
                figure.format(tokio_figure),
                figure.format(switchboard_figure),
                switchboard_figure / tokio_figure,
                if figure.lower_is_better() {
                    "lower"
                } else {
                    "higher"
                },
            );
        }
    }
    let runs = match args.runs {
        1 => "One run".to_owned(),
        runs => format!("Medians of {runs} runs"),
    };
    let _ = writeln!(
        out,
        "\n{runs} of {} s each (after {} s of warm-up); {}; a datagram is lost after {} ms \
         without its echo (losses: totals over all runs); {}.",
        args.duration,
        args.warmup,
        pinning.describe(),
        LOSS_TIMEOUT.as_millis(),
        machine(),
    );
    out
}
