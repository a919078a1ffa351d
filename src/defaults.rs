//! The defaults of [`GroupcacheBuilder`](crate::GroupcacheBuilder)'s settings. The bounds it
//! checks are at the crate root: [`MAX_REPLICAS`](crate::MAX_REPLICAS),
//! [`MAX_RING_POINTS`](crate::MAX_RING_POINTS) and
//! [`MIN_PEER_SECRET_BYTES`](crate::MIN_PEER_SECRET_BYTES).

use std::time::Duration;

/// The default base path of the peer protocol, as in golang/groupcache.
pub const BASE_PATH: &str = "/_groupcache/";
/// The default bytes per data source, main and hot cache together: 64 MiB.
pub const CACHE_BYTES: u64 = 64 << 20;
/// The default number of ring points per peer, as in golang/groupcache.
pub const REPLICAS: usize = 50;
/// The default bound on a whole peer fetch, connection included: 5 seconds. A fetch that
/// takes longer counts as a peer error and the key is loaded locally.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// The default bound on opening a connection to a peer: 1 second.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The default longest time a connection to a peer is kept idle for reuse: 90 seconds.
pub const PEER_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The default most connections open to one peer, in use and idle: 64, as many as a peer's
/// idle list keeps, so that every connection opened can be kept for reuse.
pub const MAX_CONNECTIONS_PER_PEER: usize = 64;
/// The default longest key, in bytes: 8 KiB. Longer keys are refused (`414` on the peer path).
pub const MAX_KEY_BYTES: usize = 8 << 10;
/// The default most keys in one batched peer request: 1,000. An asker splits a larger batch;
/// an owner refuses a request with more (`413`).
pub const MAX_BATCH_KEYS: usize = 1_000;
/// The default of natural batching: once 4 single-key gets of one source are in flight to one
/// peer of this crate, further ones queue and go together in one batched request.
pub const NATURAL_BATCHING: usize = 4;
/// The most keys in one batched peer request that can be configured.
pub const MAX_BATCH_KEYS_LIMIT: usize = 100_000;
/// The default largest value accepted from a peer, in bytes: 32 MiB. A larger answer is
/// refused while it streams in, and the key is loaded locally.
pub const MAX_VALUE_BYTES: usize = 32 << 20;

/// The default bound on [`Groupcache::shutdown`](crate::Groupcache::shutdown): 15 seconds.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);
/// The default share of cache bytes for the hot cache: an eighth.
pub const HOT_CACHE_FRACTION: f64 = 0.125;
/// The default longest life of a hot copy: 60 seconds.
pub const HOT_MAX_STALENESS: Duration = Duration::from_secs(60);
