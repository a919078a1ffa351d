//! The body of a load: once per key at a time on this node, node by its waiters. It asks
//! the owner when another node owns the key, else (or when the owner fails) the data source.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt as _;
use rustc_hash::FxHashMap;
use tracing::Instrument as _;

use super::Node;
use super::cache::{Entry, Freshness, Tier};
use super::fetch::ProbeSlot;
use super::queue::batch_results;
use super::singleflight::{BatchKeys, Ticket, TicketRef};
use super::source::{CachedSource, FlightKey};
use crate::error::{BoxError, CodecError, Error, ErrorKind, KeyLoadPanicked};
use crate::peer::health::Verdict;
use crate::source::Loaded;
use crate::stats::Event;

impl Node {
    /// The body of a flight: runs once per key at a time, detached from its callers.
    pub(super) async fn load(
        &self,
        source: &CachedSource,
        key: Arc<str>,
        owner: Option<Arc<str>>,
        ticket: &TicketRef,
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
                self.client.skipped(&peer, 1);
            } else {
                // Frees the probe slot however the fetch ends, even if it is dropped.
                let _probe = (verdict == Verdict::Probe).then(|| ProbeSlot(&self.health, &peer));
                if let Some(result) = self.fetch_one(&peer, source, &key, ticket).await {
                    return result;
                }
            }
        }

        match source.options.gather {
            Some((max_keys, max_wait)) => {
                self.load_gathered(source, &key, ticket, max_keys, max_wait)
                    .await
            }
            None => self.load_alone(source, &key, ticket).await,
        }
    }

    /// Loads `key` alone from the data source here.
    pub(super) async fn load_alone(
        &self,
        source: &CachedSource,
        key: &Arc<str>,
        ticket: &Ticket,
    ) -> Result<Entry, Error> {
        let load = source.source.clone().load_owned(key.clone());
        let started = std::time::Instant::now();
        let span = self.with_key(
            tracing::debug_span!("groupcache.load", source = %source.name, key = tracing::field::Empty),
            key,
        );
        let result = AssertUnwindSafe(load).catch_unwind().instrument(span).await;
        source.durations.record_load(started.elapsed());
        let now = self.clock.now();
        match result {
            Ok(result) => self.settle_load(source, key, result, ticket, now),
            Err(_panic) => Err(self.load_panicked(source)),
        }
    }

    /// A batch of keys this node owns, loaded in one call of the data source
    /// ([`Source::load_many`](crate::Source::load_many)): the body of every flight of the
    /// batch. Each key is counted, kept and failed as a load of its own would be. The results
    /// are in the order of `keys`.
    pub(super) async fn load_batch(
        &self,
        source: &CachedSource,
        keys: &BatchKeys<FlightKey>,
    ) -> Vec<Result<Entry, Error>> {
        let (mut results, places, to_load) =
            self.start_batch(source, keys.iter().map(|(key, ticket)| (key.key(), ticket)));
        let loaded = self.load_from_source(source, &to_load).await;
        for (place, result) in places.into_iter().zip(loaded) {
            results[place] = Some(result);
        }
        batch_results(&source.name, results)
    }

    /// The start of every flight of a batch, counted as [`load`](Self::load) counts its
    /// own: the results of the keys a load that just ended put in the cache meanwhile, in the
    /// order of `keys` (`None` for the others), and the others, which are to be loaded, with
    /// their places in `keys`.
    #[allow(clippy::type_complexity)]
    pub(super) fn start_batch<'a>(
        &self,
        source: &CachedSource,
        keys: impl ExactSizeIterator<Item = (&'a str, &'a Ticket)>,
    ) -> (
        Vec<Option<Result<Entry, Error>>>,
        Vec<usize>,
        Vec<(&'a str, &'a Ticket)>,
    ) {
        let counters = source.counters.stripe();
        let mut results = Vec::with_capacity(keys.len());
        let mut places = Vec::with_capacity(keys.len());
        let mut to_load = Vec::with_capacity(keys.len());
        for (place, (key, ticket)) in keys.enumerate() {
            counters.add(Event::Flight);
            if let Some((entry, Freshness::Fresh, tier)) = source.caches.get(key, &*self.clock) {
                counters.add(tier.flight_hit_event());
                results.push(Some(Ok(entry)));
                continue;
            }
            counters.add(Event::LoadDeduped);
            results.push(None);
            places.push(place);
            to_load.push((key, ticket));
        }
        (results, places, to_load)
    }

    /// Loads `to_load` from the data source in one call: each key's result, in the order of
    /// `to_load`.
    pub(super) async fn load_from_source(
        &self,
        source: &CachedSource,
        to_load: &[(&str, &Ticket)],
    ) -> Vec<Result<Entry, Error>> {
        let counters = &source.counters;
        if to_load.is_empty() {
            return Vec::new();
        }
        let names = to_load.iter().map(|(key, _)| key.to_string()).collect();
        let load = source.source.clone().load_many_owned(names);
        let started = std::time::Instant::now();
        let span = tracing::debug_span!("groupcache.load_many", source = %source.name, keys = to_load.len());
        let result = AssertUnwindSafe(load).catch_unwind().instrument(span).await;
        source.durations.record_load(started.elapsed());
        let now = self.clock.now();
        match result {
            Ok(Ok(mut many)) => {
                // Where each key is first asked for: made only when a key finds no answer,
                // which it may because the source left it out (it is *not found*) or because
                // it is asked for twice (two flights of it, the first revoked) and shares the
                // answer its first place took.
                let mut first: Option<FxHashMap<&str, usize>> = None;
                let mut results: Vec<Result<Entry, Error>> = Vec::with_capacity(to_load.len());
                for (place, (key, ticket)) in to_load.iter().enumerate() {
                    let loaded = match many.remove(key) {
                        Some(loaded) => loaded,
                        None => {
                            let first = first.get_or_insert_with(|| {
                                let mut first = FxHashMap::default();
                                for (place, (key, _)) in to_load.iter().enumerate() {
                                    first.entry(*key).or_insert(place);
                                }
                                first
                            });
                            match first.get(*key) {
                                Some(&earlier) if earlier < place => {
                                    let shared = results[earlier].clone();
                                    results.push(shared);
                                    continue;
                                }
                                _ => Ok(Loaded::not_found()),
                            }
                        }
                    };
                    results.push(self.settle_load(source, key, loaded, ticket, now));
                }
                results
            }
            Ok(Err(cause)) => {
                // One failure for every key of the call: one error, shared.
                let error = self.load_failed(source, cause, to_load.len());
                vec![Err(error); to_load.len()]
            }
            Err(_panic) => {
                for _ in 1..to_load.len() {
                    counters.add(Event::LocalLoadErr);
                }
                let error = self.load_panicked(source);
                vec![Err(error); to_load.len()]
            }
        }
    }

    /// What the data source said of `key`: counted, kept in the main cache (unless its load
    /// was revoked), and returned as the get's result.
    fn settle_load(
        &self,
        source: &CachedSource,
        key: &str,
        result: Result<Loaded, BoxError>,
        ticket: &Ticket,
        now: Instant,
    ) -> Result<Entry, Error> {
        let counters = &source.counters;
        match result {
            Ok(loaded) => {
                let (value, ttl) = loaded.into_parts();
                counters.add(if value.is_some() {
                    Event::LocalLoad
                } else {
                    Event::LocalNotFound
                });
                let entry = match value {
                    Some(value) => source.options.entry(value, ttl, key, now),
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
                    source.store(Tier::Main, key, entry.clone(), ticket);
                }
                Ok(entry)
            }
            Err(cause) => Err(self.load_failed(source, cause, 1)),
        }
    }

    /// The error of a failed load of `keys` keys, counted.
    fn load_failed(&self, source: &CachedSource, cause: BoxError, keys: usize) -> Error {
        // A key of the default `load_many` whose own load panicked.
        if keys == 1 && cause.is::<KeyLoadPanicked>() {
            return self.load_panicked(source);
        }
        for _ in 0..keys {
            source.counters.add(Event::LocalLoadErr);
        }
        tracing::debug!(source = %source.name, error = %cause, keys, "data source failed");
        // A typed source whose codec failed (the key did not decode, or the value did not
        // encode) says so with `CodecError`.
        let (kind, cause) = match cause.downcast::<CodecError>() {
            Ok(codec) => (ErrorKind::Codec, codec.error),
            Err(cause) => (ErrorKind::Load, cause),
        };
        Error::with_cause(kind, &source.name, Some(cause))
    }

    /// The error of a load that panicked, counted once and logged (at most once in a while:
    /// a source that panics on every key would write a line per get).
    fn load_panicked(&self, source: &CachedSource) -> Error {
        source.counters.add(Event::LocalLoadErr);
        if let Some(left_out) = self.noise.panicked.allow() {
            tracing::error!(source = %source.name, left_out, "data source panicked");
        }
        Error::new(ErrorKind::LoadPanicked, &source.name)
    }
}
