//! Singleflight under contention: 64 concurrent gets of one cold key on a node, a fresh key
//! each round, on a 2-thread runtime; beside it, the baseline of the same 64 spawned tasks
//! that each only clone the key. `cargo bench --bench singleflight`

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tower_groupcache::Groupcache;

const CALLERS: usize = 64;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let cache = Groupcache::builder()
        .source("users", |k: String| async move {
            tokio::task::yield_now().await;
            Ok::<_, std::io::Error>(k)
        })
        .build()
        .expect("valid config");
    let round = Arc::new(AtomicU64::new(0));
    let mut group = c.benchmark_group("singleflight");
    group.throughput(Throughput::Elements(CALLERS as u64));
    group.bench_function("64_callers_one_cold_key", |b| {
        b.to_async(&rt).iter(|| {
            let key = format!("key-{}", round.fetch_add(1, Ordering::Relaxed));
            let handle = cache.handle();
            async move {
                let gets: Vec<_> = (0..CALLERS)
                    .map(|_| {
                        let (handle, key) = (handle.clone(), key.clone());
                        tokio::spawn(async move { handle.get("users", &key).await })
                    })
                    .collect();
                for get in gets {
                    get.await.expect("joins").expect("loads");
                }
            }
        })
    });
    group.bench_function("baseline_64_spawned_tasks", |b| {
        b.to_async(&rt).iter(|| {
            let key = format!("key-{}", round.load(Ordering::Relaxed));
            async move {
                let tasks: Vec<_> = (0..CALLERS)
                    .map(|_| {
                        let key = key.clone();
                        tokio::spawn(async move { std::hint::black_box(key).len() })
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("joins");
                }
            }
        })
    });
    group.finish();
    let loads = cache.stats().source("users").map(|s| s.stats.local_loads);
    let rounds = round.load(Ordering::Relaxed);
    assert_eq!(loads, Some(rounds), "one load per round");
}

criterion_group!(benches, bench);
criterion_main!(benches);
