//! The byte-bounded stores behind a data source: the main cache (keys this node owns, and
//! values it loaded itself when an owner failed) and the hot cache (copies of keys other nodes
//! own). The store is quick_cache, weighted by `key.len() + value.len()` like
//! golang/groupcache, and it stays behind this module.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use quick_cache::sync::Cache as QuickCache;
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};
use std::time::Instant;

use crate::clock::Clock;
use crate::stats::CacheStats;

/// A cached value (or a cached *not found*), when it stops being fresh, and how long after
/// that it may still be served stale.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) value: Bytes,
    /// Fresh until then; `None` never expires.
    pub(crate) expires: Option<Instant>,
    /// Kept (for stale serving) until then; at least `expires`.
    pub(crate) keep_until: Option<Instant>,
    /// A cached *not found*.
    pub(crate) negative: bool,
}

impl Entry {
    pub(crate) fn value(value: Bytes, expires: Option<Instant>) -> Self {
        Self {
            value,
            expires,
            keep_until: expires,
            negative: false,
        }
    }

    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }
}

/// Whether a cached entry may be served as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    Fresh,
    /// Past its expiry but within its stale window.
    Stale,
}

#[derive(Debug, Clone, Copy)]
struct KeyValueBytes;

impl Weighter<Box<str>, Entry> for KeyValueBytes {
    fn weight(&self, key: &Box<str>, entry: &Entry) -> u64 {
        // Never zero: quick_cache keeps zero-weight entries forever.
        (key.len() + entry.value.len()).max(1) as u64
    }
}

/// Counts evictions (including values too large to be admitted at all).
#[derive(Debug, Clone, Default)]
struct CountEvictions(Arc<AtomicU64>);

impl Lifecycle<Box<str>, Entry> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: Box<str>, _entry: Entry) {
        self.0.fetch_add(1, Relaxed);
    }
}

/// One byte-bounded cache.
pub(crate) struct Store {
    entries: QuickCache<Box<str>, Entry, KeyValueBytes, DefaultHashBuilder, CountEvictions>,
    evictions: Arc<AtomicU64>,
}

/// Rough size of an entry, to size quick_cache's tables; it only needs the right magnitude.
const TYPICAL_ENTRY_BYTES: u64 = 512;

impl Store {
    /// A store holding at most `bytes` of keys and values; `None` for 0 (caching off).
    pub(crate) fn with_capacity(bytes: u64) -> Option<Self> {
        if bytes == 0 {
            return None;
        }
        let lifecycle = CountEvictions::default();
        let evictions = lifecycle.0.clone();
        let items = (bytes / TYPICAL_ENTRY_BYTES).clamp(16, 1 << 24) as usize;
        Some(Self {
            entries: QuickCache::with(
                items,
                bytes,
                KeyValueBytes,
                DefaultHashBuilder::default(),
                lifecycle,
            ),
            evictions,
        })
    }

    /// The entry for `key` and whether it is fresh; one past its stale window is dropped and
    /// reads as a miss. The clock is read only for entries that expire.
    pub(crate) fn get(&self, key: &str, clock: &dyn Clock) -> Option<(Entry, Freshness)> {
        let entry = self.entries.get(key)?;
        let Some(expires) = entry.expires else {
            return Some((entry, Freshness::Fresh));
        };
        let now = clock.now();
        if now < expires {
            return Some((entry, Freshness::Fresh));
        }
        if entry.keep_until.is_some_and(|until| now < until) {
            return Some((entry, Freshness::Stale));
        }
        self.entries.remove(key);
        None
    }

    /// The value of `key` if it is here, fresh and not a cached *not found*: the whole of a
    /// typical hit. `Err(())` when the key is here in another state.
    #[inline]
    fn fresh_value(&self, key: &str, clock: &dyn Clock) -> Option<Result<Bytes, ()>> {
        let entry = self.entries.get(key)?;
        let fresh = !entry.negative && entry.expires.is_none_or(|at| clock.now() < at);
        Some(if fresh { Ok(entry.value) } else { Err(()) })
    }

    pub(crate) fn insert(&self, key: &str, entry: Entry) {
        self.entries.insert(key.into(), entry);
    }

    pub(crate) fn remove(&self, key: &str) -> bool {
        self.entries.remove(key).is_some()
    }

    /// Bytes, items and evictions; the caller adds the lookup counts it keeps.
    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            bytes: self.entries.weight(),
            items: self.entries.len() as u64,
            evictions: self.evictions.load(Relaxed),
            ..CacheStats::default()
        }
    }
}

/// Which cache answered a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    Main,
    Hot,
}

/// Main and hot cache of one data source, within one byte budget.
pub(crate) struct Caches {
    pub(crate) main: Option<Store>,
    pub(crate) hot: Option<Store>,
}

impl Caches {
    /// Splits `cache_bytes` between the two: the hot cache gets `hot_fraction` of it, the
    /// main cache the rest, so together they never hold more than `cache_bytes`.
    pub(crate) fn new(cache_bytes: u64, hot_fraction: f64) -> Self {
        let hot = ((cache_bytes as f64 * hot_fraction.clamp(0.0, 1.0)) as u64).min(cache_bytes);
        Self {
            main: Store::with_capacity(cache_bytes - hot),
            hot: Store::with_capacity(hot),
        }
    }

    /// Looks in the main cache, then the hot cache, and says which one answered.
    pub(crate) fn get(&self, key: &str, clock: &dyn Clock) -> Option<(Entry, Freshness, Tier)> {
        if let Some((entry, fresh)) = self.main.as_ref().and_then(|s| s.get(key, clock)) {
            return Some((entry, fresh, Tier::Main));
        }
        let (entry, fresh) = self.hot.as_ref().and_then(|s| s.get(key, clock))?;
        Some((entry, fresh, Tier::Hot))
    }

    /// The value of `key` when one of the caches holds it fresh (and it is not a cached *not
    /// found*), and which cache. `None` leaves every other case to [`get`](Self::get).
    #[inline]
    pub(crate) fn fresh_value(&self, key: &str, clock: &dyn Clock) -> Option<(Bytes, Tier)> {
        match self.main.as_ref().and_then(|s| s.fresh_value(key, clock)) {
            Some(Ok(value)) => return Some((value, Tier::Main)),
            Some(Err(())) => return None,
            None => {}
        }
        let value = self.hot.as_ref()?.fresh_value(key, clock)?.ok()?;
        Some((value, Tier::Hot))
    }

    /// Drops every entry of both caches.
    pub(crate) fn clear(&self) {
        for store in [&self.main, &self.hot].into_iter().flatten() {
            store.entries.clear();
        }
    }

    pub(crate) fn insert_main(&self, key: &str, entry: Entry) {
        if let Some(main) = &self.main {
            main.insert(key, entry);
        }
    }

    pub(crate) fn insert_hot(&self, key: &str, entry: Entry) {
        if let Some(hot) = &self.hot {
            hot.insert(key, entry);
        }
    }

    /// Drops `key` from both caches; whether either held it.
    pub(crate) fn remove(&self, key: &str) -> bool {
        let main = self.main.as_ref().is_some_and(|s| s.remove(key));
        let hot = self.hot.as_ref().is_some_and(|s| s.remove(key));
        main || hot
    }

    pub(crate) fn main_stats(&self) -> CacheStats {
        self.main.as_ref().map(Store::stats).unwrap_or_default()
    }

    pub(crate) fn hot_stats(&self) -> CacheStats {
        self.hot.as_ref().map(Store::stats).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, SystemClock};
    use std::time::Duration;

    fn entry(len: usize) -> Entry {
        Entry::value(Bytes::from(vec![b'x'; len]), None)
    }

    #[test]
    fn stays_within_its_bytes() {
        let caches = Caches::new(100_000, 0.125);
        for i in 0..1_000 {
            // 10x the budget, in ~1 KiB entries.
            caches.insert_main(&format!("key-{i}"), entry(1_000));
            caches.insert_hot(&format!("hot-{i}"), entry(1_000));
        }
        let (main, hot) = (caches.main_stats(), caches.hot_stats());
        assert!(main.bytes + hot.bytes <= 100_000, "{main:?} {hot:?}");
        assert!(hot.bytes <= 100_000 / 8);
        assert!(main.items > 0 && hot.items > 0);
        assert!(main.evictions > 0 && hot.evictions > 0);
    }

    #[test]
    fn zero_bytes_caches_nothing() {
        let caches = Caches::new(0, 0.125);
        caches.insert_main("k", entry(1));
        caches.insert_hot("k", entry(1));
        assert!(caches.get("k", &SystemClock).is_none());
        let no_hot = Caches::new(1_000, 0.0);
        no_hot.insert_hot("k", entry(1));
        assert!(no_hot.get("k", &SystemClock).is_none());
    }

    #[test]
    fn expired_entries_go_stale_then_away() {
        let clock = ManualClock::new();
        let caches = Caches::new(1 << 20, 0.125);
        let mut e = Entry::value(
            Bytes::from_static(b"v"),
            Some(clock.now() + Duration::from_secs(10)),
        );
        e.keep_until = Some(clock.now() + Duration::from_secs(15));
        caches.insert_main("k", e);
        assert_eq!(caches.get("k", &clock).unwrap().1, Freshness::Fresh);
        clock.advance(Duration::from_secs(10));
        assert_eq!(caches.get("k", &clock).unwrap().1, Freshness::Stale);
        clock.advance(Duration::from_secs(5));
        assert!(caches.get("k", &clock).is_none());
        assert_eq!(caches.main_stats().items, 0, "the expired entry is dropped");
    }

    #[test]
    fn main_is_read_before_hot() {
        let caches = Caches::new(1 << 20, 0.125);
        caches.insert_hot("k", Entry::value(Bytes::from_static(b"hot"), None));
        caches.insert_main("k", Entry::value(Bytes::from_static(b"main"), None));
        assert_eq!(caches.get("k", &SystemClock).unwrap().0.value, "main");
        assert!(caches.remove("k"));
        assert!(caches.get("k", &SystemClock).is_none());
        caches.insert_main("a", entry(1));
        caches.insert_hot("b", entry(1));
        caches.clear();
        assert_eq!(caches.main_stats().items + caches.hot_stats().items, 0);
    }
}
