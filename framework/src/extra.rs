//! Extra information about a transport, asyncio's `get_extra_info`.

use std::{
    any::{Any, type_name},
    borrow::Cow,
    fmt, net,
    os::fd::RawFd,
    path::PathBuf,
    sync::Arc,
};

use derive_more::From;

use crate::{Certificate, CipherInfo, TlsSession};

/// Well-known extra-info keys, spelled as in asyncio.
pub mod keys {
    /// The remote address of a socket: [`ExtraInfo::Address`](super::ExtraInfo::Address).
    pub const PEERNAME: &str = "peername";
    /// The local address of a socket: [`ExtraInfo::Address`](super::ExtraInfo::Address).
    pub const SOCKNAME: &str = "sockname";
    /// The socket's descriptor, family and type: [`ExtraInfo::Socket`](super::ExtraInfo::Socket).
    pub const SOCKET: &str = "socket";
    /// The negotiated cipher of a TLS transport: [`ExtraInfo::Cipher`](super::ExtraInfo::Cipher).
    pub const CIPHER: &str = "cipher";
    /// The compression of a TLS transport, always none (OpenSSL builds ship without it, since
    /// CRIME): [`ExtraInfo::Compression`](super::ExtraInfo::Compression).
    pub const COMPRESSION: &str = "compression";
    /// The peer's certificate, or none: [`ExtraInfo::PeerCert`](super::ExtraInfo::PeerCert).
    pub const PEERCERT: &str = "peercert";
    /// The TLS library's context (`openssl::ssl::SslContext`):
    /// [`ExtraInfo::Object`](super::ExtraInfo::Object).
    pub const SSLCONTEXT: &str = "sslcontext";
    /// A snapshot of the TLS session: [`ExtraInfo::TlsSession`](super::ExtraInfo::TlsSession).
    pub const SSL_OBJECT: &str = "ssl_object";
    /// The pipe under a pipe transport: [`ExtraInfo::Pipe`](super::ExtraInfo::Pipe).
    pub const PIPE: &str = "pipe";
    /// The child process of a subprocess transport:
    /// [`ExtraInfo::Subprocess`](super::ExtraInfo::Subprocess).
    pub const SUBPROCESS: &str = "subprocess";
}

/// One value of a transport's extra information, asked for by key with
/// [`GetExtraInfo`](crate::GetExtraInfo).
///
/// Values come from the socket when asked, so they cost nothing on connections nobody asks
/// about. Once the transport has stopped, every key returns the caller's default (asyncio keeps
/// snapshots taken at creation instead).
#[derive(Debug, Clone, PartialEq, Eq, From)]
#[non_exhaustive]
pub enum ExtraInfo {
    /// An address: `peername` and `sockname`.
    Address(SocketAddress),
    /// The socket itself: `socket`.
    Socket(SocketInfo),
    /// A free-form text value, for keys a transport or a test adds.
    #[from(ignore)]
    Text(Cow<'static, str>),
    /// The negotiated cipher: `cipher`.
    Cipher(CipherInfo),
    /// The compression method's name, or `None`: `compression`.
    #[from(ignore)]
    Compression(Option<String>),
    /// The peer's certificate, or `None` when it sent none (a client usually): `peercert`.
    #[from(ignore)]
    PeerCert(Option<Certificate>),
    /// A snapshot of the TLS session: `ssl_object`.
    TlsSession(TlsSession),
    /// An object of the library behind the transport: `sslcontext`.
    Object(ExtraObject),
    /// The pipe under a pipe transport: `pipe`.
    Pipe(PipeInfo),
    /// The child process of a subprocess transport: `subprocess`.
    Subprocess(ProcessInfo),
}

impl ExtraInfo {
    /// The address, if this value is one.
    pub fn as_address(&self) -> Option<&SocketAddress> {
        match self {
            ExtraInfo::Address(addr) => Some(addr),
            _ => None,
        }
    }

    /// The socket description, if this value is one.
    pub fn as_socket(&self) -> Option<&SocketInfo> {
        match self {
            ExtraInfo::Socket(info) => Some(info),
            _ => None,
        }
    }

    /// The cipher, if this value is one.
    pub fn as_cipher(&self) -> Option<&CipherInfo> {
        match self {
            ExtraInfo::Cipher(cipher) => Some(cipher),
            _ => None,
        }
    }

    /// The peer's certificate: `Some(None)` when this is a `peercert` value without one.
    pub fn as_peer_cert(&self) -> Option<Option<&Certificate>> {
        match self {
            ExtraInfo::PeerCert(cert) => Some(cert.as_ref()),
            _ => None,
        }
    }

    /// The TLS session snapshot, if this value is one.
    pub fn as_tls_session(&self) -> Option<&TlsSession> {
        match self {
            ExtraInfo::TlsSession(session) => Some(session),
            _ => None,
        }
    }

    /// The library object, if this value is one and is a `T`.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        match self {
            ExtraInfo::Object(object) => object.downcast_ref(),
            _ => None,
        }
    }

    /// The pipe description, if this value is one.
    pub fn as_pipe(&self) -> Option<&PipeInfo> {
        match self {
            ExtraInfo::Pipe(info) => Some(info),
            _ => None,
        }
    }

    /// The process description, if this value is one.
    pub fn as_subprocess(&self) -> Option<&ProcessInfo> {
        match self {
            ExtraInfo::Subprocess(info) => Some(info),
            _ => None,
        }
    }

    /// The text, if this value is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            ExtraInfo::Text(text) => Some(text),
            _ => None,
        }
    }
}

impl From<net::SocketAddr> for ExtraInfo {
    fn from(addr: net::SocketAddr) -> Self {
        ExtraInfo::Address(addr.into())
    }
}

/// An object of the library behind a transport, shared (the `sslcontext` key holds an
/// `openssl::ssl::SslContext`). Two values are equal when they hold the same object.
#[derive(Clone)]
pub struct ExtraObject {
    object: Arc<dyn Any + Send + Sync>,
    type_name: &'static str,
}

impl ExtraObject {
    /// Shares `object`.
    pub fn new<T: Any + Send + Sync>(object: T) -> Self {
        ExtraObject {
            object: Arc::new(object),
            type_name: type_name::<T>(),
        }
    }

    /// The object, if it is a `T`.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.object.downcast_ref()
    }

    /// The object's type name.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }
}

impl PartialEq for ExtraObject {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.object, &other.object)
    }
}

impl Eq for ExtraObject {}

impl fmt::Debug for ExtraObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ExtraObject").field(&self.type_name).finish()
    }
}

/// The address of either end of a stream or datagram socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash, From)]
#[non_exhaustive]
pub enum SocketAddress {
    /// An IPv4 or IPv6 address and port.
    Inet(net::SocketAddr),
    /// A Unix-domain socket address.
    Unix(UnixAddress),
}

impl SocketAddress {
    /// The IP address and port, if this is an internet address.
    pub fn as_inet(&self) -> Option<net::SocketAddr> {
        match self {
            SocketAddress::Inet(addr) => Some(*addr),
            SocketAddress::Unix(_) => None,
        }
    }

    /// The Unix-domain address, if this is one.
    pub fn as_unix(&self) -> Option<&UnixAddress> {
        match self {
            SocketAddress::Unix(addr) => Some(addr),
            SocketAddress::Inet(_) => None,
        }
    }
}

impl fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketAddress::Inet(addr) => addr.fmt(f),
            SocketAddress::Unix(addr) => addr.fmt(f),
        }
    }
}

/// A Unix-domain socket address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UnixAddress {
    /// A socket bound to a path in the file system.
    Pathname(PathBuf),
    /// A socket in Linux's abstract namespace (the name without its leading NUL byte).
    Abstract(Vec<u8>),
    /// An unbound socket, e.g. the client end of a connection (asyncio reports `''`).
    Unnamed,
}

impl fmt::Display for UnixAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixAddress::Pathname(path) => path.display().fmt(f),
            UnixAddress::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
            UnixAddress::Unnamed => f.write_str("(unnamed)"),
        }
    }
}

impl From<&std::os::unix::net::SocketAddr> for UnixAddress {
    fn from(addr: &std::os::unix::net::SocketAddr) -> Self {
        use std::os::linux::net::SocketAddrExt;
        if let Some(path) = addr.as_pathname() {
            UnixAddress::Pathname(path.to_path_buf())
        } else if let Some(name) = addr.as_abstract_name() {
            UnixAddress::Abstract(name.to_vec())
        } else {
            UnixAddress::Unnamed
        }
    }
}

/// The `socket` key: the descriptor a transport owns, with its family and type.
///
/// The descriptor stays owned by the transport: use it for `getsockopt`/`setsockopt`, never
/// close it or read from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SocketInfo {
    /// The file descriptor.
    pub fd: RawFd,
    /// `AF_INET`, `AF_INET6` or `AF_UNIX`.
    pub family: AddressFamily,
    /// `SOCK_STREAM` or `SOCK_DGRAM`.
    pub kind: SocketKind,
}

impl SocketInfo {
    /// Describes a socket.
    pub fn new(fd: RawFd, family: AddressFamily, kind: SocketKind) -> Self {
        SocketInfo { fd, family, kind }
    }
}

/// A socket's address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddressFamily {
    /// `AF_INET`
    Inet,
    /// `AF_INET6`
    Inet6,
    /// `AF_UNIX`
    Unix,
}

impl AddressFamily {
    /// The family of an internet address.
    pub fn of(addr: &net::SocketAddr) -> Self {
        match addr {
            net::SocketAddr::V4(_) => AddressFamily::Inet,
            net::SocketAddr::V6(_) => AddressFamily::Inet6,
        }
    }
}

/// A socket's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SocketKind {
    /// `SOCK_STREAM`
    Stream,
    /// `SOCK_DGRAM`
    Datagram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_display_as_users_write_them() {
        let inet: SocketAddress = "127.0.0.1:8888".parse::<net::SocketAddr>().unwrap().into();
        assert_eq!(inet.to_string(), "127.0.0.1:8888");
        assert_eq!(inet.as_inet(), Some("127.0.0.1:8888".parse().unwrap()));
        let unix = SocketAddress::Unix(UnixAddress::Pathname("/tmp/s.sock".into()));
        assert_eq!(unix.to_string(), "/tmp/s.sock");
        assert_eq!(unix.as_inet(), None);
        assert_eq!(UnixAddress::Abstract(b"sb".to_vec()).to_string(), "@sb");
    }

    #[test]
    fn std_unix_addresses_convert() {
        let dir = std::env::temp_dir().join(format!("sb-extra-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        assert_eq!(
            UnixAddress::from(&listener.local_addr().unwrap()),
            UnixAddress::Pathname(path.clone())
        );
        assert_eq!(
            UnixAddress::from(&client.local_addr().unwrap()),
            UnixAddress::Unnamed
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// The descriptor under a pipe transport, asyncio's `pipe` extra info (which is the file object).
///
/// The descriptor stays owned by the transport: never close it, read from it or write to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct PipeInfo {
    /// The file descriptor.
    pub fd: RawFd,
    /// Which way the transport moves bytes through it.
    pub end: PipeEnd,
    /// What the descriptor is.
    pub file_type: PipeFileType,
}

impl PipeInfo {
    /// Describes a pipe transport's descriptor.
    pub fn new(fd: RawFd, end: PipeEnd, file_type: PipeFileType) -> Self {
        PipeInfo { fd, end, file_type }
    }
}

/// Which way a pipe transport moves bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PipeEnd {
    /// It reads (asyncio's `connect_read_pipe`, a child's stdout or stderr).
    Read,
    /// It writes (asyncio's `connect_write_pipe`, a child's stdin).
    Write,
}

/// What a pipe transport's descriptor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PipeFileType {
    /// A pipe or a FIFO.
    Fifo,
    /// A character device, such as a terminal.
    CharDevice,
    /// A socket.
    Socket,
}

/// The child process of a subprocess transport, asyncio's `subprocess` extra info (which is the
/// `Popen` object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ProcessInfo {
    /// The process id; it stays valid after the process exited, as `Popen.pid` does.
    pub pid: u32,
}

impl ProcessInfo {
    /// Describes a child process.
    pub fn new(pid: u32) -> Self {
        ProcessInfo { pid }
    }
}
