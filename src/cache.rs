//! The byte-bounded stores behind a data source: the main cache (keys this node owns, and
//! values it loaded itself when an owner failed) and the hot cache (copies of keys other nodes
//! own). The store is quick_cache, weighted by `key.len() + value.len()` like
//! golang/groupcache, and it stays behind this module.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use quick_cache::sync::Cache as QuickCache;
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};
use tokio::time::Instant;

use crate::stats::CacheStats;

/// A cached value and when it stops being served.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) value: Bytes,
    pub(crate) expires: Option<Instant>,
}

impl Entry {
    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }
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

    /// The live entry for `key`; an expired one is dropped and reads as a miss.
    pub(crate) fn get(&self, key: &str) -> Option<Entry> {
        let entry = self.entries.get(key)?;
        if entry.expires.is_some() && entry.is_expired(Instant::now()) {
            self.entries.remove(key);
            return None;
        }
        Some(entry)
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
    /// Splits `cache_bytes` between the two: the hot cache gets `cache_bytes / hot_divisor`,
    /// the main cache the rest, so together they never hold more than `cache_bytes`.
    pub(crate) fn new(cache_bytes: u64, hot_divisor: u64) -> Self {
        let hot = cache_bytes / hot_divisor.max(1);
        Self {
            main: Store::with_capacity(cache_bytes - hot),
            hot: Store::with_capacity(hot),
        }
    }

    /// Looks in the main cache, then the hot cache, and says which one answered.
    pub(crate) fn get(&self, key: &str) -> Option<(Entry, Tier)> {
        if let Some(entry) = self.main.as_ref().and_then(|s| s.get(key)) {
            return Some((entry, Tier::Main));
        }
        let entry = self.hot.as_ref().and_then(|s| s.get(key))?;
        Some((entry, Tier::Hot))
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
    use std::time::Duration;

    fn entry(len: usize) -> Entry {
        Entry {
            value: Bytes::from(vec![b'x'; len]),
            expires: None,
        }
    }

    #[test]
    fn stays_within_its_bytes() {
        let caches = Caches::new(100_000, 8);
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
        let caches = Caches::new(0, 8);
        caches.insert_main("k", entry(1));
        caches.insert_hot("k", entry(1));
        assert!(caches.get("k").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_not_served() {
        let caches = Caches::new(1 << 20, 8);
        let expires = Some(Instant::now() + Duration::from_secs(10));
        caches.insert_main(
            "k",
            Entry {
                value: Bytes::from_static(b"v"),
                expires,
            },
        );
        assert!(caches.get("k").is_some());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(caches.get("k").is_none());
        assert_eq!(caches.main_stats().items, 0, "the expired entry is dropped");
    }

    #[test]
    fn main_is_read_before_hot() {
        let caches = Caches::new(1 << 20, 8);
        caches.insert_hot(
            "k",
            Entry {
                value: Bytes::from_static(b"hot"),
                expires: None,
            },
        );
        caches.insert_main(
            "k",
            Entry {
                value: Bytes::from_static(b"main"),
                expires: None,
            },
        );
        assert_eq!(caches.get("k").unwrap().0.value, "main");
        assert!(caches.remove("k"));
        assert!(caches.get("k").is_none());
    }
}
