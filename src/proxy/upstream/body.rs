//! The two bodies of a forwarded exchange: the client's request body on its way to the
//! homeserver ([`Forwarded`], which may not stall), and the homeserver's answer body on its
//! way to the client ([`Answer`], which drives the connection it comes from).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use tokio::sync::oneshot;

use super::Place;
use super::pool::{Conn, Pool};
use crate::matrix::{Body, BodyError};

/// The homeserver's answer body. Polling it lets its connection read on (the connection has
/// no task of its own, see `pool`); when it ends, the connection goes back to the pool, and
/// the request's place under `upstream.max_connections` is given back. Dropped before its
/// end (the client went away), it closes the connection: the rest of the answer would
/// otherwise still be on the wire.
pub(super) struct Answer {
    inner: Incoming,
    /// `None` once it has ended or gone back to the pool.
    conn: Option<Conn>,
    pool: Arc<Pool>,
    place: Option<Place>,
}

impl Answer {
    pub(super) fn new(inner: Incoming, conn: Option<Conn>, pool: Arc<Pool>, place: Place) -> Self {
        let mut answer = Self {
            inner,
            conn,
            pool,
            place: Some(place),
        };
        // No body (HEAD, 204, 304, a zero Content-Length): nobody will poll it.
        if answer.inner.is_end_stream() {
            answer.finish();
        }
        answer
    }

    /// The answer has ended: its place is given back and its connection, once it has
    /// finished the exchange, goes back to the pool.
    fn finish(&mut self) {
        self.place = None;
        if let Some(mut conn) = self.conn.take() {
            // One more poll lets it take in the end of the exchange and ask for the next
            // request. Nothing to wake: it waits in the pool, not for this task.
            if !conn.drive(&mut Context::from_waker(Waker::noop())) && conn.is_idle() {
                self.pool.put(conn);
            }
        }
    }
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        // What the connection has already handed over, else let it read on (which asks the
        // socket, and wakes this task when more arrives) and take what it read.
        let mut polled = Pin::new(&mut this.inner).poll_frame(cx);
        if polled.is_pending() {
            if let Some(conn) = &mut this.conn
                && conn.drive(cx)
            {
                this.conn = None;
            }
            polled = Pin::new(&mut this.inner).poll_frame(cx);
        }
        match &polled {
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.finish(),
            Poll::Ready(Some(Err(_))) => {
                this.conn = None;
                this.place = None;
            }
            _ => {}
        }
        polled.map_err(BodyError::Hyper)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps a request body for its way upstream ([`Forwarded`]). Returns the receiver that
/// completes once the body has been sent to the end (or has failed), or `None` for an empty
/// body, which is sent with the head.
pub(super) fn forwarded(body: Body, idle: Duration) -> (Body, Option<oneshot::Receiver<()>>) {
    // An empty body is never polled: it is sent as soon as the head is.
    if body.is_end_stream() {
        return (body, None);
    }
    let (tx, rx) = oneshot::channel();
    let body = Forwarded {
        inner: body,
        done: Some(tx),
        idle,
        waiting_since: None,
        timer: None,
    };
    (http_body_util::BodyExt::boxed(body), Some(rx))
}

/// A request body on its way upstream. It drops its sender when it ends, which wakes
/// [`forwarded`]'s receiver; and it fails when it has waited `idle` for the client's next
/// part, which makes hyper abandon the upstream request (a client trickling a body would
/// otherwise hold an upstream connection, and a homeserver request, for as long as it
/// likes). Only waiting on the client counts: while the homeserver is slow to read, the body
/// is not polled and its clock does not run. It streams: nothing is held back.
struct Forwarded {
    inner: Body,
    done: Option<oneshot::Sender<()>>,
    idle: Duration,
    /// Since when the client's next part has been awaited.
    waiting_since: Option<tokio::time::Instant>,
    /// Armed the first time a part is awaited, moved on only when it fires, and polled only
    /// then or when another task polls the body: a clock read per wait, not a timer update.
    /// With the waker it was last polled with (the timer wakes that task).
    timer: Option<(Pin<Box<tokio::time::Sleep>>, Waker)>,
}

impl hyper::body::Body for Forwarded {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting_since = None;
                if this.inner.is_end_stream() {
                    this.done = None;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(end) => {
                this.done = None;
                Poll::Ready(end)
            }
            Poll::Pending => {
                let since = *this
                    .waiting_since
                    .get_or_insert_with(tokio::time::Instant::now);
                let deadline = since + this.idle;
                if let Some((timer, waker)) = &this.timer
                    && !timer.is_elapsed()
                    && waker.will_wake(cx.waker())
                {
                    // Armed for this task, at or before the deadline: it will wake us.
                    return Poll::Pending;
                }
                let (timer, waker) = this.timer.get_or_insert_with(|| {
                    (
                        Box::pin(tokio::time::sleep_until(deadline)),
                        cx.waker().clone(),
                    )
                });
                waker.clone_from(cx.waker());
                loop {
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if deadline <= tokio::time::Instant::now() {
                        this.done = None;
                        return Poll::Ready(Some(Err(BodyError::Idle(this.idle))));
                    }
                    timer.as_mut().reset(deadline);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
