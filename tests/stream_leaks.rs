//! After 10,000 connections opened and closed, over TCP, Unix sockets and TLS, no actor, task or
//! file descriptor is left. (Not the mock: it has no server and no descriptor.)
//!
//! Alone in its own test binary: descriptor counts are per process, and other tests running
//! in parallel threads would disturb them.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
    time::Duration,
};

use actix::prelude::*;
use support::{Kind, Served};
use switchboard::dev::{PROTOCOL_WATCH_INTERVAL, protocol_watch_sweeps};
use switchboard::{prelude::*, stream::live_transports};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Echoes (or, on the client side, just listens), and counts the live protocol actors.
struct Echo {
    transport: Option<TransportHandle>,
    live: Arc<AtomicUsize>,
    echo: bool,
}

impl Actor for Echo {
    type Context = Context<Self>;

    fn started(&mut self, _: &mut Context<Self>) {
        self.live.fetch_add(1, SeqCst);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.live.fetch_sub(1, SeqCst);
    }
}
ignore_events!(Echo: EofReceived, PauseWriting, ResumeWriting, TimedOut);

impl Handler<ConnectionMade> for Echo {
    type Result = ();
    fn handle(&mut self, msg: ConnectionMade, _: &mut Context<Self>) {
        self.transport = Some(msg.transport);
    }
}

impl Handler<DataReceived> for Echo {
    type Result = ();
    fn handle(&mut self, msg: DataReceived, _: &mut Context<Self>) {
        if let (true, Some(transport)) = (self.echo, &self.transport) {
            transport.write(msg.data);
        }
    }
}

impl Handler<ConnectionLost> for Echo {
    type Result = ();
    fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

const CONNECTIONS: usize = 10_000;

/// This process's threads.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .count()
}
const AT_ONCE: usize = 100;

async fn settle() {
    // Long enough for the protocol watch's sweep to notice it has nothing left to watch.
    tokio::time::sleep(PROTOCOL_WATCH_INTERVAL * 3).await;
}

#[actix_rt::test]
async fn ten_thousand_connections_leave_nothing_behind() {
    support::deadline(async {
        let server_side = Arc::new(AtomicUsize::new(0));
        let client_side = Arc::new(AtomicUsize::new(0));
        let echo = |live: Arc<AtomicUsize>| {
            move || {
                Echo {
                    transport: None,
                    live: live.clone(),
                    echo: true,
                }
                .start()
            }
        };
        let tcp = Served::start(
            Kind::Tcp,
            ServerOptions::default().workers(2),
            echo(server_side.clone()),
        )
        .await;
        let unix = Served::start(
            Kind::Unix,
            ServerOptions::default().workers(1),
            echo(server_side.clone()),
        )
        .await;
        let tls = Served::start(
            Kind::Tls,
            ServerOptions::default().workers(1),
            echo(server_side.clone()),
        )
        .await;
        // And TLS's, for a switchboard client and a raw one.
        one_connection(&tls, &client_side, 1).await;
        one_connection(&tls, &client_side, 2).await;
        // One warm-up round so lazily created state exists before the baseline.
        one_connection(&tcp, &client_side, 0).await;
        settle().await;
        let fds_before = support::open_fds();
        let threads_before = threads();
        assert_eq!(live_transports(), 0);
        assert_eq!(
            protocol_watch_sweeps(),
            0,
            "the sweeps stop with their last transport"
        );

        for batch in 0..CONNECTIONS / AT_ONCE {
            let mut round = Vec::with_capacity(AT_ONCE);
            for i in 0..AT_ONCE {
                let n = batch * AT_ONCE + i;
                // A quarter over Unix sockets, one in 32 over TLS (a handshake costs as much CPU
                // as dozens of plain connections), the rest over TCP; raw and switchboard
                // clients alike (`one_connection`).
                let served = match n % 64 {
                    1 | 2 => &tls,
                    _ if n % 4 == 3 => &unix,
                    _ => &tcp,
                };
                round.push(one_connection(served, &client_side, n));
            }
            futures::future::join_all(round).await;
        }

        // Every connection is gone from the servers' books.
        for _ in 0..500 {
            if tcp.server.stats().await.connections == 0
                && unix.server.stats().await.connections == 0
                && tls.server.stats().await.connections == 0
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let tcp_stats = tcp.server.stats().await;
        let unix_stats = unix.server.stats().await;
        let tls_stats = tls.server.stats().await;
        assert_eq!(
            tcp_stats.connections + unix_stats.connections + tls_stats.connections,
            0
        );
        assert_eq!(
            tcp_stats.accepted + unix_stats.accepted + tls_stats.accepted,
            CONNECTIONS as u64 + 3,
            "every connection was served"
        );
        settle().await;
        assert_eq!(
            server_side.load(SeqCst),
            0,
            "server protocol actors left alive"
        );
        assert_eq!(
            client_side.load(SeqCst),
            0,
            "client protocol actors left alive"
        );
        assert_eq!(live_transports(), 0, "transport actors left alive");
        assert_eq!(
            protocol_watch_sweeps(),
            0,
            "protocol-watch tasks left running"
        );
        assert_eq!(support::open_fds(), fds_before, "file descriptors leaked");
        assert_eq!(threads(), threads_before, "threads leaked");
        eprintln!(
            "{} connections: {fds_before} fds and {threads_before} threads before and after; \
             0 transport actors, 0 protocol actors and 0 watch tasks left",
            CONNECTIONS + 3,
        );

        // Closing the servers retires their worker threads once their last connection is gone.
        for served in [&tcp, &unix, &tls] {
            served.server.close().await;
        }
        for served in [&tcp, &unix, &tls] {
            served.server.wait_closed().await;
        }
        for _ in 0..500 {
            if threads() == threads_before - 4 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(threads(), threads_before - 4, "four worker threads retired");
    })
    .await
}

/// Half the connections are raw tokio clients, half are switchboard client transports.
async fn one_connection(served: &Served, client_side: &Arc<AtomicUsize>, n: usize) {
    let payload = format!("connection {n}");
    if n.is_multiple_of(2) {
        let mut peer = served.connect_raw().await.expect("connect");
        peer.write_all(payload.as_bytes()).await.unwrap();
        peer.shutdown().await.unwrap();
        let mut echoed = Vec::new();
        peer.read_to_end(&mut echoed).await.unwrap();
        assert_eq!(echoed, payload.as_bytes());
    } else {
        let live = client_side.clone();
        let (transport, _) = served
            .connect(move || {
                Echo {
                    transport: None,
                    live,
                    echo: false,
                }
                .start()
            })
            .await
            .expect("connect");
        // It writes, half-closes, and is closed by the server once the echo came back. TLS has
        // no half-close: it closes (close_notify), and the server closes in turn.
        let written = transport.write_acked(payload.clone()).await;
        written.expect("written");
        if served.kind == Kind::Tls {
            transport.close();
        } else {
            transport.write_eof();
        }
        while transport.is_alive() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}
