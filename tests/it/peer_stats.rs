//! Per-peer figures: what a node sends each peer of its ring and how the peer answers, in
//! `stats().peers` and in the `groupcache_peer_*` metrics; a peer that leaves the ring leaves
//! both.

use std::time::Duration;

use crate::support::metrics::{Snapshot, counter, labels, snapshot};
use crate::support::{
    self, Loads, cluster, dead_url, garbage_peer, hanging_peer, key_owned_by, keys_owned_by,
    peer_stats, value_of,
};
use axum::http::StatusCode;
use bytes::Bytes;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tower_groupcache::PeerHealthConfig;
use tower_groupcache::protocol::GetManyRequest;

fn histogram_len(s: &Snapshot, name: &str, pairs: &[(&str, &str)]) -> usize {
    match s.get(&(name.to_owned(), labels(pairs))) {
        Some(DebugValue::Histogram(v)) => v.len(),
        None => 0,
        other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test]
async fn each_peer_counts_its_requests_and_bytes() {
    // One thread (current-thread runtime): the thread-local recorder sees the histograms
    // recorded inside the peer requests.
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| b).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let stats = a.cache.stats();
    let urls: Vec<&str> = stats.peers.iter().map(|p| p.url.as_str()).collect();
    let mut others = vec![b.url.as_str(), c.url.as_str()];
    others.sort();
    assert_eq!(urls, others, "one entry per peer but this node");
    assert!(stats.peers.iter().all(|p| p.total_requests() == 0));
    assert!(stats.peers.iter().all(|p| p.latency_p50.is_none()));

    // Ten gets of keys b owns, one at a time: ten single-key requests to b.
    let b_keys = keys_owned_by(&a.cache, &b.url, "user:", 10);
    for key in &b_keys {
        assert_eq!(a.handle().get("users", key).await.unwrap(), value_of(key));
    }
    // What b answers each get with, asked by hand: the bytes a received.
    let mut b_answers = 0;
    for key in &b_keys {
        let (status, _, body) =
            support::request("GET", &format!("{}/_groupcache/users/{key}", b.url)).await;
        assert_eq!(status, StatusCode::OK);
        b_answers += body.len() as u64;
    }

    // Twenty keys c owns in one get_many: one batched get.
    let c_keys = keys_owned_by(&a.cache, &c.url, "user:", 20);
    let got = a.handle().get_many("users", &c_keys).await.unwrap();
    assert!(got.iter().all(Result::is_ok));
    let batch = GetManyRequest::encode_keys(&c_keys);
    let (status, _, body) = support::post(
        &format!("{}/_groupcache/users", c.url),
        &[("content-type", "application/x-protobuf")],
        batch.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let c_answer = body.len() as u64;

    let fb = peer_stats(&a.cache, &b.url);
    assert_eq!(
        (
            fb.requests.gets,
            fb.requests.batched_gets,
            fb.total_requests()
        ),
        (10, 0, 10)
    );
    assert_eq!(fb.errors.total(), 0);
    assert_eq!((fb.bytes_sent, fb.bytes_received), (0, b_answers));
    assert!(fb.latency_p50.is_some() && fb.latency_p99 >= fb.latency_p50);
    // Before its first batched get, a asked c what it speaks (a get's answer had not told
    // it yet): a probe, whose answer c gives anyone.
    let (_, _, probe_answer) = support::request("GET", &format!("{}/_groupcache/", c.url)).await;
    let fc = peer_stats(&a.cache, &c.url);
    assert_eq!(
        (
            fc.requests.gets,
            fc.requests.batched_gets,
            fc.requests.probes,
            fc.total_requests()
        ),
        (0, 1, 1, 2)
    );
    assert_eq!(
        (fc.bytes_sent, fc.bytes_received),
        (batch.len() as u64, probe_answer.len() as u64 + c_answer)
    );

    // A write of a key b owns: one write to b (its value is the body), and a removal of
    // the other copies on c. Both said what they speak already: no other probe.
    let value = Bytes::from_static(b"written value");
    a.handle()
        .set("users", &b_keys[0], value.clone(), None)
        .await
        .unwrap();
    // A removal: one to each peer.
    a.handle().remove("users", &c_keys[0]).await.unwrap();
    let fb = peer_stats(&a.cache, &b.url);
    assert_eq!(
        (fb.requests.writes, fb.requests.removals, fb.requests.probes),
        (1, 1, 0)
    );
    assert_eq!(fb.bytes_sent, value.len() as u64);
    let fc = peer_stats(&a.cache, &c.url);
    assert_eq!(
        (fc.requests.writes, fc.requests.removals, fc.requests.probes),
        (0, 2, 1)
    );
    assert_eq!(fc.total_requests(), 4);

    a.cache.record_metrics();
    let s = snapshot(&recorder);
    let requests = |url: &str| counter(&s, "groupcache_peer_requests_total", &[("peer", url)]);
    assert_eq!(requests(&b.url), Some(12));
    assert_eq!(requests(&c.url), Some(4));
    assert_eq!(requests(&a.url), None, "no series for this node itself");
    let bytes = |url: &str, direction: &str| {
        counter(
            &s,
            "groupcache_peer_bytes_total",
            &[("direction", direction), ("peer", url)],
        )
    };
    assert_eq!(bytes(&b.url, "sent"), Some(value.len() as u64));
    assert_eq!(bytes(&c.url, "sent"), Some(batch.len() as u64));
    assert_eq!(
        bytes(&c.url, "received"),
        Some(probe_answer.len() as u64 + c_answer)
    );
    assert_eq!(
        counter(&s, "groupcache_peer_skipped_total", &[("peer", &b.url)]),
        Some(0)
    );
    assert_eq!(
        counter(
            &s,
            "groupcache_peer_request_errors_total",
            &[("kind", "connect"), ("peer", &b.url)]
        ),
        None,
        "an error kind is written once it happened"
    );
    // Histograms are recorded as the requests end: b's and c's, and this node's own check of
    // its peer path is not one of them.
    let durations = |url: &str| {
        histogram_len(
            &s,
            "groupcache_peer_request_duration_seconds",
            &[("peer", url)],
        )
    };
    assert_eq!(durations(&b.url), 12);
    assert_eq!(durations(&c.url), 4);
    assert_eq!(durations(&a.url), 0);
}

#[tokio::test]
async fn errors_are_counted_by_kind_and_skips_apart() {
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let (garbage, _garbage_server) = garbage_peer().await;
    let dead = dead_url().await;
    // Accepts connections and never answers.
    let (slow, _hanging) = hanging_peer().await;
    let loads = Loads::default();
    // A cooldown no test run outlives: once skipped, the dead peer stays skipped.
    let health = PeerHealthConfig::default()
        .failure_threshold(3)
        .cooldown(Duration::from_secs(3_600))
        .max_cooldown(Duration::from_secs(3_600));
    let nodes = cluster(1, &loads, |builder| {
        builder
            .peers([garbage.clone(), dead.clone(), slow.clone()])
            .peer_health(health)
            .peer_timeout(Duration::from_millis(300))
    })
    .await;
    let a = &nodes[0];
    // The garbage peer: two gets, each a decode error. (Two failures do not reach the
    // threshold of 3, so it is not skipped.)
    for key in keys_owned_by(&a.cache, &garbage, "g:", 2) {
        assert_eq!(a.handle().get("users", &key).await.unwrap(), value_of(&key));
    }
    // The dead peer: three gets fail to connect, then it is skipped: two more gets skip it.
    for key in keys_owned_by(&a.cache, &dead, "d:", 5) {
        assert_eq!(a.handle().get("users", &key).await.unwrap(), value_of(&key));
    }
    // The hanging peer: one get, timed out.
    for key in keys_owned_by(&a.cache, &slow, "s:", 1) {
        assert_eq!(a.handle().get("users", &key).await.unwrap(), value_of(&key));
    }
    let fs = peer_stats(&a.cache, &slow);
    assert_eq!(
        (fs.requests.gets, fs.errors.timeout, fs.errors.total()),
        (1, 1, 1)
    );
    // The estimate is within an eighth of the 300 ms waited at least.
    assert!(fs.latency_p50 >= Some(Duration::from_millis(300) * 7 / 8));
    let fg = peer_stats(&a.cache, &garbage);
    assert_eq!(fg.requests.gets, 2);
    assert_eq!((fg.errors.decode, fg.errors.total()), (2, 2));
    assert_eq!(fg.skipped, 0);
    assert_eq!(fg.bytes_received, 8, "the garbage was read: 4 bytes each");
    let fd = peer_stats(&a.cache, &dead);
    assert_eq!(fd.requests.gets, 3, "a skipped fetch sends nothing");
    assert_eq!((fd.errors.connect, fd.errors.total()), (3, 3));
    assert_eq!(fd.skipped, 2);
    assert_eq!(a.stats("users").peer_skips, 2);

    a.cache.record_metrics();
    let s = snapshot(&recorder);
    let errors = |url: &str, kind: &str| {
        counter(
            &s,
            "groupcache_peer_request_errors_total",
            &[("kind", kind), ("peer", url)],
        )
    };
    assert_eq!(errors(&garbage, "decode"), Some(2));
    assert_eq!(errors(&dead, "connect"), Some(3));
    assert_eq!(errors(&dead, "decode"), None);
    assert_eq!(errors(&slow, "timeout"), Some(1));
    assert_eq!(
        counter(&s, "groupcache_peer_skipped_total", &[("peer", &dead)]),
        Some(2)
    );
}

#[tokio::test]
async fn a_peer_that_leaves_the_ring_leaves_the_figures() {
    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| b).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let key = key_owned_by(&a.cache, &b.url, "user:");
    a.handle().get("users", &key).await.unwrap();
    assert_eq!(peer_stats(&a.cache, &b.url).requests.gets, 1);

    a.cache.set_peers([a.url.clone(), c.url.clone()]).unwrap();
    let stats = a.cache.stats();
    assert!(stats.peer(&b.url).is_none(), "b left");
    assert_eq!(stats.peers.len(), 1);
    assert_eq!(stats.peers[0].url, c.url);

    // From now on, record_metrics writes no series of b.
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    a.cache.record_metrics();
    let s = snapshot(&recorder);
    let b_series: Vec<_> = s
        .keys()
        .filter(|(_, labels)| labels.iter().any(|(_, v)| *v == b.url))
        .collect();
    assert!(b_series.is_empty(), "{b_series:?}");
    assert_eq!(
        counter(&s, "groupcache_peer_requests_total", &[("peer", &c.url)]),
        Some(0)
    );

    // b comes back: its figures start from zero.
    a.cache
        .set_peers([a.url.clone(), b.url.clone(), c.url.clone()])
        .unwrap();
    assert_eq!(peer_stats(&a.cache, &b.url).total_requests(), 0);
}
