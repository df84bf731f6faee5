//! The program of the book's chapter "Getting started": a server that answers each line it
//! receives with the same line in upper case.
//!
//! ```text
//! cargo run -p getting-started -- 127.0.0.1:7878
//! ```

// ANCHOR: main
use switchboard::{prelude::*, rt};

/// Answers each line with the same line in upper case.
struct Shout;

impl Protocol for Shout {
    type Codec = LinesCodec;

    fn connection_made(&mut self, cx: &mut Ctx<'_, Self>) {
        cx.send("hello: send me lines");
    }

    fn data_received(&mut self, line: String, cx: &mut Ctx<'_, Self>) {
        cx.send(line.to_uppercase());
    }
}

#[actix::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:7878".into());
    let server = tcp::serve(addr, || Shout).await?;
    println!("listening on {}", server.addresses()[0]);
    rt::signal::ctrl_c().await
}
// ANCHOR_END: main
