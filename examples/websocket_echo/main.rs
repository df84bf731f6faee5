//! A WebSocket echo server (RFC 6455) behind a small HTTP/1.1 server: one connection, two
//! protocols, switched at runtime with `Ctx::switch_with`.
//!
//! Both are [`Protocol`]s. Every connection starts with the HTTP protocol ([`Http`]). `GET /`
//! serves a page whose script opens a WebSocket to `/ws`, sends what you type and shows the echoes.
//! `GET /ws` with a valid upgrade request is answered `101 Switching Protocols`, and the connection
//! is switched to the WebSocket protocol ([`WebSocket`]) together with the bytes the client sent
//! behind its request (a client may send its first frame without waiting for the `101`). The
//! WebSocket protocol echoes text and binary messages (fragmented ones reassembled), answers pings,
//! performs the closing handshake, and fails the connection with the close code RFC 6455 asks for:
//! 1002 for a protocol error (an unmasked frame, a control frame over 125 bytes or fragmented, a
//! stray continuation, a reserved opcode or bit), 1007 for a text message that is not UTF-8 (as
//! soon as the bytes received prove it, before the message ends, before the frame that carries them
//! ends), 1009 for a message over `--max-message`.
//!
//! ```text
//! cargo run --example websocket_echo                  # http://127.0.0.1:8080/
//! cargo run --example websocket_echo -- --addr 127.0.0.1:0 --max-message 65536
//! cargo run --example websocket_echo -- --header-timeout 5 --keep-alive 15
//! curl -i http://127.0.0.1:8080/
//! ```
//!
//! The HTTP side is HTTP/1.1 with persistent connections (`Connection: close` honoured; HTTP/1.0
//! closes unless it asks for `keep-alive`). Other paths get `404`, other methods than `GET` and
//! `HEAD` get `405`, a request that does not parse gets `400`, a head over 16 KiB or with over 64
//! fields gets `431`, and `/ws` without a proper upgrade gets `426 Upgrade Required`. A request
//! with a body is answered, then the connection is closed rather than the body read.
//!
//! Both protocols take the bytes as they come (`Codec = Raw`) and frame them with tokio-util
//! codecs of their own: the HTTP protocol with a [`Framing`], since it times a request head
//! from the head's first byte, which no decoded item would show it; the WebSocket protocol
//! through [`Echo`](frame::Echo), which hands a text frame over in parts. What is written by
//! hand here, and why:
//!
//! - the request-head decoder ([`HttpCodec`](http::HttpCodec)) is a thin `Decoder` around
//!   `httparse`, which does the parsing; the decoder adds the size limits and owns the result;
//! - the WebSocket frame codec ([`FrameCodec`](frame::FrameCodec)) parses headers with
//!   tungstenite's `FrameHeader::parse`, which reads a byte slice through a `Cursor` and says
//!   "not enough bytes yet" without consuming any, so it fits a `Decoder` as is, and writes them
//!   with `FrameHeader::format`. What the codec adds is what tungstenite does in its own read
//!   loop, tied to its synchronous `Read + Write` stream: the payload limit checked before a
//!   payload is buffered, the masking and control-frame rules, and unmasking; and, which
//!   tungstenite does not do, text frames handed over in parts as they arrive, so that invalid
//!   UTF-8 fails the connection before the rest of its frame comes;
//! - messages, fragments and the closing handshake ([`Echo`](frame::Echo)), since they are what
//!   this example is about.
//!
//! The parsing and the message rules have no I/O and live in modules of their own, [`http`] and
//! [`frame`], which the fuzz targets under `fuzz/` drive too; the protocols here put them to
//! work on a connection.
//!
//! # Bounds
//!
//! What one client can cost, whatever it does:
//!
//! - **Memory.** A request head is kept to 16 KiB and 64 fields, a WebSocket message to
//!   `--max-message` bytes. Responses and echoes are bounded by switchboard's default, with no
//!   code here: neither protocol overrides `pause_writing`, so while the transport's write
//!   buffer is over its high-water mark (64 KiB) it stops reading the socket, and the client
//!   feels TCP's back-pressure. (The WebSocket protocol used to opt
//!   in, only to stop reading on `PauseWriting` and read again on `ResumeWriting`: exactly
//!   what the default does, so that code is gone.) A client that pipelines `GET /` and never
//!   reads can still make one read (256 KiB, some 9,000 requests) ask for more than the
//!   transport's hard maximum of 4 MiB of responses: the transport then aborts that
//!   connection (`WriteError::BufferFull`). Either way, such a client costs the server a few
//!   MiB at most; `tests/example_websocket_echo.rs` holds one against the server as a process
//!   and checks its memory.
//! - **Time.** `--header-timeout SECS` (10 by default): a connection that sends nothing for
//!   that long after it opens is closed (the transport's first-byte timeout), and a request
//!   head must be complete within that long of the connection's start (the first request) or
//!   of its own first byte (a later one), or it is answered `408 Request Timeout` and the
//!   connection closed. That deadline is the `Http` protocol's own timer: the transport's
//!   timers count bytes, and a client that sends a head one byte a second (slowloris) moves
//!   bytes all the time. `--keep-alive SECS` (60 by default) is the connection's idle timeout
//!   (no byte read or written for that long): between requests, the transport closes an idle
//!   connection itself. A WebSocket is idle as long as its client is silent, which is normal,
//!   so its protocol overrides `timed_out` instead: it pings the client, and closes with 1001
//!   only if nothing, not even a pong, comes back within the next `--keep-alive` seconds
//!   (browsers answer pings by themselves). 0 turns either timeout off. A stalled write is
//!   aborted after 30 s (the transport's write stall timeout).
//!
//! It prints exactly one line to stdout, `listening on ADDR` with the address really bound,
//! once it accepts connections; logs go to stderr (`RUST_LOG=debug`). On SIGINT or SIGTERM it
//! stops accepting, sends every open WebSocket a close frame with 1001 (going away) and waits up
//! to [`CLOSE_HANDSHAKE_TIMEOUT`] for the clients' close frames (RFC 6455, 7.1.1), then closes
//! every connection gracefully, aborts the ones still open after `--grace` seconds (5 by
//! default) or at a second signal, and exits 0.

mod frame;
mod http;
#[cfg(test)]
mod tests;

use std::{
    collections::HashSet,
    io,
    process::ExitCode,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use actix::prelude::*;
use bytes::Bytes;
use clap::Parser;
use switchboard::{Framing, prelude::*};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::Notify,
};

use crate::{
    frame::Echo,
    http::{HttpCodec, HttpError, Request, Response, Route, route},
};

/// The default of `--max-message`: 16 MiB.
const DEFAULT_MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// The default of `--header-timeout`, in seconds: long enough for a request head over a slow
/// link (a head is a few hundred bytes), short enough that a silent or slowloris connection
/// holds its descriptor briefly.
const DEFAULT_HEADER_TIMEOUT: &str = "10";

/// The default of `--keep-alive`, in seconds: between Apache's 5 s and nginx's 75 s, under
/// what browsers keep an idle connection for (Chrome 300 s, Firefox 115 s), so the browser
/// usually closes first.
const DEFAULT_KEEP_ALIVE: &str = "60";

/// How long a WebSocket that sent the first close frame waits for the client's before it closes
/// the TCP connection anyway: RFC 6455 (7.1.1) has the server close it once both close frames
/// are exchanged, and a client may never send its own.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Parser)]
#[command(about = "A WebSocket echo server behind a small HTTP/1.1 server")]
struct Args {
    /// The TCP address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// The largest WebSocket message accepted, in bytes, fragments together; a larger one closes
    /// the connection with 1009.
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE)]
    max_message: usize,
    /// On SIGINT or SIGTERM, how long the connections may take to close gracefully before they
    /// are aborted (seconds, fractions allowed).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = seconds)]
    grace: Duration,
    /// How long a connection may take to send its first byte, and a request head to arrive
    /// whole (seconds, fractions allowed; 0: forever). An incomplete head is answered 408.
    #[arg(long, value_name = "SECS", default_value = DEFAULT_HEADER_TIMEOUT, value_parser = seconds)]
    header_timeout: Duration,
    /// How long a connection may stay idle, no byte either way, before it is closed; a
    /// WebSocket is pinged first, and closed if it does not answer within as long again
    /// (seconds, fractions allowed; 0: forever).
    #[arg(long, value_name = "SECS", default_value = DEFAULT_KEEP_ALIVE, value_parser = seconds)]
    keep_alive: Duration,
}

/// A number of seconds on the command line (`5`, `0.5`).
fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.parse().map_err(|err| format!("{err}"))?;
    Duration::try_from_secs_f64(secs).map_err(|err| format!("{err}"))
}

/// A timeout flag's value: `0` is none.
fn timeout(secs: Duration) -> Option<Duration> {
    (!secs.is_zero()).then_some(secs)
}

/// What the HTTP protocol does after a response.
enum Next {
    /// Reads the next request on the same connection.
    KeepAlive,
    /// Closes the connection.
    Close,
    /// Hands the connection to the WebSocket protocol.
    Upgrade,
}

// ANCHOR: http_protocol
/// The protocol every connection starts with: HTTP/1.1 requests, answered in order. It frames
/// the bytes itself, with a [`Framing`] of its own, rather than with `Protocol::Codec`: its
/// deadline for a request head starts with the head's first byte, which no item announces.
struct Http {
    requests: Framing<HttpCodec>,
    max_message: usize,
    /// Where the WebSocket protocol this connection may switch to joins.
    websockets: WebSockets,
    /// Set once the connection is closing or switched: nothing more is read.
    done: bool,
    /// `--header-timeout`: how long a request head may take to arrive whole.
    header_timeout: Option<Duration>,
    /// When the connection began: the first head must be complete within the header timeout
    /// of it.
    started: Instant,
    /// Whether a request came whole on this connection: a later head's time counts from its
    /// own first byte.
    answered: bool,
    /// The timer of the head under way, while one is.
    head_deadline: Option<SpawnHandle>,
}

impl Http {
    fn new(max_message: usize, websockets: WebSockets) -> Self {
        Http {
            requests: Framing::new(HttpCodec),
            max_message,
            websockets,
            done: false,
            header_timeout: None,
            started: Instant::now(),
            answered: false,
            head_deadline: None,
        }
    }

    /// Gives each request head `timeout` to arrive whole (none by default).
    fn header_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// After the bytes of one chunk are read: keeps a deadline on the head under way, if one
    /// is. The first head's deadline is the header timeout after the connection began; a later
    /// one's, the header timeout after the chunk that began it (`begun`: a request came whole
    /// in this chunk, or nothing was buffered before it). No head under way, no deadline:
    /// between requests, the keep-alive idle timeout of the transport decides.
    fn watch_head(&mut self, begun: bool, cx: &mut Ctx<'_, Self>) {
        let Some(timeout) = self.header_timeout else {
            return;
        };
        let under_way = self.requests.buffered() > 0;
        if under_way && !begun && self.head_deadline.is_some() {
            return; // the same head, still coming: its deadline holds
        }
        if let Some(deadline) = self.head_deadline.take() {
            cx.cancel(deadline);
        }
        if under_way {
            let now = Instant::now();
            let since = if self.answered { now } else { self.started };
            let left = (since + timeout).saturating_duration_since(now);
            self.head_deadline = Some(cx.run_later(left, Self::head_timed_out));
        }
    }

    /// The head under way did not come whole in time: `408`, and the connection closes.
    fn head_timed_out(&mut self, cx: &mut Ctx<'_, Self>) {
        self.head_deadline = None;
        if self.done {
            return;
        }
        tracing::debug!(
            buffered = self.requests.buffered(),
            "request head incomplete: 408"
        );
        let response = Response::text(408, "Request Timeout").header("Connection", "close");
        let _ = self.requests.write(cx.transport(), response);
        self.finish(cx);
    }

    /// Answers `request`, and says what comes next.
    fn respond(&mut self, transport: &TransportHandle, request: &Request) -> Next {
        let mut response = match route(request) {
            Route::Upgrade { accept } => {
                let response = Response::new(101, "Switching Protocols")
                    .header("Upgrade", "websocket")
                    .header("Connection", "Upgrade")
                    .header("Sec-WebSocket-Accept", accept);
                return match self.requests.write(transport, response) {
                    Ok(()) => Next::Upgrade,
                    Err(err) => {
                        tracing::warn!(%err, "cannot encode the 101");
                        Next::Close
                    }
                };
            }
            Route::Answer(response) => response,
        };
        // A body we do not read would be taken for the next request, and a client that sent a
        // bad request may be out of step: close after answering.
        let next = match request.has_body() {
            Ok(false) if !request.wants_close() && response.status != 400 => Next::KeepAlive,
            Ok(_) => Next::Close,
            Err(_) => {
                response = Response::text(400, "Bad Request");
                Next::Close
            }
        };
        let persistence = match (&next, request.minor_version) {
            (Next::Close, _) => Some("close"),
            (_, 0) => Some("keep-alive"),
            _ => None,
        };
        // A 426 already says `Connection: Upgrade`; the persistence token joins it.
        if let Some(token) = persistence {
            match response
                .headers
                .iter_mut()
                .find(|(name, _)| *name == "Connection")
            {
                Some((_, value)) => *value = format!("{value}, {token}"),
                None => response.headers.push(("Connection", token.to_owned())),
            }
        }
        response.head_only = request.method == "HEAD";
        if let Err(err) = self.requests.write(transport, response) {
            tracing::warn!(%err, "cannot encode a response");
            return Next::Close;
        }
        next
    }

    /// Closes the connection and reads nothing more.
    fn finish(&mut self, cx: &mut Ctx<'_, Self>) {
        self.done = true;
        cx.close();
    }
}

impl Protocol for Http {
    /// The bytes as they come: [`Http`] frames them itself.
    type Codec = Raw;

    fn data_received(&mut self, data: Bytes, cx: &mut Ctx<'_, Self>) {
        if self.done {
            return;
        }
        // A head begins with this chunk if nothing of one was waiting.
        let mut begun = self.requests.buffered() == 0;
        self.requests.feed(&data);
        // Pipelined requests are answered in order, each response behind the last.
        loop {
            let request = match self.requests.next_frame() {
                Ok(Some(request)) => {
                    // What is left, if anything, is the start of the next head.
                    self.answered = true;
                    begun = true;
                    request
                }
                Ok(None) => {
                    self.watch_head(begun, cx);
                    return;
                }
                Err(err) => {
                    tracing::debug!(%err, "bad request: closing");
                    let response = match err {
                        HttpError::HeadTooLarge => {
                            Response::text(431, "Request Header Fields Too Large")
                        }
                        HttpError::Malformed(_) | HttpError::Io(_) => {
                            Response::text(400, "Bad Request")
                        }
                    };
                    let response = response.header("Connection", "close");
                    let _ = self.requests.write(cx.transport(), response);
                    self.finish(cx);
                    return;
                }
            };
            tracing::debug!(method = %request.method, target = %request.target, "request");
            match self.respond(cx.transport(), &request) {
                Next::KeepAlive => {}
                Next::Close => {
                    self.finish(cx);
                    return;
                }
                Next::Upgrade => {
                    // ANCHOR: switch
                    // The bytes behind the request head are the client's first frames: they go
                    // with the switch, and reach the WebSocket protocol before anything the
                    // transport reads later. The `101` is already in the transport's queue.
                    let websocket = WebSocket::new(self.max_message, self.websockets.clone());
                    let websocket = cx.switch_with(websocket, self.requests.take_leftover());
                    // Known to shutdown from now on, before it is connected.
                    self.websockets.join(&websocket);
                    // ANCHOR_END: switch
                    self.done = true;
                    return;
                }
            }
        }
    }
}
// ANCHOR_END: http_protocol

// ANCHOR: websocket_protocol
/// The protocol a connection is switched to after the `101`: echoes every message. What to
/// answer is [`Echo`]'s to say; this protocol moves the bytes. A client that sends faster than
/// it reads fills the write buffer with echoes: the default `pause_writing` then stops reading
/// until the client has caught up.
struct WebSocket {
    echo: Echo,
    /// Joined by the HTTP protocol as it switches, left when the connection is gone.
    websockets: WebSockets,
    /// A ping went out because the connection was idle, and nothing came back since.
    pinged: bool,
}

impl WebSocket {
    fn new(max_message: usize, websockets: WebSockets) -> Self {
        WebSocket {
            echo: Echo::new(max_message),
            websockets,
            pinged: false,
        }
    }
}

impl Protocol for WebSocket {
    /// The bytes as they come: [`Echo`] decodes the frames, and reads a text frame's UTF-8 as
    /// its parts arrive.
    type Codec = Raw;

    /// Comes first after the switch, before the bytes the HTTP protocol handed over.
    fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
        // Shutdown may have begun between the switch and now.
        if self.websockets.is_going_away() {
            self.go_away(cx);
        }
    }

    fn data_received(&mut self, data: Bytes, cx: &mut Ctx<'_, Self>) {
        // Anything from the client, a pong or not, says it is still there.
        self.pinged = false;
        if self.echo.is_closing() {
            return;
        }
        // Everything this chunk asks for goes out in one write.
        let replies = self.echo.receive(&data);
        let replies = self.echo.encode(replies);
        if !replies.is_empty() {
            cx.write(replies);
        }
        if self.echo.is_closing() {
            // Flushes the close frame first.
            cx.close();
        }
    }

    /// Nothing moved either way for `--keep-alive`: the first time, the client is pinged; if
    /// nothing has come back by the next time, it is given up on with a close frame (1001), and
    /// the connection closes. (Should the ping not even leave, the transport ends the
    /// connection at the next timeout itself.)
    fn timed_out(&mut self, timeout: Timeout, cx: &mut Ctx<'_, Self>) {
        if self.pinged {
            tracing::debug!(%timeout, "no answer to the ping: closing");
            if let Some(close) = self.echo.give_up() {
                cx.write(self.echo.encode(vec![close]));
            }
            cx.close();
        } else if let Some(ping) = self.echo.ping() {
            self.pinged = true;
            cx.write(self.echo.encode(vec![ping]));
        }
    }

    fn connection_lost(&mut self, _: Option<io::Error>, cx: &mut Ctx<'_, Self>) {
        self.websockets.leave(&cx.address());
    }
}
// ANCHOR_END: websocket_protocol

// ANCHOR: go_away
/// Tells a WebSocket protocol the server is shutting down: it sends the client a close frame
/// with 1001 (going away), ignores the messages that still come, and closes the connection once
/// the client's close frame arrives, or after [`CLOSE_HANDSHAKE_TIMEOUT`].
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct GoAway;

impl Handles<GoAway> for WebSocket {
    type Result = ();

    fn handle(&mut self, _: GoAway, cx: &mut Ctx<'_, Self>) {
        self.go_away(cx);
    }
}

impl WebSocket {
    /// Sends the close frame, once, and closes the connection if the client does not answer
    /// it in time. (A protocol has its transport from the start: told before its
    /// `connection_made`, it writes the close frame behind the `101` all the same.)
    fn go_away(&mut self, cx: &mut Ctx<'_, Self>) {
        let Some(close) = self.echo.go_away() else {
            return;
        };
        cx.write(self.echo.encode(vec![close]));
        cx.run_later(CLOSE_HANDSHAKE_TIMEOUT, |websocket, cx| {
            // Closing already if the client's close frame came.
            if !websocket.echo.is_closing() {
                tracing::debug!("no close frame from the client in time: closing");
                cx.close();
            }
        });
    }
}
// ANCHOR_END: go_away

/// The live WebSocket protocols, for shutdown to tell each one to go away. A WebSocket protocol
/// joins as the HTTP protocol switches the connection to it, and leaves when it stops, on
/// whichever worker thread serves its connection.
#[derive(Debug, Clone, Default)]
struct WebSockets {
    shared: Arc<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    live: Mutex<Live>,
    /// Notified when the last live WebSocket leaves.
    emptied: Notify,
}

#[derive(Debug, Default)]
struct Live {
    websockets: HashSet<Addr<ProtocolActor<WebSocket>>>,
    /// Set by [`WebSockets::go_away`]: a WebSocket connected from then on goes away at once.
    going_away: bool,
}

impl WebSockets {
    fn join(&self, websocket: &Addr<ProtocolActor<WebSocket>>) {
        self.lock().websockets.insert(websocket.clone());
    }

    fn leave(&self, websocket: &Addr<ProtocolActor<WebSocket>>) {
        let mut live = self.lock();
        if live.websockets.remove(websocket) && live.websockets.is_empty() {
            self.shared.emptied.notify_waiters();
        }
    }

    /// Whether shutdown has begun.
    fn is_going_away(&self) -> bool {
        self.lock().going_away
    }

    /// Tells every live WebSocket to go away, and every one connected from now on; resolves
    /// once they have all stopped, or after [`CLOSE_HANDSHAKE_TIMEOUT`], by which time each one
    /// has closed its connection or is about to.
    async fn go_away(&self) {
        let emptied = self.shared.emptied.notified();
        let mut emptied = std::pin::pin!(emptied);
        // From here on, the last one leaving wakes this up.
        emptied.as_mut().enable();
        {
            let mut live = self.lock();
            live.going_away = true;
            // One whose connection was lost before the switch was taken never left.
            live.websockets.retain(Addr::connected);
            if live.websockets.is_empty() {
                return;
            }
            tracing::info!(count = live.websockets.len(), "WebSockets going away");
            for websocket in &live.websockets {
                websocket.do_send(GoAway);
            }
        }
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, emptied).await;
    }

    fn lock(&self) -> MutexGuard<'_, Live> {
        self.shared
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[actix::main]
async fn main() -> io::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();

    // Both signals are caught from before the `listening on` line: a client that sends one as
    // soon as it reads the line finds the handlers in place.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;

    // ANCHOR: serve
    // A connection that sends nothing is closed after the header timeout, an idle one after the
    // keep-alive timeout (a WebSocket is asked first); the `Http` protocol times heads itself.
    let stream = StreamConfig::default()
        .first_byte_timeout(timeout(args.header_timeout))?
        .idle_timeout(timeout(args.keep_alive))?;
    let options = ServerOptions::default().stream(stream);
    let (max_message, header_timeout) = (args.max_message, timeout(args.header_timeout));
    let websockets = WebSockets::default();
    let joining = websockets.clone();
    let server = tcp::serve_with(&args.addr, options, move || {
        Http::new(max_message, joining.clone()).header_timeout(header_timeout)
    })
    .await?;
    println!("listening on {}", server.addresses()[0]);
    // ANCHOR_END: serve

    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!(grace = ?args.grace, "shutting down: no new connections");
    // No new connections; then the WebSockets, each of which says goodbye (1001) and waits
    // briefly for its client's answer; then the rest of the connections, closed gracefully
    // within the grace period. A second signal aborts whatever is left at once.
    let report = tokio::select! {
        report = async {
            server.close().await;
            websockets.go_away().await;
            server.shutdown(args.grace).await
        } => report,
        _ = interrupt.recv() => server.shutdown(Duration::ZERO).await,
        _ = terminate.recv() => server.shutdown(Duration::ZERO).await,
    };
    tracing::info!(
        connections = report.connections,
        aborted = report.aborted,
        "server closed"
    );
    Ok(ExitCode::SUCCESS)
}
