//! Graceful shutdown: it waits for the loads that started before it, not for the ones that
//! keep starting, gives up on a hung data source after `shutdown_timeout`, and refuses peer
//! requests meanwhile, so that peers load the node's keys themselves.

use std::sync::Arc;
use std::time::Duration;

use crate::support::{self, Loads, cluster, eventually, key_owned_by, value_of};
use tower_groupcache::Groupcache;

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn shutdown_waits_for_loads_and_refuses_peers() {
    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| b).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&a.cache, &a.url, "user:");
    loads.close();
    let handle = a.handle();
    let k = key.clone();
    let get = tokio::spawn(async move { handle.get("users", &k).await });
    eventually("the load started", DEADLINE, || loads.count(&key) == 1).await;
    let cache = a.cache.clone();
    let shutdown = tokio::spawn(async move { cache.shutdown().await });
    eventually("shutdown began", DEADLINE, || a.cache.is_shutting_down()).await;
    assert!(!shutdown.is_finished(), "a load is still running");
    // Peers are refused now.
    let (status, _, _) = support::request("GET", &format!("{}/_groupcache/users/k", a.url)).await;
    assert_eq!(status, 503);
    loads.open();
    assert_eq!(get.await.unwrap().unwrap(), value_of(&key));
    assert!(shutdown.await.unwrap().is_complete());
    // B, refused by A, loads A's keys itself.
    let other = key_owned_by(&b.cache, &a.url, "user:other:");
    assert_eq!(
        b.handle().get("users", &other).await.unwrap(),
        value_of(&other)
    );
    assert_eq!(loads.of(&other), [b.url.as_str()]);
    assert_eq!(b.stats("users").peer_errors, 1);
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
