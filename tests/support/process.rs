//! Running the workspace's examples (and other programs, such as Python peers) as child
//! processes from integration tests: find or build an example binary, spawn it with its output
//! captured, signal it, and wait for it with a deadline.
//!
//! Include it with `#[path = "support/process.rs"] mod process;`. A [`Process`] is killed and
//! reaped when it is dropped, so a failing (panicking) test never leaves a child behind, and every
//! wait is bounded, so a hang fails the test instead of stalling CI.
// Each test file uses a part of these helpers.
#![allow(dead_code)]

use std::{
    env,
    ffi::OsStr,
    fmt,
    io::{self, Read, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread,
    time::{Duration, Instant},
};

/// How long a child may take to do what a test waits for (print a line, exit) before the test
/// fails.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

/// How often a wait on a child's exit polls it.
const POLL: Duration = Duration::from_millis(5);

/// The path of the example binary `name`, built with the profile of the running test.
///
/// The test executable lives in `target/<profile>/deps/`; the examples are in
/// `target/<profile>/examples/`. `cargo test` builds them before running the tests, but
/// `cargo test --test <file>` does not: when the binary is missing, or older than the test
/// executable (the library changed since) or than its source (`examples/<name>.rs`, or any file
/// under `examples/<name>/`), this runs `cargo build --example <name>` with the same cargo,
/// target directory and profile (a no-op when the binary is fresh), once per test process.
pub(crate) fn example(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());

    let test_exe = env::current_exe().expect("the test executable's path");
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is in target/<profile>/deps/");
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", env::consts::EXE_SUFFIX));

    let mut built = lock(&BUILT);
    if built.iter().any(|done| done == name) {
        return path;
    }
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    // A one-file example, or one with modules in a directory of its own, any of which may have
    // changed.
    let mut source = examples.join(format!("{name}.rs"));
    if !source.exists() {
        source = examples.join(name);
    }
    let built_at = modified(&path);
    if built_at.is_none() || built_at < modified(&test_exe) || built_at < newest_modified(&source) {
        build_example(name, profile_dir);
    }
    assert!(
        path.exists(),
        "`cargo build --example {name}` did not produce {}",
        path.display()
    );
    built.push(name.to_owned());
    path
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    path.metadata().and_then(|meta| meta.modified()).ok()
}

/// When `path` was last modified; for a directory, the newest of the files under it.
fn newest_modified(path: &Path) -> Option<std::time::SystemTime> {
    let Ok(entries) = std::fs::read_dir(path) else {
        return modified(path);
    };
    entries
        .filter_map(|entry| newest_modified(&entry.ok()?.path()))
        .max()
}

fn build_example(name: &str, profile_dir: &Path) {
    cargo_build(&["--example", name], profile_dir);
}

/// The path of `sb-child`, the child program of the subprocess tests (`tests/child/`), built
/// like [`example`]: when missing or older than its source, with the running test's cargo,
/// target directory and profile, once per test process.
pub(crate) fn child_program() -> PathBuf {
    workspace_program("switchboard-test-child", "sb-child", "tests/child")
}

/// The path of the binary `bin` of the workspace member `package` (whose sources are under
/// `dir`), built like [`example`]: when missing or older than its sources, once per test process.
pub(crate) fn workspace_program(package: &str, bin: &str, dir: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());

    let test_exe = env::current_exe().expect("the test executable's path");
    let profile_dir = test_exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is in target/<profile>/deps/");
    let path = profile_dir.join(format!("{bin}{}", env::consts::EXE_SUFFIX));
    let mut built = lock(&BUILT);
    if !built.iter().any(|done| done == bin) {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let built_at = modified(&path);
        if built_at.is_none()
            || built_at < newest_modified(&source)
            || built_at < modified(&test_exe)
        {
            cargo_build(&["-p", package, "--bin", bin], profile_dir);
        }
        assert!(
            path.exists(),
            "building {bin} did not produce {}",
            path.display()
        );
        built.push(bin.to_owned());
    }
    path
}

/// `cargo build --quiet ARGS` into the target directory and profile of `profile_dir`.
fn cargo_build(args: &[&str], profile_dir: &Path) {
    let name = args.join(" ");
    let target_dir = profile_dir
        .parent()
        .expect("target/<profile> has a parent directory");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "--quiet"])
        .args(args)
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile_dir.file_name().and_then(OsStr::to_str) {
        Some("debug") => {}
        Some("release") => {
            cargo.arg("--release");
        }
        Some(profile) => {
            cargo.args(["--profile", profile]);
        }
        None => panic!("unexpected target directory {}", profile_dir.display()),
    }
    let output = cargo
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run cargo to build {name}: {err}"));
    assert!(
        output.status.success(),
        "`cargo build {name}` failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A command running the example binary `name` (built if needed), with `RUST_LOG` set to `log`
/// so the environment of the test run does not change what it prints.
pub(crate) fn example_command(name: &str, log: &str) -> Command {
    let mut command = Command::new(example(name));
    command.env("RUST_LOG", log).env_remove("RUST_BACKTRACE");
    command
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything a child wrote to one of its output pipes so far, read by a background thread.
#[derive(Clone)]
pub(crate) struct Capture {
    state: Arc<(Mutex<CaptureState>, Condvar)>,
}

#[derive(Default)]
struct CaptureState {
    bytes: Vec<u8>,
    /// The pipe reached end of file (or failed to read).
    closed: bool,
}

impl Capture {
    fn spawn(mut pipe: impl Read + Send + 'static) -> Capture {
        let capture = Capture {
            state: Arc::default(),
        };
        let shared = capture.state.clone();
        thread::spawn(move || {
            let mut chunk = vec![0; 64 * 1024];
            loop {
                let n = match pipe.read(&mut chunk) {
                    Ok(n) => n,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => 0,
                };
                let (state, changed) = &*shared;
                let mut state = lock(state);
                if n == 0 {
                    state.closed = true;
                } else {
                    state.bytes.extend_from_slice(&chunk[..n]);
                }
                changed.notify_all();
                if n == 0 {
                    return;
                }
            }
        });
        capture
    }

    /// What was read so far.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        lock(&self.state.0).bytes.clone()
    }

    /// What was read so far, as (lossy) text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// Waits until `done(bytes, closed)` holds; `Err` with what was read if `timeout` passes
    /// first.
    pub(crate) fn wait_until(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[u8], bool) -> bool,
    ) -> Result<Vec<u8>, Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let (state, changed) = &*self.state;
        let mut state = lock(state);
        loop {
            if done(&state.bytes, state.closed) {
                return Ok(state.bytes.clone());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(state.bytes.clone());
            }
            state = changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The first line (with its `\n`), once it is complete; `None` if the pipe closed or
    /// `timeout` passed first.
    pub(crate) fn first_line(&self, timeout: Duration) -> Option<String> {
        let bytes = self
            .wait_until(timeout, |bytes, closed| closed || bytes.contains(&b'\n'))
            .ok()?;
        let end = bytes.iter().position(|&byte| byte == b'\n')? + 1;
        Some(String::from_utf8_lossy(&bytes[..end]).into_owned())
    }

    /// Everything, once the pipe is closed; `None` if `timeout` passes first.
    pub(crate) fn until_closed(&self, timeout: Duration) -> Option<Vec<u8>> {
        self.wait_until(timeout, |_, closed| closed).ok()
    }
}

impl fmt::Debug for Capture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.state.0);
        f.debug_struct("Capture")
            .field("len", &state.bytes.len())
            .field("closed", &state.closed)
            .finish()
    }
}

/// How a child ended and everything it printed.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
}

impl Finished {
    pub(crate) fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub(crate) fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A child process with captured stdout and stderr, killed and reaped when dropped.
#[derive(Debug)]
pub(crate) struct Process {
    name: String,
    child: Child,
    stdout: Capture,
    stderr: Capture,
    status: Option<ExitStatus>,
}

impl Process {
    /// Spawns `command` with stdout and stderr captured and stdin closed; `name` labels it in
    /// failure messages.
    pub(crate) fn spawn(name: &str, command: Command) -> Process {
        Process::start(name, command, Stdio::null()).0
    }

    /// Spawns `command` with stdout and stderr captured and `input` on its stdin, written by a
    /// background thread (so a child that echoes its input never blocks on a full pipe) and
    /// then closed.
    pub(crate) fn spawn_with_input(name: &str, command: Command, input: Vec<u8>) -> Process {
        let (process, stdin) = Process::start(name, command, Stdio::piped());
        let mut stdin: ChildStdin = stdin.expect("stdin is piped");
        thread::spawn(move || {
            // A child that exits without reading everything closes the pipe: nothing to report
            // here, its exit status and output tell.
            let _ = stdin.write_all(&input);
        });
        process
    }

    /// Waits for the first line of a server example, `listening on ADDR`, and returns ADDR;
    /// fails the test with the server's stderr if it prints anything else or nothing.
    pub(crate) fn listening_on(&self) -> String {
        let Some(line) = self.stdout().first_line(TIMEOUT) else {
            panic!(
                "{} printed no complete line within {TIMEOUT:?}; stdout {:?}, stderr:\n{}",
                self.name,
                self.stdout().text(),
                self.stderr().text()
            );
        };
        line.strip_prefix("listening on ")
            .and_then(|rest| rest.strip_suffix('\n'))
            .unwrap_or_else(|| {
                panic!(
                    "{}'s first line is {line:?}, not `listening on ADDR`",
                    self.name
                )
            })
            .to_owned()
    }

    fn start(name: &str, mut command: Command, stdin: Stdio) -> (Process, Option<ChildStdin>) {
        let mut child = command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {name} ({command:?}): {err}"));
        let stdout = Capture::spawn(child.stdout.take().expect("stdout is piped"));
        let stderr = Capture::spawn(child.stderr.take().expect("stderr is piped"));
        let stdin = child.stdin.take();
        let process = Process {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
            status: None,
        };
        (process, stdin)
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn stdout(&self) -> &Capture {
        &self.stdout
    }

    pub(crate) fn stderr(&self) -> &Capture {
        &self.stderr
    }

    /// Sends `signal` (a name such as `TERM` or `INT`) with `kill(1)`.
    pub(crate) fn signal(&mut self, signal: &str) {
        assert!(
            self.try_status().is_none(),
            "{} exited before it could be sent SIG{signal}; stderr:\n{}",
            self.name,
            self.stderr.text()
        );
        // The child is not reaped yet, so its pid cannot have been reused.
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap_or_else(|err| panic!("cannot run kill: {err}"));
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// The exit status if the child has exited, without waiting.
    pub(crate) fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .unwrap_or_else(|err| panic!("cannot wait for {}: {err}", self.name));
        }
        self.status
    }

    /// Waits for the child to exit; `None` if it takes longer than `timeout`.
    pub(crate) fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    /// Waits for the child to exit; panics (and the child is killed) if it takes longer than
    /// `timeout`.
    pub(crate) fn wait(&mut self, timeout: Duration) -> ExitStatus {
        self.wait_timeout(timeout).unwrap_or_else(|| {
            panic!(
                "{} did not exit within {timeout:?}; stdout:\n{}\nstderr:\n{}",
                self.name,
                self.stdout.text(),
                self.stderr.text()
            )
        })
    }

    /// Waits for the child to exit and for its output pipes to close, within `timeout`.
    pub(crate) fn finish(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let status = self.wait(timeout);
        let left = deadline.saturating_duration_since(Instant::now());
        let stdout = self.stdout.until_closed(left).unwrap_or_else(|| {
            panic!(
                "{} exited but its stdout did not close within {timeout:?}",
                self.name
            )
        });
        let left = deadline.saturating_duration_since(Instant::now());
        let stderr = self.stderr.until_closed(left).unwrap_or_else(|| {
            panic!(
                "{} exited but its stderr did not close within {timeout:?}",
                self.name
            )
        });
        Finished {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `python3` interpreter, with no user site-packages or environment tweaks, so a peer script
/// sees the standard library only.
pub(crate) fn python_command(script: &Path) -> Command {
    assert!(
        script.exists(),
        "python peer script {} is missing",
        script.display()
    );
    let mut command = Command::new("python3");
    command
        .arg("-I") // isolated: no PYTHON* variables, no user site, script dir not on sys.path
        .arg("-u") // unbuffered: a result line is out even if the script is killed
        .arg(script);
    command
}

/// Compares two byte strings without printing megabytes when they differ.
#[track_caller]
pub(crate) fn assert_same_bytes(actual: &[u8], expected: &[u8], what: &str) {
    if actual != expected {
        let first = actual
            .iter()
            .zip(expected)
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| actual.len().min(expected.len()));
        panic!(
            "{what}: got {} bytes, expected {}; first difference at byte {first}",
            actual.len(),
            expected.len()
        );
    }
}

/// `len` pseudo-random bytes (xorshift64), different for each `seed`.
pub(crate) fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}
