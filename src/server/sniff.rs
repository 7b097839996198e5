//! Telling HTTP/2 with prior knowledge from HTTP/1.x on a plain connection, without a busy
//! wait: the first bytes are peeked, and only when they are a strict prefix of the HTTP/2
//! preface (rare) are they read, to be replayed to hyper by [`Prefixed`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The client connection preface of HTTP/2 with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes of a plain connection said.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Sniffed {
    /// HTTP/1.x; nothing was read (the common case: served straight off the socket).
    Http1,
    /// HTTP/1.x whose first bytes were read while telling; they are replayed.
    Http1Read(Prefix),
    /// HTTP/2 with prior knowledge; the preface unread (an empty prefix) or read.
    Http2(Prefix),
}

/// Bytes read off a connection before hyper took it over: at most the preface's length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Prefix {
    buf: [u8; H2_PREFACE.len()],
    len: usize,
}

impl Prefix {
    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Tells HTTP/2 with prior knowledge from HTTP/1.x; `None` when the client closes first.
///
/// A peek decides at once for nearly every connection: an HTTP/1 request starts with a
/// method, and none starts with `PRI ` but the HTTP/2 preface. When the bytes so far are a
/// strict prefix of the preface (a client sending it in pieces, or `POST` arriving a byte at
/// a time), peeking again would return the same bytes at once: the socket stays readable
/// while they sit unread, so waiting by peeking is polling. Those bytes are read instead —
/// a read that finds nothing clears the socket's readiness, and the task sleeps until more
/// arrive — and handed back to hyper through [`Prefixed`]. The caller bounds the whole wait.
pub(super) async fn sniff(stream: &mut TcpStream) -> io::Result<Option<Sniffed>> {
    let mut prefix = Prefix::default();
    let n = stream.peek(&mut prefix.buf).await?;
    if n == 0 {
        return Ok(None);
    }
    if prefix.buf[..n] != H2_PREFACE[..n] {
        return Ok(Some(Sniffed::Http1));
    }
    if n == H2_PREFACE.len() {
        return Ok(Some(Sniffed::Http2(Prefix::default())));
    }
    loop {
        let n = stream.read(&mut prefix.buf[prefix.len..]).await?;
        if n == 0 {
            return Ok(None);
        }
        prefix.len += n;
        if prefix.bytes() != &H2_PREFACE[..prefix.len] {
            return Ok(Some(Sniffed::Http1Read(prefix)));
        }
        if prefix.len == H2_PREFACE.len() {
            return Ok(Some(Sniffed::Http2(prefix)));
        }
    }
}

/// A connection whose first bytes were already read: reads return them first.
pub(super) struct Prefixed<T> {
    prefix: Prefix,
    /// How much of the prefix has been returned.
    pos: usize,
    inner: T,
}

impl<T> Prefixed<T> {
    pub(super) fn new(prefix: Prefix, inner: T) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let rest = &this.prefix.bytes()[this.pos..];
        if rest.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        this.pos += n;
        // Whatever the socket already holds joins the prefix in this read: a short first
        // read would make hyper grow its read buffer for the connection's whole life. A
        // failure shows again on the next read.
        if this.pos == this.prefix.len && buf.remaining() > 0 {
            let _ = Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A loopback connection: the client's end and the server's.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    /// Sends `pieces` with a pause after each, sniffs the server's end, and returns what
    /// the sniff said and what a read through [`Prefixed`] then sees.
    async fn sniff_pieces(pieces: &[&[u8]]) -> (Option<Sniffed>, Vec<u8>) {
        let (mut client, mut server) = pair().await;
        let pieces: Vec<Vec<u8>> = pieces.iter().map(|p| p.to_vec()).collect();
        // Then closes: the sniff may be waiting for more.
        let writer = tokio::spawn(async move {
            for piece in pieces {
                client.write_all(&piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let sniffed = tokio::time::timeout(Duration::from_secs(5), sniff(&mut server))
            .await
            .expect("the sniff decides")
            .unwrap();
        writer.await.unwrap();
        let prefix = match &sniffed {
            Some(Sniffed::Http1Read(p) | Sniffed::Http2(p)) => p.clone(),
            _ => Prefix::default(),
        };
        let mut seen = Vec::new();
        Prefixed::new(prefix, server)
            .read_to_end(&mut seen)
            .await
            .unwrap();
        (sniffed, seen)
    }

    #[tokio::test]
    async fn a_request_that_starts_unlike_the_preface_is_http1_and_nothing_is_read() {
        let (sniffed, seen) = sniff_pieces(&[b"GET / HTTP/1.1\r\n\r\n"]).await;
        assert_eq!(sniffed, Some(Sniffed::Http1));
        assert_eq!(seen, b"GET / HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn post_sent_a_byte_at_a_time_is_http1_with_every_byte_kept() {
        let (sniffed, seen) = sniff_pieces(&[b"P", b"O", b"S", b"T /x HTTP/1.1\r\n\r\n"]).await;
        assert!(
            matches!(&sniffed, Some(Sniffed::Http1Read(p)) if p.bytes() == b"PO"),
            "{sniffed:?}"
        );
        assert_eq!(seen, b"POST /x HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn the_preface_in_pieces_is_http2_with_every_byte_kept() {
        let (sniffed, seen) = sniff_pieces(&[
            &H2_PREFACE[..1],
            &H2_PREFACE[1..5],
            &H2_PREFACE[5..],
            b"frames",
        ])
        .await;
        assert!(
            matches!(&sniffed, Some(Sniffed::Http2(p)) if p.bytes() == H2_PREFACE),
            "{sniffed:?}"
        );
        assert_eq!(seen, [H2_PREFACE, b"frames"].concat());
        let (sniffed, _) = sniff_pieces(&[H2_PREFACE]).await;
        assert_eq!(sniffed, Some(Sniffed::Http2(Prefix::default())));
    }

    #[tokio::test]
    async fn a_client_that_closes_before_the_decision_is_none() {
        assert_eq!(sniff_pieces(&[]).await.0, None);
        assert_eq!(sniff_pieces(&[b"PRI *"]).await.0, None);
    }
}
