//! An echo client: sends its stdin to an echo server and prints what comes back.
//!
//! It shows a client outside any actor, plain or TLS, writes that wait for room as
//! back-pressure, and half-close: after stdin's EOF the client shuts its write side down and keeps reading until
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

use clap::Parser;
use switchboard::{prelude::*, tls::TlsConnector};
use tokio::io::AsyncReadExt;

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
    // `Connection::new` goes where a protocol factory goes, and comes back connected.
    let connected = match (&args.unix, args.tls) {
        (Some(path), _) => unix::connect(path, Connection::new).await,
        (None, true) => match tls_connector(&args) {
            // A certificate that does not verify fails here, before anything is sent.
            Ok(connector) => connector.connect(&args.addr, Connection::new).await,
            Err(err) => Err(err),
        },
        (None, false) => tcp::connect(&args.addr, Connection::new).await,
    };
    let mut conn = match connected {
        Ok((_, conn)) => conn,
        Err(err) => {
            let target = args
                .unix
                .as_ref()
                .map_or(args.addr.clone(), |path| path.display().to_string());
            eprintln!("echo_client: cannot connect to {target}: {err}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if let Some(cipher) = conn.transport().cipher().await {
        eprintln!("echo_client: tls: {} {}", cipher.protocol, cipher.name);
    }
    // ANCHOR_END: connect

    // ANCHOR: send
    // Sends stdin while the main task prints what comes back. TLS cannot half-close: over TLS
    // the client closes once the whole echo is back instead.
    let half_close = conn.transport().send(CanWriteEof).await.unwrap_or(false);
    let transport = conn.transport().clone();
    let mut sending = Some(actix::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut chunk = vec![0; 64 * 1024];
        let mut sent = 0;
        loop {
            let n = stdin.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            // Waits while the write buffer is full: stdin is read no faster than we send.
            transport.write_ready(chunk[..n].to_vec()).await?;
            sent += n as u64;
        }
        if half_close {
            transport.send(WriteEof).await.map_err(io::Error::other)??;
        }
        io::Result::Ok(sent)
    }));
    // ANCHOR_END: send

    // ANCHOR: receive
    let (mut sent, mut received) = (None, 0);
    let mut stdout = io::stdout().lock();
    loop {
        if !half_close && sent == Some(received) {
            conn.close();
        }
        tokio::select! {
            done = async { sending.as_mut().expect("guarded").await }, if sending.is_some() => {
                sending = None;
                sent = Some(done.map_err(io::Error::other)??);
            }
            item = conn.next() => match item {
                // A blocking write: while stdout is slow, the connection is not read, and the
                // server's bytes wait in the kernel. That is back-pressure, for free.
                Some(Ok(data)) => {
                    stdout.write_all(&data).and_then(|()| stdout.flush())?;
                    received += data.len() as u64;
                }
                Some(Err(err)) => {
                    eprintln!("echo_client: connection lost: {err}");
                    return Ok(ExitCode::FAILURE);
                }
                None => break,
            },
        }
    }
    // ANCHOR_END: receive

    // ANCHOR: finish
    conn.close();
    match conn.closed().await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(err) => {
            eprintln!("echo_client: connection lost: {err}");
            Ok(ExitCode::FAILURE)
        }
    }
    // ANCHOR_END: finish
}
