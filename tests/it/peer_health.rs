//! Peer health: a peer that keeps failing is skipped instead of waited for, probed once its
//! cooldown is over, and forgotten when it leaves the ring.

use std::time::Duration;

use crate::support::{Loads, Node, cluster, dead_url, hanging_peer, key_owned_by, value_of};
use tokio::task::JoinHandle;
use tower_groupcache::PeerHealthConfig;

/// A node beside a peer that accepts connections and never answers (each fetch costs the
/// whole timeout), after two gets of the peer's keys that failed and got it skipped for an
/// hour: the node, the peer's URL, and the peer's task.
async fn beside_a_skipped_black_hole(loads: &Loads) -> (Vec<Node>, String, JoinHandle<()>) {
    let (hole_url, hole) = hanging_peer().await;
    let health = PeerHealthConfig::default()
        .failure_threshold(2)
        .cooldown(Duration::from_secs(3_600))
        .max_cooldown(Duration::from_secs(3_600));
    let nodes = cluster(1, loads, |b| {
        b.peers([hole_url.clone()])
            .peer_timeout(Duration::from_millis(200))
            .peer_health(health)
    })
    .await;
    let a = &nodes[0];
    for i in 0..2 {
        let key = key_owned_by(&a.cache, &hole_url, &format!("slow{i}:"));
        assert_eq!(a.handle().get("users", &key).await.unwrap(), value_of(&key));
    }
    assert_eq!(a.stats("users").peer_errors, 2);
    assert_eq!(a.cache.stats().cluster.skipped_peers, [hole_url.as_str()]);
    (nodes, hole_url, hole)
}

#[tokio::test]
async fn a_dead_peer_is_skipped_instead_of_waited_for() {
    let loads = Loads::default();
    let (nodes, hole_url, _hole) = beside_a_skipped_black_hole(&loads).await;
    let a = &nodes[0];
    // From now on its keys load at once: no fetch is tried, so no timeout is waited for.
    for i in 0..20 {
        let key = key_owned_by(&a.cache, &hole_url, &format!("fast{i}:"));
        assert_eq!(a.handle().get("users", &key).await.unwrap(), value_of(&key));
    }
    let s = a.stats("users");
    assert_eq!((s.peer_errors, s.peer_skips, s.local_loads), (2, 20, 22));
}

/// A `get_many` of a skipped peer's keys does not ask it anything, not even what it speaks:
/// its keys load here at once and count as skipped.
#[tokio::test]
async fn a_get_many_of_a_skipped_peers_keys_sends_it_nothing() {
    let loads = Loads::default();
    let (nodes, hole_url, _hole) = beside_a_skipped_black_hole(&loads).await;
    let a = &nodes[0];
    for round in 0..3 {
        let keys: Vec<String> = (0..4)
            .map(|i| key_owned_by(&a.cache, &hole_url, &format!("many{round}.{i}:")))
            .collect();
        let values = a.handle().get_many("users", &keys).await.unwrap();
        for (key, value) in keys.iter().zip(values) {
            assert_eq!(value.unwrap(), value_of(key));
        }
    }
    let peer = a.cache.stats().peer(&hole_url).cloned().unwrap();
    assert_eq!(
        peer.requests.total(),
        2,
        "only the two gets that failed: {:?}",
        peer.requests
    );
    assert_eq!(peer.skipped, 12);
    let s = a.stats("users");
    assert_eq!((s.peer_errors, s.peer_skips, s.local_loads), (2, 12, 14));
}

#[tokio::test(start_paused = true)]
async fn a_skipped_peer_is_probed_and_comes_back() {
    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| {
        b.peer_health(
            PeerHealthConfig::default()
                .failure_threshold(1)
                .cooldown(Duration::from_secs(10))
                .max_cooldown(Duration::from_secs(10)),
        )
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    b.cache.shutdown().await; // answers 503 from now on
    let key = key_owned_by(&a.cache, &b.url, "x:");
    a.handle().get("users", &key).await.unwrap();
    assert_eq!(a.cache.stats().cluster.skipped_peers, [b.url.as_str()]);
    // Paused time: jump past the cooldown; the next get probes B (still 503) and skips again.
    tokio::time::advance(Duration::from_secs(10)).await;
    let key = key_owned_by(&a.cache, &b.url, "y:");
    a.handle().get("users", &key).await.unwrap();
    let s = a.stats("users");
    assert_eq!((s.peer_errors, s.peer_skips), (2, 0));
    let key = key_owned_by(&a.cache, &b.url, "z:");
    a.handle().get("users", &key).await.unwrap();
    assert_eq!(a.stats("users").peer_skips, 1);
    assert_eq!(
        b.stats("users").local_loads,
        0,
        "a draining node loads nothing for peers"
    );
}

#[tokio::test]
async fn a_removed_peer_leaves_the_skipped_list() {
    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| {
        b.peer_health(
            PeerHealthConfig::default()
                .failure_threshold(1)
                .cooldown(Duration::from_secs(3600))
                .max_cooldown(Duration::from_secs(3600)),
        )
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
