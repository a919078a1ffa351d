//! A local hit through `CacheHandle::get`, on one and two threads, beside the raw stores with
//! the same keys: quick_cache (our store), mini-moka, and a `RwLock<FxHashMap>`.
//!
//! 100,000 entries are loaded; each thread's gets cycle over a working set of 1,000 of them.
//! `CacheHandle::get` is awaited in a loop inside one async block, as a handler awaits it; every
//! get is a hit, so the block ends in one poll.
//! In the `2_thread` group the two threads have working sets of their own (two handlers
//! serving different users); in `2_thread_same_keys` both cycle over the same 1,000 keys, so
//! they share the values' reference counts (the store's read locks are per thread).
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

mod support;
use support::{ENTRIES, WORKING_SET, keys, loaded_cache, value};

/// A benchmark's body: `iters` gets over `set`, starting at index `next`.
type Body<'a> = &'a (dyn Fn(&[String], usize, u64) + Sync);

/// Runs `body` on `threads` threads, `iters` gets each; returns the wall time.
fn run_threads(
    threads: usize,
    same_keys: bool,
    iters: u64,
    keys: &[String],
    body: Body<'_>,
) -> Duration {
    let start = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                let (base, next) = if same_keys {
                    (0, t * 7)
                } else {
                    (t * WORKING_SET, 0)
                };
                body(&keys[base..base + WORKING_SET], next, iters);
            });
        }
    });
    start.elapsed()
}

/// Calls `get` `iters` times over `set`, from `next` on.
#[inline(always)]
fn each_key(set: &[String], mut next: usize, iters: u64, mut get: impl FnMut(&str)) {
    // A wrapping index, not `i % WORKING_SET`: a division would cost more than some of the
    // gets measured.
    for _ in 0..iters {
        get(&set[next]);
        next += 1;
        if next == set.len() {
            next = 0;
        }
    }
}

fn bench(c: &mut Criterion) {
    let keys = keys();

    let cache = loaded_cache(&keys);
    let handle = cache.handle();

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

    let handle_get = |set: &[String], mut next: usize, iters: u64| {
        async {
            for _ in 0..iters {
                black_box(handle.get("users", &set[next]).await.expect("hit"));
                next += 1;
                if next == set.len() {
                    next = 0;
                }
            }
        }
        .now_or_never()
        .expect("every get is a hit, ready at once");
    };
    let quick_get = |set: &[String], next: usize, iters: u64| {
        each_key(set, next, iters, |key| {
            black_box(quick.get(key).expect("hit"));
        });
    };
    let moka_get = |set: &[String], next: usize, iters: u64| {
        each_key(set, next, iters, |key| {
            let key: Box<str> = key.into(); // mini-moka looks up by &Box<str>, not &str
            black_box(moka.get(&key).expect("hit"));
        });
    };
    let map_get = |set: &[String], next: usize, iters: u64| {
        each_key(set, next, iters, |key| {
            black_box(
                map.read()
                    .expect("not poisoned")
                    .get(key)
                    .cloned()
                    .expect("hit"),
            );
        });
    };
    let rows: [(&str, Body<'_>); 4] = [
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
        for &(name, body) in rows {
            group.bench_function(name, |b| {
                b.iter_custom(|iters| run_threads(threads, same_keys, iters, &keys, body));
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
