//! The stream-transport actor and its I/O driver.

use std::{
    collections::VecDeque,
    fmt,
    future::Future,
    io::{self, IoSlice},
    pin::Pin,
    sync::atomic::{AtomicUsize, Ordering},
    task::{Context as TaskContext, Poll},
};

use actix::{
    Actor, ActorContext, ActorFuture, AsyncContext, Context, Handler, MessageResult, ResponseFuture,
};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use switchboard_framework::{
    Abort, Ack, CanWriteEof, Close, ConnectionLost, ConnectionMade, DataReceived, DeliveryAcked,
    EofDecided, EofReceived, FlowEdge, GetExtraInfo, GetProtocol, GetStats, GetWriteBufferLimits,
    GetWriteBufferSize, IntoProtocol, IsClosing, IsReading, PauseReading, PauseWriting,
    ResumeReading, ResumeWriting, SetProtocol, SetWriteBufferLimits, TransportHandle,
    TransportStats, Write, WriteBufferLimits, WriteEof, WriteError, WriteFlow, WriteLedger,
    WriteReceipt, WriteVectored, duplicate_error,
};
use tokio::{
    sync::oneshot,
    time::{Instant, Sleep},
};
use tokio_util::io::poll_read_buf;

use super::{MAX_READ_PER_WAKEUP, StreamConfig, StreamIo};
use crate::watch::ProtocolWatch;

/// The first read of a wake-up asks for this much; a read that fills its request doubles the
/// next one, up to [`MAX_READ_CHUNK`].
const INITIAL_READ_CHUNK: usize = 8 * 1024;

/// The largest single read.
const MAX_READ_CHUNK: usize = 64 * 1024;

/// The most buffers gathered into one vectored write.
const MAX_IOVECS: usize = 64;

/// Called once when the transport has stopped (servers count their connections with it).
pub(crate) type StopHook = Box<dyn FnOnce()>;

/// Stream-transport actors started and not yet stopped, in this process.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The number of stream-transport actors alive in this process (started and not yet stopped),
/// for leak checks and monitoring.
pub fn live_transports() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The stream-transport actor. Built with [`spawn`](super::spawn) or by a transport kind's
/// `connect`/`serve`; addressed through a [`TransportHandle`].
pub struct StreamTransport<IO: StreamIo> {
    io: Option<IO>,
    config: StreamConfig,
    me: TransportHandle,
    protocol: ProtocolWatch,
    state: State,
    lost: Option<io::Error>,

    // Reading.
    inbound: Inbound,
    paused: bool,
    read_buf: BytesMut,
    /// Leftover bytes handed over by `SetProtocol`, delivered before `read_buf`.
    front: VecDeque<Bytes>,
    front_len: usize,
    read_chunk: usize,
    /// Acknowledgements (of `ConnectionMade` and `DataReceived`) not yet back, with the bytes
    /// each delivered; nothing more is delivered while one is out, and their bytes count
    /// against the read-buffer limit until they are back.
    unacked: VecDeque<(u64, usize)>,
    unacked_bytes: usize,
    /// Whether the first `ConnectionMade` was acknowledged; nothing is read before.
    attached: bool,
    seq: u64,

    // Writing.
    queue: VecDeque<Bytes>,
    flow: WriteFlow,
    ledger: WriteLedger,
    shutdown: Shutdown,
    eof_waiters: Vec<oneshot::Sender<io::Result<()>>>,
    stall: Option<Stall>,
    drain: Option<Pin<Box<Sleep>>>,
    refused_writes: u64,

    stats: TransportStats,
    on_stopped: Option<StopHook>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading (unless paused) and writing.
    Open,
    /// `Close` was handled: flushing, then shutting the write side down, then draining.
    Closing,
    /// Done; the actor is stopping and the socket is released.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inbound {
    Open,
    /// The peer's EOF was read; `delivered` once `EofReceived` went to the protocol.
    Eof {
        delivered: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    NotRequested,
    Requested,
    Done,
}

struct Stall {
    sleep: Pin<Box<Sleep>>,
    last_progress: Instant,
}

impl<IO: StreamIo> StreamTransport<IO> {
    /// Creates the actor paused, attaches the protocol, and starts it on the current arbiter.
    pub(crate) fn start<P: IntoProtocol>(
        io: IO,
        config: StreamConfig,
        protocol: impl FnOnce() -> P,
        on_stopped: Option<StopHook>,
    ) -> (TransportHandle, P::Output) {
        let ctx = Context::new();
        let me = TransportHandle::new(ctx.address());
        let (output, handle) = protocol().into_protocol();
        let transport = StreamTransport {
            io: Some(io),
            flow: WriteFlow::new(config.write_buffer_limits),
            config,
            me: me.clone(),
            protocol: ProtocolWatch::new(handle),
            state: State::Open,
            lost: None,
            inbound: Inbound::Open,
            paused: false,
            read_buf: BytesMut::new(),
            front: VecDeque::new(),
            front_len: 0,
            read_chunk: INITIAL_READ_CHUNK,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            attached: false,
            seq: 0,
            queue: VecDeque::new(),
            ledger: WriteLedger::new(),
            shutdown: Shutdown::NotRequested,
            eof_waiters: Vec::new(),
            stall: None,
            drain: None,
            refused_writes: 0,
            stats: TransportStats::default(),
            on_stopped,
        };
        ctx.run(transport);
        (me, output)
    }

    /// Bytes read and waiting for delivery.
    fn buffered(&self) -> usize {
        self.read_buf.len() + self.front_len
    }

    /// Bytes read and not yet acknowledged: what the read-buffer limit bounds.
    fn unconsumed(&self) -> usize {
        self.buffered() + self.unacked_bytes
    }

    fn is_reading(&self) -> bool {
        self.state == State::Open && !self.paused && self.inbound == Inbound::Open
    }

    /// Why a write is refused now, if it is.
    fn refusal(&self) -> Option<WriteError> {
        match self.state {
            State::Open if self.shutdown != Shutdown::NotRequested => Some(WriteError::AfterEof),
            State::Open => None,
            State::Closing => Some(WriteError::Closing),
            State::Stopped => Some(WriteError::Aborted),
        }
    }

    fn refuse(&mut self, err: WriteError, len: usize) -> WriteReceipt {
        self.refused_writes += 1;
        if self.refused_writes == 1 {
            tracing::warn!(bytes = len, %err, "write refused; it will not reach the wire");
        } else {
            tracing::debug!(bytes = len, %err, refused = self.refused_writes, "write refused");
        }
        WriteReceipt::refused(err)
    }

    fn enqueue(&mut self, buffers: impl IntoIterator<Item = Bytes>) -> WriteReceipt {
        let mut total = 0;
        for data in buffers {
            if !data.is_empty() {
                total += data.len();
                self.queue.push_back(data);
            }
        }
        self.flow.add(total);
        self.stats.write_buffer_peak = self.stats.write_buffer_peak.max(self.flow.size());
        self.ledger.accept(total)
    }

    fn begin_close(&mut self) {
        if self.state != State::Open {
            return;
        }
        self.state = State::Closing;
        // Closing stops reading: what was read and not delivered will not be.
        self.read_buf = BytesMut::new();
        self.front.clear();
        self.front_len = 0;
        if self.shutdown == Shutdown::NotRequested {
            self.shutdown = Shutdown::Requested;
        }
    }

    fn abort(&mut self, ctx: &mut Context<Self>) {
        if self.state == State::Stopped {
            return;
        }
        self.queue.clear();
        self.flow.clear();
        let aborted: io::Error = WriteError::Aborted.into();
        self.ledger.fail(&aborted);
        self.resolve_eof_waiters(Err(&aborted));
        if let Some(io) = self.io.take() {
            io.prepare_abort();
        }
        self.finish(None, ctx);
    }

    fn fail(&mut self, err: io::Error, ctx: &mut Context<Self>) {
        tracing::debug!(%err, "stream transport failed");
        self.ledger.fail(&err);
        self.resolve_eof_waiters(Err(&err));
        self.io = None;
        self.finish(Some(err), ctx);
    }

    fn finish(&mut self, lost: Option<io::Error>, ctx: &mut Context<Self>) {
        self.state = State::Stopped;
        self.lost = lost;
        self.stall = None;
        self.drain = None;
        ctx.stop();
    }

    fn resolve_eof_waiters(&mut self, result: Result<(), &io::Error>) {
        for tx in self.eof_waiters.drain(..) {
            let _ = tx.send(match result {
                Ok(()) => Ok(()),
                Err(err) => Err(duplicate_error(err)),
            });
        }
    }

    fn deliver_flow_edge(&mut self) {
        match self.flow.check() {
            Some(FlowEdge::Pause) => self.protocol.protocol().deliver(PauseWriting),
            Some(FlowEdge::Resume) => self.protocol.protocol().deliver(ResumeWriting),
            None => {}
        }
    }

    /// Polls the socket: writes, then reads and deliveries, then closing, then the stall timer.
    fn poll_io(&mut self, ctx: &mut Context<Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.state == State::Stopped {
            return Poll::Ready(());
        }
        self.protocol.set_waker(cx.waker());
        if let Err(err) = self.poll_write_side(cx) {
            self.fail(err, ctx);
            return Poll::Ready(());
        }
        match self.state {
            State::Open => {
                if self.protocol.protocol_gone() {
                    tracing::debug!("protocol actor stopped: aborting its transport");
                    self.abort(ctx);
                    return Poll::Ready(());
                }
                if let Err(err) = self.poll_read_side(cx) {
                    self.fail(err, ctx);
                    return Poll::Ready(());
                }
                self.deliver();
            }
            State::Closing => match self.poll_close(cx) {
                Poll::Ready(()) => {
                    self.io = None;
                    self.finish(None, ctx);
                    return Poll::Ready(());
                }
                Poll::Pending => {}
            },
            State::Stopped => return Poll::Ready(()),
        }
        if let Err(err) = self.poll_stall(cx) {
            self.fail(err, ctx);
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Writes what is queued, gathered into vectored writes, then the shutdown if one is due.
    fn poll_write_side(&mut self, cx: &mut TaskContext<'_>) -> io::Result<()> {
        let Some(io) = self.io.as_mut() else {
            return Ok(());
        };
        let mut progressed = false;
        while !self.queue.is_empty() {
            let result = if io.is_write_vectored() {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let mut count = 0;
                for (slot, data) in slices.iter_mut().zip(&self.queue) {
                    *slot = IoSlice::new(data);
                    count += 1;
                }
                Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count])
            } else {
                Pin::new(&mut *io).poll_write(cx, &self.queue[0])
            };
            match result {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    advance(&mut self.queue, n);
                    self.flow.remove(n);
                    self.ledger.written(n);
                    self.stats.bytes_sent += n as u64;
                    progressed = true;
                }
                Poll::Ready(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(err)) => return Err(err),
                Poll::Pending => break,
            }
        }
        if self.queue.is_empty() {
            self.stall = None;
        } else if let Some(timeout) = self.config.write_stall_timeout {
            let now = Instant::now();
            match &mut self.stall {
                Some(stall) if progressed => stall.last_progress = now,
                Some(_) => {}
                None => {
                    self.stall = Some(Stall {
                        sleep: Box::pin(tokio::time::sleep_until(now + timeout)),
                        last_progress: now,
                    });
                }
            }
        }
        if self.queue.is_empty() && self.shutdown == Shutdown::Requested {
            match Pin::new(&mut *io).poll_shutdown(cx) {
                Poll::Ready(Ok(())) => {
                    self.shutdown = Shutdown::Done;
                    self.resolve_eof_waiters(Ok(()));
                }
                Poll::Ready(Err(err)) => return Err(err),
                Poll::Pending => {}
            }
        }
        if self.state != State::Stopped {
            self.deliver_flow_edge();
        }
        Ok(())
    }

    /// Reads into the buffer while there is room and budget; never while paused, and never
    /// before the protocol handled its `ConnectionMade`.
    fn poll_read_side(&mut self, cx: &mut TaskContext<'_>) -> io::Result<()> {
        if !self.is_reading() || !self.attached {
            return Ok(());
        }
        let Some(io) = self.io.as_mut() else {
            return Ok(());
        };
        let mut budget = MAX_READ_PER_WAKEUP;
        loop {
            let room = self
                .config
                .read_buffer_limit
                .saturating_sub(self.read_buf.len() + self.front_len + self.unacked_bytes);
            if room == 0 {
                // Back-pressure: leave the rest in the kernel until the protocol catches up.
                break;
            }
            if budget == 0 {
                cx.waker().wake_by_ref();
                break;
            }
            let want = room.min(budget).min(self.read_chunk);
            self.read_buf.reserve(want);
            match poll_read_buf(
                Pin::new(&mut *io),
                cx,
                &mut (&mut self.read_buf).limit(want),
            ) {
                Poll::Ready(Ok(0)) => {
                    self.inbound = Inbound::Eof { delivered: false };
                    break;
                }
                Poll::Ready(Ok(n)) => {
                    budget -= n;
                    self.stats.bytes_received += n as u64;
                    if n == want && self.read_chunk < MAX_READ_CHUNK {
                        self.read_chunk *= 2;
                    }
                }
                Poll::Ready(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(err)) => return Err(err),
                Poll::Pending => {
                    if self.read_buf.is_empty() {
                        // Keep no buffer on an idle connection.
                        self.read_buf = BytesMut::new();
                    }
                    break;
                }
            }
        }
        self.stats.read_buffer_peak = self.stats.read_buffer_peak.max(self.unconsumed());
        Ok(())
    }

    /// Delivers the next chunk (or the EOF) if nothing is in flight and reading is not paused.
    fn deliver(&mut self) {
        if self.state != State::Open || self.paused || !self.unacked.is_empty() {
            return;
        }
        let data = if let Some(front) = self.front.pop_front() {
            self.front_len -= front.len();
            front
        } else if !self.read_buf.is_empty() {
            self.read_buf.split().freeze()
        } else {
            if self.inbound == (Inbound::Eof { delivered: false }) {
                self.inbound = Inbound::Eof { delivered: true };
                self.protocol
                    .protocol()
                    .deliver(EofReceived::new(self.me.clone()));
            }
            return;
        };
        self.stats.deliveries += 1;
        let ack = self.issue_ack(data.len());
        self.protocol
            .protocol()
            .deliver(DataReceived::new(data, ack));
    }

    fn issue_ack(&mut self, bytes: usize) -> Ack {
        self.seq += 1;
        self.unacked.push_back((self.seq, bytes));
        self.unacked_bytes += bytes;
        Ack::new(self.me.clone(), self.seq)
    }

    /// Closing: once the write side is flushed and shut down, drain inbound data until the
    /// peer's EOF or the drain timeout.
    fn poll_close(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        if !self.queue.is_empty() || self.shutdown != Shutdown::Done {
            return Poll::Pending;
        }
        if matches!(self.inbound, Inbound::Eof { .. }) {
            return Poll::Ready(());
        }
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(());
        };
        let timeout = self.config.close_drain_timeout;
        let drain = self
            .drain
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if drain.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let mut budget = MAX_READ_PER_WAKEUP;
        loop {
            self.read_buf.clear();
            self.read_buf.reserve(INITIAL_READ_CHUNK);
            let limit = INITIAL_READ_CHUNK.min(budget);
            match poll_read_buf(
                Pin::new(&mut *io),
                cx,
                &mut (&mut self.read_buf).limit(limit),
            ) {
                Poll::Ready(Ok(0)) => {
                    self.inbound = Inbound::Eof { delivered: true };
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(n)) => {
                    self.stats.bytes_received += n as u64;
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                }
                Poll::Ready(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
                // The peer is gone; everything we had to say was flushed already.
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Aborts the connection when the write buffer made no progress for the stall timeout.
    fn poll_stall(&mut self, cx: &mut TaskContext<'_>) -> io::Result<()> {
        let (Some(stall), Some(timeout)) = (&mut self.stall, self.config.write_stall_timeout)
        else {
            return Ok(());
        };
        while stall.sleep.as_mut().poll(cx).is_ready() {
            let deadline = stall.last_progress + timeout;
            if Instant::now() >= deadline {
                tracing::debug!(?timeout, "write stalled: aborting");
                return Err(WriteError::Stalled(timeout).into());
            }
            stall.sleep.as_mut().reset(deadline);
        }
        Ok(())
    }
}

/// Drops `n` written bytes from the front of the queue.
fn advance(queue: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let Some(front) = queue.front_mut() else {
            return;
        };
        if front.len() <= n {
            n -= front.len();
            queue.pop_front();
        } else {
            front.advance(n);
            n = 0;
        }
    }
}

impl<IO: StreamIo> fmt::Debug for StreamTransport<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamTransport")
            .field("state", &self.state)
            .field("paused", &self.paused)
            .field("unacked", &self.unacked)
            .field("read_buffered", &self.buffered())
            .field("write_buffered", &self.flow.size())
            .finish_non_exhaustive()
    }
}

/// Drives the socket from inside the actor's context, after each mailbox drain.
struct Driver;

impl<IO: StreamIo> ActorFuture<StreamTransport<IO>> for Driver {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut StreamTransport<IO>,
        ctx: &mut Context<StreamTransport<IO>>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<()> {
        act.poll_io(ctx, cx)
    }
}

impl<IO: StreamIo> Actor for StreamTransport<IO> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Unbounded: `send` never waits for capacity, so `send` and `do_send` from one sender
        // keep their order. Memory is bounded by flow control, not by the mailbox.
        ctx.set_mailbox_capacity(0);
        LIVE.fetch_add(1, Ordering::Relaxed);
        let ack = self.issue_ack(0);
        self.protocol
            .protocol()
            .deliver(ConnectionMade::new(self.me.clone(), ack));
        ctx.spawn(Driver);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
        self.state = State::Stopped;
        self.io = None;
        let stopped: io::Error = WriteError::Stopped.into();
        self.ledger.fail(&stopped);
        self.resolve_eof_waiters(Err(&stopped));
        self.protocol
            .protocol()
            .deliver(ConnectionLost(self.lost.take()));
        if let Some(hook) = self.on_stopped.take() {
            hook();
        }
    }
}

impl<IO: StreamIo> Handler<Write> for StreamTransport<IO> {
    type Result = WriteReceipt;

    fn handle(&mut self, Write(data): Write, _: &mut Context<Self>) -> WriteReceipt {
        if let Some(err) = self.refusal() {
            return self.refuse(err, data.len());
        }
        self.enqueue([data])
    }
}

impl<IO: StreamIo> Handler<WriteVectored> for StreamTransport<IO> {
    type Result = WriteReceipt;

    fn handle(
        &mut self,
        WriteVectored(buffers): WriteVectored,
        _: &mut Context<Self>,
    ) -> WriteReceipt {
        if let Some(err) = self.refusal() {
            let len = buffers.iter().map(Bytes::len).sum();
            return self.refuse(err, len);
        }
        self.enqueue(buffers)
    }
}

impl<IO: StreamIo> Handler<WriteEof> for StreamTransport<IO> {
    type Result = ResponseFuture<io::Result<()>>;

    fn handle(&mut self, _: WriteEof, _: &mut Context<Self>) -> Self::Result {
        let can = self.io.as_ref().is_some_and(StreamIo::can_write_eof);
        let result: Option<io::Result<()>> = if !can && self.state == State::Open {
            Some(Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this transport cannot shut its write side down alone",
            )))
        } else if self.state != State::Open {
            Some(Err(WriteError::Closing.into()))
        } else if self.shutdown == Shutdown::Done {
            Some(Ok(()))
        } else {
            None
        };
        if let Some(result) = result {
            return Box::pin(async move { result });
        }
        self.shutdown = Shutdown::Requested;
        let (tx, rx) = oneshot::channel();
        self.eof_waiters.push(tx);
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(WriteError::Stopped.into())) })
    }
}

impl<IO: StreamIo> Handler<CanWriteEof> for StreamTransport<IO> {
    type Result = bool;

    fn handle(&mut self, _: CanWriteEof, _: &mut Context<Self>) -> bool {
        self.io.as_ref().is_some_and(StreamIo::can_write_eof)
    }
}

impl<IO: StreamIo> Handler<Close> for StreamTransport<IO> {
    type Result = ();

    fn handle(&mut self, _: Close, _: &mut Context<Self>) {
        self.begin_close();
    }
}

impl<IO: StreamIo> Handler<Abort> for StreamTransport<IO> {
    type Result = ();

    fn handle(&mut self, _: Abort, ctx: &mut Context<Self>) {
        self.abort(ctx);
    }
}

impl<IO: StreamIo> Handler<IsClosing> for StreamTransport<IO> {
    type Result = bool;

    fn handle(&mut self, _: IsClosing, _: &mut Context<Self>) -> bool {
        self.state != State::Open
    }
}

impl<IO: StreamIo> Handler<PauseReading> for StreamTransport<IO> {
    type Result = ();

    fn handle(&mut self, _: PauseReading, _: &mut Context<Self>) {
        self.paused = true;
    }
}

impl<IO: StreamIo> Handler<ResumeReading> for StreamTransport<IO> {
    type Result = ();

    fn handle(&mut self, _: ResumeReading, _: &mut Context<Self>) {
        self.paused = false;
    }
}

impl<IO: StreamIo> Handler<IsReading> for StreamTransport<IO> {
    type Result = bool;

    fn handle(&mut self, _: IsReading, _: &mut Context<Self>) -> bool {
        self.is_reading()
    }
}

impl<IO: StreamIo> Handler<GetWriteBufferSize> for StreamTransport<IO> {
    type Result = usize;

    fn handle(&mut self, _: GetWriteBufferSize, _: &mut Context<Self>) -> usize {
        self.flow.size()
    }
}

impl<IO: StreamIo> Handler<GetWriteBufferLimits> for StreamTransport<IO> {
    type Result = MessageResult<GetWriteBufferLimits>;

    fn handle(&mut self, _: GetWriteBufferLimits, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.flow.limits().as_tuple())
    }
}

impl<IO: StreamIo> Handler<SetWriteBufferLimits> for StreamTransport<IO> {
    type Result = Result<(), switchboard_framework::InvalidWriteBufferLimits>;

    fn handle(&mut self, msg: SetWriteBufferLimits, _: &mut Context<Self>) -> Self::Result {
        let limits = WriteBufferLimits::from_options(msg.high, msg.low)?;
        self.flow.set_limits(limits);
        if self.state != State::Stopped {
            self.deliver_flow_edge();
        }
        Ok(())
    }
}

impl<IO: StreamIo> Handler<SetProtocol> for StreamTransport<IO> {
    type Result = MessageResult<SetProtocol>;

    fn handle(&mut self, msg: SetProtocol, _: &mut Context<Self>) -> Self::Result {
        let SetProtocol {
            protocol, leftover, ..
        } = msg;
        protocol.deliver(ConnectionMade::new(self.me.clone(), self.issue_ack(0)));
        if self.flow.is_paused() {
            protocol.deliver(PauseWriting);
        }
        if !leftover.is_empty() && self.state == State::Open {
            self.front_len += leftover.len();
            self.front.push_front(leftover);
            self.stats.read_buffer_peak = self.stats.read_buffer_peak.max(self.unconsumed());
        }
        MessageResult(self.protocol.replace(protocol))
    }
}

impl<IO: StreamIo> Handler<GetProtocol> for StreamTransport<IO> {
    type Result = MessageResult<GetProtocol>;

    fn handle(&mut self, _: GetProtocol, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.protocol.protocol().clone())
    }
}

impl<IO: StreamIo> Handler<GetExtraInfo> for StreamTransport<IO> {
    type Result = MessageResult<GetExtraInfo>;

    fn handle(&mut self, msg: GetExtraInfo, _: &mut Context<Self>) -> Self::Result {
        let value = self.io.as_ref().and_then(|io| io.extra_info(&msg.name));
        MessageResult(value.or(msg.default))
    }
}

impl<IO: StreamIo> Handler<GetStats> for StreamTransport<IO> {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        let mut stats = self.stats;
        stats.read_buffer_size = self.buffered();
        stats.read_in_flight = self.unacked_bytes;
        stats.read_buffer_limit = self.config.read_buffer_limit;
        stats.write_buffer_size = self.flow.size();
        MessageResult(stats)
    }
}

impl<IO: StreamIo> Handler<DeliveryAcked> for StreamTransport<IO> {
    type Result = ();

    fn handle(&mut self, msg: DeliveryAcked, _: &mut Context<Self>) {
        if let Some(index) = self.unacked.iter().position(|(seq, _)| *seq == msg.seq) {
            let (_, bytes) = self.unacked.remove(index).unwrap_or_default();
            self.unacked_bytes -= bytes;
        }
        if self.unacked.is_empty() {
            self.attached = true;
        }
    }
}

impl<IO: StreamIo> Handler<EofDecided> for StreamTransport<IO> {
    type Result = ();

    fn handle(&mut self, msg: EofDecided, _: &mut Context<Self>) {
        if !msg.keep_open {
            self.begin_close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(parts: &[&'static str]) -> VecDeque<Bytes> {
        parts
            .iter()
            .map(|p| Bytes::from_static(p.as_bytes()))
            .collect()
    }

    fn contents(queue: &VecDeque<Bytes>) -> Vec<&[u8]> {
        queue.iter().map(|b| &b[..]).collect()
    }

    #[test]
    fn advance_drops_whole_buffers_and_trims_a_partial_one() {
        let mut q = queue(&["abc", "de", "fghij"]);
        advance(&mut q, 4);
        assert_eq!(contents(&q), [&b"e"[..], b"fghij"]);
        advance(&mut q, 1);
        assert_eq!(contents(&q), [&b"fghij"[..]]);
        advance(&mut q, 0);
        assert_eq!(contents(&q), [&b"fghij"[..]]);
        advance(&mut q, 5);
        assert!(q.is_empty());
        advance(&mut q, 3); // more than is queued: nothing to do, no panic
        assert!(q.is_empty());
    }

    #[test]
    fn advance_by_every_split_point_leaves_the_right_suffix() {
        let parts = ["a", "bc", "def", "ghij"];
        let all: Vec<u8> = parts.concat().into_bytes();
        for n in 0..=all.len() {
            let mut q = queue(&parts);
            advance(&mut q, n);
            let rest: Vec<u8> = q.iter().flat_map(|b| b.iter().copied()).collect();
            assert_eq!(rest, all[n..], "after advancing {n}");
            assert!(
                q.iter().all(|b| !b.is_empty()),
                "no empty buffer is left queued"
            );
        }
    }
}
