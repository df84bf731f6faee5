//! A probe for subprocess transports: a protocol that forwards every event it receives, in
//! order, to the test, can hold its pipes' acknowledgements, and can pause pipes before their
//! first byte; plus a checker of the event order every subprocess transport guarantees, and
//! readers of `/proc` for what the kernel says about our children.
//!
//! Include it with `#[path = "support/subprocess.rs"] mod subprocess_support;`, next to
//! `mod support;` and `#[path = "support/process.rs"] mod process;`, which it uses.
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::BTreeMap,
    io,
    os::{fd::RawFd, unix::process::ExitStatusExt},
    process::ExitStatus,
};

use actix::prelude::*;
use bytes::Bytes;
use switchboard::{prelude::*, subprocess::Command};
use tokio::sync::{mpsc, watch};

use crate::support::TIMEOUT;

/// `sb-child ARGS`, every standard stream piped.
pub fn child(args: &[&str]) -> Command {
    Command::new(crate::process::child_program()).args(args)
}

/// What a [`SubProbe`] saw, in order.
#[derive(Debug)]
pub enum SubEvent {
    Made(SubprocessHandle),
    Data(RawFd, Bytes),
    PipeLost(RawFd, Option<io::Error>),
    /// `ProcessExited`, with what the handle's `returncode()` said inside its handler.
    Exited {
        status: ExitStatus,
        returncode: Option<ExitStatus>,
    },
    Lost(Option<io::Error>),
    PauseWriting,
    ResumeWriting,
}

impl SubEvent {
    /// A short description, in the words of asyncio's callbacks so runs compare with
    /// asyncio's: `made`, `data 1`, `pcl 0 None`, `exited 7` or `exited -9` (asyncio's
    /// returncode), `lost None`, `pause`, `resume`.
    pub fn describe(&self) -> String {
        let error = |err: &Option<io::Error>| match err {
            None => "None".to_owned(),
            Some(err) => format!("{:?}", err.kind()),
        };
        match self {
            SubEvent::Made(_) => "made".to_owned(),
            SubEvent::Data(fd, _) => format!("data {fd}"),
            SubEvent::PipeLost(fd, err) => format!("pcl {fd} {}", error(err)),
            SubEvent::Exited { status, .. } => format!("exited {}", returncode(*status)),
            SubEvent::Lost(err) => format!("lost {}", error(err)),
            SubEvent::PauseWriting => "pause".to_owned(),
            SubEvent::ResumeWriting => "resume".to_owned(),
        }
    }
}

/// An exit status as asyncio's `get_returncode()` gives it: the exit code, or minus the signal
/// number.
pub fn returncode(status: ExitStatus) -> i32 {
    status
        .code()
        .or(status.signal().map(|signal| -signal))
        .expect("an exit status has a code or a signal")
}

/// How a probe behaves.
#[derive(Debug, Clone, Default)]
pub struct SubProbeOptions {
    /// Pause these pipes' reading before any of them delivers: the `ConnectionMade`
    /// acknowledgement is kept until the pipes are reached and paused.
    pub pause_on_made: Vec<RawFd>,
    /// Keep every `PipeDataReceived` acknowledgement until [`ReleaseAcks`].
    pub hold_acks: bool,
    /// Keep the `ConnectionMade` acknowledgement until [`ReleaseMade`].
    pub hold_made: bool,
}

/// A subprocess protocol that forwards every event to a channel the test reads, and stops at
/// `ConnectionLost`.
pub struct SubProbe {
    events: mpsc::UnboundedSender<SubEvent>,
    stdin_paused: watch::Sender<bool>,
    options: SubProbeOptions,
    held: Vec<Ack>,
    /// The handle `ConnectionMade` carried.
    handle: Option<SubprocessHandle>,
    /// The `ConnectionMade` acknowledgement, while `hold_made` keeps it.
    made_ack: Option<Ack>,
}

/// The test's end of a probe.
pub struct SubProbeRx {
    events: mpsc::UnboundedReceiver<SubEvent>,
    stdin_paused: watch::Receiver<bool>,
    /// Every event read so far, described.
    pub seen: Vec<String>,
}

impl SubProbe {
    pub fn new(options: SubProbeOptions) -> (SubProbe, SubProbeRx) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (paused_tx, paused_rx) = watch::channel(false);
        (
            SubProbe {
                events: tx,
                stdin_paused: paused_tx,
                options,
                held: Vec::new(),
                handle: None,
                made_ack: None,
            },
            SubProbeRx {
                events: rx,
                stdin_paused: paused_rx,
                seen: Vec::new(),
            },
        )
    }

    fn record(&self, event: SubEvent) {
        let _ = self.events.send(event);
    }
}

/// Spawns `command` with a fresh probe (which also receives the stdin pipe's write-flow
/// events): the transport's handle, the probe, and the probe's events.
pub fn spawn_probed(
    command: Command,
    options: SubProbeOptions,
) -> io::Result<(SubprocessHandle, Addr<SubProbe>, SubProbeRx)> {
    let (probe, rx) = SubProbe::new(options);
    let mut addr = None;
    let (handle, _) = switchboard::subprocess::spawn(command, || {
        let started = probe.start();
        addr = Some(started.clone());
        SubprocessProtocolHandle::with_write_flow(started)
    })?;
    Ok((handle, addr.expect("the factory ran"), rx))
}

impl Actor for SubProbe {
    type Context = Context<Self>;
}

impl Handler<ConnectionMade<SubprocessHandle>> for SubProbe {
    type Result = ();

    fn handle(&mut self, msg: ConnectionMade<SubprocessHandle>, _: &mut Context<Self>) {
        let ConnectionMade { transport, ack, .. } = msg;
        self.handle = Some(transport.clone());
        self.record(SubEvent::Made(transport.clone()));
        if self.options.hold_made {
            self.made_ack = Some(ack);
            return;
        }
        if self.options.pause_on_made.is_empty() {
            return;
        }
        // The pipes are known at once, and none delivers before this handler returns.
        for &fd in &self.options.pause_on_made {
            match transport.pipe(fd) {
                Some(pipe) => pipe.pause_reading(),
                None => panic!("pipe {fd} to pause is missing"),
            }
        }
    }
}

impl Handler<PipeDataReceived> for SubProbe {
    type Result = ();

    fn handle(&mut self, msg: PipeDataReceived, _: &mut Context<Self>) {
        let PipeDataReceived { fd, data, ack, .. } = msg;
        if self.options.hold_acks {
            self.held.push(ack);
        }
        self.record(SubEvent::Data(fd, data));
    }
}

impl Handler<PipeConnectionLost> for SubProbe {
    type Result = ();

    fn handle(&mut self, msg: PipeConnectionLost, _: &mut Context<Self>) {
        self.record(SubEvent::PipeLost(msg.fd, msg.error));
    }
}

impl Handler<ProcessExited> for SubProbe {
    type Result = ();

    fn handle(&mut self, msg: ProcessExited, _: &mut Context<Self>) {
        // What the handle says inside the handler, as asyncio's `get_returncode()` does inside
        // `process_exited()`.
        let returncode = self.handle.as_ref().and_then(SubprocessHandle::returncode);
        self.record(SubEvent::Exited {
            status: msg.status,
            returncode,
        });
    }
}

impl Handler<ConnectionLost> for SubProbe {
    type Result = ();

    fn handle(&mut self, ConnectionLost(err): ConnectionLost, ctx: &mut Context<Self>) {
        self.record(SubEvent::Lost(err));
        ctx.stop();
    }
}

impl Handler<PauseWriting> for SubProbe {
    type Result = ();

    fn handle(&mut self, _: PauseWriting, _: &mut Context<Self>) {
        self.stdin_paused.send_replace(true);
        self.record(SubEvent::PauseWriting);
    }
}

impl Handler<ResumeWriting> for SubProbe {
    type Result = ();

    fn handle(&mut self, _: ResumeWriting, _: &mut Context<Self>) {
        self.stdin_paused.send_replace(false);
        self.record(SubEvent::ResumeWriting);
    }
}

/// Releases every held acknowledgement; with `keep_holding: false` the probe stops holding.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReleaseAcks {
    pub keep_holding: bool,
}

impl Handler<ReleaseAcks> for SubProbe {
    type Result = ();

    fn handle(&mut self, msg: ReleaseAcks, _: &mut Context<Self>) {
        self.options.hold_acks = msg.keep_holding;
        self.held.clear();
    }
}

/// Releases the `ConnectionMade` acknowledgement `hold_made` kept.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReleaseMade;

impl Handler<ReleaseMade> for SubProbe {
    type Result = ();

    fn handle(&mut self, _: ReleaseMade, _: &mut Context<Self>) {
        self.made_ack
            .take()
            .expect("ConnectionMade's ack is held")
            .release();
    }
}

/// Stops the probe actor (to test the death pact).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopProbe;

impl Handler<StopProbe> for SubProbe {
    type Result = ();

    fn handle(&mut self, _: StopProbe, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl SubProbeRx {
    /// The next event; fails the test after [`TIMEOUT`]. `None` once the probe has stopped and
    /// every event was read.
    pub async fn next(&mut self) -> Option<SubEvent> {
        let event = tokio::time::timeout(TIMEOUT, self.events.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("no event within {TIMEOUT:?}; seen so far: {:?}", self.seen)
            });
        if let Some(event) = &event {
            self.seen.push(event.describe());
        }
        event
    }

    /// An event already queued, without waiting.
    pub fn try_next(&mut self) -> Option<SubEvent> {
        let event = self.events.try_recv().ok();
        if let Some(event) = &event {
            self.seen.push(event.describe());
        }
        event
    }

    /// Expects `ConnectionMade` next and returns its handle.
    pub async fn made(&mut self) -> SubprocessHandle {
        match self.next().await {
            Some(SubEvent::Made(handle)) => handle,
            other => panic!("expected ConnectionMade first, got {other:?}"),
        }
    }

    /// Every event up to and including the first one `stop` accepts.
    pub async fn until(&mut self, mut stop: impl FnMut(&SubEvent) -> bool) -> Vec<SubEvent> {
        let mut events = Vec::new();
        loop {
            let event = self.next().await.unwrap_or_else(|| {
                panic!(
                    "the probe stopped before the awaited event; seen: {:?}",
                    self.seen
                )
            });
            let done = stop(&event);
            events.push(event);
            if done {
                return events;
            }
        }
    }

    /// Every event up to and including `ConnectionLost`; then asserts the probe stopped with
    /// nothing more delivered.
    pub async fn until_lost(&mut self) -> Vec<SubEvent> {
        let events = self.until(|event| matches!(event, SubEvent::Lost(_))).await;
        self.assert_ended().await;
        events
    }

    /// Asserts no event arrives for `quiet`.
    pub async fn assert_quiet(&mut self, quiet: std::time::Duration) {
        if let Ok(Some(event)) = tokio::time::timeout(quiet, self.events.recv()).await {
            panic!("unexpected event {event:?}; seen: {:?}", self.seen);
        }
    }

    /// Asserts the probe stopped and nothing else was delivered.
    pub async fn assert_ended(&mut self) {
        if let Some(event) = self.next().await {
            panic!(
                "event after ConnectionLost: {event:?}; seen: {:?}",
                self.seen
            );
        }
    }

    /// Whether the stdin pipe is paused (`PauseWriting` seen without `ResumeWriting` after
    /// it), as the probe saw it.
    pub fn stdin_paused(&self) -> watch::Receiver<bool> {
        self.stdin_paused.clone()
    }
}

/// Checks what every subprocess transport guarantees about a complete run (from the event
/// after `ConnectionMade` up to `ConnectionLost`, both optional): pipe data is never empty and
/// comes only from fds 1 and 2, each pipe's data comes before its one `PipeConnectionLost`,
/// `ProcessExited` comes once, write-flow events alternate starting with a pause, and
/// `ConnectionLost` comes once, last, after the exit and every pipe's end. Returns the
/// bytes of each fd, and the exit status.
pub fn check_run(events: &[SubEvent]) -> Run {
    let mut run = Run::default();
    let mut paused = false;
    let listing = || events.iter().map(SubEvent::describe).collect::<Vec<_>>();
    for (i, event) in events.iter().enumerate() {
        match event {
            SubEvent::Made(_) => {
                assert_eq!(i, 0, "ConnectionMade not first: {:?}", listing())
            }
            SubEvent::Data(fd, data) => {
                assert!(*fd == 1 || *fd == 2, "data from fd {fd}: {:?}", listing());
                assert!(!data.is_empty(), "empty PipeDataReceived from fd {fd}");
                assert!(
                    !run.pipes_lost.contains_key(fd),
                    "data from fd {fd} after its PipeConnectionLost: {:?}",
                    listing()
                );
                run.output.entry(*fd).or_default().extend_from_slice(data);
            }
            SubEvent::PipeLost(fd, err) => {
                assert!((0..=2).contains(fd), "PipeConnectionLost for fd {fd}");
                let previous = run
                    .pipes_lost
                    .insert(*fd, err.as_ref().map(io::Error::kind));
                assert!(
                    previous.is_none(),
                    "a second PipeConnectionLost for fd {fd}: {:?}",
                    listing()
                );
            }
            SubEvent::Exited { status, .. } => {
                assert!(
                    run.status.replace(*status).is_none(),
                    "a second ProcessExited: {:?}",
                    listing()
                );
            }
            SubEvent::PauseWriting => {
                assert!(!paused, "PauseWriting twice in a row: {:?}", listing());
                paused = true;
            }
            SubEvent::ResumeWriting => {
                assert!(paused, "ResumeWriting without a pause: {:?}", listing());
                paused = false;
            }
            SubEvent::Lost(err) => {
                assert_eq!(
                    i,
                    events.len() - 1,
                    "ConnectionLost not last: {:?}",
                    listing()
                );
                assert!(err.is_none(), "ConnectionLost({err:?}): it is always None");
                assert!(
                    run.status.is_some(),
                    "ConnectionLost before ProcessExited: {:?}",
                    listing()
                );
                run.lost = true;
            }
        }
    }
    run
}

/// What [`check_run`] gathered from a run.
#[derive(Debug, Default)]
pub struct Run {
    /// Each read pipe's bytes, in order.
    pub output: BTreeMap<RawFd, Vec<u8>>,
    /// Each pipe that ended, with its error's kind.
    pub pipes_lost: BTreeMap<RawFd, Option<io::ErrorKind>>,
    pub status: Option<ExitStatus>,
    pub lost: bool,
}

impl Run {
    /// The bytes fd `fd` delivered, as text.
    pub fn text(&self, fd: RawFd) -> String {
        String::from_utf8_lossy(self.output.get(&fd).map_or(&[][..], Vec::as_slice)).into_owned()
    }

    pub fn status(&self) -> ExitStatus {
        self.status.expect("ProcessExited was delivered")
    }
}

/// What `/proc/<pid>/stat` says of a process: its state letter and its parent's pid; `None`
/// when there is no such process.
pub fn proc_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` is still a child of ours, running or a zombie (a pid that was recycled by
/// someone else's process does not count).
pub fn is_our_child(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|(_, ppid)| ppid == std::process::id())
}

/// The pids of this process's zombie children.
pub fn our_zombies() -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| proc_stat(pid) == Some(('Z', me)))
        .collect()
}

/// Waits (polling, at most [`TIMEOUT`]) until `done` holds; panics with `what` otherwise.
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {TIMEOUT:?}: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
