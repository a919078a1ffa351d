//! A local hit through `CacheHandle::get`, on one and two threads, beside the raw stores with
//! the same keys: quick_cache (our store), mini-moka, and a `RwLock<FxHashMap>`.
//!
//! 100,000 entries are loaded; each thread's gets cycle over a working set of 1,000 of them.
//! In the `2_thread` group the two threads have working sets of their own (two handlers
//! serving different users); in `2_thread_same_keys` both cycle over the same 1,000 keys, so
//! they share the values' reference counts and the store's locks for those keys.
//! `cargo bench --bench local_hit`

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::FutureExt as _;
use rustc_hash::FxHashMap;
use tower_groupcache::Groupcache;

const ENTRIES: usize = 100_000;
const WORKING_SET: usize = 1_000;

fn keys() -> Vec<String> {
    (0..ENTRIES).map(|i| format!("user:{i:08}")).collect()
}

fn value() -> Bytes {
    Bytes::from(vec![b'v'; 64])
}

/// Runs `op` over the working set on `threads` threads, `iters` times each; returns the wall
/// time. Each iteration of each thread is one get.
type Get<'a> = &'a (dyn Fn(&str) + Sync);

fn run_threads(
    threads: usize,
    same_keys: bool,
    iters: u64,
    keys: &[String],
    op: Get<'_>,
) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                let (base, mut next) = if same_keys {
                    (0, t * 7)
                } else {
                    (t * WORKING_SET, 0)
                };
                let set = &keys[base..base + WORKING_SET];
                // A wrapping index, not `i % WORKING_SET`: a division would cost more than
                // some of the gets measured.
                for _ in 0..iters {
                    op(&set[next]);
                    next += 1;
                    if next == WORKING_SET {
                        next = 0;
                    }
                }
            });
        }
    });
    start.elapsed()
}

fn bench(c: &mut Criterion) {
    let keys = keys();

    let cache = Groupcache::builder()
        .cache_bytes(1 << 30)
        .source("users", |_k: String| async {
            Ok::<_, std::io::Error>(value())
        })
        .build()
        .expect("valid config");
    let handle = cache.handle();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for key in &keys {
            handle.get("users", key).await.expect("loads");
        }
    });

    let quick: quick_cache::sync::Cache<Box<str>, Bytes> = quick_cache::sync::Cache::new(ENTRIES);
    let moka: mini_moka::sync::Cache<Box<str>, Bytes> = mini_moka::sync::Cache::new(ENTRIES as u64);
    let map: RwLock<FxHashMap<Box<str>, Bytes>> = RwLock::default();
    for key in &keys {
        quick.insert(key.as_str().into(), value());
        moka.insert(key.as_str().into(), value());
        map.write()
            .expect("not poisoned")
            .insert(key.as_str().into(), value());
    }

    let handle_get = |key: &str| {
        let got = handle
            .get("users", key)
            .now_or_never()
            .expect("a hit is ready at once");
        black_box(got.expect("hit"));
    };
    let quick_get = |key: &str| {
        black_box(quick.get(key).expect("hit"));
    };
    let moka_get = |key: &str| {
        let key: Box<str> = key.into(); // mini-moka looks up by &Box<str>, not &str
        black_box(moka.get(&key).expect("hit"));
    };
    let map_get = |key: &str| {
        black_box(
            map.read()
                .expect("not poisoned")
                .get(key)
                .cloned()
                .expect("hit"),
        );
    };
    let rows: [(&str, Get<'_>); 4] = [
        ("CacheHandle::get", &handle_get),
        ("quick_cache", &quick_get),
        ("mini_moka", &moka_get),
        ("RwLock<FxHashMap>", &map_get),
    ];

    for (threads, same_keys, title) in [
        (1usize, false, "1_thread"),
        (2, false, "2_thread"),
        (2, true, "2_thread_same_keys"),
    ] {
        let mut group = c.benchmark_group(format!("local_hit/{title}"));
        group.throughput(Throughput::Elements(threads as u64));
        // The shared-keys case is about contention: the cache beside its store is enough.
        let rows = if same_keys { &rows[..2] } else { &rows[..] };
        for &(name, op) in rows {
            group.bench_function(name, |b| {
                b.iter_custom(|iters| run_threads(threads, same_keys, iters, &keys, op));
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
