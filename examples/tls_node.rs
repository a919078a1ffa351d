//! A node that serves its app and its peer path over TLS, requires client certificates from
//! its callers (mutual TLS), and presents its own to its peers.
//!
//! ```sh
//! GROUPCACHE_SELF_URL=https://10.0.0.1:8443 \
//! GROUPCACHE_PEER_URLS=https://10.0.0.1:8443,https://10.0.0.2:8443 \
//! GROUPCACHE_PEER_SECRET=... \
//! TLS_CA=ca.pem TLS_CERT=node.pem TLS_KEY=node.key LISTEN=0.0.0.0:8443 \
//! cargo run --example tls_node --features tls
//! ```
//!
//! The certificate must name the node's address (as in its self URL) and allow both server
//! and client authentication. `tests/it/tls.rs` makes such certificates with rcgen.

use std::error::Error;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Path;
use axum::routing::get;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_groupcache::{CacheHandle, GroupcacheBuilder, PeerTls};

fn env(name: &str) -> Result<String, Box<dyn Error>> {
    std::env::var(name).map_err(|_| format!("{name} is not set").into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let (ca, cert, key) = (
        std::fs::read(env("TLS_CA")?)?,
        std::fs::read(env("TLS_CERT")?)?,
        std::fs::read(env("TLS_KEY")?)?,
    );
    let cache = GroupcacheBuilder::from_env("GROUPCACHE")?
        .peer_tls(PeerTls::from_pem(&ca)?.client_certificate(&cert, &key)?)
        .source("demo", |key: String| async move {
            Ok::<_, std::io::Error>(format!("value-of:{key}"))
        })
        .build()?;

    // A failed get answers with its status (404 not found, 502 when the data source fails).
    async fn value(
        cache: CacheHandle,
        Path(key): Path<String>,
    ) -> Result<Bytes, tower_groupcache::Error> {
        cache.get("demo", &key).await
    }
    let app = Router::new()
        .route("/get/{key}", get(value))
        .layer(cache.layer());

    // The server side: this node's certificate, and client certificates required.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for root in CertificateDer::pem_slice_iter(&ca) {
        roots.add(root?)?;
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?;
    let chain = CertificateDer::pem_slice_iter(&cert).collect::<Result<Vec<_>, _>>()?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, PrivateKeyDer::from_pem_slice(&key)?)?;
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let listener =
        TcpListener::bind(env("LISTEN").unwrap_or_else(|_| "0.0.0.0:8443".into())).await?;
    eprintln!("listening on https://{}", listener.local_addr()?);
    loop {
        let (stream, peer) = listener.accept().await?;
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            match acceptor.accept(stream).await {
                Ok(tls) => {
                    let service = TowerToHyperService::new(app);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                }
                Err(error) => eprintln!("TLS handshake with {peer} failed: {error}"),
            }
        });
    }
}
