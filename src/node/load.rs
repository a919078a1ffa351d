//! The body of a load: once per key at a time on this node, node by its waiters. It asks
//! the owner when another node owns the key, else (or when the owner fails) the data source.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt as _;
use tracing::Instrument as _;

use super::Node;
use super::cache::{Entry, Freshness, Tier};
use super::fetch::ProbeSlot;
use super::singleflight::Ticket;
use super::source::CachedSource;
use crate::error::{Error, ErrorKind, KeyCodecError};
use crate::peer::health::Verdict;
use crate::stats::Event;

impl Node {
    /// The body of a flight: runs once per key at a time, detached from its callers.
    pub(super) async fn load(
        &self,
        source: &CachedSource,
        key: Arc<str>,
        owner: Option<Arc<str>>,
        ticket: &Ticket,
    ) -> Result<Entry, Error> {
        let counters = &source.counters;
        counters.add(Event::Flight);
        if let Some((entry, Freshness::Fresh, tier)) = source.caches.get(&key, &*self.clock) {
            counters.add(tier.flight_hit_event());
            return Ok(entry);
        }
        counters.add(Event::LoadDeduped);

        if let Some(peer) = owner {
            let verdict = self.health.verdict(&peer);
            if verdict == Verdict::Skip {
                counters.add(Event::PeerSkip);
            } else {
                // Frees the probe slot however the fetch ends, even if it is dropped.
                let _probe = (verdict == Verdict::Probe).then(|| ProbeSlot(&self.health, &peer));
                if let Some(result) = self.fetch_from(&peer, source, &key, ticket).await {
                    return result;
                }
            }
        }

        let load = source.source.clone().load_owned(key.clone());
        let started = std::time::Instant::now();
        let span = self.with_key(
            tracing::debug_span!("groupcache.load", source = %source.name, key = tracing::field::Empty),
            &key,
        );
        let result = AssertUnwindSafe(load).catch_unwind().instrument(span).await;
        metrics::histogram!("groupcache_load_duration_seconds", "source" => metrics::SharedString::from(source.name.clone()))
            .record(started.elapsed());
        let now = self.clock.now();
        match result {
            Ok(Ok(loaded)) => {
                let (value, ttl) = loaded.into_parts();
                counters.add(if value.is_some() {
                    Event::LocalLoad
                } else {
                    Event::LocalNotFound
                });
                let entry = match value {
                    Some(value) => source.options.entry(value, ttl, &key, now),
                    None => {
                        let Some(expires) =
                            source.options.negative_ttl.and_then(|t| now.checked_add(t))
                        else {
                            return Err(Error::new(ErrorKind::NotFound, &source.name));
                        };
                        Entry {
                            value: Bytes::new(),
                            expires: Some(expires),
                            keeps_stale: false,
                            negative: true,
                        }
                    }
                };
                if !entry.is_expired(now) {
                    source.store(Tier::Main, &key, entry.clone(), ticket);
                }
                Ok(entry)
            }
            Ok(Err(cause)) => {
                counters.add(Event::LocalLoadErr);
                tracing::debug!(source = %source.name, error = %cause, "data source failed");
                // A typed source that could not decode its key says so with `KeyCodecError`.
                let (kind, cause) = match cause.downcast::<KeyCodecError>() {
                    Ok(codec) => (ErrorKind::Codec, codec.0),
                    Err(cause) => (ErrorKind::Load, cause),
                };
                Err(Error::with_cause(kind, &source.name, Some(cause)))
            }
            Err(_panic) => {
                counters.add(Event::LocalLoadErr);
                // A source that panics on every key would write a line per get.
                if let Some(left_out) = self.noise.panicked.allow() {
                    tracing::error!(source = %source.name, left_out, "data source panicked");
                }
                Err(Error::new(ErrorKind::LoadPanicked, &source.name))
            }
        }
    }
}
