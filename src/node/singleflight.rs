//! One load per key at a time.
//!
//! The first caller for a key starts the load and drives it in its own task, with no
//! hand-off; every later caller joins it. The load is shared, much as
//! `futures::future::Shared` shares a future: each waiter that is polled may drive it, and
//! each is woken when it makes progress, so no waiter depends on another one being polled. A caller that is dropped, or
//! kept but never polled again, holds up nobody. When the last waiter is dropped before the
//! load ends, the rest of the load is spawned as a task of its own, so that it finishes (and
//! fills the cache) for the callers to come. A panic in the load is caught and becomes an
//! outcome for every waiter; the key's slot is freed when the load ends however it ends, so
//! nothing is poisoned and the next call loads again.
//!
//! A load can be revoked while it runs (its key was removed): it leaves the map at once, so
//! the next call starts a new load instead of joining it, and its [`Ticket`] says that its
//! result must not be kept.

use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::AcqRel, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::FutureExt as _;
use rustc_hash::FxHashMap;

use crate::sync::lock;

/// How a flight ended, as every waiter sees it.
#[derive(Debug, Clone)]
pub(crate) enum Outcome<T> {
    /// The load's own result.
    Done(T),
    /// The load panicked.
    Panicked,
}

impl<T: Clone> Outcome<Arc<Vec<T>>> {
    /// A batch's outcome for its key at `place`.
    pub(crate) fn nth(&self, place: usize) -> Outcome<T> {
        match self {
            Self::Done(values) => match values.get(place) {
                Some(value) => Outcome::Done(value.clone()),
                None => Outcome::Panicked,
            },
            Self::Panicked => Outcome::Panicked,
        }
    }

    /// The batch's outcome for each of its keys, in order, without end (a key the load
    /// returned no value for has panicked). The values are moved out when no other waiter
    /// shares them (the usual case: the batch's caller is its only waiter), cloned otherwise.
    pub(crate) fn into_each(self) -> impl Iterator<Item = Outcome<T>> {
        let values = match self {
            Self::Done(values) => {
                Arc::try_unwrap(values).unwrap_or_else(|shared| (*shared).clone())
            }
            Self::Panicked => Vec::new(),
        };
        values
            .into_iter()
            .map(Outcome::Done)
            .chain(std::iter::repeat_with(|| Outcome::Panicked))
    }
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
    /// that revokes it: see `CachedSource::store`.
    pub(crate) fn is_current(&self) -> bool {
        self.0.load(SeqCst)
    }

    fn revoke(&self) {
        self.0.store(false, SeqCst);
    }
}

/// A shared handle on one key's [`Ticket`]: a load of one key has a ticket of its own; the
/// keys of a batch have theirs in one allocation, each revoked alone.
#[derive(Debug, Clone)]
pub(crate) enum TicketRef {
    One(Arc<Ticket>),
    Batch(Arc<[Ticket]>, usize),
}

impl TicketRef {
    fn one() -> Self {
        Self::One(Arc::new(Ticket::new()))
    }

    /// Whether both are handles on the same ticket.
    fn same(&self, other: &Self) -> bool {
        std::ptr::eq::<Ticket>(&**self, &**other)
    }
}

impl std::ops::Deref for TicketRef {
    type Target = Ticket;

    fn deref(&self) -> &Ticket {
        match self {
            Self::One(ticket) => ticket,
            Self::Batch(tickets, i) => &tickets[*i],
        }
    }
}

type LoadTask<T> = Pin<Box<dyn Future<Output = Outcome<T>> + Send>>;

/// A load shared by its waiters, as `futures::future::Shared` shares a future, but for one
/// thing: the waiter that drives it to its end is not woken by its own completion. (`Shared`
/// wakes every waker it holds, the finishing caller's own included, so every miss cost its
/// task a second, spurious turn on the scheduler: a sequential remote hit took up to 3x a raw
/// round trip in docs/performance.md.)
struct SharedLoad<T> {
    state: Mutex<LoadState<T>>,
    /// The waker the load is polled with: it wakes every waiter that waits.
    notifier: Arc<Notifier>,
    waiters: Waiters,
}

enum LoadState<T> {
    /// Nobody polls the load now; here it is.
    Idle(LoadTask<T>),
    /// A waiter polls it now.
    Polling,
    Done(Outcome<T>),
}

/// The wakers of the waiters, one slot each.
#[derive(Default)]
struct Notifier {
    wakers: Mutex<Wakers>,
}

/// The waiters' wakers: the first inline, as most loads have one waiter, so that its waker
/// is kept and woken without a vector.
#[derive(Default)]
struct Wakers {
    first: Option<Waker>,
    /// The slots after the first.
    rest: Vec<Option<Waker>>,
    /// The slots handed out.
    slots: usize,
}

impl Wakers {
    fn slot(&mut self, i: usize) -> &mut Option<Waker> {
        match i.checked_sub(1) {
            None => &mut self.first,
            Some(i) => &mut self.rest[i],
        }
    }
}

impl Notifier {
    /// Keeps `waker` in the waiter's slot (made on its first call).
    fn register(&self, slot: &mut Option<usize>, waker: &Waker) {
        let mut wakers = lock(&self.wakers);
        let i = match *slot {
            Some(i) => i,
            None => {
                let i = wakers.slots;
                wakers.slots += 1;
                if i > 0 {
                    wakers.rest.push(None);
                }
                *slot = Some(i);
                i
            }
        };
        match wakers.slot(i) {
            Some(old) if old.will_wake(waker) => {}
            entry => *entry = Some(waker.clone()),
        }
    }

    /// Wakes every waiting waker but the one in `except`; each is taken (a woken waiter
    /// registers again when it is polled). Woken outside the lock.
    fn wake_all(&self, except: Option<usize>) {
        let (first, rest) = {
            let mut wakers = lock(&self.wakers);
            let first = wakers.first.take().filter(|_| except != Some(0));
            let rest: Vec<Waker> = wakers
                .rest
                .iter_mut()
                .enumerate()
                .filter_map(|(i, waker)| {
                    let waker = waker.take()?;
                    (Some(i + 1) != except).then_some(waker)
                })
                .collect();
            (first, rest)
        };
        if let Some(waker) = first {
            waker.wake();
        }
        for waker in rest {
            waker.wake();
        }
    }
}

impl Wake for Notifier {
    fn wake(self: Arc<Self>) {
        self.wake_all(None);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wake_all(None);
    }
}

impl<T: Clone> SharedLoad<T> {
    /// A load with its first waiter, finished on `runtime` should its waiters all leave.
    fn new(task: LoadTask<T>, runtime: &tokio::runtime::Handle) -> Self {
        Self {
            state: Mutex::new(LoadState::Idle(task)),
            notifier: Arc::default(),
            waiters: Waiters {
                count: AtomicUsize::new(1),
                runtime: runtime.clone(),
            },
        }
    }

    fn is_done(&self) -> bool {
        matches!(*lock(&self.state), LoadState::Done(_))
    }

    /// Polls the load for the waiter with the waker `slot`: drives it if nobody else does,
    /// else waits to be woken.
    fn poll(&self, slot: &mut Option<usize>, cx: &mut Context<'_>) -> Poll<Outcome<T>> {
        // Registered first, so that a wake while another waiter polls reaches this one.
        self.notifier.register(slot, cx.waker());
        let mut task = {
            let mut state = lock(&self.state);
            match std::mem::replace(&mut *state, LoadState::Polling) {
                LoadState::Idle(task) => task,
                LoadState::Polling => return Poll::Pending,
                LoadState::Done(outcome) => {
                    *state = LoadState::Done(outcome.clone());
                    return Poll::Ready(outcome);
                }
            }
        };
        // Polled outside the lock, with the waker of every waiter.
        let waker = Waker::from(self.notifier.clone());
        match task.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Pending => {
                *lock(&self.state) = LoadState::Idle(task);
                Poll::Pending
            }
            Poll::Ready(outcome) => {
                *lock(&self.state) = LoadState::Done(outcome.clone());
                drop(task);
                self.notifier.wake_all(*slot);
                Poll::Ready(outcome)
            }
        }
    }
}

/// A load in flight: the load itself, which every waiter shares, and its ticket.
struct Flight<T> {
    load: FlightLoad<T>,
    ticket: TicketRef,
}

/// What a key's flight waits for: a load of its own, or its place in a load of many keys.
enum FlightLoad<T> {
    One(Arc<SharedLoad<T>>),
    Batch(Arc<SharedLoad<Arc<Vec<T>>>>, usize),
}

impl<T: Clone + Send + Sync + 'static> FlightLoad<T> {
    /// A new waiter of this load, counted among its waiters.
    fn join(&self) -> Waiter<T> {
        match self {
            Self::One(load) => Waiter::One(RawWaiter::join(load)),
            Self::Batch(load, place) => Waiter::Batch(RawWaiter::join(load), *place),
        }
    }
}

/// The count of a load's waiters, and where to finish it when none is left.
struct Waiters {
    count: AtomicUsize,
    runtime: tokio::runtime::Handle,
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

/// Frees the key's slot when the load ends, even if it is dropped half-way, unless the slot
/// already belongs to a newer load (this one was revoked).
struct SlotRelease<K: Hash + Eq, T> {
    flights: Flights<K, T>,
    key: Option<K>,
    ticket: TicketRef,
}

impl<K: Hash + Eq, T> Drop for SlotRelease<K, T> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let released = {
            let mut flights = lock(&self.flights);
            match flights.get(&key) {
                Some(flight) if flight.ticket.same(&self.ticket) => flights.remove(&key),
                _ => None,
            }
        };
        // Dropped outside the lock: it may hold the last handle on a load.
        drop(released);
    }
}

/// [`SlotRelease`] for the keys of a batch.
struct BatchRelease<K: Hash + Eq, T> {
    flights: Flights<K, T>,
    /// The batch's keys, in their order in its load (shared with the load).
    keys: Arc<[K]>,
    /// The address of the batch's load, which a key's flight waits for while it is this
    /// batch's (the load outlives its release, so no other load can have it meanwhile).
    load: usize,
}

impl<K: Hash + Eq, T> Drop for BatchRelease<K, T> {
    fn drop(&mut self) {
        let mut released = Vec::with_capacity(self.keys.len());
        {
            let mut flights = lock(&self.flights);
            // One look-up per key: taken out, and put back in the rare case that it is a
            // newer load's (this batch's flight of it was revoked meanwhile).
            for (nth, key) in self.keys.iter().enumerate() {
                if let Some((key, flight)) = flights.remove_entry(key) {
                    let ours = matches!(&flight.load, FlightLoad::Batch(load, place)
                        if address(load) == self.load && *place == nth);
                    if ours {
                        released.push(flight);
                    } else {
                        flights.insert(key, flight);
                    }
                }
            }
        }
        drop(released);
    }
}

/// The new keys of a batch and their tickets, in the order of its load: shared by the load,
/// the release of its flights, and its load chain, with no copy of a key for each.
pub(crate) struct BatchKeys<K> {
    pub(crate) keys: Arc<[K]>,
    pub(crate) tickets: Arc<[Ticket]>,
}

impl<K> BatchKeys<K> {
    /// Each key and its ticket, in order.
    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = (&K, &Ticket)> {
        self.keys.iter().zip(self.tickets.iter())
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

/// The address of what `arc` points to, to tell one allocation from another.
fn address<U>(arc: &Arc<U>) -> usize {
    Arc::as_ptr(arc).cast::<u8>() as usize
}

/// One caller's wait for a load, which it drives whenever it is polled.
pub(crate) struct RawWaiter<O: Clone + Send + Sync + 'static> {
    load: Arc<SharedLoad<O>>,
    /// This waiter's slot for its waker in the load's notifier.
    slot: Option<usize>,
    /// Whether it got the outcome.
    done: bool,
}

impl<O: Clone + Send + Sync + 'static> RawWaiter<O> {
    /// A new waiter of a running load, counted among its waiters.
    fn join(load: &Arc<SharedLoad<O>>) -> Self {
        load.waiters.count.fetch_add(1, AcqRel);
        Self::new(load.clone())
    }

    /// The first waiter of a new load (counted when the load was made).
    fn new(load: Arc<SharedLoad<O>>) -> Self {
        Self {
            load,
            slot: None,
            done: false,
        }
    }
}

impl<O: Clone + Send + Sync + 'static> Future for RawWaiter<O> {
    type Output = Outcome<O>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<O>> {
        let this = self.get_mut();
        let outcome = this.load.poll(&mut this.slot, cx);
        this.done = outcome.is_ready();
        outcome
    }
}

impl<O: Clone + Send + Sync + 'static> Drop for RawWaiter<O> {
    fn drop(&mut self) {
        // The last waiter gone before the load ended: finish it in a task of its own. A
        // waiter that joins meanwhile drives it too.
        // The task is no waiter: dropped unfinished (its runtime shut down), it hands nothing
        // on, and the load waits in its slot for the next caller of its key.
        let waiters = &self.load.waiters;
        if waiters.count.fetch_sub(1, AcqRel) == 1 && !self.done && !self.load.is_done() {
            let load = self.load.clone();
            waiters.runtime.spawn(async move {
                let mut slot = None;
                std::future::poll_fn(|cx| load.poll(&mut slot, cx)).await
            });
        }
    }
}

/// One caller's wait for the load of one key: a load of its own, or its place in a batch.
pub(crate) enum Waiter<T: Clone + Send + Sync + 'static> {
    One(RawWaiter<T>),
    Batch(BatchWaiter<T>, usize),
}

impl<T: Clone + Send + Sync + 'static> Future for Waiter<T> {
    type Output = Outcome<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<T>> {
        match self.get_mut() {
            Self::One(waiter) => Pin::new(waiter).poll(cx),
            Self::Batch(waiter, place) => {
                let place = *place;
                Pin::new(waiter).poll(cx).map(|outcome| outcome.nth(place))
            }
        }
    }
}

/// The flights of [`Singleflight::run_batch`]: the running ones it joined, each with its
/// key's place (those of one batch load under one waiter, each key with its place and its
/// place in that load), and the one load of the others, with their places.
pub(crate) struct Batch<T: Clone + Send + Sync + 'static> {
    pub(crate) joined: Vec<(usize, Waiter<T>)>,
    pub(crate) joined_batches: Vec<JoinedBatch<T>>,
    pub(crate) started: Option<(Vec<usize>, BatchWaiter<T>)>,
}

/// The wait for a whole batch: every value of its keys, in their order.
pub(crate) type BatchWaiter<T> = RawWaiter<Arc<Vec<T>>>;

/// A running batch load that [`Singleflight::run_batch`] joined: each of its keys asked for,
/// as (place among the keys asked for, place in that load), and one waiter of the load.
pub(crate) type JoinedBatch<T> = (Vec<(usize, usize)>, BatchWaiter<T>);

impl<K, T> Singleflight<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// Joins the load of `key` in flight, or starts `load(ticket)` if there is none. The
    /// returned waiter drives the load when polled; dropping it cancels nothing (see the
    /// module docs).
    pub(crate) fn run<F>(
        &self,
        runtime: &tokio::runtime::Handle,
        key: K,
        load: impl FnOnce(TicketRef) -> F,
    ) -> Waiter<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let mut flights = lock(&self.flights);
        if let Some(flight) = flights.get(&key) {
            return flight.load.join();
        }
        let ticket = TicketRef::one();
        let fut = load(ticket.clone());
        self.start(&mut flights, runtime, key, ticket, fut)
    }

    /// [`run`](Self::run) for many keys under one lock: joins the flights of `keys` that are
    /// running, and starts one load for all the others, which `load` makes. `load` is called
    /// once, under the lock, with the new keys and their tickets ([`BatchKeys`]) in the order
    /// of `keys`; its
    /// future returns one value per new key, in the same order. Each key has a flight of its
    /// own, which a later caller of that key joins, and which a removal of the key revokes
    /// alone; the load ends them together. `keys` must not repeat a key.
    pub(crate) fn run_batch<F>(
        &self,
        runtime: &tokio::runtime::Handle,
        keys: impl IntoIterator<Item = K>,
        load: impl FnOnce(BatchKeys<K>) -> F,
    ) -> Batch<T>
    where
        F: Future<Output = Vec<T>> + Send + 'static,
    {
        let keys = keys.into_iter();
        let mut flights = lock(&self.flights);
        let mut joined = Vec::new();
        let mut places = Vec::with_capacity(keys.size_hint().0);
        let mut new = Vec::with_capacity(keys.size_hint().0);
        // Keys of one batch load that is running share one waiter of it: one waker, one
        // future to drive, however many of its keys this batch asks for.
        let mut joined_batches: Vec<JoinedBatch<T>> = Vec::new();
        for (place, key) in keys.enumerate() {
            match flights.get(&key) {
                Some(Flight {
                    load: FlightLoad::Batch(load, nth),
                    ..
                }) => match joined_batches
                    .iter_mut()
                    .find(|(_, waiter)| Arc::ptr_eq(&waiter.load, load))
                {
                    Some((places, _)) => places.push((place, *nth)),
                    None => joined_batches.push((vec![(place, *nth)], RawWaiter::join(load))),
                },
                Some(flight) => joined.push((place, flight.load.join())),
                None => {
                    places.push(place);
                    new.push(key);
                }
            }
        }
        if new.is_empty() {
            return Batch {
                joined,
                joined_batches,
                started: None,
            };
        }
        // The new keys, and their tickets, each in one allocation.
        let tickets: Arc<[Ticket]> = new.iter().map(|_| Ticket::new()).collect();
        let keys: Arc<[K]> = new.into();
        let fut = load(BatchKeys {
            keys: keys.clone(),
            tickets: tickets.clone(),
        });
        let load = Arc::new_cyclic(|load: &std::sync::Weak<SharedLoad<Arc<Vec<T>>>>| {
            let release = BatchRelease {
                flights: self.flights.clone(),
                keys: keys.clone(),
                load: load.as_ptr().cast::<u8>() as usize,
            };
            let task: LoadTask<Arc<Vec<T>>> = Box::pin(async move {
                let result = AssertUnwindSafe(fut).catch_unwind().await;
                drop(release);
                match result {
                    Ok(values) => Outcome::Done(Arc::new(values)),
                    Err(_) => Outcome::Panicked,
                }
            });
            SharedLoad::new(task, runtime)
        });
        flights.reserve(keys.len());
        for (place, key) in keys.iter().enumerate() {
            flights.insert(
                key.clone(),
                Flight {
                    load: FlightLoad::Batch(load.clone(), place),
                    ticket: TicketRef::Batch(tickets.clone(), place),
                },
            );
        }
        Batch {
            joined,
            joined_batches,
            started: Some((places, RawWaiter::new(load))),
        }
    }

    /// Starts the flight of `key` with the body `fut`; the lock is held.
    fn start<F>(
        &self,
        flights: &mut FxHashMap<K, Flight<T>>,
        runtime: &tokio::runtime::Handle,
        key: K,
        ticket: TicketRef,
        fut: F,
    ) -> Waiter<T>
    where
        F: Future<Output = T> + Send + 'static,
    {
        let release = SlotRelease {
            flights: self.flights.clone(),
            key: Some(key.clone()),
            ticket: ticket.clone(),
        };
        let task: LoadTask<T> = Box::pin(async move {
            let result = AssertUnwindSafe(fut).catch_unwind().await;
            drop(release);
            match result {
                Ok(value) => Outcome::Done(value),
                Err(_) => Outcome::Panicked,
            }
        });
        let load = Arc::new(SharedLoad::new(task, runtime));
        flights.insert(
            key,
            Flight {
                load: FlightLoad::One(load.clone()),
                ticket,
            },
        );
        Waiter::One(RawWaiter::new(load))
    }

    /// Revokes the loads of `keys` in flight: they leave the map, so the next call for one of
    /// them starts a new load, and their tickets say their results are not to be kept.
    pub(crate) fn revoke(&self, keys: impl IntoIterator<Item = K>) {
        let mut revoked = Vec::new();
        {
            let mut flights = lock(&self.flights);
            for key in keys {
                if let Some(flight) = flights.remove(&key) {
                    flight.ticket.revoke();
                    revoked.push(flight);
                }
            }
        }
        // Dropped outside the lock: one may hold the last handle on its load.
        drop(revoked);
    }

    /// Revokes every load in flight.
    pub(crate) fn revoke_all(&self) {
        let revoked: Vec<Flight<T>> = lock(&self.flights).drain().map(|(_, f)| f).collect();
        for flight in &revoked {
            flight.ticket.revoke();
        }
        drop(revoked);
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
    use tokio::sync::Notify;

    type Flights = Singleflight<&'static str, u32>;

    #[tokio::test]
    async fn the_tickets_of_a_batch_share_an_allocation_and_are_revoked_one_by_one() {
        let flights = Flights::default();
        let rt = tokio::runtime::Handle::current();
        let mut tickets = None;
        let batch = flights.run_batch(&rt, ["a", "b", "c"], |new| {
            tickets = Some(new.tickets.clone());
            async { vec![1, 2, 3] }
        });
        let tickets = tickets.expect("the batch's tickets");
        let of = |key| lock(&flights.flights)[&key].ticket.clone();
        let (a, b, c) = (of("a"), of("b"), of("c"));
        assert!(tickets.iter().all(Ticket::is_current));
        flights.revoke(["b"]);
        let current: Vec<bool> = tickets.iter().map(Ticket::is_current).collect();
        assert_eq!(current, [true, false, true]);
        assert!(!b.is_current(), "the flight's ticket is the load's");
        assert!(a.same(&a.clone()));
        assert!(!a.same(&c));
        assert!(!TicketRef::one().same(&TicketRef::one()));
        let (TicketRef::Batch(first, _), TicketRef::Batch(last, _)) = (&a, &c) else {
            panic!("batch tickets");
        };
        assert!(Arc::ptr_eq(first, last), "one allocation");
        assert!(Arc::ptr_eq(first, &tickets), "the load's own");
        let (_, waiter) = batch.started.expect("a load");
        assert!(matches!(waiter.await, Outcome::Done(values) if *values == [1, 2, 3]));
        assert_eq!(flights.in_flight(), 0);
    }

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
    async fn run_batch_joins_the_running_flights_and_loads_the_others_once() {
        let flights = Flights::default();
        let rt = tokio::runtime::Handle::current();
        let gate = Arc::new(Notify::new());
        let g = gate.clone();
        let running = flights.run(&rt, "b", move |_| async move {
            g.notified().await;
            20
        });
        let mut asked = Vec::new();
        let batch = flights.run_batch(&rt, ["a", "b", "c"], |new| {
            asked = new.iter().map(|(key, _)| *key).collect();
            let tickets = new.tickets.clone();
            async move {
                assert!(tickets.iter().all(|ticket| ticket.is_current()));
                vec![10, 30]
            }
        });
        assert_eq!(asked, ["a", "c"], "the running flight of b is joined");
        assert_eq!(flights.in_flight(), 3);
        // A caller of one key of the batch joins its flight.
        let c = flights.run(&rt, "c", |_| async { 0 });
        gate.notify_one();
        let (places, waiter) = batch.started.expect("a load for a and c");
        assert_eq!(places, [0, 2]);
        assert!(matches!(waiter.await, Outcome::Done(values) if *values == [10, 30]));
        assert!(matches!(c.await, Outcome::Done(30)));
        let [(place, joined)] = <[_; 1]>::try_from(batch.joined).ok().expect("b joined");
        assert_eq!(place, 1);
        assert!(matches!(joined.await, Outcome::Done(20)));
        assert!(matches!(running.await, Outcome::Done(20)));
        assert_eq!(flights.in_flight(), 0);
    }

    #[test]
    fn a_batch_outcome_gives_each_key_its_value_moved_when_not_shared() {
        let values = Arc::new(vec![Arc::new(1), Arc::new(2)]);
        let seen: Vec<_> = Outcome::Done(values).into_each().take(3).collect();
        assert!(
            matches!(&seen[..], [Outcome::Done(a), Outcome::Done(b), Outcome::Panicked]
                if **a == 1 && **b == 2 && Arc::strong_count(a) == 1),
            "moved, and a key past the values has none"
        );
        let shared = Arc::new(vec![Arc::new(1)]);
        let seen: Vec<_> = Outcome::Done(shared.clone()).into_each().take(1).collect();
        assert!(
            matches!(&seen[..], [Outcome::Done(a)] if Arc::strong_count(a) == 2),
            "cloned while another waiter holds the values"
        );
        drop(shared);
        let panicked: Outcome<Arc<Vec<Arc<i32>>>> = Outcome::Panicked;
        assert!(
            panicked
                .into_each()
                .take(2)
                .all(|o| matches!(o, Outcome::Panicked))
        );
    }

    #[tokio::test]
    async fn the_keys_a_batch_joins_of_another_batch_share_one_waiter_of_it() {
        let flights = Flights::default();
        let rt = tokio::runtime::Handle::current();
        let gate = Arc::new(Notify::new());
        let g = gate.clone();
        let first = flights.run_batch(&rt, ["a", "b", "c"], move |_| async move {
            g.notified().await;
            vec![1, 2, 3]
        });
        let one = flights.run(&rt, "x", |_| async { 9 });
        let second = flights.run_batch(&rt, ["c", "y", "a", "x"], |new| {
            assert_eq!(new.len(), 1, "only y is new");
            async { vec![25] }
        });
        assert!(second.joined.len() == 1, "x's flight, alone");
        let [(places, waiter)] = <[_; 1]>::try_from(second.joined_batches)
            .ok()
            .expect("one waiter for the first batch");
        assert_eq!(
            places,
            [(0, 2), (2, 0)],
            "c and a, each with its place in it"
        );
        gate.notify_one();
        let outcome = waiter.await;
        let values: Vec<_> = places
            .iter()
            .map(|&(_, nth)| match outcome.nth(nth) {
                Outcome::Done(value) => value,
                Outcome::Panicked => panic!("a value"),
            })
            .collect();
        assert_eq!(values, [3, 1]);
        let (_, started) = second.started.expect("a load for y");
        assert!(matches!(started.await, Outcome::Done(values) if *values == [25]));
        for (_, joined) in second.joined {
            assert!(matches!(joined.await, Outcome::Done(9)));
        }
        assert!(matches!(one.await, Outcome::Done(9)));
        let (_, waiter) = first.started.expect("the first batch");
        assert!(matches!(waiter.await, Outcome::Done(values) if *values == [1, 2, 3]));
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_batch_whose_caller_leaves_finishes_for_a_key_joined_and_revokes_per_key() {
        let flights = Flights::default();
        let rt = tokio::runtime::Handle::current();
        let gate = Arc::new(Notify::new());
        let g = gate.clone();
        let batch = flights.run_batch(&rt, ["a", "b"], move |_| async move {
            g.notified().await;
            vec![1, 2]
        });
        let b = flights.run(&rt, "b", |_| async { 0 });
        flights.revoke(["a"]);
        assert_eq!(flights.in_flight(), 1, "a revoked alone");
        let again = flights.run(&rt, "a", |_| async { 5 });
        drop(batch);
        gate.notify_one();
        assert!(matches!(b.await, Outcome::Done(2)));
        assert_eq!(
            flights.in_flight(),
            1,
            "the end of the batch leaves the newer load of a its slot"
        );
        assert!(matches!(again.await, Outcome::Done(5)), "a new load of a");
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_panicking_batch_is_an_outcome_for_each_key() {
        let flights = Flights::default();
        let rt = tokio::runtime::Handle::current();
        let batch = flights.run_batch(&rt, ["a", "b"], |_| async {
            if flights_panic() {
                panic!("the batch failed");
            }
            vec![1, 2]
        });
        let b = flights.run(&rt, "b", |_| async { 0 });
        let (_, waiter) = batch.started.expect("a load");
        assert!(matches!(waiter.await, Outcome::Panicked));
        assert!(matches!(b.await, Outcome::Panicked));
        assert_eq!(flights.in_flight(), 0, "nothing poisoned");
    }

    fn flights_panic() -> bool {
        true
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
        let gate = Arc::new(Notify::new());
        let g = gate.clone();
        let mut first = Box::pin(flights.run(&rt, "k", move |_| async move {
            g.notified().await;
            5
        }));
        // Polled once (it starts the load), then kept but never polled again.
        let pending =
            std::future::poll_fn(|cx| std::task::Poll::Ready(first.as_mut().poll(cx).is_pending()))
                .await;
        assert!(pending);
        let second = tokio::spawn(flights.run(&rt, "k", |_| async { 6 }));
        gate.notify_one();
        assert!(matches!(second.await.unwrap(), Outcome::Done(5)));
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

    #[tokio::test]
    async fn the_last_waiter_dropped_hands_the_load_to_a_task() {
        let flights = Flights::default();
        let rt = tokio::runtime::Handle::current();
        let gate = Arc::new(Notify::new());
        let done = Arc::new(AtomicUsize::new(0));
        let (g, d) = (gate.clone(), done.clone());
        let mut only = Box::pin(flights.run(&rt, "k", move |_| async move {
            g.notified().await;
            d.fetch_add(1, Ordering::SeqCst);
            4
        }));
        // Started, then dropped by its only caller.
        let pending =
            std::future::poll_fn(|cx| std::task::Poll::Ready(only.as_mut().poll(cx).is_pending()))
                .await;
        assert!(pending);
        drop(only);
        gate.notify_one();
        while flights.in_flight() > 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(done.load(Ordering::SeqCst), 1, "the load ran to its end");
    }

    #[tokio::test]
    async fn a_waiter_that_saw_the_outcome_leaves_no_task_behind() {
        let flights = Flights::default();
        let rt = tokio::runtime::Handle::current();
        let first = flights.run(&rt, "k", |_| async { 8 });
        let second = flights.run(&rt, "k", |_| async { 9 });
        // `.await` drops each waiter once it has its outcome; the second is the last.
        assert!(matches!(first.await, Outcome::Done(8)));
        assert!(matches!(second.await, Outcome::Done(8)));
        assert_eq!(
            rt.metrics().num_alive_tasks(),
            0,
            "the load ended: nothing to finish in a task"
        );
    }

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A load that is pending on its first `.0` polls (waking nobody), then ready with `.1`.
    struct PendingFor(u32, u32);

    impl Future for PendingFor {
        type Output = u32;

        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<u32> {
            match self.0.checked_sub(1) {
                Some(left) => {
                    self.0 = left;
                    Poll::Pending
                }
                None => Poll::Ready(self.1),
            }
        }
    }

    #[tokio::test]
    async fn the_waiter_that_finishes_a_load_is_not_woken_by_it_and_the_others_are() {
        let flights = Flights::default();
        let rt = tokio::runtime::Handle::current();
        let mut first = Box::pin(flights.run(&rt, "k", |_| PendingFor(1, 3)));
        let mut second = Box::pin(flights.run(&rt, "k", |_| PendingFor(1, 3)));
        let (first_wakes, second_wakes) = (Arc::new(Wakes::default()), Arc::new(Wakes::default()));
        let first_waker = Waker::from(first_wakes.clone());
        let second_waker = Waker::from(second_wakes.clone());
        assert!(
            first
                .as_mut()
                .poll(&mut Context::from_waker(&first_waker))
                .is_pending()
        );
        // The second drives the load to its end: the first is woken for it, the second not.
        let ended = second
            .as_mut()
            .poll(&mut Context::from_waker(&second_waker));
        assert!(matches!(ended, Poll::Ready(Outcome::Done(3))));
        assert_eq!(
            second_wakes.0.load(Ordering::SeqCst),
            0,
            "no wake of its own"
        );
        assert_eq!(first_wakes.0.load(Ordering::SeqCst), 1);
        let seen = first.as_mut().poll(&mut Context::from_waker(&first_waker));
        assert!(matches!(seen, Poll::Ready(Outcome::Done(3))));
    }

    #[tokio::test]
    async fn every_waiter_but_the_one_that_finishes_is_woken_whatever_its_slot() {
        let rt = tokio::runtime::Handle::current();
        // The waiter in the first slot (kept inline) and those in the later ones each finish
        // the load once.
        for finisher in 0..3 {
            let flights = Flights::default();
            let mut waiters: Vec<_> = (0..3)
                .map(|_| Box::pin(flights.run(&rt, "k", |_| PendingFor(3, 7))))
                .collect();
            let wakes: Vec<Arc<Wakes>> = (0..3).map(|_| Arc::default()).collect();
            let wakers: Vec<Waker> = wakes.iter().map(|w| Waker::from(w.clone())).collect();
            // Polled in this order, waiter i takes slot i.
            for i in 0..3 {
                let polled = waiters[i]
                    .as_mut()
                    .poll(&mut Context::from_waker(&wakers[i]));
                assert!(polled.is_pending());
            }
            let ended = waiters[finisher]
                .as_mut()
                .poll(&mut Context::from_waker(&wakers[finisher]));
            assert!(matches!(ended, Poll::Ready(Outcome::Done(7))));
            for (i, woken) in wakes.iter().enumerate() {
                assert_eq!(
                    woken.0.load(Ordering::SeqCst),
                    usize::from(i != finisher),
                    "waiter {i}, when waiter {finisher} finished the load"
                );
            }
            for i in (0..3).filter(|&i| i != finisher) {
                let seen = waiters[i]
                    .as_mut()
                    .poll(&mut Context::from_waker(&wakers[i]));
                assert!(matches!(seen, Poll::Ready(Outcome::Done(7))));
            }
        }
    }

    #[tokio::test]
    async fn the_first_caller_runs_the_load_on_its_own_task() {
        let flights = Arc::new(Singleflight::<&'static str, Option<tokio::task::Id>>::default());
        let rt = tokio::runtime::Handle::current();
        let caller = tokio::spawn(async move {
            let caller = tokio::task::id();
            let outcome = flights
                .run(&rt, "k", |_| async { tokio::task::try_id() })
                .await;
            (caller, outcome)
        });
        let (caller, outcome) = caller.await.unwrap();
        assert!(
            matches!(outcome, Outcome::Done(Some(id)) if id == caller),
            "no hand-off to another task"
        );
    }

    #[test]
    fn a_load_left_by_a_runtime_that_shut_down_waits_for_the_next_caller() {
        let flights = Flights::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let only = flights.run(&rt.handle().clone(), "k", |_| async { 7 });
        drop(rt);
        // The last waiter hands the load to a task the dead runtime drops at once: nothing
        // more is handed on from there.
        drop(only);
        assert_eq!(flights.in_flight(), 1, "the load waits in its slot");
        let other = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let again = flights.run(other.handle(), "k", |_| async { 8 });
        assert!(matches!(other.block_on(again), Outcome::Done(7)));
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_revoked_load_is_not_joined_and_keeps_its_waiters() {
        let flights = Flights::default();
        let rt = tokio::runtime::Handle::current();
        let gate = Arc::new(Notify::new());
        let tickets = Arc::new(Mutex::new(Vec::new()));
        let start = |value: u32| {
            let (gate, tickets) = (gate.clone(), tickets.clone());
            move |ticket: TicketRef| async move {
                lock(&tickets).push(ticket);
                gate.notified().await;
                value
            }
        };
        // Each in a task of its own, so that each load starts at once.
        let old = tokio::spawn(flights.run(&rt, "k", start(1)));
        let other = tokio::spawn(flights.run(&rt, "other", start(9)));
        while lock(&tickets).len() < 2 {
            tokio::task::yield_now().await;
        }
        flights.revoke(["k"]);
        assert_eq!(flights.in_flight(), 1, "only k left the map");
        let new = tokio::spawn(flights.run(&rt, "k", start(2)));
        while lock(&tickets).len() < 3 {
            tokio::task::yield_now().await;
        }
        {
            let tickets = lock(&tickets);
            assert_eq!(tickets.len(), 3);
            assert!(!tickets[0].is_current(), "the old load of k is revoked");
            assert!(tickets[1].is_current() && tickets[2].is_current());
        }
        gate.notify_waiters();
        assert!(matches!(old.await.unwrap(), Outcome::Done(1)));
        assert!(matches!(new.await.unwrap(), Outcome::Done(2)));
        assert!(matches!(other.await.unwrap(), Outcome::Done(9)));
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
