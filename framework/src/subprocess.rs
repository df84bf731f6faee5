//! The vocabulary of subprocess transports: their commands, the events their protocols receive,
//! and the two handles, [`SubprocessHandle`] and [`SubprocessProtocolHandle`].

use std::{
    fmt,
    future::Future,
    io,
    os::fd::RawFd,
    process::ExitStatus,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

use actix::{Actor, Addr, Context, Handler, MailboxError, Message, Recipient};
use bytes::Bytes;

use crate::dev::DeliveryAcked;
use crate::stopped::StoppedNotice;
use crate::{
    Ack, Close, ConnectionLost, ConnectionMade, GetExtraInfo, IsClosing, PauseWriting, ProcessGone,
    ProtocolHandle, ResumeWriting, TransportHandle,
};

/// Asks for the child's process id. Also [`SubprocessHandle::pid`], without a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "u32")]
pub struct GetPid;

/// Asks for the child's exit status: `None` while it runs (asyncio's `get_returncode`).
/// Also [`SubprocessHandle::returncode`], without a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "Option<ExitStatus>")]
pub struct GetReturnCode;

/// Asks for the transport of one of the child's pipes: fd 0 is a write transport for its
/// stdin (write to it, `WriteEof` it), 1 and 2 are read transports for its stdout and stderr
/// (pause them). `None` for a stream that was not piped, or any other fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "Option<TransportHandle>")]
pub struct GetPipeTransport(pub RawFd);

/// Sends the signal with this number to the child (asyncio's `send_signal`). Fails with
/// [`ProcessGone`] once the exit status is collected, so a recycled pid is never signalled, and
/// with `InvalidInput` for a number that is no named signal: the real-time signals (`SIGRTMIN`
/// to `SIGRTMAX`) are not supported. Signal 0 sends nothing and succeeds while the child is
/// there to be signalled, as kill(2)'s existence check does.
///
/// Signal numbers come from the platform: `tokio::signal::unix::SignalKind::hangup().as_raw_value()`,
/// or `libc::SIGHUP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "io::Result<()>")]
pub struct SendSignal(pub i32);

/// Sends `SIGTERM` to the child (asyncio's `terminate`); see [`SendSignal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "io::Result<()>")]
pub struct Terminate;

/// Sends `SIGKILL` to the child (asyncio's `kill`); see [`SendSignal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "io::Result<()>")]
pub struct Kill;

/// Bytes the child wrote to its stdout (fd 1) or stderr (fd 2), asyncio's `pipe_data_received`.
///
/// Never empty; per pipe in order, never duplicated, one at a time. The [`Ack`] is that pipe's:
/// dropping it (by default, when the handler returns) asks the pipe for its next chunk, and
/// keeping it holds that pipe back, as [`DataReceived`](crate::DataReceived)'s does.
#[derive(Debug, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub struct PipeDataReceived {
    /// The child's fd the bytes came from: 1 (stdout) or 2 (stderr).
    pub fd: RawFd,
    /// The bytes.
    pub data: Bytes,
    /// The pipe's acknowledgement; dropping it asks for its next chunk.
    pub ack: Ack,
}

impl PipeDataReceived {
    /// A delivery of `data` from pipe `fd`. For transports and tests.
    pub fn new(fd: RawFd, data: Bytes, ack: Ack) -> Self {
        PipeDataReceived { fd, data, ack }
    }
}

/// One of the child's pipes closed (asyncio's `pipe_connection_lost`): fd 0 when stdin was closed
/// (by `WriteEof`, `Close`, or the child closing its end), 1 and 2 at their EOF. `error` is set
/// when the pipe failed, such as a write to a stdin the child had closed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub struct PipeConnectionLost {
    /// The child's fd: 0 (stdin), 1 (stdout) or 2 (stderr).
    pub fd: RawFd,
    /// What ended the pipe, if it failed.
    pub error: Option<io::Error>,
}

impl PipeConnectionLost {
    /// Pipe `fd` closed. For transports and tests.
    pub fn new(fd: RawFd, error: Option<io::Error>) -> Self {
        PipeConnectionLost { fd, error }
    }
}

/// The child exited and its status was collected (asyncio's `process_exited`): no zombie is
/// left. Its pipes may still be open (a grandchild may hold them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub struct ProcessExited {
    /// How it exited: `code()` for an exit, `ExitStatusExt::signal()` for a signal.
    pub status: ExitStatus,
}

impl ProcessExited {
    /// The child exited with `status`. For transports and tests.
    pub fn new(status: ExitStatus) -> Self {
        ProcessExited { status }
    }
}

/// Transport-side: the pipe transport for fd `fd` delivered its `ConnectionMade`. The subprocess
/// transport holds `ack` until its own protocol acknowledged its `ConnectionMade`, so no pipe
/// delivers before.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PipeOpened {
    /// The child's fd.
    pub fd: RawFd,
    /// The pipe transport's acknowledgement.
    pub ack: Ack,
}

/// Transport-side: the pipe transport for fd `fd` is gone; its `PipeConnectionLost` was delivered
/// first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct PipeClosed {
    /// The child's fd.
    pub fd: RawFd,
}

/// What makes an actor a subprocess transport: it handles every subprocess command, plus
/// [`DeliveryAcked`], [`PipeOpened`] and [`PipeClosed`]. Implemented automatically.
pub trait SubprocessTransport:
    Actor<Context = Context<Self>>
    + Handler<GetPid>
    + Handler<GetReturnCode>
    + Handler<GetPipeTransport>
    + Handler<SendSignal>
    + Handler<Terminate>
    + Handler<Kill>
    + Handler<Close>
    + Handler<IsClosing>
    + Handler<GetExtraInfo>
    + Handler<DeliveryAcked>
    + Handler<PipeOpened>
    + Handler<PipeClosed>
{
}

impl<T> SubprocessTransport for T where
    T: Actor<Context = Context<T>>
        + Handler<GetPid>
        + Handler<GetReturnCode>
        + Handler<GetPipeTransport>
        + Handler<SendSignal>
        + Handler<Terminate>
        + Handler<Kill>
        + Handler<Close>
        + Handler<IsClosing>
        + Handler<GetExtraInfo>
        + Handler<DeliveryAcked>
        + Handler<PipeOpened>
        + Handler<PipeClosed>
{
}

/// The address of a running subprocess transport, cheap to clone (one reference count).
///
/// Commands go with [`send`](Self::send) or [`do_send`](Self::do_send), or through the
/// shortcuts. The pid and, once collected, the exit status are kept in the handle itself, so
/// [`pid`](Self::pid) and [`returncode`](Self::returncode) answer at once, also after the
/// transport stopped; a signal sent after that fails with [`ProcessGone`].
#[derive(Clone)]
pub struct SubprocessHandle {
    inner: Arc<sealed::Ports>,
}

mod sealed {
    use super::*;

    /// The recipients behind a [`SubprocessHandle`], one per command.
    #[derive(Debug)]
    pub struct Ports {
        pub(super) pid: u32,
        pub(super) pipes: OnceLock<[Option<TransportHandle>; 3]>,
        pub(super) status: OnceLock<ExitStatus>,
        pub(super) get_pid: Recipient<GetPid>,
        pub(super) get_returncode: Recipient<GetReturnCode>,
        pub(super) get_pipe: Recipient<GetPipeTransport>,
        pub(super) send_signal: Recipient<SendSignal>,
        pub(super) terminate: Recipient<Terminate>,
        pub(super) kill: Recipient<Kill>,
        pub(super) close: Recipient<Close>,
        pub(super) is_closing: Recipient<IsClosing>,
        pub(super) get_extra_info: Recipient<GetExtraInfo>,
        pub(super) stopped: StoppedNotice,
    }

    /// Which recipient of [`Ports`] a command goes to; sealed, so the command set is closed.
    pub trait Routed: Message<Result: Send> + Send + Sized + 'static {
        fn recipient(ports: &Ports) -> &Recipient<Self>;
    }
}

impl SubprocessHandle {
    /// The handle of the subprocess transport `addr`, whose child is `pid`. For transports,
    /// which then [`attach_pipes`](Self::attach_pipes).
    pub fn new<A: SubprocessTransport>(addr: Addr<A>, pid: u32) -> Self {
        SubprocessHandle {
            inner: Arc::new(sealed::Ports {
                pid,
                pipes: OnceLock::new(),
                status: OnceLock::new(),
                get_pid: addr.clone().recipient(),
                get_returncode: addr.clone().recipient(),
                get_pipe: addr.clone().recipient(),
                send_signal: addr.clone().recipient(),
                terminate: addr.clone().recipient(),
                kill: addr.clone().recipient(),
                close: addr.clone().recipient(),
                is_closing: addr.clone().recipient(),
                get_extra_info: addr.recipient(),
                stopped: StoppedNotice::default(),
            }),
        }
    }

    /// Records the pipe transports for fds 0, 1 and 2. For transports, before the handle is
    /// given to anyone; only the first call counts.
    pub fn attach_pipes(&self, pipes: [Option<TransportHandle>; 3]) {
        let _ = self.inner.pipes.set(pipes);
    }

    /// Records the exit status, so [`returncode`](Self::returncode) knows it. For transports;
    /// only the first call counts.
    pub fn record_exit(&self, status: ExitStatus) {
        let _ = self.inner.status.set(status);
    }

    /// The child's process id; it stays valid after the child exited, as asyncio's `get_pid`.
    pub fn pid(&self) -> u32 {
        self.inner.pid
    }

    /// The child's exit status, or `None` while it runs (asyncio's `get_returncode`).
    pub fn returncode(&self) -> Option<ExitStatus> {
        self.inner.status.get().copied()
    }

    /// Whether the transport actor is still running.
    pub fn is_alive(&self) -> bool {
        self.inner.close.connected()
    }

    /// Whether both handles address the same transport.
    pub fn same_transport(&self, other: &SubprocessHandle) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Sends a command without waiting for its reply; dropped if the transport has stopped,
    /// with a warning logged once per subprocess transport (debug level after).
    pub fn do_send<M: SubprocessCommand>(&self, msg: M) {
        let recipient = M::recipient(&self.inner);
        if !recipient.connected() {
            self.inner.stopped.dropped::<M>("subprocess transport");
            return;
        }
        recipient.do_send(msg);
    }

    /// Sends a command; resolves with its reply, or `MailboxError::Closed` once the transport
    /// has stopped.
    pub fn send<M: SubprocessCommand>(
        &self,
        msg: M,
    ) -> impl Future<Output = Result<M::Result, MailboxError>> + use<M> {
        M::recipient(&self.inner).send(msg)
    }

    /// The transport of pipe `fd`, at once (what [`GetPipeTransport`] answers): 0 to write to
    /// the child's stdin, 1 and 2 for its stdout and stderr. `None` if that stream was not
    /// piped, or for another fd. A `PauseReading` sent to pipe 1 or 2 from the protocol's
    /// `ConnectionMade` handler is honoured before its first byte.
    pub fn pipe(&self, fd: RawFd) -> Option<TransportHandle> {
        let pipes = self.inner.pipes.get()?;
        usize::try_from(fd)
            .ok()
            .and_then(|fd| pipes.get(fd))
            .and_then(Clone::clone)
    }

    /// Sends signal `signal` ([`SendSignal`]).
    pub fn send_signal(&self, signal: i32) -> impl Future<Output = io::Result<()>> + use<> {
        signaled(self.send(SendSignal(signal)))
    }

    /// Sends `SIGTERM` ([`Terminate`]).
    pub fn terminate(&self) -> impl Future<Output = io::Result<()>> + use<> {
        signaled(self.send(Terminate))
    }

    /// Sends `SIGKILL` ([`Kill`]).
    pub fn kill(&self) -> impl Future<Output = io::Result<()>> + use<> {
        signaled(self.send(Kill))
    }

    /// Closes the pipes and kills the child if it still runs ([`Close`]), fire-and-forget.
    pub fn close(&self) {
        self.do_send(Close);
    }

    /// Whether `Close` has been handled; `true` for a stopped transport.
    pub fn is_closing(&self) -> impl Future<Output = bool> + use<> {
        let request = self.send(IsClosing);
        async move { request.await.unwrap_or(true) }
    }
}

/// A signal command's reply, with a stopped transport meaning the process is gone.
async fn signaled(
    request: impl Future<Output = Result<io::Result<()>, MailboxError>>,
) -> io::Result<()> {
    request.await.unwrap_or_else(|_| Err(ProcessGone.into()))
}

impl fmt::Debug for SubprocessHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubprocessHandle")
            .field("pid", &self.pid())
            .field("returncode", &self.returncode())
            .field("alive", &self.is_alive())
            .finish()
    }
}

/// A message a [`SubprocessHandle`] can carry: every subprocess command.
pub trait SubprocessCommand: sealed::Routed {}

macro_rules! subprocess_commands {
    ($($msg:ty => $field:ident;)*) => {$(
        impl sealed::Routed for $msg {
            fn recipient(ports: &sealed::Ports) -> &Recipient<Self> {
                &ports.$field
            }
        }

        impl SubprocessCommand for $msg {}
    )*};
}

subprocess_commands! {
    GetPid => get_pid;
    GetReturnCode => get_returncode;
    GetPipeTransport => get_pipe;
    SendSignal => send_signal;
    Terminate => terminate;
    Kill => kill;
    Close => close;
    IsClosing => is_closing;
    GetExtraInfo => get_extra_info;
}

/// What makes an actor a subprocess protocol: it handles [`ConnectionMade<SubprocessHandle>`],
/// [`PipeDataReceived`], [`PipeConnectionLost`], [`ProcessExited`] and [`ConnectionLost`].
/// Implemented automatically.
///
/// # Event order
///
/// A subprocess transport owns a child process and one pipe transport per piped standard
/// stream. Its protocol receives, in this order:
///
/// * `ConnectionMade<SubprocessHandle>` once, first. No pipe delivers anything until its
///   handler has returned (or its `Ack` is dropped), so a `PauseReading` sent to a pipe from it
///   is honoured before the first byte.
/// * `PipeDataReceived` for fd 1 (stdout) and 2 (stderr), each pipe's chunks in order and one
///   at a time: the next chunk of a pipe comes once the previous one's `Ack` is dropped, so a
///   protocol that keeps it slows that pipe alone down, and a child flooding it blocks on a full
///   pipe instead of growing our memory.
/// * `PipeConnectionLost` once per pipe (fd 0 when stdin closes, 1 and 2 at their EOF), after
///   that pipe's data.
/// * `ProcessExited` once, when the child's exit status is collected. It is not ordered with
///   the pipe events: a child may exit before its output is read, and a grandchild may hold a
///   pipe open long after.
/// * `ConnectionLost` once, last, after the process exited *and* every pipe closed.
///
/// With [`SubprocessProtocolHandle::with_write_flow`], the stdin pipe's [`PauseWriting`] and
/// [`ResumeWriting`] reach the protocol too.
pub trait SubprocessProtocol:
    Actor<Context = Context<Self>>
    + Handler<ConnectionMade<SubprocessHandle>>
    + Handler<PipeDataReceived>
    + Handler<PipeConnectionLost>
    + Handler<ProcessExited>
    + Handler<ConnectionLost>
{
}

impl<T> SubprocessProtocol for T where
    T: Actor<Context = Context<T>>
        + Handler<ConnectionMade<SubprocessHandle>>
        + Handler<PipeDataReceived>
        + Handler<PipeConnectionLost>
        + Handler<ProcessExited>
        + Handler<ConnectionLost>
{
}

/// The address of a subprocess protocol actor, cheap to clone (one reference count). Subprocess
/// transports and their pipes deliver through it, always with `do_send`.
#[derive(Clone)]
pub struct SubprocessProtocolHandle {
    routes: Arc<Routes>,
}

struct Routes {
    made: Recipient<ConnectionMade<SubprocessHandle>>,
    data: Recipient<PipeDataReceived>,
    pipe_lost: Recipient<PipeConnectionLost>,
    exited: Recipient<ProcessExited>,
    lost: Recipient<ConnectionLost>,
    write_flow: Option<(Recipient<PauseWriting>, Recipient<ResumeWriting>)>,
}

impl SubprocessProtocolHandle {
    /// The handle of a subprocess protocol; the stdin pipe's `PauseWriting`/`ResumeWriting` are
    /// not delivered.
    pub fn new<A: SubprocessProtocol>(addr: Addr<A>) -> Self {
        Self::with_routes(addr, None)
    }

    /// The handle of a subprocess protocol that also receives the stdin pipe's
    /// [`PauseWriting`] and [`ResumeWriting`].
    pub fn with_write_flow<A>(addr: Addr<A>) -> Self
    where
        A: SubprocessProtocol + Handler<PauseWriting> + Handler<ResumeWriting>,
    {
        let flow = (addr.clone().recipient(), addr.clone().recipient());
        Self::with_routes(addr, Some(flow))
    }

    fn with_routes<A: SubprocessProtocol>(
        addr: Addr<A>,
        write_flow: Option<(Recipient<PauseWriting>, Recipient<ResumeWriting>)>,
    ) -> Self {
        SubprocessProtocolHandle {
            routes: Arc::new(Routes {
                made: addr.clone().recipient(),
                data: addr.clone().recipient(),
                pipe_lost: addr.clone().recipient(),
                exited: addr.clone().recipient(),
                lost: addr.recipient(),
                write_flow,
            }),
        }
    }

    /// Whether the protocol actor is still running. A subprocess transport whose protocol
    /// stopped closes (and kills its child).
    pub fn is_alive(&self) -> bool {
        self.routes.lost.connected()
    }

    /// Delivers `ConnectionMade`.
    pub fn connection_made(&self, msg: ConnectionMade<SubprocessHandle>) {
        self.routes.made.do_send(msg);
    }

    /// Delivers `PipeDataReceived`.
    pub fn pipe_data_received(&self, msg: PipeDataReceived) {
        self.routes.data.do_send(msg);
    }

    /// Delivers `PipeConnectionLost`.
    pub fn pipe_connection_lost(&self, msg: PipeConnectionLost) {
        self.routes.pipe_lost.do_send(msg);
    }

    /// Delivers `ProcessExited`.
    pub fn process_exited(&self, msg: ProcessExited) {
        self.routes.exited.do_send(msg);
    }

    /// Delivers `ConnectionLost`.
    pub fn connection_lost(&self, msg: ConnectionLost) {
        self.routes.lost.do_send(msg);
    }

    /// The handle a pipe transport of a subprocess transport delivers through: it turns the
    /// pipe's events into this protocol's `Pipe*` events for `fd`, and tells `supervisor` when
    /// the pipe opened and closed. For transports.
    pub fn pipe_protocol(
        &self,
        fd: RawFd,
        supervisor: Recipient<PipeOpened>,
        closed: Recipient<PipeClosed>,
    ) -> ProtocolHandle {
        ProtocolHandle::from_pipe(PipeRoute {
            fd,
            protocol: self.clone(),
            opened: supervisor,
            closed,
            notified: AtomicBool::new(false),
        })
    }
}

impl fmt::Debug for SubprocessProtocolHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubprocessProtocolHandle")
            .field("alive", &self.is_alive())
            .field("write_flow", &self.routes.write_flow.is_some())
            .finish()
    }
}

/// Anything a subprocess transport can be attached to: an actor's `Addr` or a ready
/// [`SubprocessProtocolHandle`].
pub trait IntoSubprocessProtocol {
    /// What the caller gets back: the `Addr`, or the handle itself.
    type Output;

    /// The caller's address of the protocol, and the handle the transport delivers through.
    fn into_subprocess_protocol(self) -> (Self::Output, SubprocessProtocolHandle);
}

impl<A: SubprocessProtocol> IntoSubprocessProtocol for Addr<A> {
    type Output = Addr<A>;

    fn into_subprocess_protocol(self) -> (Addr<A>, SubprocessProtocolHandle) {
        (self.clone(), SubprocessProtocolHandle::new(self))
    }
}

impl IntoSubprocessProtocol for SubprocessProtocolHandle {
    type Output = SubprocessProtocolHandle;

    fn into_subprocess_protocol(self) -> (Self, Self) {
        (self.clone(), self)
    }
}

/// How one pipe transport of a subprocess transport reaches the subprocess protocol.
pub(crate) struct PipeRoute {
    fd: RawFd,
    protocol: SubprocessProtocolHandle,
    opened: Recipient<PipeOpened>,
    closed: Recipient<PipeClosed>,
    /// Whether the supervisor was told the pipe closed.
    notified: AtomicBool,
}

impl PipeRoute {
    pub(crate) fn connected(&self) -> bool {
        self.protocol.is_alive()
    }

    pub(crate) fn same(&self, other: &PipeRoute) -> bool {
        self.fd == other.fd && Arc::ptr_eq(&self.protocol.routes, &other.protocol.routes)
    }

    pub(crate) fn handles_write_flow(&self) -> bool {
        self.protocol.routes.write_flow.is_some()
    }

    pub(crate) fn connection_made(&self, msg: ConnectionMade) {
        self.opened.do_send(PipeOpened {
            fd: self.fd,
            ack: msg.ack,
        });
    }

    pub(crate) fn data_received(&self, msg: crate::DataReceived) {
        let crate::DataReceived { data, ack, .. } = msg;
        self.protocol
            .pipe_data_received(PipeDataReceived::new(self.fd, data, ack));
    }

    pub(crate) fn connection_lost(&self, msg: ConnectionLost) {
        self.protocol
            .pipe_connection_lost(PipeConnectionLost::new(self.fd, msg.0));
        self.notify_closed();
    }

    pub(crate) fn pause_writing(&self) {
        if let Some((pause, _)) = &self.protocol.routes.write_flow {
            pause.do_send(PauseWriting);
        }
    }

    pub(crate) fn resume_writing(&self) {
        if let Some((_, resume)) = &self.protocol.routes.write_flow {
            resume.do_send(ResumeWriting);
        }
    }

    fn notify_closed(&self) {
        if !self.notified.swap(true, Ordering::Relaxed) {
            self.closed.do_send(PipeClosed { fd: self.fd });
        }
    }
}

impl Drop for PipeRoute {
    /// A pipe whose transport switched to another protocol, or stopped without a
    /// `ConnectionLost`, no longer holds its subprocess transport open.
    fn drop(&mut self) {
        self.notify_closed();
    }
}
