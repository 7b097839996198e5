//! A response body that holds a guard until it is dropped: hyper drops the body once it has
//! written it to its end (or the connection has ended), which is when a request stops counting
//! as open for its connection (see [`super::h2`] and [`super::idle`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

use crate::matrix::{Body, BodyError};

/// `body`, with `guard` dropped beside it.
pub(super) struct Tracked<G> {
    body: Body,
    _guard: G,
}

impl<G> Tracked<G> {
    pub(super) fn new(body: Body, guard: G) -> Self {
        Self {
            body,
            _guard: guard,
        }
    }
}

impl<G: Unpin> hyper::body::Body for Tracked<G> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
