//! Natural batching of single-key peer gets (docs/guide.md, "Many keys at once"): while
//! enough gets of one source are in flight to one peer, further ones queue, and whichever of
//! them finds a request slot free first sends every queued key together, in one batched
//! request. No timer: a get that finds a slot free goes at once, so an idle node adds no
//! latency. Only for peers known to speak this crate's extensions.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use tokio::sync::oneshot;

use super::Node;
use super::queue::{Fetch, PeerQueue, Queued, Slot};
use super::singleflight::Ticket;
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
        ticket: &Arc<Ticket>,
    ) -> Fetch {
        let limit = self.config.natural_batching;
        if limit == 0 || self.client.known_speaks(peer) != Speaks::Extensions {
            return self.fetch_from(peer, source, key, ticket).await;
        }
        let queue = source.peer_queues.of(peer);
        let (done, mut result) = oneshot::channel();
        let direct = {
            let mut state = lock(&queue.state);
            if state.in_flight < limit && state.waiting.is_empty() {
                state.in_flight += 1;
                true
            } else {
                state.waiting.push(Queued {
                    key: key.clone(),
                    ticket: ticket.clone(),
                    done,
                });
                false
            }
        };
        if direct {
            let _slot = Slot(&queue);
            return self.fetch_from(peer, source, key, ticket).await;
        }
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
                if state.in_flight < limit && !state.waiting.is_empty() {
                    state.in_flight += 1;
                    let n = state.waiting.len().min(self.config.max_batch_keys);
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
        let chunk = batch
            .iter()
            .map(|queued| (queued.key.clone(), queued.ticket.clone()))
            .collect();
        let mut results = FxHashMap::default();
        let mut local = Vec::new();
        self.fetch_chunk(peer, source, chunk, &mut results, &mut local)
            .await;
        for queued in batch {
            // A get that was dropped meanwhile wants nothing.
            let _ = queued.done.send(results.remove(&queued.key));
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
