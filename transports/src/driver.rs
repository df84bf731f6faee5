//! What every transport actor shares as a driver of its core: the mailbox set-up, the one
//! future that polls its I/O object after each batch of messages, and the count of live
//! transports of each family.

use std::{
    pin::Pin,
    sync::atomic::{AtomicUsize, Ordering},
    task::{Context as TaskContext, Poll},
};

use actix::{Actor, ActorFuture, AsyncContext, Context};

/// A context whose mailbox is unbounded from the first message on.
///
/// An actix mailbox holds 16 messages until its actor starts, and past that a `send` waits to
/// be polled, so a `send` and a `do_send` from one sender would lose their order. Memory is
/// bounded by flow control, not by the mailbox.
pub(crate) fn unbounded_context<A: Actor<Context = Context<A>>>() -> Context<A> {
    let mut ctx = Context::new();
    ctx.set_mailbox_capacity(0);
    ctx
}

/// A transport actor that polls its I/O object from inside its context.
pub(crate) trait Driven: Actor<Context = Context<Self>> {
    /// Moves bytes between the I/O object and the core; `Ready` once the actor is done with it.
    fn poll_driver(&mut self, ctx: &mut Context<Self>, cx: &mut TaskContext<'_>) -> Poll<()>;
}

/// Starts the driver of `ctx`'s actor: polled after each batch of messages the actor handles,
/// and whenever its I/O object or its timer wakes it.
pub(crate) fn spawn<A: Driven>(ctx: &mut Context<A>) {
    ctx.spawn(Driver);
}

/// Drives the I/O from inside the actor's context, after each mailbox drain.
struct Driver;

impl<A: Driven> ActorFuture<A> for Driver {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut A,
        ctx: &mut Context<A>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<()> {
        act.poll_driver(ctx, cx)
    }
}

/// How many actors of one family are alive in this process (started and not yet stopped), for
/// leak checks and monitoring.
pub(crate) struct Live(AtomicUsize);

/// Stream transports (TCP, Unix sockets, TLS, pipes).
pub(crate) static STREAMS: Live = Live::new();

/// Datagram endpoints (UDP, Unix datagrams).
pub(crate) static DATAGRAMS: Live = Live::new();

impl Live {
    const fn new() -> Self {
        Live(AtomicUsize::new(0))
    }

    /// Call from the actor's `started`.
    pub(crate) fn started(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Call from the actor's `stopped`.
    pub(crate) fn stopped(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}
