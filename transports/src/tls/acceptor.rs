//! [`TlsAcceptor`]: the server side, which serves TLS connections (see `serve`) or makes a
//! server's `StartTls`, and bounds how many handshakes a server runs at once.

use std::{fmt, io, path::Path, time::Duration};

use openssl::{
    pkey::PKey,
    ssl::{Ssl, SslAcceptor, SslMethod},
    x509::X509,
};
use switchboard_framework::{StartTls, TlsError, TlsErrorKind, TlsSettings};

use super::layer::{DEFAULT_HANDSHAKE_TIMEOUT, Setup, valid_handshake_timeout};

/// The most handshakes a server runs at once: 1024. A connection takes a place once its
/// ClientHello has arrived (a silent one never does); past the limit, clients that have spoken
/// wait for a place, each freed within [`DEFAULT_HANDSHAKE_TIMEOUT`]. It bounds the CPU that
/// handshakes take at once.
pub const DEFAULT_MAX_HANDSHAKES: usize = 1024;

/// How long a TLS server waits for a new connection's ClientHello before it drops the
/// connection: 5 s. A real client sends it right after the TCP handshake, one round trip; a
/// client that connects and says nothing holds a descriptor this long, and no handshake place.
pub const DEFAULT_CLIENT_HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// The server side: serves TLS connections, or makes the [`StartTls`] of a server.
#[derive(Clone)]
pub struct TlsAcceptor {
    acceptor: SslAcceptor,
    handshake_timeout: Duration,
    pub(super) max_handshakes: usize,
    pub(super) client_hello_timeout: Duration,
}

impl TlsAcceptor {
    /// An acceptor over an OpenSSL acceptor you configured.
    pub fn new(acceptor: SslAcceptor) -> Self {
        TlsAcceptor {
            acceptor,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            client_hello_timeout: DEFAULT_CLIENT_HELLO_TIMEOUT,
        }
    }

    /// An acceptor with Mozilla's "intermediate" settings (TLS 1.2 and 1.3), serving the
    /// certificate chain and private key of two PEM files.
    pub fn from_pem_files(
        certificate_chain: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
    ) -> io::Result<Self> {
        let (chain_path, key_path) = (certificate_chain.as_ref(), private_key.as_ref());
        let read = |what: &str, path: &Path| {
            std::fs::read(path).map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!("cannot read the {what} {}: {err}", path.display()),
                )
            })
        };
        let invalid = |what: &str, path: &Path, err| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} holds no usable {what}: {err}", path.display()),
            )
        };
        let chain = X509::stack_from_pem(&read("certificate chain", chain_path)?)
            .map_err(|err| invalid("PEM certificate", chain_path, err))?;
        let key = PKey::private_key_from_pem(&read("private key", key_path)?)
            .map_err(|err| invalid("PEM private key", key_path, err))?;
        let mut chain = chain.into_iter();
        let leaf = chain.next().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} holds no certificate", chain_path.display()),
            )
        })?;
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
            .map_err(io::Error::other)?;
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
                io::Error::new(
                    io::ErrorKind::InvalidInput,
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
    pub fn handshake_timeout(mut self, timeout: Duration) -> io::Result<Self> {
        self.handshake_timeout = valid_handshake_timeout(timeout)?;
        Ok(self)
    }

    /// Sets how many handshakes a server runs at once (see [`DEFAULT_MAX_HANDSHAKES`]; at
    /// least 1).
    pub fn max_handshakes(mut self, max: usize) -> Self {
        self.max_handshakes = max.max(1);
        self
    }

    /// Sets how long a server waits for a new connection's ClientHello (see
    /// [`DEFAULT_CLIENT_HELLO_TIMEOUT`]). A zero timeout is refused with `InvalidInput`.
    pub fn client_hello_timeout(mut self, timeout: Duration) -> io::Result<Self> {
        if timeout.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a ClientHello timeout of zero would drop every connection",
            ));
        }
        self.client_hello_timeout = timeout;
        Ok(self)
    }

    /// The OpenSSL acceptor.
    pub fn ssl_acceptor(&self) -> &SslAcceptor {
        &self.acceptor
    }

    pub(super) fn setup(&self) -> Result<Setup, TlsError> {
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
            .field("client_hello_timeout", &self.client_hello_timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::SelfSigned;

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
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
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
    fn pem_files_that_cannot_serve_say_why() {
        let dir = std::env::temp_dir().join(format!("sb-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        let cert = SelfSigned::localhost().unwrap();
        std::fs::write(&cert_path, cert.certificate_pem().unwrap()).unwrap();
        std::fs::write(&key_path, cert.private_key_pem().unwrap()).unwrap();
        assert!(TlsAcceptor::from_pem_files(&cert_path, &key_path).is_ok());

        let missing = TlsAcceptor::from_pem_files(dir.join("nope.pem"), &key_path).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert!(missing.to_string().contains("nope.pem"), "{missing}");
        let swapped = TlsAcceptor::from_pem_files(&key_path, &cert_path).unwrap_err();
        assert_eq!(swapped.kind(), io::ErrorKind::InvalidInput, "{swapped}");
        let other = SelfSigned::localhost().unwrap();
        std::fs::write(&key_path, other.private_key_pem().unwrap()).unwrap();
        let mismatched = TlsAcceptor::from_pem_files(&cert_path, &key_path).unwrap_err();
        assert!(
            mismatched.to_string().contains("does not match"),
            "{mismatched}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
