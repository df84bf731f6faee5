//! After 300 datagram endpoints ended every way one can (closed, aborted, their protocol
//! stopped), no endpoint actor and no file descriptor is left.
//!
//! Alone in its own test binary: actor and descriptor counts are per process, and other tests
//! running in parallel threads would disturb them.

mod support;

use std::time::Duration;

use actix::prelude::*;
use switchboard::{DatagramProtocolHandle, datagram::live_endpoints, prelude::*, udp};
use tokio::net::UdpSocket;

/// Counts what it receives and stops at `ConnectionLost`.
struct Sink {
    endpoint: Option<DatagramHandle>,
}

impl Actor for Sink {
    type Context = Context<Self>;
}

impl Handler<ConnectionMade<DatagramHandle>> for Sink {
    type Result = ();
    fn handle(&mut self, msg: ConnectionMade<DatagramHandle>, _: &mut Context<Self>) {
        self.endpoint = Some(msg.transport);
    }
}

impl Handler<DatagramReceived> for Sink {
    type Result = ();
    fn handle(&mut self, _: DatagramReceived, _: &mut Context<Self>) {}
}

impl Handler<ErrorReceived> for Sink {
    type Result = ();
    fn handle(&mut self, _: ErrorReceived, _: &mut Context<Self>) {}
}

impl Handler<ConnectionLost> for Sink {
    type Result = ();
    fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

/// How an endpoint of the test ends.
#[derive(Debug, Clone, Copy)]
enum End {
    Close,
    Abort,
    ProtocolStops,
}

#[actix_rt::test]
async fn three_hundred_endpoints_leave_no_actor_and_no_descriptor_behind() {
    let fds = support::open_fds();
    assert_eq!(live_endpoints(), 0);
    let peer = UdpSocket::bind("127.0.0.1:0").await.expect("a peer socket");
    let peer_addr = peer.local_addr().expect("its address");
    for round in 0..3 {
        let mut endpoints = Vec::new();
        for n in 0..100 {
            let sink = Sink { endpoint: None }.start();
            let protocol = DatagramProtocolHandle::new(sink.clone());
            let (endpoint, _) = udp::bind("127.0.0.1:0", || protocol).await.expect("bind");
            // Some traffic both ways, so the endpoints have something in their books.
            endpoint.send_to(&b"ping"[..], peer_addr);
            let addr = endpoint.sockname().cloned().expect("a bound address");
            let addr = addr.as_inet().expect("an internet address");
            peer.send_to(b"pong", addr).await.expect("send");
            let end = [End::Close, End::Abort, End::ProtocolStops][(n + round) % 3];
            endpoints.push((endpoint, sink, end));
        }
        // An actor counts itself once it has started, at the arbiter's next turn.
        support::deadline(async {
            while live_endpoints() < 100 {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert_eq!(live_endpoints(), 100, "round {round}: every endpoint runs");
        for (endpoint, sink, end) in endpoints {
            match end {
                End::Close => endpoint.close(),
                End::Abort => endpoint.abort(),
                // The death pact: the endpoint aborts when it notices.
                End::ProtocolStops => sink.do_send(StopSink),
            }
        }
        support::deadline(async {
            while live_endpoints() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
    // The peer socket is the test's own.
    drop(peer);
    assert_eq!(support::open_fds(), fds, "descriptors left open");
}

#[derive(Message)]
#[rtype(result = "()")]
struct StopSink;

impl Handler<StopSink> for Sink {
    type Result = ();
    fn handle(&mut self, _: StopSink, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
