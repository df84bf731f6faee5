//! [`serve`]: TLS servers, whose accepted connections go through their handshake on their
//! worker before their transport and protocol start.

use std::{io, sync::Arc};

use bytes::Bytes;
use switchboard_framework::IntoProtocol;
use tokio::net::{TcpStream, ToSocketAddrs};

use super::{
    acceptor::TlsAcceptor,
    layer::{MaybeTls, handshake},
};
use crate::{
    runtime,
    server::{self, Open, Opening, ServerHandle, ServerOptions},
    tcp::TcpListen,
};

/// Serves TLS on every address `addr` resolves to, with the default [`ServerOptions`]: each
/// connection's protocol is made after its handshake, on its worker.
pub async fn serve<F, P>(
    addr: impl ToSocketAddrs,
    acceptor: TlsAcceptor,
    factory: F,
) -> io::Result<ServerHandle>
where
    F: Fn() -> P + Send + Sync + 'static,
    P: IntoProtocol + 'static,
{
    serve_with(addr, ServerOptions::default(), acceptor, factory).await
}

/// [`serve`] with chosen options.
pub async fn serve_with<F, P>(
    addr: impl ToSocketAddrs,
    options: ServerOptions,
    acceptor: TlsAcceptor,
    factory: F,
) -> io::Result<ServerHandle>
where
    F: Fn() -> P + Send + Sync + 'static,
    P: IntoProtocol + 'static,
{
    runtime::require_system("tls::serve")?;
    let listeners = TcpListen::bind_all(addr, options.backlog, options.start_serving).await?;
    Ok(server::start(
        listeners,
        options,
        Handshakes(Arc::new(acceptor)),
        factory,
    ))
}

/// A TLS server's accepted connections go through the handshake first.
struct Handshakes(Arc<TlsAcceptor>);

impl Open<TcpStream> for Handshakes {
    type Io = MaybeTls<TcpStream>;

    fn handshakes(&self) -> bool {
        true
    }

    fn max_handshakes(&self) -> usize {
        self.0.max_handshakes
    }

    fn open(&self, io: TcpStream) -> Opening<Self::Io> {
        let started = self
            .0
            .setup()
            .and_then(|setup| MaybeTls::handshaking(setup, io, Bytes::new()));
        Opening::Handshake(Box::pin(async move { Ok(handshake(started?).await?) }))
    }
}
