//! Black-box tests of the peer protocol as docs/protocol.md and docs/security.md describe it:
//! raw HTTP/1.1 bytes written to a real node on 127.0.0.1, as a peer implementer or an
//! attacker would send them, and the documented status, headers, body and side effects (what
//! the recording data source loaded) checked for each.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tower_groupcache::GroupcacheBuilder;
use tower_groupcache::protocol::{GetManyRequest, GetManyResponse, GetResponse};

use crate::support::{self, Loads, Node, cluster, eventually, key_owned_by, value_of};

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client.

/// One answer, as read off the socket.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Bytes of a request: `connection: close`, a `host`, the given headers, then the body with
/// its `content-length` (for a body, or a `POST`/`PUT`, unless `headers` frame it themselves).
fn req(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n");
    let framed = headers.iter().any(|(n, _)| {
        n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding")
    });
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !framed && (!body.is_empty() || method == "POST" || method == "PUT") {
        out.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Writes `bytes` to a new connection to `addr` and reads the first answer. A node that does
/// not answer within 10 s fails the test (a hang).
async fn raw(addr: SocketAddr, bytes: &[u8]) -> Raw {
    raw_for(addr, bytes, false).await
}

async fn raw_for(addr: SocketAddr, bytes: &[u8], head: bool) -> Raw {
    tokio::time::timeout(Duration::from_secs(10), async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // The node may answer and close before it reads everything (a refused body).
        let _ = stream.write_all(bytes).await;
        read_answer(&mut stream, head).await
    })
    .await
    .unwrap_or_else(|_| {
        let head = &bytes[..find(bytes, b"\r\n\r\n").unwrap_or(bytes.len()).min(300)];
        panic!(
            "the node did not answer within 10 s (a hang): {:?}",
            String::from_utf8_lossy(head)
        )
    })
}

async fn read_answer(stream: &mut TcpStream, head: bool) -> Raw {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    // At most 4 MiB read: every loop below is bounded by it, or by the 10 s timeout.
    let header_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        assert!(
            n > 0,
            "the connection closed before a whole answer: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        assert!(buf.len() < 4 << 20, "answer too large");
    };
    let head_text = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut rest = buf[header_end + 4..].to_vec();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let body = if head || status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            if let Some(body) = dechunk(&rest) {
                break body;
            }
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            assert!(n > 0, "chunked answer cut off");
            rest.extend_from_slice(&chunk[..n]);
            assert!(rest.len() < 4 << 20, "answer too large");
        }
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().expect("content-length");
        while rest.len() < len {
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            assert!(n > 0, "answer body cut off");
            rest.extend_from_slice(&chunk[..n]);
        }
        rest.truncate(len);
        rest
    } else {
        loop {
            let n = stream.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break rest;
            }
            rest.extend_from_slice(&chunk[..n]);
            assert!(rest.len() < 4 << 20, "answer too large");
        }
    };
    Raw {
        status,
        headers,
        body,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The body of a whole chunked encoding, or `None` while it is incomplete.
fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let line_end = find(data, b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        if data.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
    None
}

/// A chunked encoding of `body`, in chunks of `size`.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// [`req`] written to `addr` by [`raw`].
async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Raw {
    raw(addr, &req(method, target, headers, body)).await
}

/// [`send`] with the credential `auth` in `x-groupcache-auth`.
async fn signed(addr: SocketAddr, auth: &str, method: &str, target: &str, body: &[u8]) -> Raw {
    send(addr, method, target, &[("x-groupcache-auth", auth)], body).await
}

/// A batched get: `body` with `headers`, `POST`ed to `/_groupcache/users`.
async fn batch(addr: SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> Raw {
    send(addr, "POST", "/_groupcache/users", headers, body).await
}

async fn get(addr: SocketAddr, target: &str) -> Raw {
    send(addr, "GET", target, &[], b"").await
}

/// docs/protocol.md: "every byte but `A-Z a-z 0-9 - _ . ~`, a space as `%20`, `+` as `%2B`,
/// upper-case hex". Written from the docs, not with the crate's own `escape`.
fn esc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Nodes and checks.

async fn one_node(configure: impl Fn(GroupcacheBuilder) -> GroupcacheBuilder) -> (Node, Loads) {
    let loads = Loads::default();
    let mut nodes = cluster(1, &loads, configure).await;
    (nodes.pop().unwrap(), loads)
}

/// docs/protocol.md, "Answers of a node of this crate": "Text answers have the form of Go's
/// `http.Error`: `content-type: text/plain; charset=utf-8`, `x-content-type-options:
/// nosniff`, and the text with a trailing newline", and "Every answer of the peer path carries
/// `x-groupcache-extensions: 1`".
#[track_caller]
fn assert_text(r: &Raw, status: u16, text: &str, what: &str) {
    assert_eq!(
        (r.status, r.text()),
        (status, format!("{text}\n")),
        "{what}: status and body"
    );
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; charset=utf-8"),
        "{what}: content-type"
    );
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}: nosniff"
    );
    assert_eq!(
        r.header("x-groupcache-extensions"),
        Some("1"),
        "{what}: extensions header"
    );
}

/// A text answer whose body starts with `prefix`.
#[track_caller]
fn assert_text_prefix(r: &Raw, status: u16, prefix: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: status (body {:?})", r.text());
    assert!(
        r.text().starts_with(prefix) && r.text().ends_with('\n'),
        "{what}: body {:?} should start with {prefix:?} and end with a newline",
        r.text()
    );
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; charset=utf-8"),
        "{what}"
    );
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(r.header("x-groupcache-extensions"), Some("1"), "{what}");
}

#[track_caller]
fn value_of_reply(r: &Raw) -> GetResponse {
    assert_eq!(r.status, 200, "a value: {:?}", r.text());
    assert_eq!(r.header("content-type"), Some("application/x-protobuf"));
    assert_eq!(r.header("x-groupcache-extensions"), Some("1"));
    GetResponse::decode(&r.body[..]).expect("a GetResponse")
}

fn batch_reply(r: &Raw) -> GetManyResponse {
    assert_eq!(r.status, 200, "a batched get: {:?}", r.text());
    assert_eq!(r.header("x-groupcache-extensions"), Some("1"));
    GetManyResponse::decode(&r.body[..]).expect("a GetManyResponse")
}

const SECRET: &str = "doc promises wire secret, 32 bytes or more";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// docs/security.md, "The credential": `s` is HMAC-SHA256 over `METHOD \n PATH \n t \n n`.
fn credential(secret: &str, method: &str, path: &str, t: u64, sender: u64, seq: u64) -> String {
    let nonce = format!("{sender:016x}{seq:016x}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{method}\n{path}\n{t}\n{nonce}").as_bytes());
    format!("t={t},n={nonce},s={}", hex(&mac.finalize().into_bytes()))
}

/// The path a request with a body is signed over: "the request path exactly as sent ... adds
/// `#sha256=` and its body's SHA-256 in 64 lower-case hex digits".
fn with_body_hash(target: &str, body: &[u8]) -> String {
    format!("{target}#sha256={}", hex(&Sha256::digest(body)))
}

/// A credential for now, with [`SECRET`], over `target` and `body` ([`with_body_hash`]).
fn credential_over_body(method: &str, target: &str, body: &[u8], sender: u64, seq: u64) -> String {
    credential(
        SECRET,
        method,
        &with_body_hash(target, body),
        now(),
        sender,
        seq,
    )
}

// ---------------------------------------------------------------------------------------------
// Gets.

/// "`GET {base_path}` alone (the probe) | 200 | text | `groupcache peer path`. Nothing is
/// looked up or loaded".
#[tokio::test]
async fn the_probe_is_200_text_and_loads_nothing() {
    let (node, loads) = one_node(|b| b).await;
    let r = get(node.addr, "/_groupcache/").await;
    assert_text(&r, 200, "groupcache peer path", "probe");
    assert_eq!(r.header("content-length"), Some("21"));
    assert_eq!(loads.total(), 0, "the probe loaded something");
}

/// "`GET` of a key the data source has | 200 | `content-type: application/x-protobuf` |
/// `GetResponse` with `value` always set ..., `minute_qps` ... and `expire` when the value has
/// a TTL"; "A node of this crate writes `minute_qps` and `expire` first and `value` last".
#[tokio::test]
async fn a_get_is_a_get_response_with_the_value_last() {
    let (node, loads) = one_node(|b| b).await;
    let r = get(node.addr, "/_groupcache/users/user%3A1").await;
    let reply = value_of_reply(&r);
    assert_eq!(reply.value.as_deref(), Some(&b"value-of:user:1"[..]));
    assert!(reply.minute_qps.is_some(), "minute_qps is set");
    assert_eq!(reply.expire, None, "no TTL, no expire");
    let mut tail = vec![0x0a, 15];
    tail.extend_from_slice(b"value-of:user:1");
    assert!(r.body.ends_with(&tail), "value last: {:02x?}", r.body);
    assert_eq!(r.body[0], 0x11, "minute_qps (field 2, fixed64) first");
    assert_eq!(loads.of("user:1"), vec![node.url.clone()]);
    // A second get is a hit: nothing more loaded.
    value_of_reply(&get(node.addr, "/_groupcache/users/user%3A1").await);
    assert_eq!(loads.count("user:1"), 1);
}

/// "`GET` of a key the data source does not know | 204 | none | empty".
#[tokio::test]
async fn a_missing_key_is_204_and_empty() {
    let (node, loads) = one_node(|b| b).await;
    let r = get(node.addr, "/_groupcache/users/missing%3Ax").await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    assert_eq!(r.header("x-groupcache-extensions"), Some("1"));
    assert_eq!(r.header("content-type"), None, "204 has no other headers");
    assert_eq!(loads.count("missing:x"), 1);
}

/// "`GET`, and the data source failed | 500 | text, `x-groupcache-error: <token>` | the
/// error's text, which names the source and nothing else"; tokens `load`, `panicked`.
#[tokio::test]
async fn a_failing_or_panicking_source_is_500_with_its_token_and_no_detail() {
    let (node, loads) = one_node(|b| b).await;
    let r = get(node.addr, "/_groupcache/users/fail%3Ax").await;
    assert_text(
        &r,
        500,
        "data source `users` failed to load the key",
        "failing source",
    );
    assert_eq!(r.header("x-groupcache-error"), Some("load"));
    assert!(
        !r.text().contains("back end refused"),
        "the back end's text leaked"
    );
    assert_eq!(loads.count("fail:x"), 1);

    let r = get(node.addr, "/_groupcache/users/panic%3Ax").await;
    assert_eq!(r.status, 500, "{:?}", r.text());
    assert_eq!(r.header("x-groupcache-error"), Some("panicked"));
    assert!(
        !r.text().contains("data source bug"),
        "the panic's text leaked: {:?}",
        r.text()
    );
    // The node still answers.
    value_of_reply(&get(node.addr, "/_groupcache/users/after-panic").await);
}

/// "`GET` of a value longer than the request's `x-groupcache-max-value-bytes` | 413 | text,
/// `x-groupcache-error: too-large` | `the value is <n> bytes, over the asker's limit of
/// <limit>`"; "a value that does not parse is no limit".
#[tokio::test]
async fn the_askers_value_limit_is_413_too_large_and_unparsable_is_no_limit() {
    let (node, _loads) = one_node(|b| b).await;
    let target = "/_groupcache/users/user%3A1"; // value-of:user:1, 15 bytes
    let with = |limit: &'static str| {
        req(
            "GET",
            target,
            &[("x-groupcache-max-value-bytes", limit)],
            b"",
        )
    };
    let r = raw(node.addr, &with("5")).await;
    assert_text(
        &r,
        413,
        "the value is 15 bytes, over the asker's limit of 5",
        "limit 5",
    );
    assert_eq!(r.header("x-groupcache-error"), Some("too-large"));
    let r = raw(node.addr, &with("14")).await;
    assert_eq!(r.status, 413, "limit 14");
    let r = raw(node.addr, &with("0")).await;
    assert_eq!(r.status, 413, "limit 0");
    // "a value of the limit itself is a remote hit".
    value_of_reply(&raw(node.addr, &with("15")).await);
    for unparsable in ["abc", "-1", "1.5", "99999999999999999999999999", "", " 5x"] {
        let r = raw(node.addr, &with(unparsable)).await;
        assert_eq!(
            r.status, 200,
            "limit {unparsable:?} does not parse: no limit"
        );
    }
}

/// "`GET {peer}{base_path}{group}/{key}` ... The group and key are percent-encoded"; "A
/// literal `+` is read as a space"; "The path is not normalised. A key `a//b` or `/./` is
/// served as it is".
#[tokio::test]
async fn escaped_keys_and_groups_are_decoded_and_the_path_is_not_normalised() {
    let (node, loads) = one_node(|b| b).await;
    let cases: &[(&str, &str)] = &[
        ("/_groupcache/users/a%2Fb", "a/b"),
        ("/_groupcache/users/a/b", "a/b"),
        ("/_groupcache/users/a//b", "a//b"),
        ("/_groupcache/users//./", "/./"),
        ("/_groupcache/users/../x", "../x"),
        ("/_groupcache/users/a+b", "a b"),
        ("/_groupcache/users/c%2Bd", "c+d"),
        ("/_groupcache/users/e%20f", "e f"),
        ("/_groupcache/users/g%3ah", "g:h"),
        ("/_groupcache/users/%D0%BA%D0%BB%D1%8E%D1%87", "ключ"),
        ("/_groupcache/us%65rs/escaped-group", "escaped-group"),
        ("/_groupcache/users/pct%25", "pct%"),
        ("/_groupcache/users/q%3Fx%3Dy", "q?x=y"),
    ];
    for (target, key) in cases {
        let r = get(node.addr, target).await;
        let reply = value_of_reply(&r);
        assert_eq!(
            reply.value.as_deref(),
            Some(value_of(key).as_ref()),
            "{target} names the key {key:?}"
        );
        assert_eq!(loads.count(key), 1, "{target} loaded {key:?} once");
    }
    // The docs' escaping round-trips any key.
    let odd = "sp ace+plus/slash%pct?q#h\u{1F600}\t";
    value_of_reply(&get(node.addr, &format!("/_groupcache/users/{}", esc(odd))).await);
    assert_eq!(loads.count(odd), 1);
}

/// "bad `%` escape, or not UTF-8 once decoded | 400 | text | `bad request: invalid percent
/// escape`, `bad request: group or key is not UTF-8`" — and nothing loaded.
#[tokio::test]
async fn bad_escapes_and_non_utf8_are_400_and_load_nothing() {
    let (node, loads) = one_node(|b| b).await;
    for target in [
        "/_groupcache/users/%zz",
        "/_groupcache/users/a%4",
        "/_groupcache/users/a%",
        "/_groupcache/users/%%41",
        "/_groupcache/users/%G1",
        "/_groupcache/us%zzers/k",
    ] {
        let r = get(node.addr, target).await;
        assert_text(&r, 400, "bad request: invalid percent escape", target);
    }
    for target in [
        "/_groupcache/users/%FF",
        "/_groupcache/users/%C3%28",
        "/_groupcache/users/%ED%A0%80",
        "/_groupcache/%FF/k",
    ] {
        let r = get(node.addr, target).await;
        assert_text(&r, 400, "bad request: group or key is not UTF-8", target);
    }
    assert_eq!(loads.total(), 0, "a bad path loaded something");
}

/// "unknown group | 404 | text | `no such group: <group>`"; "no `/` after the group | 400 |
/// text | `bad request: no key after the group name`".
#[tokio::test]
async fn an_unknown_group_is_404_and_a_group_without_key_is_400() {
    let (node, loads) = one_node(|b| b).await;
    let r = get(node.addr, "/_groupcache/nope/k").await;
    assert_text(&r, 404, "no such group: nope", "unknown group");
    let r = get(node.addr, "/_groupcache/%3Cb%3E/k").await;
    assert_text(&r, 404, "no such group: <b>", "escaped unknown group");
    let r = get(node.addr, "/_groupcache/users").await;
    assert_text(
        &r,
        400,
        "bad request: no key after the group name",
        "no slash",
    );
    let r = get(node.addr, "/_groupcache/users?key=k").await;
    assert_text(
        &r,
        400,
        "bad request: no key after the group name",
        "GET with key in query",
    );
    assert_eq!(loads.total(), 0);
}

/// The empty key (`GET {base_path}users/`): the docs name no answer for it. Whatever the node
/// answers, it must answer, and load the empty key only if it serves it.
#[tokio::test]
async fn the_empty_key_is_answered_consistently() {
    let (node, loads) = one_node(|b| b).await;
    let r = get(node.addr, "/_groupcache/users/").await;
    assert_eq!(r.header("x-groupcache-extensions"), Some("1"));
    match r.status {
        200 => {
            let reply = value_of_reply(&r);
            assert_eq!(reply.value.as_deref(), Some(value_of("").as_ref()));
            assert_eq!(loads.count(""), 1);
        }
        400..=499 => assert_eq!(loads.total(), 0, "a refused empty key was loaded"),
        s => panic!("unexpected status {s} for the empty key: {:?}", r.text()),
    }
    eprintln!("empty key: {} {:?}", r.status, r.text());
}

/// "a key longer than `max_key_bytes` (8 KiB by default) | 414 | text | `key too long`";
/// "the HTTP layer refuses URIs over 64 KiB before the cache sees them".
#[tokio::test]
async fn a_key_over_max_key_bytes_is_414_and_loads_nothing() {
    let (node, loads) = one_node(|b| b).await;
    let at_limit = "k".repeat(8192);
    value_of_reply(&get(node.addr, &format!("/_groupcache/users/{at_limit}")).await);
    assert_eq!(loads.count(&at_limit), 1, "a key of 8 KiB is served");

    let over = "k".repeat(8193);
    let r = get(node.addr, &format!("/_groupcache/users/{over}")).await;
    assert_text(&r, 414, "key too long", "8 KiB + 1");
    // The limit is on the key, not on its escaped spelling: 8192 ':' are 24 KiB escaped.
    let colons = ":".repeat(8192);
    let r = get(node.addr, &format!("/_groupcache/users/{}", esc(&colons))).await;
    assert_eq!(
        r.status,
        200,
        "an 8 KiB key escaped to 24 KiB: {:?}",
        r.text()
    );
    let r = get(
        node.addr,
        &format!("/_groupcache/users/{}", "k".repeat(100 << 10)),
    )
    .await;
    assert_eq!(r.status, 414, "a 100 KiB URI");
    assert_eq!(loads.count(&over), 0);
    assert_eq!(
        loads.total(),
        2,
        "only the two keys at the limit were loaded"
    );
}

/// "A request is checked in this order: shutdown (`503`), credential (`401`, `403`), method
/// (`405`), then the path"; "any method but `GET` and `DELETE` | 405 | text, `allow: GET,
/// DELETE` | `method not allowed`"; "`POST` to a key's path, or to the base path | `405`,
/// `allow: GET, DELETE, POST, PUT`"; "a `PUT` to a key's path (`405`, ...)".
#[tokio::test]
async fn other_methods_are_405_with_allow_and_load_nothing() {
    let (node, loads) = one_node(|b| b).await;
    for method in ["PATCH", "OPTIONS", "FOO", "TRACE"] {
        let r = send(node.addr, method, "/_groupcache/users/k", &[], b"").await;
        assert_text(&r, 405, "method not allowed", method);
        assert!(
            r.header("allow")
                .is_some_and(|a| a.contains("GET") && a.contains("DELETE")),
            "{method}: allow {:?}",
            r.header("allow")
        );
    }
    // A method the path does not exist for is still 405 before the path is looked at.
    let r = send(node.addr, "PATCH", "/_groupcache/nope/%zz", &[], b"").await;
    assert_eq!(r.status, 405, "method before path: {:?}", r.text());
    let r = raw_for(
        node.addr,
        &req("HEAD", "/_groupcache/users/k", &[], b""),
        true,
    )
    .await;
    assert_eq!(r.status, 405, "HEAD");
    for (method, target) in [
        ("POST", "/_groupcache/users/k"),
        ("POST", "/_groupcache/"),
        ("PUT", "/_groupcache/users/k"),
    ] {
        let r = send(node.addr, method, target, &[], b"x").await;
        assert_text(&r, 405, "method not allowed", &format!("{method} {target}"));
        assert_eq!(
            r.header("allow"),
            Some("GET, DELETE, POST, PUT"),
            "{method} {target}"
        );
    }
    assert_eq!(loads.total(), 0, "a refused method loaded something");
}

/// The answers table: "any method but `GET`, `DELETE`, `POST` and `PUT` ... | 405 | text,
/// `allow: GET, DELETE, POST, PUT`".
#[tokio::test]
async fn the_allow_header_of_a_patch_is_the_documented_one() {
    let (node, _loads) = one_node(|b| b).await;
    let r = send(node.addr, "PATCH", "/_groupcache/users/k", &[], b"").await;
    assert_eq!(r.status, 405);
    assert_eq!(
        r.header("allow"),
        Some("GET, DELETE, POST, PUT"),
        "docs/protocol.md's answers table"
    );
}

/// "A peer request is never forwarded ... A node of this crate serves a peer request from its
/// caches or its own data source, even where its ring names another owner"; and "A node that
/// receives a different fingerprint, or another kind of ring, counts `ring_mismatches`"
/// (docs/guide.md) while "Nodes with different rings still answer correctly".
#[tokio::test]
async fn a_peer_get_is_never_forwarded_and_a_foreign_ring_is_counted_not_refused() {
    let loads = Loads::default();
    let nodes = cluster(2, &loads, |b| b).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    let key = key_owned_by(&a.cache, &b.url, "fwd:");
    let own = a.cache.stats().cluster.ring_fingerprint.clone();
    assert_eq!(own.len(), 8, "8 hex digits: {own}");
    let target = format!("/_groupcache/users/{}", esc(&key));

    let r = send(a.addr, "GET", &target, &[("x-groupcache-ring", &own)], b"").await;
    value_of_reply(&r);
    assert_eq!(
        loads.of(&key),
        vec![a.url.clone()],
        "served by the node asked, not its owner"
    );
    assert_eq!(
        a.cache.stats().cluster.ring_mismatches,
        0,
        "its own fingerprint"
    );

    let foreign = if own == "deadbeef" {
        "feedface"
    } else {
        "deadbeef"
    };
    let key2 = key_owned_by(&a.cache, &b.url, "fwd2:");
    let target2 = format!("/_groupcache/users/{}", esc(&key2));
    let r = send(
        a.addr,
        "GET",
        &target2,
        &[("x-groupcache-ring", foreign)],
        b"",
    )
    .await;
    value_of_reply(&r);
    assert_eq!(loads.of(&key2), vec![a.url.clone()]);
    eventually(
        "a foreign fingerprint counted",
        Duration::from_secs(5),
        || a.cache.stats().cluster.ring_mismatches == 1,
    )
    .await;

    // Another kind of ring, same fingerprint: also a mismatch.
    let r = send(
        a.addr,
        "GET",
        &target,
        &[
            ("x-groupcache-ring", &own),
            ("x-groupcache-ring-kind", "balanced"),
        ],
        b"",
    )
    .await;
    value_of_reply(&r);
    eventually(
        "another kind of ring counted",
        Duration::from_secs(5),
        || a.cache.stats().cluster.ring_mismatches == 2,
    )
    .await;

    // Garbage in the header: still served, nothing forwarded.
    for junk in ["", "zz", "DEADBEEF00", "\u{7f}"] {
        let r = send(a.addr, "GET", &target, &[("x-groupcache-ring", junk)], b"").await;
        assert!(
            r.status == 200 || r.status == 400,
            "ring {junk:?}: {}",
            r.status
        );
    }
    assert_eq!(loads.total_by(&b.url), 0, "the owner was never asked");
}

// ---------------------------------------------------------------------------------------------
// Removal.

/// Loads `key` on `node` through the peer path and checks the load count.
async fn prime(node: &Node, loads: &Loads, key: &str, expected_loads: usize) {
    let r = get(node.addr, &format!("/_groupcache/users/{}", esc(key))).await;
    value_of_reply(&r);
    assert_eq!(loads.count(key), expected_loads, "loads of {key:?}");
}

/// "`DELETE {base_path}{group}?key={key}` | 200 | none | empty: the key is dropped"; "`DELETE
/// {base_path}{group}/{key}` (the form of earlier versions, still served) | 200"; "`DELETE
/// {base_path}{group}` (no key) | 200 | none | empty: every key of the group is dropped".
#[tokio::test]
async fn deletes_drop_the_key_or_the_group() {
    let (node, loads) = one_node(|b| b).await;
    prime(&node, &loads, "d:1", 1).await;
    let r = send(
        node.addr,
        "DELETE",
        "/_groupcache/users?key=d%3A1",
        &[],
        b"",
    )
    .await;
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.header("x-groupcache-extensions"), Some("1"));
    prime(&node, &loads, "d:1", 2).await;

    let r = send(node.addr, "DELETE", "/_groupcache/users/d%3A1", &[], b"").await;
    assert_eq!((r.status, r.body.len()), (200, 0), "path form");
    prime(&node, &loads, "d:1", 3).await;

    // A key with `+`, `/` and unicode, escaped as in a get.
    let odd = "a+b/c ключ";
    prime(&node, &loads, odd, 1).await;
    let r = send(
        node.addr,
        "DELETE",
        &format!("/_groupcache/users?key={}", esc(odd)),
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    prime(&node, &loads, odd, 2).await;

    prime(&node, &loads, "d:2", 1).await;
    let r = send(node.addr, "DELETE", "/_groupcache/users", &[], b"").await;
    assert_eq!((r.status, r.body.len()), (200, 0), "the whole group");
    prime(&node, &loads, "d:1", 4).await;
    prime(&node, &loads, "d:2", 2).await;

    let r = send(node.addr, "DELETE", "/_groupcache/nope?key=x", &[], b"").await;
    assert_text(&r, 404, "no such group: nope", "DELETE of an unknown group");
}

/// "`DELETE {base_path}{group}?...` with any other query (`k=`, two keys) | 400 | text |
/// `bad request: the query of a removal or a write is ...`; a key with a bad escape gets the
/// texts of the row \"bad `%` escape\"" — and nothing dropped.
#[tokio::test]
async fn a_delete_with_another_query_is_400_and_drops_nothing() {
    let (node, loads) = one_node(|b| b).await;
    prime(&node, &loads, "q", 1).await;
    let mut wrong_text = Vec::new();
    for (query, text) in [
        ("k=q", "bad request: the query of a removal or a write is"),
        (
            "key=q&key=q",
            "bad request: the query of a removal or a write is",
        ),
        (
            "key=q&x=1",
            "bad request: the query of a removal or a write is",
        ),
        (
            "x=1&key=q",
            "bad request: the query of a removal or a write is",
        ),
        ("key", "bad request: the query of a removal or a write is"),
        (
            "keys=q",
            "bad request: the query of a removal or a write is",
        ),
        ("KEY=q", "bad request: the query of a removal or a write is"),
        ("key=%zz", "bad request: invalid percent escape"),
        ("key=%FF", "bad request: group or key is not UTF-8"),
    ] {
        let target = format!("/_groupcache/users?{query}");
        let r = send(node.addr, "DELETE", &target, &[], b"").await;
        assert_eq!(r.status, 400, "{target}: {:?}", r.text());
        assert_eq!(r.header("x-groupcache-extensions"), Some("1"), "{target}");
        if !r.text().starts_with(text) {
            wrong_text.push(format!("{target} -> {:?}", r.text()));
        }
    }
    // Not dropped: a get is still a hit.
    prime(&node, &loads, "q", 1).await;
    assert!(
        wrong_text.is_empty(),
        "400 with another text than documented: {wrong_text:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Batched gets.

/// "`GetManyResponse`: one per key asked, in the request's order"; "`value` set exactly when
/// error is not"; tokens `not-found`, `load`; "A duplicate key in a request is answered twice
/// and loaded once"; keys "as they are: no escaping in a body".
#[tokio::test]
async fn a_batched_get_answers_each_key_in_order_and_loads_duplicates_once() {
    let (node, loads) = one_node(|b| b).await;
    let keys = ["a", "missing:b", "fail:c", "a", "x%2Fy", "ключ/+ "];
    let body = GetManyRequest::encode_keys(&keys);
    let r = batch(
        node.addr,
        &[("content-type", "application/x-protobuf")],
        &body,
    )
    .await;
    let reply = batch_reply(&r);
    assert_eq!(reply.results.len(), keys.len(), "one result per key");
    let r0 = &reply.results[0];
    assert_eq!(
        (r0.value.as_deref(), r0.error.as_deref()),
        (Some(&b"value-of:a"[..]), None)
    );
    assert_eq!(reply.results[1].error.as_deref(), Some("not-found"));
    assert_eq!(reply.results[1].value, None);
    assert_eq!(reply.results[2].error.as_deref(), Some("load"));
    assert_eq!(reply.results[2].value, None);
    assert!(reply.results[2].message.is_some(), "a failure has its text");
    assert_eq!(
        reply.results[3].value.as_deref(),
        Some(&b"value-of:a"[..]),
        "the duplicate"
    );
    assert_eq!(
        reply.results[4].value.as_deref(),
        Some(value_of("x%2Fy").as_ref())
    );
    assert_eq!(
        reply.results[5].value.as_deref(),
        Some(value_of("ключ/+ ").as_ref())
    );
    assert_eq!(loads.count("a"), 1, "a duplicate key is loaded once");
    assert_eq!(loads.count("x%2Fy"), 1, "no unescaping in a body");
    assert_eq!(loads.count("x/y"), 0);
}

/// An empty batch is a valid `GetManyRequest` with no keys: answered with no results and
/// nothing loaded. Also a body split in chunks (no content-length) is the same request.
#[tokio::test]
async fn an_empty_batch_and_a_chunked_batch_are_answered() {
    let (node, loads) = one_node(|b| b).await;
    let r = batch(node.addr, &[], b"").await;
    assert_eq!(batch_reply(&r).results.len(), 0);
    assert_eq!(loads.total(), 0);

    let body = GetManyRequest::encode_keys(&["c1", "c2"]);
    let r = batch(
        node.addr,
        &[("transfer-encoding", "chunked")],
        &chunked(&body, 3),
    )
    .await;
    assert_eq!(batch_reply(&r).results.len(), 2, "a chunked body");
    assert_eq!((loads.count("c1"), loads.count("c2")), (1, 1));
}

/// "a body that is not a `GetManyRequest` (truncated, garbage) | `400 the body is not a
/// GetManyRequest`", refused before anything is loaded.
#[tokio::test]
async fn a_garbage_or_truncated_batch_is_400_and_loads_nothing() {
    let (node, loads) = one_node(|b| b).await;
    let whole = GetManyRequest::encode_keys(&["abc", "def"]);
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", whole[..whole.len() - 1].to_vec()),
        ("garbage", b"\xff\xff\xff\xff".to_vec()),
        ("text", b"hello, world".to_vec()),
        ("non-UTF-8 key", b"\x0a\x01\xff".to_vec()),
        ("key as varint", b"\x08\x01".to_vec()),
        ("huge length", b"\x0a\xff\xff\xff\xff\x0f".to_vec()),
        ("good key then garbage", [&whole[..], b"\xff"].concat()),
    ];
    for (what, body) in bodies {
        let r = batch(node.addr, &[], &body).await;
        assert_text(&r, 400, "the body is not a GetManyRequest", what);
    }
    assert_eq!(loads.total(), 0, "a bad batch loaded something");
}

/// "more than the owner's `max_batch_keys` keys | `413 K keys in one batch, over this node's
/// limit of N`"; "a key over `max_key_bytes` | `414 key too long`"; "an unknown source |
/// `404 no such group: {source}`".
#[tokio::test]
async fn a_batch_over_the_key_limits_or_of_an_unknown_source_is_refused_before_loading() {
    let (node, loads) = one_node(|b| b.max_batch_keys(4).max_key_bytes(16)).await;
    let five = GetManyRequest::encode_keys(&["k1", "k2", "k3", "k4", "k5"]);
    let r = batch(node.addr, &[], &five).await;
    assert_text(
        &r,
        413,
        "5 keys in one batch, over this node's limit of 4",
        "5 keys",
    );
    let dupes = GetManyRequest::encode_keys(&["k1", "k1", "k1", "k1", "k1"]);
    let r = batch(node.addr, &[], &dupes).await;
    assert_eq!(r.status, 413, "5 keys, all the same");

    let long = GetManyRequest::encode_keys(&["ok", &"k".repeat(17)]);
    let r = batch(node.addr, &[], &long).await;
    assert_text(&r, 414, "key too long", "a key of 17 bytes");

    let body = GetManyRequest::encode_keys(&["k1"]);
    let r = send(node.addr, "POST", "/_groupcache/nope", &[], &body).await;
    assert_text(&r, 404, "no such group: nope", "unknown source");
    assert_eq!(loads.total(), 0, "a refused batch loaded something");

    let four = GetManyRequest::encode_keys(&["k1", "k2", "k3", &"k".repeat(16)]);
    let r = batch(node.addr, &[], &four).await;
    assert_eq!(
        batch_reply(&r).results.len(),
        4,
        "4 keys, one of 16 bytes: at the limits"
    );
}

/// A batched request body with 4 keys and an unknown field of padding, of exactly `len` bytes.
fn padded_batch(len: usize) -> Vec<u8> {
    let mut body = GetManyRequest::encode_keys(&["k0", "k1", "k2", "k3"]);
    let pad = len - body.len() - 2;
    assert!(pad < 128);
    body.push(0x12); // field 2, length-delimited: not a field of GetManyRequest
    body.push(pad as u8);
    body.extend(std::iter::repeat_n(b'p', pad));
    assert_eq!(body.len(), len);
    body
}

/// "a body of more than `max_batch_keys` × (`max_key_bytes` + 8) bytes | `413 a batched get
/// is at most N bytes` (read no further)".
#[tokio::test]
async fn a_batch_body_over_its_byte_limit_is_413_without_being_read() {
    let (node, loads) = one_node(|b| b.max_batch_keys(4).max_key_bytes(16)).await;
    // 4 × (16 + 8) = 96 bytes.
    let r = batch(node.addr, &[], &padded_batch(96)).await;
    assert_eq!(
        batch_reply(&r).results.len(),
        4,
        "96 bytes, with an unknown field"
    );
    assert_eq!(loads.total(), 4);

    let r = batch(node.addr, &[], &padded_batch(97)).await;
    assert_text(&r, 413, "a batched get is at most 96 bytes", "97 bytes");

    // Chunked, no content-length: cut off once it passes the limit.
    let r = batch(
        node.addr,
        &[("transfer-encoding", "chunked")],
        &chunked(&padded_batch(97), 10),
    )
    .await;
    assert_text(
        &r,
        413,
        "a batched get is at most 96 bytes",
        "97 bytes chunked",
    );

    // "read no further": a content-length of 1 GiB, and 200 bytes of it sent.
    let r = batch(node.addr, &[("content-length", "1073741824")], &[b'p'; 200]).await;
    assert_text(
        &r,
        413,
        "a batched get is at most 96 bytes",
        "1 GiB announced, 200 sent",
    );

    // An endless chunked body, only its first chunks sent.
    let mut endless = req(
        "POST",
        "/_groupcache/users",
        &[("transfer-encoding", "chunked")],
        b"",
    );
    for _ in 0..20 {
        endless.extend_from_slice(b"a\r\n0123456789\r\n");
    }
    let r = raw(node.addr, &endless).await;
    assert_text(
        &r,
        413,
        "a batched get is at most 96 bytes",
        "endless chunked",
    );
    assert_eq!(loads.total(), 4, "an over-limit batch loaded something");
}

/// A body longer than its content-length: only content-length bytes are the request; the rest
/// is not a batch of its own. A body shorter than its content-length: not a whole request,
/// so nothing loaded, and the node does not hang on it.
#[tokio::test]
async fn a_body_that_disagrees_with_its_content_length_loads_nothing_extra() {
    let (node, loads) = one_node(|b| b).await;
    let first = GetManyRequest::encode_keys(&["first"]);
    let extra = GetManyRequest::encode_keys(&["smuggled"]);
    let mut bytes = req(
        "POST",
        "/_groupcache/users",
        &[("content-length", &first.len().to_string())],
        &first,
    );
    bytes.extend_from_slice(&extra);
    let r = raw(node.addr, &bytes).await;
    let reply = batch_reply(&r);
    assert_eq!(reply.results.len(), 1);
    assert_eq!(loads.count("first"), 1);
    assert_eq!(
        loads.count("smuggled"),
        0,
        "bytes past the content-length were loaded"
    );

    // Shorter: 100 announced, 9 sent, then the sender half-closes.
    let short = GetManyRequest::encode_keys(&["shorter"]);
    let bytes = req(
        "POST",
        "/_groupcache/users",
        &[("content-length", "100")],
        &short,
    );
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        let mut stream = TcpStream::connect(node.addr).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut all = Vec::new();
        let _ = stream.read_to_end(&mut all).await;
        all
    })
    .await
    .expect("the node closed or answered within 10 s");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        !text.starts_with("HTTP/1.1 200"),
        "a cut-off body was answered 200: {text:?}"
    );
    assert_eq!(loads.count("shorter"), 0, "a cut-off body was loaded");
}

/// "`x-groupcache-max-value-bytes` bounds the sum of the reply's values. The owner answers
/// keys in order and gives `reply-full` to each one that no longer fits (and `too-large` to
/// one over the limit on its own)".
#[tokio::test]
async fn a_batch_reply_is_bounded_by_the_askers_value_limit() {
    let (node, _loads) = one_node(|b| b).await;
    let big = "b".repeat(20); // value-of:bbbb…: 29 bytes
    let keys = ["a", "a2", big.as_str(), "a3"]; // 10, 11, 29, 11 bytes
    let body = GetManyRequest::encode_keys(&keys);
    let r = batch(node.addr, &[("x-groupcache-max-value-bytes", "25")], &body).await;
    let reply = batch_reply(&r);
    let got: Vec<(Option<&[u8]>, Option<&str>)> = reply
        .results
        .iter()
        .map(|r| (r.value.as_deref(), r.error.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some(&b"value-of:a"[..]), None),
            (Some(&b"value-of:a2"[..]), None),
            (None, Some("too-large")),
            (None, Some("reply-full")),
        ]
    );
    let total: usize = reply
        .results
        .iter()
        .filter_map(|r| r.value.as_ref())
        .map(|v| v.len())
        .sum();
    assert!(total <= 25, "values sum to {total}");

    // Duplicates count twice toward the budget.
    let body = GetManyRequest::encode_keys(&["a", "a", "a"]);
    let r = batch(node.addr, &[("x-groupcache-max-value-bytes", "20")], &body).await;
    let reply = batch_reply(&r);
    let errors: Vec<Option<&str>> = reply.results.iter().map(|r| r.error.as_deref()).collect();
    assert_eq!(errors, vec![None, None, Some("reply-full")]);
}

/// "`POST {base_path}{source}?remove` with a `GetManyRequest` naming the keys ..., answered
/// `200` and an empty body once the peer has dropped each"; "The same checks as a batched
/// get's refuse a bad request, and a query other than `remove` is `400`".
#[tokio::test]
async fn a_batched_removal_drops_its_keys_and_other_queries_are_400() {
    let (node, loads) = one_node(|b| b).await;
    prime(&node, &loads, "r1", 1).await;
    prime(&node, &loads, "r2", 1).await;
    prime(&node, &loads, "keep", 1).await;
    let body = GetManyRequest::encode_keys(&["r1", "r2", "never-loaded"]);
    for query in ["?other", "?remove=1", "?key=r1", "?remove&x", "?"] {
        let target = format!("/_groupcache/users{query}");
        let r = send(node.addr, "POST", &target, &[], &body).await;
        assert_eq!(r.status, 400, "{target}: {:?}", r.text());
        assert_eq!(r.header("x-groupcache-extensions"), Some("1"), "{target}");
    }
    let r = send(
        node.addr,
        "POST",
        "/_groupcache/users?remove",
        &[],
        b"\xff\xff",
    )
    .await;
    assert_text(
        &r,
        400,
        "the body is not a GetManyRequest",
        "garbage removal",
    );
    // Nothing dropped, nothing loaded.
    prime(&node, &loads, "r1", 1).await;
    assert_eq!(loads.count("never-loaded"), 0);

    let r = send(node.addr, "POST", "/_groupcache/users?remove", &[], &body).await;
    assert_eq!((r.status, r.body.len()), (200, 0), "{:?}", r.text());
    assert_eq!(loads.count("never-loaded"), 0, "a removal loaded its key");
    prime(&node, &loads, "r1", 2).await;
    prime(&node, &loads, "r2", 2).await;
    prime(&node, &loads, "keep", 1).await;
}

// ---------------------------------------------------------------------------------------------
// Writes.

/// "keeps the value in its main cache for `ttl_ms` ... It answers `200` and an empty body";
/// `GetResponse` "`value` always set (`0a 00` for an empty value)" and `expire` "when the
/// value has a TTL".
#[tokio::test]
async fn a_put_stores_the_value_as_sent_and_a_get_serves_it_without_loading() {
    let (node, loads) = one_node(|b| b).await;
    let value = b"\x00written\xff value";
    let r = send(node.addr, "PUT", "/_groupcache/users?key=w%3A1", &[], value).await;
    assert_eq!((r.status, r.body.len()), (200, 0), "{:?}", r.text());
    assert_eq!(r.header("x-groupcache-extensions"), Some("1"));
    let reply = value_of_reply(&get(node.addr, "/_groupcache/users/w%3A1").await);
    assert_eq!(reply.value.as_deref(), Some(&value[..]));
    assert_eq!(reply.expire, None);
    assert_eq!(loads.count("w:1"), 0, "a written key was loaded");

    let r = send(
        node.addr,
        "PUT",
        "/_groupcache/users?key=w%3A2&ttl_ms=600000",
        &[],
        b"v",
    )
    .await;
    assert_eq!(r.status, 200);
    let reply = value_of_reply(&get(node.addr, "/_groupcache/users/w%3A2").await);
    assert_eq!(reply.value.as_deref(), Some(&b"v"[..]));
    let expire = reply.expire.expect("a value with a TTL has expire");
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    assert!(
        expire > now_ns && expire <= now_ns + 601_000_000_000,
        "expire {expire}"
    );

    let r = send(node.addr, "PUT", "/_groupcache/users?key=empty", &[], b"").await;
    assert_eq!(r.status, 200);
    let r = get(node.addr, "/_groupcache/users/empty").await;
    assert!(
        r.body.ends_with(&[0x0a, 0x00]),
        "an empty value is 0a 00: {:02x?}",
        r.body
    );
    assert_eq!(value_of_reply(&r).value.as_deref(), Some(&b""[..]));
    // An empty value fits a limit of 0.
    let r = send(
        node.addr,
        "GET",
        "/_groupcache/users/empty",
        &[("x-groupcache-max-value-bytes", "0")],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(loads.total(), 0);
}

/// "It refuses, loading nothing: a value over its `max_value_bytes` (`413 a value is at most N
/// bytes`, read no further), a query that is not `key=...` or `key=...&ttl_ms=N` (`400`), a
/// key over `max_key_bytes` (`414`), an unknown source (`404 no such group`)".
#[tokio::test]
async fn a_bad_put_is_refused_and_writes_nothing() {
    let (node, loads) = one_node(|b| b.max_value_bytes(8).max_key_bytes(16)).await;
    let r = send(
        node.addr,
        "PUT",
        "/_groupcache/users?key=p",
        &[],
        b"123456789",
    )
    .await;
    assert_text(&r, 413, "a value is at most 8 bytes", "9 bytes");
    let r = send(
        node.addr,
        "PUT",
        "/_groupcache/users?key=p",
        &[("content-length", "1073741824")],
        &[b'v'; 200],
    )
    .await;
    assert_text(
        &r,
        413,
        "a value is at most 8 bytes",
        "1 GiB announced, 200 sent",
    );
    let r = send(
        node.addr,
        "PUT",
        "/_groupcache/users?key=p",
        &[("transfer-encoding", "chunked")],
        &chunked(b"123456789", 2),
    )
    .await;
    assert_text(&r, 413, "a value is at most 8 bytes", "9 bytes chunked");

    for query in [
        "",
        "?k=p",
        "?key=p&ttl_ms=abc",
        "?key=p&ttl_ms=-1",
        "?key=p&ttl_ms=",
        "?key=p&ttl_ms=1&x=2",
        "?key=p&key=p",
        "?key=%zz",
        "?ttl_ms=5",
        "?key=p&ttl=5",
    ] {
        let target = format!("/_groupcache/users{query}");
        let r = send(node.addr, "PUT", &target, &[], b"1").await;
        assert_eq!(r.status, 400, "{target}: {:?}", r.text());
        assert_eq!(r.header("x-groupcache-extensions"), Some("1"), "{target}");
    }
    let r = send(
        node.addr,
        "PUT",
        &format!("/_groupcache/users?key={}", "k".repeat(17)),
        &[],
        b"1",
    )
    .await;
    assert_text(&r, 414, "key too long", "PUT of a 17-byte key");
    let r = send(node.addr, "PUT", "/_groupcache/nope?key=p", &[], b"1").await;
    assert_text(&r, 404, "no such group: nope", "PUT to an unknown source");

    // Nothing was written: the get loads the key from the source.
    let reply = value_of_reply(&get(node.addr, "/_groupcache/users/p").await);
    assert_eq!(reply.value.as_deref(), Some(value_of("p").as_ref()));
    assert_eq!(loads.count("p"), 1);
}

// ---------------------------------------------------------------------------------------------
// Peer authentication, closed path, shutdown.

/// docs/security.md: "A node answers `401` to a request whose credential is missing,
/// malformed, signed with another secret, for another method or path (tampered), more than 30
/// seconds away from its clock (expired), or already seen (replayed)"; "A refused credential
/// costs no cache or data-source work"; "`n` and `s` are read in either case and have exactly
/// 32 and 64 hex digits"; each refusal counted by reason.
#[tokio::test]
async fn a_refused_credential_is_401_counted_and_loads_nothing() {
    let (node, loads) = one_node(|b| b.peer_secret(SECRET)).await;
    let sender = 0x0d0c_0000_0000_0001;
    let path = "/_groupcache/users/s%3A1";
    let t = now();
    let good = credential(SECRET, "GET", path, t, sender, 1);
    let upper_nonce = {
        let (head, sig) = good.split_once(",s=").unwrap();
        format!(
            "{},s={}",
            head.to_uppercase().replace("T=", "t=").replace("N=", "n="),
            sig.to_uppercase()
        )
    };
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "missing"),
        ("garbage", Some("garbage".into()), "malformed"),
        ("empty", Some(String::new()), "malformed"),
        (
            "16-digit nonce",
            Some(format!("t={t},n=0d0c000000000001,s={}", "0".repeat(64))),
            "malformed",
        ),
        ("extra field", Some(format!("{good},x=1")), "malformed"),
        (
            "other secret",
            Some(credential(
                "another secret, 32 bytes or more!!",
                "GET",
                path,
                t,
                sender,
                2,
            )),
            "bad_signature",
        ),
        (
            "other method",
            Some(credential(SECRET, "DELETE", path, t, sender, 3)),
            "bad_signature",
        ),
        (
            "other path",
            Some(credential(
                SECRET,
                "GET",
                "/_groupcache/users/s%3A2",
                t,
                sender,
                4,
            )),
            "bad_signature",
        ),
        (
            "past",
            Some(credential(SECRET, "GET", path, t - 120, sender, 5)),
            "expired",
        ),
        (
            "future",
            Some(credential(SECRET, "GET", path, t + 120, sender, 6)),
            "expired",
        ),
    ];
    for (what, auth, _reason) in &cases {
        let headers: Vec<(&str, &str)> = auth
            .iter()
            .map(|a| ("x-groupcache-auth", a.as_str()))
            .collect();
        let r = send(node.addr, "GET", path, &headers, b"").await;
        assert_text_prefix(&r, 401, "unauthorized: ", what);
    }
    assert_eq!(loads.total(), 0, "a refused request loaded something");
    let refused = node.cache.stats().cluster.refused_requests;
    assert_eq!(refused.missing, 1, "{refused:?}");
    assert_eq!(refused.malformed, 4, "{refused:?}");
    assert_eq!(refused.bad_signature, 3, "{refused:?}");
    assert_eq!(refused.expired, 2, "{refused:?}");

    // The right credential, in upper-case hex: served.
    let r = signed(node.addr, &upper_nonce, "GET", path, b"").await;
    value_of_reply(&r);
    assert_eq!(loads.count("s:1"), 1);
    // The same credential again: replayed.
    let r = signed(node.addr, &good, "GET", path, b"").await;
    assert_text_prefix(&r, 401, "unauthorized: ", "replayed");
    assert_eq!(node.cache.stats().cluster.refused_requests.replayed, 1);

    // Below the window: 10,000 accepted, then 1.
    let target = "/_groupcache/users/s%3A3";
    let auth = credential(SECRET, "GET", target, t, sender, 10_000);
    let r = signed(node.addr, &auth, "GET", target, b"").await;
    assert_eq!(r.status, 200);
    let auth = credential(SECRET, "GET", target, t, sender, 2);
    let r = signed(node.addr, &auth, "GET", target, b"").await;
    assert_eq!(r.status, 401, "below the window");
    assert_eq!(node.cache.stats().cluster.refused_requests.replayed, 2);
}

/// "A request is checked in this order: shutdown (`503`), credential (`401`, `403`), method
/// (`405`), then the path"; the probe is signed like a get.
#[tokio::test]
async fn the_credential_is_checked_before_the_method_and_the_path() {
    let (node, loads) = one_node(|b| b.peer_secret(SECRET)).await;
    let sender = 0x0d0c_0000_0000_0002;
    for (method, target) in [
        ("PATCH", "/_groupcache/users/k"),
        ("GET", "/_groupcache/nope/k"),
        ("GET", "/_groupcache/users/%zz"),
        ("GET", "/_groupcache/"),
        ("DELETE", "/_groupcache/users"),
    ] {
        let r = send(node.addr, method, target, &[], b"").await;
        assert_text_prefix(
            &r,
            401,
            "unauthorized: ",
            &format!("unsigned {method} {target}"),
        );
    }
    let signed = |method: &str, target: &str, seq: u64| {
        let auth = credential(SECRET, method, target, now(), sender, seq);
        req(method, target, &[("x-groupcache-auth", &auth)], b"")
    };
    let r = raw(node.addr, &signed("PATCH", "/_groupcache/users/k", 1)).await;
    assert_eq!(r.status, 405);
    let r = raw(node.addr, &signed("GET", "/_groupcache/nope/k", 2)).await;
    assert_eq!(r.status, 404);
    let r = raw(node.addr, &signed("GET", "/_groupcache/", 3)).await;
    assert_text(&r, 200, "groupcache peer path", "a signed probe");
    assert_eq!(loads.total(), 0);
}

/// "a removal names its key there" (in the `?query`, which is signed): a `DELETE` signed over
/// its path without the query, or over another key, is refused and drops nothing.
#[tokio::test]
async fn a_delete_is_signed_over_its_query() {
    let (node, loads) = one_node(|b| b.peer_secret(SECRET)).await;
    let sender = 0x0d0c_0000_0000_0003;
    let get_target = "/_groupcache/users/del";
    let auth = credential(SECRET, "GET", get_target, now(), sender, 1);
    value_of_reply(&signed(node.addr, &auth, "GET", get_target, b"").await);
    let target = "/_groupcache/users?key=del";
    for (seq, signed_path) in [
        (2, "/_groupcache/users"),
        (3, "/_groupcache/users?key=other"),
    ] {
        let auth = credential(SECRET, "DELETE", signed_path, now(), sender, seq);
        let r = signed(node.addr, &auth, "DELETE", target, b"").await;
        assert_eq!(r.status, 401, "signed over {signed_path}");
    }
    // Still cached: a signed get loads nothing more.
    let auth = credential(SECRET, "GET", get_target, now(), sender, 4);
    value_of_reply(&signed(node.addr, &auth, "GET", get_target, b"").await);
    assert_eq!(loads.count("del"), 1, "a refused DELETE dropped the key");
    let auth = credential(SECRET, "DELETE", target, now(), sender, 5);
    let r = signed(node.addr, &auth, "DELETE", target, b"").await;
    assert_eq!(r.status, 200, "signed over its path and query");
}

/// "Signed over the body ... A changed body, or a credential over the path alone, is refused
/// `401` and nothing is loaded"; "a request without a credential, or with one malformed or out
/// of its time, is refused before its body is read".
#[tokio::test]
async fn a_batched_get_is_signed_over_its_body_and_refused_before_reading_it() {
    let (node, loads) = one_node(|b| b.peer_secret(SECRET)).await;
    let sender = 0x0d0c_0000_0000_0004;
    let target = "/_groupcache/users";
    let body = GetManyRequest::encode_keys(&["b1", "b2"]);
    let changed = GetManyRequest::encode_keys(&["b1", "evil"]);
    let post = |auth: &str, body: &[u8]| req("POST", target, &[("x-groupcache-auth", auth)], body);

    let auth = credential_over_body("POST", target, &body, sender, 1);
    let r = raw(node.addr, &post(&auth, &changed)).await;
    assert_text_prefix(&r, 401, "unauthorized: ", "a changed body");
    let auth = credential(SECRET, "POST", target, now(), sender, 2);
    let r = raw(node.addr, &post(&auth, &body)).await;
    assert_text_prefix(&r, 401, "unauthorized: ", "over the path alone");
    let auth = credential(
        SECRET,
        "POST",
        &with_body_hash(target, &body).to_uppercase(),
        now(),
        sender,
        3,
    );
    let r = raw(node.addr, &post(&auth, &body)).await;
    assert_eq!(
        r.status, 401,
        "hash in upper case (the docs say lower-case)"
    );
    assert_eq!(loads.total(), 0, "a refused batch loaded something");

    // Refused before the body is read: 1 GiB announced, none sent.
    for (what, auth) in [
        ("no credential", None),
        ("malformed", Some("t=1,n=2,s=3".to_owned())),
        (
            "expired",
            Some(credential(SECRET, "POST", target, now() - 300, sender, 4)),
        ),
    ] {
        let mut headers = vec![("content-length", "1073741824".to_owned())];
        if let Some(auth) = auth {
            headers.push(("x-groupcache-auth", auth));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r = send(node.addr, "POST", target, &headers, b"").await;
        assert_text_prefix(&r, 401, "unauthorized: ", what);
    }

    let auth = credential_over_body("POST", target, &body, sender, 5);
    let reply = batch_reply(&raw(node.addr, &post(&auth, &body)).await);
    assert_eq!(reply.results.len(), 2);
    assert_eq!(loads.count("evil"), 0);
    assert_eq!((loads.count("b1"), loads.count("b2")), (1, 1));
}

/// "`tests/it/auth.rs` (`a_write_is_signed_over_its_value`) that a credential over another
/// value is refused and writes nothing": the credential of a `PUT` is "over the path, the query
/// and the body".
#[tokio::test]
async fn a_put_is_signed_over_its_query_and_value() {
    let (node, loads) = one_node(|b| b.peer_secret(SECRET)).await;
    let sender = 0x0d0c_0000_0000_0005;
    let target = "/_groupcache/users?key=pw";
    let put = |auth: &str, body: &[u8]| req("PUT", target, &[("x-groupcache-auth", auth)], body);
    let auth = credential_over_body("PUT", target, b"mine", sender, 1);
    let r = raw(node.addr, &put(&auth, b"evil")).await;
    assert_eq!(r.status, 401, "a value changed after signing");
    let auth = credential_over_body("PUT", "/_groupcache/users?key=other", b"mine", sender, 2);
    let r = raw(node.addr, &put(&auth, b"mine")).await;
    assert_eq!(r.status, 401, "signed for another key");
    let auth = credential_over_body("PUT", target, b"mine", sender, 3);
    let r = raw(node.addr, &put(&auth, b"mine")).await;
    assert_eq!(r.status, 200, "signed over its value: {:?}", r.text());
    // Replayed: refused.
    let r = raw(node.addr, &put(&auth, b"mine")).await;
    assert_eq!(r.status, 401, "a replayed write");

    let get_target = "/_groupcache/users/pw";
    let auth = credential(SECRET, "GET", get_target, now(), sender, 4);
    let reply = value_of_reply(&signed(node.addr, &auth, "GET", get_target, b"").await);
    assert_eq!(reply.value.as_deref(), Some(&b"mine"[..]));
    assert_eq!(loads.total(), 0);
}

/// "any request to a node without a peer secret whose peer path is closed | 403 | text |
/// `forbidden: this node has no peer secret and its peer path is closed`".
#[tokio::test]
async fn a_closed_peer_path_is_403_for_everything() {
    let loads = Loads::default();
    let cache = support::single_node(&loads);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = support::serve(listener, support::app(&cache)).await;
    let body = GetManyRequest::encode_keys(&["x"]);
    for (method, target, body) in [
        ("GET", "/_groupcache/", &b""[..]),
        ("GET", "/_groupcache/users/x", b""),
        ("DELETE", "/_groupcache/users?key=x", b""),
        ("DELETE", "/_groupcache/users", b""),
        ("POST", "/_groupcache/users", &body[..]),
        ("PUT", "/_groupcache/users?key=x", b"v"),
        ("PATCH", "/_groupcache/users/x", b""),
    ] {
        let r = send(addr, method, target, &[], body).await;
        assert_text(
            &r,
            403,
            "forbidden: this node has no peer secret and its peer path is closed",
            &format!("{method} {target}"),
        );
    }
    assert_eq!(loads.total(), 0);
    assert_eq!(cache.stats().cluster.refused_requests.closed, 7);
    server.abort();
}

/// "any request once `shutdown()` was called | 503 | text | `shutting down`", first in the
/// order of checks (before the credential).
#[tokio::test]
async fn after_shutdown_every_peer_request_is_503_and_loads_nothing() {
    let (node, loads) = one_node(|b| b.peer_secret(SECRET)).await;
    node.cache.shutdown().await;
    let body = GetManyRequest::encode_keys(&["x"]);
    let auth = credential(
        SECRET,
        "GET",
        "/_groupcache/users/x",
        now(),
        0x0d0c_0000_0000_0006,
        1,
    );
    for (method, target, body, auth) in [
        ("GET", "/_groupcache/users/x", &b""[..], Some(auth.as_str())),
        ("GET", "/_groupcache/users/x", b"", None),
        ("GET", "/_groupcache/", b"", None),
        ("POST", "/_groupcache/users", &body[..], None),
        ("DELETE", "/_groupcache/users", b"", None),
        ("PATCH", "/_groupcache/users/x", b"", None),
    ] {
        let headers: Vec<(&str, &str)> =
            auth.map(|a| ("x-groupcache-auth", a)).into_iter().collect();
        let r = send(node.addr, method, target, &headers, body).await;
        assert_text(&r, 503, "shutting down", &format!("{method} {target}"));
    }
    assert_eq!(loads.total(), 0);
    assert_eq!(node.cache.stats().cluster.refused_requests.shutting_down, 6);
}

/// Beyond the letter of the docs: "`413 a batched get is at most N bytes` (read no further)"
/// and "`413 a value is at most N bytes`, read no further". A `content-length` over the limit
/// already says the body is over it; the node could answer before a byte of it arrives, as it
/// does for a refused credential ("refused before its body is read").
#[tokio::test]
async fn a_content_length_over_the_limit_is_refused_before_any_body_arrives() {
    let (node, loads) =
        one_node(|b| b.max_batch_keys(4).max_key_bytes(16).max_value_bytes(8)).await;
    let r = batch(node.addr, &[("content-length", "1073741824")], b"").await;
    assert_text(
        &r,
        413,
        "a batched get is at most 96 bytes",
        "POST, 1 GiB announced, none sent",
    );
    let r = send(
        node.addr,
        "PUT",
        "/_groupcache/users?key=p",
        &[("content-length", "1073741824")],
        b"",
    )
    .await;
    assert_text(
        &r,
        413,
        "a value is at most 8 bytes",
        "PUT, 1 GiB announced, none sent",
    );
    assert_eq!(loads.total(), 0);
}

// ---------------------------------------------------------------------------------------------
// Removals and writes racing a load under way.

/// Starts a get of `key` on `node` whose load is held by the closed gate of `loads`, and waits
/// until the load has started.
async fn held_get(node: &Node, loads: &Loads, key: &str) -> tokio::task::JoinHandle<Raw> {
    loads.close();
    let addr = node.addr;
    let target = format!("/_groupcache/users/{}", esc(key));
    let task = tokio::spawn(async move { get(addr, &target).await });
    let key = key.to_owned();
    eventually("the held load started", Duration::from_secs(5), || {
        loads.count(&key) == 1
    })
    .await;
    task
}

/// "`DELETE {base_path}{group}?key={key}` | 200 | ... the key is dropped from this node's main
/// and hot cache, and a load of it already running will not store its value"; "`DELETE
/// {base_path}{group}` (no key) | 200 | ... no load running will store its value"; "`POST
/// {base_path}{source}?remove` ... once the peer has dropped each (revoking its loads under
/// way)".
#[tokio::test]
async fn a_removal_during_a_load_keeps_the_loaded_value_out_of_the_cache() {
    /// The bytes of a removal request of a key.
    type Removal = Box<dyn Fn(&str) -> Vec<u8>>;
    let (node, loads) = one_node(|b| b).await;
    let removals: [(&str, Removal); 3] = [
        (
            "DELETE ?key=",
            Box::new(|k: &str| {
                req(
                    "DELETE",
                    &format!("/_groupcache/users?key={}", esc(k)),
                    &[],
                    b"",
                )
            }),
        ),
        (
            "DELETE of the group",
            Box::new(|_k: &str| req("DELETE", "/_groupcache/users", &[], b"")),
        ),
        (
            "POST ?remove",
            Box::new(|k: &str| {
                req(
                    "POST",
                    "/_groupcache/users?remove",
                    &[],
                    &GetManyRequest::encode_keys(&[k]),
                )
            }),
        ),
    ];
    for (what, removal) in removals.iter() {
        let key = format!("race:{what}");
        let task = held_get(&node, &loads, &key).await;
        let r = raw(node.addr, &removal(&key)).await;
        assert_eq!(r.status, 200, "{what}: {:?}", r.text());
        loads.open();
        let answer = task.await.unwrap();
        assert_eq!(
            answer.status, 200,
            "{what}: the get under way is still answered"
        );
        // The value of the revoked load was not kept: the next get loads again.
        value_of_reply(&get(node.addr, &format!("/_groupcache/users/{}", esc(&key))).await);
        assert_eq!(
            loads.count(&key),
            2,
            "{what}: the revoked load's value was stored"
        );
    }
}

/// "The owner revokes any load of the key under way, so that a load that started before the
/// write cannot put its older value back".
#[tokio::test]
async fn a_put_during_a_load_is_not_overwritten_by_the_older_value() {
    let (node, loads) = one_node(|b| b).await;
    let task = held_get(&node, &loads, "race:put").await;
    let r = send(
        node.addr,
        "PUT",
        "/_groupcache/users?key=race%3Aput",
        &[],
        b"new",
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.text());
    loads.open();
    assert_eq!(task.await.unwrap().status, 200);
    let reply = value_of_reply(&get(node.addr, "/_groupcache/users/race%3Aput").await);
    assert_eq!(
        reply.value.as_deref(),
        Some(&b"new"[..]),
        "the older load put its value back"
    );
    assert_eq!(loads.count("race:put"), 1);
}

// ---------------------------------------------------------------------------------------------
// Odd requests: each answered, none loads what it should not, and the node survives them.

#[tokio::test]
async fn odd_requests_are_answered_and_the_node_survives_them() {
    let (node, loads) = one_node(|b| b.max_batch_keys(8)).await;
    let mut seen = Vec::new();
    let batch = |keys: &[&str]| GetManyRequest::encode_keys(keys);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("NUL in a key", req("GET", "/_groupcache/users/a%00b", &[], b"")),
        ("empty group", req("GET", "/_groupcache//k", &[], b"")),
        ("escaped slash as group", req("GET", "/_groupcache/%2F/k", &[], b"")),
        ("absolute form", format!("GET http://{}/_groupcache/users/abs HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n", node.addr).into_bytes()),
        ("HTTP/1.0", b"GET /_groupcache/users/old HTTP/1.0\r\n\r\n".to_vec()),
        ("raw UTF-8 in the path", "GET /_groupcache/users/ключ HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".as_bytes().to_vec()),
        ("a fragment", req("GET", "/_groupcache/users/frag#x", &[], b"")),
        ("a query on a get", req("GET", "/_groupcache/users/withq?x=1", &[], b"")),
        ("a huge value limit", req("GET", "/_groupcache/users/lim", &[("x-groupcache-max-value-bytes", "18446744073709551616")], b"")),
        ("two value limits", req("GET", "/_groupcache/users/lim2", &[("x-groupcache-max-value-bytes", "1"), ("x-groupcache-max-value-bytes", "100")], b"")),
        ("a get with a body", req("GET", "/_groupcache/users/gbody", &[], b"hello")),
        ("DELETE of the empty key", req("DELETE", "/_groupcache/users?key=", &[], b"")),
        ("PUT of the empty key", req("PUT", "/_groupcache/users?key=", &[], b"v")),
        ("PUT ttl 0", req("PUT", "/_groupcache/users?key=ttl0&ttl_ms=0", &[], b"v")),
        ("PUT ttl huge", req("PUT", "/_groupcache/users?key=ttlhuge&ttl_ms=18446744073709551615", &[], b"v")),
        ("PUT ttl over u64", req("PUT", "/_groupcache/users?key=ttlover&ttl_ms=99999999999999999999999", &[], b"v")),
        ("batch: empty key", req("POST", "/_groupcache/users", &[], &batch(&[""]))),
        ("batch: NUL key", req("POST", "/_groupcache/users", &[], &batch(&["a\0b"]))),
        ("batch: 8 copies", req("POST", "/_groupcache/users", &[], &batch(&["dup"; 8]))),
        ("batch: limit 0", req("POST", "/_groupcache/users", &[("x-groupcache-max-value-bytes", "0")], &batch(&["z0", "z1"]))),
        ("batch: fail and panic", req("POST", "/_groupcache/users", &[], &batch(&["fail:b", "panic:b", "missing:b"]))),
        ("batch: to an escaped group", req("POST", "/_groupcache/us%65rs", &[], &batch(&["esc-group"]))),
        ("batch: to a bad escape", req("POST", "/_groupcache/us%zz", &[], &batch(&["bad-group"]))),
        ("batch: to the group with a slash", req("POST", "/_groupcache/users/", &[], &batch(&["slash"]))),
        ("batch: deep nesting field", req("POST", "/_groupcache/users", &[], b"\x13\x13\x13\x13\x13\x13\x13\x13")),
        ("batch: group field 3 start", req("POST", "/_groupcache/users", &[], b"\x1b\x0a\x01a\x1c")),
        ("a header line without a colon", b"GET /_groupcache/users/hdr HTTP/1.1\r\nhost: x\r\nbogus\r\nconnection: close\r\n\r\n".to_vec()),
        ("two content-lengths", b"POST /_groupcache/users HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ncontent-length: 4\r\nconnection: close\r\n\r\n\x0a\x01a\x00".to_vec()),
        ("content-length and chunked", b"POST /_groupcache/users HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\n\x0a\x01s\r\n0\r\n\r\n".to_vec()),
    ];
    for (what, bytes) in &cases {
        let r = raw(node.addr, bytes).await;
        seen.push(format!(
            "{what}: {} {:?} ext={:?}",
            r.status,
            String::from_utf8_lossy(&r.body[..r.body.len().min(80)]),
            r.header("x-groupcache-extensions")
        ));
        // The node survives: its probe is still answered.
        let probe = get(node.addr, "/_groupcache/").await;
        assert_eq!(probe.status, 200, "after {what}");
    }
    for line in &seen {
        eprintln!("{line}");
    }
    let mut loaded: Vec<String> = [
        "a\0b",
        "k",
        "abs",
        "old",
        "frag",
        "withq",
        "lim",
        "lim2",
        "gbody",
        "",
        "ttl0",
        "ttlhuge",
        "ttlover",
        "dup",
        "z0",
        "z1",
        "fail:b",
        "panic:b",
        "missing:b",
        "esc-group",
        "bad-group",
        "slash",
        "hdr",
        "a",
        "s",
        "ключ",
        "frag#x",
    ]
    .iter()
    .filter(|k| loads.count(k) > 0)
    .map(|k| format!("{k:?} x{}", loads.count(k)))
    .collect();
    loaded.sort();
    eprintln!("loaded: {loaded:?} (total {})", loads.total());
    assert_eq!(loads.count("dup"), 1, "8 copies of one key are loaded once");
    assert_eq!(loads.count("bad-group"), 0);
    assert_eq!(loads.count("slash"), 0, "POST to a key's path is 405");
    assert_eq!(
        loads.count("hdr"),
        0,
        "a malformed header line is not a request"
    );
}

/// "`GetManyResponse`: one per key asked"; `error` "`load`, `panicked`, ...: the owner's data
/// source failed, as `x-groupcache-error` says on a single get"; "`not-found`: the owner's
/// data source has no value for the key". Each key's answer in a batch is the answer a single
/// get of it has, whatever its neighbours do.
#[tokio::test]
async fn each_key_of_a_batch_is_answered_as_its_single_get_whatever_its_neighbours_do() {
    let (node, loads) = one_node(|b| b).await;
    // Without a panic among them: each key its own answer.
    let body = GetManyRequest::encode_keys(&["fail:m", "missing:m", "ok:m"]);
    let reply = batch_reply(&batch(node.addr, &[], &body).await);
    let got: Vec<(Option<&str>, bool)> = reply
        .results
        .iter()
        .map(|r| (r.error.as_deref(), r.value.is_some()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some("load"), false),
            (Some("not-found"), false),
            (None, true)
        ]
    );
    // With a key whose load panics among them.
    let keys = ["fail:n", "panic:n", "missing:n", "ok:n"];
    let body = GetManyRequest::encode_keys(&keys);
    let reply = batch_reply(&batch(node.addr, &[], &body).await);
    let got: Vec<(Option<&str>, bool)> = reply
        .results
        .iter()
        .map(|r| (r.error.as_deref(), r.value.is_some()))
        .collect();
    eprintln!("batch answers: {:?}", reply.results);
    eprintln!(
        "loads: fail {} panic {} missing {} ok {}",
        loads.count("fail:n"),
        loads.count("panic:n"),
        loads.count("missing:n"),
        loads.count("ok:n")
    );
    assert_eq!(
        got,
        vec![
            (Some("load"), false),
            (Some("panicked"), false),
            (Some("not-found"), false),
            (None, true)
        ],
        "per-key answers of [fail, panic, missing, ok]"
    );
}

/// "keeps the value in its main cache for `ttl_ms`": the largest `ttl_ms` the query takes is
/// kept, and a get of it answers (its `expire`, "Unix nanoseconds", must fit an int64).
#[tokio::test]
async fn a_put_with_the_largest_ttl_is_served_afterwards() {
    let (node, _loads) = one_node(|b| b).await;
    for (key, ttl) in [
        ("ttl-max", u64::MAX),
        ("ttl-i64", i64::MAX as u64),
        ("ttl-0", 0),
    ] {
        let target = format!("/_groupcache/users?key={key}&ttl_ms={ttl}");
        let r = send(node.addr, "PUT", &target, &[], b"v").await;
        eprintln!("PUT {key}: {} {:?}", r.status, r.text());
        if r.status == 200 {
            let r = get(node.addr, &format!("/_groupcache/users/{key}")).await;
            eprintln!(
                "GET {key}: {} {:?}",
                r.status,
                GetResponse::decode(&r.body[..]).ok()
            );
            assert_eq!(r.status, 200, "GET of {key}, written with ttl_ms={ttl}");
            let reply = GetResponse::decode(&r.body[..]).unwrap();
            if ttl > 0 {
                assert!(
                    reply.expire.is_none_or(|e| e > 0),
                    "{key}: expire {:?} went negative",
                    reply.expire
                );
            }
        } else {
            assert_eq!(r.status, 400, "{key}");
        }
    }
}
