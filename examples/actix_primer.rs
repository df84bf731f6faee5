//! actix in ten minutes: the actor model switchboard is built on, for a reader who knows Rust
//! but not actix. The book's chapter "actix for newcomers" reads it piece by piece.
//!
//! ```sh
//! cargo run --example actix_primer
//! ```
//!
//! It prints what each step shows, always the same lines in the same order (its test checks
//! them): an actor that counts, asked with `send` and told with `do_send`; the same actor
//! through a `Recipient`; one on another thread; asynchronous work inside a handler, with
//! `wait` (the mailbox waits) and `spawn` (it does not); a timer; and what happens to messages
//! sent to an actor once it has stopped.

use std::time::Duration;

use actix::prelude::*;

// ANCHOR: message
/// A message is a plain type; `rtype` names the type of its answer.
#[derive(Message)]
#[rtype(result = "u64")]
struct Add(u64);
// ANCHOR_END: message

// ANCHOR: actor
/// An actor owns its state. Only its handlers touch it, one message at a time, so there is no
/// lock anywhere.
struct Counter {
    name: &'static str,
    total: u64,
}

impl Actor for Counter {
    // The context is the actor's runtime: its mailbox, timers and spawned futures.
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        println!("{}: started", self.name);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        println!("{}: stopped at {}", self.name, self.total);
    }
}

impl Handler<Add> for Counter {
    type Result = u64;

    fn handle(&mut self, msg: Add, _: &mut Context<Self>) -> u64 {
        self.total += msg.0;
        self.total
    }
}
// ANCHOR_END: actor

// ANCHOR: async_work
/// Adds after a delay, as a handler that must wait for I/O or another actor's answer would.
#[derive(Message)]
#[rtype(result = "()")]
struct AddLater {
    amount: u64,
    after: Duration,
    /// `wait` holds every later message until the work is done; `spawn` lets them in.
    hold_mailbox: bool,
}

impl Handler<AddLater> for Counter {
    type Result = ();

    fn handle(&mut self, msg: AddLater, ctx: &mut Context<Self>) {
        // A plain future cannot borrow the actor across an `.await`; `into_actor` makes it an
        // actor future, whose `map` gets `&mut self` back when the future is done.
        let work = tokio::time::sleep(msg.after)
            .into_actor(self)
            .map(move |(), act, _| {
                act.total += msg.amount;
                println!("{}: added {} later", act.name, msg.amount);
            });
        if msg.hold_mailbox {
            ctx.wait(work);
        } else {
            ctx.spawn(work);
        }
    }
}
// ANCHOR_END: async_work

// ANCHOR: timer
/// Stops the actor after a delay.
#[derive(Message)]
#[rtype(result = "()")]
struct StopAfter(Duration);

impl Handler<StopAfter> for Counter {
    type Result = ();

    fn handle(&mut self, msg: StopAfter, ctx: &mut Context<Self>) {
        ctx.run_later(msg.0, |act, ctx| {
            println!("{}: stopping", act.name);
            ctx.stop();
        });
    }
}
// ANCHOR_END: timer

#[actix::main]
async fn main() -> Result<(), MailboxError> {
    // ANCHOR: start
    // `start` runs the actor on the current thread's arbiter and returns its address.
    let counter: Addr<Counter> = Counter {
        name: "counter",
        total: 0,
    }
    .start();
    // `send` asks: the answer comes back as a future.
    let total = counter.send(Add(2)).await?;
    println!("send(Add(2)) answered {total}");
    // `do_send` tells: no answer, and the sender never waits. Messages from one sender are
    // handled in the order sent, so the `send` after it sees its effect.
    counter.do_send(Add(40));
    let total = counter.send(Add(0)).await?;
    println!("after do_send(Add(40)): {total}");
    // ANCHOR_END: start

    // ANCHOR: recipient
    // A `Recipient<M>` addresses any actor that handles `M`, whatever its type: this is how a
    // transport holds its protocol, and how a protocol holds its transport.
    let adder: Recipient<Add> = counter.clone().recipient();
    println!("through a Recipient<Add>: {}", adder.send(Add(1)).await?);
    // ANCHOR_END: recipient

    // ANCHOR: arbiter
    // An arbiter is a thread with its own event loop. An actor started in one runs there;
    // its address works from any thread. A switchboard server runs one per worker.
    let worker = Arbiter::new();
    let remote = Counter::start_in_arbiter(&worker.handle(), |_| Counter {
        name: "remote",
        total: 100,
    });
    println!("remote counter answered {}", remote.send(Add(1)).await?);
    // ANCHOR_END: arbiter

    // ANCHOR: wait_and_spawn
    // `spawn`: the mailbox goes on while the work runs, so `Add(0)` is answered first.
    counter.do_send(AddLater {
        amount: 1000,
        after: Duration::from_millis(50),
        hold_mailbox: false,
    });
    println!(
        "spawned work, then send(Add(0)): {}",
        counter.send(Add(0)).await?
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    // `wait`: nothing else is handled until the work is done, so `Add(0)` sees its result.
    counter.do_send(AddLater {
        amount: 10000,
        after: Duration::from_millis(50),
        hold_mailbox: true,
    });
    println!(
        "waited work, then send(Add(0)): {}",
        counter.send(Add(0)).await?
    );
    // ANCHOR_END: wait_and_spawn

    // ANCHOR: stopping
    counter.do_send(StopAfter(Duration::from_millis(20)));
    while counter.connected() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A stopped actor's address stays valid, but nothing reaches the actor: `send` fails with
    // `MailboxError::Closed` and `do_send` drops the message. switchboard's transports rely on
    // `connected()` to notice that their protocol has stopped.
    match counter.send(Add(1)).await {
        Err(err) => println!("send to a stopped actor: {err}"),
        Ok(total) => println!("a stopped actor answered {total}?"),
    }
    // ANCHOR_END: stopping

    // Stopping an arbiter stops its actors; `join` waits for its thread to end.
    worker.stop();
    worker
        .join()
        .expect("the worker thread does not panic: its actors only count");
    Ok(())
}
