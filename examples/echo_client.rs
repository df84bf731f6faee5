//! An echo client: sends its stdin to an echo server and prints what comes back.
//!
//! It shows a client connection, plain or TLS, acknowledged writes as back-pressure, and
//! half-close: after stdin's EOF the client shuts its write side down and keeps reading until
//! the server has echoed everything and closed, then exits 0 (1 if the connection failed).
//!
//! ```text
//! cargo run --example echo_server &
//! printf 'hi\n' | cargo run --example echo_client                  # prints hi
//! cargo run --example echo_client -- --unix /tmp/echo.sock < file
//!
//! cargo run --example echo_server -- --tls --write-cert /tmp/echo.pem &
//! printf 'hi\n' | cargo run --example echo_client -- --tls --ca /tmp/echo.pem
//! ```
//!
//! Over TLS (`--tls`) the client verifies the server's certificate and name, against the
//! system's certificate authorities and those of `--ca FILE`; a server it does not trust ends
//! the run with the reason (`certificate verification failed: self-signed certificate`) and
//! exit status 1. `--insecure` skips the verification, with a warning. The negotiated protocol
//! and cipher go to stderr. TLS has no half-close, so after stdin's EOF the client waits until
//! everything it sent has come back, then closes.

use std::{
    io::{self, Write as _},
    path::PathBuf,
    process::ExitCode,
};

use actix::prelude::*;
use clap::Parser;
use switchboard::{prelude::*, tls::TlsConnector};
use tokio::{
    io::AsyncReadExt,
    sync::{oneshot, watch},
};

#[derive(Debug, Parser)]
#[command(about = "Sends stdin to an echo server and prints the echo")]
struct Args {
    /// The server's TCP address.
    #[arg(long, default_value = "127.0.0.1:8888")]
    addr: String,
    /// Connect to this Unix socket path instead of TCP.
    #[arg(long, conflicts_with = "tls")]
    unix: Option<PathBuf>,
    /// Speak TLS, verifying the server's certificate and name.
    #[arg(long)]
    tls: bool,
    /// Also trust the certificates of this PEM file (a self-signed server's, say).
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,
    /// Accept any certificate, unverified: for throwaway test servers only.
    #[arg(long, requires = "tls")]
    insecure: bool,
    /// The name to ask for (SNI) and verify (default: the host part of --addr).
    #[arg(long, value_name = "NAME", requires = "tls")]
    server_name: Option<String>,
}

// ANCHOR: protocol
/// Prints what the server sends; reports how the connection ended.
struct Printer {
    done: Option<oneshot::Sender<Option<io::Error>>>,
    /// How many bytes came back so far.
    received: watch::Sender<u64>,
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
        self.received
            .send_modify(|received| *received += msg.data.len() as u64);
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

// ANCHOR: tls
/// The TLS client `--tls` asks for.
fn tls_connector(args: &Args) -> io::Result<TlsConnector> {
    let mut connector = match &args.ca {
        Some(ca) => TlsConnector::with_ca_file(ca)?,
        None => TlsConnector::new()?,
    };
    if args.insecure {
        eprintln!(
            "echo_client: warning: --insecure: the server's certificate is not verified; \
             anyone on the path can read and change the traffic"
        );
        connector = connector.danger_accept_invalid_certs(true);
    }
    if let Some(name) = &args.server_name {
        connector = connector.server_name(name);
    }
    Ok(connector)
}
// ANCHOR_END: tls

#[actix::main]
async fn main() -> io::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();

    // ANCHOR: connect
    let (done, lost) = oneshot::channel();
    let (received, mut echoed) = watch::channel(0);
    let printer = move || {
        Printer {
            done: Some(done),
            received,
        }
        .start()
    };
    let connected = match (&args.unix, args.tls) {
        (Some(path), _) => unix::connect(path, printer).await,
        (None, true) => match tls_connector(&args) {
            // A certificate that does not verify fails here, before the protocol is made.
            Ok(connector) => connector.connect(&args.addr, printer).await,
            Err(err) => Err(err),
        },
        (None, false) => tcp::connect(&args.addr, printer).await,
    };
    let transport = match connected {
        Ok((transport, _printer)) => transport,
        Err(err) => {
            let target = args
                .unix
                .as_ref()
                .map_or(args.addr.clone(), |path| path.display().to_string());
            eprintln!("echo_client: cannot connect to {target}: {err}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if let Some(cipher) = transport.cipher().await {
        eprintln!("echo_client: tls: {} {}", cipher.protocol, cipher.name);
    }
    // ANCHOR_END: connect

    // ANCHOR: send
    let mut stdin = tokio::io::stdin();
    let mut chunk = vec![0; 64 * 1024];
    let mut sent = 0;
    loop {
        let n = stdin.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        // Resolves once the bytes reached the kernel: stdin is read no faster than we send.
        transport.write_acked(chunk[..n].to_vec()).await?;
        sent += n as u64;
    }
    if transport
        .send(CanWriteEof)
        .await
        .map_err(io::Error::other)?
    {
        transport.send(WriteEof).await.map_err(io::Error::other)??;
    } else {
        // TLS cannot half-close: wait for the whole echo (or the end of the connection), then
        // close. The server reads our close as EOF, and closes in turn.
        let _ = echoed.wait_for(|&received| received >= sent).await;
        transport.close();
    }
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
