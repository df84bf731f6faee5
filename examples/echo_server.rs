//! An echo server: every byte a client sends comes back to it.
//!
//! It shows the smallest useful protocol, back-pressure from the write buffer to the socket
//! (a client that never reads cannot make the server buffer without bound), a server over TCP,
//! TLS or a Unix socket, and a graceful shutdown. When a client half-closes, the server finishes
//! echoing what it received, then closes. On SIGINT or SIGTERM it stops accepting, closes every
//! connection gracefully (queued bytes are still delivered), aborts the connections still open
//! after `--grace` seconds (5 by default; a client that never reads holds nothing up longer) or
//! at a second signal, and exits 0.
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

use std::{fs, io, path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use switchboard::{
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

// ANCHOR: protocol
/// The echo protocol: one actor per connection.
struct Echo;

impl Protocol for Echo {
    type Codec = Raw;

    fn data_received(&mut self, data: Bytes, cx: &mut Ctx<'_, Self>) {
        cx.write(data);
    }
}
// ANCHOR_END: protocol

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
    // The same factory whatever the server: TLS is a layer under the transport.
    let server = match (&args.unix, acceptor) {
        (Some(path), _) => unix::serve_with(path, options, || Echo).await?,
        (None, Some(acceptor)) => tls::serve_with(&args.addr, options, acceptor, || Echo).await?,
        (None, None) => tcp::serve_with(&args.addr, options, || Echo).await?,
    };
    println!("listening on {}", server.addresses()[0]);
    // ANCHOR_END: serve

    // ANCHOR: shutdown
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
    // ANCHOR_END: shutdown
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    //! The echo protocol on a mock transport: no socket, no server.

    use std::io;

    use switchboard::testing::{self, Chunking, Ending, MockTransport, Probe};

    use super::*;

    // ANCHOR: test_echo
    // Every byte comes back, however the bytes are cut into reads.
    #[actix::test]
    async fn test_echo() {
        let input = "hello\nworld\n";
        for chunking in Chunking::every(input.len()) {
            let mock = MockTransport::connect(Echo).await;
            mock.feed_chunked(input, &chunking).await;
            assert_eq!(mock.written(), input, "{chunking:?}");
        }
    }
    // ANCHOR_END: test_echo

    // ANCHOR: test_echo_backpressure
    // A full write buffer (PauseWriting) stops reading; room again (ResumeWriting) restarts it:
    // the default of every protocol that does not override `pause_writing`.
    #[actix::test]
    async fn test_echo_backpressure() {
        let mock = MockTransport::connect(Echo).await;

        mock.pause_writing().await;
        assert!(!mock.is_reading());
        assert_eq!(mock.command_names(), ["PauseReading"]);

        mock.resume_writing().await;
        assert!(mock.is_reading());
        assert_eq!(mock.command_names(), ["PauseReading", "ResumeReading"]);
    }
    // ANCHOR_END: test_echo_backpressure

    // ANCHOR: test_echo_over_loopback
    // The same protocol behind a real server on a free loopback port, with a Probe as the client.
    #[actix::test]
    async fn test_echo_over_loopback() {
        let server = testing::tcp_server(|| Echo)
            .await
            .expect("listen on loopback");
        let (client, mut events) = Probe::builder().start();
        let (transport, _) = switchboard::tcp::connect(server.addr, move || client)
            .await
            .expect("connect");
        events.made().await;
        transport.write("ping\n");
        assert_eq!(events.data(5).await, b"ping\n");
        transport.close();
        assert!(events.until_lost().await.is_none(), "a clean close");
        server.handle.close().await;
    }
    // ANCHOR_END: test_echo_over_loopback

    /// What arrives while reading is paused waits, and is echoed once writing resumes.
    #[actix::test]
    async fn bytes_received_while_paused_wait_for_resume_writing() {
        let mock = MockTransport::connect(Echo).await;
        mock.pause_writing().await;
        mock.feed("waits").await;
        assert_eq!(mock.written(), "", "nothing is read while paused");

        // Write-flow events do not wait behind the data held by paused reading.
        mock.resume_writing().await;
        assert_eq!(mock.written(), "waits");
        assert_eq!(
            mock.command_names(),
            ["PauseReading", "ResumeReading", "Write"]
        );
    }

    /// One `Write` per `DataReceived`, with that delivery's bytes: an echo never merges reads.
    #[actix::test]
    async fn each_read_is_echoed_as_one_write() {
        let mock = MockTransport::connect(Echo).await;
        mock.feed_chunked("abcdefg", &Chunking::Sizes(vec![3, 1]))
            .await;
        assert_eq!(mock.writes(), ["abc", "d", "efg"]);
        assert_eq!(mock.command_names(), ["Write", "Write", "Write"]);
    }

    /// A client that half-closes gets back everything it sent, then the connection closes.
    #[actix::test]
    async fn at_eof_it_finishes_echoing_then_closes() {
        let mock = MockTransport::connect(Echo).await;
        mock.push("last ");
        mock.push("words");
        assert!(
            !mock.eof().await,
            "Echo does not keep a half-open connection"
        );
        assert_eq!(mock.written(), "last words");
        assert_eq!(mock.ending(), Some(Ending::ClosedAtEof));
        mock.protocol_stopped().await;
    }

    /// The protocol actor stops at `ConnectionLost`, whatever ended the connection.
    #[actix::test]
    async fn it_stops_when_the_connection_is_lost() {
        let mock = MockTransport::connect(Echo).await;
        mock.feed("ping").await;
        mock.lose(Some(io::ErrorKind::ConnectionReset.into())).await;
        mock.protocol_stopped().await;
        assert_eq!(mock.written(), "ping");
        assert_eq!(mock.ending(), Some(Ending::Lost));
    }
}
