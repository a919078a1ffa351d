//! The cache and keys that the local-hit benches share (`local_hit`, `hit_latency`).

use bytes::Bytes;
use tower_groupcache::Groupcache;

/// Entries loaded into the cache.
pub(crate) const ENTRIES: usize = 100_000;
/// Keys each thread cycles over.
pub(crate) const WORKING_SET: usize = 1_000;

pub(crate) fn keys() -> Vec<String> {
    (0..ENTRIES).map(|i| format!("user:{i:08}")).collect()
}

/// A value of 64 bytes, a buffer of its own each time: clones of one `Bytes` would share one
/// reference count between the keys.
pub(crate) fn value() -> Bytes {
    Bytes::from(vec![b'v'; 64])
}

/// A cache whose source `users` holds every key of `keys`, all loaded already.
pub(crate) fn loaded_cache(keys: &[String]) -> Groupcache {
    let cache = Groupcache::builder()
        .cache_bytes(1 << 30)
        .source("users", |_k: String| async {
            Ok::<_, std::io::Error>(value())
        })
        .build()
        .expect("valid config");
    let handle = cache.handle();
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(async {
            for key in keys {
                handle.get("users", key).await.expect("loads");
            }
        });
    cache
}
