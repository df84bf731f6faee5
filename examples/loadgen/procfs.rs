//! What `/proc` says about a process: its CPU time and resident memory. Shared by `loadgen` and
//! the benchmarks (`#[path = "../examples/loadgen/procfs.rs"]`), which measure the server from
//! outside.
#![allow(dead_code)]

use std::io;

/// The process's CPU time so far, user and system, all threads, from `/proc/PID/stat`.
pub(crate) fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the file (utime, stime) are the 12th and 13th after the name.
    let ticks = |index: usize| -> io::Result<u64> {
        fields
            .get(index)
            .and_then(|field| field.parse().ok())
            .ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))
    };
    Ok((ticks(11)? + ticks(12)?) as f64 / CLOCK_TICKS_PER_SECOND)
}

/// `USER_HZ`, the unit of `/proc`'s CPU times: 100 on every Linux architecture that tokio runs
/// on (the kernel fixes it for user space whatever the internal tick rate).
pub(crate) const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// The process's resident memory, from `/proc/PID/status`.
pub(crate) fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other("no VmRSS in /proc/PID/status"))
}
