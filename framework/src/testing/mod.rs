//! Test utilities (feature `test-util`): unit-test a protocol with no socket, in milliseconds
//! and deterministically, as Twisted's `StringTransport` and Akka's `TestProbe` allow.
//!
//! * [`MockTransport`]: a transport actor with no socket. Attach any protocol to it; feed it
//!   `DataReceived` in the chunks you choose ([`Chunking`], down to one byte at a time and at
//!   every split point), EOF, write-flow edges and a lost connection; read back every byte it
//!   wrote and every command it sent ([`Sent`]), `SetProtocol` and its leftover included; script
//!   its extra information.
//! * [`MockDatagramTransport`]: the same for datagram protocols: a datagram endpoint with no
//!   socket. Feed it datagrams from their senders and socket errors, stall its socket, read back
//!   every datagram that left with its destination, and every command ([`DatagramSent`]).
//! * [`MockSubprocessTransport`]: the same for subprocess protocols: a scripted child with three
//!   scripted pipes. Make the child write to stdout and stderr, close its pipes and exit; read
//!   back what the protocol wrote to its stdin, the signals it sent, every command
//!   ([`SubprocessSent`]).
//! * [`Probe`]: a protocol that records every event it receives, to attach to a real transport
//!   (or to a `SetProtocol` target) and await and assert on its events ([`ProbeEvents`]).
//! * [`run`] and [`within`]: a test body inside an actix `System`, with a deadline, so a hang
//!   fails instead of stalling the suite.
//!
//! `switchboard-transports` adds, under the same feature, loopback servers, socket paths in a
//! temporary directory and TLS certificates; the `switchboard` facade puts both in one
//! `switchboard::testing`.
//!
//! Enable it for tests only:
//!
//! ```toml
//! [dev-dependencies]
//! switchboard = { version = "0.1", features = ["test-util"] }
//! ```

use std::{future::Future, time::Duration};

use bytes::Bytes;

mod datagram;
mod mock;
mod probe;
mod scripted;
mod subprocess;

pub use datagram::{DatagramSent, MockDatagramBuilder, MockDatagramTransport, SendRefusal};
pub use mock::{Ending, MockBuilder, MockTransport, Sent};
pub use probe::{
    Event, PendingProbe, Probe, ProbeBuilder, ProbeEvents, ReleaseAcks, StartedProbe, StopProbe,
};
pub use subprocess::{MockSubprocessBuilder, MockSubprocessTransport, SubprocessSent};

/// How long a single expected event or state may take before a wait fails the test: long enough
/// for a loaded CI machine running sanitizers, short enough that a hang reads as a failure.
pub const DEFAULT_EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a whole test body run by [`run`] may take.
pub const DEFAULT_TEST_DEADLINE: Duration = Duration::from_secs(120);

/// Runs `body` inside a new actix `System` and returns its output; fails the test if it takes
/// longer than [`DEFAULT_TEST_DEADLINE`]. For tests written as plain `#[test] fn` (and doc
/// tests); inside `#[actix::test]` use [`within`].
///
/// ```
/// let answer = switchboard_framework::testing::run(async { 6 * 7 });
/// assert_eq!(answer, 42);
/// ```
pub fn run<F: Future>(body: F) -> F::Output {
    run_within(DEFAULT_TEST_DEADLINE, body)
}

/// [`run`] with another deadline.
pub fn run_within<F: Future>(deadline: Duration, body: F) -> F::Output {
    actix_rt::System::new().block_on(within(deadline, body))
}

/// Awaits `body`, failing the test if it takes longer than `deadline`.
pub async fn within<F: Future>(deadline: Duration, body: F) -> F::Output {
    match tokio::time::timeout(deadline, body).await {
        Ok(output) => output,
        Err(_) => panic!("test did not finish within {deadline:?}"),
    }
}

/// How [`MockTransport::feed_chunked`] cuts bytes into `DataReceived` deliveries.
///
/// A parser must give the same result however the stream is cut: a socket delivers whatever
/// the kernel had, so one message can arrive split anywhere and several can arrive in one read.
/// [`Chunking::every`] lists the cuts that test that exhaustively for a short input.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Chunking {
    /// One delivery with everything.
    Whole,
    /// One delivery per byte.
    Bytewise,
    /// Two deliveries, cut before byte `n` (one delivery if `n` is 0 or past the end).
    SplitAt(usize),
    /// Deliveries of these sizes in turn, repeated until the bytes run out (sizes of 0 are
    /// skipped).
    Sizes(Vec<usize>),
}

impl Chunking {
    /// `data` cut into deliveries; never an empty piece.
    pub fn split(&self, data: &Bytes) -> Vec<Bytes> {
        let sizes: Vec<usize> = match self {
            Chunking::Whole => vec![data.len()],
            Chunking::Bytewise => vec![1],
            Chunking::SplitAt(n) => vec![*n, data.len()],
            Chunking::Sizes(sizes) => sizes.clone(),
        };
        let mut pieces = Vec::new();
        if sizes.iter().all(|&size| size == 0) {
            if !data.is_empty() {
                pieces.push(data.clone());
            }
            return pieces;
        }
        let mut rest = data.clone();
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            if size > 0 {
                pieces.push(rest.split_to(size.min(rest.len())));
            }
        }
        pieces
    }

    /// Every way worth trying to cut `len` bytes: whole, one byte at a time, and in two at each
    /// of the `len - 1` inner split points.
    pub fn every(len: usize) -> impl Iterator<Item = Chunking> {
        [Chunking::Whole, Chunking::Bytewise]
            .into_iter()
            .chain((1..len).map(Chunking::SplitAt))
    }
}

#[cfg(test)]
mod tests;
