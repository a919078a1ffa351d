//! The peer path as a node serves it: bad requests, escaping (this crate's and Go's), keys of
//! every shape, `DELETE`, no forwarding, and replies that carry the cached bytes themselves.

use crate::support::{self, Loads, cluster, key_owned_by, request, serve, value_of};
use axum::http::StatusCode;
use bytes::Bytes;
use prost::Message as _;
use tokio::net::TcpListener;
use tower_groupcache::Groupcache;
use tower_groupcache::protocol::{GetResponse, escape};

fn decode(body: &Bytes) -> Bytes {
    GetResponse::decode(body.clone())
        .expect("a GetResponse")
        .value
        .expect("value is set")
}

#[tokio::test]
async fn bad_requests_get_clear_statuses() {
    let loads = Loads::default();
    let nodes = cluster(1, &loads, |b| b).await;
    let base = format!("{}/_groupcache", nodes[0].url);
    let cases = [
        (
            "GET",
            format!("{base}/nope/key"),
            404,
            "no such group: nope",
        ),
        ("GET", format!("{base}/users"), 400, "no key"),
        (
            "GET",
            format!("{base}/users/%zz"),
            400,
            "invalid percent escape",
        ),
        (
            "GET",
            format!("{base}/users/100%"),
            400,
            "invalid percent escape",
        ),
        ("GET", format!("{base}/users/%ff"), 400, "not UTF-8"),
        (
            "GET",
            format!("{base}/us%zzers/k"),
            400,
            "invalid percent escape",
        ),
        ("POST", format!("{base}/users/k"), 405, "method not allowed"),
        ("PUT", format!("{base}/users/k"), 405, "method not allowed"),
        (
            "GET",
            format!("{base}/users/{}", "k".repeat(9_000)),
            414,
            "key too long",
        ),
        (
            "GET",
            format!("{base}/users/{}", "%41".repeat(9_000)),
            414,
            "key too long",
        ),
    ];
    for (method, uri, status, text) in cases {
        let (got, headers, body) = request(method, &uri).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(got.as_u16(), status, "{method} {uri}: {body}");
        assert!(body.contains(text), "{method} {uri}: {body}");
        assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
        if status == 405 {
            assert_eq!(headers["allow"], "GET, DELETE, POST, PUT");
        }
    }
    assert_eq!(loads.total(), 0, "no bad request reached the data source");
    // A path that only starts like the base path is the service's, not the cache's.
    let (status, _, _) = request("GET", &format!("{}/_groupcachex/users/k", nodes[0].url)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn ugly_keys_round_trip_exactly() {
    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| b).await;
    let keys = [
        "",
        "a b",
        "a+b",
        "100%",
        "a/b",
        "a//b",
        "/./..",
        "ü€😀",
        "x?y#z",
        "%41",
        "user:12345",
        "tab\there",
        "line\nbreak",
    ];
    for key in keys {
        // Node to node: whoever owns it, every node gets the right bytes.
        for node in &nodes {
            let got = node.handle().get("users", key).await.unwrap();
            assert_eq!(got, value_of(key), "{key:?} via {}", node.url);
        }
        assert_eq!(loads.count(key), 1, "{key:?} loaded once in the cluster");
        // By hand, escaped as this crate's client does.
        let uri = format!("{}/_groupcache/users/{}", nodes[0].url, escape(key));
        let (status, headers, body) = request("GET", &uri).await;
        assert_eq!(status, 200, "{key:?}");
        assert_eq!(headers["content-type"], "application/x-protobuf");
        assert_eq!(decode(&body), value_of(key), "{key:?}");
    }
    for node in &nodes {
        assert_eq!(node.stats("users").peer_errors, 0);
    }
}

#[tokio::test]
async fn go_client_escaping_is_read_right() {
    let loads = Loads::default();
    let nodes = cluster(1, &loads, |b| b).await;
    let base = format!("{}/_groupcache", nodes[0].url);
    // Go's url.QueryEscape: space as `+`, `+` as `%2B`, `:` as `%3A`, upper- or lower-case hex.
    for (escaped, key) in [
        ("a+b", "a b"),
        ("a%2Bb", "a+b"),
        ("user%3A12345", "user:12345"),
        ("user:12345", "user:12345"),
        ("%c3%bc", "ü"),
        ("", ""),
    ] {
        let (status, _, body) = request("GET", &format!("{base}/users/{escaped}")).await;
        assert_eq!(status, 200, "{escaped}");
        assert_eq!(decode(&body), value_of(key), "{escaped}");
    }
    // The empty value is sent as Go sends it (field 1 present, length 0), after this crate's
    // minute_qps: the value is written last, so that it follows its header from the cache.
    let empty = Groupcache::builder()
        .open_peer_path()
        .source("e", |_k: String| async {
            Ok::<_, std::io::Error>(Bytes::new())
        })
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _server = serve(listener, support::app(&empty)).await;
    let (status, _, body) = request("GET", &format!("http://{addr}/_groupcache/e/k")).await;
    assert_eq!(status, 200);
    assert!(
        body.ends_with(b"\x0a\x00"),
        "field 1 present and empty, written last: {body:?}"
    );
    let reply = GetResponse::decode(body).unwrap();
    assert_eq!(reply.value.as_deref(), Some(&b""[..]));
    assert!(
        reply.minute_qps.is_some_and(|qps| qps > 0.0),
        "the owner's rate for the key"
    );
}

#[tokio::test]
async fn delete_drops_the_key_on_that_node() {
    let loads = Loads::default();
    let nodes = cluster(1, &loads, |b| b).await;
    let a = &nodes[0];
    a.handle().get("users", "k").await.unwrap();
    let (status, _, _) = request("DELETE", &format!("{}/_groupcache/users/k", a.url)).await;
    assert_eq!(status, 200);
    a.handle().get("users", "k").await.unwrap();
    assert_eq!(
        loads.count("k"),
        2,
        "the key was dropped, so it was loaded again"
    );
}

#[tokio::test]
async fn delete_with_the_key_in_the_query_drops_that_key_alone() {
    let loads = Loads::default();
    let nodes = cluster(1, &loads, |b| b).await;
    let a = &nodes[0];
    for key in ["a b/c", "other"] {
        a.handle().get("users", key).await.unwrap();
    }
    let (status, headers, _) = request(
        "DELETE",
        &format!("{}/_groupcache/users?key={}", a.url, escape("a b/c")),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-groupcache-extensions"], "1");
    for key in ["a b/c", "other"] {
        a.handle().get("users", key).await.unwrap();
    }
    assert_eq!(loads.count("a b/c"), 2, "dropped, so loaded again");
    assert_eq!(loads.count("other"), 1, "left alone");
    for query in ["k=x", "key=a&key=b", "key=%zz", "key=a=b"] {
        let uri = format!("{}/_groupcache/users?{query}", a.url);
        let (status, _, body) = request("DELETE", &uri).await;
        assert_eq!(status, 400, "{query}: {body:?}");
    }
    let long = "x".repeat(9 << 10);
    let (status, _, _) =
        request("DELETE", &format!("{}/_groupcache/users?key={long}", a.url)).await;
    assert_eq!(status, 414);
    assert_eq!(loads.count("other"), 1, "nothing else was dropped");
}

#[tokio::test]
async fn peer_requests_are_never_forwarded() {
    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| b).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    // Ask A's peer path for a key A's ring gives to B: A serves it itself.
    let key = key_owned_by(&a.cache, &b.url, "user:");
    let (status, _, body) = request(
        "GET",
        &format!("{}/_groupcache/users/{}", a.url, escape(&key)),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(decode(&body), value_of(&key));
    assert_eq!(loads.of(&key), [a.url.as_str()]);
    assert_eq!(b.stats("users").server_requests, 0);
    assert_eq!(a.stats("users").peer_loads, 0);
}

#[tokio::test]
async fn a_100_kib_key_is_refused_clearly() {
    let loads = Loads::default();
    let nodes = cluster(1, &loads, |b| b).await;
    let key = "k".repeat(100 << 10);
    let err = nodes[0].handle().get("users", &key).await.unwrap_err();
    assert_eq!(err.kind(), tower_groupcache::ErrorKind::KeyTooLong);
    // Longer than any `http::Uri` (64 KiB), so it is written by hand; the server's HTTP layer
    // refuses it before the cache sees it.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(nodes[0].addr).await.unwrap();
    let head =
        format!("GET /_groupcache/users/{key} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.unwrap();
    let status_line = String::from_utf8_lossy(&reply[..reply.len().min(32)]).into_owned();
    assert!(status_line.starts_with("HTTP/1.1 414"), "{status_line:?}");
    // Just under the URI limit, the layer itself answers 414.
    let key = "k".repeat(60 << 10);
    let (status, _, _) = request("GET", &format!("{}/_groupcache/users/{key}", nodes[0].url)).await;
    assert_eq!(status, 414);
    assert_eq!(loads.total(), 0);
}

#[tokio::test]
async fn a_peer_reply_carries_the_cached_bytes_themselves() {
    use http_body_util::BodyExt as _;
    use tower::{Layer as _, ServiceExt as _};

    let cache = Groupcache::builder()
        .open_peer_path()
        .source("users", |key: String| async move {
            Ok::<_, std::io::Error>(Bytes::from(format!("value of {key}, ").repeat(100)))
        })
        .build()
        .unwrap();
    let cached = cache.handle().get("users", "user:1").await.unwrap();
    let service = cache.layer().layer(tower::service_fn(
        |_request: axum::http::Request<axum::body::Body>| async {
            Ok::<_, std::convert::Infallible>(axum::http::Response::new(axum::body::Body::empty()))
        },
    ));
    let request = axum::http::Request::get("/_groupcache/users/user%3A1")
        .body(axum::body::Body::empty())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut frames = Vec::new();
    while let Some(frame) = body.frame().await {
        frames.push(frame.unwrap().into_data().unwrap());
    }
    let whole: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
    let reply = GetResponse::decode(&whole[..]).unwrap();
    assert_eq!(reply.value.as_deref(), Some(&cached[..]));
    assert!(
        frames
            .iter()
            .any(|f| f.as_ptr() == cached.as_ptr() && f.len() == cached.len()),
        "one frame is the cached buffer itself, not a copy"
    );
}
