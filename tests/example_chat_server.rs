//! The `chat_server` example runs as a process, and plain tokio sockets check what its docs
//! promise, line for line:
//!
//! - a client is welcomed with a fresh guest name, the others see it join and leave (`/quit`,
//!   EOF, a reset), and each line reaches every other client as `NAME: text`, never its sender;
//! - `/nick` renames (and the others are told), refuses a taken, empty or invalid name, and
//!   unknown commands get an error line; a name is taken in any case, and one may change the
//!   case of one's own;
//! - no terminal control a client sends reaches another client raw: each arrives escaped;
//! - an over-long line and a non-UTF-8 line get an error line, and the session goes on;
//! - 100 concurrent clients each see exactly every other client's lines, each sender's in order;
//! - a client that never reads is dropped once its write buffer passes the limit, the others are
//!   told, the server's memory stays bounded and the room stays fast meanwhile;
//! - with `--idle-timeout`, a client that neither sends nor receives for that long is told
//!   goodbye and closed, the others are told it left; one the room talks to is not idle;
//! - the server prints `listening on ADDR`, tells everyone on SIGTERM and exits 0.
//!
//! Every child process is killed when its test fails, and every wait is bounded.

#[path = "support/process.rs"]
mod process;

use std::{
    collections::HashMap,
    fs,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::SeqCst},
    },
    thread,
    time::{Duration, Instant},
};

use process::{Process, example_command};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
};

/// How long a client waits for a line it expects (or for the server's EOF).
const LINE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client listens to make sure nothing more arrives.
const QUIET: Duration = Duration::from_millis(200);

/// How long the server may take to exit after SIGTERM.
const EXIT_BOUND: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The server process and its clients

/// A running `chat_server` whose `listening on ADDR` line has been read.
struct ChatServer {
    process: Process,
    addr: SocketAddr,
}

impl ChatServer {
    /// Starts the server on `127.0.0.1:0` with `extra_args`.
    fn start(extra_args: &[&str]) -> ChatServer {
        let mut command = example_command("chat_server", "error");
        command.args(["--addr", "127.0.0.1:0"]).args(extra_args);
        let process = Process::spawn("chat_server", command);
        let addr = process.listening_on();
        let addr: SocketAddr = addr
            .parse()
            .unwrap_or_else(|err| panic!("`{addr}` is not a socket address: {err}"));
        assert_ne!(addr.port(), 0, "the line must show the port really bound");
        ChatServer { process, addr }
    }

    /// Connects a client and reads its welcome.
    async fn join(&self) -> Chatter {
        Chatter::connect(self.addr).await
    }

    /// The server's resident memory now, in bytes (`VmRSS` of `/proc/PID/status`).
    fn rss(&self) -> u64 {
        rss_of(self.process.pid())
    }

    /// Sends SIGTERM; checks the server exits 0 having printed nothing but its one line.
    fn stop(mut self) {
        self.process.signal("TERM");
        let finished = self.process.finish(EXIT_BOUND);
        assert_eq!(
            finished.status.code(),
            Some(0),
            "chat_server exit status ({}); stderr:\n{}",
            finished.status,
            finished.stderr_text()
        );
        assert_eq!(
            finished.stdout_text(),
            format!("listening on {}\n", self.addr),
            "chat_server prints exactly one line on stdout"
        );
    }
}

/// `VmRSS` of process `pid`, in bytes.
fn rss_of(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"));
    kib * 1024
}

/// A chat client over a plain tokio socket.
struct Chatter {
    /// The name the server gave it (kept up to date by the tests that rename).
    name: String,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Chatter {
    /// Connects and reads `* welcome NAME`.
    async fn connect(addr: SocketAddr) -> Chatter {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let (reader, writer) = stream.into_split();
        let mut chatter = Chatter {
            name: String::new(),
            reader: BufReader::new(reader),
            writer,
        };
        let welcome = chatter.line().await;
        chatter.name = welcome
            .strip_prefix("* welcome ")
            .unwrap_or_else(|| panic!("the first line is {welcome:?}, not `* welcome NAME`"))
            .to_owned();
        chatter
    }

    /// Sends `line` and its newline.
    async fn say(&mut self, line: &str) {
        self.send(format!("{line}\n").as_bytes()).await;
    }

    /// Sends raw bytes.
    async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("send");
    }

    /// The next line, without its newline; panics at EOF or after [`LINE_TIMEOUT`].
    async fn line(&mut self) -> String {
        match tokio::time::timeout(LINE_TIMEOUT, self.next_line()).await {
            Ok(Some(line)) => line,
            Ok(None) => panic!("{}: EOF while a line was expected", self.name),
            Err(_) => panic!("{}: no line within {LINE_TIMEOUT:?}", self.name),
        }
    }

    /// The next line as the bytes received, its newline included; panics at EOF or after
    /// [`LINE_TIMEOUT`].
    async fn raw_line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        match tokio::time::timeout(LINE_TIMEOUT, self.reader.read_until(b'\n', &mut line)).await {
            Ok(Ok(0)) => panic!("{}: EOF while a line was expected", self.name),
            Ok(Ok(_)) => line,
            Ok(Err(err)) => panic!("{}: read failed: {err}", self.name),
            Err(_) => panic!("{}: no line within {LINE_TIMEOUT:?}", self.name),
        }
    }

    /// The next line, or `None` at EOF.
    async fn next_line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .await
            .unwrap_or_else(|err| panic!("{}: read failed: {err}", self.name));
        if n == 0 {
            return None;
        }
        let line = line
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("{}: a line without its newline: {line:?}", self.name));
        Some(line.to_owned())
    }

    /// Checks that the next line is `expected`.
    async fn expect(&mut self, expected: &str) {
        let line = self.line().await;
        assert_eq!(line, expected, "{} received", self.name);
    }

    /// Checks that nothing arrives for [`QUIET`].
    async fn expect_quiet(&mut self) {
        if let Ok(line) = tokio::time::timeout(QUIET, self.next_line()).await {
            panic!("{} expected nothing, received {line:?}", self.name);
        }
    }

    /// Checks that the server closes the connection (EOF) within [`LINE_TIMEOUT`], nothing
    /// arriving before it.
    async fn expect_eof(&mut self) {
        match tokio::time::timeout(LINE_TIMEOUT, self.next_line()).await {
            Ok(None) => {}
            Ok(Some(line)) => panic!("{} expected EOF, received {line:?}", self.name),
            Err(_) => panic!("{}: no EOF within {LINE_TIMEOUT:?}", self.name),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The conversation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn welcome_chat_nick_quit_leave_and_shutdown() {
    let server = ChatServer::start(&[]);

    let mut alice = server.join().await;
    assert_eq!(alice.name, "guest1");
    let mut bob = server.join().await;
    assert_eq!(bob.name, "guest2");
    alice.expect("* guest2 joined").await;

    // A line reaches the others, not its sender.
    alice.say("hello, world").await;
    bob.expect("guest1: hello, world").await;
    bob.say("hi").await;
    alice.expect("guest2: hi").await;
    bob.say("").await; // empty lines are ignored
    alice.expect_quiet().await;

    // Renaming.
    alice.say("/nick alice").await;
    alice.expect("* you are now alice").await;
    bob.expect("* guest1 is now alice").await;
    bob.say("/nick alice").await;
    bob.expect("* the name alice is taken").await;
    bob.say("/nick").await;
    bob.expect("* usage: /nick NAME").await;
    bob.say("/nick bad name!").await;
    bob.expect(r#"* invalid name "bad name!": 1 to 32 letters, digits, '-' or '_'"#)
        .await;
    bob.say("/nick guest2").await;
    bob.expect("* you are already guest2").await;
    bob.say("/dance").await;
    bob.expect("* unknown command /dance (try /nick NAME or /quit)")
        .await;
    bob.say("/nick bob").await;
    bob.expect("* you are now bob").await;
    alice.expect("* guest2 is now bob").await;
    alice.say("hi bob").await;
    bob.expect("alice: hi bob").await;
    alice.expect_quiet().await; // none of bob's mistakes reached alice

    // Guest numbers are not reused; a free old name can be taken again.
    let mut carol = server.join().await;
    assert_eq!(carol.name, "guest3");
    alice.expect("* guest3 joined").await;
    bob.expect("* guest3 joined").await;
    carol.say("/nick guest1").await;
    carol.expect("* you are now guest1").await;
    alice.expect("* guest3 is now guest1").await;
    bob.expect("* guest3 is now guest1").await;
    let mut dave = server.join().await;
    assert_eq!(dave.name, "guest4");
    for chatter in [&mut alice, &mut bob, &mut carol] {
        chatter.expect("* guest4 joined").await;
    }

    // `/quit`: a goodbye, then the server's EOF; what followed `/quit` is ignored.
    bob.send(b"last words\n/quit\nnever said\n").await;
    for chatter in [&mut alice, &mut carol, &mut dave] {
        chatter.expect("bob: last words").await;
        chatter.expect("* bob left").await;
    }
    bob.expect("* bye").await;
    bob.expect_eof().await;

    // EOF: the last line, even without its newline, then `left`, then the server's EOF.
    carol.send(b"one\ntwo").await;
    carol.writer.shutdown().await.expect("shutdown");
    for chatter in [&mut alice, &mut dave] {
        chatter.expect("guest1: one").await;
        chatter.expect("guest1: two").await;
        chatter.expect("* guest1 left").await;
    }
    carol.expect_eof().await;

    // A reset.
    let Chatter { reader, writer, .. } = dave;
    let stream = reader
        .into_inner()
        .reunite(writer)
        .expect("the two halves of one stream");
    stream.set_zero_linger().expect("SO_LINGER 0");
    drop(stream);
    alice.expect("* guest4 left").await;
    alice.expect_quiet().await;

    // Shutdown: a notice, then EOF.
    server.stop();
    alice.expect("* server shutting down").await;
    alice.expect_eof().await;
}

/// With `--idle-timeout 1`: a client that neither sends nor receives a byte for a second is told
/// goodbye and closed, and the others are told it left. Alice says nothing and hears nothing
/// after bob joins; bob keeps his own connection busy with a mistyped command every 250 ms
/// (only he hears the answer), so he outlives her and hears her leave, then goes quiet too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_clients_are_told_goodbye_and_closed() {
    const UNKNOWN: &str = "* unknown command /dance (try /nick NAME or /quit)";
    let server = ChatServer::start(&["--idle-timeout", "1"]);
    let within = |elapsed: Duration, what: &str| {
        let secs = elapsed.as_secs_f64();
        assert!((0.9..2.5).contains(&secs), "{what} after {secs:.3} s");
    };

    let mut alice = server.join().await;
    let mut bob = server.join().await;
    let alice_side = async {
        alice.expect("* guest2 joined").await;
        let joined = Instant::now();
        alice.expect("* idle for too long: bye").await;
        alice.expect_eof().await;
        within(joined.elapsed(), "alice was closed after bob joined");
    };
    let bob_side = async {
        let mut left = None;
        for _ in 0..12 {
            bob.say("/dance").await;
            let line = bob.line().await;
            if line == "* guest1 left (idle)" {
                left = Some(Instant::now());
                bob.expect(UNKNOWN).await;
                break;
            }
            assert_eq!(line, UNKNOWN);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let left = left.expect("bob heard alice leave within 3 s");
        // Quiet from now on.
        bob.expect("* idle for too long: bye").await;
        bob.expect_eof().await;
        within(left.elapsed(), "bob was closed after he went quiet");
    };
    tokio::join!(alice_side, bob_side);

    // Still serving.
    let carol = server.join().await;
    assert_eq!(carol.name, "guest3");
    drop(carol);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_get_an_error_and_the_session_goes_on() {
    let server = ChatServer::start(&["--max-line", "16"]);
    let mut alice = server.join().await;
    let mut bob = server.join().await;
    alice.expect("* guest2 joined").await;

    // Exactly the limit passes; one byte more does not, nor does a line far longer that
    // arrives in many pieces (one error for it, not one per piece).
    alice.say(&"x".repeat(16)).await;
    bob.expect(&format!("guest1: {}", "x".repeat(16))).await;
    alice.say(&"y".repeat(17)).await;
    alice.expect("* line too long (max 16 bytes)").await;
    let long = "z".repeat(256 * 1024);
    for piece in long.as_bytes().chunks(10_000) {
        alice.send(piece).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    alice.send(b"\nafter\n").await;
    alice.expect("* line too long (max 16 bytes)").await;
    bob.expect("guest1: after").await;

    // Not UTF-8, alone and among good lines; a CRLF line end is fine.
    alice.send(b"ok 1\r\n\xff\xfe bad\nok 2\n").await;
    alice.expect("* line is not valid UTF-8").await;
    bob.expect("guest1: ok 1").await;
    bob.expect("guest1: ok 2").await;

    // The session goes on: a command still works, and nothing of the bad lines reached bob.
    alice.say("/nick alice").await;
    alice.expect("* you are now alice").await;
    bob.expect("* guest1 is now alice").await;
    bob.expect_quiet().await;
    alice.expect_quiet().await;

    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_unique_in_any_case() {
    let server = ChatServer::start(&[]);
    let mut first = server.join().await;
    let mut second = server.join().await;
    first.expect("* guest2 joined").await;

    first.say("/nick ALICE").await;
    first.expect("* you are now ALICE").await;
    second.expect("* guest1 is now ALICE").await;
    second.say("/nick alice").await;
    second.expect("* the name alice is taken").await;

    // Another case of one's own name is a rename, shown as typed.
    first.say("/nick Alice").await;
    first.expect("* you are now Alice").await;
    second.expect("* ALICE is now Alice").await;
    second.say("/nick ALICE").await;
    second.expect("* the name ALICE is taken").await;
    first.say("hi").await;
    second.expect("Alice: hi").await;
    first.expect_quiet().await; // none of the refusals reached the first

    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_terminal_control_reaches_another_client_raw() {
    let server = ChatServer::start(&[]);
    let mut alice = server.join().await;
    let mut bob = server.join().await;
    alice.expect("* guest2 joined").await;

    // Clear the screen; red, by the one-byte C1 CSI (U+009B, two bytes of UTF-8); a
    // right-to-left override that shows `exe.png` as `gnp.exe`; a carriage return that would
    // write `root` over the sender's name; DEL. The tab passes.
    alice
        .say("\u{1b}[2J \u{9b}31m \u{202e}exe.png\u{202c}\tok\rroot: hi\u{7f}")
        .await;
    let received = bob.raw_line().await;
    let expected =
        "guest1: \\u{1b}[2J \\u{9b}31m \\u{202e}exe.png\\u{202c}\tok\\u{d}root: hi\\u{7f}\n";
    assert_eq!(
        received,
        expected.as_bytes(),
        "bob received {:?}",
        String::from_utf8_lossy(&received)
    );
    for raw in ["\u{1b}", "\u{9b}", "\u{202e}", "\u{202c}", "\r", "\u{7f}"] {
        assert!(
            !received
                .windows(raw.len())
                .any(|window| window == raw.as_bytes()),
            "{raw:?} reached bob raw: {received:?}"
        );
    }

    // A name with a control character is refused; the others hear nothing of it.
    alice.say("/nick evil\u{1b}[2J").await;
    alice
        .expect(r#"* invalid name "evil\u{1b}[2J": 1 to 32 letters, digits, '-' or '_'"#)
        .await;
    bob.expect_quiet().await;

    server.stop();
}

// ---------------------------------------------------------------------------------------------
// Many clients

/// How many clients talk at once.
const CLIENTS: usize = 100;

/// How many lines each of them sends.
const LINES_EACH: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_clients_see_every_other_clients_lines_in_order() {
    let server = ChatServer::start(&[]);
    // Once a client has its welcome, the room has it: every line sent after the last welcome
    // reaches all of them.
    let mut chatters = Vec::new();
    for _ in 0..CLIENTS {
        chatters.push(server.join().await);
    }
    let names: Vec<String> = chatters
        .iter()
        .map(|chatter| chatter.name.clone())
        .collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), CLIENTS, "guest names are unique: {names:?}");

    let start = Instant::now();
    let tasks: Vec<_> = chatters
        .into_iter()
        .enumerate()
        .map(|(index, mut chatter)| {
            let names = names.clone();
            tokio::spawn(async move {
                // The `joined` of every client that came later comes first.
                for later in &names[index + 1..] {
                    chatter.expect(&format!("* {later} joined")).await;
                }
                for n in 0..LINES_EACH {
                    chatter.say(&format!("line {n}")).await;
                    tokio::task::yield_now().await;
                }
                // Each other client's lines, each sender's in order, none of its own.
                let mut next: HashMap<String, usize> = HashMap::new();
                for _ in 0..(CLIENTS - 1) * LINES_EACH {
                    let line = chatter.line().await;
                    let Some((sender, text)) = line.split_once(": ") else {
                        panic!("{} received {line:?}, not `NAME: text`", chatter.name);
                    };
                    assert_ne!(sender, chatter.name, "a client never hears itself");
                    let expected = next.entry(sender.to_owned()).or_default();
                    assert_eq!(
                        text,
                        format!("line {expected}"),
                        "{} received {sender}'s lines out of order",
                        chatter.name
                    );
                    *expected += 1;
                }
                assert_eq!(
                    next.len(),
                    CLIENTS - 1,
                    "{} heard every other client",
                    chatter.name
                );
                assert!(next.values().all(|&n| n == LINES_EACH));
                chatter
            })
        })
        .collect();
    let mut chatters = Vec::new();
    for task in tasks {
        chatters.push(task.await.expect("a client's task"));
    }
    let elapsed = start.elapsed();

    // Nothing more was on its way: the next line anyone hears is the first client's last.
    let (first, others) = chatters.split_first_mut().expect("clients");
    first.say("done").await;
    for chatter in others {
        chatter.expect(&format!("{}: done", first.name)).await;
    }
    first.expect_quiet().await;
    eprintln!(
        "{CLIENTS} clients exchanged {} lines in {elapsed:?}",
        CLIENTS * (CLIENTS - 1) * LINES_EACH
    );

    server.stop();
}

// ---------------------------------------------------------------------------------------------
// A client that does not read

/// What the flooding client sends in all: more than [`RSS_BOUND`], so a server that buffered it
/// all for the client that does not read would go over.
const FLOOD: usize = 64 * 1024 * 1024;

/// The most resident memory the server may use while flooded.
const RSS_BOUND: u64 = 48 * 1024 * 1024;

/// The longest a line may take from one active client to another during the flood.
const LATENCY_BOUND: Duration = Duration::from_secs(1);

/// Lines per round of the flood, each followed by a probe whose arrival is timed.
const ROUND_LINES: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_dropped_and_the_room_stays_fast() {
    let server = ChatServer::start(&[]);
    let mut sender = server.join().await;
    let mut reader = server.join().await;
    sender.expect("* guest2 joined").await;
    let mut sleeper = server.join().await;
    sender.expect("* guest3 joined").await;
    reader.expect("* guest3 joined").await;
    // From here on the sleeper reads nothing.

    // The server's memory, sampled all along the flood.
    let peak_rss = Arc::new(AtomicU64::new(server.rss()));
    let flooding = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak_rss, flooding, pid) = (peak_rss.clone(), flooding.clone(), server.process.pid());
        thread::spawn(move || {
            while flooding.load(SeqCst) {
                peak_rss.fetch_max(rss_of(pid), SeqCst);
                thread::sleep(Duration::from_millis(10));
            }
        })
    };

    // Rounds of lines from the sender to the reader, each timed by the probe that ends it.
    let filler = "x".repeat(1000);
    let round: String = (0..ROUND_LINES).map(|_| format!("{filler}\n")).collect();
    let expected = format!("guest1: {filler}");
    let rounds = FLOOD / round.len();
    let mut slowest = Duration::ZERO;
    let mut dropped_after = None;
    let start = Instant::now();
    for n in 0..rounds {
        let sent = Instant::now();
        sender.send(round.as_bytes()).await;
        sender.say(&format!("probe {n}")).await;
        let mut lines = 0;
        loop {
            let line = reader.line().await;
            if line == expected {
                lines += 1;
            } else if line == "* guest3 left (too slow)" {
                assert!(dropped_after.is_none(), "dropped twice");
                dropped_after = Some(n);
            } else {
                assert_eq!(line, format!("guest1: probe {n}"), "the reader received");
                break;
            }
        }
        assert_eq!(
            lines, ROUND_LINES,
            "round {n}: every line reached the reader"
        );
        slowest = slowest.max(sent.elapsed());
    }
    let elapsed = start.elapsed();
    flooding.store(false, SeqCst);
    sampler.join().expect("the sampler");
    let peak_rss = peak_rss.load(SeqCst);
    eprintln!(
        "flood of {} MiB in {elapsed:?}; slowest round {slowest:?}; peak RSS {} KiB; sleeper \
         dropped in round {dropped_after:?}",
        FLOOD >> 20,
        peak_rss >> 10
    );

    let dropped_after = dropped_after.expect("the client that does not read was dropped");
    assert!(
        slowest < LATENCY_BOUND,
        "a round took {slowest:?}: the room waited for someone"
    );
    assert!(
        peak_rss < RSS_BOUND,
        "the server's memory grew to {} KiB",
        peak_rss >> 10
    );
    sender.expect("* guest3 left (too slow)").await;

    // The sleeper's connection ends (reset or EOF) once it reads what the kernel held.
    let drained = tokio::time::timeout(LINE_TIMEOUT, async {
        let mut buf = vec![0; 64 * 1024];
        let mut total = 0;
        loop {
            match sleeper.reader.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .expect("the dropped client's connection ends");
    // What the room wrote to it before dropping it: whole rounds, as the sleeper would read them.
    let round_out = ROUND_LINES * (expected.len() + 1) + "guest1: probe 0000000\n".len();
    let sent_before = (dropped_after + 1) * round_out;
    assert!(
        drained <= sent_before,
        "the dropped client received {drained} bytes, more than the {sent_before} sent to it \
         before it was dropped"
    );

    // The room goes on.
    sender.say("still here").await;
    reader.expect("guest1: still here").await;
    server.stop();
}
