//! Write flow control as the actors see it: the write-buffer limits, the watermark rule and the
//! ledger come from the I/O-free core; this adds the reply channel the ledger resolves and the
//! receipt a transport's `Write` handler returns.

use std::io;

use actix::{Actor, Message, dev::MessageResponse, dev::OneshotSender};
use switchboard_core::{Ticket, Waiter};

use crate::{WriteError, error::duplicate_error};

/// The ledger of a transport actor: its waiters are the reply channels of acknowledged writes.
pub type WriteLedger = switchboard_core::WriteLedger<WriteReply>;

/// The reply channel of an acknowledged write (or of a `WriteEof`): what a transport actor's
/// [`WriteLedger`] resolves.
#[derive(Debug)]
pub struct WriteReply(pub OneshotSender<io::Result<()>>);

impl Waiter for WriteReply {
    fn resolve(self, result: Result<(), &io::Error>) {
        // The caller may have stopped waiting: nobody is left to tell.
        let _ = self.0.send(result.map_err(duplicate_error));
    }
}

/// What a transport's `Write`, `WriteVectored` and `WriteEof` handlers return: the reply to an
/// acknowledged write, sent when the bytes reach the kernel or the write fails.
///
/// With `do_send` nothing is registered and nothing is allocated.
#[derive(Debug)]
pub struct WriteReceipt(Receipt);

#[derive(Debug)]
enum Receipt {
    Ready(io::Result<()>),
    Pending(Ticket<WriteReply>),
}

impl WriteReceipt {
    /// A receipt whose outcome is already known (a refused write, or an empty one).
    pub fn ready(result: io::Result<()>) -> Self {
        WriteReceipt(Receipt::Ready(result))
    }

    /// A receipt for a refused write.
    pub fn refused(err: WriteError) -> Self {
        WriteReceipt::ready(Err(err.into()))
    }

    /// A receipt for an accepted write, resolved through its ledger.
    pub fn pending(ticket: Ticket<WriteReply>) -> Self {
        WriteReceipt(Receipt::Pending(ticket))
    }

    /// The receipt of a write as the core decided it: accepted, or refused.
    pub fn from_core(decision: Result<Ticket<WriteReply>, WriteError>) -> Self {
        match decision {
            Ok(ticket) => WriteReceipt::pending(ticket),
            Err(err) => WriteReceipt::refused(err),
        }
    }
}

impl<A, M> MessageResponse<A, M> for WriteReceipt
where
    A: Actor,
    M: Message<Result = io::Result<()>>,
{
    fn handle(self, _: &mut A::Context, tx: Option<OneshotSender<io::Result<()>>>) {
        let Some(tx) = tx else { return };
        match self.0 {
            Receipt::Ready(result) => {
                let _ = tx.send(result);
            }
            Receipt::Pending(ticket) => ticket.register(WriteReply(tx)),
        }
    }
}
