//! One load per key at a time.
//!
//! The first caller for a key starts the load as a task of its own; every caller, the first
//! included, waits for its result on a `watch` channel. So no waiter depends on another one
//! being polled: a caller that is dropped, or kept but never polled again, holds up nobody,
//! and the load finishes for the others. A panic in the load is caught and becomes an outcome
//! for every waiter; the key's slot is freed when the load ends however it ends, so nothing is
//! poisoned and the next call loads again.
//!
//! A load can be revoked while it runs (its key was removed): it leaves the map at once, so
//! the next call starts a new load instead of joining it, and its [`Ticket`] says that its
//! result must not be kept.

use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::FutureExt as _;
use rustc_hash::FxHashMap;
use tokio::sync::watch;

/// How a flight ended, as every waiter sees it.
#[derive(Debug, Clone)]
pub(crate) enum Outcome<T> {
    /// The load's own result.
    Done(T),
    /// The load panicked.
    Panicked,
    /// The load task was dropped before it finished (its runtime shut down).
    Abandoned,
}

/// A load's standing: current until its key is removed (or its source cleared) while it
/// runs. A revoked load still answers its waiters, but keeps nothing in the caches.
#[derive(Debug)]
pub(crate) struct Ticket(AtomicBool);

impl Ticket {
    pub(crate) fn new() -> Self {
        Self(AtomicBool::new(true))
    }

    /// Whether the load's result may still be kept. SeqCst pairs a store with the removal
    /// that revokes it: see `Group::store`.
    pub(crate) fn is_current(&self) -> bool {
        self.0.load(SeqCst)
    }

    fn revoke(&self) {
        self.0.store(false, SeqCst);
    }
}

/// A load in flight: where its outcome will appear, and its ticket.
struct Flight<T> {
    outcome: watch::Receiver<Option<Outcome<T>>>,
    ticket: Arc<Ticket>,
}

type Flights<K, T> = Arc<Mutex<FxHashMap<K, Flight<T>>>>;

/// A map of loads in flight, keyed by `K`, each producing a `T` shared by its waiters.
pub(crate) struct Singleflight<K, T> {
    flights: Flights<K, T>,
}

impl<K, T> Default for Singleflight<K, T> {
    fn default() -> Self {
        Self {
            flights: Arc::default(),
        }
    }
}

/// Frees the key's slot when the load task ends, even if it is dropped half-way, unless the
/// slot already belongs to a newer load (this one was revoked).
struct SlotRelease<K: Hash + Eq, T> {
    flights: Flights<K, T>,
    key: Option<K>,
    ticket: Arc<Ticket>,
}

impl<K: Hash + Eq, T> Drop for SlotRelease<K, T> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut flights = lock(&self.flights);
        if flights
            .get(&key)
            .is_some_and(|flight| Arc::ptr_eq(&flight.ticket, &self.ticket))
        {
            flights.remove(&key);
        }
    }
}

fn lock<M>(m: &Mutex<M>) -> std::sync::MutexGuard<'_, M> {
    // No code panics while holding this lock, so a poisoned lock holds consistent data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K, T> Singleflight<K, T>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// Joins the load of `key` in flight, or starts `load(ticket)` as a task on `runtime` if
    /// there is none. The future waits for the outcome; dropping it cancels nothing.
    pub(crate) fn run<F>(
        &self,
        runtime: &tokio::runtime::Handle,
        key: K,
        load: impl FnOnce(Arc<Ticket>) -> F,
    ) -> impl Future<Output = Outcome<T>> + Send + 'static
    where
        F: Future<Output = T> + Send + 'static,
    {
        let (outcome, task) = {
            let mut flights = lock(&self.flights);
            match flights.get(&key) {
                Some(flight) => (flight.outcome.clone(), None),
                None => {
                    let (tx, rx) = watch::channel(None);
                    let ticket = Arc::new(Ticket::new());
                    flights.insert(
                        key.clone(),
                        Flight {
                            outcome: rx.clone(),
                            ticket: ticket.clone(),
                        },
                    );
                    let release = SlotRelease {
                        flights: self.flights.clone(),
                        key: Some(key),
                        ticket: ticket.clone(),
                    };
                    let fut = load(ticket);
                    let task = async move {
                        let result = AssertUnwindSafe(fut).catch_unwind().await;
                        // Free the slot before publishing: a caller that arrives now finds the
                        // cache already filled by the load, or starts a fresh load.
                        drop(release);
                        tx.send_replace(Some(match result {
                            Ok(value) => Outcome::Done(value),
                            Err(_) => Outcome::Panicked,
                        }));
                    };
                    (rx, Some(task))
                }
            }
        };
        // Spawned outside the lock; the task owns the sender, so if the runtime drops it
        // before it ends, the waiters see `Abandoned`.
        if let Some(task) = task {
            runtime.spawn(task);
        }
        wait(outcome)
    }

    /// Revokes the loads of `keys` in flight: they leave the map, so the next call for one of
    /// them starts a new load, and their tickets say their results are not to be kept.
    pub(crate) fn revoke(&self, keys: impl IntoIterator<Item = K>) {
        let mut flights = lock(&self.flights);
        for key in keys {
            if let Some(flight) = flights.remove(&key) {
                flight.ticket.revoke();
            }
        }
    }

    /// Revokes every load in flight.
    pub(crate) fn revoke_all(&self) {
        for (_, flight) in lock(&self.flights).drain() {
            flight.ticket.revoke();
        }
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        lock(&self.flights).len()
    }
}

/// The outcome of a flight, once it is published.
async fn wait<T: Clone>(mut outcome: watch::Receiver<Option<Outcome<T>>>) -> Outcome<T> {
    match outcome.wait_for(Option::is_some).await {
        Ok(published) => published.clone().unwrap_or(Outcome::Abandoned),
        Err(_) => Outcome::Abandoned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::sync::Notify;

    type Flights = Singleflight<&'static str, u32>;

    #[tokio::test]
    async fn concurrent_calls_share_one_load() {
        let flights = Flights::default();
        let rt = tokio::runtime::Handle::current();
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Notify::new());
        let waiters: Vec<_> = (0..100)
            .map(|_| {
                let (calls, gate) = (calls.clone(), gate.clone());
                flights.run(&rt, "k", move |_| async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    7
                })
            })
            .collect();
        assert_eq!(flights.in_flight(), 1);
        tokio::task::yield_now().await;
        gate.notify_one();
        for w in waiters {
            assert!(matches!(w.await, Outcome::Done(7)));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn dropped_callers_do_not_cancel_the_load() {
        let flights = Flights::default();
        let rt = tokio::runtime::Handle::current();
        let gate = Arc::new(Notify::new());
        let g = gate.clone();
        let first = flights.run(&rt, "k", move |_| async move {
            g.notified().await;
            1
        });
        let second = flights.run(&rt, "k", |_| async { 2 });
        drop(first);
        tokio::task::yield_now().await;
        gate.notify_one();
        assert!(matches!(second.await, Outcome::Done(1)));
    }

    #[tokio::test]
    async fn a_caller_never_polled_again_holds_up_nobody() {
        let flights = Flights::default();
        let rt = tokio::runtime::Handle::current();
        let mut first = Box::pin(flights.run(&rt, "k", |_| async { 5 }));
        // Polled once, then kept but never polled again.
        let pending =
            std::future::poll_fn(|cx| std::task::Poll::Ready(first.as_mut().poll(cx).is_pending()))
                .await;
        assert!(pending);
        let second = flights.run(&rt, "k", |_| async { 6 });
        assert!(matches!(second.await, Outcome::Done(5)));
        assert!(matches!(first.await, Outcome::Done(5)));
    }

    #[tokio::test]
    async fn a_panic_reaches_every_waiter_and_poisons_nothing() {
        let flights = Flights::default();
        let rt = tokio::runtime::Handle::current();
        let gate = Arc::new(Notify::new());
        let g = gate.clone();
        let a = flights.run(&rt, "k", move |_| async move {
            g.notified().await;
            panic!("loader bug")
        });
        let b = flights.run(&rt, "k", |_| async { 0 });
        tokio::task::yield_now().await;
        gate.notify_one();
        assert!(matches!(a.await, Outcome::Panicked));
        assert!(matches!(b.await, Outcome::Panicked));
        assert_eq!(flights.in_flight(), 0);
        let again = flights.run(&rt, "k", |_| async { 3 });
        assert!(matches!(again.await, Outcome::Done(3)));
    }

    #[test]
    fn a_load_dropped_with_its_runtime_is_abandoned() {
        let flights = Flights::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let first = flights.run(rt.handle(), "k", |_| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            1
        });
        let second = flights.run(rt.handle(), "k", |_| async { 2 });
        drop(rt);
        assert_eq!(flights.in_flight(), 0, "the slot is freed");
        let other = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(matches!(other.block_on(first), Outcome::Abandoned));
        assert!(matches!(other.block_on(second), Outcome::Abandoned));
    }

    #[tokio::test]
    async fn a_revoked_load_is_not_joined_and_keeps_its_waiters() {
        let flights = Flights::default();
        let rt = tokio::runtime::Handle::current();
        let gate = Arc::new(Notify::new());
        let tickets = Arc::new(Mutex::new(Vec::new()));
        let start = |value: u32| {
            let (gate, tickets) = (gate.clone(), tickets.clone());
            move |ticket: Arc<Ticket>| async move {
                lock(&tickets).push(ticket);
                gate.notified().await;
                value
            }
        };
        let old = flights.run(&rt, "k", start(1));
        let other = flights.run(&rt, "other", start(9));
        tokio::task::yield_now().await;
        flights.revoke(["k"]);
        assert_eq!(flights.in_flight(), 1, "only k left the map");
        let new = flights.run(&rt, "k", start(2));
        tokio::task::yield_now().await;
        {
            let tickets = lock(&tickets);
            assert_eq!(tickets.len(), 3);
            assert!(!tickets[0].is_current(), "the old load of k is revoked");
            assert!(tickets[1].is_current() && tickets[2].is_current());
        }
        gate.notify_waiters();
        assert!(matches!(old.await, Outcome::Done(1)));
        assert!(matches!(new.await, Outcome::Done(2)));
        assert!(matches!(other.await, Outcome::Done(9)));
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn the_end_of_a_revoked_load_leaves_the_newer_slot() {
        let flights = Flights::default();
        let rt = tokio::runtime::Handle::current();
        let old_gate = Arc::new(Notify::new());
        let g = old_gate.clone();
        let old = flights.run(&rt, "k", move |_| async move {
            g.notified().await;
            1
        });
        tokio::task::yield_now().await;
        flights.revoke_all();
        let new_gate = Arc::new(Notify::new());
        let g = new_gate.clone();
        let new = flights.run(&rt, "k", move |_| async move {
            g.notified().await;
            2
        });
        tokio::task::yield_now().await;
        old_gate.notify_one();
        assert!(matches!(old.await, Outcome::Done(1)));
        assert_eq!(flights.in_flight(), 1, "the newer load still owns the slot");
        let joined = flights.run(&rt, "k", |_| async { 3 });
        new_gate.notify_one();
        assert!(matches!(new.await, Outcome::Done(2)));
        assert!(
            matches!(joined.await, Outcome::Done(2)),
            "joined the newer load"
        );
    }
}
