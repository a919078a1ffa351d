//! Reading a whole body, as `http_body_util`'s `collect` does but without its list of
//! frames: a body that comes in one frame (as a small answer or request usually does) is its
//! bytes as they came, with no allocation and no copy. A request's body, on the server, is
//! read in a task of its own ([`read_apart`]).

use bytes::{Buf, BufMut as _, Bytes, BytesMut};
use http_body::Body;
use http_body_util::{BodyExt as _, Limited};
use tokio::task::JoinHandle;

use crate::error::BoxError;

/// A request's body, at most `limit` bytes, read in a task of its own (inline when there is no
/// runtime); more than `limit` is a `LengthLimitError`.
///
/// hyper's server hands a request's body over through a channel that wakes the connection's
/// task each time its reader takes a chunk. Read on that task (as a handler, or this layer,
/// reads it), the wake lands on the task that is running, and tokio's multi-thread scheduler
/// takes a task woken while it runs for one that yields: it queues it again and wakes an
/// idle worker to share the work. On an idle node that is two context switches per request.
/// A bare axum handler that read a 935-byte body took 40–47 µs at p50, and 15–22 µs when the
/// body was read in a spawned task (docs/performance.md). From a task of its own, the wake is
/// an ordinary one, and costs nothing of the kind.
pub(crate) async fn read_apart<B>(body: B, limit: usize) -> Result<Bytes, BoxError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let read = read_all(Limited::new(body, limit));
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            // Aborted if the request is dropped first: the reading ends with the request.
            let mut task = AbortOnDrop(runtime.spawn(read));
            match (&mut task.0).await {
                Ok(read) => read,
                Err(failed) => Err(failed.into()),
            }
        }
        Err(_) => read.await,
    }
}

/// A task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The data of `body`, read to its end; trailers are dropped. A body of one data frame is
/// that frame (a `Bytes` frame uncopied); a body of several is copied into one buffer.
pub(crate) async fn read_all<B>(body: B) -> Result<Bytes, B::Error>
where
    B: Body,
{
    let mut body = std::pin::pin!(body);
    let mut whole = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(mut data) = frame?.into_data() else {
            continue;
        };
        if let Some(buffer) = &mut joined {
            buffer.put(data);
        } else if whole.is_empty() {
            // `Bytes` gives itself, uncopied.
            whole = data.copy_to_bytes(data.remaining());
        } else if data.has_remaining() {
            let mut buffer = BytesMut::with_capacity(whole.len() + data.remaining());
            buffer.extend_from_slice(&whole);
            buffer.put(data);
            joined = Some(buffer);
        }
    }
    Ok(joined.map_or(whole, BytesMut::freeze))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body::Frame;
    use http_body_util::StreamBody;

    use super::*;

    fn body_of(frames: Vec<Frame<Bytes>>) -> impl Body<Data = Bytes, Error = Infallible> {
        StreamBody::new(futures_util::stream::iter(
            frames.into_iter().map(Ok::<_, Infallible>),
        ))
    }

    fn data(bytes: &'static [u8]) -> Frame<Bytes> {
        Frame::data(Bytes::from_static(bytes))
    }

    #[tokio::test]
    async fn a_body_reads_as_its_frames_joined_in_order() {
        let cases: Vec<(Vec<Frame<Bytes>>, &[u8])> = vec![
            (vec![], b""),
            (vec![data(b"")], b""),
            (vec![data(b"one")], b"one"),
            (vec![data(b""), data(b"ab"), data(b""), data(b"c")], b"abc"),
            (vec![data(b"ab"), data(b"cd"), data(b"ef")], b"abcdef"),
            (
                vec![
                    data(b"ab"),
                    Frame::trailers(http::HeaderMap::new()),
                    data(b"c"),
                ],
                b"abc",
            ),
        ];
        for (frames, expected) in cases {
            let read = read_all(body_of(frames)).await.expect("infallible");
            assert_eq!(&read[..], expected);
        }
    }

    /// A body of one frame that notes the task that reads it.
    struct Noting(
        Option<Bytes>,
        std::sync::Arc<std::sync::Mutex<Option<tokio::task::Id>>>,
    );

    impl Body for Noting {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            *self.1.lock().expect("not poisoned") = tokio::task::try_id();
            std::task::Poll::Ready(self.0.take().map(|data| Ok(Frame::data(data))))
        }
    }

    #[tokio::test]
    async fn a_request_body_is_read_in_a_task_of_its_own_within_its_limit() {
        let reader = std::sync::Arc::default();
        let body = Noting(
            Some(Bytes::from_static(b"keys")),
            std::sync::Arc::clone(&reader),
        );
        let caller = tokio::spawn(async move {
            let read = read_apart(body, 4).await.expect("within the limit");
            (tokio::task::id(), read)
        });
        let (caller, read) = caller.await.expect("the caller");
        assert_eq!(&read[..], b"keys");
        let reader = reader
            .lock()
            .expect("not poisoned")
            .expect("read in a task");
        assert_ne!(reader, caller, "not on the caller's task");

        let over = read_apart(
            Noting(Some(Bytes::from_static(b"keys")), Default::default()),
            3,
        )
        .await
        .expect_err("over the limit");
        assert!(over.is::<http_body_util::LengthLimitError>());
    }

    #[test]
    fn without_a_runtime_a_request_body_is_read_inline() {
        let body = Noting(Some(Bytes::from_static(b"keys")), Default::default());
        let read = futures_util::FutureExt::now_or_never(read_apart(body, 64));
        assert_eq!(
            read.map(|read| read.ok()),
            Some(Some(Bytes::from_static(b"keys")))
        );
    }

    #[tokio::test]
    async fn a_body_of_one_frame_is_that_frame_uncopied() {
        let frame = Bytes::from(vec![b'v'; 64]);
        let read = read_all(body_of(vec![Frame::data(frame.clone())]))
            .await
            .expect("infallible");
        assert_eq!(read.as_ptr(), frame.as_ptr(), "the same bytes, not a copy");
    }
}
