//! The byte-bounded stores behind a data source: the main cache (keys this node owns, and
//! values it loaded itself when an owner failed) and the hot cache (copies of keys other nodes
//! own). The store is quick_cache, weighted by `key.len() + value.len()` like
//! golang/groupcache, and it stays behind this module.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use bytes::Bytes;
use quick_cache::sync::Cache as QuickCache;
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::stats::CacheStats;

/// A cached value (or a cached *not found*) and when it stops being fresh.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) value: Bytes,
    /// Fresh until then; `None` never expires.
    pub(crate) expires: Option<Instant>,
    /// Kept past `expires` for the source's stale window (stale-while-revalidate or
    /// stale-if-error), rather than dropped when it expires.
    pub(crate) keeps_stale: bool,
    /// A cached *not found*.
    pub(crate) negative: bool,
}

impl Entry {
    pub(crate) fn value(value: Bytes, expires: Option<Instant>) -> Self {
        Self {
            value,
            expires,
            keeps_stale: false,
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

/// An [`Entry`] as a store holds it: the value and 8 bytes of state, so that the clone a
/// lookup makes is the value and one word (40 bytes, against 72 for an `Entry`).
#[derive(Clone)]
struct Stored {
    value: Bytes,
    state: State,
}

/// The expiry, as nanoseconds after the store's base instant, in the low 62 bits
/// ([`State::NEVER`] when the value never expires); bit 62: kept stale; bit 63: negative. A
/// plain value that never expires, the usual hit, is exactly [`State::NEVER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State(u64);

impl State {
    const NEGATIVE: u64 = 1 << 63;
    const KEEPS_STALE: u64 = 1 << 62;
    const EXPIRY: u64 = Self::KEEPS_STALE - 1;
    /// The expiry bits of a value that never expires.
    const NEVER: u64 = Self::EXPIRY;

    fn expiry(self) -> Option<u64> {
        let nanos = self.0 & Self::EXPIRY;
        (nanos != Self::NEVER).then_some(nanos)
    }

    fn negative(self) -> bool {
        self.0 & Self::NEGATIVE != 0
    }

    fn keeps_stale(self) -> bool {
        self.0 & Self::KEEPS_STALE != 0
    }
}

#[derive(Debug, Clone, Copy)]
struct KeyValueBytes;

impl Weighter<Box<str>, Stored> for KeyValueBytes {
    fn weight(&self, key: &Box<str>, stored: &Stored) -> u64 {
        // Never zero: quick_cache keeps zero-weight entries forever.
        (key.len() + stored.value.len()).max(1) as u64
    }
}

/// Counts evictions (including values too large to be admitted at all).
#[derive(Debug, Clone, Default)]
struct CountEvictions(Arc<AtomicU64>);

impl Lifecycle<Box<str>, Stored> for CountEvictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: Box<str>, _stored: Stored) {
        self.0.fetch_add(1, Relaxed);
    }
}

/// One byte-bounded cache.
pub(crate) struct Store {
    entries: QuickCache<Box<str>, Stored, KeyValueBytes, DefaultHashBuilder, CountEvictions>,
    evictions: Arc<AtomicU64>,
    /// The most bytes it may hold.
    capacity: u64,
    /// Expiries are kept as nanoseconds after this instant.
    base: Instant,
    /// How long past its expiry an entry that keeps stale is kept.
    stale_window: Duration,
}

/// Rough size of an entry, to size quick_cache's tables; it only needs the right magnitude.
const TYPICAL_ENTRY_BYTES: u64 = 512;

impl Store {
    /// A store holding at most `bytes` of keys and values; `None` for 0 (caching off).
    /// Expiries are kept relative to `base`, the clock's time when the cache is built.
    pub(crate) fn with_capacity(bytes: u64, base: Instant, stale_window: Duration) -> Option<Self> {
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
            capacity: bytes,
            base,
            stale_window,
        })
    }

    /// Nanoseconds from the base to `at`: 0 for an instant before it, and just under
    /// [`State::NEVER`] for one more than 146 years after it.
    fn nanos(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.base).as_nanos();
        nanos.min(u128::from(State::NEVER - 1)) as u64
    }

    fn to_stored(&self, entry: Entry) -> Stored {
        let mut state = entry.expires.map_or(State::NEVER, |at| self.nanos(at));
        if entry.keeps_stale {
            state |= State::KEEPS_STALE;
        }
        if entry.negative {
            state |= State::NEGATIVE;
        }
        Stored {
            value: entry.value,
            state: State(state),
        }
    }

    fn to_entry(&self, stored: Stored) -> Entry {
        let state = stored.state;
        Entry {
            value: stored.value,
            expires: state
                .expiry()
                .and_then(|nanos| self.base.checked_add(Duration::from_nanos(nanos))),
            keeps_stale: state.keeps_stale(),
            negative: state.negative(),
        }
    }

    /// The entry for `key` and whether it is fresh; one past its stale window is dropped and
    /// reads as a miss. The clock is read only for entries that expire.
    pub(crate) fn get(&self, key: &str, clock: &dyn Clock) -> Option<(Entry, Freshness)> {
        let stored = self.entries.get(key)?;
        let state = stored.state;
        let Some(expiry) = state.expiry() else {
            return Some((self.to_entry(stored), Freshness::Fresh));
        };
        let now = self.nanos(clock.now());
        if now < expiry {
            return Some((self.to_entry(stored), Freshness::Fresh));
        }
        if state.keeps_stale() && now < expiry.saturating_add(self.stale_nanos()) {
            return Some((self.to_entry(stored), Freshness::Stale));
        }
        self.drop_expired(key, &stored);
        None
    }

    /// Drops `key` if it still holds `expired`: not a value a load stored since it was read.
    fn drop_expired(&self, key: &str, expired: &Stored) {
        self.entries.remove_if(key, |stored| {
            stored.state == expired.state && same_buffer(&stored.value, &expired.value)
        });
    }

    fn stale_nanos(&self) -> u64 {
        u64::try_from(self.stale_window.as_nanos()).unwrap_or(u64::MAX)
    }

    /// The value of `key` if it is here, fresh and not a cached *not found*: the whole of a
    /// typical hit. `Err(())` when the key is here in another state.
    #[inline(always)]
    fn fresh_value(&self, key: &str, clock: &dyn Clock) -> Option<Result<Bytes, ()>> {
        let stored = self.entries.get(key)?;
        let state = stored.state;
        let fresh = state.0 == State::NEVER
            || (!state.negative()
                && state
                    .expiry()
                    .is_none_or(|expiry| self.nanos(clock.now()) < expiry));
        Some(if fresh { Ok(stored.value) } else { Err(()) })
    }

    pub(crate) fn insert(&self, key: &str, entry: Entry) {
        self.entries.insert(key.into(), self.to_stored(entry));
    }

    pub(crate) fn remove(&self, key: &str) -> bool {
        self.entries.remove(key).is_some()
    }

    /// Drops `key` if it holds `value` (this very buffer), and nothing else.
    fn remove_value(&self, key: &str, value: &Bytes) {
        self.entries
            .remove_if(key, |stored| same_buffer(&stored.value, value));
    }

    /// Bytes, items and evictions; the caller adds the lookup counts it keeps.
    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            bytes: self.entries.weight(),
            items: self.entries.len() as u64,
            evictions: self.evictions.load(Relaxed),
            capacity_bytes: self.capacity,
            ..CacheStats::default()
        }
    }
}

/// Whether two values are one buffer: the same bytes at the same address.
fn same_buffer(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
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
    /// Expiries are kept relative to `base`; an entry that keeps stale is kept
    /// `stale_window` past its expiry.
    pub(crate) fn new(
        cache_bytes: u64,
        hot_fraction: f64,
        base: Instant,
        stale_window: Duration,
    ) -> Self {
        let hot = ((cache_bytes as f64 * hot_fraction.clamp(0.0, 1.0)) as u64).min(cache_bytes);
        Self {
            main: Store::with_capacity(cache_bytes - hot, base, stale_window),
            hot: Store::with_capacity(hot, base, stale_window),
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
    #[inline(always)]
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

    /// Drops `key` from the `tier` cache if it holds `value` (the same buffer): undoes one
    /// insert without touching what another one stored since.
    pub(crate) fn remove_value(&self, tier: Tier, key: &str, value: &Bytes) {
        let store = match tier {
            Tier::Main => &self.main,
            Tier::Hot => &self.hot,
        };
        if let Some(store) = store {
            store.remove_value(key, value);
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
        let caches = Caches::new(100_000, 0.125, Instant::now(), Duration::ZERO);
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
        let caches = Caches::new(0, 0.125, Instant::now(), Duration::ZERO);
        caches.insert_main("k", entry(1));
        caches.insert_hot("k", entry(1));
        assert!(caches.get("k", &SystemClock).is_none());
        let no_hot = Caches::new(1_000, 0.0, Instant::now(), Duration::ZERO);
        no_hot.insert_hot("k", entry(1));
        assert!(no_hot.get("k", &SystemClock).is_none());
    }

    #[test]
    fn expired_entries_go_stale_then_away() {
        let clock = ManualClock::new();
        let caches = Caches::new(1 << 20, 0.125, clock.now(), Duration::from_secs(5));
        let mut e = Entry::value(
            Bytes::from_static(b"v"),
            Some(clock.now() + Duration::from_secs(10)),
        );
        e.keeps_stale = true;
        caches.insert_main("k", e);
        assert_eq!(caches.get("k", &clock).unwrap().1, Freshness::Fresh);
        clock.advance(Duration::from_secs(10));
        assert_eq!(caches.get("k", &clock).unwrap().1, Freshness::Stale);
        clock.advance(Duration::from_secs(5));
        assert!(caches.get("k", &clock).is_none());
        assert_eq!(caches.main_stats().items, 0, "the expired entry is dropped");
    }

    #[test]
    fn a_stored_entry_reads_back_as_it_was() {
        let clock = ManualClock::new();
        let base = clock.now();
        let caches = Caches::new(1 << 20, 0.0, base, Duration::from_secs(5));
        let cases = [
            (None, false, false),
            (None, false, true),
            (Some(base + Duration::from_nanos(1)), true, false),
            (
                Some(base + Duration::from_secs(3_600) + Duration::from_nanos(7)),
                false,
                true,
            ),
            (
                Some(base + Duration::from_secs(40 * 365 * 86_400)),
                true,
                true,
            ),
        ];
        for (i, (expires, keeps_stale, negative)) in cases.into_iter().enumerate() {
            let key = format!("k{i}");
            let value = Bytes::from(format!("v{i}"));
            caches.insert_main(
                &key,
                Entry {
                    value: value.clone(),
                    expires,
                    keeps_stale,
                    negative,
                },
            );
            let (entry, freshness, _) = caches.get(&key, &clock).unwrap();
            assert_eq!(freshness, Freshness::Fresh, "case {i}");
            assert_eq!(entry.value, value, "case {i}");
            assert_eq!(entry.expires, expires, "case {i}");
            assert_eq!(entry.keeps_stale, keeps_stale, "case {i}");
            assert_eq!(entry.negative, negative, "case {i}");
            let fresh_value = caches.fresh_value(&key, &clock).map(|(v, _)| v);
            assert_eq!(fresh_value, (!negative).then_some(value), "case {i}");
        }
    }

    #[test]
    fn an_expiry_before_the_base_reads_as_expired() {
        let clock = ManualClock::new();
        let before = clock.now();
        clock.advance(Duration::from_secs(10));
        let caches = Caches::new(1 << 20, 0.0, clock.now(), Duration::ZERO);
        caches.insert_main("k", Entry::value(Bytes::from_static(b"v"), Some(before)));
        assert!(caches.fresh_value("k", &clock).is_none());
        assert!(caches.get("k", &clock).is_none(), "dropped, not served");
    }

    #[test]
    fn dropping_an_expired_entry_spares_a_value_stored_since() {
        let clock = ManualClock::new();
        let store = Store::with_capacity(1 << 20, clock.now(), Duration::ZERO).unwrap();
        let soon = Some(clock.now() + Duration::from_secs(1));
        store.insert("k", Entry::value(Bytes::from_static(b"old"), soon));
        clock.advance(Duration::from_secs(2));
        // A get reads the expired entry; a load stores a fresh value before the get drops it.
        let expired = store.entries.get("k").unwrap();
        store.insert("k", Entry::value(Bytes::from_static(b"new"), None));
        store.drop_expired("k", &expired);
        let (entry, freshness) = store.get("k", &clock).expect("the new value is kept");
        assert_eq!(
            (entry.value, freshness),
            (Bytes::from_static(b"new"), Freshness::Fresh)
        );
        // With nothing stored since, the expired entry goes.
        store.insert("e", Entry::value(Bytes::from_static(b"e"), soon));
        assert!(store.get("e", &clock).is_none());
        assert!(store.entries.get("e").is_none(), "dropped");
    }

    #[test]
    fn undoing_an_insert_spares_a_newer_one() {
        let caches = Caches::new(1 << 20, 0.5, Instant::now(), Duration::ZERO);
        let old = Bytes::from(vec![1u8; 10]);
        caches.insert_hot("k", Entry::value(old.clone(), None));
        caches.remove_value(Tier::Hot, "k", &old);
        assert!(
            caches.get("k", &SystemClock).is_none(),
            "its own insert is undone"
        );
        caches.insert_hot("k", Entry::value(old.clone(), None));
        let new = Bytes::from(vec![1u8; 10]);
        caches.insert_hot("k", Entry::value(new.clone(), None));
        caches.remove_value(Tier::Hot, "k", &old);
        let (entry, _, _) = caches
            .get("k", &SystemClock)
            .expect("the newer insert stays");
        assert!(same_buffer(&entry.value, &new));
    }

    #[test]
    fn main_is_read_before_hot() {
        let caches = Caches::new(1 << 20, 0.125, Instant::now(), Duration::ZERO);
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
