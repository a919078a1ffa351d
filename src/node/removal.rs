//! Removal: dropping a key, or a whole source, here and on every peer that can.

use std::time::Duration;

use bytes::Bytes;

use super::Node;
use super::source::CachedSource;
use crate::error::{Error, ErrorKind};
use crate::peer::client::{PeerError, Speaks};
use crate::ring::Ring;

/// What [`CacheHandle::remove`](crate::CacheHandle::remove) and
/// [`CacheHandle::clear`](crate::CacheHandle::clear) could do: the peers that may still hold
/// the old value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Removal {
    /// Peers that did not confirm the removal: down, timed out, refusing this node's
    /// credentials, or draining.
    pub unreachable: Vec<String>,
    /// Peers that have no removal: golang/groupcache nodes. Nothing is sent to them (a Go
    /// node would answer a removal as a get, and load the key); their copies expire by
    /// themselves (Go keeps hot copies until they are evicted).
    pub unsupported: Vec<String>,
}

impl Removal {
    /// Whether every peer confirmed.
    pub fn is_complete(&self) -> bool {
        self.unreachable.is_empty() && self.unsupported.is_empty()
    }
}

impl Node {
    /// Drops `key` of `source` here, then on its owner, then on every other peer. Returns the
    /// peers that did not confirm.
    pub(crate) async fn remove(&self, source: &CachedSource, key: &str) -> Removal {
        source.remove(key);
        let ring = self.ring.load_full();
        let me = self.self_url.as_deref();
        let owner = ring.owner(key).filter(|o| Some(*o) != me);
        // The owner first: once it has dropped its copy, no peer can fetch the old value.
        let mut removal = self.delete_on(source, Some(key), owner, &ring).await;
        if owner.is_some() {
            // A get here between the first drop and the owner's may have fetched the old
            // value again: drop it (and revoke such a fetch still under way) once more.
            source.remove(key);
        }
        let others = ring
            .peers()
            .filter(|p| Some(*p) != me && Some(*p) != ring.owner(key));
        let rest = self.delete_on(source, Some(key), others, &ring).await;
        removal.unreachable.extend(rest.unreachable);
        removal.unsupported.extend(rest.unsupported);
        removal
    }

    /// Writes `value` as the value of `key` (docs/protocol.md, "Writes"): into its owner's
    /// main cache, here or on a peer of this crate, and drops every other copy, here and on
    /// every other peer. Returns the peers whose hot copies could not be dropped.
    ///
    /// This node's own copies are dropped first, and once more after the owner took the
    /// value (a get in between may have fetched the old one). A value over `max_value_bytes`
    /// is not written ([`ErrorKind::ValueTooLarge`]), nor a key a Go node owns
    /// ([`ErrorKind::Unsupported`]), nor one whose owner fails or refuses
    /// ([`ErrorKind::Peer`]). Since the back end has the new value already, a write that
    /// fails then drops the key as [`remove`](Self::remove) does, everywhere it can, so that
    /// the next get loads the new value rather than find the old one.
    pub(crate) async fn set(
        &self,
        source: &CachedSource,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<Removal, Error> {
        if key.len() > self.config.max_key_bytes {
            // No node keeps such a key: nothing to drop.
            return Err(Error::new(ErrorKind::KeyTooLong, &source.name));
        }
        let written = self.write(source, key, value, ttl).await;
        if written.is_err() {
            self.remove(source, key).await;
        }
        written
    }

    /// [`set`](Self::set) without what it does when the write fails.
    async fn write(
        &self,
        source: &CachedSource,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<Removal, Error> {
        if value.len() > self.config.max_value_bytes {
            return Err(Error::new(ErrorKind::ValueTooLarge, &source.name));
        }
        let ring = self.ring.load_full();
        let me = self.self_url.as_deref();
        let owner = ring.owner(key).filter(|o| Some(*o) != me);
        match owner {
            None => self.write_here(source, key, value, ttl),
            Some(owner) => {
                source.remove(key);
                let fingerprint = ring.fingerprint_header();
                let base_path = &*self.config.base_path;
                let written = match self.client.speaks(owner, base_path, fingerprint).await {
                    Ok(Speaks::Extensions) => {
                        self.client
                            .put(owner, base_path, &source.name, key, value, ttl, fingerprint)
                            .await
                    }
                    Ok(_) => Err(PeerError::Unsupported),
                    Err(error) => Err(error),
                };
                // A get here meanwhile may have fetched the old value: drop it, and revoke
                // such a fetch still under way.
                source.remove(key);
                match written {
                    Ok(()) => {}
                    Err(PeerError::Unsupported) => {
                        return Err(Error::new(ErrorKind::Unsupported, &source.name));
                    }
                    Err(error) => {
                        return Err(Error::with_cause(
                            ErrorKind::Peer,
                            &source.name,
                            Some(Box::new(error)),
                        ));
                    }
                }
            }
        }
        let others = ring
            .peers()
            .filter(|p| Some(*p) != me && Some(*p) != ring.owner(key));
        Ok(self.delete_on(source, Some(key), others, &ring).await)
    }

    /// Keeps `value` as the value of `key` in the main cache here, for `ttl` (or the source's
    /// default). Every copy of the key here is dropped and its load under way revoked first,
    /// so that a load that started before the write cannot put an older value back.
    pub(crate) fn write_here(
        &self,
        source: &CachedSource,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) {
        source.remove(key);
        let now = self.clock.now();
        let entry = source.options.entry(value, ttl, key, now);
        if !entry.is_expired(now) {
            source.caches.insert_main(key, entry);
        }
    }

    /// Drops `keys` of `source` here and on every peer, in at most two requests per peer
    /// (more only past `max_batch_keys` keys): first each owner drops its own keys, then,
    /// once they all answered, every peer drops the others' (its hot copies). In that order,
    /// as [`remove`](Self::remove) orders one key, no peer can fetch an old value again from
    /// an owner that has not dropped it yet. Returns the peers that did not confirm.
    pub(crate) async fn remove_many(&self, source: &CachedSource, keys: &[&str]) -> Removal {
        let mut keys: Vec<&str> = keys.to_vec();
        keys.sort_unstable();
        keys.dedup();
        for key in &keys {
            source.remove(key);
        }
        let ring = self.ring.load_full();
        let me = self.self_url.as_deref();
        let peers: Vec<&str> = ring.peers().filter(|p| Some(*p) != me).collect();
        let owned_by = |peer: &str| -> Vec<String> {
            keys.iter()
                .filter(|key| ring.owner(key) == Some(peer))
                .map(|key| (*key).to_owned())
                .collect()
        };
        let first = self
            .delete_many_on(source, peers.iter().map(|p| (*p, owned_by(p))), &ring)
            .await;
        // A get here between the first drop and the owners' may have fetched an old value
        // again: drop them (and revoke such fetches still under way) once more.
        for key in &keys {
            source.remove(key);
        }
        let not_owned_by = |peer: &str| -> Vec<String> {
            keys.iter()
                .filter(|key| ring.owner(key) != Some(peer))
                .map(|key| (*key).to_owned())
                .collect()
        };
        let second = self
            .delete_many_on(source, peers.iter().map(|p| (*p, not_owned_by(p))), &ring)
            .await;
        let mut removal = Removal::default();
        for peer in peers {
            if first
                .unsupported
                .iter()
                .chain(&second.unsupported)
                .any(|p| p == peer)
            {
                removal.unsupported.push(peer.to_owned());
            } else if first
                .unreachable
                .iter()
                .chain(&second.unreachable)
                .any(|p| p == peer)
            {
                removal.unreachable.push(peer.to_owned());
            }
        }
        removal
    }

    /// Sends each peer the removal of its keys, all peers at once, in batches of at most
    /// `max_batch_keys`; each only if it speaks this crate's extensions. A node of an earlier
    /// version (`405` to a batched removal) is sent a `DELETE` per key.
    async fn delete_many_on<'a>(
        &self,
        source: &CachedSource,
        work: impl Iterator<Item = (&'a str, Vec<String>)>,
        ring: &Ring,
    ) -> Removal {
        let fingerprint = ring.fingerprint_header();
        let base_path = &*self.config.base_path;
        let sends = work
            .filter(|(_, keys)| !keys.is_empty())
            .map(|(peer, keys)| async move {
                let result = match self.client.speaks(peer, base_path, fingerprint).await {
                    Ok(Speaks::Extensions) => {
                        let mut result = Ok(true);
                        for chunk in keys.chunks(self.config.max_batch_keys) {
                            result = match self
                                .client
                                .delete_many(peer, base_path, &source.name, chunk, fingerprint)
                                .await
                            {
                                Err(PeerError::Status(http::StatusCode::METHOD_NOT_ALLOWED)) => {
                                    let mut each = Ok(true);
                                    for key in chunk {
                                        if let Err(error) = self
                                            .client
                                            .delete(
                                                peer,
                                                base_path,
                                                &source.name,
                                                Some(key),
                                                fingerprint,
                                            )
                                            .await
                                        {
                                            each = Err(error);
                                            break;
                                        }
                                    }
                                    each
                                }
                                other => other.map(|()| true),
                            };
                            if result.is_err() {
                                break;
                            }
                        }
                        result
                    }
                    Ok(_) => Ok(false),
                    Err(error) => Err(error),
                };
                (peer, result)
            });
        self.tally(source, futures_util::future::join_all(sends).await)
    }

    /// Drops every key of `source` here and on every peer. Returns the peers that did not
    /// confirm.
    pub(crate) async fn clear(&self, source: &CachedSource) -> Removal {
        source.clear();
        let ring = self.ring.load_full();
        let me = self.self_url.as_deref();
        let others = ring.peers().filter(|p| Some(*p) != me);
        self.delete_on(source, None, others, &ring).await
    }

    /// Sends a `DELETE` of `key` (or of the whole source) to `peers` at once, each only if it
    /// speaks this crate's extensions (a Go node would take it for a get, and load the key).
    async fn delete_on<'a>(
        &self,
        source: &CachedSource,
        key: Option<&str>,
        peers: impl IntoIterator<Item = &'a str>,
        ring: &Ring,
    ) -> Removal {
        let fingerprint = ring.fingerprint_header();
        let base_path = &*self.config.base_path;
        let deletes = peers.into_iter().map(|peer| async move {
            let result = match self.client.speaks(peer, base_path, fingerprint).await {
                Ok(Speaks::Extensions) => self
                    .client
                    .delete(peer, base_path, &source.name, key, fingerprint)
                    .await
                    .map(|()| true),
                Ok(_) => Ok(false),
                Err(error) => Err(error),
            };
            (peer, result)
        });
        self.tally(source, futures_util::future::join_all(deletes).await)
    }

    /// What the peers answered to a removal.
    fn tally(
        &self,
        source: &CachedSource,
        answers: Vec<(&str, Result<bool, PeerError>)>,
    ) -> Removal {
        let mut removal = Removal::default();
        for (peer, result) in answers {
            match result {
                Ok(true) => {}
                Ok(false) | Err(PeerError::Unsupported) => {
                    removal.unsupported.push(peer.to_owned());
                }
                Err(error) => {
                    if let Some(left_out) = self.noise.removal_unconfirmed.allow() {
                        tracing::warn!(source = %source.name, %peer, %error, left_out, "removal not confirmed by peer");
                    }
                    removal.unreachable.push(peer.to_owned());
                }
            }
        }
        removal
    }
}
