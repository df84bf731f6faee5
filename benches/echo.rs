//! The echo benchmark: switchboard's `echo_server` against the plain tokio server a user would
//! write instead (`tokio_echo`), one after the other in the same run, on the cases and targets of
//! the book's "Performance" chapter.
//!
//! ```text
//! cargo bench --bench echo                       # 3 runs of every case, 5 s each
//! cargo bench --bench echo -- --runs 5 --book book/src
//! cargo bench --bench echo -- --before ../old/target/release/examples/echo_server
//! ```
//!
//! It builds the three example binaries in release, then for each run and case starts a server
//! pinned to CPU 0, drives it with `loadgen` pinned to CPU 1, and reads the server's CPU time
//! (utime + stime from `/proc`) over the measured window, or its resident memory. Each figure is
//! the median over the runs; each ratio is switchboard's median over tokio's. The servers run
//! with one worker thread, the load generator with one thread, and both with the fd limit raised
//! to the hard limit for the 10,000 idle connections.

use std::{
    fmt::Write as _,
    fs, io,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use clap::Parser;
use serde::Serialize;

#[path = "support/pinning.rs"]
mod pinning;
#[path = "../examples/loadgen/report.rs"]
mod report;
#[path = "support/server.rs"]
mod server;

use pinning::{Pinning, machine};
use report::{Report, ServerUsage};
use server::Server;

#[derive(Debug, Parser)]
#[command(about = "switchboard's echo server against a plain tokio one, side by side")]
struct Args {
    /// Runs of every case; figures are the medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds measured per case and server.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of unmeasured load before each measured window.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Connections held in the idle case.
    #[arg(long, default_value_t = 10_000)]
    idle_connections: usize,
    /// Only the cases whose key contains one of these (keys: see the table).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Also write `performance-table.md` and `performance.svg` into this directory.
    #[arg(long)]
    book: Option<PathBuf>,
    /// An `echo_server` binary built from an earlier commit, measured in the same runs as a
    /// third server, so a change is compared side by side with what it changes (a second table
    /// gives now / before per case).
    #[arg(long)]
    before: Option<PathBuf>,
    /// `cargo bench` passes `--bench`; it means nothing here.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One line of the table: a load, the figure it is judged by, and its target.
#[derive(Debug)]
struct Case {
    key: &'static str,
    title: &'static str,
    mode: &'static str,
    connections: Connections,
    size: usize,
    figure: Figure,
    target: Target,
    /// Flags for the baseline server in this case only.
    baseline_flags: &'static [&'static str],
}

#[derive(Debug, Clone, Copy)]
enum Connections {
    Fixed(usize),
    /// `--idle-connections`.
    Idle,
}

#[derive(Debug, Clone, Copy)]
enum Figure {
    /// Server CPU time per operation, in microseconds.
    CpuPerOperation,
    /// Server CPU time per megabyte echoed, in milliseconds.
    CpuPerMegabyte,
    /// The 99th percentile of the round-trip latency, in microseconds.
    P99Latency,
    /// Server resident-memory growth per connection held, in KiB.
    RssPerConnection,
}

impl Figure {
    fn label(self, case: &Case) -> &'static str {
        match (self, case.mode) {
            (Figure::CpuPerOperation, "connect") => "server CPU µs / connection",
            (Figure::CpuPerOperation, _) => "server CPU µs / round trip",
            (Figure::CpuPerMegabyte, _) => "server CPU ms / MB",
            (Figure::P99Latency, _) => "p99 latency µs",
            (Figure::RssPerConnection, _) => "server RSS KiB / connection",
        }
    }

    fn of(self, report: &Report, server: &ServerUsage, connections: usize) -> f64 {
        let cpu = server.cpu_seconds;
        match self {
            Figure::CpuPerOperation => cpu * 1e6 / report.operations.max(1) as f64,
            Figure::CpuPerMegabyte => {
                cpu * 1e3 / (report.megabytes_per_second * report.seconds).max(f64::MIN_POSITIVE)
            }
            Figure::P99Latency => report.latency_us.p99 as f64,
            Figure::RssPerConnection => {
                let grown = server.rss_after_kib.saturating_sub(server.rss_before_kib);
                grown as f64 / connections.max(1) as f64
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Target {
    /// switchboard's figure at most this multiple of tokio's.
    Ratio(f64),
    /// switchboard's figure at most this, whatever tokio's.
    Absolute(f64),
}

impl Target {
    fn met(self, switchboard: f64, ratio: f64) -> bool {
        match self {
            Target::Ratio(most) => ratio <= most,
            Target::Absolute(most) => switchboard <= most,
        }
    }

    fn describe(self) -> String {
        match self {
            Target::Ratio(most) => format!("≤ {most:.2}×"),
            Target::Absolute(most) => format!("≤ {most} KiB"),
        }
    }
}

const CASES: &[Case] = &[
    Case {
        key: "pingpong-50x64",
        title: "ping-pong, 50 connections, 64 B",
        mode: "pingpong",
        connections: Connections::Fixed(50),
        size: 64,
        figure: Figure::CpuPerOperation,
        target: Target::Ratio(1.25),
        baseline_flags: &[],
    },
    Case {
        key: "pingpong-50x4k",
        title: "ping-pong, 50 connections, 4 KiB",
        mode: "pingpong",
        connections: Connections::Fixed(50),
        size: 4096,
        figure: Figure::CpuPerOperation,
        target: Target::Ratio(1.25),
        baseline_flags: &[],
    },
    Case {
        key: "pingpong-1x64",
        title: "ping-pong, 1 connection, 64 B",
        mode: "pingpong",
        connections: Connections::Fixed(1),
        size: 64,
        figure: Figure::P99Latency,
        target: Target::Ratio(1.2),
        baseline_flags: &[],
    },
    Case {
        key: "stream-10x64k",
        title: "stream, 10 connections, 64 KiB writes",
        mode: "stream",
        connections: Connections::Fixed(10),
        size: 65536,
        figure: Figure::CpuPerMegabyte,
        target: Target::Ratio(1.15),
        // With its 4 KiB buffer the baseline needs 16 reads and 16 writes where switchboard,
        // which grows its reads to 64 KiB, needs one of each; give it the same 64 KiB.
        baseline_flags: &["--buffer", "65536"],
    },
    Case {
        key: "connect-10",
        title: "connect + echo + close, 10 at a time",
        mode: "connect",
        connections: Connections::Fixed(10),
        size: 64,
        figure: Figure::CpuPerOperation,
        target: Target::Ratio(1.3),
        baseline_flags: &[],
    },
    Case {
        key: "idle",
        title: "idle connections",
        mode: "idle",
        connections: Connections::Idle,
        size: 64,
        figure: Figure::RssPerConnection,
        target: Target::Absolute(2.5),
        baseline_flags: &[],
    },
];

/// The two servers, baseline first.
const SERVERS: [&str; 2] = ["tokio_echo", "echo_server"];

/// Every run of one case on one server.
#[derive(Debug, Default, Serialize)]
struct Samples {
    figures: Vec<f64>,
    operations_per_second: Vec<f64>,
    reports: Vec<Report>,
}

/// A finished line of the table.
#[derive(Debug)]
struct Row<'a> {
    case: &'a Case,
    label: &'static str,
    tokio: f64,
    switchboard: f64,
    ratio: f64,
    tokio_ops: f64,
    switchboard_ops: f64,
    met: bool,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let binaries = build(root)?;
    let cases: Vec<&Case> = CASES
        .iter()
        .filter(|case| args.only.is_empty() || args.only.iter().any(|key| case.key.contains(key)))
        .collect();
    let pinning = Pinning::detect();
    eprintln!("{}", pinning.describe());

    let mut servers: Vec<(&str, PathBuf)> = SERVERS
        .iter()
        .map(|name| (*name, binaries.dir.join(name)))
        .collect();
    if let Some(before) = &args.before {
        servers.push(("echo_server (before)", before.clone()));
    }
    let mut samples: Vec<Vec<Samples>> = cases
        .iter()
        .map(|_| servers.iter().map(|_| Samples::default()).collect())
        .collect();
    // Runs outermost, so that each case's samples are spread over the whole run's time and a
    // slow minute of the machine does not land on one case.
    for run in 1..=args.runs {
        for (case, samples) in cases.iter().zip(&mut samples) {
            for ((server, binary), samples) in servers.iter().zip(samples.iter_mut()) {
                let connections = case.connections(&args);
                eprint!("run {run}/{}: {} on {server} ... ", args.runs, case.key);
                let baseline = *server == SERVERS[0];
                let (report, usage) = measure(&binaries, binary, baseline, &pinning, &args, case)?;
                let figure = case.figure.of(&report, &usage, connections);
                eprintln!("{figure:.2} ({:.0} op/s)", report.operations_per_second);
                samples.figures.push(figure);
                samples
                    .operations_per_second
                    .push(report.operations_per_second);
                samples.reports.push(report);
            }
        }
    }

    let rows: Vec<Row<'_>> = cases
        .iter()
        .zip(&samples)
        .map(|(case, samples)| Row::new(case, &samples[0], &samples[1]))
        .collect();
    let machine = machine();
    let table = table(&rows, &args, &machine);
    println!("{table}");
    if args.before.is_some() {
        println!("{}", before_table(&cases, &samples));
    }

    let results = root.join("target").join("bench");
    fs::create_dir_all(&results)?;
    let raw: Vec<_> = cases.iter().map(|case| case.key).zip(&samples).collect();
    fs::write(
        results.join("echo.json"),
        serde_json::to_string_pretty(&raw)?,
    )?;
    if let Some(book) = &args.book {
        fs::write(book.join("performance-table.md"), &table)?;
        fs::write(book.join("performance.svg"), chart(&rows))?;
        eprintln!(
            "wrote {0}/performance-table.md and {0}/performance.svg",
            book.display()
        );
    }
    eprintln!("raw samples: {}", results.join("echo.json").display());
    Ok(())
}

impl Case {
    fn connections(&self, args: &Args) -> usize {
        match self.connections {
            Connections::Fixed(connections) => connections,
            Connections::Idle => args.idle_connections,
        }
    }
}

impl<'a> Row<'a> {
    fn new(case: &'a Case, tokio: &Samples, switchboard: &Samples) -> Self {
        let (tokio_figure, switchboard_figure) =
            (median(&tokio.figures), median(&switchboard.figures));
        let ratio = switchboard_figure / tokio_figure;
        Row {
            case,
            label: case.figure.label(case),
            tokio: tokio_figure,
            switchboard: switchboard_figure,
            ratio,
            tokio_ops: median(&tokio.operations_per_second),
            switchboard_ops: median(&switchboard.operations_per_second),
            met: case.target.met(switchboard_figure, ratio),
        }
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        len if len % 2 == 1 => sorted[len / 2],
        len => (sorted[len / 2 - 1] + sorted[len / 2]) / 2.0,
    }
}

/// The paths of the three release binaries, built first.
struct Binaries {
    dir: PathBuf,
}

fn build(root: &Path) -> io::Result<Binaries> {
    eprintln!("building the examples in release");
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["build", "--release", "--locked", "--quiet"])
        .args([
            "--example",
            "loadgen",
            "--example",
            "tokio_echo",
            "--example",
            "echo_server",
        ])
        .status()?;
    if !status.success() {
        return Err(io::Error::other(format!("cargo build failed: {status}")));
    }
    Ok(Binaries {
        dir: root.join("target").join("release").join("examples"),
    })
}

/// One server, one load: start the server, run `loadgen` against it, stop the server.
fn measure(
    binaries: &Binaries,
    server: &Path,
    baseline: bool,
    pinning: &Pinning,
    args: &Args,
    case: &Case,
) -> io::Result<(Report, ServerUsage)> {
    let mut command = pinning.command(server, true);
    command.args(["--addr", "127.0.0.1:0", "--workers", "1"]);
    if baseline {
        command.args(case.baseline_flags);
    }
    let mut server = Server::start(command)?;
    let connections = case.connections(args);
    let duration = if case.mode == "idle" {
        0.0
    } else {
        args.duration
    };
    let output = pinning
        .command(&binaries.dir.join("loadgen"), false)
        .args(["--addr", &server.addr, "--mode", case.mode])
        .args([
            "--connections",
            &connections.to_string(),
            "--size",
            &case.size.to_string(),
        ])
        .args([
            "--duration",
            &duration.to_string(),
            "--warmup",
            &args.warmup.to_string(),
        ])
        .args(["--server-pid", &server.pid().to_string()])
        .stderr(Stdio::inherit())
        .output()?;
    server.stop()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "loadgen failed: {}",
            output.status
        )));
    }
    let report: Report = serde_json::from_slice(&output.stdout)?;
    let Some(usage) = report.server.clone() else {
        return Err(io::Error::other(
            "loadgen reported nothing about the server",
        ));
    };
    if report.errors > 0 {
        return Err(io::Error::other(format!(
            "loadgen saw {} errors",
            report.errors
        )));
    }
    Ok((report, usage))
}

/// The change against the earlier build (`--before`): each case's median figure before and now,
/// their ratio, and the spread of each (the largest sample over the smallest, the noise a
/// ratio has to beat).
fn before_table(cases: &[&Case], samples: &[Vec<Samples>]) -> String {
    let spread = |values: &[f64]| {
        let (min, max) = values
            .iter()
            .fold((f64::INFINITY, 0.0_f64), |(min, max), &value| {
                (min.min(value), max.max(value))
            });
        max / min
    };
    let mut out = String::from(
        "| case | figure | tokio | before | now | now / before | spread before | spread now |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (case, samples) in cases.iter().zip(samples) {
        let (tokio, now, before) = (&samples[0], &samples[1], &samples[2]);
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} | {:.3} |",
            case.key,
            case.figure.label(case),
            median(&tokio.figures),
            median(&before.figures),
            median(&now.figures),
            median(&now.figures) / median(&before.figures),
            spread(&before.figures),
            spread(&now.figures),
        );
    }
    out
}

/// The results as a Markdown table, with how they were made.
fn table(rows: &[Row<'_>], args: &Args, machine: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| case | figure | tokio | switchboard | ratio | target | met | tokio op/s | switchboard op/s |"
    );
    let _ = writeln!(out, "|---|---|--:|--:|--:|--:|:-:|--:|--:|");
    for row in rows {
        let title = match row.case.connections {
            Connections::Idle => format!("{} {}", args.idle_connections, row.case.title),
            Connections::Fixed(_) => row.case.title.to_owned(),
        };
        let _ = writeln!(
            out,
            "| {title} | {} | {:.2} | {:.2} | {:.3}× | {} | {} | {:.0} | {:.0} |",
            row.label,
            row.tokio,
            row.switchboard,
            row.ratio,
            row.case.target.describe(),
            if row.met { "yes" } else { "**no**" },
            row.tokio_ops,
            row.switchboard_ops,
        );
    }
    let runs = match args.runs {
        1 => "One run".to_owned(),
        runs => format!("Medians of {runs} runs"),
    };
    let _ = writeln!(
        out,
        "\n{runs} of {} s each (after {} s of warm-up); {machine}.",
        args.duration, args.warmup
    );
    out
}

/// The ratios as a bar chart: one bar per case, a line at 1 (tokio) and a mark at each target.
///
/// Hand-written: six bars and a few labels do not need a plotting library and its font and
/// image dependencies.
fn chart(rows: &[Row<'_>]) -> String {
    const LABEL_WIDTH: f64 = 300.0;
    const BAR_AREA: f64 = 420.0;
    const ROW_HEIGHT: f64 = 34.0;
    const TOP: f64 = 40.0;
    let largest = rows
        .iter()
        .flat_map(|row| [row.ratio, row.target_ratio()])
        .fold(1.5_f64, f64::max);
    let scale = BAR_AREA / (largest * 1.1);
    let width = LABEL_WIDTH + BAR_AREA + 70.0;
    let height = TOP + ROW_HEIGHT * rows.len() as f64 + 30.0;
    let x = |ratio: f64| LABEL_WIDTH + ratio * scale;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LABEL_WIDTH}" y="20" font-weight="bold">switchboard ÷ plain tokio (lower is better; | marks the target)</text>"#
    );
    for (index, row) in rows.iter().enumerate() {
        let y = TOP + ROW_HEIGHT * index as f64;
        let colour = if row.met { "#2e7d32" } else { "#c62828" };
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LABEL_WIDTH - 10.0,
            y + 17.0,
            escape(row.case.title)
        );
        let _ = writeln!(
            svg,
            r#"<rect x="{LABEL_WIDTH}" y="{}" width="{:.1}" height="22" fill="{colour}"/>"#,
            y + 2.0,
            row.ratio * scale
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}">{:.2}×</text>"#,
            x(row.ratio) + 5.0,
            y + 17.0,
            row.ratio
        );
        let target = x(row.target_ratio());
        let _ = writeln!(
            svg,
            r#"<line x1="{target:.1}" y1="{}" x2="{target:.1}" y2="{}" stroke="black" stroke-width="3"/>"#,
            y - 1.0,
            y + 27.0
        );
    }
    let one = x(1.0);
    let bottom = TOP + ROW_HEIGHT * rows.len() as f64;
    let _ = writeln!(
        svg,
        r##"<line x1="{one:.1}" y1="{}" x2="{one:.1}" y2="{bottom}" stroke="#666666" stroke-dasharray="4 3"/>"##,
        TOP - 6.0
    );
    let _ = writeln!(
        svg,
        r##"<text x="{one:.1}" y="{}" text-anchor="middle" fill="#666666">1× = tokio</text>"##,
        bottom + 18.0
    );
    svg.push_str("</svg>\n");
    svg
}

impl Row<'_> {
    /// The target as a ratio to tokio (an absolute target divided by tokio's figure).
    fn target_ratio(&self) -> f64 {
        match self.case.target {
            Target::Ratio(most) => most,
            Target::Absolute(most) => most / self.tokio,
        }
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
