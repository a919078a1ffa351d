//! The peer server: answers `{base_path}{group}/{key}` as docs/protocol.md says ("Answers of
//! a node of this crate").

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use http::{Method, Response, StatusCode, Uri};

use super::auth::AUTH_HEADER;
use crate::error::{Error, ErrorKind};
use crate::node::{Entry, Get, Node, Origin};
use crate::protocol::ReplyBody;
use crate::protocol::{
    ERROR_HEADER, EXTENSIONS_HEADER, EXTENSIONS_VERSION, GetResponse, MAX_VALUE_HEADER,
    NOT_FOUND_STATUS, PathError, RING_HEADER, TOO_LARGE, error_token, parse_path, unescape,
};

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
    let ring_fingerprint = headers
        .get(&RING_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| u32::from_str_radix(v, 16).ok());
    if *method != Method::GET && *method != Method::DELETE {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into());
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, DELETE"));
        return response.into();
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
