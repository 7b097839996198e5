//! HTTP/2 connections: closed once idle, which hyper does not do for HTTP/2. Every request
//! holds its connection open from its head until its response body is dropped (sent, or
//! reset); a connection with none open for `server.http2_idle_timeout` gets a GOAWAY.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The requests open on one connection.
pub(super) struct Streams {
    open: watch::Sender<usize>,
}

impl Streams {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            open: watch::Sender::new(0),
        })
    }

    /// A request began: the connection is busy until the returned guard is dropped.
    pub(super) fn open(self: &Arc<Self>) -> OpenStream {
        self.open.send_modify(|n| *n += 1);
        OpenStream(self.clone())
    }

    /// Resolves once no request has been open for `idle`, or, when none has come at all,
    /// at `first_deadline`; says whether any request came.
    async fn idle(&self, first_deadline: Instant, idle: Duration) -> bool {
        let mut open = self.open.subscribe();
        let mut deadline = first_deadline;
        let mut served = false;
        loop {
            if *open.borrow_and_update() == 0 {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => return served,
                    _ = open.changed() => {}
                }
            } else {
                let _ = open.changed().await;
            }
            // Every change (a request opened or ended) starts the idle time again.
            served = true;
            deadline = Instant::now() + idle;
        }
    }
}

/// Holds one request open on its connection (see [`Streams::open`]).
pub(super) struct OpenStream(Arc<Streams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n -= 1);
    }
}

/// How long an HTTP/2 connection is served, and how it ends.
pub(super) struct Lifetime {
    /// Without a first request by then, the connection is dropped.
    pub(super) first_deadline: Instant,
    /// With no request open for this long, it gets a GOAWAY.
    pub(super) idle: Duration,
    /// After an idle GOAWAY, the time it has to close before it is dropped (a client that
    /// never answers the GOAWAY's PING would otherwise keep it).
    pub(super) closing: Duration,
}

/// Serves an HTTP/2 connection (`conn`, with `graceful_shutdown` its GOAWAY) until it ends,
/// is idle past its [`Lifetime`], or the listener stops (`stop` turns true).
pub(super) async fn serve<C, F>(
    conn: C,
    graceful_shutdown: F,
    streams: &Streams,
    mut stop: watch::Receiver<bool>,
    lifetime: Lifetime,
) -> Result<(), hyper::Error>
where
    C: Future<Output = Result<(), hyper::Error>>,
    F: FnOnce(Pin<&mut C>),
{
    let mut conn = pin!(conn);
    let stopping = tokio::select! {
        result = conn.as_mut() => return result,
        // A dropped sender (the server is gone) stops too.
        _ = stop.wait_for(|stop| *stop) => true,
        served = streams.idle(lifetime.first_deadline, lifetime.idle) => {
            if !served {
                tracing::debug!("no request head within header_read_timeout; closing");
                return Ok(());
            }
            false
        }
    };
    graceful_shutdown(conn.as_mut());
    if stopping {
        // The listener's drain bounds this (server.shutdown_grace).
        return conn.await;
    }
    tracing::debug!("HTTP/2 connection idle; closing");
    tokio::time::timeout(lifetime.closing, conn)
        .await
        .unwrap_or(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_end_of_the_last_request() {
        let streams = Streams::new();
        let start = Instant::now();
        let idle = Duration::from_secs(10);
        let watcher = {
            let streams = streams.clone();
            tokio::spawn(async move {
                let served = streams.idle(start + Duration::from_secs(3), idle).await;
                (served, start.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let first = streams.open();
        let second = streams.open();
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(first);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!watcher.is_finished(), "one request is still open");
        drop(second);
        let (served, at) = watcher.await.unwrap();
        assert!(served);
        assert_eq!(at, Duration::from_secs(71));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_request_the_first_deadline_ends_it() {
        let streams = Streams::new();
        let start = Instant::now();
        let served = streams
            .idle(start + Duration::from_secs(3), Duration::from_secs(10))
            .await;
        assert!(!served);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }
}
