//! The command phase: a `Session` per connection, from the greeting to `QUIT`. It answers
//! commands, upgrades the connection to TLS on `STARTTLS`, and on `DATA` switches to a
//! [`DataPhase`], which switches back to it after the message. A client that keeps it waiting
//! too long for a command is told `421` and the connection closed.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use actix::clock::Instant;
use bytes::BytesMut;
use switchboard::prelude::*;

use crate::{
    Config,
    command::{self, Command, ParseError},
    data::{DataPhase, TOO_BIG},
    envelope::{Envelope, Hello},
    lines::{CommandLines, Line},
};

/// The most recipients of one message (RFC 5321 §4.5.3.1.8: at least 100).
pub(crate) const MAX_RECIPIENTS: usize = 100;

const OK: &str = "250 2.0.0 OK";
const BAD_SEQUENCE: &str = "503 5.5.1 Bad sequence of commands";
const UNRECOGNIZED: &str = "500 5.5.2 Command not recognized";
const LINE_TOO_LONG: &str = "500 5.5.6 Line too long";
const NOT_IMPLEMENTED: &str = "502 5.5.1 Command not implemented";
const UNSUPPORTED_PARAMETER: &str = "555 5.5.4 Unsupported parameter";
const TLS_REQUIRED: &str = "530 5.7.0 Must issue a STARTTLS command first";
const VRFY: &str = "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery";
const HELP: &[&str] = &[
    "2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS",
    "2.0.0 End of HELP info",
];

/// The reply before the server closes a connection that kept it waiting longer than
/// `--command-timeout` (RFC 5321 §4.5.3.2.7; 421 as §3.8 has a server that must close say it;
/// the words are Postfix's).
pub(crate) fn timeout_reply(hostname: &str) -> String {
    format!("421 4.4.2 {hostname} Error: timeout exceeded\r\n")
}

/// Where the session stands (RFC 5321 §4.1.4).
#[derive(Debug, Clone)]
enum Stage {
    /// Before `HELO` or `EHLO`, and again right after `STARTTLS`.
    Connected,
    /// After `HELO` or `EHLO`: ready for `MAIL`.
    Greeted(Hello),
    /// After `MAIL`: collecting recipients.
    Mail(Hello, Transaction),
}

/// A mail transaction before `DATA`.
#[derive(Debug, Clone)]
struct Transaction {
    from: String,
    recipients: Vec<String>,
}

/// What the connection does once a command is answered.
#[derive(Debug)]
enum Next {
    /// Reads the next command.
    Read,
    /// Upgrades to TLS: `STARTTLS` was accepted.
    StartTls(StartTls),
    /// Reads the message: `DATA` was accepted.
    Data(Envelope),
    /// Closes: `QUIT`.
    Quit,
}

/// The command-phase protocol of one connection. The DATA phase keeps a copy to switch back to.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    config: Arc<Config>,
    peer: Option<SocketAddr>,
    /// The greeting went out: a session that comes back from the DATA phase does not greet.
    greeted: bool,
    stage: Stage,
    /// Plaintext is over: `STARTTLS` was accepted (the handshake is under way, or done).
    tls: bool,
    /// `QUIT` was answered, or the session timed out; anything more is ignored.
    quitting: bool,
    /// When the last command was complete (or the session began, or came back from the DATA
    /// phase): the next one must be complete within `--command-timeout` of it.
    command_since: Instant,
    /// The replies to the commands of one chunk, written together (RFC 2920 pipelining).
    replies: BytesMut,
}

impl Session {
    pub(crate) fn new(config: Arc<Config>) -> Self {
        Session {
            config,
            peer: None,
            greeted: false,
            stage: Stage::Connected,
            tls: false,
            quitting: false,
            command_since: Instant::now(),
            replies: BytesMut::new(),
        }
    }

    /// What every connection's protocols share.
    pub(crate) fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Queues a one-line reply.
    fn reply(&mut self, text: &str) {
        self.replies.extend_from_slice(text.as_bytes());
        self.replies.extend_from_slice(b"\r\n");
    }

    /// Queues a multi-line reply: `code` then each line, the last one marked as the last.
    fn reply_lines(&mut self, code: u16, lines: &[&str]) {
        for (i, line) in lines.iter().enumerate() {
            let separator = if i + 1 == lines.len() { ' ' } else { '-' };
            self.reply(&format!("{code}{separator}{line}"));
        }
    }

    /// Writes the queued replies.
    fn flush(&mut self, cx: &mut Ctx<'_, Self>) {
        if !self.replies.is_empty() {
            cx.write(self.replies.split().freeze());
        }
    }

    /// Answers one command line and says what comes next. Touches no I/O: the replies are
    /// queued, and the caller acts on [`Next`].
    fn execute(&mut self, line: &[u8]) -> Next {
        let command = match command::parse(line) {
            Ok(command) => command,
            Err(err) => {
                match err {
                    ParseError::Unrecognized => self.reply(UNRECOGNIZED),
                    ParseError::Syntax(syntax) => self.reply(&format!("501 5.5.4 {syntax}")),
                    ParseError::UnsupportedParameter => self.reply(UNSUPPORTED_PARAMETER),
                }
                return Next::Read;
            }
        };
        tracing::debug!(?command, "command");
        match command {
            Command::Helo(name) => self.hello(name, false),
            Command::Ehlo(name) => self.hello(name, true),
            Command::Mail { from, size } => self.mail(from, size),
            Command::Rcpt { to } => self.rcpt(to),
            Command::Data => return self.data(),
            Command::Rset => {
                if let Stage::Mail(hello, _) = &self.stage {
                    self.stage = Stage::Greeted(hello.clone());
                }
                self.reply("250 2.0.0 Reset");
            }
            Command::Noop => self.reply(OK),
            Command::Vrfy => self.reply(VRFY),
            Command::Help => self.reply_lines(214, HELP),
            Command::Quit => {
                self.reply("221 2.0.0 Bye");
                return Next::Quit;
            }
            Command::StartTls => return self.start_tls(),
            Command::NotImplemented => self.reply(NOT_IMPLEMENTED),
        }
        Next::Read
    }

    /// `HELO` or `EHLO`: like `RSET`, it ends any transaction.
    fn hello(&mut self, name: String, extended: bool) {
        if extended {
            self.ehlo_reply(&name);
        } else {
            self.reply(&format!("250 {}", self.config.hostname));
        }
        self.stage = Stage::Greeted(Hello { name, extended });
    }

    fn mail(&mut self, from: String, size: Option<u64>) {
        let limit = u64::try_from(self.config.max_size).unwrap_or(u64::MAX);
        match &self.stage {
            _ if self.config.require_tls && !self.tls => self.reply(TLS_REQUIRED),
            Stage::Greeted(_) if size.is_some_and(|size| size > limit) => self.reply(TOO_BIG),
            Stage::Greeted(hello) => {
                let transaction = Transaction {
                    from,
                    recipients: Vec::new(),
                };
                self.stage = Stage::Mail(hello.clone(), transaction);
                self.reply("250 2.1.0 Sender OK");
            }
            Stage::Connected | Stage::Mail(..) => self.reply(BAD_SEQUENCE),
        }
    }

    fn rcpt(&mut self, to: String) {
        match &mut self.stage {
            Stage::Mail(_, transaction) if transaction.recipients.len() >= MAX_RECIPIENTS => {
                self.reply("452 4.5.3 Too many recipients");
            }
            Stage::Mail(_, transaction) => {
                transaction.recipients.push(to);
                self.reply("250 2.1.5 Recipient OK");
            }
            Stage::Connected | Stage::Greeted(_) => self.reply(BAD_SEQUENCE),
        }
    }

    /// `DATA`: the transaction goes to the DATA phase with the message, and the session is
    /// ready for the next one.
    fn data(&mut self) -> Next {
        match std::mem::replace(&mut self.stage, Stage::Connected) {
            Stage::Mail(hello, transaction) if !transaction.recipients.is_empty() => {
                self.stage = Stage::Greeted(hello.clone());
                self.reply("354 End data with <CR><LF>.<CR><LF>");
                Next::Data(Envelope {
                    hello,
                    peer: self.peer,
                    tls: self.tls,
                    from: transaction.from,
                    recipients: transaction.recipients,
                })
            }
            stage => {
                self.stage = stage;
                self.reply(BAD_SEQUENCE);
                Next::Read
            }
        }
    }

    fn ehlo_reply(&mut self, client: &str) {
        let greeting = format!("{} greets {client}", self.config.hostname);
        let size = format!("SIZE {}", self.config.max_size);
        let mut lines = vec![
            &greeting[..],
            &size,
            "8BITMIME",
            "PIPELINING",
            "ENHANCEDSTATUSCODES",
        ];
        if !self.tls {
            lines.push("STARTTLS");
        }
        self.reply_lines(250, &lines);
    }

    // ANCHOR: starttls_command
    /// `STARTTLS`: accepted once, outside a transaction. From then on the session is the TLS
    /// session, and starts over: RFC 3207 §4.2 has the server forget what the client said in
    /// the clear, its `EHLO` included.
    fn start_tls(&mut self) -> Next {
        if self.tls {
            self.reply("503 5.5.1 TLS already active");
            return Next::Read;
        }
        if let Stage::Mail(..) = self.stage {
            self.reply(BAD_SEQUENCE);
            return Next::Read;
        }
        match self.config.tls.start_tls() {
            Ok(start) => {
                self.reply("220 2.0.0 Ready to start TLS");
                self.tls = true;
                self.stage = Stage::Connected;
                Next::StartTls(start)
            }
            Err(err) => {
                tracing::warn!(%err, "cannot prepare a TLS session");
                self.reply("454 4.7.0 TLS not available due to temporary reason");
                Next::Read
            }
        }
    }
    // ANCHOR_END: starttls_command

    /// Says goodbye with `421` and closes: the client kept the server waiting for longer than
    /// `--command-timeout`.
    fn time_out(&mut self, why: &str, cx: &mut Ctx<'_, Self>) {
        tracing::info!(peer = ?self.peer, why, "timeout: closing");
        self.quitting = true;
        self.replies.clear();
        cx.write(timeout_reply(&self.config.hostname));
        cx.close();
    }

    /// Bytes alone do not keep a session alive: the transport's idle timeout sees bytes moving
    /// and cannot tell a client that sends a line one byte at a time (slowloris) from one that
    /// talks. So a command must be complete within `timeout` of the previous one, checked when
    /// that time is up.
    fn watch_command_time(&mut self, timeout: Duration, cx: &mut Ctx<'_, Self>) {
        let left = timeout.saturating_sub(self.command_since.elapsed());
        cx.run_later(left, move |this, cx| {
            if this.quitting {
                return;
            }
            if this.command_since.elapsed() >= timeout {
                this.time_out("no command complete in time", cx);
            } else {
                this.watch_command_time(timeout, cx);
            }
        });
    }
}

impl Protocol for Session {
    type Codec = CommandLines;

    /// Greets, at the start; coming back from the DATA phase, goes on where it was.
    fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
        // The time for the next command starts now: at the greeting, or after the reply to the
        // message.
        self.command_since = Instant::now();
        if let Some(timeout) = self.config.command_timeout {
            self.watch_command_time(timeout, cx);
        }
        if self.greeted {
            return;
        }
        self.greeted = true;
        cx.write(format!(
            "220 {} ESMTP switchboard\r\n",
            self.config.hostname
        ));
        // The client's address, for the `Received:` field; `wait` holds every command back
        // until it is known.
        let peer = cx.transport().peer_addr();
        cx.wait(peer, |peer, this, _| {
            tracing::info!(?peer, "connection");
            this.peer = peer;
        });
    }

    fn data_received(&mut self, line: Line, cx: &mut Ctx<'_, Self>) {
        if self.quitting {
            return;
        }
        self.command_since = Instant::now();
        if self.replies.is_empty() {
            // The replies to every command of this chunk go out together, after the last.
            cx.call_soon(|this, cx| this.flush(cx));
        }
        let next = match line {
            Line::Complete(line) => self.execute(&line),
            Line::TooLong => {
                self.reply(LINE_TOO_LONG);
                Next::Read
            }
        };
        match next {
            Next::Read => {}
            // ANCHOR: starttls
            Next::StartTls(start) => {
                // The 220 goes out in plaintext, before the handshake: the transport keeps the
                // order of what it is sent.
                self.flush(cx);
                // Whatever the client sent after STARTTLS arrived in the clear and must never
                // count as part of the TLS session (RFC 3207 §4.2, CVE-2011-0411). `start_tls`
                // hands what was received and not decoded to the transport with the upgrade:
                // if there is any, it refuses the upgrade and ends the connection. What it has
                // read and not delivered, it drops.
                cx.start_tls(start, |result, this, _| {
                    if let Err(err) = result {
                        // The transport ends the connection: `connection_lost` follows.
                        tracing::info!(%err, peer = ?this.peer, "no TLS: connection ended");
                    }
                });
            }
            // ANCHOR_END: starttls
            // ANCHOR: switch_to_data
            Next::Data(envelope) => {
                // The 354, and the replies before it, go out before anything the DATA phase
                // writes.
                self.flush(cx);
                // The bytes after the DATA line are the start of the message (a client may
                // pipeline it): the switch hands them to the DATA phase first. The DATA phase
                // switches back to this session, as it is now, after the message.
                cx.switch_to(DataPhase::new(envelope, self.clone()));
            }
            // ANCHOR_END: switch_to_data
            Next::Quit => {
                self.quitting = true;
                self.flush(cx);
                cx.close();
            }
        }
    }

    /// Nothing moved for `--command-timeout`: the client is told `421`, and the connection
    /// closes. Should it not close in time either, the transport ends it.
    fn timed_out(&mut self, timeout: Timeout, cx: &mut Ctx<'_, Self>) {
        if !self.quitting {
            tracing::debug!(%timeout, "no command in time");
            self.time_out("no command", cx);
        }
    }

    fn connection_lost(&mut self, err: Option<std::io::Error>, _: &mut Ctx<'_, Self>) {
        match err {
            None => tracing::info!(peer = ?self.peer, "connection closed"),
            Some(err) => tracing::info!(%err, peer = ?self.peer, "connection lost"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, io, net::SocketAddr, path::Path, sync::OnceLock, time::Duration};

    use bytes::Bytes;
    use switchboard::{
        BufferedPlaintext, TlsError, TlsErrorKind,
        testing::{Chunking, Ending, MockTransport, Sent},
        tls::{SelfSigned, TlsAcceptor},
    };

    use super::*;
    use crate::maildir::Maildir;

    fn session(require_tls: bool, maildir: &Path) -> Session {
        Session::new(config_with(maildir, 1000, require_tls))
    }

    /// The configuration of the tests: `mx.test`, messages of up to `max_size` bytes, stored in
    /// `maildir`.
    fn config_with(maildir: &Path, max_size: usize, require_tls: bool) -> Arc<Config> {
        Arc::new(Config {
            hostname: "mx.test".into(),
            max_size,
            require_tls,
            tls: acceptor(),
            maildir: Maildir::create(maildir, "mx.test").unwrap(),
            command_timeout: None,
        })
    }

    /// The self-signed acceptor for STARTTLS, made once for every test.
    fn acceptor() -> TlsAcceptor {
        static ACCEPTOR: OnceLock<TlsAcceptor> = OnceLock::new();
        ACCEPTOR
            .get_or_init(|| SelfSigned::localhost().unwrap().acceptor().unwrap())
            .clone()
    }

    /// Executes `line`; the replies and what comes next.
    fn run(session: &mut Session, line: &str) -> (String, Next) {
        let next = session.execute(line.as_bytes());
        let replies = String::from_utf8(session.replies.split().to_vec()).unwrap();
        (replies, next)
    }

    /// Executes `line` and expects to read on, with replies starting with `code`.
    #[track_caller]
    fn expect(session: &mut Session, line: &str, code: &str) {
        let (replies, next) = run(session, line);
        assert!(replies.starts_with(code), "{line:?} answered {replies:?}");
        assert!(matches!(next, Next::Read), "{line:?} led to {next:?}");
    }

    #[test]
    fn commands_out_of_sequence_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut session = session(false, dir.path());
        expect(&mut session, "MAIL FROM:<a@x>", "503 5.5.1");
        expect(&mut session, "RCPT TO:<b@y>", "503 5.5.1");
        expect(&mut session, "DATA", "503 5.5.1");
        expect(&mut session, "EHLO client", "250-mx.test greets client");
        expect(&mut session, "RCPT TO:<b@y>", "503 5.5.1");
        expect(&mut session, "MAIL FROM:<a@x>", "250 2.1.0");
        expect(&mut session, "MAIL FROM:<a@x>", "503 5.5.1");
        expect(&mut session, "DATA", "503 5.5.1");
        expect(&mut session, "RCPT TO:<b@y>", "250 2.1.5");
        expect(&mut session, "RSET", "250 2.0.0");
        expect(&mut session, "DATA", "503 5.5.1");
        // RSET ends the transaction, not the greeting.
        expect(&mut session, "RSET", "250 2.0.0");
        expect(&mut session, "MAIL FROM:<a@x>", "250 2.1.0");
    }

    #[test]
    fn data_hands_over_the_envelope_and_ends_the_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut session = session(false, dir.path());
        expect(&mut session, "HELO client", "250 mx.test");
        expect(&mut session, "MAIL FROM:<a@x> SIZE=1001", "552 5.3.4");
        expect(&mut session, "MAIL FROM:<a@x> SIZE=1000", "250");
        for _ in 0..MAX_RECIPIENTS {
            expect(&mut session, "RCPT TO:<b@y>", "250");
        }
        expect(&mut session, "RCPT TO:<b@y>", "452 4.5.3");
        let (replies, next) = run(&mut session, "DATA");
        assert_eq!(replies, "354 End data with <CR><LF>.<CR><LF>\r\n");
        let Next::Data(envelope) = next else {
            panic!("DATA led to {next:?}");
        };
        assert_eq!(
            (&envelope.from[..], envelope.recipients.len()),
            ("a@x", 100)
        );
        assert!(!envelope.hello.extended && !envelope.tls);
        expect(&mut session, "RCPT TO:<b@y>", "503");
        expect(&mut session, "MAIL FROM:<>", "250");
    }

    #[test]
    fn starttls_is_advertised_once_and_forgets_the_ehlo() {
        let dir = tempfile::tempdir().unwrap();
        let mut session = session(true, dir.path());
        let (ehlo, _) = run(&mut session, "EHLO client");
        assert_eq!(
            ehlo,
            "250-mx.test greets client\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-PIPELINING\r\n\
             250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n"
        );
        expect(&mut session, "MAIL FROM:<a@x>", "530 5.7.0");
        expect(&mut session, "STARTTLS now", "501 5.5.4");
        let (replies, next) = run(&mut session, "STARTTLS");
        assert_eq!(replies, "220 2.0.0 Ready to start TLS\r\n");
        assert!(matches!(next, Next::StartTls(_)));
        expect(&mut session, "MAIL FROM:<a@x>", "503 5.5.1");
        let (ehlo, _) = run(&mut session, "EHLO client");
        assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
        expect(&mut session, "STARTTLS", "503 5.5.1");
        expect(&mut session, "MAIL FROM:<a@x>", "250");
        expect(&mut session, "STARTTLS", "503 5.5.1");
    }

    #[test]
    fn other_commands() {
        let dir = tempfile::tempdir().unwrap();
        let mut session = session(false, dir.path());
        expect(&mut session, "NOOP", "250 2.0.0 OK");
        expect(&mut session, "VRFY postmaster", "252");
        expect(&mut session, "EXPN staff", "502 5.5.1");
        expect(&mut session, "HELP", "214-");
        expect(&mut session, "FOO", "500 5.5.2");
        expect(&mut session, "EHLO", "501 5.5.4");
        expect(&mut session, "HELO a", "250");
        expect(&mut session, "MAIL FROM:<a@x> SMTPUTF8", "555");
        let (replies, next) = run(&mut session, "QUIT");
        assert_eq!(replies, "221 2.0.0 Bye\r\n");
        assert!(matches!(next, Next::Quit));
    }

    // ---- The session and the DATA phase on a mock transport: whole dialogues, no socket ----

    /// The client's address, as the mock transport reports it.
    const PEER: &str = "192.0.2.7:40000";

    const GREETING: &str = "220 mx.test ESMTP switchboard\r\n";
    const EHLO_REPLY: &str = "250-mx.test greets client\r\n250-SIZE 1000\r\n250-8BITMIME\r\n\
                              250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250 STARTTLS\r\n";
    /// The `EHLO` reply over TLS: no more `STARTTLS`.
    const EHLO_REPLY_TLS: &str = "250-mx.test greets client\r\n250-SIZE 1000\r\n\
                                  250-8BITMIME\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n";
    const SENDER_OK: &str = "250 2.1.0 Sender OK\r\n";
    const RECIPIENT_OK: &str = "250 2.1.5 Recipient OK\r\n";
    const GO_AHEAD: &str = "354 End data with <CR><LF>.<CR><LF>\r\n";
    /// A message stored; [`replies`] writes its id as `ID`.
    const QUEUED: &str = "250 2.0.0 OK: queued as ID\r\n";
    const BYE: &str = "221 2.0.0 Bye\r\n";

    /// The configuration of most tests: messages of up to 1000 bytes, no TLS required.
    fn config(maildir: &Path) -> Arc<Config> {
        config_with(maildir, 1000, false)
    }

    /// A new session on a mock transport, its greeting sent.
    async fn connect(config: Arc<Config>) -> MockTransport {
        let peer: SocketAddr = PEER.parse().unwrap();
        MockTransport::builder()
            .peername(peer)
            .connect(Session::new(config))
            .await
    }

    /// Everything the server wrote, as text, with the id of each stored message replaced by
    /// `ID` once checked: a message of that id is in `maildir/new`.
    fn replies(mock: &MockTransport, maildir: &Path) -> String {
        const PREFIX: &str = "queued as ";
        let written = String::from_utf8_lossy(&mock.written()).into_owned();
        let mut out = String::new();
        let mut rest = &written[..];
        while let Some(at) = rest.find(PREFIX) {
            let (before, after) = rest.split_at(at + PREFIX.len());
            let end = after.find("\r\n").unwrap_or(after.len());
            let id = &after[..end];
            let path = maildir.join("new").join(format!("{id}.mx.test"));
            assert!(path.is_file(), "no message stored as {id:?}");
            out.push_str(before);
            out.push_str("ID");
            rest = &after[end..];
        }
        out.push_str(rest);
        out
    }

    /// The messages in `maildir/new`, whole, sorted.
    fn stored_raw(maildir: &Path) -> Vec<String> {
        let mut messages: Vec<String> = fs::read_dir(maildir.join("new"))
            .unwrap()
            .map(|entry| String::from_utf8(fs::read(entry.unwrap().path()).unwrap()).unwrap())
            .collect();
        messages.sort();
        messages
    }

    /// The messages in `maildir/new` as the client sent them: without the `Return-Path:` and
    /// `Received:` fields the server puts in front, sorted.
    fn stored(maildir: &Path) -> Vec<String> {
        let mut messages: Vec<String> = stored_raw(maildir)
            .iter()
            .map(|message| {
                let mut rest = &message[..];
                for field in ["Return-Path:", "Received:"] {
                    assert!(rest.starts_with(field), "{message:?}");
                    // The field and its folded lines, which start with a tab.
                    loop {
                        rest = &rest[rest.find("\r\n").unwrap() + 2..];
                        if !rest.starts_with('\t') {
                            break;
                        }
                    }
                }
                rest.to_owned()
            })
            .collect();
        messages.sort();
        messages
    }

    // ANCHOR: test_smtp_dialogue
    /// A whole SMTP dialogue, from the greeting to `QUIT`, cut at every split point and sent
    /// one byte at a time too. However the bytes arrive, the server sends the same replies,
    /// stores the same message (dot-unstuffed, without the final dot) and closes.
    #[actix::test]
    async fn test_smtp_dialogue() {
        let input = "EHLO client\r\n\
                     MAIL FROM:<alice@example.org>\r\n\
                     RCPT TO:<bob@mx.test>\r\n\
                     DATA\r\n\
                     Subject: hi\r\n\
                     \r\n\
                     ..a line that starts with a dot\r\n\
                     .\r\n\
                     QUIT\r\n";
        let expected = [
            GREETING,
            EHLO_REPLY,
            SENDER_OK,
            RECIPIENT_OK,
            GO_AHEAD,
            QUEUED,
            BYE,
        ]
        .concat();
        for chunking in Chunking::every(input.len()) {
            let maildir = tempfile::tempdir().unwrap();
            let mock = connect(config(maildir.path())).await;

            mock.feed_chunked(input, &chunking).await;

            assert_eq!(replies(&mock, maildir.path()), expected, "{chunking:?}");
            assert_eq!(
                stored(maildir.path()),
                ["Subject: hi\r\n\r\n.a line that starts with a dot\r\n"],
                "{chunking:?}"
            );
            assert_eq!(mock.ending(), Some(Ending::Closed), "{chunking:?}");
        }
    }
    // ANCHOR_END: test_smtp_dialogue

    // ANCHOR: test_smtp_switch_to_data
    /// `DATA` switches to the DATA phase, handing it the bytes that came after `DATA\r\n` in
    /// the same chunk. After the final dot, the DATA phase switches back to the session, handing
    /// it the bytes that came after the dot: the session answers them as if it had never left.
    #[actix::test]
    async fn test_smtp_switch_to_data() {
        let maildir = tempfile::tempdir().unwrap();
        let (mock, session) = MockTransport::builder().attach(Session::new(config(maildir.path())));
        mock.feed("EHLO client\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n")
            .await;
        mock.take_commands();

        // `DATA` and the start of the message, in one chunk.
        mock.feed("DATA\r\nSubject: hi\r\n").await;
        let sent = mock.take_commands();
        let [Sent::Write(reply), Sent::SetProtocol { leftover, .. }] = &sent[..] else {
            panic!("DATA sent {sent:?}");
        };
        assert_eq!(reply, GO_AHEAD);
        assert_eq!(leftover, "Subject: hi\r\n");
        assert!(
            mock.protocol()
                .downcast::<ProtocolActor<DataPhase>>()
                .is_some()
        );
        assert!(
            !session.connected(),
            "the session's actor stopped after the switch"
        );

        // The end of the message and the next command, in one chunk.
        mock.feed("\r\nHello\r\n.\r\nNOOP\r\n").await;
        let sent = mock.take_commands();
        let [
            Sent::Write(stored_reply),
            Sent::SetProtocol { protocol, leftover },
            Sent::Write(noop_reply),
        ] = &sent[..]
        else {
            panic!("the end of the message sent {sent:?}");
        };
        assert!(stored_reply.starts_with(b"250 2.0.0 OK: queued as "));
        assert_eq!(leftover, "NOOP\r\n");
        assert!(protocol.downcast::<ProtocolActor<Session>>().is_some());
        assert_eq!(noop_reply, "250 2.0.0 OK\r\n");
        assert_eq!(stored(maildir.path()), ["Subject: hi\r\n\r\nHello\r\n"]);
    }
    // ANCHOR_END: test_smtp_switch_to_data

    /// Two transactions pipelined whole, `HELO` to `QUIT`, at every split point: each DATA
    /// phase hands the next transaction back, and both messages are stored, with the trace
    /// fields of a `HELO` session from the mock's peer.
    #[actix::test]
    async fn two_messages_pipelined_at_every_split_point() {
        let input = "HELO client\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\none\r\n.\r\n\
                     MAIL FROM:<c@x>\r\nRCPT TO:<d@y>\r\nRCPT TO:<e@y>\r\nDATA\r\ntwo\r\n.\r\n\
                     QUIT\r\n";
        let transaction = [SENDER_OK, RECIPIENT_OK, GO_AHEAD, QUEUED].concat();
        let expected = [
            GREETING,
            "250 mx.test\r\n",
            &transaction,
            SENDER_OK,
            RECIPIENT_OK,
            RECIPIENT_OK,
            GO_AHEAD,
            QUEUED,
            BYE,
        ]
        .concat();
        for chunking in Chunking::every(input.len()) {
            let maildir = tempfile::tempdir().unwrap();
            let mock = connect(config(maildir.path())).await;
            mock.feed_chunked(input, &chunking).await;
            assert_eq!(replies(&mock, maildir.path()), expected, "{chunking:?}");
            assert_eq!(
                stored(maildir.path()),
                ["one\r\n", "two\r\n"],
                "{chunking:?}"
            );
            assert_eq!(mock.ending(), Some(Ending::Closed), "{chunking:?}");
        }
        let maildir = tempfile::tempdir().unwrap();
        let mock = connect(config(maildir.path())).await;
        mock.feed(input).await;
        let raw = stored_raw(maildir.path());
        let (first, second) = (&raw[0], &raw[1]);
        assert!(
            first.starts_with("Return-Path: <a@x>\r\nReceived: from client ([192.0.2.7])\r\n")
                && first.contains("\tby mx.test with SMTP id ")
                && first.contains("\r\n\tfor <b@y>;\r\n"),
            "{first:?}"
        );
        // Two recipients: no `for`.
        assert!(
            second.starts_with("Return-Path: <c@x>\r\n") && !second.contains("\tfor <"),
            "{second:?}"
        );
    }

    /// Errors, at every split point: commands out of sequence (503), unknown (500), not
    /// implemented (502), a line over 512 bytes (500 5.5.6, then the next line is read as a
    /// command again), and nothing read after `QUIT`.
    #[actix::test]
    async fn errors_at_every_split_point() {
        let input = format!(
            "MAIL FROM:<a@x>\r\nFOO\r\nEXPN staff\r\nDATA\r\n{}\r\nNOOP\r\nQUIT\r\nNOOP\r\n",
            "x".repeat(520)
        );
        let expected = [
            GREETING,
            "503 5.5.1 Bad sequence of commands\r\n",
            "500 5.5.2 Command not recognized\r\n",
            "502 5.5.1 Command not implemented\r\n",
            "503 5.5.1 Bad sequence of commands\r\n",
            "500 5.5.6 Line too long\r\n",
            "250 2.0.0 OK\r\n",
            BYE,
        ]
        .concat();
        for chunking in Chunking::every(input.len()) {
            let maildir = tempfile::tempdir().unwrap();
            let mock = connect(config(maildir.path())).await;
            mock.feed_chunked(input.clone(), &chunking).await;
            assert_eq!(replies(&mock, maildir.path()), expected, "{chunking:?}");
            assert_eq!(mock.command_names().last(), Some(&"Close"), "{chunking:?}");
            assert_eq!(mock.ending(), Some(Ending::Closed), "{chunking:?}");
        }
    }

    /// The replies to the commands of one chunk go out in one write (RFC 2920).
    #[actix::test]
    async fn pipelined_commands_are_answered_in_one_write() {
        let maildir = tempfile::tempdir().unwrap();
        let mock = connect(config(maildir.path())).await;
        mock.feed("EHLO client\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nRCPT TO:<c@y>\r\nNOOP\r\n")
            .await;
        let replies = [
            EHLO_REPLY,
            SENDER_OK,
            RECIPIENT_OK,
            RECIPIENT_OK,
            "250 2.0.0 OK\r\n",
        ];
        assert_eq!(mock.writes(), [GREETING, &replies.concat()]);
        assert!(!mock.is_closing());
    }

    /// `STARTTLS` (with `--require-tls`): `220`, then the upgrade; the session starts over as
    /// RFC 3207 §4.2 says (no transaction, no `EHLO`, no second `STARTTLS`), and the message
    /// sent over TLS is stored as `ESMTPS`. Both halves at every split point.
    #[actix::test]
    async fn starttls_upgrades_and_starts_the_session_over() {
        let before = "EHLO client\r\nMAIL FROM:<a@x>\r\nSTARTTLS\r\n";
        let after = "MAIL FROM:<a@x>\r\nEHLO client\r\nSTARTTLS\r\nMAIL FROM:<a@x>\r\n\
                     RCPT TO:<b@y>\r\nDATA\r\nhi\r\n.\r\n";
        let expected_before = [
            GREETING,
            EHLO_REPLY,
            "530 5.7.0 Must issue a STARTTLS command first\r\n",
            "220 2.0.0 Ready to start TLS\r\n",
        ]
        .concat();
        let expected_after = [
            "503 5.5.1 Bad sequence of commands\r\n",
            EHLO_REPLY_TLS,
            "503 5.5.1 TLS already active\r\n",
            SENDER_OK,
            RECIPIENT_OK,
            GO_AHEAD,
            QUEUED,
        ]
        .concat();
        // A split point past the end of `before` delivers it whole.
        for chunking in Chunking::every(after.len()) {
            let maildir = tempfile::tempdir().unwrap();
            let mock = connect(config_with(maildir.path(), 1000, true)).await;
            mock.feed_chunked(before, &chunking).await;
            assert_eq!(
                replies(&mock, maildir.path()),
                expected_before,
                "{chunking:?}"
            );
            let sent = mock.take_commands();
            assert!(
                matches!(
                    sent.last(),
                    Some(Sent::StartTls { plaintext: BufferedPlaintext::Discard, leftover })
                        if leftover.is_empty()
                ),
                "{chunking:?}: {sent:?}"
            );

            mock.feed_chunked(after, &chunking).await;
            assert_eq!(
                replies(&mock, maildir.path()),
                [&expected_before[..], &expected_after].concat(),
                "{chunking:?}"
            );
            let stored = stored_raw(maildir.path());
            assert!(stored[0].contains(" with ESMTPS id "), "{stored:?}");
            assert_eq!(
                mock.command_names()
                    .iter()
                    .filter(|&&name| name == "StartTls")
                    .count(),
                1
            );
        }
    }

    /// What a client pipelines behind `STARTTLS` arrived in the clear and is never executed
    /// (RFC 3207 §4.2, CVE-2011-0411). What came in the same chunk as the command, the session
    /// hands to the upgrade, and the transport refuses it and ends the connection; what came in
    /// a later chunk, the transport has not delivered, and drops.
    #[actix::test]
    async fn plaintext_pipelined_behind_starttls_is_never_executed() {
        let input = "EHLO client\r\nSTARTTLS\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<b@y>\r\n";
        let starttls_end = input.find("STARTTLS\r\n").unwrap() + "STARTTLS\r\n".len();
        let before_tls = [GREETING, EHLO_REPLY, "220 2.0.0 Ready to start TLS\r\n"].concat();
        for chunking in Chunking::every(input.len()) {
            let maildir = tempfile::tempdir().unwrap();
            let mock = connect(config(maildir.path())).await;
            mock.feed_chunked(input, &chunking).await;
            let sent = mock.take_commands();
            let Some(Sent::StartTls { leftover, .. }) = sent.last() else {
                panic!("{chunking:?}: {sent:?}");
            };
            // The chunk that ends the STARTTLS line, from there on.
            let chunk_end = chunking
                .split(&Bytes::from_static(input.as_bytes()))
                .into_iter()
                .scan(0, |end, chunk| {
                    *end += chunk.len();
                    Some(*end)
                })
                .find(|&end| end >= starttls_end)
                .unwrap();
            assert_eq!(leftover, &input[starttls_end..chunk_end], "{chunking:?}");
            if leftover.is_empty() {
                // Over TLS: no transaction was started.
                mock.feed("EHLO client\r\nRCPT TO:<b@y>\r\n").await;
                let expected = [
                    &before_tls[..],
                    EHLO_REPLY_TLS,
                    "503 5.5.1 Bad sequence of commands\r\n",
                ]
                .concat();
                assert_eq!(replies(&mock, maildir.path()), expected, "{chunking:?}");
            } else {
                assert_eq!(replies(&mock, maildir.path()), before_tls, "{chunking:?}");
                assert_eq!(mock.ending(), Some(Ending::Lost), "{chunking:?}");
                mock.protocol_stopped().await;
            }
        }
    }

    const TIMED_OUT: &str = "421 4.4.2 mx.test Error: timeout exceeded\r\n";

    /// A new session on a mock transport with an idle timeout of `timeout`, attached as the
    /// server attaches it, its greeting sent.
    async fn connect_timed(config: Arc<Config>, timeout: Duration) -> MockTransport {
        MockTransport::builder()
            .peername(PEER.parse::<SocketAddr>().unwrap())
            .idle_timeout(timeout)
            .connect(Session::new(config))
            .await
    }

    /// A session idle for the command timeout says `421` and closes: at the start, after a
    /// command, and after a message, once the DATA phase has switched back to the session.
    #[actix::test]
    async fn an_idle_session_is_told_421_and_closed() {
        let timeout = Duration::from_secs(300);
        for commands in [
            "",
            "EHLO client\r\n",
            "HELO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nhi\r\n.\r\n",
        ] {
            let maildir = tempfile::tempdir().unwrap();
            let mock = connect_timed(config(maildir.path()), timeout).await;
            mock.feed(commands).await;
            mock.advance(timeout - Duration::from_secs(1)).await;
            assert!(!mock.is_closing(), "{commands:?}");
            mock.take_written();
            mock.advance(Duration::from_secs(1)).await;
            assert_eq!(mock.take_written(), TIMED_OUT, "{commands:?}");
            assert_eq!(mock.ending(), Some(Ending::Closed), "{commands:?}");
            mock.protocol_stopped().await;
        }
    }

    /// In the middle of a message, the DATA phase says `421` and closes; the message is not
    /// stored.
    #[actix::test]
    async fn a_message_idle_for_the_timeout_is_dropped_with_421() {
        let timeout = Duration::from_secs(300);
        let maildir = tempfile::tempdir().unwrap();
        let mock = connect_timed(config(maildir.path()), timeout).await;
        mock.feed("HELO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nhalf a mess")
            .await;
        assert!(
            mock.protocol()
                .downcast::<ProtocolActor<DataPhase>>()
                .is_some()
        );
        mock.take_written();
        mock.advance(timeout).await;
        assert_eq!(mock.take_written(), TIMED_OUT);
        assert_eq!(mock.ending(), Some(Ending::Closed));
        mock.protocol_stopped().await;
        assert!(stored(maildir.path()).is_empty());
    }

    /// Bytes do not keep a session alive, commands do: a command line still incomplete after
    /// the command timeout (a client sending it a byte at a time) is answered `421` once the
    /// timeout has passed, and not executed, whatever comes after. A command complete within
    /// the timeout is.
    #[actix::test]
    async fn a_command_sent_too_slowly_is_told_421() {
        let maildir = tempfile::tempdir().unwrap();
        let config = Arc::new(Config {
            hostname: "mx.test".into(),
            max_size: 1000,
            require_tls: false,
            tls: acceptor(),
            maildir: Maildir::create(maildir.path(), "mx.test").unwrap(),
            command_timeout: Some(Duration::from_millis(100)),
        });
        let mock = connect(config).await;
        mock.feed("NOOP\r\nNO").await;
        mock.feed("O").await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        // The first NOOP came in time; the second was begun 150 ms ago.
        mock.feed("P\r\n").await;
        assert_eq!(
            mock.take_written(),
            [GREETING, "250 2.0.0 OK\r\n", TIMED_OUT].concat()
        );
        assert_eq!(mock.ending(), Some(Ending::Closed));
    }

    /// A failed handshake ends the connection, and the session with it.
    #[actix::test]
    async fn a_failed_handshake_ends_the_session() {
        let maildir = tempfile::tempdir().unwrap();
        let mock = MockTransport::builder()
            .refuse_start_tls(TlsError::new(TlsErrorKind::Handshake, "no shared cipher"))
            .connect(Session::new(config(maildir.path())))
            .await;
        mock.feed("STARTTLS\r\n").await;
        assert_eq!(
            mock.take_written(),
            [GREETING, "220 2.0.0 Ready to start TLS\r\n"].concat()
        );
        assert_eq!(mock.ending(), Some(Ending::Lost));
        mock.protocol_stopped().await;
    }

    /// A message over `max_size` (here 16 bytes) is read to its end, refused with 552 and not
    /// stored; the session goes on. A `SIZE` over the limit is refused at `MAIL`.
    #[actix::test]
    async fn a_message_too_big_is_refused_at_every_split_point() {
        let input = "HELO c\r\nMAIL FROM:<a@x> SIZE=17\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\n\
                     DATA\r\n0123456789abcdefg\r\n.\r\nNOOP\r\n";
        let expected = [
            GREETING,
            "250 mx.test\r\n",
            &format!("{TOO_BIG}\r\n"),
            SENDER_OK,
            RECIPIENT_OK,
            GO_AHEAD,
            &format!("{TOO_BIG}\r\n"),
            "250 2.0.0 OK\r\n",
        ]
        .concat();
        for chunking in Chunking::every(input.len()) {
            let maildir = tempfile::tempdir().unwrap();
            let mock = connect(config_with(maildir.path(), 16, false)).await;
            mock.feed_chunked(input, &chunking).await;
            assert_eq!(replies(&mock, maildir.path()), expected, "{chunking:?}");
            assert!(stored(maildir.path()).is_empty(), "{chunking:?}");
            assert!(
                mock.protocol()
                    .downcast::<ProtocolActor<Session>>()
                    .is_some()
            );
        }
    }

    /// A message that cannot be stored is answered 451, and the session goes on.
    #[actix::test]
    async fn a_message_that_cannot_be_stored_is_answered_451() {
        let maildir = tempfile::tempdir().unwrap();
        let mock = connect(config(maildir.path())).await;
        fs::remove_dir_all(maildir.path().join("new")).unwrap();
        mock.feed("HELO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nhi\r\n.\r\nNOOP\r\n")
            .await;
        let written = String::from_utf8_lossy(&mock.written()).into_owned();
        assert!(
            written.ends_with(
                "451 4.3.0 Cannot store the message now; try again later\r\n250 2.0.0 OK\r\n"
            ),
            "{written:?}"
        );
    }

    /// A connection lost in the middle of a message stops the DATA phase (the session's actor
    /// stopped at the switch); the message is not stored.
    #[actix::test]
    async fn a_connection_lost_during_data_stops_both_protocols() {
        let maildir = tempfile::tempdir().unwrap();
        let (mock, session) = MockTransport::builder().attach(Session::new(config(maildir.path())));
        mock.feed("HELO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\nhalf a mess")
            .await;
        assert!(
            mock.protocol()
                .downcast::<ProtocolActor<DataPhase>>()
                .is_some()
        );
        mock.lose(Some(io::Error::from(io::ErrorKind::ConnectionReset)))
            .await;
        mock.protocol_stopped().await;
        assert!(!session.connected());
        assert!(stored(maildir.path()).is_empty());
    }
}
