//! Ring owner lookup with 3 and 1,000 peers, on golang's ring and on the balanced ring, and
//! ring builds. `cargo bench --bench ring`; examples/ringsim measures balance as well.

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tower_groupcache::Ring;

fn bench(c: &mut Criterion) {
    let keys: Vec<String> = (0..1_024).map(|i| format!("user:{i}")).collect();
    for peers in [3usize, 1_000] {
        let urls: Vec<String> = (0..peers)
            .map(|i| format!("http://10.0.{}.{}:8080", i / 250, i % 250))
            .collect();
        let ring = Ring::new(50, &urls);
        let mut i = 0;
        c.bench_function(&format!("ring/owner/{peers}_peers"), |b| {
            b.iter(|| {
                i = (i + 1) & 1_023;
                black_box(ring.owner(&keys[i]))
            })
        });
        let balanced = Ring::balanced(&urls);
        c.bench_function(&format!("ring/balanced_owner/{peers}_peers"), |b| {
            b.iter(|| {
                i = (i + 1) & 1_023;
                black_box(balanced.owner(&keys[i]))
            })
        });
    }
    let urls: Vec<String> = (0..3).map(|i| format!("http://10.0.0.{i}:8080")).collect();
    c.bench_function("ring/build/3_peers", |b| {
        b.iter(|| Ring::new(50, black_box(&urls)))
    });
    let thousand: Vec<String> = (0..1_000)
        .map(|i| format!("http://10.0.{}.{}:8080", i / 250, i % 250))
        .collect();
    c.bench_function("ring/build/1000_peers", |b| {
        b.iter(|| Ring::new(50, black_box(&thousand)))
    });
    c.bench_function("ring/balanced_build/1000_peers", |b| {
        b.iter(|| Ring::balanced(black_box(&thousand)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
