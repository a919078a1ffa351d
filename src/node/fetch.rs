//! Peer fetches: asking the owner for a key, reading its answer, and keeping a hot copy of
//! the popular ones.

use std::time::{Duration, Instant, UNIX_EPOCH};

use tracing::Instrument as _;

use super::Node;
use super::cache::{Entry, Tier};
use super::queue::{Fetch, batch_results};
use super::singleflight::{BatchKeys, Ticket};
use super::source::{CachedSource, FlightKey, HotKeys};
use crate::error::{Error, ErrorKind, OwnerFailed};
use crate::peer::client::{Fetched, PeerError};
use crate::peer::health::{PeerHealth, Verdict};
use crate::protocol::{GetResponse, NOT_FOUND, REPLY_FULL, TOO_LARGE, UNAVAILABLE, error_kind};
use crate::stats::Event;

impl Node {
    /// Asks `peer` for the key. `None` means the fetch failed and the key is to be loaded
    /// locally.
    pub(super) async fn fetch_from(
        &self,
        peer: &str,
        source: &CachedSource,
        key: &str,
        ticket: &Ticket,
    ) -> Option<Result<Entry, Error>> {
        let counters = &source.counters;
        let fingerprint = self.ring.load().fingerprint_header().clone();
        let local_rate = self.fetch_rate(source, key);
        let started = std::time::Instant::now();
        let span = self.with_key(
            tracing::debug_span!("groupcache.peer_fetch", source = %source.name, %peer, key = tracing::field::Empty),
            key,
        );
        let fetched = self
            .client
            .fetch(
                peer,
                &self.config.base_path,
                &source.name,
                key,
                &fingerprint,
            )
            .instrument(span)
            .await;
        record_fetch(source, started);
        match fetched {
            Ok(Fetched::Value(response)) => {
                self.health.success(peer);
                let now = self.clock.now();
                Some(Ok(
                    self.fetched(source, key, response, local_rate, ticket, now)
                ))
            }
            Ok(Fetched::NotFound) => {
                self.health.success(peer);
                counters.add(Event::PeerNotFound);
                Some(Err(Error::new(ErrorKind::NotFound, &source.name)))
            }
            Ok(Fetched::Failed { kind, message }) => {
                // The owner is healthy; its data source failed. Loading here would call the
                // failing back end once more, for every get.
                self.health.success(peer);
                counters.add(Event::PeerLoadError);
                let cause = OwnerFailed {
                    owner: peer.to_owned(),
                    message,
                };
                Some(Err(Error::with_cause(
                    kind,
                    &source.name,
                    Some(cause.into()),
                )))
            }
            Err(error) => {
                counters.add(Event::PeerError);
                let skipping = error.is_peer_fault() && self.health.failure(peer);
                if !error.is_peer_fault() {
                    self.health.success(peer);
                }
                if matches!(error, PeerError::NotServed) {
                    if let Some(left_out) = self.noise.not_served.allow() {
                        tracing::error!(
                            source = %source.name,
                            %peer,
                            left_out,
                            "the peer's router answered its peer path, not its groupcache layer: \
                             add the layer with `Router::layer` on the whole router (not \
                             `route_layer`, not inside `nest`); loading locally"
                        );
                    }
                } else {
                    self.fetch_failed(source, peer, &error, skipping, 1);
                }
                None
            }
        }
    }

    /// The rate of this node's fetches of `key`, counted now; counted only where it can
    /// matter: a popularity policy and a hot cache to fill.
    fn fetch_rate(&self, source: &CachedSource, key: &str) -> f64 {
        match self.config.hot_keys {
            HotKeys::AboveQps(_) if source.caches.hot.is_some() => {
                source.fetch_rates.hit(key, self.clock.now())
            }
            _ => 0.0,
        }
    }

    /// A value the owner sent: counted, and kept as a hot copy when the key is popular.
    fn fetched(
        &self,
        source: &CachedSource,
        key: &str,
        response: GetResponse,
        local_rate: f64,
        ticket: &Ticket,
        now: Instant,
    ) -> Entry {
        let counters = &source.counters;
        counters.add(Event::PeerLoad);
        let owner_rate = response.minute_qps.unwrap_or(0.0);
        let entry = self.entry_from_wire(response, now);
        // With no hot cache (`cache_bytes(0)`, or no hot share) there is nothing to keep.
        let admit = source.caches.hot.is_some()
            && match self.config.hot_keys {
                HotKeys::Never => false,
                HotKeys::OneInTen => source.one_in_ten(),
                HotKeys::AboveQps(threshold) => owner_rate.max(local_rate) >= threshold,
            };
        if admit {
            // A hot copy is never older than the maximum staleness.
            let mut hot = entry.clone();
            let limit = now.checked_add(self.config.hot_max_staleness);
            hot.expires = match (hot.expires, limit) {
                (Some(at), Some(limit)) => Some(at.min(limit)),
                (at, limit) => at.or(limit),
            };
            hot.keeps_stale = false;
            if !hot.is_expired(now) {
                source.store(Tier::Hot, key, hot, ticket);
                counters.add(Event::HotPromotion);
            }
        }
        entry
    }

    /// The body of a batch of flights for keys `peer` owns (a node of this crate): asked in
    /// batched gets of at most `max_batch_keys`, each key counted and kept as
    /// [`fetch_from`](Self::fetch_from) does. The keys a fetch could not get (the peer is
    /// skipped, failed, or sent no value for its own reasons) are loaded here, in one batch,
    /// as [`load`](Self::load) would load each.
    pub(super) async fn fetch_batch(
        &self,
        peer: &str,
        source: &CachedSource,
        keys: &BatchKeys<FlightKey>,
    ) -> Vec<Result<Entry, Error>> {
        let counters = &source.counters;
        let (mut results, places, to_fetch) =
            self.start_batch(source, keys.iter().map(|(key, ticket)| (key.key(), ticket)));
        let mut local_places = Vec::new();
        let mut local = Vec::new();
        let verdict = self.health.verdict(peer);
        if verdict == Verdict::Skip {
            for _ in &to_fetch {
                counters.add(Event::PeerSkip);
            }
            self.client.skipped(peer, to_fetch.len());
            local_places = places;
            local = to_fetch;
        } else {
            // Frees the probe slot however the fetch ends, even if it is dropped.
            let _probe = (verdict == Verdict::Probe).then(|| ProbeSlot(&self.health, peer));
            let max = self.config.max_batch_keys.max(1);
            for (chunk, chunk_places) in to_fetch.chunks(max).zip(places.chunks(max)) {
                let fetched = self.fetch_chunk(peer, source, chunk).await;
                for ((fetch, &place), keyed) in fetched.into_iter().zip(chunk_places).zip(chunk) {
                    match fetch {
                        Some(result) => results[place] = Some(result),
                        None => {
                            local_places.push(place);
                            local.push(*keyed);
                        }
                    }
                }
            }
        }
        let loaded = self.load_from_source(source, &local).await;
        for (place, result) in local_places.into_iter().zip(loaded) {
            results[place] = Some(result);
        }
        batch_results(&source.name, results)
    }

    /// One batched get of `chunk` from `peer`: each key's result, in the order of `chunk`, or
    /// `None` for a key to be loaded here.
    pub(super) async fn fetch_chunk(
        &self,
        peer: &str,
        source: &CachedSource,
        chunk: &[(&str, &Ticket)],
    ) -> Vec<Fetch> {
        let counters = &source.counters;
        let fingerprint = self.ring.load().fingerprint_header().clone();
        let keys: Vec<&str> = chunk.iter().map(|&(key, _)| key).collect();
        // Each key's rate here, counted in one pass (none where no hot copy is kept).
        let rates = match self.config.hot_keys {
            HotKeys::AboveQps(_) if source.caches.hot.is_some() => {
                source.fetch_rates.hit_many(&keys, self.clock.now())
            }
            _ => Vec::new(),
        };
        let started = std::time::Instant::now();
        let span = tracing::debug_span!("groupcache.peer_fetch_many", source = %source.name, %peer, keys = chunk.len());
        let fetched = self
            .client
            .fetch_many(
                peer,
                &self.config.base_path,
                &source.name,
                &keys,
                &fingerprint,
            )
            .instrument(span)
            .await;
        record_fetch(source, started);
        let answers = match fetched {
            Ok(answers) => answers,
            Err(PeerError::Status(http::StatusCode::METHOD_NOT_ALLOWED)) => {
                // A node of an earlier version of this crate, which has no batched get: asked
                // key by key, as a get asks it.
                self.health.success(peer);
                let mut fetched = Vec::with_capacity(chunk.len());
                for (key, ticket) in chunk {
                    fetched.push(self.fetch_from(peer, source, key, ticket).await);
                }
                return fetched;
            }
            Err(error) => {
                for _ in chunk {
                    counters.add(Event::PeerError);
                }
                let skipping = error.is_peer_fault() && self.health.failure(peer);
                if !error.is_peer_fault() {
                    self.health.success(peer);
                }
                self.fetch_failed(source, peer, &error, skipping, chunk.len());
                return chunk.iter().map(|_| None).collect();
            }
        };
        self.health.success(peer);
        let now = self.clock.now();
        let mut fetched = Vec::with_capacity(chunk.len());
        let rates = rates.into_iter().chain(std::iter::repeat(0.0));
        for (((key, ticket), answer), local_rate) in chunk.iter().zip(answers).zip(rates) {
            let result = match answer.error.as_deref() {
                None => {
                    let response = GetResponse {
                        value: answer.value,
                        minute_qps: answer.minute_qps,
                        expire: answer.expire,
                    };
                    Ok(self.fetched(source, key, response, local_rate, ticket, now))
                }
                Some(NOT_FOUND) => {
                    counters.add(Event::PeerNotFound);
                    Err(Error::new(ErrorKind::NotFound, &source.name))
                }
                Some(REPLY_FULL) => {
                    // It fits alone: asked on its own.
                    fetched.push(self.fetch_from(peer, source, key, ticket).await);
                    continue;
                }
                Some(TOO_LARGE | UNAVAILABLE) => {
                    counters.add(Event::PeerError);
                    fetched.push(None);
                    continue;
                }
                Some(token) => {
                    // The owner's data source failed: loading here would call it once more.
                    counters.add(Event::PeerLoadError);
                    let cause = OwnerFailed {
                        owner: peer.to_owned(),
                        message: answer.message.unwrap_or_default(),
                    };
                    Err(Error::with_cause(
                        error_kind(token.as_bytes()),
                        &source.name,
                        Some(cause.into()),
                    ))
                }
            };
            fetched.push(Some(result));
        }
        fetched
    }

    /// Logs a failed fetch of `keys` keys (at most once in a while: a peer that fails every
    /// fetch would write a line per get).
    fn fetch_failed(
        &self,
        source: &CachedSource,
        peer: &str,
        error: &PeerError,
        skipping: bool,
        keys: usize,
    ) {
        if let Some(left_out) = self.noise.fetch_failed.allow() {
            tracing::warn!(
                source = %source.name,
                %peer,
                %error,
                skipping,
                left_out,
                keys,
                "peer fetch failed; loading locally"
            );
        }
    }

    /// An entry from a peer's answer; its wall-clock expiry becomes a deadline on the clock.
    /// `expire` absent or 0 means never; a time already past, or a negative one (which no
    /// clock writes), means the value is expired now: it is returned but not kept.
    fn entry_from_wire(&self, response: GetResponse, now: Instant) -> Entry {
        let expires = match response.expire {
            None | Some(0) => None,
            Some(nanos) => {
                let left = u64::try_from(nanos)
                    .ok()
                    .and_then(|nanos| UNIX_EPOCH.checked_add(Duration::from_nanos(nanos)))
                    .and_then(|at| at.duration_since(self.clock.system_now()).ok())
                    .unwrap_or(Duration::ZERO);
                // Past the clock's range is as good as never.
                now.checked_add(left)
            }
        };
        Entry::value(response.value.unwrap_or_default(), expires)
    }

    /// An entry's expiry as Unix nanoseconds for the wire (`GetResponse.expire`).
    pub(crate) fn expire_to_wire(&self, entry: &Entry) -> Option<i64> {
        let left = entry.expires?.saturating_duration_since(self.clock.now());
        let at = self.clock.system_now().checked_add(left)?;
        let nanos = at.duration_since(UNIX_EPOCH).ok()?.as_nanos();
        // 0 means "never" on the wire: an entry that is due now still says so.
        Some(i64::try_from(nanos).unwrap_or(i64::MAX).max(1))
    }
}

/// A peer fetch's duration, in `groupcache_peer_fetch_duration_seconds`.
fn record_fetch(source: &CachedSource, started: std::time::Instant) {
    source.durations.record_fetch(started.elapsed());
}

pub(super) struct ProbeSlot<'a>(pub(super) &'a PeerHealth, pub(super) &'a str);

impl Drop for ProbeSlot<'_> {
    fn drop(&mut self) {
        self.0.probe_abandoned(self.1);
    }
}
