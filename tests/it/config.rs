//! Settings at their limits, on real nodes over 127.0.0.1: whatever `build()` accepts, a get,
//! a peer fetch, the stats and the metrics work with it.

use std::time::Duration;

use crate::support::{Loads, cluster, dead_url, key_owned_by, value_of};
use tower_groupcache::{GroupcacheBuilder, HotKeys, MAX_REPLICAS, PeerHealthConfig, SourceOptions};

const DEADLINE: Duration = Duration::from_secs(30);

/// Every setting at its largest accepted value.
fn largest(b: GroupcacheBuilder) -> GroupcacheBuilder {
    let forever = SourceOptions::new()
        .ttl(Duration::MAX)
        .ttl_jitter(Duration::MAX)
        .negative_ttl(Duration::MAX)
        .stale_while_revalidate(Duration::MAX)
        .stale_if_error(Duration::MAX);
    b.cache_bytes(u64::MAX)
        .replicas(MAX_REPLICAS)
        .peer_timeout(Duration::MAX)
        .connect_timeout(Duration::MAX)
        .peer_idle_timeout(Duration::MAX)
        .max_key_bytes(usize::MAX)
        .max_value_bytes(usize::MAX)
        .peer_health(
            PeerHealthConfig::default()
                .failure_threshold(1)
                .cooldown(Duration::MAX)
                .max_cooldown(Duration::MAX),
        )
        .log_keys(true)
        .hot_keys(HotKeys::AboveQps(0.0))
        .hot_cache_fraction(1.0)
        .hot_max_staleness(Duration::MAX)
        .peer_secret(vec![b'k'; 1 << 16])
        .previous_peer_secret(vec![b'p'; 1 << 16])
        .source_with(
            "forever",
            |key: String| async move { Ok::<_, std::io::Error>(key) },
            forever,
        )
}

/// Every setting at its smallest accepted value.
fn smallest(b: GroupcacheBuilder) -> GroupcacheBuilder {
    let instant = SourceOptions::new()
        .ttl(Duration::ZERO)
        .ttl_jitter(Duration::ZERO)
        .negative_ttl(Duration::ZERO)
        .stale_while_revalidate(Duration::ZERO)
        .stale_if_error(Duration::ZERO);
    b.cache_bytes(0)
        .replicas(1)
        .peer_timeout(Duration::from_nanos(1))
        .connect_timeout(Duration::from_nanos(1))
        .peer_idle_timeout(Duration::from_nanos(1))
        .max_key_bytes(1)
        .max_value_bytes(1)
        .peer_health(
            PeerHealthConfig::default()
                .failure_threshold(u32::MAX)
                .cooldown(Duration::from_nanos(1))
                .max_cooldown(Duration::from_nanos(1)),
        )
        .hot_keys(HotKeys::AboveQps(f64::MAX))
        .hot_cache_fraction(0.0)
        .hot_max_staleness(Duration::ZERO)
        .source_with(
            "forever",
            |key: String| async move { Ok::<_, std::io::Error>(key) },
            instant,
        )
}

/// A key of one byte that the ring places on `owner`, if any does.
fn short_key(cache: &tower_groupcache::Groupcache, owner: &str) -> Option<String> {
    let ring = cache.ring();
    (b'!'..=b'~')
        .map(|b| char::from(b).to_string())
        .find(|k| ring.owner(k) == Some(owner))
}

/// A key of one byte that the ring places on `owner`.
fn short_key_owned_by(cache: &tower_groupcache::Groupcache, owner: &str) -> String {
    short_key(cache, owner).expect("some one-byte key lands on every peer")
}

/// Gets each key of `source` on `cache` in turn: each ends, with the source's value for it
/// (`users` answers `value-of:<key>`, `forever` the key itself).
async fn gets_end_with_their_values<'a>(
    cache: &tower_groupcache::Groupcache,
    source: &str,
    keys: impl IntoIterator<Item = &'a String>,
) {
    for key in keys {
        let value = tokio::time::timeout(DEADLINE, cache.handle().get(source, key))
            .await
            .expect("the get ends")
            .unwrap();
        let expected = if source == "users" {
            value_of(key)
        } else {
            key.clone().into()
        };
        assert_eq!(value, expected, "{source} {key}");
    }
}

#[tokio::test]
async fn extreme_settings_do_not_panic() {
    // The largest values: a local get, a get through the second node, a get whose owner is
    // down (the skip for `Duration::MAX` starts), then the stats and the metrics.
    let loads = Loads::default();
    let nodes = cluster(2, &loads, largest).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let dead = dead_url().await;
    a.cache
        .set_peers([a.url.clone(), b.url.clone(), dead.clone()])
        .unwrap();
    for source in ["users", "forever"] {
        let local = key_owned_by(&a.cache, &a.url, "local:");
        let remote = key_owned_by(&a.cache, &b.url, "remote:");
        let orphan = key_owned_by(&a.cache, &dead, "orphan:");
        gets_end_with_their_values(
            &a.cache,
            source,
            [&local, &remote, &orphan, &local, &remote, &orphan],
        )
        .await;
    }
    assert_eq!(a.stats("users").peer_loads, 1, "one fetch from B, then hot");
    assert_eq!(a.cache.stats().cluster.skipped_peers, [dead.as_str()]);
    a.cache.record_metrics();
    b.cache.record_metrics();

    // The smallest values: keys of one byte, peer fetches that time out, no caching.
    // With one ring point per peer, a peer's arc can be too short to hold any of the 94
    // one-byte keys (a cluster in fifty or so, as the listeners' ports fall): such a cluster
    // is built again, on other ports.
    let loads = Loads::default();
    let mut nodes = cluster(2, &loads, smallest).await;
    for _ in 0..50 {
        if nodes
            .iter()
            .all(|n| short_key(&nodes[0].cache, &n.url).is_some())
        {
            break;
        }
        nodes = cluster(2, &loads, smallest).await;
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    for source in ["users", "forever"] {
        let local = short_key_owned_by(&a.cache, &a.url);
        let remote = short_key_owned_by(&a.cache, &b.url);
        gets_end_with_their_values(&a.cache, source, [&local, &remote, &local, &remote]).await;
        let err = a.handle().get(source, "kk").await.unwrap_err();
        assert!(err.to_string().contains("too long"), "{err}");
    }
    assert!(a.cache.stats().cluster.skipped_peers.is_empty());
    assert_eq!(b.cache.stats().sources.len(), 2);
    a.cache.record_metrics();
    b.cache.record_metrics();
}
