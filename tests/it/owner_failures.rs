//! When the owner of a key does not give its value. An owner that is down, hangs, answers
//! `500`, garbage or a redirect, sends a value over the limit or a body without end costs a
//! peer error and a local load, not a failed get. An owner whose data source fails passes the
//! error on and is not counted as failing; a value over the asker's limit does not get a
//! healthy owner skipped; and a value whose expiry already passed is not kept.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::stand_in::{StandIn, node_beside};
use crate::support::{self, Loads, cluster, key_owned_by, serve, value_of};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;
use tokio::net::TcpListener;
use tower_groupcache::Groupcache;

/// What a fake peer does with every request.
#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    Down,
    Hangs,
    Status500,
    TruncatedProtobuf,
    Garbage,
    Redirect,
}

async fn fake_peer(
    misbehaviour: Misbehaviour,
) -> (SocketAddr, Option<tokio::task::JoinHandle<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = move || async move {
        match misbehaviour {
            Misbehaviour::Status500 => (StatusCode::INTERNAL_SERVER_ERROR, Bytes::from("boom")),
            Misbehaviour::TruncatedProtobuf => {
                (StatusCode::OK, Bytes::from_static(b"\x0a\x10short"))
            }
            Misbehaviour::Garbage => (StatusCode::OK, Bytes::from_static(b"\xff\xff\xff\xff")),
            Misbehaviour::Redirect => (StatusCode::MOVED_PERMANENTLY, Bytes::new()),
            Misbehaviour::Down | Misbehaviour::Hangs => unreachable!(),
        }
    };
    match misbehaviour {
        Misbehaviour::Down => {
            drop(listener);
            (addr, None)
        }
        Misbehaviour::Hangs => {
            // Accepts connections and never answers.
            let task = tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((socket, _)) = listener.accept().await {
                    held.push(socket);
                }
            });
            (addr, Some(task))
        }
        _ => {
            let app = Router::new().route("/{*rest}", get(answer));
            (addr, Some(serve(listener, app).await))
        }
    }
}

#[tokio::test]
async fn a_failing_peer_costs_a_local_load_not_a_failed_get() {
    for misbehaviour in [
        Misbehaviour::Down,
        Misbehaviour::Hangs,
        Misbehaviour::Status500,
        Misbehaviour::TruncatedProtobuf,
        Misbehaviour::Garbage,
        Misbehaviour::Redirect,
    ] {
        let (fake_addr, fake_task) = fake_peer(misbehaviour).await;
        let fake = format!("http://{fake_addr}");
        let loads = Loads::default();
        let nodes = cluster(1, &loads, |b| {
            b.peers([fake.clone()])
                .peer_timeout(Duration::from_millis(300))
        })
        .await;
        let a = &nodes[0];
        let key = key_owned_by(&a.cache, &fake, "user:");
        let got = a.handle().get("users", &key).await;
        assert_eq!(got.unwrap(), value_of(&key), "{misbehaviour:?}");
        let s = a.stats("users");
        assert_eq!(
            (s.peer_errors, s.peer_loads, s.local_loads),
            (1, 0, 1),
            "{misbehaviour:?}"
        );
        // The fallback value is kept in the main cache: the next get is a hit.
        a.handle().get("users", &key).await.unwrap();
        assert_eq!(loads.count(&key), 1, "{misbehaviour:?}");
        assert_eq!(a.stats("users").peer_errors, 1, "{misbehaviour:?}");
        if let Some(task) = fake_task {
            task.abort();
        }
    }
}

#[tokio::test]
async fn a_peer_value_over_the_limit_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let big = Groupcache::builder()
        .open_peer_path()
        .self_url(format!("http://{addr}"))
        .source("users", |_k: String| async {
            Ok::<_, std::io::Error>(vec![7u8; 100_000])
        })
        .build()
        .unwrap();
    let _server = serve(listener, support::app(&big)).await;
    let peer = format!("http://{addr}");
    let loads = Loads::default();
    let nodes = cluster(1, &loads, |b| {
        b.peers([peer.clone()]).max_value_bytes(10_000)
    })
    .await;
    let a = &nodes[0];
    let key = key_owned_by(&a.cache, &peer, "user:");
    assert_eq!(a.handle().get("users", &key).await.unwrap(), value_of(&key));
    assert_eq!(a.stats("users").peer_errors, 1);
}

#[tokio::test]
async fn a_peer_that_sends_an_endless_body_is_cut_off() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let endless = move || {
        let counter = counter.clone();
        async move {
            let chunks = futures_util::stream::repeat_with(move || {
                counter.fetch_add(64 << 10, Ordering::Relaxed);
                Ok::<_, std::convert::Infallible>(Bytes::from_static(&[0x0a; 64 << 10]))
            });
            axum::body::Body::from_stream(chunks)
        }
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = format!("http://{}", listener.local_addr().unwrap());
    let _server = serve(listener, Router::new().route("/{*rest}", get(endless))).await;

    let loads = Loads::default();
    let nodes = cluster(1, &loads, |b| {
        b.peers([peer.clone()]).max_value_bytes(1 << 20)
    })
    .await;
    let a = &nodes[0];
    let key = key_owned_by(&a.cache, &peer, "user:");
    assert_eq!(a.handle().get("users", &key).await.unwrap(), value_of(&key));
    assert_eq!(a.stats("users").peer_errors, 1);
    // The client stopped reading at the limit; the socket buffers hold at most a few MiB more.
    let sent = sent.load(Ordering::Relaxed);
    assert!(
        sent < 64 << 20,
        "{sent} bytes were produced before the client hung up"
    );
}

#[tokio::test]
async fn an_owners_failing_source_is_not_loaded_again_by_the_asker() {
    let loads = Loads::default();
    let nodes = support::cluster(3, &loads, |b| b).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    for round in 0..5 {
        let key = support::key_owned_by(&a.cache, &b.url, &format!("fail:{round}:"));
        let error = a.handle().get("users", &key).await.unwrap_err();
        assert!(error.is_load(), "{error:?}");
        assert_eq!(
            loads.of(&key),
            [b.url.as_str()],
            "the back end is called once"
        );
    }
    let stats = a.stats("users");
    assert_eq!(stats.peer_errors, 0, "the owner was healthy: {stats:?}");
    assert_eq!(stats.peer_load_errors, 5, "{stats:?}");
    assert_eq!(stats.local_load_errs, 0, "{stats:?}");
    assert!(a.cache.stats().cluster.skipped_peers.is_empty());
}

#[tokio::test]
async fn a_value_over_the_askers_limit_does_not_get_a_healthy_owner_skipped() {
    let loads = Loads::default();
    let nodes = support::cluster(2, &loads, |b| b.max_value_bytes(100)).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    for round in 0..5 {
        // `value-of:<key>`: 200 bytes and more.
        let prefix = format!("{}:{round}:", "x".repeat(200));
        let key = support::key_owned_by(&a.cache, &b.url, &prefix);
        let value = a.handle().get("users", &key).await.unwrap();
        assert_eq!(value, value_of(&key), "loaded here instead");
    }
    assert!(
        a.cache.stats().cluster.skipped_peers.is_empty(),
        "{:?}",
        a.cache.stats().cluster
    );
    // The owner is still asked for the next key.
    let key = support::key_owned_by(&a.cache, &b.url, "small:");
    let before = a.stats("users").peer_loads;
    a.handle().get("users", &key).await.unwrap();
    assert_eq!(a.stats("users").peer_loads, before + 1);
    assert_eq!(a.stats("users").peer_skips, 0);
}

#[tokio::test]
async fn a_negative_expire_from_a_peer_is_not_cached() {
    let stand_in = StandIn::default();
    stand_in.state.lock().unwrap().expire = Some(-5);
    let (owner_url, _server) = stand_in.start().await;
    let (cache, key, _node) = node_beside(&owner_url).await;
    for round in 1..=3 {
        let got = cache.handle().get("users", &key).await.unwrap();
        assert_eq!(got, StandIn::value(0), "the value is still returned");
        assert_eq!(
            stand_in.gets(),
            round,
            "a value that already expired is not kept"
        );
    }
    let users = cache.stats().source("users").unwrap().clone();
    assert_eq!(users.hot_cache.items + users.main_cache.items, 0);
}

/// `max_value_bytes` bounds the value, not the reply that carries it: a value of the asker's
/// limit, or one byte under, is a remote hit like any other; one byte over is refused by the
/// owner and loaded here.
#[tokio::test]
async fn a_value_at_the_askers_limit_is_fetched_from_its_owner() {
    const LIMIT: usize = 64;
    let loads = Loads::default();
    let nodes = support::cluster(2, &loads, |b| b.max_value_bytes(LIMIT)).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    for (len, fetched) in [(LIMIT - 1, true), (LIMIT, true), (LIMIT + 1, false)] {
        // A key of b whose value, `value-of:<key>`, is `len` bytes long.
        let prefix = "k".repeat(len - "value-of:".len() - 2);
        let key = (10..100)
            .map(|i| format!("{prefix}{i}"))
            .find(|k| a.cache.ring().owner(k) == Some(b.url.as_str()))
            .expect("a key of b");
        assert_eq!(value_of(&key).len(), len);
        let before = a.stats("users");
        assert_eq!(a.handle().get("users", &key).await.unwrap(), value_of(&key));
        let after = a.stats("users");
        assert_eq!(
            (
                after.peer_loads - before.peer_loads,
                after.local_loads - before.local_loads
            ),
            if fetched { (1, 0) } else { (0, 1) },
            "a value of {len} bytes, limit {LIMIT}: {after:?}"
        );
        // A refused value counts as a peer error (it does not get the owner skipped).
        assert_eq!(
            after.peer_errors - before.peer_errors,
            u64::from(!fetched),
            "{after:?}"
        );
    }
}

/// An owner that ignores the asker's limit, as a Go owner does, and sends a value a few bytes
/// over it: the reply is read (it is within the limit and the reply's framing), and the value
/// refused all the same, and loaded here; a value of the limit itself is taken.
#[tokio::test]
async fn a_value_just_over_the_limit_from_an_owner_that_ignores_it_is_refused() {
    use prost::Message as _;
    const LIMIT: usize = 64;
    for (len, taken) in [(LIMIT, true), (LIMIT + 1, false), (LIMIT + 20, false)] {
        let reply = tower_groupcache::protocol::GetResponse {
            value: Some(Bytes::from(vec![b'v'; len])),
            minute_qps: Some(1.0),
            expire: None,
        }
        .encode_to_vec();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let owner = format!("http://{}", listener.local_addr().unwrap());
        let answer = move || {
            let reply = reply.clone();
            async move { reply }
        };
        let _server = serve(listener, Router::new().route("/{*rest}", get(answer))).await;
        let loads = Loads::default();
        let nodes = cluster(1, &loads, |b| {
            b.peers([owner.clone()]).max_value_bytes(LIMIT)
        })
        .await;
        let a = &nodes[0];
        let key = key_owned_by(&a.cache, &owner, "user:");
        let got = a.handle().get("users", &key).await.unwrap();
        let stats = a.stats("users");
        if taken {
            assert_eq!(got, vec![b'v'; len], "{stats:?}");
            assert_eq!((stats.peer_loads, stats.peer_errors), (1, 0), "{stats:?}");
        } else {
            assert_eq!(got, value_of(&key), "a value of {len} bytes: {stats:?}");
            assert_eq!((stats.local_loads, stats.peer_errors), (1, 1), "{stats:?}");
        }
    }
}
