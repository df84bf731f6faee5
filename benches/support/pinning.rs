//! Where a benchmark's server and load generator run: pinned to CPUs of their own with
//! `taskset` when the machine has two or more, so each one's CPU time is its own; and the
//! machine's description for the tables. Shared by the
//! benchmarks through `#[path = "support/pinning.rs"]`.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    thread,
};

/// Which CPUs the server and the load generator get.
#[derive(Debug)]
pub(crate) enum Pinning {
    /// `taskset` puts the server on one CPU and the load generator on another.
    Pinned { server: usize, load: usize },
    /// One CPU, or no `taskset`: both float, and the figures are noisier.
    Floating(&'static str),
}

impl Pinning {
    pub(crate) fn detect() -> Self {
        let cpus = thread::available_parallelism().map_or(1, usize::from);
        let taskset = Command::new("taskset")
            .arg("-V")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        match (cpus, taskset) {
            (1, _) => Pinning::Floating("one CPU"),
            (_, false) => Pinning::Floating("no taskset (util-linux)"),
            _ => Pinning::Pinned { server: 0, load: 1 },
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Pinning::Pinned { server, load } => {
                format!("server pinned to CPU {server}, load generator to CPU {load}")
            }
            Pinning::Floating(why) => format!("not pinned ({why}): expect noisier figures"),
        }
    }

    /// `program` under `bash`, which raises the soft fd limit to the hard one and `exec`s
    /// through `taskset`, so that the child's pid is the program's.
    pub(crate) fn command(&self, program: &Path, server: bool) -> Command {
        let mut command = Command::new("bash");
        command.arg("-c");
        match self {
            Pinning::Pinned { server: cpu, load } => {
                let cpu = if server { cpu } else { load };
                command
                    .arg(r#"ulimit -Sn "$(ulimit -Hn)" && exec taskset -c "$0" "$@""#)
                    .arg(cpu.to_string());
            }
            Pinning::Floating(_) => {
                command
                    .arg(r#"ulimit -Sn "$(ulimit -Hn)" && exec "$@""#)
                    .arg("bash");
            }
        }
        command.arg(program);
        command
    }
}

/// The CPU model, kernel and toolchain, for the table's caption.
pub(crate) fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name"))
                .map(|name| name.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cpus = thread::available_parallelism().map_or(1, usize::from);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cpus} × {cpu}, Linux {}, {rustc}", kernel.trim())
}
