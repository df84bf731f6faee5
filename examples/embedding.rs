//! switchboard inside a program that is not an actix one: a plain `#[tokio::main]` program runs
//! an actix `System` on a thread of its own, serves an echo protocol there, and talks to it
//! through a `Connection` it awaits from its own tokio tasks.
//!
//! ```text
//! cargo run --example embedding
//! ```
//!
//! It prints `echoed: hello from tokio`, then shuts the server down and exits 0.

use std::{io, thread, time::Duration};

use switchboard::{
    prelude::*,
    rt::{ArbiterHandle, System},
};
use tokio::sync::oneshot;

/// The echo protocol of chapter 1.
struct Echo;

impl Protocol for Echo {
    type Codec = Raw;

    fn data_received(&mut self, data: Bytes, cx: &mut Ctx<'_, Self>) {
        cx.write(data);
    }
}

// ANCHOR: start
/// Starts an actix `System` on a thread of its own: the handle to stop it, and its arbiter,
/// to run switchboard's entry points on.
fn start_actors() -> (System, ArbiterHandle) {
    let (started, handles) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let runner = System::new();
        let _ = started.send((System::current(), switchboard::rt::Arbiter::current()));
        runner.run()
    });
    handles.recv().expect("the actix thread starts")
}

/// Runs `make` on the actix thread and awaits its result from anywhere.
async fn on_actors<T, F>(actors: &ArbiterHandle, make: impl FnOnce() -> F + Send + 'static) -> T
where
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let (result, made) = oneshot::channel();
    // `spawn_fn` runs the closure on the actix thread, where a future that is not `Send` (one
    // that holds actors' handles) can run.
    actors.spawn_fn(move || {
        switchboard::rt::spawn(async move {
            let _ = result.send(make().await);
        });
    });
    made.await.expect("the actix thread runs")
}
// ANCHOR_END: start

#[tokio::main]
async fn main() -> io::Result<()> {
    // ANCHOR: use
    let (system, actors) = start_actors();
    let server = on_actors(&actors, || tcp::serve("127.0.0.1:0", || Echo)).await?;
    let addr = server.addresses()[0].to_string();

    // A `Connection` is made on the actix thread, then used from this tokio task.
    let (_, mut conn) = on_actors(&actors, move || tcp::connect(addr, Connection::new)).await?;
    conn.write("hello from tokio").await?;
    if let Some(echo) = conn.next().await {
        println!("echoed: {}", String::from_utf8_lossy(&echo?));
    }
    conn.close();
    conn.closed().await?;

    server.shutdown(Duration::from_secs(1)).await;
    system.stop();
    // ANCHOR_END: use
    Ok(())
}
