//! Typed keys and values through serde, on top of the byte-level API.
//!
//! Real callers derive a key from a request object and want a struct back. Register a typed
//! loader with [`typed`], and read with [`CacheHandle::typed`]; a [`Codec`] turns keys into
//! the strings that travel between nodes and values into the bytes that are cached.
//! [`Json`] is the default codec.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use tower_groupcache::{Groupcache, typed::typed};
//!
//! #[derive(Serialize, Deserialize)]
//! struct UserKey { tenant: String, id: u64 }
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! struct User { name: String }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Groupcache::builder()
//!     .source("users", typed(|key: UserKey| async move {
//!         // `None` means not found.
//!         Ok::<_, std::io::Error>(Some(User { name: format!("{}-{}", key.tenant, key.id) }))
//!     }))
//!     .build()?;
//!
//! let users = cache.handle().typed::<UserKey, User>("users");
//! let user = users.get(&UserKey { tenant: "acme".into(), id: 7 }).await?;
//! assert_eq!(user, User { name: "acme-7".into() });
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{BoxError, CodecError, Error, ErrorKind};
use crate::handle::CacheHandle;
use crate::source::{Loaded, Source};

/// Turns typed keys into key strings and typed values into cached bytes, and back.
///
/// Every node of a cluster must use the same codec for a source.
pub trait Codec: Send + Sync + 'static {
    /// The key string for `key`. It must be the same for equal keys on every node.
    fn encode_key<K: Serialize>(&self, key: &K) -> Result<String, BoxError>;
    /// The key back from its string.
    fn decode_key<K: DeserializeOwned>(&self, key: &str) -> Result<K, BoxError>;
    /// The bytes to cache for `value`.
    fn encode_value<V: Serialize>(&self, value: &V) -> Result<Bytes, BoxError>;
    /// The value back from its bytes.
    fn decode_value<V: DeserializeOwned>(&self, bytes: &[u8]) -> Result<V, BoxError>;
}

/// The JSON codec: keys and values as compact JSON (serde_json). A struct key's fields are
/// written in declaration order, so equal keys give equal strings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl Codec for Json {
    fn encode_key<K: Serialize>(&self, key: &K) -> Result<String, BoxError> {
        Ok(serde_json::to_string(key)?)
    }

    fn decode_key<K: DeserializeOwned>(&self, key: &str) -> Result<K, BoxError> {
        Ok(serde_json::from_str(key)?)
    }

    fn encode_value<V: Serialize>(&self, value: &V) -> Result<Bytes, BoxError> {
        Ok(serde_json::to_vec(value)?.into())
    }

    fn decode_value<V: DeserializeOwned>(&self, bytes: &[u8]) -> Result<V, BoxError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

/// A data source from an async closure over typed keys and values; made by [`typed`].
pub struct TypedSource<K, V, F, C = Json> {
    load: F,
    codec: C,
    _types: PhantomData<fn(K) -> V>,
}

impl<K, V, F, C: fmt::Debug> fmt::Debug for TypedSource<K, V, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedSource")
            .field("key", &std::any::type_name::<K>())
            .field("value", &std::any::type_name::<V>())
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

/// A data source from `Fn(K) -> impl Future<Output = Result<Option<V>, E>>`, with the
/// [`Json`] codec. `Ok(None)` is *not found*.
pub fn typed<K, V, F>(load: F) -> TypedSource<K, V, F, Json> {
    TypedSource {
        load,
        codec: Json,
        _types: PhantomData,
    }
}

impl<K, V, F, C> TypedSource<K, V, F, C> {
    /// The same loader with another codec.
    pub fn with_codec<C2: Codec>(self, codec: C2) -> TypedSource<K, V, F, C2> {
        TypedSource {
            load: self.load,
            codec,
            _types: PhantomData,
        }
    }
}

impl<K, V, F, Fut, E, C> Source for TypedSource<K, V, F, C>
where
    K: DeserializeOwned + Send + 'static,
    V: Serialize + Send + 'static,
    F: Fn(K) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Option<V>, E>> + Send,
    E: Into<BoxError>,
    C: Codec,
{
    type Error = BoxError;

    fn load(&self, key: &str) -> impl Future<Output = Result<Loaded, BoxError>> + Send {
        // A key that does not decode is the codec's failure, not the data source's.
        let started = self
            .codec
            .decode_key::<K>(key)
            .map(|key| (self.load)(key))
            .map_err(|error| -> BoxError {
                Box::new(CodecError {
                    what: "the key does not decode",
                    error,
                })
            });
        async move {
            let Some(value) = started?.await.map_err(Into::into)? else {
                return Ok(Loaded::not_found());
            };
            // So is a value that does not encode.
            let value = self
                .codec
                .encode_value(&value)
                .map_err(|error| -> BoxError {
                    Box::new(CodecError {
                        what: "the value does not encode",
                        error,
                    })
                })?;
            Ok(Loaded::new(value))
        }
    }
}

/// Typed gets from one data source; made by [`CacheHandle::typed`].
pub struct TypedHandle<K, V, C = Json> {
    handle: CacheHandle,
    source: Box<str>,
    codec: C,
    _types: PhantomData<fn(&K) -> V>,
}

impl<K, V, C: Clone> Clone for TypedHandle<K, V, C> {
    fn clone(&self) -> Self {
        Self {
            handle: self.handle.clone(),
            source: self.source.clone(),
            codec: self.codec.clone(),
            _types: PhantomData,
        }
    }
}

impl<K, V, C: fmt::Debug> fmt::Debug for TypedHandle<K, V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedHandle")
            .field("source", &self.source)
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

impl<K: Serialize, V: DeserializeOwned, C: Codec> TypedHandle<K, V, C> {
    /// The value for `key`, decoded. Errors as [`CacheHandle::get`], plus
    /// [`ErrorKind::Codec`] when the key cannot be encoded or the value decoded.
    pub async fn get(&self, key: &K) -> Result<V, Error> {
        let codec_error = |cause| Error::with_cause(ErrorKind::Codec, &self.source, Some(cause));
        let key = self.codec.encode_key(key).map_err(codec_error)?;
        let bytes = self.handle.get(&self.source, &key).await?;
        self.codec.decode_value(&bytes).map_err(codec_error)
    }

    /// The values of many keys at once, decoded: one result per key, in the order of `keys`,
    /// as [`CacheHandle::get_many`] gives them. A key that cannot be encoded, or a value that
    /// cannot be decoded, fails its own key with [`ErrorKind::Codec`].
    pub async fn get_many(&self, keys: &[K]) -> Result<Vec<Result<V, Error>>, Error> {
        let codec_error = |cause| Error::with_cause(ErrorKind::Codec, &self.source, Some(cause));
        let encoded: Vec<Result<String, Error>> = keys
            .iter()
            .map(|key| self.codec.encode_key(key).map_err(codec_error))
            .collect();
        let good: Vec<&str> = encoded
            .iter()
            .filter_map(|key| key.as_deref().ok())
            .collect();
        let mut values = self.handle.get_many(&self.source, &good).await?.into_iter();
        Ok(encoded
            .into_iter()
            .map(|key| {
                key?;
                let bytes = values
                    .next()
                    .unwrap_or_else(|| Err(Error::new(ErrorKind::Load, &self.source)))?;
                self.codec.decode_value(&bytes).map_err(codec_error)
            })
            .collect())
    }

    /// The same handle with another codec.
    pub fn with_codec<C2: Codec>(self, codec: C2) -> TypedHandle<K, V, C2> {
        TypedHandle {
            handle: self.handle,
            source: self.source,
            codec,
            _types: PhantomData,
        }
    }
}

impl CacheHandle {
    /// Typed gets from the data source `source`, with the [`Json`] codec. See the
    /// [`typed`](crate::typed) module.
    pub fn typed<K, V>(&self, source: &str) -> TypedHandle<K, V, Json> {
        TypedHandle {
            handle: self.clone(),
            source: source.into(),
            codec: Json,
            _types: PhantomData,
        }
    }
}
