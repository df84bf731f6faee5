//! The command phase: one `Session` per connection, from the greeting to `QUIT`. It answers
//! commands, upgrades the connection to TLS on `STARTTLS`, and on `DATA` hands the connection
//! to a [`DataPhase`], which hands it back after the message.

use std::{net::SocketAddr, sync::Arc};

use actix::prelude::*;
use bytes::BytesMut;
use switchboard::prelude::*;

use crate::{
    Config,
    command::{self, Command, ParseError},
    data::{DataPhase, TOO_BIG},
    envelope::{Envelope, Hello},
    lines::{Line, LineReader},
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

/// Where the session stands (RFC 5321 §4.1.4).
#[derive(Debug)]
enum Stage {
    /// Before `HELO` or `EHLO`, and again right after `STARTTLS`.
    Connected,
    /// After `HELO` or `EHLO`: ready for `MAIL`.
    Greeted(Hello),
    /// After `MAIL`: collecting recipients.
    Mail(Hello, Transaction),
}

/// A mail transaction before `DATA`.
#[derive(Debug)]
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

/// The command-phase protocol of one connection.
pub(crate) struct Session {
    config: Arc<Config>,
    transport: Option<TransportHandle>,
    peer: Option<SocketAddr>,
    lines: LineReader,
    stage: Stage,
    /// Plaintext is over: `STARTTLS` was accepted (the handshake is under way, or done).
    tls: bool,
    /// `QUIT` was answered; anything more is ignored.
    quitting: bool,
    /// The replies to the commands of one chunk, written together (RFC 2920 pipelining).
    replies: BytesMut,
}

impl Session {
    pub(crate) fn new(config: Arc<Config>) -> Self {
        Session {
            config,
            transport: None,
            peer: None,
            lines: LineReader::default(),
            stage: Stage::Connected,
            tls: false,
            quitting: false,
            replies: BytesMut::new(),
        }
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
    fn flush(&mut self, transport: &TransportHandle) {
        if !self.replies.is_empty() {
            transport.write(self.replies.split().freeze());
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
}

impl Actor for Session {
    type Context = Context<Self>;
}

impl Handler<ConnectionMade> for Session {
    type Result = ();

    fn handle(&mut self, msg: ConnectionMade, ctx: &mut Context<Self>) {
        if self.transport.is_some() {
            // Back from the DATA phase: `SetProtocol` makes every protocol it attaches start
            // with `ConnectionMade`. The session goes on where it was, without a new greeting.
            return;
        }
        let transport = msg.transport;
        transport.write(format!(
            "220 {} ESMTP switchboard\r\n",
            self.config.hostname
        ));
        // The client's address, for the `Received:` field; `wait` holds every command back
        // until it is known.
        ctx.wait(transport.peer_addr().into_actor(self).map(|peer, act, _| {
            tracing::info!(?peer, "connection");
            act.peer = peer;
        }));
        self.transport = Some(transport);
    }
}

impl Handler<DataReceived> for Session {
    type Result = ();

    fn handle(&mut self, msg: DataReceived, ctx: &mut Context<Self>) {
        let Some(transport) = self.transport.clone() else {
            return;
        };
        if self.quitting {
            return;
        }
        let mut input = msg.data;
        while let Some(line) = self.lines.next_line(&mut input) {
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
                    // The 220 goes out in plaintext, before the handshake: the transport keeps
                    // the order of what it is sent.
                    self.flush(&transport);
                    // Whatever the client sent after STARTTLS arrived in the clear and must
                    // never count as part of the TLS session (RFC 3207 §4.2, CVE-2011-0411).
                    // What this chunk still holds is dropped here; what the transport has read
                    // and not delivered, `StartTls` drops.
                    if !input.is_empty() {
                        tracing::warn!(bytes = input.len(), "plaintext after STARTTLS dropped");
                    }
                    let handshake = transport.start_tls(start);
                    ctx.spawn(handshake.into_actor(self).map(|result, act, _| {
                        if let Err(err) = result {
                            // The transport ends the connection: `ConnectionLost` follows.
                            tracing::info!(%err, peer = ?act.peer, "TLS handshake failed");
                        }
                    }));
                    return;
                }
                // ANCHOR_END: starttls
                // ANCHOR: switch_to_data
                Next::Data(envelope) => {
                    // The 354, and the replies before it, go out before anything the DATA
                    // phase writes.
                    self.flush(&transport);
                    let data = DataPhase::new(self.config.clone(), envelope, ctx.address());
                    // The bytes after the DATA line are the start of the message (a client
                    // may pipeline it): they reach the DATA phase first.
                    transport.set_protocol(data.start(), input);
                    return;
                }
                // ANCHOR_END: switch_to_data
                Next::Quit => {
                    self.quitting = true;
                    self.flush(&transport);
                    transport.close();
                    return;
                }
            }
        }
        self.flush(&transport);
    }
}

impl Handler<ConnectionLost> for Session {
    type Result = ();

    fn handle(&mut self, ConnectionLost(err): ConnectionLost, ctx: &mut Context<Self>) {
        match err {
            None => tracing::info!(peer = ?self.peer, "connection closed"),
            Some(err) => tracing::info!(%err, peer = ?self.peer, "connection lost"),
        }
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use switchboard::tls::SelfSigned;

    use super::*;
    use crate::maildir::Maildir;

    fn session(require_tls: bool, maildir: &Path) -> Session {
        Session::new(Arc::new(Config {
            hostname: "mx.test".into(),
            max_size: 1000,
            require_tls,
            tls: SelfSigned::localhost().unwrap().acceptor().unwrap(),
            maildir: Maildir::create(maildir, "mx.test").unwrap(),
        }))
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
}
