//! Membership: the peer list and its ring, the peer-auth rule, the ring fingerprints peers
//! send, and the start-up check of this node's own peer path.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::Node;
use crate::config::{check_peer_auth, validate_peers};
use crate::error::ConfigError;
use crate::peer::client::Speaks;
use crate::ring::{Ring, RingKind};

/// The ring a peer request says its sender places keys on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ForeignRing {
    /// Its fingerprint.
    pub(crate) fingerprint: u32,
    /// Its kind: golang's when the request does not name one.
    pub(crate) kind: ForeignKind,
}

/// The kind of ring a peer request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ForeignKind {
    Known(RingKind),
    /// A kind this version does not know (a later version's).
    Unknown,
}

impl ForeignKind {
    fn name(self) -> &'static str {
        match self {
            Self::Known(kind) => kind.name(),
            Self::Unknown => "unknown to this version",
        }
    }
}

/// How long [`Node::check_own_peer_path`] tries to reach this node's own peer path.
const SELF_CHECK_PERIOD: Duration = Duration::from_secs(60);

impl Node {
    pub(crate) fn set_peers(&self, peers: Vec<String>) -> Result<(), ConfigError> {
        let peers = validate_peers(self.self_url.as_deref(), peers, self.https)?;
        self.check_peer_auth(&peers)?;
        let ring = Ring::for_config(self.config.ring_kind, self.config.replicas, &peers)?;
        self.client.retain_peers(&peers, self.self_url.as_deref());
        self.health.retain_peers(&peers);
        for source in self.sources.iter() {
            source.peer_queues.retain(&peers);
        }
        self.ring.store(Arc::new(ring));
        Ok(())
    }

    /// Checks, in the background, that this node's own peer path is answered by its cache
    /// layer: a layer added with `route_layer`, or inside `nest`, leaves the peer path to the
    /// router, which answers it `404`, and every peer then loads this node's keys itself. The
    /// check asks `{self_url}{base_path}` until it gets an answer (the server may not listen
    /// yet), for at most a minute, and logs an error if the answer did not come from the
    /// layer. It stops when the cache is dropped.
    pub(crate) fn check_own_peer_path(self: &Arc<Self>) {
        let Some(url) = self.self_url.clone() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(self);
        let mut closed = self.closed.subscribe();
        runtime.spawn(async move {
            let give_up = tokio::time::Instant::now() + SELF_CHECK_PERIOD;
            let mut pause = Duration::from_millis(20);
            loop {
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = closed.changed() => return,
                }
                let Some(node) = weak.upgrade() else { return };
                let fingerprint = node.ring.load().fingerprint_header().clone();
                let base_path = &*node.config.base_path;
                match node.client.probe(&url, base_path, &fingerprint).await {
                    Ok((Speaks::Extensions, _)) => return,
                    Ok((_, status)) => {
                        tracing::error!(
                            %status,
                            "this node's peer path {url}{base_path} is not served by its \
                             groupcache layer: its router answered. Add the layer with \
                             `Router::layer` on the whole router, not with `route_layer` and \
                             not inside `nest`; until then every peer loads this node's keys \
                             itself"
                        );
                        return;
                    }
                    Err(error) if tokio::time::Instant::now() >= give_up => {
                        tracing::debug!(%error, "could not reach this node's own peer path to check it");
                        return;
                    }
                    Err(_) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        });
    }

    /// A cluster needs a peer secret, or an explicit choice of an open peer path.
    fn check_peer_auth(&self, peers: &[String]) -> Result<(), ConfigError> {
        check_peer_auth(
            peers,
            self.self_url.as_deref(),
            self.auth.is_some(),
            self.open_peer_path,
        )
        .map(drop)
    }

    /// Discovery may bring other nodes: it needs what a peer list with them needs.
    pub(crate) fn check_peer_auth_for_discovery(&self) -> Result<(), ConfigError> {
        if self.auth.is_none() && !self.open_peer_path {
            return Err(ConfigError::PeerAuthRequired);
        }
        Ok(())
    }

    /// Counts a failed discovery; the last peer list stays.
    pub(crate) fn discovery_failed(&self, name: &str, error: &dyn std::fmt::Display) {
        self.discovery_errors.fetch_add(1, Relaxed);
        tracing::warn!(%name, %error, "peer discovery failed; keeping the last peer list");
    }

    /// The peer that owns `key`, unless it is this node or there is no ring.
    pub(super) fn remote_owner(&self, key: &str) -> Option<Arc<str>> {
        let ring = self.ring.load();
        let owner = ring.owner_arc(key)?;
        match &self.self_url {
            Some(me) if **me == **owner => None,
            _ => Some(owner.clone()),
        }
    }

    /// Notes the ring a peer request came with: a fingerprint other than this node's, or
    /// another kind of ring, is a mismatch.
    pub(crate) fn check_ring(&self, foreign: Option<ForeignRing>) {
        let Some(foreign) = foreign else { return };
        let ring = self.ring.load();
        let (own, own_kind) = (ring.fingerprint(), ring.kind());
        let same_kind = foreign.kind == ForeignKind::Known(own_kind);
        if foreign.fingerprint == own && same_kind {
            return;
        }
        self.ring_mismatches.fetch_add(1, Relaxed);
        // The headers are the sender's to choose: one line per interval at most.
        let Some(left_out) = self.noise.foreign_ring.allow() else {
            return;
        };
        let peer = foreign.fingerprint;
        if same_kind {
            tracing::warn!(
                own = %format_args!("{own:08x}"),
                peer = %format_args!("{peer:08x}"),
                left_out,
                "a peer's ring differs from this node's: check that every node has the same peer list"
            );
        } else {
            tracing::warn!(
                own = %format_args!("{own:08x}"),
                peer = %format_args!("{peer:08x}"),
                own_kind = own_kind.name(),
                peer_kind = foreign.kind.name(),
                left_out,
                "a peer places keys on another kind of ring: this node's is {}, the peer's {}; \
                 every node of a cluster must use the same (`ring(..)`, `{{PREFIX}}_RING`), or \
                 keys load on several nodes",
                own_kind.name(),
                foreign.kind.name(),
            );
        }
    }
}
