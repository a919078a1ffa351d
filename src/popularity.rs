//! How often each key is requested: per-key rates that decay over a minute, in bounded
//! memory, for the hot-key policy ([`HotKeys::AboveQps`](crate::HotKeys::AboveQps)).

use std::hash::BuildHasher as _;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use rustc_hash::FxHashMap;

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
}
