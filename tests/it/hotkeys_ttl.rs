//! Hot keys by popularity, TTL on the wire, remove and clear, negative caching and stale
//! serving, on real nodes over loopback with a clock moved by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{Loads, cluster, eventually, key_owned_by, value_of};
use tower_groupcache::{Groupcache, HotKeys, Loaded, ManualClock, SourceOptions};

const DEADLINE: Duration = Duration::from_secs(30);

/// A source whose value for a key is `key#n`, n counting its loads; it fails while `failing`.
#[derive(Clone, Default)]
struct Versioned {
    loads: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

impl Versioned {
    fn source(&self, ttl: Option<Duration>) -> impl tower_groupcache::Source {
        let this = self.clone();
        move |key: String| {
            let this = this.clone();
            async move {
                if this.failing.load(Ordering::SeqCst) {
                    return Err(std::io::Error::other("back end down"));
                }
                let n = this.loads.fetch_add(1, Ordering::SeqCst) + 1;
                let loaded = Loaded::new(format!("{key}#{n}"));
                Ok(match ttl {
                    Some(ttl) => loaded.with_ttl(ttl),
                    None => loaded,
                })
            }
        }
    }
}

#[tokio::test]
async fn a_popular_key_is_promoted_and_then_served_without_peer_traffic() {
    let loads = Loads::default();
    let clock = ManualClock::new();
    let c = clock.clone();
    let nodes = cluster(3, &loads, move |b| {
        b.clock(c.clone()).hot_keys(HotKeys::AboveQps(0.05))
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&a.cache, &b.url, "popular:");
    // 0.05 requests per second over a one-minute window: the third fetch within the minute.
    for _ in 0..3 {
        assert_eq!(a.handle().get("users", &key).await.unwrap(), value_of(&key));
    }
    let served = b.stats("users").server_requests;
    assert_eq!(served, 3);
    for _ in 0..50 {
        assert_eq!(a.handle().get("users", &key).await.unwrap(), value_of(&key));
    }
    assert_eq!(
        b.stats("users").server_requests,
        served,
        "served from A's hot cache"
    );
    let a_stats = a.cache.stats();
    let users = a_stats.source("users").unwrap();
    assert_eq!(users.stats.hot_promotions, 1);
    assert_eq!(users.hot_cache.hits, 50);

    // Keys read once are not promoted.
    for i in 0..20 {
        let once = key_owned_by(&a.cache, &b.url, &format!("once{i}:"));
        a.handle().get("users", &once).await.unwrap();
    }
    assert_eq!(a.cache.stats().source("users").unwrap().hot_cache.items, 1);
    assert_eq!(loads.count(&key), 1);
}

#[tokio::test]
async fn the_owners_measured_rate_promotes_on_a_node_that_asked_once() {
    let loads = Loads::default();
    let clock = ManualClock::new();
    let c = clock.clone();
    let nodes = cluster(3, &loads, move |b| {
        b.clock(c.clone()).hot_keys(HotKeys::AboveQps(0.05))
    })
    .await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let key = key_owned_by(&a.cache, &b.url, "shared:");
    // C asks B twice, then A once: B has seen 3 requests for the key and says so.
    c.handle().get("users", &key).await.unwrap();
    c.handle().get("users", &key).await.unwrap();
    assert_eq!(c.cache.stats().source("users").unwrap().hot_cache.items, 0);
    a.handle().get("users", &key).await.unwrap();
    assert_eq!(a.cache.stats().source("users").unwrap().hot_cache.items, 1);
}

#[tokio::test]
async fn the_hot_cache_stays_within_its_share() {
    const BUDGET: u64 = 64 << 10;
    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| {
        b.cache_bytes(BUDGET)
            .hot_cache_fraction(0.25)
            .hot_keys(HotKeys::AboveQps(0.0))
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let big = "x".repeat(1_000);
    for i in 0..300 {
        let key = key_owned_by(&a.cache, &b.url, &format!("{big}{i}:"));
        a.handle().get("users", &key).await.unwrap();
    }
    let stats = a.cache.stats();
    let users = stats.source("users").unwrap();
    assert!(users.hot_cache.bytes <= BUDGET / 4, "{:?}", users.hot_cache);
    assert!(users.hot_cache.evictions > 0);
    assert!(users.main_cache.bytes + users.hot_cache.bytes <= BUDGET);
}

#[tokio::test]
async fn ttl_expires_on_the_owner_and_on_hot_copies() {
    let clock = ManualClock::new();
    let versioned = Versioned::default();
    let loads = Loads::default();
    let (c, v) = (clock.clone(), versioned.clone());
    let nodes = cluster(2, &loads, move |b| {
        b.clock(c.clone())
            .hot_keys(HotKeys::AboveQps(0.0))
            .source("versioned", v.source(Some(Duration::from_secs(10))))
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&a.cache, &b.url, "ttl:");
    assert_eq!(
        a.handle().get("versioned", &key).await.unwrap(),
        format!("{key}#1")
    );
    // The hot copy on A and the owner's copy on B both hold it now.
    clock.advance(Duration::from_secs(9));
    assert_eq!(
        a.handle().get("versioned", &key).await.unwrap(),
        format!("{key}#1")
    );
    assert_eq!(
        b.stats("versioned").server_requests,
        1,
        "A served it from its hot copy"
    );
    // The expiry travelled with the value: both copies expire together.
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        a.handle().get("versioned", &key).await.unwrap(),
        format!("{key}#2")
    );
    assert_eq!(b.stats("versioned").server_requests, 2);
    assert_eq!(
        b.handle().get("versioned", &key).await.unwrap(),
        format!("{key}#2")
    );
    assert_eq!(versioned.loads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_default_ttl_applies_when_the_source_gives_none() {
    let clock = ManualClock::new();
    let versioned = Versioned::default();
    let cache = Groupcache::builder()
        .clock(clock.clone())
        .source_with(
            "v",
            versioned.source(None),
            SourceOptions::new().ttl(Duration::from_secs(30)),
        )
        .build()
        .unwrap();
    let h = cache.handle();
    assert_eq!(h.get("v", "k").await.unwrap(), "k#1");
    clock.advance(Duration::from_secs(29));
    assert_eq!(h.get("v", "k").await.unwrap(), "k#1");
    clock.advance(Duration::from_secs(1));
    assert_eq!(h.get("v", "k").await.unwrap(), "k#2");
}

#[tokio::test]
async fn remove_during_an_in_flight_load_leaves_no_stale_value() {
    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| b.hot_keys(HotKeys::AboveQps(0.0))).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let key = key_owned_by(&a.cache, &b.url, "user:");
    // Warm a hot copy on C.
    c.handle().get("users", &key).await.unwrap();
    assert_eq!(c.cache.stats().source("users").unwrap().hot_cache.items, 1);
    b.handle().remove("users", &key).await.unwrap();
    assert_eq!(loads.count(&key), 1);

    // A asks for the key; B's load is held; meanwhile the key is removed.
    loads.close();
    let handle = a.handle();
    let k = key.clone();
    let get = tokio::spawn(async move { handle.get("users", &k).await });
    eventually("B is loading", DEADLINE, || loads.count(&key) == 2).await;
    let removal = a.handle().remove("users", &key).await.unwrap();
    assert!(removal.is_complete(), "{removal:?}");
    loads.open();
    // The caller that asked before the remove gets the value of its load...
    assert_eq!(get.await.unwrap().unwrap(), value_of(&key));
    // ...but no node keeps it.
    for node in &nodes {
        let stats = node.cache.stats();
        let users = stats.source("users").unwrap();
        assert_eq!(
            users.main_cache.items + users.hot_cache.items,
            0,
            "{}",
            node.url
        );
    }
    a.handle().get("users", &key).await.unwrap();
    assert_eq!(loads.count(&key), 3, "the next get loads again");
}

#[tokio::test]
async fn remove_reports_unreachable_peers_and_clear_empties_every_node() {
    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| b.hot_keys(HotKeys::AboveQps(0.0))).await;
    for i in 0..30 {
        let key = format!("user:{i}");
        for node in &nodes {
            node.handle().get("users", &key).await.unwrap();
        }
    }
    let removal = nodes[0].handle().clear("users").await.unwrap();
    assert!(removal.is_complete());
    for node in &nodes {
        let stats = node.cache.stats();
        let users = stats.source("users").unwrap();
        assert_eq!(
            users.main_cache.items + users.hot_cache.items,
            0,
            "{}",
            node.url
        );
    }
    nodes[2].stop();
    eventually("C is down", DEADLINE, || nodes[2].is_stopped()).await;
    let removal = nodes[0].handle().remove("users", "user:1").await.unwrap();
    assert_eq!(removal.unreachable, [nodes[2].url.as_str()]);
    assert!(
        nodes[0]
            .handle()
            .remove("nope", "k")
            .await
            .unwrap_err()
            .is_unknown_source()
    );
}

#[tokio::test]
async fn not_found_is_cached_only_when_configured() {
    let clock = ManualClock::new();
    let misses = Arc::new(AtomicUsize::new(0));
    let source = |misses: Arc<AtomicUsize>| {
        move |_key: String| {
            let misses = misses.clone();
            async move {
                misses.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(Loaded::not_found())
            }
        }
    };
    let cache = Groupcache::builder()
        .clock(clock.clone())
        .source("plain", source(misses.clone()))
        .source_with(
            "negative",
            source(misses.clone()),
            SourceOptions::new().negative_ttl(Duration::from_secs(10)),
        )
        .build()
        .unwrap();
    let h = cache.handle();
    for _ in 0..3 {
        assert!(h.get("plain", "k").await.unwrap_err().is_not_found());
    }
    assert_eq!(misses.load(Ordering::SeqCst), 3);
    for _ in 0..3 {
        assert!(h.get("negative", "k").await.unwrap_err().is_not_found());
    }
    assert_eq!(misses.load(Ordering::SeqCst), 4, "the not-found was cached");
    clock.advance(Duration::from_secs(10));
    assert!(h.get("negative", "k").await.unwrap_err().is_not_found());
    assert_eq!(misses.load(Ordering::SeqCst), 5, "and expired");
}

#[tokio::test]
async fn stale_while_revalidate_serves_at_once_and_loads_once_in_the_background() {
    let clock = ManualClock::new();
    let versioned = Versioned::default();
    let cache = Groupcache::builder()
        .clock(clock.clone())
        .source_with(
            "v",
            versioned.source(Some(Duration::from_secs(10))),
            SourceOptions::new().stale_while_revalidate(Duration::from_secs(60)),
        )
        .build()
        .unwrap();
    let h = cache.handle();
    assert_eq!(h.get("v", "k").await.unwrap(), "k#1");
    clock.advance(Duration::from_secs(11));
    for _ in 0..5 {
        // Expired but within the grace: the old value at once.
        let got = h.get("v", "k").await.unwrap();
        assert!(got == "k#1" || got == "k#2", "{got:?}");
    }
    eventually("the refresh landed", DEADLINE, || {
        cache.stats().source("v").unwrap().stats.local_loads == 2
    })
    .await;
    assert_eq!(h.get("v", "k").await.unwrap(), "k#2");
    assert_eq!(
        versioned.loads.load(Ordering::SeqCst),
        2,
        "one background load"
    );
    assert!(cache.stats().source("v").unwrap().stats.stale_served >= 1);
    // Past the grace, a get waits for a fresh load.
    clock.advance(Duration::from_secs(200));
    assert_eq!(h.get("v", "k").await.unwrap(), "k#3");
}

#[tokio::test]
async fn stale_if_error_serves_the_old_value_when_the_load_fails() {
    let clock = ManualClock::new();
    let versioned = Versioned::default();
    let cache = Groupcache::builder()
        .clock(clock.clone())
        .source_with(
            "v",
            versioned.source(Some(Duration::from_secs(10))),
            SourceOptions::new().stale_if_error(Duration::from_secs(60)),
        )
        .build()
        .unwrap();
    let h = cache.handle();
    assert_eq!(h.get("v", "k").await.unwrap(), "k#1");
    versioned.failing.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        h.get("v", "k").await.unwrap(),
        "k#1",
        "stale, because the load failed"
    );
    let stats = cache.stats().source("v").unwrap().stats;
    assert_eq!((stats.stale_served, stats.local_load_errs), (1, 1));
    clock.advance(Duration::from_secs(40));
    assert!(
        h.get("v", "k").await.unwrap_err().is_load(),
        "past the window: the error"
    );
    versioned.failing.store(false, Ordering::SeqCst);
    assert_eq!(h.get("v", "k").await.unwrap(), "k#2");
}
