//! [`MaybeTls`]: the I/O layer that lets one stream transport speak plaintext, then TLS; and
//! the handshake it runs, bounded by [`DEFAULT_HANDSHAKE_TIMEOUT`].

use std::{
    fmt,
    future::Future,
    io,
    net::IpAddr,
    pin::Pin,
    task::{Context as TaskContext, Poll, ready},
    time::Duration,
};

use bytes::{Buf, Bytes};
use openssl::{
    ssl::{self, ErrorCode, NameType, Ssl, SslRef},
    x509::{X509NameRef, X509Ref, X509VerifyResult},
};
use switchboard_framework::{
    Certificate, CipherInfo, ExtraInfo, ExtraObject, TlsError, TlsErrorKind, TlsSession,
    TlsSettings, WriteBufferLimits, keys,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::Sleep,
};
use tokio_openssl::SslStream;

use crate::stream::StreamIo;

/// What `TlsConnector::start_tls` and `TlsAcceptor::start_tls` put in a `StartTls`, and what
/// a TLS `connect` or accept starts a handshake with.
#[derive(Debug)]
pub(super) struct Setup {
    pub(super) ssl: Ssl,
    pub(super) server: bool,
    pub(super) timeout: Duration,
}

/// How long a handshake may take before the connection is dropped: 10 s.
///
/// Between actix-tls's 3 s, which a slow mobile link can miss, and asyncio's 60 s, which lets a
/// client that never speaks hold a place for a minute.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `timeout`, if a handshake can succeed within it.
pub(super) fn valid_handshake_timeout(timeout: Duration) -> io::Result<Duration> {
    if timeout.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a TLS handshake timeout of zero would fail every handshake",
        ));
    }
    Ok(timeout)
}

/// A stream that speaks plaintext until told to start TLS, then TLS, in place: the I/O object of
/// every TCP and Unix-socket transport, so `StartTls` works on any of them.
///
/// Wrap your own stream with [`MaybeTls::plain`] to give a transport you
/// [`spawn`](crate::stream::spawn) the same ability.
pub struct MaybeTls<S> {
    state: State<S>,
}

enum State<S> {
    Plain(S),
    /// Boxed: a handshake is brief, and the timer and flags would grow every connection.
    Handshaking(Box<Handshake<S>>),
    /// With whether the peer's close_notify was read: its stream ended cleanly. Inside the
    /// variant, where it fits beside the stream: a flag of its own next to `state` would grow
    /// every TCP and Unix transport into the next task size class.
    Secure(SslStream<Prefixed<S>>, bool),
    /// After a failed handshake: the connection is over.
    Failed,
}

struct Handshake<S> {
    stream: SslStream<Prefixed<S>>,
    server: bool,
    timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S: StreamIo> MaybeTls<S> {
    /// A plaintext stream that can start TLS later.
    pub fn plain(stream: S) -> Self {
        MaybeTls {
            state: State::Plain(stream),
        }
    }

    /// A stream whose handshake starts now, with `prefix` read before the socket.
    pub(super) fn handshaking(setup: Setup, stream: S, prefix: Bytes) -> Result<Self, TlsError> {
        let stream = SslStream::new(setup.ssl, Prefixed { prefix, stream }).map_err(|err| {
            TlsError::new(
                TlsErrorKind::Handshake,
                format!("could not set up TLS: {err}"),
            )
        })?;
        Ok(MaybeTls {
            state: State::Handshaking(Box::new(Handshake {
                stream,
                server: setup.server,
                timeout: setup.timeout,
                deadline: Box::pin(tokio::time::sleep(setup.timeout)),
            })),
        })
    }

    /// Drives the handshake to its end: `Ok` at once when there is none.
    fn poll_handshake(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), TlsError>> {
        let State::Handshaking(handshake) = &mut self.state else {
            return Poll::Ready(Ok(()));
        };
        let stream = Pin::new(&mut handshake.stream);
        let result = if handshake.server {
            stream.poll_accept(cx)
        } else {
            stream.poll_connect(cx)
        };
        let outcome = match result {
            Poll::Ready(Ok(())) => Ok(()),
            Poll::Ready(Err(err)) => Err(classify(&err, handshake.stream.ssl())),
            Poll::Pending => {
                if handshake.deadline.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                Err(TlsError::new(
                    TlsErrorKind::TimedOut,
                    format!("no handshake within {:?}", handshake.timeout),
                ))
            }
        };
        match std::mem::replace(&mut self.state, State::Failed) {
            State::Handshaking(handshake) if outcome.is_ok() => {
                self.state = State::Secure(handshake.stream, false);
            }
            _ => {}
        }
        Poll::Ready(outcome)
    }

    /// Whether TLS is on (the handshake is done).
    pub fn is_secure(&self) -> bool {
        matches!(self.state, State::Secure(..))
    }

    /// The TLS session, once the handshake is done.
    pub fn ssl(&self) -> Option<&SslRef> {
        match &self.state {
            State::Secure(stream, _) => Some(stream.ssl()),
            _ => None,
        }
    }

    fn inner(&self) -> Option<&S> {
        match &self.state {
            State::Plain(stream) => Some(stream),
            State::Handshaking(handshake) => Some(&handshake.stream.get_ref().stream),
            State::Secure(stream, _) => Some(&stream.get_ref().stream),
            State::Failed => None,
        }
    }
}

/// Turns OpenSSL's handshake error into a [`TlsError`] that says what went wrong.
fn classify(err: &ssl::Error, ssl: &SslRef) -> TlsError {
    let verify = ssl.verify_result();
    if verify != X509VerifyResult::OK {
        return TlsError::new(TlsErrorKind::Certificate, verify.error_string());
    }
    if let Some(io_err) = err.io_error() {
        return TlsError::new(TlsErrorKind::ConnectionEnded, io_err.to_string());
    }
    if err.code() == ErrorCode::SYSCALL || is_unexpected_eof(err) {
        return TlsError::new(
            TlsErrorKind::ConnectionEnded,
            "the peer closed the connection",
        );
    }
    let reason = err
        .ssl_error()
        .and_then(|stack| stack.errors().first())
        .and_then(|first| first.reason())
        .map_or_else(|| err.to_string(), str::to_owned);
    TlsError::new(TlsErrorKind::Handshake, reason)
}

/// OpenSSL 3's `SSL_R_UNEXPECTED_EOF_WHILE_READING`: the peer closed the TCP connection without
/// a close_notify.
const UNEXPECTED_EOF_WHILE_READING: i32 = 294;

fn is_unexpected_eof(err: &ssl::Error) -> bool {
    err.ssl_error()
        .and_then(|stack| stack.errors().first())
        .is_some_and(|first| first.reason_code() == UNEXPECTED_EOF_WHILE_READING)
}

/// Whether a read error is the peer closing without close_notify.
fn is_unexpected_eof_io(err: &io::Error) -> bool {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<ssl::Error>())
        .is_some_and(is_unexpected_eof)
}

impl<S: StreamIo> StreamIo for MaybeTls<S> {
    fn extra_info(&self, name: &str) -> Option<ExtraInfo> {
        if let State::Secure(stream, _) = &self.state
            && let Some(info) = tls_extra_info(stream.ssl(), name)
        {
            return Some(info);
        }
        self.inner()?.extra_info(name)
    }

    fn lasting_keys(&self) -> &'static [&'static str] {
        match &self.state {
            State::Secure(..) => &[
                keys::PEERNAME,
                keys::SOCKNAME,
                keys::CIPHER,
                keys::COMPRESSION,
                keys::PEERCERT,
                keys::SSLCONTEXT,
                keys::SSL_OBJECT,
            ],
            _ => self.inner().map_or(&[], S::lasting_keys),
        }
    }

    fn default_write_buffer_limits(&self) -> WriteBufferLimits {
        match &self.state {
            State::Plain(stream) => stream.default_write_buffer_limits(),
            _ => WriteBufferLimits::tls(),
        }
    }

    fn unclean_end(&self) -> Option<io::Error> {
        // Secure, and no close_notify came.
        if !matches!(self.state, State::Secure(_, false)) {
            return None;
        }
        Some(
            TlsError::new(
                TlsErrorKind::Truncated,
                "the peer ended the connection without close_notify",
            )
            .into(),
        )
    }

    fn can_write_eof(&self) -> bool {
        match &self.state {
            State::Plain(stream) => stream.can_write_eof(),
            _ => false,
        }
    }

    fn prepare_abort(&self) {
        if let Some(inner) = self.inner() {
            inner.prepare_abort();
        }
    }

    fn drop_closes_after_eof(&self) -> bool {
        match &self.state {
            State::Plain(stream) => stream.drop_closes_after_eof(),
            // close_notify first.
            _ => false,
        }
    }

    /// The upgrade a `StartTls` asks for: a handshake, from plaintext only.
    fn check_upgrade(&self) -> Result<(), TlsError> {
        match &self.state {
            State::Plain(_) => Ok(()),
            _ => Err(TlsError::new(
                TlsErrorKind::InvalidState,
                "the transport is already encrypted",
            )),
        }
    }

    fn start_upgrade(&mut self, settings: TlsSettings, prefix: Bytes) -> Result<(), TlsError> {
        self.check_upgrade()?;
        let setup = settings.downcast::<Setup>().map_err(|settings| {
            TlsError::new(
                TlsErrorKind::Unsupported,
                format!("{settings:?} are not settings this transport knows"),
            )
        })?;
        let State::Plain(stream) = std::mem::replace(&mut self.state, State::Failed) else {
            unreachable!("checked above");
        };
        *self = MaybeTls::handshaking(setup, stream, prefix)?;
        Ok(())
    }

    fn poll_upgrade(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), TlsError>> {
        self.poll_handshake(cx)
    }
}

/// The TLS extra-info keys of an established session.
fn tls_extra_info(ssl: &SslRef, name: &str) -> Option<ExtraInfo> {
    Some(match name {
        keys::CIPHER => ExtraInfo::Cipher(cipher(ssl)?),
        // OpenSSL builds leave compression out (CRIME), and the binding does not expose it.
        keys::COMPRESSION => ExtraInfo::Compression(None),
        keys::PEERCERT => ExtraInfo::PeerCert(ssl.peer_certificate().map(|c| certificate(&c))),
        keys::SSLCONTEXT => ExtraInfo::Object(ExtraObject::new(ssl.ssl_context().to_owned())),
        keys::SSL_OBJECT => ExtraInfo::TlsSession(session(ssl)?),
        _ => return None,
    })
}

fn cipher(ssl: &SslRef) -> Option<CipherInfo> {
    let cipher = ssl.current_cipher()?;
    let bits = u32::try_from(cipher.bits().secret).unwrap_or(0);
    Some(CipherInfo::new(cipher.name(), cipher.version(), bits))
}

fn session(ssl: &SslRef) -> Option<TlsSession> {
    let server = ssl.is_server();
    let mut chain: Vec<Certificate> = Vec::new();
    // OpenSSL leaves the client's own certificate out of the chain a server sees.
    if server && let Some(leaf) = ssl.peer_certificate() {
        chain.push(certificate(&leaf));
    }
    if let Some(stack) = ssl.peer_cert_chain() {
        chain.extend(stack.iter().map(certificate));
    }
    Some(
        TlsSession::new(ssl.version_str(), cipher(ssl)?, server)
            .with_alpn_protocol(ssl.selected_alpn_protocol().map(Bytes::copy_from_slice))
            .with_server_name(ssl.servername(NameType::HOST_NAME).map(str::to_owned))
            .with_session_reused(ssl.session_reused())
            .with_peer_chain(chain),
    )
}

/// Describes an X.509 certificate.
pub(super) fn certificate(cert: &X509Ref) -> Certificate {
    let serial = cert
        .serial_number()
        .to_bn()
        .and_then(|bn| bn.to_hex_str().map(|hex| hex.to_string()))
        .unwrap_or_default();
    let names = cert
        .subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|name| {
                    if let Some(dns) = name.dnsname() {
                        return Some(dns.to_owned());
                    }
                    let ip = name.ipaddress()?;
                    let ip = match ip.len() {
                        4 => IpAddr::from(<[u8; 4]>::try_from(ip).ok()?),
                        16 => IpAddr::from(<[u8; 16]>::try_from(ip).ok()?),
                        _ => return None,
                    };
                    Some(ip.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    Certificate::new(
        cert.to_der().unwrap_or_default(),
        name_text(cert.subject_name()),
        name_text(cert.issuer_name()),
        serial,
    )
    .with_validity(cert.not_before().to_string(), cert.not_after().to_string())
    .with_subject_alt_names(names)
}

/// `CN=localhost,O=switchboard`, in the certificate's order.
fn name_text(name: &X509NameRef) -> String {
    name.entries()
        .map(|entry| {
            let key = entry.object().nid().short_name().unwrap_or("?");
            let value = entry.data().to_string().unwrap_or_default();
            format!("{key}={value}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl<S: StreamIo> AsyncRead for MaybeTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            State::Secure(stream, close_notify_read) => {
                let before = buf.filled().len();
                match ready!(Pin::new(&mut *stream).poll_read(cx, buf)) {
                    // An EOF. The openssl crate reads both a close_notify and a TCP EOF without
                    // one as `Ok(0)`; a peek tells them apart: OpenSSL's "zero return" is the
                    // close_notify, anything else a truncation, which the transport reports
                    // (`unclean_end`) after delivering everything read before it.
                    Ok(()) if buf.filled().len() == before && buf.remaining() > 0 => {
                        let mut probe = [0; 1];
                        *close_notify_read = matches!(
                            Pin::new(stream).poll_peek(cx, &mut probe),
                            Poll::Ready(Err(err)) if err.code() == ErrorCode::ZERO_RETURN
                        );
                        if !*close_notify_read {
                            tracing::debug!("TLS peer closed without close_notify");
                        }
                        Poll::Ready(Ok(()))
                    }
                    // What OpenSSL 3 may report instead for a TCP EOF without close_notify.
                    Err(err) if is_unexpected_eof_io(&err) => {
                        tracing::debug!("TLS peer closed without close_notify");
                        Poll::Ready(Ok(()))
                    }
                    other => Poll::Ready(other),
                }
            }
            State::Handshaking(_) | State::Failed => Poll::Ready(Err(not_ready())),
        }
    }
}

impl<S: StreamIo> AsyncWrite for MaybeTls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().state {
            State::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            State::Secure(stream, _) => Pin::new(stream).poll_write(cx, buf),
            State::Handshaking(_) | State::Failed => Poll::Ready(Err(not_ready())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().state {
            State::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            State::Secure(stream, _) => Pin::new(stream).poll_write_vectored(cx, bufs),
            State::Handshaking(_) | State::Failed => Poll::Ready(Err(not_ready())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.state {
            State::Plain(stream) => stream.is_write_vectored(),
            _ => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Plain(stream) => Pin::new(stream).poll_flush(cx),
            State::Secure(stream, _) => Pin::new(stream).poll_flush(cx),
            State::Handshaking(_) | State::Failed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            State::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            // close_notify, then the TCP FIN.
            State::Secure(stream, _) => Pin::new(stream).poll_shutdown(cx),
            State::Handshaking(_) | State::Failed => Poll::Ready(Err(not_ready())),
        }
    }
}

fn not_ready() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "no TLS session")
}

impl<S> fmt::Debug for MaybeTls<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Plain(_) => "plain",
            State::Handshaking(_) => "handshaking",
            State::Secure(..) => "secure",
            State::Failed => "failed",
        };
        f.debug_struct("MaybeTls")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

/// A stream that yields `prefix` before reading its own bytes: how `StartTls` feeds plaintext
/// already read to TLS. Hand-written, as tokio's `chain` is read-only and TLS also writes.
struct Prefixed<S> {
    prefix: Bytes,
    stream: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Runs a handshake begun with [`MaybeTls::handshaking`] to its end.
pub(super) async fn handshake<S: StreamIo>(mut io: MaybeTls<S>) -> Result<MaybeTls<S>, TlsError> {
    std::future::poll_fn(|cx| io.poll_handshake(cx)).await?;
    Ok(io)
}
