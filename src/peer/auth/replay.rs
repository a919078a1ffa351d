//! The replay record: an anti-replay window of sequence numbers per sender, as IPsec and DTLS
//! keep, in a bounded number of senders.

use std::sync::Mutex;

use rustc_hash::FxHashMap;

use super::{Nonce, Refusal, VALIDITY};
use crate::sync::lock;

/// How many sequence numbers a sender's window spans: the highest accepted and those below it.
pub(super) const WINDOW: u64 = 4096;

/// The words of a window's bitmap (512 bytes).
pub(super) const WINDOW_WORDS: usize = (WINDOW / 64) as usize;

/// The replay record's shards, picked by the top bits of the sender id.
pub(super) const SHARD_BITS: u32 = 4;
pub(super) const SHARDS: usize = 1 << SHARD_BITS;

/// Senders the replay record keeps a window for, at most.
pub(super) const MAX_SENDERS: usize = 4096;

/// Senders one shard keeps a window for.
pub(super) const SENDERS_PER_SHARD: usize = MAX_SENDERS / SHARDS;

/// The sequence numbers seen, by sender, in shards that each have a lock of their own, held
/// for one check.
pub(super) struct ReplayRecord {
    pub(super) shards: Box<[Mutex<FxHashMap<u64, Window>>]>,
}

impl Default for ReplayRecord {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl ReplayRecord {
    /// Records a nonce whose MAC checked, `now` being this node's clock in unix seconds.
    pub(super) fn first_use(&self, nonce: Nonce, now: u64) -> Result<(), Refusal> {
        // Sender ids are random, and only a holder of the secret can make one: their top bits
        // spread senders evenly over the shards.
        let shard = (nonce.sender >> (u64::BITS - SHARD_BITS)) as usize;
        let mut senders = lock(&self.shards[shard]);
        if let Some(window) = senders.get_mut(&nonce.sender) {
            if !window.accept(nonce.seq) {
                return Err(Refusal::Replayed);
            }
            window.last_accepted = window.last_accepted.max(now);
            return Ok(());
        }
        // A new sender. Forget the senders that can no longer be replayed; new senders are
        // rare (a node that starts), so the sweep is too.
        senders.retain(|_, window| !window.is_forgettable(now));
        if senders.len() >= SENDERS_PER_SHARD {
            return Err(Refusal::ReplayRecordFull);
        }
        senders.insert(nonce.sender, Window::new(nonce.seq, now));
        Ok(())
    }
}

/// One sender's anti-replay window: the highest sequence number accepted, and which of the
/// `WINDOW` numbers up to it were.
pub(super) struct Window {
    pub(super) top: u64,
    /// This node's clock (unix seconds) when the sender's last request was accepted.
    pub(super) last_accepted: u64,
    /// Bit `seq % WINDOW` is set when `seq`, one of `top - WINDOW + 1 ..= top`, was accepted.
    /// Boxed, so that the hash table's slots stay small.
    pub(super) seen: Box<[u64; WINDOW_WORDS]>,
}

impl Window {
    pub(super) fn new(seq: u64, now: u64) -> Self {
        let mut window = Self {
            top: seq,
            last_accepted: now,
            seen: Box::new([0; WINDOW_WORDS]),
        };
        window.set(seq);
        window
    }

    /// Accepts `seq` unless it was accepted before or is below the window.
    pub(super) fn accept(&mut self, seq: u64) -> bool {
        if seq > self.top {
            let ahead = seq - self.top;
            if ahead >= WINDOW {
                self.seen.fill(0);
            } else {
                // The numbers the window moves over were never seen.
                self.clear(self.top.wrapping_add(1), ahead);
            }
            self.top = seq;
        } else if self.top - seq >= WINDOW || self.is_set(seq) {
            return false;
        }
        self.set(seq);
        true
    }

    /// A request accepted before `now - 2 × VALIDITY` had a timestamp before `now - VALIDITY`,
    /// so it would now be refused as expired: the window has nothing left to refuse.
    pub(super) fn is_forgettable(&self, now: u64) -> bool {
        now.saturating_sub(self.last_accepted) > 2 * VALIDITY.as_secs()
    }

    pub(super) fn is_set(&self, seq: u64) -> bool {
        let bit = seq % WINDOW;
        self.seen[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    pub(super) fn set(&mut self, seq: u64) {
        let bit = seq % WINDOW;
        self.seen[(bit / 64) as usize] |= 1 << (bit % 64);
    }

    /// Clears the bits of `count` (less than `WINDOW`) numbers from `from` on, a word at a time.
    pub(super) fn clear(&mut self, mut from: u64, mut count: u64) {
        while count > 0 {
            let bit = from % WINDOW;
            let offset = bit % 64;
            let n = (64 - offset).min(count);
            let mask = if n == 64 {
                u64::MAX
            } else {
                ((1 << n) - 1) << offset
            };
            self.seen[(bit / 64) as usize] &= !mask;
            from = from.wrapping_add(n);
            count -= n;
        }
    }
}
