//! The engine: one node of the cluster, its data sources and their caches, the get flow, the
//! peer fetches, removal, membership and the drain.
//!
//! [`Node`] holds all of a node's state in private fields; only its methods, split by concern
//! into this module's files, touch it. The front (the `Groupcache` facade, the builder, the
//! handle, the middleware, discovery) and the peer server call those methods, and the engine
//! imports none of them: see docs/architecture.md.

mod batching;
mod cache;
mod fetch;
mod gather;
mod get;
mod lifecycle;
mod load;
mod many;
mod membership;
pub(crate) use membership::{ForeignKind, ForeignRing};
mod noise;
mod popularity;
mod queue;
mod removal;
mod singleflight;
mod source;
mod throttle;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::clock::Clock;
use crate::error::{Error, ErrorKind};
use crate::peer::auth::PeerAuth;
use crate::peer::client::PeerClient;
use crate::peer::health::PeerHealth;
use crate::ring::Ring;
use crate::source::DynSource;
use crate::stats::{CacheStats, ClusterStats, SourceSnapshot, Stats};

pub(crate) use cache::Entry;
pub(crate) use get::{Get, Origin};
pub use lifecycle::Shutdown;
pub use removal::Removal;
pub(crate) use source::CachedSource;
pub use source::{HotKeys, SourceOptions};

use lifecycle::Drain;
use noise::Noise;
use source::Sources;

/// Settings fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct NodeConfig {
    pub(crate) base_path: Box<str>,
    pub(crate) replicas: usize,
    pub(crate) ring_kind: crate::ring::RingKind,
    pub(crate) max_key_bytes: usize,
    /// The most keys answered in one batched peer request.
    pub(crate) max_batch_keys: usize,
    /// The largest value taken from a peer, a written one included.
    pub(crate) max_value_bytes: usize,
    /// Single-key gets in flight to one peer (per source) before more are batched; 0: off.
    pub(crate) natural_batching: usize,
    /// How long a get that could go at once waits for others to join its request; zero: none.
    pub(crate) natural_batching_wait: Duration,
    pub(crate) log_keys: bool,
    pub(crate) hot_keys: HotKeys,
    pub(crate) hot_max_staleness: Duration,
    pub(crate) shutdown_timeout: Duration,
}

/// What a node is built from: its settings, checked by the builder.
pub(crate) struct NodeParts {
    pub(crate) self_url: Option<String>,
    pub(crate) ring: Ring,
    pub(crate) config: NodeConfig,
    pub(crate) client: PeerClient,
    pub(crate) sources: Vec<(String, Arc<dyn DynSource>, SourceOptions)>,
    pub(crate) cache_bytes: u64,
    pub(crate) hot_cache_fraction: f64,
    pub(crate) health: PeerHealth,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) auth: Option<Arc<PeerAuth>>,
    pub(crate) open_peer_path: bool,
    pub(crate) https: bool,
}

/// One node: what its layer, its handles and its loads share.
pub(crate) struct Node {
    self_url: Option<Arc<str>>,
    ring: ArcSwap<Ring>,
    config: NodeConfig,
    client: PeerClient,
    sources: Sources,
    health: PeerHealth,
    ring_mismatches: AtomicU64,
    /// Counts and log throttles of what anyone who reaches the peer path can cause.
    noise: Noise,
    discovery_errors: AtomicU64,
    /// Dropped with the node: background tasks watching it stop at once.
    closed: tokio::sync::watch::Sender<()>,
    /// The shutdown's state: once it starts, peer requests are refused with 503, and it
    /// waits for the loads that started before it.
    drain: Arc<Drain>,
    metrics_described: AtomicBool,
    clock: Arc<dyn Clock>,
    /// Signs and checks peer requests when a peer secret is set.
    auth: Option<Arc<PeerAuth>>,
    /// Without a secret: whether peer requests are served at all.
    open_peer_path: bool,
    /// Whether https peer URLs are allowed (TLS configured).
    https: bool,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sources: Vec<&str> = self.sources.iter().map(|s| &*s.name).collect();
        f.debug_struct("Groupcache")
            .field("self_url", &self.self_url)
            .field("ring", &**self.ring.load())
            .field("config", &self.config)
            .field("sources", &sources)
            .finish()
    }
}

impl Node {
    /// A node from checked settings; inside a tokio runtime, with a self URL, it starts the
    /// check of its own peer path (see [`check_own_peer_path`](Self::check_own_peer_path)).
    pub(crate) fn new(parts: NodeParts) -> Arc<Self> {
        // Expiries in the stores are kept relative to the clock's time now.
        let now = parts.clock.now();
        let self_url = parts.self_url.map(Arc::<str>::from);
        let sources = parts
            .sources
            .into_iter()
            .map(|(name, source, options)| {
                // Nodes start their hot-cache dice at different places, from their own URL.
                let seed = u64::from(crc32fast::hash(
                    format!("{}{name}", self_url.as_deref().unwrap_or_default()).as_bytes(),
                ));
                Arc::new(CachedSource::new(
                    &name,
                    source,
                    options,
                    parts.cache_bytes,
                    parts.hot_cache_fraction,
                    seed,
                    now,
                ))
            })
            .collect();
        let node = Arc::new(Self {
            self_url,
            ring: ArcSwap::from_pointee(parts.ring),
            config: parts.config,
            client: parts.client,
            sources: Sources::new(sources),
            health: parts.health,
            ring_mismatches: AtomicU64::new(0),
            noise: Noise::default(),
            discovery_errors: AtomicU64::new(0),
            closed: tokio::sync::watch::channel(()).0,
            drain: Arc::default(),
            metrics_described: AtomicBool::new(false),
            clock: parts.clock,
            auth: parts.auth,
            open_peer_path: parts.open_peer_path,
            https: parts.https,
        });
        let peers: Vec<String> = node.ring.load().peers().map(str::to_owned).collect();
        node.client.retain_peers(&peers, node.self_url.as_deref());
        node.check_own_peer_path();
        node
    }

    pub(crate) fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The peer timeout, which bounds a peer exchange on either side.
    pub(crate) fn peer_timeout(&self) -> Duration {
        self.client.timeout()
    }

    pub(crate) fn self_url(&self) -> Option<&str> {
        self.self_url.as_deref()
    }

    /// The ring in use now.
    pub(crate) fn ring(&self) -> Arc<Ring> {
        self.ring.load_full()
    }

    pub(crate) fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// Changes the moment the node is dropped: a background task stops on it.
    pub(crate) fn closed(&self) -> tokio::sync::watch::Receiver<()> {
        self.closed.subscribe()
    }

    /// Whether the metrics were described to the recorder before; describes them once.
    pub(crate) fn first_metrics_record(&self) -> bool {
        !self.metrics_described.swap(true, Relaxed)
    }

    /// `span` with the key in its `key` field, if keys may be logged (`log_keys`): they often
    /// hold personal data.
    fn with_key(&self, span: tracing::Span, key: &str) -> tracing::Span {
        if self.config.log_keys {
            span.record("key", key);
        }
        span
    }

    /// The data source `name`.
    pub(crate) fn source(&self, name: &str) -> Result<&Arc<CachedSource>, Error> {
        self.sources
            .get(name)
            .ok_or_else(|| Error::new(ErrorKind::UnknownSource, name))
    }

    pub(crate) fn stats(&self) -> Stats {
        let mut sources: Vec<SourceSnapshot> = self
            .sources
            .iter()
            .map(|source| {
                let totals = source.counters.totals();
                SourceSnapshot {
                    name: source.name.to_string(),
                    stats: totals.source_stats(),
                    main_cache: CacheStats {
                        gets: totals.main_gets(),
                        hits: totals.main_hits(),
                        ..source.caches.main_stats()
                    },
                    hot_cache: CacheStats {
                        gets: totals.hot_gets(),
                        hits: totals.hot_hits(),
                        ..source.caches.hot_stats()
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
                draining: self.is_draining(),
            },
            peers: self.client.peer_stats(),
        }
    }
}
