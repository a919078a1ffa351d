//! Export through the [`metrics`] facade.
//!
//! The cache keeps its own counters (see [`Stats`]); a hit touches nothing
//! else. [`Groupcache::record_metrics`](crate::Groupcache::record_metrics) copies a snapshot
//! of them into the facade: counters as absolute values, gauges for bytes and items, labelled
//! by `source` (and `cache`, `main` or `hot`). Call it before each scrape, or let
//! [`Groupcache::export_metrics`](crate::Groupcache::export_metrics) do it at an interval.
//! Load and peer-fetch durations are histograms recorded as they happen. The crate installs no
//! recorder: the application chooses one (for example metrics-exporter-prometheus).
//!
//! | metric | kind | labels | meaning |
//! |---|---|---|---|
//! | `groupcache_gets_total` | counter | source | gets, from callers and peers |
//! | `groupcache_cache_hits_total` | counter | source | gets served from the main or hot cache |
//! | `groupcache_loads_total` | counter | source | gets that missed the cache |
//! | `groupcache_loads_deduped_total` | counter | source | loads after deduplication |
//! | `groupcache_local_loads_total` | counter | source | keys the data source here returned a value for |
//! | `groupcache_local_not_found_total` | counter | source | keys the data source here answered *not found* |
//! | `groupcache_local_load_errors_total` | counter | source | keys whose data-source load here failed or panicked |
//! | `groupcache_peer_loads_total` | counter | source | values fetched from the owner |
//! | `groupcache_peer_not_found_total` | counter | source | *not found* answers from the owner |
//! | `groupcache_peer_errors_total` | counter | source | failed peer fetches (each loaded locally) |
//! | `groupcache_peer_load_errors_total` | counter | source | the owner's data source failed (not loaded again here) |
//! | `groupcache_peer_skips_total` | counter | source | peer fetches skipped for a failing owner |
//! | `groupcache_server_requests_total` | counter | source | gets that came from peers |
//! | `groupcache_stale_served_total` | counter | source | gets answered with an expired value (stale serving) |
//! | `groupcache_hot_promotions_total` | counter | source | fetched values kept in the hot cache |
//! | `groupcache_cache_bytes` | gauge | source, cache | bytes held (`key + value`) |
//! | `groupcache_cache_items` | gauge | source, cache | entries held |
//! | `groupcache_cache_capacity_bytes` | gauge | source, cache | the most bytes the cache may hold |
//! | `groupcache_cache_gets_total` | counter | source, cache | lookups |
//! | `groupcache_cache_lookup_hits_total` | counter | source, cache | lookups that found a live entry |
//! | `groupcache_cache_evictions_total` | counter | source, cache | entries evicted or refused |
//! | `groupcache_peers` | gauge | | peers on the ring, this node included |
//! | `groupcache_skipped_peers` | gauge | | peers skipped now for failing |
//! | `groupcache_ring_fingerprint` | gauge | | this node's ring fingerprint as a number: equal on nodes that agree on the peers |
//! | `groupcache_draining` | gauge | | 1 while the node shuts down (refusing peer requests, waiting for its loads), else 0 |
//! | `groupcache_ring_mismatches_total` | counter | | peer requests from a node with another ring |
//! | `groupcache_discovery_errors_total` | counter | | failed DNS discoveries |
//! | `groupcache_peer_requests_refused_total` | counter | reason | peer requests refused before any work (`missing`, `malformed`, `expired`, `bad_signature`, `replayed`, `replay_record_full`, `closed`, `shutting_down`) |
//! | `groupcache_load_duration_seconds` | histogram | source | data-source calls (a batch is one), failed ones included |
//! | `groupcache_peer_fetch_duration_seconds` | histogram | source | peer fetches, failed ones included |
//! | `groupcache_peer_requests_total` | counter | peer | requests sent to the peer: gets, batched gets, removals, writes, probes |
//! | `groupcache_peer_request_errors_total` | counter | peer, kind | requests to the peer that failed, by kind (`connect`, `request`, `timeout`, `status`, `not_served`, `too_large`, `unsupported`, `body`, `decode`; see [`PeerErrorCounts`](crate::PeerErrorCounts)) |
//! | `groupcache_peer_skipped_total` | counter | peer | fetches not tried because the peer was failing |
//! | `groupcache_peer_bytes_total` | counter | peer, direction | body bytes `sent` to and `received` from the peer |
//! | `groupcache_peer_request_duration_seconds` | histogram | peer | requests to the peer, failed ones included |
//!
//! # Per-peer series
//!
//! The `peer` label is the peer's base URL, for each peer on the ring but this node: a node of
//! a cluster of N has N - 1 of each per-peer series (and one per error kind seen). A peer that
//! leaves the ring is forgotten at once by [`stats`](crate::Groupcache::stats), and
//! `record_metrics` stops writing its series. The `metrics` facade cannot delete a series,
//! so the recorder keeps showing its last values until it drops series that are no longer
//! updated: with metrics-exporter-prometheus, set `PrometheusBuilder::idle_timeout` (for
//! example `MetricKindMask::COUNTER | MetricKindMask::HISTOGRAM` and a few minutes, longer
//! than the interval of `record_metrics`), as examples/node.rs does. Without it, the series
//! of departed peers stay until the process restarts, bounded by the peers that ever were
//! on the ring. Error kinds are written once a peer's count of that kind is above zero.
//!
//! What to alert on: `peer_errors` or `peer_skips` rising (a node is down or unreachable);
//! `ring_mismatches` rising (nodes disagree on the peer list, so keys load twice);
//! `local_load_errors` or `peer_load_errors` rising (a back end fails: the second counts the
//! owner's failures seen by askers); `peer_requests_refused` rising (a node with another
//! secret, a skewed clock, or someone probing the peer path); a hit ratio
//! (`cache_hits / gets`) that falls after a deploy; `ring_fingerprint` differing between the
//! nodes of one cluster for longer than a discovery interval; `cache_bytes` near
//! `cache_capacity_bytes` with `cache_evictions` rising (the cache is too small);
//! `draining` at 1 for longer than the shutdown timeout. deploy/prometheus/ has these as
//! alert rules.

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};

use crate::stats::{CacheStats, PeerStats, Stats};

/// Describes every metric of the [module docs](self) to the installed recorder (units and
/// help texts). [`record_metrics`](crate::Groupcache::record_metrics) calls it on its first
/// call; call it yourself if the recorder is installed later.
pub fn describe_metrics() {
    for (name, help) in [
        (
            "groupcache_gets_total",
            "Gets, from this node's callers and from peers.",
        ),
        (
            "groupcache_cache_hits_total",
            "Gets served from the main or hot cache.",
        ),
        ("groupcache_loads_total", "Gets that missed the cache."),
        (
            "groupcache_loads_deduped_total",
            "Loads after deduplication (one per key at a time).",
        ),
        (
            "groupcache_local_loads_total",
            "Keys the data source on this node returned a value for.",
        ),
        (
            "groupcache_local_not_found_total",
            "Keys the data source on this node answered not found.",
        ),
        (
            "groupcache_local_load_errors_total",
            "Keys whose data-source load on this node failed or panicked.",
        ),
        (
            "groupcache_peer_not_found_total",
            "Not-found answers from the owning peer.",
        ),
        (
            "groupcache_peer_load_errors_total",
            "Peer fetches answered with the owner's data-source failure.",
        ),
        (
            "groupcache_peer_requests_refused_total",
            "Peer requests refused before any work, by reason.",
        ),
        (
            "groupcache_peer_loads_total",
            "Values fetched from the owning peer.",
        ),
        (
            "groupcache_peer_errors_total",
            "Failed peer fetches; each loaded the key locally.",
        ),
        (
            "groupcache_peer_skips_total",
            "Peer fetches skipped because the owner was failing.",
        ),
        (
            "groupcache_server_requests_total",
            "Gets that came from peers over HTTP.",
        ),
        (
            "groupcache_stale_served_total",
            "Gets answered with an expired value (stale serving).",
        ),
        (
            "groupcache_hot_promotions_total",
            "Values fetched from peers and kept in the hot cache.",
        ),
        ("groupcache_cache_gets_total", "Lookups of a cache."),
        (
            "groupcache_cache_lookup_hits_total",
            "Lookups of a cache that found a live entry.",
        ),
        (
            "groupcache_cache_evictions_total",
            "Entries evicted, or refused for their size.",
        ),
        (
            "groupcache_ring_mismatches_total",
            "Peer requests from a node whose ring differs.",
        ),
        (
            "groupcache_discovery_errors_total",
            "DNS discoveries that failed or found no address.",
        ),
        (
            "groupcache_peer_requests_total",
            "Requests sent to one peer.",
        ),
        (
            "groupcache_peer_request_errors_total",
            "Requests to one peer that failed, by kind.",
        ),
        (
            "groupcache_peer_skipped_total",
            "Fetches not tried because the peer was failing.",
        ),
    ] {
        describe_counter!(name, Unit::Count, help);
    }
    describe_gauge!(
        "groupcache_cache_bytes",
        Unit::Bytes,
        "Bytes held by a cache (key + value)."
    );
    describe_gauge!(
        "groupcache_cache_items",
        Unit::Count,
        "Entries held by a cache."
    );
    describe_gauge!(
        "groupcache_cache_capacity_bytes",
        Unit::Bytes,
        "The most bytes a cache may hold."
    );
    describe_gauge!(
        "groupcache_ring_fingerprint",
        Unit::Count,
        "This node's ring fingerprint as a number; equal on nodes that agree on the peers."
    );
    describe_gauge!(
        "groupcache_draining",
        Unit::Count,
        "1 while the node shuts down, else 0."
    );
    describe_gauge!(
        "groupcache_peers",
        Unit::Count,
        "Peers on the ring, this node included."
    );
    describe_gauge!(
        "groupcache_skipped_peers",
        Unit::Count,
        "Peers skipped now for failing."
    );
    describe_histogram!(
        "groupcache_load_duration_seconds",
        Unit::Seconds,
        "Duration of data-source calls on this node."
    );
    describe_histogram!(
        "groupcache_peer_fetch_duration_seconds",
        Unit::Seconds,
        "Duration of fetches from peers."
    );
    describe_histogram!(
        "groupcache_peer_request_duration_seconds",
        Unit::Seconds,
        "Duration of requests to one peer."
    );
    describe_counter!(
        "groupcache_peer_bytes_total",
        Unit::Bytes,
        "Body bytes sent to and received from one peer."
    );
}

/// Copies `stats` into the facade.
pub(crate) fn record(stats: &Stats) {
    for source in &stats.sources {
        let name = source.name.clone();
        let s = &source.stats;
        for (metric, value) in [
            ("groupcache_gets_total", s.gets),
            ("groupcache_cache_hits_total", s.cache_hits),
            ("groupcache_loads_total", s.loads),
            ("groupcache_loads_deduped_total", s.loads_deduped),
            ("groupcache_local_loads_total", s.local_loads),
            ("groupcache_local_not_found_total", s.local_not_found),
            ("groupcache_local_load_errors_total", s.local_load_errs),
            ("groupcache_peer_not_found_total", s.peer_not_found),
            ("groupcache_peer_load_errors_total", s.peer_load_errors),
            ("groupcache_peer_loads_total", s.peer_loads),
            ("groupcache_peer_errors_total", s.peer_errors),
            ("groupcache_peer_skips_total", s.peer_skips),
            ("groupcache_server_requests_total", s.server_requests),
            ("groupcache_stale_served_total", s.stale_served),
            ("groupcache_hot_promotions_total", s.hot_promotions),
        ] {
            counter!(metric, "source" => name.clone()).absolute(value);
        }
        record_cache(&name, "main", &source.main_cache);
        record_cache(&name, "hot", &source.hot_cache);
    }
    let cluster = &stats.cluster;
    gauge!("groupcache_peers").set(cluster.count as f64);
    gauge!("groupcache_skipped_peers").set(cluster.skipped_peers.len() as f64);
    // Eight hex digits: a u32, which an f64 holds exactly.
    let fingerprint = u32::from_str_radix(&cluster.ring_fingerprint, 16).unwrap_or_default();
    gauge!("groupcache_ring_fingerprint").set(f64::from(fingerprint));
    gauge!("groupcache_draining").set(if cluster.draining { 1.0 } else { 0.0 });
    counter!("groupcache_ring_mismatches_total").absolute(cluster.ring_mismatches);
    counter!("groupcache_discovery_errors_total").absolute(cluster.discovery_errors);
    for (reason, count) in cluster.refused_requests.by_reason() {
        counter!("groupcache_peer_requests_refused_total", "reason" => reason).absolute(count);
    }
    for peer in &stats.peers {
        record_peer(peer);
    }
}

fn record_peer(peer: &PeerStats) {
    let url = peer.url.clone();
    counter!("groupcache_peer_requests_total", "peer" => url.clone())
        .absolute(peer.total_requests());
    counter!("groupcache_peer_skipped_total", "peer" => url.clone()).absolute(peer.skipped);
    for (direction, bytes) in [("sent", peer.bytes_sent), ("received", peer.bytes_received)] {
        counter!("groupcache_peer_bytes_total", "peer" => url.clone(), "direction" => direction)
            .absolute(bytes);
    }
    for (kind, count) in peer.errors.by_kind() {
        if count > 0 {
            counter!("groupcache_peer_request_errors_total", "peer" => url.clone(), "kind" => kind)
                .absolute(count);
        }
    }
}

fn record_cache(source: &str, cache: &'static str, stats: &CacheStats) {
    let labels = [("source", source.to_owned()), ("cache", cache.to_owned())];
    gauge!("groupcache_cache_bytes", &labels).set(stats.bytes as f64);
    gauge!("groupcache_cache_items", &labels).set(stats.items as f64);
    gauge!("groupcache_cache_capacity_bytes", &labels).set(stats.capacity_bytes as f64);
    counter!("groupcache_cache_gets_total", &labels).absolute(stats.gets);
    counter!("groupcache_cache_lookup_hits_total", &labels).absolute(stats.hits);
    counter!("groupcache_cache_evictions_total", &labels).absolute(stats.evictions);
}

/// Records `elapsed` in the histogram `key` through the recorder installed now. The key is
/// made once by its owner: the `histogram!` macro would build its label list anew, an
/// allocation, on every call.
pub(crate) fn record_duration(key: &metrics::Key, elapsed: std::time::Duration) {
    static METADATA: metrics::Metadata<'static> =
        metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
    metrics::with_recorder(|recorder| recorder.register_histogram(key, &METADATA)).record(elapsed);
}
