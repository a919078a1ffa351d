use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use tower_service::Service;

use super::{ResponseBody, ResponseFuture};
use crate::error::BoxError;
use crate::handle::CacheHandle;
use crate::node::Node;
use crate::peer::server;

/// The service of [`GroupcacheLayer`](crate::GroupcacheLayer).
#[derive(Clone)]
pub struct GroupcacheService<S> {
    inner: S,
    node: Arc<Node>,
}

impl<S> GroupcacheService<S> {
    pub(crate) fn new(inner: S, node: Arc<Node>) -> Self {
        Self { inner, node }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, taken out.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for GroupcacheService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupcacheService")
            .field("inner", &self.inner)
            .field("base_path", &self.node.config().base_path)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GroupcacheService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ReqBody: http_body::Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let base_path = &*self.node.config().base_path;
        if request.uri().path().starts_with(base_path) {
            if request.method() == Method::POST || request.method() == Method::PUT {
                // A batched get or a write: its body is read first.
                let (parts, body) = request.into_parts();
                return ResponseFuture::peer(server::serve_with_body(&self.node, parts, body));
            }
            // Answered here: at once for a hit, by a boxed future only for a miss.
            let reply = server::serve(
                &self.node,
                request.method(),
                request.uri(),
                request.headers(),
            );
            return ResponseFuture::peer(reply);
        }
        request
            .extensions_mut()
            .insert(CacheHandle::new(self.node.clone()));
        ResponseFuture::inner(self.inner.call(request))
    }
}
