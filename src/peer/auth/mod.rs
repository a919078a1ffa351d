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
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::{HeaderName, HeaderValue};
use sha2::Sha256;

use replay::ReplayRecord;

/// The header that carries the credential.
pub(crate) static AUTH_HEADER: HeaderName = HeaderName::from_static("x-groupcache-auth");

/// How far a request's timestamp may be from this node's clock.
pub(crate) const VALIDITY: Duration = Duration::from_secs(30);

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

    /// What of a credential can be checked without what it signs: that there is one, its
    /// form, and its time. A request with a body checks this before reading the body.
    pub(crate) fn precheck(&self, header: Option<&HeaderValue>) -> Result<(), Refusal> {
        parse_at(unix_now(), header).map(drop)
    }

    /// Checks a request's credential at `now` (unix seconds).
    fn verify_at(
        &self,
        now: u64,
        method: &str,
        path: &str,
        header: Option<&HeaderValue>,
    ) -> Result<(), Refusal> {
        let (t, nonce, signature) = parse_at(now, header)?;
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

/// A credential's time, nonce and signature, if it is well formed and within its validity
/// at `now`.
fn parse_at(now: u64, header: Option<&HeaderValue>) -> Result<(u64, Nonce, [u8; 32]), Refusal> {
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
    Ok((t, nonce, signature))
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

mod replay;
#[cfg(test)]
mod tests;
