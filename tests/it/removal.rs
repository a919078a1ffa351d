//! Removal: `remove` and `clear` reach every node and name the peers they could not reach; a
//! load in flight is revoked by the removal of its own key and of no other; a get after a
//! removal never joins the older load; the remover keeps no hot copy fetched while the owner
//! removes; and a removal answered without the extensions header is not counted as confirmed.

use std::time::Duration;

use crate::support::stand_in::{StandIn, node_beside};
use crate::support::{self, Loads, cluster, eventually, key_owned_by, single_node, value_of};
use tower_groupcache::HotKeys;

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn remove_reports_unreachable_peers_and_clear_empties_every_node() {
    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| b.hot_keys(HotKeys::AboveQps(0.0))).await;
    for i in 0..30 {
        let key = format!("user:{i}");
        for node in &nodes {
            node.handle().get("users", &key).await.unwrap();
        }
    }
    let removal = nodes[0].handle().clear("users").await.unwrap();
    assert!(removal.is_complete());
    for node in &nodes {
        let stats = node.cache.stats();
        let users = stats.source("users").unwrap();
        assert_eq!(
            users.main_cache.items + users.hot_cache.items,
            0,
            "{}",
            node.url
        );
    }
    nodes[2].stop();
    eventually("C is down", DEADLINE, || nodes[2].is_stopped()).await;
    let removal = nodes[0].handle().remove("users", "user:1").await.unwrap();
    assert_eq!(removal.unreachable, [nodes[2].url.as_str()]);
    assert!(
        nodes[0]
            .handle()
            .remove("nope", "k")
            .await
            .unwrap_err()
            .is_unknown_source()
    );
}

#[tokio::test]
async fn remove_during_an_in_flight_load_leaves_no_stale_value() {
    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| b.hot_keys(HotKeys::AboveQps(0.0))).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let key = key_owned_by(&a.cache, &b.url, "user:");
    // Warm a hot copy on C.
    c.handle().get("users", &key).await.unwrap();
    assert_eq!(c.cache.stats().source("users").unwrap().hot_cache.items, 1);
    b.handle().remove("users", &key).await.unwrap();
    assert_eq!(loads.count(&key), 1);

    // A asks for the key; B's load is held; meanwhile the key is removed.
    loads.close();
    let handle = a.handle();
    let k = key.clone();
    let get = tokio::spawn(async move { handle.get("users", &k).await });
    eventually("B is loading", DEADLINE, || loads.count(&key) == 2).await;
    let removal = a.handle().remove("users", &key).await.unwrap();
    assert!(removal.is_complete(), "{removal:?}");
    loads.open();
    // The caller that asked before the remove gets the value of its load...
    assert_eq!(get.await.unwrap().unwrap(), value_of(&key));
    // ...but no node keeps it.
    for node in &nodes {
        let stats = node.cache.stats();
        let users = stats.source("users").unwrap();
        assert_eq!(
            users.main_cache.items + users.hot_cache.items,
            0,
            "{}",
            node.url
        );
    }
    a.handle().get("users", &key).await.unwrap();
    assert_eq!(loads.count(&key), 3, "the next get loads again");
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
