//! How often each key is requested: per-key rates that decay over a minute, in bounded
//! memory, for the hot-key policy ([`HotKeys::AboveQps`](crate::HotKeys::AboveQps)).

use std::hash::BuildHasher as _;
use std::sync::Mutex;

use crate::sync::lock;
use std::time::Instant;

use rustc_hash::FxHashMap;

/// Per-key request rates, decaying with a time constant of one minute, in a bounded map.
///
/// Keys are held by a 64-bit hash from a randomly seeded hasher, so a hit allocates nothing
/// and chosen keys cannot crowd one bucket; the map is split in shards, each behind its own
/// short lock, so two threads rarely wait on each other.
///
/// A full shard forgets its coldest keys, the ones with the lowest decayed counts, and keeps
/// the rest: a flood of keys seen once or twice only pushes out other such keys, while a key
/// requested every second keeps its count. The counts of the keys kept are exact, so a
/// one-off key never looks hot. Not a count-min sketch: under such a flood its collisions
/// raise every estimate (a row of 16,384 counters sharing a minute's 150,000 one-off
/// requests puts each near 9, a rate of 0.15/s, above the default threshold of 0.05/s).
/// Nor a space-saving top-k: each new key would take over the count of the key it replaces,
/// and so look as hot as it.
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
/// What a sweep leaves of a full shard: a sweep runs at most once per quarter-shard of new
/// keys.
const RATE_KEYS_AFTER_SWEEP: usize = RATE_KEYS_PER_SHARD * 3 / 4;

impl Rates {
    /// Counts one request for `key` now; returns its rate in requests per second.
    pub(crate) fn hit(&self, key: &str, now: Instant) -> f64 {
        let hash = self.hasher.hash_one(key);
        let shard = &self.shards[(hash >> 60) as usize % RATE_SHARDS];
        count(&mut lock(shard), hash, now)
    }

    /// Counts one request for each of `keys` now, as [`hit`](Self::hit) does for one key;
    /// returns their rates, in order. Each shard is locked once for all its keys.
    pub(crate) fn hit_many(&self, keys: &[&str], now: Instant) -> Vec<f64> {
        let hashes: Vec<u64> = keys.iter().map(|key| self.hasher.hash_one(key)).collect();
        let shard_of = |hash: u64| (hash >> 60) as usize % RATE_SHARDS;
        // Each key's shard in the high bits, its place in the low: sorted, the keys of a
        // shard are together and in the order asked (a key asked for twice is counted in
        // order).
        let mut order: Vec<u64> = hashes
            .iter()
            .enumerate()
            .map(|(i, &hash)| ((shard_of(hash) as u64) << 32) | i as u64)
            .collect();
        order.sort_unstable();
        let mut rates = vec![0.0; keys.len()];
        for run in order.chunk_by(|a, b| a >> 32 == b >> 32) {
            let mut shard = lock(&self.shards[(run[0] >> 32) as usize]);
            for &i in run {
                let i = i as u32 as usize;
                rates[i] = count(&mut shard, hashes[i], now);
            }
        }
        rates
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }
}

/// Counts one request for the key of `hash` in its shard `keys`; returns its rate.
fn count(keys: &mut FxHashMap<u64, (f64, Instant)>, hash: u64, now: Instant) -> f64 {
    if let Some((count, at)) = keys.get_mut(&hash) {
        *count = decay(*count, *at, now) + 1.0;
        *at = now;
        return *count / RATE_WINDOW;
    }
    if keys.len() >= RATE_KEYS_PER_SHARD {
        forget_coldest(keys, now);
    }
    keys.insert(hash, (1.0, now));
    1.0 / RATE_WINDOW
}

/// Forgets the keys with the lowest decayed counts, down to [`RATE_KEYS_AFTER_SWEEP`] keys:
/// linear in the shard's size, by selection rather than a sort. Ties are cut anywhere, so
/// the bound holds even when every count is equal.
fn forget_coldest(keys: &mut FxHashMap<u64, (f64, Instant)>, now: Instant) {
    let mut counts: Vec<(f64, u64)> = keys
        .iter()
        .map(|(&hash, &(count, at))| (decay(count, at, now), hash))
        .collect();
    let excess = counts.len().saturating_sub(RATE_KEYS_AFTER_SWEEP);
    let Some(last) = excess.checked_sub(1) else {
        return;
    };
    counts.select_nth_unstable_by(last, |a, b| a.0.total_cmp(&b.0));
    for (_, hash) in &counts[..excess] {
        keys.remove(hash);
    }
}

fn decay(value: f64, at: Instant, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(at).as_secs_f64();
    value * (-elapsed / RATE_WINDOW).exp()
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::Duration;

    use super::*;
    use crate::node::source::DEFAULT_HOT_QPS;

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
    fn hit_many_counts_each_key_as_hits_one_by_one_do() {
        let (one, many) = (Rates::default(), Rates::default());
        let start = Instant::now();
        // 150 keys over every shard, 50 of them asked for twice in one call.
        let keys: Vec<String> = (0..200).map(|i| format!("k{}", i % 150)).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        for second in 0..3 {
            let now = start + Duration::from_secs(second);
            let expected: Vec<f64> = keys.iter().map(|key| one.hit(key, now)).collect();
            assert_eq!(many.hit_many(&keys, now), expected);
        }
        assert_eq!(many.tracked(), 150);
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
    fn a_flood_of_one_off_keys_leaves_the_hot_key_its_rate() {
        // Three simulated minutes: 1,000 new keys a second, each seen two or three times
        // within 4 s, and one hot key requested once a second.
        const STEP_MS: u64 = 10;
        const NEW_PER_STEP: usize = 10;
        const STEPS: u64 = 180_000 / STEP_MS;
        const STEPS_PER_SECOND: u64 = 1_000 / STEP_MS;
        let rates = Rates::default();
        let start = Instant::now();
        // splitmix64: the flood's keys and repeat times, the same on every run.
        let mut state = 0x5EED_u64;
        let mut random = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        // The flood keys due again at each of the next 400 steps (4 s).
        let mut due: VecDeque<Vec<u64>> = (0..400).map(|_| Vec::new()).collect();
        let mut hot_rate = 0.0;
        for step in 0..STEPS {
            let now = start + Duration::from_millis(step * STEP_MS);
            let repeats = due.pop_front().unwrap_or_default();
            due.push_back(Vec::new());
            for key in repeats {
                rates.hit(&format!("flood:{key:016x}"), now);
            }
            for _ in 0..NEW_PER_STEP {
                let key = random();
                rates.hit(&format!("flood:{key:016x}"), now);
                for _ in 0..1 + random() % 2 {
                    let later = (random() % 400) as usize;
                    due[later].push(key);
                }
            }
            if step % STEPS_PER_SECOND == 0 {
                hot_rate = rates.hit("hot", now);
                let second = step / STEPS_PER_SECOND;
                // Once a minute of requests has built its count up, it stays hot.
                assert!(
                    second < 60 || hot_rate > DEFAULT_HOT_QPS,
                    "the hot key fell to {hot_rate}/s at {second} s"
                );
                let tracked = rates.tracked();
                assert!(
                    tracked <= RATE_SHARDS * RATE_KEYS_PER_SHARD,
                    "{tracked} keys tracked"
                );
            }
        }
        // One request a second for three minutes: 0.95/s as a rate decaying over a minute.
        assert!(
            (0.8..1.2).contains(&hot_rate),
            "the hot key's rate: {hot_rate}"
        );
    }
}
