//! The peer client: fetches a key from the node that owns it, over keep-alive connections of
//! its own.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use prost::Message as _;
use rustc_hash::FxHashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service as _;

use crate::auth::{AUTH_HEADER, PeerAuth};
use crate::protocol::{GetResponse, push_escaped};

/// The status by which a node of this crate says the data source has no value for the key.
/// A Go node treats it as any non-200: an error, after which it loads the key itself.
pub(crate) const NOT_FOUND_STATUS: StatusCode = StatusCode::NO_CONTENT;

/// The header that carries the sender's ring fingerprint (8 hex digits). Go nodes ignore it.
pub(crate) static RING_HEADER: HeaderName = HeaderName::from_static("x-groupcache-ring");

/// What a peer answered.
#[derive(Debug)]
pub(crate) enum Fetched {
    Value(GetResponse),
    NotFound,
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

#[cfg(feature = "tls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;

type Sender = http1::SendRequest<Empty<Bytes>>;

/// Idle connections kept per peer; more are closed when they come back.
const MAX_IDLE_PER_PEER: usize = 64;
/// The most of a reply to a `DELETE` that is read (the reply is empty).
const DELETE_BODY_LIMIT: usize = 64 << 10;
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
    auth: Option<Arc<PeerAuth>>,
}

/// The idle lists, by peer URL.
type Pool = Mutex<FxHashMap<Box<str>, PeerConns>>;

/// One peer's address and idle connections.
struct PeerConns {
    /// `scheme://authority`, to connect to.
    target: Uri,
    /// The `Host` header of requests to it.
    host: HeaderValue,
    /// Oldest first.
    idle: VecDeque<Idle>,
    /// One permit per connection slot; a request holds one for its whole exchange.
    slots: Arc<Semaphore>,
}

struct Idle {
    sender: Sender,
    since: Instant,
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // No code panics while holding this lock, so a poisoned lock holds consistent data.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a peer request names: `{base_path}{group}/{key}`, or `{base_path}{group}` alone.
#[derive(Clone, Copy)]
struct PeerPath<'a> {
    base_path: &'a str,
    group: &'a str,
    key: Option<&'a str>,
}

impl PeerPath<'_> {
    /// The escaped origin-form target. Built again for a retry rather than cloned: a clone
    /// of a `Uri` made from a `String` allocates to share its bytes.
    fn uri(&self) -> Result<Uri, PeerError> {
        let escaped = 3 * (self.group.len() + self.key.map_or(0, str::len)) + 1;
        let mut path = String::with_capacity(self.base_path.len() + escaped);
        path.push_str(self.base_path);
        push_escaped(&mut path, self.group);
        if let Some(key) = self.key {
            path.push('/');
            push_escaped(&mut path, key);
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
            group,
            key: Some(key),
        };
        let timeout = self.config.timeout;
        tokio::time::timeout(timeout, self.get(peer, path, ring_fingerprint))
            .await
            .map_err(|_| PeerError::Timeout(timeout))?
    }

    /// `DELETE {peer}{base_path}{group}/{key}` (drop one key), or `{group}` alone (drop the
    /// whole source) when `key` is `None`.
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
            group,
            key,
        };
        let timeout = self.config.timeout;
        let exchange = async {
            let (response, lent) = self
                .send(peer, Method::DELETE, path, ring_fingerprint)
                .await?;
            match response.status() {
                StatusCode::OK => {
                    // Read to the end (a peer sends nothing here; a few KiB at most are
                    // read), so that the connection can serve the next request.
                    Limited::new(response.into_body(), DELETE_BODY_LIMIT)
                        .collect()
                        .await
                        .map_err(PeerError::Body)?;
                    self.release(peer, lent);
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
        host: HeaderValue,
        ring_fingerprint: &HeaderValue,
    ) -> Request<Empty<Bytes>> {
        let mut request = Request::new(Empty::new());
        let headers = request.headers_mut();
        headers.insert(HOST, host);
        if let Some(auth) = &self.auth {
            headers.insert(AUTH_HEADER.clone(), auth.sign(method.as_str(), path.path()));
        }
        headers.insert(RING_HEADER.clone(), ring_fingerprint.clone());
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
    ) -> Result<(Response<Incoming>, Lent), PeerError> {
        let (mut lent, host) = self.checkout(peer).await?;
        let request = self.request(method.clone(), path.uri()?, host.clone(), ring_fingerprint);
        match lent.sender.try_send_request(request).await {
            Ok(response) => Ok((response, lent)),
            Err(failed) if lent.reused => {
                tracing::debug!(%peer, error = %failed.error(), "idle peer connection failed; reconnecting");
                let mut sender = self.connect(peer).await?;
                let request = self.request(method, path.uri()?, host, ring_fingerprint);
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
                ))
            }
            Err(failed) => Err(PeerError::Request(failed.into_error())),
        }
    }

    /// A connection slot of the peer, then its most recently used idle connection that is
    /// still open, or a new one. With every slot taken, waits for one to be freed.
    async fn checkout(&self, peer: &str) -> Result<(Lent, HeaderValue), PeerError> {
        let now = Instant::now();
        let idle_timeout = self.config.idle_timeout;
        let (taken, host) = {
            let mut pool = lock(&self.pool);
            let conns = match pool.get_mut(peer) {
                Some(conns) => conns,
                None => pool
                    .entry(peer.into())
                    .or_insert(PeerConns::new(peer, self.config.max_connections_per_peer)?),
            };
            // The common case: a free slot, and the idle connection, under this one lock.
            let taken = match Arc::clone(&conns.slots).try_acquire_owned() {
                Ok(slot) => Ok((slot, conns.take_idle(now, idle_timeout))),
                Err(_) => Err(Arc::clone(&conns.slots)),
            };
            (taken, conns.host.clone())
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
                    host,
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
            host,
        ))
    }

    /// A new connection to `peer`, its task spawned; the task ends when the connection closes
    /// or its last sender is dropped (with the pool, when the cache is dropped).
    async fn connect(&self, peer: &str) -> Result<Sender, PeerError> {
        let target = match lock(&self.pool).get(peer) {
            Some(conns) => conns.target.clone(),
            None => PeerConns::new(peer, 1)?.target,
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
        let (response, lent) = self.send(peer, Method::GET, path, ring_fingerprint).await?;
        match response.status() {
            StatusCode::OK => {}
            NOT_FOUND_STATUS => {
                // No body: the connection is ready for the next request.
                self.release(peer, lent);
                return Ok(Fetched::NotFound);
            }
            status => return Err(PeerError::Status(status)),
        }
        let body: Bytes = Limited::new(response.into_body(), self.config.max_value_bytes)
            .collect()
            .await
            .map_err(PeerError::Body)?
            .to_bytes();
        self.release(peer, lent);
        GetResponse::decode(body)
            .map(Fetched::Value)
            .map_err(PeerError::Decode)
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

    fn new(peer: &str, max_connections: usize) -> Result<Self, PeerError> {
        let uri = Uri::try_from(peer).map_err(PeerError::Uri)?;
        let authority = uri
            .authority()
            .ok_or(PeerError::NoAuthority)?
            .as_str()
            .to_owned();
        let host = HeaderValue::try_from(authority).map_err(|_| PeerError::NoAuthority)?;
        Ok(Self {
            target: uri,
            host,
            idle: VecDeque::new(),
            // `Semaphore::new` panics above its maximum, about 2^61 on 64-bit targets.
            slots: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
        })
    }
}
