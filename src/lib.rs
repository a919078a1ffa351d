//! A distributed read-through cache for axum and tower services, wire-compatible with
//! golang/groupcache.
//!
//! The replicas of a service become one cache: a consistent-hash [`Ring`] gives every key one
//! owner node; a miss is loaded once in the whole cluster, by the owner, from a named data
//! [`Source`]; popular keys are copied to the nodes that ask for them; and the peer traffic
//! rides on the service's own HTTP router through [`GroupcacheLayer`].
//!
//! ```
//! use axum::{Router, body::Bytes, extract::Path, routing::get};
//! use tower_groupcache::{CacheHandle, Error, Groupcache};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cache = Groupcache::builder()
//!     .self_url("http://10.0.0.1:8080")
//!     .peers(["http://10.0.0.1:8080", "http://10.0.0.2:8080", "http://10.0.0.3:8080"])
//!     .peer_secret("a secret all nodes share: 32 or more random bytes")
//!     .cache_bytes(64 << 20)
//!     .source("users", |key: String| async move {
//!         // A slow back end: a database, an HTTP API.
//!         Ok::<_, std::io::Error>(format!("{{\"id\":\"{key}\"}}"))
//!     })
//!     .build()?;
//!
//! // A failed get answers with its status (404 not found, 502 when the data source fails) and
//! // a short text that names the data source, not the key.
//! async fn user(cache: CacheHandle, Path(id): Path<String>) -> Result<Bytes, Error> {
//!     cache.get("users", &format!("user:{id}")).await
//! }
//!
//! let app: Router = Router::new()
//!     .route("/user/{id}", get(user))
//!     .layer(cache.layer()); // serves /_groupcache/*, gives handlers a CacheHandle
//! # Ok(())
//! # }
//! ```
//!
//! # The request flow
//!
//! 1. **Local hit**: the key is in this node's main or hot cache; no I/O.
//! 2. **Remote hit**: the ring names node B; one `GET` to B, which answers from its cache.
//! 3. **Miss, local owner**: one load per key at a time on this node, from the data source.
//! 4. **Miss, remote owner**: B loads it (once for the whole cluster) and answers; this node
//!    keeps a hot copy of some of the values it fetches.
//!
//! When B is down, slow or answers garbage, this node loads the key itself after at most the
//! peer timeout, and the get succeeds; [`SourceStats::peer_errors`] counts it.
//!
//! # Compatibility
//!
//! The ring, the peer URL and the `GetResponse` message are golang/groupcache's, so Go nodes
//! and nodes of this crate can form one cluster. docs/protocol.md in the repository
//! says what this crate adds, byte for byte.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod clock;
mod config;
pub mod defaults;
mod discovery;
mod error;
mod groupcache;
mod handle;
pub mod metrics;
pub mod middleware;
mod node;
mod peer;
// Public for the fuzz targets and the interop tests, not part of the stable API.
#[doc(hidden)]
pub mod protocol;
mod ring;
mod source;
mod stats;
mod sync;
#[cfg(feature = "serde")]
pub mod typed;

pub use builder::GroupcacheBuilder;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::MIN_PEER_SECRET_BYTES;
pub use discovery::{DnsDiscovery, Resolve, SystemResolver};
pub use error::{BoxError, ConfigError, Error, ErrorKind};
pub use groupcache::Groupcache;
pub use handle::{CacheHandle, MissingCacheHandle};
pub use middleware::{GroupcacheLayer, GroupcacheService};
pub use node::{HotKeys, Removal, Shutdown, SourceOptions};
pub use peer::auth;
pub use peer::auth::PeerSecret;
pub use peer::health::PeerHealthConfig;
#[cfg(feature = "tls")]
pub use peer::tls::PeerTls;
pub use ring::{BALANCED_POINTS, MAX_REPLICAS, MAX_RING_POINTS, Ring, RingKind};
pub use source::{BatchFn, Loaded, LoadedMany, Source, batch_fn};
pub use stats::{
    CacheStats, ClusterStats, PeerErrorCounts, PeerRequestCounts, PeerStats, RefusalStats,
    SourceSnapshot, SourceStats, Stats,
};

/// The README's code, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The code of docs/guide.md, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../docs/guide.md")]
struct GuideDoctests;

/// The code of docs/interop.md, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../docs/interop.md")]
struct InteropDoctests;

/// The code of docs/security.md, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../docs/security.md")]
struct SecurityDoctests;

/// The code of docs/hotkeys.md, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../docs/hotkeys.md")]
struct HotkeysDoctests;
