//! The queues of natural batching (see `batching.rs`: per source and peer, the single-key
//! gets waiting for a request slot) and of gathered loads (see `gather.rs`: per source, the
//! misses waiting to be loaded together).

use std::sync::Arc;

use rustc_hash::FxHashMap;
use tokio::sync::{Notify, oneshot};

use super::cache::Entry;
use super::singleflight::TicketRef;
use crate::error::{Error, ErrorKind};
use crate::sync::lock;

/// What a fetch gives: the key's result, or `None` when it is to be loaded here.
pub(super) type Fetch = Option<Result<Entry, Error>>;

/// A batch's results in order (of source `name`), a key with none (which no path leaves)
/// failing as a load.
pub(super) fn batch_results(
    name: &str,
    results: Vec<Option<Result<Entry, Error>>>,
) -> Vec<Result<Entry, Error>> {
    results
        .into_iter()
        .map(|result| result.unwrap_or_else(|| Err(Error::new(ErrorKind::Load, name))))
        .collect()
}

/// The queues of one source, one per peer.
#[derive(Default)]
pub(crate) struct PeerQueues(std::sync::Mutex<FxHashMap<Arc<str>, Arc<PeerQueue>>>);

impl PeerQueues {
    pub(super) fn of(&self, peer: &str) -> Arc<PeerQueue> {
        let mut queues = lock(&self.0);
        if let Some(queue) = queues.get(peer) {
            return queue.clone();
        }
        let queue = Arc::<PeerQueue>::default();
        queues.insert(peer.into(), queue.clone());
        queue
    }

    /// Forgets the queues of peers that left the ring.
    pub(crate) fn retain(&self, peers: &[String]) {
        lock(&self.0).retain(|peer, _| peers.iter().any(|p| **p == **peer));
    }
}

#[derive(Default)]
pub(super) struct PeerQueue {
    pub(super) state: std::sync::Mutex<QueueState>,
    /// Told when a request slot is freed.
    pub(super) freed: Notify,
    /// Told when the queue is full, while a get gathers.
    pub(super) full: Notify,
}

#[derive(Default)]
pub(super) struct QueueState {
    pub(super) in_flight: usize,
    pub(super) waiting: Vec<Queued>,
    /// Whether a get is waiting (`natural_batching_wait`) for others to join its request;
    /// meanwhile no other get leads one.
    pub(super) gathering: bool,
}

pub(super) struct Queued {
    pub(super) key: Arc<str>,
    pub(super) ticket: TicketRef,
    pub(super) done: oneshot::Sender<Fetch>,
}

/// A get gathering others for its request (its flag set): however its wait ends, even
/// cancelled, the queue is left to the others.
pub(super) struct Collecting<'a>(pub(super) &'a PeerQueue, pub(super) bool);

impl Drop for Collecting<'_> {
    fn drop(&mut self) {
        if self.1 {
            lock(&self.0.state).gathering = false;
            self.0.freed.notify_one();
        }
    }
}

/// A request slot, freed (and a waiting get told) however the request ends.
pub(super) struct Slot<'a>(pub(super) &'a PeerQueue);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        lock(&self.0.state).in_flight -= 1;
        self.0.freed.notify_one();
    }
}

/// The misses of one source waiting to be loaded together.
#[derive(Default)]
pub(crate) struct Gathering {
    pub(super) state: std::sync::Mutex<GatherState>,
    /// Told when the batch is full.
    pub(super) full: Notify,
}

#[derive(Default)]
pub(super) struct GatherState {
    /// Whether a miss is gathering the others.
    pub(super) leading: bool,
    pub(super) waiting: Vec<Gathered>,
}

pub(super) struct Gathered {
    pub(super) key: Arc<str>,
    pub(super) ticket: TicketRef,
    pub(super) done: oneshot::Sender<Result<Entry, Error>>,
}

/// The gathering miss's hold on the batch: when it is dropped before it took the batch (its
/// load was cancelled), the others are let go, each to load its key alone.
pub(super) struct Leading<'a> {
    pub(super) gathering: &'a Gathering,
    pub(super) taken: bool,
}

impl Leading<'_> {
    /// Takes the batch gathered so far; the next miss starts another.
    pub(super) fn take(&mut self) -> Vec<Gathered> {
        self.taken = true;
        let mut state = lock(&self.gathering.state);
        state.leading = false;
        std::mem::take(&mut state.waiting)
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if !self.taken {
            // Dropping the senders tells the waiting misses.
            drop(self.take());
        }
    }
}
