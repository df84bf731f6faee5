//! The switching server of `switchboard.rs`, written with plain tokio and tokio-util's `Framed`
//! as a user would without switchboard: a comparison for the book's line count, not a product.
//!
//! ```text
//! cargo run --example tokio_switching -- 127.0.0.1:7000
//! ```

use std::{collections::HashMap, error::Error, io};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, FramedParts, LengthDelimitedCodec, LinesCodec};

#[tokio::main]
async fn main() -> io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:7000".into());
    let listener = TcpListener::bind(addr).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (socket, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(err) = serve(socket).await {
                eprintln!("connection failed: {err}");
            }
        });
    }
}

/// Text lines until `UPGRADE`, then length-prefixed frames.
async fn serve(socket: TcpStream) -> Result<(), Box<dyn Error + Send + Sync>> {
    let mut store = Store::default();
    // A bound on a line, or one client without a newline takes all the memory.
    let mut lines = Framed::new(socket, LinesCodec::new_with_max_length(8 << 20));
    while let Some(line) = lines.next().await {
        let line = line?;
        if line == "UPGRADE" {
            lines.send("OK").await?;
            // The bytes read behind `UPGRADE` go over to the new framing.
            let old = lines.into_parts();
            let mut parts = FramedParts::new::<Bytes>(old.io, LengthDelimitedCodec::new());
            parts.read_buf = old.read_buf;
            let mut frames = Framed::from_parts(parts);
            while let Some(frame) = frames.next().await {
                let reply = store.reply(&String::from_utf8_lossy(&frame?));
                frames.send(Bytes::from(reply)).await?;
            }
            return Ok(());
        }
        let reply = store.reply(&line);
        lines.send(reply).await?;
    }
    Ok(())
}

/// The connection's keys and values.
#[derive(Default)]
struct Store(HashMap<String, String>);

impl Store {
    fn reply(&mut self, command: &str) -> String {
        let mut words = command.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("PING"), None, None) => "PONG".into(),
            (Some("SET"), Some(key), Some(value)) => {
                self.0.insert(key.into(), value.into());
                "OK".into()
            }
            (Some("GET"), Some(key), None) => self.0.get(key).cloned().unwrap_or("NIL".into()),
            _ => "ERR unknown command".into(),
        }
    }
}
