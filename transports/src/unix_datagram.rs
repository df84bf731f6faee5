//! Unix datagram sockets (asyncio's `create_datagram_endpoint(family=AF_UNIX)`), thin uses of
//! the generic [datagram transport](crate::datagram).
//!
//! Unlike UDP, a Unix datagram socket applies back-pressure: when the receiver's queue is full
//! a send would block, so datagrams queue in the endpoint and its protocol receives
//! `PauseWriting` past the high-water mark (with `with_write_flow`).
//!
//! Binding removes a stale socket file at the path first, as asyncio does, and the endpoint
//! removes its own file when it stops. A peer that never bound has no address
//! ([`UnixAddress::Unnamed`]) and cannot be answered. Extra info: `sockname`, `peername`
//! (connected endpoints only) and `socket`.

use std::{
    io,
    os::{
        fd::AsRawFd,
        unix::fs::{FileTypeExt, MetadataExt},
    },
    path::{Path, PathBuf},
    rc::Rc,
    task::{Context as TaskContext, Poll},
};

use futures::future::LocalBoxFuture;
use switchboard_framework::{
    AddressFamily, DatagramHandle, ExtraInfo, IntoDatagramProtocol, SendToError, SocketAddress,
    SocketInfo, SocketKind, UnixAddress, keys,
};
use tokio::{
    io::{Interest, ReadBuf},
    net::UnixDatagram,
};

use crate::{
    datagram::{self, DatagramConfig, DatagramSocket},
    factory, runtime,
};

/// A Unix datagram socket, and the file it is bound to if it made one.
#[derive(Debug)]
pub struct UnixDatagramSocket {
    socket: UnixDatagram,
    /// The path it bound, with the device and inode of the file, so dropping the socket never
    /// removes someone else's file.
    bound: Option<(PathBuf, (u64, u64))>,
}

impl UnixDatagramSocket {
    /// Binds a socket to `path`, removing a stale socket file there first.
    pub fn bind(path: &Path) -> io::Result<Self> {
        if let Ok(meta) = std::fs::symlink_metadata(path)
            && meta.file_type().is_socket()
        {
            std::fs::remove_file(path)?;
        }
        let socket = UnixDatagram::bind(path).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("could not bind on {}: {err}", path.display()),
            )
        })?;
        let bound = std::fs::metadata(path)
            .ok()
            .map(|meta| (path.to_path_buf(), (meta.dev(), meta.ino())));
        Ok(UnixDatagramSocket { socket, bound })
    }

    /// A socket bound to no path: it can send, but nobody can answer it.
    pub fn unbound() -> io::Result<Self> {
        Ok(UnixDatagramSocket {
            socket: UnixDatagram::unbound()?,
            bound: None,
        })
    }

    /// Connects the socket to the socket at `path`.
    pub fn connect(&self, path: &Path) -> io::Result<()> {
        self.socket.connect(path).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("could not connect to {}: {err}", path.display()),
            )
        })
    }

    /// A socket made elsewhere; its file, if any, is left alone when it is dropped.
    pub fn from_std(socket: std::os::unix::net::UnixDatagram) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Ok(UnixDatagramSocket {
            socket: UnixDatagram::from_std(socket)?,
            bound: None,
        })
    }
}

impl Drop for UnixDatagramSocket {
    fn drop(&mut self) {
        if let Some((path, id)) = &self.bound {
            let ours = std::fs::metadata(path)
                .ok()
                .map(|meta| (meta.dev(), meta.ino()));
            if ours == Some(*id) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

fn unix_address(addr: tokio::net::unix::SocketAddr) -> SocketAddress {
    let std_addr: std::os::unix::net::SocketAddr = addr.into();
    SocketAddress::Unix(UnixAddress::from(&std_addr))
}

impl DatagramSocket for UnixDatagramSocket {
    fn check_destination(&self, addr: &SocketAddress) -> Result<(), SendToError> {
        match addr {
            SocketAddress::Unix(UnixAddress::Pathname(_)) => Ok(()),
            // tokio sends to paths only; an unnamed sender has no address at all.
            SocketAddress::Unix(_) => Err(SendToError::Unaddressable(addr.clone())),
            other => Err(SendToError::WrongFamily(other.clone())),
        }
    }

    fn poll_recv_from(
        &self,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<SocketAddress>> {
        self.socket.poll_recv_from(cx, buf).map_ok(unix_address)
    }

    fn poll_send_to(
        &self,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
        addr: &SocketAddress,
    ) -> Poll<io::Result<usize>> {
        match addr.as_unix() {
            Some(UnixAddress::Pathname(path)) => self.socket.poll_send_to(cx, buf, path),
            _ => Poll::Ready(Err(SendToError::Unaddressable(addr.clone()).into())),
        }
    }

    fn poll_send(&self, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.socket.poll_send(cx, buf)
    }

    fn error_ready(self: Rc<Self>) -> LocalBoxFuture<'static, io::Result<()>> {
        Box::pin(async move { self.socket.ready(Interest::ERROR).await.map(drop) })
    }

    fn take_error(&self) -> io::Result<Option<io::Error>> {
        let err = self.socket.take_error()?;
        // Forget the readiness that announced it: `try_io` clears it on `WouldBlock`.
        let _ = self.socket.try_io(Interest::ERROR, || {
            Err::<(), _>(io::ErrorKind::WouldBlock.into())
        });
        Ok(err)
    }

    fn sockname(&self) -> Option<SocketAddress> {
        self.socket.local_addr().ok().map(unix_address)
    }

    fn peername(&self) -> Option<SocketAddress> {
        self.socket.peer_addr().ok().map(unix_address)
    }

    fn extra_info(&self, name: &str) -> Option<ExtraInfo> {
        match name {
            keys::SOCKET => Some(
                SocketInfo::new(
                    self.socket.as_raw_fd(),
                    AddressFamily::Unix,
                    SocketKind::Datagram,
                )
                .into(),
            ),
            _ => None,
        }
    }
}

/// How to open a Unix datagram endpoint: the path to bind, the path to connect to, and the
/// endpoint's settings.
#[derive(Debug, Clone, Default)]
#[must_use = "an endpoint does nothing until started"]
pub struct Endpoint {
    local_path: Option<PathBuf>,
    remote_path: Option<PathBuf>,
    config: DatagramConfig,
}

impl Endpoint {
    /// An endpoint bound to nothing, connected to nothing, with the default settings.
    pub fn new() -> Self {
        Endpoint::default()
    }

    /// Binds to `path`, so peers can send to it and answer it.
    pub fn local_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.local_path = Some(path.into());
        self
    }

    /// Connects to the socket at `path`: sends without an address go there, and only its
    /// datagrams are received.
    pub fn remote_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.remote_path = Some(path.into());
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
        runtime::require_arbiter("unix_datagram::Endpoint::start")?;
        let socket = match &self.local_path {
            Some(path) => UnixDatagramSocket::bind(path)?,
            None => UnixDatagramSocket::unbound()?,
        };
        if let Some(remote) = &self.remote_path {
            socket.connect(remote)?;
        }
        let peer = self
            .remote_path
            .map(|path| SocketAddress::Unix(UnixAddress::Pathname(path)));
        let connected = peer.is_some();
        let protocol = factory::make(protocol)?;
        Ok(datagram::start(
            socket,
            peer,
            connected,
            self.config,
            || protocol,
        ))
    }
}

/// Binds a Unix datagram endpoint to `path` and starts it with the protocol `protocol` makes.
pub fn bind<P: IntoDatagramProtocol>(
    path: impl Into<PathBuf>,
    protocol: impl FnOnce() -> P,
) -> io::Result<(DatagramHandle, P::Output)> {
    Endpoint::new().local_path(path).start(protocol)
}

/// Opens an unbound Unix datagram endpoint connected to `path` and starts it with the protocol
/// `protocol` makes. It can send, but receives nothing: nobody can address an unbound socket.
/// To hear answers, bind it too with [`Endpoint`].
pub fn connect<P: IntoDatagramProtocol>(
    path: impl Into<PathBuf>,
    protocol: impl FnOnce() -> P,
) -> io::Result<(DatagramHandle, P::Output)> {
    Endpoint::new().remote_path(path).start(protocol)
}

/// Starts an endpoint over a Unix datagram socket the caller made (asyncio's `sock=`), e.g.
/// one of a `UnixDatagram::pair()`. It is set non-blocking.
pub fn from_std<P: IntoDatagramProtocol>(
    socket: std::os::unix::net::UnixDatagram,
    config: DatagramConfig,
    protocol: impl FnOnce() -> P,
) -> io::Result<(DatagramHandle, P::Output)> {
    runtime::require_arbiter("unix_datagram::from_std")?;
    let socket = UnixDatagramSocket::from_std(socket)?;
    let peer = socket.peername();
    let connected = peer.is_some();
    let protocol = factory::make(protocol)?;
    Ok(datagram::start(socket, peer, connected, config, || {
        protocol
    }))
}
