//! Promises that must hold under misuse and failure: removal that touches only its key, waiters
//! that do not depend on another caller's polling, a data source that reads its own key, a
//! bounded shutdown, and a peer's expiry read safely.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::support::{self, Loads, eventually, value_of};
use tower_groupcache::{ErrorKind, Groupcache};

const DEADLINE: Duration = Duration::from_secs(30);

fn single_node(loads: &Loads) -> Groupcache {
    Groupcache::builder()
        .source("users", loads.source("single"))
        .build()
        .expect("a valid single node")
}

#[tokio::test]
async fn removing_a_key_leaves_the_loads_of_other_keys_alone() {
    let loads = Loads::default();
    let cache = single_node(&loads);
    loads.close();
    let handle = cache.handle();
    let first = tokio::spawn(async move { handle.get("users", "user:y").await });
    eventually("y is loading", DEADLINE, || loads.count("user:y") == 1).await;
    // Thousands of other keys removed while y loads: among them, keys that share any internal
    // bucket, stripe or shard with y.
    for i in 0..5_000 {
        let removal = cache.handle().remove("users", &format!("user:x{i}")).await;
        assert!(removal.unwrap().is_complete());
    }
    let handle = cache.handle();
    let second = tokio::spawn(async move { handle.get("users", "user:y").await });
    // The second get joins the first load: it does not start one of its own.
    tokio::task::yield_now().await;
    loads.open();
    assert_eq!(first.await.unwrap().unwrap(), value_of("user:y"));
    assert_eq!(second.await.unwrap().unwrap(), value_of("user:y"));
    assert_eq!(loads.count("user:y"), 1, "one load of y");
    // And its value was kept.
    assert_eq!(
        cache.handle().get("users", "user:y").await.unwrap(),
        value_of("user:y")
    );
    assert_eq!(loads.count("user:y"), 1, "y is cached");
}

#[tokio::test]
async fn a_get_after_a_remove_never_joins_the_older_load() {
    let loads = Loads::default();
    let cache = single_node(&loads);
    loads.close();
    let handle = cache.handle();
    let before = tokio::spawn(async move { handle.get("users", "user:k").await });
    eventually("k is loading", DEADLINE, || loads.count("user:k") == 1).await;
    cache.handle().remove("users", "user:k").await.unwrap();
    let handle = cache.handle();
    let after = tokio::spawn(async move { handle.get("users", "user:k").await });
    eventually("a second load of k", DEADLINE, || {
        loads.count("user:k") == 2
    })
    .await;
    loads.open();
    before.await.unwrap().unwrap();
    after.await.unwrap().unwrap();
    // The older load's value was not stored over the removal: the newer one's was.
    cache.handle().get("users", "user:k").await.unwrap();
    assert_eq!(loads.count("user:k"), 2);
}

#[tokio::test]
async fn waiters_do_not_depend_on_the_first_callers_polling() {
    let loads = Loads::default();
    let cache = single_node(&loads);
    loads.close();
    let handle = cache.handle();
    // The first caller starts the load, then is kept alive but never polled again (as a
    // future held in a buffer or a `select!` arm that is not polled again).
    let mut first = Box::pin(handle.get("users", "user:k"));
    tokio::select! {
        biased;
        _ = &mut first => panic!("the load is held"),
        _ = std::future::ready(()) => {}
    }
    eventually("the load started", DEADLINE, || loads.count("user:k") == 1).await;
    let handle = cache.handle();
    let second = tokio::spawn(async move { handle.get("users", "user:k").await });
    loads.open();
    let got = tokio::time::timeout(DEADLINE, second)
        .await
        .expect("the second caller is not held by the first one's polling");
    assert_eq!(got.unwrap().unwrap(), value_of("user:k"));
    assert_eq!(loads.count("user:k"), 1);
    // The first caller, polled again at last, has the same value.
    assert_eq!(first.await.unwrap(), value_of("user:k"));
}

#[tokio::test]
async fn a_source_that_gets_its_own_key_fails_that_get() {
    let cell: Arc<OnceLock<Groupcache>> = Arc::default();
    let inner_error: Arc<OnceLock<ErrorKind>> = Arc::default();
    let (c, e) = (cell.clone(), inner_error.clone());
    let cache = Groupcache::builder()
        .source("users", move |key: String| {
            let (cache, inner_error) = (c.get().cloned(), e.clone());
            async move {
                let cache = cache.expect("set before the first get");
                // A data source that reads the very key it is loading, through the cache.
                match cache.handle().get("users", &key).await {
                    Ok(value) => Ok(value.to_vec()),
                    Err(error) => {
                        let _ = inner_error.set(error.kind());
                        Ok::<_, std::io::Error>(b"loaded without itself".to_vec())
                    }
                }
            }
        })
        .source("chain", {
            let c = cell.clone();
            move |key: String| {
                let cache = c.get().cloned();
                async move {
                    // `chain` reads `users`, whose loader reads `users` again: only the inner
                    // read of the key being loaded fails.
                    let cache = cache.expect("set before the first get");
                    let value = cache.handle().get("users", &key).await?;
                    Ok::<_, tower_groupcache::Error>(value.to_vec())
                }
            }
        })
        .build()
        .unwrap();
    cell.set(cache.clone()).ok().unwrap();
    let got = tokio::time::timeout(DEADLINE, cache.handle().get("users", "user:k"))
        .await
        .expect("a data source reading its own key does not deadlock");
    assert_eq!(got.unwrap(), "loaded without itself");
    assert_eq!(inner_error.get(), Some(&ErrorKind::RecursiveLoad));
    let got = tokio::time::timeout(DEADLINE, cache.handle().get("chain", "user:j"))
        .await
        .expect("no deadlock through another source");
    assert_eq!(got.unwrap(), "loaded without itself");
}

#[tokio::test]
async fn shutdown_returns_while_local_misses_go_on() {
    let loaded = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = loaded.clone();
    let cache = Groupcache::builder()
        .source("users", move |key: String| {
            let counter = counter.clone();
            async move {
                // A back end that takes a moment: the four callers' loads overlap.
                tokio::time::sleep(Duration::from_millis(1)).await;
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok::<_, std::io::Error>(key)
            }
        })
        .build()
        .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..4 {
        let (handle, stop) = (cache.handle(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                handle.get("users", &format!("miss:{t}:{i}")).await.unwrap();
                i += 1;
            }
        }));
    }
    eventually("misses are loading", DEADLINE, || {
        loaded.load(std::sync::atomic::Ordering::Relaxed) > 100
    })
    .await;
    let report = tokio::time::timeout(DEADLINE, cache.shutdown())
        .await
        .expect("shutdown waits only for the loads that started before it");
    assert!(report.is_complete(), "{report:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_gives_up_on_a_hung_source_after_its_bound() {
    let cache = Groupcache::builder()
        .shutdown_timeout(Duration::from_secs(5))
        .source("hung", |_key: String| async move {
            std::future::pending::<()>().await;
            Ok::<_, std::io::Error>("never")
        })
        .build()
        .unwrap();
    let handle = cache.handle();
    let get = tokio::spawn(async move { handle.get("hung", "k").await });
    tokio::task::yield_now().await;
    let started = tokio::time::Instant::now();
    let report = cache.shutdown().await;
    assert_eq!(report.abandoned(), 1, "{report:?}");
    assert!(!report.is_complete());
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(5),
        "the bound, on tokio's clock"
    );
    get.abort();
}

/// A stand-in owner speaking the peer protocol of this crate (it says so with the extensions
/// header): it answers a get with its current value for the key (with `expire` as set), and
/// holds each `DELETE` until the test lets it through, then serves the next value.
#[derive(Clone, Default)]
struct StandIn {
    state: Arc<std::sync::Mutex<StandInState>>,
    release_delete: Arc<tokio::sync::Notify>,
}

#[derive(Default)]
struct StandInState {
    version: u32,
    gets: usize,
    deletes_seen: usize,
    expire: Option<i64>,
}

impl StandIn {
    fn value(version: u32) -> String {
        format!("v{version}")
    }

    async fn start(&self) -> (String, tokio::task::JoinHandle<()>) {
        use axum::extract::Request;
        use prost::Message as _;
        let this = self.clone();
        let app = axum::Router::new().fallback(move |request: Request| {
            let this = this.clone();
            async move {
                let ours = [("x-groupcache-extensions", "1")];
                if request.method() == axum::http::Method::DELETE {
                    this.state.lock().unwrap().deletes_seen += 1;
                    this.release_delete.notified().await;
                    this.state.lock().unwrap().version += 1;
                    return (axum::http::StatusCode::OK, ours, Vec::new());
                }
                if request.uri().path() == "/_groupcache/" {
                    return (axum::http::StatusCode::OK, ours, Vec::new());
                }
                let mut state = this.state.lock().unwrap();
                state.gets += 1;
                let reply = tower_groupcache::protocol::GetResponse {
                    value: Some(Self::value(state.version).into()),
                    minute_qps: None,
                    expire: state.expire,
                };
                (axum::http::StatusCode::OK, ours, reply.encode_to_vec())
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        (url, support::serve(listener, app).await)
    }

    fn gets(&self) -> usize {
        self.state.lock().unwrap().gets
    }
}

/// A node of this crate beside the stand-in, keeping a hot copy of every value it fetches.
async fn node_beside(stand_in_url: &str) -> (Groupcache, String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let loads = Loads::default();
    let cache = Groupcache::builder()
        .self_url(url.clone())
        .peers([stand_in_url.to_owned(), url.clone()])
        .open_peer_path()
        .hot_keys(tower_groupcache::HotKeys::AboveQps(0.0))
        .source("users", loads.source(&url))
        .build()
        .unwrap();
    let key = support::key_owned_by(&cache, stand_in_url, "user:");
    let server = support::serve(listener, support::app(&cache)).await;
    (cache, key, server)
}

#[tokio::test]
async fn the_remover_keeps_no_hot_copy_fetched_while_the_owner_removes() {
    let stand_in = StandIn::default();
    let (owner_url, _server) = stand_in.start().await;
    let (cache, key, _node) = node_beside(&owner_url).await;
    let handle = cache.handle();
    assert_eq!(handle.get("users", &key).await.unwrap(), StandIn::value(0));
    assert_eq!(cache.stats().source("users").unwrap().hot_cache.items, 1);

    let remover = cache.handle();
    let k = key.clone();
    let removal = tokio::spawn(async move { remover.remove("users", &k).await });
    eventually("the owner has the removal", DEADLINE, || {
        stand_in.state.lock().unwrap().deletes_seen == 1
    })
    .await;
    // The owner has not dropped the old value yet: a get now fetches it again.
    assert_eq!(handle.get("users", &key).await.unwrap(), StandIn::value(0));
    stand_in.release_delete.notify_one();
    assert!(removal.await.unwrap().unwrap().is_complete());
    // Once the removal is confirmed, no copy of the old value is left here.
    assert_eq!(
        handle.get("users", &key).await.unwrap(),
        StandIn::value(1),
        "the old value was kept as a hot copy"
    );
}

#[tokio::test]
async fn a_negative_expire_from_a_peer_is_not_cached() {
    let stand_in = StandIn::default();
    stand_in.state.lock().unwrap().expire = Some(-5);
    let (owner_url, _server) = stand_in.start().await;
    let (cache, key, _node) = node_beside(&owner_url).await;
    for round in 1..=3 {
        let got = cache.handle().get("users", &key).await.unwrap();
        assert_eq!(got, StandIn::value(0), "the value is still returned");
        assert_eq!(
            stand_in.gets(),
            round,
            "a value that already expired is not kept"
        );
    }
    let users = cache.stats().source("users").unwrap().clone();
    assert_eq!(users.hot_cache.items + users.main_cache.items, 0);
}

#[tokio::test]
async fn an_owners_failing_source_is_not_loaded_again_by_the_asker() {
    let loads = Loads::default();
    let nodes = support::cluster(3, &loads, |b| b).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    for round in 0..5 {
        let key = support::key_owned_by(&a.cache, &b.url, &format!("fail:{round}:"));
        let error = a.handle().get("users", &key).await.unwrap_err();
        assert!(error.is_load(), "{error:?}");
        assert_eq!(
            loads.of(&key),
            [b.url.as_str()],
            "the back end is called once"
        );
    }
    let stats = a.stats("users");
    assert_eq!(stats.peer_errors, 0, "the owner was healthy: {stats:?}");
    assert_eq!(stats.peer_load_errors, 5, "{stats:?}");
    assert_eq!(stats.local_load_errs, 0, "{stats:?}");
    assert!(a.cache.stats().cluster.skipped_peers.is_empty());
}

#[tokio::test]
async fn a_value_over_the_askers_limit_does_not_get_a_healthy_owner_skipped() {
    let loads = Loads::default();
    let nodes = support::cluster(2, &loads, |b| b.max_value_bytes(100)).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    for round in 0..5 {
        // `value-of:<key>`: 200 bytes and more.
        let prefix = format!("{}:{round}:", "x".repeat(200));
        let key = support::key_owned_by(&a.cache, &b.url, &prefix);
        let value = a.handle().get("users", &key).await.unwrap();
        assert_eq!(value, value_of(&key), "loaded here instead");
    }
    assert!(
        a.cache.stats().cluster.skipped_peers.is_empty(),
        "{:?}",
        a.cache.stats().cluster
    );
    // The owner is still asked for the next key.
    let key = support::key_owned_by(&a.cache, &b.url, "small:");
    let before = a.stats("users").peer_loads;
    a.handle().get("users", &key).await.unwrap();
    assert_eq!(a.stats("users").peer_loads, before + 1);
    assert_eq!(a.stats("users").peer_skips, 0);
}

#[tokio::test]
async fn a_typed_key_that_does_not_decode_is_a_codec_error_on_owner_and_asker() {
    use tower_groupcache::typed::typed;
    #[derive(serde::Deserialize)]
    struct Key {
        #[allow(dead_code)]
        id: u64,
    }
    let listeners = [
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    ];
    let urls: Vec<String> = listeners
        .iter()
        .map(|l| format!("http://{}", l.local_addr().unwrap()))
        .collect();
    let mut nodes = Vec::new();
    for (listener, url) in listeners.into_iter().zip(&urls) {
        let cache = Groupcache::builder()
            .self_url(url.clone())
            .peers(urls.clone())
            .open_peer_path()
            .source(
                "users",
                typed(|key: Key| async move { Ok::<_, std::io::Error>(Some(key.id)) }),
            )
            .build()
            .unwrap();
        let server = support::serve(listener, support::app(&cache)).await;
        nodes.push((cache, server));
    }
    let (a, b) = (&nodes[0].0, &urls[1]);
    for owner in [&urls[0], b] {
        let key = support::key_owned_by(a, owner, "not json ");
        let error = a.handle().get("users", &key).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Codec, "owner {owner}: {error:?}");
    }
    let users = a.stats().source("users").unwrap().stats;
    assert_eq!(users.peer_errors, 0, "{users:?}");
}

/// WARN and ERROR lines logged on this thread while the guard lives.
fn capture_logs() -> (
    tracing::subscriber::DefaultGuard,
    Arc<std::sync::Mutex<Vec<u8>>>,
) {
    #[derive(Clone)]
    struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines(Arc::default());
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (tracing::subscriber::set_default(subscriber), lines.0)
}

fn count_lines(logs: &std::sync::Mutex<Vec<u8>>, needle: &str) -> usize {
    String::from_utf8_lossy(&logs.lock().unwrap())
        .lines()
        .filter(|line| line.contains(needle))
        .count()
}

#[tokio::test]
async fn a_flood_of_refused_peer_requests_is_counted_not_logged_line_by_line() {
    let (_guard, logs) = capture_logs();
    let loads = Loads::default();
    let nodes = support::cluster(1, &loads, |b| {
        b.peer_secret("a secret all nodes share: 32 or more random bytes")
    })
    .await;
    let node = &nodes[0];
    for i in 0..50 {
        let uri = format!("{}/_groupcache/users/k{i}", node.url);
        let (status, _, _) = support::request("GET", &uri).await;
        assert_eq!(status, 401);
    }
    let refused = count_lines(&logs, "refused");
    assert!(refused <= 1, "{refused} lines for 50 refusals");
    assert_eq!(node.cache.stats().cluster.refused_requests.missing, 50);
}

#[tokio::test]
async fn a_flood_of_foreign_ring_fingerprints_is_counted_not_logged_line_by_line() {
    let (_guard, logs) = capture_logs();
    let loads = Loads::default();
    let nodes = support::cluster(1, &loads, |b| b).await;
    let node = &nodes[0];
    for i in 0..50u32 {
        let req = axum::http::Request::builder()
            .uri(format!("{}/_groupcache/users/k{i}", node.url))
            .header("x-groupcache-ring", format!("{:08x}", 0x1000_0000 + i))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let res = support::client().request(req).await.unwrap();
        assert_eq!(res.status(), 200);
    }
    let warned = count_lines(&logs, "ring differs");
    assert!(warned <= 1, "{warned} lines for 50 foreign rings");
    assert_eq!(node.cache.stats().cluster.ring_mismatches, 50);
}

#[tokio::test]
async fn failing_fetches_and_removals_are_not_logged_one_line_each() {
    let (_guard, logs) = capture_logs();
    // A peer that refuses connections: its port was bound, then let go.
    let dead = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let loads = Loads::default();
    let nodes = support::cluster(1, &loads, |b| {
        b.peers([dead.clone()])
            .peer_health(tower_groupcache::PeerHealthConfig {
                failure_threshold: 0,
                ..Default::default()
            })
    })
    .await;
    let node = &nodes[0];
    for i in 0..30 {
        let key = support::key_owned_by(&node.cache, &dead, &format!("k{i}:"));
        node.handle().get("users", &key).await.unwrap();
        let removal = node.handle().remove("users", &key).await.unwrap();
        assert_eq!(removal.unreachable, [dead.as_str()]);
    }
    assert_eq!(node.stats("users").peer_errors, 30);
    let fetches = count_lines(&logs, "peer fetch failed");
    let removals = count_lines(&logs, "removal not confirmed");
    assert!(fetches <= 1, "{fetches} lines for 30 failed fetches");
    assert!(
        removals <= 1,
        "{removals} lines for 30 unconfirmed removals"
    );
}

#[tokio::test]
async fn a_layer_that_does_not_reach_the_peer_path_is_reported_at_start() {
    use axum::routing::get;
    let (_guard, logs) = capture_logs();
    let mut bad_urls = Vec::new();
    let mut servers = Vec::new();
    let mut caches = Vec::new();
    for mount in ["route_layer", "nest"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let cache = Groupcache::builder()
            .self_url(url.clone())
            .peers([url.clone(), "http://127.0.0.1:9".to_owned()])
            .open_peer_path()
            .source("users", |key: String| async move {
                Ok::<_, std::io::Error>(key)
            })
            .build()
            .unwrap();
        let handler = || async { "ok" };
        let app = match mount {
            "route_layer" => axum::Router::new()
                .route("/get", get(handler))
                .route_layer(cache.layer()),
            _ => axum::Router::new().nest(
                "/api",
                axum::Router::new()
                    .route("/get", get(handler))
                    .layer(cache.layer()),
            ),
        };
        servers.push(support::serve(listener, app).await);
        // The peer path is not reached: answered by the router, not by the cache.
        let (status, _, _) = support::request("GET", &format!("{url}/_groupcache/users/k")).await;
        assert_eq!(status, 404, "{mount}");
        bad_urls.push(url);
        caches.push(cache);
    }
    eventually("both nodes report their peer path", DEADLINE, || {
        bad_urls.iter().all(|url| {
            count_lines(
                &logs,
                &format!("peer path {url}/_groupcache/ is not served"),
            ) >= 1
        })
    })
    .await;
}

#[tokio::test]
async fn a_removal_answered_without_the_extensions_is_not_counted_as_confirmed() {
    // A peer that said it speaks the extensions, then answers the removal as a Go node would
    // (a Go node took its address): a 200 with a value, without the header.
    let app = axum::Router::new().fallback(|request: axum::extract::Request| async move {
        if request.uri().path() == "/_groupcache/" {
            return ([("x-groupcache-extensions", "1")], Vec::new());
        }
        (
            [("content-type", "application/x-protobuf")],
            b"\x0a\x01v".to_vec(),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = format!("http://{}", listener.local_addr().unwrap());
    let _server = support::serve(listener, app).await;
    let (cache, key, _node) = node_beside(&peer).await;
    let removal = cache.handle().remove("users", &key).await.unwrap();
    assert_eq!(removal.unsupported, [peer.as_str()], "{removal:?}");
    assert!(removal.unreachable.is_empty());
    assert!(!removal.is_complete());
}
