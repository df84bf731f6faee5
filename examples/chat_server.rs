//! A line-based chat room: every line a client sends reaches every other client.
//!
//! It shows many protocols talking to one shared actor: one `Client` protocol actor per
//! connection, spread over the worker threads, and one `Room` actor that knows everyone. Each
//! client is a `Protocol` over tokio-util's `LinesCodec`, which hands it lines; the room writes
//! straight to every client's transport, fire-and-forget, so it never waits for anyone.
//!
//! ```text
//! cargo run --example chat_server                      # 127.0.0.1:7000
//! cargo run --example chat_server -- --addr 127.0.0.1:0 --max-line 256 --write-limit 65536
//! cargo run --example chat_server -- --idle-timeout 60  # drop clients idle for a minute
//! nc 127.0.0.1 7000                                    # in two or more terminals
//! ```
//!
//! What a client sees and says:
//!
//! * on connecting, `* welcome NAME`, with a fresh guest name (`guest1`, `guest2`, ...); the
//!   others see `* NAME joined`;
//! * each line it sends reaches the others as `NAME: text` (empty lines are ignored);
//! * `/nick NEW` renames it: `* you are now NEW` for it, `* OLD is now NEW` for the others. A
//!   name is 1 to 32 letters, digits, `-` or `_`, and not someone else's in any case: while
//!   `alice` is here, `ALICE` and `Alice` are taken, but `alice` may become `Alice`. A name is
//!   shown as its owner typed it;
//! * `/quit` ends its session: `* bye`, then the server closes the connection gracefully;
//! * when it leaves (`/quit`, EOF, a reset), the others see `* NAME left`.
//!
//! Mistakes get a line starting with `* ` and the session goes on: an unknown command, a bad
//! name, a line longer than `--max-line` bytes (`LinesCodec` skips it and carries on with the
//! next line), a line that is not UTF-8.
//!
//! No client can send another a terminal command. Every character a terminal may act on
//! rather than print is written as its Rust escape instead, `\u{HEX}`: the C0 controls but tab
//! (`ESC [2J`, which clears the screen, arrives as `\u{1b}[2J`; a `\r` that would write over
//! the sender's name as `\u{d}`), DEL, the C1 controls (U+0080 to U+009F, which some terminals
//! obey like `ESC`), and the bidi overrides and isolates (U+202A to U+202E, U+2066 to U+2069,
//! which can show a line in another order than it was sent: "Trojan Source"). An escape rather
//! than U+FFFD or nothing, so the others see that something was sent, and what, in plain ASCII.
//! Tab is kept: it only moves the cursor on, and pasted text uses it. A name never holds one of
//! these (it is letters, digits, `-` and `_`), and the errors that quote what a client sent
//! show them escaped too.
//!
//! # Bounds
//!
//! - **Memory.** A client that stops reading cannot make the server buffer without bound, nor
//!   slow the room down: once its transport's write buffer passes `--write-limit` bytes (256 KiB
//!   by default), the client's `pause_writing` is called, and the room drops the client (an
//!   abortive close: what was buffered for it is discarded) and tells the others `* NAME left
//!   (too slow)`. The client overrides `pause_writing`, so the default (stop reading while
//!   writes wait) does not apply to it; the transport's hard maximum (4 MiB, or
//!   `--write-limit` if that is more) stays behind it. A client's line is kept to `--max-line`
//!   bytes, and it sends nothing more to the room until the room has handled its last lines.
//! - **Time.** `--idle-timeout SECS` (300 by default; 0: never) is each connection's idle
//!   timeout: a client that neither sends nor receives a byte for that long (a lurker in a
//!   quiet room, a dead peer, a silent connection that never said anything) is told `* idle
//!   for too long: bye`, the others `* NAME left (idle)`, and the connection closes. A chat
//!   client may well sit silent for minutes while the room talks, and the room's lines keep it
//!   alive; five minutes of silence both ways is no conversation. A stalled write is aborted
//!   after 30 s (the transport's write stall timeout), if the room has not dropped the client
//!   before.
//!
//!
//! It prints exactly one line to stdout, `listening on ADDR` with the address really bound
//! (useful with port 0), once it accepts connections; logs go to stderr (`RUST_LOG=debug`). On
//! SIGINT or SIGTERM it stops accepting, tells everyone `* server shutting down`, closes every
//! connection gracefully, aborts the ones still open after `--grace` seconds (5 by default) or at
//! a second signal, and exits 0.

use std::{
    collections::HashMap,
    io,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use actix::prelude::*;
use clap::Parser;
use switchboard::{DEFAULT_MAX_WRITE_BUFFER, WriteBufferLimits, prelude::*};
use tokio_util::codec::LinesCodecError;

/// The longest line a client may send by default, in bytes, without its newline.
const DEFAULT_MAX_LINE: usize = 1024;

/// How many bytes may wait in a client's write buffer by default before it is dropped as too
/// slow: 256 KiB.
const DEFAULT_WRITE_LIMIT: usize = 256 * 1024;

/// The default of `--idle-timeout`, in seconds.
const DEFAULT_IDLE_TIMEOUT: &str = "300";

/// The longest name, in characters.
const MAX_NAME: usize = 32;

// ANCHOR: escape
/// The bidi formatting characters that override or isolate the direction of the text after
/// them: printed raw, they can show a line in another order than it was sent ("Trojan Source").
const BIDI_CONTROLS: [char; 9] = [
    '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', // LRE RLE PDF LRO RLO
    '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}', // LRI RLI FSI PDI
];

/// `text` as it may reach a terminal: each character a terminal could act on rather than
/// print is replaced by its escape, `\u{1b}` for `ESC`. Those are the controls (C0, DEL and C1)
/// but tab, and the [`BIDI_CONTROLS`].
fn escape_controls(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for ch in text.chars() {
        if (ch.is_control() && ch != '\t') || BIDI_CONTROLS.contains(&ch) {
            escaped.extend(ch.escape_unicode());
        } else {
            escaped.push(ch);
        }
    }
    escaped
}
// ANCHOR_END: escape

#[derive(Debug, Parser)]
#[command(about = "A line-based chat room over TCP")]
struct Args {
    /// The TCP address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: String,
    /// The longest line a client may send, in bytes (without the newline).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_LINE)]
    max_line: usize,
    /// Drop a client once this many bytes wait in its write buffer (it reads too slowly).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_WRITE_LIMIT)]
    write_limit: usize,
    /// Worker threads connections are spread over (default: one per core; 0: the main thread).
    #[arg(long)]
    workers: Option<usize>,
    /// On SIGINT or SIGTERM, how long the connections may take to close gracefully before they
    /// are aborted (seconds, fractions allowed).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = seconds)]
    grace: Duration,
    /// Close a connection once no byte has gone either way for this long (seconds, fractions
    /// allowed; 0: never).
    #[arg(long, value_name = "SECS", default_value = DEFAULT_IDLE_TIMEOUT, value_parser = seconds)]
    idle_timeout: Duration,
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

// ANCHOR: messages
/// A client's number, unique for the server's life; names change, numbers do not.
type ClientId = u64;

/// A client connected: greet it and tell the others.
#[derive(Message)]
#[rtype(result = "()")]
struct Join {
    id: ClientId,
    transport: TransportHandle,
}

/// What a client said, in order: every line of one chunk it sent. The client waits for the
/// room to handle it before it reads on, so a client that floods the room waits for the room,
/// and the room's mailbox stays small.
#[derive(Message)]
#[rtype(result = "()")]
struct Lines {
    id: ClientId,
    inputs: Vec<Input>,
}

/// One line, parsed.
#[derive(Debug)]
enum Input {
    /// Text for the others.
    Say(String),
    /// `/nick NAME`.
    Nick(String),
    /// `/quit`: the client's last input.
    Quit,
    /// The client sent its EOF: its last input.
    Hangup,
    /// A line the client gets an error for.
    Invalid(String),
}

/// A client's connection is gone; a client the room already let go is ignored.
#[derive(Message)]
#[rtype(result = "()")]
struct Leave {
    id: ClientId,
}

/// A client's write buffer went over the limit: it reads too slowly.
#[derive(Message)]
#[rtype(result = "()")]
struct TooSlow {
    id: ClientId,
}

/// A client's connection has been idle for `--idle-timeout`: say goodbye, and close it.
#[derive(Message)]
#[rtype(result = "()")]
struct Idle {
    id: ClientId,
}

/// The server is shutting down: tell everyone, and forget them.
#[derive(Message)]
#[rtype(result = "()")]
struct Shutdown;
// ANCHOR_END: messages

// ANCHOR: room
/// The room: who is here, by number and by name. It only ever writes to transports with
/// `TransportHandle::write` (fire-and-forget), so one slow client never slows it down.
#[derive(Default)]
struct Room {
    members: HashMap<ClientId, Member>,
    /// Each name in use, by its [`name_key`], and whose it is.
    names: HashMap<String, ClientId>,
    /// The number of the last guest name handed out.
    guests: u64,
}

struct Member {
    name: String,
    transport: TransportHandle,
}

impl Actor for Room {
    type Context = Context<Self>;
}

impl Room {
    /// A guest name no one has (a client may have taken `guest7` with `/nick` already).
    fn guest_name(&mut self) -> String {
        loop {
            self.guests += 1;
            let name = format!("guest{}", self.guests);
            if !self.names.contains_key(&name_key(&name)) {
                return name;
            }
        }
    }

    /// Writes `text` (whole lines) to everyone but `except`, as one buffer they all share.
    fn broadcast(&self, except: Option<ClientId>, text: String) {
        if text.is_empty() {
            return;
        }
        let bytes = Bytes::from(text);
        for (id, member) in &self.members {
            if Some(*id) != except {
                member.transport.write(bytes.clone());
            }
        }
    }

    /// Writes `text` (whole lines) to `id` alone.
    fn tell(&self, id: ClientId, text: String) {
        if let (Some(member), false) = (self.members.get(&id), text.is_empty()) {
            member.transport.write(text);
        }
    }

    /// Lets `id` go and tells the others, with `why` after `left`; returns its transport.
    fn remove(&mut self, id: ClientId, why: &str) -> Option<TransportHandle> {
        let member = self.members.remove(&id)?;
        self.names.remove(&name_key(&member.name));
        self.broadcast(Some(id), format!("* {} left{why}\n", member.name));
        Some(member.transport)
    }

    /// Renames `id` to `new`, or says why not; appends what `id` and the others are told.
    fn rename(&mut self, id: ClientId, new: String, to_self: &mut String, to_others: &mut String) {
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        let key = name_key(&new);
        if new.is_empty() {
            to_self.push_str("* usage: /nick NAME\n");
        } else if !valid_name(&new) {
            to_self.push_str(&format!(
                "* invalid name {new:?}: 1 to {MAX_NAME} letters, digits, '-' or '_'\n"
            ));
        } else if new == member.name {
            to_self.push_str(&format!("* you are already {new}\n"));
        } else if self.names.get(&key).is_some_and(|&owner| owner != id) {
            to_self.push_str(&format!("* the name {new} is taken\n"));
        } else {
            // A new name, or the same one in another case.
            let old = std::mem::replace(&mut member.name, new.clone());
            self.names.remove(&name_key(&old));
            self.names.insert(key, id);
            to_self.push_str(&format!("* you are now {new}\n"));
            to_others.push_str(&format!("* {old} is now {new}\n"));
        }
    }
}

/// Whether `name` is 1 to [`MAX_NAME`] letters, digits, `-` or `_`.
fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.chars().count())
        && name
            .chars()
            .all(|ch| ch.is_alphanumeric() || ch == '-' || ch == '_')
}

/// What makes two names the same: `name` case-folded, so that `Alice`, `ALICE` and `alice`
/// are one name. Each character is upper-cased, then lower-cased: std has no Unicode case
/// folding, and `to_lowercase` alone would keep apart names that differ only by `ß` and `SS`,
/// or by `ς` and `σ`. (It also makes the Turkish dotless `ı` one with `i`: where it errs, it
/// refuses a name that looks like one in use, rather than let in a lookalike.)
fn name_key(name: &str) -> String {
    name.chars()
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect()
}

impl Handler<Join> for Room {
    type Result = ();

    fn handle(&mut self, msg: Join, _: &mut Context<Self>) {
        let name = self.guest_name();
        msg.transport.write(format!("* welcome {name}\n"));
        self.broadcast(Some(msg.id), format!("* {name} joined\n"));
        self.names.insert(name_key(&name), msg.id);
        self.members.insert(
            msg.id,
            Member {
                name,
                transport: msg.transport,
            },
        );
    }
}

impl Handler<Lines> for Room {
    type Result = ();

    /// Everything one chunk said goes out as one write per member: the lines for the others,
    /// and the answers for the sender.
    fn handle(&mut self, msg: Lines, _: &mut Context<Self>) {
        let mut to_self = String::new();
        let mut to_others = String::new();
        let mut leaving = false;
        for input in msg.inputs {
            let Some(member) = self.members.get(&msg.id) else {
                return; // gone already (a reset, too slow): its last words go nowhere
            };
            match input {
                Input::Say(text) => {
                    let text = escape_controls(&text);
                    to_others.push_str(&format!("{}: {text}\n", member.name));
                }
                Input::Nick(new) => self.rename(msg.id, new, &mut to_self, &mut to_others),
                Input::Invalid(why) => to_self.push_str(&format!("* {why}\n")),
                Input::Quit | Input::Hangup => {
                    if matches!(input, Input::Quit) {
                        to_self.push_str("* bye\n");
                    }
                    leaving = true;
                }
            }
        }
        self.tell(msg.id, to_self);
        self.broadcast(Some(msg.id), to_others);
        if leaving {
            // Its last input: the client closes its connection once this is handled.
            self.remove(msg.id, "");
        }
    }
}

impl Handler<Leave> for Room {
    type Result = ();

    fn handle(&mut self, msg: Leave, _: &mut Context<Self>) {
        self.remove(msg.id, "");
    }
}

impl Handler<Shutdown> for Room {
    type Result = ();

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) {
        self.broadcast(None, "* server shutting down\n".to_owned());
        self.members.clear();
        self.names.clear();
    }
}
// ANCHOR_END: room

impl Handler<Idle> for Room {
    type Result = ();

    fn handle(&mut self, msg: Idle, _: &mut Context<Self>) {
        self.tell(msg.id, "* idle for too long: bye\n".to_owned());
        if let Some(transport) = self.remove(msg.id, " (idle)") {
            transport.close();
        }
    }
}

// ANCHOR: slow
impl Handler<TooSlow> for Room {
    type Result = ();

    /// The client's write buffer is over the limit: drop it at once, discarding what waits for
    /// it, rather than buffer more or wait for it to read.
    fn handle(&mut self, msg: TooSlow, _: &mut Context<Self>) {
        if let Some(transport) = self.remove(msg.id, " (too slow)") {
            transport.abort();
        }
    }
}
// ANCHOR_END: slow

// ANCHOR: client
/// The protocol of one connection: it turns lines into `Input`s for the room. It never writes;
/// everything a client reads comes from the room, in the order the room decided.
struct Client {
    id: ClientId,
    room: Addr<Room>,
    max_line: usize,
    /// What the client said that the room has not been sent yet.
    said: Vec<Input>,
    /// The client sent `/quit` or its EOF: what it sends afterwards is ignored, and the
    /// connection closes once the room has said goodbye.
    leaving: bool,
}

impl Client {
    fn new(id: ClientId, room: Addr<Room>, max_line: usize) -> Client {
        Client {
            id,
            room,
            max_line,
            said: Vec::new(),
            leaving: false,
        }
    }

    /// Queues `input` for the room. The first input of a chunk pauses reading and schedules
    /// the message for once the chunk is decoded, so the room gets the chunk's lines in one
    /// `Lines`; reading resumes once the room has handled them. A client that floods the room
    /// waits for the room, and the room's mailbox stays small.
    fn say(&mut self, input: Input, cx: &mut Ctx<'_, Self>) {
        if self.leaving {
            return;
        }
        self.leaving = matches!(input, Input::Quit | Input::Hangup);
        self.said.push(input);
        if self.said.len() == 1 {
            cx.pause_reading();
            // A ready future: its continuation runs after this callback and the chunk's others.
            cx.spawn(async {}, |(), client, cx| {
                let handled = client.room.send(Lines {
                    id: client.id,
                    inputs: std::mem::take(&mut client.said),
                });
                cx.spawn(handled, |_, client, cx| {
                    if client.leaving {
                        cx.close();
                    } else {
                        cx.resume_reading();
                    }
                });
            });
        }
    }

    fn parse(&self, line: String) -> Option<Input> {
        let Some(command) = line.strip_prefix('/') else {
            return (!line.is_empty()).then_some(Input::Say(line));
        };
        let (command, rest) = command.split_once(' ').unwrap_or((command, ""));
        Some(match command {
            "nick" => Input::Nick(rest.trim().to_owned()),
            "quit" => Input::Quit,
            _ => Input::Invalid(format!(
                "unknown command /{} (try /nick NAME or /quit)",
                escape_controls(command)
            )),
        })
    }
}

impl Protocol for Client {
    type Codec = LinesCodec;

    /// Joins the room, which writes to this connection's transport from now on.
    fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
        cx.set_codec(LinesCodec::new_with_max_length(self.max_line));
        self.room.do_send(Join {
            id: self.id,
            transport: cx.transport().clone(),
        });
    }

    fn data_received(&mut self, line: String, cx: &mut Ctx<'_, Self>) {
        if let Some(input) = self.parse(line) {
            self.say(input, cx);
        }
    }

    /// A line over `--max-line` bytes, or not UTF-8: `LinesCodec` skips it, the client gets an
    /// error line and goes on.
    fn decode_error(&mut self, err: LinesCodecError, cx: &mut Ctx<'_, Self>) {
        let why = match err {
            LinesCodecError::MaxLineLengthExceeded => {
                format!("line too long (max {} bytes)", self.max_line)
            }
            LinesCodecError::Io(_) => "line is not valid UTF-8".to_owned(),
        };
        self.say(Input::Invalid(why), cx);
    }

    /// The client hangs up (a last line without its newline came first). The connection stays
    /// open until the room has said goodbye for it, then closes.
    fn eof_received(&mut self, cx: &mut Ctx<'_, Self>) -> bool {
        self.say(Input::Hangup, cx);
        true
    }

    /// Nothing went either way for `--idle-timeout`: the room says goodbye and closes. (If the
    /// connection is not closed by the next timeout, the transport ends it.)
    fn timed_out(&mut self, _: Timeout, _: &mut Ctx<'_, Self>) {
        self.room.do_send(Idle { id: self.id });
    }

    fn connection_lost(&mut self, _: Option<io::Error>, _: &mut Ctx<'_, Self>) {
        self.room.do_send(Leave { id: self.id });
    }
    // ANCHOR_END: client

    // ANCHOR: flow
    /// The transport's write buffer went over `--write-limit` (its high-water mark): the client
    /// is not reading what the room sends. The room drops it. (The default, to stop reading
    /// from the client, would not help: the room fills the buffer, not the client's requests.)
    fn pause_writing(&mut self, _: &mut Ctx<'_, Self>) {
        self.room.do_send(TooSlow { id: self.id });
    }
}
// ANCHOR_END: flow

#[actix::main]
async fn main() -> io::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();

    // Both signals are caught from before the `listening on` line: a client that sends one as
    // soon as it reads the line finds the handlers in place.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;

    // ANCHOR: serve
    // Each transport pauses its protocol (so the room drops the client) once more than
    // `--write-limit` bytes wait in its write buffer; its hard maximum must not be below that.
    // An idle connection is told, then closed.
    let limits = WriteBufferLimits::new(args.write_limit, args.write_limit / 4)
        .expect("a quarter of the limit is below it");
    let stream = StreamConfig::default()
        .write_buffer_limits(limits)
        .max_write_buffer(args.write_limit.max(DEFAULT_MAX_WRITE_BUFFER))?
        .idle_timeout(timeout(args.idle_timeout))?;
    let mut options = ServerOptions::default().stream(stream);
    if let Some(workers) = args.workers {
        options = options.workers(workers);
    }
    let room = Room::default().start();
    let next_id = Arc::new(AtomicU64::new(1));
    let max_line = args.max_line;
    let factory = {
        let room = room.clone();
        move || {
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            Client::new(id, room.clone(), max_line)
        }
    };
    let server = tcp::serve_with(&args.addr, options, factory).await?;
    println!("listening on {}", server.addresses()[0]);
    // ANCHOR_END: serve

    // ANCHOR: shutdown
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!(grace = ?args.grace, "shutting down: no new connections, closing the live ones");
    // Graceful within the grace period; a second signal aborts what is left at once.
    let report = tokio::select! {
        report = async {
            server.close().await;
            // The notice is in every transport's mailbox before the `Close` that follows it.
            let _ = room.send(Shutdown).await;
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
    // ANCHOR_END: shutdown
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    //! The chat protocol and its room, on mock transports: a real `Room` actor, one `Client`
    //! protocol per mock connection, no socket.

    use std::io;

    use switchboard::testing::{Chunking, Ending, MockTransport};

    use super::*;

    /// Connects client `id` to `room` with the default line limit; `MockTransport::connect`
    /// returns once the room has welcomed it.
    async fn join(room: &Addr<Room>, id: ClientId) -> MockTransport {
        join_with(room, id, DEFAULT_MAX_LINE).await
    }

    async fn join_with(room: &Addr<Room>, id: ClientId, max_line: usize) -> MockTransport {
        let mock = MockTransport::connect(Client::new(id, room.clone(), max_line)).await;
        // The room writes from its own actor: let it finish.
        mock.settle().await;
        mock
    }

    /// Waits until every mock has handled what the room sent it.
    async fn settle(mocks: &[&MockTransport]) {
        for mock in mocks {
            mock.settle().await;
        }
    }

    // ANCHOR: test_chat_room
    // Two clients in one room: each is welcomed, hears the other join, say a line and leave.
    #[actix::test]
    async fn test_chat_room() {
        let room = Room::default().start();
        let alice = join(&room, 1).await;
        let bob = join(&room, 2).await;
        assert_eq!(alice.take_written(), "* welcome guest1\n* guest2 joined\n");
        assert_eq!(bob.take_written(), "* welcome guest2\n");

        alice.feed("hello, bob\n").await;
        settle(&[&alice, &bob]).await;
        assert_eq!(bob.take_written(), "guest1: hello, bob\n");
        assert_eq!(alice.take_written(), "", "no echo to the sender");

        // Bob hangs up (EOF): the others are told, then his connection closes.
        assert!(bob.eof().await, "open until the room has said goodbye");
        bob.protocol_stopped().await;
        settle(&[&alice]).await;
        assert_eq!(alice.take_written(), "* guest2 left\n");
        assert_eq!(bob.ending(), Some(Ending::Closed));
    }
    // ANCHOR_END: test_chat_room

    /// What alice says and what bob hears, at every split point of alice's bytes: lines,
    /// commands, an empty line, a line too long, a line that is not UTF-8.
    #[actix::test]
    async fn lines_are_the_same_at_every_split_point() {
        let cases: &[(&[u8], &str, &str)] = &[
            (b"hi\n\nthere\n", "", "guest1: hi\nguest1: there\n"),
            (
                b"a\r\n/nick al\nb\n",
                "* you are now al\n",
                "guest1: a\n* guest1 is now al\nal: b\n",
            ),
            (
                b"0123456789\nok\n",
                "* line too long (max 8 bytes)\n",
                "guest1: ok\n",
            ),
            (
                b"\xff\xfe\n/dance\nok\n",
                "* line is not valid UTF-8\n\
                 * unknown command /dance (try /nick NAME or /quit)\n",
                "guest1: ok\n",
            ),
        ];
        for &(input, to_alice, to_bob) in cases {
            for chunking in Chunking::every(input.len()) {
                let room = Room::default().start();
                let alice = join_with(&room, 1, 8).await;
                let bob = join(&room, 2).await;
                alice.take_written();
                bob.take_written();

                alice
                    .feed_chunked(Bytes::from_static(input), &chunking)
                    .await;
                settle(&[&alice, &bob]).await;
                let what = format!("{:?} {chunking:?}", String::from_utf8_lossy(input));
                assert_eq!(alice.take_written(), to_alice, "{what}");
                assert_eq!(bob.take_written(), to_bob, "{what}");
                assert!(
                    !alice.is_closing(),
                    "{what}: mistakes do not end the session"
                );
            }
        }
    }

    /// The last line may lack its newline: at EOF it is said, then the client leaves.
    #[actix::test]
    async fn eof_says_the_last_line_then_leaves() {
        let input = "one\ntwo";
        for chunking in Chunking::every(input.len()) {
            let room = Room::default().start();
            let alice = join(&room, 1).await;
            let bob = join(&room, 2).await;
            bob.take_written();
            alice.feed_chunked(input, &chunking).await;
            alice.eof().await;
            alice.protocol_stopped().await;
            settle(&[&bob]).await;
            assert_eq!(
                bob.take_written(),
                "guest1: one\nguest1: two\n* guest1 left\n",
                "{chunking:?}"
            );
            assert_eq!(alice.ending(), Some(Ending::Closed));
        }
    }

    /// A client that stops reading (PauseWriting) is dropped at once, abortively, and the
    /// others are told why, once.
    #[actix::test]
    async fn a_slow_client_is_dropped() {
        let room = Room::default().start();
        let alice = join(&room, 1).await;
        let bob = join(&room, 2).await;
        let carol = join(&room, 3).await;
        alice.take_written();
        bob.take_written();

        carol.pause_writing().await;
        carol.protocol_stopped().await;
        settle(&[&alice, &bob]).await;
        assert_eq!(carol.ending(), Some(Ending::Aborted));
        assert_eq!(
            carol.command_names(),
            ["Write", "Abort"],
            "welcome, then dropped"
        );
        assert_eq!(alice.take_written(), "* guest3 left (too slow)\n");
        assert_eq!(bob.take_written(), "* guest3 left (too slow)\n");

        // The room goes on without carol.
        alice.feed("still here\n").await;
        settle(&[&alice, &bob]).await;
        assert_eq!(bob.take_written(), "guest1: still here\n");
        assert_eq!(carol.take_written(), "* welcome guest3\n");
    }

    /// A client whose connection was idle for the timeout is told goodbye and closed
    /// gracefully; the others are told why.
    #[actix::test]
    async fn an_idle_client_is_told_goodbye_and_closed() {
        let timeout = Duration::from_secs(300);
        let room = Room::default().start();
        let alice = join(&room, 1).await;
        let bob = MockTransport::builder()
            .idle_timeout(timeout)
            .connect(Client::new(2, room.clone(), DEFAULT_MAX_LINE))
            .await;
        settle(&[&alice, &bob]).await;
        alice.take_written();
        bob.take_written();

        bob.advance(timeout).await;
        bob.protocol_stopped().await;
        settle(&[&alice]).await;
        assert_eq!(bob.take_written(), "* idle for too long: bye\n");
        assert_eq!(bob.ending(), Some(Ending::Closed));
        assert_eq!(alice.take_written(), "* guest2 left (idle)\n");
    }

    /// A connection lost (a reset) makes the client leave.
    #[actix::test]
    async fn a_lost_connection_leaves_the_room() {
        let room = Room::default().start();
        let alice = join(&room, 1).await;
        let bob = join(&room, 2).await;
        alice.take_written();
        bob.lose(Some(io::ErrorKind::ConnectionReset.into())).await;
        bob.protocol_stopped().await;
        settle(&[&alice]).await;
        assert_eq!(alice.take_written(), "* guest2 left\n");

        // Its name is free again, and the room still relays.
        let carol = join(&room, 3).await;
        carol.feed("/nick guest2\nhi\n").await;
        settle(&[&alice, &carol]).await;
        assert_eq!(
            alice.take_written(),
            "* guest3 joined\n* guest3 is now guest2\nguest2: hi\n"
        );
    }

    /// `/quit`: `* bye`, a graceful close, the others told once; what follows is ignored.
    #[actix::test]
    async fn quit_says_bye_and_closes() {
        let room = Room::default().start();
        let alice = join(&room, 1).await;
        let bob = join(&room, 2).await;
        alice.take_written();
        alice.take_commands();
        bob.take_written();

        alice.feed("last\n/quit\nignored\n").await;
        alice.protocol_stopped().await;
        settle(&[&bob]).await;
        assert_eq!(alice.take_written(), "* bye\n");
        let commands: Vec<_> = alice
            .take_commands()
            .iter()
            .map(|sent| sent.name())
            .collect();
        assert_eq!(commands, ["PauseReading", "Write", "Close"]);
        assert_eq!(alice.ending(), Some(Ending::Closed));
        assert_eq!(bob.take_written(), "guest1: last\n* guest1 left\n");
    }

    /// Names: the checks of `/nick`, and a guest name never given twice.
    #[actix::test]
    async fn nick_checks_the_name() {
        let room = Room::default().start();
        let alice = join(&room, 1).await;
        let bob = join(&room, 2).await;
        alice.take_written();
        bob.take_written();

        bob.feed("/nick guest3\n").await;
        alice
            .feed("/nick\n/nick a b\n/nick guest1\n/nick guest3\n")
            .await;
        settle(&[&alice, &bob]).await;
        assert_eq!(
            alice.take_written(),
            "* guest2 is now guest3\n\
             * usage: /nick NAME\n\
             * invalid name \"a b\": 1 to 32 letters, digits, '-' or '_'\n\
             * you are already guest1\n\
             * the name guest3 is taken\n"
        );
        assert_eq!(bob.take_written(), "* you are now guest3\n");

        // guest3 is taken by bob: the next guest is guest4.
        let carol = join(&room, 3).await;
        assert_eq!(carol.take_written(), "* welcome guest4\n");
    }

    /// Exactly the C0 controls but tab, DEL, the C1 controls and the bidi overrides and
    /// isolates are escaped, each as `\u{HEX}`; every other character of Unicode passes as is.
    #[test]
    fn escape_controls_escapes_exactly_what_a_terminal_could_obey() {
        let bidi = (0x202a..=0x202e).chain(0x2066..=0x2069);
        let escaped: Vec<u32> = (0x00..=0x1f)
            .filter(|&code| code != 0x09)
            .chain([0x7f])
            .chain(0x80..=0x9f)
            .chain(bidi)
            .collect();
        for ch in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            let code = u32::from(ch);
            let expected = if escaped.contains(&code) {
                format!("\\u{{{code:x}}}")
            } else {
                ch.to_string()
            };
            assert_eq!(escape_controls(&ch.to_string()), expected, "U+{code:04X}");
        }
        assert_eq!(
            escape_controls("\u{1b}[2J\tsí\u{9b}1m 日本 \u{202e}cba\u{2069}\r"),
            "\\u{1b}[2J\tsí\\u{9b}1m 日本 \\u{202e}cba\\u{2069}\\u{d}"
        );
    }

    /// Names that differ only in case are one name, `ß` and `SS`, `ς` and `σ` included.
    #[test]
    fn name_key_ignores_case() {
        for (a, b) in [
            ("alice", "ALICE"),
            ("Alice", "aLiCe"),
            ("Zoë", "ZOË"),
            ("straße", "STRASSE"),
            ("ΟΔΟΣ", "οδος"),
            ("\u{212a}im", "kim"), // KELVIN SIGN
        ] {
            assert_eq!(name_key(a), name_key(b), "{a} and {b}");
        }
        for (a, b) in [("alice", "alice2"), ("bob", "b_o_b"), ("ζ", "ξ")] {
            assert_ne!(name_key(a), name_key(b), "{a} and {b}");
        }
    }

    /// A line with terminal commands in it reaches the others with each of them escaped, at
    /// every split point (some fall inside a multi-byte character); an unknown command's error
    /// quotes it escaped too.
    #[actix::test]
    async fn controls_reach_the_others_escaped() {
        let input = "\u{1b}[2J\u{9b}31m\u{202e}txt.exe\u{2066}\ta\rb\u{7f}\u{0}\n/\u{1b}[2J\n";
        for chunking in Chunking::every(input.len()) {
            let room = Room::default().start();
            let alice = join(&room, 1).await;
            let bob = join(&room, 2).await;
            alice.take_written();
            bob.take_written();

            alice.feed_chunked(input, &chunking).await;
            settle(&[&alice, &bob]).await;
            assert_eq!(
                bob.take_written(),
                "guest1: \\u{1b}[2J\\u{9b}31m\\u{202e}txt.exe\\u{2066}\ta\\u{d}b\\u{7f}\\u{0}\n",
                "{chunking:?}"
            );
            assert_eq!(
                alice.take_written(),
                "* unknown command /\\u{1b}[2J (try /nick NAME or /quit)\n",
                "{chunking:?}"
            );
        }
    }

    /// A name is taken in any case, and guest names skip one taken in another case; one may
    /// change the case of one's own name, and a name leaving frees it in every case. A name
    /// with a control character is refused, quoted escaped.
    #[actix::test]
    async fn names_are_unique_in_any_case() {
        let room = Room::default().start();
        let alice = join(&room, 1).await;
        let bob = join(&room, 2).await;
        alice.take_written();
        bob.take_written();

        alice.feed("/nick ALICE\n").await;
        settle(&[&alice, &bob]).await;
        bob.feed("/nick alice\n/nick Alice\n/nick GUEST3\n").await;
        settle(&[&alice, &bob]).await;
        alice
            .feed("/nick Alice\n/nick Alice\n/nick evil\u{1b}[2J\n/nick \u{202e}x\n")
            .await;
        settle(&[&alice, &bob]).await;
        assert_eq!(
            alice.take_written(),
            "* you are now ALICE\n\
             * guest2 is now GUEST3\n\
             * you are now Alice\n\
             * you are already Alice\n\
             * invalid name \"evil\\u{1b}[2J\": 1 to 32 letters, digits, '-' or '_'\n\
             * invalid name \"\\u{202e}x\": 1 to 32 letters, digits, '-' or '_'\n"
        );
        assert_eq!(
            bob.take_written(),
            "* guest1 is now ALICE\n\
             * the name alice is taken\n\
             * the name Alice is taken\n\
             * you are now GUEST3\n\
             * ALICE is now Alice\n"
        );

        // GUEST3 is bob's: the next guest is guest4.
        let carol = join(&room, 3).await;
        assert_eq!(carol.take_written(), "* welcome guest4\n");

        // Once alice leaves, her name is free in every case.
        alice.eof().await;
        settle(&[&alice, &carol]).await;
        carol.feed("/nick aLiCe\n").await;
        settle(&[&bob, &carol]).await;
        assert_eq!(carol.take_written(), "* Alice left\n* you are now aLiCe\n");
    }
}
