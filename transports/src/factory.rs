//! Calling a user's protocol factory without letting its panic take anything else down.

use std::panic::{AssertUnwindSafe, catch_unwind};

use switchboard_framework::FactoryPanicked;

/// Makes a protocol with `factory`, turning a panic into a [`FactoryPanicked`].
///
/// A factory runs inside the library: on a server's worker arbiter (where an unwinding panic
/// would end the accept loop, or the worker's thread), or inside `connect`, `bind` and
/// `subprocess::spawn`, after their socket or child exists. Caught here, a panic ends only what
/// the factory was for. `AssertUnwindSafe`: the factory's own state is the user's, and nothing
/// of ours is left half-updated across the call.
pub(crate) fn make<P>(factory: impl FnOnce() -> P) -> Result<P, FactoryPanicked> {
    catch_unwind(AssertUnwindSafe(factory))
        .map_err(|payload| FactoryPanicked::from_payload(&*payload))
}
