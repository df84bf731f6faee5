//! The stream-transport actor and its I/O driver.

use std::{
    cell::RefCell,
    fmt,
    future::Future,
    io::{self, IoSlice},
    pin::Pin,
    task::{Context as TaskContext, Poll, ready},
};

use actix::{Actor, ActorContext, AsyncContext, Context, Handler, MessageResult, ResponseFuture};
use bytes::{Buf, BufMut, BytesMut};
use switchboard_core::stream::{
    Event, Leftover, StreamCore, StreamKind, StreamSettings, UpgradeRefusal,
};
use switchboard_framework::dev::{
    DeliveryAcked, EofDecided, LostHandled, ProtocolWatch, WriteReceipt, WriteReply,
};
use switchboard_framework::{
    Abort, Ack, BufferedPlaintext, CanWriteEof, Close, ConnectionLost, ConnectionMade,
    DataReceived, Drain, EofReceived, GetExtraInfo, GetProtocol, GetStats, GetWriteBufferLimits,
    GetWriteBufferSize, IntoProtocol, IsClosing, IsReading, PauseReading, PauseWriting,
    ProtocolHandle, ResumeReading, ResumeWriting, SetProtocol, SetWriteBufferLimits, StartTls,
    TimedOut, TlsError, TlsErrorKind, TlsSettings, TransportHandle, Write, WriteBufferLimits,
    WriteEof, WriteError, WriteVectored, keys,
};
use tokio::{
    sync::oneshot,
    time::{Instant, Sleep},
};
use tokio_util::io::poll_read_buf;

use super::{MAX_READ_PER_WAKEUP, StreamConfig, StreamIo};

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

/// The number of stream-transport actors alive in this process (started and not yet stopped),
/// for leak checks and monitoring.
pub fn live_transports() -> usize {
    crate::driver::STREAMS.count()
}

/// The stream-transport actor: the glue between a [`StreamCore`], which makes every decision,
/// and the I/O object. Built with [`spawn`](super::spawn) or by a transport kind's
/// `connect`/`serve`; addressed through a [`TransportHandle`].
//
// tokio stores the actor inline in its connection's task (inside actix's `ContextFut`) and
// rounds the task up to a multiple of 128 bytes, so every field here is paid per connection,
// idle or not (see the size test at the bottom).
pub struct StreamTransport<IO: StreamIo> {
    io: Option<IO>,
    me: TransportHandle,
    protocol: ProtocolWatch<ProtocolHandle>,
    core: StreamCore<WriteReply>,
    read_chunk: usize,
    /// The core's next deadline, while it has one.
    timer: Option<Pin<Box<Sleep>>>,
    on_stopped: Option<StopHook>,
}

/// The driver's part of an upgrade (a `StartTls`), kept by the core until the upgrade ends.
struct UpgradePart {
    /// Taken when the upgrade starts, once the writes queued before it are written.
    settings: Option<TlsSettings>,
    reply: oneshot::Sender<Result<(), TlsError>>,
}

/// What the core must know of an I/O object.
fn kind_of<IO: StreamIo>(io: &IO) -> StreamKind {
    StreamKind {
        direction: io.direction(),
        can_write_eof: io.can_write_eof(),
        drop_closes_after_eof: io.drop_closes_after_eof(),
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
        let ctx = crate::driver::unbounded_context();
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
        let (output, handle) = protocol.into_protocol(&me);
        let settings = StreamSettings {
            write_buffer_limits: config
                .write_buffer_limits
                .unwrap_or_else(|| io.default_write_buffer_limits()),
            limits_chosen: config.write_buffer_limits.is_some(),
            read_buffer_limit: config.read_buffer_limit,
            write_stall_timeout: config.write_stall_timeout,
            close_drain_timeout: config.close_drain_timeout,
            max_write_buffer: config.max_write_buffer,
            idle_timeout: config.idle_timeout,
            first_byte_timeout: config.first_byte_timeout,
        };
        let mut core = StreamCore::new(settings, kind_of(&io));
        core.set_handles(handle.handles());
        let transport = StreamTransport {
            io: Some(io),
            me: me.clone(),
            protocol: ProtocolWatch::new(handle),
            core,
            read_chunk: INITIAL_READ_CHUNK,
            timer: None,
            on_stopped,
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

    /// Delivers every event the core has for the protocol attached now.
    fn deliver_events(&mut self) {
        while let Some(event) = self.core.poll_event() {
            let protocol = self.protocol.protocol();
            match event {
                Event::Made { seq } => protocol.deliver(ConnectionMade::new(
                    self.me.clone(),
                    Ack::new(self.me.clone(), seq),
                )),
                Event::Data { data, seq } => {
                    protocol.deliver(DataReceived::new(data, Ack::new(self.me.clone(), seq)));
                }
                Event::Eof => protocol.deliver(EofReceived::new(self.me.clone())),
                Event::PauseWriting => protocol.deliver(PauseWriting),
                Event::ResumeWriting => protocol.deliver(ResumeWriting),
                Event::TimedOut(timeout) => protocol.deliver(TimedOut::new(timeout)),
                // A later kind of event this transport does not know yet: nothing to send.
                _ => {}
            }
        }
    }

    /// Once the core has ended: lets go of the I/O object (with a reset on abort) and stops
    /// the actor, which sends `ConnectionLost` from `stopped`. Whether it did.
    fn settle(&mut self, ctx: &mut Context<Self>) -> bool {
        let Some(release) = self.core.take_release() else {
            return false;
        };
        self.timer = None;
        if let Some(io) = self.release_io()
            && release.abort
        {
            io.prepare_abort();
        }
        ctx.stop();
        true
    }

    /// Polls the I/O object for the core: writes, then reads and deliveries, then timers, again
    /// while the core moves to a state with more I/O to do.
    fn poll_io(&mut self, ctx: &mut Context<Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        if self.core.is_stopped() {
            // Ended inside a handler that did not settle: let go and stop now.
            self.settle(ctx);
            return Poll::Ready(());
        }
        // Until the protocol is gone, the sweep wakes us if it finds it so.
        let protocol_gone = self.protocol.poll_gone(cx).is_ready();
        loop {
            let transitions = self.core.transitions();
            self.poll_write_side(cx);
            if protocol_gone {
                self.core.handle_protocol_gone();
            }
            if self.core.watches_reader()
                && let Some(io) = self.io.as_mut()
                && io.poll_reader_closed(cx).is_ready()
            {
                self.core.handle_reader_closed();
            }
            // First what waited for an acknowledgement that is back now, so that the read side
            // finds its buffer free; then what the read side brings.
            self.deliver_events();
            self.poll_read_side(cx);
            self.deliver_events();
            if self.settle(ctx) {
                return Poll::Ready(());
            }
            if self.poll_timer(cx) {
                continue;
            }
            if self.settle(ctx) {
                return Poll::Ready(());
            }
            if self.core.transitions() == transitions {
                return Poll::Pending;
            }
        }
    }

    /// Keeps the timer on the core's next deadline; whether it fired (and the core was told).
    fn poll_timer(&mut self, cx: &mut TaskContext<'_>) -> bool {
        let now = Instant::now();
        let Some(deadline) = self.core.poll_timeout(now.into_std()) else {
            self.timer = None;
            return false;
        };
        let deadline = Instant::from_std(deadline);
        let timer = match &mut self.timer {
            Some(timer) => {
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.timer = None;
        self.core.handle_timeout(Instant::now().into_std());
        true
    }

    /// Writes what is queued, gathered into vectored writes; drives an upgrade once the
    /// plaintext before it is out; then shuts the write side down if that is due.
    fn poll_write_side(&mut self, cx: &mut TaskContext<'_>) {
        loop {
            let Some(io) = self.io.as_mut() else {
                return;
            };
            if let Err(err) = write_queue(io, &mut self.core, cx) {
                return self.core.handle_error(err);
            }
            if let Some(prefix) = self.core.upgrade_start() {
                let settings = self
                    .core
                    .upgrade_part()
                    .and_then(|part| part.downcast_mut::<UpgradePart>())
                    .and_then(|part| part.settings.take());
                let started = match settings {
                    Some(settings) => io.start_upgrade(settings, prefix),
                    None => Err(TlsError::new(
                        TlsErrorKind::InvalidState,
                        "the upgrade has no settings",
                    )),
                };
                if let Err(err) = started {
                    return self.end_upgrade(Err(err));
                }
            }
            if !self.core.is_handshaking() {
                break;
            }
            match io.poll_upgrade(cx) {
                Poll::Ready(Ok(())) => self.end_upgrade(Ok(())),
                // The writes held back during the upgrade are queued now: write them.
                Poll::Ready(Err(err)) => return self.end_upgrade(Err(err)),
                Poll::Pending => break,
            }
        }
        if self.core.wants_shutdown()
            && let Some(io) = self.io.as_mut()
            && let Poll::Ready(result) = Pin::new(io).poll_shutdown(cx)
        {
            self.core.handle_shutdown(result);
        }
        self.core.handle_write_attempted();
    }

    /// Tells the core and the `StartTls` caller how the upgrade ended.
    fn end_upgrade(&mut self, result: Result<(), TlsError>) {
        let outcome = match (&result, self.io.as_ref()) {
            (Ok(()), Some(io)) => Ok((kind_of(io), io.default_write_buffer_limits())),
            (Ok(()), None) => Err(io::Error::from(io::ErrorKind::NotConnected)),
            (Err(err), _) => Err(err.clone().into()),
        };
        if let Some(part) = self.core.handle_upgraded(outcome)
            && let Ok(part) = part.downcast::<UpgradePart>()
        {
            let _ = part.reply.send(result);
        }
    }

    /// Reads into the core while it has room, within the per-wake-up budget; or, while
    /// closing, reads and discards what the peer still sends.
    fn poll_read_side(&mut self, cx: &mut TaskContext<'_>) {
        let Some(io) = self.io.as_mut() else {
            return;
        };
        if self.core.is_draining() {
            return drain(io, &mut self.core, cx);
        }
        let mut budget = MAX_READ_PER_WAKEUP;
        loop {
            let room = self.core.read_room();
            if room == 0 {
                // Back-pressure (or not reading): leave the rest in the kernel.
                break;
            }
            if budget == 0 {
                cx.waker().wake_by_ref();
                break;
            }
            let want = room.min(budget).min(self.read_chunk);
            let buffered = self.core.read_buffered();
            let want = if buffered == 0 {
                want
            } else if buffered < COPY_AT_MOST {
                // Small data waiting for the delivery in flight: coalesce a little more into
                // it. Only bytes that arrived are copied; nothing is reserved for ones that
                // may not come.
                want.min(COPY_AT_MOST)
            } else {
                // A chunk is read ahead; growing it would copy it. Read again once the
                // delivery in flight is back and this one is delivered.
                break;
            };
            match read_into_thread_buffer(&mut *io, cx, want) {
                Poll::Ready(Ok(chunk)) if chunk.is_empty() => {
                    self.core.handle_eof(io.unclean_end());
                    break;
                }
                Poll::Ready(Ok(chunk)) => {
                    let n = chunk.len();
                    budget -= n;
                    if n == want && buffered == 0 && self.read_chunk < MAX_READ_CHUNK {
                        self.read_chunk *= 2;
                    }
                    self.core.handle_read(chunk);
                }
                Poll::Ready(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(err)) => return self.core.handle_error(err),
                Poll::Pending => break,
            }
        }
    }
}

/// Writes the core's queue, gathered into vectored writes, until the I/O object would block.
fn write_queue<IO: StreamIo>(
    io: &mut IO,
    core: &mut StreamCore<WriteReply>,
    cx: &mut TaskContext<'_>,
) -> io::Result<()> {
    while let Some(front) = core.write_queue().front() {
        let queue = core.write_queue();
        // One buffer goes out with a plain write(2), which the kernel serves with less work
        // than a one-entry writev(2); several are gathered into one writev(2).
        let result = if io.is_write_vectored() && queue.has_several() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (slot, data) in slices.iter_mut().zip(queue.iter()) {
                *slot = IoSlice::new(data);
                count += 1;
            }
            Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count])
        } else {
            Pin::new(&mut *io).poll_write(cx, front)
        };
        match result {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => core.handle_written(n),
            Poll::Ready(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
            Poll::Ready(Err(err)) => return Err(err),
            Poll::Pending => break,
        }
    }
    Ok(())
}

/// Reads and drops what the peer still sends while closing, in the thread's buffer.
fn drain<IO: StreamIo>(io: &mut IO, core: &mut StreamCore<WriteReply>, cx: &mut TaskContext<'_>) {
    let mut budget = MAX_READ_PER_WAKEUP;
    while core.is_draining() {
        match read_into_thread_buffer(&mut *io, cx, INITIAL_READ_CHUNK.min(budget)) {
            Poll::Ready(Ok(read)) => {
                budget = budget.saturating_sub(read.len());
                core.handle_drained(Ok(read.len()));
                if budget == 0 && core.is_draining() {
                    cx.waker().wake_by_ref();
                    return;
                }
            }
            Poll::Ready(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
            Poll::Ready(Err(err)) => core.handle_drained(Err(err)),
            Poll::Pending => return,
        }
    }
}

impl<IO: StreamIo> fmt::Debug for StreamTransport<IO> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamTransport")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl<IO: StreamIo> crate::driver::Driven for StreamTransport<IO> {
    fn poll_driver(&mut self, ctx: &mut Context<Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        self.poll_io(ctx, cx)
    }
}

impl<IO: StreamIo> Actor for StreamTransport<IO> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        crate::driver::STREAMS.started();
        self.deliver_events();
        crate::driver::spawn(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        crate::driver::STREAMS.stopped();
        self.release_io();
        self.timer = None;
        let lost = ConnectionLost(self.core.stopped());
        match self.on_stopped.take() {
            Some(hook) => hook(self.protocol.protocol().deliver_lost(lost)),
            None => self.protocol.protocol().deliver(lost),
        }
    }
}

impl<IO: StreamIo> Handler<Write> for StreamTransport<IO> {
    type Result = WriteReceipt;

    fn handle(&mut self, Write(data): Write, ctx: &mut Context<Self>) -> WriteReceipt {
        let receipt = WriteReceipt::from_core(self.core.write([data]));
        // A write past the maximum write buffer ends the connection here.
        self.settle(ctx);
        receipt
    }
}

impl<IO: StreamIo> Handler<WriteVectored> for StreamTransport<IO> {
    type Result = WriteReceipt;

    fn handle(
        &mut self,
        WriteVectored(buffers): WriteVectored,
        ctx: &mut Context<Self>,
    ) -> WriteReceipt {
        let receipt = WriteReceipt::from_core(self.core.write(buffers));
        self.settle(ctx);
        receipt
    }
}

impl<IO: StreamIo> Handler<WriteEof> for StreamTransport<IO> {
    type Result = ResponseFuture<io::Result<()>>;

    fn handle(&mut self, _: WriteEof, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.core.write_eof(WriteReply(tx));
        self.settle(ctx);
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(WriteError::Stopped.into())) })
    }
}

impl<IO: StreamIo> Handler<Drain> for StreamTransport<IO> {
    type Result = ResponseFuture<io::Result<()>>;

    fn handle(&mut self, _: Drain, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.core.drain(WriteReply(tx));
        Box::pin(async move { rx.await.unwrap_or_else(|_| Err(WriteError::Stopped.into())) })
    }
}

impl<IO: StreamIo> Handler<CanWriteEof> for StreamTransport<IO> {
    type Result = bool;

    fn handle(&mut self, _: CanWriteEof, _: &mut Context<Self>) -> bool {
        self.io.is_some() && self.core.can_write_eof()
    }
}

impl<IO: StreamIo> Handler<Close> for StreamTransport<IO> {
    type Result = ();

    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) {
        self.core.close();
        self.settle(ctx);
    }
}

impl<IO: StreamIo> Handler<Abort> for StreamTransport<IO> {
    type Result = ();

    fn handle(&mut self, _: Abort, ctx: &mut Context<Self>) {
        self.core.abort();
        self.settle(ctx);
    }
}

impl<IO: StreamIo> Handler<IsClosing> for StreamTransport<IO> {
    type Result = bool;

    fn handle(&mut self, _: IsClosing, _: &mut Context<Self>) -> bool {
        self.core.is_closing()
    }
}

impl<IO: StreamIo> Handler<PauseReading> for StreamTransport<IO> {
    type Result = ();

    fn handle(&mut self, _: PauseReading, _: &mut Context<Self>) {
        self.core.pause_reading();
    }
}

impl<IO: StreamIo> Handler<ResumeReading> for StreamTransport<IO> {
    type Result = ();

    fn handle(&mut self, _: ResumeReading, _: &mut Context<Self>) {
        self.core.resume_reading();
    }
}

impl<IO: StreamIo> Handler<IsReading> for StreamTransport<IO> {
    type Result = bool;

    fn handle(&mut self, _: IsReading, _: &mut Context<Self>) -> bool {
        self.core.is_reading()
    }
}

impl<IO: StreamIo> Handler<GetWriteBufferSize> for StreamTransport<IO> {
    type Result = usize;

    fn handle(&mut self, _: GetWriteBufferSize, _: &mut Context<Self>) -> usize {
        self.core.write_buffer_size()
    }
}

impl<IO: StreamIo> Handler<GetWriteBufferLimits> for StreamTransport<IO> {
    type Result = MessageResult<GetWriteBufferLimits>;

    fn handle(&mut self, _: GetWriteBufferLimits, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.core.write_buffer_limits().as_tuple())
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
        self.core
            .set_write_buffer_limits(msg.high, msg.low, default)?;
        self.deliver_events();
        Ok(())
    }
}

impl<IO: StreamIo> Handler<SetProtocol> for StreamTransport<IO> {
    type Result = MessageResult<SetProtocol>;

    fn handle(&mut self, msg: SetProtocol, _: &mut Context<Self>) -> Self::Result {
        let SetProtocol {
            protocol, leftover, ..
        } = msg;
        // Whatever is due goes to the protocol it was due to before the switch.
        self.deliver_events();
        self.core.set_protocol(leftover, protocol.handles());
        let previous = self.protocol.replace(protocol);
        self.deliver_events();
        MessageResult(previous)
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
        MessageResult(self.core.stats())
    }
}

impl<IO: StreamIo> Handler<DeliveryAcked> for StreamTransport<IO> {
    type Result = ();

    fn handle(&mut self, msg: DeliveryAcked, _: &mut Context<Self>) {
        self.core.ack(msg.seq);
    }
}

impl<IO: StreamIo> Handler<EofDecided> for StreamTransport<IO> {
    type Result = ();

    fn handle(&mut self, msg: EofDecided, ctx: &mut Context<Self>) {
        self.core.eof_decided(msg.keep_open);
        self.settle(ctx);
    }
}

impl<IO: StreamIo> Handler<StartTls> for StreamTransport<IO> {
    type Result = ResponseFuture<Result<(), TlsError>>;

    fn handle(&mut self, msg: StartTls, _: &mut Context<Self>) -> Self::Result {
        let refusal = match self.core.check_upgrade() {
            Err(UpgradeRefusal::Closing) => Some(TlsError::new(
                TlsErrorKind::InvalidState,
                "the transport is closing",
            )),
            Err(UpgradeRefusal::UnderWay) => Some(TlsError::new(
                TlsErrorKind::InvalidState,
                "a StartTls is already under way",
            )),
            Err(UpgradeRefusal::AfterEof) => Some(TlsError::new(
                TlsErrorKind::InvalidState,
                "the write side is shut down",
            )),
            Err(UpgradeRefusal::Injected(bytes)) => Some(TlsError::injection(bytes)),
            Ok(()) => self.io.as_ref().and_then(|io| io.check_upgrade().err()),
        };
        if let Some(err) = refusal {
            return Box::pin(async move { Err(err) });
        }
        let StartTls {
            settings,
            plaintext,
            leftover,
        } = msg;
        let policy = match plaintext {
            BufferedPlaintext::FeedToTls => Leftover::Feed,
            BufferedPlaintext::Discard => Leftover::Discard,
        };
        let (tx, rx) = oneshot::channel();
        let part = UpgradePart {
            settings: Some(settings),
            reply: tx,
        };
        if let Err(UpgradeRefusal::Injected(bytes)) =
            self.core.start_upgrade(Box::new(part), policy, leftover)
        {
            let err = TlsError::injection(bytes);
            self.core.close_with(err.clone().into());
            return Box::pin(async move { Err(err) });
        }
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(TlsError::new(
                    TlsErrorKind::ConnectionEnded,
                    "the connection ended before the upgrade did",
                ))
            })
        })
    }
}

/// The most bytes a stream-transport actor may take: tokio keeps the actor inline in its task
/// and rounds the task up to a multiple of 128 bytes; with actix's `ContextFut` and tokio's task
/// header around it, 328 bytes of actor make a 768-byte task, one byte more an 896-byte one, for
/// every connection. Checked by the size tests of every kind.
#[cfg(test)]
pub(crate) const MAX_ACTOR_SIZE: usize = 328;

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(
            size <= MAX_ACTOR_SIZE,
            "StreamTransport<TcpStream> is {size} bytes"
        );
    }
}
