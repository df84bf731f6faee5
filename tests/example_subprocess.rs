//! The subprocess example runs as a process, with programs under it, to check from the outside
//! what its docs promise:
//!
//! - `echo hello | subprocess tr a-z A-Z` prints `HELLO`; 8 MiB go through stdin and stdout
//!   byte-exact; the child's stderr comes out on stderr; arguments that start with `-` reach the
//!   child;
//! - it exits with the child's exit code, or 128 + N when signal N killed it, only once the
//!   child and every process holding its pipes are done; 127 and a message when the program is
//!   not found, 126 when it cannot be run, 2 on a usage error;
//! - a stdin or stdout that is `/dev/null` or a regular file is inherited by the child;
//! - flow control: a child that does not read its stdin stops the example reading its own, and a
//!   reader that does not read the example's stdout stops the child, with the example's memory
//!   bounded; a reader that goes away ends the child as in a pipeline (`SIGPIPE`);
//! - the pipes it was given are left in blocking mode, as it found them.
//!
//! Every wait is bounded, and every process started here is killed if its test fails.

#[path = "support/process.rs"]
mod process;

use std::{
    ffi::OsStr,
    fs,
    io::{self, Read, Write},
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::{fs::PermissionsExt, process::ExitStatusExt},
    },
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
    thread,
    time::{Duration, Instant},
};

use process::{
    Finished, Process, TIMEOUT, assert_same_bytes, child_program, example_command, pseudo_random,
};

const MIB: usize = 1024 * 1024;

/// How long a count must stay the same before a test takes it as settled: the writer or the
/// child is blocked on a full pipe.
const SETTLE: Duration = Duration::from_millis(500);

/// The example with `program` and its arguments.
fn subprocess<S: AsRef<OsStr>>(program_and_args: &[S]) -> Command {
    let mut command = example_command("subprocess", "warn");
    command.args(program_and_args);
    command
}

/// The example running `sb-child` with `args`.
fn subprocess_child(args: &[&str]) -> Command {
    let mut command = subprocess(&[child_program()]);
    command.args(args);
    command
}

/// Runs `command` to completion with `input` on its stdin.
fn run_with_input(command: Command, input: &[u8]) -> Finished {
    Process::spawn_with_input("subprocess", command, input.to_vec()).finish(TIMEOUT)
}

/// Runs `command` to completion with `/dev/null` as its stdin.
fn run(command: Command) -> Finished {
    Process::spawn("subprocess", command).finish(TIMEOUT)
}

#[track_caller]
fn assert_exit_code(finished: &Finished, code: i32) {
    assert_eq!(
        finished.status.code(),
        Some(code),
        "exit status ({}); stdout:\n{}\nstderr:\n{}",
        finished.status,
        finished.stdout_text(),
        finished.stderr_text()
    );
}

/// A process started with stdio the test chose, killed and reaped if the test fails first.
struct Bounded {
    child: Child,
}

impl Bounded {
    fn spawn(mut command: Command) -> Bounded {
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {command:?}: {err}"));
        Bounded { child }
    }

    /// Waits for the exit; panics (and the process is killed) after [`TIMEOUT`].
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the example did not exit within {TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Bounded {
    /// What it wrote to its piped stdout, once it has exited (a few bytes, which the pipe held).
    fn stdout(&mut self) -> String {
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .expect("stdout is piped")
            .read_to_string(&mut stdout)
            .expect("read stdout");
        stdout
    }
}

impl Drop for Bounded {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `count()` has stayed the same for [`SETTLE`], and returns it; panics after
/// [`TIMEOUT`].
fn settled(what: &str, mut count: impl FnMut() -> usize) -> usize {
    let deadline = Instant::now() + TIMEOUT;
    let mut last = count();
    let mut since = Instant::now();
    loop {
        thread::sleep(Duration::from_millis(20));
        let now = count();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= SETTLE {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never settled within {TIMEOUT:?} (last {last})"
        );
    }
}

/// Whether the open file description behind `fd` (of this process) is in non-blocking mode,
/// from `/proc/self/fdinfo`.
fn is_nonblocking(fd: &impl AsRawFd) -> bool {
    const O_NONBLOCK: u32 = 0o4000;
    let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    let info = fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"));
    let flags = info
        .lines()
        .find_map(|line| line.strip_prefix("flags:"))
        .and_then(|flags| u32::from_str_radix(flags.trim(), 8).ok())
        .unwrap_or_else(|| panic!("no flags in {path}:\n{info}"));
    flags & O_NONBLOCK != 0
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> usize {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rss| rss.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

// ---------------------------------------------------------------------------------------------
// What it prints

/// The docs' own example, with the system's `tr`.
#[test]
fn echo_hello_through_tr_prints_hello() {
    let finished = run_with_input(subprocess(&["tr", "a-z", "A-Z"]), b"hello\n");
    assert_exit_code(&finished, 0);
    assert_eq!(finished.stdout_text(), "HELLO\n");
    assert_eq!(finished.stderr_text(), "", "nothing on stderr");
}

#[test]
fn eight_mebibytes_go_through_stdin_and_stdout_byte_exact() {
    let input = pseudo_random(8 * MIB, 1);
    let finished = run_with_input(subprocess_child(&["cat"]), &input);
    assert_exit_code(&finished, 0);
    assert_same_bytes(&finished.stdout, &input, "stdout");
    assert_eq!(finished.stderr_text(), "", "nothing on stderr");
}

#[test]
fn the_childs_stderr_goes_to_stderr_and_its_stdout_to_stdout() {
    let finished = run(subprocess_child(&["interleave", "200"]));
    assert_exit_code(&finished, 0);
    let expected =
        |stream: &str| -> String { (0..200).map(|i| format!("{stream} {i}\n")).collect() };
    assert_eq!(finished.stdout_text(), expected("out"));
    assert_eq!(finished.stderr_text(), expected("err"));
}

#[test]
fn arguments_starting_with_a_dash_reach_the_child() {
    let script = r#"printf '%s|' "$@""#;
    let finished = run(subprocess(&[
        "sh", "-c", script, "sh", "-n", "--foo", "--", "-",
    ]));
    assert_exit_code(&finished, 0);
    assert_eq!(finished.stdout_text(), "-n|--foo|--|-|");
}

// ---------------------------------------------------------------------------------------------
// Exit status

#[test]
fn exits_with_the_childs_exit_code() {
    let finished = run(subprocess(&["sh", "-c", "exit 7"]));
    assert_exit_code(&finished, 7);
    assert_eq!(finished.stdout_text(), "");
    assert_eq!(finished.stderr_text(), "");
}

#[test]
fn a_child_killed_by_a_signal_gives_128_plus_its_number() {
    let finished = run(subprocess(&["sh", "-c", "kill -TERM $$"]));
    assert_exit_code(&finished, 128 + 15);
    assert_eq!(finished.stderr_text(), "");
}

/// The child exits at once, but a grandchild keeps its stdout open and writes later: the
/// example waits for it (`ConnectionLost` comes after every pipe closed), and nothing is lost.
#[test]
fn output_written_after_the_childs_exit_by_a_grandchild_is_forwarded() {
    let finished = run(subprocess_child(&["grandchild", "300"]));
    assert_exit_code(&finished, 0);
    assert_eq!(finished.stdout_text(), "released\n");
}

#[test]
fn a_missing_program_exits_127_with_a_message() {
    let finished = run(subprocess(&["sb-no-such-program"]));
    assert_exit_code(&finished, 127);
    assert_eq!(finished.stdout_text(), "");
    let stderr = finished.stderr_text();
    assert!(
        stderr.contains("cannot run sb-no-such-program") && stderr.contains("No such file"),
        "stderr: {stderr}"
    );
}

#[test]
fn a_program_that_is_not_executable_exits_126() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let script = dir.path().join("not-executable");
    fs::write(&script, "#!/bin/sh\necho ran\n").expect("write the script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o644)).expect("chmod");
    let finished = run(subprocess(&[&script]));
    assert_exit_code(&finished, 126);
    assert_eq!(finished.stdout_text(), "");
    assert!(
        finished.stderr_text().contains("cannot run"),
        "stderr: {}",
        finished.stderr_text()
    );
}

#[test]
fn no_program_is_a_usage_error() {
    let finished = run(subprocess::<&str>(&[]));
    assert_exit_code(&finished, 2);
    assert_eq!(finished.stdout_text(), "");
    assert!(
        finished.stderr_text().contains("Usage:"),
        "stderr: {}",
        finished.stderr_text()
    );
}

// ---------------------------------------------------------------------------------------------
// What is inherited

/// `/dev/null` cannot be watched for readiness: the child gets it as its stdin, and reads EOF.
#[test]
fn stdin_from_dev_null_is_inherited_and_the_child_reads_eof() {
    let finished = run(subprocess(&[
        "sh",
        "-c",
        "readlink /proc/$$/fd/0; cat; echo end",
    ]));
    assert_exit_code(&finished, 0);
    assert_eq!(finished.stdout_text(), "/dev/null\nend\n");
}

#[test]
fn a_regular_file_as_stdin_is_inherited() {
    let mut file = tempfile::NamedTempFile::new().expect("a temporary file");
    file.write_all(b"from a file\n").expect("write");
    let mut command = subprocess(&["sh", "-c", "readlink /proc/$$/fd/0; cat"]);
    command
        .stdin(fs::File::open(file.path()).expect("open"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut example = Bounded::spawn(command);
    assert_eq!(example.wait().code(), Some(0));
    let expected = format!("{}\nfrom a file\n", file.path().display());
    assert_eq!(example.stdout(), expected);
}

#[test]
fn a_regular_file_as_stdout_is_inherited() {
    let file = tempfile::NamedTempFile::new().expect("a temporary file");
    let mut command = subprocess(&["sh", "-c", "readlink /proc/$$/fd/1; echo written"]);
    command
        .stdin(Stdio::null())
        .stdout(file.reopen().expect("reopen"))
        .stderr(Stdio::null());
    let status = Bounded::spawn(command).wait();
    assert_eq!(status.code(), Some(0));
    let expected = format!("{}\nwritten\n", file.path().display());
    assert_eq!(fs::read_to_string(file.path()).expect("read"), expected);
}

// ---------------------------------------------------------------------------------------------
// Flow control and pipes

/// `sb-child hold` does not read its stdin. The example stops reading its own once the
/// child's stdin pipe is over its high-water mark, so our writer blocks after a bounded amount
/// instead of pouring all 64 MiB into the example's memory.
#[test]
fn a_child_that_does_not_read_stops_the_example_reading_its_stdin() {
    const CAP: usize = 64 * MIB;
    let mut command = subprocess_child(&["hold", "3000"]);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut example = Bounded::spawn(command);
    let mut stdin = example.child.stdin.take().expect("piped");
    let written = Arc::new(AtomicUsize::new(0));
    let writer = thread::spawn({
        let written = written.clone();
        move || {
            let chunk = vec![b'x'; 64 * 1024];
            while written.load(SeqCst) < CAP {
                // Fails once the example has exited.
                if stdin.write_all(&chunk).is_err() {
                    return;
                }
                written.fetch_add(chunk.len(), SeqCst);
            }
        }
    });

    let accepted = settled("the bytes written to the example's stdin", || {
        written.load(SeqCst)
    });
    assert!(
        accepted < 4 * MIB,
        "the example took {accepted} bytes of stdin from us while its child read none"
    );

    let status = example.wait();
    assert_eq!(status.code(), Some(0), "the child exits 0 after its hold");
    assert_eq!(example.stdout(), "released\n");
    writer.join().expect("the writer thread");
}

/// `sb-child flood` writes 64 MiB while nobody reads the example's stdout: the child blocks on
/// its full pipe instead of the example buffering its output. Read at last, all of it arrives.
#[test]
fn a_reader_that_does_not_read_stops_the_child_and_bounds_the_examples_memory() {
    const TOTAL: usize = 64 * MIB;
    let (mut reader, writer) = io::pipe().expect("a pipe");
    let mut command = subprocess_child(&["flood", &TOTAL.to_string()]);
    command
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped());
    // `spawn` drops the command, and our copy of the write end with it: the reader sees EOF
    // once the example is done.
    let mut example = Bounded::spawn(command);
    let pid = example.child.id();

    let rss = settled("the example's memory", || rss_kib(pid));
    assert!(
        rss < 48 * 1024,
        "the example grew to {rss} KiB while nobody read its stdout"
    );

    let mut received = 0;
    let mut chunk = vec![0; 256 * 1024];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                assert!(chunk[..n].iter().all(|&byte| byte == b'x'));
                received += n;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => panic!("reading the example's stdout: {err}"),
        }
    }
    assert_eq!(received, TOTAL);
    assert_eq!(example.wait().code(), Some(0));
}

/// The reader of the example's stdout is gone: the example closes the child's stdout pipe, and
/// the child dies of `SIGPIPE` at its next write, as in a shell pipeline, rather than writing
/// its 64 MiB for nobody.
#[test]
fn a_reader_that_goes_away_ends_the_child_with_sigpipe() {
    let (reader, writer) = io::pipe().expect("a pipe");
    drop(reader);
    let mut command = subprocess(&["head", "-c", "67108864", "/dev/zero"]);
    command
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped());
    let mut example = Bounded::spawn(command);
    let status = example.wait();
    assert_eq!(status.code(), Some(128 + 13), "{status}");
    assert_eq!(status.signal(), None, "the example itself exits normally");
}

/// The pipes it was given as stdin, stdout and stderr are set non-blocking while transports
/// use them; they are all blocking again once it has exited. A terminal shares one open file
/// description with the shell, which would otherwise be left non-blocking.
#[test]
fn its_stdin_stdout_and_stderr_are_left_blocking() {
    let (stdin_reader, mut stdin_writer) = io::pipe().expect("a pipe");
    let (mut stdout_reader, stdout_writer) = io::pipe().expect("a pipe");
    let (mut stderr_reader, stderr_writer) = io::pipe().expect("a pipe");
    // Copies of the example's ends: the same open file descriptions, whose flags it changes.
    let probes: [OwnedFd; 3] = [
        stdin_reader.try_clone().expect("dup").into(),
        stdout_writer.try_clone().expect("dup").into(),
        stderr_writer.try_clone().expect("dup").into(),
    ];

    let mut command = subprocess(&["sh", "-c", "cat; echo err >&2"]);
    command
        .stdin(stdin_reader)
        .stdout(stdout_writer)
        .stderr(stderr_writer);
    let mut example = Bounded::spawn(command);
    stdin_writer.write_all(b"in\n").expect("write");
    drop(stdin_writer);
    // Its output is a few bytes: the pipes hold it until the exit.
    let status = example.wait();
    assert_eq!(status.code(), Some(0));
    for (name, probe) in ["stdin", "stdout", "stderr"].iter().zip(&probes) {
        assert!(
            !is_nonblocking(probe),
            "the example left its {name} non-blocking"
        );
    }
    drop(probes);
    let mut out = String::new();
    stdout_reader.read_to_string(&mut out).expect("read");
    let mut err = String::new();
    stderr_reader.read_to_string(&mut err).expect("read");
    assert_eq!((out.as_str(), err.as_str()), ("in\n", "err\n"));
}
