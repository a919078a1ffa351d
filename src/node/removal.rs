//! Removal: dropping a key, or a whole source, here and on every peer that can.

use super::Node;
use super::source::CachedSource;
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
        let mut removal = Removal::default();
        for (peer, result) in futures_util::future::join_all(deletes).await {
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
