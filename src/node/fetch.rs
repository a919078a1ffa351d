//! Peer fetches: asking the owner for a key, reading its answer, and keeping a hot copy of
//! the popular ones.

use std::time::{Duration, UNIX_EPOCH};

use tracing::Instrument as _;

use super::Node;
use super::cache::{Entry, Tier};
use super::singleflight::Ticket;
use super::source::{CachedSource, HotKeys};
use crate::error::{Error, ErrorKind, OwnerFailed};
use crate::peer::client::{Fetched, PeerError};
use crate::peer::health::PeerHealth;
use crate::protocol::GetResponse;
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
        // Counted only where it can matter: a popularity policy and a hot cache to fill.
        let local_rate = match self.config.hot_keys {
            HotKeys::AboveQps(_) if source.caches.hot.is_some() => {
                source.fetch_rates.hit(key, self.clock.now())
            }
            _ => 0.0,
        };
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
        metrics::histogram!(
            "groupcache_peer_fetch_duration_seconds",
            "source" => metrics::SharedString::from(source.name.clone())
        )
        .record(started.elapsed());
        match fetched {
            Ok(Fetched::Value(response)) => {
                self.health.success(peer);
                counters.add(Event::PeerLoad);
                let owner_rate = response.minute_qps.unwrap_or(0.0);
                let entry = self.entry_from_wire(response);
                let admit = match self.config.hot_keys {
                    HotKeys::Never => false,
                    HotKeys::OneInTen => source.one_in_ten(),
                    HotKeys::AboveQps(threshold) => owner_rate.max(local_rate) >= threshold,
                };
                if admit {
                    // A hot copy is never older than the maximum staleness.
                    let mut hot = entry.clone();
                    let limit = self.clock.now().checked_add(self.config.hot_max_staleness);
                    hot.expires = match (hot.expires, limit) {
                        (Some(at), Some(limit)) => Some(at.min(limit)),
                        (at, limit) => at.or(limit),
                    };
                    hot.keeps_stale = false;
                    if !hot.is_expired(self.clock.now()) {
                        source.store(Tier::Hot, key, hot, ticket);
                        counters.add(Event::HotPromotion);
                    }
                }
                Some(Ok(entry))
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
                } else if let Some(left_out) = self.noise.fetch_failed.allow() {
                    tracing::warn!(
                        source = %source.name,
                        %peer,
                        %error,
                        skipping,
                        left_out,
                        "peer fetch failed; loading locally"
                    );
                }
                None
            }
        }
    }

    /// An entry from a peer's answer; its wall-clock expiry becomes a deadline on the clock.
    /// `expire` absent or 0 means never; a time already past, or a negative one (which no
    /// clock writes), means the value is expired now: it is returned but not kept.
    fn entry_from_wire(&self, response: GetResponse) -> Entry {
        let now = self.clock.now();
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

pub(super) struct ProbeSlot<'a>(pub(super) &'a PeerHealth, pub(super) &'a str);

impl Drop for ProbeSlot<'_> {
    fn drop(&mut self) {
        self.0.probe_abandoned(self.1);
    }
}
