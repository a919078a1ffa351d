//! The request flows of docs/guide.md ("The request flow") over real HTTP between nodes on
//! 127.0.0.1.

use std::time::Duration;

use crate::support::{Loads, cluster, eventually, key_owned_by, request, value_of};
use tower_groupcache::{ErrorKind, Groupcache, Ring};

const DEADLINE: Duration = Duration::from_secs(30);

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
async fn one_load_for_a_thousand_concurrent_gets() {
    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| b).await;
    loads.close();
    let key = "user:cold";
    let mut tasks = Vec::new();
    for i in 0..1_000 {
        let handle = nodes[i % 3].handle();
        tasks.push(tokio::spawn(async move { handle.get("users", key).await }));
    }
    // Hold the load until every get has started, so all of them overlap it.
    let caller_gets = || {
        nodes
            .iter()
            .map(|n| {
                let s = n.stats("users");
                s.gets - s.server_requests
            })
            .sum::<u64>()
    };
    eventually("all 1000 gets started", DEADLINE, || caller_gets() == 1_000).await;
    eventually("the owner started its load", DEADLINE, || {
        loads.total() == 1
    })
    .await;
    loads.open();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), value_of(key));
    }
    assert_eq!(loads.total(), 1, "one load in the whole cluster");
    let owner = nodes[0].cache.ring().owner(key).unwrap().to_owned();
    assert_eq!(loads.of(key), [owner]);
    for node in &nodes {
        assert_eq!(node.stats("users").peer_errors, 0);
    }
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
async fn errors_and_not_found_are_not_cached() {
    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| b).await;
    let (a, b) = (&nodes[0], &nodes[1]);

    // A local load error, twice: two loads.
    let key = key_owned_by(&a.cache, &a.url, "fail:");
    for round in 1..=2 {
        let err = a.handle().get("users", &key).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Load);
        let cause = std::error::Error::source(&err).expect("the source's error is kept");
        assert!(cause.to_string().contains("back end refused"), "{cause}");
        assert_eq!(loads.count(&key), round);
    }
    assert_eq!(a.stats("users").local_load_errs, 2);

    // Not found on the owner: the requester does not load it again itself.
    let key = key_owned_by(&a.cache, &b.url, "missing:");
    let err = a.handle().get("users", &key).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert_eq!(loads.of(&key), [b.url.as_str()]);
    let sa = a.stats("users");
    assert_eq!((sa.peer_errors, sa.local_loads), (0, 0));
    a.handle().get("users", &key).await.unwrap_err();
    assert_eq!(loads.count(&key), 2, "not found is not cached");

    // An unknown source is a typed error, before any I/O.
    let err = a.handle().get("nope", "k").await.unwrap_err();
    assert!(err.is_unknown_source());
}

#[tokio::test]
async fn callers_that_give_up_do_not_cancel_the_load() {
    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| b).await;
    let a = &nodes[0];
    let key = key_owned_by(&a.cache, &a.url, "user:");
    loads.close();
    let spawn_get = || {
        let (handle, key) = (a.handle(), key.clone());
        tokio::spawn(async move { handle.get("users", &key).await })
    };
    let quitters: Vec<_> = (0..5).map(|_| spawn_get()).collect();
    let stayers: Vec<_> = (0..5).map(|_| spawn_get()).collect();
    eventually("the load started", DEADLINE, || loads.total() == 1).await;
    eventually("all gets joined", DEADLINE, || a.stats("users").gets == 10).await;
    for quitter in &quitters {
        quitter.abort();
    }
    for quitter in quitters {
        assert!(quitter.await.unwrap_err().is_cancelled());
    }
    loads.open();
    for stayer in stayers {
        assert_eq!(stayer.await.unwrap().unwrap(), value_of(&key));
    }
    assert_eq!(loads.count(&key), 1);

    // Every caller gone: the load still finishes and fills the cache.
    let key = key_owned_by(&a.cache, &a.url, "user:alone:");
    loads.close();
    let all = (0..3)
        .map(|_| {
            let (handle, key) = (a.handle(), key.clone());
            tokio::spawn(async move { handle.get("users", &key).await })
        })
        .collect::<Vec<_>>();
    eventually("the load started", DEADLINE, || loads.count(&key) == 1).await;
    for task in all {
        task.abort();
    }
    loads.open();
    eventually("the abandoned load filled the cache", DEADLINE, || {
        a.cache.stats().source("users").unwrap().main_cache.items == 2
    })
    .await;
    assert_eq!(a.handle().get("users", &key).await.unwrap(), value_of(&key));
    assert_eq!(loads.count(&key), 1);
}

#[tokio::test]
async fn a_panicking_source_fails_every_waiter_then_loads_again() {
    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| b).await;
    let a = &nodes[0];
    let key = key_owned_by(&a.cache, &a.url, "panic:");
    loads.close();
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let (handle, key) = (a.handle(), key.clone());
            tokio::spawn(async move { handle.get("users", &key).await })
        })
        .collect();
    eventually("all gets joined", DEADLINE, || a.stats("users").gets == 4).await;
    loads.open();
    for waiter in waiters {
        let err = waiter.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::LoadPanicked);
    }
    assert_eq!(loads.count(&key), 1);
    let err = a.handle().get("users", &key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LoadPanicked);
    assert_eq!(
        loads.count(&key),
        2,
        "nothing poisoned: the next get loads again"
    );

    // The node still serves other keys, remote ones included.
    let other = key_owned_by(&a.cache, &nodes[1].url, "user:");
    assert_eq!(
        a.handle().get("users", &other).await.unwrap(),
        value_of(&other)
    );
}

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
async fn a_handler_without_the_layer_gets_a_clear_rejection() {
    use axum::{Router, routing::get};
    use tower::ServiceExt as _;
    use tower_groupcache::CacheHandle;

    async fn handler(_cache: CacheHandle) -> &'static str {
        "unreachable"
    }
    let app: Router = Router::new().route("/", get(handler));
    let request = axum::http::Request::get("/")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 500);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains("CacheHandle") && text.contains(".layer(cache.layer())"),
        "{text}"
    );
}

#[tokio::test]
async fn typed_keys_and_values_cross_nodes() {
    use serde::{Deserialize, Serialize};
    use tower_groupcache::typed::typed;

    #[derive(Serialize, Deserialize)]
    struct UserKey {
        tenant: String,
        id: u64,
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct User {
        name: String,
        roles: Vec<String>,
    }

    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| {
        b.source(
            "profiles",
            typed(|key: UserKey| async move {
                if key.id == 0 {
                    return Ok::<_, std::io::Error>(None);
                }
                Ok(Some(User {
                    name: format!("{}/{}", key.tenant, key.id),
                    roles: vec!["reader".into()],
                }))
            }),
        )
    })
    .await;
    for id in 1..=30 {
        let key = UserKey {
            tenant: "acme corp/ü".into(),
            id,
        };
        for node in &nodes {
            let users = node.handle().typed::<UserKey, User>("profiles");
            let user = users.get(&key).await.unwrap();
            assert_eq!(user.name, format!("acme corp/ü/{id}"));
        }
    }
    let misses: u64 = nodes.iter().map(|n| n.stats("profiles").local_loads).sum();
    assert_eq!(misses, 30, "each typed key loaded once in the cluster");
    let users = nodes[0].handle().typed::<UserKey, User>("profiles");
    let err = users
        .get(&UserKey {
            tenant: "t".into(),
            id: 0,
        })
        .await
        .unwrap_err();
    assert!(err.is_not_found());
    // A value that does not decode as the asked type is a codec error, not a panic.
    let wrong = nodes[0].handle().typed::<UserKey, Vec<u64>>("profiles");
    let err = wrong
        .get(&UserKey {
            tenant: "t".into(),
            id: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec);
}
