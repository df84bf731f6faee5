#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]

pub use switchboard_framework as framework;
pub use switchboard_transports as transports;

pub use switchboard_framework::*;
#[cfg(feature = "tls")]
pub use switchboard_transports::tls;
pub use switchboard_transports::{
    DatagramConfig, Direction, PROTOCOL_WATCH_INTERVAL, ServerHandle, ServerOptions, StreamConfig,
    StreamIo, TcpConnector, datagram, pipe, protocol_watch_sweeps, server, stream, subprocess, tcp,
    udp, unix, unix_datagram,
};

/// Everything a protocol author and a server author needs: `use switchboard::prelude::*;`.
pub mod prelude {
    pub use switchboard_framework::prelude::*;
    pub use switchboard_transports::prelude::*;
}
