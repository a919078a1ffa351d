//! The peer client: asks the node that owns a key for it, asks a peer what it speaks, and
//! sends removals, over the connections of its pool.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{Full, Limited};
use hyper::body::Incoming;
use prost::Message as _;
use sha2::{Digest as _, Sha256};

use super::auth::{AUTH_HEADER, PeerAuth};
use super::body::read_all;
pub(crate) use super::error::PeerError;
use super::figures::{PeerFigures, PeerTable, RequestKind};
pub(crate) use super::pool::Speaks;
use super::pool::{Lent, PeerInfo, Pool};
use crate::error::ErrorKind;
use crate::protocol::{
    ERROR_HEADER, EXTENSIONS_HEADER, GetResponse, MAX_VALUE_HEADER, NOT_FOUND_STATUS, RING_HEADER,
    RING_KIND_HEADER, TOO_LARGE, batch_signed_target, error_kind, push_escaped,
};
use crate::ring::RingKind;
use crate::stats::PeerStats;

/// What a peer answered.
#[derive(Debug)]
pub(crate) enum Fetched {
    Value(GetResponse),
    NotFound,
    /// The owner's data source failed (a node of this crate says so): asking it again, or
    /// loading here, would call a failing back end once more.
    Failed {
        kind: ErrorKind,
        message: String,
    },
}

/// Settings of the peer client.
#[derive(Debug, Clone)]
pub(crate) struct ClientConfig {
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    /// An idle connection older than this is closed.
    pub(crate) idle_timeout: Duration,
    pub(crate) max_value_bytes: usize,
    /// The most connections open to one peer, in use and idle.
    pub(crate) max_connections_per_peer: usize,
    /// The ring this node places keys on, told to peers ([`RING_KIND_HEADER`]) unless it is
    /// golang's.
    pub(crate) ring_kind: RingKind,
}

impl ClientConfig {
    /// The value of [`MAX_VALUE_HEADER`] on gets.
    fn max_value_header(&self) -> HeaderValue {
        HeaderValue::from(self.max_value_bytes as u64)
    }
}

/// The most of a reply to a `DELETE` that is read (the reply is empty).
pub(super) const DELETE_BODY_LIMIT: usize = 64 << 10;
/// The most of an error reply's text that is read.
pub(super) const ERROR_BODY_LIMIT: usize = 4 << 10;

/// The peer client: keep-alive HTTP/1.1 connections of its own, one idle list per peer.
///
/// It is built on hyper's connection API rather than a general-purpose pooled client: a fetch
/// takes the peer's most recently used idle connection (one short lock, no hashing of the
/// URI), sends an origin-form request on it, and gives it back once the answer is read in
/// full. A connection that failed, timed out or was left half-read is closed, never reused.
///
/// Each request holds one of its peer's connection slots (a semaphore permit) from checkout
/// until its connection is back in the idle list or closed. A request takes an idle
/// connection before it opens one, so the connections open to a peer, in use and idle, never
/// outnumber the slots; a request that finds them all taken waits for one, within its timeout.
pub(crate) struct PeerClient {
    pub(super) pool: Pool,
    pub(super) config: ClientConfig,
    max_value_header: HeaderValue,
    /// [`RING_KIND_HEADER`]'s value, on a ring other than golang's: requests from a golang
    /// ring stay as they always were.
    ring_kind_header: Option<HeaderValue>,
    auth: Option<Arc<PeerAuth>>,
    /// The figures of the peers on the ring.
    figures: PeerTable,
}

/// The peer of one request: its URL, and its figures if it is on the ring (looked up once
/// per request).
pub(super) struct To<'a> {
    pub(super) url: &'a str,
    figures: Option<Arc<PeerFigures>>,
}

impl To<'_> {
    /// Counts the body bytes of an answer.
    pub(super) fn received(&self, bytes: usize) {
        if let Some(figures) = &self.figures {
            figures.received(bytes);
        }
    }
}

impl fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What a peer request names: `{base_path}{group}/{key}`, `{base_path}{group}` alone, or
/// the base path alone; with `key_in_query`, `{base_path}{group}?key={key}` (a removal: a Go
/// node reads no key in it, and loads nothing).
#[derive(Clone, Copy)]
pub(super) struct PeerPath<'a> {
    pub(super) base_path: &'a str,
    pub(super) group: Option<&'a str>,
    pub(super) key: Option<&'a str>,
    pub(super) key_in_query: bool,
    /// A write's time to live, in the query after the key.
    pub(super) ttl_ms: Option<u64>,
    /// `?remove` after the group: a batched removal.
    pub(super) remove: bool,
}

impl<'a> PeerPath<'a> {
    /// `{base_path}{group}`, or the base path alone: no key, no query.
    pub(super) fn new(base_path: &'a str, group: Option<&'a str>) -> Self {
        Self {
            base_path,
            group,
            key: None,
            key_in_query: false,
            ttl_ms: None,
            remove: false,
        }
    }

    /// The escaped origin-form target. Built again for a retry rather than cloned: a clone
    /// of a `Uri` made from a `String` allocates to share its bytes.
    fn uri(&self) -> Result<Uri, PeerError> {
        let escaped = 3 * (self.group.map_or(0, str::len) + self.key.map_or(0, str::len)) + 5;
        let mut path = String::with_capacity(self.base_path.len() + escaped);
        path.push_str(self.base_path);
        if let Some(group) = self.group {
            push_escaped(&mut path, group);
            if self.remove {
                path.push_str("?remove");
            }
            if let Some(key) = self.key {
                path.push_str(if self.key_in_query { "?key=" } else { "/" });
                push_escaped(&mut path, key);
                if let Some(ttl_ms) = self.ttl_ms {
                    path.push_str("&ttl_ms=");
                    path.push_str(&ttl_ms.to_string());
                }
            }
        }
        // From the `String` itself: its bytes become the URI's without a copy.
        Uri::try_from(path).map_err(PeerError::Uri)
    }
}

impl PeerClient {
    pub(crate) fn new(
        config: ClientConfig,
        auth: Option<Arc<PeerAuth>>,
        #[cfg(feature = "tls")] tls: rustls::ClientConfig,
    ) -> Self {
        Self {
            pool: Pool::new(
                config.connect_timeout,
                config.idle_timeout,
                config.max_connections_per_peer,
                #[cfg(feature = "tls")]
                tls,
            ),
            max_value_header: config.max_value_header(),
            ring_kind_header: (config.ring_kind != RingKind::Golang)
                .then(|| HeaderValue::from_static(config.ring_kind.name())),
            config,
            auth,
            figures: PeerTable::default(),
        }
    }

    /// The peer timeout: the bound of a whole exchange with a peer.
    pub(crate) fn timeout(&self) -> Duration {
        self.config.timeout
    }

    /// Forgets the connections to peers that are not in `peers` any more, and the figures of
    /// those that are not in `peers` or are `self_url`; a new peer's figures start at zero.
    pub(crate) fn retain_peers(&self, peers: &[String], self_url: Option<&str>) {
        self.pool.retain_peers(peers);
        self.figures.retain_peers(
            peers
                .iter()
                .map(String::as_str)
                .filter(|peer| Some(*peer) != self_url),
        );
    }

    /// Counts `keys` fetches from `peer` skipped because it was failing.
    pub(crate) fn skipped(&self, peer: &str, keys: usize) {
        self.figures.skipped(peer, keys);
    }

    /// The figures of every peer on the ring but this node, sorted by URL.
    pub(crate) fn peer_stats(&self) -> Vec<PeerStats> {
        self.figures.snapshot()
    }

    /// The peer `url`, for one request.
    pub(super) fn to<'a>(&self, url: &'a str) -> To<'a> {
        To {
            url,
            figures: self.figures.of(url),
        }
    }

    /// `GET {peer}{base_path}{group}/{key}`, bounded by the request timeout as a whole.
    pub(crate) async fn fetch(
        &self,
        peer: &str,
        base_path: &str,
        group: &str,
        key: &str,
        ring_fingerprint: &HeaderValue,
    ) -> Result<Fetched, PeerError> {
        let path = PeerPath {
            key: Some(key),
            ..PeerPath::new(base_path, Some(group))
        };
        let to = self.to(peer);
        self.bounded(&to, RequestKind::Get, self.get(&to, path, ring_fingerprint))
            .await
    }

    /// What `peer` speaks, as its last answer told, without asking it.
    pub(crate) fn known_speaks(&self, peer: &str) -> Speaks {
        self.pool.speaks(peer)
    }

    /// What `peer` speaks, as its last answer told; a peer that has not answered yet is
    /// [probed](Self::probe).
    pub(crate) async fn speaks(
        &self,
        peer: &str,
        base_path: &str,
        ring_fingerprint: &HeaderValue,
    ) -> Result<Speaks, PeerError> {
        let known = self.pool.speaks(peer);
        if known != Speaks::Unknown {
            return Ok(known);
        }
        match self.probe(peer, base_path, ring_fingerprint).await? {
            (Speaks::Unknown, status) => Err(PeerError::Status(status)),
            (speaks, _) => Ok(speaks),
        }
    }

    /// Learns what `peer` speaks from `response` ([`PeerInfo::learn`]). A plain node (a Go
    /// node) newly seen while this node is on a ring other than golang's is logged: Go nodes
    /// know only golang's ring, so the two place keys differently and keys load twice.
    pub(super) fn learn(
        &self,
        info: &PeerInfo,
        peer: &str,
        response: &Response<Incoming>,
        plain_status: StatusCode,
    ) {
        if info.learn(response, plain_status) && self.config.ring_kind != RingKind::Golang {
            tracing::warn!(
                %peer,
                ring = self.config.ring_kind.name(),
                "a peer answers as a golang/groupcache node (without x-groupcache-extensions), \
                 but this node places keys on the {} ring, which Go nodes do not know: keys \
                 load on several nodes. A cluster with Go nodes must use golang's ring",
                self.config.ring_kind.name(),
            );
        }
    }

    /// Asks `peer` for `GET {base_path}`, which a node of this crate answers with
    /// [`EXTENSIONS_HEADER`] and a Go node with `400`, neither loading anything. Returns what
    /// the answer tells, and its status.
    pub(crate) async fn probe(
        &self,
        peer: &str,
        base_path: &str,
        ring_fingerprint: &HeaderValue,
    ) -> Result<(Speaks, StatusCode), PeerError> {
        let path = PeerPath::new(base_path, None);
        let to = self.to(peer);
        self.bounded(&to, RequestKind::Probe, async {
            let (response, lent, info) = self
                .send(&to, Method::GET, path, &Bytes::new(), ring_fingerprint)
                .await?;
            self.learn(&info, peer, &response, StatusCode::BAD_REQUEST);
            let status = response.status();
            let speaks = if response.headers().contains_key(&EXTENSIONS_HEADER) {
                Speaks::Extensions
            } else if matches!(status, StatusCode::OK | StatusCode::BAD_REQUEST) {
                Speaks::Plain
            } else {
                Speaks::Unknown
            };
            self.read_to_end(&to, response, lent, ERROR_BODY_LIMIT)
                .await?;
            Ok((speaks, status))
        })
        .await
    }

    /// `DELETE {peer}{base_path}{group}?key={key}` (drop one key), or `{group}` alone (drop
    /// the whole source) when `key` is `None`. Only for a peer that [`speaks`](Self::speaks)
    /// the extensions; should a Go node have taken its address since, it answers `400`: it
    /// reads no key in either form, and loads nothing.
    pub(crate) async fn delete(
        &self,
        peer: &str,
        base_path: &str,
        group: &str,
        key: Option<&str>,
        ring_fingerprint: &HeaderValue,
    ) -> Result<(), PeerError> {
        let path = PeerPath {
            key,
            key_in_query: true,
            ..PeerPath::new(base_path, Some(group))
        };
        let to = self.to(peer);
        self.bounded(&to, RequestKind::Removal, async {
            let (response, lent, info) = self
                .send(&to, Method::DELETE, path, &Bytes::new(), ring_fingerprint)
                .await?;
            self.learn(&info, peer, &response, StatusCode::OK);
            // Without the extensions header, the peer changed since it last answered (a Go
            // node took its address): it took the removal for a get, and nothing was removed.
            self.confirmed(&to, response, lent).await
        })
        .await
    }

    /// `exchange`, a request of `kind` to `to`, bounded by the request timeout as a whole;
    /// counted in the peer's figures, and its duration in
    /// `groupcache_peer_request_duration_seconds`, when the peer is on the ring.
    ///
    /// The exchange is boxed here, before the future that waits for it exists: its future
    /// (the connection pool's, hyper's, the body's) is the bulk of every peer request's, and
    /// boxed, the futures that wrap a request (a get's flight, natural batching) stay small
    /// and are not copied kilobytes at a time as they are built and wrapped.
    pub(super) fn bounded<'a, T: 'a>(
        &'a self,
        to: &'a To<'_>,
        kind: RequestKind,
        exchange: impl Future<Output = Result<T, PeerError>> + Send + 'a,
    ) -> impl Future<Output = Result<T, PeerError>> + Send + 'a {
        let exchange: Pin<Box<dyn Future<Output = Result<T, PeerError>> + Send + 'a>> =
            Box::pin(exchange);
        async move {
            let timeout = self.config.timeout;
            let figures = to.figures.as_ref();
            if let Some(figures) = figures {
                figures.request(kind);
            }
            let started = std::time::Instant::now();
            let result = match tokio::time::timeout(timeout, exchange).await {
                Ok(result) => result,
                Err(_) => Err(PeerError::Timeout(timeout)),
            };
            if let Some(figures) = figures {
                let elapsed = started.elapsed();
                figures.ended(elapsed, result.as_ref().err());
                figures.record_duration(elapsed);
            }
            result
        }
    }

    /// A request to a peer, signed when a peer secret is set.
    fn request(
        &self,
        method: Method,
        path: Uri,
        info: &PeerInfo,
        ring_fingerprint: &HeaderValue,
        body: &Bytes,
    ) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(body.clone()));
        let headers = request.headers_mut();
        headers.insert(HOST, info.host.clone());
        if let Some(auth) = &self.auth {
            let seq = info.seq.fetch_add(1, Relaxed);
            // Over the path and the query (a removal names its key in the query), and over
            // the body of a batched get.
            let target = path.path_and_query().map_or(path.path(), |pq| pq.as_str());
            let signed = if method == Method::POST || method == Method::PUT {
                batch_signed_target(target, &Sha256::digest(body))
            } else {
                target.to_owned()
            };
            headers.insert(
                AUTH_HEADER.clone(),
                auth.sign_seq(method.as_str(), &signed, seq),
            );
        }
        headers.insert(RING_HEADER.clone(), ring_fingerprint.clone());
        if let Some(kind) = &self.ring_kind_header {
            headers.insert(RING_KIND_HEADER.clone(), kind.clone());
        }
        if method == Method::GET || method == Method::POST {
            headers.insert(MAX_VALUE_HEADER.clone(), self.max_value_header.clone());
        }
        *request.method_mut() = method;
        *request.uri_mut() = path;
        request
    }

    /// Sends one request to `peer` on an idle connection, or on a new one. A reused connection
    /// that turns out to be closed (the peer closed it while it was idle) is replaced by a new
    /// connection once; peer requests are idempotent, and the retry is signed afresh.
    pub(super) async fn send(
        &self,
        to: &To<'_>,
        method: Method,
        path: PeerPath<'_>,
        body: &Bytes,
        ring_fingerprint: &HeaderValue,
    ) -> Result<(Response<Incoming>, Lent, Arc<PeerInfo>), PeerError> {
        let peer = to.url;
        if let (Some(figures), false) = (&to.figures, body.is_empty()) {
            figures.sent(body.len());
        }
        let first_seq = || self.auth.as_ref().map_or(0, |auth| auth.sequence_block());
        let (mut lent, info) = self.pool.checkout(peer, first_seq).await?;
        let request = self.request(method.clone(), path.uri()?, &info, ring_fingerprint, body);
        match lent.sender.try_send_request(request).await {
            Ok(response) => Ok((response, lent, info)),
            Err(failed) if lent.reused => {
                tracing::debug!(%peer, error = %failed.error(), "idle peer connection failed; reconnecting");
                let mut sender = self.pool.connect(peer).await?;
                let request = self.request(method, path.uri()?, &info, ring_fingerprint, body);
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(PeerError::Request)?;
                Ok((
                    response,
                    Lent {
                        sender,
                        reused: false,
                        slot: lent.slot,
                    },
                    info,
                ))
            }
            Err(failed) => Err(PeerError::Request(failed.into_error())),
        }
    }

    async fn get(
        &self,
        to: &To<'_>,
        path: PeerPath<'_>,
        ring_fingerprint: &HeaderValue,
    ) -> Result<Fetched, PeerError> {
        let (response, lent, info) = self
            .send(to, Method::GET, path, &Bytes::new(), ring_fingerprint)
            .await?;
        self.learn(&info, to.url, &response, StatusCode::OK);
        let extended = response.headers().contains_key(&EXTENSIONS_HEADER);
        match response.status() {
            StatusCode::OK => {}
            NOT_FOUND_STATUS => {
                // No body: the connection is ready for the next request.
                self.pool.release(to.url, lent);
                return Ok(Fetched::NotFound);
            }
            status if extended => {
                let token = response.headers().get(&ERROR_HEADER).cloned();
                let body = self
                    .read_to_end(to, response, lent, ERROR_BODY_LIMIT)
                    .await?;
                return match token {
                    Some(token) if token == TOO_LARGE => Err(PeerError::TooLarge),
                    Some(token) => Ok(Fetched::Failed {
                        kind: error_kind(token.as_bytes()),
                        message: String::from_utf8_lossy(&body).trim_end().to_owned(),
                    }),
                    None => Err(PeerError::Status(status)),
                };
            }
            StatusCode::NOT_FOUND => {
                // Go's `HTTPPool` says `no such group`; anything else came from a router that
                // does not pass the peer path to the peer's cache layer.
                let body = self
                    .read_to_end(to, response, lent, ERROR_BODY_LIMIT)
                    .await?;
                return Err(if body.starts_with(b"no such group") {
                    PeerError::Status(StatusCode::NOT_FOUND)
                } else {
                    PeerError::NotServed
                });
            }
            status => return Err(PeerError::Status(status)),
        }
        // The limit is the value's: the reply may carry a few bytes more around it.
        let limit = self.config.max_value_bytes;
        let body = self
            .read_value(
                to,
                response,
                lent,
                limit.saturating_add(GetResponse::MAX_FRAMING),
            )
            .await?;
        let reply = GetResponse::decode(body).map_err(PeerError::Decode)?;
        if reply
            .value
            .as_ref()
            .is_some_and(|value| value.len() > limit)
        {
            return Err(PeerError::TooLarge);
        }
        Ok(Fetched::Value(reply))
    }

    /// Reads a body of values, at most `limit` bytes (more is [`PeerError::TooLarge`]), and
    /// gives the connection back.
    pub(super) async fn read_value(
        &self,
        to: &To<'_>,
        response: Response<Incoming>,
        lent: Lent,
        limit: usize,
    ) -> Result<Bytes, PeerError> {
        let body = read_all(Limited::new(response.into_body(), limit))
            .await
            .map_err(|error| {
                if error.is::<http_body_util::LengthLimitError>() {
                    PeerError::TooLarge
                } else {
                    PeerError::Body(error)
                }
            })?;
        to.received(body.len());
        self.pool.release(to.url, lent);
        Ok(body)
    }

    /// Reads an answer's body, at most `limit` bytes, and gives the connection back.
    pub(super) async fn read_to_end(
        &self,
        to: &To<'_>,
        response: Response<Incoming>,
        lent: Lent,
        limit: usize,
    ) -> Result<Bytes, PeerError> {
        self.read_value(to, response, lent, limit)
            .await
            .map_err(|error| match error {
                // Not a value: an answer longer than any this node reads is a faulty peer's.
                PeerError::TooLarge => {
                    PeerError::Body(format!("an answer over {limit} bytes").into())
                }
                error => error,
            })
    }
}
