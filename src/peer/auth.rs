//! Peer authentication: each peer request carries an HMAC-SHA256 over its method, its path, a
//! timestamp and a nonce, keyed by a secret the nodes share.
//!
//! The header is `x-groupcache-auth: t=<unix seconds>,n=<nonce, 32 hex>,s=<hmac, 64 hex>`.
//! The nonce is the signer's sender id (16 hex digits, random, chosen when its cache is built)
//! followed by its sequence number (16 hex digits: the peer client counts the requests to each
//! peer on their own, from a block of 2^40 numbers of that peer's). The MAC is over the bytes
//! `METHOD \n PATH \n t \n n` (`PATH` exactly as sent, still escaped, `t` in decimal, `n` as
//! the 32 lower-case hex digits). A request is refused with `401`
//! before any cache or data-source work when the header is missing or malformed, the
//! timestamp is more than the validity window away from this node's clock, no accepted secret
//! gives the same MAC (compared in constant time), or its sequence number was already used or
//! is too old for its sender's window (a replay). During a rotation a node accepts its current
//! secret and the previous one, and signs with the current one.
//!
//! # The replay record
//!
//! A node keeps, for each sender, an anti-replay window as IPsec (RFC 4303, section 3.4.3)
//! and DTLS do: the highest sequence number accepted and a bitmap of the 4,096 numbers up to
//! it. A number above the highest moves the window up; one inside the window is accepted
//! once; one below it is refused. A sender numbers its requests to each peer on their own, so
//! a request is refused when it arrives after one its sender signed for this node 4,096
//! requests later: at 10,000 signed requests a second from one node to this one, a delay of
//! 0.4 s.
//!
//! A sender gets a window only once its MAC checks, so no one without the secret can add one.
//! A sender not heard from for twice the validity window (60 s) is forgotten when a new sender
//! needs the room: none of its requests can pass the timestamp check any more, so none can be
//! replayed. The record holds at most 4,096 senders, in 16 shards of 256 chosen by the sender
//! id's top bits, each with its own lock held for one check. A new sender whose shard is full
//! of live senders is refused (`replay record full`); no live sender's window is ever dropped
//! to make room, since that would let its requests be replayed.
//!
//! Memory: a sender takes a 512-byte bitmap and a 32-byte slot in its shard's hash table (plus
//! a control byte), and a table of 256 senders has 512 slots and 16 more control bytes. The
//! record's bound is therefore 4,096 × 512 + 16 × (512 × 33 + 16) bytes = 2,367,744 bytes
//! (2.26 MiB), plus the allocator's own overhead, whatever the request rate; a cluster of `n`
//! nodes uses about `n × 0.6` KiB.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::{HeaderName, HeaderValue};
use rustc_hash::FxHashMap;
use sha2::Sha256;

use crate::sync::lock;

/// The header that carries the credential.
pub(crate) static AUTH_HEADER: HeaderName = HeaderName::from_static("x-groupcache-auth");

/// How far a request's timestamp may be from this node's clock.
pub(crate) const VALIDITY: Duration = Duration::from_secs(30);

/// How many sequence numbers a sender's window spans: the highest accepted and those below it.
const WINDOW: u64 = 4096;

/// The words of a window's bitmap (512 bytes).
const WINDOW_WORDS: usize = (WINDOW / 64) as usize;

/// The replay record's shards, picked by the top bits of the sender id.
const SHARD_BITS: u32 = 4;
const SHARDS: usize = 1 << SHARD_BITS;

/// Senders the replay record keeps a window for, at most.
const MAX_SENDERS: usize = 4096;

/// Senders one shard keeps a window for.
const SENDERS_PER_SHARD: usize = MAX_SENDERS / SHARDS;

/// A shared secret for peer authentication. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerSecret(Vec<u8>);

impl PeerSecret {
    /// A secret from bytes; use at least 32 random bytes.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self(secret.into())
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerSecret(..)")
    }
}

/// Why a peer request's credential was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Missing,
    Malformed,
    Expired,
    BadSignature,
    Replayed,
    /// A valid credential from a sender the replay record has no room for.
    ReplayRecordFull,
}

impl Refusal {
    /// A short label, to count refusals by reason.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Expired => "expired",
            Self::BadSignature => "bad_signature",
            Self::Replayed => "replayed",
            Self::ReplayRecordFull => "replay_record_full",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "unauthorized: no peer credential",
            Self::Malformed => "unauthorized: malformed peer credential",
            Self::Expired => "unauthorized: peer credential expired (check the nodes' clocks)",
            Self::BadSignature => "unauthorized: wrong peer credential",
            Self::Replayed => "unauthorized: peer credential replayed",
            Self::ReplayRecordFull => {
                "unauthorized: replay record full (too many peers signed requests in the last 60 s)"
            }
        })
    }
}

/// What makes a credential unique: who signed it, and its number among that signer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Nonce {
    sender: u64,
    seq: u64,
}

/// Signs and checks peer requests.
pub(crate) struct PeerAuth {
    /// One HMAC per secret, its key already absorbed (cloned for each message, which skips
    /// hashing the key each time). The first signs; all are accepted.
    keys: Vec<Hmac<Sha256>>,
    /// This signer's id, random per cache.
    sender: u64,
    /// The sequence number of this signer's next signature through [`sign`](Self::sign).
    #[cfg(test)]
    next_seq: AtomicU64,
    /// The next block of sequence numbers handed out by
    /// [`sequence_block`](Self::sequence_block).
    next_block: AtomicU64,
    record: ReplayRecord,
}

/// The sequence numbers of one block: 2^40, more than a peer entry signs in its life.
const SEQUENCE_BLOCK_BITS: u32 = 40;

impl fmt::Debug for PeerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerAuth")
            .field("secrets", &self.keys.len())
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The MAC of one request: `method \n path \n t \n nonce` (the nonce as 32 hex digits).
fn mac(key: &Hmac<Sha256>, method: &str, path: &str, t: u64, nonce: Nonce) -> Hmac<Sha256> {
    let mut mac = key.clone();
    mac.update(method.as_bytes());
    mac.update(b"\n");
    mac.update(path.as_bytes());
    let mut tail = Tail::default();
    tail.push(b'\n');
    tail.push_decimal(t);
    tail.push(b'\n');
    tail.push_nonce(nonce);
    mac.update(tail.as_bytes());
    mac
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The longest text a [`Tail`] holds: a credential with a 20-digit timestamp (the signed tail
/// of a message, `\n t \n n`, is shorter).
const LONGEST_CREDENTIAL: usize = "t=".len() + 20 + ",n=".len() + 32 + ",s=".len() + 64;
const _: () = assert!(LONGEST_CREDENTIAL <= 128);

/// A short text built on the stack: the end of a signed message, or a credential.
struct Tail {
    bytes: [u8; 128],
    len: usize,
}

impl Default for Tail {
    fn default() -> Self {
        Self {
            bytes: [0; 128],
            len: 0,
        }
    }
}

impl Tail {
    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    fn push_str(&mut self, text: &str) {
        for &byte in text.as_bytes() {
            self.push(byte);
        }
    }

    fn push_decimal(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &digit in &digits[i..] {
            self.push(digit);
        }
    }

    fn push_hex(&mut self, bytes: impl AsRef<[u8]>) {
        for &byte in bytes.as_ref() {
            self.push(HEX[usize::from(byte >> 4)]);
            self.push(HEX[usize::from(byte & 0x0f)]);
        }
    }

    fn push_nonce(&mut self, nonce: Nonce) {
        self.push_hex(nonce.sender.to_be_bytes());
        self.push_hex(nonce.seq.to_be_bytes());
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl PeerAuth {
    pub(crate) fn new(secrets: Vec<PeerSecret>) -> Self {
        Self {
            keys: secrets
                .iter()
                .map(|secret| {
                    Hmac::<Sha256>::new_from_slice(&secret.0)
                        .expect("HMAC takes a key of any length")
                })
                .collect(),
            // Random per cache: std's RandomState is seeded from the operating system. Ids need
            // to differ between caches, not to be secret: the signature covers them.
            sender: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
            #[cfg(test)]
            next_seq: AtomicU64::new(0),
            next_block: AtomicU64::new(0),
            record: ReplayRecord::default(),
        }
    }

    /// The credential header for a request: `t=<unix seconds>,n=<32 hex>,s=<64 hex>`.
    #[cfg(test)]
    pub(crate) fn sign(&self, method: &str, path: &str) -> HeaderValue {
        self.sign_seq(method, path, self.next_seq.fetch_add(1, Relaxed))
    }

    /// The credential header for a request with sequence number `seq`. The peer client counts
    /// sequence numbers per peer, from a [`sequence_block`](Self::sequence_block) of its own,
    /// so that each receiver sees a dense run of them whatever this node sends to others.
    pub(crate) fn sign_seq(&self, method: &str, path: &str, seq: u64) -> HeaderValue {
        let nonce = Nonce {
            sender: self.sender,
            seq,
        };
        self.credential(unix_now(), nonce, method, path)
    }

    /// The first sequence number of a block no earlier block overlaps, for a peer entry of
    /// the client: each block starts above every number handed out before it, so a peer that
    /// left the ring and came back never sees a number again (its window only moves forward).
    pub(crate) fn sequence_block(&self) -> u64 {
        let block = self.next_block.fetch_add(1, Relaxed);
        block.saturating_mul(1 << SEQUENCE_BLOCK_BITS)
    }

    /// The credential for a request signed at `t` with `nonce`.
    fn credential(&self, t: u64, nonce: Nonce, method: &str, path: &str) -> HeaderValue {
        let signature = mac(&self.keys[0], method, path, t, nonce)
            .finalize()
            .into_bytes();
        let mut value = Tail::default();
        value.push_str("t=");
        value.push_decimal(t);
        value.push_str(",n=");
        value.push_nonce(nonce);
        value.push_str(",s=");
        value.push_hex(signature);
        HeaderValue::from_bytes(value.as_bytes()).expect("digits and hex are a valid header value")
    }

    /// Checks a request's credential.
    pub(crate) fn verify(
        &self,
        method: &str,
        path: &str,
        header: Option<&HeaderValue>,
    ) -> Result<(), Refusal> {
        self.verify_at(unix_now(), method, path, header)
    }

    /// Checks a request's credential at `now` (unix seconds).
    fn verify_at(
        &self,
        now: u64,
        method: &str,
        path: &str,
        header: Option<&HeaderValue>,
    ) -> Result<(), Refusal> {
        let header = header.ok_or(Refusal::Missing)?;
        let header = header.to_str().map_err(|_| Refusal::Malformed)?;
        let (mut t, mut nonce, mut signature) = (None, None, None);
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", v)) => t = v.parse::<u64>().ok(),
                Some(("n", v)) => nonce = decode_nonce(v),
                Some(("s", v)) => signature = decode_hex::<32>(v),
                _ => return Err(Refusal::Malformed),
            }
        }
        let (Some(t), Some(nonce), Some(signature)) = (t, nonce, signature) else {
            return Err(Refusal::Malformed);
        };
        if now.abs_diff(t) > VALIDITY.as_secs() {
            return Err(Refusal::Expired);
        }
        let valid = self.keys.iter().any(|key| {
            mac(key, method, path, t, nonce)
                .verify_slice(&signature)
                .is_ok()
        });
        if !valid {
            return Err(Refusal::BadSignature);
        }
        self.record.first_use(nonce, now)
    }
}

/// The sequence numbers seen, by sender, in shards that each have a lock of their own, held
/// for one check.
struct ReplayRecord {
    shards: Box<[Mutex<FxHashMap<u64, Window>>]>,
}

impl Default for ReplayRecord {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl ReplayRecord {
    /// Records a nonce whose MAC checked, `now` being this node's clock in unix seconds.
    fn first_use(&self, nonce: Nonce, now: u64) -> Result<(), Refusal> {
        // Sender ids are random, and only a holder of the secret can make one: their top bits
        // spread senders evenly over the shards.
        let shard = (nonce.sender >> (u64::BITS - SHARD_BITS)) as usize;
        let mut senders = lock(&self.shards[shard]);
        if let Some(window) = senders.get_mut(&nonce.sender) {
            if !window.accept(nonce.seq) {
                return Err(Refusal::Replayed);
            }
            window.last_accepted = window.last_accepted.max(now);
            return Ok(());
        }
        // A new sender. Forget the senders that can no longer be replayed; new senders are
        // rare (a node that starts), so the sweep is too.
        senders.retain(|_, window| !window.is_forgettable(now));
        if senders.len() >= SENDERS_PER_SHARD {
            return Err(Refusal::ReplayRecordFull);
        }
        senders.insert(nonce.sender, Window::new(nonce.seq, now));
        Ok(())
    }
}

/// One sender's anti-replay window: the highest sequence number accepted, and which of the
/// `WINDOW` numbers up to it were.
struct Window {
    top: u64,
    /// This node's clock (unix seconds) when the sender's last request was accepted.
    last_accepted: u64,
    /// Bit `seq % WINDOW` is set when `seq`, one of `top - WINDOW + 1 ..= top`, was accepted.
    /// Boxed, so that the hash table's slots stay small.
    seen: Box<[u64; WINDOW_WORDS]>,
}

impl Window {
    fn new(seq: u64, now: u64) -> Self {
        let mut window = Self {
            top: seq,
            last_accepted: now,
            seen: Box::new([0; WINDOW_WORDS]),
        };
        window.set(seq);
        window
    }

    /// Accepts `seq` unless it was accepted before or is below the window.
    fn accept(&mut self, seq: u64) -> bool {
        if seq > self.top {
            let ahead = seq - self.top;
            if ahead >= WINDOW {
                self.seen.fill(0);
            } else {
                // The numbers the window moves over were never seen.
                self.clear(self.top.wrapping_add(1), ahead);
            }
            self.top = seq;
        } else if self.top - seq >= WINDOW || self.is_set(seq) {
            return false;
        }
        self.set(seq);
        true
    }

    /// A request accepted before `now - 2 × VALIDITY` had a timestamp before `now - VALIDITY`,
    /// so it would now be refused as expired: the window has nothing left to refuse.
    fn is_forgettable(&self, now: u64) -> bool {
        now.saturating_sub(self.last_accepted) > 2 * VALIDITY.as_secs()
    }

    fn is_set(&self, seq: u64) -> bool {
        let bit = seq % WINDOW;
        self.seen[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    fn set(&mut self, seq: u64) {
        let bit = seq % WINDOW;
        self.seen[(bit / 64) as usize] |= 1 << (bit % 64);
    }

    /// Clears the bits of `count` (less than `WINDOW`) numbers from `from` on, a word at a time.
    fn clear(&mut self, mut from: u64, mut count: u64) {
        while count > 0 {
            let bit = from % WINDOW;
            let offset = bit % 64;
            let n = (64 - offset).min(count);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1 << n) - 1) << offset
            };
            self.seen[(bit / 64) as usize] &= !mask;
            from = from.wrapping_add(n);
            count -= n;
        }
    }
}

/// A nonce: exactly 32 hex digits, the sender's id then the sequence number.
fn decode_nonce(text: &str) -> Option<Nonce> {
    Some(Nonce {
        sender: u64::from_be_bytes(decode_hex(text.get(..16)?)?),
        seq: u64::from_be_bytes(decode_hex(text.get(16..)?)?),
    })
}

/// `N` bytes written as exactly `2 × N` hex digits, in either case.
fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let text = text.as_bytes();
    if text.len() != 2 * N {
        return None;
    }
    let mut bytes = [0u8; N];
    for (byte, pair) in bytes.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some(bytes)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn auth(secrets: &[&str]) -> PeerAuth {
        PeerAuth::new(
            secrets
                .iter()
                .map(|s| PeerSecret::new(s.as_bytes()))
                .collect(),
        )
    }

    /// A time for tests that set the clock themselves.
    const NOW: u64 = 1_700_000_000;
    const PATH: &str = "/_groupcache/users/k";
    const V: u64 = VALIDITY.as_secs();

    /// `a`'s credential for `GET PATH` at `t` from `sender`, with sequence number `seq`.
    fn signed(a: &PeerAuth, t: u64, sender: u64, seq: u64) -> HeaderValue {
        a.credential(t, Nonce { sender, seq }, "GET", PATH)
    }

    fn check(a: &PeerAuth, now: u64, header: &HeaderValue) -> Result<(), Refusal> {
        a.verify_at(now, "GET", PATH, Some(header))
    }

    impl ReplayRecord {
        /// The bytes the record holds: its tables' slots (a table's capacity is 7/8 of them,
        /// a slot is the entry and a control byte, and 16 more control bytes end a table) and
        /// the senders' bitmaps.
        fn bytes(&self) -> usize {
            let slot = size_of::<(u64, Window)>() + 1;
            self.shards
                .iter()
                .map(|shard| {
                    let senders = shard.lock().unwrap();
                    let table = match senders.capacity() {
                        0 => 0,
                        capacity => (capacity * 8 / 7).next_power_of_two() * slot + 16,
                    };
                    table + senders.len() * size_of::<[u64; WINDOW_WORDS]>()
                })
                .sum()
        }

        fn senders(&self) -> usize {
            self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
        }
    }

    /// The bound the module documents.
    const RECORD_BOUND: usize = 4096 * 512 + 16 * (512 * 33 + 16);

    #[test]
    fn the_documented_bound_is_the_record_s_layout() {
        assert_eq!(MAX_SENDERS, 4096);
        assert_eq!((SHARDS, SENDERS_PER_SHARD), (16, 256));
        assert_eq!(size_of::<[u64; WINDOW_WORDS]>(), 512);
        assert_eq!(size_of::<(u64, Window)>(), 32);
        assert_eq!(RECORD_BOUND, 2_367_744);
    }

    #[test]
    fn a_signed_request_passes_once() {
        let a = auth(&["s3cret"]);
        let header = a.sign("GET", PATH);
        assert_eq!(a.verify("GET", PATH, Some(&header)), Ok(()));
        assert_eq!(a.verify("GET", PATH, Some(&header)), Err(Refusal::Replayed));
        // Written in capitals, it is the same credential.
        let header = a.sign("GET", PATH);
        let (t_and_n, s) = header.to_str().unwrap().split_once(",s=").unwrap();
        let (t, n) = t_and_n.split_once(",n=").unwrap();
        let capitals = format!("{t},n={},s={}", n.to_uppercase(), s.to_uppercase());
        let capitals = HeaderValue::from_str(&capitals).unwrap();
        assert_eq!(a.verify("GET", PATH, Some(&capitals)), Ok(()));
        assert_eq!(a.verify("GET", PATH, Some(&header)), Err(Refusal::Replayed));
    }

    #[test]
    fn tampering_and_wrong_secrets_fail() {
        let (a, b) = (auth(&["one"]), auth(&["two"]));
        let header = a.sign("GET", PATH);
        assert_eq!(
            b.verify("GET", PATH, Some(&header)),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            a.verify("GET", "/_groupcache/users/other", Some(&header)),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            a.verify("DELETE", PATH, Some(&header)),
            Err(Refusal::BadSignature)
        );
        // Another sender or sequence number under the same signature.
        let text = header.to_str().unwrap();
        let n = text.find(",n=").unwrap() + 3;
        for at in [n, n + 31] {
            let mut tampered = text.to_owned();
            let digit = if &text[at..=at] == "0" { "1" } else { "0" };
            tampered.replace_range(at..=at, digit);
            let tampered = HeaderValue::from_str(&tampered).unwrap();
            assert_eq!(
                a.verify("GET", PATH, Some(&tampered)),
                Err(Refusal::BadSignature)
            );
        }
        assert_eq!(a.verify("GET", "/x", None), Err(Refusal::Missing));
        let zeros = "0".repeat(32);
        let signature = "0".repeat(64);
        for bad in [
            String::new(),
            "t=1".to_owned(),
            "junk".to_owned(),
            format!("t=x,n={zeros},s={signature}"),
            format!("t={NOW},n=1,s={signature}"),
            // The 16-digit nonce of before.
            format!("t={NOW},n={},s={signature}", &zeros[..16]),
            format!("t={NOW},n={zeros}0,s={signature}"),
            format!("t={NOW},n=+{},s={signature}", &zeros[1..]),
            format!("t={NOW},n=g{},s={signature}", &zeros[1..]),
            format!("t={NOW},n={zeros},s=0g"),
            format!("t={NOW},n={zeros},s={signature},x=1"),
            format!("t={NOW},s={signature}"),
        ] {
            let value = HeaderValue::from_str(&bad).unwrap();
            assert_eq!(
                a.verify_at(NOW, "GET", "/x", Some(&value)),
                Err(Refusal::Malformed),
                "{bad:?}"
            );
        }
        let value = HeaderValue::from_bytes(b"t=1,n=\xff").unwrap();
        assert_eq!(a.verify("GET", "/x", Some(&value)), Err(Refusal::Malformed));
        assert_eq!(a.record.senders(), 0, "no refused credential was recorded");
    }

    #[test]
    fn credentials_are_written_as_documented() {
        let a = auth(&["the secret"]);
        let sender = format!("{:016x}", a.sender);
        let mut seq = 0u64;
        for path in ["/_groupcache/users/user%3A1", "/_groupcache/u/", "/x"] {
            for _ in 0..100 {
                let before = unix_now();
                let header = a.sign("GET", path);
                let after = unix_now();
                let header = header.to_str().unwrap();
                let (t, rest) = header
                    .strip_prefix("t=")
                    .and_then(|h| h.split_once(",n="))
                    .unwrap();
                let (n, s) = rest.split_once(",s=").unwrap();
                assert_eq!((n.len(), s.len()), (32, 64), "{header}");
                // The sender's id, then its sequence number, counting from 0.
                assert_eq!(n, format!("{sender}{seq:016x}"), "{header}");
                seq += 1;
                // The reference: the message and the hex written with `format!`.
                let mut reference = Hmac::<Sha256>::new_from_slice(b"the secret").unwrap();
                reference.update(format!("GET\n{path}\n{t}\n{n}").as_bytes());
                let expected: String = reference
                    .finalize()
                    .into_bytes()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                assert_eq!(s, expected, "{header}");
                assert!((before..=after).contains(&t.parse::<u64>().unwrap()));
            }
        }
        // The longest credential, a 20-digit timestamp, fits the stack buffer.
        let longest = signed(&a, u64::MAX, u64::MAX, u64::MAX);
        assert_eq!(longest.len(), LONGEST_CREDENTIAL);
    }

    #[test]
    fn hex_is_exactly_two_digits_a_byte_in_either_case() {
        let lower = "00ff10ab".repeat(8);
        let expected: Vec<u8> = [0x00, 0xff, 0x10, 0xab].repeat(8);
        assert_eq!(
            decode_hex::<32>(&lower).map(Vec::from),
            Some(expected.clone())
        );
        assert_eq!(
            decode_hex::<32>(&lower.to_uppercase()).map(Vec::from),
            Some(expected)
        );
        for bad in [
            String::new(),
            lower[..62].to_owned(),
            format!("{lower}00"),
            format!("+f{}", &lower[2..]),
            format!("g0{}", &lower[2..]),
            format!("é{}", &lower[2..]),
        ] {
            assert_eq!(decode_hex::<32>(&bad), None, "{bad}");
        }
        let nonce = "0123456789abcdef0000000000000002";
        assert_eq!(
            decode_nonce(nonce),
            Some(Nonce {
                sender: 0x0123_4567_89ab_cdef,
                seq: 2
            })
        );
        for bad in [&nonce[..31], &nonce[1..], "0123456789abcdeé000000000000002"] {
            assert_eq!(decode_nonce(bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps_more_than_30_s_away_are_expired() {
        let a = auth(&["s"]);
        let old = signed(&a, unix_now() - 3_600, 1, 0);
        assert_eq!(a.verify("GET", PATH, Some(&old)), Err(Refusal::Expired));
        for (t, expected) in [
            (NOW - V - 1, Err(Refusal::Expired)),
            (NOW + V + 1, Err(Refusal::Expired)),
            (NOW - V, Ok(())),
            (NOW + V, Ok(())),
        ] {
            assert_eq!(check(&a, NOW, &signed(&a, t, 2, t)), expected, "{t}");
        }
    }

    #[test]
    fn the_replay_record_stays_bounded() {
        let a = auth(&["s"]);
        let path = "/_groupcache/users/k";
        for i in 0..200_000 {
            let header = a.sign("GET", path);
            assert_eq!(a.verify("GET", path, Some(&header)), Ok(()), "request {i}");
        }
        let bytes = a.record.bytes();
        assert!(
            bytes <= 64 * 1024,
            "after 200,000 requests the replay record holds {bytes} bytes"
        );
        assert_eq!(a.record.senders(), 1);
    }

    #[test]
    fn a_number_below_the_window_is_refused() {
        let a = auth(&["s"]);
        let sender = 7;
        assert_eq!(
            check(&a, NOW, &signed(&a, NOW, sender, WINDOW + 10)),
            Ok(())
        );
        // Never used, but 4,096 below the highest: too old to tell.
        assert_eq!(
            check(&a, NOW, &signed(&a, NOW, sender, 10)),
            Err(Refusal::Replayed)
        );
        assert_eq!(
            check(&a, NOW, &signed(&a, NOW, sender, 0)),
            Err(Refusal::Replayed)
        );
        // The lowest number inside the window.
        let lowest = signed(&a, NOW, sender, 11);
        assert_eq!(check(&a, NOW, &lowest), Ok(()));
        assert_eq!(check(&a, NOW, &lowest), Err(Refusal::Replayed));
    }

    #[test]
    fn an_old_number_inside_the_window_is_accepted_once() {
        let a = auth(&["s"]);
        let sender = 7;
        let [first, second, late] = [100, 200, 150].map(|seq| signed(&a, NOW, sender, seq));
        assert_eq!(check(&a, NOW, &first), Ok(()));
        assert_eq!(check(&a, NOW, &second), Ok(()));
        assert_eq!(check(&a, NOW, &late), Ok(()));
        for header in [&first, &second, &late] {
            assert_eq!(check(&a, NOW, header), Err(Refusal::Replayed));
        }
    }

    #[test]
    fn numbers_out_of_order_within_the_window_are_each_accepted_once() {
        let a = auth(&["s"]);
        let sender = 0xfeed;
        // Every number of 0..WINDOW once, in a scrambled order (an odd factor is a bijection
        // modulo a power of two).
        let headers: Vec<_> = (0..WINDOW)
            .map(|i| signed(&a, NOW, sender, i.wrapping_mul(0x9E37_79B9) % WINDOW))
            .collect();
        for header in &headers {
            assert_eq!(check(&a, NOW, header), Ok(()), "{header:?}");
        }
        for header in &headers {
            assert_eq!(check(&a, NOW, header), Err(Refusal::Replayed), "{header:?}");
        }
    }

    #[test]
    fn two_senders_with_the_same_number_are_both_accepted() {
        let (one, two, receiver) = (auth(&["s"]), auth(&["s"]), auth(&["s"]));
        assert_ne!(one.sender, two.sender);
        let (from_one, from_two) = (one.sign("GET", PATH), two.sign("GET", PATH));
        assert_eq!(receiver.verify("GET", PATH, Some(&from_one)), Ok(()));
        assert_eq!(receiver.verify("GET", PATH, Some(&from_two)), Ok(()));
        assert_eq!(
            receiver.verify("GET", PATH, Some(&from_two)),
            Err(Refusal::Replayed)
        );
        assert_eq!(receiver.record.senders(), 2);
    }

    /// The `i`th sender of shard `shard`.
    fn sender_in(shard: usize, i: u64) -> u64 {
        (shard as u64) << (u64::BITS - SHARD_BITS) | i
    }

    #[test]
    fn a_silent_sender_is_forgotten_and_makes_room() {
        let a = auth(&["s"]);
        let shard = 3;
        let first: Vec<_> = (0..SENDERS_PER_SHARD as u64)
            .map(|i| signed(&a, NOW, sender_in(shard, i), 0))
            .collect();
        for header in &first {
            assert_eq!(check(&a, NOW, header), Ok(()));
        }
        // One of them is heard from again later.
        let again = signed(&a, NOW + 50, sender_in(shard, 5), 1);
        assert_eq!(check(&a, NOW + 50, &again), Ok(()));
        let newcomer = sender_in(shard, 1_000);
        // 60 s after, the others could still be replayed: no room.
        let later = NOW + 2 * V;
        assert_eq!(
            check(&a, later, &signed(&a, later, newcomer, 0)),
            Err(Refusal::ReplayRecordFull)
        );
        // A second more, and they can no longer be: forgotten, and the newcomer has room.
        let later = later + 1;
        assert_eq!(check(&a, later, &signed(&a, later, newcomer, 0)), Ok(()));
        assert_eq!(
            a.record.senders(),
            2,
            "the newcomer and the one heard from later"
        );
        // What a forgotten sender signed before is expired now, and it may start again.
        for header in &first {
            assert_eq!(check(&a, later, header), Err(Refusal::Expired));
        }
        let returning = signed(&a, later, sender_in(shard, 0), 1);
        assert_eq!(check(&a, later, &returning), Ok(()));
        assert_eq!(check(&a, later, &returning), Err(Refusal::Replayed));
        // The one heard from later is still known.
        let old = signed(&a, later, sender_in(shard, 5), 1);
        assert_eq!(check(&a, later, &old), Err(Refusal::Replayed));
    }

    #[test]
    fn a_full_record_refuses_new_senders_and_still_serves_known_ones() {
        let a = auth(&["s"]);
        for i in 0..MAX_SENDERS as u64 {
            let sender = sender_in(i as usize % SHARDS, i);
            assert_eq!(check(&a, NOW, &signed(&a, NOW, sender, 0)), Ok(()), "{i}");
        }
        assert_eq!(a.record.senders(), MAX_SENDERS);
        let bytes = a.record.bytes();
        assert!(bytes <= RECORD_BOUND, "{bytes} bytes");
        for shard in 0..SHARDS {
            let newcomer = signed(&a, NOW + 1, sender_in(shard, 1 << 40), 0);
            assert_eq!(
                check(&a, NOW + 1, &newcomer),
                Err(Refusal::ReplayRecordFull)
            );
        }
        assert_eq!(a.record.senders(), MAX_SENDERS, "nobody was evicted");
        for i in [0, 1, 4095] {
            let sender = sender_in(i as usize % SHARDS, i);
            assert_eq!(
                check(&a, NOW + 1, &signed(&a, NOW, sender, 0)),
                Err(Refusal::Replayed)
            );
            assert_eq!(check(&a, NOW + 1, &signed(&a, NOW + 1, sender, 1)), Ok(()));
        }
    }

    #[test]
    fn a_window_accepts_what_a_set_of_every_number_seen_would() {
        // The model: every number accepted, and the rule the window keeps.
        let mut window = Window::new(1 << 20, NOW);
        let (mut seen, mut top) = (BTreeSet::from([1u64 << 20]), 1u64 << 20);
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..200_000 {
            let r = random();
            let seq = match r % 8 {
                // Mostly near the top, below and above it.
                0..=4 => (top + 64).saturating_sub((r >> 32) & 1023),
                // Around the window's lower edge.
                5 => (top + 8).saturating_sub(WINDOW + ((r >> 32) & 15)),
                // A jump up, past the window or within it.
                6 => top + ((r >> 32) & 8191),
                // Anywhere below.
                _ => (r >> 32) % (top + 1),
            };
            let expected = seq > top || (top - seq < WINDOW && !seen.contains(&seq));
            assert_eq!(
                window.accept(seq),
                expected,
                "round {round}: {seq} at {top}"
            );
            if expected {
                seen.insert(seq);
                top = top.max(seq);
                assert_eq!(window.top, top);
            }
            if round % 1024 == 0 {
                seen = seen.split_off(&top.saturating_sub(WINDOW));
            }
        }
    }

    #[test]
    fn a_window_at_the_end_of_the_numbers() {
        let mut window = Window::new(u64::MAX - 5, NOW);
        assert!(window.accept(u64::MAX));
        assert!(!window.accept(u64::MAX - 5));
        assert!(window.accept(u64::MAX - 1));
        assert!(!window.accept(u64::MAX));
        assert!(!window.accept(0), "a number that wrapped around is too old");
        assert!(window.accept(u64::MAX - (WINDOW - 1)));
        assert!(!window.accept(u64::MAX - WINDOW));
    }

    #[test]
    fn refusals_have_a_reason_and_a_message() {
        let all = [
            Refusal::Missing,
            Refusal::Malformed,
            Refusal::Expired,
            Refusal::BadSignature,
            Refusal::Replayed,
            Refusal::ReplayRecordFull,
        ];
        let reasons: Vec<_> = all.iter().map(Refusal::reason).collect();
        assert_eq!(
            reasons,
            [
                "missing",
                "malformed",
                "expired",
                "bad_signature",
                "replayed",
                "replay_record_full"
            ]
        );
        for refusal in all {
            assert!(
                refusal.to_string().starts_with("unauthorized: "),
                "{refusal}"
            );
        }
        assert_eq!(
            Refusal::ReplayRecordFull.to_string(),
            "unauthorized: replay record full (too many peers signed requests in the last 60 s)"
        );
    }

    #[test]
    fn rotation_accepts_the_previous_secret() {
        let old = auth(&["old"]);
        let rotating = auth(&["new", "old"]);
        let header = old.sign("GET", "/p");
        assert_eq!(rotating.verify("GET", "/p", Some(&header)), Ok(()));
        let header = rotating.sign("GET", "/p");
        assert_eq!(
            old.verify("GET", "/p", Some(&header)),
            Err(Refusal::BadSignature)
        );
        assert_eq!(auth(&["new"]).verify("GET", "/p", Some(&header)), Ok(()));
    }
}
