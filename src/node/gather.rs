//! Gathered loads (`SourceOptions::gather_loads`): single gets that miss on this node at
//! about the same time are loaded in one call of the data source. The first miss waits at
//! most `max_wait` for others, or until `max_keys` have come, then loads them all; the others
//! wait for its answer. Off by default, which adds no latency.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::Node;
use super::cache::Entry;
use super::get::{LOAD_CHAIN, LoadChain};
use super::queue::{Gathered, Leading};
use super::singleflight::{Ticket, TicketRef};
use super::source::CachedSource;
use crate::error::Error;
use crate::sync::lock;

impl Node {
    /// Loads `key` from the data source here, gathered with the other misses of the source
    /// that come within `max_wait`, up to `max_keys` in one call.
    pub(super) async fn load_gathered(
        &self,
        source: &CachedSource,
        key: &Arc<str>,
        ticket: &TicketRef,
        max_keys: usize,
        max_wait: Duration,
    ) -> Result<Entry, Error> {
        let gathering = &source.gathering;
        let (done, result) = oneshot::channel();
        enum Role {
            Lead,
            Follow,
            Alone,
        }
        let role = {
            let mut state = lock(&gathering.state);
            if !state.leading {
                state.leading = true;
                Role::Lead
            } else if state.waiting.len() + 1 < max_keys {
                state.waiting.push(Gathered {
                    key: key.clone(),
                    ticket: ticket.clone(),
                    done,
                });
                if state.waiting.len() + 1 >= max_keys {
                    gathering.full.notify_one();
                }
                Role::Follow
            } else {
                // The batch is full and not yet taken.
                Role::Alone
            }
        };
        match role {
            Role::Lead => {}
            Role::Alone => return self.load_alone(source, key, ticket).await,
            Role::Follow => {
                return match result.await {
                    Ok(result) => result,
                    // The gathering miss was cancelled: alone.
                    Err(_) => self.load_alone(source, key, ticket).await,
                };
            }
        }
        let mut leading = Leading {
            gathering,
            taken: false,
        };
        let _ = tokio::time::timeout(max_wait, gathering.full.notified()).await;
        let others = leading.take();
        // This key first, then the others'.
        let keyed: Vec<(&str, &Ticket)> = std::iter::once((&**key, &**ticket))
            .chain(others.iter().map(|g| (&*g.key, &*g.ticket)))
            .collect();
        // The load runs for every key of the batch: a source that reads one of them through
        // the cache waits for itself, which the chain tells (`ErrorKind::RecursiveLoad`).
        let chain = LoadChain::push_many(
            LoadChain::current(),
            source,
            std::iter::once(key.clone())
                .chain(others.iter().map(|g| g.key.clone()))
                .collect(),
        );
        let mut results = LOAD_CHAIN
            .scope(chain, self.load_from_source(source, &keyed))
            .await
            .into_iter();
        let missing = || Err(Error::new(crate::error::ErrorKind::Load, &source.name));
        // The results are in the batch's order: this key's first, then the others'.
        let result = results.next().unwrap_or_else(missing);
        for (other, other_result) in others.into_iter().zip(results) {
            // A miss that was dropped meanwhile wants nothing.
            let _ = other.done.send(other_result);
        }
        result
    }
}
