//! The generic stream transport: one actor over any `AsyncRead + AsyncWrite` that implements
//! every guarantee of a switchboard stream transport once, for TCP, Unix sockets and every kind
//! that builds on it.
//!
//! A transport kind is a [`StreamIo`]: the I/O object plus what it knows about itself (extra
//! info, whether it can half-close, how to abort). [`spawn`] starts a transport over one and
//! attaches the protocol the factory makes, in this order: the transport is created paused, the
//! protocol is attached, `ConnectionMade` is queued to it, and only then does reading start.
//!
//! ```
//! use switchboard_framework::prelude::*;
//! use switchboard_transports::stream::{self, StreamConfig};
//!
//! /// Answers in capitals.
//! struct Shout;
//! impl Protocol for Shout {
//!     type Codec = Raw;
//!     fn data_received(&mut self, data: Bytes, cx: &mut Ctx<'_, Self>) {
//!         cx.write(data.to_ascii_uppercase());
//!     }
//! }
//!
//! # #[actix::main]
//! # async fn main() -> std::io::Result<()> {
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! let (ours, mut theirs) = tokio::net::UnixStream::pair()?;
//! let (transport, _shout) = stream::spawn(ours, StreamConfig::default(), || Shout);
//! theirs.write_all(b"hello").await?;
//! let mut buf = [0; 5];
//! theirs.read_exact(&mut buf).await?;
//! assert_eq!(&buf, b"HELLO");
//! transport.close();
//! assert_eq!(theirs.read(&mut buf).await?, 0, "close sends EOF");
//! # Ok(())
//! # }
//! ```

mod transport;

use std::{
    io,
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use bytes::Bytes;
use switchboard_core::{check_max_write_buffer, check_timeout};
use switchboard_framework::{
    DEFAULT_HIGH_WATER_MARK, DEFAULT_MAX_WRITE_BUFFER, ExtraInfo, IntoProtocol, TlsError,
    TlsErrorKind, TlsSettings, TransportHandle, WriteBufferLimits, keys,
};
use tokio::io::{AsyncRead, AsyncWrite};

#[cfg(test)]
pub(crate) use transport::MAX_ACTOR_SIZE;
pub use transport::{StreamTransport, live_transports};

pub use switchboard_core::stream::DEFAULT_READ_BUFFER_LIMIT;

/// How long a write may make no progress before the connection is aborted with a
/// [`WriteError::Stalled`](switchboard_framework::WriteError::Stalled) error: 30 s.
pub const DEFAULT_WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `Close` reads and discards what the peer still sends after our FIN, so the kernel
/// does not answer unread data with a reset that destroys bytes the peer has not read: 1 s.
pub const DEFAULT_CLOSE_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// The most bytes a transport reads in one wake-up before it yields to its mailbox and to other
/// actors, so a flood cannot starve `Abort` or timers: 256 KiB.
pub const MAX_READ_PER_WAKEUP: usize = 256 * 1024;

pub use switchboard_core::stream::Direction;

/// An I/O object a stream transport can own.
///
/// Implemented for `tokio::net::TcpStream` and `tokio::net::UnixStream` (and for one end of a
/// `UnixStream::pair`), and for the two ends of a pipe ([`ReadPipe`](crate::pipe::ReadPipe),
/// [`WritePipe`](crate::pipe::WritePipe)). A new stream kind implements this and reuses the
/// whole transport.
pub trait StreamIo: AsyncRead + AsyncWrite + Unpin + 'static {
    /// The value of an extra-info key (`peername`, `sockname`, `socket`, ...), or `None` for a
    /// key this kind does not know.
    fn extra_info(&self, name: &str) -> Option<ExtraInfo>;

    /// The extra-info keys that keep answering once the transport has stopped, as asyncio
    /// keeps them: every key this kind knows but its descriptor, which is closed by then. Their
    /// values are read as the transport lets go of the I/O object; the peer's address is also
    /// recorded when the transport starts, before a reset can take it away (`getpeername` then
    /// fails). The default: `peername` and `sockname`.
    fn lasting_keys(&self) -> &'static [&'static str] {
        &[keys::PEERNAME, keys::SOCKNAME]
    }

    /// The write-buffer limits of this kind when none were chosen: 64 KiB / 16 KiB, asyncio's,
    /// by default; a TLS stream's are 512 KiB / 128 KiB
    /// ([`DEFAULT_TLS_HIGH_WATER_MARK`](switchboard_framework::DEFAULT_TLS_HIGH_WATER_MARK)).
    /// Asked when the transport starts, and again after an upgrade
    /// ([`poll_upgrade`](Self::poll_upgrade)).
    fn default_write_buffer_limits(&self) -> WriteBufferLimits {
        WriteBufferLimits::default()
    }

    /// After the peer's EOF: the error that says its stream did not end cleanly, if it did
    /// not. A TLS stream that ends without the peer's close_notify is truncated
    /// ([`TlsErrorKind::Truncated`]): the
    /// transport delivers what it read, then no `EofReceived`: it closes, and ends with
    /// `ConnectionLost(Some(err))`. Asked only while the protocol is still reading: after a
    /// `Close`, what the peer sends is discarded, and how its stream ends changes nothing the
    /// protocol received. The default, for kinds with no closing message of their own: never.
    fn unclean_end(&self) -> Option<std::io::Error> {
        None
    }

    /// Which ways the stream carries bytes; a socket is [`Direction::Duplex`], the default.
    fn direction(&self) -> Direction {
        Direction::Duplex
    }

    /// For a [`Direction::WriteOnly`] stream: ready once nobody can read what it writes any
    /// more (a pipe whose read end is closed). The transport polls it while it has nothing to
    /// write and then ends with `ConnectionLost(None)`, without waiting for a write to fail, as
    /// asyncio's write pipes do. The default never becomes ready.
    fn poll_reader_closed(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        let _ = cx;
        Poll::Pending
    }

    /// Whether the write side can be shut down while reading goes on.
    fn can_write_eof(&self) -> bool {
        true
    }

    /// Prepares an abortive close, called just before the transport drops the I/O object on
    /// `Abort`: TCP sets `SO_LINGER` to zero so the peer sees a reset.
    fn prepare_abort(&self) {}

    /// Whether dropping the I/O object closes the connection completely once the peer has sent
    /// its EOF, so that `Close` can skip the shutdown then. True for TCP and Unix sockets, whose
    /// `close(2)` sends the FIN. The default, false, always shuts down first: a layer with a
    /// closing message of its own (TLS's close_notify) keeps it.
    fn drop_closes_after_eof(&self) -> bool {
        false
    }

    /// Whether an in-place upgrade of the I/O object would be accepted now.
    ///
    /// An upgrade changes what the I/O object speaks without changing the transport: the
    /// protocol keeps its handle, and the transport its flow control and queues.
    /// [`StartTls`](switchboard_framework::StartTls) is the one upgrade the framework sends; its
    /// settings, opaque here, are what [`start_upgrade`](Self::start_upgrade) receives, and its
    /// reply is the error type of the three hooks. The transport asks this when the command
    /// arrives, calls `start_upgrade` once every write queued before the command is written,
    /// then drives [`poll_upgrade`](Self::poll_upgrade) to its end while it holds later writes
    /// back. The default refuses with [`TlsErrorKind::Unsupported`]: the kind cannot be
    /// upgraded (the I/O object of the TCP and Unix-socket transports can, with the `tls`
    /// feature).
    fn check_upgrade(&self) -> Result<(), TlsError> {
        Err(TlsError::new(
            TlsErrorKind::Unsupported,
            "this transport cannot be upgraded in place",
        ))
    }

    /// Begins the upgrade with the settings the command carried, reading `prefix` (bytes the
    /// transport read and was told to hand over) before the I/O object's own.
    fn start_upgrade(&mut self, settings: TlsSettings, prefix: Bytes) -> Result<(), TlsError> {
        let _ = (settings, prefix);
        self.check_upgrade()
    }

    /// Drives the upgrade [`start_upgrade`](Self::start_upgrade) began (a handshake, say);
    /// ready at once when none is under way. Once it is ready with `Ok`, the transport asks
    /// the kind's other hooks again ([`can_write_eof`](Self::can_write_eof),
    /// [`default_write_buffer_limits`](Self::default_write_buffer_limits), ...): the upgraded
    /// object may answer them differently. An `Err` ends the connection with it.
    fn poll_upgrade(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), TlsError>> {
        let _ = cx;
        Poll::Ready(Ok(()))
    }
}

/// The settings of one stream transport. Start from `StreamConfig::default()` and change what
/// you need.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamConfig {
    /// The write-buffer limits at the start; `None` (the default) takes the transport kind's
    /// own: 64 KiB / 16 KiB for TCP, Unix sockets and pipes, 512 KiB / 128 KiB over TLS (as
    /// asyncio), see [`StreamIo::default_write_buffer_limits`]. A plaintext transport upgraded
    /// with `StartTls` takes the TLS defaults then, unless limits were chosen here or with
    /// `SetWriteBufferLimits`.
    pub write_buffer_limits: Option<WriteBufferLimits>,
    /// See [`DEFAULT_READ_BUFFER_LIMIT`].
    pub read_buffer_limit: usize,
    /// See [`DEFAULT_WRITE_STALL_TIMEOUT`]; `None` waits forever, as asyncio does.
    pub write_stall_timeout: Option<Duration>,
    /// See [`DEFAULT_CLOSE_DRAIN_TIMEOUT`].
    pub close_drain_timeout: Duration,
    /// The most bytes the write buffer may hold; past it the connection is aborted and
    /// `ConnectionLost` carries [`WriteError::BufferFull`](switchboard_framework::WriteError).
    /// See [`DEFAULT_MAX_WRITE_BUFFER`]. At least the high-water mark; a TLS transport whose
    /// default high-water mark (512 KiB) is above it pauses at this maximum instead.
    pub max_write_buffer: usize,
    /// How long the connection may go without reading or writing a byte before it is ended
    /// (or its protocol told, if it handles [`TimedOut`](switchboard_framework::TimedOut)).
    /// `None` (the default) waits forever, as asyncio does; servers facing the internet should
    /// set it, as the examples do.
    pub idle_timeout: Option<Duration>,
    /// How long the connection may go from its start without receiving a byte before it is
    /// ended (or its protocol told). `None` (the default) waits forever. A server whose client
    /// speaks first (HTTP) sets a short one, so a silent connection costs a descriptor briefly.
    pub first_byte_timeout: Option<Duration>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            write_buffer_limits: None,
            read_buffer_limit: DEFAULT_READ_BUFFER_LIMIT,
            write_stall_timeout: Some(DEFAULT_WRITE_STALL_TIMEOUT),
            close_drain_timeout: DEFAULT_CLOSE_DRAIN_TIMEOUT,
            max_write_buffer: DEFAULT_MAX_WRITE_BUFFER,
            idle_timeout: None,
            first_byte_timeout: None,
        }
    }
}

impl StreamConfig {
    /// The default settings of pipe transports ([`pipe`](crate::pipe), and the pipes of a
    /// [`subprocess`](crate::subprocess)): those of a socket, without the write stall timeout. A
    /// reader that is slow for a while (a child busy before it reads its stdin, a pager) is
    /// normal for a pipe, and a reader that is gone makes the write fail at once, so asyncio's
    /// behaviour, waiting for as long as it takes, is the right default there.
    pub fn for_pipes() -> Self {
        StreamConfig::default().write_stall_timeout(None)
    }

    /// Sets the initial write-buffer limits, instead of the transport kind's defaults.
    pub fn write_buffer_limits(mut self, limits: WriteBufferLimits) -> Self {
        self.write_buffer_limits = Some(limits);
        self
    }

    /// Sets the read-buffer limit (at least 1 byte).
    pub fn read_buffer_limit(mut self, limit: usize) -> Self {
        self.read_buffer_limit = limit.max(1);
        self
    }

    /// Sets the write stall timeout; `None` disables it.
    pub fn write_stall_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.write_stall_timeout = timeout;
        self
    }

    /// Sets how long `Close` drains inbound data.
    pub fn close_drain_timeout(mut self, timeout: Duration) -> Self {
        self.close_drain_timeout = timeout;
        self
    }

    /// Sets the most bytes the write buffer may hold (see [`DEFAULT_MAX_WRITE_BUFFER`]). A
    /// maximum below the high-water mark (the chosen one, else the TCP default, 64 KiB) is
    /// refused with `InvalidInput`.
    pub fn max_write_buffer(mut self, max: usize) -> io::Result<Self> {
        self.max_write_buffer = max;
        self.check()?;
        Ok(self)
    }

    /// Sets the idle timeout; `None` disables it. A zero timeout is refused with
    /// `InvalidInput`.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> io::Result<Self> {
        self.idle_timeout = check_timeout("idle timeout", timeout)?;
        Ok(self)
    }

    /// Sets the first-byte timeout; `None` disables it. A zero timeout is refused with
    /// `InvalidInput`.
    pub fn first_byte_timeout(mut self, timeout: Option<Duration>) -> io::Result<Self> {
        self.first_byte_timeout = check_timeout("first-byte timeout", timeout)?;
        Ok(self)
    }

    /// Checks the settings as a whole (their fields are public, so they may have been set one
    /// by one): a maximum write buffer below the high-water mark or a zero timeout is refused
    /// with `InvalidInput`. Servers and connections check their settings before they start.
    pub fn check(&self) -> io::Result<()> {
        let high = self
            .write_buffer_limits
            .map_or(DEFAULT_HIGH_WATER_MARK, |limits| limits.high());
        check_max_write_buffer(self.max_write_buffer, high)?;
        check_timeout("idle timeout", self.idle_timeout)?;
        check_timeout("first-byte timeout", self.first_byte_timeout)?;
        Ok(())
    }
}

/// Starts a stream transport over `io` on the current arbiter and attaches the protocol that
/// `protocol` makes (call `.start()` inside it, so the protocol lives on the same arbiter).
///
/// Returns the transport's handle and what the protocol's [`IntoProtocol`] gives back, usually
/// its `Addr`. The protocol receives `ConnectionMade` before anything else. `protocol` is called
/// here, in the caller's code: a panic in it propagates to the caller, with `io` dropped.
///
/// # Panics
///
/// Outside an actix arbiter (under `#[tokio::main]`, say), with a message that says so.
pub fn spawn<IO, P>(
    io: IO,
    config: StreamConfig,
    protocol: impl FnOnce() -> P,
) -> (TransportHandle, P::Output)
where
    IO: StreamIo,
    P: IntoProtocol,
{
    crate::runtime::assert_arbiter("stream::spawn");
    StreamTransport::start(io, config, protocol(), None)
}
