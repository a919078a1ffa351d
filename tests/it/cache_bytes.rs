//! The main and hot caches stay within `cache_bytes`, and the hot cache within its share.

use crate::support::{Loads, cluster, key_owned_by, value_of};
use tower_groupcache::HotKeys;

#[tokio::test]
async fn caches_stay_within_cache_bytes() {
    const BUDGET: u64 = 64 << 10;
    let loads = Loads::default();
    // golang's 1-in-10 rule fills the hot cache without repeated reads.
    let nodes = cluster(3, &loads, |b| {
        b.cache_bytes(BUDGET)
            .hot_keys(tower_groupcache::HotKeys::OneInTen)
    })
    .await;
    let a = &nodes[0];
    // About 10x the budget through one node, local and remote keys alike.
    let big = "x".repeat(1_000);
    for i in 0..700 {
        let key = format!("user:{i}:{big}");
        assert_eq!(a.handle().get("users", &key).await.unwrap(), value_of(&key));
    }
    for node in &nodes {
        let stats = node.cache.stats();
        let users = stats.source("users").unwrap();
        let held = users.main_cache.bytes + users.hot_cache.bytes;
        assert!(held <= BUDGET, "{}: {held} bytes held", node.url);
        assert!(users.hot_cache.bytes <= BUDGET / 8);
    }
    let users = a.cache.stats().source("users").unwrap().clone();
    assert!(users.main_cache.evictions > 0, "{users:?}");
    assert!(
        users.hot_cache.items > 0,
        "some fetched values were kept hot: {users:?}"
    );
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
