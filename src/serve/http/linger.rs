//! Closing a connection so that the client reads the answer: a "lingering
//! close", as nginx does it.
//!
//! When the server answers before it has read the whole request body (a
//! 413 for a body over the limit; a 401 or 415 decided from the head),
//! hyper closes the connection with the rest of the body unread. A socket
//! closed with unread bytes in its receive buffer makes the kernel send a
//! reset instead of an orderly end, and a reset makes the client's kernel
//! throw away what it has received but not yet read: often the very
//! answer that said why. So when the last request's body was not read to
//! its end, closing here means: end the sending side (the client gets the
//! whole answer, then the end of the stream), then read and discard what
//! the client still sends until it closes too, for at most [`LINGER_BYTES`]
//! and [`LINGER_TIME`], so a client that keeps sending is cut off all the
//! same. Every other close is an ordinary one.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

/// The most of an unread body read and thrown away before closing: more
/// than a client that sends a few times the limit before reading its
/// answer would send, little beside the memory and time it bounds.
pub const LINGER_BYTES: u64 = 16 * 1024 * 1024;
/// The longest a close waits for the client to stop sending.
pub const LINGER_TIME: Duration = Duration::from_secs(3);

/// Whether the connection's latest request has a body not read to its end;
/// set and cleared by the body ([`UnreadBody::watch`]), read at close.
#[derive(Debug, Clone, Default)]
pub struct UnreadBody(Arc<AtomicBool>);

impl UnreadBody {
    /// `body`, telling this flag when it has been read to its end.
    pub fn watch<B>(&self, body: B) -> Watched<B>
    where
        B: Body + Unpin,
    {
        self.set(!body.is_end_stream());
        Watched {
            inner: body,
            unread: self.clone(),
        }
    }

    fn set(&self, unread: bool) {
        self.0.store(unread, Ordering::Relaxed);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A request body that clears its [`UnreadBody`] once read to its end.
#[derive(Debug)]
pub struct Watched<B> {
    inner: B,
    unread: UnreadBody,
}

impl<B: Body + Unpin> Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if frame.is_none() || self.inner.is_end_stream() {
            self.unread.set(false);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A connection's socket, whose shutdown lingers after an unread body.
#[derive(Debug)]
pub struct LingeringClose {
    stream: TcpStream,
    unread: UnreadBody,
    linger: Option<Linger>,
}

impl LingeringClose {
    pub fn new(stream: TcpStream, unread: UnreadBody) -> LingeringClose {
        LingeringClose {
            stream,
            unread,
            linger: None,
        }
    }
}

/// A close under way: the sending side, then the drain.
#[derive(Debug)]
struct Linger {
    deadline: Pin<Box<Sleep>>,
    sending_ended: bool,
    drained: u64,
    scratch: Box<[u8]>,
}

impl Linger {
    fn start() -> Linger {
        Linger {
            deadline: Box::pin(tokio::time::sleep(LINGER_TIME)),
            sending_ended: false,
            drained: 0,
            scratch: vec![0; 64 * 1024].into_boxed_slice(),
        }
    }

    /// Ends the sending side, then reads until the client ends its own, or
    /// the bytes or the time run out; the connection may close then.
    fn poll_close(&mut self, stream: &mut TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.sending_ended {
            ready!(Pin::new(&mut *stream).poll_shutdown(cx))?;
            self.sending_ended = true;
        }
        loop {
            if self.deadline.as_mut().poll(cx).is_ready() || self.drained >= LINGER_BYTES {
                return Poll::Ready(Ok(()));
            }
            let mut buffer = ReadBuf::new(&mut self.scratch);
            match ready!(Pin::new(&mut *stream).poll_read(cx, &mut buffer)) {
                Ok(()) if buffer.filled().is_empty() => return Poll::Ready(Ok(())),
                Ok(()) => self.drained += buffer.filled().len() as u64,
                // Reset by the client: nothing is left to deliver.
                Err(_) => return Poll::Ready(Ok(())),
            }
        }
    }
}

impl AsyncRead for LingeringClose {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LingeringClose {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.linger.is_none() && !this.unread.is_set() {
            return Pin::new(&mut this.stream).poll_shutdown(cx);
        }
        let linger = this.linger.get_or_insert_with(Linger::start);
        linger.poll_close(&mut this.stream, cx)
    }
}
