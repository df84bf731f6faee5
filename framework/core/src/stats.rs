//! Counters a transport exposes, so tests and operators can check bounds without timing.

/// A snapshot of a transport's counters, the reply to `GetStats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TransportStats {
    /// Bytes read from the peer.
    pub bytes_received: u64,
    /// Bytes the kernel accepted for the peer.
    pub bytes_sent: u64,
    /// `DataReceived` messages delivered.
    pub deliveries: u64,
    /// Bytes read and waiting for delivery now.
    pub read_buffer_size: usize,
    /// Bytes delivered and not yet acknowledged now.
    pub read_in_flight: usize,
    /// The most bytes ever read and not yet acknowledged (waiting plus in flight) at once;
    /// never above `read_buffer_limit`, except by leftover bytes handed over by `SetProtocol`.
    pub read_buffer_peak: usize,
    /// The limit on bytes read and not yet acknowledged, past which the transport stops
    /// reading the socket.
    pub read_buffer_limit: usize,
    /// Bytes waiting to be written now.
    pub write_buffer_size: usize,
    /// The most bytes ever waiting to be written at once.
    pub write_buffer_peak: usize,
}
