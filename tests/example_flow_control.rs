//! The flow-control example runs as a process, with the settings the book uses and two others,
//! and what it reports holds what the chapter promises:
//!
//! - every byte arrives, intact and in order, in fewer deliveries than writes, none larger than
//!   the read-buffer limit, and the read buffer never holds more than that limit;
//! - `SetWriteBufferLimits` derives a missing low-water mark as a quarter of the high one;
//! - `PauseWriting` and `ResumeWriting` come in pairs, and the producer was paused: the slow
//!   consumer did slow it down;
//! - a producer that stops at `PauseWriting` keeps its write buffer within the high-water mark
//!   plus one chunk, and a paused one went over the high-water mark;
//! - the consumer paused reading once per `--pause-every` bytes, and no delivery reached it while
//!   reading was paused or an acknowledgement was kept;
//! - keeping acknowledgements slows the transfer to the consumer's rate: it takes at least
//!   `--bytes` / `--rate`.
//!
//! Bad limits are refused before anything connects. Every child process is killed when its
//! test fails, and every wait is bounded.

#[path = "support/process.rs"]
mod process;

use std::time::{Duration, Instant};

use process::{Process, TIMEOUT, example_command};

/// One mebibyte.
const MIB: u64 = 1024 * 1024;

/// The transport's default read-buffer limit (`StreamConfig::read_buffer_limit`).
const READ_BUFFER_LIMIT: u64 = 256 * 1024;

/// The example's own deadline, shorter than the test's, so a stuck transfer says so itself.
const EXAMPLE_TIMEOUT: &str = "20";

/// The report's six lines, with every number replaced by `N`.
const SHAPE: [&str; 6] = [
    "producer: sent N bytes in N writes of at most N bytes",
    "producer: write-buffer limits low N, high N",
    "producer: writing paused N times, resumed N times; the write buffer peaked at N bytes",
    "consumer: received N bytes in N deliveries of at most N bytes, intact and in order",
    "consumer: reading paused N times; N deliveries came while paused or holding an acknowledgement",
    "consumer: the read buffer peaked at N bytes (limit N)",
];

/// One run's settings: the example's options, with its defaults where the run gives none.
#[derive(Debug, Clone, Copy)]
struct Settings {
    bytes: u64,
    chunk: u64,
    high: u64,
    low: Option<u64>,
    /// MiB per second.
    rate: u64,
    pause_every: u64,
    pause_ms: u64,
}

/// The example's defaults, which the book runs.
const DEFAULTS: Settings = Settings {
    bytes: 32 * MIB,
    chunk: 16 * 1024,
    high: 32 * 1024,
    low: None,
    rate: 32,
    pause_every: 4 * MIB,
    pause_ms: 20,
};

impl Settings {
    fn args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--bytes={}", self.bytes),
            format!("--chunk={}", self.chunk),
            format!("--high={}", self.high),
            format!("--rate={}", self.rate),
            format!("--pause-every={}", self.pause_every),
            format!("--pause-ms={}", self.pause_ms),
        ];
        if let Some(low) = self.low {
            args.push(format!("--low={low}"));
        }
        args
    }
}

/// `line` with every run of digits replaced by `N`, and the numbers.
fn shape(line: &str) -> (String, Vec<u64>) {
    let mut shape = String::new();
    let mut numbers = Vec::new();
    let mut digits = String::new();
    for c in line.chars().chain(std::iter::once('\n')) {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        if !digits.is_empty() {
            numbers.push(digits.parse().expect("a number that fits in u64"));
            digits.clear();
            shape.push('N');
        }
        if c != '\n' {
            shape.push(c);
        }
    }
    (shape, numbers)
}

/// The report's numbers, in order, checking on the way that its lines are the six it should
/// print.
fn parse(stdout: &str) -> [u64; 15] {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), SHAPE.len(), "the report:\n{stdout}");
    let mut numbers = Vec::new();
    for (line, expected) in lines.iter().zip(SHAPE) {
        let (shape, found) = shape(line);
        assert_eq!(shape, expected, "the report:\n{stdout}");
        numbers.extend(found);
    }
    numbers.try_into().expect("the six lines hold 15 numbers")
}

/// Runs the example with `settings` and checks every promise of the chapter against its report.
fn check(settings: Settings, args: &[String]) {
    let mut command = example_command("flow_control", "warn");
    command.args(args).args(["--timeout", EXAMPLE_TIMEOUT]);
    let started = Instant::now();
    let finished = Process::spawn("flow_control", command).finish(TIMEOUT);
    let elapsed = started.elapsed();
    let stdout = finished.stdout_text();
    let context = format!("{settings:?}, report:\n{stdout}");
    assert!(
        finished.status.success(),
        "flow_control exited with {}; {context}\nstderr:\n{}",
        finished.status,
        finished.stderr_text()
    );
    let [
        sent,
        writes,
        chunk,
        low,
        high,
        pauses,
        resumes,
        write_peak,
        received,
        deliveries,
        largest,
        read_pauses,
        out_of_turn,
        read_peak,
        read_limit,
    ] = parse(&stdout);

    // Every byte, in writes of one chunk, joined into fewer, larger deliveries.
    assert_eq!(sent, settings.bytes, "{context}");
    assert_eq!(chunk, settings.chunk, "{context}");
    assert_eq!(writes, settings.bytes.div_ceil(settings.chunk), "{context}");
    assert_eq!(received, settings.bytes, "{context}");
    assert!(
        deliveries >= settings.bytes.div_ceil(READ_BUFFER_LIMIT),
        "{context}"
    );
    assert!(deliveries < writes, "{context}");

    // The limits asked for; a missing low-water mark is a quarter of the high one.
    assert_eq!(high, settings.high, "{context}");
    assert_eq!(low, settings.low.unwrap_or(settings.high / 4), "{context}");

    // Pauses and resumes strictly alternate, and the close drains the buffer: as many of each.
    // The consumer is slower than the producer, so the producer was paused.
    assert_eq!(pauses, resumes, "{context}");
    assert!(pauses >= 1, "the producer was never paused: {context}");
    // A pause means the buffer went over the high-water mark; a producer that stops at
    // `PauseWriting` and writes one chunk per turn keeps it within one chunk above it.
    assert!(write_peak > high, "{context}");
    assert!(
        write_peak <= high + chunk,
        "the write buffer grew past the high-water mark plus one chunk: {context}"
    );

    // The read side: never more than the limit read and not acknowledged, and nothing
    // delivered while reading is paused or an acknowledgement is kept.
    assert_eq!(read_limit, READ_BUFFER_LIMIT, "{context}");
    assert!(largest <= read_limit, "{context}");
    assert!(read_peak >= largest, "{context}");
    assert!(read_peak <= read_limit, "{context}");
    assert_eq!(out_of_turn, 0, "{context}");
    // Every `--pause-every` bytes: each multiple is crossed by a delivery of its own, since
    // none is larger than the read-buffer limit.
    let expected_pauses = settings.bytes.checked_div(settings.pause_every);
    assert_eq!(read_pauses, expected_pauses.unwrap_or(0), "{context}");

    // Each acknowledgement is kept for as long as the work on its bytes takes, and the next
    // delivery waits for it: the whole transfer takes at least bytes / rate.
    let work = Duration::from_secs_f64(settings.bytes as f64 / (settings.rate * MIB) as f64);
    assert!(
        elapsed >= work,
        "the transfer took {elapsed:?}, less than the consumer's work ({work:?}): {context}"
    );
}

/// The book's run: `cargo run --example flow_control`, no options.
#[test]
fn the_defaults_the_book_runs() {
    check(DEFAULTS, &[]);
}

/// The transport's default watermarks (64 KiB, low derived), small writes, a slow consumer
/// that pauses reading every 2 MiB.
#[test]
fn small_writes_and_the_default_watermarks() {
    let settings = Settings {
        bytes: 16 * MIB,
        chunk: 4096,
        high: 64 * 1024,
        rate: 8,
        pause_every: 2 * MIB,
        pause_ms: 10,
        ..DEFAULTS
    };
    check(settings, &settings.args());
}

/// Writes larger than the high-water mark and cut across the payload's blocks, an explicit
/// low-water mark, a consumer that never pauses reading.
#[test]
fn writes_larger_than_the_high_water_mark() {
    let settings = Settings {
        bytes: 16 * MIB + 12_345,
        chunk: 40_000,
        high: 16 * 1024,
        low: Some(2048),
        rate: 16,
        pause_every: 0,
        ..DEFAULTS
    };
    check(settings, &settings.args());
}

/// Limits the transport would refuse are refused before anything connects: exit status 2, the
/// reason on stderr, nothing on stdout.
#[test]
fn a_low_water_mark_above_the_high_one_is_refused() {
    let mut command = example_command("flow_control", "warn");
    command.args(["--high", "1000", "--low", "2000"]);
    let finished = Process::spawn("flow_control", command).finish(TIMEOUT);
    assert_eq!(finished.status.code(), Some(2), "{finished:?}");
    assert_eq!(finished.stdout_text(), "");
    let stderr = finished.stderr_text();
    assert!(
        stderr.contains("--high and --low: invalid write-buffer limits"),
        "{stderr}"
    );
}
