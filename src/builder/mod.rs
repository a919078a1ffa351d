//! The builder of a [`Groupcache`]; its environment variables are read in `env.rs`, and the
//! rules its settings share with a change of peers are in `crate::config`.

mod env;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::config::{
    check_peer_auth, normalize_url, peer_auth, validate_base_path, validate_peers,
};
use crate::defaults;
use crate::error::ConfigError;
use crate::groupcache::Groupcache;
use crate::node::{HotKeys, Node, NodeConfig, NodeParts, SourceOptions};
use crate::peer::auth::PeerSecret;
use crate::peer::client::{ClientConfig, PeerClient};
use crate::peer::health::{PeerHealth, PeerHealthConfig};
use crate::ring::{Ring, RingKind};
use crate::source::{DynSource, Source};

/// Builds a [`Groupcache`]. Every setter takes and returns the builder; nothing is checked
/// until [`build`](GroupcacheBuilder::build), which returns a [`ConfigError`] instead of
/// panicking.
///
/// ```
/// use std::time::Duration;
/// use tower_groupcache::{ConfigError, Groupcache};
///
/// let cache = Groupcache::builder()
///     .self_url("http://10.0.0.1:8080")
///     .peers(["http://10.0.0.2:8080", "http://10.0.0.3:8080"]) // self is added
///     .peer_secret("a secret all nodes share: 32 or more random bytes")
///     .cache_bytes(128 << 20)
///     .peer_timeout(Duration::from_millis(500))
///     .source("users", |key: String| async move { Ok::<_, std::io::Error>(key) })
///     .build()
///     .unwrap();
/// assert_eq!(cache.stats().cluster.count, 3);
///
/// let err = Groupcache::builder().self_url("ftp://x").build().unwrap_err();
/// assert!(matches!(err, ConfigError::InvalidUrl { .. }));
/// ```
#[must_use]
pub struct GroupcacheBuilder {
    self_url: Option<String>,
    peers: Vec<String>,
    base_path: String,
    cache_bytes: u64,
    replicas: usize,
    ring_kind: RingKind,
    peer_timeout: Duration,
    /// `None`: [`defaults::CONNECT_TIMEOUT`], or the peer timeout if that is shorter.
    connect_timeout: Option<Duration>,
    peer_idle_timeout: Duration,
    max_connections_per_peer: usize,
    max_batch_keys: usize,
    natural_batching: usize,
    natural_batching_wait: Duration,
    max_key_bytes: usize,
    max_value_bytes: usize,
    peer_health: PeerHealthConfig,
    log_keys: bool,
    hot_keys: HotKeys,
    hot_cache_fraction: f64,
    hot_max_staleness: Duration,
    shutdown_timeout: Duration,
    clock: Arc<dyn Clock>,
    /// Signs this node's peer requests, and is accepted from peers.
    peer_secret: Option<PeerSecret>,
    /// Accepted from peers, never used to sign.
    previous_peer_secrets: Vec<PeerSecret>,
    open_peer_path: bool,
    #[cfg(feature = "tls")]
    peer_tls: Option<crate::peer::tls::PeerTls>,
    sources: Vec<(String, Arc<dyn DynSource>, SourceOptions)>,
}

impl Default for GroupcacheBuilder {
    fn default() -> Self {
        Self {
            self_url: None,
            peers: Vec::new(),
            base_path: defaults::BASE_PATH.to_owned(),
            cache_bytes: defaults::CACHE_BYTES,
            replicas: defaults::REPLICAS,
            ring_kind: RingKind::Golang,
            peer_timeout: defaults::PEER_TIMEOUT,
            connect_timeout: None,
            peer_idle_timeout: defaults::PEER_IDLE_TIMEOUT,
            max_connections_per_peer: defaults::MAX_CONNECTIONS_PER_PEER,
            max_batch_keys: defaults::MAX_BATCH_KEYS,
            natural_batching: defaults::NATURAL_BATCHING,
            natural_batching_wait: Duration::ZERO,
            max_key_bytes: defaults::MAX_KEY_BYTES,
            max_value_bytes: defaults::MAX_VALUE_BYTES,
            peer_health: PeerHealthConfig::default(),
            log_keys: false,
            hot_keys: HotKeys::default(),
            hot_cache_fraction: defaults::HOT_CACHE_FRACTION,
            hot_max_staleness: defaults::HOT_MAX_STALENESS,
            shutdown_timeout: defaults::SHUTDOWN_TIMEOUT,
            clock: Arc::new(SystemClock),
            peer_secret: None,
            previous_peer_secrets: Vec::new(),
            open_peer_path: false,
            #[cfg(feature = "tls")]
            peer_tls: None,
            sources: Vec::new(),
        }
    }
}

impl fmt::Debug for GroupcacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupcacheBuilder")
            .field("self_url", &self.self_url)
            .field("peers", &self.peers)
            .field("base_path", &self.base_path)
            .field("cache_bytes", &self.cache_bytes)
            .field("replicas", &self.replicas)
            .field("ring", &self.ring_kind)
            .field("peer_timeout", &self.peer_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("peer_idle_timeout", &self.peer_idle_timeout)
            .field("max_connections_per_peer", &self.max_connections_per_peer)
            .field("max_batch_keys", &self.max_batch_keys)
            .field("natural_batching", &self.natural_batching)
            .field("natural_batching_wait", &self.natural_batching_wait)
            .field("max_key_bytes", &self.max_key_bytes)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("peer_health", &self.peer_health)
            .field("log_keys", &self.log_keys)
            .field("hot_keys", &self.hot_keys)
            .field("hot_cache_fraction", &self.hot_cache_fraction)
            .field("hot_max_staleness", &self.hot_max_staleness)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("peer_secret", &self.peer_secret)
            .field("previous_peer_secrets", &self.previous_peer_secrets)
            .field("open_peer_path", &self.open_peer_path)
            .field(
                "sources",
                &self.sources.iter().map(|(n, _, _)| n).collect::<Vec<_>>(),
            )
            .finish()
    }
}

// Here rather than beside `Groupcache`: the builder depends on the cache it builds, and not
// the other way round.
impl Groupcache {
    /// Starts a builder with the defaults: single-node mode, base path `/_groupcache/`, 64 MiB
    /// per data source, 50 ring replicas.
    pub fn builder() -> GroupcacheBuilder {
        GroupcacheBuilder::default()
    }
}

impl GroupcacheBuilder {
    /// This node's URL as its peers reach it, e.g. `http://10.0.0.1:8080`: scheme, host and
    /// port, no path. It must be spelled as in the other nodes' peer lists, since the ring
    /// compares peers as strings. The scheme and host are lowered to lower case here, in
    /// [`peers`](Self::peers) and in [`Groupcache::set_peers`], so `HTTP://Node-1:8080` and
    /// `http://node-1:8080` are one node. Go nodes compare the strings as given: give them
    /// the lower-case spelling.
    pub fn self_url(mut self, url: impl Into<String>) -> Self {
        self.self_url = Some(url.into());
        self
    }

    /// The URLs of every node in the cluster, spelled as for [`self_url`](Self::self_url)
    /// (scheme and host in lower case). This node's own URL is added if missing, so with a
    /// self URL the ring always holds this node: no peers gives a ring of one. Without a self
    /// URL, no peers (the default) is single-node mode, and peers are refused
    /// ([`ConfigError::MissingSelfUrl`]). Either way every key is loaded here until other
    /// nodes join.
    pub fn peers<I, P>(mut self, peers: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.peers = peers.into_iter().map(Into::into).collect();
        self
    }

    /// The path under which the layer answers peers. Default [`defaults::BASE_PATH`]. Every
    /// node of a cluster must use the same. [`build`](Self::build) refuses
    /// ([`ConfigError::InvalidBasePath`], with the reason) a path that does not start and end
    /// with `/`, `/` itself (every request would be a peer request), one with an empty
    /// (`//`), `.` or `..` segment (a client or proxy may resolve these away, and the path
    /// would not match), and one with a character other than visible ASCII or with `?`, `#`
    /// or `%`.
    pub fn base_path(mut self, path: impl Into<String>) -> Self {
        self.base_path = path.into();
        self
    }

    /// The bytes of keys and values each data source may hold, main and hot cache together
    /// (the hot cache takes at most an eighth). Default [`defaults::CACHE_BYTES`]; 0 turns
    /// caching off, as in golang/groupcache. Any value is accepted.
    pub fn cache_bytes(mut self, bytes: u64) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// Points per peer on the ring. Default [`defaults::REPLICAS`], as golang/groupcache; every
    /// node of a cluster must use the same.
    ///
    /// From 1 to [`MAX_REPLICAS`](crate::MAX_REPLICAS), and peers × replicas at most
    /// [`MAX_RING_POINTS`](crate::MAX_RING_POINTS): [`build`](Self::build) and
    /// [`Groupcache::set_peers`] refuse a ring beyond either bound.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// The kind of ring that places keys. Default [`RingKind::Golang`], golang/groupcache's
    /// ring, which a cluster with Go nodes needs. [`RingKind::Balanced`] spreads keys far more
    /// evenly (the busiest of 50 nodes owns about 1.1 times its fair share instead of 1.6;
    /// docs/scaling.md) but Go nodes do not know it: use it in clusters of this crate alone.
    /// Every node of a cluster must use the same kind; a node on another kind is counted as a
    /// ring mismatch and logged. `replicas` does not apply to the balanced ring, which has
    /// [`BALANCED_POINTS`](crate::BALANCED_POINTS) points per peer and holds at most 2,232
    /// peers ([`ConfigError::TooManyPeers`]).
    pub fn ring(mut self, kind: RingKind) -> Self {
        self.ring_kind = kind;
        self
    }

    /// The longest a peer fetch may take, from connecting to the last byte. Default
    /// [`defaults::PEER_TIMEOUT`]. Past it the get loads the key locally. Above 0
    /// ([`ConfigError::ZeroLimit`]); `Duration::MAX` waits as long as the peer takes.
    pub fn peer_timeout(mut self, timeout: Duration) -> Self {
        self.peer_timeout = timeout;
        self
    }

    /// The longest opening a connection to a peer may take. Default
    /// [`defaults::CONNECT_TIMEOUT`], or the [`peer_timeout`](Self::peer_timeout) if that is
    /// shorter. The peer timeout bounds the whole fetch, the connection included, so
    /// [`build`](Self::build) refuses a connect timeout set above it
    /// ([`ConfigError::ConnectTimeoutAbovePeerTimeout`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// How long a connection to a peer may stay idle before it is closed. Each peer keeps at
    /// most 64 idle connections for reuse; a background task closes the ones idle longer than
    /// this. Default [`defaults::PEER_IDLE_TIMEOUT`]. Above 0 ([`ConfigError::ZeroLimit`]).
    pub fn peer_idle_timeout(mut self, timeout: Duration) -> Self {
        self.peer_idle_timeout = timeout;
        self
    }

    /// The most connections this node keeps open to one peer, in use and idle. Each peer
    /// request, a fetch or a removal, takes one for its whole exchange; when all are taken, a
    /// request waits for one, and the wait counts toward [`peer_timeout`](Self::peer_timeout).
    /// Default [`defaults::MAX_CONNECTIONS_PER_PEER`]; 0 is refused.
    pub fn max_connections_per_peer(mut self, max: usize) -> Self {
        self.max_connections_per_peer = max;
        self
    }

    /// The most keys in one batched peer request
    /// ([`CacheHandle::get_many`](crate::CacheHandle::get_many) asks each owner of this crate
    /// for its keys in batches of at most this many), and the most this node answers in one
    /// (more get `413`). Default [`defaults::MAX_BATCH_KEYS`]; from 1 to
    /// [`defaults::MAX_BATCH_KEYS_LIMIT`] ([`ConfigError::ZeroLimit`],
    /// [`ConfigError::TooManyBatchKeys`]).
    pub fn max_batch_keys(mut self, max: usize) -> Self {
        self.max_batch_keys = max;
        self
    }

    /// Natural batching of single-key gets: once `in_flight` gets of one source are in flight
    /// to one peer of this crate, further gets of that source for that peer queue, and go
    /// together in one batched request as soon as one of those ends. There is no timer: a get
    /// that finds fewer in flight goes at once, so an idle node adds no latency. Default
    /// [`defaults::NATURAL_BATCHING`]; `0` turns it off (every get its own request). Go peers
    /// always get one request per key.
    pub fn natural_batching(mut self, in_flight: usize) -> Self {
        self.natural_batching = in_flight;
        self
    }

    /// With [`natural_batching`](Self::natural_batching) on, how long a get that could go at
    /// once waits for other gets of its source to the same peer, to send them together (it
    /// goes as soon as [`max_batch_keys`](Self::max_batch_keys) have come). It trades up to
    /// `wait` of latency on each remote get for fewer, larger requests, as mailgun's design
    /// suggests. Default zero: no wait, so an idle node adds no latency.
    pub fn natural_batching_wait(mut self, wait: Duration) -> Self {
        self.natural_batching_wait = wait;
        self
    }

    /// The longest key accepted, in bytes. Default [`defaults::MAX_KEY_BYTES`]. Above 0
    /// ([`ConfigError::ZeroLimit`]).
    pub fn max_key_bytes(mut self, bytes: usize) -> Self {
        self.max_key_bytes = bytes;
        self
    }

    /// The largest value accepted from a peer, in bytes. Default [`defaults::MAX_VALUE_BYTES`].
    /// Above 0 ([`ConfigError::ZeroLimit`]). It goes with each get
    /// (`x-groupcache-max-value-bytes`), so an owner of this crate answers `413` instead of
    /// sending a larger value; a Go owner sends it all the same, and the body is cut off at
    /// the limit. Either way the key is loaded here.
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    /// When to skip a failing peer and load its keys locally instead. Default
    /// [`PeerHealthConfig::default`]: after 3 failures in a row, for 1 s doubling up to 30 s,
    /// with one probe request at the end of each cooldown. Unless `failure_threshold` is 0,
    /// the cooldown must be greater than zero and at most `max_cooldown`; see
    /// [`PeerHealthConfig`].
    pub fn peer_health(mut self, config: PeerHealthConfig) -> Self {
        self.peer_health = config;
        self
    }

    /// Whether tracing spans and events may carry keys. Off by default: keys often hold
    /// personal data (user ids, emails). Spans name the source and the peer either way.
    pub fn log_keys(mut self, log_keys: bool) -> Self {
        self.log_keys = log_keys;
        self
    }

    /// Registers a data source under `name` (a golang/groupcache group name). See
    /// [`Source`] for what it may be.
    pub fn source<S: Source>(self, name: impl Into<String>, source: S) -> Self {
        self.source_with(name, source, SourceOptions::default())
    }

    /// Registers a data source with a default TTL, jitter, negative caching or stale
    /// serving; see [`SourceOptions`].
    pub fn source_with<S: Source>(
        mut self,
        name: impl Into<String>,
        source: S,
        options: SourceOptions,
    ) -> Self {
        self.sources.push((name.into(), Arc::new(source), options));
        self
    }

    /// When to keep a copy of a key another node owns. Default [`HotKeys::AboveQps`] with
    /// 0.05 requests per second (about three a minute). The rate of `AboveQps` is finite and
    /// 0 or more; [`build`](Self::build) refuses NaN, a negative rate and the infinities
    /// ([`ConfigError::InvalidHotKeyRate`]): [`HotKeys::Never`] keeps no copies.
    pub fn hot_keys(mut self, policy: HotKeys) -> Self {
        self.hot_keys = policy;
        self
    }

    /// The share of cache bytes the hot cache may hold, from 0 to 1; anything else, NaN
    /// included, is refused ([`ConfigError::InvalidHotCacheFraction`]). Default
    /// [`defaults::HOT_CACHE_FRACTION`] (an eighth, golang/groupcache's balance).
    pub fn hot_cache_fraction(mut self, fraction: f64) -> Self {
        self.hot_cache_fraction = fraction;
        self
    }

    /// The longest a hot copy is served before it is fetched from its owner again, even if
    /// the value has no TTL. Default [`defaults::HOT_MAX_STALENESS`]. Any value is accepted; 0
    /// keeps no hot copy.
    pub fn hot_max_staleness(mut self, staleness: Duration) -> Self {
        self.hot_max_staleness = staleness;
        self
    }

    /// The longest [`Groupcache::shutdown`] waits for the loads in flight. Default
    /// [`defaults::SHUTDOWN_TIMEOUT`]. Keep it below the time the platform gives a stopping
    /// process (Kubernetes' `terminationGracePeriodSeconds`), with room for the HTTP server to
    /// stop after it.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// The secret that signs this node's peer requests and checks the ones it receives
    /// (HMAC-SHA256 over the method, path, a timestamp and a nonce; see the
    /// [`auth`](crate::auth) module). Every node of a cluster needs the same secret. Use
    /// random bytes: [`build`](Self::build) refuses a secret shorter than
    /// [`MIN_PEER_SECRET_BYTES`](crate::MIN_PEER_SECRET_BYTES) (32) with [`ConfigError::ShortPeerSecret`]. A second call
    /// replaces the first.
    pub fn peer_secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.peer_secret = Some(PeerSecret::new(secret));
        self
    }

    /// A secret still accepted from peers, but never used to sign, during a rotation (see
    /// docs/security.md). Each call adds one. It goes with a current secret set by
    /// [`peer_secret`](Self::peer_secret): [`build`](Self::build) refuses a previous secret
    /// alone ([`ConfigError::PreviousPeerSecretOnly`]), and one shorter than
    /// [`MIN_PEER_SECRET_BYTES`](crate::MIN_PEER_SECRET_BYTES).
    pub fn previous_peer_secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        let secret = PeerSecret::new(secret);
        if !self.previous_peer_secrets.contains(&secret) {
            self.previous_peer_secrets.push(secret);
        }
        self
    }

    /// Serves peers without authentication, as golang/groupcache does (and as a cluster
    /// with Go nodes needs). Anyone who can reach the service can then make it load any key
    /// of its data sources: restrict the peer path by network (see docs/security.md). A
    /// cluster without a peer secret must call this; `build` logs a warning.
    pub fn open_peer_path(mut self) -> Self {
        self.open_peer_path = true;
        self
    }

    /// TLS for https peers: the roots to trust and, for mutual TLS, this node's client
    /// certificate. Needed for `https://` peer URLs. See [`PeerTls`](crate::PeerTls).
    #[cfg(feature = "tls")]
    pub fn peer_tls(mut self, tls: crate::peer::tls::PeerTls) -> Self {
        self.peer_tls = Some(tls);
        self
    }

    /// The clock that decides expiry. Default [`SystemClock`]; tests use a [`ManualClock`](crate::ManualClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Checks the settings and builds the cache. Each setter's documentation states what it
    /// accepts; anything else is a [`ConfigError`] here, never a panic.
    pub fn build(self) -> Result<Groupcache, ConfigError> {
        for (what, zero) in [
            ("peer timeout", self.peer_timeout.is_zero()),
            (
                "connect timeout",
                self.connect_timeout.is_some_and(|t| t.is_zero()),
            ),
            ("peer idle timeout", self.peer_idle_timeout.is_zero()),
            (
                "max connections per peer",
                self.max_connections_per_peer == 0,
            ),
            ("max key bytes", self.max_key_bytes == 0),
            ("max value bytes", self.max_value_bytes == 0),
        ] {
            if zero {
                return Err(ConfigError::ZeroLimit(what));
            }
        }
        check_max_batch_keys(self.max_batch_keys)?;
        let connect_timeout = match self.connect_timeout {
            Some(connect) if connect > self.peer_timeout => {
                return Err(ConfigError::ConnectTimeoutAbovePeerTimeout {
                    connect,
                    peer: self.peer_timeout,
                });
            }
            Some(connect) => connect,
            None => defaults::CONNECT_TIMEOUT.min(self.peer_timeout),
        };
        validate_base_path(&self.base_path)?;
        self.peer_health.check()?;
        if !(0.0..=1.0).contains(&self.hot_cache_fraction) {
            return Err(ConfigError::InvalidHotCacheFraction(
                self.hot_cache_fraction.to_string(),
            ));
        }
        if let HotKeys::AboveQps(qps) = self.hot_keys {
            // A comparison with NaN is always false, so NaN would keep no copies, and a
            // negative rate would keep every fetched value: neither is what was meant.
            if !qps.is_finite() || qps < 0.0 {
                return Err(ConfigError::InvalidHotKeyRate(qps.to_string()));
            }
        }
        #[cfg(feature = "tls")]
        let https = self.peer_tls.is_some();
        #[cfg(not(feature = "tls"))]
        let https = false;
        let self_url = match &self.self_url {
            Some(url) => Some(normalize_url(url, https)?),
            None if !self.peers.is_empty() => return Err(ConfigError::MissingSelfUrl),
            None => None,
        };
        let peers = validate_peers(self_url.as_deref(), self.peers, https)?;
        let ring = Ring::for_config(self.ring_kind, self.replicas, &peers)?;
        let auth = peer_auth(self.peer_secret, self.previous_peer_secrets)?;
        let has_others = check_peer_auth(
            &peers,
            self_url.as_deref(),
            auth.is_some(),
            self.open_peer_path,
        )?;
        if has_others && auth.is_none() {
            tracing::warn!(
                "the peer path is open: peer requests are not authenticated; \
                 restrict it to the cluster's network"
            );
        }

        let mut sources: Vec<(String, Arc<dyn DynSource>, SourceOptions)> =
            Vec::with_capacity(self.sources.len());
        for (name, source, options) in self.sources {
            if name.is_empty() || name.contains('/') {
                return Err(ConfigError::InvalidSourceName(name));
            }
            if sources.iter().any(|(n, _, _)| *n == name) {
                return Err(ConfigError::DuplicateSource(name));
            }
            sources.push((name, source, options));
        }

        #[cfg(feature = "tls")]
        let tls = match &self.peer_tls {
            Some(tls) => tls.client_config()?,
            None => rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::Tls(e.to_string()))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        };
        let client = PeerClient::new(
            ClientConfig {
                timeout: self.peer_timeout,
                connect_timeout,
                idle_timeout: self.peer_idle_timeout,
                max_value_bytes: self.max_value_bytes,
                max_connections_per_peer: self.max_connections_per_peer,
                ring_kind: self.ring_kind,
            },
            auth.clone(),
            #[cfg(feature = "tls")]
            tls,
        );
        Ok(Groupcache::from_node(Node::new(NodeParts {
            self_url,
            ring,
            config: NodeConfig {
                base_path: self.base_path.into(),
                replicas: self.replicas,
                ring_kind: self.ring_kind,
                max_key_bytes: self.max_key_bytes,
                max_batch_keys: self.max_batch_keys,
                max_value_bytes: self.max_value_bytes,
                natural_batching: self.natural_batching,
                natural_batching_wait: self.natural_batching_wait,
                log_keys: self.log_keys,
                hot_keys: self.hot_keys,
                hot_max_staleness: self.hot_max_staleness,
                shutdown_timeout: self.shutdown_timeout,
            },
            client,
            sources,
            cache_bytes: self.cache_bytes,
            hot_cache_fraction: self.hot_cache_fraction,
            health: PeerHealth::new(self.peer_health, &peers),
            clock: self.clock,
            auth,
            open_peer_path: self.open_peer_path,
            https,
        })))
    }
}

/// `max_batch_keys` from 1 to [`defaults::MAX_BATCH_KEYS_LIMIT`].
pub(crate) fn check_max_batch_keys(keys: usize) -> Result<(), ConfigError> {
    if keys == 0 {
        return Err(ConfigError::ZeroLimit("max batch keys"));
    }
    if keys > defaults::MAX_BATCH_KEYS_LIMIT {
        return Err(ConfigError::TooManyBatchKeys(keys));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
