//! The DATA phase: a protocol of its own, switched in after `354` and switched out after the
//! final dot, which reads the message content (RFC 5321 §4.5.2, §3.3) with a [`MessageReader`].
//! A client that stops sending the message for `--command-timeout` is told `421` and the
//! connection closed, as in the command phase.

use std::{
    io,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use actix::prelude::*;
use bytes::Bytes;
use switchboard::{ProtocolBuilder, prelude::*};

use crate::{
    Config,
    content::{MessageReader, TooBig},
    envelope::Envelope,
    maildir::Maildir,
    session::{Session, session_protocol, timeout_reply},
};

/// The reply to a message over `--max-size`.
pub(crate) const TOO_BIG: &str = "552 5.3.4 Message size exceeds fixed maximum message size";

/// The handle the transport delivers a DATA phase's events through: opted in to [`TimedOut`],
/// as the session's is ([`session_protocol`]).
pub(crate) fn data_protocol(data: Addr<DataPhase>) -> ProtocolBuilder<DataPhase> {
    ProtocolHandle::builder(data).timed_out()
}

/// The DATA-phase protocol of one message. It stores the message, answers, and hands the
/// connection back to the session it came from, with the bytes that followed the final dot.
pub(crate) struct DataPhase {
    config: Arc<Config>,
    envelope: Envelope,
    /// The command phase, to hand the connection back to.
    session: Addr<Session>,
    transport: Option<TransportHandle>,
    reader: MessageReader,
    /// Timed out: the `421` is written and the connection closing; nothing more is read.
    timed_out: bool,
}

impl DataPhase {
    pub(crate) fn new(config: Arc<Config>, envelope: Envelope, session: Addr<Session>) -> Self {
        let reader = MessageReader::new(config.max_size);
        DataPhase {
            config,
            envelope,
            session,
            transport: None,
            reader,
            timed_out: false,
        }
    }

    /// Answers the message, then gives the connection back to the session, bytes that
    /// followed the final dot first.
    fn hand_back(&mut self, reply: &str, leftover: Bytes, ctx: &mut Context<Self>) {
        let Some(transport) = &self.transport else {
            return;
        };
        // ANCHOR: hand_back
        transport.write(format!("{reply}\r\n"));
        transport.set_protocol(session_protocol(self.session.clone()), leftover);
        // This message is over: from the next byte on, the session reads the connection again.
        ctx.stop();
        // ANCHOR_END: hand_back
    }
}

impl Actor for DataPhase {
    type Context = Context<Self>;
}

impl Handler<ConnectionMade> for DataPhase {
    type Result = ();

    fn handle(&mut self, msg: ConnectionMade, _: &mut Context<Self>) {
        self.transport = Some(msg.transport);
    }
}

impl Handler<DataReceived> for DataPhase {
    type Result = ();

    fn handle(&mut self, msg: DataReceived, ctx: &mut Context<Self>) {
        let DataReceived { data, ack, .. } = msg;
        if self.timed_out {
            return;
        }
        let Some(end) = self.reader.feed(&data) else {
            return;
        };
        let leftover = data.slice(end..);
        let message = match self.reader.take_message() {
            Ok(message) => message,
            Err(TooBig) => {
                tracing::info!(limit = self.config.max_size, "message too big: dropped");
                self.hand_back(TOO_BIG, leftover, ctx);
                return;
            }
        };
        // ANCHOR: store
        // Storing is file I/O: it runs on the blocking pool while this actor waits. Meanwhile
        // the delivery's `Ack` is kept, so the transport sends nothing more (the client may have
        // pipelined its next commands) until the reply and the hand-back are out.
        let id = Maildir::new_id();
        let unix_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |now| now.as_secs());
        let trace = self
            .envelope
            .trace_fields(&self.config.hostname, &id, unix_time);
        let maildir = self.config.maildir.clone();
        let store = {
            let id = id.clone();
            move || maildir.deliver(&id, &[trace.as_bytes(), &message])
        };
        let stored = async move {
            tokio::task::spawn_blocking(store)
                .await
                .unwrap_or_else(|err| Err(io::Error::other(err)))
        };
        ctx.wait(stored.into_actor(self).map(move |stored, act, ctx| {
            let reply = match stored {
                Ok(path) => {
                    println!("stored {}", path.display());
                    let Envelope {
                        from, recipients, ..
                    } = &act.envelope;
                    tracing::info!(%id, %from, ?recipients, "message stored");
                    format!("250 2.0.0 OK: queued as {id}")
                }
                Err(err) => {
                    tracing::error!(%err, "cannot store a message");
                    "451 4.3.0 Cannot store the message now; try again later".to_owned()
                }
            };
            act.hand_back(&reply, leftover, ctx);
            drop(ack);
        }));
        // ANCHOR_END: store
    }
}

impl Handler<TimedOut> for DataPhase {
    type Result = ();

    /// Nothing moved for `--command-timeout` in the middle of a message. RFC 5321 gives the
    /// client 3 minutes per data block (§4.5.3.2.5) and sets nothing for the server: the one
    /// idle timeout of the connection, the command timeout (5 minutes by default), stands for
    /// it. The message is dropped, the client told `421`, and the connection closed. (While a
    /// message is being stored, this actor waits, and the event with it.)
    fn handle(&mut self, msg: TimedOut, _: &mut Context<Self>) {
        let Some(transport) = &self.transport else {
            return;
        };
        if !self.timed_out {
            tracing::info!(timeout = %msg.timeout, "message incomplete: closing");
            self.timed_out = true;
            transport.write(timeout_reply(&self.config.hostname));
            transport.close();
        }
    }
}

impl Handler<ConnectionLost> for DataPhase {
    type Result = ();

    fn handle(&mut self, msg: ConnectionLost, ctx: &mut Context<Self>) {
        // The connection ended in the middle of a message, which is dropped. The session hears
        // of it too, as it would have had it been attached.
        self.session.do_send(msg);
        ctx.stop();
    }
}
