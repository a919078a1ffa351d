//! Hot keys by popularity: a key fetched often enough is kept as a hot copy and then served
//! without peer traffic, keys read once are not, and the rate the owner measured across the
//! cluster promotes a key on a node that asked for it once.

use crate::support::{Loads, cluster, key_owned_by, value_of};
use tower_groupcache::{HotKeys, ManualClock};

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
async fn a_node_without_a_hot_cache_counts_no_promotion() {
    // `cache_bytes(0)` leaves no hot cache: a popular key cannot be kept, so no promotion
    // is counted, in every policy, for a get or a get_many.
    for policy in [
        HotKeys::AboveQps(0.05),
        HotKeys::OneInTen,
        HotKeys::AboveQps(0.0),
    ] {
        let loads = Loads::default();
        let clock = ManualClock::new();
        let c = clock.clone();
        let nodes = cluster(2, &loads, move |b| {
            b.clock(c.clone()).hot_keys(policy).cache_bytes(0)
        })
        .await;
        let (a, b) = (&nodes[0], &nodes[1]);
        let key = key_owned_by(&a.cache, &b.url, "popular:");
        for _ in 0..20 {
            assert_eq!(a.handle().get("users", &key).await.unwrap(), value_of(&key));
            let many = a.handle().get_many("users", &[&key, &key]).await.unwrap();
            assert!(
                many.iter()
                    .all(|v| v.as_ref().ok() == Some(&value_of(&key)))
            );
        }
        let stats = a.cache.stats();
        let users = stats.source("users").unwrap();
        assert_eq!(users.stats.peer_loads, 40, "{policy:?}");
        assert_eq!(users.hot_cache.items, 0, "{policy:?}");
        assert_eq!(
            users.stats.hot_promotions, 0,
            "{policy:?}: nothing was kept"
        );
    }
}
