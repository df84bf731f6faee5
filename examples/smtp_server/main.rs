//! A small SMTP receiver (RFC 5321, with STARTTLS from RFC 3207, pipelining, `SIZE` and
//! `8BITMIME`) that stores each message it accepts in a Maildir.
//!
//! It shows the two ways a live connection changes hands in switchboard:
//!
//! - **`Ctx::start_tls`**: on `STARTTLS` the command protocol answers `220` and upgrades its own
//!   connection to TLS in place. A client must begin the handshake right after the `220`, before
//!   any other command (RFC 3207 §4), and the server must not take what came in the clear as part
//!   of the protected session (§4.2, CVE-2011-0411). This server does what switchboard does by
//!   default: `start_tls` hands what the session received after the command to the upgrade
//!   ([`StartTls::unconsumed`]), and if there is any, the transport refuses the upgrade and ends
//!   the connection (a `TlsErrorKind::Injection` error) rather than discard it and go on with a
//!   client that is broken or hostile. What the transport read and had not delivered yet, it
//!   discards.
//! - **`Ctx::switch_to`**: on `DATA` the command protocol ([`session`]) switches to a protocol
//!   that reads the message ([`data`]), which switches back to the session after the final dot.
//!   Each switch carries the bytes the old protocol received and did not use, so a client may
//!   pipeline the message behind `DATA` and its next commands behind the final dot.
//!
//! Both are [`Protocol`]s: the session decodes the command stream with a codec of lines
//! ([`lines`]), the DATA phase reads the bytes as they come. The parsers touch no I/O:
//! [`command`] parses a command line, [`lines`] splits the command stream, [`content`] reads the
//! message of `DATA`. The fuzz targets under `fuzz/` drive them.
//!
//! ```text
//! cargo run --example smtp_server                    # 127.0.0.1:2525, into ./maildir
//! cargo run --example smtp_server -- --addr 127.0.0.1:0 --maildir /tmp/mail --require-tls
//! cargo run --example smtp_server -- --cert cert.pem --key key.pem --hostname mx.example
//! cargo run --example smtp_server -- --command-timeout 600   # wait 10 minutes for a command
//! openssl s_client -starttls smtp -connect 127.0.0.1:2525 -crlf   # then EHLO, MAIL, ...
//! ```
//!
//! Without `--cert` and `--key` it serves a self-signed certificate for `localhost`, made at
//! start-up. Each message goes to `MAILDIR/new/` with `Return-Path:` and `Received:` fields in
//! front of it, written under `MAILDIR/tmp/` first and then renamed, so a reader never sees part
//! of a message.
//!
//! # Bounds
//!
//! What one client can cost, whatever it does:
//!
//! - **Memory.** A command line is kept to 512 bytes (RFC 5321 §4.5.3.1.4), a message to
//!   `--max-size` bytes (10 MiB by default). Replies are bounded by switchboard's default, with
//!   no code here: neither protocol overrides `pause_writing`, so while the transport's write
//!   buffer is over its high-water mark (64 KiB, 512 KiB after STARTTLS) the transport stops
//!   reading the socket. A client that pipelines `NOOP`s and never reads the
//!   replies stalls there, its kernel buffers full, and costs the server under 1 MiB (the
//!   replies to one 256 KiB read, written at once as RFC 2920 asks); the transport's hard
//!   maximum (4 MiB) is never reached. `tests/example_smtp.rs` holds such a client against the
//!   server as a process and checks its memory.
//! - **Time.** RFC 5321 §4.5.3.2.7 has a server wait at least 5 minutes for the next command:
//!   `--command-timeout SECS` (300 by default; 0 waits forever). It is the connection's idle
//!   timeout (`StreamConfig::idle_timeout`: no byte read or written for that long); both
//!   protocols override `timed_out`, so the client is told `421 4.4.2 HOSTNAME Error: timeout
//!   exceeded` (Postfix's words) before the server closes. Bytes alone do not keep a session
//!   alive: a command must be complete within the timeout of the previous one (a timer of the
//!   session checks it), so a client that sends a line a byte at a time (slowloris) is told the
//!   same once the timeout has passed. In the DATA phase the same idle timeout stands for RFC
//!   5321's per-block timeout (3 minutes, §4.5.3.2.5, on the client's side: no RFC sets the
//!   server's); one timeout for the whole connection is simpler and no shorter than the RFC's. A
//!   stalled write is aborted after 30 s (the transport's write stall timeout), a TLS handshake
//!   after 10 s.
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

use clap::Parser;
use switchboard::{
    prelude::*,
    tls::{SelfSigned, TlsAcceptor},
};

use crate::{maildir::Maildir, session::Session};

/// The default of `--max-size`: 10 MiB.
const DEFAULT_MAX_SIZE: usize = 10 * 1024 * 1024;

/// The default of `--command-timeout`: the 5 minutes of RFC 5321 §4.5.3.2.7 ("at least").
const DEFAULT_COMMAND_TIMEOUT: &str = "300";

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
    /// How long the server waits for the next command, or for the next bytes of a message,
    /// before it answers 421 and closes (seconds, fractions allowed; 0 waits forever). RFC 5321
    /// §4.5.3.2.7: at least 5 minutes.
    #[arg(long, value_name = "SECS", default_value = DEFAULT_COMMAND_TIMEOUT, value_parser = seconds)]
    command_timeout: Duration,
}

/// A number of seconds on the command line (`5`, `0.5`).
fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.parse().map_err(|err| format!("{err}"))?;
    Duration::try_from_secs_f64(secs).map_err(|err| format!("{err}"))
}

/// A timeout flag's value: `0` is none.
fn timeout(secs: Duration) -> Option<Duration> {
    (!secs.is_zero()).then_some(secs)
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
    /// `--command-timeout`: `None` waits forever.
    pub(crate) command_timeout: Option<Duration>,
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
        command_timeout: timeout(args.command_timeout),
    });
    // The command timeout is the idle timeout of every connection: the transport tells the
    // protocol attached (session or DATA phase) when it runs out, which answers 421 and closes.
    let options = ServerOptions::default()
        .stream(StreamConfig::default().idle_timeout(timeout(args.command_timeout))?);

    // Both signals are caught from before the `listening on` line: a client that sends one as
    // soon as it reads the line finds the handlers in place.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;

    // ANCHOR: serve
    let server = tcp::serve_with(&args.addr, options, move || Session::new(config.clone())).await?;
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
