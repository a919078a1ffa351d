//! Mixed clusters of this crate's nodes and real golang/groupcache nodes.
//!
//! The Go nodes are `tests/interop/gopeer` (the `HTTPPool` of Debian's
//! golang-github-golang-groupcache-dev), built once per run by its `build.sh` and started as
//! child processes on 127.0.0.1. Without Go the tests print `SKIPPED: ...` and pass, unless
//! `GROUPCACHE_REQUIRE_GO=1` (as `.ci/run` sets), which makes a missing Go a failure. Each test
//! that really ran appends a line to `target/interop-ran`, which `.ci/run` checks.
//!
//! Every test runs in both shapes: 2 nodes of ours + 1 Go node, and 1 of ours + 2 Go nodes.
//! Our data source gives the Go getter's bytes (`value-of:<key>`, `size:N:` keys N bytes), so
//! a value is the same whichever node loads it, and loads are counted on both sides.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support;
use crate::support::gopeer::{
    self, At, Checks, GROUP, GoNode, Http, Mixed, TTL, assert_bytes, go_or_skip, value,
};
use axum::Router;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use futures_util::StreamExt as _;
use prost::Message as _;
use tokio::net::TcpListener;
use tower_groupcache::Ring;
use tower_groupcache::protocol::{GetResponse, escape, parse_path};

/// (nodes of ours, Go nodes)
const TOPOLOGIES: [(usize, usize); 2] = [(2, 1), (1, 2)];

/// The `GetResponse` of a peer reply.
fn decode(reply: &gopeer::Reply) -> GetResponse {
    assert_eq!(reply.status, StatusCode::OK, "peer reply {reply:?}");
    GetResponse::decode(reply.body.clone()).expect("a GetResponse")
}

fn peer_uri(node_url: &str, key: &str) -> String {
    format!("{node_url}/_groupcache/{GROUP}/{}", escape(key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rings_agree_with_go_on_1000_keys() {
    let binary = go_or_skip!("rings_agree_with_go_on_1000_keys");
    let mut checks = Checks::new("rings_agree_with_go_on_1000_keys");
    for (ours, go) in TOPOLOGIES {
        let cluster = Mixed::start(&binary, ours, go).await;
        let keys: Vec<String> = (0..1000)
            .map(|i| format!("key:{i}"))
            .chain(["", "a b", "a+b", "a//b", "ü€日本🦀"].map(String::from))
            .collect();
        for node in &cluster.go {
            let go_owners: Vec<String> = futures_util::stream::iter(&keys)
                .map(|key| node.owner(key))
                .buffered(8)
                .collect()
                .await;
            for our in &cluster.ours {
                let ring = our.cache.ring();
                for (key, go_owner) in keys.iter().zip(&go_owners) {
                    assert_eq!(
                        ring.owner(key),
                        Some(go_owner.as_str()),
                        "{ours}+{go}: owner of {key:?} on {} and on Go node {}",
                        our.url,
                        node.url
                    );
                }
                checks.passed();
            }
            // The keys spread over every node, so the comparison says something.
            for peer in &cluster.peers {
                let owned = go_owners.iter().filter(|o| *o == peer).count();
                assert!(owned > 30, "{ours}+{go}: {peer} owns only {owned} keys");
            }
            checks.passed();
        }
        cluster.stop().await;
    }
    checks.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_through_every_node_load_each_key_once() {
    let binary = go_or_skip!("gets_through_every_node_load_each_key_once");
    let mut checks = Checks::new("gets_through_every_node_load_each_key_once");
    for (ours, go) in TOPOLOGIES {
        let cluster = Mixed::start(&binary, ours, go).await;
        let nodes = cluster.all();
        for &owner in &nodes {
            for &entry in &nodes {
                let key = cluster.key_owned_by(owner, &format!("user:{entry}>{owner}:"));
                let got = cluster.get(entry, &key).await;
                assert_bytes(&got, &value(&key), &format!("{entry} gets {key:?}"));
                // The same key through every other node: still one load, by the owner.
                for &other in nodes.iter().filter(|n| **n != entry) {
                    let got = cluster.get(other, &key).await;
                    assert_bytes(&got, &value(&key), &format!("{other} gets {key:?}"));
                }
                assert_eq!(
                    cluster.loaders(&key).await,
                    [cluster.url(owner)],
                    "{ours}+{go}: {key:?} (owner {owner}, first asked through {entry}) is \
                     loaded once in the whole cluster, by its owner"
                );
                checks.passed();
            }
        }
        for node in &cluster.ours {
            assert_eq!(node.stats().peer_errors, 0, "{}", node.url);
        }
        for node in &cluster.go {
            let stats = node.stats().await;
            assert_eq!(stats.peer_errors, 0, "{}: {stats:?}", node.url);
        }
        checks.passed();
        cluster.stop().await;
    }
    checks.done();
}

/// Keys with every character that escaping can get wrong, and values of 4 KiB and 1 MiB.
const AWKWARD: [&str; 11] = [
    "a b",
    "a+b",
    "a/b",
    "100%",
    "user:1",
    "what?",
    "x#y",
    "ü€日本🦀",
    "all a+b/c%d:e?f#g ü",
    "size:4096:",
    "size:1048576:",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awkward_keys_and_big_values_cross_both_ways() {
    let binary = go_or_skip!("awkward_keys_and_big_values_cross_both_ways");
    let mut checks = Checks::new("awkward_keys_and_big_values_cross_both_ways");
    for (ours, go) in TOPOLOGIES {
        let cluster = Mixed::start(&binary, ours, go).await;
        // Our client to a Go server, and a Go client to our server.
        let mut directions = Vec::new();
        for g in 0..go {
            directions.push((At::Ours(0), At::Go(g)));
            directions.push((At::Go(g), At::Ours(ours - 1)));
        }
        for (d, &(entry, owner)) in directions.iter().enumerate() {
            for base in AWKWARD {
                let key = cluster.key_owned_by(owner, &format!("{base}.{d}."));
                let got = cluster.get(entry, &key).await;
                assert_bytes(
                    &got,
                    &value(&key),
                    &format!("{ours}+{go}: {entry} gets {key:?} from its owner {owner}"),
                );
                assert_eq!(
                    cluster.loaders(&key).await,
                    [cluster.url(owner)],
                    "{ours}+{go}: {key:?} loaded once, by its owner {owner}"
                );
                checks.passed();
            }
        }

        // The empty key: its owner is fixed by the ring (crc32 0 takes the first point); every
        // other node asks it.
        let owner = cluster.owner("");
        for at in cluster.all() {
            let got = cluster.get(at, "").await;
            assert_bytes(&got, b"value-of:", &format!("{at} gets the empty key"));
        }
        assert_eq!(cluster.loaders("").await, [owner], "{ours}+{go}: empty key");
        checks.passed();

        // What our client reads from a Go server for a big value: a chunked body.
        for size in [4096, 1 << 20] {
            let key = cluster.key_owned_by(At::Go(0), &format!("size:{size}:chunked."));
            let reply = cluster.http.get(&peer_uri(&cluster.go[0].url, &key)).await;
            assert_eq!(
                reply.headers.get("transfer-encoding").map(|v| v.as_bytes()),
                Some(&b"chunked"[..]),
                "the Go server sends a {size}-byte value chunked: {:?}",
                reply.headers
            );
            assert!(reply.headers.get("content-length").is_none());
            let sent = decode(&reply).value.expect("a value");
            assert_bytes(&sent, &value(&key), "Go's chunked reply");
            let got = cluster.ours[0].get(&key).await;
            assert_bytes(&got, &value(&key), "our node reads the chunked reply");
            assert_eq!(cluster.loaders(&key).await, [cluster.go[0].url.as_str()]);
            checks.passed();
        }
        cluster.stop().await;
    }
    checks.done();
}

/// Keys that make a peer path unclean for Go's ServeMux, and the key part of the path it
/// redirects to.
const UNCLEAN: [(&str, &str); 5] = [
    ("a//b.", "a/b."),
    ("/lead.", "lead."),
    ("a/./b.", "a/b."),
    ("a/../b.", "b."),
    (
        "url:http://example.com/page.",
        "url:http:/example.com/page.",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_defects_are_handled() {
    let binary = go_or_skip!("go_defects_are_handled");
    let mut checks = Checks::new("go_defects_are_handled");
    for (ours, go) in TOPOLOGIES {
        let c = Mixed::start(&binary, ours, go).await;
        let (our, go0) = (&c.ours[0], &c.go[0]);

        // 1. A Go client sends the key `a b` as `a+b`; our server reads `a b`.
        let key = c.key_owned_by(At::Ours(0), "a b.plus.");
        let served = our.stats().server_requests;
        let got = go0.get(&key).await;
        assert_bytes(&got, &value(&key), "a Go node asks our owner for `a b`");
        assert_eq!(our.stats().server_requests, served + 1);
        assert_eq!(c.loaders(&key).await, [our.url.as_str()]);
        assert!(
            c.loaders(&key.replace(' ', "+")).await.is_empty(),
            "nobody looked up `a+b`"
        );
        checks.passed();

        // 1b. Between two Go nodes the same key goes wrong, Go's own defect: the Go owner
        // looks up `a+b` (and forwards it to whoever owns `a+b`), so the answer is the value
        // of `a+b`.
        if go >= 2 {
            let key = c.key_owned_by(At::Go(1), "a b.gogo.");
            let plus = key.replace(' ', "+");
            let got = go0.get(&key).await;
            assert_bytes(&got, &value(&plus), "Go to Go: `a b` is read as `a+b`");
            assert!(c.loaders(&key).await.is_empty(), "nobody looked up `a b`");
            assert_eq!(c.loaders(&plus).await.len(), 1, "`a+b` was loaded once");
            checks.passed();
        }

        // 2. Keys whose decoded path is not clean (`//`, a leading `/`, `/./`, `/../`), owned
        // by a Go node: Go's ServeMux answers 301 before the pool sees the request; our client
        // counts a peer error and loads the key itself, then serves it from its main cache, as
        // a Go client would. Each one is followed by a plain key of the Go node, fetched from
        // it: three failures in a row would make our node skip the Go node (peer health), see
        // `unclean_keys_in_a_row_do_not_get_a_healthy_go_node_skipped`.
        for (i, (base, cleaned)) in UNCLEAN.into_iter().enumerate() {
            let key = c.key_owned_by(At::Go(0), base);
            let (before, go_before) = (our.stats(), go0.stats().await);
            let got = our.get(&key).await;
            assert_bytes(&got, &value(&key), &format!("{key:?} after the 301"));
            let after = our.stats();
            assert_eq!(
                after.peer_errors,
                before.peer_errors + 1,
                "{key:?}: the 301 is a peer error: {before:?} -> {after:?}"
            );
            assert_eq!(
                after.local_loads,
                before.local_loads + 1,
                "{key:?}: then a local load"
            );
            assert_eq!(c.loaders(&key).await, [our.url.as_str()]);
            assert_eq!(
                go0.stats().await.server_requests,
                go_before.server_requests,
                "{key:?}: the Go pool never saw the request"
            );
            let got = our.get(&key).await;
            assert_bytes(&got, &value(&key), &format!("{key:?} again"));
            assert_eq!(
                our.stats().peer_errors,
                after.peer_errors,
                "{key:?}: from the main cache"
            );
            assert_eq!(c.loaders(&key).await, [our.url.as_str()]);
            // What the Go node answers: a redirect to the cleaned path.
            let reply = c.http.get(&peer_uri(&go0.url, &key)).await;
            assert_eq!(reply.status, StatusCode::MOVED_PERMANENTLY, "{key:?}");
            let location = reply.headers.get("location").expect("a Location");
            let suffix = &key[base.len()..];
            assert_eq!(
                location.to_str().unwrap(),
                format!("/_groupcache/{GROUP}/{cleaned}{suffix}"),
                "{key:?}: Location is the cleaned path"
            );
            assert_eq!(our.stats().peer_skips, before.peer_skips, "{key:?}");
            let plain = c.key_owned_by(At::Go(0), &format!("plain.{i}."));
            let loads = our.stats().peer_loads;
            assert_bytes(&our.get(&plain).await, &value(&plain), "a plain key");
            assert_eq!(
                our.stats().peer_loads,
                loads + 1,
                "fetched from the Go node"
            );
            checks.passed();
        }

        // 2b. The same keys owned by our node, asked by a Go node: our server does not
        // normalise the path.
        for (base, _) in UNCLEAN {
            let key = c.key_owned_by(At::Ours(0), &format!("{base}ours."));
            let go_errors = go0.stats().await.peer_errors;
            let got = go0.get(&key).await;
            assert_bytes(
                &got,
                &value(&key),
                &format!("a Go node asks ours for {key:?}"),
            );
            assert_eq!(go0.stats().await.peer_errors, go_errors, "{key:?}");
            assert_eq!(c.loaders(&key).await, [our.url.as_str()], "{key:?}");
            checks.passed();
        }

        // 3. A peer request to a Go node for a key it does not own is forwarded to the owner
        // (here ours). Ours never forwards: a peer request for a Go node's key is served here.
        let key = c.key_owned_by(At::Ours(0), "forwarded.");
        let (served, go_before) = (our.stats().server_requests, go0.stats().await);
        let reply = c.http.get(&peer_uri(&go0.url, &key)).await;
        assert_bytes(&decode(&reply).value.unwrap(), &value(&key), "forwarded");
        let go_after = go0.stats().await;
        assert_eq!(go_after.server_requests, go_before.server_requests + 1);
        assert_eq!(
            go_after.peer_loads,
            go_before.peer_loads + 1,
            "Go forwarded"
        );
        assert_eq!(our.stats().server_requests, served + 1);
        assert_eq!(c.loaders(&key).await, [our.url.as_str()]);

        let key = c.key_owned_by(At::Go(0), "not-forwarded.");
        let go_before = go0.stats().await;
        let reply = c.http.get(&peer_uri(&our.url, &key)).await;
        assert_bytes(
            &decode(&reply).value.unwrap(),
            &value(&key),
            "not forwarded",
        );
        assert_eq!(go0.stats().await.server_requests, go_before.server_requests);
        assert_eq!(c.loaders(&key).await, [our.url.as_str()]);
        checks.passed();

        // 4. A Go server does not check the method: POST and DELETE are served as GET (a
        // DELETE removes nothing, which is why our client never sends a Go node one). Ours
        // answers 405 to a POST.
        let key = c.key_owned_by(At::Go(0), "methods.");
        for method in [Method::POST, Method::DELETE] {
            let reply = c
                .http
                .send(method.clone(), &peer_uri(&go0.url, &key), &[])
                .await;
            assert_bytes(
                &decode(&reply).value.unwrap(),
                &value(&key),
                &format!("{method} to a Go node"),
            );
        }
        assert_eq!(c.loaders(&key).await, [go0.url.as_str()], "still cached");
        let reply = c
            .http
            .send(Method::POST, &peer_uri(&our.url, &key), &[])
            .await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
        checks.passed();
        c.stop().await;
    }
    checks.done();
}

/// Go's ServeMux answers 301 to a key with `//` (a URL as a key is enough) from a Go node
/// that is perfectly healthy. The 301 is a peer error for that key only: it must not count
/// toward the node's health, or 3 such keys in a row
/// (`PeerHealthConfig::default().failure_threshold`) would make our node skip the Go node for
/// every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclean_keys_in_a_row_do_not_get_a_healthy_go_node_skipped() {
    let binary = go_or_skip!("unclean_keys_in_a_row_do_not_get_a_healthy_go_node_skipped");
    let mut checks = Checks::new("unclean_keys_in_a_row_do_not_get_a_healthy_go_node_skipped");
    let c = Mixed::start(&binary, 2, 1).await;
    let (our, go0) = (&c.ours[0], &c.go[0]);
    for i in 0..3 {
        let key = c.key_owned_by(At::Go(0), &format!("url:http://example.com/{i}."));
        assert_bytes(&our.get(&key).await, &value(&key), "a key with `//`");
    }
    assert_eq!(our.stats().peer_errors, 3, "three 301s");
    let plain = c.key_owned_by(At::Go(0), "plain.");
    let before = our.stats();
    assert_bytes(&our.get(&plain).await, &value(&plain), "a plain key");
    let after = our.stats();
    assert_eq!(
        (after.peer_skips, after.peer_loads),
        (before.peer_skips, before.peer_loads + 1),
        "the healthy Go node is still asked"
    );
    assert_eq!(
        c.loaders(&plain).await,
        [go0.url.as_str()],
        "loaded by its owner"
    );
    checks.passed();
    c.stop().await;
    checks.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_go_node_does_not_stop_ours() {
    let binary = go_or_skip!("a_stopped_go_node_does_not_stop_ours");
    let mut checks = Checks::new("a_stopped_go_node_does_not_stop_ours");
    for (ours, go) in TOPOLOGIES {
        let mut c = Mixed::start(&binary, ours, go).await;
        let victim = go - 1;
        let dead = At::Go(victim);
        let dead_url = c.go[victim].url.clone();
        let fetched = c.key_owned_by(dead, "stopped.fetched.");
        let fresh = c.key_owned_by(dead, "stopped.fresh.");
        let own = c.key_owned_by(At::Ours(0), "stopped.own.");
        for at in c.all() {
            let got = c.get(at, &fetched).await;
            assert_bytes(&got, &value(&fetched), &format!("{at} before the stop"));
        }
        assert_eq!(c.loaders(&fetched).await, [dead_url.as_str()]);

        let before: Vec<_> = c.ours.iter().map(|n| n.stats()).collect();
        c.go[victim].stop().await;
        for (i, node) in c.ours.iter().enumerate() {
            for key in [&fetched, &fresh, &own, &fresh, &fetched] {
                let got = node.get(key).await;
                assert_bytes(
                    &got,
                    &value(key),
                    &format!("{ours}+{go}: {} gets {key:?} after the stop", node.url),
                );
            }
            let after = node.stats();
            // `fresh` costs exactly one failed fetch (a peer error, or a skip if peer health
            // already gave up on the node), then comes from the main cache; `fetched` one more,
            // unless it was in the hot cache (1 fetched value in 10).
            let errors =
                after.peer_errors + after.peer_skips - before[i].peer_errors - before[i].peer_skips;
            assert!(
                (1..=2).contains(&errors),
                "{}: {errors} peer errors after the stop",
                node.url
            );
        }
        let mut fresh_loaders = c.loads.of(&fresh);
        fresh_loaders.sort();
        let mut our_urls: Vec<String> = c.ours.iter().map(|n| n.url.clone()).collect();
        our_urls.sort();
        assert_eq!(
            fresh_loaders, our_urls,
            "with its owner down, each node of ours loads the key once"
        );
        assert_eq!(c.loads.of(&own), [c.ours[0].url.as_str()]);
        checks.passed();

        // The surviving Go node copes the same way.
        for survivor in c.go.iter().take(victim) {
            let errors = survivor.stats().await.peer_errors;
            let got = survivor.get(&fresh).await;
            assert_bytes(&got, &value(&fresh), "a surviving Go node");
            assert_eq!(survivor.stats().await.peer_errors, errors + 1);
            assert_eq!(survivor.loads(&fresh).await, 1);
            checks.passed();
        }
        c.stop().await;
    }
    checks.done();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_extensions_do_not_disturb_go() {
    let binary = go_or_skip!("our_extensions_do_not_disturb_go");
    let mut checks = Checks::new("our_extensions_do_not_disturb_go");
    for (ours, go) in TOPOLOGIES {
        let c = Mixed::start(&binary, ours, go).await;
        let (our, go0) = (&c.ours[0], &c.go[0]);

        // `expire` (field 3): our owner's reply for a value with a TTL carries it; the Go
        // node reads the value and ignores the field.
        let key = c.key_owned_by(At::Ours(0), "ttl:session.");
        let before = go0.stats().await;
        let got = go0.get(&key).await;
        assert_bytes(&got, &value(&key), "a Go node fetches a value with a TTL");
        let after = go0.stats().await;
        assert_eq!(after.peer_loads, before.peer_loads + 1);
        assert_eq!(after.peer_errors, before.peer_errors);
        assert_eq!(c.loaders(&key).await, [our.url.as_str()]);
        // The same cached entry, asked by hand: the reply the Go node got had field 3.
        let reply = decode(&c.http.get(&peer_uri(&our.url, &key)).await);
        let expire = reply
            .expire
            .expect("field 3 is sent for a value with a TTL");
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let left = Duration::from_nanos(expire as u64).saturating_sub(now);
        assert!(
            left > TTL - Duration::from_secs(60) && left <= TTL,
            "expire is about now + TTL: {left:?} left"
        );
        assert_eq!(c.loaders(&key).await, [our.url.as_str()]);
        checks.passed();

        // *Not found* (our 204): a Go client takes it as any non-200, a peer error, and runs
        // its own getter, which has no notion of not found here.
        let key = c.key_owned_by(At::Ours(0), "missing:user.");
        let before = go0.stats().await;
        let got = go0.get(&key).await;
        assert_bytes(&got, &value(&key), "a Go node after our 204");
        let after = go0.stats().await;
        assert_eq!(
            after.peer_errors,
            before.peer_errors + 1,
            "204 is a peer error"
        );
        assert_eq!(after.local_loads, before.local_loads + 1);
        let mut expected = vec![our.url.clone(), go0.url.clone()];
        expected.sort();
        assert_eq!(c.loaders(&key).await, expected);
        let err = our.cache.handle().get(GROUP, &key).await.unwrap_err();
        assert!(err.is_not_found(), "our nodes still say not found: {err}");
        checks.passed();

        // Request headers a Go server does not know are ignored.
        let key = c.key_owned_by(At::Go(0), "headers.");
        let reply = c
            .http
            .send(
                Method::GET,
                &peer_uri(&go0.url, &key),
                &[
                    ("authorization", "Bearer peer-secret"),
                    ("x-groupcache-ring", "0123abcd"),
                ],
            )
            .await;
        assert_bytes(
            &decode(&reply).value.unwrap(),
            &value(&key),
            "extra headers",
        );
        checks.passed();
        c.stop().await;
    }

    // A Go node reading a reply with every field and header this crate may add: `minute_qps`
    // (field 2), `expire` (field 3) and unknown response headers. Our server fills
    // `minute_qps` with the rate it measured; the stand-in peer sends a fixed one (12.5) and
    // reply headers of its own.
    stand_in_owner_with_extensions(&binary, &mut checks).await;
    checks.done();
}

/// What the stand-in peer saw: the raw path and the headers of each request.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, HeaderMap)>>>;

async fn stand_in_owner_with_extensions(binary: &std::path::Path, checks: &mut Checks) {
    let seen = Seen::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stand_in_url = format!("http://{}", listener.local_addr().unwrap());
    let app = {
        let seen = seen.clone();
        Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
            let seen = seen.clone();
            async move {
                let path = uri.path().to_owned();
                seen.lock().unwrap().push((path.clone(), headers));
                let rest = path.strip_prefix("/_groupcache/").expect("the peer path");
                let (_, key) = parse_path(rest).expect("a valid peer path");
                let expire = SystemTime::now() + TTL;
                let message = GetResponse {
                    value: Some(value(&key)),
                    minute_qps: Some(12.5),
                    expire: Some(expire.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64),
                };
                (
                    [
                        ("content-type", "application/x-protobuf"),
                        ("x-groupcache-ring", "0123abcd"),
                        ("x-groupcache-minute-qps", "12.5"),
                    ],
                    message.encode_to_vec(),
                )
            }
        })
    };
    let _server = support::serve(listener, app).await;
    let http = Http::default();
    let mut go =
        GoNode::start_on_free_port(binary, &[stand_in_url.clone(), "SELF".into()], &http).await;
    let ring = Ring::new(50, [stand_in_url.clone(), go.url.clone()]);
    let key = (0..10_000)
        .map(|i| format!("a b.stand-in.{i}"))
        .find(|k| ring.owner(k) == Some(stand_in_url.as_str()))
        .expect("a key of the stand-in");

    let got = go.get(&key).await;
    assert_bytes(
        &got,
        &value(&key),
        "a Go node reads a reply with fields 2 and 3",
    );
    let stats = go.stats().await;
    assert_eq!(
        (stats.peer_loads, stats.peer_errors, stats.getter_loads),
        (1, 0, 0)
    );

    // And what a Go client sends: QueryEscape (a space as `+`) and `Accept-Encoding: gzip`.
    let (path, headers) = seen.lock().unwrap()[0].clone();
    assert_eq!(
        path,
        format!("/_groupcache/{GROUP}/{}", key.replace(' ', "+")),
        "a Go client writes a space as `+`"
    );
    assert_eq!(
        headers.get("accept-encoding").map(|v| v.as_bytes()),
        Some(&b"gzip"[..])
    );
    checks.passed();

    // What our client sends to the same peer path: a space as `%20`, and the ring fingerprint
    // header, which Go servers ignore (every fetch from a Go node in the tests above sends it).
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let our_url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let our = tower_groupcache::Groupcache::builder()
        .open_peer_path()
        .self_url(our_url.clone())
        .peers([stand_in_url.clone(), our_url.clone()])
        .source(GROUP, gopeer::OurLoads::default().source(&our_url))
        .build()
        .expect("a valid node");
    let ring = our.ring();
    let key = (0..10_000)
        .map(|i| format!("a b.from-ours.{i}"))
        .find(|k| ring.owner(k) == Some(stand_in_url.as_str()))
        .expect("a key of the stand-in");
    let got = our.handle().get(GROUP, &key).await.expect("a value");
    assert_bytes(&got, &value(&key), "our node reads fields 2 and 3");
    assert_eq!(our.stats().source(GROUP).unwrap().stats.peer_loads, 1);
    let (path, headers) = seen.lock().unwrap()[1].clone();
    assert_eq!(
        path,
        format!("/_groupcache/{GROUP}/{}", key.replace(' ', "%20")),
        "our client writes a space as `%20`"
    );
    let fingerprint = headers
        .get("x-groupcache-ring")
        .expect("our client sends its ring fingerprint");
    assert_eq!(fingerprint.len(), 8, "8 hex digits: {fingerprint:?}");
    assert_eq!(seen.lock().unwrap().len(), 2, "one request each");
    checks.passed();
    go.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_never_reaches_a_go_node_and_names_it() {
    let binary = go_or_skip!("a_removal_never_reaches_a_go_node_and_names_it");
    let mut checks = Checks::new("a_removal_never_reaches_a_go_node_and_names_it");
    for (ours, go) in TOPOLOGIES {
        let c = Mixed::start(&binary, ours, go).await;
        let our = &c.ours[0];
        let mut go_urls: Vec<String> = c.go.iter().map(|g| g.url.clone()).collect();
        go_urls.sort();
        // A key a Go node owns, and one this node owns: a removal of either reaches every
        // peer, but a Go node has no removal (it would answer a DELETE as a GET, and load).
        for owner in [At::Go(0), At::Ours(0)] {
            let key = c.key_owned_by(owner, "removed.");
            let removal = our.cache.handle().remove(GROUP, &key).await.unwrap();
            assert!(!removal.is_complete(), "{removal:?}");
            let mut unsupported = removal.unsupported.clone();
            unsupported.sort();
            assert_eq!(unsupported, go_urls, "the Go nodes are named");
            assert!(removal.unreachable.is_empty(), "{removal:?}");
            for go in &c.go {
                assert_eq!(
                    go.loads(&key).await,
                    0,
                    "a Go node loaded {key} on a removal"
                );
            }
        }
        let removal = our.cache.handle().clear(GROUP).await.unwrap();
        let mut unsupported = removal.unsupported.clone();
        unsupported.sort();
        assert_eq!(unsupported, go_urls, "{removal:?}");
        assert!(removal.unreachable.is_empty(), "{removal:?}");
        for go in &c.go {
            let stats = go.stats().await;
            assert_eq!(stats.getter_loads, 0, "{stats:?}");
        }
        checks.passed();
        c.stop().await;
    }
    checks.done();
}

/// A TCP proxy on 127.0.0.1 whose target can be switched: the connections to the old target
/// are closed at the switch, as when a node's address passes to another process.
struct SwitchingProxy {
    url: String,
    target: tokio::sync::watch::Sender<std::net::SocketAddr>,
    /// The proxied connections open now.
    live: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// Counts one proxied connection while it is open.
struct LiveConnection(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for LiveConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl SwitchingProxy {
    async fn start(target: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::watch::channel(target);
        let live = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = live.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut switched = rx.clone();
                let target = *switched.borrow_and_update();
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let open = LiveConnection(counted.clone());
                tokio::spawn(async move {
                    let _open = open;
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = switched.changed() => {}
                    }
                });
            }
        });
        Self {
            url,
            target: tx,
            live,
        }
    }

    /// Switches, and returns once every connection to the old target is closed: a request
    /// sent after it cannot be forwarded there on a connection that had not seen the switch.
    async fn switch_to(&self, target: std::net::SocketAddr) {
        self.target.send_replace(target);
        support::eventually(
            "the proxy closes its connections to the old target",
            std::time::Duration::from_secs(10),
            || self.live.load(std::sync::atomic::Ordering::SeqCst) == 0,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_reaching_a_go_node_by_surprise_makes_it_load_nothing() {
    let binary = go_or_skip!("a_removal_reaching_a_go_node_by_surprise_makes_it_load_nothing");
    let mut checks = Checks::new("a_removal_reaching_a_go_node_by_surprise_makes_it_load_nothing");
    let http = Http::default();
    // Node B of this crate, reached by node A through a proxy at address P.
    let b_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b_addr = b_listener.local_addr().unwrap();
    let proxy = SwitchingProxy::start(b_addr).await;
    let b = tower_groupcache::Groupcache::builder()
        .open_peer_path()
        .source(GROUP, gopeer::OurLoads::default().source("b"))
        .build()
        .unwrap();
    let _b_server = support::serve(b_listener, support::app(&b)).await;
    let a_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a_url = format!("http://{}", a_listener.local_addr().unwrap());
    let a = tower_groupcache::Groupcache::builder()
        .open_peer_path()
        .self_url(a_url.clone())
        .peers([a_url.clone(), proxy.url.clone()])
        .source(GROUP, gopeer::OurLoads::default().source("a"))
        .build()
        .unwrap();
    let _a_server = support::serve(a_listener, support::app(&a)).await;
    let ring = a.ring();
    let key = |prefix: &str| {
        (0..10_000)
            .map(|i| format!("{prefix}{i}"))
            .find(|k| ring.owner(k) == Some(proxy.url.as_str()))
            .expect("a key of the proxied peer")
    };
    // A learns that the peer at P speaks the extensions.
    let first = key("learnt.");
    assert_bytes(
        &a.handle().get(GROUP, &first).await.unwrap(),
        &value(&first),
        "via B",
    );

    // A Go node takes address P; A has not heard from it yet.
    let mut go = GoNode::start_on_free_port(&binary, &["SELF".into()], &http).await;
    let go_addr: std::net::SocketAddr = go.url.trim_start_matches("http://").parse().unwrap();
    proxy.switch_to(go_addr).await;
    let removed = key("removed.");
    let removal = a.handle().remove(GROUP, &removed).await.unwrap();
    assert_eq!(removal.unsupported, [proxy.url.as_str()], "{removal:?}");
    assert_eq!(
        go.loads(&removed).await,
        0,
        "the Go node loaded the removed key"
    );
    assert_eq!(go.stats().await.getter_loads, 0);
    checks.passed();
    go.stop().await;
    checks.done();
}

/// `get_many` through a node of ours: a Go owner gets one plain get per key it owns and loads
/// exactly those keys, once; the keys of our nodes come in batches; every value is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_asks_a_go_node_key_by_key_and_loads_each_key_once() {
    let binary = go_or_skip!("get_many_asks_a_go_node_key_by_key_and_loads_each_key_once");
    let mut checks = Checks::new("get_many_asks_a_go_node_key_by_key_and_loads_each_key_once");
    for (ours, go) in TOPOLOGIES {
        let c = Mixed::start(&binary, ours, go).await;
        let our = &c.ours[0];
        let mut keys: Vec<String> = (0..40).map(|i| format!("many:{i}")).collect();
        keys.push("many:0".into());
        let results = our.cache.handle().get_many(GROUP, &keys).await.unwrap();
        for (key, result) in keys.iter().zip(&results) {
            let got = result.as_ref().unwrap_or_else(|e| panic!("{key}: {e}"));
            assert_bytes(got, &value(key), key);
        }
        for key in &keys[..40] {
            assert_eq!(
                c.loaders(key).await,
                [c.owner(key)],
                "{ours}+{go}: {key} is loaded once, by its owner"
            );
        }
        for node in &c.go {
            let owned = keys[..40].iter().filter(|k| c.owner(k) == node.url).count() as u64;
            let stats = node.stats().await;
            assert_eq!(
                stats.server_requests, owned,
                "{ours}+{go}: one plain get per key it owns: {stats:?}"
            );
            assert_eq!(stats.getter_loads, owned, "{stats:?}");
        }
        assert_eq!(our.stats().peer_errors, 0);
        checks.passed();
        c.stop().await;
    }
    checks.done();
}

/// `set` of a key a Go node owns fails with `Unsupported`, sends the Go node nothing it could
/// take for a get, and leaves no copy here; `set` of a key ours owns names the Go nodes, whose
/// hot copies it cannot drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_never_reaches_a_go_node() {
    let binary = go_or_skip!("a_write_never_reaches_a_go_node");
    let mut checks = Checks::new("a_write_never_reaches_a_go_node");
    for (ours, go) in TOPOLOGIES {
        let c = Mixed::start(&binary, ours, go).await;
        let our = &c.ours[0];
        let handle = our.cache.handle();
        let theirs = c.key_owned_by(At::Go(0), "written.");
        let error = handle.set(GROUP, &theirs, "new", None).await.unwrap_err();
        assert_eq!(error.kind(), tower_groupcache::ErrorKind::Unsupported);
        for go in &c.go {
            assert_eq!(go.loads(&theirs).await, 0, "a write made a Go node load");
        }
        // No copy here: the get asks the Go owner, which loads its own value.
        let got = handle.get(GROUP, &theirs).await.unwrap();
        assert_bytes(&got, &value(&theirs), &theirs);

        let mine = c.key_owned_by(At::Ours(0), "written.");
        let removal = handle.set(GROUP, &mine, "new", None).await.unwrap();
        let mut unsupported = removal.unsupported.clone();
        unsupported.sort();
        let mut go_urls: Vec<String> = c.go.iter().map(|g| g.url.clone()).collect();
        go_urls.sort();
        assert_eq!(unsupported, go_urls, "{removal:?}");
        assert_eq!(handle.get(GROUP, &mine).await.unwrap(), "new");
        for (i, go) in c.go.iter().enumerate() {
            let stats = go.stats().await;
            let expected = u64::from(i == 0);
            assert_eq!(
                stats.getter_loads, expected,
                "only the get above loaded, on the owner: {stats:?}"
            );
        }
        checks.passed();
        c.stop().await;
    }
    checks.done();
}
