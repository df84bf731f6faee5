#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![doc(test(attr(deny(warnings))))]
// docs.rs (`--cfg docsrs`, nightly): mark each item with the features it needs.
#![cfg_attr(docsrs, feature(doc_cfg))]

/// The actix runtime everything runs on (actix-rt): `rt::signal::ctrl_c()` to wait for Ctrl-C,
/// `rt::time`, `rt::spawn`, `rt::System`, without a dependency of your own.
pub use actix_rt as rt;
pub use switchboard_framework as framework;
pub use switchboard_transports as transports;

pub use switchboard_framework::*;
// Named, so that docs.rs does not mark it with tokio-util's `codec` feature: not a feature of
// this crate (the framework's dependency turns it on). The pages inside, tokio-util's own, keep
// tokio-util's badges.
#[cfg_attr(docsrs, doc(auto_cfg = false))]
pub use switchboard_framework::codec;
#[cfg(feature = "tls")]
pub use switchboard_transports::tls;
pub use switchboard_transports::{
    DatagramConfig, Direction, ServerHandle, ServerOptions, ShutdownReport, StreamConfig,
    TcpConnector, datagram, pipe, server, stream, subprocess, tcp, udp, unix, unix_datagram,
};

/// For implementers of transports, as `actix::dev`: the messages and traits between a
/// transport actor and a protocol's handle (acknowledgements, EOF decisions, write ledgers, the
/// death pact's watch) and the stream I/O trait, which a protocol author never names.
pub mod dev {
    pub use switchboard_framework::dev::*;
    pub use switchboard_transports::stream::StreamIo;
}

/// Test utilities (feature `test-util`): the socket-free mock transports (stream, datagram,
/// subprocess), probe and runners of [`framework::testing`], and the loopback servers, socket paths and certificates of
/// [`transports::testing`], in one place.
#[cfg(feature = "test-util")]
pub mod testing {
    pub use switchboard_framework::testing::*;
    pub use switchboard_transports::testing::*;
}

/// Everything a protocol author and a server author needs: `use switchboard::prelude::*;`.
pub mod prelude {
    pub use switchboard_framework::prelude::*;
    pub use switchboard_transports::prelude::*;
}
