//! What the doc-promise tests share: the bound of their waits, a gate that holds a recording
//! data source's loads, nodes whose sources are made per node, and gets run in the background.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tower_groupcache::{Error, GroupcacheBuilder, SourceStats};

use super::{Loads, Node, listeners, start_node};

/// The bound of every wait: generous, since the machine may be loaded; a test that passes
/// never waits this long.
pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

/// Waits for `fut` with the deadline, failing with `what`.
pub(crate) async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A gate a data source passes before it answers: open by default; while closed, every later
/// pass waits until it opens.
#[derive(Clone, Default)]
pub(crate) struct Gate(Arc<Mutex<Option<Arc<Semaphore>>>>);

impl Gate {
    /// Holds every later pass until [`open`](Gate::open).
    pub(crate) fn close(&self) {
        *self.0.lock().unwrap() = Some(Arc::new(Semaphore::new(0)));
    }

    pub(crate) fn open(&self) {
        if let Some(gate) = self.0.lock().unwrap().take() {
            gate.add_permits(Semaphore::MAX_PERMITS / 2);
        }
    }

    /// Returns at once while open; while closed, once the gate opens.
    pub(crate) async fn pass(&self) {
        let gate = self.0.lock().unwrap().clone();
        if let Some(gate) = gate {
            let _permit = gate.acquire().await;
        }
    }
}

/// `n` nodes on 127.0.0.1 sharing one peer list and the `users` source of `loads`;
/// `configure` is given each node's URL with its builder, to add sources made for that node.
pub(crate) async fn cluster_per_node(
    n: usize,
    loads: &Loads,
    configure: impl Fn(&str, GroupcacheBuilder) -> GroupcacheBuilder,
) -> Vec<Node> {
    let (listeners, urls) = listeners(n).await;
    let mut nodes = Vec::new();
    for listener in listeners {
        let url = format!("http://{}", listener.local_addr().unwrap());
        nodes.push(start_node(listener, &urls, loads, |b| configure(&url, b)).await);
    }
    nodes
}

/// A get of `key` from `source` through `node`, running in the background.
pub(crate) fn spawn_get(
    node: &Node,
    source: &str,
    key: &str,
) -> tokio::task::JoinHandle<Result<Bytes, Error>> {
    let (h, source, key) = (node.handle(), source.to_owned(), key.to_owned());
    tokio::spawn(async move { h.get(&source, &key).await })
}

/// Polls `check` until it returns true, or panics after the deadline with `what`; unlike
/// [`eventually`](super::eventually), `check` may await.
pub(crate) async fn eventually_async<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A `get_many` of `keys` from `source` through `node`, running in the background.
pub(crate) fn spawn_get_many(
    node: &Node,
    source: &str,
    keys: &[&String],
) -> tokio::task::JoinHandle<Result<Vec<Result<Bytes, Error>>, Error>> {
    let h = node.handle();
    let source = source.to_owned();
    let keys: Vec<String> = keys.iter().map(|k| (*k).clone()).collect();
    tokio::spawn(async move { h.get_many(&source, &keys).await })
}

/// The counters of `b` minus those of `a` (field by field).
pub(crate) fn delta(a: &SourceStats, b: &SourceStats) -> SourceStats {
    let mut d = *b;
    d.gets -= a.gets;
    d.cache_hits -= a.cache_hits;
    d.peer_loads -= a.peer_loads;
    d.peer_errors -= a.peer_errors;
    d.peer_load_errors -= a.peer_load_errors;
    d.peer_not_found -= a.peer_not_found;
    d.loads -= a.loads;
    d.loads_deduped -= a.loads_deduped;
    d.local_loads -= a.local_loads;
    d.local_not_found -= a.local_not_found;
    d.local_load_errs -= a.local_load_errs;
    d.server_requests -= a.server_requests;
    d.peer_skips -= a.peer_skips;
    d.stale_served -= a.stale_served;
    d.hot_promotions -= a.hot_promotions;
    d
}
