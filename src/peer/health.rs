//! Passive peer health: a peer that keeps failing is skipped for a while, so a dead node
//! does not cost every get a timeout.
//!
//! After `failure_threshold` failures in a row a peer is skipped (its keys load locally) for
//! a cooldown; then one real request probes it while the others keep skipping. A probe that
//! fails doubles the cooldown, up to a maximum; any success makes the peer healthy again.
//! Only the peers on the ring are tracked: a peer that leaves it is forgotten.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use rustc_hash::{FxHashMap, FxHashSet};
use tokio::time::Instant;

use crate::error::ConfigError;
use crate::sync::lock;

/// Settings of passive peer health; see [`GroupcacheBuilder::peer_health`](crate::GroupcacheBuilder::peer_health).
///
/// With a `failure_threshold` above 0, [`build`](crate::GroupcacheBuilder::build) refuses a
/// zero `cooldown` (every request would probe) and a `cooldown` longer than `max_cooldown`
/// with [`ConfigError::InvalidPeerHealth`]. Any longer duration is accepted, up to
/// `Duration::MAX`: a cooldown too long for the clock to count ends in about thirty years,
/// that is, never.
///
/// ```
/// use std::time::Duration;
/// use tower_groupcache::PeerHealthConfig;
///
/// let health = PeerHealthConfig::default()
///     .failure_threshold(5)
///     .cooldown(Duration::from_millis(500))
///     .max_cooldown(Duration::from_secs(60));
/// assert_eq!(health.failure_threshold, 5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[must_use]
pub struct PeerHealthConfig {
    /// Failures in a row after which a peer is skipped. 0 turns skipping off.
    pub failure_threshold: u32,
    /// The first cooldown. More than zero, and at most `max_cooldown`.
    pub cooldown: Duration,
    /// The longest cooldown, reached by doubling while probes keep failing.
    pub max_cooldown: Duration,
}

impl PeerHealthConfig {
    /// Failures in a row after which a peer is skipped; 0 turns skipping off.
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures;
        self
    }

    /// The first cooldown.
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// The longest cooldown, reached by doubling while probes keep failing.
    pub fn max_cooldown(mut self, max_cooldown: Duration) -> Self {
        self.max_cooldown = max_cooldown;
        self
    }

    /// Whether the settings can be used; see the type's documentation.
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        if self.failure_threshold == 0 {
            // Skipping is off: the cooldowns are never used.
            return Ok(());
        }
        if self.cooldown.is_zero() {
            return Err(ConfigError::InvalidPeerHealth(
                "the cooldown must be greater than zero (a failure threshold of 0 turns skipping off)",
            ));
        }
        if self.cooldown > self.max_cooldown {
            return Err(ConfigError::InvalidPeerHealth(
                "the cooldown is longer than the maximum cooldown",
            ));
        }
        Ok(())
    }
}

/// Where a skip that the clock cannot count ends: about thirty years from now, which every
/// platform's clock can count (tokio's timers stop there for the same reason).
const NEVER: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// The end of a cooldown that starts `now`. The sum saturates: a cooldown too long for the
/// clock (`Duration::MAX`) ends in about thirty years.
fn cooldown_end(now: Instant, cooldown: Duration) -> Instant {
    now.checked_add(cooldown)
        .or_else(|| now.checked_add(NEVER))
        .unwrap_or(now)
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

impl State {
    /// Whether the peer is skipped now: in its cooldown, or past it while its probe runs.
    fn skips(&self) -> bool {
        self.skip_until
            .is_some_and(|until| Instant::now() < until || self.probing)
    }
}

/// The peers on the ring, and the state of those that failed lately.
#[derive(Debug, Default)]
struct Peers {
    /// The peers on the ring. A failure of another peer (a fetch that outlived its peer's
    /// removal) is not recorded, so that `states` only ever holds members.
    members: FxHashSet<Box<str>>,
    states: FxHashMap<Box<str>, State>,
}

#[derive(Debug)]
pub(crate) struct PeerHealth {
    config: PeerHealthConfig,
    peers: Mutex<Peers>,
    /// Entries in `states`: while it is 0, every peer is healthy and no lock is taken.
    tracked: AtomicUsize,
}

impl PeerHealth {
    /// Health for the peers of `members`, all healthy.
    pub(crate) fn new(config: PeerHealthConfig, members: &[String]) -> Self {
        let health = Self {
            config,
            peers: Mutex::default(),
            tracked: AtomicUsize::new(0),
        };
        health.retain_peers(members);
        health
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, Peers> {
        // Nothing panics while holding the lock.
        lock(&self.peers)
    }

    /// The ring's peers are now `members`: the others are forgotten, and a peer that comes
    /// back later starts healthy. Called on every membership change.
    pub(crate) fn retain_peers(&self, members: &[String]) {
        let mut peers = self.peers();
        let Peers {
            members: known,
            states,
        } = &mut *peers;
        *known = members.iter().map(|p| Box::from(p.as_str())).collect();
        states.retain(|peer, _| known.contains(peer));
        self.tracked.store(states.len(), Relaxed);
    }

    /// Whether `peer` is skipped now: what [`verdict`](Self::verdict) would say, without
    /// taking the probe that ends a cooldown.
    pub(crate) fn is_skipped(&self, peer: &str) -> bool {
        if self.tracked.load(Relaxed) == 0 {
            return false;
        }
        self.peers().states.get(peer).is_some_and(State::skips)
    }

    pub(crate) fn verdict(&self, peer: &str) -> Verdict {
        if self.tracked.load(Relaxed) == 0 {
            return Verdict::Ask;
        }
        let mut peers = self.peers();
        let Some(state) = peers.states.get_mut(peer) else {
            return Verdict::Ask;
        };
        if state.skip_until.is_none() {
            Verdict::Ask
        } else if state.skips() {
            Verdict::Skip
        } else {
            state.probing = true;
            Verdict::Probe
        }
    }

    pub(crate) fn success(&self, peer: &str) {
        if self.tracked.load(Relaxed) == 0 {
            return;
        }
        let mut peers = self.peers();
        if peers.states.remove(peer).is_some() {
            self.tracked.store(peers.states.len(), Relaxed);
        }
    }

    /// Records a failure; returns true when it starts (or extends) a skip.
    pub(crate) fn failure(&self, peer: &str) -> bool {
        if self.config.failure_threshold == 0 {
            return false;
        }
        let mut peers = self.peers();
        let Peers { members, states } = &mut *peers;
        if !members.contains(peer) {
            return false;
        }
        if !states.contains_key(peer) {
            states.insert(peer.into(), State::default());
            self.tracked.store(states.len(), Relaxed);
        }
        let Some(state) = states.get_mut(peer) else {
            return false;
        };
        state.failures = state.failures.saturating_add(1);
        let was_probing = std::mem::take(&mut state.probing);
        if was_probing {
            state.cooldown = state
                .cooldown
                .saturating_mul(2)
                .min(self.config.max_cooldown);
        } else if state.failures >= self.config.failure_threshold && state.skip_until.is_none() {
            state.cooldown = self.config.cooldown;
        } else {
            return false;
        }
        state.skip_until = Some(cooldown_end(Instant::now(), state.cooldown));
        true
    }

    /// The probe's request is over. If it ended without a verdict (it was dropped), the next
    /// request may probe; after a verdict this changes nothing.
    pub(crate) fn probe_abandoned(&self, peer: &str) {
        if let Some(state) = self.peers().states.get_mut(peer) {
            state.probing = false;
        }
    }

    /// The peers being skipped now: their cooldown runs, or the one probe at its end is in
    /// flight (other requests skip the peer meanwhile). A peer whose cooldown is over and
    /// that no request has probed yet is not listed: the next request asks it.
    pub(crate) fn skipped(&self) -> Vec<String> {
        let now = Instant::now();
        let mut skipped: Vec<String> = self
            .peers()
            .states
            .iter()
            .filter(|(_, s)| s.probing || s.skip_until.is_some_and(|until| now < until))
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
        with(PeerHealthConfig::default())
    }

    /// Health with `config`, for the peers `p` and `q`.
    fn with(config: PeerHealthConfig) -> PeerHealth {
        PeerHealth::new(config, &["p".into(), "q".into()])
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

    #[tokio::test(start_paused = true)]
    async fn the_longest_cooldowns_do_not_overflow() {
        let h = with(PeerHealthConfig {
            failure_threshold: 1,
            cooldown: Duration::MAX,
            max_cooldown: Duration::MAX,
        });
        assert!(h.failure("p"));
        assert_eq!(h.verdict("p"), Verdict::Skip);
        tokio::time::advance(Duration::from_secs(29 * 365 * 86_400)).await;
        assert_eq!(
            h.verdict("p"),
            Verdict::Skip,
            "29 years later, still skipped"
        );

        // A failed probe doubles a cooldown that is already the longest there is.
        let h = with(PeerHealthConfig {
            failure_threshold: 1,
            cooldown: Duration::from_secs(1),
            max_cooldown: Duration::MAX,
        });
        assert!(h.failure("p"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(h.verdict("p"), Verdict::Probe);
        h.peers().states.get_mut("p").unwrap().cooldown = Duration::MAX;
        assert!(h.failure("p"));
        assert_eq!(h.verdict("p"), Verdict::Skip);
    }

    #[tokio::test(start_paused = true)]
    async fn skipped_lists_a_peer_only_while_its_cooldown_runs() {
        let h = health();
        for _ in 0..3 {
            h.failure("p");
        }
        assert_eq!(h.skipped(), ["p"]);
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(h.skipped(), ["p"]);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(
            h.skipped().is_empty(),
            "the cooldown is over: {:?}",
            h.skipped()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_in_flight_is_listed_as_skipped() {
        let h = health();
        for _ in 0..3 {
            h.failure("p");
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(h.verdict("p"), Verdict::Probe);
        assert_eq!(
            h.skipped(),
            ["p"],
            "the others skip it while the probe runs"
        );
        h.probe_abandoned("p");
        assert!(h.skipped().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn peers_that_leave_the_ring_are_forgotten() {
        let h = health();
        for _ in 0..3 {
            h.failure("p");
            h.failure("q");
        }
        assert_eq!(h.skipped(), ["p", "q"]);
        h.retain_peers(&["q".into(), "r".into()]);
        assert_eq!(h.skipped(), ["q"], "p left the ring");
        assert_eq!(h.peers().states.len(), 1);
        assert_eq!(h.tracked.load(Relaxed), 1);

        // A fetch to p that was in flight fails after p left: nothing is recorded.
        assert!(!h.failure("p"));
        assert!(!h.failure("p"));
        assert!(!h.failure("p"));
        assert_eq!(h.verdict("p"), Verdict::Ask);
        assert_eq!(h.peers().states.len(), 1);

        // p comes back: healthy, with a fresh count.
        h.retain_peers(&["p".into(), "q".into()]);
        assert_eq!(h.verdict("p"), Verdict::Ask);
        assert!(!h.failure("p"));
        assert_eq!(h.verdict("q"), Verdict::Skip, "q kept its skip");

        // Everyone leaves: nothing is tracked, and no lock is taken to ask.
        h.retain_peers(&[]);
        assert!(h.skipped().is_empty());
        assert_eq!(h.tracked.load(Relaxed), 0);
    }

    #[test]
    fn checks_its_settings() {
        let config = |failure_threshold, cooldown, max_cooldown| PeerHealthConfig {
            failure_threshold,
            cooldown,
            max_cooldown,
        };
        let (zero, second, minute) = (
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        assert!(PeerHealthConfig::default().check().is_ok());
        assert!(config(3, second, second).check().is_ok());
        assert!(config(3, Duration::MAX, Duration::MAX).check().is_ok());
        assert!(config(0, zero, zero).check().is_ok(), "skipping off");
        assert!(config(0, minute, second).check().is_ok(), "skipping off");
        assert!(matches!(
            config(3, zero, minute).check(),
            Err(ConfigError::InvalidPeerHealth(_))
        ));
        assert!(matches!(
            config(3, minute, second).check(),
            Err(ConfigError::InvalidPeerHealth(_))
        ));
    }

    #[test]
    fn a_zero_threshold_never_skips() {
        let h = with(PeerHealthConfig {
            failure_threshold: 0,
            ..PeerHealthConfig::default()
        });
        for _ in 0..100 {
            h.failure("p");
        }
        assert_eq!(h.verdict("p"), Verdict::Ask);
    }
}
