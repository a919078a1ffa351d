//! The request flows of docs/guide.md ("The request flow") over real HTTP between nodes on
//! 127.0.0.1: the four ways a get goes, keys placed and loaded where golang's ring places
//! them, a hit that hands out the loaded buffer itself, and independent caches in one process.

use std::time::Duration;

use crate::support::{Loads, cluster, key_owned_by, request, value_of};
use tower_groupcache::{Groupcache, Ring};

#[tokio::test]
async fn the_four_request_flows() {
    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| b).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let local_key = key_owned_by(&a.cache, &a.url, "user:");
    let remote_key = key_owned_by(&a.cache, &b.url, "user:");

    // 3. Miss, local owner: A loads from its data source.
    assert_eq!(
        a.handle().get("users", &local_key).await.unwrap(),
        value_of(&local_key)
    );
    assert_eq!(loads.of(&local_key), [a.url.as_str()]);
    let s = a.stats("users");
    assert_eq!(
        (s.gets, s.cache_hits, s.loads, s.local_loads, s.peer_loads),
        (1, 0, 1, 1, 0)
    );

    // 1. Local hit: no load, no peer request.
    assert_eq!(
        a.handle().get("users", &local_key).await.unwrap(),
        value_of(&local_key)
    );
    assert_eq!(loads.count(&local_key), 1);
    let s = a.stats("users");
    assert_eq!((s.gets, s.cache_hits, s.loads), (2, 1, 1));

    // 4. Miss, remote owner: B loads, A fetches from B.
    assert_eq!(
        a.handle().get("users", &remote_key).await.unwrap(),
        value_of(&remote_key)
    );
    assert_eq!(loads.of(&remote_key), [b.url.as_str()]);
    let (sa, sb) = (a.stats("users"), b.stats("users"));
    assert_eq!((sa.peer_loads, sa.peer_errors, sa.local_loads), (1, 0, 1));
    assert_eq!((sb.server_requests, sb.local_loads), (1, 1));

    // 2. Remote hit: C asks B, which answers from its cache.
    assert_eq!(
        c.handle().get("users", &remote_key).await.unwrap(),
        value_of(&remote_key)
    );
    assert_eq!(loads.count(&remote_key), 1);
    let (sb, sc) = (b.stats("users"), c.stats("users"));
    assert_eq!((sb.server_requests, sb.cache_hits), (2, 1));
    assert_eq!((sc.peer_loads, sc.local_loads), (1, 0));

    // The same through the service's own route: the layer hands the request on with a handle.
    let (status, _, body) = request(
        "GET",
        &format!("{}/get?source=users&key={remote_key}", c.url),
    )
    .await;
    assert_eq!((status.as_u16(), body), (200, value_of(&remote_key)));
}

#[tokio::test]
async fn every_node_places_keys_like_the_go_ring() {
    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| b).await;
    let peers: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let reference = Ring::new(50, &peers);
    for i in 0..1_000 {
        let key = format!("key-{i}");
        let owner = reference.owner(&key).unwrap();
        for node in &nodes {
            assert_eq!(node.cache.ring().owner(&key), Some(owner));
        }
    }
    // And the loads really happen there: each key, asked of any node, is loaded by its owner.
    for i in 0..150 {
        let key = format!("key-{i}");
        let node = &nodes[i % 3];
        assert_eq!(
            node.handle().get("users", &key).await.unwrap(),
            value_of(&key)
        );
        assert_eq!(
            loads.of(&key),
            [reference.owner(&key).unwrap().to_owned()],
            "{key}"
        );
    }
}

#[tokio::test]
async fn a_hit_returns_the_loaded_buffer_itself() {
    use bytes::Bytes;
    use tower_groupcache::Loaded;
    // One buffer per key, kept here to compare addresses: a hit must hand out the buffer the
    // source returned (a reference count more), never a copy, whether or not it expires.
    let plain = Bytes::from(vec![b'p'; 4096]);
    let timed = Bytes::from(vec![b't'; 4096]);
    let (p, t) = (plain.clone(), timed.clone());
    let cache = Groupcache::builder()
        .source("users", move |k: String| {
            let value = match k.as_str() {
                "plain" => Loaded::new(p.clone()),
                _ => Loaded::new(t.clone()).with_ttl(Duration::from_secs(3_600)),
            };
            async move { Ok::<_, std::io::Error>(value) }
        })
        .build()
        .unwrap();
    let handle = cache.handle();
    for (key, original) in [("plain", &plain), ("timed", &timed)] {
        let loaded = handle.get("users", key).await.unwrap();
        let hit = handle.get("users", key).await.unwrap();
        assert_eq!(
            loaded.as_ptr(),
            original.as_ptr(),
            "{key}: the load kept the buffer"
        );
        assert_eq!(
            hit.as_ptr(),
            original.as_ptr(),
            "{key}: the hit is the same buffer"
        );
        assert_eq!(hit.len(), original.len());
    }
    let stats = cache.stats().source("users").unwrap().stats;
    assert_eq!((stats.gets, stats.loads), (4, 2), "two loads, two hits");
}

#[tokio::test]
async fn independent_caches_in_one_process() {
    let first = Groupcache::builder()
        .source("users", |k: String| async move {
            Ok::<_, std::io::Error>(format!("1:{k}"))
        })
        .build()
        .unwrap();
    let second = Groupcache::builder()
        .source("users", |k: String| async move {
            Ok::<_, std::io::Error>(format!("2:{k}"))
        })
        .build()
        .unwrap();
    assert_eq!(first.handle().get("users", "k").await.unwrap(), "1:k");
    assert_eq!(second.handle().get("users", "k").await.unwrap(), "2:k");
    assert_eq!(first.stats().source("users").unwrap().stats.gets, 1);
}
