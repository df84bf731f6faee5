//! Called outside an actix runtime (under `#[tokio::main]`, as a newcomer from tokio writes it),
//! every entry point fails with an `io::Error` that says what to do, instead of panicking deep
//! inside actix with "System is not running"; and makes no protocol.

use actix::prelude::*;
use switchboard::{DatagramConfig, DatagramHandle, prelude::*, subprocess};

/// A protocol the tests never get to make.
struct Never;

impl Actor for Never {
    type Context = Context<Self>;
}

impl Handler<ConnectionMade> for Never {
    type Result = ();
    fn handle(&mut self, _: ConnectionMade, _: &mut Context<Self>) {}
}

impl Handler<ConnectionMade<DatagramHandle>> for Never {
    type Result = ();
    fn handle(&mut self, _: ConnectionMade<DatagramHandle>, _: &mut Context<Self>) {}
}

impl Handler<ConnectionMade<SubprocessHandle>> for Never {
    type Result = ();
    fn handle(&mut self, _: ConnectionMade<SubprocessHandle>, _: &mut Context<Self>) {}
}

impl Handler<DataReceived> for Never {
    type Result = ();
    fn handle(&mut self, _: DataReceived, _: &mut Context<Self>) {}
}

impl Handler<EofReceived> for Never {
    type Result = ();
    fn handle(&mut self, _: EofReceived, _: &mut Context<Self>) {}
}

impl Handler<PauseWriting> for Never {
    type Result = ();
    fn handle(&mut self, _: PauseWriting, _: &mut Context<Self>) {}
}

impl Handler<ResumeWriting> for Never {
    type Result = ();
    fn handle(&mut self, _: ResumeWriting, _: &mut Context<Self>) {}
}

impl Handler<TimedOut> for Never {
    type Result = ();
    fn handle(&mut self, _: TimedOut, _: &mut Context<Self>) {}
}

impl Handler<DatagramReceived> for Never {
    type Result = ();
    fn handle(&mut self, _: DatagramReceived, _: &mut Context<Self>) {}
}

impl Handler<PipeDataReceived> for Never {
    type Result = ();
    fn handle(&mut self, _: PipeDataReceived, _: &mut Context<Self>) {}
}

impl Handler<ErrorReceived> for Never {
    type Result = ();
    fn handle(&mut self, _: ErrorReceived, _: &mut Context<Self>) {}
}

impl Handler<PipeConnectionLost> for Never {
    type Result = ();
    fn handle(&mut self, _: PipeConnectionLost, _: &mut Context<Self>) {}
}

impl Handler<ProcessExited> for Never {
    type Result = ();
    fn handle(&mut self, _: ProcessExited, _: &mut Context<Self>) {}
}

impl Handler<ConnectionLost> for Never {
    type Result = ();
    fn handle(&mut self, _: ConnectionLost, _: &mut Context<Self>) {}
}

fn never() -> Addr<Never> {
    panic!("no protocol is made outside an actix runtime")
}

fn says_what_to_do(result: std::io::Result<impl std::fmt::Debug>, what: &str) {
    let err = result.expect_err(what);
    assert_eq!(err.kind(), std::io::ErrorKind::Other, "{what}: {err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{what} needs an actix runtime")),
        "{text}"
    );
    assert!(
        text.contains("#[actix::main]") && text.contains("not #[tokio::main]"),
        "{text}"
    );
}

#[tokio::test]
async fn servers_and_clients_outside_actix_say_what_to_do() {
    says_what_to_do(tcp::serve("127.0.0.1:0", never).await, "tcp::serve");
    let dir = tempfile::tempdir().unwrap();
    says_what_to_do(
        unix::serve(dir.path().join("server.sock"), never).await,
        "unix::serve",
    );
    let cert = tls::SelfSigned::localhost().unwrap();
    says_what_to_do(
        tls::serve("127.0.0.1:0", cert.acceptor().unwrap(), never).await,
        "tls::serve",
    );

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    says_what_to_do(tcp::connect(addr, never).await, "tcp::connect");
    says_what_to_do(
        cert.connector()
            .unwrap()
            .connect(&addr.to_string(), never)
            .await,
        "tls::connect",
    );
    says_what_to_do(udp::bind("127.0.0.1:0", never).await, "udp::bind");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    says_what_to_do(
        udp::from_std(socket, DatagramConfig::default(), never),
        "udp::from_std",
    );
    says_what_to_do(
        unix_datagram::bind(dir.path().join("dgram.sock"), never),
        "unix_datagram::Endpoint::start",
    );
    says_what_to_do(
        subprocess::exec("true", [""; 0], never),
        "subprocess::spawn",
    );
    let (read, _write) = std::io::pipe().unwrap();
    says_what_to_do(pipe::connect_read(read, never), "pipe::connect_read");
}
