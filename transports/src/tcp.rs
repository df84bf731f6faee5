//! TCP: `connect` (asyncio's `create_connection`) and `serve` (asyncio's `create_server`), both
//! thin uses of the generic [stream transport](crate::stream).
//!
//! Sockets get `TCP_NODELAY`, as asyncio sets it. Extra info: `peername`, `sockname` (an
//! [`SocketAddress::Inet`]) and `socket`. `Abort` resets the connection (`SO_LINGER` 0).
//!
//! ```
//! use switchboard_framework::prelude::*;
//! use switchboard_transports::tcp;
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
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! let server = tcp::serve("127.0.0.1:0", || Echo).await?;
//! let addr = server.addresses()[0].as_inet().unwrap();
//!
//! let mut client = tokio::net::TcpStream::connect(addr).await?;
//! client.write_all(b"ping").await?;
//! let mut reply = [0; 4];
//! client.read_exact(&mut reply).await?;
//! assert_eq!(&reply, b"ping");
//! drop(client);
//!
//! server.close().await;
//! server.close_clients().await;
//! server.wait_closed().await;
//! # Ok(())
//! # }
//! ```

use std::{
    io, net,
    os::fd::AsRawFd,
    task::{Context as TaskContext, Poll, ready},
};

use switchboard_framework::{
    AddressFamily, ExtraInfo, IntoProtocol, SocketAddress, SocketInfo, SocketKind, TransportHandle,
    keys,
};
use tokio::net::{TcpListener, TcpSocket, TcpStream, ToSocketAddrs, lookup_host};

use crate::{
    factory, runtime,
    server::{self, Detach, Direct, Listen, ServerHandle, ServerOptions, ServerSocket},
    stream::{StreamConfig, StreamIo, StreamTransport},
    upgradable::upgradable,
};

impl StreamIo for TcpStream {
    fn extra_info(&self, name: &str) -> Option<ExtraInfo> {
        match name {
            keys::PEERNAME => self.peer_addr().ok().map(ExtraInfo::from),
            keys::SOCKNAME => self.local_addr().ok().map(ExtraInfo::from),
            keys::SOCKET => {
                let family = self
                    .local_addr()
                    .map_or(AddressFamily::Inet, |addr| AddressFamily::of(&addr));
                Some(SocketInfo::new(self.as_raw_fd(), family, SocketKind::Stream).into())
            }
            _ => None,
        }
    }

    fn prepare_abort(&self) {
        if let Err(err) = self.set_zero_linger() {
            tracing::debug!(%err, "could not set SO_LINGER 0 before abort");
        }
    }

    fn drop_closes_after_eof(&self) -> bool {
        true
    }
}

/// Opens TCP connections with chosen settings; [`connect`] uses the defaults.
#[derive(Debug, Clone, Default)]
pub struct TcpConnector {
    config: StreamConfig,
    local_addr: Option<net::SocketAddr>,
}

impl TcpConnector {
    /// A connector with the default settings.
    pub fn new() -> Self {
        TcpConnector::default()
    }

    /// Sets the transport's settings.
    pub fn config(mut self, config: StreamConfig) -> Self {
        self.config = config;
        self
    }

    #[cfg_attr(not(feature = "tls"), expect(dead_code, reason = "used by TLS"))]
    pub(crate) fn stream_config(&self) -> &StreamConfig {
        &self.config
    }

    /// Binds the local end to this address before connecting (asyncio's `local_addr`).
    pub fn local_addr(mut self, addr: net::SocketAddr) -> Self {
        self.local_addr = Some(addr);
        self
    }

    /// Connects to the first address of `addr` that accepts, in resolution order, then starts a
    /// transport on the current arbiter with the protocol `protocol` makes.
    ///
    /// Returns once the transport is started; the protocol receives `ConnectionMade` before
    /// any other event. When every address fails, the error is the last one. The protocol is
    /// made once connected; a `protocol` that panics closes the socket and returns a
    /// [`FactoryPanicked`](switchboard_framework::FactoryPanicked) error.
    pub async fn connect<P: IntoProtocol>(
        &self,
        addr: impl ToSocketAddrs,
        protocol: impl FnOnce() -> P,
    ) -> io::Result<(TransportHandle, P::Output)> {
        runtime::require_arbiter("tcp::connect")?;
        self.config.check()?;
        let stream = self.open(addr).await?;
        let protocol = factory::make(protocol)?;
        Ok(StreamTransport::start(
            upgradable(stream),
            self.config.clone(),
            protocol,
            None,
        ))
    }

    pub(crate) async fn open(&self, addr: impl ToSocketAddrs) -> io::Result<TcpStream> {
        let mut last_err = None;
        for target in lookup_host(addr).await? {
            match self.open_one(target).await {
                Ok(stream) => return Ok(stream),
                Err(err) => last_err = Some(err),
            }
        }
        Err(last_err.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "address resolved to nothing")
        }))
    }

    async fn open_one(&self, target: net::SocketAddr) -> io::Result<TcpStream> {
        let socket = match target {
            net::SocketAddr::V4(_) => TcpSocket::new_v4()?,
            net::SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(local) = self.local_addr {
            socket.bind(local)?;
        }
        let stream = socket.connect(target).await?;
        stream.set_nodelay(true)?;
        Ok(stream)
    }
}

/// Connects to `addr` and starts a transport with the protocol `protocol` makes (asyncio's
/// `create_connection`). Returns the transport's handle and the protocol's address.
pub async fn connect<P: IntoProtocol>(
    addr: impl ToSocketAddrs,
    protocol: impl FnOnce() -> P,
) -> io::Result<(TransportHandle, P::Output)> {
    TcpConnector::new().connect(addr, protocol).await
}

/// Listens on every address `addr` resolves to and serves each connection with a protocol
/// from `factory`, with the default [`ServerOptions`] (asyncio's `create_server`).
pub async fn serve<F, P>(addr: impl ToSocketAddrs, factory: F) -> io::Result<ServerHandle>
where
    F: Fn() -> P + Send + Sync + 'static,
    P: IntoProtocol + 'static,
{
    serve_with(addr, ServerOptions::default(), factory).await
}

/// [`serve`] with chosen options.
pub async fn serve_with<F, P>(
    addr: impl ToSocketAddrs,
    options: ServerOptions,
    factory: F,
) -> io::Result<ServerHandle>
where
    F: Fn() -> P + Send + Sync + 'static,
    P: IntoProtocol + 'static,
{
    runtime::require_system("tcp::serve")?;
    options.stream.check()?;
    let listeners = TcpListen::bind_all(addr, options.backlog, options.start_serving).await?;
    Ok(server::start(
        listeners,
        options,
        Direct(upgradable::<TcpStream>),
        factory,
    ))
}

/// A TCP server socket: listening, or bound only until the server starts serving
/// (`start_serving(false)`), so that connections are refused until then, as asyncio's are.
pub(crate) struct TcpListen {
    state: TcpListenState,
    socket: ServerSocket,
}

enum TcpListenState {
    Bound(TcpSocket),
    Listening(TcpListener),
    /// `listen(2)` failed.
    Failed,
}

impl TcpListen {
    /// Binds every address `addr` resolves to, and listens on each at once if `listen`.
    pub(crate) async fn bind_all(
        addr: impl ToSocketAddrs,
        backlog: u32,
        listen: bool,
    ) -> io::Result<Vec<Self>> {
        let mut listeners = Vec::new();
        for target in lookup_host(addr).await? {
            let mut listener = TcpListen::bind(target)?;
            if listen {
                listener.listen(backlog)?;
            }
            listeners.push(listener);
        }
        if listeners.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "address resolved to nothing",
            ));
        }
        Ok(listeners)
    }

    fn bind(addr: net::SocketAddr) -> io::Result<Self> {
        let socket = match addr {
            net::SocketAddr::V4(_) => TcpSocket::new_v4()?,
            net::SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr).map_err(|err| {
            io::Error::new(err.kind(), format!("could not bind on {addr}: {err}"))
        })?;
        let local = socket.local_addr()?;
        let info = SocketInfo::new(
            socket.as_raw_fd(),
            AddressFamily::of(&local),
            SocketKind::Stream,
        );
        Ok(TcpListen {
            state: TcpListenState::Bound(socket),
            socket: ServerSocket::new(SocketAddress::Inet(local), info),
        })
    }
}

impl Listen for TcpListen {
    type Io = TcpStream;

    fn listen(&mut self, backlog: u32) -> io::Result<()> {
        match std::mem::replace(&mut self.state, TcpListenState::Failed) {
            TcpListenState::Bound(socket) => {
                let address = &self.socket.address;
                let listener = socket.listen(backlog).map_err(|err| {
                    io::Error::new(err.kind(), format!("could not listen on {address}: {err}"))
                })?;
                self.state = TcpListenState::Listening(listener);
            }
            state => self.state = state,
        }
        Ok(())
    }

    fn poll_accept(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<TcpStream>> {
        let TcpListenState::Listening(listener) = &self.state else {
            return Poll::Pending;
        };
        let (stream, _) = ready!(listener.poll_accept(cx))?;
        if let Err(err) = stream.set_nodelay(true) {
            // The peer may already be gone; that is this connection's business alone (an
            // accept error would make the whole server back off).
            tracing::debug!(%err, "could not set TCP_NODELAY on an accepted connection");
        }
        Poll::Ready(Ok(stream))
    }

    fn socket(&self) -> ServerSocket {
        self.socket.clone()
    }

    fn close(self) {}
}

/// A [`TcpListen`] on its way to another arbiter: a bound socket is registered with no runtime
/// yet, so it moves as it is.
pub(crate) enum DetachedTcpListen {
    Bound(TcpSocket),
    Listening(net::TcpListener),
}

impl Detach for TcpListen {
    type Detached = (DetachedTcpListen, ServerSocket);

    fn detach(self) -> io::Result<Self::Detached> {
        let state = match self.state {
            TcpListenState::Bound(socket) => DetachedTcpListen::Bound(socket),
            TcpListenState::Listening(listener) => {
                DetachedTcpListen::Listening(listener.into_std()?)
            }
            TcpListenState::Failed => {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the socket failed to listen",
                ));
            }
        };
        Ok((state, self.socket))
    }

    fn attach((state, socket): Self::Detached) -> io::Result<Self> {
        let state = match state {
            DetachedTcpListen::Bound(socket) => TcpListenState::Bound(socket),
            DetachedTcpListen::Listening(listener) => {
                TcpListenState::Listening(TcpListener::from_std(listener)?)
            }
        };
        Ok(TcpListen { state, socket })
    }
}

impl Detach for TcpStream {
    type Detached = net::TcpStream;

    fn detach(self) -> io::Result<net::TcpStream> {
        self.into_std()
    }

    fn attach(detached: net::TcpStream) -> io::Result<TcpStream> {
        TcpStream::from_std(detached)
    }
}
