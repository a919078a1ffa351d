//! The `GetResponse` decoder on arbitrary bytes: no panic; a message that decodes encodes to
//! bytes that decode to the same message, and its encoding is a fixed point.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use tower_groupcache::protocol::GetResponse;

/// Field-wise equality in which two NaNs of the same bits are equal (a double is carried
/// bit for bit, NaN payload included).
fn same(a: &GetResponse, b: &GetResponse) -> bool {
    a.value == b.value
        && a.minute_qps.map(f64::to_bits) == b.minute_qps.map(f64::to_bits)
        && a.expire == b.expire
}

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = GetResponse::decode(data) else {
        return;
    };
    // prost writes the shortest form of each field, so the canonical encoding is never
    // longer than what it was decoded from (a repeated field keeps only its last copy).
    let encoded = msg.encode_to_vec();
    assert_eq!(encoded.len(), msg.encoded_len(), "encoded_len of {msg:?}");
    assert!(
        encoded.len() <= data.len(),
        "{msg:?} encodes to {} bytes, more than the {} it was decoded from",
        encoded.len(),
        data.len()
    );
    let again = GetResponse::decode(&encoded[..])
        .unwrap_or_else(|e| panic!("re-encoded {msg:?} ({encoded:02x?}) does not decode: {e}"));
    assert!(
        same(&msg, &again),
        "{msg:?} != {again:?} after a round trip"
    );
    assert_eq!(
        again.encode_to_vec(),
        encoded,
        "encoding of {msg:?} is not stable"
    );
});
