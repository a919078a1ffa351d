//! Three nodes of one cache in one process, on loopback, walked through the request flow.
//!
//! Each node is an axum service with a front route, `GET /user/{id}`, that reads the user
//! through the cache, and the cache's layer, which also answers the other nodes on
//! `/_groupcache/`. The data source `users` is a slow pretend back end that says which node
//! loaded each value. With real HTTP requests to the front routes, the example shows:
//!
//! 1. a miss on the key's owner, which loads it;
//! 2. a local hit on that node;
//! 3. a miss on a node that does not own the key: the owner loads it;
//! 4. a remote hit: a third node asks the owner, which answers from its cache;
//! 5. 50 concurrent requests for one cold key, over the 3 nodes: one load in the cluster;
//! 6. a node that is down: the asking node loads the key itself and the request succeeds.
//!
//! After each step it prints what happened and every node's counters, and it checks its own
//! claims: if the cluster does not behave as the text says, it exits with an error.
//!
//! ```text
//! cargo run --example cluster
//! ```

use std::error::Error;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{StatusCode, Uri};
use axum::routing::get;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tower_groupcache::{CacheHandle, Groupcache, SourceSnapshot, SourceStats};

/// The data source's name (a group name, in golang/groupcache's words).
const USERS: &str = "users";
/// How long the pretend back end takes to answer.
const BACKEND_DELAY: Duration = Duration::from_millis(20);
/// The requests of step 5.
const CONCURRENT_REQUESTS: usize = 50;

type Result<T, E = Box<dyn Error + Send + Sync>> = std::result::Result<T, E>;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => {
            println!("\nEvery check passed.");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("\nerror: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let mut nodes = start_cluster().await?;
    let front = Front::new();
    let [a, b, c] = [0, 1, 2]; // indexes into `nodes`

    println!("A cluster of 3 nodes, each with the other two as peers:");
    for node in &nodes {
        println!("    node {} at {}", node.name, node.url);
    }

    // Every node has the same ring, so any of them can say who owns a key.
    let mut keys = KeyPicker::default();
    let owned_by_a = keys.id_owned_by(&nodes, a);
    let owned_by_b = keys.id_owned_by(&nodes, b);

    heading(&format!(
        "1. Miss, local owner: ask A for user:{owned_by_a}, a key A owns"
    ));
    let step = Mark::take(&nodes);
    let (value, elapsed) = front.get_user(&nodes[a], &owned_by_a).await?;
    let changed = step.changes(&nodes);
    println!("    A answered {value} in {elapsed:.1?}");
    println!("    loaded by: {}", loaded_by(&nodes, &changed));
    print_stats(&nodes);
    check(
        backend_loads(&changed) == [1, 0, 0],
        "step 1: A, and only A, should have called the back end",
    )?;

    heading(&format!("2. Local hit: ask A for user:{owned_by_a} again"));
    let step = Mark::take(&nodes);
    let (value, elapsed) = front.get_user(&nodes[a], &owned_by_a).await?;
    let changed = step.changes(&nodes);
    println!("    A answered {value} in {elapsed:.1?}, from its main cache, with no I/O");
    println!("    loaded by: {}", loaded_by(&nodes, &changed));
    print_stats(&nodes);
    check(
        backend_loads(&changed) == [0, 0, 0] && changed[a].cache_hits == 1,
        "step 2: A should have answered from its cache without a load",
    )?;

    heading(&format!(
        "3. Miss, remote owner: ask A for user:{owned_by_b}, a key B owns"
    ));
    let step = Mark::take(&nodes);
    let (value, elapsed) = front.get_user(&nodes[a], &owned_by_b).await?;
    let changed = step.changes(&nodes);
    println!("    A answered {value} in {elapsed:.1?}");
    println!(
        "    loaded by: {}; A fetched it from B over HTTP",
        loaded_by(&nodes, &changed)
    );
    say_if_hot_copy(&nodes[a], &changed[a]);
    print_stats(&nodes);
    check(
        backend_loads(&changed) == [0, 1, 0]
            && changed[a].peer_loads == 1
            && changed[b].server_requests == 1,
        "step 3: A should have fetched the key from B, and B should have loaded it",
    )?;

    heading(&format!(
        "4. Remote hit: ask C for user:{owned_by_b}, which B has cached since step 3"
    ));
    let step = Mark::take(&nodes);
    let (value, elapsed) = front.get_user(&nodes[c], &owned_by_b).await?;
    let changed = step.changes(&nodes);
    println!("    C answered {value} in {elapsed:.1?}");
    println!(
        "    loaded by: {}; C fetched it from B, which answered from its main cache",
        loaded_by(&nodes, &changed)
    );
    say_if_hot_copy(&nodes[c], &changed[c]);
    print_stats(&nodes);
    check(
        backend_loads(&changed) == [0, 0, 0]
            && changed[c].peer_loads == 1
            && changed[b].cache_hits == 1,
        "step 4: B should have answered C from its cache, with no load anywhere",
    )?;

    let cold = keys.id_owned_by(&nodes, c);
    heading(&format!(
        "5. {CONCURRENT_REQUESTS} concurrent requests for user:{cold} (owned by C, cold), \
         spread over A, B and C"
    ));
    let step = Mark::take(&nodes);
    let started = Instant::now();
    let mut requests = JoinSet::new();
    for i in 0..CONCURRENT_REQUESTS {
        let (front, url, id) = (front.clone(), nodes[i % 3].url.clone(), cold.clone());
        requests.spawn(async move { front.get(&url, &id).await });
    }
    let mut values = Vec::with_capacity(CONCURRENT_REQUESTS);
    while let Some(joined) = requests.join_next().await {
        values.push(joined??.0);
    }
    let elapsed = started.elapsed();
    let changed = step.changes(&nodes);
    let total_loads: u64 = backend_loads(&changed).iter().sum();
    println!(
        "    {} answers in {elapsed:.1?}, all {}",
        values.len(),
        values[0]
    );
    println!(
        "    back-end loads in the cluster: {total_loads}, by {}",
        loaded_by(&nodes, &changed)
    );
    print_stats(&nodes);
    check(
        values.len() == CONCURRENT_REQUESTS && values.iter().all(|v| *v == values[0]),
        "step 5: every request should have had the same answer",
    )?;
    check(
        backend_loads(&changed) == [0, 0, 1],
        format!("step 5: expected exactly 1 load, on C; there were {total_loads}"),
    )?;

    let orphan = keys.id_owned_by(&nodes, b);
    heading(&format!(
        "6. Peer down: stop B, then ask A for user:{orphan}, a key B owns"
    ));
    nodes[b].stop().await?;
    println!("    B's server is stopped; A's ring still names B as the owner");
    let step = Mark::take(&nodes);
    let (value, elapsed) = front.get_user(&nodes[a], &orphan).await?;
    let changed = step.changes(&nodes);
    println!("    A answered {value} in {elapsed:.1?}");
    println!(
        "    loaded by: {}; the fetch from B failed (a peer error) and A loaded the key itself",
        loaded_by(&nodes, &changed)
    );
    print_stats(&nodes);
    check(
        backend_loads(&changed) == [1, 0, 0] && changed[a].peer_errors == 1,
        "step 6: A should have counted a peer error and loaded the key itself",
    )?;

    // Dropping the runtime at the end of `main` stops the other servers.
    Ok(())
}

/// One node: its cache, its server and its back end's load counter.
struct Node {
    name: &'static str,
    url: String,
    cache: Groupcache,
    backend_loads: Arc<AtomicU64>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl Node {
    /// This node's snapshot of the `users` source.
    fn users(&self) -> SourceSnapshot {
        self.cache
            .stats()
            .source(USERS)
            .cloned()
            .expect("every node registers the users source")
    }

    /// Stops the server and waits until its connections are closed.
    async fn stop(&mut self) -> Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            // An error means the server has already stopped.
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .map_err(|_| format!("node {} did not stop within 5 s", self.name))???;
        }
        Ok(())
    }
}

/// Binds three listeners, builds one cache per node with the full peer list, and serves each
/// node's router.
async fn start_cluster() -> Result<Vec<Node>> {
    // Bind first: every node needs every node's URL before its cache is built.
    let mut listeners = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..3 {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        urls.push(format!("http://{}", listener.local_addr()?));
        listeners.push(listener);
    }

    let mut nodes = Vec::new();
    for ((name, listener), url) in ["A", "B", "C"].into_iter().zip(listeners).zip(&urls) {
        let backend_loads = Arc::new(AtomicU64::new(0));
        let cache = Groupcache::builder()
            .self_url(url.as_str())
            .peers(&urls)
            // Peer requests are signed with a secret all nodes share.
            .peer_secret("example secret; use 32 or more random bytes in production")
            .source(USERS, users_backend(name, backend_loads.clone()))
            .build()?;

        let app = Router::new()
            .route("/user/{id}", get(user))
            .layer(cache.layer()); // serves /_groupcache/*, gives handlers a CacheHandle

        let (shutdown, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        nodes.push(Node {
            name,
            url: url.clone(),
            cache,
            backend_loads,
            shutdown: Some(shutdown),
            server: Some(server),
        });
    }
    Ok(nodes)
}

/// The `users` data source of one node: a slow back end whose values say which node loaded
/// them. It counts its loads, and prints a line for each.
fn users_backend(node: &'static str, loads: Arc<AtomicU64>) -> impl tower_groupcache::Source {
    move |key: String| {
        let loads = loads.clone();
        async move {
            tokio::time::sleep(BACKEND_DELAY).await;
            let n = loads.fetch_add(1, Ordering::Relaxed) + 1;
            println!("    [node {node}] back end: loaded {key} (load #{n} on {node})");
            Ok::<_, std::io::Error>(format!(r#"{{"key":"{key}","loaded_by":"{node}"}}"#))
        }
    }
}

/// The front route, `GET /user/{id}`: the user, read through the cache. A failed get answers
/// with its status (404 not found, 502 when the data source fails).
async fn user(
    cache: CacheHandle,
    Path(id): Path<String>,
) -> Result<Bytes, tower_groupcache::Error> {
    cache.get(USERS, &format!("user:{id}")).await
}

/// A client of the nodes' front routes, as a load balancer or a user would be.
#[derive(Clone)]
struct Front {
    http: Client<HttpConnector, Empty<Bytes>>,
}

impl Front {
    fn new() -> Self {
        Self {
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// `GET {node}/user/{id}`: the body and how long the request took.
    async fn get_user(&self, node: &Node, id: &str) -> Result<(String, Duration)> {
        self.get(&node.url, id).await
    }

    async fn get(&self, base_url: &str, id: &str) -> Result<(String, Duration)> {
        let url = format!("{base_url}/user/{id}");
        let uri: Uri = url.parse()?;
        let started = Instant::now();
        let response = self
            .http
            .get(uri)
            .await
            .map_err(|error| format!("GET {url}: {error}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| format!("GET {url}: reading the body: {error}"))?
            .to_bytes();
        let elapsed = started.elapsed();
        let body = String::from_utf8_lossy(&body).into_owned();
        if status != StatusCode::OK {
            return Err(format!("GET {url}: {status}: {body}").into());
        }
        Ok((body, elapsed))
    }
}

/// Picks user ids by the node that owns their key, each id once.
#[derive(Default)]
struct KeyPicker {
    next: u32,
}

impl KeyPicker {
    /// A fresh user id whose key `user:{id}` the ring gives to `nodes[owner]`.
    fn id_owned_by(&mut self, nodes: &[Node], owner: usize) -> String {
        let ring = nodes[0].cache.ring();
        loop {
            self.next += 1;
            let id = self.next.to_string();
            if ring.owner(&format!("user:{id}")) == Some(nodes[owner].url.as_str()) {
                return id;
            }
        }
    }
}

/// Every node's counters at one moment, to tell what a step changed.
struct Mark {
    users: Vec<SourceSnapshot>,
    backend_loads: Vec<u64>,
}

/// What a step changed on one node.
#[derive(Debug)]
struct Changes {
    backend_loads: u64,
    cache_hits: u64,
    peer_loads: u64,
    peer_errors: u64,
    server_requests: u64,
    hot_items: u64,
}

impl Mark {
    fn take(nodes: &[Node]) -> Self {
        Self {
            users: nodes.iter().map(Node::users).collect(),
            backend_loads: nodes
                .iter()
                .map(|n| n.backend_loads.load(Ordering::Relaxed))
                .collect(),
        }
    }

    fn changes(&self, nodes: &[Node]) -> Vec<Changes> {
        let now = Self::take(nodes);
        (0..nodes.len())
            .map(|i| {
                let (was, is) = (&self.users[i], &now.users[i]);
                let counter = |f: fn(&SourceStats) -> u64| f(&is.stats) - f(&was.stats);
                Changes {
                    backend_loads: now.backend_loads[i] - self.backend_loads[i],
                    cache_hits: counter(|s| s.cache_hits),
                    peer_loads: counter(|s| s.peer_loads),
                    peer_errors: counter(|s| s.peer_errors),
                    server_requests: counter(|s| s.server_requests),
                    hot_items: is.hot_cache.items.saturating_sub(was.hot_cache.items),
                }
            })
            .collect()
    }
}

fn backend_loads(changes: &[Changes]) -> Vec<u64> {
    changes.iter().map(|c| c.backend_loads).collect()
}

/// The names of the nodes that called their back end during a step, or "nobody".
fn loaded_by(nodes: &[Node], changes: &[Changes]) -> String {
    let names: Vec<&str> = nodes
        .iter()
        .zip(changes)
        .filter(|(_, c)| c.backend_loads > 0)
        .map(|(n, _)| n.name)
        .collect();
    if names.is_empty() {
        "nobody (no back-end call)".to_owned()
    } else {
        names.join(", ")
    }
}

fn say_if_hot_copy(node: &Node, changes: &Changes) {
    if changes.hot_items > 0 {
        println!(
            "    {} also kept a hot copy (the key is popular enough: see docs/hotkeys.md)",
            node.name
        );
    }
}

fn heading(text: &str) {
    println!("\n== {text}");
}

/// Each node's counters for the `users` source, and the size of its two caches.
fn print_stats(nodes: &[Node]) {
    println!(
        "    {:<4} {:>4} {:>10} {:>5} {:>13} {:>10} {:>11} {:>11} {:>15} {:>12} {:>12}",
        "node",
        "gets",
        "cache_hits",
        "loads",
        "loads_deduped",
        "peer_loads",
        "peer_errors",
        "local_loads",
        "server_requests",
        "main B/items",
        "hot B/items",
    );
    for node in nodes {
        let users = node.users();
        let s = &users.stats;
        let main = format!("{}/{}", users.main_cache.bytes, users.main_cache.items);
        let hot = format!("{}/{}", users.hot_cache.bytes, users.hot_cache.items);
        println!(
            "    {:<4} {:>4} {:>10} {:>5} {:>13} {:>10} {:>11} {:>11} {:>15} {:>12} {:>12}",
            node.name,
            s.gets,
            s.cache_hits,
            s.loads,
            s.loads_deduped,
            s.peer_loads,
            s.peer_errors,
            s.local_loads,
            s.server_requests,
            main,
            hot,
        );
    }
}

/// Fails the example with `message` unless `claim` holds.
fn check(claim: bool, message: impl Into<String>) -> Result<()> {
    if claim {
        Ok(())
    } else {
        Err(message.into().into())
    }
}
