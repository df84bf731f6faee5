//! An echo server: every byte a client sends comes back to it.
//!
//! It shows the smallest useful protocol, back-pressure from the write buffer to the socket
//! (a client that never reads cannot make the server buffer without bound), a server over TCP,
//! TLS or a Unix socket, and a graceful shutdown. When a client half-closes, the server finishes
//! echoing what it received, then closes. On SIGINT or SIGTERM it stops accepting, closes every
//! connection gracefully (queued bytes are still delivered) and exits 0.
//!
//! ```text
//! cargo run --example echo_server                      # 127.0.0.1:8888
//! cargo run --example echo_server -- --addr 127.0.0.1:0 --workers 2
//! cargo run --example echo_server -- --unix /tmp/echo.sock
//! cargo run --example echo_server -- --tls --write-cert /tmp/echo.pem   # self-signed
//! cargo run --example echo_server -- --tls --cert cert.pem --key key.pem
//! ```
//!
//! Over TLS (`--tls`) the echo protocol is the same actor, with the same back-pressure; only the
//! server differs. Without `--cert` and `--key` (PEM files, both or neither), the server makes a
//! self-signed certificate for `localhost`, `127.0.0.1` and `::1` when it starts; `--write-cert`
//! saves it, before the `listening on` line, for clients to trust
//! (`echo_client --tls --ca /tmp/echo.pem`).
//!
//! It prints exactly one line to stdout, `listening on ADDR` with the address really bound
//! (useful with port 0), once it accepts connections; logs go to stderr (`RUST_LOG=debug`).

use std::{fs, io, path::PathBuf, process::ExitCode};

use actix::prelude::*;
use clap::Parser;
use switchboard::{
    Handled, ProtocolBuilder, Unhandled,
    prelude::*,
    tls::{self, SelfSigned, TlsAcceptor},
};

#[derive(Debug, Parser)]
#[command(about = "An echo server over TCP, TLS or a Unix socket")]
struct Args {
    /// The TCP address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8888")]
    addr: String,
    /// Listen on this Unix socket path instead of TCP.
    #[arg(long, conflicts_with = "tls")]
    unix: Option<PathBuf>,
    /// Worker threads connections are spread over (default: one per core; 0: the main thread).
    #[arg(long)]
    workers: Option<usize>,
    /// Serve TLS on the TCP address.
    #[arg(long)]
    tls: bool,
    /// The certificate chain to serve, a PEM file (with --key; default: a self-signed one).
    #[arg(long, value_name = "FILE", requires_all = ["tls", "key"])]
    cert: Option<PathBuf>,
    /// The private key of --cert, a PEM file.
    #[arg(long, value_name = "FILE", requires_all = ["tls", "cert"])]
    key: Option<PathBuf>,
    /// Save the self-signed certificate to this file (PEM), for clients to trust.
    #[arg(long, value_name = "FILE", requires = "tls", conflicts_with = "cert")]
    write_cert: Option<PathBuf>,
}

// ANCHOR: protocol
/// The echo protocol: one actor per connection.
#[derive(Default)]
struct Echo {
    transport: Option<TransportHandle>,
}

impl Actor for Echo {
    type Context = Context<Self>;
}

impl Handler<ConnectionMade> for Echo {
    type Result = ();

    fn handle(&mut self, msg: ConnectionMade, _: &mut Context<Self>) {
        self.transport = Some(msg.transport);
    }
}

impl Handler<DataReceived> for Echo {
    type Result = ();

    fn handle(&mut self, msg: DataReceived, _: &mut Context<Self>) {
        if let Some(transport) = &self.transport {
            transport.write(msg.data);
        }
    }
}

impl Handler<ConnectionLost> for Echo {
    type Result = ();

    fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
// ANCHOR_END: protocol

// ANCHOR: backpressure
/// A client that sends faster than it reads would fill the write buffer with echoes; so while
/// the buffer is over its high-water mark, stop reading, and the client feels TCP back-pressure.
impl Handler<PauseWriting> for Echo {
    type Result = ();

    fn handle(&mut self, _: PauseWriting, _: &mut Context<Self>) {
        if let Some(transport) = &self.transport {
            transport.pause_reading();
        }
    }
}

impl Handler<ResumeWriting> for Echo {
    type Result = ();

    fn handle(&mut self, _: ResumeWriting, _: &mut Context<Self>) {
        if let Some(transport) = &self.transport {
            transport.resume_reading();
        }
    }
}

/// Makes an `Echo` for each connection, opted in to the write-flow events.
fn echo() -> ProtocolBuilder<Echo, Unhandled, Handled> {
    ProtocolHandle::builder(Echo::default().start()).write_flow()
}
// ANCHOR_END: backpressure

// ANCHOR: tls
/// The TLS side of the server, for `--tls`: the certificate and key of `--cert` and `--key`, or
/// a self-signed certificate for this machine, made now and saved with `--write-cert`.
fn tls_acceptor(args: &Args) -> io::Result<TlsAcceptor> {
    // clap lets `--cert` and `--key` through together or not at all.
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        return TlsAcceptor::from_pem_files(cert, key);
    }
    let cert = SelfSigned::localhost()?;
    if let Some(path) = &args.write_cert {
        fs::write(path, cert.certificate_pem()?).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("cannot write the certificate to {}: {err}", path.display()),
            )
        })?;
    }
    cert.acceptor()
}
// ANCHOR_END: tls

#[actix::main]
async fn main() -> io::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    // ANCHOR: options
    let mut options = ServerOptions::default();
    if let Some(workers) = args.workers {
        options = options.workers(workers);
    }
    // ANCHOR_END: options
    let acceptor = if args.tls {
        match tls_acceptor(&args) {
            Ok(acceptor) => Some(acceptor),
            Err(err) => {
                eprintln!("echo_server: {err}");
                return Ok(ExitCode::FAILURE);
            }
        }
    } else {
        None
    };

    // Both signals are caught from before the `listening on` line: a client that sends one as
    // soon as it reads the line finds the handlers in place.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;

    // ANCHOR: serve
    // The same `echo` factory whatever the server: TLS is a layer under the transport.
    let server = match (&args.unix, acceptor) {
        (Some(path), _) => unix::serve_with(path, options, echo).await?,
        (None, Some(acceptor)) => tls::serve_with(&args.addr, options, acceptor, echo).await?,
        (None, None) => tcp::serve_with(&args.addr, options, echo).await?,
    };
    println!("listening on {}", server.addresses()[0]);
    // ANCHOR_END: serve

    // ANCHOR: shutdown
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("shutting down: no new connections, closing the live ones");
    server.close().await;
    server.close_clients().await;
    server.wait_closed().await;
    // ANCHOR_END: shutdown
    Ok(ExitCode::SUCCESS)
}
