//! [`MockSubprocessTransport`]: a subprocess transport with no process, driven by the test.
//!
//! It is built as the real one is: a supervisor running the [`SubprocessCore`] every subprocess
//! transport runs (no pipe delivers before the protocol is attached, `ProcessExited` once,
//! `ConnectionLost` once after the exit *and* every pipe's close), over one stream transport per
//! pipe — here a [`MockTransport`], so a [`StreamCore`](switchboard_core::StreamCore) with a
//! scripted pipe: write-only for stdin, read-only for stdout and stderr. A pipe's flow control,
//! its data before its EOF, its refusals, are that core's, as on a real pipe. The test plays the
//! child: what it writes to stdout and stderr, its pipes closing, its exit; and reads back what
//! the protocol wrote to its stdin, the signals it sent, and every command.

use std::{
    fmt, io, mem,
    os::{fd::RawFd, unix::process::ExitStatusExt},
    process::ExitStatus,
    sync::Arc,
    time::Duration,
};

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message, fut,
};
use bytes::Bytes;
use switchboard_core::{
    SubprocessCore,
    stream::{Direction, StreamKind},
    subprocess::STANDARD_STREAMS,
};

use super::{
    DEFAULT_EVENT_TIMEOUT, MockTransport,
    mock::IDLE_TURNS,
    scripted::{Scripted, Shared},
};
use crate::dev::{DeliveryAcked, ProtocolWatch};
use crate::{
    Ack, Close, ConnectionLost, ConnectionMade, ExtraInfo, GetExtraInfo, GetPid, GetPipeTransport,
    GetReturnCode, IntoSubprocessProtocol, IsClosing, Kill, PipeClosed, PipeOpened, ProcessExited,
    ProcessGone, ProcessInfo, SendSignal, SubprocessHandle, SubprocessProtocolHandle, Terminate,
    TransportHandle, keys,
};

/// What a [`MockSubprocessTransport`] calls itself when a wait fails.
const NAME: &str = "MockSubprocessTransport";

/// `SIGTERM`, what [`Terminate`] sends (the same number on every Unix).
const SIGTERM: i32 = 15;

/// `SIGKILL`, what [`Kill`] and `Close` send (the same number on every Unix).
const SIGKILL: i32 = 9;

/// The child's stdin, stdout and stderr.
const STDIN: RawFd = 0;
const STDOUT: RawFd = 1;
const STDERR: RawFd = 2;

/// A subprocess command the protocol sent, recorded in order by a [`MockSubprocessTransport`].
///
/// Queries (`GetPid`, `GetReturnCode`, `GetPipeTransport`, `IsClosing`, `GetExtraInfo`) are
/// answered and not recorded. What the protocol sends to a pipe (a `Write` to stdin, a
/// `PauseReading` to stdout) is recorded by that pipe's [`MockTransport`]
/// ([`MockSubprocessTransport::pipe`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubprocessSent {
    /// [`SendSignal`], with its number.
    SendSignal(i32),
    /// [`Terminate`].
    Terminate,
    /// [`Kill`].
    Kill,
    /// [`Close`].
    Close,
}

impl SubprocessSent {
    /// The command's name, e.g. `"Terminate"`: for asserting on a sequence.
    pub fn name(&self) -> &'static str {
        match self {
            SubprocessSent::SendSignal(_) => "SendSignal",
            SubprocessSent::Terminate => "Terminate",
            SubprocessSent::Kill => "Kill",
            SubprocessSent::Close => "Close",
        }
    }
}

/// Builds a [`MockSubprocessTransport`]: its pid, which of its streams are piped.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `connect` is awaited"]
pub struct MockSubprocessBuilder {
    pid: u32,
    piped: [bool; STANDARD_STREAMS],
    timeout: Duration,
}

impl Default for MockSubprocessBuilder {
    fn default() -> Self {
        MockSubprocessBuilder {
            pid: 4242,
            piped: [true; STANDARD_STREAMS],
            timeout: DEFAULT_EVENT_TIMEOUT,
        }
    }
}

impl MockSubprocessBuilder {
    /// The child's process id (4242 by default).
    pub fn pid(mut self, pid: u32) -> Self {
        self.pid = pid;
        self
    }

    /// Leaves stream `fd` (0, 1 or 2) unpiped, as `Stdio::inherit()` or `Stdio::null()` do:
    /// it has no pipe transport, and the end does not wait for it. Every stream is piped by
    /// default.
    pub fn without_pipe(mut self, fd: RawFd) -> Self {
        if let Some(piped) = usize::try_from(fd)
            .ok()
            .and_then(|fd| self.piped.get_mut(fd))
        {
            *piped = false;
        }
        self
    }

    /// How long [`MockSubprocessTransport::settle`] and the waits built on it may take before
    /// they fail the test ([`DEFAULT_EVENT_TIMEOUT`] by default).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Attaches `protocol` as a real subprocess transport would: it receives
    /// `ConnectionMade<SubprocessHandle>`, no pipe delivers before its handler has returned,
    /// and this resolves once the protocol is idle, so whatever it sent from there (a write to
    /// stdin) is already recorded.
    ///
    /// Call it inside an actix `System`; the mock and its pipes run on the current arbiter.
    pub async fn connect(self, protocol: impl IntoSubprocessProtocol) -> MockSubprocessTransport {
        let mock = self.start(protocol);
        mock.settle().await;
        mock
    }

    /// Attaches `protocol` and returns at once, without waiting for `ConnectionMade` to be
    /// handled (for a protocol that keeps its acknowledgement).
    pub fn start(self, protocol: impl IntoSubprocessProtocol) -> MockSubprocessTransport {
        let (_, protocol) = protocol.into_subprocess_protocol();
        let mut ctx = Context::<MockSupervisor>::new();
        ctx.set_mailbox_capacity(0);
        let addr = ctx.address();
        let me = SubprocessHandle::new(addr.clone(), self.pid);
        // As the real supervisor: `ConnectionMade` is queued before any pipe exists, so it comes
        // first whatever a pipe does.
        protocol.connection_made(ConnectionMade::new(
            me.clone(),
            Ack::to(addr.clone().recipient(), 0),
        ));
        let pipes: [Option<MockTransport>; STANDARD_STREAMS] = std::array::from_fn(|fd| {
            let piped = self.piped[fd];
            let fd = RawFd::try_from(fd).expect("0, 1 or 2");
            piped.then(|| {
                let route =
                    protocol.pipe_protocol(fd, addr.clone().recipient(), addr.clone().recipient());
                MockTransport::builder()
                    .kind(pipe_kind(fd))
                    .timeout(self.timeout)
                    .start(route)
            })
        });
        me.attach_pipes(
            pipes
                .each_ref()
                .map(|pipe| pipe.as_ref().map(MockTransport::handle)),
        );
        let shared = Arc::new(Shared::new(State::default()));
        ctx.run(MockSupervisor {
            core: SubprocessCore::new(self.piped),
            me: me.clone(),
            protocol,
            pipes: pipes
                .each_ref()
                .map(|pipe| pipe.as_ref().map(MockTransport::handle)),
            shared: Arc::clone(&shared),
        });
        MockSubprocessTransport {
            addr,
            handle: me,
            shared,
            pipes,
            timeout: self.timeout,
        }
    }
}

/// The kind of pipe `fd` is, as the real pipe transports say: stdin writes only, and closing it
/// is its EOF; stdout and stderr read only, and have no half-close.
fn pipe_kind(fd: RawFd) -> StreamKind {
    match fd {
        STDIN => StreamKind {
            direction: Direction::WriteOnly,
            can_write_eof: true,
            drop_closes_after_eof: true,
        },
        _ => StreamKind {
            direction: Direction::ReadOnly,
            can_write_eof: false,
            drop_closes_after_eof: false,
        },
    }
}

/// A subprocess transport with no process, for unit-testing subprocess protocols.
///
/// The test plays the child: [`stdout`](Self::stdout) and [`stderr`](Self::stderr) write to its
/// pipes, [`close_pipe`](Self::close_pipe) closes one (stdout's and stderr's EOF after their
/// data; stdin's reader gone), [`exit`](Self::exit) and [`exit_by_signal`](Self::exit_by_signal)
/// end it, [`finish`](Self::finish) does both as a program that ends normally does. A `SIGKILL`
/// (from `Kill`, or from `Close` while the child runs) ends the scripted child at once, as it
/// cannot be caught; every other signal is only recorded, and the test scripts the child's
/// answer. Each pipe is a [`MockTransport`] ([`pipe`](Self::pipe)), with all its controls.
///
/// ```
/// use actix::prelude::*;
/// use switchboard_framework::prelude::*;
/// use switchboard_framework::testing::MockSubprocessTransport;
///
/// /// Asks the child for its version, and stops it once the answer came.
/// #[derive(Default)]
/// struct Version(Option<SubprocessHandle>);
///
/// impl Actor for Version {
///     type Context = Context<Self>;
/// }
///
/// impl Handler<ConnectionMade<SubprocessHandle>> for Version {
///     type Result = ();
///     fn handle(&mut self, msg: ConnectionMade<SubprocessHandle>, _: &mut Context<Self>) {
///         let stdin = msg.transport.pipe(0).expect("stdin is piped");
///         stdin.write("version\n");
///         stdin.write_eof();
///         self.0 = Some(msg.transport);
///     }
/// }
///
/// impl Handler<PipeDataReceived> for Version {
///     type Result = ();
///     fn handle(&mut self, msg: PipeDataReceived, _: &mut Context<Self>) {
///         if let (1, Some(child)) = (msg.fd, &self.0) {
///             println!("the child is at {}", String::from_utf8_lossy(&msg.data).trim());
///             child.do_send(Terminate);
///         }
///     }
/// }
///
/// impl Handler<PipeConnectionLost> for Version {
///     type Result = ();
///     fn handle(&mut self, _: PipeConnectionLost, _: &mut Context<Self>) {}
/// }
///
/// impl Handler<ProcessExited> for Version {
///     type Result = ();
///     fn handle(&mut self, _: ProcessExited, _: &mut Context<Self>) {}
/// }
///
/// impl Handler<ConnectionLost> for Version {
///     type Result = ();
///     fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
///         ctx.stop();
///     }
/// }
///
/// # switchboard_framework::testing::run(async {
/// let mock = MockSubprocessTransport::connect(Version::default().start()).await;
/// assert_eq!(mock.stdin_written(), "version\n");
/// mock.stdout("v1.2.3\n").await;
/// assert_eq!(mock.signals(), [15], "SIGTERM");
/// mock.exit_by_signal(15).await; // the child dies of it, closing its pipes
/// mock.close_pipes().await;
/// assert!(mock.is_ended());
/// # });
/// ```
#[derive(Clone)]
#[must_use = "the mock ends when every handle to it is dropped"]
pub struct MockSubprocessTransport {
    addr: Addr<MockSupervisor>,
    handle: SubprocessHandle,
    shared: Arc<Shared<State>>,
    pipes: [Option<MockTransport>; STANDARD_STREAMS],
    timeout: Duration,
}

impl MockSubprocessTransport {
    /// A mock child with pid 4242 and every stream piped.
    pub fn builder() -> MockSubprocessBuilder {
        MockSubprocessBuilder::default()
    }

    /// Attaches `protocol` to a default mock; see [`MockSubprocessBuilder::connect`].
    pub async fn connect(protocol: impl IntoSubprocessProtocol) -> MockSubprocessTransport {
        MockSubprocessTransport::builder().connect(protocol).await
    }

    /// The handle the protocol received.
    pub fn handle(&self) -> SubprocessHandle {
        self.handle.clone()
    }

    /// The mock pipe of stream `fd` (0, 1 or 2), if it is piped: a [`MockTransport`] over a
    /// write-only (0) or read-only (1, 2) stream core, attached to the protocol through its
    /// `Pipe*` events. Everything the protocol sent it is recorded there.
    pub fn pipe(&self, fd: RawFd) -> Option<&MockTransport> {
        usize::try_from(fd)
            .ok()
            .and_then(|fd| self.pipes.get(fd))
            .and_then(Option::as_ref)
    }

    // ---- what the child does ----

    /// The child writes `data` to its stdout: one `PipeDataReceived { fd: 1 }` once the pipe's
    /// previous one was acknowledged and while it is not paused. Settles.
    ///
    /// # Panics
    ///
    /// If stdout is not piped.
    pub async fn stdout(&self, data: impl Into<Bytes>) {
        self.piped(STDOUT).push(data);
        self.settle().await;
    }

    /// The child writes `data` to its stderr (fd 2); see [`stdout`](Self::stdout).
    pub async fn stderr(&self, data: impl Into<Bytes>) {
        self.piped(STDERR).push(data);
        self.settle().await;
    }

    /// The child closes its end of pipe `fd`. For stdout and stderr that is their EOF: after
    /// the data written before it, the pipe closes and the protocol receives
    /// `PipeConnectionLost { fd, error: None }`. For stdin, nobody reads it any more: it closes
    /// with `PipeConnectionLost { fd: 0, error: None }`, or with a broken-pipe error if bytes
    /// were waiting to be written, as a real write pipe does. Nothing happens to a pipe that is
    /// not piped or already closed. Settles.
    pub async fn close_pipe(&self, fd: RawFd) {
        if let Some(pipe) = self.pipe(fd) {
            if fd == STDIN {
                let queued = pipe.stats().write_buffer_size > 0;
                let err = queued.then(|| io::Error::from(io::ErrorKind::BrokenPipe));
                pipe.lose(err).await;
            } else {
                pipe.eof().await;
            }
        }
        self.settle().await;
    }

    /// The child closes every pipe ([`close_pipe`](Self::close_pipe) on 1, 2, then 0), as a
    /// child that exits does when no grandchild holds them. Settles.
    pub async fn close_pipes(&self) {
        for fd in [STDOUT, STDERR, STDIN] {
            self.close_pipe(fd).await;
        }
    }

    /// The child exits with `code`, and its status is collected: the protocol receives
    /// `ProcessExited`, whether or not its pipes have closed, and signals fail with
    /// [`ProcessGone`] from now on. `ConnectionLost` follows once every pipe has closed too.
    /// Settles; nothing happens to a child that already exited.
    pub async fn exit(&self, code: i32) {
        self.collect(ExitStatus::from_raw((code & 0xff) << 8)).await;
    }

    /// The child is killed by `signal`; see [`exit`](Self::exit).
    pub async fn exit_by_signal(&self, signal: i32) {
        self.collect(ExitStatus::from_raw(signal & 0x7f)).await;
    }

    /// The child closes its pipes and exits with `code` ([`close_pipes`](Self::close_pipes),
    /// then [`exit`](Self::exit)): the protocol receives `ConnectionLost` last. Settles.
    pub async fn finish(&self, code: i32) {
        self.close_pipes().await;
        self.exit(code).await;
    }

    /// Resolves once the protocol is idle: its `ConnectionMade` and every pipe's delivery
    /// acknowledged (or the transport ended), and nothing moving between the protocol, the
    /// pipes and the supervisor for a few scheduler turns. Fails the test after the builder's
    /// timeout, saying what it was waiting for.
    pub async fn settle(&self) {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let before = self.progress();
            self.shared
                .settle(NAME, deadline - tokio::time::Instant::now())
                .await;
            for pipe in self.pipes.iter().flatten() {
                pipe.settle().await;
            }
            for _ in 0..IDLE_TURNS {
                tokio::task::yield_now().await;
            }
            if self.progress() == before {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{NAME}: timed out after {:?} waiting for the protocol to become idle; {}",
                self.timeout,
                self.shared.lock().describe()
            );
        }
    }

    /// Waits until the transport has ended (`ConnectionLost` delivered), for an end the test
    /// did not script itself (the protocol's death); fails the test after the builder's timeout.
    pub async fn ended(&self) {
        self.shared
            .wait(NAME, self.timeout, "the transport to end", |state| {
                state.ended
            })
            .await;
    }

    // ---- what the protocol did ----

    /// Every byte the protocol wrote to the child's stdin and the pipe accepted (empty if
    /// stdin is not piped).
    pub fn stdin_written(&self) -> Bytes {
        self.pipe(STDIN)
            .map(MockTransport::written)
            .unwrap_or_default()
    }

    /// The bytes written to stdin since the last `take_stdin`.
    pub fn take_stdin(&self) -> Bytes {
        self.pipe(STDIN)
            .map(MockTransport::take_written)
            .unwrap_or_default()
    }

    /// The signals the child received, in order: `SendSignal`'s numbers, 15 for `Terminate`,
    /// 9 for `Kill` and for a `Close` while it ran. A signal refused because the child had
    /// exited is not among them, nor signal 0 (which sends nothing).
    pub fn signals(&self) -> Vec<i32> {
        self.shared.lock().signals.clone()
    }

    /// The names of every recorded command, in order: `["Terminate", "Close"]`.
    pub fn command_names(&self) -> Vec<&'static str> {
        self.shared
            .lock()
            .log
            .iter()
            .map(SubprocessSent::name)
            .collect()
    }

    /// The commands recorded since the last `take_commands`, in order.
    pub fn take_commands(&self) -> Vec<SubprocessSent> {
        let mut state = self.shared.lock();
        let to = state.log.len();
        let from = mem::replace(&mut state.log_taken, to);
        state.log[from..].to_vec()
    }

    /// The child's exit status, once it exited (what `GetReturnCode` answers).
    pub fn returncode(&self) -> Option<ExitStatus> {
        self.handle.returncode()
    }

    /// Whether the protocol sent `Close` (or died), or the transport ended.
    pub fn is_closing(&self) -> bool {
        let state = self.shared.lock();
        state.closing || state.ended
    }

    /// Whether the transport has ended: `ConnectionLost` was delivered.
    pub fn is_ended(&self) -> bool {
        self.shared.lock().ended
    }

    fn piped(&self, fd: RawFd) -> &MockTransport {
        self.pipe(fd)
            .unwrap_or_else(|| panic!("{NAME}: fd {fd} is not piped"))
    }

    async fn collect(&self, status: ExitStatus) {
        self.addr.do_send(Exit(status));
        self.settle().await;
    }

    /// Every change the supervisor and the pipes made.
    fn progress(&self) -> u64 {
        self.shared.progress()
            + self
                .pipes
                .iter()
                .flatten()
                .map(MockTransport::progress)
                .sum::<u64>()
    }
}

impl fmt::Debug for MockSubprocessTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockSubprocessTransport")
            .field("pid", &self.handle.pid())
            .field("state", &self.shared)
            .field("pipes", &self.pipes)
            .finish()
    }
}

/// What the test can see of the supervisor.
#[derive(Default)]
struct State {
    attached: bool,
    closing: bool,
    ended: bool,
    signals: Vec<i32>,
    log: Vec<SubprocessSent>,
    log_taken: usize,
}

impl Scripted for State {
    fn is_settled(&self) -> bool {
        self.attached || self.ended
    }

    fn describe(&self) -> String {
        format!(
            "ConnectionMade acknowledged: {}, closing: {}, ended: {}, signals: {:?}, commands so \
             far: {:?}",
            self.attached,
            self.closing,
            self.ended,
            self.signals,
            self.log
                .iter()
                .map(SubprocessSent::name)
                .collect::<Vec<_>>()
        )
    }
}

/// The supervisor: the subprocess core every subprocess transport runs, over a scripted child
/// and mock pipes.
struct MockSupervisor {
    core: SubprocessCore<Ack>,
    me: SubprocessHandle,
    protocol: SubprocessProtocolHandle,
    pipes: [Option<TransportHandle>; STANDARD_STREAMS],
    shared: Arc<Shared<State>>,
}

impl MockSupervisor {
    /// Records the exit status and tells the protocol, once; ends if every pipe closed too.
    fn exited(&mut self, status: ExitStatus, ctx: &mut Context<Self>) {
        if self.core.handle_exited(status) {
            self.me.record_exit(status);
            self.protocol.process_exited(ProcessExited::new(status));
        }
        self.try_finish(ctx);
    }

    fn try_finish(&mut self, ctx: &mut Context<Self>) {
        if self.core.take_release() {
            ctx.stop();
        }
        self.shared.changed();
    }

    /// Delivers `signal` to the scripted child, unless its status was collected.
    fn signal(&mut self, signal: i32, ctx: &mut Context<Self>) -> io::Result<()> {
        if self.core.is_collected() {
            return Err(ProcessGone.into());
        }
        self.shared.lock().signals.push(signal);
        if signal == SIGKILL {
            // It cannot be caught: the child dies of it.
            self.exited(ExitStatus::from_raw(SIGKILL), ctx);
        }
        self.shared.changed();
        Ok(())
    }

    fn close(&mut self, ctx: &mut Context<Self>) {
        let Some(closing) = self.core.close() else {
            return;
        };
        self.shared.lock().closing = true;
        for pipe in self.pipes.iter().flatten() {
            pipe.close();
        }
        if closing.kill {
            let _ = self.signal(SIGKILL, ctx);
        }
        self.shared.changed();
    }

    fn record(&self, sent: SubprocessSent) {
        self.shared.lock().log.push(sent);
        self.shared.changed();
    }
}

impl Actor for MockSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The real supervisor's death pact, on its watch: a child whose protocol stopped is
        // closed.
        let watch = ProtocolWatch::new(self.protocol.clone());
        let gone = fut::wrap_future::<_, Self>(async move { watch.gone().await });
        ctx.spawn(gone.map(|(), mock, ctx| {
            if !mock.core.is_closing() {
                mock.close(ctx);
            }
        }));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        drop(self.core.stopped());
        self.shared.lock().ended = true;
        self.protocol.connection_lost(ConnectionLost(None));
        self.shared.changed();
    }
}

/// Test side → mock: the child exited.
#[derive(Message)]
#[rtype(result = "()")]
struct Exit(ExitStatus);

impl Handler<Exit> for MockSupervisor {
    type Result = ();

    fn handle(&mut self, Exit(status): Exit, ctx: &mut Context<Self>) {
        self.exited(status, ctx);
    }
}

impl Handler<DeliveryAcked> for MockSupervisor {
    type Result = ();

    fn handle(&mut self, _: DeliveryAcked, _: &mut Context<Self>) {
        // Dropping them lets the pipes deliver.
        drop(self.core.ack());
        self.shared.lock().attached = true;
        self.shared.changed();
    }
}

impl Handler<PipeOpened> for MockSupervisor {
    type Result = ();

    fn handle(&mut self, msg: PipeOpened, _: &mut Context<Self>) {
        drop(self.core.pipe_opened(msg.ack));
        self.shared.changed();
    }
}

impl Handler<PipeClosed> for MockSupervisor {
    type Result = ();

    fn handle(&mut self, msg: PipeClosed, ctx: &mut Context<Self>) {
        if let Ok(fd) = usize::try_from(msg.fd) {
            self.core.pipe_closed(fd);
        }
        self.try_finish(ctx);
    }
}

impl Handler<GetPid> for MockSupervisor {
    type Result = u32;

    fn handle(&mut self, _: GetPid, _: &mut Context<Self>) -> u32 {
        self.me.pid()
    }
}

impl Handler<GetReturnCode> for MockSupervisor {
    type Result = Option<ExitStatus>;

    fn handle(&mut self, _: GetReturnCode, _: &mut Context<Self>) -> Option<ExitStatus> {
        self.core.status()
    }
}

impl Handler<GetPipeTransport> for MockSupervisor {
    type Result = Option<TransportHandle>;

    fn handle(
        &mut self,
        GetPipeTransport(fd): GetPipeTransport,
        _: &mut Context<Self>,
    ) -> Option<TransportHandle> {
        usize::try_from(fd)
            .ok()
            .and_then(|fd| self.pipes.get(fd))
            .and_then(Clone::clone)
    }
}

impl Handler<SendSignal> for MockSupervisor {
    type Result = io::Result<()>;

    fn handle(&mut self, SendSignal(number): SendSignal, ctx: &mut Context<Self>) -> Self::Result {
        self.record(SubprocessSent::SendSignal(number));
        match number {
            // kill(2)'s existence check: a child not yet collected is there to be signalled.
            0 if self.core.is_collected() => Err(ProcessGone.into()),
            0 => Ok(()),
            ..0 => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{number} is not a signal"),
            )),
            _ => self.signal(number, ctx),
        }
    }
}

impl Handler<Terminate> for MockSupervisor {
    type Result = io::Result<()>;

    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) -> io::Result<()> {
        self.record(SubprocessSent::Terminate);
        self.signal(SIGTERM, ctx)
    }
}

impl Handler<Kill> for MockSupervisor {
    type Result = io::Result<()>;

    fn handle(&mut self, _: Kill, ctx: &mut Context<Self>) -> io::Result<()> {
        self.record(SubprocessSent::Kill);
        self.signal(SIGKILL, ctx)
    }
}

impl Handler<Close> for MockSupervisor {
    type Result = ();

    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) {
        self.record(SubprocessSent::Close);
        self.close(ctx);
    }
}

impl Handler<IsClosing> for MockSupervisor {
    type Result = bool;

    fn handle(&mut self, _: IsClosing, _: &mut Context<Self>) -> bool {
        self.core.is_closing()
    }
}

impl Handler<GetExtraInfo> for MockSupervisor {
    type Result = Option<ExtraInfo>;

    fn handle(&mut self, msg: GetExtraInfo, _: &mut Context<Self>) -> Option<ExtraInfo> {
        let value = (msg.name == keys::SUBPROCESS)
            .then(|| ExtraInfo::Subprocess(ProcessInfo::new(self.me.pid())));
        value.or(msg.default)
    }
}

#[cfg(test)]
mod tests;
