//! Flow control in both directions, over loopback TCP, in one process.
//!
//! A server's *producer* protocol streams a payload to a client's *slow consumer* protocol as
//! fast as flow control allows, and no faster:
//!
//! - the producer lowers its write-buffer watermarks with `SetWriteBufferLimits`, writes one
//!   chunk per turn while there is room, stops at `PauseWriting` and goes on at `ResumeWriting`;
//! - the consumer checks every byte and is slow on purpose in the two ways a protocol can be:
//!   it works through the bytes at `--rate` MiB/s, keeping each delivery's acknowledgement until
//!   the work on it is done, and every `--pause-every` bytes it pauses reading for `--pause-ms`
//!   (`PauseReading`, then `ResumeReading` from a timer).
//!
//! The payload is numbered blocks of 1 KiB, so a byte lost, repeated or out of place shows
//! wherever it happens.
//!
//! ```text
//! cargo run --example flow_control
//! cargo run --example flow_control -- --bytes 8388608 --chunk 4096 --high 65536 --rate 8
//! RUST_LOG=debug cargo run --example flow_control      # with the framework's logs on stderr
//! ```
//!
//! It prints a report of six lines to stdout once both connections are gone. The numbers on the
//! third, fourth and last lines vary from run to run:
//!
//! ```text
//! producer: sent 33554432 bytes in 2048 writes of at most 16384 bytes
//! producer: write-buffer limits low 8192, high 32768
//! producer: writing paused 17 times, resumed 17 times; the write buffer peaked at 48403 bytes
//! consumer: received 33554432 bytes in 135 deliveries of at most 262144 bytes, intact and in order
//! consumer: reading paused 8 times; 0 deliveries came while paused or holding an acknowledgement
//! consumer: the read buffer peaked at 262144 bytes (limit 262144)
//! ```
//!
//! It exits 0 when every byte arrived intact and both connections ended cleanly; otherwise it
//! still prints the report, says what went wrong on stderr and exits 1, as it does when the
//! transfer takes longer than `--timeout` seconds. Logs go to stderr (`RUST_LOG=debug`).

use std::{io, process::ExitCode, time::Duration};

use actix::prelude::*;
use bytes::{BufMut, Bytes, BytesMut};
use clap::Parser;
use switchboard::{WriteBufferLimits, prelude::*};
use tokio::sync::{mpsc, oneshot};

/// One kibibyte.
const KIB: usize = 1024;

/// One mebibyte.
const MIB: u64 = 1024 * 1024;

#[derive(Debug, Parser)]
#[command(about = "Flow control both ways over loopback TCP: a producer and a slow consumer")]
struct Args {
    /// How many bytes the producer sends.
    #[arg(long, default_value_t = 32 * MIB)]
    bytes: u64,
    /// The size of each write, in bytes.
    #[arg(long, default_value_t = 16 * KIB, value_parser = positive)]
    chunk: usize,
    /// The producer's high-water mark, in bytes (the transport's default is 65536).
    #[arg(long, default_value_t = 32 * KIB)]
    high: usize,
    /// The producer's low-water mark, in bytes (default: a quarter of --high, as the transport
    /// derives it).
    #[arg(long)]
    low: Option<usize>,
    /// How fast the consumer works through the bytes, in MiB per second (0: as fast as it can).
    #[arg(long, default_value_t = 32)]
    rate: u64,
    /// The consumer pauses reading each time this many more bytes have arrived (0: never).
    #[arg(long, default_value_t = 4 * MIB)]
    pause_every: u64,
    /// How long each of those pauses lasts, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pause_ms: u64,
    /// Give up, and exit 1, when the transfer takes longer than this many seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

/// A size of at least one byte.
fn positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(err) => Err(err.to_string()),
    }
}

/// The payload comes in blocks of this many bytes: an 8-byte big-endian block number, then
/// [`FILL`].
const BLOCK: u64 = 1024;

/// What follows a block's number: bytes that differ from their neighbours, so a shift shows.
const FILL: [u8; BLOCK as usize - 8] = {
    let mut fill = [0; BLOCK as usize - 8];
    let mut i = 0;
    while i < fill.len() {
        fill[i] = (i % 251) as u8;
        i += 1;
    }
    fill
};

/// `len` bytes of the payload from `offset` on. Every byte has one right place: a byte lost,
/// repeated or out of place shows within a block.
fn payload(offset: u64, len: usize) -> Bytes {
    let end = offset + len as u64;
    let first = offset / BLOCK;
    let mut blocks = BytesMut::with_capacity(len + 2 * BLOCK as usize);
    for number in first..end.div_ceil(BLOCK) {
        blocks.put_u64(number);
        blocks.put_slice(&FILL);
    }
    let skip = (offset - first * BLOCK) as usize;
    blocks.freeze().slice(skip..skip + len)
}

/// How slow the consumer is.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// Bytes per second it works through, or 0 for no limit.
    rate: u64,
    pause_every: u64,
    pause_for: Duration,
}

impl Pace {
    /// How long the work on `len` bytes takes.
    fn work(&self, len: usize) -> Duration {
        match self.rate {
            0 => Duration::ZERO,
            rate => Duration::from_secs_f64(len as f64 / rate as f64),
        }
    }
}

/// Whether the bytes from `before` to `after` crossed a multiple of `every` (never, for 0).
fn crossed(before: u64, after: u64, every: u64) -> bool {
    every != 0 && before / every != after / every
}

/// What the consumer saw, sent to `main` once its connection is gone.
#[derive(Debug, Default)]
struct Consumed {
    received: u64,
    deliveries: u64,
    largest: usize,
    /// The offset of the first byte that was not the payload's.
    first_mismatch: Option<u64>,
    pauses: u64,
    /// Deliveries that arrived while reading was paused or an acknowledgement was held.
    out_of_turn: u64,
    read_buffer_peak: usize,
    read_buffer_limit: usize,
    error: Option<io::Error>,
}

// ANCHOR: consumer
/// The client's protocol: reads the payload, checks every byte, and is slow on purpose.
struct SlowConsumer {
    pace: Pace,
    transport: Option<TransportHandle>,
    /// Reading is paused: from our `PauseReading` to our `ResumeReading`.
    reading_paused: bool,
    /// We keep a delivery's acknowledgement.
    holding: bool,
    seen: Consumed,
    report: Option<oneshot::Sender<Consumed>>,
}

impl Handler<DataReceived> for SlowConsumer {
    type Result = ();

    fn handle(&mut self, msg: DataReceived, ctx: &mut Context<Self>) {
        let DataReceived { data, ack, .. } = msg;
        let before = self.seen.received;
        self.check(&data);

        if crossed(before, self.seen.received, self.pace.pause_every) {
            self.pause_reading(ctx);
        }
        let work = self.pace.work(data.len());
        if !work.is_zero() {
            // Slow work on this chunk: keep its acknowledgement until the work is done. The
            // transport delivers nothing meanwhile and reads ahead up to its read-buffer limit.
            self.holding = true;
            ctx.run_later(work, move |consumer, _| {
                consumer.holding = false;
                ack.release();
            });
        }
        // Otherwise `ack` is dropped here, after the `PauseReading` above if there was one.
    }
}

impl SlowConsumer {
    /// Stops deliveries for a while: `PauseReading` now, `ResumeReading` from a timer.
    fn pause_reading(&mut self, ctx: &mut Context<Self>) {
        let Some(transport) = &self.transport else {
            return;
        };
        transport.pause_reading();
        self.seen.pauses += 1;
        self.reading_paused = true;
        ctx.run_later(self.pace.pause_for, |consumer, _| {
            consumer.reading_paused = false;
            if let Some(transport) = &consumer.transport {
                transport.resume_reading();
            }
        });
    }
}
// ANCHOR_END: consumer

impl SlowConsumer {
    fn new(pace: Pace, report: oneshot::Sender<Consumed>) -> Self {
        SlowConsumer {
            pace,
            transport: None,
            reading_paused: false,
            holding: false,
            seen: Consumed::default(),
            report: Some(report),
        }
    }

    // ANCHOR: check
    /// Counts a delivery and checks its bytes against the payload, wherever the chunk starts.
    fn check(&mut self, data: &[u8]) {
        let seen = &mut self.seen;
        if self.reading_paused || self.holding {
            seen.out_of_turn += 1;
        }
        seen.deliveries += 1;
        seen.largest = seen.largest.max(data.len());
        if seen.first_mismatch.is_none() {
            let expected = payload(seen.received, data.len());
            if data != expected {
                let at = data.iter().zip(&expected).take_while(|(a, b)| a == b);
                seen.first_mismatch = Some(seen.received + at.count() as u64);
            }
        }
        seen.received += data.len() as u64;
    }
    // ANCHOR_END: check
}

impl Actor for SlowConsumer {
    type Context = Context<Self>;
}

impl Handler<ConnectionMade> for SlowConsumer {
    type Result = ();

    fn handle(&mut self, msg: ConnectionMade, _: &mut Context<Self>) {
        self.transport = Some(msg.transport);
    }
}

// ANCHOR: consumer_eof
/// The producer is done and closed its side. Before the connection closes, read the transport's
/// counters; dropping the EOF afterwards closes it, as not opting in would have.
impl Handler<EofReceived> for SlowConsumer {
    type Result = ();

    fn handle(&mut self, eof: EofReceived, ctx: &mut Context<Self>) {
        let Some(transport) = &self.transport else {
            return;
        };
        ctx.spawn(
            transport
                .send(GetStats)
                .into_actor(self)
                .map(move |stats, consumer, _| {
                    if let Ok(stats) = stats {
                        consumer.seen.read_buffer_peak = stats.read_buffer_peak;
                        consumer.seen.read_buffer_limit = stats.read_buffer_limit;
                    }
                    eof.close();
                }),
        );
    }
}
// ANCHOR_END: consumer_eof

impl Handler<PauseWriting> for SlowConsumer {
    type Result = ();

    /// The consumer writes nothing, so its write buffer never fills.
    fn handle(&mut self, _: PauseWriting, _: &mut Context<Self>) {}
}

impl Handler<ResumeWriting> for SlowConsumer {
    type Result = ();

    fn handle(&mut self, _: ResumeWriting, _: &mut Context<Self>) {}
}

impl Handler<TimedOut> for SlowConsumer {
    type Result = ();

    /// The transfer has no timeouts set; had it one, the transport would end it.
    fn handle(&mut self, _: TimedOut, _: &mut Context<Self>) {}
}

impl Handler<ConnectionLost> for SlowConsumer {
    type Result = ();

    fn handle(&mut self, ConnectionLost(err): ConnectionLost, ctx: &mut Context<Self>) {
        self.seen.error = err;
        if let Some(report) = self.report.take() {
            let _ = report.send(std::mem::take(&mut self.seen));
        }
        ctx.stop();
    }
}

/// What the producer did, sent to `main` once its connection is gone.
#[derive(Debug, Default)]
struct Produced {
    sent: u64,
    writes: u64,
    /// `(low, high)`, as `GetWriteBufferLimits` answered once everything was written.
    limits: (usize, usize),
    pauses: u64,
    resumes: u64,
    write_buffer_peak: usize,
    error: Option<io::Error>,
}

/// What the producer sends, and the limits it asks for.
#[derive(Debug, Clone, Copy)]
struct Plan {
    total: u64,
    chunk: usize,
    high: usize,
    low: Option<usize>,
}

// ANCHOR: producer
/// The server's protocol: sends the payload one chunk per turn while the transport's write
/// buffer has room, stops at `PauseWriting`, goes on at `ResumeWriting`.
struct Producer {
    plan: Plan,
    transport: Option<TransportHandle>,
    /// From `PauseWriting` to `ResumeWriting`.
    paused: bool,
    /// A turn is booked for the next chunk, so a `ResumeWriting` does not book a second one.
    turn_booked: bool,
    /// Everything is written; the counters are asked for, then `Close`.
    finishing: bool,
    done: Produced,
    report: mpsc::UnboundedSender<Produced>,
}

impl Handler<ConnectionMade> for Producer {
    type Result = ();

    fn handle(&mut self, msg: ConnectionMade, ctx: &mut Context<Self>) {
        // Commands are handled in the order sent, so the limits apply from the first write on.
        // `low: None` lets the transport derive it: a quarter of `high`.
        msg.transport.do_send(SetWriteBufferLimits {
            high: Some(self.plan.high),
            low: self.plan.low,
        });
        self.transport = Some(msg.transport);
        self.write_next(ctx);
    }
}

impl Handler<PauseWriting> for Producer {
    type Result = ();

    /// The write buffer went over the high-water mark: the peer reads slower than we write.
    fn handle(&mut self, _: PauseWriting, _: &mut Context<Self>) {
        self.paused = true;
        self.done.pauses += 1;
    }
}

impl Handler<ResumeWriting> for Producer {
    type Result = ();

    /// The write buffer drained to the low-water mark: there is room again.
    fn handle(&mut self, _: ResumeWriting, ctx: &mut Context<Self>) {
        self.paused = false;
        self.done.resumes += 1;
        self.write_next(ctx);
    }
}

impl Producer {
    /// Writes the next chunk and books a turn for the one after; or, once everything is
    /// written, finishes. Does nothing while paused.
    fn write_next(&mut self, ctx: &mut Context<Self>) {
        if self.paused || self.turn_booked || self.finishing {
            return;
        }
        let Some(transport) = self.transport.clone() else {
            return;
        };
        let left = self.plan.total - self.done.sent;
        if left == 0 {
            self.finish(transport, ctx);
            return;
        }
        let len = left.min(self.plan.chunk as u64) as usize;
        transport.write(payload(self.done.sent, len));
        self.done.sent += len as u64;
        self.done.writes += 1;

        // Return to the scheduler before the next chunk: the transport runs on this thread,
        // and only in its own turn does it write to the socket and send `PauseWriting`.
        self.turn_booked = true;
        ctx.spawn(
            tokio::task::yield_now()
                .into_actor(self)
                .map(|(), producer, ctx| {
                    producer.turn_booked = false;
                    producer.write_next(ctx);
                }),
        );
    }
}
// ANCHOR_END: producer

// ANCHOR: producer_finish
impl Producer {
    /// Everything is written: read the transport's counters, then `Close`, which flushes the
    /// write buffer before it shuts the connection down.
    fn finish(&mut self, transport: TransportHandle, ctx: &mut Context<Self>) {
        self.finishing = true;
        let stats = transport.send(GetStats);
        let limits = transport.send(GetWriteBufferLimits);
        ctx.spawn(
            async move { (stats.await, limits.await) }
                .into_actor(self)
                .map(move |(stats, limits), producer, _| {
                    if let Ok(stats) = stats {
                        producer.done.write_buffer_peak = stats.write_buffer_peak;
                    }
                    if let Ok(limits) = limits {
                        producer.done.limits = limits;
                    }
                    transport.close();
                }),
        );
    }
}
// ANCHOR_END: producer_finish

impl Producer {
    fn new(plan: Plan, report: mpsc::UnboundedSender<Produced>) -> Self {
        Producer {
            plan,
            transport: None,
            paused: false,
            turn_booked: false,
            finishing: false,
            done: Produced::default(),
            report,
        }
    }
}

impl Actor for Producer {
    type Context = Context<Self>;
}

impl Handler<DataReceived> for Producer {
    type Result = ();

    /// The consumer sends nothing; a producer has nothing to read.
    fn handle(&mut self, _: DataReceived, _: &mut Context<Self>) {}
}

impl Handler<EofReceived> for Producer {
    type Result = ();

    /// The consumer closes only once it has everything; dropping the decision closes too.
    fn handle(&mut self, _: EofReceived, _: &mut Context<Self>) {}
}

impl Handler<TimedOut> for Producer {
    type Result = ();

    /// The transfer has no timeouts set; had it one, the transport would end it.
    fn handle(&mut self, _: TimedOut, _: &mut Context<Self>) {}
}

impl Handler<ConnectionLost> for Producer {
    type Result = ();

    fn handle(&mut self, ConnectionLost(err): ConnectionLost, ctx: &mut Context<Self>) {
        self.done.error = err;
        let _ = self.report.send(std::mem::take(&mut self.done));
        ctx.stop();
    }
}

// ANCHOR: handles
/// A producer, started: the transport delivers it every event.
fn producer(plan: Plan, report: mpsc::UnboundedSender<Produced>) -> Addr<Producer> {
    Producer::new(plan, report).start()
}

/// A consumer, started.
fn slow_consumer(pace: Pace, report: oneshot::Sender<Consumed>) -> Addr<SlowConsumer> {
    SlowConsumer::new(pace, report).start()
}
// ANCHOR_END: handles

#[actix::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    // The transport would refuse these limits with the same error; say so before connecting.
    if let Err(err) = WriteBufferLimits::from_options(Some(args.high), args.low) {
        eprintln!("flow_control: --high and --low: {err}");
        return ExitCode::from(2);
    }
    let plan = Plan {
        total: args.bytes,
        chunk: args.chunk,
        high: args.high,
        low: args.low,
    };
    let pace = Pace {
        rate: args.rate.saturating_mul(MIB),
        pause_every: args.pause_every,
        pause_for: Duration::from_millis(args.pause_ms),
    };
    let timeout = Duration::from_secs(args.timeout);
    let (produced, consumed) = match tokio::time::timeout(timeout, transfer(plan, pace)).await {
        Ok(Ok(reports)) => reports,
        Ok(Err(err)) => {
            eprintln!("flow_control: {err}");
            return ExitCode::FAILURE;
        }
        Err(_) => {
            eprintln!("flow_control: the transfer did not finish within {timeout:?}");
            return ExitCode::FAILURE;
        }
    };
    print_report(plan, &produced, &consumed);
    match verdict(plan, &produced, &consumed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(problem) => {
            eprintln!("flow_control: {problem}");
            ExitCode::FAILURE
        }
    }
}

// ANCHOR: transfer
/// Serves one producer on a loopback port, connects a slow consumer to it, and waits until both
/// connections are gone.
async fn transfer(plan: Plan, pace: Pace) -> io::Result<(Produced, Consumed)> {
    let (produced_tx, mut produced_rx) = mpsc::unbounded_channel();
    // One worker thread: the producer and its transport run there, the consumer on this one.
    let options = ServerOptions::default().workers(1);
    let server = tcp::serve_with("127.0.0.1:0", options, move || {
        producer(plan, produced_tx.clone())
    })
    .await?;
    let addr = server.addresses().first().and_then(SocketAddress::as_inet);
    let addr = addr.ok_or_else(|| io::Error::other("the server has no IP address"))?;

    let (consumed_tx, consumed_rx) = oneshot::channel();
    tcp::connect(addr, move || slow_consumer(pace, consumed_tx)).await?;

    let gone = |who| io::Error::other(format!("the {who} stopped without reporting"));
    let produced = produced_rx.recv().await.ok_or_else(|| gone("producer"))?;
    let consumed = consumed_rx.await.map_err(|_| gone("consumer"))?;
    server.close().await;
    server.wait_closed().await;
    Ok((produced, consumed))
}
// ANCHOR_END: transfer

/// Prints the six lines of the report.
fn print_report(plan: Plan, produced: &Produced, consumed: &Consumed) {
    let (low, high) = produced.limits;
    println!(
        "producer: sent {} bytes in {} writes of at most {} bytes",
        produced.sent, produced.writes, plan.chunk
    );
    println!("producer: write-buffer limits low {low}, high {high}");
    println!(
        "producer: writing paused {} times, resumed {} times; the write buffer peaked at {} bytes",
        produced.pauses, produced.resumes, produced.write_buffer_peak
    );
    let integrity = match consumed.first_mismatch {
        None if consumed.received == produced.sent => "intact and in order".to_owned(),
        None => format!("a prefix of the {} sent", produced.sent),
        Some(offset) => format!("wrong from byte {offset} on"),
    };
    println!(
        "consumer: received {} bytes in {} deliveries of at most {} bytes, {integrity}",
        consumed.received, consumed.deliveries, consumed.largest
    );
    println!(
        "consumer: reading paused {} times; {} deliveries came while paused or holding an acknowledgement",
        consumed.pauses, consumed.out_of_turn
    );
    println!(
        "consumer: the read buffer peaked at {} bytes (limit {})",
        consumed.read_buffer_peak, consumed.read_buffer_limit
    );
}

/// Whether the transfer did what it should: every byte, intact, and clean endings.
fn verdict(plan: Plan, produced: &Produced, consumed: &Consumed) -> Result<(), String> {
    if let Some(err) = &produced.error {
        return Err(format!("the producer's connection failed: {err}"));
    }
    if let Some(err) = &consumed.error {
        return Err(format!("the consumer's connection failed: {err}"));
    }
    if let Some(offset) = consumed.first_mismatch {
        return Err(format!("byte {offset} is not the payload's"));
    }
    if produced.sent != plan.total || consumed.received != plan.total {
        return Err(format!(
            "{} bytes were to be sent; the producer sent {}, the consumer received {}",
            plan.total, produced.sent, consumed.received
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The two protocols on a mock transport: no socket, no server.

    use switchboard::testing::{Ending, MockTransport, Sent};

    use super::*;

    const PLAN: Plan = Plan {
        total: 50 * 1000,
        chunk: 1000,
        high: 4000,
        low: None,
    };

    /// The bytes the producer wrote so far, from the mock's counters.
    /// What the producer wrote: the writes the transport accepted (a stalled peer leaves them
    /// in its write buffer).
    fn written(mock: &MockTransport) -> u64 {
        mock.writes().iter().map(|write| write.len() as u64).sum()
    }

    // ANCHOR: test_producer
    // The producer sets its limits first, stops writing at PauseWriting, goes on at
    // ResumeWriting, and closes once everything is written.
    #[actix::test]
    async fn test_producer_stops_at_pause_writing() {
        let (report, mut reports) = mpsc::unbounded_channel();
        // `start`, not `connect`: the producer is never idle until it has written everything.
        let mock = MockTransport::builder().start(producer(PLAN, report));
        mock.pause_writing().await;
        let sent = written(&mock);
        assert!(0 < sent && sent < PLAN.total, "paused part-way: {sent}");
        assert!(matches!(
            mock.take_commands().first(),
            Some(Sent::SetWriteBufferLimits {
                high: Some(4000),
                low: None
            })
        ));

        tokio::time::sleep(Duration::from_millis(20)).await;
        mock.settle().await;
        assert_eq!(written(&mock), sent, "not one byte while paused");

        mock.resume_writing().await;
        assert_eq!(written(&mock), PLAN.total);
        assert_eq!(mock.written(), payload(0, PLAN.total as usize));
        assert_eq!(mock.ending(), Some(Ending::Closed));
        let done = reports.recv().await.expect("the producer's report");
        assert_eq!((done.pauses, done.resumes), (1, 1));
        assert_eq!(done.writes, 50);
    }
    // ANCHOR_END: test_producer

    /// Every write is one chunk of the payload, the last one shorter.
    #[actix::test]
    async fn the_producer_writes_the_payload_in_chunks() {
        let (report, mut reports) = mpsc::unbounded_channel();
        let plan = Plan {
            total: 2500,
            ..PLAN
        };
        let mock = MockTransport::builder().start(producer(plan, report));
        let done = reports.recv().await.expect("the producer's report");
        let sizes: Vec<usize> = mock.writes().iter().map(Bytes::len).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        assert_eq!(mock.written(), payload(0, 2500));
        assert_eq!((done.sent, done.writes, done.pauses), (2500, 3, 0));
        assert!(done.error.is_none());
    }

    /// A second `ResumeWriting` (which no transport sends) or one while nothing is paused does
    /// not start a second writer: each byte is still written once.
    #[actix::test]
    async fn resume_writing_never_doubles_the_writer() {
        let (report, mut reports) = mpsc::unbounded_channel();
        let mock = MockTransport::builder().start(producer(PLAN, report));
        mock.resume_writing().await;
        mock.pause_writing().await;
        mock.resume_writing().await;
        mock.resume_writing().await;
        reports.recv().await.expect("the producer's report");
        assert_eq!(mock.written(), payload(0, PLAN.total as usize));
    }

    /// Nothing to send: the producer closes at once.
    #[actix::test]
    async fn an_empty_payload_closes_at_once() {
        let (report, mut reports) = mpsc::unbounded_channel();
        let plan = Plan { total: 0, ..PLAN };
        let mock = MockTransport::builder().start(producer(plan, report));
        let done = reports.recv().await.expect("the producer's report");
        assert_eq!((done.sent, done.writes), (0, 0));
        assert_eq!(mock.ending(), Some(Ending::Closed));
    }

    /// No work to wait for; a 30 ms pause every 1000 bytes.
    const PACE: Pace = Pace {
        rate: 0,
        pause_every: 1000,
        pause_for: Duration::from_millis(30),
    };

    // ANCHOR: test_consumer
    // Crossing a multiple of `pause_every` pauses reading from inside the handler, so nothing
    // more is delivered; the timer resumes it.
    #[actix::test]
    async fn test_consumer_pauses_reading() {
        let (report, reported) = oneshot::channel();
        let mock = MockTransport::connect(slow_consumer(PACE, report)).await;
        mock.feed(payload(0, 600)).await;
        assert!(mock.is_reading());
        mock.feed(payload(600, 600)).await;
        assert!(!mock.is_reading(), "paused at 1000 bytes");
        mock.push(payload(1200, 300));
        mock.settle().await;
        assert_eq!(mock.stats().deliveries, 2, "nothing while paused");

        tokio::time::sleep(PACE.pause_for * 2).await;
        mock.settle().await;
        assert!(mock.is_reading());
        assert_eq!(mock.stats().deliveries, 3);
        mock.lose(None).await;
        let seen = reported.await.expect("the consumer's report");
        assert_eq!((seen.received, seen.pauses, seen.out_of_turn), (1500, 1, 0));
        assert_eq!(seen.first_mismatch, None);
    }
    // ANCHOR_END: test_consumer

    // ANCHOR: test_consumer_work
    // The consumer keeps each acknowledgement for as long as the work on its bytes takes:
    // 1200 bytes at 40,000 bytes per second, 30 ms. The next delivery waits for it.
    #[actix::test]
    async fn test_consumer_holds_the_acknowledgement() {
        let pace = Pace {
            rate: 40_000,
            pause_every: 0,
            ..PACE
        };
        let (report, reported) = oneshot::channel();
        let mock = MockTransport::connect(slow_consumer(pace, report)).await;
        mock.push(payload(0, 1200));
        mock.push(payload(1200, 40));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            mock.stats().deliveries,
            1,
            "the second waits for the first's ack"
        );
        assert!(mock.is_reading(), "keeping an ack is not PauseReading");

        mock.settle().await;
        assert_eq!(mock.stats().deliveries, 2);
        mock.lose(None).await;
        let seen = reported.await.expect("the consumer's report");
        assert_eq!((seen.received, seen.out_of_turn), (1240, 0));
    }
    // ANCHOR_END: test_consumer_work

    /// A byte out of place is found, wherever the chunks are cut.
    #[actix::test]
    async fn the_consumer_finds_a_wrong_byte() {
        let (report, reported) = oneshot::channel();
        let mock = MockTransport::connect(slow_consumer(
            Pace {
                pause_every: 0,
                ..PACE
            },
            report,
        ))
        .await;
        mock.feed(payload(0, 100)).await;
        mock.feed(payload(101, 100)).await;
        mock.lose(None).await;
        let seen = reported.await.expect("the consumer's report");
        assert_eq!(seen.first_mismatch.map(|offset| offset >= 100), Some(true));
        assert_eq!(seen.received, 200);
    }
}
