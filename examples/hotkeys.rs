//! Hot-key admission compared on a Zipf workload: no hot cache, golang/groupcache's 1-in-10
//! rule, and this crate's popularity rule.
//!
//! Three nodes on 127.0.0.1 share 100,000 keys; gets pick keys from a Zipf distribution
//! (exponent 1.0) and a node at random, the same seeded sequence for every policy. For each
//! policy it prints the peer requests per 1,000 gets, the hit ratio (the share of gets
//! answered from the asking node's own main or hot cache, with no I/O), the data-source loads,
//! and what the hot caches hold.
//!
//! `cargo run --release --example hotkeys` (add `-- --gets N` to change the 60,000 gets).

use std::time::Instant;

use tokio::net::TcpListener;
use tower_groupcache::{Groupcache, HotKeys};

const KEYS: usize = 100_000;
const NODES: usize = 3;
const CACHE_BYTES: u64 = 4 << 20;

/// SplitMix64: a small seeded generator, so every policy sees the same gets.
struct SplitMix(u64);

impl SplitMix {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Inverse-CDF sampling of ranks 0..n with weight 1/(rank+1)^s.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let mut cdf = Vec::with_capacity(n);
        for rank in 0..n {
            total += 1.0 / ((rank + 1) as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Self { cdf }
    }

    fn sample(&self, u: f64) -> usize {
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

struct Row {
    policy: &'static str,
    gets: u64,
    local: u64,
    peer_requests: u64,
    loads: u64,
    hot_items: u64,
    hot_bytes: u64,
}

async fn run(
    policy: &'static str,
    hot: HotKeys,
    gets: usize,
) -> Result<Row, Box<dyn std::error::Error>> {
    let mut listeners = Vec::new();
    for _ in 0..NODES {
        listeners.push(TcpListener::bind("127.0.0.1:0").await?);
    }
    let urls: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| format!("http://{a}")))
        .collect::<Result<_, _>>()?;
    let mut caches = Vec::new();
    for (listener, url) in listeners.into_iter().zip(&urls) {
        let cache = Groupcache::builder()
            .open_peer_path()
            .self_url(url.clone())
            .peers(urls.clone())
            .cache_bytes(CACHE_BYTES)
            .hot_keys(hot)
            .source("items", |key: String| async move {
                Ok::<_, std::io::Error>(format!("{key}:{}", "v".repeat(100)))
            })
            .build()?;
        let app = axum::Router::new().layer(cache.layer());
        tokio::spawn(async move { axum::serve(listener, app).await });
        caches.push(cache);
    }

    let zipf = Zipf::new(KEYS, 1.0);
    let mut random = SplitMix(7);
    let hits = |cache: &Groupcache| {
        cache
            .stats()
            .source("items")
            .map_or(0, |s| s.stats.cache_hits)
    };
    let mut local = 0;
    for _ in 0..gets {
        let key = format!("item:{}", zipf.sample(random.next_f64()));
        let node = (random.next_f64() * NODES as f64) as usize % NODES;
        // Gets run one at a time and a node never forwards, so a hit counted on the asking
        // node during its own get is a get answered from its own caches.
        let before = hits(&caches[node]);
        caches[node].handle().get("items", &key).await?;
        if hits(&caches[node]) > before {
            local += 1;
        }
    }

    let mut row = Row {
        policy,
        gets: gets as u64,
        local,
        peer_requests: 0,
        loads: 0,
        hot_items: 0,
        hot_bytes: 0,
    };
    for cache in &caches {
        let stats = cache.stats();
        let items = stats.source("items").ok_or("no source")?;
        let s = items.stats;
        row.peer_requests += s.server_requests;
        row.loads += s.local_loads;
        row.hot_items += items.hot_cache.items;
        row.hot_bytes += items.hot_cache.bytes;
    }
    Ok(row)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut gets = 60_000;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--gets" => gets = args.next().ok_or("--gets needs a number")?.parse()?,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    println!(
        "{gets} gets, Zipf(1.0) over {KEYS} keys, {NODES} nodes on 127.0.0.1, {} MiB per node",
        CACHE_BYTES >> 20
    );
    println!("command: cargo run --release --example hotkeys -- --gets {gets}\n");
    println!(
        "{:<26} {:>14} {:>12} {:>8} {:>10} {:>10}",
        "policy", "peer req/1000", "hit ratio", "loads", "hot items", "hot bytes"
    );
    for (name, policy) in [
        ("no hot cache", HotKeys::Never),
        ("golang 1-in-10", HotKeys::OneInTen),
        ("popularity, 1 req/s", HotKeys::AboveQps(1.0)),
        ("popularity, default", HotKeys::default()),
    ] {
        let started = Instant::now();
        let row = run(name, policy, gets).await?;
        println!(
            "{:<26} {:>14.1} {:>11.1}% {:>8} {:>10} {:>10}   ({:.1?})",
            row.policy,
            row.peer_requests as f64 * 1000.0 / row.gets as f64,
            row.local as f64 * 100.0 / row.gets as f64,
            row.loads,
            row.hot_items,
            row.hot_bytes,
            started.elapsed()
        );
    }
    Ok(())
}
