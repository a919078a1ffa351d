//! Natural batching of single-key peer gets (docs/guide.md, "Many keys at once"): while
//! enough gets of one source are in flight to one peer, further ones queue, and whichever of
//! them finds a request slot free first sends every queued key together, in one batched
//! request. No timer: a get that finds a slot free goes at once, so an idle node adds no
//! latency. Only for peers known to speak this crate's extensions. With
//! `natural_batching_wait`, a get that finds a slot free waits that long (or until the queue
//! holds `max_batch_keys`) for others to join its request.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::Node;
use super::queue::{Collecting, Fetch, PeerQueue, Queued, Slot};
use super::singleflight::{Ticket, TicketRef};
use super::source::CachedSource;
use crate::peer::client::Speaks;
use crate::sync::lock;

impl Node {
    /// Asks `peer` for `key`: at once while fewer than `natural_batching` gets of the source
    /// are in flight to it, else in the next batched request (see the module docs).
    pub(super) async fn fetch_one(
        &self,
        peer: &str,
        source: &CachedSource,
        key: &Arc<str>,
        ticket: &TicketRef,
    ) -> Fetch {
        let limit = self.config.natural_batching;
        if limit == 0 || self.client.known_speaks(peer) != Speaks::Extensions {
            return self.fetch_from(peer, source, key, ticket).await;
        }
        let queue = source.peer_queues.of(peer);
        let wait = self.config.natural_batching_wait;
        let max_keys = self.config.max_batch_keys;
        /// What this get does: ask alone at once, or queue (gathering the queue first, with
        /// a maximum wait), to be told its result. A get that asks alone makes no channel.
        enum Role {
            Direct,
            Gather(oneshot::Receiver<Fetch>),
            Queue(oneshot::Receiver<Fetch>),
        }
        let role = {
            let mut state = lock(&queue.state);
            let free = state.in_flight < limit && state.waiting.is_empty() && !state.gathering;
            if free && wait.is_zero() {
                state.in_flight += 1;
                Role::Direct
            } else {
                let (done, result) = oneshot::channel();
                state.waiting.push(Queued {
                    key: key.clone(),
                    ticket: ticket.clone(),
                    done,
                });
                if free {
                    state.in_flight += 1;
                    state.gathering = true;
                    Role::Gather(result)
                } else {
                    if state.gathering && state.waiting.len() >= max_keys {
                        queue.full.notify_one();
                    }
                    Role::Queue(result)
                }
            }
        };
        let mut result = match role {
            Role::Direct => {
                let _slot = Slot(&queue);
                return self.fetch_from(peer, source, key, ticket).await;
            }
            Role::Gather(result) => {
                let _slot = Slot(&queue);
                let mut collecting = Collecting(&queue, true);
                let _ = tokio::time::timeout(wait, queue.full.notified()).await;
                let batch = {
                    let mut state = lock(&queue.state);
                    state.gathering = false;
                    let n = state.waiting.len().min(max_keys);
                    state.waiting.drain(..n).collect::<Vec<_>>()
                };
                collecting.1 = false;
                self.send_queued(peer, source, batch).await;
                result
            }
            Role::Queue(result) => result,
        };
        loop {
            let freed = queue.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match result.try_recv() {
                Ok(fetched) => {
                    Self::pass_on(&queue, limit);
                    return fetched;
                }
                // The get that took this key was dropped before it answered: ask alone.
                Err(oneshot::error::TryRecvError::Closed) => {
                    return self.fetch_from(peer, source, key, ticket).await;
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let batch = {
                let mut state = lock(&queue.state);
                if state.in_flight < limit && !state.waiting.is_empty() && !state.gathering {
                    state.in_flight += 1;
                    let n = state.waiting.len().min(max_keys);
                    Some(state.waiting.drain(..n).collect::<Vec<_>>())
                } else {
                    None
                }
            };
            match batch {
                Some(batch) => {
                    let _slot = Slot(&queue);
                    self.send_queued(peer, source, batch).await;
                }
                None => {
                    tokio::select! {
                        () = &mut freed => {}
                        fetched = &mut result => {
                            Self::pass_on(&queue, limit);
                            return match fetched {
                                Ok(fetched) => fetched,
                                Err(_) => self.fetch_from(peer, source, key, ticket).await,
                            };
                        }
                    }
                }
            }
        }
    }

    /// Sends the queued gets in one batched request, and tells each its result.
    async fn send_queued(&self, peer: &str, source: &CachedSource, batch: Vec<Queued>) {
        let chunk: Vec<(&str, &Ticket)> = batch
            .iter()
            .map(|queued| (&*queued.key, &*queued.ticket))
            .collect();
        let fetched = self.fetch_chunk(peer, source, &chunk).await;
        for (queued, fetch) in batch.into_iter().zip(fetched) {
            // A get that was dropped meanwhile wants nothing.
            let _ = queued.done.send(fetch);
        }
    }

    /// A get that leaves the queue with its result hands a slot it was told of to the next.
    fn pass_on(queue: &PeerQueue, limit: usize) {
        let state = lock(&queue.state);
        if state.in_flight < limit && !state.waiting.is_empty() {
            drop(state);
            queue.freed.notify_one();
        }
    }
}
