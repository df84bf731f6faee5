//! What every handle does with a command sent after its actor stopped: drops it and says so,
//! once per actor, so a protocol that goes on writing to a closed connection does not flood the
//! log, and no command is ever dropped silently.

use std::{
    any::type_name,
    sync::atomic::{AtomicBool, Ordering},
};

/// Whether a dropped command has been reported for one actor; shared by all its handles.
#[derive(Debug, Default)]
pub struct StoppedNotice(AtomicBool);

impl StoppedNotice {
    /// Reports that `M`, sent to the `what` (a transport, a datagram endpoint, a subprocess),
    /// was dropped: a warning the first time, at debug level after.
    pub(crate) fn dropped<M>(&self, what: &'static str) {
        let command = type_name::<M>();
        if self.0.swap(true, Ordering::Relaxed) {
            tracing::debug!(
                command,
                "command sent to a {what} that has stopped was dropped"
            );
        } else {
            tracing::warn!(
                command,
                "command sent to a {what} that has stopped was dropped (further ones are \
                 logged at debug level)"
            );
        }
    }
}

/// What is logged at `WARN` on the current thread while the guard lives, for tests of what a
/// dropped command says.
#[cfg(test)]
pub(crate) mod capture {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    /// The log, and the guard of the thread's subscriber.
    pub(crate) struct Warnings {
        logs: Arc<Mutex<Vec<u8>>>,
        _guard: tracing::subscriber::DefaultGuard,
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Warnings {
        pub(crate) fn start() -> Self {
            let logs = Arc::new(Mutex::new(Vec::new()));
            let sink = logs.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::WARN)
                .with_ansi(false)
                .with_writer(move || Sink(sink.clone()))
                .finish();
            Warnings {
                logs,
                _guard: tracing::subscriber::set_default(subscriber),
            }
        }

        /// How many lines logged so far contain `text`.
        pub(crate) fn count(&self, text: &str) -> usize {
            let logs = self.logs.lock().unwrap();
            String::from_utf8_lossy(&logs)
                .lines()
                .filter(|line| line.contains(text))
                .count()
        }
    }
}
