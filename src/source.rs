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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::error::BoxError;

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

pub(crate) type LoadFuture = Pin<Box<dyn Future<Output = Result<Loaded, BoxError>> + Send>>;

/// The object-safe form of [`Source`] that the cache stores.
pub(crate) trait DynSource: Send + Sync + 'static {
    fn load_owned(self: Arc<Self>, key: Arc<str>) -> LoadFuture;
}

impl<S: Source> DynSource for S {
    fn load_owned(self: Arc<Self>, key: Arc<str>) -> LoadFuture {
        Box::pin(async move { self.load(&key).await.map_err(Into::into) })
    }
}
