//! The peer-path parser and unescaper (`protocol::parse_path`, `protocol::unescape`) on
//! arbitrary UTF-8 input: no panic, the same answer as a plain reference decoder, and
//! `escape` then `parse_path` gives the decoded components back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_groupcache::protocol::{PathError, escape, parse_path, unescape};

/// The escaping of docs/protocol.md ("A peer request"), written out byte by byte: `%XX` (either case of hex) is that byte,
/// a literal `+` is a space, every other byte is itself; a `%` without two hex digits is
/// `BadEscape` (wherever it is), and decoded bytes that are not UTF-8 are `NotUtf8`.
fn reference_unescape(s: &str) -> Result<String, PathError> {
    let b = s.as_bytes();
    let hex = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = b.get(i + 1).copied().and_then(hex);
                let lo = b.get(i + 2).copied().and_then(hex);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err(PathError::BadEscape),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| PathError::NotUtf8)
}

/// What `escape` may write: `A-Z a-z 0-9 - _ . ~` and `%XX` with upper-case hex.
fn assert_escaped_form(escaped: &str, raw: &str) {
    let b = escaped.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let ok = b.len() >= i + 3
                    && matches!(b[i + 1], b'0'..=b'9' | b'A'..=b'F')
                    && matches!(b[i + 2], b'0'..=b'9' | b'A'..=b'F');
                assert!(ok, "escape({raw:?}) = {escaped:?}: bad %XX at {i}");
                i += 3;
            }
            c if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~') => i += 1,
            c => panic!("escape({raw:?}) = {escaped:?}: unescaped byte {c:#04x} at {i}"),
        }
    }
}

/// `escape` then `unescape` is the identity on any string.
fn check_escape_round_trip(raw: &str) -> String {
    let escaped = escape(raw).to_string();
    assert_escaped_form(&escaped, raw);
    let back = unescape(&escaped);
    assert_eq!(
        back.as_deref(),
        Ok(raw),
        "unescape(escape({raw:?})) with escape = {escaped:?}"
    );
    escaped
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };

    // The unescaper alone, against the reference.
    let got = unescape(input);
    let want = reference_unescape(input);
    assert_eq!(
        got.as_deref().map_err(|e| *e),
        want.as_deref().map_err(|e| *e),
        "unescape({input:?})"
    );
    if let Ok(decoded) = &got {
        check_escape_round_trip(decoded);
    }
    // Any input, taken as a raw key, survives escape and unescape.
    check_escape_round_trip(input);

    // The whole path.
    let parsed = parse_path(input);
    match input.split_once('/') {
        None => assert_eq!(parsed, Err(PathError::MissingKey), "parse_path({input:?})"),
        Some((group, key)) => {
            // The group is checked first, then the key.
            let want =
                reference_unescape(group).and_then(|g| reference_unescape(key).map(|k| (g, k)));
            let got = parsed
                .as_ref()
                .map(|(g, k)| (g.to_string(), k.to_string()))
                .map_err(|e| *e);
            assert_eq!(got, want, "parse_path({input:?})");
        }
    }
    if let Ok((group, key)) = parsed {
        // A `/` in the decoded group can only have come from an escape.
        if group.contains('/') {
            assert!(input.split_once('/').unwrap().0.contains("%2"), "{input:?}");
        }
        // Re-escape each component and parse again: the same components come back.
        let path = format!(
            "{}/{}",
            check_escape_round_trip(&group),
            check_escape_round_trip(&key)
        );
        let (g2, k2) = parse_path(&path).unwrap_or_else(|e| {
            panic!("parse_path({path:?}), re-escaped from {input:?}, failed: {e}")
        });
        assert_eq!(
            (&*g2, &*k2),
            (&*group, &*key),
            "round trip of {input:?} through {path:?}"
        );
    }
});
