//! Errors of the framework's own operations.

use std::io;

use derive_more::{Display, Error};

/// A signal for a process that has already exited: its exit status was collected (or its
/// transport has stopped), so its pid may belong to another process by now and no signal is
/// sent. asyncio raises `ProcessLookupError` in the same case.
///
/// Replies to [`SendSignal`](crate::SendSignal), [`Terminate`](crate::Terminate) and
/// [`Kill`](crate::Kill) carry it inside an `io::Error` of kind `NotFound`; find it with
/// [`ProcessGone::of`].
#[derive(Debug, Display, Error, Clone, Copy, PartialEq, Eq)]
#[display("the process has already exited")]
pub struct ProcessGone;

impl ProcessGone {
    /// Whether `err` carries a `ProcessGone`.
    pub fn of(err: &io::Error) -> bool {
        err.get_ref().is_some_and(|inner| inner.is::<ProcessGone>())
    }
}

impl From<ProcessGone> for io::Error {
    fn from(err: ProcessGone) -> Self {
        io::Error::new(io::ErrorKind::NotFound, err)
    }
}

/// A protocol factory panicked instead of making a protocol.
///
/// Whatever the factory was for is closed and nothing else is affected: a server closes that one
/// connection (the peer sees it end), logs the failure at error level with the peer's address,
/// and goes on serving; `connect`, `bind` and `subprocess::spawn` return this inside an
/// `io::Error` of kind `Other`, with the socket closed or the child killed. The panic's own
/// message is kept; find the error with [`FactoryPanicked::of`].
#[derive(Debug, Display, Error, Clone, PartialEq, Eq)]
#[display("the protocol factory panicked: {message}")]
pub struct FactoryPanicked {
    #[error(not(source))]
    message: String,
}

impl FactoryPanicked {
    /// The error for a panic whose payload is `payload` (what `std::panic::catch_unwind`
    /// returns): its message when it is a string, a placeholder otherwise.
    pub fn from_payload(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = if let Some(text) = payload.downcast_ref::<&str>() {
            (*text).to_owned()
        } else if let Some(text) = payload.downcast_ref::<String>() {
            text.clone()
        } else {
            "a panic without a message".to_owned()
        };
        FactoryPanicked { message }
    }

    /// The panic's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `FactoryPanicked` behind an `io::Error`, if there is one.
    pub fn of(err: &io::Error) -> Option<&FactoryPanicked> {
        err.get_ref()?.downcast_ref::<FactoryPanicked>()
    }
}

impl From<FactoryPanicked> for io::Error {
    fn from(err: FactoryPanicked) -> Self {
        io::Error::other(err)
    }
}

/// Copies an `io::Error` for a second recipient (`io::Error` is not `Clone`): same kind, same
/// message, the same [`WriteError`](crate::WriteError) or [`TlsError`](crate::TlsError) source when there is one,
/// and the same OS error code for an error from a system call.
pub fn duplicate_error(err: &io::Error) -> io::Error {
    if let Some(tls_err) = crate::TlsError::of(err) {
        return tls_err.clone().into();
    }
    if let Some(panicked) = FactoryPanicked::of(err) {
        return panicked.clone().into();
    }
    // The core's copy keeps a `WriteError` source and an OS error code.
    switchboard_core::copy_error(err)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::WriteError;

    #[test]
    fn write_errors_map_to_precise_kinds_and_round_trip() {
        let err: io::Error = WriteError::Stalled(Duration::from_secs(3)).into();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(err.to_string(), "write made no progress for 3s");
        assert_eq!(
            WriteError::of(&err),
            Some(WriteError::Stalled(Duration::from_secs(3)))
        );
        let aborted: io::Error = WriteError::Aborted.into();
        assert_eq!(aborted.kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(
            WriteError::of(&duplicate_error(&aborted)),
            Some(WriteError::Aborted)
        );
        let plain = io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer");
        let copy = duplicate_error(&plain);
        assert_eq!(copy.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(copy.to_string(), "reset by peer");
        assert_eq!(WriteError::of(&copy), None);
    }

    #[test]
    fn a_factory_panic_keeps_its_message() {
        let payload = std::panic::catch_unwind(|| panic!("no protocol for {}", 7)).unwrap_err();
        let err: io::Error = FactoryPanicked::from_payload(&*payload).into();
        assert_eq!(err.kind(), io::ErrorKind::Other);
        assert_eq!(
            err.to_string(),
            "the protocol factory panicked: no protocol for 7"
        );
        let copy = duplicate_error(&err);
        assert_eq!(
            FactoryPanicked::of(&copy).map(FactoryPanicked::message),
            Some("no protocol for 7")
        );
        let payload = std::panic::catch_unwind(|| std::panic::panic_any(42)).unwrap_err();
        assert_eq!(
            FactoryPanicked::from_payload(&*payload).message(),
            "a panic without a message"
        );
    }
}
