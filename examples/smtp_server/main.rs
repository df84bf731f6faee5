//! A small SMTP receiver (RFC 5321, with STARTTLS from RFC 3207, pipelining, `SIZE` and
//! `8BITMIME`) that stores each message it accepts in a Maildir.
//!
//! It shows the two ways a live connection changes hands in switchboard:
//!
//! - **`StartTls`**: on `STARTTLS` the command protocol answers `220` and upgrades its own
//!   connection to TLS in place; plaintext the client pipelined behind the command is dropped,
//!   never executed.
//! - **`SetProtocol`**: on `DATA` the command protocol ([`session`]) hands the connection to a
//!   protocol that reads the message ([`data`]), which hands it back after the final dot. Each
//!   switch carries the bytes the old protocol read and did not parse, so a client may pipeline
//!   the message behind `DATA` and its next commands behind the final dot.
//!
//! The parsers touch no I/O: [`command`] parses a command line, [`lines`] splits the command
//! stream, [`content`] reads the message of `DATA`. The fuzz targets under `fuzz/` drive them.
//!
//! ```text
//! cargo run --example smtp_server                    # 127.0.0.1:2525, into ./maildir
//! cargo run --example smtp_server -- --addr 127.0.0.1:0 --maildir /tmp/mail --require-tls
//! cargo run --example smtp_server -- --cert cert.pem --key key.pem --hostname mx.example
//! openssl s_client -starttls smtp -connect 127.0.0.1:2525 -crlf   # then EHLO, MAIL, ...
//! ```
//!
//! Without `--cert` and `--key` it serves a self-signed certificate for `localhost`, made at
//! start-up. Each message goes to `MAILDIR/new/` with `Return-Path:` and `Received:` fields in
//! front of it, written under `MAILDIR/tmp/` first and then renamed, so a reader never sees part
//! of a message.
//!
//! It prints `listening on ADDR` to stdout, with the address really bound, once it accepts
//! connections, then `stored PATH` for each message; logs go to stderr (`RUST_LOG=debug`). On
//! SIGINT or SIGTERM it stops accepting, closes every connection gracefully, aborts the ones
//! still open after `--grace` seconds (5 by default) or at a second signal, and exits 0.

mod command;
mod content;
mod data;
mod envelope;
mod lines;
mod maildir;
mod session;

use std::{io, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use actix::prelude::*;
use clap::Parser;
use switchboard::{
    prelude::*,
    tls::{SelfSigned, TlsAcceptor},
};

use crate::{maildir::Maildir, session::Session};

/// The default of `--max-size`: 10 MiB.
const DEFAULT_MAX_SIZE: usize = 10 * 1024 * 1024;

#[derive(Debug, Parser)]
#[command(about = "An SMTP receiver with STARTTLS that stores messages in a Maildir")]
struct Args {
    /// The TCP address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:2525")]
    addr: String,
    /// The Maildir to store messages in (created if missing).
    #[arg(long, default_value = "maildir")]
    maildir: PathBuf,
    /// Refuse MAIL until the client has issued STARTTLS.
    #[arg(long)]
    require_tls: bool,
    /// The server's certificate chain (PEM), for STARTTLS.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The private key of the certificate (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// The largest message accepted, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_SIZE)]
    max_size: usize,
    /// The name the server greets with and writes in `Received:` fields.
    #[arg(long, default_value = "localhost", value_parser = hostname)]
    hostname: String,
    /// On SIGINT or SIGTERM, how long the connections may take to close gracefully before they
    /// are aborted (seconds, fractions allowed).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = seconds)]
    grace: Duration,
}

/// A number of seconds on the command line (`5`, `0.5`).
fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.parse().map_err(|err| format!("{err}"))?;
    Duration::try_from_secs_f64(secs).map_err(|err| format!("{err}"))
}

/// A `--hostname`: one word of printable ASCII.
fn hostname(name: &str) -> Result<String, String> {
    if !name.is_empty() && name.bytes().all(|byte| byte.is_ascii_graphic()) {
        Ok(name.to_owned())
    } else {
        Err("a host name is one word of printable ASCII".to_owned())
    }
}

/// What every connection's protocols share.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) hostname: String,
    pub(crate) max_size: usize,
    pub(crate) require_tls: bool,
    pub(crate) tls: TlsAcceptor,
    pub(crate) maildir: Maildir,
}

#[actix::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("smtp_server: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> io::Result<()> {
    let tls = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => TlsAcceptor::from_pem_files(cert, key)?,
        _ => {
            tracing::warn!("no --cert and --key: STARTTLS serves a self-signed certificate");
            SelfSigned::localhost()?.acceptor()?
        }
    };
    let config = Arc::new(Config {
        maildir: Maildir::create(&args.maildir, &args.hostname)?,
        hostname: args.hostname,
        max_size: args.max_size,
        require_tls: args.require_tls,
        tls,
    });

    // Both signals are caught from before the `listening on` line: a client that sends one as
    // soon as it reads the line finds the handlers in place.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;

    // ANCHOR: serve
    let server = tcp::serve(&args.addr, move || Session::new(config.clone()).start()).await?;
    println!("listening on {}", server.addresses()[0]);
    // ANCHOR_END: serve

    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!(grace = ?args.grace, "shutting down: no new connections, closing the live ones");
    // Graceful within the grace period; a second signal aborts what is left at once.
    let report = tokio::select! {
        report = server.shutdown(args.grace) => report,
        _ = interrupt.recv() => server.shutdown(Duration::ZERO).await,
        _ = terminate.recv() => server.shutdown(Duration::ZERO).await,
    };
    tracing::info!(
        connections = report.connections,
        aborted = report.aborted,
        "server closed"
    );
    Ok(())
}
