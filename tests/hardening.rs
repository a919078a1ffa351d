//! Promises that must hold under misuse and failure: removal that touches only its key, waiters
//! that do not depend on another caller's polling, a data source that reads its own key, a
//! bounded shutdown, and a peer's expiry read safely.

mod support;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use support::{Loads, eventually, value_of};
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

/// A stand-in owner speaking the peer protocol: it answers a get with its current value for
/// the key (with `expire` as set), and holds each `DELETE` until the test lets it through,
/// then serves the next value.
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
                if request.method() == axum::http::Method::DELETE {
                    this.state.lock().unwrap().deletes_seen += 1;
                    this.release_delete.notified().await;
                    this.state.lock().unwrap().version += 1;
                    return (axum::http::StatusCode::OK, Vec::new());
                }
                let mut state = this.state.lock().unwrap();
                state.gets += 1;
                let reply = tower_groupcache::protocol::GetResponse {
                    value: Some(Self::value(state.version).into()),
                    minute_qps: None,
                    expire: state.expire,
                };
                (axum::http::StatusCode::OK, reply.encode_to_vec())
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
