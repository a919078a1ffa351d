//! The peer client: fetches a key from the node that owns it, over keep-alive connections of
//! its own.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use prost::Message as _;
use rustc_hash::FxHashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service as _;

use super::auth::{AUTH_HEADER, PeerAuth};
use crate::error::ErrorKind;
use crate::protocol::{
    ERROR_HEADER, EXTENSIONS_HEADER, GetResponse, MAX_VALUE_HEADER, NOT_FOUND_STATUS, RING_HEADER,
    TOO_LARGE, error_kind, push_escaped,
};
use crate::sync::lock;

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

/// Whether a peer speaks this crate's extensions, as its last answer told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Speaks {
    /// It has not answered yet.
    Unknown = 0,
    /// A golang/groupcache node (or anything else without [`EXTENSIONS_HEADER`]): plain gets
    /// only. It would answer any other method as a get, and load the key.
    Plain = 1,
    /// A node of this crate.
    Extensions = 2,
}

impl PeerError {
    fn connect(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Connect(error.into())
    }

    /// Whether the failure says the peer cannot serve this node at all: unreachable, slow,
    /// garbled, refusing its credentials (401, 403), or answering 502, 503 or 504. Any other
    /// status is a healthy peer's answer about this key (a Go node's 301 for a key with `//`,
    /// a 500 when its data source failed), so it does not count toward skipping the peer.
    pub(crate) fn is_peer_fault(&self) -> bool {
        match self {
            Self::Status(status) => matches!(status.as_u16(), 401 | 403 | 502..=504),
            // A healthy peer with a value larger than this node takes.
            Self::TooLarge => false,
            _ => true,
        }
    }
}

/// Why a peer fetch failed. Each one is counted as a peer error and the key is loaded locally.
#[derive(Debug)]
pub(crate) enum PeerError {
    Uri(http::uri::InvalidUri),
    /// The peer's URL names no host (the builder checks peer URLs, so this is a bug).
    NoAuthority,
    Connect(Box<dyn std::error::Error + Send + Sync>),
    Request(hyper::Error),
    Timeout(Duration),
    Status(StatusCode),
    /// A `404` without [`EXTENSIONS_HEADER`] and not Go's `no such group`: the router of the
    /// peer's service answered, not its cache layer (mounted with `route_layer`, or under
    /// `nest`).
    NotServed,
    /// The value is larger than `max_value_bytes`: the owner said so, or it was cut off
    /// while it streamed in.
    TooLarge,
    /// A removal was answered without [`EXTENSIONS_HEADER`]: the peer has no removal.
    Unsupported,
    Body(Box<dyn std::error::Error + Send + Sync>),
    Decode(prost::DecodeError),
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uri(e) => write!(f, "invalid peer request URI: {e}"),
            Self::NoAuthority => f.write_str("the peer URL has no host"),
            Self::Connect(e) => {
                write!(f, "connecting: {e}")?;
                let mut source = e.source();
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
            Self::Request(e) => {
                write!(f, "request failed: {e}")?;
                let mut source = std::error::Error::source(e);
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
            Self::Timeout(t) => write!(f, "no complete answer within {t:?}"),
            Self::Status(s) => write!(f, "server returned: {s}"),
            Self::NotServed => f.write_str(
                "server returned 404 from outside its groupcache layer: the layer is not \
                 reached for the peer path (mounted with `route_layer`, or under `nest`?)",
            ),
            Self::TooLarge => f.write_str("the value is larger than max_value_bytes"),
            Self::Unsupported => f.write_str("the peer does not speak this crate's extensions"),
            Self::Body(e) => write!(f, "reading response body: {e}"),
            Self::Decode(e) => write!(f, "decoding response body: {e}"),
        }
    }
}

impl std::error::Error for PeerError {}

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
}

impl ClientConfig {
    /// The value of [`MAX_VALUE_HEADER`] on gets.
    fn max_value_header(&self) -> HeaderValue {
        HeaderValue::from(self.max_value_bytes as u64)
    }
}

#[cfg(feature = "tls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;

type Sender = http1::SendRequest<Empty<Bytes>>;

/// Idle connections kept per peer; more are closed when they come back.
const MAX_IDLE_PER_PEER: usize = 64;
/// The most of a reply to a `DELETE` that is read (the reply is empty).
const DELETE_BODY_LIMIT: usize = 64 << 10;
/// The most of an error reply's text that is read.
const ERROR_BODY_LIMIT: usize = 4 << 10;
/// The longest pause between two sweeps of the idle lists.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

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
    connector: Connector,
    pool: Arc<Pool>,
    /// Whether the task that closes idle connections runs (it starts with the first one).
    sweeping: AtomicBool,
    config: ClientConfig,
    max_value_header: HeaderValue,
    auth: Option<Arc<PeerAuth>>,
}

/// The idle lists, by peer URL.
type Pool = Mutex<FxHashMap<Box<str>, PeerConns>>;

/// One peer's address and idle connections.
struct PeerConns {
    /// `scheme://authority`, to connect to.
    target: Uri,
    /// What the requests to it share.
    info: Arc<PeerInfo>,
    /// Oldest first.
    idle: VecDeque<Idle>,
    /// One permit per connection slot; a request holds one for its whole exchange.
    slots: Arc<Semaphore>,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// What the requests to one peer share: its `Host` header, the sequence numbers of their
/// signatures, and what it speaks.
struct PeerInfo {
    host: HeaderValue,
    /// The next sequence number of a signature to this peer. Each peer counts on its own, so
    /// the requests one peer receives from this node are numbered densely, and those in flight
    /// at once (at most its connection slots) are close together: the peer's replay window
    /// takes them in any order. An entry made anew (the peer left the ring and came back)
    /// starts a block above every earlier one (see `PeerAuth::sequence_block`).
    seq: AtomicU64,
    /// A [`Speaks`], as its discriminant.
    speaks: AtomicU8,
}

impl PeerInfo {
    fn speaks(&self) -> Speaks {
        match self.speaks.load(Relaxed) {
            1 => Speaks::Plain,
            2 => Speaks::Extensions,
            _ => Speaks::Unknown,
        }
    }

    /// Learns what the peer speaks from an answer: [`EXTENSIONS_HEADER`] names a node of this
    /// crate; a `200` without it, or (`plain_status`) Go's answer to a probe, a plain node.
    /// Any other answer without it (a proxy's 502, say) tells nothing.
    fn learn(&self, response: &Response<Incoming>, plain_status: StatusCode) {
        let speaks = if response.headers().contains_key(&EXTENSIONS_HEADER) {
            Speaks::Extensions
        } else if response.status() == StatusCode::OK || response.status() == plain_status {
            Speaks::Plain
        } else {
            return;
        };
        self.speaks.store(speaks as u8, Relaxed);
    }
}

/// A connection lent to one request, and the slot it takes.
struct Lent {
    sender: Sender,
    /// Taken from the idle list (it may have been closed by the peer in the meantime).
    reused: bool,
    /// Freed when the request ends, whichever way: answered, failed, timed out or dropped.
    slot: OwnedSemaphorePermit,
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
struct PeerPath<'a> {
    base_path: &'a str,
    group: Option<&'a str>,
    key: Option<&'a str>,
    key_in_query: bool,
}

impl PeerPath<'_> {
    /// The escaped origin-form target. Built again for a retry rather than cloned: a clone
    /// of a `Uri` made from a `String` allocates to share its bytes.
    fn uri(&self) -> Result<Uri, PeerError> {
        let escaped = 3 * (self.group.map_or(0, str::len) + self.key.map_or(0, str::len)) + 5;
        let mut path = String::with_capacity(self.base_path.len() + escaped);
        path.push_str(self.base_path);
        if let Some(group) = self.group {
            push_escaped(&mut path, group);
            if let Some(key) = self.key {
                path.push_str(if self.key_in_query { "?key=" } else { "/" });
                push_escaped(&mut path, key);
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
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        #[cfg(feature = "tls")]
        let connector = {
            connector.enforce_http(false);
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .wrap_connector(connector)
        };
        Self {
            connector,
            pool: Arc::default(),
            sweeping: AtomicBool::new(false),
            max_value_header: config.max_value_header(),
            config,
            auth,
        }
    }

    /// Starts, once, the task that closes connections idle longer than the idle timeout. It
    /// holds the pool weakly and ends at its first sweep after the cache is dropped.
    fn start_sweeping(&self) {
        if self.sweeping.swap(true, Relaxed) {
            return;
        }
        let pool = Arc::downgrade(&self.pool);
        let idle_timeout = self.config.idle_timeout;
        let interval = (idle_timeout / 2).clamp(Duration::from_millis(10), MAX_SWEEP_INTERVAL);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(pool) = pool.upgrade() else {
                    return;
                };
                let now = Instant::now();
                for conns in lock(&pool).values_mut() {
                    conns.close_expired(now, idle_timeout);
                    conns.idle.retain(|idle| !idle.sender.is_closed());
                }
            }
        });
    }

    /// Forgets the connections to peers that are not in `peers` any more.
    pub(crate) fn retain_peers(&self, peers: &[String]) {
        lock(&self.pool).retain(|peer, _| peers.iter().any(|p| **p == **peer));
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
            base_path,
            group: Some(group),
            key: Some(key),
            key_in_query: false,
        };
        let timeout = self.config.timeout;
        tokio::time::timeout(timeout, self.get(peer, path, ring_fingerprint))
            .await
            .map_err(|_| PeerError::Timeout(timeout))?
    }

    /// What `peer` speaks, as its last answer told; a peer that has not answered yet is
    /// [probed](Self::probe).
    pub(crate) async fn speaks(
        &self,
        peer: &str,
        base_path: &str,
        ring_fingerprint: &HeaderValue,
    ) -> Result<Speaks, PeerError> {
        let known = lock(&self.pool)
            .get(peer)
            .map_or(Speaks::Unknown, |conns| conns.info.speaks());
        if known != Speaks::Unknown {
            return Ok(known);
        }
        match self.probe(peer, base_path, ring_fingerprint).await? {
            (Speaks::Unknown, status) => Err(PeerError::Status(status)),
            (speaks, _) => Ok(speaks),
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
        let path = PeerPath {
            base_path,
            group: None,
            key: None,
            key_in_query: false,
        };
        let timeout = self.config.timeout;
        let exchange = async {
            let (response, lent, info) =
                self.send(peer, Method::GET, path, ring_fingerprint).await?;
            info.learn(&response, StatusCode::BAD_REQUEST);
            let status = response.status();
            let speaks = if response.headers().contains_key(&EXTENSIONS_HEADER) {
                Speaks::Extensions
            } else if matches!(status, StatusCode::OK | StatusCode::BAD_REQUEST) {
                Speaks::Plain
            } else {
                Speaks::Unknown
            };
            self.read_to_end(peer, response, lent, ERROR_BODY_LIMIT)
                .await?;
            Ok((speaks, status))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| PeerError::Timeout(timeout))?
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
            base_path,
            group: Some(group),
            key,
            key_in_query: true,
        };
        let timeout = self.config.timeout;
        let exchange = async {
            let (response, lent, info) = self
                .send(peer, Method::DELETE, path, ring_fingerprint)
                .await?;
            info.learn(&response, StatusCode::OK);
            if !response.headers().contains_key(&EXTENSIONS_HEADER) {
                // The peer changed since it last answered (a Go node took its address): it
                // took the removal for a get. Nothing was removed.
                return Err(PeerError::Unsupported);
            }
            match response.status() {
                StatusCode::OK => {
                    // Read to the end (a peer sends nothing here; a few KiB at most are
                    // read), so that the connection can serve the next request.
                    self.read_to_end(peer, response, lent, DELETE_BODY_LIMIT)
                        .await?;
                    Ok(())
                }
                status => Err(PeerError::Status(status)),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| PeerError::Timeout(timeout))?
    }

    /// A request to a peer, signed when a peer secret is set.
    fn request(
        &self,
        method: Method,
        path: Uri,
        info: &PeerInfo,
        ring_fingerprint: &HeaderValue,
    ) -> Request<Empty<Bytes>> {
        let mut request = Request::new(Empty::new());
        let headers = request.headers_mut();
        headers.insert(HOST, info.host.clone());
        if let Some(auth) = &self.auth {
            let seq = info.seq.fetch_add(1, Relaxed);
            // Over the path and the query (a removal names its key in the query).
            let signed = path.path_and_query().map_or(path.path(), |pq| pq.as_str());
            headers.insert(
                AUTH_HEADER.clone(),
                auth.sign_seq(method.as_str(), signed, seq),
            );
        }
        headers.insert(RING_HEADER.clone(), ring_fingerprint.clone());
        if method == Method::GET {
            headers.insert(MAX_VALUE_HEADER.clone(), self.max_value_header.clone());
        }
        *request.method_mut() = method;
        *request.uri_mut() = path;
        request
    }

    /// Sends one request to `peer` on an idle connection, or on a new one. A reused connection
    /// that turns out to be closed (the peer closed it while it was idle) is replaced by a new
    /// connection once; peer requests are idempotent, and the retry is signed afresh.
    async fn send(
        &self,
        peer: &str,
        method: Method,
        path: PeerPath<'_>,
        ring_fingerprint: &HeaderValue,
    ) -> Result<(Response<Incoming>, Lent, Arc<PeerInfo>), PeerError> {
        let (mut lent, info) = self.checkout(peer).await?;
        let request = self.request(method.clone(), path.uri()?, &info, ring_fingerprint);
        match lent.sender.try_send_request(request).await {
            Ok(response) => Ok((response, lent, info)),
            Err(failed) if lent.reused => {
                tracing::debug!(%peer, error = %failed.error(), "idle peer connection failed; reconnecting");
                let mut sender = self.connect(peer).await?;
                let request = self.request(method, path.uri()?, &info, ring_fingerprint);
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

    /// A connection slot of the peer, then its most recently used idle connection that is
    /// still open, or a new one. With every slot taken, waits for one to be freed.
    async fn checkout(&self, peer: &str) -> Result<(Lent, Arc<PeerInfo>), PeerError> {
        let now = Instant::now();
        let idle_timeout = self.config.idle_timeout;
        let (taken, info) = {
            let mut pool = lock(&self.pool);
            let conns = match pool.get_mut(peer) {
                Some(conns) => conns,
                None => {
                    let first_seq = self.auth.as_ref().map_or(0, |auth| auth.sequence_block());
                    pool.entry(peer.into()).or_insert(PeerConns::new(
                        peer,
                        self.config.max_connections_per_peer,
                        first_seq,
                    )?)
                }
            };
            // The common case: a free slot, and the idle connection, under this one lock.
            let taken = match Arc::clone(&conns.slots).try_acquire_owned() {
                Ok(slot) => Ok((slot, conns.take_idle(now, idle_timeout))),
                Err(_) => Err(Arc::clone(&conns.slots)),
            };
            (taken, conns.info.clone())
        };
        let (slot, idle) = match taken {
            Ok(taken) => taken,
            Err(slots) => {
                tracing::debug!(%peer, "every connection to the peer is in use; waiting");
                // The caller's timeout bounds the wait; a dropped wait takes no slot.
                let slot = slots
                    .acquire_owned()
                    .await
                    .map_err(|_| PeerError::connect("the peer's connection slots are closed"))?;
                // The request that freed the slot gave its connection back first. The peer
                // may have left the ring meanwhile: its new entry's connections are not ours.
                let idle = lock(&self.pool)
                    .get_mut(peer)
                    .filter(|conns| Arc::ptr_eq(&conns.slots, slot.semaphore()))
                    .and_then(|conns| conns.take_idle(Instant::now(), idle_timeout));
                (slot, idle)
            }
        };
        if let Some(mut sender) = idle {
            // Ready at once unless the connection task has not yet seen the last answer end.
            if std::future::poll_fn(|cx| sender.poll_ready(cx))
                .await
                .is_ok()
            {
                return Ok((
                    Lent {
                        sender,
                        reused: true,
                        slot,
                    },
                    info,
                ));
            }
        }
        let sender = self.connect(peer).await?;
        Ok((
            Lent {
                sender,
                reused: false,
                slot,
            },
            info,
        ))
    }

    /// A new connection to `peer`, its task spawned; the task ends when the connection closes
    /// or its last sender is dropped (with the pool, when the cache is dropped).
    async fn connect(&self, peer: &str) -> Result<Sender, PeerError> {
        let target = match lock(&self.pool).get(peer) {
            Some(conns) => conns.target.clone(),
            None => PeerConns::new(peer, 1, 0)?.target,
        };
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(PeerError::connect)?;
        let io = connector.call(target).await.map_err(PeerError::connect)?;
        let (sender, connection) = http1::handshake(io).await.map_err(PeerError::Request)?;
        self.start_sweeping();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "peer connection ended");
            }
        });
        Ok(sender)
    }

    /// Gives a connection whose last answer was read in full back to the idle list, then
    /// frees its slot: in that order, so that a request woken by the slot finds the
    /// connection rather than opening another.
    fn release(&self, peer: &str, lent: Lent) {
        let Lent { sender, slot, .. } = lent;
        if sender.is_closed() {
            return;
        }
        {
            let mut pool = lock(&self.pool);
            // Not to an entry made anew after the peer left the ring: its slots count others.
            let Some(conns) = pool
                .get_mut(peer)
                .filter(|conns| Arc::ptr_eq(&conns.slots, slot.semaphore()))
            else {
                return;
            };
            let now = Instant::now();
            conns.close_expired(now, self.config.idle_timeout);
            if conns.idle.len() >= MAX_IDLE_PER_PEER {
                conns.idle.pop_front();
            }
            conns.idle.push_back(Idle { sender, since: now });
        }
        drop(slot);
    }

    async fn get(
        &self,
        peer: &str,
        path: PeerPath<'_>,
        ring_fingerprint: &HeaderValue,
    ) -> Result<Fetched, PeerError> {
        let (response, lent, info) = self.send(peer, Method::GET, path, ring_fingerprint).await?;
        info.learn(&response, StatusCode::OK);
        let extended = response.headers().contains_key(&EXTENSIONS_HEADER);
        match response.status() {
            StatusCode::OK => {}
            NOT_FOUND_STATUS => {
                // No body: the connection is ready for the next request.
                self.release(peer, lent);
                return Ok(Fetched::NotFound);
            }
            status if extended => {
                let token = response.headers().get(&ERROR_HEADER).cloned();
                let body = self
                    .read_to_end(peer, response, lent, ERROR_BODY_LIMIT)
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
                    .read_to_end(peer, response, lent, ERROR_BODY_LIMIT)
                    .await?;
                return Err(if body.starts_with(b"no such group") {
                    PeerError::Status(StatusCode::NOT_FOUND)
                } else {
                    PeerError::NotServed
                });
            }
            status => return Err(PeerError::Status(status)),
        }
        let body: Bytes = Limited::new(response.into_body(), self.config.max_value_bytes)
            .collect()
            .await
            .map_err(|error| {
                if error.is::<http_body_util::LengthLimitError>() {
                    PeerError::TooLarge
                } else {
                    PeerError::Body(error)
                }
            })?
            .to_bytes();
        self.release(peer, lent);
        GetResponse::decode(body)
            .map(Fetched::Value)
            .map_err(PeerError::Decode)
    }

    /// Reads an answer's body, at most `limit` bytes, and gives the connection back.
    async fn read_to_end(
        &self,
        peer: &str,
        response: Response<Incoming>,
        lent: Lent,
        limit: usize,
    ) -> Result<Bytes, PeerError> {
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map_err(PeerError::Body)?
            .to_bytes();
        self.release(peer, lent);
        Ok(body)
    }
}

impl PeerConns {
    /// The most recently used idle connection that is still open and not too old; the ones
    /// passed over are closed.
    fn take_idle(&mut self, now: Instant, idle_timeout: Duration) -> Option<Sender> {
        while let Some(idle) = self.idle.pop_back() {
            if !idle.sender.is_closed() && now.duration_since(idle.since) < idle_timeout {
                return Some(idle.sender);
            }
        }
        None
    }

    /// Drops the idle connections older than `idle_timeout`: the oldest are first.
    fn close_expired(&mut self, now: Instant, idle_timeout: Duration) {
        while self
            .idle
            .front()
            .is_some_and(|idle| now.duration_since(idle.since) >= idle_timeout)
        {
            self.idle.pop_front();
        }
    }

    fn new(peer: &str, max_connections: usize, first_seq: u64) -> Result<Self, PeerError> {
        let uri = Uri::try_from(peer).map_err(PeerError::Uri)?;
        let authority = uri
            .authority()
            .ok_or(PeerError::NoAuthority)?
            .as_str()
            .to_owned();
        let host = HeaderValue::try_from(authority).map_err(|_| PeerError::NoAuthority)?;
        Ok(Self {
            target: uri,
            info: Arc::new(PeerInfo {
                host,
                seq: AtomicU64::new(first_seq),
                speaks: AtomicU8::new(Speaks::Unknown as u8),
            }),
            idle: VecDeque::new(),
            // `Semaphore::new` panics above its maximum, about 2^61 on 64-bit targets.
            slots: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
        })
    }
}
