//! The cache value, its shared state, and the get flow of DESIGN.md.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::task::{Context, Poll};
use std::time::{Duration, UNIX_EPOCH};

use arc_swap::ArcSwap;
use bytes::Bytes;
use futures_util::FutureExt as _;
use tracing::Instrument as _;

use crate::auth::PeerAuth;
use crate::builder::{GroupcacheBuilder, validate_peers};
use crate::cache::{Entry, Freshness, Tier};
use crate::client::{Fetched, PeerClient};
use crate::clock::Clock;
use crate::discovery::{DnsDiscovery, Resolve};
use crate::error::{ConfigError, Error, ErrorKind};
use crate::group::{Group, Groups, HotKeys};
use crate::handle::CacheHandle;
use crate::health::{PeerHealth, Verdict};
use crate::layer::GroupcacheLayer;
use crate::protocol::GetResponse;
use crate::ring::Ring;
use crate::singleflight::Outcome;
use crate::stats::{CacheStats, ClusterStats, Event, SourceSnapshot, Stats};

/// A distributed read-through cache: this node's share of it, and the way to the others.
///
/// Build one with [`Groupcache::builder`], add [`layer`](Groupcache::layer) to the service's
/// router so peers can reach it, and read through it with a [`CacheHandle`], taken in a
/// handler as an extractor or from [`handle`](Groupcache::handle) anywhere else.
///
/// There is no global state: several caches live side by side in one process, each with its
/// own peers, sources and stats. Cloning is cheap (one `Arc`), and every clone is the same
/// cache.
///
/// ```
/// use axum::{Router, routing::get};
/// use tower_groupcache::{CacheHandle, Groupcache};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cache = Groupcache::builder()
///     .self_url("http://10.0.0.1:8080")
///     .peers(["http://10.0.0.1:8080", "http://10.0.0.2:8080"])
///     .peer_secret("a secret all nodes share: 32 or more random bytes")
///     .source("users", |key: String| async move {
///         Ok::<_, std::io::Error>(format!("user {key}"))
///     })
///     .build()?;
///
/// async fn user(cache: CacheHandle) -> Result<Vec<u8>, String> {
///     let value = cache.get("users", "user:12345").await.map_err(|e| e.to_string())?;
///     Ok(value.to_vec())
/// }
///
/// let app: Router = Router::new().route("/user", get(user)).layer(cache.layer());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Groupcache {
    shared: Arc<Shared>,
}

impl Groupcache {
    /// Starts a builder with the defaults: single-node mode, base path `/_groupcache/`, 64 MiB
    /// per data source, 50 ring replicas.
    pub fn builder() -> GroupcacheBuilder {
        GroupcacheBuilder::default()
    }

    pub(crate) fn from_shared(shared: Shared) -> Self {
        Self {
            shared: Arc::new(shared),
        }
    }

    /// The tower layer that serves the peer path and hands every other request on, with a
    /// [`CacheHandle`] in its extensions.
    pub fn layer(&self) -> GroupcacheLayer {
        GroupcacheLayer::new(self.shared.clone())
    }

    /// A handle for gets outside a request: background jobs, warm-up at start.
    pub fn handle(&self) -> CacheHandle {
        CacheHandle::new(self.shared.clone())
    }

    /// Replaces the peer list. The new ring is built aside and swapped in at once; gets in
    /// progress finish on the ring they started with. This node's own URL is added if missing.
    pub fn set_peers<I, P>(&self, peers: I) -> Result<(), ConfigError>
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.shared
            .set_peers(peers.into_iter().map(Into::into).collect())
    }

    /// Follows the addresses of a DNS name as the peer list, from now until the cache is
    /// dropped. Call it inside a tokio runtime. See [`DnsDiscovery`].
    pub fn discover<R: Resolve>(&self, discovery: DnsDiscovery<R>) -> Result<(), ConfigError> {
        crate::discovery::spawn(discovery, &self.shared)
    }

    /// A snapshot of every data source's counters and caches, and of the cluster.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Stops serving peers and waits for the loads in flight to finish.
    ///
    /// From the call on, peer requests are answered `503 Service Unavailable`, so peers load
    /// this node's keys themselves (and soon skip it, see [`PeerHealthConfig`](crate::PeerHealthConfig)). Gets through
    /// this node's own handles keep working. Call it when the service receives SIGTERM, before
    /// the HTTP server stops; it returns once no load of this node is running.
    pub async fn shutdown(&self) {
        let shared = &self.shared;
        // SeqCst pairs with `LoadDone`: a load that ends after the count below was read
        // non-zero sees `draining` and wakes this loop.
        shared.draining.store(true, SeqCst);
        loop {
            // Registered before the check, so a wake-up between the two is not lost.
            let done = shared.loads_done.notified();
            if shared.loads_in_flight.load(SeqCst) == 0 {
                return;
            }
            done.await;
        }
    }

    /// Copies the current stats into the [`metrics`] facade; see [`crate::metrics`] for
    /// the names. Call it before each scrape, or use
    /// [`export_metrics`](Groupcache::export_metrics).
    pub fn record_metrics(&self) {
        if !self.shared.metrics_described.swap(true, Relaxed) {
            crate::metrics::describe_metrics();
        }
        crate::metrics::record(&self.shared.stats());
    }

    /// Calls [`record_metrics`](Groupcache::record_metrics) every `interval` from now until
    /// the cache is dropped. Call it inside a tokio runtime.
    pub fn export_metrics(&self, interval: Duration) -> Result<(), ConfigError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let weak = Arc::downgrade(&self.shared);
        let mut closed = self.shared.closed.subscribe();
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(10)));
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = closed.changed() => return,
                }
                let Some(shared) = weak.upgrade() else { return };
                Groupcache { shared }.record_metrics();
            }
        });
        Ok(())
    }

    /// Whether [`shutdown`](Groupcache::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.draining.load(Relaxed)
    }

    /// The ring in use now: which node owns which key. It is a snapshot; a later
    /// [`set_peers`](Groupcache::set_peers) does not change it.
    pub fn ring(&self) -> Arc<Ring> {
        self.shared.ring.load_full()
    }

    /// This node's URL, or `None` in single-node mode without one.
    pub fn self_url(&self) -> Option<&str> {
        self.shared.self_url.as_deref()
    }
}

impl fmt::Debug for Groupcache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

/// Settings fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct NodeConfig {
    pub(crate) base_path: Box<str>,
    pub(crate) replicas: usize,
    pub(crate) max_key_bytes: usize,
    pub(crate) log_keys: bool,
    pub(crate) hot_keys: HotKeys,
    pub(crate) hot_max_staleness: Duration,
}

/// Everything a node shares between its layer, its handles and its loads.
pub(crate) struct Shared {
    pub(crate) self_url: Option<Arc<str>>,
    pub(crate) ring: ArcSwap<Ring>,
    pub(crate) config: NodeConfig,
    pub(crate) client: PeerClient,
    pub(crate) groups: Groups,
    pub(crate) health: PeerHealth,
    pub(crate) ring_mismatches: AtomicU64,
    /// The last foreign fingerprint seen, so a mismatch is logged once per change.
    pub(crate) last_foreign_ring: AtomicU64,
    pub(crate) discovery_errors: AtomicU64,
    /// Dropped with the cache: background tasks watching it stop at once.
    pub(crate) closed: tokio::sync::watch::Sender<()>,
    /// Set by [`Groupcache::shutdown`]: peer requests are refused with 503.
    pub(crate) draining: AtomicBool,
    /// Loads running now, across every source; `shutdown` waits for it to reach 0.
    pub(crate) loads_in_flight: AtomicUsize,
    /// Woken when `loads_in_flight` drops to 0.
    pub(crate) loads_done: tokio::sync::Notify,
    pub(crate) metrics_described: AtomicBool,
    pub(crate) clock: Arc<dyn Clock>,
    /// Signs and checks peer requests when a peer secret is set.
    pub(crate) auth: Option<Arc<PeerAuth>>,
    /// Without a secret: whether peer requests are served at all.
    pub(crate) open_peer_path: bool,
    /// Whether https peer URLs are allowed (TLS configured).
    pub(crate) https: bool,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sources: Vec<&str> = self.groups.iter().map(|g| &*g.name).collect();
        f.debug_struct("Groupcache")
            .field("self_url", &self.self_url)
            .field("ring", &**self.ring.load())
            .field("config", &self.config)
            .field("sources", &sources)
            .finish()
    }
}

/// Whether a get came from this node's callers or from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Local,
    Peer,
}

impl Shared {
    pub(crate) fn set_peers(&self, peers: Vec<String>) -> Result<(), ConfigError> {
        let peers = validate_peers(self.self_url.as_deref(), peers, self.https)?;
        self.check_peer_auth(&peers)?;
        let ring = Ring::try_new(self.config.replicas, &peers)?;
        self.client.retain_peers(&peers);
        self.health.retain_peers(&peers);
        self.ring.store(Arc::new(ring));
        Ok(())
    }

    /// A cluster needs a peer secret, or an explicit choice of an open peer path.
    pub(crate) fn check_peer_auth(&self, peers: &[String]) -> Result<(), ConfigError> {
        let others = peers
            .iter()
            .any(|p| Some(p.as_str()) != self.self_url.as_deref());
        if others && self.auth.is_none() && !self.open_peer_path {
            return Err(ConfigError::PeerAuthRequired);
        }
        Ok(())
    }

    pub(crate) fn group(&self, name: &str) -> Result<&Arc<Group>, Error> {
        self.groups
            .get(name)
            .ok_or_else(|| Error::new(ErrorKind::UnknownSource, name))
    }

    /// The peer that owns `key`, unless it is this node or there is no ring.
    fn remote_owner(&self, key: &str) -> Option<Arc<str>> {
        let ring = self.ring.load();
        let owner = ring.owner_arc(key)?;
        match &self.self_url {
            Some(me) if **me == **owner => None,
            _ => Some(owner.clone()),
        }
    }

    /// The get flow: cache, then one load per key, from the owning peer or the data source.
    ///
    /// The cache is looked up before any future is made; a hit returns a small ready future,
    /// and only a miss allocates the (large) future of a load.
    pub(crate) fn get_entry(self: &Arc<Self>, source: &str, key: &str, origin: Origin) -> GetEntry {
        match self.lookup(source, key, origin) {
            Ok(Lookup::Hit(entry)) => GetEntry::Ready(Some(Ok(entry))),
            Ok(Lookup::Miss(group, stale)) => {
                GetEntry::Load(self.load_boxed(group, key, origin, stale))
            }
            Err(error) => GetEntry::Ready(Some(Err(error))),
        }
    }

    /// The value of `key` when one of this node's caches holds it fresh: one lookup, one
    /// counter, no future. `None` leaves every other case, and its counting, to
    /// [`get_value`](Self::get_value).
    #[inline(always)]
    pub(crate) fn fresh_hit(&self, source: &str, key: &str) -> Option<Bytes> {
        let group = self.groups.get(source)?;
        if key.len() > self.config.max_key_bytes {
            return None;
        }
        let (value, tier) = group.caches.fresh_value(key, &*self.clock)?;
        group.counters.add(tier.hit_event());
        Some(value)
    }

    /// [`get_entry`](Self::get_entry) for a caller that wants only the value.
    pub(crate) fn get_value(self: &Arc<Self>, source: &str, key: &str) -> GetValue {
        match self.lookup(source, key, Origin::Local) {
            Ok(Lookup::Hit(entry)) => GetValue::Ready(Some(Ok(entry.value))),
            Ok(Lookup::Miss(group, stale)) => {
                GetValue::Load(self.load_boxed(group, key, Origin::Local, stale))
            }
            Err(error) => GetValue::Ready(Some(Err(error))),
        }
    }

    fn load_boxed(
        self: &Arc<Self>,
        group: Arc<Group>,
        key: &str,
        origin: Origin,
        stale: Option<Entry>,
    ) -> BoxedLoad {
        Box::pin(self.clone().load_entry(group, key.into(), origin, stale))
    }

    /// The synchronous part of a get: checks, counters, and the caches.
    fn lookup(self: &Arc<Self>, source: &str, key: &str, origin: Origin) -> Result<Lookup, Error> {
        let group = self.group(source)?;
        if key.len() > self.config.max_key_bytes {
            return Err(Error::new(ErrorKind::KeyTooLong, source));
        }
        let counters = group.counters.stripe();
        if origin == Origin::Peer {
            counters.add(Event::ServerRequest);
        }
        let mut stale = None;
        if let Some((entry, freshness, tier)) = group.caches.get(key, &*self.clock) {
            if freshness == Freshness::Fresh || self.may_serve_stale(group, &entry) {
                counters.add(tier.hit_event());
                if freshness == Freshness::Stale {
                    counters.add(Event::StaleServed);
                    self.refresh(group, key, origin);
                }
                return entry_result(entry, source).map(Lookup::Hit);
            }
            stale = Some(entry);
        }
        counters.add(Event::Load);
        Ok(Lookup::Miss(group.clone(), stale))
    }

    /// Whether a stale entry is inside its stale-while-revalidate grace.
    fn may_serve_stale(&self, group: &Group, entry: &Entry) -> bool {
        let grace = group.options.stale_while_revalidate;
        !grace.is_zero()
            && entry
                .expires
                .and_then(|at| at.checked_add(grace))
                .is_some_and(|until| self.clock.now() < until)
    }

    /// Starts one background load of `key` (joined by any load already running).
    fn refresh(self: &Arc<Self>, group: &Arc<Group>, key: &str, origin: Origin) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let key: Arc<str> = key.into();
        // Dropping the flight's future hands the load to a task of its own.
        drop(self.start_flight(&runtime, group, key, origin));
    }

    /// A miss: joins or starts the one load of the key.
    async fn load_entry(
        self: Arc<Self>,
        group: Arc<Group>,
        key: Arc<str>,
        origin: Origin,
        stale: Option<Entry>,
    ) -> Result<Entry, Error> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::new(ErrorKind::NoRuntime, &group.name))?;
        let flight = self.start_flight(&runtime, &group, key, origin);
        let result = match flight.await {
            Outcome::Done(result) => result,
            Outcome::Panicked => Err(Error::new(ErrorKind::LoadPanicked, &group.name)),
            Outcome::Abandoned => Err(Error::new(ErrorKind::LoadAbandoned, &group.name)),
        };
        match (result, stale) {
            (Err(error), Some(stale))
                if error.is_load() && self.within_stale_if_error(&group, &stale) =>
            {
                group.counters.add(Event::StaleServed);
                tracing::debug!(source = %group.name, %error, "load failed; serving the stale value");
                Ok(stale)
            }
            (result, _) => result.and_then(|entry| entry_result(entry, &group.name)),
        }
    }

    fn within_stale_if_error(&self, group: &Group, entry: &Entry) -> bool {
        let window = group.options.stale_if_error;
        !window.is_zero()
            && !entry.negative
            && entry
                .expires
                .and_then(|at| at.checked_add(window))
                .is_some_and(|until| self.clock.now() < until)
    }

    /// Joins or starts the flight of `key`.
    fn start_flight(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        group: &Arc<Group>,
        key: Arc<str>,
        origin: Origin,
    ) -> impl Future<Output = Outcome<Result<Entry, Error>>> + Send + 'static {
        // A peer request is never forwarded: it is served from here even where this node's
        // ring names another owner, so rings that disagree cannot make requests loop.
        let owner = match origin {
            Origin::Local => self.remote_owner(&key),
            Origin::Peer => None,
        };
        let span = tracing::debug_span!(
            "groupcache.get",
            source = %group.name,
            from_peer = origin == Origin::Peer,
            owner = owner.as_deref(),
            key = tracing::field::Empty,
        );
        if self.config.log_keys {
            span.record("key", &*key);
        }
        let epoch = group.epoch(&key);
        let flight_key = (key.clone(), owner.is_some(), epoch);
        group
            .flights
            .run(runtime, flight_key, move || {
                let (shared, group) = (self.clone(), group.clone());
                shared.loads_in_flight.fetch_add(1, SeqCst);
                async move {
                    let _done = LoadDone(&shared);
                    shared.load(&group, key, owner, epoch).await
                }
            })
            .instrument(span)
    }

    /// The body of a flight: runs once per key at a time, detached from its callers.
    async fn load(
        &self,
        group: &Group,
        key: Arc<str>,
        owner: Option<Arc<str>>,
        epoch: u64,
    ) -> Result<Entry, Error> {
        let counters = &group.counters;
        counters.add(Event::Flight);
        if let Some((entry, Freshness::Fresh, tier)) = group.caches.get(&key, &*self.clock) {
            counters.add(tier.flight_hit_event());
            return Ok(entry);
        }
        counters.add(Event::LoadDeduped);

        if let Some(peer) = owner {
            let verdict = self.health.verdict(&peer);
            if verdict == Verdict::Skip {
                counters.add(Event::PeerSkip);
            } else {
                // Frees the probe slot however the fetch ends, even if it is dropped.
                let _probe = (verdict == Verdict::Probe).then(|| ProbeSlot(&self.health, &peer));
                if let Some(result) = self.fetch_from(&peer, group, &key, epoch).await {
                    return result;
                }
            }
        }

        let load = group.source.clone().load_owned(key.clone());
        let started = std::time::Instant::now();
        let span = tracing::debug_span!("groupcache.load", source = %group.name, key = tracing::field::Empty);
        if self.config.log_keys {
            span.record("key", &*key);
        }
        let result = AssertUnwindSafe(load).catch_unwind().instrument(span).await;
        metrics::histogram!("groupcache_load_duration_seconds", "source" => metrics::SharedString::from(group.name.clone()))
            .record(started.elapsed());
        let now = self.clock.now();
        match result {
            Ok(Ok(loaded)) => {
                counters.add(Event::LocalLoad);
                let (value, ttl) = loaded.into_parts();
                let entry = match value {
                    Some(value) => group.options.entry(value, ttl, &key, now),
                    None => {
                        let Some(expires) =
                            group.options.negative_ttl.and_then(|t| now.checked_add(t))
                        else {
                            return Err(Error::new(ErrorKind::NotFound, &group.name));
                        };
                        Entry {
                            value: Bytes::new(),
                            expires: Some(expires),
                            keeps_stale: false,
                            negative: true,
                        }
                    }
                };
                if !entry.is_expired(now) {
                    group.store(Tier::Main, &key, entry.clone(), epoch);
                }
                Ok(entry)
            }
            Ok(Err(cause)) => {
                counters.add(Event::LocalLoadErr);
                tracing::debug!(source = %group.name, error = %cause, "data source failed");
                Err(Error::with_cause(ErrorKind::Load, &group.name, Some(cause)))
            }
            Err(_panic) => {
                counters.add(Event::LocalLoadErr);
                tracing::error!(source = %group.name, "data source panicked");
                Err(Error::new(ErrorKind::LoadPanicked, &group.name))
            }
        }
    }

    /// Asks `peer` for the key. `None` means the fetch failed and the key is to be loaded
    /// locally.
    async fn fetch_from(
        &self,
        peer: &str,
        group: &Group,
        key: &str,
        epoch: u64,
    ) -> Option<Result<Entry, Error>> {
        let counters = &group.counters;
        let fingerprint = self.ring.load().fingerprint_header().clone();
        // Counted only where it can matter: a popularity policy and a hot cache to fill.
        let local_rate = match self.config.hot_keys {
            HotKeys::AboveQps(_) if group.caches.hot.is_some() => {
                group.fetch_rates.hit(key, self.clock.now())
            }
            _ => 0.0,
        };
        let started = std::time::Instant::now();
        let span = tracing::debug_span!("groupcache.peer_fetch", source = %group.name, %peer, key = tracing::field::Empty);
        if self.config.log_keys {
            span.record("key", key);
        }
        let fetched = self
            .client
            .fetch(peer, &self.config.base_path, &group.name, key, &fingerprint)
            .instrument(span)
            .await;
        metrics::histogram!(
            "groupcache_peer_fetch_duration_seconds",
            "source" => metrics::SharedString::from(group.name.clone())
        )
        .record(started.elapsed());
        match fetched {
            Ok(Fetched::Value(response)) => {
                self.health.success(peer);
                counters.add(Event::PeerLoad);
                let owner_rate = response.minute_qps.unwrap_or(0.0);
                let entry = self.entry_from_wire(response);
                let admit = match self.config.hot_keys {
                    HotKeys::Never => false,
                    HotKeys::OneInTen => group.one_in_ten(),
                    HotKeys::AboveQps(threshold) => owner_rate.max(local_rate) >= threshold,
                };
                if admit {
                    // A hot copy is never older than the maximum staleness.
                    let mut hot = entry.clone();
                    let limit = self.clock.now().checked_add(self.config.hot_max_staleness);
                    hot.expires = match (hot.expires, limit) {
                        (Some(at), Some(limit)) => Some(at.min(limit)),
                        (at, limit) => at.or(limit),
                    };
                    hot.keeps_stale = false;
                    if !hot.is_expired(self.clock.now()) {
                        group.store(Tier::Hot, key, hot, epoch);
                        counters.add(Event::HotPromotion);
                    }
                }
                Some(Ok(entry))
            }
            Ok(Fetched::NotFound) => {
                self.health.success(peer);
                counters.add(Event::PeerLoad);
                Some(Err(Error::new(ErrorKind::NotFound, &group.name)))
            }
            Err(error) => {
                counters.add(Event::PeerError);
                let skipping = error.is_peer_fault() && self.health.failure(peer);
                if !error.is_peer_fault() {
                    self.health.success(peer);
                }
                tracing::warn!(
                    source = %group.name,
                    %peer,
                    %error,
                    skipping,
                    "peer fetch failed; loading locally"
                );
                None
            }
        }
    }

    /// An entry from a peer's answer; its wall-clock expiry becomes a deadline on the clock.
    fn entry_from_wire(&self, response: GetResponse) -> Entry {
        let expires = match response.expire {
            Some(nanos) if nanos > 0 => {
                let at = UNIX_EPOCH + Duration::from_nanos(nanos as u64);
                let left = at
                    .duration_since(self.clock.system_now())
                    .unwrap_or(Duration::ZERO);
                self.clock.now().checked_add(left)
            }
            _ => None,
        };
        Entry::value(response.value.unwrap_or_default(), expires)
    }

    /// An entry's expiry as Unix nanoseconds for the wire (`GetResponse.expire`).
    pub(crate) fn expire_to_wire(&self, entry: &Entry) -> Option<i64> {
        let left = entry.expires?.saturating_duration_since(self.clock.now());
        let at = self.clock.system_now().checked_add(left)?;
        let nanos = at.duration_since(UNIX_EPOCH).ok()?.as_nanos();
        // 0 means "never" on the wire: an entry that is due now still says so.
        Some(i64::try_from(nanos).unwrap_or(i64::MAX).max(1))
    }

    /// Drops `key` of `group` here, then on its owner, then on every other peer. Returns the
    /// peers that did not confirm.
    pub(crate) async fn remove(&self, group: &Group, key: &str) -> Vec<String> {
        group.remove(key);
        let ring = self.ring.load_full();
        let me = self.self_url.as_deref();
        let owner = ring.owner(key).filter(|o| Some(*o) != me);
        // The owner first: once it has dropped its copy, no peer can fetch the old value.
        let mut unreachable = self.delete_on(group, Some(key), owner, &ring).await;
        let others = ring
            .peers()
            .filter(|p| Some(*p) != me && Some(*p) != ring.owner(key));
        unreachable.extend(self.delete_on(group, Some(key), others, &ring).await);
        unreachable
    }

    /// Drops every key of `group` here and on every peer. Returns the peers that did not
    /// confirm.
    pub(crate) async fn clear(&self, group: &Group) -> Vec<String> {
        group.clear();
        let ring = self.ring.load_full();
        let me = self.self_url.as_deref();
        let others = ring.peers().filter(|p| Some(*p) != me);
        self.delete_on(group, None, others, &ring).await
    }

    /// Sends a `DELETE` of `key` (or of the whole group) to `peers` at once; returns the
    /// peers that did not confirm.
    async fn delete_on<'a>(
        &self,
        group: &Group,
        key: Option<&str>,
        peers: impl IntoIterator<Item = &'a str>,
        ring: &Ring,
    ) -> Vec<String> {
        let fingerprint = ring.fingerprint_header();
        let deletes = peers.into_iter().map(|peer| async move {
            let result = self
                .client
                .delete(peer, &self.config.base_path, &group.name, key, fingerprint)
                .await;
            (peer, result)
        });
        let mut unreachable = Vec::new();
        for (peer, result) in futures_util::future::join_all(deletes).await {
            if let Err(error) = result {
                tracing::warn!(source = %group.name, %peer, %error, "removal not confirmed by peer");
                unreachable.push(peer.to_owned());
            }
        }
        unreachable
    }

    /// Notes the ring fingerprint a peer request came with.
    pub(crate) fn check_ring(&self, foreign: Option<u32>) {
        let Some(foreign) = foreign else { return };
        let own = self.ring.load().fingerprint();
        if foreign == own {
            return;
        }
        self.ring_mismatches.fetch_add(1, Relaxed);
        if self.last_foreign_ring.swap(u64::from(foreign), Relaxed) != u64::from(foreign) {
            tracing::warn!(
                own = %format_args!("{own:08x}"),
                peer = %format_args!("{foreign:08x}"),
                "a peer's ring differs from this node's: check that every node has the same peer list"
            );
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        let mut sources: Vec<SourceSnapshot> = self
            .groups
            .iter()
            .map(|group| {
                let totals = group.counters.totals();
                SourceSnapshot {
                    name: group.name.to_string(),
                    stats: totals.source_stats(),
                    main_cache: CacheStats {
                        gets: totals.main_gets(),
                        hits: totals.main_hits(),
                        ..group.caches.main_stats()
                    },
                    hot_cache: CacheStats {
                        gets: totals.hot_gets(),
                        hits: totals.hot_hits(),
                        ..group.caches.hot_stats()
                    },
                }
            })
            .collect();
        sources.sort_by(|a, b| a.name.cmp(&b.name));
        let ring = self.ring.load();
        let peers: Vec<String> = ring.peers().map(str::to_owned).collect();
        Stats {
            sources,
            cluster: ClusterStats {
                self_url: self.self_url.as_deref().map(str::to_owned),
                count: peers.len(),
                peers,
                ring_fingerprint: format!("{:08x}", ring.fingerprint()),
                ring_mismatches: self.ring_mismatches.load(Relaxed),
                skipped_peers: self.health.skipped(),
                discovery_errors: self.discovery_errors.load(Relaxed),
            },
        }
    }
}

impl Tier {
    fn hit_event(self) -> Event {
        match self {
            Tier::Main => Event::MainHit,
            Tier::Hot => Event::HotHit,
        }
    }

    fn flight_hit_event(self) -> Event {
        match self {
            Tier::Main => Event::FlightMainHit,
            Tier::Hot => Event::FlightHotHit,
        }
    }
}

enum Lookup {
    Hit(Entry),
    /// A miss, with the entry that expired, if one is kept for stale-if-error.
    Miss(Arc<Group>, Option<Entry>),
}

/// A cached *not found* answers as one.
fn entry_result(entry: Entry, source: &str) -> Result<Entry, Error> {
    if entry.negative {
        Err(Error::new(ErrorKind::NotFound, source))
    } else {
        Ok(entry)
    }
}

type BoxedLoad = Pin<Box<dyn Future<Output = Result<Entry, Error>> + Send>>;

/// The future of a get: ready at once on a hit, a boxed load on a miss.
pub(crate) enum GetEntry {
    Ready(Option<Result<Entry, Error>>),
    Load(BoxedLoad),
}

/// The future of a get of the value alone (of [`CacheHandle::get`](crate::CacheHandle::get)).
pub(crate) enum GetValue {
    Ready(Option<Result<Bytes, Error>>),
    Load(BoxedLoad),
}

impl Future for GetValue {
    type Output = Result<Bytes, Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Ready(result) => {
                Poll::Ready(result.take().expect("GetValue polled after it completed"))
            }
            Self::Load(load) => load
                .as_mut()
                .poll(cx)
                .map(|result| result.map(|entry| entry.value)),
        }
    }
}

impl Future for GetEntry {
    type Output = Result<Entry, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Ready(result) => {
                Poll::Ready(result.take().expect("GetEntry polled after it completed"))
            }
            Self::Load(load) => load.as_mut().poll(cx),
        }
    }
}

/// Counts a load out of `loads_in_flight` however it ends.
struct LoadDone<'a>(&'a Shared);

impl Drop for LoadDone<'_> {
    fn drop(&mut self) {
        // Only a shutdown waits for the count to reach 0: see `Groupcache::shutdown`.
        if self.0.loads_in_flight.fetch_sub(1, SeqCst) == 1 && self.0.draining.load(SeqCst) {
            self.0.loads_done.notify_waiters();
        }
    }
}

struct ProbeSlot<'a>(&'a PeerHealth, &'a str);

impl Drop for ProbeSlot<'_> {
    fn drop(&mut self) {
        self.0.probe_abandoned(self.1);
    }
}
