//! Protocol events: the messages a transport delivers to its protocol, always with `do_send`,
//! and the tokens inside them that carry the protocol's answer back.

use std::{fmt, io};

use actix::{Message, Recipient};
use bytes::Bytes;

use crate::TransportHandle;

/// The transport is ready; it carries the handle to command it with. The first event every
/// protocol attached to a transport receives, a switched-to protocol included.
///
/// Like [`DataReceived`], it carries an [`Ack`]: the transport reads nothing from the socket and
/// delivers nothing more until it is released, by default when the handler returns. So whatever
/// the handler sends (`PauseReading`, `SetWriteBufferLimits`, a greeting `Write`) takes effect
/// before the first byte is read, as asyncio honours `pause_reading()` inside `connection_made`.
/// A protocol that needs more time to set up keeps the `Ack` and drops it when ready.
///
/// The handle's type is the transport's kind: a [`TransportHandle`] for every stream transport
/// (the default, so `Handler<ConnectionMade>` is a stream protocol's handler), a
/// [`SubprocessHandle`](crate::SubprocessHandle) for a subprocess transport.
#[derive(Debug)]
#[non_exhaustive]
pub struct ConnectionMade<T = TransportHandle> {
    /// The handle to command the transport with; keep a clone.
    pub transport: T,
    /// The acknowledgement; dropping it lets the transport start delivering.
    pub ack: Ack,
}

impl<T> ConnectionMade<T> {
    /// An attachment to `transport`, acknowledged by `ack`. For transports and tests.
    pub fn new(transport: T, ack: Ack) -> Self {
        ConnectionMade { transport, ack }
    }
}

impl<T: 'static> Message for ConnectionMade<T> {
    type Result = ();
}

/// Bytes from the peer (asyncio's `data_received`): never empty, in order, never duplicated.
///
/// At most one `DataReceived` per transport is in flight (counting the [`ConnectionMade`] before
/// it). The [`Ack`] inside goes back to the transport when it is dropped, which by default is when the handler returns and the message
/// is dropped with it; only then is the next chunk delivered. Bytes that arrive meanwhile are
/// coalesced into that next chunk. A protocol that wants to slow the peer down keeps the `Ack`
/// (`let DataReceived { data, ack, .. } = msg;`) and drops it when it is ready for more; the
/// transport buffers up to its read-buffer limit, then stops reading the socket, so the peer
/// feels TCP back-pressure.
///
/// Because the `Ack` is sent after everything the handler sent, a [`SetProtocol`](crate::SetProtocol)
/// sent from the handler always takes effect before the next byte is delivered.
#[derive(Debug, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub struct DataReceived {
    /// The bytes.
    pub data: Bytes,
    /// The acknowledgement; dropping it asks for the next chunk.
    pub ack: Ack,
}

impl DataReceived {
    /// A delivery of `data` acknowledged by `ack`. For transports and tests.
    pub fn new(data: Bytes, ack: Ack) -> Self {
        DataReceived { data, ack }
    }
}

/// The acknowledgement of one [`ConnectionMade`] or [`DataReceived`]: dropping it tells the
/// transport the protocol is ready for the next chunk.
pub struct Ack {
    target: Option<(AckTarget, u64)>,
}

/// Where an [`Ack`] goes when it is dropped.
enum AckTarget {
    /// A stream transport, through its handle.
    Transport(TransportHandle),
    /// Any other actor that counts deliveries (a subprocess transport).
    Actor(Recipient<DeliveryAcked>),
}

impl Ack {
    /// An acknowledgement of delivery `seq` that goes back to `transport`. For transports.
    pub fn new(transport: TransportHandle, seq: u64) -> Self {
        Ack {
            target: Some((AckTarget::Transport(transport), seq)),
        }
    }

    /// An acknowledgement of delivery `seq` that goes back to any actor handling
    /// [`DeliveryAcked`]. For transports that are not stream transports.
    pub fn to(recipient: Recipient<DeliveryAcked>, seq: u64) -> Self {
        Ack {
            target: Some((AckTarget::Actor(recipient), seq)),
        }
    }

    /// An acknowledgement that goes nowhere, for delivering to a protocol by hand in tests.
    pub fn detached() -> Self {
        Ack { target: None }
    }

    /// The delivery this acknowledges, if it belongs to a transport.
    pub fn seq(&self) -> Option<u64> {
        self.target.as_ref().map(|(_, seq)| *seq)
    }

    /// Acknowledges now (the same as dropping it; reads better where it is deliberate).
    pub fn release(self) {}
}

impl Drop for Ack {
    fn drop(&mut self) {
        match self.target.take() {
            Some((AckTarget::Transport(transport), seq)) => {
                transport.port().acked(DeliveryAcked { seq });
            }
            Some((AckTarget::Actor(recipient), seq)) => recipient.do_send(DeliveryAcked { seq }),
            None => {}
        }
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ack").field("seq", &self.seq()).finish()
    }
}

/// The peer shut its write side down (asyncio's `eof_received`). Delivered once, after every
/// byte, and never while reading is paused.
///
/// It carries a decision. Dropping the message (the default, and what happens when the protocol
/// does not handle this event) closes the transport after flushing what is buffered, as asyncio
/// does when `eof_received` returns a false value; [`keep_open`](Self::keep_open) keeps the
/// half-open connection so the protocol can go on writing and close later.
#[derive(Debug, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub struct EofReceived {
    decision: EofDecision,
}

impl EofReceived {
    /// An EOF whose decision goes back to `transport`. For transports.
    pub fn new(transport: TransportHandle) -> Self {
        EofReceived {
            decision: EofDecision {
                target: Some(transport),
                keep_open: false,
            },
        }
    }

    /// An EOF whose decision goes nowhere, for tests.
    pub fn detached() -> Self {
        EofReceived {
            decision: EofDecision {
                target: None,
                keep_open: false,
            },
        }
    }

    /// Keeps the connection open for writing after the peer's EOF.
    pub fn keep_open(mut self) {
        self.decision.keep_open = true;
    }

    /// Closes the connection after flushing (the same as dropping the message).
    pub fn close(self) {}
}

struct EofDecision {
    target: Option<TransportHandle>,
    keep_open: bool,
}

impl Drop for EofDecision {
    fn drop(&mut self) {
        if let Some(transport) = self.target.take() {
            transport.port().eof_decided(EofDecided {
                keep_open: self.keep_open,
            });
        }
    }
}

impl fmt::Debug for EofDecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EofDecision")
            .field("keep_open", &self.keep_open)
            .finish()
    }
}

/// The connection is gone (asyncio's `connection_lost`): `None` after `Close`, `Abort` or a clean
/// EOF, `Some(err)` after an I/O error or a stalled write. The last event, exactly once, to the
/// protocol attached at the end; nothing follows it.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ConnectionLost(pub Option<io::Error>);

/// The transport's write buffer went over its high-water mark: stop writing until
/// [`ResumeWriting`]. Strictly alternates with it. A [`Protocol`](crate::Protocol) stops reading
/// until `ResumeWriting` by default; a raw protocol that ignores it is bounded by the
/// transport's maximum write buffer alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "()")]
pub struct PauseWriting;

/// An idle or first-byte timeout of the transport ran out (see
/// `StreamConfig::idle_timeout` in `switchboard-transports`), so that the protocol can say
/// goodbye first (an SMTP server's `421`) and close; a [`Protocol`](crate::Protocol) closes by
/// default. If the same timeout runs out once more, the transport ends the connection itself:
/// `ConnectionLost` then carries an error of kind `TimedOut` whose source is the
/// [`Timeout`](crate::Timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
#[non_exhaustive]
pub struct TimedOut {
    /// Which timeout, and how long it was.
    pub timeout: crate::Timeout,
}

impl TimedOut {
    /// The event for `timeout`. For transports and tests.
    pub fn new(timeout: crate::Timeout) -> Self {
        TimedOut { timeout }
    }
}

/// The write buffer drained to its low-water mark: writing may go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Message)]
#[rtype(result = "()")]
pub struct ResumeWriting;

/// Transport-side: the protocol finished with delivery `seq`. Sent by dropping an [`Ack`];
/// protocols never send it themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct DeliveryAcked {
    /// The delivery acknowledged.
    pub seq: u64,
}

/// Transport-side: the protocol's answer to [`EofReceived`]. Sent by dropping the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Message)]
#[rtype(result = "()")]
pub struct EofDecided {
    /// Whether to keep the half-open connection.
    pub keep_open: bool,
}
