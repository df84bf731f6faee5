//! An echo client: sends its stdin to an echo server and prints what comes back.
//!
//! It shows a client connection, acknowledged writes as back-pressure, and half-close: after
//! stdin's EOF the client shuts its write side down and keeps reading until the server has
//! echoed everything and closed, then exits 0 (1 if the connection failed).
//!
//! ```text
//! cargo run --example echo_server &
//! printf 'hi\n' | cargo run --example echo_client                  # prints hi
//! cargo run --example echo_client -- --unix /tmp/echo.sock < file
//! ```

use std::{
    io::{self, Write as _},
    path::PathBuf,
    process::ExitCode,
};

use actix::prelude::*;
use clap::Parser;
use switchboard::prelude::*;
use tokio::{io::AsyncReadExt, sync::oneshot};

#[derive(Debug, Parser)]
#[command(about = "Sends stdin to an echo server and prints the echo")]
struct Args {
    /// The server's TCP address.
    #[arg(long, default_value = "127.0.0.1:8888")]
    addr: String,
    /// Connect to this Unix socket path instead of TCP.
    #[arg(long)]
    unix: Option<PathBuf>,
}

// ANCHOR: protocol
/// Prints what the server sends; reports how the connection ended.
struct Printer {
    done: Option<oneshot::Sender<Option<io::Error>>>,
}

impl Actor for Printer {
    type Context = Context<Self>;
}

impl Handler<ConnectionMade> for Printer {
    type Result = ();

    fn handle(&mut self, _: ConnectionMade, _: &mut Context<Self>) {}
}

impl Handler<DataReceived> for Printer {
    type Result = ();

    fn handle(&mut self, msg: DataReceived, _: &mut Context<Self>) {
        // A blocking write: while stdout is slow, the acknowledgement waits and the server's
        // bytes wait in the kernel. That is back-pressure, for free.
        let mut stdout = io::stdout().lock();
        let _ = stdout.write_all(&msg.data).and_then(|()| stdout.flush());
    }
}

impl Handler<ConnectionLost> for Printer {
    type Result = ();

    fn handle(&mut self, ConnectionLost(err): ConnectionLost, ctx: &mut Context<Self>) {
        if let Some(done) = self.done.take() {
            let _ = done.send(err);
        }
        ctx.stop();
    }
}
// ANCHOR_END: protocol

#[actix::main]
async fn main() -> io::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();

    // ANCHOR: connect
    let (done, lost) = oneshot::channel();
    let printer = move || Printer { done: Some(done) }.start();
    let (transport, _printer) = match &args.unix {
        Some(path) => unix::connect(path, printer).await?,
        None => tcp::connect(&args.addr, printer).await?,
    };
    // ANCHOR_END: connect

    // ANCHOR: send
    let mut stdin = tokio::io::stdin();
    let mut chunk = vec![0; 64 * 1024];
    loop {
        let n = stdin.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        // Resolves once the bytes reached the kernel: stdin is read no faster than we send.
        transport.write_acked(chunk[..n].to_vec()).await?;
    }
    transport.send(WriteEof).await.map_err(io::Error::other)??;
    // ANCHOR_END: send

    // ANCHOR: finish
    match lost.await {
        Ok(None) => Ok(ExitCode::SUCCESS),
        Ok(Some(err)) => {
            eprintln!("echo_client: connection lost: {err}");
            Ok(ExitCode::FAILURE)
        }
        Err(_) => Ok(ExitCode::FAILURE),
    }
    // ANCHOR_END: finish
}
