//! Runs a program under a subprocess transport, wired to this process's own stdin, stdout and
//! stderr, and exits with the program's exit status: a small `exec` whose three streams go
//! through actors.
//!
//! ```text
//! echo hello | cargo run --example subprocess -- tr a-z A-Z          # HELLO
//! cargo run --example subprocess -- sh -c 'echo out; echo err >&2; exit 3'; echo $?
//! cargo run --example subprocess -- cat < big.file | wc -c
//! ```
//!
//! Each of our standard streams goes one of two ways:
//!
//! - **Pipes, FIFOs, sockets and terminals get a pipe transport.** Our stdin is read by a
//!   read-pipe transport (`pipe::connect_read`, on a duplicate of fd 0), whose protocol writes
//!   what it reads to the child's stdin, the write transport of pipe 0. When that pipe's write
//!   buffer goes over its high-water mark, the runner hears `PauseWriting` and pauses reading our
//!   stdin, and resumes it at `ResumeWriting`: a child that reads slowly slows our reading down,
//!   and our memory stays bounded. Our stdin's EOF becomes the child's (`WriteEof` on pipe 0).
//!   Our stdout and stderr are written by write-pipe transports (`pipe::connect_write`, on
//!   duplicates of fds 1 and 2). The runner keeps each `PipeDataReceived`'s `Ack` until our pipe
//!   has taken the bytes (`write_acked`), so a slow reader of our output slows the child down:
//!   the child's pipe fills and its writes block, as in a shell pipeline.
//! - **Anything else is inherited.** A regular file (`< file`, `> file`), `/dev/null` or a closed
//!   descriptor cannot be watched for readiness, and the pipe transports refuse it. The child
//!   gets such a stream as its own, as a shell would hand it over, and uses it directly.
//!
//! No blocking write is made from an actor: everything the child writes reaches our output
//! through a transport, or goes straight to an inherited file.
//!
//! It exits once the child has exited and everything it wrote has been handed on, with the
//! child's exit code, or 128 + N when signal N killed it, as shells report it. When the reader
//! of our stdout or stderr goes away (`| head -1`), the child's pipe is closed too, so the
//! child's next write fails as it would in a pipeline (most programs then die of `SIGPIPE`).
//! Exit status 2 is a usage error, 127 a program that was not found and 126 one that could not
//! be started, as in shells.
//!
//! The child's stdout and stderr are forwarded each in order, but independently of each
//! other: which of two lines written to both comes out first is not kept, as with any program
//! that reads both through pipes.

use std::{
    ffi::OsString,
    io,
    os::{
        fd::{AsFd, RawFd},
        unix::process::ExitStatusExt,
    },
    process::{ExitCode, ExitStatus, Stdio},
};

use actix::prelude::*;
use clap::Parser;
use switchboard::{
    pipe,
    prelude::*,
    subprocess::{self, Command, STDERR, STDIN, STDOUT},
};
use tokio::sync::oneshot;

#[derive(Debug, Parser)]
#[command(
    about = "Runs a program under a subprocess transport, wired to our stdin, stdout and stderr"
)]
struct Args {
    /// The program to run, found in PATH.
    #[arg(value_name = "PROGRAM")]
    program: OsString,
    /// Its arguments, passed on as they are, including those that start with `-`.
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    args: Vec<OsString>,
}

/// Our exit status when the child could not be started because its program was not found.
const NOT_FOUND: u8 = 127;
/// Our exit status when the child could not be started for another reason (not executable).
const CANNOT_RUN: u8 = 126;
/// Our exit status when something went wrong on our side after the child started.
const INTERNAL_ERROR: u8 = 125;

// ---------------------------------------------------------------------------------------------
// Our own standard streams.
// ---------------------------------------------------------------------------------------------

/// One of our own standard streams, under a pipe transport.
struct OwnStream<P: Protocol> {
    transport: TransportHandle,
    /// Its protocol's actor.
    protocol: Addr<ProtocolActor<P>>,
    /// Resolves once the transport has ended (its protocol received `ConnectionLost`).
    ended: oneshot::Receiver<()>,
}

// ANCHOR: own_streams
/// Our stdin under a read-pipe transport, or `None` when it is something a pipe transport
/// refuses: then the child inherits it.
fn read_own_stdin() -> Option<OwnStream<StdinRelay>> {
    // A duplicate, so that the transport owns what it closes, and fd 0 stays ours.
    let fd = io::stdin().as_fd().try_clone_to_owned().ok()?;
    let (ended_tx, ended) = oneshot::channel();
    match pipe::connect_read(fd, || StdinRelay::new(ended_tx)) {
        Ok((transport, protocol)) => Some(OwnStream {
            transport,
            protocol,
            ended,
        }),
        // `InvalidInput`: a regular file, a directory, or a descriptor epoll refuses (`/dev/null`).
        Err(err) => {
            tracing::debug!(%err, "the child inherits our stdin");
            None
        }
    }
}

/// Our stdout or stderr under a write-pipe transport, or `None` when it is something a pipe
/// transport refuses: then the child inherits it.
fn write_own(stream: impl AsFd, name: &str) -> Option<OwnStream<OutputEnd>> {
    let fd = stream.as_fd().try_clone_to_owned().ok()?;
    let (ended_tx, ended) = oneshot::channel();
    match pipe::connect_write(fd, || OutputEnd::new(ended_tx)) {
        Ok((transport, protocol)) => Some(OwnStream {
            transport,
            protocol,
            ended,
        }),
        Err(err) => {
            tracing::debug!(%err, "the child inherits our {name}");
            None
        }
    }
}
// ANCHOR_END: own_streams

// ANCHOR: relay
/// The protocol of our stdin's transport: writes what it reads to the child's stdin, and our
/// stdin's end to the child's as `WriteEof`. It reads nothing until the runner has told it
/// where the child's stdin is.
struct StdinRelay {
    /// Pipe 0: the child's stdin.
    child_stdin: Option<TransportHandle>,
    ended: Option<oneshot::Sender<()>>,
}

/// From the runner: the child's stdin, where the relay writes from now on.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Attach(TransportHandle);

impl StdinRelay {
    fn new(ended: oneshot::Sender<()>) -> Self {
        StdinRelay {
            child_stdin: None,
            ended: Some(ended),
        }
    }

    /// The child's stdin, while it is open.
    fn child_stdin(&self) -> Option<&TransportHandle> {
        self.child_stdin.as_ref().filter(|stdin| stdin.is_alive())
    }
}

impl Protocol for StdinRelay {
    type Codec = Raw;

    fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
        // The transport reads nothing before this returns: not one byte is read before there
        // is somewhere to write it.
        if self.child_stdin.is_none() {
            cx.pause_reading();
        }
    }

    fn data_received(&mut self, data: Bytes, _: &mut Ctx<'_, Self>) {
        // Fire-and-forget: the child's stdin buffers it, and past its high-water mark the
        // runner pauses our stdin (see `Runner`'s `PauseWriting`).
        if let Some(child_stdin) = self.child_stdin() {
            child_stdin.write(data);
        }
    }

    /// Our stdin ended: at its EOF, on a read error, or closed once the child is done.
    fn connection_lost(&mut self, err: Option<io::Error>, _: &mut Ctx<'_, Self>) {
        if let Some(err) = err {
            tracing::warn!(%err, "reading our stdin failed: the child's stdin is closed");
        }
        // Flushes what is buffered, then closes the pipe: the child reads its EOF.
        if let Some(child_stdin) = self.child_stdin() {
            child_stdin.write_eof();
        }
        if let Some(ended) = self.ended.take() {
            let _ = ended.send(());
        }
    }
}

impl Handles<Attach> for StdinRelay {
    type Result = ();

    fn handle(&mut self, Attach(child_stdin): Attach, cx: &mut Ctx<'_, Self>) {
        self.child_stdin = Some(child_stdin);
        cx.resume_reading();
    }
}
// ANCHOR_END: relay

/// The protocol of our stdout's or stderr's transport: write-only, so it only hears the end.
struct OutputEnd {
    ended: Option<oneshot::Sender<()>>,
}

impl OutputEnd {
    fn new(ended: oneshot::Sender<()>) -> Self {
        OutputEnd { ended: Some(ended) }
    }
}

impl Protocol for OutputEnd {
    type Codec = Raw;

    /// Closed once the child is done (after a flush), or its reader went away.
    fn connection_lost(&mut self, err: Option<io::Error>, _: &mut Ctx<'_, Self>) {
        if let Some(err) = err {
            tracing::debug!(%err, "our output pipe failed");
        }
        if let Some(ended) = self.ended.take() {
            let _ = ended.send(());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The subprocess protocol.
// ---------------------------------------------------------------------------------------------

/// The subprocess protocol: forwards the child's stdout and stderr to ours, and ties the reading
/// of our stdin to the flow control of the child's.
struct Runner {
    /// Our stdin's transport and its relay; `None` when the child inherited our stdin.
    stdin: Option<(TransportHandle, Addr<ProtocolActor<StdinRelay>>)>,
    /// Our stdout's and stderr's transports; `None` where the child inherited ours.
    stdout: Option<TransportHandle>,
    stderr: Option<TransportHandle>,
    /// The child's pipes 1 and 2, once known.
    child_stdout: Option<TransportHandle>,
    child_stderr: Option<TransportHandle>,
    status: Option<ExitStatus>,
    done: Option<oneshot::Sender<Option<ExitStatus>>>,
}

impl Runner {
    /// Where the child's pipe `fd` goes: our stdout or stderr.
    fn output(&self, fd: RawFd) -> Option<&TransportHandle> {
        match fd {
            STDOUT => self.stdout.as_ref(),
            STDERR => self.stderr.as_ref(),
            _ => None,
        }
    }

    /// Pipe `fd` of the child, while it is open.
    fn child_pipe(&self, fd: RawFd) -> Option<&TransportHandle> {
        let pipe = match fd {
            STDOUT => self.child_stdout.as_ref(),
            STDERR => self.child_stderr.as_ref(),
            _ => None,
        };
        pipe.filter(|pipe| pipe.is_alive())
    }

    /// Our stdin's transport, while it is open.
    fn our_stdin(&self) -> Option<&TransportHandle> {
        let (stdin, _) = self.stdin.as_ref()?;
        Some(stdin).filter(|stdin| stdin.is_alive())
    }
}

impl Actor for Runner {
    type Context = Context<Self>;
}

// ANCHOR: connection_made
impl Handler<ConnectionMade<SubprocessHandle>> for Runner {
    type Result = ();

    fn handle(&mut self, msg: ConnectionMade<SubprocessHandle>, _: &mut Context<Self>) {
        // The child's pipes are known at once; none delivers before this handler returns.
        let process = msg.transport;
        if let (Some((_, relay)), Some(child_stdin)) = (&self.stdin, process.pipe(STDIN)) {
            relay.do_send(Attach(child_stdin));
        }
        self.child_stdout = process.pipe(STDOUT);
        self.child_stderr = process.pipe(STDERR);
    }
}
// ANCHOR_END: connection_made

// ANCHOR: stdin_flow
/// The child's stdin buffers more than its high-water mark: the child reads slower than we do.
/// Stop reading our stdin until it drained, so what waits for the child stays bounded.
impl Handler<PauseWriting> for Runner {
    type Result = ();

    fn handle(&mut self, _: PauseWriting, _: &mut Context<Self>) {
        if let Some(our_stdin) = self.our_stdin() {
            our_stdin.pause_reading();
        }
    }
}

impl Handler<ResumeWriting> for Runner {
    type Result = ();

    fn handle(&mut self, _: ResumeWriting, _: &mut Context<Self>) {
        if let Some(our_stdin) = self.our_stdin() {
            our_stdin.resume_reading();
        }
    }
}
// ANCHOR_END: stdin_flow

// ANCHOR: output
impl Handler<PipeDataReceived> for Runner {
    type Result = ();

    fn handle(&mut self, msg: PipeDataReceived, ctx: &mut Context<Self>) {
        let PipeDataReceived { fd, data, ack, .. } = msg;
        let Some(output) = self.output(fd) else {
            return;
        };
        // The pipe delivers its next chunk once `ack` is dropped: only after our own pipe has
        // taken these bytes. A slow reader of our output holds the child back.
        let written = output.write_acked(data);
        ctx.spawn(written.into_actor(self).map(move |result, runner, _| {
            ack.release();
            if let Err(err) = result {
                // Our reader went away: close the child's pipe, so its next write fails as it
                // would if it wrote to our reader itself.
                tracing::debug!(fd, %err, "our output failed: closing the child's pipe");
                if let Some(pipe) = runner.child_pipe(fd) {
                    pipe.close();
                }
            }
        }));
    }
}
// ANCHOR_END: output

// ANCHOR: lifecycle
impl Handler<PipeConnectionLost> for Runner {
    type Result = ();

    fn handle(&mut self, msg: PipeConnectionLost, _: &mut Context<Self>) {
        if let Some(err) = &msg.error {
            // A child that exits without reading all its input breaks its stdin pipe: not our
            // failure, nor an error a shell would report.
            tracing::debug!(fd = msg.fd, %err, "the child's pipe failed");
        }
        // The child's stdin is closed (our EOF went through, or the child closed it): nothing
        // more to read from ours.
        if msg.fd == STDIN
            && let Some(our_stdin) = self.our_stdin()
        {
            our_stdin.close();
        }
    }
}

impl Handler<ProcessExited> for Runner {
    type Result = ();

    /// Not the end yet: its pipes may still hold output, or be held open by a grandchild.
    fn handle(&mut self, msg: ProcessExited, _: &mut Context<Self>) {
        self.status = Some(msg.status);
    }
}

impl Handler<ConnectionLost> for Runner {
    type Result = ();

    /// The child exited and all its pipes closed, each after its last byte was handed on.
    fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
        if let Some(done) = self.done.take() {
            let _ = done.send(self.status);
        }
        ctx.stop();
    }
}
// ANCHOR_END: lifecycle

// ---------------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------------

#[actix::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    // A usage error exits 2, with the usage on stderr.
    let args = Args::parse();
    run(args).await
}

async fn run(args: Args) -> ExitCode {
    // ANCHOR: spawn
    let mut command = Command::new(&args.program).args(&args.args);
    let stdin = read_own_stdin();
    let stdout = write_own(io::stdout(), "stdout");
    let stderr = write_own(io::stderr(), "stderr");
    // Whatever has no transport, the child inherits; the rest is piped (the default).
    if stdin.is_none() {
        command = command.stdin(Stdio::inherit());
    }
    if stdout.is_none() {
        command = command.stdout(Stdio::inherit());
    }
    if stderr.is_none() {
        command = command.stderr(Stdio::inherit());
    }

    let (done, finished) = oneshot::channel();
    let runner = Runner {
        stdin: stdin
            .as_ref()
            .map(|own| (own.transport.clone(), own.protocol.clone())),
        stdout: stdout.as_ref().map(|own| own.transport.clone()),
        stderr: stderr.as_ref().map(|own| own.transport.clone()),
        child_stdout: None,
        child_stderr: None,
        status: None,
        done: Some(done),
    };
    // `with_write_flow`: the runner hears the child's stdin pipe's `PauseWriting` and
    // `ResumeWriting`.
    let spawned = subprocess::spawn(command, move || {
        SubprocessProtocolHandle::with_write_flow(runner.start())
    });
    // ANCHOR_END: spawn

    // Resolves with the exit status once the runner heard `ConnectionLost`.
    let outcome = match spawned {
        Ok(_) => match finished.await {
            Ok(Some(status)) => Ok(status),
            _ => Err((INTERNAL_ERROR, "the child's exit status was lost".into())),
        },
        Err(err) => {
            let code = if err.kind() == io::ErrorKind::NotFound {
                NOT_FOUND
            } else {
                CANNOT_RUN
            };
            let program = args.program.to_string_lossy();
            Err((code, format!("cannot run {program}: {err}")))
        }
    };

    // ANCHOR: teardown
    // Flush and close our own transports, and wait until they are gone: each one sets its
    // descriptor back to blocking mode if it found it so, and a terminal our shell shares
    // must be left as it was.
    let own = [
        stdin.map(|own| (own.transport, own.ended)),
        stdout.map(|own| (own.transport, own.ended)),
        stderr.map(|own| (own.transport, own.ended)),
    ];
    for (transport, ended) in own.into_iter().flatten() {
        if transport.is_alive() {
            transport.close();
        }
        let _ = ended.await;
    }
    // ANCHOR_END: teardown

    match outcome {
        Ok(status) => exit_code(status),
        // Printed now that our stderr is blocking again.
        Err((code, message)) => {
            eprintln!("subprocess: {message}");
            ExitCode::from(code)
        }
    }
}

// ANCHOR: exit_code
/// The exit status a shell reports for `status`: the child's exit code, or 128 + N when
/// signal N killed it.
fn exit_code(status: ExitStatus) -> ExitCode {
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .and_then(|code| u8::try_from(code).ok())
        .unwrap_or(INTERNAL_ERROR);
    ExitCode::from(code)
}
// ANCHOR_END: exit_code
