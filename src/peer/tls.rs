//! https peers through rustls: custom root certificates, and a client certificate for mutual
//! TLS. Enabled by the `tls` feature.
//!
//! This node's own server side (its app and peer path over TLS) is the application's HTTP
//! server; see `examples/tls_node.rs` for one that requires client certificates.
//!
//! ```no_run
//! use tower_groupcache::{Groupcache, PeerTls};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tls = PeerTls::from_pem(&std::fs::read("ca.pem")?)?
//!     .client_certificate(&std::fs::read("node.pem")?, &std::fs::read("node.key")?)?;
//! let cache = Groupcache::builder()
//!     .self_url("https://10.0.0.1:8443")
//!     .peers(["https://10.0.0.1:8443", "https://10.0.0.2:8443"])
//!     .peer_secret("a secret all nodes share: 32 or more random bytes")
//!     .peer_tls(tls)
//!     .source("users", |key: String| async move { Ok::<_, std::io::Error>(key) })
//!     .build()?;
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::error::ConfigError;

/// TLS settings for requests to https peers.
#[derive(Clone)]
pub struct PeerTls {
    roots: RootCertStore,
    client_auth: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    config: Option<Arc<ClientConfig>>,
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerTls")
            .field("roots", &self.roots.len())
            .field("client_certificate", &self.client_auth.is_some())
            .field("custom_config", &self.config.is_some())
            .finish()
    }
}

fn tls_error(reason: String) -> ConfigError {
    ConfigError::Tls(reason)
}

impl PeerTls {
    /// Trusts the certificates in `pem` (one or more `CERTIFICATE` blocks) as roots for
    /// peer certificates.
    pub fn from_pem(pem: &[u8]) -> Result<Self, ConfigError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| tls_error(format!("reading root certificates: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| tls_error(format!("adding a root certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(tls_error("no certificate found in the root PEM".into()));
        }
        Ok(Self {
            roots,
            client_auth: None,
            config: None,
        })
    }

    /// Presents this certificate chain and key to peers that ask for one (mutual TLS).
    pub fn client_certificate(
        mut self,
        chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, ConfigError> {
        let chain = CertificateDer::pem_slice_iter(chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_error(format!("reading the client certificate: {e}")))?;
        if chain.is_empty() {
            return Err(tls_error(
                "no certificate found in the client certificate PEM".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| tls_error(format!("reading the client key: {e}")))?;
        self.client_auth = Some((chain, Arc::new(key)));
        Ok(self)
    }

    /// Uses a rustls client configuration as it is, for anything the other constructors do
    /// not cover. It must offer `http/1.1` or no ALPN.
    pub fn from_rustls(config: ClientConfig) -> Self {
        Self {
            roots: RootCertStore::empty(),
            client_auth: None,
            config: Some(Arc::new(config)),
        }
    }

    pub(crate) fn client_config(&self) -> Result<ClientConfig, ConfigError> {
        if let Some(config) = &self.config {
            return Ok((**config).clone());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(e.to_string()))?
            .with_root_certificates(self.roots.clone());
        match &self.client_auth {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| tls_error(format!("the client certificate and key do not fit: {e}"))),
            None => Ok(builder.with_no_client_auth()),
        }
    }
}
