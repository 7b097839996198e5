//! Plain HTTP/1.1 connections that hold almost nothing while idle. hyper keeps a connection's
//! read and write buffers (8 KiB each), its cached header map and the room for a request's
//! future for as long as the connection lives, and an idle keep-alive connection is most of a
//! server's connections. Here, once the answer to the last request has been written and
//! nothing more has arrived, hyper's connection is taken apart (`into_parts`): what is left
//! waits for the socket to become readable, and a new hyper connection is built for the next
//! request. Building one costs a few allocations, so a listener lets up to [`WARM_IDLE`] idle
//! connections keep theirs (a client or a proxy in front that reuses a few connections
//! hard pays nothing); past that, idle connections let go at once.
//!
//! The timeouts stay as hyper applies them: an idle connection is closed when no request head
//! has come within `server.header_read_timeout` of the end of the last answer (hyper's own
//! header timer, or ours while hyper's connection is taken apart), and the listener's stop
//! closes an idle connection at once and lets a busy one finish (hyper's graceful shutdown).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::tracked::Tracked;
use crate::matrix::Body;

/// How many idle connections of one listener keep hyper's state (about 18 KiB each).
pub(super) const WARM_IDLE: usize = 64;

/// A listener's idle connections that keep hyper's state, counted against their most
/// ([`WARM_IDLE`]).
pub(super) struct Warm {
    held: AtomicUsize,
    max: usize,
}

impl Default for Warm {
    fn default() -> Self {
        Self::new(WARM_IDLE)
    }
}

impl Warm {
    pub(super) fn new(max: usize) -> Self {
        Self {
            held: AtomicUsize::new(0),
            max,
        }
    }

    fn take(&self) -> Option<WarmPlace<'_>> {
        let mut held = self.held.load(Ordering::Relaxed);
        loop {
            if held >= self.max {
                return None;
            }
            match self.held.compare_exchange_weak(
                held,
                held + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(WarmPlace(self)),
                Err(now) => held = now,
            }
        }
    }
}

/// One idle connection's place under [`WARM_IDLE`], given back when dropped.
struct WarmPlace<'a>(&'a Warm);

impl Drop for WarmPlace<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a connection is doing, as its socket and its service see it. One task polls all of
/// it (hyper's connection, the service's futures, the answer bodies), so the atomics are
/// never contended; they only make it `Send`.
#[derive(Default)]
struct Activity {
    /// Requests whose answer has not been handed to hyper to its end.
    open: AtomicUsize,
    /// Request heads that have arrived.
    heads: AtomicU32,
    /// Bytes have been read since the last answer ended.
    read: AtomicBool,
    /// The last write to the socket is waiting for room.
    write_blocked: AtomicBool,
}

impl Activity {
    /// Nothing to answer, nothing unread, nothing unwritten: hyper's connection is waiting for
    /// the next request and holds nothing that cannot be rebuilt.
    fn is_idle(&self) -> bool {
        self.open.load(Ordering::Relaxed) == 0
            && !self.read.load(Ordering::Relaxed)
            && !self.write_blocked.load(Ordering::Relaxed)
    }

    fn heads(&self) -> u32 {
        self.heads.load(Ordering::Relaxed)
    }
}

/// A request from its head until its answer's body has been handed to hyper to its end (or
/// dropped).
struct Open(Arc<Activity>);

impl Open {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.heads.fetch_add(1, Ordering::Relaxed);
        activity.open.fetch_add(1, Ordering::Relaxed);
        Self(activity.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        // What arrived before this answer ended is hyper's to handle (a pipelined request);
        // what arrives after it is the next request.
        self.0.read.store(false, Ordering::Relaxed);
    }
}

/// The socket, telling [`Activity`] what it reads and whether its writes wait; with the
/// bytes hyper had read but not used when its connection was taken apart, read again first.
struct Watched {
    stream: TcpStream,
    unread: Bytes,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.unread.is_empty() {
            let n = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread[..n]);
            this.unread.advance(n);
            if this.unread.is_empty() {
                // An empty slice would still keep hyper's whole read buffer alive.
                this.unread = Bytes::new();
            }
            this.activity.read.store(true, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.read.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl Watched {
    fn note_write<T>(&self, polled: Poll<T>) -> Poll<T> {
        self.activity
            .write_blocked
            .store(polled.is_pending(), Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.note_write(polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.note_write(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_flush(cx);
        this.note_write(polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// How a stretch of serving by one hyper connection ended.
enum Stretch {
    /// The connection ended (closed, failed, or shut down).
    Ended(Result<(), hyper::Error>),
    /// No request head came in time.
    NoHead,
    /// Idle, and no warm place free: take it apart.
    Idle,
}

/// The settings [`serve`] needs from its listener.
pub(super) struct Settings<'a> {
    pub(super) http1: &'a http1::Builder,
    pub(super) warm: &'a Warm,
    pub(super) header_read_timeout: Duration,
}

/// Serves a plain HTTP/1.1 connection (nothing read from it yet) with `handle` answering each
/// request, until it closes, fails, times out or the listener stops (`stop` turns true).
/// `first_head` is when the first request head must have arrived by.
pub(super) async fn serve<H, F>(
    stream: TcpStream,
    handle: H,
    settings: Settings<'_>,
    first_head: Instant,
    mut stop: watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let tracked = activity.clone();
    let mut service = service_fn(move |request: Request<Incoming>| {
        let open = Open::new(&tracked);
        let response = handle(request);
        async move {
            let Ok(response) = response.await;
            Ok::<_, Infallible>(response.map(|body| Tracked::new(body, open)))
        }
    });
    let mut io = Watched {
        stream,
        unread: Bytes::new(),
        activity: activity.clone(),
    };
    // A dropped sender (the server is gone) stops too.
    let mut stopping = pin!(async move {
        let _ = stop.wait_for(|stop| *stop).await;
    });
    // Until the next request head: closes the connection at the deadline.
    let mut head_timer = pin!(tokio::time::sleep_until(first_head));
    loop {
        let mut conn = Box::new(settings.http1.serve_connection(TokioIo::new(io), service));
        let heads_before = activity.heads();
        let mut awaiting_head = true;
        let mut shutting_down = false;
        let mut warm: Option<WarmPlace<'_>> = None;
        let stretch = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = Pin::new(&mut *conn).poll(cx) {
                return Poll::Ready(Stretch::Ended(result));
            }
            if !shutting_down && stopping.as_mut().poll(cx).is_ready() {
                // Busy: it finishes its request, then closes; idle: it closes now.
                shutting_down = true;
                Pin::new(&mut *conn).graceful_shutdown();
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if awaiting_head {
                if activity.heads() != heads_before {
                    awaiting_head = false;
                } else if head_timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Stretch::NoHead);
                }
            }
            if shutting_down || awaiting_head {
                return Poll::Pending;
            }
            tracing::trace!(
                open = activity.open.load(Ordering::Relaxed),
                read = activity.read.load(Ordering::Relaxed),
                write_blocked = activity.write_blocked.load(Ordering::Relaxed),
                "idle check"
            );
            if !activity.is_idle() {
                warm = None;
            } else if warm.is_none() {
                match settings.warm.take() {
                    Some(place) => warm = Some(place),
                    None => return Poll::Ready(Stretch::Idle),
                }
            }
            Poll::Pending
        })
        .await;
        drop(warm);
        match stretch {
            Stretch::Ended(result) => return result,
            Stretch::NoHead => {
                tracing::debug!("no request head within header_read_timeout; closing");
                return Ok(());
            }
            Stretch::Idle => {
                tracing::trace!("idle: hyper's connection taken apart");
                #[cfg(test)]
                tests::TAKEN_APART.fetch_add(1, Ordering::Relaxed);
            }
        }
        let parts = (*conn).into_parts();
        service = parts.service;
        io = parts.io.into_inner();
        // Its header timer had started: the next head is due within header_read_timeout.
        head_timer
            .as_mut()
            .reset(Instant::now() + settings.header_read_timeout);
        if !parts.read_buf.is_empty() {
            // Part of a pipelined request: hyper goes on with it at once.
            io.unread = parts.read_buf;
            continue;
        }
        // Even empty, hyper's `read_buf` shares (and keeps alive) its whole read buffer, the
        // very thing an idle connection is taken apart to let go of.
        drop(parts.read_buf);
        tokio::select! {
            biased;
            () = &mut stopping => return Ok(()),
            () = &mut head_timer => {
                tracing::debug!("no request head within header_read_timeout; closing");
                return Ok(());
            }
            readable = io.stream.readable() => {
                if readable.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
