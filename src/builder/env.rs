//! A builder from environment variables.

use std::time::Duration;

use super::{GroupcacheBuilder, check_max_batch_keys};
use crate::config::{check_secret_length, validate_base_path};
use crate::error::ConfigError;
use crate::peer::auth::PeerSecret;
use crate::ring::RingKind;

impl GroupcacheBuilder {
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
    /// | `RING` | [`ring`](Self::ring): `golang` or `balanced`, in any case; empty: `golang` | `balanced` |
    /// | `PEER_TIMEOUT_MS` | [`peer_timeout`](Self::peer_timeout) in milliseconds, above 0 | `5000` |
    /// | `CONNECT_TIMEOUT_MS` | [`connect_timeout`](Self::connect_timeout) in milliseconds, above 0 and at most the peer timeout | `1000` |
    /// | `PEER_IDLE_TIMEOUT_MS` | [`peer_idle_timeout`](Self::peer_idle_timeout) in milliseconds, above 0 | `90000` |
    /// | `SHUTDOWN_TIMEOUT_MS` | [`shutdown_timeout`](Self::shutdown_timeout) in milliseconds | `15000` |
    /// | `MAX_CONNECTIONS_PER_PEER` | [`max_connections_per_peer`](Self::max_connections_per_peer), above 0 | `64` |
    /// | `MAX_BATCH_KEYS` | [`max_batch_keys`](Self::max_batch_keys), 1 to 100,000 | `1000` |
    /// | `NATURAL_BATCHING` | [`natural_batching`](Self::natural_batching), `0` for off | `4` |
    /// | `NATURAL_BATCHING_WAIT_MS` | [`natural_batching_wait`](Self::natural_batching_wait), in milliseconds | `0` |
    /// | `PEER_SECRET` | [`peer_secret`](Self::peer_secret), 32 bytes or more | 64 random hex digits |
    /// | `PEER_SECRET_PREVIOUS` | [`previous_peer_secret`](Self::previous_peer_secret), during a rotation, 32 bytes or more | |
    /// | `OPEN_PEER_PATH` | [`open_peer_path`](Self::open_peer_path) when `true` (`1`, `yes`); `false`, `0`, `no` or empty leave it closed | `false` |
    ///
    /// Values are trimmed. Unset variables keep their defaults. A value that is not Unicode,
    /// does not parse or is out of range is a [`ConfigError::Env`] that names the variable:
    /// `REPLICAS` from 1 to [`MAX_REPLICAS`](crate::MAX_REPLICAS), timeouts above 0,
    /// `MAX_CONNECTIONS_PER_PEER` above 0, `MAX_BATCH_KEYS` from 1 to 100,000, secrets
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
        if let Some((name, value)) = var("RING")? {
            self.ring_kind = match value.trim() {
                "" => RingKind::Golang,
                other => RingKind::from_name(other).ok_or_else(|| ConfigError::Env {
                    variable: name,
                    reason: format!("`{other}` is not a ring kind: use `golang` or `balanced`"),
                })?,
            };
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
            let connections = number(&v)?;
            if connections == 0 {
                check(&v, Err(ConfigError::ZeroLimit("max connections per peer")))?;
            }
            self.max_connections_per_peer = connections;
        }
        if let Some(v) = var("MAX_BATCH_KEYS")? {
            let keys = number(&v)?;
            check(&v, check_max_batch_keys(keys))?;
            self.max_batch_keys = keys;
        }
        if let Some(v) = var("NATURAL_BATCHING")? {
            self.natural_batching = number(&v)?;
        }
        if let Some(v) = var("NATURAL_BATCHING_WAIT_MS")? {
            self.natural_batching_wait = Duration::from_millis(number(&v)?);
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
}
