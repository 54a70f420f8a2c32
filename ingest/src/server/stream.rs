//! The TCP stream hyper reads and writes, with two additions: it tells the connection's
//! [`Slot`] when bytes of a request arrive (so a connection mid-request is never shed), and it
//! fails a write that makes no progress for the write timeout.
//!
//! hyper has no write timeout: a client that sends requests but never reads the responses
//! (a pipelined flood) fills the socket buffers, after which hyper waits for writability
//! forever, holding the connection's place and its buffers, and a graceful shutdown waits for
//! it forever too. nginx's `send_timeout` is the model: the timer runs only while a write is
//! blocked, from the last write that made progress.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::registry::Slot;

/// A [`TcpStream`] that marks received requests in its [`Slot`] and times out stuck writes.
pub(super) struct ConnectionStream {
    inner: TcpStream,
    slot: Arc<Slot>,
    write_timeout: Duration,
    /// Armed while a write is blocked; allocated at the first blocked write only.
    write_deadline: Option<Pin<Box<Sleep>>>,
    write_blocked: bool,
}

impl ConnectionStream {
    pub(super) fn new(inner: TcpStream, slot: Arc<Slot>, write_timeout: Duration) -> Self {
        ConnectionStream {
            inner,
            slot,
            write_timeout,
            write_deadline: None,
            write_blocked: false,
        }
    }

    /// Passes a write's outcome through, timing how long writes stay blocked.
    fn watch_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.write_blocked = false;
            return polled;
        }
        if !self.write_blocked {
            self.write_blocked = true;
            let deadline = Instant::now() + self.write_timeout;
            match &mut self.write_deadline {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.write_deadline = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let expired = self
            .write_deadline
            .as_mut()
            .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
        if expired {
            self.slot.set_write_timed_out();
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read the response in time",
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for ConnectionStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let filled_before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > filled_before {
            self.slot.mark_receiving();
        }
        polled
    }
}

impl AsyncWrite for ConnectionStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch_write(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        // Keeps hyper's queued write strategy, which holds one response at a time.
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch_write(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
