//! A guided tour of switchboard: one program, no second terminal.
//!
//! It starts servers on loopback, connects to them and walks through what the framework does,
//! printing a short narrated transcript:
//!
//! 1. a TCP server (`tcp::serve`) and a client (`tcp::connect`) exchange a line;
//! 2. flow control: a client writes to a server that is not reading until its transport says
//!    `PauseWriting`; the server reads again, and the client hears `ResumeWriting`;
//! 3. a line protocol hands its live connection to a length-prefixed protocol with
//!    `Ctx::switch_to`, together with the frames the client pipelined behind the switch;
//! 4. extra information: `peername`, `sockname`, `socket`, and a key the transport does not know;
//! 5. closing: `Close`, `ConnectionLost(None)` on both sides, the server's `close` and
//!    `wait_closed`;
//! 6. the same protocols over a Unix socket;
//! 7. TLS: a server with a certificate made at start (`SelfSigned`), a client that trusts it,
//!    and the TLS keys of `get_extra_info` (`cipher`, `peercert`, `ssl_object`);
//! 8. STARTTLS: a plaintext connection upgraded in place with `Ctx::start_tls`, on both sides,
//!    then a line over TLS; then the same client protocol against a fake server that sends
//!    plaintext behind its go-ahead: the client's upgrade is refused with an `Injection` error,
//!    and the connection ends with it;
//! 9. a subprocess: `sh -c` with its stdin, stdout and stderr piped, its output, its exit status,
//!    and a signal sent after the exit;
//! 10. datagrams: a UDP echo endpoint (`udp::bind`) and a connected one (`udp::connect`); three
//!     datagrams sent back to back come back as three events, the empty one included; a `SendTo`
//!     for another address is refused; the ICMP error of a closed port reaches `ErrorReceived`,
//!     and the endpoint lives on;
//! 11. HTTP to WebSocket: an HTTP protocol answers an upgrade request with `101 Switching
//!     Protocols` and hands the connection to a WebSocket echo protocol with `Ctx::switch_to`,
//!     together with the frame the client sent in the same write as its request.
//!
//! ```text
//! cargo run --example tour
//! RUST_LOG=debug cargo run --example tour     # with the framework's logs on stderr
//! ```
//!
//! The transcript goes to stdout and reads the same on every run, except what is in `[brackets]`
//! at the end of a line (ports, descriptors, byte counts). The tour exits 0 once every step did
//! what it says, and 1, with the reason on stderr, as soon as one did not; a step stuck for
//! 15 seconds fails rather than hang.
//!
//! The servers' protocols are [`Protocol`]s: asyncio's callbacks, each overriding the ones it
//! uses. They run on worker threads, so instead of printing, each reports what it sees to `main`
//! over a channel, and `main` tells the story in a stable order; a real protocol would do its
//! work in those callbacks instead. The clients are [`Connection`]s, which `main` reads and
//! writes as a script would, except where the client is a protocol too (steps 2 and 8).

use std::{
    fmt, io,
    net::SocketAddr,
    os::fd::RawFd,
    path::Path,
    process::{ExitCode, ExitStatus},
    time::Duration,
};

use actix::prelude::*;
use bytes::BufMut;
use switchboard::{
    ProcessGone, TlsErrorKind, UnixAddress,
    prelude::*,
    subprocess::{self, STDERR, STDIN, STDOUT},
    tls::{self, SelfSigned, TlsAcceptor, TlsConnector},
};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_util::codec::{Decoder, Encoder};

/// Where every server of the tour listens: loopback, on a port the kernel picks.
const LOOPBACK: &str = "127.0.0.1:0";

/// How long one step may take. Each needs well under a second; reaching this means the step
/// is stuck waiting for an event that never came.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);

#[actix::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    match tour().await {
        Ok(()) => {
            println!("\ntour complete");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("tour: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The steps, in order. A new step is one more `step(..)` line and the function it runs.
async fn tour() -> io::Result<()> {
    println!("switchboard tour: servers and clients on loopback, all in this process");
    let mut connection = step(1, "A TCP server and a client", first_connection()).await?;
    step(2, "Flow control", flow_control()).await?;
    let switch = switch_protocols(&mut connection);
    step(3, "Switching protocols mid-connection", switch).await?;
    step(4, "Extra information", extra_info(&connection)).await?;
    step(5, "Closing", close(connection)).await?;
    step(6, "The same protocols over a Unix socket", over_unix()).await?;
    step(7, "TLS", over_tls()).await?;
    step(8, "STARTTLS: upgrading a live connection", start_tls()).await?;
    step(9, "A subprocess", run_subprocess()).await?;
    step(10, "Datagrams", datagrams()).await?;
    step(11, "HTTP to WebSocket: a switch on upgrade", websocket()).await?;
    Ok(())
}

/// Prints the heading of step `number`, then runs it within [`STEP_TIMEOUT`].
async fn step<T>(
    number: u32,
    title: &str,
    work: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    println!("\n{number}. {title}");
    match tokio::time::timeout(STEP_TIMEOUT, work).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(err)) => Err(failure(format!("step {number} ({title}) failed: {err}"))),
        Err(_) => Err(failure(format!(
            "step {number} ({title}) is stuck: still running after {STEP_TIMEOUT:?}"
        ))),
    }
}

/// Where a protocol tells `main` what it sees.
struct Report<E>(UnboundedSender<E>);

impl<E> Report<E> {
    fn tell(&self, event: E) {
        // `main` may have given up already (a step failed); then nobody listens, and that is fine.
        let _ = self.0.send(event);
    }
}

impl<E> Clone for Report<E> {
    fn clone(&self) -> Self {
        Report(self.0.clone())
    }
}

/// A channel for reports: the protocols' end, and `main`'s.
fn reports<E>() -> (Report<E>, UnboundedReceiver<E>) {
    let (report, events) = unbounded_channel();
    (Report(report), events)
}

// ---------------------------------------------------------------------------------------------
// The server's protocols: lines first, length-prefixed frames after a switch.
// ---------------------------------------------------------------------------------------------

/// What the server's protocols tell `main`.
#[derive(Debug)]
enum ServerEvent {
    /// A protocol's `connection_made` ran (the line protocol's when the client connects, the
    /// length-prefixed one's when it is switched in).
    Connected(TransportHandle),
    /// The line protocol read a line and answered it.
    Line(String),
    /// The line protocol read `SWITCH` and switched to the length-prefixed protocol.
    Switched,
    /// The length-prefixed protocol decoded a frame and echoed it.
    Frame(Bytes),
    /// The STARTTLS gate read `STARTTLS`, answered, started the upgrade and switched to the line
    /// protocol.
    Upgrading,
    /// The HTTP protocol answered an upgrade request with `101` and switched to the WebSocket
    /// protocol.
    WebSocketUpgrade,
    /// The WebSocket protocol echoed a message.
    WebSocketMessage(Bytes),
    /// The protocol attached at the end lost its connection.
    Lost(Option<io::Error>),
}

/// The line that makes the line protocol hand the connection over.
const SWITCH_COMMAND: &str = "SWITCH";

/// The longest line the line protocols wait for; a peer that sends more without a newline is
/// cut off instead of growing the buffer forever.
const MAX_LINE: usize = 8 * 1024;

// ANCHOR: line_protocol
/// The server's first protocol: newline-terminated text. It answers every line in upper case,
/// and on `SWITCH` hands the connection to a [`LengthProtocol`].
struct LineProtocol {
    report: Report<ServerEvent>,
}

impl Protocol for LineProtocol {
    /// Lines out of the bytes received: what is not a whole line yet waits in the codec.
    type Codec = LinesCodec;

    fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
        cx.set_codec(LinesCodec::new_with_max_length(MAX_LINE));
        self.report
            .tell(ServerEvent::Connected(cx.transport().clone()));
    }

    fn data_received(&mut self, line: String, cx: &mut Ctx<'_, Self>) {
        if line == SWITCH_COMMAND {
            self.report.tell(ServerEvent::Switched);
            // ANCHOR: switch
            // Whatever follows `SWITCH\n` is not ours: a client that does not wait for an answer
            // has already sent its first frames behind the command. `switch_to` hands them to
            // the new protocol undecoded, before any byte the transport reads later. This
            // protocol receives nothing more, and its actor stops once the transport has taken
            // the new one; the connection goes on.
            cx.switch_to(LengthProtocol {
                report: self.report.clone(),
            });
            // ANCHOR_END: switch
        } else {
            cx.send(line.to_uppercase());
            self.report.tell(ServerEvent::Line(line));
        }
    }

    // A line too long or not UTF-8 closes the connection (`decode_error`'s default), and so
    // does the peer's EOF (`eof_received`'s).

    fn connection_lost(&mut self, err: Option<io::Error>, _: &mut Ctx<'_, Self>) {
        self.report.tell(ServerEvent::Lost(err));
    }
}
// ANCHOR_END: line_protocol

// ANCHOR: length_protocol
/// The server's second protocol: frames of a 4-byte big-endian length and that many bytes. It
/// echoes every frame back. Newlines mean nothing to it, and neither does `SWITCH`.
struct LengthProtocol {
    report: Report<ServerEvent>,
}

impl Protocol for LengthProtocol {
    /// tokio-util's codec: a 4-byte big-endian length, then that many bytes, both ways.
    type Codec = LengthDelimitedCodec;

    /// A switched-in protocol starts like any other, with `connection_made`; the bytes the line
    /// protocol handed over come next.
    fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
        // A longer length is a protocol error, not a reason to buffer.
        let codec = LengthDelimitedCodec::builder()
            .max_frame_length(MAX_FRAME)
            .new_codec();
        cx.set_codec(codec);
        self.report
            .tell(ServerEvent::Connected(cx.transport().clone()));
    }

    fn data_received(&mut self, frame: BytesMut, cx: &mut Ctx<'_, Self>) {
        let frame = frame.freeze();
        self.report.tell(ServerEvent::Frame(frame.clone()));
        cx.send(frame);
    }

    fn connection_lost(&mut self, err: Option<io::Error>, _: &mut Ctx<'_, Self>) {
        self.report.tell(ServerEvent::Lost(err));
    }
}
// ANCHOR_END: length_protocol

/// The longest frame the length-prefixed protocol accepts.
const MAX_FRAME: usize = 64 * 1024;

/// `payloads` as length-prefixed frames, back to back.
fn frames(payloads: &[&[u8]]) -> Bytes {
    let mut codec = LengthDelimitedCodec::new();
    let mut out = BytesMut::new();
    for payload in payloads {
        codec
            .encode(Bytes::copy_from_slice(payload), &mut out)
            .expect("frames far shorter than the codec's limit");
    }
    out.freeze()
}

/// The line that makes the STARTTLS gate upgrade the connection, and its answer.
const STARTTLS_COMMAND: &str = "STARTTLS";
const STARTTLS_READY: &str = "READY";

// ANCHOR: starttls_server
/// The server's protocol in front of a STARTTLS upgrade, as in SMTP or IMAP: it waits for the
/// line `STARTTLS`, answers `READY` in plaintext, upgrades the connection in place, and hands it
/// to a [`LineProtocol`], which then speaks over TLS without knowing it.
struct StartTlsGate {
    acceptor: TlsAcceptor,
    report: Report<ServerEvent>,
}

impl Protocol for StartTlsGate {
    type Codec = LinesCodec;

    fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
        cx.set_codec(LinesCodec::new_with_max_length(MAX_LINE));
        self.report
            .tell(ServerEvent::Connected(cx.transport().clone()));
    }

    fn data_received(&mut self, line: String, cx: &mut Ctx<'_, Self>) {
        if line != STARTTLS_COMMAND {
            cx.send("STARTTLS first");
            return cx.close();
        }
        let start = match self.acceptor.start_tls() {
            Ok(start) => start,
            Err(err) => {
                tracing::warn!(%err, "cannot start TLS: closing");
                return cx.close();
            }
        };
        self.report.tell(ServerEvent::Upgrading);
        // In the transport's FIFO: the answer goes out in plaintext, then the handshake runs.
        cx.send(STARTTLS_READY);
        // Nothing the client sent in the clear behind `STARTTLS` may count as part of the
        // protected session (RFC 3207, 4.2). `start_tls` hands the bytes the codec has not
        // decoded over with the upgrade: if there are any, the client pipelined behind its
        // command (or someone on the path injected them), so the transport refuses the upgrade
        // and ends the connection with a `TlsErrorKind::Injection` error rather than drop them
        // silently. Plaintext that arrives later was never delivered: the transport discards it.
        // A refused upgrade or a failed handshake ends the connection with
        // `ConnectionLost(Some(err))`, heard by the line protocol: nothing to do with the
        // outcome here.
        cx.start_tls(start, |_, _, _| {});
        cx.switch_to(LineProtocol {
            report: self.report.clone(),
        });
    }

    fn connection_lost(&mut self, err: Option<io::Error>, _: &mut Ctx<'_, Self>) {
        self.report.tell(ServerEvent::Lost(err));
    }
}
// ANCHOR_END: starttls_server

// ---------------------------------------------------------------------------------------------
// The client side: a `Connection`, with `main` playing the client's part.
// ---------------------------------------------------------------------------------------------

/// The client end of a connection, as `main` uses it: a [`Connection`], read with the codec of
/// what the server says at that point (lines, then frames; a response head, then WebSocket
/// frames). A `Connection` keeps the codec it was made with, so this one takes the bytes as
/// they come and decodes them here.
struct Client {
    connection: Connection,
    /// Bytes received and not decoded yet.
    received: BytesMut,
}

impl Client {
    fn new(connection: Connection) -> Client {
        Client {
            connection,
            received: BytesMut::new(),
        }
    }

    fn transport(&self) -> &TransportHandle {
        self.connection.transport()
    }

    /// The next item `codec` decodes out of what the server sent.
    async fn read<D>(&mut self, mut codec: D) -> io::Result<D::Item>
    where
        D: Decoder<Error: Into<Box<dyn std::error::Error + Send + Sync>>>,
    {
        loop {
            let decoded = codec.decode(&mut self.received);
            if let Some(item) =
                decoded.map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?
            {
                return Ok(item);
            }
            match self.connection.next().await {
                Some(data) => self.received.extend_from_slice(&data?),
                None => return Err(failure("the server ended the connection")),
            }
        }
    }

    async fn read_line(&mut self) -> io::Result<String> {
        self.read(LinesCodec::new()).await
    }
}

/// A line-protocol server, one client connected to it, and the server's end of that connection:
/// what steps 1, 3, 4 and 5 share, and steps 6 and 7 make again over a Unix socket and over TLS
/// (step 11 too, with an HTTP protocol first).
struct LineConnection {
    server: ServerHandle,
    server_events: UnboundedReceiver<ServerEvent>,
    /// The server's end of the connection: the same transport before and after the switch.
    server_side: TransportHandle,
    client: Client,
}

impl LineConnection {
    async fn over_tcp() -> io::Result<LineConnection> {
        let (report, server_events) = reports();
        // The factory runs once per connection, on the worker thread that will serve it.
        let server = tcp::serve(LOOPBACK, move || LineProtocol {
            report: report.clone(),
        })
        .await?;
        let addr = inet_address(&server);
        println!("   server: tcp::serve with the line protocol [listening on {addr}]");
        let (_, client) = tcp::connect(addr, Connection::new).await?;
        println!("   client: tcp::connect");
        LineConnection::accepted(server, server_events, client).await
    }

    async fn over_unix(path: &Path) -> io::Result<LineConnection> {
        let (report, server_events) = reports();
        let server = unix::serve(path, move || LineProtocol {
            report: report.clone(),
        })
        .await?;
        println!(
            "   server: unix::serve with the line protocol [{}]",
            path.display()
        );
        let (_, client) = unix::connect(path, Connection::new).await?;
        println!("   client: unix::connect");
        LineConnection::accepted(server, server_events, client).await
    }

    async fn accepted(
        server: ServerHandle,
        server_events: UnboundedReceiver<ServerEvent>,
        client: Connection,
    ) -> io::Result<LineConnection> {
        LineConnection::accepted_by(server, server_events, client, "the line protocol").await
    }

    /// Waits for `protocol`, the server's first protocol, to be told `connection_made`.
    async fn accepted_by(
        server: ServerHandle,
        mut server_events: UnboundedReceiver<ServerEvent>,
        client: Connection,
        protocol: &str,
    ) -> io::Result<LineConnection> {
        let server_side = match next(&mut server_events, "the server").await? {
            ServerEvent::Connected(transport) => transport,
            other => return Err(unexpected("the server's ConnectionMade", other)),
        };
        println!("   server: {protocol} received ConnectionMade");
        Ok(LineConnection {
            server,
            server_events,
            server_side,
            client: Client::new(client),
        })
    }

    /// Sends `text` as a line; the server's line protocol answers it in upper case.
    async fn exchange_line(&mut self, text: &str) -> io::Result<()> {
        self.client.connection.write(format!("{text}\n")).await?;
        println!("   client -> server: {text:?}");
        match next(&mut self.server_events, "the server").await? {
            ServerEvent::Line(line) if line == text => {
                println!("   server: the line protocol read {line:?}");
            }
            other => return Err(unexpected(&format!("the line {text:?}"), other)),
        }
        let answer = self.client.read_line().await?;
        if answer != text.to_uppercase() {
            return Err(failure(format!(
                "the server answered {answer:?} to {text:?}"
            )));
        }
        println!("   server -> client: {answer:?}");
        Ok(())
    }

    /// Waits for the end of the connection on both ends (someone closed it), then closes the
    /// server and waits until it is closed.
    async fn finish(mut self) -> io::Result<()> {
        // `closed` resolves at the client's `ConnectionLost`, with its error if any.
        let client_err = self.client.connection.closed().await.err();
        println!("   client: {}", describe_lost(&client_err));
        let server_err = match next(&mut self.server_events, "the server").await? {
            ServerEvent::Lost(err) => err,
            other => return Err(unexpected("the server's ConnectionLost", other)),
        };
        println!("   server: {}", describe_lost(&server_err));
        if let Some(err) = client_err.or(server_err) {
            return Err(failure(format!(
                "a graceful close ended in an error: {err}"
            )));
        }

        // `close` stops accepting; `wait_closed` resolves once every connection is gone too.
        self.server.close().await;
        self.server.wait_closed().await;
        println!("   server: close() and wait_closed() returned");
        Ok(())
    }
}

/// Step 1: a line-protocol server over TCP, a client, and one line each way.
async fn first_connection() -> io::Result<LineConnection> {
    let mut connection = LineConnection::over_tcp().await?;
    connection.exchange_line("hello, switchboard").await?;
    Ok(connection)
}

// ---------------------------------------------------------------------------------------------
// Step 2: flow control.
// ---------------------------------------------------------------------------------------------

/// The write-buffer limits of the flow-control step, far below the 64 KiB default.
const HIGH_WATER_MARK: usize = 16 * 1024;
const LOW_WATER_MARK: usize = 4 * 1024;

/// What the producer writes at a time.
const CHUNK_SIZE: usize = 16 * 1024;

/// What the producer sends in all: far more than the kernel's socket buffers on both ends hold
/// (a few MiB on loopback), so a peer that does not read makes the write buffer grow.
const TO_SEND: usize = 64 * MIB;

const MIB: usize = 1024 * 1024;

/// What the flow-control step's server protocol tells `main`.
#[derive(Debug)]
enum SinkEvent {
    Connected {
        transport: TransportHandle,
        sink: Addr<ProtocolActor<Sink>>,
    },
    Lost {
        received: usize,
        err: Option<io::Error>,
    },
}

/// The flow-control step's server protocol: counts what it receives, but pauses reading as soon
/// as it connects, so the client's bytes pile up until `main` tells it to [`ReadAgain`].
struct Sink {
    received: usize,
    report: Report<SinkEvent>,
}

impl Protocol for Sink {
    type Codec = Raw;

    fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
        // The transport reads nothing before this returns, so not one byte gets in.
        cx.pause_reading();
        self.report.tell(SinkEvent::Connected {
            transport: cx.transport().clone(),
            sink: cx.address(),
        });
    }

    fn data_received(&mut self, data: Bytes, _: &mut Ctx<'_, Self>) {
        self.received += data.len();
    }

    fn connection_lost(&mut self, err: Option<io::Error>, _: &mut Ctx<'_, Self>) {
        let received = self.received;
        self.report.tell(SinkEvent::Lost { received, err });
    }
}

/// `main`'s word to the [`Sink`]: read again.
#[derive(Message)]
#[rtype(result = "()")]
struct ReadAgain;

impl Handles<ReadAgain> for Sink {
    type Result = ();

    fn handle(&mut self, _: ReadAgain, cx: &mut Ctx<'_, Self>) {
        cx.resume_reading();
    }
}

/// What the flow-control step's client protocol tells `main`.
#[derive(Debug)]
enum ProducerEvent {
    Paused { sent: usize },
    Resumed,
    Done { sent: usize },
    Lost(Option<io::Error>),
}

// ANCHOR: flow_control
/// The flow-control step's client protocol: sends [`TO_SEND`] bytes as fast as the transport
/// takes them and no faster. Each chunk goes out once the write buffer has room
/// (`write_ready`), so the producer waits from `PauseWriting` to `ResumeWriting`, which it is
/// told too.
struct Producer {
    chunk: Bytes,
    sent: usize,
    report: Report<ProducerEvent>,
}

impl Protocol for Producer {
    type Codec = Raw;

    fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
        // A transport handles commands in the order they are sent, so these limits apply from
        // the first write on. (They are valid, low <= high, so the reply can only be `Ok`.)
        cx.transport().do_send(SetWriteBufferLimits {
            high: Some(HIGH_WATER_MARK),
            low: Some(LOW_WATER_MARK),
        });
        self.produce(cx);
    }

    /// The write buffer went over the high-water mark: the peer is slower than we are. (The
    /// default would stop reading until `resume_writing`; the producer reads nothing anyway.)
    fn pause_writing(&mut self, _: &mut Ctx<'_, Self>) {
        let sent = self.sent;
        self.report.tell(ProducerEvent::Paused { sent });
    }

    /// The write buffer drained to the low-water mark: the chunk waiting goes out.
    fn resume_writing(&mut self, _: &mut Ctx<'_, Self>) {
        self.report.tell(ProducerEvent::Resumed);
    }

    fn connection_lost(&mut self, err: Option<io::Error>, _: &mut Ctx<'_, Self>) {
        self.report.tell(ProducerEvent::Lost(err));
    }
}

impl Producer {
    /// Writes the next chunk once there is room, then comes back for the one after; closes
    /// once all is sent.
    fn produce(&mut self, cx: &mut Ctx<'_, Self>) {
        if self.sent == TO_SEND {
            // `Close` flushes the write buffer before it shuts the connection down.
            cx.close();
            let sent = self.sent;
            return self.report.tell(ProducerEvent::Done { sent });
        }
        let len = CHUNK_SIZE.min(TO_SEND - self.sent);
        self.sent += len;
        let written = cx.transport().write_ready(self.chunk.slice(..len));
        // `spawn`, not `wait`: while a chunk waits for room, `pause_writing` and
        // `resume_writing` still come in. An error means the connection is gone, and
        // `connection_lost` says why.
        cx.spawn(written, |written, producer, cx| {
            if written.is_ok() {
                producer.produce(cx);
            }
        });
    }
}
// ANCHOR_END: flow_control

/// Step 2: a producer writes to a sink that does not read, until its transport pauses it.
async fn flow_control() -> io::Result<()> {
    let (sink_report, mut sink_events) = reports();
    let server = tcp::serve(LOOPBACK, move || Sink {
        received: 0,
        report: sink_report.clone(),
    })
    .await?;
    let addr = inet_address(&server);
    println!("   server: a sink that pauses reading as soon as a client connects [{addr}]");

    let (report, mut producer_events) = reports();
    let producer = Producer {
        chunk: Bytes::from(vec![b'x'; CHUNK_SIZE]),
        sent: 0,
        report,
    };
    let (client, _producer) = tcp::connect(addr, move || producer).await?;
    println!(
        "   client: a producer of {} MiB, with SetWriteBufferLimits; each write waits for room \
         (write_ready)",
        TO_SEND / MIB
    );
    let (transport, sink) = match next(&mut sink_events, "the sink").await? {
        SinkEvent::Connected { transport, sink } => (transport, sink),
        other => return Err(unexpected("the sink's ConnectionMade", other)),
    };
    if transport.send(IsReading).await.map_err(transport_gone)? {
        return Err(failure("the sink is still reading after PauseReading"));
    }
    println!("   server: the sink paused reading; IsReading says false");

    let sent = match next(&mut producer_events, "the producer").await? {
        ProducerEvent::Paused { sent } => sent,
        ProducerEvent::Done { .. } => {
            return Err(failure(format!(
                "the producer sent all {} MiB without PauseWriting; the socket buffers held it all",
                TO_SEND / MIB
            )));
        }
        other => return Err(unexpected("PauseWriting", other)),
    };
    let (low, high) = client
        .send(GetWriteBufferLimits)
        .await
        .map_err(transport_gone)?;
    let buffered = client
        .send(GetWriteBufferSize)
        .await
        .map_err(transport_gone)?;
    println!("   client: write-buffer limits are low {low}, high {high}");
    // The kernel's socket buffers, on both ends, filled up first; only then did the transport's
    // own buffer start to grow.
    println!(
        "   client: PauseWriting: the write buffer went over the high-water mark \
         [{sent} bytes written, {buffered} buffered]"
    );

    sink.send(ReadAgain).await.map_err(transport_gone)?;
    println!("   server: the sink resumes reading");
    match next(&mut producer_events, "the producer").await? {
        ProducerEvent::Resumed => {}
        other => return Err(unexpected("ResumeWriting", other)),
    }
    println!(
        "   client: ResumeWriting: the write buffer drained to the low-water mark; writing goes on"
    );

    // The sink now reads as fast as it can; the producer may pause and resume a few more times.
    let mut pauses = 1;
    let total = loop {
        match next(&mut producer_events, "the producer").await? {
            ProducerEvent::Paused { .. } => pauses += 1,
            ProducerEvent::Resumed => {}
            ProducerEvent::Done { sent } => break sent,
            other => return Err(unexpected("the producer's end", other)),
        }
    };
    println!(
        "   client: wrote all {} MiB, then Close [{pauses} pause(s) in all]",
        total / MIB
    );

    let producer_err = match next(&mut producer_events, "the producer").await? {
        ProducerEvent::Lost(err) => err,
        other => return Err(unexpected("the producer's ConnectionLost", other)),
    };
    let (received, sink_err) = match next(&mut sink_events, "the sink").await? {
        SinkEvent::Lost { received, err } => (received, err),
        other => return Err(unexpected("the sink's ConnectionLost", other)),
    };
    if let Some(err) = producer_err.or(sink_err) {
        return Err(failure(format!(
            "the flow-control connection failed: {err}"
        )));
    }
    if received != total {
        return Err(failure(format!(
            "the sink received {received} bytes of {total}"
        )));
    }
    println!(
        "   server: the sink received all {} MiB; ConnectionLost(None) on both sides",
        received / MIB
    );

    server.close().await;
    server.wait_closed().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Steps 3 to 6.
// ---------------------------------------------------------------------------------------------

/// The frames the client pipelines behind `SWITCH`. Newlines, and even the word `SWITCH`, are
/// plain data once the length-prefixed protocol is in charge.
const FRAMES: [&[u8]; 3] = [b"alpha", b"bravo\ncharlie", b"SWITCH\n"];

/// Step 3: `SWITCH` and frames pipelined behind it, in one write.
async fn switch_protocols(connection: &mut LineConnection) -> io::Result<()> {
    // The command and the frames behind it, in one buffer and one write: the client does not
    // wait for the switch to happen before it speaks the new protocol.
    let mut pipelined = BytesMut::from(format!("{SWITCH_COMMAND}\n").as_bytes());
    pipelined.extend_from_slice(&frames(&FRAMES));
    connection.client.connection.write(pipelined).await?;
    println!(
        "   client -> server, in one write: \"SWITCH\\n\" and {} length-prefixed frames",
        FRAMES.len()
    );

    let events = &mut connection.server_events;
    match next(events, "the server").await? {
        ServerEvent::Switched => {}
        other => return Err(unexpected("the switch", other)),
    }
    println!(
        "   server: the line protocol read \"SWITCH\" and switched to the length-prefixed protocol, \
         with the bytes it had not decoded"
    );
    match next(events, "the server").await? {
        ServerEvent::Connected(transport) if transport.same_transport(&connection.server_side) => {}
        other => {
            return Err(unexpected(
                "the length-prefixed protocol's ConnectionMade",
                other,
            ));
        }
    }
    println!("   server: the length-prefixed protocol received ConnectionMade, same transport");
    for expected in FRAMES {
        match next(events, "the server").await? {
            ServerEvent::Frame(frame) if frame == expected => {
                println!(
                    "   server: the length-prefixed protocol decoded {}",
                    show(&frame)
                );
            }
            other => return Err(unexpected(&format!("the frame {}", show(expected)), other)),
        }
    }

    for expected in FRAMES {
        let echoed = connection.client.read(LengthDelimitedCodec::new()).await?;
        if echoed != expected {
            return Err(failure(format!(
                "the client got {} back instead of {}",
                show(&echoed),
                show(expected)
            )));
        }
    }
    println!("   client: got the {} frames back, intact", FRAMES.len());
    Ok(())
}

/// Step 4: what the transports at both ends know about their sockets.
async fn extra_info(connection: &LineConnection) -> io::Result<()> {
    let client = connection.client.transport();
    let server_side = &connection.server_side;

    // ANCHOR: extra_info
    // Typed shortcuts for the keys every socket has...
    let peer_addr = client.peer_addr().await; // Option<SocketAddr>
    let sockname = client.sockname().await; // Option<SocketAddress>
    let socket = client.socket().await; // Option<SocketInfo>

    // ...over `GetExtraInfo`, asyncio's `get_extra_info` with its key names.
    let server_peername = server_side
        .send(GetExtraInfo::new(keys::PEERNAME))
        .await
        .map_err(transport_gone)?;

    // A key the transport does not know returns the caller's default, never an error: `cipher`
    // exists only on a connection that speaks TLS.
    let cipher = client
        .send(GetExtraInfo::new("cipher").or(ExtraInfo::Text("none".into())))
        .await
        .map_err(transport_gone)?;
    // ANCHOR_END: extra_info

    let server_addr = inet_address(&connection.server);
    let peer_addr = peer_addr.ok_or_else(|| failure("the client has no peer_addr"))?;
    if peer_addr != server_addr {
        return Err(failure(format!(
            "the client's peer is {peer_addr}, not the server at {server_addr}"
        )));
    }
    println!("   client: peer_addr() is the server's listening address [{peer_addr}]");

    let sockname = sockname.ok_or_else(|| failure("the client has no sockname"))?;
    let server_peername = server_peername.as_ref().and_then(ExtraInfo::as_address);
    if server_peername != Some(&sockname) {
        return Err(failure(format!(
            "the server's peername {server_peername:?} is not the client's sockname {sockname}"
        )));
    }
    println!("   server: GetExtraInfo(\"peername\") is the client's sockname() [{sockname}]");

    let socket = socket.ok_or_else(|| failure("the client has no socket"))?;
    println!(
        "   client: socket() is a {:?} socket of family {:?} [fd {}]",
        socket.kind, socket.family, socket.fd
    );

    match cipher.as_ref().and_then(ExtraInfo::as_text) {
        Some(default) => println!(
            "   client: GetExtraInfo(\"cipher\") on plain TCP returns the caller's default, {default:?}"
        ),
        None => return Err(failure(format!("\"cipher\" on plain TCP gave {cipher:?}"))),
    }
    Ok(())
}

/// Step 5: the client closes; both protocols hear `ConnectionLost(None)`; the server closes.
async fn close(connection: LineConnection) -> io::Result<()> {
    connection.client.connection.close();
    println!("   client: Close");
    let client = connection.client.transport();

    // `Close` is a barrier: a write sent after it is refused and never reaches the wire.
    match client.write_acked("too late\n").await {
        Err(err) if WriteError::of(&err) == Some(WriteError::Closing) => {
            println!("   client: a write after Close is refused: {err}");
        }
        other => {
            return Err(failure(format!(
                "a write after Close was not refused: {other:?}"
            )));
        }
    }

    // The client flushes and shuts its write side down; the server's length-prefixed protocol
    // keeps `eof_received`'s default, so the server closes too, as asyncio does.
    connection.finish().await
}

/// Step 6: steps 1 and 5 again over a Unix socket, with the same protocols.
async fn over_unix() -> io::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tour.sock");
    let mut connection = LineConnection::over_unix(&path).await?;
    connection.exchange_line("hello over a unix socket").await?;

    let client = connection.client.transport();
    let peername = client.peername().await;
    let sockname = client.sockname().await;
    let socket_file = SocketAddress::Unix(UnixAddress::Pathname(path.clone()));
    let unnamed = SocketAddress::Unix(UnixAddress::Unnamed);
    if peername.as_ref() != Some(&socket_file) || sockname.as_ref() != Some(&unnamed) {
        return Err(failure(format!(
            "unexpected Unix addresses: peername {peername:?}, sockname {sockname:?}"
        )));
    }
    println!("   client: peername() is the socket file; sockname() is unnamed");

    connection.client.connection.close();
    println!("   client: Close");
    connection.finish().await?;
    if path.exists() {
        return Err(failure("the closed server left its socket file behind"));
    }
    println!("   server: the socket file is gone");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Steps 7 and 8: TLS.
// ---------------------------------------------------------------------------------------------

/// Step 7: the line protocol served over TLS, with a certificate made for the occasion.
async fn over_tls() -> io::Result<()> {
    let (report, server_events) = reports();

    // ANCHOR: tls
    // A certificate for localhost, 127.0.0.1 and ::1, made now: nobody trusts it but a client
    // told to.
    let cert = SelfSigned::localhost()?;
    // The same line protocol as over TCP: TLS is a layer under the transport, and a protocol
    // sees plaintext. Each connection's protocol is made once its handshake succeeded.
    let server = tls::serve(LOOPBACK, cert.acceptor()?, move || LineProtocol {
        report: report.clone(),
    })
    .await?;
    let addr = server.addresses()[0].to_string();

    // A client that trusts this certificate and no other. `connect` returns once the handshake
    // is done: the certificate verified, and so did the name, here the host part of `addr`.
    let connector = cert.connector()?;
    let (transport, client) = connector.connect(&addr, Connection::new).await?;

    // The TLS keys of `get_extra_info` answer on a TLS transport.
    let cipher = transport
        .send(GetExtraInfo::new(keys::CIPHER))
        .await
        .map_err(transport_gone)?;
    let peer_certificate = transport.peer_certificate().await; // `peercert`, typed
    // ANCHOR_END: tls

    println!("   server: SelfSigned::localhost(), a certificate made at start");
    println!(
        "   server: tls::serve with that certificate and the line protocol [listening on {addr}]"
    );
    println!(
        "   client: TlsConnector::connect, trusting that certificate only; it verified it, and the \
         name 127.0.0.1"
    );
    let mut connection = LineConnection::accepted(server, server_events, client).await?;

    let peer = peer_certificate.ok_or_else(|| failure("the client has no peer_certificate"))?;
    println!(
        "   client: peer_certificate() is {}, for {}",
        peer.subject,
        peer.subject_alt_names.join(", ")
    );
    let Some(cipher) = cipher.as_ref().and_then(ExtraInfo::as_cipher) else {
        return Err(failure(format!("\"cipher\" over TLS gave {cipher:?}")));
    };
    println!(
        "   client: GetExtraInfo(\"cipher\") is {} [{}, {} secret bits]",
        cipher.protocol, cipher.name, cipher.secret_bits
    );

    connection.exchange_line("hello over tls").await?;

    let session = connection
        .server_side
        .tls_session()
        .await
        .ok_or_else(|| failure("the server's end has no tls_session"))?;
    if !session.server_side || session.cipher != *cipher {
        return Err(failure(format!(
            "the server's session {session:?} does not match the client's cipher {cipher:?}"
        )));
    }
    println!(
        "   server: tls_session() on its end: {}, server side, the same cipher",
        session.version
    );

    connection.client.connection.close();
    println!("   client: Close (close_notify, then FIN)");
    connection.finish().await
}

/// What step 8's client protocol tells `main`.
#[derive(Debug)]
enum StartTlsClientEvent {
    /// The server's go-ahead came, and the client started the upgrade.
    GoAhead,
    /// The handshake succeeded.
    Upgraded,
    /// A line received after the upgrade.
    Line(String),
    Lost(Option<io::Error>),
}

// ANCHOR: starttls_client
/// The client's side of the STARTTLS exchange, written the obvious way: it sends `STARTTLS`,
/// reads lines, and on the go-ahead upgrades the same connection to the client of a TLS session
/// with `localhost`, verified as `connect` verifies. Its codec goes on decoding over TLS.
struct StartTlsClient {
    connector: TlsConnector,
    /// Whether the go-ahead came: every line after it comes over TLS.
    upgrading: bool,
    report: Report<StartTlsClientEvent>,
}

impl Protocol for StartTlsClient {
    type Codec = LinesCodec;

    fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
        cx.set_codec(LinesCodec::new_with_max_length(MAX_LINE));
        cx.send(STARTTLS_COMMAND);
    }

    fn data_received(&mut self, line: String, cx: &mut Ctx<'_, Self>) {
        if self.upgrading {
            return self.report.tell(StartTlsClientEvent::Line(line));
        }
        if line != STARTTLS_READY {
            tracing::warn!("no go-ahead: closing");
            return cx.close();
        }
        self.upgrading = true;
        self.report.tell(StartTlsClientEvent::GoAhead);
        let start = match self.connector.start_tls("localhost") {
            Ok(start) => start,
            Err(err) => {
                tracing::warn!(%err, "cannot start TLS: closing");
                return cx.close();
            }
        };
        // `start_tls` hands the transport whatever came behind the go-ahead. An honest server
        // sends nothing there, so if anything came, the server (or someone on the path) is
        // injecting plaintext to be taken for an answer over TLS (CVE-2011-0411's class): the
        // transport refuses the upgrade and ends the connection with the error, which
        // `connection_lost` receives.
        cx.start_tls(start, |upgraded, client, _| {
            if upgraded.is_ok() {
                client.report.tell(StartTlsClientEvent::Upgraded);
            }
        });
    }

    fn connection_lost(&mut self, err: Option<io::Error>, _: &mut Ctx<'_, Self>) {
        self.report.tell(StartTlsClientEvent::Lost(err));
    }
}
// ANCHOR_END: starttls_client

/// Connects a [`StartTlsClient`] to `addr`, trusting what `connector` trusts.
async fn connect_start_tls_client(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> io::Result<(TransportHandle, UnboundedReceiver<StartTlsClientEvent>)> {
    let (report, events) = reports();
    let client = StartTlsClient {
        connector: connector.clone(),
        upgrading: false,
        report,
    };
    let (transport, _client) = tcp::connect(addr, move || client).await?;
    Ok((transport, events))
}

/// Step 8: a plaintext connection, upgraded in place by both ends; then the same client
/// against a server that injects plaintext behind its go-ahead, which must not upgrade.
async fn start_tls() -> io::Result<()> {
    let cert = SelfSigned::localhost()?;
    let acceptor = cert.acceptor()?;
    let connector = cert.connector()?;
    let (report, mut server_events) = reports();
    let server = tcp::serve(LOOPBACK, move || StartTlsGate {
        acceptor: acceptor.clone(),
        report: report.clone(),
    })
    .await?;
    let addr = inet_address(&server);
    println!(
        "   server: tcp::serve with a STARTTLS gate in front of the line protocol [listening on \
         {addr}]"
    );
    let (client, mut client_events) = connect_start_tls_client(addr, &connector).await?;
    println!("   client: tcp::connect with a STARTTLS client protocol, in plaintext");
    let server_side = match next(&mut server_events, "the server").await? {
        ServerEvent::Connected(transport) => transport,
        other => return Err(unexpected("the gate's ConnectionMade", other)),
    };
    println!("   server: the gate received ConnectionMade");
    println!("   client -> server: \"STARTTLS\"");
    match next(&mut server_events, "the server").await? {
        ServerEvent::Upgrading => {}
        other => return Err(unexpected("the gate's upgrade", other)),
    }
    println!(
        "   server: the gate answered, upgraded with Ctx::start_tls and switched to the line \
         protocol"
    );
    match next(&mut client_events, "the STARTTLS client").await? {
        StartTlsClientEvent::GoAhead => {}
        other => return Err(unexpected("the go-ahead", other)),
    }
    println!("   server -> client, in plaintext: \"READY\"");
    println!("   client: the go-ahead; upgraded with Ctx::start_tls (TlsConnector::start_tls)");
    match next(&mut client_events, "the STARTTLS client").await? {
        StartTlsClientEvent::Upgraded => {}
        other => return Err(unexpected("the client's upgrade", other)),
    }
    let session = client.tls_session().await; // `ssl_object`
    let session = session.ok_or_else(|| failure("no tls_session after StartTls"))?;
    println!(
        "   client: the handshake succeeded; tls_session() says {} [{}]",
        session.version, session.cipher.name
    );
    match next(&mut server_events, "the server").await? {
        ServerEvent::Connected(transport) if transport.same_transport(&server_side) => {}
        other => return Err(unexpected("the line protocol's ConnectionMade", other)),
    }
    println!("   server: the line protocol received ConnectionMade, same transport");

    let text = "hello after starttls";
    client.write(format!("{text}\n"));
    println!("   client -> server: {text:?}");
    match next(&mut server_events, "the server").await? {
        ServerEvent::Line(line) if line == text => {
            println!("   server: the line protocol read {line:?}");
        }
        other => return Err(unexpected(&format!("the line {text:?}"), other)),
    }
    match next(&mut client_events, "the STARTTLS client").await? {
        StartTlsClientEvent::Line(answer) if answer == text.to_uppercase() => {
            println!("   server -> client: {answer:?}, read by the client's codec over TLS");
        }
        other => return Err(unexpected("the answer over TLS", other)),
    }
    match server_side.cipher().await {
        Some(cipher) if cipher == session.cipher => {
            println!(
                "   server: cipher() on its end: {}, the same",
                cipher.protocol
            );
        }
        other => {
            return Err(failure(format!(
                "the server's cipher {other:?} is not the client's {:?}",
                session.cipher
            )));
        }
    }

    client.close();
    println!("   client: Close");
    match next(&mut client_events, "the STARTTLS client").await? {
        StartTlsClientEvent::Lost(None) => println!("   client: ConnectionLost(None)"),
        other => return Err(unexpected("the client's ConnectionLost(None)", other)),
    }
    match next(&mut server_events, "the server").await? {
        ServerEvent::Lost(None) => println!("   server: ConnectionLost(None)"),
        other => return Err(unexpected("the server's ConnectionLost(None)", other)),
    }
    server.close().await;
    server.wait_closed().await;
    println!("   server: close() and wait_closed() returned");

    refused_injection(&connector).await
}

/// What step 8's fake server answers `STARTTLS` with, in one write: its go-ahead, and a line
/// the client must not take for an answer over TLS.
const INJECTING_GO_AHEAD: &[u8] = b"READY\nINJECTED\n";

/// The second half of step 8: the same client against a fake server, a bare tokio socket, that
/// sends plaintext behind its go-ahead. The client must refuse to upgrade.
async fn refused_injection(connector: &TlsConnector) -> io::Result<()> {
    let listener = tokio::net::TcpListener::bind(LOOPBACK).await?;
    let addr = listener.local_addr()?;
    println!(
        "   fake server: a tokio TcpListener that answers \"STARTTLS\" with \"READY\\nINJECTED\\n\" \
         in one write [listening on {addr}]"
    );
    // The fake server: reads the command, injects, then waits for what comes next: the end of
    // the connection, or a ClientHello if the client upgraded (dropping the socket then fails
    // that handshake at once, and the step with it).
    let fake = actix::spawn(async move {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let (socket, _) = listener.accept().await?;
        let mut socket = BufReader::new(socket);
        let mut command = String::new();
        socket.read_line(&mut command).await?;
        if command != "STARTTLS\n" {
            return Err(failure(format!("the fake server got {command:?}")));
        }
        socket.write_all(INJECTING_GO_AHEAD).await?;
        let mut after = [0; 1024];
        Ok::<_, io::Error>(match socket.read(&mut after).await {
            Ok(0) => (0, "EOF".to_owned()),
            Ok(n) => (n, format!("{n} bytes")),
            Err(err) => (0, err.to_string()),
        })
    });

    let (_client, mut client_events) = connect_start_tls_client(addr, connector).await?;
    println!("   client: tcp::connect to it, with the same client protocol");
    println!("   client -> fake server: \"STARTTLS\"");
    match next(&mut client_events, "the STARTTLS client").await? {
        StartTlsClientEvent::GoAhead => {}
        other => return Err(unexpected("the go-ahead", other)),
    }
    println!("   fake server -> client, in one write: \"READY\\nINJECTED\\n\"");
    println!(
        "   client: the go-ahead; Ctx::start_tls hands the transport the line behind it, undecoded"
    );
    let refused = match next(&mut client_events, "the STARTTLS client").await? {
        StartTlsClientEvent::Lost(Some(err)) => TlsError::of(&err).cloned(),
        StartTlsClientEvent::Upgraded => {
            return Err(failure(
                "the client's upgrade went ahead although the server injected plaintext behind \
                 its go-ahead",
            ));
        }
        other => return Err(unexpected("ConnectionLost with the Injection error", other)),
    };
    match refused {
        Some(refused) if refused.kind() == TlsErrorKind::Injection => println!(
            "   client: ConnectionLost(Some(err)): the transport refused the upgrade, {} [{}]",
            refused.kind(),
            refused.message()
        ),
        other => return Err(unexpected("the Injection error", other)),
    }
    let (after, ended) = fake
        .await
        .map_err(|err| failure(format!("the fake server panicked: {err}")))??;
    if after > 0 {
        return Err(failure(format!(
            "the client sent {after} bytes after the refused upgrade"
        )));
    }
    println!("   fake server: nothing came after the injection, no ClientHello [{ended}]");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Step 9: a subprocess.
// ---------------------------------------------------------------------------------------------

/// What the child of step 9 runs, with `sh -c`: its stdin in upper case to its stdout, a word
/// to its stderr, and exit status 3.
const CHILD_SCRIPT: &str = "tr a-z A-Z; echo bye >&2; exit 3";

/// What the subprocess step's protocol saw, reported to `main` at `ConnectionLost`.
#[derive(Debug, Default)]
struct ChildReport {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// The pipes whose `PipeConnectionLost` came, in the order they came.
    closed_pipes: Vec<RawFd>,
    status: Option<ExitStatus>,
    lost: Option<io::Error>,
}

// ANCHOR: subprocess_protocol
/// The subprocess step's protocol: keeps what the child writes to its stdout and stderr, and
/// reports it all to `main` once the transport is done with the child.
struct Collector {
    seen: ChildReport,
    report: Report<ChildReport>,
}

impl Actor for Collector {
    type Context = Context<Self>;
}

impl Handler<ConnectionMade<SubprocessHandle>> for Collector {
    type Result = ();

    /// `spawn` returns the same handle to `main`, which writes the child's stdin.
    fn handle(&mut self, _: ConnectionMade<SubprocessHandle>, _: &mut Context<Self>) {}
}

impl Handler<PipeDataReceived> for Collector {
    type Result = ();

    /// Each pipe's bytes in order; the two pipes are not ordered with each other.
    fn handle(&mut self, msg: PipeDataReceived, _: &mut Context<Self>) {
        match msg.fd {
            STDOUT => self.seen.stdout.extend_from_slice(&msg.data),
            STDERR => self.seen.stderr.extend_from_slice(&msg.data),
            _ => {}
        }
    }
}

impl Handler<PipeConnectionLost> for Collector {
    type Result = ();

    /// Once per pipe, after its data: 0 when the child's stdin is closed, 1 and 2 at their EOF.
    fn handle(&mut self, msg: PipeConnectionLost, _: &mut Context<Self>) {
        self.seen.closed_pipes.push(msg.fd);
    }
}

impl Handler<ProcessExited> for Collector {
    type Result = ();

    /// The child exited; its output may still be on its way.
    fn handle(&mut self, msg: ProcessExited, _: &mut Context<Self>) {
        self.seen.status = Some(msg.status);
    }
}

impl Handler<ConnectionLost> for Collector {
    type Result = ();

    /// Once, last: the child exited *and* all its pipes closed.
    fn handle(&mut self, ConnectionLost(err): ConnectionLost, ctx: &mut Context<Self>) {
        self.seen.lost = err;
        self.report.tell(std::mem::take(&mut self.seen));
        ctx.stop();
    }
}
// ANCHOR_END: subprocess_protocol

/// Step 9: a child process with its three standard streams piped.
async fn run_subprocess() -> io::Result<()> {
    let (report, mut collected) = reports();
    let collector = move || {
        Collector {
            seen: ChildReport::default(),
            report,
        }
        .start()
    };

    // ANCHOR: subprocess
    // `sh -c CHILD_SCRIPT`, with its stdin, stdout and stderr piped (the default).
    let (process, _collector) = subprocess::shell(CHILD_SCRIPT, collector)?;
    // Pipe 0 is the write side, the child's stdin. `WriteEof` flushes and closes it: the child
    // reads its EOF.
    let stdin = process
        .pipe(STDIN)
        .ok_or_else(|| failure("the child's stdin is not piped"))?;
    stdin.write("hello, subprocess\n");
    stdin.write_eof();
    // ANCHOR_END: subprocess
    println!(
        "   parent: subprocess::shell({CHILD_SCRIPT:?}) [pid {}]",
        process.pid()
    );
    println!(r#"   parent -> child's stdin (pipe 0): "hello, subprocess\n", then WriteEof"#);

    let mut seen = next(&mut collected, "the subprocess protocol").await?;
    if seen.stdout != b"HELLO, SUBPROCESS\n" || seen.stderr != b"bye\n" {
        return Err(failure(format!("the child wrote {seen:?}")));
    }
    println!("   child's stdout (pipe 1): {}", show(&seen.stdout));
    println!("   child's stderr (pipe 2): {}", show(&seen.stderr));
    // Which pipe closes first varies from run to run.
    seen.closed_pipes.sort_unstable();
    if seen.closed_pipes != [STDIN, STDOUT, STDERR] {
        return Err(failure(format!(
            "PipeConnectionLost came for pipes {:?}",
            seen.closed_pipes
        )));
    }
    println!("   PipeConnectionLost for pipes 0, 1 and 2, each after its data");
    let status = seen
        .status
        .ok_or_else(|| failure("ConnectionLost came without ProcessExited"))?;
    if status.code() != Some(3) {
        return Err(failure(format!("the child ended with {status}")));
    }
    println!("   ProcessExited: {status}");
    println!("   {}, last", describe_lost(&seen.lost));
    if let Some(err) = seen.lost {
        return Err(failure(format!("the subprocess transport failed: {err}")));
    }

    // ANCHOR: process_gone
    // The exit status stays in the handle. A signal sent after the exit fails: the pid may
    // belong to another process by now.
    let returncode = process.returncode(); // Some(status)
    let late_signal = process.terminate().await; // Err(ProcessGone)
    // ANCHOR_END: process_gone
    if returncode != Some(status) {
        return Err(failure(format!("returncode() is {returncode:?}")));
    }
    match late_signal {
        Err(err) if ProcessGone::of(&err) => {
            println!("   parent: returncode() is {status}; Terminate now fails: {err}");
        }
        other => {
            return Err(failure(format!("Terminate after the exit gave {other:?}")));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Step 10: datagrams.
// ---------------------------------------------------------------------------------------------

/// What the datagram step's protocols tell `main`.
#[derive(Debug)]
enum DatagramEvent {
    Datagram { data: Bytes, from: SocketAddress },
    Error(io::Error),
    Lost(Option<io::Error>),
}

// ANCHOR: datagram_protocol
/// The datagram step's protocol, on both endpoints: it reports every event to `main`, and on
/// the server's endpoint also sends each datagram back where it came from.
struct Datagrams {
    endpoint: Option<DatagramHandle>,
    echo: bool,
    report: Report<DatagramEvent>,
}

impl Actor for Datagrams {
    type Context = Context<Self>;
}

impl Handler<ConnectionMade<DatagramHandle>> for Datagrams {
    type Result = ();

    fn handle(&mut self, msg: ConnectionMade<DatagramHandle>, _: &mut Context<Self>) {
        self.endpoint = Some(msg.transport);
    }
}

impl Handler<DatagramReceived> for Datagrams {
    type Result = ();

    /// One datagram, with its sender's address: never merged with the next, never split.
    fn handle(&mut self, msg: DatagramReceived, _: &mut Context<Self>) {
        if self.echo
            && let Some(endpoint) = &self.endpoint
        {
            endpoint.send_to(msg.data.clone(), msg.addr.clone());
        }
        self.report.tell(DatagramEvent::Datagram {
            data: msg.data,
            from: msg.addr,
        });
    }
}

impl Handler<ErrorReceived> for Datagrams {
    type Result = ();

    /// An error about one datagram; the endpoint goes on.
    fn handle(&mut self, ErrorReceived(err): ErrorReceived, _: &mut Context<Self>) {
        self.report.tell(DatagramEvent::Error(err));
    }
}

impl Handler<ConnectionLost> for Datagrams {
    type Result = ();

    fn handle(&mut self, ConnectionLost(err): ConnectionLost, ctx: &mut Context<Self>) {
        self.report.tell(DatagramEvent::Lost(err));
        ctx.stop();
    }
}
// ANCHOR_END: datagram_protocol

impl Datagrams {
    fn new(echo: bool, report: Report<DatagramEvent>) -> Self {
        Datagrams {
            endpoint: None,
            echo,
            report,
        }
    }
}

/// What the client sends, back to back: over a stream, the three could arrive as `pingpong`.
const DATAGRAMS: [&[u8]; 3] = [b"ping", b"", b"pong"];

/// Step 10: a UDP echo endpoint, a client endpoint connected to it, and what datagrams keep
/// that a stream does not.
async fn datagrams() -> io::Result<()> {
    let (server_report, mut server_events) = reports();
    let (client_report, mut client_events) = reports();

    // ANCHOR: datagram_endpoints
    // An endpoint bound to a port, answering anyone, and one connected to it: its datagrams go
    // there without an address, and only the server's come in.
    let echo = move || Datagrams::new(true, server_report).start();
    let (server, _echo) = udp::bind(LOOPBACK, echo).await?;
    let server_addr = server
        .local_addr()
        .ok_or_else(|| failure("the server endpoint has no address"))?;
    let client_protocol = move || Datagrams::new(false, client_report).start();
    let (client, _client_protocol) = udp::connect(server_addr, client_protocol).await?;
    for datagram in DATAGRAMS {
        client.send_connected(datagram);
    }
    // ANCHOR_END: datagram_endpoints
    println!("   server: udp::bind with an echo protocol [{server_addr}]");
    let client_addr = client
        .local_addr()
        .ok_or_else(|| failure("the client endpoint has no address"))?;
    println!("   client: udp::connect to the server [{client_addr}]");
    println!(
        "   client -> server: {}, back to back",
        DATAGRAMS.map(show).join(", ")
    );

    for expected in DATAGRAMS {
        match next(&mut server_events, "the server endpoint").await? {
            DatagramEvent::Datagram { data, from } if data == expected => {
                if from.as_inet() != Some(client_addr) {
                    return Err(failure(format!("{} came from {from}", show(&data))));
                }
                println!("   server: DatagramReceived {} [from {from}]", show(&data));
            }
            other => {
                return Err(unexpected(
                    &format!("the datagram {}", show(expected)),
                    other,
                ));
            }
        }
    }
    for expected in DATAGRAMS {
        match next(&mut client_events, "the client endpoint").await? {
            DatagramEvent::Datagram { data, .. } if data == expected => {}
            other => {
                return Err(unexpected(
                    &format!("the echo of {}", show(expected)),
                    other,
                ));
            }
        }
    }
    println!("   client: three DatagramReceived, one per echo, the empty one included");

    // ANCHOR: send_to_refused
    // A connected endpoint sends to its peer only. Another address is refused, with the
    // reason, and the endpoint stays open.
    let elsewhere = SocketAddr::from(([127, 0, 0, 1], 9));
    let refused = client.send_to_acked(SendTo::new("astray", elsewhere)).await;
    // ANCHOR_END: send_to_refused
    match refused {
        Err(err)
            if matches!(
                SendToError::of(&err),
                Some(SendToError::NotConnectedAddress { .. })
            ) =>
        {
            println!(
                "   client: SendTo for another address is refused; the endpoint stays open [{err}]"
            );
        }
        other => return Err(failure(format!("SendTo for {elsewhere} gave {other:?}"))),
    }

    server.close();
    println!("   server: Close");
    match next(&mut server_events, "the server endpoint").await? {
        DatagramEvent::Lost(None) => println!("   server: ConnectionLost(None)"),
        other => return Err(unexpected("the server's ConnectionLost", other)),
    }

    // ANCHOR: error_received
    // Nobody listens on the server's port any more. The kernel takes the datagram; the port
    // unreachable that comes back reaches the client's protocol as `ErrorReceived`.
    client.send_to_acked(SendTo::connected("anyone?")).await?;
    // ANCHOR_END: error_received
    println!(r#"   client -> the closed port: "anyone?", taken by the kernel"#);
    match next(&mut client_events, "the client endpoint").await? {
        DatagramEvent::Error(err) if err.kind() == io::ErrorKind::ConnectionRefused => {
            println!(
                "   client: ErrorReceived, ConnectionRefused; the endpoint stays open [{err}]"
            );
        }
        other => return Err(unexpected("ErrorReceived(ConnectionRefused)", other)),
    }
    if client.is_closing().await {
        return Err(failure("the client endpoint closed after ErrorReceived"));
    }

    client.close();
    println!("   client: Close");
    match next(&mut client_events, "the client endpoint").await? {
        DatagramEvent::Lost(None) => println!("   client: ConnectionLost(None)"),
        other => return Err(unexpected("the client's ConnectionLost", other)),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Step 11: HTTP to WebSocket.
// ---------------------------------------------------------------------------------------------

/// RFC 6455's sample `Sec-WebSocket-Key`, and the `Sec-WebSocket-Accept` the RFC gives for it.
const WEBSOCKET_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WEBSOCKET_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// What every `Sec-WebSocket-Accept` is computed with (RFC 6455, 1.3).
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The client's first message, sent in the same write as its upgrade request.
const WEBSOCKET_HELLO: &str = "hello, websocket";

/// WebSocket opcodes this step uses (RFC 6455, 5.2).
const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;

/// The answer to a request that is not a WebSocket upgrade of `/ws`.
const NOT_FOUND: &str = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

// ANCHOR: websocket_upgrade
/// The server's HTTP protocol: it reads a request head and, for a WebSocket upgrade of `/ws`,
/// answers `101 Switching Protocols` and hands the connection to a [`WebSocketEcho`], with the
/// bytes behind the head. Anything else gets a `404` and the connection closes. (The
/// `websocket_echo` example is the full version: keep-alive, every check of RFC 6455.)
struct HttpUpgrade {
    report: Report<ServerEvent>,
}

impl Protocol for HttpUpgrade {
    /// Request heads, each up to the blank line that ends it.
    type Codec = RequestHeads;

    fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
        self.report
            .tell(ServerEvent::Connected(cx.transport().clone()));
    }

    fn data_received(&mut self, head: Bytes, cx: &mut Ctx<'_, Self>) {
        let Some(key) = websocket_key(&head) else {
            cx.write(NOT_FOUND);
            return cx.close();
        };
        cx.write(format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(&key)
        ));
        self.report.tell(ServerEvent::WebSocketUpgrade);
        // The client did not wait for the `101`: its first frame is already here, behind the
        // head, not decoded. It goes with the switch, after the `101` in the transport's queue.
        cx.switch_to(WebSocketEcho {
            report: self.report.clone(),
        });
    }

    fn connection_lost(&mut self, err: Option<io::Error>, _: &mut Ctx<'_, Self>) {
        self.report.tell(ServerEvent::Lost(err));
    }
}

/// The WebSocket protocol the connection is switched to: it echoes text, and answers a close
/// with a close before it closes the connection.
struct WebSocketEcho {
    report: Report<ServerEvent>,
}

impl Protocol for WebSocketEcho {
    type Codec = SmallFrames;

    fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
        self.report
            .tell(ServerEvent::Connected(cx.transport().clone()));
    }

    /// The first frame is the one the HTTP protocol handed over.
    fn data_received(&mut self, frame: WsFrame, cx: &mut Ctx<'_, Self>) {
        match frame.opcode {
            OP_TEXT => {
                let message = frame.payload.clone();
                self.report.tell(ServerEvent::WebSocketMessage(message));
                cx.send(frame);
            }
            // Nothing after a close counts (RFC 6455, 5.5.1), and `close` delivers nothing more.
            OP_CLOSE => {
                cx.send(frame);
                cx.close();
            }
            _ => {}
        }
    }

    // A frame this cut-down codec cannot read closes the connection: `decode_error`'s default.

    fn connection_lost(&mut self, err: Option<io::Error>, _: &mut Ctx<'_, Self>) {
        self.report.tell(ServerEvent::Lost(err));
    }
}
// ANCHOR_END: websocket_upgrade

/// The `Sec-WebSocket-Key` of a `GET /ws` that asks for a WebSocket, version 13.
fn websocket_key(head: &[u8]) -> Option<String> {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut fields);
    request.parse(head).ok()?;
    let field = |name: &str| {
        let field = request
            .headers
            .iter()
            .find(|field| field.name.eq_ignore_ascii_case(name));
        field.map(|field| field.value)
    };
    let upgrade = field("upgrade")?.eq_ignore_ascii_case(b"websocket");
    let version = field("sec-websocket-version")? == b"13";
    let wanted = request.method == Some("GET") && request.path == Some("/ws");
    let key = String::from_utf8(field("sec-websocket-key")?.to_vec()).ok()?;
    (upgrade && version && wanted).then_some(key)
}

/// The `Sec-WebSocket-Accept` for a key: base64(SHA-1(key + GUID)).
fn accept_key(key: &str) -> String {
    use base64::Engine;
    use sha1::Digest;
    let digest = sha1::Sha1::new()
        .chain_update(key)
        .chain_update(WEBSOCKET_GUID)
        .finalize();
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// Request heads: the bytes up to the blank line that ends them.
#[derive(Debug, Default)]
struct RequestHeads;

impl Decoder for RequestHeads {
    type Item = Bytes;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Bytes>> {
        match src.windows(4).position(|window| window == b"\r\n\r\n") {
            Some(end) => Ok(Some(src.split_to(end + 4).freeze())),
            None if src.len() > MAX_LINE => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too long",
            )),
            None => Ok(None),
        }
    }
}

/// One WebSocket frame.
#[derive(Debug)]
struct WsFrame {
    opcode: u8,
    payload: Bytes,
}

impl WsFrame {
    fn new(opcode: u8, payload: impl Into<Bytes>) -> Self {
        WsFrame {
            opcode,
            payload: payload.into(),
        }
    }

    /// The frame as a client sends it: masked with `mask`.
    fn masked(&self, mask: [u8; 4]) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u8(0x80 | self.opcode);
        out.put_u8(0x80 | self.payload.len() as u8);
        out.put_slice(&mask);
        out.extend(
            self.payload
                .iter()
                .zip(mask.iter().cycle())
                .map(|(byte, key)| byte ^ key),
        );
        out.freeze()
    }
}

/// WebSocket frames, cut down to what this step sends: whole frames of at most 125 bytes,
/// masked (from the client) or not (from the server). The `websocket_echo` example has the
/// full codec.
#[derive(Debug, Default)]
struct SmallFrames;

/// The most payload a [`SmallFrames`] frame carries: what fits the 7-bit length.
const SMALL_FRAME: usize = 125;

impl Decoder for SmallFrames {
    type Item = WsFrame;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<WsFrame>> {
        let [first, second, ..] = src[..] else {
            return Ok(None);
        };
        let len = usize::from(second & 0x7F);
        if first & 0x80 == 0 || len > SMALL_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a fragmented or long frame: not in this tour",
            ));
        }
        let mask_len = if second & 0x80 != 0 { 4 } else { 0 };
        if src.len() < 2 + mask_len + len {
            return Ok(None);
        }
        let mask = src.split_to(2 + mask_len).split_off(2);
        let mut payload = src.split_to(len);
        if !mask.is_empty() {
            for (byte, key) in payload.iter_mut().zip(mask.iter().cycle()) {
                *byte ^= key;
            }
        }
        Ok(Some(WsFrame::new(first & 0x0F, payload)))
    }
}

impl Encoder<WsFrame> for SmallFrames {
    type Error = io::Error;

    /// A server frame: not masked.
    fn encode(&mut self, frame: WsFrame, dst: &mut BytesMut) -> io::Result<()> {
        if frame.payload.len() > SMALL_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame too long",
            ));
        }
        dst.put_u8(0x80 | frame.opcode);
        dst.put_u8(frame.payload.len() as u8);
        dst.put_slice(&frame.payload);
        Ok(())
    }
}

impl Client {
    /// Reads a response head: the status line, and the header fields in lower case.
    async fn read_response_head(&mut self) -> io::Result<(String, Vec<(String, String)>)> {
        let status = self.read_line().await?.trim_end().to_owned();
        let mut fields = Vec::new();
        loop {
            let line = self.read_line().await?;
            let line = line.trim_end();
            if line.is_empty() {
                return Ok((status, fields));
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| failure(format!("not a header field: {line:?}")))?;
            fields.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
}

/// Step 11: an upgrade request and the first WebSocket frame in one write; the switch keeps the
/// frame.
async fn websocket() -> io::Result<()> {
    let (report, server_events) = reports();
    let server = tcp::serve(LOOPBACK, move || HttpUpgrade {
        report: report.clone(),
    })
    .await?;
    let addr = inet_address(&server);
    println!("   server: tcp::serve with an HTTP protocol [listening on {addr}]");
    let (_, client) = tcp::connect(addr, Connection::new).await?;
    println!("   client: tcp::connect");
    let mut connection =
        LineConnection::accepted_by(server, server_events, client, "the HTTP protocol").await?;

    // ANCHOR: websocket_client
    // The request, and the client's first frame right behind it, in one write: the client
    // does not wait for the `101`.
    let mut wire = BytesMut::new();
    wire.put_slice(
        format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {WEBSOCKET_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    );
    let hello = WsFrame::new(OP_TEXT, WEBSOCKET_HELLO);
    wire.put_slice(&hello.masked([0x37, 0xfa, 0x21, 0x3d]));
    connection.client.connection.write(wire).await?;
    // ANCHOR_END: websocket_client
    println!(
        "   client -> server, in one write: \"GET /ws\" with Upgrade: websocket, and a masked text \
         frame {WEBSOCKET_HELLO:?}"
    );

    let events = &mut connection.server_events;
    match next(events, "the server").await? {
        ServerEvent::WebSocketUpgrade => println!(
            "   server: the HTTP protocol answered 101 and switched to the WebSocket protocol, with \
             the bytes behind the request head"
        ),
        other => return Err(unexpected("the upgrade", other)),
    }
    match next(events, "the server").await? {
        ServerEvent::Connected(transport) if transport.same_transport(&connection.server_side) => {
            println!("   server: the WebSocket protocol received ConnectionMade, same transport");
        }
        other => return Err(unexpected("the WebSocket protocol's ConnectionMade", other)),
    }
    match next(events, "the server").await? {
        ServerEvent::WebSocketMessage(message) if message == WEBSOCKET_HELLO => {
            println!(
                "   server: the WebSocket protocol echoed {}",
                show(&message)
            );
        }
        other => return Err(unexpected("the first message", other)),
    }

    let client = &mut connection.client;
    let (status, fields) = client.read_response_head().await?;
    let accept = fields
        .iter()
        .find(|(name, _)| name == "sec-websocket-accept");
    if status != "HTTP/1.1 101 Switching Protocols"
        || accept.map(|(_, value)| value.as_str()) != Some(WEBSOCKET_ACCEPT)
    {
        return Err(failure(format!(
            "the server answered {status:?} with {fields:?}"
        )));
    }
    println!(
        "   server -> client: 101 Switching Protocols, with the Sec-WebSocket-Accept of RFC 6455"
    );
    let echo = client.read(SmallFrames).await?;
    if echo.opcode != OP_TEXT || echo.payload != WEBSOCKET_HELLO {
        return Err(unexpected("the echo", echo));
    }
    println!("   server -> client: a text frame {}", show(&echo.payload));

    let close = WsFrame::new(OP_CLOSE, 1000u16.to_be_bytes().to_vec());
    client.connection.write(close.masked([1, 2, 3, 4])).await?;
    println!("   client -> server: a close frame, code 1000");
    let echo = client.read(SmallFrames).await?;
    if echo.opcode != OP_CLOSE || echo.payload[..] != 1000u16.to_be_bytes() {
        return Err(unexpected("the close echoed", echo));
    }
    println!("   server -> client: the close frame echoed, code 1000; the server closes");
    // A `Connection` stays open for writing after the peer's EOF, as asyncio's streams do:
    // the client closes its end once it has read everything.
    if let Some(more) = client.connection.next().await {
        return Err(unexpected("the server's EOF", more));
    }
    client.connection.close();
    println!("   client: the server's EOF, then Close");
    connection.finish().await
}

// ---------------------------------------------------------------------------------------------
// Small helpers.
// ---------------------------------------------------------------------------------------------

/// The address a TCP server listens on.
fn inet_address(server: &ServerHandle) -> SocketAddr {
    server
        .addresses()
        .first()
        .and_then(SocketAddress::as_inet)
        .expect("a TCP server on 127.0.0.1 listens on one IPv4 address")
}

/// The next thing a protocol reported.
async fn next<T>(events: &mut UnboundedReceiver<T>, from: &str) -> io::Result<T> {
    events
        .recv()
        .await
        .ok_or_else(|| failure(format!("{from} stopped without reporting")))
}

fn unexpected(awaited: &str, got: impl fmt::Debug) -> io::Error {
    failure(format!("waited for {awaited}, got {got:?}"))
}

fn failure(reason: impl Into<String>) -> io::Error {
    io::Error::other(reason.into())
}

fn transport_gone(err: MailboxError) -> io::Error {
    failure(format!("the transport stopped before it answered: {err}"))
}

fn describe_lost(err: &Option<io::Error>) -> String {
    match err {
        None => "ConnectionLost(None)".to_owned(),
        Some(err) => format!("ConnectionLost(Some({err}))"),
    }
}

/// A frame as text, quoted and escaped: `"bravo\ncharlie"`.
fn show(frame: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(frame))
}

#[cfg(test)]
mod tests {
    //! The tour's protocols on a mock transport: no socket, every split point.

    use switchboard::{
        BufferedPlaintext,
        testing::{Chunking, Ending, MockTransport, Sent},
    };

    use super::*;

    /// Everything reported so far.
    fn reported<T>(events: &mut UnboundedReceiver<T>) -> Vec<T> {
        let mut seen = Vec::new();
        while let Ok(event) = events.try_recv() {
            seen.push(event);
        }
        seen
    }

    fn line_protocol() -> (LineProtocol, UnboundedReceiver<ServerEvent>) {
        let (report, events) = reports();
        (LineProtocol { report }, events)
    }

    fn length_protocol() -> (LengthProtocol, UnboundedReceiver<ServerEvent>) {
        let (report, events) = reports();
        (LengthProtocol { report }, events)
    }

    /// What a protocol that switches after the first `end` bytes of `input` has read and not
    /// decoded: the rest of the delivery that held byte `end - 1`.
    fn leftover_at(input: &Bytes, end: usize, chunking: &Chunking) -> Bytes {
        let mut start = 0;
        for piece in chunking.split(input) {
            if start + piece.len() >= end {
                return piece.slice(end - start..);
            }
            start += piece.len();
        }
        panic!("{end} is past the end of the input");
    }

    fn names(commands: &[Sent]) -> Vec<&'static str> {
        commands.iter().map(Sent::name).collect()
    }

    // ANCHOR: test_line_protocol_every_split
    // Each line is answered in upper case, however the bytes are cut into reads.
    #[actix::test]
    async fn test_line_protocol_every_split() {
        let input = "hello\nworld\n";
        for chunking in Chunking::every(input.len()) {
            let (protocol, _events) = line_protocol();
            let mock = MockTransport::connect(protocol).await;
            mock.feed_chunked(input, &chunking).await;
            assert_eq!(mock.written(), "HELLO\nWORLD\n", "{chunking:?}");
        }
    }
    // ANCHOR_END: test_line_protocol_every_split

    /// `\r\n` ends a line too; an empty line gets an empty answer; a line waits for its newline.
    #[actix::test]
    async fn line_protocol_answers_whole_lines_only() {
        let (protocol, mut events) = line_protocol();
        let mock = MockTransport::connect(protocol).await;
        mock.feed("a b\r\n\nhalf").await;
        assert_eq!(mock.writes(), ["A B\n", "\n"]);
        mock.feed(" done\n").await;
        assert_eq!(mock.take_written(), "A B\n\nHALF DONE\n");
        let lines: Vec<_> = reported(&mut events)
            .into_iter()
            .filter_map(|event| match event {
                ServerEvent::Line(line) => Some(line),
                _ => None,
            })
            .collect();
        assert_eq!(lines, ["a b", "", "half done"]);
    }

    /// `SWITCH` hands the connection to a `LengthProtocol` with the bytes behind the command,
    /// at every split point: the frames the client pipelined are echoed, none lost or doubled.
    #[actix::test]
    async fn line_protocol_switch_hands_over_the_leftover_at_every_split() {
        let head = b"hi\nSWITCH\n";
        let tail = frames(&[b"one", b"SWITCH\n", b"two"]);
        let input = Bytes::from([&head[..], &tail[..]].concat());
        for chunking in Chunking::every(input.len()) {
            let (protocol, mut events) = line_protocol();
            let (mock, lines) = MockTransport::builder().attach(protocol);
            mock.feed_chunked(input.clone(), &chunking).await;

            let expected_leftover = leftover_at(&input, head.len(), &chunking);
            let commands = mock.take_commands();
            match &commands[..] {
                [
                    Sent::Write(answer),
                    Sent::SetProtocol { protocol, leftover },
                    rest @ ..,
                ] => {
                    assert_eq!(answer, "HI\n", "{chunking:?}");
                    assert_eq!(leftover, &expected_leftover, "{chunking:?}");
                    assert!(
                        protocol
                            .downcast::<ProtocolActor<LengthProtocol>>()
                            .is_some()
                    );
                    assert!(rest.iter().all(|sent| matches!(sent, Sent::Write(_))));
                }
                _ => panic!("{chunking:?}: {:?}", names(&commands)),
            }
            assert_eq!(mock.written(), [&b"HI\n"[..], &tail[..]].concat());
            assert!(!mock.is_closing(), "a switch keeps the connection");
            assert!(!lines.connected(), "the line protocol stopped");

            let seen = reported(&mut events);
            assert!(
                matches!(
                    &seen[..],
                    [
                        ServerEvent::Connected(_),
                        ServerEvent::Line(line),
                        ServerEvent::Switched,
                        ServerEvent::Connected(_),
                        ServerEvent::Frame(one),
                        ServerEvent::Frame(switch),
                        ServerEvent::Frame(two),
                    ] if line == "hi" && one == "one" && switch == "SWITCH\n" && two == "two"
                ),
                "{chunking:?}: {seen:?}"
            );
        }
    }

    /// A line over `MAX_LINE` bytes closes the connection, after the lines before it were
    /// answered; so does a line that is not UTF-8. Nothing after it reaches the wire.
    #[actix::test]
    async fn line_protocol_closes_on_a_bad_line() {
        let long = [&b"ok\n"[..], &[b'x'; MAX_LINE + 1][..]].concat();
        let not_utf8 = b"ok\n\xff\xfe\nnever\n".to_vec();
        for input in [Bytes::from(long), Bytes::from(not_utf8)] {
            let chunkings = [
                Chunking::Whole,
                Chunking::Bytewise,
                Chunking::SplitAt(3),
                Chunking::SplitAt(5),
                Chunking::Sizes(vec![1000]),
            ];
            for chunking in chunkings {
                let (protocol, _events) = line_protocol();
                let mock = MockTransport::connect(protocol).await;
                mock.feed_chunked(input.clone(), &chunking).await;
                assert_eq!(mock.written(), "OK\n", "{chunking:?}");
                assert_eq!(mock.ending(), Some(Ending::Closed), "{chunking:?}");
            }
        }
    }

    /// The line protocol does not keep a half-open connection: at EOF the transport closes, and
    /// a last line without its newline is answered first.
    #[actix::test]
    async fn line_protocol_closes_at_eof() {
        let (protocol, mut events) = line_protocol();
        let mock = MockTransport::connect(protocol).await;
        mock.feed("one\ntwo").await;
        assert!(!mock.eof().await);
        mock.protocol_stopped().await;
        assert_eq!(mock.written(), "ONE\nTWO\n");
        assert_eq!(mock.ending(), Some(Ending::ClosedAtEof));
        assert!(matches!(
            reported(&mut events).last(),
            Some(ServerEvent::Lost(None))
        ));
    }

    // ANCHOR: test_length_protocol
    // Every frame comes back, newlines and all, and is reported.
    #[actix::test]
    async fn test_length_protocol() {
        let (protocol, mut events) = length_protocol();
        let mock = MockTransport::connect(protocol).await;

        let two_frames = frames(&[b"bravo", b"charlie\n"]);
        mock.feed(two_frames.clone()).await;
        assert_eq!(mock.written(), two_frames);
        assert!(matches!(
            &reported(&mut events)[..],
            [ServerEvent::Connected(_), ServerEvent::Frame(bravo), ServerEvent::Frame(charlie)]
                if bravo == "bravo" && charlie == "charlie\n"
        ));
    }
    // ANCHOR_END: test_length_protocol

    // ANCHOR: test_length_protocol_every_split
    /// The echo is the input, at every split point, the empty frame and newlines included.
    #[actix::test]
    async fn length_protocol_echoes_at_every_split() {
        let input = frames(&[b"alpha", b"", b"bravo\ncharlie", b"SWITCH\n"]);
        for chunking in Chunking::every(input.len()) {
            let (protocol, mut events) = length_protocol();
            let mock = MockTransport::connect(protocol).await;
            mock.feed_chunked(input.clone(), &chunking).await;
            assert_eq!(mock.written(), input, "{chunking:?}");
            assert!(!mock.is_closing());
            let echoed: Vec<_> = reported(&mut events)
                .into_iter()
                .filter_map(|event| match event {
                    ServerEvent::Frame(frame) => Some(frame),
                    _ => None,
                })
                .collect();
            assert_eq!(echoed, ["alpha", "", "bravo\ncharlie", "SWITCH\n"]);
        }
    }
    // ANCHOR_END: test_length_protocol_every_split

    /// A length over `MAX_FRAME` closes the connection without waiting for the frame, and the
    /// frames before it are still echoed, however the bytes are cut.
    #[actix::test]
    async fn length_protocol_closes_on_a_frame_too_long() {
        let mut input = BytesMut::from(&frames(&[b"ok"])[..]);
        input.put_u32(u32::try_from(MAX_FRAME + 1).expect("small"));
        input.put_slice(b"never");
        let input = input.freeze();
        for chunking in Chunking::every(input.len()) {
            let (protocol, _events) = length_protocol();
            let mock = MockTransport::connect(protocol).await;
            mock.feed_chunked(input.clone(), &chunking).await;
            assert_eq!(mock.written(), frames(&[b"ok"]), "{chunking:?}");
            assert_eq!(mock.ending(), Some(Ending::Closed), "{chunking:?}");
        }
    }

    const INJECTED: &str = "INJECTED\n";

    fn start_tls_gate() -> (StartTlsGate, UnboundedReceiver<ServerEvent>) {
        let acceptor = SelfSigned::localhost()
            .and_then(|cert| cert.acceptor())
            .expect("a certificate for localhost");
        let (report, events) = reports();
        (StartTlsGate { acceptor, report }, events)
    }

    /// What became of an upgrade asked for on the mock.
    #[derive(Debug)]
    enum Upgrade {
        /// Bytes came behind the go-ahead (or the `STARTTLS` command) in the delivery that held
        /// it: the protocol handed them over with its `StartTls`, and the transport refused it
        /// with an `Injection` error, which ended the connection.
        Refused { leftover: Bytes },
        /// The go-ahead (or the command) ended its delivery: the `StartTls` carried nothing, the
        /// transport discarded the deliveries it had not made yet, and the upgrade went on.
        Upgraded,
    }

    /// What happens to an upgrade after the first `end` bytes of `input`, cut as `chunking`
    /// says.
    fn expected_upgrade(input: &Bytes, end: usize, chunking: &Chunking) -> Upgrade {
        let leftover = leftover_at(input, end, chunking);
        if leftover.is_empty() {
            Upgrade::Upgraded
        } else {
            Upgrade::Refused { leftover }
        }
    }

    /// Whether `err` is the `Injection` error of a refused `StartTls`.
    fn is_injection(err: &Option<io::Error>) -> bool {
        err.as_ref().and_then(TlsError::of).map(TlsError::kind) == Some(TlsErrorKind::Injection)
    }

    /// `STARTTLS`, then a line injected behind it, at every split point. `READY` goes out in
    /// plaintext, then `StartTls` with what the gate had not decoded, then the switch to the
    /// line protocol. Where the injected line reached the gate in the delivery that held the
    /// command, the `StartTls` carries it and is refused: the connection ends with the
    /// `Injection` error (heard by the line protocol, attached by then). Where it came in a
    /// later delivery, the transport had not delivered it when it took the `StartTls`: it is
    /// discarded, the upgrade goes on, and the line protocol answers what comes after.
    #[actix::test]
    async fn start_tls_gate_refuses_plaintext_behind_the_command_and_discards_what_comes_later() {
        let input = Bytes::from(format!("STARTTLS\n{INJECTED}"));
        let command_end = STARTTLS_COMMAND.len() + 1;
        let mut upgraded = Vec::new();
        for chunking in Chunking::every(input.len()) {
            let expected = expected_upgrade(&input, command_end, &chunking);
            let (gate, mut events) = start_tls_gate();
            let mock = MockTransport::connect(gate).await;
            mock.feed_chunked(input.clone(), &chunking).await;

            let commands = mock.take_commands();
            let [
                Sent::Write(ready),
                Sent::StartTls {
                    plaintext: BufferedPlaintext::Discard,
                    leftover: tls_leftover,
                },
                Sent::SetProtocol {
                    protocol,
                    leftover: handed_over,
                },
            ] = &commands[..]
            else {
                panic!("{chunking:?}: {:?}", names(&commands));
            };
            assert_eq!(ready, "READY\n", "{chunking:?}");
            assert!(handed_over.is_empty(), "{chunking:?}");
            assert!(protocol.downcast::<ProtocolActor<LineProtocol>>().is_some());
            let seen = reported(&mut events);
            match expected {
                Upgrade::Refused { leftover: injected } => {
                    assert_eq!(tls_leftover, &injected, "{chunking:?}");
                    assert_eq!(mock.ending(), Some(Ending::Lost), "{chunking:?}");
                    assert!(
                        matches!(
                            &seen[..],
                            [
                                ServerEvent::Connected(_),
                                ServerEvent::Upgrading,
                                // The line protocol the gate switched to: its `connection_made`,
                                // then the end, once `READY` went out.
                                ServerEvent::Connected(_),
                                ServerEvent::Lost(err),
                            ] if is_injection(err)
                        ),
                        "{chunking:?}: {seen:?}"
                    );
                    assert_eq!(mock.written(), "READY\n", "{chunking:?}");
                }
                Upgrade::Upgraded => {
                    upgraded.push(chunking.clone());
                    assert!(tls_leftover.is_empty(), "{chunking:?}");
                    assert_eq!(mock.ending(), None, "{chunking:?}");
                    mock.feed("after\n").await;
                    assert_eq!(mock.written(), "READY\nAFTER\n", "{chunking:?}");
                    let mut seen = seen;
                    seen.extend(reported(&mut events));
                    assert!(
                        matches!(
                            &seen[..],
                            [
                                ServerEvent::Connected(_),
                                ServerEvent::Upgrading,
                                ServerEvent::Connected(_),
                                ServerEvent::Line(line),
                            ] if line == "after"
                        ),
                        "{chunking:?}: {seen:?}"
                    );
                }
            }
        }
        // Only the cuts right behind the command's newline upgrade.
        assert_eq!(
            upgraded,
            [Chunking::Bytewise, Chunking::SplitAt(command_end)]
        );
    }

    /// Anything but `STARTTLS` first gets `STARTTLS first` and a close; a line that is not
    /// UTF-8, or too long, is closed on without an answer.
    #[actix::test]
    async fn start_tls_gate_refuses_anything_else() {
        let cases: [(Bytes, &str); 3] = [
            (Bytes::from_static(b"HELO\nSTARTTLS\n"), "STARTTLS first\n"),
            (Bytes::from_static(b"\xffSTARTTLS\n"), ""),
            (Bytes::from(vec![b'S'; MAX_LINE + 1]), ""),
        ];
        for (input, answer) in cases {
            for chunking in [Chunking::Whole, Chunking::Bytewise, Chunking::SplitAt(4)] {
                let (gate, _events) = start_tls_gate();
                let mock = MockTransport::connect(gate).await;
                mock.feed_chunked(input.clone(), &chunking).await;
                assert_eq!(mock.written(), answer, "{chunking:?}");
                assert_eq!(mock.ending(), Some(Ending::Closed), "{chunking:?}");
                assert!(!mock.command_names().contains(&"StartTls"));
            }
        }
    }

    fn start_tls_client() -> (StartTlsClient, UnboundedReceiver<StartTlsClientEvent>) {
        let connector = SelfSigned::localhost()
            .and_then(|cert| cert.connector())
            .expect("a connector trusting a certificate for localhost");
        let (report, events) = reports();
        let client = StartTlsClient {
            connector,
            upgrading: false,
            report,
        };
        (client, events)
    }

    /// The client's side, at every split point of a go-ahead with a line injected behind it.
    /// Where the injected bytes came in the delivery that held `READY`, the client hands them
    /// over with its `StartTls`, which is refused with an `Injection` error, and the connection
    /// ends with it; nothing more is written. Where they came later, the transport discards
    /// them, the upgrade goes on, and the client's codec reads the lines that come over TLS.
    #[actix::test]
    async fn start_tls_client_refuses_plaintext_behind_the_go_ahead_and_upgrades_without() {
        let input = Bytes::from(format!("{STARTTLS_READY}\n{INJECTED}"));
        let go_ahead_end = STARTTLS_READY.len() + 1;
        let mut upgraded = Vec::new();
        for chunking in Chunking::every(input.len()) {
            let expected = expected_upgrade(&input, go_ahead_end, &chunking);
            let (client, mut events) = start_tls_client();
            let mock = MockTransport::connect(client).await;
            assert_eq!(mock.written(), "STARTTLS\n");
            mock.feed_chunked(input.clone(), &chunking).await;

            let commands = mock.take_commands();
            let [
                Sent::Write(command),
                Sent::StartTls {
                    plaintext: BufferedPlaintext::Discard,
                    leftover,
                },
            ] = &commands[..]
            else {
                panic!("{chunking:?}: {:?}", names(&commands));
            };
            assert_eq!(command, "STARTTLS\n");
            let seen = reported(&mut events);
            match expected {
                Upgrade::Refused { leftover: injected } => {
                    assert_eq!(leftover, &injected, "{chunking:?}");
                    assert_eq!(mock.ending(), Some(Ending::Lost), "{chunking:?}");
                    assert!(
                        matches!(
                            &seen[..],
                            [
                                StartTlsClientEvent::GoAhead,
                                StartTlsClientEvent::Lost(err),
                            ] if is_injection(err)
                        ),
                        "{chunking:?}: {seen:?}"
                    );
                }
                Upgrade::Upgraded => {
                    upgraded.push(chunking.clone());
                    assert!(leftover.is_empty(), "{chunking:?}");
                    assert_eq!(mock.ending(), None, "{chunking:?}");
                    mock.feed("HELLO\n").await;
                    let mut seen = seen;
                    seen.extend(reported(&mut events));
                    assert!(
                        matches!(
                            &seen[..],
                            [
                                StartTlsClientEvent::GoAhead,
                                StartTlsClientEvent::Upgraded,
                                StartTlsClientEvent::Line(line),
                            ] if line == "HELLO"
                        ),
                        "{chunking:?}: {seen:?}"
                    );
                }
            }
            assert_eq!(mock.written(), "STARTTLS\n", "{chunking:?}");
        }
        assert_eq!(
            upgraded,
            [Chunking::Bytewise, Chunking::SplitAt(go_ahead_end)]
        );
    }

    /// A first line that is not the go-ahead: no `StartTls`, a close, and nothing reported
    /// but the end.
    #[actix::test]
    async fn start_tls_client_closes_without_a_go_ahead() {
        let (client, mut events) = start_tls_client();
        let mock = MockTransport::connect(client).await;
        mock.feed("NO\nREADY\n").await;
        assert_eq!(mock.command_names(), ["Write", "Close"]);
        assert_eq!(mock.ending(), Some(Ending::Closed));
        let seen = reported(&mut events);
        assert!(
            matches!(&seen[..], [StartTlsClientEvent::Lost(None)]),
            "{seen:?}"
        );
    }

    fn http_upgrade() -> (HttpUpgrade, UnboundedReceiver<ServerEvent>) {
        let (report, events) = reports();
        (HttpUpgrade { report }, events)
    }

    fn upgrade_request(version: &str) -> String {
        format!(
            "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {WEBSOCKET_KEY}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
        )
    }

    /// An unmasked server frame, as `SmallFrames` encodes it.
    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x80 | opcode, payload.len() as u8];
        frame.extend_from_slice(payload);
        frame
    }

    /// The upgrade request and the first frame in one stream, cut at every point: `101` with
    /// RFC 6455's accept key, `SetProtocol` with exactly the bytes behind the head, and the
    /// frame echoed by the WebSocket protocol.
    #[actix::test]
    async fn http_upgrade_switches_with_the_frame_behind_the_head_at_every_split() {
        let request = upgrade_request("13");
        let hello = WsFrame::new(OP_TEXT, WEBSOCKET_HELLO).masked([0x37, 0xfa, 0x21, 0x3d]);
        let input = Bytes::from([request.as_bytes(), &hello[..]].concat());
        let switching = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {WEBSOCKET_ACCEPT}\r\n\r\n"
        );
        let expected = [
            switching.as_bytes(),
            &server_frame(OP_TEXT, WEBSOCKET_HELLO.as_bytes()),
        ]
        .concat();
        for chunking in Chunking::every(input.len()) {
            let (protocol, mut events) = http_upgrade();
            let mock = MockTransport::connect(protocol).await;
            mock.feed_chunked(input.clone(), &chunking).await;

            let expected_leftover = leftover_at(&input, request.len(), &chunking);
            let commands = mock.take_commands();
            match &commands[..] {
                [
                    Sent::Write(answer),
                    Sent::SetProtocol { protocol, leftover },
                    Sent::Write(_),
                ] => {
                    assert_eq!(answer, switching.as_bytes());
                    assert_eq!(leftover, &expected_leftover, "{chunking:?}");
                    assert!(
                        protocol
                            .downcast::<ProtocolActor<WebSocketEcho>>()
                            .is_some()
                    );
                }
                _ => panic!("{chunking:?}: {:?}", names(&commands)),
            }
            assert_eq!(mock.written(), expected, "{chunking:?}");
            let seen = reported(&mut events);
            assert!(
                matches!(
                    &seen[..],
                    [
                        ServerEvent::Connected(_),
                        ServerEvent::WebSocketUpgrade,
                        ServerEvent::Connected(_),
                        ServerEvent::WebSocketMessage(message),
                    ] if message == WEBSOCKET_HELLO
                ),
                "{chunking:?}: {seen:?}"
            );
        }
    }

    /// A request that is not a version-13 WebSocket upgrade of `/ws` gets a `404` and a close;
    /// a head that never ends gets a close.
    #[actix::test]
    async fn http_upgrade_refuses_other_requests() {
        let cases = [
            (
                "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(),
                NOT_FOUND,
            ),
            (upgrade_request("8"), NOT_FOUND),
            (upgrade_request("13").replace("GET", "PUT"), NOT_FOUND),
            ("x".repeat(MAX_LINE + 1), ""),
        ];
        for (input, answer) in cases {
            let (protocol, _events) = http_upgrade();
            let mock = MockTransport::connect(protocol).await;
            mock.feed_chunked(input.clone(), &Chunking::Bytewise).await;
            assert_eq!(mock.written(), answer, "{input:?}");
            assert_eq!(mock.ending(), Some(Ending::Closed), "{input:?}");
            assert!(!mock.command_names().contains(&"SetProtocol"));
        }
    }

    fn websocket_echo() -> WebSocketEcho {
        let (report, _events) = reports();
        WebSocketEcho { report }
    }

    /// Text is echoed unmasked, other data frames are ignored, and a close is answered with a
    /// close before the connection closes, and nothing after it; at every split point.
    #[actix::test]
    async fn websocket_echo_echoes_text_and_answers_close() {
        let code = 1000u16.to_be_bytes();
        let input = [
            &WsFrame::new(OP_TEXT, "hi").masked([1, 2, 3, 4])[..],
            &WsFrame::new(0x2, "binary").masked([5, 6, 7, 8])[..],
            &WsFrame::new(OP_CLOSE, code.to_vec()).masked([9, 9, 9, 9])[..],
            &WsFrame::new(OP_TEXT, "after close").masked([1, 1, 1, 1])[..],
        ]
        .concat();
        let expected = [server_frame(OP_TEXT, b"hi"), server_frame(OP_CLOSE, &code)].concat();
        for chunking in Chunking::every(input.len()) {
            let mock = MockTransport::connect(websocket_echo()).await;
            mock.feed_chunked(input.clone(), &chunking).await;
            assert_eq!(mock.written(), expected, "{chunking:?}");
            assert_eq!(
                mock.command_names(),
                ["Write", "Write", "Close"],
                "{chunking:?}"
            );
        }
    }

    /// A fragmented frame, or one longer than this cut-down codec reads, closes the connection.
    #[actix::test]
    async fn websocket_echo_closes_on_a_frame_it_cannot_read() {
        let fragment = vec![0x01, 0x80 | 2, 0, 0, 0, 0, b'h', b'i'];
        let long = vec![0x81, 0x80 | 126, 0, 200];
        for input in [fragment, long] {
            let mock = MockTransport::connect(websocket_echo()).await;
            mock.feed(input).await;
            assert_eq!(mock.written(), "");
            assert_eq!(mock.command_names(), ["Close"]);
        }
    }

    /// The producer sets its limits first, writes until `PauseWriting`, writes nothing while
    /// paused, goes on at `ResumeWriting`, and closes once it has written `TO_SEND` bytes.
    #[actix::test]
    async fn producer_waits_from_pause_writing_to_resume_writing() {
        let (report, mut events) = reports();
        let producer = Producer {
            chunk: Bytes::from(vec![b'x'; CHUNK_SIZE]),
            sent: 0,
            report,
        };
        // `start`, not `connect`: `connect` would wait for the producer to be idle, which it is
        // only once it has written everything.
        let mock = MockTransport::builder().start(producer);
        mock.pause_writing().await;

        let sent = match events.try_recv() {
            Ok(ProducerEvent::Paused { sent }) => sent,
            other => panic!("expected Paused, got {other:?}"),
        };
        let commands = mock.take_commands();
        assert!(matches!(
            commands.first(),
            Some(Sent::SetWriteBufferLimits {
                high: Some(HIGH_WATER_MARK),
                low: Some(LOW_WATER_MARK),
            })
        ));
        // What it wrote stays in the write buffer: the peer does not read. The chunk counted
        // last waits for room.
        let accepted = |mock: &MockTransport| mock.writes().iter().map(Bytes::len).sum::<usize>();
        assert_eq!(accepted(&mock) + CHUNK_SIZE, sent);
        assert!(sent < TO_SEND, "paused before the end");

        mock.settle().await;
        assert_eq!(
            accepted(&mock) + CHUNK_SIZE,
            sent,
            "not one byte while paused"
        );

        mock.resume_writing().await;
        mock.protocol_stopped().await;
        assert_eq!(mock.ending(), Some(Ending::Closed));
        assert_eq!(mock.stats().bytes_sent, TO_SEND as u64);
        assert!(mock.writes().iter().all(|write| write.len() <= CHUNK_SIZE));
        let seen = reported(&mut events);
        assert!(
            matches!(
                &seen[..],
                [
                    ProducerEvent::Resumed,
                    ProducerEvent::Done { sent: TO_SEND },
                    ProducerEvent::Lost(None),
                ]
            ),
            "{seen:?}"
        );
    }
}
