//! `server.max_connections`: each listener holds at most that many connections. One more is
//! answered `503 M_UNKNOWN` and closed (a TLS listener closes it at once: a handshake just to
//! refuse would be the very work the cap saves), and counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The open connections of one listener, counted against its cap.
pub(super) struct Cap {
    max: i64,
    open: Gauge,
    refused: Counter,
    /// Refusals still being written and lingered over (see [`Cap::refuse`]).
    refusing: Arc<AtomicUsize>,
}

/// The refusal: a whole HTTP/1.1 answer, with the CORS headers of every answer the sidecar
/// writes itself.
const ANSWER: &[u8] = concat!(
    "HTTP/1.1 503 Service Unavailable\r\n",
    "content-type: application/json\r\n",
    "content-length: 94\r\n",
    "connection: close\r\n",
    "retry-after: 1\r\n",
    "access-control-allow-origin: *\r\n",
    "access-control-allow-methods: GET, HEAD, POST, PUT, DELETE, OPTIONS\r\n",
    "access-control-allow-headers: X-Requested-With, Content-Type, Authorization\r\n",
    "\r\n",
    r#"{"errcode":"M_UNKNOWN","error":"The server has too many connections open; try again shortly."}"#,
)
.as_bytes();

/// Refusals lingered over at once at most; past it, a refused connection is closed without
/// an answer (a flood must not turn the refusals themselves into a load).
const MAX_REFUSING: usize = 1024;

/// How long a refused connection is kept for the client to read the answer.
const LINGER: Duration = Duration::from_secs(1);

impl Cap {
    pub(super) fn new(max: usize, open: Gauge, refused: Counter) -> Self {
        Self {
            max: i64::try_from(max).unwrap_or(i64::MAX),
            open,
            refused,
            refusing: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Takes a place for a new connection; `false` (and nothing taken) when the listener is
    /// full.
    pub(super) fn admit(&self) -> bool {
        if self.open.inc() >= self.max {
            self.open.dec();
            self.refused.inc();
            return false;
        }
        true
    }

    /// Gives back the place of a connection that has ended.
    pub(super) fn release(&self) {
        self.open.dec();
    }

    /// Answers a connection that was not admitted, then closes it. The answer is followed
    /// by a FIN, and what the client sends is read and dropped until it closes (at most
    /// [`LINGER`]): closing a socket with unread bytes sends a reset, which can destroy the
    /// answer before the client has read it.
    pub(super) fn refuse(&self, mut stream: TcpStream, tls: bool) {
        if tls || self.refusing.fetch_add(1, Ordering::Relaxed) >= MAX_REFUSING {
            if !tls {
                self.refusing.fetch_sub(1, Ordering::Relaxed);
            }
            return;
        }
        let refusing = self.refusing.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(LINGER, async {
                stream.write_all(ANSWER).await?;
                stream.shutdown().await?;
                let mut sink = [0u8; 512];
                while stream.read(&mut sink).await? > 0 {}
                Ok::<_, std::io::Error>(())
            })
            .await;
            refusing.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_declares_its_body_length_and_the_body_is_a_matrix_error() {
        let text = std::str::from_utf8(ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let declared: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(declared, body.len());
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["errcode"], "M_UNKNOWN");
    }

    #[test]
    fn places_are_taken_up_to_the_cap_and_given_back() {
        let cap = Cap::new(2, Gauge::default(), Counter::default());
        assert!(cap.admit());
        assert!(cap.admit());
        assert!(!cap.admit());
        assert_eq!(cap.open.get(), 2);
        assert_eq!(cap.refused.get(), 1);
        cap.release();
        assert!(cap.admit());
    }
}
