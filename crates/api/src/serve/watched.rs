//! What a connection is doing, as far as its limits care: the socket wrapped so that a write
//! pending too long fails (and every byte moved is noted), and response bodies wrapped so that
//! the connection knows when a request is in flight.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// One connection's state, shared by its socket, its response bodies and its idle watch.
pub(crate) struct Activity {
    opened: Instant,
    /// When a byte last moved either way or a response ended, in milliseconds after `opened`.
    last_moved_ms: AtomicU64,
    /// Requests whose response has not ended yet.
    in_flight: AtomicUsize,
    /// Whether a response has ended, which makes the connection a kept-alive one.
    served: AtomicBool,
    first_response: Notify,
    write_pending: AtomicBool,
    write_timed_out: AtomicBool,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            opened: Instant::now(),
            last_moved_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            first_response: Notify::new(),
            write_pending: AtomicBool::new(false),
            write_timed_out: AtomicBool::new(false),
        }
    }

    fn moved(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_moved_ms.store(ms, Ordering::Relaxed);
    }

    /// Marks a request in flight until the returned guard (kept by its response body) is dropped.
    pub(crate) fn request_started(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Busy(Arc::clone(self))
    }

    /// Completes once a response has ended on this connection.
    pub(crate) async fn first_response(&self) {
        while !self.served.load(Ordering::Relaxed) {
            self.first_response.notified().await;
        }
    }

    /// Since when the connection has been idle: no request in flight, no write pending, nothing
    /// moved. `None` while it is busy.
    pub(crate) fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 || self.write_pending.load(Ordering::Relaxed) {
            return None;
        }
        let ms = self.last_moved_ms.load(Ordering::Relaxed);
        Some(self.opened + Duration::from_millis(ms))
    }

    /// Whether the connection ended because a write stayed pending for the write timeout.
    pub(crate) fn write_timed_out(&self) -> bool {
        self.write_timed_out.load(Ordering::Relaxed)
    }
}

/// A request in flight, until its response body is dropped (hyper drops it once it has taken the
/// last byte, or when the connection ends).
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        activity.moved();
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
        if !activity.served.swap(true, Ordering::Relaxed) {
            activity.first_response.notify_one();
        }
    }
}

/// A response body that holds its request's [`Busy`] until it is dropped.
pub(crate) struct Tracked {
    body: Body,
    _busy: Busy,
}

impl Tracked {
    pub(crate) fn new(body: Body, busy: Busy) -> Self {
        Tracked { body, _busy: busy }
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// What to do with a socket whose reader stalled, before it is closed.
pub(crate) trait Discard {
    /// Makes the close drop whatever is still unsent (and reset the connection), instead of
    /// the kernel holding those bytes for a reader that may never take them.
    fn discard_unsent(&self);
}

impl Discard for tokio::net::TcpStream {
    fn discard_unsent(&self) {
        // SO_LINGER with a zero time: close() resets the connection and frees the send buffer.
        let _ = rustix::net::sockopt::set_socket_linger(self, Some(Duration::ZERO));
    }
}

/// A socket whose writes fail once one has been pending for `write_timeout`, and whose every
/// byte moved is noted in the connection's [`Activity`].
pub(crate) struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
    write_timeout: Duration,
    /// Armed while a write is pending; kept between stalls so that it is allocated once.
    stall: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

impl<T> Watched<T> {
    pub(crate) fn new(inner: T, activity: Arc<Activity>, write_timeout: Duration) -> Self {
        Watched {
            inner,
            activity,
            write_timeout,
            stall: None,
            stalled: false,
        }
    }
}

impl<T: Discard> Watched<T> {
    /// Passes on what a write returned, timing the stall while it is pending.
    fn watch(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(result) = polled {
            if self.stalled {
                self.stalled = false;
                self.activity.write_pending.store(false, Ordering::Relaxed);
            }
            if result.as_ref().is_ok_and(|n| *n > 0) {
                self.activity.moved();
            }
            return Poll::Ready(result);
        }
        if !self.stalled {
            self.stalled = true;
            self.activity.write_pending.store(true, Ordering::Relaxed);
            let deadline = Instant::now() + self.write_timeout;
            match &mut self.stall {
                Some(stall) => stall.as_mut().reset(deadline),
                None => self.stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        if let Some(stall) = &mut self.stall {
            ready!(stall.as_mut().poll(cx));
        }
        self.activity.write_timed_out.store(true, Ordering::Relaxed);
        self.inner.discard_unsent();
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client read nothing for {:?}", self.write_timeout),
        )))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.moved();
        }
        polled
    }
}

impl<T: AsyncWrite + Discard + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    // A socket's flush and shutdown do not wait for the client: only writes are timed.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
