//! The actix primer runs as a process and prints what the book's chapter "actix for newcomers"
//! says it prints, line for line: the order of `send` and `do_send`, a `Recipient`, an actor on
//! another arbiter, `spawn` letting the mailbox go on and `wait` holding it, a timer, and
//! `MailboxError::Closed` from a stopped actor's address.

#[path = "support/process.rs"]
mod process;

use std::time::Duration;

use process::{Process, example_command};

/// What the primer prints. Each line is a claim of the chapter: the totals show which message
/// was handled before which.
const TRANSCRIPT: &[&str] = &[
    "counter: started",
    "send(Add(2)) answered 2",
    "after do_send(Add(40)): 42",
    "through a Recipient<Add>: 43",
    "remote: started",
    "remote counter answered 101",
    // `spawn`: Add(0) is answered before the spawned work adds 1000.
    "spawned work, then send(Add(0)): 43",
    "counter: added 1000 later",
    // `wait`: Add(0) waits for the 10000 to be added.
    "counter: added 10000 later",
    "waited work, then send(Add(0)): 11043",
    "counter: stopping",
    "counter: stopped at 11043",
    "send to a stopped actor: Mailbox has closed",
    "remote: stopped at 101",
];

#[test]
fn the_primer_prints_what_the_book_says() {
    let finished = Process::spawn("actix_primer", example_command("actix_primer", "warn"))
        .finish(Duration::from_secs(30));
    let stdout = finished.stdout_text();
    assert_eq!(
        finished.status.code(),
        Some(0),
        "the primer failed ({}); stdout:\n{stdout}\nstderr:\n{}",
        finished.status,
        finished.stderr_text()
    );
    assert_eq!(stdout.lines().collect::<Vec<_>>(), TRANSCRIPT);
}
