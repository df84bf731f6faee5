//! TLS (feature `tls`, OpenSSL through tokio-openssl): [`connect`] and [`serve`], and
//! [`StartTls`] on a live TCP or Unix-socket transport.
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
//!   [`DEFAULT_MAX_HANDSHAKES`] at once, past which it stops accepting until one ends.
//!
//! ```
//! use actix::prelude::*;
//! use switchboard_framework::prelude::*;
//! use switchboard_transports::tls::{self, SelfSigned};
//!
//! struct Echo(Option<TransportHandle>);
//! impl Actor for Echo { type Context = Context<Self>; }
//! impl Handler<ConnectionMade> for Echo {
//!     type Result = ();
//!     fn handle(&mut self, msg: ConnectionMade, _: &mut Context<Self>) { self.0 = Some(msg.transport); }
//! }
//! impl Handler<DataReceived> for Echo {
//!     type Result = ();
//!     fn handle(&mut self, msg: DataReceived, _: &mut Context<Self>) {
//!         if let Some(t) = &self.0 { t.write(msg.data); }
//!     }
//! }
//! impl Handler<ConnectionLost> for Echo {
//!     type Result = ();
//!     fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) { ctx.stop(); }
//! }
//!
//! # #[actix::main]
//! # async fn main() -> std::io::Result<()> {
//! // A certificate for 127.0.0.1 and localhost, made now; the client trusts only it.
//! let cert = SelfSigned::new(&["localhost", "127.0.0.1"])?;
//! let server = tls::serve("127.0.0.1:0", cert.acceptor()?, || Echo(None).start()).await?;
//! let addr = server.addresses()[0].to_string();
//!
//! let (client, _) = cert.connector()?.connect(&addr, || Echo(None).start()).await?;
//! let cipher = client.cipher().await.expect("a TLS transport has a cipher");
//! assert!(cipher.protocol.starts_with("TLSv1."));
//! client.close();
//! server.close().await;
//! # Ok(())
//! # }
//! ```

mod io;

use std::{
    fmt, io as stdio,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::Path,
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
pub use openssl;
use openssl::{
    asn1::Asn1Time,
    bn::{BigNum, MsbOption},
    ec::{EcGroup, EcKey},
    hash::MessageDigest,
    nid::Nid,
    pkey::{PKey, Private},
    ssl::{Ssl, SslAcceptor, SslConnector, SslMethod, SslVerifyMode},
    x509::{
        X509, X509NameBuilder,
        extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName},
    },
};
use switchboard_framework::{
    IntoProtocol, StartTls, TlsError, TlsErrorKind, TlsSettings, TransportHandle,
};
use tokio::net::{TcpStream, ToSocketAddrs};

pub use self::io::MaybeTls;
use self::io::{Setup, handshake};
use crate::{
    TcpConnector, factory, runtime,
    server::{self, Open, Opening, ServerHandle, ServerOptions},
    stream::{StreamConfig, StreamTransport},
    tcp::TcpListen,
};

/// How long a handshake may take before the connection is dropped: 10 s.
///
/// Between actix-tls's 3 s, which a slow mobile link can miss, and asyncio's 60 s, which lets a
/// client that never speaks hold a place for a minute.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The most handshakes a server runs at once: 1024. Past it the server stops accepting until
/// one ends, so that clients that connect and never speak cannot pile up without bound; each
/// place is freed within [`DEFAULT_HANDSHAKE_TIMEOUT`].
pub const DEFAULT_MAX_HANDSHAKES: usize = 1024;

/// `timeout`, if a handshake can succeed within it.
fn valid_handshake_timeout(timeout: Duration) -> stdio::Result<Duration> {
    if timeout.is_zero() {
        return Err(stdio::Error::new(
            stdio::ErrorKind::InvalidInput,
            "a TLS handshake timeout of zero would fail every handshake",
        ));
    }
    Ok(timeout)
}

/// The client side: opens TLS connections, or makes the [`StartTls`] of a client.
///
/// Verifies the server's certificate against the system's trust store (plus what
/// [`with_ca_file`](Self::with_ca_file) adds) and the host name, and sends SNI.
#[derive(Clone)]
pub struct TlsConnector {
    connector: SslConnector,
    server_name: Option<String>,
    accept_invalid_certs: bool,
    accept_invalid_hostnames: bool,
    handshake_timeout: Duration,
    tcp: TcpConnector,
}

impl TlsConnector {
    /// A connector that trusts the system's certificate authorities.
    pub fn new() -> stdio::Result<Self> {
        Ok(TlsConnector::from_connector(
            SslConnector::builder(SslMethod::tls_client())
                .map_err(stdio::Error::other)?
                .build(),
        ))
    }

    /// A connector that also trusts the certificates of a PEM file (`--cacert` in curl).
    pub fn with_ca_file(path: impl AsRef<Path>) -> stdio::Result<Self> {
        let path = path.as_ref();
        let mut builder =
            SslConnector::builder(SslMethod::tls_client()).map_err(stdio::Error::other)?;
        builder.set_ca_file(path).map_err(|err| {
            stdio::Error::new(
                stdio::ErrorKind::InvalidInput,
                format!("could not load certificates from {}: {err}", path.display()),
            )
        })?;
        Ok(TlsConnector::from_connector(builder.build()))
    }

    /// A connector over an OpenSSL connector you configured (trust, ALPN, client
    /// certificate, versions).
    pub fn from_connector(connector: SslConnector) -> Self {
        TlsConnector {
            connector,
            server_name: None,
            accept_invalid_certs: false,
            accept_invalid_hostnames: false,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            tcp: TcpConnector::new(),
        }
    }

    /// The name sent with SNI and checked against the certificate; by default, the host part of
    /// the address given to [`connect`](Self::connect).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Accepts any certificate: expired, self-signed, from anyone. Anyone on the path can then
    /// read and change the traffic. For tests against throwaway servers only.
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.accept_invalid_certs = accept;
        self
    }

    /// Accepts a valid certificate made out to another name.
    pub fn danger_accept_invalid_hostnames(mut self, accept: bool) -> Self {
        self.accept_invalid_hostnames = accept;
        self
    }

    /// Sets the handshake timeout (see [`DEFAULT_HANDSHAKE_TIMEOUT`]). A zero timeout, with
    /// which every handshake would fail, is refused with `InvalidInput`.
    pub fn handshake_timeout(mut self, timeout: Duration) -> stdio::Result<Self> {
        self.handshake_timeout = valid_handshake_timeout(timeout)?;
        Ok(self)
    }

    /// Sets the transport's settings.
    pub fn config(mut self, config: StreamConfig) -> Self {
        self.tcp = self.tcp.config(config);
        self
    }

    /// The OpenSSL connector.
    pub fn ssl_connector(&self) -> &SslConnector {
        &self.connector
    }

    fn setup(&self, server_name: &str) -> Result<Setup, TlsError> {
        let config = self
            .connector
            .configure()
            .map_err(|err| TlsError::new(TlsErrorKind::Handshake, err.to_string()))?
            .verify_hostname(!self.accept_invalid_hostnames && !self.accept_invalid_certs);
        let mut ssl = config
            .into_ssl(server_name)
            .map_err(|err| TlsError::new(TlsErrorKind::Handshake, err.to_string()))?;
        if self.accept_invalid_certs {
            ssl.set_verify(SslVerifyMode::NONE);
        }
        Ok(Setup {
            ssl,
            server: false,
            timeout: self.handshake_timeout,
        })
    }

    /// Connects to `addr` (`host:port`), runs the handshake, then starts a transport on the
    /// current arbiter with the protocol `protocol` makes, which receives `ConnectionMade` once
    /// TLS is up. A failed handshake returns an error carrying a [`TlsError`] (see
    /// [`TlsError::of`]), and the protocol is never made.
    pub async fn connect<P: IntoProtocol>(
        &self,
        addr: &str,
        protocol: impl FnOnce() -> P,
    ) -> stdio::Result<(TransportHandle, P::Output)> {
        runtime::require_arbiter("tls::connect")?;
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => host_of(addr)?,
        };
        let setup = self.setup(&name)?;
        let stream = self.tcp.open(addr).await?;
        let io = handshake(MaybeTls::handshaking(setup, stream, Bytes::new())?).await?;
        let protocol = factory::make(protocol)?;
        Ok(StreamTransport::start(
            io,
            self.tcp.stream_config().clone(),
            protocol,
            None,
        ))
    }

    /// The [`StartTls`] that makes a live plaintext transport the client of a TLS session with
    /// the server `server_name` (verified as [`connect`](Self::connect) verifies).
    pub fn start_tls(&self, server_name: &str) -> Result<StartTls, TlsError> {
        Ok(StartTls::new(TlsSettings::new(self.setup(server_name)?)))
    }
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("server_name", &self.server_name)
            .field("accept_invalid_certs", &self.accept_invalid_certs)
            .field("accept_invalid_hostnames", &self.accept_invalid_hostnames)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// The host part of `host:port`, `[v6]:port` or `v6`.
fn host_of(addr: &str) -> stdio::Result<String> {
    let host = if let Some(rest) = addr.strip_prefix('[') {
        rest.split_once(']').map(|(host, _)| host)
    } else if addr.parse::<IpAddr>().is_ok() {
        Some(addr)
    } else {
        addr.rsplit_once(':').map(|(host, _)| host)
    };
    match host {
        Some(host) if !host.is_empty() => Ok(host.to_owned()),
        _ => Err(stdio::Error::new(
            stdio::ErrorKind::InvalidInput,
            format!("cannot tell the host name in {addr:?}; set TlsConnector::server_name"),
        )),
    }
}

/// The server side: serves TLS connections, or makes the [`StartTls`] of a server.
#[derive(Clone)]
pub struct TlsAcceptor {
    acceptor: SslAcceptor,
    handshake_timeout: Duration,
    max_handshakes: usize,
}

impl TlsAcceptor {
    /// An acceptor over an OpenSSL acceptor you configured.
    pub fn new(acceptor: SslAcceptor) -> Self {
        TlsAcceptor {
            acceptor,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
        }
    }

    /// An acceptor with Mozilla's "intermediate" settings (TLS 1.2 and 1.3), serving the
    /// certificate chain and private key of two PEM files.
    pub fn from_pem_files(
        certificate_chain: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
    ) -> stdio::Result<Self> {
        let (chain_path, key_path) = (certificate_chain.as_ref(), private_key.as_ref());
        let read = |what: &str, path: &Path| {
            std::fs::read(path).map_err(|err| {
                stdio::Error::new(
                    err.kind(),
                    format!("cannot read the {what} {}: {err}", path.display()),
                )
            })
        };
        let invalid = |what: &str, path: &Path, err| {
            stdio::Error::new(
                stdio::ErrorKind::InvalidInput,
                format!("{} holds no usable {what}: {err}", path.display()),
            )
        };
        let chain = X509::stack_from_pem(&read("certificate chain", chain_path)?)
            .map_err(|err| invalid("PEM certificate", chain_path, err))?;
        let key = PKey::private_key_from_pem(&read("private key", key_path)?)
            .map_err(|err| invalid("PEM private key", key_path, err))?;
        let mut chain = chain.into_iter();
        let leaf = chain.next().ok_or_else(|| {
            stdio::Error::new(
                stdio::ErrorKind::InvalidInput,
                format!("{} holds no certificate", chain_path.display()),
            )
        })?;
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
            .map_err(stdio::Error::other)?;
        builder
            .set_certificate(&leaf)
            .map_err(|err| invalid("certificate", chain_path, err))?;
        for intermediate in chain {
            builder
                .add_extra_chain_cert(intermediate)
                .map_err(|err| invalid("certificate chain", chain_path, err))?;
        }
        builder
            .set_private_key(&key)
            .and_then(|()| builder.check_private_key())
            .map_err(|err| {
                stdio::Error::new(
                    stdio::ErrorKind::InvalidInput,
                    format!(
                        "the private key {} does not match the certificate {}: {err}",
                        key_path.display(),
                        chain_path.display()
                    ),
                )
            })?;
        Ok(TlsAcceptor::new(builder.build()))
    }

    /// Sets the handshake timeout (see [`DEFAULT_HANDSHAKE_TIMEOUT`]). A zero timeout, with
    /// which every handshake would fail, is refused with `InvalidInput`.
    pub fn handshake_timeout(mut self, timeout: Duration) -> stdio::Result<Self> {
        self.handshake_timeout = valid_handshake_timeout(timeout)?;
        Ok(self)
    }

    /// Sets how many handshakes a server runs at once (see [`DEFAULT_MAX_HANDSHAKES`]; at
    /// least 1).
    pub fn max_handshakes(mut self, max: usize) -> Self {
        self.max_handshakes = max.max(1);
        self
    }

    /// The OpenSSL acceptor.
    pub fn ssl_acceptor(&self) -> &SslAcceptor {
        &self.acceptor
    }

    fn setup(&self) -> Result<Setup, TlsError> {
        let ssl = Ssl::new(self.acceptor.context())
            .map_err(|err| TlsError::new(TlsErrorKind::Handshake, err.to_string()))?;
        Ok(Setup {
            ssl,
            server: true,
            timeout: self.handshake_timeout,
        })
    }

    /// The [`StartTls`] that makes a live plaintext transport the server of a TLS session (a
    /// STARTTLS command's answer).
    pub fn start_tls(&self) -> Result<StartTls, TlsError> {
        Ok(StartTls::new(TlsSettings::new(self.setup()?)))
    }
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("handshake_timeout", &self.handshake_timeout)
            .field("max_handshakes", &self.max_handshakes)
            .finish_non_exhaustive()
    }
}

/// Connects to `addr` (`host:port`) with a [`TlsConnector::new`], verifying the server as a
/// browser would. See [`TlsConnector::connect`].
pub async fn connect<P: IntoProtocol>(
    addr: &str,
    protocol: impl FnOnce() -> P,
) -> stdio::Result<(TransportHandle, P::Output)> {
    TlsConnector::new()?.connect(addr, protocol).await
}

/// Serves TLS on every address `addr` resolves to, with the default [`ServerOptions`]: each
/// connection's protocol is made after its handshake, on its worker.
pub async fn serve<F, P>(
    addr: impl ToSocketAddrs,
    acceptor: TlsAcceptor,
    factory: F,
) -> stdio::Result<ServerHandle>
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
) -> stdio::Result<ServerHandle>
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

/// A self-signed certificate and its private key, made at run time: for tests, examples and
/// development servers. Nobody trusts it but a client told to ([`connector`](Self::connector),
/// or the PEM file given to a client's `--cacert`).
pub struct SelfSigned {
    certificate: X509,
    private_key: PKey<Private>,
}

impl SelfSigned {
    /// A certificate for these names (DNS names or IP addresses), valid from yesterday for 30
    /// days, with a new P-256 key.
    pub fn new(names: &[&str]) -> stdio::Result<Self> {
        Self::make(names).map_err(stdio::Error::other)
    }

    fn make(names: &[&str]) -> Result<Self, openssl::error::ErrorStack> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        let private_key = PKey::from_ec_key(EcKey::generate(&group)?)?;
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_nid(
            Nid::COMMONNAME,
            names.first().copied().unwrap_or("localhost"),
        )?;
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "switchboard self-signed")?;
        let name = name.build();
        let mut builder = X509::builder()?;
        builder.set_version(2)?;
        let mut serial = BigNum::new()?;
        serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
        let serial = serial.to_asn1_integer()?;
        builder.set_serial_number(&serial)?;
        builder.set_subject_name(&name)?;
        builder.set_issuer_name(&name)?;
        builder.set_pubkey(&private_key)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let day = 24 * 60 * 60;
        let from = i64::try_from(now.saturating_sub(day)).unwrap_or(i64::MAX);
        let until = i64::try_from(now + 30 * day).unwrap_or(i64::MAX);
        let (from, until) = (Asn1Time::from_unix(from)?, Asn1Time::from_unix(until)?);
        builder.set_not_before(&from)?;
        builder.set_not_after(&until)?;
        // A CA of its own: verifiers (OpenSSL's strict mode, Python 3.13's default) accept a
        // self-signed certificate as a trust anchor only then.
        builder.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        builder.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_cert_sign()
                .build()?,
        )?;
        builder.append_extension(
            ExtendedKeyUsage::new()
                .server_auth()
                .client_auth()
                .build()?,
        )?;
        let mut alt_names = SubjectAlternativeName::new();
        for name in names {
            match name.parse::<IpAddr>() {
                Ok(_) => alt_names.ip(name),
                Err(_) => alt_names.dns(name),
            };
        }
        if !names.is_empty() {
            let alt_names = alt_names.build(&builder.x509v3_context(None, None))?;
            builder.append_extension(alt_names)?;
        }
        builder.sign(&private_key, MessageDigest::sha256())?;
        Ok(SelfSigned {
            certificate: builder.build(),
            private_key,
        })
    }

    /// A certificate for `localhost`, `127.0.0.1` and `::1`.
    pub fn localhost() -> stdio::Result<Self> {
        let v4 = Ipv4Addr::LOCALHOST.to_string();
        let v6 = Ipv6Addr::LOCALHOST.to_string();
        SelfSigned::new(&["localhost", &v4, &v6])
    }

    /// The certificate.
    pub fn certificate(&self) -> &X509 {
        &self.certificate
    }

    /// The private key.
    pub fn private_key(&self) -> &PKey<Private> {
        &self.private_key
    }

    /// The certificate in PEM form.
    pub fn certificate_pem(&self) -> stdio::Result<Vec<u8>> {
        self.certificate.to_pem().map_err(stdio::Error::other)
    }

    /// The private key in PEM form (PKCS#8).
    pub fn private_key_pem(&self) -> stdio::Result<Vec<u8>> {
        self.private_key
            .private_key_to_pem_pkcs8()
            .map_err(stdio::Error::other)
    }

    /// A server acceptor (Mozilla "intermediate") serving this certificate.
    pub fn acceptor(&self) -> stdio::Result<TlsAcceptor> {
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
            .map_err(stdio::Error::other)?;
        builder
            .set_certificate(&self.certificate)
            .and_then(|()| builder.set_private_key(&self.private_key))
            .and_then(|()| builder.check_private_key())
            .map_err(stdio::Error::other)?;
        Ok(TlsAcceptor::new(builder.build()))
    }

    /// A client connector that trusts this certificate and no other, and verifies host names.
    pub fn connector(&self) -> stdio::Result<TlsConnector> {
        let mut builder =
            SslConnector::builder(SslMethod::tls_client()).map_err(stdio::Error::other)?;
        let mut store =
            openssl::x509::store::X509StoreBuilder::new().map_err(stdio::Error::other)?;
        store
            .add_cert(self.certificate.clone())
            .map_err(stdio::Error::other)?;
        builder
            .set_verify_cert_store(store.build())
            .map_err(stdio::Error::other)?;
        Ok(TlsConnector::from_connector(builder.build()))
    }
}

impl fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelfSigned")
            .field("subject", &io::certificate(&self.certificate).subject)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_handshake_timeout_is_refused_when_it_is_set() {
        let cert = SelfSigned::localhost().unwrap();
        for err in [
            cert.acceptor()
                .unwrap()
                .handshake_timeout(Duration::ZERO)
                .unwrap_err(),
            cert.connector()
                .unwrap()
                .handshake_timeout(Duration::ZERO)
                .unwrap_err(),
        ] {
            assert_eq!(err.kind(), stdio::ErrorKind::InvalidInput);
            assert_eq!(
                err.to_string(),
                "a TLS handshake timeout of zero would fail every handshake"
            );
        }
        let acceptor = cert.acceptor().unwrap();
        let acceptor = acceptor.handshake_timeout(Duration::from_nanos(1)).unwrap();
        assert_eq!(acceptor.handshake_timeout, Duration::from_nanos(1));
    }

    #[test]
    fn host_names_come_out_of_addresses() {
        assert_eq!(host_of("example.com:443").unwrap(), "example.com");
        assert_eq!(host_of("127.0.0.1:8443").unwrap(), "127.0.0.1");
        assert_eq!(host_of("[::1]:8443").unwrap(), "::1");
        assert_eq!(host_of("::1").unwrap(), "::1");
        assert!(host_of(":443").is_err());
        assert!(host_of("no-port").is_err());
    }

    #[test]
    fn pem_files_that_cannot_serve_say_why() {
        let dir = std::env::temp_dir().join(format!("sb-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        let cert = SelfSigned::localhost().unwrap();
        std::fs::write(&cert_path, cert.certificate_pem().unwrap()).unwrap();
        std::fs::write(&key_path, cert.private_key_pem().unwrap()).unwrap();
        assert!(TlsAcceptor::from_pem_files(&cert_path, &key_path).is_ok());

        let missing = TlsAcceptor::from_pem_files(dir.join("nope.pem"), &key_path).unwrap_err();
        assert_eq!(missing.kind(), stdio::ErrorKind::NotFound);
        assert!(missing.to_string().contains("nope.pem"), "{missing}");
        let swapped = TlsAcceptor::from_pem_files(&key_path, &cert_path).unwrap_err();
        assert_eq!(swapped.kind(), stdio::ErrorKind::InvalidInput, "{swapped}");
        let other = SelfSigned::localhost().unwrap();
        std::fs::write(&key_path, other.private_key_pem().unwrap()).unwrap();
        let mismatched = TlsAcceptor::from_pem_files(&cert_path, &key_path).unwrap_err();
        assert!(
            mismatched.to_string().contains("does not match"),
            "{mismatched}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn self_signed_certificates_name_what_they_were_made_for() {
        let cert = SelfSigned::new(&["localhost", "127.0.0.1"]).unwrap();
        let described = io::certificate(cert.certificate());
        assert_eq!(described.subject, "CN=localhost,O=switchboard self-signed");
        assert_eq!(described.issuer, described.subject);
        assert_eq!(described.subject_alt_names, ["localhost", "127.0.0.1"]);
        assert!(
            String::from_utf8(cert.private_key_pem().unwrap())
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
    }
}
