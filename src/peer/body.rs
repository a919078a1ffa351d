//! Reading a whole body, as `http_body_util`'s `collect` does but without its list of
//! frames: a body that comes in one frame (every small answer and request) is its bytes as
//! they came, with no allocation and no copy.

use bytes::{Buf, BufMut as _, Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt as _;

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

    #[tokio::test]
    async fn a_body_of_one_frame_is_that_frame_uncopied() {
        let frame = Bytes::from(vec![b'v'; 64]);
        let read = read_all(body_of(vec![Frame::data(frame.clone())]))
            .await
            .expect("infallible");
        assert_eq!(read.as_ptr(), frame.as_ptr(), "the same bytes, not a copy");
    }
}
