//! Test helpers that need sockets (feature `test-util`): servers on loopback, Unix socket paths
//! in a temporary directory, and TLS certificates made at run time. The socket-free half (the
//! mock transport, the probe, the runners) is `switchboard_framework::testing`; the
//! `switchboard` facade joins both in `switchboard::testing`.
//!
//! ```
//! use switchboard_transports::{tcp, testing};
//! # use switchboard_framework::testing::{run, Probe};
//!
//! # run(async {
//! let server = testing::tcp_server(|| Probe::builder().greeting("hi\n").start().0)
//!     .await
//!     .expect("listen on loopback");
//! let (protocol, mut events) = Probe::builder().start();
//! let (_transport, _) = tcp::connect(server.addr, move || protocol).await.expect("connect");
//! events.made().await;
//! assert_eq!(events.data(3).await, b"hi\n");
//! server.handle.close().await;
//! # });
//! ```

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use switchboard_framework::IntoProtocol;

use crate::{ServerHandle, tcp, unix};

/// A server listening on an ephemeral port of `127.0.0.1`. It goes on serving until
/// `handle.close()` (or the end of the test's `System`).
#[derive(Debug, Clone)]
#[must_use = "the server's address is how a test reaches it"]
pub struct LoopbackServer {
    /// The server, to close it, pause it or read its counters.
    pub handle: ServerHandle,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Serves TCP on `127.0.0.1:0` with a protocol from `factory` per connection.
pub async fn tcp_server<F, P>(factory: F) -> io::Result<LoopbackServer>
where
    F: Fn() -> P + Send + Sync + 'static,
    P: IntoProtocol + 'static,
{
    let handle = tcp::serve("127.0.0.1:0", factory).await?;
    loopback(handle)
}

/// Serves TLS on `127.0.0.1:0` with `acceptor` (e.g. from [`localhost_tls`]) and a protocol
/// from `factory` per connection.
#[cfg(feature = "tls")]
pub async fn tls_server<F, P>(
    acceptor: crate::tls::TlsAcceptor,
    factory: F,
) -> io::Result<LoopbackServer>
where
    F: Fn() -> P + Send + Sync + 'static,
    P: IntoProtocol + 'static,
{
    let handle = crate::tls::serve("127.0.0.1:0", acceptor, factory).await?;
    loopback(handle)
}

fn loopback(handle: ServerHandle) -> io::Result<LoopbackServer> {
    let addr = handle
        .addresses()
        .iter()
        .find_map(|addr| addr.as_inet())
        .ok_or_else(|| io::Error::other("the server listens on no internet address"))?;
    Ok(LoopbackServer { handle, addr })
}

/// A path for a Unix socket in a new temporary directory, removed with everything in it when
/// this is dropped: no two tests share a path, and no socket file outlives its test.
#[derive(Debug)]
pub struct SocketPath {
    // Only kept for its `Drop`, which removes the directory.
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SocketPath {
    /// A fresh path named `name` in a directory of its own.
    pub fn new(name: &str) -> io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("switchboard-").tempdir()?;
        let path = dir.path().join(name);
        Ok(SocketPath { _dir: dir, path })
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for SocketPath {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// A server listening on a Unix socket in a temporary directory.
#[derive(Debug)]
#[must_use = "the server's path is how a test reaches it"]
pub struct UnixServer {
    /// The server.
    pub handle: ServerHandle,
    /// Where it listens; the directory goes when this is dropped.
    pub path: SocketPath,
}

/// Serves on a new Unix socket path with a protocol from `factory` per connection.
pub async fn unix_server<F, P>(factory: F) -> io::Result<UnixServer>
where
    F: Fn() -> P + Send + Sync + 'static,
    P: IntoProtocol + 'static,
{
    let path = SocketPath::new("server.sock")?;
    let handle = unix::serve(&path, factory).await?;
    Ok(UnixServer { handle, path })
}

/// A certificate for `localhost`, `127.0.0.1` and `::1`, made now, with the acceptor that
/// serves it and a connector that trusts it (and nothing else) and checks the host name.
#[cfg(feature = "tls")]
pub fn localhost_tls() -> io::Result<(crate::tls::TlsAcceptor, crate::tls::TlsConnector)> {
    let certificate = crate::tls::SelfSigned::localhost()?;
    Ok((certificate.acceptor()?, certificate.connector()?))
}

#[cfg(test)]
mod tests {
    use switchboard_framework::testing::Probe;

    use super::*;

    #[actix_rt::test]
    async fn a_unix_server_serves_and_its_directory_goes_with_it() {
        let server = unix_server(|| Probe::builder().greeting("unix\n").start().0)
            .await
            .expect("serve");
        let dir = server.path.path().parent().expect("a directory").to_owned();
        let (protocol, mut events) = Probe::builder().start();
        unix::connect(&server.path, move || protocol)
            .await
            .expect("connect");
        events.made().await;
        assert_eq!(events.data(5).await, b"unix\n");
        server.handle.close().await;
        drop(server);
        assert!(!dir.exists(), "{} outlived its test", dir.display());
    }

    #[cfg(feature = "tls")]
    #[actix_rt::test]
    async fn a_tls_server_with_the_localhost_certificate_verifies() {
        let (acceptor, connector) = localhost_tls().expect("certificate");
        let server = tls_server(acceptor, || Probe::builder().greeting("tls\n").start().0)
            .await
            .expect("serve");
        let (protocol, mut events) = Probe::builder().start();
        let (transport, _) = connector
            .connect(&format!("localhost:{}", server.addr.port()), move || {
                protocol
            })
            .await
            .expect("a verified handshake");
        events.made().await;
        assert_eq!(events.data(4).await, b"tls\n");
        assert!(transport.peer_certificate().await.is_some());
        server.handle.close().await;
    }
}
