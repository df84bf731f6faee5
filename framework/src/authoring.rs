//! [`Protocol`]: a protocol written as asyncio's — callbacks with safe defaults — and run by an
//! actor, [`ProtocolActor`], that the transport addresses with its typed events.
//!
//! Why an adapter actor rather than a derive or blanket `Handler` impls: the events must stay
//! typed actix messages (the transport talks to an actor), but a blanket
//! `impl<P: Trait> Handler<DataReceived> for P` breaks the orphan rule and a derive would still
//! leave the transport handle in an `Option` in the user's struct. An adapter owns the handle and
//! the framing state, receives every event (so none can be handled and not received), applies
//! the defaults, and stops itself after `ConnectionLost`, as Erlang's `gen_server` runs a
//! callback module. The book's chapter "Your first protocol" compares the designs.

use std::{cell::Cell, fmt, io, time::Duration};

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Handler, Message,
    SpawnHandle, dev::MessageResponse, fut,
};
use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::{
    Ack, ConnectionLost, ConnectionMade, DataReceived, EofReceived, Framing, IntoProtocol,
    PauseReading, PauseWriting, ProtocolHandle, ResumeReading, ResumeWriting, SetProtocol,
    StartTls, TimedOut, Timeout, TlsError, TransportHandle,
};

/// A protocol, written as asyncio's: override the callbacks it uses, the others keep their
/// defaults. Run by a [`ProtocolActor`]; serve or connect it by value (`tcp::serve(addr, ||
/// Echo)`).
///
/// ```
/// use switchboard_framework::prelude::*;
///
/// struct Echo;
///
/// impl Protocol for Echo {
///     type Codec = Raw;
///     fn data_received(&mut self, data: Bytes, cx: &mut Ctx<'_, Self>) {
///         cx.write(data);
///     }
/// }
/// # switchboard_framework::testing::run(async {
/// # let mock = switchboard_framework::testing::MockTransport::connect(Echo).await;
/// # mock.feed("hi").await;
/// # mock.expect_written("hi").await;
/// # });
/// ```
///
/// # Events and defaults
///
/// Every event reaches the protocol, in the order [`RawProtocol`](crate::RawProtocol) states:
///
/// | callback | default |
/// |---|---|
/// | [`connection_made`](Self::connection_made) | nothing |
/// | [`data_received`](Self::data_received), once per decoded item | nothing |
/// | [`decode_error`](Self::decode_error) | logs the error and closes |
/// | [`eof_received`](Self::eof_received) | `false`: the transport closes after flushing |
/// | [`pause_writing`](Self::pause_writing) / [`resume_writing`](Self::resume_writing) | reading pauses while writes wait |
/// | [`timed_out`](Self::timed_out) | closes |
/// | [`connection_lost`](Self::connection_lost) | nothing |
///
/// After `connection_lost` the actor stops, whatever the protocol did: timers and futures it
/// spawned are cancelled with it. A protocol that switches away with
/// [`Ctx::switch_to`] stops once the transport has taken the new one.
///
/// Messages of your own reach the protocol through [`Handles`].
pub trait Protocol: Sized + Unpin + 'static {
    /// How the bytes received become what [`data_received`](Self::data_received) gets: [`Raw`]
    /// for the bytes as they arrive, or any tokio-util codec (a `LinesCodec` gives `String`
    /// lines). What a switch or `STARTTLS` leaves undecoded is carried over for you.
    type Codec: Codec;

    /// The connection is made; [`Ctx::transport`] is its transport. The transport reads nothing
    /// until this returns, so a [`Ctx::pause_reading`] here is honoured before the first byte.
    fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
        let _ = cx;
    }

    /// One item: a chunk of bytes as it arrived with [`Raw`], a decoded frame with a codec.
    /// The transport delivers nothing more until it returns.
    fn data_received(&mut self, data: Item<Self>, cx: &mut Ctx<'_, Self>) {
        let _ = (data, cx);
    }

    /// The codec refused the bytes received. By default the error is logged and the connection
    /// closed (what was written before it still goes out). Decoding goes on after it if the
    /// connection stays open and the codec skipped the bad bytes (`LinesCodec` skips a line over
    /// its limit).
    fn decode_error(&mut self, err: DecodeError<Self>, cx: &mut Ctx<'_, Self>) {
        tracing::warn!(%err, "closing: the bytes received do not decode");
        cx.close();
    }

    /// The peer shut its write side down, after the last item. Return `true` to stay half-open
    /// and go on writing (asyncio's `eof_received`); by default the transport flushes and closes.
    /// A last frame left without its terminator (a line without `\n`) came first, through
    /// [`data_received`](Self::data_received).
    fn eof_received(&mut self, cx: &mut Ctx<'_, Self>) -> bool {
        let _ = cx;
        false
    }

    /// The transport's write buffer went over its high-water mark. By default the transport
    /// stops reading until [`resume_writing`](Self::resume_writing), so a peer that does not read
    /// what it is sent cannot make the protocol queue without bound. Override it (a producer
    /// stops producing; a chat room drops a slow reader) and reading goes on.
    fn pause_writing(&mut self, cx: &mut Ctx<'_, Self>) {
        cx.hold_reading(true);
    }

    /// The write buffer drained to its low-water mark.
    fn resume_writing(&mut self, cx: &mut Ctx<'_, Self>) {
        cx.hold_reading(false);
    }

    /// An idle or first-byte timeout of the transport ran out. By default the connection closes;
    /// override it to say goodbye first (`421` in SMTP). If the same timeout runs out again, the
    /// transport ends the connection itself.
    fn timed_out(&mut self, timeout: Timeout, cx: &mut Ctx<'_, Self>) {
        tracing::debug!(%timeout, "closing: timed out");
        cx.close();
    }

    /// The connection is gone: `None` for a clean end, `Some(err)` for an error. The last
    /// callback; the actor stops when it returns.
    fn connection_lost(&mut self, err: Option<io::Error>, cx: &mut Ctx<'_, Self>) {
        let _ = (err, cx);
    }
}

/// What [`Protocol::data_received`] gets for a protocol `P`.
pub type Item<P> = <<P as Protocol>::Codec as Codec>::Item;

/// What [`Protocol::decode_error`] gets for a protocol `P`.
pub type DecodeError<P> = <<P as Protocol>::Codec as Codec>::Error;

/// A message of your own that a [`Protocol`] handles, as actix's `Handler`: send it to the
/// protocol's `Addr<ProtocolActor<P>>` (from [`Ctx::address`], or what `connect` returns).
///
/// ```
/// use actix::prelude::*;
/// use switchboard_framework::prelude::*;
///
/// /// A line a chat room sends to every member.
/// #[derive(Message)]
/// #[rtype(result = "()")]
/// struct Say(String);
///
/// struct Member;
///
/// impl Protocol for Member {
///     type Codec = LinesCodec;
/// }
///
/// impl Handles<Say> for Member {
///     type Result = ();
///     fn handle(&mut self, Say(line): Say, cx: &mut Ctx<'_, Self>) {
///         cx.send(line);
///     }
/// }
/// # switchboard_framework::testing::run(async {
/// # let mock = switchboard_framework::testing::MockTransport::connect(Member).await;
/// # let member = mock.protocol().downcast::<ProtocolActor<Member>>().unwrap();
/// # member.send(Say("hello".into())).await.unwrap();
/// # mock.expect_written("hello\n").await;
/// # });
/// ```
pub trait Handles<M: Message>: Protocol {
    /// The reply, as actix's `Handler::Result`.
    type Result: MessageResponse<ProtocolActor<Self>, M>;

    /// Handles `msg`.
    fn handle(&mut self, msg: M, cx: &mut Ctx<'_, Self>) -> Self::Result;
}

/// How a [`Protocol`] frames what it receives: [`Raw`], or any tokio-util `Decoder` with a
/// `Default` (`LinesCodec`, `LengthDelimitedCodec`, `AnyDelimiterCodec`, `BytesCodec`, yours).
/// Sent items go through the same codec's `Encoder` with [`Ctx::send`].
///
/// Received bytes that make no frame are bounded: over [`DEFAULT_MAX_BUFFERED`](crate::DEFAULT_MAX_BUFFERED)
/// (8 MiB) the codec fails with `InvalidData`; for a tighter bound, configure the codec (a
/// `LinesCodec` with a maximum line length) with [`Ctx::set_codec`] in `connection_made`.
pub trait Codec: Sized + Unpin + 'static {
    /// What a protocol receives.
    type Item;
    /// What the codec fails with (an I/O error too, for a [`Connection`](crate::Connection)
    /// that ends with one).
    type Error: std::error::Error + From<io::Error> + Send + Sync + 'static;
    /// The decoding state of one connection.
    #[doc(hidden)]
    type Inbox: Inbox<Codec = Self>;
    /// The decoding state of a new connection.
    #[doc(hidden)]
    fn inbox() -> Self::Inbox;
    /// The decoding state of a new connection, with this codec.
    #[doc(hidden)]
    fn inbox_with(self) -> Self::Inbox;
}

/// The decoding state of one connection: what a [`Codec`] keeps between chunks.
#[doc(hidden)]
pub trait Inbox: Unpin + 'static {
    type Codec: Codec;
    /// Takes a chunk received.
    fn push(&mut self, data: Bytes);
    /// The next item of what was pushed, if one is complete.
    fn next(&mut self) -> Option<Result<Item2<Self>, Error2<Self>>>;
    /// The last item at the peer's EOF, if the bytes left make one.
    fn finish(&mut self) -> Option<Result<Item2<Self>, Error2<Self>>>;
    /// Bytes pushed and not decoded.
    fn buffered(&self) -> usize;
    /// Takes the bytes pushed and not decoded, for a switch.
    fn take_leftover(&mut self) -> Bytes;
    /// Replaces the codec, keeping the bytes not yet decoded.
    fn set_codec(&mut self, codec: Self::Codec);
    /// The codec, to encode with.
    fn codec_mut(&mut self) -> &mut Self::Codec;
    /// A buffer to encode into, kept between writes.
    fn write_buffer(&mut self) -> &mut BytesMut;
    /// The codec, for an inbox of its own afresh.
    fn into_codec(self) -> Self::Codec;

    /// Encodes `items` into one buffer: the bytes of the items encoded, and the error of the
    /// one that failed, if one did (the items after it are not encoded). One place for
    /// `Ctx::send`, `Ctx::send_all` and `Connection::send`.
    fn encode<I>(
        &mut self,
        items: impl IntoIterator<Item = I>,
    ) -> (Bytes, Result<(), <Self::Codec as Encoder<I>>::Error>)
    where
        Self::Codec: Encoder<I>,
    {
        let mut buffer = std::mem::take(self.write_buffer());
        let mut encoded = Ok(());
        for item in items {
            encoded = self.codec_mut().encode(item, &mut buffer);
            if encoded.is_err() {
                break;
            }
        }
        let frames = buffer.split().freeze();
        *self.write_buffer() = buffer;
        (frames, encoded)
    }
}

type Item2<I> = <<I as Inbox>::Codec as Codec>::Item;
type Error2<I> = <<I as Inbox>::Codec as Codec>::Error;

/// The bytes as they arrive, one [`Bytes`] per chunk the transport read, without a copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Raw;

impl Codec for Raw {
    type Item = Bytes;
    type Error = io::Error;
    type Inbox = RawInbox;

    fn inbox() -> RawInbox {
        RawInbox::default()
    }

    fn inbox_with(self) -> RawInbox {
        RawInbox::default()
    }
}

/// The inbox of [`Raw`]: the one chunk not yet delivered.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct RawInbox {
    chunk: Option<Bytes>,
    raw: Raw,
    write: BytesMut,
}

impl Inbox for RawInbox {
    type Codec = Raw;

    fn push(&mut self, data: Bytes) {
        self.chunk = Some(data);
    }
    fn next(&mut self) -> Option<io::Result<Bytes>> {
        self.chunk.take().map(Ok)
    }
    fn finish(&mut self) -> Option<io::Result<Bytes>> {
        self.next()
    }
    fn buffered(&self) -> usize {
        self.chunk.as_ref().map_or(0, Bytes::len)
    }
    fn take_leftover(&mut self) -> Bytes {
        self.chunk.take().unwrap_or_default()
    }
    fn set_codec(&mut self, codec: Raw) {
        self.raw = codec;
    }
    fn codec_mut(&mut self) -> &mut Raw {
        &mut self.raw
    }
    fn write_buffer(&mut self) -> &mut BytesMut {
        &mut self.write
    }
    fn into_codec(self) -> Raw {
        self.raw
    }
}

impl<C> Codec for C
where
    C: Decoder + Default + Unpin + 'static,
    C::Error: std::error::Error + From<io::Error> + Send + Sync + 'static,
{
    type Item = C::Item;
    type Error = C::Error;
    type Inbox = Framing<C>;

    fn inbox() -> Framing<C> {
        Framing::new(C::default())
    }

    fn inbox_with(self) -> Framing<C> {
        Framing::new(self)
    }
}

impl<C> Inbox for Framing<C>
where
    C: Decoder + Default + Unpin + 'static,
    C::Error: std::error::Error + From<io::Error> + Send + Sync + 'static,
{
    type Codec = C;

    fn push(&mut self, data: Bytes) {
        self.feed(&data);
    }
    fn next(&mut self) -> Option<Result<C::Item, C::Error>> {
        self.next_frame().transpose()
    }
    fn finish(&mut self) -> Option<Result<C::Item, C::Error>> {
        self.decode_eof().transpose()
    }
    fn buffered(&self) -> usize {
        Framing::buffered(self)
    }
    fn take_leftover(&mut self) -> Bytes {
        Framing::take_leftover(self)
    }
    fn set_codec(&mut self, codec: C) {
        let framing = std::mem::replace(self, Framing::new(C::default()));
        *self = framing.with_codec(codec);
    }
    fn codec_mut(&mut self) -> &mut C {
        Framing::codec_mut(self)
    }
    fn write_buffer(&mut self) -> &mut BytesMut {
        self.write_buffer_mut()
    }
    fn into_codec(self) -> C {
        Framing::into_codec(self)
    }
}

/// The actor that runs a [`Protocol`]: it receives the transport's events as typed messages and
/// calls the protocol's callbacks. Its `Addr` is the protocol's address, for messages the
/// protocol [`Handles`].
pub struct ProtocolActor<P: Protocol> {
    protocol: P,
    link: Link<P>,
}

/// What the actor keeps for its protocol besides the protocol itself.
struct Link<P: Protocol> {
    transport: TransportHandle,
    inbox: <P::Codec as Codec>::Inbox,
    /// Reading paused by the protocol ([`Ctx::pause_reading`]).
    paused: bool,
    /// Reading held while writes wait (the default [`Protocol::pause_writing`]).
    held: bool,
    /// Whether the transport was last told to pause reading.
    told_paused: bool,
    /// The protocol switched away: it receives nothing more.
    switched: bool,
    /// The acknowledgement of the chunk being decoded, kept until every item of it has been
    /// handled: a [`Ctx::wait`] can stop the decoding halfway, and the next chunk must wait.
    ack: Option<Ack>,
    /// The peer's EOF, kept until the items before it have been handled.
    eof: Option<EofReceived>,
    /// The protocol closed or aborted the connection: the items still decoded from the chunk
    /// at hand are not delivered (a `Cell`: closing takes `&self`).
    closing: Cell<bool>,
}

impl<P: Protocol> Link<P> {
    /// Whether the protocol paused reading, or the default `pause_writing` holds it.
    fn reading_paused(&self) -> bool {
        self.paused || self.held
    }
}

impl<P: Protocol> ProtocolActor<P> {
    /// Starts `protocol` on the current arbiter, for the transport `transport`; returns its
    /// address and the handle the transport delivers through (every event).
    pub fn start(protocol: P, transport: &TransportHandle) -> (Addr<Self>, ProtocolHandle) {
        let addr = ProtocolActor {
            protocol,
            link: Link {
                transport: transport.clone(),
                inbox: P::Codec::inbox(),
                paused: false,
                held: false,
                told_paused: false,
                switched: false,
                ack: None,
                eof: None,
                closing: Cell::new(false),
            },
        }
        .start();
        let handle = ProtocolHandle::builder(addr.clone())
            .eof_received()
            .write_flow()
            .timed_out()
            .build();
        (addr, handle)
    }

    /// The protocol.
    pub fn protocol(&self) -> &P {
        &self.protocol
    }

    /// The protocol, to change it.
    pub fn protocol_mut(&mut self) -> &mut P {
        &mut self.protocol
    }

    fn cx<'a>(
        protocol: &'a mut P,
        link: &'a mut Link<P>,
        ctx: &'a mut Context<Self>,
    ) -> (&'a mut P, Ctx<'a, P>) {
        (protocol, Ctx { ctx, link })
    }
}

impl<P: Protocol> Actor for ProtocolActor<P> {
    type Context = Context<Self>;
}

impl<P: Protocol + fmt::Debug> fmt::Debug for ProtocolActor<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtocolActor")
            .field("protocol", &self.protocol)
            .field("switched", &self.link.switched)
            .finish_non_exhaustive()
    }
}

impl<P, M> Handler<M> for ProtocolActor<P>
where
    P: Handles<M>,
    M: Message,
{
    type Result = <P as Handles<M>>::Result;

    fn handle(&mut self, msg: M, ctx: &mut Context<Self>) -> Self::Result {
        let (protocol, mut cx) = Self::cx(&mut self.protocol, &mut self.link, ctx);
        protocol.handle(msg, &mut cx)
    }
}

impl<P: Protocol> IntoProtocol for P {
    type Output = Addr<ProtocolActor<P>>;

    fn into_protocol(self, transport: &TransportHandle) -> (Self::Output, ProtocolHandle) {
        ProtocolActor::start(self, transport)
    }
}

// The transport's events, routed through `Handles` like the protocol's own messages: one
// `Handler` impl serves both, and a protocol cannot implement `Handles` for an event (the impls
// would overlap), so it cannot take an event away from its defaults by accident.

impl<P: Protocol> Handles<ConnectionMade> for P {
    type Result = ();

    fn handle(&mut self, msg: ConnectionMade, cx: &mut Ctx<'_, Self>) {
        if cx.link.switched {
            return;
        }
        let ConnectionMade { transport, ack } = msg;
        debug_assert!(transport.same_transport(&cx.link.transport));
        cx.link.ack = Some(ack); // reading starts when it is dropped
        self.connection_made(cx);
        self.proceed(cx);
    }
}

impl<P: Protocol> Handles<DataReceived> for P {
    type Result = ();

    fn handle(&mut self, msg: DataReceived, cx: &mut Ctx<'_, Self>) {
        if cx.link.switched {
            return;
        }
        let DataReceived { data, ack } = msg;
        cx.link.inbox.push(data);
        cx.link.ack = Some(ack);
        self.proceed(cx);
    }
}

impl<P: Protocol> Handles<EofReceived> for P {
    type Result = ();

    fn handle(&mut self, eof: EofReceived, cx: &mut Ctx<'_, Self>) {
        if cx.link.switched {
            return;
        }
        cx.link.eof = Some(eof);
        self.proceed(cx);
    }
}

impl<P: Protocol> Handles<PauseWriting> for P {
    type Result = ();

    fn handle(&mut self, _: PauseWriting, cx: &mut Ctx<'_, Self>) {
        if !cx.link.switched {
            self.pause_writing(cx);
        }
    }
}

impl<P: Protocol> Handles<ResumeWriting> for P {
    type Result = ();

    fn handle(&mut self, _: ResumeWriting, cx: &mut Ctx<'_, Self>) {
        if !cx.link.switched {
            self.resume_writing(cx);
        }
    }
}

impl<P: Protocol> Handles<TimedOut> for P {
    type Result = ();

    fn handle(&mut self, msg: TimedOut, cx: &mut Ctx<'_, Self>) {
        if !cx.link.switched {
            self.timed_out(msg.timeout, cx);
        }
    }
}

impl<P: Protocol> Handles<ConnectionLost> for P {
    type Result = ();

    fn handle(&mut self, ConnectionLost(err): ConnectionLost, cx: &mut Ctx<'_, Self>) {
        if !cx.link.switched {
            self.connection_lost(err, cx);
        }
        cx.stop();
    }
}

/// Stops a protocol actor that never got its connection: the switch to it failed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
#[doc(hidden)]
pub struct Abandoned;

impl<P: Protocol> Handles<Abandoned> for P {
    type Result = ();

    fn handle(&mut self, _: Abandoned, cx: &mut Ctx<'_, Self>) {
        cx.stop();
    }
}

/// One way to take an item out of an inbox: [`Inbox::next`], or [`Inbox::finish`] at EOF.
type Step<P> =
    fn(&mut <<P as Protocol>::Codec as Codec>::Inbox) -> Option<Result<Item<P>, DecodeError<P>>>;

/// Decoding, for the events that carry bytes.
trait Drain: Protocol {
    /// Delivers what is decoded and not yet delivered, then the EOF if it came, unless a
    /// [`Ctx::wait`] is in progress: then the rest waits for it (`wait` calls this again when it
    /// is done), so items are handled one after the other, as their requests came.
    fn proceed(&mut self, cx: &mut Ctx<'_, Self>) {
        self.drain(cx, Inbox::next);
        if cx.ctx.waiting() {
            return;
        }
        drop(cx.link.ack.take()); // the next chunk may come
        if cx.link.switched {
            return;
        }
        if cx.link.closing.get() {
            return; // a dropped EOF decision closes, as the protocol asked
        }
        let Some(eof) = cx.link.eof.take() else {
            return;
        };
        self.drain(cx, Inbox::finish);
        if cx.link.switched {
            return;
        }
        if cx.ctx.waiting() {
            // The last item's work is in progress: the EOF is decided after it.
            cx.link.eof = Some(eof);
            return;
        }
        if self.eof_received(cx) {
            eof.keep_open();
        }
    }

    /// Delivers every item `step` takes out of the inbox, until none is left, the protocol
    /// switched away, closed the connection or started a [`Ctx::wait`], or the codec is stuck:
    /// a second error in a row over the same bytes (one error that takes no byte is not enough:
    /// `LinesCodec` skips the long line at the next call), which is not reported again.
    fn drain(&mut self, cx: &mut Ctx<'_, Self>, step: Step<Self>) {
        let mut failed_in_place = false;
        while !cx.link.switched && !cx.link.closing.get() && !cx.ctx.waiting() {
            let before = cx.link.inbox.buffered();
            match step(&mut cx.link.inbox) {
                None => break,
                Some(Ok(item)) => {
                    failed_in_place = false;
                    self.data_received(item, cx);
                }
                Some(Err(err)) => {
                    let in_place = cx.link.inbox.buffered() == before;
                    if in_place && failed_in_place {
                        break;
                    }
                    failed_in_place = in_place;
                    self.decode_error(err, cx);
                }
            }
        }
    }
}

impl<P: Protocol> Drain for P {}

/// What a [`Protocol`]'s callbacks act through: its transport, its framing, and its actor.
///
/// The commands go to the transport in the order called, fire-and-forget; replies and
/// acknowledgements come back through [`transport`](Self::transport) and
/// [`spawn`](Self::spawn).
pub struct Ctx<'a, P: Protocol> {
    ctx: &'a mut Context<ProtocolActor<P>>,
    link: &'a mut Link<P>,
}

impl<P: Protocol> Ctx<'_, P> {
    /// The transport's handle, for every command and request (`get_extra_info`, `write_acked`,
    /// `set_write_buffer_limits`).
    pub fn transport(&self) -> &TransportHandle {
        &self.link.transport
    }

    /// How many bytes were received and are not decoded into an item yet: a request under
    /// way, for a protocol that times each request from its first byte (a slow client that
    /// sends a byte a second keeps the transport's idle timer happy).
    pub fn buffered(&self) -> usize {
        self.link.inbox.buffered()
    }

    /// Writes `data`, fire-and-forget (asyncio's `transport.write`).
    pub fn write(&self, data: impl Into<Bytes>) {
        self.link.transport.write(data);
    }

    /// Encodes `item` with the protocol's codec and writes it. A codec that cannot encode it
    /// (a frame over `LengthDelimitedCodec`'s limit) aborts the connection, with the error
    /// logged: the peer would otherwise miss a frame. [`try_send`](Self::try_send) returns the
    /// error instead.
    pub fn send<I>(&mut self, item: I)
    where
        P::Codec: Encoder<I>,
        <P::Codec as Encoder<I>>::Error: fmt::Display,
    {
        if let Err(err) = self.try_send(item) {
            tracing::error!(%err, "aborting: an item the codec cannot encode");
            self.abort();
        }
    }

    /// Encodes every item with the protocol's codec into one buffer and writes it with one
    /// `Write`: a batch of replies costs one message and, usually, one system call. Fails as
    /// [`send`](Self::send) does, after writing the items encoded before the one that failed.
    pub fn send_all<I>(&mut self, items: impl IntoIterator<Item = I>)
    where
        P::Codec: Encoder<I>,
        <P::Codec as Encoder<I>>::Error: fmt::Display,
    {
        let (frames, encoded) = self.link.inbox.encode(items);
        if !frames.is_empty() {
            self.write(frames);
        }
        if let Err(err) = encoded {
            tracing::error!(%err, "aborting: an item the codec cannot encode");
            self.abort();
        }
    }

    /// Encodes `item` with the protocol's codec and writes it, or returns why it cannot.
    pub fn try_send<I>(&mut self, item: I) -> Result<(), <P::Codec as Encoder<I>>::Error>
    where
        P::Codec: Encoder<I>,
    {
        let (frame, encoded) = self.link.inbox.encode([item]);
        encoded?;
        self.write(frame);
        Ok(())
    }

    /// Shuts the write side down once the buffer is flushed (asyncio's `write_eof`).
    pub fn write_eof(&self) {
        self.link.transport.write_eof();
    }

    /// Closes after flushing what is buffered (asyncio's `close`).
    ///
    /// The items already decoded from the chunk at hand are not delivered after it: a protocol
    /// that closes on a bad request does not go on to serve the one pipelined behind it.
    pub fn close(&self) {
        self.link.closing.set(true);
        self.link.transport.close();
    }

    /// Closes at once, discarding what is buffered (asyncio's `abort`).
    pub fn abort(&self) {
        self.link.closing.set(true);
        self.link.transport.abort();
    }

    /// Stops reading until [`resume_reading`](Self::resume_reading). As in asyncio, where the
    /// chunk at hand was one `data_received`, the items already decoded from it are still
    /// delivered; the transport delivers nothing more.
    pub fn pause_reading(&mut self) {
        self.link.paused = true;
        self.tell_reading();
    }

    /// Resumes reading (unless writes wait and the default
    /// [`Protocol::pause_writing`] holds it).
    pub fn resume_reading(&mut self) {
        self.link.paused = false;
        self.tell_reading();
    }

    /// Holds reading while writes wait, or releases it: what the default
    /// [`Protocol::pause_writing`] and [`Protocol::resume_writing`] do. Independent of
    /// [`pause_reading`](Self::pause_reading): reading goes on when neither holds it.
    pub fn hold_reading(&mut self, hold: bool) {
        self.link.held = hold;
        self.tell_reading();
    }

    fn tell_reading(&mut self) {
        let pause = self.link.reading_paused();
        if pause != self.link.told_paused {
            self.link.told_paused = pause;
            if pause {
                self.link.transport.do_send(PauseReading);
            } else {
                self.link.transport.do_send(ResumeReading);
            }
        }
    }

    /// Replaces the codec (one with a tighter limit, say), keeping what is not decoded yet.
    pub fn set_codec(&mut self, codec: P::Codec) {
        self.link.inbox.set_codec(codec);
    }

    /// Hands the connection to `protocol` (asyncio's `set_protocol`), with every byte received
    /// and not yet decoded: it receives them first, after its `connection_made`. This protocol
    /// receives nothing more, and its actor stops once the transport has taken the new one.
    /// Returns the new protocol's address.
    pub fn switch_to<Q: Protocol>(&mut self, protocol: Q) -> Addr<ProtocolActor<Q>> {
        self.switch_with(protocol, Bytes::new())
    }

    /// [`switch_to`](Self::switch_to), handing the new protocol `unread` first: bytes this one
    /// took out of a chunk and did not use (after a hand-parsed HTTP request, say).
    pub fn switch_with<Q: Protocol>(
        &mut self,
        protocol: Q,
        unread: impl Into<Bytes>,
    ) -> Addr<ProtocolActor<Q>> {
        let mut leftover = BytesMut::from(&unread.into()[..]);
        leftover.extend_from_slice(&self.link.inbox.take_leftover());
        let (addr, handle) = ProtocolActor::start(protocol, &self.link.transport);
        self.link.switched = true;
        let switched = self.link.transport.send(SetProtocol {
            protocol: handle,
            leftover: leftover.freeze(),
        });
        let new = addr.clone();
        self.ctx.spawn(fut::wrap_future(switched).map(
            move |taken, _, ctx: &mut Context<ProtocolActor<P>>| {
                if taken.is_err() {
                    // The transport stopped first: nothing will ever reach the new protocol.
                    new.do_send(Abandoned);
                }
                ctx.stop();
            },
        ));
        addr
    }

    /// Upgrades the connection to TLS in place (asyncio's `loop.start_tls`), handing the
    /// transport what was received and not decoded: if any byte is, the peer sent it before
    /// the handshake, and the transport refuses the upgrade (see [`StartTls::unconsumed`]).
    /// `then` runs with the handshake's result before the protocol handles anything else, as
    /// [`wait`](Self::wait) runs it: a refusal reaches it before the `connection_lost` that
    /// follows. The codec, as [`set_codec`](Self::set_codec) left it, decodes what comes over
    /// TLS.
    pub fn start_tls(
        &mut self,
        start: StartTls,
        then: impl FnOnce(Result<(), TlsError>, &mut P, &mut Ctx<'_, P>) + 'static,
    ) {
        let unread = self.link.inbox.buffered() > 0;
        let start = start.unconsumed(self.link.inbox.take_leftover());
        if unread {
            // Refused: the connection ends, and nothing more is decoded.
            self.link.inbox = P::Codec::inbox();
        } else {
            // Nothing was left: the same codec goes on, over TLS.
            let inbox = std::mem::replace(&mut self.link.inbox, P::Codec::inbox());
            self.link.inbox = inbox.into_codec().inbox_with();
        }
        let done = self.link.transport.start_tls(start);
        self.wait(done, then);
    }

    /// Runs `future` in the actor and then `then` with its output, with this protocol and a
    /// fresh `Ctx` (cancelled if the actor stops first).
    pub fn spawn<F: Future + 'static>(
        &mut self,
        future: F,
        then: impl FnOnce(F::Output, &mut P, &mut Ctx<'_, P>) + 'static,
    ) -> SpawnHandle {
        self.ctx.spawn(fut::wrap_future(future).map(
            move |output, actor: &mut ProtocolActor<P>, ctx| {
                let (protocol, mut cx) =
                    ProtocolActor::cx(&mut actor.protocol, &mut actor.link, ctx);
                then(output, protocol, &mut cx);
            },
        ))
    }

    /// Awaits `future` inside the protocol, as an `await` inside an asyncio callback: the actor
    /// handles nothing else until it is done, then `then` runs with its output. The items
    /// decoded behind the one that waits, the transport's next delivery and the peer's EOF all
    /// wait for it, so `then` may [`switch_to`](Self::switch_to) another protocol and lose
    /// nothing the peer sent meanwhile. For work whose answer must come before the next
    /// request's (a database lookup a reply waits for). A future that never resolves stalls the
    /// protocol: bound it with a timeout.
    pub fn wait<F: Future + 'static>(
        &mut self,
        future: F,
        then: impl FnOnce(F::Output, &mut P, &mut Ctx<'_, P>) + 'static,
    ) {
        self.ctx.wait(fut::wrap_future(future).map(
            move |output, actor: &mut ProtocolActor<P>, ctx| {
                let (protocol, mut cx) =
                    ProtocolActor::cx(&mut actor.protocol, &mut actor.link, ctx);
                then(output, protocol, &mut cx);
                // The items and the EOF that came behind the one that waited.
                protocol.proceed(&mut cx);
            },
        ));
    }

    /// Runs `then` once the current callback and every item already decoded from the current
    /// chunk have been handled (asyncio's `call_soon`): to answer a batch of pipelined requests
    /// with one write, say. It runs before the actor yields to the runtime, so the transport
    /// has not run in between: a producer that writes a chunk per `call_soon` never sees
    /// [`pause_writing`](Protocol::pause_writing). A producer waits for room with
    /// `cx.spawn(cx.transport().write_ready(chunk), ...)` instead.
    pub fn call_soon(&mut self, then: impl FnOnce(&mut P, &mut Ctx<'_, P>) + 'static) {
        self.spawn(std::future::ready(()), move |(), protocol, cx| {
            then(protocol, cx)
        });
    }

    /// Runs `then` after `delay` (a timer; cancelled if the actor stops first, or with
    /// [`cancel`](Self::cancel)).
    pub fn run_later(
        &mut self,
        delay: Duration,
        then: impl FnOnce(&mut P, &mut Ctx<'_, P>) + 'static,
    ) -> SpawnHandle {
        self.ctx
            .run_later(delay, move |actor: &mut ProtocolActor<P>, ctx| {
                let (protocol, mut cx) =
                    ProtocolActor::cx(&mut actor.protocol, &mut actor.link, ctx);
                then(protocol, &mut cx);
            })
    }

    /// Runs `each` every `period`, until the actor stops or [`cancel`](Self::cancel).
    pub fn run_interval(
        &mut self,
        period: Duration,
        mut each: impl FnMut(&mut P, &mut Ctx<'_, P>) + 'static,
    ) -> SpawnHandle {
        self.ctx
            .run_interval(period, move |actor: &mut ProtocolActor<P>, ctx| {
                let (protocol, mut cx) =
                    ProtocolActor::cx(&mut actor.protocol, &mut actor.link, ctx);
                each(protocol, &mut cx);
            })
    }

    /// Cancels a timer or future started with [`spawn`](Self::spawn),
    /// [`run_later`](Self::run_later) or [`run_interval`](Self::run_interval).
    pub fn cancel(&mut self, handle: SpawnHandle) -> bool {
        self.ctx.cancel_future(handle)
    }

    /// The protocol's address, for messages it [`Handles`].
    pub fn address(&self) -> Addr<ProtocolActor<P>> {
        self.ctx.address()
    }

    /// Stops the protocol's actor; the transport then aborts the connection. To end the
    /// connection, [`close`](Self::close) instead: the actor stops after `connection_lost`.
    pub fn stop(&mut self) {
        self.ctx.stop();
    }

    /// The actor's own actix context, for what this type does not wrap.
    pub fn context(&mut self) -> &mut Context<ProtocolActor<P>> {
        self.ctx
    }
}

impl<P: Protocol> fmt::Debug for Ctx<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx")
            .field("transport", &self.link.transport)
            .field("switched", &self.link.switched)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
