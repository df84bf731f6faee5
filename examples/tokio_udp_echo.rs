//! The datagram benchmark's baseline: the UDP echo server a user would write with plain tokio
//! instead of switchboard. One socket on a single-threaded runtime receives a datagram and sends
//! it back to its sender, again and again.
//!
//! ```text
//! cargo run --release --example tokio_udp_echo -- --addr 127.0.0.1:0
//! ```
//!
//! It takes `udp_echo`'s flag and prints the same `listening on ADDR` line, so that the
//! benchmark (`benches/datagram.rs`) drives both alike. It exits 0 on SIGINT or SIGTERM.

use std::io;

use clap::Parser;
use tokio::{
    net::UdpSocket,
    signal::unix::{SignalKind, signal},
};

/// The longest UDP datagram over IPv4 is 65,507 bytes; any datagram fits whole.
const BUFFER_SIZE: usize = 64 * 1024;

#[derive(Debug, Parser)]
#[command(about = "A plain tokio UDP echo server, the datagram benchmark's baseline")]
struct Args {
    /// The UDP address to bind (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9999")]
    addr: String,
}

fn main() -> io::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            // Both signals are caught before `serve` prints its line.
            let mut interrupt = signal(SignalKind::interrupt())?;
            let mut terminate = signal(SignalKind::terminate())?;
            tokio::select! {
                result = serve(&args.addr) => result,
                _ = interrupt.recv() => Ok(()),
                _ = terminate.recv() => Ok(()),
            }
        })
}

// ANCHOR: echo
/// Echoes every datagram to its sender, until the socket fails.
async fn serve(addr: &str) -> io::Result<()> {
    let socket = UdpSocket::bind(addr).await?;
    println!("listening on {}", socket.local_addr()?);
    let mut buffer = vec![0; BUFFER_SIZE];
    loop {
        let (len, peer) = socket.recv_from(&mut buffer).await?;
        // A failed send (the peer's port closed, say) loses that one datagram, as UDP may.
        if let Err(err) = socket.send_to(&buffer[..len], peer).await {
            eprintln!("send to {peer}: {err}");
        }
    }
}
// ANCHOR_END: echo
