//! Peer authentication over real HTTP: the credential format of the `auth` module, and every
//! way a credential can be wrong.

use crate::support::{self, Loads, cluster, key_owned_by, now, value_of};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use sha2::Sha256;
use tower_groupcache::{ConfigError, Groupcache};

const SECRET: &str = "test secret, 32 bytes or more, shared";

/// The sender id of the credentials made here.
const SENDER: u64 = 0x7e57_0000_0000_0001;

/// A credential as the `auth` module documents it, from `SENDER` with sequence number `seq`.
fn credential(secret: &str, method: &str, path: &str, t: u64, seq: u64) -> String {
    support::credential(secret, method, path, t, SENDER, seq)
}

async fn send(method: &str, uri: &str, auth: Option<&str>) -> (u16, Bytes) {
    let mut req = axum::http::Request::builder().method(method).uri(uri);
    if let Some(auth) = auth {
        req = req.header("x-groupcache-auth", auth);
    }
    let res = support::client()
        .request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.into_body().collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn a_cluster_with_a_secret_shares_keys_and_refuses_strangers() {
    let loads = Loads::default();
    let nodes = cluster(3, &loads, |b| b.peer_secret(SECRET)).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&a.cache, &b.url, "user:");
    for node in &nodes {
        assert_eq!(
            node.handle().get("users", &key).await.unwrap(),
            value_of(&key)
        );
    }
    assert_eq!(loads.count(&key), 1, "loaded once, by B, for everyone");
    assert_eq!(a.stats("users").peer_errors, 0);

    let path = "/_groupcache/users/secret-key";
    let uri = format!("{}{path}", b.url);
    let t = now();
    let cases = [
        ("no credential", None, "no peer credential"),
        ("garbage", Some("hello".to_owned()), "malformed"),
        (
            "a 16-digit nonce",
            Some(format!("t={t},n={:016x},s={}", 1, "0".repeat(64))),
            "malformed",
        ),
        (
            "wrong secret",
            Some(credential("another secret", "GET", path, t, 1)),
            "wrong",
        ),
        (
            "expired",
            Some(credential(SECRET, "GET", path, t - 3_600, 2)),
            "expired",
        ),
        (
            "from the future",
            Some(credential(SECRET, "GET", path, t + 3_600, 3)),
            "expired",
        ),
        (
            "tampered path",
            Some(credential(SECRET, "GET", "/_groupcache/users/other", t, 4)),
            "wrong",
        ),
        (
            "tampered method",
            Some(credential(SECRET, "DELETE", path, t, 5)),
            "wrong",
        ),
    ];
    for (case, auth, text) in cases {
        let (status, body) = send("GET", &uri, auth.as_deref()).await;
        assert_eq!(status, 401, "{case}");
        assert!(
            String::from_utf8_lossy(&body).contains(text),
            "{case}: {body:?}"
        );
    }
    assert_eq!(
        loads.count("secret-key"),
        0,
        "no refused request reached the data source"
    );

    // A good credential works once; the same credential again is a replay.
    let good = credential(SECRET, "GET", path, t, 6);
    let (status, _) = send("GET", &uri, Some(&good)).await;
    assert_eq!(status, 200);
    let (status, body) = send("GET", &uri, Some(&good)).await;
    assert_eq!(status, 401);
    assert!(String::from_utf8_lossy(&body).contains("replayed"));
    assert_eq!(loads.count("secret-key"), 1);

    // The sender's window: 4,096 numbers up to the highest seen. Below it is too old to tell
    // from a replay; inside it, a number is accepted once, in any order.
    let window = 4096;
    for (seq, expected) in [
        (6 + window, 200),
        (6 + window - 1, 200),
        (6 + window - 1, 401),
        (7, 200),
        (6, 401),
        (5, 401),
    ] {
        let (status, body) =
            send("GET", &uri, Some(&credential(SECRET, "GET", path, t, seq))).await;
        assert_eq!(status, expected, "sequence number {seq}: {body:?}");
        if status == 401 {
            assert!(String::from_utf8_lossy(&body).contains("replayed"));
        }
    }
}

#[tokio::test]
async fn rotation_accepts_the_old_secret_on_nodes_that_have_the_new_one() {
    let loads = Loads::default();
    // The first node already signs with the new secret, the others still with the old one.
    let nodes = cluster(2, &loads, |b| {
        b.peer_secret("new secret, 32 bytes or more, fine!")
            .previous_peer_secret("old secret, 32 bytes or more, fine!")
    })
    .await;
    let path = "/_groupcache/users/k";
    let old = credential("old secret, 32 bytes or more, fine!", "GET", path, now(), 7);
    let (status, _) = send("GET", &format!("{}{path}", nodes[0].url), Some(&old)).await;
    assert_eq!(status, 200, "the old secret is still accepted");
    let new = credential("new secret, 32 bytes or more, fine!", "GET", path, now(), 8);
    let (status, _) = send("GET", &format!("{}{path}", nodes[0].url), Some(&new)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_node_with_another_secret_cannot_fetch_and_loads_locally() {
    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| b.peer_secret(SECRET)).await;
    let b = &nodes[1];
    // A stranger that knows B's address but not the secret.
    let stranger = Groupcache::builder()
        .self_url("http://127.0.0.1:9")
        .peers([b.url.clone()])
        .peer_secret("not the cluster's secret, but long")
        .source("users", loads.source("stranger"))
        .build()
        .unwrap();
    let key = key_owned_by(&stranger, &b.url, "user:");
    assert_eq!(
        stranger.handle().get("users", &key).await.unwrap(),
        value_of(&key)
    );
    assert_eq!(
        loads.of(&key),
        ["stranger"],
        "B refused it, so it loaded the key itself"
    );
    let s = stranger.stats();
    assert_eq!(s.source("users").unwrap().stats.peer_errors, 1);
}

#[test]
fn a_cluster_needs_a_secret_or_an_explicit_open_path() {
    let build = |b: tower_groupcache::GroupcacheBuilder| {
        b.self_url("http://10.0.0.1:8080")
            .peers(["http://10.0.0.2:8080"])
            .build()
    };
    assert_eq!(
        build(Groupcache::builder()).unwrap_err(),
        ConfigError::PeerAuthRequired
    );
    build(Groupcache::builder().open_peer_path()).unwrap();
    build(Groupcache::builder().peer_secret(SECRET)).unwrap();
    assert!(matches!(
        build(Groupcache::builder().peer_secret("")).unwrap_err(),
        ConfigError::ShortPeerSecret { len: 0, .. }
    ));
    // A single node needs neither, but then its peer path is closed...
    let single = Groupcache::builder()
        .self_url("http://10.0.0.1:8080")
        .build()
        .unwrap();
    assert_eq!(
        single.set_peers(["http://10.0.0.2:8080"]).unwrap_err(),
        ConfigError::PeerAuthRequired,
        "nor can one be made into a cluster without one"
    );
}

#[tokio::test]
async fn a_closed_peer_path_answers_403() {
    let single = Groupcache::builder()
        .source(
            "users",
            |k: String| async move { Ok::<_, std::io::Error>(k) },
        )
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _server = support::serve(listener, support::app(&single)).await;
    let (status, _) = send("GET", &format!("http://{addr}/_groupcache/users/k"), None).await;
    assert_eq!(status, 403);
    // The service's own routes are unaffected.
    let (status, body) = send(
        "GET",
        &format!("http://{addr}/get?source=users&key=k"),
        None,
    )
    .await;
    assert_eq!((status, &body[..]), (200, &b"k"[..]));
}

#[tokio::test]
async fn a_batched_get_is_signed_over_its_body() {
    use prost::Message as _;
    use sha2::Digest as _;
    use tower_groupcache::protocol::{GetManyRequest, GetManyResponse};

    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| b.peer_secret(SECRET)).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    // Through the cache: a's batch to b is signed, and answered.
    let keys: Vec<String> = (0..1_000)
        .map(|i| format!("user:{i}"))
        .filter(|k| a.cache.ring().owner(k) == Some(b.url.as_str()))
        .take(5)
        .collect();
    let results = a.handle().get_many("users", &keys).await.unwrap();
    for (key, result) in keys.iter().zip(&results) {
        assert_eq!(result.as_ref().unwrap(), &value_of(key));
        assert_eq!(
            loads.of(key),
            std::slice::from_ref(&b.url),
            "{key} loaded by its owner"
        );
    }
    assert_eq!(a.stats("users").peer_errors, 0);

    // By hand: the credential signs the path, then `#sha256=` and the body's hash.
    let body = |key: &str| {
        GetManyRequest {
            keys: vec![key.to_owned().into()],
        }
        .encode_to_vec()
    };
    let signed = |body: &[u8]| {
        let hash: String = sha2::Sha256::digest(body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("/_groupcache/users#sha256={hash}")
    };
    let uri = format!("{}/_groupcache/users", b.url);
    let good = credential(SECRET, "POST", &signed(&body("user:x")), now(), 1);
    let (status, _, reply) =
        support::post(&uri, &[("x-groupcache-auth", &good)], body("user:x")).await;
    assert_eq!(status, 200, "{reply:?}");
    let reply = GetManyResponse::decode(reply).unwrap();
    assert_eq!(
        reply.results[0].value.as_deref(),
        Some(&value_of("user:x")[..])
    );

    // The same kind of credential over one body, sent with another: refused, nothing loaded.
    let for_x = credential(SECRET, "POST", &signed(&body("user:x")), now(), 2);
    let (status, _, _) =
        support::post(&uri, &[("x-groupcache-auth", &for_x)], body("user:y")).await;
    assert_eq!(status, 401);
    // A credential over the path alone does not do either.
    let path_only = credential(SECRET, "POST", "/_groupcache/users", now(), 3);
    let (status, _, _) =
        support::post(&uri, &[("x-groupcache-auth", &path_only)], body("user:y")).await;
    assert_eq!(status, 401);
    assert!(
        loads.of("user:y").is_empty(),
        "a refused batch loads nothing"
    );
}

/// A request with a body whose body never ends: the answer must not wait for it.
async fn send_endless(method: &str, uri: &str, auth: Option<&str>) -> u16 {
    use http_body_util::StreamBody;
    let endless = StreamBody::new(futures_util::stream::pending::<
        Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
    >());
    let mut req = axum::http::Request::builder().method(method).uri(uri);
    if let Some(auth) = auth {
        req = req.header("x-groupcache-auth", auth);
    }
    let client: hyper_util::client::legacy::Client<_, StreamBody<_>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let res = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        client.request(req.body(endless).unwrap()),
    )
    .await
    .expect("answered without the body")
    .unwrap();
    res.status().as_u16()
}

#[tokio::test]
async fn a_request_with_a_body_is_refused_before_its_body_is_read() {
    let loads = Loads::default();
    let nodes = cluster(1, &loads, |b| b.peer_secret(SECRET)).await;
    let base = format!("{}/_groupcache/users", nodes[0].url);
    let expired = credential(SECRET, "POST", "/_groupcache/users", now() - 3_600, 1);
    for (method, uri, auth) in [
        ("POST", base.clone(), None),
        ("PUT", format!("{base}?key=k"), None),
        ("POST", base.clone(), Some("t=1,n=garbage")),
        ("PUT", format!("{base}?key=k"), Some(expired.as_str())),
    ] {
        assert_eq!(
            send_endless(method, &uri, auth).await,
            401,
            "{method} {auth:?}"
        );
    }
    // Without a secret and with the peer path closed: 403, at once too.
    let closed = Groupcache::builder()
        .source("users", loads.source("closed"))
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let _server = support::serve(listener, support::app(&closed)).await;
    let status = send_endless("PUT", &format!("{url}/_groupcache/users?key=k"), None).await;
    assert_eq!(status, 403);
    assert_eq!(loads.total(), 0);
}

#[tokio::test]
async fn a_write_is_signed_over_its_value() {
    use sha2::Digest as _;

    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| b.peer_secret(SECRET)).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&a.cache, &b.url, "user:");
    // Through the cache: a's write to b is signed, and taken.
    a.handle()
        .set("users", &key, "written", None)
        .await
        .unwrap();
    assert_eq!(b.handle().get("users", &key).await.unwrap(), "written");

    // By hand: a credential over one value, sent with another, is refused and writes nothing.
    let target = format!("/_groupcache/users?key={key}");
    let hash: String = sha2::Sha256::digest(b"mine")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let for_mine = credential(SECRET, "PUT", &format!("{target}#sha256={hash}"), now(), 1);
    let put = |value: &'static str| {
        let (uri, auth) = (format!("{}{target}", b.url), for_mine.clone());
        async move {
            let req = axum::http::Request::builder()
                .method("PUT")
                .uri(uri)
                .header("x-groupcache-auth", auth)
                .body(http_body_util::Full::new(Bytes::from(value)))
                .unwrap();
            let client: hyper_util::client::legacy::Client<_, http_body_util::Full<Bytes>> =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http();
            client.request(req).await.unwrap().status().as_u16()
        }
    };
    assert_eq!(put("theirs").await, 401);
    assert_eq!(b.handle().get("users", &key).await.unwrap(), "written");
    assert_eq!(put("mine").await, 200);
    assert_eq!(b.handle().get("users", &key).await.unwrap(), "mine");
    assert!(loads.of(&key).is_empty(), "no write loads anything");
}

/// The credential comes before anything the path says: a `POST` or `PUT` to a key's path (a
/// method that path does not take) with no credential, or a forged one, is refused `401`,
/// never answered `405` (which would tell a stranger what the path takes).
#[tokio::test]
async fn a_request_with_a_body_on_a_keys_path_is_refused_before_its_method_is_judged() {
    let loads = Loads::default();
    let nodes = cluster(1, &loads, |b| b.peer_secret(SECRET)).await;
    let uri = format!("{}/_groupcache/users/k", nodes[0].url);
    for method in ["POST", "PUT"] {
        for auth in [None, Some("t=1,n=1,s=00")] {
            let (status, body) = send(method, &uri, auth).await;
            assert_eq!(status, 401, "{method} with {auth:?}: {body:?}");
        }
    }
    // With a good credential (over the path and the empty body's hash), the method is what
    // is wrong.
    use sha2::Digest as _;
    let hash: String = Sha256::digest(b"")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let signed = format!("/_groupcache/users/k#sha256={hash}");
    let good = credential(SECRET, "POST", &signed, now(), 1);
    let (status, _) = send("POST", &uri, Some(&good)).await;
    assert_eq!(status, 405);
    assert_eq!(loads.total(), 0);
}
