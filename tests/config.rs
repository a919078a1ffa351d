//! Settings and membership changes at their limits, on real nodes over 127.0.0.1.

mod support;

use std::time::Duration;

use support::{Loads, cluster, key_owned_by, value_of};
use tokio::net::TcpListener;
use tower_groupcache::PeerHealthConfig;

/// A URL where nothing listens: a port bound, then released.
async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

#[tokio::test]
async fn a_removed_peer_leaves_the_skipped_list() {
    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| {
        b.peer_health(PeerHealthConfig {
            failure_threshold: 1,
            cooldown: Duration::from_secs(3600),
            max_cooldown: Duration::from_secs(3600),
        })
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let dead = dead_url().await;
    a.cache
        .set_peers([a.url.clone(), b.url.clone(), dead.clone()])
        .unwrap();
    let key = key_owned_by(&a.cache, &dead, "user:");
    assert_eq!(a.handle().get("users", &key).await.unwrap(), value_of(&key));
    assert_eq!(a.cache.stats().cluster.skipped_peers, [dead.as_str()]);

    // The dead node leaves the ring: it is no longer reported, nor remembered.
    a.cache.set_peers([a.url.clone(), b.url.clone()]).unwrap();
    assert!(
        a.cache.stats().cluster.skipped_peers.is_empty(),
        "{:?}",
        a.cache.stats().cluster.skipped_peers
    );
    // Back on the ring, it starts healthy: the next get asks it again.
    a.cache
        .set_peers([a.url.clone(), b.url.clone(), dead.clone()])
        .unwrap();
    assert!(a.cache.stats().cluster.skipped_peers.is_empty());
    let other = key_owned_by(&a.cache, &dead, "other:");
    a.handle().get("users", &other).await.unwrap();
    let s = a.stats("users");
    assert_eq!((s.peer_errors, s.peer_skips), (2, 0), "{s:?}");
}
