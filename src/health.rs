//! Passive peer health: a peer that keeps failing is skipped for a while, so a dead node
//! does not cost every get a timeout.
//!
//! After `failure_threshold` failures in a row a peer is skipped (its keys load locally) for
//! a cooldown; then one real request probes it while the others keep skipping. A probe that
//! fails doubles the cooldown, up to a maximum; any success makes the peer healthy again.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::time::Instant;

/// Settings of passive peer health; see [`GroupcacheBuilder::peer_health`](crate::GroupcacheBuilder::peer_health).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerHealthConfig {
    /// Failures in a row after which a peer is skipped. 0 turns skipping off.
    pub failure_threshold: u32,
    /// The first cooldown.
    pub cooldown: Duration,
    /// The longest cooldown, reached by doubling while probes keep failing.
    pub max_cooldown: Duration,
}

impl Default for PeerHealthConfig {
    /// 3 failures; cooldown from 1 s, doubling up to 30 s.
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(30),
        }
    }
}

/// Whether to ask a peer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Healthy, or not yet failing often enough: ask it.
    Ask,
    /// Its cooldown is over: this request is the one probe.
    Probe,
    /// Skip it: load locally.
    Skip,
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    /// Set while the peer is being skipped.
    skip_until: Option<Instant>,
    cooldown: Duration,
    probing: bool,
}

#[derive(Debug)]
pub(crate) struct PeerHealth {
    config: PeerHealthConfig,
    peers: Mutex<FxHashMap<Box<str>, State>>,
    /// Entries in `peers`: while it is 0, every peer is healthy and no lock is taken.
    tracked: AtomicUsize,
}

impl PeerHealth {
    pub(crate) fn new(config: PeerHealthConfig) -> Self {
        Self {
            config,
            peers: Mutex::default(),
            tracked: AtomicUsize::new(0),
        }
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, FxHashMap<Box<str>, State>> {
        // Nothing panics while holding the lock.
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn verdict(&self, peer: &str) -> Verdict {
        if self.tracked.load(Relaxed) == 0 {
            return Verdict::Ask;
        }
        let mut peers = self.peers();
        let Some(state) = peers.get_mut(peer) else {
            return Verdict::Ask;
        };
        match state.skip_until {
            None => Verdict::Ask,
            Some(until) if Instant::now() < until || state.probing => Verdict::Skip,
            Some(_) => {
                state.probing = true;
                Verdict::Probe
            }
        }
    }

    pub(crate) fn success(&self, peer: &str) {
        if self.tracked.load(Relaxed) == 0 {
            return;
        }
        let mut peers = self.peers();
        if peers.remove(peer).is_some() {
            self.tracked.store(peers.len(), Relaxed);
        }
    }

    /// Records a failure; returns true when it starts (or extends) a skip.
    pub(crate) fn failure(&self, peer: &str) -> bool {
        if self.config.failure_threshold == 0 {
            return false;
        }
        let mut peers = self.peers();
        if !peers.contains_key(peer) {
            peers.insert(peer.into(), State::default());
            self.tracked.store(peers.len(), Relaxed);
        }
        let Some(state) = peers.get_mut(peer) else {
            return false;
        };
        state.failures = state.failures.saturating_add(1);
        let was_probing = std::mem::take(&mut state.probing);
        if was_probing {
            state.cooldown = (state.cooldown * 2).min(self.config.max_cooldown);
        } else if state.failures >= self.config.failure_threshold && state.skip_until.is_none() {
            state.cooldown = self.config.cooldown;
        } else {
            return false;
        }
        state.skip_until = Some(Instant::now() + state.cooldown);
        true
    }

    /// The probe's request is over. If it ended without a verdict (it was dropped), the next
    /// request may probe; after a verdict this changes nothing.
    pub(crate) fn probe_abandoned(&self, peer: &str) {
        if let Some(state) = self.peers().get_mut(peer) {
            state.probing = false;
        }
    }

    /// The peers being skipped now.
    pub(crate) fn skipped(&self) -> Vec<String> {
        let mut skipped: Vec<String> = self
            .peers()
            .iter()
            .filter(|(_, s)| s.skip_until.is_some())
            .map(|(p, _)| p.to_string())
            .collect();
        skipped.sort_unstable();
        skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> PeerHealth {
        PeerHealth::new(PeerHealthConfig::default())
    }

    #[tokio::test(start_paused = true)]
    async fn skips_after_the_threshold_then_probes_once() {
        let h = health();
        assert!(!h.failure("p"));
        assert!(!h.failure("p"));
        assert_eq!(h.verdict("p"), Verdict::Ask);
        assert!(h.failure("p"), "the third failure starts a skip");
        assert_eq!(h.verdict("p"), Verdict::Skip);
        assert_eq!(h.skipped(), ["p"]);

        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(h.verdict("p"), Verdict::Probe);
        assert_eq!(h.verdict("p"), Verdict::Skip, "one probe at a time");
        assert!(h.failure("p"), "a failed probe extends the skip");
        tokio::time::advance(Duration::from_millis(1_999)).await;
        assert_eq!(h.verdict("p"), Verdict::Skip, "the cooldown doubled to 2 s");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(h.verdict("p"), Verdict::Probe);
        h.success("p");
        assert_eq!(h.verdict("p"), Verdict::Ask);
        assert!(h.skipped().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn cooldown_is_capped_and_abandoned_probes_retry() {
        let h = health();
        for _ in 0..3 {
            h.failure("p");
        }
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(30)).await;
            assert_eq!(h.verdict("p"), Verdict::Probe);
            h.failure("p");
        }
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(h.verdict("p"), Verdict::Probe, "never more than 30 s");
        h.probe_abandoned("p");
        assert_eq!(h.verdict("p"), Verdict::Probe);
    }

    #[test]
    fn a_zero_threshold_never_skips() {
        let h = PeerHealth::new(PeerHealthConfig {
            failure_threshold: 0,
            ..PeerHealthConfig::default()
        });
        for _ in 0..100 {
            h.failure("p");
        }
        assert_eq!(h.verdict("p"), Verdict::Ask);
    }
}
