//! TLS (feature `tls`, OpenSSL through tokio-openssl): [`connect`] and [`serve`], and
//! [`StartTls`](switchboard_framework::StartTls) on a live TCP or Unix-socket transport.
//!
//! TLS is a layer of the I/O object ([`MaybeTls`]), not an actor of its own: a TLS connection
//! is the same stream transport as a TCP one, with the same flow control, close and switching.
//! It differs where TLS does:
//!
//! * `ConnectionMade` comes after the handshake. A handshake that fails or times out never
//!   reaches the protocol: `connect` returns the error; a server drops the connection.
//! * `CanWriteEof` is false, and `EofReceived::keep_open` has no effect (TLS has no half-close,
//!   as in asyncio). `Close` sends close_notify before the TCP FIN.
//! * The extra-info keys `cipher`, `compression`, `peercert`, `sslcontext` and `ssl_object`
//!   answer, on top of the socket's.
//! * Clients verify the server's certificate and host name by default. Turning either off takes
//!   [`TlsConnector::danger_accept_invalid_certs`] or
//!   [`TlsConnector::danger_accept_invalid_hostnames`].
//! * Handshakes are bounded: [`DEFAULT_HANDSHAKE_TIMEOUT`], and on a server at most
//!   [`DEFAULT_MAX_HANDSHAKES`] at once. A server's connection takes a handshake place only
//!   once its ClientHello arrived, within [`DEFAULT_CLIENT_HELLO_TIMEOUT`]: clients that
//!   connect and say nothing cannot lock real ones out.
//!
//! ```
//! use switchboard_framework::prelude::*;
//! use switchboard_transports::tls::{self, SelfSigned};
//!
//! /// Echoes every byte back.
//! struct Echo;
//! impl Protocol for Echo {
//!     type Codec = Raw;
//!     fn data_received(&mut self, data: Bytes, cx: &mut Ctx<'_, Self>) {
//!         cx.write(data);
//!     }
//! }
//!
//! # #[actix::main]
//! # async fn main() -> std::io::Result<()> {
//! // A certificate for 127.0.0.1 and localhost, made now; the client trusts only it.
//! let cert = SelfSigned::new(&["localhost", "127.0.0.1"])?;
//! let server = tls::serve("127.0.0.1:0", cert.acceptor()?, || Echo).await?;
//! let addr = server.addresses()[0].to_string();
//!
//! let (client, _) = cert.connector()?.connect(&addr, || Echo).await?;
//! let cipher = client.cipher().await.expect("a TLS transport has a cipher");
//! assert!(cipher.protocol.starts_with("TLSv1."));
//! client.close();
//! server.close().await;
//! # Ok(())
//! # }
//! ```

mod acceptor;
mod connector;
pub(crate) mod layer;
mod self_signed;
mod serve;

pub use openssl;

pub use self::{
    acceptor::{DEFAULT_CLIENT_HELLO_TIMEOUT, DEFAULT_MAX_HANDSHAKES, TlsAcceptor},
    connector::{TlsConnector, connect},
    layer::{DEFAULT_HANDSHAKE_TIMEOUT, MaybeTls},
    self_signed::SelfSigned,
    serve::{serve, serve_with},
};
