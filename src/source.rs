//! Data sources: where a value comes from on a miss.
//!
//! A data source is registered under a name with
//! [`GroupcacheBuilder::source`](crate::GroupcacheBuilder::source). It is either a type that
//! implements [`Source`], or an async closure that takes the key as a `String`:
//!
//! ```
//! use std::time::Duration;
//! use tower_groupcache::{Groupcache, Loaded};
//!
//! # fn main() -> Result<(), tower_groupcache::ConfigError> {
//! let cache = Groupcache::builder()
//!     // A closure may return anything that converts into `Loaded`: bytes, a `String`,
//!     // an `Option` of those (`None` is *not found*), or `Loaded` itself.
//!     .source("users", |key: String| async move {
//!         Ok::<_, std::io::Error>(format!("user record for {key}"))
//!     })
//!     .source("sessions", |key: String| async move {
//!         if key.is_empty() {
//!             return Ok::<_, std::io::Error>(Loaded::not_found());
//!         }
//!         Ok(Loaded::new(key.into_bytes()).with_ttl(Duration::from_secs(60)))
//!     })
//!     .build()?;
//! # Ok(())
//! # }
//! ```
//!
//! Errors are never cached: the next get for the key calls the source again.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustc_hash::FxHashMap;

use crate::error::{BoxError, KeyLoadPanicked};

/// What a data source returns for a key: a value with an optional time to live, or *not found*.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    value: Option<Bytes>,
    ttl: Option<Duration>,
}

impl Loaded {
    /// A value that stays cached until it is evicted.
    pub fn new(value: impl Into<Bytes>) -> Self {
        Self {
            value: Some(value.into()),
            ttl: None,
        }
    }

    /// The key has no value. The get fails with [`ErrorKind::NotFound`](crate::ErrorKind::NotFound).
    pub fn not_found() -> Self {
        Self {
            value: None,
            ttl: None,
        }
    }

    /// Expire the cached value after `ttl`. An expired value is never served.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The value, or `None` for *not found*.
    pub fn value(&self) -> Option<&Bytes> {
        self.value.as_ref()
    }

    /// The time to live, if one was set.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    pub(crate) fn into_parts(self) -> (Option<Bytes>, Option<Duration>) {
        (self.value, self.ttl)
    }
}

macro_rules! loaded_from {
    ($($ty:ty),*) => {$(
        impl From<$ty> for Loaded {
            fn from(value: $ty) -> Self {
                Self::new(value)
            }
        }
        impl From<Option<$ty>> for Loaded {
            fn from(value: Option<$ty>) -> Self {
                value.map_or_else(Self::not_found, Self::new)
            }
        }
    )*};
}

loaded_from!(Bytes, Vec<u8>, String, &'static str, &'static [u8]);

/// What a batch load returns ([`Source::load_many`]): for each key, a value (with its time to
/// live), *not found*, or an error of its own. A key it does not name is *not found*.
///
/// Collect it from pairs of a key and anything that converts into [`Loaded`]:
///
/// ```
/// use std::time::Duration;
/// use tower_groupcache::{Loaded, LoadedMany};
///
/// let rows = vec![("1", "ada"), ("2", "grace")];
/// let mut many: LoadedMany = rows.into_iter().collect();
/// many.insert("3", Loaded::new("alan").with_ttl(Duration::from_secs(60)));
/// many.insert("4", Loaded::not_found());
/// many.fail("5", "shard 5 is down");
/// assert_eq!(many.len(), 5);
/// ```
#[derive(Debug, Default)]
pub struct LoadedMany {
    entries: FxHashMap<String, Result<Loaded, BoxError>>,
}

impl LoadedMany {
    /// An empty batch: every key *not found*.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `capacity` keys.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: FxHashMap::with_capacity_and_hasher(capacity, Default::default()),
        }
    }

    /// Sets the value (or *not found*) of `key`.
    pub fn insert(&mut self, key: impl Into<String>, loaded: impl Into<Loaded>) {
        self.entries.insert(key.into(), Ok(loaded.into()));
    }

    /// Fails `key` alone: its get returns [`ErrorKind::Load`](crate::ErrorKind::Load) with
    /// `error` as the cause, and nothing is cached for it.
    pub fn fail(&mut self, key: impl Into<String>, error: impl Into<BoxError>) {
        self.entries.insert(key.into(), Err(error.into()));
    }

    /// How many keys it names.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it names no key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What it says of `key`, taken out: `None` when it does not name the key (*not found*),
    /// else its value or its error. Handy for a [`Source::load`] written with
    /// [`load_many`](Source::load_many).
    pub fn remove(&mut self, key: &str) -> Option<Result<Loaded, BoxError>> {
        self.entries.remove(key)
    }
}

impl<K: Into<String>, V: Into<Loaded>> FromIterator<(K, V)> for LoadedMany {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut many = Self::new();
        many.extend(iter);
        many
    }
}

impl<K: Into<String>, V: Into<Loaded>> Extend<(K, V)> for LoadedMany {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (key, value) in iter {
            self.insert(key, value);
        }
    }
}

impl<K: Into<String>, V: Into<Loaded>> From<Vec<(K, V)>> for LoadedMany {
    fn from(pairs: Vec<(K, V)>) -> Self {
        pairs.into_iter().collect()
    }
}

impl<K: Into<String>, V: Into<Loaded>, S> From<std::collections::HashMap<K, V, S>> for LoadedMany {
    fn from(map: std::collections::HashMap<K, V, S>) -> Self {
        map.into_iter().collect()
    }
}

/// A named data source: loads the value of a key on a miss.
///
/// Implement it for a type that holds a database pool or an HTTP client, or register an async
/// closure `Fn(String) -> impl Future<Output = Result<T, E>>` where `T: Into<Loaded>`, which
/// implements this trait for you.
///
/// The load is shared by every caller waiting for the key, and any of them drives it: if the
/// caller that started it gives up, the load still finishes for the others (and in a task of
/// its own when none is left). A panic in `load` is caught and
/// reported to every waiter as [`ErrorKind::LoadPanicked`](crate::ErrorKind::LoadPanicked).
///
/// ```
/// use tower_groupcache::{Loaded, Source};
///
/// struct Users;
///
/// impl Source for Users {
///     type Error = std::io::Error;
///
///     async fn load(&self, key: &str) -> Result<Loaded, Self::Error> {
///         Ok(Loaded::new(format!("user {key}")))
///     }
/// }
/// ```
pub trait Source: Send + Sync + 'static {
    /// The error a failed load returns; it is kept as the `source()` of the get's error.
    type Error: Into<BoxError>;

    /// Loads the value of `key`.
    fn load(&self, key: &str) -> impl Future<Output = Result<Loaded, Self::Error>> + Send;

    /// Loads the values of many keys at once: what
    /// [`CacheHandle::get_many`](crate::CacheHandle::get_many) calls for the keys it misses
    /// that this node owns. Each key appears once in `keys`.
    ///
    /// Give each key its value, its *not found* or its error in the returned [`LoadedMany`];
    /// a key left out of it is *not found*. An `Err` fails every key of the call, and so does
    /// a panic. The default calls [`load`](Self::load) for every key, concurrently, each as
    /// a single load: a key whose load fails or panics fails alone. Override it when the back
    /// end can answer many keys in one query (`WHERE id = ANY($1)`).
    ///
    /// ```
    /// use tower_groupcache::{Loaded, LoadedMany, Source};
    ///
    /// struct Users;
    ///
    /// impl Source for Users {
    ///     type Error = std::io::Error;
    ///
    ///     async fn load(&self, key: &str) -> Result<Loaded, Self::Error> {
    ///         Ok(Loaded::new(format!("user {key}")))
    ///     }
    ///
    ///     async fn load_many(&self, keys: &[String]) -> Result<LoadedMany, Self::Error> {
    ///         // One query for every key; the ones it does not return are *not found*.
    ///         Ok(keys
    ///             .iter()
    ///             .filter(|key| !key.is_empty())
    ///             .map(|key| (key.clone(), format!("user {key}")))
    ///             .collect())
    ///     }
    /// }
    /// ```
    fn load_many(
        &self,
        keys: &[String],
    ) -> impl Future<Output = Result<LoadedMany, Self::Error>> + Send {
        async move {
            use futures_util::FutureExt as _;
            // Each error boxed as it comes, so that the results kept meanwhile are `Send`; a
            // panic is that key's alone, as it would be in a single load.
            let loads = keys.iter().map(|key| async move {
                match std::panic::AssertUnwindSafe(self.load(key))
                    .catch_unwind()
                    .await
                {
                    Ok(result) => result.map_err(Into::<BoxError>::into),
                    Err(_panic) => Err(Box::new(KeyLoadPanicked) as BoxError),
                }
            });
            let results = futures_util::future::join_all(loads).await;
            let mut many = LoadedMany::with_capacity(keys.len());
            for (key, result) in keys.iter().zip(results) {
                match result {
                    Ok(loaded) => many.insert(key.clone(), loaded),
                    Err(error) => many.fail(key.clone(), error),
                }
            }
            Ok(many)
        }
    }
}

impl<F, Fut, T, E> Source for F
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send,
    T: Into<Loaded>,
    E: Into<BoxError>,
{
    type Error = E;

    fn load(&self, key: &str) -> impl Future<Output = Result<Loaded, E>> + Send {
        let fut = self(key.to_owned());
        async move { fut.await.map(Into::into) }
    }
}

/// A data source made from an async closure that loads many keys at once; see [`batch_fn`].
#[derive(Clone, Copy)]
pub struct BatchFn<F> {
    load: F,
}

impl<F> fmt::Debug for BatchFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchFn").finish_non_exhaustive()
    }
}

/// A data source from an async closure that loads many keys in one call:
/// `Fn(Vec<String>) -> impl Future<Output = Result<T, E>>`, where `T` converts into
/// [`LoadedMany`] (a `LoadedMany`, or a `Vec` or `HashMap` of keys and values).
///
/// A single get calls it with one key. A key the closure leaves out is *not found*; an `Err`
/// fails every key of the call.
///
/// ```
/// use std::collections::HashMap;
/// use tower_groupcache::{Groupcache, batch_fn};
///
/// # fn main() -> Result<(), tower_groupcache::ConfigError> {
/// let cache = Groupcache::builder()
///     .source("users", batch_fn(|ids: Vec<String>| async move {
///         // SELECT id, name FROM users WHERE id = ANY($1)
///         let rows: HashMap<String, String> =
///             ids.into_iter().map(|id| (id.clone(), format!("user {id}"))).collect();
///         Ok::<_, std::io::Error>(rows)
///     }))
///     .build()?;
/// # Ok(())
/// # }
/// ```
pub fn batch_fn<F, Fut, T, E>(load: F) -> BatchFn<F>
where
    F: Fn(Vec<String>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send,
    T: Into<LoadedMany>,
    E: Into<BoxError>,
{
    BatchFn { load }
}

impl<F, Fut, T, E> Source for BatchFn<F>
where
    F: Fn(Vec<String>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send,
    T: Into<LoadedMany>,
    E: Into<BoxError>,
{
    /// The closure's error, or the error it gave one key.
    type Error = BoxError;

    fn load(&self, key: &str) -> impl Future<Output = Result<Loaded, BoxError>> + Send {
        let started = (self.load)(vec![key.to_owned()]);
        async move {
            let mut many: LoadedMany = started.await.map_err(Into::into)?.into();
            many.remove(key).unwrap_or_else(|| Ok(Loaded::not_found()))
        }
    }

    fn load_many(
        &self,
        keys: &[String],
    ) -> impl Future<Output = Result<LoadedMany, BoxError>> + Send {
        let started = (self.load)(keys.to_vec());
        async move { started.await.map(Into::into).map_err(Into::into) }
    }
}

pub(crate) type LoadFuture = Pin<Box<dyn Future<Output = Result<Loaded, BoxError>> + Send>>;
pub(crate) type LoadManyFuture = Pin<Box<dyn Future<Output = Result<LoadedMany, BoxError>> + Send>>;

/// The object-safe form of [`Source`] that the cache stores.
pub(crate) trait DynSource: Send + Sync + 'static {
    fn load_owned(self: Arc<Self>, key: Arc<str>) -> LoadFuture;
    fn load_many_owned(self: Arc<Self>, keys: Vec<String>) -> LoadManyFuture;
}

impl<S: Source> DynSource for S {
    fn load_owned(self: Arc<Self>, key: Arc<str>) -> LoadFuture {
        Box::pin(async move { self.load(&key).await.map_err(Into::into) })
    }

    fn load_many_owned(self: Arc<Self>, keys: Vec<String>) -> LoadManyFuture {
        Box::pin(async move { self.load_many(&keys).await.map_err(Into::into) })
    }
}
