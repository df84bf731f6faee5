//! [`TlsConnector`]: the client side, which opens TLS connections ([`connect`]) or makes a
//! client's `StartTls`, verifying the server's certificate and host name.

use std::{fmt, io, net::IpAddr, path::Path, time::Duration};

use bytes::Bytes;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use switchboard_framework::{
    IntoProtocol, StartTls, TlsError, TlsErrorKind, TlsSettings, TransportHandle,
};

use super::layer::{
    DEFAULT_HANDSHAKE_TIMEOUT, MaybeTls, Setup, handshake, valid_handshake_timeout,
};
use crate::{
    factory, runtime,
    stream::{StreamConfig, StreamTransport},
    tcp::TcpConnector,
};

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
    pub fn new() -> io::Result<Self> {
        Ok(TlsConnector::from_connector(
            SslConnector::builder(SslMethod::tls_client())
                .map_err(io::Error::other)?
                .build(),
        ))
    }

    /// A connector that also trusts the certificates of a PEM file (`--cacert` in curl).
    pub fn with_ca_file(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref();
        let mut builder =
            SslConnector::builder(SslMethod::tls_client()).map_err(io::Error::other)?;
        builder.set_ca_file(path).map_err(|err| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
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
    pub fn handshake_timeout(mut self, timeout: Duration) -> io::Result<Self> {
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
    ) -> io::Result<(TransportHandle, P::Output)> {
        runtime::require_arbiter("tls::connect")?;
        self.tcp.stream_config().check()?;
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
fn host_of(addr: &str) -> io::Result<String> {
    let host = if let Some(rest) = addr.strip_prefix('[') {
        rest.split_once(']').map(|(host, _)| host)
    } else if addr.parse::<IpAddr>().is_ok() {
        Some(addr)
    } else {
        addr.rsplit_once(':').map(|(host, _)| host)
    };
    match host {
        Some(host) if !host.is_empty() => Ok(host.to_owned()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot tell the host name in {addr:?}; set TlsConnector::server_name"),
        )),
    }
}

/// Connects to `addr` (`host:port`) with a [`TlsConnector::new`], verifying the server as a
/// browser would. See [`TlsConnector::connect`].
pub async fn connect<P: IntoProtocol>(
    addr: &str,
    protocol: impl FnOnce() -> P,
) -> io::Result<(TransportHandle, P::Output)> {
    TlsConnector::new()?.connect(addr, protocol).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_come_out_of_addresses() {
        assert_eq!(host_of("example.com:443").unwrap(), "example.com");
        assert_eq!(host_of("127.0.0.1:8443").unwrap(), "127.0.0.1");
        assert_eq!(host_of("[::1]:8443").unwrap(), "::1");
        assert_eq!(host_of("::1").unwrap(), "::1");
        assert!(host_of(":443").is_err());
        assert!(host_of("no-port").is_err());
    }
}
