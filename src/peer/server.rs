//! The peer server: answers `{base_path}{group}/{key}` as docs/protocol.md says ("Answers of
//! a node of this crate").

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use http::{Method, Response, StatusCode, Uri};

use super::auth::AUTH_HEADER;
use super::body::read_apart;
use http_body_util::LengthLimitError;
use sha2::{Digest as _, Sha256};

use crate::error::{BoxError, Error, ErrorKind};
use crate::node::{Entry, ForeignKind, ForeignRing, Get, Node, Origin};
use crate::protocol::ReplyBody;
use crate::protocol::{
    ERROR_HEADER, EXTENSIONS_HEADER, EXTENSIONS_VERSION, GetManyRequest, GetResponse, KeyResult,
    MAX_VALUE_HEADER, NOT_FOUND, NOT_FOUND_STATUS, PathError, REPLY_FULL, RING_HEADER,
    RING_KIND_HEADER, TOO_LARGE, UNAVAILABLE, batch_signed_target, error_token, parse_path,
    unescape,
};
use crate::ring::RingKind;

const PROTOBUF: HeaderValue = HeaderValue::from_static("application/x-protobuf");

/// The answer to a peer request: at once (a hit, or a refusal), or after a load.
pub(crate) enum Reply {
    Ready(Response<ReplyBody>),
    Later(Pin<Box<dyn Future<Output = Response<ReplyBody>> + Send>>),
}

impl From<Response<ReplyBody>> for Reply {
    fn from(response: Response<ReplyBody>) -> Self {
        Self::Ready(response)
    }
}

/// Answers one peer request to `uri` (its path under the base path, still escaped). A cache
/// hit is answered here and now; only a miss makes a (boxed) future, which waits for the
/// load. Every answer carries [`EXTENSIONS_HEADER`], so that a peer of this crate knows it may
/// send this node the extensions.
pub(crate) fn serve(node: &Arc<Node>, method: &Method, uri: &Uri, headers: &HeaderMap) -> Reply {
    let path = uri.path();
    // Admission (the drain, then the credential) comes before any other work, parsing
    // included. The signature covers the query too: a removal names its key there.
    let signed = uri.path_and_query().map_or(path, |pq| pq.as_str());
    if let Err(refused) = node.admit(method.as_str(), signed, headers.get(&AUTH_HEADER)) {
        return text(refused.status(), refused.to_string()).into();
    }
    let config = node.config();
    let rest = &path[config.base_path.len()..];
    let ring_fingerprint = ring_of(headers);
    if *method != Method::GET && *method != Method::DELETE {
        return method_not_allowed().into();
    }
    // The base path alone: what a peer asks to learn whether this node speaks the extensions
    // (a Go node answers it 400, loading nothing).
    if rest.is_empty() && *method == Method::GET {
        return text(StatusCode::OK, "groupcache peer path".into()).into();
    }
    // An escaped key is at most three times as long as the key itself.
    if rest.len() > config.max_key_bytes.saturating_mul(3).saturating_add(1024) {
        return text(StatusCode::URI_TOO_LONG, "key too long".into()).into();
    }
    // `DELETE {base}{group}?key={key}` drops one key, and `DELETE {base}{group}` the whole
    // source. A Go node answers both 400 and loads nothing: it reads no key in them.
    if *method == Method::DELETE && !rest.contains('/') {
        let Ok(source_name) = unescape(rest) else {
            return text(StatusCode::BAD_REQUEST, PathError::BadEscape.to_string()).into();
        };
        let key = match uri.query().map(removal_key) {
            None => None,
            Some(Ok(key)) => Some(key),
            Some(Err(error)) => return text(StatusCode::BAD_REQUEST, error.to_string()).into(),
        };
        if key
            .as_ref()
            .is_some_and(|key| key.len() > config.max_key_bytes)
        {
            return text(StatusCode::URI_TOO_LONG, "key too long".into()).into();
        }
        let Ok(source) = node.source(&source_name) else {
            return no_such_source(&source_name);
        };
        node.check_ring(ring_fingerprint);
        match key {
            Some(key) => source.remove(&key),
            None => source.clear(),
        }
        return empty(StatusCode::OK).into();
    }
    // The wire's "group" is a data source.
    let (source_name, key) = match parse_path(rest) {
        Ok(parts) => parts,
        Err(error) => return text(StatusCode::BAD_REQUEST, error.to_string()).into(),
    };
    if key.len() > config.max_key_bytes {
        return text(StatusCode::URI_TOO_LONG, "key too long".into()).into();
    }
    let Ok(source) = node.source(&source_name) else {
        return no_such_source(&source_name);
    };

    node.check_ring(ring_fingerprint);
    if *method == Method::DELETE {
        // The form of earlier versions of this crate, still served.
        source.remove(&key);
        return empty(StatusCode::OK).into();
    }
    let rate = source.served(&key, node.clock().now());
    // The asker's limit on a value's size, if it said (a Go node does not).
    let limit = headers
        .get(&MAX_VALUE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(u64::MAX);

    match node.get_entry(&source_name, &key, Origin::Peer) {
        Get::Ready(Some(result)) => answer(node, result, rate, limit).into(),
        Get::Ready(None) => text(StatusCode::INTERNAL_SERVER_ERROR, "no answer".into()).into(),
        Get::Load(load) => {
            let node = node.clone();
            Reply::Later(Box::pin(
                async move { answer(&node, load.await, rate, limit) },
            ))
        }
    }
}

/// Answers a peer request with a body: a batched get, `POST {base_path}{group}` with a
/// [`GetManyRequest`] (docs/protocol.md, "Batched gets"), or a write,
/// `PUT {base_path}{group}?key={key}` with the value ("Writes"). The body is read (bounded)
/// and the credential checked over the path and the body before anything else.
pub(crate) fn serve_with_body<B>(node: &Arc<Node>, parts: http::request::Parts, body: B) -> Reply
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let node = node.clone();
    Reply::Later(Box::pin(async move {
        answer_with_body(&node, parts, body).await
    }))
}

async fn answer_with_body<B>(
    node: &Arc<Node>,
    parts: http::request::Parts,
    body: B,
) -> Response<ReplyBody>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let config = node.config();
    let write = parts.method == Method::PUT;
    // Bounded before it is read: a value, or every key at its longest with a few bytes of
    // framing.
    let (limit, what) = if write {
        (config.max_value_bytes, "a value")
    } else {
        let keys = config.max_key_bytes.saturating_add(8);
        (config.max_batch_keys.saturating_mul(keys), "a batched get")
    };
    // The credential first, whatever the path: a stranger learns nothing of what it takes.
    let bytes = match read_signed(node, &parts, body, limit, what).await {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
    };
    let rest = &parts.uri.path()[config.base_path.len()..];
    if rest.is_empty() || rest.contains('/') {
        // A batched get or removal, and a write, name their group alone in the path.
        return method_not_allowed();
    }
    let Ok(source_name) = unescape(rest) else {
        return text(StatusCode::BAD_REQUEST, PathError::BadEscape.to_string());
    };
    if write {
        answer_write(node, &parts, &source_name, bytes)
    } else {
        answer_batch(node, &parts, &source_name, bytes).await
    }
}

/// Checks what of a request's credential needs no body, reads the body, at most `limit`
/// bytes, then checks the credential in full (over the path, the query and the body). The
/// refusal is the answer to send.
async fn read_signed<B>(
    node: &Node,
    parts: &http::request::Parts,
    body: B,
    limit: usize,
    what: &str,
) -> Result<Bytes, Response<ReplyBody>>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    // What needs no body first: a stranger's request costs no reading.
    node.admit_before_body(parts.headers.get(&AUTH_HEADER))
        .map_err(|refused| text(refused.status(), refused.to_string()))?;
    // A body announced longer than the limit is refused from its `content-length`, without
    // waiting for bytes that may never come.
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{what} is at most {limit} bytes"),
        )
    };
    if body.size_hint().lower() > u64::try_from(limit).unwrap_or(u64::MAX) {
        return Err(too_large());
    }
    // A body that stops coming is given up after the peer timeout, which bounds the sender's
    // whole exchange too.
    let timeout = node.peer_timeout();
    let Ok(read) = tokio::time::timeout(timeout, read_apart(body, limit)).await else {
        return Err(text(
            StatusCode::REQUEST_TIMEOUT,
            format!("{what} did not arrive within the peer timeout ({timeout:?})"),
        ));
    };
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(error) if error.is::<LengthLimitError>() => return Err(too_large()),
        Err(_) => {
            return Err(text(
                StatusCode::BAD_REQUEST,
                "the request body could not be read".into(),
            ));
        }
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |pq| pq.as_str());
    // Without a secret nothing is signed, and the body's digest is not made.
    node.admit_signing(
        parts.method.as_str(),
        || batch_signed_target(target, &Sha256::digest(&bytes)),
        parts.headers.get(&AUTH_HEADER),
    )
    .map_err(|refused| text(refused.status(), refused.to_string()))?;
    Ok(bytes)
}

/// A write: keeps the body as the key's value here, revoking any load of the key under way.
fn answer_write(
    node: &Node,
    parts: &http::request::Parts,
    source_name: &str,
    value: Bytes,
) -> Response<ReplyBody> {
    let config = node.config();
    let (key, ttl) = match parts.uri.query().map(write_query) {
        Some(Ok(parsed)) => parsed,
        Some(Err(error)) => return text(StatusCode::BAD_REQUEST, error.to_string()),
        None => return text(StatusCode::BAD_REQUEST, PathError::BadQuery.to_string()),
    };
    if key.len() > config.max_key_bytes {
        return text(StatusCode::URI_TOO_LONG, "key too long".into());
    }
    let Ok(source) = node.source(source_name) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no such group: {source_name}"),
        );
    };
    node.check_ring(ring_of(&parts.headers));
    node.write_here(source, &key, value, ttl);
    empty(StatusCode::OK)
}

/// The query of a write: `key={escaped key}`, then `&ttl_ms={milliseconds}` or nothing.
fn write_query(query: &str) -> Result<(std::borrow::Cow<'_, str>, Option<Duration>), PathError> {
    let (key, ttl) = match query.split_once('&') {
        Some((key, ttl)) => (key, Some(ttl)),
        None => (query, None),
    };
    let key = removal_key(key)?;
    let ttl = match ttl.map(|ttl| ttl.strip_prefix("ttl_ms=").map(str::parse::<u64>)) {
        None => None,
        Some(Some(Ok(ms))) => Some(Duration::from_millis(ms)),
        Some(_) => return Err(PathError::BadQuery),
    };
    Ok((key, ttl))
}

async fn answer_batch(
    node: &Arc<Node>,
    parts: &http::request::Parts,
    source_name: &str,
    bytes: Bytes,
) -> Response<ReplyBody> {
    let config = node.config();
    // The keys are views of the body: a `string` on the wire, so each must be UTF-8.
    let Some(keys) = GetManyRequest::decode_keys(&bytes) else {
        return text(
            StatusCode::BAD_REQUEST,
            "the body is not a GetManyRequest".into(),
        );
    };
    if keys.len() > config.max_batch_keys {
        return text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} keys in one batch, over this node's limit of {}",
                keys.len(),
                config.max_batch_keys
            ),
        );
    }
    if keys.iter().any(|key| key.len() > config.max_key_bytes) {
        return text(StatusCode::URI_TOO_LONG, "key too long".into());
    }
    let Ok(source) = node.source(source_name) else {
        return match no_such_source(source_name) {
            Reply::Ready(response) => response,
            Reply::Later(later) => later.await,
        };
    };
    node.check_ring(ring_of(&parts.headers));
    match parts.uri.query() {
        None => {}
        // `?remove`: drop the keys, as a `DELETE` of each would.
        Some("remove") => {
            for key in &keys {
                source.remove(key);
            }
            return empty(StatusCode::OK);
        }
        Some(_) => return text(StatusCode::BAD_REQUEST, PathError::BadQuery.to_string()),
    }
    // The asker's limit on the whole reply's values.
    let limit = parts
        .headers
        .get(&MAX_VALUE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(u64::MAX);
    let now = node.clock().now();
    let rates = source.served_many(&keys, now);
    let results = node.get_many_for_peer(source, &keys).await;
    // The reply is written as each result comes (a `GetManyResponse`, field by field), in a
    // buffer with room for every value and a little framing.
    let values: usize = results
        .iter()
        .map(|result| result.as_ref().map_or(0, |entry| entry.value.len()))
        .sum();
    let mut body = Vec::with_capacity(values.saturating_add(keys.len() * 24));
    let mut left = limit;
    for (result, rate) in results.into_iter().zip(rates) {
        match result {
            Ok(entry) => {
                let len = entry.value.len() as u64;
                if len > limit {
                    KeyResult::failed(TOO_LARGE, None).encode_field(&mut body);
                } else if len > left {
                    KeyResult::failed(REPLY_FULL, None).encode_field(&mut body);
                } else {
                    left -= len;
                    let expire = node.expire_to_wire(&entry);
                    KeyResult::encode_value(&mut body, &entry.value, rate, expire);
                }
            }
            Err(error) if error.kind() == ErrorKind::NotFound => {
                KeyResult::failed(NOT_FOUND, None).encode_field(&mut body);
            }
            Err(error) => KeyResult::failed(
                error_token(error.kind()).unwrap_or(UNAVAILABLE),
                Some(error.to_string()),
            )
            .encode_field(&mut body),
        }
    }
    let mut response = Response::new(ReplyBody::from(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, PROTOBUF);
    headers.insert(EXTENSIONS_HEADER.clone(), EXTENSIONS_VERSION);
    response
}

/// The sender's ring fingerprint ([`RING_HEADER`]) and kind ([`RING_KIND_HEADER`]), if it
/// sent a fingerprint.
fn ring_of(headers: &HeaderMap) -> Option<ForeignRing> {
    let fingerprint = headers
        .get(&RING_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| u32::from_str_radix(v, 16).ok())?;
    let kind = match headers.get(&RING_KIND_HEADER) {
        None => ForeignKind::Known(RingKind::Golang),
        Some(value) => match value.to_str().ok().and_then(RingKind::from_name) {
            Some(kind) => ForeignKind::Known(kind),
            None => ForeignKind::Unknown,
        },
    };
    Some(ForeignRing { fingerprint, kind })
}

/// `405` with the methods the peer path answers.
fn method_not_allowed() -> Response<ReplyBody> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into());
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static("GET, DELETE, POST, PUT"));
    response
}

/// The reply to a get: the value, 204 for a key the data source does not have, 413 for a
/// value over the asker's limit, or 500 (with what failed in [`ERROR_HEADER`] when it was the
/// data source).
fn answer(node: &Node, result: Result<Entry, Error>, rate: f64, limit: u64) -> Response<ReplyBody> {
    match result {
        Ok(entry) if entry.value.len() as u64 > limit => {
            let mut response = text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the value is {} bytes, over the asker's limit of {limit}",
                    entry.value.len()
                ),
            );
            response
                .headers_mut()
                .insert(ERROR_HEADER.clone(), HeaderValue::from_static(TOO_LARGE));
            response
        }
        Ok(entry) => {
            let expire = node.expire_to_wire(&entry);
            let pieces = GetResponse::encode_pieces(entry.value, Some(rate), expire);
            let mut response = Response::new(ReplyBody::new(pieces));
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, PROTOBUF);
            headers.insert(EXTENSIONS_HEADER.clone(), EXTENSIONS_VERSION);
            response
        }
        Err(error) if error.kind() == ErrorKind::NotFound => empty(NOT_FOUND_STATUS),
        Err(error) => {
            let mut response = text(StatusCode::INTERNAL_SERVER_ERROR, error.to_string());
            if let Some(token) = error_token(error.kind()) {
                response
                    .headers_mut()
                    .insert(ERROR_HEADER.clone(), HeaderValue::from_static(token));
            }
            response
        }
    }
}

/// The key of a removal's query, `key={escaped key}`, and nothing else.
fn removal_key(query: &str) -> Result<std::borrow::Cow<'_, str>, PathError> {
    match query.strip_prefix("key=") {
        Some(key) if !key.contains(['&', '=']) => unescape(key),
        _ => Err(PathError::BadQuery),
    }
}

/// An answer with no body.
fn empty(status: StatusCode) -> Response<ReplyBody> {
    let mut response = Response::new(ReplyBody::default());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(EXTENSIONS_HEADER.clone(), EXTENSIONS_VERSION);
    response
}

/// 404 for a source this node does not have, as Go's `HTTPPool` answers an unknown group.
fn no_such_source(name: &str) -> Reply {
    text(StatusCode::NOT_FOUND, format!("no such group: {name}")).into()
}

/// A plain-text reply in the form of Go's `http.Error`.
fn text(status: StatusCode, mut message: String) -> Response<ReplyBody> {
    message.push('\n');
    let mut response = Response::new(ReplyBody::from(Bytes::from(message)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(EXTENSIONS_HEADER.clone(), EXTENSIONS_VERSION);
    response
}
