//! Real nodes on 127.0.0.1 for the integration tests, a data source that counts its loads,
//! peer credentials, and a capture of the log lines of a test; Go nodes beside them in
//! `gopeer`, node processes in `node_process`, certificates and a mutual TLS server in `pki`,
//! and a stand-in owner that holds removals in `stand_in`.

pub(crate) mod gopeer;
pub(crate) mod metrics;
#[cfg(all(unix, feature = "serde"))]
pub(crate) mod node_process;
#[cfg(feature = "tls")]
pub(crate) mod pki;
pub(crate) mod recorded;
pub(crate) mod stand_in;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;
use tokio::net::TcpListener;
use tower_groupcache::{CacheHandle, Groupcache, GroupcacheBuilder, Loaded};

/// A peer credential as docs/security.md, "The credential", describes it: `secret`'s
/// signature of `method`, `path`, `t` and the nonce of `sender` and `seq`.
pub(crate) fn credential(
    secret: &str,
    method: &str,
    path: &str,
    t: u64,
    sender: u64,
    seq: u64,
) -> String {
    let nonce = format!("{sender:016x}{seq:016x}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{method}\n{path}\n{t}\n{nonce}").as_bytes());
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},n={nonce},s={signature}")
}

/// Seconds since the Unix epoch, as a credential's `t`.
pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The value the test source gives for `key`.
pub(crate) fn value_of(key: &str) -> Bytes {
    Bytes::from(format!("value-of:{key}"))
}

/// A data source that records every load, and can be held shut by a gate.
///
/// Keys starting with `fail:` fail, `panic:` panic, `missing:` are not found.
#[derive(Clone, Default)]
pub(crate) struct Loads {
    inner: Arc<LoadsInner>,
}

#[derive(Default)]
struct LoadsInner {
    by_key: Mutex<HashMap<String, Vec<String>>>,
    gate: recorded::Gate,
}

impl Loads {
    /// Holds every later load until [`open`](Loads::open).
    pub(crate) fn close(&self) {
        self.inner.gate.close();
    }

    pub(crate) fn open(&self) {
        self.inner.gate.open();
    }

    /// The nodes that loaded `key`, in order.
    pub(crate) fn of(&self, key: &str) -> Vec<String> {
        self.inner
            .by_key
            .lock()
            .unwrap()
            .get(key)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn count(&self, key: &str) -> usize {
        self.of(key).len()
    }

    pub(crate) fn total(&self) -> usize {
        self.inner
            .by_key
            .lock()
            .unwrap()
            .values()
            .map(Vec::len)
            .sum()
    }

    pub(crate) fn total_by(&self, node: &str) -> usize {
        self.inner
            .by_key
            .lock()
            .unwrap()
            .values()
            .flatten()
            .filter(|n| *n == node)
            .count()
    }

    /// The data source of node `node`: it records `node` as the loader of each key.
    pub(crate) fn source(
        &self,
        node: &str,
    ) -> impl Fn(
        String,
    )
        -> std::pin::Pin<Box<dyn Future<Output = Result<Loaded, std::io::Error>> + Send>>
    + Send
    + Sync
    + 'static {
        let (loads, node) = (self.clone(), node.to_owned());
        move |key: String| {
            let (loads, node) = (loads.clone(), node.clone());
            Box::pin(async move {
                loads
                    .inner
                    .by_key
                    .lock()
                    .unwrap()
                    .entry(key.clone())
                    .or_default()
                    .push(node);
                loads.inner.gate.pass().await;
                if key.starts_with("fail:") {
                    return Err(std::io::Error::other(format!("back end refused {key}")));
                }
                if key.starts_with("panic:") {
                    panic!("data source bug on {key}");
                }
                if key.starts_with("missing:") {
                    return Ok(Loaded::not_found());
                }
                Ok(Loaded::new(value_of(&key)))
            })
        }
    }
}

/// A node of a test cluster: its cache, its URL, and its server task.
pub(crate) struct Node {
    pub url: String,
    pub addr: SocketAddr,
    pub cache: Groupcache,
    server: tokio::task::JoinHandle<()>,
    base_path_answers: Arc<AtomicUsize>,
}

impl Node {
    pub(crate) fn handle(&self) -> CacheHandle {
        self.cache.handle()
    }

    pub(crate) fn stats(&self, source: &str) -> tower_groupcache::SourceStats {
        self.cache
            .stats()
            .source(source)
            .expect("source exists")
            .stats
    }

    /// Stops serving, as a killed process would: the listener and every connection close.
    pub(crate) fn stop(&self) {
        self.server.abort();
    }

    /// Whether the server task has ended (after [`stop`](Node::stop)).
    pub(crate) fn is_stopped(&self) -> bool {
        self.server.is_finished()
    }

    /// How many `GET`s of the bare peer path (`/_groupcache/`) the node has answered: the
    /// check of its own peer path that a node makes once, soon after it starts, and the probes
    /// of peers that learn whether it speaks the extensions.
    pub(crate) fn base_path_answers(&self) -> usize {
        self.base_path_answers.load(Ordering::SeqCst)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The front route of every test node: `GET /get?source=S&key=K`, through the extractor.
pub(crate) fn app(cache: &Groupcache) -> Router {
    async fn front(
        cache: CacheHandle,
        Query(q): Query<HashMap<String, String>>,
    ) -> (StatusCode, Bytes) {
        let (Some(source), Some(key)) = (q.get("source"), q.get("key")) else {
            return (
                StatusCode::BAD_REQUEST,
                Bytes::from_static(b"source and key"),
            );
        };
        match cache.get(source, key).await {
            Ok(value) => (StatusCode::OK, value),
            Err(e) if e.is_not_found() => (StatusCode::NOT_FOUND, Bytes::from(e.to_string())),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from(e.to_string()),
            ),
        }
    }
    Router::new().route("/get", get(front)).layer(cache.layer())
}

/// Serves `app` on `listener`. Aborting the returned task closes the listener and every open
/// connection at once, as a killed process would.
pub(crate) async fn serve(listener: TcpListener, app: Router) -> tokio::task::JoinHandle<()> {
    serve_counted(listener, app, Arc::default()).await
}

/// The connections a server accepted: in all, open now, and the most open at once.
#[derive(Debug, Default)]
pub(crate) struct Connections {
    pub(crate) accepted: AtomicUsize,
    pub(crate) open: AtomicUsize,
    pub(crate) peak: AtomicUsize,
}

/// One open connection of [`Connections`]; closed when its task ends or is aborted.
struct OpenConnection(Arc<Connections>);

impl OpenConnection {
    fn new(counts: Arc<Connections>) -> Self {
        counts.accepted.fetch_add(1, Ordering::SeqCst);
        let open = counts.open.fetch_add(1, Ordering::SeqCst) + 1;
        counts.peak.fetch_max(open, Ordering::SeqCst);
        Self(counts)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// [`serve`], counting the connections in `counts`.
pub(crate) async fn serve_counted(
    listener: TcpListener,
    app: Router,
    counts: Arc<Connections>,
) -> tokio::task::JoinHandle<()> {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    tokio::spawn(async move {
        // Dropped with this task: aborts every connection task.
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let service = TowerToHyperService::new(app.clone());
            let open = OpenConnection::new(counts.clone());
            connections.spawn(async move {
                let _open = open;
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
            while connections.try_join_next().is_some() {}
        }
    })
}

/// Starts one node on `listener` with the given peer list.
pub(crate) async fn start_node(
    listener: TcpListener,
    peers: &[String],
    loads: &Loads,
    configure: impl Fn(GroupcacheBuilder) -> GroupcacheBuilder,
) -> Node {
    start_counted_node(listener, peers, loads, configure, Arc::default()).await
}

/// [`start_node`], its server counting its connections in `connections`.
pub(crate) async fn start_counted_node(
    listener: TcpListener,
    peers: &[String],
    loads: &Loads,
    configure: impl Fn(GroupcacheBuilder) -> GroupcacheBuilder,
    connections: Arc<Connections>,
) -> Node {
    let addr = listener.local_addr().expect("bound");
    let url = format!("http://{addr}");
    // Tests send peer requests by hand, so the peer path is open unless a test sets a secret.
    let builder = Groupcache::builder()
        .self_url(url.clone())
        .peers(peers.to_vec())
        .open_peer_path()
        .source("users", loads.source(&url));
    let cache = configure(builder).build().expect("valid test config");
    let base_path_answers = Arc::new(AtomicUsize::new(0));
    let answers = base_path_answers.clone();
    // Counted once answered, so that a test that sees the count knows the answer was given.
    let app = app(&cache).layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            let answers = answers.clone();
            async move {
                let base_path = request.uri().path() == "/_groupcache/";
                let response = next.run(request).await;
                if base_path {
                    answers.fetch_add(1, Ordering::SeqCst);
                }
                response
            }
        },
    ));
    let server = serve_counted(listener, app, connections).await;
    Node {
        url,
        addr,
        cache,
        server,
        base_path_answers,
    }
}

/// Starts `n` nodes on 127.0.0.1 sharing one peer list and one [`Loads`] record; `configure`
/// adds settings to each node's builder.
pub(crate) async fn cluster(
    n: usize,
    loads: &Loads,
    configure: impl Fn(GroupcacheBuilder) -> GroupcacheBuilder,
) -> Vec<Node> {
    let (listeners, urls) = listeners(n).await;
    let mut nodes = Vec::new();
    for listener in listeners {
        nodes.push(start_node(listener, &urls, loads, &configure).await);
    }
    nodes
}

/// `n` listeners on 127.0.0.1, each on a port the OS chose, and their URLs (`http://…`).
pub(crate) async fn listeners(n: usize) -> (Vec<TcpListener>, Vec<String>) {
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(
            TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1:0"),
        );
    }
    let urls = listeners
        .iter()
        .map(|l| format!("http://{}", l.local_addr().expect("bound")))
        .collect();
    (listeners, urls)
}

/// A key that the ring places on `owner`, made from `prefix`.
pub(crate) fn key_owned_by(cache: &Groupcache, owner: &str, prefix: &str) -> String {
    let ring = cache.ring();
    (0..100_000)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| ring.owner(k) == Some(owner))
        .expect("some key lands on every peer")
}

/// `count` keys that `cache`'s ring places on `owner`, made from `prefix`.
pub(crate) fn keys_owned_by(
    cache: &Groupcache,
    owner: &str,
    prefix: &str,
    count: usize,
) -> Vec<String> {
    let ring = cache.ring();
    let keys: Vec<String> = (0..100_000)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| ring.owner(k) == Some(owner))
        .take(count)
        .collect();
    assert_eq!(keys.len(), count, "enough keys land on {owner}");
    keys
}

/// What `cache` counts of its requests to `url`.
pub(crate) fn peer_stats(cache: &Groupcache, url: &str) -> tower_groupcache::PeerStats {
    cache
        .stats()
        .peer(url)
        .unwrap_or_else(|| panic!("{url} has figures"))
        .clone()
}

/// Polls `check` until it holds, or panics after `deadline` with `what`.
pub(crate) async fn eventually(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + deadline;
    while !check() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A plain HTTP client for requests a test makes by hand.
pub(crate) fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `method` to `uri` (an already-escaped URI) and returns the status, headers and body.
pub(crate) async fn request(method: &str, uri: &str) -> (StatusCode, axum::http::HeaderMap, Bytes) {
    let req = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .body(Empty::new())
        .expect("valid test request");
    let res = client().request(req).await.expect("request is answered");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body is read").to_bytes();
    (parts.status, parts.headers, body)
}

/// `POST`s `body` to `uri` with `headers`, and returns the status, headers and body.
pub(crate) async fn post(
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> (StatusCode, axum::http::HeaderMap, Bytes) {
    let mut req = axum::http::Request::builder().method("POST").uri(uri);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req
        .body(http_body_util::Full::new(body.into()))
        .expect("valid test request");
    let client: Client<HttpConnector, http_body_util::Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let res = client.request(req).await.expect("request is answered");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body is read").to_bytes();
    (parts.status, parts.headers, body)
}

/// A URL where nothing listens: a port bound, then released.
pub(crate) async fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// A stand-in peer that answers every request `200` with a body that is not protobuf.
pub(crate) async fn garbage_peer() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().route(
        "/{*rest}",
        axum::routing::any(|| async { (StatusCode::OK, Bytes::from_static(b"\xff\xff\xff\xff")) }),
    );
    (url, serve(listener, app).await)
}

/// A stand-in peer that accepts connections and never answers: its URL and its task.
pub(crate) async fn hanging_peer() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

/// A node without peers whose `users` source is `loads`' (recorded as node `single`).
pub(crate) fn single_node(loads: &Loads) -> Groupcache {
    Groupcache::builder()
        .source("users", loads.source("single"))
        .build()
        .expect("a valid single node")
}

/// Captures the log lines of one test; see [`capture_logs`].
pub(crate) struct LogsGuard {
    _default: tracing::subscriber::DefaultGuard,
    _anchor: tracing::Dispatch,
}

/// WARN and ERROR lines logged on this thread while the guard lives.
///
/// tracing decides once, for the whole process, whether a log line is wanted: when a thread
/// first reaches it. While at most one subscriber is registered it asks that thread's
/// subscriber alone, so a test on another thread, with none, would have the line dropped here
/// too. The guard also holds a second subscriber, which wants nothing, so that every live
/// subscriber is asked, this thread's included.
pub(crate) fn capture_logs() -> (LogsGuard, Arc<std::sync::Mutex<Vec<u8>>>) {
    #[derive(Clone)]
    struct Lines(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines(Arc::default());
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // Registered first: the capture's own registration then decides again for every line
    // reached so far, with both subscribers.
    let anchor = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let guard = LogsGuard {
        _default: tracing::subscriber::set_default(subscriber),
        _anchor: anchor,
    };
    (guard, lines.0)
}

/// How many of the captured lines contain `needle`.
pub(crate) fn count_lines(logs: &std::sync::Mutex<Vec<u8>>, needle: &str) -> usize {
    String::from_utf8_lossy(&logs.lock().unwrap())
        .lines()
        .filter(|line| line.contains(needle))
        .count()
}
