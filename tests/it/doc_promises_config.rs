//! Black-box checks of what the documentation promises about configuration: docs/guide.md
//! ("Builder methods", "Environment variables", "Configuration errors (`ConfigError`)"), the
//! README's configuration table, the rustdoc of `GroupcacheBuilder` (and `from_env`) and of
//! `ConfigError`, and the header of `examples/node.rs` (its variables, routes, exit codes and
//! shutdown). Nodes are real, on 127.0.0.1 or [::1] port 0 (or a port picked free on
//! loopback); the node example runs as a process in a group of its own, killed at the end
//! even when a test fails. State is waited for by polling with a deadline.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use tower_groupcache::{
    ConfigError, ErrorKind, Groupcache, GroupcacheBuilder, HotKeys, MAX_REPLICAS, MAX_RING_POINTS,
    MIN_PEER_SECRET_BYTES, PeerHealthConfig, RingKind, defaults,
};

use crate::support::recorded::DEADLINE;
use crate::support::{
    Loads, Node, eventually, keys_owned_by, listeners, request, start_node, value_of,
};

const SECRET: &str = "a secret all nodes share: 32 or more random bytes";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

async fn echo(key: String) -> Result<String, std::io::Error> {
    Ok(key)
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "<non-string panic>".into())
}

/// Runs `f`, turning a panic into a failure that names `what` ("build() never panics").
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => value,
        Err(payload) => panic!("PANIC on {what}: {}", panic_text(payload)),
    }
}

/// `build()` of `builder`, never a panic.
fn build(what: &str, builder: GroupcacheBuilder) -> Result<Groupcache, ConfigError> {
    no_panic(what, move || builder.build())
}

/// The error `build()` must return for `what`.
fn build_err(what: &str, builder: GroupcacheBuilder) -> ConfigError {
    match build(what, builder) {
        Ok(_) => panic!("{what}: build() accepted it, the docs say it is refused"),
        Err(e) => e,
    }
}

fn build_ok(what: &str, builder: GroupcacheBuilder) -> Groupcache {
    build(what, builder).unwrap_or_else(|e| panic!("{what}: build() refused it: {e}"))
}

/// A builder with one data source, `users`.
fn b() -> GroupcacheBuilder {
    Groupcache::builder().source("users", echo)
}

/// A builder from `vars` (see [`from_vars_ok`]) with one data source, `users`.
fn env_b(vars: &[(&str, &str)]) -> GroupcacheBuilder {
    from_vars_ok(vars).source("users", echo)
}

/// [`b`] as the node at `self_url` among `peers`, signing with `SECRET`.
fn b_among<P: Into<String>>(
    self_url: impl Into<String>,
    peers: impl IntoIterator<Item = P>,
) -> GroupcacheBuilder {
    b().self_url(self_url).peers(peers).peer_secret(SECRET)
}

/// `from_env_lookup("GROUPCACHE", ..)` over `vars` (full names), never a panic.
fn from_vars(vars: &[(&str, &str)]) -> Result<GroupcacheBuilder, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let what = format!("from_env_lookup({vars:?})");
    no_panic(&what, move || {
        GroupcacheBuilder::from_env_lookup("GROUPCACHE", |name| map.get(name).cloned())
    })
}

fn from_vars_ok(vars: &[(&str, &str)]) -> GroupcacheBuilder {
    from_vars(vars).unwrap_or_else(|e| panic!("from_env refused {vars:?}: {e}"))
}

fn from_vars_err(vars: &[(&str, &str)]) -> ConfigError {
    match from_vars(vars) {
        Ok(_) => panic!("from_env accepted {vars:?}; the docs say it is a ConfigError::Env"),
        Err(e) => e,
    }
}

/// Main and hot cache capacities of `users`.
fn capacities(cache: &Groupcache) -> (u64, u64) {
    let stats = cache.stats();
    let s = stats.source("users").expect("users is registered");
    (s.main_cache.capacity_bytes, s.hot_cache.capacity_bytes)
}

fn peer_urls(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "http://10.{}.{}.{}:8080",
                i >> 16 & 255,
                i >> 8 & 255,
                i & 255
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Builder defaults (guide, "Builder methods"; README "Configuration")
// ---------------------------------------------------------------------------------------

/// README: "`cache_bytes(n)` | 64 MiB (`defaults::CACHE_BYTES`)", "`replicas(n)` | 50
/// (`defaults::REPLICAS`)", "`peer_timeout(d)` | 5 s (`defaults::PEER_TIMEOUT`)" and the
/// other named defaults.
#[test]
fn documented_default_constants() {
    assert_eq!(defaults::BASE_PATH, "/_groupcache/");
    assert_eq!(defaults::CACHE_BYTES, 64 << 20);
    assert_eq!(defaults::REPLICAS, 50);
    assert_eq!(defaults::PEER_TIMEOUT, Duration::from_secs(5));
    assert_eq!(defaults::CONNECT_TIMEOUT, Duration::from_secs(1));
    assert_eq!(defaults::PEER_IDLE_TIMEOUT, Duration::from_secs(90));
    assert_eq!(defaults::MAX_CONNECTIONS_PER_PEER, 64);
    assert_eq!(defaults::MAX_BATCH_KEYS, 1000);
    assert_eq!(defaults::MAX_BATCH_KEYS_LIMIT, 100_000);
    assert_eq!(defaults::NATURAL_BATCHING, 4);
    assert_eq!(defaults::MAX_KEY_BYTES, 8 << 10);
    assert_eq!(defaults::MAX_VALUE_BYTES, 32 << 20);
    assert_eq!(defaults::HOT_CACHE_FRACTION, 0.125);
    assert_eq!(defaults::HOT_MAX_STALENESS, Duration::from_secs(60));
    assert_eq!(defaults::SHUTDOWN_TIMEOUT, Duration::from_secs(15));
    assert_eq!(MAX_REPLICAS, 10_000);
    assert_eq!(MAX_RING_POINTS, 1_000_000);
    assert_eq!(MIN_PEER_SECRET_BYTES, 32);
    let health = PeerHealthConfig::default();
    assert_eq!(health.failure_threshold, 3);
    assert_eq!(health.cooldown, Duration::from_secs(1));
    assert_eq!(health.max_cooldown, Duration::from_secs(30));
    assert_eq!(HotKeys::default(), HotKeys::AboveQps(0.05));
    assert_eq!(RingKind::default(), RingKind::Golang);
}

/// Guide: "`self_url(url)` | none", "`peers(urls)` | none ... with neither, single-node
/// mode"; "From one node to a cluster": "`cache.stats().cluster.count` is 0 in this mode,
/// or 1 (this node) with a self URL".
#[tokio::test]
async fn default_is_single_node_mode_and_self_url_alone_is_a_ring_of_one() {
    let cache = build_ok("defaults", b());
    let stats = cache.stats();
    assert_eq!(stats.cluster.count, 0, "{:?}", stats.cluster);
    assert_eq!(stats.cluster.self_url, None);
    assert!(stats.cluster.peers.is_empty());
    assert_eq!(cache.handle().get("users", "k").await.unwrap(), "k");

    let cache = build_ok("self only", b().self_url("http://127.0.0.1:1"));
    let stats = cache.stats();
    assert_eq!(stats.cluster.count, 1, "{:?}", stats.cluster);
    assert_eq!(stats.cluster.peers, vec!["http://127.0.0.1:1".to_string()]);
}

/// Guide: "`cache_bytes(n)` | 64 MiB | bytes per data source on this node, main and hot cache
/// together"; "`hot_cache_fraction(f)` | 0.125".
#[test]
fn default_cache_bytes_is_64_mib_and_the_hot_cache_an_eighth() {
    let cache = build_ok("defaults", b());
    let (main, hot) = capacities(&cache);
    assert_eq!(main + hot, 64 << 20, "main {main} + hot {hot}");
    assert_eq!(hot, 8 << 20, "hot cache capacity");
}

/// Guide: "`hot_cache_fraction(f)` | 0.125 | the share of `cache_bytes` the hot cache may
/// take, from 0 to 1"; "`cache_bytes(n)` ... any `u64`".
#[test]
fn hot_cache_fraction_and_cache_bytes_edges() {
    for (fraction, want_hot) in [(0.0, 0u64), (0.5, 500), (1.0, 1000)] {
        let cache = build_ok(
            &format!("fraction {fraction}"),
            b().cache_bytes(1000).hot_cache_fraction(fraction),
        );
        let (main, hot) = capacities(&cache);
        assert_eq!(hot, want_hot, "hot capacity with fraction {fraction}");
        assert_eq!(main + hot, 1000, "main + hot with fraction {fraction}");
    }
    for bytes in [0, 1, u64::MAX] {
        let cache = build_ok(&format!("cache_bytes {bytes}"), b().cache_bytes(bytes));
        let (main, hot) = no_panic("capacities", || capacities(&cache));
        assert!(
            main.checked_add(hot).is_some_and(|sum| sum <= bytes),
            "{main} + {hot} > {bytes}"
        );
    }
}

/// Guide: "`cache_bytes(n)` ... 0 turns caching off".
#[tokio::test]
async fn cache_bytes_zero_turns_caching_off() {
    let loads = Loads::default();
    let cache = build_ok(
        "cache_bytes 0",
        Groupcache::builder()
            .cache_bytes(0)
            .source("users", loads.source("single")),
    );
    let handle = cache.handle();
    for _ in 0..3 {
        assert_eq!(handle.get("users", "k").await.unwrap(), value_of("k"));
    }
    assert_eq!(loads.count("k"), 3, "every get loads: nothing is cached");

    let loads = Loads::default();
    let cache = build_ok(
        "default",
        Groupcache::builder().source("users", loads.source("single")),
    );
    for _ in 0..3 {
        cache.handle().get("users", "k").await.unwrap();
    }
    assert_eq!(
        loads.count("k"),
        1,
        "with the default cache the key is loaded once"
    );
}

/// Guide: "`replicas(n)` | 50 | golang ring points per peer"; "`ring(kind)` |
/// `RingKind::Golang`".
#[test]
fn default_ring_is_golang_with_50_replicas() {
    let cache = build_ok(
        "three nodes",
        b_among(
            "http://10.0.0.1:8080",
            ["http://10.0.0.2:8080", "http://10.0.0.3:8080"],
        ),
    );
    let ring = cache.ring();
    assert_eq!(ring.kind(), RingKind::Golang);
    assert_eq!(ring.replicas(), 50);
    assert_eq!(ring.points(), 150);
    assert_eq!(cache.stats().cluster.count, 3);
}

/// Guide: "`peer_timeout(d)` | 5 s"; "`connect_timeout(d)` | 1 s, or `peer_timeout` if
/// shorter | ... at most `peer_timeout`". The default peer timeout shows in the refusal of a
/// connect timeout just above it; a short peer timeout alone is accepted (the connect timeout
/// follows it).
#[test]
fn default_timeouts_show_in_the_connect_timeout_rule() {
    build_ok(
        "connect = default peer timeout",
        b().connect_timeout(Duration::from_secs(5)),
    );
    let e = build_err(
        "connect just above the default peer timeout",
        b().connect_timeout(Duration::from_millis(5001)),
    );
    assert_eq!(
        e,
        ConfigError::ConnectTimeoutAbovePeerTimeout {
            connect: Duration::from_millis(5001),
            peer: Duration::from_secs(5)
        }
    );
    for peer in [
        Duration::from_nanos(1),
        Duration::from_millis(100),
        Duration::from_millis(999),
    ] {
        build_ok(
            &format!("peer_timeout {peer:?} alone"),
            b().peer_timeout(peer),
        );
    }
    build_ok(
        "peer = connect",
        b().peer_timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_secs(2)),
    );
}

/// Guide: "`base_path(path)` | `/_groupcache/` | where the layer answers peers".
#[tokio::test]
async fn default_base_path_is_where_the_layer_answers() {
    let loads = Loads::default();
    let (mut ls, urls) = listeners(1).await;
    let node = start_node(ls.remove(0), &urls, &loads, |b| b).await;
    let (status, headers, body) =
        request("GET", &format!("{}/_groupcache/users/k1", node.url)).await;
    assert_eq!(status, 200, "{body:?}");
    assert_eq!(
        headers.get("x-groupcache-extensions").map(|v| v.as_bytes()),
        Some(&b"1"[..])
    );
    assert_eq!(node.stats("users").server_requests, 1);
}

/// Guide: "`max_key_bytes(n)` | 8 KiB | longer keys are refused".
#[tokio::test]
async fn default_max_key_bytes_is_8_kib() {
    let cache = build_ok("defaults", b());
    let handle = cache.handle();
    let at = "k".repeat(8 << 10);
    assert_eq!(handle.get("users", &at).await.unwrap().len(), 8 << 10);
    let over = "k".repeat((8 << 10) + 1);
    let e = handle.get("users", &over).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeyTooLong, "{e}");
}

/// Guide: "`max_key_bytes(n)` ... Above 0": 1 is the smallest, and works.
#[tokio::test]
async fn max_key_bytes_one() {
    let cache = build_ok("max_key_bytes 1", b().max_key_bytes(1));
    assert_eq!(cache.handle().get("users", "a").await.unwrap(), "a");
    let e = cache.handle().get("users", "ab").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::KeyTooLong);
}

/// Guide: "`max_value_bytes(n)` | 32 MiB | ... Sent with each get
/// (`x-groupcache-max-value-bytes`)". A stand-in owner records the header.
#[tokio::test]
async fn default_max_value_bytes_is_sent_with_each_get() {
    /// Each request a stand-in owner saw: its path, and its value limit header.
    type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let app = Router::new().fallback(move |req: axum::extract::Request| {
        let record = record.clone();
        async move {
            let header = req
                .headers()
                .get("x-groupcache-max-value-bytes")
                .map(|v| v.to_str().unwrap_or("<not text>").to_string());
            record
                .lock()
                .unwrap()
                .push((req.uri().path().to_string(), header));
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "stand-in")
        }
    });
    let (mut ls, urls) = listeners(2).await;
    let owner = ls.pop().unwrap();
    let _stand_in = crate::support::serve(owner, app).await;
    let loads = Loads::default();
    let node = start_node(ls.remove(0), &urls, &loads, |b| b).await;
    let key = keys_owned_by(&node.cache, &urls[1], "mv", 1).remove(0);
    assert_eq!(
        node.handle().get("users", &key).await.unwrap(),
        value_of(&key)
    );
    let seen = seen.lock().unwrap().clone();
    let get = seen
        .iter()
        .find(|(path, _)| path.starts_with("/_groupcache/users/"))
        .unwrap_or_else(|| panic!("no get reached the stand-in owner: {seen:?}"));
    assert_eq!(
        get.1.as_deref(),
        Some("33554432"),
        "requests seen: {seen:?}"
    );
}

/// Guide: "`max_batch_keys(n)` | 1000 | keys in one batched peer request of `get_many`: an
/// asker splits larger batches".
#[tokio::test]
async fn default_max_batch_keys_splits_batches_at_1000() {
    let loads = Loads::default();
    let nodes = crate::support::cluster(2, &loads, |b| b).await;
    let (a, owner) = (&nodes[0], &nodes[1].url);
    let batched = |node: &Node| {
        node.cache
            .stats()
            .peer(owner)
            .map(|p| p.requests.batched_gets)
            .unwrap_or(0)
    };
    let thousand = keys_owned_by(&a.cache, owner, "b1k-", 1000);
    let results = tokio::time::timeout(DEADLINE, a.handle().get_many("users", &thousand))
        .await
        .expect("get_many in time")
        .expect("get_many");
    assert!(results.iter().all(|r| r.is_ok()));
    assert_eq!(batched(a), 1, "1000 keys: one batched request");
    let more = keys_owned_by(&a.cache, owner, "b1001-", 1001);
    tokio::time::timeout(DEADLINE, a.handle().get_many("users", &more))
        .await
        .expect("get_many in time")
        .expect("get_many");
    assert_eq!(batched(a), 3, "1001 more keys: two more batched requests");
    assert_eq!(loads.total_by(owner), 2001, "the owner loaded every key");
}

/// Guide: "`max_batch_keys(n)` ... 1 to 100,000": 1 is the smallest and works.
#[tokio::test]
async fn max_batch_keys_one_sends_one_key_per_batch() {
    let loads = Loads::default();
    let nodes = crate::support::cluster(2, &loads, |b| b.max_batch_keys(1)).await;
    let (a, owner) = (&nodes[0], &nodes[1].url);
    let keys = keys_owned_by(&a.cache, owner, "one-", 3);
    let results = tokio::time::timeout(DEADLINE, a.handle().get_many("users", &keys))
        .await
        .expect("in time")
        .expect("get_many");
    for (k, r) in keys.iter().zip(&results) {
        assert_eq!(r.as_ref().unwrap(), &value_of(k));
    }
    let stats = a.cache.stats();
    let peer = stats.peer(owner).expect("owner has an entry");
    assert_eq!(
        peer.requests.batched_gets + peer.requests.gets,
        3,
        "{:?}",
        peer.requests
    );
}

/// Guide: "`peer_health(config)` | 3 failures, 1 s to 30 s"; intro: "after 3 failures in a
/// row A skips B for a while (`peer_skips`)".
#[tokio::test]
async fn default_peer_health_skips_after_three_failures() {
    let loads = Loads::default();
    let dead = crate::support::dead_url().await;
    let (mut ls, urls) = listeners(1).await;
    let peers = vec![urls[0].clone(), dead.clone()];
    // The default threshold, with a cooldown that cannot end during the test (the default
    // 1 s one could, on a loaded machine; `documented_default_constants` checks its value).
    let health = PeerHealthConfig::default()
        .cooldown(Duration::from_secs(3_600))
        .max_cooldown(Duration::from_secs(3_600));
    let node = start_node(ls.remove(0), &peers, &loads, move |b| b.peer_health(health)).await;
    let keys = keys_owned_by(&node.cache, &dead, "ph-", 4);
    for k in &keys[..2] {
        assert_eq!(node.handle().get("users", k).await.unwrap(), value_of(k));
    }
    assert!(
        node.cache.stats().cluster.skipped_peers.is_empty(),
        "two failures do not skip"
    );
    assert_eq!(
        node.handle().get("users", &keys[2]).await.unwrap(),
        value_of(&keys[2])
    );
    let s = node.stats("users");
    assert_eq!(
        (s.peer_errors, s.peer_skips),
        (3, 0),
        "after three failures"
    );
    assert_eq!(
        node.cache.stats().cluster.skipped_peers,
        [dead.as_str()],
        "after 3 failures in a row the dead peer is skipped"
    );
    node.handle().get("users", &keys[3]).await.unwrap();
    let s = node.stats("users");
    assert_eq!(
        (s.peer_errors, s.peer_skips),
        (3, 1),
        "the fourth is skipped"
    );
}

/// Guide: "`open_peer_path()` | closed"; docs/security.md: "A single node without a secret
/// serves no peer requests (403)".
#[tokio::test]
async fn default_peer_path_is_closed_without_a_secret() {
    let loads = Loads::default();
    let (mut ls, _) = listeners(1).await;
    let listener = ls.remove(0);
    let url = format!("http://{}", listener.local_addr().unwrap());
    let cache = build_ok(
        "self url, no peers, no secret",
        Groupcache::builder()
            .self_url(url.clone())
            .source("users", loads.source(&url)),
    );
    let _server = crate::support::serve(listener, crate::support::app(&cache)).await;
    let (status, _, body) = request("GET", &format!("{url}/_groupcache/users/k")).await;
    assert_eq!(status, 403, "{body:?}");
    assert_eq!(cache.stats().cluster.refused_requests.closed, 1);
    assert_eq!(loads.total(), 0);
}

/// Guide: "`hot_max_staleness(d)` | 60 s | ... 0 keeps no hot copy"; "`hot_keys(policy)` ...
/// the rate is finite and 0 or more".
#[tokio::test]
async fn hot_max_staleness_zero_keeps_no_hot_copy() {
    for (staleness, want_hot) in [(None, true), (Some(Duration::ZERO), false)] {
        let loads = Loads::default();
        let nodes = crate::support::cluster(2, &loads, |b| {
            let b = b.hot_keys(HotKeys::AboveQps(0.0));
            match staleness {
                Some(s) => b.hot_max_staleness(s),
                None => b,
            }
        })
        .await;
        let (a, owner) = (&nodes[0], &nodes[1].url);
        let key = keys_owned_by(&a.cache, owner, "hot-", 1).remove(0);
        for _ in 0..3 {
            assert_eq!(a.handle().get("users", &key).await.unwrap(), value_of(&key));
        }
        let stats = a.cache.stats();
        let src = stats.source("users").unwrap();
        if want_hot {
            assert!(
                src.stats.hot_promotions >= 1,
                "default staleness keeps a hot copy: {:?}",
                src.stats
            );
            assert!(
                src.stats.peer_loads < 3,
                "a hot copy serves later gets: {:?}",
                src.stats
            );
        } else {
            assert_eq!(
                src.hot_cache.items, 0,
                "staleness 0 keeps no hot copy: {:?}",
                src.hot_cache
            );
            assert_eq!(
                src.stats.peer_loads, 3,
                "each get fetches again: {:?}",
                src.stats
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Peer lists and URLs (guide "Builder methods", "From one node to a cluster")
// ---------------------------------------------------------------------------------------

/// Guide: "`peers(urls)` | every node's URL ...; this node's own is added if missing";
/// `RingTooLarge` counts "distinct peers"; "URLs are compared as strings once their scheme
/// and host are in lower case".
#[test]
fn peers_with_duplicates_and_without_self() {
    let cache = build_ok(
        "duplicates",
        b_among(
            "http://10.0.0.1:8080",
            [
                "http://10.0.0.1:8080",
                "http://10.0.0.2:8080",
                "http://10.0.0.2:8080",
                "HTTP://10.0.0.2:8080",
            ],
        ),
    );
    let stats = cache.stats();
    assert_eq!(stats.cluster.count, 2, "{:?}", stats.cluster);
    assert_eq!(
        cache.ring().points(),
        100,
        "each distinct peer has 50 points"
    );

    let cache = build_ok(
        "self missing from peers",
        b_among(
            "http://10.0.0.9:8080",
            ["http://10.0.0.2:8080", "http://10.0.0.3:8080"],
        ),
    );
    let stats = cache.stats();
    assert_eq!(stats.cluster.count, 3, "{:?}", stats.cluster);
    assert!(
        stats
            .cluster
            .peers
            .contains(&"http://10.0.0.9:8080".to_string()),
        "{:?}",
        stats.cluster
    );

    let cache = build_ok(
        "case",
        b_among(
            "HTTP://Node-1:8080",
            ["http://node-1:8080", "Http://NODE-2:8080"],
        ),
    );
    let stats = cache.stats();
    assert_eq!(
        stats.cluster.self_url.as_deref(),
        Some("http://node-1:8080")
    );
    assert_eq!(stats.cluster.count, 2, "{:?}", stats.cluster);
    assert!(
        stats
            .cluster
            .peers
            .contains(&"http://node-2:8080".to_string()),
        "{:?}",
        stats.cluster
    );
}

/// Guide, "From one node to a cluster": "`http://10.0.0.1:8080` and `http://10.0.0.1:8080/`
/// are two different peers (the builder refuses the trailing `/`)"; `InvalidUrl`: "``invalid
/// peer URL `...`: a peer URL has no path, query or trailing `/` ``".
#[test]
fn trailing_slash_path_and_query_are_refused() {
    let reason = "a peer URL has no path, query or trailing `/`";
    for url in [
        "http://10.0.0.1:8080/",
        "http://10.0.0.1:8080/x",
        "http://10.0.0.1:8080?q=1",
        "http://[::1]:8080/",
    ] {
        let want = format!("invalid peer URL `{url}`: {reason}");
        let e = build_err(&format!("self {url}"), b().self_url(url));
        assert!(matches!(e, ConfigError::InvalidUrl { .. }), "{e:?}");
        assert_eq!(e.to_string(), want);
        let e = build_err(
            &format!("peer {url}"),
            b_among("http://10.0.0.9:8080", [url]),
        );
        assert_eq!(e.to_string(), want);
    }
}

/// `InvalidUrl`'s messages: "an absolute URL is needed, e.g. http://10.0.0.1:8080", "https
/// peers need the `tls` feature and `peer_tls(..)` on the builder", and "..." for not a URL,
/// a scheme other than http, no host, a bad port, user information.
#[test]
fn invalid_url_messages() {
    for url in ["10.0.0.1:8080", "/just/a/path", "node-1"] {
        let e = build_err(url, b().self_url(url));
        assert_eq!(
            e.to_string(),
            format!(
                "invalid peer URL `{url}`: an absolute URL is needed, e.g. http://10.0.0.1:8080"
            )
        );
    }
    let e = build_err("https", b().self_url("https://10.0.0.1:8443"));
    assert_eq!(
        e.to_string(),
        "invalid peer URL `https://10.0.0.1:8443`: https peers need the `tls` feature and `peer_tls(..)` on the builder"
    );
    for url in [
        "ftp://x",
        "http://user:pw@10.0.0.1:8080",
        "http://user@10.0.0.1:8080",
        "http://10.0.0.1:99999",
        "http://",
        "http:///x",
        "http://10.0.0.1:port",
        "",
    ] {
        let e = build_err(url, b().self_url(url));
        match &e {
            ConfigError::InvalidUrl { url: given, .. } => assert_eq!(given, url),
            other => panic!("{url:?}: {other:?} is not InvalidUrl"),
        }
        assert!(
            e.to_string()
                .starts_with(&format!("invalid peer URL `{url}`: ")),
            "{e}"
        );
    }
}

/// Guide: "`self_url(url)` ... `http://host:port` ..."; nodes bind [::1]: an IPv6 loopback
/// cluster works, and its URL's scheme is lowered.
#[tokio::test]
async fn ipv6_loopback_cluster() {
    let mut ls = Vec::new();
    for _ in 0..2 {
        match tokio::net::TcpListener::bind("[::1]:0").await {
            Ok(l) => ls.push(l),
            Err(e) => {
                crate::support::node_process::stderr_line(&format!(
                    "doc_promises_config: no [::1] ({e}); skipped"
                ));
                return;
            }
        }
    }
    let urls: Vec<String> = ls
        .iter()
        .map(|l| format!("http://{}", l.local_addr().unwrap()))
        .collect();
    assert!(urls[0].starts_with("http://[::1]:"), "{urls:?}");
    let loads = Loads::default();
    let mut nodes = Vec::new();
    for l in ls {
        nodes.push(start_node(l, &urls, &loads, |b| b).await);
    }
    let key = keys_owned_by(&nodes[0].cache, &urls[1], "v6-", 1).remove(0);
    assert_eq!(
        nodes[0].handle().get("users", &key).await.unwrap(),
        value_of(&key)
    );
    assert_eq!(
        loads.of(&key),
        vec![urls[1].clone()],
        "the owner on [::1] loaded it"
    );
    assert_eq!(nodes[0].stats("users").peer_loads, 1);
    let upper = urls[1].replace("http://", "HTTP://");
    let cache = build_ok("upper-case v6", b().self_url(upper));
    assert_eq!(
        cache.stats().cluster.self_url.as_deref(),
        Some(urls[1].as_str())
    );
}

// ---------------------------------------------------------------------------------------
// ConfigError: each variant with its documented input and message
// ---------------------------------------------------------------------------------------

/// `MissingSelfUrl`: "``peers were given but no self URL: call `self_url(..)` ``".
#[test]
fn missing_self_url_message() {
    let e = build_err(
        "peers without self",
        b().peers(["http://10.0.0.2:8080"]).peer_secret(SECRET),
    );
    assert_eq!(e, ConfigError::MissingSelfUrl);
    assert_eq!(
        e.to_string().trim_end(),
        "peers were given but no self URL: call `self_url(..)`"
    );
}

/// `PeerAuthRequired`: "A node with peers needs a peer secret or `open_peer_path()`".
#[test]
fn peer_auth_required_message() {
    let cluster = || {
        b().self_url("http://10.0.0.1:8080")
            .peers(["http://10.0.0.2:8080"])
    };
    let e = build_err("no secret", cluster());
    assert_eq!(e, ConfigError::PeerAuthRequired);
    assert_eq!(
        e.to_string(),
        "peers are configured without a peer secret: set `peer_secret(..)`, or call `open_peer_path()` to serve peers without authentication (as golang/groupcache does)"
    );
    build_ok("secret", cluster().peer_secret(SECRET));
    build_ok("open", cluster().open_peer_path());
}

/// `ShortPeerSecret`: "the current peer secret has 6 bytes; at least 32 are needed: use 32 or
/// more random bytes (or `previous`)"; `peer_secret` "at least `MIN_PEER_SECRET_BYTES` (32)".
#[test]
fn short_peer_secret_messages() {
    let e = build_err("6 bytes", b().peer_secret("abcdef"));
    assert_eq!(
        e,
        ConfigError::ShortPeerSecret {
            previous: false,
            len: 6
        }
    );
    assert_eq!(
        e.to_string(),
        "the current peer secret has 6 bytes; at least 32 are needed: use 32 or more random bytes"
    );
    let e = build_err("31 bytes", b().peer_secret(vec![b'x'; 31]));
    assert_eq!(
        e,
        ConfigError::ShortPeerSecret {
            previous: false,
            len: 31
        }
    );
    let e = build_err("empty", b().peer_secret(""));
    assert_eq!(
        e,
        ConfigError::ShortPeerSecret {
            previous: false,
            len: 0
        }
    );
    build_ok("32 bytes", b().peer_secret(vec![b'x'; 32]));
    let e = build_err(
        "previous 6",
        b().peer_secret(SECRET).previous_peer_secret("abcdef"),
    );
    assert_eq!(
        e,
        ConfigError::ShortPeerSecret {
            previous: true,
            len: 6
        }
    );
    assert_eq!(
        e.to_string(),
        "the previous peer secret has 6 bytes; at least 32 are needed: use 32 or more random bytes"
    );
    build_ok(
        "previous 32",
        b().peer_secret(SECRET).previous_peer_secret(vec![b'p'; 32]),
    );
}

/// `PreviousPeerSecretOnly`: "``a previous peer secret was given without a current one: set
/// `peer_secret(..)`; a previous secret is only accepted, never used to sign``".
#[test]
fn previous_peer_secret_only_message() {
    let e = build_err("previous alone", b().previous_peer_secret(SECRET));
    assert_eq!(e, ConfigError::PreviousPeerSecretOnly);
    assert_eq!(
        e.to_string(),
        "a previous peer secret was given without a current one: set `peer_secret(..)`; a previous secret is only accepted, never used to sign"
    );
}

/// `InvalidBasePath` and `base_path`: "Starts and ends with `/`, is not `/` itself, has no
/// empty, `.` or `..` segment, and only visible ASCII without `?`, `#`, `%`".
#[test]
fn invalid_base_path_messages() {
    let e = build_err("/", b().base_path("/"));
    assert_eq!(
        e.to_string(),
        "invalid base path `/`: every request would be a peer request; use a path of its own, e.g. /_groupcache/"
    );
    for path in ["cache/", "/cache", "cache", ""] {
        let e = build_err(path, b().base_path(path));
        assert!(
            matches!(&e, ConfigError::InvalidBasePath { path: p, .. } if p == path),
            "{e:?}"
        );
        assert_eq!(
            e.to_string().trim_end(),
            format!("invalid base path `{path}`: it must start and end with `/`")
        );
    }
    for path in ["/a/./", "/a/../", "/./", "/../", "/a/../b/"] {
        let e = build_err(path, b().base_path(path));
        assert_eq!(
            e.to_string(),
            format!(
                "invalid base path `{path}`: it has a `.` or `..` segment, which a client or proxy may resolve away"
            )
        );
    }
    for path in [
        "//",
        "/a//b/",
        "/a b/",
        "/a?b/",
        "/a#b/",
        "/a%41/",
        "/é/",
        "/a\tb/",
        "/a\u{7f}/",
    ] {
        let e = build_err(&format!("{path:?}"), b().base_path(path));
        assert!(
            matches!(&e, ConfigError::InvalidBasePath { path: p, .. } if p == path),
            "{path:?}: {e:?}"
        );
        assert!(
            e.to_string()
                .starts_with(&format!("invalid base path `{path}`: ")),
            "{e}"
        );
    }
    for path in [
        "/_groupcache/",
        "/cache/",
        "/a/b/c/",
        "/a.b/",
        "/-_~!$&'()*+,;=:@/",
        "/.well/",
    ] {
        build_ok(path, b().base_path(path));
    }
}

/// `base_path`: "the same on every node": a cluster on another base path serves its peers
/// there, and the default path is then not the layer's.
#[tokio::test]
async fn custom_base_path_cluster() {
    for base in ["/cache/", "/cache/v1/"] {
        let loads = Loads::default();
        let nodes = crate::support::cluster(2, &loads, |b| b.base_path(base)).await;
        let (a, owner) = (&nodes[0], &nodes[1].url);
        let key = keys_owned_by(&a.cache, owner, "bp-", 1).remove(0);
        assert_eq!(a.handle().get("users", &key).await.unwrap(), value_of(&key));
        assert_eq!(
            loads.of(&key),
            vec![owner.clone()],
            "{base}: the owner loaded it"
        );
        assert_eq!(nodes[1].stats("users").server_requests, 1, "{base}");
        let (status, headers, _) = request("GET", &format!("{owner}{base}users/other")).await;
        assert_eq!(status, 200, "{base}");
        assert!(headers.contains_key("x-groupcache-extensions"));
        let (status, headers, _) =
            request("GET", &format!("{owner}/_groupcache/users/other")).await;
        assert_eq!(status, 404, "{base}: the default path is not the layer's");
        assert!(!headers.contains_key("x-groupcache-extensions"), "{base}");
    }
}

/// `DuplicateSource`: "``data source `...` is registered more than once``";
/// `InvalidSourceName`: "``data source name `...` is invalid: it must be non-empty and contain
/// no `/` ``".
#[test]
fn source_name_messages() {
    let e = build_err("twice", b().source("users", echo));
    assert_eq!(e, ConfigError::DuplicateSource("users".into()));
    assert_eq!(
        e.to_string(),
        "data source `users` is registered more than once"
    );
    for name in ["", "a/b", "/"] {
        let e = build_err(name, Groupcache::builder().source(name, echo));
        assert_eq!(e, ConfigError::InvalidSourceName(name.into()));
        assert_eq!(
            e.to_string().trim_end(),
            format!(
                "data source name `{name}` is invalid: it must be non-empty and contain no `/`"
            )
        );
    }
    build_ok(
        "a name with a space",
        Groupcache::builder().source("a b", echo),
    );
}

/// `ZeroReplicas`: "ring replicas must be at least 1"; `TooManyReplicas`: "ring replicas 60000
/// is above the maximum of 10000"; "1 to `MAX_REPLICAS` (10,000)".
#[test]
fn replicas_limits() {
    let e = build_err("0", b().replicas(0));
    assert_eq!(e, ConfigError::ZeroReplicas);
    assert_eq!(e.to_string(), "ring replicas must be at least 1");
    let e = build_err("60000", b().replicas(60_000));
    assert_eq!(e, ConfigError::TooManyReplicas(60_000));
    assert_eq!(
        e.to_string(),
        "ring replicas 60000 is above the maximum of 10000"
    );
    let e = build_err("10001", b().replicas(10_001));
    assert_eq!(e, ConfigError::TooManyReplicas(10_001));
    let e = build_err(
        "usize::MAX",
        b().replicas(usize::MAX).self_url("http://10.0.0.1:1"),
    );
    assert_eq!(e, ConfigError::TooManyReplicas(usize::MAX));
    let one = build_ok("1", b().replicas(1).self_url("http://10.0.0.1:1"));
    assert_eq!(one.ring().points(), 1);
    let max = build_ok("10000", b().replicas(10_000).self_url("http://10.0.0.1:1"));
    assert_eq!(max.ring().points(), 10_000);
}

/// `RingTooLarge`: "``a ring of 20001 peers with 50 replicas each would have 1000050 points,
/// above the maximum of 1000000: lower `replicas` ``"; peers × replicas at most 1,000,000;
/// duplicates count once.
#[test]
fn ring_too_large_at_the_edge() {
    let mut peers = peer_urls(20_001);
    let self_url = peers[0].clone();
    let e = build_err("20001 peers", b_among(self_url.clone(), peers.clone()));
    assert_eq!(
        e,
        ConfigError::RingTooLarge {
            peers: 20_001,
            replicas: 50
        }
    );
    assert_eq!(
        e.to_string().trim_end(),
        "a ring of 20001 peers with 50 replicas each would have 1000050 points, above the maximum of 1000000: lower `replicas`"
    );
    // 20,000 distinct peers (the last one repeated): exactly the maximum.
    peers[20_000] = peers[1].clone();
    let cache = build_ok("20000 distinct peers", b_among(self_url, peers));
    // crc32 collisions merge a few of the 1,000,000 points ("the peer added later wins").
    assert!(cache.ring().points() <= MAX_RING_POINTS);
    assert_eq!(cache.stats().cluster.count, 20_000);
}

/// `TooManyPeers`: "a balanced ring holds at most 2232 peers, not 2300: split the cluster into
/// independent groups (see docs/scaling.md)"; `ring(kind)`: "`Balanced` ... at most 2,232
/// peers; `replicas` does not apply".
#[test]
fn balanced_ring_peer_limit() {
    let balanced = |n: usize| {
        let peers = peer_urls(n);
        b().ring(RingKind::Balanced)
            .self_url(peers[0].clone())
            .peers(peers)
            .peer_secret(SECRET)
    };
    let e = build_err("2300", balanced(2300));
    assert_eq!(
        e,
        ConfigError::TooManyPeers {
            peers: 2300,
            max: 2232
        }
    );
    assert_eq!(
        e.to_string(),
        "a balanced ring holds at most 2232 peers, not 2300: split the cluster into independent groups (see docs/scaling.md)"
    );
    let e = build_err("2233", balanced(2233));
    assert_eq!(
        e,
        ConfigError::TooManyPeers {
            peers: 2233,
            max: 2232
        }
    );
    let cache = build_ok("2232", balanced(2232));
    assert_eq!(cache.ring().kind(), RingKind::Balanced);
    assert_eq!(cache.stats().cluster.count, 2232);
    // replicas does not apply to the balanced ring.
    build_ok("balanced, replicas 10000", balanced(200).replicas(10_000));
}

/// `ZeroLimit`: "`peer timeout must be greater than zero` (also `connect timeout`, `peer idle
/// timeout`, `max key bytes`, `max value bytes`)"; `max_connections_per_peer` "0 is refused";
/// `max_batch_keys` "from 1" (`ZeroLimit`).
#[test]
fn zero_limit_messages() {
    let cases: Vec<(&str, GroupcacheBuilder)> = vec![
        ("peer timeout", b().peer_timeout(Duration::ZERO)),
        ("connect timeout", b().connect_timeout(Duration::ZERO)),
        ("peer idle timeout", b().peer_idle_timeout(Duration::ZERO)),
        ("max key bytes", b().max_key_bytes(0)),
        ("max value bytes", b().max_value_bytes(0)),
    ];
    for (what, builder) in cases {
        let e = build_err(what, builder);
        assert!(matches!(e, ConfigError::ZeroLimit(_)), "{what}: {e:?}");
        assert_eq!(e.to_string(), format!("{what} must be greater than zero"));
    }
    let e = build_err("max_batch_keys 0", b().max_batch_keys(0));
    assert!(matches!(e, ConfigError::ZeroLimit(_)), "{e:?}");
    assert!(e.to_string().ends_with("must be greater than zero"), "{e}");
    let e = build_err(
        "max_connections_per_peer 0",
        b().max_connections_per_peer(0),
    );
    assert!(
        e.to_string().ends_with("must be greater than zero"),
        "{e:?}: {e}"
    );
}

/// `TooManyBatchKeys`: "max batch keys 200000 is above the maximum of 100000"; "1 to 100,000".
#[test]
fn max_batch_keys_limits() {
    let e = build_err("200000", b().max_batch_keys(200_000));
    assert_eq!(e, ConfigError::TooManyBatchKeys(200_000));
    assert_eq!(
        e.to_string(),
        "max batch keys 200000 is above the maximum of 100000"
    );
    assert_eq!(
        build_err("100001", b().max_batch_keys(100_001)),
        ConfigError::TooManyBatchKeys(100_001)
    );
    assert_eq!(
        build_err("usize::MAX", b().max_batch_keys(usize::MAX)),
        ConfigError::TooManyBatchKeys(usize::MAX)
    );
    build_ok("1", b().max_batch_keys(1));
    build_ok("100000", b().max_batch_keys(100_000));
}

/// `ConnectTimeoutAbovePeerTimeout`: "``the connect timeout 2s is longer than the peer timeout
/// 1s, which bounds the whole peer fetch: lower `connect_timeout` or raise `peer_timeout` ``".
#[test]
fn connect_timeout_above_peer_timeout_message() {
    let e = build_err(
        "2s > 1s",
        b().peer_timeout(Duration::from_secs(1))
            .connect_timeout(Duration::from_secs(2)),
    );
    assert_eq!(
        e,
        ConfigError::ConnectTimeoutAbovePeerTimeout {
            connect: Duration::from_secs(2),
            peer: Duration::from_secs(1)
        }
    );
    assert_eq!(
        e.to_string().trim_end(),
        "the connect timeout 2s is longer than the peer timeout 1s, which bounds the whole peer fetch: lower `connect_timeout` or raise `peer_timeout`"
    );
    let e = build_err("MAX > default", b().connect_timeout(Duration::MAX));
    assert!(
        matches!(e, ConfigError::ConnectTimeoutAbovePeerTimeout { .. }),
        "{e:?}"
    );
    no_panic("Display of Duration::MAX", || e.to_string());
    build_ok(
        "MAX = MAX",
        b().peer_timeout(Duration::MAX)
            .connect_timeout(Duration::MAX),
    );
    build_ok("peer MAX alone", b().peer_timeout(Duration::MAX));
}

/// `InvalidHotCacheFraction`: "hot cache fraction 1.5 is not between 0 and 1"; "from 0 to 1;
/// anything else, NaN included, is refused".
#[test]
fn hot_cache_fraction_refusals() {
    let e = build_err("1.5", b().hot_cache_fraction(1.5));
    assert!(
        matches!(e, ConfigError::InvalidHotCacheFraction(_)),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "hot cache fraction 1.5 is not between 0 and 1"
    );
    for f in [
        f64::NAN,
        -0.1,
        1.000_001,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MIN_POSITIVE - 1.0,
    ] {
        let e = build_err(&format!("{f}"), b().hot_cache_fraction(f));
        assert!(
            matches!(e, ConfigError::InvalidHotCacheFraction(_)),
            "{f}: {e:?}"
        );
    }
    for f in [0.0, -0.0, f64::MIN_POSITIVE, 0.999_999, 1.0] {
        build_ok(&format!("{f}"), b().hot_cache_fraction(f));
    }
}

/// `InvalidHotKeyRate`: "``hot key rate NaN is not a number of requests per second from 0 up:
/// use a finite rate, or `HotKeys::Never` to keep no hot copies``".
#[test]
fn hot_key_rate_refusals() {
    let e = build_err("NaN", b().hot_keys(HotKeys::AboveQps(f64::NAN)));
    assert!(matches!(e, ConfigError::InvalidHotKeyRate(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "hot key rate NaN is not a number of requests per second from 0 up: use a finite rate, or `HotKeys::Never` to keep no hot copies"
    );
    for r in [-1.0, -f64::MIN_POSITIVE, f64::INFINITY, f64::NEG_INFINITY] {
        let e = build_err(&format!("{r}"), b().hot_keys(HotKeys::AboveQps(r)));
        assert!(matches!(e, ConfigError::InvalidHotKeyRate(_)), "{r}: {e:?}");
    }
    for r in [0.0, f64::MAX, 1e-300] {
        build_ok(&format!("{r}"), b().hot_keys(HotKeys::AboveQps(r)));
    }
    build_ok("Never", b().hot_keys(HotKeys::Never));
}

/// `InvalidPeerHealth`: "peer health: the cooldown must be greater than zero (a failure
/// threshold of 0 turns skipping off)", "peer health: the cooldown is longer than the maximum
/// cooldown".
#[test]
fn peer_health_refusals() {
    let zero = PeerHealthConfig::default().cooldown(Duration::ZERO);
    let e = build_err("zero cooldown", b().peer_health(zero));
    assert!(matches!(e, ConfigError::InvalidPeerHealth(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "peer health: the cooldown must be greater than zero (a failure threshold of 0 turns skipping off)"
    );
    let long = PeerHealthConfig::default().cooldown(Duration::from_secs(31));
    let e = build_err("cooldown above max", b().peer_health(long));
    assert_eq!(
        e.to_string(),
        "peer health: the cooldown is longer than the maximum cooldown"
    );
    build_ok(
        "threshold 0, zero cooldown",
        b().peer_health(zero.failure_threshold(0)),
    );
    build_ok(
        "cooldown = max",
        b().peer_health(
            PeerHealthConfig::default()
                .cooldown(Duration::MAX)
                .max_cooldown(Duration::MAX),
        ),
    );
}

/// `Tls`: "`peer TLS: ...` | the certificates or keys given to `peer_tls` could not be used".
#[cfg(feature = "tls")]
#[test]
fn tls_error_message() {
    for pem in [
        &b"not a pem"[..],
        b"",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ] {
        let r = no_panic("PeerTls::from_pem", || {
            tower_groupcache::PeerTls::from_pem(pem)
        });
        let e = r.expect_err("unusable PEM is refused");
        assert!(matches!(e, ConfigError::Tls(_)), "{e:?}");
        assert!(e.to_string().starts_with("peer TLS: "), "{e}");
    }
}

/// `NoRuntime`: "this must be called inside a tokio runtime" (`discover` and
/// `export_metrics`).
#[test]
fn no_runtime_message() {
    let cache = build_ok(
        "self",
        b().self_url("http://127.0.0.1:1").peer_secret(SECRET),
    );
    let e = no_panic("export_metrics outside a runtime", || {
        cache.export_metrics(Duration::from_secs(1))
    })
    .expect_err("outside a runtime");
    assert_eq!(e, ConfigError::NoRuntime);
    assert_eq!(e.to_string(), "this must be called inside a tokio runtime");
    let e = no_panic("discover outside a runtime", || {
        cache.discover(tower_groupcache::DnsDiscovery::new("localhost", 1))
    })
    .expect_err("outside a runtime");
    assert_eq!(e, ConfigError::NoRuntime);
}

// ---------------------------------------------------------------------------------------
// Limits at their largest: "no value it accepts, up to `u64::MAX`, `usize::MAX` or
// `Duration::MAX`, makes a get, a peer fetch, the stats or the metrics panic or hang"
// ---------------------------------------------------------------------------------------

async fn remote_get_stats_metrics(
    configure: impl Fn(GroupcacheBuilder) -> GroupcacheBuilder,
    what: &str,
) {
    let loads = Loads::default();
    let nodes = crate::support::cluster(2, &loads, configure).await;
    let (a, owner) = (&nodes[0], nodes[1].url.clone());
    let keys = keys_owned_by(&a.cache, &owner, "big-", 3);
    let handle = a.handle();
    let got = tokio::time::timeout(DEADLINE, handle.get("users", &keys[0])).await;
    let got = got.unwrap_or_else(|_| panic!("{what}: a remote get hung for {DEADLINE:?}"));
    assert_eq!(got.unwrap(), value_of(&keys[0]), "{what}");
    let many = tokio::time::timeout(DEADLINE, handle.get_many("users", &keys[1..]))
        .await
        .unwrap_or_else(|_| panic!("{what}: get_many hung"))
        .unwrap();
    assert!(many.iter().all(|r| r.is_ok()), "{what}: {many:?}");
    let local = keys_owned_by(&a.cache, &a.url, "own-", 1).remove(0);
    tokio::time::timeout(DEADLINE, handle.get("users", &local))
        .await
        .expect("local get")
        .unwrap();
    let stats = no_panic("stats", || a.cache.stats());
    assert!(stats.source("users").unwrap().stats.gets >= 2);
    no_panic("record_metrics", || a.cache.record_metrics());
    let shutdown = tokio::time::timeout(DEADLINE, a.cache.shutdown()).await;
    let shutdown =
        shutdown.unwrap_or_else(|_| panic!("{what}: shutdown with nothing in flight hung"));
    assert!(shutdown.is_complete(), "{what}");
}

#[tokio::test]
async fn largest_connection_and_batching_settings_do_not_hang() {
    remote_get_stats_metrics(
        |b| {
            b.max_connections_per_peer(usize::MAX)
                .natural_batching(usize::MAX)
                .max_batch_keys(100_000)
                .shutdown_timeout(Duration::MAX)
                .peer_idle_timeout(Duration::MAX)
                .peer_timeout(Duration::MAX)
                .connect_timeout(Duration::MAX)
                .max_value_bytes(usize::MAX)
                .max_key_bytes(usize::MAX)
                .cache_bytes(u64::MAX)
                .hot_max_staleness(Duration::MAX)
        },
        "largest limits",
    )
    .await;
}

/// Guide: "`natural_batching_wait(d)` | 0 | how long a get that could go at once waits for
/// others to join its request"; and "no value it accepts, up to ... `Duration::MAX`, makes a
/// get ... hang".
#[tokio::test]
async fn natural_batching_wait_max_does_not_hang_a_get() {
    remote_get_stats_metrics(
        |b| b.natural_batching_wait(Duration::MAX),
        "natural_batching_wait(Duration::MAX)",
    )
    .await;
}

#[tokio::test]
async fn smallest_connection_and_batching_settings_work() {
    remote_get_stats_metrics(
        |b| {
            b.max_connections_per_peer(1)
                .natural_batching(0)
                .natural_batching_wait(Duration::ZERO)
                .shutdown_timeout(Duration::ZERO)
                .max_batch_keys(1)
                .replicas(1)
        },
        "smallest limits",
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// from_env (guide "Environment variables"; rustdoc of `GroupcacheBuilder::from_env`)
// ---------------------------------------------------------------------------------------

/// "unset variables keep the defaults"; "`GROUPCACHE_PEER_URLS` ... unset or empty: this node
/// alone (single-node mode without a self URL)".
#[test]
fn from_env_unset_keeps_the_defaults() {
    // A prefix nobody sets: the real environment, read through `from_env`.
    let builder = no_panic("from_env", || {
        GroupcacheBuilder::from_env("DOC_PROMISES_CONFIG_UNSET_7F3A")
    })
    .expect("nothing set is fine");
    let cache = build_ok("from_env defaults", builder.source("users", echo));
    let stats = cache.stats();
    assert_eq!(stats.cluster.count, 0);
    let (main, hot) = capacities(&cache);
    assert_eq!((main + hot, hot), (64 << 20, 8 << 20));
    let cache = build_ok(
        "lookup, nothing",
        env_b(&[]).self_url("http://10.0.0.1:1").peer_secret(SECRET),
    );
    assert_eq!(cache.ring().replicas(), 50);
    assert_eq!(cache.ring().kind(), RingKind::Golang);
    let cache = build_ok("empty peers", env_b(&[("GROUPCACHE_PEER_URLS", "")]));
    assert_eq!(
        cache.stats().cluster.count,
        0,
        "empty PEER_URLS without self: single-node"
    );
    let cache = build_ok(
        "self, empty peers",
        env_b(&[
            ("GROUPCACHE_PEER_URLS", "  "),
            ("GROUPCACHE_SELF_URL", "http://10.0.0.1:1"),
        ]),
    );
    assert_eq!(
        cache.stats().cluster.count,
        1,
        "empty PEER_URLS with self: this node alone"
    );
}

/// Every variable of the table parsed as documented, its effect observed.
#[test]
fn from_env_every_variable_is_parsed() {
    let vars = [
        ("GROUPCACHE_SELF_URL", "http://10.0.0.1:8080"),
        (
            "GROUPCACHE_PEER_URLS",
            "http://10.0.0.1:8080,http://10.0.0.2:8080,http://10.0.0.3:8080",
        ),
        ("GROUPCACHE_BASE_PATH", "/gc/"),
        ("GROUPCACHE_CACHE_BYTES", "1000"),
        ("GROUPCACHE_REPLICAS", "7"),
        ("GROUPCACHE_PEER_TIMEOUT_MS", "3000"),
        ("GROUPCACHE_CONNECT_TIMEOUT_MS", "3000"),
        ("GROUPCACHE_PEER_IDLE_TIMEOUT_MS", "1"),
        ("GROUPCACHE_SHUTDOWN_TIMEOUT_MS", "0"),
        ("GROUPCACHE_MAX_CONNECTIONS_PER_PEER", "1"),
        ("GROUPCACHE_MAX_BATCH_KEYS", "100000"),
        ("GROUPCACHE_NATURAL_BATCHING", "0"),
        ("GROUPCACHE_NATURAL_BATCHING_WAIT_MS", "0"),
        ("GROUPCACHE_PEER_SECRET", SECRET),
        (
            "GROUPCACHE_PEER_SECRET_PREVIOUS",
            "another secret of 32 or more bytes, still accepted",
        ),
        ("GROUPCACHE_OPEN_PEER_PATH", "false"),
    ];
    let cache = build_ok("every variable", env_b(&vars));
    let stats = cache.stats();
    assert_eq!(
        stats.cluster.self_url.as_deref(),
        Some("http://10.0.0.1:8080")
    );
    assert_eq!(stats.cluster.count, 3);
    assert_eq!(cache.ring().replicas(), 7);
    assert_eq!(cache.ring().points(), 21);
    assert_eq!(capacities(&cache).0 + capacities(&cache).1, 1000);
    // The timeouts are milliseconds: the connect timeout 3001 ms is refused above 3 s.
    let mut above = vars.to_vec();
    above.push(("GROUPCACHE_CONNECT_TIMEOUT_MS", "3001"));
    let e = build_err("connect above peer", env_b(&above[..]));
    assert_eq!(
        e,
        ConfigError::ConnectTimeoutAbovePeerTimeout {
            connect: Duration::from_millis(3001),
            peer: Duration::from_secs(3)
        }
    );
    // The secret is what lets peers build without an open peer path.
    let no_secret: Vec<_> = vars
        .iter()
        .copied()
        .filter(|(k, _)| !k.starts_with("GROUPCACHE_PEER_SECRET"))
        .collect();
    assert_eq!(
        build_err("no secret", env_b(&no_secret)),
        ConfigError::PeerAuthRequired
    );
}

/// The guide's and rustdoc's `ConfigError::Env` examples: "``environment variable
/// GROUPCACHE_CACHE_BYTES: `64MiB` is not a whole number``", "`environment variable
/// GROUPCACHE_REPLICAS: ring replicas must be at least 1` (any message above, after the
/// variable's name)".
#[test]
fn from_env_documented_error_messages() {
    let e = from_vars_err(&[("GROUPCACHE_CACHE_BYTES", "64MiB")]);
    assert!(
        matches!(&e, ConfigError::Env { variable, .. } if variable == "GROUPCACHE_CACHE_BYTES"),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "environment variable GROUPCACHE_CACHE_BYTES: `64MiB` is not a whole number"
    );
    for (var, value, expected) in [
        (
            "GROUPCACHE_REPLICAS",
            "0",
            "environment variable GROUPCACHE_REPLICAS: ring replicas must be at least 1",
        ),
        (
            "GROUPCACHE_REPLICAS",
            "10001",
            "environment variable GROUPCACHE_REPLICAS: ring replicas 10001 is above the maximum of 10000",
        ),
        (
            "GROUPCACHE_PEER_SECRET",
            "abcdef",
            "environment variable GROUPCACHE_PEER_SECRET: the current peer secret has 6 bytes; at least 32 are needed: use 32 or more random bytes",
        ),
        (
            "GROUPCACHE_BASE_PATH",
            "/",
            "environment variable GROUPCACHE_BASE_PATH: invalid base path `/`: every request would be a peer request; use a path of its own, e.g. /_groupcache/",
        ),
        // "(any message above, after the variable's name)", for a bound of the table.
        (
            "GROUPCACHE_MAX_BATCH_KEYS",
            "100001",
            "environment variable GROUPCACHE_MAX_BATCH_KEYS: max batch keys 100001 is above the maximum of 100000",
        ),
    ] {
        assert_eq!(from_vars_err(&[(var, value)]).to_string(), expected);
    }
    for (var, what) in [
        ("GROUPCACHE_PEER_TIMEOUT_MS", "peer timeout"),
        ("GROUPCACHE_CONNECT_TIMEOUT_MS", "connect timeout"),
        ("GROUPCACHE_PEER_IDLE_TIMEOUT_MS", "peer idle timeout"),
    ] {
        assert_eq!(
            from_vars_err(&[(var, "0")]).to_string(),
            format!("environment variable {var}: {what} must be greater than zero")
        );
    }
}

/// "A value that does not parse or is out of range (the bounds in the table, a base path
/// `base_path` refuses) is a `ConfigError::Env` that names the variable" - never a panic.
#[test]
fn from_env_bad_values_are_env_errors() {
    let bad: &[(&str, &str)] = &[
        ("GROUPCACHE_CACHE_BYTES", "-1"),
        ("GROUPCACHE_CACHE_BYTES", "18446744073709551616"),
        ("GROUPCACHE_CACHE_BYTES", "1e6"),
        ("GROUPCACHE_CACHE_BYTES", "0x10"),
        ("GROUPCACHE_CACHE_BYTES", "1_000"),
        ("GROUPCACHE_REPLICAS", "0"),
        ("GROUPCACHE_REPLICAS", "10001"),
        ("GROUPCACHE_REPLICAS", "99999999999999999999999999"),
        ("GROUPCACHE_REPLICAS", "fifty"),
        ("GROUPCACHE_REPLICAS", "5 0"),
        ("GROUPCACHE_RING", "ketama"),
        ("GROUPCACHE_RING", "golang2"),
        ("GROUPCACHE_PEER_TIMEOUT_MS", "0"),
        ("GROUPCACHE_PEER_TIMEOUT_MS", "-5"),
        ("GROUPCACHE_PEER_TIMEOUT_MS", "1.5"),
        ("GROUPCACHE_PEER_TIMEOUT_MS", "18446744073709551616"),
        ("GROUPCACHE_PEER_TIMEOUT_MS", "5s"),
        ("GROUPCACHE_CONNECT_TIMEOUT_MS", "0"),
        ("GROUPCACHE_CONNECT_TIMEOUT_MS", "x"),
        ("GROUPCACHE_PEER_IDLE_TIMEOUT_MS", "0"),
        ("GROUPCACHE_PEER_IDLE_TIMEOUT_MS", "-1"),
        ("GROUPCACHE_SHUTDOWN_TIMEOUT_MS", "soon"),
        ("GROUPCACHE_SHUTDOWN_TIMEOUT_MS", "-1"),
        ("GROUPCACHE_MAX_CONNECTIONS_PER_PEER", "0"),
        ("GROUPCACHE_MAX_CONNECTIONS_PER_PEER", "-1"),
        (
            "GROUPCACHE_MAX_CONNECTIONS_PER_PEER",
            "99999999999999999999999999",
        ),
        ("GROUPCACHE_MAX_BATCH_KEYS", "0"),
        ("GROUPCACHE_MAX_BATCH_KEYS", "100001"),
        ("GROUPCACHE_MAX_BATCH_KEYS", "18446744073709551615"),
        ("GROUPCACHE_MAX_BATCH_KEYS", "1e3"),
        ("GROUPCACHE_NATURAL_BATCHING", "on"),
        ("GROUPCACHE_NATURAL_BATCHING", "-1"),
        ("GROUPCACHE_NATURAL_BATCHING_WAIT_MS", "1ms"),
        ("GROUPCACHE_NATURAL_BATCHING_WAIT_MS", "-1"),
        ("GROUPCACHE_PEER_SECRET", "short"),
        ("GROUPCACHE_PEER_SECRET_PREVIOUS", "short"),
        ("GROUPCACHE_OPEN_PEER_PATH", "maybe"),
        ("GROUPCACHE_OPEN_PEER_PATH", "2"),
        ("GROUPCACHE_BASE_PATH", "cache/"),
        ("GROUPCACHE_BASE_PATH", "/a/../"),
        ("GROUPCACHE_BASE_PATH", "//"),
        ("GROUPCACHE_BASE_PATH", "/a b/"),
    ];
    let mut wrong = Vec::new();
    for (var, value) in bad {
        match from_vars(&[(var, value)]) {
            Ok(builder) => {
                let then = match build("after from_env", builder.source("users", echo)) {
                    Ok(_) => "build() accepts it too".to_string(),
                    Err(e) => format!(
                        "build() then refuses it with {e:?} (\"{e}\"), not naming the variable"
                    ),
                };
                wrong.push(format!("{var}={value:?}: accepted by from_env; {then}"))
            }
            Err(ConfigError::Env { variable, reason }) => {
                if variable != *var {
                    wrong.push(format!("{var}={value:?}: names {variable}"));
                }
                let shown = ConfigError::Env {
                    variable: variable.clone(),
                    reason: reason.clone(),
                }
                .to_string();
                if !shown.starts_with(&format!("environment variable {var}: ")) {
                    wrong.push(format!("{var}={value:?}: message {shown:?}"));
                }
            }
            Err(other) => wrong.push(format!(
                "{var}={value:?}: {other:?} is not ConfigError::Env"
            )),
        }
    }
    assert!(
        wrong.is_empty(),
        "bad values not refused as documented:\n{}",
        wrong.join("\n")
    );
}

/// Values at their edges are accepted: "`cache_bytes` ... any `u64`", milliseconds up to
/// `u64::MAX`, `REPLICAS` 1 and 10,000, `MAX_BATCH_KEYS` 1 and 100,000.
#[test]
fn from_env_edge_values_are_accepted() {
    let ok: &[(&str, &str)] = &[
        ("GROUPCACHE_CACHE_BYTES", "0"),
        ("GROUPCACHE_CACHE_BYTES", "18446744073709551615"),
        ("GROUPCACHE_REPLICAS", "1"),
        ("GROUPCACHE_REPLICAS", "10000"),
        ("GROUPCACHE_PEER_TIMEOUT_MS", "18446744073709551615"),
        ("GROUPCACHE_PEER_TIMEOUT_MS", "1"),
        ("GROUPCACHE_PEER_IDLE_TIMEOUT_MS", "18446744073709551615"),
        ("GROUPCACHE_SHUTDOWN_TIMEOUT_MS", "18446744073709551615"),
        ("GROUPCACHE_SHUTDOWN_TIMEOUT_MS", "0"),
        ("GROUPCACHE_MAX_CONNECTIONS_PER_PEER", "1"),
        (
            "GROUPCACHE_MAX_CONNECTIONS_PER_PEER",
            "18446744073709551615",
        ),
        ("GROUPCACHE_MAX_BATCH_KEYS", "1"),
        ("GROUPCACHE_MAX_BATCH_KEYS", "100000"),
        ("GROUPCACHE_NATURAL_BATCHING", "0"),
        ("GROUPCACHE_NATURAL_BATCHING", "18446744073709551615"),
        (
            "GROUPCACHE_NATURAL_BATCHING_WAIT_MS",
            "18446744073709551615",
        ),
        ("GROUPCACHE_PEER_SECRET", "0123456789abcdef0123456789abcdef"),
        ("GROUPCACHE_BASE_PATH", "/cache/v1/"),
    ];
    let mut wrong = Vec::new();
    for (var, value) in ok {
        match from_vars(&[(var, value)]) {
            Err(e) => wrong.push(format!("{var}={value}: from_env refused: {e}")),
            Ok(builder) => {
                if let Err(e) = build(&format!("{var}={value}"), builder.source("users", echo)) {
                    wrong.push(format!("{var}={value}: build refused: {e}"));
                }
            }
        }
    }
    // The connect timeout at u64::MAX ms needs a peer timeout as long.
    let both = [
        ("GROUPCACHE_PEER_TIMEOUT_MS", "18446744073709551615"),
        ("GROUPCACHE_CONNECT_TIMEOUT_MS", "18446744073709551615"),
    ];
    if let Err(e) = from_vars(&both).and_then(|b| build("both MAX", b.source("users", echo))) {
        wrong.push(format!("{both:?}: {e}"));
    }
    assert!(
        wrong.is_empty(),
        "edge values refused:\n{}",
        wrong.join("\n")
    );
    let big = build_ok(
        "cache max",
        env_b(&[("GROUPCACHE_CACHE_BYTES", "18446744073709551615")]),
    );
    let (main, hot) = capacities(&big);
    assert!(main.checked_add(hot).is_some());
}

/// "`GROUPCACHE_RING` | `ring`: `golang` or `balanced`, in any case; empty: `golang`";
/// "`GROUPCACHE_OPEN_PEER_PATH` | `open_peer_path` when `true` (`1`, `yes`); `false`, `0`,
/// `no` or empty leave it closed".
#[test]
fn from_env_ring_and_open_peer_path_spellings() {
    let kind = |value: &str| {
        let vars = [
            ("GROUPCACHE_RING", value),
            ("GROUPCACHE_SELF_URL", "http://10.0.0.1:1"),
        ];
        build_ok(value, env_b(&vars)).ring().kind()
    };
    for v in ["golang", "GOLANG", "Golang", "", "  ", " golang "] {
        assert_eq!(kind(v), RingKind::Golang, "{v:?}");
    }
    for v in ["balanced", "BALANCED", "Balanced", " balanced\t"] {
        assert_eq!(kind(v), RingKind::Balanced, "{v:?}");
    }
    let cluster = [
        ("GROUPCACHE_SELF_URL", "http://10.0.0.1:1"),
        ("GROUPCACHE_PEER_URLS", "http://10.0.0.2:1"),
    ];
    let opens = |value: &str| {
        let mut vars = cluster.to_vec();
        vars.push(("GROUPCACHE_OPEN_PEER_PATH", value));
        match build(value, env_b(&vars)) {
            Ok(_) => true,
            Err(ConfigError::PeerAuthRequired) => false,
            Err(e) => panic!("OPEN_PEER_PATH={value:?}: {e}"),
        }
    };
    for v in ["true", "1", "yes", " true "] {
        assert!(opens(v), "OPEN_PEER_PATH={v:?} opens the peer path");
    }
    for v in ["false", "0", "no", "", " "] {
        assert!(!opens(v), "OPEN_PEER_PATH={v:?} leaves it closed");
    }
}

/// "Values are trimmed".
#[test]
fn from_env_values_are_trimmed() {
    let vars = [
        ("GROUPCACHE_SELF_URL", "  http://10.0.0.1:8080\n"),
        (
            "GROUPCACHE_PEER_URLS",
            " http://10.0.0.1:8080,http://10.0.0.2:8080 ",
        ),
        ("GROUPCACHE_REPLICAS", " 7 "),
        ("GROUPCACHE_CACHE_BYTES", "\t1000\n"),
        ("GROUPCACHE_PEER_SECRET", &format!(" {SECRET} ")),
        ("GROUPCACHE_BASE_PATH", " /gc/ "),
    ];
    let cache = build_ok("trimmed", env_b(&vars));
    assert_eq!(
        cache.stats().cluster.self_url.as_deref(),
        Some("http://10.0.0.1:8080")
    );
    assert_eq!(cache.stats().cluster.count, 2);
    assert_eq!(cache.ring().replicas(), 7);
    let (main, hot) = capacities(&cache);
    assert_eq!(main + hot, 1000);
}

/// "`build()` checks the rest: the URLs, and what depends on other settings (the ring's size,
/// a connect timeout above the peer timeout, a previous secret without a current one)".
#[test]
fn from_env_leaves_the_rest_to_build() {
    /// Variables, and what `build` must refuse them with.
    type Case<'a> = (Vec<(&'a str, &'a str)>, fn(&ConfigError) -> bool);
    let cases: Vec<Case> = vec![
        (
            vec![("GROUPCACHE_SELF_URL", "http://10.0.0.1:8080/")],
            |e| matches!(e, ConfigError::InvalidUrl { .. }),
        ),
        (
            vec![
                ("GROUPCACHE_SELF_URL", "http://10.0.0.1:1"),
                ("GROUPCACHE_PEER_URLS", "ftp://x"),
                ("GROUPCACHE_PEER_SECRET", SECRET),
            ],
            |e| matches!(e, ConfigError::InvalidUrl { .. }),
        ),
        (vec![("GROUPCACHE_PEER_URLS", "http://10.0.0.2:1")], |e| {
            matches!(e, ConfigError::MissingSelfUrl)
        }),
        (vec![("GROUPCACHE_PEER_SECRET_PREVIOUS", SECRET)], |e| {
            matches!(e, ConfigError::PreviousPeerSecretOnly)
        }),
        (
            vec![
                ("GROUPCACHE_PEER_TIMEOUT_MS", "1000"),
                ("GROUPCACHE_CONNECT_TIMEOUT_MS", "2000"),
            ],
            |e| matches!(e, ConfigError::ConnectTimeoutAbovePeerTimeout { .. }),
        ),
        (
            vec![
                ("GROUPCACHE_SELF_URL", "http://10.0.0.1:1"),
                (
                    "GROUPCACHE_PEER_URLS",
                    "http://10.0.0.2:1,http://10.0.0.3:1",
                ),
                ("GROUPCACHE_REPLICAS", "10000"),
                ("GROUPCACHE_PEER_SECRET", SECRET),
            ],
            |_| false, // accepted below: 3 × 10,000 is within the ring's bound
        ),
    ];
    for (vars, expected) in cases {
        let builder = from_vars(&vars)
            .unwrap_or_else(|e| panic!("from_env refused {vars:?}, which build() checks: {e}"));
        match build(&format!("{vars:?}"), builder.source("users", echo)) {
            Ok(_)
                if !expected(&ConfigError::NoRuntime)
                    && vars.iter().any(|(k, _)| *k == "GROUPCACHE_REPLICAS") => {}
            Ok(_) => panic!("{vars:?}: build accepted it"),
            Err(e) => assert!(expected(&e), "{vars:?}: {e:?}"),
        }
    }
    let message = build_err(
        "connect > peer via env",
        env_b(&[
            ("GROUPCACHE_PEER_TIMEOUT_MS", "1000"),
            ("GROUPCACHE_CONNECT_TIMEOUT_MS", "2000"),
        ]),
    )
    .to_string();
    assert_eq!(
        message.trim_end(),
        "the connect timeout 2s is longer than the peer timeout 1s, which bounds the whole peer fetch: lower `connect_timeout` or raise `peer_timeout`"
    );
}

/// "`GROUPCACHE_BASE_PATH` | `base_path`" and "`GROUPCACHE_MAX_BATCH_KEYS` | `max_batch_keys`":
/// two nodes built from the environment serve each other on that path, in batches of that
/// size, signed with `GROUPCACHE_PEER_SECRET`.
#[tokio::test]
async fn from_env_nodes_talk_on_their_base_path() {
    let (ls, urls) = listeners(2).await;
    let loads = Loads::default();
    let mut nodes = Vec::new();
    for (listener, url) in ls.into_iter().zip(&urls) {
        let peers = urls.join(",");
        let vars = [
            ("GROUPCACHE_SELF_URL", url.as_str()),
            ("GROUPCACHE_PEER_URLS", peers.as_str()),
            ("GROUPCACHE_PEER_SECRET", SECRET),
            ("GROUPCACHE_BASE_PATH", "/gc/"),
            ("GROUPCACHE_MAX_BATCH_KEYS", "2"),
        ];
        let cache = build_ok(
            "env node",
            from_vars_ok(&vars).source("users", loads.source(url)),
        );
        let server = crate::support::serve(listener, crate::support::app(&cache)).await;
        nodes.push((cache, server));
    }
    let (a, owner) = (&nodes[0].0, &urls[1]);
    let keys = keys_owned_by(a, owner, "env-", 5);
    let results = tokio::time::timeout(DEADLINE, a.handle().get_many("users", &keys))
        .await
        .expect("in time")
        .unwrap();
    for (k, r) in keys.iter().zip(&results) {
        assert_eq!(r.as_ref().unwrap(), &value_of(k));
        assert_eq!(loads.of(k), vec![owner.clone()], "the owner loaded {k}");
    }
    let stats = a.stats();
    let peer = stats.peer(owner).unwrap();
    assert_eq!(
        peer.requests.batched_gets, 3,
        "5 keys in batches of 2: {:?}",
        peer.requests
    );
    let (status, _, _) = request("GET", &format!("{owner}/gc/users/x")).await;
    assert_eq!(
        status, 401,
        "an unsigned request on the base path is refused"
    );
    for (_, server) in &nodes {
        server.abort();
    }
}

/// "`GROUPCACHE_SHUTDOWN_TIMEOUT_MS` | `shutdown_timeout` in milliseconds": with 1 ms,
/// `shutdown()` stops waiting for a load that is held.
#[tokio::test]
async fn from_env_shutdown_timeout_bounds_shutdown() {
    let loads = Loads::default();
    let cache = build_ok(
        "shutdown 1 ms",
        from_vars_ok(&[("GROUPCACHE_SHUTDOWN_TIMEOUT_MS", "1")])
            .source("users", loads.source("single")),
    );
    loads.close();
    let handle = cache.handle();
    let get = tokio::spawn(async move { handle.get("users", "held").await });
    eventually("the load started", DEADLINE, || loads.count("held") == 1).await;
    let shutdown = tokio::time::timeout(DEADLINE, cache.shutdown())
        .await
        .expect("shutdown returns while the load is held");
    assert!(!shutdown.is_complete(), "the load was still running");
    assert_eq!(shutdown.abandoned(), 1);
    loads.open();
    let _ = tokio::time::timeout(DEADLINE, get).await;
}

// ---------------------------------------------------------------------------------------
// The node example (examples/node.rs header; guide "Try it", "Environment variables",
// "Configuration errors")
// ---------------------------------------------------------------------------------------

#[cfg(all(unix, feature = "serde"))]
mod node_example {
    use std::io::{BufRead as _, BufReader, Read as _};
    use std::os::unix::process::CommandExt as _;
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use crate::support::node_process::{self, node_binary, signal, wait_until};
    use crate::support::request;

    /// How long a node may take to start listening on a loaded machine.
    const READY: Duration = Duration::from_secs(120);
    /// How long a node may take to exit.
    const EXIT: Duration = Duration::from_secs(60);

    /// A node process; killed (its whole group) when dropped.
    pub(super) struct NodeProc {
        child: Child,
        lines: mpsc::Receiver<String>,
        stdout: Arc<Mutex<String>>,
        stderr: Arc<Mutex<String>>,
        pub addr: String,
        exited: Option<ExitStatus>,
    }

    /// A command for the node, with no inherited `GROUPCACHE_*` or `RUST_LOG`.
    pub(super) fn command(vars: &[(&str, &std::ffi::OsStr)]) -> Command {
        let mut command = Command::new(node_binary());
        for (name, _) in std::env::vars_os() {
            let n = name.to_string_lossy();
            if n.starts_with("GROUPCACHE_") || n == "RUST_LOG" {
                command.env_remove(&name);
            }
        }
        for (k, v) in vars {
            command.env(k, v);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        command
    }

    impl NodeProc {
        /// Starts the node; `Err` with its outputs if it exits before it listens.
        pub(super) fn start(vars: &[(&str, &str)]) -> NodeProc {
            let vars: Vec<(&str, &std::ffi::OsStr)> = vars
                .iter()
                .map(|(k, v)| (*k, std::ffi::OsStr::new(*v)))
                .collect();
            let mut child = command(&vars).spawn().expect("the node starts");
            let (tx, lines) = mpsc::channel();
            let stdout = Arc::new(Mutex::new(String::new()));
            let out = child.stdout.take().unwrap();
            let keep = stdout.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    keep.lock().unwrap().push_str(&format!("{line}\n"));
                    let _ = tx.send(line);
                }
            });
            let stderr = Arc::new(Mutex::new(String::new()));
            let mut err = child.stderr.take().unwrap();
            let keep = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match err.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => keep
                            .lock()
                            .unwrap()
                            .push_str(&String::from_utf8_lossy(&buf[..n])),
                    }
                }
            });
            let mut node = NodeProc {
                child,
                lines,
                stdout,
                stderr,
                addr: String::new(),
                exited: None,
            };
            let until = Instant::now() + READY;
            loop {
                match node.lines.recv_timeout(Duration::from_millis(50)) {
                    Ok(line) => {
                        if let Some(addr) = line.strip_prefix("listening on http://") {
                            node.addr = addr.trim().to_string();
                            return node;
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        let status = wait_until(&mut node.child, Instant::now() + EXIT);
                        node.exited = status;
                        panic!(
                            "the node ended before listening: {status:?}\n{}",
                            node.outputs()
                        );
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                }
                if let Ok(Some(status)) = node.child.try_wait() {
                    node.exited = Some(status);
                    panic!(
                        "the node exited before listening: {status}\n{}",
                        node.outputs()
                    );
                }
                assert!(
                    Instant::now() < until,
                    "the node did not listen within {READY:?}\n{}",
                    node.outputs()
                );
            }
        }

        pub(super) fn pid(&self) -> u32 {
            self.child.id()
        }

        pub(super) fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        pub(super) fn outputs(&self) -> String {
            format!(
                "----- stdout -----\n{}\n----- stderr -----\n{}",
                self.stdout.lock().unwrap(),
                self.stderr.lock().unwrap()
            )
        }

        pub(super) fn stderr(&self) -> String {
            self.stderr.lock().unwrap().clone()
        }

        /// Sends SIGTERM and waits for the exit.
        pub(super) fn terminate(&mut self) -> ExitStatus {
            assert!(signal(self.child.id(), "TERM"), "kill -TERM");
            self.wait_exit()
        }

        pub(super) fn wait_exit(&mut self) -> ExitStatus {
            let status = wait_until(&mut self.child, Instant::now() + EXIT).unwrap_or_else(|| {
                panic!("the node did not exit within {EXIT:?}\n{}", self.outputs())
            });
            self.exited = Some(status);
            status
        }
    }

    impl Drop for NodeProc {
        fn drop(&mut self) {
            if self.exited.is_none() {
                let _ = signal(self.child.id(), "KILL");
                let _ = self.child.wait();
            }
        }
    }

    /// Runs the node to its exit (it must not start serving), with a deadline.
    pub(super) fn run_to_exit(vars: &[(&str, &std::ffi::OsStr)]) -> node_process::Finished {
        node_process::run_with_deadline(command(vars), Duration::from_secs(60))
            .expect("the node can be run")
    }

    /// A free port on 127.0.0.1, picked by binding port 0 and letting it go.
    pub(super) fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    pub(super) async fn get(url: &str) -> (u16, String, axum::http::HeaderMap) {
        let (status, headers, body) =
            tokio::time::timeout(Duration::from_secs(60), request("GET", url))
                .await
                .unwrap_or_else(|_| panic!("GET {url} in time"));
        (
            status.as_u16(),
            String::from_utf8_lossy(&body).into_owned(),
            headers,
        )
    }
}

#[cfg(all(unix, feature = "serde"))]
use node_example::{NodeProc, free_port, get, run_to_exit};

/// node.rs "Routes": "`GET /get/{key}` (the key may contain `/`), or `GET /get?key=...`: ...
/// `200` with the bytes, `404` when it is not found, `502` when the load failed"; "`GET
/// /stats`: the cache's stats as JSON"; "`GET /metrics`: Prometheus text"; "`GET /healthz`:
/// `200 ok`"; "Once listening, the node prints `listening on http://{address}`"; "Shutdown":
/// "On SIGTERM ... the node logs `shutting down` ... exits with status 0".
#[cfg(all(unix, feature = "serde"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_example_routes_and_sigterm() {
    let mut node = NodeProc::start(&[("GROUPCACHE_LISTEN", "127.0.0.1:0")]);
    let url = node.url();
    let cases: &[(&str, u16, Option<&str>)] = &[
        ("/get/user:1", 200, Some("value-of:user:1")),
        ("/get/a/b/c", 200, Some("value-of:a/b/c")),
        ("/get?key=x%20y", 200, Some("value-of:x y")),
        ("/get?key=a%2Fb", 200, Some("value-of:a/b")),
        ("/get/missing:1", 404, None),
        ("/get?key=missing:2", 404, None),
        ("/get/fail:1", 502, None),
        ("/get?key=fail:2", 502, None),
        ("/healthz", 200, Some("ok")),
    ];
    for (path, status, body) in cases {
        let (got, text, _) = get(&format!("{url}{path}")).await;
        assert_eq!(got, *status, "GET {path}: {text}\n{}", node.outputs());
        if let Some(body) = body {
            assert_eq!(text.trim_end(), *body, "GET {path}");
        }
    }
    let (status, text, _) = get(&format!("{url}/stats")).await;
    assert_eq!(status, 200);
    let stats: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("/stats is JSON ({e}): {text}"));
    assert_eq!(stats["sources"][0]["name"], "demo", "{stats}");
    assert!(
        stats["sources"][0]["stats"]["gets"].as_u64().unwrap_or(0) >= 8,
        "{stats}"
    );
    assert_eq!(
        stats["cluster"]["count"], 0,
        "no self URL: single-node mode"
    );
    let (status, text, headers) = get(&format!("{url}/metrics")).await;
    assert_eq!(status, 200);
    assert!(text.contains("groupcache_gets_total"), "{text}");
    assert!(
        headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/plain")),
        "{headers:?}"
    );
    // The peer path is the cache layer's (closed on a single node without a secret: 403).
    let (status, _, headers) = get(&format!("{url}/_groupcache/demo/k")).await;
    assert_eq!(status, 403);
    assert!(headers.contains_key("x-groupcache-extensions"));
    let status = tokio::task::block_in_place(|| node.terminate());
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM exits 0\n{}",
        node.outputs()
    );
    assert!(
        node.stderr().contains("shutting down"),
        "{}",
        node.outputs()
    );
}

/// node.rs "Shutdown": "refuses peer requests (`503` ...), fails `/healthz`, and calls
/// `Groupcache::shutdown`, which waits for the loads that started before it ... Then it
/// stops the HTTP server gracefully and exits with status 0"; "`GET /healthz`: ... `503
/// shutting down` once the node drains"; `GROUPCACHE_DEMO_LATENCY_MS` "simulated latency".
#[cfg(all(unix, feature = "serde"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_example_drains_on_sigterm() {
    let mut node = NodeProc::start(&[
        ("GROUPCACHE_LISTEN", "127.0.0.1:0"),
        ("GROUPCACHE_DEMO_LATENCY_MS", "10000"),
        ("GROUPCACHE_SHUTDOWN_TIMEOUT_MS", "60000"),
        ("GROUPCACHE_OPEN_PEER_PATH", "true"),
    ]);
    let url = node.url();
    let slow = tokio::spawn({
        let url = url.clone();
        async move { get(&format!("{url}/get/slow:1")).await }
    });
    // Wait until the load is in flight (the stats count it).
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, text, _) = get(&format!("{url}/stats")).await;
        let stats: serde_json::Value = serde_json::from_str(&text).unwrap();
        if stats["sources"][0]["stats"]["loads"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(Instant::now() < until, "the load never started: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(crate::support::node_process::signal(node.pid(), "TERM"));
    let until = Instant::now() + Duration::from_secs(60);
    let healthz = loop {
        let (status, text, _) = get(&format!("{url}/healthz")).await;
        if status != 200 {
            break (status, text);
        }
        assert!(
            Instant::now() < until && !slow.is_finished(),
            "/healthz never failed while draining\n{}",
            node.outputs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(healthz.0, 503, "{healthz:?}");
    assert_eq!(healthz.1.trim_end(), "shutting down");
    let (status, _, _) = get(&format!("{url}/_groupcache/demo/k")).await;
    assert_eq!(status, 503, "peer requests are refused while draining");
    let (status, body, _) = tokio::time::timeout(Duration::from_secs(90), slow)
        .await
        .expect("the slow get ends")
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "value-of:slow:1"),
        "the load that started before is finished"
    );
    let status = tokio::task::block_in_place(|| node.wait_exit());
    assert_eq!(status.code(), Some(0), "{}", node.outputs());
}

/// Guide "Configuration errors": "The example node prints these as `node: configuration error:
/// ...` and exits with status 2; it adds messages for its own variables (``environment
/// variable GROUPCACHE_LISTEN: `...` is not an address such as 0.0.0.0:8080``,
/// `GROUPCACHE_DNS_NAME is set but GROUPCACHE_SELF_URL is not: ...`)".
#[cfg(all(unix, feature = "serde"))]
#[test]
fn node_example_configuration_errors_exit_2() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt as _;
    let listen = ("GROUPCACHE_LISTEN", OsStr::new("127.0.0.1:0"));
    let cases: Vec<(Vec<(&str, &OsStr)>, String)> = vec![
        (
            vec![listen, ("GROUPCACHE_CACHE_BYTES", OsStr::new("64MiB"))],
            "node: configuration error: environment variable GROUPCACHE_CACHE_BYTES: `64MiB` is not a whole number".into(),
        ),
        (
            vec![listen, ("GROUPCACHE_REPLICAS", OsStr::new("0"))],
            "node: configuration error: environment variable GROUPCACHE_REPLICAS: ring replicas must be at least 1".into(),
        ),
        (
            vec![("GROUPCACHE_LISTEN", OsStr::new("nonsense"))],
            "node: configuration error: environment variable GROUPCACHE_LISTEN: `nonsense` is not an address such as 0.0.0.0:8080".into(),
        ),
        (
            vec![listen, ("GROUPCACHE_DNS_NAME", OsStr::new("localhost"))],
            "node: configuration error: GROUPCACHE_DNS_NAME is set but GROUPCACHE_SELF_URL is not".into(),
        ),
        (
            vec![listen, ("GROUPCACHE_PEER_URLS", OsStr::new("http://127.0.0.1:1"))],
            "node: configuration error: peers were given but no self URL".into(),
        ),
        (
            vec![
                listen,
                ("GROUPCACHE_SELF_URL", OsStr::new("http://127.0.0.1:2")),
                ("GROUPCACHE_PEER_URLS", OsStr::new("http://127.0.0.1:1")),
            ],
            "node: configuration error: peers are configured without a peer secret".into(),
        ),
        (
            vec![listen, ("GROUPCACHE_SELF_URL", OsStr::new("http://127.0.0.1:2/"))],
            "node: configuration error: invalid peer URL `http://127.0.0.1:2/`".into(),
        ),
        (vec![listen, ("GROUPCACHE_CACHE_BYTES", OsStr::from_bytes(b"\xff\xfe"))], "environment variable GROUPCACHE_CACHE_BYTES".into()),
        (vec![listen, ("GROUPCACHE_DEMO_LATENCY_MS", OsStr::new("slow"))], "GROUPCACHE_DEMO_LATENCY_MS".into()),
        (
            vec![
                listen,
                ("GROUPCACHE_SELF_URL", OsStr::new("http://127.0.0.1:2")),
                ("GROUPCACHE_PEER_SECRET", OsStr::new("0123456789abcdef0123456789abcdef")),
                ("GROUPCACHE_DNS_NAME", OsStr::new("localhost")),
                ("GROUPCACHE_DNS_INTERVAL_MS", OsStr::new("often")),
            ],
            "GROUPCACHE_DNS_INTERVAL_MS".into(),
        ),
        (vec![listen, ("GROUPCACHE_LOG_KEYS", OsStr::new("perhaps"))], "GROUPCACHE_LOG_KEYS".into()),
        (vec![listen, ("GROUPCACHE_PEER_TIMEOUT_MS", OsStr::new("0"))], "GROUPCACHE_PEER_TIMEOUT_MS".into()),
        (vec![listen, ("GROUPCACHE_BASE_PATH", OsStr::new("/"))], "GROUPCACHE_BASE_PATH".into()),
    ];
    let mut wrong = Vec::new();
    for (vars, expected) in &cases {
        let finished = run_to_exit(vars);
        let code = finished.status.and_then(|s| s.code());
        let line_ok = finished
            .stderr
            .lines()
            .any(|l| l.contains("node: configuration error: ") && l.contains(expected.as_str()));
        if code != Some(2) || !line_ok || finished.stderr.contains("panicked") {
            wrong.push(format!(
                "{vars:?}: want status 2 and a line with {expected:?}; got {}",
                finished.describe()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

/// node.rs: "a port that cannot be bound prints `node: cannot listen on ...` and exits with
/// status 1".
#[cfg(all(unix, feature = "serde"))]
#[test]
fn node_example_port_taken_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let finished = run_to_exit(&[("GROUPCACHE_LISTEN", std::ffi::OsStr::new(&addr))]);
    assert_eq!(
        finished.status.and_then(|s| s.code()),
        Some(1),
        "{}",
        finished.describe()
    );
    assert!(
        finished.stderr.contains("node: cannot listen on"),
        "{}",
        finished.describe()
    );
    drop(taken);
}

/// Guide "Try it": two node processes with one peer list and secret: "the same value, loaded
/// once in the cluster"; "every node's `/stats` ... shows the same `ring_fingerprint` and
/// `count`"; and the node's own `GROUPCACHE_BASE_PATH`.
#[cfg(all(unix, feature = "serde"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_example_two_processes_share_one_load() {
    let ports = [free_port(), free_port()];
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let peers = urls.join(",");
    let secret = "0123456789abcdef0123456789abcdef0123456789abcdef";
    let mut nodes = Vec::new();
    for (port, url) in ports.iter().zip(&urls) {
        let listen = format!("127.0.0.1:{port}");
        nodes.push(NodeProc::start(&[
            ("GROUPCACHE_LISTEN", &listen),
            ("GROUPCACHE_SELF_URL", url),
            ("GROUPCACHE_PEER_URLS", &peers),
            ("GROUPCACHE_PEER_SECRET", secret),
            ("GROUPCACHE_BASE_PATH", "/peer-cache/"),
        ]));
    }
    for key in ["user:1", "user:2", "user:3", "a/b"] {
        for url in &urls {
            let (status, body, _) = get(&format!("{url}/get/{key}")).await;
            assert_eq!(
                (status, body.as_str()),
                (200, format!("value-of:{key}").as_str())
            );
        }
    }
    let mut total_local = 0;
    let mut fingerprints = Vec::new();
    for url in &urls {
        let (_, text, _) = get(&format!("{url}/stats")).await;
        let stats: serde_json::Value = serde_json::from_str(&text).unwrap();
        total_local += stats["sources"][0]["stats"]["local_loads"]
            .as_u64()
            .unwrap();
        assert_eq!(stats["cluster"]["count"], 2, "{stats}");
        fingerprints.push(stats["cluster"]["ring_fingerprint"].clone());
        let (status, _, headers) = get(&format!("{url}/peer-cache/demo/k")).await;
        assert_eq!(status, 401, "unsigned on the node's base path");
        assert!(headers.contains_key("x-groupcache-extensions"));
    }
    assert_eq!(total_local, 4, "each of 4 keys loaded once in the cluster");
    assert_eq!(fingerprints[0], fingerprints[1]);
    for node in &mut nodes {
        let status = tokio::task::block_in_place(|| node.terminate());
        assert_eq!(status.code(), Some(0), "{}", node.outputs());
    }
}

/// Guide: "`natural_batching(n)` | 4 | once `n` single-key gets of one source are in flight
/// to one peer of this crate, further ones queue and go together in one batched request;
/// `0` turns it off". The owner's data source is held so the first gets stay in flight.
#[tokio::test]
async fn default_natural_batching_queues_after_four_in_flight() {
    for (setting, want_gets, want_batched) in [(None, 4u64, 1u64), (Some(0usize), 6, 0)] {
        let loads = Loads::default();
        let nodes = crate::support::cluster(2, &loads, |b| match setting {
            Some(n) => b.natural_batching(n),
            None => b,
        })
        .await;
        let (a, owner) = (&nodes[0], nodes[1].url.clone());
        let keys = keys_owned_by(&a.cache, &owner, "nb-", 6);
        // One answer first: from its `x-groupcache-extensions` the asker learns that the owner
        // is a node of this crate (protocol.md: "A single get whose owner is a node of this
        // crate ...").
        let warm = keys_owned_by(&a.cache, &owner, "warm-", 1).remove(0);
        a.handle().get("users", &warm).await.unwrap();
        let before = a.cache.stats().peer(&owner).unwrap().requests;
        loads.close();
        let mut gets = Vec::new();
        for k in &keys {
            let (handle, k) = (a.handle(), k.clone());
            gets.push(tokio::spawn(async move { handle.get("users", &k).await }));
        }
        let in_flight = want_gets.min(6) as usize;
        eventually(
            "every get has started its load on the asker",
            DEADLINE,
            || a.stats("users").loads == 7,
        )
        .await;
        eventually("the first gets reach the owner's source", DEADLINE, || {
            loads.total_by(&owner) > in_flight
        })
        .await;
        let reached = loads.total_by(&owner) - 1;
        let requests_now = a.cache.stats().peer(&owner).map(|p| p.requests);
        assert_eq!(
            reached, in_flight,
            "natural_batching {setting:?}: gets that reached the held owner while its source is held; asker's requests so far {requests_now:?}"
        );
        loads.open();
        for (get, k) in gets.into_iter().zip(&keys) {
            let value = tokio::time::timeout(DEADLINE, get)
                .await
                .expect("in time")
                .unwrap()
                .unwrap();
            assert_eq!(value, value_of(k));
        }
        let stats = a.cache.stats();
        let requests = &stats.peer(&owner).expect("owner entry").requests;
        assert_eq!(
            (
                requests.gets - before.gets,
                requests.batched_gets - before.batched_gets
            ),
            (want_gets, want_batched),
            "natural_batching {setting:?}: {requests:?}"
        );
    }
}
