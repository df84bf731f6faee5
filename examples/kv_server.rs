//! A line-based key-value store, shaped like a production service: a shared store actor,
//! connection and line-length limits, an idle timeout, logs with a span per connection, and a
//! graceful shutdown with a deadline.
//!
//! ```text
//! cargo run --example kv_server                        # 127.0.0.1:6380
//! cargo run --example kv_server -- --addr 127.0.0.1:0 --workers 2 --max-connections 100 \
//!     --max-line 1024 --idle-timeout 30 --grace 5
//! RUST_LOG=debug cargo run --example kv_server         # one log line per request
//! nc 127.0.0.1 6380
//! ```
//!
//! The protocol: one request per line, one reply line per request, in the order of the requests,
//! however many a client sends without waiting (pipelining).
//!
//! | request | reply |
//! |---|---|
//! | `SET key value` | `OK` (the value is the rest of the line, spaces included) |
//! | `GET key` | `VALUE value`, or `NOT_FOUND` |
//! | `DEL key` | `OK`, or `NOT_FOUND` |
//! | `QUIT` | `BYE`, then the server closes the connection; what follows is ignored |
//! | anything else | `ERR ...`, and the session goes on |
//!
//! Command names are case-insensitive; a line may end in `\n` or `\r\n`. A line longer than
//! `--max-line` bytes gets `ERR line too long (max N bytes)` and is skipped, and the session
//! goes on; so does a line that is not UTF-8 (`ERR request is not valid UTF-8`). A client that
//! sends nothing for `--idle-timeout` seconds gets `ERR idle timeout` and the server closes the
//! connection. At the client's EOF, the server answers a last line without its newline, then
//! closes.
//!
//! It prints exactly one line to stdout, `listening on ADDR` with the address really bound
//! (useful with port 0), once it accepts connections. Logs go to stderr, at `info` unless
//! `RUST_LOG` says otherwise: one line per connection and disconnection, and one per request at
//! `debug`, each with the connection's `id` and `peer`. On SIGINT or SIGTERM it stops accepting,
//! closes every connection gracefully (the replies already written are delivered, then EOF),
//! aborts the connections still open after `--grace` seconds (or at a second signal),
//! logs the server's counters and exits 0.

use std::{
    collections::HashMap,
    fmt,
    io::{self, IsTerminal},
    process::ExitCode,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use actix::prelude::*;
use clap::Parser;
use switchboard::{
    ServerHandle,
    prelude::*,
    server::{DEFAULT_MAX_CONNECTIONS, DEFAULT_SHUTDOWN_GRACE},
    stream::DEFAULT_WRITE_STALL_TIMEOUT,
};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::codec::LinesCodecError;
use tracing::{Span, field};
use tracing_subscriber::{EnvFilter, filter::LevelFilter};

/// The longest request line by default, in bytes, without its newline: 64 KiB.
const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// How long a connection may stay silent by default before the server closes it.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

// ANCHOR: args
#[derive(Debug, Parser)]
#[command(about = "A line-based key-value store over TCP")]
struct Args {
    /// The TCP address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:6380")]
    addr: String,
    /// Worker threads connections are spread over (default: one per core; 0: the main thread).
    #[arg(long)]
    workers: Option<usize>,
    /// The most connections served at once; past it, new ones wait in the listen backlog.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// The longest request line, in bytes (without the newline).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LINE)]
    max_line: usize,
    /// Close a connection the client has sent nothing on for this long.
    #[arg(long, value_name = "SECS", default_value_t = Secs(DEFAULT_IDLE_TIMEOUT))]
    idle_timeout: Secs,
    /// Abort a connection whose replies make no progress towards the client for this long.
    #[arg(long, value_name = "SECS", default_value_t = Secs(DEFAULT_WRITE_STALL_TIMEOUT))]
    write_stall_timeout: Secs,
    /// On SIGINT or SIGTERM, how long to wait for the connections to close before aborting them.
    #[arg(
        long,
        alias = "shutdown-grace",
        value_name = "SECS",
        default_value_t = Secs(DEFAULT_SHUTDOWN_GRACE)
    )]
    grace: Secs,
}
// ANCHOR_END: args

/// A positive number of seconds on the command line, fractions allowed (`0.5`).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Secs(Duration);

impl FromStr for Secs {
    type Err = String;

    fn from_str(arg: &str) -> Result<Self, Self::Err> {
        let secs: f64 = arg
            .parse()
            .map_err(|err| format!("{arg:?} is not a number of seconds: {err}"))?;
        Duration::try_from_secs_f64(secs)
            .ok()
            .filter(|duration| !duration.is_zero())
            .map(Secs)
            .ok_or_else(|| format!("{arg:?} is not a positive number of seconds"))
    }
}

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

// ANCHOR: messages
/// A request the store answers.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Set { key: String, value: String },
    Get { key: String },
    Del { key: String },
}

/// A reply line, without its newline.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reply {
    Ok,
    Value(String),
    NotFound,
    Bye,
    Err(String),
}

/// The commands of one chunk of requests, in order; the store answers them all, in the same
/// order, in one message: one round trip between threads per chunk, not per request.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Reply>")]
struct Execute {
    commands: Vec<Command>,
    /// The span of the connection the commands come from, so the store's logs carry its fields.
    span: Span,
}
// ANCHOR_END: messages

// ANCHOR: store
/// The one store every connection shares. It lives on the main thread; connections on the
/// worker threads `send` it their commands and await the replies.
#[derive(Debug, Default)]
struct Store {
    entries: HashMap<String, String>,
}

impl Actor for Store {
    type Context = Context<Self>;
}

impl Handler<Execute> for Store {
    type Result = MessageResult<Execute>;

    /// Runs the commands in order. The span makes the log lines of another thread's connection
    /// say which connection they are about.
    fn handle(&mut self, msg: Execute, _: &mut Context<Self>) -> Self::Result {
        let _entered = msg.span.entered();
        let replies = msg
            .commands
            .into_iter()
            .map(|command| {
                tracing::debug!(%command, "request");
                match command {
                    Command::Set { key, value } => {
                        self.entries.insert(key, value);
                        Reply::Ok
                    }
                    Command::Get { key } => self
                        .entries
                        .get(&key)
                        .map_or(Reply::NotFound, |value| Reply::Value(value.clone())),
                    Command::Del { key } => match self.entries.remove(&key) {
                        Some(_) => Reply::Ok,
                        None => Reply::NotFound,
                    },
                }
            })
            .collect();
        MessageResult(replies)
    }
}
// ANCHOR_END: store

/// What the logs show of a command: the key, and only the size of a value.
impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Set { key, value } => write!(f, "SET {key} ({} bytes)", value.len()),
            Command::Get { key } => write!(f, "GET {key}"),
            Command::Del { key } => write!(f, "DEL {key}"),
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Ok => f.write_str("OK"),
            Reply::Value(value) => write!(f, "VALUE {value}"),
            Reply::NotFound => f.write_str("NOT_FOUND"),
            Reply::Bye => f.write_str("BYE"),
            Reply::Err(why) => write!(f, "ERR {why}"),
        }
    }
}

/// One line of a client, parsed: what goes to the store, and what the session answers itself.
#[derive(Debug)]
enum Request {
    Store(Command),
    /// A mistake, answered with `ERR` without asking the store.
    Invalid(String),
    Quit,
}

/// Parses one request line.
fn parse(line: &str) -> Request {
    let (name, rest) = line.split_once(' ').unwrap_or((line, ""));
    let key = || (!rest.is_empty() && !rest.contains(' ')).then(|| rest.to_owned());
    let usage = |usage: &str| Request::Invalid(format!("usage: {usage}"));
    match name.to_ascii_uppercase().as_str() {
        "SET" => match rest.split_once(' ') {
            Some((key, value)) if !key.is_empty() => Request::Store(Command::Set {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
            _ => usage("SET key value"),
        },
        "GET" => key().map_or_else(
            || usage("GET key"),
            |key| Request::Store(Command::Get { key }),
        ),
        "DEL" => key().map_or_else(
            || usage("DEL key"),
            |key| Request::Store(Command::Del { key }),
        ),
        "QUIT" if rest.is_empty() => Request::Quit,
        "QUIT" => usage("QUIT"),
        "" => Request::Invalid("empty request".to_owned()),
        _ => Request::Invalid(format!(
            "unknown command {name:?} (try SET, GET, DEL or QUIT)"
        )),
    }
}

// ANCHOR: session
/// The protocol of one connection: it parses lines, has the store answer them and writes the
/// replies, in order.
struct Session {
    /// `conn{id=7 peer=127.0.0.1:51234}`: entered by every callback that logs, so every log
    /// line about this connection says which one it is.
    span: Span,
    store: Addr<Store>,
    max_line: usize,
    /// Requests not yet sent to the store, in order.
    requests: Vec<Request>,
    /// Requests are at the store: reading is paused until their replies are written.
    busy: bool,
    /// Set by `QUIT` and by the idle timeout: the connection is closing, ignore what follows.
    done: bool,
    /// The client sent EOF: close once every reply is written.
    eof: bool,
    /// Requests answered, for the disconnection's log line.
    answered: u64,
}

impl Session {
    /// The protocol of connection `id`, made by the server's factory.
    fn new(id: u64, store: Addr<Store>, max_line: usize) -> Session {
        Session {
            // The peer's address is recorded once `connection_made` brings the transport to ask.
            span: tracing::info_span!("conn", id, peer = field::Empty),
            store,
            max_line,
            requests: Vec::new(),
            busy: false,
            done: false,
            eof: false,
            answered: 0,
        }
    }
}

impl Protocol for Session {
    type Codec = LinesCodec;

    /// Sets the line limit, and asks the transport for the peer's address. Reading stays
    /// paused until the address is in the span, so no log line of this connection lacks it.
    fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
        cx.set_codec(LinesCodec::new_with_max_length(self.max_line));
        cx.pause_reading();
        let peer = cx.transport().peername();
        cx.spawn(peer, |peer, session, cx| {
            if let Some(peer) = peer {
                session.span.record("peer", field::display(peer));
            }
            let _entered = session.span.clone().entered();
            tracing::info!("connected");
            cx.resume_reading();
        });
    }
    // ANCHOR_END: session

    // ANCHOR: data
    fn data_received(&mut self, line: String, cx: &mut Ctx<'_, Self>) {
        self.answer(parse(&line), cx);
    }

    /// A line over `--max-line` bytes, or not UTF-8: `LinesCodec` skips it, and the session
    /// answers `ERR` in its turn and goes on.
    fn decode_error(&mut self, err: LinesCodecError, cx: &mut Ctx<'_, Self>) {
        let why = match err {
            LinesCodecError::MaxLineLengthExceeded => {
                let _entered = self.span.clone().entered();
                tracing::info!(max = self.max_line, "line too long: skipped");
                format!("line too long (max {} bytes)", self.max_line)
            }
            LinesCodecError::Io(_) => "request is not valid UTF-8".to_owned(),
        };
        self.answer(Request::Invalid(why), cx);
    }

    /// The client is done sending; a last line without its newline came just before, through
    /// `data_received`. If every reply is written, the transport closes now (`false`);
    /// otherwise the connection stays open and the session closes it after the last reply.
    fn eof_received(&mut self, _: &mut Ctx<'_, Self>) -> bool {
        let _entered = self.span.clone().entered();
        tracing::debug!("the client sent EOF");
        self.eof = true;
        self.busy
    }
    // ANCHOR_END: data

    // ANCHOR: idle
    /// Nothing was read or written for `--idle-timeout` (the transport's idle timeout, set in
    /// `main`): say so, and close. A client waiting for the store is not idle.
    fn timed_out(&mut self, timeout: Timeout, cx: &mut Ctx<'_, Self>) {
        if self.busy {
            return;
        }
        let _entered = self.span.clone().entered();
        tracing::info!(timeout = ?timeout.duration(), "idle timeout: closing");
        self.finish(Reply::Err("idle timeout".to_owned()), cx);
    }
    // ANCHOR_END: idle

    // ANCHOR: lost
    /// The last callback: `None` after a clean close (ours or the client's), `Some(err)` after
    /// a reset, an I/O error or a write stall.
    fn connection_lost(&mut self, err: Option<io::Error>, _: &mut Ctx<'_, Self>) {
        let _entered = self.span.clone().entered();
        match err {
            None => tracing::info!(answered = self.answered, "disconnected"),
            Some(err) => tracing::info!(answered = self.answered, %err, "disconnected"),
        }
    }
}
// ANCHOR_END: lost

// ANCHOR: answer
/// Where the reply to one request comes from.
enum Answer {
    /// The store's next reply.
    Store,
    /// The session's own: an `ERR` for a mistake, `BYE` for `QUIT`.
    Now(Reply),
}

impl Session {
    /// Queues `request` to be answered in its turn. The first request of a chunk pauses
    /// reading and schedules the store's round trip for once the chunk is decoded, so the
    /// chunk's other requests join it.
    fn answer(&mut self, request: Request, cx: &mut Ctx<'_, Self>) {
        if self.done {
            return;
        }
        self.done = matches!(request, Request::Quit);
        self.requests.push(request);
        if !self.busy {
            self.busy = true;
            cx.pause_reading();
            // A ready future: its continuation runs after this callback and the chunk's others.
            cx.spawn(async {}, |(), session, cx| session.execute(cx));
        }
    }

    /// Has the store answer the queued requests, writes every reply in the order of the
    /// requests, then goes on with the requests queued meanwhile, if any. Once none is left,
    /// reading resumes (or, after the client's EOF, the connection closes).
    ///
    /// Reading stays paused while the store works: the transport delivers nothing new, not the
    /// next chunk, not the EOF, so the replies of one chunk cannot be overtaken by the next
    /// one's. It stops reading the socket once its read buffer is full, so a client that
    /// pipelines faster than the store answers is slowed down by TCP, end to end.
    fn execute(&mut self, cx: &mut Ctx<'_, Self>) {
        let requests = std::mem::take(&mut self.requests);
        if requests.is_empty() {
            self.busy = false;
            if self.eof {
                cx.close();
            } else {
                cx.resume_reading();
            }
            return;
        }
        // The commands go to the store, in order; the session's own answers keep their places.
        let mut commands = Vec::new();
        let answers: Vec<Answer> = requests
            .into_iter()
            .map(|request| match request {
                Request::Store(command) => {
                    commands.push(command);
                    Answer::Store
                }
                Request::Invalid(why) => {
                    tracing::debug!(parent: &self.span, %why, "invalid request");
                    Answer::Now(Reply::Err(why))
                }
                Request::Quit => Answer::Now(Reply::Bye),
            })
            .collect();
        let executed = self.store.send(Execute {
            commands,
            span: self.span.clone(),
        });
        cx.spawn(executed, move |result, session, cx| {
            let _entered = session.span.clone().entered();
            match result {
                Ok(replies) => session.write_replies(answers, replies, cx),
                Err(err) => {
                    tracing::error!(%err, "the store is gone: closing");
                    session.finish(Reply::Err("internal error".to_owned()), cx);
                }
            }
            session.execute(cx);
        });
    }

    /// Puts the store's `replies` in their places among the session's own answers, and writes
    /// them all with one `Write`; closes after `BYE`.
    fn write_replies(&mut self, answers: Vec<Answer>, replies: Vec<Reply>, cx: &mut Ctx<'_, Self>) {
        let mut from_store = replies.into_iter();
        let out: Vec<Reply> = answers
            .into_iter()
            .map(|answer| match answer {
                Answer::Store => from_store.next().unwrap_or(Reply::Err("no reply".into())),
                Answer::Now(reply) => reply,
            })
            .collect();
        self.answered += out.len() as u64;
        let text: String = out.iter().map(|reply| format!("{reply}\n")).collect();
        cx.write(text);
        if out.last() == Some(&Reply::Bye) {
            tracing::debug!("QUIT: closing");
            cx.close();
        }
    }

    /// Writes a last reply and closes (flushing what is buffered first).
    fn finish(&mut self, reply: Reply, cx: &mut Ctx<'_, Self>) {
        self.done = true;
        cx.send(reply.to_string());
        cx.close();
    }
}
// ANCHOR_END: answer

#[actix::main]
async fn main() -> io::Result<ExitCode> {
    // ANCHOR: logging
    // Logs to stderr, at `info` unless RUST_LOG says otherwise (`RUST_LOG=debug`,
    // `RUST_LOG=kv_server=debug,switchboard=warn`); colours only on a terminal.
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_env_filter(filter)
        .init();
    // ANCHOR_END: logging
    let args = Args::parse();

    // Both signals are caught from before the `listening on` line: a client that sends one as
    // soon as it reads the line finds the handlers in place.
    let mut signals = Signals::catch()?;

    // ANCHOR: serve
    // The transport tells the session (`timed_out`) once nothing was read or written for
    // `--idle-timeout`.
    let stream = StreamConfig::default()
        .write_stall_timeout(Some(args.write_stall_timeout.0))
        .idle_timeout(Some(args.idle_timeout.0))?;
    let mut options = ServerOptions::default()
        .max_connections(args.max_connections)
        .stream(stream);
    if let Some(workers) = args.workers {
        options = options.workers(workers);
    }
    let workers = options.workers;

    // One store for the whole server, started here on the main thread. The factory runs on the
    // worker that serves each connection; it gives each session a clone of the store's `Addr`.
    let store = Store::default().start();
    let max_line = args.max_line;
    let next_id = Arc::new(AtomicU64::new(1));
    let factory = move || {
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        Session::new(id, store.clone(), max_line)
    };

    let server = tcp::serve_with(&args.addr, options, factory).await?;
    let addr = &server.addresses()[0];
    tracing::info!(
        %addr,
        workers,
        max_connections = args.max_connections,
        max_line = args.max_line,
        idle_timeout = %args.idle_timeout,
        "serving"
    );
    println!("listening on {addr}");
    // ANCHOR_END: serve

    let signal = signals.next().await;
    shut_down(&server, signal, args.grace.0, &mut signals).await;
    Ok(ExitCode::SUCCESS)
}

/// SIGINT (Ctrl-C) and SIGTERM, caught.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn catch() -> io::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Waits for the next one; says which came.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

// ANCHOR: shutdown
/// The graceful shutdown: stop accepting, close every connection (each flushes the replies it
/// has), wait for them up to `grace`, abort what is left, and log the counters. A second signal
/// cuts the grace period short.
async fn shut_down(server: &ServerHandle, signal: &str, grace: Duration, signals: &mut Signals) {
    let live = server.stats().await.connections;
    tracing::info!(
        signal,
        connections = live,
        ?grace,
        "shutting down: no new connections"
    );
    let report = tokio::select! {
        report = server.shutdown(grace) => report,
        name = signals.next() => {
            tracing::warn!(signal = name, "second signal: aborting the connections");
            server.shutdown(Duration::ZERO).await
        }
    };
    // `shutdown` returned once every session had handled its `ConnectionLost` (and logged its
    // `disconnected` line), so nothing is lost when `main` returns now.
    let stats = server.stats().await;
    tracing::info!(
        accepted = stats.accepted,
        aborted = report.aborted,
        "server closed"
    );
}
// ANCHOR_END: shutdown

#[cfg(test)]
mod tests {
    //! The session and the store on mock transports: no socket, no server.

    use switchboard::testing::{Chunking, Ending, MockTransport};

    use super::*;

    /// The longest line of the sessions under test.
    const MAX_LINE: usize = 32;

    // ANCHOR: test_pipelining
    // Requests sent together, the store's and the session's own (mistakes) mixed, are answered
    // in order, whatever the cuts between the chunks.
    #[actix::test]
    async fn test_pipelining() {
        let input = "SET a 1\nbogus\nGET a\nGET\nDEL a\nGET a\n";
        let expected = "OK\nERR unknown command \"bogus\" (try SET, GET, DEL or QUIT)\n\
                        VALUE 1\nERR usage: GET key\nOK\nNOT_FOUND\n";
        for chunking in Chunking::every(input.len()) {
            let store = Store::default().start();
            let mock = MockTransport::connect(Session::new(1, store, MAX_LINE)).await;
            mock.feed_chunked(input, &chunking).await;
            assert_eq!(mock.written(), expected, "{chunking:?}");
            assert!(!mock.is_closing(), "{chunking:?}");
        }
    }
    // ANCHOR_END: test_pipelining

    /// The replies of one chunk go out as one write.
    #[actix::test]
    async fn one_write_per_chunk() {
        let store = Store::default().start();
        let mock = MockTransport::connect(Session::new(1, store, MAX_LINE)).await;
        mock.feed("SET k v w\nGET k\nGET nope\n").await;
        assert_eq!(mock.writes(), ["OK\nVALUE v w\nNOT_FOUND\n"]);
    }

    /// `QUIT` answers `BYE` and closes; what follows it is ignored.
    #[actix::test]
    async fn quit_says_bye_and_closes() {
        let store = Store::default().start();
        let mock = MockTransport::connect(Session::new(1, store, MAX_LINE)).await;
        mock.feed("GET a\nquit\nSET a 1\n").await;
        assert_eq!(mock.written(), "NOT_FOUND\nBYE\n");
        assert_eq!(mock.ending(), Some(Ending::Closed));
    }

    /// A line over the limit, or not UTF-8, gets an error and is skipped; the next one is
    /// answered.
    #[actix::test]
    async fn a_bad_line_is_an_error_and_the_session_goes_on() {
        let store = Store::default().start();
        let mock = MockTransport::connect(Session::new(1, store, MAX_LINE)).await;
        let mut input = format!("SET k {}\nGET k\n", "x".repeat(40)).into_bytes();
        input.extend_from_slice(b"\xffbad\nSET k v\n");
        mock.feed(input).await;
        assert_eq!(
            mock.written(),
            "ERR line too long (max 32 bytes)\nNOT_FOUND\nERR request is not valid UTF-8\nOK\n"
        );
        assert!(!mock.is_closing());
    }

    /// The connections share one store.
    #[actix::test]
    async fn sessions_share_the_store() {
        let store = Store::default().start();
        let alice = MockTransport::connect(Session::new(1, store.clone(), MAX_LINE)).await;
        let bob = MockTransport::connect(Session::new(2, store, MAX_LINE)).await;
        alice.feed("SET who alice\n").await;
        bob.feed("GET who\n").await;
        assert_eq!(bob.written(), "VALUE alice\n");
    }

    /// At EOF a last line without its newline is answered, then the connection closes: the
    /// session keeps it open until the store has answered, and closes it after the reply.
    #[actix::test]
    async fn eof_answers_the_last_line_then_closes() {
        let store = Store::default().start();
        let mock = MockTransport::connect(Session::new(1, store, MAX_LINE)).await;
        mock.feed("SET a 1\nGET a").await;
        assert_eq!(mock.take_written(), "OK\n");
        assert!(mock.eof().await, "open until the last reply is written");
        mock.expect_written("VALUE 1\n").await;
        mock.protocol_stopped().await;
        assert_eq!(mock.ending(), Some(Ending::Closed));

        // With every reply written, the transport closes at the EOF itself.
        let store = Store::default().start();
        let mock = MockTransport::connect(Session::new(1, store, MAX_LINE)).await;
        mock.feed("SET a 1\n").await;
        assert!(!mock.eof().await);
        assert_eq!(mock.ending(), Some(Ending::ClosedAtEof));
    }

    // ANCHOR: test_idle_timeout
    // A client is told and disconnected once nothing went either way for the idle timeout;
    // requests restart it. The mock's clock moves only with `advance`.
    #[actix::test]
    async fn test_idle_timeout() {
        let timeout = Duration::from_secs(60);
        let store = Store::default().start();
        let mock = MockTransport::builder()
            .idle_timeout(timeout)
            .connect(Session::new(1, store, MAX_LINE))
            .await;
        for _ in 0..4 {
            mock.advance(timeout / 2).await;
            mock.feed("GET a\n").await;
        }
        assert_eq!(mock.take_written(), "NOT_FOUND\n".repeat(4));
        mock.advance(timeout - Duration::from_secs(1)).await;
        assert_eq!(mock.take_written(), "", "not idle for long enough yet");
        mock.advance(Duration::from_secs(1)).await;
        assert_eq!(mock.take_written(), "ERR idle timeout\n");
        mock.protocol_stopped().await;
        assert_eq!(mock.ending(), Some(Ending::Closed));
    }
    // ANCHOR_END: test_idle_timeout

    #[test]
    fn requests_parse() {
        assert!(
            matches!(parse("set k a b"), Request::Store(Command::Set { key, value }) if key == "k" && value == "a b")
        );
        assert!(
            matches!(parse("SET k "), Request::Store(Command::Set { value, .. }) if value.is_empty())
        );
        assert!(matches!(parse("SET k"), Request::Invalid(why) if why == "usage: SET key value"));
        assert!(matches!(parse("GET a b"), Request::Invalid(why) if why == "usage: GET key"));
        assert!(matches!(parse("DEL  "), Request::Invalid(_)));
        assert!(matches!(parse("QUIT"), Request::Quit));
        assert!(matches!(parse(""), Request::Invalid(why) if why == "empty request"));
        assert_eq!("0.5".parse(), Ok(Secs(Duration::from_millis(500))));
        for bad in ["0", "-1", "x", "inf"] {
            assert!(bad.parse::<Secs>().is_err(), "{bad}");
        }
    }
}
