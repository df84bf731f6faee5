//! [`Connection`]: a connection used from async code outside an actor — a CLI, a test, a
//! request/response client — as asyncio's streams are: items to await, writes that wait for
//! room, a future for the end.

use std::{
    fmt, io,
    pin::Pin,
    task::{Context as TaskContext, Poll},
};

use actix::{Actor, Context, Handler};
use bytes::Bytes;
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::Encoder;

use crate::dev::Inbox;
use crate::{
    Ack, Codec, ConnectionLost, ConnectionMade, DataReceived, EofReceived, IntoProtocol,
    PauseWriting, ProtocolHandle, Raw, ResumeWriting, TransportHandle, WriteError,
};

/// A connection used from async code outside an actor (asyncio's `open_connection` streams):
/// what it receives is a [`Stream`] of items decoded with its codec, writes wait for room in the
/// write buffer, and [`closed`](Self::closed) resolves when the connection is gone.
///
/// Pass its constructor where a protocol factory goes; the connection comes back as the
/// protocol's output:
///
/// ```
/// use switchboard_framework::{Connection, codec::LinesCodec, testing::MockTransport};
///
/// # switchboard_framework::testing::run(async {
/// let (mock, mut conn) = MockTransport::builder()
///     .attach(Connection::with_codec(LinesCodec::new()));
/// conn.send("PING").await.unwrap();
/// mock.expect_written("PING\n").await;
/// mock.push("PONG\n");
/// assert_eq!(conn.next().await.transpose().unwrap().as_deref(), Some("PONG"));
/// # });
/// ```
///
/// Over a socket it is the same: `let (_, conn) = tcp::connect(addr, Connection::new).await?`.
///
/// # Flow control
///
/// One chunk at a time: the transport delivers the next chunk once every item decoded from the
/// previous one was taken with [`next`](Self::next), so a connection that is not read stops its
/// transport reading, and the peer feels TCP back-pressure. [`write`](Self::write) and
/// [`send`](Self::send) wait while the write buffer is over its high-water mark, so a producer
/// that awaits them needs nothing else.
///
/// # The end
///
/// The peer's EOF ends the items (`next` gives `None`) but not the connection, as with asyncio's
/// streams: the connection stays open for writing until [`close`](Self::close), or until the
/// `Connection` is dropped, which closes it gracefully. An error ends the items with `Some(Err)`.
pub struct Connection<C: Codec = Raw> {
    transport: TransportHandle,
    incoming: mpsc::UnboundedReceiver<Incoming>,
    inbox: C::Inbox,
    /// The acknowledgement of the chunk being decoded: dropped once it yields nothing more.
    held: Option<Ack>,
    ended: Ended,
    end: watch::Receiver<Option<End>>,
}

/// A [`Connection`] to be made: what [`Connection::new`] and [`Connection::with_codec`] give,
/// to pass where a protocol factory goes. The `connect` (or the mock) returns the connection.
#[must_use = "a connection is made only when passed to a connect"]
pub struct Connect<C: Codec = Raw> {
    codec: C,
}

impl<C: Codec + fmt::Debug> fmt::Debug for Connect<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connect")
            .field("codec", &self.codec)
            .finish()
    }
}

/// What the forwarding actor hands the connection.
enum Incoming {
    Data(Bytes, Ack),
    Eof,
    Lost(Option<io::Error>),
}

/// How far the items have gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    No,
    /// The peer's EOF came; the last item (a line without its newline) is taken at the next call.
    Eof,
    /// Nothing more comes.
    Done,
}

/// How the connection ended, for every [`Connection::closed`].
#[derive(Debug, Clone)]
struct End(Option<(io::ErrorKind, String)>);

impl End {
    fn of(err: Option<&io::Error>) -> End {
        End(err.map(|err| (err.kind(), err.to_string())))
    }

    fn result(&self) -> io::Result<()> {
        match &self.0 {
            None => Ok(()),
            Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
        }
    }
}

impl Connection<Raw> {
    /// A connection that receives the bytes as they arrive, as [`Bytes`].
    #[allow(clippy::new_ret_no_self)] // what `connect` takes, and gives back a `Connection`
    pub fn new() -> Connect<Raw> {
        Connection::with_codec(Raw)
    }
}

impl<C: Codec> Connection<C> {
    /// A connection that decodes what it receives with `codec` (a `LinesCodec` with a maximum
    /// line length, say) and encodes what it [`send`](Self::send)s with it.
    pub fn with_codec(codec: C) -> Connect<C> {
        Connect { codec }
    }

    /// The transport's handle, for every other command, or to write from another task while
    /// this one reads ([`TransportHandle::write_ready`] waits for room as
    /// [`write`](Self::write) does).
    pub fn transport(&self) -> &TransportHandle {
        &self.transport
    }

    /// The next item received: `Some(Ok(item))`, `Some(Err(err))` for bytes the codec refuses
    /// or for the error that ended the connection, `None` after the peer's EOF or the end.
    pub async fn next(&mut self) -> Option<Result<C::Item, C::Error>> {
        std::future::poll_fn(|cx| self.poll_item(cx)).await
    }

    fn poll_item(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Result<C::Item, C::Error>>> {
        loop {
            match self.ended {
                Ended::Done => return Poll::Ready(None),
                Ended::Eof => {
                    self.ended = Ended::Done;
                    if let Some(last) = self.inbox.finish() {
                        return Poll::Ready(Some(last));
                    }
                    continue;
                }
                Ended::No => {}
            }
            if let Some(item) = self.inbox.next() {
                return Poll::Ready(Some(item));
            }
            // Everything the chunk held is taken: the transport may deliver the next.
            self.held = None;
            match self.incoming.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Incoming::Data(data, ack))) => {
                    self.inbox.push(data);
                    self.held = Some(ack);
                }
                Poll::Ready(Some(Incoming::Eof)) => self.ended = Ended::Eof,
                Poll::Ready(Some(Incoming::Lost(err))) => {
                    self.ended = Ended::Done;
                    if let Some(err) = err {
                        return Poll::Ready(Some(Err(err.into())));
                    }
                }
                Poll::Ready(None) => self.ended = Ended::Done,
            }
        }
    }

    /// Writes `data` once the write buffer has room
    /// ([`TransportHandle::write_ready`]), or fails with the error that ended the connection.
    pub async fn write(&self, data: impl Into<Bytes>) -> io::Result<()> {
        self.transport.write_ready(data).await
    }

    /// Encodes `item` with the codec and writes it once the write buffer has room.
    pub async fn send<I>(&mut self, item: I) -> Result<(), <C as Encoder<I>>::Error>
    where
        C: Encoder<I>,
    {
        let (frame, encoded) = self.inbox.encode([item]);
        encoded?;
        Ok(self.transport.write_ready(frame).await?)
    }

    /// Shuts the write side down once the buffer is flushed; resolves then (asyncio's
    /// `write_eof`, awaited).
    pub async fn write_eof(&self) -> io::Result<()> {
        let done = self.transport.send(crate::WriteEof);
        crate::transport::flatten(done.await)
    }

    /// Closes after flushing what is buffered; [`closed`](Self::closed) resolves once done.
    pub fn close(&self) {
        self.transport.close();
    }

    /// Closes at once, discarding what is buffered.
    pub fn abort(&self) {
        self.transport.abort();
    }

    /// Resolves once the connection is gone (asyncio's `wait_closed`): `Ok` for a clean end,
    /// the error that ended it otherwise. Any number of callers may wait.
    pub fn closed(&self) -> impl Future<Output = io::Result<()>> + use<C> {
        let mut end = self.end.clone();
        async move {
            match end.wait_for(Option::is_some).await {
                Ok(end) => end.as_ref().map_or(Ok(()), End::result),
                // The protocol actor went without a `ConnectionLost` (its arbiter stopped).
                Err(_) => Err(WriteError::Stopped.into()),
            }
        }
    }
}

impl<C: Codec> Stream for Connection<C> {
    type Item = Result<C::Item, C::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_item(cx)
    }
}

impl<C: Codec> Drop for Connection<C> {
    fn drop(&mut self) {
        self.close();
    }
}

impl<C: Codec> fmt::Debug for Connection<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("transport", &self.transport)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<C: Codec> IntoProtocol for Connect<C> {
    type Output = Connection<C>;

    fn into_protocol(self, transport: &TransportHandle) -> (Connection<C>, ProtocolHandle) {
        let (sender, incoming) = mpsc::unbounded_channel();
        let (end_sender, end) = watch::channel(None);
        let forwarder = Forwarder {
            incoming: Some(sender),
            end: Some(end_sender),
        }
        .start();
        let handle = ProtocolHandle::builder(forwarder)
            .eof_received()
            .write_flow()
            .build();
        let connection = Connection {
            transport: transport.clone(),
            incoming,
            inbox: C::inbox_with(self.codec),
            held: None,
            ended: Ended::No,
            end,
        };
        (connection, handle)
    }
}

/// The protocol actor of a [`Connection`]: it hands every event over to it.
struct Forwarder {
    incoming: Option<mpsc::UnboundedSender<Incoming>>,
    end: Option<watch::Sender<Option<End>>>,
}

impl Forwarder {
    fn forward(&self, incoming: Incoming) {
        if let Some(sender) = &self.incoming {
            // A connection dropped meanwhile closed its transport: nothing waits for this.
            let _ = sender.send(incoming);
        }
    }
}

impl Actor for Forwarder {
    type Context = Context<Self>;
}

impl Handler<ConnectionMade> for Forwarder {
    type Result = ();
    fn handle(&mut self, _: ConnectionMade, _: &mut Context<Self>) {}
}

impl Handler<DataReceived> for Forwarder {
    type Result = ();
    fn handle(&mut self, msg: DataReceived, _: &mut Context<Self>) {
        self.forward(Incoming::Data(msg.data, msg.ack));
    }
}

impl Handler<EofReceived> for Forwarder {
    type Result = ();
    fn handle(&mut self, eof: EofReceived, _: &mut Context<Self>) {
        // Half-open, as asyncio's streams: the connection may still write, and closes when told
        // or dropped.
        eof.keep_open();
        self.forward(Incoming::Eof);
    }
}

impl Handler<PauseWriting> for Forwarder {
    type Result = ();
    // Writes wait for room with `Drain`, which needs no event.
    fn handle(&mut self, _: PauseWriting, _: &mut Context<Self>) {}
}

impl Handler<ResumeWriting> for Forwarder {
    type Result = ();
    fn handle(&mut self, _: ResumeWriting, _: &mut Context<Self>) {}
}

impl Handler<ConnectionLost> for Forwarder {
    type Result = ();
    fn handle(&mut self, ConnectionLost(err): ConnectionLost, ctx: &mut Context<Self>) {
        if let Some(end) = self.end.take() {
            end.send_replace(Some(End::of(err.as_ref())));
        }
        self.forward(Incoming::Lost(err));
        self.incoming = None;
        actix::ActorContext::stop(ctx);
    }
}

#[cfg(test)]
mod tests;
