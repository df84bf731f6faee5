//! The benchmark's baseline: the echo server a user would write with plain tokio instead of
//! switchboard. A task per connection reads into a buffer and writes it back.
//!
//! ```text
//! cargo run --release --example tokio_echo -- --addr 127.0.0.1:0 --workers 1
//! ```
//!
//! It takes `echo_server`'s flags and prints the same `listening on ADDR` line, so that the
//! benchmark drives both alike. Like `echo_server` it sets `TCP_NODELAY`, and it exits 0 on
//! SIGINT or SIGTERM.

use std::{io, path::PathBuf, time::Duration};

use clap::Parser;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, UnixListener},
    signal::unix::{SignalKind, signal},
};

#[derive(Debug, Parser)]
#[command(about = "A plain tokio echo server, the benchmark's baseline")]
struct Args {
    /// The TCP address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8888")]
    addr: String,
    /// Listen on this Unix socket path instead of TCP.
    #[arg(long)]
    unix: Option<PathBuf>,
    /// Runtime worker threads (default: one per core; 0: a single-threaded runtime).
    #[arg(long)]
    workers: Option<usize>,
    /// The bytes each connection reads at a time.
    #[arg(long, default_value_t = 4096)]
    buffer: usize,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    let mut runtime = match args.workers {
        Some(0) => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all().build()?.block_on(async {
        // Both signals are caught before `serve` prints its line.
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            result = serve(&args) => result,
            _ = interrupt.recv() => Ok(()),
            _ = terminate.recv() => Ok(()),
        }
    })
}

async fn serve(args: &Args) -> io::Result<()> {
    let buffer = args.buffer;
    match &args.unix {
        Some(path) => {
            let _ = std::fs::remove_file(path);
            let listener = UnixListener::bind(path)?;
            println!("listening on {}", path.display());
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => drop(tokio::spawn(echo(stream, buffer))),
                    Err(error) => back_off(error).await,
                }
            }
        }
        None => {
            let listener = TcpListener::bind(&args.addr).await?;
            println!("listening on {}", listener.local_addr()?);
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        drop(tokio::spawn(echo(stream, buffer)));
                    }
                    Err(error) => back_off(error).await,
                }
            }
        }
    }
}

// ANCHOR: echo
/// Echoes until the peer closes or the connection fails.
async fn echo(mut stream: impl AsyncRead + AsyncWrite + Unpin, buffer: usize) {
    let mut buffer = vec![0; buffer];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => {
                if stream.write_all(&buffer[..read]).await.is_err() {
                    return;
                }
            }
        }
    }
}
// ANCHOR_END: echo

/// An accept error (out of descriptors, most likely) must not end the server.
async fn back_off(error: io::Error) {
    eprintln!("accept: {error}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}
