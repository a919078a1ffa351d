//! Log lines that anyone can cause, at most one per interval.
//!
//! A refused peer request, a peer's foreign ring fingerprint, a failed fetch or an unconfirmed
//! removal can each happen thousands of times a second, some at the will of whoever reaches
//! the peer path. Each is counted in the stats; its log line is written at most once per
//! interval, with the number of lines left out since the last one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// How often a line of one kind may be written.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// When a line of one kind was last written, and how many were left out since.
#[derive(Debug, Default)]
pub(crate) struct LogThrottle {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    /// `Some(left_out)` when a line may be written now (with the number of lines left out
    /// since the last one); `None` when this one is to be left out.
    pub(crate) fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut state = lock(&self.state);
        let due = state
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= LOG_INTERVAL);
        if due {
            state.last = Some(now);
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed = state.suppressed.saturating_add(1);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_left_out() {
        let throttle = LogThrottle::default();
        let start = Instant::now();
        assert_eq!(throttle.allow_at(start), Some(0));
        for i in 1..=99 {
            assert_eq!(throttle.allow_at(start + Duration::from_millis(i)), None);
        }
        assert_eq!(throttle.allow_at(start + LOG_INTERVAL), Some(99));
        assert_eq!(throttle.allow_at(start + LOG_INTERVAL), None);
        assert_eq!(throttle.allow_at(start + LOG_INTERVAL * 3), Some(1));
    }
}
