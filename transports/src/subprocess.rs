//! Subprocess transports: asyncio's `subprocess_exec` and `subprocess_shell`.
//!
//! [`spawn`] starts a child process and a transport actor that supervises it. Each standard
//! stream the child has piped gets a [pipe transport](crate::pipe) of its own: fd 0 writes to
//! the child's stdin, fds 1 and 2 read its stdout and stderr, each with its own flow control, so
//! a child that floods one pipe while its protocol holds the `Ack` blocks on that full pipe
//! rather than growing our memory. The protocol (a
//! [`SubprocessProtocol`](switchboard_framework::SubprocessProtocol)) receives `ConnectionMade`
//! with a [`SubprocessHandle`], then `PipeDataReceived { fd, data }`, `PipeConnectionLost { fd,
//! error }` and `ProcessExited { status }`, and `ConnectionLost(None)` exactly once, last, after
//! the process exited *and* every pipe closed (see the event order of
//! [`SubprocessProtocol`](switchboard_framework::SubprocessProtocol)).
//!
//! The exit status is collected as soon as the child exits, so no zombie is left even while a
//! grandchild keeps a pipe open. A signal sent after that fails with
//! [`ProcessGone`] instead of reaching a process that took
//! the recycled pid.
//!
//! ```
//! use actix::prelude::*;
//! use switchboard_framework::prelude::*;
//! use switchboard_transports::subprocess::{self, Command};
//!
//! #[derive(Default)]
//! struct Capture {
//!     stdout: Vec<u8>,
//!     status: Option<std::process::ExitStatus>,
//!     done: Option<tokio::sync::oneshot::Sender<(Vec<u8>, std::process::ExitStatus)>>,
//! }
//! impl Actor for Capture { type Context = Context<Self>; }
//! impl Handler<ConnectionMade<SubprocessHandle>> for Capture {
//!     type Result = ();
//!     fn handle(&mut self, msg: ConnectionMade<SubprocessHandle>, _: &mut Context<Self>) {
//!         // Feed the child's stdin, then close it so the child sees its EOF.
//!         let stdin = msg.transport.pipe(subprocess::STDIN).expect("stdin is piped");
//!         stdin.write("hello\n");
//!         stdin.write_eof();
//!     }
//! }
//! impl Handler<PipeDataReceived> for Capture {
//!     type Result = ();
//!     fn handle(&mut self, msg: PipeDataReceived, _: &mut Context<Self>) {
//!         if msg.fd == 1 {
//!             self.stdout.extend_from_slice(&msg.data);
//!         }
//!     }
//! }
//! impl Handler<PipeConnectionLost> for Capture {
//!     type Result = ();
//!     fn handle(&mut self, _: PipeConnectionLost, _: &mut Context<Self>) {}
//! }
//! impl Handler<ProcessExited> for Capture {
//!     type Result = ();
//!     fn handle(&mut self, msg: ProcessExited, _: &mut Context<Self>) {
//!         self.status = Some(msg.status);
//!     }
//! }
//! impl Handler<ConnectionLost> for Capture {
//!     type Result = ();
//!     fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
//!         let result = (std::mem::take(&mut self.stdout), self.status.unwrap());
//!         let _ = self.done.take().unwrap().send(result);
//!         ctx.stop();
//!     }
//! }
//!
//! # #[actix::main]
//! # async fn main() -> std::io::Result<()> {
//! let (done, finished) = tokio::sync::oneshot::channel();
//! subprocess::spawn(Command::new("tr").args(["a-z", "A-Z"]), || {
//!     Capture { done: Some(done), ..Capture::default() }.start()
//! })?;
//! let (stdout, status) = finished.await.unwrap();
//! assert_eq!(stdout, b"HELLO\n");
//! assert!(status.success());
//! # Ok(())
//! # }
//! ```

use std::{
    ffi::OsStr,
    fmt, io,
    os::fd::RawFd,
    path::Path,
    pin::pin,
    process::{ExitStatus, Stdio},
    task::{Context as TaskContext, Poll, ready},
};

use actix::{
    Actor, ActorContext, ActorFuture, AsyncContext, Context, Handler, MessageResult, SpawnHandle,
};
use switchboard_core::SubprocessCore;
use switchboard_framework::dev::{DeliveryAcked, ProtocolWatch};
use switchboard_framework::{
    Ack, Close, ConnectionLost, ConnectionMade, ExtraInfo, GetExtraInfo, GetPid, GetPipeTransport,
    GetReturnCode, IntoSubprocessProtocol, IsClosing, Kill, PipeClosed, PipeOpened, ProcessExited,
    ProcessGone, ProcessInfo, SendSignal, SubprocessHandle, SubprocessProtocolHandle, Terminate,
    TransportHandle, keys,
};

use crate::{
    factory,
    pipe::{ReadPipe, WritePipe},
    runtime,
    stream::{StreamConfig, StreamTransport},
};

/// The child's standard input: pipe 0 is a write transport.
pub const STDIN: RawFd = 0;
/// The child's standard output: pipe 1 is a read transport.
pub const STDOUT: RawFd = 1;
/// The child's standard error: pipe 2 is a read transport.
pub const STDERR: RawFd = 2;

/// A program to run under a subprocess transport: a [`std::process::Command`] whose standard
/// streams default to piped (asyncio's `PIPE`), not inherited.
///
/// ```
/// use std::process::Stdio;
/// use switchboard_transports::subprocess::Command;
///
/// let command = Command::new("grep")
///     .args(["-c", "needle"])
///     .env("LC_ALL", "C")
///     .stderr(Stdio::inherit());
/// let shell = Command::shell("ls | wc -l"); // sh -c 'ls | wc -l'
/// # let _ = (command, shell);
/// ```
pub struct Command {
    command: std::process::Command,
    stdin: Option<Stdio>,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
    stderr_to_stdout: bool,
    pipe_config: StreamConfig,
}

impl Command {
    /// Runs `program`, found in `PATH` as `execvp` finds it (asyncio's `subprocess_exec`).
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command::from(std::process::Command::new(program))
    }

    /// Runs `command` with `/bin/sh -c` (asyncio's `subprocess_shell`).
    pub fn shell(command: impl AsRef<OsStr>) -> Command {
        let mut sh = std::process::Command::new("/bin/sh");
        sh.arg("-c").arg(command);
        Command::from(sh)
    }

    /// Adds an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Command {
        self.command.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, args: I) -> Command {
        self.command.args(args);
        self
    }

    /// Sets an environment variable of the child.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Command {
        self.command.env(key, value);
        self
    }

    /// Removes an environment variable from the child's environment.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Command {
        self.command.env_remove(key);
        self
    }

    /// Starts the child with an empty environment.
    pub fn env_clear(mut self) -> Command {
        self.command.env_clear();
        self
    }

    /// Sets the child's working directory.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Command {
        self.command.current_dir(dir);
        self
    }

    /// What the child's stdin is: `Stdio::piped()` (the default) gives pipe 0, a write
    /// transport; `Stdio::inherit()`, `Stdio::null()` or a file give no pipe.
    pub fn stdin(mut self, stdio: impl Into<Stdio>) -> Command {
        self.stdin = Some(stdio.into());
        self
    }

    /// What the child's stdout is; piped by default (pipe 1, a read transport).
    pub fn stdout(mut self, stdio: impl Into<Stdio>) -> Command {
        self.stdout = Some(stdio.into());
        self
    }

    /// What the child's stderr is; piped by default (pipe 2, a read transport).
    pub fn stderr(mut self, stdio: impl Into<Stdio>) -> Command {
        self.stderr = Some(stdio.into());
        self
    }

    /// Sends the child's stderr into its stdout pipe (asyncio's `stderr=STDOUT`): both arrive
    /// as fd 1, in the order the child wrote them, and there is no pipe 2. Overrides
    /// [`stderr`](Self::stderr); [`stdout`](Self::stdout) must be left unset, since this makes
    /// the stdout pipe itself.
    pub fn stderr_to_stdout(mut self) -> Command {
        self.stderr_to_stdout = true;
        self
    }

    /// The settings of the pipe transports (read-buffer limit, write-buffer limits, ...);
    /// [`StreamConfig::for_pipes`] by default, with no write stall timeout.
    pub fn pipe_config(mut self, config: StreamConfig) -> Command {
        self.pipe_config = config;
        self
    }

    /// The `std::process::Command` inside, for what this type does not wrap
    /// (`std::os::unix::process::CommandExt`: `process_group`, `uid`, `arg0`, ...). Its stdio
    /// settings are replaced by this type's.
    pub fn std_mut(&mut self) -> &mut std::process::Command {
        &mut self.command
    }
}

impl From<std::process::Command> for Command {
    /// Wraps a command; its standard streams become piped unless set on the result.
    fn from(command: std::process::Command) -> Command {
        Command {
            command,
            stdin: None,
            stdout: None,
            stderr: None,
            stderr_to_stdout: false,
            pipe_config: StreamConfig::for_pipes(),
        }
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("command", &self.command)
            .finish_non_exhaustive()
    }
}

/// Spawns `command` under a subprocess transport on the current arbiter, and attaches the
/// protocol `protocol` makes. Returns the transport's handle and the protocol's address.
///
/// Fails, with no protocol made and no process left, when the program cannot be started (not
/// found, not executable) or a pipe cannot be set up. The protocol is made once the child runs;
/// a `protocol` that panics kills the child and returns a
/// [`FactoryPanicked`](switchboard_framework::FactoryPanicked) error. Call it inside an actix
/// system.
pub fn spawn<P: IntoSubprocessProtocol>(
    command: Command,
    protocol: impl FnOnce() -> P,
) -> io::Result<(SubprocessHandle, P::Output)> {
    runtime::require_arbiter("subprocess::spawn")?;
    let Command {
        command,
        stdin,
        stdout,
        stderr,
        stderr_to_stdout,
        pipe_config,
    } = command;
    let mut command = tokio::process::Command::from(command);
    command
        .stdin(stdin.unwrap_or_else(Stdio::piped))
        // A transport dropped without closing (its system stopped) still kills its child.
        .kill_on_drop(true);
    // With stderr merged, the pipe is ours: both of the child's streams write to its one end.
    let merged = if stderr_to_stdout {
        if stdout.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "stderr_to_stdout makes the stdout pipe itself: leave stdout unset",
            ));
        }
        let (reader, writer) = std::io::pipe()?;
        command.stdout(writer.try_clone()?).stderr(writer);
        Some(reader)
    } else {
        command
            .stdout(stdout.unwrap_or_else(Stdio::piped))
            .stderr(stderr.unwrap_or_else(Stdio::piped));
        None
    };
    let spawned = command.spawn();
    // Our copies of the merged pipe's write end go with the command: only the child's are left,
    // so the pipe reaches its EOF when the child (and its children) close theirs.
    drop(command);
    let mut child = spawned?;
    let pid = child.id().expect("a child that was just spawned has a pid");
    let pipes = child_pipes(&mut child).and_then(|mut pipes| {
        if let Some(reader) = merged {
            pipes.stdout = Some(ReadPipe::new(reader)?);
        }
        Ok(pipes)
    });
    let made = pipes.and_then(|pipes| Ok((pipes, factory::make(protocol)?)));
    let (pipes, protocol) = match made {
        Ok(made) => made,
        Err(err) => {
            // tokio kills and reaps a dropped child.
            drop(child);
            return Err(err);
        }
    };
    Ok(SubprocessTransportActor::start(
        child,
        pid,
        pipes,
        pipe_config,
        protocol,
    ))
}

/// Runs `program` with `args`, every standard stream piped (asyncio's `subprocess_exec`).
pub fn exec<P: IntoSubprocessProtocol>(
    program: impl AsRef<OsStr>,
    args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    protocol: impl FnOnce() -> P,
) -> io::Result<(SubprocessHandle, P::Output)> {
    spawn(Command::new(program).args(args), protocol)
}

/// Runs `command` with `/bin/sh -c`, every standard stream piped (asyncio's
/// `subprocess_shell`).
pub fn shell<P: IntoSubprocessProtocol>(
    command: impl AsRef<OsStr>,
    protocol: impl FnOnce() -> P,
) -> io::Result<(SubprocessHandle, P::Output)> {
    spawn(Command::shell(command), protocol)
}

/// The child's piped streams, as pipe I/O objects: stdin, stdout, stderr.
struct ChildPipes {
    stdin: Option<WritePipe>,
    stdout: Option<ReadPipe>,
    stderr: Option<ReadPipe>,
}

fn child_pipes(child: &mut tokio::process::Child) -> io::Result<ChildPipes> {
    // tokio's own stdio types cannot tell when the child closed its stdin; the pipe types can.
    let stdin = child.stdin.take().map(|s| s.into_owned_fd()).transpose()?;
    let stdout = child.stdout.take().map(|s| s.into_owned_fd()).transpose()?;
    let stderr = child.stderr.take().map(|s| s.into_owned_fd()).transpose()?;
    Ok(ChildPipes {
        stdin: stdin.map(WritePipe::new).transpose()?,
        stdout: stdout.map(ReadPipe::new).transpose()?,
        stderr: stderr.map(ReadPipe::new).transpose()?,
    })
}

/// The subprocess-transport actor: supervises one child and its pipe transports, as its
/// [`SubprocessCore`] decides (the pipes' `ConnectionMade` acknowledgements held until the
/// protocol's, the exit once, the end once the child exited and every pipe closed). Addressed
/// through a [`SubprocessHandle`].
pub struct SubprocessTransportActor {
    child: tokio::process::Child,
    me: SubprocessHandle,
    protocol: ProtocolWatch<SubprocessProtocolHandle>,
    /// The transports of pipes 0, 1 and 2.
    pipes: [Option<TransportHandle>; 3],
    core: SubprocessCore<Ack>,
    exit_watch: Option<SpawnHandle>,
}

impl SubprocessTransportActor {
    fn start<P: IntoSubprocessProtocol>(
        child: tokio::process::Child,
        pid: u32,
        pipes: ChildPipes,
        config: StreamConfig,
        protocol: P,
    ) -> (SubprocessHandle, P::Output) {
        let ctx = crate::driver::unbounded_context();
        let addr = ctx.address();
        let (output, protocol) = protocol.into_subprocess_protocol();
        let me = SubprocessHandle::new(addr.clone(), pid);
        // `ConnectionMade` is queued to the protocol before any pipe transport exists, so it
        // comes first whatever a pipe does (a caller may close one at once). The protocol
        // handles it only after this function returned, with the pipes attached to the handle.
        protocol.connection_made(ConnectionMade::new(
            me.clone(),
            Ack::to(addr.clone().recipient(), 0),
        ));
        // None of the pipes reads before the protocol acknowledged `ConnectionMade`: each one's
        // own `ConnectionMade` acknowledgement comes here (`PipeOpened`) and is held until then.
        let route =
            |fd| protocol.pipe_protocol(fd, addr.clone().recipient(), addr.clone().recipient());
        let stdin = pipes
            .stdin
            .map(|io| StreamTransport::start(io, config.clone(), route(STDIN), None).0);
        let stdout = pipes
            .stdout
            .map(|io| StreamTransport::start(io, config.clone(), route(STDOUT), None).0);
        let stderr = pipes
            .stderr
            .map(|io| StreamTransport::start(io, config, route(STDERR), None).0);
        let transports = [stdin, stdout, stderr];
        me.attach_pipes(transports.clone());
        let actor = SubprocessTransportActor {
            child,
            me: me.clone(),
            protocol: ProtocolWatch::new(protocol),
            core: SubprocessCore::new(transports.each_ref().map(Option::is_some)),
            pipes: transports,
            exit_watch: None,
        };
        ctx.run(actor);
        (me, output)
    }

    fn pid(&self) -> u32 {
        self.me.pid()
    }

    fn pipe_slot(&self, fd: RawFd) -> Option<&TransportHandle> {
        usize::try_from(fd)
            .ok()
            .and_then(|fd| self.pipes.get(fd))
            .and_then(Option::as_ref)
    }

    /// Records the exit status and tells the protocol, once.
    fn exited(&mut self, status: ExitStatus, ctx: &mut Context<Self>) {
        if !self.core.handle_exited(status) {
            return;
        }
        tracing::debug!(pid = self.pid(), %status, "child exited");
        self.me.record_exit(status);
        if let Some(watch) = self.exit_watch.take() {
            ctx.cancel_future(watch);
        }
        self.protocol
            .protocol()
            .process_exited(ProcessExited::new(status));
        self.try_finish(ctx);
    }

    /// Stops once the process exited and every pipe closed; `stopped` sends `ConnectionLost`.
    fn try_finish(&mut self, ctx: &mut Context<Self>) {
        if self.core.take_release() {
            ctx.stop();
        }
    }

    fn signal(&mut self, signal: rustix::process::Signal) -> io::Result<()> {
        // Collected already: the pid may be another process's by now.
        if self.core.is_collected() {
            return Err(ProcessGone.into());
        }
        let pid = i32::try_from(self.pid())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "pid out of range"))?;
        // Not collected yet, so the pid is still ours: a child that exited stays a zombie
        // until collected, and kill(2) on a zombie succeeds.
        rustix::process::kill_process(pid, signal).map_err(io::Error::from)
    }

    fn close(&mut self, ctx: &mut Context<Self>) {
        let Some(closing) = self.core.close() else {
            return;
        };
        for pipe in self.pipes.iter().flatten() {
            pipe.close();
        }
        if closing.kill {
            match self.child.try_wait() {
                // Exited already: not killed, as asyncio does not kill a finished process.
                Ok(Some(status)) => self.exited(status, ctx),
                Ok(None) => {
                    if let Err(err) = self.child.start_kill() {
                        tracing::debug!(pid = self.pid(), %err, "killing the child failed");
                    }
                }
                Err(err) => tracing::debug!(pid = self.pid(), %err, "checking the child failed"),
            }
        }
    }
}

impl fmt::Debug for SubprocessTransportActor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubprocessTransportActor")
            .field("pid", &self.pid())
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

/// Waits for the child's exit inside the actor, so collecting the status and refusing signals
/// from then on happen in one step.
struct ExitWatch;

impl ActorFuture<SubprocessTransportActor> for ExitWatch {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        act: &mut SubprocessTransportActor,
        ctx: &mut Context<SubprocessTransportActor>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<()> {
        // `Child::wait` keeps its state in the child, so a fresh future per poll loses nothing.
        let status = ready!(pin!(act.child.wait()).poll(cx));
        act.exit_watch = None;
        let status = status.unwrap_or_else(|err| {
            // Someone else collected it (a SIGCHLD set to SIG_IGN, a waitpid(-1) elsewhere):
            // it is gone, with a status nobody can know now.
            tracing::warn!(pid = act.pid(), %err, "the child's exit status is lost");
            std::os::unix::process::ExitStatusExt::from_raw(255 << 8)
        });
        act.exited(status, ctx);
        Poll::Ready(())
    }
}

/// The death pact of every transport: once the protocol actor has stopped, the subprocess
/// closes: its pipes close and a running child is killed.
struct DeathPact;

impl ActorFuture<SubprocessTransportActor> for DeathPact {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        act: &mut SubprocessTransportActor,
        ctx: &mut Context<SubprocessTransportActor>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<()> {
        ready!(act.protocol.poll_gone(cx));
        if !act.core.is_closing() {
            tracing::debug!(
                pid = act.pid(),
                "protocol actor stopped: closing its subprocess"
            );
            act.close(ctx);
        }
        Poll::Ready(())
    }
}

impl Actor for SubprocessTransportActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.exit_watch = Some(ctx.spawn(ExitWatch));
        ctx.spawn(DeathPact);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        drop(self.core.stopped());
        self.protocol
            .protocol()
            .connection_lost(ConnectionLost(None));
    }
}

impl Handler<DeliveryAcked> for SubprocessTransportActor {
    type Result = ();

    fn handle(&mut self, _: DeliveryAcked, _: &mut Context<Self>) {
        // Dropping them lets the pipes deliver.
        drop(self.core.ack());
    }
}

impl Handler<PipeOpened> for SubprocessTransportActor {
    type Result = ();

    fn handle(&mut self, msg: PipeOpened, _: &mut Context<Self>) {
        // Released at once (dropped) once the protocol is attached, held until then.
        drop(self.core.pipe_opened(msg.ack));
    }
}

impl Handler<PipeClosed> for SubprocessTransportActor {
    type Result = ();

    fn handle(&mut self, msg: PipeClosed, ctx: &mut Context<Self>) {
        if let Ok(fd) = usize::try_from(msg.fd) {
            self.core.pipe_closed(fd);
        }
        self.try_finish(ctx);
    }
}

impl Handler<GetPid> for SubprocessTransportActor {
    type Result = u32;

    fn handle(&mut self, _: GetPid, _: &mut Context<Self>) -> u32 {
        self.pid()
    }
}

impl Handler<GetReturnCode> for SubprocessTransportActor {
    type Result = Option<ExitStatus>;

    fn handle(&mut self, _: GetReturnCode, _: &mut Context<Self>) -> Option<ExitStatus> {
        self.core.status()
    }
}

impl Handler<GetPipeTransport> for SubprocessTransportActor {
    type Result = Option<TransportHandle>;

    fn handle(
        &mut self,
        GetPipeTransport(fd): GetPipeTransport,
        _: &mut Context<Self>,
    ) -> Option<TransportHandle> {
        self.pipe_slot(fd).cloned()
    }
}

impl Handler<SendSignal> for SubprocessTransportActor {
    type Result = io::Result<()>;

    fn handle(&mut self, SendSignal(number): SendSignal, _: &mut Context<Self>) -> io::Result<()> {
        if number == 0 {
            // kill(2)'s existence check: a child not yet collected is there to be signalled.
            return if self.core.is_collected() {
                Err(ProcessGone.into())
            } else {
                Ok(())
            };
        }
        // rustix builds only the named signals safely; a real-time one would take `unsafe`.
        let signal = rustix::process::Signal::from_named_raw(number).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{number} is not a named signal (real-time signals are not supported)"),
            )
        })?;
        self.signal(signal)
    }
}

impl Handler<Terminate> for SubprocessTransportActor {
    type Result = io::Result<()>;

    fn handle(&mut self, _: Terminate, _: &mut Context<Self>) -> io::Result<()> {
        self.signal(rustix::process::Signal::TERM)
    }
}

impl Handler<Kill> for SubprocessTransportActor {
    type Result = io::Result<()>;

    fn handle(&mut self, _: Kill, _: &mut Context<Self>) -> io::Result<()> {
        self.signal(rustix::process::Signal::KILL)
    }
}

impl Handler<Close> for SubprocessTransportActor {
    type Result = ();

    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) {
        self.close(ctx);
    }
}

impl Handler<IsClosing> for SubprocessTransportActor {
    type Result = bool;

    fn handle(&mut self, _: IsClosing, _: &mut Context<Self>) -> bool {
        self.core.is_closing()
    }
}

impl Handler<GetExtraInfo> for SubprocessTransportActor {
    type Result = MessageResult<GetExtraInfo>;

    fn handle(&mut self, msg: GetExtraInfo, _: &mut Context<Self>) -> Self::Result {
        let value = (msg.name == keys::SUBPROCESS)
            .then(|| ExtraInfo::Subprocess(ProcessInfo::new(self.pid())));
        MessageResult(value.or(msg.default))
    }
}
