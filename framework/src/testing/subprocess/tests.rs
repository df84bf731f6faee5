//! The subprocess mock against what a real subprocess transport promises (DESIGN guarantee 12,
//! and 1, 4 and 8 as it keeps them), with a recording subprocess protocol.

use std::{io, os::fd::RawFd, process::ExitStatus, time::Duration};

use actix::{Actor, ActorContext, Addr, Context, Handler, Message};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::*;
use crate::{
    Ack, ConnectionLost, ConnectionMade, ExtraInfo, GetExtraInfo, GetPid, GetPipeTransport,
    GetReturnCode, PauseWriting, PipeConnectionLost, PipeDataReceived, ProcessExited, ProcessGone,
    ResumeWriting, SubprocessHandle, SubprocessProtocolHandle, keys,
};

/// One event the recorder received.
#[derive(Debug)]
enum Seen {
    Made(SubprocessHandle),
    Data(RawFd, Bytes),
    PipeLost(RawFd, Option<io::ErrorKind>),
    Exited(ExitStatus),
    PauseWriting,
    ResumeWriting,
    Lost,
}

impl Seen {
    fn name(&self) -> String {
        match self {
            Seen::Made(_) => "Made".into(),
            Seen::Data(fd, _) => format!("Data({fd})"),
            Seen::PipeLost(fd, _) => format!("PipeLost({fd})"),
            Seen::Exited(_) => "Exited".into(),
            Seen::PauseWriting => "PauseWriting".into(),
            Seen::ResumeWriting => "ResumeWriting".into(),
            Seen::Lost => "Lost".into(),
        }
    }
}

/// A subprocess protocol that records every event; it can keep its `ConnectionMade`
/// acknowledgement, and the acknowledgements of one pipe's data.
struct Recorder {
    events: mpsc::UnboundedSender<Seen>,
    child: Option<SubprocessHandle>,
    hold_made: bool,
    hold_fd: Option<RawFd>,
    held: Vec<Ack>,
}

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<ConnectionMade<SubprocessHandle>> for Recorder {
    type Result = ();

    fn handle(&mut self, msg: ConnectionMade<SubprocessHandle>, _: &mut Context<Self>) {
        let ConnectionMade { transport, ack, .. } = msg;
        if self.hold_made {
            self.held.push(ack);
        }
        self.child = Some(transport.clone());
        let _ = self.events.send(Seen::Made(transport));
    }
}

impl Handler<PipeDataReceived> for Recorder {
    type Result = ();

    fn handle(&mut self, msg: PipeDataReceived, _: &mut Context<Self>) {
        let PipeDataReceived { fd, data, ack, .. } = msg;
        if self.hold_fd == Some(fd) {
            self.held.push(ack);
        }
        let _ = self.events.send(Seen::Data(fd, data));
    }
}

impl Handler<PipeConnectionLost> for Recorder {
    type Result = ();

    fn handle(&mut self, msg: PipeConnectionLost, _: &mut Context<Self>) {
        let kind = msg.error.map(|err| err.kind());
        let _ = self.events.send(Seen::PipeLost(msg.fd, kind));
    }
}

impl Handler<ProcessExited> for Recorder {
    type Result = ();

    fn handle(&mut self, msg: ProcessExited, _: &mut Context<Self>) {
        let _ = self.events.send(Seen::Exited(msg.status));
    }
}

impl Handler<PauseWriting> for Recorder {
    type Result = ();

    fn handle(&mut self, _: PauseWriting, _: &mut Context<Self>) {
        let _ = self.events.send(Seen::PauseWriting);
    }
}

impl Handler<ResumeWriting> for Recorder {
    type Result = ();

    fn handle(&mut self, _: ResumeWriting, _: &mut Context<Self>) {
        let _ = self.events.send(Seen::ResumeWriting);
    }
}

impl Handler<ConnectionLost> for Recorder {
    type Result = ();

    fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
        let _ = self.events.send(Seen::Lost);
        ctx.stop();
    }
}

#[derive(Message)]
#[rtype(result = "()")]
enum Control {
    With(Box<dyn FnOnce(&SubprocessHandle) + Send>),
    Release { keep_holding: bool },
    Stop,
}

impl Handler<Control> for Recorder {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Context<Self>) {
        match msg {
            Control::With(f) => f(self.child.as_ref().expect("ConnectionMade first")),
            Control::Release { keep_holding } => {
                if !keep_holding {
                    self.hold_fd = None;
                }
                self.hold_made = false;
                self.held.clear();
            }
            Control::Stop => ctx.stop(),
        }
    }
}

struct Events {
    events: mpsc::UnboundedReceiver<Seen>,
    addr: Addr<Recorder>,
}

impl Events {
    async fn next(&mut self) -> Seen {
        tokio::time::timeout(Duration::from_secs(5), self.events.recv())
            .await
            .expect("an event within 5 s")
            .expect("the recorder is running")
    }

    async fn names(&mut self, n: usize) -> Vec<String> {
        let mut names = Vec::new();
        for _ in 0..n {
            names.push(self.next().await.name());
        }
        names
    }

    /// Every event already received, without waiting.
    fn received(&mut self) -> Vec<Seen> {
        std::iter::from_fn(|| self.events.try_recv().ok()).collect()
    }

    async fn assert_quiet(&mut self) {
        if let Ok(Some(event)) =
            tokio::time::timeout(Duration::from_millis(50), self.events.recv()).await
        {
            panic!("unexpected event {event:?}");
        }
    }

    fn with(&self, f: impl FnOnce(&SubprocessHandle) + Send + 'static) {
        self.addr.do_send(Control::With(Box::new(f)));
    }

    fn release(&self, keep_holding: bool) {
        self.addr.do_send(Control::Release { keep_holding });
    }
}

#[derive(Default)]
struct RecorderOptions {
    hold_made: bool,
    hold_fd: Option<RawFd>,
}

fn recorder(options: RecorderOptions) -> (SubprocessProtocolHandle, Events) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = Recorder {
        events: tx,
        child: None,
        hold_made: options.hold_made,
        hold_fd: options.hold_fd,
        held: Vec::new(),
    }
    .start();
    let events = Events {
        events: rx,
        addr: addr.clone(),
    };
    (SubprocessProtocolHandle::with_write_flow(addr), events)
}

fn plain() -> (SubprocessProtocolHandle, Events) {
    recorder(RecorderOptions::default())
}

fn exit_code(status: ExitStatus) -> Option<i32> {
    status.code()
}

#[actix::test]
async fn no_pipe_delivers_before_connection_made_is_acknowledged() {
    let (protocol, mut events) = recorder(RecorderOptions {
        hold_made: true,
        ..RecorderOptions::default()
    });
    let mock = MockSubprocessTransport::builder().start(protocol);
    mock.pipe(1).unwrap().push("early");
    mock.pipe(2).unwrap().push("also early");
    let made = match events.next().await {
        Seen::Made(handle) => handle,
        other => panic!("{other:?}"),
    };
    assert!(made.same_transport(&mock.handle()));
    events.assert_quiet().await;
    assert_eq!(mock.pipe(1).unwrap().stats().deliveries, 0);
    events.release(false);
    mock.settle().await;
    let mut names: Vec<_> = events.received().iter().map(Seen::name).collect();
    names.sort();
    assert_eq!(names, ["Data(1)", "Data(2)"]);
}

/// Guarantee 12, per pipe: its data in order before its close; a pipe whose protocol keeps the
/// acknowledgement is held back alone.
#[actix::test]
async fn each_pipe_delivers_its_data_before_its_close_and_is_held_back_alone() {
    let (protocol, mut events) = recorder(RecorderOptions {
        hold_fd: Some(1),
        ..RecorderOptions::default()
    });
    let mock = MockSubprocessTransport::connect(protocol).await;
    events.next().await; // Made
    let stdout = mock.pipe(1).unwrap().clone();
    stdout.push("one");
    stdout.push("two");
    let eof = actix::spawn(async move { stdout.eof().await });
    assert!(matches!(events.next().await, Seen::Data(1, data) if data == "one"));
    // The mock's own `stderr` and `close_pipe` settle every pipe, stdout's kept ack included:
    // stderr's mock pipe is driven directly.
    let stderr = mock.pipe(2).unwrap();
    stderr.feed("while stdout waits").await;
    stderr.eof().await;
    assert_eq!(events.names(2).await, ["Data(2)", "PipeLost(2)"]);
    events.assert_quiet().await;
    events.release(true);
    assert!(matches!(events.next().await, Seen::Data(1, data) if data == "two"));
    events.release(false);
    eof.await.unwrap();
    mock.settle().await;
    assert!(matches!(events.next().await, Seen::PipeLost(1, None)));
    assert!(!mock.is_ended(), "stdin is open and the child runs");
}

/// Guarantee 12, across pipes and the process: `ProcessExited` may come before the pipes
/// close; `ConnectionLost` comes once, after the exit and every pipe's close, in either order.
#[actix::test]
async fn connection_lost_comes_once_after_the_exit_and_every_pipe() {
    let (protocol, mut events) = plain();
    let mock = MockSubprocessTransport::connect(protocol).await;
    mock.exit(3).await;
    assert_eq!(events.names(1).await, ["Made"]);
    assert!(matches!(events.next().await, Seen::Exited(status) if status.code() == Some(3)));
    assert_eq!(mock.returncode().and_then(exit_code), Some(3));
    mock.stdout("output after the exit").await;
    mock.close_pipe(0).await;
    mock.close_pipe(1).await;
    assert!(!mock.is_ended(), "stderr is still open");
    mock.close_pipe(2).await;
    assert!(mock.is_ended());
    assert_eq!(
        events.names(5).await,
        [
            "Data(1)",
            "PipeLost(0)",
            "PipeLost(1)",
            "PipeLost(2)",
            "Lost"
        ]
    );

    let (protocol, mut events) = plain();
    let mock = MockSubprocessTransport::connect(protocol).await;
    mock.close_pipes().await;
    assert!(!mock.is_ended(), "the child runs");
    mock.exit(0).await;
    mock.exit(1).await; // once
    assert!(mock.is_ended());
    assert_eq!(
        events.names(6).await,
        [
            "Made",
            "PipeLost(1)",
            "PipeLost(2)",
            "PipeLost(0)",
            "Exited",
            "Lost"
        ]
    );
    assert!(events.received().is_empty(), "nothing after ConnectionLost");
    assert_eq!(mock.returncode().and_then(exit_code), Some(0));
}

#[actix::test]
async fn close_flushes_stdin_closes_every_pipe_and_kills_a_running_child() {
    let (protocol, mut events) = plain();
    let mock = MockSubprocessTransport::connect(protocol).await;
    events.with(|child| {
        child.pipe(0).unwrap().write("last words\n");
        child.close();
        child.close(); // idempotent
    });
    mock.settle().await;
    assert!(mock.is_ended());
    assert_eq!(mock.stdin_written(), "last words\n");
    assert_eq!(mock.signals(), [9], "SIGKILL");
    assert_eq!(mock.command_names(), ["Close", "Close"]);
    let status = mock.returncode().expect("collected");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    let names = events.names(6).await;
    assert_eq!(names[0], "Made");
    assert_eq!(names.last().map(String::as_str), Some("Lost"));
    let mut middle = names[1..5].to_vec();
    middle.sort();
    assert_eq!(
        middle,
        ["Exited", "PipeLost(0)", "PipeLost(1)", "PipeLost(2)"]
    );

    // A child that exited already is not killed.
    let (protocol, _events) = plain();
    let mock = MockSubprocessTransport::connect(protocol).await;
    mock.exit(0).await;
    mock.handle().close();
    mock.settle().await;
    assert!(mock.is_ended() && mock.signals().is_empty());
}

#[actix::test]
async fn signals_are_recorded_and_refused_once_the_child_exited() {
    let (protocol, mut events) = plain();
    let mock = MockSubprocessTransport::connect(protocol).await;
    let child = mock.handle();
    child.terminate().await.expect("delivered");
    child.send_signal(10).await.expect("delivered");
    child.send_signal(0).await.expect("the child is there");
    assert!(child.send_signal(-1).await.is_err());
    assert_eq!(mock.signals(), [15, 10], "signal 0 sends nothing");
    assert!(mock.returncode().is_none(), "the script decides the answer");
    mock.exit_by_signal(15).await;
    let err = child.terminate().await.expect_err("collected");
    assert!(ProcessGone::of(&err));
    assert!(ProcessGone::of(&child.send_signal(0).await.unwrap_err()));
    assert_eq!(mock.signals(), [15, 10]);
    assert_eq!(
        mock.command_names(),
        [
            "Terminate",
            "SendSignal",
            "SendSignal",
            "SendSignal",
            "Terminate",
            "SendSignal"
        ]
    );
    events.names(2).await; // Made, Exited

    let (protocol, mut events) = plain();
    let mock = MockSubprocessTransport::connect(protocol).await;
    mock.handle().kill().await.expect("delivered");
    mock.settle().await;
    assert_eq!(events.names(2).await, ["Made", "Exited"]);
    let status = mock.returncode().expect("SIGKILL cannot be caught");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert!(!mock.is_ended(), "its pipes are still open");
}

#[actix::test]
async fn stdin_is_a_write_pipe_with_flow_control_and_a_reader_that_can_go() {
    let (protocol, mut events) = plain();
    let mock = MockSubprocessTransport::connect(protocol).await;
    let stdin = mock.pipe(0).unwrap();
    events.with(|child| child.pipe(0).unwrap().write("a"));
    mock.settle().await;
    assert_eq!(mock.take_stdin(), "a");
    stdin.pause_writing().await;
    events.with(|child| child.pipe(0).unwrap().write("stuck"));
    mock.settle().await;
    assert_eq!(mock.take_stdin(), "", "the child does not read");
    assert_eq!(stdin.stats().write_buffer_size, 5);
    stdin.resume_writing().await;
    assert_eq!(mock.take_stdin(), "stuck");
    assert!(!stdin.is_reading(), "stdin reads nothing");
    mock.close_pipe(0).await;
    assert_eq!(
        events.names(3).await,
        ["Made", "PauseWriting", "ResumeWriting"]
    );
    assert!(matches!(events.next().await, Seen::PipeLost(0, None)));

    // Closed by the child with bytes still waiting: they are lost, and the pipe says so.
    let (protocol, mut events) = plain();
    let mock = MockSubprocessTransport::connect(protocol).await;
    mock.pipe(0).unwrap().pause_writing().await;
    events.with(|child| child.pipe(0).unwrap().write("stuck"));
    mock.settle().await;
    mock.close_pipe(0).await;
    events.names(2).await; // Made, PauseWriting
    assert!(matches!(
        events.next().await,
        Seen::PipeLost(0, Some(io::ErrorKind::BrokenPipe))
    ));
}

#[actix::test]
async fn stdout_and_stderr_are_read_pipes() {
    let (protocol, _events) = plain();
    let mock = MockSubprocessTransport::connect(protocol).await;
    let stdout = mock.pipe(1).unwrap().handle();
    let err = stdout
        .write_acked("to stdout")
        .await
        .expect_err("read-only");
    assert_eq!(
        crate::WriteError::of(&err),
        Some(crate::WriteError::ReadOnly)
    );
    assert_eq!(mock.pipe(1).unwrap().command_names(), ["RefusedWrite"]);
}

#[actix::test]
async fn queries_answer_as_on_a_real_transport() {
    let (protocol, mut events) = plain();
    let mock = MockSubprocessTransport::builder()
        .pid(777)
        .without_pipe(2)
        .connect(protocol)
        .await;
    let child = mock.handle();
    assert_eq!(child.pid(), 777);
    assert_eq!(child.send(GetPid).await.unwrap(), 777);
    let stdout = child.send(GetPipeTransport(1)).await.unwrap().unwrap();
    assert!(stdout.same_transport(&mock.pipe(1).unwrap().handle()));
    assert!(child.send(GetPipeTransport(2)).await.unwrap().is_none());
    assert!(child.send(GetPipeTransport(7)).await.unwrap().is_none());
    assert!(mock.pipe(2).is_none() && child.pipe(2).is_none());
    let info = child
        .send(GetExtraInfo::new(keys::SUBPROCESS))
        .await
        .unwrap();
    assert_eq!(
        info,
        Some(ExtraInfo::Subprocess(crate::ProcessInfo::new(777)))
    );
    assert!(child.send(GetReturnCode).await.unwrap().is_none());
    assert!(!child.is_closing().await);
    mock.finish(0).await;
    assert!(
        mock.is_ended(),
        "stderr is not piped: the end does not wait for it"
    );
    assert_eq!(
        events.names(5).await,
        ["Made", "PipeLost(1)", "PipeLost(0)", "Exited", "Lost"]
    );
    assert_eq!(child.returncode().and_then(exit_code), Some(0));
}

#[actix::test]
async fn a_protocol_that_stops_closes_the_transport_and_kills_the_child() {
    let (protocol, events) = plain();
    let mock = MockSubprocessTransport::connect(protocol).await;
    events.addr.do_send(Control::Stop);
    mock.ended().await;
    assert_eq!(mock.signals(), [9]);
    assert!(mock.command_names().is_empty(), "nobody sent Close");
}

/// A small protocol driven end to end: it sends two sums to a calculator child, closes its
/// stdin, and collects the answer lines, however stdout cuts them.
#[derive(Default)]
struct Sums {
    lines: Vec<String>,
    partial: String,
    status: Option<ExitStatus>,
    done: Option<oneshot::Sender<(Vec<String>, Option<ExitStatus>)>>,
}

impl Actor for Sums {
    type Context = Context<Self>;
}

impl Handler<ConnectionMade<SubprocessHandle>> for Sums {
    type Result = ();

    fn handle(&mut self, msg: ConnectionMade<SubprocessHandle>, _: &mut Context<Self>) {
        let stdin = msg.transport.pipe(0).expect("stdin is piped");
        stdin.write("1+2\n");
        stdin.write("6*7\n");
        stdin.write_eof();
    }
}

impl Handler<PipeDataReceived> for Sums {
    type Result = ();

    fn handle(&mut self, msg: PipeDataReceived, _: &mut Context<Self>) {
        if msg.fd != 1 {
            return;
        }
        self.partial.push_str(&String::from_utf8_lossy(&msg.data));
        while let Some(at) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=at).collect();
            self.lines.push(line.trim_end().to_owned());
        }
    }
}

impl Handler<PipeConnectionLost> for Sums {
    type Result = ();

    fn handle(&mut self, _: PipeConnectionLost, _: &mut Context<Self>) {}
}

impl Handler<ProcessExited> for Sums {
    type Result = ();

    fn handle(&mut self, msg: ProcessExited, _: &mut Context<Self>) {
        self.status = Some(msg.status);
    }
}

impl Handler<ConnectionLost> for Sums {
    type Result = ();

    fn handle(&mut self, _: ConnectionLost, ctx: &mut Context<Self>) {
        if let Some(done) = self.done.take() {
            let _ = done.send((std::mem::take(&mut self.lines), self.status));
        }
        ctx.stop();
    }
}

#[actix::test]
async fn a_calculator_client_end_to_end() {
    let (done, finished) = oneshot::channel();
    let sums = Sums {
        done: Some(done),
        ..Sums::default()
    };
    let mock = MockSubprocessTransport::connect(sums.start()).await;
    assert_eq!(mock.stdin_written(), "1+2\n6*7\n");
    assert!(mock.pipe(0).unwrap().is_ended(), "WriteEof closed stdin");
    assert_eq!(
        mock.pipe(0).unwrap().command_names(),
        ["Write", "Write", "WriteEof"]
    );
    mock.stdout("3\n4").await;
    mock.stderr("warning: nothing\n").await;
    mock.stdout("2\n").await;
    mock.finish(0).await;
    let (lines, status) = finished.await.expect("ConnectionLost came");
    assert_eq!(lines, ["3", "42"]);
    assert!(status.is_some_and(|status| status.success()));
    assert!(mock.is_ended());
}

#[actix::test]
async fn commands_after_the_end_are_dropped_and_said_once() {
    let warnings = crate::stopped::capture::Warnings::start();
    let (protocol, _events) = plain();
    let mock = MockSubprocessTransport::connect(protocol).await;
    let child = mock.handle();
    mock.finish(0).await;
    let stopped = async {
        while child.is_alive() {
            actix_rt::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), stopped)
        .await
        .expect("the actor stops after its end");
    for _ in 0..3 {
        child.do_send(crate::Kill);
    }
    assert_eq!(
        warnings.count("subprocess transport that has stopped was dropped"),
        1,
        "one warning for three dropped commands, none silent"
    );
}
