//! The ring simulator's measurements, shared with the integration test that runs them at
//! small sizes (tests/it/ring_kind.rs).

use std::hint::black_box;
use std::time::Instant;

use tower_groupcache::{Ring, RingKind, defaults};

/// How the peer URLs of a simulated cluster are spelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Urls {
    /// A Kubernetes StatefulSet behind a headless service:
    /// `http://cache-17.cache.prod.svc.cluster.local:8080/_groupcache/`.
    StatefulSet,
    /// Pod IPs: `http://10.0.3.17:8080/_groupcache/`.
    Ip,
}

impl Urls {
    /// The name in the table.
    pub fn name(self) -> &'static str {
        match self {
            Self::StatefulSet => "statefulset",
            Self::Ip => "ip:port",
        }
    }

    /// The URL of node `i` (from 0). A cluster of `n` nodes is nodes `0..n`: a StatefulSet
    /// scaled up gains the next ordinal and scaled down loses the last, and so does the IP
    /// list here.
    pub fn url(self, i: usize) -> String {
        match self {
            Self::StatefulSet => {
                format!("http://cache-{i}.cache.prod.svc.cluster.local:8080/_groupcache/")
            }
            // 250 addresses per /24, from .2 up.
            Self::Ip => format!("http://10.0.{}.{}:8080/_groupcache/", i / 250, i % 250 + 2),
        }
    }

    /// The URLs of a cluster of `n` nodes.
    pub fn cluster(self, n: usize) -> Vec<String> {
        (0..n).map(|i| self.url(i)).collect()
    }
}

/// The ring of `kind` that a cache with default settings builds for `peers`.
pub fn ring(kind: RingKind, peers: &[String]) -> Ring {
    match kind {
        RingKind::Balanced => Ring::balanced(peers),
        _ => Ring::new(defaults::REPLICAS, peers),
    }
}

/// The busiest peer's share of the hash space over its fair share `1 / n`, from the ring's
/// arc lengths ([`Ring::ownership`]).
pub fn busiest(ring: &Ring) -> f64 {
    let n = ring.peers().len() as f64;
    ring.ownership().into_iter().fold(0.0, f64::max) * n
}

/// The keys that move when node `n` joins a cluster of `n`, over the ideal `1 / (n + 1)`.
/// Both rings only ever move keys to the node that joins (checked by [`check_moves`]), so the
/// keys moved are exactly its share of the new ring, from arc lengths.
pub fn moved_on_join(kind: RingKind, urls: Urls, n: usize) -> f64 {
    let after = ring(kind, &urls.cluster(n + 1));
    after.ownership()[n] * (n + 1) as f64
}

/// The keys that move when the last of `n` nodes leaves, over the ideal `1 / n`: exactly its
/// share of the ring it leaves, from arc lengths.
pub fn moved_on_leave(kind: RingKind, urls: Urls, n: usize) -> f64 {
    let before = ring(kind, &urls.cluster(n));
    before.ownership()[n - 1] * n as f64
}

/// Checks on `keys` sampled keys that going from `n` to `n + 1` nodes moves keys only to the
/// new node, so that the moves above are the new node's share. Returns the share of the keys
/// that moved, which should be close to the new node's share of the ring.
pub fn check_moves(kind: RingKind, urls: Urls, n: usize, keys: usize) -> f64 {
    let (before, after) = (
        ring(kind, &urls.cluster(n)),
        ring(kind, &urls.cluster(n + 1)),
    );
    let newcomer = urls.url(n);
    let mut moved = 0;
    for i in 0..keys {
        let key = format!("user:{i}");
        let (from, to) = (before.owner(&key), after.owner(&key));
        if from != to {
            assert_eq!(to, Some(newcomer.as_str()), "{key} moved between old nodes");
            moved += 1;
        }
    }
    moved as f64 / keys as f64
}

/// Nanoseconds per owner lookup, the median and the best of `batches` batches, each looking
/// up 16,384 distinct keys (`user:{i}`) once.
pub fn lookup_ns(ring: &Ring, batches: usize) -> (f64, f64) {
    let keys: Vec<String> = (0..16_384).map(|i| format!("user:{i}")).collect();
    let mut times: Vec<f64> = (0..batches)
        .map(|_| {
            let start = Instant::now();
            for key in &keys {
                black_box(ring.owner(black_box(key)));
            }
            start.elapsed().as_nanos() as f64 / keys.len() as f64
        })
        .collect();
    median_and_best(&mut times)
}

/// Milliseconds to build the ring of `peers`, the median and the best of `runs` builds.
pub fn build_ms(kind: RingKind, peers: &[String], runs: usize) -> (f64, f64) {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            black_box(ring(kind, black_box(peers)));
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    median_and_best(&mut times)
}

/// The ring's memory, estimated from its points: a golang ring keeps a 4-byte point and a
/// 4-byte owner per point; the balanced ring an 8-byte word per point (the point and its
/// owner's rank packed together), a 4-byte index entry per bucket, with between half as many
/// buckets as points and as many, and a 4-byte entry per peer from rank to peer.
pub fn ring_bytes(ring: &Ring) -> usize {
    let points = ring.points();
    match ring.kind() {
        RingKind::Balanced => {
            let buckets = points.max(4).next_power_of_two() / 2 + 1;
            points * 8 + buckets * 4 + ring.peers().len() * 4
        }
        _ => points * 8,
    }
}

/// One row of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// The ring.
    pub kind: RingKind,
    /// The URLs' style.
    pub urls: Urls,
    /// The nodes.
    pub nodes: usize,
    /// [`busiest`].
    pub busiest: f64,
    /// [`moved_on_join`].
    pub join: f64,
    /// [`moved_on_leave`].
    pub leave: f64,
    /// [`lookup_ns`]: median and best.
    pub lookup_ns: (f64, f64),
    /// [`build_ms`]: median and best.
    pub build_ms: (f64, f64),
    /// [`ring_bytes`].
    pub bytes: usize,
}

/// Measures one row; `timing_runs` batches and builds for the medians (0: no timing).
pub fn row(kind: RingKind, urls: Urls, nodes: usize, timing_runs: usize) -> Row {
    let peers = urls.cluster(nodes);
    let ring = ring(kind, &peers);
    let (lookup_ns, build_ms) = if timing_runs == 0 {
        ((0.0, 0.0), (0.0, 0.0))
    } else {
        (
            lookup_ns(&ring, timing_runs),
            build_ms(kind, &peers, timing_runs),
        )
    };
    Row {
        kind,
        urls,
        nodes,
        busiest: busiest(&ring),
        join: moved_on_join(kind, urls, nodes),
        leave: moved_on_leave(kind, urls, nodes),
        lookup_ns,
        build_ms,
        bytes: ring_bytes(&ring),
    }
}

fn median_and_best(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[values.len() / 2], values[0])
}
