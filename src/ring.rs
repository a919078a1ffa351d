//! The consistent-hash ring that gives every key one owner.
//!
//! It places keys exactly as golang/groupcache's `consistenthash` package does with its
//! defaults, so nodes of this crate and Go nodes agree on every owner: each peer gets
//! `replicas` points at `crc32_ieee(i.to_string() + peer)` for `i` in `0..replicas`; a key
//! belongs to the first point at or after `crc32_ieee(key)`, wrapping to the first point; when
//! two points collide, the peer added later wins.
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

use crate::error::ConfigError;

/// The most ring points per peer a cache accepts: 10,000 (golang/groupcache uses 50).
///
/// [`GroupcacheBuilder::build`](crate::GroupcacheBuilder::build) and
/// [`Groupcache::set_peers`](crate::Groupcache::set_peers) refuse more with
/// [`ConfigError::TooManyReplicas`].
pub const MAX_REPLICAS: usize = 10_000;

/// The most points on a ring, peers × replicas: 100,000 (2,000 peers at 50 replicas).
///
/// Building a ring costs a crc32 and a sort per point. A ring of 100,000 points builds in
/// 0.27–0.45 s in a debug build on the project's 2-core machine while other builds run;
/// [`GroupcacheBuilder::build`](crate::GroupcacheBuilder::build) and
/// [`Groupcache::set_peers`](crate::Groupcache::set_peers) refuse larger rings with
/// [`ConfigError::RingTooLarge`].
pub const MAX_RING_POINTS: usize = 100_000;

/// Checks the size of a ring of `peers` distinct peers with `replicas` points each: at least
/// one replica, at most [`MAX_REPLICAS`], and at most [`MAX_RING_POINTS`] points. Every ring
/// the cache builds passes here first.
pub(crate) fn check_size(peers: usize, replicas: usize) -> Result<(), ConfigError> {
    if replicas == 0 {
        return Err(ConfigError::ZeroReplicas);
    }
    if replicas > MAX_REPLICAS {
        return Err(ConfigError::TooManyReplicas(replicas));
    }
    if peers.saturating_mul(replicas) > MAX_RING_POINTS {
        return Err(ConfigError::RingTooLarge { peers, replicas });
    }
    Ok(())
}

/// A consistent-hash ring of peer URLs, compatible with golang/groupcache.
///
/// Building one costs `peers * replicas` hashes and a sort; looking up an owner is one crc32
/// of the key and a binary search. Peer URLs are compared as plain strings, as Go does: a
/// trailing `/` makes a different peer. The size of a ring is bounded by [`MAX_REPLICAS`]
/// and [`MAX_RING_POINTS`]: [`try_new`](Ring::try_new) refuses a larger one and
/// [`new`](Ring::new) builds it with fewer replicas.
#[derive(Clone)]
pub struct Ring {
    /// Sorted, distinct ring points.
    points: Vec<u32>,
    /// `owners[i]` is the index in `peers` of the peer that owns `points[i]`.
    owners: Vec<u32>,
    peers: Vec<Arc<str>>,
    replicas: usize,
    fingerprint: u32,
    /// The fingerprint as it travels in a request header: 8 hex digits.
    fingerprint_header: http::HeaderValue,
}

impl Ring {
    /// Builds a ring with `replicas` points per peer, or fewer when that many would make the
    /// ring too large.
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

    /// Builds a ring with `replicas` points per peer, or says why it cannot: `replicas` is 0
    /// ([`ConfigError::ZeroReplicas`]) or above [`MAX_REPLICAS`]
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

    /// The ring of `unique` peers with `replicas` points each; the size was checked or
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
        for (point, _, peer_index) in all {
            if points.last() == Some(&point) {
                *owners.last_mut().expect("owners grows with points") = peer_index;
            } else {
                points.push(point);
                owners.push(peer_index);
            }
        }

        // Order-blind: peer order only matters on a point collision.
        let mut sorted: Vec<&str> = unique.iter().map(|p| &**p).collect();
        sorted.sort_unstable();
        let fingerprint = crc32fast::hash(format!("{replicas}\n{}", sorted.join("\n")).as_bytes());

        Self {
            points,
            owners,
            peers: unique,
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
        if self.points.is_empty() {
            return None;
        }
        let hash = crc32fast::hash(key.as_bytes());
        let idx = self.points.partition_point(|&p| p < hash);
        let idx = if idx == self.points.len() { 0 } else { idx };
        Some(self.owners[idx] as usize)
    }

    /// The peers on the ring, in the order they were given, without duplicates.
    pub fn peers(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.peers.iter().map(|p| &**p)
    }

    /// The number of points per peer.
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    /// A short hash of the peer set and replica count: two nodes with the same fingerprint
    /// place every key the same way. Peer requests carry it so that nodes with different
    /// peer lists notice.
    pub fn fingerprint(&self) -> u32 {
        self.fingerprint
    }

    pub(crate) fn fingerprint_header(&self) -> &http::HeaderValue {
        &self.fingerprint_header
    }

    /// Whether the ring has no peers.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
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
            .field("peers", &self.peers)
            .field("replicas", &self.replicas)
            .field("points", &self.points.len())
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

    #[test]
    fn matches_golang_test_vectors() {
        let ring = Ring::new(50, PEERS);
        assert_eq!(ring.points.len(), 150);
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
                ring.points.partition_point(|&p| p < crc),
                idx,
                "index of {key:?}"
            );
            assert_eq!(ring.points[idx], point, "point of {key:?}");
            assert_eq!(ring.owner(key), Some(owner), "owner of {key:?}");
        }
    }

    #[test]
    fn matches_golang_checkpoints() {
        assert_eq!(crc32fast::hash(b"0http://127.0.0.1:9101"), 0x87b02379);
        let ring = Ring::new(50, PEERS);
        assert_eq!((ring.points[0], ring.owners[0]), (0x00751467, 1));
        assert_eq!((ring.points[1], ring.owners[1]), (0x01971dcc, 2));
        assert_eq!((ring.points[2], ring.owners[2]), (0x02530e9a, 0));
        assert_eq!((ring.points[149], ring.owners[149]), (0xff3dc958, 2));
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
        assert_eq!(key_on_point.points.len(), 1);
        assert_eq!(key_on_point.owner("x"), Some(second));
        let reversed = Ring::new(1, [second, first]);
        assert_eq!(reversed.owner("x"), Some(first));
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
            assert!(ring.points.len() > 29_900, "{}", ring.points.len());
            assert!(ring.owner("k").is_some());
        }
        let many: Vec<String> = (0..30).map(|i| format!("http://p{i}:1")).collect();
        let ring = Ring::new(10_000, &many);
        assert_eq!(ring.replicas(), 100_000 / 30);
        assert!(ring.points.len() <= MAX_RING_POINTS);
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
        let many: Vec<String> = (0..11).map(|i| format!("http://p{i}:1")).collect();
        assert_eq!(
            Ring::try_new(MAX_REPLICAS, &many).unwrap_err(),
            ConfigError::RingTooLarge {
                peers: 11,
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
}
