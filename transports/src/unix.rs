//! Unix-domain stream sockets: `connect` (asyncio's `create_unix_connection`) and `serve`
//! (asyncio's `create_unix_server`), thin uses of the generic [stream transport](crate::stream).
//!
//! Extra info: `peername`, `sockname` (an [`SocketAddress::Unix`]) and `socket`. A server
//! removes a stale socket file at its path before binding and removes its own file when closed,
//! as asyncio 3.13 does. `Abort` closes at once (Unix sockets have no reset).
//!
//! ```
//! use switchboard_framework::prelude::*;
//! use switchboard_transports::unix;
//!
//! /// Says hello and hangs up.
//! struct Greeter;
//! impl Protocol for Greeter {
//!     type Codec = Raw;
//!     fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
//!         cx.write("hello\n");
//!         cx.close();
//!     }
//! }
//!
//! # #[actix::main]
//! # async fn main() -> std::io::Result<()> {
//! use tokio::io::AsyncReadExt;
//! let dir = std::env::temp_dir().join(format!("switchboard-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("greeter.sock");
//! let server = unix::serve(&path, || Greeter).await?;
//!
//! let mut client = tokio::net::UnixStream::connect(&path).await?;
//! let mut greeting = String::new();
//! client.read_to_string(&mut greeting).await?;
//! assert_eq!(greeting, "hello\n");
//!
//! server.close().await;
//! assert!(!path.exists(), "closing removes the socket file");
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```

use std::{
    io,
    os::{
        fd::AsRawFd,
        unix::fs::{FileTypeExt, MetadataExt},
    },
    path::{Path, PathBuf},
    task::{Context as TaskContext, Poll, ready},
};

use switchboard_framework::{
    AddressFamily, ExtraInfo, IntoProtocol, SocketAddress, SocketInfo, SocketKind, TransportHandle,
    UnixAddress, keys,
};
use tokio::net::{UnixListener, UnixSocket, UnixStream};

use crate::{
    factory, runtime,
    server::{self, Detach, Direct, Listen, ServerHandle, ServerOptions, ServerSocket},
    stream::{StreamConfig, StreamIo, StreamTransport},
    upgradable::upgradable,
};

fn unix_address(addr: tokio::net::unix::SocketAddr) -> ExtraInfo {
    let std_addr: std::os::unix::net::SocketAddr = addr.into();
    ExtraInfo::Address(SocketAddress::Unix(UnixAddress::from(&std_addr)))
}

impl StreamIo for UnixStream {
    fn extra_info(&self, name: &str) -> Option<ExtraInfo> {
        match name {
            keys::PEERNAME => self.peer_addr().ok().map(unix_address),
            keys::SOCKNAME => self.local_addr().ok().map(unix_address),
            keys::SOCKET => Some(
                SocketInfo::new(self.as_raw_fd(), AddressFamily::Unix, SocketKind::Stream).into(),
            ),
            _ => None,
        }
    }

    fn drop_closes_after_eof(&self) -> bool {
        true
    }
}

/// Connects to the socket at `path` and starts a transport with the protocol `protocol` makes.
/// Returns the transport's handle and the protocol's address.
pub async fn connect<P: IntoProtocol>(
    path: impl AsRef<Path>,
    protocol: impl FnOnce() -> P,
) -> io::Result<(TransportHandle, P::Output)> {
    connect_with(path, StreamConfig::default(), protocol).await
}

/// [`connect`] with chosen transport settings.
pub async fn connect_with<P: IntoProtocol>(
    path: impl AsRef<Path>,
    config: StreamConfig,
    protocol: impl FnOnce() -> P,
) -> io::Result<(TransportHandle, P::Output)> {
    runtime::require_arbiter("unix::connect")?;
    config.check()?;
    let stream = UnixStream::connect(path).await?;
    let protocol = factory::make(protocol)?;
    Ok(StreamTransport::start(
        upgradable(stream),
        config,
        protocol,
        None,
    ))
}

/// Listens at `path` and serves each connection with a protocol from `factory`, with the
/// default [`ServerOptions`].
pub async fn serve<F, P>(path: impl AsRef<Path>, factory: F) -> io::Result<ServerHandle>
where
    F: Fn() -> P + Send + Sync + 'static,
    P: IntoProtocol + 'static,
{
    serve_with(path, ServerOptions::default(), factory).await
}

/// [`serve`] with chosen options.
pub async fn serve_with<F, P>(
    path: impl AsRef<Path>,
    options: ServerOptions,
    factory: F,
) -> io::Result<ServerHandle>
where
    F: Fn() -> P + Send + Sync + 'static,
    P: IntoProtocol + 'static,
{
    runtime::require_system("unix::serve")?;
    options.stream.check()?;
    let mut listener = UnixListen::bind(path.as_ref())?;
    if options.start_serving
        && let Err(err) = listener.listen(options.backlog)
    {
        listener.close();
        return Err(err);
    }
    Ok(server::start(
        vec![listener],
        options,
        Direct(upgradable::<UnixStream>),
        factory,
    ))
}

/// A Unix-socket server socket: listening, or bound only until the server starts serving
/// (`start_serving(false)`), so that connections are refused until then, as asyncio's are.
struct UnixListen {
    state: UnixListenState,
    socket: ServerSocket,
    path: PathBuf,
    /// Device and inode of the socket file we made, so closing never removes someone else's.
    file_id: Option<(u64, u64)>,
}

enum UnixListenState {
    Bound(UnixSocket),
    Listening(UnixListener),
    /// `listen(2)` failed.
    Failed,
}

impl UnixListen {
    fn bind(path: &Path) -> io::Result<Self> {
        if let Ok(meta) = std::fs::symlink_metadata(path)
            && meta.file_type().is_socket()
        {
            // A stale socket from an earlier run, as asyncio removes it.
            std::fs::remove_file(path)?;
        }
        let socket = UnixSocket::new_stream()?;
        socket.bind(path).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("could not bind on {}: {err}", path.display()),
            )
        })?;
        let file_id = std::fs::metadata(path)
            .ok()
            .map(|meta| (meta.dev(), meta.ino()));
        let info = SocketInfo::new(socket.as_raw_fd(), AddressFamily::Unix, SocketKind::Stream);
        let address = SocketAddress::Unix(UnixAddress::Pathname(path.to_path_buf()));
        Ok(UnixListen {
            state: UnixListenState::Bound(socket),
            socket: ServerSocket::new(address, info),
            path: path.to_path_buf(),
            file_id,
        })
    }
}

impl Listen for UnixListen {
    type Io = UnixStream;

    fn listen(&mut self, backlog: u32) -> io::Result<()> {
        match std::mem::replace(&mut self.state, UnixListenState::Failed) {
            UnixListenState::Bound(socket) => {
                let listener = socket.listen(backlog).map_err(|err| {
                    io::Error::new(
                        err.kind(),
                        format!("could not listen on {}: {err}", self.path.display()),
                    )
                })?;
                self.state = UnixListenState::Listening(listener);
            }
            state => self.state = state,
        }
        Ok(())
    }

    fn poll_accept(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<UnixStream>> {
        let UnixListenState::Listening(listener) = &self.state else {
            return Poll::Pending;
        };
        let (stream, _) = ready!(listener.poll_accept(cx))?;
        Poll::Ready(Ok(stream))
    }

    fn socket(&self) -> ServerSocket {
        self.socket.clone()
    }

    fn close(self) {
        let ours = std::fs::metadata(&self.path)
            .ok()
            .map(|meta| (meta.dev(), meta.ino()));
        if ours.is_some() && ours == self.file_id {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A [`UnixListen`] on its way to another arbiter: a bound socket is registered with no runtime
/// yet, so it moves as it is.
enum DetachedUnixListen {
    Bound(UnixSocket),
    Listening(std::os::unix::net::UnixListener),
}

impl Detach for UnixListen {
    type Detached = (
        DetachedUnixListen,
        ServerSocket,
        PathBuf,
        Option<(u64, u64)>,
    );

    fn detach(self) -> io::Result<Self::Detached> {
        let state = match self.state {
            UnixListenState::Bound(socket) => DetachedUnixListen::Bound(socket),
            UnixListenState::Listening(listener) => {
                DetachedUnixListen::Listening(listener.into_std()?)
            }
            UnixListenState::Failed => {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the socket failed to listen",
                ));
            }
        };
        Ok((state, self.socket, self.path, self.file_id))
    }

    fn attach((state, socket, path, file_id): Self::Detached) -> io::Result<Self> {
        let state = match state {
            DetachedUnixListen::Bound(socket) => UnixListenState::Bound(socket),
            DetachedUnixListen::Listening(listener) => {
                UnixListenState::Listening(UnixListener::from_std(listener)?)
            }
        };
        Ok(UnixListen {
            state,
            socket,
            path,
            file_id,
        })
    }
}

impl Detach for UnixStream {
    type Detached = std::os::unix::net::UnixStream;

    fn detach(self) -> io::Result<std::os::unix::net::UnixStream> {
        self.into_std()
    }

    fn attach(detached: std::os::unix::net::UnixStream) -> io::Result<UnixStream> {
        UnixStream::from_std(detached)
    }
}
