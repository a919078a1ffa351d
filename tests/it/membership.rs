//! Membership on loopback: a node joining, a node killed and restarted under load, the peer
//! list replaced at runtime, and nodes whose peer lists differ noticing it by the ring
//! fingerprint.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::{Loads, cluster, eventually, key_owned_by, start_node, value_of};
use tokio::net::TcpListener;
use tower_groupcache::Ring;

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_fourth_node_takes_a_quarter_of_the_keys() {
    let loads = Loads::default();
    let mut nodes = cluster(3, &loads, |b| b).await;
    let keys: Vec<String> = (0..10_000).map(|i| format!("user:{i}")).collect();
    let before = nodes[0].cache.ring();
    // Some values cached before the change.
    for key in keys.iter().take(300) {
        nodes[0].handle().get("users", key).await.unwrap();
    }

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    urls.push(format!("http://{}", listener.local_addr().unwrap()));
    nodes.push(start_node(listener, &urls, &loads, |b| b).await);
    // Gets keep flowing through the old nodes while their rings change.
    let handles: Vec<_> = nodes[..3].iter().map(|n| n.handle()).collect();
    let during = tokio::spawn(async move {
        let mut failed = Vec::new();
        for i in 0..600 {
            let key = format!("user:{}", i % 400);
            match handles[i % 3].get("users", &key).await {
                Ok(v) if v == value_of(&key) => {}
                other => failed.push(format!("{key}: {other:?}")),
            }
            tokio::task::yield_now().await;
        }
        failed
    });
    for node in &nodes[..3] {
        node.cache.set_peers(urls.clone()).unwrap();
        tokio::task::yield_now().await;
    }
    let failed = during.await.unwrap();
    assert!(
        failed.is_empty(),
        "gets failed during the change: {failed:?}"
    );

    let after = nodes[0].cache.ring();
    let mut moved = 0;
    for key in &keys {
        let (old, new) = (before.owner(key).unwrap(), after.owner(key).unwrap());
        if old != new {
            assert_eq!(new, urls[3], "{key} moved between two old nodes");
            moved += 1;
        }
    }
    // The keys that move are the ones on the new node's arcs of the ring. With golang's ring
    // (crc32, 50 points per peer) those arcs cover anywhere from about 9% to 41% of the hash
    // space depending on the peer URLs, so the count is checked against the new node's real
    // share of the ring rather than against a flat quarter.
    let share = ring_share(&urls, &urls[3]);
    let expected = share * keys.len() as f64;
    eprintln!("join: {moved} of 10000 keys moved; the new node's ring share is {share:.3}");
    assert!(
        (moved as f64 - expected).abs() <= 300.0,
        "{moved} keys moved, {expected:.0} expected from the ring share {share:.3}"
    );
    assert!(moved > 0);
    let fingerprints: HashSet<String> = nodes
        .iter()
        .map(|n| n.cache.stats().cluster.ring_fingerprint)
        .collect();
    assert_eq!(fingerprints.len(), 1, "all four nodes agree");

    // A peer request sent while the two ends had different rings is counted as a mismatch;
    // how many there were during the change depends on how the gets and the updates
    // interleaved. From now on, with one ring everywhere, there must be none.
    let mismatches_after_change: Vec<u64> = nodes
        .iter()
        .map(|n| n.cache.stats().cluster.ring_mismatches)
        .collect();

    // Gets through every node still answer right, and keys new to the fourth node load there.
    for (i, key) in keys.iter().take(600).enumerate() {
        assert_eq!(
            nodes[i % 4].handle().get("users", key).await.unwrap(),
            value_of(key)
        );
    }
    let new_node_loads = loads.total_by(&urls[3]);
    assert!(new_node_loads > 0, "the fourth node owns and loads keys");
    for (node, mismatches) in nodes.iter().zip(mismatches_after_change) {
        let s = node.stats("users");
        assert_eq!(s.peer_errors, 0, "{}", node.url);
        assert_eq!(
            node.cache.stats().cluster.ring_mismatches,
            mismatches,
            "{}: a ring mismatch after every node had the same ring",
            node.url
        );
    }
}

/// The fraction of the 32-bit hash space that `peer` owns on golang's ring of `peers`.
fn ring_share(peers: &[String], peer: &str) -> f64 {
    let mut points: Vec<(u32, &str)> = peers
        .iter()
        .flat_map(|p| {
            (0..50).map(move |i| (crc32fast::hash(format!("{i}{p}").as_bytes()), p.as_str()))
        })
        .collect();
    points.sort_unstable();
    let mut owned = 0u64;
    for (j, &(point, owner)) in points.iter().enumerate() {
        let previous = if j == 0 {
            i64::from(points[points.len() - 1].0) - (1 << 32)
        } else {
            i64::from(points[j - 1].0)
        };
        if owner == peer {
            owned += (i64::from(point) - previous) as u64;
        }
    }
    owned as f64 / (1u64 << 32) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_and_restarted_under_load() {
    const TASKS: usize = 4;
    const GETS_PER_TASK: usize = 1_500;
    const KEYS: usize = 400;
    let loads = Loads::default();
    let config = |b: tower_groupcache::GroupcacheBuilder| {
        b.peer_timeout(Duration::from_millis(500))
            .connect_timeout(Duration::from_millis(200))
    };
    let mut nodes = cluster(3, &loads, config).await;
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let victim_addr = nodes[2].addr;

    let done = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = nodes[..2].iter().map(|n| n.handle()).collect();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (handle, done) = (handles[t % 2].clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut wrong = Vec::new();
            for i in 0..GETS_PER_TASK {
                let key = format!("user:{}", (i * 7 + t * 13) % KEYS);
                match handle.get("users", &key).await {
                    Ok(v) if v == value_of(&key) => {}
                    other => wrong.push(format!("{key}: {other:?}")),
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            wrong
        }));
    }
    let total = TASKS * GETS_PER_TASK;
    let progress = || done.load(Ordering::Relaxed);

    eventually("a third of the gets", DEADLINE, || progress() >= total / 3).await;
    nodes[2].stop();
    eventually("the victim is down", DEADLINE, || nodes[2].is_stopped()).await;
    let loads_at_kill = loads.total();

    eventually("two thirds of the gets", DEADLINE, || {
        progress() >= 2 * total / 3
    })
    .await;
    let listener = TcpListener::bind(victim_addr)
        .await
        .expect("the port is free again");
    nodes[2] = start_node(listener, &urls, &loads, config).await;
    let loads_at_restart = loads.total();

    let mut wrong = Vec::new();
    for task in tasks {
        wrong.extend(task.await.unwrap());
    }
    assert!(
        wrong.is_empty(),
        "{} failed or wrong gets, e.g. {:?}",
        wrong.len(),
        &wrong[..1]
    );
    assert_eq!(progress(), total);

    let victim_keys = (0..KEYS)
        .filter(|i| nodes[0].cache.ring().owner(&format!("user:{i}")) == Some(&*urls[2]))
        .count();
    let duplicates = loads.total() - KEYS.min(loads.total());
    let errors: u64 = nodes[..2]
        .iter()
        .map(|n| n.stats("users").peer_errors)
        .sum();
    let skips: u64 = nodes[..2].iter().map(|n| n.stats("users").peer_skips).sum();
    eprintln!(
        "chaos: {total} gets, 0 failed; {} loads for {KEYS} keys ({duplicates} duplicates: \
         {} during the outage, {} after the restart); the victim owned {victim_keys} keys; \
         peer errors {errors}, peer skips {skips}",
        loads.total(),
        loads_at_restart - loads_at_kill,
        loads.total() - loads_at_restart,
    );
    assert!(errors > 0, "the outage was seen");
    assert!(
        duplicates <= 2 * victim_keys + 2 * KEYS / 10,
        "duplicates are bounded: {duplicates}"
    );
}

#[tokio::test]
async fn nodes_with_different_peer_lists_both_notice() {
    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| b).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    // B believes in a third node that A does not know.
    b.cache
        .set_peers([a.url.clone(), b.url.clone(), "http://127.0.0.1:9".into()])
        .unwrap();
    let a_ring = Ring::new(50, [&a.url, &b.url]);
    let b_ring = b.cache.ring();
    let to_b = (0..10_000)
        .map(|i| format!("k{i}"))
        .find(|k| a_ring.owner(k) == Some(&*b.url))
        .unwrap();
    let to_a = (0..10_000)
        .map(|i| format!("k{i}"))
        .find(|k| b_ring.owner(k) == Some(&*a.url))
        .unwrap();
    a.handle().get("users", &to_b).await.unwrap();
    b.handle().get("users", &to_a).await.unwrap();
    let (sa, sb) = (a.cache.stats().cluster, b.cache.stats().cluster);
    assert_ne!(sa.ring_fingerprint, sb.ring_fingerprint);
    assert_eq!(sa.ring_mismatches, 1, "A saw B's different ring");
    assert_eq!(sb.ring_mismatches, 1, "B saw A's different ring");
}

#[tokio::test]
async fn set_peers_swaps_the_ring() {
    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| b).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&a.cache, &b.url, "user:");
    a.cache.set_peers([a.url.as_str()]).unwrap();
    assert_eq!(a.cache.ring().owner(&key), Some(&*a.url));
    assert_eq!(a.handle().get("users", &key).await.unwrap(), value_of(&key));
    assert_eq!(
        loads.of(&key),
        [a.url.as_str()],
        "loaded locally once B left the ring"
    );
    assert!(a.cache.set_peers(["not a url"]).is_err());
    assert_eq!(
        a.cache.stats().cluster.peers,
        [a.url.as_str()],
        "a bad list changes nothing"
    );
}
