//! Black-box checks of what the documentation promises for hot keys, TTL, negative caching,
//! stale serving, `remove` and `clear`: docs/hotkeys.md (whole), docs/guide.md (builder
//! table, "Data sources and typed keys", "Stats", "Log messages"), docs/protocol.md
//! (`GetResponse.expire`) and the rustdoc of `SourceOptions`, `Loaded`, the builder's hot-key
//! methods and `CacheHandle::remove`/`clear`. Every test runs real nodes talking HTTP on
//! 127.0.0.1 (port 0), moves expiry time with a shared `ManualClock`, and waits for state by
//! polling with a deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use tower_groupcache::{
    Clock, Error, Groupcache, GroupcacheBuilder, HotKeys, Loaded, ManualClock, SourceOptions,
    SourceSnapshot,
};

use crate::support::recorded::{
    DEADLINE, Gate, cluster_per_node, eventually_async, spawn_get, within,
};
use crate::support::{self, Loads, Node, eventually, key_owned_by, keys_owned_by};

/// The source name used by every test here.
const SRC: &str = "v";

// ---------------------------------------------------------------------------------------
// A data source whose values say how many times each key was loaded.
// ---------------------------------------------------------------------------------------

/// The shared record of every node's data source: the value of `key` is `{key}#{n}`, `n`
/// counting the loads of that key on every node. `missing:` keys are *not found*,
/// `ttl0:` keys have a TTL of zero, `ttlmax:` keys a TTL of `Duration::MAX`; other keys get
/// the TTL set with [`Src::set_ttl`], if any. A closed gate holds every load (after it is
/// recorded); while `failing`, every load fails (after the gate).
#[derive(Clone, Default)]
struct Src {
    inner: Arc<SrcInner>,
}

#[derive(Default)]
struct SrcInner {
    loads: Mutex<HashMap<String, Vec<String>>>,
    gate: Gate,
    failing: AtomicBool,
    ttl: Mutex<Option<Duration>>,
}

impl Src {
    fn close(&self) {
        self.inner.gate.close();
    }

    fn open(&self) {
        self.inner.gate.open();
    }

    fn fail(&self, failing: bool) {
        self.inner.failing.store(failing, Ordering::SeqCst);
    }

    fn set_ttl(&self, ttl: Option<Duration>) {
        *self.inner.ttl.lock().unwrap() = ttl;
    }

    /// How many loads of `key` started, on any node.
    fn count(&self, key: &str) -> usize {
        self.loaders(key).len()
    }

    /// The nodes that loaded `key`, in order.
    fn loaders(&self, key: &str) -> Vec<String> {
        self.inner
            .loads
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    fn source(&self, node: &str) -> impl tower_groupcache::Source + use<> {
        let (this, node) = (self.clone(), node.to_owned());
        move |key: String| {
            let (this, node) = (this.clone(), node.clone());
            async move {
                let n = {
                    let mut loads = this.inner.loads.lock().unwrap();
                    let list = loads.entry(key.clone()).or_default();
                    list.push(node);
                    list.len()
                };
                this.inner.gate.pass().await;
                if this.inner.failing.load(Ordering::SeqCst) {
                    return Err(std::io::Error::other(format!("back end down for {key}")));
                }
                if key.starts_with("missing:") {
                    return Ok(Loaded::not_found());
                }
                let loaded = Loaded::new(format!("{key}#{n}"));
                let ttl = if key.starts_with("ttl0:") {
                    Some(Duration::ZERO)
                } else if key.starts_with("ttlmax:") {
                    Some(Duration::MAX)
                } else {
                    *this.inner.ttl.lock().unwrap()
                };
                Ok::<_, std::io::Error>(match ttl {
                    Some(ttl) => loaded.with_ttl(ttl),
                    None => loaded,
                })
            }
        }
    }
}

/// `n` nodes on 127.0.0.1, each with the source `v` recording into `src` (with `options`),
/// and whatever `configure` adds.
async fn nodes(
    n: usize,
    src: &Src,
    options: SourceOptions,
    configure: impl Fn(GroupcacheBuilder) -> GroupcacheBuilder,
) -> Vec<Node> {
    cluster_per_node(n, &Loads::default(), |url, b| {
        configure(b.source_with(SRC, src.source(url), options))
    })
    .await
}

/// [`nodes`] sharing one `ManualClock`, returned with them.
async fn clocked_nodes(
    n: usize,
    src: &Src,
    options: SourceOptions,
    configure: impl Fn(GroupcacheBuilder) -> GroupcacheBuilder,
) -> (ManualClock, Vec<Node>) {
    let clock = ManualClock::new();
    let c = clock.clone();
    let nodes = nodes(n, src, options, move |b| configure(b.clock(c.clone()))).await;
    (clock, nodes)
}

/// Removes `key` through `node`, within the deadline (failing with `what`).
async fn remove(node: &Node, what: &str, key: &str) -> tower_groupcache::Removal {
    within(what, node.handle().remove(SRC, key))
        .await
        .expect("remove")
}

fn snap(node: &Node) -> SourceSnapshot {
    node.cache
        .stats()
        .source(SRC)
        .expect("source exists")
        .clone()
}

fn stats(node: &Node) -> tower_groupcache::SourceStats {
    node.stats(SRC)
}

/// A get through `node`, bounded by the deadline.
async fn try_get(node: &Node, key: &str) -> Result<String, Error> {
    within(&format!("get {key}"), node.handle().get(SRC, key))
        .await
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

async fn get(node: &Node, key: &str) -> String {
    try_get(node, key)
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e} ({:?})", e.kind()))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ---------------------------------------------------------------------------------------
// Hot keys
// ---------------------------------------------------------------------------------------

/// docs/hotkeys.md ("Hot keys"): "`HotKeys::AboveQps(q)` (default, `q` = 0.05) | the key's
/// request rate reaches `q` per second ... rates decay over about a minute"; builder rustdoc
/// "0.05 requests per second (about three a minute)"; docs/hotkeys.md "a key must be asked
/// about 60 times within the decay window before it qualifies" (for 1 req/s).
/// A key fetched once is not kept by default; one fetched a handful of times is, and is then
/// served with no peer request, counted in `hot_promotions` and `cache_hits`.
#[tokio::test]
async fn default_policy_keeps_a_key_asked_a_few_times_but_not_one_asked_once() {
    let src = Src::default();
    let nodes = nodes(2, &src, SourceOptions::new(), |b| b).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&a.cache, &b.url, "popular:");
    assert_eq!(get(a, &key).await, format!("{key}#1"));
    assert_eq!(
        stats(a).hot_promotions,
        0,
        "one request (about 1/60 per second) is below the default 0.05 per second"
    );
    assert_eq!(snap(a).hot_cache.items, 0, "no hot copy after one get");
    // About three a minute qualifies: well within ten gets.
    let mut promoted_after = None;
    for i in 2..=10 {
        assert_eq!(get(a, &key).await, format!("{key}#1"));
        if stats(a).hot_promotions > 0 {
            promoted_after = Some(i);
            break;
        }
    }
    let promoted_after = promoted_after.expect("promoted within 10 gets at the default rate");
    assert_eq!(stats(a).hot_promotions, 1);
    assert_eq!(snap(a).hot_cache.items, 1, "the hot cache holds the copy");
    // The next get needs no peer request.
    let before = stats(b).server_requests;
    let hits_before = stats(a).cache_hits;
    assert_eq!(get(a, &key).await, format!("{key}#1"));
    assert_eq!(
        stats(b).server_requests,
        before,
        "served from A's hot copy (promoted after {promoted_after} gets)"
    );
    assert_eq!(
        stats(a).cache_hits,
        hits_before + 1,
        "a hot hit is a cache hit"
    );
    assert_eq!(src.count(&key), 1);
}

/// docs/hotkeys.md ("Hot keys"): "a key must be asked about 60 times within the decay window
/// before it qualifies" at 1 request per second: ten gets do not qualify.
#[tokio::test]
async fn a_rate_of_one_per_second_is_not_reached_by_ten_gets() {
    let src = Src::default();
    let nodes = nodes(2, &src, SourceOptions::new(), |b| {
        b.hot_keys(HotKeys::AboveQps(1.0))
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&a.cache, &b.url, "lukewarm:");
    for _ in 0..10 {
        assert_eq!(get(a, &key).await, format!("{key}#1"));
    }
    assert_eq!(stats(a).hot_promotions, 0);
    assert_eq!(stats(b).server_requests, 10, "every get asked the owner");
}

/// docs/hotkeys.md ("Hot keys"): "as measured by its owner over the whole cluster (sent back
/// in `GetResponse.minute_qps`) or by this node": a node that asks once for a key the rest of
/// the cluster asks often keeps a copy.
#[tokio::test]
async fn the_owners_cluster_wide_rate_promotes_a_key_asked_once_here() {
    let src = Src::default();
    let nodes = nodes(3, &src, SourceOptions::new(), |b| b).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let key = key_owned_by(&a.cache, &b.url, "cluster-hot:");
    // C asks B many times (C may promote it itself along the way; what matters is B's rate).
    for _ in 0..10 {
        get(c, &key).await;
        get(b, &key).await;
    }
    assert_eq!(get(a, &key).await, format!("{key}#1"));
    assert_eq!(
        stats(a).hot_promotions,
        1,
        "A asked once, but the owner measured the key as hot"
    );
}

/// docs/hotkeys.md ("Hot keys"): "`HotKeys::Never` | never"; "`HotKeys::OneInTen` | one
/// fetched value in ten, at random".
#[tokio::test]
async fn never_keeps_no_copy_and_one_in_ten_keeps_about_a_tenth() {
    let src = Src::default();
    let never = nodes(2, &src, SourceOptions::new(), |b| {
        b.hot_keys(HotKeys::Never)
    })
    .await;
    let key = key_owned_by(&never[0].cache, &never[1].url, "never:");
    for _ in 0..20 {
        get(&never[0], &key).await;
    }
    assert_eq!(stats(&never[0]).hot_promotions, 0);
    assert_eq!(snap(&never[0]).hot_cache.items, 0);
    assert_eq!(stats(&never[1]).server_requests, 20);

    let ten = nodes(2, &src, SourceOptions::new(), |b| {
        b.hot_keys(HotKeys::OneInTen)
    })
    .await;
    let (a, b) = (&ten[0], &ten[1]);
    let keys = keys_owned_by(&a.cache, &b.url, "one-in-ten:", 300);
    assert_eq!(keys.len(), 300);
    for key in &keys {
        get(a, key).await;
    }
    let kept = stats(a).hot_promotions;
    // Binomial(300, 0.1): mean 30, sd ~5.2. The bounds are 4 sd away or more.
    assert!(
        (8..=60).contains(&kept),
        "one in ten of 300 fetched values, kept {kept}"
    );
    assert_eq!(
        snap(a).hot_cache.items,
        kept,
        "each promotion is a hot copy"
    );
}

/// docs/guide.md (builder table): "`hot_cache_fraction(f)` | 0.125 | the share of
/// `cache_bytes` the hot cache may take"; "`cache_bytes(n)` ... main and hot cache together";
/// docs/guide.md ("Stats") "`capacity_bytes` (the most bytes it may hold: its share of
/// `cache_bytes`)"; a fraction of 0 leaves no room for a hot copy.
#[tokio::test]
async fn hot_cache_fraction_splits_cache_bytes_and_zero_keeps_no_copy() {
    let src = Src::default();
    let default = nodes(1, &src, SourceOptions::new(), |b| b.cache_bytes(8_000)).await;
    let s = snap(&default[0]);
    assert_eq!(s.hot_cache.capacity_bytes, 1_000, "an eighth by default");
    assert_eq!(
        s.main_cache.capacity_bytes + s.hot_cache.capacity_bytes,
        8_000,
        "main and hot cache together"
    );
    let half = nodes(1, &src, SourceOptions::new(), |b| {
        b.cache_bytes(8_000).hot_cache_fraction(0.5)
    })
    .await;
    let s = snap(&half[0]);
    assert_eq!(
        (s.main_cache.capacity_bytes, s.hot_cache.capacity_bytes),
        (4_000, 4_000)
    );

    let zero = nodes(2, &src, SourceOptions::new(), |b| {
        b.hot_keys(HotKeys::AboveQps(0.0)).hot_cache_fraction(0.0)
    })
    .await;
    let (a, b) = (&zero[0], &zero[1]);
    assert_eq!(snap(a).hot_cache.capacity_bytes, 0);
    let key = key_owned_by(&a.cache, &b.url, "no-room:");
    get(a, &key).await;
    get(a, &key).await;
    assert_eq!(
        stats(b).server_requests,
        2,
        "no hot copy: both gets asked the owner"
    );
    assert_eq!(snap(a).hot_cache.items, 0);
}

// ---------------------------------------------------------------------------------------
// hot_max_staleness
// ---------------------------------------------------------------------------------------

/// docs/hotkeys.md ("Hot keys"): "A hot copy is never served longer than `hot_max_staleness`
/// (60 s by default)"; builder rustdoc "The longest a hot copy is served before it is
/// fetched from its owner again, even if the value has no TTL". The owner's copy (no TTL)
/// stays: the refetch loads nothing.
#[tokio::test]
async fn a_hot_copy_without_ttl_is_fetched_again_after_hot_max_staleness() {
    let src = Src::default();
    let (clock, nodes) = clocked_nodes(2, &src, SourceOptions::new(), |b| {
        b.hot_keys(HotKeys::AboveQps(0.0))
            .hot_max_staleness(secs(10))
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&a.cache, &b.url, "stale-bound:");
    get(a, &key).await;
    assert_eq!(stats(a).hot_promotions, 1);
    clock.advance(secs(9));
    get(a, &key).await;
    assert_eq!(
        stats(b).server_requests,
        1,
        "9 s old: served from the hot copy"
    );
    clock.advance(secs(2));
    assert_eq!(get(a, &key).await, format!("{key}#1"));
    assert_eq!(
        stats(b).server_requests,
        2,
        "11 s old, past hot_max_staleness of 10 s: fetched again"
    );
    assert_eq!(src.count(&key), 1, "the owner's own copy has no TTL");

    // The default is 60 s.
    let (clock, nodes) = clocked_nodes(2, &src, SourceOptions::new(), |b| {
        b.hot_keys(HotKeys::AboveQps(0.0))
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&a.cache, &b.url, "stale-default:");
    get(a, &key).await;
    clock.advance(secs(59));
    get(a, &key).await;
    assert_eq!(stats(b).server_requests, 1, "59 s old: still hot");
    clock.advance(secs(2));
    get(a, &key).await;
    assert_eq!(
        stats(b).server_requests,
        2,
        "61 s old: past the default 60 s"
    );
}

/// docs/guide.md (builder table): "`hot_max_staleness(d)` | 60 s | ... 0 keeps no hot copy";
/// builder rustdoc "Any value is accepted; 0 keeps no hot copy".
#[tokio::test]
async fn hot_max_staleness_zero_keeps_no_hot_copy() {
    let src = Src::default();
    let nodes = nodes(2, &src, SourceOptions::new(), |b| {
        b.hot_keys(HotKeys::AboveQps(0.0))
            .hot_max_staleness(Duration::ZERO)
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&a.cache, &b.url, "zero-staleness:");
    for _ in 0..3 {
        assert_eq!(get(a, &key).await, format!("{key}#1"));
    }
    assert_eq!(stats(b).server_requests, 3, "every get asked the owner");
    assert_eq!(snap(a).hot_cache.items, 0, "no hot copy held");
    assert_eq!(
        stats(a).hot_promotions,
        0,
        "`hot_promotions`: fetched values kept in the hot cache (none is kept)"
    );
}

/// docs/hotkeys.md ("Hot keys"): "nor past the owner's own expiry, which travels with the
/// value"; builder docs "no value it accepts, up to ... `Duration::MAX`, makes a get, a peer
/// fetch ... panic or hang". With `hot_max_staleness(Duration::MAX)` the owner's TTL is the
/// bound; with a TTL longer than the staleness, the staleness is.
#[tokio::test]
async fn a_hot_copy_lives_until_the_earlier_of_the_owners_expiry_and_hot_max_staleness() {
    let src = Src::default();
    src.set_ttl(Some(secs(20)));
    let (clock, nodes) = clocked_nodes(2, &src, SourceOptions::new(), |b| {
        b.hot_keys(HotKeys::AboveQps(0.0))
            .hot_max_staleness(Duration::MAX)
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&a.cache, &b.url, "ttl-bound:");
    assert_eq!(get(a, &key).await, format!("{key}#1"));
    clock.advance(secs(19));
    assert_eq!(get(a, &key).await, format!("{key}#1"));
    assert_eq!(stats(b).server_requests, 1, "19 s: hot copy served");
    clock.advance(secs(2));
    assert_eq!(
        get(a, &key).await,
        format!("{key}#2"),
        "21 s: past the owner's 20 s TTL, the hot copy is not served"
    );
    assert_eq!(stats(b).server_requests, 2);

    // TTL 100 s, staleness 10 s: the staleness bounds the copy.
    src.set_ttl(Some(secs(100)));
    let (clock, nodes) = clocked_nodes(2, &src, SourceOptions::new(), |b| {
        b.hot_keys(HotKeys::AboveQps(0.0))
            .hot_max_staleness(secs(10))
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&a.cache, &b.url, "staleness-bound:");
    get(a, &key).await;
    clock.advance(secs(11));
    assert_eq!(
        get(a, &key).await,
        format!("{key}#1"),
        "the owner's copy lives"
    );
    assert_eq!(stats(b).server_requests, 2, "the hot copy did not");
}

// ---------------------------------------------------------------------------------------
// TTL
// ---------------------------------------------------------------------------------------

/// docs/hotkeys.md ("TTL"): "`.ttl(...)` // when the source gives no TTL", "`.ttl_jitter(...)`
/// // + up to 30 s, per key"; "so a hot copy expires when the owner's copy does"; SourceOptions
/// rustdoc "Adds a random extra of up to `jitter` to each TTL, so that keys loaded together
/// do not all expire together". TTL 10 s + jitter up to 5 s: each key expires in [10 s, 15 s],
/// a hot copy never outlives its owner's copy, and the keys do not all expire together.
#[tokio::test]
async fn default_ttl_with_jitter_bounds_expiry_and_hot_copies_follow_the_owner() {
    let src = Src::default();
    let options = SourceOptions::new().ttl(secs(10)).ttl_jitter(secs(5));
    let (clock, nodes) = clocked_nodes(2, &src, options, |b| {
        b.hot_keys(HotKeys::AboveQps(0.0))
            .hot_max_staleness(secs(3600))
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let keys = keys_owned_by(&a.cache, &b.url, "jitter:", 20);
    for key in &keys {
        assert_eq!(get(a, key).await, format!("{key}#1"));
    }
    assert_eq!(stats(a).hot_promotions, 20);
    // Step through time half a second at a time; at each step ask the owner first, then A.
    let mut expired_at: HashMap<String, u32> = HashMap::new();
    let mut step_ms = 0u32;
    clock.advance(Duration::from_millis(9_900));
    step_ms += 9_900;
    while step_ms <= 15_500 {
        for key in &keys {
            let on_owner = get(b, key).await;
            let on_a = get(a, key).await;
            assert_eq!(
                on_a, on_owner,
                "{key} at {step_ms} ms: A's hot copy outlived the owner's copy"
            );
            if on_owner != format!("{key}#1") {
                expired_at.entry(key.clone()).or_insert(step_ms);
            }
        }
        if step_ms == 9_900 {
            assert!(
                expired_at.is_empty(),
                "expired before the 10 s TTL: {expired_at:?}"
            );
        }
        clock.advance(Duration::from_millis(500));
        step_ms += 500;
    }
    assert_eq!(
        expired_at.len(),
        20,
        "every key expired by 15.5 s (TTL 10 s + jitter up to 5 s): {expired_at:?}"
    );
    let distinct: std::collections::BTreeSet<u32> = expired_at.values().copied().collect();
    assert!(
        distinct.len() > 1,
        "20 keys loaded together all expired at the same step: {expired_at:?}"
    );
}

/// `Loaded::with_ttl` rustdoc: "Expire the cached value after `ttl`. An expired value is
/// never served."; SourceOptions rustdoc `ttl`: "The TTL of values whose load gave none".
/// A TTL of zero has expired at once: nothing is served from a cache, on the owner or as a
/// hot copy.
#[tokio::test]
async fn a_ttl_of_zero_is_never_served_from_a_cache() {
    let src = Src::default();
    let (_clock, nodes) = clocked_nodes(2, &src, SourceOptions::new(), |b| {
        b.hot_keys(HotKeys::AboveQps(0.0))
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let local = key_owned_by(&a.cache, &b.url, "ttl0:owner-");
    assert_eq!(get(b, &local).await, format!("{local}#1"));
    assert_eq!(
        get(b, &local).await,
        format!("{local}#2"),
        "a value with a zero TTL was served from the owner's cache"
    );
    let remote = key_owned_by(&a.cache, &b.url, "ttl0:asker-");
    get(a, &remote).await;
    get(a, &remote).await;
    assert_eq!(
        stats(b).server_requests,
        2,
        "a value with a zero TTL was served from A's hot copy"
    );

    // The same through SourceOptions::ttl(0).
    let (_clock, nodes) =
        clocked_nodes(1, &src, SourceOptions::new().ttl(Duration::ZERO), |b| b).await;
    assert_eq!(get(&nodes[0], "default-ttl0").await, "default-ttl0#1");
    assert_eq!(
        get(&nodes[0], "default-ttl0").await,
        "default-ttl0#2",
        "SourceOptions::ttl(0): the value was served after its TTL"
    );
}

/// docs/guide.md ("Builder methods"): "no value it accepts, up to `u64::MAX`, `usize::MAX` or
/// `Duration::MAX`, makes a get, a peer fetch, the stats or the metrics panic or hang";
/// `Loaded::new` "A value that stays cached until it is evicted", `with_ttl` "Expire the cached
/// value after `ttl`". A TTL of `Duration::MAX` (and a jitter of `Duration::MAX`), which
/// overflows the wire's Unix nanoseconds, keeps the value, on the owner and as a hot copy:
/// it is neither expired at once nor a panic.
#[tokio::test]
async fn a_ttl_that_overflows_keeps_the_value_and_panics_nowhere() {
    let src = Src::default();
    let options = SourceOptions::new()
        .ttl(Duration::MAX)
        .ttl_jitter(Duration::MAX);
    let (clock, nodes) = clocked_nodes(2, &src, options, |b| {
        b.hot_keys(HotKeys::AboveQps(0.0))
            .hot_max_staleness(secs(60))
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    for prefix in ["ttlmax:", "default-max:"] {
        let key = key_owned_by(&a.cache, &b.url, prefix);
        let before = stats(b).server_requests;
        assert_eq!(get(a, &key).await, format!("{key}#1"));
        assert_eq!(get(a, &key).await, format!("{key}#1"));
        assert_eq!(
            stats(b).server_requests,
            before + 1,
            "{key}: the hot copy of a value with an overflowing TTL was not served"
        );
        assert_eq!(get(b, &key).await, format!("{key}#1"));
        assert_eq!(src.count(&key), 1, "{key}");
    }
    // Ten years on: still cached on the owner; the hot copies were fetched again.
    clock.advance(secs(10 * 365 * 24 * 3600));
    for prefix in ["ttlmax:", "default-max:"] {
        let key = key_owned_by(&a.cache, &b.url, prefix);
        assert_eq!(get(a, &key).await, format!("{key}#1"), "{key}");
        assert_eq!(get(b, &key).await, format!("{key}#1"), "{key}");
        assert_eq!(src.count(&key), 1, "{key} loaded again");
    }
    // The stats and the metrics do not panic.
    let _ = a.cache.stats();
    a.cache.record_metrics();
}

// ---------------------------------------------------------------------------------------
// The owner's `expire`, from a stand-in owner
// ---------------------------------------------------------------------------------------

/// A stand-in owner of this crate's protocol that answers a get of `key` with `{key}@{n}`
/// (`n` counting its gets of the key) and the `expire` set for the key, if any.
#[derive(Clone, Default)]
struct Owner {
    expire: Arc<Mutex<HashMap<String, i64>>>,
    gets: Arc<Mutex<HashMap<String, usize>>>,
}

impl Owner {
    async fn start(&self) -> (String, tokio::task::JoinHandle<()>) {
        use axum::extract::Request;
        use prost::Message as _;
        let this = self.clone();
        let app = axum::Router::new().fallback(move |request: Request| {
            let this = this.clone();
            async move {
                let ours = [("x-groupcache-extensions", "1")];
                let path = request.uri().path().to_owned();
                if request.method() != axum::http::Method::GET || path == "/_groupcache/" {
                    return (axum::http::StatusCode::OK, ours, Vec::new());
                }
                let key = path.rsplit('/').next().unwrap_or_default();
                let key = percent_decode(key);
                let n = {
                    let mut gets = this.gets.lock().unwrap();
                    let n = gets.entry(key.clone()).or_default();
                    *n += 1;
                    *n
                };
                let reply = tower_groupcache::protocol::GetResponse {
                    value: Some(format!("{key}@{n}").into()),
                    minute_qps: None,
                    expire: this.expire.lock().unwrap().get(&key).copied(),
                };
                (axum::http::StatusCode::OK, ours, reply.encode_to_vec())
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        (url, support::serve(listener, app).await)
    }

    fn gets(&self, key: &str) -> usize {
        self.gets.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            out.push(u8::from_str_radix(hex, 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// docs/protocol.md: "`optional int64 expire = 3; // ... Unix nanoseconds, 0 = never`";
/// docs/hotkeys.md ("Hot keys") "A hot copy is never served longer than `hot_max_staleness`
/// ..., nor past the owner's own expiry, which travels with the value"; ("TTL") "An expired
/// value is never served ... so a hot copy expires when the owner's copy does".
/// An `expire` in the past (negative, or 1 ns after the epoch) keeps no servable hot copy;
/// `0` and `i64::MAX` are bounded by `hot_max_staleness`; an `expire` 5 s ahead by itself.
#[tokio::test]
async fn the_owners_expire_bounds_the_hot_copy_whatever_its_value() {
    let owner = Owner::default();
    let (owner_url, _server) = owner.start().await;
    let clock = ManualClock::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let src = Src::default();
    let cache = Groupcache::builder()
        .self_url(url.clone())
        .peers([owner_url.clone(), url.clone()])
        .open_peer_path()
        .clock(clock.clone())
        .hot_keys(HotKeys::AboveQps(0.0))
        .hot_max_staleness(secs(10))
        .source(SRC, src.source(&url))
        .build()
        .unwrap();
    let _node = support::serve(listener, support::app(&cache)).await;
    let h = cache.handle();
    let get = |key: String| {
        let h = h.clone();
        async move {
            let v = within("get", h.get(SRC, &key)).await.expect("get");
            String::from_utf8_lossy(&v).into_owned()
        }
    };
    let now_nanos = |c: &ManualClock| {
        c.system_now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64
    };

    // In the past: never served from the hot cache.
    for (prefix, expire) in [("negative:", -1_i64), ("epoch:", 1), ("min:", i64::MIN)] {
        let key = key_owned_by(&cache, &owner_url, prefix);
        owner.expire.lock().unwrap().insert(key.clone(), expire);
        let first = get(key.clone()).await;
        let second = get(key.clone()).await;
        assert_eq!(
            owner.gets(&key),
            2,
            "expire {expire} (in the past): the second get was served from a hot copy \
             ({first:?}, then {second:?})"
        );
    }
    // 0 (never) and i64::MAX (year 2262): hot_max_staleness bounds the copy.
    for (prefix, expire) in [("never:", 0_i64), ("max:", i64::MAX)] {
        let key = key_owned_by(&cache, &owner_url, prefix);
        owner.expire.lock().unwrap().insert(key.clone(), expire);
        assert_eq!(get(key.clone()).await, format!("{key}@1"));
        clock.advance(secs(9));
        assert_eq!(get(key.clone()).await, format!("{key}@1"));
        assert_eq!(owner.gets(&key), 1, "expire {expire}: 9 s, still hot");
        clock.advance(secs(2));
        assert_eq!(get(key.clone()).await, format!("{key}@2"));
        assert_eq!(
            owner.gets(&key),
            2,
            "expire {expire}: past hot_max_staleness"
        );
    }
    // 5 s ahead of this node's clock: the owner's expiry bounds the copy.
    let key = key_owned_by(&cache, &owner_url, "soon:");
    owner
        .expire
        .lock()
        .unwrap()
        .insert(key.clone(), now_nanos(&clock) + 5_000_000_000);
    assert_eq!(get(key.clone()).await, format!("{key}@1"));
    clock.advance(secs(4));
    assert_eq!(get(key.clone()).await, format!("{key}@1"));
    assert_eq!(owner.gets(&key), 1, "4 s: before the owner's expiry");
    clock.advance(secs(2));
    assert_eq!(get(key.clone()).await, format!("{key}@2"));
    assert_eq!(owner.gets(&key), 2, "6 s: past the owner's expiry");
    assert_eq!(src.count(&key), 0, "nothing was loaded here");
}

// ---------------------------------------------------------------------------------------
// Not found
// ---------------------------------------------------------------------------------------

/// docs/hotkeys.md ("Not found"): "*not found* ... is a `204 No Content` between nodes of this
/// crate, so the asking node returns *not found* without loading the key again itself. It is
/// not cached unless `SourceOptions::negative_ttl` is set"; rustdoc "Caches *not found*
/// answers for `ttl`".
#[tokio::test]
async fn not_found_is_kept_for_negative_ttl_on_the_owner_and_never_loaded_by_the_asker() {
    let src = Src::default();
    let options = SourceOptions::new().negative_ttl(secs(10));
    let (clock, nodes) =
        clocked_nodes(2, &src, options, |b| b.hot_keys(HotKeys::AboveQps(0.0))).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&a.cache, &b.url, "missing:neg-");
    for _ in 0..3 {
        let e = try_get(a, &key).await.unwrap_err();
        assert!(e.is_not_found(), "{e}");
        let e = try_get(b, &key).await.unwrap_err();
        assert!(e.is_not_found(), "{e}");
    }
    assert_eq!(
        src.loaders(&key),
        vec![b.url.clone()],
        "loaded once, by the owner alone"
    );
    assert_eq!(stats(b).local_not_found, 1);
    assert_eq!(stats(a).local_not_found, 0, "the asker did not load it");
    clock.advance(secs(9));
    assert!(try_get(b, &key).await.unwrap_err().is_not_found());
    assert_eq!(src.count(&key), 1, "9 s: still remembered");
    clock.advance(secs(2));
    assert!(try_get(b, &key).await.unwrap_err().is_not_found());
    assert_eq!(
        src.count(&key),
        2,
        "11 s: past the negative TTL, asked again"
    );
}

/// docs/hotkeys.md ("Not found"): "It is not cached unless `SourceOptions::negative_ttl` is
/// set"; rustdoc "Caches *not found* answers for `ttl`": with no negative TTL, and with a
/// negative TTL of zero, every get asks the data source again.
#[tokio::test]
async fn not_found_is_asked_again_without_a_negative_ttl_or_with_a_zero_one() {
    let src = Src::default();
    for (name, options) in [
        ("none", SourceOptions::new()),
        ("zero", SourceOptions::new().negative_ttl(Duration::ZERO)),
    ] {
        let (_clock, nodes) = clocked_nodes(1, &src, options, |b| b).await;
        let key = format!("missing:{name}");
        for _ in 0..3 {
            assert!(try_get(&nodes[0], &key).await.unwrap_err().is_not_found());
        }
        assert_eq!(
            src.count(&key),
            3,
            "negative TTL {name}: not found was cached"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Stale serving
// ---------------------------------------------------------------------------------------

/// docs/hotkeys.md ("Stale serving"): "`stale_while_revalidate(grace)`: for `grace` after a
/// value expires, a get returns it at once and one background load refreshes it. ... counts
/// in `SourceStats::stale_served`". The source is held shut during the refresh: the stale gets
/// return anyway, and only one refresh starts.
#[tokio::test]
async fn stale_while_revalidate_answers_at_once_with_one_refresh_and_not_past_grace() {
    let src = Src::default();
    src.set_ttl(Some(secs(10)));
    let options = SourceOptions::new().stale_while_revalidate(secs(30));
    let (clock, nodes) = clocked_nodes(1, &src, options, |b| b).await;
    let n = &nodes[0];
    assert_eq!(get(n, "swr").await, "swr#1");
    clock.advance(secs(11));
    src.close();
    for _ in 0..3 {
        assert_eq!(get(n, "swr").await, "swr#1", "served stale at once");
    }
    assert_eq!(stats(n).stale_served, 3);
    eventually("the background refresh starts", DEADLINE, || {
        src.count("swr") == 2
    })
    .await;
    src.open();
    eventually_async("the refresh never landed", || async move {
        get(n, "swr").await == "swr#2"
    })
    .await;
    assert_eq!(
        src.count("swr"),
        2,
        "one background load for three stale gets"
    );
    // The refreshed value (loaded at 11 s) expires at 21 s; its grace ends at 51 s.
    clock.advance(secs(41));
    let stale_before = stats(n).stale_served;
    assert_eq!(get(n, "swr").await, "swr#3", "past the grace: a fresh load");
    assert_eq!(stats(n).stale_served, stale_before);
}

/// docs/hotkeys.md ("Stale serving"): "`stale_if_error(window)`: for `window` after a value
/// expires, a get whose load fails returns the expired value instead of the error"; "Both
/// count in `SourceStats::stale_served`". Past the window, the error.
#[tokio::test]
async fn stale_if_error_serves_within_the_window_then_the_error() {
    let src = Src::default();
    src.set_ttl(Some(secs(10)));
    let options = SourceOptions::new().stale_if_error(secs(60));
    let (clock, nodes) = clocked_nodes(1, &src, options, |b| b).await;
    let n = &nodes[0];
    assert_eq!(get(n, "sie").await, "sie#1");
    clock.advance(secs(11));
    src.fail(true);
    assert_eq!(get(n, "sie").await, "sie#1");
    assert_eq!(get(n, "sie").await, "sie#1");
    assert_eq!(stats(n).stale_served, 2);
    assert!(stats(n).local_load_errs >= 2);
    clock.advance(secs(60));
    let e = try_get(n, "sie").await.unwrap_err();
    assert!(e.is_load(), "71 s: past the window, the error: {e}");
    assert_eq!(stats(n).stale_served, 2);
    src.fail(false);
    // Every failed load counted (#2, #3 served stale, #4 failed): this one is the fifth.
    assert_eq!(get(n, "sie").await, "sie#5");
    assert_eq!(src.count("sie"), 5);
}

/// docs/hotkeys.md ("Stale serving"): stale serving applies to the values of the main cache;
/// "A hot copy is never served past its expiry, nor past `hot_max_staleness`: ... if the
/// owner cannot be reached and this node's own load fails, the get fails." A's hot copy (TTL
/// 10 s, staleness 600 s) has expired; the owner is down and A's own load fails.
#[tokio::test]
async fn an_expired_hot_copy_is_not_served_stale_when_the_owner_is_down() {
    let src = Src::default();
    src.set_ttl(Some(secs(10)));
    let options = SourceOptions::new().stale_if_error(secs(60));
    let (clock, nodes) = clocked_nodes(2, &src, options, |b| {
        b.hot_keys(HotKeys::AboveQps(0.0))
            .hot_max_staleness(secs(600))
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&a.cache, &b.url, "stale-hot:");
    assert_eq!(get(a, &key).await, format!("{key}#1"));
    assert_eq!(stats(a).hot_promotions, 1);
    b.stop();
    eventually("B stops", DEADLINE, || b.is_stopped()).await;
    src.fail(true);
    clock.advance(secs(11));
    let got = try_get(a, &key).await;
    assert!(
        got.as_ref().is_err_and(|e| e.is_load()),
        "owner down, local load failed, hot copy expired: the load's error, got {:?}",
        got.as_ref().map_err(|e| e.kind())
    );
    assert_eq!(stats(a).stale_served, 0);
}

/// docs/hotkeys.md ("Stale serving") and ("TTL"): the owner's stale answer reaches an asker.
/// B owns the key; its value expired, its source fails: with `stale_if_error`, a get through A
/// is answered with the expired value (B serves it stale), not the error.
#[tokio::test]
async fn stale_if_error_on_the_owner_answers_an_asking_node() {
    let src = Src::default();
    src.set_ttl(Some(secs(10)));
    let options = SourceOptions::new().stale_if_error(secs(60));
    let (clock, nodes) = clocked_nodes(2, &src, options, |b| b.hot_keys(HotKeys::Never)).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&a.cache, &b.url, "stale-owner:");
    assert_eq!(get(b, &key).await, format!("{key}#1"));
    clock.advance(secs(11));
    src.fail(true);
    let got = try_get(a, &key).await;
    assert!(
        matches!(&got, Ok(v) if *v == format!("{key}#1")),
        "expected the owner's stale value through A, got {:?}",
        got.as_ref().map_err(|e| e.kind())
    );
    assert_eq!(stats(b).stale_served, 1, "the owner served it stale");
}

// ---------------------------------------------------------------------------------------
// remove and clear
// ---------------------------------------------------------------------------------------

/// docs/hotkeys.md ("Remove and clear"): "`CacheHandle::remove(source, key)` drops the key on
/// this node; if another node owns it, sends `DELETE` ... to the owner ...; then sends the
/// `DELETE` to every other peer (their hot copies)"; guide "`is_complete()` is true when both
/// are empty". C removes a key B owns; A's and C's hot copies and B's copy all go.
#[tokio::test]
async fn remove_on_one_node_drops_the_owners_copy_and_every_hot_copy() {
    let src = Src::default();
    let nodes = nodes(3, &src, SourceOptions::new(), |b| {
        b.hot_keys(HotKeys::AboveQps(0.0))
    })
    .await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let key = key_owned_by(&a.cache, &b.url, "remove-all:");
    assert_eq!(get(a, &key).await, format!("{key}#1"));
    assert_eq!(get(c, &key).await, format!("{key}#1"));
    assert_eq!(snap(a).hot_cache.items, 1);
    assert_eq!(snap(c).hot_cache.items, 1);
    let removal = remove(c, "remove", &key).await;
    assert!(removal.is_complete(), "{removal:?}");
    assert_eq!(snap(a).hot_cache.items, 0, "A's hot copy dropped");
    assert_eq!(snap(c).hot_cache.items, 0, "C's hot copy dropped");
    assert_eq!(snap(b).main_cache.items, 0, "the owner's copy dropped");
    assert_eq!(
        get(a, &key).await,
        format!("{key}#2"),
        "A sees the new value"
    );
    assert_eq!(get(c, &key).await, format!("{key}#2"));
    assert_eq!(src.count(&key), 2);
    // The owner removes it: both hot copies go too.
    let removal = remove(b, "remove on the owner", &key).await;
    assert!(removal.is_complete(), "{removal:?}");
    assert_eq!(snap(a).hot_cache.items, 0);
    assert_eq!(snap(c).hot_cache.items, 0);
    assert_eq!(get(a, &key).await, format!("{key}#3"));
    assert_eq!(get(c, &key).await, format!("{key}#3"));
}

/// docs/hotkeys.md ("Remove and clear"): "It returns `Removal { unreachable, unsupported }`:
/// the peers that did not confirm"; guide ("Log messages") "the peer is listed in
/// `Removal::unreachable`, and its copies expire by themselves (hot copies within
/// `hot_max_staleness`)". C is down while A removes; C's hot copy, still held, is fetched
/// again once `hot_max_staleness` has passed.
#[tokio::test]
async fn a_peer_down_during_remove_is_unreachable_and_its_hot_copy_ends_at_hot_max_staleness() {
    let src = Src::default();
    let (clock, nodes) = clocked_nodes(3, &src, SourceOptions::new(), |b| {
        b.hot_keys(HotKeys::AboveQps(0.0))
            .hot_max_staleness(secs(10))
    })
    .await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let key = key_owned_by(&a.cache, &b.url, "remove-down:");
    assert_eq!(get(c, &key).await, format!("{key}#1"));
    c.stop();
    eventually("C stops", DEADLINE, || c.is_stopped()).await;
    let removal = remove(a, "remove", &key).await;
    assert_eq!(removal.unreachable, vec![c.url.clone()], "{removal:?}");
    assert!(removal.unsupported.is_empty(), "{removal:?}");
    assert!(!removal.is_complete());
    // C (its cache alive, its server gone) still holds its copy ...
    assert_eq!(get(c, &key).await, format!("{key}#1"));
    // ... until hot_max_staleness.
    clock.advance(secs(11));
    assert_eq!(get(c, &key).await, format!("{key}#2"));
}

/// docs/hotkeys.md ("Remove and clear"): "A load that is running when its key is removed does
/// not put the old value back: the removal revokes that key's load, and only that key's, so
/// the revoked load stores nothing, and a get after the removal never joins it. The callers
/// that were already waiting for that load still receive its value. Loads of other keys go on
/// and store their values."
#[tokio::test]
async fn a_key_removed_while_it_loads_on_its_owner_is_not_put_back() {
    let src = Src::default();
    let nodes = nodes(2, &src, SourceOptions::new(), |b| b).await;
    let b = &nodes[1];
    let key = key_owned_by(&b.cache, &b.url, "removed-loading:");
    let other = key_owned_by(&b.cache, &b.url, "other-loading:");
    src.close();
    let waiting = spawn_get(b, SRC, &key);
    let other_get = spawn_get(b, SRC, &other);
    eventually("both loads start", DEADLINE, || {
        src.count(&key) == 1 && src.count(&other) == 1
    })
    .await;
    let removal = remove(b, "remove", &key).await;
    assert!(removal.is_complete(), "{removal:?}");
    let after = spawn_get(b, SRC, &key);
    eventually(
        "a get after the removal starts a load of its own",
        DEADLINE,
        || src.count(&key) == 2,
    )
    .await;
    src.open();
    let waited = within("waiting get", waiting).await.unwrap().unwrap();
    assert_eq!(
        waited,
        format!("{key}#1"),
        "the waiting caller gets its load's value"
    );
    let after = within("get after removal", after).await.unwrap().unwrap();
    assert_eq!(after, format!("{key}#2"));
    within("other get", other_get).await.unwrap().unwrap();
    assert_eq!(
        get(b, &key).await,
        format!("{key}#2"),
        "the second load's value is kept"
    );
    assert_eq!(
        get(b, &other).await,
        format!("{other}#1"),
        "the other key's value is kept"
    );
    assert_eq!(src.count(&key), 2);
    assert_eq!(src.count(&other), 1);
}

/// docs/hotkeys.md ("Remove and clear"): as above, with the removal made on the node that
/// asked the owner: the DELETE revokes the owner's load, and the asker keeps no hot copy of
/// the old value ("a node that removes a key while the owner is still dropping it keeps no
/// copy of the old value once the owner has confirmed").
#[tokio::test]
async fn a_key_removed_by_the_asker_while_the_owner_loads_leaves_no_copy_anywhere() {
    let src = Src::default();
    let nodes = nodes(2, &src, SourceOptions::new(), |b| {
        b.hot_keys(HotKeys::AboveQps(0.0))
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&a.cache, &b.url, "asker-removes:");
    src.close();
    let waiting = spawn_get(a, SRC, &key);
    eventually("the owner's load starts", DEADLINE, || src.count(&key) == 1).await;
    let removal = remove(a, "remove", &key).await;
    assert!(removal.is_complete(), "{removal:?}");
    src.open();
    let waited = within("waiting get", waiting).await.unwrap().unwrap();
    assert_eq!(waited, format!("{key}#1"));
    assert_eq!(
        snap(a).hot_cache.items,
        0,
        "A kept a hot copy of the removed value"
    );
    assert_eq!(snap(b).main_cache.items, 0, "B kept the removed value");
    assert_eq!(get(a, &key).await, format!("{key}#2"));
    assert_eq!(get(b, &key).await, format!("{key}#2"));
}

/// docs/hotkeys.md ("Remove and clear"): "`CacheHandle::clear(source)` drops the source here
/// and sends `DELETE {base}{source}` to every other node"; "A clear revokes every load of the
/// source". Values cached on every node and loads in flight on two nodes: after `clear`, no
/// node holds anything, the waiting callers still get their values, and the next gets load
/// again.
#[tokio::test]
async fn clear_empties_every_node_and_revokes_the_loads_in_flight() {
    let src = Src::default();
    let nodes = nodes(3, &src, SourceOptions::new(), |b| {
        b.hot_keys(HotKeys::AboveQps(0.0))
    })
    .await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut cached = Vec::new();
    for (i, owner) in nodes.iter().enumerate() {
        let key = key_owned_by(&a.cache, &owner.url, &format!("cached{i}:"));
        for n in &nodes {
            get(n, &key).await;
        }
        cached.push(key);
    }
    for n in &nodes {
        assert!(snap(n).main_cache.items >= 1);
    }
    // Loads in flight: one on B for A's get, one on C for C's own get.
    let on_b = key_owned_by(&a.cache, &b.url, "inflight-b:");
    let on_c = key_owned_by(&a.cache, &c.url, "inflight-c:");
    src.close();
    let get_b = spawn_get(a, SRC, &on_b);
    let get_c = spawn_get(c, SRC, &on_c);
    eventually("both loads start", DEADLINE, || {
        src.count(&on_b) == 1 && src.count(&on_c) == 1
    })
    .await;
    let removal = within("clear", a.handle().clear(SRC)).await.expect("clear");
    assert!(removal.is_complete(), "{removal:?}");
    // A get after the clear never joins a revoked load: it starts one of its own.
    let get_after = spawn_get(c, SRC, &on_c);
    eventually(
        "a get after the clear starts its own load",
        DEADLINE,
        || src.count(&on_c) == 2,
    )
    .await;
    src.open();
    assert_eq!(
        within("get after clear", get_after).await.unwrap().unwrap(),
        format!("{on_c}#2")
    );
    assert_eq!(
        within("get b", get_b).await.unwrap().unwrap(),
        format!("{on_b}#1")
    );
    assert_eq!(
        within("get c", get_c).await.unwrap().unwrap(),
        format!("{on_c}#1")
    );
    for n in &nodes {
        let s = snap(n);
        let expected_main = if n.url == c.url { 1 } else { 0 };
        assert_eq!(
            (s.main_cache.items, s.hot_cache.items),
            (expected_main, 0),
            "{} holds values after clear (C keeps only the load started after it)",
            n.url
        );
    }
    for key in cached.iter().chain([&on_b, &on_c]) {
        assert_eq!(get(a, key).await, format!("{key}#2"), "{key} loaded again");
    }
    assert_eq!(src.count(&on_c), 2, "the post-clear load's value was kept");
}

/// docs/hotkeys.md ("Remove and clear"): "then sends the `DELETE` to every other peer (their
/// hot copies)" and "A load that is running when its key is removed does not put the old value
/// back". A third node removes the key while A's fetch waits on the owner's load: neither A
/// nor B keeps the old value.
#[tokio::test]
async fn a_key_removed_by_a_third_node_while_an_asker_waits_leaves_no_hot_copy() {
    let src = Src::default();
    let nodes = nodes(3, &src, SourceOptions::new(), |b| {
        b.hot_keys(HotKeys::AboveQps(0.0))
    })
    .await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let key = key_owned_by(&a.cache, &b.url, "third-removes:");
    src.close();
    let waiting = spawn_get(a, SRC, &key);
    eventually("the owner's load starts", DEADLINE, || src.count(&key) == 1).await;
    let removal = remove(c, "remove", &key).await;
    assert!(removal.is_complete(), "{removal:?}");
    src.open();
    assert_eq!(
        within("waiting get", waiting).await.unwrap().unwrap(),
        format!("{key}#1")
    );
    assert_eq!(
        snap(a).hot_cache.items,
        0,
        "A kept a hot copy of the removed value"
    );
    assert_eq!(snap(b).main_cache.items, 0, "B kept the removed value");
    assert_eq!(get(a, &key).await, format!("{key}#2"));
}

/// SourceOptions rustdoc: `ttl` "The TTL of values whose load gave none. A TTL the source
/// gives wins."; `ttl_jitter` "Adds a random extra of up to `jitter` to each TTL". A source's
/// 10 s TTL, with a default of 300 s and a jitter of 5 s: the value expires between 10 s and
/// 15 s, not at 300 s.
#[tokio::test]
async fn a_ttl_the_source_gives_wins_over_the_default() {
    let src = Src::default();
    src.set_ttl(Some(secs(10)));
    let options = SourceOptions::new().ttl(secs(300)).ttl_jitter(secs(5));
    let (clock, nodes) = clocked_nodes(1, &src, options, |b| b).await;
    let n = &nodes[0];
    assert_eq!(get(n, "given").await, "given#1");
    clock.advance(Duration::from_millis(9_900));
    assert_eq!(
        get(n, "given").await,
        "given#1",
        "9.9 s: before the source's TTL"
    );
    clock.advance(Duration::from_millis(5_200));
    assert_eq!(
        get(n, "given").await,
        "given#2",
        "15.1 s: past the source's 10 s TTL and 5 s jitter"
    );
}

/// docs/hotkeys.md ("Stale serving"): "`stale_while_revalidate(grace)`: for `grace` after a
/// value expires, a get returns it at once and one background load refreshes it. ... Both
/// count in `SourceStats::stale_served`". A's hot copy (TTL 10 s, `hot_max_staleness` 600 s)
/// is 11 s old, within the 30 s grace: a get through A returns the stale value, counted as
/// `stale_served` (on A, or on the owner that served it), and one refresh follows.
/// (Observed: A does not use its hot copy; the owner B serves its own stale copy and counts
/// it. The docs do not say which node counts.)
#[tokio::test]
async fn stale_while_revalidate_reaches_an_asker_whose_hot_copy_expired() {
    let src = Src::default();
    src.set_ttl(Some(secs(10)));
    let options = SourceOptions::new().stale_while_revalidate(secs(30));
    let (clock, nodes) = clocked_nodes(2, &src, options, |b| {
        b.hot_keys(HotKeys::AboveQps(0.0))
            .hot_max_staleness(secs(600))
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&a.cache, &b.url, "swr-hot:");
    assert_eq!(get(a, &key).await, format!("{key}#1"));
    assert_eq!(stats(a).hot_promotions, 1);
    clock.advance(secs(11));
    assert_eq!(
        get(a, &key).await,
        format!("{key}#1"),
        "the stale value, within the grace"
    );
    assert_eq!(
        stats(a).stale_served + stats(b).stale_served,
        1,
        "one stale answer counted"
    );
    eventually("one refresh loads the key", DEADLINE, || {
        src.count(&key) == 2
    })
    .await;
    let fresh = format!("{key}#2");
    eventually_async("the refresh never landed", || async {
        get(b, &key).await == fresh
    })
    .await;
    assert_eq!(src.count(&key), 2);
}
