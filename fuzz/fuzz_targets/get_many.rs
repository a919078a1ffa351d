//! The decoders of a batched get (`GetManyRequest`, what a node reads from a peer's body, and
//! `GetManyResponse`, what it reads from an owner's reply) on arbitrary bytes: no panic; a
//! message that decodes encodes to bytes that decode to the same message, and that encoding is
//! a fixed point; and `GetManyRequest::decode_keys`, which a node reads a batched get with,
//! gives exactly the keys `decode` gives when each is UTF-8, and nothing otherwise.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use tower_groupcache::protocol::{GetManyRequest, GetManyResponse, KeyResult};

/// Field-wise equality in which two NaNs of the same bits are equal.
fn same(a: &KeyResult, b: &KeyResult) -> bool {
    a.value == b.value
        && a.minute_qps.map(f64::to_bits) == b.minute_qps.map(f64::to_bits)
        && a.expire == b.expire
        && a.error == b.error
        && a.message == b.message
}

fuzz_target!(|data: &[u8]| {
    // What a node reads of a batched get: the keys of the message, each UTF-8, or nothing.
    let keys: Option<Vec<String>> = GetManyRequest::decode(data).ok().and_then(|request| {
        request
            .keys
            .iter()
            .map(|key| String::from_utf8(key.to_vec()).ok())
            .collect()
    });
    let views = GetManyRequest::decode_keys(data)
        .map(|keys| keys.into_iter().map(str::to_owned).collect::<Vec<_>>());
    assert_eq!(views, keys, "decode_keys differs from decode");
    if let Ok(request) = GetManyRequest::decode(data) {
        let encoded = request.encode_to_vec();
        assert_eq!(encoded.len(), request.encoded_len());
        let again = GetManyRequest::decode(&encoded[..])
            .unwrap_or_else(|e| panic!("re-encoded {request:?} does not decode: {e}"));
        assert_eq!(again, request);
        assert_eq!(again.encode_to_vec(), encoded, "encoding is not stable");
    }
    if let Ok(reply) = GetManyResponse::decode(data) {
        let encoded = reply.encode_to_vec();
        assert_eq!(encoded.len(), reply.encoded_len());
        let again = GetManyResponse::decode(&encoded[..])
            .unwrap_or_else(|e| panic!("re-encoded {reply:?} does not decode: {e}"));
        assert_eq!(again.results.len(), reply.results.len());
        assert!(
            again.results.iter().zip(&reply.results).all(|(a, b)| same(a, b)),
            "{reply:?} != {again:?} after a round trip"
        );
        assert_eq!(again.encode_to_vec(), encoded, "encoding is not stable");
    }
});
