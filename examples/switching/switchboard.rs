//! Lines, then length-prefixed frames: `PING`, `SET key value` and `GET key` as text lines until
//! `UPGRADE`, then the same commands as frames (a 4-byte big-endian length, then the bytes).
//! Bytes a client pipelines behind `UPGRADE` are frames, and none is lost in the switch.
//!
//! The book's line-count comparison: this file, `tokio.rs` (tokio + tokio-util's `Framed`) and
//! `asyncio.py` are the same server, counted by `book/count-lines.py`.
//!
//! ```text
//! cargo run --example switching -- 127.0.0.1:7000
//! ```

use std::{collections::HashMap, io};

use switchboard::{prelude::*, rt};

// ANCHOR: protocols
/// Text lines, until `UPGRADE`.
#[derive(Default)]
struct Lines(Store);

impl Protocol for Lines {
    type Codec = LinesCodec;

    fn data_received(&mut self, line: String, cx: &mut Ctx<'_, Self>) {
        if line == "UPGRADE" {
            cx.send("OK");
            cx.switch_to(Frames(std::mem::take(&mut self.0)));
        } else {
            cx.send(self.0.reply(&line));
        }
    }
}

/// Length-prefixed frames, to the end.
struct Frames(Store);

impl Protocol for Frames {
    type Codec = LengthDelimitedCodec;

    fn data_received(&mut self, frame: BytesMut, cx: &mut Ctx<'_, Self>) {
        let reply = self.0.reply(&String::from_utf8_lossy(&frame));
        cx.send(Bytes::from(reply));
    }
}

// ANCHOR_END: protocols

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

#[actix::main]
async fn main() -> io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:7000".into());
    let server = tcp::serve(addr, Lines::default).await?;
    println!("listening on {}", server.addresses()[0]);
    rt::signal::ctrl_c().await
}
