//! Pipe transports: asyncio's `connect_read_pipe` and `connect_write_pipe`, on the generic
//! [stream transport](crate::stream).
//!
//! A read-pipe transport delivers what arrives on a pipe, FIFO, socket or character device (a
//! terminal) with the same flow control as a socket: one `DataReceived` in flight, a read-buffer
//! limit past which it stops reading (the writer then blocks on a full pipe), `PauseReading` and
//! `ResumeReading`. At the writer's EOF it delivers `EofReceived` (when the protocol opted in),
//! then `ConnectionLost(None)`: a pipe has no half-open state. It refuses writes with
//! [`WriteError::ReadOnly`].
//!
//! A write-pipe transport writes as a socket transport does (straight to the pipe when it can,
//! buffering otherwise, `PauseWriting`/`ResumeWriting` around the watermarks). `WriteEof` and
//! `Close` flush, then close the pipe, which is its EOF, and end with `ConnectionLost(None)`.
//! When the reader closes its end, the transport ends at once: with `ConnectionLost(None)` if
//! nothing was waiting to be written, with a broken-pipe error otherwise.
//!
//! Extra info `pipe`: an [`ExtraInfo::Pipe`] with the descriptor, which end, and what it is.
//! The transports of a subprocess's stdin, stdout and stderr are pipe transports too.
//!
//! ```
//! use switchboard_framework::prelude::*;
//! use switchboard_transports::pipe;
//!
//! /// Collects what it reads, and hands it over at the end.
//! struct Collect(Vec<u8>, Option<tokio::sync::oneshot::Sender<Vec<u8>>>);
//! impl Protocol for Collect {
//!     type Codec = Raw;
//!     fn data_received(&mut self, data: Bytes, _: &mut Ctx<'_, Self>) {
//!         self.0.extend_from_slice(&data);
//!     }
//!     fn connection_lost(&mut self, _: Option<std::io::Error>, _: &mut Ctx<'_, Self>) {
//!         if let Some(done) = self.1.take() {
//!             let _ = done.send(std::mem::take(&mut self.0));
//!         }
//!     }
//! }
//!
//! # #[actix::main]
//! # async fn main() -> std::io::Result<()> {
//! let (reader, writer) = std::io::pipe()?;
//! let (done, collected) = tokio::sync::oneshot::channel();
//! pipe::connect_read(reader, || Collect(Vec::new(), Some(done)))?;
//!
//! // The other end, as another program would write it: here a write-pipe transport.
//! let (out, _) = pipe::connect_write(writer, || Collect(Vec::new(), None))?;
//! out.write("through a pipe");
//! out.write_eof(); // flushes, then closes: the reader sees its EOF
//! assert_eq!(collected.await.unwrap(), b"through a pipe");
//! # Ok(())
//! # }
//! ```

use std::{
    fmt,
    fs::File,
    future::Future,
    io::{self, IoSlice},
    os::{
        fd::{AsFd, AsRawFd, OwnedFd},
        unix::fs::FileTypeExt,
    },
    pin::Pin,
    rc::Rc,
    task::{Context as TaskContext, Poll, ready},
};

use switchboard_framework::{
    ExtraInfo, IntoProtocol, PipeEnd, PipeFileType, PipeInfo, TransportHandle, WriteError, keys,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, Interest, ReadBuf, Ready},
    net::unix::pipe::{Receiver, Sender},
};

use crate::{
    factory, runtime,
    stream::{Direction, StreamConfig, StreamIo, StreamTransport},
};

/// Starts a read-pipe transport over `pipe` (a pipe's read end, a FIFO, a socket or a
/// character device such as a terminal) and attaches the protocol `protocol` makes.
///
/// The descriptor is set non-blocking; if it was blocking, it is set blocking again when the
/// transport releases it, so a terminal shared with other programs is left as it was found.
/// Fails with `InvalidInput` for a regular file or a directory, as asyncio does, and for a
/// descriptor the kernel cannot poll (`/dev/null` and other special files).
///
/// Call it inside an actix system: the transport lives on the current arbiter.
pub fn connect_read<P: IntoProtocol>(
    pipe: impl Into<OwnedFd>,
    protocol: impl FnOnce() -> P,
) -> io::Result<(TransportHandle, P::Output)> {
    connect_read_with(pipe, StreamConfig::for_pipes(), protocol)
}

/// [`connect_read`] with chosen transport settings; [`connect_read`] uses
/// [`StreamConfig::for_pipes`], which has no write stall timeout.
pub fn connect_read_with<P: IntoProtocol>(
    pipe: impl Into<OwnedFd>,
    config: StreamConfig,
    protocol: impl FnOnce() -> P,
) -> io::Result<(TransportHandle, P::Output)> {
    runtime::require_arbiter("pipe::connect_read")?;
    let pipe = ReadPipe::new(pipe)?;
    let protocol = factory::make(protocol)?;
    Ok(StreamTransport::start(pipe, config, protocol, None))
}

/// Starts a write-pipe transport over `pipe` (a pipe's write end, a FIFO, a socket or a
/// character device) and attaches the protocol `protocol` makes. See [`connect_read`] for what
/// is accepted and for the descriptor's blocking mode.
pub fn connect_write<P: IntoProtocol>(
    pipe: impl Into<OwnedFd>,
    protocol: impl FnOnce() -> P,
) -> io::Result<(TransportHandle, P::Output)> {
    connect_write_with(pipe, StreamConfig::for_pipes(), protocol)
}

/// [`connect_write`] with chosen transport settings; [`connect_write`] uses
/// [`StreamConfig::for_pipes`], which has no write stall timeout: a write waits for a slow
/// reader as long as it takes, as in asyncio.
pub fn connect_write_with<P: IntoProtocol>(
    pipe: impl Into<OwnedFd>,
    config: StreamConfig,
    protocol: impl FnOnce() -> P,
) -> io::Result<(TransportHandle, P::Output)> {
    runtime::require_arbiter("pipe::connect_write")?;
    let pipe = WritePipe::new(pipe)?;
    let protocol = factory::make(protocol)?;
    Ok(StreamTransport::start(pipe, config, protocol, None))
}

/// What a descriptor handed to a pipe transport is; an error for anything that is not a pipe,
/// a FIFO, a socket or a character device.
fn file_type(fd: &OwnedFd) -> io::Result<PipeFileType> {
    let file_type = File::from(fd.try_clone()?).metadata()?.file_type();
    if file_type.is_fifo() {
        Ok(PipeFileType::Fifo)
    } else if file_type.is_char_device() {
        Ok(PipeFileType::CharDevice)
    } else if file_type.is_socket() {
        Ok(PipeFileType::Socket)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a pipe transport is for pipes, FIFOs, sockets and character devices; fd {} is {}",
                fd.as_raw_fd(),
                if file_type.is_dir() {
                    "a directory"
                } else {
                    "a regular file"
                }
            ),
        ))
    }
}

/// Whether `fd` is in blocking mode now.
fn is_blocking(fd: &OwnedFd) -> io::Result<bool> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    Ok(!flags.contains(rustix::fs::OFlags::NONBLOCK))
}

/// The error for a descriptor epoll refuses, with what it means.
fn not_pollable(fd: i32, err: io::Error) -> io::Error {
    if err.kind() == io::ErrorKind::PermissionDenied {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "fd {fd} cannot be watched for readiness (epoll refuses it, as it does /dev/null and regular files): {err}"
            ),
        )
    } else {
        err
    }
}

/// The read end of a pipe as a [`StreamIo`]: what [`connect_read`] runs.
pub struct ReadPipe {
    /// Always `Some` until dropped.
    pipe: Option<Receiver>,
    file_type: PipeFileType,
    restore_blocking: bool,
}

impl ReadPipe {
    /// Wraps a descriptor (see [`connect_read`] for what is accepted). Needs a tokio runtime.
    pub fn new(fd: impl Into<OwnedFd>) -> io::Result<ReadPipe> {
        let fd = fd.into();
        let raw = fd.as_raw_fd();
        let file_type = file_type(&fd)?;
        let restore_blocking = is_blocking(&fd)?;
        // tokio's checked constructor accepts pipes and FIFOs only; terminals and sockets are
        // checked above instead.
        let pipe = match file_type {
            PipeFileType::Fifo => Receiver::from_owned_fd(fd),
            _ => Receiver::from_owned_fd_unchecked(fd),
        }
        .map_err(|err| not_pollable(raw, err))?;
        Ok(ReadPipe {
            pipe: Some(pipe),
            file_type,
            restore_blocking,
        })
    }

    fn pipe(&self) -> &Receiver {
        self.pipe
            .as_ref()
            .expect("a ReadPipe holds its pipe until dropped")
    }
}

impl Drop for ReadPipe {
    fn drop(&mut self) {
        if let Some(pipe) = self.pipe.take()
            && self.restore_blocking
        {
            let _ = pipe.into_blocking_fd();
        }
    }
}

impl fmt::Debug for ReadPipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadPipe")
            .field("fd", &self.pipe.as_ref().map(AsRawFd::as_raw_fd))
            .field("file_type", &self.file_type)
            .finish()
    }
}

impl AsyncRead for ReadPipe {
    /// Reads once the pipe is readable, and waits for readiness again only after a read that
    /// would block. tokio's own `AsyncRead` for the pipe also waits again after a short read,
    /// taking it to mean the pipe is empty; a terminal answers each read with at most one line,
    /// so with edge-triggered readiness the lines after the first (and the EOF) were never read.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let pipe = self.pipe();
        loop {
            ready!(pipe.poll_read_ready(cx))?;
            // A `WouldBlock` clears the readiness, so the next poll waits for it.
            match pipe.try_read_buf(buf) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result.map(drop)),
            }
        }
    }
}

/// Never called by the transport, which refuses writes to a read-only stream.
impl AsyncWrite for ReadPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        _: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(WriteError::ReadOnly.into()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl StreamIo for ReadPipe {
    fn extra_info(&self, name: &str) -> Option<ExtraInfo> {
        (name == keys::PIPE).then(|| {
            ExtraInfo::Pipe(PipeInfo::new(
                self.pipe().as_raw_fd(),
                PipeEnd::Read,
                self.file_type,
            ))
        })
    }

    fn direction(&self) -> Direction {
        Direction::ReadOnly
    }

    fn can_write_eof(&self) -> bool {
        false
    }

    fn drop_closes_after_eof(&self) -> bool {
        true
    }
}

/// Waits until the pipe's read end is closed (epoll reports an error on the write end).
type ReaderClosed = Pin<Box<dyn Future<Output = io::Result<Ready>>>>;

/// The write end of a pipe as a [`StreamIo`]: what [`connect_write`] runs.
pub struct WritePipe {
    /// Shared with `reader_closed`, which waits on it; always `Some` until dropped.
    pipe: Option<Rc<Sender>>,
    reader_closed: Option<ReaderClosed>,
    file_type: PipeFileType,
    restore_blocking: bool,
}

impl WritePipe {
    /// Wraps a descriptor (see [`connect_write`] for what is accepted). Needs a tokio runtime.
    pub fn new(fd: impl Into<OwnedFd>) -> io::Result<WritePipe> {
        let fd = fd.into();
        let raw = fd.as_raw_fd();
        let file_type = file_type(&fd)?;
        let restore_blocking = is_blocking(&fd)?;
        let pipe = match file_type {
            PipeFileType::Fifo => Sender::from_owned_fd(fd),
            _ => Sender::from_owned_fd_unchecked(fd),
        }
        .map_err(|err| not_pollable(raw, err))?;
        Ok(WritePipe {
            pipe: Some(Rc::new(pipe)),
            reader_closed: None,
            file_type,
            restore_blocking,
        })
    }

    fn pipe(&self) -> &Sender {
        self.pipe
            .as_ref()
            .expect("a WritePipe holds its pipe until dropped")
    }

    /// Writes with `write` once the pipe is writable. tokio's `Sender` is `AsyncWrite` only by
    /// value, and this one is shared with the wait for the reader closing.
    fn poll_write_with<T>(
        &self,
        cx: &mut TaskContext<'_>,
        write: impl Fn(&Sender) -> io::Result<T>,
    ) -> Poll<io::Result<T>> {
        let pipe = self.pipe();
        loop {
            ready!(pipe.poll_write_ready(cx))?;
            // A `WouldBlock` clears the readiness, so the next poll waits for it.
            match write(pipe) {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
        }
    }
}

impl Drop for WritePipe {
    fn drop(&mut self) {
        // The wait holds the other reference.
        self.reader_closed = None;
        if let Some(pipe) = self.pipe.take().and_then(Rc::into_inner)
            && self.restore_blocking
        {
            let _ = pipe.into_blocking_fd();
        }
    }
}

impl fmt::Debug for WritePipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WritePipe")
            .field("fd", &self.pipe.as_ref().map(|pipe| pipe.as_raw_fd()))
            .field("file_type", &self.file_type)
            .finish()
    }
}

/// Never called by the transport, which reads nothing from a write-only stream: reads see EOF.
impl AsyncRead for WritePipe {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut TaskContext<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for WritePipe {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |pipe| pipe.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |pipe| pipe.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// A pipe has no half-close: its EOF is closing it, which the transport does by dropping it.
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl StreamIo for WritePipe {
    fn extra_info(&self, name: &str) -> Option<ExtraInfo> {
        (name == keys::PIPE).then(|| {
            ExtraInfo::Pipe(PipeInfo::new(
                self.pipe().as_raw_fd(),
                PipeEnd::Write,
                self.file_type,
            ))
        })
    }

    fn direction(&self) -> Direction {
        Direction::WriteOnly
    }

    fn drop_closes_after_eof(&self) -> bool {
        true
    }

    fn poll_reader_closed(&mut self, cx: &mut TaskContext<'_>) -> Poll<()> {
        let Some(pipe) = &self.pipe else {
            return Poll::Ready(());
        };
        let wait = self.reader_closed.get_or_insert_with(|| {
            let pipe = Rc::clone(pipe);
            Box::pin(async move { pipe.ready(Interest::ERROR).await })
        });
        match ready!(wait.as_mut().poll(cx)) {
            Ok(ready) if !ready.is_error() => {
                // Not the error it waited for: wait again.
                self.reader_closed = None;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            _ => Poll::Ready(()),
        }
    }
}

impl AsFd for WritePipe {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.pipe().as_fd()
    }
}

impl AsFd for ReadPipe {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.pipe().as_fd()
    }
}
