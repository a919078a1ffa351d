//! Why a peer request failed.

use std::fmt;
use std::time::Duration;

use http::StatusCode;

impl PeerError {
    pub(super) fn connect(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Connect(error.into())
    }

    /// Whether the failure says the peer cannot serve this node at all: unreachable, slow,
    /// garbled, refusing its credentials (401, 403), or answering 502, 503 or 504. Any other
    /// status is a healthy peer's answer about this key (a Go node's 301 for a key with `//`,
    /// a 500 when its data source failed), so it does not count toward skipping the peer.
    pub(crate) fn is_peer_fault(&self) -> bool {
        match self {
            Self::Status(status) => matches!(status.as_u16(), 401 | 403 | 502..=504),
            // A healthy peer with a value larger than this node takes.
            Self::TooLarge => false,
            _ => true,
        }
    }
}

/// Why a peer fetch failed. Each one is counted as a peer error and the key is loaded locally.
#[derive(Debug)]
pub(crate) enum PeerError {
    Uri(http::uri::InvalidUri),
    /// The peer's URL names no host (the builder checks peer URLs, so this is a bug).
    NoAuthority,
    Connect(Box<dyn std::error::Error + Send + Sync>),
    Request(hyper::Error),
    Timeout(Duration),
    Status(StatusCode),
    /// A `404` without the extensions header and not Go's `no such group`: the router of the
    /// peer's service answered, not its cache layer (mounted with `route_layer`, or under
    /// `nest`).
    NotServed,
    /// The value is larger than `max_value_bytes`: the owner said so, or it was cut off
    /// while it streamed in.
    TooLarge,
    /// A removal was answered without the extensions header: the peer has no removal.
    Unsupported,
    Body(Box<dyn std::error::Error + Send + Sync>),
    Decode(prost::DecodeError),
    /// A batched get was answered with another number of results than keys asked.
    BatchMismatch {
        asked: usize,
        answered: usize,
    },
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uri(e) => write!(f, "invalid peer request URI: {e}"),
            Self::NoAuthority => f.write_str("the peer URL has no host"),
            Self::Connect(e) => write_chain(f, "connecting", &**e),
            Self::Request(e) => write_chain(f, "request failed", e),
            Self::Timeout(t) => write!(f, "no complete answer within {t:?}"),
            Self::Status(s) => write!(f, "server returned: {s}"),
            Self::NotServed => f.write_str(
                "server returned 404 from outside its groupcache layer: the layer is not \
                 reached for the peer path (mounted with `route_layer`, or under `nest`?)",
            ),
            Self::TooLarge => f.write_str("the value is larger than max_value_bytes"),
            Self::Unsupported => f.write_str("the peer does not speak this crate's extensions"),
            Self::Body(e) => write!(f, "reading response body: {e}"),
            Self::Decode(e) => write!(f, "decoding response body: {e}"),
            Self::BatchMismatch { asked, answered } => {
                write!(f, "asked for {asked} keys, answered {answered}")
            }
        }
    }
}

impl std::error::Error for PeerError {}

/// `what: error: its cause: ...`: hyper's and the connector's errors keep the useful part
/// (the refused connection, the reset) in their sources.
fn write_chain(
    f: &mut fmt::Formatter<'_>,
    what: &str,
    error: &(dyn std::error::Error + 'static),
) -> fmt::Result {
    write!(f, "{what}: {error}")?;
    let mut source = error.source();
    while let Some(cause) = source {
        write!(f, ": {cause}")?;
        source = cause.source();
    }
    Ok(())
}
