//! The peer client's connections: keep-alive HTTP/1.1 connections of its own, an idle list
//! and a cap per peer, and what the client knows of each peer.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use rustc_hash::FxHashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service as _;

use super::error::PeerError;
use crate::protocol::EXTENSIONS_HEADER;
use crate::sync::lock;

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

#[cfg(feature = "tls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;

/// A request's body: empty but for a batched get's.
pub(super) type Sender = http1::SendRequest<Full<Bytes>>;

/// Idle connections kept per peer; more are closed when they come back.
const MAX_IDLE_PER_PEER: usize = 64;
/// The longest pause between two sweeps of the idle lists.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// The connections to every peer.
///
/// A fetch takes the peer's most recently used idle connection (one short lock, no hashing of
/// the URI) and gives it back once the answer is read in full. A connection that failed, timed
/// out or was left half-read is closed, never reused. Each request holds one of its peer's
/// connection slots (a semaphore permit) from checkout until its connection is back in the idle
/// list or closed. A request takes an idle connection before it opens one, so the connections
/// open to a peer, in use and idle, never outnumber the slots; a request that finds them all
/// taken waits for one, within its timeout.
pub(super) struct Pool {
    connector: Connector,
    peers: Arc<Peers>,
    /// Whether the task that closes idle connections runs (it starts with the first one).
    sweeping: AtomicBool,
    /// An idle connection older than this is closed.
    idle_timeout: Duration,
    max_connections_per_peer: usize,
}

/// The idle lists, by peer URL.
type Peers = Mutex<FxHashMap<Box<str>, PeerConns>>;

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
pub(super) struct PeerInfo {
    pub(super) host: HeaderValue,
    /// The next sequence number of a signature to this peer. Each peer counts on its own, so
    /// the requests one peer receives from this node are numbered densely, and those in flight
    /// at once (at most its connection slots) are close together: the peer's replay window
    /// takes them in any order. An entry made anew (the peer left the ring and came back)
    /// starts a block above every earlier one (see `PeerAuth::sequence_block`).
    pub(super) seq: AtomicU64,
    /// A [`Speaks`], as its discriminant.
    speaks: AtomicU8,
}

impl PeerInfo {
    pub(super) fn speaks(&self) -> Speaks {
        match self.speaks.load(Relaxed) {
            1 => Speaks::Plain,
            2 => Speaks::Extensions,
            _ => Speaks::Unknown,
        }
    }

    /// Learns what the peer speaks from an answer: [`EXTENSIONS_HEADER`] names a node of this
    /// crate; a `200` without it, or (`plain_status`) Go's answer to a probe, a plain node.
    /// Any other answer without it (a proxy's 502, say) tells nothing. Returns whether this
    /// answer is the one that showed a plain node.
    #[must_use]
    pub(super) fn learn(&self, response: &Response<Incoming>, plain_status: StatusCode) -> bool {
        let speaks = if response.headers().contains_key(&EXTENSIONS_HEADER) {
            Speaks::Extensions
        } else if response.status() == StatusCode::OK || response.status() == plain_status {
            Speaks::Plain
        } else {
            return false;
        };
        let before = self.speaks.swap(speaks as u8, Relaxed);
        speaks == Speaks::Plain && before != Speaks::Plain as u8
    }
}

/// A connection lent to one request, and the slot it takes.
pub(super) struct Lent {
    pub(super) sender: Sender,
    /// Taken from the idle list (it may have been closed by the peer in the meantime).
    pub(super) reused: bool,
    /// Freed when the request ends, whichever way: answered, failed, timed out or dropped.
    pub(super) slot: OwnedSemaphorePermit,
}

impl Pool {
    pub(super) fn new(
        connect_timeout: Duration,
        idle_timeout: Duration,
        max_connections_per_peer: usize,
        #[cfg(feature = "tls")] tls: rustls::ClientConfig,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
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
            peers: Arc::default(),
            sweeping: AtomicBool::new(false),
            idle_timeout,
            max_connections_per_peer,
        }
    }

    /// What `peer` speaks, as its last answer told.
    pub(super) fn speaks(&self, peer: &str) -> Speaks {
        lock(&self.peers)
            .get(peer)
            .map_or(Speaks::Unknown, |conns| conns.info.speaks())
    }

    /// Starts, once, the task that closes connections idle longer than the idle timeout. It
    /// holds the pool weakly and ends at its first sweep after the cache is dropped.
    fn start_sweeping(&self) {
        if self.sweeping.swap(true, Relaxed) {
            return;
        }
        let pool = Arc::downgrade(&self.peers);
        let idle_timeout = self.idle_timeout;
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
    pub(super) fn retain_peers(&self, peers: &[String]) {
        lock(&self.peers).retain(|peer, _| peers.iter().any(|p| **p == **peer));
    }

    /// A connection slot of the peer, then its most recently used idle connection that is
    /// still open, or a new one. With every slot taken, waits for one to be freed.
    /// A new entry's first signature sequence number comes from `first_seq`.
    pub(super) async fn checkout(
        &self,
        peer: &str,
        first_seq: impl FnOnce() -> u64,
    ) -> Result<(Lent, Arc<PeerInfo>), PeerError> {
        let now = Instant::now();
        let idle_timeout = self.idle_timeout;
        let (taken, info) = {
            let mut pool = lock(&self.peers);
            let conns = match pool.get_mut(peer) {
                Some(conns) => conns,
                None => pool.entry(peer.into()).or_insert(PeerConns::new(
                    peer,
                    self.max_connections_per_peer,
                    first_seq(),
                )?),
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
                let idle = lock(&self.peers)
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
    ///
    /// Boxed: a connection's future is large (the connector's, the handshake's), and inline
    /// it would make every request's future as large, to be copied as it is wrapped, for the
    /// few requests that open a connection.
    pub(super) fn connect<'a>(
        &'a self,
        peer: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Sender, PeerError>> + Send + 'a>> {
        Box::pin(self.open(peer))
    }

    /// [`connect`](Self::connect)'s body.
    async fn open(&self, peer: &str) -> Result<Sender, PeerError> {
        let target = match lock(&self.peers).get(peer) {
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
    pub(super) fn release(&self, peer: &str, lent: Lent) {
        let Lent { sender, slot, .. } = lent;
        if sender.is_closed() {
            return;
        }
        {
            let mut pool = lock(&self.peers);
            // Not to an entry made anew after the peer left the ring: its slots count others.
            let Some(conns) = pool
                .get_mut(peer)
                .filter(|conns| Arc::ptr_eq(&conns.slots, slot.semaphore()))
            else {
                return;
            };
            let now = Instant::now();
            conns.close_expired(now, self.idle_timeout);
            if conns.idle.len() >= MAX_IDLE_PER_PEER {
                conns.idle.pop_front();
            }
            conns.idle.push_back(Idle { sender, since: now });
        }
        drop(slot);
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
