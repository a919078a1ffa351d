//! One data source on one node: its options, caches, counters, loads in flight and key
//! popularity.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use rustc_hash::FxHasher;
use std::hash::{Hash, Hasher};

use super::cache::{Caches, Entry, Tier};

use super::popularity::Rates;
use super::queue::{Gathering, PeerQueues};
use super::singleflight::{Singleflight, Ticket};
use crate::error::Error;
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
    /// Gathered loads: at most this many keys, waiting at most this long.
    pub(crate) gather: Option<(usize, Duration)>,
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
    /// instead of the error (counted as `stale_served`). Off by default. It applies to the
    /// values of the main cache (the owner's, and those a node loaded itself); a hot copy is
    /// never served past its expiry (docs/hotkeys.md, "Stale serving").
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = window;
        self
    }

    /// Gathers the single gets that miss on this node at about the same time into one call of
    /// the data source ([`Source::load_many`](crate::Source::load_many)): the first miss waits
    /// at most `max_wait` for others, or until `max_keys` have come, then loads them all.
    /// A miss that finds the batch full loads its key alone. Off by default, which adds no
    /// latency: with it, a miss that comes alone waits `max_wait` before its load starts.
    /// A `max_keys` of 0 or 1 gathers nothing.
    pub fn gather_loads(mut self, max_keys: usize, max_wait: Duration) -> Self {
        self.gather = (max_keys > 1).then_some((max_keys, max_wait));
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
    // `mul_f64` would panic past `Duration::MAX`; rounding near it falls back to the whole.
    Duration::try_from_secs_f64(jitter.as_secs_f64() * fraction).unwrap_or(jitter)
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

/// The data sources of a cache, sorted by name. A lookup compares names, with no hashing: one
/// by one for the few sources of a typical service, by binary search beyond.
pub(crate) struct Sources(Box<[Arc<CachedSource>]>);

impl Sources {
    pub(crate) fn new(mut sources: Vec<Arc<CachedSource>>) -> Self {
        sources.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        Self(sources.into())
    }

    #[inline]
    pub(crate) fn get(&self, name: &str) -> Option<&Arc<CachedSource>> {
        if self.0.len() <= 8 {
            return self.0.iter().find(|s| *s.name == *name);
        }
        let index = self.0.binary_search_by(|s| (*s.name).cmp(name)).ok()?;
        self.0.get(index)
    }

    /// Every source, by name.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<CachedSource>> {
        self.0.iter()
    }
}

/// The key of a load in flight: the key, and whether it asks the owning peer first (a peer
/// request, always served locally, never joins a load that waits on another peer). A get after
/// a remove never joins a load from before it: the remove revokes that load.
///
/// The key is a part of a shared text: its own, or the text of all the keys of one
/// `get_many` (or of a peer's batched get), made at its first miss, so that its misses make one
/// allocation, not one each. Keys are equal,
/// and hash alike, by their text alone, whatever text holds them.
#[derive(Clone)]
pub(crate) struct FlightKey {
    text: Arc<str>,
    start: usize,
    end: usize,
    remote: bool,
}

impl FlightKey {
    /// `key`, a text of its own.
    pub(crate) fn whole(key: Arc<str>, remote: bool) -> Self {
        let end = key.len();
        Self {
            text: key,
            start: 0,
            end,
            remote,
        }
    }

    /// The key at `start..end` of `text`, which must be on char boundaries.
    pub(crate) fn part(text: &Arc<str>, start: usize, end: usize, remote: bool) -> Self {
        Self {
            text: text.clone(),
            start,
            end,
            remote,
        }
    }

    /// The same key, asking the owning peer first or not.
    pub(crate) fn asking(self, remote: bool) -> Self {
        Self { remote, ..self }
    }

    /// The key.
    pub(crate) fn key(&self) -> &str {
        // The bounds are where `part` (or `whole`) put this key, on char boundaries.
        self.text.get(self.start..self.end).unwrap_or_default()
    }

    /// The key in a text of its own (an allocation, unless it has one already).
    pub(crate) fn to_arc(&self) -> Arc<str> {
        if self.start == 0 && self.end == self.text.len() {
            self.text.clone()
        } else {
            self.key().into()
        }
    }
}

impl PartialEq for FlightKey {
    fn eq(&self, other: &Self) -> bool {
        self.remote == other.remote && self.key() == other.key()
    }
}

impl Eq for FlightKey {}

impl Hash for FlightKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
        self.remote.hash(state);
    }
}

impl std::fmt::Debug for FlightKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("FlightKey")
            .field(&self.key())
            .field(&self.remote)
            .finish()
    }
}

/// One data source and its caches, counters and loads in flight.
pub(crate) struct CachedSource {
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
    /// Single-key gets queued for a batched request, per peer.
    pub(crate) peer_queues: PeerQueues,
    /// Misses waiting to be loaded together (`SourceOptions::gather_loads`).
    pub(crate) gathering: Gathering,
    /// The keys of this source's duration histograms, made once: the macros would build
    /// their label lists anew, an allocation, for every load and fetch.
    pub(crate) durations: Durations,
    hot_dice: AtomicU64,
}

/// The keys of a source's duration histograms (`groupcache_load_duration_seconds` and
/// `groupcache_peer_fetch_duration_seconds`, by `source`).
pub(crate) struct Durations {
    load: metrics::Key,
    fetch: metrics::Key,
}

impl Durations {
    fn new(source: &Arc<str>) -> Self {
        let key = |name: &'static str| {
            let label = metrics::Label::new("source", metrics::SharedString::from(source.clone()));
            metrics::Key::from_parts(name, vec![label])
        };
        Self {
            load: key("groupcache_load_duration_seconds"),
            fetch: key("groupcache_peer_fetch_duration_seconds"),
        }
    }

    /// Records a data-source call's duration, through the recorder installed now.
    pub(crate) fn record_load(&self, elapsed: std::time::Duration) {
        crate::metrics::record_duration(&self.load, elapsed);
    }

    /// Records a peer fetch's duration, through the recorder installed now.
    pub(crate) fn record_fetch(&self, elapsed: std::time::Duration) {
        crate::metrics::record_duration(&self.fetch, elapsed);
    }
}

impl CachedSource {
    pub(crate) fn new(
        name: &str,
        source: Arc<dyn DynSource>,
        options: SourceOptions,
        cache_bytes: u64,
        hot_fraction: f64,
        seed: u64,
        now: Instant,
    ) -> Self {
        let name: Arc<str> = name.into();
        Self {
            durations: Durations::new(&name),
            name,
            source,
            caches: Caches::new(cache_bytes, hot_fraction, now, options.stale_window()),
            options,
            counters: Counters::default(),
            flights: Singleflight::default(),
            served_rates: Rates::default(),
            fetch_rates: Rates::default(),
            peer_queues: PeerQueues::default(),
            gathering: Gathering::default(),
            hot_dice: AtomicU64::new(seed),
        }
    }

    /// Drops `key` here and revokes its load in flight, if any: that load's value is not
    /// kept, and the next get starts a new load. Loads of other keys are left alone.
    pub(crate) fn remove(&self, key: &str) {
        let key: Arc<str> = key.into();
        self.flights.revoke([
            FlightKey::whole(key.clone(), false),
            FlightKey::whole(key.clone(), true),
        ]);
        self.caches.remove(&key);
    }

    /// Drops every key here and revokes every load in flight.
    pub(crate) fn clear(&self) {
        self.flights.revoke_all();
        self.caches.clear();
    }

    /// Stores `entry` in the `tier` cache, unless the load that made it was revoked.
    ///
    /// A removal revokes the ticket, then drops the key. Checked before and after the insert,
    /// the ticket catches a removal at any point: one before the insert keeps the value out,
    /// one during it takes this very value out again (and nothing a newer load stored).
    pub(crate) fn store(&self, tier: Tier, key: &str, entry: Entry, ticket: &Ticket) {
        if !ticket.is_current() {
            return;
        }
        let value = entry.value.clone();
        match tier {
            Tier::Main => self.caches.insert_main(key, entry),
            Tier::Hot => self.caches.insert_hot(key, entry),
        }
        if !ticket.is_current() {
            self.caches.remove_value(tier, key, &value);
        }
    }

    /// Counts a peer's request for `key` now; returns the key's rate, as sent to the peer
    /// (`minute_qps`).
    pub(crate) fn served(&self, key: &str, now: Instant) -> f64 {
        self.served_rates.hit(key, now)
    }

    /// [`served`](Self::served) for each of `keys`, in order.
    pub(crate) fn served_many(&self, keys: &[&str], now: Instant) -> Vec<f64> {
        self.served_rates.hit_many(keys, now)
    }

    /// golang/groupcache's admission: one fetched value in ten. A counter scrambled by a
    /// multiplicative hash stands in for Go's `rand.Intn(10)`, with no node random state.
    pub(crate) fn one_in_ten(&self) -> bool {
        let n = self.hot_dice.fetch_add(1, Relaxed);
        (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % 10 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_in_a_shared_text_is_the_flight_key_of_its_own_text() {
        let keys = ["a", "", "h\u{e9}llo", "a/b%2F", "a"];
        let text: Arc<str> = keys.concat().into();
        let mut start = 0;
        let shared: Vec<FlightKey> = keys
            .iter()
            .map(|key| {
                let end = start + key.len();
                FlightKey::part(&text, std::mem::replace(&mut start, end), end, true)
            })
            .collect();
        let hash = |key: &FlightKey| {
            let mut hasher = FxHasher::default();
            key.hash(&mut hasher);
            hasher.finish()
        };
        for (key, part) in keys.iter().zip(&shared) {
            let whole = FlightKey::whole((*key).into(), true);
            assert_eq!(part.key(), *key);
            assert_eq!(*part, whole);
            assert_eq!(hash(part), hash(&whole));
            assert_ne!(*part, whole.clone().asking(false), "asking first or not");
            assert_eq!(&*part.to_arc(), *key);
        }
        assert_ne!(shared[0], shared[1]);
        assert_eq!(shared[0], shared[4]);
        assert!(
            shared
                .windows(2)
                .all(|w| Arc::ptr_eq(&w[0].text, &w[1].text)),
            "one text for all"
        );
    }

    #[test]
    fn the_longest_jitter_never_panics() {
        let now = Instant::now();
        for i in 0..10_000 {
            let extra = jitter(Duration::MAX, &format!("k{i}"), now);
            assert!(extra <= Duration::MAX);
        }
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
