//! One load per key: concurrent gets across the cluster share it, waiters do not depend on
//! the first caller's polling, callers that give up do not cancel it, a panicking data source
//! fails every waiter and poisons nothing, and a data source that reads its own key fails that
//! read instead of deadlocking.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::support::{Loads, cluster, eventually, key_owned_by, single_node, value_of};
use tower_groupcache::{ErrorKind, Groupcache};

const DEADLINE: Duration = Duration::from_secs(30);

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
