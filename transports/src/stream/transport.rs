//! The stream-transport actor and its I/O driver.

use std::{
    cell::RefCell,
    collections::VecDeque,
    fmt,
    future::Future,
    io::{self, IoSlice},
    pin::Pin,
    sync::atomic::{AtomicUsize, Ordering},
    task::{Context as TaskContext, Poll, ready},
    time::Duration,
};

use actix::{
    Actor, ActorContext, ActorFuture, AsyncContext, Context, Handler, MessageResult, ResponseFuture,
};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use switchboard_framework::{
    Abort, Ack, BufferedPlaintext, CanWriteEof, Close, ConnectionLost, ConnectionMade,
    DataReceived, DeliveryAcked, EofDecided, EofReceived, FlowEdge, GetExtraInfo, GetProtocol,
    GetStats, GetWriteBufferLimits, GetWriteBufferSize, IntoProtocol, IsClosing, IsReading,
    LostHandled, PauseReading, PauseWriting, ResumeReading, ResumeWriting, SetProtocol,
    SetWriteBufferLimits, StartTls, TlsError, TlsErrorKind, TlsSettings, TransportHandle,
    TransportStats, Write, WriteBufferLimits, WriteEof, WriteError, WriteFlow, WriteLedger,
    WriteReceipt, WriteVectored, duplicate_error, keys,
};
use tokio::{
    sync::oneshot,
    time::{Instant, Sleep},
};
use tokio_util::io::poll_read_buf;

use super::{Direction, MAX_READ_PER_WAKEUP, StreamConfig, StreamIo};
use crate::watch::ProtocolWatch;

/// The first read of a wake-up asks for this much; a read that fills its request doubles the
/// next one, up to [`MAX_READ_CHUNK`].
const INITIAL_READ_CHUNK: usize = 8 * 1024;

/// The largest single read.
const MAX_READ_CHUNK: usize = 256 * 1024;

/// A read of at most this many bytes is copied out of the thread's read buffer into a buffer of
/// its own size; a larger one is handed over without a copy. Data waiting for a delivery in
/// flight keeps coalescing while it is smaller than this; a larger chunk is enough read ahead,
/// and the rest waits in the kernel.
const COPY_AT_MOST: usize = 4 * 1024;

/// The most read buffers a thread keeps (of [`MAX_READ_CHUNK`] bytes each).
const READ_BUFFERS_PER_THREAD: usize = 8;

thread_local! {
    /// The read buffers of every stream transport on this thread (an arbiter is a thread).
    static READ_BUFFERS: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// The alignment of the start of every read.
const ALIGNMENT: usize = 64;

/// Moves an empty buffer's start up to the next 64-byte boundary.
///
/// The kernel copies received bytes with `rep movsb`, which on some CPUs is far slower into a
/// destination that is not 64-byte aligned (on the AMD EPYC of the benchmark, 4 KiB reads
/// spent 5× as long in the kernel's copy), and an allocation is only 16-byte aligned.
fn align_start(buffer: &mut BytesMut) {
    let skip = buffer.as_ptr().align_offset(ALIGNMENT);
    if skip < ALIGNMENT && skip <= buffer.capacity() {
        // Safe code can only skip written bytes; writing fewer than 64 costs nothing.
        buffer.resize(skip, 0);
        buffer.advance(skip);
    }
}

/// Reads up to `want` bytes from `io` into one of the thread's read buffers and returns them.
///
/// A connection reads here whenever it holds no data of its own, which is nearly always: an
/// idle connection owns no read buffer at all, and a request/response one allocates only the
/// bytes of each request, which also keeps a small message from pinning a large buffer while a
/// protocol holds on to it. A large read is split off its buffer without a copy; the buffer is
/// taken up again once that chunk is dropped (written, most often), so a streaming connection
/// reads into the same few, cache-warm buffers, as a plain tokio loop reads into its one.
fn read_into_thread_buffer<IO: StreamIo>(
    io: &mut IO,
    cx: &mut TaskContext<'_>,
    want: usize,
) -> Poll<io::Result<BytesMut>> {
    READ_BUFFERS.with_borrow_mut(|buffers| {
        // `+ ALIGNMENT`: aligning the start may skip that much.
        let free = buffers.iter_mut().position(|buffer| {
            buffer.clear();
            buffer.try_reclaim(want + ALIGNMENT)
        });
        let index = match free {
            Some(index) => index,
            None if buffers.len() < READ_BUFFERS_PER_THREAD => {
                buffers.push(BytesMut::with_capacity(MAX_READ_CHUNK + ALIGNMENT));
                buffers.len() - 1
            }
            // Every buffer is lent out: the first gets a new allocation, and its old one goes
            // when the chunks holding it do.
            None => {
                buffers[0].reserve(want + ALIGNMENT);
                0
            }
        };
        let buffer = &mut buffers[index];
        align_start(buffer);
        let n = ready!(poll_read_buf(
            Pin::new(io),
            cx,
            &mut (&mut *buffer).limit(want)
        ))?;
        Poll::Ready(Ok(if n <= COPY_AT_MOST {
            let copy = BytesMut::from(&buffer[..n]);
            buffer.clear();
            copy
        } else {
            buffer.split_to(n)
        }))
    })
}

/// The most buffers gathered into one vectored write.
const MAX_IOVECS: usize = 64;

/// Called once when the transport has stopped, with the future that resolves once its protocol
/// has handled `ConnectionLost` (servers count their connections with it).
pub(crate) type StopHook = Box<dyn FnOnce(LostHandled)>;

/// Stream-transport actors started and not yet stopped, in this process.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The number of stream-transport actors alive in this process (started and not yet stopped),
/// for leak checks and monitoring.
pub fn live_transports() -> usize {
    LIVE.load(Ordering::Relaxed)
}

/// The stream-transport actor. Built with [`spawn`](super::spawn) or by a transport kind's
/// `connect`/`serve`; addressed through a [`TransportHandle`].
//
// tokio stores the actor inline in its connection's task (inside actix's `ContextFut`) and
// rounds the task up to a multiple of 128 bytes, so every field here is paid per connection,
// idle or not (see the size test at the bottom): state that few connections ever need lives in
// `Rare`, allocated on first use, and the queues hold nothing on the heap while they hold at
// most one entry.
pub struct StreamTransport<IO: StreamIo> {
    io: Option<IO>,
    me: TransportHandle,
    protocol: ProtocolWatch,
    state: State,

    // The settings kept from the `StreamConfig`; its write-buffer limits live in `flow`.
    read_buffer_limit: usize,
    write_stall_timeout: Option<Duration>,
    close_drain_timeout: Duration,

    // Reading.
    inbound: Inbound,
    paused: bool,
    read_buf: BytesMut,
    read_chunk: usize,
    /// Acknowledgements (of `ConnectionMade` and `DataReceived`) not yet back, with the bytes
    /// each delivered; nothing more is delivered while one is out, and their bytes count
    /// against the read-buffer limit until they are back.
    unacked: Unacked,
    /// Whether the first `ConnectionMade` was acknowledged; nothing is read before.
    attached: bool,
    /// Whether the write-buffer limits were chosen (in the `StreamConfig` or with
    /// `SetWriteBufferLimits`) rather than the kind's defaults, which a `StartTls` changes.
    limits_chosen: bool,
    seq: u64,

    // Writing.
    queue: WriteQueue,
    flow: WriteFlow,
    ledger: WriteLedger,
    shutdown: Shutdown,

    // The counters of `TransportStats` that are not derived when asked: bytes sent are the
    // ledger's written total, the write-buffer peak is `flow`'s.
    bytes_received: u64,
    deliveries: u64,
    read_buffer_peak: usize,

    on_stopped: Option<StopHook>,
    rare: Option<Box<Rare>>,
}

/// What few connections ever need: allocated the first time one does (a protocol switch
/// handing over leftover bytes, an acknowledged `WriteEof`, a write the socket cannot take at
/// once, closing, failing, a refused write), then kept until the transport is dropped.
#[derive(Default)]
struct Rare {
    /// Leftover bytes handed over by `SetProtocol`, delivered before `read_buf`.
    front: VecDeque<Bytes>,
    front_len: usize,
    eof_waiters: Vec<oneshot::Sender<io::Result<()>>>,
    stall: Option<Stall>,
    drain: Option<Pin<Box<Sleep>>>,
    /// The error `ConnectionLost` will carry.
    lost: Option<io::Error>,
    refused_writes: u64,
    /// A `StartTls` under way.
    upgrade: Option<Upgrade>,
}

/// A `StartTls` from the moment it is handled until its handshake ends. Meanwhile nothing is
/// read or delivered, the plaintext queued before it is written, and later writes wait here.
struct Upgrade {
    /// The settings and the bytes to feed to TLS first; taken when the handshake starts, once
    /// the plaintext queue is written.
    start: Option<(TlsSettings, Bytes)>,
    /// Writes accepted after the `StartTls`: they go out encrypted, after the handshake.
    held: Vec<Bytes>,
    reply: Option<oneshot::Sender<Result<(), TlsError>>>,
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

/// The buffers accepted and not yet written, in order.
///
/// The first is held inline, so a connection with one write outstanding at a time (a
/// request/response protocol, an idle connection) holds no queue allocation; the buffers behind
/// it go to a deque allocated the first time there are two, and kept, so a busy connection does
/// not allocate per write.
#[derive(Default)]
struct WriteQueue {
    head: Option<Bytes>,
    /// Never holds anything while `head` is empty.
    #[expect(
        clippy::box_collection,
        reason = "a boxed deque takes 8 bytes of the actor, a bare one 32, for every connection"
    )]
    rest: Option<Box<VecDeque<Bytes>>>,
}

impl WriteQueue {
    fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    fn push(&mut self, data: Bytes) {
        if self.head.is_none() {
            self.head = Some(data);
        } else {
            self.rest.get_or_insert_default().push_back(data);
        }
    }

    fn front(&self) -> Option<&Bytes> {
        self.head.as_ref()
    }

    fn has_several(&self) -> bool {
        self.rest.as_ref().is_some_and(|rest| !rest.is_empty())
    }

    fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.head
            .iter()
            .chain(self.rest.iter().flat_map(|rest| rest.iter()))
    }

    /// Drops `n` written bytes from the front.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(head) = &mut self.head else {
                return;
            };
            if head.len() <= n {
                n -= head.len();
                self.head = self.rest.as_mut().and_then(|rest| rest.pop_front());
            } else {
                head.advance(n);
                n = 0;
            }
        }
    }

    fn clear(&mut self) {
        self.head = None;
        if let Some(rest) = &mut self.rest {
            rest.clear();
        }
    }
}

/// The deliveries whose acknowledgement is not back yet, as `(seq, bytes)`.
///
/// Usually none or one, held inline: a delivery waits until none is out. Only `SetProtocol`
/// adds one while another is out (the new protocol's `ConnectionMade`); that rare case
/// allocates, and the allocation goes once a single one is left.
#[derive(Debug, Default)]
enum Unacked {
    #[default]
    None,
    One(u64, usize),
    Many(Vec<(u64, usize)>),
}

impl Unacked {
    fn is_empty(&self) -> bool {
        matches!(self, Unacked::None)
    }

    /// The bytes delivered and not acknowledged.
    fn bytes(&self) -> usize {
        match self {
            Unacked::None => 0,
            Unacked::One(_, bytes) => *bytes,
            Unacked::Many(all) => all.iter().map(|(_, bytes)| bytes).sum(),
        }
    }

    fn push(&mut self, seq: u64, bytes: usize) {
        *self = match std::mem::take(self) {
            Unacked::None => Unacked::One(seq, bytes),
            Unacked::One(first, first_bytes) => {
                Unacked::Many(vec![(first, first_bytes), (seq, bytes)])
            }
            Unacked::Many(mut all) => {
                all.push((seq, bytes));
                Unacked::Many(all)
            }
        };
    }

    /// Forgets delivery `seq`; an unknown one changes nothing.
    fn remove(&mut self, seq: u64) {
        match self {
            Unacked::One(known, _) if *known == seq => *self = Unacked::None,
            Unacked::Many(all) => {
                all.retain(|(known, _)| *known != seq);
                match all[..] {
                    [] => *self = Unacked::None,
                    [(last, bytes)] => *self = Unacked::One(last, bytes),
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

impl<IO: StreamIo> StreamTransport<IO> {
    /// Creates the actor paused, attaches the protocol (made by the caller, on this arbiter),
    /// and starts it on the current arbiter.
    pub(crate) fn start<P: IntoProtocol>(
        io: IO,
        config: StreamConfig,
        protocol: P,
        on_stopped: Option<StopHook>,
    ) -> (TransportHandle, P::Output) {
        let mut ctx = Context::new();
        // Unbounded from the first message on: an actix mailbox holds 16 messages until its actor
        // starts and past that a `send` waits to be polled, so `send` and `do_send` from one sender
        // would lose their order. Memory is bounded by flow control, not by the mailbox.
        ctx.set_mailbox_capacity(0);
        let me = TransportHandle::new(ctx.address());
        // Recorded now, while a reset cannot have taken it away: `ConnectionLost` handlers log
        // the peer, and it answers after the transport stopped, as in asyncio.
        // Only an internet peer's: a Unix socket keeps its peer's after an error, so it is read
        // at the end with the rest, and costs an idle connection nothing.
        if let Some(peer) = io.extra_info(keys::PEERNAME)
            && peer
                .as_address()
                .is_some_and(|address| address.as_inet().is_some())
        {
            me.retain_extra_info(keys::PEERNAME, peer);
        }
        let (output, handle) = protocol.into_protocol();
        let write_buffer_limits = config
            .write_buffer_limits
            .unwrap_or_else(|| io.default_write_buffer_limits());
        // A write-only stream has nothing to read: as if its EOF were read and delivered.
        let inbound = match io.direction() {
            Direction::WriteOnly => Inbound::Eof { delivered: true },
            Direction::Duplex | Direction::ReadOnly => Inbound::Open,
        };
        let transport = StreamTransport {
            io: Some(io),
            me: me.clone(),
            protocol: ProtocolWatch::new(handle),
            state: State::Open,
            read_buffer_limit: config.read_buffer_limit,
            write_stall_timeout: config.write_stall_timeout,
            close_drain_timeout: config.close_drain_timeout,
            inbound,
            paused: false,
            read_buf: BytesMut::new(),
            read_chunk: INITIAL_READ_CHUNK,
            unacked: Unacked::None,
            attached: false,
            limits_chosen: config.write_buffer_limits.is_some(),
            seq: 0,
            queue: WriteQueue::default(),
            flow: WriteFlow::new(write_buffer_limits),
            ledger: WriteLedger::new(),
            shutdown: Shutdown::NotRequested,
            bytes_received: 0,
            deliveries: 0,
            read_buffer_peak: 0,
            on_stopped,
            rare: None,
        };
        ctx.run(transport);
        (me, output)
    }

    /// Takes the I/O object away (dropping it closes it), after recording on the handle the
    /// extra information that keeps answering once the transport has stopped.
    fn release_io(&mut self) -> Option<IO> {
        let io = self.io.take()?;
        for &name in io.lasting_keys() {
            // The peer's address recorded at the start needs no second system call.
            if !self.me.has_retained_extra_info(name)
                && let Some(value) = io.extra_info(name)
            {
                self.me.retain_extra_info(name, value);
            }
        }
        Some(io)
    }

    /// The rarely needed state, allocated now if it was not yet.
    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_default()
    }

    /// Bytes read and waiting for delivery.
    fn buffered(&self) -> usize {
        self.read_buf.len() + self.rare.as_ref().map_or(0, |rare| rare.front_len)
    }

    /// Bytes read and not yet acknowledged: what the read-buffer limit bounds.
    fn unconsumed(&self) -> usize {
        self.buffered() + self.unacked.bytes()
    }

    fn note_read_buffer_peak(&mut self) {
        self.read_buffer_peak = self.read_buffer_peak.max(self.unconsumed());
    }

    fn is_reading(&self) -> bool {
        self.state == State::Open && !self.paused && self.inbound == Inbound::Open
    }

    /// Whether a `StartTls` is under way.
    fn upgrading(&self) -> bool {
        self.rare
            .as_ref()
            .is_some_and(|rare| rare.upgrade.is_some())
    }

    /// Which ways the stream carries bytes; a stopped transport's is of no matter.
    fn direction(&self) -> Direction {
        self.io
            .as_ref()
            .map_or(Direction::Duplex, StreamIo::direction)
    }

    /// Why a write is refused now, if it is.
    fn refusal(&self) -> Option<WriteError> {
        if self.direction() == Direction::ReadOnly {
            return Some(WriteError::ReadOnly);
        }
        match self.state {
            State::Open if self.shutdown != Shutdown::NotRequested => Some(WriteError::AfterEof),
            State::Open => None,
            State::Closing => Some(WriteError::Closing),
            State::Stopped => Some(WriteError::Aborted),
        }
    }

    fn refuse(&mut self, err: WriteError, len: usize) -> WriteReceipt {
        let refused = &mut self.rare().refused_writes;
        *refused += 1;
        let refused = *refused;
        if refused == 1 {
            tracing::warn!(bytes = len, %err, "write refused; it will not reach the wire");
        } else {
            tracing::debug!(bytes = len, %err, refused, "write refused");
        }
        WriteReceipt::refused(err)
    }

    fn enqueue(&mut self, buffers: impl IntoIterator<Item = Bytes>) -> WriteReceipt {
        let mut total = 0;
        let mut held = self
            .rare
            .as_mut()
            .and_then(|rare| rare.upgrade.as_mut())
            .map(|upgrade| &mut upgrade.held);
        for data in buffers {
            if !data.is_empty() {
                total += data.len();
                match &mut held {
                    Some(held) => held.push(data),
                    None => self.queue.push(data),
                }
            }
        }
        self.flow.add(total);
        self.ledger.accept(total)
    }

    fn begin_close(&mut self) {
        if self.state != State::Open {
            return;
        }
        self.state = State::Closing;
        // Closing stops reading: what was read and not delivered will not be.
        self.read_buf = BytesMut::new();
        if let Some(rare) = &mut self.rare {
            rare.front.clear();
            rare.front_len = 0;
        }
        if self.shutdown == Shutdown::NotRequested {
            let peer_done = matches!(self.inbound, Inbound::Eof { .. });
            self.shutdown = if peer_done
                && self
                    .io
                    .as_ref()
                    .is_some_and(StreamIo::drop_closes_after_eof)
            {
                // The peer has finished sending, so closing the socket sends our FIN without
                // a reset: a separate shutdown(2) would be one more system call for nothing.
                Shutdown::Done
            } else {
                Shutdown::Requested
            };
        }
    }

    fn abort(&mut self, ctx: &mut Context<Self>) {
        if self.state == State::Stopped {
            return;
        }
        self.queue.clear();
        self.flow.clear();
        if let Some(rare) = &mut self.rare {
            // Its reply, dropped, tells the caller the connection ended.
            rare.upgrade = None;
        }
        let aborted: io::Error = WriteError::Aborted.into();
        self.ledger.fail(&aborted);
        self.resolve_eof_waiters(Err(&aborted));
        if let Some(io) = self.release_io() {
            io.prepare_abort();
        }
        self.finish(None, ctx);
    }

    fn fail(&mut self, err: io::Error, ctx: &mut Context<Self>) {
        tracing::debug!(%err, "stream transport failed");
        self.ledger.fail(&err);
        self.resolve_eof_waiters(Err(&err));
        self.release_io();
        self.finish(Some(err), ctx);
    }

    fn finish(&mut self, lost: Option<io::Error>, ctx: &mut Context<Self>) {
        self.state = State::Stopped;
        if let Some(rare) = &mut self.rare {
            rare.stall = None;
            rare.drain = None;
        }
        if lost.is_some() {
            self.rare().lost = lost;
        }
        ctx.stop();
    }

    fn resolve_eof_waiters(&mut self, result: Result<(), &io::Error>) {
        let Some(rare) = &mut self.rare else {
            return;
        };
        for tx in rare.eof_waiters.drain(..) {
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
        // Once the protocol is gone there is nothing left for the sweep to wake us for.
        let protocol_gone = self.protocol.protocol_gone();
        if !protocol_gone {
            self.protocol.set_waker(cx.waker());
        }
        if let Err(err) = self.poll_write_side(cx) {
            self.fail(err, ctx);
            return Poll::Ready(());
        }
        match self.state {
            State::Open => {
                if protocol_gone {
                    tracing::debug!("protocol actor stopped: aborting its transport");
                    self.abort(ctx);
                    return Poll::Ready(());
                }
                // Not before the protocol has acknowledged `ConnectionMade`: nothing reaches it
                // before, the end included.
                if self.attached && self.poll_reader_closed(cx) {
                    tracing::debug!("the read end of the pipe closed");
                    self.release_io();
                    self.finish(None, ctx);
                    return Poll::Ready(());
                }
                // First what waited for an acknowledgement that is back now, so that the read
                // side finds its buffer free; then what the read side brings.
                self.deliver();
                if let Err(err) = self.poll_read_side(cx) {
                    self.fail(err, ctx);
                    return Poll::Ready(());
                }
                self.deliver();
                if self.state == State::Closing {
                    // A truncated stream's end, delivered just now, began a close: go on with it.
                    cx.waker().wake_by_ref();
                }
            }
            State::Closing => match self.poll_close(cx) {
                Poll::Ready(()) => {
                    self.release_io();
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
        let mut progressed = false;
        loop {
            progressed |= self.write_queue(cx)?;
            if !(self.queue.is_empty() && self.upgrading()) {
                break;
            }
            // The plaintext before the `StartTls` is out: the handshake can go on.
            match self.poll_upgrade(cx) {
                // The writes held back during the handshake are queued now: write them.
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(err)) => return Err(err.into()),
                Poll::Pending => break,
            }
        }
        let Some(io) = self.io.as_mut() else {
            return Ok(());
        };
        if self.queue.is_empty() {
            if let Some(rare) = &mut self.rare {
                rare.stall = None;
            }
        } else if let Some(timeout) = self.write_stall_timeout {
            let now = Instant::now();
            let stall = &mut self.rare.get_or_insert_default().stall;
            match stall {
                Some(stall) if progressed => stall.last_progress = now,
                Some(_) => {}
                None => {
                    *stall = Some(Stall {
                        sleep: Box::pin(tokio::time::sleep_until(now + timeout)),
                        last_progress: now,
                    });
                }
            }
        }
        let upgrading = self
            .rare
            .as_ref()
            .is_some_and(|rare| rare.upgrade.is_some());
        if self.queue.is_empty() && self.shutdown == Shutdown::Requested && !upgrading {
            match Pin::new(&mut *io).poll_shutdown(cx) {
                Poll::Ready(Ok(())) => {
                    self.shutdown = Shutdown::Done;
                    self.resolve_eof_waiters(Ok(()));
                }
                // Closing after the peer's EOF: the peer may be gone already, and everything
                // we had to say is written.
                Poll::Ready(Err(err))
                    if self.state == State::Closing
                        && matches!(self.inbound, Inbound::Eof { .. }) =>
                {
                    tracing::debug!(%err, "shutdown after the peer's EOF failed");
                    self.shutdown = Shutdown::Done;
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

    /// Starts the handshake of the `StartTls` under way, then drives it; at its end, queues the
    /// writes held back and answers the `StartTls`.
    fn poll_upgrade(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), TlsError>> {
        let Some(rare) = self.rare.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let Some(upgrade) = &mut rare.upgrade else {
            return Poll::Ready(Ok(()));
        };
        let Some(io) = self.io.as_mut() else {
            // The socket is gone: the dropped reply tells the caller the connection ended.
            rare.upgrade = None;
            return Poll::Ready(Err(TlsError::new(
                TlsErrorKind::ConnectionEnded,
                "the connection ended before the handshake did",
            )));
        };
        let result = match upgrade.start.take() {
            Some((settings, prefix)) => io.start_tls(settings, prefix),
            None => Ok(()),
        };
        let result = match result {
            Ok(()) => ready!(io.poll_handshake(cx)),
            Err(err) => Err(err),
        };
        let Some(mut upgrade) = rare.upgrade.take() else {
            return Poll::Ready(result);
        };
        if result.is_ok() {
            for data in upgrade.held.drain(..) {
                self.queue.push(data);
            }
            if !self.limits_chosen {
                // A TLS transport's own defaults, as asyncio's `start_tls` makes a new transport
                // with them; the caller delivers the edge this may cause.
                self.flow.set_limits(io.default_write_buffer_limits());
            }
        }
        if let Some(reply) = upgrade.reply.take() {
            let _ = reply.send(result.clone());
        }
        Poll::Ready(result)
    }

    /// Writes what is queued, gathered into vectored writes; whether any byte went out.
    fn write_queue(&mut self, cx: &mut TaskContext<'_>) -> io::Result<bool> {
        let Some(io) = self.io.as_mut() else {
            return Ok(false);
        };
        let mut progressed = false;
        while let Some(front) = self.queue.front() {
            // One buffer goes out with a plain write(2), which the kernel serves with less
            // work than a one-entry writev(2); several are gathered into one writev(2).
            let result = if io.is_write_vectored() && self.queue.has_several() {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let mut count = 0;
                for (slot, data) in slices.iter_mut().zip(self.queue.iter()) {
                    *slot = IoSlice::new(data);
                    count += 1;
                }
                Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count])
            } else {
                Pin::new(&mut *io).poll_write(cx, front)
            };
            match result {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    self.queue.advance(n);
                    self.flow.remove(n);
                    self.ledger.written(n);
                    progressed = true;
                }
                Poll::Ready(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(err)) => return Err(err),
                Poll::Pending => break,
            }
        }
        Ok(progressed)
    }

    /// Reads into the buffer while there is room and budget; never while paused, and never
    /// before the protocol handled its `ConnectionMade`.
    fn poll_read_side(&mut self, cx: &mut TaskContext<'_>) -> io::Result<()> {
        if !self.is_reading() || !self.attached || self.upgrading() {
            return Ok(());
        }
        let Some(io) = self.io.as_mut() else {
            return Ok(());
        };
        let mut budget = MAX_READ_PER_WAKEUP;
        loop {
            let front_len = self.rare.as_ref().map_or(0, |rare| rare.front_len);
            let unconsumed = self.read_buf.len() + front_len + self.unacked.bytes();
            let room = self.read_buffer_limit.saturating_sub(unconsumed);
            if room == 0 {
                // Back-pressure: leave the rest in the kernel until the protocol catches up.
                break;
            }
            if budget == 0 {
                cx.waker().wake_by_ref();
                break;
            }
            let want = room.min(budget).min(self.read_chunk);
            let read = if self.read_buf.is_empty() {
                read_into_thread_buffer(&mut *io, cx, want).map_ok(|chunk| {
                    self.read_buf = chunk;
                    self.read_buf.len()
                })
            } else if self.read_buf.len() < COPY_AT_MOST {
                // Small data waiting for the delivery in flight: coalesce a little more into
                // it. Only bytes that arrived are copied; nothing is reserved for ones that
                // may not come.
                let want = want.min(COPY_AT_MOST);
                read_into_thread_buffer(&mut *io, cx, want).map_ok(|chunk| {
                    self.read_buf.extend_from_slice(&chunk);
                    chunk.len()
                })
            } else {
                // A chunk is read ahead; growing it would copy it. Read again once the
                // delivery in flight is back and this one is delivered.
                break;
            };
            match read {
                Poll::Ready(Ok(0)) => {
                    self.inbound = Inbound::Eof { delivered: false };
                    if let Some(err) = io.unclean_end() {
                        // Truncated: what was read is delivered, then the transport closes and
                        // ends with this error instead of an `EofReceived`.
                        tracing::debug!(%err, "the peer's stream ended uncleanly");
                        self.rare.get_or_insert_default().lost = Some(err);
                    }
                    break;
                }
                Poll::Ready(Ok(n)) => {
                    budget -= n;
                    self.bytes_received += n as u64;
                    if n == want && self.read_chunk < MAX_READ_CHUNK {
                        self.read_chunk *= 2;
                    }
                }
                Poll::Ready(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(err)) => return Err(err),
                Poll::Pending => break,
            }
        }
        self.note_read_buffer_peak();
        Ok(())
    }

    /// Delivers the next chunk (or the EOF) if nothing is in flight and reading is not paused.
    fn deliver(&mut self) {
        if self.state != State::Open || self.paused || !self.unacked.is_empty() || self.upgrading()
        {
            return;
        }
        let front = self.rare.as_mut().and_then(|rare| {
            let front = rare.front.pop_front()?;
            rare.front_len -= front.len();
            Some(front)
        });
        let data = if let Some(front) = front {
            front
        } else if !self.read_buf.is_empty() {
            // Taken whole: an idle connection keeps no spare capacity of it.
            std::mem::take(&mut self.read_buf).freeze()
        } else {
            if self.inbound == (Inbound::Eof { delivered: false }) {
                self.inbound = Inbound::Eof { delivered: true };
                // While open, `lost` holds only the error of an unclean end (a truncated TLS
                // stream): no `EofReceived`, the stream did not end, it broke.
                if self.rare.as_ref().is_some_and(|rare| rare.lost.is_some()) {
                    self.begin_close();
                } else {
                    self.protocol
                        .protocol()
                        .deliver(EofReceived::new(self.me.clone()));
                }
            }
            return;
        };
        self.deliveries += 1;
        let ack = self.issue_ack(data.len());
        self.protocol
            .protocol()
            .deliver(DataReceived::new(data, ack));
    }

    fn issue_ack(&mut self, bytes: usize) -> Ack {
        self.seq += 1;
        self.unacked.push(self.seq, bytes);
        Ack::new(self.me.clone(), self.seq)
    }

    /// Whether a write-only stream with nothing left to write lost its reader. With bytes
    /// queued, the write fails instead (a broken pipe), so the protocol learns they were lost.
    fn poll_reader_closed(&mut self, cx: &mut TaskContext<'_>) -> bool {
        if self.direction() != Direction::WriteOnly || !self.queue.is_empty() {
            return false;
        }
        self.io
            .as_mut()
            .is_some_and(|io| io.poll_reader_closed(cx).is_ready())
    }

    /// Closing: once the write side is flushed and shut down, drain inbound data until the
    /// peer's EOF or the drain timeout.
    fn poll_close(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        if !self.queue.is_empty() || self.shutdown != Shutdown::Done {
            return Poll::Pending;
        }
        // A pipe has no peer to answer unread data with a reset: nothing to drain.
        if matches!(self.inbound, Inbound::Eof { .. }) || self.direction() != Direction::Duplex {
            return Poll::Ready(());
        }
        let Some(io) = self.io.as_mut() else {
            return Poll::Ready(());
        };
        let timeout = self.close_drain_timeout;
        let drain = self
            .rare
            .get_or_insert_default()
            .drain
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if drain.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        let mut budget = MAX_READ_PER_WAKEUP;
        loop {
            // What the peer still sends is read and dropped, in the thread's buffer.
            match read_into_thread_buffer(&mut *io, cx, INITIAL_READ_CHUNK.min(budget)) {
                Poll::Ready(Ok(read)) if read.is_empty() => {
                    self.inbound = Inbound::Eof { delivered: true };
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(read)) => {
                    self.bytes_received += read.len() as u64;
                    budget = budget.saturating_sub(read.len());
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
        let stall = self.rare.as_mut().and_then(|rare| rare.stall.as_mut());
        let (Some(stall), Some(timeout)) = (stall, self.write_stall_timeout) else {
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
        self.release_io();
        let stopped: io::Error = WriteError::Stopped.into();
        self.ledger.fail(&stopped);
        self.resolve_eof_waiters(Err(&stopped));
        let lost = ConnectionLost(self.rare.as_mut().and_then(|rare| rare.lost.take()));
        match self.on_stopped.take() {
            Some(hook) => hook(self.protocol.protocol().deliver_lost(lost)),
            None => self.protocol.protocol().deliver(lost),
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
        let can = self.io.as_ref().is_some_and(StreamIo::can_write_eof) && !self.upgrading();
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
        self.rare().eof_waiters.push(tx);
        if self.direction() == Direction::WriteOnly {
            // Closing a pipe is its EOF: flush, then close (asyncio's write pipes do the same).
            self.begin_close();
        }
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
        // Missing marks are derived from this kind's default, as asyncio derives a TLS
        // transport's from its own 512 KiB.
        let default = self.io.as_ref().map_or_else(
            WriteBufferLimits::default,
            StreamIo::default_write_buffer_limits,
        );
        let limits = default.with_options(msg.high, msg.low)?;
        self.flow.set_limits(limits);
        self.limits_chosen = true;
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
            let rare = self.rare();
            rare.front_len += leftover.len();
            rare.front.push_front(leftover);
            self.note_read_buffer_peak();
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
        // A socket that was reset has no peer any more, and a stopping transport no socket: the
        // values recorded on the handle answer then.
        let value = value.or_else(|| self.me.retained_extra_info(&msg.name));
        MessageResult(value.or(msg.default))
    }
}

impl<IO: StreamIo> Handler<GetStats> for StreamTransport<IO> {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        let mut stats = TransportStats::default();
        stats.bytes_received = self.bytes_received;
        stats.bytes_sent = self.ledger.written_total();
        stats.deliveries = self.deliveries;
        stats.read_buffer_size = self.buffered();
        stats.read_in_flight = self.unacked.bytes();
        stats.read_buffer_peak = self.read_buffer_peak;
        stats.read_buffer_limit = self.read_buffer_limit;
        stats.write_buffer_size = self.flow.size();
        stats.write_buffer_peak = self.flow.peak();
        MessageResult(stats)
    }
}

impl<IO: StreamIo> Handler<DeliveryAcked> for StreamTransport<IO> {
    type Result = ();

    fn handle(&mut self, msg: DeliveryAcked, _: &mut Context<Self>) {
        self.unacked.remove(msg.seq);
        if self.unacked.is_empty() {
            self.attached = true;
        }
    }
}

impl<IO: StreamIo> Handler<EofDecided> for StreamTransport<IO> {
    type Result = ();

    fn handle(&mut self, msg: EofDecided, _: &mut Context<Self>) {
        let half_open = self.io.as_ref().is_some_and(StreamIo::can_write_eof);
        if msg.keep_open && !half_open {
            // asyncio does the same over TLS, which has no half-close.
            tracing::debug!("keep_open has no effect on a transport that cannot half-close");
        }
        if !msg.keep_open || !half_open {
            self.begin_close();
        }
    }
}

impl<IO: StreamIo> Handler<StartTls> for StreamTransport<IO> {
    type Result = ResponseFuture<Result<(), TlsError>>;

    fn handle(&mut self, msg: StartTls, _: &mut Context<Self>) -> Self::Result {
        let refusal = if self.state != State::Open {
            Some(TlsError::new(
                TlsErrorKind::InvalidState,
                "the transport is closing",
            ))
        } else if self.upgrading() {
            Some(TlsError::new(
                TlsErrorKind::InvalidState,
                "a StartTls is already under way",
            ))
        } else {
            self.io.as_ref().and_then(|io| io.check_start_tls().err())
        };
        if let Some(err) = refusal {
            return Box::pin(async move { Err(err) });
        }
        let StartTls {
            settings,
            plaintext,
            leftover,
        } = msg;
        // Everything read and not delivered arrived after the protocol decided to upgrade.
        let mut pending = vec![leftover];
        if let Some(rare) = &mut self.rare {
            pending.extend(rare.front.drain(..));
            rare.front_len = 0;
        }
        pending.push(std::mem::take(&mut self.read_buf).freeze());
        let prefix = match plaintext {
            BufferedPlaintext::FeedToTls => pending.concat().into(),
            BufferedPlaintext::Discard => {
                let discarded: usize = pending.iter().map(Bytes::len).sum();
                if discarded > 0 {
                    tracing::debug!(
                        bytes = discarded,
                        "StartTls: plaintext received before the handshake discarded"
                    );
                }
                Bytes::new()
            }
        };
        let (tx, rx) = oneshot::channel();
        self.rare().upgrade = Some(Upgrade {
            start: Some((settings, prefix)),
            held: Vec::new(),
            reply: Some(tx),
        });
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(TlsError::new(
                    TlsErrorKind::ConnectionEnded,
                    "the connection ended before the handshake did",
                ))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(parts: &[&'static str]) -> WriteQueue {
        let mut queue = WriteQueue::default();
        for part in parts {
            queue.push(Bytes::from_static(part.as_bytes()));
        }
        queue
    }

    fn contents(queue: &WriteQueue) -> Vec<&[u8]> {
        queue.iter().map(|b| &b[..]).collect()
    }

    #[test]
    fn advance_drops_whole_buffers_and_trims_a_partial_one() {
        let mut q = queue(&["abc", "de", "fghij"]);
        q.advance(4);
        assert_eq!(contents(&q), [&b"e"[..], b"fghij"]);
        q.advance(1);
        assert_eq!(contents(&q), [&b"fghij"[..]]);
        q.advance(0);
        assert_eq!(contents(&q), [&b"fghij"[..]]);
        q.advance(5);
        assert!(q.is_empty());
        q.advance(3); // more than is queued: nothing to do, no panic
        assert!(q.is_empty());
        q.push(Bytes::from_static(b"kl"));
        assert_eq!(
            contents(&q),
            [&b"kl"[..]],
            "the emptied queue takes new buffers"
        );
    }

    #[test]
    fn advance_by_every_split_point_leaves_the_right_suffix() {
        let parts = ["a", "bc", "def", "ghij"];
        let all: Vec<u8> = parts.concat().into_bytes();
        for n in 0..=all.len() {
            let mut q = queue(&parts);
            q.advance(n);
            let rest: Vec<u8> = q.iter().flat_map(|b| b.iter().copied()).collect();
            assert_eq!(rest, all[n..], "after advancing {n}");
            assert_eq!(q.front().map(|b| &b[..]), q.iter().next().map(|b| &b[..]));
            assert!(
                q.iter().all(|b| !b.is_empty()),
                "no empty buffer is left queued"
            );
        }
    }

    #[test]
    fn one_write_at_a_time_allocates_no_queue() {
        let mut q = queue(&["abc"]);
        q.advance(3);
        q.push(Bytes::from_static(b"de"));
        assert!(q.rest.is_none());
        q.push(Bytes::from_static(b"f"));
        assert!(q.rest.is_some(), "a second buffer spills");
        q.clear();
        assert!(q.is_empty() && q.iter().next().is_none());
    }

    #[test]
    fn unacked_tracks_bytes_and_forgets_each_seq_once() {
        let mut unacked = Unacked::default();
        unacked.push(1, 0);
        assert!(!unacked.is_empty());
        unacked.remove(7); // unknown: nothing happens
        unacked.remove(1);
        assert!(unacked.is_empty());
        unacked.push(2, 10);
        unacked.push(3, 0); // a switch while a delivery is out
        unacked.push(4, 0);
        assert_eq!(unacked.bytes(), 10);
        unacked.remove(3);
        unacked.remove(3);
        assert_eq!(unacked.bytes(), 10);
        unacked.remove(2);
        assert!(matches!(unacked, Unacked::One(4, 0)), "{unacked:?}");
        unacked.remove(4);
        assert!(unacked.is_empty());
        assert_eq!(unacked.bytes(), 0);
    }

    /// tokio keeps the actor inline in its task and rounds the task up to a multiple of 128
    /// bytes; with actix's `ContextFut` and tokio's task header around it, 328 bytes of actor
    /// make a 768-byte task, one byte more an 896-byte one, for every connection.
    /// Reads once into the thread's buffers, waiting for readiness.
    async fn read_once(io: &mut tokio::net::UnixStream, want: usize) -> BytesMut {
        std::future::poll_fn(|cx| read_into_thread_buffer(io, cx, want))
            .await
            .expect("read")
    }

    #[tokio::test]
    async fn a_small_read_gets_a_buffer_of_its_own_size() {
        use tokio::io::AsyncWriteExt;
        let (mut peer, mut io) = tokio::net::UnixStream::pair().expect("socket pair");
        peer.write_all(&[7; 100]).await.expect("write");
        let chunk = read_once(&mut io, MAX_READ_CHUNK).await;
        assert_eq!(&chunk[..], &[7; 100][..]);
        assert_eq!(
            chunk.capacity(),
            100,
            "a small message must not pin a read-sized buffer"
        );
    }

    #[tokio::test]
    async fn large_reads_reuse_the_buffer_their_dropped_chunks_held() {
        use tokio::io::AsyncWriteExt;
        let (mut peer, mut io) = tokio::net::UnixStream::pair().expect("socket pair");
        let mut first_at = None;
        // Twelve 32 KiB reads go through 384 KiB, more than one buffer holds: the buffer must be
        // taken up again from its start once the chunks are gone, not replaced.
        for round in 0..12u8 {
            peer.write_all(&[round; 32 * 1024]).await.expect("write");
            let chunk = read_once(&mut io, 32 * 1024).await;
            let at = chunk.as_ptr() as usize;
            assert_eq!(
                at % ALIGNMENT,
                0,
                "round {round} read to a misaligned start"
            );
            let mut received = chunk.len();
            assert!(chunk.iter().all(|&byte| byte == round));
            // The chunk is dropped here, as a written one is: its part of the buffer is free.
            drop(chunk);
            while received < 32 * 1024 {
                // A stream socket may hand the bytes over in parts.
                let rest = read_once(&mut io, 32 * 1024 - received).await;
                assert!(rest.iter().all(|&byte| byte == round));
                received += rest.len();
            }
            let first = *first_at.get_or_insert(at);
            assert!(
                (first..first + MAX_READ_CHUNK).contains(&at),
                "round {round} read into a new buffer"
            );
        }
    }

    #[test]
    fn the_actor_stays_within_its_task_size_class() {
        let size = std::mem::size_of::<StreamTransport<tokio::net::TcpStream>>();
        assert!(size <= 328, "StreamTransport<TcpStream> is {size} bytes");
        // What `tcp::connect` and `tcp::serve` run, able to `StartTls`.
        let size =
            std::mem::size_of::<StreamTransport<super::super::Upgradable<tokio::net::TcpStream>>>();
        assert!(size <= 328, "a TCP transport is {size} bytes");
    }
}
