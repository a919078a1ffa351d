//! Counters, as golang/groupcache's `Stats` and `CacheStats`, and a snapshot of them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// What one data source has done since the cache was built: the fields of golang/groupcache's
/// `Stats`, with the same meaning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct SourceStats {
    /// Every get, from this node's callers and from peers.
    pub gets: u64,
    /// Gets served from the main or hot cache.
    pub cache_hits: u64,
    /// Values fetched from the owning peer.
    pub peer_loads: u64,
    /// Peer fetches that failed (down, timed out, bad status, garbage); each fell back to a
    /// local load.
    pub peer_errors: u64,
    /// Gets that missed the cache (`gets - cache_hits`).
    pub loads: u64,
    /// Loads after deduplication: misses that were not joined to a load already running.
    pub loads_deduped: u64,
    /// Successful calls of the data source on this node.
    pub local_loads: u64,
    /// Failed (or panicked) calls of the data source on this node.
    pub local_load_errs: u64,
    /// Gets that came from peers over HTTP.
    pub server_requests: u64,
}

/// The state of one cache (main or hot) of a data source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct CacheStats {
    /// Bytes held: the sum of `key.len() + value.len()` over the entries.
    pub bytes: u64,
    /// Entries held.
    pub items: u64,
    /// Lookups.
    pub gets: u64,
    /// Lookups that found a live entry.
    pub hits: u64,
    /// Entries evicted to make room, or refused for being larger than the cache.
    pub evictions: u64,
}

/// A snapshot of one data source: its counters and its two caches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct SourceSnapshot {
    /// The source's name.
    pub name: String,
    /// Its counters.
    pub stats: SourceStats,
    /// The main cache: keys this node owns, and values it loaded when an owner failed.
    pub main_cache: CacheStats,
    /// The hot cache: copies of keys other nodes own.
    pub hot_cache: CacheStats,
}

/// This node's view of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ClusterStats {
    /// This node's URL, if it has one (none in single-node mode).
    pub self_url: Option<String>,
    /// The peers on the ring, this node included.
    pub peers: Vec<String>,
    /// The number of peers on the ring.
    pub count: usize,
}

/// A snapshot of a whole cache: every data source, sorted by name, and the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Stats {
    /// One entry per data source, sorted by name.
    pub sources: Vec<SourceSnapshot>,
    /// The cluster as this node sees it.
    pub cluster: ClusterStats,
}

impl Stats {
    /// The snapshot of the data source named `name`.
    pub fn source(&self, name: &str) -> Option<&SourceSnapshot> {
        self.sources.iter().find(|s| s.name == name)
    }
}

/// The live counters behind [`SourceStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) gets: AtomicU64,
    pub(crate) cache_hits: AtomicU64,
    pub(crate) peer_loads: AtomicU64,
    pub(crate) peer_errors: AtomicU64,
    pub(crate) loads: AtomicU64,
    pub(crate) loads_deduped: AtomicU64,
    pub(crate) local_loads: AtomicU64,
    pub(crate) local_load_errs: AtomicU64,
    pub(crate) server_requests: AtomicU64,
}

pub(crate) fn incr(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> SourceStats {
        SourceStats {
            gets: self.gets.load(Relaxed),
            cache_hits: self.cache_hits.load(Relaxed),
            peer_loads: self.peer_loads.load(Relaxed),
            peer_errors: self.peer_errors.load(Relaxed),
            loads: self.loads.load(Relaxed),
            loads_deduped: self.loads_deduped.load(Relaxed),
            local_loads: self.local_loads.load(Relaxed),
            local_load_errs: self.local_load_errs.load(Relaxed),
            server_requests: self.server_requests.load(Relaxed),
        }
    }
}
