//! `GetResponse` encode and decode, and path escape and unescape.
//! `cargo bench --bench protocol`

// `criterion_group!` defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use prost::Message as _;
use tower_groupcache::protocol::{GetResponse, escape, parse_path};

fn bench(c: &mut Criterion) {
    for size in [64usize, 4_096] {
        let message = GetResponse {
            value: Some(Bytes::from(vec![7u8; size])),
            minute_qps: Some(12.5),
            expire: Some(1_800_000_000_000_000_000),
        };
        let encoded = Bytes::from(message.encode_to_vec());
        c.bench_function(&format!("protocol/encode/{size}B"), |b| {
            b.iter(|| black_box(&message).encode_to_vec())
        });
        c.bench_function(&format!("protocol/decode/{size}B"), |b| {
            b.iter(|| GetResponse::decode(black_box(encoded.clone())).expect("decodes"))
        });
    }
    let key = "tenant:acme/user:12345 ü+%";
    c.bench_function("protocol/escape", |b| {
        b.iter(|| escape(black_box(key)).to_string())
    });
    let plain = "users/user%3A12345";
    let ugly = format!("users/{}", escape(key));
    c.bench_function("protocol/unescape/plain", |b| {
        b.iter(|| parse_path(black_box(plain)).expect("valid"))
    });
    c.bench_function("protocol/unescape/escaped", |b| {
        b.iter(|| parse_path(black_box(&ugly)).expect("valid"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
