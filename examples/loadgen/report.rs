//! The JSON line `loadgen` prints, one per run. The benchmark harness (`benches/echo.rs`)
//! reads it with the same types, so the two cannot drift apart.

use serde::{Deserialize, Serialize};

/// What each connection does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    Pingpong,
    Stream,
    Connect,
    Idle,
}

/// One run's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Report {
    pub(crate) mode: Mode,
    pub(crate) connections: usize,
    pub(crate) size: usize,
    pub(crate) seconds: f64,
    pub(crate) operations: u64,
    pub(crate) operations_per_second: f64,
    pub(crate) megabytes_per_second: f64,
    pub(crate) latency_us: Latency,
    pub(crate) errors: u64,
    /// With `--server-pid` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) server: Option<ServerUsage>,
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Latency {
    pub(crate) p50: u64,
    pub(crate) p99: u64,
    pub(crate) p999: u64,
    pub(crate) max: u64,
}

/// What `/proc` said about the server over the measured window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ServerUsage {
    /// utime + stime.
    pub(crate) cpu_seconds: f64,
    pub(crate) rss_before_kib: u64,
    pub(crate) rss_after_kib: u64,
}
