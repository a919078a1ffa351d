//! The peer protocol: golang/groupcache's `GetResponse` message and URL escaping, with this
//! crate's compatible extensions.
//!
//! A peer request is `GET {peer}{base_path}{group}/{key}` with the group and key
//! percent-encoded; the reply is a protobuf [`GetResponse`]. What this crate adds (the
//! `x-groupcache-extensions` header on every reply, removal by `DELETE`, the asker's value
//! limit and the data source's failure told apart) is in docs/protocol.md.
//!
//! The module is public, and hidden from the docs, for the fuzz targets and the interop tests:
//! it is not part of the crate's stable API.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use http_body::SizeHint;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode};
use prost::Message as _;

use crate::error::ErrorKind;

/// The status by which a node of this crate says the data source has no value for the key.
/// A Go node treats it as any non-200: an error, after which it loads the key itself.
pub(crate) const NOT_FOUND_STATUS: StatusCode = StatusCode::NO_CONTENT;

/// The header that carries the sender's ring fingerprint (8 hex digits). Go nodes ignore it.
pub(crate) static RING_HEADER: HeaderName = HeaderName::from_static("x-groupcache-ring");

/// The header that names the sender's kind of ring when it is not golang's (`balanced`), so
/// that a node on another kind can say so. Absent: golang's ring (or a Go node). Go nodes
/// ignore it.
pub(crate) static RING_KIND_HEADER: HeaderName = HeaderName::from_static("x-groupcache-ring-kind");

/// The header on every reply of a node of this crate's peer path: the version of this crate's
/// extensions it speaks. A Go node never sends it, so its absence on a reply names a peer that
/// must only ever be sent plain gets.
pub(crate) static EXTENSIONS_HEADER: HeaderName =
    HeaderName::from_static("x-groupcache-extensions");

/// The version of the extensions this node speaks: removal (`DELETE`), the data source's
/// failure told apart from the peer's ([`ERROR_HEADER`]) and the asker's value limit
/// ([`MAX_VALUE_HEADER`]).
pub(crate) const EXTENSIONS_VERSION: HeaderValue = HeaderValue::from_static("1");

/// On a `500` or `413` from a node of this crate: what failed. `load`, `panicked`, `codec` or
/// `recursive` (the data source failed, so asking another node would call it again), or
/// `too-large` (the value is over the asker's limit).
pub(crate) static ERROR_HEADER: HeaderName = HeaderName::from_static("x-groupcache-error");

/// On a get: the largest value, in bytes, the asker accepts. A node of this crate refuses a
/// larger one (`413`) instead of sending it. Go nodes ignore it. On a batched get, the most
/// the whole reply may hold.
pub(crate) static MAX_VALUE_HEADER: HeaderName =
    HeaderName::from_static("x-groupcache-max-value-bytes");

/// The [`ERROR_HEADER`] token of a value over the asker's limit.
pub(crate) const TOO_LARGE: &str = "too-large";

/// The [`ERROR_HEADER`] token for a failure of the data source, if the error is one.
pub(crate) fn error_token(kind: ErrorKind) -> Option<&'static str> {
    match kind {
        ErrorKind::Load => Some("load"),
        ErrorKind::LoadPanicked => Some("panicked"),
        ErrorKind::Codec => Some("codec"),
        ErrorKind::RecursiveLoad => Some("recursive"),
        _ => None,
    }
}

/// The error kind of an [`ERROR_HEADER`] token; one this node does not know reads as a load
/// failure.
pub(crate) fn error_kind(token: &[u8]) -> ErrorKind {
    match token {
        b"panicked" => ErrorKind::LoadPanicked,
        b"codec" => ErrorKind::Codec,
        b"recursive" => ErrorKind::RecursiveLoad,
        _ => ErrorKind::Load,
    }
}

/// The reply to a peer request, field for field golang/groupcache's `groupcachepb.GetResponse`
/// plus mailgun/groupcache v2's `expire`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetResponse {
    /// The value. A Go server always sets it, empty or not.
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub value: Option<Bytes>,
    /// The owner's measured request rate for the key, per minute-averaged second.
    #[prost(double, optional, tag = "2")]
    pub minute_qps: Option<f64>,
    /// When the value expires, in Unix nanoseconds; absent or 0 means never.
    #[prost(int64, optional, tag = "3")]
    pub expire: Option<i64>,
}

impl GetResponse {
    /// The most bytes a reply adds to its value: field 1's tag and length (1 + 10), then
    /// `minute_qps` (1 + 8) and `expire` (1 + 10).
    pub(crate) const MAX_FRAMING: usize = 31;

    /// The encoded message as two pieces: the other fields and field 1's header, then the
    /// value itself (not copied). Protobuf parsers accept fields in any order (Go's does), so
    /// writing `value` last lets it go from the cache to the socket right behind its header,
    /// with one small allocation for everything else.
    pub(crate) fn encode_pieces(
        value: Bytes,
        minute_qps: Option<f64>,
        expire: Option<i64>,
    ) -> [Bytes; 2] {
        let rest = Self {
            value: None,
            minute_qps,
            expire,
        };
        // The other fields, then field 1, wire type 2 (length-delimited), and its length.
        let mut head = Vec::with_capacity(rest.encoded_len() + 11);
        rest.encode(&mut head)
            .expect("a Vec grows to fit the message");
        head.push(0x0a);
        prost::encode_length_delimiter(value.len(), &mut head)
            .expect("a Vec grows to fit a varint");
        [Bytes::from(head), value]
    }
}

/// A batched get, this crate's extension: `POST {base_path}{group}` with this message as the
/// body asks for many keys of one group. Sent only to nodes that speak the extensions; a Go
/// node would answer it `400` (its path names no key) and load nothing.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetManyRequest {
    /// The keys, as they are (not escaped). A `string` on the wire (UTF-8, which the server
    /// checks); held as bytes, so that decoding a request copies no key.
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub keys: Vec<Bytes>,
}

impl GetManyRequest {
    /// The encoding of a request for `keys`, made straight from them.
    pub fn encode_keys<K: AsRef<str>>(keys: &[K]) -> Vec<u8> {
        use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
        let len: usize = keys
            .iter()
            .map(|key| {
                let n = key.as_ref().len();
                1 + encoded_len_varint(n as u64) + n
            })
            .sum();
        let mut buf = Vec::with_capacity(len);
        for key in keys {
            let key = key.as_ref().as_bytes();
            encode_key(1, WireType::LengthDelimited, &mut buf);
            encode_varint(key.len() as u64, &mut buf);
            buf.extend_from_slice(key);
        }
        buf
    }

    /// The keys of an encoded request, as views of `body`: what [`decode`](prost::Message::decode)
    /// then a UTF-8 check of each key gives, without a copy of any key. `None` when the body
    /// is not a `GetManyRequest` or a key is not UTF-8 (a `string` on the wire). This is how
    /// a node reads a batched get.
    ///
    /// ```
    /// use tower_groupcache::protocol::GetManyRequest;
    ///
    /// let body = GetManyRequest::encode_keys(&["user:1", "ключ"]);
    /// assert_eq!(GetManyRequest::decode_keys(&body), Some(vec!["user:1", "ключ"]));
    /// assert_eq!(GetManyRequest::decode_keys(&body[..body.len() - 1]), None);
    /// assert_eq!(GetManyRequest::decode_keys(b"\x0a\x01\xff"), None);
    /// ```
    pub fn decode_keys(body: &[u8]) -> Option<Vec<&str>> {
        use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
        let mut buf = body;
        let mut keys = Vec::new();
        while !buf.is_empty() {
            let (tag, wire_type) = decode_key(&mut buf).ok()?;
            if tag != 1 {
                skip_field(wire_type, tag, &mut buf, DecodeContext::default()).ok()?;
                continue;
            }
            if wire_type != WireType::LengthDelimited {
                return None;
            }
            let len = usize::try_from(decode_varint(&mut buf).ok()?).ok()?;
            if len > buf.len() {
                return None;
            }
            let (key, rest) = buf.split_at(len);
            keys.push(std::str::from_utf8(key).ok()?);
            buf = rest;
        }
        Some(keys)
    }
}

/// The reply to a [`GetManyRequest`]: one result per key, in the request's order.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetManyResponse {
    /// One per requested key, in order.
    #[prost(message, repeated, tag = "1")]
    pub results: Vec<KeyResult>,
}

/// One key's answer in a [`GetManyResponse`]: a value with the fields of [`GetResponse`], or
/// an error token and its message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyResult {
    /// The value; set exactly when `error` is not.
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub value: Option<Bytes>,
    /// As in [`GetResponse`].
    #[prost(double, optional, tag = "2")]
    pub minute_qps: Option<f64>,
    /// As in [`GetResponse`].
    #[prost(int64, optional, tag = "3")]
    pub expire: Option<i64>,
    /// Why there is no value: `not-found`, `too-large`, `reply-full`, `unavailable`, or the
    /// token of a failure of the data source (`load`, `panicked`, `codec`, `recursive`), as
    /// on a single get's `x-groupcache-error`.
    #[prost(string, optional, tag = "4")]
    pub error: Option<String>,
    /// The failure's message, for an error.
    #[prost(string, optional, tag = "5")]
    pub message: Option<String>,
}

/// What the credential of a batched get signs in place of its path: the path, `#sha256=` and
/// the body's SHA-256 in lower-case hex, so that the keys asked for are signed too.
pub(crate) fn batch_signed_target(path: &str, body_sha256: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut signed = String::with_capacity(path.len() + 8 + 2 * body_sha256.len());
    signed.push_str(path);
    signed.push_str("#sha256=");
    for byte in body_sha256 {
        let _ = write!(signed, "{byte:02x}");
    }
    signed
}

/// The [`KeyResult::error`] of a key the owner could not answer for a reason of its own, not
/// its data source's (it is shutting down, say): the asker loads the key itself.
pub(crate) const UNAVAILABLE: &str = "unavailable";

impl KeyResult {
    /// Appends to `buf` a result with `value` as field 1 of a [`GetManyResponse`]: the bytes
    /// that encoding the message of such a [`KeyResult`] there would append, with no message
    /// made.
    pub(crate) fn encode_value(
        buf: &mut Vec<u8>,
        value: &[u8],
        minute_qps: f64,
        expire: Option<i64>,
    ) {
        use prost::encoding::{encode_varint, encoded_len_varint};
        // Field 1 (bytes), field 2 (double: 8 bytes), field 3 (int64: a varint of its bits).
        let len = 1
            + encoded_len_varint(value.len() as u64)
            + value.len()
            + 9
            + expire.map_or(0, |at| 1 + encoded_len_varint(at as u64));
        buf.reserve(1 + encoded_len_varint(len as u64) + len);
        buf.push(0x0a);
        encode_varint(len as u64, buf);
        buf.push(0x0a);
        encode_varint(value.len() as u64, buf);
        buf.extend_from_slice(value);
        buf.push(0x11);
        buf.extend_from_slice(&minute_qps.to_le_bytes());
        if let Some(at) = expire {
            buf.push(0x18);
            encode_varint(at as u64, buf);
        }
    }

    /// Appends this result to `buf` as field 1 of a [`GetManyResponse`].
    pub(crate) fn encode_field(&self, buf: &mut Vec<u8>) {
        prost::encoding::message::encode(1, self, buf);
    }

    /// A result with no value: `error` and its message.
    pub(crate) fn failed(error: &str, message: Option<String>) -> Self {
        Self {
            value: None,
            minute_qps: None,
            expire: None,
            error: Some(error.to_owned()),
            message,
        }
    }
}

/// The [`KeyResult::error`] of a key its data source does not have.
pub(crate) const NOT_FOUND: &str = "not-found";
/// The [`KeyResult::error`] of a key whose value did not fit in what was left of the asker's
/// limit on the reply ([`MAX_VALUE_HEADER`]), though it fits alone: ask for it on its own.
pub(crate) const REPLY_FULL: &str = "reply-full";

/// Every byte but `A-Z a-z 0-9 - _ . ~` is percent-encoded; a space becomes `%20`, never `+`.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a group name or key for a peer URL, as docs/protocol.md says ("A peer
/// request"): every byte but `A-Z a-z 0-9 - _ . ~`, a space as `%20`, upper-case hex.
///
/// ```
/// use tower_groupcache::protocol::escape;
///
/// assert_eq!(escape("a b/c:d+e%").to_string(), "a%20b%2Fc%3Ad%2Be%25");
/// assert_eq!(escape("ü").to_string(), "%C3%BC");
/// ```
pub fn escape(component: &str) -> impl fmt::Display + '_ {
    percent_encoding::utf8_percent_encode(component, COMPONENT)
}

/// Appends `component`, percent-encoded as [`escape`] does, to `out`.
pub(crate) fn push_escaped(out: &mut String, component: &str) {
    out.extend(percent_encoding::utf8_percent_encode(component, COMPONENT));
}

/// Why a peer path could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathError {
    /// Nothing follows the group name: there is no `/` for the key.
    MissingKey,
    /// A `%` is not followed by two hex digits.
    BadEscape,
    /// The decoded bytes are not UTF-8.
    NotUtf8,
    /// A removal's query is not `key={escaped key}`.
    BadQuery,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MissingKey => "bad request: no key after the group name",
            Self::BadEscape => "bad request: invalid percent escape",
            Self::NotUtf8 => "bad request: group or key is not UTF-8",
            Self::BadQuery => "bad request: the query of a removal or a write is `key=` and the escaped key (a write may add `&ttl_ms=`), and that of a batched removal `remove`",
        })
    }
}

impl std::error::Error for PathError {}

/// Decodes one component of a peer path: `%XX` escapes, and a literal `+` as a space (a Go
/// client's `url.QueryEscape` writes a space as `+` and never writes a literal `+`).
///
/// ```
/// use tower_groupcache::protocol::unescape;
///
/// assert_eq!(unescape("a+b%2Bc").unwrap(), "a b+c");
/// assert!(unescape("100%").is_err());
/// ```
pub fn unescape(component: &str) -> Result<Cow<'_, str>, PathError> {
    let bytes = component.as_bytes();
    let mut i = 0;
    let mut plain = true;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let valid = bytes.len() > i + 2
                    && bytes[i + 1].is_ascii_hexdigit()
                    && bytes[i + 2].is_ascii_hexdigit();
                if !valid {
                    return Err(PathError::BadEscape);
                }
                plain = false;
                i += 3;
            }
            b'+' => {
                plain = false;
                i += 1;
            }
            _ => i += 1,
        }
    }
    if plain {
        return Ok(Cow::Borrowed(component));
    }
    let spaced: Cow<'_, [u8]> = if component.contains('+') {
        Cow::Owned(component.replace('+', " ").into_bytes())
    } else {
        Cow::Borrowed(bytes)
    };
    let decoded: Vec<u8> = percent_decode(&spaced).collect();
    String::from_utf8(decoded)
        .map(Cow::Owned)
        .map_err(|_| PathError::NotUtf8)
}

/// Splits the part of a peer path after the base path into a decoded group name and key.
///
/// The group ends at the first `/`; the key is everything after it and may contain `/`.
/// The path is not normalised: `a//b` stays `a//b`.
///
/// ```
/// use tower_groupcache::protocol::parse_path;
///
/// let (group, key) = parse_path("datasource%3Ausers/a+b%2Fc%3Ad").unwrap();
/// assert_eq!((&*group, &*key), ("datasource:users", "a b/c:d"));
/// ```
pub fn parse_path(rest: &str) -> Result<(Cow<'_, str>, Cow<'_, str>), PathError> {
    let (group, key) = rest.split_once('/').ok_or(PathError::MissingKey)?;
    Ok((unescape(group)?, unescape(key)?))
}

/// The body of a peer reply: up to two pieces of bytes sent as they are, so a cached value
/// goes from the cache to the socket without a copy.
#[derive(Debug, Default)]
pub(crate) struct ReplyBody {
    pieces: [Bytes; 2],
    next: usize,
}

impl ReplyBody {
    pub(crate) fn new(pieces: [Bytes; 2]) -> Self {
        Self { pieces, next: 0 }
    }

    pub(crate) fn next_piece(&mut self) -> Option<Bytes> {
        while self.next < self.pieces.len() {
            let piece = std::mem::take(&mut self.pieces[self.next]);
            self.next += 1;
            if !piece.is_empty() {
                return Some(piece);
            }
        }
        None
    }

    fn remaining(&self) -> u64 {
        self.pieces[self.next..]
            .iter()
            .map(|p| p.len() as u64)
            .sum()
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.remaining() == 0
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining())
    }
}

impl From<Bytes> for ReplyBody {
    fn from(bytes: Bytes) -> Self {
        Self::new([bytes, Bytes::new()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn encodes_like_go() {
        let msg = |value: Option<&'static [u8]>, qps: Option<f64>| GetResponse {
            value: value.map(Bytes::from_static),
            minute_qps: qps,
            expire: None,
        };
        assert_eq!(
            hex(&msg(Some(b"hello"), None).encode_to_vec()),
            "0a 05 68 65 6c 6c 6f"
        );
        assert_eq!(hex(&msg(Some(b""), None).encode_to_vec()), "0a 00");
        assert_eq!(hex(&msg(None, None).encode_to_vec()), "");
        assert_eq!(
            hex(&msg(Some(b"hello"), Some(1.5)).encode_to_vec()),
            "0a 05 68 65 6c 6c 6f 11 00 00 00 00 00 00 f8 3f"
        );
    }

    #[test]
    fn batched_get_test_vectors() {
        // docs/protocol.md, "Batched gets".
        let request = GetManyRequest {
            keys: vec!["a".into(), "b".into()],
        };
        assert_eq!(hex(&request.encode_to_vec()), "0a 01 61 0a 01 62");
        assert_eq!(
            GetManyRequest::encode_keys(&["a", "b"]),
            request.encode_to_vec()
        );
        let long = "k".repeat(300);
        assert_eq!(
            GetManyRequest::encode_keys(&[long.as_str(), "", "é"]),
            GetManyRequest {
                keys: vec![long.clone().into(), "".into(), "é".into()]
            }
            .encode_to_vec()
        );
        let reply = GetManyResponse {
            results: vec![
                KeyResult {
                    value: Some(Bytes::from_static(b"hi")),
                    minute_qps: None,
                    expire: None,
                    error: None,
                    message: None,
                },
                KeyResult::failed(NOT_FOUND, None),
            ],
        };
        assert_eq!(
            hex(&reply.encode_to_vec()),
            "0a 04 0a 02 68 69 0a 0b 22 09 6e 6f 74 2d 66 6f 75 6e 64"
        );
        assert_eq!(
            GetManyResponse::decode(&reply.encode_to_vec()[..]).unwrap(),
            reply
        );
        let failed = KeyResult::failed("load", Some("db down".into()));
        assert_eq!(
            hex(&failed.encode_to_vec()),
            "22 04 6c 6f 61 64 2a 07 64 62 20 64 6f 77 6e"
        );
        assert_eq!(
            batch_signed_target("/_groupcache/users", &[0xab, 0x01]),
            "/_groupcache/users#sha256=ab01"
        );
    }

    #[test]
    fn decodes_like_go() {
        let decoded = GetResponse::decode(&b"\x0a\x05hello\x18\x01"[..]).unwrap();
        assert_eq!(decoded.value.as_deref(), Some(&b"hello"[..]));
        assert_eq!(GetResponse::decode(&b""[..]).unwrap().value, None);
        assert!(
            GetResponse::decode(&b"\x0a\x05hel"[..]).is_err(),
            "truncated value"
        );
        assert!(
            GetResponse::decode(&b"\x0a"[..]).is_err(),
            "truncated length"
        );
        assert!(
            GetResponse::decode(&b"\xff\xff\xff"[..]).is_err(),
            "garbage"
        );
    }

    #[test]
    fn a_value_result_encodes_as_prost_encodes_it() {
        let cases = [
            (&b""[..], 0.0, None),
            (&b"v"[..], 1.5, Some(1)),
            (&[7u8; 300][..], f64::MAX, Some(i64::MAX)),
            (&b"value"[..], 0.25, Some(-1)),
        ];
        for (value, minute_qps, expire) in cases {
            let result = KeyResult {
                value: Some(Bytes::copy_from_slice(value)),
                minute_qps: Some(minute_qps),
                expire,
                error: None,
                message: None,
            };
            let failed = KeyResult::failed(NOT_FOUND, Some("gone".into()));
            let expected = GetManyResponse {
                results: vec![result, failed.clone()],
            }
            .encode_to_vec();
            let mut buf = Vec::new();
            KeyResult::encode_value(&mut buf, value, minute_qps, expire);
            failed.encode_field(&mut buf);
            assert_eq!(
                hex(&buf),
                hex(&expected),
                "{value:?} {minute_qps} {expire:?}"
            );
        }
    }

    #[test]
    fn keys_decode_as_prost_decodes_them() {
        let valid = GetManyRequest::encode_keys(&["a", "", "ключ", "a/b%2F+"]);
        let mut unknown_field = valid.clone();
        // Field 2, a varint, which a decoder skips.
        unknown_field.extend_from_slice(&[0x10, 0x96, 0x01]);
        let bodies: Vec<Vec<u8>> = vec![
            Vec::new(),
            valid.clone(),
            unknown_field,
            valid[..valid.len() - 1].to_vec(),        // truncated
            vec![0x0a, 0x02, 0xff, 0xfe],             // not UTF-8
            vec![0x08, 0x01],                         // field 1 as a varint
            vec![0x00, 0x00],                         // field 0
            vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f], // a length past the end
            vec![0x0a],                               // no length
        ];
        for body in bodies {
            let expected: Option<Vec<String>> =
                GetManyRequest::decode(&body[..]).ok().and_then(|r| {
                    r.keys
                        .iter()
                        .map(|k| String::from_utf8(k.to_vec()).ok())
                        .collect()
                });
            let got = GetManyRequest::decode_keys(&body)
                .map(|keys| keys.into_iter().map(str::to_owned).collect::<Vec<_>>());
            assert_eq!(got, expected, "{}", hex(&body));
        }
    }

    #[test]
    fn pieces_decode_to_the_message() {
        for (len, qps, expire) in [
            (0, None, None),
            (5, Some(1.5), None),
            (300, None, Some(1)),
            (70_000, Some(2.0), Some(i64::MAX)),
        ] {
            let value = Bytes::from(vec![9u8; len]);
            let whole = GetResponse {
                value: Some(value.clone()),
                minute_qps: qps,
                expire,
            }
            .encode_to_vec();
            let pieces = GetResponse::encode_pieces(value.clone(), qps, expire);
            let joined = pieces.concat();
            assert_eq!(joined.len(), whole.len(), "{len} {qps:?} {expire:?}");
            let decoded = GetResponse::decode(&joined[..]).unwrap();
            assert_eq!(decoded, GetResponse::decode(&whole[..]).unwrap());
            assert_eq!(decoded.value.as_deref(), Some(&value[..]));
            assert_eq!(
                pieces[1].as_ptr(),
                value.as_ptr(),
                "the value is not copied"
            );
        }
    }

    #[test]
    fn expire_round_trips() {
        let msg = GetResponse {
            value: Some(Bytes::from_static(b"v")),
            minute_qps: None,
            expire: Some(1_700_000_000_000_000_000),
        };
        assert_eq!(GetResponse::decode(&*msg.encode_to_vec()).unwrap(), msg);
    }

    #[test]
    fn escapes_every_reserved_byte() {
        let cases = [
            ("user:12345", "user%3A12345"),
            ("", ""),
            ("a b", "a%20b"),
            ("a/b", "a%2Fb"),
            ("a+b", "a%2Bb"),
            ("100%", "100%25"),
            ("ü", "%C3%BC"),
            ("x?y#z", "x%3Fy%23z"),
            ("AZaz09-_.~", "AZaz09-_.~"),
        ];
        for (raw, escaped) in cases {
            assert_eq!(escape(raw).to_string(), escaped, "escape {raw:?}");
            assert_eq!(unescape(escaped).unwrap(), raw, "unescape {escaped:?}");
        }
    }

    #[test]
    fn reads_go_query_escape() {
        // Go's url.QueryEscape output for `a b`, `a+b` and `a//b` (docs/interop.md, "Go's
        // quirks, and how this crate handles them"), and an escape in lower-case hex.
        assert_eq!(unescape("a+b").unwrap(), "a b");
        assert_eq!(unescape("a%2Bb").unwrap(), "a+b");
        assert_eq!(unescape("a%2F%2Fb").unwrap(), "a//b");
        assert_eq!(unescape("%e2%82%ac").unwrap(), "€", "lower-case hex");
    }

    #[test]
    fn rejects_bad_escapes() {
        for bad in ["%", "%4", "%zz", "a%g0", "%%41"] {
            assert_eq!(unescape(bad), Err(PathError::BadEscape), "{bad:?}");
        }
        assert_eq!(unescape("%ff%fe"), Err(PathError::NotUtf8));
    }

    #[test]
    fn splits_group_and_key() {
        let (g, k) = parse_path("users/a/b//c").unwrap();
        assert_eq!((&*g, &*k), ("users", "a/b//c"));
        let (g, k) = parse_path("users/").unwrap();
        assert_eq!((&*g, &*k), ("users", ""));
        assert_eq!(parse_path("users"), Err(PathError::MissingKey));
        assert_eq!(parse_path(""), Err(PathError::MissingKey));
    }
}
