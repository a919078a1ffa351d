//! [`CacheHandle`]: reads through the cache, in a handler or anywhere else.

use std::fmt;
use std::sync::Arc;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use bytes::Bytes;
use http::StatusCode;
use http::request::Parts;

use crate::error::Error;
use crate::node::{Node, Removal};
use crate::stats::Stats;

/// Reads values through the cache.
///
/// In an axum handler, take it as an extractor: [`GroupcacheLayer`](crate::GroupcacheLayer)
/// puts one in every request it hands on. Outside a request, get one from
/// [`Groupcache::handle`](crate::Groupcache::handle). Cloning is cheap (one `Arc`).
///
/// ```
/// use tower_groupcache::{CacheHandle, Groupcache};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let cache = Groupcache::builder()
///     .source("squares", |key: String| async move {
///         let n: u64 = key.parse()?;
///         Ok::<_, std::num::ParseIntError>((n * n).to_string())
///     })
///     .build()?;
/// let handle: CacheHandle = cache.handle();
/// assert_eq!(handle.get("squares", "12").await?, "144");
/// assert!(handle.get("squares", "twelve").await.unwrap_err().is_load());
/// assert!(handle.get("cubes", "12").await.unwrap_err().is_unknown_source());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct CacheHandle {
    node: Arc<Node>,
}

impl CacheHandle {
    pub(crate) fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// The value of `key` in the data source `source`: from this node's caches, from the
    /// node that owns the key, or loaded once from the data source.
    ///
    /// If the owning node is down, slow or answers badly, the key is loaded here instead and
    /// the get still succeeds. The error says whether the source does not know the key
    /// ([`Error::is_not_found`]), failed ([`Error::is_load`]), or does not exist.
    ///
    /// A hit is answered in the future's first poll, with no allocation. The future borrows
    /// `source` and `key`; to spawn a get, move an owned key and a clone of the handle into
    /// the task:
    ///
    /// ```
    /// # async fn demo(handle: tower_groupcache::CacheHandle, key: String) {
    /// let task = tokio::spawn(async move { handle.get("users", &key).await });
    /// # let _ = task.await;
    /// # }
    /// ```
    // The hit is looked up when the future is polled, not before: its value goes straight to
    // the caller instead of being kept in the future first, which cost a fresh hit 7–34 ns
    // more (docs/performance.md).
    #[inline]
    pub async fn get(&self, source: &str, key: &str) -> Result<Bytes, Error> {
        match self.node.fresh_hit(source, key) {
            Some(value) => Ok(value),
            None => self.node.get_value(source, key).await,
        }
    }

    /// The values of many keys of `source` at once: one result per key, in the order of
    /// `keys`, each as [`get`](Self::get) would give it.
    ///
    /// Hits are answered from this node's caches. The misses this node owns are loaded in one
    /// call of the data source ([`Source::load_many`](crate::Source::load_many)); a key that
    /// is already loading on this node, for a get or another `get_many`, joins that load
    /// instead. The misses other nodes own are asked of their owners. Each key counts as a
    /// get, and a hit costs what it costs a `get`; a key that appears twice in `keys` is
    /// fetched once. Fails as a whole only for a source that does not exist
    /// ([`ErrorKind::UnknownSource`](crate::ErrorKind::UnknownSource)).
    ///
    /// ```
    /// # async fn demo(cache: tower_groupcache::CacheHandle) -> Result<(), tower_groupcache::Error> {
    /// let ids = ["1", "2", "3"];
    /// for (id, user) in ids.iter().zip(cache.get_many("users", &ids).await?) {
    ///     match user {
    ///         Ok(user) => println!("{id}: {} bytes", user.len()),
    ///         Err(error) if error.is_not_found() => println!("{id}: no such user"),
    ///         Err(error) => return Err(error),
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn get_many<K: AsRef<str>>(
        &self,
        source: &str,
        keys: &[K],
    ) -> Result<Vec<Result<Bytes, Error>>, Error> {
        self.node.get_many(source, keys).await
    }

    /// Drops `key` from `source` on every node: on this node, then on its owner, then on every
    /// other peer (their hot copies). A load already running when the key is removed does not
    /// put the old value back. Returns the peers that could not remove it: unreachable ones,
    /// whose hot copies expire by themselves (they live at most
    /// [`hot_max_staleness`](crate::GroupcacheBuilder::hot_max_staleness)), and golang/groupcache
    /// nodes, which have no removal and are sent nothing.
    pub async fn remove(&self, source: &str, key: &str) -> Result<Removal, Error> {
        let source = self.node.source(source)?.clone();
        Ok(self.node.remove(&source, key).await)
    }

    /// Writes `value` as the value of `key` in `source`, after the service has updated its
    /// back end (a write-through): the key's owner keeps it in its main cache, for `ttl` or
    /// the source's default TTL, and every other copy is dropped, here and on every other
    /// peer, as [`remove`](Self::remove) drops them. A load of the key that started before
    /// the write cannot put its older value back. Returns the peers whose hot copies could not
    /// be dropped; they expire within
    /// [`hot_max_staleness`](crate::GroupcacheBuilder::hot_max_staleness).
    ///
    /// Fails, having written nothing, when a golang/groupcache node owns the key
    /// ([`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported): it has no writes), when
    /// the owner cannot be reached or refuses ([`ErrorKind::Peer`](crate::ErrorKind::Peer)),
    /// or for a value over [`max_value_bytes`](crate::GroupcacheBuilder::max_value_bytes)
    /// ([`ErrorKind::ValueTooLarge`](crate::ErrorKind::ValueTooLarge)). Since the back end
    /// has the new value already, a failed write then drops the key as
    /// [`remove`](Self::remove) does, everywhere it can, so that the next get loads the new
    /// value; only a golang/groupcache owner (which has no removal) and an owner that could
    /// not be reached keep their old copy.
    ///
    /// ```
    /// # async fn demo(cache: tower_groupcache::CacheHandle) -> Result<(), tower_groupcache::Error> {
    /// // UPDATE users SET name = 'Ada' WHERE id = 7; then:
    /// cache.set("users", "7", "Ada", None).await?;
    /// assert_eq!(cache.get("users", "7").await?, "Ada");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn set(
        &self,
        source: &str,
        key: &str,
        value: impl Into<Bytes>,
        ttl: Option<std::time::Duration>,
    ) -> Result<Removal, Error> {
        let source = self.node.source(source)?.clone();
        self.node.set(&source, key, value.into(), ttl).await
    }

    /// Drops `keys` from `source` on every node, as [`remove`](Self::remove) drops one: here,
    /// then each owner its own keys, then every peer the others' hot copies, in at most two
    /// requests per peer whatever the number of keys (more only past
    /// [`max_batch_keys`](crate::GroupcacheBuilder::max_batch_keys) keys). Returns the peers
    /// that could not remove them, as `remove` does.
    pub async fn remove_many<K: AsRef<str>>(
        &self,
        source: &str,
        keys: &[K],
    ) -> Result<Removal, Error> {
        let source = self.node.source(source)?.clone();
        let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
        Ok(self.node.remove_many(&source, &keys).await)
    }

    /// Drops every key of `source` on every node. Returns the peers that could not: as for
    /// [`remove`](Self::remove).
    pub async fn clear(&self, source: &str) -> Result<Removal, Error> {
        let source = self.node.source(source)?.clone();
        Ok(self.node.clear(&source).await)
    }

    /// A snapshot of the cache's counters and cluster, as
    /// [`Groupcache::stats`](crate::Groupcache::stats).
    pub fn stats(&self) -> Stats {
        self.node.stats()
    }
}

impl fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheHandle")
            .field("self_url", &self.node.self_url())
            .finish_non_exhaustive()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CacheHandle {
    type Rejection = MissingCacheHandle;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<CacheHandle>()
            .cloned()
            .ok_or(MissingCacheHandle { _priv: () })
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for CacheHandle {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<CacheHandle>().cloned())
    }
}

/// The rejection of the [`CacheHandle`] extractor when the request did not pass through a
/// [`GroupcacheLayer`](crate::GroupcacheLayer). It answers `500 Internal Server Error`.
#[derive(Debug)]
#[non_exhaustive]
pub struct MissingCacheHandle {
    _priv: (),
}

impl MissingCacheHandle {
    const MESSAGE: &'static str = "Missing request extension: `CacheHandle` was not found. \
        Perhaps you forgot to add `.layer(cache.layer())` to your `Router`, or added it \
        before this route?";
}

impl fmt::Display for MissingCacheHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::MESSAGE)
    }
}

impl std::error::Error for MissingCacheHandle {}

impl IntoResponse for MissingCacheHandle {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, Self::MESSAGE).into_response()
    }
}
