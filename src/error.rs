//! Errors returned by a get, and by [`GroupcacheBuilder::build`](crate::GroupcacheBuilder::build).

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use axum_core::response::{IntoResponse, Response};
use http::StatusCode;

/// A type-erased error, as data sources return them.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The error of a get.
///
/// It is cheap to clone: when many callers wait on one load, they all receive the same error.
/// Ask it what went wrong with [`kind`](Error::kind) or the `is_*` methods; the data source's own
/// error, if any, is its [`source`](StdError::source).
///
/// # As an HTTP response
///
/// An axum handler can return it as its error, `Result<_, Error>`, and a get's failure answers
/// with the status of its [`kind`](Error::kind) ([`status`](Error::status)):
///
/// | [`ErrorKind`] | status |
/// |---|---|
/// | `NotFound` | `404 Not Found` |
/// | `KeyTooLong` | `414 URI Too Long` |
/// | `Load` (the data source returned an error) | `502 Bad Gateway` |
/// | `LoadPanicked` | `500 Internal Server Error` |
/// | `LoadAbandoned` (the runtime shut down) | `503 Service Unavailable` |
/// | `UnknownSource`, `NoRuntime`, `Codec`, `RecursiveLoad` | `500 Internal Server Error` |
///
/// The body is the error's [`Display`](fmt::Display) text, as `text/plain; charset=utf-8`. It
/// names the data source, never the key (keys often hold personal data) and nothing of the
/// data source's own error, which may describe the back end; log the
/// [`source`](StdError::source) where it is needed.
///
/// ```
/// use axum::{Router, body::Bytes, extract::Path, routing::get};
/// use tower_groupcache::{CacheHandle, Error};
///
/// async fn user(cache: CacheHandle, Path(id): Path<String>) -> Result<Bytes, Error> {
///     cache.get("users", &format!("user:{id}")).await
/// }
///
/// let routes: Router = Router::new().route("/user/{id}", get(user));
/// ```
#[derive(Clone)]
pub struct Error {
    inner: Arc<ErrorInner>,
}

struct ErrorInner {
    kind: ErrorKind,
    source_name: Box<str>,
    cause: Option<BoxError>,
}

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No data source of that name was registered on this cache.
    UnknownSource,
    /// The data source answered that the key has no value.
    NotFound,
    /// The data source returned an error. It is the error's `source()`.
    Load,
    /// The data source panicked while loading.
    LoadPanicked,
    /// The load was abandoned before it finished. A load is driven by whichever of its
    /// callers is polled, and finished by a task of its own once they are all gone, so this
    /// version of the crate does not return it; it stays for code that matches on it.
    LoadAbandoned,
    /// A get was called outside a tokio runtime.
    NoRuntime,
    /// A typed key or value could not be encoded or decoded. The codec's error is `source()`.
    Codec,
    /// The key is longer than the configured maximum key length.
    KeyTooLong,
    /// The data source asked this cache for the key it was loading (directly, or through
    /// loads that wait for each other): that get would have waited for itself forever.
    RecursiveLoad,
    /// A write ([`CacheHandle::set`](crate::CacheHandle::set)) whose key a golang/groupcache
    /// node owns, which has no writes. Nothing was written; this node keeps no copy of the
    /// key.
    Unsupported,
    /// A write whose key's owner could not be reached, or refused it. The peer's error is
    /// `source()`. Nothing is known to be written; this node keeps no copy of the key.
    Peer,
    /// A written value is larger than the configured maximum value size.
    ValueTooLarge,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, source_name: &str) -> Self {
        Self::with_cause(kind, source_name, None)
    }

    pub(crate) fn with_cause(kind: ErrorKind, source_name: &str, cause: Option<BoxError>) -> Self {
        Self {
            inner: Arc::new(ErrorInner {
                kind,
                source_name: source_name.into(),
                cause,
            }),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The name of the data source the get was for.
    pub fn source_name(&self) -> &str {
        &self.inner.source_name
    }

    /// Whether the data source answered that the key has no value.
    pub fn is_not_found(&self) -> bool {
        self.inner.kind == ErrorKind::NotFound
    }

    /// Whether no data source of that name is registered.
    pub fn is_unknown_source(&self) -> bool {
        self.inner.kind == ErrorKind::UnknownSource
    }

    /// Whether the data source failed (returned an error or panicked).
    pub fn is_load(&self) -> bool {
        matches!(self.inner.kind, ErrorKind::Load | ErrorKind::LoadPanicked)
    }

    /// The HTTP status that answers this error, as its [`IntoResponse`] implementation
    /// answers it; the table is in the [type's documentation](Error#as-an-http-response).
    /// For a handler that builds its own response:
    ///
    /// ```
    /// use axum::response::{IntoResponse, Response};
    /// use tower_groupcache::CacheHandle;
    ///
    /// async fn user(cache: CacheHandle) -> Response {
    ///     match cache.get("users", "user:12345").await {
    ///         Ok(user) => user.into_response(),
    ///         Err(error) => (error.status(), "no user today").into_response(),
    ///     }
    /// }
    /// ```
    pub fn status(&self) -> StatusCode {
        match self.inner.kind {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::KeyTooLong => StatusCode::URI_TOO_LONG,
            // The data source is the upstream the cache stands in front of.
            ErrorKind::Load => StatusCode::BAD_GATEWAY,
            ErrorKind::LoadAbandoned => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::LoadPanicked
            | ErrorKind::UnknownSource
            | ErrorKind::NoRuntime
            | ErrorKind::Codec
            | ErrorKind::RecursiveLoad
            | ErrorKind::Unsupported => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Peer => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::ValueTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }
}

/// Answers with [`Error::status`] and the error's `Display` text: the data source's name, never
/// the key nor the data source's own error.
impl IntoResponse for Error {
    fn into_response(self) -> Response {
        (self.status(), self.to_string()).into_response()
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        d.field("source_name", &self.inner.source_name);
        if let Some(cause) = &self.inner.cause {
            d.field("cause", cause);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.inner.source_name;
        match self.inner.kind {
            ErrorKind::UnknownSource => write!(f, "no data source named `{name}`"),
            ErrorKind::NotFound => write!(f, "key not found in data source `{name}`"),
            ErrorKind::Load => write!(f, "data source `{name}` failed to load the key"),
            ErrorKind::LoadPanicked => write!(f, "data source `{name}` panicked while loading"),
            ErrorKind::LoadAbandoned => {
                write!(
                    f,
                    "load from data source `{name}` was abandoned (runtime shut down)"
                )
            }
            ErrorKind::NoRuntime => write!(
                f,
                "get from data source `{name}` called outside a tokio runtime"
            ),
            ErrorKind::Codec => write!(
                f,
                "typed key or value for `{name}` failed to encode or decode"
            ),
            ErrorKind::KeyTooLong => write!(f, "key for data source `{name}` is too long"),
            ErrorKind::RecursiveLoad => write!(
                f,
                "data source `{name}` asked the cache for a key it is loading itself"
            ),
            ErrorKind::Unsupported => write!(
                f,
                "the owner of the key of `{name}` is a golang/groupcache node, which has no writes"
            ),
            ErrorKind::Peer => write!(f, "the owner of the key of `{name}` did not take the write"),
            ErrorKind::ValueTooLarge => {
                write!(f, "value for data source `{name}` is over max_value_bytes")
            }
        }
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .cause
            .as_ref()
            .map(|e| &**e as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod response_tests {
    use super::*;

    const KINDS: [(ErrorKind, StatusCode); 12] = [
        (ErrorKind::UnknownSource, StatusCode::INTERNAL_SERVER_ERROR),
        (ErrorKind::NotFound, StatusCode::NOT_FOUND),
        (ErrorKind::Load, StatusCode::BAD_GATEWAY),
        (ErrorKind::LoadPanicked, StatusCode::INTERNAL_SERVER_ERROR),
        (ErrorKind::LoadAbandoned, StatusCode::SERVICE_UNAVAILABLE),
        (ErrorKind::NoRuntime, StatusCode::INTERNAL_SERVER_ERROR),
        (ErrorKind::Codec, StatusCode::INTERNAL_SERVER_ERROR),
        (ErrorKind::KeyTooLong, StatusCode::URI_TOO_LONG),
        (ErrorKind::RecursiveLoad, StatusCode::INTERNAL_SERVER_ERROR),
        (ErrorKind::Unsupported, StatusCode::INTERNAL_SERVER_ERROR),
        (ErrorKind::Peer, StatusCode::SERVICE_UNAVAILABLE),
        (ErrorKind::ValueTooLarge, StatusCode::PAYLOAD_TOO_LARGE),
    ];

    #[tokio::test]
    async fn a_response_has_the_kinds_status_and_a_plain_text_body_without_the_cause() {
        use http_body_util::BodyExt as _;

        for (kind, status) in KINDS {
            let cause: BoxError = "db-7.internal: password rejected".into();
            let error = Error::with_cause(kind, "users", Some(cause));
            assert_eq!(error.status(), status, "{kind:?}");
            let display = error.to_string();

            let response = error.into_response();
            assert_eq!(response.status(), status, "{kind:?}");
            assert_eq!(
                response.headers()[http::header::CONTENT_TYPE],
                "text/plain; charset=utf-8"
            );
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, display.as_bytes(), "{kind:?}");
            assert!(display.contains("`users`"), "{kind:?}: {display}");
            assert!(!display.contains("db-7"), "{kind:?}: {display}");
        }
    }
}

/// The cause of an error that the key's owner reported: its data source failed there.
#[derive(Debug)]
pub(crate) struct OwnerFailed {
    pub(crate) owner: String,
    pub(crate) message: String,
}

impl fmt::Display for OwnerFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the owner {} answered: {}", self.owner, self.message)
    }
}

impl StdError for OwnerFailed {}

/// A typed data source's error that says its codec failed: the key did not decode, or the
/// value did not encode. The get fails with [`ErrorKind::Codec`], and the codec's error is
/// its `source()`.
#[derive(Debug)]
pub(crate) struct CodecError {
    /// What failed: "the key does not decode", "the value does not encode".
    pub(crate) what: &'static str,
    pub(crate) error: BoxError,
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.error)
    }
}

impl StdError for CodecError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.error)
    }
}

/// What the default [`Source::load_many`](crate::Source::load_many) gives a key whose own
/// load panicked: that key alone fails, with [`ErrorKind::LoadPanicked`], as its single load
/// would.
#[derive(Debug)]
pub(crate) struct KeyLoadPanicked;

impl fmt::Display for KeyLoadPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the load of this key panicked")
    }
}

impl StdError for KeyLoadPanicked {}

/// A configuration error, from [`GroupcacheBuilder::build`](crate::GroupcacheBuilder::build) or
/// [`Groupcache::set_peers`](crate::Groupcache::set_peers).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// Two data sources were registered under the same name.
    DuplicateSource(String),
    /// A data source name is empty or contains `/`, which the peer path cannot carry.
    InvalidSourceName(String),
    /// A self or peer URL is not an absolute `http://host[:port]` URL.
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Peers were given but no self URL, so this node cannot find itself on the ring.
    MissingSelfUrl,
    /// The base path cannot be used: see
    /// [`GroupcacheBuilder::base_path`](crate::GroupcacheBuilder::base_path).
    InvalidBasePath {
        /// The path as given.
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The number of ring replicas per peer is zero.
    ZeroReplicas,
    /// The number of ring replicas per peer is above [`MAX_REPLICAS`](crate::MAX_REPLICAS).
    TooManyReplicas(usize),
    /// The ring would have more than [`MAX_RING_POINTS`](crate::MAX_RING_POINTS) points:
    /// `peers` distinct peers with `replicas` points each.
    RingTooLarge {
        /// The distinct peers on the ring, this node included.
        peers: usize,
        /// The points per peer.
        replicas: usize,
    },
    /// A balanced ring ([`RingKind::Balanced`](crate::RingKind::Balanced)) would have more
    /// than [`MAX_RING_POINTS`](crate::MAX_RING_POINTS) points: `peers` distinct peers, of
    /// at most `max`.
    TooManyPeers {
        /// The distinct peers on the ring, this node included.
        peers: usize,
        /// The most a balanced ring holds.
        max: usize,
    },
    /// A timeout or size limit is zero.
    ZeroLimit(&'static str),
    /// [`max_batch_keys`](crate::GroupcacheBuilder::max_batch_keys) is above
    /// [`defaults::MAX_BATCH_KEYS_LIMIT`](crate::defaults::MAX_BATCH_KEYS_LIMIT).
    TooManyBatchKeys(usize),
    /// A connect timeout was set above the peer timeout, which bounds the whole peer fetch,
    /// the connection included.
    ConnectTimeoutAbovePeerTimeout {
        /// The connect timeout.
        connect: std::time::Duration,
        /// The peer timeout.
        peer: std::time::Duration,
    },
    /// The rate of [`HotKeys::AboveQps`](crate::HotKeys::AboveQps) is NaN, negative or
    /// infinite.
    InvalidHotKeyRate(String),
    /// The TLS settings could not be used (unreadable PEM, a key that does not fit).
    Tls(String),
    /// The hot cache's share of cache bytes is not between 0 and 1.
    InvalidHotCacheFraction(String),
    /// The [`PeerHealthConfig`](crate::PeerHealthConfig) cannot be used: a zero cooldown, or
    /// a cooldown longer than the maximum, while skipping is on.
    InvalidPeerHealth(&'static str),
    /// A peer secret is shorter than [`MIN_PEER_SECRET_BYTES`](crate::MIN_PEER_SECRET_BYTES).
    ShortPeerSecret {
        /// Whether it is a previous secret (else the current one).
        previous: bool,
        /// Its length in bytes.
        len: usize,
    },
    /// A previous peer secret was given without a current one. A previous secret is only
    /// accepted, never used to sign, so a node needs a current secret as well.
    PreviousPeerSecretOnly,
    /// The node has peers but no peer secret, and its peer path was not opened on purpose
    /// with [`open_peer_path`](crate::GroupcacheBuilder::open_peer_path).
    PeerAuthRequired,
    /// A background task was to be started outside a tokio runtime.
    NoRuntime,
    /// An environment variable holds a value that cannot be used.
    Env {
        /// The variable's name.
        variable: String,
        /// Why its value was refused.
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DuplicateSource(name) => {
                write!(f, "data source `{name}` is registered more than once")
            }
            Self::InvalidSourceName(name) => write!(
                f,
                "data source name `{name}` is invalid: it must be non-empty and contain no `/`"
            ),
            Self::InvalidUrl { url, reason } => write!(f, "invalid peer URL `{url}`: {reason}"),
            Self::MissingSelfUrl => {
                write!(f, "peers were given but no self URL: call `self_url(..)`")
            }
            Self::InvalidBasePath { path, reason } => {
                write!(f, "invalid base path `{path}`: {reason}")
            }
            Self::ZeroReplicas => write!(f, "ring replicas must be at least 1"),
            Self::TooManyBatchKeys(keys) => write!(
                f,
                "max batch keys {keys} is above the maximum of {}",
                crate::defaults::MAX_BATCH_KEYS_LIMIT
            ),
            Self::TooManyReplicas(replicas) => write!(
                f,
                "ring replicas {replicas} is above the maximum of {}",
                crate::MAX_REPLICAS
            ),
            Self::RingTooLarge { peers, replicas } => write!(
                f,
                "a ring of {peers} peers with {replicas} replicas each would have {} points, \
                 above the maximum of {}: lower `replicas`",
                peers.saturating_mul(*replicas),
                crate::MAX_RING_POINTS
            ),
            Self::TooManyPeers { peers, max } => write!(
                f,
                "a balanced ring holds at most {max} peers, not {peers}: split the cluster \
                 into independent groups (see docs/scaling.md)"
            ),
            Self::ZeroLimit(what) => write!(f, "{what} must be greater than zero"),
            Self::ConnectTimeoutAbovePeerTimeout { connect, peer } => write!(
                f,
                "the connect timeout {connect:?} is longer than the peer timeout {peer:?}, \
                 which bounds the whole peer fetch: lower `connect_timeout` or raise `peer_timeout`"
            ),
            Self::InvalidHotKeyRate(rate) => write!(
                f,
                "hot key rate {rate} is not a number of requests per second from 0 up: use a \
                 finite rate, or `HotKeys::Never` to keep no hot copies"
            ),
            Self::Tls(reason) => write!(f, "peer TLS: {reason}"),
            Self::InvalidHotCacheFraction(v) => {
                write!(f, "hot cache fraction {v} is not between 0 and 1")
            }
            Self::InvalidPeerHealth(reason) => write!(f, "peer health: {reason}"),
            Self::ShortPeerSecret { previous, len } => write!(
                f,
                "the {} peer secret has {len} bytes; at least {} are needed: use 32 or more \
                 random bytes",
                if *previous { "previous" } else { "current" },
                crate::MIN_PEER_SECRET_BYTES
            ),
            Self::PreviousPeerSecretOnly => write!(
                f,
                "a previous peer secret was given without a current one: set `peer_secret(..)`; \
                 a previous secret is only accepted, never used to sign"
            ),
            Self::PeerAuthRequired => write!(
                f,
                "peers are configured without a peer secret: set `peer_secret(..)`, or call \
                 `open_peer_path()` to serve peers without authentication (as golang/groupcache does)"
            ),
            Self::NoRuntime => write!(f, "this must be called inside a tokio runtime"),
            Self::Env { variable, reason } => {
                write!(f, "environment variable {variable}: {reason}")
            }
        }
    }
}

impl StdError for ConfigError {}
