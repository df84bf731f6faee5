//! The errors of the core's own decisions: refused writes, invalid write-buffer limits, and
//! the timeouts that end a connection.

use std::{io, time::Duration};

use derive_more::{Display, Error};

/// Write-buffer limits where the low-water mark is above the high-water mark.
///
/// Returned by [`WriteBufferLimits::new`](crate::WriteBufferLimits::new) and by a transport
/// receiving `SetWriteBufferLimits`; the transport keeps its
/// previous limits.
#[derive(Debug, Display, Error, Clone, Copy, PartialEq, Eq)]
#[display("invalid write-buffer limits: high ({high}) must be >= low ({low})")]
pub struct InvalidWriteBufferLimits {
    /// The high-water mark that was asked for.
    pub high: usize,
    /// The low-water mark that was asked for.
    pub low: usize,
}

impl From<InvalidWriteBufferLimits> for io::Error {
    fn from(err: InvalidWriteBufferLimits) -> Self {
        io::Error::new(io::ErrorKind::InvalidInput, err)
    }
}

/// Why an acknowledged write did not reach the kernel.
///
/// Acknowledged writes resolve to `io::Result<()>`; when the cause is the transport's own
/// state rather than a socket error, the `io::Error` carries one of these as its source, so a
/// caller can branch on it with [`WriteError::of`].
#[derive(Debug, Display, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteError {
    /// The write arrived after `Close` (or after the peer's EOF led to a close).
    #[display("transport is closing")]
    Closing,
    /// The write arrived after `WriteEof` shut the write side down.
    #[display("write side is shut down")]
    AfterEof,
    /// `Abort` discarded the write buffer, or the protocol stopped and its death aborted the
    /// connection.
    #[display("connection was aborted")]
    Aborted,
    /// The socket accepted no byte of the write buffer for this long, so the connection was
    /// aborted.
    #[display("write made no progress for {_0:?}")]
    Stalled(#[error(not(source))] Duration),
    /// The transport actor had stopped before the write could be handled.
    #[display("transport has stopped")]
    Stopped,
    /// The transport only reads (the read end of a pipe): it has nothing to write to.
    #[display("transport is read-only")]
    ReadOnly,
    /// The write buffer would have held more than its maximum (the number of bytes here): the
    /// peer does not read as fast as the protocol writes, and the protocol went on writing past
    /// `PauseWriting`. The connection was aborted; every pending write failed with this.
    #[display(
        "write buffer passed its maximum of {_0} bytes (the peer reads too slowly): connection aborted"
    )]
    BufferFull(#[error(not(source))] usize),
}

impl WriteError {
    /// The `WriteError` behind an `io::Error`, if the error came from a transport's state.
    pub fn of(err: &io::Error) -> Option<WriteError> {
        err.get_ref()?.downcast_ref::<WriteError>().copied()
    }

    /// The `io::ErrorKind` this error maps to.
    pub fn kind(self) -> io::ErrorKind {
        match self {
            WriteError::Closing | WriteError::AfterEof | WriteError::Stopped => {
                io::ErrorKind::NotConnected
            }
            WriteError::Aborted => io::ErrorKind::ConnectionAborted,
            WriteError::Stalled(_) => io::ErrorKind::TimedOut,
            WriteError::ReadOnly => io::ErrorKind::Unsupported,
            WriteError::BufferFull(_) => io::ErrorKind::QuotaExceeded,
        }
    }
}

impl From<WriteError> for io::Error {
    fn from(err: WriteError) -> Self {
        io::Error::new(err.kind(), err)
    }
}

/// Why a connection's timer ended it (or, for a protocol that asked to be told first, why it is
/// told): the error of its `ConnectionLost`, of kind `TimedOut`, carries one of these as its
/// source ([`Timeout::of`]).
#[derive(Debug, Display, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Timeout {
    /// Nothing was received within this long of the connection's start.
    #[display("no byte received within {_0:?} of the connection's start")]
    FirstByte(#[error(not(source))] Duration),
    /// Nothing was read or written for this long.
    #[display("no byte read or written for {_0:?}")]
    Idle(#[error(not(source))] Duration),
}

impl Timeout {
    /// The `Timeout` behind an `io::Error`, if a timeout ended the connection.
    pub fn of(err: &io::Error) -> Option<Timeout> {
        err.get_ref()?.downcast_ref::<Timeout>().copied()
    }

    /// The timeout that ran out.
    pub fn duration(self) -> Duration {
        match self {
            Timeout::FirstByte(timeout) | Timeout::Idle(timeout) => timeout,
        }
    }
}

impl From<Timeout> for io::Error {
    fn from(err: Timeout) -> Self {
        io::Error::new(io::ErrorKind::TimedOut, err)
    }
}

/// Copies an `io::Error` (which is not `Clone`): same kind and message, the same [`WriteError`]
/// or [`Timeout`] source when there is one, and the same OS error code for an error from a system call.
pub fn copy_error(err: &io::Error) -> io::Error {
    if let Some(write_err) = WriteError::of(err) {
        return write_err.into();
    }
    if let Some(timed_out) = Timeout::of(err) {
        return timed_out.into();
    }
    if let Some(code) = err.raw_os_error() {
        return io::Error::from_raw_os_error(code);
    }
    io::Error::new(err.kind(), err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_limits_say_what_is_wrong() {
        let err = InvalidWriteBufferLimits { high: 10, low: 20 };
        assert_eq!(
            err.to_string(),
            "invalid write-buffer limits: high (10) must be >= low (20)"
        );
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::InvalidInput);
    }
}
