use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::protocol::ReplyBody;

pin_project! {
    /// The response body of [`GroupcacheService`](crate::GroupcacheService): the inner
    /// service's body, or a peer reply.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Peer { body: ReplyBody },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn peer(body: ReplyBody) -> Self {
        Self {
            kind: Kind::Peer { body },
        }
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Inner { .. } => "Inner",
            Kind::Peer { .. } => "Peer",
        };
        f.debug_struct("ResponseBody").field("kind", &kind).finish()
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Peer { body } => {
                Poll::Ready(body.next_piece().map(|data| Ok(Frame::data(data))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Peer { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Peer { body } => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn pieces_are_sent_as_they_are() {
        let value = Bytes::from(vec![1u8; 1000]);
        let body = ReplyBody::new([Bytes::from_static(b"ab"), value.clone()]);
        assert_eq!(body.size_hint().exact(), Some(1002));
        let mut body = ResponseBody::<http_body_util::Empty<Bytes>>::peer(body);
        let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(first, "ab");
        let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(second.as_ptr(), value.as_ptr(), "no copy of the value");
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
    }
}
