//! [`Groupcache`]: the cache a service holds, a thin front over its node.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::discovery::{DnsDiscovery, Resolve};
use crate::error::ConfigError;
use crate::handle::CacheHandle;
use crate::middleware::GroupcacheLayer;
use crate::node::{Node, Shutdown};
use crate::ring::Ring;
use crate::stats::Stats;

/// A distributed read-through cache: this node's share of it, and the way to the others.
///
/// Build one with [`Groupcache::builder`], add [`layer`](Groupcache::layer) to the service's
/// router so peers can reach it, and read through it with a [`CacheHandle`], taken in a
/// handler as an extractor or from [`handle`](Groupcache::handle) anywhere else.
///
/// There is no global state: several caches live side by side in one process, each with its
/// own peers, sources and stats. Cloning is cheap (one `Arc`), and every clone is the same
/// cache.
///
/// ```
/// use axum::{Router, body::Bytes, extract::Path, routing::get};
/// use tower_groupcache::{CacheHandle, Error, Groupcache};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cache = Groupcache::builder()
///     .self_url("http://10.0.0.1:8080")
///     .peers(["http://10.0.0.1:8080", "http://10.0.0.2:8080"])
///     .peer_secret("a secret all nodes share: 32 or more random bytes")
///     .source("users", |key: String| async move {
///         Ok::<_, std::io::Error>(format!("user {key}"))
///     })
///     .build()?;
///
/// // A failed get answers with its status (see `Error`).
/// async fn user(cache: CacheHandle, Path(id): Path<String>) -> Result<Bytes, Error> {
///     cache.get("users", &format!("user:{id}")).await
/// }
///
/// let app: Router = Router::new().route("/user/{id}", get(user)).layer(cache.layer());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Groupcache {
    node: Arc<Node>,
}

impl Groupcache {
    pub(crate) fn from_node(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// The tower layer that serves the peer path and hands every other request on, with a
    /// [`CacheHandle`] in its extensions.
    pub fn layer(&self) -> GroupcacheLayer {
        GroupcacheLayer::new(self.node.clone())
    }

    /// A handle for gets outside a request: background jobs, warm-up at start.
    pub fn handle(&self) -> CacheHandle {
        CacheHandle::new(self.node.clone())
    }

    /// Replaces the peer list. The new ring is built aside and swapped in at once; gets in
    /// progress finish on the ring they started with. With a self URL, this node is always on
    /// the ring: its URL is added if missing, and an empty list gives a ring of this node
    /// alone.
    pub fn set_peers<I, P>(&self, peers: I) -> Result<(), ConfigError>
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.node
            .set_peers(peers.into_iter().map(Into::into).collect())
    }

    /// Follows the addresses of a DNS name as the peer list, from now until the cache is
    /// dropped. Call it inside a tokio runtime. See [`DnsDiscovery`].
    pub fn discover<R: Resolve>(&self, discovery: DnsDiscovery<R>) -> Result<(), ConfigError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        self.node.check_peer_auth_for_discovery()?;
        let (on_peers, on_error) = (Arc::downgrade(&self.node), Arc::downgrade(&self.node));
        runtime.spawn(discovery.run(
            move |peers| on_peers.upgrade().map(|node| node.set_peers(peers)),
            move |name, reason| {
                if let Some(node) = on_error.upgrade() {
                    node.discovery_failed(name, reason);
                }
            },
            self.node.closed(),
        ));
        Ok(())
    }

    /// A snapshot of every data source's counters and caches, and of the cluster.
    pub fn stats(&self) -> Stats {
        self.node.stats()
    }

    /// Stops serving peers and waits, at most
    /// [`shutdown_timeout`](crate::GroupcacheBuilder::shutdown_timeout), for the loads that
    /// started before the call to finish.
    ///
    /// From the call on, peer requests are answered `503 Service Unavailable`, so peers load
    /// this node's keys themselves (and soon skip it, see [`PeerHealthConfig`](crate::PeerHealthConfig)). Gets through
    /// this node's own handles keep working; the loads they start from now on are not waited
    /// for. Call it when the service receives SIGTERM, before the HTTP server stops. The
    /// report says how many loads were still running at the bound: they go on in the
    /// background, and their callers still get their values, but nothing waits for them.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use tower_groupcache::Groupcache;
    ///
    /// let cache = Groupcache::builder()
    ///     .shutdown_timeout(Duration::from_secs(10))
    ///     .source("users", |key: String| async move { Ok::<_, std::io::Error>(key) })
    ///     .build()?;
    /// // On SIGTERM:
    /// let report = cache.shutdown().await;
    /// assert!(report.is_complete(), "no load was running");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn shutdown(&self) -> Shutdown {
        self.node.shutdown().await
    }

    /// Copies the current stats into the [`metrics`] facade; see [`crate::metrics`] for
    /// the names. Call it before each scrape, or use
    /// [`export_metrics`](Groupcache::export_metrics).
    pub fn record_metrics(&self) {
        if self.node.first_metrics_record() {
            crate::metrics::describe_metrics();
        }
        crate::metrics::record(&self.node.stats());
    }

    /// Calls [`record_metrics`](Groupcache::record_metrics) every `interval` from now until
    /// the cache is dropped. Call it inside a tokio runtime.
    pub fn export_metrics(&self, interval: Duration) -> Result<(), ConfigError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError::NoRuntime)?;
        let weak = Arc::downgrade(&self.node);
        let mut closed = self.node.closed();
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(10)));
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = closed.changed() => return,
                }
                let Some(node) = weak.upgrade() else { return };
                Groupcache { node }.record_metrics();
            }
        });
        Ok(())
    }

    /// Whether [`shutdown`](Groupcache::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.node.is_draining()
    }

    /// The ring in use now: which node owns which key. It is a snapshot; a later
    /// [`set_peers`](Groupcache::set_peers) does not change it.
    pub fn ring(&self) -> Arc<Ring> {
        self.node.ring()
    }

    /// This node's URL, or `None` in single-node mode without one.
    pub fn self_url(&self) -> Option<&str> {
        self.node.self_url()
    }
}

impl fmt::Debug for Groupcache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.node.fmt(f)
    }
}
