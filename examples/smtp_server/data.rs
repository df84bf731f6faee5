//! The DATA phase: a protocol of its own, switched to after `354` and switching back to the
//! session after the final dot, which reads the message content (RFC 5321 §4.5.2, §3.3) with a
//! [`MessageReader`]. A client that stops sending the message for `--command-timeout` is told
//! `421` and the connection closed, as in the command phase.

use std::{
    io,
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use switchboard::prelude::*;

use crate::{
    content::{MessageReader, TooBig},
    envelope::Envelope,
    maildir::Maildir,
    session::{Session, timeout_reply},
};

/// The reply to a message over `--max-size`.
pub(crate) const TOO_BIG: &str = "552 5.3.4 Message size exceeds fixed maximum message size";

/// The DATA-phase protocol of one message. It stores the message, answers, and switches back
/// to the session it came from, with the bytes that followed the final dot.
#[derive(Debug)]
pub(crate) struct DataPhase {
    envelope: Envelope,
    /// The command phase as it was at `DATA`, to switch back to.
    session: Session,
    reader: MessageReader,
    /// Timed out: the `421` is written and the connection closing; nothing more is read.
    timed_out: bool,
}

impl DataPhase {
    pub(crate) fn new(envelope: Envelope, session: Session) -> Self {
        DataPhase {
            envelope,
            reader: MessageReader::new(session.config().max_size),
            session,
            timed_out: false,
        }
    }

    /// Answers the message, then switches back to the session, the bytes that followed the
    /// final dot first.
    fn hand_back(&mut self, reply: &str, rest: Bytes, cx: &mut Ctx<'_, Self>) {
        // ANCHOR: hand_back
        cx.write(format!("{reply}\r\n"));
        // This message is over: from the next byte on, the session reads the connection again.
        cx.switch_with(self.session.clone(), rest);
        // ANCHOR_END: hand_back
    }
}

impl Protocol for DataPhase {
    /// The bytes as they come: the [`MessageReader`] finds the end of the message in them, and
    /// what follows goes back to the session.
    type Codec = Raw;

    fn data_received(&mut self, data: Bytes, cx: &mut Ctx<'_, Self>) {
        if self.timed_out {
            return;
        }
        let Some(end) = self.reader.feed(&data) else {
            return;
        };
        let rest = data.slice(end..);
        let config = self.session.config().clone();
        let message = match self.reader.take_message() {
            Ok(message) => message,
            Err(TooBig) => {
                tracing::info!(limit = config.max_size, "message too big: dropped");
                self.hand_back(TOO_BIG, rest, cx);
                return;
            }
        };
        // ANCHOR: store
        // Storing is file I/O: it runs on the blocking pool while this protocol waits. The
        // transport delivers nothing more meanwhile (the client may have pipelined its next
        // commands), until the reply and the switch back are out.
        let id = Maildir::new_id();
        let unix_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |now| now.as_secs());
        let trace = self.envelope.trace_fields(&config.hostname, &id, unix_time);
        let store = {
            let id = id.clone();
            move || config.maildir.deliver(&id, &[trace.as_bytes(), &message])
        };
        let stored = async move {
            tokio::task::spawn_blocking(store)
                .await
                .unwrap_or_else(|err| Err(io::Error::other(err)))
        };
        cx.wait(stored, move |stored, this, cx| {
            let reply = match stored {
                Ok(path) => {
                    println!("stored {}", path.display());
                    let Envelope {
                        from, recipients, ..
                    } = &this.envelope;
                    tracing::info!(%id, %from, ?recipients, "message stored");
                    format!("250 2.0.0 OK: queued as {id}")
                }
                Err(err) => {
                    tracing::error!(%err, "cannot store a message");
                    "451 4.3.0 Cannot store the message now; try again later".to_owned()
                }
            };
            this.hand_back(&reply, rest, cx);
        });
        // ANCHOR_END: store
    }

    /// Nothing moved for `--command-timeout` in the middle of a message. RFC 5321 gives the
    /// client 3 minutes per data block (§4.5.3.2.5) and sets nothing for the server: the one
    /// idle timeout of the connection, the command timeout (5 minutes by default), stands for
    /// it. The message is dropped, the client told `421`, and the connection closed. (While a
    /// message is being stored, this protocol waits, and the event with it.)
    fn timed_out(&mut self, timeout: Timeout, cx: &mut Ctx<'_, Self>) {
        if !self.timed_out {
            tracing::info!(%timeout, "message incomplete: closing");
            self.timed_out = true;
            cx.write(timeout_reply(&self.session.config().hostname));
            cx.close();
        }
    }
}
