//! The builder of a [`Groupcache`], and the validation of its settings.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::config::{
    check_peer_auth, check_secret_length, normalize_url, peer_auth, validate_base_path,
    validate_peers,
};
use crate::error::ConfigError;
use crate::groupcache::Groupcache;
use crate::node::{HotKeys, Node, NodeConfig, NodeParts, SourceOptions};
use crate::peer::auth::PeerSecret;
use crate::peer::client::{ClientConfig, PeerClient};
use crate::peer::health::{PeerHealth, PeerHealthConfig};
use crate::ring::Ring;
use crate::source::{DynSource, Source};

/// The default base path of the peer protocol, as in golang/groupcache.
pub const DEFAULT_BASE_PATH: &str = "/_groupcache/";
/// The default bytes per data source, main and hot cache together: 64 MiB.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;
/// The default number of ring points per peer, as in golang/groupcache.
pub const DEFAULT_REPLICAS: usize = 50;
/// The default bound on a whole peer fetch, connection included: 5 seconds. A fetch that
/// takes longer counts as a peer error and the key is loaded locally.
pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// The default bound on opening a connection to a peer: 1 second.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The default longest time a connection to a peer is kept idle for reuse: 90 seconds.
pub const DEFAULT_PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The default most connections open to one peer, in use and idle: 64, as many as a peer's
/// idle list keeps, so that every connection opened can be kept for reuse.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 64;
/// The default longest key, in bytes: 8 KiB. Longer keys are refused (`414` on the peer path).
pub const DEFAULT_MAX_KEY_BYTES: usize = 8 << 10;
/// The default largest value accepted from a peer, in bytes: 32 MiB. A larger answer is
/// refused while it streams in, and the key is loaded locally.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 32 << 20;

/// The default bound on [`Groupcache::shutdown`]: 15 seconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);
/// The default share of cache bytes for the hot cache: an eighth.
pub const DEFAULT_HOT_CACHE_FRACTION: f64 = 0.125;
/// The default longest life of a hot copy: 60 seconds.
pub const DEFAULT_HOT_MAX_STALENESS: Duration = Duration::from_secs(60);

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
    peer_timeout: Duration,
    /// `None`: [`DEFAULT_CONNECT_TIMEOUT`], or the peer timeout if that is shorter.
    connect_timeout: Option<Duration>,
    peer_idle_timeout: Duration,
    max_connections_per_peer: usize,
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
            base_path: DEFAULT_BASE_PATH.to_owned(),
            cache_bytes: DEFAULT_CACHE_BYTES,
            replicas: DEFAULT_REPLICAS,
            peer_timeout: DEFAULT_PEER_TIMEOUT,
            connect_timeout: None,
            peer_idle_timeout: DEFAULT_PEER_IDLE_TIMEOUT,
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            max_key_bytes: DEFAULT_MAX_KEY_BYTES,
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            peer_health: PeerHealthConfig::default(),
            log_keys: false,
            hot_keys: HotKeys::default(),
            hot_cache_fraction: DEFAULT_HOT_CACHE_FRACTION,
            hot_max_staleness: DEFAULT_HOT_MAX_STALENESS,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
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
            .field("peer_timeout", &self.peer_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("peer_idle_timeout", &self.peer_idle_timeout)
            .field("max_connections_per_peer", &self.max_connections_per_peer)
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

    /// The path under which the layer answers peers. Default [`DEFAULT_BASE_PATH`]. Every
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
    /// (the hot cache takes at most an eighth). Default [`DEFAULT_CACHE_BYTES`]; 0 turns
    /// caching off, as in golang/groupcache. Any value is accepted.
    pub fn cache_bytes(mut self, bytes: u64) -> Self {
        self.cache_bytes = bytes;
        self
    }

    /// Points per peer on the ring. Default [`DEFAULT_REPLICAS`], as golang/groupcache; every
    /// node of a cluster must use the same.
    ///
    /// From 1 to [`MAX_REPLICAS`](crate::MAX_REPLICAS), and peers × replicas at most
    /// [`MAX_RING_POINTS`](crate::MAX_RING_POINTS): [`build`](Self::build) and
    /// [`Groupcache::set_peers`] refuse a ring beyond either bound.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// The longest a peer fetch may take, from connecting to the last byte. Default
    /// [`DEFAULT_PEER_TIMEOUT`]. Past it the get loads the key locally. Above 0
    /// ([`ConfigError::ZeroLimit`]); `Duration::MAX` waits as long as the peer takes.
    pub fn peer_timeout(mut self, timeout: Duration) -> Self {
        self.peer_timeout = timeout;
        self
    }

    /// The longest opening a connection to a peer may take. Default
    /// [`DEFAULT_CONNECT_TIMEOUT`], or the [`peer_timeout`](Self::peer_timeout) if that is
    /// shorter. The peer timeout bounds the whole fetch, the connection included, so
    /// [`build`](Self::build) refuses a connect timeout set above it
    /// ([`ConfigError::ConnectTimeoutAbovePeerTimeout`]).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// How long a connection to a peer may stay idle before it is closed. Each peer keeps at
    /// most 64 idle connections for reuse; a background task closes the ones idle longer than
    /// this. Default [`DEFAULT_PEER_IDLE_TIMEOUT`]. Above 0 ([`ConfigError::ZeroLimit`]).
    pub fn peer_idle_timeout(mut self, timeout: Duration) -> Self {
        self.peer_idle_timeout = timeout;
        self
    }

    /// The most connections this node keeps open to one peer, in use and idle. Each peer
    /// request, a fetch or a removal, takes one for its whole exchange; when all are taken, a
    /// request waits for one, and the wait counts toward [`peer_timeout`](Self::peer_timeout).
    /// Default [`DEFAULT_MAX_CONNECTIONS_PER_PEER`]; 0 is refused.
    pub fn max_connections_per_peer(mut self, max: usize) -> Self {
        self.max_connections_per_peer = max;
        self
    }

    /// The longest key accepted, in bytes. Default [`DEFAULT_MAX_KEY_BYTES`]. Above 0
    /// ([`ConfigError::ZeroLimit`]).
    pub fn max_key_bytes(mut self, bytes: usize) -> Self {
        self.max_key_bytes = bytes;
        self
    }

    /// The largest value accepted from a peer, in bytes. Default [`DEFAULT_MAX_VALUE_BYTES`].
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
    /// [`DEFAULT_HOT_CACHE_FRACTION`] (an eighth, golang/groupcache's balance).
    pub fn hot_cache_fraction(mut self, fraction: f64) -> Self {
        self.hot_cache_fraction = fraction;
        self
    }

    /// The longest a hot copy is served before it is fetched from its owner again, even if
    /// the value has no TTL. Default [`DEFAULT_HOT_MAX_STALENESS`]. Any value is accepted; 0
    /// keeps no hot copy.
    pub fn hot_max_staleness(mut self, staleness: Duration) -> Self {
        self.hot_max_staleness = staleness;
        self
    }

    /// The longest [`Groupcache::shutdown`] waits for the loads in flight. Default
    /// [`DEFAULT_SHUTDOWN_TIMEOUT`]. Keep it below the time the platform gives a stopping
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

    /// A builder with the defaults, configured from the environment: the variables are the `prefix`, an
    /// underscore, and
    ///
    /// | variable | meaning | example |
    /// |---|---|---|
    /// | `SELF_URL` | [`self_url`](Self::self_url) | `http://10.0.0.1:8080` |
    /// | `PEER_URLS` | [`peers`](Self::peers), comma-separated; unset or empty: this node alone | `http://10.0.0.1:8080,http://10.0.0.2:8080` |
    /// | `BASE_PATH` | [`base_path`](Self::base_path) | `/_groupcache/` |
    /// | `CACHE_BYTES` | [`cache_bytes`](Self::cache_bytes), a number of bytes | `67108864` |
    /// | `REPLICAS` | [`replicas`](Self::replicas), 1 to [`MAX_REPLICAS`](crate::MAX_REPLICAS) | `50` |
    /// | `PEER_TIMEOUT_MS` | [`peer_timeout`](Self::peer_timeout) in milliseconds, above 0 | `5000` |
    /// | `CONNECT_TIMEOUT_MS` | [`connect_timeout`](Self::connect_timeout) in milliseconds, above 0 and at most the peer timeout | `1000` |
    /// | `PEER_IDLE_TIMEOUT_MS` | [`peer_idle_timeout`](Self::peer_idle_timeout) in milliseconds, above 0 | `90000` |
    /// | `SHUTDOWN_TIMEOUT_MS` | [`shutdown_timeout`](Self::shutdown_timeout) in milliseconds | `15000` |
    /// | `MAX_CONNECTIONS_PER_PEER` | [`max_connections_per_peer`](Self::max_connections_per_peer), above 0 | `64` |
    /// | `PEER_SECRET` | [`peer_secret`](Self::peer_secret), 32 bytes or more | 64 random hex digits |
    /// | `PEER_SECRET_PREVIOUS` | [`previous_peer_secret`](Self::previous_peer_secret), during a rotation, 32 bytes or more | |
    /// | `OPEN_PEER_PATH` | [`open_peer_path`](Self::open_peer_path) when `true` (`1`, `yes`); `false`, `0`, `no` or empty leave it closed | `false` |
    ///
    /// Values are trimmed. Unset variables keep their defaults. A value that is not Unicode,
    /// does not parse or is out of range is a [`ConfigError::Env`] that names the variable:
    /// `REPLICAS` from 1 to [`MAX_REPLICAS`](crate::MAX_REPLICAS), timeouts above 0, secrets
    /// of [`MIN_PEER_SECRET_BYTES`](crate::MIN_PEER_SECRET_BYTES) or more, a `BASE_PATH` that
    /// [`base_path`](Self::base_path) accepts. [`build`](Self::build) checks the rest: the
    /// URLs, and what depends on other settings (the ring's size, a connect timeout above the
    /// peer timeout, a previous secret without a current one). Data sources are added to the
    /// returned builder as usual.
    ///
    /// ```
    /// use tower_groupcache::GroupcacheBuilder;
    ///
    /// // With PARSEC_SELF_URL and PARSEC_PEER_URLS set by the deployment:
    /// let cache = GroupcacheBuilder::from_env("PARSEC")?
    ///     .source("users", |key: String| async move { Ok::<_, std::io::Error>(key) })
    ///     .build()?;
    /// # Ok::<(), tower_groupcache::ConfigError>(())
    /// ```
    pub fn from_env(prefix: &str) -> Result<Self, ConfigError> {
        Self::default().apply_vars(prefix, |name| match std::env::var(name) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err("the value is not valid Unicode".into()),
        })
    }

    /// [`from_env`](Self::from_env) with the variables read through `lookup` instead of the
    /// process environment (`None` for an unset variable).
    pub fn from_env_lookup<F>(prefix: &str, mut lookup: F) -> Result<Self, ConfigError>
    where
        F: FnMut(&str) -> Option<String>,
    {
        Self::default().apply_vars(prefix, |name| Ok(lookup(name)))
    }

    fn apply_vars<F>(mut self, prefix: &str, mut read: F) -> Result<Self, ConfigError>
    where
        F: FnMut(&str) -> Result<Option<String>, String>,
    {
        let mut var = |suffix: &str| -> Result<Option<(String, String)>, ConfigError> {
            let name = format!("{prefix}_{suffix}");
            match read(&name) {
                Ok(value) => Ok(value.map(|v| (name, v))),
                Err(reason) => Err(ConfigError::Env {
                    variable: name,
                    reason,
                }),
            }
        };
        fn number<T: std::str::FromStr>(
            (name, value): &(String, String),
        ) -> Result<T, ConfigError> {
            value.trim().parse().map_err(|_| ConfigError::Env {
                reason: format!("`{value}` is not a whole number"),
                variable: name.clone(),
            })
        }
        /// A value that parsed but cannot be used, refused as `build` would refuse it, with
        /// the variable's name.
        fn check(
            (name, _): &(String, String),
            checked: Result<(), ConfigError>,
        ) -> Result<(), ConfigError> {
            checked.map_err(|error| ConfigError::Env {
                variable: name.clone(),
                reason: error.to_string(),
            })
        }
        fn milliseconds(
            var: &(String, String),
            what: &'static str,
        ) -> Result<Duration, ConfigError> {
            let timeout = Duration::from_millis(number(var)?);
            if timeout.is_zero() {
                check(var, Err(ConfigError::ZeroLimit(what)))?;
            }
            Ok(timeout)
        }
        if let Some((_, url)) = var("SELF_URL")? {
            self.self_url = Some(url.trim().to_owned());
        }
        if let Some((_, urls)) = var("PEER_URLS")? {
            self.peers = urls
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(v) = var("BASE_PATH")? {
            let path = v.1.trim();
            check(&v, validate_base_path(path))?;
            self.base_path = path.to_owned();
        }
        if let Some(v) = var("CACHE_BYTES")? {
            self.cache_bytes = number(&v)?;
        }
        if let Some(v) = var("REPLICAS")? {
            let replicas = number(&v)?;
            // The bounds of one peer's points; the whole ring is checked by `build`.
            check(&v, crate::ring::check_size(1, replicas))?;
            self.replicas = replicas;
        }
        if let Some(v) = var("PEER_TIMEOUT_MS")? {
            self.peer_timeout = milliseconds(&v, "peer timeout")?;
        }
        if let Some(v) = var("CONNECT_TIMEOUT_MS")? {
            self.connect_timeout = Some(milliseconds(&v, "connect timeout")?);
        }
        if let Some(v) = var("PEER_IDLE_TIMEOUT_MS")? {
            self.peer_idle_timeout = milliseconds(&v, "peer idle timeout")?;
        }
        if let Some(v) = var("SHUTDOWN_TIMEOUT_MS")? {
            self.shutdown_timeout = Duration::from_millis(number(&v)?);
        }
        if let Some(v) = var("MAX_CONNECTIONS_PER_PEER")? {
            self.max_connections_per_peer = number(&v)?;
        }
        if let Some(v) = var("PEER_SECRET")? {
            let secret = PeerSecret::new(v.1.trim());
            check(&v, check_secret_length(&secret, false))?;
            self.peer_secret = Some(secret);
        }
        if let Some(v) = var("PEER_SECRET_PREVIOUS")? {
            let secret = PeerSecret::new(v.1.trim());
            check(&v, check_secret_length(&secret, true))?;
            self = self.previous_peer_secret(v.1.trim());
        }
        if let Some((name, value)) = var("OPEN_PEER_PATH")? {
            match value.trim() {
                "1" | "true" | "yes" => self.open_peer_path = true,
                "0" | "false" | "no" | "" => {}
                other => {
                    return Err(ConfigError::Env {
                        variable: name,
                        reason: format!("`{other}` is not true or false"),
                    });
                }
            }
        }
        Ok(self)
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
        let connect_timeout = match self.connect_timeout {
            Some(connect) if connect > self.peer_timeout => {
                return Err(ConfigError::ConnectTimeoutAbovePeerTimeout {
                    connect,
                    peer: self.peer_timeout,
                });
            }
            Some(connect) => connect,
            None => DEFAULT_CONNECT_TIMEOUT.min(self.peer_timeout),
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
        let ring = Ring::try_new(self.replicas, &peers)?;
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
                max_key_bytes: self.max_key_bytes,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> impl Source {
        |key: String| async move { Ok::<_, std::io::Error>(key) }
    }

    #[test]
    fn refuses_bad_urls() {
        for url in [
            "",
            "127.0.0.1:8080",
            "ftp://host",
            "http://",
            "http://host:8080/",
            "http://host:8080/path",
            "http://host:8080?q",
            "http://user@host:8080",
            "http://host:notaport",
            "https://host",
            "http://ho st",
        ] {
            let err = Groupcache::builder()
                .open_peer_path()
                .self_url(url)
                .build()
                .unwrap_err();
            assert!(
                matches!(err, ConfigError::InvalidUrl { .. }),
                "{url:?}: {err}"
            );
            let err = Groupcache::builder()
                .open_peer_path()
                .self_url("http://ok:1")
                .peers([url])
                .build()
                .unwrap_err();
            assert!(
                matches!(err, ConfigError::InvalidUrl { .. }),
                "{url:?}: {err}"
            );
        }
        for url in ["http://host", "http://10.0.0.1:8080", "http://[::1]:80"] {
            Groupcache::builder()
                .open_peer_path()
                .self_url(url)
                .build()
                .unwrap();
        }
    }

    #[test]
    fn refuses_bad_settings() {
        let b = Groupcache::builder;
        assert_eq!(
            b().replicas(0).build().unwrap_err(),
            ConfigError::ZeroReplicas
        );
        assert!(matches!(
            b().peer_timeout(Duration::ZERO).build().unwrap_err(),
            ConfigError::ZeroLimit(_)
        ));
        assert_eq!(
            b().peer_idle_timeout(Duration::ZERO).build().unwrap_err(),
            ConfigError::ZeroLimit("peer idle timeout")
        );
        assert_eq!(
            b().max_connections_per_peer(0).build().unwrap_err(),
            ConfigError::ZeroLimit("max connections per peer")
        );
        b().max_connections_per_peer(usize::MAX).build().unwrap();
        for path in [
            "",
            "/",
            "_groupcache/",
            "/_groupcache",
            "/a b/",
            "/a?/",
            "//x/",
            "/%41/",
        ] {
            assert!(
                matches!(
                    b().base_path(path).build().unwrap_err(),
                    ConfigError::InvalidBasePath { path: p, .. } if p == path
                ),
                "{path:?}"
            );
        }
        assert_eq!(
            b().peers(["http://a:1"]).build().unwrap_err(),
            ConfigError::MissingSelfUrl
        );
        assert_eq!(
            b().source("users", source())
                .source("users", source())
                .build()
                .unwrap_err(),
            ConfigError::DuplicateSource("users".into())
        );
        for name in ["", "a/b"] {
            assert_eq!(
                b().source(name, source()).build().unwrap_err(),
                ConfigError::InvalidSourceName(name.into())
            );
        }
    }

    #[test]
    fn reads_the_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let cache = GroupcacheBuilder::from_env_lookup(
            "PARSEC",
            env(&[
                ("PARSEC_SELF_URL", "http://a:1"),
                ("PARSEC_PEER_URLS", " http://a:1, http://b:1 ,,"),
                ("PARSEC_CACHE_BYTES", "1024"),
                ("PARSEC_BASE_PATH", "/cache/"),
                ("PARSEC_PEER_SECRET", "0123456789abcdef0123456789abcdef"),
                ("OTHER_REPLICAS", "0"),
            ]),
        )
        .unwrap()
        .build()
        .unwrap();
        assert_eq!(cache.stats().cluster.peers, ["http://a:1", "http://b:1"]);
        assert_eq!(cache.self_url(), Some("http://a:1"));

        let single = GroupcacheBuilder::from_env_lookup("PARSEC", env(&[]))
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(
            single.stats().cluster.count,
            0,
            "no peer list: single-node mode"
        );

        let err =
            GroupcacheBuilder::from_env_lookup("PARSEC", env(&[("PARSEC_CACHE_BYTES", "64MiB")]))
                .unwrap_err();
        assert_eq!(
            err,
            ConfigError::Env {
                variable: "PARSEC_CACHE_BYTES".into(),
                reason: "`64MiB` is not a whole number".into()
            }
        );
        assert!(err.to_string().contains("PARSEC_CACHE_BYTES"));
        let err = GroupcacheBuilder::from_env_lookup(
            "PARSEC",
            env(&[("PARSEC_OPEN_PEER_PATH", "maybe")]),
        )
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::Env { variable, .. } if variable == "PARSEC_OPEN_PEER_PATH")
        );
        let err = GroupcacheBuilder::from_env_lookup(
            "PARSEC",
            env(&[
                ("PARSEC_SELF_URL", "http://a:1"),
                ("PARSEC_PEER_URLS", "http://b:1"),
            ]),
        )
        .unwrap()
        .build()
        .unwrap_err();
        assert_eq!(
            err,
            ConfigError::PeerAuthRequired,
            "a cluster needs a secret or an open path"
        );
        let err =
            GroupcacheBuilder::from_env_lookup("PARSEC", env(&[("PARSEC_PEER_TIMEOUT_MS", "-1")]))
                .unwrap_err();
        assert!(
            matches!(err, ConfigError::Env { variable, .. } if variable == "PARSEC_PEER_TIMEOUT_MS")
        );
        let err = GroupcacheBuilder::from_env_lookup(
            "PARSEC",
            env(&[("PARSEC_PEER_IDLE_TIMEOUT_MS", "0")]),
        )
        .unwrap_err();
        assert_eq!(
            err,
            ConfigError::Env {
                variable: "PARSEC_PEER_IDLE_TIMEOUT_MS".into(),
                reason: "peer idle timeout must be greater than zero".into()
            }
        );
        let builder = GroupcacheBuilder::from_env_lookup(
            "PARSEC",
            env(&[("PARSEC_MAX_CONNECTIONS_PER_PEER", "8")]),
        )
        .unwrap();
        assert_eq!(builder.max_connections_per_peer, 8);
        let err = GroupcacheBuilder::from_env_lookup(
            "PARSEC",
            env(&[("PARSEC_MAX_CONNECTIONS_PER_PEER", "0")]),
        )
        .unwrap()
        .build()
        .unwrap_err();
        assert_eq!(err, ConfigError::ZeroLimit("max connections per peer"));
        let err = GroupcacheBuilder::from_env_lookup(
            "PARSEC",
            env(&[("PARSEC_PEER_URLS", "http://b:1")]),
        )
        .unwrap()
        .build()
        .unwrap_err();
        assert_eq!(err, ConfigError::MissingSelfUrl);
    }

    #[test]
    fn refuses_rings_too_large() {
        let b = || {
            Groupcache::builder()
                .open_peer_path()
                .self_url("http://a:1")
        };
        for replicas in [usize::MAX, 1 << 40, 10_000_000, 10_001] {
            let err = b()
                .replicas(replicas)
                .peers(["http://b:1"])
                .build()
                .unwrap_err();
            assert_eq!(err, ConfigError::TooManyReplicas(replicas));
            assert!(err.to_string().contains("10000"), "{replicas}: {err}");
        }
        // This node and ten peers: 11 × 10,000 points.
        let cache = b().replicas(crate::MAX_REPLICAS).build().unwrap();
        let peers: Vec<String> = (0..10).map(|i| format!("http://p{i}:1")).collect();
        let too_large = ConfigError::RingTooLarge {
            peers: 11,
            replicas: 10_000,
        };
        let before = cache.stats().cluster.peers;
        assert_eq!(cache.set_peers(peers.clone()).unwrap_err(), too_large);
        assert_eq!(
            cache.stats().cluster.peers,
            before,
            "a refused list changes nothing"
        );
        let err = b().replicas(10_000).peers(peers).build().unwrap_err();
        assert_eq!(err, too_large);
        assert!(err.to_string().contains("110000 points"), "{err}");
        assert!(err.to_string().contains("100000"), "{err}");
    }

    #[test]
    fn refuses_contradictory_peer_health() {
        let health = |cooldown, max_cooldown| PeerHealthConfig {
            failure_threshold: 3,
            cooldown,
            max_cooldown,
        };
        let b = Groupcache::builder;
        let err = b()
            .peer_health(health(Duration::from_secs(60), Duration::from_secs(30)))
            .build()
            .unwrap_err();
        assert!(matches!(err, ConfigError::InvalidPeerHealth(_)), "{err}");
        assert!(err.to_string().contains("cooldown"), "{err}");
        let err = b()
            .peer_health(health(Duration::ZERO, Duration::from_secs(30)))
            .build()
            .unwrap_err();
        assert!(matches!(err, ConfigError::InvalidPeerHealth(_)), "{err}");
        assert!(err.to_string().contains("cooldown"), "{err}");
        b().peer_health(health(Duration::MAX, Duration::MAX))
            .build()
            .unwrap();
        // Skipping off: the cooldowns are not used.
        b().peer_health(PeerHealthConfig {
            failure_threshold: 0,
            ..health(Duration::ZERO, Duration::ZERO)
        })
        .build()
        .unwrap();
    }

    #[test]
    fn refuses_a_previous_secret_alone() {
        let err = Groupcache::builder()
            .self_url("http://a:1")
            .peers(["http://b:1"])
            .previous_peer_secret("the old secret, 32 bytes or more, still valid")
            .build()
            .unwrap_err();
        assert_eq!(err, ConfigError::PreviousPeerSecretOnly);
        assert!(err.to_string().contains("previous"), "{err}");
    }

    #[test]
    fn refuses_short_secrets() {
        let b = || {
            Groupcache::builder()
                .self_url("http://a:1")
                .peers(["http://b:1"])
        };
        let long = "0123456789abcdef0123456789abcdef";
        b().peer_secret(long).build().unwrap();
        for short in ["", "s3cret", &long[1..]] {
            let err = b().peer_secret(short).build().unwrap_err();
            assert_eq!(
                err,
                ConfigError::ShortPeerSecret {
                    previous: false,
                    len: short.len()
                }
            );
            assert!(err.to_string().contains("32"), "{short:?}: {err}");
            let err = b()
                .peer_secret(long)
                .previous_peer_secret(short)
                .build()
                .unwrap_err();
            assert_eq!(
                err,
                ConfigError::ShortPeerSecret {
                    previous: true,
                    len: short.len()
                }
            );
            assert!(err.to_string().contains("32"), "{short:?}: {err}");
        }
        // The same secret as current and previous is one secret.
        b().peer_secret(long)
            .previous_peer_secret(long)
            .build()
            .unwrap();
    }

    #[test]
    fn spells_hosts_in_lower_case() {
        let cache = Groupcache::builder()
            .open_peer_path()
            .self_url("HTTP://Node-1:8080")
            .peers(["http://node-1:8080", "http://NODE-2:8080", "Http://[::A]:1"])
            .build()
            .unwrap();
        let cluster = cache.stats().cluster;
        assert_eq!(
            cluster.peers,
            ["http://node-1:8080", "http://node-2:8080", "http://[::a]:1"]
        );
        assert_eq!(cache.self_url(), Some("http://node-1:8080"));
        cache
            .set_peers(["http://NODE-1:8080", "http://Node-3:8080"])
            .unwrap();
        assert_eq!(
            cache.stats().cluster.peers,
            ["http://node-1:8080", "http://node-3:8080"]
        );
    }

    #[test]
    fn an_empty_peer_list_keeps_this_node() {
        let cache = Groupcache::builder()
            .open_peer_path()
            .self_url("http://a:1")
            .peers(["http://a:1", "http://b:1"])
            .build()
            .unwrap();
        cache.set_peers(Vec::<String>::new()).unwrap();
        assert_eq!(cache.stats().cluster.peers, ["http://a:1"]);
        assert_eq!(cache.ring().owner("k"), Some("http://a:1"));

        let no_self = Groupcache::builder().build().unwrap();
        no_self.set_peers(Vec::<String>::new()).unwrap();
        assert_eq!(no_self.stats().cluster.count, 0, "single-node mode");
    }

    #[test]
    fn refuses_a_connect_timeout_above_the_peer_timeout() {
        let err = Groupcache::builder()
            .peer_timeout(Duration::from_secs(1))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap_err();
        assert_eq!(
            err,
            ConfigError::ConnectTimeoutAbovePeerTimeout {
                connect: Duration::from_secs(2),
                peer: Duration::from_secs(1)
            }
        );
        assert!(err.to_string().contains("connect timeout"), "{err}");
        // The default connect timeout follows a shorter peer timeout.
        Groupcache::builder()
            .peer_timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        Groupcache::builder()
            .peer_timeout(Duration::from_secs(1))
            .connect_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
    }

    #[test]
    fn refuses_hot_key_thresholds_that_are_not_rates() {
        for qps in [f64::NAN, -1.0, f64::INFINITY, f64::NEG_INFINITY, -0.0001] {
            let err = Groupcache::builder()
                .hot_keys(HotKeys::AboveQps(qps))
                .build()
                .unwrap_err();
            assert!(
                matches!(err, ConfigError::InvalidHotKeyRate(_)),
                "{qps}: {err}"
            );
            assert!(err.to_string().contains("hot"), "{qps}: {err}");
        }
        for qps in [0.0, 0.05, f64::MAX] {
            Groupcache::builder()
                .hot_keys(HotKeys::AboveQps(qps))
                .build()
                .unwrap();
        }
    }

    #[test]
    fn refuses_base_paths_with_dot_segments_or_the_root() {
        for path in ["/../", "/./", "/a/../b/", "/a/./", "/../a/", "/a/.."] {
            let err = Groupcache::builder().base_path(path).build().unwrap_err();
            assert!(
                matches!(&err, ConfigError::InvalidBasePath { path: p, .. } if p == path),
                "{path}: {err}"
            );
            assert!(
                err.to_string().contains("`..` segment") || err.to_string().contains("end with"),
                "{path}: {err}"
            );
        }
        let err = Groupcache::builder().base_path("/").build().unwrap_err();
        assert!(
            err.to_string().contains("every request"),
            "the real reason: {err}"
        );
        for path in ["/.well-known/cache/", "/a.b/", "/.../", "/_groupcache/v2/"] {
            Groupcache::builder().base_path(path).build().unwrap();
        }
    }

    #[test]
    fn env_values_out_of_range_name_their_variable() {
        for (variable, value) in [
            ("PARSEC_REPLICAS", "0"),
            ("PARSEC_REPLICAS", "10001"),
            ("PARSEC_PEER_TIMEOUT_MS", "0"),
            ("PARSEC_CONNECT_TIMEOUT_MS", "0"),
            ("PARSEC_PEER_IDLE_TIMEOUT_MS", "0"),
            ("PARSEC_PEER_SECRET", "s3cret"),
            ("PARSEC_PEER_SECRET_PREVIOUS", "s3cret"),
            ("PARSEC_BASE_PATH", "/../"),
            ("PARSEC_BASE_PATH", "/"),
            ("PARSEC_BASE_PATH", "_groupcache/"),
        ] {
            let err = GroupcacheBuilder::from_env_lookup("PARSEC", |name| {
                (name == variable).then(|| value.to_owned())
            })
            .map(|_| ())
            .unwrap_err();
            assert!(
                matches!(&err, ConfigError::Env { variable: v, .. } if v == variable),
                "{variable}={value}: {err}"
            );
        }
        let err = GroupcacheBuilder::from_env_lookup("PARSEC", |name| {
            (name == "PARSEC_REPLICAS").then(|| "10001".to_owned())
        })
        .map(|_| ())
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable PARSEC_REPLICAS: ring replicas 10001 is above the maximum of 10000"
        );
        // In range, and trimmed.
        let b = GroupcacheBuilder::from_env_lookup("PARSEC", |name| match name {
            "PARSEC_REPLICAS" => Some(" 10000 ".into()),
            "PARSEC_PEER_SECRET" => Some(" 0123456789abcdef0123456789abcdef ".into()),
            "PARSEC_PEER_SECRET_PREVIOUS" => Some("fedcba9876543210fedcba9876543210".into()),
            "PARSEC_BASE_PATH" => Some(" /cache/v2/ ".into()),
            "PARSEC_CONNECT_TIMEOUT_MS" => Some("1".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(b.replicas, 10_000);
        assert_eq!(b.base_path, "/cache/v2/");
        assert_eq!(b.peer_secret.as_ref().map(PeerSecret::len), Some(32));
        assert_eq!(b.previous_peer_secrets.len(), 1);
        b.build().unwrap();
        // What depends on other settings is left to `build`.
        let err = GroupcacheBuilder::from_env_lookup("PARSEC", |name| match name {
            "PARSEC_PEER_TIMEOUT_MS" => Some("100".into()),
            "PARSEC_CONNECT_TIMEOUT_MS" => Some("200".into()),
            _ => None,
        })
        .unwrap()
        .build()
        .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::ConnectTimeoutAbovePeerTimeout { .. }
        ));
    }

    #[test]
    fn adds_self_to_the_peers() {
        let cache = Groupcache::builder()
            .open_peer_path()
            .self_url("http://a:1")
            .peers(["http://b:1", "http://c:1"])
            .build()
            .unwrap();
        let cluster = cache.stats().cluster;
        assert_eq!(cluster.peers, ["http://b:1", "http://c:1", "http://a:1"]);
        assert_eq!(cluster.self_url.as_deref(), Some("http://a:1"));

        let alone = Groupcache::builder()
            .open_peer_path()
            .self_url("http://a:1")
            .build()
            .unwrap();
        assert_eq!(
            alone.stats().cluster.peers,
            ["http://a:1"],
            "no peers but a self URL: a ring of one, this node"
        );
        let single = Groupcache::builder().build().unwrap();
        assert_eq!(
            single.stats().cluster.count,
            0,
            "no peers and no self URL: single-node mode"
        );
    }
}
