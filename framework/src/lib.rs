//! The vocabulary of [switchboard]: asyncio's transports and protocols as actix actors.
//!
//! A *transport* is an actor that owns a socket (or a pipe, or a child process); a *protocol*
//! is any actor that handles the transport's events. They talk in typed messages:
//!
//! * transport commands, sent through a [`TransportHandle`]: [`Write`], [`WriteVectored`],
//!   [`WriteEof`], [`Close`], [`Abort`], [`PauseReading`], [`ResumeReading`],
//!   [`SetWriteBufferLimits`], [`SetProtocol`], [`StartTls`], [`GetExtraInfo`], and the queries
//!   ([`IsClosing`], [`IsReading`], [`CanWriteEof`], [`GetWriteBufferSize`],
//!   [`GetWriteBufferLimits`], [`GetProtocol`], [`GetStats`]);
//! * protocol events, delivered through a [`ProtocolHandle`]: [`ConnectionMade`],
//!   [`DataReceived`], [`EofReceived`], [`ConnectionLost`], [`PauseWriting`], [`ResumeWriting`];
//! * for subprocesses: the commands [`GetPid`], [`GetReturnCode`],
//!   [`GetPipeTransport`], [`SendSignal`], [`Terminate`] and [`Kill`] sent through a
//!   [`SubprocessHandle`], and the events [`PipeDataReceived`], [`PipeConnectionLost`] and
//!   [`ProcessExited`] delivered through a [`SubprocessProtocolHandle`];
//! * for datagram endpoints (UDP, Unix datagrams): the command [`SendTo`] (with `Close`,
//!   `Abort`, the reading and write-buffer commands and [`SetDatagramProtocol`]) sent through a
//!   [`DatagramHandle`], and the events [`DatagramReceived`] and [`ErrorReceived`] delivered
//!   through a [`DatagramProtocolHandle`].
//!
//! Switching the protocol of a live connection (STARTTLS, HTTP → WebSocket) is one
//! [`SetProtocol`]: the transport re-addresses where it delivers.
//!
//! This crate has no sockets; `switchboard-transports` has the transports, and the
//! `switchboard` crate re-exports both.
//!
//! # A protocol
//!
//! A protocol says what it does with each event; the framework runs it as an actor. This one
//! answers every chunk with its length, and is driven here by a mock transport, the way a
//! socket would drive it:
//!
//! ```
//! use switchboard_framework::prelude::*;
//!
//! struct Counter;
//!
//! impl Protocol for Counter {
//!     type Codec = Raw;
//!     fn data_received(&mut self, data: Bytes, cx: &mut Ctx<'_, Self>) {
//!         cx.write(format!("{} bytes\n", data.len()));
//!     }
//! }
//!
//! # switchboard_framework::testing::run(async {
//! // A transport with no socket (feature `test-util`): feed it bytes, read back the replies.
//! let mock = switchboard_framework::testing::MockTransport::connect(Counter).await;
//! mock.feed("hello").await;
//! mock.feed("hi").await;
//! assert_eq!(mock.written(), "5 bytes\n2 bytes\n");
//! # });
//! ```
//!
//! # Guarantees
//!
//! Transports built on this vocabulary promise what asyncio promises, and a few things it does
//! not: reading starts only after `ConnectionMade`; `ConnectionLost` comes exactly once, last;
//! at most one `DataReceived` is in flight, acknowledged by dropping it, so a slow protocol costs
//! bounded memory; `PauseWriting`/`ResumeWriting` strictly alternate around one watermark rule
//! ([`WriteFlow`](dev::WriteFlow)); every acknowledged write gets exactly one outcome
//! ([`WriteLedger`](dev::WriteLedger)); and a transport whose protocol actor stops aborts
//! (Akka's death pact). Datagram endpoints deliver one [`DatagramReceived`] per datagram, never
//! merged nor split, and report socket errors as [`ErrorReceived`] without ending.
//!
//! # Actor lifecycle
//!
//! What happens to a message when an actor stops:
//!
//! * **Protocol stops.** Its mailbox is dropped with whatever was in it. A `DataReceived` still
//!   queued drops its [`Ack`] and an `EofReceived` its decision, so the transport is never left
//!   waiting. The transport notices the protocol is gone at its next delivery, or within
//!   [`PROTOCOL_WATCH_INTERVAL`](dev::PROTOCOL_WATCH_INTERVAL) (half a second) if idle, and
//!   aborts: the socket is reset and its descriptor released. Every transport, and the test-util mock, watches its protocol with a
//!   [`ProtocolWatch`](dev::ProtocolWatch).
//! * **Transport stops.** It sends `ConnectionLost` from `stopped()`, so the protocol hears of it
//!   whatever the reason. Commands still queued in its mailbox are dropped: an acknowledged write
//!   among them resolves to an error carrying [`WriteError::Stopped`], a `send` of any other
//!   command to `MailboxError::Closed`, and a `do_send` after that point is logged and dropped.
//! * **Switch.** The old protocol keeps what it was already sent and receives nothing more; it
//!   may stop without affecting the transport.
//!
//! # Feature flags
//!
//! * `test-util` (off by default): the `testing` module, mock stream, datagram and subprocess
//!   transports, a recording probe protocol and test runners for unit-testing protocols with no
//!   socket. Enable it in `[dev-dependencies]` only.
//!
//! [switchboard]: https://docs.rs/switchboard
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]
// docs.rs (`--cfg docsrs`, nightly): mark each item with the features it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod authoring;
mod command;
mod connection;
mod datagram;
mod error;
mod event;
mod extra;
mod flow;
mod framing;
mod protocol;
mod stopped;
mod subprocess;
#[cfg(any(test, feature = "test-util"))]
// Automatic: "test or test-util"; only the feature concerns a reader.
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;
mod tls;
mod transport;
mod watch;

pub use authoring::{Codec, Ctx, DecodeError, Handles, Item, Protocol, ProtocolActor, Raw};
pub use command::{
    Abort, CanWriteEof, Close, Drain, GetExtraInfo, GetProtocol, GetStats, GetWriteBufferLimits,
    GetWriteBufferSize, IsClosing, IsReading, PauseReading, ResumeReading, SetProtocol,
    SetWriteBufferLimits, Write, WriteEof, WriteVectored,
};
pub use connection::{Connect, Connection};
pub use datagram::{
    DatagramHandle, DatagramProtocol, DatagramProtocolHandle, DatagramReceived, ErrorReceived,
    IntoDatagramProtocol, SendTo, SendToError, SetDatagramProtocol,
};
pub use error::{FactoryPanicked, ProcessGone};
pub use event::{
    Ack, ConnectionLost, ConnectionMade, DataReceived, EofReceived, PauseWriting, ResumeWriting,
    TimedOut,
};
pub use extra::{
    AddressFamily, ExtraInfo, ExtraObject, PipeEnd, PipeFileType, PipeInfo, ProcessInfo,
    SocketAddress, SocketInfo, SocketKind, UnixAddress, keys,
};
pub use framing::{DEFAULT_MAX_BUFFERED, Decoded, Framing};
pub use protocol::{IntoProtocol, ProtocolHandle, RawProtocol};
pub use subprocess::{
    GetPid, GetPipeTransport, GetReturnCode, IntoSubprocessProtocol, Kill, PipeClosed,
    PipeConnectionLost, PipeDataReceived, PipeOpened, ProcessExited, SendSignal, SubprocessHandle,
    SubprocessProtocol, SubprocessProtocolHandle, Terminate,
};
pub use tls::{
    BufferedPlaintext, Certificate, CipherInfo, StartTls, TlsError, TlsErrorKind, TlsSession,
    TlsSettings,
};
/// tokio-util's codecs, for [`Protocol::Codec`] and [`Framing`]: `LinesCodec`,
/// `LengthDelimitedCodec`, `AnyDelimiterCodec`, `BytesCodec`, and the `Decoder` and `Encoder`
/// traits to write one.
pub use tokio_util::codec;
pub use transport::TransportHandle;
// The vocabulary the I/O-free core defines, under the names protocol authors know.
pub use switchboard_core::{
    DEFAULT_HIGH_WATER_MARK, DEFAULT_LOW_WATER_MARK, DEFAULT_MAX_WRITE_BUFFER,
    DEFAULT_TLS_HIGH_WATER_MARK, DEFAULT_TLS_LOW_WATER_MARK, InvalidWriteBufferLimits, Timeout,
    TransportStats, WriteBufferLimits, WriteError,
};

/// For implementers of transports: what a transport needs of a protocol's handle that a
/// protocol author never names.
pub mod dev {
    pub use switchboard_core::{FlowEdge, Handles, WriteFlow};

    #[doc(hidden)]
    pub use crate::authoring::{Abandoned, Inbox, RawInbox};
    pub use crate::{
        datagram::{DatagramCommand, DatagramTransport},
        error::duplicate_error,
        event::{DeliveryAcked, EofDecided},
        flow::{WriteLedger, WriteReceipt, WriteReply},
        protocol::{LostHandled, ProtocolEvent},
        subprocess::{SubprocessCommand, SubprocessTransport},
        transport::{Transport, TransportCommand, TransportRequest},
        watch::{PROTOCOL_WATCH_INTERVAL, ProtocolWatch, Watchable, protocol_watch_sweeps},
    };
}

/// The names a protocol author needs: `use switchboard_framework::prelude::*;`.
pub mod prelude {
    pub use crate::{
        Abort, Ack, CanWriteEof, Close, ConnectionLost, ConnectionMade, DataReceived, EofReceived,
        ExtraInfo, GetExtraInfo, GetProtocol, GetStats, GetWriteBufferLimits, GetWriteBufferSize,
        IntoProtocol, IsClosing, IsReading, PauseReading, PauseWriting, ProtocolHandle,
        ResumeReading, ResumeWriting, SetProtocol, SetWriteBufferLimits, SocketAddress, StartTls,
        TimedOut, Timeout, TlsError, TransportHandle, Write, WriteEof, WriteError, WriteVectored,
        keys,
    };
    pub use crate::{
        Codec, Connection, Ctx, DecodeError, Framing, Handles, Protocol, ProtocolActor, Raw,
    };
    pub use crate::{
        DatagramHandle, DatagramProtocolHandle, DatagramReceived, ErrorReceived, SendTo,
        SendToError,
    };
    pub use crate::{
        GetPid, GetPipeTransport, GetReturnCode, Kill, PipeConnectionLost, PipeDataReceived,
        ProcessExited, ProcessGone, SendSignal, SubprocessHandle, SubprocessProtocolHandle,
        Terminate,
    };
    pub use bytes::{Bytes, BytesMut};
    pub use tokio_util::codec::{LengthDelimitedCodec, LinesCodec};
}
