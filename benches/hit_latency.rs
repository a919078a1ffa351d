//! The latency of one local hit at p50, p90 and p99, beside a raw quick_cache get of the same
//! keys: `cargo bench --bench hit_latency`.
//!
//! Criterion (`benches/local_hit.rs`) reports the mean time of a get over samples of tens of
//! milliseconds, so a sample takes in whatever else the machine was doing then. This bench
//! times gets in batches of 32 instead (one clock read per batch, about 0.1 ns per get) and
//! reports percentiles of the batches' time per get, over 100,000 batches per row and round.
//! Rows run in turn, nine rounds, each round on a new thread; the table gives each row's
//! median over the rounds, and the ratio of the two rows' p50 within each round.
//!
//! The cache and the keys are those of `local_hit` (benches/support): 100,000 entries of 64
//! bytes, gets cycling over a working set of 1,000 keys, `CacheHandle::get` awaited in one
//! async block.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt as _;

mod support;
use support::{ENTRIES, WORKING_SET, keys, loaded_cache, value};

const BATCH: usize = 32;
const BATCHES: usize = 100_000;
const ROUNDS: usize = 9;

/// Percentiles of one row in one round, in nanoseconds per get.
#[derive(Clone, Copy)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
}

impl Percentiles {
    fn of(mut per_get: Vec<f64>) -> Self {
        per_get.sort_by(f64::total_cmp);
        let at = |q: f64| per_get[((per_get.len() - 1) as f64 * q) as usize];
        Self {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
        }
    }
}

/// Times `BATCHES` batches of `BATCH` calls of `get`, cycling over `set`.
fn time_batches(set: &[String], mut get: impl FnMut(&str)) -> Percentiles {
    let mut per_get = Vec::with_capacity(BATCHES);
    let mut next = 0;
    for _ in 0..BATCHES {
        let start = Instant::now();
        for _ in 0..BATCH {
            get(&set[next]);
            next += 1;
            if next == set.len() {
                next = 0;
            }
        }
        per_get.push(start.elapsed().as_nanos() as f64 / BATCH as f64);
    }
    Percentiles::of(per_get)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let keys = keys();
    let cache = loaded_cache(&keys);
    let handle = cache.handle();
    let quick: quick_cache::sync::Cache<Box<str>, Bytes> = quick_cache::sync::Cache::new(ENTRIES);
    for key in &keys {
        quick.insert(key.as_str().into(), value());
    }
    let set = &keys[..WORKING_SET];

    let mut rows: [(&str, Vec<Percentiles>); 3] = [
        ("CacheHandle::get", Vec::new()),
        ("quick_cache 0.7, raw", Vec::new()),
        ("the clock alone (empty batch)", Vec::new()),
    ];
    for _ in 0..ROUNDS {
        // Each round on a thread of its own, as criterion runs `local_hit` and as a server
        // runs its handlers on worker threads (the code the compiler makes differs from that
        // of a loop in `main`).
        std::thread::scope(|scope| {
            scope.spawn(|| {
                // The handle's gets are awaited, as in a handler: they are all hits, so the
                // block ends in its first poll.
                let handle_row = async {
                    let mut per_get = Vec::with_capacity(BATCHES);
                    let mut next = 0;
                    for _ in 0..BATCHES {
                        let start = Instant::now();
                        for _ in 0..BATCH {
                            black_box(handle.get("users", &set[next]).await.expect("hit"));
                            next += 1;
                            if next == set.len() {
                                next = 0;
                            }
                        }
                        per_get.push(start.elapsed().as_nanos() as f64 / BATCH as f64);
                    }
                    Percentiles::of(per_get)
                }
                .now_or_never()
                .expect("every get is a hit, ready at once");
                rows[0].1.push(handle_row);
                rows[1].1.push(time_batches(set, |key| {
                    black_box(quick.get(key).expect("hit"));
                }));
                rows[2].1.push(time_batches(set, |key| {
                    black_box(key);
                }));
            });
        });
    }

    println!(
        "local hit latency, ns per get: median over {ROUNDS} rounds of {BATCHES} batches of {BATCH}"
    );
    println!("{:<32} {:>8} {:>8} {:>8}", "", "p50", "p90", "p99");
    for (name, rounds) in &rows {
        let pick = |f: fn(&Percentiles) -> f64| median(rounds.iter().map(f).collect());
        println!(
            "{name:<32} {:>8.1} {:>8.1} {:>8.1}",
            pick(|p| p.p50),
            pick(|p| p.p90),
            pick(|p| p.p99)
        );
    }
    let ratios: Vec<f64> = rows[0]
        .1
        .iter()
        .zip(&rows[1].1)
        .map(|(ours, raw)| ours.p50 / raw.p50)
        .collect();
    let (low, high) = ratios
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), r| (l.min(*r), h.max(*r)));
    println!(
        "p50 of CacheHandle::get / p50 of raw quick_cache, per round: median {:.2}x, {low:.2}x-{high:.2}x",
        median(ratios.clone())
    );
}
