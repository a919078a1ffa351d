//! Per-peer figures: the requests this node sends each peer of its ring, their failures by
//! kind, the fetches skipped, the body bytes each way, and a latency histogram. Live counters
//! here; [`PeerStats`] is their snapshot.
//!
//! Only the peers on the ring (this node aside) have figures: a peer that leaves it is
//! forgotten, so there are never more entries than the cluster has nodes. A request to any
//! other URL (this node's check of its own peer path, a fetch that outlived its peer's
//! removal) is not counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics::{Key, Label, SharedString};
use rustc_hash::FxHashMap;

use super::error::PeerError;
use crate::stats::{PeerErrorCounts, PeerRequestCounts, PeerStats};

/// What a request to a peer is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RequestKind {
    Get,
    BatchedGet,
    Removal,
    Write,
    Probe,
}

const REQUEST_KINDS: usize = 5;
/// The kinds of [`PeerErrorCounts`], in the order of its fields.
const ERROR_KINDS: usize = 9;

impl PeerError {
    /// The field of [`PeerErrorCounts`] that counts this failure.
    fn counted_as(&self) -> usize {
        match self {
            // A URL the builder let through but that cannot be connected to.
            Self::Connect(_) | Self::Uri(_) | Self::NoAuthority => 0,
            Self::Request(_) => 1,
            Self::Timeout(_) => 2,
            Self::Status(_) => 3,
            Self::NotServed => 4,
            Self::TooLarge => 5,
            Self::Unsupported => 6,
            Self::Body(_) => 7,
            Self::Decode(_) | Self::BatchMismatch { .. } => 8,
        }
    }
}

/// The live figures of one peer. Each request adds to a few shared atomics: a request is a
/// network round trip, far slower than an uncontended add.
#[derive(Debug)]
pub(crate) struct PeerFigures {
    url: Arc<str>,
    requests: [AtomicU64; REQUEST_KINDS],
    errors: [AtomicU64; ERROR_KINDS],
    skipped: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    latency: Latency,
    /// `groupcache_peer_request_duration_seconds{peer}`, made once: the macros would build
    /// its label list anew, an allocation, for every request.
    duration_key: Key,
}

impl PeerFigures {
    fn new(url: &str) -> Self {
        let url: Arc<str> = url.into();
        let duration_key = Key::from_parts(
            "groupcache_peer_request_duration_seconds",
            vec![Label::new("peer", SharedString::from(url.clone()))],
        );
        Self {
            url,
            duration_key,
            requests: Default::default(),
            errors: Default::default(),
            skipped: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            latency: Latency::default(),
        }
    }

    /// Records a request's duration in `groupcache_peer_request_duration_seconds`, through
    /// the recorder installed now.
    pub(crate) fn record_duration(&self, elapsed: Duration) {
        crate::metrics::record_duration(&self.duration_key, elapsed);
    }

    pub(crate) fn request(&self, kind: RequestKind) {
        self.requests[kind as usize].fetch_add(1, Relaxed);
    }

    /// A request ended after `elapsed`, failed with `error` or not.
    pub(crate) fn ended(&self, elapsed: Duration, error: Option<&PeerError>) {
        if let Some(error) = error {
            self.errors[error.counted_as()].fetch_add(1, Relaxed);
        }
        self.latency.record(elapsed);
    }

    pub(crate) fn sent(&self, bytes: usize) {
        self.bytes_sent.fetch_add(bytes as u64, Relaxed);
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.bytes_received.fetch_add(bytes as u64, Relaxed);
    }

    fn snapshot(&self) -> PeerStats {
        let requests = self.requests.each_ref().map(|n| n.load(Relaxed));
        let errors = self.errors.each_ref().map(|n| n.load(Relaxed));
        let [gets, batched_gets, removals, writes, probes] = requests;
        let [
            connect,
            request,
            timeout,
            status,
            not_served,
            too_large,
            unsupported,
            body,
            decode,
        ] = errors;
        let latency = self.latency.counts();
        PeerStats {
            url: self.url.to_string(),
            requests: PeerRequestCounts {
                gets,
                batched_gets,
                removals,
                writes,
                probes,
            },
            errors: PeerErrorCounts {
                connect,
                request,
                timeout,
                status,
                not_served,
                too_large,
                unsupported,
                body,
                decode,
            },
            skipped: self.skipped.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            latency_p50: Latency::quantile(&latency, 0.50),
            latency_p99: Latency::quantile(&latency, 0.99),
        }
    }
}

/// Sub-buckets per doubling of the duration: each bucket is at most a quarter of its lower
/// bound wide, so its midpoint is within an eighth of any duration in it.
const SUB_BITS: u32 = 2;
const SUBS: u64 = 1 << SUB_BITS;
/// Durations are counted in microseconds up to 2^34 µs (about 4.8 hours); longer ones go in
/// the last bucket.
const MAX_EXP: u32 = 33;
const BUCKETS: usize = ((MAX_EXP - SUB_BITS + 2) as u64 * SUBS) as usize;

/// A histogram of request durations in fixed buckets of atomics: exact below 4 µs, then 4
/// buckets per doubling.
#[derive(Debug)]
struct Latency {
    buckets: [AtomicU64; BUCKETS],
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl Latency {
    fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.buckets[Self::bucket(micros)].fetch_add(1, Relaxed);
    }

    /// The bucket of a duration of `micros` µs.
    fn bucket(micros: u64) -> usize {
        let micros = micros.min((1 << (MAX_EXP + 1)) - 1);
        if micros < SUBS {
            return micros as usize;
        }
        let exp = 63 - micros.leading_zeros();
        let sub = (micros >> (exp - SUB_BITS)) & (SUBS - 1);
        ((u64::from(exp) - u64::from(SUB_BITS) + 1) * SUBS + sub) as usize
    }

    /// The durations of bucket `index`, in µs: from `.0` up to, not including, `.1`.
    fn bounds(index: usize) -> (u64, u64) {
        let index = index as u64;
        if index < SUBS {
            return (index, index + 1);
        }
        let exp = index / SUBS + u64::from(SUB_BITS) - 1;
        let sub = index % SUBS;
        let width = 1 << (exp - u64::from(SUB_BITS));
        let low = (SUBS + sub) * width;
        (low, low + width)
    }

    fn counts(&self) -> [u64; BUCKETS] {
        self.buckets.each_ref().map(|n| n.load(Relaxed))
    }

    /// The midpoint of the bucket that holds quantile `q` of `counts`; `None` if empty.
    fn quantile(counts: &[u64; BUCKETS], q: f64) -> Option<Duration> {
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        // The rank of the quantile, 1-based: the smallest count that covers `q` of all.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        let index = counts.iter().position(|&n| {
            seen += n;
            seen >= rank
        })?;
        let (low, high) = Self::bounds(index);
        Some(Duration::from_nanos((low + high) * 500))
    }
}

/// The figures of the peers on the ring, by URL. Read on every request without a lock; a
/// membership change swaps in a new map, keeping the figures of the peers that stay.
#[derive(Debug, Default)]
pub(crate) struct PeerTable {
    peers: ArcSwap<FxHashMap<Box<str>, Arc<PeerFigures>>>,
}

impl PeerTable {
    /// The figures of `peer`, if it is on the ring.
    pub(crate) fn of(&self, peer: &str) -> Option<Arc<PeerFigures>> {
        self.peers.load().get(peer).cloned()
    }

    /// The peers are now `peers`: the others are forgotten, a new one starts from zero.
    pub(crate) fn retain_peers<'a>(&self, peers: impl IntoIterator<Item = &'a str> + Clone) {
        self.peers.rcu(|old| {
            peers
                .clone()
                .into_iter()
                .map(|peer| {
                    let figures = old
                        .get(peer)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(PeerFigures::new(peer)));
                    (Box::from(peer), figures)
                })
                .collect::<FxHashMap<_, _>>()
        });
    }

    /// Counts `keys` fetches from `peer` skipped because it was failing.
    pub(crate) fn skipped(&self, peer: &str, keys: usize) {
        if let Some(figures) = self.peers.load().get(peer) {
            figures.skipped.fetch_add(keys as u64, Relaxed);
        }
    }

    /// Every peer's figures, sorted by URL.
    pub(crate) fn snapshot(&self) -> Vec<PeerStats> {
        let mut peers: Vec<PeerStats> = self
            .peers
            .load()
            .values()
            .map(|figures| figures.snapshot())
            .collect();
        peers.sort_unstable_by(|a, b| a.url.cmp(&b.url));
        peers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_hold_their_durations() {
        let mut expected_low = 0;
        for index in 0..BUCKETS {
            let (low, high) = Latency::bounds(index);
            assert_eq!(
                low,
                expected_low,
                "bucket {index} starts where {} ends",
                index.saturating_sub(1)
            );
            assert!(high > low);
            assert_eq!(Latency::bucket(low), index);
            assert_eq!(Latency::bucket(high - 1), index);
            // At most a quarter of its lower bound wide, past the exact ones.
            if low >= SUBS {
                assert!((high - low) * 4 <= low, "bucket {index}: {low}..{high}");
            }
            expected_low = high;
        }
        assert_eq!(Latency::bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_come_within_an_eighth() {
        let latency = Latency::default();
        // 1 ms to 100 ms, one of each millisecond.
        for ms in 1..=100 {
            latency.record(Duration::from_millis(ms));
        }
        let counts = latency.counts();
        let p50 = Latency::quantile(&counts, 0.5).unwrap().as_secs_f64();
        let p99 = Latency::quantile(&counts, 0.99).unwrap().as_secs_f64();
        assert!((p50 - 0.050).abs() <= 0.050 / 8.0, "p50 {p50}");
        assert!((p99 - 0.099).abs() <= 0.099 / 8.0, "p99 {p99}");
        assert_eq!(Latency::quantile(&[0; BUCKETS], 0.5), None);
    }

    #[test]
    fn the_table_keeps_the_peers_that_stay() {
        let table = PeerTable::default();
        table.retain_peers(["http://a", "http://b"]);
        table.of("http://a").unwrap().request(RequestKind::Get);
        table.skipped("http://b", 3);
        table.retain_peers(["http://a", "http://c"]);
        let peers = table.snapshot();
        let urls: Vec<&str> = peers.iter().map(|p| p.url.as_str()).collect();
        assert_eq!(urls, ["http://a", "http://c"]);
        assert_eq!(peers[0].requests.gets, 1, "a stayed, with its figures");
        assert!(table.of("http://b").is_none(), "b left");
        table.retain_peers(["http://b"]);
        assert_eq!(table.snapshot()[0].skipped, 0, "b came back from zero");
    }
}
