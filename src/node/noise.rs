//! What anyone who reaches the peer path can cause, or a failing peer at the request rate:
//! refused requests and the log lines of failures, each counted and logged at most once per
//! interval.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use http::{HeaderValue, StatusCode};

use super::Node;
use super::throttle::LogThrottle;
use crate::peer::auth::{PeerAuth, Refusal};
use crate::stats::RefusalStats;

/// A peer request refused before any work.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refused {
    Auth(Refusal),
    /// No peer secret, and the peer path is closed.
    Closed,
    ShuttingDown,
}

/// The reasons of [`Refused`], in the order of [`RefusalStats::by_reason`].
const REFUSAL_REASONS: usize = 8;

impl Refused {
    fn index(self) -> usize {
        match self {
            Self::Auth(Refusal::Missing) => 0,
            Self::Auth(Refusal::Malformed) => 1,
            Self::Auth(Refusal::Expired) => 2,
            Self::Auth(Refusal::BadSignature) => 3,
            Self::Auth(Refusal::Replayed) => 4,
            Self::Auth(Refusal::ReplayRecordFull) => 5,
            Self::Closed => 6,
            Self::ShuttingDown => 7,
        }
    }

    /// The status of the refusal's answer.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Self::Auth(_) => StatusCode::UNAUTHORIZED,
            Self::Closed => StatusCode::FORBIDDEN,
            Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Self::Auth(refusal) => refusal.reason(),
            Self::Closed => "closed",
            Self::ShuttingDown => "shutting_down",
        }
    }
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auth(refusal) => refusal.fmt(f),
            Self::Closed => {
                f.write_str("forbidden: this node has no peer secret and its peer path is closed")
            }
            Self::ShuttingDown => f.write_str("shutting down"),
        }
    }
}

/// Counts and log throttles of the events anyone who reaches the peer path can cause, or that
/// a failing peer causes at the request rate: each is counted, and logged at most once per
/// interval.
#[derive(Debug, Default)]
pub(crate) struct Noise {
    refused: [AtomicU64; REFUSAL_REASONS],
    refused_logs: [LogThrottle; REFUSAL_REASONS],
    pub(super) foreign_ring: LogThrottle,
    pub(super) fetch_failed: LogThrottle,
    pub(super) not_served: LogThrottle,
    pub(super) removal_unconfirmed: LogThrottle,
    pub(super) panicked: LogThrottle,
}

impl Noise {
    pub(super) fn refusals(&self) -> RefusalStats {
        let count = |i: usize| self.refused[i].load(Relaxed);
        let mut stats = RefusalStats::default();
        for (i, slot) in [
            &mut stats.missing,
            &mut stats.malformed,
            &mut stats.expired,
            &mut stats.bad_signature,
            &mut stats.replayed,
            &mut stats.replay_record_full,
            &mut stats.closed,
            &mut stats.shutting_down,
        ]
        .into_iter()
        .enumerate()
        {
            *slot = count(i);
        }
        stats
    }
}

impl Node {
    /// Whether a peer request may be served: the node is not draining, and the request's
    /// credential checks (or, without a secret, the peer path is open). `signed` is what the
    /// credential signs: the path and query, still escaped. A refusal is counted and logged.
    pub(crate) fn admit(
        &self,
        method: &str,
        signed: &str,
        credential: Option<&HeaderValue>,
    ) -> Result<(), Refused> {
        self.admit_with(|auth| auth.verify(method, signed, credential))
    }

    /// [`admit`](Self::admit) where what the credential signs costs something to make (a
    /// request with a body signs a digest of it): made only when there is a secret.
    pub(crate) fn admit_signing(
        &self,
        method: &str,
        signed: impl FnOnce() -> String,
        credential: Option<&HeaderValue>,
    ) -> Result<(), Refused> {
        self.admit_with(|auth| auth.verify(method, &signed(), credential))
    }

    /// [`admit`](Self::admit) for a request with a body, before the body is read: the drain,
    /// a closed peer path, and what of the credential needs no body (there is one, well
    /// formed, within its validity). A request refused here costs no reading; one admitted
    /// is checked in full by `admit` once its body is read.
    pub(crate) fn admit_before_body(
        &self,
        credential: Option<&HeaderValue>,
    ) -> Result<(), Refused> {
        self.admit_with(|auth| auth.precheck(credential))
    }

    /// The drain, then `check` of the credential (or, without a secret, whether the peer
    /// path is open). A refusal is counted and logged.
    fn admit_with(
        &self,
        check: impl FnOnce(&PeerAuth) -> Result<(), Refusal>,
    ) -> Result<(), Refused> {
        let refused = if self.drain.is_draining() {
            Some(Refused::ShuttingDown)
        } else {
            match &self.auth {
                Some(auth) => check(auth).err().map(Refused::Auth),
                None if !self.open_peer_path => Some(Refused::Closed),
                None => None,
            }
        };
        match refused {
            Some(refused) => {
                self.refused(refused);
                Err(refused)
            }
            None => Ok(()),
        }
    }

    /// Counts a refused peer request, and logs it (at most once per interval per reason).
    fn refused(&self, refused: Refused) {
        let index = refused.index();
        self.noise.refused[index].fetch_add(1, Relaxed);
        if matches!(refused, Refused::ShuttingDown) {
            return;
        }
        if let Some(left_out) = self.noise.refused_logs[index].allow() {
            tracing::warn!(
                reason = refused.reason(),
                left_out,
                "peer request refused: {refused}"
            );
        }
    }
}
