//! Peer authentication: each peer request carries an HMAC-SHA256 over its method, its path, a
//! timestamp and a nonce, keyed by a secret the nodes share.
//!
//! The header is `x-groupcache-auth: t=<unix seconds>,n=<nonce, 16 hex>,s=<hmac, 64 hex>`,
//! over the bytes `METHOD \n PATH \n t \n n` (`PATH` exactly as sent, still escaped). A
//! request is refused with `401` before any cache or data-source work when the header is
//! missing or malformed, the timestamp is more than the validity window away from this node's
//! clock, no accepted secret gives the same MAC (compared in constant time), or the nonce was
//! already seen within the window (a replay). During a rotation a node accepts its current
//! secret and the previous one, and signs with the current one.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::{HeaderName, HeaderValue};
use std::collections::BTreeMap;

use rustc_hash::FxHashSet;
use sha2::Sha256;

/// The header that carries the credential.
pub(crate) static AUTH_HEADER: HeaderName = HeaderName::from_static("x-groupcache-auth");

/// Nonces seen, by the `VALIDITY`-long time bucket of their timestamp.
type ReplayBuckets = BTreeMap<u64, FxHashSet<u64>>;

/// Shards of the replay record.
const SEEN_SHARDS: usize = 16;

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
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "unauthorized: no peer credential",
            Self::Malformed => "unauthorized: malformed peer credential",
            Self::Expired => "unauthorized: peer credential expired (check the nodes' clocks)",
            Self::BadSignature => "unauthorized: wrong peer credential",
            Self::Replayed => "unauthorized: peer credential replayed",
        })
    }
}

/// Signs and checks peer requests.
pub(crate) struct PeerAuth {
    /// One HMAC per secret, its key already absorbed (cloned for each message, which skips
    /// hashing the key each time). The first signs; all are accepted.
    keys: Vec<Hmac<Sha256>>,
    /// Nonces seen, by the `VALIDITY`-long time bucket of their timestamp. A credential can
    /// only be replayed with its own timestamp, so a replay is looked for in one bucket, and
    /// buckets too old for any valid timestamp are dropped whole.
    /// Split in shards by the nonce's top bits, so that the record's lock is short and
    /// rarely shared, and a set growing at a high request rate rehashes a sixteenth at a time.
    seen: Box<[Mutex<ReplayBuckets>]>,
    nonce_counter: AtomicU64,
    nonce_seed: u64,
}

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

/// The MAC of one request: `method \n path \n t \n nonce` (the nonce as 16 hex digits).
fn mac(key: &Hmac<Sha256>, method: &str, path: &str, t: u64, nonce: u64) -> Hmac<Sha256> {
    let mut mac = key.clone();
    mac.update(method.as_bytes());
    mac.update(b"\n");
    mac.update(path.as_bytes());
    let mut tail = Tail::default();
    tail.push(b'\n');
    tail.push_decimal(t);
    tail.push(b'\n');
    tail.push_hex(nonce.to_be_bytes());
    mac.update(tail.as_bytes());
    mac
}

const HEX: &[u8; 16] = b"0123456789abcdef";

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
            seen: (0..SEEN_SHARDS).map(|_| Mutex::default()).collect(),
            nonce_counter: AtomicU64::new(0),
            // Random per cache: std's RandomState is seeded from the operating system.
            nonce_seed: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
        }
    }

    /// A nonce never given before by this cache: a counter from a random start, mixed by a
    /// bijection (splitmix64), so the nonces of one cache never repeat and those of two caches
    /// are unrelated. Nonces need to be unique, not secret: the signature covers them.
    fn nonce(&self) -> u64 {
        let n = self.nonce_counter.fetch_add(1, Relaxed);
        let mut z = self
            .nonce_seed
            .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The credential header for a request: `t=<unix seconds>,n=<16 hex>,s=<64 hex>`.
    pub(crate) fn sign(&self, method: &str, path: &str) -> HeaderValue {
        let t = unix_now();
        let nonce = self.nonce();
        let signature = mac(&self.keys[0], method, path, t, nonce)
            .finalize()
            .into_bytes();
        let mut value = Tail::default();
        value.push_str("t=");
        value.push_decimal(t);
        value.push_str(",n=");
        value.push_hex(nonce.to_be_bytes());
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
        let header = header.ok_or(Refusal::Missing)?;
        let header = header.to_str().map_err(|_| Refusal::Malformed)?;
        let (mut t, mut nonce, mut signature) = (None, None, None);
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", v)) => t = v.parse::<u64>().ok(),
                Some(("n", v)) if v.len() == 16 => nonce = u64::from_str_radix(v, 16).ok(),
                Some(("s", v)) => signature = decode_signature(v),
                _ => return Err(Refusal::Malformed),
            }
        }
        let (Some(t), Some(nonce), Some(signature)) = (t, nonce, signature) else {
            return Err(Refusal::Malformed);
        };
        if unix_now().abs_diff(t) > VALIDITY.as_secs() {
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
        self.first_use(nonce, t)
    }

    /// Records a nonce; a nonce seen before with the same timestamp is a replay.
    fn first_use(&self, nonce: u64, t: u64) -> Result<(), Refusal> {
        let window = VALIDITY.as_secs();
        let oldest_bucket = unix_now().saturating_sub(window) / window;
        let shard = &self.seen[(nonce >> 60) as usize % SEEN_SHARDS];
        let mut seen = shard.lock().unwrap_or_else(PoisonError::into_inner);
        // Timestamps older than `now - VALIDITY` are refused before this point.
        while let Some(entry) = seen.first_entry() {
            if *entry.key() >= oldest_bucket {
                break;
            }
            entry.remove();
        }
        if !seen.entry(t / window).or_default().insert(nonce) {
            return Err(Refusal::Replayed);
        }
        Ok(())
    }
}

/// A signature: exactly 64 hex digits, in either case.
fn decode_signature(text: &str) -> Option<[u8; 32]> {
    let text = text.as_bytes();
    if text.len() != 64 {
        return None;
    }
    let mut signature = [0u8; 32];
    for (byte, pair) in signature.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some(signature)
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
    use super::*;

    fn auth(secrets: &[&str]) -> PeerAuth {
        PeerAuth::new(
            secrets
                .iter()
                .map(|s| PeerSecret::new(s.as_bytes()))
                .collect(),
        )
    }

    #[test]
    fn a_signed_request_passes_once() {
        let a = auth(&["s3cret"]);
        let header = a.sign("GET", "/_groupcache/users/k");
        assert_eq!(
            a.verify("GET", "/_groupcache/users/k", Some(&header)),
            Ok(())
        );
        assert_eq!(
            a.verify("GET", "/_groupcache/users/k", Some(&header)),
            Err(Refusal::Replayed)
        );
    }

    #[test]
    fn tampering_and_wrong_secrets_fail() {
        let (a, b) = (auth(&["one"]), auth(&["two"]));
        let header = a.sign("GET", "/_groupcache/users/k");
        assert_eq!(
            b.verify("GET", "/_groupcache/users/k", Some(&header)),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            a.verify("GET", "/_groupcache/users/other", Some(&header)),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            a.verify("DELETE", "/_groupcache/users/k", Some(&header)),
            Err(Refusal::BadSignature)
        );
        assert_eq!(a.verify("GET", "/x", None), Err(Refusal::Missing));
        for bad in [
            "",
            "t=1",
            "t=x,n=0000000000000000,s=00",
            "t=1,n=1,s=00",
            "junk",
            "t=1,n=0000000000000000,s=0g",
        ] {
            let value = HeaderValue::from_str(bad).unwrap();
            let refusal = a.verify("GET", "/x", Some(&value)).unwrap_err();
            assert!(
                matches!(refusal, Refusal::Malformed | Refusal::Expired),
                "{bad:?}: {refusal:?}"
            );
        }
    }

    #[test]
    fn credentials_are_written_as_documented() {
        let a = auth(&["the secret"]);
        let mut nonces = FxHashSet::default();
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
                assert_eq!((n.len(), s.len()), (16, 64), "{header}");
                assert!(nonces.insert(n.to_owned()), "a nonce repeated: {n}");
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
    }

    #[test]
    fn signatures_are_64_hex_digits() {
        let lower = "00ff10ab".repeat(8);
        let expected: Vec<u8> = [0x00, 0xff, 0x10, 0xab].repeat(8);
        assert_eq!(
            decode_signature(&lower).map(Vec::from),
            Some(expected.clone())
        );
        assert_eq!(
            decode_signature(&lower.to_uppercase()).map(Vec::from),
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
            assert_eq!(decode_signature(&bad), None, "{bad}");
        }
    }

    #[test]
    fn an_old_timestamp_is_expired() {
        let a = auth(&["s"]);
        let t = unix_now() - 3_600;
        let nonce = 42u64;
        let signature = mac(&a.keys[0], "GET", "/p", t, nonce)
            .finalize()
            .into_bytes();
        let hex: String = signature.iter().map(|b| format!("{b:02x}")).collect();
        let header = HeaderValue::from_str(&format!("t={t},n={nonce:016x},s={hex}")).unwrap();
        assert_eq!(a.verify("GET", "/p", Some(&header)), Err(Refusal::Expired));
    }

    #[test]
    fn the_replay_record_drops_old_buckets_and_still_catches_replays() {
        let a = auth(&["s"]);
        let now = unix_now();
        for nonce in 0..120_000 {
            a.first_use(nonce, now).unwrap();
        }
        assert_eq!(a.first_use(7, now), Err(Refusal::Replayed));
        assert_eq!(
            a.first_use(7, now + VALIDITY.as_secs()),
            Ok(()),
            "another timestamp"
        );
        // A bucket too old for any valid timestamp is dropped on the next use.
        a.first_use(1, now - 10 * VALIDITY.as_secs()).unwrap();
        a.first_use(200_000, now).unwrap();
        // Every shard sweeps its own old buckets when it is next used.
        for shard in 0..SEEN_SHARDS as u64 {
            a.first_use(shard << 60 | 300_000, now).unwrap();
        }
        let mut recorded = 0;
        for shard in a.seen.iter() {
            let seen = shard.lock().unwrap();
            assert!(
                seen.keys()
                    .all(|b| *b >= (now - VALIDITY.as_secs()) / VALIDITY.as_secs())
            );
            recorded += seen.values().map(|s| s.len()).sum::<usize>();
        }
        assert_eq!(recorded, 120_002 + SEEN_SHARDS);
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
