//! The peer client's requests with a body, this crate's extensions: batched gets, batched
//! removals and writes (docs/protocol.md).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode};
use hyper::body::Incoming;
use prost::Message as _;

use super::client::{DELETE_BODY_LIMIT, ERROR_BODY_LIMIT, PeerClient, PeerPath, To};
use super::error::PeerError;
use super::figures::RequestKind;
use super::pool::Lent;
use crate::protocol::{EXTENSIONS_HEADER, GetManyRequest, GetManyResponse, KeyResult};

impl PeerClient {
    /// `POST {peer}{base_path}{group}` with `keys` (a [`GetManyRequest`]): one result per key,
    /// in order. Only for a peer that [`speaks`](Self::speaks) the extensions. Bounded by the
    /// request timeout as a whole; the reply by this node's value limit, which goes with the
    /// request.
    pub(crate) async fn fetch_many(
        &self,
        peer: &str,
        base_path: &str,
        group: &str,
        keys: &[impl AsRef<str> + Sync],
        ring_fingerprint: &HeaderValue,
    ) -> Result<Vec<KeyResult>, PeerError> {
        let asked = keys.len();
        let to = self.to(peer);
        self.bounded(&to, RequestKind::BatchedGet, async {
            let (response, lent) = self
                .post_keys(&to, base_path, group, keys, false, ring_fingerprint)
                .await?;
            if !response.headers().contains_key(&EXTENSIONS_HEADER) {
                // A Go node took the peer's address since it last answered; it loaded nothing.
                self.read_to_end(&to, response, lent, ERROR_BODY_LIMIT)
                    .await?;
                return Err(PeerError::Unsupported);
            }
            let status = response.status();
            if status != StatusCode::OK {
                self.read_to_end(&to, response, lent, ERROR_BODY_LIMIT)
                    .await?;
                return Err(PeerError::Status(status));
            }
            // The reply holds at most this node's value limit in values, plus each key's
            // few bytes of framing.
            let limit = self
                .config
                .max_value_bytes
                .saturating_add(asked.saturating_mul(64));
            let body = self.read_value(&to, response, lent, limit).await?;
            // Room for every result at once, rather than grown as they are decoded.
            let mut reply = GetManyResponse {
                results: Vec::with_capacity(asked),
            };
            reply.merge(body).map_err(PeerError::Decode)?;
            if reply.results.len() != asked {
                return Err(PeerError::BatchMismatch {
                    asked,
                    answered: reply.results.len(),
                });
            }
            Ok(reply.results)
        })
        .await
    }

    /// `POST {peer}{base_path}{group}?remove` with `keys` (a [`GetManyRequest`]): the peer
    /// drops each key. Only for a peer that [`speaks`](Self::speaks) the extensions.
    pub(crate) async fn delete_many(
        &self,
        peer: &str,
        base_path: &str,
        group: &str,
        keys: &[impl AsRef<str> + Sync],
        ring_fingerprint: &HeaderValue,
    ) -> Result<(), PeerError> {
        let to = self.to(peer);
        self.bounded(&to, RequestKind::Removal, async {
            let (response, lent) = self
                .post_keys(&to, base_path, group, keys, true, ring_fingerprint)
                .await?;
            self.confirmed(&to, response, lent).await
        })
        .await
    }

    /// `PUT {peer}{base_path}{group}?key={key}[&ttl_ms={ttl}]` with `value` as the body: the
    /// owner keeps it as the key's value. Only for a peer that [`speaks`](Self::speaks) the
    /// extensions; a node of an earlier version of this crate (`405`) has no writes.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn put(
        &self,
        peer: &str,
        base_path: &str,
        group: &str,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
        ring_fingerprint: &HeaderValue,
    ) -> Result<(), PeerError> {
        let path = PeerPath {
            key: Some(key),
            key_in_query: true,
            ttl_ms: ttl.map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
            ..PeerPath::new(base_path, Some(group))
        };
        let to = self.to(peer);
        self.bounded(&to, RequestKind::Write, async {
            let (response, lent, info) = self
                .send(&to, Method::PUT, path, &value, ring_fingerprint)
                .await?;
            self.learn(&info, peer, &response, StatusCode::OK);
            match self.confirmed(&to, response, lent).await {
                Err(PeerError::Status(StatusCode::METHOD_NOT_ALLOWED)) => {
                    Err(PeerError::Unsupported)
                }
                other => other,
            }
        })
        .await
    }

    /// `POST {peer}{base_path}{group}[?remove]` with `keys` as a [`GetManyRequest`]; what the
    /// answer says of the peer is learnt.
    async fn post_keys(
        &self,
        to: &To<'_>,
        base_path: &str,
        group: &str,
        keys: &[impl AsRef<str> + Sync],
        remove: bool,
        ring_fingerprint: &HeaderValue,
    ) -> Result<(Response<Incoming>, Lent), PeerError> {
        let body = Bytes::from(GetManyRequest::encode_keys(keys));
        let path = PeerPath {
            remove,
            ..PeerPath::new(base_path, Some(group))
        };
        let (response, lent, info) = self
            .send(to, Method::POST, path, &body, ring_fingerprint)
            .await?;
        self.learn(&info, to.url, &response, StatusCode::OK);
        Ok((response, lent))
    }

    /// An answer that confirms with an empty `200` and the extensions header; without the
    /// header, a Go node answered (it took the peer's address since it last answered, and
    /// loaded nothing).
    pub(super) async fn confirmed(
        &self,
        to: &To<'_>,
        response: Response<Incoming>,
        lent: Lent,
    ) -> Result<(), PeerError> {
        let extended = response.headers().contains_key(&EXTENSIONS_HEADER);
        let status = response.status();
        self.read_to_end(to, response, lent, DELETE_BODY_LIMIT)
            .await?;
        match status {
            _ if !extended => Err(PeerError::Unsupported),
            StatusCode::OK => Ok(()),
            status => Err(PeerError::Status(status)),
        }
    }
}
