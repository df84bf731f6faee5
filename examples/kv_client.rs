//! A client of `kv_server`: it sends each line of its stdin as a request and prints each reply.
//! It shows a request/response client outside any actor, with a timeout per request, and a
//! reconnection with exponential back-off when the server is not there yet or goes away.
//!
//! ```text
//! cargo run --example kv_server &
//! printf 'SET greeting hello\nGET greeting\n' | cargo run --example kv_client
//! ```
//!
//! It prints one line per reply (`OK`, `VALUE hello`). A request that gets no reply within
//! `--timeout` seconds (5 by default) fails the run with `kv_client: GET greeting: no reply
//! within 5s` and exit status 1. While the server cannot be reached it retries, waiting 100 ms,
//! then twice as long each time up to 2 s, for at most `--retries` attempts (10 by default), and
//! it sends a request again on a new connection if the old one was lost before its reply (the
//! requests of kv_server can all be repeated safely).

use std::{io, process::ExitCode, time::Duration};

use clap::Parser;
use switchboard::{codec::LinesCodec, prelude::*};
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Debug, Parser)]
#[command(about = "Sends each line of stdin to kv_server and prints the reply")]
struct Args {
    /// The server's TCP address.
    #[arg(long, default_value = "127.0.0.1:6380")]
    addr: String,
    /// How long a request waits for its reply (seconds, fractions allowed).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = seconds)]
    timeout: Duration,
    /// How many times to try to connect before giving up.
    #[arg(long, default_value = "10")]
    retries: u32,
}

fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text.parse().map_err(|err| format!("{err}"))?;
    Duration::try_from_secs_f64(secs).map_err(|err| format!("{err}"))
}

// ANCHOR: client
/// One connection to the server, one request at a time.
struct Client {
    conn: Connection<LinesCodec>,
    timeout: Duration,
}

impl Client {
    /// Sends `request` and waits for its reply line, for at most the timeout.
    async fn request(&mut self, request: &str) -> io::Result<String> {
        self.conn.send(request).await.map_err(io::Error::other)?;
        match tokio::time::timeout(self.timeout, self.conn.next()).await {
            Ok(Some(reply)) => reply.map_err(io::Error::other),
            Ok(None) => Err(io::ErrorKind::UnexpectedEof.into()),
            Err(_) => {
                // The connection is in an unknown state: a late reply would answer the next
                // request. Drop it.
                self.conn.abort();
                let timeout = self.timeout;
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no reply within {timeout:?}"),
                ))
            }
        }
    }
}
// ANCHOR_END: client

// ANCHOR: connect
/// Connects, retrying with exponential back-off while the server cannot be reached.
async fn connect(args: &Args) -> io::Result<Client> {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match tcp::connect(&args.addr, || Connection::with_codec(LinesCodec::new())).await {
            Ok((_, conn)) => {
                return Ok(Client {
                    conn,
                    timeout: args.timeout,
                });
            }
            Err(err) if attempt < args.retries => {
                eprintln!("kv_client: {err}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
}
// ANCHOR_END: connect

#[actix::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kv_client: {err}");
            ExitCode::FAILURE
        }
    }
}

// ANCHOR: run
async fn run(args: &Args) -> io::Result<()> {
    let mut client = connect(args).await?;
    let mut requests = BufReader::new(tokio::io::stdin()).lines();
    while let Some(request) = requests.next_line().await? {
        let reply = match client.request(&request).await {
            // Lost before its reply: once more, on a new connection.
            Err(err) if err.kind() != io::ErrorKind::TimedOut => {
                eprintln!("kv_client: {request}: {err}; reconnecting");
                client = connect(args).await?;
                client.request(&request).await
            }
            reply => reply,
        };
        let reply = reply.map_err(|err| io::Error::new(err.kind(), format!("{request}: {err}")))?;
        println!("{reply}");
    }
    client.conn.close();
    client.conn.closed().await
}
// ANCHOR_END: run
