//! The I/O object of the TCP and Unix-socket transports: with the `tls` feature, the TLS layer
//! over the socket, plaintext until a `StartTls` upgrades it in place; the socket itself
//! without it (a `StartTls` is then refused as `Unsupported`).
//!
//! Here rather than in `stream`, so that the generic stream transport knows nothing of TLS:
//! `tcp` and `unix` depend on the TLS layer, the stream transport only on [`StreamIo`]'s
//! upgrade hooks.

use crate::stream::StreamIo;

/// The I/O object of the TCP and Unix-socket transports, able to `StartTls` later.
#[cfg(feature = "tls")]
pub(crate) type Upgradable<S> = crate::tls::layer::MaybeTls<S>;
/// The I/O object of the TCP and Unix-socket transports: the socket itself without the `tls`
/// feature.
#[cfg(not(feature = "tls"))]
pub(crate) type Upgradable<S> = S;

/// Wraps a freshly connected or accepted socket as [`Upgradable`].
pub(crate) fn upgradable<S: StreamIo>(stream: S) -> Upgradable<S> {
    #[cfg(feature = "tls")]
    return crate::tls::layer::MaybeTls::plain(stream);
    #[cfg(not(feature = "tls"))]
    return stream;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::{MAX_ACTOR_SIZE, StreamTransport};

    #[test]
    fn tcp_and_unix_transports_stay_within_their_task_size_class() {
        // What `tcp::connect`, `tcp::serve` and their Unix-socket counterparts run.
        let size = std::mem::size_of::<StreamTransport<Upgradable<tokio::net::TcpStream>>>();
        assert!(size <= MAX_ACTOR_SIZE, "a TCP transport is {size} bytes");
        let size = std::mem::size_of::<StreamTransport<Upgradable<tokio::net::UnixStream>>>();
        assert!(size <= MAX_ACTOR_SIZE, "a Unix transport is {size} bytes");
    }
}
