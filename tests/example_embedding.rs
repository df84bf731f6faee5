//! The book's chapter "Embedding" runs switchboard from a plain `#[tokio::main]` program
//! (`examples/embedding.rs`): an actix `System` on a thread of its own serves an echo protocol,
//! and the tokio side connects, writes and reads through a `Connection`. This test runs it and
//! checks the echo it prints and that it exits 0, having shut everything down.

#[path = "support/process.rs"]
mod process;

use process::{Process, TIMEOUT, example_command};

#[test]
fn a_tokio_program_serves_and_connects_through_an_actix_thread() {
    let finished =
        Process::spawn("embedding", example_command("embedding", "warn")).finish(TIMEOUT);
    assert_eq!(
        finished.status.code(),
        Some(0),
        "exit status; stderr:\n{}",
        finished.stderr_text()
    );
    assert_eq!(finished.stdout_text(), "echoed: hello from tokio\n");
}
