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

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
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
    /// The first signs; all are accepted.
    secrets: Vec<PeerSecret>,
    /// Nonces seen, by the `VALIDITY`-long time bucket of their timestamp. A credential can
    /// only be replayed with its own timestamp, so a replay is looked for in one bucket, and
    /// buckets too old for any valid timestamp are dropped whole.
    seen: Mutex<BTreeMap<u64, FxHashSet<u64>>>,
    nonce_counter: AtomicU64,
    nonce_seed: u64,
}

impl fmt::Debug for PeerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerAuth")
            .field("secrets", &self.secrets.len())
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn mac(secret: &PeerSecret, method: &str, path: &str, t: u64, nonce: u64) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&secret.0).expect("HMAC takes a key of any length");
    mac.update(method.as_bytes());
    mac.update(b"\n");
    mac.update(path.as_bytes());
    mac.update(format!("\n{t}\n{nonce:016x}").as_bytes());
    mac
}

impl PeerAuth {
    pub(crate) fn new(secrets: Vec<PeerSecret>) -> Self {
        Self {
            secrets,
            seen: Mutex::default(),
            nonce_counter: AtomicU64::new(0),
            // Random per cache: std's RandomState is seeded from the operating system.
            nonce_seed: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
        }
    }

    fn nonce(&self) -> u64 {
        let n = self.nonce_counter.fetch_add(1, Relaxed);
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(self.nonce_seed ^ n);
        hasher.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.finish()
    }

    /// The credential header for a request.
    pub(crate) fn sign(&self, method: &str, path: &str) -> HeaderValue {
        let t = unix_now();
        let nonce = self.nonce();
        let signature = mac(&self.secrets[0], method, path, t, nonce)
            .finalize()
            .into_bytes();
        let mut value = format!("t={t},n={nonce:016x},s=");
        for byte in signature {
            value.push_str(&format!("{byte:02x}"));
        }
        HeaderValue::from_str(&value).expect("digits and hex are a valid header value")
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
                Some(("s", v)) => signature = decode_hex(v),
                _ => return Err(Refusal::Malformed),
            }
        }
        let (Some(t), Some(nonce), Some(signature)) = (t, nonce, signature) else {
            return Err(Refusal::Malformed);
        };
        if unix_now().abs_diff(t) > VALIDITY.as_secs() {
            return Err(Refusal::Expired);
        }
        let valid = self.secrets.iter().any(|secret| {
            mac(secret, method, path, t, nonce)
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
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
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

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
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
    fn an_old_timestamp_is_expired() {
        let a = auth(&["s"]);
        let t = unix_now() - 3_600;
        let nonce = 42u64;
        let signature = mac(&a.secrets[0], "GET", "/p", t, nonce)
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
        let seen = a.seen.lock().unwrap();
        assert!(
            seen.keys()
                .all(|b| *b >= (now - VALIDITY.as_secs()) / VALIDITY.as_secs())
        );
        assert_eq!(seen.values().map(|s| s.len()).sum::<usize>(), 120_002);
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
