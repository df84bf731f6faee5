//! [`ProtocolHandle`]: how a transport addresses its protocol, built from any actor's `Addr`.

use std::{
    any::Any,
    fmt,
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::Arc,
    task::{Context as TaskContext, Poll},
};

use actix::{Actor, Addr, Context, Handler};
use futures::future::BoxFuture;

use crate::{
    ConnectionLost, ConnectionMade, DataReceived, EofReceived, PauseWriting, ResumeWriting,
    TimedOut, TransportHandle,
};

/// What makes an actor a protocol with full control: it handles every stream event itself, as
/// raw actix `Handler`s. Implemented automatically. The short way to write a protocol is
/// [`Protocol`](crate::Protocol), whose actor implements all of them with asyncio's defaults;
/// an actor of your own gets every event too, so none can be handled and not received:
///
/// ```compile_fail
/// use actix::prelude::*;
/// use switchboard_framework::prelude::*;
///
/// /// Handles the data and the end, but not the EOF, the write flow or the timeouts.
/// struct Partial;
/// impl Actor for Partial { type Context = Context<Self>; }
/// impl Handler<ConnectionMade> for Partial { type Result = (); fn handle(&mut self, _: ConnectionMade, _: &mut Context<Self>) {} }
/// impl Handler<DataReceived> for Partial { type Result = (); fn handle(&mut self, _: DataReceived, _: &mut Context<Self>) {} }
/// impl Handler<ConnectionLost> for Partial { type Result = (); fn handle(&mut self, _: ConnectionLost, _: &mut Context<Self>) {} }
///
/// # fn attach(addr: Addr<Partial>) {
/// let handle = ProtocolHandle::new(addr); // error: `Partial` does not handle `EofReceived`
/// # }
/// ```
///
/// # Event order
///
/// For each transport it is attached to, a protocol receives, in this order:
///
/// * `ConnectionMade` exactly once, first, carrying the transport's handle. The transport reads
///   nothing until its handler has returned, so a `PauseReading` sent from it is honoured before
///   the first byte.
/// * `DataReceived` any number of times, each non-empty, in order, one at a time (the next is
///   delivered once the previous one's [`Ack`](crate::Ack) is dropped).
/// * `EofReceived` at most once, after the last `DataReceived`, if the peer half-closed. Its
///   decision is the protocol's: `keep_open()` keeps the connection half-open; dropping it
///   closes after flushing.
/// * `PauseWriting` / `ResumeWriting` at any point between `ConnectionMade` and
///   `ConnectionLost`, strictly alternating, starting with `PauseWriting`. A protocol switched
///   in while writing is paused receives `PauseWriting` right after its `ConnectionMade`. What
///   it does about them is its own affair: the transport's maximum write buffer still bounds it.
/// * `TimedOut` when an idle or first-byte timeout of the transport runs out; if the same
///   timeout runs out again, the transport ends the connection.
/// * `ConnectionLost` exactly once, last, if it is still the transport's protocol when the
///   transport stops. A protocol switched away from receives nothing after the switch.
pub trait RawProtocol:
    Actor<Context = Context<Self>>
    + Handler<ConnectionMade>
    + Handler<DataReceived>
    + Handler<EofReceived>
    + Handler<PauseWriting>
    + Handler<ResumeWriting>
    + Handler<TimedOut>
    + Handler<ConnectionLost>
{
}

impl<T> RawProtocol for T where
    T: Actor<Context = Context<T>>
        + Handler<ConnectionMade>
        + Handler<DataReceived>
        + Handler<EofReceived>
        + Handler<PauseWriting>
        + Handler<ResumeWriting>
        + Handler<TimedOut>
        + Handler<ConnectionLost>
{
}

/// What the framework's own actors built with [`ProtocolHandle::builder`] handle at least: the
/// events no transport can do without.
pub(crate) trait Mandatory:
    Actor<Context = Context<Self>>
    + Handler<ConnectionMade>
    + Handler<DataReceived>
    + Handler<ConnectionLost>
{
}

impl<T> Mandatory for T where
    T: Actor<Context = Context<T>>
        + Handler<ConnectionMade>
        + Handler<DataReceived>
        + Handler<ConnectionLost>
{
}

/// A cheap, cloneable, type-erased address of a protocol actor (one reference count), with the
/// optional events it handles. Transports deliver through it, always with `do_send`.
///
/// Build one with `ProtocolHandle::from(addr)` for any [`RawProtocol`]: it delivers every
/// event. A [`Protocol`](crate::Protocol) value needs none: serve or connect it as it is.
#[derive(Clone)]
pub struct ProtocolHandle {
    port: Arc<dyn port::ProtocolPort>,
}

impl ProtocolHandle {
    /// The handle of a protocol actor: every event is delivered to it.
    pub fn new<A: RawProtocol>(addr: Addr<A>) -> Self {
        ProtocolHandle::builder(addr)
            .eof_received()
            .write_flow()
            .timed_out()
            .build()
    }

    /// Starts building a handle that leaves some events to the transport's defaults: for the
    /// framework's own actors (a [`Connection`](crate::Connection)'s leaves its timeouts to the
    /// transport), never for a protocol's, which receives every event.
    pub(crate) fn builder<A: Mandatory>(addr: Addr<A>) -> ProtocolBuilder<A> {
        ProtocolBuilder {
            addr,
            routes: PhantomData,
            timed_out: None,
        }
    }

    /// Delivers an event with `do_send`. An optional event the protocol did not opt in to is
    /// dropped here, which applies its default.
    pub fn deliver<E: ProtocolEvent>(&self, event: E) {
        event.deliver_via(&*self.port);
    }

    /// Delivers [`ConnectionLost`] and returns a future that resolves once the protocol has
    /// handled it, or at once if the protocol had stopped (nothing is left to handle it). For
    /// transports whose owner waits for the end of its connections' protocols (a server's
    /// `WaitClosed`); the event is queued now, behind every event delivered before it, whether
    /// or not the future is polled.
    pub fn deliver_lost(&self, lost: ConnectionLost) -> LostHandled {
        LostHandled(self.port.connection_lost_handled(lost))
    }

    /// Whether the protocol actor is still running. A transport whose protocol stopped aborts.
    pub fn is_alive(&self) -> bool {
        self.port.connected()
    }

    /// Whether the protocol opted in to [`EofReceived`].
    pub fn handles_eof(&self) -> bool {
        self.port.handles_eof()
    }

    /// Whether the protocol opted in to [`PauseWriting`] and [`ResumeWriting`].
    pub fn handles_write_flow(&self) -> bool {
        self.port.handles_write_flow()
    }

    /// Whether the protocol handles [`TimedOut`].
    pub fn handles_timeouts(&self) -> bool {
        self.port.handles_timeouts()
    }

    /// What the protocol handles among the events that change what its transport does.
    pub fn handles(&self) -> switchboard_core::Handles {
        switchboard_core::Handles {
            write_flow: self.handles_write_flow(),
            timeouts: self.handles_timeouts(),
        }
    }

    /// Whether both handles address the same protocol actor.
    pub fn same_protocol(&self, other: &ProtocolHandle) -> bool {
        Arc::ptr_eq(&self.port, &other.port) || self.port.same(&*other.port)
    }

    /// The protocol's typed address, if it is an `A`.
    pub fn downcast<A: Actor>(&self) -> Option<Addr<A>> {
        self.port.addr_any().downcast_ref::<Addr<A>>().cloned()
    }
}

/// Resolves once a protocol has handled the [`ConnectionLost`] that
/// [`ProtocolHandle::deliver_lost`] delivered, or could not (it had stopped).
#[must_use = "a future does nothing unless polled"]
pub struct LostHandled(BoxFuture<'static, ()>);

impl Future for LostHandled {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for LostHandled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LostHandled").finish_non_exhaustive()
    }
}

impl ProtocolHandle {
    /// The handle a subprocess's pipe transport delivers through.
    pub(crate) fn from_pipe(route: crate::subprocess::PipeRoute) -> Self {
        ProtocolHandle {
            port: Arc::new(route),
        }
    }
}

impl fmt::Debug for ProtocolHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtocolHandle")
            .field("actor", &self.port.actor_name())
            .field("alive", &self.is_alive())
            .field("eof_received", &self.handles_eof())
            .field("write_flow", &self.handles_write_flow())
            .finish()
    }
}

impl<A: RawProtocol> From<Addr<A>> for ProtocolHandle {
    fn from(addr: Addr<A>) -> Self {
        ProtocolHandle::new(addr)
    }
}

impl<A: Mandatory, E: route::EofRoute<A>, F: route::FlowRoute<A>> From<ProtocolBuilder<A, E, F>>
    for ProtocolHandle
{
    fn from(builder: ProtocolBuilder<A, E, F>) -> Self {
        builder.build()
    }
}

/// Builds a [`ProtocolHandle`] that leaves some events to the transport's defaults, for the
/// framework's own actors.
#[must_use = "a builder does nothing until built or passed where a protocol is expected"]
pub(crate) struct ProtocolBuilder<A: Actor, E = Unhandled, F = Unhandled> {
    addr: Addr<A>,
    routes: PhantomData<fn() -> (E, F)>,
    timed_out: Option<fn(&Addr<A>, TimedOut)>,
}

impl<A: Mandatory, F> ProtocolBuilder<A, Unhandled, F> {
    /// Delivers [`EofReceived`] to the protocol instead of closing on the peer's EOF.
    pub(crate) fn eof_received(self) -> ProtocolBuilder<A, Handled, F>
    where
        A: Handler<EofReceived>,
    {
        ProtocolBuilder {
            addr: self.addr,
            routes: PhantomData,
            timed_out: self.timed_out,
        }
    }
}

impl<A: Mandatory, E> ProtocolBuilder<A, E, Unhandled> {
    /// Delivers [`PauseWriting`] and [`ResumeWriting`] to the protocol.
    pub(crate) fn write_flow(self) -> ProtocolBuilder<A, E, Handled>
    where
        A: Handler<PauseWriting> + Handler<ResumeWriting>,
    {
        ProtocolBuilder {
            addr: self.addr,
            routes: PhantomData,
            timed_out: self.timed_out,
        }
    }
}

impl<A: Mandatory, E, F> ProtocolBuilder<A, E, F> {
    /// Delivers [`TimedOut`] to the protocol before an idle or first-byte timeout ends the
    /// connection, so it can say goodbye and close; if the timeout runs out again, the
    /// transport ends the connection.
    pub(crate) fn timed_out(mut self) -> Self
    where
        A: Handler<TimedOut>,
    {
        self.timed_out = Some(|addr, msg| addr.do_send(msg));
        self
    }
}

impl<A: Mandatory, E: route::EofRoute<A>, F: route::FlowRoute<A>> ProtocolBuilder<A, E, F> {
    /// The handle.
    pub(crate) fn build(self) -> ProtocolHandle {
        ProtocolHandle {
            port: Arc::new(route::Routed::<A, E, F> {
                addr: self.addr,
                routes: PhantomData,
                timed_out: self.timed_out,
            }),
        }
    }
}

impl<A: Actor, E, F> fmt::Debug for ProtocolBuilder<A, E, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtocolBuilder")
            .field("actor", &std::any::type_name::<A>())
            .finish()
    }
}

/// Marks an optional event as delivered to the protocol (see [`ProtocolBuilder`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Handled;

/// Marks an optional event as left to its default (see [`ProtocolBuilder`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unhandled;

/// Anything a transport can be attached to: a [`Protocol`](crate::Protocol) value, a
/// [`RawProtocol`] actor's `Addr`, or a ready [`ProtocolHandle`].
pub trait IntoProtocol {
    /// What the caller gets back to talk to the protocol: its `Addr`, or the handle itself.
    type Output;

    /// The caller's address of the protocol, and the handle the transport delivers through.
    fn into_protocol(self, transport: &TransportHandle) -> (Self::Output, ProtocolHandle);
}

impl<A: RawProtocol> IntoProtocol for Addr<A> {
    type Output = Addr<A>;

    fn into_protocol(self, _: &TransportHandle) -> (Addr<A>, ProtocolHandle) {
        (self.clone(), ProtocolHandle::new(self))
    }
}

impl<A: Mandatory, E: route::EofRoute<A>, F: route::FlowRoute<A>> IntoProtocol
    for ProtocolBuilder<A, E, F>
{
    type Output = Addr<A>;

    fn into_protocol(self, _: &TransportHandle) -> (Addr<A>, ProtocolHandle) {
        (self.addr.clone(), self.build())
    }
}

impl IntoProtocol for ProtocolHandle {
    type Output = ProtocolHandle;

    fn into_protocol(self, _: &TransportHandle) -> (ProtocolHandle, ProtocolHandle) {
        (self.clone(), self)
    }
}

/// An event a [`ProtocolHandle`] can deliver: the six protocol events of the framework.
pub trait ProtocolEvent: port::Event {}

impl ProtocolEvent for ConnectionMade {}
impl ProtocolEvent for DataReceived {}
impl ProtocolEvent for EofReceived {}
impl ProtocolEvent for ConnectionLost {}
impl ProtocolEvent for PauseWriting {}
impl ProtocolEvent for ResumeWriting {}
impl ProtocolEvent for TimedOut {}

pub(crate) mod port {
    use super::*;

    /// The type-erased address of a protocol actor, with its optional events resolved.
    pub trait ProtocolPort: Send + Sync + 'static {
        fn connected(&self) -> bool;
        fn addr_any(&self) -> &dyn Any;
        fn same(&self, other: &dyn ProtocolPort) -> bool;
        fn actor_name(&self) -> &'static str;
        fn handles_eof(&self) -> bool;
        fn handles_write_flow(&self) -> bool;
        fn handles_timeouts(&self) -> bool;
        fn timed_out(&self, msg: TimedOut);
        fn connection_made(&self, msg: ConnectionMade);
        fn data_received(&self, msg: DataReceived);
        fn eof_received(&self, msg: EofReceived);
        fn connection_lost(&self, msg: ConnectionLost);
        fn connection_lost_handled(&self, msg: ConnectionLost) -> BoxFuture<'static, ()>;
        fn pause_writing(&self, msg: PauseWriting);
        fn resume_writing(&self, msg: ResumeWriting);
    }

    /// Routes one event type through a [`ProtocolPort`]; sealed, so the event set is closed.
    pub trait Event: Send + 'static {
        fn deliver_via(self, port: &dyn ProtocolPort);
    }

    macro_rules! events {
        ($($msg:ident => $method:ident;)*) => {$(
            impl Event for $msg {
                fn deliver_via(self, port: &dyn ProtocolPort) {
                    port.$method(self)
                }
            }
        )*};
    }

    events! {
        ConnectionMade => connection_made;
        DataReceived => data_received;
        EofReceived => eof_received;
        ConnectionLost => connection_lost;
        PauseWriting => pause_writing;
        ResumeWriting => resume_writing;
        TimedOut => timed_out;
    }
}

impl port::ProtocolPort for crate::subprocess::PipeRoute {
    fn connected(&self) -> bool {
        crate::subprocess::PipeRoute::connected(self)
    }
    fn addr_any(&self) -> &dyn Any {
        self
    }
    fn same(&self, other: &dyn port::ProtocolPort) -> bool {
        other
            .addr_any()
            .downcast_ref::<crate::subprocess::PipeRoute>()
            .is_some_and(|other| crate::subprocess::PipeRoute::same(self, other))
    }
    fn actor_name(&self) -> &'static str {
        "a subprocess pipe"
    }
    fn handles_eof(&self) -> bool {
        false
    }
    fn handles_write_flow(&self) -> bool {
        crate::subprocess::PipeRoute::handles_write_flow(self)
    }
    fn handles_timeouts(&self) -> bool {
        false
    }
    fn timed_out(&self, _: TimedOut) {}
    fn connection_made(&self, msg: ConnectionMade) {
        crate::subprocess::PipeRoute::connection_made(self, msg);
    }
    fn data_received(&self, msg: DataReceived) {
        crate::subprocess::PipeRoute::data_received(self, msg);
    }
    fn eof_received(&self, msg: EofReceived) {
        // A read pipe closes at its EOF, as asyncio's subprocess pipes do.
        drop(msg);
    }
    fn connection_lost(&self, msg: ConnectionLost) {
        crate::subprocess::PipeRoute::connection_lost(self, msg);
    }
    fn connection_lost_handled(&self, msg: ConnectionLost) -> BoxFuture<'static, ()> {
        // The subprocess transport hears of it now; nothing waits for a pipe's protocol.
        crate::subprocess::PipeRoute::connection_lost(self, msg);
        Box::pin(std::future::ready(()))
    }
    fn pause_writing(&self, _: PauseWriting) {
        crate::subprocess::PipeRoute::pause_writing(self);
    }
    fn resume_writing(&self, _: ResumeWriting) {
        crate::subprocess::PipeRoute::resume_writing(self);
    }
}

pub(crate) mod route {
    use super::*;

    /// How `EofReceived` reaches an `A`: delivered, or dropped (which closes).
    pub trait EofRoute<A: Actor>: 'static {
        const HANDLED: bool;
        fn route(addr: &Addr<A>, msg: EofReceived);
    }

    impl<A: Actor> EofRoute<A> for Unhandled {
        const HANDLED: bool = false;
        fn route(_: &Addr<A>, msg: EofReceived) {
            drop(msg);
        }
    }

    impl<A: Actor<Context = Context<A>> + Handler<EofReceived>> EofRoute<A> for Handled {
        const HANDLED: bool = true;
        fn route(addr: &Addr<A>, msg: EofReceived) {
            addr.do_send(msg);
        }
    }

    /// How `PauseWriting`/`ResumeWriting` reach an `A`: delivered, or ignored.
    pub trait FlowRoute<A: Actor>: 'static {
        const HANDLED: bool;
        fn pause(addr: &Addr<A>, msg: PauseWriting);
        fn resume(addr: &Addr<A>, msg: ResumeWriting);
    }

    impl<A: Actor> FlowRoute<A> for Unhandled {
        const HANDLED: bool = false;
        fn pause(_: &Addr<A>, _: PauseWriting) {}
        fn resume(_: &Addr<A>, _: ResumeWriting) {}
    }

    impl<A> FlowRoute<A> for Handled
    where
        A: Actor<Context = Context<A>> + Handler<PauseWriting> + Handler<ResumeWriting>,
    {
        const HANDLED: bool = true;
        fn pause(addr: &Addr<A>, msg: PauseWriting) {
            addr.do_send(msg);
        }
        fn resume(addr: &Addr<A>, msg: ResumeWriting) {
            addr.do_send(msg);
        }
    }

    pub(crate) struct Routed<A: Actor, E, F> {
        pub(crate) addr: Addr<A>,
        pub(crate) routes: PhantomData<fn() -> (E, F)>,
        pub(crate) timed_out: Option<fn(&Addr<A>, TimedOut)>,
    }

    impl<A: Mandatory, E: EofRoute<A>, F: FlowRoute<A>> port::ProtocolPort for Routed<A, E, F> {
        fn connected(&self) -> bool {
            self.addr.connected()
        }
        fn addr_any(&self) -> &dyn Any {
            &self.addr
        }
        fn same(&self, other: &dyn port::ProtocolPort) -> bool {
            other
                .addr_any()
                .downcast_ref::<Addr<A>>()
                .is_some_and(|other| *other == self.addr)
        }
        fn actor_name(&self) -> &'static str {
            std::any::type_name::<A>()
        }
        fn handles_eof(&self) -> bool {
            E::HANDLED
        }
        fn handles_write_flow(&self) -> bool {
            F::HANDLED
        }
        fn handles_timeouts(&self) -> bool {
            self.timed_out.is_some()
        }
        fn timed_out(&self, msg: TimedOut) {
            if let Some(deliver) = self.timed_out {
                deliver(&self.addr, msg);
            }
        }
        fn connection_made(&self, msg: ConnectionMade) {
            self.addr.do_send(msg);
        }
        fn data_received(&self, msg: DataReceived) {
            self.addr.do_send(msg);
        }
        fn eof_received(&self, msg: EofReceived) {
            E::route(&self.addr, msg);
        }
        fn connection_lost(&self, msg: ConnectionLost) {
            self.addr.do_send(msg);
        }
        fn connection_lost_handled(&self, msg: ConnectionLost) -> BoxFuture<'static, ()> {
            // The one delivery made with `send`, for its reply: it is the last one, so no later
            // `do_send` can overtake it, and `send` queues it at once unless the mailbox is full
            // (then the future queues it as soon as there is room), behind everything before.
            let handled = self.addr.send(msg);
            Box::pin(async move {
                let _ = handled.await;
            })
        }
        fn pause_writing(&self, msg: PauseWriting) {
            F::pause(&self.addr, msg);
        }
        fn resume_writing(&self, msg: ResumeWriting) {
            F::resume(&self.addr, msg);
        }
    }
}
