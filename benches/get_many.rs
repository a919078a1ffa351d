//! Many keys at once: 100 keys that another node owns and has cached, asked for by a node that
//! caches nothing (`cache_bytes(0)`), so that every round goes over the network. `get_many`
//! (one batched peer request) beside 100 concurrent `get`s of the same keys, in the same run:
//! with natural batching (the default), and the baseline of one peer request each (a node
//! with `natural_batching(0)`); the same over two owners, beside one remote get, and
//! `get_many` of the first 2, 10 and 30 of those keys, and 8 overlapping calls for the 100
//! keys at once; and 100 misses this node owns, loaded
//! from its data source by `get_many` (one `load_many` call) beside 100 concurrent `get`s
//! (100 loads). Nodes on 127.0.0.1, a 2-thread runtime. Each row's calls run one after another
//! in a task of that runtime, on a worker thread, as a handler's would (criterion's `to_async`
//! would poll them on the bench's own thread, which every reply then has to wake: that adds
//! a thread wake-up to each call, and made one remote get look twice as slow as it is).
//! Beside them, the baselines of a raw pooled hyper client: one request to a bare axum handler,
//! and two at once to two of them (what fanning out to two servers costs on this runtime).
//! Then the owner's half of a batched get of 50 hits alone, in process (group
//! `owner_in_process`), beside a single get. Last, `get_many` of 100 keys a node holds, beside
//! 100 `get`s of them one after the other (group `local_hits`). `cargo bench --bench get_many`

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower_groupcache::{CacheHandle, Groupcache};

const KEYS: usize = 100;

/// Calls `call` on each of `inputs` in turn, in a task on a worker of `rt`, and returns the
/// time the calls took together (the making of the inputs is not counted).
fn on_worker<I, F, Fut>(rt: &tokio::runtime::Runtime, inputs: Vec<I>, call: F) -> Duration
where
    I: Send + 'static,
    F: Fn(I) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    rt.block_on(async move {
        tokio::spawn(async move {
            let started = Instant::now();
            for input in inputs {
                call(input).await;
            }
            started.elapsed()
        })
        .await
        .expect("the bench task")
    })
}

/// A row's routine: `iters` calls of `call` with `keys`, on a worker of `rt`.
fn repeat<F, Fut>(
    rt: &tokio::runtime::Runtime,
    iters: u64,
    handle: &CacheHandle,
    keys: &Arc<[String]>,
    call: F,
) -> Duration
where
    F: Fn(CacheHandle, Arc<[String]>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let inputs = (0..iters).map(|_| (handle.clone(), keys.clone())).collect();
    on_worker(rt, inputs, move |(handle, keys)| call(handle, keys))
}

async fn gets(handle: CacheHandle, keys: Arc<[String]>) {
    let gets = keys.iter().map(|key| handle.get("users", key));
    for got in futures_util::future::join_all(gets).await {
        got.expect("a value");
    }
}

async fn get_many(handle: CacheHandle, keys: Arc<[String]>) {
    for got in handle.get_many("users", &keys).await.expect("the source") {
        got.expect("a value");
    }
}

/// The runtime of every row: 2 worker threads, as the machine has 2 cores.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let (asker, owner, plain, remote_keys) = rt.block_on(async {
        let la = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let lb = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let urls = [
            format!("http://{}", la.local_addr().expect("bound")),
            format!("http://{}", lb.local_addr().expect("bound")),
        ];
        let build = |url: &str, bytes: u64| {
            Groupcache::builder()
                .self_url(url)
                .peers(urls.clone())
                .open_peer_path()
                .cache_bytes(bytes)
                .source("users", |key: String| async move {
                    Ok::<_, std::io::Error>(format!("value of {key}"))
                })
                .build()
                .expect("valid config")
        };
        let (asker, owner) = (build(&urls[0], 0), build(&urls[1], 64 << 20));
        // The baseline's asker: the same node, but each get its own peer request.
        let lc = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let plain_url = format!("http://{}", lc.local_addr().expect("bound"));
        let plain = Groupcache::builder()
            .self_url(plain_url.as_str())
            .peers(urls.clone())
            .open_peer_path()
            .cache_bytes(0)
            .natural_batching(0)
            .source("users", |key: String| async move {
                Ok::<_, std::io::Error>(format!("value of {key}"))
            })
            .build()
            .expect("valid config");
        for (listener, cache) in [(la, &asker), (lb, &owner), (lc, &plain)] {
            let app = Router::new().layer(cache.layer());
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        let keys: Vec<String> = (0..100_000)
            .map(|i| format!("user:{i}"))
            // Owned by the owner on both askers' rings (the baseline's asker is on its own).
            .filter(|k| {
                asker.ring().owner(k) == Some(urls[1].as_str())
                    && plain.ring().owner(k) == Some(urls[1].as_str())
            })
            .take(KEYS)
            .collect();
        get_many(owner.handle(), keys.clone().into()).await;
        (asker, owner, plain, keys)
    });
    let remote_keys: Arc<[String]> = remote_keys.into();
    let mut group = c.benchmark_group("get_many");
    group.throughput(Throughput::Elements(KEYS as u64));
    let handle = asker.handle();
    group.bench_function("100_remote_hits/get_many", |b| {
        b.iter_custom(|iters| repeat(&rt, iters, &handle, &remote_keys, get_many))
    });
    group.bench_function(
        "100_remote_hits/100_concurrent_gets_natural_batching",
        |b| b.iter_custom(|iters| repeat(&rt, iters, &handle, &remote_keys, gets)),
    );
    let plain_handle = plain.handle();
    group.bench_function(
        "100_remote_hits/100_concurrent_gets_one_request_each",
        |b| b.iter_custom(|iters| repeat(&rt, iters, &plain_handle, &remote_keys, gets)),
    );
    // Misses the owner owns itself: fresh keys each round (its cache keeps what it loads).
    let round = Arc::new(AtomicU64::new(0));
    let owner_handle = owner.handle();
    let fresh = |round: &AtomicU64| -> Arc<[String]> {
        let r = round.fetch_add(1, Ordering::Relaxed);
        let ring = owner.ring();
        let me = owner.self_url().expect("a self URL").to_owned();
        (0..u64::MAX)
            .map(|i| format!("fresh:{r}:{i}"))
            .filter(|k| ring.owner(k) == Some(me.as_str()))
            .take(KEYS)
            .collect()
    };
    let fresh_rounds = |iters: u64| -> Vec<(CacheHandle, Arc<[String]>)> {
        (0..iters)
            .map(|_| (owner_handle.clone(), fresh(&round)))
            .collect()
    };
    group.bench_function("100_local_misses/get_many", |b| {
        b.iter_custom(|iters| {
            on_worker(&rt, fresh_rounds(iters), |(handle, keys)| {
                get_many(handle, keys)
            })
        })
    });
    group.bench_function("100_local_misses/100_concurrent_gets", |b| {
        b.iter_custom(|iters| {
            on_worker(&rt, fresh_rounds(iters), |(handle, keys)| {
                gets(handle, keys)
            })
        })
    });
    group.finish();

    // 100 keys spread over two owners, B and C, each caching its own; A and P cache nothing
    // (P is A without natural batching). Beside them, one remote get from A.
    let (a, p, spread) = rt.block_on(spread_cluster());
    let spread: Arc<[String]> = spread.into();
    let mut group = c.benchmark_group("get_many_spread");
    group.throughput(Throughput::Elements(KEYS as u64));
    let a_handle = a.handle();
    group.bench_function("100_keys_2_owners/get_many", |b| {
        b.iter_custom(|iters| repeat(&rt, iters, &a_handle, &spread, get_many))
    });
    let p_handle = p.handle();
    group.bench_function(
        "100_keys_2_owners/100_concurrent_gets_one_request_each",
        |b| b.iter_custom(|iters| repeat(&rt, iters, &p_handle, &spread, gets)),
    );
    // 8 calls at once for the same 100 keys: the later ones join the first one's loads.
    group.throughput(Throughput::Elements(8 * KEYS as u64));
    group.bench_function("100_keys_2_owners/8_overlapping_get_many", |b| {
        b.iter_custom(|iters| {
            repeat(&rt, iters, &a_handle, &spread, |handle, keys| async move {
                let calls = (0..8).map(|_| get_many(handle.clone(), keys.clone()));
                futures_util::future::join_all(calls).await;
            })
        })
    });
    // The first 2, 10 and 30 of those keys: what a call costs, beside what each key adds.
    for n in [2usize, 10, 30] {
        let few: Arc<[String]> = spread[..n].into();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("first_{n}_keys/get_many"), |b| {
            b.iter_custom(|iters| repeat(&rt, iters, &a_handle, &few, get_many))
        });
    }
    group.throughput(Throughput::Elements(1));
    let one: Arc<[String]> = spread[..1].into();
    group.bench_function("100_keys_2_owners/one_remote_get", |b| {
        b.iter_custom(|iters| repeat(&rt, iters, &a_handle, &one, gets))
    });
    // The baselines: a raw pooled hyper client's one request to a bare axum handler, and its
    // two requests at once to two of them, on the same runtime: what fanning out to two
    // servers costs before any cache work.
    let (client, bare) = rt.block_on(bare_servers());
    let raw_one = bare[0].clone();
    let raw_client = client.clone();
    group.bench_function("raw/one_request", |b| {
        b.iter_custom(|iters| {
            let (client, uri) = (raw_client.clone(), raw_one.clone());
            on_worker(&rt, vec![(); iters as usize], move |()| {
                raw_get(client.clone(), uri.clone())
            })
        })
    });
    group.bench_function("raw/two_requests_to_two_servers", |b| {
        b.iter_custom(|iters| {
            let (client, bare) = (client.clone(), bare.clone());
            on_worker(&rt, vec![(); iters as usize], move |()| {
                let first = raw_get(client.clone(), bare[0].clone());
                let second = raw_get(client.clone(), bare[1].clone());
                async move {
                    futures_util::future::join(first, second).await;
                }
            })
        })
    });
    group.finish();
}

/// A raw pooled HTTP/1.1 client, as the load test's baseline.
type RawClient = Client<HttpConnector, Empty<Bytes>>;

/// Two bare axum handlers on 127.0.0.1, each answering a value the size of the nodes' own,
/// and the raw client that asks them.
async fn bare_servers() -> (RawClient, Arc<[hyper::Uri]>) {
    let mut uris = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let uri = format!("http://{}/value", listener.local_addr().expect("bound"));
        uris.push(uri.parse().expect("a URI"));
        let app = Router::new().route(
            "/value",
            axum::routing::get(|| async { "value of spread:1" }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new()).build(connector);
    (client, uris.into())
}

/// One request of the raw client, its body read whole.
async fn raw_get(client: RawClient, uri: hyper::Uri) {
    let reply = client.get(uri).await.expect("a reply");
    reply.into_body().collect().await.expect("a body");
}

/// Nodes A, P (A without natural batching), B and C on one ring, serving on 127.0.0.1; B and
/// C hold 100 keys between them, each owned by B or C on every node's ring.
async fn spread_cluster() -> (Groupcache, Groupcache, Vec<String>) {
    let mut listeners = Vec::new();
    for _ in 0..4 {
        listeners.push(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        );
    }
    let urls: Vec<String> = listeners
        .iter()
        .map(|l| format!("http://{}", l.local_addr().expect("bound")))
        .collect();
    let build = |url: &str, bytes: u64, batching: usize| {
        Groupcache::builder()
            .self_url(url)
            .peers(urls.clone())
            .open_peer_path()
            .cache_bytes(bytes)
            .natural_batching(batching)
            .source("users", |key: String| async move {
                Ok::<_, std::io::Error>(format!("value of {key}"))
            })
            .build()
            .expect("valid config")
    };
    let nodes = [
        build(&urls[0], 0, 4),
        build(&urls[1], 0, 0),
        build(&urls[2], 64 << 20, 4),
        build(&urls[3], 64 << 20, 4),
    ];
    for (listener, cache) in listeners.into_iter().zip(&nodes) {
        let app = Router::new().layer(cache.layer());
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    let ring = nodes[0].ring();
    let keys: Vec<String> = (0..100_000)
        .map(|i| format!("spread:{i}"))
        .filter(|k| {
            ring.owner(k)
                .is_some_and(|owner| owner == urls[2] || owner == urls[3])
        })
        .take(KEYS)
        .collect();
    get_many(nodes[2].handle(), keys.clone().into()).await;
    get_many(nodes[3].handle(), keys.clone().into()).await;
    let [a, p, _, _] = nodes;
    (a, p, keys)
}

/// The owner's half of a batched get, in process: one node with 50 keys cached, its layer on
/// an empty router, called through `tower::ServiceExt::oneshot` with the request a peer sends
/// (no socket, no HTTP parsing), and the reply's body read whole. Beside it, the same for a
/// single get of one of those keys.
fn owner_in_process(c: &mut Criterion) {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    let rt = runtime();
    let cache = Groupcache::builder()
        .self_url("http://127.0.0.1:1")
        .peers(["http://127.0.0.1:1"])
        .open_peer_path()
        .cache_bytes(64 << 20)
        .source("users", |key: String| async move {
            Ok::<_, std::io::Error>(format!("value of {key}"))
        })
        .build()
        .expect("valid config");
    let keys: Arc<[String]> = (0..50).map(|i| format!("spread:{i}")).collect();
    rt.block_on(get_many(cache.handle(), keys.clone()));
    let body = bytes::Bytes::from(tower_groupcache::protocol::GetManyRequest::encode_keys(
        &keys,
    ));
    let app = Router::new().layer(cache.layer());
    let call = move |request: axum::http::Request<axum::body::Body>| {
        let app = app.clone();
        async move {
            let response = app.oneshot(request).await.expect("infallible");
            assert_eq!(response.status(), 200);
            response.into_body().collect().await.expect("a body");
        }
    };
    let mut group = c.benchmark_group("owner_in_process");
    group.throughput(Throughput::Elements(50));
    let batched = call.clone();
    group.bench_function("batched_get_of_50_hits", |b| {
        b.iter_custom(|iters| {
            let requests = (0..iters)
                .map(|_| {
                    axum::http::Request::post("/_groupcache/users")
                        .body(axum::body::Body::from(body.clone()))
                        .expect("a request")
                })
                .collect();
            on_worker(&rt, requests, batched.clone())
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("one_get", |b| {
        b.iter_custom(|iters| {
            let requests = (0..iters)
                .map(|_| {
                    axum::http::Request::get("/_groupcache/users/spread%3A1")
                        .body(axum::body::Body::empty())
                        .expect("a request")
                })
                .collect();
            on_worker(&rt, requests, call.clone())
        })
    });
    group.finish();
}

/// 100 keys a single node holds: `get_many` of them all, beside 100 `get`s one after the
/// other (each a hit, ready at once), on a worker of the bench's runtime.
fn local_hits(c: &mut Criterion) {
    let rt = runtime();
    let cache = Groupcache::builder()
        .source("users", |key: String| async move {
            Ok::<_, std::io::Error>(format!("value of {key}"))
        })
        .build()
        .expect("valid config");
    let keys: Arc<[String]> = (0..KEYS).map(|i| format!("local:{i}")).collect();
    let handle = cache.handle();
    rt.block_on(get_many(handle.clone(), keys.clone()));
    let mut group = c.benchmark_group("local_hits");
    group.throughput(Throughput::Elements(KEYS as u64));
    group.bench_function("100_keys/get_many", |b| {
        b.iter_custom(|iters| repeat(&rt, iters, &handle, &keys, get_many))
    });
    group.bench_function("100_keys/100_gets_one_after_the_other", |b| {
        b.iter_custom(|iters| {
            repeat(&rt, iters, &handle, &keys, |handle, keys| async move {
                for key in keys.iter() {
                    handle.get("users", key).await.expect("a value");
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench, owner_in_process, local_hits);
criterion_main!(benches);
