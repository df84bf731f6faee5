//! The TLS vocabulary: the [`StartTls`] command, its [`TlsError`], and the values of the TLS
//! extra-info keys. No TLS library here: `switchboard-transports` (feature `tls`) makes the
//! settings a `StartTls` carries and implements the handshake.

use std::{any::Any, fmt, io};

use actix::Message;
use bytes::Bytes;
use derive_more::{Display, Error};

/// Upgrades a live plaintext transport to TLS in place (asyncio's `loop.start_tls`), on either
/// side of the connection. The reply comes when the handshake has ended.
///
/// Made by the transports crate, which knows the TLS library:
/// `TlsConnector::start_tls(server_name)` for the client side, `TlsAcceptor::start_tls()` for the
/// server side. Then, in the transport's FIFO:
///
/// 1. every write queued before the `StartTls` goes out in plaintext, first;
/// 2. plaintext read from the peer and not yet delivered is **discarded** (what a STARTTLS
///    command protocol must do: RFC 3207 §4.2, the CVE-2011-0411 class of injection bugs), or,
///    with [`feed_to_tls`](Self::feed_to_tls), handed to TLS as the start of the handshake
///    (what a PROXY-protocol header followed by a ClientHello in one segment needs). Plaintext
///    the *protocol* received and did not consume (the bytes after the go-ahead line in its
///    buffer) it hands over with [`unconsumed`](Self::unconsumed) (or
///    [`Framing::start_tls`](crate::Framing::start_tls)): if there is any, the upgrade is
///    refused and the connection ended with a [`TlsErrorKind::Injection`] error, on the client
///    side as on the server side, since no honest peer sends anything between its go-ahead
///    and the handshake;
/// 3. the handshake runs, bounded by its timeout; writes sent meanwhile wait and then go out
///    encrypted, in order;
/// 4. reading resumes over TLS. The protocol keeps its [`TransportHandle`](crate::TransportHandle)
///    and receives no second `ConnectionMade`; the TLS extra-info keys answer from now on.
///
/// A failed handshake ends the connection with `ConnectionLost(Some(err))`, where `err` carries
/// the [`TlsError`] (see [`TlsError::of`]).
#[derive(Debug)]
pub struct StartTls {
    /// The TLS settings, made by the transports crate.
    pub settings: TlsSettings,
    /// What happens to plaintext that arrived and was not delivered.
    pub plaintext: BufferedPlaintext,
    /// Bytes the protocol received and did not consume: fed to TLS first with
    /// [`BufferedPlaintext::FeedToTls`]; with [`BufferedPlaintext::Discard`] (the default),
    /// their presence refuses the upgrade and ends the connection.
    pub leftover: Bytes,
}

impl StartTls {
    /// An upgrade with these settings that discards buffered plaintext.
    pub fn new(settings: TlsSettings) -> Self {
        StartTls {
            settings,
            plaintext: BufferedPlaintext::Discard,
            leftover: Bytes::new(),
        }
    }

    /// Hands over what the protocol received and did not consume (its parser's leftover). If
    /// there is any, the upgrade is refused and the connection ended with a
    /// [`TlsErrorKind::Injection`] error: bytes after a STARTTLS go-ahead (`220 ready`) or a
    /// `STARTTLS` command were sent in the clear, and would otherwise be taken as part of the
    /// protected session (CVE-2011-0411's class).
    pub fn unconsumed(mut self, leftover: impl Into<Bytes>) -> Self {
        self.plaintext = BufferedPlaintext::Discard;
        self.leftover = leftover.into();
        self
    }

    /// Feeds `leftover`, then whatever the transport read and did not deliver, to TLS as the
    /// first bytes of the handshake instead of discarding them.
    pub fn feed_to_tls(mut self, leftover: impl Into<Bytes>) -> Self {
        self.plaintext = BufferedPlaintext::FeedToTls;
        self.leftover = leftover.into();
        self
    }
}

impl Message for StartTls {
    type Result = Result<(), TlsError>;
}

/// What [`StartTls`] does with plaintext that arrived before the handshake and was not yet
/// delivered to the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BufferedPlaintext {
    /// Drop it: after STARTTLS, nothing the peer sent in the clear may be taken as part of the
    /// protected session. The default.
    #[default]
    Discard,
    /// Hand it to TLS as the first bytes of the handshake.
    FeedToTls,
}

/// The TLS settings a [`StartTls`] carries, opaque to this crate: the transports crate puts its
/// own type in and takes it out again.
pub struct TlsSettings {
    inner: Box<dyn Any + Send>,
    type_name: &'static str,
}

impl TlsSettings {
    /// Wraps a transport kind's settings.
    pub fn new<T: Any + Send>(settings: T) -> Self {
        TlsSettings {
            inner: Box::new(settings),
            type_name: std::any::type_name::<T>(),
        }
    }

    /// Takes the settings out if they are a `T`; gives them back otherwise.
    pub fn downcast<T: Any>(self) -> Result<T, Self> {
        let type_name = self.type_name;
        self.inner
            .downcast::<T>()
            .map(|settings| *settings)
            .map_err(|inner| TlsSettings { inner, type_name })
    }
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TlsSettings").field(&self.type_name).finish()
    }
}

/// Why a TLS handshake, on connect, on accept or after [`StartTls`], did not succeed, or why a
/// TLS stream did not end cleanly ([`TlsErrorKind::Truncated`], in `ConnectionLost`).
#[derive(Debug, Display, Error, Clone, PartialEq, Eq)]
#[display("{kind}: {message}")]
pub struct TlsError {
    kind: TlsErrorKind,
    message: String,
}

/// The kinds of [`TlsError`].
#[derive(Debug, Display, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsErrorKind {
    /// The peer's certificate did not verify (untrusted, expired, or not for this name).
    #[display("certificate verification failed")]
    Certificate,
    /// The handshake failed otherwise: no common protocol or cipher, a peer that does not speak
    /// TLS, a broken message.
    #[display("TLS handshake failed")]
    Handshake,
    /// The handshake did not finish within its timeout.
    #[display("TLS handshake timed out")]
    TimedOut,
    /// The connection ended (closed, reset, aborted) before the handshake finished.
    #[display("connection ended during the TLS handshake")]
    ConnectionEnded,
    /// This transport is already encrypted, or is upgrading, or is closing.
    #[display("StartTls is not possible now")]
    InvalidState,
    /// This kind of transport cannot run TLS (or the `tls` feature is off).
    #[display("TLS is not supported here")]
    Unsupported,
    /// The peer's TLS stream ended without its close_notify: the TCP connection closed while
    /// the protocol was reading. What was delivered is authentic, but the peer may have meant
    /// to send more (or someone on the path cut it short): a protocol that reads a body up to
    /// the end of the stream must not take it as complete. A clean end (close_notify) gives
    /// `EofReceived`, then `ConnectionLost(None)`. After the protocol's own `Close`, a peer
    /// that does not answer close_notify is not reported: nothing the protocol received can
    /// be cut short then, and most TLS stacks never answer it.
    #[display("TLS stream truncated")]
    Truncated,
    /// `StartTls` was asked for while the protocol held plaintext received after the peer's
    /// go-ahead and before the handshake (see [`StartTls::unconsumed`]): the upgrade was
    /// refused and the connection ended, as a peer (or someone on the path) that sends bytes
    /// there is attempting a STARTTLS injection.
    #[display("plaintext received before the TLS handshake")]
    Injection,
}

impl TlsError {
    /// An error of this kind, with the details.
    pub fn new(kind: TlsErrorKind, message: impl Into<String>) -> Self {
        TlsError {
            kind,
            message: message.into(),
        }
    }

    /// The error that refuses a `StartTls` whose protocol held `bytes` of unconsumed plaintext.
    pub fn injection(bytes: usize) -> Self {
        TlsError::new(
            TlsErrorKind::Injection,
            format!(
                "{bytes} bytes of plaintext arrived after the go-ahead and before the handshake: \
                 upgrade refused and connection ended (RFC 3207 §4.2, CVE-2011-0411)"
            ),
        )
    }

    /// What went wrong, broadly.
    pub fn kind(&self) -> TlsErrorKind {
        self.kind
    }

    /// The details, e.g. OpenSSL's reason ("self-signed certificate").
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `TlsError` behind an `io::Error` (from a TLS `connect`, or in a `ConnectionLost`).
    pub fn of(err: &io::Error) -> Option<&TlsError> {
        err.get_ref()?.downcast_ref::<TlsError>()
    }

    /// The `io::ErrorKind` this error maps to.
    pub fn io_kind(&self) -> io::ErrorKind {
        match self.kind {
            TlsErrorKind::Certificate | TlsErrorKind::Handshake | TlsErrorKind::Injection => {
                io::ErrorKind::InvalidData
            }
            TlsErrorKind::TimedOut => io::ErrorKind::TimedOut,
            TlsErrorKind::ConnectionEnded => io::ErrorKind::ConnectionAborted,
            TlsErrorKind::InvalidState => io::ErrorKind::InvalidInput,
            TlsErrorKind::Unsupported => io::ErrorKind::Unsupported,
            TlsErrorKind::Truncated => io::ErrorKind::UnexpectedEof,
        }
    }
}

impl From<TlsError> for io::Error {
    fn from(err: TlsError) -> Self {
        io::Error::new(err.io_kind(), err)
    }
}

/// The `cipher` key: the negotiated cipher, as asyncio's `(name, protocol, secret_bits)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct CipherInfo {
    /// OpenSSL's name of the cipher suite, e.g. `TLS_AES_256_GCM_SHA384`.
    pub name: String,
    /// The protocol version, e.g. `TLSv1.3`.
    pub protocol: String,
    /// The secret bits of the symmetric cipher, e.g. 256.
    pub secret_bits: u32,
}

impl CipherInfo {
    /// Describes a cipher.
    pub fn new(name: impl Into<String>, protocol: impl Into<String>, secret_bits: u32) -> Self {
        CipherInfo {
            name: name.into(),
            protocol: protocol.into(),
            secret_bits,
        }
    }
}

/// A certificate, as the `peercert` key and the `ssl_object` snapshot's chain give it: the DER
/// bytes (for any X.509 library) and the fields people look at.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Certificate {
    /// The certificate, DER-encoded.
    pub der: Bytes,
    /// The subject, e.g. `CN=localhost`.
    pub subject: String,
    /// The issuer, in the same form.
    pub issuer: String,
    /// The serial number, in hexadecimal.
    pub serial: String,
    /// Valid from, e.g. `Nov 21 10:00:00 2026 GMT`.
    pub not_before: String,
    /// Valid until, in the same form.
    pub not_after: String,
    /// The subject alternative names: DNS names as they are, IP addresses in their usual form.
    pub subject_alt_names: Vec<String>,
}

impl Certificate {
    /// A certificate from its DER bytes and described fields. For transports.
    pub fn new(der: impl Into<Bytes>, subject: String, issuer: String, serial: String) -> Self {
        Certificate {
            der: der.into(),
            subject,
            issuer,
            serial,
            not_before: String::new(),
            not_after: String::new(),
            subject_alt_names: Vec::new(),
        }
    }

    /// Sets the validity period.
    pub fn with_validity(mut self, not_before: String, not_after: String) -> Self {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }

    /// Sets the subject alternative names.
    pub fn with_subject_alt_names(mut self, names: Vec<String>) -> Self {
        self.subject_alt_names = names;
        self
    }
}

/// The `ssl_object` key: a snapshot of the TLS session, taken when asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct TlsSession {
    /// The protocol version, e.g. `TLSv1.3`.
    pub version: String,
    /// The negotiated cipher.
    pub cipher: CipherInfo,
    /// The protocol agreed with ALPN, if any (e.g. `h2`).
    pub alpn_protocol: Option<Bytes>,
    /// The server name the client asked for with SNI, if any.
    pub server_name: Option<String>,
    /// Whether the session was resumed rather than negotiated in full.
    pub session_reused: bool,
    /// The certificates the peer sent, its own first; empty when it sent none.
    pub peer_chain: Vec<Certificate>,
    /// Whether this end is the server.
    pub server_side: bool,
}

impl TlsSession {
    /// A snapshot. For transports.
    pub fn new(version: impl Into<String>, cipher: CipherInfo, server_side: bool) -> Self {
        TlsSession {
            version: version.into(),
            cipher,
            alpn_protocol: None,
            server_name: None,
            session_reused: false,
            peer_chain: Vec::new(),
            server_side,
        }
    }

    /// Sets the ALPN protocol.
    pub fn with_alpn_protocol(mut self, protocol: Option<Bytes>) -> Self {
        self.alpn_protocol = protocol;
        self
    }

    /// Sets the SNI name.
    pub fn with_server_name(mut self, name: Option<String>) -> Self {
        self.server_name = name;
        self
    }

    /// Sets whether the session was resumed.
    pub fn with_session_reused(mut self, reused: bool) -> Self {
        self.session_reused = reused;
        self
    }

    /// Sets the peer's certificate chain.
    pub fn with_peer_chain(mut self, chain: Vec<Certificate>) -> Self {
        self.peer_chain = chain;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_come_back_out_as_what_went_in() {
        let settings = TlsSettings::new(42u32);
        assert!(format!("{settings:?}").contains("u32"));
        let settings = settings.downcast::<String>().expect_err("not a String");
        assert_eq!(settings.downcast::<u32>().ok(), Some(42));
    }

    #[test]
    fn tls_errors_round_trip_through_io_errors() {
        let err = TlsError::new(TlsErrorKind::Certificate, "self-signed certificate");
        assert_eq!(
            err.to_string(),
            "certificate verification failed: self-signed certificate"
        );
        let io: io::Error = err.clone().into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
        assert_eq!(TlsError::of(&io), Some(&err));
        let timeout: io::Error = TlsError::new(TlsErrorKind::TimedOut, "after 1s").into();
        assert_eq!(timeout.kind(), io::ErrorKind::TimedOut);
        assert_eq!(TlsError::of(&io::Error::other("plain")), None);
    }

    #[test]
    fn start_tls_discards_unless_told_to_feed() {
        let start = StartTls::new(TlsSettings::new(()));
        assert_eq!(start.plaintext, BufferedPlaintext::Discard);
        let start = start.feed_to_tls("PROXY TCP4 ...\r\n");
        assert_eq!(start.plaintext, BufferedPlaintext::FeedToTls);
        assert_eq!(&start.leftover[..], b"PROXY TCP4 ...\r\n");
    }
}
