//! Counters, as golang/groupcache's `Stats` and `CacheStats`, and a snapshot of them.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use thread_local::ThreadLocal;

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
    /// Values fetched from the owning peer (its *not found* answers are `peer_not_found`).
    pub peer_loads: u64,
    /// Peer fetches that failed (down, timed out, bad status, garbage, or a value over
    /// `max_value_bytes`); each fell back to a local load.
    pub peer_errors: u64,
    /// Peer fetches the owner answered with its data source's failure (a node of this crate
    /// says so distinctly): the get failed with that error, and the key was not loaded a
    /// second time here. The owner was healthy.
    pub peer_load_errors: u64,
    /// Peer fetches the owner answered with *not found*.
    pub peer_not_found: u64,
    /// Gets that missed the cache and joined or started a load.
    pub loads: u64,
    /// Loads after deduplication: misses that were not joined to a load already running.
    pub loads_deduped: u64,
    /// Keys the data source on this node returned a value for (a batch load counts each of
    /// its keys).
    pub local_loads: u64,
    /// Keys the data source on this node answered *not found*.
    pub local_not_found: u64,
    /// Keys whose load from the data source on this node failed (or panicked).
    pub local_load_errs: u64,
    /// Gets that came from peers over HTTP.
    pub server_requests: u64,
    /// Peer fetches not tried because the owner was failing (see
    /// [`PeerHealthConfig`](crate::PeerHealthConfig)); each loaded the key locally.
    pub peer_skips: u64,
    /// Gets answered with an expired value: within its stale-while-revalidate grace (while a
    /// background load refreshes it), or because the load failed (stale-if-error). See
    /// [`SourceOptions`](crate::SourceOptions).
    pub stale_served: u64,
    /// Values fetched from a peer and kept in the hot cache.
    pub hot_promotions: u64,
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
    /// Lookups of this cache, which are not gets: a get looks in the main cache, then (on a
    /// miss) in the hot cache, and a load looks in both once more before it starts. The
    /// field keeps golang/groupcache's name, `Gets`.
    pub gets: u64,
    /// Lookups that found a live entry.
    pub hits: u64,
    /// Entries evicted to make room, or refused for being larger than the cache.
    pub evictions: u64,
    /// The most bytes this cache may hold: its share of the source's cache bytes (0 when it
    /// is off). `bytes` near it, with `evictions` rising, means the cache is too small.
    pub capacity_bytes: u64,
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
    /// This node's ring fingerprint, 8 hex digits; equal on nodes that agree on the peers.
    pub ring_fingerprint: String,
    /// Peer requests that arrived with a ring fingerprint different from this node's: the
    /// sender's peer list differs, so the two place some keys differently.
    pub ring_mismatches: u64,
    /// Peers skipped now for failing.
    pub skipped_peers: Vec<String>,
    /// DNS lookups of [`DnsDiscovery`](crate::DnsDiscovery) that failed or found no address;
    /// each kept the last peer list.
    pub discovery_errors: u64,
    /// Peer requests refused before any work, by reason.
    pub refused_requests: RefusalStats,
    /// Whether this node is shutting down ([`Groupcache::shutdown`](crate::Groupcache::shutdown)
    /// was called): it refuses peer requests and waits for its loads.
    pub draining: bool,
}

/// Peer requests a node refused before any work, by reason. Refusals are counted, and logged
/// at most once per ten seconds per reason with the number left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct RefusalStats {
    /// No credential (`401`).
    pub missing: u64,
    /// A credential that does not parse (`401`).
    pub malformed: u64,
    /// A credential too far from this node's clock (`401`).
    pub expired: u64,
    /// A credential signed with another secret, or over another request (`401`).
    pub bad_signature: u64,
    /// A credential already used (`401`).
    pub replayed: u64,
    /// A credential of a sender the full replay record could not take (`401`).
    pub replay_record_full: u64,
    /// A request to a node without a peer secret whose peer path is closed (`403`).
    pub closed: u64,
    /// A request to a node that is shutting down (`503`).
    pub shutting_down: u64,
}

impl RefusalStats {
    /// Every refusal, with its reason as the metrics label.
    pub fn by_reason(&self) -> [(&'static str, u64); 8] {
        [
            ("missing", self.missing),
            ("malformed", self.malformed),
            ("expired", self.expired),
            ("bad_signature", self.bad_signature),
            ("replayed", self.replayed),
            ("replay_record_full", self.replay_record_full),
            ("closed", self.closed),
            ("shutting_down", self.shutting_down),
        ]
    }
}

/// What this node sent one peer of its ring, and how the peer answered, since the peer joined
/// the ring (a peer that leaves it is forgotten, and starts from zero if it comes back).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PeerStats {
    /// The peer's base URL, as on the peer list.
    pub url: String,
    /// Requests sent, by kind.
    pub requests: PeerRequestCounts,
    /// Requests that failed, by why.
    pub errors: PeerErrorCounts,
    /// Keys whose fetch from this peer was not tried because the peer was being skipped for
    /// failing (see [`PeerHealthConfig`](crate::PeerHealthConfig)); each was loaded here.
    pub skipped: u64,
    /// Body bytes sent: the keys of batched gets and removals, the values of writes. The
    /// HTTP heads (a get is a head alone) are not counted.
    pub bytes_sent: u64,
    /// Body bytes received: values, batched answers and error texts. The HTTP heads are not
    /// counted.
    pub bytes_received: u64,
    /// The median duration of a request, failed ones included, from its start (the wait for
    /// a free connection slot included) to its answer read in full; from a histogram of 4
    /// buckets per doubling, so within an eighth of the true value. `None` before any
    /// request.
    pub latency_p50: Option<Duration>,
    /// The 99th percentile duration of a request, as `latency_p50`.
    pub latency_p99: Option<Duration>,
}

impl PeerStats {
    /// Every request sent, of any kind.
    pub fn total_requests(&self) -> u64 {
        self.requests.total()
    }
}

/// Requests sent to one peer, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PeerRequestCounts {
    /// Gets of one key.
    pub gets: u64,
    /// Batched gets (each of up to `max_batch_keys` keys).
    pub batched_gets: u64,
    /// Removals: a `DELETE` of a key or a whole source, or a batched removal.
    pub removals: u64,
    /// Writes of one key.
    pub writes: u64,
    /// Questions of what the peer speaks (`GET` of the bare peer path), asked once before
    /// the first batched get, removal or write, and again if the peer changed.
    pub probes: u64,
}

impl PeerRequestCounts {
    /// Every request, of any kind.
    pub fn total(&self) -> u64 {
        self.gets + self.batched_gets + self.removals + self.writes + self.probes
    }
}

/// Failed requests to one peer, by why.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PeerErrorCounts {
    /// No connection: refused, unreachable, or not within the connect timeout.
    pub connect: u64,
    /// The connection failed during the exchange (reset, closed before the answer).
    pub request: u64,
    /// No complete answer within the request timeout.
    pub timeout: u64,
    /// An HTTP status that is not an answer about the key (`401`, `403`, `5xx`, ...).
    pub status: u64,
    /// A `404` from the peer's router rather than its cache layer.
    pub not_served: u64,
    /// A value over `max_value_bytes`.
    pub too_large: u64,
    /// A removal or write to a peer without this crate's extensions (a Go node).
    pub unsupported: u64,
    /// The answer's body could not be read.
    pub body: u64,
    /// The answer's body was not what the protocol says (garbage, or a batched answer with
    /// another number of results than keys asked).
    pub decode: u64,
}

impl PeerErrorCounts {
    /// Every failed request.
    pub fn total(&self) -> u64 {
        self.by_kind().iter().map(|(_, n)| n).sum()
    }

    /// Every count, with its kind as the metrics label.
    pub fn by_kind(&self) -> [(&'static str, u64); 9] {
        [
            ("connect", self.connect),
            ("request", self.request),
            ("timeout", self.timeout),
            ("status", self.status),
            ("not_served", self.not_served),
            ("too_large", self.too_large),
            ("unsupported", self.unsupported),
            ("body", self.body),
            ("decode", self.decode),
        ]
    }
}

/// A snapshot of a whole cache: every data source, sorted by name, the cluster, and the
/// figures of each peer this node sends requests to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Stats {
    /// One entry per data source, sorted by name.
    pub sources: Vec<SourceSnapshot>,
    /// The cluster as this node sees it.
    pub cluster: ClusterStats,
    /// One entry per peer on the ring but this node, sorted by URL: as many as the cluster
    /// has other nodes. A peer that leaves the ring leaves this list.
    pub peers: Vec<PeerStats>,
}

impl Stats {
    /// The snapshot of the data source named `name`.
    pub fn source(&self, name: &str) -> Option<&SourceSnapshot> {
        self.sources.iter().find(|s| s.name == name)
    }

    /// The figures of the peer whose URL is `url`, if it is on the ring.
    pub fn peer(&self, url: &str) -> Option<&PeerStats> {
        self.peers.iter().find(|p| p.url == url)
    }
}

/// One event that a data source counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    /// A get answered by the main cache when it looked (gets are not counted on their own:
    /// each one that reaches the cache ends in a hit or a `Load`).
    MainHit,
    HotHit,
    /// A flight that found the key in the main or hot cache after all.
    FlightMainHit,
    FlightHotHit,
    /// A load started (a flight); it looks in the caches once more before anything else.
    Flight,
    PeerLoad,
    PeerError,
    PeerLoadError,
    PeerNotFound,
    Load,
    LoadDeduped,
    LocalLoad,
    LocalNotFound,
    LocalLoadErr,
    ServerRequest,
    PeerSkip,
    StaleServed,
    HotPromotion,
}

const EVENTS: usize = 18;

/// One thread's counters, on a cache line of their own.
///
/// Only the thread that owns a stripe adds to it (see [`Counters`]), so an add is a plain load
/// and store, with no read-modify-write; snapshots read the counters from any thread.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Stripe([AtomicU64; EVENTS]);

impl Stripe {
    #[inline]
    pub(crate) fn add(&self, event: Event) {
        let counter = &self.0[event as usize];
        counter.store(counter.load(Relaxed).wrapping_add(1), Relaxed);
    }
}

/// The live counters behind [`SourceStats`] and the hit counts of [`CacheStats`]: a stripe per
/// thread, so two threads that hit the cache at once neither share a cache line nor lose an
/// add. A snapshot sums the stripes.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    stripes: ThreadLocal<Stripe>,
}

/// Totals of every [`Event`], summed over the stripes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Totals([u64; EVENTS]);

impl Totals {
    pub(crate) fn of(&self, event: Event) -> u64 {
        self.0[event as usize]
    }
}

impl Counters {
    #[inline]
    pub(crate) fn add(&self, event: Event) {
        self.stripe().add(event);
    }

    /// This thread's stripe, for several events in a row. A stripe is never shared by two
    /// live threads (`ThreadLocal` hands a dead thread's entry only to a later thread).
    #[inline]
    pub(crate) fn stripe(&self) -> &Stripe {
        match self.stripes.get() {
            Some(stripe) => stripe,
            None => self.new_stripe(),
        }
    }

    /// A thread's first add: its stripe is made.
    #[cold]
    #[inline(never)]
    fn new_stripe(&self) -> &Stripe {
        self.stripes.get_or_default()
    }

    pub(crate) fn totals(&self) -> Totals {
        let mut totals = [0; EVENTS];
        for stripe in self.stripes.iter() {
            for (total, counter) in totals.iter_mut().zip(&stripe.0) {
                *total += counter.load(Relaxed);
            }
        }
        Totals(totals)
    }
}

impl Totals {
    pub(crate) fn source_stats(&self) -> SourceStats {
        SourceStats {
            gets: self.gets(),
            cache_hits: self.main_hits() + self.hot_hits(),
            peer_loads: self.of(Event::PeerLoad),
            peer_errors: self.of(Event::PeerError),
            peer_load_errors: self.of(Event::PeerLoadError),
            peer_not_found: self.of(Event::PeerNotFound),
            loads: self.of(Event::Load),
            loads_deduped: self.of(Event::LoadDeduped),
            local_loads: self.of(Event::LocalLoad),
            local_not_found: self.of(Event::LocalNotFound),
            local_load_errs: self.of(Event::LocalLoadErr),
            server_requests: self.of(Event::ServerRequest),
            peer_skips: self.of(Event::PeerSkip),
            stale_served: self.of(Event::StaleServed),
            hot_promotions: self.of(Event::HotPromotion),
        }
    }

    /// Gets that reached the cache: each ended in a hit or started a load.
    pub(crate) fn gets(&self) -> u64 {
        self.of(Event::MainHit) + self.of(Event::HotHit) + self.of(Event::Load)
    }

    pub(crate) fn main_hits(&self) -> u64 {
        self.of(Event::MainHit) + self.of(Event::FlightMainHit)
    }

    pub(crate) fn hot_hits(&self) -> u64 {
        self.of(Event::HotHit) + self.of(Event::FlightHotHit)
    }

    /// Lookups of the main cache: one per get that reached the cache, and one per flight.
    pub(crate) fn main_gets(&self) -> u64 {
        self.gets() + self.of(Event::Flight)
    }

    /// Every main-cache miss looks in the hot cache.
    pub(crate) fn hot_gets(&self) -> u64 {
        self.main_gets().saturating_sub(self.main_hits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_add_up() {
        let counters = Counters::default();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..1_000 {
                        counters.add(Event::MainHit);
                        counters.add(Event::Load);
                    }
                });
            }
        });
        let totals = counters.totals();
        assert_eq!(totals.gets(), 8_000);
        assert_eq!(totals.source_stats().cache_hits, 4_000);
        assert_eq!(totals.hot_gets(), 4_000, "each load missed the main cache");
    }
}
