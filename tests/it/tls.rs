//! Three nodes over mutual TLS on 127.0.0.1, with certificates made at test time.
#![cfg(feature = "tls")]

use std::net::SocketAddr;
use std::sync::Arc;

use crate::support::{self, Loads, key_owned_by, value_of};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_groupcache::{Groupcache, PeerTls};

struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        Self {
            ca_pem: ca.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for 127.0.0.1, good for server and client authentication.
    fn node(&self) -> (String, String) {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        roots
    }
}

/// Serves `app` over TLS, requiring a client certificate signed by the test CA.
fn serve_tls(
    listener: TcpListener,
    app: Router,
    pki: &Pki,
    cert: &str,
    key: &str,
) -> tokio::task::JoinHandle<()> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(pki.roots()), provider.clone())
            .build()
            .unwrap();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, app) = (acceptor.clone(), app.clone());
            connections.spawn(async move {
                // A client without a certificate fails here.
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                    .await;
            });
            while connections.try_join_next().is_some() {}
        }
    })
}

#[tokio::test]
async fn three_nodes_share_keys_over_mutual_tls() {
    let pki = Pki::new();
    let mut listeners = Vec::new();
    for _ in 0..3 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let urls: Vec<String> = addrs.iter().map(|a| format!("https://{a}")).collect();
    let loads = Loads::default();
    let mut nodes = Vec::new();
    let mut servers = Vec::new();
    for (listener, url) in listeners.into_iter().zip(&urls) {
        let (cert, key) = pki.node();
        let tls = PeerTls::from_pem(pki.ca_pem.as_bytes())
            .unwrap()
            .client_certificate(cert.as_bytes(), key.as_bytes())
            .unwrap();
        let cache = Groupcache::builder()
            .self_url(url.clone())
            .peers(urls.clone())
            .peer_secret("a secret for the TLS test, 32+ bytes")
            .peer_tls(tls)
            .source("users", loads.source(url))
            .build()
            .unwrap();
        servers.push(serve_tls(listener, support::app(&cache), &pki, &cert, &key));
        nodes.push(cache);
    }
    for owner in &urls {
        let key = key_owned_by(&nodes[0], owner, "user:");
        for node in &nodes {
            assert_eq!(
                node.handle().get("users", &key).await.unwrap(),
                value_of(&key)
            );
        }
        assert_eq!(
            loads.of(&key),
            [owner.as_str()],
            "loaded once, by its owner"
        );
    }
    for node in &nodes {
        assert_eq!(node.stats().source("users").unwrap().stats.peer_errors, 0);
    }

    // A client that trusts the CA but has no certificate is refused at the handshake.
    let roots = pki.ca_pem.clone();
    let no_cert = Groupcache::builder()
        .self_url("https://127.0.0.1:9")
        .peers([urls[1].clone()])
        .peer_secret("a secret for the TLS test, 32+ bytes")
        .peer_tls(PeerTls::from_pem(roots.as_bytes()).unwrap())
        .source("users", loads.source("no-cert"))
        .build()
        .unwrap();
    let key = key_owned_by(&no_cert, &urls[1], "other:");
    assert_eq!(
        no_cert.handle().get("users", &key).await.unwrap(),
        value_of(&key)
    );
    assert_eq!(
        loads.of(&key),
        ["no-cert"],
        "refused by the peer, so loaded locally"
    );
    assert_eq!(
        no_cert.stats().source("users").unwrap().stats.peer_errors,
        1
    );
    for server in servers {
        server.abort();
    }
}

#[test]
fn tls_settings_are_checked() {
    assert!(PeerTls::from_pem(b"not a pem").is_err());
    let err = Groupcache::builder()
        .self_url("https://127.0.0.1:8443")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("peer_tls"), "{err}");
    let pki = Pki::new();
    let (cert, _) = pki.node();
    let (_, other_key) = pki.node();
    let mismatched = PeerTls::from_pem(pki.ca_pem.as_bytes())
        .unwrap()
        .client_certificate(cert.as_bytes(), other_key.as_bytes())
        .unwrap();
    let err = Groupcache::builder()
        .peer_tls(mismatched)
        .build()
        .unwrap_err();
    assert!(
        matches!(err, tower_groupcache::ConfigError::Tls(_)),
        "{err}"
    );
}
