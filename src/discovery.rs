//! Peer discovery from DNS: the addresses behind one name (a Kubernetes headless service)
//! become the peer list, and the ring follows them as pods come and go.
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_groupcache::{DnsDiscovery, Groupcache};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Groupcache::builder()
//!     .self_url(format!("http://{}:8080", std::env::var("POD_IP")?))
//!     .source("users", |key: String| async move { Ok::<_, std::io::Error>(key) })
//!     .build()?;
//! cache.discover(
//!     DnsDiscovery::new("parsec.default.svc.cluster.local", 8080)
//!         .interval(Duration::from_secs(5)),
//! )?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::error::ConfigError;

/// Resolves a DNS name to addresses. [`SystemResolver`] is the default; tests and other
/// discovery back ends provide their own.
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `name`, in any order.
    fn resolve(&self, name: &str) -> impl Future<Output = io::Result<Vec<IpAddr>>> + Send;
}

/// The system resolver, through `tokio::net::lookup_host` (getaddrinfo on a blocking thread).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    async fn resolve(&self, name: &str) -> io::Result<Vec<IpAddr>> {
        let addrs = tokio::net::lookup_host((name, 0)).await?;
        Ok(addrs.map(|a: SocketAddr| a.ip()).collect())
    }
}

/// What to watch: a DNS name, the port and scheme of the peer URLs built from its
/// addresses, and how often to look.
#[must_use]
pub struct DnsDiscovery<R = SystemResolver> {
    name: String,
    port: u16,
    scheme: &'static str,
    interval: Duration,
    resolver: R,
}

impl<R> fmt::Debug for DnsDiscovery<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsDiscovery")
            .field("name", &self.name)
            .field("port", &self.port)
            .field("scheme", &self.scheme)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

impl DnsDiscovery {
    /// Watches `name`; each address `a` becomes the peer `http://a:port`. Looks every 5 s.
    pub fn new(name: impl Into<String>, port: u16) -> Self {
        Self {
            name: name.into(),
            port,
            scheme: "http",
            interval: Duration::from_secs(5),
            resolver: SystemResolver,
        }
    }
}

impl<R: Resolve> DnsDiscovery<R> {
    /// How often to resolve the name. Default 5 s.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Resolves through `resolver` instead of the system resolver.
    pub fn resolver<R2: Resolve>(self, resolver: R2) -> DnsDiscovery<R2> {
        DnsDiscovery {
            name: self.name,
            port: self.port,
            scheme: self.scheme,
            interval: self.interval,
            resolver,
        }
    }

    /// The peer URLs for a set of addresses, sorted and without duplicates.
    fn peer_urls(&self, addrs: &[IpAddr]) -> Vec<String> {
        let mut urls: Vec<String> = addrs
            .iter()
            .map(|ip| format!("{}://{}", self.scheme, SocketAddr::new(*ip, self.port)))
            .collect();
        urls.sort_unstable();
        urls.dedup();
        urls
    }

    /// The watch loop: hands each new peer list to `on_peers` (`None` once the cache is gone,
    /// which ends the loop) and each failure to `on_failure`. It ends when `closed` changes
    /// or its sender is dropped, with the cache.
    pub(crate) async fn run(
        self,
        on_peers: impl Fn(Vec<String>) -> Option<Result<(), ConfigError>> + Send + 'static,
        on_failure: impl Fn(&str, &dyn fmt::Display) + Send + 'static,
        mut closed: tokio::sync::watch::Receiver<()>,
    ) {
        let mut interval = tokio::time::interval(self.interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut current: Option<Vec<String>> = None;
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = closed.changed() => return,
            }
            let urls = match self.resolver.resolve(&self.name).await {
                Ok(addrs) if !addrs.is_empty() => self.peer_urls(&addrs),
                Ok(_) => {
                    on_failure(&self.name, &"no addresses");
                    continue;
                }
                Err(error) => {
                    on_failure(&self.name, &error);
                    continue;
                }
            };
            if current.as_ref() == Some(&urls) {
                continue;
            }
            match on_peers(urls.clone()) {
                None => return,
                Some(Ok(())) => {
                    tracing::info!(name = %self.name, peers = ?urls, "peers discovered");
                    current = Some(urls);
                }
                Some(Err(error)) => on_failure(&self.name, &error),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Groupcache;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
    use std::sync::{Arc, Mutex};

    /// Answers what the test says, and counts the questions.
    #[derive(Clone, Default)]
    struct Scripted {
        answer: Arc<Mutex<Option<io::Result<Vec<IpAddr>>>>>,
        asked: Arc<AtomicUsize>,
    }

    impl Scripted {
        fn set(&self, answer: io::Result<Vec<&str>>) {
            let answer = answer.map(|ips| ips.iter().map(|ip| ip.parse().unwrap()).collect());
            *self.answer.lock().unwrap() = Some(answer);
        }
    }

    impl Resolve for Scripted {
        async fn resolve(&self, _name: &str) -> io::Result<Vec<IpAddr>> {
            self.asked.fetch_add(1, Relaxed);
            match &*self.answer.lock().unwrap() {
                Some(Ok(ips)) => Ok(ips.clone()),
                Some(Err(e)) => Err(io::Error::new(e.kind(), e.to_string())),
                None => Ok(Vec::new()),
            }
        }
    }

    async fn next_round(resolver: &Scripted) {
        let asked = resolver.asked.load(Relaxed);
        while resolver.asked.load(Relaxed) == asked {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Let the watcher act on the answer it just got.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    /// The node at 10.0.0.1:8080, and a resolver the test scripts.
    fn node_and_resolver() -> (Groupcache, Scripted) {
        let cache = Groupcache::builder()
            .open_peer_path()
            .self_url("http://10.0.0.1:8080")
            .build()
            .unwrap();
        (cache, Scripted::default())
    }

    #[tokio::test(start_paused = true)]
    async fn follows_the_answers_and_keeps_the_last_list_on_failure() {
        let (cache, resolver) = node_and_resolver();
        resolver.set(Ok(vec!["10.0.0.2", "10.0.0.1", "fd00::3", "10.0.0.2"]));
        cache
            .discover(
                DnsDiscovery::new("parsec.svc", 8080)
                    .interval(Duration::from_secs(5))
                    .resolver(resolver.clone()),
            )
            .unwrap();
        next_round(&resolver).await;
        let peers = |c: &Groupcache| c.stats().cluster.peers;
        assert_eq!(
            peers(&cache),
            [
                "http://10.0.0.1:8080",
                "http://10.0.0.2:8080",
                "http://[fd00::3]:8080"
            ]
        );

        resolver.set(Ok(vec!["10.0.0.1", "10.0.0.4"]));
        next_round(&resolver).await;
        assert_eq!(
            peers(&cache),
            ["http://10.0.0.1:8080", "http://10.0.0.4:8080"]
        );

        resolver.set(Err(io::Error::other("SERVFAIL")));
        next_round(&resolver).await;
        resolver.set(Ok(vec![]));
        next_round(&resolver).await;
        assert_eq!(
            peers(&cache),
            ["http://10.0.0.1:8080", "http://10.0.0.4:8080"]
        );
        assert_eq!(cache.stats().cluster.discovery_errors, 2);

        // Without this node in the answer (not ready yet), it is still on its own ring.
        resolver.set(Ok(vec!["10.0.0.5"]));
        next_round(&resolver).await;
        assert_eq!(
            peers(&cache),
            ["http://10.0.0.5:8080", "http://10.0.0.1:8080"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stops_when_the_cache_is_dropped() {
        let (cache, resolver) = node_and_resolver();
        resolver.set(Ok(vec!["10.0.0.1"]));
        cache
            .discover(DnsDiscovery::new("n", 80).resolver(resolver.clone()))
            .unwrap();
        next_round(&resolver).await;
        drop(cache);
        // The task ends and drops its resolver: only the test's handle is left.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while Arc::strong_count(&resolver.asked) > 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the watcher outlived its cache"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let asked = resolver.asked.load(Relaxed);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(resolver.asked.load(Relaxed), asked);
    }

    #[test]
    fn needs_a_runtime() {
        let cache = Groupcache::builder().open_peer_path().build().unwrap();
        let err = cache.discover(DnsDiscovery::new("n", 80)).unwrap_err();
        assert_eq!(err, ConfigError::NoRuntime);
    }
}
