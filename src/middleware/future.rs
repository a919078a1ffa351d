use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use super::ResponseBody;
use crate::peer::server::Reply;

pin_project! {
    /// The response future of [`GroupcacheService`](crate::GroupcacheService).
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] future: F },
        Peer { reply: Option<Reply> },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    pub(crate) fn peer(reply: Reply) -> Self {
        Self {
            kind: Kind::Peer { reply: Some(reply) },
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Inner { .. } => "Inner",
            Kind::Peer { .. } => "Peer",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(response.map(ResponseBody::inner)))
            }
            KindProj::Peer { reply } => {
                if let Some(Reply::Later(future)) = reply {
                    let response = ready!(future.as_mut().poll(cx));
                    *reply = None;
                    return Poll::Ready(Ok(response.map(ResponseBody::peer)));
                }
                match reply.take() {
                    Some(Reply::Ready(response)) => {
                        Poll::Ready(Ok(response.map(ResponseBody::peer)))
                    }
                    _ => panic!("ResponseFuture polled after it completed"),
                }
            }
        }
    }
}
