//! UDP endpoints over IPv4 and IPv6 (asyncio's `create_datagram_endpoint`), thin uses of the
//! generic [datagram transport](crate::datagram).
//!
//! [`bind`] makes an endpoint that receives from anyone and sends where each [`SendTo`] says;
//! [`connect`] one that talks to one peer, so that ICMP errors (a closed port: `ConnectionRefused`)
//! reach its protocol as [`ErrorReceived`]; [`Endpoint`] sets both addresses and the socket
//! options (`reuse_port`, `allow_broadcast`).
//!
//! Extra info: `sockname`, `peername` (connected endpoints only) and `socket`.
//!
//! ```
//! use actix::prelude::*;
//! use switchboard_framework::prelude::*;
//! use switchboard_transports::udp;
//!
//! /// Answers every datagram with its length.
//! #[derive(Default)]
//! struct Lengths(Option<DatagramHandle>);
//! impl Actor for Lengths { type Context = Context<Self>; }
//! impl Handler<ConnectionMade<DatagramHandle>> for Lengths {
//!     type Result = ();
//!     fn handle(&mut self, msg: ConnectionMade<DatagramHandle>, _: &mut Context<Self>) {
//!         self.0 = Some(msg.transport);
//!     }
//! }
//! impl Handler<DatagramReceived> for Lengths {
//!     type Result = ();
//!     fn handle(&mut self, msg: DatagramReceived, _: &mut Context<Self>) {
//!         if let Some(endpoint) = &self.0 {
//!             endpoint.send_to(msg.data.len().to_string(), msg.addr);
//!         }
//!     }
//! }
//! impl Handler<ErrorReceived> for Lengths {
//!     type Result = ();
//!     fn handle(&mut self, _: ErrorReceived, _: &mut Context<Self>) {}
//! }
//! impl Handler<ConnectionLost> for Lengths {
//!     type Result = ();
//!     fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) { ctx.stop(); }
//! }
//!
//! # #[actix::main]
//! # async fn main() -> std::io::Result<()> {
//! let (endpoint, _) = udp::bind("127.0.0.1:0", || Lengths::default().start()).await?;
//! let addr = endpoint.local_addr().expect("bound");
//! let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
//! peer.send_to(b"hello", addr).await?;
//! let mut buf = [0; 16];
//! let (n, from) = peer.recv_from(&mut buf).await?;
//! assert_eq!((&buf[..n], from), (&b"5"[..], addr));
//! endpoint.close();
//! # Ok(())
//! # }
//! ```

use std::{
    io,
    net::SocketAddr,
    os::fd::AsRawFd,
    rc::Rc,
    task::{Context as TaskContext, Poll},
};

use futures::future::LocalBoxFuture;
use switchboard_framework::{
    AddressFamily, DatagramHandle, ExtraInfo, IntoDatagramProtocol, SendToError, SocketAddress,
    SocketInfo, SocketKind, keys,
};
#[cfg(doc)]
use switchboard_framework::{ErrorReceived, SendTo};
use tokio::{
    io::{Interest, ReadBuf},
    net::{ToSocketAddrs, UdpSocket},
};

use crate::{
    datagram::{self, DatagramConfig, DatagramSocket},
    factory, runtime,
};

impl DatagramSocket for UdpSocket {
    fn check_destination(&self, addr: &SocketAddress) -> Result<(), SendToError> {
        match addr {
            SocketAddress::Inet(_) => Ok(()),
            other => Err(SendToError::WrongFamily(other.clone())),
        }
    }

    fn poll_recv_from(
        &self,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<SocketAddress>> {
        UdpSocket::poll_recv_from(self, cx, buf).map_ok(SocketAddress::Inet)
    }

    fn poll_send_to(
        &self,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
        addr: &SocketAddress,
    ) -> Poll<io::Result<usize>> {
        match addr.as_inet() {
            Some(addr) => UdpSocket::poll_send_to(self, cx, buf, addr),
            None => Poll::Ready(Err(SendToError::WrongFamily(addr.clone()).into())),
        }
    }

    fn poll_send(&self, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        UdpSocket::poll_send(self, cx, buf)
    }

    fn error_ready(self: Rc<Self>) -> LocalBoxFuture<'static, io::Result<()>> {
        Box::pin(async move { self.ready(Interest::ERROR).await.map(drop) })
    }

    fn take_error(&self) -> io::Result<Option<io::Error>> {
        let err = UdpSocket::take_error(self)?;
        // Forget the readiness that announced it: `try_io` clears it on `WouldBlock`.
        let _ = self.try_io(Interest::ERROR, || {
            Err::<(), _>(io::ErrorKind::WouldBlock.into())
        });
        Ok(err)
    }

    fn sockname(&self) -> Option<SocketAddress> {
        self.local_addr().ok().map(SocketAddress::Inet)
    }

    fn peername(&self) -> Option<SocketAddress> {
        self.peer_addr().ok().map(SocketAddress::Inet)
    }

    fn extra_info(&self, name: &str) -> Option<ExtraInfo> {
        match name {
            keys::SOCKET => Some(
                SocketInfo::new(self.as_raw_fd(), AddressFamily::Inet, SocketKind::Datagram).into(),
            ),
            _ => None,
        }
    }
}

/// How to open a UDP endpoint: its local and remote addresses and socket options, as
/// asyncio's `create_datagram_endpoint` takes them.
///
/// ```
/// # use switchboard_transports::udp;
/// # #[allow(dead_code)]
/// # fn demo<P: switchboard_framework::IntoDatagramProtocol>(p: impl FnOnce() -> P) -> std::io::Result<()> {
/// let (endpoint, _) = udp::Endpoint::new()
///     .local_addr("0.0.0.0:9999".parse().unwrap())
///     .reuse_port(true)
///     .allow_broadcast(true)
///     .start(p)?;
/// # drop(endpoint);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "an endpoint does nothing until started"]
pub struct Endpoint {
    local_addr: Option<SocketAddr>,
    remote_addr: Option<SocketAddr>,
    reuse_port: bool,
    allow_broadcast: bool,
    config: DatagramConfig,
}

impl Endpoint {
    /// An endpoint with no address yet and the default settings.
    pub fn new() -> Self {
        Endpoint::default()
    }

    /// Binds to `addr` (port 0 picks a free port). Without it, the socket is bound to the
    /// unspecified address of the remote address's family, on a free port.
    pub fn local_addr(mut self, addr: SocketAddr) -> Self {
        self.local_addr = Some(addr);
        self
    }

    /// Connects to `addr`: sends without an address go there, only its datagrams are
    /// received, and ICMP errors about it reach `ErrorReceived`. With
    /// [`allow_broadcast`](Self::allow_broadcast) the socket is not connected and `addr` is only
    /// the default destination, as in asyncio.
    pub fn remote_addr(mut self, addr: SocketAddr) -> Self {
        self.remote_addr = Some(addr);
        self
    }

    /// Sets `SO_REUSEPORT`, so several sockets can bind the same address and port.
    pub fn reuse_port(mut self, on: bool) -> Self {
        self.reuse_port = on;
        self
    }

    /// Sets `SO_BROADCAST`, so datagrams may go to broadcast addresses.
    pub fn allow_broadcast(mut self, on: bool) -> Self {
        self.allow_broadcast = on;
        self
    }

    /// Sets the endpoint's settings.
    pub fn config(mut self, config: DatagramConfig) -> Self {
        self.config = config;
        self
    }

    /// Opens the socket and starts the endpoint on the current arbiter with the protocol
    /// `protocol` makes. Returns the endpoint's handle and the protocol's address.
    pub fn start<P: IntoDatagramProtocol>(
        self,
        protocol: impl FnOnce() -> P,
    ) -> io::Result<(DatagramHandle, P::Output)> {
        runtime::require_arbiter("udp::Endpoint::start")?;
        let socket = self.open()?;
        self.launch(socket, protocol)
    }

    fn launch<P: IntoDatagramProtocol>(
        self,
        socket: std::net::UdpSocket,
        protocol: impl FnOnce() -> P,
    ) -> io::Result<(DatagramHandle, P::Output)> {
        let connected = self.remote_addr.is_some() && !self.allow_broadcast;
        let socket = UdpSocket::from_std(socket)?;
        let protocol = factory::make(protocol)?;
        Ok(datagram::start(
            socket,
            self.remote_addr.map(SocketAddress::Inet),
            connected,
            self.config,
            || protocol,
        ))
    }

    fn open(&self) -> io::Result<std::net::UdpSocket> {
        use rustix::net::{self as net, SocketFlags, SocketType, sockopt};
        let local = match (self.local_addr, self.remote_addr) {
            (Some(local), _) => local,
            (None, Some(SocketAddr::V4(_))) => "0.0.0.0:0".parse().expect("an address"),
            (None, Some(SocketAddr::V6(_))) => "[::]:0".parse().expect("an address"),
            (None, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a UDP endpoint needs a local or a remote address",
                ));
            }
        };
        let family = match local {
            SocketAddr::V4(_) => net::AddressFamily::INET,
            SocketAddr::V6(_) => net::AddressFamily::INET6,
        };
        let fd = net::socket_with(
            family,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        if self.reuse_port {
            sockopt::set_socket_reuseport(&fd, true)?;
        }
        if self.allow_broadcast {
            sockopt::set_socket_broadcast(&fd, true)?;
        }
        net::bind(&fd, &local).map_err(|err| {
            let err = io::Error::from(err);
            io::Error::new(err.kind(), format!("could not bind on {local}: {err}"))
        })?;
        let socket = std::net::UdpSocket::from(fd);
        if let Some(remote) = self.remote_addr.filter(|_| !self.allow_broadcast) {
            socket.connect(remote).map_err(|err| {
                io::Error::new(err.kind(), format!("could not connect to {remote}: {err}"))
            })?;
        }
        Ok(socket)
    }
}

/// Binds a UDP endpoint to `addr` (resolved, each address tried in order until one binds) and
/// starts it with the protocol `protocol` makes.
pub async fn bind<P: IntoDatagramProtocol>(
    addr: impl ToSocketAddrs,
    protocol: impl FnOnce() -> P,
) -> io::Result<(DatagramHandle, P::Output)> {
    open_first(addr, |addr| Endpoint::new().local_addr(addr), protocol).await
}

/// Opens a UDP endpoint connected to `addr` (resolved, each address tried in order), bound to a
/// free port, and starts it with the protocol `protocol` makes.
pub async fn connect<P: IntoDatagramProtocol>(
    addr: impl ToSocketAddrs,
    protocol: impl FnOnce() -> P,
) -> io::Result<(DatagramHandle, P::Output)> {
    open_first(addr, |addr| Endpoint::new().remote_addr(addr), protocol).await
}

async fn open_first<P: IntoDatagramProtocol>(
    addr: impl ToSocketAddrs,
    endpoint: impl Fn(SocketAddr) -> Endpoint,
    protocol: impl FnOnce() -> P,
) -> io::Result<(DatagramHandle, P::Output)> {
    runtime::require_arbiter("udp::bind")?;
    let mut first_err = None;
    let mut protocol = Some(protocol);
    for addr in tokio::net::lookup_host(addr).await? {
        let endpoint = endpoint(addr);
        // The socket is open before the protocol is made, so a failed address makes no actor.
        match endpoint.open() {
            Ok(socket) => {
                let Some(protocol) = protocol.take() else {
                    break;
                };
                return endpoint.launch(socket, protocol);
            }
            Err(err) => {
                first_err.get_or_insert(err);
            }
        }
    }
    Err(first_err.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the address resolved to nothing",
        )
    }))
}

/// Starts an endpoint over a UDP socket the caller made (asyncio's `sock=`), bound and
/// possibly connected already. It is set non-blocking.
pub fn from_std<P: IntoDatagramProtocol>(
    socket: std::net::UdpSocket,
    config: DatagramConfig,
    protocol: impl FnOnce() -> P,
) -> io::Result<(DatagramHandle, P::Output)> {
    runtime::require_arbiter("udp::from_std")?;
    socket.set_nonblocking(true)?;
    let peer = socket.peer_addr().ok();
    let socket = UdpSocket::from_std(socket)?;
    let protocol = factory::make(protocol)?;
    Ok(datagram::start(
        socket,
        peer.map(SocketAddress::Inet),
        peer.is_some(),
        config,
        || protocol,
    ))
}
