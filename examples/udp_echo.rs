//! A datagram echo server: every datagram comes back to its sender, whole, as one datagram.
//!
//! It shows the smallest datagram protocol: one endpoint, one protocol actor, and the sender's
//! address in each `DatagramReceived`, which is where the answer goes. It serves UDP, or a Unix
//! datagram socket with `--unix`.
//!
//! ```text
//! cargo run --example udp_echo                        # 127.0.0.1:9999
//! cargo run --example udp_echo -- --addr 127.0.0.1:0
//! cargo run --example udp_echo -- --unix /tmp/echo.dgram
//! ```
//!
//! Try it with `nc -u 127.0.0.1 9999`, or with Python's asyncio
//! (`tests/support/peers/udp_asyncio.py`).
//!
//! An error the socket reports (a datagram that could not be sent back) is logged, and the
//! server goes on. A Unix client that sends and never reads makes echoes queue in the endpoint;
//! past the high-water mark the server stops reading until they drain, so the kernel makes the
//! senders wait, and the server's memory stays bounded. A sender that never bound its Unix
//! socket has no address and cannot be answered: its datagrams are logged and dropped.
//!
//! It prints exactly one line to stdout, `listening on ADDR` with the address really bound
//! (useful with port 0) or the socket's path, once it receives datagrams; logs go to stderr
//! (`RUST_LOG=debug`). On SIGINT or SIGTERM it closes the endpoint, which sends the echoes
//! still queued, and exits 0. A Unix socket's file is removed when the endpoint stops.

use std::{
    io::{self, Write},
    path::PathBuf,
    process::ExitCode,
};

use actix::prelude::*;
use clap::Parser;
use switchboard::{prelude::*, udp, unix_datagram};
use tokio::sync::oneshot;

#[derive(Debug, Parser)]
#[command(about = "A datagram echo server over UDP or a Unix datagram socket")]
struct Args {
    /// The UDP address to bind (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9999")]
    addr: String,
    /// Serve a Unix datagram socket at this path instead of UDP.
    #[arg(long, value_name = "PATH")]
    unix: Option<PathBuf>,
}

// ANCHOR: protocol
/// The echo protocol: one actor for the whole endpoint, whoever sends.
struct Echo {
    endpoint: Option<DatagramHandle>,
    /// Tells `main` how the endpoint ended.
    ended: Option<oneshot::Sender<Option<io::Error>>>,
}

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Handler<ConnectionMade<DatagramHandle>> for Echo {
    type Result = ();

    fn handle(&mut self, msg: ConnectionMade<DatagramHandle>, _: &mut Context<Self>) {
        self.endpoint = Some(msg.transport);
    }
}

impl Handler<DatagramReceived> for Echo {
    type Result = ();

    /// Each datagram on its own, zero-length ones included: back where it came from.
    fn handle(&mut self, msg: DatagramReceived, _: &mut Context<Self>) {
        tracing::debug!(len = msg.data.len(), from = %msg.addr, "echo");
        if let Some(endpoint) = &self.endpoint {
            endpoint.send_to(msg.data, msg.addr);
        }
    }
}

impl Handler<ErrorReceived> for Echo {
    type Result = ();

    /// A datagram that could not be sent (its sender is gone, or has no address): one lost
    /// echo, not a reason to stop serving the others.
    fn handle(&mut self, ErrorReceived(err): ErrorReceived, _: &mut Context<Self>) {
        tracing::warn!(%err, "error received; serving on");
    }
}

impl Handler<ConnectionLost> for Echo {
    type Result = ();

    fn handle(&mut self, ConnectionLost(err): ConnectionLost, ctx: &mut Context<Self>) {
        if let Some(ended) = self.ended.take() {
            let _ = ended.send(err);
        }
        ctx.stop();
    }
}
// ANCHOR_END: protocol

// ANCHOR: backpressure
/// Echoes the kernel cannot take at once (a Unix client whose queue is full) wait in the
/// endpoint. Past the high-water mark, stop reading: the senders then wait in the kernel,
/// instead of the echoes piling up here.
impl Handler<PauseWriting> for Echo {
    type Result = ();

    fn handle(&mut self, _: PauseWriting, _: &mut Context<Self>) {
        if let Some(endpoint) = &self.endpoint {
            endpoint.pause_reading();
        }
    }
}

impl Handler<ResumeWriting> for Echo {
    type Result = ();

    fn handle(&mut self, _: ResumeWriting, _: &mut Context<Self>) {
        if let Some(endpoint) = &self.endpoint {
            endpoint.resume_reading();
        }
    }
}

/// Makes the `Echo` of an endpoint, opted in to the write-flow events.
fn echo(ended: oneshot::Sender<Option<io::Error>>) -> DatagramProtocolHandle {
    let echo = Echo {
        endpoint: None,
        ended: Some(ended),
    };
    DatagramProtocolHandle::with_write_flow(echo.start())
}
// ANCHOR_END: backpressure

#[actix::main]
async fn main() -> io::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();

    // Both signals are caught from before the `listening on` line: a client that sends one as
    // soon as it reads the line finds the handlers in place.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;

    // ANCHOR: bind
    let (ended, mut lost) = oneshot::channel();
    let (endpoint, _echo) = match &args.unix {
        // Binding removes a stale socket file left at the path by an earlier run.
        Some(path) => unix_datagram::bind(path, move || echo(ended))?,
        None => udp::bind(&args.addr, move || echo(ended)).await?,
    };
    let Some(bound) = endpoint.sockname() else {
        return Err(io::Error::other("the endpoint has no address"));
    };
    println!("listening on {bound}");
    io::stdout().flush()?;
    // ANCHOR_END: bind

    // ANCHOR: shutdown
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
        // The endpoint ended on its own: its socket failed.
        ended = &mut lost => {
            let err = ended.ok().flatten();
            eprintln!("udp_echo: the endpoint failed: {}", describe(err));
            return Ok(ExitCode::FAILURE);
        }
    }
    tracing::info!("shutting down: sending the queued echoes, then closing");
    endpoint.close();
    match lost.await {
        Ok(None) => Ok(ExitCode::SUCCESS),
        ended => {
            eprintln!(
                "udp_echo: the endpoint failed: {}",
                describe(ended.ok().flatten())
            );
            Ok(ExitCode::FAILURE)
        }
    }
    // ANCHOR_END: shutdown
}

fn describe(err: Option<io::Error>) -> String {
    match err {
        Some(err) => err.to_string(),
        None => "it stopped without a reason".to_owned(),
    }
}
