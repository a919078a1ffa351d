//! The tower middleware: [`GroupcacheLayer`] and its service [`GroupcacheService`].
//!
//! The service answers every request under the base path (`/_groupcache/` by default) itself:
//! those are peer requests. Every other request goes on to the inner service with a
//! [`CacheHandle`](crate::CacheHandle) in its extensions (an `Arc` clone; the extensions map
//! allocates only if the request has none yet). The pass-through path boxes nothing, and a
//! peer request that is a cache hit is answered without boxing a future.
//!
//! ```
//! use axum::{Router, body::Bytes, routing::post};
//! use tower_groupcache::{CacheHandle, Error, Groupcache};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Groupcache::builder()
//!     .source("users", |key: String| async move { Ok::<_, std::io::Error>(key) })
//!     .build()?;
//!
//! // A failed get answers with its status (see `Error`).
//! async fn exchange(cache: CacheHandle) -> Result<Bytes, Error> {
//!     cache.get("users", "user:12345").await
//! }
//!
//! let app: Router = Router::new()
//!     .route("/token-exchange", post(exchange))
//!     .layer(cache.layer());
//! # Ok(())
//! # }
//! ```

mod body;
mod future;
#[allow(clippy::module_inception)]
mod layer;
mod service;

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use layer::GroupcacheLayer;
pub use service::GroupcacheService;
