//! What the transports need of the runtime they are called on, checked up front.

use std::io;

use actix_rt::{Arbiter, System};

/// Whether the caller runs on an actix arbiter, where actors (transports and protocols) can
/// start; an error that says what to do otherwise.
///
/// Without this, `#[tokio::main]` gets a panic from deep inside actix ("System is not running",
/// or tokio's "spawn_local called from outside of a task::LocalSet"), which names neither the
/// cause nor the fix.
pub(crate) fn require_arbiter(what: &str) -> io::Result<()> {
    if Arbiter::try_current().is_none() {
        return Err(outside_actix(what));
    }
    Ok(())
}

/// Whether the caller runs inside an actix `System`, which a server's worker arbiters need.
pub(crate) fn require_system(what: &str) -> io::Result<()> {
    if System::try_current().is_none() || Arbiter::try_current().is_none() {
        return Err(outside_actix(what));
    }
    Ok(())
}

fn outside_actix(what: &str) -> io::Error {
    io::Error::other(format!(
        "{what} needs an actix runtime, as switchboard's transports and protocols are actix \
         actors: run it under #[actix::main], #[actix_rt::main] or #[actix_rt::test] (or inside \
         actix_rt::System::new().block_on(..)), not #[tokio::main]"
    ))
}

/// Panics with the same explanation, for the calls that return no `Result`.
pub(crate) fn assert_arbiter(what: &str) {
    if let Err(err) = require_arbiter(what) {
        panic!("{err}");
    }
}
