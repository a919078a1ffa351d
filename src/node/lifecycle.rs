//! The drain of a shutdown: peers are refused, and the loads that started before it are
//! waited for, within a bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};

use super::Node;

impl Node {
    /// Starts the drain and waits, at most the shutdown timeout, for the loads that started
    /// before it. See [`Groupcache::shutdown`](crate::Groupcache::shutdown).
    pub(crate) async fn shutdown(&self) -> Shutdown {
        let drain = &self.drain;
        drain.start();
        let bound = self.config.shutdown_timeout;
        if tokio::time::timeout(bound, drain.finished()).await.is_ok() {
            return Shutdown { abandoned: 0 };
        }
        let abandoned = drain.running();
        if abandoned > 0 {
            tracing::warn!(
                abandoned,
                timeout_ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX),
                "shutdown: loads still running at the shutdown timeout; not waiting for them"
            );
        }
        Shutdown { abandoned }
    }

    /// Whether the drain started: peer requests are refused.
    pub(crate) fn is_draining(&self) -> bool {
        self.drain.is_draining()
    }
}

/// What [`Groupcache::shutdown`](crate::Groupcache::shutdown) waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Shutdown {
    abandoned: usize,
}

impl Shutdown {
    /// The loads that were still running when the shutdown timeout ran out. They go on in the
    /// background; nothing waits for them.
    pub fn abandoned(&self) -> usize {
        self.abandoned
    }

    /// Whether every load that started before the shutdown finished within its timeout.
    pub fn is_complete(&self) -> bool {
        self.abandoned == 0
    }
}

/// A shutdown's drain: whether it started, and the loads that started before it.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    draining: AtomicBool,
    /// Loads running that started before the drain (and a few that start while it begins).
    running: AtomicUsize,
    /// Woken when `running` drops to 0 during the drain.
    finished: tokio::sync::Notify,
}

impl Drain {
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    fn start(&self) {
        // SeqCst pairs with `begin`: a load counted after this store sees it and takes itself
        // out again; one counted before it is waited for.
        self.draining.store(true, SeqCst);
    }

    fn running(&self) -> usize {
        self.running.load(SeqCst)
    }

    /// Waits until no load that started before the drain is running.
    async fn finished(&self) {
        loop {
            // Made before the check, so a wake-up between the two is not lost.
            let woken = self.finished.notified();
            if self.running.load(SeqCst) == 0 {
                return;
            }
            woken.await;
        }
    }

    /// Counts a load that starts now, if the drain has not started; the guard counts it out
    /// however the load ends.
    pub(super) fn begin(self: &Arc<Self>) -> DrainCount {
        self.running.fetch_add(1, SeqCst);
        if self.draining.load(SeqCst) {
            // Started after the drain: not waited for.
            self.end();
            return DrainCount(None);
        }
        DrainCount(Some(self.clone()))
    }

    fn end(&self) {
        if self.running.fetch_sub(1, SeqCst) == 1 && self.draining.load(SeqCst) {
            self.finished.notify_waiters();
        }
    }
}

/// A load counted by the drain; counted out when dropped.
pub(super) struct DrainCount(Option<Arc<Drain>>);

impl Drop for DrainCount {
    fn drop(&mut self) {
        if let Some(drain) = self.0.take() {
            drain.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_drain_waits_for_the_loads_before_it_and_no_later_one() {
        let drain = Arc::new(Drain::default());
        let before = drain.begin();
        drain.start();
        assert!(drain.is_draining());
        let after = drain.begin();
        assert_eq!(
            drain.running(),
            1,
            "only the load from before the drain counts"
        );
        let finished = tokio::time::timeout(Duration::from_secs(1), drain.finished());
        assert!(finished.await.is_err(), "it waits for the load from before");
        drop(before);
        tokio::time::timeout(Duration::from_secs(1), drain.finished())
            .await
            .expect("done once that load ends, with the later one still running");
        drop(after);
        assert_eq!(drain.running(), 0);
    }
}
