//! The cache value, its shared state, and the get flow (docs/guide.md, "The request flow").

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

use crate::auth::{PeerAuth, Refusal};
use crate::builder::{GroupcacheBuilder, validate_peers};
use crate::cache::{Entry, Freshness, Tier};
use crate::client::{Fetched, PeerClient, PeerError, Speaks};
use crate::clock::Clock;
use crate::discovery::{DnsDiscovery, Resolve};
use crate::error::{ConfigError, Error, ErrorKind, KeyCodecError, OwnerFailed};
use crate::group::{Group, Groups, HotKeys};
use crate::handle::{CacheHandle, Removal};
use crate::health::{PeerHealth, Verdict};
use crate::layer::GroupcacheLayer;
use crate::protocol::GetResponse;
use crate::ring::Ring;
use crate::singleflight::{Outcome, Ticket};
use crate::stats::{CacheStats, ClusterStats, Event, RefusalStats, SourceSnapshot, Stats};
use crate::throttle::LogThrottle;

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
/// use axum::{Router, body::Bytes, extract::Path, routing::get};
/// use tower_groupcache::{CacheHandle, Error, Groupcache};
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
/// // A failed get answers with its status (see `Error`).
/// async fn user(cache: CacheHandle, Path(id): Path<String>) -> Result<Bytes, Error> {
///     cache.get("users", &format!("user:{id}")).await
/// }
///
/// let app: Router = Router::new().route("/user/{id}", get(user)).layer(cache.layer());
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
        let shared = Arc::new(shared);
        shared.check_own_peer_path();
        Self { shared }
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

    /// Stops serving peers and waits, at most
    /// [`shutdown_timeout`](crate::GroupcacheBuilder::shutdown_timeout), for the loads that
    /// started before the call to finish.
    ///
    /// From the call on, peer requests are answered `503 Service Unavailable`, so peers load
    /// this node's keys themselves (and soon skip it, see [`PeerHealthConfig`](crate::PeerHealthConfig)). Gets through
    /// this node's own handles keep working; the loads they start from now on are not waited
    /// for. Call it when the service receives SIGTERM, before the HTTP server stops. The
    /// report says how many loads were still running at the bound: they go on in the
    /// background, and their callers still get their values, but nothing waits for them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use tower_groupcache::Groupcache;
    ///
    /// let cache = Groupcache::builder()
    ///     .shutdown_timeout(Duration::from_secs(10))
    ///     .source("users", |key: String| async move { Ok::<_, std::io::Error>(key) })
    ///     .build()?;
    /// // On SIGTERM:
    /// let report = cache.shutdown().await;
    /// assert!(report.is_complete(), "no load was running");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutdown(&self) -> Shutdown {
        let drain = &self.shared.drain;
        drain.start();
        let bound = self.shared.config.shutdown_timeout;
        if tokio::time::timeout(bound, drain.finished()).await.is_ok() {
            return Shutdown { abandoned: 0 };
        }
        let abandoned = drain.running();
        if abandoned > 0 {
            tracing::warn!(
                abandoned,
                timeout_ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX),
                "shutdown: loads still running at the shutdown timeout; not waiting for them"
            );
        }
        Shutdown { abandoned }
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
        self.shared.drain.is_draining()
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
    pub(crate) shutdown_timeout: Duration,
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
    /// Counts and log throttles of what anyone who reaches the peer path can cause.
    pub(crate) noise: Noise,
    pub(crate) discovery_errors: AtomicU64,
    /// Dropped with the cache: background tasks watching it stop at once.
    pub(crate) closed: tokio::sync::watch::Sender<()>,
    /// The shutdown's state: once it starts, peer requests are refused with 503, and it
    /// waits for the loads that started before it.
    pub(crate) drain: Arc<Drain>,
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

    /// Checks, in the background, that this node's own peer path is answered by its cache
    /// layer: a layer added with `route_layer`, or inside `nest`, leaves the peer path to the
    /// router, which answers it `404`, and every peer then loads this node's keys itself. The
    /// check asks `{self_url}{base_path}` until it gets an answer (the server may not listen
    /// yet), for at most a minute, and logs an error if the answer did not come from the
    /// layer. It stops when the cache is dropped.
    pub(crate) fn check_own_peer_path(self: &Arc<Self>) {
        let Some(url) = self.self_url.clone() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(self);
        let mut closed = self.closed.subscribe();
        runtime.spawn(async move {
            let give_up = tokio::time::Instant::now() + SELF_CHECK_PERIOD;
            let mut pause = Duration::from_millis(20);
            loop {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = closed.changed() => return,
                }
                let Some(shared) = weak.upgrade() else { return };
                let fingerprint = shared.ring.load().fingerprint_header().clone();
                let base_path = &*shared.config.base_path;
                match shared.client.probe(&url, base_path, &fingerprint).await {
                    Ok((Speaks::Extensions, _)) => return,
                    Ok((_, status)) => {
                        tracing::error!(
                            %status,
                            "this node's peer path {url}{base_path} is not served by its \
                             groupcache layer: its router answered. Add the layer with \
                             `Router::layer` on the whole router, not with `route_layer` and \
                             not inside `nest`; until then every peer loads this node's keys \
                             itself"
                        );
                        return;
                    }
                    Err(error) if tokio::time::Instant::now() >= give_up => {
                        tracing::debug!(%error, "could not reach this node's own peer path to check it");
                        return;
                    }
                    Err(_) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        });
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
        // Its waiter, dropped at once, hands the load to a task of its own.
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
        let flight = self.start_flight(&runtime, &group, key, origin)?;
        let result = match flight.await {
            Outcome::Done(result) => result,
            Outcome::Panicked => Err(Error::new(ErrorKind::LoadPanicked, &group.name)),
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
    ) -> Result<impl Future<Output = Outcome<Result<Entry, Error>>> + Send + 'static, Error> {
        // A data source that reads, through this cache, a key that it (or a load it waits for)
        // is loading would wait for itself forever.
        let loading = LoadChain::current();
        if loading
            .as_ref()
            .is_some_and(|chain| chain.contains(group, &key))
        {
            return Err(Error::new(ErrorKind::RecursiveLoad, &group.name));
        }
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
        let flight_key = (key.clone(), owner.is_some());
        Ok(group.flights.run(runtime, flight_key, move |ticket| {
            let (shared, group) = (self.clone(), group.clone());
            let chain = LoadChain::push(loading, &group, key.clone());
            // Counted from the moment the flight exists, so a shutdown that starts now waits
            // for it.
            let drain = shared.drain.begin();
            LOAD_CHAIN
                .scope(chain, async move {
                    let _counted = drain;
                    shared.load(&group, key, owner, &ticket).await
                })
                .instrument(span)
        }))
    }

    /// The body of a flight: runs once per key at a time, detached from its callers.
    async fn load(
        &self,
        group: &Group,
        key: Arc<str>,
        owner: Option<Arc<str>>,
        ticket: &Ticket,
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
                if let Some(result) = self.fetch_from(&peer, group, &key, ticket).await {
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
                let (value, ttl) = loaded.into_parts();
                counters.add(if value.is_some() {
                    Event::LocalLoad
                } else {
                    Event::LocalNotFound
                });
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
                    group.store(Tier::Main, &key, entry.clone(), ticket);
                }
                Ok(entry)
            }
            Ok(Err(cause)) => {
                counters.add(Event::LocalLoadErr);
                tracing::debug!(source = %group.name, error = %cause, "data source failed");
                // A typed source that could not decode its key says so with `KeyCodecError`.
                let (kind, cause) = match cause.downcast::<KeyCodecError>() {
                    Ok(codec) => (ErrorKind::Codec, codec.0),
                    Err(cause) => (ErrorKind::Load, cause),
                };
                Err(Error::with_cause(kind, &group.name, Some(cause)))
            }
            Err(_panic) => {
                counters.add(Event::LocalLoadErr);
                // A source that panics on every key would write a line per get.
                if let Some(left_out) = self.noise.panicked.allow() {
                    tracing::error!(source = %group.name, left_out, "data source panicked");
                }
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
        ticket: &Ticket,
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
                        group.store(Tier::Hot, key, hot, ticket);
                        counters.add(Event::HotPromotion);
                    }
                }
                Some(Ok(entry))
            }
            Ok(Fetched::NotFound) => {
                self.health.success(peer);
                counters.add(Event::PeerNotFound);
                Some(Err(Error::new(ErrorKind::NotFound, &group.name)))
            }
            Ok(Fetched::Failed { kind, message }) => {
                // The owner is healthy; its data source failed. Loading here would call the
                // failing back end once more, for every get.
                self.health.success(peer);
                counters.add(Event::PeerLoadError);
                let cause = OwnerFailed {
                    owner: peer.to_owned(),
                    message,
                };
                Some(Err(Error::with_cause(
                    kind,
                    &group.name,
                    Some(cause.into()),
                )))
            }
            Err(error) => {
                counters.add(Event::PeerError);
                let skipping = error.is_peer_fault() && self.health.failure(peer);
                if !error.is_peer_fault() {
                    self.health.success(peer);
                }
                if matches!(error, PeerError::NotServed) {
                    if let Some(left_out) = self.noise.not_served.allow() {
                        tracing::error!(
                            source = %group.name,
                            %peer,
                            left_out,
                            "the peer's router answered its peer path, not its groupcache layer: \
                             add the layer with `Router::layer` on the whole router (not \
                             `route_layer`, not inside `nest`); loading locally"
                        );
                    }
                } else if let Some(left_out) = self.noise.fetch_failed.allow() {
                    tracing::warn!(
                        source = %group.name,
                        %peer,
                        %error,
                        skipping,
                        left_out,
                        "peer fetch failed; loading locally"
                    );
                }
                None
            }
        }
    }

    /// An entry from a peer's answer; its wall-clock expiry becomes a deadline on the clock.
    /// `expire` absent or 0 means never; a time already past, or a negative one (which no
    /// clock writes), means the value is expired now: it is returned but not kept.
    fn entry_from_wire(&self, response: GetResponse) -> Entry {
        let now = self.clock.now();
        let expires = match response.expire {
            None | Some(0) => None,
            Some(nanos) => {
                let left = u64::try_from(nanos)
                    .ok()
                    .and_then(|nanos| UNIX_EPOCH.checked_add(Duration::from_nanos(nanos)))
                    .and_then(|at| at.duration_since(self.clock.system_now()).ok())
                    .unwrap_or(Duration::ZERO);
                // Past the clock's range is as good as never.
                now.checked_add(left)
            }
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
    pub(crate) async fn remove(&self, group: &Group, key: &str) -> Removal {
        group.remove(key);
        let ring = self.ring.load_full();
        let me = self.self_url.as_deref();
        let owner = ring.owner(key).filter(|o| Some(*o) != me);
        // The owner first: once it has dropped its copy, no peer can fetch the old value.
        let mut removal = self.delete_on(group, Some(key), owner, &ring).await;
        if owner.is_some() {
            // A get here between the first drop and the owner's may have fetched the old
            // value again: drop it (and revoke such a fetch still under way) once more.
            group.remove(key);
        }
        let others = ring
            .peers()
            .filter(|p| Some(*p) != me && Some(*p) != ring.owner(key));
        let rest = self.delete_on(group, Some(key), others, &ring).await;
        removal.unreachable.extend(rest.unreachable);
        removal.unsupported.extend(rest.unsupported);
        removal
    }

    /// Drops every key of `group` here and on every peer. Returns the peers that did not
    /// confirm.
    pub(crate) async fn clear(&self, group: &Group) -> Removal {
        group.clear();
        let ring = self.ring.load_full();
        let me = self.self_url.as_deref();
        let others = ring.peers().filter(|p| Some(*p) != me);
        self.delete_on(group, None, others, &ring).await
    }

    /// Sends a `DELETE` of `key` (or of the whole group) to `peers` at once, each only if it
    /// speaks this crate's extensions (a Go node would take it for a get, and load the key).
    async fn delete_on<'a>(
        &self,
        group: &Group,
        key: Option<&str>,
        peers: impl IntoIterator<Item = &'a str>,
        ring: &Ring,
    ) -> Removal {
        let fingerprint = ring.fingerprint_header();
        let base_path = &*self.config.base_path;
        let deletes = peers.into_iter().map(|peer| async move {
            let result = match self.client.speaks(peer, base_path, fingerprint).await {
                Ok(Speaks::Extensions) => self
                    .client
                    .delete(peer, base_path, &group.name, key, fingerprint)
                    .await
                    .map(|()| true),
                Ok(_) => Ok(false),
                Err(error) => Err(error),
            };
            (peer, result)
        });
        let mut removal = Removal::default();
        for (peer, result) in futures_util::future::join_all(deletes).await {
            match result {
                Ok(true) => {}
                Ok(false) | Err(PeerError::Unsupported) => {
                    removal.unsupported.push(peer.to_owned());
                }
                Err(error) => {
                    if let Some(left_out) = self.noise.removal_unconfirmed.allow() {
                        tracing::warn!(source = %group.name, %peer, %error, left_out, "removal not confirmed by peer");
                    }
                    removal.unreachable.push(peer.to_owned());
                }
            }
        }
        removal
    }

    /// Notes the ring fingerprint a peer request came with.
    pub(crate) fn check_ring(&self, foreign: Option<u32>) {
        let Some(foreign) = foreign else { return };
        let own = self.ring.load().fingerprint();
        if foreign == own {
            return;
        }
        self.ring_mismatches.fetch_add(1, Relaxed);
        // The header is the sender's to choose: one line per interval at most.
        if let Some(left_out) = self.noise.foreign_ring.allow() {
            tracing::warn!(
                own = %format_args!("{own:08x}"),
                peer = %format_args!("{foreign:08x}"),
                left_out,
                "a peer's ring differs from this node's: check that every node has the same peer list"
            );
        }
    }

    /// Counts a refused peer request, and logs it (at most once per interval per reason).
    pub(crate) fn refused(&self, refused: Refused) {
        let index = refused.index();
        self.noise.refused[index].fetch_add(1, Relaxed);
        if matches!(refused, Refused::ShuttingDown) {
            return;
        }
        if let Some(left_out) = self.noise.refused_logs[index].allow() {
            tracing::warn!(
                reason = refused.reason(),
                left_out,
                "peer request refused: {refused}"
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
                refused_requests: self.noise.refusals(),
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

/// How long [`Shared::check_own_peer_path`] tries to reach this node's own peer path.
const SELF_CHECK_PERIOD: Duration = Duration::from_secs(60);

/// A peer request refused before any work.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refused {
    Auth(Refusal),
    /// No peer secret, and the peer path is closed.
    Closed,
    ShuttingDown,
}

/// The reasons of [`Refused`], in the order of [`RefusalStats::by_reason`].
const REFUSAL_REASONS: usize = 8;

impl Refused {
    fn index(self) -> usize {
        match self {
            Self::Auth(Refusal::Missing) => 0,
            Self::Auth(Refusal::Malformed) => 1,
            Self::Auth(Refusal::Expired) => 2,
            Self::Auth(Refusal::BadSignature) => 3,
            Self::Auth(Refusal::Replayed) => 4,
            Self::Auth(Refusal::ReplayRecordFull) => 5,
            Self::Closed => 6,
            Self::ShuttingDown => 7,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Self::Auth(refusal) => refusal.reason(),
            Self::Closed => "closed",
            Self::ShuttingDown => "shutting_down",
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auth(refusal) => refusal.fmt(f),
            Self::Closed => f.write_str("this node has no peer secret and its peer path is closed"),
            Self::ShuttingDown => f.write_str("shutting down"),
        }
    }
}

/// Counts and log throttles of the events anyone who reaches the peer path can cause, or that
/// a failing peer causes at the request rate: each is counted, and logged at most once per
/// interval.
#[derive(Debug, Default)]
pub(crate) struct Noise {
    refused: [AtomicU64; REFUSAL_REASONS],
    refused_logs: [LogThrottle; REFUSAL_REASONS],
    foreign_ring: LogThrottle,
    fetch_failed: LogThrottle,
    not_served: LogThrottle,
    removal_unconfirmed: LogThrottle,
    panicked: LogThrottle,
}

impl Noise {
    fn refusals(&self) -> RefusalStats {
        let count = |i: usize| self.refused[i].load(Relaxed);
        let mut stats = RefusalStats::default();
        for (i, slot) in [
            &mut stats.missing,
            &mut stats.malformed,
            &mut stats.expired,
            &mut stats.bad_signature,
            &mut stats.replayed,
            &mut stats.replay_record_full,
            &mut stats.closed,
            &mut stats.shutting_down,
        ]
        .into_iter()
        .enumerate()
        {
            *slot = count(i);
        }
        stats
    }
}

/// What [`Groupcache::shutdown`] waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Shutdown {
    abandoned: usize,
}

impl Shutdown {
    /// The loads that were still running when the shutdown timeout ran out. They go on in the
    /// background; nothing waits for them.
    pub fn abandoned(&self) -> usize {
        self.abandoned
    }

    /// Whether every load that started before the shutdown finished within its timeout.
    pub fn is_complete(&self) -> bool {
        self.abandoned == 0
    }
}

/// A shutdown's drain: whether it started, and the loads that started before it.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    draining: AtomicBool,
    /// Loads running that started before the drain (and a few that start while it begins).
    running: AtomicUsize,
    /// Woken when `running` drops to 0 during the drain.
    finished: tokio::sync::Notify,
}

impl Drain {
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    fn start(&self) {
        // SeqCst pairs with `begin`: a load counted after this store sees it and takes itself
        // out again; one counted before it is waited for.
        self.draining.store(true, SeqCst);
    }

    fn running(&self) -> usize {
        self.running.load(SeqCst)
    }

    /// Waits until no load that started before the drain is running.
    async fn finished(&self) {
        loop {
            // Made before the check, so a wake-up between the two is not lost.
            let woken = self.finished.notified();
            if self.running.load(SeqCst) == 0 {
                return;
            }
            woken.await;
        }
    }

    /// Counts a load that starts now, if the drain has not started; the guard counts it out
    /// however the load ends.
    fn begin(self: &Arc<Self>) -> DrainCount {
        self.running.fetch_add(1, SeqCst);
        if self.draining.load(SeqCst) {
            // Started after the drain: not waited for.
            self.end();
            return DrainCount(None);
        }
        DrainCount(Some(self.clone()))
    }

    fn end(&self) {
        if self.running.fetch_sub(1, SeqCst) == 1 && self.draining.load(SeqCst) {
            self.finished.notify_waiters();
        }
    }
}

/// A load counted by the drain; counted out when dropped.
struct DrainCount(Option<Arc<Drain>>);

impl Drop for DrainCount {
    fn drop(&mut self) {
        if let Some(drain) = self.0.take() {
            drain.end();
        }
    }
}

tokio::task_local! {
    /// The keys that the loads running on this task's call path are loading: set around each
    /// load, so a get made from inside a data source can tell that it waits for itself.
    static LOAD_CHAIN: Option<Arc<LoadChain>>;
}

/// One load on a call path, and the load that waits for it.
pub(crate) struct LoadChain {
    /// The source's address, which tells a source of this cache from one of another cache
    /// in the process. Compared only; the load holds the source alive.
    group: usize,
    key: Arc<str>,
    parent: Option<Arc<LoadChain>>,
}

impl LoadChain {
    /// The loads the current task runs inside, if any.
    fn current() -> Option<Arc<LoadChain>> {
        LOAD_CHAIN.try_with(Clone::clone).ok().flatten()
    }

    fn push(
        parent: Option<Arc<LoadChain>>,
        group: &Arc<Group>,
        key: Arc<str>,
    ) -> Option<Arc<Self>> {
        Some(Arc::new(Self {
            group: Arc::as_ptr(group) as usize,
            key,
            parent,
        }))
    }

    fn contains(&self, group: &Arc<Group>, key: &str) -> bool {
        let mut link = Some(self);
        while let Some(chain) = link {
            if chain.group == Arc::as_ptr(group) as usize && *chain.key == *key {
                return true;
            }
            link = chain.parent.as_deref();
        }
        false
    }
}

struct ProbeSlot<'a>(&'a PeerHealth, &'a str);

impl Drop for ProbeSlot<'_> {
    fn drop(&mut self) {
        self.0.probe_abandoned(self.1);
    }
}
