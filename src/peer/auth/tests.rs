//! Credentials, their checks and the replay window.

use std::collections::BTreeSet;

use super::replay::*;
use super::*;

fn auth(secrets: &[&str]) -> PeerAuth {
    PeerAuth::new(
        secrets
            .iter()
            .map(|s| PeerSecret::new(s.as_bytes()))
            .collect(),
    )
}

/// A time for tests that set the clock themselves.
const NOW: u64 = 1_700_000_000;
const PATH: &str = "/_groupcache/users/k";
const V: u64 = VALIDITY.as_secs();

/// `a`'s credential for `GET PATH` at `t` from `sender`, with sequence number `seq`.
fn signed(a: &PeerAuth, t: u64, sender: u64, seq: u64) -> HeaderValue {
    a.credential(t, Nonce { sender, seq }, "GET", PATH)
}

fn check(a: &PeerAuth, now: u64, header: &HeaderValue) -> Result<(), Refusal> {
    a.verify_at(now, "GET", PATH, Some(header))
}

impl ReplayRecord {
    /// The bytes the record holds: its tables' slots (a table's capacity is 7/8 of them,
    /// a slot is the entry and a control byte, and 16 more control bytes end a table) and
    /// the senders' bitmaps.
    fn bytes(&self) -> usize {
        let slot = size_of::<(u64, Window)>() + 1;
        self.shards
            .iter()
            .map(|shard| {
                let senders = shard.lock().unwrap();
                let table = match senders.capacity() {
                    0 => 0,
                    capacity => (capacity * 8 / 7).next_power_of_two() * slot + 16,
                };
                table + senders.len() * size_of::<[u64; WINDOW_WORDS]>()
            })
            .sum()
    }

    fn senders(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

/// The bound the module documents.
const RECORD_BOUND: usize = 4096 * 512 + 16 * (512 * 33 + 16);

#[test]
fn the_documented_bound_is_the_record_s_layout() {
    assert_eq!(MAX_SENDERS, 4096);
    assert_eq!((SHARDS, SENDERS_PER_SHARD), (16, 256));
    assert_eq!(size_of::<[u64; WINDOW_WORDS]>(), 512);
    assert_eq!(size_of::<(u64, Window)>(), 32);
    assert_eq!(RECORD_BOUND, 2_367_744);
}

#[test]
fn a_signed_request_passes_once() {
    let a = auth(&["s3cret"]);
    let header = a.sign("GET", PATH);
    assert_eq!(a.verify("GET", PATH, Some(&header)), Ok(()));
    assert_eq!(a.verify("GET", PATH, Some(&header)), Err(Refusal::Replayed));
    // Written in capitals, it is the same credential.
    let header = a.sign("GET", PATH);
    let (t_and_n, s) = header.to_str().unwrap().split_once(",s=").unwrap();
    let (t, n) = t_and_n.split_once(",n=").unwrap();
    let capitals = format!("{t},n={},s={}", n.to_uppercase(), s.to_uppercase());
    let capitals = HeaderValue::from_str(&capitals).unwrap();
    assert_eq!(a.verify("GET", PATH, Some(&capitals)), Ok(()));
    assert_eq!(a.verify("GET", PATH, Some(&header)), Err(Refusal::Replayed));
}

#[test]
fn tampering_and_wrong_secrets_fail() {
    let (a, b) = (auth(&["one"]), auth(&["two"]));
    let header = a.sign("GET", PATH);
    assert_eq!(
        b.verify("GET", PATH, Some(&header)),
        Err(Refusal::BadSignature)
    );
    assert_eq!(
        a.verify("GET", "/_groupcache/users/other", Some(&header)),
        Err(Refusal::BadSignature)
    );
    assert_eq!(
        a.verify("DELETE", PATH, Some(&header)),
        Err(Refusal::BadSignature)
    );
    // Another sender or sequence number under the same signature.
    let text = header.to_str().unwrap();
    let n = text.find(",n=").unwrap() + 3;
    for at in [n, n + 31] {
        let mut tampered = text.to_owned();
        let digit = if &text[at..=at] == "0" { "1" } else { "0" };
        tampered.replace_range(at..=at, digit);
        let tampered = HeaderValue::from_str(&tampered).unwrap();
        assert_eq!(
            a.verify("GET", PATH, Some(&tampered)),
            Err(Refusal::BadSignature)
        );
    }
    assert_eq!(a.verify("GET", "/x", None), Err(Refusal::Missing));
    let zeros = "0".repeat(32);
    let signature = "0".repeat(64);
    for bad in [
        String::new(),
        "t=1".to_owned(),
        "junk".to_owned(),
        format!("t=x,n={zeros},s={signature}"),
        format!("t={NOW},n=1,s={signature}"),
        // The 16-digit nonce of before.
        format!("t={NOW},n={},s={signature}", &zeros[..16]),
        format!("t={NOW},n={zeros}0,s={signature}"),
        format!("t={NOW},n=+{},s={signature}", &zeros[1..]),
        format!("t={NOW},n=g{},s={signature}", &zeros[1..]),
        format!("t={NOW},n={zeros},s=0g"),
        format!("t={NOW},n={zeros},s={signature},x=1"),
        format!("t={NOW},s={signature}"),
    ] {
        let value = HeaderValue::from_str(&bad).unwrap();
        assert_eq!(
            a.verify_at(NOW, "GET", "/x", Some(&value)),
            Err(Refusal::Malformed),
            "{bad:?}"
        );
    }
    let value = HeaderValue::from_bytes(b"t=1,n=\xff").unwrap();
    assert_eq!(a.verify("GET", "/x", Some(&value)), Err(Refusal::Malformed));
    assert_eq!(a.record.senders(), 0, "no refused credential was recorded");
}

#[test]
fn credentials_are_written_as_documented() {
    let a = auth(&["the secret"]);
    let sender = format!("{:016x}", a.sender);
    let mut seq = 0u64;
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
            assert_eq!((n.len(), s.len()), (32, 64), "{header}");
            // The sender's id, then its sequence number, counting from 0.
            assert_eq!(n, format!("{sender}{seq:016x}"), "{header}");
            seq += 1;
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
    // The longest credential, a 20-digit timestamp, fits the stack buffer.
    let longest = signed(&a, u64::MAX, u64::MAX, u64::MAX);
    assert_eq!(longest.len(), LONGEST_CREDENTIAL);
}

#[test]
fn hex_is_exactly_two_digits_a_byte_in_either_case() {
    let lower = "00ff10ab".repeat(8);
    let expected: Vec<u8> = [0x00, 0xff, 0x10, 0xab].repeat(8);
    assert_eq!(
        decode_hex::<32>(&lower).map(Vec::from),
        Some(expected.clone())
    );
    assert_eq!(
        decode_hex::<32>(&lower.to_uppercase()).map(Vec::from),
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
        assert_eq!(decode_hex::<32>(&bad), None, "{bad}");
    }
    let nonce = "0123456789abcdef0000000000000002";
    assert_eq!(
        decode_nonce(nonce),
        Some(Nonce {
            sender: 0x0123_4567_89ab_cdef,
            seq: 2
        })
    );
    for bad in [&nonce[..31], &nonce[1..], "0123456789abcdeé000000000000002"] {
        assert_eq!(decode_nonce(bad), None, "{bad}");
    }
}

#[test]
fn timestamps_more_than_30_s_away_are_expired() {
    let a = auth(&["s"]);
    let old = signed(&a, unix_now() - 3_600, 1, 0);
    assert_eq!(a.verify("GET", PATH, Some(&old)), Err(Refusal::Expired));
    for (t, expected) in [
        (NOW - V - 1, Err(Refusal::Expired)),
        (NOW + V + 1, Err(Refusal::Expired)),
        (NOW - V, Ok(())),
        (NOW + V, Ok(())),
    ] {
        assert_eq!(check(&a, NOW, &signed(&a, t, 2, t)), expected, "{t}");
    }
}

#[test]
fn the_replay_record_stays_bounded() {
    let a = auth(&["s"]);
    let path = "/_groupcache/users/k";
    for i in 0..200_000 {
        let header = a.sign("GET", path);
        assert_eq!(a.verify("GET", path, Some(&header)), Ok(()), "request {i}");
    }
    let bytes = a.record.bytes();
    assert!(
        bytes <= 64 * 1024,
        "after 200,000 requests the replay record holds {bytes} bytes"
    );
    assert_eq!(a.record.senders(), 1);
}

#[test]
fn a_number_below_the_window_is_refused() {
    let a = auth(&["s"]);
    let sender = 7;
    assert_eq!(
        check(&a, NOW, &signed(&a, NOW, sender, WINDOW + 10)),
        Ok(())
    );
    // Never used, but 4,096 below the highest: too old to tell.
    assert_eq!(
        check(&a, NOW, &signed(&a, NOW, sender, 10)),
        Err(Refusal::Replayed)
    );
    assert_eq!(
        check(&a, NOW, &signed(&a, NOW, sender, 0)),
        Err(Refusal::Replayed)
    );
    // The lowest number inside the window.
    let lowest = signed(&a, NOW, sender, 11);
    assert_eq!(check(&a, NOW, &lowest), Ok(()));
    assert_eq!(check(&a, NOW, &lowest), Err(Refusal::Replayed));
}

#[test]
fn an_old_number_inside_the_window_is_accepted_once() {
    let a = auth(&["s"]);
    let sender = 7;
    let [first, second, late] = [100, 200, 150].map(|seq| signed(&a, NOW, sender, seq));
    assert_eq!(check(&a, NOW, &first), Ok(()));
    assert_eq!(check(&a, NOW, &second), Ok(()));
    assert_eq!(check(&a, NOW, &late), Ok(()));
    for header in [&first, &second, &late] {
        assert_eq!(check(&a, NOW, header), Err(Refusal::Replayed));
    }
}

#[test]
fn numbers_out_of_order_within_the_window_are_each_accepted_once() {
    let a = auth(&["s"]);
    let sender = 0xfeed;
    // Every number of 0..WINDOW once, in a scrambled order (an odd factor is a bijection
    // modulo a power of two).
    let headers: Vec<_> = (0..WINDOW)
        .map(|i| signed(&a, NOW, sender, i.wrapping_mul(0x9E37_79B9) % WINDOW))
        .collect();
    for header in &headers {
        assert_eq!(check(&a, NOW, header), Ok(()), "{header:?}");
    }
    for header in &headers {
        assert_eq!(check(&a, NOW, header), Err(Refusal::Replayed), "{header:?}");
    }
}

#[test]
fn two_senders_with_the_same_number_are_both_accepted() {
    let (one, two, receiver) = (auth(&["s"]), auth(&["s"]), auth(&["s"]));
    assert_ne!(one.sender, two.sender);
    let (from_one, from_two) = (one.sign("GET", PATH), two.sign("GET", PATH));
    assert_eq!(receiver.verify("GET", PATH, Some(&from_one)), Ok(()));
    assert_eq!(receiver.verify("GET", PATH, Some(&from_two)), Ok(()));
    assert_eq!(
        receiver.verify("GET", PATH, Some(&from_two)),
        Err(Refusal::Replayed)
    );
    assert_eq!(receiver.record.senders(), 2);
}

/// The `i`th sender of shard `shard`.
fn sender_in(shard: usize, i: u64) -> u64 {
    (shard as u64) << (u64::BITS - SHARD_BITS) | i
}

#[test]
fn a_silent_sender_is_forgotten_and_makes_room() {
    let a = auth(&["s"]);
    let shard = 3;
    let first: Vec<_> = (0..SENDERS_PER_SHARD as u64)
        .map(|i| signed(&a, NOW, sender_in(shard, i), 0))
        .collect();
    for header in &first {
        assert_eq!(check(&a, NOW, header), Ok(()));
    }
    // One of them is heard from again later.
    let again = signed(&a, NOW + 50, sender_in(shard, 5), 1);
    assert_eq!(check(&a, NOW + 50, &again), Ok(()));
    let newcomer = sender_in(shard, 1_000);
    // 60 s after, the others could still be replayed: no room.
    let later = NOW + 2 * V;
    assert_eq!(
        check(&a, later, &signed(&a, later, newcomer, 0)),
        Err(Refusal::ReplayRecordFull)
    );
    // A second more, and they can no longer be: forgotten, and the newcomer has room.
    let later = later + 1;
    assert_eq!(check(&a, later, &signed(&a, later, newcomer, 0)), Ok(()));
    assert_eq!(
        a.record.senders(),
        2,
        "the newcomer and the one heard from later"
    );
    // What a forgotten sender signed before is expired now, and it may start again.
    for header in &first {
        assert_eq!(check(&a, later, header), Err(Refusal::Expired));
    }
    let returning = signed(&a, later, sender_in(shard, 0), 1);
    assert_eq!(check(&a, later, &returning), Ok(()));
    assert_eq!(check(&a, later, &returning), Err(Refusal::Replayed));
    // The one heard from later is still known.
    let old = signed(&a, later, sender_in(shard, 5), 1);
    assert_eq!(check(&a, later, &old), Err(Refusal::Replayed));
}

#[test]
fn a_full_record_refuses_new_senders_and_still_serves_known_ones() {
    let a = auth(&["s"]);
    for i in 0..MAX_SENDERS as u64 {
        let sender = sender_in(i as usize % SHARDS, i);
        assert_eq!(check(&a, NOW, &signed(&a, NOW, sender, 0)), Ok(()), "{i}");
    }
    assert_eq!(a.record.senders(), MAX_SENDERS);
    let bytes = a.record.bytes();
    assert!(bytes <= RECORD_BOUND, "{bytes} bytes");
    for shard in 0..SHARDS {
        let newcomer = signed(&a, NOW + 1, sender_in(shard, 1 << 40), 0);
        assert_eq!(
            check(&a, NOW + 1, &newcomer),
            Err(Refusal::ReplayRecordFull)
        );
    }
    assert_eq!(a.record.senders(), MAX_SENDERS, "nobody was evicted");
    for i in [0, 1, 4095] {
        let sender = sender_in(i as usize % SHARDS, i);
        assert_eq!(
            check(&a, NOW + 1, &signed(&a, NOW, sender, 0)),
            Err(Refusal::Replayed)
        );
        assert_eq!(check(&a, NOW + 1, &signed(&a, NOW + 1, sender, 1)), Ok(()));
    }
}

#[test]
fn a_window_accepts_what_a_set_of_every_number_seen_would() {
    // The model: every number accepted, and the rule the window keeps.
    let mut window = Window::new(1 << 20, NOW);
    let (mut seen, mut top) = (BTreeSet::from([1u64 << 20]), 1u64 << 20);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..200_000 {
        let r = random();
        let seq = match r % 8 {
            // Mostly near the top, below and above it.
            0..=4 => (top + 64).saturating_sub((r >> 32) & 1023),
            // Around the window's lower edge.
            5 => (top + 8).saturating_sub(WINDOW + ((r >> 32) & 15)),
            // A jump up, past the window or within it.
            6 => top + ((r >> 32) & 8191),
            // Anywhere below.
            _ => (r >> 32) % (top + 1),
        };
        let expected = seq > top || (top - seq < WINDOW && !seen.contains(&seq));
        assert_eq!(
            window.accept(seq),
            expected,
            "round {round}: {seq} at {top}"
        );
        if expected {
            seen.insert(seq);
            top = top.max(seq);
            assert_eq!(window.top, top);
        }
        if round % 1024 == 0 {
            seen = seen.split_off(&top.saturating_sub(WINDOW));
        }
    }
}

#[test]
fn a_window_at_the_end_of_the_numbers() {
    let mut window = Window::new(u64::MAX - 5, NOW);
    assert!(window.accept(u64::MAX));
    assert!(!window.accept(u64::MAX - 5));
    assert!(window.accept(u64::MAX - 1));
    assert!(!window.accept(u64::MAX));
    assert!(!window.accept(0), "a number that wrapped around is too old");
    assert!(window.accept(u64::MAX - (WINDOW - 1)));
    assert!(!window.accept(u64::MAX - WINDOW));
}

#[test]
fn refusals_have_a_reason_and_a_message() {
    let all = [
        Refusal::Missing,
        Refusal::Malformed,
        Refusal::Expired,
        Refusal::BadSignature,
        Refusal::Replayed,
        Refusal::ReplayRecordFull,
    ];
    let reasons: Vec<_> = all.iter().map(Refusal::reason).collect();
    assert_eq!(
        reasons,
        [
            "missing",
            "malformed",
            "expired",
            "bad_signature",
            "replayed",
            "replay_record_full"
        ]
    );
    for refusal in all {
        assert!(
            refusal.to_string().starts_with("unauthorized: "),
            "{refusal}"
        );
    }
    assert_eq!(
        Refusal::ReplayRecordFull.to_string(),
        "unauthorized: replay record full (too many peers signed requests in the last 60 s)"
    );
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
