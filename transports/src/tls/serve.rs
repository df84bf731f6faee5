//! [`serve`]: TLS servers, whose accepted connections go through their handshake on their
//! worker before their transport and protocol start.

use std::{io, sync::Arc};

use bytes::Bytes;
use switchboard_framework::IntoProtocol;
use tokio::{
    net::{TcpStream, ToSocketAddrs},
    sync::Semaphore,
};

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
    options.stream.check()?;
    let listeners = TcpListen::bind_all(addr, options.backlog, options.start_serving).await?;
    let places = Arc::new(Semaphore::new(acceptor.max_handshakes));
    Ok(server::start(
        listeners,
        options,
        Handshakes {
            acceptor: Arc::new(acceptor),
            places,
        },
        factory,
    ))
}

/// A TLS server's accepted connections go through the handshake first.
struct Handshakes {
    acceptor: Arc<TlsAcceptor>,
    /// The handshakes that may run at once ([`TlsAcceptor::max_handshakes`]).
    places: Arc<Semaphore>,
}

impl Open<TcpStream> for Handshakes {
    type Io = MaybeTls<TcpStream>;

    /// A connection takes a handshake place only once its client has spoken: a client that
    /// connects and sends nothing holds a descriptor for the ClientHello timeout, and no place,
    /// so silent connections cannot lock real clients out of their handshakes. The accept loop
    /// goes on meanwhile (the connection limit bounds the silent ones). A client that sent its
    /// ClientHello waits its turn for a place if every one is taken; each frees within the
    /// handshake timeout, which then runs for the client's own handshake.
    fn open(&self, io: TcpStream) -> Opening<Self::Io> {
        let acceptor = Arc::clone(&self.acceptor);
        let places = Arc::clone(&self.places);
        Opening::Handshake(Box::pin(async move {
            let wait = acceptor.client_hello_timeout;
            // A peek, not `readable()`, which may report readiness that is not there: this
            // waits for a byte (or the end) to be really in the socket.
            match tokio::time::timeout(wait, io.peek(&mut [0; 1])).await {
                Ok(peeked) => {
                    peeked?;
                }
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no ClientHello within {wait:?}"),
                    ));
                }
            }
            // In turn (the semaphore is fair): each place frees within the handshake timeout,
            // and the handshake then has its whole timeout. Counting the wait in the timeout
            // would leave a client that queued behind stalled handshakes a few milliseconds
            // of it, and cut it off mid-handshake.
            let _place = places.acquire_owned().await.map_err(io::Error::other)?;
            let setup = acceptor.setup()?;
            Ok(handshake(MaybeTls::handshaking(setup, io, Bytes::new())?).await?)
        }))
    }
}
