//! Guarantee 3 (switching) and 2 across switches, over TCP, Unix sockets, TLS and the mock.

mod support;

use std::sync::{Arc, Mutex};

use actix::prelude::*;
use bytes::Bytes;
use support::{Event, Kind, Probe, ProbeOptions, pair, send_all};
use switchboard::{WriteBufferLimits, prelude::*, stream::StreamConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

for_each_kind!([tcp, unix, tls, mock] =>
    switch_from_data_received_with_pipelined_bytes,
    thousand_switches_keep_a_byte_exact_transcript,
    writes_before_the_switch_go_out_first,
    new_protocol_hears_pause_writing_at_once,
    third_party_switch_and_get_protocol,
    connection_lost_goes_to_the_protocol_attached_at_the_end,
);

/// A line protocol: records lines; on `SWITCH` hands the connection, and every byte after the
/// line, to the next protocol.
struct Lines {
    transport: Option<TransportHandle>,
    next: Option<ProtocolHandle>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Actor for Lines {
    type Context = Context<Self>;
}
ignore_events!(Lines: EofReceived, PauseWriting, ResumeWriting, TimedOut);

impl Handler<ConnectionMade> for Lines {
    type Result = ();
    fn handle(&mut self, msg: ConnectionMade, _: &mut Context<Self>) {
        self.transport = Some(msg.transport);
    }
}

impl Handler<DataReceived> for Lines {
    type Result = ();
    fn handle(&mut self, msg: DataReceived, _: &mut Context<Self>) {
        let mut rest = msg.data;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            let line = rest.split_to(end + 1);
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            if line == "SWITCH" {
                let next = self.next.take().expect("one switch");
                let transport = self.transport.as_ref().unwrap();
                transport.do_send(SetProtocol::new(next).with_leftover(rest));
                return;
            }
            self.lines.lock().unwrap().push(line);
        }
        assert!(rest.is_empty(), "test sends whole lines before SWITCH");
    }
}

impl Handler<ConnectionLost> for Lines {
    type Result = ();
    fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

async fn switch_from_data_received_with_pipelined_bytes(kind: Kind) {
    let (probe, mut events) = ProbeOptions::default().probe();
    let next = ProtocolHandle::from(probe.start());
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (transport, _, mut peer) = pair(kind, StreamConfig::default(), || {
        Lines {
            transport: None,
            next: Some(next),
            lines: lines.clone(),
        }
        .start()
    })
    .await;
    // Everything in one write, so it arrives in one segment: the switch line and the next
    // protocol's bytes together.
    let frames: Vec<u8> = (0..200u32).flat_map(|i| i.to_be_bytes()).collect();
    let mut wire = b"hello\nworld\nSWITCH\n".to_vec();
    wire.extend_from_slice(&frames);
    send_all(&mut peer, &wire).await;
    let made = events.made().await;
    assert!(made.same_transport(&transport));
    assert_eq!(
        events.data(frames.len()).await,
        frames,
        "pipelined bytes misrouted"
    );
    assert_eq!(*lines.lock().unwrap(), ["hello", "world"]);
    // Later bytes keep going to the new protocol.
    send_all(&mut peer, b"after").await;
    assert_eq!(events.data(5).await, b"after");
}

/// Records its share of a `;`-separated stream, then hands the rest to its partner.
struct Relay {
    id: u8,
    partner: Option<Addr<Relay>>,
    transport: Option<TransportHandle>,
    transcript: Arc<Mutex<Vec<(u8, Bytes)>>>,
    made: Arc<Mutex<Vec<u8>>>,
    partial: Vec<u8>,
}

impl Actor for Relay {
    type Context = Context<Self>;
}
ignore_events!(Relay: EofReceived, PauseWriting, ResumeWriting, TimedOut);

#[derive(Message)]
#[rtype(result = "()")]
struct Partner(Addr<Relay>);

impl Handler<Partner> for Relay {
    type Result = ();
    fn handle(&mut self, msg: Partner, _: &mut Context<Self>) {
        self.partner = Some(msg.0);
    }
}

impl Handler<ConnectionMade> for Relay {
    type Result = ();
    fn handle(&mut self, msg: ConnectionMade, _: &mut Context<Self>) {
        self.made.lock().unwrap().push(self.id);
        self.transport = Some(msg.transport);
    }
}

impl Handler<DataReceived> for Relay {
    type Result = ();
    fn handle(&mut self, msg: DataReceived, _: &mut Context<Self>) {
        let mut data = msg.data;
        match data.iter().position(|b| *b == b';') {
            Some(end) => {
                self.partial.extend_from_slice(&data.split_to(end + 1));
                let record = Bytes::from(std::mem::take(&mut self.partial));
                self.transcript.lock().unwrap().push((self.id, record));
                let partner = self.partner.clone().expect("partner set");
                // The rest of the chunk belongs to the partner: the very next byte is theirs.
                self.transport
                    .as_ref()
                    .unwrap()
                    .do_send(SetProtocol::new(partner).with_leftover(data));
            }
            None => self.partial.extend_from_slice(&data),
        }
    }
}

impl Handler<ConnectionLost> for Relay {
    type Result = ();
    fn handle(&mut self, _: ConnectionLost, _: &mut Context<Self>) {}
}

async fn thousand_switches_keep_a_byte_exact_transcript(kind: Kind) {
    let transcript = Arc::new(Mutex::new(Vec::new()));
    let made = Arc::new(Mutex::new(Vec::new()));
    let relay = |id| Relay {
        id,
        partner: None,
        transport: None,
        transcript: transcript.clone(),
        made: made.clone(),
        partial: Vec::new(),
    };
    let a = relay(0).start();
    let b = relay(1).start();
    a.do_send(Partner(b.clone()));
    b.do_send(Partner(a.clone()));
    let (_transport, _, mut peer) = pair(kind, StreamConfig::default(), || a.clone()).await;

    let records: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| {
            let len = (i * 37 % 300) as usize;
            let mut record: Vec<u8> = (0..len)
                .map(|j| b'a' + ((i as usize + j) % 26) as u8)
                .collect();
            record.push(b';');
            record
        })
        .collect();
    let wire: Vec<u8> = records.concat();
    // Uneven writes, so switch points fall anywhere inside the chunks the transport reads.
    let mut offset = 0;
    let mut size = 3;
    while offset < wire.len() {
        let end = (offset + size).min(wire.len());
        peer.write_all(&wire[offset..end]).await.unwrap();
        offset = end;
        size = size * 5 % 9973 + 1;
    }
    for _ in 0..2000 {
        if transcript.lock().unwrap().len() == records.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let transcript = transcript.lock().unwrap().clone();
    assert_eq!(transcript.len(), records.len(), "records lost");
    for (i, ((id, record), expected)) in transcript.iter().zip(&records).enumerate() {
        assert_eq!(*id as usize, i % 2, "record {i} reached the wrong protocol");
        assert_eq!(&record[..], &expected[..], "record {i} corrupted");
    }
    let made = made.lock().unwrap().clone();
    assert_eq!(made.len(), 1001, "one ConnectionMade per attachment");
    assert!(made.iter().enumerate().all(|(i, id)| *id as usize == i % 2));
}

/// Writes `before` then switches to `next`; `next` writes `after` in its ConnectionMade.
struct Greeter {
    text: &'static str,
    next: Option<ProtocolHandle>,
}

impl Actor for Greeter {
    type Context = Context<Self>;
}
ignore_events!(Greeter: EofReceived, PauseWriting, ResumeWriting, TimedOut);

impl Handler<ConnectionMade> for Greeter {
    type Result = ();
    fn handle(&mut self, msg: ConnectionMade, _: &mut Context<Self>) {
        msg.transport.write(self.text);
        if let Some(next) = self.next.take() {
            msg.transport.do_send(SetProtocol::new(next));
        }
    }
}

impl Handler<DataReceived> for Greeter {
    type Result = ();
    fn handle(&mut self, _: DataReceived, _: &mut Context<Self>) {}
}

impl Handler<ConnectionLost> for Greeter {
    type Result = ();
    fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

async fn writes_before_the_switch_go_out_first(kind: Kind) {
    let mut chain = None;
    for text in ["3-third;", "2-second;"] {
        let next = chain.take();
        chain = Some(ProtocolHandle::from(Greeter { text, next }.start()));
    }
    let (transport, _, mut peer) = pair(kind, StreamConfig::default(), || {
        Greeter {
            text: "1-first;",
            next: chain,
        }
        .start()
    })
    .await;
    assert_eq!(peer.read_n(25).await, b"1-first;2-second;3-third;");
    transport.close();
}

async fn new_protocol_hears_pause_writing_at_once(kind: Kind) {
    let (first, mut first_events) = ProbeOptions::default().probe();
    let config =
        StreamConfig::default().write_buffer_limits(WriteBufferLimits::new(1024, 256).unwrap());
    let (transport, _, mut peer) = pair(kind, config, || first.start()).await;
    first_events.made().await;
    // The peer reads nothing, so a big write stays buffered past the high-water mark.
    peer.stop_reading();
    transport.write(vec![7u8; 8 * 1024 * 1024]);
    assert!(matches!(
        first_events.next().await,
        Some(Event::PauseWriting)
    ));
    let (second, mut second_events) = ProbeOptions::default().probe();
    let previous = transport
        .send(SetProtocol::new(second.start()))
        .await
        .unwrap();
    assert!(previous.is_alive());
    second_events.made().await;
    assert!(
        matches!(second_events.next().await, Some(Event::PauseWriting)),
        "the new protocol must learn writing is paused"
    );
    // When the peer drains, ResumeWriting goes to the new protocol only.
    let mut sink = vec![0; 1 << 20];
    let mut total = 0;
    while total < 8 * 1024 * 1024 {
        total += peer.read(&mut sink).await.unwrap();
    }
    assert!(matches!(
        second_events.next().await,
        Some(Event::ResumeWriting)
    ));
    first_events
        .assert_quiet(std::time::Duration::from_millis(100))
        .await;
}

async fn third_party_switch_and_get_protocol(kind: Kind) {
    let (first, mut first_events) = ProbeOptions::default().probe();
    let (transport, first_addr, mut peer) =
        pair(kind, StreamConfig::default(), || first.start()).await;
    first_events.made().await;
    let current = transport.send(GetProtocol).await.unwrap();
    assert_eq!(current.downcast::<Probe>(), Some(first_addr.clone()));
    send_all(&mut peer, b"to first").await;
    assert_eq!(first_events.data(8).await, b"to first");

    let (second, mut second_events) = ProbeOptions::default().probe();
    let second = second.start();
    let second_addr = second.addr().clone();
    let previous = transport.send(SetProtocol::new(second)).await.unwrap();
    assert_eq!(previous.downcast::<Probe>(), Some(first_addr));
    assert_eq!(
        transport
            .send(GetProtocol)
            .await
            .unwrap()
            .downcast::<Probe>(),
        Some(second_addr)
    );
    second_events.made().await;
    send_all(&mut peer, b"to second").await;
    assert_eq!(second_events.data(9).await, b"to second");
    first_events
        .assert_quiet(std::time::Duration::from_millis(100))
        .await;
}

async fn connection_lost_goes_to_the_protocol_attached_at_the_end(kind: Kind) {
    let (first, mut first_events) = ProbeOptions::default().probe();
    let (transport, _, peer) = pair(kind, StreamConfig::default(), || first.start()).await;
    first_events.made().await;
    let (second, mut second_events) = ProbeOptions::default().probe();
    transport.do_send(SetProtocol::new(second.start()));
    second_events.made().await;
    drop(peer);
    second_events.until_lost().await;
    // The first protocol hears nothing after the switch: not even ConnectionLost.
    first_events
        .assert_quiet(std::time::Duration::from_millis(100))
        .await;
}
