//! The consistent-hash ring that gives every key one owner, of one of two kinds
//! ([`RingKind`]).
//!
//! The default, [`RingKind::Golang`], places keys exactly as golang/groupcache's
//! `consistenthash` package does with its defaults, so nodes of this crate and Go nodes agree
//! on every owner: each peer gets `replicas` points at `crc32_ieee(i.to_string() + peer)` for
//! `i` in `0..replicas`; a key belongs to the first point at or after `crc32_ieee(key)`,
//! wrapping to the first point; when two points collide, the peer added later wins.
//!
//! [`RingKind::Balanced`], for clusters of this crate alone, spreads keys far more evenly
//! (docs/scaling.md has the figures): each peer gets [`BALANCED_POINTS`] points at
//! `xxh3_64_with_seed(xxh3_128(peer), i)` for `i` in `0..448` (the 128-bit digest as 16
//! little-endian bytes). A key has two probes, `h = xxh3_64(key)` and
//! `xxh3_64_with_seed(h, 0x67726f7570636163)` (`h` as 8 little-endian bytes). Points and
//! probes are compared on their top 52 bits (the low 12 bits cleared; past 4,096 peers, as
//! many more low bits as number them). Each probe finds the
//! first point at or after it, wrapping to the first point, and the key belongs to the point
//! nearer to its probe (two probes of multi-probe consistent hashing; a tie goes to the point
//! that sorts first). Two points that collide sort by their peer's URL, the first winning.
//!
//! ```
//! use tower_groupcache::Ring;
//!
//! let ring = Ring::new(
//!     50,
//!     ["http://127.0.0.1:9101", "http://127.0.0.1:9102", "http://127.0.0.1:9103"],
//! );
//! assert_eq!(ring.owner("user:12345"), Some("http://127.0.0.1:9102"));
//! assert_eq!(ring.owner("user:67890"), Some("http://127.0.0.1:9101"));
//! assert_eq!(Ring::new(50, Vec::<String>::new()).owner("any"), None);
//! ```

use std::fmt;
use std::sync::Arc;

use rustc_hash::FxHashSet;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed, xxh3_128};

use crate::error::ConfigError;

/// The most ring points per peer a cache accepts: 10,000 (golang/groupcache uses 50).
///
/// [`GroupcacheBuilder::build`](crate::GroupcacheBuilder::build) and
/// [`Groupcache::set_peers`](crate::Groupcache::set_peers) refuse more with
/// [`ConfigError::TooManyReplicas`].
pub const MAX_REPLICAS: usize = 10_000;

/// The most points on a ring: 1,000,000. That is peers × replicas on the golang ring (20,000
/// peers at 50 replicas), peers × [`BALANCED_POINTS`] on the balanced one (2,232 peers).
///
/// It was 100,000 until the balanced ring came, whose 1,000 peers need 448,000 points. A ring
/// of a million points takes 8 MB (golang's ring) to 10 MB (the balanced one) and, in a
/// release build on the project's 2-core machine, 85 to 140 ms to build for golang's ring (a
/// formatted label and a crc32 per point, then a sort) and 23 to 30 ms for the balanced one.
/// A larger peer list is refused rather than left to take memory and time: past a few
/// thousand nodes, split the cluster (docs/scaling.md).
/// [`GroupcacheBuilder::build`](crate::GroupcacheBuilder::build) and
/// [`Groupcache::set_peers`](crate::Groupcache::set_peers) refuse larger rings with
/// [`ConfigError::RingTooLarge`] (golang's ring) or [`ConfigError::TooManyPeers`] (the
/// balanced ring).
pub const MAX_RING_POINTS: usize = 1_000_000;

/// The points per peer on the balanced ring: 448. With its two probes per key, the busiest of
/// 1,000 peers owns about 1.1 times its fair share (docs/scaling.md).
pub const BALANCED_POINTS: usize = 448;

/// The probes per key on the balanced ring: the key's hash and one hash derived from it
/// ([`Balanced::owner`] takes exactly two).
const BALANCED_PROBES: u64 = 2;

/// The seed of the balanced ring's second probe, the xxh3 hash of the first with this seed.
const PROBE_SEED: u64 = 0x6772_6f75_7063_6163; // "groupcac"

/// The low bits of a balanced ring's points and probes that are not compared: a point keeps
/// its peer's rank there instead. 12, enough for [`try_balanced`](Ring::try_balanced)'s
/// 2,232 peers; a ring of more peers (from [`balanced`](Ring::balanced), fewer points each)
/// takes as many more as its ranks need.
const OWNER_BITS: u32 = 12;
const _: () = assert!(MAX_BALANCED_PEERS <= 1 << OWNER_BITS);

/// How a ring places keys. Every node of a cluster must use the same kind: a node on another
/// kind is seen as a ring mismatch (`ring_mismatches` in [`ClusterStats`](crate::ClusterStats),
/// `groupcache_ring_mismatches_total`, and a warning naming both kinds).
///
/// Set with [`GroupcacheBuilder::ring`](crate::GroupcacheBuilder::ring) or the `{PREFIX}_RING`
/// variable (`golang` or `balanced`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RingKind {
    /// golang/groupcache's ring: crc32, `replicas` points per peer (50 by default). The
    /// default, and the only kind Go nodes know: a cluster with Go nodes must use it. Its
    /// balance worsens as the cluster grows: the busiest of 50 nodes owns about 1.6 times its
    /// fair share.
    #[default]
    Golang,
    /// A ring for clusters of this crate alone: xxh3, [`BALANCED_POINTS`] points per peer and
    /// two probes per key. The busiest node owns at most about 1.1 times its fair share from 3
    /// to 1,000 nodes; `replicas` does not apply to it.
    Balanced,
}

impl RingKind {
    /// The kind's name: `golang` or `balanced`, as `{PREFIX}_RING` takes it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Golang => "golang",
            Self::Balanced => "balanced",
        }
    }

    /// The kind named `name` (as [`name`](Self::name) spells it, in any case), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Golang, Self::Balanced]
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for RingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Checks the size of a golang ring of `peers` distinct peers with `replicas` points each: at
/// least one replica, at most [`MAX_REPLICAS`], and at most [`MAX_RING_POINTS`] points. Every
/// golang ring the cache builds passes here first.
pub(crate) fn check_size(peers: usize, replicas: usize) -> Result<(), ConfigError> {
    check_replicas(replicas)?;
    if peers.saturating_mul(replicas) > MAX_RING_POINTS {
        return Err(ConfigError::RingTooLarge { peers, replicas });
    }
    Ok(())
}

/// The bounds of `replicas` alone, whatever the ring.
pub(crate) fn check_replicas(replicas: usize) -> Result<(), ConfigError> {
    if replicas == 0 {
        return Err(ConfigError::ZeroReplicas);
    }
    if replicas > MAX_REPLICAS {
        return Err(ConfigError::TooManyReplicas(replicas));
    }
    Ok(())
}

/// The most peers on a balanced ring: [`MAX_RING_POINTS`] / [`BALANCED_POINTS`].
pub(crate) const MAX_BALANCED_PEERS: usize = MAX_RING_POINTS / BALANCED_POINTS;

/// A consistent-hash ring of peer URLs: golang/groupcache's by default, or the balanced one
/// ([`RingKind`]).
///
/// Building one costs a hash per point and a sort; looking up an owner is one crc32 of the
/// key and a binary search (golang's ring), or two xxh3 hashes and two look-ups in a bucket
/// index (the balanced ring). Peer URLs are compared as plain strings, as Go does: a trailing
/// `/` makes a different peer. The size of a ring is bounded by [`MAX_REPLICAS`] and
/// [`MAX_RING_POINTS`]: [`try_new`](Ring::try_new) refuses a larger one and
/// [`new`](Ring::new) builds it with fewer replicas.
#[derive(Clone)]
pub struct Ring {
    placement: Placement,
    peers: Vec<Arc<str>>,
    replicas: usize,
    fingerprint: u32,
    /// The fingerprint as it travels in a request header: 8 hex digits.
    fingerprint_header: http::HeaderValue,
}

#[derive(Clone)]
enum Placement {
    Golang {
        /// Sorted, distinct ring points.
        points: Vec<u32>,
        /// `owners[i]` is the index in `peers` of the peer that owns `points[i]`.
        owners: Vec<u32>,
    },
    Balanced(Balanced),
}

/// The balanced ring's points, sorted, with an index of where each bucket of the hash space
/// starts among them.
#[derive(Clone)]
struct Balanced {
    /// Sorted ring points, each packed with its peer: the point's top bits, and in the low
    /// bits (`mask`: [`OWNER_BITS`], or more past 4,096 peers) the rank of its peer's URL
    /// among the sorted URLs (so that a look-up reads one word, and two equal points sort by
    /// URL, the first winning). Then `u64::MAX`, which ends every scan.
    points: Vec<u64>,
    /// The low bits of a point that hold its peer's rank, and of a probe that are cleared.
    mask: u64,
    /// The number of ring points: `points` without its last entry.
    len: usize,
    /// `starts[b]` is the index of the first point at or above `b << shift`; one more entry
    /// than buckets, the last being `len`.
    starts: Vec<u32>,
    shift: u32,
    /// `owners[rank]` is the index in the ring's `peers` of the peer whose URL sorts `rank`th.
    owners: Vec<u32>,
}

impl Ring {
    /// Builds a golang ring with `replicas` points per peer, or fewer when that many would
    /// make the ring too large.
    ///
    /// Duplicate peers are kept once. A `replicas` of zero gives an empty ring, on which every
    /// key is local. A `replicas` above [`MAX_REPLICAS`], or one that would put more than
    /// [`MAX_RING_POINTS`] points on the ring, is lowered to the largest that fits (at least
    /// one point per peer), and [`replicas`](Ring::replicas) tells the number used. The ring
    /// then places keys differently from a node that uses the number asked for; its
    /// [`fingerprint`](Ring::fingerprint) differs too, so peers notice.
    ///
    /// It clamps rather than fails so that it can stay infallible, and so that no input
    /// panics, exhausts memory or blocks for minutes building points. Use
    /// [`try_new`](Ring::try_new) to be told instead, as the cache itself does.
    ///
    /// ```
    /// use tower_groupcache::{MAX_REPLICAS, Ring};
    ///
    /// let ring = Ring::new(usize::MAX, ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]);
    /// assert_eq!(ring.replicas(), MAX_REPLICAS);
    /// ```
    pub fn new<I, P>(replicas: usize, peers: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<str>,
    {
        let unique = distinct(peers);
        let replicas = if replicas == 0 {
            0
        } else {
            replicas
                .min(MAX_REPLICAS)
                .min(MAX_RING_POINTS / unique.len().max(1))
                .max(1)
        };
        Self::build(replicas, unique)
    }

    /// Builds a golang ring with `replicas` points per peer, or says why it cannot: `replicas`
    /// is 0 ([`ConfigError::ZeroReplicas`]) or above [`MAX_REPLICAS`]
    /// ([`ConfigError::TooManyReplicas`]), or the ring would have more than
    /// [`MAX_RING_POINTS`] points ([`ConfigError::RingTooLarge`]). Duplicate peers are kept
    /// once, and counted once.
    ///
    /// ```
    /// use tower_groupcache::{ConfigError, Ring};
    ///
    /// let peers = ["http://10.0.0.1:8080", "http://10.0.0.2:8080"];
    /// assert_eq!(Ring::try_new(50, peers)?.replicas(), 50);
    /// assert_eq!(
    ///     Ring::try_new(60_000, peers).unwrap_err(),
    ///     ConfigError::TooManyReplicas(60_000)
    /// );
    /// # Ok::<(), ConfigError>(())
    /// ```
    pub fn try_new<I, P>(replicas: usize, peers: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<str>,
    {
        let unique = distinct(peers);
        check_size(unique.len(), replicas)?;
        Ok(Self::build(replicas, unique))
    }

    /// Builds a balanced ring ([`RingKind::Balanced`]) of `peers`, with [`BALANCED_POINTS`]
    /// points each, or fewer when more than [`MAX_RING_POINTS`] points would be needed (past
    /// 2,232 peers); [`replicas`](Ring::replicas) tells the number used. Duplicate peers are
    /// kept once; no peers give an empty ring.
    ///
    /// ```
    /// use tower_groupcache::{Ring, RingKind};
    ///
    /// let ring = Ring::balanced(["http://10.0.0.1:8080", "http://10.0.0.2:8080"]);
    /// assert_eq!(ring.kind(), RingKind::Balanced);
    /// let owner = ring.owner("user:12345").unwrap();
    /// assert!(owner.starts_with("http://10.0.0."));
    /// ```
    pub fn balanced<I, P>(peers: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<str>,
    {
        let unique = distinct(peers);
        let points = BALANCED_POINTS
            .min(MAX_RING_POINTS / unique.len().max(1))
            .max(1);
        Self::build_balanced(points, unique)
    }

    /// Builds a balanced ring as [`balanced`](Ring::balanced) does, or refuses more than
    /// 2,232 distinct peers ([`ConfigError::TooManyPeers`]).
    pub fn try_balanced<I, P>(peers: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<str>,
    {
        let unique = distinct(peers);
        if unique.len() > MAX_BALANCED_PEERS {
            return Err(ConfigError::TooManyPeers {
                peers: unique.len(),
                max: MAX_BALANCED_PEERS,
            });
        }
        Ok(Self::build_balanced(BALANCED_POINTS, unique))
    }

    /// The ring of a cache's settings: `kind`, and `replicas` (checked whatever the kind, used
    /// by golang's ring only).
    pub(crate) fn for_config<P: AsRef<str>>(
        kind: RingKind,
        replicas: usize,
        peers: &[P],
    ) -> Result<Self, ConfigError> {
        match kind {
            RingKind::Golang => Self::try_new(replicas, peers),
            RingKind::Balanced => {
                check_replicas(replicas)?;
                Self::try_balanced(peers)
            }
        }
    }

    /// The golang ring of `unique` peers with `replicas` points each; the size was checked or
    /// clamped by the caller.
    fn build(replicas: usize, unique: Vec<Arc<str>>) -> Self {
        // (point, insertion order, peer index); sorting by (point, order) puts the point
        // inserted last at the end of each run of equal points, and that one wins, as in Go's
        // `hashMap[hash] = key`.
        let mut all: Vec<(u32, u32, u32)> =
            Vec::with_capacity(unique.len().saturating_mul(replicas));
        let mut label = String::new();
        for (peer_index, peer) in unique.iter().enumerate() {
            for i in 0..replicas {
                use std::fmt::Write as _;
                label.clear();
                let _ = write!(label, "{i}{peer}");
                let order = (peer_index * replicas + i) as u32;
                all.push((crc32fast::hash(label.as_bytes()), order, peer_index as u32));
            }
        }
        all.sort_unstable_by_key(|&(point, order, _)| (point, order));

        let mut points = Vec::with_capacity(all.len());
        let mut owners = Vec::with_capacity(all.len());
        // The points where two peers collide: the order of the peers decides who wins them.
        let mut collided = Vec::new();
        for (point, _, peer_index) in all {
            if points.last() == Some(&point) {
                *owners.last_mut().expect("owners grows with points") = peer_index;
                if collided.last() != Some(&point) {
                    collided.push(point);
                }
            } else {
                points.push(point);
                owners.push(peer_index);
            }
        }

        // The peer set, blind to its order, which matters only on a collision: then each
        // collided point's winner too. Without one (nearly always) the text is the one of
        // earlier versions, so that they agree during a rolling upgrade.
        let sorted = sorted_peers(&unique);
        let mut text = format!("{replicas}\n{}", sorted.join("\n"));
        if !collided.is_empty() {
            // Each winner by its place among the sorted peers, not by its URL: two URLs whose
            // points collide have the same crc32 after the same prefix.
            text.push('\n');
            for point in collided {
                use std::fmt::Write as _;
                if let Ok(at) = points.binary_search(&point) {
                    let winner = &*unique[owners[at] as usize];
                    let rank = sorted.binary_search(&winner).unwrap_or(usize::MAX);
                    let _ = write!(text, "\n{point:08x} {rank}");
                }
            }
        }
        let fingerprint = crc32fast::hash(text.as_bytes());
        Self::assemble(
            Placement::Golang { points, owners },
            unique,
            replicas,
            fingerprint,
        )
    }

    /// The balanced ring of `unique` peers with `per_peer` points each (at least 1); the size
    /// was checked or clamped by the caller.
    fn build_balanced(per_peer: usize, unique: Vec<Arc<str>>) -> Self {
        let balanced = Balanced::build(per_peer, &unique);
        // A prefix no golang fingerprint's text starts with (those start with a digit), so
        // the kinds never share a fingerprint for the same peers but by a crc32 collision.
        let fingerprint = crc32fast::hash(
            format!(
                "balanced/{per_peer}/{BALANCED_PROBES}/{}\n{}",
                balanced.mask.count_zeros(),
                sorted_peers(&unique).join("\n")
            )
            .as_bytes(),
        );
        Self::assemble(Placement::Balanced(balanced), unique, per_peer, fingerprint)
    }

    fn assemble(
        placement: Placement,
        peers: Vec<Arc<str>>,
        replicas: usize,
        fingerprint: u32,
    ) -> Self {
        Self {
            placement,
            peers,
            replicas,
            fingerprint,
            fingerprint_header: http::HeaderValue::from_str(&format!("{fingerprint:08x}"))
                .expect("hex digits are a valid header value"),
        }
    }

    /// The peer that owns `key`, or `None` when the ring is empty.
    pub fn owner(&self, key: &str) -> Option<&str> {
        self.owner_index(key).map(|i| &*self.peers[i])
    }

    pub(crate) fn owner_arc(&self, key: &str) -> Option<&Arc<str>> {
        self.owner_index(key).map(|i| &self.peers[i])
    }

    fn owner_index(&self, key: &str) -> Option<usize> {
        match &self.placement {
            Placement::Golang { points, owners } => {
                if points.is_empty() {
                    return None;
                }
                let hash = crc32fast::hash(key.as_bytes());
                let idx = points.partition_point(|&p| p < hash);
                let idx = if idx == points.len() { 0 } else { idx };
                Some(owners[idx] as usize)
            }
            Placement::Balanced(balanced) => balanced.owner(key.as_bytes()),
        }
    }

    /// How the ring places keys.
    pub fn kind(&self) -> RingKind {
        match self.placement {
            Placement::Golang { .. } => RingKind::Golang,
            Placement::Balanced(_) => RingKind::Balanced,
        }
    }

    /// The peers on the ring, in the order they were given, without duplicates.
    pub fn peers(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.peers.iter().map(|p| &**p)
    }

    /// The number of points per peer: `replicas` on golang's ring, [`BALANCED_POINTS`] on the
    /// balanced one (fewer past 2,232 peers, on a ring built by [`balanced`](Ring::balanced)).
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// The number of points on the ring (fewer than peers × [`replicas`](Ring::replicas) on
    /// golang's ring when points collide).
    pub fn points(&self) -> usize {
        match &self.placement {
            Placement::Golang { points, .. } => points.len(),
            Placement::Balanced(balanced) => balanced.len,
        }
    }

    /// Each peer's share of the keys, in the order of [`peers`](Ring::peers): the fraction of
    /// the key-hash space it owns, computed exactly from the lengths of the ring's arcs (on
    /// the balanced ring, from the chance that each arc's point is the nearer of a key's two
    /// probes), not from sampled keys. The shares add up to 1 (all 0 on an empty ring); a
    /// perfectly balanced ring of `n` peers gives each `1 / n`.
    ///
    /// ```
    /// use tower_groupcache::Ring;
    ///
    /// let peers: Vec<String> = (0..50).map(|i| format!("http://10.0.0.{i}:8080")).collect();
    /// let busiest = |ring: &Ring| ring.ownership().into_iter().fold(0.0, f64::max) * 50.0;
    /// assert!(busiest(&Ring::balanced(&peers)) < 1.15);
    /// assert!(busiest(&Ring::new(50, &peers)) > 1.2);
    /// ```
    pub fn ownership(&self) -> Vec<f64> {
        let mut shares = vec![0.0; self.peers.len()];
        match &self.placement {
            Placement::Golang { points, owners } => {
                let whole = 2f64.powi(32);
                for (i, (&point, &owner)) in points.iter().zip(owners).enumerate() {
                    let previous = points[if i == 0 { points.len() - 1 } else { i - 1 }];
                    let arc = match point.wrapping_sub(previous) {
                        0 => whole,
                        arc => f64::from(arc),
                    };
                    shares[owner as usize] += arc / whole;
                }
            }
            Placement::Balanced(balanced) => balanced.ownership(&mut shares),
        }
        shares
    }

    /// A short hash of the ring's kind, its peer set and its points per peer (and, on
    /// golang's ring, which peer wins each point where two collide, the one place where the
    /// order of the peers matters): two nodes with the same fingerprint place every key the
    /// same way. Peer requests carry it so that nodes
    /// with different peer lists, or on different kinds of ring, notice. A golang ring's
    /// fingerprint is the one earlier versions of this crate computed.
    pub fn fingerprint(&self) -> u32 {
        self.fingerprint
    }

    pub(crate) fn fingerprint_header(&self) -> &http::HeaderValue {
        &self.fingerprint_header
    }

    /// Whether the ring has no peers (or, on golang's ring, no points).
    pub fn is_empty(&self) -> bool {
        self.points() == 0
    }
}

/// The peers sorted: what a fingerprint covers, joined by newlines.
fn sorted_peers(unique: &[Arc<str>]) -> Vec<&str> {
    let mut sorted: Vec<&str> = unique.iter().map(|p| &**p).collect();
    sorted.sort_unstable();
    sorted
}

impl Balanced {
    fn build(per_peer: usize, peers: &[Arc<str>]) -> Self {
        let total = peers.len() * per_peer;
        // 2^bits buckets, at least half as many as points: one or two points per bucket.
        let bits = (total.max(4).next_power_of_two().trailing_zeros() - 1).min(32);
        let shift = 64 - bits;
        let buckets = 1usize << bits;
        // Ranks by URL: a point carries its peer's rank, so that equal points sort by URL
        // and the ring does not depend on the order the peers were given in.
        let mut owners: Vec<u32> = (0..peers.len() as u32).collect();
        owners.sort_unstable_by(|&a, &b| peers[a as usize].cmp(&peers[b as usize]));
        let rank_bits = usize::BITS - peers.len().saturating_sub(1).leading_zeros();
        let mask = (1u64 << OWNER_BITS.max(rank_bits)) - 1;
        // The URL is hashed once; its points are hashes of that digest, each with its own
        // seed: two short hashes per point rather than one of the whole URL.
        let digests: Vec<[u8; 16]> = owners
            .iter()
            .map(|&peer| xxh3_128(peers[peer as usize].as_bytes()).to_le_bytes())
            .collect();
        // A counting sort in two passes, each of which writes to few places at a time: by
        // the top (at most) 8 bits of the points, then, within each of those ranges, by
        // bucket, with an insertion sort within each bucket (a point or two).
        let coarse_bits = bits.min(8);
        let coarse_shift = 64 - coarse_bits;
        let mut coarse = vec![0usize; (1 << coarse_bits) + 1];
        // The points are hashed twice, to count and then to place them: a short hash costs
        // less than writing and reading back a list of every point (and its page faults).
        for digest in &digests {
            for i in 0..per_peer as u64 {
                let point = xxh3_64_with_seed(digest, i);
                coarse[(point >> coarse_shift) as usize + 1] += 1;
            }
        }
        for c in 1..coarse.len() {
            coarse[c] += coarse[c - 1];
        }
        // Placed by coarse range in the ring's own array, then each range sorted in place
        // through a small copy of it: no second list of every point.
        let mut points = vec![0u64; total + 1];
        points[total] = u64::MAX;
        let mut fill = coarse.clone();
        for (rank, digest) in digests.iter().enumerate() {
            for i in 0..per_peer as u64 {
                let point = xxh3_64_with_seed(digest, i);
                let c = (point >> coarse_shift) as usize;
                points[fill[c]] = (point & !mask) | rank as u64;
                fill[c] += 1;
            }
        }
        let mut starts = vec![0u32; buckets + 1];
        let mut range: Vec<u64> = Vec::new();
        let sub_buckets = 1usize << (bits - coarse_bits);
        let mut sub_starts = vec![0u32; sub_buckets + 1];
        let mut sub_ends = vec![0u32; sub_buckets];
        for c in 0..1usize << coarse_bits {
            let (begin, end) = (coarse[c], coarse[c + 1]);
            range.clear();
            range.extend_from_slice(&points[begin..end]);
            sub_starts.fill(0);
            for &point in &range {
                sub_starts[((point >> shift) as usize & (sub_buckets - 1)) + 1] += 1;
            }
            for k in 1..=sub_buckets {
                sub_starts[k] += sub_starts[k - 1];
            }
            for k in 0..sub_buckets {
                starts[c * sub_buckets + k] = (begin as u32) + sub_starts[k];
            }
            sub_ends.copy_from_slice(&sub_starts[..sub_buckets]);
            for &point in &range {
                let k = (point >> shift) as usize & (sub_buckets - 1);
                let start = begin + sub_starts[k] as usize;
                let mut at = begin + sub_ends[k] as usize;
                sub_ends[k] += 1;
                while at > start && points[at - 1] > point {
                    points[at] = points[at - 1];
                    at -= 1;
                }
                points[at] = point;
            }
        }
        starts[buckets] = total as u32;
        Self {
            points,
            mask,
            len: total,
            starts,
            shift,
            owners,
        }
    }

    /// The index of the first point at or after `probe` (whose `mask` bits are 0), wrapping
    /// to the first point.
    #[inline]
    fn successor(&self, probe: u64) -> usize {
        let points = &self.points;
        // The first point of `probe`'s bucket, or of the next bucket with a point: at or
        // before the successor. A bucket holds a point or two: two steps without a branch
        // (a mispredicted one costs more than the whole look-up), then a loop that seldom
        // runs. A packed point is below `probe` exactly when its point is, as `probe` has no
        // owner bits; the `u64::MAX` at the end stops every scan.
        let mut i = self.starts[(probe >> self.shift) as usize] as usize;
        i += usize::from(points[i] < probe);
        i += usize::from(points[i] < probe);
        while points[i] < probe {
            i += 1;
        }
        if i == self.len { 0 } else { i }
    }

    fn owner(&self, key: &[u8]) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        // Every probe is hashed before any is looked up, so that their memory reads overlap.
        let first = xxh3_64(key);
        let mut probes = [first; BALANCED_PROBES as usize];
        for (n, probe) in probes.iter_mut().enumerate().skip(1) {
            *probe = xxh3_64_with_seed(&first.to_le_bytes(), PROBE_SEED + n as u64 - 1);
        }
        let probes = probes.map(|probe| probe & !self.mask);
        let successors = probes.map(|probe| self.successor(probe));
        // (distance to the successor, its index): the nearest wins, a tie the lower index.
        let nearest = probes
            .iter()
            .zip(successors)
            .map(|(&probe, i)| {
                let distance = (self.points[i] & !self.mask).wrapping_sub(probe);
                (u128::from(distance) << 64) | i as u128
            })
            .min()
            .expect("at least one probe");
        let rank = self.points[nearest as u64 as usize] & self.mask;
        Some(self.owners[rank as usize] as usize)
    }

    /// Adds each point's share to its owner's. A key's probes are independent and uniform;
    /// one at distance `t` before a point has that point as successor, so the density of "a
    /// probe lands at distance `t` before one of peer p's points" is the number `c_p(t)` of
    /// p's arcs longer than `t`, and the chance that a probe's distance exceeds `t` is
    /// `S(t) = Σ (len − t)⁺` over all arcs. The key goes to the nearest of `k` probes, so
    /// `share(p) = k ∫ c_p(t) S(t)^(k−1) dt`. Between two consecutive arc lengths `S` is linear
    /// (`A − m·t`, `m` arcs still longer), and the integral of one arc over that stretch is
    /// `(S(t₀)^k − S(t₁)^k) / m`. (Probes and points are truncated to 52 bits, so the shares
    /// are exact to about 2⁻⁵² of the ring; fewer bits past 4,096 peers.)
    fn ownership(&self, shares: &mut [f64]) {
        let len = self.len;
        if len == 0 {
            return;
        }
        let whole = 2f64.powi(64);
        let mut arcs: Vec<(f64, u32)> = (0..len)
            .map(|i| {
                let previous = self.points[if i == 0 { len - 1 } else { i - 1 }] & !self.mask;
                let arc = match (self.points[i] & !self.mask).wrapping_sub(previous) {
                    0 if len == 1 => whole,
                    arc => arc as f64,
                };
                let rank = self.points[i] & self.mask;
                (arc / whole, self.owners[rank as usize])
            })
            .collect();
        arcs.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let k = BALANCED_PROBES as i32;
        let mut longer_sum: f64 = arcs.iter().map(|a| a.0).sum();
        let mut longer = len as f64;
        let mut t0 = 0.0;
        let mut below = 0.0;
        for &(arc, owner) in &arcs {
            let s0 = (longer_sum - longer * t0).max(0.0);
            let s1 = (longer_sum - longer * arc).max(0.0);
            below += (s0.powi(k) - s1.powi(k)) / longer;
            shares[owner as usize] += below;
            longer_sum -= arc;
            longer -= 1.0;
            t0 = arc;
        }
    }
}

/// The peers in the order given, each once. A set, not a scan of the list: a list of many
/// peers costs time in proportion to its length.
fn distinct<I, P>(peers: I) -> Vec<Arc<str>>
where
    I: IntoIterator<Item = P>,
    P: AsRef<str>,
{
    let mut seen: FxHashSet<Arc<str>> = FxHashSet::default();
    let mut unique: Vec<Arc<str>> = Vec::new();
    for peer in peers {
        let peer = peer.as_ref();
        if !seen.contains(peer) {
            let peer: Arc<str> = peer.into();
            seen.insert(peer.clone());
            unique.push(peer);
        }
    }
    unique
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("kind", &self.kind())
            .field("peers", &self.peers)
            .field("replicas", &self.replicas)
            .field("points", &self.points())
            .field("fingerprint", &format_args!("{:08x}", self.fingerprint))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEERS: [&str; 3] = [
        "http://127.0.0.1:9101",
        "http://127.0.0.1:9102",
        "http://127.0.0.1:9103",
    ];

    impl Ring {
        /// A golang ring's points and their owners.
        fn golang(&self) -> (&[u32], &[u32]) {
            match &self.placement {
                Placement::Golang { points, owners } => (points, owners),
                Placement::Balanced(_) => panic!("a balanced ring"),
            }
        }
    }

    #[test]
    fn matches_golang_test_vectors() {
        let ring = Ring::new(50, PEERS);
        assert_eq!(ring.golang().0.len(), 150);
        let cases = [
            ("user:12345", 0x710e5fad, 68, 0x72844ee7, PEERS[1]),
            ("user:67890", 0x3d6116ac, 38, 0x3ef30579, PEERS[0]),
            ("user:11111", 0x1a251471, 17, 0x1b4f18d5, PEERS[2]),
            ("a", 0xe8b7be43, 135, 0xe9ab05a0, PEERS[1]),
            ("", 0x00000000, 0, 0x00751467, PEERS[1]),
        ];
        for (key, crc, idx, point, owner) in cases {
            assert_eq!(crc32fast::hash(key.as_bytes()), crc, "crc of {key:?}");
            assert_eq!(
                ring.golang().0.partition_point(|&p| p < crc),
                idx,
                "index of {key:?}"
            );
            assert_eq!(ring.golang().0[idx], point, "point of {key:?}");
            assert_eq!(ring.owner(key), Some(owner), "owner of {key:?}");
        }
    }

    #[test]
    fn matches_golang_checkpoints() {
        assert_eq!(crc32fast::hash(b"0http://127.0.0.1:9101"), 0x87b02379);
        let ring = Ring::new(50, PEERS);
        assert_eq!((ring.golang().0[0], ring.golang().1[0]), (0x00751467, 1));
        assert_eq!((ring.golang().0[1], ring.golang().1[1]), (0x01971dcc, 2));
        assert_eq!((ring.golang().0[2], ring.golang().1[2]), (0x02530e9a, 0));
        assert_eq!(
            (ring.golang().0[149], ring.golang().1[149]),
            (0xff3dc958, 2)
        );
    }

    #[test]
    fn wraps_past_the_last_point() {
        let ring = Ring::new(50, PEERS);
        // A hash above ring[149] = 0xff3dc958 wraps to ring[0], owned by 9102.
        let key = (0..100_000)
            .map(|i| format!("k{i}"))
            .find(|k| crc32fast::hash(k.as_bytes()) > 0xff3dc958)
            .expect("some key hashes past the last point");
        assert_eq!(ring.owner(&key), Some(PEERS[1]));
    }

    #[test]
    fn later_peer_wins_a_collision() {
        // crc32("0pa02552f76dbdf5fd") == crc32("0p670009b22c087272") == 0x414f4705.
        let (first, second) = ("pa02552f76dbdf5fd", "p670009b22c087272");
        assert_eq!(crc32fast::hash(format!("0{first}").as_bytes()), 0x414f4705);
        assert_eq!(crc32fast::hash(format!("0{second}").as_bytes()), 0x414f4705);
        let key_on_point = Ring::new(1, [first, second]);
        assert_eq!(key_on_point.golang().0.len(), 1);
        assert_eq!(key_on_point.owner("x"), Some(second));
        let reversed = Ring::new(1, [second, first]);
        assert_eq!(reversed.owner("x"), Some(first));
    }

    #[test]
    fn a_fingerprint_tells_apart_rings_whose_collisions_go_to_different_peers() {
        // The pair of `later_peer_wins_a_collision`: one point, won by the peer added later.
        let (first, second) = ("pa02552f76dbdf5fd", "p670009b22c087272");
        let forward = Ring::new(1, [first, second]);
        let reversed = Ring::new(1, [second, first]);
        assert_ne!(forward.owner("x"), reversed.owner("x"));
        assert_ne!(forward.fingerprint(), reversed.fingerprint());
        // Without a collision the order changes nothing, and the fingerprint is the one of
        // earlier versions: the replica count and the sorted peers.
        let ring = Ring::new(50, [PEERS[2], PEERS[0], PEERS[1]]);
        let mut sorted = PEERS.to_vec();
        sorted.sort_unstable();
        assert_eq!(
            ring.fingerprint(),
            crc32fast::hash(format!("50\n{}", sorted.join("\n")).as_bytes())
        );
    }

    #[test]
    fn fingerprint_follows_the_peer_set_not_its_order() {
        let a = Ring::new(50, PEERS);
        let b = Ring::new(50, [PEERS[2], PEERS[0], PEERS[1]]);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), Ring::new(50, &PEERS[..2]).fingerprint());
        assert_ne!(a.fingerprint(), Ring::new(51, PEERS).fingerprint());
    }

    #[test]
    fn empty_ring_has_no_owner() {
        let ring = Ring::new(50, Vec::<&str>::new());
        assert!(ring.is_empty());
        assert_eq!(ring.owner("x"), None);
        assert_eq!(Ring::new(0, PEERS).owner("x"), None);
    }

    #[test]
    fn huge_replica_counts_are_clamped() {
        for replicas in [usize::MAX, 1 << 40, 10_000_000] {
            let ring = Ring::new(replicas, PEERS);
            assert_eq!(ring.replicas(), 10_000, "{replicas}");
            assert!(ring.golang().0.len() > 29_900, "{}", ring.golang().0.len());
            assert!(ring.owner("k").is_some());
        }
        let many: Vec<String> = (0..300).map(|i| format!("http://p{i}:1")).collect();
        let ring = Ring::new(10_000, &many);
        assert_eq!(ring.replicas(), 1_000_000 / 300);
        assert!(ring.golang().0.len() <= MAX_RING_POINTS);
        // More peers than points: one point each.
        let crowd: Vec<String> = (0..MAX_RING_POINTS + 1)
            .map(|i| format!("http://p{i}:1"))
            .collect();
        assert_eq!(Ring::new(50, &crowd).replicas(), 1);
        assert_eq!(Ring::new(0, PEERS).replicas(), 0);
    }

    #[test]
    fn try_new_refuses_what_new_would_clamp() {
        assert_eq!(
            Ring::try_new(0, PEERS).unwrap_err(),
            ConfigError::ZeroReplicas
        );
        assert_eq!(
            Ring::try_new(usize::MAX, PEERS).unwrap_err(),
            ConfigError::TooManyReplicas(usize::MAX)
        );
        let many: Vec<String> = (0..101).map(|i| format!("http://p{i}:1")).collect();
        assert_eq!(
            Ring::try_new(MAX_REPLICAS, &many).unwrap_err(),
            ConfigError::RingTooLarge {
                peers: 101,
                replicas: MAX_REPLICAS
            }
        );
        // Ten distinct peers, however often each is listed, fit.
        let repeated: Vec<&String> = many[..10].iter().cycle().take(1_000).collect();
        let ring = Ring::try_new(MAX_REPLICAS, repeated).unwrap();
        assert_eq!(ring.peers().len(), 10);
        assert_eq!(
            ring.fingerprint(),
            Ring::new(MAX_REPLICAS, &many[..10]).fingerprint()
        );
    }

    #[test]
    fn adding_a_peer_moves_about_a_quarter_of_keys() {
        let three = Ring::new(50, PEERS);
        let mut four_peers = PEERS.to_vec();
        four_peers.push("http://127.0.0.1:9104");
        let four = Ring::new(50, four_peers);
        let mut moved = 0;
        for i in 0..10_000 {
            let key = format!("key-{i}");
            let (before, after) = (three.owner(&key), four.owner(&key));
            if before != after {
                // A key only ever moves to the new peer.
                assert_eq!(after, Some("http://127.0.0.1:9104"));
                moved += 1;
            }
        }
        assert!((1_500..=3_500).contains(&moved), "moved {moved} of 10000");
    }

    fn statefulset(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("http://cache-{i}.cache.prod.svc.cluster.local:8080"))
            .collect()
    }

    #[test]
    fn balanced_owners_do_not_depend_on_peer_order() {
        let peers = statefulset(20);
        let mut shuffled = peers.clone();
        shuffled.reverse();
        shuffled.swap(3, 11);
        let (a, b) = (Ring::balanced(&peers), Ring::balanced(&shuffled));
        assert_eq!(a.fingerprint(), b.fingerprint());
        for i in 0..5_000 {
            let key = format!("key-{i}");
            assert_eq!(a.owner(&key), b.owner(&key), "{key}");
        }
    }

    #[test]
    fn balanced_owner_is_one_of_the_peers() {
        let peers = statefulset(7);
        let ring = Ring::balanced(&peers);
        assert_eq!(ring.kind(), RingKind::Balanced);
        assert_eq!(ring.replicas(), BALANCED_POINTS);
        assert_eq!(ring.points(), 7 * BALANCED_POINTS);
        let mut seen = FxHashSet::default();
        for i in 0..10_000 {
            let owner = ring.owner(&format!("user:{i}")).unwrap();
            assert!(peers.iter().any(|p| p == owner), "{owner}");
            seen.insert(owner.to_owned());
        }
        assert_eq!(seen.len(), 7, "every peer owns some keys");
        assert_eq!(ring.owner(""), ring.owner(""));
        let one = Ring::balanced(["http://only:1"]);
        assert_eq!(one.owner("anything"), Some("http://only:1"));
        assert!((one.ownership()[0] - 1.0).abs() < 1e-9);
        let empty = Ring::balanced(Vec::<String>::new());
        assert!(empty.is_empty());
        assert_eq!(empty.owner("x"), None);
    }

    #[test]
    fn balanced_ring_moves_only_the_keys_of_the_peer_that_leaves_or_joins() {
        let peers = statefulset(12);
        let full = Ring::balanced(&peers);
        let gone = &peers[5];
        let without = Ring::balanced(peers.iter().filter(|p| *p != gone));
        let (mut moved, keys) = (0, 20_000);
        for i in 0..keys {
            let key = format!("user:{i}");
            let (before, after) = (full.owner(&key).unwrap(), without.owner(&key).unwrap());
            if before != after {
                // Removed: only the leaver's keys move. Read backwards, a join moves keys only
                // to the peer that joins.
                assert_eq!(before, gone, "{key} moved from {before} to {after}");
                moved += 1;
            } else {
                assert_ne!(before, gone);
            }
        }
        // Its share of the keys, close to the ideal 1/12.
        let share = full.ownership()[5];
        let expected = share * f64::from(keys);
        assert!(
            (f64::from(moved) - expected).abs() < 4.0 * expected.sqrt() + 10.0,
            "{moved} vs {expected}"
        );
        assert!((share * 12.0 - 1.0).abs() < 0.15, "{share}");
    }

    #[test]
    fn balanced_ownership_is_exact_and_even() {
        let peers = statefulset(50);
        let ring = Ring::balanced(&peers);
        let shares = ring.ownership();
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        let busiest = shares.iter().copied().fold(0.0, f64::max) * 50.0;
        assert!(busiest <= 1.10, "busiest {busiest}");
        // Sampled keys agree with the computed shares.
        let mut counts = [0u32; 50];
        let index: rustc_hash::FxHashMap<&str, usize> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| (p.as_str(), i))
            .collect();
        let samples = 200_000;
        for i in 0..samples {
            counts[index[ring.owner(&format!("s{i}")).unwrap()]] += 1;
        }
        for (count, share) in counts.iter().zip(&shares) {
            let expected = share * f64::from(samples);
            assert!(
                (f64::from(*count) - expected).abs() < 5.0 * expected.sqrt(),
                "{count} vs {expected}"
            );
        }
        // golang's ring, by the same measure.
        let golang = Ring::new(50, &peers).ownership();
        assert!((golang.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(golang.iter().copied().fold(0.0, f64::max) * 50.0 > 1.2);
    }

    #[test]
    fn balanced_placement_is_pinned() {
        // Nodes of different versions must place keys alike: these owners and this
        // fingerprint may never change.
        let ring = Ring::balanced(PEERS);
        let owners: Vec<&str> = ["user:12345", "user:67890", "user:11111", "a", ""]
            .iter()
            .map(|k| ring.owner(k).unwrap())
            .collect();
        let Placement::Balanced(balanced) = &ring.placement else {
            unreachable!()
        };
        let mut counts = [0u32; 3];
        for i in 0..10_000 {
            let owner = ring.owner(&format!("k{i}")).unwrap();
            counts[PEERS.iter().position(|p| *p == owner).unwrap()] += 1;
        }
        assert_eq!(xxh3_64(b"user:12345"), 0xee6d_dce9_0ffe_e5b3);
        // The points are the same xxh3 hashes as ever, their low 12 bits replaced by the
        // rank of their peer's URL.
        assert_eq!(balanced.points[0], 0x0012_a189_6c3b_7000 | 2);
        assert_eq!(balanced.points[balanced.len - 1], 0xffff_89a9_020e_4000 | 1);
        assert_eq!(balanced.points[balanced.len], u64::MAX);
        assert_eq!(counts, [3351, 3281, 3368]);
        assert_eq!(owners, PINNED_OWNERS);
        assert_eq!(ring.fingerprint(), PINNED_FINGERPRINT);
        // golang's fingerprint is the one earlier versions computed: crc32 of
        // "50\n" and the sorted URLs joined by "\n".
        assert_eq!(Ring::new(50, PEERS).fingerprint(), 0xadfd_dbe4);
        assert_ne!(ring.fingerprint(), Ring::new(50, PEERS).fingerprint());
        assert_ne!(
            ring.fingerprint(),
            Ring::new(BALANCED_POINTS, PEERS).fingerprint()
        );
    }

    const PINNED_OWNERS: [&str; 5] = [PEERS[1], PEERS[0], PEERS[2], PEERS[2], PEERS[2]];
    const PINNED_FINGERPRINT: u32 = 0x1fdc_7c07;

    #[test]
    fn balanced_ring_of_more_peers_than_owner_bits_hold_places_keys_on_all_of_them() {
        // `Ring::balanced` takes any number of peers, with fewer points each past 2,232: a
        // peer's rank must still fit beside its points.
        let peers = statefulset(5_000);
        let ring = Ring::balanced(&peers);
        assert_eq!(ring.replicas(), MAX_RING_POINTS / 5_000);
        let shares = ring.ownership();
        assert!(
            shares.iter().all(|&share| share > 0.0),
            "{} of 5,000 peers own nothing",
            shares.iter().filter(|&&share| share == 0.0).count()
        );
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        let mut owners = FxHashSet::default();
        for i in 0..200_000 {
            owners.insert(ring.owner(&format!("k{i}")).unwrap().to_owned());
        }
        assert!(owners.len() > 4_900, "{} owners", owners.len());
    }

    #[test]
    fn balanced_ring_size_is_bounded() {
        let crowd = statefulset(MAX_BALANCED_PEERS + 1);
        assert_eq!(
            Ring::try_balanced(&crowd).unwrap_err(),
            ConfigError::TooManyPeers {
                peers: MAX_BALANCED_PEERS + 1,
                max: MAX_BALANCED_PEERS
            }
        );
        assert_eq!(
            Ring::for_config(RingKind::Balanced, 0, &PEERS).unwrap_err(),
            ConfigError::ZeroReplicas
        );
        assert_eq!(MAX_BALANCED_PEERS, 2_232);
        assert_eq!(
            RingKind::from_name(" Balanced".trim()),
            Some(RingKind::Balanced)
        );
        assert_eq!(RingKind::from_name("GOLANG"), Some(RingKind::Golang));
        assert_eq!(RingKind::from_name("jump"), None);
        assert_eq!(RingKind::default(), RingKind::Golang);
    }
}
