//! One load per key at a time.
//!
//! The first caller for a key runs the load; every later caller waits for its result on a
//! `watch` channel. If the first caller gives up, the rest of the load is spawned as a task of
//! its own, so it is never cancelled for the others; a panic in the load is caught and becomes
//! an error for every waiter; the key's slot is freed when the load ends however it ends, so
//! nothing is poisoned and the next call loads again.

use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
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

type Slot<T> = watch::Receiver<Option<Outcome<T>>>;

/// A map of loads in flight, keyed by `K`, each producing a `T` shared by its waiters.
pub(crate) struct Singleflight<K, T> {
    flights: Arc<Mutex<FxHashMap<K, Slot<T>>>>,
}

impl<K, T> Default for Singleflight<K, T> {
    fn default() -> Self {
        Self {
            flights: Arc::default(),
        }
    }
}

/// Frees the key's slot when the load task ends, even if it is dropped half-way.
struct Landing<K: Hash + Eq, T> {
    flights: Arc<Mutex<FxHashMap<K, Slot<T>>>>,
    key: Option<K>,
}

impl<K: Hash + Eq, T> Drop for Landing<K, T> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            lock(&self.flights).remove(&key);
        }
    }
}

fn lock<M>(m: &Mutex<M>) -> std::sync::MutexGuard<'_, M> {
    // No code panics while holding this lock, so a poisoned lock holds consistent data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

type LoadTask<T> = Pin<Box<dyn Future<Output = Outcome<T>> + Send>>;

/// The first caller's hold on the load. The first caller drives the load itself, with no
/// task hand-off; if it is dropped before the load ends, the rest of the load is spawned so
/// that it still finishes for everyone else.
struct Leader<T: Send + 'static> {
    load: Option<LoadTask<T>>,
    runtime: tokio::runtime::Handle,
}

impl<T: Send + 'static> Drop for Leader<T> {
    fn drop(&mut self) {
        if let Some(load) = self.load.take() {
            self.runtime.spawn(load);
        }
    }
}

enum Role<T: Send + 'static> {
    Leader(Leader<T>),
    Follower(Slot<T>),
}

impl<K, T> Singleflight<K, T>
where
    K: Hash + Eq + Clone + Send + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// Joins the load of `key` in flight, or starts `load()` if there is none.
    ///
    /// The caller that starts the load runs it while it waits; should it give up, the rest of
    /// the load moves to a task on `runtime`.
    pub(crate) fn run<F>(
        &self,
        runtime: &tokio::runtime::Handle,
        key: K,
        load: impl FnOnce() -> F,
    ) -> impl Future<Output = Outcome<T>> + Send + 'static
    where
        F: Future<Output = T> + Send + 'static,
    {
        let role = {
            let mut flights = lock(&self.flights);
            if let Some(rx) = flights.get(&key) {
                Role::Follower(rx.clone())
            } else {
                let (tx, rx) = watch::channel(None);
                flights.insert(key.clone(), rx);
                let landing = Landing {
                    flights: self.flights.clone(),
                    key: Some(key),
                };
                let fut = load();
                let task: LoadTask<T> = Box::pin(async move {
                    let result = AssertUnwindSafe(fut).catch_unwind().await;
                    // Free the slot before publishing: a caller that arrives now finds the
                    // cache already filled by the load, or starts a fresh load.
                    drop(landing);
                    let outcome = match result {
                        Ok(value) => Outcome::Done(value),
                        Err(_) => Outcome::Panicked,
                    };
                    if tx.receiver_count() > 0 {
                        let _ = tx.send(Some(outcome.clone()));
                    }
                    outcome
                });
                Role::Leader(Leader {
                    load: Some(task),
                    runtime: runtime.clone(),
                })
            }
        };
        async move {
            match role {
                Role::Leader(mut leader) => {
                    let Some(load) = leader.load.as_mut() else {
                        return Outcome::Abandoned;
                    };
                    let outcome = load.await;
                    leader.load = None;
                    outcome
                }
                Role::Follower(mut rx) => match rx.wait_for(Option::is_some).await {
                    Ok(value) => match &*value {
                        Some(v) => v.clone(),
                        None => Outcome::Abandoned,
                    },
                    Err(_) => Outcome::Abandoned,
                },
            }
        }
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        lock(&self.flights).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::sync::Notify;

    type Flights = Singleflight<&'static str, u32>;
    type IdFlights = Singleflight<&'static str, Option<tokio::task::Id>>;

    #[tokio::test]
    async fn concurrent_calls_share_one_load() {
        let flights = Flights::default();
        let rt = tokio::runtime::Handle::current();
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Notify::new());
        let waiters: Vec<_> = (0..100)
            .map(|_| {
                let (calls, gate) = (calls.clone(), gate.clone());
                flights.run(&rt, "k", move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    7
                })
            })
            .collect();
        assert_eq!(flights.in_flight(), 1);
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
        let first = flights.run(&rt, "k", move || async move {
            g.notified().await;
            1
        });
        let second = flights.run(&rt, "k", || async { 2 });
        drop(first);
        gate.notify_one();
        assert!(matches!(second.await, Outcome::Done(1)));
    }

    #[tokio::test]
    async fn a_panic_reaches_every_waiter_and_poisons_nothing() {
        let flights = Flights::default();
        let rt = tokio::runtime::Handle::current();
        let gate = Arc::new(Notify::new());
        let g = gate.clone();
        let a = flights.run(&rt, "k", move || async move {
            g.notified().await;
            panic!("loader bug")
        });
        let b = flights.run(&rt, "k", || async { 0 });
        gate.notify_one();
        assert!(matches!(a.await, Outcome::Panicked));
        assert!(matches!(b.await, Outcome::Panicked));
        assert_eq!(flights.in_flight(), 0);
        let again = flights.run(&rt, "k", || async { 3 });
        assert!(matches!(again.await, Outcome::Done(3)));
    }

    #[test]
    fn a_load_dropped_with_its_runtime_is_abandoned() {
        let flights = Flights::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let leader = flights.run(rt.handle(), "k", || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            1
        });
        let follower = flights.run(rt.handle(), "k", || async { 2 });
        rt.spawn(leader);
        drop(rt);
        assert_eq!(flights.in_flight(), 0, "the slot is freed");
        let other = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(matches!(other.block_on(follower), Outcome::Abandoned));
    }

    #[tokio::test]
    async fn the_first_caller_runs_the_load_on_its_own_task() {
        let flights = Arc::new(IdFlights::default());
        let rt = tokio::runtime::Handle::current();
        let caller = tokio::spawn(async move {
            let caller = tokio::task::id();
            let outcome = flights
                .run(&rt, "k", || async { tokio::task::try_id() })
                .await;
            (caller, outcome)
        });
        let (caller, outcome) = caller.await.unwrap();
        assert!(
            matches!(outcome, Outcome::Done(Some(id)) if id == caller),
            "no hand-off to another task"
        );
    }
}
