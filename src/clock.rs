//! The clock that decides when cached values expire.
//!
//! Expiry is read from a [`Clock`] so that tests (and simulations) can move time by hand with
//! [`ManualClock`] while real HTTP runs between nodes; network timeouts always use tokio's
//! timer.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant, SystemTime};

/// A source of the current time for expiry decisions.
pub trait Clock: Send + Sync + 'static {
    /// Monotonic now.
    fn now(&self) -> Instant;
    /// Wall-clock now, for expiry times sent to peers (Unix nanoseconds).
    fn system_now(&self) -> SystemTime;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn system_now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to; clones share one time.
///
/// ```
/// use std::time::Duration;
/// use tower_groupcache::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let before = clock.now();
/// clock.advance(Duration::from_secs(60));
/// assert_eq!(clock.now() - before, Duration::from_secs(60));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    start: Instant,
    start_system: SystemTime,
    offset_nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at the real time of its creation.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            start_system: SystemTime::now(),
            offset_nanos: Arc::default(),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.offset_nanos.fetch_add(nanos, Relaxed);
    }

    fn offset(&self) -> Duration {
        Duration::from_nanos(self.offset_nanos.load(Relaxed))
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("advanced", &self.offset())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.offset()
    }

    fn system_now(&self) -> SystemTime {
        self.start_system + self.offset()
    }
}
