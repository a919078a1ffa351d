//! Many keys at once: `get_many` answers each key as `get` would, in order; the misses a node
//! owns go to its data source in one batch, the others to their owners; keys already loading
//! are joined, duplicates fetched once; a batch's failure, panic or removal touches only its
//! own keys; the closure form and typed gets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Semaphore;
use tower_groupcache::{
    CacheHandle, ErrorKind, Groupcache, Loaded, LoadedMany, ManualClock, Source, SourceOptions,
    batch_fn,
};

use crate::support::{Loads, cluster, eventually, key_owned_by, value_of};

const DEADLINE: Duration = Duration::from_secs(30);

/// A data source that records each call, with the keys it was given: `load_many` calls and
/// single `load`s alike. Keys starting with `fail:` fail alone, `missing:` are left out (not
/// found), `ttl:` live 10 s; a batch with a `batchfail:` key fails whole, one with a
/// `panic:` key panics. A closed gate holds every call.
#[derive(Clone, Default)]
struct Batches {
    calls: Arc<Mutex<Vec<Vec<String>>>>,
    gate: Arc<Mutex<Option<Arc<Semaphore>>>>,
}

impl Batches {
    fn close(&self) {
        *self.gate.lock().unwrap() = Some(Arc::new(Semaphore::new(0)));
    }

    fn open(&self) {
        if let Some(gate) = self.gate.lock().unwrap().take() {
            gate.add_permits(Semaphore::MAX_PERMITS / 2);
        }
    }

    /// Every call so far, each with its keys sorted.
    fn calls(&self) -> Vec<Vec<String>> {
        self.calls.lock().unwrap().clone()
    }

    /// How many times `key` was given to the source.
    fn loads_of(&self, key: &str) -> usize {
        self.calls().iter().flatten().filter(|k| *k == key).count()
    }

    async fn call(&self, keys: &[String]) -> Result<LoadedMany, std::io::Error> {
        let mut sorted = keys.to_vec();
        sorted.sort();
        self.calls.lock().unwrap().push(sorted);
        let gate = self.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            let _permit = gate.acquire().await;
        }
        if keys.iter().any(|k| k.starts_with("panic:")) {
            panic!("data source bug in a batch of {}", keys.len());
        }
        if keys.iter().any(|k| k.starts_with("batchfail:")) {
            return Err(std::io::Error::other("the back end refused the batch"));
        }
        let mut many = LoadedMany::new();
        for key in keys {
            if key.starts_with("missing:") {
                continue;
            } else if key.starts_with("fail:") {
                many.fail(key.clone(), format!("no row for {key}"));
            } else if key.starts_with("ttl:") {
                many.insert(
                    key.clone(),
                    Loaded::new(value_of(key)).with_ttl(Duration::from_secs(10)),
                );
            } else {
                many.insert(key.clone(), value_of(key));
            }
        }
        Ok(many)
    }
}

impl Source for Batches {
    type Error = std::io::Error;

    async fn load(&self, key: &str) -> Result<Loaded, Self::Error> {
        // A single get is a batch of one here.
        match self.call(&[key.to_owned()]).await?.remove(key) {
            None => Ok(Loaded::not_found()),
            Some(Ok(loaded)) => Ok(loaded),
            Some(Err(error)) => Err(std::io::Error::other(error)),
        }
    }

    async fn load_many(&self, keys: &[String]) -> Result<LoadedMany, Self::Error> {
        self.call(keys).await
    }
}

fn node(batches: &Batches) -> Groupcache {
    Groupcache::builder()
        .source("users", batches.clone())
        .build()
        .expect("a valid single node")
}

/// A single node whose source gathers misses: up to 4 keys, 5 ms.
fn gathering_node(batches: &Batches) -> Groupcache {
    Groupcache::builder()
        .source_with(
            "users",
            batches.clone(),
            SourceOptions::new().gather_loads(4, Duration::from_millis(5)),
        )
        .build()
        .expect("a valid single node")
}

fn values(results: &[Result<bytes::Bytes, tower_groupcache::Error>]) -> Vec<String> {
    results
        .iter()
        .map(|r| match r {
            Ok(value) => String::from_utf8_lossy(value).into_owned(),
            Err(error) => format!("{:?}", error.kind()),
        })
        .collect()
}

#[tokio::test]
async fn each_key_answered_in_place_duplicates_fetched_once_in_one_batch() {
    let batches = Batches::default();
    let cache = node(&batches);
    let handle = cache.handle();
    let keys = ["a", "b", "a", "missing:c", "fail:d", "a", ""];
    let results = handle.get_many("users", &keys).await.unwrap();
    assert_eq!(
        values(&results),
        [
            "value-of:a",
            "value-of:b",
            "value-of:a",
            "NotFound",
            "Load",
            "value-of:a",
            "value-of:"
        ]
    );
    assert_eq!(
        batches.calls(),
        [vec!["", "a", "b", "fail:d", "missing:c"]],
        "one call of the source, each key once"
    );
    let error = results[4].as_ref().unwrap_err();
    assert!(error.is_load());
    assert!(
        format!("{error:?}").contains("no row for fail:d"),
        "the key's own cause is kept: {error:?}"
    );
    let stats = cache.stats().sources[0].stats;
    assert_eq!(
        (
            stats.local_loads,
            stats.local_not_found,
            stats.local_load_errs
        ),
        (3, 1, 1),
        "each key counted as a load of its own"
    );

    // Hits now, apart from the not-found and the failure, which are not cached.
    let again = handle.get_many("users", &keys).await.unwrap();
    assert_eq!(values(&again), values(&results));
    assert_eq!(batches.calls().len(), 2);
    assert_eq!(batches.calls()[1], ["fail:d", "missing:c"]);

    assert!(
        handle
            .get_many::<&str>("users", &[])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(batches.calls().len(), 2, "no call for no keys");
}

#[tokio::test]
async fn each_key_of_a_call_counts_as_a_get_and_a_miss_after_hits_loads_once() {
    let batches = Batches::default();
    let cache = node(&batches);
    let handle = cache.handle();
    handle.get_many("users", &["a", "b"]).await.unwrap();
    let before = cache.stats().sources[0].stats;

    // Every key a hit, one of them twice: each counted as the get it stands for.
    let hits = handle.get_many("users", &["a", "b", "a"]).await.unwrap();
    assert_eq!(values(&hits), ["value-of:a", "value-of:b", "value-of:a"]);
    let after = cache.stats().sources[0].stats;
    assert_eq!(after.gets - before.gets, 3, "three gets");
    assert_eq!(after.cache_hits - before.cache_hits, 3, "three hits");
    assert_eq!(batches.calls().len(), 1, "nothing loaded");

    // Hits, then misses, one missed key twice and a hit again after them: in order, and each
    // missed key loaded once in one call.
    let keys = ["a", "x", "b", "x", "y", "a", "missing:z"];
    let mixed = handle.get_many("users", &keys).await.unwrap();
    assert_eq!(
        values(&mixed),
        [
            "value-of:a",
            "value-of:x",
            "value-of:b",
            "value-of:x",
            "value-of:y",
            "value-of:a",
            "NotFound"
        ]
    );
    assert_eq!(batches.calls()[1], ["missing:z", "x", "y"]);
    assert_eq!(batches.calls().len(), 2);
    // Counted as seven gets would be: three hits, and four gets that missed (`x` twice) and
    // joined or started one of three loads.
    let last = cache.stats().sources[0].stats;
    assert_eq!(last.gets - after.gets, 7, "seven gets");
    assert_eq!(last.cache_hits - after.cache_hits, 3, "a, b and a");
    assert_eq!(last.loads - after.loads, 4, "x twice, y and missing:z");
    assert_eq!(
        last.loads_deduped - after.loads_deduped,
        3,
        "one load per missed key"
    );

    // A key asked for again after the first miss, that hits: each occurrence a hit.
    let again = handle.get_many("users", &["new", "a", "a"]).await.unwrap();
    assert_eq!(values(&again), ["value-of:new", "value-of:a", "value-of:a"]);
    let end = cache.stats().sources[0].stats;
    assert_eq!(end.gets - last.gets, 3, "three gets");
    assert_eq!(end.cache_hits - last.cache_hits, 2, "a twice");
    assert_eq!(end.loads - last.loads, 1, "new");
}

#[tokio::test]
async fn the_call_fails_whole_only_for_an_unknown_source_and_a_long_key_fails_alone() {
    let batches = Batches::default();
    let cache = Groupcache::builder()
        .max_key_bytes(8)
        .source("users", batches.clone())
        .build()
        .unwrap();
    let handle = cache.handle();
    let error = handle.get_many("nope", &["a"]).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::UnknownSource);
    let results = handle
        .get_many("users", &["a", "a-key-longer-than-eight"])
        .await
        .unwrap();
    assert_eq!(values(&results), ["value-of:a", "KeyTooLong"]);
    assert_eq!(batches.calls(), [vec!["a"]]);
}

#[tokio::test]
async fn on_three_nodes_each_owner_loads_its_keys_in_one_batch() {
    let batches = Batches::default();
    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| b.source("accounts", batches.clone())).await;
    let me = &nodes[0];
    let keys: Vec<String> = (0..60).map(|i| format!("account:{i}")).collect();
    let mine: Vec<&String> = keys
        .iter()
        .filter(|k| me.cache.ring().owner(k) == Some(me.url.as_str()))
        .collect();
    assert!(
        !mine.is_empty() && mine.len() < keys.len(),
        "keys on every side"
    );

    let results = me.handle().get_many("accounts", &keys).await.unwrap();
    let expected: Vec<String> = keys
        .iter()
        .map(|k| String::from_utf8_lossy(&value_of(k)).into_owned())
        .collect();
    assert_eq!(values(&results), expected);
    for key in &keys {
        assert_eq!(batches.loads_of(key), 1, "{key} loaded once in the cluster");
    }
    // One call of the data source per node, with exactly the keys it owns: this node's own
    // misses in one batch, and each other owner's keys in one batched peer request.
    let mut calls = batches.calls();
    calls.sort();
    let mut by_owner: Vec<Vec<String>> = nodes
        .iter()
        .map(|node| {
            let mut owned: Vec<String> = keys
                .iter()
                .filter(|k| me.cache.ring().owner(k) == Some(node.url.as_str()))
                .cloned()
                .collect();
            owned.sort();
            owned
        })
        .collect();
    by_owner.sort();
    assert_eq!(calls, by_owner);
    let stats = me.stats("accounts");
    assert_eq!(stats.peer_errors, 0);
    assert_eq!(stats.peer_loads as usize, keys.len() - mine.len());
    for node in &nodes[1..] {
        let owned = keys
            .iter()
            .filter(|k| me.cache.ring().owner(k) == Some(node.url.as_str()))
            .count();
        assert_eq!(node.stats("accounts").server_requests as usize, owned);
    }

    // Every node answers every key, with no new load.
    for node in &nodes {
        let results = node.handle().get_many("accounts", &keys).await.unwrap();
        assert_eq!(values(&results), expected);
    }
    assert_eq!(batches.calls().len(), calls.len());
}

#[tokio::test]
async fn a_key_already_loading_is_joined_not_put_in_the_batch() {
    let batches = Batches::default();
    let cache = node(&batches);
    batches.close();
    let handle = cache.handle();
    let single = tokio::spawn({
        let handle = handle.clone();
        async move { handle.get("users", "k1").await }
    });
    eventually("the single get's load started", DEADLINE, || {
        batches.calls().len() == 1
    })
    .await;
    let first = tokio::spawn({
        let handle = handle.clone();
        async move { handle.get_many("users", &["k1", "k2", "k3"]).await }
    });
    eventually("the batch started", DEADLINE, || batches.calls().len() == 2).await;
    // A second get_many of overlapping keys joins both loads.
    let second = tokio::spawn({
        let handle = handle.clone();
        async move { handle.get_many("users", &["k3", "k2", "k4", "k1"]).await }
    });
    eventually("the second batch started", DEADLINE, || {
        batches.calls().len() == 3
    })
    .await;
    batches.open();
    assert_eq!(single.await.unwrap().unwrap(), value_of("k1"));
    assert_eq!(
        values(&first.await.unwrap().unwrap()),
        ["value-of:k1", "value-of:k2", "value-of:k3"]
    );
    assert_eq!(
        values(&second.await.unwrap().unwrap()),
        ["value-of:k3", "value-of:k2", "value-of:k4", "value-of:k1"]
    );
    assert_eq!(
        batches.calls(),
        [vec!["k1"], vec!["k2", "k3"], vec!["k4"]],
        "each key loaded once"
    );
    let stats = cache.stats().sources[0].stats;
    assert_eq!(stats.loads_deduped, 4);
}

#[tokio::test]
async fn a_failed_batch_fails_its_own_keys_only_and_nothing_is_cached() {
    let batches = Batches::default();
    let cache = node(&batches);
    let handle = cache.handle();
    assert!(handle.get("users", "warm").await.is_ok());
    let results = handle
        .get_many("users", &["warm", "batchfail:x", "y"])
        .await
        .unwrap();
    assert_eq!(values(&results), ["value-of:warm", "Load", "Load"]);
    let error = results[2].as_ref().unwrap_err();
    assert!(
        format!("{error:?}").contains("refused the batch"),
        "the call's cause: {error:?}"
    );
    assert_eq!(cache.stats().sources[0].stats.local_load_errs, 2);
    // Not cached: a get of `y` alone loads it.
    assert_eq!(handle.get("users", "y").await.unwrap(), value_of("y"));
    assert_eq!(batches.loads_of("y"), 2);
}

#[tokio::test]
async fn a_panicking_batch_fails_its_keys_with_load_panicked_and_poisons_nothing() {
    let batches = Batches::default();
    let cache = node(&batches);
    let handle = cache.handle();
    let results = handle.get_many("users", &["panic:x", "y"]).await.unwrap();
    assert_eq!(values(&results), ["LoadPanicked", "LoadPanicked"]);
    assert_eq!(cache.stats().sources[0].stats.local_load_errs, 2);
    let results = handle.get_many("users", &["y", "z"]).await.unwrap();
    assert_eq!(values(&results), ["value-of:y", "value-of:z"]);
}

#[tokio::test]
async fn a_removal_during_the_batch_keeps_its_value_of_that_key_out_of_the_cache() {
    let batches = Batches::default();
    let cache = node(&batches);
    batches.close();
    let handle = cache.handle();
    let batch = tokio::spawn({
        let handle = handle.clone();
        async move { handle.get_many("users", &["k1", "k2"]).await }
    });
    eventually("the batch started", DEADLINE, || batches.calls().len() == 1).await;
    handle.remove("users", "k1").await.unwrap();
    batches.open();
    assert_eq!(
        values(&batch.await.unwrap().unwrap()),
        ["value-of:k1", "value-of:k2"]
    );
    // k2 was kept; k1's load was revoked, so the next get loads it again.
    handle.get_many("users", &["k1", "k2"]).await.unwrap();
    assert_eq!(batches.calls(), [vec!["k1", "k2"], vec!["k1"]]);
}

#[tokio::test]
async fn ttl_and_negative_caching_per_key_as_for_get() {
    let batches = Batches::default();
    let clock = ManualClock::new();
    let cache = Groupcache::builder()
        .clock(clock.clone())
        .source_with(
            "users",
            batches.clone(),
            SourceOptions::new().negative_ttl(Duration::from_secs(60)),
        )
        .build()
        .unwrap();
    let handle = cache.handle();
    let keys = ["ttl:a", "b", "missing:c"];
    let first = handle.get_many("users", &keys).await.unwrap();
    assert_eq!(values(&first), ["value-of:ttl:a", "value-of:b", "NotFound"]);
    handle.get_many("users", &keys).await.unwrap();
    assert_eq!(
        batches.calls().len(),
        1,
        "all three cached, the not-found too"
    );
    clock.advance(Duration::from_secs(11));
    handle.get_many("users", &keys).await.unwrap();
    assert_eq!(
        batches.calls(),
        [vec!["b", "missing:c", "ttl:a"], vec!["ttl:a"]],
        "only the key whose TTL ran out is loaded again"
    );
}

#[tokio::test]
async fn a_batch_that_gets_its_own_keys_fails_those_gets_instead_of_waiting_forever() {
    let handle: Arc<OnceLock<CacheHandle>> = Arc::default();
    let inner = handle.clone();
    let cache = Groupcache::builder()
        .source(
            "users",
            batch_fn(move |keys: Vec<String>| {
                let inner = inner.clone();
                async move {
                    let cache = inner.get().expect("set before the first get").clone();
                    let nested = cache.get_many("users", &keys).await?;
                    let kinds: Vec<String> = nested
                        .iter()
                        .map(|r| format!("{:?}", r.as_ref().map_err(|e| e.kind())))
                        .collect();
                    Ok::<_, tower_groupcache::Error>(keys.into_iter().zip(kinds).collect::<HashMap<
                        String,
                        String,
                    >>(
                    ))
                }
            }),
        )
        .build()
        .unwrap();
    handle.set(cache.handle()).unwrap();
    let results = tokio::time::timeout(DEADLINE, cache.handle().get_many("users", &["a", "b"]))
        .await
        .expect("no deadlock")
        .unwrap();
    assert_eq!(
        values(&results),
        ["Err(RecursiveLoad)", "Err(RecursiveLoad)"]
    );
}

#[tokio::test]
async fn the_closure_form_serves_single_gets_and_batches() {
    let calls: Arc<Mutex<Vec<usize>>> = Arc::default();
    let seen = calls.clone();
    let cache = Groupcache::builder()
        .source(
            "users",
            batch_fn(move |ids: Vec<String>| {
                seen.lock().unwrap().push(ids.len());
                async move {
                    if ids.iter().any(|id| id == "down") {
                        return Err(std::io::Error::other("database down"));
                    }
                    // Rows for the ids that exist; the others are left out.
                    Ok(ids
                        .into_iter()
                        .filter(|id| id != "nobody")
                        .map(|id| (id.clone(), format!("user {id}")))
                        .collect::<Vec<_>>())
                }
            }),
        )
        .build()
        .unwrap();
    let handle = cache.handle();
    assert_eq!(handle.get("users", "1").await.unwrap(), "user 1");
    assert!(
        handle
            .get("users", "nobody")
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(handle.get("users", "down").await.unwrap_err().is_load());
    let results = handle
        .get_many("users", &["1", "2", "3", "nobody"])
        .await
        .unwrap();
    assert_eq!(values(&results), ["user 1", "user 2", "user 3", "NotFound"]);
    assert_eq!(*calls.lock().unwrap(), [1, 1, 1, 3]);
}

#[cfg(feature = "serde")]
#[tokio::test]
async fn typed_get_many_decodes_each_value_and_fails_a_bad_one_alone() {
    use tower_groupcache::typed::typed;
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct User {
        id: u32,
    }
    let cache =
        Groupcache::builder()
            .source(
                "users",
                typed(|id: u32| async move {
                    Ok::<_, std::io::Error>((id != 404).then_some(User { id }))
                }),
            )
            .source(
                "raw",
                batch_fn(|keys: Vec<String>| async move {
                    Ok::<_, std::io::Error>(
                        keys.into_iter()
                            .map(|k| (k, "not json"))
                            .collect::<Vec<_>>(),
                    )
                }),
            )
            .build()
            .unwrap();
    let users = cache.handle().typed::<u32, User>("users");
    let results = users.get_many(&[1, 404, 2]).await.unwrap();
    assert_eq!(results[0].as_ref().unwrap(), &User { id: 1 });
    assert!(results[1].as_ref().unwrap_err().is_not_found());
    assert_eq!(results[2].as_ref().unwrap(), &User { id: 2 });
    let raw = cache.handle().typed::<String, User>("raw");
    let results = raw.get_many(&["x".to_owned()]).await.unwrap();
    assert_eq!(results[0].as_ref().unwrap_err().kind(), ErrorKind::Codec);
}

#[tokio::test]
async fn remote_keys_of_a_failing_owner_are_loaded_here() {
    let batches = Batches::default();
    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| b.source("accounts", batches.clone())).await;
    let (me, other) = (&nodes[0], &nodes[1]);
    let theirs = key_owned_by(&me.cache, &other.url, "account:");
    other.stop();
    let results = me
        .handle()
        .get_many("accounts", &[theirs.as_str()])
        .await
        .unwrap();
    assert_eq!(values(&results), [format!("value-of:{theirs}")]);
    assert_eq!(me.stats("accounts").peer_errors, 1);
}

#[tokio::test]
async fn batches_to_an_owner_are_split_at_max_batch_keys_and_a_full_reply_sends_the_rest_alone() {
    let batches = Batches::default();
    let loads = Loads::default();
    // Values of 14 bytes (`value-of:k:NNN`); the asker takes 40 bytes of values per reply.
    let nodes = cluster(2, &loads, |b| {
        b.source("accounts", batches.clone())
            .max_batch_keys(4)
            .max_value_bytes(40)
    })
    .await;
    let (me, other) = (&nodes[0], &nodes[1]);
    let keys: Vec<String> = (0..1_000)
        .map(|i| format!("k:{i:03}"))
        .filter(|k| me.cache.ring().owner(k) == Some(other.url.as_str()))
        .take(10)
        .collect();
    let results = me.handle().get_many("accounts", &keys).await.unwrap();
    let expected: Vec<String> = keys
        .iter()
        .map(|k| String::from_utf8_lossy(&value_of(k)).into_owned())
        .collect();
    assert_eq!(values(&results), expected);
    for key in &keys {
        assert_eq!(batches.loads_of(key), 1, "{key} loaded once, by its owner");
    }
    let calls = batches.calls();
    assert!(
        calls.iter().all(|c| c.len() <= 4),
        "at most 4 keys per batch: {calls:?}"
    );
    let stats = me.stats("accounts");
    assert_eq!(stats.peer_loads, 10);
    assert_eq!(stats.peer_errors, 0);
    assert_eq!(stats.local_loads, 0, "nothing loaded here");
    // Batches of 4, 4 and 2 keys; of each batch of 4, two 14-byte values fit in the 40 bytes
    // and the other two are asked for alone: 10 keys in batches, and 4 single gets.
    assert_eq!(other.stats("accounts").server_requests, 14);
}

#[tokio::test]
async fn an_owner_without_batched_gets_is_asked_key_by_key() {
    use axum::http::{Method, StatusCode};
    use axum::response::IntoResponse as _;
    use tokio::net::TcpListener;

    // Node B stands for a node of an earlier version of this crate: the extensions header on
    // every answer, and `405` to a `POST`.
    let (la, lb) = (
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    let urls = [
        format!("http://{}", la.local_addr().unwrap()),
        format!("http://{}", lb.local_addr().unwrap()),
    ];
    let batches = Batches::default();
    let build = |url: &str| {
        Groupcache::builder()
            .self_url(url)
            .peers(urls.clone())
            .open_peer_path()
            .source("users", batches.clone())
            .build()
            .unwrap()
    };
    let (a, b) = (build(&urls[0]), build(&urls[1]));
    let old = crate::support::app(&b).layer(axum::middleware::from_fn(
        |request: axum::extract::Request, next: axum::middleware::Next| async move {
            if request.method() == Method::POST {
                let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
                response
                    .headers_mut()
                    .insert("x-groupcache-extensions", "1".parse().unwrap());
                return response;
            }
            next.run(request).await
        },
    ));
    let _servers = (
        crate::support::serve(la, crate::support::app(&a)).await,
        crate::support::serve(lb, old).await,
    );
    let keys: Vec<String> = (0..1_000)
        .map(|i| format!("k{i}"))
        .filter(|k| a.ring().owner(k) == Some(urls[1].as_str()))
        .take(6)
        .collect();
    let results = a.handle().get_many("users", &keys).await.unwrap();
    let expected: Vec<String> = keys
        .iter()
        .map(|k| String::from_utf8_lossy(&value_of(k)).into_owned())
        .collect();
    assert_eq!(values(&results), expected);
    let stats = a.stats().sources[0].stats;
    assert_eq!(stats.peer_loads, 6, "each key fetched from its owner");
    assert_eq!(stats.local_loads, 0, "none loaded here");
    assert_eq!(stats.peer_errors, 0);
    for key in &keys {
        assert_eq!(batches.loads_of(key), 1, "{key}");
    }
}

/// Six single gets of keys one owner holds, the first held up by the owner's data source:
/// with `natural_batching(1)`, the five that come while it is in flight go in one batched
/// request; with `natural_batching(0)`, each goes alone.
async fn six_gets_to_a_busy_owner(in_flight: usize) -> Vec<Vec<String>> {
    let batches = Batches::default();
    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| {
        b.source("accounts", batches.clone())
            .natural_batching(in_flight)
            .cache_bytes(0)
    })
    .await;
    let (me, owner) = (&nodes[0], &nodes[1]);
    let keys: Vec<String> = (0..1_000)
        .map(|i| format!("k{i}"))
        .filter(|k| me.cache.ring().owner(k) == Some(owner.url.as_str()))
        .take(7)
        .collect();
    // Learn that the owner speaks this crate's extensions.
    me.handle().get("accounts", &keys[6]).await.unwrap();
    batches.close();
    let get = |key: String| {
        let handle = me.handle();
        tokio::spawn(async move { handle.get("accounts", &key).await })
    };
    let first = get(keys[0].clone());
    eventually("the first get reached the owner's source", DEADLINE, || {
        batches.calls().len() == 2
    })
    .await;
    let rest: Vec<_> = keys[1..6].iter().cloned().map(get).collect();
    // Each of them has started its fetch once it is counted as a load that was not joined.
    eventually("the other five gets are fetching", DEADLINE, || {
        me.stats("accounts").loads_deduped == 7
    })
    .await;
    batches.open();
    assert_eq!(first.await.unwrap().unwrap(), value_of(&keys[0]));
    for (get, key) in rest.into_iter().zip(&keys[1..6]) {
        assert_eq!(get.await.unwrap().unwrap(), value_of(key));
    }
    assert_eq!(
        me.stats("accounts").local_loads,
        0,
        "every key from its owner"
    );
    assert_eq!(me.stats("accounts").peer_errors, 0);
    batches.calls()[1..].to_vec()
}

#[tokio::test]
async fn single_gets_to_a_busy_owner_go_together_in_the_next_request() {
    let calls = six_gets_to_a_busy_owner(1).await;
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        calls[1].len(),
        5,
        "the five waiting gets in one request: {calls:?}"
    );
}

#[tokio::test]
async fn with_natural_batching_off_each_get_goes_alone() {
    let calls = six_gets_to_a_busy_owner(0).await;
    assert_eq!(calls.len(), 6, "{calls:?}");
    assert!(calls.iter().all(|c| c.len() == 1), "{calls:?}");
}

#[tokio::test(start_paused = true)]
async fn misses_that_come_together_are_loaded_in_one_call_when_the_source_gathers_them() {
    let batches = Batches::default();
    let cache = gathering_node(&batches);
    let get = |key: &str| {
        let (handle, key) = (cache.handle(), key.to_owned());
        tokio::spawn(async move { handle.get("users", &key).await })
    };
    // Six misses at once: the first gathers three more and the batch is full; the two after
    // it find it full and load alone.
    let gets: Vec<_> = ["k1", "k2", "k3", "k4", "k5", "k6"]
        .into_iter()
        .map(get)
        .collect();
    for (get, key) in gets.into_iter().zip(["k1", "k2", "k3", "k4", "k5", "k6"]) {
        assert_eq!(get.await.unwrap().unwrap(), value_of(key));
    }
    let mut calls = batches.calls();
    calls.sort();
    assert_eq!(
        calls,
        [vec!["k1", "k2", "k3", "k4"], vec!["k5"], vec!["k6"]]
    );
    // Two misses within the wait go together; the counters count each key.
    let (a, b) = (get("k7"), get("k8"));
    assert_eq!(a.await.unwrap().unwrap(), value_of("k7"));
    assert_eq!(b.await.unwrap().unwrap(), value_of("k8"));
    assert_eq!(batches.calls().last().unwrap(), &vec!["k7", "k8"]);
    let stats = cache.stats().sources[0].stats;
    assert_eq!((stats.local_loads, stats.loads_deduped), (8, 8));
    // A failure in a gathered batch fails its own key only.
    let (bad, good) = (get("fail:x"), get("k9"));
    assert!(bad.await.unwrap().unwrap_err().is_load());
    assert_eq!(good.await.unwrap().unwrap(), value_of("k9"));
}

#[tokio::test(start_paused = true)]
async fn a_key_gathered_twice_in_one_load_gives_both_gets_its_value() {
    // A get of `k` gathers others for 5 ms; `k` is removed meanwhile, which revokes that
    // load, and a second get of `k` starts a load of its own, gathered into the same batch:
    // the source is asked for `k` twice in one call, and answers it once.
    let batches = Batches::default();
    let cache = gathering_node(&batches);
    let get = || {
        let handle = cache.handle();
        tokio::spawn(async move { handle.get("users", "k").await })
    };
    let first = get();
    // The clock stands still while a task can run: the first get is gathering when this
    // task runs again.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    cache.handle().remove("users", "k").await.unwrap();
    let second = get();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(first.await.unwrap().unwrap(), value_of("k"));
    assert_eq!(second.await.unwrap().unwrap(), value_of("k"));
    assert_eq!(batches.calls(), [vec!["k", "k"]], "one call, the key twice");
}

#[tokio::test]
async fn with_a_wait_the_first_get_holds_its_request_for_the_next() {
    let batches = Batches::default();
    let loads = Loads::default();
    // A wait far longer than the test: the request goes when it holds max_batch_keys (2)
    // keys, which is what the test checks, not the clock.
    let nodes = cluster(2, &loads, |b| {
        b.source("accounts", batches.clone())
            .cache_bytes(0)
            .max_batch_keys(2)
            .natural_batching_wait(Duration::from_secs(600))
    })
    .await;
    let (me, owner) = (&nodes[0], &nodes[1]);
    let keys: Vec<String> = (0..1_000)
        .map(|i| format!("k{i}"))
        .filter(|k| me.cache.ring().owner(k) == Some(owner.url.as_str()))
        .take(3)
        .collect();
    // Learn that the owner speaks this crate's extensions (an unknown peer is asked alone).
    me.handle().get("accounts", &keys[2]).await.unwrap();
    let get = |key: String| {
        let handle = me.handle();
        tokio::spawn(async move { handle.get("accounts", &key).await })
    };
    let (first, second) = (get(keys[0].clone()), get(keys[1].clone()));
    let first = tokio::time::timeout(DEADLINE, first)
        .await
        .expect("no wait for the clock");
    assert_eq!(first.unwrap().unwrap(), value_of(&keys[0]));
    assert_eq!(second.await.unwrap().unwrap(), value_of(&keys[1]));
    let mut together = vec![keys[0].clone(), keys[1].clone()];
    together.sort();
    assert_eq!(batches.calls()[1..], [together], "both in one request");
}

#[tokio::test]
async fn an_owner_that_answers_garbage_to_a_batch_gets_its_keys_loaded_here() {
    use tokio::net::TcpListener;

    // The owner says it speaks this crate's extensions, and answers every request with bytes
    // that are no protobuf message.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bad = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(|| async {
        (
            [("x-groupcache-extensions", "1")],
            &b"\xff\xff\xff not a message"[..],
        )
    });
    let _server = crate::support::serve(listener, app).await;
    let batches = Batches::default();
    let cache = Groupcache::builder()
        .self_url("http://127.0.0.1:9")
        .peers([bad.as_str()])
        .open_peer_path()
        .cache_bytes(0)
        .source("users", batches.clone())
        .build()
        .unwrap();
    let keys: Vec<String> = (0..1_000)
        .map(|i| format!("k{i}"))
        .filter(|k| cache.ring().owner(k) == Some(bad.as_str()))
        .take(6)
        .collect();
    // A single get learns what the owner speaks, fails to decode, and loads here.
    assert_eq!(
        cache.handle().get("users", &keys[0]).await.unwrap(),
        value_of(&keys[0])
    );
    let results = cache.handle().get_many("users", &keys[1..]).await.unwrap();
    let expected: Vec<String> = keys[1..]
        .iter()
        .map(|k| String::from_utf8_lossy(&value_of(k)).into_owned())
        .collect();
    assert_eq!(values(&results), expected);
    let stats = cache.stats().sources[0].stats;
    assert_eq!(stats.peer_errors, 6, "each key's fetch counted as failed");
    assert_eq!(stats.local_loads, 6, "and loaded here");
    let mut batch = keys[1..].to_vec();
    batch.sort();
    assert_eq!(
        batches.calls().last(),
        Some(&batch),
        "in one call of the source"
    );
}

#[tokio::test]
async fn a_gathered_load_that_gets_a_key_of_its_batch_fails_that_get_instead_of_waiting_forever() {
    let handle: Arc<OnceLock<CacheHandle>> = Arc::default();
    let inner = handle.clone();
    let nested: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = nested.clone();
    let cache = Groupcache::builder()
        .source_with(
            "users",
            batch_fn(move |keys: Vec<String>| {
                let (inner, seen) = (inner.clone(), seen.clone());
                async move {
                    let cache = inner.get().expect("set before the first get").clone();
                    // Reads, through the cache, the other key of its own batch.
                    if keys.len() == 2 {
                        let other = if keys[0] == "a" { "b" } else { "a" };
                        let got = cache.get("users", other).await;
                        seen.lock()
                            .unwrap()
                            .push(format!("{:?}", got.map_err(|e| e.kind())));
                    }
                    Ok::<_, std::io::Error>(
                        keys.into_iter().map(|k| (k.clone(), k)).collect::<Vec<_>>(),
                    )
                }
            }),
            // Two misses are a full batch; the wait is never reached.
            SourceOptions::new().gather_loads(2, Duration::from_secs(600)),
        )
        .build()
        .unwrap();
    handle.set(cache.handle()).unwrap();
    let get = |key: &'static str| {
        let handle = cache.handle();
        tokio::spawn(async move { handle.get("users", key).await })
    };
    let (a, b) = (get("a"), get("b"));
    let a = tokio::time::timeout(DEADLINE, a)
        .await
        .expect("no deadlock");
    assert_eq!(a.unwrap().unwrap(), "a");
    assert_eq!(b.await.unwrap().unwrap(), "b");
    assert_eq!(*nested.lock().unwrap(), ["Err(RecursiveLoad)"]);
}

/// A source without a `load_many` of its own loads a batch key by key: one key whose load
/// panics fails alone, with `LoadPanicked`, as its single load would, and every other key of
/// the batch gets its own outcome, on the node that asked and on an owner answering a
/// batched get.
#[tokio::test]
async fn a_panicking_key_of_a_batch_loaded_key_by_key_fails_alone() {
    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| b.hot_keys(tower_groupcache::HotKeys::Never)).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut keys = Vec::new();
    for owner in [&a.url, &b.url] {
        for kind in ["ok", "panic:", "missing:", "fail:"] {
            keys.push(key_owned_by(&a.cache, owner, &format!("{kind}k")));
        }
    }
    let results = a.handle().get_many("users", &keys).await.unwrap();
    let kinds: Vec<String> = results
        .iter()
        .map(|result| match result {
            Ok(_) => "value".to_owned(),
            Err(error) => format!("{:?}", error.kind()),
        })
        .collect();
    let each = ["value", "LoadPanicked", "NotFound", "Load"];
    assert_eq!(kinds, [each, each].concat(), "{keys:?}");
    assert_eq!(results[0].as_ref().unwrap(), &value_of(&keys[0]));
    assert_eq!(results[4].as_ref().unwrap(), &value_of(&keys[4]));
    // Each key loaded once, by its owner.
    for key in &keys {
        assert_eq!(loads.count(key), 1, "{key}");
    }
}
