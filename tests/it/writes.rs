//! Writes: `CacheHandle::set` puts a value in its owner's main cache and drops every other
//! copy; a load that started before it cannot put the old value back; bad writes fail with
//! a typed error and leave no copy behind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower_groupcache::{ErrorKind, Groupcache, HotKeys, ManualClock, SourceOptions};

use crate::support::{Loads, cluster, eventually, key_owned_by, post, value_of};

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_write_reaches_the_owner_and_drops_every_other_copy() {
    let loads = Loads::default();
    // Every fetched value is kept as a hot copy.
    let nodes = cluster(3, &loads, |b| b.hot_keys(HotKeys::AboveQps(0.0))).await;
    let (writer, owner, reader) = (&nodes[0], &nodes[1], &nodes[2]);
    let key = key_owned_by(&writer.cache, &owner.url, "user:");
    for node in &nodes {
        assert_eq!(
            node.handle().get("users", &key).await.unwrap(),
            value_of(&key)
        );
    }
    assert_eq!(loads.total(), 1);
    assert_eq!(
        reader.stats("users").hot_promotions,
        1,
        "the reader keeps a hot copy"
    );

    let removal = writer
        .handle()
        .set("users", &key, "new value", None)
        .await
        .unwrap();
    assert!(removal.is_complete(), "{removal:?}");
    for node in &nodes {
        assert_eq!(
            node.handle().get("users", &key).await.unwrap(),
            "new value",
            "{}",
            node.url
        );
    }
    assert_eq!(loads.total(), 1, "the write loaded nothing");
    assert_eq!(owner.stats("users").local_loads, 1);
}

#[tokio::test]
async fn a_write_on_the_owner_itself_and_its_ttl() {
    let loads = Loads::default();
    let clock = ManualClock::new();
    let c = clock.clone();
    let nodes = cluster(2, &loads, move |b| b.clock(c.clone())).await;
    let (owner, other) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&owner.cache, &owner.url, "user:");
    assert_eq!(
        other.handle().get("users", &key).await.unwrap(),
        value_of(&key)
    );
    owner
        .handle()
        .set("users", &key, "short-lived", Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(
        other.handle().get("users", &key).await.unwrap(),
        "short-lived"
    );
    assert_eq!(loads.total(), 1);
    clock.advance(Duration::from_secs(11));
    assert_eq!(
        other.handle().get("users", &key).await.unwrap(),
        value_of(&key),
        "the written value expired and the key was loaded again"
    );
    assert_eq!(loads.total(), 2);
}

#[tokio::test]
async fn a_load_that_started_before_the_write_does_not_put_the_old_value_back() {
    let loads = Loads::default();
    let cache = Groupcache::builder()
        .source("users", loads.source("single"))
        .build()
        .unwrap();
    loads.close();
    let handle = cache.handle();
    let get = tokio::spawn({
        let handle = handle.clone();
        async move { handle.get("users", "k").await }
    });
    eventually("the load started", DEADLINE, || loads.total() == 1).await;
    handle.set("users", "k", "written", None).await.unwrap();
    loads.open();
    // The get that waited gets what its load gave; the cache keeps the write.
    assert_eq!(get.await.unwrap().unwrap(), value_of("k"));
    assert_eq!(handle.get("users", "k").await.unwrap(), "written");
    assert_eq!(loads.total(), 1);
}

#[tokio::test]
async fn bad_writes_fail_with_their_kind_and_leave_no_copy() {
    let loads = Loads::default();
    let cache = Groupcache::builder()
        .max_key_bytes(8)
        .max_value_bytes(16)
        .source_with(
            "users",
            loads.source("single"),
            SourceOptions::new().ttl(Duration::from_secs(60)),
        )
        .build()
        .unwrap();
    let handle = cache.handle();
    let kind =
        |r: Result<tower_groupcache::Removal, tower_groupcache::Error>| r.unwrap_err().kind();
    assert_eq!(
        kind(handle.set("nope", "k", "v", None).await),
        ErrorKind::UnknownSource
    );
    assert_eq!(
        kind(handle.set("users", "a-long-key", "v", None).await),
        ErrorKind::KeyTooLong
    );
    assert_eq!(
        kind(handle.set("users", "k", vec![0u8; 17], None).await),
        ErrorKind::ValueTooLarge
    );
    assert_eq!(
        handle
            .set("users", "k", vec![0u8; 17], None)
            .await
            .unwrap_err()
            .status(),
        axum::http::StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(handle.get("users", "k").await.unwrap(), value_of("k"));
    assert_eq!(
        loads.total(),
        1,
        "no failed write left a value; the get loaded the key"
    );
    handle.set("users", "k", "v", None).await.unwrap();
    assert_eq!(handle.get("users", "k").await.unwrap(), "v");
}

#[tokio::test]
async fn a_write_whose_owner_is_down_fails_and_keeps_no_copy_here() {
    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| b).await;
    let (writer, owner) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&writer.cache, &owner.url, "user:");
    assert_eq!(
        writer.handle().get("users", &key).await.unwrap(),
        value_of(&key)
    );
    owner.stop();
    let error = writer
        .handle()
        .set("users", &key, "lost", None)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Peer);
    assert!(std::error::Error::source(&error).is_some(), "says why");
    // Nothing written, nothing kept: the next get asks the (dead) owner, then loads here.
    assert_eq!(
        writer.handle().get("users", &key).await.unwrap(),
        value_of(&key)
    );
}

#[tokio::test]
async fn a_write_by_hand_is_checked_like_every_peer_request() {
    let loads = Loads::default();
    let nodes = cluster(1, &loads, |b| b.max_value_bytes(8)).await;
    let base = format!("{}/_groupcache", nodes[0].url);
    let put = |uri: String, body: &'static str| async move {
        let req = axum::http::Request::builder()
            .method("PUT")
            .uri(uri)
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        let client: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let res = client.request(req).await.unwrap();
        let status = res.status().as_u16();
        let body = http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    for (uri, body, status, text) in [
        (format!("{base}/users?key=k"), "12345678", 200, ""),
        (format!("{base}/users?key=k&ttl_ms=500"), "v", 200, ""),
        (
            format!("{base}/users?key=k"),
            "123456789",
            413,
            "a value is at most 8 bytes",
        ),
        (format!("{base}/users"), "v", 400, ""),
        (format!("{base}/users?key=k&ttl_ms=x"), "v", 400, ""),
        (format!("{base}/users?key=k&other=1"), "v", 400, ""),
        (format!("{base}/users/k"), "v", 405, "method not allowed"),
        (
            format!("{base}/nope?key=k"),
            "v",
            404,
            "no such group: nope",
        ),
    ] {
        let (got, reply) = put(uri.clone(), body).await;
        assert_eq!(got, status, "PUT {uri}: {reply}");
        assert!(reply.contains(text), "PUT {uri}: {reply}");
    }
    assert_eq!(nodes[0].handle().get("users", "k").await.unwrap(), "v");
    assert_eq!(loads.total(), 0, "no write loads anything");
    // A batched get of the written key reads it too.
    let (status, _, _) = post(&format!("{base}/users"), &[], vec![0x0a, 0x01, b'k']).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn remove_many_drops_every_key_everywhere_in_two_requests_per_peer() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    let loads = Loads::default();
    // Three nodes, each counting the removals it is sent.
    let listeners = [
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    ];
    let urls: Vec<String> = listeners
        .iter()
        .map(|l| format!("http://{}", l.local_addr().unwrap()))
        .collect();
    let mut nodes = Vec::new();
    let mut servers = Vec::new();
    for (listener, url) in listeners.into_iter().zip(&urls) {
        let cache = Groupcache::builder()
            .self_url(url.as_str())
            .peers(urls.clone())
            .open_peer_path()
            .hot_keys(HotKeys::AboveQps(0.0))
            .source("users", loads.source(url))
            .build()
            .unwrap();
        let removals = Arc::new(AtomicUsize::new(0));
        let counted = removals.clone();
        let app = crate::support::app(&cache).layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let counted = counted.clone();
                async move {
                    let method = request.method().clone();
                    if method == axum::http::Method::DELETE
                        || request.uri().query() == Some("remove")
                    {
                        counted.fetch_add(1, SeqCst);
                    }
                    next.run(request).await
                }
            },
        ));
        servers.push(crate::support::serve(listener, app).await);
        nodes.push((cache, removals));
    }
    let keys: Vec<String> = (0..30).map(|i| format!("user:{i}")).collect();
    for (cache, _) in &nodes {
        for key in &keys {
            cache.handle().get("users", key).await.unwrap();
        }
    }
    assert_eq!(loads.total(), 30);
    let peer_loads = |cache: &Groupcache| cache.stats().sources[0].stats.peer_loads;
    let before: Vec<u64> = nodes.iter().map(|(c, _)| peer_loads(c)).collect();

    let removal = nodes[0]
        .0
        .handle()
        .remove_many("users", &keys)
        .await
        .unwrap();
    assert!(removal.is_complete(), "{removal:?}");
    for (cache, removals) in &nodes[1..] {
        let n = removals.load(SeqCst);
        assert_eq!(
            n,
            2,
            "{}: its own keys, then the others'",
            cache.self_url().unwrap()
        );
    }

    // Nothing is left anywhere, hot copies included: every node fetches each key it does
    // not own again, and each owner loads each of its keys once more.
    for (cache, _) in &nodes {
        for key in &keys {
            cache.handle().get("users", key).await.unwrap();
        }
    }
    for key in &keys {
        assert_eq!(loads.count(key), 2, "{key}");
    }
    for ((cache, _), before) in nodes.iter().zip(before) {
        let me = cache.self_url().unwrap();
        let others = keys
            .iter()
            .filter(|k| cache.ring().owner(k) != Some(me))
            .count() as u64;
        assert_eq!(
            peer_loads(cache) - before,
            others,
            "{me}: no hot copy was left"
        );
    }
    drop(servers);
}

#[tokio::test]
async fn remove_many_of_keys_a_go_free_cluster_does_not_have_is_complete() {
    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| b.max_batch_keys(3)).await;
    let keys: Vec<String> = (0..10).map(|i| format!("absent:{i}")).collect();
    let removal = nodes[1].handle().remove_many("users", &keys).await.unwrap();
    assert!(removal.is_complete(), "{removal:?}");
    assert_eq!(
        nodes[1]
            .handle()
            .remove_many("nope", &keys)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::UnknownSource
    );
    assert_eq!(loads.total(), 0, "a removal loads nothing");
}

/// Every node reads all the time (single gets and `get_many`, every fetched value kept as a
/// hot copy) while each key is written in turn from each node, as a service writes after
/// updating its back end: once a write returned, no node gives an older value, however the
/// reads, their loads, the hot copies and the removals interleave with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_a_write_returned_no_node_reads_an_older_value_under_concurrent_reads() {
    const KEYS: usize = 12;
    const WRITES: u32 = 120;
    let backend: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let loads = Loads::default();
    let be = backend.clone();
    let nodes = cluster(3, &loads, move |b| {
        let be = be.clone();
        b.hot_keys(HotKeys::AboveQps(0.0))
            .source("profiles", move |key: String| {
                let be = be.clone();
                async move {
                    // Read, then finish a little later, as a query does.
                    let value = be.lock().unwrap().get(&key).cloned();
                    tokio::task::yield_now().await;
                    Ok::<_, std::io::Error>(value.unwrap_or_else(|| format!("initial:{key}")))
                }
            })
    })
    .await;
    let keys: Vec<String> = (0..KEYS).map(|i| format!("profile:{i}")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = tokio::task::JoinSet::new();
    for node in nodes.iter().flat_map(|node| [node, node]) {
        let (handle, keys, stop) = (node.handle(), keys.clone(), stop.clone());
        readers.spawn(async move {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for got in handle.get_many("profiles", &keys).await? {
                    got?;
                }
                handle.get("profiles", &keys[reads as usize % KEYS]).await?;
                reads += 1;
                // Hits are ready at once: the readers leave the writer its turn.
                tokio::task::yield_now().await;
            }
            Ok::<_, tower_groupcache::Error>(reads)
        });
    }
    let mut stale = Vec::new();
    for round in 0..WRITES {
        let key = &keys[round as usize % KEYS];
        let value = format!("written:{round}");
        backend.lock().unwrap().insert(key.clone(), value.clone());
        let writer = &nodes[round as usize % nodes.len()];
        let removal = writer
            .handle()
            .set("profiles", key, value.clone(), None)
            .await
            .unwrap();
        assert!(removal.is_complete(), "{removal:?}");
        for node in &nodes {
            let one = node.handle().get("profiles", key).await.unwrap();
            let many = node
                .handle()
                .get_many("profiles", std::slice::from_ref(key))
                .await
                .unwrap()
                .remove(0)
                .unwrap();
            if one != value || many != value {
                stale.push(format!("{key} on {}: {one:?} and {many:?}", node.url));
            }
        }
        if round % 7 == 6 {
            // A removal in between: the next reads load the back end's value again.
            let removal = nodes[(round as usize + 1) % nodes.len()]
                .handle()
                .remove_many("profiles", &keys[..KEYS / 2])
                .await
                .unwrap();
            assert!(removal.is_complete(), "{removal:?}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut reads = 0;
    while let Some(joined) = readers.join_next().await {
        reads += joined.unwrap().expect("every read succeeds");
    }
    assert!(
        stale.is_empty(),
        "older values read after a write: {stale:#?}"
    );
    assert!(reads > 0);
}

/// A back end that the service updates before it calls `set`: each key's current row, or
/// `old:{key}` while it has none.
#[derive(Clone, Default)]
struct Rows(Arc<Mutex<HashMap<String, String>>>);

impl Rows {
    fn update(&self, key: &str, value: &str) {
        self.0
            .lock()
            .unwrap()
            .insert(key.to_owned(), value.to_owned());
    }

    fn read(&self, key: &str) -> String {
        let rows = self.0.lock().unwrap();
        rows.get(key)
            .cloned()
            .unwrap_or_else(|| format!("old:{key}"))
    }
}

/// A write that fails, here for its size or on an owner that refuses it, leaves no node with
/// the value the back end had before: the next get anywhere loads the back end's new one.
#[tokio::test]
async fn after_a_failed_write_every_node_gets_the_back_ends_new_value() {
    for (case, owner_limit) in [("too large here", 64), ("refused by its owner", 24)] {
        let rows = Rows::default();
        let loads = Loads::default();
        let (listeners, urls) = crate::support::listeners(3).await;
        let mut nodes = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let rows = rows.clone();
            // Every fetched value kept as a hot copy; node 1 owns the key written.
            let limit = if i == 1 { owner_limit } else { 64 };
            let node = crate::support::start_node(listener, &urls, &loads, move |b| {
                let rows = rows.clone();
                b.hot_keys(HotKeys::AboveQps(0.0))
                    .max_value_bytes(limit)
                    .source("rows", move |key: String| {
                        let row = rows.read(&key);
                        async move { Ok::<_, std::io::Error>(row) }
                    })
            })
            .await;
            nodes.push(node);
        }
        let key = key_owned_by(&nodes[0].cache, &nodes[1].url, "k");
        for node in &nodes {
            assert_eq!(
                node.handle().get("rows", &key).await.unwrap(),
                format!("old:{key}"),
                "{case}"
            );
        }
        assert_eq!(
            nodes[2].stats("rows").hot_promotions,
            1,
            "{case}: a hot copy: {:?}",
            nodes[2].stats("rows")
        );

        // The service updates its back end, then writes a value the cache cannot take.
        let new = if owner_limit == 64 {
            "the new row, longer than the 64 bytes that every node takes at most"
        } else {
            "the new row, over the owner's 24"
        };
        rows.update(&key, new);
        let error = nodes[0]
            .handle()
            .set("rows", &key, new, None)
            .await
            .unwrap_err();
        let expected = if owner_limit == 64 {
            ErrorKind::ValueTooLarge
        } else {
            ErrorKind::Peer
        };
        assert_eq!(error.kind(), expected, "{case}: {error}");
        for node in [&nodes[0], &nodes[2], &nodes[1]] {
            assert_eq!(
                node.handle().get("rows", &key).await.unwrap(),
                new,
                "{case}: {}",
                node.url
            );
        }
    }
}
