//! Peer authentication through the public API: a `Groupcache` with a peer secret, its tower
//! layer, and requests on the peer path with a fuzzed `x-groupcache-auth` header (the verifier
//! itself is crate-private, so it is reached the way a peer reaches it).
//!
//! The first input byte picks the mode:
//! - even: the rest is `KEY \n HEADER`; a header made without the secret is always refused
//!   with 401, for any method and path, and the data source is never called;
//! - odd: the harness signs a fresh request as the `auth` module documents, then sends a
//!   tampered copy of the credential (the rest of the input is the edit: a position, a count
//!   of bytes to delete, the bytes to insert) followed by the untouched one. Exactly one of
//!   the two is accepted: a tampered credential that still verifies (it can only be the same
//!   `t` and nonce written another way) uses the nonce's sequence number up, and one that is
//!   refused does not. The harness is one sender, whose sequence numbers rise by one each run,
//!   so the receiver's window only ever moves up.
#![no_main]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use tower_groupcache::{Groupcache, GroupcacheService};
use tower_service::Service;

const SECRET: &str = "fuzzing secret, 32 bytes or more, shared";

/// The application behind the layer: never reached on the peer path.
#[derive(Clone)]
struct App;

impl Service<Request<String>> for App {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<String>) -> Self::Future {
        let mut response = Response::new(String::new());
        *response.status_mut() = StatusCode::IM_A_TEAPOT;
        ready(Ok(response))
    }
}

struct Harness {
    rt: tokio::runtime::Runtime,
    service: GroupcacheService<App>,
    _cache: Groupcache,
    sender: u64,
    seq: AtomicU64,
}

static LOADS: AtomicU64 = AtomicU64::new(0);

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cache = rt.block_on(async {
            Groupcache::builder()
                .peer_secret(SECRET)
                .cache_bytes(1 << 20)
                .source("users", |key: String| async move {
                    LOADS.fetch_add(1, Relaxed);
                    Ok::<_, Infallible>(key)
                })
                .build()
                .unwrap()
        });
        let service = tower_layer::Layer::layer(&cache.layer(), App);
        // A sender id no earlier process of this harness used.
        let sender = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Harness {
            rt,
            service,
            _cache: cache,
            sender,
            seq: AtomicU64::new(0),
        }
    })
}

fn send(h: &Harness, method: Method, path: &str, auth: Option<HeaderValue>) -> Option<StatusCode> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .body(String::new())
        .ok()?;
    if let Some(auth) = auth {
        request.headers_mut().insert("x-groupcache-auth", auth);
    }
    let mut service = h.service.clone();
    let response = h.rt.block_on(service.call(request)).unwrap();
    Some(response.status())
}

/// A credential as the `auth` module documents it: the nonce is the sender id, then the
/// sequence number, in 32 hex digits.
fn credential(method: &str, path: &str, t: u64, sender: u64, seq: u64) -> String {
    let nonce = format!("{sender:016x}{seq:016x}");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{method}\n{path}\n{t}\n{nonce}").as_bytes());
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},n={nonce},s={signature}")
}

const METHODS: [Method; 4] = [Method::GET, Method::DELETE, Method::POST, Method::HEAD];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let h = harness();
    if mode % 2 == 0 {
        let method = METHODS[usize::from(mode >> 1) % METHODS.len()].clone();
        let (key, header) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (&rest[..0], rest),
        };
        let Ok(key) = std::str::from_utf8(key) else {
            return;
        };
        let path = format!("/_groupcache/users/{key}");
        let header = if mode & 0x80 != 0 {
            None
        } else {
            match HeaderValue::from_bytes(header) {
                Ok(v) => Some(v),
                Err(_) => return,
            }
        };
        let before = LOADS.load(Relaxed);
        let Some(status) = send(h, method.clone(), &path, header.clone()) else {
            return; // not a valid URI: no server would get it
        };
        if path.split('?').next().unwrap().starts_with("/_groupcache/") {
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path:?} with {header:?} was not refused"
            );
        }
        assert_eq!(
            LOADS.load(Relaxed),
            before,
            "{method} {path:?} with {header:?} loaded"
        );
        return;
    }

    // A fresh, valid credential, and a tampered copy of it.
    let seq = h.seq.fetch_add(1, Relaxed);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let path = format!("/_groupcache/users/k{seq:x}");
    let good = credential("GET", &path, t, h.sender, seq);
    let (at, delete, insert) = match rest {
        [a, b, d, insert @ ..] => (
            usize::from(u16::from_le_bytes([*a, *b])),
            usize::from(*d),
            insert,
        ),
        _ => return,
    };
    let mut tampered = good.clone().into_bytes();
    let at = at % (tampered.len() + 1);
    let end = (at + delete).min(tampered.len());
    tampered.splice(at..end, insert.iter().copied());
    let Ok(tampered_value) = HeaderValue::from_bytes(&tampered) else {
        return;
    };
    let first = send(h, Method::GET, &path, Some(tampered_value)).unwrap();
    let second = send(
        h,
        Method::GET,
        &path,
        Some(HeaderValue::from_str(&good).unwrap()),
    )
    .unwrap();
    let ok = |s: StatusCode| s == StatusCode::OK;
    assert!(
        matches!(first, StatusCode::OK | StatusCode::UNAUTHORIZED)
            && matches!(second, StatusCode::OK | StatusCode::UNAUTHORIZED),
        "tampered {:?} -> {first}, then the original {good:?} -> {second}",
        String::from_utf8_lossy(&tampered)
    );
    assert!(
        ok(first) != ok(second),
        "tampered {:?} -> {first}, then the original {good:?} -> {second}: \
         exactly one of them must be accepted",
        String::from_utf8_lossy(&tampered)
    );
});
