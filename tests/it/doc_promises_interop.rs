//! Black-box checks of what the documentation promises for mixed clusters (docs/interop.md,
//! docs/protocol.md on Go nodes), for peer authentication (docs/security.md: rotation, clock
//! skew, replay, a node without a secret) and for TLS and mutual TLS (docs/security.md, the
//! rustdoc of `peer_tls`), through the public API, against real golang/groupcache nodes
//! (`tests/interop/gopeer`) and real rustls servers, all on 127.0.0.1.
//!
//! These tests do not write the `interop-ran` marker of `tests/it/interop.rs`: `.ci/run` counts
//! the tests whose name starts with `interop::` against that file, and ours start with
//! `doc_promises_interop::`.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::IntoResponse as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prost::Message as _;
use tokio::net::TcpListener;
use tower_groupcache::protocol::{GetManyRequest, escape};
use tower_groupcache::{ErrorKind, Groupcache, GroupcacheBuilder, HotKeys, Source};

use crate::support::gopeer::{
    At, GROUP, GoNode, Http, Mixed, OurLoads, assert_bytes, go_or_skip, value,
};
use crate::support::recorded::DEADLINE;
use crate::support::{self, Loads, credential, now, value_of};

// ---------------------------------------------------------------------------------------------
// Nodes of ours

/// A node of this crate serving `support::app` on a listener of its own.
struct Ours {
    url: String,
    cache: Groupcache,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Ours {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Ours {
    /// A get of `key` from `GROUP` through this node, which must succeed.
    async fn get(&self, key: &str) -> Bytes {
        self.cache.handle().get(GROUP, key).await.unwrap()
    }

    fn src(&self) -> tower_groupcache::SourceStats {
        self.cache.stats().source(GROUP).expect("the group").stats
    }

    fn refused(&self) -> tower_groupcache::RefusalStats {
        self.cache.stats().cluster.refused_requests
    }

    fn peer_errors_to(&self, peer: &str) -> tower_groupcache::PeerErrorCounts {
        self.cache
            .stats()
            .peer(peer)
            .unwrap_or_else(|| panic!("{peer} is a peer of {}", self.url))
            .errors
    }
}

async fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let url = format!("http://{}", listener.local_addr().unwrap());
    (listener, url)
}

/// A builder for the node at `url` among `peers` (none if empty), loading `GROUP` with
/// `source`.
fn node_at(url: &str, peers: &[String], source: impl Source) -> GroupcacheBuilder {
    let builder = Groupcache::builder().self_url(url);
    let builder = if peers.is_empty() {
        builder
    } else {
        builder.peers(peers.to_vec())
    };
    builder.source(GROUP, source)
}

/// Builds a node from `builder` (self URL, peers and source already set) and serves it.
async fn serve_ours(listener: TcpListener, url: &str, builder: GroupcacheBuilder) -> Ours {
    let cache = builder.build().expect("a valid node");
    let server = support::serve(listener, support::app(&cache)).await;
    Ours {
        url: url.to_owned(),
        cache,
        server,
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP by hand, with a body

async fn send_body(
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = axum::http::Request::builder()
        .method(method.clone())
        .uri(uri);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(body.into())).expect("a valid request");
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let exchange = async {
        let res = client.request(req).await?;
        let (parts, body) = res.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>((parts.status, parts.headers, body))
    };
    match tokio::time::timeout(DEADLINE, exchange).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => panic!("{method} {uri}: {e}"),
        Err(_) => panic!("{method} {uri}: no answer within {DEADLINE:?}"),
    }
}

/// An empty `method` request of `uri` with the credential `auth`.
async fn send_signed(method: Method, uri: &str, auth: &str) -> (StatusCode, HeaderMap, Bytes) {
    send_body(method, uri, &[("x-groupcache-auth", auth)], "").await
}

// ---------------------------------------------------------------------------------------------
// A recording HTTP proxy, and a Go node behind one

/// One request a [`RecordingProxy`] forwarded.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    /// Path and query, as sent.
    target: String,
    headers: HeaderMap,
}

/// Forwards every request to `target` and records it.
struct RecordingProxy {
    #[allow(dead_code)]
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RecordingProxy {
    async fn start(listener: TcpListener, target: String) -> Self {
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let app = {
            let seen = seen.clone();
            Router::new().fallback(move |req: axum::extract::Request| {
                let (seen, client, target) = (seen.clone(), client.clone(), target.clone());
                async move {
                    let (parts, body) = req.into_parts();
                    let pq = parts
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str().to_owned())
                        .unwrap_or_default();
                    seen.lock().unwrap().push(Seen {
                        method: parts.method.clone(),
                        target: pq.clone(),
                        headers: parts.headers.clone(),
                    });
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let mut out = axum::http::Request::builder()
                        .method(parts.method)
                        .uri(format!("{target}{pq}"));
                    for (name, value) in &parts.headers {
                        if name != header::HOST
                            && name != header::CONTENT_LENGTH
                            && name != header::TRANSFER_ENCODING
                            && name != header::CONNECTION
                        {
                            out = out.header(name, value);
                        }
                    }
                    let Ok(response) = client.request(out.body(Full::new(body)).unwrap()).await
                    else {
                        return StatusCode::BAD_GATEWAY.into_response();
                    };
                    let (rp, rb) = response.into_parts();
                    let Ok(bytes) = rb.collect().await.map(|b| b.to_bytes()) else {
                        return StatusCode::BAD_GATEWAY.into_response();
                    };
                    let mut builder = axum::http::Response::builder().status(rp.status);
                    for (name, value) in &rp.headers {
                        if name != header::CONTENT_LENGTH
                            && name != header::TRANSFER_ENCODING
                            && name != header::CONNECTION
                        {
                            builder = builder.header(name, value);
                        }
                    }
                    builder.body(axum::body::Body::from(bytes)).unwrap()
                }
            })
        };
        let server = support::serve(listener, app).await;
        Self { url, seen, server }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A Go node whose self URL is a recording proxy in front of it: every peer request to it
/// passes the proxy, and is recorded.
struct GoBehindProxy {
    proxy: RecordingProxy,
    /// The Go node at its own address, for `/loads` and `/stats` (not recorded).
    go: GoNode,
}

impl GoBehindProxy {
    /// `peers` holds the proxy's URL where the Go node stands.
    async fn start(
        binary: &std::path::Path,
        proxy_listener: TcpListener,
        peers: &[String],
    ) -> Self {
        let proxy_url = format!("http://{}", proxy_listener.local_addr().unwrap());
        let go = GoNode::start_known_as(binary, &proxy_url, peers, &Http::default()).await;
        let proxy = RecordingProxy::start(proxy_listener, go.url.clone()).await;
        Self { proxy, go }
    }
}

/// `Items` of golang/groupcache's `MainCache` or `HotCache` in gopeer's `/stats`.
async fn go_cache_items(http: &Http, node_url: &str, cache: &str) -> u64 {
    let reply = http.get(&format!("{node_url}/stats?group={GROUP}")).await;
    assert_eq!(reply.status, StatusCode::OK);
    let json = String::from_utf8_lossy(&reply.body).into_owned();
    let at = json
        .find(&format!("\"{cache}\""))
        .unwrap_or_else(|| panic!("no {cache} in {json}"));
    let rest = &json[at..];
    let items = rest.find("\"Items\": ").expect("Items") + "\"Items\": ".len();
    rest[items..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

// =============================================================================================
// Mixed clusters (docs/interop.md)
// =============================================================================================

/// Every node of `c` gets `key`, which is loaded once in the whole cluster, by its owner
/// `owner` (a node of `whose`).
async fn got_everywhere_loaded_once(c: &Mixed, shape: &str, key: &str, owner: At, whose: &str) {
    for at in c.all() {
        assert_bytes(
            &c.get(at, key).await,
            &value(key),
            &format!("{shape}: {at} gets {key:.40?}"),
        );
    }
    assert_eq!(
        c.loaders(key).await,
        [c.url(owner)],
        "{shape}: {key:.40?} owned by {whose}, loaded once in the whole cluster"
    );
}

/// The odd keys of the brief: `%`, `+`, `/`, `//`, unicode, and a long one (4,000 bytes).
fn odd_bases() -> Vec<String> {
    vec![
        "100%".into(),
        "%2F%zz".into(),
        "a+b".into(),
        "+".into(),
        "a/b".into(),
        "a//b".into(),
        "ü€日本🦀".into(),
        "l".repeat(4000),
    ]
}

/// docs/interop.md, "What is shared": "for 1,000 keys and 5 odd ones, every node of ours names
/// the same owner as each Go node" and "each key is loaded once in the whole cluster"; the
/// reply is "Tested in both directions: ... empty keys, and keys with a space, `+`, `/`, `%`
/// ... and non-ASCII characters"; "Paths that are not clean (`//` ...)": a Go owner answers
/// 301, our client "counts one peer error, loads the key itself, keeps it in its main cache,
/// and serves it from there the next time", while "a Go node asking our owner for such a key
/// gets the value".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_keys_are_placed_alike_and_loaded_once_in_a_mixed_cluster() {
    let binary = go_or_skip!("odd_keys_are_placed_alike_and_loaded_once_in_a_mixed_cluster");
    for (n_ours, n_go) in [(2, 1), (1, 2)] {
        let c = Mixed::start(&binary, n_ours, n_go).await;
        let shape = format!("{n_ours}+{n_go}");
        // Placement: the same owner on every node, for the odd keys and the empty key.
        let mut keys: Vec<String> = odd_bases();
        keys.push(String::new());
        for go in &c.go {
            for key in &keys {
                let go_owner = go.owner(key).await;
                for our in &c.ours {
                    assert_eq!(
                        our.cache.ring().owner(key),
                        Some(go_owner.as_str()),
                        "{shape}: owner of {:.40?} on {} and Go {}",
                        key,
                        our.url,
                        go.url
                    );
                }
            }
        }

        for (i, base) in odd_bases().into_iter().enumerate() {
            let unclean = base.contains("//");
            // A Go client to our owner: every odd key, `//` included, gets its value and is
            // loaded once, by our owner, through every node.
            let key = c.key_owned_by(At::Ours(n_ours - 1), &format!("{base}.go-to-ours.{i}."));
            let go_errors = c.go[0].stats().await.peer_errors;
            assert_bytes(
                &c.go[0].get(&key).await,
                &value(&key),
                &format!("{shape}: Go gets {key:.40?}"),
            );
            assert_eq!(
                c.go[0].stats().await.peer_errors,
                go_errors,
                "{shape}: {key:.40?}: the Go node's fetch from our owner is no peer error"
            );
            got_everywhere_loaded_once(&c, &shape, &key, At::Ours(n_ours - 1), "ours").await;

            // Our client to a Go owner.
            let key = c.key_owned_by(At::Go(0), &format!("{base}.ours-to-go.{i}."));
            let our = &c.ours[0];
            let before = our.stats();
            assert_bytes(
                &our.get(&key).await,
                &value(&key),
                &format!("{shape}: ours gets {key:.40?}"),
            );
            let after = our.stats();
            if unclean {
                assert_eq!(
                    (after.peer_errors, after.local_loads),
                    (before.peer_errors + 1, before.local_loads + 1),
                    "{shape}: {key:.40?}: Go's 301 is one peer error and a local load"
                );
                assert_eq!(
                    c.loaders(&key).await,
                    [our.url.as_str()],
                    "{shape}: {key:.40?}"
                );
                assert_bytes(&our.get(&key).await, &value(&key), "again");
                assert_eq!(
                    our.stats().peer_errors,
                    after.peer_errors,
                    "{shape}: {key:.40?}: the second get comes from the main cache"
                );
            } else {
                assert_eq!(
                    (after.peer_errors, after.peer_loads),
                    (before.peer_errors, before.peer_loads + 1),
                    "{shape}: {key:.40?}: fetched from the Go owner"
                );
                got_everywhere_loaded_once(&c, &shape, &key, At::Go(0), "Go").await;
            }
        }

        // The empty key, through every node: loaded once, by its owner.
        for at in c.all() {
            assert_bytes(
                &c.get(at, "").await,
                b"value-of:",
                &format!("{shape}: {at}, empty key"),
            );
        }
        assert_eq!(c.loaders("").await, [c.owner("")], "{shape}: the empty key");

        for our in &c.ours {
            assert_eq!(
                our.stats().peer_skips,
                0,
                "{shape}: {} skipped nobody",
                our.url
            );
        }
        c.stop().await;
    }
}

/// docs/security.md: "Longest key: 8 KiB (`max_key_bytes`); longer is `414`"; docs/guide.md,
/// `KeyTooLong`: "`414` ... the key is longer than `max_key_bytes`"; docs/interop.md: for a Go
/// node "any status other than 200 is a peer error ... The asking node then loads the key
/// itself".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_max_key_bytes_in_a_mixed_cluster() {
    let binary = go_or_skip!("a_key_over_max_key_bytes_in_a_mixed_cluster");
    let c = Mixed::start(&binary, 1, 1).await;
    let (our, go) = (&c.ours[0], &c.go[0]);

    // A Go node asks our owner for a 9,000-byte key: our 414 is a peer error for it, and it
    // loads the key itself; ours loads nothing.
    let key = c.key_owned_by(At::Ours(0), &"k".repeat(9000));
    let (go_before, served) = (go.stats().await, our.stats().server_requests);
    assert_bytes(
        &go.get(&key).await,
        &value(&key),
        "a Go node gets a 9,000-byte key",
    );
    let go_after = go.stats().await;
    assert_eq!(
        go_after.peer_errors,
        go_before.peer_errors + 1,
        "{go_after:?}"
    );
    assert_eq!(
        c.loaders(&key).await,
        [go.url.as_str()],
        "loaded by the Go node only"
    );
    assert_eq!(
        our.stats().server_requests,
        served,
        "refused before it counts as a get"
    );
    let (status, _, _) = send_body(
        Method::GET,
        &format!("{}/_groupcache/{GROUP}/{}", our.url, escape(&key)),
        &[],
        "",
    )
    .await;
    assert_eq!(
        status,
        StatusCode::URI_TOO_LONG,
        "our answer to that request"
    );

    // Our node asked for a key over its limit, owned by the Go node: `KeyTooLong`, and the Go
    // node is asked nothing.
    let key = c.key_owned_by(At::Go(0), &"g".repeat(9000));
    let go_before = go.stats().await;
    let err = our.cache.handle().get(GROUP, &key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::KeyTooLong, "{err}");
    assert_eq!(go.stats().await.server_requests, go_before.server_requests);
    assert!(c.loaders(&key).await.is_empty());
    c.stop().await;
}

/// docs/interop.md, "Caches": "A Go node keeps a value it fetched from a peer only in its hot
/// cache, for 1 fetch in 10, and never in its main cache. Our nodes keep a fetched value in the
/// hot cache when the key is popular (`HotKeys::AboveQps`, the default), or 1 in 10 as Go does
/// with `HotKeys::OneInTen`. This changes where repeated gets are served from. It does not
/// change how often a key is loaded." docs/hotkeys.md: the rate is "measured by its owner ... or
/// by this node".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_copies_in_a_mixed_cluster_change_where_gets_are_served_not_loads() {
    let binary =
        go_or_skip!("hot_copies_in_a_mixed_cluster_change_where_gets_are_served_not_loads");
    let http = Http::default();
    let (x_listener, x_url) = bind().await;
    let (y_listener, y_url) = bind().await;
    let mut go = GoNode::start_on_free_port(
        &binary,
        &[x_url.clone(), y_url.clone(), "SELF".into()],
        &http,
    )
    .await;
    let peers = [x_url.clone(), y_url.clone(), go.url.clone()];
    let loads = OurLoads::default();
    let node = |url: &str, hot: HotKeys| {
        node_at(url, &peers, loads.source(url))
            .open_peer_path()
            .hot_keys(hot)
    };
    let x = serve_ours(x_listener, &x_url, node(&x_url, HotKeys::OneInTen)).await;
    let y = serve_ours(y_listener, &y_url, node(&y_url, HotKeys::AboveQps(0.05))).await;
    let owned_by =
        |owner: &str, prefix: &str, n: usize| support::keys_owned_by(&x.cache, owner, prefix, n);

    // X, one in ten: 100 keys of the Go node, fetched once each.
    let keys = owned_by(&go.url, "hot:x:", 100);
    for key in &keys {
        assert_bytes(&x.get(key).await, &value(key), key);
    }
    let promoted = x.src().hot_promotions;
    assert!(
        (1..=40).contains(&promoted),
        "one fetched value in ten kept hot: {promoted} of 100"
    );
    let hot_items = x.cache.stats().source(GROUP).unwrap().hot_cache.items;
    assert_eq!(hot_items, promoted, "each kept value is in the hot cache");
    // The same keys again: the hot ones are served by X, the others fetched again; each key
    // is still loaded once, by the Go node.
    let served_before = go.stats().await.server_requests;
    for key in &keys {
        assert_bytes(&x.get(key).await, &value(key), key);
    }
    assert_eq!(
        go.stats().await.server_requests - served_before,
        100 - promoted,
        "the hot copies answered the second round"
    );
    for key in keys.iter().take(20) {
        assert_eq!(go.loads(key).await, 1, "{key} loaded once, by the Go owner");
        assert!(loads.of(key).is_empty(), "{key} not loaded by ours");
    }
    assert_eq!(go.stats().await.getter_loads, 100);

    // The Go node fetching 100 keys from X: its main cache does not grow, its hot cache holds
    // about a tenth, X loads each key once.
    let mine = owned_by(&x_url, "hot:go:", 100);
    let main_before = go_cache_items(&http, &go.url, "MainCache").await;
    for key in &mine {
        assert_bytes(&go.get(key).await, &value(key), key);
        assert_bytes(&go.get(key).await, &value(key), key);
    }
    assert_eq!(
        go_cache_items(&http, &go.url, "MainCache").await,
        main_before,
        "a Go node never keeps a fetched value in its main cache"
    );
    let go_hot = go_cache_items(&http, &go.url, "HotCache").await;
    assert!(
        (1..=60).contains(&go_hot),
        "Go keeps about 1 fetch in 10 hot: {go_hot}"
    );
    for key in &mine {
        assert_eq!(loads.of(key), [x_url.as_str()], "{key} loaded once, by X");
    }

    // Y, the default policy: a Go node's key asked again and again becomes hot (measured by
    // Y, since a Go owner sends no rate), then Y answers it itself. Loaded once.
    let key = &owned_by(&go.url, "hot:y:", 1)[0];
    let mut gets = 0;
    while y.src().hot_promotions == 0 {
        assert!(
            gets < 50,
            "no hot copy after {gets} gets of one key: {:?}",
            y.src()
        );
        assert_bytes(&y.get(key).await, &value(key), key);
        gets += 1;
    }
    let served = go.stats().await.server_requests;
    for _ in 0..5 {
        assert_bytes(&y.get(key).await, &value(key), key);
    }
    assert_eq!(
        go.stats().await.server_requests,
        served,
        "served from Y's hot copy"
    );
    assert_eq!(
        go.loads(key).await,
        1,
        "loaded once, by the Go owner ({gets} gets to make it hot)"
    );
    assert!(loads.of(key).is_empty());
    go.stop().await;
}

/// docs/interop.md: "Our client sends a `DELETE` only to peers known to speak the extensions,
/// never to a Go node, and `Removal::unsupported` names the Go nodes"; docs/protocol.md: "A Go
/// owner ... is sent one plain get per key" (batched gets), "A `PUT` goes only to a peer known to
/// speak the extensions. A key a Go node owns is not written: `set` fails with
/// `ErrorKind::Unsupported`", `remove_many`: "First every owner is sent its own keys", the
/// probe is "`GET {base_path}` ... which loads nothing", and docs/guide.md: `peers[].requests`
/// counts "`probes` (... once before its first batched get, removal or write)".
/// Everything the Go node receives passes a recording proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_nodes_send_a_go_node_plain_gets_only_whatever_we_ask() {
    let binary = go_or_skip!("our_nodes_send_a_go_node_plain_gets_only_whatever_we_ask");
    let (a_listener, a_url) = bind().await;
    let (b_listener, b_url) = bind().await;
    let (p_listener, p_url) = bind().await;
    let peers = vec![a_url.clone(), b_url.clone(), p_url.clone()];
    let mut go = GoBehindProxy::start(&binary, p_listener, &peers).await;
    let loads = OurLoads::default();
    let node = |url: &str| node_at(url, &peers, loads.source(url)).open_peer_path();
    let a = serve_ours(a_listener, &a_url, node(&a_url)).await;
    let b = serve_ours(b_listener, &b_url, node(&b_url)).await;
    let owned = |owner: &str, prefix: &str| support::key_owned_by(&a.cache, owner, prefix);
    let h = a.cache.handle();
    let (g1, g2, g3, g4) = (
        owned(&p_url, "go1 /x:"),
        owned(&p_url, "go2+%:"),
        owned(&p_url, "go3:"),
        owned(&p_url, "go4:"),
    );
    let (ak, bk) = (owned(&a_url, "a:"), owned(&b_url, "b:"));

    // get_many of Go keys (one twice) and keys of ours.
    let asked = [g1.clone(), g2.clone(), g1.clone(), ak.clone(), bk.clone()];
    let results = h.get_many(GROUP, &asked).await.unwrap();
    for (key, result) in asked.iter().zip(&results) {
        assert_bytes(
            result.as_ref().unwrap_or_else(|e| panic!("{key}: {e}")),
            &value(key),
            key,
        );
    }
    // Removals and writes of every kind.
    let mut go_named = |removal: tower_groupcache::Removal, what: &str| {
        assert_eq!(removal.unsupported, [p_url.as_str()], "{what}: {removal:?}");
        assert!(removal.unreachable.is_empty(), "{what}: {removal:?}");
    };
    go_named(h.remove(GROUP, &g1).await.unwrap(), "remove of a Go key");
    go_named(h.remove(GROUP, &ak).await.unwrap(), "remove of our key");
    go_named(
        h.remove_many(GROUP, &[g2.clone(), g3.clone(), bk.clone()])
            .await
            .unwrap(),
        "remove_many",
    );
    go_named(h.clear(GROUP).await.unwrap(), "clear");
    let err = h.set(GROUP, &g4, "written", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    go_named(
        h.set(GROUP, &ak, "written", None).await.unwrap(),
        "set of our key",
    );
    assert_eq!(h.get(GROUP, &ak).await.unwrap(), "written");
    let _ = &mut go_named;

    // What reached the Go node: plain GETs of key paths (g1 and g2, once each), at most one
    // probe, nothing else.
    let seen = go.proxy.seen();
    let mut key_paths = Vec::new();
    let mut probes = 0;
    for s in &seen {
        assert_eq!(s.method, Method::GET, "only GETs reach a Go node: {s:?}");
        if s.target == "/_groupcache/" {
            probes += 1;
        } else {
            let rest = s
                .target
                .strip_prefix(&format!("/_groupcache/{GROUP}/"))
                .unwrap_or_else(|| panic!("a key path: {s:?}"));
            assert!(!rest.contains('?'), "no query: {s:?}");
            key_paths.push(rest.to_owned());
        }
    }
    assert!(probes <= 1, "{probes} probes: {seen:?}");
    key_paths.sort();
    let mut expected = vec![escape(&g1).to_string(), escape(&g2).to_string()];
    expected.sort();
    assert_eq!(key_paths, expected, "one plain get per Go key asked");
    for key in [&g1, &g2] {
        assert_eq!(go.go.loads(key).await, 1, "{key}");
    }
    for key in [&g3, &g4, &ak, &bk] {
        assert_eq!(
            go.go.loads(key).await,
            0,
            "{key}: a Go node loaded a key it was only asked to drop or write"
        );
    }
    let to_go = a.cache.stats().peer(&p_url).unwrap().clone();
    assert_eq!(
        (
            to_go.requests.batched_gets,
            to_go.requests.removals,
            to_go.requests.writes
        ),
        (0, 0, 0),
        "{to_go:?}"
    );
    assert_eq!(to_go.requests.gets, 2, "{to_go:?}");
    // docs/guide.md lists `unsupported` among `peers[].errors` as "(a removal or write to a
    // Go node)", but `peers[].errors` counts "those [requests] that failed", and none was sent:
    // the figure is printed, not asserted (see the report).
    eprintln!(
        "errors.unsupported toward the Go node after 4 removals and 2 writes: {}",
        to_go.errors.unsupported
    );
    // B, a node of ours, took the removals.
    let to_b = a.cache.stats().peer(&b_url).unwrap().clone();
    assert!(
        to_b.requests.removals >= 1 && to_b.requests.writes == 0,
        "{to_b:?}"
    );
    drop(b);
    go.go.stop().await;
}

/// docs/interop.md: "A Go server does not check the method: a `DELETE` or `POST` of
/// `{base}{group}/{key}` ... was answered as a `GET`, with 200 and the value ... a Go node
/// answers `DELETE {base}{group}?key=...` with 400 and loads nothing"; "`GET {base}` alone ...
/// A Go server answers `400 bad request` and loads nothing"; docs/protocol.md: "it answers both
/// forms [`DELETE` of a key and of a group] `400 bad request` and loads nothing", "A Go node
/// that took a peer's address would answer the `POST` `400` (its path names no key) and load
/// nothing".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_node_asked_for_our_extensions_anyway_loads_nothing() {
    let binary = go_or_skip!("a_go_node_asked_for_our_extensions_anyway_loads_nothing");
    let mut go = GoNode::start_alone(&binary).await;
    let base = format!("{}/_groupcache/", go.url);
    let group = format!("{base}{GROUP}");
    let batch = GetManyRequest {
        keys: vec!["batch:a".into(), "batch:b".into()],
    }
    .encode_to_vec();
    let cases: Vec<(Method, String, Vec<u8>)> = vec![
        (Method::GET, base.clone(), vec![]),
        (Method::DELETE, format!("{group}?key=del:k"), vec![]),
        (Method::DELETE, group.clone(), vec![]),
        (Method::POST, group.clone(), batch.clone()),
        (Method::POST, format!("{group}?remove"), batch.clone()),
    ];
    for (method, uri, body) in cases {
        let (status, _, reply) = send_body(method.clone(), &uri, &[], body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {uri}: {reply:?}");
    }
    for key in ["del:k", "batch:a", "batch:b"] {
        assert_eq!(go.loads(key).await, 0, "{key}");
    }
    assert_eq!(go.stats().await.getter_loads, 0);

    // The key in the path: any method is a get, and loads.
    for (i, method) in [Method::DELETE, Method::POST].into_iter().enumerate() {
        let key = format!("path:{i}");
        let (status, _, _) = send_body(method.clone(), &format!("{group}/{key}"), &[], "").await;
        assert_eq!(status, StatusCode::OK, "{method} of a key's path");
        assert_eq!(go.loads(&key).await, 1, "{method} of a key's path loads it");
    }
    go.stop().await;
}

/// docs/protocol.md, "Writes": "A Go node that got such a `PUT` all the same ... answers
/// `400`, as it does the `DELETE` forms: the path names no key, and it loads nothing". The
/// write is `PUT {base_path}{source}?key={key}`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_reaching_a_go_node_is_answered_as_the_docs_say() {
    let binary = go_or_skip!("a_put_reaching_a_go_node_is_answered_as_the_docs_say");
    let mut go = GoNode::start_alone(&binary).await;
    let uri = format!("{}/_groupcache/{GROUP}?key=put:k", go.url);
    let (status, _, body) = send_body(Method::PUT, &uri, &[], "a value").await;
    let loads = go.loads("put:k").await;
    go.stop().await;
    assert_eq!(
        (status, loads),
        (StatusCode::BAD_REQUEST, 0),
        "docs: the Go node answers the PUT 400 and loads nothing; got {status} {body:?}"
    );
}

// =============================================================================================
// Peer authentication (docs/security.md)
// =============================================================================================

const OLD: &str = "the old secret of the cluster, 32+ bytes";
const NEW: &str = "the new secret of the cluster, 32+ bytes";

/// Secrets of one rotation stage: (current, previous).
type Stage = (&'static str, Option<&'static str>);

/// Two nodes, A with stage `a` and B with stage `b`, sharing `loads`.
async fn pair(a: Stage, b: Stage, loads: &Loads) -> (Ours, Ours) {
    let (a_listener, a_url) = bind().await;
    let (b_listener, b_url) = bind().await;
    let peers = [a_url.clone(), b_url.clone()];
    let node = |url: &str, (current, previous): Stage| {
        let mut builder = node_at(url, &peers, loads.source(url)).peer_secret(current);
        if let Some(previous) = previous {
            builder = builder.previous_peer_secret(previous);
        }
        builder
    };
    let a = serve_ours(a_listener, &a_url, node(&a_url, a)).await;
    let b = serve_ours(b_listener, &b_url, node(&b_url, b)).await;
    (a, b)
}

fn key_of(node: &Ours, owner: &Ours, prefix: &str) -> String {
    support::key_owned_by(&node.cache, &owner.url, prefix)
}

/// docs/security.md, "Rotating the secret": "Three rollouts, so that no peer request is refused
/// at any point" (step 1 `peer_secret(old)` + `previous_peer_secret(new)`, step 2 the reverse,
/// step 3 `peer_secret(new)` alone); and "Skipping step 1 works too: requests from updated
/// nodes to nodes not yet updated are refused during the rollout, and those keys are loaded
/// locally meanwhile (no failed get, some duplicate loads, counted as `peer_errors`)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_rotation_in_three_rollouts_refuses_no_peer_request() {
    let step0: Stage = (OLD, None);
    let step1: Stage = (OLD, Some(NEW));
    let step2: Stage = (NEW, Some(OLD));
    let step3: Stage = (NEW, None);
    // During each rollout, a node already at the next step beside one not yet.
    for (n, (sa, sb)) in [(step0, step1), (step1, step2), (step2, step3)]
        .into_iter()
        .enumerate()
    {
        let loads = Loads::default();
        let (a, b) = pair(sa, sb, &loads).await;
        for (asker, owner) in [(&a, &b), (&b, &a)] {
            let key = key_of(asker, owner, &format!("rot{n}:"));
            assert_eq!(asker.get(&key).await, value_of(&key));
            assert_eq!(
                loads.of(&key),
                [owner.url.as_str()],
                "rollout {}: {key} loaded by its owner",
                n + 1
            );
        }
        for node in [&a, &b] {
            assert_eq!(node.src().peer_errors, 0, "rollout {}: {}", n + 1, node.url);
            assert_eq!(
                node.refused(),
                Default::default(),
                "rollout {}: {} refused nothing",
                n + 1,
                node.url
            );
        }
    }

    // Step 1 skipped: an updated node (new, previous old) beside one with the old secret alone.
    let loads = Loads::default();
    let (updated, old) = pair(step2, step0, &loads).await;
    let key = key_of(&updated, &old, "skip:");
    assert_eq!(updated.get(&key).await, value_of(&key), "no failed get");
    assert_eq!(
        loads.of(&key),
        [updated.url.as_str()],
        "refused, so loaded locally"
    );
    assert_eq!(updated.src().peer_errors, 1);
    assert_eq!(old.refused().bad_signature, 1, "{:?}", old.refused());
    let key = key_of(&old, &updated, "skip-back:");
    assert_eq!(old.get(&key).await, value_of(&key));
    assert_eq!(
        loads.of(&key),
        [updated.url.as_str()],
        "the old secret is still accepted"
    );
    assert_eq!(old.src().peer_errors, 0);

    // Control: step 1 beside step 3 (not adjacent) is refused, so the checks above mean
    // something.
    let loads = Loads::default();
    let (s1, s3) = pair(step1, step3, &loads).await;
    let key = key_of(&s1, &s3, "control:");
    assert_eq!(s1.get(&key).await, value_of(&key));
    assert_eq!(loads.of(&key), [s1.url.as_str()]);
    assert_eq!(s3.refused().bad_signature, 1);
}

/// docs/security.md: "A node answers `401` to a request whose credential is ... more than 30
/// seconds away from its clock (expired)", counted as `expired`; "A refused credential costs no
/// cache or data-source work". Credentials 20 s off either way pass; 40 s off are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_more_than_30_s_off_is_expired_and_loads_nothing() {
    let loads = Loads::default();
    let (listener, url) = bind().await;
    let node = serve_ours(
        listener,
        &url,
        node_at(&url, &[], loads.source(&url)).peer_secret(OLD),
    )
    .await;
    let sender = 0x5ce0_0000_0000_0001;
    let t = now();
    for (i, (t, expected)) in [
        (t - 20, 200),
        (t + 20, 200),
        (t - 40, 401),
        (t + 40, 401),
        (t - 3600, 401),
    ]
    .into_iter()
    .enumerate()
    {
        let path = format!("/_groupcache/{GROUP}/skew:{i}");
        let auth = credential(OLD, "GET", &path, t, sender, i as u64 + 1);
        let (status, _, body) = send_signed(Method::GET, &format!("{url}{path}"), &auth).await;
        assert_eq!(status.as_u16(), expected, "skew case {i}: {body:?}");
        if expected == 401 {
            assert!(
                String::from_utf8_lossy(&body).contains("expired"),
                "{body:?}"
            );
            assert_eq!(
                loads.count(&format!("skew:{i}")),
                0,
                "a refused request loaded"
            );
        } else {
            assert_eq!(loads.count(&format!("skew:{i}")), 1);
        }
    }
    assert_eq!(node.refused().expired, 3, "{:?}", node.refused());
    assert_eq!(
        node.src().server_requests,
        2,
        "refused requests are no gets"
    );
}

/// docs/security.md: a credential "already seen (replayed)" is answered `401` and counted as
/// `replayed`; the signature covers "the method, the request path exactly as sent"; and "A
/// refused credential costs no cache or data-source work". The credential is one a real node
/// sent, captured by a proxy between the two nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_captured_from_a_real_node_cannot_be_replayed() {
    let loads = Loads::default();
    let (a_listener, a_url) = bind().await;
    let (b_listener, b_direct) = bind().await;
    let (p_listener, p_url) = bind().await;
    // B is known to the cluster by the proxy's URL.
    let peers = vec![a_url.clone(), p_url.clone()];
    let node = |url: &str, name: &str| node_at(url, &peers, loads.source(name)).peer_secret(OLD);
    let a = serve_ours(a_listener, &a_url, node(&a_url, "a")).await;
    let b = serve_ours(b_listener, &b_direct, node(&p_url, "b")).await;
    let proxy = RecordingProxy::start(p_listener, b_direct.clone()).await;
    let key = support::key_owned_by(&a.cache, &p_url, "replay:");
    assert_eq!(a.get(&key).await, value_of(&key));
    assert_eq!(loads.of(&key), ["b"], "fetched from B through the proxy");
    let captured = proxy
        .seen()
        .into_iter()
        .find(|s| s.method == Method::GET && s.target.ends_with(&escape(&key).to_string()))
        .expect("A's signed get passed the proxy");
    let auth = captured
        .headers
        .get("x-groupcache-auth")
        .expect("A signs its requests")
        .to_str()
        .unwrap()
        .to_owned();

    // Replayed as it was: refused.
    b.cache.handle().remove(GROUP, &key).await.unwrap();
    let captured_uri = format!("{b_direct}{}", captured.target);
    let (status, _, body) = send_signed(Method::GET, &captured_uri, &auth).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body:?}");
    assert!(
        String::from_utf8_lossy(&body).contains("replayed"),
        "{body:?}"
    );
    assert_eq!(b.refused().replayed, 1, "{:?}", b.refused());
    // On another path, or with another method: the signature no longer matches.
    let other = format!("/_groupcache/{GROUP}/replay-other");
    let (status, _, body) = send_signed(Method::GET, &format!("{b_direct}{other}"), &auth).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body:?}");
    let (status, _, body) = send_signed(Method::DELETE, &captured_uri, &auth).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body:?}");
    assert_eq!(b.refused().bad_signature, 2, "{:?}", b.refused());
    assert_eq!(
        loads.of(&key),
        ["b"],
        "no refused request loaded the key again"
    );
    assert!(loads.of("replay-other").is_empty());
    // B's removal above dropped the key; a fresh, signed get from A still works.
    assert_eq!(a.get(&key).await, value_of(&key));
}

/// docs/security.md: "A node answers `401` to a request whose credential is missing"; "A
/// single node without a secret serves no peer requests (403)"; "golang/groupcache speaks no
/// authentication"; docs/protocol.md, "The client side": `401`, `403` -> "the key is loaded
/// here", `peer_errors`; docs/guide.md: `peers[].errors.status` counts "`401`, `403`"; the
/// rustdoc of `open_peer_path`: "Serves peers without authentication".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_secret_beside_one_with_a_secret() {
    let binary = go_or_skip!("a_node_without_a_secret_beside_one_with_a_secret");
    let loads = Loads::default();
    // O: open peer path, no secret. S: a secret.
    let (o_listener, o_url) = bind().await;
    let (s_listener, s_url) = bind().await;
    let peers = [o_url.clone(), s_url.clone()];
    let node = |url: &str, name: &str| node_at(url, &peers, loads.source(name));
    let o = serve_ours(o_listener, &o_url, node(&o_url, "o").open_peer_path()).await;
    let s = serve_ours(s_listener, &s_url, node(&s_url, "s").peer_secret(OLD)).await;
    let key = key_of(&o, &s, "unsigned:");
    assert_eq!(o.get(&key).await, value_of(&key));
    assert_eq!(loads.of(&key), ["o"], "refused by S, loaded by O");
    assert_eq!(o.src().peer_errors, 1);
    assert_eq!(
        o.peer_errors_to(&s_url).status,
        1,
        "{:?}",
        o.peer_errors_to(&s_url)
    );
    assert!(s.refused().missing >= 1, "{:?}", s.refused());
    assert_eq!(s.src().server_requests, 0, "refused before any work");
    // S signs; O's open path serves it.
    let key = key_of(&s, &o, "signed:");
    assert_eq!(s.get(&key).await, value_of(&key));
    assert_eq!(loads.of(&key), ["o"]);
    assert_eq!(s.src().peer_errors, 0);

    // C: a single node (self URL, no peers, no secret): its peer path is closed.
    let (c_listener, c_url) = bind().await;
    let c = serve_ours(c_listener, &c_url, node_at(&c_url, &[], loads.source("c"))).await;
    let (s2_listener, s2_url) = bind().await;
    let s2_peers = [s2_url.clone(), c_url.clone()];
    let s2_node = node_at(&s2_url, &s2_peers, loads.source("s2")).peer_secret(OLD);
    let s2 = serve_ours(s2_listener, &s2_url, s2_node).await;
    let key = key_of(&s2, &c, "closed:");
    assert_eq!(s2.get(&key).await, value_of(&key));
    assert_eq!(loads.of(&key), ["s2"], "403, so loaded locally");
    assert_eq!(
        s2.peer_errors_to(&c_url).status,
        1,
        "{:?}",
        s2.peer_errors_to(&c_url)
    );
    assert_eq!(c.refused().closed, 1, "{:?}", c.refused());

    // A Go node beside a node of ours with a secret: the Go node's unsigned fetch is refused
    // (a peer error for it, and it loads the key itself); ours fetches from Go normally.
    let http = Http::default();
    let (g_listener, g_our_url) = bind().await;
    let go_loads = OurLoads::default();
    let mut go =
        GoNode::start_on_free_port(&binary, &[g_our_url.clone(), "SELF".into()], &http).await;
    let g_peers = [g_our_url.clone(), go.url.clone()];
    let g_node = node_at(&g_our_url, &g_peers, go_loads.source(&g_our_url)).peer_secret(OLD);
    let ours = serve_ours(g_listener, &g_our_url, g_node).await;
    let find = |owner: &str, prefix: &str| support::key_owned_by(&ours.cache, owner, prefix);
    let key = find(&g_our_url, "go-unsigned:");
    let before = go.stats().await;
    assert_bytes(
        &go.get(&key).await,
        &value(&key),
        "a Go node refused by ours",
    );
    let after = go.stats().await;
    assert_eq!(after.peer_errors, before.peer_errors + 1, "{after:?}");
    assert_eq!(go.loads(&key).await, 1);
    assert!(go_loads.of(&key).is_empty(), "ours loaded nothing");
    assert!(ours.refused().missing >= 1, "{:?}", ours.refused());
    let key = find(&go.url, "to-go-signed:");
    assert_bytes(&ours.get(&key).await, &value(&key), "ours asks Go");
    assert_eq!(go.loads(&key).await, 1);
    assert_eq!(ours.src().peer_errors, 0, "Go ignores the credential");
    go.stop().await;
}

// =============================================================================================
// TLS and mutual TLS (docs/security.md, "Mutual TLS"; the rustdoc of `peer_tls` and `PeerTls`)
// =============================================================================================

#[cfg(feature = "tls")]
mod tls {
    use super::*;
    use crate::support::pki::{Ca, serve_tls};
    use tower_groupcache::PeerTls;

    /// Trusts `trusted`, presenting a client certificate of `client_ca` if any.
    fn peer_tls(trusted: &Ca, client_ca: Option<&Ca>) -> PeerTls {
        let tls = PeerTls::from_pem(trusted.pem.as_bytes()).unwrap();
        match client_ca {
            Some(ca) => {
                let (cert, key) = ca.node();
                tls.client_certificate(cert.as_bytes(), key.as_bytes())
                    .unwrap()
            }
            None => tls,
        }
    }

    /// A port of 127.0.0.1 picked free (bound, then released) for a node that never serves.
    async fn free_url(scheme: &str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("{scheme}://{}", listener.local_addr().unwrap())
    }

    /// B serves TLS with `server` (a certificate of `server_ca`), requiring a client
    /// certificate of `server_ca`; A trusts `a_trusts` and presents a certificate of
    /// `a_cert_ca`, if any.
    struct Tls {
        server_ca: Arc<Ca>,
        server: (String, String),
        a_trusts: Arc<Ca>,
        a_cert_ca: Option<Arc<Ca>>,
    }

    impl Tls {
        /// Mutual TLS that works: everything of `ca`, B's certificate for 127.0.0.1.
        fn mutual(ca: &Arc<Ca>) -> Self {
            Self {
                server: ca.node(),
                server_ca: ca.clone(),
                a_trusts: ca.clone(),
                a_cert_ca: Some(ca.clone()),
            }
        }

        /// Mutual TLS of a new CA, B's certificate for `names` (`expired`: valid in 2000).
        fn of_new_ca(names: &[&str], expired: bool) -> Self {
            let ca = Ca::new();
            Self {
                server: ca.cert(names, expired),
                ..Self::mutual(&ca)
            }
        }
    }

    /// How B serves, and how A reaches it.
    enum Case {
        Tls(Tls),
        /// B serves plain HTTP; A asks it over https.
        PlainServerHttpsUrl,
        /// B serves TLS; A asks it over plain http.
        TlsServerHttpUrl,
    }

    /// A, which never serves, and B, served at its URL as A knows it.
    struct Setup {
        a: Groupcache,
        b: Ours,
    }

    /// A node named `name` in `loads`, with the cluster's secret, `peers` and `tls` if any.
    fn node(
        self_url: String,
        peers: [String; 2],
        tls: Option<PeerTls>,
        loads: &Loads,
        name: &str,
    ) -> Groupcache {
        let mut builder = node_at(&self_url, &peers, loads.source(name)).peer_secret(super::OLD);
        if let Some(tls) = tls {
            builder = builder.peer_tls(tls);
        }
        builder.build().unwrap()
    }

    async fn setup(case: Case, loads: &Loads) -> Setup {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (b_url, a, b, server) = match case {
            Case::Tls(Tls {
                server_ca,
                server,
                a_trusts,
                a_cert_ca,
            }) => {
                let b_url = format!("https://{addr}");
                let a_url = free_url("https").await;
                let peers = [a_url.clone(), b_url.clone()];
                let tls = peer_tls(&server_ca, Some(&server_ca));
                let b = node(b_url.clone(), peers.clone(), Some(tls), loads, "b");
                let handle = serve_tls(listener, support::app(&b), &server_ca, &server);
                let tls = peer_tls(&a_trusts, a_cert_ca.as_deref());
                let a = node(a_url, peers, Some(tls), loads, "a");
                (b_url, a, b, handle)
            }
            Case::PlainServerHttpsUrl => {
                let ca = Ca::new();
                let b_url = format!("https://{addr}");
                let a_url = free_url("https").await;
                let b_peers = [a_url.replacen("https", "http", 1), format!("http://{addr}")];
                let b = node(format!("http://{addr}"), b_peers, None, loads, "b");
                let handle = support::serve(listener, support::app(&b)).await;
                let tls = peer_tls(&ca, Some(&ca));
                let a = node(a_url.clone(), [a_url, b_url.clone()], Some(tls), loads, "a");
                (b_url, a, b, handle)
            }
            Case::TlsServerHttpUrl => {
                let ca = Ca::new();
                let b_url = format!("http://{addr}");
                let a_url = free_url("http").await;
                let b_peers = [
                    a_url.replacen("http", "https", 1),
                    format!("https://{addr}"),
                ];
                let tls = peer_tls(&ca, Some(&ca));
                let b = node(format!("https://{addr}"), b_peers, Some(tls), loads, "b");
                let handle = serve_tls(listener, support::app(&b), &ca, &ca.node());
                let a = node(a_url.clone(), [a_url, b_url.clone()], None, loads, "a");
                (b_url, a, b, handle)
            }
        };
        let b = Ours {
            url: b_url,
            cache: b,
            server,
        };
        Setup { a, b }
    }

    /// A refused connection: A's get succeeds by a local load; B loads nothing and serves no
    /// get; A counts one peer error, of a connection kind. Returns the kinds counted.
    async fn refused(name: &str, s: &Setup, loads: &Loads) -> Vec<(&'static str, u64)> {
        let key = support::key_owned_by(&s.a, &s.b.url, &format!("{name}:"));
        assert_eq!(
            s.a.handle().get(GROUP, &key).await.unwrap(),
            value_of(&key),
            "{name}: the get succeeds"
        );
        assert_eq!(
            loads.of(&key),
            ["a"],
            "{name}: loaded by A alone, nothing by B"
        );
        let a_stats = s.a.stats();
        let src = a_stats.source(GROUP).unwrap().stats;
        assert_eq!(
            (src.peer_errors, src.local_loads),
            (1, 1),
            "{name}: {src:?}"
        );
        let b_src = s.b.cache.stats().source(GROUP).unwrap().stats;
        assert_eq!(
            b_src.server_requests, 0,
            "{name}: B served nothing: {b_src:?}"
        );
        let errors = a_stats.peer(&s.b.url).unwrap().errors;
        let kinds: Vec<_> = errors
            .by_kind()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect();
        eprintln!("{name}: peer error kinds {kinds:?}");
        assert_eq!(errors.total(), 1, "{name}: {errors:?}");
        assert!(
            errors.connect + errors.request == 1,
            "{name}: a failed connection is `connect` or `request`: {errors:?}"
        );
        kinds
    }

    /// docs/security.md, "Mutual TLS": `https://` peers with `peer_tls(..)`, "your own roots and
    /// a client certificate"; `tests/it/tls.rs` "checks that a client without a certificate is
    /// refused (its get still succeeds by a local load)". The control: the right certificates
    /// fetch from the owner, loaded once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mutual_tls_fetches_from_the_owner_and_refuses_a_client_without_a_certificate() {
        let loads = Loads::default();
        let ca = Ca::new();
        let s = setup(Case::Tls(Tls::mutual(&ca)), &loads).await;
        let key = support::key_owned_by(&s.a, &s.b.url, "mtls:");
        assert_eq!(s.a.handle().get(GROUP, &key).await.unwrap(), value_of(&key));
        assert_eq!(
            loads.of(&key),
            ["b"],
            "fetched from its owner over mutual TLS"
        );
        assert_eq!(s.a.stats().source(GROUP).unwrap().stats.peer_errors, 0);

        let loads = Loads::default();
        let no_client_certificate = Tls {
            a_cert_ca: None,
            ..Tls::mutual(&ca)
        };
        let s = setup(Case::Tls(no_client_certificate), &loads).await;
        refused("no-client-certificate", &s, &loads).await;
    }

    /// docs/security.md, "Mutual TLS"; docs/protocol.md, "The client side": "no connection ...
    /// the key is loaded here | `peer_errors` | [counts toward skipping] yes"; docs/guide.md,
    /// `peers[].errors`: "`connect`, `request` (the connection failed mid-exchange)"; "A refused
    /// credential costs no cache or data-source work" (here: nothing is loaded by a refused
    /// connection).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_peers_refused_at_the_handshake_load_locally_and_nothing_remotely() {
        /// How to make one case's certificates and nodes.
        type MakeCase = Box<dyn Fn() -> Case>;
        let mut report = Vec::new();
        let cases: Vec<(&str, MakeCase)> = vec![
            (
                "wrong-ca",
                Box::new(|| {
                    Case::Tls(Tls {
                        a_trusts: Ca::new(),
                        ..Tls::mutual(&Ca::new())
                    })
                }),
            ),
            (
                "expired",
                Box::new(|| Case::Tls(Tls::of_new_ca(&["127.0.0.1"], true))),
            ),
            (
                "wrong-host",
                Box::new(|| Case::Tls(Tls::of_new_ca(&["other.example"], false))),
            ),
            (
                "client-certificate-of-another-ca",
                Box::new(|| {
                    Case::Tls(Tls {
                        a_cert_ca: Some(Ca::new()),
                        ..Tls::mutual(&Ca::new())
                    })
                }),
            ),
            (
                "plain-server-https-url",
                Box::new(|| Case::PlainServerHttpsUrl),
            ),
            ("tls-server-http-url", Box::new(|| Case::TlsServerHttpUrl)),
        ];
        for (name, case) in cases {
            let loads = Loads::default();
            let s = setup(case(), &loads).await;
            report.push((name, refused(name, &s, &loads).await));
            // Three more keys: the third failure in a row gets B skipped (peer health), and
            // every get still succeeds.
            for i in 0..3 {
                let key = support::key_owned_by(&s.a, &s.b.url, &format!("{name}:more{i}:"));
                assert_eq!(s.a.handle().get(GROUP, &key).await.unwrap(), value_of(&key));
                assert_eq!(loads.of(&key), ["a"], "{name}");
            }
            let src = s.a.stats().source(GROUP).unwrap().stats;
            assert_eq!(src.peer_errors + src.peer_skips, 4, "{name}: {src:?}");
            assert!(
                src.peer_skips >= 1,
                "{name}: a peer refused at the handshake counts toward skipping: {src:?}"
            );
            assert_eq!(
                s.b.cache.stats().source(GROUP).unwrap().stats.loads,
                0,
                "{name}"
            );
        }
        eprintln!("TLS refusals by kind: {report:?}");
    }
}
