//! Stats and metrics move as the request flows of docs/guide.md ("The request flow") say.

use std::time::Duration;

use crate::support::metrics::{Snapshot, snapshot};
use crate::support::{self, Loads, cluster, eventually, key_owned_by, value_of};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

const DEADLINE: Duration = Duration::from_secs(30);

fn counter(s: &Snapshot, name: &str, labels: &[(&str, &str)]) -> u64 {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match s.get(&(name.to_owned(), labels)) {
        Some(DebugValue::Counter(v)) => *v,
        other => panic!("{name}: {other:?}"),
    }
}

fn gauge(s: &Snapshot, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match s.get(&(name.to_owned(), labels)) {
        Some(DebugValue::Gauge(v)) => v.into_inner(),
        other => panic!("{name}: {other:?}"),
    }
}

fn histogram_len(s: &Snapshot, name: &str) -> usize {
    let labels = vec![("source".to_owned(), "users".to_owned())];
    match s.get(&(name.to_owned(), labels)) {
        Some(DebugValue::Histogram(v)) => v.len(),
        None => 0,
        other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test]
async fn stats_and_metrics_follow_the_four_flows() {
    // The test runs on one thread (current-thread runtime), so a thread-local recorder sees
    // everything, the histograms recorded inside loads included.
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| b).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let local_key = key_owned_by(&a.cache, &a.url, "user:");
    let remote_key = key_owned_by(&a.cache, &b.url, "user:");
    for (node, key) in [
        (a, &local_key),
        (a, &local_key),
        (a, &remote_key),
        (c, &remote_key),
    ] {
        assert_eq!(
            node.handle().get("users", key).await.unwrap(),
            value_of(key)
        );
    }
    let failing = key_owned_by(&a.cache, &a.url, "fail:");
    assert!(a.handle().get("users", &failing).await.is_err());

    let users = [("source", "users")];
    let main = [("cache", "main"), ("source", "users")];
    a.cache.record_metrics();
    let s = snapshot(&recorder);
    // A: a local miss, a local hit, a remote miss; then a failing local load.
    let stats = a.stats("users");
    assert_eq!(counter(&s, "groupcache_gets_total", &users), stats.gets);
    assert_eq!(stats.gets, 4);
    assert_eq!(counter(&s, "groupcache_cache_hits_total", &users), 1);
    assert_eq!(counter(&s, "groupcache_loads_total", &users), 3);
    assert_eq!(counter(&s, "groupcache_loads_deduped_total", &users), 3);
    assert_eq!(counter(&s, "groupcache_local_loads_total", &users), 1);
    assert_eq!(counter(&s, "groupcache_local_load_errors_total", &users), 1);
    assert_eq!(counter(&s, "groupcache_peer_loads_total", &users), 1);
    assert_eq!(counter(&s, "groupcache_peer_errors_total", &users), 0);
    assert_eq!(counter(&s, "groupcache_peer_skips_total", &users), 0);
    assert_eq!(counter(&s, "groupcache_server_requests_total", &users), 0);
    assert_eq!(gauge(&s, "groupcache_cache_items", &main), 1.0);
    assert_eq!(
        gauge(&s, "groupcache_cache_bytes", &main),
        (local_key.len() + value_of(&local_key).len()) as f64
    );
    assert_eq!(counter(&s, "groupcache_cache_lookup_hits_total", &main), 1);
    assert_eq!(gauge(&s, "groupcache_peers", &[]), 3.0);
    assert_eq!(counter(&s, "groupcache_ring_mismatches_total", &[]), 0);
    // Durations, recorded as they happen on every node (a snapshot drains them): three
    // data-source calls in the cluster (A's key, B's key, A's failure) and two peer fetches
    // (A from B, C from B).
    assert_eq!(histogram_len(&s, "groupcache_load_duration_seconds"), 3);
    assert_eq!(
        histogram_len(&s, "groupcache_peer_fetch_duration_seconds"),
        2
    );

    // B answered two peer requests: one load, one hit from its cache.
    b.cache.record_metrics();
    let s = snapshot(&recorder);
    assert_eq!(counter(&s, "groupcache_server_requests_total", &users), 2);
    assert_eq!(counter(&s, "groupcache_local_loads_total", &users), 1);
    assert_eq!(counter(&s, "groupcache_cache_hits_total", &users), 1);

    // Not found, apart from values; the owner's failure, apart from peer errors.
    let missing = key_owned_by(&a.cache, &b.url, "missing:");
    assert!(
        a.handle()
            .get("users", &missing)
            .await
            .unwrap_err()
            .is_not_found()
    );
    let failing = key_owned_by(&a.cache, &b.url, "fail:");
    assert!(
        a.handle()
            .get("users", &failing)
            .await
            .unwrap_err()
            .is_load()
    );
    a.cache.record_metrics();
    let s = snapshot(&recorder);
    assert_eq!(counter(&s, "groupcache_peer_not_found_total", &users), 1);
    assert_eq!(counter(&s, "groupcache_peer_load_errors_total", &users), 1);
    assert_eq!(counter(&s, "groupcache_peer_loads_total", &users), 1);
    assert_eq!(counter(&s, "groupcache_peer_errors_total", &users), 0);
    b.cache.record_metrics();
    let s = snapshot(&recorder);
    assert_eq!(counter(&s, "groupcache_local_not_found_total", &users), 1);
    assert_eq!(counter(&s, "groupcache_local_loads_total", &users), 1);
    assert_eq!(counter(&s, "groupcache_local_load_errors_total", &users), 1);

    // Refused peer requests, by reason.
    let (status, _, _) = support::request("GET", &format!("{}/_groupcache/users/k", b.url)).await;
    assert_eq!(status, 200, "the test nodes' peer path is open");
    // C checks its own peer path once, soon after it starts: answered after the shutdown, that
    // check would be one more refused request.
    eventually(
        "C answered the check of its own peer path",
        DEADLINE,
        || c.base_path_answers() > 0,
    )
    .await;
    c.cache.shutdown().await;
    let (status, _, _) = support::request("GET", &format!("{}/_groupcache/users/k", c.url)).await;
    assert_eq!(status, 503);
    c.cache.record_metrics();
    let s = snapshot(&recorder);
    let refused = |reason: &str| {
        counter(
            &s,
            "groupcache_peer_requests_refused_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(refused("shutting_down"), 1);
    assert_eq!(refused("missing"), 0);
    assert_eq!(c.cache.stats().cluster.refused_requests.shutting_down, 1);
}

#[tokio::test(start_paused = true)]
async fn export_metrics_records_at_each_interval() {
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let cache = tower_groupcache::Groupcache::builder()
        .source(
            "users",
            |k: String| async move { Ok::<_, std::io::Error>(k) },
        )
        .build()
        .unwrap();
    cache
        .export_metrics(std::time::Duration::from_secs(10))
        .unwrap();
    cache.handle().get("users", "k").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(11)).await;
    let s = snapshot(&recorder);
    assert_eq!(
        counter(&s, "groupcache_gets_total", &[("source", "users")]),
        1
    );
    cache.handle().get("users", "k").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    let s = snapshot(&recorder);
    assert_eq!(
        counter(&s, "groupcache_gets_total", &[("source", "users")]),
        2
    );
}
