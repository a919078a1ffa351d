//! The peer client: fetches a key from the node that owns it.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use std::sync::Arc;

use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prost::Message as _;

use crate::auth::{AUTH_HEADER, PeerAuth};
use crate::protocol::{GetResponse, escape};

/// The status by which a node of this crate says the data source has no value for the key.
/// A Go node treats it as any non-200: an error, after which it loads the key itself.
pub(crate) const NOT_FOUND_STATUS: StatusCode = StatusCode::NO_CONTENT;

/// The header that carries the sender's ring fingerprint (8 hex digits). Go nodes ignore it.
pub(crate) const RING_HEADER: &str = "x-groupcache-ring";

/// What a peer answered.
#[derive(Debug)]
pub(crate) enum Fetched {
    Value(GetResponse),
    NotFound,
}

impl PeerError {
    /// Whether the failure says the peer cannot serve this node at all: unreachable, slow,
    /// garbled, refusing its credentials (401, 403), or answering 502, 503 or 504. Any other
    /// status is a healthy peer's answer about this key (a Go node's 301 for a key with `//`,
    /// a 500 when its data source failed), so it does not count toward skipping the peer.
    pub(crate) fn is_peer_fault(&self) -> bool {
        match self {
            Self::Status(status) => matches!(status.as_u16(), 401 | 403 | 502..=504),
            _ => true,
        }
    }
}

/// Why a peer fetch failed. Each one is counted as a peer error and the key is loaded locally.
#[derive(Debug)]
pub(crate) enum PeerError {
    Uri(http::uri::InvalidUri),
    Request(hyper_util::client::legacy::Error),
    Timeout(Duration),
    Status(StatusCode),
    Body(Box<dyn std::error::Error + Send + Sync>),
    Decode(prost::DecodeError),
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uri(e) => write!(f, "invalid peer request URI: {e}"),
            Self::Request(e) => {
                write!(f, "request failed: {e}")?;
                let mut source = std::error::Error::source(e);
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
            Self::Timeout(t) => write!(f, "no complete answer within {t:?}"),
            Self::Status(s) => write!(f, "server returned: {s}"),
            Self::Body(e) => write!(f, "reading response body: {e}"),
            Self::Decode(e) => write!(f, "decoding response body: {e}"),
        }
    }
}

impl std::error::Error for PeerError {}

/// Settings of the peer client.
#[derive(Debug, Clone)]
pub(crate) struct ClientConfig {
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) max_value_bytes: usize,
}

/// A pooled keep-alive HTTP/1.1 client for peer requests.
#[cfg(feature = "tls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;

#[derive(Clone)]
pub(crate) struct PeerClient {
    http: Client<Connector, Empty<Bytes>>,
    config: ClientConfig,
    auth: Option<Arc<PeerAuth>>,
}

impl fmt::Debug for PeerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PeerClient {
    pub(crate) fn new(
        config: ClientConfig,
        auth: Option<Arc<PeerAuth>>,
        #[cfg(feature = "tls")] tls: rustls::ClientConfig,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        #[cfg(feature = "tls")]
        let connector = {
            connector.enforce_http(false);
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .wrap_connector(connector)
        };
        let http = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .build(connector);
        Self { http, config, auth }
    }

    /// `GET {peer}{base_path}{group}/{key}`, bounded by the request timeout as a whole.
    pub(crate) async fn fetch(
        &self,
        peer: &str,
        base_path: &str,
        group: &str,
        key: &str,
        ring_fingerprint: &HeaderValue,
    ) -> Result<Fetched, PeerError> {
        let uri = format!("{peer}{base_path}{}/{}", escape(group), escape(key));
        // From the `String` itself: its bytes become the URI's without a copy.
        let uri = Uri::try_from(uri).map_err(PeerError::Uri)?;
        let timeout = self.config.timeout;
        tokio::time::timeout(timeout, self.exchange(uri, ring_fingerprint))
            .await
            .map_err(|_| PeerError::Timeout(timeout))?
    }

    /// `DELETE {peer}{base_path}{group}/{key}` (drop one key), or `{group}` alone (drop the
    /// whole source) when `key` is `None`.
    pub(crate) async fn delete(
        &self,
        peer: &str,
        base_path: &str,
        group: &str,
        key: Option<&str>,
        ring_fingerprint: &HeaderValue,
    ) -> Result<(), PeerError> {
        let uri = match key {
            Some(key) => format!("{peer}{base_path}{}/{}", escape(group), escape(key)),
            None => format!("{peer}{base_path}{}", escape(group)),
        };
        let uri = Uri::try_from(uri).map_err(PeerError::Uri)?;
        let request = self.request(Method::DELETE, uri, ring_fingerprint);
        let timeout = self.config.timeout;
        let response = tokio::time::timeout(timeout, self.http.request(request))
            .await
            .map_err(|_| PeerError::Timeout(timeout))?
            .map_err(PeerError::Request)?;
        match response.status() {
            StatusCode::OK => Ok(()),
            status => Err(PeerError::Status(status)),
        }
    }

    /// A request to a peer, signed when a peer secret is set.
    fn request(
        &self,
        method: Method,
        uri: Uri,
        ring_fingerprint: &HeaderValue,
    ) -> Request<Empty<Bytes>> {
        let mut request = Request::new(Empty::new());
        if let Some(auth) = &self.auth {
            let credential = auth.sign(method.as_str(), uri.path());
            request.headers_mut().insert(AUTH_HEADER, credential);
        }
        request
            .headers_mut()
            .insert(RING_HEADER, ring_fingerprint.clone());
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        request
    }

    async fn exchange(
        &self,
        uri: Uri,
        ring_fingerprint: &HeaderValue,
    ) -> Result<Fetched, PeerError> {
        let request = self.request(Method::GET, uri, ring_fingerprint);
        let response = self
            .http
            .request(request)
            .await
            .map_err(PeerError::Request)?;
        match response.status() {
            StatusCode::OK => {}
            NOT_FOUND_STATUS => return Ok(Fetched::NotFound),
            status => return Err(PeerError::Status(status)),
        }
        let body: Bytes = Limited::new(response.into_body(), self.config.max_value_bytes)
            .collect()
            .await
            .map_err(PeerError::Body)?
            .to_bytes();
        GetResponse::decode(body)
            .map(Fetched::Value)
            .map_err(PeerError::Decode)
    }
}
