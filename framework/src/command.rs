//! Transport commands: the messages a protocol (or anyone holding a
//! [`TransportHandle`](crate::TransportHandle)) sends to a transport.

use std::{borrow::Cow, io};

use actix::Message;
use bytes::Bytes;

use crate::{ExtraInfo, InvalidWriteBufferLimits, ProtocolHandle, TransportStats};

/// Writes bytes (asyncio's `write`). Never blocks the sender.
///
/// With `do_send` it is fire-and-forget. With `send` the reply is the write's one outcome:
/// `Ok(())` once every byte reached the kernel (not the peer), or the error that stopped it
/// (see [`WriteError`](crate::WriteError)). Writes sent after `Close`, `Abort` or `WriteEof` are
/// refused with a logged warning and never reach the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write(pub Bytes);

impl Write {
    /// A write of these bytes.
    pub fn new(data: impl Into<Bytes>) -> Self {
        Write(data.into())
    }
}

impl Message for Write {
    type Result = io::Result<()>;
}

/// Writes several buffers as one unit (asyncio's `writelines`): they go out in order, with
/// nothing from another write between them, gathered into vectored writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteVectored(pub Vec<Bytes>);

impl Message for WriteVectored {
    type Result = io::Result<()>;
}

/// Shuts the write side down once every buffered byte is written (asyncio's `write_eof`).
///
/// The reply comes once the shutdown happened; it is an `Unsupported` error on a transport that
/// cannot half-close (see [`CanWriteEof`]). Reading goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "io::Result<()>")]
pub struct WriteEof;

/// Waits for room in the write buffer (asyncio's `await writer.drain()`): the reply comes once
/// the buffer is at or below its low-water mark, at once if writing is not paused, or with the
/// error that ended the connection first. A producer outside an actor awaits it between writes
/// ([`TransportHandle::write_ready`](crate::TransportHandle::write_ready) does both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "io::Result<()>")]
pub struct Drain;

/// Whether the transport can shut down its write side alone (asyncio's `can_write_eof`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "bool")]
pub struct CanWriteEof;

/// Closes gracefully (asyncio's `close`): stop reading, flush every buffered byte, shut the write
/// side down, drain what the peer still sends for a moment, then `ConnectionLost(None)`.
/// Idempotent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "()")]
pub struct Close;

/// Closes at once (asyncio's `abort`): discard the write buffer, fail every pending acknowledged
/// write, reset the connection, then `ConnectionLost(None)`. Idempotent; overrides `Close`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "()")]
pub struct Abort;

/// Whether `Close` or `Abort` has been handled (asyncio's `is_closing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "bool")]
pub struct IsClosing;

/// Stops deliveries to the protocol, buffered bytes included, and stops reading the socket.
/// Idempotent, accepted in every state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "()")]
pub struct PauseReading;

/// Undoes [`PauseReading`]. Idempotent, accepted in every state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "()")]
pub struct ResumeReading;

/// Whether the transport is reading: not paused, not at EOF, not closing (asyncio's `is_reading`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "bool")]
pub struct IsReading;

/// The number of bytes buffered and not yet accepted by the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "usize")]
pub struct GetWriteBufferSize;

/// The write-buffer limits as `(low, high)`, the order asyncio returns them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "(usize, usize)")]
pub struct GetWriteBufferLimits;

/// Sets the write-buffer limits, derived as asyncio derives them (see
/// [`WriteBufferLimits::from_options`](crate::WriteBufferLimits::from_options)); both edges are
/// re-evaluated at once. `low > high` is refused and the old limits stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "Result<(), InvalidWriteBufferLimits>")]
pub struct SetWriteBufferLimits {
    /// The high-water mark, or `None` for the default.
    pub high: Option<usize>,
    /// The low-water mark, or `None` for `high / 4`.
    pub low: Option<usize>,
}

/// Re-addresses the transport to another protocol (asyncio's `set_protocol`); the reply is the
/// previous protocol.
///
/// Processed in the transport's FIFO: sent from inside a `DataReceived` handler it takes effect
/// for the very next byte. `leftover` is the tail of the chunk the old protocol did not consume;
/// the new protocol receives `ConnectionMade`, then `PauseWriting` if writing is paused, then the
/// leftover bytes before anything else. The old protocol receives nothing more.
#[derive(Debug, Message)]
#[rtype(result = "ProtocolHandle")]
pub struct SetProtocol {
    /// The protocol to deliver to from now on.
    pub protocol: ProtocolHandle,
    /// Bytes the old protocol received but did not consume, delivered to the new one first.
    pub leftover: Bytes,
}

impl SetProtocol {
    /// A switch to this protocol: a [`RawProtocol`](crate::RawProtocol) actor's `Addr` or a
    /// [`ProtocolHandle`]. To switch to a
    /// [`Protocol`](crate::Protocol) value, use [`Ctx::switch_to`](crate::Ctx::switch_to) or
    /// [`TransportHandle::set_protocol`](crate::TransportHandle::set_protocol), which know the
    /// transport it will run for.
    pub fn new(protocol: impl Into<ProtocolHandle>) -> Self {
        SetProtocol {
            protocol: protocol.into(),
            leftover: Bytes::new(),
        }
    }

    /// Hands the bytes the old protocol did not consume to the new one.
    pub fn with_leftover(mut self, leftover: impl Into<Bytes>) -> Self {
        self.leftover = leftover.into();
        self
    }
}

/// The protocol the transport delivers to now (asyncio's `get_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "ProtocolHandle")]
pub struct GetProtocol;

/// One value of the transport's extra information (asyncio's `get_extra_info(name, default)`):
/// the value, or `default` for a key the transport does not know. Never an error.
#[derive(Debug, Clone, PartialEq, Eq, Message)]
#[rtype(result = "Option<ExtraInfo>")]
pub struct GetExtraInfo {
    /// The key, e.g. [`keys::PEERNAME`](crate::keys::PEERNAME).
    pub name: Cow<'static, str>,
    /// What to return when the key is unknown.
    pub default: Option<ExtraInfo>,
}

impl GetExtraInfo {
    /// Asks for `name`, with no default.
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        GetExtraInfo {
            name: name.into(),
            default: None,
        }
    }

    /// Sets the value returned for an unknown key.
    pub fn or(mut self, default: impl Into<ExtraInfo>) -> Self {
        self.default = Some(default.into());
        self
    }
}

/// The transport's counters (bytes, deliveries, buffer sizes and their peaks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "TransportStats")]
pub struct GetStats;
