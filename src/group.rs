//! One data source on one node: its options, caches, counters, loads in flight, removal
//! epochs and key popularity.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHasher};
use std::hash::{BuildHasher as _, Hash, Hasher};

use crate::cache::{Caches, Entry, Tier};
use crate::error::Error;
use crate::singleflight::Singleflight;
use crate::source::DynSource;
use crate::stats::Counters;

/// How long values of one data source live, and whether stale ones may be served. See
/// [`GroupcacheBuilder::source_with`](crate::GroupcacheBuilder::source_with).
///
/// ```
/// use std::time::Duration;
/// use tower_groupcache::SourceOptions;
///
/// let options = SourceOptions::new()
///     .ttl(Duration::from_secs(300))            // unless the source says otherwise
///     .ttl_jitter(Duration::from_secs(30))      // spread expiries of keys loaded together
///     .negative_ttl(Duration::from_secs(10))    // remember *not found* for 10 s
///     .stale_while_revalidate(Duration::from_secs(60))
///     .stale_if_error(Duration::from_secs(600));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct SourceOptions {
    pub(crate) ttl: Option<Duration>,
    pub(crate) ttl_jitter: Duration,
    pub(crate) negative_ttl: Option<Duration>,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
}

impl SourceOptions {
    /// No TTL, no negative caching, no stale serving: golang/groupcache's behaviour.
    pub fn new() -> Self {
        Self::default()
    }

    /// The TTL of values whose load gave none. A TTL the source gives wins.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Adds a random extra of up to `jitter` to each TTL, so that keys loaded together do not
    /// all expire together.
    pub fn ttl_jitter(mut self, jitter: Duration) -> Self {
        self.ttl_jitter = jitter;
        self
    }

    /// Caches *not found* answers for `ttl`. Off by default: *not found* is asked again
    /// each time.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }

    /// For `grace` after a value expires, a get returns the expired value at once while one
    /// background load refreshes it. Off by default.
    pub fn stale_while_revalidate(mut self, grace: Duration) -> Self {
        self.stale_while_revalidate = grace;
        self
    }

    /// For `window` after a value expires, a get whose load fails returns the expired value
    /// instead of the error (counted as `stale_served`). Off by default.
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = window;
        self
    }

    /// The entry for a value loaded now, with `ttl` from the source (or the default).
    pub(crate) fn entry(
        &self,
        value: bytes::Bytes,
        ttl: Option<Duration>,
        key: &str,
        now: Instant,
    ) -> Entry {
        let ttl = ttl
            .or(self.ttl)
            .map(|ttl| ttl.saturating_add(jitter(self.ttl_jitter, key, now)));
        let expires = ttl.and_then(|ttl| now.checked_add(ttl));
        Entry {
            value,
            expires,
            keeps_stale: expires.is_some() && !self.stale_window().is_zero(),
            negative: false,
        }
    }

    /// How long past its expiry a value is kept, for stale serving.
    pub(crate) fn stale_window(&self) -> Duration {
        self.stale_while_revalidate.max(self.stale_if_error)
    }
}

/// A pseudo-random share of `jitter` from the key and the time.
fn jitter(jitter: Duration, key: &str, now: Instant) -> Duration {
    if jitter.is_zero() {
        return Duration::ZERO;
    }
    let mut hasher = FxHasher::default();
    key.hash(&mut hasher);
    now.hash(&mut hasher);
    let fraction =
        (hasher.finish().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64 / (1u64 << 53) as f64;
    jitter.mul_f64(fraction)
}

/// How a node decides to keep a copy of a key another node owns.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum HotKeys {
    /// Never: every get of a remote key asks its owner.
    Never,
    /// golang/groupcache's rule: one fetched value in ten, at random.
    OneInTen,
    /// When the key's request rate, as its owner measures it across the cluster
    /// (`GetResponse.minute_qps`) or as this node sees it, reaches this many requests per
    /// second. Rates decay over about a minute.
    AboveQps(f64),
}

impl Default for HotKeys {
    /// `AboveQps(0.05)`: about three requests a minute. On the Zipf workload of
    /// `examples/hotkeys.rs` it made fewer peer requests than golang's 1-in-10 rule with
    /// fewer hot copies (docs/hotkeys.md).
    fn default() -> Self {
        Self::AboveQps(DEFAULT_HOT_QPS)
    }
}

/// The default promotion threshold, in requests per second: about three a minute.
pub(crate) const DEFAULT_HOT_QPS: f64 = 0.05;

/// Epochs of 256 buckets of keys; removing a key bumps its bucket's epoch, and a load that
/// started under another epoch keeps its value out of the cache.
const EPOCH_BUCKETS: usize = 256;

/// Per-key request rates, decaying with a time constant of one minute, in a bounded map.
///
/// Keys are held by a 64-bit hash from a randomly seeded hasher, so a hit allocates nothing
/// and chosen keys cannot crowd one bucket; the map is split in shards, each behind its own
/// short lock, so two threads rarely wait on each other.
pub(crate) struct Rates {
    hasher: quick_cache::DefaultHashBuilder,
    shards: Box<[RateShard]>,
}

/// Key hash to (decaying count, time of the last request).
type RateShard = Mutex<FxHashMap<u64, (f64, Instant)>>;

impl Default for Rates {
    fn default() -> Self {
        Self {
            hasher: quick_cache::DefaultHashBuilder::default(),
            shards: (0..RATE_SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl std::fmt::Debug for Rates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rates").finish_non_exhaustive()
    }
}

const RATE_WINDOW: f64 = 60.0;
const RATE_SHARDS: usize = 16;
/// Keys tracked per shard (16,384 in all).
const RATE_KEYS_PER_SHARD: usize = 1_024;

impl Rates {
    /// Counts one request for `key` now; returns its rate in requests per second.
    pub(crate) fn hit(&self, key: &str, now: Instant) -> f64 {
        let hash = self.hasher.hash_one(key);
        let shard = &self.shards[(hash >> 60) as usize % RATE_SHARDS];
        let mut keys = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if keys.len() >= RATE_KEYS_PER_SHARD && !keys.contains_key(&hash) {
            // Forget the keys seen about once. Unless that freed a quarter of the shard, start
            // it over, so that a sweep runs at most once per quarter-shard of new keys.
            keys.retain(|_, (value, at)| decay(*value, *at, now) > 1.0);
            if keys.len() > RATE_KEYS_PER_SHARD * 3 / 4 {
                keys.clear();
            }
        }
        let slot = keys.entry(hash).or_insert((0.0, now));
        slot.0 = decay(slot.0, slot.1, now) + 1.0;
        slot.1 = now;
        slot.0 / RATE_WINDOW
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

fn decay(value: f64, at: Instant, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(at).as_secs_f64();
    value * (-elapsed / RATE_WINDOW).exp()
}

/// The data sources of a cache, sorted by name. A lookup compares names, with no hashing: one
/// by one for the few sources of a typical service, by binary search beyond.
pub(crate) struct Groups(Box<[Arc<Group>]>);

impl Groups {
    pub(crate) fn new(mut groups: Vec<Arc<Group>>) -> Self {
        groups.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Self(groups.into())
    }

    #[inline]
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<Group>> {
        if self.0.len() <= 8 {
            return self.0.iter().find(|g| *g.name == *name);
        }
        let index = self.0.binary_search_by(|g| (*g.name).cmp(name)).ok()?;
        self.0.get(index)
    }

    /// Every source, by name.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Group>> {
        self.0.iter()
    }
}

/// The key of a load in flight: the key, whether it asks the owning peer first (a peer
/// request, always served locally, never joins a load that waits on another peer), and the
/// removal epoch it started under (a get after a remove never joins a load from before it).
pub(crate) type FlightKey = (Arc<str>, bool, u64);

/// One data source and its caches, counters and loads in flight.
pub(crate) struct Group {
    pub(crate) name: Arc<str>,
    pub(crate) source: Arc<dyn DynSource>,
    pub(crate) options: SourceOptions,
    pub(crate) caches: Caches,
    pub(crate) counters: Counters,
    pub(crate) flights: Singleflight<FlightKey, Result<Entry, Error>>,
    /// Rates of peer requests per key, on the owner: sent as `minute_qps`.
    pub(crate) served_rates: Rates,
    /// Rates of fetches per key, on a requester.
    pub(crate) fetch_rates: Rates,
    epochs: Box<[AtomicU64; EPOCH_BUCKETS]>,
    hot_dice: AtomicU64,
}

impl Group {
    pub(crate) fn new(
        name: &str,
        source: Arc<dyn DynSource>,
        options: SourceOptions,
        cache_bytes: u64,
        hot_fraction: f64,
        seed: u64,
        now: Instant,
    ) -> Self {
        Self {
            name: name.into(),
            source,
            caches: Caches::new(cache_bytes, hot_fraction, now, options.stale_window()),
            options,
            counters: Counters::default(),
            flights: Singleflight::default(),
            served_rates: Rates::default(),
            fetch_rates: Rates::default(),
            epochs: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            hot_dice: AtomicU64::new(seed),
        }
    }

    fn bucket(key: &str) -> usize {
        let mut hasher = FxHasher::default();
        key.hash(&mut hasher);
        (hasher.finish() >> 56) as usize % EPOCH_BUCKETS
    }

    /// The removal epoch of `key`'s bucket.
    pub(crate) fn epoch(&self, key: &str) -> u64 {
        self.epochs[Self::bucket(key)].load(SeqCst)
    }

    /// Drops `key` here and bumps its epoch, so no load already running puts it back.
    pub(crate) fn remove(&self, key: &str) {
        self.epochs[Self::bucket(key)].fetch_add(1, SeqCst);
        self.caches.remove(key);
    }

    /// Drops every key here and bumps every epoch.
    pub(crate) fn clear(&self) {
        for epoch in self.epochs.iter() {
            epoch.fetch_add(1, SeqCst);
        }
        self.caches.clear();
    }

    /// Stores `entry` in the `tier` cache unless `key` was removed since `epoch`.
    pub(crate) fn store(&self, tier: Tier, key: &str, entry: Entry, epoch: u64) {
        if self.epoch(key) != epoch {
            return;
        }
        match tier {
            Tier::Main => self.caches.insert_main(key, entry),
            Tier::Hot => self.caches.insert_hot(key, entry),
        }
        // A remove that raced the insert: undo it.
        if self.epoch(key) != epoch {
            self.caches.remove(key);
        }
    }

    /// golang/groupcache's admission: one fetched value in ten. A counter scrambled by a
    /// multiplicative hash stands in for Go's `rand.Intn(10)`, with no shared random state.
    pub(crate) fn one_in_ten(&self) -> bool {
        let n = self.hot_dice.fetch_add(1, Relaxed);
        (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 10 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_rise_with_requests_and_decay() {
        let rates = Rates::default();
        let start = Instant::now();
        let mut rate = 0.0;
        for i in 0..120 {
            rate = rates.hit("k", start + Duration::from_millis(500 * i));
        }
        assert!(
            (1.0..2.5).contains(&rate),
            "about 2 requests per second: {rate}"
        );
        let later = rates.hit("k", start + Duration::from_secs(60 + 600));
        assert!(later < 0.05, "ten idle minutes later: {later}");
    }

    #[test]
    fn rates_stay_bounded_and_keep_warm_keys() {
        let rates = Rates::default();
        let now = Instant::now();
        // A warm key: many requests just now.
        for _ in 0..10 {
            rates.hit("warm", now);
        }
        // 100,000 distinct keys, each seen twice (warm too, until they decay).
        for i in 0..100_000 {
            let key = format!("k{i}");
            rates.hit(&key, now);
            rates.hit(&key, now);
        }
        let tracked = rates.tracked();
        assert!(
            tracked <= RATE_SHARDS * RATE_KEYS_PER_SHARD,
            "{tracked} keys tracked"
        );
        // Cold keys make room without a reset: the warm key keeps its count.
        let rates = Rates::default();
        for _ in 0..10 {
            rates.hit("warm", now);
        }
        for i in 0..100_000 {
            rates.hit(&format!("k{i}"), now + Duration::from_secs(1));
        }
        let rate = rates.hit("warm", now + Duration::from_secs(1));
        assert!(
            rate > 10.0 / RATE_WINDOW,
            "the warm key was forgotten: {rate}"
        );
    }

    #[test]
    fn jitter_spreads_expiries() {
        let options = SourceOptions::new()
            .ttl(Duration::from_secs(100))
            .ttl_jitter(Duration::from_secs(50));
        let now = Instant::now();
        let expiries: Vec<Duration> = (0..200)
            .map(|i| {
                options
                    .entry(bytes::Bytes::new(), None, &format!("k{i}"), now)
                    .expires
                    .unwrap()
                    - now
            })
            .collect();
        assert!(
            expiries
                .iter()
                .all(|d| (Duration::from_secs(100)..Duration::from_secs(150)).contains(d))
        );
        let early = expiries
            .iter()
            .filter(|d| **d < Duration::from_secs(125))
            .count();
        assert!(
            (60..=140).contains(&early),
            "about half in the first half: {early}"
        );
    }
}
