//! Black-box checks of what the documentation promises to a user who monitors and operates a
//! cluster: docs/guide.md ("Monitoring": the `stats()` fields, per-peer figures, the metrics;
//! "Dynamic membership": `set_peers`, discovery, peer health; "Graceful shutdown";
//! "Troubleshooting") and the rustdoc of `Stats`, `SourceStats`, `PeerStats`, `ClusterStats`.
//! Every test runs real nodes talking HTTP on 127.0.0.1 (port 0), and waits for state by
//! polling with a deadline; no test depends on how fast the machine is.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tokio::sync::Semaphore;
use tower_groupcache::{
    DnsDiscovery, ErrorKind, GroupcacheBuilder, HotKeys, Loaded, PeerHealthConfig, Resolve,
    SourceStats,
};

use crate::support::metrics::{counter, gauge, snapshot};
use crate::support::recorded::{DEADLINE, cluster_per_node, delta, spawn_get, within};
use crate::support::{
    Loads, Node, capture_logs, cluster, count_lines, dead_url, eventually, garbage_peer,
    hanging_peer, key_owned_by, keys_owned_by, listeners, peer_stats, start_node, value_of,
};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The counters that a test names, as a map (fields left out are expected to be 0).
fn counters(s: &SourceStats) -> BTreeMap<&'static str, u64> {
    [
        ("gets", s.gets),
        ("cache_hits", s.cache_hits),
        ("peer_loads", s.peer_loads),
        ("peer_errors", s.peer_errors),
        ("peer_load_errors", s.peer_load_errors),
        ("peer_not_found", s.peer_not_found),
        ("loads", s.loads),
        ("loads_deduped", s.loads_deduped),
        ("local_loads", s.local_loads),
        ("local_not_found", s.local_not_found),
        ("local_load_errs", s.local_load_errs),
        ("server_requests", s.server_requests),
        ("peer_skips", s.peer_skips),
        ("stale_served", s.stale_served),
        ("hot_promotions", s.hot_promotions),
    ]
    .into_iter()
    .filter(|(_, v)| *v != 0)
    .collect()
}

fn expect(pairs: &[(&'static str, u64)]) -> BTreeMap<&'static str, u64> {
    pairs.iter().copied().filter(|(_, v)| *v != 0).collect()
}

/// A data source whose keys starting with `hold:` wait, each for its own release; the others
/// answer at once. Records which node started which load.
#[derive(Clone, Default)]
struct Held {
    gates: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
    started: Arc<Mutex<Vec<(String, String)>>>,
}

impl Held {
    fn gate(&self, key: &str) -> Arc<Semaphore> {
        self.gates
            .lock()
            .unwrap()
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(0)))
            .clone()
    }

    fn release(&self, key: &str) {
        self.gate(key).add_permits(Semaphore::MAX_PERMITS / 2);
    }

    fn started(&self, key: &str) -> Vec<String> {
        self.started
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, k)| k == key)
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn source(
        &self,
        node: &str,
    ) -> impl Fn(
        String,
    )
        -> std::pin::Pin<Box<dyn Future<Output = Result<Loaded, std::io::Error>> + Send>>
    + Clone
    + Send
    + Sync
    + 'static {
        let (held, node) = (self.clone(), node.to_owned());
        move |key: String| {
            let (held, node) = (held.clone(), node.clone());
            Box::pin(async move {
                held.started
                    .lock()
                    .unwrap()
                    .push((node.clone(), key.clone()));
                if key.starts_with("hold:") {
                    let gate = held.gate(&key);
                    let _permit = gate.acquire().await;
                }
                Ok(Loaded::new(value_of(&key)))
            })
        }
    }
}

/// `n` nodes with the source `users` of `loads` and the source `held` of `held`.
async fn held_cluster(
    n: usize,
    loads: &Loads,
    held: &Held,
    configure: impl Fn(GroupcacheBuilder) -> GroupcacheBuilder,
) -> Vec<Node> {
    cluster_per_node(n, loads, |url, b| {
        configure(b.source("held", held.source(url)))
    })
    .await
}

/// A health policy whose cooldown no test outlives: once skipped, a peer stays skipped.
fn sticky_health() -> PeerHealthConfig {
    PeerHealthConfig::default()
        .failure_threshold(3)
        .cooldown(Duration::from_secs(3_600))
        .max_cooldown(Duration::from_secs(3_600))
}

/// One node whose only peer is a URL where nothing listens (returned with it), with
/// [`sticky_health`] and no hot copies.
async fn beside_dead_peer() -> (String, Vec<Node>) {
    let dead = dead_url().await;
    let nodes = cluster(1, &Loads::default(), |b| {
        b.peers([dead.clone()])
            .peer_health(sticky_health())
            .hot_keys(HotKeys::Never)
    })
    .await;
    (dead, nodes)
}

// ---------------------------------------------------------------------------------------
// SourceStats: each field moves as its doc says
// ---------------------------------------------------------------------------------------

/// guide "Stats": `gets` "every get", `cache_hits` "gets served from the main or hot cache",
/// `loads` "gets that missed the cache and joined or started a load", `loads_deduped`,
/// `local_loads` / `local_not_found` / `local_load_errs`; "Errors are never cached";
/// `main_cache` `bytes` "the sum of `key.len() + value.len()`"; `gets` of a cache "a get
/// looks in the main cache, then (on a miss) in the hot cache, and a load looks in both once
/// more before it starts".
#[tokio::test]
async fn local_miss_hit_not_found_and_error_move_exactly_their_counters() {
    let loads = Loads::default();
    let nodes = cluster(1, &loads, |b| b).await;
    let a = &nodes[0];
    let h = a.handle();
    assert_eq!(h.get("users", "k").await.unwrap(), value_of("k"));
    assert_eq!(h.get("users", "k").await.unwrap(), value_of("k"));
    assert!(
        h.get("users", "missing:m")
            .await
            .unwrap_err()
            .is_not_found()
    );
    for _ in 0..2 {
        assert_eq!(
            h.get("users", "fail:f").await.unwrap_err().kind(),
            ErrorKind::Load
        );
    }
    assert_eq!(loads.count("fail:f"), 2, "errors are never cached");
    let snap = a.cache.stats();
    let s = snap.source("users").unwrap();
    assert_eq!(
        counters(&s.stats),
        expect(&[
            ("gets", 5),
            ("cache_hits", 1),
            ("loads", 4),
            ("loads_deduped", 4),
            ("local_loads", 1),
            ("local_not_found", 1),
            ("local_load_errs", 2),
        ])
    );
    assert_eq!(s.main_cache.items, 1);
    assert_eq!(s.main_cache.bytes, ("k".len() + value_of("k").len()) as u64);
    // Lookups: 5 gets look in the main cache, 4 loads look once more: 9, 1 hit. The 4 main
    // misses of gets look in the hot cache, and the 4 loads once more: 8, no hit.
    assert_eq!(
        (s.main_cache.gets, s.main_cache.hits),
        (9, 1),
        "main cache lookups"
    );
    assert_eq!(
        (s.hot_cache.gets, s.hot_cache.hits),
        (8, 0),
        "hot cache lookups"
    );
}

/// guide "Stats": `loads` "gets that missed the cache and joined or started a load",
/// `loads_deduped` "loads after deduplication"; "One load per key per node at a time:
/// concurrent gets share it".
#[tokio::test]
async fn concurrent_gets_of_one_key_count_five_loads_and_one_deduplicated_load() {
    let loads = Loads::default();
    let nodes = cluster(1, &loads, |b| b).await;
    let a = &nodes[0];
    loads.close();
    let tasks: Vec<_> = (0..5).map(|_| spawn_get(a, "users", "shared")).collect();
    eventually("five gets counted, one load started", DEADLINE, || {
        a.stats("users").gets == 5 && loads.count("shared") == 1
    })
    .await;
    loads.open();
    for t in tasks {
        assert_eq!(within("get", t).await.unwrap().unwrap(), value_of("shared"));
    }
    assert_eq!(loads.count("shared"), 1);
    assert_eq!(
        counters(&a.stats("users")),
        expect(&[
            ("gets", 5),
            ("loads", 5),
            ("loads_deduped", 1),
            ("local_loads", 1)
        ])
    );
}

/// guide "Stats": on the asker `peer_loads` "values fetched from the owning peer",
/// `peer_not_found` "fetches the owner answered with *not found*", `peer_load_errors`
/// "fetches the owner answered with its data source's failure: the get failed with that
/// error, the key was not loaded here, and the owner counts as healthy"; on the owner
/// `server_requests` "gets that came from peers", `gets` "from this node's callers and from
/// peers". "Peer health": an owner's data-source failure "does not count".
#[tokio::test]
async fn a_remote_get_counts_on_the_asker_and_on_the_owner() {
    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| b.hot_keys(HotKeys::Never)).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&a.cache, &b.url, "user:");
    let missing = key_owned_by(&a.cache, &b.url, "missing:");
    let fail = key_owned_by(&a.cache, &b.url, "fail:");

    for _ in 0..2 {
        assert_eq!(a.handle().get("users", &key).await.unwrap(), value_of(&key));
    }
    assert!(
        a.handle()
            .get("users", &missing)
            .await
            .unwrap_err()
            .is_not_found()
    );
    for _ in 0..5 {
        let e = a.handle().get("users", &fail).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Load, "the owner's failure is returned");
    }
    assert_eq!(
        loads.of(&fail),
        vec![b.url.clone(); 5],
        "never loaded on the asker"
    );
    assert_eq!(
        counters(&a.stats("users")),
        expect(&[
            ("gets", 8),
            ("loads", 8),
            ("loads_deduped", 8),
            ("peer_loads", 2),
            ("peer_not_found", 1),
            ("peer_load_errors", 5),
        ]),
        "asker"
    );
    assert_eq!(
        counters(&b.stats("users")),
        expect(&[
            ("gets", 8),
            ("cache_hits", 1),
            ("loads", 7),
            ("loads_deduped", 7),
            ("local_loads", 1),
            ("local_not_found", 1),
            ("local_load_errs", 5),
            ("server_requests", 8),
        ]),
        "owner"
    );
    let stats = a.cache.stats();
    assert!(
        stats.cluster.skipped_peers.is_empty(),
        "the owner is healthy"
    );
    let fb = peer_stats(&a.cache, &b.url);
    assert_eq!((fb.requests.gets, fb.total_requests()), (8, 8));
    assert_eq!(fb.errors.total(), 0, "{:?}", fb.errors);
    assert_eq!(
        (fb.skipped, fb.bytes_sent),
        (0, 0),
        "a single get sends 0 bytes"
    );
    assert!(fb.bytes_received > 0);
    assert!(fb.latency_p50.is_some() && fb.latency_p99 >= fb.latency_p50);
}

/// guide "Stats": `hot_promotions` "fetched values kept in the hot cache", `cache_hits`
/// "gets served from the main or hot cache", `hot_cache` `items`; SourceSnapshot rustdoc
/// "The hot cache: copies of keys other nodes own".
#[tokio::test]
async fn a_hot_copy_is_counted_once_and_then_served_from_the_hot_cache() {
    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| b.hot_keys(HotKeys::AboveQps(0.0))).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&a.cache, &b.url, "user:");
    for _ in 0..3 {
        assert_eq!(a.handle().get("users", &key).await.unwrap(), value_of(&key));
    }
    assert_eq!(
        counters(&a.stats("users")),
        expect(&[
            ("gets", 3),
            ("cache_hits", 2),
            ("loads", 1),
            ("loads_deduped", 1),
            ("peer_loads", 1),
            ("hot_promotions", 1),
        ])
    );
    let snap = a.cache.stats();
    let s = snap.source("users").unwrap();
    assert_eq!((s.hot_cache.items, s.main_cache.items), (1, 0));
    assert_eq!(s.hot_cache.hits, 2);
    assert_eq!(peer_stats(&a.cache, &b.url).requests.gets, 1);
}

// ---------------------------------------------------------------------------------------
// get_many and natural batching
// ---------------------------------------------------------------------------------------

/// guide "Many keys at once": "the misses other nodes own are asked of their owners at once:
/// an owner of this crate in one batched peer request", "each key of a batch counts as a load
/// of its own in `local_loads`"; "Stats": `gets`, `peer_loads`, `server_requests`;
/// `peers[].requests` `batched_gets`, `bytes_sent` "keys of batched requests".
#[tokio::test]
async fn get_many_counts_each_key_and_sends_one_batched_request_per_owner() {
    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| b.hot_keys(HotKeys::Never)).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    // a learns that b and c speak the extensions: one get each.
    for (o, p) in [(b, "warm-b:"), (c, "warm-c:")] {
        let k = key_owned_by(&a.cache, &o.url, p);
        a.handle().get("users", &k).await.unwrap();
    }
    let (a0, b0, c0) = (a.stats("users"), b.stats("users"), c.stats("users"));
    let (pb0, pc0) = (peer_stats(&a.cache, &b.url), peer_stats(&a.cache, &c.url));

    let bk = keys_owned_by(&a.cache, &b.url, "b:", 4);
    let ck = keys_owned_by(&a.cache, &c.url, "c:", 3);
    let ak = keys_owned_by(&a.cache, &a.url, "a:", 2);
    let keys: Vec<String> = [bk.clone(), ck.clone(), ak.clone()].concat();
    let got = a.handle().get_many("users", &keys).await.unwrap();
    for (k, r) in keys.iter().zip(&got) {
        assert_eq!(r.as_ref().unwrap(), &value_of(k));
    }
    assert_eq!(
        counters(&delta(&a0, &a.stats("users"))),
        expect(&[
            ("gets", 9),
            ("loads", 9),
            ("loads_deduped", 9),
            ("peer_loads", 7),
            ("local_loads", 2),
        ]),
        "asker"
    );
    assert_eq!(
        counters(&delta(&b0, &b.stats("users"))),
        expect(&[
            ("gets", 4),
            ("loads", 4),
            ("loads_deduped", 4),
            ("local_loads", 4),
            ("server_requests", 4),
        ]),
        "owner b"
    );
    assert_eq!(delta(&c0, &c.stats("users")).server_requests, 3, "owner c");
    let (pb, pc) = (peer_stats(&a.cache, &b.url), peer_stats(&a.cache, &c.url));
    assert_eq!(
        (
            pb.requests.gets - pb0.requests.gets,
            pb.requests.batched_gets - pb0.requests.batched_gets
        ),
        (0, 1),
        "one batched get to b"
    );
    assert_eq!(
        (
            pc.requests.gets - pc0.requests.gets,
            pc.requests.batched_gets - pc0.requests.batched_gets
        ),
        (0, 1),
        "one batched get to c"
    );
    let key_bytes: u64 = bk.iter().map(|k| k.len() as u64).sum();
    assert!(
        pb.bytes_sent - pb0.bytes_sent >= key_bytes,
        "the keys are sent: {} < {key_bytes}",
        pb.bytes_sent - pb0.bytes_sent
    );
    // Once more: a's own keys are hits, b's and c's are fetched again (no hot copies) and are
    // hits on their owners.
    a.handle().get_many("users", &keys).await.unwrap();
    let d = delta(&a0, &a.stats("users"));
    assert_eq!((d.gets, d.cache_hits, d.peer_loads), (18, 2, 14));
    assert_eq!(delta(&b0, &b.stats("users")).cache_hits, 4);
    assert_eq!(loads.total(), 2 + 9, "each key loaded once in the cluster");
}

/// guide "Stats": `peers[].requests` ... `probes` "(asking what it speaks, once before its
/// first batched get, removal or write)".
#[tokio::test]
async fn the_first_batched_get_to_a_peer_is_preceded_by_one_probe() {
    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| b.hot_keys(HotKeys::Never)).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let bk = keys_owned_by(&a.cache, &b.url, "b:", 3);
    let got = a.handle().get_many("users", &bk).await.unwrap();
    assert!(got.iter().all(Result::is_ok));
    let pb = peer_stats(&a.cache, &b.url);
    assert_eq!(
        (
            pb.requests.probes,
            pb.requests.batched_gets,
            pb.requests.gets
        ),
        (1, 1, 0),
        "a fresh peer's first get_many: {:?}",
        pb.requests
    );
}

/// guide "Many keys at once": "Once `natural_batching` (4 by default) gets of one source are
/// in flight to one peer of this crate, further gets for that peer queue, and the first of
/// them to find a request slot free sends all the queued keys in one batched request";
/// "Stats": each queued get still counts as a get on both sides.
#[tokio::test]
async fn gets_queued_behind_four_in_flight_go_in_one_batched_request() {
    let loads = Loads::default();
    let held = Held::default();
    let nodes = held_cluster(2, &loads, &held, |b| {
        b.hot_keys(HotKeys::Never)
            .peer_timeout(Duration::from_secs(600))
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    // a learns that b speaks the extensions.
    let warm = key_owned_by(&a.cache, &b.url, "warm:");
    a.handle().get("held", &warm).await.unwrap();
    let first = keys_owned_by(&a.cache, &b.url, "hold:first-", 4);
    let queued = keys_owned_by(&a.cache, &b.url, "queued-", 3);
    let spawn_get = |key: String| {
        let h = a.handle();
        tokio::spawn(async move { (h.get("held", &key).await, key) })
    };
    let mut tasks: Vec<_> = first.iter().cloned().map(spawn_get).collect();
    // Four single gets in flight: b holds each of their loads.
    eventually("b loads the four held keys", DEADLINE, || {
        first.iter().all(|k| held.started(k).len() == 1)
    })
    .await;
    tasks.extend(queued.iter().cloned().map(spawn_get));
    eventually("a counts the three further gets", DEADLINE, || {
        a.stats("held").gets == 8
    })
    .await;
    // This test runs on one thread: the queued gets have run as far as they can.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        peer_stats(&a.cache, &b.url).requests.gets,
        5,
        "the three further gets queue and send nothing yet"
    );
    assert!(queued.iter().all(|k| held.started(k).is_empty()));
    for k in &first {
        held.release(k);
    }
    for t in tasks {
        let (r, k) = within("get", t).await.unwrap();
        assert_eq!(r.unwrap(), value_of(&k));
    }
    let pb = peer_stats(&a.cache, &b.url);
    assert_eq!(
        (pb.requests.gets, pb.requests.batched_gets),
        (5, 1),
        "the queued keys went together: {:?}",
        pb.requests
    );
    assert_eq!(
        counters(&a.stats("held")),
        expect(&[
            ("gets", 8),
            ("loads", 8),
            ("loads_deduped", 8),
            ("peer_loads", 8),
        ])
    );
    let sb = b.stats("held");
    assert_eq!(
        (sb.gets, sb.server_requests, sb.local_loads),
        (8, 8, 8),
        "owner"
    );
}

// ---------------------------------------------------------------------------------------
// Failing peers
// ---------------------------------------------------------------------------------------

/// guide "Peer health": "a peer whose fetches fail 3 times in a row ... is skipped for a
/// cooldown: its keys load locally at once (`peer_skips`)"; "Stats": `peer_errors` "failed
/// peer fetches ... each loaded locally", `peer_skips`, `cluster.skipped_peers`,
/// `peers[].errors` `connect`, `peers[].skipped`; "Many keys at once": "A key whose owner is
/// down, skipped or answers badly is loaded here, as for `get`"; metrics
/// `groupcache_skipped_peers`, `groupcache_peer_skipped_total`, `groupcache_peer_skips_total`.
#[tokio::test]
async fn a_dead_owner_counts_three_errors_then_skips_every_key_single_or_batched() {
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let (dead, nodes) = beside_dead_peer().await;
    let a = &nodes[0];
    let keys = keys_owned_by(&a.cache, &dead, "d:", 11);
    for k in &keys[..5] {
        assert_eq!(a.handle().get("users", k).await.unwrap(), value_of(k));
    }
    let stats = a.cache.stats();
    assert_eq!(stats.cluster.skipped_peers, vec![dead.clone()]);
    // Two get_many calls of three keys each, while the peer is skipped.
    for chunk in [&keys[5..8], &keys[8..]] {
        let got = a.handle().get_many("users", chunk).await.unwrap();
        for (k, r) in chunk.iter().zip(&got) {
            assert_eq!(r.as_ref().unwrap(), &value_of(k));
        }
    }
    assert_eq!(
        counters(&a.stats("users")),
        expect(&[
            ("gets", 11),
            ("loads", 11),
            ("loads_deduped", 11),
            ("local_loads", 11),
            ("peer_errors", 3),
            ("peer_skips", 8),
        ])
    );
    let fd = peer_stats(&a.cache, &dead);
    assert_eq!(
        fd.total_requests(),
        3,
        "a skipped fetch sends nothing: {:?} {:?}",
        fd.requests,
        fd.errors
    );
    assert_eq!((fd.errors.connect, fd.errors.total()), (3, 3));
    assert_eq!(fd.skipped, 8);
    let snap = a.cache.stats();
    assert_eq!(snap.source("users").unwrap().main_cache.items, 11);

    a.cache.record_metrics();
    let s = snapshot(&recorder);
    assert_eq!(gauge(&s, "groupcache_skipped_peers", &[]), Some(1.0));
    assert_eq!(
        counter(&s, "groupcache_peer_skipped_total", &[("peer", &dead)]),
        Some(8)
    );
    assert_eq!(
        counter(&s, "groupcache_peer_skips_total", &[("source", "users")]),
        Some(8)
    );
    assert_eq!(
        counter(&s, "groupcache_peer_errors_total", &[("source", "users")]),
        Some(3)
    );
    assert_eq!(
        counter(
            &s,
            "groupcache_peer_request_errors_total",
            &[("peer", &dead), ("kind", "connect")]
        ),
        Some(3)
    );
}

/// guide "Peer health": "A peer that leaves the ring (`set_peers`, DNS discovery) is
/// forgotten, and starts healthy if it comes back"; "Stats": `cluster.skipped_peers` "A peer
/// leaves the list ... when it leaves the ring"; "A peer's entry lives while it is on the
/// ring: when it leaves its figures are dropped, and if it comes back they start from zero";
/// "What to alert on": `groupcache_skipped_peers` is not counted "once it leaves the ring".
#[tokio::test]
async fn a_skipped_peer_that_leaves_the_ring_is_forgotten_and_comes_back_healthy() {
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let (dead, nodes) = beside_dead_peer().await;
    let a = &nodes[0];
    let keys = keys_owned_by(&a.cache, &dead, "d:", 5);
    for k in &keys[..4] {
        a.handle().get("users", k).await.unwrap();
    }
    assert_eq!(a.cache.stats().cluster.skipped_peers, vec![dead.clone()]);
    assert_eq!(a.stats("users").peer_skips, 1);

    a.cache.set_peers([a.url.clone()]).unwrap();
    let stats = a.cache.stats();
    assert!(stats.cluster.skipped_peers.is_empty(), "it left the ring");
    assert!(stats.peers.is_empty() && stats.peer(&dead).is_none());
    assert_eq!(stats.cluster.count, 1);
    a.cache.record_metrics();
    let s = snapshot(&recorder);
    assert_eq!(gauge(&s, "groupcache_skipped_peers", &[]), Some(0.0));

    a.cache.set_peers([a.url.clone(), dead.clone()]).unwrap();
    let stats = a.cache.stats();
    assert!(
        stats.cluster.skipped_peers.is_empty(),
        "it comes back healthy"
    );
    let fd = stats.peer(&dead).expect("back on the ring").clone();
    assert_eq!(
        (
            fd.total_requests(),
            fd.errors.total(),
            fd.skipped,
            fd.bytes_received
        ),
        (0, 0, 0, 0),
        "its figures start from zero"
    );
    assert!(fd.latency_p50.is_none());
    // The next fetch of its key is tried, not skipped.
    let before = a.stats("users");
    a.handle().get("users", &keys[4]).await.unwrap();
    let d = delta(&before, &a.stats("users"));
    assert_eq!((d.peer_errors, d.peer_skips), (1, 0));
    let fd = peer_stats(&a.cache, &dead);
    assert_eq!((fd.requests.gets, fd.errors.connect, fd.skipped), (1, 1, 0));
}

/// guide "Stats": `peer_errors` "(... a bad status or body ...), each loaded locally";
/// `peers[].errors` `decode` (garbage); SourceSnapshot rustdoc: the main cache holds "values
/// it loaded when an owner failed"; docs/protocol.md "On a peer error the node loads the key
/// from its own data source and keeps the value in its main cache".
#[tokio::test]
async fn a_garbage_answer_is_a_peer_error_and_the_local_value_is_kept() {
    let (garbage, _server) = garbage_peer().await;
    let loads = Loads::default();
    let nodes = cluster(1, &loads, |b| b.peers([garbage.clone()])).await;
    let a = &nodes[0];
    let key = key_owned_by(&a.cache, &garbage, "g:");
    for _ in 0..2 {
        assert_eq!(a.handle().get("users", &key).await.unwrap(), value_of(&key));
    }
    assert_eq!(loads.of(&key), vec![a.url.clone()]);
    assert_eq!(
        counters(&a.stats("users")),
        expect(&[
            ("gets", 2),
            ("cache_hits", 1),
            ("loads", 1),
            ("loads_deduped", 1),
            ("local_loads", 1),
            ("peer_errors", 1),
        ])
    );
    let fg = peer_stats(&a.cache, &garbage);
    assert_eq!(
        (fg.requests.gets, fg.errors.decode, fg.errors.total()),
        (1, 1, 1)
    );
    assert_eq!(fg.bytes_received, 4, "the garbage was read");
    let snap = a.cache.stats();
    assert_eq!(snap.source("users").unwrap().main_cache.items, 1);
    assert!(
        snap.cluster.skipped_peers.is_empty(),
        "one failure is not three"
    );
}

/// guide "Graceful shutdown": "From then on the node answers peer requests `503 Service
/// Unavailable` (the peers load its keys themselves ...) and its own gets keep working";
/// "The `503`s are counted in `cluster.refused_requests.shutting_down`"; `cluster.draining`;
/// `peers[].errors` `status` (`5xx`); refused "before any work"; metrics
/// `groupcache_draining`, `groupcache_peer_requests_refused_total{reason}`.
#[tokio::test]
async fn a_draining_owner_refuses_with_503_and_both_sides_count_it() {
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| b.hot_keys(HotKeys::Never)).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let report = within("shutdown with nothing running", b.cache.shutdown()).await;
    assert!(report.is_complete() && report.abandoned() == 0);
    assert!(b.cache.is_shutting_down());
    let key = key_owned_by(&a.cache, &b.url, "user:");
    assert_eq!(a.handle().get("users", &key).await.unwrap(), value_of(&key));
    assert_eq!(loads.of(&key), vec![a.url.clone()], "the asker loaded it");
    let sa = a.stats("users");
    assert_eq!((sa.peer_errors, sa.local_loads, sa.peer_loads), (1, 1, 0));
    let fb = peer_stats(&a.cache, &b.url);
    assert_eq!((fb.errors.status, fb.errors.total()), (1, 1));

    let stats = b.cache.stats();
    assert!(stats.cluster.draining);
    assert_eq!(stats.cluster.refused_requests.shutting_down, 1);
    let sb = stats.source("users").unwrap().stats;
    assert_eq!(
        (sb.gets, sb.server_requests, sb.loads),
        (0, 0, 0),
        "refused before any work"
    );
    // Its own gets keep working.
    let own = key_owned_by(&b.cache, &b.url, "own:");
    assert_eq!(b.handle().get("users", &own).await.unwrap(), value_of(&own));

    b.cache.record_metrics();
    let s = snapshot(&recorder);
    assert_eq!(gauge(&s, "groupcache_draining", &[]), Some(1.0));
    assert_eq!(
        counter(
            &s,
            "groupcache_peer_requests_refused_total",
            &[("reason", "shutting_down")]
        ),
        Some(1)
    );
}

// ---------------------------------------------------------------------------------------
// Removals and writes
// ---------------------------------------------------------------------------------------

/// guide "Stats": `peers[].requests` `removals`, `writes`, `probes` "(asking what it speaks,
/// once before its first batched get, removal or write)"; `bytes_sent` "keys of batched
/// requests, written values"; "Writes": "The key's owner keeps the value in its main cache
/// ...; every other copy is dropped, here and on the other peers, as `remove` drops them".
#[tokio::test]
async fn removals_and_writes_are_counted_per_peer_with_one_probe_each() {
    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| b.hot_keys(HotKeys::Never)).await;
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let key = key_owned_by(&a.cache, &b.url, "user:");
    let removal = a.handle().remove("users", &key).await.unwrap();
    assert!(removal.is_complete(), "{removal:?}");
    for p in [&b.url, &c.url] {
        let f = peer_stats(&a.cache, p);
        assert_eq!(
            (f.requests.probes, f.requests.removals, f.requests.gets),
            (1, 1, 0),
            "{p}: {:?}",
            f.requests
        );
    }
    let a_after_remove = a.stats("users");
    assert_eq!(
        counters(&a_after_remove),
        expect(&[]),
        "a removal is no get"
    );

    // A second removal: no second probe.
    a.handle().remove("users", &key).await.unwrap();
    let value = "written value";
    let removal = a.handle().set("users", &key, value, None).await.unwrap();
    assert!(removal.is_complete(), "{removal:?}");
    let fb = peer_stats(&a.cache, &b.url);
    assert_eq!(
        (
            fb.requests.probes,
            fb.requests.removals,
            fb.requests.writes,
            fb.errors.total()
        ),
        (1, 2, 1, 0),
        "{:?}",
        fb.requests
    );
    assert!(
        fb.bytes_sent >= value.len() as u64,
        "the written value is sent: {}",
        fb.bytes_sent
    );
    let fc = peer_stats(&a.cache, &c.url);
    assert_eq!(
        (fc.requests.probes, fc.requests.removals, fc.requests.writes),
        (1, 3, 0),
        "{:?}",
        fc.requests
    );
    // Every node now gets the written value from the owner, which loads nothing.
    for n in &nodes {
        assert_eq!(n.handle().get("users", &key).await.unwrap(), value);
    }
    assert_eq!(loads.count(&key), 0, "the written key is never loaded");
    let sb = b.stats("users");
    assert_eq!(
        (sb.local_loads, sb.server_requests, sb.cache_hits),
        (0, 2, 3)
    );
}

// ---------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------

/// The metrics of guide "Metrics", each with its kind and label names.
const DOCUMENTED: &[(&str, &str, &[&str])] = &[
    ("groupcache_gets_total", "counter", &["source"]),
    ("groupcache_cache_hits_total", "counter", &["source"]),
    ("groupcache_loads_total", "counter", &["source"]),
    ("groupcache_loads_deduped_total", "counter", &["source"]),
    ("groupcache_local_loads_total", "counter", &["source"]),
    ("groupcache_local_not_found_total", "counter", &["source"]),
    ("groupcache_local_load_errors_total", "counter", &["source"]),
    ("groupcache_peer_loads_total", "counter", &["source"]),
    ("groupcache_peer_not_found_total", "counter", &["source"]),
    ("groupcache_peer_errors_total", "counter", &["source"]),
    ("groupcache_peer_load_errors_total", "counter", &["source"]),
    ("groupcache_peer_skips_total", "counter", &["source"]),
    ("groupcache_server_requests_total", "counter", &["source"]),
    ("groupcache_cache_bytes", "gauge", &["cache", "source"]),
    ("groupcache_cache_items", "gauge", &["cache", "source"]),
    (
        "groupcache_cache_capacity_bytes",
        "gauge",
        &["cache", "source"],
    ),
    (
        "groupcache_cache_gets_total",
        "counter",
        &["cache", "source"],
    ),
    (
        "groupcache_cache_lookup_hits_total",
        "counter",
        &["cache", "source"],
    ),
    (
        "groupcache_cache_evictions_total",
        "counter",
        &["cache", "source"],
    ),
    ("groupcache_stale_served_total", "counter", &["source"]),
    ("groupcache_hot_promotions_total", "counter", &["source"]),
    ("groupcache_peers", "gauge", &[]),
    ("groupcache_skipped_peers", "gauge", &[]),
    ("groupcache_ring_fingerprint", "gauge", &[]),
    ("groupcache_draining", "gauge", &[]),
    ("groupcache_ring_mismatches_total", "counter", &[]),
    ("groupcache_discovery_errors_total", "counter", &[]),
    (
        "groupcache_peer_requests_refused_total",
        "counter",
        &["reason"],
    ),
    ("groupcache_load_duration_seconds", "histogram", &["source"]),
    (
        "groupcache_peer_fetch_duration_seconds",
        "histogram",
        &["source"],
    ),
    ("groupcache_peer_requests_total", "counter", &["peer"]),
    (
        "groupcache_peer_request_errors_total",
        "counter",
        &["kind", "peer"],
    ),
    ("groupcache_peer_skipped_total", "counter", &["peer"]),
    (
        "groupcache_peer_bytes_total",
        "counter",
        &["direction", "peer"],
    ),
    (
        "groupcache_peer_request_duration_seconds",
        "histogram",
        &["peer"],
    ),
];

fn kind_of(v: &DebugValue) -> &'static str {
    match v {
        DebugValue::Counter(_) => "counter",
        DebugValue::Gauge(_) => "gauge",
        DebugValue::Histogram(_) => "histogram",
    }
}

/// guide "Metrics": the table of names, kinds and labels; "`cache` is `main` or `hot`;
/// `reason` is one of ..."; "`peer` is the peer's base URL, for each peer on the ring but this
/// node"; "an error `kind` appears once it has happened"; `direction` `sent` / `received`;
/// the values are the stats' ("`cache.record_metrics()` copies the stats into it").
#[tokio::test]
async fn record_metrics_writes_the_documented_names_labels_and_the_stats_values() {
    // One thread (current-thread runtime): the thread-local recorder sees the histograms.
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let dead = dead_url().await;
    let (listeners, urls) = listeners(2).await;
    let loads = Loads::default();
    let mut nodes = Vec::new();
    for l in listeners {
        let mut peers = urls.clone();
        peers.push(dead.clone());
        nodes.push(start_node(l, &peers, &loads, |b| b.source("orders", loads.source("o"))).await);
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    // Local, remote, failing and dead-owner traffic on `users`; nothing on `orders`.
    for (owner, p) in [(&a.url, "a:"), (&b.url, "b:"), (&dead, "d:")] {
        let k = key_owned_by(&a.cache, owner, p);
        a.handle().get("users", &k).await.unwrap();
    }
    let fail = key_owned_by(&a.cache, &b.url, "fail:");
    a.handle().get("users", &fail).await.unwrap_err();
    let bk = keys_owned_by(&a.cache, &b.url, "many:", 3);
    a.handle().get_many("users", &bk).await.unwrap();
    a.cache.record_metrics();
    let s = snapshot(&recorder);

    // Every series has a documented name, kind and label names.
    let documented: HashMap<&str, (&str, Vec<&str>)> = DOCUMENTED
        .iter()
        .map(|(n, k, l)| (*n, (*k, l.to_vec())))
        .collect();
    let mut undocumented = BTreeSet::new();
    for ((name, labels), value) in &s {
        let Some((kind, names)) = documented.get(name.as_str()) else {
            undocumented.insert(name.clone());
            continue;
        };
        let got: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(&got, names, "{name}: label names");
        assert_eq!(kind_of(value), *kind, "{name}: kind");
    }
    assert!(
        undocumented.is_empty(),
        "undocumented metrics: {undocumented:?}"
    );
    // Every documented metric is written (an error kind once it has happened).
    let written: BTreeSet<&str> = s.keys().map(|(n, _)| n.as_str()).collect();
    let missing: Vec<&str> = DOCUMENTED
        .iter()
        .map(|(n, _, _)| *n)
        .filter(|n| !written.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "documented but not written: {missing:?}"
    );

    // Label values.
    let values = |name: &str, label: &str| -> BTreeSet<String> {
        s.keys()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, l)| l.iter().filter(|(k, _)| k == label).map(|(_, v)| v.clone()))
            .collect()
    };
    let set = |v: &[&str]| -> BTreeSet<String> { v.iter().map(|s| s.to_string()).collect() };
    assert_eq!(
        values("groupcache_gets_total", "source"),
        set(&["orders", "users"])
    );
    assert_eq!(
        values("groupcache_cache_bytes", "cache"),
        set(&["hot", "main"])
    );
    assert_eq!(
        values("groupcache_peer_requests_refused_total", "reason"),
        set(&[
            "missing",
            "malformed",
            "expired",
            "bad_signature",
            "replayed",
            "replay_record_full",
            "closed",
            "shutting_down"
        ])
    );
    let mut others = vec![b.url.as_str(), dead.as_str()];
    others.sort();
    assert_eq!(
        values("groupcache_peer_requests_total", "peer"),
        set(&others)
    );
    assert_eq!(
        values("groupcache_peer_bytes_total", "direction"),
        set(&["received", "sent"])
    );
    assert_eq!(
        values("groupcache_peer_request_errors_total", "kind"),
        set(&["connect"]),
        "only the kinds that happened"
    );

    // Values: the stats'.
    let stats = a.cache.stats();
    let u = stats.source("users").unwrap();
    for (name, v) in [
        ("groupcache_gets_total", u.stats.gets),
        ("groupcache_cache_hits_total", u.stats.cache_hits),
        ("groupcache_loads_total", u.stats.loads),
        ("groupcache_loads_deduped_total", u.stats.loads_deduped),
        ("groupcache_local_loads_total", u.stats.local_loads),
        ("groupcache_local_not_found_total", u.stats.local_not_found),
        (
            "groupcache_local_load_errors_total",
            u.stats.local_load_errs,
        ),
        ("groupcache_peer_loads_total", u.stats.peer_loads),
        ("groupcache_peer_not_found_total", u.stats.peer_not_found),
        ("groupcache_peer_errors_total", u.stats.peer_errors),
        (
            "groupcache_peer_load_errors_total",
            u.stats.peer_load_errors,
        ),
        ("groupcache_peer_skips_total", u.stats.peer_skips),
        ("groupcache_server_requests_total", u.stats.server_requests),
        ("groupcache_hot_promotions_total", u.stats.hot_promotions),
    ] {
        assert_eq!(counter(&s, name, &[("source", "users")]), Some(v), "{name}");
    }
    assert_eq!(u.stats.gets, 7);
    assert_eq!(u.stats.peer_load_errors, 1);
    for (cache, c) in [("main", &u.main_cache), ("hot", &u.hot_cache)] {
        let l = [("source", "users"), ("cache", cache)];
        assert_eq!(
            gauge(&s, "groupcache_cache_bytes", &l),
            Some(c.bytes as f64)
        );
        assert_eq!(
            gauge(&s, "groupcache_cache_items", &l),
            Some(c.items as f64)
        );
        assert_eq!(
            gauge(&s, "groupcache_cache_capacity_bytes", &l),
            Some(c.capacity_bytes as f64)
        );
        assert_eq!(counter(&s, "groupcache_cache_gets_total", &l), Some(c.gets));
        assert_eq!(
            counter(&s, "groupcache_cache_lookup_hits_total", &l),
            Some(c.hits)
        );
    }
    assert_eq!(gauge(&s, "groupcache_peers", &[]), Some(3.0));
    let fingerprint = u32::from_str_radix(&stats.cluster.ring_fingerprint, 16).unwrap();
    assert_eq!(
        gauge(&s, "groupcache_ring_fingerprint", &[]),
        Some(f64::from(fingerprint))
    );
    assert_eq!(gauge(&s, "groupcache_draining", &[]), Some(0.0));
    let fb = peer_stats(&a.cache, &b.url);
    assert_eq!(
        counter(&s, "groupcache_peer_requests_total", &[("peer", &b.url)]),
        Some(fb.total_requests())
    );
    assert_eq!(
        counter(
            &s,
            "groupcache_peer_bytes_total",
            &[("peer", &b.url), ("direction", "sent")]
        ),
        Some(fb.bytes_sent)
    );
    assert_eq!(
        counter(
            &s,
            "groupcache_peer_bytes_total",
            &[("peer", &b.url), ("direction", "received")]
        ),
        Some(fb.bytes_received)
    );
}

// ---------------------------------------------------------------------------------------
// Membership
// ---------------------------------------------------------------------------------------

/// guide "Stats": `peers[].url` "one entry per peer on the ring but this node, sorted by URL";
/// "A node of a cluster of N has N - 1 entries, whatever the traffic"; "Metrics": "each
/// per-peer metric has N - 1 series on a node of a cluster of N"; "When a peer leaves the
/// ring, `record_metrics` stops writing its series"; `groupcache_peers` "peers on the ring,
/// this node included".
#[tokio::test]
async fn per_peer_entries_and_series_follow_the_ring_whatever_the_traffic() {
    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| b).await;
    let a = &nodes[0];
    let (x, y) = (dead_url().await, dead_url().await);
    let mut all: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    all.extend([x.clone(), y.clone()]);
    a.cache.set_peers(all.clone()).unwrap();
    let stats = a.cache.stats();
    let mut others: Vec<String> = all.iter().filter(|u| **u != a.url).cloned().collect();
    others.sort();
    let urls: Vec<String> = stats.peers.iter().map(|p| p.url.clone()).collect();
    assert_eq!(
        urls, others,
        "N - 1 entries, sorted by URL, before any traffic"
    );
    assert_eq!(stats.cluster.count, 5);
    {
        let recorder = DebuggingRecorder::new();
        let _guard = metrics::set_default_local_recorder(&recorder);
        a.cache.record_metrics();
        let s = snapshot(&recorder);
        assert_eq!(gauge(&s, "groupcache_peers", &[]), Some(5.0));
        let series: BTreeSet<String> = s
            .keys()
            .filter(|(n, _)| n == "groupcache_peer_requests_total")
            .flat_map(|(_, l)| l.iter().map(|(_, v)| v.clone()))
            .collect();
        assert_eq!(series, others.iter().cloned().collect());
    }
    // x and y leave.
    a.cache.set_peers(all[..3].to_vec()).unwrap();
    let stats = a.cache.stats();
    assert_eq!(stats.peers.len(), 2);
    assert!(stats.peer(&x).is_none() && stats.peer(&y).is_none());
    let recorder = DebuggingRecorder::new();
    let _guard = metrics::set_default_local_recorder(&recorder);
    a.cache.record_metrics();
    let s = snapshot(&recorder);
    assert_eq!(gauge(&s, "groupcache_peers", &[]), Some(3.0));
    let stale: Vec<_> = s
        .keys()
        .filter(|(_, l)| l.iter().any(|(_, v)| *v == x || *v == y))
        .collect();
    assert!(stale.is_empty(), "{stale:?}");
}

/// guide "Changing the peer list": `set_peers` "replaces the peer list at runtime ... Only
/// about 1/N of the keys move when a node joins a cluster of N"; "What it does": "a miss is
/// loaded once in the whole cluster, by the owner"; "From one node to a cluster": "every
/// node's ... `cluster` shows the same `ring_fingerprint` and `count`".
#[tokio::test]
async fn after_a_join_keys_move_to_their_new_owner_and_each_is_loaded_once() {
    let loads = Loads::default();
    let (listeners, urls) = listeners(4).await;
    let mut listeners = listeners.into_iter();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(
            start_node(listeners.next().unwrap(), &urls[..3], &loads, |b| {
                b.hot_keys(HotKeys::Never)
            })
            .await,
        );
    }
    let keys: Vec<String> = (0..120).map(|i| format!("user:{i}")).collect();
    let old_ring = nodes[0].cache.ring();
    for k in &keys {
        assert_eq!(
            nodes[0].handle().get("users", k).await.unwrap(),
            value_of(k)
        );
    }
    for k in &keys {
        assert_eq!(
            loads.of(k),
            vec![old_ring.owner(k).unwrap().to_owned()],
            "{k}"
        );
    }
    // A fourth node joins every list.
    nodes.push(
        start_node(listeners.next().unwrap(), &urls, &loads, |b| {
            b.hot_keys(HotKeys::Never)
        })
        .await,
    );
    for n in &nodes[..3] {
        n.cache.set_peers(urls.clone()).unwrap();
    }
    let fingerprints: BTreeSet<String> = nodes
        .iter()
        .map(|n| n.cache.stats().cluster.ring_fingerprint)
        .collect();
    assert_eq!(fingerprints.len(), 1, "one ring everywhere");
    assert!(nodes.iter().all(|n| n.cache.stats().cluster.count == 4));
    assert!(nodes.iter().all(|n| n.cache.stats().peers.len() == 3));
    let new_ring = nodes[0].cache.ring();
    let d = &nodes[3].url;
    let moved: Vec<&String> = keys
        .iter()
        .filter(|k| new_ring.owner(k) != old_ring.owner(k))
        .collect();
    assert!(
        moved.iter().all(|k| new_ring.owner(k) == Some(d.as_str())),
        "keys move only to the node that joins"
    );
    assert!(
        (12..=60).contains(&moved.len()),
        "about a quarter of 120 keys move: {}",
        moved.len()
    );
    // Every node asks for every key.
    for n in &nodes {
        for k in &keys {
            assert_eq!(n.handle().get("users", k).await.unwrap(), value_of(k));
        }
    }
    for k in &keys {
        let mut want = vec![old_ring.owner(k).unwrap().to_owned()];
        if moved.contains(&k) {
            want.push(d.clone());
        }
        assert_eq!(loads.of(k), want, "{k}: loaded once by each owner it had");
    }
    assert_eq!(
        nodes[3].stats("users").local_loads as usize,
        moved.len(),
        "the new node loads exactly the keys that moved to it"
    );
}

/// guide "DNS discovery": "A failed lookup, or an empty answer, keeps the last list and counts
/// `discovery_errors`"; "This node's own URL is added if the answer lacks it"; "Stats":
/// `cluster.discovery_errors`, and a peer that leaves the ring through discovery leaves
/// `peers`.
#[tokio::test]
async fn failed_and_empty_lookups_count_discovery_errors_and_keep_the_list() {
    #[derive(Clone)]
    struct Script(Arc<AtomicUsize>);
    impl Resolve for Script {
        async fn resolve(&self, _name: &str) -> std::io::Result<Vec<IpAddr>> {
            match self.0.fetch_add(1, Ordering::SeqCst) {
                0 => Ok(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]),
                n if n % 2 == 1 => Err(std::io::Error::other("lookup failed")),
                _ => Ok(Vec::new()),
            }
        }
    }
    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| b).await;
    let a = &nodes[0];
    assert_eq!(a.cache.stats().peers.len(), 1);
    let calls = Arc::new(AtomicUsize::new(0));
    a.cache
        .discover(
            DnsDiscovery::new("peers.test", a.addr.port())
                .interval(Duration::from_millis(10))
                .resolver(Script(calls.clone())),
        )
        .unwrap();
    eventually("four failed or empty lookups", DEADLINE, || {
        a.cache.stats().cluster.discovery_errors >= 4
    })
    .await;
    let stats = a.cache.stats();
    assert_eq!(
        stats.cluster.peers,
        vec![a.url.clone()],
        "the last list is kept"
    );
    assert!(
        stats.peers.is_empty(),
        "the other node left with the first answer"
    );
    let done = calls.load(Ordering::SeqCst) as u64;
    let errors = a.cache.stats().cluster.discovery_errors;
    assert!(
        errors < done && errors + 2 >= done,
        "every lookup but the first counted: {errors} errors, {done} lookups"
    );
}

// ---------------------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------------------

/// guide "Graceful shutdown": "The call returns once the loads that started before it have
/// finished ...: loads that start during the drain are not waited for"; "its own gets keep
/// working"; the peers "load its keys themselves".
#[tokio::test]
async fn shutdown_waits_for_a_peers_load_that_started_before_it_and_not_for_later_ones() {
    let loads = Loads::default();
    let held = Held::default();
    let nodes = held_cluster(2, &loads, &held, |b| {
        b.hot_keys(HotKeys::Never)
            .peer_timeout(Duration::from_secs(600))
            .shutdown_timeout(Duration::from_secs(3_600))
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    // A load on b, started by a peer request of a.
    let before = key_owned_by(&a.cache, &b.url, "hold:before-");
    let first = spawn_get(a, "held", &before);
    eventually("b loads the key a asked for", DEADLINE, || {
        held.started(&before) == vec![b.url.clone()]
    })
    .await;
    let shutdown = {
        let cache = b.cache.clone();
        tokio::spawn(async move { cache.shutdown().await })
    };
    eventually("b drains", DEADLINE, || b.cache.is_shutting_down()).await;
    // A load that starts during the drain: not waited for.
    let during = key_owned_by(&b.cache, &b.url, "hold:during-");
    let own = spawn_get(b, "held", &during);
    eventually("b loads its own key", DEADLINE, || {
        held.started(&during) == vec![b.url.clone()]
    })
    .await;
    // Peers load b's keys themselves now.
    let other = key_owned_by(&a.cache, &b.url, "other:");
    assert_eq!(
        a.handle().get("held", &other).await.unwrap(),
        value_of(&other)
    );
    assert_eq!(held.started(&other), vec![a.url.clone()]);
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert!(
        !shutdown.is_finished(),
        "it waits for the load that started before it"
    );
    held.release(&before);
    let report = within("shutdown after the earlier load", shutdown)
        .await
        .unwrap();
    assert!(report.is_complete(), "abandoned {}", report.abandoned());
    assert!(!own.is_finished(), "the later load still runs");
    assert_eq!(
        within("a's get", first).await.unwrap().unwrap(),
        value_of(&before)
    );
    held.release(&during);
    assert_eq!(
        within("b's own get", own).await.unwrap().unwrap(),
        value_of(&during)
    );
    assert_eq!(held.started(&before), vec![b.url.clone()], "loaded once");
}

/// guide "Graceful shutdown": "or after `shutdown_timeout` ..., whichever comes first ...
/// neither is a data source that hangs. The returned `Shutdown` says how many loads it
/// abandoned at the bound (they go on in the background), and the crate then logs
/// `shutdown: loads still running at the shutdown timeout; not waiting for them` (warn;
/// fields `abandoned`, `timeout_ms`)"; Groupcache::shutdown rustdoc "their callers still get
/// their values".
#[tokio::test]
async fn shutdown_abandons_hung_loads_at_shutdown_timeout_and_says_so() {
    let (_logs_guard, logs) = capture_logs();
    let loads = Loads::default();
    let held = Held::default();
    let timeout = Duration::from_millis(400);
    let nodes = held_cluster(2, &loads, &held, |b| b.shutdown_timeout(timeout)).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let keys = keys_owned_by(&b.cache, &b.url, "hold:hung-", 2);
    // One load from b's own caller, one from a peer's request.
    let own = spawn_get(b, "held", &keys[0]);
    let remote = spawn_get(a, "held", &keys[1]);
    eventually("both loads run on b", DEADLINE, || {
        keys.iter().all(|k| held.started(k) == vec![b.url.clone()])
    })
    .await;
    let started = std::time::Instant::now();
    let report = within("shutdown at its bound", b.cache.shutdown()).await;
    let took = started.elapsed();
    assert!(took >= timeout, "returned after {took:?}, before the bound");
    assert!(took < Duration::from_secs(20), "returned after {took:?}");
    assert_eq!(report.abandoned(), 2);
    assert!(!report.is_complete());
    assert_eq!(
        count_lines(
            &logs,
            "shutdown: loads still running at the shutdown timeout; not waiting for them"
        ),
        1,
        "{}",
        String::from_utf8_lossy(&logs.lock().unwrap())
    );
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(text.contains("abandoned=2"), "{text}");
    assert!(text.contains("timeout_ms=400"), "{text}");
    for k in &keys {
        held.release(k);
    }
    assert_eq!(
        within("own", own).await.unwrap().unwrap(),
        value_of(&keys[0])
    );
    assert_eq!(
        within("remote", remote).await.unwrap().unwrap(),
        value_of(&keys[1])
    );
}

/// guide "Peer health": a skipped peer's "keys load locally at once (`peer_skips`) instead of
/// each costing a timeout"; "Many keys at once": "A key whose owner is down, skipped or
/// answers badly is loaded here, as for `get`". A peer that accepts connections and never
/// answers, skipped after 3 timeouts: a `get_many` of its keys must not wait for it.
#[tokio::test]
async fn get_many_of_a_skipped_hanging_peers_keys_sends_nothing_and_does_not_wait() {
    let (slow, _hanging) = hanging_peer().await;
    let timeout = Duration::from_millis(300);
    let loads = Loads::default();
    let nodes = cluster(1, &loads, |b| {
        b.peers([slow.clone()])
            .peer_health(sticky_health())
            .peer_timeout(timeout)
            .hot_keys(HotKeys::Never)
    })
    .await;
    let a = &nodes[0];
    let keys = keys_owned_by(&a.cache, &slow, "s:", 6);
    for k in &keys[..3] {
        assert_eq!(a.handle().get("users", k).await.unwrap(), value_of(k));
    }
    assert_eq!(a.cache.stats().cluster.skipped_peers, vec![slow.clone()]);
    let started = std::time::Instant::now();
    let got = a.handle().get_many("users", &keys[3..]).await.unwrap();
    let took = started.elapsed();
    assert!(got.iter().all(Result::is_ok));
    let fs = peer_stats(&a.cache, &slow);
    assert_eq!(
        (fs.total_requests(), fs.skipped),
        (3, 3),
        "nothing is sent to a skipped peer; the get_many took {took:?} (peer_timeout {timeout:?}): {:?} {:?}",
        fs.requests,
        fs.errors
    );
    assert_eq!(a.stats("users").peer_skips, 3);
}
